"""Concurrency leases: at most ``limit`` holders at once, each holding a lease that expires
unless it is released or renewed (``core/src/lease.rs``).

In Redis the leases live in a sorted set (member = lease ID, score = its absolute expiry in Unix
ms). A lease is live while its expiry is after now; every command first removes the others. The
set's key expires with its latest lease. :class:`LeaseSet` makes exactly the module's changes.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Optional

from .outcome import NEVER, Decision, to_i64

#: The largest ``limit`` of leases: 10^6.
MAX_LEASES = 1_000_000
#: The longest lease ID, in bytes.
MAX_ID_LEN = 128


def auto_id(now_us: int, is_live) -> str:
    """A lease ID for a request that names none: ``now_us`` in decimal, or ``now_us-n`` with the
    smallest ``n`` from 2 that no live lease holds."""
    base = str(now_us)
    if not is_live(base):
        return base
    n = 2
    while is_live(f"{base}-{n}"):
        n += 1
    return f"{base}-{n}"


class LeaseSet:
    """One key's leases in memory: ID -> absolute expiry in ms."""

    def __init__(self, leases: Iterable[tuple[str, int]] = ()) -> None:
        self._leases: dict[str, int] = dict(leases)

    def acquire(self, limit: int, lease_ms: int, now_us: int, lease_id: Optional[str]) -> tuple[Decision, Optional[str]]:
        """``RATELIMIT.ACQUIRE`` at ``now_us``: removes the expired leases, then renews the named
        lease when it is live, or grants a new one when fewer than ``limit`` are live. Returns
        the decision and the lease ID, ``None`` when denied."""
        now_ms = now_us // 1000
        self._remove_expired(now_ms)
        expire_at_ms = now_ms + lease_ms
        expiries = sorted(self._leases.values())
        count = len(expiries)
        earliest = expiries[0] if expiries else None
        latest = expiries[-1] if expiries else None
        holder = self._leases.get(lease_id) if lease_id is not None else None
        if holder is not None:
            others = list(expiries)
            others.remove(holder)
            granted, live_after, others_latest = True, count, (others[-1] if others else None)
        elif count < limit:
            granted, live_after, others_latest = True, count + 1, latest
        else:
            granted, live_after, others_latest = False, count, latest
        if granted:
            latest_after: Optional[int] = expire_at_ms if others_latest is None else max(others_latest, expire_at_ms)
        else:
            latest_after = latest
        if granted:
            retry = 0
        elif earliest is not None:
            retry = to_i64(max(earliest - now_ms, 0))
        else:
            retry = NEVER
        decision = Decision(
            granted,
            limit,
            max(limit - live_after, 0),
            0 if latest_after is None else max(latest_after - now_ms, 0),
            retry,
        )
        if not granted:
            return decision, None
        if lease_id is None:
            lease_id = auto_id(now_us, lambda candidate: candidate in self._leases)
        self._leases[lease_id] = expire_at_ms
        return decision, lease_id

    def release(self, lease_id: str, now_ms: int) -> bool:
        """``RATELIMIT.RELEASE`` at ``now_ms``: removes the expired leases, then ``lease_id``.
        Answers whether it was live."""
        self._remove_expired(now_ms)
        return self._leases.pop(lease_id, None) is not None

    def leases(self, now_ms: int) -> Iterator[tuple[str, int]]:
        """The live leases at ``now_ms`` (ID, expiry in ms), in ID order."""
        return iter(sorted((i, e) for i, e in self._leases.items() if e > now_ms))

    def expire_at_ms(self) -> Optional[int]:
        """The latest expiry: the key's; ``None`` when the set is empty."""
        return max(self._leases.values(), default=None)

    def __len__(self) -> int:
        return len(self._leases)

    def _remove_expired(self, now_ms: int) -> None:
        for lease_id in [i for i, e in self._leases.items() if e <= now_ms]:
            del self._leases[lease_id]
