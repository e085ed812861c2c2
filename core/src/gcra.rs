//! GCRA: the generic cell rate algorithm, equivalent to a token bucket.
//!
//! The emission interval is `T = period / limit` and the tolerance is `burst * T`. A request of
//! `cost` units is admitted when `max(tat, now) + cost * T - now <= burst * T`, and then the
//! theoretical arrival time `tat` becomes `max(tat, now) + cost * T`.
//!
//! # Exact arithmetic
//! `T` is rarely a whole number of microseconds (10^15 per millisecond makes it 10^-12 µs), so
//! time is counted in *GCRA units* of `T / K`, with `K` chosen so that both `T` (K units) and one
//! microsecond (`limit * K / period_us` units) are whole numbers:
//! `K = period_us / gcd(limit, period_us)`. Then one microsecond is `limit / gcd(limit, period_us)`
//! units, and every time and cost is an exact integer: nothing is rounded. For round
//! configurations a unit is simply a microsecond (100 per minute: `gcd = 100`, so 1 µs = 1 unit).
//!
//! The stored `tat` is kept modulo 2^62, so that it fits a negative 64-bit integer whatever the
//! rate. Only `tat`'s distance from `now` matters, and it never exceeds `(burst + 1) * K` units,
//! so it is recovered exactly as the value nearest to `now` in the same residue class.
//!
//! Because the units depend on the limit and period, a value written under another
//! configuration means nothing under this one. The key's expiry, which is the arrival time rounded
//! up to the millisecond, means the same under every configuration: when the value disagrees with
//! it, the expiry is used. A change of limit therefore keeps the time already spent, to the
//! millisecond, and rounded toward denial.
//!
//! When `(burst + 1) * K` would exceed 2^60 (enormous bursts over long periods with a limit that
//! shares no factor with the period, such as 999983 per 30 days), `K` is lowered to
//! `2^60 / (burst + 1)`. A microsecond is then a fraction of a unit, and the one place where
//! rounding happens is the stored `tat`, rounded **up** to a whole unit when a full bucket is
//! first spent from. That errs toward denial by less than `1/K` of a unit (`K >= 1152`).

use crate::storage::GCRA_MODULUS;
use crate::{
    div_ceil_u128, us_to_ms_ceil, Change, Decision, GcraState, Limit, Outcome, State, Update,
    MAX_TIME_MS,
};

/// The largest product `(burst + 1) * K`, which bounds every stored distance from `now`.
const MAX_SPAN: u128 = 1 << 60;

/// The unit system of one limit.
pub(crate) struct Units {
    /// GCRA units per emission interval `T`.
    k: u128,
    /// `limit * K`: GCRA units per microsecond, times `period_us`.
    per_us: u128,
    /// The period in microseconds.
    period: u128,
}

impl Units {
    fn of(limit: &Limit) -> Units {
        let k = u128::from(limit.gcra_units_per_interval());
        Units {
            k,
            per_us: u128::from(limit.limit()) * k,
            period: u128::from(limit.period_us()),
        }
    }

    /// `K`, GCRA units per emission interval, for a limit of `count` per `period_us` with
    /// `burst`: computed once, when the [`Limit`] is built.
    pub(crate) fn per_interval(count: u64, period_us: u64, burst: u64) -> u64 {
        // In 64 bits: both fit, and a 128-bit remainder is a slow library call.
        let exact = u128::from(period_us / gcd(count, period_us));
        let span = u128::from(burst) + 1;
        let k = if span * exact <= MAX_SPAN {
            exact
        } else {
            MAX_SPAN / span
        };
        // K <= period_us, which fits in 64 bits.
        k as u64
    }

    /// GCRA units per microsecond, `limit * K / period_us`, when it is a whole number (always,
    /// unless `K` was lowered): then every instant is a whole number of units and [`decide`]
    /// takes its 64-bit path. 0 otherwise. Computed once, when the [`Limit`] is built.
    pub(crate) fn whole_per_us(count: u64, period_us: u64, k: u64) -> u64 {
        // In 64 bits when it fits, as it does for any usual limit: a 128-bit remainder is slow.
        if let Some(per_us) = count.checked_mul(k) {
            return if per_us % period_us == 0 {
                per_us / period_us
            } else {
                0
            };
        }
        let per_us = u128::from(count) * u128::from(k);
        let period = u128::from(period_us);
        if per_us % period == 0 {
            u64::try_from(per_us / period).unwrap_or(0)
        } else {
            0
        }
    }

