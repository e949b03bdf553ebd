//! A PostgreSQL server of the test's own (`initdb` into a temporary folder, `pg_ctl`
//! start on a free loopback port), for tests that need a second server: a tenant moved to
//! another server and back, a clone made on another server, a server that goes down.
//!
//! `initdb` refuses to run as root: as root (the CI machine) the folder is given to the
//! `postgres` OS user and the server's commands run as that user (`runuser`). The server
//! trusts loopback connections as superuser `postgres`, so the admin URL the other tests
//! use serves it too once its port is swapped in. It is stopped (`-m immediate`) and its
//! folder removed on drop, also when the test panics.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::{services_required, unique_name};

/// How many ports a start tries (a port found free can be taken before the server binds it).
const START_ATTEMPTS: usize = 3;

/// How long `pg_ctl start` waits for the server, and how many `pg_isready` probes follow.
const START_TIMEOUT_SECS: u32 = 30;
const READY_PROBES: usize = 60;

/// A running PostgreSQL server on `127.0.0.1:port`, stopped and removed on drop.
#[derive(Debug)]
pub struct PgServer {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    /// The folder holding its data directory (`data`), log (`log`) and Unix socket.
    dir: PathBuf,
    bindir: PathBuf,
    /// The OS user its commands run as (`postgres` when the tests run as root).
    run_as: Option<&'static str>,
    running: bool,
    /// The superuser's password once [`PgServer::require_passwords`] was called.
    password: Option<String>,
}

impl PgServer {
    /// Starts a new server, or returns `None` (after saying why) when PostgreSQL's server
    /// binaries are not installed, outside CI.
    ///
    /// # Panics
    /// When the binaries are missing and `CI` is set, or when the server does not start.
    pub fn start() -> Option<PgServer> {
        let Some(bindir) = server_bindir() else {
            let why = "PostgreSQL's initdb/pg_ctl are not installed (looked in `pg_config --bindir`, \
                       /usr/local/bin and PATH)";
            if services_required() {
                panic!("{why}: a test needs a second PostgreSQL server");
            }
            eprintln!("SKIPPED: {why}; set CI=1 to make this fatal");
            return None;
        };
        let run_as = running_as_root().then_some("postgres");
        let dir = std::env::temp_dir().join(unique_name("tenancy_pg"));
        std::fs::create_dir_all(&dir).expect("create the server's folder");
        let mut server = PgServer { port: 0, dir, bindir, run_as, running: false, password: None };
        if let Some(user) = run_as {
            let out = Command::new("chown").arg(format!("{user}:")).arg(&server.dir).output().expect("run chown");
            assert!(out.status.success(), "chown {user}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let data = server.data_dir();
        let out = server.pg_command("initdb", |c| {
            c.arg("-D").arg(&data).args(["-A", "trust", "-U", "postgres", "-N", "-E", "UTF8", "--locale=C"]);
        });
        assert!(out.status.success(), "initdb: {}{}", text(&out.stdout), text(&out.stderr));

        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let out = server.pg_ctl_start(port);
            if out.status.success() {
                server.port = port;
                server.running = true;
                break;
            }
            last = format!(
                "{}{}\n{}",
                text(&out.stdout),
                text(&out.stderr),
                std::fs::read_to_string(server.dir.join("log")).unwrap_or_default()
            );
            // A failed start may leave a postmaster behind: stop it before another port.
            server.stop_quietly();
        }
        assert!(server.running, "pg_ctl start failed on {START_ATTEMPTS} ports: {last}");
        server.wait_ready();
        Some(server)
    }

    /// Starts it again after [`PgServer::stop`], on the same port with the same data, for
    /// tests of a server that comes back.
    ///
    /// # Panics
    /// When it does not start (its port was taken meanwhile, for one).
    pub fn start_again(&mut self) {
        assert!(!self.running, "the test PostgreSQL server on port {} is running", self.port);
        let out = self.pg_ctl_start(self.port);
        assert!(
            out.status.success(),
            "pg_ctl start on port {}: {}{}\n{}",
            self.port,
            text(&out.stdout),
            text(&out.stderr),
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        );
        self.running = true;
        self.wait_ready();
    }

    /// Starts it again after [`PgServer::stop`] ([`PgServer::start_again`]).
    ///
    /// # Panics
    /// When it does not start.
    pub fn restart(&mut self) {
        self.start_again();
    }

    /// `pg_ctl start` on `port`, logging to the folder's `log`.
    fn pg_ctl_start(&self, port: u16) -> Output {
        let (data, log) = (self.data_dir(), self.dir.join("log"));
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60 -c shared_buffers=16MB",
            self.dir.display()
        );
        self.pg_command("pg_ctl", |c| {
            c.arg("-D").arg(&data).arg("-l").arg(&log).arg("-o").arg(&options);
            c.args(["-w", "-t", &START_TIMEOUT_SECS.to_string(), "start"]);
        })
    }

