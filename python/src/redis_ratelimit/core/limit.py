"""The configuration of one limiter: algorithm, limit, period and burst (``core/src/limit.rs``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from math import gcd

#: The largest ``limit``, ``burst`` and ``cost``: 10^15.
MAX_COUNT = 1_000_000_000_000_000
#: The longest ``period``: 3650 days, in milliseconds.
MAX_PERIOD_MS = 3650 * 86_400_000
#: The three algorithms of the contract, as the contract writes them.
ALGORITHMS = ("FIXED", "SLIDING", "GCRA")

FIXED, SLIDING, GCRA = ALGORITHMS

# The largest product (burst + 1) * K, which bounds every GCRA distance from now (gcra.rs).
_MAX_SPAN = 1 << 60


class LimitError(ValueError):
    """A limiter configuration outside the contract's ranges; the message says which value."""


def parse_algorithm(name: str) -> str:
    """``FIXED``, ``SLIDING`` or ``GCRA`` from ``name`` in any letter case.

    Raises :class:`LimitError` for any other name.
    """
    upper = name.upper() if isinstance(name, str) else None
    if upper not in ALGORITHMS:
        raise LimitError(f"unknown algorithm {name!r}: expected FIXED, SLIDING or GCRA")
    return upper


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Limit:
    """A valid limiter configuration: ``limit`` units per ``period_ms`` with one algorithm.

    It cannot be built with values outside the contract's ranges (limit and burst 1 to 10^15,
    period 1 ms to 3650 days, burst only for GCRA): :class:`LimitError` says which.
    """

    algorithm: str
    limit: int
    period_ms: int
    #: GCRA's capacity; ``None`` means ``limit``. Only GCRA takes one.
    burst: int | None = None
    #: GCRA's units per emission interval, K (see :mod:`redis_ratelimit.core.gcra`).
    gcra_k: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        algorithm = parse_algorithm(self.algorithm)
        object.__setattr__(self, "algorithm", algorithm)
        if not _integer(self.limit) or not 1 <= self.limit <= MAX_COUNT:
            raise LimitError(f"invalid limit {self.limit!r}: expected an integer from 1 to {MAX_COUNT}")
        if not _integer(self.period_ms) or not 1 <= self.period_ms <= MAX_PERIOD_MS:
            raise LimitError(f"invalid period {self.period_ms!r} ms: expected 1 ms to 3650 days")
        if self.burst is not None:
            if algorithm != GCRA:
                raise LimitError("BURST applies only to ALGORITHM GCRA")
            if not _integer(self.burst) or not 1 <= self.burst <= MAX_COUNT:
                raise LimitError(f"invalid burst {self.burst!r}: expected an integer from 1 to {MAX_COUNT}")
        if algorithm == GCRA:
            object.__setattr__(self, "gcra_k", units_per_interval(self.limit, self.period_ms * 1000, self.capacity))

    @property
    def capacity(self) -> int:
        """The capacity reported in decisions: ``burst`` (default ``limit``) for GCRA, ``limit`` otherwise."""
        if self.algorithm == GCRA and self.burst is not None:
            return self.burst
        return self.limit

    @property
    def period_us(self) -> int:
        """The period in microseconds."""
        return self.period_ms * 1000


def units_per_interval(count: int, period_us: int, burst: int) -> int:
    """GCRA's K: units per emission interval, ``period_us / gcd(count, period_us)``, lowered to
    ``2^60 / (burst + 1)`` when ``(burst + 1) * K`` would exceed 2^60."""
    exact = period_us // gcd(count, period_us)
    span = burst + 1
    return exact if span * exact <= _MAX_SPAN else _MAX_SPAN // span
