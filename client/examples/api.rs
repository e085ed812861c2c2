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
//! | `GET /search` | `search`: 5 per 10 s, sliding window |
//! | `POST /upload` | `upload`: 2 per minute, GCRA with a burst of 2; and `upload-hourly`: 10 per hour |
//!
//! Each client is limited by its `X-Api-Key` header when it sends one, else by its IP address.
//! Redis is `REDIS_URL` (default `redis://127.0.0.1:6379`), with the other `RATELIMIT_*`
//! variables of [`Config::from_env`]. The store is opened without waiting for Redis, so the API
//! serves even while Redis is down: the failure policy (`RATELIMIT_ON_FAILURE`, default
//! `local`) decides until it is back.

use axum::extract::ConnectInfo;
use axum::http::header::CONTENT_TYPE;
use axum::routing::{get, post};
use axum::Router;
use ratelimit_client::tower::{ClientIp, Header, KeyExtractor, Policy, RateLimitLayer};
use ratelimit_client::{Algorithm, Config, Limit, RedisStore};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: api [--port N]

  --port N   the port to listen on, on 127.0.0.1 (default 8080)

Environment: REDIS_URL (default redis://127.0.0.1:6379), RATELIMIT_PREFIX, RATELIMIT_ON_FAILURE, ...";

const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

fn parse_port(mut args: impl Iterator<Item = String>) -> Result<u16, String> {
    let mut port = 8080;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => {
                let value = args.next().ok_or("--port needs a value")?;
                port = value
                    .parse()
                    .map_err(|_| format!("--port expects a port number, not '{value}'"))?;
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    Ok(port)
}

/// The rate limiting layer: the routes, their policies, and who each request counts against.
fn rate_limits(store: RedisStore) -> RateLimitLayer<RedisStore, impl KeyExtractor> {
    let search = Limit::new(5, Duration::from_secs(10)).algorithm(Algorithm::Sliding);
    let upload = Limit::new(2, Duration::from_secs(60))
        .algorithm(Algorithm::Gcra)
        .burst(2);
    let upload_hourly = Limit::new(10, Duration::from_secs(3600));
    // axum puts the peer address in `ConnectInfo`, served with
    // `into_make_service_with_connect_info`.
    let client_ip = ClientIp::new().peer_addr(|extensions| {
        extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip())
    });
    RateLimitLayer::new(store, Header::new("x-api-key").or(client_ip))
        .route("/search", [Policy::new("search", search)])
        .route(
            "/upload",
            [
                Policy::new("upload", upload),
                Policy::new("upload-hourly", upload_hourly),
            ],
        )
}

async fn search() -> ([(axum::http::HeaderName, &'static str); 1], &'static str) {
    ([(CONTENT_TYPE, "application/json")], "{\"results\":[]}\n")
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
        .with_max_level(tracing::Level::WARN)
        .init();
    let port = match parse_port(std::env::args().skip(1)) {
        Ok(port) => port,
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
    let store = match RedisStore::open(config) {
        Ok(store) => store,
        Err(error) => {
            eprintln!("api: {error}");
            return ExitCode::FAILURE;
        }
    };
    let app = Router::new()
        .route("/search", get(search))
        .route("/upload", post(upload))
        .layer(rate_limits(store));
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
    println!("listening on http://{address} (Redis {redis}, failure policy {policy})");
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    match axum::serve(listener, service).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("api: {error}");
            ExitCode::FAILURE
        }
    }
}
