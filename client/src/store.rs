//! [`RedisStore`]: rate limits in Redis through the module or the Lua script, with the failure
//! policy, the circuit breaker and the in-memory limiter behind them.
//!
//! # Keys
//! Every key the store touches starts with the configured prefix (`ratelimit:` by default), so
//! that [`RedisStore::clear_all`] finds them all and nothing else:
//!
//! | operation | its key argument | the Redis key |
//! |---|---|---|
//! | [`RedisStore::check_rate_limit`], [`RedisStore::get_quota`], [`RedisStore::reset_rate_limit`] | builds it from `user_id` and `endpoint` | `prefix + user_id + ":" + endpoint` |
//! | [`RedisStore::check`], [`RedisStore::quota`], [`RedisStore::reset`], [`RedisStore::increment`], [`RedisStore::get`], ... | a name under the prefix | `prefix + key` |
//!
//! [`RedisStore::key_for`] and [`RedisStore::redis_key`] show both steps.

mod backend;
mod clear;
mod connection;
mod counters;
mod policy;
mod quota;

use connection::Connection;
use policy::invalid_decision;

pub use quota::Quota;

use crate::breaker::{Breaker, BreakerState};
use crate::config::Config;
use crate::decision::{Backend, Decision};
use crate::error::Error;
use crate::limit::Limit;
use crate::local::LocalLimiter;
use crate::mask::mask_key;
use crate::script::ScriptBackend;
use ratelimit_core::MAX_COUNT;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

/// The backend is not known: never detected, or Redis failed since.
const UNKNOWN: u8 = 0;
const MODULE: u8 = 1;
const SCRIPT: u8 = 2;

/// A rate limiter store in Redis, shared by every task of the process: clone it freely (it is
/// an `Arc`).
///
/// Each request goes to the module's `RATELIMIT.*` commands when the server has them, otherwise
/// to the Lua script of identical meaning. When Redis cannot serve, the [`crate::FailurePolicy`]
/// answers, and a circuit breaker keeps the calls away from Redis until a probe finds it back.
/// Every [`Decision`] names the backend or policy that produced it.
///
/// It needs a Tokio runtime with time enabled.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// One server's connection manager, or a cluster connection.
    conn: Connection,
    config: Config,
    /// The URL or the cluster's seed nodes, for logs.
    masked_url: String,
    script: ScriptBackend,
    /// Replaced whole by `clear_all`.
    local: RwLock<Arc<LocalLimiter>>,
    breaker: Breaker,
    /// `UNKNOWN`, `MODULE` or `SCRIPT`.
    mode: AtomicU8,
    /// The last backend detected, for logging changes only; never `UNKNOWN` once set.
    last_mode: AtomicU8,
    /// When the module is next detected again, in milliseconds since `started`.
    next_detect_ms: AtomicU64,
    started: Instant,
}

/// What is asked of the limiter.
#[derive(Debug, Clone, Copy)]
enum Request {
    Check { cost: u64, dry_run: bool },
    Quota,
}

impl Request {
    fn cost_and_dry_run(self) -> (u64, bool) {
        match self {
            Request::Check { cost, dry_run } => (cost, dry_run),
            Request::Quota => (1, true),
        }
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.masked_url)
            .field("prefix", &self.inner.config.prefix)
            .field("backend", &self.backend())
            .field("on_failure", &self.inner.config.on_failure)
            .finish()
    }
}

