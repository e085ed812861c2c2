"""Random limits, costs and stored states for the comparisons with the Lua script, after the
Rust client's ``client/tests/script.rs``: huge and tiny configurations, every algorithm, and
states a server could hold (older or newer windows, debts, arrival times anywhere on the 2^62
circle, keys without expiry or with an expiry that disagrees with the value)."""

from __future__ import annotations

import os
import random
import time
from math import gcd
from typing import Optional

from redis_ratelimit.core import (
    FIXED,
    GCRA,
    GCRA_MODULUS,
    MAX_COUNT,
    MAX_PERIOD_MS,
    SLIDING,
    GcraState,
    Limit,
    State,
)

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
#: The latest test clock: Lua numbers are exact below 2^53.
MAX_NOW_US = (1 << 53) - 1


def seed() -> int:
    """``RATELIMIT_SEED`` to replay a run, else the time."""
    return int(os.environ.get("RATELIMIT_SEED") or time.time_ns())


def interesting_limits() -> list[Limit]:
    limits = []
    for algorithm in (FIXED, SLIDING, GCRA):
        for count, period_ms in [
            (MAX_COUNT, 1), (MAX_COUNT, MAX_PERIOD_MS), (3, 10_000), (1, 1), (1, MAX_PERIOD_MS),
            (100, 60_000), (7, 60_000), (1_000_000, DAY_MS), (999_999_999_999_989, HOUR_MS),
            (999_983, 30 * DAY_MS),
        ]:
            limits.append(Limit(algorithm, count, period_ms))
    for count, period_ms, burst in [
        (999_983, 30 * DAY_MS, MAX_COUNT), (MAX_COUNT, 1, 1), (1, MAX_PERIOD_MS, MAX_COUNT),
        (5, 1000, MAX_COUNT), (7, MAX_PERIOD_MS, MAX_COUNT), (100, 60_000, 1), (3, 10_000, 50),
        # (burst + 1) * K near 2^60, where K is lowered.
        (125, 137_438_953_472, (1 << 20) - 1), (1, 14_481_573_419, 79_612), (1, 14_481_573_419, 79_611),
    ]:
        limits.append(Limit(GCRA, count, period_ms, burst))
    return limits


INTERESTING = interesting_limits()


def random_count(rng: random.Random) -> int:
    pick = rng.randrange(7)
    if pick == 0:
        return rng.randint(1, 10)
    if pick == 1:
        return rng.randint(1, 1000)
    if pick == 2:
        return rng.randint(1, 1_000_000)
    if pick == 3:
        return rng.randint(1, MAX_COUNT)
    if pick == 4:
        return MAX_COUNT
    if pick == 5:
        return rng.choice([999_983, 999_999_999_999_989, 7, 13, 1 << 40])
    return rng.randint(1, 100)


def random_limit(rng: random.Random, small: bool = False) -> Limit:
    """A random valid limit; with ``small``, the everyday sizes only (the in-memory limiter's
    sequences, where requests are plain)."""
    if not small and rng.random() < 0.4:
        return rng.choice(INTERESTING)
    algorithm = rng.choice([FIXED, SLIDING, GCRA])
    if small:
        period_ms = rng.choice([1, 7, 100, 1000, 1500, 60_000, HOUR_MS, rng.randint(1, 100_000)])
        count = rng.choice([1, 2, 3, 5, 10, 100, rng.randint(1, 50)])
        burst = rng.choice([None, 1, 3, rng.randint(1, 60)]) if algorithm == GCRA else None
        return Limit(algorithm, count, period_ms, burst)
    pick = rng.randrange(7)
    if pick == 0:
        period_ms = rng.randint(1, 1000)
    elif pick == 1:
        period_ms = 1000 * rng.randint(1, 3600)
    elif pick == 2:
        period_ms = 60_000 * rng.randint(1, 1440)
    elif pick == 3:
        period_ms = DAY_MS * rng.randint(1, 3650)
    elif pick == 4:
        period_ms = MAX_PERIOD_MS
    elif pick == 5:
        period_ms = rng.randint(1, MAX_PERIOD_MS)
    else:
        period_ms = rng.choice([1, 1000, 60_000, HOUR_MS, DAY_MS, 30 * DAY_MS])
    burst = random_count(rng) if algorithm == GCRA and rng.random() < 0.5 else None
    return Limit(algorithm, random_count(rng), period_ms, burst)


