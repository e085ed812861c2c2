//! Invariants that hold for every configuration and every sequence of requests.
mod common;
use common::*;
use proptest::prelude::*;
use ratelimit_core::{
    Algorithm, FixedState, GcraState, Limit, SlidingState, State, MAX_COUNT, MAX_PERIOD_MS,
};

const DAY_MS: u64 = 86_400_000;
/// A thousand years: retries later than this are not replayed.
const RETRY_HORIZON_MS: i64 = 1000 * 365 * DAY_MS as i64;

fn limits() -> impl Strategy<Value = Limit> {
    let algorithm = prop_oneof![
        Just(Algorithm::Fixed),
        Just(Algorithm::Sliding),
        Just(Algorithm::Gcra)
    ];
    let count = prop_oneof![
        4 => 1u64..=20,
        1 => prop::sample::select(vec![97, 1_000, 999_983, 1_000_000, MAX_COUNT]),
    ];
    let period = prop_oneof![
        3 => 1u64..=20_000,
        1 => prop::sample::select(vec![1, 7, 1_000, 60_000, 30 * DAY_MS, MAX_PERIOD_MS]),
    ];
    let burst = prop_oneof![
        2 => Just(None),
        2 => (1u64..=20).prop_map(Some),
        1 => Just(Some(MAX_COUNT)),
    ];
    (algorithm, count, period, burst).prop_map(|(algorithm, count, period, burst)| {
        let burst = if algorithm == Algorithm::Gcra {
            burst
        } else {
            None
        };
        Limit::new(algorithm, count, period, burst).expect("valid by construction")
    })
}

/// A request: microseconds since the previous one (in thousandths of the period, or a few
/// microseconds), its cost relative to the capacity, and whether it is a dry run.
#[derive(Debug, Clone, Copy)]
struct Step {
    per_mille_of_period: u64,
    extra_us: u64,
    cost: u64,
    dry: bool,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = (
        prop_oneof![3 => Just(0u64), 2 => 0u64..=200, 1 => 0u64..=3_000],
        0u64..=3,
        prop_oneof![4 => 0u64..=3, 1 => any::<u64>()],
        prop::bool::weighted(0.1),
    )
        .prop_map(|(per_mille_of_period, extra_us, cost, dry)| Step {
            per_mille_of_period,
            extra_us,
            cost,
            dry,
        });
    prop::collection::vec(step, 1..120)
}

/// Costs drawn from the whole u64 range are folded to just around the capacity.
fn cost_for(limit: &Limit, raw: u64) -> u64 {
    if raw <= 3 {
        raw
    } else {
        raw % (limit.capacity().saturating_add(2))
    }
}