impl RedisStore {
    /// A store for `config` that connects on first use, without touching the network now: the
    /// checks answer from the failure policy until Redis can be reached. Use it when the
    /// application must start whether or not Redis is up.
    ///
    /// With [`Config::cluster_nodes`], it connects to a Redis Cluster: each request goes to the
    /// master that owns its key's slot.
    ///
    /// Fails when no URL (nor cluster node) is configured, a URL is invalid, both a URL and
    /// cluster nodes are set, a timeout is zero, or it is called outside a Tokio runtime.
    pub fn open(config: Config) -> Result<RedisStore, Error> {
        config.validate()?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::InvalidConfig(
                "RedisStore must be opened within a Tokio runtime".into(),
            ));
        }
        let conn = Connection::open(&config)?;
        Ok(RedisStore {
            inner: Arc::new(Inner {
                conn,
                masked_url: config.masked_target().unwrap_or_default(),
                script: ScriptBackend::new(),
                local: RwLock::new(Arc::new(LocalLimiter::new(config.local_max_entries))),
                breaker: Breaker::new(config.breaker),
                mode: AtomicU8::new(UNKNOWN),
                last_mode: AtomicU8::new(UNKNOWN),
                next_detect_ms: AtomicU64::new(0),
                started: Instant::now(),
                config,
            }),
        })
    }

    /// Connects to Redis with `config`: pings it and detects the module. Fails, with a log
    /// line that shows the address with its password masked, when the configuration is
    /// missing or invalid or Redis does not answer.
    pub async fn try_connect(config: Config) -> Result<RedisStore, Error> {
        let url = config.masked_target().unwrap_or_else(|| "(none)".into());
        let store = match RedisStore::open(config) {
            Ok(store) => store,
            Err(error) => {
                warn!(url = %url, error = %error, "cannot use Redis for rate limiting");
                return Err(error);
            }
        };
        match store.redetect().await {
            Ok(backend) => {
                info!(url = %url, backend = %backend, "connected to Redis for rate limiting");
                Ok(store)
            }
            Err(error) => {
                warn!(url = %url, error = %error, "cannot connect to Redis for rate limiting");
                Err(error)
            }
        }
    }

    /// [`RedisStore::try_connect`], with `None` for an error (which is logged).
    pub async fn connect(config: Config) -> Option<RedisStore> {
        RedisStore::try_connect(config).await.ok()
    }

    /// Connects with [`Config::from_env`] (`REDIS_URL`, `RATELIMIT_PREFIX`, ...): `None`, with a
    /// log line, when `REDIS_URL` is unset or invalid or Redis does not answer.
    pub async fn from_env() -> Option<RedisStore> {
        match Config::from_env() {
            Ok(config) => RedisStore::connect(config).await,
            Err(error) => {
                warn!(error = %error, "invalid rate limiting configuration in the environment");
                None
            }
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.config.prefix
    }

    /// The key of a user's limit on an endpoint, under the prefix: `user_id + ":" + endpoint`.
    pub fn key_for(&self, user_id: &str, endpoint: &str) -> String {
        format!("{user_id}:{endpoint}")
    }

    /// The Redis key of `key`: `prefix + key`.
    pub fn redis_key(&self, key: &str) -> String {
        format!("{}{key}", self.inner.config.prefix)
    }

    /// The Redis backend in use: [`Backend::Module`] or [`Backend::Script`]; `None` before the
    /// first detection and after a failure, until Redis answers again.
    pub fn backend(&self) -> Option<Backend> {
        mode_backend(self.inner.mode.load(Ordering::Acquire))
    }

    /// Where the circuit breaker is.
    pub fn breaker_state(&self) -> BreakerState {
        self.inner.breaker.state()
    }

    /// Pings Redis. Fails when it is unreachable (or the breaker is open).
    pub async fn ping(&self) -> Result<(), Error> {
        let mut conn = self.inner.conn.clone();
        self.guarded(Some(self.inner.config.call_deadline()), async {
            redis::cmd("PING")
                .query_async::<()>(&mut conn)
                .await
                .map_err(Error::from)
        })
        .await
    }

    /// Pings Redis and detects now whether the module is loaded, as the store does at connect,
    /// after a failure and every `redetect_interval`. Fails when Redis is unreachable.
    pub async fn redetect(&self) -> Result<Backend, Error> {
        let mut conn = self.inner.conn.clone();
        self.guarded(Some(self.inner.config.call_deadline()), async {
            redis::cmd("PING").query_async::<()>(&mut conn).await?;
            self.detect(&mut conn).await
        })
        .await
    }

    /// Decides one request of `cost` units on `key` (under the prefix) and, if it is admitted,
    /// spends its cost. It always answers:
    ///
    /// - From Redis (the module or the script) when it can.
    /// - From the failure policy when Redis is unreachable or unavailable, and also when Redis
    ///   answered an error for this key (`WRONGTYPE`, another algorithm's state): the key cannot
    ///   be limited in Redis, so the policy the user chose for that case decides, and the error
    ///   is logged. [`RedisStore::try_check`] returns such errors instead.
    /// - With a denial that can never be retried (`retry_after: None`, backend
    ///   [`Backend::Deny`]) when `limit` or `cost` is invalid, logged as an error: a
    ///   configuration that cannot be valid admits nothing.
    pub async fn check(&self, key: &str, limit: &Limit, cost: u64) -> Decision {
        let request = Request::Check {
            cost,
            dry_run: false,
        };
        self.decide_or_fallback(key, limit, request).await
    }

    /// [`RedisStore::check`] without spending: the decision a request of `cost` would get now.
    pub async fn check_dry_run(&self, key: &str, limit: &Limit, cost: u64) -> Decision {
        let request = Request::Check {
            cost,
            dry_run: true,
        };
        self.decide_or_fallback(key, limit, request).await
    }

    /// The decision a request of cost 1 would get now, without spending (`RATELIMIT.QUOTA`).
    /// Answers as [`RedisStore::check`] does.
    pub async fn quota(&self, key: &str, limit: &Limit) -> Decision {
        self.decide_or_fallback(key, limit, Request::Quota).await
    }

    /// [`RedisStore::check`], with the errors that are not outages returned: an invalid limit or
    /// cost ([`Error::is_invalid_limit`]), or a server error for the key
    /// ([`Error::is_wrong_type`], [`Error::is_wrong_algorithm`], ...). An outage still gets the
    /// failure policy's decision; with [`crate::FailurePolicy::Local`] that fails only when the local
    /// limiter holds another algorithm's state for the key.
    pub async fn try_check(&self, key: &str, limit: &Limit, cost: u64) -> Result<Decision, Error> {
        let request = Request::Check {
            cost,
            dry_run: false,
        };
        self.decide(key, limit, request).await
    }

    /// [`RedisStore::check_dry_run`], with errors as [`RedisStore::try_check`] returns them.
    pub async fn try_check_dry_run(
        &self,
        key: &str,
        limit: &Limit,
        cost: u64,
    ) -> Result<Decision, Error> {
        let request = Request::Check {
            cost,
            dry_run: true,
        };
        self.decide(key, limit, request).await
    }

    /// [`RedisStore::quota`], with errors as [`RedisStore::try_check`] returns them.
    pub async fn try_quota(&self, key: &str, limit: &Limit) -> Result<Decision, Error> {
        self.decide(key, limit, Request::Quota).await
    }

    /// Deletes the limiter's state on `key` (under the prefix), in Redis and in the local
    /// limiter: the subject starts again with a full allowance. Answers whether Redis had a
    /// state; when Redis is unreachable, whether the local limiter had one.
    ///
    /// Fails, deleting nothing in Redis, when the key is no limiter (another type, or a string
    /// that no algorithm wrote), and when Redis is unreachable.
    pub async fn try_reset(&self, key: &str) -> Result<bool, Error> {
        let full_key = self.redis_key(key);
        self.local().reset(&full_key);
        self.reset_in_redis(&full_key).await
    }

    /// [`RedisStore::try_reset`], with errors logged. On an error it answers whether the local
    /// limiter had a state: `false`, unless it answered for the key during an outage.
    pub async fn reset(&self, key: &str) -> bool {
        let full_key = self.redis_key(key);
        let local = self.local().reset(&full_key);
        match self.reset_in_redis(&full_key).await {
            Ok(deleted) => deleted,
            Err(error) => {
                let masked = self.mask(&full_key);
                let reason = error.redacted(&full_key, &masked);
                if matches!(error, Error::CircuitOpen) {
                    debug!(key = %masked, error = %reason, "cannot reset a rate limit in Redis");
                } else {
                    warn!(key = %masked, error = %reason, "cannot reset a rate limit in Redis");
                }
                local
            }
        }
    }

    async fn reset_in_redis(&self, full_key: &str) -> Result<bool, Error> {
        let mut conn = self.inner.conn.clone();
        let deadline = Some(self.inner.config.call_deadline());
        self.guarded(deadline, self.remote_reset(&mut conn, full_key))
            .await
    }

    /// The in-memory limiter of [`crate::FailurePolicy::Local`].
    fn local(&self) -> Arc<LocalLimiter> {
        let local = self
            .inner
            .local
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&local)
    }

    fn mask(&self, full_key: &str) -> String {
        mask_key(&self.inner.config.prefix, full_key)
    }

    async fn decide_or_fallback(&self, key: &str, limit: &Limit, request: Request) -> Decision {
        let error = match self.decide(key, limit, request).await {
            Ok(decision) => return decision,
            Err(error) => error,
        };
        let full_key = self.redis_key(key);
        let masked = self.mask(&full_key);
        let reason = error.redacted(&full_key, &masked);
        let core = match limit.to_core() {
            Ok(core) if !error.is_invalid_limit() => core,
            _ => {
                error!(key = %masked, error = %reason, "invalid rate limit: the request is denied");
                return invalid_decision(limit);
            }
        };
        error!(
            key = %masked,
            error = %reason,
            policy = %self.inner.config.on_failure,
            "Redis cannot limit this key: the failure policy decides"
        );
        match self.policy_decision(&full_key, &core, request) {
            Ok(decision) => decision,
            // Only the local limiter fails, and only for another algorithm's state.
            Err(_) => Decision {
                retry_after: None,
                ..self.outage_denial(core.capacity())
            },
        }
    }

    async fn decide(&self, key: &str, limit: &Limit, request: Request) -> Result<Decision, Error> {
        let core = limit.to_core()?;
        let (cost, _) = request.cost_and_dry_run();
        if cost > MAX_COUNT {
            return Err(Error::InvalidCost(cost));
        }
        let full_key = self.redis_key(key);
        let mut conn = self.inner.conn.clone();
        let deadline = Some(self.inner.config.call_deadline());
        let result = self
            .guarded(
                deadline,
                self.remote_decide(&mut conn, &full_key, &core, request),
            )
            .await;
        match result {
            Ok(decision) => {
                debug!(
                    key = %self.mask(&full_key),
                    backend = %decision.backend,
                    allowed = decision.allowed,
                    remaining = decision.remaining,
                    "rate limit decided"
                );
                Ok(decision)
            }
            Err(error) if error.is_outage() => {
                let masked = self.mask(&full_key);
                if !matches!(error, Error::CircuitOpen) {
                    warn!(
                        url = %self.inner.masked_url,
                        key = %masked,
                        error = %error.redacted(&full_key, &masked),
                        policy = %self.inner.config.on_failure,
                        "Redis is unreachable: the failure policy decides until it is back"
                    );
                }
                let decision = self.policy_decision(&full_key, &core, request)?;
                debug!(key = %masked, backend = %decision.backend, allowed = decision.allowed,
                    "rate limit decided by the failure policy");
                Ok(decision)
            }
            Err(error) => Err(error),
        }
    }

    /// Runs `op` against Redis unless the breaker is open, within `deadline`, and reports the
    /// outcome to the breaker. An outage also forgets the backend, so that it is detected again
    /// once Redis answers (it may have restarted without the module).
    async fn guarded<T>(
        &self,
        deadline: Option<Duration>,
        op: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let inner = &self.inner;
        if !inner.breaker.allow() {
            return Err(Error::CircuitOpen);
        }
        let result = match deadline {
            Some(deadline) => tokio::time::timeout(deadline, op)
                .await
                .unwrap_or(Err(Error::Timeout(deadline))),
            None => op.await,
        };
        match &result {
            Err(error) if error.is_outage() => {
                inner.breaker.on_failure();
                inner.mode.store(UNKNOWN, Ordering::Release);
            }
            _ => inner.breaker.on_success(),
        }
        result
    }
}

fn mode_backend(mode: u8) -> Option<Backend> {
    match mode {
        MODULE => Some(Backend::Module),
        SCRIPT => Some(Backend::Script),
        _ => None,
    }
}
