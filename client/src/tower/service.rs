//! [`RateLimitService`]: decides each request before the inner service sees it.

use super::body::ResponseBody;
use super::headers::{self, Checked};
use super::key::KeyExtractor;
use super::layer::RateLimitLayer;
use super::limiter::Limiter;
use super::route::Policy;
use crate::decision::Decision;
use http::{Request, Response, StatusCode};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;
use tower_service::Service;
use tracing::debug;

/// The future of a [`RateLimitService`] call.
pub type ResponseFuture<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody<B>>, E>> + Send + 'static>>;

/// The service that [`RateLimitLayer`] wraps around `S`.
pub struct RateLimitService<S, L, K> {
    inner: S,
    layer: RateLimitLayer<L, K>,
}

impl<S, L, K> RateLimitService<S, L, K> {
    pub(crate) fn new(inner: S, layer: RateLimitLayer<L, K>) -> Self {
        RateLimitService { inner, layer }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, without the rate limiting.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, L, K> Clone for RateLimitService<S, L, K> {
    fn clone(&self) -> Self {
        RateLimitService {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: fmt::Debug, L, K> fmt::Debug for RateLimitService<S, L, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitService")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

impl<S, L, K, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimitService<S, L, K>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    L: Limiter,
    K: KeyExtractor,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The service that was polled ready serves this request; the clone serves the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let policies = match layer.routes.find(parts.uri.path()) {
                Some(policies) if !policies.is_empty() => policies.clone(),
                _ => {
                    let response = inner.call(Request::from_parts(parts, body)).await?;
                    return Ok(response.map(ResponseBody::inner));
                }
            };
            let Some(subject) = layer.extractor.extract(&parts) else {
                debug!(path = %parts.uri.path(), "no rate limit key for the request: 400");
                let (headers, body) = headers::missing_key();
                return Ok(own_response(StatusCode::BAD_REQUEST, headers, body));
            };
            let decisions = check_all(&*layer.limiter, &policies, &subject).await;
            let now = SystemTime::now();
            let checked: Vec<Checked<'_>> = policies
                .iter()
                .zip(decisions)
                .map(|(policy, decision)| Checked { policy, decision })
                .collect();
            if checked.iter().all(|c| c.decision.allowed) {
                let response = inner.call(Request::from_parts(parts, body)).await?;
                let (mut response_parts, body) = response.into_parts();
                headers::allowed(&checked, now, &mut response_parts.headers);
                Ok(Response::from_parts(
                    response_parts,
                    ResponseBody::inner(body),
                ))
            } else {
                let (headers, body) = headers::denied(&checked, now);
                Ok(own_response(StatusCode::TOO_MANY_REQUESTS, headers, body))
            }
        })
    }
}

fn own_response<B>(
    status: StatusCode,
    headers: http::HeaderMap,
    body: bytes::Bytes,
) -> Response<ResponseBody<B>> {
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Decides the request under every policy, in order.
///
/// With one policy, one check: a denial spends nothing. With several, a denied request must
/// spend nothing either, so every policy is first asked with a dry run; only if all admit the
/// request is it checked for real, policy after policy. Between the two passes another request
/// may take the last units of a policy: the real check then denies, after the policies before
/// it have spent. That race is the price of not spending on a denied request in the common
/// case; the alternatives (spend everywhere, or a script across keys) cost more or break
/// cluster safety. The decisions of the dry run stand for the policies that were not checked
/// for real.
async fn check_all<L: Limiter>(limiter: &L, policies: &[Policy], subject: &str) -> Vec<Decision> {
    if let [policy] = policies {
        let key = policy.key(subject);
        return vec![limiter.check(&key, policy.limit(), policy.get_cost()).await];
    }
    let keys: Vec<String> = policies.iter().map(|policy| policy.key(subject)).collect();
    let mut decisions = Vec::with_capacity(policies.len());
    for (policy, key) in policies.iter().zip(&keys) {
        let decision = limiter
            .check_dry_run(key, policy.limit(), policy.get_cost())
            .await;
        decisions.push(decision);
    }
    if decisions.iter().all(|decision| decision.allowed) {
        for ((policy, key), slot) in policies.iter().zip(&keys).zip(&mut decisions) {
            *slot = limiter.check(key, policy.limit(), policy.get_cost()).await;
            if !slot.allowed {
                break;
            }
        }
    }
    decisions
}
