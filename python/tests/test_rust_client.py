"""The Python store and the Rust client on one key: the same decisions, one storage.

The Rust side is the Rust client's example program (``client/examples/check.rs``, built by
``cargo build --release -p ratelimit-client --example check``; ``RUST_CHECK`` names another
binary), which prints each decision as a JSON line. Against a server with the module and one
without it (the Lua script), random sequences of requests on one key alternate at random
between the two clients; each sequence uses both. Before each request the key's state and the
server's clock are read; the reply must be the one the core's algorithm gives for that state at
an instant of the call (it runs on the server's clock, so the reply's times may be a few
milliseconds shorter), and the state written must be that decision's. So each client continues
exactly where the other stopped.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path
from typing import Optional

import pytest

from redis_ratelimit import RedisStore, get_redis_client
from redis_ratelimit.core import FIXED, GCRA, SLIDING, Limit, decide, decode, encode
from redis_ratelimit.core import Store as StoreChange

from randomized import seed
from servers import ROOT

RUST_CHECK = Path(os.environ.get("RUST_CHECK") or ROOT / "target" / "release" / "examples" / "check")
PREFIX = "py-rust:"
SEQUENCES = int(os.environ.get("RATELIMIT_RUST_SEQUENCES") or 60)
COUNTS: dict[str, int] = {}

READ = """
local value = redis.call('GET', KEYS[1])
local t = redis.call('TIME')
local at = redis.pcall('PEXPIRETIME', KEYS[1])
if type(at) == 'table' then
  local ttl = redis.call('PTTL', KEYS[1])
  at = ttl < 0 and ttl or tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + ttl
end
return {value, at, tonumber(t[1]) * 1000000 + tonumber(t[2])}
"""


def _count(name: str) -> None:
    COUNTS[name] = COUNTS.get(name, 0) + 1


@pytest.fixture(scope="module")
def rust_check() -> Path:
    if not RUST_CHECK.exists():
        pytest.fail(f"{RUST_CHECK} is missing: build it with `cargo build --release -p ratelimit-client --example check`")
    return RUST_CHECK


def rust(binary: Path, url: str, key: str, limit: Limit, cost: int, check_only: bool, repeat: int = 1) -> list[dict]:
    """Decisions of the Rust client's example, one JSON object per request."""
    args = [str(binary), "--url", url, "--limit", str(limit.limit), "--period", f"{limit.period_ms}ms",
            "--algorithm", limit.algorithm, "--cost", str(cost), "--repeat", str(repeat), "--on-failure", "deny"]
    if limit.burst is not None:
        args += ["--burst", str(limit.burst)]
    if check_only:
        args.append("--check-only")
    done = subprocess.run(args + [key], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "RATELIMIT_PREFIX": PREFIX})
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def _python(store: RedisStore, key: str, limit: Limit, cost: int, check_only: bool) -> dict:
    d = store.check(key, limit.limit, f"{limit.period_ms}ms", algorithm=limit.algorithm, burst=limit.burst,
                    cost=cost, dry_run=check_only)
    return {"allowed": d.allowed, "limit": d.limit, "remaining": d.remaining, "reset_after_ms": d.reset_after_ms,
            "retry_after_ms": d.retry_after_ms, "backend": d.backend}


@pytest.mark.parametrize("server_name", ["module_server", "script_server"])
def test_python_and_rust_continue_each_other(request, server_name: str, rust_check: Path) -> None:
    """A readable case first: five requests per hour, alternating between the two clients."""
    server = request.getfixturevalue(server_name)
    store = RedisStore(get_redis_client(server.url), prefix=PREFIX)
    limit = Limit(FIXED, 5, 3_600_000)
    key = f"continue:{server_name}"
    store.reset(key)
    seen = []
    for client in ["rust", "rust", "python", "rust", "python", "rust", "python"]:
        reply = (rust(rust_check, server.url, key, limit, 1, False)[0] if client == "rust"
                 else _python(store, key, limit, 1, False))
        seen.append((client, reply["allowed"], reply["remaining"]))
    assert seen == [("rust", True, 4), ("rust", True, 3), ("python", True, 2), ("rust", True, 1),
                    ("python", True, 0), ("rust", False, 0), ("python", False, 0)]
    backend = "module" if server_name == "module_server" else "script"
    assert store.backend == backend
    assert rust(rust_check, server.url, key, limit, 0, True)[0]["backend"] == backend
    assert server.client().get(PREFIX + key) == b"5"


