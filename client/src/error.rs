//! The client's error, classified by methods rather than by its text.

use ratelimit_core::Algorithm;
use redis::{ErrorKind, RedisError};
use std::fmt;
use std::time::Duration;

/// Why an operation of the client failed.
///
/// Classify it with the methods ([`Error::is_outage`], [`Error::is_wrong_type`],
/// [`Error::is_invalid_limit`], [`Error::code`], ...), never by its message: the variants may
/// grow, and the messages may change.
///
/// A server's error reads as the server wrote it, code first:
/// `WRONGTYPE Operation against a key holding the wrong kind of value`,
/// `ERR the key holds a FIXED limiter, not GCRA`.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No Redis URL is configured: `REDIS_URL` and `REDIS_CLUSTER_NODES` are unset and neither
    /// a URL nor cluster nodes were given to [`crate::Config`].
    #[error("no Redis URL is configured: set REDIS_URL (or REDIS_CLUSTER_NODES) or Config::url")]
    NotConfigured,
    /// A configuration value is invalid; the text says which.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A limit outside the contract's ranges was asked for; the text says which value.
    #[error("invalid limit: {0}")]
    InvalidLimit(String),
    /// The cost is above 10^15.
    #[error("invalid cost {0}: expected an integer from 0 to 1000000000000000")]
    InvalidCost(u64),
    /// An argument is outside its range; the text says which.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Redis did not answer within the client's deadline (the connect timeout plus the
    /// response timeouts of the call).
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis failed recently and the store is waiting for it to answer a probe: it was not
    /// tried.
    #[error("Redis is not tried: it failed recently and the circuit breaker is open")]
    CircuitOpen,
    /// The in-process limiter holds another algorithm's state for the key.
    #[error("the key holds a {found} limiter, not {requested}")]
    WrongAlgorithm {
        /// The algorithm of the stored state.
        found: Algorithm,
        /// The algorithm asked for.
        requested: Algorithm,
    },
    /// Redis replied something this client cannot read, e.g. a counter that is not an integer.
    #[error("unexpected reply from Redis: {0}")]
    UnexpectedReply(String),
    /// An error of the connection, or an error reply of the server, from the `redis` crate.
    #[error("{}", ServerText(.0))]
    Redis(RedisError),
}

impl From<RedisError> for Error {
    fn from(error: RedisError) -> Error {
        Error::Redis(error)
    }
}

impl From<ratelimit_core::WrongAlgorithm> for Error {
    fn from(error: ratelimit_core::WrongAlgorithm) -> Error {
        Error::WrongAlgorithm {
            found: error.found,
            requested: error.requested,
        }
    }
}

/// A `redis` error as the server wrote it: `CODE detail` for an error reply, rather than the
/// crate's `"CODE": detail` or `ResponseError: detail`.
struct ServerText<'a>(&'a RedisError);

impl fmt::Display for ServerText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0.code(), self.0.detail()) {
            (Some(code), Some(detail)) => write!(f, "{code} {detail}"),
            (Some(code), None) => f.write_str(code),
            _ => self.0.fmt(f),
        }
    }
}

/// Server error codes that mean "this server cannot serve now", not "this request is wrong".
const UNAVAILABLE_CODES: &[&str] = &[
    "LOADING",
    "BUSY",
    "MASTERDOWN",
    "CLUSTERDOWN",
    "TRYAGAIN",
    "MOVED",
    "ASK",
    "READONLY",
    "OOM",
    "NOAUTH",
    "WRONGPASS",
];

