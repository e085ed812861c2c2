//! Each algorithm's decisions, stored values and expiries, against a real server (the contract
//! is shared/COMMANDS.md).
//!
//! Periods are long (an hour or more) wherever a test counts units, so that nothing refills or
//! rolls over while it runs; times in replies are bounded by the server's clock read around the
//! calls, never by sleeping.

mod common;

use common::*;
use std::time::Instant;

#[test]
fn fixed_window_counts_and_denies_beyond_the_limit() {
    let (_server, mut con, has_pexpiretime) = setup();
    let t0 = server_time_ms(&mut con) as i64;
    let first = check(&mut con, &["user:1", "3", "10s"]);
    let t1 = server_time_ms(&mut con) as i64;
    assert_eq!((first.allowed, first.limit, first.remaining), (1, 3, 2));
    assert_between(
        first.reset_after,
        9998,
        10_000,
        "reset_after of the first request",
    );
    assert_eq!(first.retry_after, 0);
    assert_eq!(
        get_text(&mut con, "user:1"),
        "1",
        "FIXED stores the bare count"
    );
    let ttl = pttl(&mut con, "user:1");
    assert_between(ttl, 1, 10_000, "PTTL after the first request");
    let window_end = expire_at_ms(&mut con, "user:1", has_pexpiretime).expect("an expiry") as i64;
    let slack = expiry_tolerance_ms(has_pexpiretime) as i64;
    assert_between(
        window_end,
        t0 + 10_000 - slack,
        t1 + 10_000 + slack,
        "the window's end",
    );

    let second = check(&mut con, &["user:1", "3", "10s"]);
    assert_eq!(
        (
            second.allowed,
            second.limit,
            second.remaining,
            second.retry_after
        ),
        (1, 3, 1, 0)
    );
    assert!(second.reset_after <= first.reset_after && second.reset_after > 0);
    assert_eq!(get_text(&mut con, "user:1"), "2");
    let third = check(&mut con, &["user:1", "3", "10s"]);
    assert_eq!(
        (
            third.allowed,
            third.limit,
            third.remaining,
            third.retry_after
        ),
        (1, 3, 0, 0)
    );
    assert_eq!(get_text(&mut con, "user:1"), "3");
    let after_third = snapshot(&mut con, "user:1", has_pexpiretime);
    if has_pexpiretime {
        assert_eq!(
            after_third.expire_at,
            Some(window_end as u64),
            "the TTL is set once per window, never extended by later hits"
        );
    }

    let fourth = check(&mut con, &["user:1", "3", "10s"]);
    assert_eq!(
        (fourth.allowed, fourth.limit, fourth.remaining),
        (0, 3, 0),
        "{fourth:?}"
    );
    assert!(fourth.retry_after > 0, "{fourth:?}");
    assert!(
        fourth.reset_after > 0 && fourth.reset_after <= third.reset_after,
        "{fourth:?}"
    );
    assert_eq!(
        fourth.retry_after, fourth.reset_after,
        "FIXED: a denied request retries at the window's end"
    );
    assert_unchanged(
        &mut con,
        "user:1",
        &after_third,
        has_pexpiretime,
        "after a denial",
    );
}

