//! Shared pieces of the benchmarks: a `redis-server` with the module on a free port, and a small
//! RESP client that pipelines raw commands, for the drivers and the reports.
//!
//! The benchmarks find the module at `RATELIMIT_MODULE`, or at the root crate's release build
//! (`target/release/libredis_ratelimit.so`, which `make bench` builds first), and the server at
//! `REDIS_SERVER`, or `redis-server` on the `PATH`.
#![warn(missing_docs)]

pub mod driver;
pub mod overhead;
pub mod resp;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The module under benchmark: `RATELIMIT_MODULE`, or the workspace's release build.
pub fn module_path() -> PathBuf {
    match std::env::var_os("RATELIMIT_MODULE") {
        Some(path) => PathBuf::from(path),
        None => {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/libredis_ratelimit.so")
        }
    }
}

/// The `redis-server` binary: `REDIS_SERVER`, or the one on the `PATH`.
pub fn server_binary() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

/// A `redis-server` with the module loaded, on a free loopback port, with persistence off: no
/// RDB, no AOF, no replica. Shut down on drop.
pub struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Server {
    /// Starts a server with the module. Panics, naming what is missing, when the module or the
    /// server cannot be found or the server does not answer within 10 seconds.
    pub fn start() -> Server {
        Server::start_with(&server_binary(), &[])
    }

    /// Starts `binary` with the module and the extra arguments `extra` (prefixed by
    /// `valgrind ...` in `wrapper` when profiling).
    pub fn start_with(binary: &str, wrapper: &[&str]) -> Server {
        let module = module_path();
        assert!(
            module.exists(),
            "the module {} is missing: run `make build` first, or set RATELIMIT_MODULE",
            module.display()
        );
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("ratelimit-bench-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let (program, mut args): (&str, Vec<String>) = match wrapper.split_first() {
            Some((first, rest)) => (first, rest.iter().map(|s| s.to_string()).collect()),
            None => (binary, Vec::new()),
        };
        if !wrapper.is_empty() {
            args.push(binary.to_string());
        }
        args.extend(
            [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                dir.to_str().expect("a UTF-8 temporary directory"),
                "--loadmodule",
                module.to_str().expect("a UTF-8 module path"),
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        let child = Command::new(program)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e} (run `make deps`)"));
        let server = Server { child, port, dir };
        let deadline =
            Instant::now() + Duration::from_secs(if wrapper.is_empty() { 10 } else { 60 });
        loop {
            if let Ok(mut conn) = resp::Connection::open(port) {
                if conn.command(&["PING"]).is_ok() {
                    return server;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{binary} did not answer on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The port it listens on, at 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A new connection to it.
    pub fn connect(&self) -> resp::Connection {
        resp::Connection::open(self.port).expect("a connection to the benchmark server")
    }

    /// Asks the server to shut down and waits for it; kills it if it does not stop.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Ok(mut conn) = resp::Connection::open(self.port) {
            let _ = conn.send(&[&["SHUTDOWN", "NOSAVE"]]);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.shutdown();
        }
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// Prints a progress line to stderr at once.
pub fn progress(line: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "bench: {line}");
}
