//! A Redis Cluster of three masters, each with one replica: six [`Server`]s with the module
//! loaded, on loopback ports, joined by `redis-cli --cluster create ... --cluster-replicas 1`.
//! Every node is killed and its directory removed when the [`Cluster`] is dropped.
//!
//! Environment, besides the server's (see `server.rs`):
//! - `REDIS_CLI`: the CLI that creates the cluster and drives `-c` tests. By default the
//!   `redis-cli` or `valkey-cli` next to `REDIS_SERVER`, else `redis-cli` from the `PATH`.

use super::server::{server_binary, Server};
use super::{call, info_value};
use redis::Value;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The number of hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;
/// How long the cluster gets to agree on its state after a change (creation, failover, reshard).
const STABLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one `redis-cli` run may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// The options of every node. A short node timeout keeps elections quick, and a replica's
/// first sync starts at once instead of after the default 5 s diskless-sync delay.
const NODE_OPTIONS: [&str; 6] = [
    "--cluster-enabled",
    "yes",
    "--cluster-node-timeout",
    "2000",
    "--repl-diskless-sync-delay",
    "0",
];

/// The CLI: `REDIS_CLI`, else the `redis-cli` or `valkey-cli` beside `REDIS_SERVER`, else
/// `redis-cli` from the `PATH`.
pub fn cli_binary() -> String {
    if let Ok(cli) = std::env::var("REDIS_CLI") {
        return cli;
    }
    let server = server_binary();
    if let Some(dir) = Path::new(&server)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        for name in ["redis-cli", "valkey-cli"] {
            if dir.join(name).is_file() {
                return dir.join(name).display().to_string();
            }
        }
    }
    "redis-cli".to_string()
}

