//! The store's connection: one server through a `ConnectionManager`, or a Redis Cluster through
//! the `redis` crate's async cluster connection. Both are [`ConnectionLike`], so the module's
//! commands and the scripts run unchanged on either: a cluster connection sends each command
//! to the master of its key's slot and follows `MOVED` and `ASK` through resharding and
//! failovers.

use crate::config::{Config, Target};
use crate::error::Error;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, ConnectionInfo, ErrorKind, IntoConnectionInfo, Pipeline, RedisFuture, Value};
use std::sync::{PoisonError, RwLock};

/// How many times the cluster connection retries a command after a redirection, a
/// `TRYAGAIN`/`CLUSTERDOWN` or a lost node, waiting a few milliseconds between tries: enough to
/// follow a slot move or a failover, while the store's deadline bounds the whole call.
const CLUSTER_RETRIES: u32 = 6;
/// The shortest and longest wait between two retries of the cluster connection, in ms.
const CLUSTER_RETRY_WAIT_MS: (u64, u64) = (10, 100);

/// The store's connection: the one in use, replaced whole when the probe finds Redis back on
/// a fresh connection.
pub(crate) struct SharedConnection(RwLock<Connection>);

impl SharedConnection {
    pub(crate) fn new(connection: Connection) -> SharedConnection {
        SharedConnection(RwLock::new(connection))
    }

    /// The connection in use (a clone shares its sockets).
    pub(crate) fn get(&self) -> Connection {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts `connection` in use; calls that hold the old one finish on it.
    pub(crate) fn replace(&self, connection: Connection) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = connection;
    }
}

/// A connection to one server or to a cluster; cheap to clone (each clone shares the same
/// connections).
#[derive(Clone)]
pub(crate) enum Connection {
    /// One server.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl Connection {
    /// The connection of `config`, without waiting for the network: one server is connected on
    /// first use, a cluster in the background. Fails when the configuration is invalid (a URL
    /// that does not parse, nodes with different TLS modes, ...).
    pub(crate) fn open(config: &Config) -> Result<Connection, Error> {
        match Client::new(config)? {
            Client::Single(client, manager_config) => Ok(Connection::Single(
                ConnectionManager::new_lazy_with_config(client, manager_config)?,
            )),
            Client::Cluster(client, cluster_config) => Ok(Connection::Cluster(
                client.get_pending_async_connection_with_config(cluster_config),
            )),
        }
    }

    /// A new connection of `config`, connected now: what the store's probe uses, so that it
    /// never reads the failure of an attempt made while Redis was down. Fails when Redis
    /// cannot be reached within the connect timeout.
    pub(crate) async fn connect(config: &Config) -> Result<Connection, Error> {
        match Client::new(config)? {
            Client::Single(client, manager_config) => Ok(Connection::Single(
                ConnectionManager::new_with_config(client, manager_config).await?,
            )),
            Client::Cluster(client, cluster_config) => Ok(Connection::Cluster(
                client
                    .get_async_connection_with_config(cluster_config)
                    .await?,
            )),
        }
    }

    /// A connection to each master, for the commands that act on one node's keyspace only
    /// (`SCAN`): this connection for one server, each master of the cluster's slot map
    /// otherwise. Fails when the cluster cannot be reached.
    pub(crate) async fn masters(&mut self) -> Result<Vec<NodeConnection>, Error> {
        let cluster = match self {
            Connection::Single(_) => return Ok(vec![NodeConnection::Single(self.clone())]),
            Connection::Cluster(cluster) => cluster,
        };
        // Any command routed to every master answers one entry per master's address.
        let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
        let reply = cluster.route_command(redis::cmd("PING"), routing).await?;
        let Value::Map(entries) = reply else {
            return Err(Error::UnexpectedReply(format!(
                "PING to every master answered {reply:?}"
            )));
        };
        entries
            .into_iter()
            .map(|(address, _)| {
                let address = match address {
                    Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                    Value::SimpleString(text) => text,
                    other => return Err(unexpected_address(&format!("{other:?}"))),
                };
                let (host, port) = address
                    .rsplit_once(':')
                    .and_then(|(host, port)| Some((host.to_string(), port.parse().ok()?)))
                    .ok_or_else(|| unexpected_address(&address))?;
                Ok(NodeConnection::Node {
                    cluster: cluster.clone(),
                    routing: RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                        host,
                        port,
                    }),
                })
            })
            .collect()
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(conn) => conn.req_packed_command(cmd),
            Connection::Cluster(conn) => match first_key_of_mcheck(cmd) {
                Some(routing) => Box::pin(conn.route_command(cmd.clone(), routing)),
                None => conn.req_packed_command(cmd),
            },
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(conn) => conn.get_db(),
            Connection::Cluster(conn) => conn.get_db(),
        }
    }
}

