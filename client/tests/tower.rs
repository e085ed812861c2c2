//! The tower layer, on Tokio's paused clock: the headers of admitted requests, the 429 with a
//! `Retry-After` that is always long enough, several policies per route, the routes, the key
//! extractors, and the failure policy of a real store whose Redis is unreachable.

mod common;

use axum::body::Bytes;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use ratelimit_client::tower::{
    ClientIp, Header, KeyExtractor, Limiter, Policy, RateLimitLayer, ResponseBody, Usage,
};
use ratelimit_client::{
    Algorithm, AllDecision, Config, Decision, Error, FailurePolicy, Key, Limit, LimitCheck,
    LocalLimiter, RedisStore,
};
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::{advance, Instant};
use tower::{Layer, Service, ServiceExt};

/// The in-memory limiter on Tokio's clock, which the tests pause and advance. It starts at a
/// multiple of every period used here, so that SLIDING windows begin with the test. It
/// records every call: `(key, dry_run)`.
struct PausedLocal {
    local: LocalLimiter,
    start: Instant,
    calls: Mutex<Vec<(String, bool)>>,
}

/// 1,800,000,000 s: a multiple of 10 s and of an hour.
const EPOCH_US: u64 = 1_800_000_000 * 1_000_000;

impl PausedLocal {
    fn new() -> Arc<PausedLocal> {
        Arc::new(PausedLocal {
            local: LocalLimiter::new(1000),
            start: Instant::now(),
            calls: Mutex::new(Vec::new()),
        })
    }

    fn decide(&self, key: Key<'_>, limit: &Limit, cost: u64, dry_run: bool) -> Decision {
        let key = key.redis_key("");
        self.calls.lock().unwrap().push((key.clone(), dry_run));
        let now_us = EPOCH_US + self.start.elapsed().as_micros() as u64;
        let now = UNIX_EPOCH + Duration::from_micros(now_us);
        let decision = self.local.check_at(&key, limit, cost, dry_run, now);
        decision.expect("one algorithm per key")
    }

    fn calls(&self) -> Vec<(String, bool)> {
        std::mem::take(&mut self.calls.lock().unwrap())
    }
}

impl Limiter for PausedLocal {
    fn check(
        &self,
        key: Key<'_>,
        limit: &Limit,
        cost: u64,
    ) -> impl Future<Output = Result<Decision, Error>> + Send {
        std::future::ready(Ok(self.decide(key, limit, cost, false)))
    }

    fn check_dry_run(
        &self,
        key: Key<'_>,
        limit: &Limit,
        cost: u64,
    ) -> impl Future<Output = Result<Decision, Error>> + Send {
        std::future::ready(Ok(self.decide(key, limit, cost, true)))
    }

    /// One atomic call for every policy, recorded as `("MCHECK key key ...", false)`.
    fn check_all(
        &self,
        checks: &[LimitCheck<'_>],
    ) -> impl Future<Output = Result<AllDecision, Error>> + Send {
        let keys: Vec<String> = checks.iter().map(|c| c.key.redis_key("")).collect();
        self.calls
            .lock()
            .unwrap()
            .push((format!("MCHECK {}", keys.join(" ")), false));
        let now_us = EPOCH_US + self.start.elapsed().as_micros() as u64;
        let now = UNIX_EPOCH + Duration::from_micros(now_us);
        std::future::ready(self.local.check_all_at(checks, now))
    }
}

type Body = Full<Bytes>;

/// The inner service: answers `ok`, and counts its calls.
#[derive(Clone)]
struct Inner {
    calls: Arc<AtomicUsize>,
}

impl Service<Request<Body>> for Inner {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<Body>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(b"ok")))))
    }
}

struct App<L: Limiter, K: KeyExtractor> {
    service: ratelimit_client::tower::RateLimitService<Inner, L, K>,
    inner_calls: Arc<AtomicUsize>,
}

/// What a test looks at in a response.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

fn app<L: Limiter, K: KeyExtractor>(layer: RateLimitLayer<L, K>) -> App<L, K> {
    let inner_calls = Arc::new(AtomicUsize::new(0));
    let service = layer.layer(Inner {
        calls: Arc::clone(&inner_calls),
    });
    App {
        service,
        inner_calls,
    }
}

impl<L: Limiter, K: KeyExtractor> App<L, K> {
    async fn send(&mut self, request: Request<Body>) -> Reply {
        let response: Response<ResponseBody<Body>> = self
            .service
            .ready()
            .await
            .unwrap()
            .call(request)
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    /// A request for `path` from 192.0.2.1.
    async fn get(&mut self, path: &str) -> Reply {
        self.send(request(path, "192.0.2.1")).await
    }

    fn inner_calls(&self) -> usize {
        self.inner_calls.load(Ordering::SeqCst)
    }
}

/// A request for `path` whose peer is `ip`, as a server puts it in the extensions.
fn request(path: &str, ip: &str) -> Request<Body> {
    request_with("GET", path, ip, &[])
}

/// A request with a method and headers.
fn request_with(method: &str, path: &str, ip: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let peer = SocketAddr::new(ip.parse().unwrap(), 40000);
    let mut builder = Request::builder().method(method).uri(path).extension(peer);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::new())).unwrap()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn fixed(limit: u64, seconds: u64) -> Limit {
    Limit::fixed(limit, Duration::from_secs(seconds)).unwrap()
}

