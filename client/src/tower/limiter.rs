//! What the layer asks: [`Limiter`], implemented by [`RedisStore`] and [`LocalLimiter`].

use crate::decision::Decision;
use crate::error::Error;
use crate::key::Key;
use crate::limit::Limit;
use crate::local::LocalLimiter;
use crate::multi::{AllDecision, Hold, LimitCheck};
use crate::reservation::Settlement;
use crate::store::RedisStore;
use std::future::Future;
use std::sync::Arc;

/// A rate limiter for the layer: a [`RedisStore`], a [`LocalLimiter`], or a fake one in tests.
///
/// Outages are the limiter's to answer, as [`RedisStore::check`] does with its
/// [`crate::FailurePolicy`]. An error is a request the limiter refuses for its key (a key that
/// holds other data): the layer answers it `500 Internal Server Error` and logs it.
pub trait Limiter: Send + Sync + 'static {
    /// Decides one request of `cost` units on `key` and, if it is admitted, spends its cost.
    fn check(
        &self,
        key: Key<'_>,
        limit: &Limit,
        cost: u64,
    ) -> impl Future<Output = Result<Decision, Error>> + Send;

    /// The decision a request of `cost` would get now, spending nothing.
    fn check_dry_run(
        &self,
        key: Key<'_>,
        limit: &Limit,
        cost: u64,
    ) -> impl Future<Output = Result<Decision, Error>> + Send;

    /// Decides one request against several policies, all or nothing: admitted only if every
    /// policy admits it, and then every policy spends its cost; if any denies it, nothing is
    /// spent anywhere. The layer asks this once per request.
    ///
    /// [`RedisStore`] and [`LocalLimiter`] do it atomically, in one call. The default, for
    /// other limiters, asks every policy with a dry run, then checks each for real only if all
    /// admit it: a request that races another between the two passes may then be denied after
    /// the policies before the denying one have spent.
    fn check_all(
        &self,
        checks: &[LimitCheck<'_>],
    ) -> impl Future<Output = Result<AllDecision, Error>> + Send {
        two_passes(self, checks)
    }

    /// Settles `hold`, spent under `limit` on `key` by [`Limiter::check_all`], at its real cost
    /// `actual`: gives back the difference, or charges the excess (see
    /// [`RedisStore::settle`]). The default settles nothing.
    fn settle(
        &self,
        key: Key<'_>,
        limit: &Limit,
        hold: Hold,
        actual: u64,
    ) -> impl Future<Output = Result<Settlement, Error>> + Send {
        let _ = (key, limit, hold, actual);
        std::future::ready(Ok(Settlement {
            refunded: 0,
            charged: 0,
            quota: None,
        }))
    }
}

/// The default [`Limiter::check_all`]: a dry run of every policy, then, if all admit the
/// request, a real check of each in order, stopping at the first denial. The decisions of the
/// dry run stand for the policies that were not checked for real.
async fn two_passes<L: Limiter + ?Sized>(
    limiter: &L,
    checks: &[LimitCheck<'_>],
) -> Result<AllDecision, Error> {
    let mut decisions = Vec::with_capacity(checks.len());
    if let [check] = checks {
        decisions.push(limiter.check(check.key, check.limit, check.cost).await?);
    } else {
        for check in checks {
            decisions.push(
                limiter
                    .check_dry_run(check.key, check.limit, check.cost)
                    .await?,
            );
        }
        if decisions.iter().all(Decision::is_admitted) {
            for (check, slot) in checks.iter().zip(&mut decisions) {
                *slot = limiter.check(check.key, check.limit, check.cost).await?;
                if !slot.is_admitted() {
                    break;
                }
            }
        }
    }
    Ok(AllDecision::from_decisions(decisions))
}

/// Redis through the module or the script; while Redis is out, the store's failure policy
/// decides. Keys are under the store's prefix, and its shadow mode applies.
impl Limiter for RedisStore {
    fn check(
        &self,
        key: Key<'_>,
        limit: &Limit,
        cost: u64,
    ) -> impl Future<Output = Result<Decision, Error>> + Send {
        RedisStore::check(self, key, limit, cost)
    }

    fn check_dry_run(
        &self,
        key: Key<'_>,
        limit: &Limit,
        cost: u64,
    ) -> impl Future<Output = Result<Decision, Error>> + Send {
        RedisStore::check_dry_run(self, key, limit, cost)
    }

    /// One `RATELIMIT.MCHECK`. In a Redis Cluster, keys in several slots cannot go in one
    /// command: they are checked in two passes, as the default does.
    fn check_all(
        &self,
        checks: &[LimitCheck<'_>],
    ) -> impl Future<Output = Result<AllDecision, Error>> + Send {
        let one_slot = !self.config().is_cluster() || {
            let slot = |check: &LimitCheck<'_>| {
                redis::cluster_routing::Slot::for_key(self.redis_key(check.key))
            };
            checks.iter().all(|check| slot(check) == slot(&checks[0]))
        };
        async move {
            if one_slot {
                RedisStore::check_all(self, checks).await
            } else {
                two_passes(self, checks).await
            }
        }
    }

    fn settle(
        &self,
        key: Key<'_>,
        limit: &Limit,
        hold: Hold,
        actual: u64,
    ) -> impl Future<Output = Result<Settlement, Error>> + Send {
        RedisStore::settle(self, key, limit, hold, actual)
    }
}

/// The in-process limiter on its own clock: limits counted by this process alone, with the
/// module's exact semantics. Keys have no prefix.
impl Limiter for LocalLimiter {
    fn check(
        &self,
        key: Key<'_>,
        limit: &Limit,
        cost: u64,
    ) -> impl Future<Output = Result<Decision, Error>> + Send {
        std::future::ready(LocalLimiter::check(self, &key.redis_key(""), limit, cost))
    }

    fn check_dry_run(
        &self,
        key: Key<'_>,
        limit: &Limit,
        cost: u64,
    ) -> impl Future<Output = Result<Decision, Error>> + Send {
        std::future::ready(LocalLimiter::check_dry_run(
            self,
            &key.redis_key(""),
            limit,
            cost,
        ))
    }

    fn check_all(
        &self,
        checks: &[LimitCheck<'_>],
    ) -> impl Future<Output = Result<AllDecision, Error>> + Send {
        std::future::ready(LocalLimiter::check_all(self, checks))
    }

    fn settle(
        &self,
        key: Key<'_>,
        limit: &Limit,
        hold: Hold,
        actual: u64,
    ) -> impl Future<Output = Result<Settlement, Error>> + Send {
        std::future::ready(LocalLimiter::settle(
            self,
            &key.redis_key(""),
            limit,
            hold,
            actual,
        ))
    }
}

impl<L: Limiter> Limiter for Arc<L> {
    fn check(
        &self,
        key: Key<'_>,
        limit: &Limit,
        cost: u64,
    ) -> impl Future<Output = Result<Decision, Error>> + Send {
        L::check(self, key, limit, cost)
    }

    fn check_dry_run(
        &self,
        key: Key<'_>,
        limit: &Limit,
        cost: u64,
    ) -> impl Future<Output = Result<Decision, Error>> + Send {
        L::check_dry_run(self, key, limit, cost)
    }

    fn check_all(
        &self,
        checks: &[LimitCheck<'_>],
    ) -> impl Future<Output = Result<AllDecision, Error>> + Send {
        L::check_all(self, checks)
    }

    fn settle(
        &self,
        key: Key<'_>,
        limit: &Limit,
        hold: Hold,
        actual: u64,
    ) -> impl Future<Output = Result<Settlement, Error>> + Send {
        L::settle(self, key, limit, hold, actual)
    }
}
