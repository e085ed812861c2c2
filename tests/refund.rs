//! Issue 10, RATELIMIT.REFUND against the contract (shared/COMMANDS.md, version 2): it gives
//! back up to COST units to the window they were spent in, never raises what is left above the
//! capacity, pays back FORCE's debt, and replies `[refunded, limit, remaining, reset_after_ms,
//! retry_after_ms]`, the standing afterwards as QUOTA gives it.

mod common;

use common::*;
use std::thread;
use std::time::{Duration, Instant};

/// `config` followed by `extra`.
fn args(config: &[&str], extra: &[&str]) -> Vec<String> {
    config.iter().chain(extra).map(|w| w.to_string()).collect()
}

/// `RATELIMIT.CHECK args... WITHWINDOW`: the six integers.
fn check_with_window(con: &mut redis::Connection, args: Vec<String>) -> Vec<i64> {
    let mut full = vec!["RATELIMIT.CHECK".to_string()];
    full.extend(args);
    full.push("WITHWINDOW".to_string());
    let values = integers(&call(con, &full));
    assert_eq!(values.len(), 6, "{full:?}: {values:?}");
    values
}

/// Sleeps until the server's clock reads at least `target_ms`.
fn sleep_until(con: &mut redis::Connection, target_ms: u64) {
    loop {
        let now = server_time_ms(con);
        if now >= target_ms {
            return;
        }
        thread::sleep(Duration::from_millis(target_ms - now));
    }
}

/// Asserts that a refund's reply is the standing QUOTA answers right after it: the same
/// capacity and remaining units, and times that differ by no more than the time in between.
/// `start` must be taken before the REFUND was sent: the two decisions may differ by the time
/// between the REFUND and the QUOTA.
fn assert_is_the_standing(
    con: &mut redis::Connection,
    reply: [i64; 5],
    config: &[&str],
    start: Instant,
) {
    let standing = quota(con, config);
    let [_, limit, remaining, reset_after, retry_after] = reply;
    let as_decision = Decision {
        allowed: i64::from(retry_after == 0),
        limit,
        remaining,
        reset_after,
        retry_after,
    };
    assert_same_decision(
        &as_decision,
        &standing,
        elapsed_ms(start),
        &format!("REFUND {config:?} vs QUOTA"),
    );
}

/// FIXED: units spent in a window that has ended are never credited to a later one. A refund
/// with the old window's end as WINDOW gives back nothing and leaves the new window as it was;
/// with the current window's, or with no WINDOW, it credits the current one.
#[test]
fn a_fixed_refund_to_a_window_that_ended_changes_nothing() {
    let (_server, mut con, has_pexpiretime) = setup();
    let config = ["f", "3", "500ms"];
    let with = |extra: &[&str]| args(&config, extra);
    let first = check_with_window(&mut con, with(&["COST", "2"]));
    let old_window = first[5];
    sleep_until(&mut con, old_window as u64 + 1);
    let second = check_with_window(&mut con, with(&[]));
    let new_window = second[5];
    assert!(
        new_window > old_window,
        "a new window: {first:?} {second:?}"
    );
    let before = snapshot(&mut con, "f", has_pexpiretime);
    let old = old_window.to_string();
    let start = Instant::now();
    let reply = refund(&mut con, &with(&["COST", "2", "WINDOW", &old]));
    assert_eq!(
        reply[0], 0,
        "nothing given back to a later window: {reply:?}"
    );
    assert_unchanged(
        &mut con,
        "f",
        &before,
        has_pexpiretime,
        "a refund to an old window",
    );
    assert_is_the_standing(&mut con, reply, &config, start);

    let reply = refund(
        &mut con,
        &with(&["COST", "2", "WINDOW", &new_window.to_string()]),
    );
    assert_eq!(
        reply[..3],
        [1, 3, 3],
        "the current window's one unit: {reply:?}"
    );
    check(&mut con, &config);
    let reply = refund(&mut con, &with(&["COST", "1"]));
    assert_eq!(
        reply[..3],
        [1, 3, 3],
        "no WINDOW: the current window: {reply:?}"
    );
}

