"""Shared fixtures: a server with the module, one without it, and a closed port."""

from __future__ import annotations

import time

import pytest

import redis_ratelimit
import redis_ratelimit.asyncio

from servers import MODULE, Server, free_port

# The clients the tests make wait up to 2 s for an answer rather than the package's 250 ms, so
# that a machine busy with other work does not turn a slow reply into an outage. A closed port
# is refused at once either way.
for _get_client in (redis_ratelimit.get_redis_client, redis_ratelimit.asyncio.get_redis_client):
    _get_client.__kwdefaults__ = {"connect_timeout": 2.0, "response_timeout": 2.0}


@pytest.fixture(scope="session")
def module_server():
    """A Redis server with the module loaded: the store uses RATELIMIT.*."""
    server = Server(MODULE)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def script_server():
    """A Redis server without the module: the store uses the Lua script."""
    server = Server()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def closed_url() -> str:
    """A URL where nothing listens: every call is refused, so the store falls back to memory."""
    return f"redis://127.0.0.1:{free_port()}/0"


def pytest_terminal_summary(terminalreporter) -> None:
    """Prints how many sequences and requests the comparisons covered."""
    from test_core_vs_script import COUNTS as core_counts

    lines = []
    for name, counts in [("port vs script", core_counts)] + _other_counts():
        if counts:
            lines.append(f"{name}: " + ", ".join(f"{n} {what}" for what, n in sorted(counts.items())))
    if lines:
        terminalreporter.write_sep("-", "compared")
        for line in lines:
            terminalreporter.write_line(line)


def _other_counts() -> list:
    found = []
    for module_name, label in [("test_memory_vs_script", "memory limiter vs script"), ("test_rust_client", "Python vs Rust client")]:
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        found.append((label, getattr(module, "COUNTS", {})))
    return found


class Blocking:
    """Drives an asyncio object (a store, a reservation, a permit) from a test, on one event
    loop: each coroutine method runs to its end, and ``with`` uses ``async with``. So the same
    tests run against the blocking and the asyncio store."""

    def __init__(self, target, loop) -> None:
        self._target = target
        self._loop = loop

    def __getattr__(self, name):
        import inspect

        attribute = getattr(self._target, name)
        if name in ("reserve", "acquire"):
            return lambda *a, **k: Blocking(self._loop.run_until_complete(_awaited(attribute(*a, **k))), self._loop)
        if inspect.iscoroutinefunction(attribute):
            return lambda *a, **k: self._loop.run_until_complete(attribute(*a, **k))
        return attribute

    def __bool__(self) -> bool:
        return bool(self._target)

    def pause(self, seconds: float) -> None:
        """Lets time pass with the event loop running, so that its background tasks run."""
        import asyncio

        self._loop.run_until_complete(asyncio.sleep(seconds))

    def __enter__(self):
        self._loop.run_until_complete(self._target.__aenter__())
        return self

    def __exit__(self, *exc_info):
        return self._loop.run_until_complete(self._target.__aexit__(*exc_info))


async def _awaited(pending):
    return await pending


@pytest.fixture(params=["module", "script", "memory"])
def backend(request) -> str:
    """Where the store's decisions come from: the module, the script, or (a closed port) memory."""
    return request.param


@pytest.fixture
def url(backend, request, closed_url) -> str:
    if backend == "memory":
        return closed_url
    return request.getfixturevalue(f"{backend}_server").url


@pytest.fixture(params=["sync", "async"])
def flavor(request) -> str:
    return request.param


@pytest.fixture
def make_store(flavor, url, request):
    """Makes stores of the test's flavor on the test's backend, each under a prefix of its own."""
    import asyncio
    import uuid

    import redis_ratelimit
    import redis_ratelimit.asyncio as aio

    made = []
    loop = asyncio.new_event_loop() if flavor == "async" else None

    def make(**options):
        options.setdefault("prefix", f"t-{uuid.uuid4().hex[:8]}:")
        if flavor == "sync":
            store = redis_ratelimit.RedisStore(redis_ratelimit.get_redis_client(url), **options)
            made.append(store.redis_client)
            return store
        store = aio.RedisStore(aio.get_redis_client(url), **options)
        made.append(store.redis_client)
        return Blocking(store, loop)

    yield make
    for client in made:
        if loop is None:
            client.close()
        else:
            loop.run_until_complete(client.aclose())
    if loop is not None:
        loop.close()


@pytest.fixture
def store(make_store):
    """A store of the test's flavor on the test's backend."""
    return make_store()


def pause(store, seconds: float) -> None:
    """Lets time pass; for an asyncio store, with its event loop running."""
    if isinstance(store, Blocking):
        store.pause(seconds)
    else:
        time.sleep(seconds)
