//! The integration test harness: a real server with the module loaded, on a free loopback port,
//! killed and cleaned up on `Drop`, and helpers to call the module's commands.
//!
//! Environment:
//! - `REDIS_SERVER`: the server binary (default `redis-server`; `valkey-server` works too).
//! - `RATELIMIT_MODULE`: the module to load (default `target/release/libredis_ratelimit.so`).
//! - `REDIS_URL` (`redis://host:port`): run against that server, with the module already loaded,
//!   instead of starting servers; tests that need their own skip themselves with a note.
//!   **The suite deletes everything on it (FLUSHALL after each test): never point REDIS_URL at
//!   a server that holds data.** Run with `--test-threads=1`. See `external.rs`.
//!
//! Optional server features are detected by asking the server (`COMMAND INFO`), never by its
//! version, so the same suite runs against Redis 6.2, Redis 7 and Valkey.
#![allow(dead_code)]

pub mod cluster;
pub mod external;
pub mod server;

/// The raw RESP2 connection, shared with the client's tests.
pub use ratelimit_testkit::resp;

#[allow(unused_imports)]
pub use resp::{show_args, RawConn, Reply};
pub use server::Server;

use redis::Value;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Sends one command and returns its reply, errors included as `Value::ServerError`.
/// Panics only when the connection itself fails (e.g. the server crashed).
pub fn call<C: redis::ConnectionLike, A: redis::ToRedisArgs>(con: &mut C, args: &[A]) -> Value {
    let mut command = redis::Cmd::new();
    for arg in args {
        command.arg(arg);
    }
    redis::ConnectionLike::req_command(con, &command)
        .unwrap_or_else(|e| panic!("connection failed (did the server crash?): {e}"))
}

/// The full text of an error reply, e.g. `ERR unknown option 'FOO'`; `None` for other replies.
pub fn error_text(value: &Value) -> Option<String> {
    match value {
        Value::ServerError(e) => Some(match e.details() {
            Some(detail) => format!("{} {}", e.code(), detail),
            None => e.code().to_string(),
        }),
        _ => None,
    }
}

/// The reply of RATELIMIT.CHECK and RATELIMIT.QUOTA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: i64,
    pub limit: i64,
    pub remaining: i64,
    pub reset_after: i64,
    pub retry_after: i64,
}

impl Decision {
    pub fn from_array(a: [i64; 5]) -> Decision {
        let d = Decision {
            allowed: a[0],
            limit: a[1],
            remaining: a[2],
            reset_after: a[3],
            retry_after: a[4],
        };
        d.assert_well_formed();
        d
    }

    pub fn as_array(&self) -> [i64; 5] {
        [
            self.allowed,
            self.limit,
            self.remaining,
            self.reset_after,
            self.retry_after,
        ]
    }

    pub fn is_allowed(&self) -> bool {
        self.allowed == 1
    }

    /// The rules every reply obeys, whatever the state and the algorithm.
    pub fn assert_well_formed(&self) {
        let d = self;
        assert!(d.allowed == 0 || d.allowed == 1, "allowed is 0 or 1: {d:?}");
        assert!(d.limit >= 1, "the capacity is at least 1: {d:?}");
        assert!(
            (0..=d.limit).contains(&d.remaining),
            "0 <= remaining <= capacity: {d:?}"
        );
        assert!(d.reset_after >= 0, "reset_after >= 0: {d:?}");
        if d.allowed == 1 {
            assert_eq!(
                d.retry_after, 0,
                "an allowed request has retry_after 0: {d:?}"
            );
        } else {
            assert!(
                d.retry_after == -1 || d.retry_after > 0,
                "a denied request has retry_after > 0, or -1: {d:?}"
            );
        }
    }
}

/// Parses a CHECK/QUOTA reply: it must be an array of exactly five integers.
pub fn decision(value: &Value) -> Decision {
    match value {
        Value::Array(items) if items.len() == 5 => {
            let mut out = [0i64; 5];
            for (slot, item) in out.iter_mut().zip(items) {
                *slot = match item {
                    Value::Int(n) => *n,
                    other => panic!("expected an array of 5 integers, got {value:?} ({other:?})"),
                };
            }
            Decision::from_array(out)
        }
        _ => panic!("expected an array of 5 integers, got {value:?}"),
    }
}