fn quota_exceeded(detail: &str, violated: &str) -> String {
    format!(
        "{{\"type\":\"https://iana.org/assignments/http-problem-types#quota-exceeded\",\
         \"title\":\"Quota Exceeded\",\"status\":429,\"detail\":\"{detail}\",\
         \"violated-policies\":[{violated}]}}"
    )
}

#[tokio::test(start_paused = true)]
async fn admitted_requests_carry_the_headers() {
    let layer = RateLimitLayer::new(PausedLocal::new(), ClientIp::new())
        .route("/search", [Policy::new("search", fixed(5, 10))]);
    let mut app = app(layer);
    for remaining in (0..5).rev() {
        let before = unix_now();
        let reply = app.get("/search?q=rust").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, "ok");
        assert_eq!(reply.header("x-ratelimit-limit"), Some("5"));
        assert_eq!(
            reply.header("x-ratelimit-remaining"),
            Some(remaining.to_string().as_str())
        );
        // The window opened at the first request, 10 s before its end, on a paused clock.
        let reset: u64 = reply.header("x-ratelimit-reset").unwrap().parse().unwrap();
        assert!((before + 10..=unix_now() + 11).contains(&reset), "{reset}");
        assert_eq!(
            reply.header("ratelimit-policy"),
            Some("\"search\";q=5;w=10")
        );
        assert_eq!(
            reply.header("ratelimit").unwrap(),
            format!("\"search\";r={remaining};t=10")
        );
        assert!(reply.header("retry-after").is_none());
    }
    assert_eq!(app.inner_calls(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_denial_is_a_429_with_retry_after_rounded_up() {
    let layer = RateLimitLayer::new(PausedLocal::new(), ClientIp::new())
        .route("/search", [Policy::new("search", fixed(5, 10))]);
    let mut app = app(layer);
    for _ in 0..5 {
        assert_eq!(app.get("/search").await.status, StatusCode::OK);
    }
    advance(Duration::from_millis(2500)).await;
    let reply = app.get("/search").await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    // 7.5 s to the window's end, rounded up.
    assert_eq!(reply.header("retry-after"), Some("8"));
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(reply.header("x-ratelimit-limit"), Some("5"));
    assert_eq!(reply.header("x-ratelimit-remaining"), Some("0"));
    assert!(reply.header("x-ratelimit-reset").is_some());
    assert_eq!(
        reply.header("ratelimit-policy"),
        Some("\"search\";q=5;w=10")
    );
    assert_eq!(reply.header("ratelimit"), Some("\"search\";r=0;t=8"));
    assert_eq!(
        reply.body,
        quota_exceeded(
            "The quota of policy \\\"search\\\" is exceeded: retry in 8 s.",
            "\"search\""
        )
    );
    assert_eq!(
        app.inner_calls(),
        5,
        "a denied request never reaches the service"
    );

    // One second short of Retry-After is too early; Retry-After is enough.
    advance(Duration::from_secs(7)).await;
    let reply = app.get("/search").await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.header("retry-after"), Some("1"));
    advance(Duration::from_secs(1)).await;
    assert_eq!(app.get("/search").await.status, StatusCode::OK);
}

/// For every algorithm and many instants of denial: waiting `Retry-After - 1` seconds is not
/// enough, waiting `Retry-After` seconds is.
#[tokio::test(start_paused = true)]
async fn retry_after_is_always_long_enough_and_never_a_second_too_long() {
    let limits = [
        fixed(3, 10),
        Limit::sliding(3, Duration::from_secs(10)).unwrap(),
        Limit::gcra(3, Duration::from_millis(7300))
            .and_then(|limit| limit.with_burst(2))
            .unwrap(),
        Limit::new(Algorithm::Gcra, 2, Duration::from_secs(60)).unwrap(),
    ];
    for (i, limit) in limits.into_iter().enumerate() {
        for offset_ms in [0, 1, 333, 999, 1000, 2718] {
            let layer = RateLimitLayer::new(PausedLocal::new(), ClientIp::new())
                .route("/", [Policy::new("p", limit)]);
            let mut app = app(layer);
            while app.get("/").await.status == StatusCode::OK {}
            advance(Duration::from_millis(offset_ms)).await;
            let reply = app.get("/").await;
            if reply.status == StatusCode::OK {
                continue;
            }
            let wait: u64 = reply.header("retry-after").unwrap().parse().unwrap();
            assert!(wait >= 1, "limit {i}, offset {offset_ms}");
            advance(Duration::from_secs(wait - 1)).await;
            let early = app.get("/").await;
            assert_eq!(
                early.status,
                StatusCode::TOO_MANY_REQUESTS,
                "limit {i}, offset {offset_ms}: admitted a second before Retry-After {wait}"
            );
            advance(Duration::from_secs(1)).await;
            let reply = app.get("/").await;
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "limit {i}, offset {offset_ms}: denied after Retry-After {wait}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn every_policy_must_admit_and_a_denial_spends_on_none() {
    let limiter = PausedLocal::new();
    let minute = Policy::new("minute", fixed(2, 60));
    let hour = Policy::new("hour", fixed(3, 3600));
    let layer = RateLimitLayer::new(Arc::clone(&limiter), ClientIp::new())
        .route("/upload", [minute.clone(), hour.clone()]);
    let mut app = app(layer);

    let reply = app.get("/upload").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("ratelimit-policy"),
        Some("\"minute\";q=2;w=60, \"hour\";q=3;w=3600")
    );
    assert_eq!(
        reply.header("ratelimit"),
        Some("\"minute\";r=1;t=60, \"hour\";r=2;t=3600")
    );
    // The policy with the fewest units left.
    assert_eq!(reply.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(reply.header("x-ratelimit-remaining"), Some("1"));
    // One call for both policies, all or nothing.
    let key = |p: &str| format!("{p}:ip:192.0.2.1");
    let mcheck = || (format!("MCHECK {} {}", key("minute"), key("hour")), false);
    assert_eq!(limiter.calls(), [mcheck()]);

    let reply = app.get("/upload").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(reply.header("x-ratelimit-remaining"), Some("0"));
    limiter.calls();

    // Denied by "minute": nothing is spent on "hour".
    let reply = app.get("/upload").await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.header("retry-after"), Some("60"));
    assert_eq!(reply.header("ratelimit"), Some("\"minute\";r=0;t=60"));
    assert_eq!(reply.header("x-ratelimit-limit"), Some("2"));
    assert!(reply.body.contains("\"violated-policies\":[\"minute\"]"));
    assert_eq!(limiter.calls(), [mcheck()]);
    let hour_left = limiter.decide(hour.key("ip:192.0.2.1"), hour.limit(), 0, true);
    assert_eq!(hour_left.remaining, 1);

    // Denied by "hour" after the minute has passed: nothing is spent on "minute".
    advance(Duration::from_secs(60)).await;
    assert_eq!(app.get("/upload").await.status, StatusCode::OK);
    let reply = app.get("/upload").await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.header("ratelimit"), Some("\"hour\";r=0;t=3540"));
    assert_eq!(reply.header("retry-after"), Some("3540"));
    let minute_left = limiter.decide(minute.key("ip:192.0.2.1"), minute.limit(), 0, true);
    assert_eq!(minute_left.remaining, 1);
    assert_eq!(app.inner_calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_the_longest_wait_of_the_violated_policies() {
    let layer = RateLimitLayer::new(PausedLocal::new(), ClientIp::new()).route(
        "/",
        [
            Policy::new("short", fixed(1, 10)),
            Policy::new("long", fixed(1, 30)),
        ],
    );
    let mut app = app(layer);
    assert_eq!(app.get("/").await.status, StatusCode::OK);
    advance(Duration::from_millis(1500)).await;
    let reply = app.get("/").await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.header("retry-after"), Some("29"));
    assert_eq!(
        reply.header("ratelimit"),
        Some("\"short\";r=0;t=9, \"long\";r=0;t=29")
    );
    assert_eq!(reply.header("x-ratelimit-limit"), Some("1"));
    assert!(reply
        .body
        .contains("\"violated-policies\":[\"short\",\"long\"]"));
    assert!(reply.body.contains("policies \\\"short\\\", \\\"long\\\""));
}

#[tokio::test(start_paused = true)]
async fn a_request_that_can_never_fit_has_no_retry_after() {
    let layer = RateLimitLayer::new(PausedLocal::new(), ClientIp::new())
        .route("/bulk", [Policy::new("bulk", fixed(5, 10)).cost(6)]);
    let mut app = app(layer);
    let reply = app.get("/bulk").await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.header("retry-after"), None);
    assert_eq!(reply.header("ratelimit"), Some("\"bulk\";r=5"));
    assert_eq!(
        reply.body,
        quota_exceeded(
            "The request can never be admitted: it costs more than policy \\\"bulk\\\" allows.",
            "\"bulk\""
        )
    );
}

#[tokio::test(start_paused = true)]
async fn routes_choose_the_policies() {
    let limiter = PausedLocal::new();
    let layer = RateLimitLayer::new(Arc::clone(&limiter), ClientIp::new())
        .route("/search", [Policy::new("search", fixed(1, 10))])
        .route("/health", [])
        .route("/files/*", [Policy::new("files", fixed(1, 10))]);
    let mut app = app(layer);
    assert_eq!(app.get("/search").await.status, StatusCode::OK);
    assert_eq!(
        app.get("/search?page=2").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Not a match for the exact route, and no default: untouched.
    let reply = app.get("/search/more").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.header("ratelimit").is_none());
    assert!(reply.header("x-ratelimit-limit").is_none());
    for _ in 0..3 {
        let reply = app.get("/health").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.header("ratelimit-policy").is_none());
    }
    // A prefix: one quota for everything under it.
    assert_eq!(app.get("/files/a").await.status, StatusCode::OK);
    assert_eq!(
        app.get("/files/b/c").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(app.get("/files").await.status, StatusCode::OK);
    assert_eq!(
        limiter.calls().len(),
        4,
        "only the limited requests are checked"
    );

    let layer = RateLimitLayer::new(PausedLocal::new(), ClientIp::new())
        .route("/search", [Policy::new("search", fixed(1, 10))])
        .default_route([Policy::new("default", fixed(2, 10))]);
    let mut app = self::app(layer);
    let reply = app.get("/anything").await;
    assert_eq!(reply.header("ratelimit"), Some("\"default\";r=1;t=10"));
    assert_eq!(app.get("/else").await.status, StatusCode::OK);
    assert_eq!(
        app.get("/other").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(app.get("/search").await.status, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn each_client_has_its_own_quota() {
    let layer = RateLimitLayer::new(PausedLocal::new(), ClientIp::new())
        .route("/", [Policy::new("p", fixed(1, 10))]);
    let mut app = app(layer);
    assert_eq!(
        app.send(request("/", "192.0.2.1")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.send(request("/", "192.0.2.1")).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        app.send(request("/", "192.0.2.2")).await.status,
        StatusCode::OK
    );
    // One /64 is one client.
    assert_eq!(
        app.send(request("/", "2001:db8:0:1::1")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.send(request("/", "2001:db8:0:1::2")).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        app.send(request("/", "2001:db8:0:2::1")).await.status,
        StatusCode::OK
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_without_a_key_is_a_400() {
    let layer = RateLimitLayer::new(PausedLocal::new(), Header::new("X-Api-Key"))
        .route("/", [Policy::new("p", fixed(1, 10))]);
    let mut app = app(layer);
    let reply = app.get("/").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json")
    );
    assert!(reply.body.contains("\"status\":400"), "{}", reply.body);
    assert_eq!(app.inner_calls(), 0);
    let mut with_key = request("/", "192.0.2.1");
    with_key
        .headers_mut()
        .insert("x-api-key", "k1".parse().unwrap());
    assert_eq!(app.send(with_key).await.status, StatusCode::OK);
}

fn parts(peer: Option<&str>, headers: &[(&str, &str)]) -> Parts {
    let mut builder = Request::builder().uri("/");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    if let Some(peer) = peer {
        builder = builder.extension(SocketAddr::new(peer.parse().unwrap(), 1234));
    }
    builder.body(()).unwrap().into_parts().0
}

fn ip(extractor: &ClientIp, peer: Option<&str>, headers: &[(&str, &str)]) -> Option<String> {
    extractor
        .client_ip(&parts(peer, headers))
        .map(|ip| ip.to_string())
}

#[test]
fn client_ip_trusts_only_the_configured_header_and_hops() {
    let peer = Some("10.0.0.1");
    let direct = ClientIp::new();
    // No proxy trusted: forwarding headers are the client's own words.
    let forged = [("x-forwarded-for", "203.0.113.9")];
    assert_eq!(ip(&direct, peer, &forged).as_deref(), Some("10.0.0.1"));
    assert_eq!(ip(&direct, None, &[]), None);

    let proxy = ClientIp::new().trusted_header("X-Forwarded-For");
    let chain = [("x-forwarded-for", "198.51.100.1, 203.0.113.9")];
    // The last entry is the one the proxy wrote; the first is whatever the client sent.
    assert_eq!(ip(&proxy, peer, &chain).as_deref(), Some("203.0.113.9"));
    // Another header than the configured one is ignored.
    let other = [("x-real-ip", "198.51.100.7")];
    assert_eq!(ip(&proxy, peer, &other).as_deref(), Some("10.0.0.1"));
    // Without the header the peer counts, and so it does for an entry that is no address.
    assert_eq!(ip(&proxy, peer, &[]).as_deref(), Some("10.0.0.1"));
    let unknown = [("x-forwarded-for", "198.51.100.1, unknown")];
    assert_eq!(ip(&proxy, peer, &unknown).as_deref(), Some("10.0.0.1"));
    // Several lines are one list.
    let lines = [
        ("x-forwarded-for", "198.51.100.1"),
        ("x-forwarded-for", "203.0.113.9:4711"),
    ];
    assert_eq!(ip(&proxy, peer, &lines).as_deref(), Some("203.0.113.9"));

    let two_proxies = ClientIp::new()
        .trusted_header("x-forwarded-for")
        .trusted_hops(2);
    let chain = [("x-forwarded-for", "192.0.2.66, 198.51.100.1, 203.0.113.9")];
    assert_eq!(
        ip(&two_proxies, peer, &chain).as_deref(),
        Some("198.51.100.1")
    );
    let short = [("x-forwarded-for", "203.0.113.9")];
    assert_eq!(
        ip(&two_proxies, peer, &short).as_deref(),
        Some("203.0.113.9")
    );

    let forwarded = ClientIp::new().trusted_header("forwarded");
    let value = [(
        "forwarded",
        "for=192.0.2.66, for=\"[2001:db8:cafe::17]:4711\";proto=https",
    )];
    assert_eq!(
        ip(&forwarded, peer, &value).as_deref(),
        Some("2001:db8:cafe::17")
    );

    let real_ip = ClientIp::new().trusted_header("x-real-ip");
    assert_eq!(ip(&real_ip, peer, &other).as_deref(), Some("198.51.100.7"));

    // IPv4-mapped addresses are IPv4.
    assert_eq!(
        ip(&direct, Some("::ffff:192.0.2.1"), &[]).as_deref(),
        Some("192.0.2.1")
    );
}

#[test]
fn client_ip_keys() {
    let key = |extractor: &ClientIp, peer: &str| extractor.extract(&parts(Some(peer), &[]));
    let by_64 = ClientIp::new();
    assert_eq!(key(&by_64, "192.0.2.1").as_deref(), Some("ip:192.0.2.1"));
    assert_eq!(
        key(&by_64, "2001:db8:1:2:3:4:5:6").as_deref(),
        Some("ip:2001:db8:1:2::/64")
    );
    let by_48 = ClientIp::new().ipv6_prefix(48);
    assert_eq!(
        key(&by_48, "2001:db8:1:2::9").as_deref(),
        Some("ip:2001:db8:1::/48")
    );
    let exact = ClientIp::new().ipv6_prefix(128);
    assert_eq!(
        key(&exact, "2001:db8::9").as_deref(),
        Some("ip:2001:db8::9")
    );
    let everyone = ClientIp::new().ipv6_prefix(0);
    assert_eq!(key(&everyone, "2001:db8::9").as_deref(), Some("ip:::/0"));

    // A peer address that the server puts in its own type.
    #[derive(Clone)]
    struct Peer(SocketAddr);
    let custom = ClientIp::new().peer_addr(|extensions| extensions.get::<Peer>().map(|p| p.0.ip()));
    let mut request = parts(None, &[]);
    request
        .extensions
        .insert(Peer("198.51.100.3:80".parse().unwrap()));
    assert_eq!(custom.extract(&request).as_deref(), Some("ip:198.51.100.3"));
    // A bare IpAddr is read by default.
    let mut request = parts(None, &[]);
    request
        .extensions
        .insert("198.51.100.4".parse::<IpAddr>().unwrap());
    assert_eq!(by_64.extract(&request).as_deref(), Some("ip:198.51.100.4"));
}

#[test]
fn header_and_closure_keys() {
    let api_key = Header::new("X-Api-Key");
    let key = |extractor: &dyn KeyExtractor, headers: &[(&str, &str)]| {
        extractor.extract(&parts(Some("192.0.2.1"), headers))
    };
    assert_eq!(
        key(&api_key, &[("x-api-key", "k-123")]).as_deref(),
        Some("x-api-key:k-123")
    );
    assert_eq!(key(&api_key, &[]), None);
    assert_eq!(key(&api_key, &[("x-api-key", "  ")]), None);
    let long = "k".repeat(257);
    assert_eq!(key(&api_key, &[("x-api-key", &long)]), None);
    let first = [("x-api-key", "one"), ("x-api-key", "two")];
    assert_eq!(key(&api_key, &first).as_deref(), Some("x-api-key:one"));

    let fallback = Header::new("x-api-key").or(ClientIp::new());
    assert_eq!(key(&fallback, &[]).as_deref(), Some("ip:192.0.2.1"));
    assert_eq!(
        key(&fallback, &[("x-api-key", "k")]).as_deref(),
        Some("x-api-key:k")
    );

    let user = |request: &Parts| {
        let id = request.headers.get("x-user")?.to_str().ok()?;
        Some(format!("user:{id}"))
    };
    assert_eq!(key(&user, &[("x-user", "42")]).as_deref(), Some("user:42"));
    assert_eq!(key(&user, &[]), None);
}

/// A real store whose Redis is unreachable: its failure policy decides, and the layer answers
/// what it decided.
#[tokio::test]
async fn the_failure_policy_of_the_store_decides() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let store = |policy| {
        RedisStore::new(Config::new(format!("redis://127.0.0.1:{port}")).on_failure(policy))
            .unwrap()
    };
    let route = || [Policy::new("search", fixed(2, 10))];

    let mut deny = app(
        RateLimitLayer::new(store(FailurePolicy::Deny), ClientIp::new()).route("/search", route()),
    );
    let reply = deny.get("/search").await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=10).contains(&wait), "{wait}");
    assert!(reply.body.contains("quota-exceeded"));
    assert_eq!(deny.inner_calls(), 0);

    let mut allow = app(
        RateLimitLayer::new(store(FailurePolicy::Allow), ClientIp::new()).route("/search", route()),
    );
    for _ in 0..3 {
        let reply = allow.get("/search").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header("ratelimit"), Some("\"search\";r=2;t=0"));
        assert_eq!(reply.header("x-ratelimit-remaining"), Some("2"));
    }

    let mut local = app(
        RateLimitLayer::new(store(FailurePolicy::Local), ClientIp::new()).route("/search", route()),
    );
    assert_eq!(local.get("/search").await.status, StatusCode::OK);
    assert_eq!(local.get("/search").await.status, StatusCode::OK);
    assert_eq!(
        local.get("/search").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn the_local_limiter_is_a_limiter() {
    let layer = RateLimitLayer::new(LocalLimiter::new(100), ClientIp::new())
        .route("/", [Policy::new("p", fixed(1, 60))]);
    let mut app = app(layer);
    assert_eq!(app.get("/").await.status, StatusCode::OK);
    let reply = app.get("/").await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((59..=60).contains(&wait), "{wait}");
}

#[test]
fn the_service_gives_its_inner_service_back() {
    let layer = RateLimitLayer::new(LocalLimiter::new(10), ClientIp::new());
    let inner = Inner {
        calls: Arc::new(AtomicUsize::new(7)),
    };
    let mut service = layer.layer(inner);
    assert_eq!(service.get_ref().calls.load(Ordering::SeqCst), 7);
    service.get_mut().calls = Arc::new(AtomicUsize::new(8));
    assert_eq!(service.into_inner().calls.load(Ordering::SeqCst), 8);
}

#[tokio::test(start_paused = true)]
async fn routes_name_their_methods() {
    let limiter = PausedLocal::new();
    let layer = RateLimitLayer::new(Arc::clone(&limiter), ClientIp::new())
        .route("POST /upload", [Policy::new("upload", fixed(1, 60))])
        .route("GET /search", [Policy::new("search", fixed(1, 60))]);
    let mut app = app(layer);
    // A GET on the POST route matches nothing: not counted, no headers (the application
    // answers 405).
    for _ in 0..3 {
        let reply = app
            .send(request_with("GET", "/upload", "192.0.2.1", &[]))
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.header("ratelimit-policy").is_none());
    }
    assert!(limiter.calls().is_empty());
    let post = || request_with("POST", "/upload", "192.0.2.1", &[]);
    assert_eq!(app.send(post()).await.status, StatusCode::OK);
    assert_eq!(app.send(post()).await.status, StatusCode::TOO_MANY_REQUESTS);
    // GET covers HEAD.
    let head = || request_with("HEAD", "/search", "192.0.2.1", &[]);
    assert_eq!(app.send(head()).await.status, StatusCode::OK);
    assert_eq!(
        app.get("/search").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );

    // With a default, the requests no route serves have the default's limits.
    let layer = RateLimitLayer::new(PausedLocal::new(), ClientIp::new())
        .route("POST /upload", [Policy::new("upload", fixed(1, 60))])
        .default_route([Policy::new("other", fixed(2, 60))]);
    let mut app = self::app(layer);
    let reply = app
        .send(request_with("GET", "/upload", "192.0.2.1", &[]))
        .await;
    assert_eq!(reply.header("ratelimit-policy"), Some("\"other\";q=2;w=60"));
    let reply = app
        .send(request_with("POST", "/upload", "192.0.2.1", &[]))
        .await;
    assert_eq!(
        reply.header("ratelimit-policy"),
        Some("\"upload\";q=1;w=60")
    );
}

/// The address always, and an API key as well: the key's policy applies only to requests
/// that have one, and inventing keys does not escape the address's limit.
#[tokio::test(start_paused = true)]
async fn a_policy_with_its_own_subject_applies_to_the_requests_that_have_one() {
    let limiter = PausedLocal::new();
    let layer = RateLimitLayer::new(Arc::clone(&limiter), ClientIp::new()).route(
        "/",
        [
            Policy::new("ip", fixed(4, 60)),
            Policy::new("key", fixed(2, 60)).subject(Header::new("x-api-key")),
        ],
    );
    let mut app = app(layer);
    let with_key = |key: &str| request_with("GET", "/", "192.0.2.1", &[("x-api-key", key)]);

    let reply = app.get("/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("ratelimit-policy"), Some("\"ip\";q=4;w=60"));
    assert_eq!(
        limiter.calls(),
        [("MCHECK ip:ip:192.0.2.1".to_string(), false)]
    );

    let reply = app.send(with_key("k1")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("ratelimit-policy"),
        Some("\"ip\";q=4;w=60, \"key\";q=2;w=60")
    );
    let calls: Vec<String> = limiter.calls().into_iter().map(|(key, _)| key).collect();
    assert_eq!(calls, ["MCHECK ip:ip:192.0.2.1 key:x-api-key:k1"]);
    assert_eq!(app.send(with_key("k1")).await.status, StatusCode::OK);
    let reply = app.send(with_key("k1")).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(reply.body.contains("\"violated-policies\":[\"key\"]"));
    // The address has one unit left of 4 (the denial spent nothing); an invented key gets it,
    // and the next invented key meets the address's limit.
    assert_eq!(app.send(with_key("k2")).await.status, StatusCode::OK);
    let reply = app.send(with_key("k3")).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(reply.body.contains("\"violated-policies\":[\"ip\"]"));

    // The layer's subject is only asked for when a policy needs it: a route whose policies all
    // have their own subject needs none from the layer.
    let layer = RateLimitLayer::new(PausedLocal::new(), Header::new("x-user")).route(
        "/",
        [Policy::new("ip", fixed(1, 60)).subject(ClientIp::new())],
    );
    let mut app = self::app(layer);
    assert_eq!(app.get("/").await.status, StatusCode::OK);
    assert_eq!(app.get("/").await.status, StatusCode::TOO_MANY_REQUESTS);
}

/// A limiter that reports every decision as not enforced, as a store in shadow mode does.
struct Shadowed(Arc<PausedLocal>);

impl Limiter for Shadowed {
    fn check(
        &self,
        key: Key<'_>,
        limit: &Limit,
        cost: u64,
    ) -> impl Future<Output = Result<Decision, Error>> + Send {
        let decision = Decision {
            enforced: false,
            ..self.0.decide(key, limit, cost, false)
        };
        std::future::ready(Ok(decision))
    }

    fn check_dry_run(
        &self,
        key: Key<'_>,
        limit: &Limit,
        cost: u64,
    ) -> impl Future<Output = Result<Decision, Error>> + Send {
        let decision = Decision {
            enforced: false,
            ..self.0.decide(key, limit, cost, true)
        };
        std::future::ready(Ok(decision))
    }
}

/// Shadow mode, of the layer or of the limiter: decided and counted the same, never refused,
/// and a would-be denial says which policies it exceeded.
#[tokio::test(start_paused = true)]
async fn shadow_mode_serves_every_request_and_names_the_exceeded_policies() {
    let limiter = PausedLocal::new();
    let policies = || {
        [
            Policy::new("minute", fixed(1, 60)),
            Policy::new("hour", fixed(5, 3600)),
        ]
    };
    let by_layer = RateLimitLayer::new(Arc::clone(&limiter), ClientIp::new())
        .route("/", policies())
        .shadow(true);
    let by_limiter =
        RateLimitLayer::new(Shadowed(PausedLocal::new()), ClientIp::new()).route("/", policies());
    let mut by_layer = app(by_layer);
    let mut by_limiter = app(by_limiter);
    let first = by_layer.get("/").await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(first.header("x-ratelimit-shadow").is_none());
    assert!(by_limiter
        .get("/")
        .await
        .header("x-ratelimit-shadow")
        .is_none());
    async fn a_shadow_denial<L: Limiter>(app: &mut App<L, ClientIp>) {
        let reply = app.get("/").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, "ok");
        assert_eq!(reply.header("x-ratelimit-shadow"), Some("\"minute\""));
        assert_eq!(reply.header("x-ratelimit-remaining"), Some("0"));
        assert!(reply.header("retry-after").is_none());
        assert_eq!(app.inner_calls(), 2);
    }
    a_shadow_denial(&mut by_layer).await;
    a_shadow_denial(&mut by_limiter).await;
    // The would-be denial spent nothing on "hour": 1 of 5 is spent.
    let hour = Policy::new("hour", fixed(5, 3600));
    let left = limiter.decide(hour.key("ip:192.0.2.1"), hour.limit(), 0, true);
    assert_eq!(left.remaining, 4);
}

/// A key that holds another algorithm's state cannot be decided: the layer answers 500 rather
/// than let the request through unlimited or deny it with made-up headers.
#[tokio::test]
async fn a_request_the_limiter_cannot_decide_is_a_500() {
    let fixed_p = Policy::new("p", fixed(5, 60));
    let gcra_p = Policy::new("p", Limit::gcra(5, Duration::from_secs(60)).unwrap());
    let layer = RateLimitLayer::new(LocalLimiter::new(100), ClientIp::new())
        .route("/a", [fixed_p])
        .route("/b", [gcra_p]);
    let mut app = app(layer);
    assert_eq!(app.get("/a").await.status, StatusCode::OK);
    let reply = app.get("/b").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json")
    );
    assert!(reply.body.contains("\"status\":500"), "{}", reply.body);
    assert_eq!(app.inner_calls(), 1);
}

/// What the layer limits is logged once, at INFO, when it is first applied: a router applies a
/// layer to each of its routes.
#[test]
fn the_routes_are_logged_once() {
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let layer = RateLimitLayer::new(LocalLimiter::new(10), ClientIp::new())
            .route(
                "GET /search",
                [Policy::new(
                    "search",
                    Limit::sliding(5, Duration::from_secs(10)).unwrap(),
                )],
            )
            .route("/health", []);
        for _ in 0..3 {
            let _ = layer.layer(Inner {
                calls: Arc::default(),
            });
        }
    });
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let logged: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("HTTP rate limits"))
        .collect();
    assert_eq!(logged.len(), 1, "{text}");
    assert!(logged[0].contains(" INFO "), "{text}");
    assert!(
        logged[0].contains(
            "GET /search: search (5 per 10s SLIDING); /health: not limited; \
             any other request: not limited"
        ),
        "{text}"
    );
}

