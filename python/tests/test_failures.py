"""Outages, the failure policies and the breaker, errors for a key, backends, and the logs."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
import redis

import redis_ratelimit.asyncio as aio
from redis_ratelimit import BreakerConfig, BreakerState, RateLimitError, RedisStore, get_redis_client
from redis_ratelimit.decision import SCRIPT

from servers import MODULE, Server


def test_the_failure_policies(closed_url) -> None:
    local = RedisStore(get_redis_client(closed_url))
    assert [local.check("k", 2, 60).remaining for _ in range(3)] == [1, 0, 0]
    assert local.check("k", 2, 60).backend == "local"
    assert local.breaker_state is BreakerState.OPEN and local.backend is None

    allow = RedisStore(get_redis_client(closed_url), on_failure="allow")
    decision = allow.check("k", 2, 60, algorithm="GCRA", burst=5)
    assert (decision.allowed, decision.limit, decision.remaining, decision.backend) == (True, 5, 5, "allow")

    deny = RedisStore(get_redis_client(closed_url), on_failure="deny", breaker=BreakerConfig(base_backoff=2.0, max_backoff=4.0))
    decision = deny.check("k", 2, 60)
    assert (decision.allowed, decision.backend) == (False, "deny")
    assert 1000 <= decision.retry_after_ms <= 2000, "retry when the breaker next lets a probe through"

    with pytest.raises(ValueError):
        RedisStore(get_redis_client(closed_url), on_failure="maybe")


def test_the_breaker_keeps_calls_away_from_a_dead_redis(closed_url) -> None:
    store = RedisStore(get_redis_client(closed_url), breaker=BreakerConfig(base_backoff=30.0))
    calls = []
    execute = store.redis_client.execute_command
    store.redis_client.execute_command = lambda *args, **options: calls.append(args) or execute(*args, **options)
    store.check("k", 1, 60)
    assert store.breaker_state is BreakerState.OPEN and len(calls) == 1
    for _ in range(1000):
        store.check("k", 1, 60)
    assert len(calls) == 1, "answered from memory without trying Redis"
    with pytest.raises(RateLimitError) as raised:
        store.ping()
    assert raised.value.is_circuit_open and raised.value.is_unreachable and raised.value.is_outage


def test_counters_fail_outside_the_local_policy(closed_url) -> None:
    with pytest.raises(RateLimitError) as raised:
        RedisStore(get_redis_client(closed_url), on_failure="deny").increment("c", 10)
    assert raised.value.is_unreachable
    assert RedisStore(get_redis_client(closed_url)).increment("c", 10) == 1


def test_a_store_without_redis_limits_in_memory(caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="redis_ratelimit")
    store = RedisStore(None)
    assert [store.check_rate_limit("u", "/e", 1, 60)[0] for _ in range(2)] == [True, False]
    assert store.check("k", 1, 60).backend == "local"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "no Redis is not an outage to warn about"
    with pytest.raises(TypeError):
        RedisStore(aio.get_redis_client("redis://127.0.0.1:1"))
    with pytest.raises(TypeError):
        aio.RedisStore(get_redis_client("redis://127.0.0.1:1"))


def test_an_outage_falls_back_and_recovers() -> None:
    server = Server(MODULE)
    port = server.port
    store = RedisStore(get_redis_client(server.url), breaker=BreakerConfig(base_backoff=0.05, max_backoff=0.1))
    try:
        assert store.check("k", 5, "1h").backend == "module"
        server.stop()
        during = store.check("k", 5, "1h")
        assert (during.backend, during.remaining) == ("local", 4), "memory counts on its own"
        assert store.backend is None
        server = Server(MODULE, port=port)
        deadline = time.monotonic() + 5
        while store.check("k", 5, "1h").backend != "module":
            assert time.monotonic() < deadline, "the store never came back to Redis"
            time.sleep(0.05)
        assert store.breaker_state is BreakerState.CLOSED and store.backend == "module"
    finally:
        server.stop()


def test_errors_for_a_key_fail_open(module_server, script_server, caplog) -> None:
    caplog.set_level(logging.ERROR, logger="redis_ratelimit")
    for server in (module_server, script_server):
        client = server.client()
        store = RedisStore(get_redis_client(server.url), prefix="err:")
        client.delete("err:1234567:/list")
        client.rpush("err:1234567:/list", "x")
        allowed, quota = store.check_rate_limit("1234567", "/list", 1, 60)
        assert allowed and quota["remaining"] == 1
        assert store.check("1234567:/list", 1, 60).backend == "allow"
        deny = RedisStore(get_redis_client(server.url), prefix="err:", on_failure="deny")
        assert deny.check("1234567:/list", 1, 60).backend == "deny"
        assert store.reset("1234567:/list") is False
        assert client.type("err:1234567:/list") == b"list", "never deleted"
        client.set("err:gcra", "7")
        assert store.check("gcra", 1, 60, algorithm="GCRA").backend == "allow"
        client.set("err:bad", "007")
        assert store.check("bad", 1, 60).backend == "allow"
        with pytest.raises(RateLimitError) as raised:
            store.get("1234567:/list")
        assert raised.value.is_wrong_type and not raised.value.is_outage
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert "Redis cannot limit this key" in messages
    assert "1234567" not in messages and "err:12****" in messages


def test_the_script_is_sent_whole_after_a_flush(script_server) -> None:
    """A server that lost the script gets it with the command that met NOSCRIPT (EVAL, sent where
    the key lives), not through SCRIPT LOAD, which a cluster client sends to the nodes it knows of."""
    store = RedisStore(get_redis_client(script_server.url), prefix="flush:")
    assert store.check("k", 3, 60).backend == "script"
    client = script_server.client()
    client.script_flush()
    client.config_resetstat()
    assert store.check("k", 3, 60).remaining == 1
    stats = client.info("commandstats")
    assert stats.get("cmdstat_eval", {}).get("calls") == 1
    assert "cmdstat_script|load" not in stats and "cmdstat_script" not in stats
    assert store.check("k", 3, 60).remaining == 0
    assert client.info("commandstats")["cmdstat_eval"]["calls"] == 1, "cached by EVAL"

    async def on_asyncio() -> int:
        store = aio.RedisStore(aio.get_redis_client(script_server.url), prefix="flush:")
        client.script_flush()
        return (await store.check("a", 3, 60)).remaining

    assert asyncio.run(on_asyncio()) == 2
    assert client.info("commandstats")["cmdstat_eval"]["calls"] == 2


def test_module_and_script_share_storage(module_server) -> None:
    """On one server, a key written through the module continues under the script and back."""
    module = RedisStore(get_redis_client(module_server.url), prefix="share:")
    script = RedisStore(get_redis_client(module_server.url), prefix="share:", redetect_interval=3600)
    # Forced onto the script, as on a server without the module.
    script._engine._set_backend(SCRIPT)
    for algorithm in ("FIXED", "SLIDING", "GCRA"):
        answers = [store.check(algorithm, 4, "1h", algorithm=algorithm).remaining for store in (module, script, module, script)]
        assert answers == [3, 2, 1, 0]
        assert not script.check(algorithm, 4, "1h", algorithm=algorithm) and not module.check(algorithm, 4, "1h", algorithm=algorithm)
    assert {module.check("FIXED", 4, "1h").backend, script.check("FIXED", 4, "1h").backend} == {"module", "script"}


def test_logs_never_show_a_password_or_a_user_id(caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="redis_ratelimit")
    server = Server(password="s3cret-pass")
    try:
        wrong = RedisStore(get_redis_client(f"redis://:wrong-pass@127.0.0.1:{server.port}/0"))
        assert wrong.check_rate_limit("user-1234567890", "/search", 1, 60)[1]["remaining"] == 0
        right = RedisStore(get_redis_client(server.url))
        assert right.check_rate_limit("user-1234567890", "/search", 1, 60)[0]
        assert right.backend == "script"
    finally:
        server.stop()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "Redis is unreachable" in text and "redis://:****@127.0.0.1" in text
    for secret in ("s3cret-pass", "wrong-pass", "1234567890"):
        assert secret not in text
    assert "user=us****" in text


def test_an_invalid_url_is_logged_masked(caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="redis_ratelimit")
    assert get_redis_client("http://:hidden@host/0") is None
    assert get_redis_client("") is None
    assert "hidden" not in "\n".join(r.getMessage() for r in caplog.records)


def test_from_env(monkeypatch, script_server) -> None:
    monkeypatch.setenv("REDIS_URL", script_server.url)
    monkeypatch.setenv("RATELIMIT_PREFIX", "env:")
    monkeypatch.setenv("RATELIMIT_ON_FAILURE", "deny")
    store = RedisStore.from_env()
    assert (store.prefix, store.on_failure) == ("env:", "deny")
    assert store.check("k", 1, 60).backend == "script"
    assert aio.RedisStore.from_env().prefix == "env:"
    monkeypatch.setenv("RATELIMIT_RESPONSE_TIMEOUT_MS", "soon")
    with pytest.raises(ValueError):
        RedisStore.from_env()
    monkeypatch.delenv("RATELIMIT_RESPONSE_TIMEOUT_MS")
    monkeypatch.delenv("REDIS_URL")
    assert RedisStore.from_env().redis_client is None


def test_redetect_reports_the_backend(module_server, script_server, closed_url) -> None:
    assert RedisStore(get_redis_client(module_server.url)).redetect() == "module"
    assert RedisStore(get_redis_client(script_server.url)).redetect() == "script"
    with pytest.raises(RateLimitError) as raised:
        RedisStore(get_redis_client(closed_url)).redetect()
    assert raised.value.is_unreachable and isinstance(raised.value.__cause__, redis.ConnectionError)
