// The crate's front page is its README, so that the guide and its snippets are one text,
// compiled as doctests. Its HTTP part needs the `tower` feature (docs.rs builds with all
// features); without it, the front page is a pointer to the guide.
#![cfg_attr(feature = "tower", doc = include_str!("../README.md"))]
#![cfg_attr(
    not(feature = "tower"),
    doc = "Client for the redis-ratelimit module: rate limits in Redis, with a Lua fallback of \
           identical meaning and a failure policy for when Redis is out.\n\n\
           [`RedisStore`] is the entry point. The guide, `client/README.md`, is this crate's \
           front page when it is documented with the `tower` feature (as on docs.rs): \
           `cargo doc -p ratelimit-client --features tower --open`."
)]
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
mod multi;
mod permit;
mod reservation;
mod script;
mod share;
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
pub use multi::{AllDecision, Hold, LimitCheck, MAX_POLICIES};
pub use permit::{Acquire, Denial, Permit};
pub use ratelimit_core::Algorithm;
pub use reservation::{Reservation, Reserved, Settlement};
pub use script::LUA_SCRIPT;
pub use store::RedisStore;
