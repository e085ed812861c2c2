//! QUOTA, specified as tables: the standing now, with nothing spent.
mod common;
use common::Op::*;
use common::*;
use ratelimit_core::{Algorithm, Limit};

const START: u64 = EPOCH_ALIGNED_US + 123_456;

#[test]
fn quota_is_the_standing_now() {
    let limit = Limit::new(Algorithm::Fixed, 3, 10_000, None).unwrap();
    let mut sim = Sim::new(limit, START);
    #[rustfmt::skip]
    let steps = [
        step(0, Quota, 1, (1, 3,      0, 0)),      // a fresh key shows the full capacity
        step(0, Check, 1, (1, 2, 10_000, 0)),
        step(0, Quota, 1, (1, 2, 10_000, 0)),      // what is left, with nothing spent...
        step(0, Dry,   1, (1, 1, 10_000, 0)),      // ...where a dry run shows one unit less
        step(0, Quota, 2, (1, 2, 10_000, 0)),
        step(0, Quota, 3, (0, 2, 10_000, 10_000)),
        step(0, Quota, 4, (0, 2, 10_000, -1)),
        step(0, Quota, 0, (1, 2, 10_000, 0)),
    ];
    run_steps(&mut sim, START, &steps);

    let limit = Limit::new(Algorithm::Gcra, 10, 10_000, None).unwrap();
    let mut sim = Sim::new(limit, START);
    #[rustfmt::skip]
    let steps = [
        step(0, Quota, 1, (1, 10,     0, 0)),
        step(0, Check, 4, (1, 6,  4_000, 0)),
        step(0, Quota, 1, (1, 6,  4_000, 0)),
        step(0, Quota, 7, (0, 6,  4_000, 1_000)),
    ];
    run_steps(&mut sim, START, &steps);

    let limit = Limit::new(Algorithm::Sliding, 10, 10_000, None).unwrap();
    let mut sim = Sim::new(limit, EPOCH_ALIGNED_US);
    #[rustfmt::skip]
    let steps = [
        step(0, Quota, 1,  (1, 10,      0, 0)),
        step(0, Check, 3,  (1, 7,  20_000, 0)),
        step(0, Quota, 1,  (1, 7,  20_000, 0)),
        step(0, Quota, 11, (0, 7,  20_000, -1)),
    ];
    run_steps(&mut sim, EPOCH_ALIGNED_US, &steps);
}
