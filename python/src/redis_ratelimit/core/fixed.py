"""FIXED: a window that opens at the first admitted request on an absent key and lasts
``period``; it admits while ``count + cost <= limit`` (``core/src/fixed.rs``).

The window's end is the key's absolute expiry, set once when the window opens. Time is in whole
milliseconds. A window that has reached its end is absent; a key without expiry is a window that
starts now, and any command that decides on it gives it that window's end as its expiry.
"""

from __future__ import annotations

from typing import Optional

from .limit import Limit
from .outcome import KEEP, MAX_STORED_COUNT, NEVER, Change, Decision, Delete, Expire, Outcome, Store, to_i64
from .storage import FixedState


def _read(limit: Limit, state: Optional[FixedState], now_ms: int) -> tuple[int, int, bool]:
    """The count, the current window's end, and whether the key has no expiry."""
    fresh_end = now_ms + limit.period_ms
    if state is not None:
        if state.window_end_ms is None:
            return min(state.count, MAX_STORED_COUNT), fresh_end, True
        if state.window_end_ms > now_ms:
            return min(state.count, MAX_STORED_COUNT), state.window_end_ms, False
    return 0, fresh_end, False


def decide(limit: Limit, state: Optional[FixedState], now_us: int, cost: int, force: bool) -> Outcome:
    """Decides a request of ``cost`` at ``now_us``; with ``force`` it spends even when it does not fit."""
    now_ms = now_us // 1000
    capacity = limit.limit
    count, window_end, without_expiry = _read(limit, state, now_ms)
    until_end = window_end - now_ms
    fits = count + cost <= capacity
    spends = cost > 0 and (fits or force)
    if spends:
        count = min(count + cost, MAX_STORED_COUNT)
    if fits:
        retry = 0
    elif force or cost <= capacity:
        retry = to_i64(until_end)
    else:
        retry = NEVER
    decision = Decision(fits, capacity, max(capacity - count, 0), until_end if count > 0 else 0, retry)
    change: Change
    if spends:
        change = _store(count, window_end)
    elif without_expiry:
        change = Expire(window_end)
    else:
        change = KEEP
    return Outcome(decision, change, window_end)


def refund(
    limit: Limit, state: Optional[FixedState], now_us: int, amount: int, window: Optional[int]
) -> tuple[int, Change]:
    """Gives back up to ``amount`` units, only to the window ending at ``window`` when given."""
    count, window_end, without_expiry = _read(limit, state, now_us // 1000)
    refunded = min(amount, count) if window is None or window == window_end else 0
    left = count - refunded
    if refunded == 0:
        return refunded, Expire(window_end) if without_expiry else KEEP
    if left == 0:
        return refunded, Delete()
    return refunded, _store(left, window_end)


def _store(count: int, window_end: int) -> Store:
    return Store(FixedState(count, window_end), window_end)
