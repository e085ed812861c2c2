"""HTTP rate limiting as ASGI middleware, for Starlette and FastAPI: :class:`RateLimitMiddleware`.

Each route has its limits, as named :class:`~redis_ratelimit.Policy` objects; a key function
names the subject of each request (:class:`ClientIp`, :class:`Header`, or any callable of the
ASGI scope); the store decides. It answers as the Rust tower layer does, with the same keys
(``policy name + ":" + subject``, under the store's prefix), headers and bodies:

- **Admitted** by every policy: the app answers, and its response gets the rate limit headers
  (see :mod:`redis_ratelimit.http`).
- **Denied** by one or more: the app never sees the request. The answer is ``429 Too Many
  Requests`` with the same headers and an ``application/problem+json`` body of the
  ``quota-exceeded`` type.
- **Without a subject** (the key function answered ``None``): ``400 Bad Request``, with a
  problem body; never let through unlimited.
- **Unmatched** by any route and no default: passed through untouched.
- **WebSocket** handshakes count as requests of their path: an admitted one gets the headers on
  its ``websocket.accept``; a refused one gets the 429 (or 400) response where the server offers
  the ``websocket.http.response`` extension, else is closed before it is accepted, with code
  1008, which the server answers with ``403``. Other scopes (``lifespan``) pass through.

Several policies on a route are checked in one ``RATELIMIT.MCHECK``, all or nothing: a request
denied by one spends nothing on the others. In a Redis Cluster the keys of one request must then
share a slot: return the subject in braces from the key function (``"{" + subject + "}"``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from typing import Any, Awaitable, Callable, Iterable, List, Mapping, MutableMapping, Optional, Sequence, Tuple, Union

from .decision import Decision, Policy
from .http import PROBLEM_JSON, missing_key_body, quota_exceeded_body, rate_limit_headers

log = logging.getLogger("redis_ratelimit")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: A key function: the subject of a request from its ASGI scope, or ``None`` when it has none.
KeyFunction = Callable[[Scope], Optional[str]]

#: The longest header value :class:`Header` takes as a subject.
MAX_HEADER_KEY_LEN = 256


class KeyExtractor:
    """Names the subject a request counts against. ``a | b`` is ``a``'s subject, else ``b``'s."""

    def __call__(self, scope: Scope) -> Optional[str]:
        raise NotImplementedError

    def __or__(self, other: KeyFunction) -> "FirstOf":
        return FirstOf(self, other)


class FirstOf(KeyExtractor):
    """The first subject that one of ``extractors`` finds."""

    def __init__(self, *extractors: KeyFunction) -> None:
        self.extractors = extractors

    def __call__(self, scope: Scope) -> Optional[str]:
        for extractor in self.extractors:
            subject = extractor(scope)
            if subject is not None:
                return subject
        return None


def _headers(scope: Scope, name: bytes) -> List[bytes]:
    return [value for key, value in scope.get("headers") or () if key.lower() == name]


class Header(KeyExtractor):
    """The value of one request header, prefixed with its name: ``x-api-key:abc``. A value that
    is empty, longer than 256 bytes or not visible ASCII gives no subject; with several lines
    of the header, the first counts. The value is stored in the limiter's keys: prefer an
    identifier to a secret."""

    def __init__(self, name: str) -> None:
        self.name = name.lower()
        self._raw = self.name.encode("latin-1")

    def __call__(self, scope: Scope) -> Optional[str]:
        values = _headers(scope, self._raw)
        if not values:
            return None
        raw = values[0]
        if any(not (0x20 <= b < 0x7F or b == 0x09) for b in raw):
            return None
        value = raw.decode("ascii").strip(" \t")
        if not value or len(value) > MAX_HEADER_KEY_LEN:
            return None
        return f"{self.name}:{value}"


class ClientIp(KeyExtractor):
    """The client's IP address: ``ip:203.0.113.7``, or for IPv6 its /64 network,
    ``ip:2001:db8:1:2::/64``; from the ASGI scope's ``client``.

    Behind a reverse proxy, name the header in which it passes the client's address with
    ``trusted_header`` (``x-forwarded-for``, ``forwarded``, ...): with ``trusted_hops`` proxies
    in a chain, the ``n``-th entry from the end is taken. Without the header, or with an entry
    that is no address, the peer address counts. Set it only when every request comes through
    that proxy.
    """

    def __init__(self, trusted_header: Optional[str] = None, trusted_hops: int = 1, ipv6_prefix: int = 64) -> None:
        if trusted_hops < 1:
            raise ValueError("trusted_hops must be at least 1")
        if not 0 <= ipv6_prefix <= 128:
            raise ValueError("an IPv6 prefix has at most 128 bits")
        self.trusted_header = trusted_header.lower().encode("latin-1") if trusted_header else None
        self.trusted_hops = trusted_hops
        self.ipv6_prefix = ipv6_prefix

    def client_ip(self, scope: Scope) -> Optional[Union[ipaddress.IPv4Address, ipaddress.IPv6Address]]:
        """The client's address: from the trusted header when configured and present, else the
        peer's; IPv4-mapped IPv6 addresses as IPv4."""
        address = None
        if self.trusted_header is not None:
            entries = [entry.strip() for value in _headers(scope, self.trusted_header)
                       for entry in value.decode("latin-1").split(",") if entry.strip()]
            if entries:
                address = parse_entry(entries[max(len(entries) - self.trusted_hops, 0)])
        if address is None:
            client = scope.get("client")
            if client:
                try:
                    address = ipaddress.ip_address(client[0])
                except ValueError:
                    address = None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return address.ipv4_mapped
        return address

    def __call__(self, scope: Scope) -> Optional[str]:
        address = self.client_ip(scope)
        if address is None:
            return None
        if isinstance(address, ipaddress.IPv4Address) or self.ipv6_prefix == 128:
            return f"ip:{address}"
        network = ipaddress.IPv6Network((address, self.ipv6_prefix), strict=False)
        return f"ip:{network.network_address}/{self.ipv6_prefix}"


