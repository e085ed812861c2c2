//! RESP2 and RESP3 clients get the same replies: an array of five integers for CHECK, QUOTA and
//! REFUND (six with WITHWINDOW), nested arrays for MCHECK (never a map, a set or doubles), an
//! integer for RESET, and the same errors.

mod common;

use common::*;
use redis::Value;
use std::time::Instant;

/// The five integers of a reply that must be a plain array of integers in either protocol.
fn five_integers(value: &Value, context: &str) -> Decision {
    match value {
        Value::Array(items)
            if items.len() == 5 && items.iter().all(|i| matches!(i, Value::Int(_))) =>
        {
            decision(value)
        }
        other => panic!("{context}: expected an array of 5 integers, got {other:?}"),
    }
}

#[test]
fn resp2_and_resp3_replies_are_identical() {
    let server = Server::start();
    let mut resp2 = server.con();
    let mut resp3 = server.con_resp3();

    // Prove that the second connection really speaks RESP3: HGETALL answers a map there.
    let _: () = redis::cmd("HSET")
        .arg("proto")
        .arg("f")
        .arg("v")
        .query(&mut resp2)
        .unwrap();
    assert!(
        matches!(call(&mut resp3, &["HGETALL", "proto"]), Value::Map(_)),
        "not RESP3"
    );
    assert!(
        matches!(call(&mut resp2, &["HGETALL", "proto"]), Value::Array(_)),
        "not RESP2"
    );

    let steps: [&[&str]; 8] = [
        &[],
        &["COST", "2"],
        &["COST", "0"],
        &["DRYRUN"],
        &["COST", "10"],
        &[],
        &[],
        &["COST", "0", "DRYRUN"],
    ];
    for (algorithm, extra) in [
        ("FIXED", &[][..]),
        ("SLIDING", &[][..]),
        ("GCRA", &[][..]),
        ("GCRA", &["BURST", "6"][..]),
    ] {
        // Two keys with the same history, one per protocol.
        let key2 = format!("resp2:{algorithm}:{}", extra.len());
        let key3 = format!("resp3:{algorithm}:{}", extra.len());
        let command = |key: &str, step: &[&str]| -> Vec<String> {
            ["RATELIMIT.CHECK", key, "4", "1h", "ALGORITHM", algorithm]
                .iter()
                .chain(extra)
                .chain(step)
                .map(|s| s.to_string())
                .collect()
        };
        // The two keys' states were written at slightly different instants, step by step: their
        // times may differ by the time between the two calls of every step so far.
        let mut apart_ms = 0;
        for step in steps {
            let context = format!("{algorithm} {extra:?} {step:?}");
            let start = Instant::now();
            let r2 = call(&mut resp2, &command(&key2, step));
            let r3 = call(&mut resp3, &command(&key3, step));
            apart_ms += elapsed_ms(start);
            let d2 = five_integers(&r2, &format!("RESP2 {context}"));
            let d3 = five_integers(&r3, &format!("RESP3 {context}"));
            assert_same_decision(&d2, &d3, apart_ms, &context);

            // QUOTA reads one key from both connections.
            let mut read = vec![
                "RATELIMIT.QUOTA",
                key2.as_str(),
                "4",
                "1h",
                "ALGORITHM",
                algorithm,
            ];
            read.extend_from_slice(extra);
            let start = Instant::now();
            let q2 = call(&mut resp2, &read);
            let q3 = call(&mut resp3, &read);
            let elapsed = elapsed_ms(start);
            let q2 = five_integers(&q2, &format!("RESP2 QUOTA {context}"));
            let q3 = five_integers(&q3, &format!("RESP3 QUOTA {context}"));
            assert_same_decision(&q2, &q3, elapsed, &format!("QUOTA {context}"));
        }
        assert_eq!(
            get(&mut resp2, &key2).is_some(),
            get(&mut resp2, &key3).is_some()
        );
        assert_eq!(call(&mut resp2, &["RATELIMIT.RESET", &key2]), Value::Int(1));
        assert_eq!(call(&mut resp3, &["RATELIMIT.RESET", &key3]), Value::Int(1));
        assert_eq!(call(&mut resp2, &["RATELIMIT.RESET", &key2]), Value::Int(0));
        assert_eq!(call(&mut resp3, &["RATELIMIT.RESET", &key3]), Value::Int(0));
    }

    // Fresh keys: replies that do not depend on the clock are byte-for-byte equal.
    for args in [
        &["RATELIMIT.QUOTA", "fresh", "3", "1h"][..],
        &[
            "RATELIMIT.QUOTA",
            "fresh",
            "3",
            "1h",
            "ALGORITHM",
            "GCRA",
            "BURST",
            "5",
        ][..],
        &["RATELIMIT.CHECK", "fresh", "3", "1h", "COST", "0"][..],
        &[
            "RATELIMIT.CHECK",
            "fresh",
            "3",
            "1h",
            "ALGORITHM",
            "SLIDING",
            "COST",
            "9",
        ][..],
        &[
            "RATELIMIT.CHECK",
            "fresh",
            "3",
            "1h",
            "ALGORITHM",
            "GCRA",
            "DRYRUN",
        ][..],
    ] {
        assert_eq!(call(&mut resp2, args), call(&mut resp3, args), "{args:?}");
    }

    // Errors are the same text in both protocols.
    for args in [
        &["RATELIMIT.CHECK", "e", "abc", "1s"][..],
        &["RATELIMIT.CHECK", "e", "3", "5x"][..],
        &["RATELIMIT.QUOTA", "e", "3", "1s", "FOO"][..],
        &["RATELIMIT.RESET"][..],
        &["RATELIMIT.CHECK", "proto", "3", "1s"][..],
        &["RATELIMIT.RESET", "proto"][..],
    ] {
        let e2 = error_text(&call(&mut resp2, args));
        let e3 = error_text(&call(&mut resp3, args));
        assert!(e2.is_some(), "{args:?} should fail");
        assert_eq!(e2, e3, "{args:?}");
    }
}

