//! Which limits apply to a request: named [`Policy`]s per route, a route being methods and a
//! path pattern.

use super::key::KeyExtractor;
use crate::key::Key;
use crate::limit::Limit;
use http::Method;
use ratelimit_core::MAX_COUNT;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A named limit: the unit of the `RateLimit-Policy` and `RateLimit` headers.
///
/// The name is the policy's identity. It names the counters too: the limiter's key is
/// `Key::new(name, subject)` (the Redis key `prefix + name + ":" + subject`), so two routes
/// that list a policy of the same name (give them the same limit) share one quota, and
/// policies of different names never do.
///
/// A policy counts each request against the subject that the layer's extractor names (the
/// client's IP address, say), unless it has a subject of its own ([`Policy::subject`]).
#[derive(Clone)]
pub struct Policy {
    name: Arc<str>,
    limit: Limit,
    cost: u64,
    subject: Option<Arc<dyn KeyExtractor>>,
    metered: bool,
}

impl Policy {
    /// A policy named `name` for `limit`; each request costs 1 unit.
    ///
    /// # Panics
    /// When `name` is empty or holds a character other than printable ASCII (`' '` to `'~'`):
    /// the name is sent in a header as a structured-field string, which can hold no other.
    pub fn new(name: &str, limit: Limit) -> Policy {
        assert!(
            !name.is_empty() && name.bytes().all(|b| (0x20..=0x7e).contains(&b)),
            "invalid policy name {name:?}: expected printable ASCII, not empty"
        );
        Policy {
            name: Arc::from(name),
            limit,
            cost: 1,
            subject: None,
            metered: false,
        }
    }

    /// The same policy with each request costing `cost` units instead of 1.
    ///
    /// # Panics
    /// When `cost` is above 10^15, the contract's largest.
    pub fn cost(mut self, cost: u64) -> Policy {
        assert!(
            cost <= MAX_COUNT,
            "invalid cost {cost}: expected an integer from 0 to 1000000000000000"
        );
        self.cost = cost;
        self
    }

    /// The same policy, counting each request against the subject that `extractor` names
    /// instead of the layer's. It applies only to the requests for which `extractor` names a
    /// subject: the others pass it by, and are limited by the route's other policies.
    ///
    /// That is how to limit an API key **as well as** the client's address: the address always,
    /// and the key when there is one. A client that invents a new key for each request still
    /// meets its address's limit.
    ///
    /// ```
    /// use ratelimit_client::tower::{ClientIp, Header, Policy, RateLimitLayer};
    /// use ratelimit_client::{Limit, LocalLimiter};
    /// use std::time::Duration;
    ///
    /// # fn main() -> Result<(), ratelimit_client::Error> {
    /// let minute = Duration::from_secs(60);
    /// let layer = RateLimitLayer::new(LocalLimiter::default(), ClientIp::new()).route(
    ///     "GET /search",
    ///     [
    ///         Policy::new("search", Limit::fixed(60, minute)?),
    ///         // Only once the key is authenticated: see `Header`.
    ///         Policy::new("search-key", Limit::fixed(600, minute)?).subject(Header::new("x-api-key")),
    ///     ],
    /// );
    /// # Ok(())
    /// # }
    /// ```
    pub fn subject<K: KeyExtractor>(mut self, extractor: K) -> Policy {
        self.subject = Some(Arc::new(extractor));
        self
    }

    /// The same policy, metered: its cost ([`Policy::cost`]) is an estimate, spent when the
    /// request is checked, and the handler reports the real cost with the [`super::Usage`]
    /// that the layer puts in the request's extensions. Once the handler has answered, the
    /// layer settles: it gives back what was not used, to the window it was spent in, or
    /// charges the excess. For usage-based limits, such as model tokens per minute.
    ///
    /// ```
    /// use ratelimit_client::tower::{ClientIp, Policy, RateLimitLayer};
    /// use ratelimit_client::{Limit, LocalLimiter};
    /// use std::time::Duration;
    ///
    /// # fn main() -> Result<(), ratelimit_client::Error> {
    /// let minute = Duration::from_secs(60);
    /// let layer = RateLimitLayer::new(LocalLimiter::default(), ClientIp::new()).route(
    ///     "POST /generate",
    ///     [
    ///         Policy::new("requests", Limit::gcra(10, minute)?),
    ///         // Reserve 500 tokens per request; the handler reports what it used.
    ///         Policy::new("tokens", Limit::fixed(10_000, minute)?).cost(500).metered(),
    ///     ],
    /// );
    /// # Ok(())
    /// # }
    /// ```
    pub fn metered(mut self) -> Policy {
        self.metered = true;
        self
    }

