//! The example app behind a real PgBouncer (Debian's 1.18, which tracks no prepared
//! statements), as a managed PostgreSQL puts one in front of it.
//!
//! `serve` gets the pooler's URL as `DATABASE_URL`, the server's own as
//! `TENANCY_DIRECT_URL` and `TENANCY_POOLER`; every tenant pool of every mode (schema and
//! table tenants' login roles, database tenants' users) and the master pool of shared
//! transactions reach PostgreSQL through PgBouncer, whose `SHOW CLIENTS` must list them.
//! Concurrent readers over tenants of every mode check every answer against the tenant
//! they asked for: zero errors, zero rows of another tenant, also while a fleet migration
//! adds a column to half the schema and database tenants.
//!
//! Sizes: `TENANCY_PGBOUNCER_TENANTS` tenants (default 48; the run: 200), of which
//! 40% schema, 40% table, 20% database, and `TENANCY_PGBOUNCER_REQUESTS` requests per
//! worker (default 250; the run: 2000), 8 workers.

#![allow(elided_lifetimes_in_paths, reason = "async_trait migrations must match sea-orm-migration's trait")]
#![allow(non_camel_case_types, reason = "migration structs are named like their migration files")]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use example_app::Migrator;
use example_app::entities::project;
use sea_orm::{ActiveModelTrait, Database, Set};
use sea_orm_migration::prelude::*;
use tenancy::{Isolation, NewTenant, Placement, Tenancy, TenantDatabase, TenantId};
use tenancy_migrate::fleet::{FleetOptions, migrate_all};
use tenancy_migrate::{MigrateOnCreate, Migrators};
use tenancy_test_support::{PgBouncer, PgMaster, PoolMode, TempDir, count, with_database};

use crate::move_serve::get;

/// The example migrations, plus a nullable column on `projects`: what a fleet migration
/// adds while requests are served.
#[derive(Debug)]
struct WithNote;

#[derive(DeriveMigrationName)]
struct m20261201_000001_add_project_note;

#[async_trait::async_trait]
impl MigrationTrait for m20261201_000001_add_project_note {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(Table::alter().table("projects").add_column(ColumnDef::new("note").text().null()).to_owned())
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table("projects").drop_column("note").to_owned()).await
    }
}

impl MigratorTrait for WithNote {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut all = Migrator::migrations();
        all.push(Box::new(m20261201_000001_add_project_note));
        all
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A master database with tenants of every mode, each holding one project named after
/// it, made directly (not through the pooler), as the commands make them.
struct Fleet {
    pg: PgMaster,
    dir: TempDir,
    tenancy: Tenancy,
    tenants: Vec<(String, Isolation)>,
}

impl Fleet {
    async fn new(size: usize) -> Option<Fleet> {
        let pg = PgMaster::create().await?;
        let dir = TempDir::new();
        // Few connections: the server's `max_connections` is shared with the tests beside.
        let tenancy = pg
            .builder(&dir)
            .live_registry(false)
            .max_connections(6)
            .tenant_connection_budget(4)
            .connect()
            .await
            .expect("connect the master");
        // The commands and `serve` read the key file the test names; make it once, here.
        tenancy.secret_key().expect("generate the secret key");
        let (schema, table) = (size * 2 / 5, size * 2 / 5);
        let mut tenants = Vec::new();
        for n in 0..size {
            let isolation = match n {
                n if n < schema => Isolation::Schema,
                n if n < schema + table => Isolation::Table,
                _ => Isolation::Database,
            };
            tenants.push((format!("{}{n}", &isolation.as_str()[..1]), isolation));
        }
        let next = AtomicUsize::new(0);
        let create = || async {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some((id, isolation)) = tenants.get(n) else { return };
                let database = (*isolation == Isolation::Database).then(|| pg.new_database("pooled-pw-1"));
                let new =
                    NewTenant::new(id.as_str(), id.as_str(), *isolation).expect("a new tenant").database(database);
                tenancy.create_tenant(new.migrate(true), &MigrateOnCreate::new(&Migrator)).await.expect("create");
                let handle = tenancy.tenant(id.as_str()).await.expect("the tenant's handle");
                project::ActiveModel {
                    tenant_id: Set(id.clone()),
                    name: Set(format!("{id} project")),
                    created_at: Set(chrono::Utc::now()),
                    ..Default::default()
                }
                .insert(&handle)
                .await
                .expect("insert the tenant's project");
            }
        };
        // Two creators, each needing two master connections at once (provisioning and its
        // journal). Boxed: creations side by side are too large a future for a test
        // thread's stack.
        tokio::join!(Box::pin(create()), Box::pin(create()));
        Some(Fleet { pg, dir, tenancy, tenants })
    }

