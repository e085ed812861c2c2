//! FIXED: a window that opens at the first admitted request on an absent key and lasts
//! `period`. It admits while `count + cost <= limit`.
//!
//! The window's end is the key's absolute expiry: it is set once, when the window opens, and
//! never extended by later hits. Time here is in whole milliseconds, the resolution of Redis
//! expiry; a window that has reached its end is treated as absent even if Redis has not yet
//! removed the key. A key without expiry (written by hand, or after `PERSIST`) is a window that
//! starts now; any command that decides on it gives it that window's end as its expiry.

use crate::{Change, Decision, FixedState, Limit, Outcome, State, Update, MAX_STORED_COUNT};

/// The state as the algorithm sees it at one instant.
struct Reading {
    /// Units spent in the current window, at most [`MAX_STORED_COUNT`].
    count: u64,
    /// The current window's end in ms: the key's expiry, or the end of a window opening now.
    window_end: u64,
    /// The key has no expiry: the window is taken to start now, and its end must be set.
    without_expiry: bool,
}

fn read(limit: &Limit, state: Option<FixedState>, now_ms: u64) -> Reading {
    let fresh_end = now_ms.saturating_add(limit.period_ms());
    match state {
        Some(FixedState {
            count,
            window_end_ms: Some(end),
        }) if end > now_ms => Reading {
            count: count.min(MAX_STORED_COUNT),
            window_end: end,
            without_expiry: false,
        },
        Some(FixedState {
            count,
            window_end_ms: None,
        }) => Reading {
            count: count.min(MAX_STORED_COUNT),
            window_end: fresh_end,
            without_expiry: true,
        },
        _ => Reading {
            count: 0,
            window_end: fresh_end,
            without_expiry: false,
        },
    }
}

pub(crate) fn decide(
    limit: &Limit,
    state: Option<FixedState>,
    now_us: u64,
    cost: u64,
    force: bool,
) -> Outcome {
    let now_ms = now_us / 1000;
    let capacity = limit.limit();
    let Reading {
        count,
        window_end,
        without_expiry,
    } = read(limit, state, now_ms);
    let until_end = window_end - now_ms;

    let fits = count
        .checked_add(cost)
        .is_some_and(|total| total <= capacity);
    let spends = cost > 0 && (fits || force);
    let count = if spends {
        count.saturating_add(cost).min(MAX_STORED_COUNT)
    } else {
        count
    };
    let retry_after_ms = if fits {
        0
    } else if force || cost <= capacity {
        // In debt, or full: only the window's end brings room back.
        i64::try_from(until_end).unwrap_or(i64::MAX)
    } else {
        Decision::NEVER
    };
    let decision = Decision {
        allowed: fits,
        limit: capacity,
        remaining: capacity.saturating_sub(count),
        reset_after_ms: if count > 0 { until_end } else { 0 },
        retry_after_ms,
    };
    let change = if spends {
        Change::Store(store(count, window_end))
    } else if without_expiry {
        Change::Expire(window_end)
    } else {
        Change::Keep
    };
    Outcome {
        decision,
        change,
        window: window_end,
    }
}

/// Gives back up to `amount` units, only to the window ending at `window` when given. Returns
/// the units given back and the change.
pub(crate) fn refund(
    limit: &Limit,
    state: Option<FixedState>,
    now_us: u64,
    amount: u64,
    window: Option<u64>,
) -> (u64, Change) {
    let Reading {
        count,
        window_end,
        without_expiry,
    } = read(limit, state, now_us / 1000);
    let refunded = if window.is_none_or(|w| w == window_end) {
        amount.min(count)
    } else {
        0
    };
    let change = match count - refunded {
        _ if refunded == 0 && without_expiry => Change::Expire(window_end),
        _ if refunded == 0 => Change::Keep,
        0 => Change::Delete,
        left => Change::Store(store(left, window_end)),
    };
    (refunded, change)
}

fn store(count: u64, window_end: u64) -> Update {
    Update {
        state: State::Fixed(FixedState {
            count,
            window_end_ms: Some(window_end),
        }),
        expire_at_ms: window_end,
    }
}
