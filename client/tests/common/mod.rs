//! The client's test harness: a real `redis-server` on a free loopback port, with or without the
//! module, in its own temporary directory; it can be killed and started again on the same port,
//! and it is killed on `Drop`.
//!
//! Environment: `REDIS_SERVER` (default `redis-server`) and `RATELIMIT_MODULE` (default the
//! release build of this workspace: run `cargo build --release` first).
#![allow(dead_code)]

pub mod cluster;
pub mod http;

#[allow(unused_imports)]
pub use ratelimit_testkit::module_path;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The server binary: `REDIS_SERVER`, or `redis-server`.
pub use ratelimit_testkit::server_binary;

/// The server's major version, from `--version` (`... v=7.0.15 ...`).
fn server_major_version() -> u32 {
    static VERSION: OnceLock<u32> = OnceLock::new();
    *VERSION.get_or_init(|| {
        let output = Command::new(server_binary())
            .arg("--version")
            .output()
            .expect("run the server binary with --version");
        let text = String::from_utf8_lossy(&output.stdout);
        text.split_whitespace()
            .find_map(|word| word.strip_prefix("v="))
            .and_then(|version| version.split('.').next()?.parse().ok())
            .unwrap_or(0)
    })
}

/// A port on which nothing listens.
pub fn closed_port() -> u16 {
    ratelimit_testkit::free_port(false)
}

/// A store for `config` that Redis has answered: the backend is detected.
pub async fn connected(config: ratelimit_client::Config) -> ratelimit_client::RedisStore {
    let store = ratelimit_client::RedisStore::new(config).expect("a valid configuration");
    store.ping().await.expect("Redis answers");
    store
}

/// The binary of this package's example `name`, built with `features` when it is missing or
/// older than the sources (see [`ratelimit_testkit::example::binary`]).
pub fn example(name: &str, features: &[&str]) -> PathBuf {
    let client = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sources = [
        client.join("src"),
        client.join("examples"),
        client.join("lua"),
        client.join("../core/src"),
    ];
    ratelimit_testkit::example::binary("ratelimit-client", name, features, &sources)
}

/// Options for a server.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Load the module.
    pub module: bool,
    /// `--requirepass`.
    pub password: Option<String>,
    /// Allow `MODULE LOAD`/`UNLOAD` at run time (Redis 7 refuses them by default).
    pub module_command: bool,
    /// An append-only file synced on every write, so that keys survive a restart.
    pub persistent: bool,
}

impl Options {
    /// The server's command-line options besides the module.
    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(password) = &self.password {
            args.extend(["--requirepass".to_string(), password.clone()]);
        }
        if self.module_command && server_major_version() >= 7 {
            args.extend(["--enable-module-command", "yes"].map(String::from));
        }
        if self.persistent {
            args.extend(["--appendonly", "yes", "--appendfsync", "always"].map(String::from));
        }
        args
    }
}

/// A running server: a [`ratelimit_testkit::Server`]. Killed, and its directory removed, on
/// `Drop`.
pub struct Server {
    process: ratelimit_testkit::Server,
    options: Options,
}

impl Server {
    /// A server with the module (`true`) or without it.
    pub fn start(module: bool) -> Server {
        Server::start_with(Options {
            module,
            ..Options::default()
        })
    }

    /// A server with `options`.
    pub fn start_with(options: Options) -> Server {
        let process = ratelimit_testkit::Server::start(
            "ratelimit-client-test",
            options.module,
            &options.args(),
        );
        Server { process, options }
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.process.port()
    }

    /// The server's URL, with its password if it has one.
    pub fn url(&self) -> String {
        ratelimit_testkit::local_url(self.port(), self.options.password.as_deref())
    }

    /// A connection of the test's own, outside the store under test.
    pub async fn con(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection_with_config(&patient())
            .await
            .expect("connect to the test server")
    }

    /// Kills the server (SIGKILL).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the killed server again on the same port, with the same options and no data.
    pub fn restart(&mut self) {
        self.process.restart();
    }

    /// Starts the killed server again on the same port with other options, e.g. without the
    /// module.
    pub fn restart_with(&mut self, options: Options) {
        self.process.restart_with(options.module, &options.args());
        self.options = options;
    }

    /// The server's log.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// Waits, polling `condition` every 10 ms, until it holds; panics with `what` after 10 s. For
/// bounded waits, never for timing assertions.
pub async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The calls of `command` (`evalsha`, `ratelimit.mcheck`, `script|load`) that the server has
/// counted in `INFO commandstats`; 0 when it was never called.
pub async fn command_calls(con: &mut redis::aio::MultiplexedConnection, command: &str) -> u64 {
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(con)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    stats
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

/// The test connections' settings: a response timeout far above any command's time, so that a
/// loaded machine slows the tests down but never fails them (the `redis` crate's default is
/// 500 ms).
pub fn patient() -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(std::time::Duration::from_secs(60)))
        .set_connection_timeout(Some(std::time::Duration::from_secs(10)))
}
