//! Client for the redis-ratelimit module: rate limits in Redis, with a Lua fallback of
//! identical meaning and a failure policy for when Redis is out.
//!
//! [`RedisStore`] is the entry point; the `tower` feature adds an HTTP middleware.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

pub mod breaker;
mod command;
pub mod config;
mod decision;
mod error;
mod key;
mod limit;
mod local;
pub mod mask;
mod module;
mod script;
mod store;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod tower;

pub use breaker::{BreakerConfig, BreakerState};
pub use config::{Config, FailurePolicy};
pub use decision::{Backend, Decision, Outcome, Quota};
pub use error::Error;
pub use key::Key;
pub use limit::{parse_period, Limit};
pub use local::LocalLimiter;
pub use ratelimit_core::Algorithm;
pub use script::LUA_SCRIPT;
pub use store::RedisStore;
