//! [`ConcurrencyLayer`]: at most `limit` requests in flight per route and subject.

use super::headers::{ceil_seconds, json_string, sf_string, QUOTA_EXCEEDED};
use super::key::KeyExtractor;
use super::route::Route;
use super::{PROBLEM_JSON, RATELIMIT, RATELIMIT_POLICY};
use crate::error::Error;
use crate::key::Key;
use crate::permit::{valid_concurrency, Acquire, Denial, Permit};
use crate::store::RedisStore;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower_layer::Layer;
use tower_service::Service;
use tracing::{debug, error, info};

/// A named concurrency limit: `limit` requests in flight at once per subject, each slot a
/// lease of `lease` that ends by itself if the server holding it dies. Its Redis key is
/// `prefix + name + ":" + subject`.
#[derive(Debug, Clone)]
pub struct ConcurrencyPolicy {
    name: Arc<str>,
    limit: u64,
    lease: Duration,
}

impl ConcurrencyPolicy {
    /// A policy named `name`. Fails when `limit` is not from 1 to 10^6 or `lease` not from
    /// 1 ms to 3650 days ([`Error::is_invalid_limit`]).
    ///
    /// # Panics
    /// When `name` is empty or holds a character other than printable ASCII, as
    /// [`super::Policy::new`].
    pub fn new(name: &str, limit: u64, lease: Duration) -> Result<ConcurrencyPolicy, Error> {
        assert!(
            !name.is_empty() && name.bytes().all(|b| (0x20..=0x7e).contains(&b)),
            "invalid policy name {name:?}: expected printable ASCII, not empty"
        );
        valid_concurrency(limit, lease)?;
        Ok(ConcurrencyPolicy {
            name: Arc::from(name),
            limit,
            lease,
        })
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number of requests in flight at once.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// `"name";q=<limit>;qu="concurrent-requests"`.
    fn policy_field(&self) -> String {
        format!(
            "{};q={};qu=\"concurrent-requests\"",
            sf_string(&self.name),
            self.limit
        )
    }
}

/// A tower [`Layer`] that limits the requests in flight per route and subject, each holding a
/// [`crate::Permit`] until its response body is finished or dropped.
///
/// ```
/// use ratelimit_client::tower::{ClientIp, ConcurrencyLayer, ConcurrencyPolicy};
/// use ratelimit_client::{Config, RedisStore};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), ratelimit_client::Error> {
/// let store = RedisStore::new(Config::new("redis://127.0.0.1:6379"))?;
/// // At most 3 reports generated at once per client address.
/// let layer = ConcurrencyLayer::new(store, ClientIp::new()).route(
///     "POST /reports",
///     ConcurrencyPolicy::new("reports", 3, Duration::from_secs(30))?,
/// );
/// // axum: Router::new().route(...).layer(layer)
/// # Ok(())
/// # }
/// ```
///
/// # What it answers
/// - **Granted**: the request goes to the inner service, holding its slot until the response
///   body ends, fails or is dropped (a client that disconnects mid-stream frees it at once).
///   The permit is kept alive ([`crate::Permit::keep_alive`]) while the response streams, so a
///   request may outlast the lease; the lease only bounds how long a crashed server's slots
///   stay taken. The response gets `RateLimit-Policy: "reports";q=3;qu="concurrent-requests"`
///   and `RateLimit: "reports";r=2` (the slots left).
/// - **Denied**: `429 Too Many Requests` (or the status of
///   [`ConcurrencyLayer::denial_status`], e.g. 503), with `Retry-After` (seconds until the
///   earliest lease ends, rounded up: a slot is free by then, or sooner when a request ends),
///   the same `RateLimit-Policy`, `RateLimit: "reports";r=0;t=<Retry-After>`, and a
///   `quota-exceeded` problem body.
/// - **Without a subject**: `400 Bad Request`. **Not decided** (the key holds other data in
///   Redis): `500`, logged at `ERROR`. **Unmatched** by every route: passed through.
///
/// While Redis is out, the store's [`crate::FailurePolicy`] decides: `Local` counts the
/// requests in flight in this process, `Allow` lets every request through, `Deny` answers the
/// denial until Redis is next tried.
pub struct ConcurrencyLayer<K> {
    store: RedisStore,
    extractor: Arc<K>,
    routes: Arc<Vec<(Route, ConcurrencyPolicy)>>,
    denial_status: StatusCode,
    /// Whether the routes were logged, when the layer was first applied.
    logged: Arc<AtomicBool>,
}

impl<K: KeyExtractor> ConcurrencyLayer<K> {
    /// A layer whose slots are held in `store`, counted per subject that `extractor` names. It
    /// limits nothing until routes are added.
    pub fn new(store: RedisStore, extractor: K) -> ConcurrencyLayer<K> {
        ConcurrencyLayer {
            store,
            extractor: Arc::new(extractor),
            routes: Arc::new(Vec::new()),
            denial_status: StatusCode::TOO_MANY_REQUESTS,
            logged: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Limits the requests that match `route` (as [`super::RateLimitLayer::route`] writes it:
    /// `"POST /reports"`, `"/export/*"`) with `policy`. The first matching route applies.
    ///
    /// # Panics
    /// When the route is invalid, as [`super::RateLimitLayer::route`].
    pub fn route(mut self, route: &str, policy: ConcurrencyPolicy) -> Self {
        Arc::make_mut(&mut self.routes).push((Route::parse(route), policy));
        self
    }

    /// The status of a denial: `429 Too Many Requests` by default; `503 Service Unavailable`
    /// says that the server, not the client, is the one that is busy.
    ///
    /// # Panics
    /// When `status` is not a client or server error (4xx or 5xx).
    pub fn denial_status(mut self, status: StatusCode) -> Self {
        assert!(
            status.is_client_error() || status.is_server_error(),
            "a denial answers a 4xx or 5xx status, not {status}"
        );
        self.denial_status = status;
        self
    }
}

impl<K> Clone for ConcurrencyLayer<K> {
    fn clone(&self) -> Self {
        ConcurrencyLayer {
            store: self.store.clone(),
            extractor: Arc::clone(&self.extractor),
            routes: Arc::clone(&self.routes),
            denial_status: self.denial_status,
            logged: Arc::clone(&self.logged),
        }
    }
}

impl<K> fmt::Debug for ConcurrencyLayer<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLayer")
            .field("routes", &self.routes)
            .field("denial_status", &self.denial_status)
            .finish_non_exhaustive()
    }
}

impl<S, K> Layer<S> for ConcurrencyLayer<K> {
    type Service = ConcurrencyService<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        // A router applies the layer to each of its routes: log once.
        if !self.logged.swap(true, Ordering::AcqRel) {
            let routes: Vec<String> = self
                .routes
                .iter()
                .map(|(route, policy)| {
                    format!(
                        "{}: {} ({} in flight, lease {:?})",
                        route.text(),
                        policy.name,
                        policy.limit,
                        policy.lease
                    )
                })
                .collect();
            info!("HTTP concurrency limits: {}", routes.join("; "));
        }
        ConcurrencyService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service that [`ConcurrencyLayer`] wraps around `S`.
#[derive(Clone)]
pub struct ConcurrencyService<S, K> {
    inner: S,
    layer: ConcurrencyLayer<K>,
}

impl<S, K> ConcurrencyService<S, K> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, without the limit.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug, K> fmt::Debug for ConcurrencyService<S, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyService")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

/// The future of a [`ConcurrencyService`] call.
pub type ConcurrencyFuture<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<PermitBody<B>>, E>> + Send + 'static>>;

impl<S, K, ReqBody, ResBody> Service<Request<ReqBody>> for ConcurrencyService<S, K>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    K: KeyExtractor,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<PermitBody<ResBody>>;
    type Error = S::Error;
    type Future = ConcurrencyFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let policy = layer
                .routes
                .iter()
                .find(|(route, _)| route.matches(request.method(), request.uri().path()))
                .map(|(_, policy)| policy.clone());
            let Some(policy) = policy else {
                return Ok(inner.call(request).await?.map(PermitBody::inner));
            };
            let (parts, body) = request.into_parts();
            let Some(subject) = layer.extractor.extract(&parts) else {
                debug!(path = %parts.uri.path(), "no concurrency key for the request: 400");
                let (headers, body) = super::headers::missing_key();
                return Ok(own_response(StatusCode::BAD_REQUEST, headers, body));
            };
            let key = Key::new(&policy.name, &subject);
            let mut permit = match layer.store.acquire(key, policy.limit, policy.lease).await {
                Ok(Acquire::Granted(permit)) => permit,
                Ok(Acquire::Denied(denial)) => {
                    info!(key = %key.masked(""), "too many requests in flight: {}", layer.denial_status);
                    let (headers, body) = denied(&policy, &denial, layer.denial_status);
                    return Ok(own_response(layer.denial_status, headers, body));
                }
                Err(failure) => {
                    error!(key = %key.masked(""), error = %failure, "the concurrency limiter failed");
                    let (headers, body) = super::headers::limiter_failed();
                    return Ok(own_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        headers,
                        body,
                    ));
                }
            };
            permit.keep_alive();
            let remaining = permit.remaining();
            let response = inner.call(Request::from_parts(parts, body)).await?;
            let (mut response_parts, body) = response.into_parts();
            let headers = &mut response_parts.headers;
            append(headers, RATELIMIT_POLICY, policy.policy_field());
            let limit = format!("{};r={remaining}", sf_string(&policy.name));
            append(headers, RATELIMIT, limit);
            Ok(Response::from_parts(
                response_parts,
                PermitBody::holding(body, permit),
            ))
        })
    }
}

