//! The answers: a [`Decision`] for a request, a [`Quota`] for a question, and the [`Backend`]
//! that gave them.

use std::fmt;
use std::time::Duration;

/// Which backend, or which failure policy, produced an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// The `RATELIMIT.*` commands of the module, loaded in Redis.
    Module,
    /// The Lua script with the module's contract, run in Redis without the module.
    Script,
    /// The in-process limiter: Redis was out and the failure policy is `Local`.
    Local,
    /// Redis was out and the failure policy failed open.
    Allow,
    /// Redis was out and the failure policy failed closed.
    Deny,
}

impl Backend {
    /// `module`, `script`, `local`, `allow` or `deny`, as logs and the examples write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Module => "module",
            Backend::Script => "script",
            Backend::Local => "local",
            Backend::Allow => "allow",
            Backend::Deny => "deny",
        }
    }

    /// Whether Redis answered (the module or the script), rather than the failure policy.
    pub fn is_redis(self) -> bool {
        matches!(self, Backend::Module | Backend::Script)
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the limiter says of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Admitted: its cost is spent (unless it was a dry run).
    Admitted,
    /// Not yet: a request of the same cost is admitted after this wait, unless others spend
    /// in between. Rounded up to the millisecond, so waiting this long is enough.
    RetryAfter(Duration),
    /// Never: the cost exceeds the capacity, so no wait helps.
    CannotFit,
}

impl Outcome {
    /// The outcome of the contract's `allowed` and `retry_after_ms` (-1 for never).
    pub(crate) fn from_reply(allowed: bool, retry_after_ms: i64) -> Outcome {
        match (allowed, u64::try_from(retry_after_ms)) {
            (true, _) => Outcome::Admitted,
            (false, Ok(ms)) => Outcome::RetryAfter(Duration::from_millis(ms)),
            (false, Err(_)) => Outcome::CannotFit,
        }
    }

    /// The wait of [`Outcome::RetryAfter`]; `None` for the others.
    pub fn retry_after(self) -> Option<Duration> {
        match self {
            Outcome::RetryAfter(wait) => Some(wait),
            Outcome::Admitted | Outcome::CannotFit => None,
        }
    }

    /// The contract's `retry_after_ms`: 0 when admitted, -1 when it can never fit.
    pub fn retry_after_ms(self) -> i64 {
        match self {
            Outcome::Admitted => 0,
            Outcome::RetryAfter(wait) => i64::try_from(wait.as_millis()).unwrap_or(i64::MAX),
            Outcome::CannotFit => -1,
        }
    }
}

/// The answer to one request, in the shape of the `RATELIMIT.CHECK` reply.
///
/// Let the request through when [`Decision::allowed`] holds. [`Decision::outcome`] says what
/// the limiter decided; they differ only in shadow mode ([`crate::Config::shadow`]), where a
/// denial is reported and counted but not enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// What the limiter decided.
    pub outcome: Outcome,
    /// The capacity: `limit`, or the burst for GCRA.
    pub limit: u64,
    /// Units still available right after this decision.
    pub remaining: u64,
    /// Time until the limiter is back to full capacity if nothing more is spent.
    pub reset_after: Duration,
    /// Which backend or failure policy answered.
    pub backend: Backend,
    /// `false` in shadow mode: a denial is only reported.
    pub enforced: bool,
}

impl Decision {
    /// Converts the contract's five numbers, as every backend computes them.
    pub(crate) fn from_core(decision: ratelimit_core::Decision, backend: Backend) -> Decision {
        Decision {
            outcome: Outcome::from_reply(decision.allowed, decision.retry_after_ms),
            limit: decision.limit,
            remaining: decision.remaining,
            reset_after: Duration::from_millis(decision.reset_after_ms),
            backend,
            enforced: true,
        }
    }

    /// Whether to let the request through: the limiter admitted it, or it is in shadow mode.
    pub fn allowed(&self) -> bool {
        self.is_admitted() || !self.enforced
    }

    /// Whether the limiter admitted the request (and spent its cost, unless it was a dry run).
    pub fn is_admitted(&self) -> bool {
        self.outcome == Outcome::Admitted
    }

    /// Whether the limiter denied the request and shadow mode let it through anyway.
    pub fn is_shadow_denial(&self) -> bool {
        !self.enforced && !self.is_admitted()
    }

    /// The wait before a retry, when the request was denied for now; see [`Outcome`].
    pub fn retry_after(&self) -> Option<Duration> {
        self.outcome.retry_after()
    }

    /// `reset_after` in whole milliseconds.
    pub fn reset_after_ms(&self) -> u64 {
        u64::try_from(self.reset_after.as_millis()).unwrap_or(u64::MAX)
    }
}

/// The standing of a limiter, for a person or a dashboard asking "how much is left?": the
/// answer to [`crate::RedisStore::quota`]. Nothing is spent to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// What a request of cost 1 would get now.
    pub next: Outcome,
    /// The capacity: `limit`, or the burst for GCRA.
    pub limit: u64,
    /// Units available.
    pub remaining: u64,
    /// Time until the limiter is back to full capacity if nothing more is spent.
    pub reset_after: Duration,
    /// Which backend or failure policy answered.
    pub backend: Backend,
}

impl Quota {
    /// Units spent and not yet back: `limit - remaining`.
    pub fn used(&self) -> u64 {
        self.limit.saturating_sub(self.remaining)
    }

    /// The reply of `RATELIMIT.QUOTA` (or an equivalent dry run of cost 1).
    pub(crate) fn from_core(decision: ratelimit_core::Decision, backend: Backend) -> Quota {
        let decision = Decision::from_core(decision, backend);
        Quota {
            next: decision.outcome,
            limit: decision.limit,
            remaining: decision.remaining,
            reset_after: decision.reset_after,
            backend,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core(allowed: bool, retry_after_ms: i64) -> ratelimit_core::Decision {
        ratelimit_core::Decision {
            allowed,
            limit: 5,
            remaining: 2,
            reset_after_ms: 1500,
            retry_after_ms,
        }
    }

    #[test]
    fn the_three_outcomes() {
        let admitted = Decision::from_core(core(true, 0), Backend::Module);
        assert!(admitted.allowed() && admitted.is_admitted());
        assert_eq!(
            (admitted.retry_after(), admitted.reset_after_ms()),
            (None, 1500)
        );
        let later = Decision::from_core(core(false, 250), Backend::Script);
        assert_eq!(
            later.outcome,
            Outcome::RetryAfter(Duration::from_millis(250))
        );
        assert!(!later.allowed());
        assert_eq!(later.outcome.retry_after_ms(), 250);
        let never = Decision::from_core(core(false, -1), Backend::Local);
        assert_eq!(
            (never.outcome, never.outcome.retry_after_ms()),
            (Outcome::CannotFit, -1)
        );
        let shadowed = Decision {
            enforced: false,
            ..later
        };
        assert!(shadowed.allowed() && shadowed.is_shadow_denial() && !shadowed.is_admitted());
        let quota = Quota::from_core(core(true, 0), Backend::Module);
        assert_eq!((quota.next, quota.used()), (Outcome::Admitted, 3));
    }
}
