//! The `api` example, run as a user would: a real `redis-server` with the module, the example's
//! binary on a free port, and a plain HTTP/1.1 client over a real socket, which gets 200s and
//! then a 429 with the rate limit headers.

mod common;

use common::http::Running;
use common::{closed_port, Server};
use std::time::{SystemTime, UNIX_EPOCH};

/// The `api` example against `redis_url`, with `args`. `cargo test --features tower` builds it
/// along with the tests; when it is missing or older than the sources, it is built with
/// `cargo build --example api --features tower`.
struct Api;

impl Api {
    fn start(redis_url: &str) -> Running {
        Api::start_with(redis_url, &[])
    }

    fn start_with(redis_url: &str, args: &[&str]) -> Running {
        let binary = common::example("api", &["tower"]);
        Running::start(binary, redis_url, |command, port| {
            command.args(["--port", &port.to_string()]).args(args);
        })
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `"name";r=<remaining>;t=<seconds>` read back: `(name, remaining, seconds)`.
fn service_limit(item: &str) -> (String, u64, u64) {
    let mut parts = item.split(';');
    let name = parts.next().unwrap().trim_matches('"').to_string();
    let mut param = |prefix: &str| -> u64 {
        parts
            .next()
            .and_then(|p| p.strip_prefix(prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in {item}"))
    };
    let r = param("r=");
    let t = param("t=");
    (name, r, t)
}

#[tokio::test]
async fn search_answers_200_then_429_with_the_headers() {
    let server = Server::start(true);
    let api = Api::start(&server.url());
    for remaining in (0..5).rev() {
        let before = unix_now();
        let reply = api.get("/search?q=redis", &[]);
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.body, "{\"results\":[]}\n");
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(reply.number("x-ratelimit-limit"), 5);
        assert_eq!(reply.number("x-ratelimit-remaining"), remaining);
        // SLIDING is back to full capacity when the window after the current one ends.
        let reset = reply.number("x-ratelimit-reset");
        assert!((before..=unix_now() + 21).contains(&reset), "{reply:?}");
        assert_eq!(
            reply.header("ratelimit-policy"),
            Some("\"search\";q=5;w=10")
        );
        let (name, r, t) = service_limit(reply.header("ratelimit").unwrap());
        assert_eq!((name.as_str(), r), ("search", remaining));
        assert!((1..=20).contains(&t), "{reply:?}");
        assert_eq!(reply.header("retry-after"), None);
    }

    let reply = api.get("/search?q=redis", &[]);
    assert_eq!(reply.status, 429, "{reply:?}");
    // SLIDING's wait can run into the next window: up to two periods.
    let wait = reply.number("retry-after");
    assert!((1..=20).contains(&wait), "{reply:?}");
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(reply.number("x-ratelimit-limit"), 5);
    assert_eq!(reply.number("x-ratelimit-remaining"), 0);
    assert!(reply.number("x-ratelimit-reset") >= unix_now());
    assert_eq!(
        reply.header("ratelimit-policy"),
        Some("\"search\";q=5;w=10")
    );
    assert_eq!(
        reply.header("ratelimit").unwrap(),
        format!("\"search\";r=0;t={wait}")
    );
    assert_eq!(
        reply.body,
        format!(
            "{{\"type\":\"https://iana.org/assignments/http-problem-types#quota-exceeded\",\
             \"title\":\"Quota Exceeded\",\"status\":429,\
             \"detail\":\"The quota of policy \\\"search\\\" is exceeded: retry in {wait} s.\",\
             \"violated-policies\":[\"search\"]}}"
        )
    );

    // The limit is in Redis, kept by the module, under the default prefix.
    let mut con = server.con().await;
    let state: String = redis::cmd("GET")
        .arg("ratelimit:search:ip:127.0.0.1")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(state.starts_with("s:"), "{state}");
}

#[tokio::test]
async fn upload_checks_two_policies() {
    let server = Server::start(true);
    let api = Api::start(&server.url());
    for remaining in [1, 0] {
        let reply = api.post("/upload", &[]);
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.body, "{\"uploaded\":true}\n");
        assert_eq!(
            reply.header("ratelimit-policy"),
            Some("\"upload\";q=2;w=60, \"upload-hourly\";q=10;w=3600")
        );
        assert_eq!(reply.number("x-ratelimit-limit"), 2);
        assert_eq!(reply.number("x-ratelimit-remaining"), remaining);
    }
    let reply = api.post("/upload", &[]);
    assert_eq!(reply.status, 429, "{reply:?}");
    // Two per minute, a burst of 2: the next unit drips back 30 s after the first.
    let wait = reply.number("retry-after");
    assert!((29..=30).contains(&wait), "{reply:?}");
    assert_eq!(
        reply.header("ratelimit").unwrap(),
        format!("\"upload\";r=0;t={wait}")
    );
    assert!(reply.body.ends_with("\"violated-policies\":[\"upload\"]}"));
    // The denied upload spent nothing on the hourly policy: 2 of 10 are spent.
    let mut con = server.con().await;
    let hourly: u64 = redis::cmd("GET")
        .arg("ratelimit:upload-hourly:ip:127.0.0.1")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(hourly, 2);
    // Another route has its own limits.
    assert_eq!(api.get("/search", &[]).status, 200);
}

/// The metered endpoint: each request reserves 500 tokens, and the handler's usage is settled
/// before the response leaves: the headers and the key show what was really used.
#[tokio::test]
async fn generate_settles_the_tokens_it_used() {
    let server = Server::start(true);
    let api = Api::start(&server.url());
    let mut con = server.con().await;
    let mut used = 0;
    for (tokens, fits) in [(120, true), (900, true), (1500, true), (10, false)] {
        let reply = api.post(&format!("/generate?tokens={tokens}"), &[]);
        if !fits {
            // 2520 of 2000 used: in debt until the minute ends.
            assert_eq!(reply.status, 429, "{reply:?}");
            assert!(reply.body.ends_with("\"violated-policies\":[\"tokens\"]}"));
            break;
        }
        used += tokens;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(
            reply.body,
            format!("{{\"generated\":{tokens},\"reserved\":500}}\n")
        );
        assert_eq!(
            reply.header("ratelimit-policy"),
            Some("\"generate\";q=10;w=60, \"tokens\";q=2000;w=60")
        );
        let left = 2000u64.saturating_sub(used);
        assert!(
            reply
                .header("ratelimit")
                .unwrap()
                .contains(&format!("\"tokens\";r={left};")),
            "{reply:?}"
        );
        let count: u64 = redis::cmd("GET")
            .arg("ratelimit:tokens:ip:127.0.0.1")
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(count, used);
    }
}

/// The address is limited always, and an API key as well: a client that invents a new key
/// for each request still meets its address's limit.
#[tokio::test]
async fn an_api_key_is_limited_as_well_as_the_address() {
    let server = Server::start(true);
    let api = Api::start(&server.url());
    for remaining in [2, 1, 0] {
        let reply = api.get("/search", &[("X-Api-Key", "team-a")]);
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(
            reply.header("ratelimit-policy"),
            Some("\"search\";q=5;w=10, \"search-key\";q=3;w=10")
        );
        assert_eq!(reply.number("x-ratelimit-remaining"), remaining);
    }
    let reply = api.get("/search", &[("X-Api-Key", "team-a")]);
    assert_eq!(reply.status, 429, "{reply:?}");
    assert!(reply
        .body
        .ends_with("\"violated-policies\":[\"search-key\"]}"));
    // The denied request spent nothing on the address: 2 of its 5 are left.
    let reply = api.get("/search", &[]);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.number("x-ratelimit-remaining"), 1);
    assert_eq!(
        reply.header("ratelimit-policy"),
        Some("\"search\";q=5;w=10")
    );
    // A new key each time does not escape the address's limit.
    assert_eq!(
        api.get("/search", &[("X-Api-Key", "invented-1")]).status,
        200
    );
    let reply = api.get("/search", &[("X-Api-Key", "invented-2")]);
    assert_eq!(reply.status, 429, "{reply:?}");
    assert!(reply.body.ends_with("\"violated-policies\":[\"search\"]}"));
}

/// A route names its methods: a `GET` on the `POST` route is not counted against the upload
/// policies (axum answers it 405), only against the default one.
#[tokio::test]
async fn a_request_the_route_does_not_serve_spends_nothing_of_its_quota() {
    let server = Server::start(true);
    let api = Api::start(&server.url());
    for remaining in [59, 58, 57] {
        let reply = api.get("/upload", &[]);
        assert_eq!(reply.status, 405, "{reply:?}");
        assert_eq!(
            reply.header("ratelimit-policy"),
            Some("\"other\";q=60;w=60")
        );
        assert_eq!(reply.number("x-ratelimit-remaining"), remaining);
    }
    let reply = api.post("/upload", &[]);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.number("x-ratelimit-remaining"), 1);
    // Any other path has the default policy too.
    let reply = api.get("/nowhere", &[]);
    assert_eq!(reply.status, 404, "{reply:?}");
    assert_eq!(reply.number("x-ratelimit-remaining"), 56);
}

