"""The asyncio store: :class:`RedisStore` on a ``redis.asyncio.Redis`` client, with the same API as
the blocking :class:`redis_ratelimit.RedisStore` (every call is awaited), for FastAPI and other
asyncio applications::

    from redis_ratelimit.asyncio import RedisStore, get_redis_client

    store = RedisStore(get_redis_client("redis://localhost:6379"))
    allowed, quota = await store.check_rate_limit("42", "/search", 10, 60)

Both stores run the same operations (:mod:`redis_ratelimit.engine`); only the I/O differs.
Docstrings here are short: the blocking store's say everything.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from typing import Any, Awaitable, Callable, Generator, Generic, Optional, Sequence, Tuple, TypeVar

import redis
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from . import drivers
from .base import DEFAULT_PREFIX, DEFAULT_TIMEOUT, MAX_CONNECTIONS, StoreBase, env_settings
from .permit import PermitBase
from .reservation import ReservationBase
from .core import FIXED
from .decision import Decision, MultiDecision, Period, Policy, Quota, Settlement
from .engine import Operation, T
from .mask import mask_url

log = logging.getLogger("redis_ratelimit")

R = TypeVar("R")


def get_redis_client(url: Optional[str] = None, *, connect_timeout: float = DEFAULT_TIMEOUT,
                     response_timeout: float = DEFAULT_TIMEOUT) -> Optional[redis.asyncio.Redis]:
    """:func:`redis_ratelimit.get_redis_client` for ``redis.asyncio``: a client for ``url``
    (default ``REDIS_URL``) with short timeouts and no retries; ``None``, logged, without a
    valid URL."""
    url = url if url is not None else os.environ.get("REDIS_URL") or None
    if not url:
        log.warning("no Redis URL is configured (REDIS_URL): rate limits are counted in memory")
        return None
    try:
        # A blocking pool, as the blocking store's (see redis_ratelimit.get_redis_client).
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url, max_connections=MAX_CONNECTIONS, timeout=connect_timeout, socket_connect_timeout=connect_timeout,
            socket_timeout=response_timeout, retry=Retry(NoBackoff(), 0))
        client = redis.asyncio.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))
        client.auto_close_connection_pool = True
    except (ValueError, redis.RedisError) as error:
        log.warning("invalid Redis URL %s: %s", mask_url(url), str(error).replace(url, mask_url(url)))
        return None
    log.info("using Redis for rate limiting (url=%s)", mask_url(url))
    return client


class _Pending(Generic[R]):
    """What :meth:`RedisStore.reserve` and :meth:`RedisStore.acquire` return: await it for the
    object, or use it directly with ``async with``."""

    def __init__(self, start: Callable[[], Awaitable[R]]) -> None:
        self._start = start
        self._result: Optional[R] = None

    def __await__(self) -> Generator[Any, None, R]:
        return self._start().__await__()

    async def __aenter__(self) -> R:
        self._result = await self._start()
        return await self._result.__aenter__()  # type: ignore[attr-defined]

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._result.__aexit__(*exc_info)  # type: ignore[union-attr]


class RedisStore(StoreBase):
    """The asyncio twin of :class:`redis_ratelimit.RedisStore`: the same constructor (with a
    ``redis.asyncio.Redis``, or ``None`` for memory only), methods and answers."""

    _async = True

    @classmethod
    def from_env(cls) -> "RedisStore":
        """A store configured from the environment, as :meth:`redis_ratelimit.RedisStore.from_env`."""
        settings = env_settings()
        timeouts = {k: settings.pop(k) for k in ("connect_timeout", "response_timeout") if k in settings}
        return cls(get_redis_client(**timeouts), **settings)

    async def _run(self, operation: Operation[T]) -> T:
        return await drivers.run_async(self.redis_client, operation)

    async def increment(self, key: str, expiry: Period, amount: int = 1) -> int:
        """Adds ``amount`` to a counter; see :meth:`redis_ratelimit.RedisStore.increment`."""
        return await self._run(self._increment(key, expiry, amount))

    async def get(self, key: str) -> int:
        """A counter's value; see :meth:`redis_ratelimit.RedisStore.get`."""
        return (await self.get_with_expiry(key))[0]

    async def get_with_expiry(self, key: str) -> Tuple[int, Optional[float]]:
        """A counter and its time to live; see :meth:`redis_ratelimit.RedisStore.get_with_expiry`."""
        return await self._run(self._get_with_expiry(key))

    async def check_rate_limit(self, user_id: str, endpoint: str, limit: int, period: Period,
                               check_only: bool = False) -> Tuple[bool, Quota]:
        """The seed's check; see :meth:`redis_ratelimit.RedisStore.check_rate_limit`."""
        return await self._run(self._check_rate_limit(user_id, endpoint, limit, period, check_only))

    async def get_quota(self, user_id: str, endpoint: str, limit: int, period: Period) -> Quota:
        """The seed's quota; see :meth:`redis_ratelimit.RedisStore.get_quota`."""
        return (await self.check_rate_limit(user_id, endpoint, limit, period, check_only=True))[1]

    async def reset(self, key: str) -> bool:
        """Deletes a limiter's state; see :meth:`redis_ratelimit.RedisStore.reset`."""
        return await self._run(self._engine.reset(key))

    async def reset_rate_limit(self, user_id: str, endpoint: str) -> bool:
        """Deletes a user's state on an endpoint; see :meth:`redis_ratelimit.RedisStore.reset_rate_limit`."""
        return await self.reset(self.key_for(user_id, endpoint))

    async def clear_all(self) -> bool:
        """Deletes every key under the prefix; see :meth:`redis_ratelimit.RedisStore.clear_all`."""
        return await self._run(self._clear_all())

    async def check(self, key: str, limit: int, period: Period, *, algorithm: str = FIXED,
                    burst: Optional[int] = None, cost: int = 1, dry_run: bool = False) -> Decision:
        """Decides one request; see :meth:`redis_ratelimit.RedisStore.check`."""
        return await self._run(self._check(key, limit, period, algorithm, burst, cost, dry_run))

    async def quota(self, key: str, limit: int, period: Period, *, algorithm: str = FIXED,
                    burst: Optional[int] = None, cost: int = 1) -> Decision:
        """The standing now; see :meth:`redis_ratelimit.RedisStore.quota`."""
        return await self._run(self._quota(key, limit, period, algorithm, burst, cost))

    async def check_all(self, policies: Sequence[Policy], *, dry_run: bool = False) -> MultiDecision:
        """One request under several policies, all or nothing; see :meth:`redis_ratelimit.RedisStore.check_all`."""
        return await self._run(self._check_all(policies, dry_run))

    def reserve(self, key: str, limit: int, period: Period, estimate: int, *, algorithm: str = FIXED,
                burst: Optional[int] = None) -> "_Pending[Reservation]":
        """Spends an estimate now, to settle later; see :meth:`redis_ratelimit.RedisStore.reserve`.
        ``await`` it, or use it with ``async with``::

            async with store.reserve("user42:tokens", 90_000, "1m", estimate=1200) as reservation:
                if reservation:
                    await reservation.settle(await run_the_model())
        """
        async def start() -> Reservation:
            config, decision = await self._run(self._reserve(key, limit, period, estimate, algorithm, burst))
            return Reservation(self, key, config, estimate, decision)
        return _Pending(start)

    def acquire(self, key: str, limit: int, lease: Period, *, id: Optional[str] = None,
                keep_alive: bool = False) -> "_Pending[Permit]":
        """Takes a concurrency slot; see :meth:`redis_ratelimit.RedisStore.acquire`. ``await`` it,
        or use it with ``async with``; ``keep_alive`` renews it from a task."""
        async def start() -> Permit:
            lease_ms, decision, granted = await self._run(self._acquire(key, limit, lease, id))
            permit = Permit(self, key, limit, lease_ms, decision, granted)
            if keep_alive and permit.allowed:
                permit._keep_alive()
            return permit
        return _Pending(start)

    async def release(self, key: str, id: str) -> bool:
        """Releases a lease; see :meth:`redis_ratelimit.RedisStore.release`."""
        return await self._run(self._release(key, id))

    async def ping(self) -> None:
        """Pings Redis; see :meth:`redis_ratelimit.RedisStore.ping`."""
        await self._run(self._engine.ping())

    async def redetect(self) -> str:
        """Detects the module now; see :meth:`redis_ratelimit.RedisStore.redetect`."""
        return await self._run(self._engine.redetect())