/// `RATELIMIT.CHECK args...`, which must succeed.
pub fn check<C: redis::ConnectionLike, S: AsRef<str>>(con: &mut C, args: &[S]) -> Decision {
    run_decision(con, "RATELIMIT.CHECK", args)
}

/// `RATELIMIT.QUOTA args...`, which must succeed.
pub fn quota<C: redis::ConnectionLike, S: AsRef<str>>(con: &mut C, args: &[S]) -> Decision {
    run_decision(con, "RATELIMIT.QUOTA", args)
}

fn run_decision<C: redis::ConnectionLike, S: AsRef<str>>(
    con: &mut C,
    name: &str,
    args: &[S],
) -> Decision {
    let mut full = vec![name];
    full.extend(args.iter().map(|a| a.as_ref()));
    let reply = call(con, &full);
    if let Some(error) = error_text(&reply) {
        panic!("{} answered an error: {error}", full.join(" "));
    }
    decision(&reply)
}

/// `RATELIMIT.RESET key`, which must answer 0 or 1.
pub fn reset(con: &mut redis::Connection, key: &str) -> i64 {
    match call(con, &["RATELIMIT.RESET", key]) {
        Value::Int(n) if n == 0 || n == 1 => n,
        other => panic!("RATELIMIT.RESET {key} answered {other:?}, expected 0 or 1"),
    }
}

/// Sends a command that must fail, and returns the error's text.
pub fn expect_error<S: AsRef<str>>(con: &mut redis::Connection, args: &[S]) -> String {
    let args: Vec<&str> = args.iter().map(|a| a.as_ref()).collect();
    let reply = call(con, &args);
    error_text(&reply)
        .unwrap_or_else(|| panic!("{} should answer an error, got {reply:?}", args.join(" ")))
}

/// Whether the server knows `command` (e.g. `pexpiretime`, added in Redis 7.0).
pub fn has_command(con: &mut redis::Connection, command: &str) -> bool {
    match call(con, &["COMMAND", "INFO", command]) {
        Value::Array(items) => items
            .first()
            .is_some_and(|item| !matches!(item, Value::Nil)),
        _ => false,
    }
}

/// One `field:value` line of an INFO-style reply (`INFO replication`, `CLUSTER INFO`): the
/// value, or `None` when the field is absent.
pub fn info_value(con: &mut redis::Connection, command: &[&str], field: &str) -> Option<String> {
    let text: String = match call(con, command) {
        Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Value::VerbatimString { text, .. } => text,
        other => panic!("{} answered {other:?}", command.join(" ")),
    };
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

/// The server's replication role: `master` or `slave`.
pub fn role(con: &mut redis::Connection) -> String {
    info_value(con, &["INFO", "replication"], "role").expect("role in INFO replication")
}

/// The server's clock, in milliseconds since the epoch.
pub fn server_time_ms(con: &mut redis::Connection) -> u64 {
    server_time_us(con) / 1000
}

/// The server's clock, in microseconds since the epoch.
pub fn server_time_us<C: redis::ConnectionLike>(con: &mut C) -> u64 {
    let (seconds, micros): (u64, u64) = redis::cmd("TIME").query(con).unwrap();
    seconds * 1_000_000 + micros
}

/// This machine's clock, in milliseconds since the epoch.
pub fn local_time_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `GET key` as raw bytes (`None` when the key does not exist).
pub fn get(con: &mut redis::Connection, key: &str) -> Option<Vec<u8>> {
    redis::cmd("GET").arg(key).query(con).unwrap()
}

/// `GET key` as text; panics if the key does not exist.
pub fn get_text(con: &mut redis::Connection, key: &str) -> String {
    let bytes = get(con, key).unwrap_or_else(|| panic!("the key {key:?} should exist"));
    String::from_utf8(bytes).unwrap()
}

pub fn exists(con: &mut redis::Connection, key: &str) -> bool {
    redis::cmd("EXISTS").arg(key).query::<i64>(con).unwrap() == 1
}

pub fn pttl(con: &mut redis::Connection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query(con).unwrap()
}

pub fn dbsize(con: &mut redis::Connection) -> i64 {
    redis::cmd("DBSIZE").query(con).unwrap()
}

/// A key's absolute expiry in milliseconds since the epoch, from `PEXPIRETIME` where the server
/// has it, otherwise from `TIME` and `PTTL` (then off by the time between the two calls).
/// `None` for a key without expiry; panics for a missing key.
pub fn expire_at_ms(con: &mut redis::Connection, key: &str, has_pexpiretime: bool) -> Option<u64> {
    let at: i64 = if has_pexpiretime {
        redis::cmd("PEXPIRETIME").arg(key).query(con).unwrap()
    } else {
        let now = server_time_ms(con) as i64;
        match pttl(con, key) {
            ttl if ttl >= 0 => now + ttl,
            ttl => ttl,
        }
    };
    match at {
        -2 => panic!("the key {key:?} should exist"),
        -1 => None,
        at => Some(at as u64),
    }
}

/// How far two absolute expiries read by [`expire_at_ms`] may differ for the same key: 0 with
/// `PEXPIRETIME`, a few milliseconds when they come from `TIME` + `PTTL`.
pub fn expiry_tolerance_ms(has_pexpiretime: bool) -> u64 {
    if has_pexpiretime {
        0
    } else {
        25
    }
}

/// `KEYS *`, sorted.
pub fn all_keys(con: &mut redis::Connection) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(con).unwrap();
    keys.sort();
    keys
}

