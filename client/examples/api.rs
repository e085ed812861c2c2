//! An HTTP API behind the rate limiting layer, with two routes and different limits:
//!
//! ```console
//! $ cargo run -p ratelimit-client --example api --features tower -- --port 8080
//! listening on http://127.0.0.1:8080 (Redis redis://127.0.0.1:6379, failure policy local)
//! $ curl -i http://127.0.0.1:8080/search
//! ```
//!
//! | route | policies |
//! |---|---|
//! | `GET /search` | `search`: 5 per 10 s per address, sliding window; and `search-key`: 3 per 10 s per `X-Api-Key`, when the request has one |
//! | `POST /upload` | `upload`: 2 per minute per address, GCRA with a burst of 2; and `upload-hourly`: 10 per hour per address |
//! | `GET /report` | a slow endpoint (2 s): `reports`, at most 2 in flight per address (a concurrency limit, `ConcurrencyLayer`); and `other` |
//! | `POST /generate?tokens=N` | `generate`: 10 per minute per address; and `tokens`: 2000 model tokens per minute per address, metered: each request reserves an estimate of 500, and the handler reports the N tokens it "generated" |
//! | anything else | `other`: 60 per minute per address |
//!
//! Every client is limited by its IP address, and an API key as well: a client that invents a
//! new key for each request still meets its address's limit. (A real API would count a key only
//! once it has checked it.)
//!
//! Redis is `REDIS_URL` (default `redis://127.0.0.1:6379`), with the other `RATELIMIT_*`
//! variables of [`Config::from_env`]. The store starts without waiting for Redis, so the API
//! serves even while Redis is down: the failure policy (`RATELIMIT_ON_FAILURE`, default
//! `local`) decides until it is back. With `--shadow`, nothing is refused: a request over its
//! limit is served, with `X-RateLimit-Shadow`.

use axum::extract::ConnectInfo;
use axum::http::header::CONTENT_TYPE;
use axum::http::Uri;
use axum::routing::{get, post};
use axum::Extension;
use axum::Router;
use ratelimit_client::tower::{
    ClientIp, ConcurrencyLayer, ConcurrencyPolicy, Header, Policy, RateLimitLayer, Usage,
};
use ratelimit_client::{Config, Error, Limit, RedisStore};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: api [--port N] [--shadow]

  --port N   the port to listen on, on 127.0.0.1 (default 8080)
  --shadow   decide and count, but refuse nothing (shadow mode)

Environment: REDIS_URL (default redis://127.0.0.1:6379), RATELIMIT_PREFIX, RATELIMIT_ON_FAILURE, ...";

const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// The port and whether to run in shadow mode.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<(u16, bool), String> {
    let mut port = 8080;
    let mut shadow = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => {
                let value = args.next().ok_or("--port needs a value")?;
                port = value
                    .parse()
                    .map_err(|_| format!("--port expects a port number, not '{value}'"))?;
            }
            "--shadow" => shadow = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    Ok((port, shadow))
}

/// The client's address: axum puts the peer address in `ConnectInfo`, served with
/// `into_make_service_with_connect_info`.
fn client_ip() -> ClientIp {
    ClientIp::new().peer_addr(|extensions| {
        extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip())
    })
}

/// The concurrency limit of the slow endpoint: at most 2 reports in flight per address. A
/// report holds its slot until its response is sent (or the client goes away); the lease of
/// 30 s only bounds how long the slots of a server that crashed stay taken.
fn concurrency_limits(store: RedisStore) -> Result<ConcurrencyLayer<ClientIp>, Error> {
    let reports = ConcurrencyPolicy::new("reports", 2, Duration::from_secs(30))?;
    Ok(ConcurrencyLayer::new(store, client_ip()).route("GET /report", reports))
}

