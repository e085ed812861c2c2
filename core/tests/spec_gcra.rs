//! GCRA, specified as a table: one row per request.
mod common;
use common::*;
use ratelimit_core::{Algorithm, Limit, MAX_TIME_MS};

const START: u64 = EPOCH_ALIGNED_US + 77_000;
const MAX: u64 = 1_000_000_000_000_000;

#[test]
fn ten_per_ten_seconds_with_a_burst_of_three() {
    // T = 1 s, tolerance = 3 s.
    let limit = Limit::new(Algorithm::Gcra, 10, 10_000, Some(3)).unwrap();
    #[rustfmt::skip]
    let rows = [
        // at_ms, cost, (allowed, remaining, reset_after_ms, retry_after_ms)
        row(0,      1, (1, 2, 1_000, 0)),
        row(0,      1, (1, 1, 2_000, 0)),
        row(0,      1, (1, 0, 3_000, 0)),   // the burst is spent
        row(0,      1, (0, 0, 3_000, 1_000)), // one unit drips back after T
        row(1_000,  1, (1, 0, 3_000, 0)),   // the exact boundary: tat + T - now == tolerance
        row(1_500,  1, (0, 0, 2_500, 500)),
        row(1_500,  4, (0, 0, 2_500, -1)),  // cost above the burst: never
        row(1_500,  0, (1, 0, 2_500, 0)),   // cost 0 only asks
        row(4_000,  2, (1, 1, 2_000, 0)),   // refilled: the bucket was full again at 4 s
        row(4_500,  2, (0, 1, 1_500, 500)),
        row(5_000,  2, (1, 0, 3_000, 0)),
        row(20_000, 3, (1, 0, 3_000, 0)),   // idle long enough: the whole burst at once
        dry(20_000, 1, (0, 0, 3_000, 1_000)),
        row(22_500, 1, (1, 1, 1_500, 0)),   // the dry run spent nothing
    ];
    run_table(limit, START, 3, &rows);
}

#[test]
fn the_default_burst_is_the_limit() {
    let limit = Limit::new(Algorithm::Gcra, 5, 1_000, None).unwrap();
    #[rustfmt::skip]
    let rows = [
        row(0,   5, (1, 0, 1_000, 0)),
        row(0,   1, (0, 0, 1_000, 200)),
        row(200, 1, (1, 0, 1_000, 0)),
        row(1_400, 0, (1, 5, 0, 0)),
    ];
    run_table(limit, START, 5, &rows);
}

#[test]
fn intervals_that_are_not_whole_microseconds_stay_exact() {
    // 3 per 10 s: T = 3333.33... ms; one microsecond is 3 GCRA units.
    let limit = Limit::new(Algorithm::Gcra, 3, 10_000, None).unwrap();
    #[rustfmt::skip]
    let rows = [
        row(0,            3, (1, 0, 10_000, 0)),
        row(0,            1, (0, 0, 10_000, 3_334)), // T rounded up to the millisecond
        row_us(3_333_333, 1, (0, 0, 6_667, 1)),      // a third of a microsecond too early
        row_us(3_333_334, 1, (1, 0, 10_000, 0)),     // tat = 13 333 333.33 us
        row_us(6_666_667, 1, (1, 0, 10_000, 0)),     // exactly T later: 16 666 666.67 us
        row_us(6_666_667, 1, (0, 0, 10_000, 3_334)),
    ];
    run_table(limit, START, 3, &rows);
}

#[test]
fn a_million_per_second_drips_one_per_microsecond() {
    // redis-cell stops limiting above 1000/s, where its TTL truncates to 0 ms.
    let limit = Limit::new(Algorithm::Gcra, 1_000_000, 1_000, None).unwrap();
    #[rustfmt::skip]
    let rows = [
        row(0,        1_000_000, (1, 0, 1_000, 0)),
        row(0,        1,         (0, 0, 1_000, 1)),
        row_us(1,     1,         (1, 0, 1_000, 0)),
        row_us(1,     1,         (0, 0, 1_000, 1)),
        row_us(1_000, 999,       (1, 0, 1_000, 0)),
        row_us(1_000, 1,         (0, 0, 1_000, 1)),
    ];
    run_table(limit, START, 1_000_000, &rows);
}

