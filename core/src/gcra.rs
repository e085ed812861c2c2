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
use crate::{div_ceil_u128, us_to_ms_ceil, Decision, GcraState, Limit, State, Update, MAX_TIME_MS};

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
        let (count, period) = (u128::from(count), u128::from(period_us));
        let exact = period / gcd(count, period);
        let span = u128::from(burst) + 1;
        let k = if span * exact <= MAX_SPAN {
            exact
        } else {
            MAX_SPAN / span
        };
        // K <= period_us, which fits in 64 bits.
        k as u64
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

fn gcd(mut a: u128, mut b: u128) -> u128 {
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

/// The stored arrival time, relative to `now`'s floor and scaled by `period_us`, as in `decide`.
///
/// The value is trusted when it agrees with the key's expiry, which is the same time rounded up
/// to the millisecond. When they disagree, the value was written under another limit or period
/// (whose GCRA units differ) or the expiry was changed by hand: the expiry, which means the same
/// in every configuration, is used instead. A distance beyond the tolerance cannot have been
/// written under this limit either; it is read as an empty bucket.
fn stored_tat(units: &Units, s: GcraState, now_us: u64, capacity: u64) -> i128 {
    let (now_floor, now_rest) = units.now(now_us);
    let p = units.period as i128;
    let per_us = units.per_us as i128;
    let most = (i128::from(capacity) * units.k as i128 + 1) * p;
    let from_value = distance(now_floor, s.tat) * p;
    let tat = match s.expire_at_ms {
        Some(expire_at_ms) if expire_at_ms < MAX_TIME_MS => {
            let until_expiry_us = i128::from(expire_at_ms) * 1000 - i128::from(now_us);
            // Beyond the tolerance either way; capped before multiplying, so it cannot overflow.
            let latest = if until_expiry_us > most / per_us + 1 {
                most + per_us
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
) -> (Decision, Option<Update>) {
    let capacity = limit.burst();
    let units = Units::of(limit);
    let (now_floor, now_rest) = units.now(now_us);

    // Everything below is relative to `now_floor` and scaled by `period_us`, so that `now`
    // itself is the exact integer `now_rest`.
    let p = units.period as i128;
    let k = units.k as i128;
    let now = now_rest as i128;
    let tolerance = i128::from(capacity) * k * p;
    let tat = match state {
        Some(s) => stored_tat(&units, s, now_us, capacity),
        None => i128::MIN,
    };
    let base = tat.max(now);

    let time_ms = |scaled: i128| us_to_ms_ceil(div_ceil_u128(scaled.max(0) as u128, units.per_us));
    let remaining = |tat: i128| {
        let room = (tolerance - (tat.max(now) - now)).max(0);
        (room / (k * p)) as u64
    };

    let spent = i128::from(cost) * k * p;
    let admitted = cost <= capacity && base + spent - now <= tolerance;
    if !admitted {
        let retry_after_ms = if cost > capacity {
            Decision::NEVER
        } else {
            i64::try_from(time_ms(base + spent - tolerance - now)).unwrap_or(i64::MAX)
        };
        let decision = Decision {
            allowed: false,
            limit: capacity,
            remaining: remaining(base),
            reset_after_ms: time_ms(base - now),
            retry_after_ms,
        };
        return (decision, None);
    }

    let tat = base + spent;
    let decision = Decision {
        allowed: true,
        limit: capacity,
        remaining: remaining(tat),
        reset_after_ms: time_ms(tat - now),
        retry_after_ms: 0,
    };
    let update = (cost > 0).then(|| {
        // Round the stored arrival time up to a whole unit; it is already whole unless `K`
        // was lowered (see the module documentation).
        let stored = div_ceil_u128(tat as u128, units.period);
        let full_in_us = div_ceil_u128((stored as i128 * p - now) as u128, units.per_us);
        let expire_at_ms = us_to_ms_ceil(u128::from(now_us) + full_in_us);
        Update {
            state: State::Gcra(GcraState {
                tat: (u128::from(now_floor) + stored) as u64 % GCRA_MODULUS,
                expire_at_ms: Some(expire_at_ms),
            }),
            expire_at_ms,
        }
    });
    (decision, update)
}
