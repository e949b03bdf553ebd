//! The Redis cache backend: one Redis server, or a Redis Cluster.
//!
//! The key layout (see `key.rs`) is the same on both: a tenant's keys carry the tenant as
//! their hash tag, `<prefix>:{<tenant>}:…`, so on a cluster they all live in one slot.
//!
//! On a cluster, commands on one key (`GET`, `SET`, `UNLINK`, `DUMP`, `RESTORE`) are
//! routed by `redis`'s cluster client to the node that owns the key's slot, following
//! `MOVED` (the slot map is refreshed) and `ASK` (a slot being migrated) redirections.
//! Walking the keyspace cannot be routed by key: `SCAN` sees one node's keys, so every
//! walk asks the cluster for its primaries (`CLUSTER NODES`, each time: slots may have
//! moved since the last walk) and scans each of them.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Client, Cmd, ErrorKind, FromRedisValue, RedisError, ServerErrorKind};
use tokio::task::JoinSet;

use super::CacheStore;
use super::key::namespace_pattern;
use crate::{Error, Result};

/// How many keys one `SCAN` step looks at, and so the most one `UNLINK` removes: small
/// enough that no step blocks the server noticeably for other tenants.
const CLEAR_BATCH: usize = 1000;

/// The scheme of a Redis Cluster URL: `redis+cluster://[user:password@]host:port[,host:port…]`.
pub(crate) const CLUSTER_SCHEME: &str = "redis+cluster://";

/// What an invalid cache URL is told it should have been.
const VALID_URLS: &str = "expected redis://[user:password@]host[:port][/db], redis+unix:///path, or \
                          redis+cluster://[user:password@]host:port[,host:port...] for Redis Cluster";

/// The Redis [`CacheStore`] (feature `redis`), for one server or a Redis Cluster.
///
/// One server: one multiplexed connection, opened on first use and reopened after a
/// failure by `redis`'s connection manager. A cluster (`redis+cluster://` URL): `redis`'s
/// cluster client, with a multiplexed connection per node, opened in the background.
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    /// The URL with any password redacted, for error messages.
    target: String,
}

/// The connection, to one server or to a cluster: one store type, two ways to reach Redis.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.conn {
            Conn::Single(_) => "single",
            Conn::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisStore").field("target", &self.target).field("kind", &kind).finish_non_exhaustive()
    }
}

