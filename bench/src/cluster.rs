//! Redis Clusters of 1, 2 or 3 masters, no replica, for the cluster figures of `make bench`:
//! the same client load spread over the masters by slot, the throughput and the masters' CPU
//! time per check.
//!
//! `redis-cli --cluster create` wants three masters at least, so the nodes are joined by hand:
//! each master is given an equal, contiguous share of the slots (`CLUSTER ADDSLOTS`), the first
//! meets the others (`CLUSTER MEET`), and the cluster is used once every node answers
//! `cluster_state:ok` and the same slot map (read with the testkit's `CLUSTER NODES` parser).

use crate::driver::{self, Load, Template};
use crate::{noise, Launch, Server};
use ratelimit_testkit::cluster::{key_slot, parse_nodes, SLOTS};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A running cluster: its masters, and which of them owns each slot.
pub struct Cluster {
    /// The masters, in the order of their slot ranges.
    pub masters: Vec<Server>,
    /// `owner[slot]`: the index in `masters` of the slot's master.
    owner: Vec<usize>,
}

impl Cluster {
    /// Starts `masters` nodes with the module (each pinned to `cpu` when given) and joins them
    /// into one cluster. Panics when the cluster does not settle within 30 s.
    pub fn start(masters: usize, cpu: Option<usize>) -> Cluster {
        assert!((1..=16).contains(&masters), "1 to 16 masters");
        let nodes: Vec<Server> = (0..masters)
            .map(|_| {
                Server::launch(&Launch {
                    cpu,
                    cluster: true,
                    ..Launch::default()
                })
            })
            .collect();
        let share = usize::from(SLOTS).div_ceil(masters);
        let mut owner = vec![0; usize::from(SLOTS)];
        for (index, node) in nodes.iter().enumerate() {
            let first = index * share;
            let last = ((index + 1) * share).min(usize::from(SLOTS));
            let slots: Vec<String> = (first..last).map(|slot| slot.to_string()).collect();
            let mut args = vec!["CLUSTER", "ADDSLOTS"];
            args.extend(slots.iter().map(String::as_str));
            let reply = node.connect().command(&args).expect("CLUSTER ADDSLOTS");
            assert_eq!(
                reply.text().as_deref(),
                Some("OK"),
                "CLUSTER ADDSLOTS: {reply:?}"
            );
            owner[first..last].fill(index);
        }
        let mut first = nodes[0].connect();
        for node in &nodes[1..] {
            let port = node.port().to_string();
            first
                .command(&["CLUSTER", "MEET", "127.0.0.1", &port])
                .expect("CLUSTER MEET");
        }
        let cluster = Cluster {
            masters: nodes,
            owner,
        };
        cluster.wait_until_stable();
        cluster
    }

    fn wait_until_stable(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.unstable_reason() {
                None => return,
                Some(reason) => assert!(
                    Instant::now() < deadline,
                    "the cluster of {} masters did not settle: {reason}",
                    self.masters.len()
                ),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn unstable_reason(&self) -> Option<String> {
        for node in &self.masters {
            let mut conn = node.connect();
            let info = conn
                .command(&["CLUSTER", "INFO"])
                .ok()
                .and_then(|r| r.text())
                .unwrap_or_default();
            if !info.lines().any(|l| l.trim() == "cluster_state:ok") {
                return Some(format!("node {}: not cluster_state:ok", node.port()));
            }
            let nodes = conn
                .command(&["CLUSTER", "NODES"])
                .ok()
                .and_then(|r| r.text())
                .unwrap_or_default();
            let shards = match parse_nodes(&nodes) {
                Ok(shards) => shards,
                Err(reason) => return Some(format!("node {}: {reason}", node.port())),
            };
            if shards.len() != self.masters.len() {
                return Some(format!(
                    "node {} sees {} masters",
                    node.port(),
                    shards.len()
                ));
            }
            for shard in &shards {
                let Some(index) = self.masters.iter().position(|m| m.port() == shard.master) else {
                    return Some(format!("an unknown master {}", shard.master));
                };
                let agrees = shard
                    .ranges
                    .iter()
                    .all(|&(a, b)| (a..=b).all(|slot| self.owner[usize::from(slot)] == index));
                if !agrees {
                    return Some(format!("node {} sees other slots", node.port()));
                }
            }
        }
        None
    }

    /// Which master owns key number `n` of `template`'s first key word (`KEY` alone: the key is
    /// the 12-digit number).
    pub fn owner_of(&self, n: u64) -> usize {
        self.owner[usize::from(key_slot(format!("{n:012}").as_bytes()))]
    }

    /// The key numbers `0..keyspace`, split by master.
    pub fn split(&self, keyspace: u64) -> Vec<Vec<u64>> {
        let mut split = vec![Vec::new(); self.masters.len()];
        for n in 0..keyspace {
            split[self.owner_of(n)].push(n);
        }
        split
    }

    /// Fills every key of `keys` (as [`Cluster::split`] gave them) on its master with `fill`.
    pub fn fill(&self, fill: &Template, keys: &[Vec<u64>]) {
        for (master, keys) in self.masters.iter().zip(keys) {
            let mut conn = master.connect();
            conn.command(&["FLUSHALL", "SYNC"]).expect("FLUSHALL");
            driver::fill(&mut conn, fill, keys.iter().copied()).expect("fill a master's keys");
            crate::wait_for_rehash(&mut conn);
        }
    }

    /// The masters' CPU time so far, in seconds, summed.
    pub fn cpu_seconds(&self) -> f64 {
        let ticks: u64 = self
            .masters
            .iter()
            .map(|m| noise::process_ticks(m.pid()).unwrap_or(0))
            .sum();
        ticks as f64 / noise::clock_ticks()
    }

    /// Sends `load` of `request` over the masters, each key to its master, and answers the
    /// rate (requests per second) and the masters' CPU µs per request.
    pub fn run(&self, request: &Template, keys: &[Vec<u64>], load: Load) -> (f64, f64) {
        let targets: Vec<(u16, Option<Rc<Vec<u64>>>)> = self
            .masters
            .iter()
            .zip(keys)
            .map(|(master, keys)| (master.port(), Some(Rc::new(keys.clone()))))
            .collect();
        let before = self.cpu_seconds();
        let outcome = driver::run_spread(&targets, request, load)
            .unwrap_or_else(|e| panic!("the cluster of {} masters: {e}", self.masters.len()));
        let cpu = self.cpu_seconds() - before;
        (outcome.per_second, cpu * 1e6 / load.requests as f64)
    }

    /// Shuts every master down.
    pub fn stop(self) {
        for master in self.masters {
            master.stop();
        }
    }
}
