//! [`RateLimitService`]: decides each request before the inner service sees it.

use super::body::ResponseBody;
use super::headers::{self, Checked};
use super::key::KeyExtractor;
use super::layer::RateLimitLayer;
use super::limiter::Limiter;
use super::route::Policy;
use super::usage::Usage;
use crate::multi::{AllDecision, LimitCheck};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;
use tower_service::Service;
use tracing::{debug, error, info, warn};

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
            let pass = |inner: &mut S, parts, body| inner.call(Request::from_parts(parts, body));
            let policies = match layer.routes.find(&parts.method, parts.uri.path()) {
                Some(policies) if !policies.is_empty() => policies.clone(),
                _ => {
                    return Ok(pass(&mut inner, parts, body)
                        .await?
                        .map(ResponseBody::inner))
                }
            };
            let Some(subjects) = subjects(&*layer.extractor, &policies, &parts) else {
                debug!(path = %parts.uri.path(), "no rate limit key for the request: 400");
                let (headers, body) = headers::missing_key();
                return Ok(own_response(StatusCode::BAD_REQUEST, headers, body));
            };
            if subjects.is_empty() {
                return Ok(pass(&mut inner, parts, body)
                    .await?
                    .map(ResponseBody::inner));
            }
            let checks: Vec<LimitCheck<'_>> = subjects
                .iter()
                .map(|(policy, subject)| {
                    LimitCheck::new(policy.key(subject), policy.limit(), policy.get_cost())
                })
                .collect();
            let all = match layer.limiter.check_all(&checks).await {
                Ok(all) => all,
                Err(error) => {
                    let keys: Vec<String> = checks.iter().map(|c| c.key.masked("")).collect();
                    error!(keys = ?keys, error = %error, "the rate limiter failed");
                    if layer.shadow {
                        return Ok(pass(&mut inner, parts, body)
                            .await?
                            .map(ResponseBody::inner));
                    }
                    let (headers, body) = headers::limiter_failed();
                    return Ok(own_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        headers,
                        body,
                    ));
                }
            };
            let now = SystemTime::now();
            let mut checked: Vec<Checked<'_>> = subjects
                .iter()
                .zip(all.decisions.iter().copied())
                .map(|((policy, _), decision)| Checked { policy, decision })
                .collect();
            let violated: Vec<&Checked<'_>> = checked
                .iter()
                .filter(|c| !c.decision.is_admitted())
                .collect();
            let enforced = !layer.shadow && violated.iter().any(|c| c.decision.enforced);
            if enforced {
                let (headers, body) = headers::denied(&checked, now);
                return Ok(own_response(StatusCode::TOO_MANY_REQUESTS, headers, body));
            }
            if !violated.is_empty() {
                let names: Vec<&str> = violated.iter().map(|c| c.policy.name()).collect();
                info!(
                    path = %parts.uri.path(),
                    policies = ?names,
                    "request over its rate limit; let through in shadow mode"
                );
            }
            let metered = subjects.iter().position(|(policy, _)| policy.is_metered());
            let usage = metered.map(|index| Usage::new(subjects[index].0.get_cost()));
            let mut parts = parts;
            if let Some(usage) = &usage {
                parts.extensions.insert(usage.clone());
            }
            let response = pass(&mut inner, parts, body).await?;
            if let Some(actual) = usage.as_ref().and_then(Usage::reported) {
                settle(&*layer.limiter, &subjects, &all, &mut checked, actual).await;
            }
            let violated: Vec<&Checked<'_>> = checked
                .iter()
                .filter(|c| !c.decision.is_admitted())
                .collect();
            let (mut response_parts, body) = response.into_parts();
            headers::allowed(&checked, now, &mut response_parts.headers);
            headers::shadow_denied(&violated, &mut response_parts.headers);
            Ok(Response::from_parts(
                response_parts,
                ResponseBody::inner(body),
            ))
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

/// Each policy of the route with the subject its request counts against: the policy's own
/// extractor's, or the layer's. A policy whose own extractor names no subject does not apply.
/// `None` when a policy needs the layer's subject and the request has none: the layer answers
/// 400, rather than let it through unlimited.
fn subjects<'p>(
    extractor: &dyn KeyExtractor,
    policies: &'p [Policy],
    request: &Parts,
) -> Option<Vec<(&'p Policy, String)>> {
    let mut layer_subject: Option<Option<String>> = None;
    let mut subjects = Vec::with_capacity(policies.len());
    for policy in policies {
        let subject = match policy.own_subject() {
            Some(own) => match own.extract(request) {
                Some(subject) => subject,
                None => continue,
            },
            None => layer_subject
                .get_or_insert_with(|| extractor.extract(request))
                .clone()?,
        };
        subjects.push((policy, subject));
    }
    Some(subjects)
}

/// Settles every metered policy of an admitted request at the `actual` cost its handler
/// reported, and updates its decision to the standing afterwards, for the headers. A failed
/// settlement is logged; the response goes out anyway.
async fn settle<L: Limiter>(
    limiter: &L,
    subjects: &[(&Policy, String)],
    all: &AllDecision,
    checked: &mut [Checked<'_>],
    actual: u64,
) {
    for (index, (policy, subject)) in subjects.iter().enumerate() {
        let Some(hold) = all
            .hold(index, policy.get_cost())
            .filter(|_| policy.is_metered())
        else {
            continue;
        };
        match limiter
            .settle(policy.key(subject), policy.limit(), hold, actual)
            .await
        {
            Ok(settled) => {
                if let Some(quota) = settled.quota {
                    let decision = &mut checked[index].decision;
                    decision.remaining = quota.remaining;
                    decision.reset_after = quota.reset_after;
                }
            }
            Err(error) => {
                let key = policy.key(subject).masked("");
                warn!(key = %key, error = %error, "the usage of a request could not be settled");
            }
        }
    }
}
