//! The response headers and the 429 body, as pure functions of the decisions.
//!
//! The fields `RateLimit-Policy` and `RateLimit` follow draft-ietf-httpapi-ratelimit-headers-11
//! (sections 3 and 4): structured-field lists (RFC 9651) of items named by the policy, with the
//! parameters `q` (quota) and `w` (window, seconds) for a policy, `r` (available quota) and `t`
//! (effective window, seconds) for its current service limit. The 429 body is the draft's
//! `quota-exceeded` problem type (section 5.1), an RFC 9457 problem document.

use super::route::Policy;
use crate::decision::Decision;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::HeaderMap;
use std::cmp::Reverse;
use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `X-RateLimit-Limit`: the capacity of the most restrictive policy.
pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining`: its units left.
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset`: when it is back to full capacity, in Unix seconds, rounded up.
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
/// `RateLimit-Policy`: every policy of the route, `"name";q=<quota>;w=<window seconds>`.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`: the service limits, `"name";r=<available>;t=<seconds>`.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// `X-RateLimit-Shadow`: in shadow mode, the policies that would have denied the request, as
/// a list of strings: `"search", "upload"`.
pub const X_RATELIMIT_SHADOW: HeaderName = HeaderName::from_static("x-ratelimit-shadow");

/// The `type` of the 429 body.
pub const QUOTA_EXCEEDED: &str = "https://iana.org/assignments/http-problem-types#quota-exceeded";
/// The media type of the 429 body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One policy's decision, as the response reports it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Checked<'a> {
    pub(crate) policy: &'a Policy,
    pub(crate) decision: Decision,
}

