//! [`RateLimitService`]: decides each request before the inner service sees it.

use super::body::ResponseBody;
use super::headers::{self, Checked};
use super::key::KeyExtractor;
use super::layer::RateLimitLayer;
use super::limiter::Limiter;
use super::route::Policy;
use crate::decision::Decision;
use crate::error::Error;
use http::request::Parts;
use http::{Request, Response, StatusCode};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;
use tower_service::Service;
use tracing::{debug, error, info};

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
            let decisions = match check_all(&*layer.limiter, &subjects).await {
                Ok(decisions) => decisions,
                Err((policy, subject, error)) => {
                    let key = policy.key(subject).masked("");
                    error!(key = %key, error = %error, "the rate limiter failed");
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
            let checked: Vec<Checked<'_>> = subjects
                .iter()
                .zip(decisions)
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
            let response = pass(&mut inner, parts, body).await?;
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

/// Decides the request under every policy, in order; fails with the policy, the subject and
/// the error of the first call the limiter refused.
///
/// With one policy, one check: a denial spends nothing. With several, a denied request must
/// spend nothing either, so every policy is first asked with a dry run; only if all admit the
/// request is it checked for real, policy after policy. Between the two passes another request
/// may take the last units of a policy: the real check then denies, after the policies before
/// it have spent. That race is the price of not spending on a denied request in the common
/// case; the alternatives (spend everywhere, or a script across keys) cost more or break
/// cluster safety. The decisions of the dry run stand for the policies that were not checked
/// for real.
async fn check_all<'p, L: Limiter>(
    limiter: &L,
    subjects: &'p [(&'p Policy, String)],
) -> Result<Vec<Decision>, (&'p Policy, &'p str, Error)> {
    let check = |policy: &'p Policy, subject: &'p str, dry_run: bool| async move {
        let key = policy.key(subject);
        let decision = if dry_run {
            limiter
                .check_dry_run(key, policy.limit(), policy.get_cost())
                .await
        } else {
            limiter.check(key, policy.limit(), policy.get_cost()).await
        };
        decision.map_err(|error| (policy, subject, error))
    };
    if let [(policy, subject)] = subjects {
        return Ok(vec![check(policy, subject, false).await?]);
    }
    let mut decisions = Vec::with_capacity(subjects.len());
    for (policy, subject) in subjects {
        decisions.push(check(policy, subject, true).await?);
    }
    if decisions.iter().all(Decision::is_admitted) {
        for ((policy, subject), slot) in subjects.iter().zip(&mut decisions) {
            *slot = check(policy, subject, false).await?;
            if !slot.is_admitted() {
                break;
            }
        }
    }
    Ok(decisions)
}