def random_cost(rng: random.Random, capacity: int, last_remaining: int) -> int:
    pick = rng.randrange(20)
    if pick < 2:
        cost = 0
    elif pick < 9:
        cost = 1
    elif pick < 12:
        cost = rng.randint(2, 10)
    elif pick < 15:
        cost = capacity - 1 + rng.randrange(3)
    elif pick < 17:
        cost = max(last_remaining + rng.randrange(3) - 1, 0)
    elif pick < 19:
        cost = rng.randint(0, capacity)
    else:
        cost = rng.randint(0, MAX_COUNT)
    return min(cost, MAX_COUNT)


def gcra_now_floor(limit: Limit, now_us: int) -> tuple[int, int]:
    """GCRA's ``now`` in units modulo 2^62, and K: only to aim injected states near the present."""
    p = limit.period_us
    exact = p // gcd(limit.limit, p)
    span = limit.capacity + 1
    k = exact if span * exact <= 1 << 60 else (1 << 60) // span
    whole, rest = divmod(now_us * limit.limit, p)
    rest *= k
    return ((whole % GCRA_MODULUS) * k + rest // p) % GCRA_MODULUS, k


def random_state(rng: random.Random, limit: Limit, now_us: int, previous: Optional[State]) -> tuple[str, Optional[int]]:
    """A random valid value of ``limit``'s algorithm, and an expiry at or after now (or none)."""
    now_ms = now_us // 1000
    capacity = limit.capacity

    def count() -> int:
        pick = rng.randrange(8)
        return [0, rng.randint(0, capacity), capacity, capacity + 1, rng.randint(0, 2 * capacity),
                rng.getrandbits(63), (1 << 64) - 1, rng.randint(0, 10)][pick]

    keep_expiry = None
    if limit.algorithm == FIXED:
        value = str(min(count(), (1 << 63) - 1))
    elif limit.algorithm == SLIDING:
        current = now_us // limit.period_us
        pick = rng.randrange(8)
        if pick < 2:
            window = current
        elif pick < 4:
            window = current - 1
        elif pick == 4:
            window = current - 2
        elif pick == 5:
            window = current + 1 + rng.randrange(3)
        elif pick == 6:
            window = rng.choice([0, (1 << 64) - 1, (1 << 53) + 1])
        else:
            window = rng.getrandbits(64)
        value = f"s:{max(window, 0)}:{count()}:{count()}"
    else:
        now_floor, k = gcra_now_floor(limit, now_us)
        span = (capacity + 1) * k

        def near(offset: int) -> int:
            return (now_floor + offset) % GCRA_MODULUS

        pick = rng.randrange(8)
        if pick == 0:
            tat = near(rng.randrange(span + 2))
        elif pick == 1:
            tat = near(-rng.randrange(span + 2))
        elif pick == 2:
            tat = near(rng.choice([0, 1, -1, span - k, span]))
        elif pick == 3:
            tat = rng.getrandbits(64) % GCRA_MODULUS
        elif pick == 4:
            tat = rng.choice([0, GCRA_MODULUS - 1, 1 << 53, (1 << 53) - 1])
        elif pick == 5:
            tat = near(rng.choice([1 << 61, (1 << 61) - 1, -(1 << 61)]))
        elif isinstance(previous, GcraState):
            keep_expiry = previous.expire_at_ms
            tat = (previous.tat + rng.randrange(2 * k + 1) - k) % GCRA_MODULUS
        else:
            tat = near(rng.randrange(span))
        value = f"-{tat + 1}"
    pick = rng.randrange(4)
    if keep_expiry is not None and rng.random() < 0.8:
        expiry = keep_expiry
    elif pick == 0:
        expiry = None
    elif pick == 1:
        expiry = now_ms
    else:
        expiry = now_ms + rng.randrange(3 * limit.period_ms + 1)
    return value, None if expiry is None else min(expiry, MAX_NOW_US // 1000)


def non_canonical(rng: random.Random) -> str:
    """A value that looks like a limiter's state but is none: a non-canonical number."""
    n = rng.randint(0, 1_000_000)
    return rng.choice([f"0{n}", f"-0{n + 1}", f"+{n}", f" {n}", f"{n} ", f"s:0{n}:1:2", f"s:{n}:01:2", f"s:{n}:1:00"])