#[test]
fn sliding_window_stores_both_windows_and_decays() {
    let (_server, mut con, has_pexpiretime) = setup();
    let t0 = server_time_ms(&mut con) as i64;
    let first = check(&mut con, &limiter_args("s1", "3", "1d", "SLIDING", &[]));
    let t1 = server_time_ms(&mut con) as i64;
    assert_eq!(
        (
            first.allowed,
            first.limit,
            first.remaining,
            first.retry_after
        ),
        (1, 3, 2, 0)
    );
    assert_between(first.reset_after, 1, 2 * DAY_MS, "reset_after");
    let value = get_text(&mut con, "s1");
    assert!(
        value.starts_with("s:"),
        "SLIDING stores a string starting \"s:\": {value:?}"
    );
    let windows = [t0 / DAY_MS, t1 / DAY_MS];
    let window = windows
        .iter()
        .copied()
        .find(|w| value == format!("s:{w}:0:1"))
        .unwrap_or_else(|| {
            panic!("expected s:<window>:0:1 with a window in {windows:?}, got {value:?}")
        });
    // The key lives until the estimate has decayed to zero: the end of the next window at most.
    let expiry = expire_at_ms(&mut con, "s1", has_pexpiretime).expect("an expiry") as i64;
    assert!(
        expiry > (window + 1) * DAY_MS && expiry <= (window + 2) * DAY_MS + 25,
        "expiry {expiry} should be in the next window ({window} + 1)"
    );

    check(&mut con, &limiter_args("s1", "3", "1d", "SLIDING", &[]));
    let third = check(&mut con, &limiter_args("s1", "3", "1d", "sliding", &[]));
    assert_eq!((third.allowed, third.remaining), (1, 0), "{third:?}");
    assert_eq!(get_text(&mut con, "s1"), format!("s:{window}:0:3"));
    let before = snapshot(&mut con, "s1", has_pexpiretime);
    let denied = check(&mut con, &limiter_args("s1", "3", "1d", "SLIDING", &[]));
    assert_eq!(
        (denied.allowed, denied.limit, denied.remaining),
        (0, 3, 0),
        "{denied:?}"
    );
    assert!(
        denied.retry_after > 0 && denied.reset_after > 0,
        "{denied:?}"
    );
    assert_unchanged(&mut con, "s1", &before, has_pexpiretime, "after a denial");
}

#[test]
fn gcra_stores_a_negative_integer_and_drips_back() {
    let (_server, mut con, has_pexpiretime) = setup();
    let start = Instant::now();
    let t0 = server_time_ms(&mut con) as i64;
    let first = check(&mut con, &limiter_args("g1", "3", "10s", "GCRA", &[]));
    let t1 = server_time_ms(&mut con) as i64;
    // The emission interval is 10000/3 ms; one unit takes ceil(3333.3) ms to drip back.
    assert_eq!(first.as_array(), [1, 3, 2, 3334, 0]);
    let first_value: i64 = get_text(&mut con, "g1")
        .parse()
        .expect("GCRA stores an integer");
    assert!(
        (-(1i64 << 62)..=-1).contains(&first_value),
        "GCRA stores a negative integer (-(1 + tat)): {first_value}"
    );
    let expiry = expire_at_ms(&mut con, "g1", has_pexpiretime).expect("an expiry") as i64;
    let slack = expiry_tolerance_ms(has_pexpiretime) as i64;
    // `t1` is truncated to the millisecond. A server with a microsecond clock (Redis 7.2+,
    // Valkey) may have decided up to 0.999 ms after `t1`, and the expiry, `now + 3333.3` ms
    // rounded up, can then be `t1 + 3335`.
    assert_between(
        expiry,
        t0 + 3333 - slack,
        t1 + 3335 + slack,
        "expiry: back to full capacity",
    );

    let second = check(&mut con, &limiter_args("g1", "3", "10s", "GCRA", &[]));
    assert_eq!((second.allowed, second.remaining), (1, 1), "{second:?}");
    let second_value: i64 = get_text(&mut con, "g1").parse().unwrap();
    assert!(second_value < 0 && second_value != first_value);
    let third = check(&mut con, &limiter_args("g1", "3", "10s", "gcra", &[]));
    assert_eq!(
        (third.allowed, third.remaining, third.retry_after),
        (1, 0, 0),
        "{third:?}"
    );
    let before = snapshot(&mut con, "g1", has_pexpiretime);
    let denied = check(&mut con, &limiter_args("g1", "3", "10s", "GCRA", &[]));
    let elapsed = elapsed_ms(start) as i64;
    assert_eq!(
        (denied.allowed, denied.limit, denied.remaining),
        (0, 3, 0),
        "{denied:?}"
    );
    assert_between(
        third.reset_after,
        10_000 - elapsed,
        10_000,
        "reset_after when empty",
    );
    assert_between(
        denied.retry_after,
        3334 - elapsed,
        3334,
        "retry_after: one interval",
    );
    assert_between(
        denied.reset_after,
        10_000 - elapsed,
        10_000,
        "reset_after of a denial",
    );
    assert_unchanged(&mut con, "g1", &before, has_pexpiretime, "after a denial");
}

