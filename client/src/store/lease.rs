//! The store's concurrency limits: [`RedisStore::acquire`], and the renewals and releases of
//! its [`Permit`]s (`RATELIMIT.ACQUIRE` and `RATELIMIT.RELEASE`).

use super::RedisStore;
use crate::command::Command;
use crate::decision::Backend;
use crate::error::Error;
use crate::key::Key;
use crate::permit::{valid_concurrency, Acquire, Lease};
use std::time::Duration;
use tokio::time::Instant;

impl RedisStore {
    /// Takes one of `limit` concurrency slots on `key` (under the prefix) for `lease`: "at
    /// most 5 reports running per user". Answers a [`crate::Permit`] that holds the slot until
    /// it is released or dropped, or until its lease ends unless it is renewed, so that a
    /// holder that crashes frees its slot after `lease`; or a [`crate::Denial`] with when to
    /// retry. See [`crate::Permit`] for renewals and for what the failure policy does while
    /// Redis is out.
    ///
    /// The slots are a sorted set in Redis (`ZRANGE key 0 -1 WITHSCORES` lists the leases),
    /// so the key must not hold a rate limit. Fails when `limit` is not from 1 to 10^6 or
    /// `lease` not from 1 ms to 3650 days ([`Error::is_invalid_limit`]), and when the key holds
    /// other data ([`Error::is_wrong_type`]). Needs a Tokio runtime, on which the permit's
    /// release is spawned when it is dropped.
    pub async fn acquire<'k>(
        &self,
        key: impl Into<Key<'k>>,
        limit: u64,
        lease: Duration,
    ) -> Result<Acquire, Error> {
        let (limit, lease_ms) = valid_concurrency(limit, lease)?;
        let key = key.into();
        let lease = Lease::new(
            self.clone(),
            key.masked(""),
            self.redis_key(key),
            limit,
            lease_ms,
        );
        let sent = Instant::now();
        let store = self.clone();
        // To the end even if this future is dropped: a permit granted then is released.
        Self::to_the_end(async move {
            let (decision, backend) = store.acquire_new_lease(&lease).await?;
            Ok(Acquire::from_reply(lease, sent, decision, backend))
        })
        .await
    }

    /// [`RedisStore::acquire_lease`] for a new permit. When Redis times out, the failure policy
    /// answers, but the command may still run once Redis answers again (a paused or overloaded
    /// server), granting a lease nobody holds: its ID, this permit's own, is then released in
    /// Redis as soon as Redis answers, for as long as such a lease could live.
    async fn acquire_new_lease(
        &self,
        lease: &Lease,
    ) -> Result<(ratelimit_core::Decision, Backend), Error> {
        self.acquire_lease_noting(lease, |error| {
            if error.is_timeout() {
                let (key, id) = (lease.redis_key.clone(), lease.id.clone());
                self.release_in_redis_later(key, id, lease.lease_ms);
            }
        })
        .await
    }

    /// Releases the lease `id` of `redis_key` in Redis once Redis answers, trying with a
    /// doubling wait (up to a second) for at most `lease_ms`, after which no such lease lives.
    fn release_in_redis_later(&self, redis_key: String, id: String, lease_ms: u64) {
        let store = self.clone();
        tokio::spawn(async move {
            let until = Instant::now() + Duration::from_millis(lease_ms);
            let mut wait = Duration::from_millis(50);
            while Instant::now() < until {
                let command = Command::Release {
                    key: &redis_key,
                    id: &id,
                };
                match store.run_on_redis(&command).await {
                    Err(error) if error.is_outage() => {
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(1));
                    }
                    _ => return,
                }
            }
        });
    }

    /// `RATELIMIT.ACQUIRE` with the permit's ID: a grant, or a renewal of a live lease.
    pub(crate) async fn acquire_lease(
        &self,
        lease: &Lease,
    ) -> Result<(ratelimit_core::Decision, Backend), Error> {
        self.acquire_lease_noting(lease, |_| {}).await
    }

    /// [`RedisStore::acquire_lease`], telling `on_outage` of an outage before the failure
    /// policy answers.
    async fn acquire_lease_noting(
        &self,
        lease: &Lease,
        on_outage: impl FnOnce(&Error),
    ) -> Result<(ratelimit_core::Decision, Backend), Error> {
        let command = Command::Acquire {
            key: &lease.redis_key,
            limit: lease.limit,
            lease_ms: lease.lease_ms,
            id: &lease.id,
        };
        let key = Key::from(lease.redis_key.as_str());
        let (reply, backend) = self.answer_noting(&command, key, on_outage).await?;
        Ok((reply.decision()?, backend))
    }

    /// `RATELIMIT.RELEASE` where the permit was last granted: in Redis (or, during an outage,
    /// by the failure policy), in this process for [`Backend::Local`], and nowhere for a
    /// permit that holds nothing.
    pub(crate) async fn release_lease(&self, lease: &Lease) -> Result<bool, Error> {
        let command = Command::Release {
            key: &lease.redis_key,
            id: &lease.id,
        };
        match lease.backend() {
            Backend::Module | Backend::Script => {
                let key = Key::from(lease.redis_key.as_str());
                self.answer(&command, key).await?.0.released()
            }
            Backend::Local => self.fallback.release_local(&command),
            Backend::Allow | Backend::Deny => Ok(false),
        }
    }
}
