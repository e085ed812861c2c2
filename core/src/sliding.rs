//! SLIDING: the sliding-window counter.
//!
//! Windows are aligned to multiples of `period` since the Unix epoch. The estimate at `elapsed`
//! microseconds into the current window is
//! `previous * (period - elapsed) / period + current`, and a request is admitted while
//! `estimate + cost <= limit`. All comparisons are exact: both sides are multiplied by `period`
//! and compared as 128-bit integers. Reported numbers round toward denial: `remaining` rounds
//! the estimate up, and times round up to the millisecond.
//!
//! # A changed period, and keys without expiry
//! The key expires at `(window + 2) * period`, when the current count has decayed. An expiry
//! that disagrees with that was written under another period (or set by hand). Such counts are
//! *held*: both count in full, without decay, until that expiry, as a FIXED window would count
//! them; so shortening the period never forgets what was spent, and every reply stays true
//! while nothing is written. The next admitted request stores them again as the current
//! window's, on the new period. A refund gives nothing back to held counts: the window they
//! were spent in is not one of this period's.
//!
//! A key without expiry is read by its window alone, and a command that decides on it gives it
//! the expiry its window implies, or deletes it when nothing in it counts any more.

use crate::{
    div_ceil_u128, us_to_ms_ceil, Change, Decision, Limit, Outcome, SlidingState, State, Update,
    MAX_STORED_COUNT,
};

/// The state as the algorithm sees it now.
enum Reading {
    /// Counts of this period's windows.
    Windows {
        /// The previous window's count, which decays over the current one.
        previous: u64,
        /// The current window's count.
        current: u64,
        /// For a key without expiry: the expiry its state implies, in ms.
        implied_expiry: Option<u64>,
    },
    /// Counts written under another period, held in full until `until_ms`, the key's expiry.
    Held {
        previous: u64,
        current: u64,
        until_ms: u64,
    },
}

fn read(limit: &Limit, state: Option<SlidingState>, window: u64, now_ms: u64) -> Reading {
    let Some(s) = state else {
        return Reading::Windows {
            previous: 0,
            current: 0,
            implied_expiry: None,
        };
    };
    let (previous, current) = (
        s.previous.min(MAX_STORED_COUNT),
        s.current.min(MAX_STORED_COUNT),
    );
    let expected = s
        .window
        .checked_add(2)
        .and_then(|w| w.checked_mul(limit.period_ms()));
    match s.expire_at_ms {
        // Written under another period: held until the expiry, and gone from then on.
        Some(expiry) if Some(expiry) != expected => {
            return if expiry > now_ms {
                Reading::Held {
                    previous,
                    current,
                    until_ms: expiry,
                }
            } else {
                Reading::Windows {
                    previous: 0,
                    current: 0,
                    implied_expiry: None,
                }
            };
        }
        _ => {}
    }
    let (previous, current) = if s.window == window {
        (previous, current)
    } else if s.window.checked_add(1) == Some(window) {
        (current, 0)
    } else if s.window > window {
        // A window index ahead of the clock means the clock went back: keep the counts rather
        // than forget what was spent.
        (previous, current)
    } else {
        (0, 0)
    };
    Reading::Windows {
        previous,
        current,
        implied_expiry: s.expire_at_ms.is_none().then(|| {
            s.window
                .min(window)
                .saturating_add(2)
                .saturating_mul(limit.period_ms())
        }),
    }
}

/// One instant within the current window.
struct Instant {
    /// The period in microseconds.
    p: u128,
    /// Microseconds since the current window began.
    elapsed: u64,
}

impl Instant {
    /// `estimate * period` for these counts.
    fn estimate(&self, previous: u64, current: u64) -> u128 {
        u128::from(previous) * (self.p - u128::from(self.elapsed)) + u128::from(current) * self.p
    }

    /// Whether `cost` fits on top of these counts.
    fn fits(&self, capacity: u64, previous: u64, current: u64, cost: u64) -> bool {
        cost <= capacity
            && self.estimate(previous, current) + u128::from(cost) * self.p
                <= u128::from(capacity) * self.p
    }

    /// The decision for counts that already include what this request spends: `fits` says
    /// whether its `cost` fitted, and `force` whether it was spent regardless.
    fn decision(
        &self,
        capacity: u64,
        previous: u64,
        current: u64,
        cost: u64,
        fits: bool,
        force: bool,
    ) -> Decision {
        let p = self.p;
        let used = div_ceil_u128(self.estimate(previous, current), p);
        let until_window_end = p - u128::from(self.elapsed);
        let retry_after_ms = if fits {
            0
        } else if force || cost <= capacity {
            // After a forced spend, the wait of a request of cost 1.
            let cost = if force { 1 } else { cost };
            let wait = retry_after_us(capacity, previous, current, cost, p, self.elapsed);
            i64::try_from(us_to_ms_ceil(wait)).unwrap_or(i64::MAX)
        } else {
            Decision::NEVER
        };
        Decision {
            allowed: fits,
            limit: capacity,
            remaining: u64::try_from(u128::from(capacity).saturating_sub(used)).unwrap_or(0),
            reset_after_ms: if current > 0 {
                us_to_ms_ceil(until_window_end + p)
            } else if previous > 0 {
                us_to_ms_ceil(until_window_end)
            } else {
                0
            },
            retry_after_ms,
        }
    }
}