    /// `now` in GCRA units, as its floor modulo 2^62 and the remainder in 1/period_us units.
    fn now(&self, now_us: u64) -> (u64, u128) {
        let modulus = u128::from(GCRA_MODULUS);
        // now_units = now_us * limit * K / period_us, computed without overflow.
        let scaled = u128::from(now_us) * (self.per_us / self.k);
        let (whole, rest) = (scaled / self.period, scaled % self.period);
        let rest = rest * self.k;
        let floor = ((whole % modulus) * self.k + rest / self.period) % modulus;
        (floor as u64, rest % self.period)
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The signed distance from `from` to `to` on the 2^62 circle, in `[-2^61, 2^61)`.
fn distance(from: u64, to: u64) -> i128 {
    let modulus = i128::from(GCRA_MODULUS);
    let d = (i128::from(to) - i128::from(from)).rem_euclid(modulus);
    if d < modulus / 2 {
        d
    } else {
        d - modulus
    }
}

/// How far ahead of now an arrival time may be, in GCRA units: the debt of `FORCE` saturates
/// there. 2^60 keeps every distance recoverable modulo 2^62, and bounds every tolerance too
/// (`(burst + 1) * K <= 2^60`). For a limit that divides the period in microseconds (100 per
/// minute) it is 2^60 µs, 36,000 years; in general, at least `burst + 1` units of cost.
pub(crate) const MAX_AHEAD: u64 = MAX_SPAN as u64;

/// The stored arrival time, relative to `now`'s floor and scaled by `period_us`, as in
/// [`decide_scaled`]; at most [`MAX_AHEAD`] units ahead, or `capacity * K + 1` without expiry
/// (see [`most_ahead`]).
///
/// The value is trusted when it agrees with the key's expiry, which is the same time rounded up
/// to the millisecond. When they disagree, the value was written under another limit or period
/// (whose GCRA units differ) or the expiry was changed by hand: the expiry, which means the same
/// in every configuration, is used instead.
fn stored_tat(units: &Units, s: GcraState, now_us: u64, capacity: u64) -> i128 {
    let (now_floor, now_rest) = units.now(now_us);
    let p = units.period as i128;
    let per_us = units.per_us as i128;
    let most = i128::from(most_ahead(s, capacity, units.k as u64)) * p;
    let from_value = distance(now_floor, s.tat) * p;
    let tat = match s.expire_at_ms {
        Some(expire_at_ms) if expire_at_ms < MAX_TIME_MS => {
            let until_expiry_us = i128::from(expire_at_ms) * 1000 - i128::from(now_us);
            // Beyond the range either way; capped before multiplying, so it cannot overflow.
            let far = most / per_us + 1;
            let latest = if until_expiry_us > far {
                most + per_us
            } else if until_expiry_us < -far {
                -most - per_us
            } else {
                until_expiry_us * per_us + now_rest as i128
            };
            // The key expires at the first millisecond at or after the arrival time, which was
            // itself rounded up to the microsecond: the time lies in (latest - 1001 us, latest].
            if from_value <= latest && from_value > latest - 1001 * per_us {
                from_value
            } else {
                latest
            }
        }
        _ => from_value,
    };
    tat.min(most)
}

pub(crate) fn decide(
    limit: &Limit,
    state: Option<GcraState>,
    now_us: u64,
    cost: u64,
    force: bool,
) -> Outcome {
    match limit.gcra_units_per_us() {
        0 => decide_scaled(limit, state, now_us, cost, force),
        per_us => decide_whole(limit, per_us, state, now_us, cost, force),
    }
}

pub(crate) fn refund(
    limit: &Limit,
    state: Option<GcraState>,
    now_us: u64,
    amount: u64,
) -> (u64, Change) {
    match limit.gcra_units_per_us() {
        0 => refund_scaled(limit, state, now_us, amount),
        per_us => refund_whole(limit, per_us, state, now_us, amount),
    }
}

/// How far ahead of now a stored arrival time is read, in units. With an expiry, as far as a
/// debt can go, [`MAX_AHEAD`]. Without one (after `PERSIST`, or written by hand), the value
/// alone cannot tell a debt from an old time that wrapped around its 2^62 range (after 2.3 s at
/// 10^15 per millisecond): it is read as at most a full bucket spent, `capacity * K + 1`, so
/// that a misreading denies for at most one tolerance, until the expiry that the decision gives
/// the key.
fn most_ahead(s: GcraState, capacity: u64, k: u64) -> u64 {
    match s.expire_at_ms {
        Some(_) => MAX_AHEAD,
        None => capacity * k + 1,
    }
}

/// Whether the key this state was read from lacks an expiry, and so needs the one its state
/// implies.
fn without_expiry(state: Option<GcraState>) -> bool {
    state.is_some_and(|s| s.expire_at_ms.is_none())
}

/// [`decide`] when a microsecond is a whole number `u` of GCRA units, as it is unless `K` was
/// lowered. `now` is then the whole number of units `now_us * u`, and every quantity of
/// [`decide_scaled`] is that one times `period_us` with no remainder: the same computation in
/// units, where everything fits 64 bits (distances are at most [`MAX_AHEAD`] = 2^60) and each
/// division is by a 64-bit number, instead of 128-bit divisions, which are slow library calls.
/// The results are identical (see the tests).
fn decide_whole(
    limit: &Limit,
    u: u64,
    state: Option<GcraState>,
    now_us: u64,
    cost: u64,
    force: bool,
) -> Outcome {
    let capacity = limit.burst();
    let k = limit.gcra_units_per_interval();
    let whole = Whole::new(u, now_us);
    // Relative to `now`, in units; `now` itself is 0.
    let tolerance = capacity * k;
    let base = match state {
        Some(s) => whole.backlog(s, most_ahead(s, capacity, k)),
        None => 0,
    };

    // At most MAX_AHEAD, as is `base`, so their sum cannot overflow. Below the capacity, it is
    // at most the tolerance, below 2^60 too.
    let spent = cost.saturating_mul(k).min(MAX_AHEAD);
    let fits = cost <= capacity && base + spent <= tolerance;
    let spends = cost > 0 && (fits || force);
    let tat = if spends {
        (base + spent).min(MAX_AHEAD)
    } else {
        base
    };
    let retry_after_ms = if fits {
        0
    } else if force {
        whole.signed_ms(tat + k - tolerance)
    } else if cost <= capacity {
        whole.signed_ms(base + spent - tolerance)
    } else {
        Decision::NEVER
    };
    let decision = Decision {
        allowed: fits,
        limit: capacity,
        remaining: tolerance.saturating_sub(tat) / k,
        reset_after_ms: whole.time_ms(tat),
        retry_after_ms,
    };
    let change = if spends {
        Change::Store(whole.store(tat))
    } else {
        whole.repair(state, base)
    };
    Outcome {
        decision,
        change,
        window: 0,
    }
}

/// [`refund`] in whole units: the arrival time moves back by `amount * K` units, never before
/// now.
fn refund_whole(
    limit: &Limit,
    u: u64,
    state: Option<GcraState>,
    now_us: u64,
    amount: u64,
) -> (u64, Change) {
    let k = limit.gcra_units_per_interval();
    let whole = Whole::new(u, now_us);
    let base = match state {
        Some(s) => whole.backlog(s, most_ahead(s, limit.burst(), k)),
        None => 0,
    };
    let moved = amount.saturating_mul(k).min(base);
    let change = match base - moved {
        _ if moved == 0 => whole.repair(state, base),
        0 => Change::Delete,
        left => Change::Store(whole.store(left)),
    };
    (moved.div_ceil(k), change)
}

/// The instant `now` in a limit's whole units, for [`decide_whole`] and [`refund_whole`].
struct Whole {
    /// GCRA units per microsecond.
    u: u64,
    now_us: u64,
    /// `now_us * u` modulo 2^62.
    now_floor: u64,
}

impl Whole {
    fn new(u: u64, now_us: u64) -> Whole {
        Whole {
            u,
            now_us,
            // now_us * u modulo 2^62, which divides 2^64: a wrapping product loses nothing.
            now_floor: now_us.wrapping_mul(u) & (GCRA_MODULUS - 1),
        }
    }

    /// `units` in whole milliseconds, rounded up, capped at [`MAX_TIME_MS`].
    fn time_ms(&self, units: u64) -> u64 {
        (units_to_us(units, self.u).div_ceil(1000)).min(MAX_TIME_MS)
    }

    fn signed_ms(&self, units: u64) -> i64 {
        i64::try_from(self.time_ms(units)).unwrap_or(i64::MAX)
    }

    /// The key's expiry for an arrival time `tat` units from now: that time rounded up to the
    /// millisecond.
    fn expiry_ms(&self, tat: u64) -> u64 {
        self.now_us
            .saturating_add(units_to_us(tat, self.u))
            .div_ceil(1000)
            .min(MAX_TIME_MS)
    }

    fn store(&self, tat: u64) -> Update {
        let expire_at_ms = self.expiry_ms(tat);
        Update {
            state: State::Gcra(GcraState {
                tat: self.now_floor.wrapping_add(tat) & (GCRA_MODULUS - 1),
                expire_at_ms: Some(expire_at_ms),
            }),
            expire_at_ms,
        }
    }

    /// What a key without expiry needs when nothing else is written: the expiry of its arrival
    /// time, or its deletion when that time is not ahead of now.
    fn repair(&self, state: Option<GcraState>, base: u64) -> Change {
        match (without_expiry(state), base) {
            (false, _) => Change::Keep,
            (true, 0) => Change::Delete,
            (true, base) => Change::Expire(self.expiry_ms(base)),
        }
    }

    /// [`stored_tat`] in whole units: the arrival time relative to `now`, from 0 (`now` or
    /// earlier: only `max(tat, now)` is ever used) to `most`.
    fn backlog(&self, s: GcraState, most: u64) -> u64 {
        let u = self.u;
        let half = GCRA_MODULUS / 2;
        let forward = s.tat.wrapping_sub(self.now_floor) & (GCRA_MODULUS - 1);
        let from_value = i128::from(forward)
            - if forward < half {
                0
            } else {
                i128::from(GCRA_MODULUS)
            };
        let tat = match s.expire_at_ms {
            Some(expire_at_ms) if expire_at_ms < MAX_TIME_MS => {
                let until_expiry_us = i128::from(expire_at_ms) * 1000 - i128::from(self.now_us);
                // Floor division, skipped for one unit per microsecond, as in `units_to_us`.
                let far = i128::from(if u == 1 { most } else { most / u }) + 1;
                let u = i128::from(u);
                let latest = if until_expiry_us > far {
                    i128::from(most) + u
                } else if until_expiry_us < -far {
                    -i128::from(most) - u
                } else {
                    until_expiry_us * u
                };
                if from_value <= latest && from_value > latest - 1001 * u {
                    from_value
                } else {
                    latest
                }
            }
            _ => from_value,
        };
        tat.clamp(0, i128::from(most)) as u64
    }
}

/// `units` GCRA units in microseconds, rounded up. Round configurations (a limit that divides
/// the period in microseconds, such as 100 per minute) count one unit per microsecond: then no
/// division, which is the slowest arithmetic of a decision.
#[inline]
fn units_to_us(units: u64, u: u64) -> u64 {
    if u == 1 {
        units
    } else {
        units.div_ceil(u)
    }
}

/// The instant `now` in a limit's general units, for [`decide_scaled`] and [`refund_scaled`]:
/// everything is relative to `now`'s floor and scaled by `period_us`, so that `now` itself is
/// the exact integer `now` (its remainder).
struct Scaled {
    units: Units,
    now_us: u64,
    now_floor: u64,
    /// `now`'s remainder, scaled.
    now: i128,
    p: i128,
    k: i128,
}

impl Scaled {
    fn new(limit: &Limit, now_us: u64) -> Scaled {
        let units = Units::of(limit);
        let (now_floor, now_rest) = units.now(now_us);
        Scaled {
            p: units.period as i128,
            k: units.k as i128,
            units,
            now_us,
            now_floor,
            now: now_rest as i128,
        }
    }

    /// The arrival time's distance ahead of now, scaled, at least 0.
    fn backlog(&self, state: Option<GcraState>, capacity: u64) -> i128 {
        match state {
            Some(s) => (stored_tat(&self.units, s, self.now_us, capacity) - self.now).max(0),
            None => 0,
        }
    }

    /// `cost` intervals, scaled, at most [`MAX_AHEAD`] units.
    fn spent(&self, cost: u64) -> i128 {
        let units = (u128::from(cost) * self.units.k).min(u128::from(MAX_AHEAD));
        units as i128 * self.p
    }

    fn time_ms(&self, scaled: i128) -> u64 {
        us_to_ms_ceil(div_ceil_u128(scaled.max(0) as u128, self.units.per_us))
    }

    fn signed_ms(&self, scaled: i128) -> i64 {
        i64::try_from(self.time_ms(scaled)).unwrap_or(i64::MAX)
    }

    /// The arrival time `backlog` ahead of now, rounded up to a whole unit (it is already whole
    /// unless `K` was lowered; see the module documentation), and the key's expiry for it.
    fn rounded(&self, backlog: i128) -> (u128, u64) {
        let stored = div_ceil_u128((self.now + backlog) as u128, self.units.period);
        let full_in_us = div_ceil_u128(
            (stored as i128 * self.p - self.now) as u128,
            self.units.per_us,
        );
        let expire_at_ms = us_to_ms_ceil(u128::from(self.now_us) + full_in_us);
        (stored, expire_at_ms)
    }

    fn store(&self, backlog: i128) -> Update {
        let (stored, expire_at_ms) = self.rounded(backlog);
        Update {
            state: State::Gcra(GcraState {
                tat: (u128::from(self.now_floor) + stored) as u64 % GCRA_MODULUS,
                expire_at_ms: Some(expire_at_ms),
            }),
            expire_at_ms,
        }
    }

    fn repair(&self, state: Option<GcraState>, backlog: i128) -> Change {
        match (without_expiry(state), backlog) {
            (false, _) => Change::Keep,
            (true, 0) => Change::Delete,
            (true, backlog) => Change::Expire(self.rounded(backlog).1),
        }
    }
}

/// [`decide`] in the general case, where a microsecond is a fraction of a GCRA unit.
fn decide_scaled(
    limit: &Limit,
    state: Option<GcraState>,
    now_us: u64,
    cost: u64,
    force: bool,
) -> Outcome {
    let capacity = limit.burst();
    let at = Scaled::new(limit, now_us);
    let unit = at.k * at.p;
    let tolerance = i128::from(capacity) * unit;
    let most = i128::from(MAX_AHEAD) * at.p;
    let base = at.backlog(state, capacity);

    let spent = at.spent(cost);
    let fits = cost <= capacity && base + spent <= tolerance;
    let spends = cost > 0 && (fits || force);
    let tat = if spends {
        (base + spent).min(most)
    } else {
        base
    };
    let retry_after_ms = if fits {
        0
    } else if force {
        at.signed_ms(tat + unit - tolerance)
    } else if cost <= capacity {
        at.signed_ms(base + spent - tolerance)
    } else {
        Decision::NEVER
    };
    let decision = Decision {
        allowed: fits,
        limit: capacity,
        remaining: ((tolerance - tat).max(0) / unit) as u64,
        reset_after_ms: at.time_ms(tat),
        retry_after_ms,
    };
    let change = if spends {
        Change::Store(at.store(tat))
    } else {
        at.repair(state, base)
    };
    Outcome {
        decision,
        change,
        window: 0,
    }
}

/// [`refund`] in the general case.
fn refund_scaled(
    limit: &Limit,
    state: Option<GcraState>,
    now_us: u64,
    amount: u64,
) -> (u64, Change) {
    let at = Scaled::new(limit, now_us);
    let base = at.backlog(state, limit.burst());
    let moved = at.spent(amount).min(base);
    let change = match base - moved {
        _ if moved == 0 => at.repair(state, base),
        0 => Change::Delete,
        left => Change::Store(at.store(left)),
    };
    let refunded = div_ceil_u128(moved as u128, (at.k * at.p) as u128);
    (refunded as u64, change)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Algorithm, MAX_COUNT, MAX_PERIOD_MS};
    use proptest::prelude::*;

    fn gcra_limits() -> impl Strategy<Value = Limit> {
        let count = prop_oneof![
            2 => 1u64..=20,
            1 => 1u64..=MAX_COUNT,
            1 => prop::sample::select(vec![3, 97, 100, 1_000, 999_983, 1_000_000, MAX_COUNT]),
        ];
        let period = prop_oneof![
            2 => 1u64..=20_000,
            1 => 1u64..=MAX_PERIOD_MS,
            1 => prop::sample::select(vec![
                1,
                7,
                1_000,
                60_000,
                3_600_000,
                30 * 86_400_000,
                MAX_PERIOD_MS,
            ]),
        ];
        let burst = prop_oneof![
            2 => Just(None),
            2 => (1u64..=20).prop_map(Some),
            1 => (1u64..=MAX_COUNT).prop_map(Some),
        ];
        (count, period, burst).prop_map(|(count, period, burst)| {
            Limit::new(Algorithm::Gcra, count, period, burst).expect("valid by construction")
        })
    }

    /// A stored state around `now_us`: an arrival time some units away from now, with an
    /// expiry that agrees with it, disagrees, or is absent; or anything at all.
    fn states(now_us: u64) -> impl Strategy<Value = Option<GcraState>> {
        let near = (
            any::<i32>(),
            prop_oneof![Just(None), (-2_000i64..=2_000_000).prop_map(Some)],
        );
        prop_oneof![
            1 => Just(None),
            3 => near.prop_map(move |(offset, expiry)| Some(GcraState {
                tat: (now_us as i128 + offset as i128).rem_euclid(GCRA_MODULUS as i128) as u64,
                expire_at_ms: expiry.map(|ms| (now_us / 1000).saturating_add_signed(ms)),
            })),
            1 => (0..GCRA_MODULUS, prop::option::of(0..MAX_TIME_MS + 2))
                .prop_map(|(tat, expire_at_ms)| Some(GcraState { tat, expire_at_ms })),
        ]
    }

    proptest! {
        // Random limits often lower K (a huge burst over a long period): those are skipped.
        #![proptest_config(ProptestConfig {
            cases: 20_000,
            max_global_rejects: 100_000,
            ..ProptestConfig::default()
        })]

        /// The 64-bit path decides exactly as the general one, wherever it applies.
        #[test]
        fn whole_units_decide_as_the_general_path(
            limit in gcra_limits(),
            (now_us, state) in (0u64..1 << 53).prop_flat_map(|now| (Just(now), states(now))),
            cost in prop_oneof![4 => 0u64..=3, 1 => 0u64..=MAX_COUNT],
            unit_tat in any::<bool>(),
            force in any::<bool>(),
        ) {
            let u = limit.gcra_units_per_us();
            prop_assume!(u > 0);
            // A stored arrival time is in units: optionally make it `now` in units plus a bit.
            let state = state.map(|mut s| {
                if unit_tat {
                    let now_units = now_us.wrapping_mul(u) & (GCRA_MODULUS - 1);
                    s.tat = now_units.wrapping_add(s.tat % 4096) & (GCRA_MODULUS - 1);
                }
                s
            });
            prop_assert_eq!(
                decide_whole(&limit, u, state, now_us, cost, force),
                decide_scaled(&limit, state, now_us, cost, force)
            );
            prop_assert_eq!(
                refund_whole(&limit, u, state, now_us, cost),
                refund_scaled(&limit, state, now_us, cost)
            );
        }
    }

    #[test]
    fn round_configurations_take_the_whole_path() {
        for (count, period_ms) in [
            (100, 60_000),
            (1_000, 1_000),
            (3, 10_000),
            (1_000_000, 3_600_000),
        ] {
            let limit = Limit::new(Algorithm::Gcra, count, period_ms, None).unwrap();
            assert!(limit.gcra_units_per_us() > 0, "{count} per {period_ms} ms");
        }
        let lowered =
            Limit::new(Algorithm::Gcra, 999_983, 30 * 86_400_000, Some(MAX_COUNT)).unwrap();
        assert_eq!(lowered.gcra_units_per_us(), 0);
    }
}
