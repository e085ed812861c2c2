//! Issue 10, RATELIMIT.MCHECK against the contract (shared/COMMANDS.md, version 2): one request
//! checked against several limiters at once, all or nothing. The reply is `[allowed,
//! retry_after_ms, [five integers], ...]`, one array per policy as CHECK of that policy alone
//! would answer (as a dry run when the request is denied), six integers each with WITHWINDOW.
//!
//! Periods are an hour or more wherever units are counted, so that nothing refills while a test
//! runs.

mod common;

use common::*;
use std::time::Instant;

/// `MCHECK numkeys keys... LIMIT ... ` from `keys` and one policy line per key.
fn mcheck_args(keys: &[&str], policies: &[&str], flags: &[&str]) -> Vec<String> {
    let mut args = vec![keys.len().to_string()];
    args.extend(keys.iter().map(|k| k.to_string()));
    for policy in policies {
        args.push("LIMIT".into());
        args.extend(policy.split_whitespace().map(String::from));
    }
    args.extend(flags.iter().map(|f| f.to_string()));
    args
}

/// `CHECK key <policy> DRYRUN`: what CHECK of that policy alone would answer, spending nothing.
fn dry_check(con: &mut redis::Connection, key: &str, policy: &str) -> Decision {
    let mut args = vec![key.to_string()];
    args.extend(policy.split_whitespace().map(String::from));
    args.push("DRYRUN".into());
    check(con, &args)
}

/// The policies of the contract's example, a user's requests per second and per minute and
/// model tokens per minute, with hour-long periods so that nothing refills during a test.
const POLICIES: [&str; 3] = [
    "10 1h",
    "20 2h ALGORITHM SLIDING",
    "300 1h ALGORITHM GCRA BURST 30 COST 3",
];
const KEYS: [&str; 3] = ["rl:{u}:rps", "rl:{u}:rpm", "rl:{u}:tpm"];

/// The reply has `2 + numkeys` elements: `allowed`, `retry_after_ms`, then per policy the five
/// integers CHECK of that policy alone would answer; with WITHWINDOW a sixth each: FIXED's
/// window end (the key's PEXPIRETIME), SLIDING's window index, GCRA's 0. An admitted request
/// spends under every policy.
#[test]
fn the_reply_holds_each_policys_decision() {
    let (_server, mut con, has_pexpiretime) = setup();
    let start = Instant::now();
    let expected: Vec<Decision> = KEYS
        .iter()
        .zip(POLICIES)
        .map(|(key, policy)| dry_check(&mut con, key, policy))
        .collect();
    let m = mcheck(&mut con, &mcheck_args(&KEYS, &POLICIES, &[]));
    assert_eq!(
        (m.allowed, m.retry_after, m.policies.len()),
        (1, 0, 3),
        "{m:?}"
    );
    for (i, want) in expected.iter().enumerate() {
        assert_eq!(m.policies[i].len(), 5, "{m:?}");
        assert_same_decision(&m.decision(i), want, elapsed_ms(start), POLICIES[i]);
    }
    assert_eq!(m.decision(0).as_array(), [1, 10, 9, HOUR_MS, 0]);
    // 300 per hour is 12 s per unit: 3 units take 36 s to drip back.
    assert_eq!(m.decision(2).as_array(), [1, 30, 27, 36_000, 0]);
    assert_eq!(get_text(&mut con, KEYS[0]), "1", "every policy spent");
    assert!(get_text(&mut con, KEYS[1]).ends_with(":0:1"));
    assert!(get_text(&mut con, KEYS[2]).starts_with('-'));

    let t0 = server_time_ms(&mut con);
    let m = mcheck(&mut con, &mcheck_args(&KEYS, &POLICIES, &["WITHWINDOW"]));
    let t1 = server_time_ms(&mut con);
    assert!(m.is_allowed(), "{m:?}");
    assert!(m.policies.iter().all(|p| p.len() == 6), "{m:?}");
    let window_end = expire_at_ms(&mut con, KEYS[0], has_pexpiretime).unwrap() as i64;
    assert_between(
        m.policies[0][5],
        window_end - expiry_tolerance_ms(has_pexpiretime) as i64,
        window_end + expiry_tolerance_ms(has_pexpiretime) as i64,
        "FIXED: the window's end",
    );
    let period = 2 * HOUR_MS as u64;
    assert_between(
        m.policies[1][5],
        (t0 / period) as i64,
        (t1 / period) as i64,
        "SLIDING: the window's index",
    );
    assert_eq!(m.policies[2][5], 0, "GCRA: 0");
    assert_eq!(get_text(&mut con, KEYS[0]), "2");
}