#[test]
fn gcra_burst_is_the_capacity() {
    let (_server, mut con, _) = setup();
    for i in 0..5 {
        let d = check(
            &mut con,
            &limiter_args("b", "1", "1h", "GCRA", &["BURST", "5"]),
        );
        assert_eq!(
            (d.allowed, d.limit, d.remaining),
            (1, 5, 4 - i),
            "request {i}: {d:?}"
        );
    }
    let denied = check(
        &mut con,
        &limiter_args("b", "1", "1h", "GCRA", &["BURST", "5"]),
    );
    assert_eq!(
        (denied.allowed, denied.limit, denied.remaining),
        (0, 5, 0),
        "{denied:?}"
    );
    assert_between(
        denied.retry_after,
        1,
        HOUR_MS,
        "one interval of an hour at most",
    );
    let never = check(
        &mut con,
        &limiter_args("b2", "1", "1h", "GCRA", &["BURST", "5", "COST", "6"]),
    );
    assert_eq!(never.as_array(), [0, 5, 5, 0, -1]);
    let all = check(
        &mut con,
        &limiter_args("b3", "1", "1h", "GCRA", &["BURST", "5", "COST", "5"]),
    );
    assert_eq!(
        (all.allowed, all.limit, all.remaining),
        (1, 5, 0),
        "{all:?}"
    );
    assert_eq!(
        all.reset_after,
        5 * HOUR_MS,
        "five intervals of an hour to drip back"
    );
    // A burst below the limit.
    let small = check(
        &mut con,
        &limiter_args("b4", "10", "1h", "GCRA", &["BURST", "2"]),
    );
    assert_eq!(
        (small.allowed, small.limit, small.remaining),
        (1, 2, 1),
        "{small:?}"
    );
    check(
        &mut con,
        &limiter_args("b4", "10", "1h", "GCRA", &["BURST", "2"]),
    );
    let small_denied = check(
        &mut con,
        &limiter_args("b4", "10", "1h", "GCRA", &["BURST", "2"]),
    );
    assert_eq!(small_denied.allowed, 0, "{small_denied:?}");
}

#[test]
fn the_largest_gcra_debt_does_not_overflow() {
    let (_server, mut con, _) = setup();
    let max = "1000000000000000";
    // A burst of 10^15 units of 3650 days each: far more milliseconds than an i64 holds.
    let d = check(
        &mut con,
        &[
            "debt",
            "1",
            "3650d",
            "ALGORITHM",
            "GCRA",
            "BURST",
            max,
            "COST",
            max,
        ],
    );
    assert_eq!(
        (d.allowed, d.limit, d.remaining, d.retry_after),
        (1, 1_000_000_000_000_000, 0, 0),
        "{d:?}"
    );
    assert!(d.reset_after > 3650 * DAY_MS, "{d:?}");
    assert!(pttl(&mut con, "debt") > 0, "the key exists and expires");
    let d = check(
        &mut con,
        &["debt", "1", "3650d", "ALGORITHM", "GCRA", "BURST", max],
    );
    assert_eq!((d.allowed, d.remaining), (0, 0), "{d:?}");
    assert!(d.retry_after > 0, "{d:?}");
    let ping: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(ping, "PONG");
}

#[test]
fn a_count_written_by_hand_is_a_fixed_window() {
    let (_server, mut con, _) = setup();
    let _: () = redis::cmd("SET")
        .arg("hand")
        .arg("2")
        .query(&mut con)
        .unwrap();
    let d = check(&mut con, &["hand", "3", "1h"]);
    assert_eq!((d.allowed, d.limit, d.remaining), (1, 3, 0), "{d:?}");
    assert_eq!(get_text(&mut con, "hand"), "3");
    let d = check(&mut con, &["hand", "3", "1h"]);
    assert_eq!(d.allowed, 0, "{d:?}");
}

