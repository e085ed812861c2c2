"""What the blocking and the asyncio store share: configuration, keys, argument checks, and each
public operation as an engine operation (see :mod:`redis_ratelimit.engine`). The stores only run
them, with or without ``await``."""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any, Optional, Sequence, Tuple

from . import commands, counters
from .breaker import Breaker, BreakerConfig, BreakerState
from .core import MAX_ID_LEN, MAX_LEASES, Limit
from .decision import (
    Decision,
    MultiDecision,
    Period,
    Policy,
    Quota,
    check_cost,
    make_limit,
    period_ms,
    quota_of,
)
from .engine import Engine, Operation
from .mask import mask_id, mask_url
from .memory import MemoryLimiter

log = logging.getLogger("redis_ratelimit")

#: The default key prefix.
DEFAULT_PREFIX = "ratelimit:"
#: Connect and response timeouts of the clients this package makes, in seconds.
DEFAULT_TIMEOUT = 0.25
#: Connections a client this package makes opens at most; more calls at once wait for one.
MAX_CONNECTIONS = 100


def client_url(client: Any) -> str:
    """The client's address for logs, with its password masked."""
    if client is None:
        return "(none)"
    try:
        kwargs = client.connection_pool.connection_kwargs
        auth = f"{kwargs.get('username') or ''}:****@" if kwargs.get("password") else ""
        if kwargs.get("path"):
            return f"unix://{auth}{kwargs['path']}"
        return f"redis://{auth}{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
    except AttributeError:
        return mask_url(repr(client))


def env_settings() -> dict:
    """``RATELIMIT_PREFIX``, ``RATELIMIT_ON_FAILURE`` and the timeouts
    (``RATELIMIT_CONNECT_TIMEOUT_MS``, ``RATELIMIT_RESPONSE_TIMEOUT_MS``) from the environment;
    an empty variable counts as unset. Raises :class:`ValueError` for an invalid value."""
    settings: dict = {}
    prefix = os.environ.get("RATELIMIT_PREFIX")
    if prefix:
        settings["prefix"] = prefix
    policy = os.environ.get("RATELIMIT_ON_FAILURE")
    if policy:
        settings["on_failure"] = policy.lower()
    for name, setting in [("RATELIMIT_CONNECT_TIMEOUT_MS", "connect_timeout"), ("RATELIMIT_RESPONSE_TIMEOUT_MS", "response_timeout")]:
        text = os.environ.get(name)
        if text:
            if not text.strip().isdigit() or int(text) == 0:
                raise ValueError(f"{name}={text!r}: expected a positive number of milliseconds")
            settings[setting] = int(text) / 1000
    return settings


