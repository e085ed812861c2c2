//! A Redis Cluster for the client's tests: three masters with one replica each, six
//! `redis-server --cluster-enabled yes` processes on loopback ports (each with its bus port,
//! +10000, free too), with or without the module, joined by
//! `redis-cli --cluster create ... --cluster-replicas 1`. Every node is killed and its directory
//! removed when the [`Cluster`] is dropped.
//!
//! With a password, every node requires it (`--requirepass`) and replicas use it to reach their
//! master (`--masterauth`).
//!
//! Environment, besides `REDIS_SERVER` and `RATELIMIT_MODULE`: `REDIS_CLI` (default the
//! `redis-cli` or `valkey-cli` next to `REDIS_SERVER`, else `redis-cli`).

#[allow(unused_imports)]
pub use ratelimit_testkit::cluster::{cli_binary, key_slot, slot_tags, Shard, SLOTS};

use ratelimit_testkit::cluster::node_options;
use ratelimit_testkit::{local_url, Server};
use redis::aio::MultiplexedConnection;

/// `command` on `con`, panicking with the command on an error.
pub async fn call<T: redis::FromRedisValue>(con: &mut MultiplexedConnection, args: &[&str]) -> T {
    redis::cmd(args[0])
        .arg(&args[1..])
        .query_async(con)
        .await
        .unwrap_or_else(|e| panic!("{} failed: {e}", args.join(" ")))
}

/// Three masters with one replica each.
pub struct Cluster {
    nodes: Vec<Server>,
    password: Option<String>,
}

impl Cluster {
    /// Starts six nodes, with the module on each (`module`) or on none, and `password` on each
    /// if any; creates the cluster and waits until it is stable.
    pub async fn start(module: bool, password: Option<&str>) -> Cluster {
        let options = node_options(password);
        let nodes: Vec<Server> = (0..6)
            .map(|_| Server::start("ratelimit-client-cluster", module, &options))
            .collect();
        let cluster = Cluster {
            nodes,
            password: password.map(String::from),
        };
        let (ports, password) = (cluster.ports(), cluster.password.clone());
        blocking(move || ratelimit_testkit::cluster::create(&ports, password.as_deref())).await;
        cluster
    }

    /// The URLs of every node, masters and replicas, with the password if there is one.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| local_url(n.port(), self.password()))
            .collect()
    }

    /// The password every node requires, if any.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The port of every node, masters and replicas.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(Server::port).collect()
    }

    /// A plain connection of the test's own to the node on `port`: no redirection followed.
    pub async fn con(&self, port: u16) -> MultiplexedConnection {
        redis::Client::open(local_url(port, self.password()))
            .unwrap()
            .get_multiplexed_async_connection_with_config(&super::patient())
            .await
            .unwrap_or_else(|e| panic!("connect to the node on {port}: {e}"))
    }

    /// The node on `port`.
    pub fn node(&self, port: u16) -> &Server {
        self.nodes
            .iter()
            .find(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no node on port {port}"))
    }

    /// The shards as the first node sees them; call [`Cluster::wait_until_stable`] after a
    /// change.
    pub async fn shards(&self) -> Vec<Shard> {
        let text: String = call(
            &mut self.con(self.nodes[0].port()).await,
            &["CLUSTER", "NODES"],
        )
        .await;
        ratelimit_testkit::cluster::parse_nodes(&text).unwrap_or_else(|e| panic!("{e}"))
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
        let (ports, password) = (self.ports(), self.password.clone());
        blocking(move || {
            ratelimit_testkit::cluster::wait_until_stable(&ports, password.as_deref())
        })
        .await;
    }
}

/// Runs the blocking `work` off the runtime's threads, and passes its panic on as it is.
async fn blocking(work: impl FnOnce() + Send + 'static) {
    if let Err(error) = tokio::task::spawn_blocking(work).await {
        std::panic::resume_unwind(error.into_panic());
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
