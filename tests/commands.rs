//! Every option of RATELIMIT.CHECK and RATELIMIT.QUOTA, and RATELIMIT.RESET, against a real
//! server (the contract is shared/COMMANDS.md).
//!
//! Periods are long (an hour or more) wherever a test counts units, so that nothing refills or
//! rolls over while it runs.

mod common;

use common::*;
use std::time::Instant;

#[test]
fn cost_spends_units_and_a_cost_above_capacity_never_fits() {
    let (_server, mut con, has_pexpiretime) = setup();
    for algorithm in ALGORITHMS {
        let key = format!("cost:{algorithm}");
        let run = |con: &mut redis::Connection, cost: &str| {
            check(
                con,
                &limiter_args(&key, "5", "1h", algorithm, &["COST", cost]),
            )
        };
        let d = run(&mut con, "2");
        assert_eq!(
            (d.allowed, d.limit, d.remaining, d.retry_after),
            (1, 5, 3, 0),
            "{algorithm}: {d:?}"
        );
        assert!(d.reset_after > 0);
        let before = snapshot(&mut con, &key, has_pexpiretime);
        let d = run(&mut con, "4");
        assert_eq!(
            (d.allowed, d.limit, d.remaining),
            (0, 5, 3),
            "{algorithm}: 2 + 4 > 5: {d:?}"
        );
        assert!(d.retry_after > 0, "{algorithm}: it will fit later: {d:?}");
        assert_unchanged(&mut con, &key, &before, has_pexpiretime, algorithm);
        let d = run(&mut con, "3");
        assert_eq!(
            (d.allowed, d.remaining),
            (1, 0),
            "{algorithm}: 2 + 3 = 5: {d:?}"
        );
        let before = snapshot(&mut con, &key, has_pexpiretime);
        let d = run(&mut con, "6");
        assert_eq!(
            (d.allowed, d.limit, d.remaining, d.retry_after),
            (0, 5, 0, -1),
            "{algorithm}: {d:?}"
        );
        assert_unchanged(&mut con, &key, &before, has_pexpiretime, algorithm);

        let fresh = format!("cost-fresh:{algorithm}");
        let d = check(
            &mut con,
            &limiter_args(&fresh, "5", "1h", algorithm, &["COST", "6"]),
        );
        assert_eq!(d.as_array(), [0, 5, 5, 0, -1], "{algorithm}");
        assert!(
            !exists(&mut con, &fresh),
            "{algorithm}: a denied request writes nothing"
        );
        let d = check(
            &mut con,
            &limiter_args(&fresh, "5", "1h", algorithm, &["COST", "5"]),
        );
        assert_eq!((d.allowed, d.remaining), (1, 0), "{algorithm}: {d:?}");
    }
    assert_eq!(get_text(&mut con, "cost:FIXED"), "5");
    let sliding = get_text(&mut con, "cost:SLIDING");
    assert!(
        sliding.starts_with("s:") && sliding.ends_with(":0:5"),
        "{sliding:?}"
    );
}

#[test]
fn cost_zero_only_asks() {
    let (_server, mut con, has_pexpiretime) = setup();
    for algorithm in ALGORITHMS {
        let key = format!("zero:{algorithm}");
        let ask = |con: &mut redis::Connection| {
            check(
                con,
                &limiter_args(&key, "3", "1h", algorithm, &["COST", "0"]),
            )
        };
        assert_eq!(
            ask(&mut con).as_array(),
            [1, 3, 3, 0, 0],
            "{algorithm}: a fresh limiter is full"
        );
        assert!(
            !exists(&mut con, &key),
            "{algorithm}: COST 0 writes nothing"
        );
        check(&mut con, &limiter_args(&key, "3", "1h", algorithm, &[]));
        let before = snapshot(&mut con, &key, has_pexpiretime);
        let d = ask(&mut con);
        assert_eq!(
            (d.allowed, d.limit, d.remaining, d.retry_after),
            (1, 3, 2, 0),
            "{algorithm}: {d:?}"
        );
        assert!(d.reset_after > 0, "{algorithm}: {d:?}");
        assert_unchanged(&mut con, &key, &before, has_pexpiretime, algorithm);
        check(
            &mut con,
            &limiter_args(&key, "3", "1h", algorithm, &["COST", "2"]),
        );
        let before = snapshot(&mut con, &key, has_pexpiretime);
        let d = ask(&mut con);
        assert_eq!(
            (d.allowed, d.remaining, d.retry_after),
            (1, 0, 0),
            "{algorithm}: empty but asks for nothing: {d:?}"
        );
        assert_unchanged(&mut con, &key, &before, has_pexpiretime, algorithm);
    }
    assert_eq!(dbsize(&mut con), 3);
}

