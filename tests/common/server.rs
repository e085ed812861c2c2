//! The server under test: a real `redis-server` (or `REDIS_SERVER`) with the module loaded, on
//! a free loopback port, in its own temporary directory; killed and cleaned up on `Drop`. In
//! REDIS_URL mode, the server at that URL instead (see `external.rs`).

use super::external::{self, Address, Lease};
use super::resp::{RawConn, Reply};
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// How long a server gets to answer PING after it is spawned (or to finish loading its AOF).
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Read timeout of every connection, so that a hung server fails the test instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// The module under test: `RATELIMIT_MODULE`, or the release build in this workspace.
pub fn module_path() -> PathBuf {
    match std::env::var_os("RATELIMIT_MODULE") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/libredis_ratelimit.so"),
    }
}

/// The server binary: `REDIS_SERVER`, or `redis-server` from the `PATH`.
pub fn server_binary() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_string())
}

/// Panics with instructions when the module has not been built; warns when it looks older than
/// the sources, since `cargo test` does not rebuild a cdylib that no test links against.
fn require_module() -> PathBuf {
    let module = module_path();
    let built = match fs::metadata(&module).and_then(|m| m.modified()) {
        Ok(time) => time,
        Err(_) => panic!(
            "the module {} does not exist: run `cargo build --release` (or `make build`) first, \
             or point RATELIMIT_MODULE at a built module",
            module.display()
        ),
    };
    if std::env::var_os("RATELIMIT_MODULE").is_none() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let newest = [root.join("src"), root.join("core/src")]
            .iter()
            .filter_map(|dir| newest_file(dir))
            .max();
        if newest.is_some_and(|newest| newest > built) {
            eprintln!(
                "warning: {} is older than the sources; run `cargo build --release` to test the \
                 current code",
                module.display()
            );
        }
    }
    module
}

