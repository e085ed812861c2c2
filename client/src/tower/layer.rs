//! [`RateLimitLayer`]: the routes, their policies, the limiter and the key extractor.

use super::key::KeyExtractor;
use super::limiter::Limiter;
use super::route::{Policy, Routes};
use super::service::RateLimitService;
use std::fmt;
use std::sync::Arc;
use tower_layer::Layer;
use tracing::info;

/// A tower [`Layer`] that rate limits HTTP requests per route and subject; see the
/// [module](super) for what it answers.
///
/// Build it once, with [`RateLimitLayer::route`] for each route that is limited, then apply it
/// (it is cheap to clone). The first time it is applied, it logs its routes at `INFO`, and what
/// happens to the requests that match none.
pub struct RateLimitLayer<L, K> {
    pub(crate) limiter: Arc<L>,
    pub(crate) extractor: Arc<K>,
    pub(crate) routes: Arc<Routes>,
    pub(crate) shadow: bool,
}

impl<L: Limiter, K: KeyExtractor> RateLimitLayer<L, K> {
    /// A layer that asks `limiter`, and counts each request against the subject that
    /// `extractor` names (unless a policy has a subject of its own). It limits nothing until
    /// routes are added.
    pub fn new(limiter: L, extractor: K) -> RateLimitLayer<L, K> {
        RateLimitLayer {
            limiter: Arc::new(limiter),
            extractor: Arc::new(extractor),
            routes: Arc::new(Routes::default()),
            shadow: false,
        }
    }

    /// Limits the requests that match `route` with `policies`, all of which must admit a
    /// request.
    ///
    /// A route is an optional list of methods and a path pattern: `"/search"` (any method),
    /// `"POST /upload"`, `"PUT,DELETE /files/*"`. `GET` also covers `HEAD`, which servers
    /// answer as a `GET`. The pattern matches the request's path (without the query) exactly,
    /// or, when it ends with `*`, every path that starts with what precedes the `*`: `/api/*`
    /// matches `/api/` and `/api/users/7`, not `/api`.
    ///
    /// The first matching route applies, in the order they were added. A route with no
    /// policies leaves its requests unlimited. A request that matches no route gets the
    /// policies of [`RateLimitLayer::default_route`], if any, else passes unlimited: name the
    /// methods a route serves, so that a request the application will refuse (`GET` on a
    /// `POST` route answers 405) spends no quota.
    ///
    /// # Panics
    /// When the path does not start with `/`, has a `*` elsewhere than at its end, or a
    /// method is no HTTP method.
    pub fn route(mut self, route: &str, policies: impl IntoIterator<Item = Policy>) -> Self {
        Arc::make_mut(&mut self.routes).add(route, policies.into_iter().collect());
        self
    }

    /// Limits the requests that match no route with `policies`. Without a default, such
    /// requests pass unlimited, with no rate limit headers.
    pub fn default_route(mut self, policies: impl IntoIterator<Item = Policy>) -> Self {
        Arc::make_mut(&mut self.routes).set_default(policies.into_iter().collect());
        self
    }

    /// Shadow mode: every request is decided and counted as usual, but none is refused. A
    /// request that would have been denied goes to the service with the rate limit headers of
    /// an admitted one and `X-RateLimit-Shadow` naming the policies it exceeded, and it is
    /// logged at `INFO`. Use it to roll out new limits safely. A [`crate::RedisStore`] in
    /// shadow mode ([`crate::Config::shadow`]) has the same effect.
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
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
            shadow: self.shadow,
        }
    }
}

impl<L, K> fmt::Debug for RateLimitLayer<L, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("routes", &self.routes)
            .field("shadow", &self.shadow)
            .finish_non_exhaustive()
    }
}

impl<S, L, K> Layer<S> for RateLimitLayer<L, K> {
    type Service = RateLimitService<S, L, K>;

    fn layer(&self, inner: S) -> Self::Service {
        // A router applies the layer to each of its routes: log once.
        if self.routes.first_use() {
            info!(
                shadow = self.shadow,
                "HTTP rate limits: {}",
                self.routes.describe()
            );
        }
        RateLimitService::new(inner, self.clone())
    }
}