/// The routing of `RATELIMIT.MCHECK numkeys key ...`: the master of its first key's slot. The
/// cluster client does not know the command, and would route it by `numkeys`, then follow the
/// `MOVED` answer: one round trip more. `None` for any other command.
fn first_key_of_mcheck(cmd: &Cmd) -> Option<RoutingInfo> {
    let mut args = cmd.args_iter();
    let redis::Arg::Simple(name) = args.next()? else {
        return None;
    };
    if !name.eq_ignore_ascii_case(b"RATELIMIT.MCHECK") {
        return None;
    }
    let redis::Arg::Simple(key) = args.nth(1)? else {
        return None;
    };
    Some(RoutingInfo::SingleNode(
        SingleNodeRoutingInfo::SpecificNode(redis::cluster_routing::Route::with_slot(
            redis::cluster_routing::Slot::for_key(key),
            redis::cluster_routing::SlotAddr::Master,
        )),
    ))
}

/// A connection that sends every command to one node: the server itself, or one master of a
/// cluster. Only single commands, no pipelines.
pub(crate) enum NodeConnection {
    /// The one server.
    Single(Connection),
    /// One node of a cluster, by address.
    Node {
        cluster: ClusterConnection,
        routing: RoutingInfo,
    },
}

impl ConnectionLike for NodeConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            NodeConnection::Single(conn) => conn.req_packed_command(cmd),
            NodeConnection::Node { cluster, routing } => {
                Box::pin(cluster.route_command(cmd.clone(), routing.clone()))
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            NodeConnection::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            NodeConnection::Node { .. } => Box::pin(async {
                Err((
                    ErrorKind::Client,
                    "pipelines are not sent to one node of a cluster",
                )
                    .into())
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            NodeConnection::Single(conn) => conn.get_db(),
            NodeConnection::Node { .. } => 0,
        }
    }
}

/// The `redis` client of a configuration, and the settings of its connections.
enum Client {
    Single(redis::Client, ConnectionManagerConfig),
    Cluster(ClusterClient, ClusterConfig),
}

impl Client {
    fn new(config: &Config) -> Result<Client, Error> {
        match config.validate()? {
            Target::Single(url) => {
                install_tls_provider([url]);
                let client = redis::Client::open(url)?;
                // No retries inside the connection manager: the store's probe decides when to
                // try again, and a call never waits for more than one connection attempt.
                let manager_config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.connect_timeout))
                    .set_response_timeout(Some(config.response_timeout))
                    .set_number_of_retries(0);
                Ok(Client::Single(client, manager_config))
            }
            Target::Cluster(nodes) => {
                install_tls_provider(nodes.iter().map(String::as_str));
                let infos = nodes
                    .iter()
                    .map(|node| node.as_str().into_connection_info())
                    .collect::<Result<Vec<ConnectionInfo>, _>>()?;
                let (min_wait, max_wait) = CLUSTER_RETRY_WAIT_MS;
                let mut builder = ClusterClientBuilder::new(infos.clone())
                    .connection_timeout(config.connect_timeout)
                    .response_timeout(config.response_timeout)
                    // Each attempt has the response timeout; the store's deadline bounds the
                    // whole call, redirections and retries included.
                    .overall_response_timeout(None)
                    .retries(CLUSTER_RETRIES)
                    .min_retry_wait(min_wait)
                    .max_retry_wait(max_wait);
                // The credentials of the first node that has some apply to every node, so that
                // they need not be repeated in each URL.
                if let Some(settings) = infos
                    .iter()
                    .map(ConnectionInfo::redis_settings)
                    .find(|settings| settings.password().is_some())
                {
                    builder = builder.password(settings.password().unwrap_or_default());
                    if let Some(username) = settings.username() {
                        builder = builder.username(username);
                    }
                }
                let cluster_config = ClusterConfig::new()
                    .set_connection_timeout(config.connect_timeout)
                    .set_response_timeout(config.response_timeout);
                Ok(Client::Cluster(builder.build()?, cluster_config))
            }
        }
    }
}

fn unexpected_address(address: &str) -> Error {
    Error::UnexpectedReply(format!("a master's address is not host:port: {address}"))
}

/// rustls needs a process-wide crypto provider for `rediss://`; another one may be installed
/// already.
fn install_tls_provider<'a>(urls: impl IntoIterator<Item = &'a str>) {
    if urls
        .into_iter()
        .any(|url| url.starts_with("rediss://") || url.starts_with("valkeys://"))
    {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
