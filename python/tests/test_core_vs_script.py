"""The Python port of the algorithms (:mod:`redis_ratelimit.core`) against the Lua script, exact.

With the script's test clock, random request sequences over all three algorithms, huge and tiny
configurations and arbitrary stored states: every reply of CHECK (with DRYRUN, FORCE and
WITHWINDOW), QUOTA, REFUND, MCHECK and RESET must equal the port's, and every stored value and
absolute expiry the port's change, bit for bit. Then the same for concurrency leases (ACQUIRE,
RELEASE): replies, members and scores, and the key's expiry.

As in the Rust client's ``script.rs``: each sequence starts its clock 10 s ahead of the server's
and only moves it forward, so that no key expires on the server by itself while the sequence
runs; expiry at the test clock is simulated on both sides (a key whose expiry is before the
clock is deleted). ``RATELIMIT_SEED`` replays a run; ``RATELIMIT_PY_SEQUENCES`` sets how many
sequences each test runs.
"""

from __future__ import annotations

import os
import random
from typing import Optional

import pytest

from redis_ratelimit import core
from redis_ratelimit.core import GCRA, SLIDING, Limit, LeaseSet

from randomized import MAX_NOW_US, non_canonical, random_cost, random_limit, random_state, seed
from scriptcalls import ScriptCaller

SEQUENCES = int(os.environ.get("RATELIMIT_PY_SEQUENCES") or 400)
NOT_A_LIMITER = b"ERR the key holds a value that is not a rate limiter state"

#: How many sequences and requests each test compared, for the summary printed at the end.
COUNTS: dict[str, int] = {}


@pytest.fixture(scope="module")
def script(script_server) -> ScriptCaller:
    return ScriptCaller(script_server.client())


def _count(name: str, n: int = 1) -> None:
    COUNTS[name] = COUNTS.get(name, 0) + n


class Held:
    """The reference copy of one key: its value and absolute expiry, as the server must hold them."""

    def __init__(self) -> None:
        self.value: Optional[bytes] = None
        self.expiry: Optional[int] = None

    def state(self) -> Optional[core.State]:
        return None if self.value is None else core.decode(self.value, self.expiry)

    def apply(self, change: core.Change) -> None:
        if isinstance(change, core.Store):
            self.value, self.expiry = core.encode(change.state), change.expire_at_ms
        elif isinstance(change, core.Expire):
            if self.value is not None:
                self.expiry = change.at_ms
        elif isinstance(change, core.Delete):
            self.value, self.expiry = None, None

    def expire(self, now_us: int) -> bool:
        """Deletes the key when its expiry is before the clock, as the server would."""
        if self.value is not None and self.expiry is not None and now_us // 1000 > self.expiry:
            self.value, self.expiry = None, None
            return True
        return False

    def matches(self, read: tuple) -> bool:
        value, at, exact = read
        expected_at = -2 if self.value is None else (-1 if self.expiry is None else self.expiry)
        same_at = at == expected_at or (not exact and at >= 0 and expected_at >= 0 and abs(at - expected_at) <= 50)
        return value == self.value and same_at


