//! SLIDING, specified as a table: one row per request. Windows are aligned to multiples of the
//! period since the epoch, so `START` is the beginning of a window.
mod common;
use common::*;
use ratelimit_core::{Algorithm, Limit};

const START: u64 = EPOCH_ALIGNED_US;

#[test]
fn ten_per_ten_seconds() {
    let limit = Limit::new(Algorithm::Sliding, 10, 10_000, None).unwrap();
    #[rustfmt::skip]
    let rows = [
        // at_ms, cost, (allowed, remaining, reset_after_ms, retry_after_ms)
        row(0,      5,  (1, 5, 20_000, 0)),  // counted in window 0, gone after window 1
        row(5_000,  5,  (1, 0, 15_000, 0)),  // the exact boundary: estimate + cost == limit
        row(5_000,  1,  (0, 0, 15_000, 6_000)), // must wait for window 1, where 10 decays to 9
        row(11_000, 1,  (1, 0, 19_000, 0)),  // 10 * 0.9 + 0 + 1 == 10: allowed at the retry time
        row(11_000, 1,  (0, 0, 19_000, 1_000)), // 9 + 1 + 1 > 10: wait until 10 * 0.8 + 1 + 1 == 10
        row(12_000, 1,  (1, 0, 18_000, 0)),
        row(12_500, 1,  (0, 0, 17_500, 500)), // the estimate decays continuously: 9.5 + 1 > 10
        row(13_000, 1,  (1, 0, 17_000, 0)),
        row(15_000, 20, (0, 2, 15_000, -1)), // cost above capacity: never
        row(15_000, 0,  (1, 2, 15_000, 0)),  // cost 0 only asks: 10 * 0.5 + 3 = 8 spent
        row(21_000, 1,  (1, 6, 19_000, 0)),  // window 2: 3 * 0.9 + 1 = 3.7, remaining rounds down
        row(40_000, 10, (1, 0, 20_000, 0)),  // two windows idle: everything decayed
        dry(40_000, 1,  (0, 0, 20_000, 11_000)),
        row(50_000, 1,  (0, 0, 10_000, 1_000)), // 10 * 1.0: the previous count decays from here
        row(51_000, 1,  (1, 0, 19_000, 0)),
    ];
    run_table(limit, START, 10, &rows);
}

#[test]
fn the_window_boundary_carries_the_count_over() {
    let limit = Limit::new(Algorithm::Sliding, 4, 1_000, None).unwrap();
    #[rustfmt::skip]
    let rows = [
        row(999,   4, (1, 0, 1_001, 0)),
        row(1_000, 1, (0, 0, 1_000, 250)), // 4 * 1.0: nothing has decayed yet
        row(1_250, 1, (1, 0, 1_750, 0)),   // 4 * 0.75 + 1 == 4
        row(1_999, 0, (1, 2, 1_001, 0)),   // 4 * 0.001 + 1 = 1.004, remaining rounds down
        row(2_000, 4, (0, 3, 1_000, 1_000)), // 1 * 1.0 + 4 > 4; at 3.0 s nothing is left
        row(3_000, 4, (1, 0, 2_000, 0)),
    ];
    run_table(limit, START, 4, &rows);
}

#[test]
fn huge_limits_and_periods() {
    const MAX: u64 = 1_000_000_000_000_000;
    const P: u64 = 3650 * 86_400_000;
    let limit = Limit::new(Algorithm::Sliding, MAX, P, None).unwrap();
    #[rustfmt::skip]
    let rows = [
        row(0,         MAX,     (1, 0, 2 * P, 0)),
        row(0,         1,       (0, 0, 2 * P, P as i64 + 1)),
        row(P / 2,     MAX,     (0, 0, P * 3 / 2, (P * 3 / 2) as i64)),
        row(P * 3 / 2, MAX / 2, (1, 0, P * 3 / 2, 0)), // half of the previous window has decayed
    ];
    run_table(limit, START, MAX, &rows);

    let limit = Limit::new(Algorithm::Sliding, MAX, 1, None).unwrap();
    #[rustfmt::skip]
    let rows = [
        row(0,           MAX,     (1, 0, 2, 0)),
        row_us(500,      1,       (0, 0, 2, 1)),
        row_us(1_500,    MAX / 2, (1, 0, 2, 0)),
        row_us(1_500,    1,       (0, 0, 2, 1)),
    ];
    run_table(limit, START, MAX, &rows);
}

