//! The tower `ConcurrencyLayer` against a real Redis with the module:
//!
//! - `ten_slow_requests_against_a_limit_of_three`: exactly three reach the service and hold a
//!   lease while they run; the seven others are refused at once with `Retry-After` and
//!   `qu="concurrent-requests"`; once the three finish, their slots are free.
//! - `a_client_that_disconnects_mid_body_frees_its_slot`: over a real HTTP connection, a
//!   response that streams forever holds its slot until the client goes away.
//!
//! No timed assertion: the slow handlers wait on a gate the test opens, and the waits for a
//! release are bounded polls.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use common::{wait_until, Server};
use http_body::Frame;
use http_body_util::BodyExt;
use ratelimit_client::tower::{ConcurrencyLayer, ConcurrencyPolicy, Header};
use ratelimit_client::Config;
use redis::aio::MultiplexedConnection;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tower::{Layer, ServiceExt};

async fn leases(conn: &MultiplexedConnection, key: &str) -> u64 {
    let mut conn = conn.clone();
    redis::cmd("ZCARD")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap()
}

fn layer(store: ratelimit_client::RedisStore, limit: u64) -> ConcurrencyLayer<Header> {
    ConcurrencyLayer::new(store, Header::new("x-user")).route(
        "GET /slow",
        ConcurrencyPolicy::new("slow", limit, Duration::from_secs(30)).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_slow_requests_against_a_limit_of_three() {
    let server = Server::start(true);
    let store = common::connected(Config::new(server.url())).await;
    let conn = server.con().await;
    let (open, gate) = watch::channel(false);
    let (inside, most_inside) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let handler = {
        let (inside, most_inside) = (inside.clone(), most_inside.clone());
        tower::service_fn(move |_request: Request<Body>| {
            let (inside, most_inside, mut gate) =
                (inside.clone(), most_inside.clone(), gate.clone());
            async move {
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most_inside.fetch_max(now, Ordering::SeqCst);
                gate.wait_for(|open| *open).await.unwrap();
                inside.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, Infallible>(axum::http::Response::new(Body::from("done\n")))
            }
        })
    };
    let service = layer(store, 3).layer(handler);
    let (sender, mut replies) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..10 {
        let (service, sender) = (service.clone(), sender.clone());
        tokio::spawn(async move {
            let request = Request::get("/slow")
                .header("x-user", "alice")
                .body(Body::empty())
                .unwrap();
            let response = service.oneshot(request).await.unwrap();
            let (parts, body) = response.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            sender.send((parts, body)).unwrap();
        });
    }
    // The seven refusals come back while the three admitted requests wait at the gate.
    for _ in 0..7 {
        let (parts, body) = replies.recv().await.unwrap();
        assert_eq!(parts.status, StatusCode::TOO_MANY_REQUESTS);
        let retry_after: u64 = parts.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=30).contains(&retry_after), "{retry_after}");
        assert_eq!(
            parts.headers["ratelimit-policy"],
            "\"slow\";q=3;qu=\"concurrent-requests\""
        );
        assert_eq!(
            parts.headers["ratelimit"],
            format!("\"slow\";r=0;t={retry_after}").as_str()
        );
        assert!(String::from_utf8_lossy(&body).contains("quota-exceeded"));
    }
    wait_until("three requests are inside", || async {
        inside.load(Ordering::SeqCst) == 3
    })
    .await;
    assert_eq!(leases(&conn, "ratelimit:slow:x-user:alice").await, 3);
    open.send(true).unwrap();
    for _ in 0..3 {
        let (parts, body) = replies.recv().await.unwrap();
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(
            parts.headers["ratelimit-policy"],
            "\"slow\";q=3;qu=\"concurrent-requests\""
        );
        assert_eq!(body, "done\n");
    }
    assert_eq!(
        most_inside.load(Ordering::SeqCst),
        3,
        "never more than three in flight"
    );
    // Their bodies are finished: the three slots are released.
    wait_until("the finished requests' slots are free", || async {
        leases(&conn, "ratelimit:slow:x-user:alice").await == 0
    })
    .await;
}

/// A body that sends one chunk, then nothing, forever: a stream the client abandons.
struct Endless {
    sent: bool,
}

impl http_body::Body for Endless {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.sent {
            return Poll::Pending;
        }
        self.sent = true;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"first chunk\n")))))
    }
}

/// Sends `GET /slow` on a new connection and reads until `needle` arrives.
async fn get_until(port: u16, needle: &str) -> (tokio::net::TcpStream, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nhost: test\r\nx-user: bob\r\n\r\n")
        .await
        .unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&received).contains(needle) {
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(
            n > 0,
            "closed before {needle:?}: {}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buffer[..n]);
    }
    (stream, String::from_utf8_lossy(&received).into_owned())
}

#[tokio::test]
async fn a_client_that_disconnects_mid_body_frees_its_slot() {
    let server = Server::start(true);
    let store = common::connected(Config::new(server.url())).await;
    let conn = server.con().await;
    let app = Router::new()
        .route(
            "/slow",
            get(|| async { Body::new(Endless { sent: false }) }),
        )
        .layer(layer(store, 1));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (first, head) = get_until(port, "first chunk").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(leases(&conn, "ratelimit:slow:x-user:bob").await, 1);
    // The slot is held while the body streams: a second request is refused.
    let (_, refused) = get_until(port, "quota-exceeded").await;
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");

    drop(first);
    wait_until("the abandoned response's slot is free", || async {
        leases(&conn, "ratelimit:slow:x-user:bob").await == 0
    })
    .await;
    let (_, again) = get_until(port, "first chunk").await;
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
}