def _advance(rng: random.Random, now: int, period_us: int, held: Held, last: Optional[core.Decision]) -> int:
    pick = rng.randrange(10)
    if pick < 2:
        step = 0
    elif pick == 2:
        step = rng.randint(1, 1000)
    elif pick == 3:
        step = rng.randrange(period_us)
    elif pick == 4:
        step = max(period_us - now % period_us + rng.randrange(3) - 1, 0)
    elif pick == 5 and held.expiry is not None:
        step = max(held.expiry * 1000 + rng.choice([0, 1, 999, 1000, 1001]) - now, 0)
    elif pick == 6:
        step = rng.randrange(3 * period_us)
    elif pick == 7:
        step = rng.randrange(50 * min(period_us, 1_000_000))
    elif last is not None and last.retry_after_ms > 0 and rng.random() < 0.7:
        step = last.retry_after_ms * 1000
    elif last is not None:
        step = last.reset_after_ms * 1000
    else:
        step = rng.randrange(period_us)
    return now + min(step, (MAX_NOW_US - now) // 32)


def _decision(reply) -> core.Decision:
    allowed, limit, remaining, reset, retry = reply[:5]
    return core.Decision(allowed == 1, limit, remaining, reset, retry)


def test_checks_quotas_and_refunds_match_the_script(script: ScriptCaller) -> None:
    run_seed = seed()
    rng = random.Random(run_seed)
    for sequence in range(SEQUENCES):
        limit = random_limit(rng)
        key = f"py:core:{run_seed}:{sequence}"
        log = [f"seed {run_seed}, sequence {sequence}: {limit}"]
        period_us = limit.period_us
        now = script.server_now_us() + 10_000_000 + rng.randrange(min(period_us, 1 << 40))
        held = Held()
        last: Optional[core.Decision] = None
        windows: list[int] = []
        for _ in range(rng.randint(1, 24)):
            now = _advance(rng, now, period_us, held, last)
            if held.expire(now):
                script.client.delete(key)
            state = held.state()
            exact = rng.random() < 0.3
            capacity = limit.capacity
            pick = rng.randrange(100)
            if pick < 4:
                reply, [read] = script.reset(key)
                log.append(f"@{now} RESET -> {reply}")
                assert reply == int(held.value is not None), "\n".join(log)
                held.apply(core.DELETE)
                _count("resets")
            elif pick < 12:
                value, at = random_state(rng, limit, now, state)
                script.client.set(key, value, pxat=at) if at is not None else script.client.set(key, value)
                log.append(f"@{now} SET {value} PXAT {at}")
                held.value, held.expiry = value.encode(), at
                _count("injected states")
                continue
            elif pick == 12:
                value = non_canonical(rng)
                script.client.set(key, value)
                reply, [read] = script.check(key, limit, 1, 0, now, exact)
                log.append(f"@{now} SET {value!r}; CHECK -> {reply}")
                assert isinstance(reply, Exception) and str(reply).encode() in (NOT_A_LIMITER, NOT_A_LIMITER[4:]), "\n".join(log)
                assert read[0] == value.encode(), "\n".join(log)
                script.client.delete(key)
                held.apply(core.DELETE)
                continue
            elif pick < 20:
                cost = random_cost(rng, capacity, last.remaining if last else capacity)
                reply, [read] = script.check(key, limit, cost, 0, now, exact, command="quota")
                expected = core.quota(limit, state, now, cost)
                log.append(f"@{now} QUOTA cost {cost} -> {reply}, port {expected.reply()}")
                assert reply == expected.reply(), "\n".join(log)
                _count("quotas")
            elif pick < 32:
                amount = random_cost(rng, capacity, capacity)
                window = None
                if limit.algorithm != GCRA and rng.random() < 0.7:
                    window = rng.choice(windows) if windows and rng.random() < 0.8 else rng.getrandbits(rng.choice([8, 44, 64]))
                reply, [read] = script.refund(key, limit, amount, window, now, exact)
                expected = core.refund(limit, state, now, amount, window)
                log.append(f"@{now} REFUND {amount} WINDOW {window} -> {reply}, port {expected.standing.reply()} {expected.refunded}")
                assert reply == [expected.refunded, *expected.standing.reply()[1:]], "\n".join(log)
                held.apply(expected.change)
                _count("refunds")
            else:
                cost = random_cost(rng, capacity, last.remaining if last else capacity)
                mode = rng.randrange(10)
                dry_run, force = mode == 0, mode in (1, 2, 3)
                with_window = rng.random() < 0.5
                flags = int(dry_run) + 2 * int(force) + 4 * int(with_window)
                reply, [read] = script.check(key, limit, cost, flags, now, exact)
                outcome = core.decide(limit, state, now, cost, force)
                expected = outcome.decision.reply() + ([outcome.window] if with_window else [])
                log.append(f"@{now} CHECK cost {cost} flags {flags} -> {reply}, port {expected}")
                assert reply == expected, "\n".join(log)
                if not dry_run:
                    held.apply(outcome.change)
                if outcome.decision.allowed and cost > 0:
                    windows.append(outcome.window)
                last = outcome.decision
                _count("checks")
                _count("forced checks" if force else "dry runs" if dry_run else "plain checks")
            assert held.matches(read), "\n".join(log + [f"stored {read}, expected {held.value!r} at {held.expiry}"])
        _count("sequences")


def test_mcheck_matches_the_script(script: ScriptCaller) -> None:
    run_seed = seed() + 1
    rng = random.Random(run_seed)
    for sequence in range(SEQUENCES // 4):
        n = rng.randint(1, 4)
        limits = [random_limit(rng) for _ in range(n)]
        keys = [f"py:multi:{{{run_seed}:{sequence}}}:{i}" for i in range(n)]
        log = [f"seed {run_seed}, sequence {sequence}: {limits}"]
        period_us = min(limit.period_us for limit in limits)
        now = script.server_now_us() + 10_000_000 + rng.randrange(min(period_us, 1 << 40))
        helds = [Held() for _ in range(n)]
        last: Optional[core.Decision] = None
        for _ in range(rng.randint(1, 16)):
            now = _advance(rng, now, period_us, helds[0], last)
            for key, held in zip(keys, helds):
                if held.expire(now):
                    script.client.delete(key)
            if rng.random() < 0.15:
                i = rng.randrange(n)
                value, at = random_state(rng, limits[i], now, helds[i].state())
                script.client.set(keys[i], value, pxat=at) if at is not None else script.client.set(keys[i], value)
                helds[i].value, helds[i].expiry = value.encode(), at
                log.append(f"@{now} SET {keys[i]} {value} PXAT {at}")
                continue
            costs = [random_cost(rng, limit.capacity, limit.capacity) if rng.random() < 0.3 else rng.choice([0, 1, 1, 2])
                     for limit in limits]
            mode = rng.randrange(8)
            dry_run, force = mode == 0, mode in (1, 2)
            with_window = rng.random() < 0.4
            flags = int(dry_run) + 2 * int(force) + 4 * int(with_window)
            exact = rng.random() < 0.3
            reply, reads = script.mcheck(keys, limits, costs, flags, now, exact)
            policies = [core.Policy(limit, held.state(), cost) for limit, held, cost in zip(limits, helds, costs)]
            result = core.decide_all(policies, now, force)
            expected = [int(result.allowed), result.retry_after_ms] + [
                o.decision.reply() + ([o.window] if with_window else []) for o in result.outcomes
            ]
            log.append(f"@{now} MCHECK costs {costs} flags {flags} -> {reply}, port {expected}")
            assert reply == expected, "\n".join(log)
            for held, outcome, read in zip(helds, result.outcomes, reads):
                if not dry_run:
                    held.apply(outcome.change)
                assert held.matches(read), "\n".join(log + [f"stored {read}, expected {held.value!r} at {held.expiry}"])
            last = result.outcomes[0].decision
            _count("mchecks")
        _count("mcheck sequences")


def test_leases_match_the_script(script: ScriptCaller) -> None:
    run_seed = seed() + 2
    rng = random.Random(run_seed)
    for sequence in range(SEQUENCES // 4):
        key = f"py:lease:{run_seed}:{sequence}"
        limit = rng.choice([1, 2, 3, 5, rng.randint(1, 20)])
        lease_ms = rng.choice([1, 5, 100, 1000, 60_000, rng.randint(1, 10_000)])
        log = [f"seed {run_seed}, sequence {sequence}: limit {limit}, lease {lease_ms} ms"]
        now = script.server_now_us() + 10_000_000
        model = LeaseSet()
        ids: list[str] = []
        for _ in range(rng.randint(1, 30)):
            now += rng.choice([0, 0, rng.randrange(1000), rng.randrange(lease_ms * 1000 + 1), lease_ms * 1000])
            # Expired leases stay in the set until a command removes them; the key itself
            # expires with the latest one, as on the server.
            latest = model.expire_at_ms()
            if latest is not None and now // 1000 > latest:
                script.client.delete(key)
                model = LeaseSet()
            if rng.random() < 0.3 and ids:
                lease_id = rng.choice(ids + ["unknown"])
                reply, _ = script.release(key, lease_id, now)
                expected = int(model.release(lease_id, now // 1000))
                log.append(f"@{now} RELEASE {lease_id} -> {reply}, port {expected}")
                assert reply == expected, "\n".join(log)
                _count("releases")
            else:
                lease_id = rng.choice(ids) if ids and rng.random() < 0.3 else (None if rng.random() < 0.6 else f"job-{rng.randrange(5)}")
                reply, _ = script.acquire(key, limit, lease_ms, lease_id, now)
                decision, granted = model.acquire(limit, lease_ms, now, lease_id)
                expected = decision.reply() + [None if granted is None else granted.encode()]
                log.append(f"@{now} ACQUIRE {lease_id} -> {reply}, port {expected}")
                assert reply == expected, "\n".join(log)
                if granted is not None and granted not in ids:
                    ids.append(granted)
                _count("acquires")
            members, at, exact = script.leases(key)
            live = sorted((i, e) for i, e in model._leases.items())
            assert members == sorted(live, key=lambda m: (m[1], m[0])), "\n".join(log + [f"stored {members}, port {live}"])
            expected_at = -2 if not live else max(e for _, e in live)
            assert at == expected_at or (not exact and at >= 0 and abs(at - expected_at) <= 50), \
                "\n".join(log + [f"expiry {at}, port {expected_at}"])
        _count("lease sequences")


def test_sliding_keeps_units_when_its_period_changes(script: ScriptCaller) -> None:
    """One case of the random test spelled out: a SLIDING key written under another period is
    held in full until its expiry, in the script and in the port alike."""
    key = "py:core:held"
    now = (script.server_now_us() // 60_000_000 + 1) * 60_000_000 + 10_000_000
    minute = Limit(SLIDING, 10, 60_000)
    second = Limit(SLIDING, 10, 1000)
    reply, [read] = script.check(key, minute, 7, 0, now, False)
    held = Held()
    outcome = core.decide(minute, None, now, 7)
    held.apply(outcome.change)
    assert reply == outcome.decision.reply() == [1, 10, 3, 120_000 - 10_000, 0]
    # 5 s later, under a period of one second: the 7 units still count, until the key's expiry.
    reply, [read] = script.check(key, second, 4, 0, now + 5_000_000, False)
    outcome = core.decide(second, held.state(), now + 5_000_000, 4)
    assert reply == outcome.decision.reply() == [0, 10, 3, 105_000, 105_000]