#[test]
fn dry_run_answers_without_writing() {
    let (_server, mut con, has_pexpiretime) = setup();
    for algorithm in ALGORITHMS {
        let key = format!("dry:{algorithm}");
        let dry = |con: &mut redis::Connection, extra: &[&str]| {
            let mut options = vec!["DRYRUN"];
            options.extend_from_slice(extra);
            check(con, &limiter_args(&key, "3", "1h", algorithm, &options))
        };
        let d = dry(&mut con, &[]);
        assert_eq!(
            (d.allowed, d.limit, d.remaining, d.retry_after),
            (1, 3, 2, 0),
            "{algorithm}: {d:?}"
        );
        assert!(d.reset_after > 0);
        assert!(
            !exists(&mut con, &key),
            "{algorithm}: DRYRUN writes nothing"
        );

        check(&mut con, &limiter_args(&key, "3", "1h", algorithm, &[]));
        let before = snapshot(&mut con, &key, has_pexpiretime);
        for _ in 0..3 {
            let d = dry(&mut con, &[]);
            assert_eq!(
                (d.allowed, d.remaining),
                (1, 1),
                "{algorithm}: dry runs do not add up: {d:?}"
            );
        }
        assert_unchanged(&mut con, &key, &before, has_pexpiretime, algorithm);

        check(
            &mut con,
            &limiter_args(&key, "3", "1h", algorithm, &["COST", "2"]),
        );
        let before = snapshot(&mut con, &key, has_pexpiretime);
        let d = dry(&mut con, &[]);
        assert_eq!((d.allowed, d.remaining), (0, 0), "{algorithm}: {d:?}");
        assert!(d.retry_after > 0, "{algorithm}: {d:?}");
        let d = dry(&mut con, &["COST", "4"]);
        assert_eq!((d.allowed, d.retry_after), (0, -1), "{algorithm}: {d:?}");
        assert_unchanged(&mut con, &key, &before, has_pexpiretime, algorithm);
    }
}

/// QUOTA answers the standing now, with nothing spent: a fresh key shows the full capacity,
/// `remaining` is what is left (one more than a cost-1 CHECK leaves when it is admitted), and
/// `allowed`/`retry_after_ms` are those of a request of `COST n` (default 1). It never writes.
#[test]
fn quota_is_the_standing_now_and_never_writes() {
    let (_server, mut con, has_pexpiretime) = setup();
    for (algorithm, extra, capacity) in [
        ("FIXED", &[][..], 3),
        ("SLIDING", &[][..], 3),
        ("GCRA", &[][..], 3),
        ("GCRA", &["BURST", "4"][..], 4),
    ] {
        let key = format!("quota:{algorithm}:{capacity}");
        let config = limiter_args(&key, "3", "1h", algorithm, extra);
        let with = |words: &[&str]| {
            let mut args = config.clone();
            args.extend(words.iter().map(|w| w.to_string()));
            args
        };

        let q = quota(&mut con, &config);
        assert_eq!(
            q.as_array(),
            [1, capacity, capacity, 0, 0],
            "{algorithm}: a fresh key shows the full capacity"
        );
        assert_eq!(
            quota(&mut con, &with(&["COST", &(capacity + 1).to_string()])).as_array(),
            [0, capacity, capacity, 0, -1],
            "{algorithm}: a cost above the capacity never fits"
        );
        assert!(!exists(&mut con, &key), "{algorithm}: QUOTA never writes");

        for spent in 0..=capacity {
            let before = snapshot(&mut con, &key, has_pexpiretime);
            let start = Instant::now();
            let q = quota(&mut con, &config);
            let q2 = quota(&mut con, &with(&["COST", "2"]));
            let dry2 = check(&mut con, &with(&["COST", "2", "DRYRUN"]));
            assert_unchanged(&mut con, &key, &before, has_pexpiretime, "QUOTA");
            let c = check(&mut con, &config);
            let context = format!("{algorithm} after {spent} spent");
            // COST n decides as a dry run of cost n would.
            assert_eq!(q2.allowed, dry2.allowed, "{context}: {q2:?} {dry2:?}");
            // QUOTA ran first: its wait is as long, or longer by the time in between.
            assert_between(
                q2.retry_after,
                dry2.retry_after,
                dry2.retry_after + elapsed_ms(start) as i64,
                &context,
            );
            assert_eq!(q.allowed, c.allowed, "{context}: {q:?} {c:?}");
            assert_eq!(q.allowed, i64::from(spent < capacity), "{context}: {q:?}");
            assert_eq!(q.remaining, capacity - spent, "{context}: {q:?}");
            assert_eq!(
                q.remaining,
                c.remaining + c.allowed,
                "{context}: what is left now vs after a cost-1 check: {q:?} {c:?}"
            );
        }
    }
}