fn newest_file(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let time = if path.is_dir() {
            newest_file(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(time);
    }
    newest
}

/// A running server with the module loaded. Killed, and its directory removed, on `Drop`; in
/// REDIS_URL mode, emptied instead.
pub struct Server {
    child: Option<Child>,
    host: String,
    port: u16,
    root: PathBuf,
    extra: Vec<String>,
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
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let module = require_module();
        let root = std::env::temp_dir().join(format!(
            "redis-ratelimit-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("data")).expect("create the server's directory");
        let mut server = Server {
            child: None,
            host: "127.0.0.1".to_string(),
            port: 0,
            root,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            external: None,
        };
        // A cluster node also listens on its bus port, `port + 10000`: both must be free.
        let cluster_bus = server.has_option("--cluster-enabled");
        // Another process may take the port between our probe and the server's bind: retry.
        let mut last_error = String::new();
        for _ in 0..5 {
            server.port = free_port(cluster_bus);
            match server.spawn(&module) {
                Ok(()) => return server,
                Err(error) if error.contains("Address already in use") => last_error = error,
                Err(error) => panic!("{error}"),
            }
        }
        panic!("{last_error}");
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
            child: None,
            host: address.host,
            port: address.port,
            root: PathBuf::new(),
            extra: Vec::new(),
            external: Some(lease),
        }
    }

    /// Whether this is REDIS_URL's server, which the test shares with the rest of the suite
    /// (one test at a time) and cannot restart, reconfigure or read the files of.
    pub fn is_external(&self) -> bool {
        self.external.is_some()
    }

    /// Panics when the server is external, for what only a server of the test's own can do.
    fn assert_own(&self, what: &str) {
        assert!(
            !self.is_external(),
            "{what} needs a server of this test's own, not REDIS_URL's: begin the test with \
             skip_if_external!(\"<why>\")"
        );
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
        self.assert_own("reading the server's files");
        self.root.join("data")
    }

    /// The server's log.
    pub fn log(&self) -> String {
        if self.is_external() {
            return "(the server at REDIS_URL writes its log elsewhere, e.g. `docker logs`)"
                .to_string();
        }
        let mut text = fs::read_to_string(self.root.join("server.log")).unwrap_or_default();
        let stdio = fs::read_to_string(self.root.join("stdio.log")).unwrap_or_default();
        if !stdio.trim().is_empty() {
            text.push_str("\n--- stdout/stderr ---\n");
            text.push_str(&stdio);
        }
        text
    }

    /// Kills the server (SIGKILL: nothing is flushed at exit) and starts it again on the same
    /// port, in the same directory, with the same options; waits until it has loaded its data.
    pub fn restart(&mut self) {
        self.assert_own("restarting the server");
        self.kill();
        let module = require_module();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn(&module) {
                Ok(()) => return,
                Err(error)
                    if error.contains("Address already in use") && Instant::now() < deadline =>
                {
                    thread::sleep(Duration::from_millis(50))
                }
                Err(error) => panic!("{error}"),
            }
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether `name` (e.g. `--cluster-enabled`) is among the options given at start.
    fn has_option(&self, name: &str) -> bool {
        self.extra.iter().any(|a| a.eq_ignore_ascii_case(name))
    }

    fn spawn(&mut self, module: &Path) -> Result<(), String> {
        let has = |name: &str| self.has_option(name);
        let mut command = Command::new(server_binary());
        command.arg("--port").arg(self.port.to_string());
        command.args(["--bind", "127.0.0.1"]);
        if !has("--save") {
            command.args(["--save", ""]);
        }
        if !has("--appendonly") {
            command.args(["--appendonly", "no"]);
        }
        command.arg("--dir").arg(self.data_dir());
        command.arg("--logfile").arg(self.root.join("server.log"));
        if has("--cluster-enabled") && !has("--cluster-config-file") {
            command
                .arg("--cluster-config-file")
                .arg(self.root.join("nodes.conf"));
        }
        command.arg("--loadmodule").arg(module);
        command.args(&self.extra);
        let stdio = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("stdio.log"))
            .map_err(|e| format!("cannot create the server's log: {e}"))?;
        command
            .stdin(Stdio::null())
            .stdout(stdio.try_clone().map_err(|e| e.to_string())?)
            .stderr(stdio);
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // The server dies with the test thread that started it, even if the test binary is
            // killed and no `Drop` runs.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        let child = command.spawn().map_err(|e| {
            format!(
                "cannot run the server binary `{}` ({e}); install redis-server or set REDIS_SERVER",
                server_binary()
            )
        })?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "{} exited ({status}) before answering PING; its log:\n{}",
                    server_binary(),
                    self.log()
                ));
            }
            if let Ok(mut conn) = RawConn::connect(&self.host, self.port) {
                // A server still loading its data answers -LOADING: keep waiting.
                if let Ok(Reply::Status(pong)) = conn.try_call(&["PING"]) {
                    if pong == b"PONG" {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "{} did not answer PING within {START_TIMEOUT:?}; its log:\n{}",
                    server_binary(),
                    self.log()
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
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

impl Drop for Server {
    fn drop(&mut self) {
        if self.is_external() {
            return;
        }
        if thread::panicking() && self.child.is_some() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!(
                "--- last lines of the log of the server on port {} ---",
                self.port
            );
            eprintln!("{}", tail.join("\n"));
        }
        self.kill();
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// A free loopback port; with `cluster_bus`, one whose bus port `port + 10000` is free too.
fn free_port(cluster_bus: bool) -> u16 {
    for _ in 0..1000 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
        let port = listener.local_addr().unwrap().port();
        if !cluster_bus {
            return port;
        }
        let bus_free = port
            .checked_add(10000)
            .is_some_and(|bus| TcpListener::bind(("127.0.0.1", bus)).is_ok());
        if bus_free {
            return port;
        }
    }
    panic!("found no free loopback port whose cluster bus port (+10000) is free too");
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
