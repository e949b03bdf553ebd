//! Test harness of the tenancy workspace (not published).
//!
//! Every test makes its own uniquely named master database, roles and files and drops
//! them when it ends, even when it panics, so tests run in parallel and leave nothing
//! behind. Services are found through environment variables with loopback defaults:
//!
//! | variable | default |
//! | --- | --- |
//! | `TENANCY_TEST_POSTGRES_URL` | `postgres://postgres@127.0.0.1:5432/postgres` |
//! | `TENANCY_TEST_REDIS_URL` | `redis://127.0.0.1:6379` |
//!
//! Tests that need a second PostgreSQL server start their own with [`PgServer`], tests
//! behind a connection pooler their own PgBouncer with [`PgBouncer`]; tests on
//! Redis Cluster start a three-primary cluster of their own with [`RedisCluster`].
//!
//! A test whose service is down is skipped with a message on a developer's machine, and
//! fails when `CI` is set: CI never passes by skipping.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};

mod pg_server;
mod pgbouncer;
mod redis_cluster;

pub use pg_server::PgServer;
pub use pgbouncer::{PgBouncer, PoolMode};
pub use redis_cluster::{ClusterNode, RedisCluster};

/// The PostgreSQL superuser URL the tests use to make their databases and roles.
pub fn postgres_admin_url() -> String {
    std::env::var("TENANCY_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The process's peak resident memory (`VmHWM` of `/proc/self/status`), in KiB; 0 where
/// it cannot be read. Benchmarks report it.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Resets the process's peak resident memory to the current one, so that
/// [`peak_rss_kib`] measures one phase (Linux: writing 5 to `/proc/self/clear_refs`).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A name no other test (in this or a parallel process) uses: `prefix_<pid>_<n>_<nanos>`,
/// lower-case and short enough for a tenant id.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{prefix}_{}_{n}_{:x}", std::process::id(), nanos & 0xffff)
}

/// Whether a missing service must fail the test (in CI) rather than skip it.
pub fn services_required() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// A fresh master database on the test PostgreSQL server, dropped with every role and
/// database registered through [`PgMaster::track_role`] / [`PgMaster::track_database`].
#[derive(Debug)]
pub struct PgMaster {
    /// The master database's name.
    pub name: String,
    /// Its URL (as the superuser).
    pub url: String,
    /// A superuser connection to the `postgres` database, for catalog assertions.
    pub admin: DatabaseConnection,
    tracked: Arc<Mutex<Tracked>>,
}

#[derive(Debug, Default)]
struct Tracked {
    roles: Vec<String>,
    databases: Vec<String>,
}

impl PgMaster {
    /// Creates the master database, or returns `None` (after saying why) when PostgreSQL is
    /// down outside CI.
    ///
    /// # Panics
    /// When PostgreSQL is down and `CI` is set.
    pub async fn create() -> Option<PgMaster> {
        let admin_url = postgres_admin_url();
        let admin = match Database::connect(admin_url.clone()).await {
            Ok(admin) => admin,
            Err(err) if !services_required() => {
                eprintln!("SKIPPED: PostgreSQL at {admin_url} is not reachable ({err}); set CI=1 to make this fatal");
                return None;
            }
            Err(err) => panic!("PostgreSQL at {admin_url} is not reachable: {err}"),
        };
        let name = unique_name("tenancy_t");
        admin.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await.expect("create test master database");
        let url = with_database(&admin_url, &name);
        let tracked = Arc::new(Mutex::new(Tracked { roles: Vec::new(), databases: vec![name.clone()] }));
        Some(PgMaster { name, url, admin, tracked })
    }

    /// The port of the PostgreSQL server the master database is on.
    pub fn server_port(&self) -> u16 {
        url_port(&self.url)
    }

    /// Drops `role` (if it exists) when this master is dropped.
    pub fn track_role(&self, role: &str) {
        self.tracked.lock().expect("lock").roles.push(role.to_owned());
    }

    /// Drops `database` (if it exists) when this master is dropped.
    pub fn track_database(&self, database: &str) {
        self.tracked.lock().expect("lock").databases.push(database.to_owned());
    }

    /// A [`tenancy::Tenancy`] on this master, its secret key file in `dir`.
    pub async fn tenancy(&self, dir: &TempDir) -> tenancy::Tenancy {
        self.builder(dir).connect().await.expect("connect the test master")
    }

    /// A [`tenancy::TenancyBuilder`] for this master, its secret key file in `dir`, for
    /// tests that set more options.
    pub fn builder(&self, dir: &TempDir) -> tenancy::TenancyBuilder {
        tenancy::Tenancy::builder(self.url.clone()).secret_key_file(dir.path().join("key"))
    }

    /// A request for a new tenant database on this server (unique names, dropped with
    /// this master) with the given password.
    pub fn new_database(&self, password: &str) -> tenancy::NewDatabase {
        let (db, user) = (unique_name("db"), unique_name("u"));
        self.track_database(&db);
        self.track_role(&user);
        tenancy::NewDatabase::create(db)
            .login(user, tenancy::secrets::Password::new(password))
            .server("127.0.0.1", 5432)
    }

    /// A superuser connection to the master database itself.
    pub async fn connect(&self) -> DatabaseConnection {
        Database::connect(self.url.clone()).await.expect("connect to test master")
    }

    /// Runs a query with one bound text parameter on the admin connection and returns
    /// whether it produced a row.
    pub async fn admin_exists(&self, sql: &str, value: &str) -> bool {
        exists(&self.admin, sql, value).await
    }
}

/// Whether `sql` with `$1 = value` returns a row.
pub async fn exists(db: &DatabaseConnection, sql: &str, value: &str) -> bool {
    db.query_one_raw(Statement::from_sql_and_values(db.get_database_backend(), sql, [value.into()]))
        .await
        .expect("catalog query")
        .is_some()
}

/// The values of the first column of `sql` (with `$1`/`?` bound to `value` if given), as
/// strings.
pub async fn column_strings(db: &DatabaseConnection, sql: &str, values: Vec<sea_orm::Value>) -> Vec<String> {
    db.query_all_raw(Statement::from_sql_and_values(db.get_database_backend(), sql, values))
        .await
        .expect("query")
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).expect("text column"))
        .collect()
}

