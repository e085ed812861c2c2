//! Pure rate limiting algorithms and their storage format.
//!
//! Every implementation of the redis-ratelimit contract (the Redis module, the client's Lua
//! fallback and its in-memory limiter) takes its decisions here, or mirrors them exactly. Each
//! algorithm is a pure function of `(previous state, now, cost)` that returns a [`Decision`] and,
//! when something must be written, an [`Update`]. Nothing in this crate reads a clock, does I/O or
//! knows about Redis: the caller supplies the time and stores the state.
//!
//! Time is measured in microseconds since the Unix epoch (`now_us`). A server whose clock only
//! has milliseconds passes `ms * 1000`.
#![warn(missing_docs)]

mod fixed;
mod gcra;
mod limit;
pub mod parse;
mod sliding;
mod storage;

pub use limit::{Algorithm, Limit, LimitError, MAX_COUNT, MAX_PERIOD_MS};
pub use storage::{DecodeError, Encoded, FixedState, GcraState, SlidingState, State};

/// The answer to one request, in the shape of the `RATELIMIT.CHECK` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request is admitted.
    pub allowed: bool,
    /// The capacity: `limit` for FIXED and SLIDING, `burst` for GCRA.
    pub limit: u64,
    /// Units still available right after this decision, from 0 to `limit`.
    pub remaining: u64,
    /// Milliseconds until the limiter is back to full capacity if nothing more is spent.
    pub reset_after_ms: u64,
    /// Milliseconds until a request of this cost would be admitted: 0 when admitted, and
    /// [`Decision::NEVER`] when the cost exceeds the capacity.
    pub retry_after_ms: i64,
}

impl Decision {
    /// The `retry_after_ms` of a request that can never be admitted.
    pub const NEVER: i64 = -1;
}

/// What the caller must store after an admitted request: the new state and the absolute
/// expiry of its key, in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Update {
    /// The new state, to be written with [`State::encode`].
    pub state: State,
    /// When the key must expire (`PXAT`): the instant the limiter is back to full capacity.
    pub expire_at_ms: u64,
}

/// A stored state belongs to another algorithm than the one requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrongAlgorithm {
    /// The algorithm of the stored state.
    pub found: Algorithm,
    /// The algorithm the request asked for.
    pub requested: Algorithm,
}

/// Decides one request of `cost` units at `now_us` against the previous `state`.
///
/// Returns the decision and, when the request is admitted with a cost above zero, the update to
/// store. A denied request, or one of cost 0, returns no update: nothing changes. A dry run is the
/// same call with the update ignored. Fails only when `state` belongs to another algorithm.
// Inlined into the callers in other crates (the module, the in-memory limiter), so that the
// decision and the update are built in place rather than copied out.
#[inline]
pub fn decide(
    limit: &Limit,
    state: Option<&State>,
    now_us: u64,
    cost: u64,
) -> Result<(Decision, Option<Update>), WrongAlgorithm> {
    let mismatch = |found: Algorithm| WrongAlgorithm {
        found,
        requested: limit.algorithm(),
    };
    match limit.algorithm() {
        Algorithm::Fixed => {
            let previous = match state {
                None => None,
                Some(State::Fixed(s)) => Some(*s),
                Some(other) => return Err(mismatch(other.algorithm())),
            };
            Ok(fixed::decide(limit, previous, now_us, cost))
        }
        Algorithm::Sliding => {
            let previous = match state {
                None => None,
                Some(State::Sliding(s)) => Some(*s),
                Some(other) => return Err(mismatch(other.algorithm())),
            };
            Ok(sliding::decide(limit, previous, now_us, cost))
        }
        Algorithm::Gcra => {
            let previous = match state {
                None => None,
                Some(State::Gcra(s)) => Some(*s),
                Some(other) => return Err(mismatch(other.algorithm())),
            };
            Ok(gcra::decide(limit, previous, now_us, cost))
        }
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
