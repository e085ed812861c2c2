"""The ASGI middleware in a Starlette app, through Starlette's TestClient: 200 then 429 with the
exact headers and body of the Rust tower layer, on the module, the script and memory, with the
asyncio and the blocking store."""

from __future__ import annotations

import json
import re
import types
import uuid
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import redis_ratelimit
import redis_ratelimit.asgi
import redis_ratelimit.asyncio as aio
from redis_ratelimit import Policy
from redis_ratelimit.asgi import ClientIp, Header, RateLimitMiddleware, parse_entry

# The middleware's clock, frozen mid-second so that X-RateLimit-Reset does not depend on how
# many milliseconds the requests take.
NOW = 1_000_000_000.5
RATE_HEADERS = ("retry-after", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "ratelimit-policy", "ratelimit")


def rate_headers(response) -> list:
    return [(name, value) for name, value in response.headers.items() if name in RATE_HEADERS]


async def ok(request):
    return PlainTextResponse("ok", headers={"x-app": "1"})


@pytest.fixture
def frozen(monkeypatch) -> None:
    monkeypatch.setattr(redis_ratelimit.asgi, "time", types.SimpleNamespace(time=lambda: NOW))


@pytest.fixture(params=["async", "sync"])
def app_store(request, url):
    prefix = f"asgi-{uuid.uuid4().hex[:6]}:"
    if request.param == "sync":
        yield redis_ratelimit.RedisStore(redis_ratelimit.get_redis_client(url), prefix=prefix)
    else:
        yield aio.RedisStore(aio.get_redis_client(url), prefix=prefix)


def make_app(store, **options) -> Starlette:
    app = Starlette(routes=[Route(path, ok) for path in ("/search", "/upload", "/health", "/other")])
    options.setdefault("key", Header("x-api-key") | ClientIp())
    options.setdefault("routes", {
        "/search": [Policy("search", 2, "10s")],
        "/upload": [Policy("upload", 2, "1m", algorithm="GCRA"), Policy("upload-hourly", 3, "1h")],
        "/health": [],
    })
    app.add_middleware(RateLimitMiddleware, store=store, **options)
    return app


def test_200_then_429_with_exact_headers(frozen, app_store, backend, url) -> None:
    with TestClient(make_app(app_store)) as client:
        responses = [client.get("/search", headers={"x-api-key": "abc"}) for _ in range(3)]
    first, second, denied = responses
    assert (first.status_code, first.text, first.headers["x-app"]) == (200, "ok", "1")
    assert rate_headers(first) == [
        ("x-ratelimit-limit", "2"),
        ("x-ratelimit-remaining", "1"),
        ("x-ratelimit-reset", "1000000011"),
        ("ratelimit-policy", '"search";q=2;w=10'),
        ("ratelimit", '"search";r=1;t=10'),
    ]
    assert rate_headers(second)[1] == ("x-ratelimit-remaining", "0")
    assert denied.status_code == 429
    assert rate_headers(denied) == [
        ("retry-after", "10"),
        ("x-ratelimit-limit", "2"),
        ("x-ratelimit-remaining", "0"),
        ("x-ratelimit-reset", "1000000011"),
        ("ratelimit-policy", '"search";q=2;w=10'),
        ("ratelimit", '"search";r=0;t=10'),
    ]
    assert denied.headers["content-type"] == "application/problem+json"
    assert set(denied.headers) == {*RATE_HEADERS, "content-type", "content-length"}
    assert denied.content == (
        b'{"type":"https://iana.org/assignments/http-problem-types#quota-exceeded","title":"Quota Exceeded",'
        b'"status":429,"detail":"The quota of policy \\"search\\" is exceeded: retry in 10 s.",'
        b'"violated-policies":["search"]}'
    )
    if backend != "memory":
        import redis

        assert redis.Redis.from_url(url).get(app_store.prefix + "search:x-api-key:abc") == b"2"