/// SLIDING weighs the previous window by the part of it still inside the sliding window:
/// `estimate = previous * (1 - elapsed / period) + current`. States are written by hand in the
/// documented format `s:<window>:<previous>:<current>`, and the expected replies computed from
/// the server's clock read around the call.
#[test]
fn sliding_window_weighs_the_previous_window() {
    let (_server, mut con, _) = setup();
    let period = DAY_MS;
    let set = |con: &mut redis::Connection, key: &str, value: String| {
        let _: () = redis::cmd("SET").arg(key).arg(value).query(con).unwrap();
    };
    let t0 = server_time_ms(&mut con) as i64;
    let window = t0 / period;
    // Fractions of the current window elapsed, before and after the calls (+1: rounding up).
    let fraction = |t: i64| (t - window * period) as f64 / period as f64;

    // 50 in the previous window and 10 in this one: a dry run spends one more in its answer.
    set(&mut con, "both", format!("s:{window}:50:10"));
    // The previous window's count is the stored current count of the window before.
    set(&mut con, "rolled", format!("s:{}:7:1000", window - 1));
    // Two windows ago counts for nothing.
    set(&mut con, "stale", format!("s:{}:50:50", window - 2));
    let f0 = fraction(t0);
    let previous_big: i64 = if f0 < 0.85 { 1000 } else { 1_000_000 };
    if previous_big != 1000 {
        set(
            &mut con,
            "rolled",
            format!("s:{}:7:{previous_big}", window - 1),
        );
    }
    let dry = |con: &mut redis::Connection, key: &str| {
        check(con, &[key, "100", "1d", "ALGORITHM", "SLIDING", "DRYRUN"])
    };
    let both = dry(&mut con, "both");
    let rolled = dry(&mut con, "rolled");
    let stale = dry(&mut con, "stale");
    let t1 = server_time_ms(&mut con) as i64 + 1;
    if t1 / period != window || fraction(t1) > 0.9999 {
        eprintln!("skipped: the calls straddled the end of a day");
        return;
    }
    let f1 = fraction(t1);

    // remaining = 100 - ceil(50 * (1 - f) + 10 + 1) = floor(39 + 50 f), maybe one less.
    let low = (39.0 + 50.0 * f0).floor() as i64 - 1;
    let high = (39.0 + 50.0 * f1).floor() as i64;
    assert_eq!((both.allowed, both.limit), (1, 100), "{both:?}");
    assert_between(
        both.remaining,
        low,
        high,
        "remaining with 50 previous and 10 current",
    );
    // Back to full capacity when this window's 11 have left the sliding window.
    let full_at = (window + 2) * period;
    assert_between(
        both.reset_after,
        full_at - t1,
        full_at - t0 + 1,
        "reset_after",
    );

    // previous_big * (1 - f) + 1 <= 100 from f = 1 - 99 / previous_big on.
    assert_eq!((rolled.allowed, rolled.remaining), (0, 0), "{rolled:?}");
    let admit_at = (window + 1) * period - 99 * period / previous_big;
    assert_between(
        rolled.retry_after,
        admit_at - t1,
        admit_at - t0 + 1,
        "retry_after",
    );
    let next_window = (window + 1) * period;
    assert_between(
        rolled.reset_after,
        next_window - t1,
        next_window - t0 + 1,
        "reset_after",
    );

    assert_eq!(
        (stale.allowed, stale.remaining, stale.retry_after),
        (1, 99, 0),
        "{stale:?}"
    );
}

/// GCRA "stores one number, the theoretical arrival time": a time, so a limiter whose limit is
/// changed keeps what was spent. After 5 of 10 per hour are spent (the arrival time is 30
/// minutes ahead), a limit of 11 per hour (an interval of 327.27 s) has 5.5 units in use. The
/// stored number is in units that depend on the configuration; the key's expiry carries the time
/// across a change (core/src/gcra.rs).
#[test]
fn gcra_state_is_a_time_that_survives_a_change_of_limit() {
    let (_server, mut con, _) = setup();
    check(
        &mut con,
        &["g", "10", "1h", "ALGORITHM", "GCRA", "COST", "5"],
    );
    for (limit, expected) in [
        ("10", 4),
        ("20", 9),
        ("9", 3),
        ("11", 4),
        ("7", 2),
        ("100", 49),
    ] {
        let d = check(&mut con, &["g", limit, "1h", "ALGORITHM", "GCRA", "DRYRUN"]);
        assert_between(
            d.remaining,
            expected - 1,
            expected,
            &format!("limit {limit}: {d:?}"),
        );
    }
}
