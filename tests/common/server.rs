//! The server under test: a real `redis-server` (or `REDIS_SERVER`) with the module loaded, on
//! a free loopback port, in its own temporary directory; killed and cleaned up on `Drop`. In
//! REDIS_URL mode, the server at that URL instead (see `external.rs`).

use super::external::{self, Address, Lease};
use super::resp::RawConn;
use ratelimit_testkit::server::START_TIMEOUT;
#[allow(unused_imports)]
pub use ratelimit_testkit::{module_path, server_binary};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// Read timeout of every connection, so that a hung server fails the test instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// A running server with the module loaded: a [`ratelimit_testkit::Server`], killed, and its
/// directory removed, on `Drop`; in REDIS_URL mode, the external server, emptied instead.
pub struct Server {
    /// The process, unless the server is external.
    process: Option<ratelimit_testkit::Server>,
    host: String,
    port: u16,
    /// REDIS_URL mode: this test's turn on the external server, which is never killed.
    external: Option<Lease>,
}

impl Server {
    /// Starts a server with the default options. In REDIS_URL mode: the server at that URL, once
    /// no other test is using it and after checking that it is usable and empty.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts a server with extra command-line options, e.g.
    /// `&["--appendonly", "yes", "--appendfsync", "always"]`. An option given here replaces the
    /// harness's default for it. In REDIS_URL mode, `extra` must be empty: a test that needs
    /// options begins with `skip_if_external!`.
    pub fn start_with(extra: &[&str]) -> Server {
        if let Some(address) = external::address() {
            return Server::external(address, extra);
        }
        let process = ratelimit_testkit::Server::start("redis-ratelimit-test", true, extra);
        Server {
            host: "127.0.0.1".to_string(),
            port: process.port(),
            process: Some(process),
            external: None,
        }
    }

    /// Starts a server *without* the module, with extra command-line options, for tests that
    /// load it with `MODULE LOAD`. Panics in REDIS_URL mode: such a test begins with
    /// `skip_if_external!`.
    pub fn start_without_module(extra: &[&str]) -> Server {
        assert!(
            !external::is_set(),
            "a server without the module needs a server of this test's own: begin the test with \
             skip_if_external!(\"<why>\")"
        );
        let process = ratelimit_testkit::Server::start("redis-ratelimit-test", false, extra);
        Server {
            host: "127.0.0.1".to_string(),
            port: process.port(),
            process: Some(process),
            external: None,
        }
    }

    /// The options that let a client run `MODULE LOAD` and `MODULE UNLOAD`:
    /// `--enable-module-command yes` where the server knows that option (Redis 7+, Valkey),
    /// none where it always allows them (6.2). Found once, by asking a server without the module.
    pub fn module_command_options() -> &'static [&'static str] {
        static OPTIONS: OnceLock<&'static [&'static str]> = OnceLock::new();
        OPTIONS.get_or_init(|| {
            let probe = Server::start_without_module(&[]);
            let reply: Vec<String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg("enable-module-command")
                .query(&mut probe.con())
                .expect("CONFIG GET enable-module-command");
            if reply.is_empty() {
                &[]
            } else {
                &["--enable-module-command", "yes"]
            }
        })
    }

    /// REDIS_URL's server, for this test alone.
    fn external(address: Address, extra: &[&str]) -> Server {
        assert!(
            extra.is_empty(),
            "this test starts a server with {extra:?}, which REDIS_URL mode cannot give it: \
             begin the test with skip_if_external!(\"<why>\")"
        );
        let lease = external::claim(&address);
        Server {
            process: None,
            host: address.host,
            port: address.port,
            external: Some(lease),
        }
    }

    /// Whether this is REDIS_URL's server, which the test shares with the rest of the suite
    /// (one test at a time) and cannot restart, reconfigure or read the files of.
    pub fn is_external(&self) -> bool {
        self.external.is_some()
    }

    /// The process, for what only a server of the test's own can do; panics when the server is
    /// external.
    fn own(&self, what: &str) -> &ratelimit_testkit::Server {
        self.process.as_ref().unwrap_or_else(|| {
            panic!(
                "{what} needs a server of this test's own, not REDIS_URL's: begin the test with \
                 skip_if_external!(\"<why>\")"
            )
        })
    }

    /// Starts a replica of `master` and waits until its link to the master is up.
    pub fn start_replica_of(master: &Server, extra: &[&str]) -> Server {
        let port = master.port().to_string();
        let mut args = vec!["--replicaof", "127.0.0.1", port.as_str()];
        args.extend_from_slice(extra);
        let replica = Server::start_with(&args);
        replica.wait_for_master_link();
        replica
    }

    /// The server's port (on 127.0.0.1, unless it is external).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's working directory (`--dir`): its AOF and RDB files live here.
    pub fn data_dir(&self) -> PathBuf {
        self.own("reading the server's files").data_dir()
    }

    /// The server's log.
    pub fn log(&self) -> String {
        match &self.process {
            Some(process) => process.log(),
            None => {
                "(the server at REDIS_URL writes its log elsewhere, e.g. `docker logs`)".to_string()
            }
        }
    }

    /// Kills the server (SIGKILL: nothing is flushed at exit) and starts it again on the same
    /// port, in the same directory, with the same options; waits until it has loaded its data.
    pub fn restart(&mut self) {
        self.own("restarting the server");
        self.process.as_mut().unwrap().restart();
    }

    /// Kills the server with SIGKILL, as a crash would, and leaves it dead (nothing is flushed
    /// at exit); its directory is removed on `Drop`.
    pub fn kill(&mut self) {
        self.own("killing the server");
        self.process.as_mut().unwrap().kill();
    }

    /// Waits until this replica's link to its master is up and the initial sync is done.
    pub fn wait_for_master_link(&self) {
        let mut con = self.con();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut con)
                .unwrap();
            if info.lines().any(|l| l.trim() == "master_link_status:up")
                && !info
                    .lines()
                    .any(|l| l.trim() == "master_sync_in_progress:1")
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the replica's link to its master is not up after {START_TIMEOUT:?}:\n{info}\n\
                 replica log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The URL of this server for the `redis` crate.
    pub fn url(&self) -> String {
        if self.host.contains(':') {
            format!("redis://[{}]:{}/", self.host, self.port)
        } else {
            format!("redis://{}:{}/", self.host, self.port)
        }
    }

    /// A RESP2 connection through the `redis` crate.
    pub fn con(&self) -> redis::Connection {
        connect(&self.url())
    }

    /// A RESP3 connection through the `redis` crate (it sends `HELLO 3`).
    pub fn con_resp3(&self) -> redis::Connection {
        connect(&format!("{}?protocol=resp3", self.url()))
    }

    /// A raw RESP2 connection, for pipelines and binary error messages.
    pub fn raw(&self) -> RawConn {
        RawConn::connect(&self.host, self.port).expect("connect to the server")
    }
}

fn connect(url: &str) -> redis::Connection {
    let client = redis::Client::open(url).expect("a valid URL");
    let con = client
        .get_connection_with_timeout(IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    con.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    con.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    con
}