/// Counts rows of `sql` (which must select one integer).
pub async fn count(db: &DatabaseConnection, sql: &str, values: Vec<sea_orm::Value>) -> i64 {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(db.get_database_backend(), sql, values))
        .await
        .expect("count query")
        .expect("one row");
    row.try_get_by_index::<i64>(0).expect("integer")
}

impl Drop for PgMaster {
    fn drop(&mut self) {
        let tracked = std::mem::take(&mut *self.tracked.lock().unwrap_or_else(|e| e.into_inner()));
        let admin_url = postgres_admin_url();
        // Drop runs inside the test's runtime, which cannot be blocked on: clean up from
        // a thread with a runtime of its own.
        let cleaner = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("cleanup runtime");
            runtime.block_on(async move {
                let Ok(admin) = Database::connect(admin_url).await else {
                    return;
                };
                for db in tracked.databases.iter().rev() {
                    let _ = admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)")).await;
                }
                // The table-isolation application role of each dropped master database
                // (`tenancy::rls::app_role`: derived from the database name).
                for db in &tracked.databases {
                    let _ = admin
                        .execute_unprepared(&format!(
                            "DO $cleanup$ BEGIN EXECUTE format('DROP ROLE IF EXISTS %I', \
                             'tenancy_app_' || left(md5('{db}'), 12)); END $cleanup$"
                        ))
                        .await;
                }
                // The tenant login roles of schema and table tenants of each dropped master
                // (`tenancy::rls::tenant_role_prefix`: `tnt_` + 10 hex of the name's MD5).
                for db in &tracked.databases {
                    let _ = admin
                        .execute_unprepared(&format!(
                            "DO $cleanup$ DECLARE r text; BEGIN \
                               FOR r IN SELECT rolname FROM pg_roles \
                                 WHERE left(rolname, 15) = 'tnt_' || left(md5('{db}'), 10) || '_' LOOP \
                                 EXECUTE format('DROP ROLE IF EXISTS %I', r); \
                               END LOOP; END $cleanup$"
                        ))
                        .await;
                }
                for role in &tracked.roles {
                    let _ = admin.execute_unprepared(&format!("DROP ROLE IF EXISTS \"{role}\"")).await;
                }
                let _ = admin.close().await;
            });
        });
        let _ = cleaner.join();
    }
}

/// The port of a `postgres://` URL, 5432 when it names none.
fn url_port(url: &str) -> u16 {
    let authority = url.split("://").nth(1).and_then(|rest| rest.split('/').next()).unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    host_port.rsplit_once(':').and_then(|(_, port)| port.parse().ok()).unwrap_or(5432)
}

/// `url` with its database (path) replaced.
pub fn with_database(url: &str, database: &str) -> String {
    match url.rfind('/') {
        Some(slash) if url[..slash].contains("://") && slash > url.find("://").unwrap_or(0) + 2 => {
            let query = url[slash..].find('?').map(|q| &url[slash + q..]).unwrap_or("");
            format!("{}/{database}{query}", &url[..slash])
        }
        _ => format!("{url}/{database}"),
    }
}

