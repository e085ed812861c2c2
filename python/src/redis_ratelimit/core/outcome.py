"""What the algorithms answer: the decision, and the change to make to the key (``core/src/lib.rs``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional, Union

from .storage import State, with_expiry

#: The ``retry_after_ms`` of a request that can never be admitted.
NEVER = -1
#: The largest count FIXED and SLIDING store, and the largest they read: 2^53 - 1.
MAX_STORED_COUNT = (1 << 53) - 1
#: The longest time any reply or expiry reports: 2^53 - 1 ms.
MAX_TIME_MS = (1 << 53) - 1


class Decision(NamedTuple):
    """The answer to one request, in the shape of the ``RATELIMIT.CHECK`` reply."""

    #: Whether the request is admitted; with FORCE, whether its cost fitted.
    allowed: bool
    #: The capacity: ``limit`` for FIXED and SLIDING, ``burst`` for GCRA.
    limit: int
    #: Units still available right after this decision; 0 while in debt.
    remaining: int
    #: Milliseconds until the limiter is back to full capacity if nothing more is spent.
    reset_after_ms: int
    #: Milliseconds until a request of this cost would be admitted; 0 when admitted,
    #: :data:`NEVER` when it never can be.
    retry_after_ms: int

    def reply(self) -> list[int]:
        """The five integers as the module replies them."""
        return [int(self.allowed), self.limit, self.remaining, self.reset_after_ms, self.retry_after_ms]


@dataclass(frozen=True)
class Keep:
    """Nothing to do: the key stays as it is."""


@dataclass(frozen=True)
class Store:
    """Store a new state with its absolute expiry (``SET key value PXAT expire_at_ms``)."""

    state: State
    expire_at_ms: int


@dataclass(frozen=True)
class Expire:
    """Keep the value, but give the key this absolute expiry (``PEXPIREAT``): it had none."""

    at_ms: int


@dataclass(frozen=True)
class Delete:
    """Delete the key: the limiter is back to full capacity, or nothing in it counts any more."""


KEEP = Keep()
DELETE = Delete()

#: What the caller must do to the key after a decision or a refund.
Change = Union[Keep, Store, Expire, Delete]


def apply(change: Change, before: Optional[State]) -> Optional[State]:
    """The state a later read of the key would find, from ``before``, the state read now."""
    if isinstance(change, Store):
        return with_expiry(change.state, change.expire_at_ms)
    if isinstance(change, Expire):
        return None if before is None else with_expiry(before, change.at_ms)
    if isinstance(change, Delete):
        return None
    return before


def is_repair(change: Change) -> bool:
    """Whether a request that was not admitted may still make this change: only the expiry of
    a key that had none, or the deletion of such a key."""
    return isinstance(change, (Expire, Delete))


class Outcome(NamedTuple):
    """The result of :func:`redis_ratelimit.core.decide`."""

    decision: Decision
    #: What to write; a dry run ignores it.
    change: Change
    #: FIXED: the window's end in Unix ms. SLIDING: the aligned window's index. GCRA: 0.
    window: int


def div_ceil(numerator: int, denominator: int) -> int:
    """``ceil(numerator / denominator)`` for a non-negative numerator and positive denominator."""
    return -(-numerator // denominator)


def us_to_ms_ceil(us: int) -> int:
    """Microseconds rounded up to whole milliseconds, capped at :data:`MAX_TIME_MS`."""
    return min(div_ceil(us, 1000), MAX_TIME_MS)


def to_i64(value: int) -> int:
    """``value`` capped at 2^63 - 1, as the replies' signed integers are."""
    return min(value, (1 << 63) - 1)
