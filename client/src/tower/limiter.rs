//! What the layer asks: [`Limiter`], implemented by [`RedisStore`] and [`LocalLimiter`].

use crate::decision::Decision;
use crate::error::Error;
use crate::key::Key;
use crate::limit::Limit;
use crate::local::LocalLimiter;
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
}
