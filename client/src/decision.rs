//! The answer to one check, and which backend gave it.

use std::fmt;
use std::time::Duration;

/// Which backend, or which failure policy, produced a [`Decision`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// The `RATELIMIT.*` commands of the module, loaded in Redis.
    Module,
    /// The Lua script with the module's contract, run in Redis without the module.
    Script,
    /// The in-process limiter, used when Redis is unreachable and the policy is `Local`.
    Local,
    /// Redis was unreachable and the policy failed open.
    Allow,
    /// Redis was unreachable and the policy failed closed.
    Deny,
}

impl Backend {
    /// The name used in logs and in the example's JSON: `module`, `script`, `local`, `allow`
    /// or `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Module => "module",
            Backend::Script => "script",
            Backend::Local => "local",
            Backend::Allow => "allow",
            Backend::Deny => "deny",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer to one check, in the shape of the `RATELIMIT.CHECK` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request is admitted.
    pub allowed: bool,
    /// The capacity: `limit`, or `burst` for GCRA.
    pub limit: u64,
    /// Units still available right after this decision.
    pub remaining: u64,
    /// Time until the limiter is back to full capacity if nothing more is spent.
    pub reset_after: Duration,
    /// Time until a request of this cost would be admitted: zero when admitted, `None` when it
    /// never can be (the cost exceeds the capacity).
    pub retry_after: Option<Duration>,
    /// Which backend or failure policy answered.
    pub backend: Backend,
}

impl Decision {
    /// Converts the contract's five numbers, as the module and the script reply them.
    pub fn from_core(decision: ratelimit_core::Decision, backend: Backend) -> Decision {
        Decision {
            allowed: decision.allowed,
            limit: decision.limit,
            remaining: decision.remaining,
            reset_after: Duration::from_millis(decision.reset_after_ms),
            retry_after: u64::try_from(decision.retry_after_ms)
                .ok()
                .map(Duration::from_millis),
            backend,
        }
    }

    /// `reset_after` in whole milliseconds.
    pub fn reset_after_ms(&self) -> u64 {
        u64::try_from(self.reset_after.as_millis()).unwrap_or(u64::MAX)
    }

    /// `retry_after` in whole milliseconds, -1 for never, as the module replies it.
    pub fn retry_after_ms(&self) -> i64 {
        match self.retry_after {
            Some(wait) => i64::try_from(wait.as_millis()).unwrap_or(i64::MAX),
            None => -1,
        }
    }
}