/// All or nothing: when one policy denies, nothing is spent under any (every key keeps its
/// value and absolute expiry, a new key stays absent), and each policy's decision is that of a
/// dry run of it alone: the denying one says so, the others show what they would have left.
#[test]
fn a_denial_spends_nothing_anywhere() {
    let (_server, mut con, has_pexpiretime) = setup();
    // Fill the per-second limit (10 of 10), and spend a little under the others.
    check(&mut con, &[KEYS[0], "10", "1h", "COST", "10"]);
    check(
        &mut con,
        &[KEYS[1], "20", "2h", "ALGORITHM", "SLIDING", "COST", "5"],
    );
    let keys = [KEYS[0], KEYS[1], "rl:{u}:new"];
    let policies = [POLICIES[0], POLICIES[1], "300 1h ALGORITHM GCRA COST 3"];
    let before: Vec<Snapshot> = keys
        .iter()
        .map(|k| snapshot(&mut con, k, has_pexpiretime))
        .collect();
    let start = Instant::now();
    let alone: Vec<Decision> = keys
        .iter()
        .zip(policies)
        .map(|(key, policy)| dry_check(&mut con, key, policy))
        .collect();
    for flags in [&[][..], &["WITHWINDOW"]] {
        let m = mcheck(&mut con, &mcheck_args(&keys, &policies, flags));
        assert_eq!(m.allowed, 0, "{m:?}");
        assert_eq!(m.retry_after, m.decision(0).retry_after, "{m:?}");
        assert!(m.retry_after > 0, "{m:?}");
        for (i, want) in alone.iter().enumerate() {
            assert_same_decision(&m.decision(i), want, elapsed_ms(start), policies[i]);
        }
        assert_eq!(
            (m.decision(1).allowed, m.decision(1).remaining),
            (1, 14),
            "the others are answered as dry runs: {m:?}"
        );
        for (key, state) in keys.iter().zip(&before) {
            assert_unchanged(&mut con, key, state, has_pexpiretime, "a denied MCHECK");
        }
    }
    assert!(!exists(&mut con, "rl:{u}:new"));
}

/// DRYRUN answers like the admitted request but writes nothing. FORCE spends under every
/// policy whether or not the cost fits: `allowed` says whether it fitted everywhere, the
/// policy that could not take it goes into debt (remaining 0), and the others spend as usual.
#[test]
fn dryrun_writes_nothing_and_force_spends_everywhere() {
    let (_server, mut con, _) = setup();
    let keys = ["f:a", "f:b", "f:c"];
    let policies = ["3 1h", "5 1h ALGORITHM SLIDING", "4 1h ALGORITHM GCRA"];
    let start = Instant::now();
    let dry = mcheck(&mut con, &mcheck_args(&keys, &policies, &["DRYRUN"]));
    let real = mcheck(&mut con, &mcheck_args(&keys, &policies, &[]));
    assert!(dry.is_allowed() && real.is_allowed(), "{dry:?} {real:?}");
    for (i, policy) in policies.iter().enumerate() {
        let context = format!("a dry run answers as the request would: {policy}");
        assert_same_decision(
            &dry.decision(i),
            &real.decision(i),
            elapsed_ms(start),
            &context,
        );
    }
    assert_eq!(
        get_text(&mut con, "f:a"),
        "1",
        "only the real request spent"
    );
    let dry = mcheck(
        &mut con,
        &mcheck_args(&keys, &policies, &["DRYRUN", "WITHWINDOW"]),
    );
    assert!(dry.is_allowed(), "{dry:?}");
    assert_eq!(
        get_text(&mut con, "f:a"),
        "1",
        "DRYRUN with WITHWINDOW writes nothing"
    );

    // 1 of 3 spent under f:a: a cost of 3 does not fit there, and fits under the others.
    let costs = [
        "3 1h COST 3",
        "5 1h ALGORITHM SLIDING COST 3",
        "4 1h ALGORITHM GCRA COST 3",
    ];
    let forced = mcheck(&mut con, &mcheck_args(&keys, &costs, &["FORCE"]));
    assert_eq!(
        forced.allowed, 0,
        "the cost did not fit under f:a: {forced:?}"
    );
    let a = forced.decision(0);
    assert_eq!((a.allowed, a.remaining), (0, 0), "f:a is in debt: {a:?}");
    assert!(a.retry_after > 0, "until a request of cost 1 fits: {a:?}");
    assert_eq!(forced.retry_after, a.retry_after);
    assert_eq!(
        (forced.decision(1).allowed, forced.decision(1).remaining),
        (1, 1)
    );
    assert_eq!(
        (forced.decision(2).allowed, forced.decision(2).remaining),
        (1, 0)
    );
    assert_eq!(
        get_text(&mut con, "f:a"),
        "4",
        "FORCE spent beyond the limit"
    );
    assert!(get_text(&mut con, "f:b").ends_with(":0:4"));
    let next = mcheck(&mut con, &mcheck_args(&keys[..1], &policies[..1], &[]));
    assert_eq!(next.allowed, 0, "the debt denies: {next:?}");
}