/// In shadow mode nothing is refused: a request over the limit is served, and says which
/// policy it exceeded.
#[tokio::test]
async fn shadow_mode_serves_and_reports() {
    let server = Server::start(true);
    let api = Api::start_with(&server.url(), &["--shadow"]);
    for _ in 0..5 {
        let reply = api.get("/search", &[]);
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.header("x-ratelimit-shadow"), None);
    }
    for _ in 0..2 {
        let reply = api.get("/search", &[]);
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.body, "{\"results\":[]}\n");
        assert_eq!(reply.header("x-ratelimit-shadow"), Some("\"search\""));
        assert_eq!(reply.number("x-ratelimit-remaining"), 0);
        assert_eq!(reply.header("retry-after"), None);
    }
    // Counted as when enforcing: the five admitted requests, not the two over the limit.
    let mut con = server.con().await;
    let state: String = redis::cmd("GET")
        .arg("ratelimit:search:ip:127.0.0.1")
        .query_async(&mut con)
        .await
        .unwrap();
    // `s:<window>:<previous>:<current>`; a window may have turned during the test.
    let counts: Vec<u64> = state
        .split(':')
        .skip(2)
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(counts.iter().sum::<u64>(), 5, "{state}");
}

#[tokio::test]
async fn serves_without_redis_under_the_failure_policy() {
    let api = Api::start(&format!("redis://127.0.0.1:{}/", closed_port()));
    for remaining in (0..5).rev() {
        let reply = api.get("/search", &[]);
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.number("x-ratelimit-remaining"), remaining);
    }
    let reply = api.get("/search", &[]);
    assert_eq!(reply.status, 429, "{reply:?}");
    assert!(reply.header("retry-after").is_some());
}
