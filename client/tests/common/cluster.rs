//! A Redis Cluster for the client's tests: three masters with one replica each, six
//! `redis-server --cluster-enabled yes` processes on loopback ports (each with its bus port,
//! +10000, free too), with or without the module, joined by
//! `redis-cli --cluster create ... --cluster-replicas 1`. Every node is killed and its directory
//! removed when the [`Cluster`] is dropped.
//!
//! With a password, every node requires it (`--requirepass`) and replicas use it to reach their
//! master (`--masterauth`).
//!
//! Environment, besides `REDIS_SERVER` and `RATELIMIT_MODULE`: `REDIS_CLI` (default
//! `redis-cli`).

use super::{module_path, server_binary};
use redis::aio::MultiplexedConnection;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// The number of hash slots.
pub const SLOTS: u16 = 16384;
/// How long the cluster gets to settle after a change: creation, failover, slot move.
const STABLE_TIMEOUT: Duration = Duration::from_secs(30);
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The CLI: `REDIS_CLI`, or `redis-cli`.
pub fn cli_binary() -> String {
    std::env::var("REDIS_CLI").unwrap_or_else(|_| "redis-cli".to_string())
}

/// A loopback port that is free, and whose cluster bus port (+10000) is free too.
fn free_cluster_port() -> u16 {
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        if port <= u16::MAX - 10000 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
    panic!("no free port with a free bus port");
}

/// One node's process.
pub struct Node {
    child: Option<Child>,
    port: u16,
    root: PathBuf,
    password: Option<String>,
}

