//! HTTP rate limiting as a tower middleware (feature `tower`): [`RateLimitLayer`].
//!
//! Each route has its limits, as named [`Policy`]s; a [`KeyExtractor`] names the subject of
//! each request (the client's IP, an API key, ...); a [`Limiter`] decides, usually a
//! [`crate::RedisStore`].
//!
//! ```no_run
//! use ratelimit_client::tower::{ClientIp, Header, KeyExtractor, Policy, RateLimitLayer};
//! use ratelimit_client::{Algorithm, Config, Limit, RedisStore};
//! use std::time::Duration;
//!
//! # fn build() -> Result<(), ratelimit_client::Error> {
//! let store = RedisStore::open(Config::new("redis://127.0.0.1:6379"))?;
//! let search = Limit::new(5, Duration::from_secs(10)).algorithm(Algorithm::Sliding);
//! let upload = Limit::new(2, Duration::from_secs(60)).algorithm(Algorithm::Gcra);
//! let hourly = Limit::new(20, Duration::from_secs(3600));
//! let layer = RateLimitLayer::new(store, Header::new("x-api-key").or(ClientIp::new()))
//!     .route("/search", [Policy::new("search", search)])
//!     .route("/upload", [Policy::new("upload", upload), Policy::new("upload-hourly", hourly)])
//!     .default_route([Policy::new("default", Limit::new(100, Duration::from_secs(60)))]);
//! // axum: Router::new().route(...).layer(layer); tower: ServiceBuilder::new().layer(layer)
//! # Ok(())
//! # }
//! ```
//!
//! # What it answers
//! A request whose route has policies is decided under each of them, for its subject (the
//! limiter's key is `policy + ":" + subject`).
//!
//! - **Admitted** by every policy: it goes to the inner service, and the response gets the
//!   headers below.
//! - **Denied** by one or more: the inner service never sees it. The answer is
//!   `429 Too Many Requests` with the same headers and an `application/problem+json` body of
//!   the `quota-exceeded` type of draft-ietf-httpapi-ratelimit-headers-11 (section 5.1):
//!
//!   ```json
//!   {"type":"https://iana.org/assignments/http-problem-types#quota-exceeded","title":"Quota Exceeded","status":429,"detail":"The quota of policy \"search\" is exceeded: retry in 8 s.","violated-policies":["search"]}
//!   ```
//! - **Without a subject** (the extractor answered `None`): `400 Bad Request`, with a problem
//!   body; never let through unlimited.
//! - **Unmatched** by any route and no default: passed through untouched.
//!
//! | header | on | value |
//! |---|---|---|
//! | `X-RateLimit-Limit` | 200, 429 | the capacity of the reported policy (`limit`, or GCRA's `burst`) |
//! | `X-RateLimit-Remaining` | 200, 429 | its units left |
//! | `X-RateLimit-Reset` | 200, 429 | when it is back to full capacity, in Unix seconds, rounded up |
//! | `RateLimit-Policy` | 200, 429 | every policy of the route: `"search";q=5;w=10` (`q` the limit, `w` the period in seconds, rounded up) |
//! | `RateLimit` | 200 | every policy: `"search";r=4;t=10` (`r` units left, `t` seconds until full capacity, rounded up) |
//! | `RateLimit` | 429 | the violated policies: `"search";r=0;t=8` (`t` the seconds until it admits the request; absent when it never can) |
//! | `Retry-After` | 429 | seconds until every violated policy admits the request, rounded **up**: a client that waits that long and retries is admitted, unless others spent in between. Absent when the request can never be admitted (its cost exceeds a capacity) |
//!
//! The reported policy of the `X-RateLimit-*` headers is, on a 200, the one with the fewest
//! units left (on a tie, the one that takes longest to reset), and on a 429, the violated one
//! that makes the client wait longest.
//!
//! # Several policies
//! Every policy of a route must admit a request. A request denied by one policy spends nothing
//! on the others: they are first asked with a dry run, and only then checked for real (one
//! policy needs one call; `n` need `2n`). A request that races another between the two passes
//! may still be denied after the policies before the denying one have spent; see the source of
//! `check_all` for why that trade-off.
//!
//! # Failures
//! The limiter always decides. With a [`crate::RedisStore`], while Redis cannot answer, the
//! store's [`crate::FailurePolicy`] does: `Local` limits in this process, `Allow` admits (and
//! reports every policy full), `Deny` answers 429 with `Retry-After` set to when Redis is next
//! tried. An invalid limit is denied for good: 429 without `Retry-After`.

mod body;
mod headers;
mod key;
mod layer;
mod limiter;
mod route;
mod service;

pub use body::ResponseBody;
pub use headers::{
    PROBLEM_JSON, QUOTA_EXCEEDED, RATELIMIT, RATELIMIT_POLICY, X_RATELIMIT_LIMIT,
    X_RATELIMIT_REMAINING, X_RATELIMIT_RESET,
};
pub use key::{ClientIp, Header, KeyExtractor, Or, MAX_HEADER_KEY_LEN};
pub use layer::RateLimitLayer;
pub use limiter::Limiter;
pub use route::Policy;
pub use service::{RateLimitService, ResponseFuture};
