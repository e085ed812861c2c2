"""The package's error, classified by properties rather than by its text (``client/src/error.rs``).

The limiting calls (``check``, ``quota``, ``check_all``, the seed's ``check_rate_limit``) never
raise for Redis problems: the failure policy answers. :class:`RateLimitError` is what the other
calls raise (the counters, ``ping``), and what the logs describe. Invalid arguments raise
:class:`ValueError` (:class:`redis_ratelimit.core.LimitError` for a limit) before anything is
sent.
"""

from __future__ import annotations

from typing import Optional

import redis

# Server error codes that mean "this server cannot serve now", not "this request is wrong".
_UNAVAILABLE_CODES = frozenset(
    ["LOADING", "BUSY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "MOVED", "ASK", "READONLY", "OOM", "NOAUTH", "WRONGPASS"]
)


# The codes redis-py drops from the message when it picks an exception class for them.
_CLASS_CODES = [
    ("BusyLoadingError", "LOADING"), ("ReadOnlyError", "READONLY"), ("OutOfMemoryError", "OOM"),
    ("NoScriptError", "NOSCRIPT"), ("ExecAbortError", "EXECABORT"), ("NoPermissionError", "NOPERM"),
    ("MasterDownError", "MASTERDOWN"), ("ClusterDownError", "CLUSTERDOWN"), ("MovedError", "MOVED"),
    ("AskError", "ASK"), ("TryAgainError", "TRYAGAIN"), ("ClusterCrossSlotError", "CROSSSLOT"),
]


def error_code(error: BaseException) -> Optional[str]:
    """The code of a server error reply (``ERR``, ``WRONGTYPE``, ``LOADING``, ...), ``None`` for
    errors that are no reply. redis-py drops the code of many messages; it is put back."""
    code = getattr(error, "status_code", None)
    if code:
        return str(code)
    for name, class_code in _CLASS_CODES:
        cls = getattr(redis.exceptions, name, None)
        if cls is not None and isinstance(error, cls):
            return class_code
    if not isinstance(error, redis.ResponseError):
        return None
    first = str(error).split(" ", 1)[0]
    return first if first.isalpha() and first.isupper() else "ERR"


class RateLimitError(Exception):
    """Why an operation failed. Classify it with its properties (:attr:`is_unreachable`,
    :attr:`is_outage`, :attr:`code`, ...), never by its message. The redis-py error, if any, is
    its ``__cause__``."""

    def __init__(self, message: str, *, unreachable: bool = False, circuit_open: bool = False,
                 code: Optional[str] = None, timeout: bool = False) -> None:
        super().__init__(message)
        self._unreachable = unreachable or circuit_open
        self._circuit_open = circuit_open
        self._code = code
        self._timeout = timeout

    @classmethod
    def from_redis(cls, error: BaseException) -> "RateLimitError":
        """The error that ``error``, raised by redis-py, stands for."""
        code = error_code(error)
        timeout = isinstance(error, redis.TimeoutError)
        unreachable = code is None and isinstance(error, (redis.ConnectionError, redis.TimeoutError, OSError))
        if isinstance(error, redis.AuthenticationError):
            unreachable = True
        message = str(error) if code is None or str(error).startswith(code) else f"{code} {error}"
        result = cls(message, unreachable=unreachable, code=code, timeout=timeout)
        result.__cause__ = error
        return result

    @property
    def is_unreachable(self) -> bool:
        """Redis could not be reached: the connection was refused, dropped or timed out, the
        authentication failed, no Redis is configured, or the circuit breaker is open."""
        return self._unreachable

    @property
    def is_circuit_open(self) -> bool:
        """Redis failed recently and the circuit breaker is open: it was not tried."""
        return self._circuit_open

    @property
    def is_timeout(self) -> bool:
        """Redis did not answer in time."""
        return self._timeout

    @property
    def is_unavailable(self) -> bool:
        """The server answered that it cannot serve now (``LOADING``, ``BUSY``, ``OOM``,
        ``READONLY``, ``MASTERDOWN``, ``CLUSTERDOWN``, ``NOAUTH``, ...)."""
        return self._code in _UNAVAILABLE_CODES

    @property
    def is_outage(self) -> bool:
        """:attr:`is_unreachable` or :attr:`is_unavailable`: the failure policy applies."""
        return self.is_unreachable or self.is_unavailable

    @property
    def code(self) -> Optional[str]:
        """The code of a server error reply, such as ``ERR`` or ``WRONGTYPE``; ``None`` for others."""
        return self._code

    @property
    def is_wrong_type(self) -> bool:
        """The key holds another Redis type (``WRONGTYPE``)."""
        return self._code == "WRONGTYPE"

    @property
    def is_wrong_algorithm(self) -> bool:
        """The key holds the state of another algorithm than the one requested."""
        text = str(self)
        return self._code == "ERR" and "the key holds a " in text and " limiter, not " in text

    @property
    def is_not_a_limiter(self) -> bool:
        """The key holds a string that is no limiter's state."""
        return self._code == "ERR" and "the key holds a value that is not" in str(self)

    @property
    def is_unknown_command(self) -> bool:
        """The server does not know the command: the module is not loaded."""
        return self._code == "ERR" and str(self).startswith("ERR unknown command")

    def redacted(self, key: str, masked_key: str) -> str:
        """A description safe for logs: ``key``, wherever the server echoed it, appears masked;
        an unknown-command error, which echoes its arguments, is described without them."""
        if self.is_unknown_command:
            return "ERR unknown command"
        text = str(self)
        return text.replace(key, masked_key) if key else text