impl Error {
    /// The operation ran out of time: the client's deadline, or a connect or response timeout.
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::Timeout(_) => true,
            Error::Redis(error) => error.is_timeout(),
            _ => false,
        }
    }

    /// Redis could not be reached: the connection was refused, dropped or timed out, the
    /// authentication failed, or the circuit breaker is open and Redis was not tried.
    pub fn is_unreachable(&self) -> bool {
        match self {
            Error::Timeout(_) | Error::CircuitOpen => true,
            Error::Redis(error) => {
                error.is_io_error()
                    || error.is_timeout()
                    || error.is_connection_refusal()
                    || error.is_connection_dropped()
                    || error.kind() == ErrorKind::AuthenticationFailed
                    || error.kind() == ErrorKind::ClusterConnectionNotFound
            }
            _ => false,
        }
    }

    /// The server answered that it cannot serve now: it is loading its data, busy with a
    /// script, out of memory, read-only, without a master, or wants authentication; or a Redis
    /// Cluster is down or still redirecting (`CLUSTERDOWN`, `TRYAGAIN`, `MOVED`, `ASK`) after
    /// the client's retries.
    pub fn is_unavailable(&self) -> bool {
        self.code()
            .is_some_and(|code| UNAVAILABLE_CODES.contains(&code))
    }

    /// Redis could not serve the request, by [`Error::is_unreachable`] or
    /// [`Error::is_unavailable`]: an outage. These are the only errors the failure policy
    /// answers for; the checks never return them.
    pub fn is_outage(&self) -> bool {
        self.is_unreachable() || self.is_unavailable()
    }

    /// The limit or the cost is outside the contract's ranges; nothing was sent to Redis.
    pub fn is_invalid_limit(&self) -> bool {
        matches!(self, Error::InvalidLimit(_) | Error::InvalidCost(_))
    }

    /// An argument other than the limit is outside its range, such as an increment above
    /// 2^63 - 1; nothing was sent to Redis.
    pub fn is_invalid_argument(&self) -> bool {
        matches!(self, Error::InvalidArgument(_))
    }

    /// The configuration is missing or invalid.
    pub fn is_invalid_config(&self) -> bool {
        match self {
            Error::NotConfigured | Error::InvalidConfig(_) => true,
            Error::Redis(error) => error.kind() == ErrorKind::InvalidClientConfig,
            _ => false,
        }
    }

    /// The key holds the state of another algorithm than the one asked for, in Redis or in the
    /// in-process limiter.
    pub fn is_wrong_algorithm(&self) -> bool {
        match self {
            Error::WrongAlgorithm { .. } => true,
            Error::Redis(_) => self.server_detail().is_some_and(|detail| {
                detail.starts_with("the key holds a ") && detail.contains(" limiter, not ")
            }),
            _ => false,
        }
    }

    /// The key holds a string that is no limiter's state.
    pub fn is_not_a_limiter(&self) -> bool {
        self.server_detail()
            .is_some_and(|detail| detail.starts_with("the key holds a value that is not"))
    }

    /// The key holds another Redis type (`WRONGTYPE`).
    pub fn is_wrong_type(&self) -> bool {
        self.code() == Some("WRONGTYPE")
    }

    /// The key's data is not what the call expects: another type, another algorithm's state,
    /// or a string that is no limiter. Redis answered, so this is no outage: the failure
    /// policy does not apply, and the call returns the error.
    pub fn is_data_error(&self) -> bool {
        self.is_wrong_type() || self.is_wrong_algorithm() || self.is_not_a_limiter()
    }

    /// The server answered with an error reply (it was reachable).
    pub fn is_server_error(&self) -> bool {
        self.code().is_some()
    }

    /// The code of a server error reply, such as `ERR`, `WRONGTYPE` or `LOADING`; `None` for
    /// other errors.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Redis(error) => error.code(),
            _ => None,
        }
    }

    /// The underlying error of the `redis` crate, if any.
    pub fn redis_error(&self) -> Option<&RedisError> {
        match self {
            Error::Redis(error) => Some(error),
            _ => None,
        }
    }

    /// The server answered that the command does not exist: the module is not loaded.
    pub(crate) fn is_unknown_command(&self) -> bool {
        self.code() == Some("ERR")
            && self
                .server_detail()
                .is_some_and(|detail| detail.starts_with("unknown command"))
    }

    /// A description safe for logs: `key`, wherever the server echoed it, appears as
    /// `masked`. An unknown-command error, which echoes its arguments cut at an arbitrary
    /// length, is described without them.
    pub(crate) fn redacted(&self, key: &str, masked: &str) -> String {
        if self.is_unknown_command() {
            return "ERR unknown command".to_string();
        }
        let text = self.to_string();
        if key.is_empty() {
            text
        } else {
            text.replace(key, masked)
        }
    }

    fn server_detail(&self) -> Option<&str> {
        match self {
            Error::Redis(error) if error.code().is_some() => error.detail(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn server(code: &str, detail: &str) -> Error {
        Error::Redis(redis::make_extension_error(
            code.to_string(),
            Some(detail.to_string()),
        ))
    }

    #[test]
    fn classifies_every_variant() {
        let refused = Error::Redis(io::Error::from(io::ErrorKind::ConnectionRefused).into());
        assert!(refused.is_unreachable() && refused.is_outage() && !refused.is_timeout());
        let timed_out = Error::Redis(io::Error::from(io::ErrorKind::TimedOut).into());
        assert!(timed_out.is_timeout() && timed_out.is_unreachable());
        let deadline = Error::Timeout(Duration::from_millis(500));
        assert!(deadline.is_timeout() && deadline.is_outage());
        assert!(Error::CircuitOpen.is_unreachable());
        assert!(Error::NotConfigured.is_invalid_config());
        assert!(Error::InvalidConfig("x".into()).is_invalid_config());
        assert!(Error::InvalidLimit("x".into()).is_invalid_limit());
        assert!(Error::InvalidCost(u64::MAX).is_invalid_limit());
        assert!(Error::InvalidArgument("x".into()).is_invalid_argument());
        let local = Error::from(ratelimit_core::WrongAlgorithm {
            found: Algorithm::Gcra,
            requested: Algorithm::Fixed,
        });
        assert!(local.is_wrong_algorithm() && local.is_data_error() && !local.is_outage());
        assert_eq!(local.to_string(), "the key holds a GCRA limiter, not FIXED");
        assert!(!Error::UnexpectedReply("x".into()).is_outage());
        let no_node = Error::Redis(
            (
                ErrorKind::ClusterConnectionNotFound,
                "Requested connection not found",
            )
                .into(),
        );
        assert!(no_node.is_unreachable() && no_node.is_outage());
    }

    #[test]
    fn classifies_server_replies_by_code() {
        let other = server("ERR", "the key holds a SLIDING limiter, not GCRA");
        assert!(other.is_wrong_algorithm() && other.is_server_error() && !other.is_outage());
        assert!(other.is_data_error());
        assert_eq!(other.code(), Some("ERR"));
        let wrong_type = server("WRONGTYPE", "Operation against a key");
        assert!(wrong_type.is_wrong_type() && !wrong_type.is_wrong_algorithm());
        assert!(wrong_type.is_data_error());
        let not_limiter = server(
            "ERR",
            "the key holds a value that is not a rate limiter state",
        );
        assert!(not_limiter.is_not_a_limiter() && !not_limiter.is_wrong_algorithm());
        let moved = server("MOVED", "3999 127.0.0.1:6381");
        assert!(moved.is_unavailable() && moved.is_outage() && !moved.is_data_error());
        for code in UNAVAILABLE_CODES {
            let error = server(code, "try later");
            assert!(error.is_unavailable() && error.is_outage(), "{code}");
        }
        let unknown = server(
            "ERR",
            "unknown command 'RATELIMIT.CHECK', with args: 'user:42'",
        );
        assert!(unknown.is_unknown_command());
        assert!(!unknown.redacted("user:42", "us****").contains("user:42"));
        let echoed = server("ERR", "bad key user:42");
        assert_eq!(echoed.redacted("user:42", "us****"), "ERR bad key us****");
    }

    /// Server errors read as the server wrote them, whatever kind the `redis` crate gives them.
    #[test]
    fn server_errors_read_as_the_server_wrote_them() {
        let wrong_type = server(
            "WRONGTYPE",
            "Operation against a key holding the wrong kind of value",
        );
        assert_eq!(
            wrong_type.to_string(),
            "WRONGTYPE Operation against a key holding the wrong kind of value"
        );
        let parsed: Error =
            redis::parse_redis_value(b"-ERR the key holds a FIXED limiter, not GCRA\r\n")
                .and_then(redis::Value::extract_error)
                .unwrap_err()
                .into();
        assert_eq!(
            parsed.to_string(),
            "ERR the key holds a FIXED limiter, not GCRA"
        );
    }
}