/// Asserts that two decisions taken `elapsed_ms` apart over the same state agree: the same
/// outcome, capacity and remaining units, and times that differ by no more than the time that
/// passed between them.
pub fn assert_same_decision(a: &Decision, b: &Decision, elapsed_ms: u64, context: &str) {
    assert_eq!(
        (a.allowed, a.limit, a.remaining),
        (b.allowed, b.limit, b.remaining),
        "{context}: {a:?} vs {b:?}"
    );
    let tolerance = elapsed_ms as i64 + 1;
    for (x, y, name) in [
        (a.reset_after, b.reset_after, "reset_after"),
        (a.retry_after, b.retry_after, "retry_after"),
    ] {
        let same_kind = (x == 0) == (y == 0) && (x == -1) == (y == -1);
        assert!(
            same_kind && (x - y).abs() <= tolerance,
            "{context}: {name} differs by more than the {tolerance} ms between the calls: \
             {a:?} vs {b:?}"
        );
    }
}

/// Milliseconds since `start`, rounded up.
pub fn elapsed_ms(start: Instant) -> u64 {
    start.elapsed().as_micros().div_ceil(1000) as u64
}

/// A string key's value and absolute expiry, to prove that a call changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub value: Option<Vec<u8>>,
    pub expire_at: Option<u64>,
}

/// Reads a string key's value and absolute expiry.
pub fn snapshot(con: &mut redis::Connection, key: &str, has_pexpiretime: bool) -> Snapshot {
    let value = get(con, key);
    let expire_at = match value {
        Some(_) => expire_at_ms(con, key, has_pexpiretime),
        None => None,
    };
    Snapshot { value, expire_at }
}

/// Asserts that a string key still has the value and expiry of `before`.
pub fn assert_unchanged(
    con: &mut redis::Connection,
    key: &str,
    before: &Snapshot,
    has_pexpiretime: bool,
    context: &str,
) {
    let after = snapshot(con, key, has_pexpiretime);
    assert_eq!(
        after.value, before.value,
        "{context}: the value of {key:?} changed"
    );
    let tolerance = expiry_tolerance_ms(has_pexpiretime);
    let same_expiry = match (before.expire_at, after.expire_at) {
        (Some(a), Some(b)) => a.abs_diff(b) <= tolerance,
        (a, b) => a == b,
    };
    assert!(
        same_expiry,
        "{context}: the expiry of {key:?} changed: {before:?} -> {after:?}"
    );
}

/// The algorithms, as their ALGORITHM option spells them.
pub const ALGORITHMS: [&str; 3] = ["FIXED", "SLIDING", "GCRA"];

