//! [`RedisStore`]: rate limits in Redis, through the module or the Lua script, with a failure
//! policy for when Redis is out.
//!
//! The store is a facade over its collaborators, each a field:
//!
//! | field | role | file |
//! |---|---|---|
//! | `connection` | the connection to Redis (one server or a cluster), replaced by a fresh one when Redis comes back | `store/connection.rs` |
//! | `selector` | which backend answers in Redis: the module, or the Lua script; re-detected | `store/selector.rs`, with `module.rs` and `script.rs` |
//! | `fallback` | the failure policy, the circuit breaker and the in-process limiter; the record of each outage | `store/fallback.rs`, with `local.rs` |
//!
//! Every check follows one path: [`RedisStore::check`] builds a [`Command`], `answer` asks the
//! selector to run it on the connection (`on_redis` keeps the call off Redis while the breaker
//! is open, bounds it with a deadline and reports the outcome to the fallback), and on an
//! outage the fallback answers instead. The probe that ends an outage is in
//! `store/recovery.rs`, and the seed's operations in `store/compat.rs`.
//!
//! # Keys
//! Every key the store touches starts with the configured prefix (`ratelimit:` by default), so
//! that [`RedisStore::clear_all`] finds them all and nothing else:
//!
//! | operations | key argument | Redis key |
//! |---|---|---|
//! | [`RedisStore::check`], [`RedisStore::quota`], [`RedisStore::reset`], ... | a [`Key`] or a `&str` | `prefix + key` (`prefix + scope + ":" + subject` for [`Key::new`]) |
//! | [`RedisStore::check_rate_limit`], [`RedisStore::get_quota`], [`RedisStore::reset_rate_limit`] | `user_id` and `endpoint` | `prefix + user_id + ":" + endpoint` |
//! | [`RedisStore::increment`], [`RedisStore::get`], [`RedisStore::get_with_expiry`] | a counter's name | `prefix + key` |

mod budget;
mod compat;
mod connection;
mod fallback;
mod lease;
mod recovery;
mod selector;
mod share;

use crate::breaker::BreakerState;
use crate::command::{Command, Reply};
use crate::config::Config;
use crate::decision::{Backend, Decision, Outcome, Quota};
use crate::error::Error;
use crate::key::Key;
use crate::limit::Limit;
use crate::local::valid_cost;
use connection::{Connection, SharedConnection};
use fallback::Fallback;
use recovery::Probe;
use selector::BackendSelector;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

/// Rate limits in Redis, shared by every task of the process: clone it freely (its fields are
/// `Arc`s).
///
/// Each command goes to the module's `RATELIMIT.*` commands when the server has them,
/// otherwise to the Lua script of identical meaning. While Redis is out (unreachable, or unable
/// to serve), the [`crate::FailurePolicy`] answers the checks, a circuit breaker keeps every
/// call away from Redis, and a probe in the background finds it back. Every [`Decision`] names
/// the [`Backend`] that produced it.
///
/// It needs a Tokio runtime with time enabled.
#[derive(Clone)]
pub struct RedisStore {
    config: Arc<Config>,
    connection: Arc<SharedConnection>,
    selector: Arc<BackendSelector>,
    fallback: Arc<Fallback>,
    /// The local shares of limits with a local batch (`store/share.rs`).
    shares: Arc<share::Shares>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.config.masked_target().unwrap_or_default())
            .field("prefix", &self.config.prefix)
            .field("backend", &self.backend())
            .field("on_failure", &self.config.on_failure)
            .field("shadow", &self.config.shadow)
            .field("shared_units_held", &self.shares.held())
            .finish()
    }
}

impl RedisStore {
    // Construction ------------------------------------------------------------------------------