/// A private temporary folder, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a new, empty folder under the system's temporary folder.
    pub fn new() -> TempDir {
        let path = std::env::temp_dir().join(unique_name("tenancy_test"));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The URL of a SQLite master database file in this folder.
    pub fn sqlite_master_url(&self) -> String {
        format!("sqlite://{}/master.db?mode=rwc", self.0.display())
    }

    /// A builder for the SQLite master of [`TempDir::sqlite_master_url`], with its secret
    /// key file in this folder too.
    pub fn sqlite_builder(&self) -> tenancy::TenancyBuilder {
        tenancy::Tenancy::builder(self.sqlite_master_url()).secret_key_file(self.0.join("key"))
    }
}

/// Creates one ready table-isolated tenant per prefix (ids made unique with
/// [`unique_name`]), migrated with `hooks` when `migrate` (`&()` and `false` for none), and
/// returns their handles in the same order.
pub async fn table_tenants<H: tenancy::ProvisionHooks>(
    tenancy: &tenancy::Tenancy,
    hooks: &H,
    migrate: bool,
    prefixes: &[&str],
) -> Vec<tenancy::TenantConnection> {
    let mut handles = Vec::with_capacity(prefixes.len());
    for prefix in prefixes {
        let id: tenancy::TenantId = unique_name(prefix).parse().expect("a valid tenant id");
        let new = tenancy::NewTenant::new(id.clone(), (*prefix).to_owned(), tenancy::Isolation::Table)
            .expect("a valid new tenant")
            .migrate(migrate);
        tenancy.create_tenant(new, hooks).await.expect("create table tenant");
        handles.push(tenancy.tenant(&id).await.expect("table tenant handle"));
    }
    handles
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The Redis URL the cache tests use.
pub fn redis_url() -> String {
    std::env::var("TENANCY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A unique key prefix on the test Redis whose keys are all removed on drop (even on
/// panic), with a connection for assertions on the raw keys.
///
/// The prefix is [`unique_name`] (letters, digits and `_`, which the cache's key encoding
/// keeps as they are) followed by `suffix`, so every key the cache makes under it starts
/// with the unique part and clean-up can find them with a plain `SCAN MATCH`.
pub struct RedisPrefix {
    /// The prefix to give `CacheConfig::prefix`.
    pub prefix: String,
    unique: String,
    /// A connection to the test Redis.
    pub conn: redis::aio::ConnectionManager,
}

impl std::fmt::Debug for RedisPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPrefix").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl RedisPrefix {
    /// Connects to the test Redis, or returns `None` (after saying why) when it is down
    /// outside CI.
    ///
    /// # Panics
    /// When Redis is down and `CI` is set.
    pub async fn create(suffix: &str) -> Option<RedisPrefix> {
        let url = redis_url();
        let connect = async {
            let client = redis::Client::open(url.as_str())?;
            let mut conn = redis::aio::ConnectionManager::new(client).await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await?;
            Ok::<_, redis::RedisError>(conn)
        };
        let conn = match tokio::time::timeout(std::time::Duration::from_secs(10), connect).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(err)) if !services_required() => {
                eprintln!("SKIPPED: Redis at {url} is not reachable ({err}); set CI=1 to make this fatal");
                return None;
            }
            Err(_) if !services_required() => {
                eprintln!("SKIPPED: Redis at {url} did not answer; set CI=1 to make this fatal");
                return None;
            }
            Ok(Err(err)) => panic!("Redis at {url} is not reachable: {err}"),
            Err(_) => panic!("Redis at {url} did not answer within 10 seconds"),
        };
        let unique = unique_name("cache_t");
        Some(RedisPrefix { prefix: format!("{unique}{suffix}"), unique, conn })
    }

    /// Every key under this prefix, sorted.
    pub async fn keys(&self) -> Vec<String> {
        let mut conn = self.conn.clone();
        let mut keys: Vec<String> = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}*", self.unique))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
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

    /// The raw bytes at `key`.
    pub async fn raw(&self, key: &str) -> Option<Vec<u8>> {
        let mut conn = self.conn.clone();
        redis::cmd("GET").arg(key).query_async(&mut conn).await.expect("GET")
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        // The blocking client: Drop may run inside the test's runtime, which cannot be
        // blocked on, and outside any runtime after a panic.
        let pattern = format!("{}*", self.unique);
        let Ok(client) = redis::Client::open(redis_url()) else { return };
        let Ok(mut conn) = client.get_connection() else { return };
        let mut cursor = 0u64;
        loop {
            let Ok((next, keys)): redis::RedisResult<(u64, Vec<Vec<u8>>)> =
                redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000).query(&mut conn)
            else {
                return;
            };
            if !keys.is_empty() {
                let _: redis::RedisResult<u64> = redis::cmd("UNLINK").arg(keys).query(&mut conn);
            }
            if next == 0 {
                return;
            }
            cursor = next;
        }
    }
}
