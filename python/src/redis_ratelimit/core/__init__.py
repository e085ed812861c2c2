"""The rate limiting algorithms in pure Python: a faithful port of the Rust ``ratelimit_core``.

Every implementation of the contract (the module, the Lua script, the Rust client's in-memory
limiter and this package's) takes the same decisions from the same states at the same instants.
Each algorithm is a pure function of ``(state, now, request)`` that returns a
:class:`Decision` and the :data:`Change` to make to the key: :func:`decide`, :func:`quota`,
:func:`refund` and :func:`decide_all`. Nothing here reads a clock or does I/O. Times are
microseconds since the Unix epoch (``now_us``). Python's integers make the core's 128-bit
arithmetic exact without effort.

Used by :class:`redis_ratelimit.MemoryLimiter`, the fallback while Redis is down, and by the
tests that compare it with the Lua script.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

from . import fixed, gcra, sliding
from .lease import MAX_ID_LEN, MAX_LEASES, LeaseSet
from .limit import ALGORITHMS, FIXED, GCRA, MAX_COUNT, MAX_PERIOD_MS, SLIDING, Limit, LimitError, parse_algorithm
from .outcome import (
    DELETE,
    KEEP,
    MAX_STORED_COUNT,
    MAX_TIME_MS,
    NEVER,
    Change,
    Decision,
    Delete,
    Expire,
    Keep,
    Outcome,
    Store,
    apply,
    is_repair,
)
from .storage import (
    GCRA_MODULUS,
    DecodeError,
    FixedState,
    GcraState,
    SlidingState,
    State,
    algorithm_of,
    decode,
    encode,
    expiry_of,
    with_expiry,
)

__all__ = [
    "ALGORITHMS", "FIXED", "SLIDING", "GCRA", "MAX_COUNT", "MAX_PERIOD_MS", "MAX_STORED_COUNT",
    "MAX_TIME_MS", "NEVER", "GCRA_MODULUS", "MAX_LEASES", "MAX_ID_LEN",
    "Limit", "LimitError", "parse_algorithm", "Decision", "Outcome", "Refund", "AllOutcome",
    "Policy", "WrongAlgorithm", "Change", "Keep", "Store", "Expire", "Delete", "KEEP", "DELETE",
    "apply", "is_repair", "State", "FixedState", "SlidingState", "GcraState", "DecodeError",
    "decode", "encode", "algorithm_of", "expiry_of", "with_expiry", "LeaseSet",
    "decide", "quota", "refund", "decide_all",
]


class WrongAlgorithm(Exception):
    """A stored state belongs to another algorithm than the one requested."""

    def __init__(self, found: str, requested: str) -> None:
        super().__init__(f"ERR the key holds a {found} limiter, not {requested}")
        self.found = found
        self.requested = requested


class Refund(NamedTuple):
    """The result of :func:`refund`."""

    #: Units actually given back, from 0 to the amount asked.
    refunded: int
    #: The standing afterwards, as :func:`quota` gives it for a request of cost 1.
    standing: Decision
    change: Change


class Policy(NamedTuple):
    """One policy of :func:`decide_all`: a limit, its key's state and the request's cost under it."""

    limit: Limit
    state: Optional[State]
    cost: int


class AllOutcome(NamedTuple):
    """The result of :func:`decide_all`."""

    #: Whether every policy admitted the request (with force: whether every cost fitted).
    allowed: bool
    #: 0 when allowed; NEVER when some policy never admits it; else the longest wait.
    retry_after_ms: int
    #: Each policy's outcome, in order; when denied without force only repairs are left.
    outcomes: list[Outcome]


def _checked(limit: Limit, state: Optional[State]) -> Optional[State]:
    if state is not None and algorithm_of(state) != limit.algorithm:
        raise WrongAlgorithm(algorithm_of(state), limit.algorithm)
    return state


def decide(limit: Limit, state: Optional[State], now_us: int, cost: int, force: bool = False) -> Outcome:
    """Decides one request of ``cost`` units at ``now_us`` against the previous ``state``.

    Without ``force``, a request is admitted when its cost fits, and then (cost above zero) the
    new state is to be stored; a denial changes nothing except the repair of a key without
    expiry. With ``force``, the cost is spent even when it does not fit. A dry run is this call
    with the change ignored. Raises :class:`WrongAlgorithm` when ``state`` belongs to another
    algorithm.
    """
    state = _checked(limit, state)
    if limit.algorithm == FIXED:
        return fixed.decide(limit, state, now_us, cost, force)  # type: ignore[arg-type]
    if limit.algorithm == SLIDING:
        return sliding.decide(limit, state, now_us, cost, force)  # type: ignore[arg-type]
    return gcra.decide(limit, state, now_us, cost, force)  # type: ignore[arg-type]


def quota(limit: Limit, state: Optional[State], now_us: int, cost: int = 1) -> Decision:
    """The standing now, as ``RATELIMIT.QUOTA`` answers it: ``remaining`` and
    ``reset_after_ms`` with nothing spent, ``allowed`` and ``retry_after_ms`` for a request of
    ``cost``. Never writes."""
    now = decide(limit, state, now_us, 0).decision
    asked = decide(limit, state, now_us, cost).decision
    return Decision(asked.allowed, now.limit, now.remaining, now.reset_after_ms, asked.retry_after_ms)


def refund(limit: Limit, state: Optional[State], now_us: int, amount: int, window: Optional[int] = None) -> Refund:
    """Gives back up to ``amount`` units spent earlier, as ``RATELIMIT.REFUND`` does: GCRA's
    arrival time moves back (never before now); FIXED's count drops only if its window is
    ``window`` (when given); SLIDING credits the current or the previous window by index.
    A refund back to full capacity deletes the key."""
    state = _checked(limit, state)
    if limit.algorithm == FIXED:
        refunded, change = fixed.refund(limit, state, now_us, amount, window)  # type: ignore[arg-type]
    elif limit.algorithm == SLIDING:
        refunded, change = sliding.refund(limit, state, now_us, amount, window)  # type: ignore[arg-type]
    else:
        refunded, change = gcra.refund(limit, state, now_us, amount)  # type: ignore[arg-type]
    standing = quota(limit, apply(change, state), now_us, 1)
    return Refund(refunded, standing, change)


def decide_all(policies: Sequence[Policy], now_us: int, force: bool = False) -> AllOutcome:
    """Decides one request against several policies at once, all or nothing, as
    ``RATELIMIT.MCHECK`` does. Raises :class:`WrongAlgorithm` when a state belongs to another
    algorithm than its policy's."""
    outcomes = [decide(p.limit, p.state, now_us, p.cost, force) for p in policies]
    allowed = all(o.decision.allowed for o in outcomes)
    if allowed:
        retry = 0
    else:
        waits = [o.decision.retry_after_ms for o in outcomes if not o.decision.allowed]
        retry = NEVER if NEVER in waits else max(waits)
    if not allowed and not force:
        # Nothing is spent; a key without expiry still gets the repair a request of cost 0
        # gives it, also when its own policy admitted the request.
        outcomes = [o._replace(change=decide(p.limit, p.state, now_us, 0, False).change)
                    if isinstance(o.change, Store) else o
                    for o, p in zip(outcomes, policies)]
    return AllOutcome(allowed, retry, outcomes)