class StoreBase:
    """The store's state and operations, without I/O."""

    _async = False

    def __init__(self, redis_client: Any = None, prefix: str = DEFAULT_PREFIX, *, on_failure: str = "local",
                 breaker: Optional[BreakerConfig] = None, redetect_interval: float = 30.0,
                 local_max_entries: int = 100_000) -> None:
        if redis_client is not None:
            is_async = inspect.iscoroutinefunction(getattr(redis_client, "execute_command", None))
            if is_async != self._async:
                wanted = "redis.asyncio.Redis" if self._async else "redis.Redis"
                raise TypeError(f"{type(self).__module__}.{type(self).__name__} needs a {wanted} client")
        if not isinstance(prefix, str):
            raise TypeError("prefix must be a string")
        #: The redis-py client; ``None`` for a store that limits in memory only.
        self.redis_client = redis_client
        self._engine = Engine(
            prefix=prefix,
            on_failure=on_failure,
            breaker=Breaker(breaker),
            memory=MemoryLimiter(local_max_entries),
            redetect_interval=redetect_interval,
            url=client_url(redis_client),
            online=redis_client is not None,
        )

    def __repr__(self) -> str:
        engine = self._engine
        return (f"{type(self).__name__}(url={engine.url!r}, prefix={engine.prefix!r}, backend={engine.mode!r}, "
                f"on_failure={engine.on_failure!r})")

    @property
    def prefix(self) -> str:
        """The prefix of every key the store touches."""
        return self._engine.prefix

    @property
    def on_failure(self) -> str:
        """What answers while Redis cannot: ``local``, ``allow`` or ``deny``."""
        return self._engine.on_failure

    @property
    def backend(self) -> Optional[str]:
        """The Redis backend in use, ``module`` or ``script``; ``None`` before the first call and
        after an outage, until Redis answers again."""
        return self._engine.mode

    @property
    def breaker_state(self) -> BreakerState:
        """Where the circuit breaker is."""
        return self._engine.breaker.state

    @property
    def memory(self) -> MemoryLimiter:
        """The in-memory limiter of the ``local`` failure policy."""
        return self._engine.memory

    def key_for(self, user_id: str, endpoint: str) -> str:
        """The key of a user's limit on an endpoint, under the prefix: ``user_id:endpoint``."""
        return f"{user_id}:{endpoint}"

    def redis_key(self, key: str) -> str:
        """The Redis key of ``key``: ``prefix + key``."""
        return self._engine.redis_key(key)

    # The seed's operations -----------------------------------------------------------------

    def _increment(self, key: str, expiry: Period, amount: int) -> Operation[int]:
        expiry_ms = period_ms(expiry, name="expiry")
        if not isinstance(amount, int) or isinstance(amount, bool) or not 0 <= amount < 1 << 63:
            raise ValueError(f"invalid amount {amount!r}: expected an integer from 0 to 2^63 - 1")
        return counters.increment(self._engine, key, expiry_ms, amount)

    def _get_with_expiry(self, key: str) -> Operation[Tuple[int, Optional[float]]]:
        value, ttl_ms = yield from counters.get_with_expiry(self._engine, key)
        return value, None if ttl_ms is None else ttl_ms / 1000

    def _check_rate_limit(self, user_id: str, endpoint: str, limit: int, period: Period,
                          check_only: bool) -> Operation[Tuple[bool, Quota]]:
        config = make_limit(limit, period)
        key = self.key_for(user_id, endpoint)
        if check_only:
            decision = yield from self._engine.quota(key, config, 1)
        else:
            decision = yield from self._engine.check(key, config, 1)
        log.debug("rate limit checked (user=%s, endpoint=%s, allowed=%s, backend=%s)",
                  mask_id(str(user_id)), endpoint, decision.allowed, decision.backend)
        return decision.allowed, quota_of(decision)

    def _clear_all(self) -> Operation[bool]:
        try:
            deleted = yield from counters.clear_all(self._engine)
        except Exception as error:  # noqa: BLE001 - logged, and answered False as the seed did
            log.warning("cannot clear the rate limits (prefix=%s, error=%s)", self.prefix, error)
            return False
        log.info("cleared every rate limit (prefix=%s, deleted=%d)", self.prefix, deleted)
        return True

    # The richer operations -----------------------------------------------------------------

    def _check(self, key: str, limit: int, period: Period, algorithm: str, burst: Optional[int], cost: int,
               dry_run: bool) -> Operation[Decision]:
        config = make_limit(limit, period, algorithm, burst)
        return self._engine.check(key, config, check_cost(cost), commands.DRYRUN if dry_run else 0)

    def _quota(self, key: str, limit: int, period: Period, algorithm: str, burst: Optional[int],
               cost: int) -> Operation[Decision]:
        return self._engine.quota(key, make_limit(limit, period, algorithm, burst), check_cost(cost))

    def _check_all(self, policies: Sequence[Policy], dry_run: bool) -> Operation[MultiDecision]:
        policies = list(policies)
        if not 1 <= len(policies) <= 16:
            raise ValueError(f"check_all takes 1 to 16 policies, not {len(policies)}")
        names = [p.name for p in policies]
        if len(set(names)) != len(names):
            raise ValueError("check_all: a key may appear once")
        flags = commands.DRYRUN if dry_run else 0
        return self._engine.check_all(names, [p.config for p in policies], [p.cost for p in policies], flags)

    def _reserve(self, key: str, limit: int, period: Period, estimate: int, algorithm: str,
                 burst: Optional[int]) -> Operation[Tuple[Limit, Decision]]:
        config = make_limit(limit, period, algorithm, burst)
        decision = yield from self._engine.check(key, config, check_cost(estimate, name="estimate"), commands.WITHWINDOW)
        return config, decision

    def _acquire(self, key: str, limit: int, lease: Period, lease_id: Optional[str]) -> Operation[Tuple[int, Decision, Optional[str]]]:
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LEASES:
            raise ValueError(f"invalid limit {limit!r}: expected an integer from 1 to {MAX_LEASES}")
        lease_ms = period_ms(lease, name="lease")
        if lease_id is not None:
            _check_lease_id(lease_id)
        decision, granted = yield from self._engine.acquire(key, limit, lease_ms, lease_id)
        return lease_ms, decision, granted

    def _release(self, key: str, lease_id: str) -> Operation[bool]:
        _check_lease_id(lease_id)
        return (yield from self._engine.release(key, lease_id))


def _check_lease_id(lease_id: object) -> None:
    """Raises :class:`ValueError` unless ``lease_id`` is a string of 1 to 128 bytes, as the
    module and the script require."""
    if not isinstance(lease_id, str) or not 1 <= len(lease_id.encode()) <= MAX_ID_LEN:
        raise ValueError(f"invalid lease id {lease_id!r}: expected 1 to {MAX_ID_LEN} bytes")


__all__ = ["StoreBase", "DEFAULT_PREFIX", "DEFAULT_TIMEOUT"]
