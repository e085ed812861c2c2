//! Concurrency limits: [`Permit`], a slot held among at most `limit` holders, as a lease that
//! ends by itself; and [`Acquire`], the answer to [`crate::RedisStore::acquire`].
//!
//! A permit is `RATELIMIT.ACQUIRE key limit lease ID id` with an ID of its own (128 random
//! bits), and `RATELIMIT.RELEASE key id` when it is released or dropped. The ID is the
//! client's rather than the server's: the module's and the script's automatic IDs are made from
//! the clock, and a released ID could be handed out again within one tick, when a late release
//! by its first holder would free the second's slot.

use crate::decision::Backend;
use crate::error::Error;
use crate::store::RedisStore;
use ratelimit_core::lease::{MAX_ID_LEN, MAX_LEASES};
use ratelimit_core::MAX_PERIOD_MS;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

/// The answer to [`crate::RedisStore::acquire`]: a slot, or when to try again.
#[must_use = "a permit that is dropped at once releases its slot at once"]
#[derive(Debug)]
pub enum Acquire {
    /// A slot is held until the permit is released or dropped, or its lease ends.
    Granted(Permit),
    /// Every slot is taken.
    Denied(Denial),
}

impl Acquire {
    /// The permit, if one was granted.
    pub fn permit(self) -> Option<Permit> {
        match self {
            Acquire::Granted(permit) => Some(permit),
            Acquire::Denied(_) => None,
        }
    }

    /// Whether a slot was granted.
    pub fn is_granted(&self) -> bool {
        matches!(self, Acquire::Granted(_))
    }

    /// The denial, if every slot was taken.
    pub fn denial(&self) -> Option<&Denial> {
        match self {
            Acquire::Granted(_) => None,
            Acquire::Denied(denial) => Some(denial),
        }
    }
}

/// Why an acquire was refused: every slot is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denial {
    /// The number of slots.
    pub limit: u64,
    /// Until the earliest lease ends, when a slot frees for certain; a holder that releases
    /// frees one sooner. Under [`crate::FailurePolicy::Deny`], until Redis is next tried.
    pub retry_after: Duration,
    /// Until every lease held now has ended.
    pub reset_after: Duration,
    /// Which backend or failure policy answered.
    pub backend: Backend,
}

/// One of the slots of a concurrency limit, held as a lease in Redis (or, during an outage, as
/// the failure policy says).
///
/// - It is **released when dropped**: the release is spawned on the Tokio runtime that
///   acquired it, so it is freed even when the task holding it panics. [`Permit::release`]
///   releases it and waits for the answer.
/// - It **ends by itself** at [`Permit::expires_at`] unless it is renewed: a process that dies
///   never leaks its slot for longer than the lease. [`Permit::renew`] extends it by another
///   lease, and [`Permit::keep_alive`] renews it in the background for as long as it is held.
///
/// Under the failure policy: [`crate::FailurePolicy::Local`] counts the permits of this
/// process in memory, [`crate::FailurePolicy::Allow`] grants a permit that holds nothing
/// (releasing it does nothing), and [`crate::FailurePolicy::Deny`] refuses. A permit is
/// released where it was last granted or renewed ([`Permit::backend`]): a lease in Redis that
/// cannot be released during an outage ends with its lease.
pub struct Permit {
    lease: Arc<Lease>,
    runtime: Handle,
    /// Stops the keep-alive task (when dropped), which then releases the permit.
    keep_alive: Option<KeepAlive>,
    released: bool,
}

/// The keep-alive task of a permit: its stop signal (dropped to stop it), and the task, which
/// answers the release.
type KeepAlive = (oneshot::Sender<()>, JoinHandle<Result<bool, Error>>);

/// What the store needs to renew and release a permit.
pub(crate) struct Lease {
    pub(crate) store: RedisStore,
    /// The key without the store's prefix, for logs.
    pub(crate) subject: String,
    pub(crate) redis_key: String,
    pub(crate) id: String,
    pub(crate) limit: u64,
    pub(crate) lease_ms: u64,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy)]
struct State {
    expires_at: Instant,
    backend: Backend,
    remaining: u64,
}

impl Lease {
    pub(crate) fn new(
        store: RedisStore,
        subject: String,
        redis_key: String,
        limit: u64,
        lease_ms: u64,
    ) -> Lease {
        Lease {
            store,
            subject,
            redis_key,
            id: new_id(),
            limit,
            lease_ms,
            state: Mutex::new(State {
                expires_at: Instant::now(),
                backend: Backend::Module,
                remaining: 0,
            }),
        }
    }

