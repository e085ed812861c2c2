"""What :meth:`~redis_ratelimit.RedisStore.acquire` hands out, without I/O: the state of a lease
and its renewal and release as engine operations. The blocking and the asyncio ``Permit`` run
them."""

from __future__ import annotations

import time
from typing import Optional

from .decision import Decision
from .engine import Engine, Operation


class PermitBase:
    """A concurrency lease, to be released when the work is done."""

    def __init__(self, engine: Engine, key: str, limit: int, lease_ms: int, decision: Decision, lease_id: Optional[str]) -> None:
        self._engine = engine
        #: The lease set's key, under the store's prefix.
        self.key = key
        #: Leases allowed at once.
        self.limit = limit
        #: How long the lease lives unless released or renewed, in ms.
        self.lease_ms = lease_ms
        #: The ACQUIRE's answer (the latest renewal's).
        self.decision = decision
        #: The lease ID; ``None`` when denied.
        self.id = lease_id
        #: When the lease expires unless renewed, in Unix seconds by this machine's clock.
        self.expires_at: Optional[float] = time.time() + lease_ms / 1000 if decision.allowed else None
        self._released = not decision.allowed

    def __bool__(self) -> bool:
        return self.decision.allowed

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(key={self._engine.mask(self._engine.redis_key(self.key))!r}, "
                f"allowed={self.allowed}, released={self.released})")

    @property
    def allowed(self) -> bool:
        """Whether the lease was granted."""
        return self.decision.allowed

    @property
    def released(self) -> bool:
        """Whether the lease was released (or never granted)."""
        return self._released

    def _renew(self) -> Operation[bool]:
        if self._released or self.id is None:
            return False
        decision, granted = yield from self._engine.acquire(self.key, self.limit, self.lease_ms, self.id)
        self.decision = decision
        if granted is None:
            self.expires_at = None
            return False
        self.expires_at = time.time() + self.lease_ms / 1000
        return True

    def _release(self) -> Operation[bool]:
        if self._released:
            return False
        self._released = True
        if self.id is None:
            return False
        return (yield from self._engine.release(self.key, self.id))


__all__ = ["PermitBase"]