    /// `serve` with `DATABASE_URL` at `bouncer`, the direct URL and `pooler`, on a free
    /// port; the address it listens on.
    fn serve(&self, bouncer: &PgBouncer, pooler: &str, binding: &str) -> (Child, SocketAddr) {
        use std::io::BufRead;
        let log = std::fs::File::create(self.dir.path().join(format!("serve-{pooler}-{binding}.log"))).expect("log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_serve"))
            .args(["--bind", "127.0.0.1:0", "--binding", binding, "--connection-budget", "8"])
            .current_dir(self.dir.path())
            .env("DATABASE_URL", bouncer.superuser_url(&self.pg.name))
            .env("TENANCY_DIRECT_URL", &self.pg.url)
            .env("TENANCY_POOLER", pooler)
            .env("TENANCY_SECRET_KEY_FILE", self.dir.path().join("key"))
            .env_remove("TENANCY_SECRET_KEY")
            .env_remove("TENANCY_BINDING")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start serve");
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("serve's first line");
        let addr = line.trim().strip_prefix("listening on http://").unwrap_or_else(|| {
            let log = std::fs::read_to_string(self.dir.path().join(format!("serve-{pooler}-{binding}.log")));
            panic!("serve did not start: {line:?} {}", log.unwrap_or_default())
        });
        let addr = addr.parse().expect("an address");
        // The rest of its output ("shut down") is read, so its last line finds a reader.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        (child, addr)
    }

    fn serve_log(&self, pooler: &str, binding: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("serve-{pooler}-{binding}.log"))).unwrap_or_default()
    }

    fn ids(&self, isolation: Isolation) -> Vec<String> {
        self.tenants.iter().filter(|(_, i)| *i == isolation).map(|(id, _)| id.clone()).collect()
    }

    /// Whether `tenant`'s `projects` table has the `note` column.
    async fn has_note(&self, id: &str) -> bool {
        let tenant = self.tenancy.get_tenant(id).await.expect("the tenant");
        match tenant.placement() {
            Placement::Database(TenantDatabase::Postgres(db)) => {
                let conn = Database::connect(with_database(&self.pg.url, &db.name)).await.expect("connect");
                let found = count(
                    &conn,
                    "SELECT count(*) FROM information_schema.columns \
                     WHERE table_schema = 'public' AND table_name = 'projects' AND column_name = $1",
                    vec!["note".into()],
                )
                .await;
                let _ = conn.close().await;
                found == 1
            }
            _ => {
                count(
                    &self.pg.connect().await,
                    "SELECT count(*) FROM information_schema.columns \
                     WHERE table_schema = $1 AND table_name = 'projects' AND column_name = 'note'",
                    vec![id.into()],
                )
                .await
                    == 1
            }
        }
    }
}

/// What the readers saw: answers that were right, and every one that was not.
#[derive(Debug, Default)]
struct Seen {
    ok: usize,
    wrong: Vec<String>,
}

