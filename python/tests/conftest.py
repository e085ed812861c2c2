"""Shared fixtures: a server with the module, one without it, and a closed port."""

from __future__ import annotations

import pytest

from servers import MODULE, Server, free_port


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
