//! The client's test harness: a real `redis-server` on a free loopback port, with or without the
//! module, in its own temporary directory; it can be killed and started again on the same port,
//! and it is killed on `Drop`.
//!
//! Environment: `REDIS_SERVER` (default `redis-server`) and `RATELIMIT_MODULE` (default the
//! release build of this workspace: run `cargo build --release` first).
#![allow(dead_code)]

pub mod cluster;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The module: `RATELIMIT_MODULE`, or `target/release/libredis_ratelimit.so` of the workspace.
pub fn module_path() -> PathBuf {
    match std::env::var_os("RATELIMIT_MODULE") {
        Some(path) => PathBuf::from(path),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
            target.join("release/libredis_ratelimit.so")
        }
    }
}

/// The server binary: `REDIS_SERVER`, or `redis-server`.
pub fn server_binary() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_string())
}

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
    free_port()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
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
}

/// A running server. Killed, and its directory removed, on `Drop`.
pub struct Server {
    child: Option<Child>,
    port: u16,
    root: PathBuf,
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
        static NEXT: AtomicU32 = AtomicU32::new(0);
        if options.module {
            assert!(
                module_path().exists(),
                "{} does not exist: run `cargo build --release` or set RATELIMIT_MODULE",
                module_path().display()
            );
        }
        let root = std::env::temp_dir().join(format!(
            "ratelimit-client-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).expect("create the server's directory");
        let mut server = Server {
            child: None,
            port: 0,
            root,
            options,
        };
        // Another process may take the port between the probe and the bind: retry.
        let mut last_error = String::new();
        for _ in 0..5 {
            server.port = free_port();
            match server.spawn() {
                Ok(()) => return server,
                Err(error) => last_error = error,
            }
        }
        panic!("cannot start the server: {last_error}");
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's URL, with its password if it has one.
    pub fn url(&self) -> String {
        match &self.options.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}/", self.port),
            None => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    /// A connection of the test's own, outside the store under test.
    pub async fn con(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test server")
    }

    /// Kills the server (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the killed server again on the same port, with the same options and no data.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(error) if Instant::now() < deadline => {
                    eprintln!("restart failed, retrying: {error}");
                    thread::sleep(Duration::from_millis(50));
                }
                Err(error) => panic!("cannot restart the server: {error}"),
            }
        }
    }

    /// Starts the killed server again on the same port with other options, e.g. without the
    /// module.
    pub fn restart_with(&mut self, options: Options) {
        self.options = options;
        self.restart();
    }

    /// The server's log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.root.join("server.log")).unwrap_or_default()
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut command = Command::new(server_binary());
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.root)
            .arg("--logfile")
            .arg(self.root.join("server.log"));
        if let Some(password) = &self.options.password {
            command.args(["--requirepass", password]);
        }
        if self.options.module_command && server_major_version() >= 7 {
            command.args(["--enable-module-command", "yes"]);
        }
        if self.options.module {
            command.arg("--loadmodule").arg(module_path());
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command
            .spawn()
            .map_err(|e| format!("cannot run `{}`: {e}", server_binary()))?;
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
                return Err(format!("the server exited ({status}): {}", self.log()));
            }
            if ping(self.port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!("no answer to PING: {}", self.log()));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Whether a server answers on `port`: `+PONG`, or `-NOAUTH` when it wants a password.
fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    match stream.read(&mut reply) {
        Ok(n) => reply[..n].starts_with(b"+PONG") || reply[..n].starts_with(b"-NOAUTH"),
        Err(_) => false,
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