/// `workers` threads, each sending `requests` `GET /projects` over the tenants in turn and
/// checking each answer is `200` with exactly the tenant's own project.
fn read_under_load(addr: SocketAddr, tenants: &[String], workers: usize, requests: usize) -> Seen {
    let tenants = Arc::new(tenants.to_vec());
    let threads: Vec<_> = (0..workers)
        .map(|worker| {
            let tenants = Arc::clone(&tenants);
            std::thread::spawn(move || {
                let mut seen = Seen::default();
                for n in 0..requests {
                    let id = &tenants[(n * 7 + worker * 13) % tenants.len()];
                    let (status, _, list) = get(addr, "/projects", id);
                    let names: Vec<&str> = list
                        .as_array()
                        .map(|rows| rows.iter().filter_map(|p| p["name"].as_str()).collect())
                        .unwrap_or_default();
                    let owners_ok = list
                        .as_array()
                        .is_some_and(|rows| rows.iter().all(|p| p["tenant_id"].as_str() == Some(id.as_str())));
                    if status == 200 && owners_ok && names == [format!("{id} project")] {
                        seen.ok += 1;
                    } else {
                        seen.wrong.push(format!("{id}: {status} {list}"));
                    }
                }
                seen
            })
        })
        .collect();
    threads.into_iter().fold(Seen::default(), |mut all, thread| {
        let seen = thread.join().expect("a reader");
        all.ok += seen.ok;
        all.wrong.extend(seen.wrong);
        all
    })
}

/// The users and databases of PgBouncer's clients (`SHOW CLIENTS` on its admin console,
/// which speaks the simple protocol only and takes no unknown startup parameter).
async fn bouncer_clients(console_url: &str) -> Vec<(String, String)> {
    use sea_orm::sqlx::{Connection, Row};
    let options: sea_orm::sqlx::postgres::PgConnectOptions = console_url.parse().expect("the console's URL");
    let mut console = sea_orm::sqlx::PgConnection::connect_with(&options.extra_float_digits(None))
        .await
        .expect("PgBouncer's console");
    let rows = sea_orm::sqlx::raw_sql("SHOW CLIENTS").fetch_all(&mut console).await.expect("SHOW CLIENTS");
    let clients = rows
        .iter()
        .map(|row| {
            (row.try_get::<String, _>("user").expect("user"), row.try_get::<String, _>("database").expect("database"))
        })
        .collect();
    let _ = console.close().await;
    clients
}

fn stop(mut child: Child, log: impl FnOnce() -> String) {
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let status = child.wait().expect("wait for serve");
    assert!(status.success(), "serve exited with {status}: {}", log());
}

