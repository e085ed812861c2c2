//! Which limits apply to a request: named [`Policy`]s per route.

use crate::limit::Limit;
use std::sync::Arc;

/// A named limit: the unit of the `RateLimit-Policy` and `RateLimit` headers.
///
/// The name is the policy's identity. It names the counter too: the limiter's key is
/// `name + ":" + subject`, so two routes that list a policy of the same name (give them the
/// same limit) share one quota, and policies of different names never do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Policy {
    name: Arc<str>,
    limit: Limit,
    cost: u64,
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
        }
    }

    /// The same policy with each request costing `cost` units instead of 1.
    pub fn cost(mut self, cost: u64) -> Policy {
        self.cost = cost;
        self
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

    /// The limiter's key for `subject` under this policy: `name + ":" + subject`.
    pub fn key(&self, subject: &str) -> String {
        format!("{}:{subject}", self.name)
    }
}

/// A route's path pattern: exact, or a prefix when it ends with `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    fn parse(pattern: &str) -> Pattern {
        assert!(
            pattern.starts_with('/'),
            "invalid route {pattern:?}: a path pattern starts with '/'"
        );
        match pattern.strip_suffix('*') {
            Some(prefix) => {
                assert!(
                    !prefix.contains('*'),
                    "invalid route {pattern:?}: '*' may only end a pattern"
                );
                Pattern::Prefix(prefix.to_string())
            }
            None => {
                assert!(
                    !pattern.contains('*'),
                    "invalid route {pattern:?}: '*' may only end a pattern"
                );
                Pattern::Exact(pattern.to_string())
            }
        }
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            Pattern::Exact(exact) => path == exact,
            Pattern::Prefix(prefix) => path.starts_with(prefix.as_str()),
        }
    }
}

/// The routes of a layer, in the order they were added, and the default.
#[derive(Debug, Clone, Default)]
pub(crate) struct Routes {
    routes: Vec<(Pattern, Arc<[Policy]>)>,
    default: Option<Arc<[Policy]>>,
}

impl Routes {
    pub(crate) fn add(&mut self, pattern: &str, policies: Vec<Policy>) {
        self.routes
            .push((Pattern::parse(pattern), Arc::from(policies)));
    }

    pub(crate) fn set_default(&mut self, policies: Vec<Policy>) {
        self.default = Some(Arc::from(policies));
    }

    /// The policies of the first route that matches `path`, else the default's; `None` when
    /// neither applies.
    pub(crate) fn find(&self, path: &str) -> Option<&Arc<[Policy]>> {
        self.routes
            .iter()
            .find(|(pattern, _)| pattern.matches(path))
            .map(|(_, policies)| policies)
            .or(self.default.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy(name: &str) -> Policy {
        Policy::new(name, Limit::new(1, Duration::from_secs(1)))
    }

    fn names(routes: &Routes, path: &str) -> Option<Vec<String>> {
        routes
            .find(path)
            .map(|policies| policies.iter().map(|p| p.name().to_string()).collect())
    }

    #[test]
    fn matches_the_first_route_then_the_default() {
        let mut routes = Routes::default();
        routes.add("/search", vec![policy("search")]);
        routes.add("/files/*", vec![policy("files"), policy("daily")]);
        routes.add("/health", vec![]);
        routes.add("/*", vec![policy("shadowed")]);
        assert_eq!(names(&routes, "/search").unwrap(), ["search"]);
        assert_eq!(names(&routes, "/files/a/b").unwrap(), ["files", "daily"]);
        assert_eq!(names(&routes, "/files/").unwrap(), ["files", "daily"]);
        assert_eq!(names(&routes, "/health").unwrap(), Vec::<String>::new());
        assert_eq!(names(&routes, "/search/x").unwrap(), ["shadowed"]);

        let mut routes = Routes::default();
        routes.add("/search", vec![policy("search")]);
        assert_eq!(names(&routes, "/other"), None);
        routes.set_default(vec![policy("default")]);
        assert_eq!(names(&routes, "/other").unwrap(), ["default"]);
        assert_eq!(names(&routes, "/search").unwrap(), ["search"]);
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
    #[should_panic(expected = "invalid policy name")]
    fn a_policy_name_is_printable_ascii() {
        policy("café");
    }

    #[test]
    fn keys_are_named_by_policy() {
        assert_eq!(policy("search").key("ip:10.0.0.1"), "search:ip:10.0.0.1");
        assert_eq!(policy("search").cost(3).get_cost(), 3);
    }
}