#[test]
fn reset_deletes_the_state() {
    let (_server, mut con, _) = setup();
    for algorithm in ALGORITHMS {
        let key = format!("reset:{algorithm}");
        assert_eq!(reset(&mut con, &key), 0, "{algorithm}: no state yet");
        for _ in 0..3 {
            check(&mut con, &limiter_args(&key, "3", "1h", algorithm, &[]));
        }
        assert_eq!(
            check(&mut con, &limiter_args(&key, "3", "1h", algorithm, &[])).allowed,
            0
        );
        assert_eq!(reset(&mut con, &key), 1, "{algorithm}: there was state");
        assert!(
            !exists(&mut con, &key),
            "{algorithm}: RESET deletes the key"
        );
        assert_eq!(reset(&mut con, &key), 0, "{algorithm}: already deleted");
        let d = check(&mut con, &limiter_args(&key, "3", "1h", algorithm, &[]));
        assert_eq!(
            (d.allowed, d.remaining),
            (1, 2),
            "{algorithm}: starts afresh: {d:?}"
        );
    }
}

#[test]
fn keywords_and_algorithm_names_are_case_insensitive() {
    let (_server, mut con, _) = setup();
    let d = check(
        &mut con,
        &[
            "k1",
            "3",
            "1h",
            "algorithm",
            "gcra",
            "burst",
            "4",
            "cost",
            "2",
            "dryrun",
        ],
    );
    assert_eq!((d.allowed, d.limit, d.remaining), (1, 4, 2), "{d:?}");
    assert!(!exists(&mut con, "k1"));
    for (name, key) in [
        ("fixed", "f"),
        ("Fixed", "f2"),
        ("sliding", "s"),
        ("SlIdInG", "s2"),
        ("gCrA", "g"),
    ] {
        let d = decision(&call(
            &mut con,
            &["RateLimit.Check", key, "3", "1h", "Algorithm", name],
        ));
        assert_eq!((d.allowed, d.remaining), (1, 2), "{name}: {d:?}");
    }
    let lower = call(
        &mut con,
        &["ratelimit.check", "lower", "3", "1h", "Cost", "2"],
    );
    assert_eq!(decision(&lower).remaining, 1);
    let q = call(
        &mut con,
        &[
            "ratelimit.quota",
            "lower",
            "3",
            "1h",
            "ALGORITHM",
            "fixed",
            "cost",
            "2",
        ],
    );
    assert_eq!((decision(&q).allowed, decision(&q).remaining), (0, 1));
    assert_eq!(
        call(&mut con, &["Ratelimit.Reset", "lower"]),
        redis::Value::Int(1)
    );

    for key in ["f", "f2"] {
        assert_eq!(get_text(&mut con, key), "1");
    }
    for key in ["s", "s2"] {
        assert!(get_text(&mut con, key).starts_with("s:"));
    }
    assert!(get_text(&mut con, "g").parse::<i64>().unwrap() < 0);
}

#[test]
fn options_come_in_any_order() {
    let (_server, mut con, _) = setup();
    // Fresh keys and dry runs: the replies do not depend on the clock, so they are equal.
    let orders: [&[&str]; 4] = [
        &["ALGORITHM", "GCRA", "BURST", "4", "COST", "2", "DRYRUN"],
        &["DRYRUN", "COST", "2", "BURST", "4", "ALGORITHM", "GCRA"],
        &["BURST", "4", "ALGORITHM", "GCRA", "DRYRUN", "COST", "2"],
        &["COST", "2", "DRYRUN", "ALGORITHM", "GCRA", "BURST", "4"],
    ];
    for (i, options) in orders.iter().enumerate() {
        let key = format!("order:{i}");
        let mut full = vec![key.as_str(), "3", "1h"];
        full.extend_from_slice(options);
        let d = check(&mut con, &full);
        // Two units at an interval of 20 minutes.
        assert_eq!(d.as_array(), [1, 4, 2, 2 * 1_200_000, 0], "{options:?}");
        assert!(!exists(&mut con, &key));
    }
    let fixed = check(
        &mut con,
        &["order:f", "3", "1h", "COST", "2", "ALGORITHM", "FIXED"],
    );
    assert_eq!(fixed.as_array(), [1, 3, 1, HOUR_MS, 0]);
    let quota_gcra = quota(
        &mut con,
        &[
            "order:q",
            "3",
            "1h",
            "COST",
            "6",
            "BURST",
            "5",
            "ALGORITHM",
            "GCRA",
        ],
    );
    assert_eq!(quota_gcra.as_array(), [0, 5, 5, 0, -1]);
}