/// Replays `steps` against `limit` and returns the admitted requests as (time, cost), checking
/// on the way the invariants that concern single decisions.
fn replay(limit: Limit, start_us: u64, steps: &[Step]) -> Vec<(u64, u64, Option<State>)> {
    let mut sim = Sim::new(limit, start_us);
    let mut admitted = Vec::new();
    for step in steps {
        let period_us = limit.period_us() as u128;
        let jump = (period_us * step.per_mille_of_period as u128 / 1000) as u64;
        sim.advance_us(jump + step.extra_us);
        let cost = cost_for(&limit, step.cost);
        let before = sim.stored();

        // A dry run answers exactly what the real request would get.
        let dry = sim.check(cost, true);
        assert_eq!(sim.stored(), before, "a dry run changes nothing");
        if step.dry {
            continue;
        }
        let decision = sim.check(cost, false);
        assert_eq!(decision, dry, "the dry run predicted the decision");
        assert!(decision.remaining <= decision.limit);
        assert_eq!(decision.limit, limit.capacity());
        if !decision.allowed {
            assert_eq!(sim.stored(), before, "a denied request changes nothing");
            if cost > limit.capacity() {
                assert_eq!(decision.retry_after_ms, -1);
            } else if decision.retry_after_ms < RETRY_HORIZON_MS {
                // Waiting `retry_after_ms` and retrying with the same cost succeeds. (Beyond the
                // horizon, times are capped at MAX_TIME_MS and a clock there is meaningless.)
                assert!(decision.retry_after_ms > 0);
                let mut later = Sim::new(limit, sim.now_us);
                later.restore(sim.stored());
                later.advance_us(decision.retry_after_ms as u64 * 1000);
                assert!(
                    later.check(cost, false).allowed,
                    "retry after {} ms with cost {cost}",
                    decision.retry_after_ms
                );
            }
        } else {
            assert_eq!(decision.retry_after_ms, 0);
            admitted.push((sim.now_us, cost, sim.state()));
        }
    }
    admitted
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn single_decisions_are_consistent(limit in limits(), start in 0u64..1_000_000_000, steps in steps()) {
        replay(limit, EPOCH_ALIGNED_US + start, &steps);
    }

    #[test]
    fn fixed_never_admits_more_than_the_limit_in_a_window(
        count in 1u64..=20, period in 1u64..=5_000, start in 0u64..1_000_000_000, steps in steps()
    ) {
        let limit = Limit::new(Algorithm::Fixed, count, period, None).unwrap();
        let admitted = replay(limit, EPOCH_ALIGNED_US + start, &steps);
        let mut per_window = std::collections::BTreeMap::<u64, u64>::new();
        for (at, cost, state) in admitted {
            if cost == 0 {
                continue; // asks only; it belongs to no window
            }
            let Some(State::Fixed(FixedState { window_end_ms: Some(end), .. })) = state else {
                panic!("unexpected state {state:?}");
            };
            prop_assert!(at / 1000 < end && end <= at / 1000 + period);
            *per_window.entry(end).or_default() += cost;
        }
        for (end, total) in per_window {
            prop_assert!(total <= count, "window ending {end} admitted {total} > {count}");
        }
    }

    #[test]
    fn sliding_never_exceeds_its_estimate(
        count in 1u64..=20, period in 1u64..=5_000, start in 0u64..1_000_000_000, steps in steps()
    ) {
        let limit = Limit::new(Algorithm::Sliding, count, period, None).unwrap();
        let admitted = replay(limit, EPOCH_ALIGNED_US + start, &steps);
        let p = limit.period_us() as u128;
        for &(at, _, _) in &admitted {
            // The estimate recomputed from the log of admitted requests, not from the state.
            let window = at / limit.period_us();
            let spent_in = |w: u64| -> u128 {
                admitted.iter()
                    .filter(|(t, _, _)| *t <= at && t / limit.period_us() == w)
                    .map(|(_, c, _)| *c as u128)
                    .sum()
            };
            let elapsed = (at % limit.period_us()) as u128;
            let previous = if window == 0 { 0 } else { spent_in(window - 1) };
            let estimate = previous * (p - elapsed) + spent_in(window) * p;
            prop_assert!(estimate <= count as u128 * p, "estimate above the limit at {at}");
        }
    }

    #[test]
    fn gcra_admits_at_most_burst_plus_d_over_t(
        limit in limits().prop_filter("GCRA", |l| l.algorithm() == Algorithm::Gcra),
        start in 0u64..1_000_000_000,
        steps in steps(),
    ) {
        let admitted = replay(limit, EPOCH_ALIGNED_US + start, &steps);
        let (l, p, b) = (limit.limit() as u128, limit.period_us() as u128, limit.burst() as u128);
        for i in 0..admitted.len() {
            let mut total: u128 = 0;
            for j in i..admitted.len() {
                total += admitted[j].1 as u128;
                let d = (admitted[j].0 - admitted[i].0) as u128;
                // total <= burst + d / T, with T = p / l.
                prop_assert!(
                    total <= b || (total - b) * p <= d * l,
                    "{total} units admitted within {d} us"
                );
            }
        }
    }

    #[test]
    fn encode_then_decode_is_the_identity(
        count in 0u64..=i64::MAX as u64,
        end in any::<u64>(),
        window in any::<u64>(),
        previous in any::<u64>(),
        current in any::<u64>(),
        tat in 0u64..(1 << 62),
    ) {
        let states = [
            State::Fixed(FixedState { count, window_end_ms: Some(end) }),
            State::Sliding(SlidingState { window, previous, current, expire_at_ms: Some(end) }),
            State::Gcra(GcraState { tat, expire_at_ms: Some(end) }),
        ];
        for state in states {
            let encoded = state.encode();
            prop_assert_eq!(State::decode(encoded.as_bytes(), Some(end)), Ok(state));
        }
    }
}