def test_several_policies_spend_together_or_not_at_all(frozen, app_store, backend, url) -> None:
    with TestClient(make_app(app_store), client=("203.0.113.7", 4711)) as client:
        responses = [client.get("/upload") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert rate_headers(responses[0])[-2:] == [
        ("ratelimit-policy", '"upload";q=2;w=60, "upload-hourly";q=3;w=3600'),
        ("ratelimit", '"upload";r=1;t=30, "upload-hourly";r=2;t=3600'),
    ]
    denied = dict(rate_headers(responses[2]))
    assert (denied["retry-after"], denied["ratelimit"], denied["x-ratelimit-limit"]) == ("30", '"upload";r=0;t=30', "2")
    assert json.loads(responses[2].content)["violated-policies"] == ["upload"]
    hourly = app_store.prefix + "upload-hourly:ip:203.0.113.7"
    if backend == "memory":
        spent = app_store.memory._entries[hourly].state.count
    else:
        import redis

        spent = int(redis.Redis.from_url(url).get(hourly))
    assert spent == 2, "the denied request spent nothing on the hourly policy"


def test_unlimited_routes_and_missing_subjects(frozen, app_store) -> None:
    with TestClient(make_app(app_store)) as client:
        health = client.get("/health")
        other = client.get("/other")
        # The test client's address is "testclient", no IP: no subject.
        nobody = client.get("/search")
    assert health.status_code == other.status_code == 200
    assert rate_headers(health) == rate_headers(other) == []
    assert nobody.status_code == 400 and nobody.headers["content-type"] == "application/problem+json"
    assert nobody.json()["detail"] == "The request does not say who sends it, so it cannot be rate limited."


def test_a_default_route_limits_the_rest(frozen, app_store) -> None:
    app = make_app(app_store, routes={"/health": []}, default=[Policy("default", 1, 60)])
    with TestClient(app, client=("2001:db8:1:2::77", 1)) as client:
        assert client.get("/other").status_code == 200
        assert client.get("/search").status_code == 429, "one default policy for every route"
        assert client.get("/health").status_code == 200


def test_key_extractors() -> None:
    scope = {"type": "http", "client": ("2001:db8:1:2:3:4:5:6", 1), "headers": [(b"x-api-key", b" k1 "), (b"x-forwarded-for", b"198.51.100.1, 203.0.113.9")]}
    assert ClientIp()(scope) == "ip:2001:db8:1:2::/64"
    assert ClientIp(ipv6_prefix=128)(scope) == "ip:2001:db8:1:2:3:4:5:6"
    assert ClientIp(trusted_header="X-Forwarded-For")(scope) == "ip:203.0.113.9"
    assert ClientIp(trusted_header="x-forwarded-for", trusted_hops=2)(scope) == "ip:198.51.100.1"
    assert ClientIp(trusted_header="x-forwarded-for", trusted_hops=5)(scope) == "ip:198.51.100.1"
    assert ClientIp()({"client": ("::ffff:192.0.2.1", 1)}) == "ip:192.0.2.1"
    assert Header("X-API-Key")(scope) == "x-api-key:k1"
    assert Header("x-api-key")({"headers": [(b"x-api-key", b"caf\xc3\xa9")]}) is None
    assert Header("x-api-key")({"headers": [(b"x-api-key", b"a" * 257)]}) is None
    assert (Header("x-user") | ClientIp())({"client": ("192.0.2.9", 1), "headers": []}) == "ip:192.0.2.9"
    assert (Header("x-user") | ClientIp())({"client": None, "headers": []}) is None
    for entry, address in [("203.0.113.7", "203.0.113.7"), ("203.0.113.7:4711", "203.0.113.7"),
                           ("2001:db8::1", "2001:db8::1"), ("[2001:db8::1]:4711", "2001:db8::1"),
                           ("for=192.0.2.60;proto=http;by=203.0.113.43", "192.0.2.60"),
                           ('For="[2001:db8:cafe::17]:4711"', "2001:db8:cafe::17"),
                           ("proto=https", None), ("for=unknown", None), ("for=_hidden", None), ("not an address", None)]:
        parsed = parse_entry(entry)
        assert (None if parsed is None else str(parsed)) == address, entry


def test_routes_are_checked_when_built(app_store) -> None:
    for routes in ({"search": []}, {"/a/*/b": []}, {"/x": [Policy("café", 1, 1)]}, {"/x": [Policy("a", 1, 1), Policy("a", 2, 2)]}):
        with pytest.raises(ValueError):
            RateLimitMiddleware(None, app_store, routes=routes)


def test_the_readme_example_runs(frozen, monkeypatch, module_server) -> None:
    """The FastAPI example of python/README.md, as it is written there, against a server."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    source = re.search(r"<!-- example: fastapi -->\n```python\n(.*?)```", readme, re.S).group(1)
    monkeypatch.setenv("REDIS_URL", module_server.url)
    monkeypatch.setenv("RATELIMIT_PREFIX", f"readme-{uuid.uuid4().hex[:6]}:")
    namespace: dict = {}
    exec(compile(source, "README.md", "exec"), namespace)
    with TestClient(namespace["app"], client=("203.0.113.50", 1)) as client:
        statuses = [client.get("/search", params={"q": "redis"}).status_code for _ in range(6)]
        assert statuses == [200] * 5 + [429]
        quota = client.get("/quota", headers={"x-user-id": "42"}).json()
        assert {k: quota[k] for k in ("total", "remaining", "used")} == {"total": 100, "remaining": 100, "used": 0}
        completion = client.post("/complete", headers={"x-user-id": "42"}, json={"prompt": "hello world"})
        assert completion.status_code == 200 and completion.json()["tokens"] == 2
        report = client.post("/reports", headers={"x-user-id": "42"})
        assert report.status_code == 200


def test_websocket_handshakes_are_limited_as_requests(frozen, app_store) -> None:
    """A WebSocket handshake counts against its route like a request: admitted ones get the
    headers on their accept; a denied one gets the 429 response where the server offers the
    websocket.http.response extension (Starlette's TestClient does), and one without a subject
    the 400. The connection never reaches the app then."""
    from starlette.routing import WebSocketRoute
    from starlette.testclient import WebSocketDenialResponse

    reached = []

    async def echo(websocket):
        reached.append(websocket.url.path)
        await websocket.accept()
        await websocket.send_text("hi")
        await websocket.close()

    app = Starlette(routes=[WebSocketRoute("/ws", echo)])
    app.add_middleware(RateLimitMiddleware, store=app_store, key=Header("x-api-key"),
                       routes={"/ws": [Policy("ws", 2, "1m")]})
    client = TestClient(app)
    for _ in range(2):
        with client.websocket_connect("/ws", headers={"x-api-key": "k"}) as ws:
            assert ws.receive_text() == "hi"
    with pytest.raises(WebSocketDenialResponse) as denied:
        with client.websocket_connect("/ws", headers={"x-api-key": "k"}):
            pass
    assert denied.value.status_code == 429
    assert denied.value.headers["retry-after"]
    assert json.loads(denied.value.content)["violated-policies"] == ["ws"]
    with pytest.raises(WebSocketDenialResponse) as missing:
        with client.websocket_connect("/ws"):
            pass
    assert missing.value.status_code == 400
    assert reached == ["/ws", "/ws"]


def test_a_websocket_refusal_without_the_extension_closes_with_1008() -> None:
    """Without the websocket.http.response extension, a refused handshake is closed before it is
    accepted, with code 1008."""
    import asyncio

    from redis_ratelimit.asgi import _WebSocketRefusal

    sent = []

    async def receive():
        return {"type": "websocket.connect"}

    async def send(message):
        sent.append(message)

    asyncio.run(_WebSocketRefusal({"type": "websocket", "extensions": {}}, receive)(send, 429, [], b"{}"))
    assert [m["type"] for m in sent] == ["websocket.close"]
    assert sent[0]["code"] == 1008
