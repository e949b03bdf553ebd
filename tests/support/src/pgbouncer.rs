//! A PgBouncer of the test's own (Debian's `pgbouncer`, installed with `apt-get` when it
//! is missing) on a free loopback port, in front of a PostgreSQL server, in transaction or
//! session mode.
//!
//! Clients authenticate with SCRAM: the superuser `postgres` with a password the harness
//! writes into the auth file, every other role (tenants' login roles, database tenants'
//! users) through `auth_query` against the server's `pg_shadow`, so a role with a wrong
//! password is refused as it would be by a managed pooler. Every database is served
//! (`* = host=127.0.0.1 port=...`). `ignore_startup_parameters` is left empty, as in a
//! fresh install: a client must send no startup parameter PgBouncer does not know.
//!
//! PgBouncer refuses to run as root: as root the folder is given to the `postgres` OS
//! user and PgBouncer switches to it (`-u postgres`). It is stopped and its folder
//! removed on drop, also when the test panics.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::pg_server::{free_port, running_as_root};
use crate::{services_required, unique_name};

/// The most server connections PgBouncer opens to one database in transaction mode,
/// whatever the user. A
/// pool per role and database (every tenant login role is one) keeps its server
/// connections until they idle out, so without a cap a few hundred tenants would exhaust
/// the server's `max_connections` (100 here, shared with the tests running beside).
const DB_CONNECTIONS: u32 = 12;

/// How long PgBouncer gets to accept connections after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// PgBouncer's pool mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolMode {
    /// A server connection per transaction (`pool_mode = transaction`).
    Transaction,
    /// A server connection per client connection (`pool_mode = session`).
    Session,
}

impl PoolMode {
    fn as_str(self) -> &'static str {
        match self {
            PoolMode::Transaction => "transaction",
            PoolMode::Session => "session",
        }
    }
}

/// A running PgBouncer on `127.0.0.1:port`, stopped and removed on drop.
#[derive(Debug)]
pub struct PgBouncer {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    /// The superuser `postgres`'s password at PgBouncer.
    pub password: String,
    dir: PathBuf,
    pid: Option<u32>,
}

impl PgBouncer {
    /// Starts one in `mode` in front of the PostgreSQL server on `127.0.0.1:server_port`,
    /// installing Debian's package first when it is missing; `None` (after saying why)
    /// when it cannot be installed, outside CI.
    ///
    /// # Panics
    /// When it cannot be installed and `CI` is set, or when it does not start.
    pub fn start(mode: PoolMode, server_port: u16) -> Option<PgBouncer> {
        let Some(binary) = binary() else {
            let why = "Debian's pgbouncer is not installed and `apt-get install -y pgbouncer` failed";
            if services_required() {
                panic!("{why}: a test needs PgBouncer");
            }
            eprintln!("SKIPPED: {why}; set CI=1 to make this fatal");
            return None;
        };
        let dir = std::env::temp_dir().join(unique_name("tenancy_pgbouncer"));
        std::fs::create_dir_all(&dir).expect("create PgBouncer's folder");
        let password = unique_name("pgb");
        let mut bouncer = PgBouncer { port: 0, password, dir, pid: None };
        std::fs::write(bouncer.dir.join("users.txt"), format!("\"postgres\" \"{}\"\n", bouncer.password))
            .expect("write the auth file");
        let run_as = running_as_root().then_some("postgres");
        if let Some(user) = run_as {
            let out = Command::new("chown").args(["-R", &format!("{user}:")]).arg(&bouncer.dir).output();
            assert!(out.is_ok_and(|out| out.status.success()), "chown PgBouncer's folder");
        }
        let mut last = String::new();
        // A port found free can be taken before PgBouncer binds it: try a few.
        for _ in 0..3 {
            let port = free_port();
            let config = bouncer.dir.join("pgbouncer.ini");
            std::fs::write(&config, bouncer.config(mode, port, server_port)).expect("write pgbouncer.ini");
            let mut command = Command::new(&binary);
            command.arg("-d");
            if let Some(user) = run_as {
                command.args(["-u", user]);
            }
            let out = command.arg(&config).stdin(Stdio::null()).output().expect("run pgbouncer");
            if out.status.success() && bouncer.wait_ready(port) {
                bouncer.port = port;
                bouncer.pid = std::fs::read_to_string(bouncer.dir.join("pgbouncer.pid"))
                    .ok()
                    .and_then(|pid| pid.trim().parse().ok());
                return Some(bouncer);
            }
            last = format!(
                "{}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(bouncer.dir.join("pgbouncer.log")).unwrap_or_default()
            );
            bouncer.kill();
        }
        panic!("PgBouncer did not start on 3 ports: {last}");
    }

    /// The URL of `database` at PgBouncer as `user` with `password`.
    pub fn url(&self, user: &str, password: &str, database: &str) -> String {
        format!("postgres://{user}:{password}@127.0.0.1:{}/{database}", self.port)
    }

    /// The URL of `database` at PgBouncer as the superuser `postgres`.
    pub fn superuser_url(&self, database: &str) -> String {
        self.url("postgres", &self.password, database)
    }

    /// PgBouncer's log so far, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }

    fn config(&self, mode: PoolMode, port: u16, server_port: u16) -> String {
        let dir = self.dir.display();
        format!(
            "[databases]\n\
             * = host=127.0.0.1 port={server_port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = scram-sha-256\n\
             auth_file = {dir}/users.txt\n\
             auth_user = postgres\n\
             auth_query = SELECT usename, passwd FROM pg_shadow WHERE usename = $1\n\
             pool_mode = {mode}\n\
             admin_users = postgres\n\
             max_client_conn = 2000\n\
             default_pool_size = {pool_size}\n\
             max_db_connections = {cap}\n\
             server_idle_timeout = 2\n\
             logfile = {dir}/pgbouncer.log\n\
             pidfile = {dir}/pgbouncer.pid\n",
            mode = mode.as_str(),
            // In session mode a client keeps its server connection: a cap would make the
            // clients beyond it wait for ever.
            cap = if mode == PoolMode::Transaction { DB_CONNECTIONS } else { 0 },
            // In session mode every client connection of a pool needs a server connection
            // of its own: as many as the application's pools may open.
            pool_size = if mode == PoolMode::Transaction { 4 } else { 20 },
        )
    }

    /// Whether it accepts TCP connections on `port` within [`START_TIMEOUT`].
    fn wait_ready(&self, port: u16) -> bool {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn kill(&mut self) {
        let pid = self.pid.take().or_else(|| {
            std::fs::read_to_string(self.dir.join("pgbouncer.pid")).ok().and_then(|pid| pid.trim().parse().ok())
        });
        if let Some(pid) = pid {
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            // Bounded: PgBouncer exits at once on SIGTERM.
            for _ in 0..100 {
                if !PathBuf::from(format!("/proc/{pid}")).exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// PgBouncer's binary, installing Debian's package when it is missing (one `apt-get` at a
/// time across test processes, under `flock`).
fn binary() -> Option<PathBuf> {
    let find = || {
        ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer", "/usr/local/bin/pgbouncer"]
            .into_iter()
            .map(PathBuf::from)
            .find(|path| path.is_file())
    };
    if let Some(found) = find() {
        return Some(found);
    }
    // `apt-get update` first only when the package lists are missing.
    let installed = Command::new("flock")
        .args([
            "/tmp/tenancy-apt-get.lock",
            "sh",
            "-c",
            "apt-get install -y -q pgbouncer || { apt-get update -q && apt-get install -y -q pgbouncer; }",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|out| out.status.success());
    if !installed {
        return None;
    }
    find()
}