/// An hour, in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;
/// A day, in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// A fresh server, a connection to it, and whether it has `PEXPIRETIME`.
pub fn setup() -> (Server, redis::Connection, bool) {
    let server = Server::start();
    let mut con = server.con();
    let has_pexpiretime = has_command(&mut con, "pexpiretime");
    (server, con, has_pexpiretime)
}

/// `key limit period ALGORITHM algorithm` followed by `extra` options.
pub fn limiter_args(
    key: &str,
    limit: &str,
    period: &str,
    algorithm: &str,
    extra: &[&str],
) -> Vec<String> {
    let mut out = vec![key, limit, period, "ALGORITHM", algorithm];
    out.extend_from_slice(extra);
    out.into_iter().map(String::from).collect()
}

pub fn assert_between(value: i64, low: i64, high: i64, what: &str) {
    assert!(
        (low..=high).contains(&value),
        "{what}: {value} is not within {low}..={high}"
    );
}

/// Every `field:value` line of `INFO <section>` (or `INFO` with several words, e.g.
/// `["everything"]`), in a map. Section headers and blank lines are left out.
pub fn info_fields(
    con: &mut redis::Connection,
    sections: &[&str],
) -> std::collections::BTreeMap<String, String> {
    let mut command = vec!["INFO"];
    command.extend_from_slice(sections);
    let text: String = match call(con, &command) {
        Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Value::VerbatimString { text, .. } => text,
        other => panic!("{} answered {other:?}", command.join(" ")),
    };
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once(':'))
        .map(|(field, value)| (field.trim().to_string(), value.trim().to_string()))
        .collect()
}

/// Starts a server whose `loadmodule` line carries `module_args` (e.g.
/// `&["default-algorithm", "gcra"]`), with the extra server options `extra` after them. The
/// harness puts its extra options right after `--loadmodule <module>`, and the server reads the
/// words up to the next `--option` as the module's arguments; callers check the effect, so a
/// change in that order fails their tests instead of passing them.
pub fn start_with_module_args(module_args: &[&str], extra: &[&str]) -> Server {
    assert!(
        module_args.iter().all(|a| !a.starts_with("--")),
        "module arguments cannot start with --: {module_args:?}"
    );
    let mut all = module_args.to_vec();
    all.extend_from_slice(extra);
    Server::start_with(&all)
}

/// Prints `message` on stderr even while the test harness captures output (`eprintln!` is
/// captured; a write to the stderr handle is not), so that a test that skips part of itself on
/// this server says so in every run.
pub fn note(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "note: {message}");
}

/// `master_repl_offset` of `INFO replication`: it moves exactly when something is replicated
/// (on a master that does not ping its replicas during the test: `--repl-ping-replica-period`).
pub fn master_offset(con: &mut redis::Connection) -> i64 {
    info_value(con, &["INFO", "replication"], "master_repl_offset")
        .expect("master_repl_offset in INFO replication")
        .parse()
        .unwrap()
}

