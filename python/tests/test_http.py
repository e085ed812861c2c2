"""The headers and the 429 body, with the cases of the Rust tower layer's own tests
(``client/src/tower/headers.rs``): the same strings, byte for byte."""

from __future__ import annotations

from redis_ratelimit import Decision, Policy, quota_exceeded_body, rate_limit_headers
from redis_ratelimit.http import ceil_seconds, json_string, limit_field, policy_field

# 1,000,000,000.2 s after the epoch.
NOW = 1_000_000_000.2


def decision(allowed: bool, limit: int, remaining: int, reset_ms: int, retry_ms: int) -> Decision:
    return Decision(allowed, limit, remaining, reset_ms, retry_ms, "module")


def test_rounds_seconds_up() -> None:
    assert [ceil_seconds(ms) for ms in (0, 1, 1000, 1001, 7500)] == [0, 1, 1, 2, 8]


def test_formats_structured_field_lists() -> None:
    checked = [(Policy("search", 5, 10), None), (Policy('up"load\\', 2, "1500ms", cost=2), None),
               (Policy("g", 10, "100ms", algorithm="GCRA", burst=3), None)]
    assert policy_field(checked) == r'"search";q=5;w=10, "up\"load\\";q=2;w=2, "g";q=10;w=1'
    assert limit_field([("search", 4, 10), ("never", 0, None)]) == r'"search";r=4;t=10, "never";r=0'


def test_reports_the_policy_with_the_fewest_units_left() -> None:
    minute, hour = Policy("minute", 10, 60), Policy("hour", 100, 3600)
    headers = rate_limit_headers([(minute, decision(True, 10, 7, 59_500, 0)), (hour, decision(True, 100, 3, 3_599_001, 0))], NOW)
    assert headers == [
        ("x-ratelimit-limit", "100"),
        ("x-ratelimit-remaining", "3"),
        # 1,000,000,000.2 + 3599.001, rounded up.
        ("x-ratelimit-reset", "1000003600"),
        ("ratelimit-policy", '"minute";q=10;w=60, "hour";q=100;w=3600'),
        ("ratelimit", '"minute";r=7;t=60, "hour";r=3;t=3600'),
    ]
    # On a tie, the one that resets last.
    tie = rate_limit_headers([(minute, decision(True, 10, 3, 59_500, 0)), (hour, decision(True, 100, 3, 3_599_001, 0))], NOW)
    assert dict(tie)["x-ratelimit-limit"] == "100"


def test_a_denial_reports_the_longest_wait() -> None:
    a, b, c = Policy("a", 5, 10), Policy("b", 2, 60), Policy("c", 9, 60)
    checked = [(a, decision(False, 5, 0, 7_200, 7_200)), (b, decision(False, 2, 0, 60_000, 29_001)),
               (c, decision(True, 9, 8, 1_000, 0))]
    assert rate_limit_headers(checked, NOW) == [
        ("retry-after", "30"),
        ("x-ratelimit-limit", "2"),
        ("x-ratelimit-remaining", "0"),
        ("x-ratelimit-reset", "1000000061"),
        ("ratelimit-policy", '"a";q=5;w=10, "b";q=2;w=60, "c";q=9;w=60'),
        ("ratelimit", '"a";r=0;t=8, "b";r=0;t=30'),
    ]
    assert quota_exceeded_body(checked) == (
        b'{"type":"https://iana.org/assignments/http-problem-types#quota-exceeded",'
        b'"title":"Quota Exceeded","status":429,'
        b'"detail":"The quota of policies \\"a\\", \\"b\\" is exceeded: retry in 30 s.",'
        b'"violated-policies":["a","b"]}'
    )


def test_a_request_that_never_fits_has_no_retry_after() -> None:
    a = Policy("a", 5, 10, cost=6)
    checked = [(a, decision(False, 5, 5, 0, -1))]
    headers = dict(rate_limit_headers(checked, NOW))
    assert "retry-after" not in headers
    assert headers["ratelimit"] == '"a";r=5' and headers["x-ratelimit-remaining"] == "5"
    assert b'"detail":"The request can never be admitted: it costs more than policy \\"a\\" allows."' in quota_exceeded_body(checked)


def test_escapes_json() -> None:
    assert json_string('a"b\\c\n') == r'"a\"b\\c\u000a"'
