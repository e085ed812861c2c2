"""Masking, the breaker, errors, periods and the in-memory limiter's bounds, without a server (the
masking and breaker cases are the Rust client's)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis

from redis_ratelimit import Breaker, BreakerConfig, BreakerState, MemoryLimiter, RateLimitError, mask_id, mask_key, mask_url, period_ms
from redis_ratelimit.core import FIXED, GCRA, Limit, LimitError


def test_ids_show_at_most_two_characters_and_a_third() -> None:
    assert [mask_id(i) for i in ("1234567", "user-1234567890", "12345", "42", "", "éèêëēė")] == [
        "12****", "us****", "1****", "****", "****", "éè****"]


def test_keys_keep_the_prefix() -> None:
    assert mask_key("ratelimit:", "ratelimit:1234567:/search") == "ratelimit:12****"
    assert mask_key("ratelimit:", "other:1234567") == "ot****"
    assert mask_key("", "1234567") == "12****"


def test_urls_lose_their_credentials() -> None:
    cases = [
        ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
        ("redis://:s3cret@host:6379/0", "redis://:****@host:6379/0"),
        ("rediss://alice:s3cret@host", "rediss://alice:****@host"),
        ("redis://s3cret@host/", "redis://****@host/"),
        ("redis://a:b@c@host/1", "redis://a:****@host/1"),
        ("redis://host/0?protocol=resp3&password=s3cret", "redis://host/0?protocol=resp3&password=****"),
        ("redis://host/0#frag", "redis://host/0"),
        ("redis://:pa/ss?w#rd@host:1/2", "redis://:****@host:1/2"),
        ("s3cret", "****"),
    ]
    for url, masked in cases:
        assert mask_url(url) == masked, url


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_opens_probes_and_backs_off() -> None:
    clock = Clock()
    breaker = Breaker(BreakerConfig(failure_threshold=2, base_backoff=1.0, max_backoff=3.0), clock=clock)
    assert breaker.allow() and breaker.state is BreakerState.CLOSED
    breaker.on_failure()
    assert breaker.state is BreakerState.CLOSED, "one failure of two"
    breaker.on_failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    assert 0.5 <= breaker.retry_in() <= 1.0
    clock.now += 1.0
    assert breaker.allow() and breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow(), "one probe at a time"
    breaker.on_failure()
    assert breaker.state is BreakerState.OPEN and 1.0 <= breaker.retry_in() <= 2.0, "twice as long"
    clock.now += 2.0
    assert breaker.allow()
    clock.now += 2.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow(), "a probe that never reports does not wedge the breaker: another after the backoff (3 s)"
    breaker.on_success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()


def test_errors_are_classified_by_properties() -> None:
    wrongtype = RateLimitError.from_redis(redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"))
    assert (wrongtype.code, wrongtype.is_wrong_type, wrongtype.is_outage) == ("WRONGTYPE", True, False)
    other = RateLimitError.from_redis(redis.ResponseError("the key holds a FIXED limiter, not GCRA"))
    assert (other.code, other.is_wrong_algorithm, str(other)) == ("ERR", True, "ERR the key holds a FIXED limiter, not GCRA")
    unknown = RateLimitError.from_redis(redis.ResponseError("unknown command 'RATELIMIT.CHECK', with args beginning with: 'secret-key' "))
    assert unknown.is_unknown_command and unknown.redacted("k", "m") == "ERR unknown command"
    refused = RateLimitError.from_redis(redis.ConnectionError("Error 111 connecting"))
    assert refused.is_unreachable and refused.is_outage and refused.code is None
    assert RateLimitError.from_redis(redis.TimeoutError("Timeout reading")).is_timeout
    assert RateLimitError.from_redis(redis.exceptions.BusyLoadingError("Redis is loading")).is_unavailable
    assert RateLimitError.from_redis(redis.exceptions.ReadOnlyError("You can't write against a read only replica.")).is_outage


def test_periods() -> None:
    assert [period_ms(p) for p in (60, 1.5, "1500ms", "10S", "5m", "2h", "1d", "60", timedelta(milliseconds=7))] == [
        60_000, 1500, 1500, 10_000, 300_000, 7_200_000, 86_400_000, 60_000, 7]
    assert [period_ms(p) for p in (0.001, 315_360_000.0, 0.1 + 0.2)] == [1, 315_360_000_000, 300]
    for bad in (0, -1, "0ms", "5x", "1.5s", "", 0.0005, timedelta(microseconds=1500), True, None, "3651d",
                1_000_000.0009, 100_000.0004):
        with pytest.raises(LimitError):
            period_ms(bad)


def test_limits_are_valid_by_construction() -> None:
    assert Limit(GCRA, 10, 1000).capacity == 10 and Limit("gcra", 10, 1000, 3).capacity == 3
    for args in [(FIXED, 0, 1), (FIXED, 10**15 + 1, 1), (FIXED, 1, 0), (FIXED, 1, 3650 * 86_400_000 + 1),
                 (FIXED, 1, 1, 5), (GCRA, 1, 1, 0), ("LEAKY", 1, 1), (FIXED, True, 1)]:
        with pytest.raises(LimitError):
            Limit(*args)


def test_the_memory_limiter_is_bounded() -> None:
    memory = MemoryLimiter(max_entries=3)
    limit = Limit(FIXED, 1, 1000)
    for i in range(5):
        assert memory.check(f"k{i}", limit, 1, now_us=1_000_000).decision.allowed
    assert len(memory) == 3, "the oldest were evicted"
    assert memory.check("k0", limit, 1, now_us=1_000_000).decision.allowed, "k0 was forgotten"
    # Expired entries go first, as new keys come in.
    memory.check("new", limit, 1, now_us=5_000_000)
    assert len(memory) <= 3
    assert memory.quota("k4", limit, now_us=5_000_000).remaining == 1, "expired: absent"


def test_a_denied_mcheck_repairs_every_key_without_expiry() -> None:
    from redis_ratelimit.core import DELETE, KEEP, Expire, Policy, decide_all, decode

    now_us = 5 * 315_360_000_000_000 + 123_456
    full, roomy = Limit(FIXED, 2, 60_000), Limit(FIXED, 5, 60_000)
    gcra = Limit(GCRA, 5, 60_000)
    policies = [
        Policy(full, decode(b"5", None), 1),
        Policy(roomy, decode(b"1", None), 1),
        Policy(gcra, decode(b"-1", None), 1),
        Policy(roomy, decode(b"1", now_us // 1000 + 1_000), 1),
    ]
    outcome = decide_all(policies, now_us)
    assert not outcome.allowed
    window_end = now_us // 1000 + 60_000
    assert [o.change for o in outcome.outcomes] == [Expire(window_end), Expire(window_end), DELETE, KEEP]
    assert [o.decision.allowed for o in outcome.outcomes] == [False, True, True, True]


def test_an_admitted_request_keeps_the_held_sliding_counts_in_full() -> None:
    from redis_ratelimit.core import SLIDING, apply, decide, encode, quota

    start = 5 * 315_360_000_000_000
    minute, ten_seconds = Limit(SLIDING, 10, 60_000), Limit(SLIDING, 10, 10_000)
    state = None
    for at_us, cost in [(30_000_000, 4), (90_000_000, 5)]:
        outcome = decide(minute, state, start + at_us, cost)
        assert outcome.decision.allowed
        state = apply(outcome.change, state)
    now = start + 98_500_000
    assert quota(ten_seconds, state, now, 1).remaining == 1
    outcome = decide(ten_seconds, state, now, 1)
    assert (outcome.decision.allowed, outcome.decision.remaining) == (True, 0)
    state = apply(outcome.change, state)
    window = now // 10_000_000
    assert encode(state) == f"s:{window}:0:10".encode()
    assert not decide(ten_seconds, state, now + 100_000, 1).decision.allowed
