//! [`RateLimitLayer`]: the routes, their policies, the limiter and the key extractor.

use super::key::KeyExtractor;
use super::limiter::Limiter;
use super::route::{Policy, Routes};
use super::service::RateLimitService;
use std::fmt;
use std::sync::Arc;
use tower_layer::Layer;

/// A tower [`Layer`] that rate limits HTTP requests per route and subject; see the
/// [module](super) for what it answers.
///
/// Build it once, with [`RateLimitLayer::route`] for each route that is limited, then apply it
/// (it is cheap to clone: three `Arc`s).
pub struct RateLimitLayer<L, K> {
    pub(crate) limiter: Arc<L>,
    pub(crate) extractor: Arc<K>,
    pub(crate) routes: Arc<Routes>,
}

impl<L: Limiter, K: KeyExtractor> RateLimitLayer<L, K> {
    /// A layer that asks `limiter` and names each request's subject with `extractor`. It limits
    /// nothing until routes are added.
    pub fn new(limiter: L, extractor: K) -> RateLimitLayer<L, K> {
        RateLimitLayer {
            limiter: Arc::new(limiter),
            extractor: Arc::new(extractor),
            routes: Arc::new(Routes::default()),
        }
    }

    /// Limits the requests whose path matches `pattern` with `policies`, all of which must
    /// admit a request.
    ///
    /// A pattern matches the request's path (without the query) exactly, or, when it ends with
    /// `*`, every path that starts with what precedes the `*`: `/api/*` matches `/api/` and
    /// `/api/users/7`, not `/api`. The first matching route applies, in the order they were
    /// added; a route with no policies leaves its requests unlimited.
    ///
    /// # Panics
    /// When `pattern` does not start with `/`, or has a `*` elsewhere than at its end.
    pub fn route(mut self, pattern: &str, policies: impl IntoIterator<Item = Policy>) -> Self {
        Arc::make_mut(&mut self.routes).add(pattern, policies.into_iter().collect());
        self
    }

    /// Limits the requests that match no route with `policies`. Without a default, such
    /// requests pass unlimited, with no rate limit headers.
    pub fn default_route(mut self, policies: impl IntoIterator<Item = Policy>) -> Self {
        Arc::make_mut(&mut self.routes).set_default(policies.into_iter().collect());
        self
    }

    /// The limiter.
    pub fn limiter(&self) -> &L {
        &self.limiter
    }
}

impl<L, K> Clone for RateLimitLayer<L, K> {
    fn clone(&self) -> Self {
        RateLimitLayer {
            limiter: Arc::clone(&self.limiter),
            extractor: Arc::clone(&self.extractor),
            routes: Arc::clone(&self.routes),
        }
    }
}

impl<L, K> fmt::Debug for RateLimitLayer<L, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

impl<S, L, K> Layer<S> for RateLimitLayer<L, K> {
    type Service = RateLimitService<S, L, K>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService::new(inner, self.clone())
    }
}