/// A primary of the cluster, as `CLUSTER NODES` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    host: String,
    port: u16,
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl RedisStore {
    /// A store for the Redis server or cluster at `url`; nothing is connected until the
    /// first call (a cluster's connections are opened in the background). Must be called
    /// inside a tokio runtime (the connections run tasks of their own).
    ///
    /// `url` is `redis://[user:password@]host[:port][/db]` or `redis+unix:///path` for one
    /// server, or `redis+cluster://[user:password@]host:port[,host:port…]` for a Redis
    /// Cluster: one or more of its nodes (the client discovers the others), sharing the
    /// credentials; a cluster has no database number.
    ///
    /// # Errors
    /// [`Error::InvalidCacheUrl`] when `url` is not a Redis URL this build supports
    /// (`rediss://` needs TLS, which is not compiled in).
    pub fn open(url: &str) -> Result<Self> {
        let is_cluster =
            url.get(..CLUSTER_SCHEME.len()).is_some_and(|scheme| scheme.eq_ignore_ascii_case(CLUSTER_SCHEME));
        let target = if is_cluster { redact_cluster_url(&url[CLUSTER_SCHEME.len()..]) } else { crate::redact_url(url) };
        let invalid =
            |reason: String| Error::InvalidCacheUrl { url: target.clone(), reason: format!("{reason}; {VALID_URLS}") };
        let conn = if is_cluster {
            let nodes = cluster_nodes(&url[CLUSTER_SCHEME.len()..]).map_err(invalid)?;
            // As for one server: a request fails within seconds when the cluster is away.
            // Retries cover redirections (`MOVED`, `ASK`) and `TRYAGAIN` during a slot
            // migration, with short waits.
            let client = ClusterClient::builder(nodes)
                .retries(5)
                .min_retry_wait(10)
                .max_retry_wait(200)
                .build()
                .map_err(|err| invalid(err.to_string()))?;
            let config = ClusterConfig::new()
                .set_connection_timeout(Duration::from_secs(2))
                .set_response_timeout(Duration::from_secs(5));
            Conn::Cluster(client.get_pending_async_connection_with_config(config))
        } else {
            let client = Client::open(url).map_err(|err| invalid(err.to_string()))?;
            // A request fails within seconds when Redis is away, instead of waiting through
            // the manager's default six reconnection attempts; the next request retries.
            let config = ConnectionManagerConfig::new()
                .set_number_of_retries(1)
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(Duration::from_millis(200))
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(Duration::from_secs(5)));
            Conn::Single(
                ConnectionManager::new_lazy_with_config(client, config).map_err(|err| invalid(err.to_string()))?,
            )
        };
        Ok(Self { conn, target })
    }

    fn error(&self, command: &'static str, err: RedisError) -> Error {
        let target = self.target.clone();
        if err.is_io_error()
            || err.is_connection_refusal()
            || err.is_timeout()
            || err.is_connection_dropped()
            || err.kind() == ErrorKind::ClusterConnectionNotFound
        {
            Error::CacheUnavailable { target, source: Box::new(err) }
        } else {
            Error::CacheCommand { command, target, source: Box::new(err) }
        }
    }

    /// Runs `cmd`, routed by its key on a cluster.
    async fn query<T: FromRedisValue>(&self, command: &'static str, cmd: &Cmd) -> Result<T> {
        let result = match &self.conn {
            Conn::Single(manager) => cmd.query_async(&mut manager.clone()).await,
            Conn::Cluster(cluster) => cmd.query_async(&mut cluster.clone()).await,
        };
        result.map_err(|err| self.error(command, err))
    }

    /// Runs `cmd` on one node of the cluster (a command with no key, such as `SCAN`).
    async fn query_node<T: FromRedisValue>(
        &self,
        cluster: &ClusterConnection,
        node: &Node,
        command: &'static str,
        cmd: Cmd,
    ) -> Result<T> {
        let routing =
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host: node.host.clone(), port: node.port });
        let value = cluster.clone().route_command(cmd, routing).await.map_err(|err| self.error(command, err))?;
        redis::from_redis_value(value).map_err(|err| self.error(command, err.into()))
    }

    /// The primaries of the cluster now, as the cluster itself lists them: a primary that
    /// holds no slot yet but imports one is scanned too. One the client has no connection
    /// to (added since its last slot refresh) fails the walk with a cache error rather
    /// than being skipped: a clear never reports success over keys it could not see.
    async fn primaries(&self, cluster: &ClusterConnection) -> Result<Vec<Node>> {
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("NODES");
        let value = cluster
            .clone()
            .route_command(cmd, RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random))
            .await
            .map_err(|err| self.error("CLUSTER NODES", err))?;
        let text: String = redis::from_redis_value(value).map_err(|err| self.error("CLUSTER NODES", err.into()))?;
        let nodes = parse_primaries(&text);
        if nodes.is_empty() {
            let err = RedisError::from((ErrorKind::ClusterConnectionNotFound, "CLUSTER NODES lists no usable primary"));
            return Err(self.error("CLUSTER NODES", err));
        }
        Ok(nodes)
    }

    /// One `SCAN` step on one server or (on a cluster) one node.
    async fn scan(&self, node: Option<&Node>, cursor: u64, pattern: &str) -> Result<(u64, Vec<Vec<u8>>)> {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(CLEAR_BATCH);
        match (&self.conn, node) {
            (Conn::Cluster(cluster), Some(node)) => self.query_node(cluster, node, "SCAN", cmd).await,
            _ => self.query("SCAN", &cmd).await,
        }
    }

    /// The nodes a walk of the keyspace scans: `[None]` (the server) on one server, every
    /// primary on a cluster.
    async fn scan_targets(&self) -> Result<Vec<Option<Node>>> {
        Ok(match &self.conn {
            Conn::Single(_) => vec![None],
            Conn::Cluster(cluster) => self.primaries(cluster).await?.into_iter().map(Some).collect(),
        })
    }

    /// Does `action` with every batch of keys matching `pattern`, node by node; how many
    /// keys it removed or moved. A key moved between two nodes during the walk (a slot
    /// being migrated) may be seen twice or not at all, as `SCAN` promises only keys that
    /// stay put; the key commands themselves follow the slot wherever it is.
    async fn walk(&self, pattern: &str, action: &mut Walk<'_>) -> Result<u64> {
        let mut count = 0;
        for node in self.scan_targets().await? {
            let mut cursor = 0;
            loop {
                let (next, keys) = self.scan(node.as_ref(), cursor, pattern).await?;
                count += match action {
                    Walk::Unlink => self.unlink(&keys).await?,
                    Walk::Move { cluster, from, to } => self.move_by_copy(cluster, keys, from, to).await?,
                    Walk::Visit(visit) => {
                        for key in &keys {
                            visit(&String::from_utf8_lossy(key));
                        }
                        0
                    }
                };
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(count)
    }

    async fn unlink(&self, keys: &[Vec<u8>]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut cmd = redis::cmd("UNLINK");
        cmd.arg(keys);
        match (&self.conn, self.query("UNLINK", &cmd).await) {
            // A multi-key command in a slot being migrated whose keys are split between
            // the two nodes (some moved, or expired, since the scan) gets `TRYAGAIN` until
            // the migration ends: one key at a time always finds its key, on the migrating
            // node or, through `ASK`, on the importing one.
            (Conn::Cluster(cluster), Err(Error::CacheCommand { source, .. })) if is_try_again(&*source) => {
                let mut tasks = JoinSet::new();
                for key in keys {
                    let (mut cluster, key) = (cluster.clone(), key.clone());
                    tasks.spawn(async move { redis::cmd("UNLINK").arg(key).query_async::<u64>(&mut cluster).await });
                }
                let mut removed = 0;
                while let Some(joined) = tasks.join_next().await {
                    removed += joined
                        .map_err(|err| self.error("UNLINK", RedisError::from(std::io::Error::other(err))))?
                        .map_err(|err| self.error("UNLINK", err))?;
                }
                Ok(removed)
            }
            (_, result) => result,
        }
    }

    /// Moves each of `keys` (all starting with `from`) to the same key starting with `to`,
    /// on a cluster, where the two namespaces hash to different slots and `RENAME` cannot
    /// span them: `PTTL` + `DUMP`, then `RESTORE … REPLACE` with the TTL left, then
    /// `UNLINK`. Keys in parallel, each in that order.
    async fn move_by_copy(&self, cluster: &ClusterConnection, keys: Vec<Vec<u8>>, from: &str, to: &str) -> Result<u64> {
        let mut tasks = JoinSet::new();
        for key in keys {
            let Some(rest) = key.strip_prefix(from.as_bytes()) else { continue };
            let mut target = to.as_bytes().to_vec();
            target.extend_from_slice(rest);
            let mut cluster = cluster.clone();
            tasks.spawn(async move {
                // Both on the same key: one pipeline, one node, `ASK` followed for both.
                let (pttl, payload): (i64, Option<Vec<u8>>) =
                    redis::pipe().cmd("PTTL").arg(&key).cmd("DUMP").arg(&key).query_async(&mut cluster).await?;
                let Some(payload) = payload.filter(|_| pttl != -2) else {
                    // Expired or removed since the scan: nothing to move.
                    return Ok::<u64, RedisError>(0);
                };
                // `RESTORE`'s TTL is relative, in milliseconds; 0 is none.
                let ttl = pttl.max(0);
                redis::cmd("RESTORE")
                    .arg(&target)
                    .arg(ttl)
                    .arg(payload)
                    .arg("REPLACE")
                    .query_async::<()>(&mut cluster)
                    .await?;
                redis::cmd("UNLINK").arg(&key).query_async::<u64>(&mut cluster).await?;
                Ok(1)
            });
        }
        let mut moved = 0;
        while let Some(joined) = tasks.join_next().await {
            moved += joined
                .map_err(|err| self.error("RESTORE", RedisError::from(std::io::Error::other(err))))?
                .map_err(|err| self.error("RESTORE", err))?;
        }
        Ok(moved)
    }
}

/// What [`RedisStore::walk`] does with each batch of keys.
enum Walk<'a> {
    /// Removes them.
    Unlink,
    /// Moves them from one namespace to another (a cluster).
    Move { cluster: &'a ClusterConnection, from: &'a str, to: &'a str },
    /// Shows them to a visitor.
    Visit(&'a mut (dyn for<'k> FnMut(&'k str) + Send)),
}

fn is_try_again(err: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    err.downcast_ref::<RedisError>().is_some_and(|err| err.kind() == ErrorKind::Server(ServerErrorKind::TryAgain))
}

/// A `redis+cluster://` URL (`rest` is what follows the scheme) with its password, if
/// any, replaced by `***`. Everything up to the last `@` is taken as the credentials, so
/// a password with an unescaped `/` or `@` is hidden too.
fn redact_cluster_url(rest: &str) -> String {
    match rest.rsplit_once('@') {
        Some((credentials, hosts)) if credentials.contains(':') => {
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{CLUSTER_SCHEME}{user}:***@{hosts}")
        }
        _ => format!("{CLUSTER_SCHEME}{rest}"),
    }
}

/// The node URLs of a `redis+cluster://` URL (`rest` is what follows the scheme), each
/// `redis://[user:password@]host:port`; or what is wrong with it.
fn cluster_nodes(rest: &str) -> std::result::Result<Vec<String>, String> {
    // The credentials first (up to the last `@`): a password may hold a `/` or `?`.
    let (credentials, rest) = match rest.rsplit_once('@') {
        Some((credentials, rest)) => (Some(credentials), rest),
        None => (None, rest),
    };
    let hosts = match rest.find(['/', '?', '#']) {
        Some(end) if !rest[end..].trim_start_matches('/').is_empty() => {
            return Err(format!(
                "a Redis Cluster URL has nothing after its nodes (no database: a cluster has only 0), found '{}'",
                &rest[end..]
            ));
        }
        Some(end) => &rest[..end],
        None => rest,
    };
    let mut nodes = Vec::new();
    for node in hosts.split(',') {
        let node = node.trim();
        let port = node.rsplit_once(':').filter(|(host, _)| !host.is_empty() && !host.ends_with(':'));
        match port.map(|(host, port)| (host, port.parse::<u16>())) {
            Some((host, Ok(port))) if port != 0 => {
                let auth = credentials.map(|c| format!("{c}@")).unwrap_or_default();
                nodes.push(format!("redis://{auth}{host}:{port}"));
            }
            _ => return Err(format!("'{node}' is not a node: each node is host:port (port 1-65535)")),
        }
    }
    Ok(nodes)
}

/// The primaries `CLUSTER NODES` lists that can serve: flagged `master`, not failed, not
/// in a handshake, with an address. Each line is
/// `<id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>…`.
fn parse_primaries(text: &str) -> Vec<Node> {
    let mut nodes = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(_id), Some(address), Some(flags)) = (fields.next(), fields.next(), fields.next()) else { continue };
        let flags: Vec<&str> = flags.split(',').collect();
        if !flags.contains(&"master") || flags.iter().any(|f| matches!(*f, "fail" | "handshake" | "noaddr")) {
            continue;
        }
        let address = address.split(['@', ',']).next().unwrap_or_default();
        let Some((host, port)) = address.rsplit_once(':') else { continue };
        let Ok(port) = port.parse() else { continue };
        if host.is_empty() {
            continue;
        }
        nodes.push(Node { host: host.to_owned(), port });
    }
    nodes
}

#[async_trait::async_trait]
impl CacheStore for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.query("GET", redis::cmd("GET").arg(key)).await
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<()> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        if let Some(ttl) = ttl {
            // Redis refuses `PX 0`; a TTL under a millisecond rounds up to one.
            let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            cmd.arg("PX").arg(millis);
        }
        self.query("SET", &cmd).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let removed: u64 = self.query("UNLINK", redis::cmd("UNLINK").arg(key)).await?;
        Ok(removed > 0)
    }

    async fn delete_namespace(&self, namespace: &str) -> Result<u64> {
        let pattern = namespace_pattern(namespace);
        if let Conn::Single(_) = self.conn {
            let (mut cursor, mut found) = self.scan(None, 0, &pattern).await?;
            let mut removed = 0;
            // Each batch is unlinked while the next SCAN step runs, over the same
            // multiplexed connection: one round trip per step instead of two.
            while cursor != 0 {
                let (unlinked, next) = tokio::join!(self.unlink(&found), self.scan(None, cursor, &pattern));
                removed += unlinked?;
                (cursor, found) = next?;
            }
            removed += self.unlink(&found).await?;
            return Ok(removed);
        }
        // A cluster: every primary is scanned, since a tenant's slot may move (or be
        // moving: its keys then sit on two nodes) between two clears. What each node's
        // scan finds is unlinked through the slot's routing, which follows `ASK` to the
        // importing node for keys already migrated.
        self.walk(&pattern, &mut Walk::Unlink).await
    }

    async fn move_namespace(&self, from: &str, to: &str) -> Result<Option<u64>> {
        let pattern = namespace_pattern(from);
        if let Conn::Cluster(cluster) = &self.conn {
            return self.walk(&pattern, &mut Walk::Move { cluster, from, to }).await.map(Some);
        }
        // One server: `RENAME` keeps the value and its TTL. Keys renamed leave the
        // pattern, so the scan goes on over the rest; one key at a time, in SCAN-sized
        // steps.
        let mut cursor = 0;
        let mut moved = 0;
        loop {
            let (next, keys) = self.scan(None, cursor, &pattern).await?;
            for key in keys {
                let Some(rest) = key.strip_prefix(from.as_bytes()) else { continue };
                let mut target = to.as_bytes().to_vec();
                target.extend_from_slice(rest);
                match self.query::<()>("RENAME", redis::cmd("RENAME").arg(&key).arg(&target)).await {
                    Ok(()) => moved += 1,
                    // Expired between the scan and the rename: nothing to move.
                    Err(Error::CacheCommand { source, .. }) if source.to_string().contains("no such key") => {}
                    Err(err) => return Err(err),
                }
            }
            if next == 0 {
                return Ok(Some(moved));
            }
            cursor = next;
        }
    }

    async fn visit_keys(&self, prefix: &str, visit: &mut (dyn for<'k> FnMut(&'k str) + Send)) -> Result<bool> {
        // SCAN in batches, never KEYS: the server keeps serving between steps.
        self.walk(&namespace_pattern(prefix), &mut Walk::Visit(visit)).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_name_their_nodes() {
        assert_eq!(
            cluster_nodes("127.0.0.1:7001,127.0.0.1:7002, 127.0.0.1:7003").unwrap(),
            ["redis://127.0.0.1:7001", "redis://127.0.0.1:7002", "redis://127.0.0.1:7003"]
        );
        assert_eq!(cluster_nodes("u:p%40ss@h:1,k:2/").unwrap(), ["redis://u:p%40ss@h:1", "redis://u:p%40ss@k:2"]);
        assert_eq!(cluster_nodes("[::1]:7001").unwrap(), ["redis://[::1]:7001"]);
        assert_eq!(cluster_nodes(":p/w?x@h:1").unwrap(), ["redis://:p/w?x@h:1"]);
        for bad in ["", "h", "h:", ":1", "h:1,", "h:1,,k:2", "h:x", "h:0", "h:70000", "h:1/0", "h:1?db=2"] {
            assert!(cluster_nodes(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn cluster_urls_are_redacted() {
        assert_eq!(redact_cluster_url("u:s3cret@h:1,k:2"), "redis+cluster://u:***@h:1,k:2");
        assert_eq!(redact_cluster_url(":s3/c@ret@h:1"), "redis+cluster://:***@h:1");
        assert_eq!(redact_cluster_url("h:1,k:2"), "redis+cluster://h:1,k:2");
        let err = RedisStore::open("redis+cluster://u:s3cret@h:1,k").unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("Invalid cache URL 'redis+cluster://u:***@h:1,k': 'k' is not a node"), "{message}");
        assert!(message.contains("redis+cluster://[user:password@]host:port[,host:port...]"), "{message}");
        assert!(!format!("{err:?}").contains("s3cret"));
    }

    #[test]
    fn cluster_nodes_lists_usable_primaries() {
        let text = "\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460
a2 127.0.0.1:7002@17002,host2 master - 0 1 2 connected 5461-10922 [5000->-a1]
a3 127.0.0.1:7003@17003 slave a1 0 1 3 connected
a4 127.0.0.1:7004@17004 master,fail - 0 1 4 disconnected
a5 :0@0 master,noaddr - 0 1 5 disconnected
a6 127.0.0.1:7006@17006 master - 0 1 6 connected
";
        assert_eq!(
            parse_primaries(text),
            [
                Node { host: "127.0.0.1".to_owned(), port: 7001 },
                Node { host: "127.0.0.1".to_owned(), port: 7002 },
                Node { host: "127.0.0.1".to_owned(), port: 7006 },
            ]
        );
    }
}
