//! How to reach Redis, and what to do when it cannot be reached.

use crate::breaker::BreakerConfig;
use crate::error::Error;
use crate::mask::mask_url;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "ratelimit:";
/// The default connect timeout: a dead Redis never stalls a request for long.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(250);
/// The default response timeout.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_millis(250);
/// How often, by default, the client asks Redis again whether the module is loaded.
pub const DEFAULT_REDETECT_INTERVAL: Duration = Duration::from_secs(30);
/// The default capacity of the in-memory limiter used by [`FailurePolicy::Local`].
pub const DEFAULT_LOCAL_MAX_ENTRIES: usize = 100_000;

/// What answers the checks while Redis is out (unreachable, or unable to serve).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FailurePolicy {
    /// Decide with the in-memory limiter: the same algorithms, counted per process.
    #[default]
    Local,
    /// Fail open: admit every request.
    Allow,
    /// Fail closed: deny every request.
    Deny,
}

impl FailurePolicy {
    /// `local`, `allow` or `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::Local => "local",
            FailurePolicy::Allow => "allow",
            FailurePolicy::Deny => "deny",
        }
    }
}

impl fmt::Display for FailurePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FailurePolicy {
    type Err = Error;

    /// Parses `local`, `allow` or `deny`, in any letter case.
    fn from_str(text: &str) -> Result<FailurePolicy, Error> {
        match text.to_ascii_lowercase().as_str() {
            "local" => Ok(FailurePolicy::Local),
            "allow" => Ok(FailurePolicy::Allow),
            "deny" => Ok(FailurePolicy::Deny),
            _ => Err(Error::InvalidConfig(format!(
                "unknown failure policy '{text}': expected local, allow or deny"
            ))),
        }
    }
}

/// The configuration of a [`crate::RedisStore`]: a builder, or [`Config::from_env`].
///
/// ```
/// use ratelimit_client::{Config, FailurePolicy};
/// use std::time::Duration;
///
/// let config = Config::new("redis://127.0.0.1:6379")
///     .prefix("myapp:rl:")
///     .response_timeout(Duration::from_millis(100))
///     .on_failure(FailurePolicy::Deny);
/// assert_eq!(config.get_prefix(), "myapp:rl:");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    pub(crate) url: Option<String>,
    pub(crate) cluster_nodes: Vec<String>,
    pub(crate) prefix: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) on_failure: FailurePolicy,
    pub(crate) breaker: BreakerConfig,
    pub(crate) redetect_interval: Duration,
    pub(crate) local_max_entries: usize,
    pub(crate) shadow: bool,
    pub(crate) tls_ca_file: Option<PathBuf>,
    pub(crate) share_hold: Duration,
}

impl Default for Config {
    /// No URL, and the defaults for everything else.
    fn default() -> Config {
        Config {
            url: None,
            cluster_nodes: Vec::new(),
            prefix: DEFAULT_PREFIX.to_string(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            on_failure: FailurePolicy::default(),
            breaker: BreakerConfig::default(),
            redetect_interval: DEFAULT_REDETECT_INTERVAL,
            local_max_entries: DEFAULT_LOCAL_MAX_ENTRIES,
            shadow: false,
            tls_ca_file: None,
            share_hold: crate::share::DEFAULT_HOLD,
        }
    }
}

impl fmt::Debug for Config {
    /// Shows the URL and the cluster's nodes with their passwords masked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("url", &self.url.as_deref().map(mask_url))
            .field("cluster_nodes", &self.masked_cluster_nodes())
            .field("prefix", &self.prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("on_failure", &self.on_failure)
            .field("breaker", &self.breaker)
            .field("redetect_interval", &self.redetect_interval)
            .field("local_max_entries", &self.local_max_entries)
            .field("shadow", &self.shadow)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("share_hold", &self.share_hold)
            .finish()
    }
}

impl Config {
    /// The defaults with a Redis URL: `redis://[user:password@]host[:port][/db]`, or `rediss://`
    /// for TLS.
    pub fn new(url: impl Into<String>) -> Config {
        Config::default().url(url)
    }