#[test]
fn ten_to_the_fifteen_per_millisecond() {
    // T = 10^-12 ms, far below a nanosecond: exactly 10^12 units drip back per microsecond.
    let limit = Limit::new(Algorithm::Gcra, MAX, 1, None).unwrap();
    let per_us = 1_000_000_000_000;
    #[rustfmt::skip]
    let rows = [
        row(0,    MAX,        (1, 0, 1, 0)),
        row(0,    1,          (0, 0, 1, 1)),
        row_us(1, per_us,     (1, 0, 1, 0)),
        row_us(1, 1,          (0, 0, 1, 1)),
        row_us(1, MAX + 1,    (0, 0, 1, -1)),
        row(5,    MAX,        (1, 0, 1, 0)),
    ];
    run_table(limit, START, MAX, &rows);
}

#[test]
fn huge_bursts_over_long_periods_err_toward_denial() {
    // 999 983 (a prime) per 30 days with the largest burst: (burst + 1) * K would exceed 2^60,
    // so GCRA units are coarser than a microsecond, and only the stored time is rounded up.
    let day = 86_400_000;
    let limit = Limit::new(Algorithm::Gcra, 999_983, 30 * day, Some(MAX)).unwrap();
    #[rustfmt::skip]
    let rows = [
        // The time to refill the whole burst is 82 million years, reported as MAX_TIME_MS.
        row(0,   MAX, (1, 0, MAX_TIME_MS, 0)),
        // T = 2592.04 ms, but a GCRA unit is T / 1152 = 2.25 ms here, and the stored arrival
        // time was rounded up to one: the retry comes up to one unit later than exact.
        row(0,   1,   (0, 0, MAX_TIME_MS, 2_594)),
        row(2_593, 1, (0, 0, MAX_TIME_MS, 1)),
        row(2_594, 1, (1, 0, MAX_TIME_MS, 0)),
    ];
    run_table(limit, START, MAX, &rows);
    // The ten-year period with the largest limit, a burst of one.
    let limit = Limit::new(Algorithm::Gcra, MAX, 3650 * day, Some(1)).unwrap();
    #[rustfmt::skip]
    let rows = [
        row(0, 1, (1, 0, 1, 0)),
        row(0, 1, (0, 0, 1, 1)),
        row(1, 1, (1, 0, 1, 0)),
    ];
    run_table(limit, START, 1, &rows);
}

#[test]
fn a_change_of_limit_keeps_the_time_already_spent() {
    // GCRA units depend on the limit and period (10 per hour counts microseconds, 11 per hour
    // counts elevenths of one), so the stored number means nothing under the new limit. The
    // key's expiry, the arrival time to the millisecond, carries the state across.
    let hour = 3_600_000;
    let ten = Limit::new(Algorithm::Gcra, 10, hour, None).unwrap();
    let mut sim = Sim::new(ten, START);
    for _ in 0..5 {
        assert!(sim.check(1, false).allowed);
    }
    // Half an hour of a 1-hour tolerance is spent. Under 11 per hour (T = 327.27 s), a request
    // leaves floor((3600 - 1800 - 327.27) / 327.27) = 4.
    sim.limit = Limit::new(Algorithm::Gcra, 11, hour, None).unwrap();
    sim.limit_changed = true;
    let d = sim.check(1, true);
    assert_eq!((d.allowed, d.limit, d.remaining), (true, 11, 4));
    // And under 9 per hour (T = 400 s): floor((3600 - 1800 - 400) / 400) = 3.
    sim.limit = Limit::new(Algorithm::Gcra, 9, hour, None).unwrap();
    let d = sim.check(1, true);
    assert_eq!((d.allowed, d.limit, d.remaining), (true, 9, 3));
}
