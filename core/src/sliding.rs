//! SLIDING: the sliding-window counter.
//!
//! Windows are aligned to multiples of `period` since the Unix epoch. The estimate at `elapsed`
//! microseconds into the current window is
//! `previous * (period - elapsed) / period + current`, and a request is admitted while
//! `estimate + cost <= limit`. All comparisons are exact: both sides are multiplied by `period`
//! and compared as 128-bit integers. Reported numbers round toward denial: `remaining` rounds
//! the estimate up, and times round up to the millisecond.

use crate::{div_ceil_u128, us_to_ms_ceil, Decision, Limit, SlidingState, State, Update};

pub(crate) fn decide(
    limit: &Limit,
    state: Option<SlidingState>,
    now_us: u64,
    cost: u64,
) -> (Decision, Option<Update>) {
    let capacity = limit.limit();
    let period = limit.period_us();
    let window = now_us / period;
    let elapsed = now_us % period;
    let (previous, current) = match state {
        Some(s) if s.window == window => (s.previous, s.current),
        Some(s) if s.window.checked_add(1) == Some(window) => (s.current, 0),
        // A window index ahead of the clock means the period was changed, or the clock went
        // back: keep the counts rather than forget what was spent.
        Some(s) if s.window > window => (s.previous, s.current),
        _ => (0, 0),
    };

    let p = u128::from(period);
    let decayed = |previous: u64| u128::from(previous) * (p - u128::from(elapsed));
    // Scaled by `period`: estimate * period.
    let estimate = |current: u64| decayed(previous) + u128::from(current) * p;
    let remaining = |current: u64| {
        let used = div_ceil_u128(estimate(current), p);
        u64::try_from(u128::from(capacity).saturating_sub(used)).unwrap_or(0)
    };
    let until_window_end = p - u128::from(elapsed);
    let reset_after = |current: u64| {
        if current > 0 {
            us_to_ms_ceil(until_window_end + p)
        } else if previous > 0 {
            us_to_ms_ceil(until_window_end)
        } else {
            0
        }
    };

    let admitted =
        cost <= capacity && estimate(current) + u128::from(cost) * p <= u128::from(capacity) * p;
    if !admitted {
        let retry_after_ms = if cost > capacity {
            Decision::NEVER
        } else {
            let wait = retry_after_us(capacity, previous, current, cost, p, elapsed);
            i64::try_from(us_to_ms_ceil(wait)).unwrap_or(i64::MAX)
        };
        let decision = Decision {
            allowed: false,
            limit: capacity,
            remaining: remaining(current),
            reset_after_ms: reset_after(current),
            retry_after_ms,
        };
        return (decision, None);
    }

    let current = current + cost;
    let decision = Decision {
        allowed: true,
        limit: capacity,
        remaining: remaining(current),
        reset_after_ms: reset_after(current),
        retry_after_ms: 0,
    };
    let update = (cost > 0).then(|| Update {
        state: State::Sliding(SlidingState {
            window,
            previous,
            current,
        }),
        // The current window's count decays to nothing at the end of the next window.
        expire_at_ms: window.saturating_add(2).saturating_mul(limit.period_ms()),
    });
    (decision, update)
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
