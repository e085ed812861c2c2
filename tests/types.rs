//! Keys the module must not misread: keys of other Redis types (WRONGTYPE), limiters of another
//! algorithm, and strings that are no limiter at all. Each is answered with an error and left
//! exactly as it was.

mod common;

use common::*;
use redis::Value;

/// Every way of touching a key, with `{alg}`-independent arguments.
fn touching_calls(key: &str) -> Vec<Vec<String>> {
    let calls: [&[&str]; 16] = [
        &["RATELIMIT.CHECK", key, "3", "1h"],
        &["RATELIMIT.CHECK", key, "3", "1h", "ALGORITHM", "FIXED"],
        &["RATELIMIT.CHECK", key, "3", "1h", "ALGORITHM", "SLIDING"],
        &[
            "RATELIMIT.CHECK",
            key,
            "3",
            "1h",
            "ALGORITHM",
            "GCRA",
            "BURST",
            "5",
        ],
        &["RATELIMIT.CHECK", key, "3", "1h", "DRYRUN"],
        &["RATELIMIT.CHECK", key, "3", "1h", "COST", "0"],
        &[
            "RATELIMIT.CHECK",
            key,
            "3",
            "1h",
            "ALGORITHM",
            "SLIDING",
            "COST",
            "9",
        ],
        &["RATELIMIT.QUOTA", key, "3", "1h"],
        &["RATELIMIT.QUOTA", key, "3", "1h", "ALGORITHM", "SLIDING"],
        &["RATELIMIT.QUOTA", key, "3", "1h", "ALGORITHM", "GCRA"],
        &["RATELIMIT.RESET", key],
        &[
            "RATELIMIT.CHECK",
            key,
            "3",
            "1h",
            "COST",
            "9",
            "FORCE",
            "WITHWINDOW",
        ],
        &["RATELIMIT.MCHECK", "1", key, "LIMIT", "3", "1h"],
        // The other key of the MCHECK must not be written either.
        &[
            "RATELIMIT.MCHECK",
            "2",
            "untouched",
            key,
            "LIMIT",
            "3",
            "1h",
            "LIMIT",
            "3",
            "1h",
            "ALGORITHM",
            "GCRA",
            "FORCE",
        ],
        &["RATELIMIT.REFUND", key, "3", "1h", "COST", "1"],
        &[
            "RATELIMIT.REFUND",
            key,
            "3",
            "1h",
            "ALGORITHM",
            "SLIDING",
            "COST",
            "1",
            "WINDOW",
            "5",
        ],
    ];
    calls
        .iter()
        .map(|c| c.iter().map(|s| s.to_string()).collect())
        .collect()
}

fn dump(con: &mut redis::Connection, key: &str) -> Vec<u8> {
    redis::cmd("DUMP").arg(key).query(con).unwrap()
}

#[test]
fn keys_of_other_types_answer_wrongtype_and_stay_intact() {
    let server = Server::start();
    let mut con = server.con();
    let has_pexpiretime = has_command(&mut con, "pexpiretime");
    let setup: [&[&str]; 5] = [
        &["RPUSH", "list", "a", "b"],
        &["HSET", "hash", "f", "1"],
        &["SADD", "set", "m1", "m2"],
        &["ZADD", "zset", "1", "m"],
        &["XADD", "stream", "*", "f", "v"],
    ];
    for command in setup {
        assert!(
            error_text(&call(&mut con, command)).is_none(),
            "{command:?}"
        );
    }
    let typed = [
        ("list", "list"),
        ("hash", "hash"),
        ("set", "set"),
        ("zset", "zset"),
        ("stream", "stream"),
    ];
    // One of them has an expiry too, which must survive.
    let _: i64 = redis::cmd("PEXPIRE")
        .arg("hash")
        .arg(3_600_000)
        .query(&mut con)
        .unwrap();
    for (key, kind) in typed {
        let before = dump(&mut con, key);
        let expiry_before = expire_at_ms(&mut con, key, has_pexpiretime);
        for args in touching_calls(key) {
            let error = error_text(&call(&mut con, &args))
                .unwrap_or_else(|| panic!("{args:?} on a {kind} should fail"));
            assert!(
                error.starts_with("WRONGTYPE"),
                "{args:?} on a {kind}: {error}"
            );
            assert_eq!(dump(&mut con, key), before, "{args:?} changed the {kind}");
            let kind_now: String = redis::cmd("TYPE").arg(key).query(&mut con).unwrap();
            assert_eq!(kind_now, kind);
            let expiry_now = expire_at_ms(&mut con, key, has_pexpiretime);
            let tolerance = expiry_tolerance_ms(has_pexpiretime);
            match (expiry_before, expiry_now) {
                (Some(a), Some(b)) => assert!(a.abs_diff(b) <= tolerance, "{args:?}: expiry moved"),
                (a, b) => assert_eq!(a, b, "{args:?}: expiry changed"),
            }
        }
    }
    assert_eq!(dbsize(&mut con), 5);
}

