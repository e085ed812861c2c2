"""GCRA: the generic cell rate algorithm, equivalent to a token bucket (``core/src/gcra.rs``).

The emission interval is ``T = period / limit`` and the tolerance ``burst * T``. A request of
``cost`` is admitted when ``max(tat, now) + cost * T - now <= burst * T``; then the theoretical
arrival time ``tat`` becomes ``max(tat, now) + cost * T``.

Time is counted in GCRA units of ``T / K``, with ``K = period_us / gcd(limit, period_us)``, so
that ``T`` (K units) and one microsecond are whole numbers; K is lowered to
``2^60 / (burst + 1)`` when ``(burst + 1) * K`` would exceed 2^60. The stored ``tat`` is kept
modulo 2^62, and recovered as the value nearest to now. A value that disagrees with the key's
expiry (the arrival time rounded up to the millisecond, the same in every configuration) was
written under another limit or period, and the expiry is used instead.

This is the core's general ("scaled") path, in Python's exact integers: every quantity is
relative to now's floor and scaled by ``period_us``. The core's 64-bit path gives identical
results wherever it applies (a property the core's tests check), so one path is enough here.
"""

from __future__ import annotations

from typing import Optional

from .limit import Limit
from .outcome import KEEP, MAX_TIME_MS, NEVER, Change, Decision, Delete, Expire, Outcome, Store, div_ceil, us_to_ms_ceil
from .storage import GCRA_MODULUS, GcraState

#: How far ahead of now an arrival time may be, in GCRA units: FORCE's debt saturates there.
MAX_AHEAD = 1 << 60


def _distance(start: int, end: int) -> int:
    """The signed distance from ``start`` to ``end`` on the 2^62 circle, in ``[-2^61, 2^61)``."""
    d = (end - start) % GCRA_MODULUS
    return d if d < GCRA_MODULUS // 2 else d - GCRA_MODULUS


class _Scaled:
    """The instant ``now`` in one limit's units, relative to now's floor, scaled by the period."""

    def __init__(self, limit: Limit, now_us: int) -> None:
        self.k = limit.gcra_k
        self.p = limit.period_us
        self.per_us = limit.limit * self.k
        self.now_us = now_us
        scaled = now_us * limit.limit
        whole, rest = divmod(scaled, self.p)
        rest *= self.k
        self.now_floor = ((whole % GCRA_MODULUS) * self.k + rest // self.p) % GCRA_MODULUS
        #: now's remainder, scaled.
        self.now = rest % self.p

    def _stored_tat(self, state: GcraState, capacity: int) -> int:
        """The stored arrival time relative to now's floor, scaled; see the module docs."""
        p, per_us = self.p, self.per_us
        most = _most_ahead(state, capacity, self.k) * p
        from_value = _distance(self.now_floor, state.tat) * p
        tat = from_value
        if state.expire_at_ms is not None and state.expire_at_ms < MAX_TIME_MS:
            until_expiry_us = state.expire_at_ms * 1000 - self.now_us
            far = most // per_us + 1
            if until_expiry_us > far:
                latest = most + per_us
            elif until_expiry_us < -far:
                latest = -most - per_us
            else:
                latest = until_expiry_us * per_us + self.now
            # The expiry is the arrival time rounded up to the microsecond, then to the
            # millisecond: the time lies in (latest - 1001 us, latest].
            if not latest - 1001 * per_us < from_value <= latest:
                tat = latest
        return min(tat, most)

    def backlog(self, state: Optional[GcraState], capacity: int) -> int:
        """The arrival time's distance ahead of now, scaled, at least 0."""
        if state is None:
            return 0
        return max(self._stored_tat(state, capacity) - self.now, 0)

    def spent(self, cost: int) -> int:
        """``cost`` intervals, scaled, at most :data:`MAX_AHEAD` units."""
        return min(cost * self.k, MAX_AHEAD) * self.p

    def time_ms(self, scaled: int) -> int:
        return us_to_ms_ceil(div_ceil(max(scaled, 0), self.per_us))

    def rounded(self, backlog: int) -> tuple[int, int]:
        """The arrival time ``backlog`` ahead of now rounded up to a whole unit, and the key's
        expiry for it."""
        stored = div_ceil(self.now + backlog, self.p)
        full_in_us = div_ceil(stored * self.p - self.now, self.per_us)
        return stored, us_to_ms_ceil(self.now_us + full_in_us)

    def store(self, backlog: int) -> Store:
        stored, expire_at_ms = self.rounded(backlog)
        return Store(GcraState((self.now_floor + stored) % GCRA_MODULUS, expire_at_ms), expire_at_ms)

    def repair(self, state: Optional[GcraState], backlog: int) -> Change:
        if state is None or state.expire_at_ms is not None:
            return KEEP
        if backlog == 0:
            return Delete()
        return Expire(self.rounded(backlog)[1])


def _most_ahead(state: GcraState, capacity: int, k: int) -> int:
    """How far ahead of now a stored arrival time is read: as far as a debt can go with an
    expiry; without one, at most a full bucket spent, ``capacity * K + 1``."""
    return MAX_AHEAD if state.expire_at_ms is not None else capacity * k + 1


def decide(limit: Limit, state: Optional[GcraState], now_us: int, cost: int, force: bool) -> Outcome:
    """Decides a request of ``cost`` at ``now_us``; with ``force`` it spends even when it does not fit."""
    capacity = limit.capacity
    at = _Scaled(limit, now_us)
    unit = at.k * at.p
    tolerance = capacity * unit
    most = MAX_AHEAD * at.p
    base = at.backlog(state, capacity)
    spent = at.spent(cost)
    fits = cost <= capacity and base + spent <= tolerance
    spends = cost > 0 and (fits or force)
    tat = min(base + spent, most) if spends else base
    if fits:
        retry = 0
    elif force:
        retry = at.time_ms(tat + unit - tolerance)
    elif cost <= capacity:
        retry = at.time_ms(base + spent - tolerance)
    else:
        retry = NEVER
    decision = Decision(fits, capacity, max(tolerance - tat, 0) // unit, at.time_ms(tat), retry)
    change = at.store(tat) if spends else at.repair(state, base)
    return Outcome(decision, change, 0)


def refund(limit: Limit, state: Optional[GcraState], now_us: int, amount: int) -> tuple[int, Change]:
    """Moves the arrival time back by ``amount`` intervals, never before now."""
    at = _Scaled(limit, now_us)
    base = at.backlog(state, limit.capacity)
    moved = min(at.spent(amount), base)
    left = base - moved
    change: Change
    if moved == 0:
        change = at.repair(state, base)
    elif left == 0:
        change = Delete()
    else:
        change = at.store(left)
    return div_ceil(moved, at.k * at.p), change
