//! Shared pieces of the benchmarks: a `redis-server` with the module (and the floor) on a free
//! port, a small RESP client that pipelines raw commands, our load driver, the table of cases,
//! the noise accounting and the callgrind counts.
//!
//! The benchmarks find the module at `RATELIMIT_MODULE`, or at the root crate's release build
//! (`target/release/libredis_ratelimit.so`, which `make bench` builds first), the floor at
//! `FLOOR_MODULE` or in the bench target directory (see [`floor_module_path`]), and the server
//! at `REDIS_SERVER`, or `redis-server` on the `PATH`.
#![warn(missing_docs)]

pub mod callgrind;
pub mod cases;
pub mod cluster;
pub mod driver;
pub mod hot;
pub mod noise;
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

/// The benchmark-only floor module (`bench/floor`, `FLOOR.INCR`): `FLOOR_MODULE`, or
/// `libratelimit_floor.so` next to the running binary (both are built into the bench workspace's
/// target directory), or in `target/bench/release`. `None` when it was not built: the floor's
/// lines then read "not available in this build".
pub fn floor_module_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("FLOOR_MODULE") {
        return Some(PathBuf::from(path));
    }
    const NAME: &str = "libratelimit_floor.so";
    let beside_binary = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(NAME)));
    // A bench or test binary lives one level deeper, in `deps/`.
    let beside_deps = beside_binary
        .as_ref()
        .and_then(|path| path.parent()?.parent().map(|dir| dir.join(NAME)));
    let default =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench/release/libratelimit_floor.so");
    [beside_binary, beside_deps, Some(default)]
        .into_iter()
        .flatten()
        .find(|path| path.exists())
}

/// How to start a benchmark server.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// A command the server runs under, such as `valgrind --tool=callgrind`: the server binary
    /// and its arguments follow it.
    pub wrapper: Vec<String>,
    /// The core to pin the server to, with `taskset -c`.
    pub cpu: Option<usize>,
    /// Load the floor module too, when it was built.
    pub floor: bool,
    /// A Redis Cluster node (`--cluster-enabled yes`), on a port whose bus port is free too.
    pub cluster: bool,
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
        Server::launch(&Launch::default())
    }

    /// Starts a server with the module, and the floor and a wrapper or a core as `launch` says.
    pub fn launch(launch: &Launch) -> Server {
        let module = module_path();
        assert!(
            module.exists(),
            "the module {} is missing: run `make build` first, or set RATELIMIT_MODULE",
            module.display()
        );
        let binary = server_binary();
        let port = if launch.cluster {
            ratelimit_testkit::free_port(true)
        } else {
            free_port()
        };
        let dir =
            std::env::temp_dir().join(format!("ratelimit-bench-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        // taskset and valgrind both exec what follows them, so the child's pid is the server's.
        let mut line: Vec<String> = Vec::new();
        if let Some(cpu) = launch.cpu {
            line.extend(["taskset".into(), "-c".into(), cpu.to_string()]);
        }
        line.extend(launch.wrapper.iter().cloned());
        line.push(binary.clone());
        line.extend(
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
        if launch.cluster {
            line.extend(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "5000",
                    "--cluster-config-file",
                ]
                .map(String::from),
            );
            line.push(format!("{}/nodes.conf", dir.display()));
        }
        if launch.floor {
            if let Some(floor) = floor_module_path() {
                line.push("--loadmodule".into());
                line.push(floor.to_str().expect("a UTF-8 module path").into());
            }
        }
        let child = Command::new(&line[0])
            .args(&line[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e} (run `make deps`)", line[0]));
        let server = Server { child, port, dir };
        let slow = !launch.wrapper.is_empty();
        let deadline = Instant::now() + Duration::from_secs(if slow { 60 } else { 10 });
        loop {
            if let Ok(mut conn) = resp::Connection::open(port) {
                if conn.command(&["PING"]).is_ok() {
                    return server;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{binary} did not answer on port {port} (started as: {})",
                line.join(" ")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
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

/// The median of `values`; NaN when there are none.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Waits until Redis has finished growing the keyspace's hash tables, at most 10 seconds.
///
/// Redis doubles a dictionary's table incrementally: until every bucket has moved, both tables
/// are allocated, which shows in `used_memory` (8 bytes per bucket of the old table) and costs a
/// step of the move on every lookup. The move ends in the background within a second or so after
/// the last write. `MEMORY STATS` counts the buckets of both tables: a dictionary is done when
/// they are a power of two. Answers whether it saw both dictionaries done.
pub fn wait_for_rehash(conn: &mut resp::Connection) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match rehashing(conn) {
            Some(false) => return true,
            Some(true) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Some(true) => return false,
            None => {
                // Not readable here (another server, or another layout): give the background
                // move its usual time.
                std::thread::sleep(Duration::from_secs(1));
                return false;
            }
        }
    }
}

/// Whether db 0's main or expires dictionary is being moved to a larger table; `None` when
/// `MEMORY STATS` cannot tell.
fn rehashing(conn: &mut resp::Connection) -> Option<bool> {
    let keyspace = conn.info("keyspace").ok()?;
    let (keys, expires) = match keyspace.iter().find(|(name, _)| name == "db0") {
        // keys=10,expires=10,avg_ttl=0
        Some((_, value)) => {
            let field = |name: &str| -> Option<u64> {
                value
                    .split(',')
                    .find_map(|part| part.strip_prefix(name)?.strip_prefix('='))?
                    .parse()
                    .ok()
            };
            (field("keys")?, field("expires")?)
        }
        None => return Some(false),
    };
    let stats = match conn.command(&["MEMORY", "STATS"]).ok()? {
        resp::Reply::Array(Some(stats)) => stats,
        _ => return None,
    };
    let db = stats
        .chunks(2)
        .find(|pair| pair[0].text().as_deref() == Some("db.0"))
        .and_then(|pair| match pair.get(1) {
            Some(resp::Reply::Array(Some(fields))) => Some(fields.clone()),
            _ => None,
        })?;
    let field = |name: &str| -> Option<u64> {
        db.chunks(2)
            .find(|pair| pair[0].text().as_deref() == Some(name))
            .and_then(|pair| pair.get(1)?.integer())
            .and_then(|n| u64::try_from(n).ok())
    };
    // Redis 7.0's accounting: the main dictionary counts an entry (24 bytes), a key object (16)
    // and 8 bytes per bucket; the expires dictionary an entry and 8 bytes per bucket.
    let main_buckets = field("overhead.hashtable.main")?.checked_sub(keys * 40)? / 8;
    let expires_buckets = field("overhead.hashtable.expires")?.checked_sub(expires * 24)? / 8;
    let moving = |buckets: u64| buckets != 0 && !buckets.is_power_of_two();
    Some(moving(main_buckets) || moving(expires_buckets))
}
