//! HTTP rate limiting as a tower middleware (feature `tower`): [`RateLimitLayer`]; and
//! [`ConcurrencyLayer`] for the requests in flight at once.
//!
//! Each route has its limits, as named [`Policy`]s; a [`KeyExtractor`] names the subject each
//! request counts against (the client's IP, a user); a [`Limiter`] decides, usually a
//! [`crate::RedisStore`]. The crate's front page has a complete axum server.
//!
//! ```
//! use ratelimit_client::tower::{ClientIp, Header, Policy, RateLimitLayer};
//! use ratelimit_client::{Limit, LocalLimiter};
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), ratelimit_client::Error> {
//! let minute = Duration::from_secs(60);
//! let layer = RateLimitLayer::new(LocalLimiter::default(), ClientIp::new())
//!     .route("GET /search", [Policy::new("search", Limit::sliding(5, Duration::from_secs(10))?)])
//!     // Several policies: every one must admit the request.
//!     .route("POST /upload", [
//!         Policy::new("upload", Limit::gcra(2, minute)?),
//!         Policy::new("upload-hourly", Limit::fixed(10, 60 * minute)?),
//!         // A key's limit as well as the address's (authenticate the key first: see `Header`).
//!         Policy::new("upload-key", Limit::fixed(100, 60 * minute)?).subject(Header::new("x-api-key")),
//!     ])
//!     .default_route([Policy::new("default", Limit::fixed(100, minute)?)]);
//! // axum: Router::new().route(...).layer(layer); tower: ServiceBuilder::new().layer(layer)
//! # Ok(())
//! # }
//! ```
//!
//! # What it answers
//! A request that matches a route (its method and path) is decided under each of the route's
//! policies, for its subject: the limiter's key is `Key::new(policy, subject)`.
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
//! - **Without a subject** (the layer's extractor answered `None`): `400 Bad Request`, with a
//!   problem body; never let through unlimited. A policy with a subject of its own
//!   ([`Policy::subject`]) simply does not apply to a request without one.
//! - **Not decided**, because the limiter refused the call (a key that holds other data in
//!   Redis): `500 Internal Server Error`, logged at `ERROR`.
//! - **Unmatched** by any route and no default: passed through untouched. The layer logs its
//!   routes once, at `INFO`, when it is first applied, so what is limited is never a guess.
//! - **In shadow mode** ([`RateLimitLayer::shadow`]): decided and counted the same, but never
//!   refused: a would-be denial goes to the service, with `X-RateLimit-Shadow`.
//!
//! | header | on | value |
//! |---|---|---|
//! | `X-RateLimit-Limit` | 200, 429 | the capacity of the reported policy (`limit`, or GCRA's `burst`) |
//! | `X-RateLimit-Remaining` | 200, 429 | its units left |
//! | `X-RateLimit-Reset` | 200, 429 | when it is back to full capacity, in Unix seconds, rounded up |
//! | `RateLimit-Policy` | 200, 429 | every policy that applied: `"search";q=5;w=10` (`q` the limit, `w` the period in seconds, rounded up) |
//! | `RateLimit` | 200 | every policy: `"search";r=4;t=10` (`r` units left, `t` seconds until full capacity, rounded up) |
//! | `RateLimit` | 429 | the violated policies: `"search";r=0;t=8` (`t` the seconds until it admits the request; absent when it never can) |
//! | `Retry-After` | 429 | seconds until every violated policy admits the request, rounded **up**: a client that waits that long and retries is admitted, unless others spent in between. Absent when the request can never be admitted (its cost exceeds a capacity) |
//! | `X-RateLimit-Shadow` | 200, in shadow mode | the policies that would have denied the request: `"search"` |
//!
//! The reported policy of the `X-RateLimit-*` headers is, on a 200, the one with the fewest
//! units left (on a tie, the one that takes longest to reset), and on a 429, the violated one
//! that makes the client wait longest.
//!
//! # Several policies
//! Every policy of a route must admit a request, and a request denied by one policy spends
//! nothing on the others: the layer asks the limiter once per request,
//! [`Limiter::check_all`], which [`crate::RedisStore`] answers with one `RATELIMIT.MCHECK`
//! (atomic: no other request runs between the policies) and [`crate::LocalLimiter`] under one
//! lock. In a Redis Cluster, the keys of one `MCHECK` must share a slot; a route whose keys do
//! not (the layer's keys, `policy:subject`, carry no hash tag) is checked in two passes, a dry
//! run of each policy then a real check of each, and a request that races another between the
//! passes may spend on some policies and still be denied.
//!
//! # Usage-based costs
//! A metered policy ([`Policy::metered`]) spends its cost as an estimate; the handler reports
//! the real cost with the [`Usage`] it finds in the request's extensions, and the layer
//! settles it once the handler has answered, before the response leaves: it gives back what
//! was not used, to the window it was spent in, or charges the excess with `FORCE`. The
//! response's headers show the standing after the settlement.
//!
//! # Failures
//! The limiter always decides while Redis is out. With a [`crate::RedisStore`], the store's
//! [`crate::FailurePolicy`] does: `Local` limits in this process, `Allow` admits (and reports
//! every policy full), `Deny` answers 429 with `Retry-After` set to when Redis is next tried.

mod body;
mod concurrency;
mod headers;
mod key;
mod layer;
mod limiter;
mod route;
mod service;
mod usage;

pub use body::ResponseBody;
pub use concurrency::{
    ConcurrencyFuture, ConcurrencyLayer, ConcurrencyPolicy, ConcurrencyService, PermitBody,
};
pub use headers::{
    PROBLEM_JSON, QUOTA_EXCEEDED, RATELIMIT, RATELIMIT_POLICY, X_RATELIMIT_LIMIT,
    X_RATELIMIT_REMAINING, X_RATELIMIT_RESET, X_RATELIMIT_SHADOW,
};
pub use key::{ClientIp, Header, KeyExtractor, Or, MAX_HEADER_KEY_LEN};
pub use layer::RateLimitLayer;
pub use limiter::Limiter;
pub use route::Policy;
pub use service::{RateLimitService, ResponseFuture};
pub use usage::Usage;
