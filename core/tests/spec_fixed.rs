//! FIXED, specified as a table: one row per request.
mod common;
use common::*;
use ratelimit_core::{Algorithm, Limit};

const START: u64 = EPOCH_ALIGNED_US + 123_456;

#[test]
fn three_per_ten_seconds() {
    let limit = Limit::new(Algorithm::Fixed, 3, 10_000, None).unwrap();
    #[rustfmt::skip]
    let rows = [
        // at_ms, cost, (allowed, remaining, reset_after_ms, retry_after_ms)
        row(0,      1, (1, 2, 10_000, 0)),   // the first request opens a 10 s window
        row(1_000,  1, (1, 1,  9_000, 0)),
        row(2_000,  1, (1, 0,  8_000, 0)),   // the exact boundary: count + cost == limit
        row(3_000,  1, (0, 0,  7_000, 7_000)), // full: retry at the window's end
        row(3_000,  0, (1, 0,  7_000, 0)),   // cost 0 only asks
        row(3_000,  4, (0, 0,  7_000, -1)),  // cost above capacity: never
        row(9_999,  1, (0, 0,      1, 1)),
        row(10_000, 1, (1, 2, 10_000, 0)),   // rollover: a new window opens at this request
        row(10_000, 2, (1, 0, 10_000, 0)),
        row(10_001, 1, (0, 0,  9_999, 9_999)),
        row(20_000, 3, (1, 0, 10_000, 0)),   // a whole window's worth at once
        row(30_000, 0, (1, 3,      0, 0)),   // idle and back to full: nothing to reset
        dry(30_000, 1, (1, 2, 10_000, 0)),   // a dry run answers but writes nothing...
        row(30_500, 1, (1, 2, 10_000, 0)),   // ...so the window opens here, not at 30 000
        row(40_499, 2, (1, 0,      1, 0)),
        row(40_500, 2, (1, 1, 10_000, 0)),
    ];
    run_table(limit, START, 3, &rows);
}

#[test]
fn a_denied_request_does_not_extend_the_window() {
    let limit = Limit::new(Algorithm::Fixed, 1, 1_000, None).unwrap();
    #[rustfmt::skip]
    let rows = [
        row(0,     1, (1, 0, 1_000, 0)),
        row(500,   1, (0, 0,   500, 500)),
        row(999,   1, (0, 0,     1, 1)),
        row(1_000, 1, (1, 0, 1_000, 0)),
    ];
    run_table(limit, START, 1, &rows);
}

#[test]
fn huge_limits_and_periods() {
    let max = 1_000_000_000_000_000;
    let limit = Limit::new(Algorithm::Fixed, max, 1, None).unwrap();
    #[rustfmt::skip]
    let rows = [
        row(0, max, (1, 0, 1, 0)),
        row(0, 1,   (0, 0, 1, 1)),
        row(0, max + 1, (0, 0, 1, -1)),
        row(1, max, (1, 0, 1, 0)),
    ];
    run_table(limit, START, max, &rows);

    let ten_years = 3650 * 86_400_000;
    let limit = Limit::new(Algorithm::Fixed, max, ten_years, None).unwrap();
    #[rustfmt::skip]
    let rows = [
        row(0,             max - 1, (1, 1, ten_years, 0)),
        row(ten_years - 1, 2,       (0, 1, 1, 1)),
        row(ten_years - 1, 1,       (1, 0, 1, 0)),
        row(ten_years,     2,       (1, max - 2, ten_years, 0)),
    ];
    run_table(limit, START, max, &rows);
}
