//! Pure rate limiting algorithms and their storage format.
//!
//! Every implementation of the redis-ratelimit contract (the Redis module, the client's Lua
//! fallback and its in-memory limiter) takes its decisions here, or mirrors them exactly. Each
//! algorithm is a pure function of `(previous state, now, request)` that returns a [`Decision`]
//! and the [`Change`] to make to the key ([`decide`], [`quota`], [`refund`], and [`decide_all`]
//! for several policies at once). Nothing in this crate reads a clock, does I/O or knows about
//! Redis: the caller supplies the time and stores the state.
//!
//! Time is measured in microseconds since the Unix epoch (`now_us`). A server whose clock only
//! has milliseconds passes `ms * 1000`.
#![warn(missing_docs)]

mod fixed;
mod gcra;
pub mod lease;
mod limit;
pub mod parse;
mod sliding;
mod storage;

pub use limit::{Algorithm, Limit, LimitError, MAX_COUNT, MAX_PERIOD_MS};
pub use storage::{DecodeError, Encoded, FixedState, GcraState, SlidingState, State};

/// The answer to one request, in the shape of the `RATELIMIT.CHECK` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request is admitted: with `FORCE`, whether its cost fitted.
    pub allowed: bool,
    /// The capacity: `limit` for FIXED and SLIDING, `burst` for GCRA.
    pub limit: u64,
    /// Units still available right after this decision, from 0 to `limit`; 0 while in debt.
    pub remaining: u64,
    /// Milliseconds until the limiter is back to full capacity if nothing more is spent.
    pub reset_after_ms: u64,
    /// Milliseconds until a request of this cost would be admitted: 0 when admitted, and
    /// [`Decision::NEVER`] when the cost exceeds the capacity. After a `FORCE`d request that
    /// did not fit, the time until a request of cost 1 fits again.
    pub retry_after_ms: i64,
}

impl Decision {
    /// The `retry_after_ms` of a request that can never be admitted.
    pub const NEVER: i64 = -1;
}

/// A new state to store: the state and the absolute expiry of its key, in milliseconds since
/// the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Update {
    /// The new state, to be written with [`State::encode`]. Its expiry fields are set as a
    /// read of the stored key would set them.
    pub state: State,
    /// When the key must expire (`PXAT`): the instant the limiter is back to full capacity.
    pub expire_at_ms: u64,
}

/// What the caller must do to the key after a decision or a refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing: the key stays as it is.
    Keep,
    /// Store a new state with its absolute expiry (`SET key value PXAT expire_at_ms`).
    Store(Update),
    /// Keep the value but give the key this absolute expiry in milliseconds
    /// (`PEXPIREAT`): it had none, and this is the one the state implies.
    Expire(u64),
    /// Delete the key (`DEL`): the limiter is back to full capacity, or the key without expiry
    /// holds nothing that still counts.
    Delete,
}

impl Change {
    /// The state a later read of the key would find, from `before`, the state read now.
    pub fn apply(&self, before: Option<State>) -> Option<State> {
        match *self {
            Change::Keep => before,
            Change::Store(update) => Some(update.state),
            Change::Expire(at_ms) => before.map(|state| state.with_expiry(at_ms)),
            Change::Delete => None,
        }
    }
}

/// The result of [`decide`]: the decision, what to do to the key, and the window the cost was
/// spent in (`WITHWINDOW`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The five integers of the reply.
    pub decision: Decision,
    /// What to write. A dry run ignores it.
    pub change: Change,
    /// FIXED: the window's absolute end in Unix ms. SLIDING: the index of the aligned window,
    /// `floor(now_ms / period_ms)`. GCRA: 0.
    pub window: u64,
}

/// The result of [`refund`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refund {
    /// Units actually given back, from 0 to the amount asked.
    pub refunded: u64,
    /// The standing afterwards, as [`quota`] gives it for a request of cost 1.
    pub standing: Decision,
    /// What to write.
    pub change: Change,
}

/// A stored state belongs to another algorithm than the one requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrongAlgorithm {
    /// The algorithm of the stored state.
    pub found: Algorithm,
    /// The algorithm the request asked for.
    pub requested: Algorithm,
}