    /// A store for `config`. It returns at once, whether Redis is up or not: the checks answer
    /// from the failure policy until Redis answers. In the background it connects and logs the
    /// outcome with `tracing`: `INFO connected to Redis`, or a `WARN` that Redis cannot be
    /// reached, then an `INFO` when it is back. Without a `tracing` subscriber nothing is
    /// printed; [`RedisStore::ping`] tells the same.
    ///
    /// With [`Config::cluster_nodes`], it connects to a Redis Cluster: each command goes to the
    /// master that owns its key's slot.
    ///
    /// Fails only on an invalid configuration: no URL (nor cluster node), an invalid URL, both a
    /// URL and cluster nodes, a zero timeout, a TLS CA file that cannot be read or holds no
    /// certificate ([`Config::tls_ca_file`]), or no Tokio runtime to run in.
    pub fn new(config: Config) -> Result<RedisStore, Error> {
        config.validate()?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::InvalidConfig(
                "RedisStore must be created within a Tokio runtime".into(),
            ));
        }
        let target = config.masked_target().unwrap_or_default();
        let connection = Arc::new(SharedConnection::new(Connection::open(&config)?));
        let selector = Arc::new(BackendSelector::new(
            config.redetect_interval,
            target.clone(),
        ));
        let fallback = Arc::new(Fallback::new(&config, target));
        let config = Arc::new(config);
        let store = RedisStore {
            shares: RedisStore::new_shares(&config, &connection, &selector, &fallback),
            config,
            connection,
            selector,
            fallback,
        };
        tokio::spawn(store.clone().connect_at_start());
        Ok(store)
    }

    /// [`RedisStore::new`] with [`Config::from_env`]: `REDIS_URL` (or `REDIS_CLUSTER_NODES`),
    /// `RATELIMIT_PREFIX`, `RATELIMIT_ON_FAILURE`, ... Fails when `REDIS_URL` is unset or a
    /// variable is invalid; never because Redis is down.
    pub fn from_env() -> Result<RedisStore, Error> {
        RedisStore::new(Config::from_env()?)
    }

    // Decisions ---------------------------------------------------------------------------------

    /// Decides one request of `cost` units on `key` (under the prefix) and, if it is admitted,
    /// spends its cost. A cost of 0 only asks.
    ///
    /// A limit with a local batch ([`Limit::with_local_batch`]) is checked against this
    /// process's share of it, and Redis is asked only for a new batch (see the guide's "Hot
    /// keys").
    ///
    /// Redis answers (the module or the script) when it can. While Redis is out, the failure
    /// policy answers instead, so an outage never fails a check. Fails only when Redis, or the
    /// in-process limiter, refuses the request for this key: `cost` above 10^15
    /// ([`Error::is_invalid_limit`]), or a key that holds other data ([`Error::is_data_error`]:
    /// another type, another algorithm's state).
    pub async fn check<'k>(
        &self,
        key: impl Into<Key<'k>>,
        limit: &Limit,
        cost: u64,
    ) -> Result<Decision, Error> {
        let cost = valid_cost(cost)?;
        if limit.local_batch() > 1 && cost > 0 {
            return self.check_shared(key.into(), limit, cost).await;
        }
        self.decide(key.into(), limit, cost, false).await
    }

    /// [`RedisStore::check`] without spending: the decision a request of `cost` would get now.
    pub async fn check_dry_run<'k>(
        &self,
        key: impl Into<Key<'k>>,
        limit: &Limit,
        cost: u64,
    ) -> Result<Decision, Error> {
        self.decide(key.into(), limit, valid_cost(cost)?, true)
            .await
    }

    /// [`RedisStore::check`], waiting for an admission rather than refusing, for batch jobs and
    /// workers: while the request is denied for now, it sleeps the decision's `retry_after` and
    /// checks again. It gives up, answering the denial, when the next wait would take it past
    /// `max_wait`, or at once when the request can never fit ([`Outcome::CannotFit`]). In
    /// shadow mode it never waits.
    pub async fn check_or_wait<'k>(
        &self,
        key: impl Into<Key<'k>>,
        limit: &Limit,
        cost: u64,
        max_wait: Duration,
    ) -> Result<Decision, Error> {
        let key = key.into();
        let give_up = tokio::time::Instant::now() + max_wait;
        loop {
            let decision = self.check(key, limit, cost).await?;
            match decision.outcome {
                Outcome::RetryAfter(wait)
                    if decision.enforced && tokio::time::Instant::now() + wait <= give_up =>
                {
                    tokio::time::sleep(wait).await
                }
                _ => return Ok(decision),
            }
        }
    }

    /// The standing of `key` now (`RATELIMIT.QUOTA`): units available, and what a request of
    /// cost 1 would get. Spends nothing. Answers and fails as [`RedisStore::check`] does.
    pub async fn quota<'k>(&self, key: impl Into<Key<'k>>, limit: &Limit) -> Result<Quota, Error> {
        let key = key.into();
        let redis_key = self.redis_key(key);
        let command = Command::Quota {
            key: &redis_key,
            limit: limit.core(),
        };
        let (reply, backend) = self.answer(&command, key).await?;
        Ok(Quota::from_core(reply.decision()?, backend))
    }

    /// Deletes the limiter's state on `key` (under the prefix), in Redis and in the in-process
    /// limiter: the subject starts again with a full allowance. Answers whether Redis had a
    /// state.
    ///
    /// Fails, deleting nothing in Redis, when the key is no limiter (another type, or a string
    /// that no algorithm wrote), and while Redis is out ([`Error::is_outage`]).
    pub async fn reset<'k>(&self, key: impl Into<Key<'k>>) -> Result<bool, Error> {
        let redis_key = self.redis_key(key.into());
        self.fallback.forget(&redis_key);
        let command = Command::Reset { key: &redis_key };
        let (reply, _) = self.run_on_redis(&command).await?;
        reply.reset()
    }

    // The seed's operations (store/compat.rs) ----------------------------------------------------

    /// The seed's check: one request of `user_id` on `endpoint`, against `limit` requests per
    /// `period` in a FIXED window (the `INCR` + `EXPIRE` pattern, done atomically), under the
    /// key `prefix + user_id + ":" + endpoint`. With `check_only`, nothing is spent. Answers
    /// whether the request may go ahead, and the standing after it (with `check_only`, the
    /// standing now: a fresh key has `remaining == limit`).
    ///
    /// Fails as [`RedisStore::check`] does, and when `limit` is 0 or `period` is not a whole
    /// number of milliseconds from 1 ms to 3650 days ([`Error::is_invalid_limit`]).
    pub async fn check_rate_limit(
        &self,
        user_id: &str,
        endpoint: &str,
        limit: u64,
        period: Duration,
        check_only: bool,
    ) -> Result<(bool, Quota), Error> {
        let limit = Limit::fixed(limit, period)?;
        let key = Key::user_endpoint(user_id, endpoint);
        // A dry run of cost 1 rather than QUOTA: its numbers are the contract's in every
        // version of the module.
        let decision = self.decide(key, &limit, 1, check_only).await?;
        Ok(compat::seed_answer(&decision, check_only))
    }

    /// The seed's quota: `user_id`'s standing on `endpoint` now, spending nothing. As
    /// [`RedisStore::check_rate_limit`] with `check_only`.
    pub async fn get_quota(
        &self,
        user_id: &str,
        endpoint: &str,
        limit: u64,
        period: Duration,
    ) -> Result<Quota, Error> {
        let (_, quota) = self
            .check_rate_limit(user_id, endpoint, limit, period, true)
            .await?;
        Ok(quota)
    }

    /// Deletes the state of `user_id` on `endpoint`, as [`RedisStore::reset`] does.
    pub async fn reset_rate_limit(&self, user_id: &str, endpoint: &str) -> Result<bool, Error> {
        self.reset(Key::user_endpoint(user_id, endpoint)).await
    }

    /// Adds `amount` to the counter `key` (under the prefix) and answers its new value. A new
    /// counter expires after `expiry` (at least 1 ms); an existing counter keeps its expiry,
    /// which is never extended. Atomic.
    ///
    /// The counter is a decimal integer, the FIXED format, so [`RedisStore::reset`] deletes it.
    /// Fails when `amount` exceeds 2^63 - 1, the key holds something else than an integer, or
    /// Redis is out: counters have no failure policy.
    pub async fn increment(&self, key: &str, expiry: Duration, amount: u64) -> Result<u64, Error> {
        let key = self.redis_key(key);
        let deadline = self.config.call_deadline();
        self.on_redis(Some(deadline), |mut conn| async move {
            compat::increment(&mut conn, &key, expiry, amount).await
        })
        .await
    }

    /// The counter `key` (under the prefix): its value, or 0 when it does not exist. Fails when
    /// the key holds something else than a non-negative integer, or Redis is out.
    pub async fn get(&self, key: &str) -> Result<u64, Error> {
        Ok(self.get_with_expiry(key).await?.0)
    }

    /// The counter `key` (under the prefix) and the time until it expires: `(0, None)` when it
    /// does not exist, `(value, None)` when it has no expiry. Fails as [`RedisStore::get`].
    pub async fn get_with_expiry(&self, key: &str) -> Result<(u64, Option<Duration>), Error> {
        let key = self.redis_key(key);
        let deadline = self.config.call_deadline();
        self.on_redis(Some(deadline), |mut conn| async move {
            compat::get_with_expiry(&mut conn, &key).await
        })
        .await
    }

    /// Deletes every key under the prefix, and empties the in-process limiter; answers the
    /// number of keys deleted in Redis.
    ///
    /// Keys outside the prefix are never touched. It runs `SCAN MATCH prefix*` and `UNLINK`s
    /// each batch, so it does not block the server, and keys written meanwhile may survive. In
    /// a Redis Cluster it scans every master. Fails when the prefix is empty (it refuses to
    /// empty the whole database), and when Redis is out (some keys may be left).
    pub async fn clear_all(&self) -> Result<u64, Error> {
        self.fallback.clear();
        let prefix = self.config.prefix.clone();
        // No overall deadline: each command has the response timeout, and a large keyspace
        // takes many of them.
        let deleted = self
            .on_redis(None, |mut conn| async move {
                compat::clear_all(&mut conn, &prefix).await
            })
            .await?;
        info!(prefix = %self.config.prefix, deleted, "cleared every rate limit");
        Ok(deleted)
    }

    // State -------------------------------------------------------------------------------------

    /// Asks Redis now, bypassing the breaker: pings it and detects whether the module is
    /// loaded. During an outage it tries a fresh connection, and ends the outage if Redis
    /// answers. The store never needs it; use it for a health check, or to wait for Redis at
    /// start.
    pub async fn ping(&self) -> Result<Backend, Error> {
        if !self.fallback.redis_in_service() {
            let backend =
                recovery::reconnect(&self.config, &self.connection, &self.selector).await?;
            self.fallback.redis_answered();
            return Ok(backend);
        }
        let selector = &self.selector;
        self.on_redis(Some(self.config.call_deadline()), |mut conn| async move {
            redis::cmd("PING").query_async::<()>(&mut conn).await?;
            selector.detect(&mut conn).await
        })
        .await
    }

    /// The Redis backend in use: [`Backend::Module`] or [`Backend::Script`]; `None` before the
    /// first answer and during an outage.
    pub fn backend(&self) -> Option<Backend> {
        self.selector.current()
    }

    /// Where the circuit breaker is: closed while Redis answers.
    pub fn breaker_state(&self) -> BreakerState {
        self.fallback.breaker_state()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.config.prefix
    }

    /// The Redis key of `key`: `prefix + key`, or for [`Key::new`] `prefix + scope + ":" +
    /// subject`.
    pub fn redis_key<'k>(&self, key: impl Into<Key<'k>>) -> String {
        key.into().redis_key(&self.config.prefix)
    }

    /// The Redis key of the seed's operations: `prefix + user_id + ":" + endpoint`.
    pub fn key_for(&self, user_id: &str, endpoint: &str) -> String {
        self.redis_key(Key::user_endpoint(user_id, endpoint))
    }

    // The path of every call ----------------------------------------------------------------------

    async fn decide(
        &self,
        key: Key<'_>,
        limit: &Limit,
        cost: u64,
        dry_run: bool,
    ) -> Result<Decision, Error> {
        let redis_key = self.redis_key(key);
        let command = Command::Check {
            key: &redis_key,
            limit: limit.core(),
            cost,
            dry_run,
        };
        let (reply, backend) = self.answer(&command, key).await?;
        Ok(self.enforce(Decision::from_core(reply.decision()?, backend), key))
    }

    /// Redis's answer to `command`, or during an outage the failure policy's.
    async fn answer(&self, command: &Command<'_>, key: Key<'_>) -> Result<(Reply, Backend), Error> {
        self.answer_noting(command, key, |_| {}).await
    }

    /// [`RedisStore::answer`], telling `on_outage` of the outage before the failure policy
    /// answers.
    async fn answer_noting(
        &self,
        command: &Command<'_>,
        key: Key<'_>,
        on_outage: impl FnOnce(&Error),
    ) -> Result<(Reply, Backend), Error> {
        match self.run_on_redis(command).await {
            Err(error) if error.is_outage() => {
                on_outage(&error);
                self.fallback.answer(command)
            }
            Err(error) => {
                let masked = key.masked(&self.config.prefix);
                let reason = error.redacted(command.key(), &masked);
                debug!(key = %masked, error = %reason, "Redis refused the command for this key");
                Err(error)
            }
            answered => answered,
        }
    }

    /// Runs `work` on a task of its own and waits for its answer. The work then ends even when
    /// the caller's future is dropped midway (a timeout around the call, a client gone), and
    /// what it made is dropped on that task: an unclaimed [`crate::Reservation`] gives its
    /// estimate back, a [`crate::Permit`] its slot. Dropped with the caller instead, a call whose
    /// command Redis had already run would leave its units spent, or its lease held, for
    /// nobody. Needs a Tokio runtime.
    pub(crate) async fn to_the_end<T: Send + 'static>(
        work: impl Future<Output = Result<T, Error>> + Send + 'static,
    ) -> Result<T, Error> {
        match tokio::spawn(work).await {
            Ok(answer) => answer,
            Err(error) => match error.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_) => Err(Error::UnexpectedReply(
                    "the call's task was cancelled: the Tokio runtime is shutting down".into(),
                )),
            },
        }
    }

    async fn run_on_redis(&self, command: &Command<'_>) -> Result<(Reply, Backend), Error> {
        let selector = &self.selector;
        self.on_redis(Some(self.config.call_deadline()), |mut conn| async move {
            selector.run(&mut conn, command).await
        })
        .await
    }

    /// Runs `op` on the connection, unless the breaker keeps calls off Redis; within
    /// `deadline`; and reports the outcome to the fallback, starting the probe when an outage
    /// opens the breaker.
    async fn on_redis<'a, T, F, Fut>(
        &'a self,
        deadline: Option<Duration>,
        op: F,
    ) -> Result<T, Error>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = Result<T, Error>> + 'a,
    {
        if !self.fallback.redis_in_service() {
            return Err(Error::CircuitOpen);
        }
        let call = op(self.connection.get());
        let result = match deadline {
            Some(deadline) => tokio::time::timeout(deadline, call)
                .await
                .unwrap_or(Err(Error::Timeout(deadline))),
            None => call.await,
        };
        match &result {
            Err(error) if error.is_outage() => {
                self.selector.forget();
                if self.fallback.redis_failed(error) {
                    Probe::new(
                        &self.config,
                        &self.connection,
                        &self.selector,
                        &self.fallback,
                    )
                    .spawn();
                }
            }
            _ => self.fallback.redis_answered(),
        }
        result
    }

    /// In shadow mode, a decision that is reported but not enforced.
    fn enforce(&self, mut decision: Decision, key: Key<'_>) -> Decision {
        let masked = || key.masked(&self.config.prefix);
        if self.config.shadow {
            decision.enforced = false;
            if !decision.is_admitted() {
                info!(
                    key = %masked(),
                    retry_after_ms = decision.outcome.retry_after_ms(),
                    backend = %decision.backend,
                    "rate limit exceeded; let through in shadow mode"
                );
            }
        }
        debug!(
            key = %masked(),
            backend = %decision.backend,
            admitted = decision.is_admitted(),
            remaining = decision.remaining,
            "rate limit decided"
        );
        decision
    }

    async fn connect_at_start(self) {
        let target = self.config.masked_target().unwrap_or_default();
        match self.ping().await {
            Ok(backend) => info!(
                url = %target,
                backend = %backend,
                prefix = %self.config.prefix,
                policy = %self.config.on_failure,
                shadow = self.config.shadow,
                "connected to Redis for rate limiting"
            ),
            // The fallback has logged it, as the start of an outage.
            Err(error) if error.is_outage() => {}
            Err(error) => warn!(url = %target, error = %error, "Redis refused the first ping"),
        }
    }
}