    fn state(&self) -> State {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a grant or a renewal of the request sent at `sent`: the server's lease starts
    /// after it, so `sent + lease` never promises more than the server holds.
    fn granted(&self, sent: Instant, remaining: u64, backend: Backend) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        *state = State {
            expires_at: sent + Duration::from_millis(self.lease_ms),
            backend,
            remaining,
        };
    }

    pub(crate) fn backend(&self) -> Backend {
        self.state().backend
    }

    /// Acquires again with the permit's ID: a renewal if the lease is live.
    async fn renew(&self) -> Result<bool, Error> {
        let sent = Instant::now();
        let (decision, backend) = self.store.acquire_lease(self).await?;
        if decision.allowed {
            self.granted(sent, decision.remaining, backend);
        }
        Ok(decision.allowed)
    }
}

impl Acquire {
    /// The answer to the acquire of `lease`, sent at `sent`.
    pub(crate) fn from_reply(
        lease: Lease,
        sent: Instant,
        decision: ratelimit_core::Decision,
        backend: Backend,
    ) -> Acquire {
        if !decision.allowed {
            return Acquire::Denied(Denial {
                limit: decision.limit,
                retry_after: Duration::from_millis(
                    u64::try_from(decision.retry_after_ms).unwrap_or(u64::MAX),
                ),
                reset_after: Duration::from_millis(decision.reset_after_ms),
                backend,
            });
        }
        lease.granted(sent, decision.remaining, backend);
        Acquire::Granted(Permit {
            lease: Arc::new(lease),
            runtime: Handle::current(),
            keep_alive: None,
            released: false,
        })
    }
}

impl Permit {
    /// The lease's ID, as `ZRANGE key 0 -1` lists it.
    pub fn id(&self) -> &str {
        &self.lease.id
    }

    /// The Redis key of the slots (with the store's prefix).
    pub fn redis_key(&self) -> &str {
        &self.lease.redis_key
    }

    /// The number of slots.
    pub fn limit(&self) -> u64 {
        self.lease.limit
    }

    /// How long the lease lasts from its grant or its last renewal.
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease.lease_ms)
    }

    /// The free slots right after the last grant or renewal.
    pub fn remaining(&self) -> u64 {
        self.lease.state().remaining
    }

    /// When the lease ends unless it is renewed; on Tokio's clock, and on the early side (it
    /// counts from when the request was sent).
    pub fn expires_at(&self) -> Instant {
        self.lease.state().expires_at
    }

    /// Which backend or failure policy granted or last renewed the lease.
    pub fn backend(&self) -> Backend {
        self.lease.backend()
    }

    /// Extends the lease to a full lease from now. Answers `false` when the lease was lost: it
    /// had ended and its slot was taken (the permit then holds nothing). A lease that had ended
    /// while a slot was free is granted again.
    ///
    /// Fails when Redis refuses the call (the key holds other data). During an outage the
    /// failure policy answers, as for an acquire.
    pub async fn renew(&self) -> Result<bool, Error> {
        self.lease.renew().await
    }

    /// Renews the lease in the background, every third of the lease, until the permit is
    /// released or dropped: for a job that runs longer than the lease, while the lease still
    /// frees the slot soon after the process dies. Calling it again does nothing. A renewal
    /// that finds the lease lost stops the renewals, with a warning.
    pub fn keep_alive(&mut self) {
        if self.keep_alive.is_some() || self.released {
            return;
        }
        let (stop, mut stopped) = oneshot::channel::<()>();
        let lease = Arc::clone(&self.lease);
        let every = Duration::from_millis((self.lease.lease_ms / 3).max(1));
        let task = self.runtime.spawn(async move {
            let mut renewing = true;
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    () = tokio::time::sleep(every), if renewing => {}
                }
                // Not raced against `stopped`: a renewal that lands after the release would
                // take the slot again.
                match lease.renew().await {
                    Ok(true) => {}
                    Ok(false) => {
                        warn!(key = %lease.subject, "a kept-alive permit was lost: its lease ended and its slot was taken");
                        renewing = false;
                    }
                    Err(error) => {
                        warn!(key = %lease.subject, error = %error, "a kept-alive permit could not be renewed");
                        renewing = false;
                    }
                }
            }
            lease.store.release_lease(&lease).await
        });
        self.keep_alive = Some((stop, task));
    }

    /// Releases the slot now, and answers whether the lease was still held (`false` when it
    /// had ended, or under [`crate::FailurePolicy::Allow`]). Fails when Redis refuses the call;
    /// during an outage, a lease held in Redis ends with its lease.
    pub async fn release(mut self) -> Result<bool, Error> {
        self.released = true;
        match self.keep_alive.take() {
            Some((stop, task)) => {
                drop(stop);
                task.await.unwrap_or(Ok(false))
            }
            None => self.lease.store.release_lease(&self.lease).await,
        }
    }
}

