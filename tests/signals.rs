//! Issue 9, items 4 and 5: the signals of a change. Nothing that changes nothing signals a
//! change (a dry run, a denial, `COST 0`, an error, QUOTA, a denied MCHECK, a refund of
//! nothing): another client's `WATCH` survives it and a `CLIENT TRACKING` client gets no
//! invalidation. Every real write (an admitted CHECK or MCHECK, a refund that gives units back,
//! RESET, the expiry given to a key without one) aborts the `WATCH`, invalidates the key, and
//! sends the keyspace events of the equivalent core command. With the module of 640189d,
//! the first no-change case of each test already failed (it signalled), and no write sent any
//! keyspace event.
//!
//! Issue 11 adds the lease commands to the same table: a granted ACQUIRE, a RELEASE that
//! released, and every removal of expired leases signal and send `zadd`, `zrem`, `expire` and
//! `del` as the core commands would; a denial that removes nothing, a RELEASE of an unknown ID
//! and every error signal and send nothing.
//!
//! One table of cases serves the three tests. Each case runs on keys of its own.

mod common;

use common::*;
use redis::Value;

/// One call and what it must signal.
struct Case {
    name: String,
    /// Commands that make the state the call finds, run before anyone watches.
    setup: Vec<Vec<String>>,
    /// The call.
    call: Vec<String>,
    /// The keyspace events it sends, in order: `(key, event)`.
    events: Vec<(String, &'static str)>,
}

impl Case {
    /// Whether the call changes its key (`{k}`): it then sends events for it.
    fn changes(&self, key: &str) -> bool {
        self.events.iter().any(|(k, _)| k == key)
    }
}

/// A case as written in the table: its name, setup lines, call line and events, with the
/// placeholders `{k}`, `{b}`, `{alg}` and `{other}`.
type Row<'a> = (String, Vec<&'a str>, &'a str, Vec<(&'a str, &'static str)>);

/// A [`Row`] that owns its text.
type OwnedRow = (String, Vec<String>, String, Vec<(String, &'static str)>);

/// A far future, in Unix ms (the year 2286): the score of a lease that outlives any test.
const FAR: &str = "9999999999999";

/// Issue 11: the lease cases. A granted ACQUIRE is a `ZADD` (and a `PEXPIREAT` when the key's
/// expiry moves), RELEASE a `ZREM` (then `DEL` when the set empties), the removal of expired
/// leases a `ZREM`, and the expiry given to a hand-made set without one a `PEXPIREAT`; a denial
/// that removes nothing, a RELEASE of an unknown ID and every error change nothing. A hand-made
/// member scored 1 (in 1970) is an expired lease, one scored `FAR` a live one.
fn lease_rows(long_id: &str) -> Vec<OwnedRow> {
    let far = |line: &str| line.replace("FAR", FAR);
    let expired = ["ZADD {k} 1 old FAR a", "PEXPIREAT {k} FAR"];
    let one = vec!["RATELIMIT.ACQUIRE {k} 1 1h ID a"];
    let two = vec![
        "RATELIMIT.ACQUIRE {k} 3 1h ID a",
        "RATELIMIT.ACQUIRE {k} 3 2h ID b",
    ];
    let mut rows: Vec<OwnedRow> = Vec::new();
    let mut row = |name: &str, setup: &[&str], call: &str, events: &[&'static str]| {
        rows.push((
            format!("leases: {name}"),
            setup.iter().map(|line| far(line)).collect(),
            far(call),
            events.iter().map(|e| ("{k}".to_string(), *e)).collect(),
        ));
    };
    let release_long = format!("RATELIMIT.RELEASE {{k}} {long_id}");
    let unchanged: [(&str, &[&str], &str); 8] = [
        ("a denied ACQUIRE", &one, "RATELIMIT.ACQUIRE {k} 1 1h ID b"),
        (
            "a denied automatic ACQUIRE",
            &one,
            "RATELIMIT.ACQUIRE {k} 1 1h",
        ),
        (
            "a RELEASE of an unknown ID",
            &one,
            "RATELIMIT.RELEASE {k} b",
        ),
        ("a RELEASE on a missing key", &[], "RATELIMIT.RELEASE {k} a"),
        (
            "an ACQUIRE argument error",
            &one,
            "RATELIMIT.ACQUIRE {k} 0 1h ID b",
        ),
        ("a RELEASE argument error", &one, &release_long),
        (
            "ACQUIRE on a string limiter",
            &["RATELIMIT.CHECK {k} 3 1h"],
            "RATELIMIT.ACQUIRE {k} 3 1h",
        ),
        (
            "RELEASE on a list",
            &["RPUSH {k} a"],
            "RATELIMIT.RELEASE {k} a",
        ),
    ];
    for (name, setup, call) in unchanged {
        row(name, setup, call, &[]);
    }
    let written: [(&str, &[&str], &str, &[&'static str]); 13] = [
        (
            "a granted ACQUIRE on a new key",
            &[],
            "RATELIMIT.ACQUIRE {k} 2 1h ID a",
            &["zadd", "expire"],
        ),
        (
            "an automatic ID",
            &[],
            "RATELIMIT.ACQUIRE {k} 2 1h",
            &["zadd", "expire"],
        ),
        (
            "a granted ACQUIRE that outlives the others",
            &["RATELIMIT.ACQUIRE {k} 3 1m ID a"],
            "RATELIMIT.ACQUIRE {k} 3 1h ID b",
            &["zadd", "expire"],
        ),
        (
            "a granted ACQUIRE within the key's expiry",
            &["RATELIMIT.ACQUIRE {k} 3 1h ID a"],
            "RATELIMIT.ACQUIRE {k} 3 1m ID b",
            &["zadd"],
        ),
        (
            "a renewal",
            &one,
            "RATELIMIT.ACQUIRE {k} 1 2h ID a",
            &["zadd", "expire"],
        ),
        ("a RELEASE", &two, "RATELIMIT.RELEASE {k} a", &["zrem"]),
        (
            "a RELEASE of the latest lease",
            &two,
            "RATELIMIT.RELEASE {k} b",
            &["zrem", "expire"],
        ),
        (
            "a RELEASE of the last lease",
            &one,
            "RATELIMIT.RELEASE {k} a",
            &["zrem", "del"],
        ),
        (
            "a denied ACQUIRE that removes an expired lease",
            &expired,
            "RATELIMIT.ACQUIRE {k} 1 1h ID b",
            &["zrem"],
        ),
        (
            "a RELEASE of an unknown ID that removes an expired lease",
            &expired,
            "RATELIMIT.RELEASE {k} b",
            &["zrem"],
        ),
        (
            "a RELEASE that removes an expired lease and the last live one",
            &expired,
            "RATELIMIT.RELEASE {k} a",
            &["zrem", "zrem", "del"],
        ),
        (
            "an ACQUIRE that removes the last, expired lease",
            &["ZADD {k} 1 old"],
            "RATELIMIT.ACQUIRE {k} 1 1h ID a",
            &["zrem", "del", "zadd", "expire"],
        ),
        (
            "the expiry a denial gives a hand-made set without one",
            &["ZADD {k} FAR a"],
            "RATELIMIT.ACQUIRE {k} 1 1h ID b",
            &["expire"],
        ),
    ];
    for (name, setup, call, events) in written {
        row(name, setup, call, events);
    }
    rows
}

/// The cases, case `i` on the keys `c<i>:k` and `c<i>:b`.
fn cases() -> Vec<Case> {
    let long_id = "x".repeat(129);
    let long_id = long_id.as_str();
    let mut table: Vec<Row> = Vec::new();
    for algorithm in ALGORITHMS {
        let live = vec!["RATELIMIT.CHECK {k} 3 1h ALGORITHM {alg}"];
        let full = vec!["RATELIMIT.CHECK {k} 1 1h ALGORITHM {alg}"];
        let unchanged = [
            (
                "DRYRUN",
                live.clone(),
                "RATELIMIT.CHECK {k} 3 1h ALGORITHM {alg} DRYRUN",
            ),
            (
                "DRYRUN on a new key",
                vec![],
                "RATELIMIT.CHECK {k} 3 1h ALGORITHM {alg} DRYRUN",
            ),
            (
                "a denial",
                full.clone(),
                "RATELIMIT.CHECK {k} 1 1h ALGORITHM {alg}",
            ),
            (
                "COST 0",
                live.clone(),
                "RATELIMIT.CHECK {k} 3 1h ALGORITHM {alg} COST 0",
            ),
            (
                "a wrong-algorithm error",
                live.clone(),
                "RATELIMIT.CHECK {k} 3 1h ALGORITHM {other}",
            ),
            (
                "QUOTA",
                live.clone(),
                "RATELIMIT.QUOTA {k} 3 1h ALGORITHM {alg} COST 2",
            ),
            (
                "a denied MCHECK",
                full.clone(),
                "RATELIMIT.MCHECK 2 {b} {k} LIMIT 5 1h LIMIT 1 1h ALGORITHM {alg}",
            ),
            (
                "a REFUND that gives back 0",
                live.clone(),
                // GCRA has no windows: it gives back whatever it is asked for.
                if algorithm == "GCRA" {
                    "RATELIMIT.REFUND {k} 3 1h ALGORITHM {alg} COST 0"
                } else {
                    "RATELIMIT.REFUND {k} 3 1h ALGORITHM {alg} COST 1 WINDOW 1"
                },
            ),
            (
                "a REFUND on a new key",
                vec![],
                "RATELIMIT.REFUND {k} 3 1h ALGORITHM {alg} COST 1",
            ),
        ];
        for (name, setup, call) in unchanged {
            table.push((format!("{algorithm}: {name}"), setup, call, vec![]));
        }
        let written = [
            (
                "an admitted CHECK",
                vec![],
                "RATELIMIT.CHECK {k} 3 1h ALGORITHM {alg}",
            ),
            (
                "an admitted CHECK on a live limiter",
                live.clone(),
                "RATELIMIT.CHECK {k} 3 1h ALGORITHM {alg}",
            ),
            (
                "a REFUND that gives back units",
                vec!["RATELIMIT.CHECK {k} 3 1h ALGORITHM {alg} COST 2"],
                "RATELIMIT.REFUND {k} 3 1h ALGORITHM {alg} COST 1",
            ),
        ];
        for (name, setup, call) in written {
            let events = vec![("{k}", "set"), ("{k}", "expire")];
            table.push((format!("{algorithm}: {name}"), setup, call, events));
        }
        table.push((
            format!("{algorithm}: a REFUND that empties the limiter"),
            live.clone(),
            "RATELIMIT.REFUND {k} 3 1h ALGORITHM {alg} COST 5",
            vec![("{k}", "del")],
        ));
        table.push((
            format!("{algorithm}: an admitted MCHECK"),
            live.clone(),
            "RATELIMIT.MCHECK 2 {b} {k} LIMIT 5 1h LIMIT 3 1h ALGORITHM {alg}",
            vec![
                ("{b}", "set"),
                ("{b}", "expire"),
                ("{k}", "set"),
                ("{k}", "expire"),
            ],
        ));
        table.push((
            format!("{algorithm}: RESET"),
            live,
            "RATELIMIT.RESET {k}",
            vec![("{k}", "del")],
        ));
    }
    table.push((
        "RESET of a missing key".into(),
        vec![],
        "RATELIMIT.RESET {k}",
        vec![],
    ));
    table.push((
        "an argument error".into(),
        vec!["RATELIMIT.CHECK {k} 3 1h"],
        "RATELIMIT.CHECK {k} 3 1h FORCE DRYRUN",
        vec![],
    ));
    table.push((
        "the expiry given to a key without one (FIXED)".into(),
        vec!["SET {k} 5"],
        "RATELIMIT.CHECK {k} 3 1h",
        vec![("{k}", "expire")],
    ));
    let sliding_window = local_time_ms() / 86_400_000;
    let sliding = format!("SET {{k}} s:{sliding_window}:0:3");
    table.push((
        "the expiry given to a key without one (SLIDING)".into(),
        vec![sliding.as_str()],
        "RATELIMIT.CHECK {k} 3 1d ALGORITHM SLIDING",
        vec![("{k}", "expire")],
    ));

    let mut rows: Vec<OwnedRow> = table
        .into_iter()
        .map(|(name, setup, call, events)| {
            (
                name,
                setup.iter().map(|line| line.to_string()).collect(),
                call.to_string(),
                events
                    .into_iter()
                    .map(|(k, e)| (k.to_string(), e))
                    .collect(),
            )
        })
        .collect();
    rows.extend(lease_rows(long_id));
    rows.into_iter()
        .enumerate()
        .map(|(i, (name, setup, call, events))| {
            let algorithm = ALGORITHMS
                .into_iter()
                .find(|a| name.starts_with(a))
                .unwrap_or("FIXED");
            let other = if algorithm == "GCRA" { "FIXED" } else { "GCRA" };
            let words = |line: &str| -> Vec<String> {
                line.split_whitespace()
                    .map(|w| {
                        w.replace("{k}", &format!("c{i}:k"))
                            .replace("{b}", &format!("c{i}:b"))
                            .replace("{alg}", algorithm)
                            .replace("{other}", other)
                    })
                    .collect()
            };
            let key = |k: &str| {
                k.replace("{k}", &format!("c{i}:k"))
                    .replace("{b}", &format!("c{i}:b"))
            };
            Case {
                name,
                setup: setup.iter().map(|line| words(line)).collect(),
                call: words(&call),
                events: events.into_iter().map(|(k, e)| (key(&k), e)).collect(),
            }
        })
        .collect()
}

/// The key a case watches and tracks.
fn key_of(i: usize) -> String {
    format!("c{i}:k")
}

fn run(con: &mut redis::Connection, args: &[String]) -> Value {
    call(con, args)
}

/// Runs a case's setup on `con`, which must succeed.
fn set_up(con: &mut redis::Connection, case: &Case) {
    for command in &case.setup {
        let reply = run(con, command);
        assert!(
            error_text(&reply).is_none(),
            "{}: {command:?}: {reply:?}",
            case.name
        );
    }
}

/// Item 4: another client's `WATCH k; MULTI; ...; EXEC` still succeeds across each call that
/// changes nothing, and is aborted by each real write.
#[test]
fn only_real_writes_abort_a_watch() {
    let server = Server::start();
    let mut con = server.con();
    let mut watcher = server.con();
    for (i, case) in cases().iter().enumerate() {
        let key = key_of(i);
        set_up(&mut con, case);
        assert_eq!(call(&mut watcher, &["WATCH", key.as_str()]), Value::Okay);
        run(&mut con, &case.call);
        assert_eq!(call(&mut watcher, &["MULTI"]), Value::Okay);
        call(&mut watcher, &["PING"]);
        let exec = call(&mut watcher, &["EXEC"]);
        let aborted = exec == Value::Nil;
        assert_eq!(
            aborted,
            case.changes(&key),
            "{}: {:?} {} the WATCH of {key}",
            case.name,
            case.call,
            if aborted { "aborted" } else { "did not abort" }
        );
    }
}

/// Reads messages from a subscribed connection until one is about `sentinel`, and returns the
/// keys of every message before it, and it.
fn invalidated_until(subscriber: &mut RawConn, sentinel: &str) -> Vec<String> {
    let mut keys = Vec::new();
    loop {
        let message = subscriber.read_reply().expect("an invalidation message");
        let Reply::Array(Some(parts)) = &message else {
            panic!("expected a pub/sub message, got {message:?}");
        };
        let found: Vec<String> = match parts.get(2) {
            Some(Reply::Array(Some(names))) => names
                .iter()
                .map(|n| String::from_utf8_lossy(n.bytes().unwrap_or_default()).into_owned())
                .collect(),
            other => panic!("an invalidation without keys: {other:?}"),
        };
        let done = found.iter().any(|k| k == sentinel);
        keys.extend(found);
        if done {
            return keys;
        }
    }
}

/// Item 4: a `CLIENT TRACKING` client (RESP2, its invalidations redirected to a connection
/// subscribed to `__redis__:invalidate`) that has read the key gets no invalidation for it from
/// a call that changes nothing, and gets one from each real write. Invalidations arrive in
/// order, so a write to a sentinel key after the call shows that none came for the key.
#[test]
fn only_real_writes_invalidate_a_tracked_key() {
    let server = Server::start();
    let mut con = server.con();
    let mut subscriber = server.raw();
    let id = subscriber.call(&["CLIENT", "ID"]).int().expect("CLIENT ID");
    let confirmation = subscriber.call(&["SUBSCRIBE", "__redis__:invalidate"]);
    assert!(
        matches!(confirmation, Reply::Array(Some(_))),
        "{confirmation:?}"
    );
    let mut tracker = server.con();
    let id = id.to_string();
    assert_eq!(
        call(
            &mut tracker,
            &["CLIENT", "TRACKING", "on", "REDIRECT", id.as_str()]
        ),
        Value::Okay
    );
    for (i, case) in cases().iter().enumerate() {
        let key = key_of(i);
        let sentinel = format!("c{i}:sentinel");
        set_up(&mut con, case);
        // Reading a key (present or not) makes the tracker track it.
        call(&mut tracker, &["GET", key.as_str()]);
        call(&mut tracker, &["GET", sentinel.as_str()]);
        run(&mut con, &case.call);
        call(&mut con, &["SET", sentinel.as_str(), "x"]);
        let keys = invalidated_until(&mut subscriber, &sentinel);
        assert_eq!(
            keys.contains(&key),
            case.changes(&key),
            "{}: {:?} invalidated {keys:?}",
            case.name,
            case.call
        );
    }
}

/// Reads keyspace notifications (`__keyspace@0__:<key>` messages of a `PSUBSCRIBE`) until the
/// `set` of `sentinel`, and returns each `(key, event)` before it.
fn events_until(subscriber: &mut RawConn, sentinel: &str) -> Vec<(String, String)> {
    let mut events = Vec::new();
    loop {
        let message = subscriber.read_reply().expect("a keyspace notification");
        let Reply::Array(Some(parts)) = &message else {
            panic!("expected a pub/sub message, got {message:?}");
        };
        let text =
            |i: usize| String::from_utf8_lossy(parts[i].bytes().unwrap_or_default()).into_owned();
        let channel = text(2);
        let key = channel
            .strip_prefix("__keyspace@0__:")
            .unwrap_or_else(|| panic!("not a keyspace channel: {channel}"))
            .to_string();
        let event = text(3);
        if key == sentinel && event == "set" {
            return events;
        }
        events.push((key, event));
    }
}

/// Item 5: with `notify-keyspace-events KEA`, each write sends what the equivalent core command
/// would: an admitted CHECK `set` then `expire` (its `SET ... PXAT`), an admitted MCHECK that
/// for each key in order, RESET and a REFUND that empties the limiter `del`, a REFUND that
/// gives back part `set` and `expire`, the expiry given to a key without one `expire`; and a
/// denial, a dry run, QUOTA, an error or a refund of nothing sends nothing.
#[test]
fn writes_send_the_keyspace_events_of_their_effects_and_nothing_else_sends_any() {
    skip_if_external!("changes notify-keyspace-events");
    let server = Server::start();
    let mut con = server.con();
    assert_eq!(
        call(
            &mut con,
            &["CONFIG", "SET", "notify-keyspace-events", "KEA"]
        ),
        Value::Okay
    );
    let mut subscriber = server.raw();
    let confirmation = subscriber.call(&["PSUBSCRIBE", "__keyspace@0__:*"]);
    assert!(
        matches!(confirmation, Reply::Array(Some(_))),
        "{confirmation:?}"
    );
    for (i, case) in cases().iter().enumerate() {
        let sentinel = format!("c{i}:sentinel");
        set_up(&mut con, case);
        call(&mut con, &["SET", sentinel.as_str(), "x"]);
        events_until(&mut subscriber, &sentinel);
        run(&mut con, &case.call);
        call(&mut con, &["SET", sentinel.as_str(), "x"]);
        let events = events_until(&mut subscriber, &sentinel);
        let expected: Vec<(String, String)> = case
            .events
            .iter()
            .map(|(k, e)| (k.clone(), e.to_string()))
            .collect();
        assert_eq!(events, expected, "{}: {:?}", case.name, case.call);
    }
}
