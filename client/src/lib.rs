//! Client for the redis-ratelimit module: rate limits in Redis, with a Lua fallback of
//! identical meaning and an in-memory fallback for when Redis is unreachable.
//!
//! [`RedisStore`] is the entry point. It sends each request to the module's
//! `RATELIMIT.CHECK`/`QUOTA`/`RESET` when the server has them, otherwise to a Lua script with
//! the same contract and storage format ([`script`]); while Redis is unreachable, the
//! [`FailurePolicy`] answers: the in-memory limiter ([`local`]), or fail open, or fail closed.
//! A circuit breaker ([`breaker`]) keeps the calls off a dead Redis. Every [`Decision`] names
//! the [`Backend`] that produced it.
//!
//! ```no_run
//! use ratelimit_client::{Config, Limit, RedisStore};
//! use std::time::Duration;
//!
//! # async fn example() {
//! // REDIS_URL, RATELIMIT_PREFIX, ... from the environment; `None` (logged) without Redis.
//! let store = RedisStore::from_env().await;
//! // Or explicitly, starting even while Redis is down:
//! let store = RedisStore::open(Config::new("redis://127.0.0.1:6379")).unwrap();
//! let decision = store
//!     .check("user:42:/search", &Limit::new(10, Duration::from_secs(60)), 1)
//!     .await;
//! println!("{} via {}", decision.allowed, decision.backend);
//! # }
//! ```
#![warn(missing_docs)]

pub mod breaker;
pub mod config;
pub mod decision;
pub mod error;
pub mod limit;
pub mod local;
pub mod mask;
pub mod module;
pub mod script;
pub mod store;
#[cfg(feature = "tower")]
pub mod tower;

pub use breaker::{BreakerConfig, BreakerState};
pub use config::{Config, FailurePolicy};
pub use decision::{Backend, Decision};
pub use error::Error;
pub use limit::Limit;
pub use ratelimit_core::Algorithm;
pub use store::{Quota, RedisStore};
