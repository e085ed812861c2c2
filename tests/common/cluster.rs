//! A Redis Cluster of three masters, each with one replica: six [`Server`]s with the module
//! loaded, on loopback ports, joined by `redis-cli --cluster create ... --cluster-replicas 1`.
//! Every node is killed and its directory removed when the [`Cluster`] is dropped.
//!
//! Environment, besides the server's (see `server.rs`):
//! - `REDIS_CLI`: the CLI that creates the cluster and drives `-c` tests. By default the
//!   `redis-cli` or `valkey-cli` next to `REDIS_SERVER`, else `redis-cli` from the `PATH`.

#[allow(unused_imports)]
pub use ratelimit_testkit::cluster::{
    cli_binary, key_slot, run_cli, slot_tags, CliOutput, Shard, NODE_OPTIONS, SLOTS,
};

use super::call;
use super::server::Server;
use redis::Value;
use std::time::Duration;

/// The cluster as one node sees it (`CLUSTER NODES`), one shard per master, sorted by port.
/// Unlike `CLUSTER SLOTS`, it lists a replica before the replica has seen any write. Nodes
/// flagged `fail`, `pfail`, `handshake` or `noaddr` are an error: the view is not settled.
pub fn topology(con: &mut redis::Connection) -> Result<Vec<Shard>, String> {
    let text = match call(con, &["CLUSTER", "NODES"]) {
        Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Value::VerbatimString { text, .. } => text,
        other => panic!("CLUSTER NODES answered {other:?}"),
    };
    ratelimit_testkit::cluster::parse_nodes(&text)
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
        let cluster = Cluster { nodes };
        ratelimit_testkit::cluster::create(&cluster.ports(), None);
        cluster
    }

    /// Every node, masters and replicas.
    pub fn nodes(&self) -> &[Server] {
        &self.nodes
    }

    /// Kills the node on `port` with SIGKILL, as a crash would, and leaves it dead: the cluster
    /// is then left to notice and to promote its replica, if it was a master.
    pub fn kill(&mut self, port: u16) {
        self.nodes
            .iter_mut()
            .find(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no node on port {port}"))
            .kill();
    }

    /// The port of every node, masters and replicas.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(Server::port).collect()
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
        ratelimit_testkit::cluster::wait_until_stable(&self.ports(), None);
    }
}
