"""The storage format: one Redis string per limiter, shared by every implementation
(``core/src/storage.rs``).

=========  ======================================================  ====================
algorithm  value                                                   example
=========  ======================================================  ====================
FIXED      the count, a canonical decimal; the key's expiry is      ``7``
           the window's end
SLIDING    ``s:<window>:<previous>:<current>``                      ``s:28881234:17:4``
GCRA       ``-(1 + tat)``, from ``-2^62`` to ``-1``                 ``-1732893840123457``
=========  ======================================================  ====================

Numbers are canonical, as ``INCR`` reads them: no sign (but GCRA's minus), no leading zero, no
spaces. Anything else is no limiter's state. The key's expiry is part of the state.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Optional, Union

from .limit import FIXED, GCRA, SLIDING

#: The modulus of GCRA's stored theoretical arrival time: 2^62.
GCRA_MODULUS = 1 << 62
U64_MAX = (1 << 64) - 1
I64_MAX = (1 << 63) - 1

_CANONICAL = re.compile(rb"0|[1-9][0-9]{0,19}")


@dataclass(frozen=True)
class FixedState:
    """A FIXED window: the units spent in it, and its end (the key's expiry; ``None`` for a key
    without expiry, whose window is taken to start now)."""

    count: int
    window_end_ms: Optional[int]


@dataclass(frozen=True)
class SlidingState:
    """A SLIDING counter: the index of the current window, the counts of the previous and the
    current window, and the key's expiry (``None`` without one)."""

    window: int
    previous: int
    current: int
    expire_at_ms: Optional[int]


@dataclass(frozen=True)
class GcraState:
    """A GCRA bucket: the theoretical arrival time in GCRA units modulo 2^62, and the key's
    expiry (``None`` without one)."""

    tat: int
    expire_at_ms: Optional[int]


#: A limiter's stored state, of one of the three algorithms.
State = Union[FixedState, SlidingState, GcraState]


class DecodeError(ValueError):
    """A stored value that is no limiter's state."""

    def __init__(self) -> None:
        super().__init__("the value is not a rate limiter state")


def algorithm_of(state: State) -> str:
    """The algorithm a state belongs to: ``FIXED``, ``SLIDING`` or ``GCRA``."""
    if isinstance(state, FixedState):
        return FIXED
    if isinstance(state, SlidingState):
        return SLIDING
    return GCRA


def expiry_of(state: State) -> Optional[int]:
    """The absolute expiry in ms of the key the state was read from, ``None`` without one."""
    if isinstance(state, FixedState):
        return state.window_end_ms
    return state.expire_at_ms


def with_expiry(state: State, expire_at_ms: int) -> State:
    """The same state as read from a key whose absolute expiry is ``expire_at_ms``."""
    if isinstance(state, FixedState):
        return replace(state, window_end_ms=expire_at_ms)
    return replace(state, expire_at_ms=expire_at_ms)


def canonical_u64(text: bytes) -> Optional[int]:
    """A stored count as ``INCR`` reads it: ``0`` or digits without a leading zero, up to
    2^64 - 1; ``None`` for anything else."""
    if not _CANONICAL.fullmatch(text):
        return None
    value = int(text)
    return value if value <= U64_MAX else None


def _parse_i64(text: bytes) -> Optional[int]:
    if text.startswith(b"-"):
        magnitude = canonical_u64(text[1:])
        if magnitude is None or not 1 <= magnitude <= I64_MAX + 1:
            return None
        return -magnitude
    value = canonical_u64(text)
    return value if value is not None and value <= I64_MAX else None


def decode(value: Union[bytes, str], expire_at_ms: Optional[int]) -> State:
    """Reads a stored value, with the key's absolute expiry. Raises :class:`DecodeError` on
    anything that is not one of the three shapes."""
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    if value.startswith(b"s:"):
        fields = value[2:].split(b":")
        numbers = [canonical_u64(f) for f in fields]
        if len(numbers) != 3 or None in numbers:
            raise DecodeError()
        window, previous, current = numbers
        return SlidingState(window, previous, current, expire_at_ms)
    number = _parse_i64(value)
    if number is None:
        raise DecodeError()
    if number >= 0:
        return FixedState(number, expire_at_ms)
    tat = -number - 1
    if tat >= GCRA_MODULUS:
        raise DecodeError()
    return GcraState(tat, expire_at_ms)


def encode(state: State) -> bytes:
    """The value to store. FIXED's window end is not part of it: it is the key's expiry."""
    if isinstance(state, FixedState):
        return str(min(state.count, I64_MAX)).encode()
    if isinstance(state, SlidingState):
        return f"s:{state.window}:{state.previous}:{state.current}".encode()
    return f"-{state.tat % GCRA_MODULUS + 1}".encode()