def parse_entry(entry: str) -> Optional[Union[ipaddress.IPv4Address, ipaddress.IPv6Address]]:
    """One entry of a forwarding header: an address, with or without a port, or an RFC 7239
    element (``for=...;proto=...``)."""
    node: Optional[str] = entry
    if "=" in entry:
        node = None
        for pair in entry.split(";"):
            name, equals, value = pair.partition("=")
            if equals and name.strip().lower() == "for":
                node = value.strip()
                break
        if node is None:
            return None
    node = node.strip('"')
    try:
        if node.startswith("["):
            return ipaddress.ip_address(node[1:].split("]", 1)[0]) if "]" in node else None
        try:
            return ipaddress.ip_address(node)
        except ValueError:
            host, colon, port = node.rpartition(":")
            if colon and port.isdigit():
                return ipaddress.IPv4Address(host)
            return None
    except ValueError:
        return None


class _Routes:
    """Path patterns, exact or a prefix ending with ``*``, in order, and a default."""

    def __init__(self, routes: Union[Mapping[str, Sequence[Policy]], Iterable[Tuple[str, Sequence[Policy]]]],
                 default: Optional[Sequence[Policy]]) -> None:
        items = routes.items() if isinstance(routes, Mapping) else routes
        self.routes: List[Tuple[str, bool, Tuple[Policy, ...]]] = []
        for pattern, policies in items:
            if not pattern.startswith("/"):
                raise ValueError(f"invalid route {pattern!r}: a path pattern starts with '/'")
            prefix = pattern.endswith("*")
            if "*" in (pattern[:-1] if prefix else pattern):
                raise ValueError(f"invalid route {pattern!r}: '*' may only end a pattern")
            self.routes.append((pattern[:-1] if prefix else pattern, prefix, _policies(policies)))
        self.default = None if default is None else _policies(default)

    def find(self, path: str) -> Optional[Tuple[Policy, ...]]:
        for pattern, prefix, policies in self.routes:
            if path.startswith(pattern) if prefix else path == pattern:
                return policies
        return self.default


