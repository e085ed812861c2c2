//! Redis Clusters of three masters with one replica each: the nodes' options, their creation
//! with `redis-cli --cluster create ... --cluster-replicas 1`, the wait until every node agrees on
//! the slot map, and the slot arithmetic. The nodes themselves are the callers' servers, started
//! with [`node_options`]; everything here talks to them by port, over [`RawConn`].
//!
//! Environment, besides the server's: `REDIS_CLI`, the CLI that creates the cluster. By default
//! the `redis-cli` or `valkey-cli` next to `REDIS_SERVER`, else `redis-cli` from the `PATH`.

use crate::resp::{RawConn, Reply};
use crate::server_binary;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The number of hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;
/// How long the cluster gets to agree on its state after a change (creation, failover, reshard).
pub const STABLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one `redis-cli` run may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// The options of every node. A short node timeout keeps elections quick, and a replica's
/// first sync starts at once instead of after the default 5 s diskless-sync delay.
pub const NODE_OPTIONS: [&str; 6] = [
    "--cluster-enabled",
    "yes",
    "--cluster-node-timeout",
    "2000",
    "--repl-diskless-sync-delay",
    "0",
];

/// [`NODE_OPTIONS`], and with a password, `--requirepass` (every node requires it) and
/// `--masterauth` (replicas use it to reach their master).
pub fn node_options(password: Option<&str>) -> Vec<String> {
    let mut options: Vec<String> = NODE_OPTIONS.map(String::from).to_vec();
    if let Some(password) = password {
        options.extend(["--requirepass", password, "--masterauth", password].map(String::from));
    }
    options
}

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

/// Joins the six nodes on 127.0.0.1:`ports` into three masters with one replica each
/// (`redis-cli --cluster create`), then waits until the cluster is stable
/// ([`wait_until_stable`]).
pub fn create(ports: &[u16], password: Option<&str>) {
    let mut args: Vec<String> = Vec::new();
    if let Some(password) = password {
        args.extend(["-a", password, "--no-auth-warning"].map(String::from));
    }
    args.extend(["--cluster".into(), "create".into()]);
    args.extend(ports.iter().map(|port| format!("127.0.0.1:{port}")));
    args.extend(["--cluster-replicas", "1", "--cluster-yes"].map(String::from));
    let out = run_cli(&args);
    assert!(
        out.success && out.stdout.contains("All 16384 slots covered"),
        "`{} {}` failed:\n{}\n{}",
        cli_binary(),
        args.join(" "),
        out.stdout,
        out.stderr
    );
    wait_until_stable(ports, password);
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

/// For every slot, a hash tag `<prefix><n>` that maps to it: `tags[slot]`, to be used in keys
/// as `{tag}`, e.g. `{user:42}:search`.
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

/// One master's share of the cluster: its slot ranges and its replicas, by port.
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

/// The shards in the text of `CLUSTER NODES`, one per master with slots, sorted by port.
/// Unlike `CLUSTER SLOTS`, it lists a replica before the replica has seen any write. Nodes
/// flagged `fail`, `pfail`, `handshake` or `noaddr` are an error: the view is not settled.
pub fn parse_nodes(text: &str) -> Result<Vec<Shard>, String> {
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
                master_id: id.to_string(),
                replicas,
                ranges,
            }
        })
        .collect();
    shards.sort_by_key(|s| s.master);
    Ok(shards)
}

/// A connection to the node on 127.0.0.1:`port`, authenticated with `password` if any.
fn connect(port: u16, password: Option<&str>) -> Result<RawConn, String> {
    let mut con = RawConn::connect("127.0.0.1", port)
        .map_err(|e| format!("node {port}: cannot connect: {e}"))?;
    if let Some(password) = password {
        match con.try_call(&["AUTH", password]) {
            Ok(Reply::Status(_)) => {}
            other => return Err(format!("node {port}: AUTH answered {other:?}")),
        }
    }
    Ok(con)
}

/// The text of a bulk reply (`CLUSTER NODES`, `INFO`); an error for anything else.
fn text(con: &mut RawConn, args: &[&str]) -> Result<String, String> {
    match con.try_call(args) {
        Ok(Reply::Bulk(Some(bytes))) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        other => Err(format!("{} answered {other:?}", args.join(" "))),
    }
}

/// One `field:value` line of an INFO-style reply: the value, or `None` when it is absent.
fn info_value(con: &mut RawConn, args: &[&str], field: &str) -> Result<Option<String>, String> {
    Ok(text(con, args)?
        .lines()
        .find_map(|l| l.trim().strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string()))
}

/// The cluster as the node on `port` sees it (`CLUSTER NODES`): see [`parse_nodes`].
pub fn topology(port: u16, password: Option<&str>) -> Result<Vec<Shard>, String> {
    parse_nodes(&text(&mut connect(port, password)?, &["CLUSTER", "NODES"])?)
}

/// Waits until every node answers `cluster_state:ok` and the same slot map, with three
/// masters covering all slots, one replica each, and every replica's link to its master up.
pub fn wait_until_stable(ports: &[u16], password: Option<&str>) {
    let deadline = Instant::now() + STABLE_TIMEOUT;
    while let Some(reason) = unstable_reason(ports, password) {
        assert!(
            Instant::now() < deadline,
            "the cluster is not stable after {STABLE_TIMEOUT:?}: {reason}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Why the cluster of the nodes on `ports` is not stable yet, or `None` when it is.
pub fn unstable_reason(ports: &[u16], password: Option<&str>) -> Option<String> {
    check_stable(ports, password).err()
}

fn check_stable(ports: &[u16], password: Option<&str>) -> Result<(), String> {
    let mut first: Option<Vec<Shard>> = None;
    for &port in ports {
        let mut con = connect(port, password)?;
        let state = info_value(&mut con, &["CLUSTER", "INFO"], "cluster_state")?;
        if state.as_deref() != Some("ok") {
            return Err(format!("node {port}: cluster_state {state:?}"));
        }
        let shards = parse_nodes(&text(&mut con, &["CLUSTER", "NODES"])?)
            .map_err(|reason| format!("node {port}: {reason}"))?;
        match &first {
            None => first = Some(shards),
            Some(seen) if *seen != shards => {
                return Err(format!(
                    "node {port} sees {shards:?}, another node {seen:?}"
                ))
            }
            Some(_) => {}
        }
    }
    let shards = first.unwrap_or_default();
    let covered: u32 = shards
        .iter()
        .flat_map(|s| &s.ranges)
        .map(|&(a, b)| u32::from(b - a) + 1)
        .sum();
    if shards.len() != 3 || covered != u32::from(SLOTS) {
        return Err(format!("not 3 masters covering every slot: {shards:?}"));
    }
    for shard in &shards {
        if shard.replicas.len() != 1 {
            return Err(format!("a master without exactly one replica: {shard:?}"));
        }
        let replica = shard.replicas[0];
        let mut con = connect(replica, password)?;
        let link = info_value(&mut con, &["INFO", "replication"], "master_link_status")?;
        let syncing = info_value(
            &mut con,
            &["INFO", "replication"],
            "master_sync_in_progress",
        )?;
        if link.as_deref() != Some("up") || syncing.as_deref() != Some("0") {
            return Err(format!(
                "replica {replica}: link {link:?}, sync in progress {syncing:?}"
            ));
        }
    }
    Ok(())
}
