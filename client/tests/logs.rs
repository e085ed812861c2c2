//! Security in logs: a run against a server with a password, through every path that logs
//! (connecting, decisions, a server error for a key, the module vanishing, a wrong password,
//! an outage, shadow mode), writes neither the password nor a user ID in clear, and a key
//! still shows its endpoint.

mod common;

use common::{Options, Server};
use ratelimit_client::{Config, Key, Limit, RedisStore};
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
    let store = common::connected(Config::new(&url)).await;
    let period = Duration::from_secs(60);
    for _ in 0..3 {
        let (allowed, _) = store
            .check_rate_limit(USER, "/search", 10, period, false)
            .await
            .unwrap();
        assert!(allowed);
    }

    // A server error for the user's key.
    let mut con = server.con().await;
    let () = redis::cmd("RPUSH")
        .arg(format!("ratelimit:{USER}:/list"))
        .arg("x")
        .query_async(&mut con)
        .await
        .unwrap();
    let error = store
        .check_rate_limit(USER, "/list", 10, period, false)
        .await
        .unwrap_err();
    assert!(!error.to_string().contains(USER), "{error}");

    // Shadow mode logs each denial, with the key masked.
    let shadow = common::connected(Config::new(&url).shadow(true)).await;
    let one = Limit::fixed(1, period).unwrap();
    for _ in 0..2 {
        let decision = shadow
            .check(Key::new("search", USER), &one, 1)
            .await
            .unwrap();
        assert!(decision.allowed());
    }

    // The server restarts without the module (it cannot be unloaded): the dropped connection
    // and the script's detection are logged.
    server.restart_with(Options {
        module: false,
        password: Some(PASSWORD.to_string()),
        ..Options::default()
    });
    for _ in 0..3 {
        let _ = store
            .check_rate_limit(USER, "/search", 10, period, false)
            .await;
    }

    // A wrong password: the store starts all the same, and warns.
    let wrong = url.replace(PASSWORD, &format!("{PASSWORD}-wrong"));
    let wrong = RedisStore::new(Config::new(wrong)).unwrap();
    let error = wrong.ping().await.unwrap_err();
    assert!(
        error.is_outage() && !error.to_string().contains(PASSWORD),
        "{error}"
    );
    // A bad configuration that holds the password.
    let invalid = Config::new(&url).connect_timeout(Duration::ZERO);
    let error = RedisStore::new(invalid).unwrap_err();
    assert!(!error.to_string().contains(PASSWORD), "{error}");
    let bad_port = url.replace(&server.port().to_string(), "99999");
    let error = RedisStore::new(Config::new(bad_port)).unwrap_err();
    assert!(!error.to_string().contains(PASSWORD), "{error}");

    // An outage.
    server.kill();
    let (allowed, _) = store
        .check_rate_limit(USER, "/search", 10, period, false)
        .await
        .unwrap();
    assert!(allowed, "the local limiter answers");
    assert!(store
        .reset_rate_limit(USER, "/search")
        .await
        .unwrap_err()
        .is_outage());
    // The warnings are logged in the background: give them a moment.
    common::wait_until("the outage is logged", || async {
        String::from_utf8_lossy(&buffer.0.lock().unwrap()).contains("Redis cannot be reached:")
    })
    .await;

    let logs = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    println!("{logs}");
    for expected in [
        "connected to Redis",
        "Redis refused the command for this key",
        "key=ratelimit:us****:/list",
        "key=ratelimit:us****:/search",
        "key=ratelimit:search:us****",
        "let through in shadow mode",
        "Redis cannot be reached at start",
        "Redis cannot be reached:",
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