def _policies(policies: Sequence[Policy]) -> Tuple[Policy, ...]:
    policies = tuple(policies)
    for policy in policies:
        if not isinstance(policy, Policy):
            raise TypeError(f"expected a Policy, not {policy!r}")
        if not all(0x20 <= ord(c) <= 0x7E for c in policy.name):
            raise ValueError(f"invalid policy name {policy.name!r}: expected printable ASCII, not empty")
    if len({p.name for p in policies}) != len(policies) or len(policies) > 16:
        raise ValueError("a route has at most 16 policies, of distinct names")
    return policies


class RateLimitMiddleware:
    """ASGI middleware that rate limits HTTP requests and WebSocket handshakes per route and
    subject.

    :param app: the ASGI application.
    :param store: a :class:`redis_ratelimit.asyncio.RedisStore`, or a blocking
        :class:`redis_ratelimit.RedisStore` (its calls then run in a thread).
    :param key: the key function (default :class:`ClientIp`).
    :param routes: path pattern -> policies, in order of precedence: a pattern matches the path
        exactly, or, ending with ``*``, every path that starts with what precedes it; a route
        with no policies leaves its requests unlimited.
    :param default: the policies of requests that match no route; without it they pass.

    With Starlette or FastAPI: ``app.add_middleware(RateLimitMiddleware, store=store, routes=...)``.
    """

    def __init__(self, app: ASGIApp, store: Any, *, key: KeyFunction = ClientIp(),
                 routes: Union[Mapping[str, Sequence[Policy]], Iterable[Tuple[str, Sequence[Policy]]]] = (),
                 default: Optional[Sequence[Policy]] = None) -> None:
        self.app = app
        self.store = store
        self.key = key
        self.routes = _Routes(routes, default)
        self._blocking = not getattr(store, "_async", False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        policies = self.routes.find(scope.get("path", ""))
        if not policies:
            await self.app(scope, receive, send)
            return
        respond = _respond if scope["type"] == "http" else _WebSocketRefusal(scope, receive)
        subject = self.key(scope)
        if subject is None:
            log.debug("no rate limit key for the request: 400 (path=%s)", scope.get("path"))
            await respond(send, 400, [], missing_key_body())
            return
        decisions = await self._decide(policies, subject)
        now = time.time()
        checked = list(zip(policies, decisions))
        headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in rate_limit_headers(checked, now)]
        if all(decision.allowed for decision in decisions):
            async def send_with_headers(message: Message) -> None:
                if message["type"] in ("http.response.start", "websocket.accept"):
                    message = dict(message)
                    message["headers"] = list(message.get("headers") or ()) + headers
                await send(message)
            await self.app(scope, receive, send_with_headers)
        else:
            await respond(send, 429, headers, quota_exceeded_body(checked))

    async def _decide(self, policies: Sequence[Policy], subject: str) -> Sequence[Decision]:
        engine = self.store._engine
        keys = [f"{policy.name}:{subject}" for policy in policies]
        if len(policies) == 1:
            operation = engine.check(keys[0], policies[0].config, policies[0].cost)
        else:
            operation = engine.check_all(keys, [p.config for p in policies], [p.cost for p in policies])
        if self._blocking:
            result = await asyncio.get_running_loop().run_in_executor(None, self.store._run, operation)
        else:
            result = await self.store._run(operation)
        return [result] if len(policies) == 1 else list(result.decisions)


async def _respond(send: Send, status: int, headers: List[Tuple[bytes, bytes]], body: bytes) -> None:
    headers = headers + [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _WebSocketRefusal:
    """Refuses a WebSocket handshake: with the HTTP response an HTTP request would get (status,
    headers and body) where the server offers the ``websocket.http.response`` extension, else
    by closing it before accepting, with code 1008 (policy violation), which the server answers
    with ``403 Forbidden``."""

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self.receive = receive

    async def __call__(self, send: Send, status: int, headers: List[Tuple[bytes, bytes]], body: bytes) -> None:
        message = await self.receive()
        if message.get("type") != "websocket.connect":
            return
        if "websocket.http.response" in (self.scope.get("extensions") or {}):
            headers = headers + [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())]
            await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008, "reason": "rate limited" if status == 429 else "no rate limit key"})


__all__ = ["RateLimitMiddleware", "KeyExtractor", "ClientIp", "Header", "FirstOf", "parse_entry", "MAX_HEADER_KEY_LEN"]