/// Shortening the period never forgets what was spent: counts written under another period
/// are held in full until the key's old expiry (issue: three units spent on `3 2s`, then
/// `3 1s`, were admitted at once).
#[test]
fn a_shorter_period_holds_what_was_spent() {
    let two_seconds = Limit::new(Algorithm::Sliding, 3, 2_000, None).unwrap();
    let one_second = Limit::new(Algorithm::Sliding, 3, 1_000, None).unwrap();
    let mut sim = Sim::new(two_seconds, START);
    sim.now_us = START + 500_000;
    let d = sim.check(3, false);
    assert_eq!((d.allowed, d.remaining, d.reset_after_ms), (true, 0, 3_500));
    // The key expires at the end of the next 2 s window: 4 s after the start.
    sim.limit = one_second;
    sim.limit_changed = true;
    #[rustfmt::skip]
    let steps = [
        step(600,   Op::Check, 1, (0, 0, 3_400, 3_400)),
        step(600,   Op::Quota, 1, (0, 0, 3_400, 3_400)),
        step(600,   Op::Refund(None), 1, (0, 0, 3_400, 3_400)), // held counts get nothing back
        step(3_999, Op::Check, 1, (0, 0,     1, 1)),
        step(4_000, Op::Check, 1, (1, 2, 2_000, 0)),
    ];
    run_steps(&mut sim, START, &steps);

    // A longer period holds them the same way, until their own expiry.
    let mut sim = Sim::new(one_second, START);
    sim.check(3, false);
    sim.limit = Limit::new(Algorithm::Sliding, 3, 3_600_000, None).unwrap();
    sim.limit_changed = true;
    #[rustfmt::skip]
    let steps = [
        step(1_999, Op::Check, 1, (0, 0, 1, 1)),
        step(2_000, Op::Check, 3, (1, 0, 7_198_000, 0)),
    ];
    run_steps(&mut sim, START, &steps);
}

/// Held counts that leave room admit a request, and that request stores them again, in full,
/// as the current window's on the new period: nothing of them decays at once (they were kept as
/// the new period's previous window, and three more requests got in).
#[test]
fn an_admitted_request_keeps_the_held_counts_in_full() {
    let minute = Limit::new(Algorithm::Sliding, 10, 60_000, None).unwrap();
    let mut sim = Sim::new(minute, START + 30_000_000);
    assert!(sim.check(4, false).allowed);
    sim.now_us = START + 90_000_000;
    assert!(sim.check(5, false).allowed);
    // Previous window 4, current 5: the key expires 3 minutes after the start.
    sim.limit = Limit::new(Algorithm::Sliding, 10, 10_000, None).unwrap();
    sim.limit_changed = true;
    #[rustfmt::skip]
    let steps = [
        step(98_500, Op::Quota, 1, (1, 1, 81_500, 0)), // 9 held, until the old expiry
        step(98_500, Op::Check, 1, (1, 0, 11_500, 0)), // 10 in this 10 s window
        step(98_600, Op::Check, 1, (0, 0, 11_400, 2_400)),
        step(99_999, Op::Check, 1, (0, 0, 10_001, 1_001)),
    ];
    run_steps(&mut sim, START, &steps);
    let window = (START + 98_500_000) / 10_000_000;
    assert_eq!(
        sim.stored(),
        Some((
            format!("s:{window}:0:10").into_bytes(),
            Some((window + 2) * 10_000)
        ))
    );
}
