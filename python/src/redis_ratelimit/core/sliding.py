"""SLIDING: the sliding-window counter over epoch-aligned windows (``core/src/sliding.rs``).

The estimate at ``elapsed`` microseconds into the current window is
``previous * (period - elapsed) / period + current``; a request is admitted while
``estimate + cost <= limit``, compared exactly (both sides times the period). ``remaining``
rounds the estimate up, and times round up to the millisecond.

The key expires at ``(window + 2) * period``. An expiry that disagrees was written under another
period (or set by hand): those counts are *held*, both in full without decay, until that expiry.
A key without expiry is read by its window alone, and a command that decides on it gives it the
expiry its window implies, or deletes it when nothing in it counts any more.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Union

from .limit import Limit
from .outcome import (
    KEEP,
    MAX_STORED_COUNT,
    NEVER,
    Change,
    Decision,
    Delete,
    Expire,
    Outcome,
    Store,
    div_ceil,
    to_i64,
    us_to_ms_ceil,
)
from .storage import U64_MAX, SlidingState


class _Windows(NamedTuple):
    previous: int
    current: int
    #: For a key without expiry: the expiry its state implies, in ms.
    implied_expiry: Optional[int]


class _Held(NamedTuple):
    previous: int
    current: int
    until_ms: int


def _saturating(value: int) -> int:
    return min(value, U64_MAX)


def _read(limit: Limit, state: Optional[SlidingState], window: int, now_ms: int) -> Union[_Windows, _Held]:
    if state is None:
        return _Windows(0, 0, None)
    previous = min(state.previous, MAX_STORED_COUNT)
    current = min(state.current, MAX_STORED_COUNT)
    expected = None
    if state.window + 2 <= U64_MAX and (state.window + 2) * limit.period_ms <= U64_MAX:
        expected = (state.window + 2) * limit.period_ms
    if state.expire_at_ms is not None and state.expire_at_ms != expected:
        # Written under another period: held until the expiry, and gone from then on.
        if state.expire_at_ms > now_ms:
            return _Held(previous, current, state.expire_at_ms)
        return _Windows(0, 0, None)
    if state.window == window:
        counts = (previous, current)
    elif state.window + 1 == window:
        counts = (current, 0)
    elif state.window > window:
        # A window ahead of the clock means the clock went back: keep what was spent.
        counts = (previous, current)
    else:
        counts = (0, 0)
    implied = None
    if state.expire_at_ms is None:
        implied = _saturating(_saturating(min(state.window, window) + 2) * limit.period_ms)
    return _Windows(counts[0], counts[1], implied)


class _Instant:
    """One instant within the current window: the period ``p`` and the time ``elapsed`` since
    the window began, in microseconds."""

    def __init__(self, p: int, elapsed: int) -> None:
        self.p = p
        self.elapsed = elapsed

    def estimate(self, previous: int, current: int) -> int:
        """``estimate * period`` for these counts."""
        return previous * (self.p - self.elapsed) + current * self.p

    def fits(self, capacity: int, previous: int, current: int, cost: int) -> bool:
        return cost <= capacity and self.estimate(previous, current) + cost * self.p <= capacity * self.p

    def decision(self, capacity: int, previous: int, current: int, cost: int, fits: bool, force: bool) -> Decision:
        p = self.p
        used = div_ceil(self.estimate(previous, current), p)
        until_window_end = p - self.elapsed
        if fits:
            retry = 0
        elif force or cost <= capacity:
            # After a forced spend, the wait of a request of cost 1.
            wait = _retry_after_us(capacity, previous, current, 1 if force else cost, p, self.elapsed)
            retry = to_i64(us_to_ms_ceil(wait))
        else:
            retry = NEVER
        if current > 0:
            reset = us_to_ms_ceil(until_window_end + p)
        elif previous > 0:
            reset = us_to_ms_ceil(until_window_end)
        else:
            reset = 0
        return Decision(fits, capacity, max(capacity - used, 0), reset, retry)


def decide(limit: Limit, state: Optional[SlidingState], now_us: int, cost: int, force: bool) -> Outcome:
    """Decides a request of ``cost`` at ``now_us``; with ``force`` it spends even when it does not fit."""
    capacity = limit.limit
    period = limit.period_us
    window = now_us // period
    at = _Instant(period, now_us % period)
    reading = _read(limit, state, window, now_us // 1000)
    previous, current = reading.previous, reading.current
    if isinstance(reading, _Windows):
        fits = at.fits(capacity, previous, current, cost)
    else:
        total = previous + current
        fits = total + cost <= capacity
    spends = cost > 0 and (fits or force)
    change: Change
    if spends:
        if isinstance(reading, _Held):
            # Held counts are stored again as the current window's, on this period.
            previous, current = 0, previous + current
        current = min(current + cost, MAX_STORED_COUNT)
        decision = at.decision(capacity, previous, current, cost, fits, force)
        change = _store(limit, window, previous, current)
    elif isinstance(reading, _Windows):
        decision = at.decision(capacity, previous, current, cost, fits, force)
        change = _repair(reading.implied_expiry, now_us)
    else:
        until = us_to_ms_ceil(reading.until_ms * 1000 - now_us)
        if fits:
            retry = 0
        elif force or cost <= capacity:
            retry = to_i64(until)
        else:
            retry = NEVER
        decision = Decision(fits, capacity, max(capacity - total, 0), until if total > 0 else 0, retry)
        change = KEEP
    return Outcome(decision, change, window)


def refund(
    limit: Limit, state: Optional[SlidingState], now_us: int, amount: int, target: Optional[int]
) -> tuple[int, Change]:
    """Gives back up to ``amount`` units to the window of index ``target`` (default: the current
    one) if it is the current or the previous window."""
    window = now_us // limit.period_us
    reading = _read(limit, state, window, now_us // 1000)
    if isinstance(reading, _Held):
        return 0, KEEP
    previous, current = reading.previous, reading.current
    if target is None or target == window:
        refunded = min(amount, current)
        current -= refunded
    elif target + 1 == window:
        refunded = min(amount, previous)
        previous -= refunded
    else:
        return 0, _repair(reading.implied_expiry, now_us)
    if refunded == 0:
        return 0, _repair(reading.implied_expiry, now_us)
    if previous == 0 and current == 0:
        return refunded, Delete()
    return refunded, _store(limit, window, previous, current)


def _repair(implied_expiry: Optional[int], now_us: int) -> Change:
    if implied_expiry is None:
        return KEEP
    if implied_expiry > now_us // 1000:
        return Expire(implied_expiry)
    return Delete()


def _store(limit: Limit, window: int, previous: int, current: int) -> Store:
    # The current window's count decays to nothing at the end of the next window.
    expire_at_ms = _saturating(_saturating(window + 2) * limit.period_ms)
    return Store(SlidingState(window, previous, current, expire_at_ms), expire_at_ms)


def _retry_after_us(capacity: int, previous: int, current: int, cost: int, p: int, elapsed: int) -> int:
    """Microseconds until a request of ``cost <= capacity``, denied now, would be admitted."""
    if current + cost <= capacity:
        # Within this window: the first e with previous * (p - e) <= room * p.
        room = capacity - current - cost
        first = p - (room * p) // max(previous, 1)
        return max(first - elapsed, 0)
    # In the next window, where `current` becomes the decaying previous count.
    room = capacity - cost
    first = p - (room * p) // max(current, 1)
    return (p - elapsed) + first
