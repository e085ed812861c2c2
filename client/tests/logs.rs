//! Security in logs: a run against a server with a password, through every path that logs
//! (connecting, decisions, a server error for a key, the module vanishing, a wrong password,
//! an outage), writes neither the password nor a user ID in clear.

mod common;

use common::{Options, Server};
use ratelimit_client::{Config, RedisStore};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing_subscriber::fmt::MakeWriter;

const PASSWORD: &str = "s3cr3t-Pa55word";
const USER: &str = "user-1234567890";

/// Every log line of the run, in memory.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffer {
    type Writer = Buffer;

    fn make_writer(&'a self) -> Buffer {
        self.clone()
    }
}

#[tokio::test]
async fn logs_show_neither_the_password_nor_user_ids() {
    let buffer = Buffer::default();
    tracing_subscriber::fmt()
        .with_writer(buffer.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .init();

    let mut server = Server::start_with(Options {
        module: true,
        password: Some(PASSWORD.into()),
        ..Options::default()
    });
    let url = server.url();
    assert!(url.contains(PASSWORD));
    let store = RedisStore::try_connect(Config::new(&url)).await.unwrap();
    let period = Duration::from_secs(60);
    for _ in 0..3 {
        assert!(
            store
                .check_rate_limit(USER, "/search", 10, period, false)
                .await
                .0
        );
    }

    // A server error for the user's key.
    let mut con = server.con().await;
    let () = redis::cmd("RPUSH")
        .arg(format!("ratelimit:{USER}:/list"))
        .arg("x")
        .query_async(&mut con)
        .await
        .unwrap();
    store
        .check_rate_limit(USER, "/list", 10, period, false)
        .await;

    // The server restarts without the module (it cannot be unloaded): the dropped connection
    // and the script's detection are logged.
    server.restart_with(Options {
        module: false,
        password: Some(PASSWORD.to_string()),
        ..Options::default()
    });
    for _ in 0..3 {
        store
            .check_rate_limit(USER, "/search", 10, period, false)
            .await;
    }

    // A wrong password, and a bad configuration that holds the password.
    let wrong = url.replace(PASSWORD, &format!("{PASSWORD}-wrong"));
    assert!(RedisStore::connect(Config::new(wrong)).await.is_none());
    let invalid = Config::new(&url).connect_timeout(Duration::ZERO);
    assert!(RedisStore::connect(invalid).await.is_none());

    // An outage.
    server.kill();
    store
        .check_rate_limit(USER, "/search", 10, period, false)
        .await;
    // The local limiter answered during the outage, so it had a state to reset.
    assert!(store.reset_rate_limit(USER, "/search").await);

    let logs = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    println!("{logs}");
    for expected in [
        "connected to Redis",
        "Redis cannot limit this key",
        "cannot connect to Redis",
        "Redis is unreachable",
        "ratelimit:us****",
        "user=us****",
        "redis://:****@127.0.0.1",
    ] {
        assert!(
            logs.contains(expected),
            "no `{expected}` in the logs:\n{logs}"
        );
    }
    assert!(
        !logs.contains(PASSWORD),
        "the password is in the logs:\n{logs}"
    );
    assert!(
        !logs.contains("1234567890"),
        "a user ID is in the logs:\n{logs}"
    );
}
