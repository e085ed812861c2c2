"""The Lua script called directly, with its test clock, for the comparisons with the Python port.

The script's ARGV after the command word is positional (see each part's header in
``client/lua/``); for tests, the clock in microseconds follows the last argument, then ``1`` to
force the script's bignum path.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import redis

from redis_ratelimit import SCRIPT_SOURCE
from redis_ratelimit.core import GCRA, Limit

# The key's value and absolute expiry: PEXPIRETIME where the server has it (exact), else
# TIME + PTTL (Redis 6.2: within a few ms), and which of the two it is.
READ_KEY = """
local value = redis.call('GET', KEYS[1])
local at = redis.pcall('PEXPIRETIME', KEYS[1])
if type(at) ~= 'table' then return {value, at, 1} end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then return {value, ttl, 0} end
local t = redis.call('TIME')
return {value, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + ttl, 0}
"""

READ_LEASES = """
local members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local at = redis.pcall('PEXPIRETIME', KEYS[1])
if type(at) ~= 'table' then return {members, at, 1} end
local ttl = redis.call('PTTL', KEYS[1])
local t = redis.call('TIME')
return {members, ttl < 0 and ttl or tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + ttl, 0}
"""


def policy_args(limit: Limit) -> list[Any]:
    """A policy's four script arguments: algorithm, limit, period in ms, burst (0 for the limit)."""
    burst = limit.burst if limit.algorithm == GCRA and limit.burst is not None else 0
    return [limit.algorithm, limit.limit, limit.period_ms, burst]


class ScriptCaller:
    """Runs the script and reads the keys back, in one round trip."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.sha = client.script_load(SCRIPT_SOURCE)
        self.read_sha = client.script_load(READ_KEY)
        self.leases_sha = client.script_load(READ_LEASES)

    def run(self, keys: Sequence[str], argv: Sequence[Any], read: Sequence[str] = ()) -> tuple[Any, list[tuple]]:
        """The script's reply (or the error it raised) and, for each key of ``read``, its value,
        expiry in ms (-1 without, -2 absent) and whether that expiry is exact."""
        pipe = self.client.pipeline(transaction=False)
        pipe.evalsha(self.sha, len(keys), *keys, *argv)
        for key in read:
            pipe.evalsha(self.read_sha, 1, key)
        results = pipe.execute(raise_on_error=False)
        reply, reads = results[0], results[1:]
        for state in reads:
            if isinstance(state, Exception):
                raise state
        return reply, [(value, at, exact == 1) for value, at, exact in reads]

    def check(self, key: str, limit: Limit, cost: int, flags: int, now_us: int, exact: bool, command: str = "check"):
        return self.run([key], [command, *policy_args(limit), cost, flags, now_us, int(exact)], [key])

    def refund(self, key: str, limit: Limit, amount: int, window: Optional[int], now_us: int, exact: bool):
        argv = ["refund", *policy_args(limit), amount, "" if window is None else window, now_us, int(exact)]
        return self.run([key], argv, [key])

    def reset(self, key: str):
        return self.run([key], ["reset"], [key])

    def mcheck(self, keys: Sequence[str], limits: Sequence[Limit], costs: Sequence[int], flags: int, now_us: int, exact: bool):
        argv: list[Any] = ["mcheck", flags]
        for limit, cost in zip(limits, costs):
            argv += [*policy_args(limit), cost]
        return self.run(keys, [*argv, now_us, int(exact)], keys)

    def acquire(self, key: str, limit: int, lease_ms: int, lease_id: Optional[str], now_us: int):
        return self.run([key], ["acquire", limit, lease_ms, lease_id or "", now_us])

    def release(self, key: str, lease_id: str, now_us: int):
        return self.run([key], ["release", lease_id, now_us])

    def server_now_us(self) -> int:
        seconds, micros = self.client.time()
        return seconds * 1_000_000 + micros

    def leases(self, key: str) -> tuple[list[tuple[str, int]], int, bool]:
        """The lease set's members and scores (whole ms), the key's expiry (-2 when absent), and
        whether that expiry is exact (PEXPIRETIME; Redis 6.2 has only TIME + PTTL)."""
        members, at, exact = self.client.evalsha(self.leases_sha, 1, key)
        pairs = [(members[i].decode(), int(float(members[i + 1]))) for i in range(0, len(members), 2)]
        return pairs, at, exact == 1
