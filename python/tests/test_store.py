"""The store's API against the three backends (a server with the module, one without it, and a
closed port, where the in-memory limiter answers), with the blocking and the asyncio store: the
same calls give the same answers everywhere, and each answer names who gave it."""

from __future__ import annotations

import time

import pytest

from redis_ratelimit import LimitError, Policy, RateLimitError

from conftest import pause

BACKEND_NAMES = {"module": "module", "script": "script", "memory": "local"}


def test_the_seed_check_counts_a_fixed_window(store, backend) -> None:
    before = time.time()
    answers = [store.check_rate_limit("1234567", "/search", 3, 60) for _ in range(4)]
    assert [(allowed, q["remaining"], q["used"], q["total"]) for allowed, q in answers] == [
        (True, 2, 1, 3), (True, 1, 2, 3), (True, 0, 3, 3), (False, 0, 3, 3)]
    reset_at = answers[0][1]["reset_at"]
    assert before + 59 <= reset_at <= time.time() + 61
    assert all(q["reset_at"] == reset_at for _, q in answers)
    assert set(answers[0][1]) == {"total", "remaining", "used", "reset_at"}
    assert store.check(store.key_for("1234567", "/search"), 3, 60).backend == BACKEND_NAMES[backend]


def test_check_only_and_get_quota_spend_nothing(store) -> None:
    assert store.get_quota("42", "/upload", 5, 10) == {**store.get_quota("42", "/upload", 5, 10), "remaining": 5, "used": 0}
    store.check_rate_limit("42", "/upload", 5, 10)
    allowed, quota = store.check_rate_limit("42", "/upload", 5, 10, check_only=True)
    assert allowed and quota["remaining"] == 4 and quota["used"] == 1
    assert store.get_quota("42", "/upload", 5, 10)["remaining"] == 4
    for _ in range(4):
        store.check_rate_limit("42", "/upload", 5, 10)
    allowed, quota = store.check_rate_limit("42", "/upload", 5, 10, check_only=True)
    assert (allowed, quota["remaining"], quota["used"]) == (False, 0, 5)


def test_counters_increment_with_an_expiry_set_once(store) -> None:
    assert store.get_with_expiry("hits") == (0, None)
    assert store.increment("hits", 10) == 1
    assert store.increment("hits", 20, amount=5) == 6
    value, ttl = store.get_with_expiry("hits")
    assert value == 6 and 9.0 < ttl <= 10.0, "the second increment did not extend the expiry"
    assert store.get("hits") == 6
    assert store.reset("hits") is True
    assert store.get("hits") == 0


def test_counters_are_exact_past_2_to_the_53(store) -> None:
    """The script returns the count as INCRBY stored it, not as a Lua double."""
    assert store.increment("big", 60, amount=2**53 + 1) == 2**53 + 1
    assert store.increment("big", 60, amount=2) == 2**53 + 3
    assert store.get("big") == 2**53 + 3
    assert store.increment("max", 60, amount=2**63 - 1) == 2**63 - 1


def test_reset_deletes_a_limiter(store) -> None:
    assert store.reset("nothing") is False
    for _ in range(2):
        store.check("k", 2, "1h")
    assert not store.check("k", 2, "1h")
    assert store.reset("k") is True
    assert store.check("k", 2, "1h").remaining == 1
    store.check_rate_limit("7", "/a", 1, 60)
    assert store.reset_rate_limit("7", "/a") is True


def test_clear_all_deletes_the_prefix_only(store, backend, url) -> None:
    import redis

    store.check("a", 1, 60)
    store.increment("b", 60)
    if backend == "memory":
        assert store.clear_all() is False, "Redis is unreachable"
        assert len(store.memory) == 0
        return
    outsider = redis.Redis.from_url(url)
    outsider.set("outside-the-prefix", 1)
    assert store.clear_all() is True
    assert outsider.scan(0, match=store.prefix + "*", count=1000)[1] == []
    assert outsider.get("outside-the-prefix") == b"1"


def test_algorithms_and_their_answers(store) -> None:
    # GCRA: 10 per 10 s with a burst of 3; 3 at once, then one every second.
    answers = [store.check("g", 10, "10s", algorithm="GCRA", burst=3) for _ in range(4)]
    assert [(d.allowed, d.limit, d.remaining) for d in answers] == [(True, 3, 2), (True, 3, 1), (True, 3, 0), (False, 3, 0)]
    assert 0 < answers[3].retry_after_ms <= 1000 and answers[3].retry_after == answers[3].retry_after_ms / 1000
    # A cost above the capacity never fits.
    never = store.check("g", 10, "10s", algorithm="gcra", burst=3, cost=4)
    assert (never.allowed, never.retry_after_ms, never.retry_after, never.never) == (False, -1, None, True)
    # SLIDING counts the current window.
    sliding = [store.check("s", 2, "1h", algorithm="SLIDING") for _ in range(3)]
    assert [d.allowed for d in sliding] == [True, True, False]
    assert bool(sliding[0]) and not sliding[2]
    # A dry run spends nothing.
    assert store.check("f", 1, "1h", dry_run=True).remaining == 0
    assert store.check("f", 1, "1h").allowed


