//! FORCE, specified as tables: usage that already happened is spent even when it does not fit,
//! and the limiter goes into debt until time pays it back.
mod common;
use common::Op::*;
use common::*;
use ratelimit_core::{Algorithm, Limit, MAX_STORED_COUNT};

const START: u64 = EPOCH_ALIGNED_US + 123_456;

#[test]
fn fixed_goes_into_debt_until_the_window_ends() {
    let limit = Limit::new(Algorithm::Fixed, 10, 10_000, None).unwrap();
    let mut sim = Sim::new(limit, START);
    #[rustfmt::skip]
    let steps = [
        // at_ms, op, n, (allowed, remaining, reset_after_ms, retry_after_ms)
        step(0,      Check, 4,  (1, 6, 10_000, 0)),
        step(1_000,  Force, 5,  (1, 1,  9_000, 0)),     // it fits: a plain admission
        step(2_000,  Force, 5,  (0, 0,  8_000, 8_000)), // 14 of 10: spent all the same
        step(3_000,  Check, 1,  (0, 0,  7_000, 7_000)),
        step(3_000,  Check, 0,  (0, 0,  7_000, 7_000)), // in debt, even nothing fits
        step(3_000,  Quota, 1,  (0, 0,  7_000, 7_000)),
        step(4_000,  Force, 20, (0, 0,  6_000, 6_000)), // above the capacity: spent too
        step(10_000, Check, 10, (1, 0, 10_000, 0)),     // the debt ends with the window
    ];
    run_steps(&mut sim, START, &steps);
    assert_eq!(sim.stored().unwrap().0, b"10");
}

#[test]
fn fixed_debt_saturates() {
    let limit = Limit::new(Algorithm::Fixed, 10, 10_000, None).unwrap();
    let mut sim = Sim::new(limit, START);
    let end = START / 1000 + 10_000;
    sim.write(b"9007199254740990", Some(end));
    let d = sim.force(5);
    assert_eq!(
        (d.allowed, d.remaining, d.retry_after_ms),
        (false, 0, 10_000)
    );
    assert_eq!(
        sim.stored().unwrap().0,
        MAX_STORED_COUNT.to_string().as_bytes()
    );
    // A larger count written by hand reads as the bound, and a forced spend stores the bound.
    sim.write(b"9223372036854775807", Some(end));
    sim.force(1);
    assert_eq!(
        sim.stored().unwrap().0,
        MAX_STORED_COUNT.to_string().as_bytes()
    );
}

#[test]
fn gcra_pushes_its_arrival_time_beyond_the_tolerance() {
    // One unit per microsecond; an emission interval of 1 s, a tolerance of 10 s.
    let limit = Limit::new(Algorithm::Gcra, 10, 10_000, None).unwrap();
    let mut sim = Sim::new(limit, START);
    #[rustfmt::skip]
    let steps = [
        step(0,     Check, 10, (1, 0, 10_000, 0)),
        step(0,     Force, 5,  (0, 0, 15_000, 6_000)),  // 15 s ahead; cost 1 fits at 16 - 10
        step(5_999, Check, 1,  (0, 0,  9_001, 1)),
        step(6_000, Check, 1,  (1, 0, 10_000, 0)),
        step(6_000, Check, 1,  (0, 0, 10_000, 1_000)),
        step(6_000, Force, 20, (0, 0, 30_000, 21_000)),
        step(6_000, Quota, 1,  (0, 0, 30_000, 21_000)),
    ];
    run_steps(&mut sim, START, &steps);
    // The debt saturates 2^60 units (here microseconds) ahead of now.
    let d = sim.force(1_000_000_000_000_000);
    let ahead_ms = (1u64 << 60).div_ceil(1000);
    assert_eq!(d.reset_after_ms, ahead_ms);
    assert_eq!(
        d.retry_after_ms as u64,
        ((1u64 << 60) + 1_000_000 - 10_000_000).div_ceil(1000)
    );
    sim.advance_us(1_000_000);
    assert_eq!(sim.quota(1).reset_after_ms, ahead_ms - 1_000);
}

#[test]
fn sliding_counts_debt_in_the_current_window() {
    let limit = Limit::new(Algorithm::Sliding, 10, 10_000, None).unwrap();
    let mut sim = Sim::new(limit, EPOCH_ALIGNED_US);
    #[rustfmt::skip]
    let steps = [
        step(0,      Check, 10, (1, 0, 20_000, 0)),
        // 15 in this window: cost 1 fits once 15 * (1 - e) <= 9 in the next, e = 4 s.
        step(0,      Force, 5,  (0, 0, 20_000, 14_000)),
        step(13_999, Check, 1,  (0, 0,  6_001, 1)),  // 15 * 0.6001 + 1 > 10
        step(14_000, Check, 1,  (1, 0, 16_000, 0)),
        // 9 + 1 of 10: cost 1 fits once 15 * (1 - e) <= 8, e = 4.667 s.
        step(14_000, Check, 1,  (0, 0, 16_000, 667)),
    ];
    run_steps(&mut sim, EPOCH_ALIGNED_US, &steps);
}