    /// The defaults with a Redis Cluster: the URLs of some of its nodes (`redis://host:port` or
    /// `rediss://`), from which the client learns the others. See [`Config::cluster_nodes`].
    ///
    /// ```
    /// use ratelimit_client::Config;
    ///
    /// let config = Config::cluster(["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]);
    /// assert_eq!(config.get_cluster_nodes().len(), 2);
    /// ```
    pub fn cluster<I, S>(nodes: I) -> Config
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Config::default().cluster_nodes(nodes)
    }

    /// The configuration from the environment, on top of the defaults:
    ///
    /// | variable | meaning | default |
    /// |---|---|---|
    /// | `REDIS_URL` | the server, `redis://` or `rediss://`, with user and password | none: connecting fails with [`Error::NotConfigured`] |
    /// | `REDIS_CLUSTER_NODES` | instead of `REDIS_URL`, a Redis Cluster: comma-separated node URLs, e.g. `redis://10.0.0.1:7000,redis://10.0.0.2:7000` | none |
    /// | `RATELIMIT_PREFIX` | the prefix of every key | `ratelimit:` |
    /// | `RATELIMIT_CONNECT_TIMEOUT_MS` | the connect timeout, in milliseconds | 250 |
    /// | `RATELIMIT_RESPONSE_TIMEOUT_MS` | the response timeout, in milliseconds | 250 |
    /// | `RATELIMIT_ON_FAILURE` | `local`, `allow` or `deny` | `local` |
    /// | `RATELIMIT_SHADOW` | `true` or `false` (`1`, `0`): shadow mode, see [`Config::shadow`] | `false` |
    /// | `REDIS_TLS_CA` | with `rediss://`, the PEM file of the certificate authorities to trust instead of the public ones, see [`Config::tls_ca_file`] | none: the public roots |
    ///
    /// Fails with [`Error::InvalidConfig`] when a variable is set to an invalid value (an empty
    /// one counts as unset), or when both `REDIS_URL` and `REDIS_CLUSTER_NODES` are set.
    pub fn from_env() -> Result<Config, Error> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`Config::from_env`] with the variables from `lookup`.
    pub(crate) fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, Error> {
        let get = |name: &str| lookup(name).filter(|value| !value.is_empty());
        let mut config = Config {
            url: get("REDIS_URL"),
            ..Config::default()
        };
        if let Some(nodes) = get("REDIS_CLUSTER_NODES") {
            if config.url.is_some() {
                return Err(Error::InvalidConfig(
                    "REDIS_URL and REDIS_CLUSTER_NODES are both set: set one".into(),
                ));
            }
            config.cluster_nodes = split_nodes(&nodes);
        }
        if let Some(prefix) = get("RATELIMIT_PREFIX") {
            config.prefix = prefix;
        }
        let millis = |name: &str| -> Result<Option<Duration>, Error> {
            get(name)
                .map(|text| match text.trim().parse::<u64>() {
                    Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
                    _ => Err(Error::InvalidConfig(format!(
                        "{name}='{text}': expected a positive number of milliseconds"
                    ))),
                })
                .transpose()
        };
        if let Some(timeout) = millis("RATELIMIT_CONNECT_TIMEOUT_MS")? {
            config.connect_timeout = timeout;
        }
        if let Some(timeout) = millis("RATELIMIT_RESPONSE_TIMEOUT_MS")? {
            config.response_timeout = timeout;
        }
        if let Some(policy) = get("RATELIMIT_ON_FAILURE") {
            config.on_failure = policy.parse()?;
        }
        if let Some(ca) = get("REDIS_TLS_CA") {
            config.tls_ca_file = Some(PathBuf::from(ca));
        }
        if let Some(shadow) = get("RATELIMIT_SHADOW") {
            config.shadow = match shadow.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                _ => {
                    return Err(Error::InvalidConfig(format!(
                        "RATELIMIT_SHADOW='{shadow}': expected true or false"
                    )))
                }
            };
        }
        Ok(config)
    }

    /// Sets the Redis URL.
    pub fn url(mut self, url: impl Into<String>) -> Config {
        self.url = Some(url.into());
        self
    }

    /// Sets the seed nodes of a Redis Cluster, and so connects in cluster mode: each request
    /// goes to the master that owns its key's slot, following the cluster through resharding
    /// and failovers. A few nodes are enough; the client learns the others from them.
    ///
    /// Each is a URL like [`Config::url`]'s, `redis://` or `rediss://` alike for all. The user
    /// and password of the first node that has some apply to every node. The module must be
    /// loaded on every node, or on none (the script is used then). Setting both a URL and
    /// cluster nodes is an error when the store is opened.
    pub fn cluster_nodes<I, S>(mut self, nodes: I) -> Config
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.cluster_nodes = nodes.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the prefix that every key the store touches starts with (default `ratelimit:`).
    /// An empty prefix is allowed, but then [`crate::RedisStore::clear_all`] refuses to run.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Config {
        self.prefix = prefix.into();
        self
    }

    /// Sets how long one connection attempt may take (default 250 ms).
    pub fn connect_timeout(mut self, timeout: Duration) -> Config {
        self.connect_timeout = timeout;
        self
    }

    /// Sets how long Redis may take to answer one command (default 250 ms).
    pub fn response_timeout(mut self, timeout: Duration) -> Config {
        self.response_timeout = timeout;
        self
    }

    /// Sets what answers the checks while Redis is out (default [`FailurePolicy::Local`]).
    pub fn on_failure(mut self, policy: FailurePolicy) -> Config {
        self.on_failure = policy;
        self
    }

    /// Sets when the circuit breaker opens and how long it waits before probing Redis again.
    pub fn breaker(mut self, breaker: BreakerConfig) -> Config {
        self.breaker = breaker;
        self
    }

    /// Sets how often the client asks Redis again whether the module is loaded (default 30 s),
    /// so that a module loaded after the client started is used.
    pub fn redetect_interval(mut self, interval: Duration) -> Config {
        self.redetect_interval = interval;
        self
    }

    /// Sets shadow mode (default off): the checks decide and count as usual, and log each
    /// denial, but let every request through. Each [`crate::Decision`] then has
    /// `enforced: false`, so [`crate::Decision::allowed`] holds, and its `outcome` tells what
    /// would have happened. A denied request spends nothing, as when enforcing, so the counts
    /// are those that enforcing would keep. Use it to roll out a new limit safely: watch the
    /// denials it would cause, then turn it off.
    pub fn shadow(mut self, shadow: bool) -> Config {
        self.shadow = shadow;
        self
    }

    /// Sets the PEM file of the certificate authorities that a `rediss://` server's certificate
    /// must chain to, instead of the public roots (the Mozilla set built into the client): for
    /// a server whose certificate a private CA signed. The file may hold several certificates;
    /// it is read when the store connects, and an unreadable file or one without a certificate
    /// fails [`crate::RedisStore::new`] with [`Error::InvalidConfig`]. Only for `rediss://`
    /// URLs (or cluster nodes); with `redis://` it is an invalid configuration. The server's
    /// certificate must name the URL's host (a DNS name or an IP address in its subject
    /// alternative names). Also `REDIS_TLS_CA` in [`Config::from_env`].
    ///
    /// ```
    /// use ratelimit_client::Config;
    ///
    /// let config = Config::new("rediss://redis.internal:6380").tls_ca_file("/etc/redis/ca.pem");
    /// assert_eq!(
    ///     config.get_tls_ca_file(),
    ///     Some(std::path::Path::new("/etc/redis/ca.pem"))
    /// );
    /// ```
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Config {
        self.tls_ca_file = Some(path.into());
        self
    }

    /// Sets how long a process holds the units of a local share
    /// ([`crate::Limit::with_local_batch`]) before it gives the unused ones back to Redis
    /// (default 100 ms). Shorter gives units back sooner to other processes, at the cost of
    /// more round trips. Zero is refused when the store is opened.
    pub fn share_hold(mut self, hold: Duration) -> Config {
        self.share_hold = hold;
        self
    }

    /// Sets how many keys the in-memory limiter of [`FailurePolicy::Local`] holds at most
    /// (default 100,000); beyond, it forgets the oldest.
    pub fn local_max_entries(mut self, max_entries: usize) -> Config {
        self.local_max_entries = max_entries;
        self
    }

    /// The Redis URL, if one is set. It holds the password: log [`Config::masked_url`] instead.
    pub fn get_url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// The Redis URL with its password masked, for logs.
    pub fn masked_url(&self) -> Option<String> {
        self.url.as_deref().map(mask_url)
    }

    /// The seed nodes of the Redis Cluster; empty when the store connects to one server. They
    /// hold the password: log [`Config::masked_cluster_nodes`] instead.
    pub fn get_cluster_nodes(&self) -> &[String] {
        &self.cluster_nodes
    }

    /// The seed nodes with their passwords masked, for logs.
    pub fn masked_cluster_nodes(&self) -> Vec<String> {
        self.cluster_nodes
            .iter()
            .map(|node| mask_url(node))
            .collect()
    }

    /// Whether the store connects to a Redis Cluster: cluster nodes are set.
    pub fn is_cluster(&self) -> bool {
        !self.cluster_nodes.is_empty()
    }

    /// Where the store connects, with passwords masked, for logs: the URL, or the cluster's
    /// seed nodes as `cluster redis://a:7000,redis://b:7000`; `None` when nothing is set.
    pub fn masked_target(&self) -> Option<String> {
        if self.is_cluster() {
            Some(format!("cluster {}", self.masked_cluster_nodes().join(",")))
        } else {
            self.masked_url()
        }
    }

    /// The PEM file of the certificate authorities to trust for TLS, if one is set.
    pub fn get_tls_ca_file(&self) -> Option<&Path> {
        self.tls_ca_file.as_deref()
    }

    /// The key prefix.
    pub fn get_prefix(&self) -> &str {
        &self.prefix
    }

    /// The failure policy.
    pub fn get_on_failure(&self) -> FailurePolicy {
        self.on_failure
    }

    /// Whether shadow mode is on.
    pub fn is_shadow(&self) -> bool {
        self.shadow
    }

    /// Checks the values that cannot work, and answers where to connect.
    pub(crate) fn validate(&self) -> Result<Target<'_>, Error> {
        let target = match (self.url.as_deref(), self.cluster_nodes.as_slice()) {
            (None, []) => return Err(Error::NotConfigured),
            (Some(url), []) => Target::Single(url),
            (None, nodes) => Target::Cluster(nodes),
            (Some(_), _) => {
                return Err(Error::InvalidConfig(
                    "both a URL and cluster nodes are set: set one".into(),
                ))
            }
        };
        if self.tls_ca_file.is_some() {
            let urls = match target {
                Target::Single(url) => vec![url],
                Target::Cluster(nodes) => nodes.iter().map(String::as_str).collect(),
            };
            if let Some(plain) = urls.iter().find(|url| !is_tls_url(url)) {
                return Err(Error::InvalidConfig(format!(
                    "a TLS CA file is set, but {} is not a rediss:// URL",
                    mask_url(plain)
                )));
            }
        }
        if self.share_hold.is_zero() {
            return Err(Error::InvalidConfig("share_hold must be positive".into()));
        }
        if self.connect_timeout.is_zero() || self.response_timeout.is_zero() {
            return Err(Error::InvalidConfig(
                "the connect and response timeouts must be above zero".into(),
            ));
        }
        Ok(target)
    }

    /// The longest a call to Redis may take: a connection, then two commands (the module's
    /// detection and the request). A little above the `redis` crate's own timeouts, so that
    /// they fire first with a precise error.
    pub(crate) fn call_deadline(&self) -> Duration {
        self.connect_timeout
            .saturating_add(self.response_timeout.saturating_mul(2))
            .saturating_add(Duration::from_millis(50))
    }
}