    /// Whether the policy is metered ([`Policy::metered`]).
    pub fn is_metered(&self) -> bool {
        self.metered
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The limit.
    pub fn limit(&self) -> &Limit {
        &self.limit
    }

    /// The units each request spends.
    pub fn get_cost(&self) -> u64 {
        self.cost
    }

    /// The limiter's key for `subject` under this policy: `Key::new(name, subject)`.
    pub fn key<'a>(&'a self, subject: &'a str) -> Key<'a> {
        Key::new(&self.name, subject)
    }

    /// The policy's own subject extractor, if it has one.
    pub(crate) fn own_subject(&self) -> Option<&dyn KeyExtractor> {
        self.subject.as_deref()
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.name)
            .field("limit", &self.limit)
            .field("cost", &self.cost)
            .field("own_subject", &self.subject.is_some())
            .field("metered", &self.metered)
            .finish()
    }
}

impl fmt::Display for Policy {
    /// `search (5 per 10s SLIDING)`, with the cost when it is not 1.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}", self.name, self.limit)?;
        if self.cost != 1 {
            write!(f, ", cost {}", self.cost)?;
        }
        if self.subject.is_some() {
            f.write_str(", own subject")?;
        }
        if self.metered {
            f.write_str(", metered")?;
        }
        f.write_str(")")
    }
}

/// A route: the methods it applies to (all when none are named) and a path pattern, exact or a
/// prefix when it ends with `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    methods: Vec<Method>,
    pattern: Pattern,
    /// As written, for logs.
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Route {
    /// Parses `[METHOD[,METHOD...] ]/path[*]`; see [`super::RateLimitLayer::route`].
    pub(crate) fn parse(route: &str) -> Route {
        let route = route.trim();
        let (methods, path) = match route.split_once(' ') {
            Some((methods, path)) if !methods.starts_with('/') => (methods, path.trim()),
            _ => ("", route),
        };
        let mut parsed: Vec<Method> = Vec::new();
        for name in methods.split(',').filter(|name| !name.is_empty()) {
            let method = Method::from_bytes(name.trim().to_ascii_uppercase().as_bytes())
                .unwrap_or_else(|_| panic!("invalid method {name:?} in route {route:?}"));
            // A server answers HEAD as GET, without the body: it costs the same.
            if method == Method::GET {
                parsed.push(Method::HEAD);
            }
            parsed.push(method);
        }
        assert!(
            path.starts_with('/'),
            "invalid route {route:?}: a path pattern starts with '/'"
        );
        let prefix = path.strip_suffix('*');
        assert!(
            !prefix.unwrap_or(path).contains('*'),
            "invalid route {route:?}: '*' may only end a pattern"
        );
        let pattern = match prefix {
            Some(prefix) => Pattern::Prefix(prefix.to_string()),
            None => Pattern::Exact(path.to_string()),
        };
        Route {
            methods: parsed,
            pattern,
            text: route.to_string(),
        }
    }

    /// The route as written.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    pub(crate) fn matches(&self, method: &Method, path: &str) -> bool {
        let path_matches = match &self.pattern {
            Pattern::Exact(exact) => path == exact,
            Pattern::Prefix(prefix) => path.starts_with(prefix.as_str()),
        };
        path_matches && (self.methods.is_empty() || self.methods.contains(method))
    }
}

/// The routes of a layer, in the order they were added, and the policies of the requests that
/// match none.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    routes: Vec<(Route, Arc<[Policy]>)>,
    default: Option<Arc<[Policy]>>,
    /// Whether the routes were logged, when the layer was first applied.
    logged: AtomicBool,
}

impl Clone for Routes {
    fn clone(&self) -> Routes {
        Routes {
            routes: self.routes.clone(),
            default: self.default.clone(),
            logged: AtomicBool::new(false),
        }
    }
}

impl Routes {
    pub(crate) fn add(&mut self, route: &str, policies: Vec<Policy>) {
        self.routes.push((Route::parse(route), Arc::from(policies)));
    }

    pub(crate) fn set_default(&mut self, policies: Vec<Policy>) {
        self.default = Some(Arc::from(policies));
    }

    /// The policies of the first route that matches, else the default's; `None` when neither
    /// applies.
    pub(crate) fn find(&self, method: &Method, path: &str) -> Option<&Arc<[Policy]>> {
        self.routes
            .iter()
            .find(|(route, _)| route.matches(method, path))
            .map(|(_, policies)| policies)
            .or(self.default.as_ref())
    }

    /// Whether the routes still have to be logged; true once.
    pub(crate) fn first_use(&self) -> bool {
        !self.logged.swap(true, Ordering::AcqRel)
    }

