"""What :meth:`~redis_ratelimit.RedisStore.reserve` hands out, without I/O: the state of a
reservation and its settlement as an engine operation. The blocking and the asyncio
``Reservation`` run it."""

from __future__ import annotations

from typing import Optional

from . import commands
from .core import Limit
from .decision import Decision, Settlement, check_cost
from .engine import Engine, Operation


class ReservationBase:
    """An estimate spent in advance, to be settled once the real cost is known."""

    def __init__(self, engine: Engine, key: str, limit: Limit, estimate: int, decision: Decision) -> None:
        self._engine = engine
        #: The limiter's key, under the store's prefix.
        self.key = key
        #: The units asked for in advance.
        self.estimate = estimate
        #: The CHECK's answer, with the window the estimate was spent in.
        self.decision = decision
        self._limit = limit
        self._settlement: Optional[Settlement] = None

    def __bool__(self) -> bool:
        return self.decision.allowed

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(key={self._engine.mask(self._engine.redis_key(self.key))!r}, "
                f"estimate={self.estimate}, allowed={self.allowed}, settled={self.settled})")

    @property
    def allowed(self) -> bool:
        """Whether the estimate was admitted (and so spent)."""
        return self.decision.allowed

    @property
    def reserved(self) -> int:
        """The units spent in advance: the estimate if it was admitted, else 0."""
        return self.estimate if self.decision.allowed else 0

    @property
    def settled(self) -> bool:
        """Whether :meth:`settle` (or :meth:`cancel`) has run."""
        return self._settlement is not None

    @property
    def settlement(self) -> Optional[Settlement]:
        """What settling did, once it has."""
        return self._settlement

    def _settle(self, actual: int) -> Operation[Settlement]:
        check_cost(actual, name="actual")
        if self._settlement is not None:
            raise RuntimeError("this reservation is already settled")
        # Claimed before any I/O, so that two settlements can never both run.
        self._settlement = Settlement(0, 0, None)
        difference = actual - self.reserved
        if difference < 0:
            refunded, standing = yield from self._engine.refund(self.key, self._limit, -difference, self.decision.window)
            self._settlement = Settlement(refunded, 0, standing)
        elif difference > 0:
            decision = yield from self._engine.check(self.key, self._limit, difference, commands.FORCE)
            self._settlement = Settlement(0, difference, decision)
        return self._settlement


__all__ = ["ReservationBase"]