/// What a finished `redis-cli` run printed.
#[derive(Debug)]
pub struct CliOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the CLI with `args`; kills it and panics if it runs longer than a minute.
pub fn run_cli<S: AsRef<str>>(args: &[S]) -> CliOutput {
    let args: Vec<&str> = args.iter().map(|a| a.as_ref()).collect();
    let mut child = Command::new(cli_binary())
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{}` ({e}); set REDIS_CLI", cli_binary()));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + CLI_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for redis-cli") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`{} {}` ran longer than {CLI_TIMEOUT:?}",
                cli_binary(),
                args.join(" ")
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    CliOutput {
        success: status.success(),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
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
        crc ^= (byte as u16) << 8;
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

/// For every slot, a hash tag `<prefix><n>` that maps to it: `tags[slot]`, to be used in keys
/// as `{tag}`, e.g. `{user:42}:search`.
pub fn slot_tags(prefix: &str) -> Vec<String> {
    let mut tags = vec![String::new(); SLOTS as usize];
    let mut missing = SLOTS as usize;
    let mut n = 0u64;
    while missing > 0 {
        let tag = format!("{prefix}{n}");
        let slot = key_slot(tag.as_bytes()) as usize;
        if tags[slot].is_empty() {
            tags[slot] = tag;
            missing -= 1;
        }
        n += 1;
    }
    tags
}

/// One master's share of the cluster: its slot ranges and its replicas, by port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub master: u16,
    pub replicas: Vec<u16>,
    pub ranges: Vec<(u16, u16)>,
}

impl Shard {
    pub fn owns(&self, slot: u16) -> bool {
        self.ranges.iter().any(|&(a, b)| (a..=b).contains(&slot))
    }
}

/// The cluster as one node sees it (`CLUSTER NODES`), one shard per master, sorted by port.
/// Unlike `CLUSTER SLOTS`, it lists a replica before the replica has seen any write. Nodes
/// flagged `fail`, `pfail`, `handshake` or `noaddr` are an error: the view is not settled.
pub fn topology(con: &mut redis::Connection) -> Result<Vec<Shard>, String> {
    let reply = call(con, &["CLUSTER", "NODES"]);
    let text = match reply {
        Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Value::VerbatimString { text, .. } => text,
        other => panic!("CLUSTER NODES answered {other:?}"),
    };
    // (id, port, master id or "-", slot ranges), one per node.
    let mut nodes = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let flags: Vec<&str> = fields[2].split(',').collect();
        if let Some(flag) = flags
            .iter()
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
        // Slots being migrated are shown as `[slot->-id]`: their owner is in the plain ranges.
        let ranges: Vec<(u16, u16)> = fields[8..]
            .iter()
            .filter(|f| !f.starts_with('['))
            .map(|range| {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                (a.parse().unwrap(), b.parse().unwrap())
            })
            .collect();
        nodes.push((fields[0], port, fields[3], ranges));
    }
    let mut shards: Vec<Shard> = nodes
        .iter()
        .filter(|(_, _, master, ranges)| *master == "-" && !ranges.is_empty())
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
                replicas,
                ranges,
            }
        })
        .collect();
    shards.sort_by_key(|s| s.master);
    Ok(shards)
}

/// A node's id in the cluster (`CLUSTER MYID`).
pub fn node_id(con: &mut redis::Connection) -> String {
    redis::cmd("CLUSTER").arg("MYID").query(con).unwrap()
}

/// A cluster client that knows the nodes at `urls` (e.g. for a thread of its own).
pub fn cluster_client(urls: &[String]) -> redis::cluster::ClusterConnection {
    redis::cluster::ClusterClient::builder(urls.to_vec())
        .connection_timeout(Duration::from_secs(10))
        .response_timeout(Duration::from_secs(10))
        .build()
        .expect("a cluster client")
        .get_connection()
        .expect("connect to the cluster")
}

/// Three masters, each with one replica, the module loaded on every node.
pub struct Cluster {
    nodes: Vec<Server>,
}

impl Cluster {
    /// Starts six nodes, creates the cluster with `redis-cli --cluster create`, and waits until
    /// every node agrees on the slot map and every replica is in sync.
    pub fn start() -> Cluster {
        let nodes: Vec<Server> = (0..6).map(|_| Server::start_with(&NODE_OPTIONS)).collect();
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())));
        args.extend(["--cluster-replicas", "1", "--cluster-yes"].map(String::from));
        let cluster = Cluster { nodes };
        let out = run_cli(&args);
        assert!(
            out.success && out.stdout.contains("All 16384 slots covered"),
            "`{} {}` failed:\n{}\n{}",
            cli_binary(),
            args.join(" "),
            out.stdout,
            out.stderr
        );
        cluster.wait_until_stable();
        cluster
    }

    /// Every node, masters and replicas.
    pub fn nodes(&self) -> &[Server] {
        &self.nodes
    }

    /// The node listening on `port`.
    pub fn node(&self, port: u16) -> &Server {
        self.nodes
            .iter()
            .find(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no node on port {port}"))
    }

    /// The shards, as every node agrees they are (call [`Cluster::wait_until_stable`] first
    /// after a change).
    pub fn shards(&self) -> Vec<Shard> {
        topology(&mut self.nodes[0].con()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The shard whose master owns `key`'s slot.
    pub fn shard_of(&self, key: &str) -> Shard {
        let slot = key_slot(key.as_bytes());
        self.shards()
            .into_iter()
            .find(|s| s.owns(slot))
            .unwrap_or_else(|| panic!("no master owns slot {slot}"))
    }

    /// A client that routes each command to the master of its key's slot and follows `MOVED`
    /// and `ASK`, as an application would.
    pub fn client(&self) -> redis::cluster::ClusterConnection {
        let urls: Vec<String> = self.nodes.iter().map(|n| n.url()).collect();
        cluster_client(&urls)
    }

    /// Waits until every node answers `cluster_state:ok` and the same slot map, with three
    /// masters covering all slots, one replica each, and every replica's link to its master up.
    pub fn wait_until_stable(&self) {
        let deadline = Instant::now() + STABLE_TIMEOUT;
        while let Some(reason) = self.unstable_reason() {
            assert!(
                Instant::now() < deadline,
                "the cluster is not stable after {STABLE_TIMEOUT:?}: {reason}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn unstable_reason(&self) -> Option<String> {
        let mut first: Option<Vec<Shard>> = None;
        for node in &self.nodes {
            let mut con = node.con();
            let state = info_value(&mut con, &["CLUSTER", "INFO"], "cluster_state");
            if state.as_deref() != Some("ok") {
                return Some(format!("node {}: cluster_state {state:?}", node.port()));
            }
            let shards = match topology(&mut con) {
                Ok(shards) => shards,
                Err(reason) => return Some(format!("node {}: {reason}", node.port())),
            };
            match &first {
                None => first = Some(shards),
                Some(seen) if *seen != shards => {
                    return Some(format!(
                        "node {} sees {shards:?}, another node {seen:?}",
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
            .map(|&(a, b)| (b - a) as u32 + 1)
            .sum();
        if shards.len() != 3 || covered != SLOTS as u32 {
            return Some(format!("not 3 masters covering every slot: {shards:?}"));
        }
        for shard in &shards {
            if shard.replicas.len() != 1 {
                return Some(format!("a master without exactly one replica: {shard:?}"));
            }
            let mut con = self.node(shard.replicas[0]).con();
            let link = info_value(&mut con, &["INFO", "replication"], "master_link_status");
            let syncing = info_value(
                &mut con,
                &["INFO", "replication"],
                "master_sync_in_progress",
            );
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
