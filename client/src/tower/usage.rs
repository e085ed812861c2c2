//! [`Usage`]: how a handler reports the real cost of a metered request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// No report yet.
const UNREPORTED: u64 = u64::MAX;

/// The real cost of a request on a route with metered policies ([`super::Policy::metered`]),
/// reported by its handler: the layer puts one in the request's extensions, and settles every
/// metered policy at the reported cost once the handler has answered.
///
/// The route's check spent each metered policy's cost as an estimate. With a report below the
/// estimate, the difference goes back to the window it was spent in; above it, the excess is
/// charged (into debt if need be: it was already used). Without a report, the estimate stands.
/// The response's `RateLimit` and `X-RateLimit-*` headers show the standing after the
/// settlement.
///
/// With axum, take it as an extractor:
///
/// ```
/// use axum::Extension;
/// use ratelimit_client::tower::Usage;
///
/// async fn generate(Extension(usage): Extension<Usage>) -> String {
///     let tokens = 1200; // ... the work, which used 1200 tokens
///     usage.report(tokens);
///     format!("generated {tokens} tokens\n")
/// }
/// ```
///
/// Report before the handler returns its response: the layer settles when the inner service
/// answers, not when a streamed body ends.
#[derive(Debug, Clone)]
pub struct Usage {
    estimate: u64,
    reported: Arc<AtomicU64>,
}

impl Usage {
    pub(crate) fn new(estimate: u64) -> Usage {
        Usage {
            estimate,
            reported: Arc::new(AtomicU64::new(UNREPORTED)),
        }
    }

    /// The estimate the route's check spent (the first metered policy's cost).
    pub fn estimate(&self) -> u64 {
        self.estimate
    }

    /// Reports the request's real cost, in the metered policies' units. The last report wins.
    /// Costs above 10^15 are capped there, the contract's largest.
    pub fn report(&self, actual: u64) {
        let actual = actual.min(ratelimit_core::MAX_COUNT);
        self.reported.store(actual, Ordering::Release);
    }

    /// The cost reported, if any.
    pub fn reported(&self) -> Option<u64> {
        match self.reported.load(Ordering::Acquire) {
            UNREPORTED => None,
            actual => Some(actual),
        }
    }
}
