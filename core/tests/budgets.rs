//! Token budgets and several policies at once: no interleaving of CHECK, MCHECK, FORCE and
//! REFUND on a few keys ever lets a window admit more than its limit plus what was forced, a
//! refund only credits the window the units were spent in, and a denied MCHECK spends nothing
//! anywhere. Each key's spending is kept in a ledger here, apart from the algorithms' state.
mod common;
use common::*;
use proptest::prelude::*;
use ratelimit_core::{decide_all, Algorithm, Change, Limit, Policy, State, MAX_COUNT};
use std::collections::BTreeMap;

fn limits() -> impl Strategy<Value = Limit> {
    let algorithm = prop_oneof![
        Just(Algorithm::Fixed),
        Just(Algorithm::Sliding),
        Just(Algorithm::Gcra)
    ];
    let count = prop_oneof![4 => 1u64..=12, 1 => Just(1_000u64)];
    let period = prop_oneof![3 => 1u64..=3_000, 1 => Just(60_000u64)];
    let burst = prop_oneof![2 => Just(None), 1 => (1u64..=12).prop_map(Some)];
    (algorithm, count, period, burst).prop_map(|(algorithm, count, period, burst)| {
        let burst = burst.filter(|_| algorithm == Algorithm::Gcra);
        Limit::new(algorithm, count, period, burst).expect("valid by construction")
    })
}

#[derive(Debug, Clone)]
enum Action {
    Check {
        key: usize,
        cost: u64,
    },
    Force {
        key: usize,
        cost: u64,
    },
    /// One request under the policies of these keys (distinct), each with its cost.
    All {
        keys: Vec<(usize, u64)>,
        force: bool,
    },
    /// A refund to the window of an earlier spend (its index, modulo the spends so far), to no
    /// window, or to an arbitrary one.
    Refund {
        key: usize,
        amount: u64,
        window: WindowChoice,
    },
}

#[derive(Debug, Clone, Copy)]
enum WindowChoice {
    None,
    OfSpend(usize),
    Any(u64),
}

fn actions(keys: usize) -> impl Strategy<Value = Vec<(u64, Action)>> {
    let cost = prop_oneof![6 => 0u64..=4, 1 => 0u64..=30, 1 => Just(MAX_COUNT)];
    let key = 0..keys;
    let window = prop_oneof![
        1 => Just(WindowChoice::None),
        3 => any::<usize>().prop_map(WindowChoice::OfSpend),
        1 => any::<u64>().prop_map(WindowChoice::Any),
    ];
    let action = prop_oneof![
        4 => (key.clone(), cost.clone()).prop_map(|(key, cost)| Action::Check { key, cost }),
        1 => (key.clone(), cost.clone()).prop_map(|(key, cost)| Action::Force { key, cost }),
        3 => (prop::sample::subsequence((0..keys).collect::<Vec<_>>(), 1..=keys),
              prop::collection::vec(cost.clone(), keys), prop::bool::weighted(0.2))
            .prop_map(|(chosen, costs, force)| Action::All {
                keys: chosen.into_iter().zip(costs).collect(),
                force,
            }),
        3 => (key, cost, window)
            .prop_map(|(key, amount, window)| Action::Refund { key, amount, window }),
    ];
    // Microseconds before each action.
    let wait = prop_oneof![3 => Just(0u64), 3 => 0u64..=400_000, 1 => 0u64..=5_000_000];
    prop::collection::vec((wait, action), 1..100)
}

/// One key: its pretend Redis value, and the ledger of what it spent.
struct Key {
    sim: Sim,
    ledger: Ledger,
}

/// What a key spent, kept apart from the algorithm's state.
#[derive(Default)]
struct Ledger {
    /// FIXED and SLIDING: units spent (and not refunded) per window, which is the window's end
    /// for FIXED and its index for SLIDING.
    windows: BTreeMap<u64, u64>,
    /// GCRA: every admission, forced spend (with whether it fitted) and refund, in order.
    events: Vec<Event>,
    /// The windows that spends went to, for refunds that name one.
    spent_in: Vec<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Event {
    at_us: u64,
    /// Units spent (positive) or given back (negative).
    units: i128,
    /// Units forced beyond what fitted.
    excess: u64,
}

impl Key {
    fn limit(&self) -> Limit {
        self.sim.limit
    }

    /// Records a decided request: `spent` says whether the change stored its cost.
    fn record(&mut self, cost: u64, allowed: bool, forced: bool, window: u64) {
        let limit = self.limit();
        let now = self.sim.now_us;
        if limit.algorithm() == Algorithm::Gcra {
            self.ledger.events.push(Event {
                at_us: now,
                units: i128::from(cost),
                excess: if allowed { 0 } else { cost },
            });
        } else {
            *self.ledger.windows.entry(window).or_default() += cost;
        }
        self.ledger.spent_in.push(window);
        if allowed && !forced {
            self.assert_within_limit(window);
        }
    }

    /// After an admission that was not forced: the window holds at most its limit.
    fn assert_within_limit(&self, window: u64) {
        let limit = self.limit();
        let count = u128::from(limit.limit());
        match limit.algorithm() {
            Algorithm::Fixed => {
                let spent = self.ledger.windows[&window];
                assert!(
                    u128::from(spent) <= count,
                    "window {window} holds {spent} > {count}"
                );
            }
            Algorithm::Sliding => {
                let p = u128::from(limit.period_us());
                let elapsed = u128::from(self.sim.now_us % limit.period_us());
                let spent = |w: u64| u128::from(*self.ledger.windows.get(&w).unwrap_or(&0));
                let previous = window.checked_sub(1).map_or(0, spent);
                let estimate = previous * (p - elapsed) + spent(window) * p;
                assert!(
                    estimate <= count * p,
                    "estimate above the limit in window {window}"
                );
            }
            Algorithm::Gcra => {}
        }
    }