def test_quota_is_the_standing_now(store) -> None:
    fresh = store.quota("q", 10, "1h", algorithm="SLIDING")
    assert (fresh.allowed, fresh.remaining, fresh.reset_after_ms) == (True, 10, 0)
    store.check("q", 10, "1h", algorithm="SLIDING", cost=4)
    standing = store.quota("q", 10, "1h", algorithm="SLIDING", cost=7)
    assert (standing.allowed, standing.remaining) == (False, 6)
    assert standing.retry_after_ms > 0


def test_check_all_is_all_or_nothing(store) -> None:
    policies = [Policy("{u1}:rps", 10, "1s"), Policy("{u1}:tpm", 1000, "1m", algorithm="GCRA", cost=600)]
    first = store.check_all(policies)
    assert first.allowed and [d.remaining for d in first] == [9, 400]
    second = store.check_all(policies)
    assert not second.allowed and second.retry_after_ms > 0
    assert [d.allowed for d in second] == [True, False]
    assert [d.remaining for d in second] == [8, 400], "as a dry run: nothing was spent"
    assert store.quota("{u1}:rps", 10, "1s").remaining == 9, "the denied request spent nothing on rps"
    cheap = store.check_all([Policy("{u1}:rps", 10, "1s"), Policy("{u1}:tpm", 1000, "1m", algorithm="GCRA", cost=100)])
    assert cheap.allowed and [d.remaining for d in cheap.decisions] == [8, 300]
    with pytest.raises(ValueError):
        store.check_all([Policy("same", 1, 1), Policy("same", 2, 2)])


def test_a_reservation_settles_to_its_window(store) -> None:
    with store.reserve("tokens", 1000, "1h", estimate=300, algorithm="SLIDING") as reservation:
        assert reservation.allowed and reservation.decision.remaining == 700
        assert reservation.decision.window is not None
        settlement = reservation.settle(120)
    assert (settlement.refunded, settlement.charged, settlement.decision.remaining) == (180, 0, 880)
    with pytest.raises(RuntimeError):
        reservation.settle(1)

    with store.reserve("tokens", 1000, "1h", estimate=100, algorithm="SLIDING") as reservation:
        settlement = reservation.settle(1000)
    assert (settlement.refunded, settlement.charged) == (0, 900)
    assert settlement.decision.remaining == 0 and not settlement.decision.allowed, "in debt: 120 + 1000 > 1000"

    # Leaving the block without settling gives it all back.
    with store.reserve("fixed", 10, "1h", estimate=4) as reservation:
        assert store.quota("fixed", 10, "1h").remaining == 6
    assert reservation.settled and reservation.settlement.refunded == 4
    assert store.quota("fixed", 10, "1h").remaining == 10

    # A denied reservation spent nothing; settling it charges what was used.
    denied = store.reserve("fixed", 10, "1h", estimate=11)
    assert not denied and denied.reserved == 0 and denied.decision.never
    assert denied.settle(2).charged == 2
    assert store.quota("fixed", 10, "1h").remaining == 8


def test_gcra_reservations_refund_intervals(store) -> None:
    reservation = store.reserve("g", 100, "1m", estimate=50, algorithm="GCRA")
    assert reservation.decision.remaining == 50 and reservation.decision.window == 0
    assert reservation.settle(10).refunded == 40
    assert store.quota("g", 100, "1m", algorithm="GCRA").remaining in (89, 90)


def test_permits_hold_slots_until_released(store) -> None:
    with store.acquire("reports", 2, "10s") as first:
        assert first.allowed and first.id and first.expires_at > time.time() + 9
        second = store.acquire("reports", 2, "10s", id="job-2")
        assert second and second.id == "job-2" and second.decision.remaining == 0
        third = store.acquire("reports", 2, "10s")
        assert not third and third.id is None and 0 < third.decision.retry_after_ms <= 10_000
        assert third.release() is False
        expires = second.expires_at
        time.sleep(0.01)
        assert second.renew() and second.expires_at > expires
        again = store.acquire("reports", 2, "10s", id="job-2")
        assert again and again.decision.remaining == 0, "an acquire with a live ID renews it"
        assert second.release() is True and second.release() is False
    assert first.released
    assert store.acquire("reports", 2, "10s").decision.remaining == 1
    assert store.release("reports", "unknown") is False