/// `duration` in whole seconds, rounded up: a client that waits that long waits long enough.
pub(crate) fn ceil_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// Sets the headers of an admitted request: `RateLimit` lists every policy, and the
/// `X-RateLimit-*` headers show the one with the fewest units left (on a tie, the one that
/// takes longest to reset).
pub(crate) fn allowed(checked: &[Checked<'_>], now: SystemTime, headers: &mut HeaderMap) {
    let Some(tightest) = checked
        .iter()
        .min_by_key(|c| (c.decision.remaining, Reverse(c.decision.reset_after)))
    else {
        return;
    };
    set_x_headers(&tightest.decision, now, headers);
    append(headers, RATELIMIT_POLICY, policy_field(checked));
    let limits = checked.iter().map(|c| {
        let t = ceil_seconds(c.decision.reset_after);
        (c.policy.name(), c.decision.remaining, Some(t))
    });
    append(headers, RATELIMIT, limit_field(limits));
}

/// The headers and the body of a 429. Only the policies that denied the request are reported
/// in `RateLimit` and the body's `violated-policies`, with `t` the time until each admits it
/// again; `X-RateLimit-*` show the one that makes the client wait longest. `Retry-After` is
/// that wait in whole seconds, rounded up, and absent when some policy can never admit the
/// request (its cost exceeds the capacity). `RateLimit-Policy` lists every policy of the route.
pub(crate) fn denied(checked: &[Checked<'_>], now: SystemTime) -> (HeaderMap, Bytes) {
    let violated: Vec<&Checked<'_>> = checked
        .iter()
        .filter(|c| !c.decision.is_admitted())
        .collect();
    // `None` (never) waits longest.
    let wait = |c: &&Checked<'_>| c.decision.retry_after().map_or(u64::MAX, ceil_seconds);
    let mut headers = HeaderMap::new();
    let Some(tightest) = violated.iter().copied().max_by_key(wait) else {
        return (headers, Bytes::new());
    };
    let retry_after = tightest.decision.retry_after().map(ceil_seconds);
    if let Some(seconds) = retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    set_x_headers(&tightest.decision, now, &mut headers);
    append(&mut headers, RATELIMIT_POLICY, policy_field(checked));
    let limits = violated.iter().map(|c| {
        let t = c.decision.retry_after().map(ceil_seconds);
        (c.policy.name(), c.decision.remaining, t)
    });
    append(&mut headers, RATELIMIT, limit_field(limits));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    let names: Vec<&str> = violated.iter().map(|c| c.policy.name()).collect();
    (headers, Bytes::from(problem_body(&names, retry_after)))
}

/// In shadow mode, names the policies that would have denied the request.
pub(crate) fn shadow_denied(violated: &[&Checked<'_>], headers: &mut HeaderMap) {
    let names = violated.iter().map(|c| sf_string(c.policy.name()));
    append(
        headers,
        X_RATELIMIT_SHADOW,
        names.collect::<Vec<_>>().join(", "),
    );
}

/// The headers and the body of the 500 for a request that the limiter could not decide.
pub(crate) fn limiter_failed() -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    let body = "{\"type\":\"about:blank\",\"title\":\"Internal Server Error\",\"status\":500,\
                \"detail\":\"The rate limiter could not decide on the request.\"}";
    (headers, Bytes::from_static(body.as_bytes()))
}

/// The headers and the body of the 400 for a request without a subject.
pub(crate) fn missing_key() -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    let body = "{\"type\":\"about:blank\",\"title\":\"Bad Request\",\"status\":400,\
                \"detail\":\"The request does not say who sends it, so it cannot be rate limited.\"}";
    (headers, Bytes::from_static(body.as_bytes()))
}

fn set_x_headers(decision: &Decision, now: SystemTime, headers: &mut HeaderMap) {
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let reset_at = ceil_seconds(now.saturating_add(decision.reset_after));
    headers.insert(X_RATELIMIT_LIMIT, HeaderValue::from(decision.limit));
    headers.insert(X_RATELIMIT_REMAINING, HeaderValue::from(decision.remaining));
    headers.insert(X_RATELIMIT_RESET, HeaderValue::from(reset_at));
}

/// Appends rather than replaces: these fields are lists, and another layer may have set its own.
fn append(headers: &mut HeaderMap, name: HeaderName, value: String) {
    if value.is_empty() {
        return;
    }
    // Policy names are printable ASCII (checked by `Policy::new`), numbers are digits.
    let value = HeaderValue::try_from(value).expect("a valid header value");
    headers.append(name, value);
}

/// `"search";q=5;w=10, "daily";q=1000;w=86400`. The window is the period in whole seconds,
/// rounded up (the draft has no sub-second windows); for GCRA, `q` per `w` is its rate.
pub(crate) fn policy_field(checked: &[Checked<'_>]) -> String {
    let mut field = String::new();
    for (i, c) in checked.iter().enumerate() {
        let limit = c.policy.limit();
        let window = ceil_seconds(limit.period()).max(1);
        let separator = if i == 0 { "" } else { ", " };
        let name = sf_string(c.policy.name());
        let _ = write!(field, "{separator}{name};q={};w={window}", limit.limit());
    }
    field
}

/// `"search";r=4;t=10, ...`; an item without `t` when it is `None`.
pub(crate) fn limit_field<'a>(limits: impl Iterator<Item = (&'a str, u64, Option<u64>)>) -> String {
    let mut field = String::new();
    for (i, (name, remaining, t)) in limits.enumerate() {
        let separator = if i == 0 { "" } else { ", " };
        let _ = write!(field, "{separator}{};r={remaining}", sf_string(name));
        if let Some(t) = t {
            let _ = write!(field, ";t={t}");
        }
    }
    field
}

/// A structured-field String: quoted, with `"` and `\` escaped. The text is printable ASCII.
pub(crate) fn sf_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for ch in text.chars() {
        if ch == '"' || ch == '\\' {
            quoted.push('\\');
        }
        quoted.push(ch);
    }
    quoted.push('"');
    quoted
}

/// The `quota-exceeded` problem document for the `violated` policies.
pub(crate) fn problem_body(violated: &[&str], retry_after: Option<u64>) -> String {
    let quoted: Vec<String> = violated.iter().map(|name| json_string(name)).collect();
    let list = quoted.join(",");
    let detail = match retry_after {
        Some(seconds) => format!(
            "The quota of {} is exceeded: retry in {seconds} s.",
            policy_names(violated)
        ),
        None => format!(
            "The request can never be admitted: it costs more than {} allows.",
            policy_names(violated)
        ),
    };
    format!(
        "{{\"type\":{},\"title\":\"Quota Exceeded\",\"status\":429,\"detail\":{},\
         \"violated-policies\":[{list}]}}",
        json_string(QUOTA_EXCEEDED),
        json_string(&detail),
    )
}

