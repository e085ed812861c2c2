"""The blocking store, :class:`RedisStore`, on a ``redis.Redis`` client; see
:mod:`redis_ratelimit.asyncio` for the same API on ``redis.asyncio``."""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import Any, Optional, Sequence, Tuple

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import drivers
from .base import DEFAULT_PREFIX, DEFAULT_TIMEOUT, MAX_CONNECTIONS, StoreBase, env_settings
from .permit import PermitBase
from .reservation import ReservationBase
from .core import FIXED
from .decision import Decision, MultiDecision, Period, Policy, Quota, Settlement
from .engine import Operation, T
from .mask import mask_url

log = logging.getLogger("redis_ratelimit")


def get_redis_client(url: Optional[str] = None, *, connect_timeout: float = DEFAULT_TIMEOUT,
                     response_timeout: float = DEFAULT_TIMEOUT) -> Optional[redis.Redis]:
    """A ``redis.Redis`` client for ``url`` (default: the ``REDIS_URL`` environment variable),
    made for rate limiting: short timeouts (250 ms) and no retries of its own, so that a dead
    Redis never stalls a request (the store's breaker decides when it is tried again).

    It connects on first use: a Redis that is down now is used as soon as it is back. Returns
    ``None``, with a log line, when no URL is set or it is invalid; ``RedisStore(None)`` then
    limits in memory.
    """
    url = url if url is not None else os.environ.get("REDIS_URL") or None
    if not url:
        log.warning("no Redis URL is configured (REDIS_URL): rate limits are counted in memory")
        return None
    try:
        # A blocking pool: past MAX_CONNECTIONS calls in flight, a call waits (up to the connect
        # timeout) for a connection rather than failing as if Redis were down.
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=MAX_CONNECTIONS, timeout=connect_timeout, socket_connect_timeout=connect_timeout,
            socket_timeout=response_timeout, retry=Retry(NoBackoff(), 0))
        client = redis.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))
        client.auto_close_connection_pool = True
    except (ValueError, redis.RedisError) as error:
        log.warning("invalid Redis URL %s: %s", mask_url(url), str(error).replace(url, mask_url(url)))
        return None
    log.info("using Redis for rate limiting (url=%s)", mask_url(url))
    return client