/// Waits until the master's one replica has applied every write the master propagated so far,
/// whichever connection made them. (`WAIT` would not do: it waits only for the writes of the
/// connection that calls it, and on a connection that wrote nothing it returns at once.)
pub fn wait_for_replica(master: &mut redis::Connection) {
    let target = master_offset(master);
    let deadline = Instant::now() + Duration::from_secs(10);
    let link = loop {
        match info_value(master, &["INFO", "replication"], "slave0") {
            Some(link) => break link,
            None if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            None => panic!("the master has no replica (no slave0 in INFO replication)"),
        }
    };
    let port: u16 = link
        .split(',')
        .find_map(|f| f.strip_prefix("port="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in the replica's line {link:?}"));
    let mut replica = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .and_then(|c| c.get_connection())
        .expect("a connection to the replica");
    loop {
        let applied = master_offset(&mut replica);
        if applied >= target {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the replica applied the master's stream up to {applied}, not {target}, within 10 s"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until `server` has `role` (`master` or `slave`), and as a replica, a live link.
pub fn wait_for_role(server: &Server, role_wanted: &str) {
    let mut con = server.con();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if role(&mut con) == role_wanted {
            if role_wanted == "master" {
                return;
            }
            let link = info_value(&mut con, &["INFO", "replication"], "master_link_status");
            if link.as_deref() == Some("up") {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the server on port {} is not a {role_wanted} after 20 s:\n{}",
            server.port(),
            server.log()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// A master whose replication offset moves only when something is replicated (it does not
/// ping its replicas during a test), with `extra` options, and its replica, in sync.
pub fn quiet_master_and_replica(extra: &[&str]) -> (Server, Server) {
    let mut options = vec![
        "--repl-ping-replica-period",
        "3600",
        "--repl-diskless-sync-delay",
        "0",
    ];
    options.extend_from_slice(extra);
    let master = Server::start_with(&options);
    let replica = Server::start_replica_of(&master, &[]);
    (master, replica)
}

/// `INFO commandstats` as text: which commands the server ran (`cmdstat_set:calls=...`).
pub fn commandstats(con: &mut redis::Connection) -> String {
    redis::cmd("INFO").arg("commandstats").query(con).unwrap()
}

/// Every leaf of a reply as text, depth first: for looking into nested replies (COMMAND INFO,
/// COMMAND DOCS, MODULE LIST) whatever their protocol shape.
pub fn leaves(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) | Value::Set(items) => items.iter().flat_map(leaves).collect(),
        Value::Map(pairs) => pairs
            .iter()
            .flat_map(|(k, v)| leaves(k).into_iter().chain(leaves(v)))
            .collect(),
        Value::BulkString(bytes) => vec![String::from_utf8_lossy(bytes).into_owned()],
        Value::SimpleString(text) => vec![text.clone()],
        Value::Int(n) => vec![n.to_string()],
        Value::Okay => vec!["OK".to_string()],
        other => vec![format!("{other:?}")],
    }
}

/// The integers of a reply that must be a flat array of them (CHECK with WITHWINDOW: six).
pub fn integers(value: &Value) -> Vec<i64> {
    match value {
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Int(n) => *n,
                other => panic!("expected an array of integers, got {value:?} ({other:?})"),
            })
            .collect(),
        other => panic!("expected an array of integers, got {other:?}"),
    }
}

/// An MCHECK reply: `allowed`, `retry_after_ms`, and the integers of each policy (five, or six
/// with WITHWINDOW), each checked as a well-formed decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Multi {
    pub allowed: i64,
    pub retry_after: i64,
    pub policies: Vec<Vec<i64>>,
}

impl Multi {
    /// Policy `i`'s five integers as a [`Decision`].
    pub fn decision(&self, i: usize) -> Decision {
        Decision::from_array(self.policies[i][..5].try_into().unwrap())
    }

    pub fn is_allowed(&self) -> bool {
        self.allowed == 1
    }
}

/// Parses an MCHECK reply; panics on any other shape.
pub fn multi(value: &Value) -> Multi {
    let Value::Array(items) = value else {
        panic!("expected an MCHECK reply, got {value:?}");
    };
    let (Some(Value::Int(allowed)), Some(Value::Int(retry_after))) = (items.first(), items.get(1))
    else {
        panic!("expected allowed and retry_after_ms first, got {value:?}");
    };
    let policies: Vec<Vec<i64>> = items[2..].iter().map(integers).collect();
    for p in &policies {
        assert!(p.len() == 5 || p.len() == 6, "{value:?}");
        Decision::from_array(p[..5].try_into().unwrap());
    }
    Multi {
        allowed: *allowed,
        retry_after: *retry_after,
        policies,
    }
}

/// `RATELIMIT.MCHECK args...`, which must succeed.
pub fn mcheck<C: redis::ConnectionLike, S: AsRef<str>>(con: &mut C, args: &[S]) -> Multi {
    let mut full = vec!["RATELIMIT.MCHECK"];
    full.extend(args.iter().map(|a| a.as_ref()));
    let reply = call(con, &full);
    if let Some(error) = error_text(&reply) {
        panic!("{} answered an error: {error}", full.join(" "));
    }
    multi(&reply)
}

/// `RATELIMIT.REFUND args...`, which must succeed: `[refunded, limit, remaining,
/// reset_after_ms, retry_after_ms]`.
pub fn refund<C: redis::ConnectionLike, S: AsRef<str>>(con: &mut C, args: &[S]) -> [i64; 5] {
    let mut full = vec!["RATELIMIT.REFUND"];
    full.extend(args.iter().map(|a| a.as_ref()));
    let reply = call(con, &full);
    if let Some(error) = error_text(&reply) {
        panic!("{} answered an error: {error}", full.join(" "));
    }
    integers(&reply)
        .try_into()
        .unwrap_or_else(|v| panic!("{}: expected five integers, got {v:?}", full.join(" ")))
}

/// Every file under `dir`, concatenated (an AOF directory, say).
pub fn read_dir_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(read_dir_bytes(&path));
        } else {
            out.extend(std::fs::read(&path).unwrap());
        }
    }
    out
}

