//! A Redis Cluster of the test's own: three primaries (`redis-server --cluster-enabled
//! yes`) on free loopback ports, joined with `redis-cli --cluster create`, for the cache
//! tests on Redis Cluster.
//!
//! Each server runs in the foreground as a child of the test process, with no
//! persistence, its cluster config file in a private temporary folder. The servers are
//! killed and the folder removed on drop, also when the test panics.

use std::fs::File;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{services_required, unique_name};

/// How many sets of ports a start tries (a port found free can be taken before a server
/// binds it).
const START_ATTEMPTS: usize = 3;

/// How many 100 ms probes a server gets to answer `PING`, and the joined cluster to say
/// `cluster_state:ok` on every node.
const PING_PROBES: usize = 100;
const STATE_PROBES: usize = 300;

/// A running three-primary Redis Cluster on 127.0.0.1, killed and removed on drop.
#[derive(Debug)]
pub struct RedisCluster {
    /// The primaries' ports on 127.0.0.1.
    pub ports: [u16; 3],
    dir: PathBuf,
    children: Vec<Child>,
}

/// A node as `CLUSTER NODES` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// Its node id.
    pub id: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The slot ranges it owns.
    pub slots: Vec<RangeInclusive<u16>>,
}

impl RedisCluster {
    /// Starts a cluster, or returns `None` (after saying why) when `redis-server` or
    /// `redis-cli` is not installed, outside CI.
    ///
    /// # Panics
    /// When the binaries are missing and `CI` is set, or when the cluster does not form.
    pub fn start() -> Option<RedisCluster> {
        let installed = |bin: &str| {
            Command::new(bin)
                .arg("--version")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        };
        if !installed("redis-server") || !installed("redis-cli") {
            let why = "redis-server/redis-cli are not installed (looked in PATH)";
            if services_required() {
                panic!("{why}: a test needs a Redis Cluster");
            }
            eprintln!("SKIPPED: {why}; set CI=1 to make this fatal");
            return None;
        }
        let dir = std::env::temp_dir().join(unique_name("tenancy_redis_cluster"));
        std::fs::create_dir_all(&dir).expect("create the cluster's folder");
        let mut cluster = RedisCluster { ports: [0; 3], dir, children: Vec::new() };
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            cluster.ports = free_ports();
            match cluster.spawn_servers() {
                Ok(()) => break,
                Err(why) => {
                    last = why;
                    cluster.kill();
                }
            }
        }
        assert!(!cluster.children.is_empty(), "redis-server did not start on {START_ATTEMPTS} sets of ports: {last}");

        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for port in cluster.ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for _ in 0..STATE_PROBES {
            if cluster.ports.iter().all(|&port| cluster.state_ok(port)) {
                return Some(cluster);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the test Redis Cluster on ports {:?} did not reach cluster_state:ok", cluster.ports);
    }

    /// The cache URL naming all three nodes: `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.ports.iter().map(|port| format!("127.0.0.1:{port}")).collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// The plain URL of the node on `port`.
    pub fn node_url(port: u16) -> String {
        format!("redis://127.0.0.1:{port}")
    }

    /// A blocking connection to the node on `port` alone (commands on keys it does not
    /// serve get `MOVED`/`ASK`, as from any plain client).
    pub fn node(&self, port: u16) -> redis::Connection {
        redis::Client::open(Self::node_url(port))
            .and_then(|client| client.get_connection())
            .unwrap_or_else(|err| panic!("connect to the cluster node on port {port}: {err}"))
    }

    /// A cluster client connection, routed by key.
    pub async fn connect(&self) -> redis::cluster_async::ClusterConnection {
        let nodes: Vec<String> = self.ports.iter().map(|&port| Self::node_url(port)).collect();
        redis::cluster::ClusterClient::new(nodes)
            .expect("cluster client")
            .get_async_connection()
            .await
            .expect("connect to the test Redis Cluster")
    }

    /// The nodes as the node on the first port sees them, in port order.
    pub fn nodes(&self) -> Vec<ClusterNode> {
        let text: String =
            redis::cmd("CLUSTER").arg("NODES").query(&mut self.node(self.ports[0])).expect("CLUSTER NODES");
        let mut nodes: Vec<ClusterNode> = text
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let port = fields.get(1)?.split('@').next()?.rsplit_once(':')?.1.parse().ok()?;
                let slots = fields
                    .iter()
                    .skip(8)
                    .filter(|field| !field.starts_with('['))
                    .filter_map(|field| {
                        let (start, end) = field.split_once('-').unwrap_or((field, field));
                        Some(start.parse().ok()?..=end.parse().ok()?)
                    })
                    .collect();
                Some(ClusterNode { id: fields[0].to_owned(), port, slots })
            })
            .collect();
        nodes.sort_by_key(|node| node.port);
        nodes
    }

    /// The port of the node that owns `slot`.
    pub fn owner_of(&self, slot: u16) -> u16 {
        self.nodes()
            .into_iter()
            .find(|node| node.slots.iter().any(|range| range.contains(&slot)))
            .map(|node| node.port)
            .unwrap_or_else(|| panic!("no node owns slot {slot}"))
    }

    /// Every key on the node on `port` that starts with `start`, sorted (`SCAN`, which
    /// lists the node's own keys, whatever state their slot is in).
    pub fn keys_on(&self, port: u16, start: &str) -> Vec<String> {
        let mut conn = self.node(port);
        let mut keys = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{start}*"))
                .arg("COUNT")
                .arg(1000)
                .query(&mut conn)
                .expect("SCAN");
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        keys
    }

    /// Every key on any node that starts with `start`, sorted.
    pub fn keys(&self, start: &str) -> Vec<String> {
        let mut keys: Vec<String> = self.ports.iter().flat_map(|&port| self.keys_on(port, start)).collect();
        keys.sort();
        keys
    }

    /// Starts the three servers and waits until each answers `PING`; a server that exits
    /// (its port taken meanwhile) fails the attempt.
    fn spawn_servers(&mut self) -> Result<(), String> {
        for port in self.ports {
            let log = File::create(self.dir.join(format!("redis-{port}.log"))).expect("create the server's log");
            let child = Command::new("redis-server")
                .args(["--cluster-enabled", "yes", "--port", &port.to_string()])
                .arg("--cluster-config-file")
                .arg(self.dir.join(format!("nodes-{port}.conf")))
                .arg("--dir")
                .arg(&self.dir)
                .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1", "--daemonize", "no"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone the log handle"))
                .stderr(log)
                .spawn()
                .map_err(|err| format!("spawn redis-server: {err}"))?;
            self.children.push(child);
        }
        for _ in 0..PING_PROBES {
            for child in &mut self.children {
                if let Ok(Some(status)) = child.try_wait() {
                    let logs: Vec<String> = self
                        .ports
                        .iter()
                        .map(|port| {
                            std::fs::read_to_string(self.dir.join(format!("redis-{port}.log"))).unwrap_or_default()
                        })
                        .collect();
                    return Err(format!("a redis-server exited ({status}): {}", logs.join("\n")));
                }
            }
            if self.ports.iter().all(|&port| ping(port)) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("redis-server on ports {:?} did not answer PING", self.ports))
    }

    fn state_ok(&self, port: u16) -> bool {
        let Ok(client) = redis::Client::open(Self::node_url(port)) else { return false };
        let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(2)) else { return false };
        let info: redis::RedisResult<String> = redis::cmd("CLUSTER").arg("INFO").query(&mut conn);
        info.is_ok_and(|info| info.lines().any(|line| line.trim() == "cluster_state:ok"))
    }

    fn kill(&mut self) {
        for mut child in self.children.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ping(port: u16) -> bool {
    let Ok(client) = redis::Client::open(RedisCluster::node_url(port)) else { return false };
    let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(1)) else { return false };
    redis::cmd("PING").query::<String>(&mut conn).is_ok()
}

/// Three distinct loopback ports free now, each with its cluster bus port (`port + 10000`)
/// free too.
fn free_ports() -> [u16; 3] {
    let mut held = Vec::new();
    let mut ports = [0; 3];
    let mut found = 0;
    while found < 3 {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind a free loopback port");
        let port = listener.local_addr().expect("the bound port").port();
        let bus_free =
            port.checked_add(10000).is_some_and(|bus| std::net::TcpListener::bind(("127.0.0.1", bus)).is_ok());
        held.push(listener);
        if bus_free && !ports.contains(&port) {
            ports[found] = port;
            found += 1;
        }
    }
    ports
}
