"""The seed's counters (``increment``, ``get_with_expiry``) and ``clear_all``, as engine
operations. The counters use the Rust client's script (``client/src/store/increment.lua``):
``INCRBY``, and ``PEXPIRE`` only when the counter has no expiry, so it is never extended."""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple, TypeVar

from . import commands
from .decision import LOCAL
from .engine import Call, Engine, Eval, Operation, ScriptRef, Transaction, call
from .errors import RateLimitError
from .memory import WrongTypeError
from .scripts import INCREMENT_SOURCE

INCREMENT_SCRIPT = ScriptRef.of(INCREMENT_SOURCE)

R = TypeVar("R")

# Keys asked for per SCAN step, and so deleted per UNLINK.
_SCAN_COUNT = 500


def increment(engine: Engine, key: str, expiry_ms: int, amount: int) -> Operation[int]:
    """The seed's counter, in one script: ``INCRBY``, and ``PEXPIRE`` when it has no expiry.
    While Redis is out, the in-memory limiter counts under the ``local`` policy; otherwise
    :class:`RateLimitError` is raised."""
    full_key = engine.redis_key(key)
    try:
        value = yield from engine.guarded(call(Eval(INCREMENT_SCRIPT, (full_key,), (amount, expiry_ms))))
    except RateLimitError as failure:
        if failure.is_outage and engine.on_failure == LOCAL:
            return _in_memory(lambda: engine.memory.increment(full_key, amount, expiry_ms))
        raise
    return _counter_value(value)


def get_with_expiry(engine: Engine, key: str) -> Operation[Tuple[int, Optional[int]]]:
    """The counter and the milliseconds to its expiry (``None`` without one or when absent),
    read atomically; falls back as :func:`increment` does."""
    full_key = engine.redis_key(key)
    try:
        value, ttl = yield from engine.guarded(call(Transaction((("GET", full_key), ("PTTL", full_key)))))
    except RateLimitError as failure:
        if failure.is_outage and engine.on_failure == LOCAL:
            return _in_memory(lambda: engine.memory.get_with_expiry(full_key))
        raise
    if value is None:
        return 0, None
    number = commands.text(value).strip()
    if not number.lstrip("+-").isdigit() or not number.isascii():
        raise RateLimitError("unexpected reply from Redis: the key holds no counter", code=None)
    ttl = int(ttl)
    return _counter_value(int(number)), (ttl if ttl >= 0 else None)


def _in_memory(count: Callable[[], R]) -> R:
    """A counter call of the in-memory limiter, raising :class:`RateLimitError` as Redis's
    answer would when the key holds something else than a counter."""
    try:
        return count()
    except WrongTypeError:
        raise RateLimitError("the key holds no counter", code=None) from None


def _counter_value(value: Any) -> int:
    number = int(value)
    if number < 0:
        raise RateLimitError(f"unexpected reply from Redis: negative counter {number}")
    return number


def clear_all(engine: Engine) -> Operation[int]:
    """Deletes every key under the prefix (``SCAN MATCH prefix*`` and ``UNLINK`` in batches)
    and empties the in-memory limiter; answers the number of keys deleted. Refuses an empty
    prefix. Raises :class:`RateLimitError`."""
    if not engine.prefix:
        raise RateLimitError("clear_all refuses to run with an empty prefix")
    engine.memory.clear()
    pattern = escape_glob(engine.prefix) + "*"

    def scan() -> Operation[int]:
        cursor, deleted = 0, 0
        while True:
            cursor, keys = yield Call(("SCAN", cursor, "MATCH", pattern, "COUNT", _SCAN_COUNT))
            cursor = int(cursor)
            if keys:
                deleted += int((yield Call(("UNLINK", *keys))))
            if cursor == 0:
                return deleted
    return (yield from engine.guarded(scan()))


def escape_glob(text: str) -> str:
    """``text`` with the glob characters of ``MATCH`` escaped, so that it matches itself only."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


__all__ = ["increment", "get_with_expiry", "clear_all", "escape_glob", "INCREMENT_SCRIPT"]
