"""The in-memory limiter: :mod:`redis_ratelimit.core` with an in-process store, the fallback while
Redis is unreachable (``client/src/local.rs``).

It takes exactly the decisions the module takes for the same requests at the same instants:
each key keeps the core state and the absolute expiry the module would write with ``PXAT``, and
an entry whose expiry has passed (``now_ms > expire_at_ms``, as Redis decides) is absent. Leases
are kept the same way. What it cannot share with Redis is the state itself: each process
limits on its own.

Memory is bounded: an expired entry is removed when it is looked up, each insert removes up to
two expired entries among the oldest, and at ``max_entries`` the oldest entry (by insertion) is
evicted first. Evicting forgets what the key spent: the cap is a guard against floods of
distinct keys, not a cache.

Every method takes an optional ``now_us`` (microseconds since the Unix epoch) for tests; by
default the time is the wall clock read once when the limiter was made, carried forward by the
monotonic clock, so that it never steps back when the system clock is set.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Optional, Sequence, Tuple, Union

from . import core
from .core import FixedState, LeaseSet, Limit

_SWEEP_STEPS = 2


class WrongTypeError(Exception):
    """A lease operation on a limiter's key, or the reverse: Redis would answer ``WRONGTYPE``."""

    def __init__(self) -> None:
        super().__init__("WRONGTYPE Operation against a key holding the wrong kind of value")


class _Entry:
    __slots__ = ("state", "expire_at_ms")

    def __init__(self, state: core.State, expire_at_ms: int) -> None:
        self.state = state
        self.expire_at_ms = expire_at_ms

    def live(self, now_ms: int) -> bool:
        return now_ms <= self.expire_at_ms