class RedisStore(StoreBase):
    """Rate limits in Redis, shared by every thread of the process.

    Each call goes to the module's ``RATELIMIT.*`` commands when the server has them, otherwise to
    the Lua script of identical meaning and storage. While Redis cannot answer, the failure
    policy ``on_failure`` does: ``local`` (default) decides with the in-memory limiter,
    ``allow`` admits, ``deny`` denies; a circuit breaker keeps calls away from Redis until a
    probe finds it back. Every :class:`~redis_ratelimit.Decision` names who answered.

    :param redis_client: a ``redis.Redis`` (see :func:`get_redis_client`), or ``None`` to limit
        in memory only.
    :param prefix: the prefix of every key the store touches.
    :param on_failure: ``local``, ``allow`` or ``deny``.
    :param breaker: when the breaker opens, and for how long.
    :param redetect_interval: seconds between two checks of whether the module is loaded.
    :param local_max_entries: the most keys the in-memory limiter holds.
    """

    _async = False

    @classmethod
    def from_env(cls) -> "RedisStore":
        """A store configured from the environment: ``REDIS_URL`` (unset: in memory only),
        ``RATELIMIT_PREFIX``, ``RATELIMIT_ON_FAILURE`` (``local``, ``allow``, ``deny``),
        ``RATELIMIT_CONNECT_TIMEOUT_MS`` and ``RATELIMIT_RESPONSE_TIMEOUT_MS``. Raises
        :class:`ValueError` for an invalid value."""
        settings = env_settings()
        timeouts = {k: settings.pop(k) for k in ("connect_timeout", "response_timeout") if k in settings}
        return cls(get_redis_client(**timeouts), **settings)

    def _run(self, operation: Operation[T]) -> T:
        return drivers.run(self.redis_client, operation)

    # The seed's API ------------------------------------------------------------------------

    def increment(self, key: str, expiry: Period, amount: int = 1) -> int:
        """Adds ``amount`` to the counter ``key`` (under the prefix) and returns its new value. A
        new counter expires after ``expiry`` (seconds, a timedelta or ``"1500ms"``); an existing
        one keeps its expiry, which is never extended. Atomic: one script runs ``INCRBY`` and
        ``PEXPIRE``.

        The counter is stored as a FIXED count, so :meth:`reset` deletes it. While Redis is
        out, the in-memory limiter counts (``local`` policy); otherwise it raises
        :class:`~redis_ratelimit.RateLimitError`, as it does when the key holds something else.
        """
        return self._run(self._increment(key, expiry, amount))

    def get(self, key: str) -> int:
        """The counter ``key`` (under the prefix): its value, or 0 when it does not exist.
        Fails as :meth:`get_with_expiry` does."""
        return self.get_with_expiry(key)[0]

    def get_with_expiry(self, key: str) -> Tuple[int, Optional[float]]:
        """The counter ``key`` and the seconds until it expires: ``(0, None)`` when it does not
        exist, ``(value, None)`` when it has no expiry. Read atomically (``MULTI``). Raises
        :class:`~redis_ratelimit.RateLimitError` when the key holds something else than a
        non-negative integer, or, outside the ``local`` policy, while Redis is out."""
        return self._run(self._get_with_expiry(key))

    def check_rate_limit(self, user_id: str, endpoint: str, limit: int, period: Period,
                         check_only: bool = False) -> Tuple[bool, Quota]:
        """The seed's check: one request of ``user_id`` on ``endpoint`` against ``limit`` requests
        per ``period`` in a FIXED window (the ``INCR`` + ``EXPIRE`` pattern, done atomically).
        Returns ``(allowed, quota)``.

        With ``check_only``, nothing is spent: ``allowed`` says whether a request would be
        admitted now, and the quota is the standing now (a fresh key has ``remaining ==
        total``). The key is ``prefix + user_id + ":" + endpoint``. It never raises for Redis:
        while Redis is out the failure policy answers, and when Redis answers an error for the
        key the request is admitted (fail open), with an error logged. An invalid limit or
        period raises :class:`ValueError`.
        """
        return self._run(self._check_rate_limit(user_id, endpoint, limit, period, check_only))

    def get_quota(self, user_id: str, endpoint: str, limit: int, period: Period) -> Quota:
        """The seed's quota: ``user_id``'s standing on ``endpoint`` now, spending nothing:
        ``{"total", "remaining", "used", "reset_at"}``, ``reset_at`` in Unix seconds rounded up.
        Same key and failure handling as :meth:`check_rate_limit`."""
        return self.check_rate_limit(user_id, endpoint, limit, period, check_only=True)[1]

    def reset(self, key: str) -> bool:
        """Deletes the limiter's state on ``key`` (under the prefix), in Redis and in the
        in-memory limiter: the subject starts again with a full allowance. Answers whether Redis
        had a state (while Redis is out: whether the in-memory limiter had one). A key that is
        no limiter (another type, a string no algorithm wrote) is left as it is, and logged."""
        return self._run(self._engine.reset(key))

    def reset_rate_limit(self, user_id: str, endpoint: str) -> bool:
        """Deletes the state of ``user_id`` on ``endpoint``, as :meth:`reset` does for its key."""
        return self.reset(self.key_for(user_id, endpoint))

    def clear_all(self) -> bool:
        """Deletes every key under the prefix and empties the in-memory limiter. Answers
        ``True`` when it went through; ``False``, with a log line, when Redis failed (some keys
        may be left) or the prefix is empty (it refuses to empty the whole database). It runs
        ``SCAN MATCH prefix*`` (glob characters escaped) and ``UNLINK`` in batches, so it does
        not block the server."""
        return self._run(self._clear_all())

    # The richer calls ----------------------------------------------------------------------

    def check(self, key: str, limit: int, period: Period, *, algorithm: str = FIXED, burst: Optional[int] = None,
              cost: int = 1, dry_run: bool = False) -> Decision:
        """Decides one request of ``cost`` units on ``key`` (under the prefix) against ``limit``
        per ``period`` with ``algorithm`` (``FIXED``, ``SLIDING`` or ``GCRA``, whose ``burst``
        defaults to ``limit``) and, if it is admitted and not a ``dry_run``, spends its cost.

        It always answers, as :meth:`check_rate_limit` does. Invalid arguments raise
        :class:`ValueError`.
        """
        return self._run(self._check(key, limit, period, algorithm, burst, cost, dry_run))

    def quota(self, key: str, limit: int, period: Period, *, algorithm: str = FIXED, burst: Optional[int] = None,
              cost: int = 1) -> Decision:
        """The standing now (``RATELIMIT.QUOTA``): ``remaining`` and ``reset_after`` with
        nothing spent (a fresh key shows the full capacity), ``allowed`` and ``retry_after``
        for a request of ``cost``. Never writes; always answers."""
        return self._run(self._quota(key, limit, period, algorithm, burst, cost))

    def check_all(self, policies: Sequence[Policy], *, dry_run: bool = False) -> MultiDecision:
        """One request checked against several limiters at once, all or nothing, in one
        ``RATELIMIT.MCHECK``: it is admitted only if every policy admits it, and then every
        policy spends its cost; if any denies it, nothing is spent anywhere. Each policy's
        ``name`` is its key (under the prefix); 1 to 16 distinct keys. In a Redis Cluster the
        keys must share a hash tag (``{user42}:rps``, ``{user42}:tpm``). Always answers."""
        return self._run(self._check_all(policies, dry_run))

    def reserve(self, key: str, limit: int, period: Period, estimate: int, *, algorithm: str = FIXED,
                burst: Optional[int] = None) -> "Reservation":
        """Spends ``estimate`` units now, for work whose real cost is known only afterwards (model
        tokens, bytes): a CHECK with ``WITHWINDOW``. Use the :class:`Reservation` as a context
        manager and call :meth:`Reservation.settle` with the real cost::

            with store.reserve("user42:tokens", 90_000, "1m", estimate=1200, algorithm="GCRA") as reservation:
                if not reservation:
                    ...  # denied: nothing was spent; reservation.decision.retry_after says when
                used = run_the_model()
                reservation.settle(used)

        Settling refunds what was not used to the window it was spent in, or charges the excess
        with ``FORCE`` (it was consumed, so it cannot be refused). Leaving the block without
        settling refunds everything."""
        config, decision = self._run(self._reserve(key, limit, period, estimate, algorithm, burst))
        return Reservation(self, key, config, estimate, decision)

    def acquire(self, key: str, limit: int, lease: Period, *, id: Optional[str] = None,
                keep_alive: bool = False) -> "Permit":
        """Takes one of ``limit`` concurrent slots on ``key`` for ``lease`` (``RATELIMIT.ACQUIRE``):
        "at most 5 reports running per user". Use the :class:`Permit` as a context manager; it
        releases the slot on exit::

            with store.acquire("user42:reports", 5, "10m") as permit:
                if not permit:
                    ...  # all 5 slots are taken; permit.decision.retry_after says until when
                build_the_report()

        A lease not released (its holder crashed) expires by itself. ``id`` names the lease
        (default: one is made); acquiring with the ID of a live lease renews it. With
        ``keep_alive``, a background thread renews the lease every third of ``lease`` until it
        is released."""
        lease_ms, decision, granted = self._run(self._acquire(key, limit, lease, id))
        permit = Permit(self, key, limit, lease_ms, decision, granted)
        if keep_alive and permit.allowed:
            permit._keep_alive()
        return permit

    def release(self, key: str, id: str) -> bool:
        """Releases the lease ``id`` on ``key`` (``RATELIMIT.RELEASE``): whether it was live."""
        return self._run(self._release(key, id))

    # Operations ----------------------------------------------------------------------------

    def ping(self) -> None:
        """Pings Redis. Raises :class:`~redis_ratelimit.RateLimitError` when it is unreachable
        (or the breaker is open)."""
        self._run(self._engine.ping())

    def redetect(self) -> str:
        """Pings Redis and detects now whether the module is loaded, as the store does at the
        first call, after an outage and every ``redetect_interval``: ``module`` or ``script``.
        Raises :class:`~redis_ratelimit.RateLimitError` when Redis is unreachable."""
        return self._run(self._engine.redetect())