// One MCHECK per request, and usage settled, against a real server ---------------------------------

/// A service that "generates" the number of tokens its request's `x-tokens` header says, and
/// reports them to the layer's [`Usage`] when the route is metered.
fn generator() -> impl Service<
    Request<Body>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone
       + Send
       + 'static {
    tower::service_fn(|request: Request<Body>| async move {
        let tokens: u64 = request
            .headers()
            .get("x-tokens")
            .map_or(0, |v| v.to_str().unwrap().parse().unwrap());
        if let Some(usage) = request.extensions().get::<Usage>() {
            usage.report(tokens);
        }
        Ok(Response::new(Full::new(Bytes::from(format!(
            "{tokens} tokens"
        )))))
    })
}

async fn send<S>(service: &mut S, tokens: u64) -> Reply
where
    S: Service<Request<Body>, Response = Response<ResponseBody<Body>>, Error = Infallible>,
{
    let tokens = tokens.to_string();
    let request = request_with("POST", "/generate", "192.0.2.1", &[("x-tokens", &tokens)]);
    let response = service.ready().await.unwrap().call(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

#[tokio::test]
async fn a_route_is_one_mcheck_per_request_with_an_item_per_policy() {
    for module in [true, false] {
        let server = common::Server::start(module);
        let store = common::connected(Config::new(server.url())).await;
        let layer = RateLimitLayer::new(store, ClientIp::new()).route(
            "POST /generate",
            [
                Policy::new("rps", Limit::gcra(10, Duration::from_secs(1)).unwrap()),
                Policy::new("rpm", fixed(3, 60)),
                Policy::new("tpm", fixed(1000, 60)).cost(100),
            ],
        );
        let mut service = layer.layer(generator());
        let mut con = server.con().await;
        let (mut before, mut evals) = (0, 0);
        for remaining in [2, 1, 0] {
            // Counted from the second request: the first meets NOSCRIPT and sends the script
            // whole (EVAL).
            if remaining == 1 {
                before = common::command_calls(&mut con, "ratelimit.mcheck").await;
                evals = common::command_calls(&mut con, "evalsha").await;
            }
            let reply = send(&mut service, 0).await;
            assert_eq!(reply.status, StatusCode::OK);
            assert_eq!(
                reply.header("ratelimit-policy"),
                Some("\"rps\";q=10;w=1, \"rpm\";q=3;w=60, \"tpm\";q=1000;w=60")
            );
            let tpm = 1000 - 100 * (3 - remaining);
            let ratelimit = reply.header("ratelimit").unwrap();
            assert!(
                ratelimit.contains(&format!("\"rpm\";r={remaining};t=60"))
                    && ratelimit.contains(&format!("\"tpm\";r={tpm};t=60"))
                    && ratelimit.starts_with("\"rps\";r="),
                "{ratelimit}"
            );
            // The most restrictive policy: rpm.
            assert_eq!(reply.header("x-ratelimit-limit"), Some("3"));
            assert_eq!(
                reply.header("x-ratelimit-remaining"),
                Some(remaining.to_string().as_str())
            );
        }
        let reply = send(&mut service, 0).await;
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(reply.header("ratelimit"), Some("\"rpm\";r=0;t=60"));
        // The denial spent nothing on tpm.
        let tpm: String = redis::cmd("GET")
            .arg("ratelimit:tpm:ip:192.0.2.1")
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(tpm, "300");
        let calls = if module {
            common::command_calls(&mut con, "ratelimit.mcheck").await - before
        } else {
            common::command_calls(&mut con, "evalsha").await - evals
        };
        assert_eq!(calls, 3, "one call per request (module: {module})");
        assert_eq!(common::command_calls(&mut con, "ratelimit.check").await, 0);
    }
}

#[tokio::test]
async fn a_metered_policy_is_settled_at_the_reported_usage() {
    let server = common::Server::start(true);
    let store = common::connected(Config::new(server.url())).await;
    let layer = RateLimitLayer::new(store, ClientIp::new()).route(
        "POST /generate",
        [
            Policy::new("rpm", fixed(100, 3600)),
            Policy::new("tokens", fixed(1000, 3600)).cost(300).metered(),
        ],
    );
    let mut service = layer.layer(generator());
    let mut con = server.con().await;
    let count = |key: &'static str| {
        let mut con = con.clone();
        async move {
            let value: Option<u64> = redis::cmd("GET")
                .arg(key)
                .query_async(&mut con)
                .await
                .unwrap();
            value.unwrap_or(0)
        }
    };
    const TOKENS: &str = "ratelimit:tokens:ip:192.0.2.1";
    // Below the estimate: 180 of the 300 come back before the response leaves.
    let reply = send(&mut service, 120).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "120 tokens")
    );
    assert_eq!(count(TOKENS).await, 120);
    assert!(reply
        .header("ratelimit")
        .unwrap()
        .contains("\"tokens\";r=880;"));
    // Above it: the excess is charged.
    let reply = send(&mut service, 500).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(count(TOKENS).await, 620);
    assert!(reply
        .header("ratelimit")
        .unwrap()
        .contains("\"tokens\";r=380;"));
    // Over the budget by force: 620 + 300 fits, then 900 are used.
    let reply = send(&mut service, 900).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(count(TOKENS).await, 1520, "the excess is charged into debt");
    // The debt denies the next request, which spends nothing.
    let reply = send(&mut service, 1).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(count(TOKENS).await, 1520);
    assert_eq!(count("ratelimit:rpm:ip:192.0.2.1").await, 3);
    let _ = &mut con;
}