    /// Records a refund of `refunded` units asked for `window`.
    fn refunded(&mut self, refunded: u64, asked: Option<u64>) {
        let limit = self.limit();
        let now = self.sim.now_us;
        match limit.algorithm() {
            Algorithm::Gcra => self.ledger.events.push(Event {
                at_us: now,
                units: -i128::from(refunded),
                excess: 0,
            }),
            Algorithm::Fixed | Algorithm::Sliding => {
                if refunded == 0 {
                    return;
                }
                // The window credited: the one named, or the current one.
                let current = match limit.algorithm() {
                    Algorithm::Fixed => match self.sim.state() {
                        // Read back after the refund: the window end stays, unless the key is
                        // gone, in which case the ledger's latest window it was spent in.
                        Some(State::Fixed(s)) => s.window_end_ms.unwrap(),
                        _ => *self.ledger.windows.keys().next_back().unwrap(),
                    },
                    _ => now / limit.period_us(),
                };
                let window = asked.unwrap_or(current);
                let spent = self.ledger.windows.get_mut(&window).unwrap_or_else(|| {
                    panic!("{refunded} refunded to window {window}, where nothing was spent")
                });
                assert!(
                    refunded <= *spent,
                    "{refunded} refunded to window {window}, which holds {spent}"
                );
                *spent -= refunded;
            }
        }
    }

    /// GCRA: over every stretch of events, what was spent and not given back is at most the
    /// burst, plus what drips back in the meantime, plus what was forced beyond the tolerance.
    fn assert_gcra_bound(&self) {
        let limit = self.limit();
        let (l, p, b) = (
            i128::from(limit.limit()),
            i128::from(limit.period_us()),
            i128::from(limit.burst()),
        );
        let events = &self.ledger.events;
        for i in 0..events.len() {
            let (mut net, mut excess) = (0i128, 0i128);
            for j in i..events.len() {
                net += events[j].units;
                excess += i128::from(events[j].excess);
                let d = i128::from(events[j].at_us - events[i].at_us);
                // net <= burst + excess + d / T, with T = p / l.
                assert!(
                    (net - b - excess) * p <= d * l,
                    "{net} units net within {d} us (burst {b}, forced {excess})"
                );
            }
        }
    }
}

fn run(limits: Vec<Limit>, start_us: u64, actions: Vec<(u64, Action)>) {
    let mut now = start_us;
    let mut keys: Vec<Key> = limits
        .into_iter()
        .map(|limit| Key {
            sim: Sim::new(limit, start_us),
            ledger: Ledger::default(),
        })
        .collect();
    for (wait, action) in actions {
        now += wait;
        for key in &mut keys {
            key.sim.now_us = now;
        }
        match action {
            Action::Check { key, cost } | Action::Force { key, cost } => {
                let force = matches!(action, Action::Force { .. });
                let key = &mut keys[key];
                let outcome = key.sim.decide(cost, force, false);
                let stored = matches!(outcome.change, Change::Store(_));
                if stored {
                    key.record(cost, outcome.decision.allowed, force, outcome.window);
                }
            }
            Action::All {
                keys: chosen,
                force,
            } => {
                let states: Vec<Option<State>> =
                    chosen.iter().map(|&(k, _)| keys[k].sim.state()).collect();
                let limits: Vec<Limit> = chosen.iter().map(|&(k, _)| keys[k].limit()).collect();
                let policies: Vec<Policy<'_>> = chosen
                    .iter()
                    .zip(&states)
                    .zip(&limits)
                    .map(|((&(_, cost), state), limit)| Policy {
                        limit,
                        state: state.as_ref(),
                        cost,
                    })
                    .collect();
                let all = decide_all(&policies, now, force).unwrap();
                assert_eq!(
                    all.allowed,
                    all.outcomes.iter().all(|o| o.decision.allowed),
                    "all or nothing"
                );
                for (&(k, cost), outcome) in chosen.iter().zip(&all.outcomes) {
                    let spends = cost > 0 && (all.allowed || force);
                    assert_eq!(
                        matches!(outcome.change, Change::Store(_)),
                        spends,
                        "a denied request spends nothing anywhere"
                    );
                    keys[k].sim.apply(outcome.change);
                    keys[k].sim.in_debt |= force;
                    if spends {
                        keys[k].record(cost, outcome.decision.allowed, force, outcome.window);
                    }
                }
            }
            Action::Refund {
                key,
                amount,
                window,
            } => {
                let key = &mut keys[key];
                let asked = match window {
                    WindowChoice::None => None,
                    WindowChoice::OfSpend(i) if !key.ledger.spent_in.is_empty() => {
                        Some(key.ledger.spent_in[i % key.ledger.spent_in.len()])
                    }
                    WindowChoice::OfSpend(_) => None,
                    WindowChoice::Any(w) => Some(w),
                };
                let (refunded, _) = key.sim.refund(amount, asked);
                key.refunded(
                    refunded,
                    asked.filter(|_| key.limit().algorithm() != Algorithm::Gcra),
                );
            }
        }
    }
    for key in &keys {
        key.assert_gcra_bound();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn no_interleaving_exceeds_the_limit_plus_what_was_forced(
        limits in prop::collection::vec(limits(), 3),
        start in 0u64..1_000_000_000,
        actions in actions(3),
    ) {
        run(limits, EPOCH_ALIGNED_US + start, actions);
    }
}
