"""The in-memory fallback (:class:`redis_ratelimit.MemoryLimiter`, as the store uses it while Redis
is down) against the Lua script on its test clock: random sequences of CHECK (with DRYRUN, FORCE
and WITHWINDOW), QUOTA, REFUND, MCHECK, RESET, ACQUIRE and RELEASE on everyday limits, at the
same explicit instants. Every reply must be the script's, and after each request the limiter
must hold what the server holds: the same encoded value and absolute expiry, the same leases."""

from __future__ import annotations

import os
import random

import pytest

from redis_ratelimit import MemoryLimiter
from redis_ratelimit.core import GCRA, LeaseSet, encode

from randomized import random_limit, seed
from scriptcalls import ScriptCaller

SEQUENCES = int(os.environ.get("RATELIMIT_PY_SEQUENCES") or 400) // 2
COUNTS: dict[str, int] = {}


def _count(name: str) -> None:
    COUNTS[name] = COUNTS.get(name, 0) + 1


@pytest.fixture(scope="module")
def script(script_server) -> ScriptCaller:
    return ScriptCaller(script_server.client())


def _stored(memory: MemoryLimiter, key: str, now_us: int):
    """What the limiter holds for ``key``, as the server would show it: value and expiry."""
    entry = memory._entries.get(key)
    if entry is None or now_us // 1000 > entry.expire_at_ms:
        return None, -2
    return encode(entry.state), entry.expire_at_ms


def test_limiters_match_the_script(script: ScriptCaller) -> None:
    run_seed = seed() + 10
    rng = random.Random(run_seed)
    memory = MemoryLimiter()
    for sequence in range(SEQUENCES):
        n = rng.choice([1, 1, 1, 2, 3])
        limits = [random_limit(rng, small=True) for _ in range(n)]
        keys = [f"py:memory:{{{run_seed}:{sequence}}}:{i}" for i in range(n)]
        log = [f"seed {run_seed}, sequence {sequence}: {limits}"]
        now = script.server_now_us() + 10_000_000
        windows: list[int] = []
        for _ in range(rng.randint(1, 30)):
            period_us = min(limit.period_us for limit in limits)
            now += rng.choice([0, rng.randrange(1000), rng.randrange(period_us + 1), period_us, rng.randrange(3 * period_us)])
            for key in keys:
                value, at = _stored(memory, key, now)
                if value is None:
                    script.client.delete(key)
            i = rng.randrange(n)
            key, limit = keys[i], limits[i]
            cost = rng.choice([0, 1, 1, 1, 2, limit.capacity, limit.capacity + 1, rng.randint(0, 3 * limit.capacity)])
            pick = rng.randrange(100)
            if pick < 5:
                reply, _ = script.reset(key)
                assert reply == int(memory.reset(key, now_us=now)), "\n".join(log)
                _count("resets")
            elif pick < 15:
                reply, _ = script.check(key, limit, cost, 0, now, False, command="quota")
                expected = memory.quota(key, limit, cost, now_us=now).reply()
                log.append(f"@{now} QUOTA {key} {cost} -> {reply}, memory {expected}")
                assert reply == expected, "\n".join(log)
                _count("quotas")
            elif pick < 30:
                window = None
                if limit.algorithm != GCRA and windows and rng.random() < 0.7:
                    window = rng.choice(windows)
                reply, _ = script.refund(key, limit, cost, window, now, False)
                result = memory.refund(key, limit, cost, window, now_us=now)
                expected = [result.refunded, *result.standing.reply()[1:]]
                log.append(f"@{now} REFUND {key} {cost} WINDOW {window} -> {reply}, memory {expected}")
                assert reply == expected, "\n".join(log)
                _count("refunds")
            elif pick < 45 and n > 1:
                costs = [rng.choice([0, 1, 1, 2, lim.capacity]) for lim in limits]
                mode = rng.randrange(6)
                dry_run, force = mode == 0, mode == 1
                flags = int(dry_run) + 2 * int(force) + 4
                reply, _ = script.mcheck(keys, limits, costs, flags, now, False)
                result = memory.check_all(list(zip(keys, limits, costs)), dry_run=dry_run, force=force, now_us=now)
                expected = [int(result.allowed), result.retry_after_ms] + [o.decision.reply() + [o.window] for o in result.outcomes]
                log.append(f"@{now} MCHECK {costs} flags {flags} -> {reply}, memory {expected}")
                assert reply == expected, "\n".join(log)
                _count("mchecks")
            else:
                mode = rng.randrange(8)
                dry_run, force = mode == 0, mode == 1
                flags = int(dry_run) + 2 * int(force) + 4
                reply, _ = script.check(key, limit, cost, flags, now, False)
                outcome = memory.check(key, limit, cost, dry_run=dry_run, force=force, now_us=now)
                expected = outcome.decision.reply() + [outcome.window]
                log.append(f"@{now} CHECK {key} {cost} flags {flags} -> {reply}, memory {expected}")
                assert reply == expected, "\n".join(log)
                if outcome.decision.allowed and cost:
                    windows.append(outcome.window)
                _count("checks")
            for key in keys:
                value, at, exact = script.client.evalsha(script.read_sha, 1, key)
                held, held_at = _stored(memory, key, now)
                # Redis 6.2 has no PEXPIRETIME: its expiry is TIME + PTTL, within a few ms.
                same_at = at == held_at or (exact == 0 and min(at, held_at) >= 0 and abs(at - held_at) <= 50)
                assert value == held and same_at, "\n".join(log + [f"{key}: server {value!r} {at}, memory {held!r} {held_at}"])
        _count("sequences")


def test_leases_match_the_script(script: ScriptCaller) -> None:
    run_seed = seed() + 11
    rng = random.Random(run_seed)
    memory = MemoryLimiter()
    for sequence in range(SEQUENCES // 2):
        key = f"py:memory-lease:{run_seed}:{sequence}"
        limit = rng.choice([1, 2, 3, rng.randint(1, 10)])
        lease_ms = rng.choice([1, 10, 1000, rng.randint(1, 5000)])
        log = [f"seed {run_seed}, sequence {sequence}: limit {limit}, lease {lease_ms} ms"]
        now = script.server_now_us() + 10_000_000
        ids: list[str] = []
        for _ in range(rng.randint(1, 25)):
            now += rng.choice([0, rng.randrange(1000), rng.randrange(lease_ms * 1000 + 1), lease_ms * 1000])
            leases = memory._entries.get(key)
            if isinstance(leases, LeaseSet) and leases.expire_at_ms() is not None and now // 1000 > leases.expire_at_ms():
                script.client.delete(key)
            if ids and rng.random() < 0.3:
                lease_id = rng.choice(ids + ["unknown"])
                reply, _ = script.release(key, lease_id, now)
                expected = int(memory.release(key, lease_id, now_us=now))
                _count("releases")
            else:
                lease_id = rng.choice(ids) if ids and rng.random() < 0.3 else None
                reply, _ = script.acquire(key, limit, lease_ms, lease_id, now)
                decision, granted = memory.acquire(key, limit, lease_ms, lease_id, now_us=now)
                expected = decision.reply() + [None if granted is None else granted.encode()]
                if granted:
                    ids.append(granted)
                _count("acquires")
            log.append(f"@{now} {lease_id} -> {reply}, memory {expected}")
            assert reply == expected, "\n".join(log)
            members, _, _ = script.leases(key)
            held = memory._entries.get(key)
            live = sorted(held._leases.items(), key=lambda m: (m[1], m[0])) if isinstance(held, LeaseSet) else []
            assert members == live, "\n".join(log + [f"server {members}, memory {live}"])
        _count("lease sequences")