/// The state of every key has exactly CHECK's format: CHECK and MCHECK count on the same key,
/// under every algorithm, and RESET deletes it.
#[test]
fn check_and_mcheck_share_a_key() {
    let (_server, mut con, _) = setup();
    for algorithm in ALGORITHMS {
        let key = format!("shared:{algorithm}");
        let config = limiter_args(&key, "3", "1h", algorithm, &[]);
        let policy = format!("3 1h ALGORITHM {algorithm}");
        let through_mcheck = |con: &mut redis::Connection| {
            mcheck(con, &mcheck_args(&[&key], &[&policy], &[])).decision(0)
        };
        assert_eq!(check(&mut con, &config).remaining, 2, "{algorithm}");
        assert_eq!(through_mcheck(&mut con).remaining, 1, "{algorithm}");
        assert_eq!(check(&mut con, &config).remaining, 0, "{algorithm}");
        let denied = mcheck(&mut con, &mcheck_args(&[&key], &[&policy], &[]));
        assert_eq!(denied.allowed, 0, "{algorithm}: {denied:?}");
        assert_eq!(quota(&mut con, &config).remaining, 0, "{algorithm}");
        let wrong = if algorithm == "GCRA" { "FIXED" } else { "GCRA" };
        let mut args = vec!["RATELIMIT.MCHECK".to_string()];
        args.extend(mcheck_args(
            &[&key],
            &[&format!("3 1h ALGORITHM {wrong}")],
            &[],
        ));
        let error = expect_error(&mut con, &args);
        assert!(
            error.contains(algorithm) && error.contains(wrong),
            "{algorithm}: {error}"
        );
        assert_eq!(reset(&mut con, &key), 1);
    }
}

/// `retry_after_ms` is 0 when allowed; otherwise the longest wait among the policies that deny,
/// ignoring the ones that admit; and -1 as soon as one policy can never admit the cost.
#[test]
fn retry_after_is_the_longest_wait_or_never() {
    let (_server, mut con, _) = setup();
    check(&mut con, &["w:hour", "1", "1h"]);
    check(&mut con, &["w:minute", "1", "1m"]);
    let keys = ["w:minute", "w:hour", "w:free"];
    let policies = ["1 1m", "1 1h", "5 1d"];
    let m = mcheck(&mut con, &mcheck_args(&keys, &policies, &[]));
    let (minute, hour) = (m.decision(0), m.decision(1));
    assert_eq!(
        (minute.allowed, hour.allowed, m.decision(2).allowed),
        (0, 0, 1),
        "{m:?}"
    );
    assert_between(minute.retry_after, 1, 60_000, "the minute's wait");
    assert_between(hour.retry_after, 60_001, HOUR_MS, "the hour's wait");
    assert_eq!(m.retry_after, hour.retry_after, "the longest wait: {m:?}");

    let never = ["1 1m", "1 1h", "5 1d COST 6"];
    let m = mcheck(&mut con, &mcheck_args(&keys, &never, &[]));
    assert_eq!((m.allowed, m.retry_after), (0, -1), "{m:?}");
    assert_eq!(m.decision(2).retry_after, -1, "{m:?}");

    let m = mcheck(&mut con, &mcheck_args(&["w:free"], &["5 1d COST 5"], &[]));
    assert_eq!((m.allowed, m.retry_after), (1, 0), "{m:?}");
}