class MemoryLimiter:
    """An in-process rate limiter with the module's exact semantics, safe across threads."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max(int(max_entries), 1)
        self._entries: "OrderedDict[str, Union[_Entry, LeaseSet]]" = OrderedDict()
        self._lock = threading.Lock()
        self._origin_us = time.time_ns() // 1000
        self._origin_ns = time.monotonic_ns()

    def now_us(self) -> int:
        """The limiter's clock: microseconds since the Unix epoch."""
        return self._origin_us + (time.monotonic_ns() - self._origin_ns) // 1000

    def __len__(self) -> int:
        """Stored entries, including expired ones not yet removed."""
        return len(self._entries)

    def check(self, key: str, limit: Limit, cost: int, *, dry_run: bool = False, force: bool = False,
              now_us: Optional[int] = None) -> core.Outcome:
        """Decides one request of ``cost`` on ``key`` and, unless it is a dry run, makes the change
        (``RATELIMIT.CHECK``; ``force`` spends even when the cost does not fit). Raises
        :class:`~redis_ratelimit.core.WrongAlgorithm` for another algorithm's state."""
        with self._lock:
            now_us = self._now(now_us)
            outcome = core.decide(limit, self._state(key, now_us), now_us, cost, force)
            if not dry_run:
                self._apply(key, outcome.change, now_us)
            return outcome

    def quota(self, key: str, limit: Limit, cost: int = 1, *, now_us: Optional[int] = None) -> core.Decision:
        """The standing now, as ``RATELIMIT.QUOTA`` answers it. Changes nothing."""
        with self._lock:
            now_us = self._now(now_us)
            return core.quota(limit, self._state(key, now_us), now_us, cost)

    def check_all(self, policies: Sequence[Tuple[str, Limit, int]], *, dry_run: bool = False,
                  force: bool = False, now_us: Optional[int] = None) -> core.AllOutcome:
        """One request under several ``(key, limit, cost)`` policies, all or nothing
        (``RATELIMIT.MCHECK``)."""
        with self._lock:
            now_us = self._now(now_us)
            states = [core.Policy(limit, self._state(key, now_us), cost) for key, limit, cost in policies]
            result = core.decide_all(states, now_us, force)
            if not dry_run:
                for (key, _, _), outcome in zip(policies, result.outcomes):
                    self._apply(key, outcome.change, now_us)
            return result

    def refund(self, key: str, limit: Limit, amount: int, window: Optional[int] = None, *,
               now_us: Optional[int] = None) -> core.Refund:
        """Gives back up to ``amount`` units to the window they were spent in (``RATELIMIT.REFUND``)."""
        with self._lock:
            now_us = self._now(now_us)
            result = core.refund(limit, self._state(key, now_us), now_us, amount, window)
            self._apply(key, result.change, now_us)
            return result

    def reset(self, key: str, *, now_us: Optional[int] = None) -> bool:
        """Deletes ``key``'s state; answers whether there was a live one."""
        with self._lock:
            now_us = self._now(now_us)
            found = self._live(key, now_us)
            if not isinstance(found, _Entry):
                # A lease set is no rate limit: left alone, as RATELIMIT.RESET leaves it.
                return False
            self._entries.pop(key, None)
            return True

    def acquire(self, key: str, limit: int, lease_ms: int, lease_id: Optional[str] = None, *,
                now_us: Optional[int] = None) -> Tuple[core.Decision, Optional[str]]:
        """Takes or renews a lease (``RATELIMIT.ACQUIRE``); the lease ID is ``None`` when denied."""
        with self._lock:
            now_us = self._now(now_us)
            leases = self._live(key, now_us)
            if isinstance(leases, _Entry):
                raise WrongTypeError()
            if leases is None:
                leases = LeaseSet()
            decision, granted = leases.acquire(limit, lease_ms, now_us, lease_id)
            if granted is not None and key not in self._entries:
                self._insert(key, leases, now_us // 1000)
            return decision, granted

    def release(self, key: str, lease_id: str, *, now_us: Optional[int] = None) -> bool:
        """Releases a lease (``RATELIMIT.RELEASE``); answers whether it was live."""
        with self._lock:
            now_us = self._now(now_us)
            leases = self._live(key, now_us)
            if isinstance(leases, _Entry):
                raise WrongTypeError()
            if leases is None:
                return False
            released = leases.release(lease_id, now_us // 1000)
            if not len(leases):
                del self._entries[key]
            return released

    def increment(self, key: str, amount: int, expiry_ms: int, *, now_us: Optional[int] = None) -> int:
        """The seed's counter: adds ``amount``, and gives a new counter the expiry ``expiry_ms``
        from now (never extended). Answers the new value. The counter is a FIXED count."""
        with self._lock:
            now_us = self._now(now_us)
            entry = self._live(key, now_us)
            if isinstance(entry, LeaseSet) or (entry is not None and not isinstance(entry.state, FixedState)):
                raise WrongTypeError()
            if entry is None:
                entry = _Entry(FixedState(0, None), now_us // 1000 + expiry_ms)
                self._insert(key, entry, now_us // 1000)
            entry.state = FixedState(entry.state.count + amount, entry.expire_at_ms)
            return entry.state.count

    def get_with_expiry(self, key: str, *, now_us: Optional[int] = None) -> Tuple[int, Optional[int]]:
        """The counter's value and milliseconds to its expiry; ``(0, None)`` when absent."""
        with self._lock:
            now_us = self._now(now_us)
            entry = self._live(key, now_us)
            if entry is None:
                return 0, None
            if not isinstance(entry, _Entry) or not isinstance(entry.state, FixedState):
                raise WrongTypeError()
            return entry.state.count, entry.expire_at_ms - now_us // 1000

    def clear(self) -> None:
        """Forgets every key."""
        with self._lock:
            self._entries.clear()

    def _now(self, now_us: Optional[int]) -> int:
        return self.now_us() if now_us is None else now_us

    def _live(self, key: str, now_us: int) -> Union[_Entry, LeaseSet, None]:
        entry = self._entries.get(key)
        if entry is None:
            return None
        latest = entry.expire_at_ms if isinstance(entry, _Entry) else entry.expire_at_ms()
        if latest is None or now_us // 1000 > latest:
            del self._entries[key]
            return None
        return entry

    def _state(self, key: str, now_us: int) -> Optional[core.State]:
        entry = self._live(key, now_us)
        if isinstance(entry, LeaseSet):
            raise WrongTypeError()
        return None if entry is None else core.with_expiry(entry.state, entry.expire_at_ms)

    def _apply(self, key: str, change: core.Change, now_us: int) -> None:
        if isinstance(change, core.Store):
            entry = self._entries.get(key)
            if isinstance(entry, _Entry):
                entry.state, entry.expire_at_ms = change.state, change.expire_at_ms
            else:
                self._insert(key, _Entry(change.state, change.expire_at_ms), now_us // 1000)
        elif isinstance(change, core.Delete):
            self._entries.pop(key, None)
        # Keep, and Expire: every entry here has an expiry, so no repair is ever needed.

    def _insert(self, key: str, entry: Union[_Entry, LeaseSet], now_ms: int) -> None:
        for _ in range(_SWEEP_STEPS):
            oldest = next(iter(self._entries.items()), None)
            if oldest is None:
                break
            latest = oldest[1].expire_at_ms if isinstance(oldest[1], _Entry) else oldest[1].expire_at_ms()
            if latest is not None and now_ms <= latest:
                break
            del self._entries[oldest[0]]
        while len(self._entries) >= self.max_entries:
            self._entries.popitem(last=False)
        self._entries[key] = entry