#[test]
fn a_limiter_of_another_algorithm_is_never_misread() {
    let server = Server::start();
    let mut con = server.con();
    let has_pexpiretime = has_command(&mut con, "pexpiretime");
    for stored in ALGORITHMS {
        let key = format!("owned-by:{stored}");
        check(&mut con, &[key.as_str(), "5", "1h", "ALGORITHM", stored]);
        let before = snapshot(&mut con, &key, has_pexpiretime);
        for requested in ALGORITHMS.iter().filter(|a| **a != stored) {
            let variants: [&[&str]; 7] = [
                &["RATELIMIT.CHECK", &key, "5", "1h", "ALGORITHM", requested],
                &[
                    "RATELIMIT.CHECK",
                    &key,
                    "5",
                    "1h",
                    "ALGORITHM",
                    requested,
                    "DRYRUN",
                ],
                &[
                    "RATELIMIT.CHECK",
                    &key,
                    "5",
                    "1h",
                    "ALGORITHM",
                    requested,
                    "COST",
                    "0",
                ],
                &[
                    "RATELIMIT.CHECK",
                    &key,
                    "5",
                    "1h",
                    "ALGORITHM",
                    requested,
                    "COST",
                    "9",
                ],
                &["RATELIMIT.QUOTA", &key, "5", "1h", "ALGORITHM", requested],
                &[
                    "RATELIMIT.MCHECK",
                    "2",
                    "untouched",
                    &key,
                    "LIMIT",
                    "5",
                    "1h",
                    "LIMIT",
                    "5",
                    "1h",
                    "ALGORITHM",
                    requested,
                    "FORCE",
                ],
                &[
                    "RATELIMIT.REFUND",
                    &key,
                    "5",
                    "1h",
                    "ALGORITHM",
                    requested,
                    "COST",
                    "1",
                ],
            ];
            for args in variants {
                let error = expect_error(&mut con, args);
                assert!(error.starts_with("ERR "), "{args:?}: {error}");
                let upper = error.to_ascii_uppercase();
                assert!(
                    upper.contains(stored) && upper.contains(requested),
                    "{args:?}: the error should name both {stored} and {requested}: {error}"
                );
                assert_unchanged(&mut con, &key, &before, has_pexpiretime, &args.join(" "));
                assert!(!exists(&mut con, "untouched"), "{args:?}");
            }
        }
        // The default algorithm is FIXED.
        if stored != "FIXED" {
            let error = expect_error(&mut con, &["RATELIMIT.CHECK", &key, "5", "1h"]);
            assert!(error.to_ascii_uppercase().contains("FIXED"), "{error}");
            assert_unchanged(
                &mut con,
                &key,
                &before,
                has_pexpiretime,
                "default algorithm",
            );
        }
        // RESET deletes any limiter, whatever its algorithm.
        assert_eq!(reset(&mut con, &key), 1);
    }
}

#[test]
fn strings_that_are_no_limiter_are_refused_and_kept() {
    let server = Server::start();
    let mut raw = server.raw();
    let values: [&[u8]; 9] = [
        b"hello",
        b"\x00\xff\xfe\r\n\x01junk",
        b"1.5",
        b"",
        b"s:garbage",
        b"s:1:2",
        b"12abc",
        b"99999999999999999999",
        b"-4611686018427387905",
    ];
    for (i, value) in values.iter().enumerate() {
        let key = format!("junk:{i}");
        assert_eq!(
            raw.call(&[b"SET".as_slice(), key.as_bytes(), value]),
            Reply::Status(b"OK".to_vec())
        );
        for args in touching_calls(&key) {
            let reply = raw.call(&args);
            let error = reply.error().unwrap_or_else(|| {
                panic!(
                    "{args:?} on {:?} should fail, got {reply:?}",
                    value.escape_ascii().to_string()
                )
            });
            assert!(
                error.starts_with("ERR "),
                "{args:?} on {:?}: {error}",
                value.escape_ascii().to_string()
            );
            assert_eq!(raw.call(&["PING"]), Reply::Status(b"PONG".to_vec()));
            assert_eq!(
                raw.call(&["GET", key.as_str()]),
                Reply::Bulk(Some(value.to_vec())),
                "{args:?} changed {key}"
            );
            assert_eq!(
                raw.call(&["PTTL", key.as_str()]),
                Reply::Int(-1),
                "{args:?}"
            );
        }
    }
    assert_eq!(raw.call(&["DBSIZE"]), Reply::Int(values.len() as i64));
}

#[test]
fn reset_of_a_missing_key_answers_zero_and_writes_nothing() {
    let server = Server::start();
    let mut con = server.con();
    assert_eq!(
        call(&mut con, &["RATELIMIT.RESET", "nothing"]),
        Value::Int(0)
    );
    assert_eq!(dbsize(&mut con), 0);
}