impl Drop for Permit {
    /// Releases the slot in a task of the runtime that acquired the permit; nothing waits for
    /// it. If that runtime is gone, the lease ends by itself.
    fn drop(&mut self) {
        if self.released {
            return;
        }
        // The keep-alive task releases once it sees its stop signal dropped.
        if self.keep_alive.take().is_some() {
            return;
        }
        let lease = Arc::clone(&self.lease);
        self.runtime.spawn(async move {
            if let Err(error) = lease.store.release_lease(&lease).await {
                debug!(key = %lease.subject, error = %error, "a dropped permit could not be released");
            }
        });
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lease.state();
        f.debug_struct("Permit")
            .field("key", &self.lease.subject)
            .field("id", &self.lease.id)
            .field("limit", &self.lease.limit)
            .field("lease_ms", &self.lease.lease_ms)
            .field("backend", &state.backend)
            .field("keep_alive", &self.keep_alive.is_some())
            .finish()
    }
}

/// `limit` and `lease` in the contract's ranges: 1 to 10^6 slots, a lease from 1 ms to 3650
/// days, rounded up to the millisecond. Answers the lease in ms.
pub(crate) fn valid_concurrency(limit: u64, lease: Duration) -> Result<(u64, u64), Error> {
    if !(1..=MAX_LEASES).contains(&limit) {
        return Err(Error::InvalidLimit(format!(
            "a concurrency limit of {limit}: expected 1 to {MAX_LEASES}"
        )));
    }
    let lease_ms = lease
        .as_nanos()
        .div_ceil(1_000_000)
        .try_into()
        .unwrap_or(u64::MAX);
    if !(1..=MAX_PERIOD_MS).contains(&lease_ms) {
        return Err(Error::InvalidLimit(format!(
            "a lease of {lease:?}: expected 1 ms to 3650 days"
        )));
    }
    Ok((limit, lease_ms))
}

/// A lease ID of 1 to 128 bytes.
pub(crate) fn valid_id(id: &str) -> Result<(), Error> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(Error::InvalidArgument(format!(
            "a lease ID of {} bytes: expected 1 to {MAX_ID_LEN}",
            id.len()
        )));
    }
    Ok(())
}

/// 128 random bits in hex, from the operating system's generator.
fn new_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::getrandom(&mut bytes).is_err() {
        // No OS generator: the clock and a per-process random seed, unique enough per process.
        let seeded = foldhash::quality::RandomState::default();
        let now = std::time::SystemTime::now();
        let a = std::hash::BuildHasher::hash_one(&seeded, (now, 1u8));
        let b = std::hash::BuildHasher::hash_one(&seeded, (now, 2u8));
        bytes[..8].copy_from_slice(&a.to_le_bytes());
        bytes[8..].copy_from_slice(&b.to_le_bytes());
    }
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_the_limit_and_the_lease() {
        assert_eq!(
            valid_concurrency(3, Duration::from_micros(1500)).unwrap(),
            (3, 2)
        );
        assert!(valid_concurrency(0, Duration::from_secs(1))
            .unwrap_err()
            .is_invalid_limit());
        assert!(valid_concurrency(MAX_LEASES + 1, Duration::from_secs(1)).is_err());
        assert!(valid_concurrency(1, Duration::ZERO).is_err());
        assert!(valid_concurrency(1, Duration::from_millis(MAX_PERIOD_MS + 1)).is_err());
        assert!(valid_id("").is_err() && valid_id(&"x".repeat(129)).is_err());
        assert!(valid_id(&"x".repeat(128)).is_ok());
    }

    #[test]
    fn ids_are_random() {
        let (a, b) = (new_id(), new_id());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