/// The largest count FIXED and SLIDING store, and the largest they read: 2^53 - 1. Debt from
/// `FORCE` saturates there, and a larger count written by hand reads as this one (it denies
/// every request either way). It keeps counts exact in a Lua number.
pub const MAX_STORED_COUNT: u64 = (1 << 53) - 1;

/// Decides one request of `cost` units at `now_us` against the previous `state`.
///
/// Without `force`, a request is admitted when its cost fits; then, if the cost is above zero,
/// the new state is to be stored. A denied request changes nothing, with one exception: a key
/// without expiry is given the expiry its state implies ([`Change::Expire`], or
/// [`Change::Delete`] when nothing in it counts any more), so that it can never lock anyone out.
///
/// With `force`, the cost is spent even when it does not fit (usage that already happened):
/// the limiter goes into debt, saturating at [`MAX_STORED_COUNT`] for FIXED and SLIDING and at
/// 2^60 GCRA units ahead of now for GCRA.
///
/// A dry run is the same call with the change ignored. Fails only when `state` belongs to
/// another algorithm.
// Inlined into the callers in other crates (the module, the in-memory limiter), so that the
// outcome is built in place rather than copied out.
#[inline]
pub fn decide(
    limit: &Limit,
    state: Option<&State>,
    now_us: u64,
    cost: u64,
    force: bool,
) -> Result<Outcome, WrongAlgorithm> {
    Ok(match limit.algorithm() {
        Algorithm::Fixed => fixed::decide(limit, fixed_state(limit, state)?, now_us, cost, force),
        Algorithm::Sliding => {
            sliding::decide(limit, sliding_state(limit, state)?, now_us, cost, force)
        }
        Algorithm::Gcra => gcra::decide(limit, gcra_state(limit, state)?, now_us, cost, force),
    })
}

/// The standing now, as `RATELIMIT.QUOTA` answers it: `remaining` and `reset_after_ms` with
/// nothing spent (a fresh key shows the full capacity), and `allowed` and `retry_after_ms` for
/// a request of `cost` units. Never writes.
pub fn quota(
    limit: &Limit,
    state: Option<&State>,
    now_us: u64,
    cost: u64,
) -> Result<Decision, WrongAlgorithm> {
    let now = decide(limit, state, now_us, 0, false)?.decision;
    let asked = decide(limit, state, now_us, cost, false)?.decision;
    Ok(Decision {
        allowed: asked.allowed,
        retry_after_ms: asked.retry_after_ms,
        ..now
    })
}

/// Gives back up to `amount` units spent earlier, as `RATELIMIT.REFUND` does.
///
/// - GCRA: the arrival time moves back by `amount` emission intervals, never before now.
/// - FIXED: the count drops by up to `amount`, never below 0, but only if the key's current
///   window ends at `window` (when given): units spent in a window that has ended are never
///   credited to a later one.
/// - SLIDING: if `window` is the current window's index (the default), its count drops; if it
///   is the previous window's, the previous count drops; otherwise nothing changes.
///
/// A refund that brings the limiter back to full capacity deletes the key. Fails only when
/// `state` belongs to another algorithm.
pub fn refund(
    limit: &Limit,
    state: Option<&State>,
    now_us: u64,
    amount: u64,
    window: Option<u64>,
) -> Result<Refund, WrongAlgorithm> {
    let (refunded, change) = match limit.algorithm() {
        Algorithm::Fixed => {
            fixed::refund(limit, fixed_state(limit, state)?, now_us, amount, window)
        }
        Algorithm::Sliding => {
            sliding::refund(limit, sliding_state(limit, state)?, now_us, amount, window)
        }
        Algorithm::Gcra => gcra::refund(limit, gcra_state(limit, state)?, now_us, amount),
    };
    let after = change.apply(state.copied());
    let standing = quota(limit, after.as_ref(), now_us, 1)?;
    Ok(Refund {
        refunded,
        standing,
        change,
    })
}

/// One policy of [`decide_all`]: a limit, its key's state and the request's cost under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy<'a> {
    /// The limit.
    pub limit: &'a Limit,
    /// The state read from the policy's key.
    pub state: Option<&'a State>,
    /// The units the request spends under this policy.
    pub cost: u64,
}

