//! The seed's per-user, per-endpoint API: `check_rate_limit` and `get_quota`.

use super::RedisStore;
use crate::decision::{Backend, Decision};
use crate::limit::Limit;
use crate::mask::mask_id;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::debug;

/// A user's standing against one limit, in the seed's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests allowed per period.
    pub total: u64,
    /// Requests still allowed right after this answer.
    pub remaining: u64,
    /// Requests spent in the current window: `total - remaining`.
    pub used: u64,
    /// When the window is back to full capacity, in Unix seconds, rounded up; computed from
    /// this machine's clock and the server's `reset_after`.
    pub reset_at: u64,
    /// How long until a request would be admitted: zero when it is now, `None` when it never
    /// can be (only for an invalid limit).
    pub retry_after: Option<Duration>,
    /// Which backend or failure policy answered.
    pub backend: Backend,
}

impl Quota {
    /// The quota that `decision` shows at `now`.
    pub fn from_decision(decision: &Decision, now: SystemTime) -> Quota {
        let now_ms = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis());
        let reset_at_ms = now_ms + decision.reset_after.as_millis();
        Quota {
            total: decision.limit,
            remaining: decision.remaining,
            used: decision.limit.saturating_sub(decision.remaining),
            reset_at: u64::try_from(reset_at_ms.div_ceil(1000)).unwrap_or(u64::MAX),
            retry_after: decision.retry_after,
            backend: decision.backend,
        }
    }
}

impl RedisStore {
    /// The seed's check: one request of `user_id` on `endpoint`, against `limit` requests per
    /// `period` in a FIXED window (the `INCR` + `EXPIRE` pattern, done atomically). With
    /// `check_only`, nothing is spent: it answers whether a request would be admitted now, and
    /// the quota is the standing now (a fresh key has `remaining == limit`), where
    /// `RATELIMIT.QUOTA` would answer for the request as if it were spent.
    ///
    /// The Redis key is `prefix + user_id + ":" + endpoint`. It always answers, as
    /// [`RedisStore::check`] does: a `limit` of 0, or a period under 1 ms, is denied.
    pub async fn check_rate_limit(
        &self,
        user_id: &str,
        endpoint: &str,
        limit: u64,
        period: Duration,
        check_only: bool,
    ) -> (bool, Quota) {
        let key = self.key_for(user_id, endpoint);
        let limit = Limit::new(limit, period);
        let decision = if check_only {
            // QUOTA answers for a request of cost 1, as if it were spent; nothing is, so the
            // standing now has that unit too.
            let mut decision = self.quota(&key, &limit).await;
            decision.remaining =
                (decision.remaining + u64::from(decision.allowed)).min(decision.limit);
            decision
        } else {
            self.check(&key, &limit, 1).await
        };
        debug!(
            user = %mask_id(user_id),
            endpoint = %endpoint,
            allowed = decision.allowed,
            backend = %decision.backend,
            "rate limit checked"
        );
        (
            decision.allowed,
            Quota::from_decision(&decision, SystemTime::now()),
        )
    }

    /// The seed's quota: `user_id`'s standing on `endpoint` against `limit` requests per
    /// `period`, without spending anything. Same key and answers as
    /// [`RedisStore::check_rate_limit`].
    pub async fn get_quota(
        &self,
        user_id: &str,
        endpoint: &str,
        limit: u64,
        period: Duration,
    ) -> Quota {
        self.check_rate_limit(user_id, endpoint, limit, period, true)
            .await
            .1
    }

    /// Deletes the state of `user_id` on `endpoint`, as [`RedisStore::reset`] does for its key.
    pub async fn reset_rate_limit(&self, user_id: &str, endpoint: &str) -> bool {
        self.reset(&self.key_for(user_id, endpoint)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_a_decision() {
        let decision = Decision {
            allowed: true,
            limit: 10,
            remaining: 7,
            reset_after: Duration::from_millis(1500),
            retry_after: Some(Duration::ZERO),
            backend: Backend::Script,
        };
        let now = UNIX_EPOCH + Duration::from_millis(1_000_000_200);
        let quota = Quota::from_decision(&decision, now);
        assert_eq!(
            quota,
            Quota {
                total: 10,
                remaining: 7,
                used: 3,
                reset_at: 1_000_002,
                retry_after: Some(Duration::ZERO),
                backend: Backend::Script,
            }
        );
    }
}