/// The headers and the problem body of a denial.
fn denied(policy: &ConcurrencyPolicy, denial: &Denial, status: StatusCode) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    let seconds = ceil_seconds(denial.retry_after).max(1);
    headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
    append(&mut headers, RATELIMIT_POLICY, policy.policy_field());
    let limit = format!("{};r=0;t={seconds}", sf_string(&policy.name));
    append(&mut headers, RATELIMIT, limit);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    let detail = format!(
        "Policy \"{}\" allows {} requests in flight at once: retry in {seconds} s.",
        policy.name, policy.limit
    );
    let body = format!(
        "{{\"type\":{},\"title\":\"Quota Exceeded\",\"status\":{},\"detail\":{},\
         \"violated-policies\":[{}]}}",
        json_string(QUOTA_EXCEEDED),
        status.as_u16(),
        json_string(&detail),
        json_string(&policy.name),
    );
    (headers, Bytes::from(body))
}

fn append(headers: &mut HeaderMap, name: http::HeaderName, value: String) {
    // Policy names are printable ASCII (checked by `ConcurrencyPolicy::new`).
    let value = HeaderValue::try_from(value).expect("a valid header value");
    headers.append(name, value);
}

fn own_response<B>(status: StatusCode, headers: HeaderMap, body: Bytes) -> Response<PermitBody<B>> {
    let mut response = Response::new(PermitBody::full(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

pin_project! {
    /// The body of a [`ConcurrencyService`] response: the inner service's, holding the
    /// request's permit until it ends, fails or is dropped; or the layer's own.
    pub struct PermitBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProjection]
    enum Kind<B> {
        Inner { #[pin] body: B, permit: Option<Permit> },
        Full { data: Option<Bytes> },
    }
}

impl<B> PermitBody<B> {
    fn inner(body: B) -> PermitBody<B> {
        PermitBody {
            kind: Kind::Inner { body, permit: None },
        }
    }

    fn holding(body: B, permit: Permit) -> PermitBody<B> {
        PermitBody {
            kind: Kind::Inner {
                body,
                permit: Some(permit),
            },
        }
    }

    fn full(data: Bytes) -> PermitBody<B> {
        let data = (!data.is_empty()).then_some(data);
        PermitBody {
            kind: Kind::Full { data },
        }
    }
}

impl<B> Body for PermitBody<B>
where
    B: Body,
    B::Data: From<Bytes>,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProjection::Inner { mut body, permit } => {
                let frame = body.as_mut().poll_frame(cx);
                // The slot frees as soon as the body has nothing more to send.
                match &frame {
                    Poll::Ready(None | Some(Err(_))) => drop(permit.take()),
                    Poll::Ready(Some(Ok(_))) if body.is_end_stream() => drop(permit.take()),
                    _ => {}
                }
                frame
            }
            KindProjection::Full { data } => {
                Poll::Ready(data.take().map(|data| Ok(Frame::data(data.into()))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body, .. } => body.is_end_stream(),
            Kind::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body, .. } => body.size_hint(),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Backend;

    #[test]
    fn a_denial_names_the_unit() {
        let policy = ConcurrencyPolicy::new("reports", 3, Duration::from_secs(30)).unwrap();
        let denial = Denial {
            limit: 3,
            retry_after: Duration::from_millis(1200),
            reset_after: Duration::from_secs(30),
            backend: Backend::Module,
        };
        let (headers, body) = denied(&policy, &denial, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[RETRY_AFTER], "2");
        assert_eq!(
            headers[RATELIMIT_POLICY],
            "\"reports\";q=3;qu=\"concurrent-requests\""
        );
        assert_eq!(headers[RATELIMIT], "\"reports\";r=0;t=2");
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(body.contains("\"status\":503"), "{body}");
        assert!(ConcurrencyPolicy::new("r", 0, Duration::from_secs(1)).is_err());
    }
}
