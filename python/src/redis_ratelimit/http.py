"""The HTTP response headers and the 429 body, as pure functions of the decisions: byte for byte
those of the Rust tower layer (``client/src/tower/headers.rs``).

``RateLimit-Policy`` and ``RateLimit`` follow draft-ietf-httpapi-ratelimit-headers-11: lists of
items named by the policy, with ``q`` (quota) and ``w`` (window, seconds) for a policy, ``r``
(available) and ``t`` (seconds) for its current limit. The 429 body is the draft's
``quota-exceeded`` problem type, an RFC 9457 problem document.

============================  =========  ===================================================
header                        on         value
============================  =========  ===================================================
``X-RateLimit-Limit``         200, 429   the capacity of the reported policy
``X-RateLimit-Remaining``     200, 429   its units left
``X-RateLimit-Reset``         200, 429   when it is back to full capacity, Unix seconds, up
``RateLimit-Policy``          200, 429   every policy: ``"search";q=5;w=10``
``RateLimit``                 200        every policy: ``"search";r=4;t=10`` (t: to full)
``RateLimit``                 429        the violated ones: ``"search";r=0;t=8`` (t: to retry)
``Retry-After``               429        seconds until every violated policy admits it, up;
                                         absent when one never can
============================  =========  ===================================================

The reported policy is, on a 200, the one with the fewest units left (on a tie, the one that
takes longest to reset), and on a 429 the violated one that makes the client wait longest.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from .decision import Decision, Policy, quota_of

#: The ``type`` of the 429 body.
QUOTA_EXCEEDED = "https://iana.org/assignments/http-problem-types#quota-exceeded"
#: The media type of the 429 body.
PROBLEM_JSON = "application/problem+json"

#: One policy and its decision, as the headers report them.
Checked = Tuple[Policy, Decision]
#: Header name and value pairs, names in lower case (as ASGI and HTTP/2 write them).
Headers = List[Tuple[str, str]]

_MISSING_KEY_BODY = (b'{"type":"about:blank","title":"Bad Request","status":400,'
                     b'"detail":"The request does not say who sends it, so it cannot be rate limited."}')


def ceil_seconds(ms: int) -> int:
    """Milliseconds in whole seconds, rounded up: a client that waits that long waits long enough."""
    return -(-ms // 1000)


def rate_limit_headers(checked: Sequence[Checked], now: Optional[float] = None) -> Headers:
    """The response headers for a request decided under ``checked``, the route's ``(policy,
    decision)`` pairs: those of an admitted request when every decision admits it, of a 429
    otherwise (including ``Retry-After``, without the body's ``content-type``). ``now`` is the
    time in Unix seconds for ``X-RateLimit-Reset`` (default: the clock)."""
    if all(decision.allowed for _, decision in checked):
        return _allowed(checked, now)
    return _denied(checked, now)


def _allowed(checked: Sequence[Checked], now: Optional[float]) -> Headers:
    if not checked:
        return []
    # The first of the fewest remaining, and on a tie the longest reset.
    tightest = min(checked, key=lambda c: (c[1].remaining, -c[1].reset_after_ms))
    headers = _x_headers(tightest[1], now)
    headers.append(("ratelimit-policy", policy_field(checked)))
    limits = [(policy.name, decision.remaining, ceil_seconds(decision.reset_after_ms)) for policy, decision in checked]
    headers.append(("ratelimit", limit_field(limits)))
    return headers


def _denied(checked: Sequence[Checked], now: Optional[float]) -> Headers:
    violated = [c for c in checked if not c[1].allowed]
    # The last of the longest waits, as Rust's max_by_key picks it.
    tightest = max(reversed(violated), key=lambda c: 1 << 64 if c[1].never else ceil_seconds(c[1].retry_after_ms))
    headers: Headers = []
    if not tightest[1].never:
        headers.append(("retry-after", str(ceil_seconds(tightest[1].retry_after_ms))))
    headers += _x_headers(tightest[1], now)
    headers.append(("ratelimit-policy", policy_field(checked)))
    limits = [(policy.name, decision.remaining, None if decision.never else ceil_seconds(decision.retry_after_ms))
              for policy, decision in violated]
    headers.append(("ratelimit", limit_field(limits)))
    return headers


def quota_exceeded_body(checked: Sequence[Checked]) -> bytes:
    """The 429 body for a request denied under ``checked``: the ``quota-exceeded`` problem
    document naming the violated policies, served as :data:`PROBLEM_JSON`."""
    violated = [c for c in checked if not c[1].allowed]
    tightest = max(reversed(violated), key=lambda c: 1 << 64 if c[1].never else ceil_seconds(c[1].retry_after_ms))
    retry_after = None if tightest[1].never else ceil_seconds(tightest[1].retry_after_ms)
    return problem_body([policy.name for policy, _ in violated], retry_after).encode()


def missing_key_body() -> bytes:
    """The 400 body for a request without a subject, served as :data:`PROBLEM_JSON`."""
    return _MISSING_KEY_BODY


def _x_headers(decision: Decision, now: Optional[float]) -> Headers:
    quota = quota_of(decision, now)
    return [
        ("x-ratelimit-limit", str(quota["total"])),
        ("x-ratelimit-remaining", str(quota["remaining"])),
        ("x-ratelimit-reset", str(quota["reset_at"])),
    ]


def policy_field(checked: Sequence[Checked]) -> str:
    """``"search";q=5;w=10, "daily";q=1000;w=86400``: the window is the period in whole seconds,
    rounded up, at least 1; for GCRA, ``q`` per ``w`` is its rate."""
    return ", ".join(f"{sf_string(p.name)};q={p.limit};w={max(ceil_seconds(p.period_ms), 1)}" for p, _ in checked)


def limit_field(limits: Sequence[Tuple[str, int, Optional[int]]]) -> str:
    """``"search";r=4;t=10, ...``; an item without ``t`` when it is ``None``."""
    return ", ".join(f"{sf_string(name)};r={remaining}" + ("" if t is None else f";t={t}") for name, remaining, t in limits)


def sf_string(text: str) -> str:
    """A structured-field String: quoted, with ``"`` and ``\\`` escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def problem_body(violated: Sequence[str], retry_after: Optional[int]) -> str:
    """The ``quota-exceeded`` problem document for the ``violated`` policies."""
    names = ", ".join(f'"{name}"' for name in violated)
    names = f"policy {names}" if len(violated) == 1 else f"policies {names}"
    if retry_after is None:
        detail = f"The request can never be admitted: it costs more than {names} allows."
    else:
        detail = f"The quota of {names} is exceeded: retry in {retry_after} s."
    listed = ",".join(json_string(name) for name in violated)
    return (f'{{"type":{json_string(QUOTA_EXCEEDED)},"title":"Quota Exceeded","status":429,'
            f'"detail":{json_string(detail)},"violated-policies":[{listed}]}}')


def json_string(text: str) -> str:
    """A JSON string literal, escaped as the Rust layer escapes it."""
    out = ['"']
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)
