//! What answers when Redis cannot: the failure policy's decisions.

use super::{RedisStore, Request};
use crate::breaker::BreakerState;
use crate::config::FailurePolicy;
use crate::decision::{Backend, Decision};
use crate::error::Error;
use crate::limit::Limit;
use std::time::{Duration, Instant};

impl RedisStore {
    /// The failure policy's decision.
    pub(super) fn policy_decision(
        &self,
        full_key: &str,
        limit: &ratelimit_core::Limit,
        request: Request,
    ) -> Result<Decision, Error> {
        let capacity = limit.capacity();
        match self.inner.config.on_failure {
            FailurePolicy::Local => {
                let local = self.local();
                let decision = match request {
                    Request::Check { cost, dry_run } => {
                        local.check(full_key, limit, cost, dry_run)?
                    }
                    Request::Quota => local.quota(full_key, limit, 1)?,
                };
                Ok(Decision::from_core(decision, Backend::Local))
            }
            // Nothing is counted while failing open: the limiter is reported full.
            FailurePolicy::Allow => Ok(Decision {
                allowed: true,
                limit: capacity,
                remaining: capacity,
                reset_after: Duration::ZERO,
                retry_after: Some(Duration::ZERO),
                backend: Backend::Allow,
            }),
            FailurePolicy::Deny => Ok(self.outage_denial(capacity)),
        }
    }

    /// A denial while Redis is out: retry when the breaker next lets a probe through.
    pub(super) fn outage_denial(&self, capacity: u64) -> Decision {
        let wait = match self.inner.breaker.state() {
            BreakerState::Open { until } => until.saturating_duration_since(Instant::now()),
            BreakerState::Closed | BreakerState::HalfOpen => self.inner.config.breaker.base_backoff,
        };
        let wait = ceil_ms(wait).max(Duration::from_millis(1));
        Decision {
            allowed: false,
            limit: capacity,
            remaining: 0,
            reset_after: wait,
            retry_after: Some(wait),
            backend: Backend::Deny,
        }
    }
}

/// The decision for an invalid limit or cost: denied, never to be admitted.
pub(super) fn invalid_decision(limit: &Limit) -> Decision {
    Decision {
        allowed: false,
        limit: limit.burst.unwrap_or(limit.limit),
        remaining: 0,
        reset_after: Duration::ZERO,
        retry_after: None,
        backend: Backend::Deny,
    }
}

/// `duration` rounded up to whole milliseconds, as the contract rounds times.
fn ceil_ms(duration: Duration) -> Duration {
    let ms = duration.as_millis() + u128::from(!duration.subsec_nanos().is_multiple_of(1_000_000));
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn rounds_up_to_milliseconds() {
        assert_eq!(
            ceil_ms(Duration::from_micros(1500)),
            Duration::from_millis(2)
        );
        assert_eq!(ceil_ms(Duration::from_millis(7)), Duration::from_millis(7));
        assert_eq!(ceil_ms(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    pub(super) fn invalid_limits_are_never_admitted() {
        let decision = invalid_decision(&Limit::new(0, Duration::from_secs(1)));
        assert!(!decision.allowed);
        assert_eq!(decision.retry_after_ms(), -1);
        assert_eq!(decision.backend, Backend::Deny);
    }
}