class Reservation(ReservationBase):
    """Units spent in advance by :meth:`RedisStore.reserve`; see :class:`redis_ratelimit.Reservation`."""

    def __init__(self, store: RedisStore, key: str, limit: Any, estimate: int, decision: Decision) -> None:
        super().__init__(store._engine, key, limit, estimate, decision)
        self._store = store

    async def settle(self, actual: int) -> Settlement:
        """Records the real cost; see :meth:`redis_ratelimit.Reservation.settle`."""
        return await self._store._run(self._settle(actual))

    async def cancel(self) -> Settlement:
        """Gives everything back: :meth:`settle` with 0."""
        return await self.settle(0)

    async def __aenter__(self) -> "Reservation":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        if not self.settled:
            await self.cancel()


class Permit(PermitBase):
    """A concurrency lease from :meth:`RedisStore.acquire`; see :class:`redis_ratelimit.Permit`."""

    def __init__(self, store: RedisStore, key: str, limit: int, lease_ms: int, decision: Decision,
                 lease_id: Optional[str]) -> None:
        super().__init__(store._engine, key, limit, lease_ms, decision, lease_id)
        self._store = store
        self._task: Optional[asyncio.Task] = None
        self._lock = asyncio.Lock()

    async def renew(self) -> bool:
        """Extends the lease; see :meth:`redis_ratelimit.Permit.renew`."""
        async with self._lock:
            return await self._store._run(self._renew())

    async def release(self) -> bool:
        """Releases the lease now; see :meth:`redis_ratelimit.Permit.release`."""
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        async with self._lock:
            return await self._store._run(self._release())

    def _keep_alive(self) -> None:
        interval = self.lease_ms / 3000
        # The task holds the permit weakly, as the blocking store's thread does.
        permit = weakref.ref(self)

        async def renew_until_released() -> None:
            while True:
                await asyncio.sleep(interval)
                held = permit()
                if held is None or not await held.renew():
                    return
                del held
        self._task = asyncio.get_running_loop().create_task(renew_until_released())

    async def __aenter__(self) -> "Permit":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.release()


__all__ = ["RedisStore", "Reservation", "Permit", "get_redis_client", "DEFAULT_PREFIX"]