#[test]
fn period_units() {
    let (_server, mut con, has_pexpiretime) = setup();
    let cases: [(&str, i64); 10] = [
        ("1ms", 1),
        ("1500ms", 1500),
        ("1", 1000),
        ("60", 60_000),
        ("10s", 10_000),
        ("5m", 300_000),
        ("2h", 7_200_000),
        ("1d", DAY_MS),
        ("3650d", 3650 * DAY_MS),
        ("315360000", 3650 * DAY_MS),
    ];
    for (period, ms) in cases {
        // A dry run on a fresh FIXED key opens a window of exactly one period.
        let dry_key = format!("p:dry:{period}");
        let d = check(&mut con, &[dry_key.as_str(), "3", period, "DRYRUN"]);
        assert_between(
            d.reset_after,
            (ms - 2).max(0),
            ms,
            &format!("FIXED {period}"),
        );
        // One unit of a GCRA limit of 1 drips back in one period.
        let gcra_key = format!("p:gcra:{period}");
        let d = check(
            &mut con,
            &[
                gcra_key.as_str(),
                "1",
                period,
                "ALGORITHM",
                "GCRA",
                "DRYRUN",
            ],
        );
        assert_between(
            d.reset_after,
            (ms - 2).max(0),
            ms,
            &format!("GCRA {period}"),
        );
        if ms >= 60_000 {
            let key = format!("p:{period}");
            let t0 = server_time_ms(&mut con) as i64;
            check(&mut con, &[key.as_str(), "3", period]);
            let t1 = server_time_ms(&mut con) as i64;
            let at = expire_at_ms(&mut con, &key, has_pexpiretime).expect("an expiry") as i64;
            let slack = expiry_tolerance_ms(has_pexpiretime) as i64;
            assert_between(
                at,
                t0 + ms - slack,
                t1 + ms + slack,
                &format!("window end for {period}"),
            );
        }
    }
}

#[test]
fn limits_and_costs_at_their_bounds() {
    let (_server, mut con, _) = setup();
    let max = "1000000000000000";
    let max_n: i64 = 1_000_000_000_000_000;
    for algorithm in ALGORITHMS {
        let one = format!("one:{algorithm}");
        let d = check(&mut con, &limiter_args(&one, "1", "1d", algorithm, &[]));
        assert_eq!(
            (d.allowed, d.limit, d.remaining),
            (1, 1, 0),
            "{algorithm}: {d:?}"
        );
        let d = check(&mut con, &limiter_args(&one, "1", "1d", algorithm, &[]));
        assert_eq!(d.allowed, 0, "{algorithm}: a limit of 1: {d:?}");

        let big = format!("big:{algorithm}");
        let d = check(&mut con, &limiter_args(&big, max, "3650d", algorithm, &[]));
        assert_eq!(
            (d.allowed, d.limit, d.remaining),
            (1, max_n, max_n - 1),
            "{algorithm}: {d:?}"
        );

        let all = format!("all:{algorithm}");
        let d = check(
            &mut con,
            &limiter_args(&all, max, "3650d", algorithm, &["COST", max]),
        );
        assert_eq!(
            (d.allowed, d.limit, d.remaining),
            (1, max_n, 0),
            "{algorithm}: {d:?}"
        );
    }
    for algorithm in ["FIXED", "SLIDING"] {
        let d = check(
            &mut con,
            &limiter_args(&format!("all:{algorithm}"), max, "3650d", algorithm, &[]),
        );
        assert_eq!(
            (d.allowed, d.remaining),
            (0, 0),
            "{algorithm}: all spent: {d:?}"
        );
        assert!(d.retry_after > 0);
    }
    // GCRA intervals far below a nanosecond stay exact: 10^15 units per millisecond take exactly
    // one millisecond to drip back, and a single one rounds up to a millisecond.
    let d = check(
        &mut con,
        &["sub", max, "1ms", "ALGORITHM", "GCRA", "DRYRUN"],
    );
    assert_eq!(d.as_array(), [1, max_n, max_n - 1, 1, 0]);
    let d = quota(
        &mut con,
        &["sub", max, "1ms", "ALGORITHM", "GCRA", "COST", max],
    );
    assert_eq!(d.as_array(), [1, max_n, max_n, 0, 0]);
    let d = check(
        &mut con,
        &[
            "sub2",
            max,
            "1ms",
            "ALGORITHM",
            "GCRA",
            "COST",
            max,
            "DRYRUN",
        ],
    );
    assert_eq!(d.as_array(), [1, max_n, 0, 1, 0]);
    let d = check(
        &mut con,
        &[
            "sub3",
            "3",
            "1ms",
            "ALGORITHM",
            "GCRA",
            "BURST",
            max,
            "COST",
            max,
            "DRYRUN",
        ],
    );
    assert_eq!(
        (d.allowed, d.limit, d.remaining, d.retry_after),
        (1, max_n, 0, 0),
        "{d:?}"
    );
    // 10^15 units at 1/3 ms each: 333333333333334 ms, rounded up.
    assert_eq!(d.reset_after, 333_333_333_333_334, "{d:?}");
}
