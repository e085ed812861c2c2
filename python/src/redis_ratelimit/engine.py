"""What the stores do, written once for the blocking and the asyncio store.

Each operation is a generator that yields the Redis calls it needs (:class:`Call`, :class:`Eval`,
:class:`Transaction`) and receives their replies, or has their errors thrown in. The blocking
:class:`~redis_ratelimit.RedisStore` runs it with a redis-py client, the asyncio one awaits each
call (:mod:`redis_ratelimit.drivers`). So backend selection, the failure policy, the breaker and
the logs are the same code for both.

Backends: the module when ``COMMAND INFO ratelimit.check`` lists it, else the Lua script;
detected at the first call, after every outage and every ``redetect_interval``. An
``unknown command`` reply (the module was unloaded) switches to the script at once.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any, Callable, Generator, List, NamedTuple, Optional, Sequence, Tuple, TypeVar

import redis

from . import commands, core
from .breaker import Breaker
from .core import Limit
from .decision import ALLOW, DENY, LOCAL, MODULE, SCRIPT, Decision, MultiDecision
from .errors import RateLimitError
from .mask import mask_key
from .memory import MemoryLimiter, WrongTypeError
from .scripts import SCRIPT_SOURCE

log = logging.getLogger("redis_ratelimit")

T = TypeVar("T")

#: The failure policies: what answers while Redis cannot.
POLICIES = (LOCAL, ALLOW, DENY)



class ScriptRef(NamedTuple):
    """A Lua script and its SHA1, run with EVALSHA, sent whole (EVAL) on NOSCRIPT."""

    source: str
    sha: str

    @classmethod
    def of(cls, source: str) -> "ScriptRef":
        """The script ``source`` with its SHA1."""
        return cls(source, hashlib.sha1(source.encode("utf-8")).hexdigest())


RATELIMIT_SCRIPT = ScriptRef.of(SCRIPT_SOURCE)


class Call(NamedTuple):
    """One command: ``client.execute_command(*args)``."""

    args: Tuple[Any, ...]


class Eval(NamedTuple):
    """A script: ``EVALSHA sha numkeys keys... args...``, sent whole (EVAL) on NOSCRIPT."""

    script: ScriptRef
    keys: Tuple[Any, ...]
    args: Tuple[Any, ...]


class Transaction(NamedTuple):
    """Commands in ``MULTI``/``EXEC``; the reply is the list of their replies."""

    commands: Tuple[Tuple[Any, ...], ...]


Operation = Generator[Any, Any, T]


def call(request: Any) -> Operation[Any]:
    """One request as an operation: its reply."""
    return (yield request)


class Engine:
    """The state the operations share: keys, backend, breaker, failure policy and the in-memory
    limiter. ``online`` is false for a store without a Redis client: every call then goes to the
    policy, quietly."""

    def __init__(self, *, prefix: str, on_failure: str, breaker: Breaker, memory: MemoryLimiter,
                 redetect_interval: float, url: str, online: bool) -> None:
        if on_failure not in POLICIES:
            raise ValueError(f"unknown failure policy {on_failure!r}: expected local, allow or deny")
        self.prefix = prefix
        self.on_failure = on_failure
        self.breaker = breaker
        self.memory = memory
        self.redetect_interval = max(float(redetect_interval), 0.001)
        self.url = url
        self.online = online
        self.mode: Optional[str] = None
        self._last_mode: Optional[str] = None
        self._next_detect = 0.0

    # Keys ----------------------------------------------------------------------------------

    def redis_key(self, key: str) -> str:
        """The Redis key of ``key``: ``prefix + key``. Raises :class:`ValueError` for a key that is
        no string, or that UTF-8 cannot encode (a lone surrogate), on every backend alike."""
        if not isinstance(key, str):
            raise ValueError(f"invalid key {key!r}: expected a string")
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"invalid key {key!r}: not encodable as UTF-8") from None
        return self.prefix + key

    def mask(self, full_key: str) -> str:
        """A Redis key as logs show it (:func:`~redis_ratelimit.mask.mask_key`)."""
        return mask_key(self.prefix, full_key)

    # Backend -------------------------------------------------------------------------------

    def detect(self) -> Operation[str]:
        """Asks the server whether the module is loaded and records the answer. A server that
        refuses ``COMMAND INFO`` (renamed, or denied by an ACL) gets the script."""
        try:
            loaded = commands.module_listed((yield Call(("COMMAND", "INFO", "ratelimit.check"))))
        except redis.RedisError as error:
            if RateLimitError.from_redis(error).is_outage:
                raise
            log.debug("COMMAND INFO failed (%s): using the Lua script", error)
            loaded = False
        except (TypeError, AttributeError, IndexError, KeyError, ValueError):
            # redis-py's reader of COMMAND replies fails on the nil entry of an unknown command.
            loaded = False
        backend = MODULE if loaded else SCRIPT
        self._set_backend(backend)
        return backend

    def _backend(self) -> Operation[str]:
        if self.mode is not None and time.monotonic() < self._next_detect:
            return self.mode
        return (yield from self.detect())

    def _set_backend(self, backend: str) -> None:
        self.mode = backend
        self._next_detect = time.monotonic() + self.redetect_interval
        if self._last_mode not in (None, backend):
            log.info("rate limiting backend changed to %s (url=%s)", backend, self.url)
        self._last_mode = backend

    def _remote(self, module: List[Any], keys: Sequence[str], script: List[Any]) -> Operation[Tuple[Any, str]]:
        """The module's command, or the script's; returns the reply and who answered."""
        if (yield from self._backend()) == MODULE:
            try:
                return (yield Call(tuple(module))), MODULE
            except redis.ResponseError as error:
                if not RateLimitError.from_redis(error).is_unknown_command:
                    raise
                log.warning("the ratelimit module is no longer loaded in Redis: using the Lua script (url=%s)", self.url)
                self._set_backend(SCRIPT)
        return (yield Eval(RATELIMIT_SCRIPT, tuple(keys), tuple(script))), SCRIPT

    def _ask(self, module: List[Any], keys: Sequence[str], script: List[Any], read: Callable[[Any, str], T]) -> Operation[T]:
        """The module's command or the script's, guarded, with its reply read by ``read(reply,
        backend)``: a reply that cannot be read is an error like any other."""
        def asked() -> Operation[T]:
            reply, backend = yield from self._remote(module, keys, script)
            try:
                return read(reply, backend)
            except (ValueError, TypeError, IndexError) as error:
                raise redis.ResponseError(f"ERR unexpected reply from the rate limiter: {error}") from error
        return (yield from self.guarded(asked()))

    def guarded(self, operation: Operation[T]) -> Operation[T]:
        """Runs ``operation`` unless the breaker is open, and reports to the breaker. Raises
        :class:`RateLimitError` on any failure; an outage also forgets the backend, so that it
        is detected again once Redis answers (it may have restarted without the module)."""
        if not self.online:
            raise RateLimitError("no Redis client is configured", unreachable=True)
        if not self.breaker.allow():
            raise RateLimitError("Redis is not tried: it failed recently and the circuit breaker is open",
                                 circuit_open=True)
        try:
            result = yield from operation
        except (redis.RedisError, OSError) as error:
            failure = RateLimitError.from_redis(error)
            if failure.is_outage:
                self.breaker.on_failure()
                self.mode = None
            else:
                self.breaker.on_success()
            raise failure from error
        self.breaker.on_success()
        return result

    # The failure policy --------------------------------------------------------------------

    def fallback(self, failure: RateLimitError, full_key: str, local: Callable[[], T], allow: Callable[[], T],
                 deny: Callable[[], T]) -> T:
        """What answers when Redis could not: while it is out, the failure policy (``local``
        asks the in-memory limiter); when it answered an error for this key, the request is
        admitted (fail open), unless the policy is ``deny``. Logged, with the key masked."""
        masked = self.mask(full_key)
        reason = failure.redacted(full_key, masked)
        if failure.is_outage:
            policy = self.on_failure
            if self.online and not failure.is_circuit_open:
                log.warning("Redis is unreachable: the failure policy decides until it is back "
                            "(url=%s, key=%s, error=%s, policy=%s)", self.url, masked, reason, policy)
        else:
            policy = DENY if self.on_failure == DENY else ALLOW
            log.error("Redis cannot limit this key: the request is %s (key=%s, error=%s)",
                      "denied" if policy == DENY else "admitted", masked, reason)
        if policy == LOCAL:
            try:
                return local()
            except (core.WrongAlgorithm, WrongTypeError) as error:
                # As when Redis answers an error for this key: admitted (the policy is local).
                log.error("the in-memory limiter cannot limit this key: the request is admitted (key=%s, error=%s)",
                          masked, error)
                return allow()
        return allow() if policy == ALLOW else deny()

    def outage_wait_ms(self) -> int:
        """Milliseconds until Redis is next tried, at least 1: the wait of a denial by ``deny``."""
        return max(-(-int(self.breaker.retry_in() * 1_000_000) // 1000), 1)

    def _allowed(self, limit: Limit) -> Decision:
        # Nothing is counted while failing open: the limiter is reported full.
        return Decision(True, limit.capacity, limit.capacity, 0, 0, ALLOW)

    def _denied(self, limit: Limit) -> Decision:
        wait = self.outage_wait_ms()
        return Decision(False, limit.capacity, 0, wait, wait, DENY)

    # Operations ----------------------------------------------------------------------------

    def check(self, key: str, limit: Limit, cost: int, flags: int = 0) -> Operation[Decision]:
        """``RATELIMIT.CHECK`` on ``key`` (under the prefix); always answers."""
        full_key = self.redis_key(key)
        module, script = commands.check(full_key, limit, cost, flags)
        try:
            decision = yield from self._ask(module, [full_key], script, Decision.from_reply)
        except RateLimitError as failure:
            def local() -> Decision:
                outcome = self.memory.check(full_key, limit, cost, dry_run=bool(flags & commands.DRYRUN),
                                            force=bool(flags & commands.FORCE))
                window = outcome.window if flags & commands.WITHWINDOW else None
                return Decision.from_core(outcome.decision, LOCAL, window)
            decision = self.fallback(failure, full_key, local, lambda: self._allowed(limit), lambda: self._denied(limit))
        log.debug("rate limit decided (key=%s, backend=%s, allowed=%s, remaining=%s)",
                  self.mask(full_key), decision.backend, decision.allowed, decision.remaining)
        return decision

    def quota(self, key: str, limit: Limit, cost: int = 1) -> Operation[Decision]:
        """``RATELIMIT.QUOTA``: the standing now; always answers."""
        full_key = self.redis_key(key)
        module, script = commands.quota(full_key, limit, cost)
        try:
            return (yield from self._ask(module, [full_key], script, Decision.from_reply))
        except RateLimitError as failure:
            return self.fallback(failure, full_key,
                                 lambda: Decision.from_core(self.memory.quota(full_key, limit, cost), LOCAL),
                                 lambda: self._allowed(limit), lambda: self._denied(limit))

    def check_all(self, keys: Sequence[str], limits: Sequence[Limit], costs: Sequence[int], flags: int = 0) -> Operation[MultiDecision]:
        """``RATELIMIT.MCHECK``: one request under several policies, all or nothing."""
        full_keys = [self.redis_key(key) for key in keys]
        module, script = commands.mcheck(full_keys, limits, costs, flags)
        try:
            return (yield from self._ask(module, full_keys, script, lambda reply, backend: _multi(reply, backend, len(keys))))
        except RateLimitError as failure:
            def local() -> MultiDecision:
                result = self.memory.check_all(list(zip(full_keys, limits, costs)), dry_run=bool(flags & commands.DRYRUN),
                                               force=bool(flags & commands.FORCE))
                with_window = flags & commands.WITHWINDOW
                decisions = tuple(Decision.from_core(o.decision, LOCAL, o.window if with_window else None)
                                  for o in result.outcomes)
                return MultiDecision(result.allowed, result.retry_after_ms, decisions, LOCAL)

            def every(decide: Callable[[Limit], Decision]) -> MultiDecision:
                decisions = tuple(decide(limit) for limit in limits)
                allowed = all(d.allowed for d in decisions)
                return MultiDecision(allowed, 0 if allowed else max(d.retry_after_ms for d in decisions),
                                     decisions, decisions[0].backend)
            return self.fallback(failure, full_keys[0], local, lambda: every(self._allowed), lambda: every(self._denied))

    def refund(self, key: str, limit: Limit, amount: int, window: Optional[int]) -> Operation[Tuple[int, Decision]]:
        """``RATELIMIT.REFUND``: the units given back and the standing afterwards."""
        full_key = self.redis_key(key)
        module, script = commands.refund(full_key, limit, amount, window)
        try:
            return (yield from self._ask(module, [full_key], script, _refunded))
        except RateLimitError as failure:
            def local() -> Tuple[int, Decision]:
                result = self.memory.refund(full_key, limit, amount, window)
                return result.refunded, Decision.from_core(result.standing, LOCAL)
            return self.fallback(failure, full_key, local, lambda: (0, self._allowed(limit)), lambda: (0, self._denied(limit)))

    def reset(self, key: str) -> Operation[bool]:
        """``RATELIMIT.RESET``, in Redis and in the in-memory limiter: whether Redis had a state;
        while Redis is out, whether the in-memory limiter had one. Errors are logged."""
        full_key = self.redis_key(key)
        local = self.memory.reset(full_key)
        module, script = commands.reset(full_key)
        try:
            return (yield from self._ask(module, [full_key], script, lambda reply, _: int(reply) == 1))
        except RateLimitError as failure:
            if failure.is_unreachable:
                log.debug("cannot reset a rate limit in Redis (key=%s, error=%s)", self.mask(full_key), failure)
            else:
                log.warning("cannot reset a rate limit in Redis (key=%s, error=%s)", self.mask(full_key),
                            failure.redacted(full_key, self.mask(full_key)))
            return local

    def acquire(self, key: str, limit: int, lease_ms: int, lease_id: Optional[str]) -> Operation[Tuple[Decision, Optional[str]]]:
        """``RATELIMIT.ACQUIRE``: the decision and the lease ID (``None`` when denied)."""
        full_key = self.redis_key(key)
        module, script = commands.acquire(full_key, limit, lease_ms, lease_id)
        try:
            return (yield from self._ask(module, [full_key], script,
                                         lambda reply, backend: (Decision.from_reply(reply[:5], backend), commands.text(reply[5]))))
        except RateLimitError as failure:
            def local() -> Tuple[Decision, Optional[str]]:
                decision, granted = self.memory.acquire(full_key, limit, lease_ms, lease_id)
                return Decision.from_core(decision, LOCAL), granted

            def allow() -> Tuple[Decision, Optional[str]]:
                return Decision(True, limit, limit, 0, 0, ALLOW), lease_id

            def deny() -> Tuple[Decision, Optional[str]]:
                wait = self.outage_wait_ms()
                return Decision(False, limit, 0, wait, wait, DENY), None
            return self.fallback(failure, full_key, local, allow, deny)

    def release(self, key: str, lease_id: str) -> Operation[bool]:
        """``RATELIMIT.RELEASE``: whether a live lease was released. Errors are logged, and the
        in-memory limiter answers while Redis is out."""
        full_key = self.redis_key(key)
        module, script = commands.release(full_key, lease_id)
        try:
            return (yield from self._ask(module, [full_key], script, lambda reply, _: int(reply) == 1))
        except RateLimitError as failure:
            return self.fallback(failure, full_key, lambda: self.memory.release(full_key, lease_id),
                                 lambda: False, lambda: False)

    def ping(self) -> Operation[None]:
        """Pings Redis; raises :class:`RateLimitError` when it is unreachable."""
        yield from self.guarded(call(Call(("PING",))))

    def redetect(self) -> Operation[str]:
        """Pings Redis and detects now whether the module is loaded."""
        def both() -> Operation[str]:
            yield Call(("PING",))
            return (yield from self.detect())
        return (yield from self.guarded(both()))


def _multi(reply: Any, backend: str, count: int) -> MultiDecision:
    decisions = tuple(Decision.from_reply(item, backend) for item in reply[2:])
    if len(decisions) != count:
        raise ValueError(f"RATELIMIT.MCHECK replied {len(decisions)} decisions for {count} keys")
    return MultiDecision(int(reply[0]) == 1, int(reply[1]), decisions, backend)


def _refunded(reply: Any, backend: str) -> Tuple[int, Decision]:
    refunded, rest = int(reply[0]), [int(x) for x in reply[1:]]
    if len(rest) != 4:
        raise ValueError(f"RATELIMIT.REFUND replied {reply!r}")
    return refunded, Decision.from_reply([int(rest[3] == 0), *rest], backend)