class Reservation(ReservationBase):
    """Units spent in advance by :meth:`RedisStore.reserve`; true when they were admitted."""

    def __init__(self, store: RedisStore, key: str, limit: Any, estimate: int, decision: Decision) -> None:
        super().__init__(store._engine, key, limit, estimate, decision)
        self._store = store

    def settle(self, actual: int) -> Settlement:
        """Records that the work used ``actual`` units: refunds ``reserved - actual`` to the
        window the estimate was spent in, or charges ``actual - reserved`` with ``FORCE``.
        Raises :class:`RuntimeError` when called twice, :class:`ValueError` for a bad amount."""
        return self._store._run(self._settle(actual))

    def cancel(self) -> Settlement:
        """Gives everything back: :meth:`settle` with 0."""
        return self.settle(0)

    def __enter__(self) -> "Reservation":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if not self.settled:
            self.cancel()


class Permit(PermitBase):
    """A concurrency lease from :meth:`RedisStore.acquire`; true when it was granted."""

    def __init__(self, store: RedisStore, key: str, limit: int, lease_ms: int, decision: Decision,
                 lease_id: Optional[str]) -> None:
        super().__init__(store._engine, key, limit, lease_ms, decision, lease_id)
        self._store = store
        self._stop: Optional[threading.Event] = None
        # A renewal from the keep-alive thread never runs at the same time as the release.
        self._lock = threading.Lock()

    def renew(self) -> bool:
        """Extends the lease to ``lease`` from now. Answers whether it is held: ``False`` once
        it was released, or when it had expired and its slot was taken meanwhile."""
        with self._lock:
            return self._store._run(self._renew())

    def release(self) -> bool:
        """Releases the lease now; answers whether it was live. Further calls do nothing."""
        if self._stop is not None:
            self._stop.set()
        with self._lock:
            return self._store._run(self._release())

    def _keep_alive(self) -> None:
        self._stop = stop = threading.Event()
        interval = self.lease_ms / 3000
        # The thread holds the permit weakly: a permit nobody holds any more is collected, its
        # renewals stop, and its lease expires by itself.
        permit = weakref.ref(self)

        def renew_until_released() -> None:
            while not stop.wait(interval):
                held = permit()
                if held is None or not held.renew():
                    return
                del held

        threading.Thread(target=renew_until_released, name="ratelimit-permit", daemon=True).start()

    def __enter__(self) -> "Permit":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.release()


__all__ = ["RedisStore", "Reservation", "Permit", "get_redis_client", "DEFAULT_PREFIX"]
