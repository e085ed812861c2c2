"""The package's vocabulary: :class:`Decision`, :class:`MultiDecision`, :class:`Policy`, the
seed's :class:`Quota`, and periods."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Optional, Tuple, TypedDict, Union

from . import core
from .core import FIXED, MAX_COUNT, MAX_PERIOD_MS, Limit, LimitError

#: Where a decision came from: the module, the Lua script, the in-memory limiter, or the
#: failure policy (``allow`` admits, ``deny`` denies) while Redis cannot answer.
MODULE, SCRIPT, LOCAL, ALLOW, DENY = "module", "script", "local", "allow", "deny"

#: A period: seconds (``60``, ``1.5``), a :class:`~datetime.timedelta`, or the module's syntax
#: (``"1500ms"``, ``"10s"``, ``"5m"``, ``"2h"``, ``"1d"``; a bare number is seconds).
Period = Union[int, float, timedelta, str]

_PERIOD = re.compile(r"([0-9]+)(ms|s|m|h|d|)", re.IGNORECASE)
_UNITS = {"": 1000, "s": 1000, "ms": 1, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def period_ms(period: Period, *, name: str = "period") -> int:
    """``period`` in whole milliseconds, from 1 ms to 3650 days. Raises
    :class:`~redis_ratelimit.core.LimitError` (a :class:`ValueError`) for anything else,
    including a fraction of a millisecond."""
    ms: Optional[int] = None
    if isinstance(period, timedelta):
        us = period // timedelta(microseconds=1)
        ms = us // 1000 if us % 1000 == 0 else None
    elif isinstance(period, bool):
        ms = None
    elif isinstance(period, int):
        ms = period * 1000
    elif isinstance(period, float) and math.isfinite(period):
        # Whole milliseconds, within the float's own error (under 10^-4 ms up to 3650 days): a
        # fraction of a millisecond raises, however long the period.
        scaled = round(period * 1000)
        ms = scaled if abs(scaled - period * 1000) < 1e-3 else None
    elif isinstance(period, str):
        match = _PERIOD.fullmatch(period)
        ms = int(match.group(1)) * _UNITS[match.group(2).lower()] if match else None
    if ms is None or not 1 <= ms <= MAX_PERIOD_MS:
        raise LimitError(f"invalid {name} {period!r}: expected 1 ms to 3650 days, as seconds, a timedelta or '1500ms', '10s', '5m', '2h', '1d'")
    return ms


def check_cost(cost: int, *, name: str = "cost") -> int:
    """``cost`` if it is an integer from 0 to 10^15; raises :class:`ValueError` otherwise."""
    if not isinstance(cost, int) or isinstance(cost, bool) or not 0 <= cost <= MAX_COUNT:
        raise ValueError(f"invalid {name} {cost!r}: expected an integer from 0 to {MAX_COUNT}")
    return cost


def make_limit(limit: int, period: Period, algorithm: str = FIXED, burst: Optional[int] = None) -> Limit:
    """The validated configuration of one limiter; raises :class:`~redis_ratelimit.core.LimitError`."""
    return Limit(algorithm, limit, period_ms(period), burst)


@dataclass(frozen=True)
class Decision:
    """The answer to one request, in the shape of the ``RATELIMIT.CHECK`` reply.

    It is true when the request is admitted: ``if store.check(...):``.
    """

    #: Whether the request is admitted (with FORCE: whether its cost fitted).
    allowed: bool
    #: The capacity: ``limit``, or GCRA's ``burst``.
    limit: int
    #: Units still available right after this decision.
    remaining: int
    #: Milliseconds until the limiter is back to full capacity if nothing more is spent.
    reset_after_ms: int
    #: Milliseconds until a request of this cost would be admitted: 0 when admitted, -1 when it
    #: never can be (its cost exceeds the capacity).
    retry_after_ms: int
    #: Who answered: ``module``, ``script``, ``local``, ``allow`` or ``deny``.
    backend: str
    #: The window the cost was spent in (:meth:`~redis_ratelimit.RedisStore.reserve`): FIXED's
    #: end in Unix ms, SLIDING's index, 0 for GCRA; ``None`` when not asked for.
    window: Optional[int] = None

    @property
    def reset_after(self) -> float:
        """Seconds until the limiter is back to full capacity."""
        return self.reset_after_ms / 1000

    @property
    def retry_after(self) -> Optional[float]:
        """Seconds until a request of this cost would be admitted: 0.0 when admitted, ``None``
        when it never can be."""
        return None if self.retry_after_ms < 0 else self.retry_after_ms / 1000

    @property
    def never(self) -> bool:
        """Whether no wait can admit this request: its cost exceeds the capacity."""
        return self.retry_after_ms < 0

    def __bool__(self) -> bool:
        return self.allowed

    @classmethod
    def from_reply(cls, reply, backend: str) -> "Decision":
        """The decision in a module or script reply: five integers, and the window as a sixth."""
        items = [int(x) for x in reply]
        if len(items) not in (5, 6) or items[0] not in (0, 1) or items[4] < -1 or min(items[1:4]) < 0:
            raise ValueError(f"the rate limiter replied something else than five integers: {reply!r}")
        window = items[5] if len(items) == 6 else None
        return cls(items[0] == 1, items[1], items[2], items[3], items[4], backend, window)

    @classmethod
    def from_core(cls, decision: core.Decision, backend: str, window: Optional[int] = None) -> "Decision":
        """The decision of :mod:`redis_ratelimit.core`, answered by ``backend``."""
        return cls(decision.allowed, decision.limit, decision.remaining, decision.reset_after_ms,
                   decision.retry_after_ms, backend, window)


@dataclass(frozen=True)
class MultiDecision:
    """The answer of :meth:`~redis_ratelimit.RedisStore.check_all`: one request under several
    policies, all or nothing. True when admitted."""

    #: Whether every policy admitted the request; then every policy spent its cost.
    allowed: bool
    #: 0 when allowed, -1 when some policy can never admit it, else the longest wait.
    retry_after_ms: int
    #: Each policy's decision, in order: what CHECK of that policy alone answers (as a dry run
    #: when the request is denied: nothing was spent anywhere).
    decisions: Tuple[Decision, ...]
    #: Who answered.
    backend: str

    @property
    def retry_after(self) -> Optional[float]:
        """Seconds until every policy admits the request; ``None`` when some never will."""
        return None if self.retry_after_ms < 0 else self.retry_after_ms / 1000

    def __bool__(self) -> bool:
        return self.allowed

    def __iter__(self):
        return iter(self.decisions)

    def __len__(self) -> int:
        return len(self.decisions)

    def __getitem__(self, index: int) -> Decision:
        return self.decisions[index]


@dataclass(frozen=True)
class Policy:
    """A named limit and the cost of one request under it.

    - In :meth:`~redis_ratelimit.RedisStore.check_all`, ``name`` is the limiter's key (under the
      store's prefix).
    - In :class:`~redis_ratelimit.asgi.RateLimitMiddleware`, ``name`` names the policy in the
      ``RateLimit`` headers and the counter: the key is ``name + ":" + subject``, as the Rust
      tower layer's.

    Built from the same arguments as :meth:`~redis_ratelimit.RedisStore.check`, and validated:
    an invalid one raises :class:`ValueError`.
    """

    name: str
    limit: int
    period: Period
    algorithm: str = FIXED
    burst: Optional[int] = None
    cost: int = 1
    #: The validated configuration.
    config: Limit = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"invalid policy name {self.name!r}: expected a non-empty string")
        object.__setattr__(self, "config", make_limit(self.limit, self.period, self.algorithm, self.burst))
        object.__setattr__(self, "algorithm", self.config.algorithm)
        check_cost(self.cost)

    @property
    def period_ms(self) -> int:
        """The period in milliseconds."""
        return self.config.period_ms


class Quota(TypedDict):
    """The seed's quota, a plain dict (it serializes to JSON as it is)."""

    #: Requests allowed per period.
    total: int
    #: Requests still allowed.
    remaining: int
    #: Requests spent in the current window: ``total - remaining``.
    used: int
    #: When the window is back to full capacity, in Unix seconds, rounded up.
    reset_at: int


def quota_of(decision: Decision, now: Optional[float] = None) -> Quota:
    """The seed's quota that ``decision`` shows at ``now`` (Unix seconds, default the clock)."""
    now_ms = time.time_ns() // 1_000_000 if now is None else int(round(now * 1_000_000)) // 1000
    return Quota(
        total=decision.limit,
        remaining=decision.remaining,
        used=max(decision.limit - decision.remaining, 0),
        reset_at=-(-(now_ms + decision.reset_after_ms) // 1000),
    )


@dataclass(frozen=True)
class Settlement:
    """What :meth:`Reservation.settle <redis_ratelimit.Reservation.settle>` did."""

    #: Units given back (the estimate was more than what was used).
    refunded: int
    #: Units charged on top of the estimate, with FORCE (the work used more).
    charged: int
    #: The standing afterwards; ``None`` when nothing had to be sent.
    decision: Optional[Decision]