/// `policy "a"`, or `policies "a", "b"`.
fn policy_names(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|name| format!("\"{name}\"")).collect();
    match names.len() {
        1 => format!("policy {}", quoted[0]),
        _ => format!("policies {}", quoted.join(", ")),
    }
}

/// A JSON string literal.
pub(crate) fn json_string(text: &str) -> String {
    let mut json = String::with_capacity(text.len() + 2);
    json.push('"');
    for ch in text.chars() {
        match ch {
            '"' => json.push_str("\\\""),
            '\\' => json.push_str("\\\\"),
            ch if u32::from(ch) < 0x20 => {
                let _ = write!(json, "\\u{:04x}", u32::from(ch));
            }
            ch => json.push(ch),
        }
    }
    json.push('"');
    json
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{Backend, Outcome};
    use crate::limit::Limit;

    fn decision(
        allowed: bool,
        limit: u64,
        remaining: u64,
        reset_ms: u64,
        retry_ms: i64,
    ) -> Decision {
        Decision {
            outcome: Outcome::from_reply(allowed, retry_ms),
            limit,
            remaining,
            reset_after: Duration::from_millis(reset_ms),
            backend: Backend::Module,
            enforced: true,
        }
    }

    fn limit(limit: u64, period: Duration) -> Limit {
        Limit::fixed(limit, period).unwrap()
    }

    fn text(headers: &HeaderMap, name: &str) -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|value| value.to_str().unwrap().to_string())
            .collect()
    }

    /// 1,000,000,000.2 s after the epoch.
    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_000_000_000_200)
    }

    #[test]
    fn rounds_seconds_up() {
        assert_eq!(ceil_seconds(Duration::ZERO), 0);
        assert_eq!(ceil_seconds(Duration::from_nanos(1)), 1);
        assert_eq!(ceil_seconds(Duration::from_millis(1000)), 1);
        assert_eq!(ceil_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(ceil_seconds(Duration::from_millis(7500)), 8);
    }

    #[test]
    fn formats_structured_field_lists() {
        let search = Policy::new("search", limit(5, Duration::from_secs(10)));
        let burst = Policy::new("up\"load\\", limit(2, Duration::from_millis(1500))).cost(2);
        let gcra = Policy::new(
            "g",
            Limit::gcra(10, Duration::from_millis(100))
                .and_then(|limit| limit.with_burst(3))
                .unwrap(),
        );
        let checked: Vec<Checked<'_>> = [&search, &burst, &gcra]
            .into_iter()
            .map(|policy| Checked {
                policy,
                decision: decision(true, 1, 1, 0, 0),
            })
            .collect();
        assert_eq!(
            policy_field(&checked),
            r#""search";q=5;w=10, "up\"load\\";q=2;w=2, "g";q=10;w=1"#
        );
        let limits = [("search", 4, Some(10)), ("never", 0, None)];
        assert_eq!(
            limit_field(limits.into_iter()),
            r#""search";r=4;t=10, "never";r=0"#
        );
    }

    #[test]
    fn reports_the_policy_with_the_fewest_units_left() {
        let minute = Policy::new("minute", limit(10, Duration::from_secs(60)));
        let hour = Policy::new("hour", limit(100, Duration::from_secs(3600)));
        let checked = [
            Checked {
                policy: &minute,
                decision: decision(true, 10, 7, 59_500, 0),
            },
            Checked {
                policy: &hour,
                decision: decision(true, 100, 3, 3_599_001, 0),
            },
        ];
        let mut headers = HeaderMap::new();
        allowed(&checked, now(), &mut headers);
        assert_eq!(text(&headers, "x-ratelimit-limit"), ["100"]);
        assert_eq!(text(&headers, "x-ratelimit-remaining"), ["3"]);
        // 1,000,000,000.2 + 3599.001, rounded up.
        assert_eq!(text(&headers, "x-ratelimit-reset"), ["1000003600"]);
        assert_eq!(
            text(&headers, "ratelimit-policy"),
            [r#""minute";q=10;w=60, "hour";q=100;w=3600"#]
        );
        assert_eq!(
            text(&headers, "ratelimit"),
            [r#""minute";r=7;t=60, "hour";r=3;t=3600"#]
        );
        assert!(headers.get("retry-after").is_none());

        // On a tie, the one that resets last.
        let checked = [
            Checked {
                policy: &minute,
                decision: decision(true, 10, 3, 59_500, 0),
            },
            Checked {
                policy: &hour,
                decision: decision(true, 100, 3, 3_599_001, 0),
            },
        ];
        let mut headers = HeaderMap::new();
        allowed(&checked, now(), &mut headers);
        assert_eq!(text(&headers, "x-ratelimit-limit"), ["100"]);
    }

    #[test]
    fn a_denial_reports_the_longest_wait() {
        let a = Policy::new("a", limit(5, Duration::from_secs(10)));
        let b = Policy::new("b", limit(2, Duration::from_secs(60)));
        let c = Policy::new("c", limit(9, Duration::from_secs(60)));
        let checked = [
            Checked {
                policy: &a,
                decision: decision(false, 5, 0, 7_200, 7_200),
            },
            Checked {
                policy: &b,
                decision: decision(false, 2, 0, 60_000, 29_001),
            },
            Checked {
                policy: &c,
                decision: decision(true, 9, 8, 1_000, 0),
            },
        ];
        let (headers, body) = denied(&checked, now());
        assert_eq!(text(&headers, "retry-after"), ["30"]);
        assert_eq!(text(&headers, "content-type"), ["application/problem+json"]);
        assert_eq!(text(&headers, "x-ratelimit-limit"), ["2"]);
        assert_eq!(text(&headers, "x-ratelimit-remaining"), ["0"]);
        assert_eq!(text(&headers, "x-ratelimit-reset"), ["1000000061"]);
        assert_eq!(
            text(&headers, "ratelimit-policy"),
            [r#""a";q=5;w=10, "b";q=2;w=60, "c";q=9;w=60"#]
        );
        assert_eq!(
            text(&headers, "ratelimit"),
            [r#""a";r=0;t=8, "b";r=0;t=30"#]
        );
        assert_eq!(
            body,
            "{\"type\":\"https://iana.org/assignments/http-problem-types#quota-exceeded\",\
             \"title\":\"Quota Exceeded\",\"status\":429,\
             \"detail\":\"The quota of policies \\\"a\\\", \\\"b\\\" is exceeded: retry in 30 s.\",\
             \"violated-policies\":[\"a\",\"b\"]}"
        );
    }

    #[test]
    fn a_request_that_never_fits_has_no_retry_after() {
        let a = Policy::new("a", limit(5, Duration::from_secs(10))).cost(6);
        let checked = [Checked {
            policy: &a,
            decision: decision(false, 5, 5, 0, -1),
        }];
        let (headers, body) = denied(&checked, now());
        assert!(headers.get("retry-after").is_none());
        assert_eq!(text(&headers, "ratelimit"), [r#""a";r=5"#]);
        assert_eq!(text(&headers, "x-ratelimit-remaining"), ["5"]);
        assert!(std::str::from_utf8(&body)
            .unwrap()
            .contains("\"detail\":\"The request can never be admitted: it costs more than policy \\\"a\\\" allows.\""));
    }

    #[test]
    fn a_shadow_denial_names_the_policies() {
        let a = Policy::new("a", limit(5, Duration::from_secs(10)));
        let b = Policy::new("b", limit(5, Duration::from_secs(10)));
        let checked = [
            Checked {
                policy: &a,
                decision: decision(false, 5, 0, 7_200, 7_200),
            },
            Checked {
                policy: &b,
                decision: decision(false, 5, 0, 7_200, -1),
            },
        ];
        let mut headers = HeaderMap::new();
        shadow_denied(&[&checked[0], &checked[1]], &mut headers);
        assert_eq!(text(&headers, "x-ratelimit-shadow"), [r#""a", "b""#]);
        let mut headers = HeaderMap::new();
        shadow_denied(&[], &mut headers);
        assert!(headers.is_empty());
    }

    #[test]
    fn escapes_json() {
        assert_eq!(json_string("a\"b\\c\n"), r#""a\"b\\c\u000a""#);
    }
}