/// A `RATELIMIT.ACQUIRE` reply: the five integers of a decision, and the lease ID (a bulk
/// string) when granted, nil when denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseReply {
    pub decision: Decision,
    pub id: Option<String>,
}

impl LeaseReply {
    pub fn is_allowed(&self) -> bool {
        self.decision.is_allowed()
    }

    /// The lease ID of a granted reply; panics on a denial.
    pub fn id(&self) -> &str {
        self.id
            .as_deref()
            .unwrap_or_else(|| panic!("the lease was denied: {self:?}"))
    }
}

/// Parses an ACQUIRE reply: exactly six elements, five integers (a well-formed decision) and a
/// bulk string when allowed or a nil when denied; panics on any other shape.
pub fn lease_reply(value: &Value) -> LeaseReply {
    let Value::Array(items) = value else {
        panic!("expected an ACQUIRE reply (an array of six), got {value:?}");
    };
    assert_eq!(
        items.len(),
        6,
        "an ACQUIRE reply has six elements: {value:?}"
    );
    let decision = decision(&Value::Array(items[..5].to_vec()));
    let id = match &items[5] {
        Value::BulkString(bytes) => Some(String::from_utf8(bytes.clone()).unwrap()),
        Value::Nil => None,
        other => panic!("the sixth element is a bulk string or nil, got {other:?} in {value:?}"),
    };
    assert_eq!(
        decision.is_allowed(),
        id.is_some(),
        "an ID exactly when granted: {value:?}"
    );
    LeaseReply { decision, id }
}

/// `RATELIMIT.ACQUIRE args...`, which must succeed.
pub fn acquire<C: redis::ConnectionLike, S: AsRef<str>>(con: &mut C, args: &[S]) -> LeaseReply {
    let mut full = vec!["RATELIMIT.ACQUIRE"];
    full.extend(args.iter().map(|a| a.as_ref()));
    let reply = call(con, &full);
    if let Some(error) = error_text(&reply) {
        panic!("{} answered an error: {error}", full.join(" "));
    }
    lease_reply(&reply)
}

/// `RATELIMIT.RELEASE key id`, which must answer 0 or 1.
pub fn release<C: redis::ConnectionLike>(con: &mut C, key: &str, id: &str) -> i64 {
    match call(con, &["RATELIMIT.RELEASE", key, id]) {
        Value::Int(n) if n == 0 || n == 1 => n,
        other => panic!("RATELIMIT.RELEASE {key} {id} answered {other:?}, expected 0 or 1"),
    }
}

/// A lease set as stored: `ZRANGE key 0 -1 WITHSCORES`, each score a whole number of
/// milliseconds (panics otherwise), in the set's order (by score, then member).
pub fn lease_set<C: redis::ConnectionLike>(con: &mut C, key: &str) -> Vec<(String, u64)> {
    let pairs: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query(con)
        .unwrap_or_else(|e| panic!("ZRANGE {key}: {e}"));
    pairs
        .into_iter()
        .map(|(id, score)| {
            assert!(
                score.fract() == 0.0 && score > 0.0,
                "{key}: the lease {id:?} has a score that is no whole ms: {score}"
            );
            (id, score as u64)
        })
        .collect()
}