impl Node {
    fn start(module: bool, password: Option<&str>) -> Node {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let root = std::env::temp_dir().join(format!(
            "ratelimit-client-cluster-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).expect("create the node's directory");
        let mut node = Node {
            child: None,
            port: 0,
            root,
            password: password.map(String::from),
        };
        let mut last_error = String::new();
        for _ in 0..5 {
            node.port = free_cluster_port();
            match node.spawn(module) {
                Ok(()) => return node,
                Err(error) => last_error = error,
            }
        }
        panic!("cannot start a cluster node: {last_error}");
    }

    fn spawn(&mut self, module: bool) -> Result<(), String> {
        let _ = fs::remove_file(self.root.join("nodes.conf"));
        let mut command = Command::new(server_binary());
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
            // A replica's first sync starts at once, not after the default 5 s delay.
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(&self.root)
            .arg("--logfile")
            .arg(self.root.join("server.log"));
        if let Some(password) = &self.password {
            command.args(["--requirepass", password, "--masterauth", password]);
        }
        if module {
            assert!(
                module_path().exists(),
                "{} does not exist: run `cargo build --release` or set RATELIMIT_MODULE",
                module_path().display()
            );
            command.arg("--loadmodule").arg(module_path());
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run `{}`: {e}", server_binary()))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!("the node exited ({status}): {}", self.log()));
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

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The node's URL, with the password if there is one.
    pub fn url(&self) -> String {
        node_url(self.port, self.password.as_deref())
    }

    /// The node's log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.root.join("server.log")).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    matches!(stream.read(&mut reply),
        Ok(n) if reply[..n].starts_with(b"+PONG") || reply[..n].starts_with(b"-NOAUTH"))
}

fn node_url(port: u16, password: Option<&str>) -> String {
    match password {
        Some(password) => format!("redis://:{password}@127.0.0.1:{port}/"),
        None => format!("redis://127.0.0.1:{port}/"),
    }
}

/// `command` on `con`, panicking with the command on an error.
pub async fn call<T: redis::FromRedisValue>(con: &mut MultiplexedConnection, args: &[&str]) -> T {
    redis::cmd(args[0])
        .arg(&args[1..])
        .query_async(con)
        .await
        .unwrap_or_else(|e| panic!("{} failed: {e}", args.join(" ")))
}

/// The value of `field` in an `INFO`-like reply of `args`.
async fn info_field(con: &mut MultiplexedConnection, args: &[&str], field: &str) -> Option<String> {
    let text: String = redis::cmd(args[0])
        .arg(&args[1..])
        .query_async(con)
        .await
        .ok()?;
    text.lines()
        .find_map(|line| line.trim().strip_prefix(&format!("{field}:")))
        .map(str::to_string)
}

/// The hash slot of `key`: CRC16 (XMODEM) of the key, or of its `{hash tag}`, modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    let mut crc: u16 = 0;
    for &byte in hashed {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % SLOTS
}

/// For every slot, a hash tag `<prefix><n>` that maps to it: `tags[slot]`, for keys such as
/// `{tag}:search`.
pub fn slot_tags(prefix: &str) -> Vec<String> {
    let mut tags = vec![String::new(); usize::from(SLOTS)];
    let mut missing = usize::from(SLOTS);
    let mut n = 0u64;
    while missing > 0 {
        let tag = format!("{prefix}{n}");
        let slot = usize::from(key_slot(tag.as_bytes()));
        if tags[slot].is_empty() {
            tags[slot] = tag;
            missing -= 1;
        }
        n += 1;
    }
    tags
}

/// One master's share of the cluster, as `CLUSTER NODES` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub master: u16,
    pub master_id: String,
    pub replicas: Vec<u16>,
    pub ranges: Vec<(u16, u16)>,
}

impl Shard {
    pub fn owns(&self, slot: u16) -> bool {
        self.ranges.iter().any(|&(a, b)| (a..=b).contains(&slot))
    }
}

/// The cluster as one node sees it, one shard per master with slots, sorted by port. An error
/// when a node is flagged failing or in handshake: the view is not settled.
pub async fn topology(con: &mut MultiplexedConnection) -> Result<Vec<Shard>, String> {
    let text: String = call(con, &["CLUSTER", "NODES"]).await;
    // (id, port, master id or "-", slot ranges), one per node.
    let mut nodes = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let Some(flag) = fields[2]
            .split(',')
            .find(|f| ["fail", "fail?", "handshake", "noaddr"].contains(f))
        {
            return Err(format!("a node is flagged {flag}: {line}"));
        }
        let port: u16 = fields[1]
            .split(['@', ','])
            .next()
            .and_then(|address| address.rsplit(':').next())
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line}"));
        // A slot being moved shows as `[slot->-id]` too; its owner is in the plain ranges.
        let ranges: Vec<(u16, u16)> = fields[8..]
            .iter()
            .filter(|f| !f.starts_with('['))
            .map(|range| {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                (a.parse().unwrap(), b.parse().unwrap())
            })
            .collect();
        nodes.push((fields[0].to_string(), port, fields[3].to_string(), ranges));
    }
    let mut shards: Vec<Shard> = nodes
        .iter()
        .filter(|(_, _, master, ranges)| master == "-" && !ranges.is_empty())
        .map(|(id, port, _, ranges)| {
            let mut replicas: Vec<u16> = nodes
                .iter()
                .filter(|(_, _, master, _)| master == id)
                .map(|(_, port, _, _)| *port)
                .collect();
            replicas.sort();
            let mut ranges = ranges.clone();
            ranges.sort();
            Shard {
                master: *port,
                master_id: id.clone(),
                replicas,
                ranges,
            }
        })
        .collect();
    shards.sort_by_key(|s| s.master);
    Ok(shards)
}

/// Three masters with one replica each.
pub struct Cluster {
    nodes: Vec<Node>,
    password: Option<String>,
}