/// The result of [`decide_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllOutcome {
    /// Whether every policy admitted the request (with `force`: whether every cost fitted).
    pub allowed: bool,
    /// 0 when allowed; [`Decision::NEVER`] when some policy can never admit it; otherwise the
    /// longest wait among the policies that denied it.
    pub retry_after_ms: i64,
    /// Each policy's outcome, in order. Its decision is what `RATELIMIT.CHECK` of that policy
    /// alone would answer (as a dry run when the whole request is denied). Its change is what
    /// to write: when the request is denied without `force`, only the repair of a key without
    /// expiry is left; everything else is [`Change::Keep`].
    pub outcomes: Vec<Outcome>,
}

/// Decides one request against several policies at once, all or nothing, as
/// `RATELIMIT.MCHECK` does: the request is admitted only if every policy admits it, and then
/// every policy spends its cost; if any denies it, nothing is spent anywhere. With `force`,
/// every policy spends its cost whatever the decisions. Fails when a state belongs to another
/// algorithm than its policy's.
pub fn decide_all(
    policies: &[Policy<'_>],
    now_us: u64,
    force: bool,
) -> Result<AllOutcome, WrongAlgorithm> {
    let mut outcomes = Vec::with_capacity(policies.len());
    for policy in policies {
        outcomes.push(decide(
            policy.limit,
            policy.state,
            now_us,
            policy.cost,
            force,
        )?);
    }
    let allowed = outcomes.iter().all(|o| o.decision.allowed);
    let retry_after_ms = if allowed {
        0
    } else {
        let denied = outcomes.iter().filter(|o| !o.decision.allowed);
        let waits = denied.map(|o| o.decision.retry_after_ms);
        if waits.clone().any(|wait| wait == Decision::NEVER) {
            Decision::NEVER
        } else {
            waits.max().unwrap_or(0)
        }
    };
    if !allowed && !force {
        // Nothing is spent anywhere. A key without expiry still gets the repair a denied
        // request would give it alone, whether its own policy admitted the request or not:
        // the change of a request of cost 0, which spends nothing.
        for (outcome, policy) in outcomes.iter_mut().zip(policies) {
            if let Change::Store(_) = outcome.change {
                outcome.change = decide(policy.limit, policy.state, now_us, 0, false)?.change;
            }
        }
    }
    Ok(AllOutcome {
        allowed,
        retry_after_ms,
        outcomes,
    })
}

fn mismatch(limit: &Limit, found: &State) -> WrongAlgorithm {
    WrongAlgorithm {
        found: found.algorithm(),
        requested: limit.algorithm(),
    }
}

fn fixed_state(limit: &Limit, state: Option<&State>) -> Result<Option<FixedState>, WrongAlgorithm> {
    match state {
        None => Ok(None),
        Some(State::Fixed(s)) => Ok(Some(*s)),
        Some(other) => Err(mismatch(limit, other)),
    }
}

fn sliding_state(
    limit: &Limit,
    state: Option<&State>,
) -> Result<Option<SlidingState>, WrongAlgorithm> {
    match state {
        None => Ok(None),
        Some(State::Sliding(s)) => Ok(Some(*s)),
        Some(other) => Err(mismatch(limit, other)),
    }
}

fn gcra_state(limit: &Limit, state: Option<&State>) -> Result<Option<GcraState>, WrongAlgorithm> {
    match state {
        None => Ok(None),
        Some(State::Gcra(s)) => Ok(Some(*s)),
        Some(other) => Err(mismatch(limit, other)),
    }
}

/// `ceil(numerator / denominator)` for non-negative values; `denominator` must not be zero.
pub(crate) fn div_ceil_u128(numerator: u128, denominator: u128) -> u128 {
    numerator.div_ceil(denominator)
}

/// The longest time any reply or expiry reports: 2^53 - 1 ms, about 285,000 years. Only absurd
/// configurations (a huge burst over a long period) reach it; the cap keeps every time exact in
/// a 64-bit integer and in a Lua number.
pub const MAX_TIME_MS: u64 = (1 << 53) - 1;

/// Microseconds rounded up to whole milliseconds, capped at [`MAX_TIME_MS`].
pub(crate) fn us_to_ms_ceil(us: u128) -> u64 {
    u64::try_from(div_ceil_u128(us, 1000)).map_or(MAX_TIME_MS, |ms| ms.min(MAX_TIME_MS))
}