def test_a_kept_alive_permit_outlives_its_lease(store) -> None:
    permit = store.acquire("long-job", 1, "600ms", keep_alive=True)
    assert permit
    pause(store, 1.3)
    assert not store.acquire("long-job", 1, "600ms"), "the lease was renewed in the background"
    assert permit.release() is True
    assert store.acquire("long-job", 1, "600ms")


def test_a_kept_alive_permit_nobody_holds_lets_its_lease_expire(store) -> None:
    import gc

    assert store.acquire("dropped-job", 1, "300ms", keep_alive=True)
    gc.collect()
    pause(store, 0.9)
    assert store.acquire("dropped-job", 1, "300ms"), "the renewals stopped with the permit"


def test_invalid_arguments_raise_before_any_call(store) -> None:
    for call in [
        lambda: store.check("k", 0, 60),
        lambda: store.check("k", 10, "5x"),
        lambda: store.check("k", 10, 0.0001),
        lambda: store.check("k", 10, 60, burst=3),
        lambda: store.check("k", 10, 60, algorithm="LEAKY"),
        lambda: store.check("k", 10, 60, cost=-1),
        lambda: store.check_rate_limit("u", "/e", 10**16, 60),
        lambda: store.increment("c", 0),
        lambda: store.acquire("l", 0, 10),
        lambda: store.acquire("l", 1, 10, id="x" * 129),
        lambda: store.release("l", ""),
        lambda: store.check("\udcff", 10, 60),
        lambda: store.check(b"k", 10, 60),
        lambda: store.release("l", "x" * 129),
        lambda: store.reserve("r", 10, 60, estimate=-5),
    ]:
        with pytest.raises(ValueError):
            call()
    assert issubclass(LimitError, ValueError)


def test_periods_take_every_spelling(store) -> None:
    from datetime import timedelta

    for period in [90, 90.0, timedelta(seconds=90), "90s", "90000ms", "1500ms" if False else "90S"]:
        decision = store.check(f"p:{period!r}", 1, period)
        assert 89_000 <= decision.reset_after_ms <= 90_000


@pytest.mark.parametrize("server_name", ["module_server", "script_server"])
def test_a_burst_past_the_pool_size_waits_for_connections(server_name, request) -> None:
    """300 calls at once on a client of 100 connections: the extra calls wait for a connection
    (a blocking pool) instead of failing as an outage, so Redis answers every one and admits
    exactly the limit; with redis-py's default pool 200 of them were answered by the failure
    policy, and the in-memory limiter admitted 100 more."""
    import asyncio
    import uuid

    import redis_ratelimit.asyncio as aio

    url = request.getfixturevalue(server_name).url

    async def burst():
        store = aio.RedisStore(aio.get_redis_client(url), prefix=f"t-{uuid.uuid4().hex[:8]}:")
        try:
            return await asyncio.gather(*(store.check("burst", 100, "1m") for _ in range(300)))
        finally:
            await store.redis_client.aclose()

    decisions = asyncio.run(burst())
    assert sum(d.allowed for d in decisions) == 100
    assert {d.backend for d in decisions} == {"module" if server_name == "module_server" else "script"}


def test_an_async_store_answers_from_one_event_loop_after_another(module_server) -> None:
    """A store made once and used from successive event loops (two test clients in a row): the
    connections of the first loop, closed with it, are dropped and Redis answers on the second;
    it once raised 'Event loop is closed'."""
    import asyncio
    import uuid

    import redis_ratelimit.asyncio as aio

    store = aio.RedisStore(aio.get_redis_client(module_server.url), prefix=f"t-{uuid.uuid4().hex[:8]}:")
    for _ in range(3):
        decision = asyncio.run(store.check("loops", 10, "1m"))
        assert (decision.allowed, decision.backend) == (True, "module")
    assert asyncio.run(store.check("loops", 10, "1m")).remaining == 6


def test_keys_of_another_kind_are_answered_alike_on_every_backend(store) -> None:
    """A GCRA key read as a counter raises RateLimitError, and checked as FIXED is admitted
    (fail open, as for any error Redis answers for a key); RESET leaves a lease key alone. The
    in-memory limiter used to raise its own error, deny, and delete the leases."""
    assert store.check("g", 5, "1m", algorithm="GCRA")
    with pytest.raises(RateLimitError):
        store.get("g")
    decision = store.check("g", 5, "1m")
    assert (decision.allowed, decision.backend) == (True, "allow")
    assert store.acquire("l", 1, "1m")
    assert store.reset("l") is False
    assert not store.acquire("l", 1, "1m"), "the lease is still held"