/// One of these tests at a time: each holds a few dozen server connections.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_serves_every_mode_and_binding_while_a_fleet_migration_runs() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(fleet) = Fleet::new(env_usize("TENANCY_PGBOUNCER_TENANTS", 48)).await else { return };
    let Some(bouncer) = PgBouncer::start(PoolMode::Transaction, fleet.pg.server_port()) else { return };
    let requests = env_usize("TENANCY_PGBOUNCER_REQUESTS", 250);
    let all: Vec<String> = fleet.tenants.iter().map(|(id, _)| id.clone()).collect();
    // Half the schema and database tenants get the new column during the first run, the
    // other half during the second.
    let mut migrated: Vec<String> = fleet.ids(Isolation::Schema);
    migrated.extend(fleet.ids(Isolation::Database));
    let second_half = migrated.split_off(migrated.len() / 2);
    let migrators = Migrators::new(WithNote);

    for (binding, half) in [("tenant-pools", migrated.clone()), ("shared-transactions", second_half.clone())] {
        let (serve, addr) = fleet.serve(&bouncer, "transaction", binding);
        let readers = {
            let all = all.clone();
            tokio::task::spawn_blocking(move || read_under_load(addr, &all, 8, requests))
        };
        let options = FleetOptions {
            jobs: 2,
            tenants: Some(half.iter().map(|id| TenantId::new(id.clone()).expect("an id")).collect()),
            ..FleetOptions::default()
        };
        // PgBouncer's clients, sampled while the readers run: the pools open change as
        // the least recently used are evicted.
        let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let sampler = {
            let (sampling, url) = (std::sync::Arc::clone(&sampling), bouncer.superuser_url("pgbouncer"));
            tokio::spawn(async move {
                let mut seen = std::collections::BTreeSet::new();
                while sampling.load(Ordering::Relaxed) {
                    seen.extend(bouncer_clients(&url).await);
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                seen
            })
        };
        let report = migrate_all(&fleet.tenancy, &migrators, &options, &|_| {}).await.expect("the fleet run");
        assert!(report.succeeded(), "{report:?}");
        let seen = readers.await.expect("the readers");
        sampling.store(false, Ordering::Relaxed);
        let clients = sampler.await.expect("the sampler");
        assert!(
            seen.wrong.is_empty(),
            "{binding}: {} of {} answers wrong, first: {:?}\nserve's log: {}",
            seen.wrong.len(),
            seen.wrong.len() + seen.ok,
            &seen.wrong[..seen.wrong.len().min(5)],
            fleet.serve_log("transaction", binding),
        );
        assert_eq!(seen.ok, 8 * requests);
        // The app's connections are PgBouncer's clients: the tenants' own roles (schema,
        // table) and users (database) with tenant pools, the master user with shared
        // transactions.
        let users: std::collections::BTreeSet<&str> = clients.iter().map(|(user, _)| user.as_str()).collect();
        let databases: std::collections::BTreeSet<&str> = clients.iter().map(|(_, db)| db.as_str()).collect();
        if binding == "tenant-pools" {
            assert!(
                users.iter().any(|user| user.starts_with("tnt_")),
                "no tenant login role at PgBouncer: {clients:?}"
            );
            assert!(
                users.iter().any(|user| user.starts_with("u_")),
                "no database tenant's user at PgBouncer: {clients:?}"
            );
        }
        assert!(users.contains("postgres") && databases.contains(fleet.pg.name.as_str()), "{clients:?}");
        assert!(databases.iter().any(|db| db.starts_with("db_")), "no database tenant at PgBouncer: {clients:?}");
        stop(serve, || fleet.serve_log("transaction", binding));
    }
    for id in migrated.iter().chain(&second_half) {
        assert!(fleet.has_note(id).await, "{id} has no note column");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_serves_every_mode() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(fleet) = Fleet::new(10).await else { return };
    let Some(bouncer) = PgBouncer::start(PoolMode::Session, fleet.pg.server_port()) else { return };
    let all: Vec<String> = fleet.tenants.iter().map(|(id, _)| id.clone()).collect();
    let (serve, addr) = fleet.serve(&bouncer, "session", "tenant-pools");
    let seen = tokio::task::spawn_blocking(move || read_under_load(addr, &all, 4, 50)).await.expect("the readers");
    assert!(
        seen.wrong.is_empty(),
        "{:?} {}",
        &seen.wrong[..seen.wrong.len().min(5)],
        fleet.serve_log("session", "tenant-pools")
    );
    assert_eq!(seen.ok, 200);
    let clients = bouncer_clients(&bouncer.superuser_url("pgbouncer")).await;
    assert!(clients.iter().any(|(user, _)| user.starts_with("tnt_")), "{clients:?}");
    stop(serve, || fleet.serve_log("session", "tenant-pools"));
}

/// Runs `sql` on `db` as the tenant's own SQL would, without values; the error's text if
/// it fails.
async fn hostile(db: &tenancy::TenantConnection, sql: &str) -> Result<(), String> {
    use sea_orm::ConnectionTrait;
    db.execute_unprepared(sql).await.map(drop).map_err(|err| err.to_string())
}

/// The names of the projects `db` reads: its own only, or an error.
async fn project_names(db: &tenancy::TenantConnection) -> Result<Vec<String>, String> {
    use sea_orm::EntityTrait;
    let rows = project::Entity::find().all(db).await.map_err(|err| err.to_string())?;
    Ok(rows.into_iter().map(|p| p.name).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_own_sql_through_the_pooler_reaches_no_other_tenant() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(fleet) = Fleet::new(5).await else { return };
    let Some(bouncer) = PgBouncer::start(PoolMode::Transaction, fleet.pg.server_port()) else { return };
    // Through the pooler, one connection per tenant pool: the next statement of a tenant
    // runs on the client connection its hostile statement used.
    let pooled = Tenancy::builder(bouncer.superuser_url(&fleet.pg.name))
        .pooler(tenancy::Pooler::Transaction)
        .direct_url(fleet.pg.url.clone())
        .secret_key_file(fleet.dir.path().join("key"))
        .connections_per_tenant_pool(1)
        .connect()
        .await
        .expect("connect through the pooler");
    let (schema_a, schema_b) = ("s0", "s1");
    let (table_a, table_b) = ("t2", "t3");
    let own = |id: &str| Ok(vec![format!("{id} project")]);

    let a = pooled.tenant(schema_a).await.expect("a's handle");
    assert_eq!(project_names(&a).await, own(schema_a));
    for attack in [
        format!("SELECT * FROM \"{schema_b}\".projects"),
        "SET ROLE postgres".to_owned(),
        "SET SESSION AUTHORIZATION postgres".to_owned(),
        "DO $$ BEGIN EXECUTE 'SET ROLE postgres'; END $$".to_owned(),
        format!("CREATE VIEW stolen AS SELECT * FROM \"{schema_b}\".projects"),
        "SELECT * FROM pg_shadow".to_owned(),
    ] {
        assert!(hostile(&a, &attack).await.is_err(), "{schema_a} ran {attack}");
        assert_eq!(project_names(&a).await, own(schema_a), "after {attack}");
    }
    // Session settings stay on the server connections of the tenant's own role: its next
    // statement finds another schema's tables refused, never read.
    hostile(&a, &format!("SELECT set_config('search_path', '\"{schema_b}\"', false)")).await.expect("set_config");
    let after = project_names(&a).await;
    assert!(after == own(schema_a) || after.is_err(), "{schema_a} read {after:?}");
    // A temporary `projects` is the tenant's own business.
    hostile(&a, "CREATE TEMP TABLE projects (id int)").await.expect("a temporary table");

    let t = pooled.tenant(table_a).await.expect("the table tenant's handle");
    assert_eq!(project_names(&t).await, own(table_a));
    for attack in [
        format!("SELECT set_config('tenancy.tenant_id', '{table_b}', false)"),
        "SELECT set_config('row_security', 'off', false)".to_owned(),
    ] {
        let _ = hostile(&t, &attack).await;
        let names = project_names(&t).await;
        assert!(names == own(table_a) || names.is_err(), "{table_a} after {attack}: {names:?}");
    }
    assert!(hostile(&t, "ALTER TABLE projects DISABLE ROW LEVEL SECURITY").await.is_err());

    // The other tenants see nothing of it, through the same pooler.
    for id in [schema_b, table_b, "d4"] {
        let other = pooled.tenant(id).await.expect("a handle");
        assert_eq!(project_names(&other).await, own(id), "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_run_on_the_direct_url_and_refuse_a_transaction_pooler_without_it() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(fleet) = Fleet::new(0).await else { return };
    let Some(bouncer) = PgBouncer::start(PoolMode::Transaction, fleet.pg.server_port()) else { return };
    let createtenant = |id: &str, direct: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_createtenant"));
        command
            .args(["--no-input", "--id", id, "--name", id, "--isolation", "schema", "--migrate"])
            .current_dir(fleet.dir.path())
            .env("DATABASE_URL", bouncer.superuser_url(&fleet.pg.name))
            .env("TENANCY_POOLER", "transaction")
            .env("TENANCY_SECRET_KEY_FILE", fleet.dir.path().join("key"))
            .env_remove("TENANCY_SECRET_KEY")
            .env_remove("TENANCY_DIRECT_URL")
            .stdin(Stdio::null());
        if let Some(direct) = direct {
            command.env("TENANCY_DIRECT_URL", direct);
        }
        command.output().expect("run createtenant")
    };

    // Without the direct URL: refused before anything is made.
    let out = createtenant("nodirect", None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("TENANCY_DIRECT_URL"), "{stderr}");
    assert!(fleet.tenancy.find_tenant("nodirect").await.expect("the registry").is_none());

    // With it: made on the server itself, then served through the pooler.
    let out = createtenant("viadirect", Some(&fleet.pg.url));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pooled = Tenancy::builder(bouncer.superuser_url(&fleet.pg.name))
        .pooler(tenancy::Pooler::Transaction)
        .direct_url(fleet.pg.url.clone())
        .secret_key_file(fleet.dir.path().join("key"))
        .connect()
        .await
        .expect("connect through the pooler");
    let handle = pooled.tenant("viadirect").await.expect("the new tenant's handle");
    assert_eq!(project_names(&handle).await, Ok(Vec::new()));
}