    /// Every route and its policies, for the log line at start-up:
    /// `GET /search: search (5 per 10s SLIDING); /health: not limited`.
    pub(crate) fn describe(&self) -> String {
        let list = |policies: &[Policy]| -> String {
            if policies.is_empty() {
                return "not limited".to_string();
            }
            let names: Vec<String> = policies.iter().map(Policy::to_string).collect();
            names.join(", ")
        };
        let mut lines: Vec<String> = self
            .routes
            .iter()
            .map(|(route, policies)| format!("{}: {}", route.text, list(policies)))
            .collect();
        lines.push(match &self.default {
            Some(policies) => format!("any other request: {}", list(policies)),
            None => "any other request: not limited".to_string(),
        });
        lines.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy(name: &str) -> Policy {
        Policy::new(name, Limit::fixed(1, Duration::from_secs(1)).unwrap())
    }

    fn names(routes: &Routes, method: &Method, path: &str) -> Option<Vec<String>> {
        routes
            .find(method, path)
            .map(|policies| policies.iter().map(|p| p.name().to_string()).collect())
    }

    #[test]
    fn matches_the_first_route_then_the_default() {
        let get = Method::GET;
        let mut routes = Routes::default();
        routes.add("/search", vec![policy("search")]);
        routes.add("/files/*", vec![policy("files"), policy("daily")]);
        routes.add("/health", vec![]);
        routes.add("/*", vec![policy("shadowed")]);
        assert_eq!(names(&routes, &get, "/search").unwrap(), ["search"]);
        assert_eq!(
            names(&routes, &get, "/files/a/b").unwrap(),
            ["files", "daily"]
        );
        assert_eq!(names(&routes, &get, "/files/").unwrap(), ["files", "daily"]);
        assert_eq!(
            names(&routes, &get, "/health").unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(names(&routes, &get, "/search/x").unwrap(), ["shadowed"]);

        let mut routes = Routes::default();
        routes.add("/search", vec![policy("search")]);
        assert_eq!(names(&routes, &get, "/other"), None);
        routes.set_default(vec![policy("default")]);
        assert_eq!(names(&routes, &get, "/other").unwrap(), ["default"]);
        assert_eq!(names(&routes, &get, "/search").unwrap(), ["search"]);
    }

    #[test]
    fn routes_name_their_methods() {
        let mut routes = Routes::default();
        routes.add("POST /upload", vec![policy("upload")]);
        routes.add("get /search", vec![policy("search")]);
        routes.add("PUT,DELETE /files/*", vec![policy("files")]);
        assert_eq!(
            names(&routes, &Method::POST, "/upload").unwrap(),
            ["upload"]
        );
        assert_eq!(names(&routes, &Method::GET, "/upload"), None);
        assert_eq!(names(&routes, &Method::GET, "/search").unwrap(), ["search"]);
        assert_eq!(
            names(&routes, &Method::HEAD, "/search").unwrap(),
            ["search"]
        );
        assert_eq!(names(&routes, &Method::POST, "/search"), None);
        assert_eq!(
            names(&routes, &Method::DELETE, "/files/7").unwrap(),
            ["files"]
        );
        assert_eq!(names(&routes, &Method::GET, "/files/7"), None);
        assert_eq!(
            routes.describe(),
            "POST /upload: upload (1 per 1s FIXED); get /search: search (1 per 1s FIXED); \
             PUT,DELETE /files/*: files (1 per 1s FIXED); any other request: not limited"
        );
        assert!(routes.first_use() && !routes.first_use());
        assert!(routes.clone().first_use());
    }

    #[test]
    #[should_panic(expected = "starts with '/'")]
    fn a_pattern_starts_with_a_slash() {
        Routes::default().add("search", vec![]);
    }

    #[test]
    #[should_panic(expected = "may only end")]
    fn a_star_only_ends_a_pattern() {
        Routes::default().add("/a/*/b", vec![]);
    }

    #[test]
    #[should_panic(expected = "invalid method")]
    fn methods_are_methods() {
        Routes::default().add("G(ET /a", vec![]);
    }

    #[test]
    #[should_panic(expected = "invalid policy name")]
    fn a_policy_name_is_printable_ascii() {
        policy("café");
    }

    #[test]
    #[should_panic(expected = "invalid cost")]
    fn a_cost_is_within_the_contract() {
        policy("p").cost(1_000_000_000_000_001);
    }

    #[test]
    fn keys_are_named_by_policy() {
        assert_eq!(
            policy("search").key("ip:10.0.0.1").redis_key("rl:"),
            "rl:search:ip:10.0.0.1"
        );
        assert_eq!(policy("search").cost(3).get_cost(), 3);
        assert_eq!(
            policy("p").cost(2).to_string(),
            "p (1 per 1s FIXED, cost 2)"
        );
    }
}