/// Version 2's replies keep the one shape in both protocols too: MCHECK's nested arrays, six
/// integers with WITHWINDOW, REFUND's five integers, and the same error texts. On fresh keys,
/// where nothing depends on the clock, the replies are equal value for value.
#[test]
fn version_2_replies_are_identical_in_resp2_and_resp3() {
    let server = Server::start();
    let mut resp2 = server.con();
    let mut resp3 = server.con_resp3();
    let calls: [&[&str]; 5] = [
        &[
            "RATELIMIT.MCHECK",
            "2",
            "m:a",
            "m:b",
            "LIMIT",
            "3",
            "1h",
            "LIMIT",
            "5",
            "1h",
            "ALGORITHM",
            "GCRA",
            "COST",
            "2",
            "DRYRUN",
        ],
        &[
            "RATELIMIT.MCHECK",
            "2",
            "m:a",
            "m:b",
            "LIMIT",
            "3",
            "1h",
            "ALGORITHM",
            "GCRA",
            "COST",
            "4",
            "LIMIT",
            "5",
            "1h",
            "ALGORITHM",
            "GCRA",
            "WITHWINDOW",
        ],
        &[
            "RATELIMIT.CHECK",
            "c",
            "3",
            "1h",
            "ALGORITHM",
            "GCRA",
            "DRYRUN",
            "WITHWINDOW",
        ],
        &["RATELIMIT.REFUND", "r", "3", "1h", "COST", "2"],
        &["RATELIMIT.QUOTA", "q", "3", "1h", "COST", "4"],
    ];
    for args in calls {
        let r2 = call(&mut resp2, args);
        let r3 = call(&mut resp3, args);
        assert_eq!(r2, r3, "{args:?}");
        assert!(matches!(r3, Value::Array(_)), "{args:?}: {r3:?}");
    }
    assert_eq!(
        multi(&call(&mut resp3, calls[0])).policies,
        [vec![1, 3, 2, HOUR_MS, 0], vec![1, 5, 3, 1_440_000, 0]]
    );
    assert_eq!(
        integers(&call(&mut resp3, calls[2])),
        [1, 3, 2, 1_200_000, 0, 0]
    );
    assert_eq!(dbsize(&mut resp2), 0, "none of these writes");
    for args in [
        &[
            "RATELIMIT.MCHECK",
            "2",
            "e",
            "e",
            "LIMIT",
            "1",
            "1s",
            "LIMIT",
            "1",
            "1s",
        ][..],
        &["RATELIMIT.REFUND", "e", "3", "1s", "COST", "1", "DRYRUN"][..],
        &["RATELIMIT.CHECK", "e", "3", "1s", "FORCE", "DRYRUN"][..],
    ] {
        let e2 = error_text(&call(&mut resp2, args));
        assert!(e2.is_some(), "{args:?} should fail");
        assert_eq!(e2, error_text(&call(&mut resp3, args)), "{args:?}");
    }
}
