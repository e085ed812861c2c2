//! What the layer asks: [`Limiter`], implemented by [`RedisStore`] and [`LocalLimiter`].

use crate::decision::{Backend, Decision};
use crate::limit::Limit;
use crate::local::LocalLimiter;
use crate::store::RedisStore;
use ratelimit_core::MAX_COUNT;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tracing::error;

/// A rate limiter that always decides: the layer's view of [`RedisStore`].
///
/// Both methods answer a [`Decision`], never an error: whatever can go wrong (Redis is down, the
/// limit is invalid) is the limiter's to decide, as [`RedisStore::check`] does with its
/// [`crate::FailurePolicy`]. Implement it to put the layer in front of another store, or of a
/// fake one in tests.
pub trait Limiter: Send + Sync + 'static {
    /// Decides one request of `cost` units on `key` and, if it is admitted, spends its cost.
    fn check(&self, key: &str, limit: &Limit, cost: u64) -> impl Future<Output = Decision> + Send;

    /// The decision a request of `cost` would get now, spending nothing.
    fn check_dry_run(
        &self,
        key: &str,
        limit: &Limit,
        cost: u64,
    ) -> impl Future<Output = Decision> + Send;
}

/// Redis through the module or the script; while Redis cannot answer, the store's failure
/// policy decides. Keys are under the store's prefix.
impl Limiter for RedisStore {
    fn check(&self, key: &str, limit: &Limit, cost: u64) -> impl Future<Output = Decision> + Send {
        RedisStore::check(self, key, limit, cost)
    }

    fn check_dry_run(
        &self,
        key: &str,
        limit: &Limit,
        cost: u64,
    ) -> impl Future<Output = Decision> + Send {
        RedisStore::check_dry_run(self, key, limit, cost)
    }
}

/// The in-memory limiter on the wall clock: limits counted by this process alone, with the
/// module's exact semantics. An invalid limit or cost, or a key that holds another algorithm's
/// state, is denied for good (`retry_after: None`, backend [`Backend::Deny`]) and logged, as
/// [`RedisStore::check`] does.
impl Limiter for LocalLimiter {
    fn check(&self, key: &str, limit: &Limit, cost: u64) -> impl Future<Output = Decision> + Send {
        std::future::ready(local_decision(self, key, limit, cost, false))
    }

    fn check_dry_run(
        &self,
        key: &str,
        limit: &Limit,
        cost: u64,
    ) -> impl Future<Output = Decision> + Send {
        std::future::ready(local_decision(self, key, limit, cost, true))
    }
}

impl<L: Limiter> Limiter for Arc<L> {
    fn check(&self, key: &str, limit: &Limit, cost: u64) -> impl Future<Output = Decision> + Send {
        L::check(self, key, limit, cost)
    }

    fn check_dry_run(
        &self,
        key: &str,
        limit: &Limit,
        cost: u64,
    ) -> impl Future<Output = Decision> + Send {
        L::check_dry_run(self, key, limit, cost)
    }
}

fn local_decision(
    local: &LocalLimiter,
    key: &str,
    limit: &Limit,
    cost: u64,
    dry_run: bool,
) -> Decision {
    let core = match limit.to_core() {
        Ok(core) if cost <= MAX_COUNT => core,
        Ok(_) => {
            error!(cost, "invalid cost: the request is denied");
            return never(limit);
        }
        Err(reason) => {
            error!(error = %reason, "invalid rate limit: the request is denied");
            return never(limit);
        }
    };
    match local.check(key, &core, cost, dry_run) {
        Ok(decision) => Decision::from_core(decision, Backend::Local),
        Err(wrong) => {
            error!(
                found = %wrong.found.name(),
                requested = %wrong.requested.name(),
                "the key holds another algorithm's state: the request is denied"
            );
            never(limit)
        }
    }
}

/// A denial that no wait can lift.
fn never(limit: &Limit) -> Decision {
    Decision {
        allowed: false,
        limit: limit.burst.unwrap_or(limit.limit),
        remaining: 0,
        reset_after: Duration::ZERO,
        retry_after: None,
        backend: Backend::Deny,
    }
}
