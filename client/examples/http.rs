use axum::extract::ConnectInfo;
use axum::{routing::get, Router};
use ratelimit_client::tower::{ClientIp, Header, Policy, RateLimitLayer};
use ratelimit_client::{Limit, RedisStore};
use std::net::SocketAddr;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let store = RedisStore::from_env()?;

    // Each request counts against the client's address, which axum passes as ConnectInfo
    // (see `serve` below).
    let client_ip = ClientIp::new().peer_addr(|extensions| {
        extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
    });
    let ten_seconds = Duration::from_secs(10);
    let limits = RateLimitLayer::new(store, client_ip).route(
        "GET /hello",
        [
            // 5 per 10 s for each address, always,
            Policy::new("hello", Limit::sliding(5, ten_seconds)?),
            // and 50 per 10 s for each API key as well, from whatever addresses it comes.
            Policy::new("hello-key", Limit::sliding(50, ten_seconds)?)
                .subject(Header::new("x-api-key")),
        ],
    );
    let app = Router::new()
        .route("/hello", get(|| async { "Hello!\n" }))
        .layer(limits);

    let address = std::env::var("ADDRESS").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&address).await?;
    println!("listening on http://{address}");
    // With connect info, or ClientIp sees no address and every request is answered 400.
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, service).await?;
    Ok(())
}