pub(crate) fn decide(
    limit: &Limit,
    state: Option<SlidingState>,
    now_us: u64,
    cost: u64,
    force: bool,
) -> Outcome {
    let capacity = limit.limit();
    let period = limit.period_us();
    let window = now_us / period;
    let at = Instant {
        p: u128::from(period),
        elapsed: now_us % period,
    };
    let (previous, current, fits, hold) = match read(limit, state, window, now_us / 1000) {
        Reading::Windows {
            previous,
            current,
            implied_expiry,
        } => {
            let fits = at.fits(capacity, previous, current, cost);
            (previous, current, fits, Err(implied_expiry))
        }
        Reading::Held {
            previous,
            current,
            until_ms,
        } => {
            let total = previous.saturating_add(current);
            let fits = total
                .checked_add(cost)
                .is_some_and(|total| total <= capacity);
            (previous, current, fits, Ok((total, until_ms)))
        }
    };
    let spends = cost > 0 && (fits || force);
    // Held counts are stored again as the current window's, on this period: they then count in
    // full until this window ends, as the units this request spends do, and decay over the next.
    let (previous, current) = match hold {
        Ok(_) if spends => (0, previous.saturating_add(current)),
        _ => (previous, current),
    };
    let (decision, change) = match hold {
        _ if spends => {
            let current = current.saturating_add(cost).min(MAX_STORED_COUNT);
            let decision = at.decision(capacity, previous, current, cost, fits, force);
            let update = store(limit, window, previous, current);
            (decision, Change::Store(update))
        }
        Err(implied_expiry) => {
            let decision = at.decision(capacity, previous, current, cost, fits, force);
            (decision, repair(implied_expiry, now_us))
        }
        Ok((total, until_ms)) => {
            let until = us_to_ms_ceil(u128::from(until_ms) * 1000 - u128::from(now_us));
            let retry_after_ms = if fits {
                0
            } else if force || cost <= capacity {
                i64::try_from(until).unwrap_or(i64::MAX)
            } else {
                Decision::NEVER
            };
            let decision = Decision {
                allowed: fits,
                limit: capacity,
                remaining: capacity.saturating_sub(total),
                reset_after_ms: if total > 0 { until } else { 0 },
                retry_after_ms,
            };
            (decision, Change::Keep)
        }
    };
    Outcome {
        decision,
        change,
        window,
    }
}

/// Gives back up to `amount` units to the window of index `target` (default: the current one),
/// if it is the current or the previous window. Returns the units given back and the change.
pub(crate) fn refund(
    limit: &Limit,
    state: Option<SlidingState>,
    now_us: u64,
    amount: u64,
    target: Option<u64>,
) -> (u64, Change) {
    let window = now_us / limit.period_us();
    let Reading::Windows {
        mut previous,
        mut current,
        implied_expiry,
    } = read(limit, state, window, now_us / 1000)
    else {
        return (0, Change::Keep);
    };
    let count = match target {
        None => &mut current,
        Some(w) if w == window => &mut current,
        Some(w) if w.checked_add(1) == Some(window) => &mut previous,
        Some(_) => return (0, repair(implied_expiry, now_us)),
    };
    let refunded = amount.min(*count);
    *count -= refunded;
    let change = match (refunded, previous, current) {
        (0, _, _) => repair(implied_expiry, now_us),
        (_, 0, 0) => Change::Delete,
        _ => Change::Store(store(limit, window, previous, current)),
    };
    (refunded, change)
}

/// The change a key without expiry needs when nothing else is written: the expiry its window
/// implies, or its deletion when that is already past.
fn repair(implied_expiry: Option<u64>, now_us: u64) -> Change {
    match implied_expiry {
        None => Change::Keep,
        Some(at_ms) if at_ms > now_us / 1000 => Change::Expire(at_ms),
        Some(_) => Change::Delete,
    }
}

fn store(limit: &Limit, window: u64, previous: u64, current: u64) -> Update {
    // The current window's count decays to nothing at the end of the next window.
    let expire_at_ms = window.saturating_add(2).saturating_mul(limit.period_ms());
    Update {
        state: State::Sliding(SlidingState {
            window,
            previous,
            current,
            expire_at_ms: Some(expire_at_ms),
        }),
        expire_at_ms,
    }
}

/// Microseconds until a request of `cost <= capacity`, denied now, would be admitted.
fn retry_after_us(
    capacity: u64,
    previous: u64,
    current: u64,
    cost: u64,
    p: u128,
    elapsed: u64,
) -> u128 {
    let elapsed = u128::from(elapsed);
    if current
        .checked_add(cost)
        .is_some_and(|total| total <= capacity)
    {
        // Within this window: the first `e` with previous * (p - e) <= room * p.
        let room = u128::from(capacity - current - cost);
        let first = p - (room * p) / u128::from(previous.max(1));
        first.saturating_sub(elapsed)
    } else {
        // In the next window, where `current` becomes the decaying previous count.
        let room = u128::from(capacity - cost);
        let first = p - (room * p) / u128::from(current.max(1));
        (p - elapsed) + first
    }
}