/// The rate limiting layer: the routes, their policies, and who each request counts against.
fn rate_limits(store: RedisStore) -> Result<RateLimitLayer<RedisStore, ClientIp>, Error> {
    let ten_seconds = Duration::from_secs(10);
    let minute = Duration::from_secs(60);
    Ok(RateLimitLayer::new(store, client_ip())
        .route(
            "GET /search",
            [
                Policy::new("search", Limit::sliding(5, ten_seconds)?),
                Policy::new("search-key", Limit::sliding(3, ten_seconds)?)
                    .subject(Header::new("x-api-key")),
            ],
        )
        .route(
            "POST /upload",
            [
                Policy::new("upload", Limit::gcra(2, minute)?.with_burst(2)?),
                Policy::new("upload-hourly", Limit::fixed(10, 60 * minute)?),
            ],
        )
        .route(
            "POST /generate",
            [
                Policy::new("generate", Limit::fixed(10, minute)?),
                // Reserve 500 tokens per request; `generate` reports what it used, and the layer
                // gives back the rest, or charges the excess, before the response leaves.
                Policy::new("tokens", Limit::fixed(2000, minute)?)
                    .cost(500)
                    .metered(),
            ],
        )
        .default_route([Policy::new("other", Limit::fixed(60, minute)?)]))
}

/// "Generates" the number of tokens the query asks for (`?tokens=N`, default 300), and
/// reports them: the usage is known only once the work is done.
async fn generate(
    uri: Uri,
    Extension(usage): Extension<Usage>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let tokens = uri
        .query()
        .and_then(|query| {
            query
                .split('&')
                .find_map(|pair| pair.strip_prefix("tokens="))
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(300u64);
    usage.report(tokens);
    (
        [(CONTENT_TYPE, "application/json")],
        format!(
            "{{\"generated\":{tokens},\"reserved\":{}}}\n",
            usage.estimate()
        ),
    )
}

async fn search() -> ([(axum::http::HeaderName, &'static str); 1], &'static str) {
    ([(CONTENT_TYPE, "application/json")], "{\"results\":[]}\n")
}

/// A slow endpoint: a report that takes 2 s to make.
async fn report() -> ([(axum::http::HeaderName, &'static str); 1], &'static str) {
    tokio::time::sleep(Duration::from_secs(2)).await;
    (
        [(CONTENT_TYPE, "application/json")],
        "{\"report\":\"done\"}\n",
    )
}

async fn upload() -> ([(axum::http::HeaderName, &'static str); 1], &'static str) {
    (
        [(CONTENT_TYPE, "application/json")],
        "{\"uploaded\":true}\n",
    )
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .init();
    let (port, shadow) = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("api: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let config = match Config::from_env() {
        Ok(config) if config.get_url().is_none() => config.url(DEFAULT_URL),
        Ok(config) => config,
        Err(error) => {
            eprintln!("api: {error}");
            return ExitCode::from(2);
        }
    };
    let redis = config.masked_url().unwrap_or_default();
    let policy = config.get_on_failure();
    let layers = RedisStore::new(config)
        .and_then(|store| Ok((rate_limits(store.clone())?, concurrency_limits(store)?)));
    let (limits, concurrency) = match layers {
        Ok((limits, concurrency)) => (limits.shadow(shadow), concurrency),
        Err(error) => {
            eprintln!("api: {error}");
            return ExitCode::FAILURE;
        }
    };
    let app = Router::new()
        .route("/search", get(search))
        .route("/upload", post(upload))
        .route("/generate", post(generate))
        .route("/report", get(report))
        // The rate limits first (the outer layer), then the slots in flight.
        .layer(concurrency)
        .layer(limits);
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("api: cannot listen on 127.0.0.1:{port}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let address = listener
        .local_addr()
        .map_or(port.to_string(), |a| a.to_string());
    let mode = if shadow { ", shadow mode" } else { "" };
    println!("listening on http://{address} (Redis {redis}, failure policy {policy}{mode})");
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    match axum::serve(listener, service).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("api: {error}");
            ExitCode::FAILURE
        }
    }
}