/// A limiter that only checks one key at a time: the layer's default `check_all` asks each
/// policy with a dry run first, so a denial still spends nothing on the other policies.
struct OneAtATime(LocalLimiter);

impl Limiter for OneAtATime {
    fn check(
        &self,
        key: Key<'_>,
        limit: &Limit,
        cost: u64,
    ) -> impl Future<Output = Result<Decision, Error>> + Send {
        std::future::ready(self.0.check(&key.redis_key(""), limit, cost))
    }

    fn check_dry_run(
        &self,
        key: Key<'_>,
        limit: &Limit,
        cost: u64,
    ) -> impl Future<Output = Result<Decision, Error>> + Send {
        std::future::ready(self.0.check_dry_run(&key.redis_key(""), limit, cost))
    }
}

#[tokio::test]
async fn a_limiter_without_check_all_gets_two_passes() {
    let limiter = Arc::new(OneAtATime(LocalLimiter::new(100)));
    let layer = RateLimitLayer::new(Arc::clone(&limiter), ClientIp::new()).route(
        "/",
        [
            Policy::new("one", fixed(1, 60)),
            Policy::new("five", fixed(5, 60)),
        ],
    );
    let mut app = app(layer);
    assert_eq!(app.get("/").await.status, StatusCode::OK);
    let reply = app.get("/").await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.header("ratelimit"), Some("\"one\";r=0;t=60"));
    let five = fixed(5, 60);
    let left = limiter
        .0
        .check_dry_run("five:ip:192.0.2.1", &five, 0)
        .unwrap();
    assert_eq!(left.remaining, 4, "the denial spent nothing on \"five\"");
}
