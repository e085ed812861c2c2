//! [`Key`]: which limiter a call is about, and how logs show it.

use crate::mask::mask_id;
use std::fmt;

/// The name of one limiter, under the store's prefix.
///
/// A key has a **scope** that logs show (a policy, an endpoint) and a **subject** that they
/// mask (a user, an IP address, an API key), so that a log line tells which limit it is about
/// without telling whom:
///
/// | key | Redis key | in logs |
/// |---|---|---|
/// | `Key::new("search", "user:1234567")` | `ratelimit:search:user:1234567` | `ratelimit:search:us****` |
/// | `"user:1234567:search"` (a `&str`: all subject) | `ratelimit:user:1234567:search` | `ratelimit:us****` |
///
/// Every method of [`crate::RedisStore`] that takes a key takes a `&str` too: the whole name is
/// then the subject, and logs show only the prefix. The tower layer names its keys
/// `Key::new(policy, subject)`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key<'a> {
    parts: Parts<'a>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Parts<'a> {
    /// A name that is all subject.
    Name(&'a str),
    /// `scope:subject`.
    Scoped { scope: &'a str, subject: &'a str },
    /// `user:endpoint`, the layout of the seed's keys (`check_rate_limit` and its kin).
    UserEndpoint { user: &'a str, endpoint: &'a str },
}

impl<'a> Key<'a> {
    /// The key `scope + ":" + subject`, e.g. `Key::new("search", "ip:203.0.113.7")`.
    pub fn new(scope: &'a str, subject: &'a str) -> Key<'a> {
        Key {
            parts: Parts::Scoped { scope, subject },
        }
    }

    /// The key `user + ":" + endpoint`, in which the user is the subject.
    pub(crate) fn user_endpoint(user: &'a str, endpoint: &'a str) -> Key<'a> {
        Key {
            parts: Parts::UserEndpoint { user, endpoint },
        }
    }

    /// Writes [`Key::redis_key`] into `out`, which it clears first: the same key without an
    /// allocation, for the local shares' lookups.
    pub(crate) fn write_redis_key(&self, prefix: &str, out: &mut String) {
        out.clear();
        out.push_str(prefix);
        match self.parts {
            Parts::Name(name) => out.push_str(name),
            Parts::Scoped { scope, subject } => {
                out.push_str(scope);
                out.push(':');
                out.push_str(subject);
            }
            Parts::UserEndpoint { user, endpoint } => {
                out.push_str(user);
                out.push(':');
                out.push_str(endpoint);
            }
        }
    }

    /// The key's name under the prefix, as Redis stores it: `prefix + name`.
    pub fn redis_key(&self, prefix: &str) -> String {
        match self.parts {
            Parts::Name(name) => format!("{prefix}{name}"),
            Parts::Scoped { scope, subject } => format!("{prefix}{scope}:{subject}"),
            Parts::UserEndpoint { user, endpoint } => format!("{prefix}{user}:{endpoint}"),
        }
    }

    /// The Redis key as logs show it: the prefix and the scope, and the subject masked by
    /// [`mask_id`].
    pub fn masked(&self, prefix: &str) -> String {
        match self.parts {
            Parts::Name(name) => format!("{prefix}{}", mask_id(name)),
            Parts::Scoped { scope, subject } => format!("{prefix}{scope}:{}", mask_id(subject)),
            Parts::UserEndpoint { user, endpoint } => {
                format!("{prefix}{}:{endpoint}", mask_id(user))
            }
        }
    }
}

impl<'a> From<&'a str> for Key<'a> {
    /// A key whose whole name is the subject: logs show only the prefix.
    fn from(name: &'a str) -> Key<'a> {
        Key {
            parts: Parts::Name(name),
        }
    }
}

impl<'a> From<&'a String> for Key<'a> {
    /// As `From<&str>`.
    fn from(name: &'a String) -> Key<'a> {
        Key::from(name.as_str())
    }
}

impl fmt::Debug for Key<'_> {
    /// The key as logs show it, without a prefix: the subject masked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.masked(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_show_the_scope_and_mask_the_subject() {
        let scoped = Key::new("search", "ip:203.0.113.7");
        assert_eq!(scoped.redis_key("rl:"), "rl:search:ip:203.0.113.7");
        let mut written = String::from("left over");
        for key in [scoped, Key::from("k"), Key::user_endpoint("u", "/e")] {
            key.write_redis_key("rl:", &mut written);
            assert_eq!(written, key.redis_key("rl:"));
        }
        assert_eq!(scoped.masked("rl:"), "rl:search:ip****");
        let seed = Key::user_endpoint("user-1234567", "/search");
        assert_eq!(seed.redis_key("rl:"), "rl:user-1234567:/search");
        assert_eq!(seed.masked("rl:"), "rl:us****:/search");
        let name = Key::from("user:1234567:search");
        assert_eq!(name.redis_key(""), "user:1234567:search");
        assert_eq!(name.masked("rl:"), "rl:us****");
        assert_eq!(format!("{scoped:?}"), "Key(search:ip****)");
    }
}