/// SLIDING: a refund to the previous window lowers its count, which still weighs on the
/// estimate; two windows later that window is gone, and a refund to it changes nothing.
#[test]
fn a_sliding_refund_reaches_the_previous_window_but_not_an_older_one() {
    let (_server, mut con, has_pexpiretime) = setup();
    let period: u64 = 300;
    let config = ["s", "3", "300ms", "ALGORITHM", "SLIDING"];
    let with = |extra: &[&str]| args(&config, extra);
    let spent = check_with_window(&mut con, with(&["COST", "2"]));
    let window = spent[5] as u64;
    let index = window.to_string();
    sleep_until(&mut con, (window + 1) * period);
    let reply = refund(&mut con, &with(&["COST", "1", "WINDOW", &index]));
    if server_time_ms(&mut con) / period == window + 1 {
        assert_eq!(reply[0], 1, "the previous window's count: {reply:?}");
        let value = get_text(&mut con, "s");
        assert_eq!(value, format!("s:{}:1:0", window + 1), "{reply:?}");
    } else {
        note("skipped a step: the refund came after the next window had ended");
    }

    sleep_until(&mut con, (window + 2) * period);
    let now = check_with_window(&mut con, with(&[]));
    assert!(now[5] as u64 >= window + 2, "{now:?}");
    let before = snapshot(&mut con, "s", has_pexpiretime);
    let reply = refund(&mut con, &with(&["COST", "3", "WINDOW", &index]));
    assert_eq!(
        reply[0], 0,
        "two windows later nothing is given back: {reply:?}"
    );
    assert_unchanged(
        &mut con,
        "s",
        &before,
        has_pexpiretime,
        "a refund to an old window",
    );
}

/// However much is asked back, what is left never exceeds the capacity: a refund gives back at
/// most what was spent (the key is then back to full, and deleted), and a second one nothing.
#[test]
fn a_refund_never_raises_remaining_above_the_capacity() {
    let (_server, mut con, _) = setup();
    for algorithm in ALGORITHMS {
        let key = format!("full:{algorithm}");
        let config = limiter_args(&key, "5", "1h", algorithm, &[]);
        let with = |extra: &[&str]| {
            let mut args = config.clone();
            args.extend(extra.iter().map(|w| w.to_string()));
            args
        };
        check(&mut con, &with(&["COST", "2"]));
        let reply = refund(&mut con, &with(&["COST", "1000000000000000"]));
        assert_eq!(reply, [2, 5, 5, 0, 0], "{algorithm}: the 2 spent, no more");
        assert!(
            !exists(&mut con, &key),
            "{algorithm}: full again, the key is deleted"
        );
        assert_eq!(
            refund(&mut con, &with(&["COST", "3"])),
            [0, 5, 5, 0, 0],
            "{algorithm}"
        );
        assert_eq!(
            quota(&mut con, &config).as_array(),
            [1, 5, 5, 0, 0],
            "{algorithm}"
        );
    }
}

/// FORCE spends beyond the capacity, into debt (remaining 0); REFUND pays the debt back unit
/// by unit, and only once it is paid does anything remain.
#[test]
fn force_debt_is_paid_back_by_refund() {
    let (_server, mut con, _) = setup();
    for algorithm in ALGORITHMS {
        let key = format!("debt:{algorithm}");
        let config = limiter_args(&key, "3", "1h", algorithm, &[]);
        let config: Vec<&str> = config.iter().map(String::as_str).collect();
        let with = |extra: &[&str]| args(&config, extra);
        let forced = check(&mut con, &with(&["COST", "5", "FORCE"]));
        assert_eq!(
            (forced.allowed, forced.remaining),
            (0, 0),
            "{algorithm}: {forced:?}"
        );
        assert!(forced.retry_after > 0, "{algorithm}: {forced:?}");
        assert!(
            !check(&mut con, &config).is_allowed(),
            "{algorithm}: in debt"
        );
        // 5 spent of 3: 2 units of debt to pay before one is left.
        for (units, left) in [(2, 0), (1, 1), (1, 2)] {
            let amount = units.to_string();
            let start = Instant::now();
            let reply = refund(&mut con, &with(&["COST", &amount]));
            assert_eq!(
                (reply[0], reply[2]),
                (units, left),
                "{algorithm}: refunded {units}, {left} left: {reply:?}"
            );
            assert_is_the_standing(&mut con, reply, &config, start);
        }
        assert!(
            check(&mut con, &config).is_allowed(),
            "{algorithm}: debt paid"
        );
    }
}

/// The reply after the refunded units is the standing QUOTA gives right after, whatever the
/// state: partly spent, full, in debt, or back to full.
#[test]
fn the_reply_is_the_standing_quota_gives() {
    let (_server, mut con, _) = setup();
    for algorithm in ALGORITHMS {
        let key = format!("standing:{algorithm}");
        let config = limiter_args(&key, "4", "1h", algorithm, &[]);
        let config: Vec<&str> = config.iter().map(String::as_str).collect();
        let with = |extra: &[&str]| args(&config, extra);
        for (spend, give_back) in [("1", "0"), ("3", "1"), ("9", "2"), ("0", "100")] {
            let mut spending = with(&["COST", spend]);
            if spend == "9" {
                spending.push("FORCE".to_string());
            }
            check(&mut con, &spending);
            let start = Instant::now();
            let reply = refund(&mut con, &with(&["COST", give_back]));
            assert_is_the_standing(&mut con, reply, &config, start);
        }
    }
}