impl Cluster {
    /// Starts six nodes, with the module on each (`module`) or on none, and `password` on each
    /// if any; creates the cluster and waits until it is stable.
    pub async fn start(module: bool, password: Option<&str>) -> Cluster {
        let nodes: Vec<Node> = (0..6).map(|_| Node::start(module, password)).collect();
        let mut args: Vec<String> = Vec::new();
        if let Some(password) = password {
            args.extend(["-a", password, "--no-auth-warning"].map(String::from));
        }
        args.extend(["--cluster".into(), "create".into()]);
        args.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())));
        args.extend(["--cluster-replicas", "1", "--cluster-yes"].map(String::from));
        let cluster = Cluster {
            nodes,
            password: password.map(String::from),
        };
        let output = Command::new(cli_binary())
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run `{}` ({e}); set REDIS_CLI", cli_binary()));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("All 16384 slots covered"),
            "`redis-cli {}` failed:\n{stdout}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        cluster.wait_until_stable().await;
        cluster
    }

    /// The URLs of every node, masters and replicas, with the password if there is one.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    /// The password every node requires, if any.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The port of every node, masters and replicas.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(Node::port).collect()
    }

    /// A plain connection of the test's own to the node on `port`: no redirection followed.
    pub async fn con(&self, port: u16) -> MultiplexedConnection {
        redis::Client::open(node_url(port, self.password.as_deref()))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("connect to the node on {port}: {e}"))
    }

    /// The node on `port`.
    pub fn node(&self, port: u16) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no node on port {port}"))
    }

    /// The shards as the first node sees them; call [`Cluster::wait_until_stable`] after a
    /// change.
    pub async fn shards(&self) -> Vec<Shard> {
        topology(&mut self.con(self.nodes[0].port()).await)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The shard whose master owns `slot`.
    pub async fn shard_of_slot(&self, slot: u16) -> Shard {
        self.shards()
            .await
            .into_iter()
            .find(|s| s.owns(slot))
            .unwrap_or_else(|| panic!("no master owns slot {slot}"))
    }

    /// Waits until every node answers `cluster_state:ok` and the same slot map, with three
    /// masters covering all slots, one replica each, and each replica in sync with its master.
    pub async fn wait_until_stable(&self) {
        let deadline = Instant::now() + STABLE_TIMEOUT;
        while let Some(reason) = self.unstable_reason().await {
            assert!(
                Instant::now() < deadline,
                "the cluster is not stable after {STABLE_TIMEOUT:?}: {reason}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn unstable_reason(&self) -> Option<String> {
        let mut first: Option<Vec<Shard>> = None;
        for node in &self.nodes {
            let mut con = self.con(node.port()).await;
            let state = info_field(&mut con, &["CLUSTER", "INFO"], "cluster_state").await;
            if state.as_deref() != Some("ok") {
                return Some(format!("node {}: cluster_state {state:?}", node.port()));
            }
            let shards = match topology(&mut con).await {
                Ok(shards) => shards,
                Err(reason) => return Some(format!("node {}: {reason}", node.port())),
            };
            match &first {
                None => first = Some(shards),
                Some(seen) if *seen != shards => {
                    return Some(format!(
                        "node {} sees {shards:?}, another {seen:?}",
                        node.port()
                    ))
                }
                Some(_) => {}
            }
        }
        let shards = first.unwrap();
        let covered: u32 = shards
            .iter()
            .flat_map(|s| &s.ranges)
            .map(|&(a, b)| u32::from(b - a) + 1)
            .sum();
        if shards.len() != 3 || covered != u32::from(SLOTS) {
            return Some(format!("not 3 masters covering every slot: {shards:?}"));
        }
        for shard in &shards {
            if shard.replicas.len() != 1 {
                return Some(format!("a master without exactly one replica: {shard:?}"));
            }
            let mut con = self.con(shard.replicas[0]).await;
            let link = info_field(&mut con, &["INFO", "replication"], "master_link_status").await;
            let syncing = info_field(
                &mut con,
                &["INFO", "replication"],
                "master_sync_in_progress",
            )
            .await;
            if link.as_deref() != Some("up") || syncing.as_deref() != Some("0") {
                return Some(format!(
                    "replica {}: link {link:?}, sync in progress {syncing:?}",
                    shard.replicas[0]
                ));
            }
        }
        None
    }
}

/// Every key of `con`'s node that matches `pattern`, by `SCAN`.
pub async fn scan_keys(con: &mut MultiplexedConnection, pattern: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(con)
            .await
            .expect("SCAN");
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

/// The reply of `GET key` on a node: `Ok(value)`, or the error's code (`MOVED`).
pub async fn get_on(con: &mut MultiplexedConnection, key: &str) -> Result<Option<String>, String> {
    match redis::cmd("GET").arg(key).query_async(con).await {
        Ok(value) => Ok(value),
        Err(error) => Err(error.code().unwrap_or("?").to_string()),
    }
}
