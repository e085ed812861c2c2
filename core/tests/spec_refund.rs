//! REFUND, specified as tables: units given back, only to the window they were spent in.
mod common;
use common::Op::*;
use common::*;
use ratelimit_core::{Algorithm, Limit};

const START: u64 = EPOCH_ALIGNED_US + 123_456;

#[test]
fn fixed_credits_only_the_window_it_names() {
    let limit = Limit::new(Algorithm::Fixed, 10, 10_000, None).unwrap();
    let mut sim = Sim::new(limit, START);
    let first = START / 1000 + 10_000;
    let second = START / 1000 + 2_000 + 10_000;
    #[rustfmt::skip]
    let steps = [
        // at_ms, op, n, (refunded or allowed, remaining, reset_after_ms, retry_after_ms)
        step(0,      Check,               6, (1, 4, 10_000, 0)),
        step(0,      Window,              0, (first, 0, 0, 0)),
        step(1_000,  Refund(None),        2, (2, 6,  9_000, 0)),
        step(1_000,  Refund(Some(first)), 5, (4, 10,     0, 0)), // back to full: deleted
        step(2_000,  Check,               3, (1, 7, 10_000, 0)), // so a new window opens
        step(2_000,  Window,              0, (second, 0, 0, 0)),
        step(2_000,  Refund(Some(first)), 3, (0, 7, 10_000, 0)), // that window has ended
        step(3_000,  Refund(Some(second)),1, (1, 8,  9_000, 0)),
        step(12_000, Refund(Some(second)),2, (0, 10,     0, 0)), // ended with its window
        step(12_000, Refund(None),        2, (0, 10,     0, 0)),
    ];
    run_steps(&mut sim, START, &steps);
    assert_eq!(
        sim.stored().map(|(v, _)| v),
        Some(b"2".to_vec()),
        "nothing rewritten"
    );
}

#[test]
fn gcra_moves_its_arrival_time_back_never_before_now() {
    let limit = Limit::new(Algorithm::Gcra, 10, 10_000, None).unwrap();
    let mut sim = Sim::new(limit, START);
    #[rustfmt::skip]
    let steps = [
        step(0,     Check,        5,   (1, 5,  5_000, 0)),
        step(1_000, Refund(None), 2,   (2, 8,  2_000, 0)),
        step(1_000, Refund(None), 5,   (2, 10,     0, 0)), // only 2 s were left: deleted
        step(1_000, Check,        10,  (1, 0, 10_000, 0)),
        step(1_500, Refund(None), 3,   (3, 3,  6_500, 0)),
        step(1_500, Refund(None), 100, (7, 10,     0, 0)), // 6.5 intervals: 7 given back
        step(2_000, Force,        25,  (0, 0, 25_000, 16_000)),
        step(2_000, Refund(None), 10,  (10, 0, 15_000, 6_000)), // debt paid back in part
        step(2_000, Refund(Some(7)), 5, (5, 0, 10_000, 1_000)), // GCRA has no windows
    ];
    run_steps(&mut sim, START, &steps);
}

#[test]
fn sliding_credits_the_current_or_the_previous_window() {
    let limit = Limit::new(Algorithm::Sliding, 10, 10_000, None).unwrap();
    let mut sim = Sim::new(limit, EPOCH_ALIGNED_US);
    let w0 = EPOCH_ALIGNED_US / 10_000_000;
    #[rustfmt::skip]
    let steps = [
        step(0,      Check,                6, (1, 4, 20_000, 0)),
        step(0,      Window,               0, (w0, 0, 0, 0)),
        step(1_000,  Refund(None),         2, (2, 6, 19_000, 0)),
        // The next window, 2 s in: 4 spent in w0 weigh 4 * 0.8.
        step(12_000, Quota,                1, (1, 6,  8_000, 0)),
        step(12_000, Refund(Some(w0)),     1, (1, 7,  8_000, 0)),
        step(12_000, Refund(Some(w0 + 1)), 1, (0, 7,  8_000, 0)), // nothing spent in w0 + 1
        step(12_000, Refund(Some(w0 - 1)), 5, (0, 7,  8_000, 0)), // too old
        step(12_000, Refund(Some(w0)),     5, (3, 10,     0, 0)), // all given back: deleted
    ];
    run_steps(&mut sim, EPOCH_ALIGNED_US, &steps);
    assert_eq!(sim.stored(), None);
}
