"""The package as installed: the Lua script it ships is the repository's, and every public
function, class, method and property is documented and typed."""

from __future__ import annotations

import importlib
import inspect
from importlib import resources

import pytest

import redis_ratelimit
from servers import ROOT

PUBLIC_MODULES = [
    "redis_ratelimit", "redis_ratelimit.asyncio", "redis_ratelimit.asgi", "redis_ratelimit.http",
    "redis_ratelimit.core", "redis_ratelimit.mask", "redis_ratelimit.breaker", "redis_ratelimit.errors",
    "redis_ratelimit.memory", "redis_ratelimit.decision", "redis_ratelimit.store", "redis_ratelimit.scripts",
    "redis_ratelimit.reservation", "redis_ratelimit.permit", "redis_ratelimit.counters", "redis_ratelimit.engine",
    "redis_ratelimit.commands", "redis_ratelimit.drivers", "redis_ratelimit.base",
]


@pytest.mark.parametrize("shipped, source", [
    ("ratelimit.lua", "client/lua/ratelimit.lua"),
    ("increment.lua", "client/src/store/increment.lua"),
])
def test_the_shipped_scripts_are_the_repositorys(shipped: str, source: str) -> None:
    packaged = resources.files("redis_ratelimit").joinpath("lua", shipped).read_bytes()
    assert packaged == (ROOT / source).read_bytes(), (
        f"the package's lua/{shipped} differs from {source}: reinstall the package (make test-python does)")


def test_the_script_constants_are_the_shipped_files() -> None:
    assert redis_ratelimit.SCRIPT_SOURCE.encode() == (ROOT / "client/lua/ratelimit.lua").read_bytes()
    assert "local commands = {" in redis_ratelimit.SCRIPT_SOURCE


def _public_members(module):
    names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
    for name in names:
        member = getattr(module, name)
        if (inspect.isfunction(member) or inspect.isclass(member)) and member.__module__.startswith("redis_ratelimit"):
            yield f"{module.__name__}.{name}", member


def _undocumented():
    missing, untyped = [], []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        if not (module.__doc__ or "").strip():
            missing.append(module_name)
        for name, member in _public_members(module):
            if not (member.__doc__ or "").strip():
                missing.append(name)
            if inspect.isfunction(member) and "return" not in member.__annotations__:
                untyped.append(name)
            if inspect.isclass(member):
                for attr, value in vars(member).items():
                    if attr.startswith("_"):
                        continue
                    function = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
                    if inspect.isfunction(function):
                        if not (function.__doc__ or "").strip():
                            missing.append(f"{name}.{attr}")
                        if "return" not in function.__annotations__:
                            untyped.append(f"{name}.{attr}")
    return missing, untyped


def test_every_public_function_is_documented_and_typed() -> None:
    missing, untyped = _undocumented()
    assert missing == [], f"without a docstring: {missing}"
    assert untyped == [], f"without a return annotation: {untyped}"


def test_both_stores_have_the_same_api() -> None:
    import redis_ratelimit.asyncio as aio

    def api(cls):
        return {name: inspect.signature(f) for name, f in inspect.getmembers(cls, inspect.isfunction) if not name.startswith("_")}

    blocking, asynchronous = api(redis_ratelimit.RedisStore), api(aio.RedisStore)
    assert blocking.keys() == asynchronous.keys()
    for name, signature in blocking.items():
        assert list(signature.parameters) == list(asynchronous[name].parameters), name
    seed = {"increment", "get", "get_with_expiry", "check_rate_limit", "get_quota", "reset", "clear_all"}
    assert seed <= blocking.keys()
    assert list(blocking["check_rate_limit"].parameters) == ["self", "user_id", "endpoint", "limit", "period", "check_only"]
    assert list(inspect.signature(redis_ratelimit.RedisStore).parameters)[:2] == ["redis_client", "prefix"]
    assert inspect.signature(redis_ratelimit.RedisStore).parameters["prefix"].default == "ratelimit:"