def _random_limit(rng: random.Random) -> Limit:
    # Periods of hours and days: a few milliseconds between the clock read and the call never
    # move a count across a unit, so the decision at either instant is the same but for times.
    algorithm = rng.choice([FIXED, SLIDING, GCRA])
    count = rng.choice([1, 2, 3, 5, 10, rng.randint(1, 20)])
    period_ms = rng.choice([3_600_000, 86_400_000, 7 * 86_400_000, rng.randint(3_600_000, 30 * 86_400_000)])
    burst = rng.choice([None, 1, 3, rng.randint(1, 20)]) if algorithm == GCRA else None
    return Limit(algorithm, count, period_ms, burst)


def _matches(reply: dict, candidates: list, slack_ms: int) -> Optional[int]:
    """The index of the candidate decision the reply is, allowing its times to be up to
    ``slack_ms`` apart (the call ran between the two clock reads)."""
    for i, outcome in enumerate(candidates):
        d = outcome.decision
        if (reply["allowed"], reply["limit"], reply["remaining"]) != (d.allowed, d.limit, d.remaining):
            continue
        if abs(reply["reset_after_ms"] - d.reset_after_ms) > slack_ms:
            continue
        if (reply["retry_after_ms"] < 0) != (d.retry_after_ms < 0) or abs(reply["retry_after_ms"] - d.retry_after_ms) > slack_ms:
            continue
        return i
    return None


@pytest.mark.parametrize("server_name", ["module_server", "script_server"])
def test_same_decisions_on_one_key(request, server_name: str, rust_check: Path) -> None:
    server = request.getfixturevalue(server_name)
    client = server.client()
    read = client.register_script(READ)
    store = RedisStore(get_redis_client(server.url), prefix=PREFIX)
    whole_ms = server.version() < (7, 2)
    backend = "module" if server_name == "module_server" else "script"
    run_seed = seed() + (20 if backend == "module" else 21)
    rng = random.Random(run_seed)
    for sequence in range(SEQUENCES):
        limit = _random_limit(rng)
        key = f"seq:{run_seed}:{sequence}"
        full_key = PREFIX + key
        steps = rng.randint(4, 10)
        # Both clients in every sequence, in a random order.
        clients = ["rust", "python"] + [rng.choice(["rust", "python"]) for _ in range(steps - 2)]
        rng.shuffle(clients)
        log = [f"seed {run_seed}, sequence {sequence}: {limit}"]
        for who in clients:
            cost = rng.choice([0, 1, 1, 1, 2, limit.capacity, limit.capacity + 1])
            check_only = rng.random() < 0.25
            value, at, before_us = read(keys=[full_key])
            state = None if value is None else decode(value, at if at >= 0 else None)
            reply = (rust(rust_check, server.url, key, limit, cost, check_only)[0] if who == "rust"
                     else _python(store, key, limit, cost, check_only))
            after_us = read(keys=[full_key])[2]
            instants = [before_us, after_us]
            if whole_ms:
                instants = [t - t % 1000 for t in instants]
            candidates = [decide(limit, state, t, cost) for t in instants]
            slack = (after_us - before_us) // 1000 + 2
            log.append(f"{who} cost {cost} check_only {check_only} -> {reply}; core {[c.decision for c in candidates]}")
            assert reply["backend"] == backend, "\n".join(log)
            index = _matches(reply, candidates, slack)
            assert index is not None, "\n".join(log)
            stored, stored_at, _ = read(keys=[full_key])
            change = candidates[index].change
            if isinstance(change, StoreChange) and not check_only:
                expected = encode(change.state)
                assert stored is not None and decode(stored, None).__class__ is change.state.__class__, "\n".join(log)
                if limit.algorithm != GCRA:
                    assert stored == expected, "\n".join(log + [f"stored {stored!r}, expected {expected!r}"])
                low, high = sorted(c.change.expire_at_ms for c in candidates if isinstance(c.change, StoreChange))
                assert low - 1 <= stored_at <= high + 1, "\n".join(log + [f"expiry {stored_at}, expected {low}..{high}"])
            else:
                assert stored == value and (stored_at == at or abs(stored_at - at) <= 1), "\n".join(log)
            _count(f"{who} requests ({backend})")
        _count(f"sequences ({backend})")