/// Where a valid configuration connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target<'a> {
    /// One server, by its URL.
    Single(&'a str),
    /// A Redis Cluster, by its seed nodes (at least one).
    Cluster(&'a [String]),
}

/// Whether `url` connects with TLS: `rediss://` (or `valkeys://`).
pub(crate) fn is_tls_url(url: &str) -> bool {
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    scheme.eq_ignore_ascii_case("rediss") || scheme.eq_ignore_ascii_case("valkeys")
}

/// The node URLs of a comma-separated list, trimmed, without empty entries.
fn split_nodes(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|node| !node.is_empty())
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<Config, Error> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn reads_the_environment() {
        let config = from(&[]).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            Error::NotConfigured.to_string()
        );
        let config = from(&[
            ("REDIS_URL", "redis://:pw@host:1/"),
            ("RATELIMIT_PREFIX", "app:"),
            ("RATELIMIT_CONNECT_TIMEOUT_MS", "100"),
            ("RATELIMIT_RESPONSE_TIMEOUT_MS", "50"),
            ("RATELIMIT_ON_FAILURE", "Deny"),
            ("RATELIMIT_SHADOW", "true"),
            ("REDIS_TLS_CA", "/etc/ca.pem"),
        ])
        .unwrap();
        assert_eq!(config.get_url(), Some("redis://:pw@host:1/"));
        assert_eq!(config.get_prefix(), "app:");
        assert_eq!(config.connect_timeout, Duration::from_millis(100));
        assert_eq!(config.response_timeout, Duration::from_millis(50));
        assert_eq!(config.get_on_failure(), FailurePolicy::Deny);
        assert!(config.is_shadow());
        assert_eq!(config.get_tls_ca_file(), Some(Path::new("/etc/ca.pem")));
        assert!(!format!("{config:?}").contains("pw"));
        assert_eq!(from(&[("REDIS_URL", "")]).unwrap().get_url(), None);
    }

    #[test]
    fn reads_the_cluster_nodes() {
        let config = from(&[(
            "REDIS_CLUSTER_NODES",
            " redis://:pw@a:7000, redis://:pw@b:7001,,",
        )])
        .unwrap();
        assert!(config.is_cluster());
        assert_eq!(
            config.get_cluster_nodes(),
            ["redis://:pw@a:7000", "redis://:pw@b:7001"]
        );
        assert_eq!(
            config.validate().unwrap(),
            Target::Cluster(config.get_cluster_nodes())
        );
        assert_eq!(
            config.masked_target().unwrap(),
            "cluster redis://:****@a:7000,redis://:****@b:7001"
        );
        assert!(!format!("{config:?}").contains("pw"));
        assert_eq!(
            config,
            Config::cluster(["redis://:pw@a:7000", "redis://:pw@b:7001"])
        );
        let both = [
            ("REDIS_URL", "redis://h"),
            ("REDIS_CLUSTER_NODES", "redis://a"),
        ];
        assert!(from(&both).unwrap_err().is_invalid_config());
        let both = Config::new("redis://h").cluster_nodes(["redis://a"]);
        assert!(both.validate().unwrap_err().is_invalid_config());
        let single = Config::new("redis://h");
        assert_eq!(single.validate().unwrap(), Target::Single("redis://h"));
        assert!(!single.is_cluster());
        assert_eq!(single.masked_target().unwrap(), "redis://h");
    }

    #[test]
    fn rejects_invalid_values() {
        for vars in [
            [("RATELIMIT_CONNECT_TIMEOUT_MS", "0")],
            [("RATELIMIT_RESPONSE_TIMEOUT_MS", "fast")],
            [("RATELIMIT_ON_FAILURE", "maybe")],
            [("RATELIMIT_SHADOW", "maybe")],
        ] {
            assert!(from(&vars).unwrap_err().is_invalid_config(), "{vars:?}");
        }
        // A CA file is for TLS only: every URL must be rediss://.
        let plain = Config::new("redis://:pw@h").tls_ca_file("ca.pem");
        let error = plain.validate().unwrap_err();
        assert!(error.is_invalid_config());
        assert!(!error.to_string().contains("pw"), "{error}");
        let mixed = Config::cluster(["rediss://a", "redis://b"]).tls_ca_file("ca.pem");
        assert!(mixed.validate().unwrap_err().is_invalid_config());
        for tls in [
            Config::new("rediss://h").tls_ca_file("ca.pem"),
            Config::cluster(["rediss://a", "REDISS://b"]).tls_ca_file("ca.pem"),
        ] {
            assert!(tls.validate().is_ok(), "{tls:?}");
        }
        let zero = Config::new("redis://h").connect_timeout(Duration::ZERO);
        assert!(zero.validate().unwrap_err().is_invalid_config());
    }
}