    /// Waits until it accepts connections.
    fn wait_ready(&self) {
        for _ in 0..READY_PROBES {
            if self.is_ready() {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("the test PostgreSQL server on port {} did not accept connections", self.port);
    }

    /// The superuser URL of its `postgres` database.
    pub fn admin_url(&self) -> String {
        self.url("postgres")
    }

    /// The superuser URL of `database` on it (with the password, once passwords are
    /// required).
    pub fn url(&self, database: &str) -> String {
        match &self.password {
            Some(password) => format!("postgres://postgres:{password}@127.0.0.1:{}/{database}", self.port),
            None => format!("postgres://postgres@127.0.0.1:{}/{database}", self.port),
        }
    }

    /// Makes the server ask every TCP connection for a password (SCRAM-SHA-256), as a
    /// production server does, the superuser's being `password` (an ASCII word): from
    /// then on a role without the right password cannot connect, so a test can tell which
    /// credentials a connection really used. [`PgServer::url`] carries the password.
    ///
    /// # Panics
    /// When the server cannot be configured so, or still lets a connection in without a
    /// password after the reload.
    pub async fn require_passwords(&mut self, password: &str) {
        use sea_orm::ConnectionTrait;
        assert!(password.chars().all(|c| c.is_ascii_alphanumeric()), "an ASCII word");
        let trusting = self.admin_url();
        let admin = sea_orm::Database::connect(trusting.clone()).await.expect("connect the test server");
        admin.execute_unprepared(&format!("ALTER ROLE postgres PASSWORD '{password}'")).await.expect("set a password");
        admin.close().await.expect("close");
        // The Unix socket (pg_ctl, pg_isready) stays trusted; TCP asks for passwords.
        let hba = "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n";
        std::fs::write(self.data_dir().join("pg_hba.conf"), hba).expect("write pg_hba.conf");
        let data = self.data_dir();
        let out = self.pg_command("pg_ctl", |c| {
            c.arg("-D").arg(&data).arg("reload");
        });
        assert!(out.status.success(), "pg_ctl reload: {}{}", text(&out.stdout), text(&out.stderr));
        self.password = Some(password.to_owned());
        // The reload is a signal: wait until the postmaster has read the new file.
        for _ in 0..READY_PROBES {
            if sea_orm::Database::connect(trusting.clone()).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the test server on port {} still lets connections in without a password", self.port);
    }

    /// Whether it accepts connections now (`pg_isready`).
    pub fn is_ready(&self) -> bool {
        Command::new(self.bindir.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string(), "-t", "2"])
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    /// Stops it at once (`pg_ctl stop -m immediate`), for tests of a server that is down;
    /// its port stays this server's (nothing else is started on it by the harness).
    ///
    /// # Panics
    /// When it does not stop.
    pub fn stop(&mut self) {
        let out = self.stop_quietly();
        assert!(out.status.success(), "pg_ctl stop: {}{}", text(&out.stdout), text(&out.stderr));
        self.running = false;
        assert!(!self.is_ready(), "the test PostgreSQL server on port {} still answers", self.port);
    }

    fn stop_quietly(&self) -> Output {
        let data = self.data_dir();
        self.pg_command("pg_ctl", |c| {
            c.arg("-D").arg(&data).args(["-m", "immediate", "-w", "-t", "30", "stop"]);
        })
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Runs one of the server binaries (as the `postgres` user when root), in the folder.
    fn pg_command(&self, name: &str, build: impl FnOnce(&mut Command)) -> Output {
        let binary = self.bindir.join(name);
        let mut command = match self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(&binary);
                command
            }
            None => Command::new(&binary),
        };
        command.current_dir(&self.dir).stdin(Stdio::null());
        // The server must not pick up the caller's connection defaults.
        for var in ["PGDATA", "PGPORT", "PGHOST", "PGUSER", "PGDATABASE"] {
            command.env_remove(var);
        }
        build(&mut command);
        command.output().unwrap_or_else(|err| panic!("run {}: {err}", binary.display()))
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.data_dir().join("postmaster.pid").exists() {
            let _ = self.stop_quietly();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The folder holding `initdb`, `pg_ctl` and `pg_isready`.
fn server_bindir() -> Option<PathBuf> {
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(text(&out.stdout).trim()));
    let from_path =
        std::env::var_os("PATH").map(|path| std::env::split_paths(&path).collect::<Vec<_>>()).unwrap_or_default();
    let has_all = |dir: &Path| ["initdb", "pg_ctl", "pg_isready"].iter().all(|bin| dir.join(bin).is_file());
    from_pg_config.into_iter().chain([PathBuf::from("/usr/local/bin")]).chain(from_path).find(|dir| has_all(dir))
}

/// Whether this process runs as root (`/proc/self` belongs to the process's user).
pub(crate) fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

/// A loopback port nothing listens on right now.
pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind a free loopback port");
    listener.local_addr().expect("the bound port").port()
}
