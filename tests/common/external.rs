//! REDIS_URL mode: the suite runs against a server it did not start, such as the container of
//! `make docker-test`, instead of spawning its own.
//!
//! **The suite deletes everything on that server (`FLUSHALL` after each test), and some tests
//! create ACL users on it.** Point `REDIS_URL` only at a disposable test server, never at one
//! that holds data. As a safety net, since `REDIS_URL` is also what the Rust client and its
//! examples read, a test refuses to start on a server that holds any key.
//!
//! - [`Server::start`](super::Server::start) (and so `setup()`) answers that server, after
//!   checking that it answers PING, has the module loaded (`COMMAND INFO ratelimit.check`) with
//!   its default algorithm FIXED, and holds no key. `server.is_external()` tells the test.
//! - A test that needs servers of its own (a replica, a restart, a cluster, other options or
//!   module arguments, counters that start at zero) begins with
//!   `skip_if_external!("needs ...")`, which prints that it is skipped and why, then returns.
//!   Asking for such a server in this mode panics, so a test that lacks the line fails instead of
//!   testing the wrong server.
//! - Tests take turns: each external `Server` holds a process-wide lease until it is dropped, and
//!   a test that asks for the server meanwhile waits. Cargo runs the test binaries one after
//!   another, so no two tests ever share the server; `--test-threads=1` keeps the output in
//!   order. A test that asks for a second server while it holds one panics: it would wait for
//!   itself.
//!
//! Only `redis://host:port` is supported: no TLS, user, password or database number.

use super::note;
use super::resp::{RawConn, Reply};
use redis::{ConnectionAddr, IntoConnectionInfo};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::thread::{self, ThreadId};

/// Skips the rest of the test in REDIS_URL mode, saying why on stderr: the first line of every
/// test that needs servers of its own, e.g. `skip_if_external!("needs a replica");`.
#[macro_export]
macro_rules! skip_if_external {
    ($reason:expr) => {
        if $crate::common::external::skip($reason) {
            return;
        }
    };
}

/// Where the external server listens.
#[derive(Debug, Clone)]
pub struct Address {
    pub host: String,
    pub port: u16,
}

/// `REDIS_URL`, parsed; `None` when it is unset or empty (the harness then starts its own
/// servers). Panics on a URL the harness cannot use.
pub fn address() -> Option<Address> {
    let url = std::env::var("REDIS_URL")
        .ok()
        .filter(|url| !url.is_empty())?;
    let info = url
        .as_str()
        .into_connection_info()
        .unwrap_or_else(|e| panic!("REDIS_URL is not a Redis URL: {e}"));
    let settings = info.redis_settings();
    let plain =
        settings.db() == 0 && settings.username().is_none() && settings.password().is_none();
    match info.addr() {
        ConnectionAddr::Tcp(host, port) if plain => Some(Address {
            host: host.clone(),
            port: *port,
        }),
        _ => panic!(
            "REDIS_URL: the test suite supports only redis://host:port, without TLS, user, \
             password or database number"
        ),
    }
}

/// Whether the suite runs in REDIS_URL mode.
pub fn is_set() -> bool {
    std::env::var_os("REDIS_URL").is_some_and(|url| !url.is_empty())
}

/// In REDIS_URL mode, prints that the running test is skipped and why, and answers true.
pub fn skip(reason: &str) -> bool {
    if !is_set() {
        return false;
    }
    let current = thread::current();
    let test = current
        .name()
        .filter(|name| *name != "main")
        .unwrap_or("test");
    note(&format!("skipped {test} in REDIS_URL mode: {reason}"));
    true
}

/// The test whose thread holds the external server, if any.
static HOLDER: Mutex<Option<ThreadId>> = Mutex::new(None);
static RELEASED: Condvar = Condvar::new();
static SAID_PARALLEL: AtomicBool = AtomicBool::new(false);

/// One test's turn on the external server: the next test's starts when it is dropped.
struct Turn(());

impl Turn {
    fn take() -> Turn {
        let me = thread::current().id();
        let mut holder = HOLDER.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(other) = *holder {
            if other == me {
                drop(holder);
                panic!(
                    "this test asks for a second server while it holds REDIS_URL's: it needs \
                     servers of its own, so begin it with skip_if_external!(\"<why>\")"
                );
            }
            if !SAID_PARALLEL.swap(true, Ordering::Relaxed) {
                note(
                    "REDIS_URL mode: tests run in parallel and take turns on the one server; \
                     pass --test-threads=1",
                );
            }
            holder = RELEASED
                .wait(holder)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *holder = Some(me);
        Turn(())
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        *HOLDER.lock().unwrap_or_else(PoisonError::into_inner) = None;
        RELEASED.notify_all();
    }
}

/// A test's use of the external server, given only once the server has passed the checks of
/// [`claim`]. Dropping it empties the server (`FLUSHALL`), then ends the test's turn.
pub struct Lease {
    address: Address,
    _turn: Turn,
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Never panics, even while the test unwinds: a server left with keys is refused by the
        // next test, with a message that says why.
        if let Ok(mut con) = RawConn::connect(&self.address.host, self.address.port) {
            let _ = con.try_call(&["FLUSHALL"]);
        }
    }
}

/// Waits for this test's turn on the external server and checks that the server is one the
/// suite can run on. Panics with the reason when it is not, leaving the server untouched.
pub fn claim(address: &Address) -> Lease {
    let turn = Turn::take();
    let target = format!(
        "the server at REDIS_URL ({}:{})",
        address.host, address.port
    );
    let mut con = RawConn::connect(&address.host, address.port)
        .unwrap_or_else(|e| panic!("cannot connect to {target}: {e}"));
    let mut ask = |args: &[&str]| -> Reply {
        con.try_call(args)
            .unwrap_or_else(|e| panic!("{target}: {} failed: {e}", args.join(" ")))
    };
    match ask(&["PING"]) {
        Reply::Status(pong) if pong == b"PONG" => {}
        other => panic!("{target} answered PING with {other:?}"),
    }
    match ask(&["COMMAND", "INFO", "ratelimit.check"]) {
        Reply::Array(Some(items)) if matches!(items.first(), Some(Reply::Array(Some(_)))) => {}
        other => panic!(
            "{target} does not have the redis-ratelimit module loaded (COMMAND INFO \
             ratelimit.check answered {other:?}): start it with --loadmodule \
             <path>/libredis_ratelimit.so"
        ),
    }
    let config = ask(&["INFO", "ratelimit_config"]);
    let config = String::from_utf8_lossy(config.bytes().unwrap_or_default());
    assert!(
        config
            .lines()
            .any(|line| line.trim() == "ratelimit_default_algorithm:fixed"),
        "the tests expect the module's default algorithm, FIXED, but {target} reports:\n{config}"
    );
    let keyspace = ask(&["INFO", "keyspace"]);
    let keyspace = String::from_utf8_lossy(keyspace.bytes().unwrap_or_default());
    let databases: Vec<&str> = keyspace.lines().filter(|l| l.starts_with("db")).collect();
    assert!(
        databases.is_empty(),
        "{target} holds keys ({}). The tests delete everything on the server they run against, \
         so they run only on an empty, disposable one: never point REDIS_URL at a server that \
         holds data. If this one is disposable (a test run was interrupted), FLUSHALL it.",
        databases.join(" ")
    );
    Lease {
        address: address.clone(),
        _turn: turn,
    }
}
