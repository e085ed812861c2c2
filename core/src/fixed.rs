//! FIXED: a window that opens at the first admitted request on an absent key and lasts
//! `period`. It admits while `count + cost <= limit`.
//!
//! The window's end is the key's absolute expiry: it is set once, when the window opens, and
//! never extended by later hits. Time here is in whole milliseconds, the resolution of Redis
//! expiry; a window that has reached its end is treated as absent even if Redis has not yet
//! removed the key.

use crate::{Decision, FixedState, Limit, State, Update};

pub(crate) fn decide(
    limit: &Limit,
    state: Option<FixedState>,
    now_us: u64,
    cost: u64,
) -> (Decision, Option<Update>) {
    let now_ms = now_us / 1000;
    let capacity = limit.limit();
    let fresh_end = now_ms.saturating_add(limit.period_ms());
    let (count, window_end) = match state {
        Some(FixedState {
            count,
            window_end_ms: Some(end),
        }) if end > now_ms => (count, end),
        // A key written without expiry: its window is taken to start now.
        Some(FixedState {
            count,
            window_end_ms: None,
        }) => (count, fresh_end),
        _ => (0, fresh_end),
    };
    let until_end = window_end - now_ms;
    let reset_after = |count: u64| if count > 0 { until_end } else { 0 };

    let fits = count
        .checked_add(cost)
        .is_some_and(|total| total <= capacity);
    if !fits {
        let retry_after_ms = if cost > capacity {
            Decision::NEVER
        } else {
            i64::try_from(until_end).unwrap_or(i64::MAX)
        };
        let decision = Decision {
            allowed: false,
            limit: capacity,
            remaining: capacity.saturating_sub(count),
            reset_after_ms: reset_after(count),
            retry_after_ms,
        };
        return (decision, None);
    }

    let count = count + cost;
    let decision = Decision {
        allowed: true,
        limit: capacity,
        remaining: capacity - count,
        reset_after_ms: reset_after(count),
        retry_after_ms: 0,
    };
    let update = (cost > 0).then_some(Update {
        state: State::Fixed(FixedState {
            count,
            window_end_ms: Some(window_end),
        }),
        expire_at_ms: window_end,
    });
    (decision, update)
}
