//! The tenant lifecycle as processes: `createtenant` and `deletetenant` stopped dead after
//! every step (`TENANCY_FAULT_AFTER_STEP` aborts the process there, as `SIGKILL` would) and
//! then run once more; deletes in every mode leave nothing of the tenant and every other
//! tenant's data exactly as it was; adopted databases survive; `--dry-run` changes
//! nothing; backups restore. PostgreSQL (database, schema, table) and SQLite (database,
//! table); catalogs checked after each run.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use example_app::entities::{comment, project, task};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ConnectionTrait, DbBackend, EntityTrait, QueryOrder, Statement};
use tenancy_test_support::{PgMaster, TempDir, postgres_admin_url, unique_name};

use crate::commands::text;

pub(crate) const PASSWORD: &str = "crash-test-Pass-1";

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Setup {
    PgDatabase,
    PgSchema,
    PgTable,
    SqliteDatabase,
    SqliteTable,
    PgCache,
    SqliteCache,
}

impl Setup {
    pub(crate) fn isolation(self) -> &'static str {
        match self {
            Setup::PgDatabase | Setup::SqliteDatabase => "database",
            Setup::PgSchema => "schema",
            Setup::PgTable | Setup::SqliteTable => "table",
            Setup::PgCache | Setup::SqliteCache => "cache",
        }
    }

    /// The steps `createtenant --migrate` takes in this setup.
    fn create_steps(self) -> &'static [&'static str] {
        match self {
            Setup::PgDatabase => {
                &["claim-id", "create-role", "create-database", "grant-privileges", "migrate", "mark-ready"]
            }
            Setup::PgSchema => {
                &["claim-id", "create-role", "create-schema", "grant-privileges", "migrate", "mark-ready"]
            }
            Setup::PgTable => &["claim-id", "create-role", "migrate", "mark-ready"],
            Setup::SqliteDatabase => &["claim-id", "create-database-file", "migrate", "mark-ready"],
            Setup::SqliteTable => &["claim-id", "migrate", "mark-ready"],
            Setup::PgCache | Setup::SqliteCache => &["claim-id", "mark-ready"],
        }
    }

    /// The kinds of removal `deletetenant` makes in this setup, in order.
    fn delete_steps(self) -> &'static [&'static str] {
        match self {
            Setup::PgDatabase => &["database", "role", "cache_namespace", "registry_row"],
            Setup::PgSchema => &["login_role", "schema", "cache_namespace", "registry_row"],
            Setup::PgTable => &["login_role", "rows", "cache_namespace", "registry_row"],
            Setup::SqliteDatabase => &["file", "cache_namespace", "registry_row"],
            Setup::SqliteTable => &["rows", "cache_namespace", "registry_row"],
            Setup::PgCache | Setup::SqliteCache => &["cache_namespace", "registry_row"],
        }
    }
}

/// A master database (and folder) for one test.
pub(crate) struct World {
    pub(crate) setup: Setup,
    pub(crate) dir: TempDir,
    pub(crate) url: String,
    pub(crate) pg: Option<PgMaster>,
    pub(crate) tenancy: tenancy::Tenancy,
}

/// Everything of one tenant that the registry or a catalog can show.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Footprint {
    /// The registry row's status.
    pub(crate) registry: Option<String>,
    /// The unfinished operation's kind.
    pub(crate) operation: Option<String>,
    /// Databases, roles, schemas and files named for the tenant.
    pub(crate) storage: Vec<String>,
    /// Rows with its id in the shared tables.
    pub(crate) rows: i64,
}

impl World {
    pub(crate) async fn new(setup: Setup) -> Option<World> {
        let dir = TempDir::new();
        let (url, pg) = match setup {
            Setup::SqliteDatabase | Setup::SqliteTable | Setup::SqliteCache => (dir.sqlite_master_url(), None),
            _ => {
                let pg = PgMaster::create().await?;
                (pg.url.clone(), Some(pg))
            }
        };
        // The test reads the registry as it is right after each command: no live registry,
        // whose view follows other processes a few milliseconds later (serve_http tests it).
        let tenancy = tenancy::Tenancy::builder(url.clone())
            .secret_key_file(dir.path().join("key"))
            .live_registry(false)
            .connect()
            .await
            .expect("connect the master");
        // The commands read the key file the test names; make it once, here.
        tenancy.secret_key().expect("generate the secret key");
        Some(World { setup, dir, url, pg, tenancy })
    }

    pub(crate) fn db_name(id: &str) -> String {
        format!("{id}_db")
    }

    pub(crate) fn db_user(id: &str) -> String {
        format!("{id}_u")
    }

    pub(crate) fn create_args(&self, id: &str) -> Vec<String> {
        let mut args: Vec<String> =
            ["--id", id, "--name", id, "--isolation", self.setup.isolation(), "--migrate", "--no-input"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
        match self.setup {
            Setup::PgDatabase => {
                let pg = self.pg.as_ref().expect("PostgreSQL");
                pg.track_database(&Self::db_name(id));
                pg.track_role(&Self::db_user(id));
                args.extend(
                    ["--create-database", "--db-name", &Self::db_name(id), "--db-user", &Self::db_user(id)]
                        .iter()
                        .map(|s| (*s).to_owned()),
                );
                args.extend(["--db-host", "127.0.0.1", "--db-port", "5432"].iter().map(|s| (*s).to_owned()));
            }
            Setup::SqliteDatabase => {
                args.extend(["--create-database", "--db-name", &Self::db_name(id)].iter().map(|s| (*s).to_owned()))
            }
            _ => {}
        }
        args
    }

    /// One of the app's commands, as a script in this world's folder would run it.
    pub(crate) fn command(&self, bin: &str, args: &[String]) -> Command {
        let mut command = Command::new(bin);
        command
            .current_dir(self.dir.path())
            .args(args)
            .env("DATABASE_URL", &self.url)
            .env("TENANCY_SECRET_KEY_FILE", self.dir.path().join("key"))
            .env("TENANCY_ADMIN_URL", postgres_admin_url())
            .env("TENANT_DB_PASSWORD", PASSWORD)
            .env_remove("TENANCY_SECRET_KEY")
            .env_remove("TENANCY_FAULT_AFTER_STEP")
            .stdin(Stdio::null());
        command
    }

    /// Runs one of the app's commands; `fault` names the step after which it dies.
    pub(crate) fn run(&self, bin: &str, args: &[String], fault: Option<&str>) -> Output {
        let mut command = self.command(bin, args);
        if let Some(step) = fault {
            command.env("TENANCY_FAULT_AFTER_STEP", step);
        }
        command.output().expect("run the command")
    }

    pub(crate) fn create(&self, id: &str, fault: Option<&str>) -> Output {
        self.run(env!("CARGO_BIN_EXE_createtenant"), &self.create_args(id), fault)
    }

    pub(crate) fn delete(&self, id: &str, extra: &[&str], fault: Option<&str>) -> Output {
        let mut args = vec![id.to_owned(), "--yes".to_owned()];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        self.run(env!("CARGO_BIN_EXE_deletetenant"), &args, fault)
    }

    pub(crate) async fn scalar(&self, sql: &str, values: Vec<sea_orm::Value>) -> Option<String> {
        let db = self.tenancy.master();
        let sql = match db.get_database_backend() {
            DbBackend::Sqlite => sql.replace("$1", "?"),
            _ => sql.to_owned(),
        };
        db.query_one_raw(Statement::from_sql_and_values(db.get_database_backend(), sql, values))
            .await
            .expect("query")
            .map(|row| row.try_get_by_index::<String>(0).expect("text"))
    }

    pub(crate) async fn footprint(&self, id: &str) -> Footprint {
        let registry = self.scalar("SELECT status FROM tenancy_tenants WHERE tenant_id = $1", vec![id.into()]).await;
        let operation = self.scalar("SELECT kind FROM tenancy_operations WHERE tenant_id = $1", vec![id.into()]).await;
        let mut storage = Vec::new();
        if let Some(pg) = &self.pg {
            let admin = &pg.admin;
            let prefix = tenancy::rls::tenant_role_prefix(self.tenancy.master()).await.expect("the login prefix");
            let login = format!("{prefix}{id}");
            let queries = [
                ("database", "SELECT datname::text FROM pg_database WHERE datname = $1", Self::db_name(id)),
                ("role", "SELECT rolname::text FROM pg_roles WHERE rolname = $1", Self::db_user(id)),
                ("role", "SELECT rolname::text FROM pg_roles WHERE rolname = $1", login),
            ];
            for (what, sql, value) in queries {
                let rows = admin
                    .query_all_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, [value.into()]))
                    .await
                    .expect("catalog");
                storage.extend(
                    rows.iter().map(|row| format!("{what} {}", row.try_get_by_index::<String>(0).expect("name"))),
                );
            }
            if let Some(schema) =
                self.scalar("SELECT nspname::text FROM pg_namespace WHERE nspname = $1", vec![id.into()]).await
            {
                storage.push(format!("schema {schema}"));
            }
        }
        let file: PathBuf = self.dir.path().join(format!("{}.db", Self::db_name(id)));
        if file.exists() {
            storage.push(format!("file {}", file.display()));
        }
        let mut rows = 0;
        if matches!(self.setup, Setup::PgTable | Setup::SqliteTable) {
            for table in ["projects", "tasks", "comments"] {
                let exists = match self.setup {
                    Setup::SqliteTable => "SELECT name FROM sqlite_master WHERE type = 'table' AND name = $1",
                    _ => "SELECT relname::text FROM pg_class WHERE relname = $1 AND relkind = 'r'",
                };
                if self.scalar(exists, vec![table.into()]).await.is_none() {
                    continue;
                }
                let sql = format!("SELECT CAST(count(*) AS TEXT) FROM {table} WHERE tenant_id = $1");
                if let Some(n) = self.scalar(&sql, vec![id.into()]).await {
                    rows += n.parse::<i64>().expect("a count");
                }
            }
        }
        Footprint { registry, operation, storage, rows }
    }

    /// Gives the tenant a project with two tasks and a comment on each, through its
    /// handle.
    pub(crate) async fn seed(&self, id: &str) {
        if matches!(self.setup, Setup::PgCache | Setup::SqliteCache) {
            // No tables: a cache entry through the tenant's own cache instead.
            let cache = self.tenancy.tenant(id).await.expect("the tenant's handle").cache();
            cache.set(&tenancy::cache::TenantKey::new("carts", "u1"), &id, None).await.expect("cache set");
            return;
        }
        let db = self.tenancy.tenant(id).await.expect("the tenant's handle");
        let project = project::ActiveModel {
            tenant_id: Set(id.to_owned()),
            name: Set(format!("{id} project")),
            created_at: Set(chrono::Utc::now()),
            ..Default::default()
        }
        .insert(&db)
        .await
        .expect("insert a project");
        for n in 0..2 {
            let task = task::ActiveModel {
                tenant_id: Set(id.to_owned()),
                project_id: Set(project.id),
                title: Set(format!("task {n}")),
                done: Set(n == 1),
                created_at: Set(chrono::Utc::now()),
                ..Default::default()
            }
            .insert(&db)
            .await
            .expect("insert a task");
            comment::ActiveModel {
                tenant_id: Set(id.to_owned()),
                task_id: Set(task.id),
                body: Set(format!("comment on {n}")),
                created_at: Set(chrono::Utc::now()),
                ..Default::default()
            }
            .insert(&db)
            .await
            .expect("insert a comment");
        }
    }

    /// Every row of the tenant, read through its handle, as text.
    pub(crate) async fn data(&self, id: &str) -> String {
        if matches!(self.setup, Setup::PgCache | Setup::SqliteCache) {
            let cache = self.tenancy.tenant(id).await.expect("the tenant's handle").cache();
            let value: Option<String> =
                cache.get(&tenancy::cache::TenantKey::new("carts", "u1")).await.expect("cache get");
            return format!("{value:?}");
        }
        let db = self.tenancy.tenant(id).await.expect("the tenant's handle");
        let projects = project::Entity::find().order_by_asc(project::Column::Id).all(&db).await.expect("projects");
        let tasks = task::Entity::find().order_by_asc(task::Column::Id).all(&db).await.expect("tasks");
        let comments = comment::Entity::find().order_by_asc(comment::Column::Id).all(&db).await.expect("comments");
        format!("{projects:?}\n{tasks:?}\n{comments:?}")
    }
}

pub(crate) fn killed(out: &Output) -> bool {
    out.status.code().is_none()
}

pub(crate) fn expect_ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what}: exit {:?}\n{}\n{}", out.status.code(), text(&out.stdout), text(&out.stderr));
}

/// `createtenant` dies after each step in turn; what it left is an unfinished operation
/// (or, after the last step, a ready tenant), another command is refused naming it, and
/// one plain re-run ends with a ready tenant; deleting it then leaves nothing.
async fn create_killed_after_every_step(setup: Setup) {
    let Some(world) = World::new(setup).await else { return };
    for step in setup.create_steps() {
        let id = unique_name("k");
        let out = world.create(&id, Some(step));
        assert!(killed(&out), "{setup:?} {step}: createtenant was not stopped: {}", text(&out.stderr));
        let left = world.footprint(&id).await;
        // Marking the tenant ready commits after the step, with the operation's end: dying
        // right after it rolls that back too.
        {
            assert_eq!(left.operation.as_deref(), Some("create"), "{setup:?} {step}: {left:?}");
            assert!(matches!(left.registry.as_deref(), None | Some("provisioning")), "{setup:?} {step}: {left:?}");
            // Another lifecycle command is refused, naming the interrupted one.
            let out = world.delete(&id, &[], None);
            assert_eq!(out.status.code(), Some(7), "{setup:?} {step}: {}", text(&out.stderr));
            let stderr = text(&out.stderr);
            assert!(stderr.contains("unfinished create operation") && stderr.contains("createtenant"), "{stderr}");
            assert_eq!(world.footprint(&id).await, left, "{setup:?} {step}: the refused delete changed something");
        }

        expect_ok(&world.create(&id, None), &format!("{setup:?} {step}: the re-run"));
        let ready = world.footprint(&id).await;
        assert_eq!(ready.registry.as_deref(), Some("ready"), "{setup:?} {step}: {ready:?}");
        assert_eq!(ready.operation, None, "{setup:?} {step}: {ready:?}");
        world.tenancy.tenant(id.as_str()).await.expect("the tenant is served").ping().await.expect("ping");

        expect_ok(&world.delete(&id, &[], None), &format!("{setup:?} {step}: delete"));
        assert_eq!(world.footprint(&id).await, Footprint::default(), "{setup:?} {step}: residue after the delete");
    }
}

/// `deletetenant` dies after each removal in turn; the tenant is no longer served, a
/// `createtenant` of its id is refused naming the delete, and one plain re-run removes
/// everything; the other tenant's data is exactly as before throughout.
async fn delete_killed_after_every_step(setup: Setup) {
    let Some(world) = World::new(setup).await else { return };
    let other = unique_name("o");
    expect_ok(&world.create(&other, None), "create the other tenant");
    world.seed(&other).await;
    let before = world.data(&other).await;
    for step in setup.delete_steps() {
        let id = unique_name("v");
        expect_ok(&world.create(&id, None), "create the victim");
        world.seed(&id).await;
        let out = world.delete(&id, &[], Some(step));
        assert!(killed(&out), "{setup:?} {step}: deletetenant was not stopped: {}", text(&out.stderr));
        let left = world.footprint(&id).await;
        if *step != "registry_row" {
            assert_eq!(left.registry.as_deref(), Some("deleting"), "{setup:?} {step}: {left:?}");
            assert_eq!(left.operation.as_deref(), Some("delete"), "{setup:?} {step}: {left:?}");
            assert!(world.tenancy.tenant(id.as_str()).await.is_err(), "{setup:?} {step}: a deleting tenant is served");
            let out = world.create(&id, None);
            assert_eq!(out.status.code(), Some(7), "{setup:?} {step}: {}", text(&out.stderr));
            assert!(text(&out.stderr).contains("deletetenant"), "{}", text(&out.stderr));
        } else {
            assert_eq!(left, Footprint::default(), "{setup:?} {step}");
        }
        let out = world.delete(&id, &[], None);
        if *step == "registry_row" {
            assert_eq!(out.status.code(), Some(6), "{setup:?} {step}: {}", text(&out.stderr));
        } else {
            expect_ok(&out, &format!("{setup:?} {step}: the re-run"));
        }
        assert_eq!(world.footprint(&id).await, Footprint::default(), "{setup:?} {step}: residue");
        assert_eq!(world.data(&other).await, before, "{setup:?} {step}: the other tenant's data changed");
    }
    // The other tenant is still whole, then goes too.
    expect_ok(&world.delete(&other, &[], None), "delete the other tenant");
    assert_eq!(world.footprint(&other).await, Footprint::default());
}

#[tokio::test]
async fn createtenant_killed_after_every_step_postgres_database() {
    create_killed_after_every_step(Setup::PgDatabase).await;
}

#[tokio::test]
async fn createtenant_killed_after_every_step_postgres_schema() {
    create_killed_after_every_step(Setup::PgSchema).await;
}

#[tokio::test]
async fn createtenant_killed_after_every_step_postgres_table() {
    create_killed_after_every_step(Setup::PgTable).await;
}

#[tokio::test]
async fn createtenant_killed_after_every_step_sqlite_database() {
    create_killed_after_every_step(Setup::SqliteDatabase).await;
}

#[tokio::test]
async fn createtenant_killed_after_every_step_sqlite_table() {
    create_killed_after_every_step(Setup::SqliteTable).await;
}

#[tokio::test]
async fn createtenant_killed_after_every_step_postgres_cache() {
    create_killed_after_every_step(Setup::PgCache).await;
}

#[tokio::test]
async fn createtenant_killed_after_every_step_sqlite_cache() {
    create_killed_after_every_step(Setup::SqliteCache).await;
}

#[tokio::test]
async fn deletetenant_killed_after_every_step_postgres_cache() {
    delete_killed_after_every_step(Setup::PgCache).await;
}

#[tokio::test]
async fn deletetenant_killed_after_every_step_sqlite_cache() {
    delete_killed_after_every_step(Setup::SqliteCache).await;
}

#[tokio::test]
async fn deletetenant_killed_after_every_step_postgres_database() {
    delete_killed_after_every_step(Setup::PgDatabase).await;
}

#[tokio::test]
async fn deletetenant_killed_after_every_step_postgres_schema() {
    delete_killed_after_every_step(Setup::PgSchema).await;
}

#[tokio::test]
async fn deletetenant_killed_after_every_step_postgres_table() {
    delete_killed_after_every_step(Setup::PgTable).await;
}

#[tokio::test]
async fn deletetenant_killed_after_every_step_sqlite_database() {
    delete_killed_after_every_step(Setup::SqliteDatabase).await;
}

#[tokio::test]
async fn deletetenant_killed_after_every_step_sqlite_table() {
    delete_killed_after_every_step(Setup::SqliteTable).await;
}

/// `--dry-run --json` of a tenant with data, and the catalogs before and after it.
async fn dry_run_changes_nothing(setup: Setup) {
    let Some(world) = World::new(setup).await else { return };
    let id = unique_name("d");
    expect_ok(&world.create(&id, None), "create");
    world.seed(&id).await;
    let (footprint, data) = (world.footprint(&id).await, world.data(&id).await);
    for args in [&["--dry-run", "--json"][..], &["--plan"][..]] {
        let mut all = vec![id.clone()];
        all.extend(args.iter().map(|s| (*s).to_owned()));
        let out = world.run(env!("CARGO_BIN_EXE_deletetenant"), &all, None);
        expect_ok(&out, "dry run");
        if args[0] == "--dry-run" {
            let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
            assert_eq!(plan["dry_run"], true, "{plan}");
            let kinds: Vec<&str> = plan["removals"]
                .as_array()
                .expect("removals")
                .iter()
                .map(|r| r["object"].as_str().unwrap_or_default())
                .collect();
            let mut expected: Vec<&str> = setup.delete_steps().to_vec();
            // One `rows` entry per shared table: tenant_users, comments, tasks, projects.
            if let Some(at) = expected.iter().position(|k| *k == "rows") {
                let rows: Vec<(&str, u64)> = plan["removals"]
                    .as_array()
                    .expect("removals")
                    .iter()
                    .filter(|r| r["object"] == "rows")
                    .map(|r| (r["table"].as_str().unwrap_or_default(), r["rows"].as_u64().unwrap_or(99)))
                    .collect();
                // Children before the tables they reference.
                let position = |t: &str| rows.iter().position(|(name, _)| *name == t).expect("listed");
                assert!(
                    position("comments") < position("tasks") && position("tasks") < position("projects"),
                    "{rows:?}"
                );
                for (table, expected_rows) in [("projects", 1), ("tasks", 2), ("comments", 2)] {
                    assert!(rows.contains(&(table, expected_rows)), "{table}: {rows:?}");
                }
                expected.splice(at..=at, std::iter::repeat_n("rows", rows.len()));
            }
            assert_eq!(kinds, expected, "{plan}");
        } else {
            assert!(text(&out.stdout).contains("Nothing was changed (--dry-run)."), "{}", text(&out.stdout));
        }
        assert_eq!(world.footprint(&id).await, footprint, "{setup:?}: the dry run changed the catalogs");
        assert_eq!(world.data(&id).await, data, "{setup:?}: the dry run changed the data");
    }
    // Without a terminal and without --yes nothing is deleted.
    let out = world.run(env!("CARGO_BIN_EXE_deletetenant"), std::slice::from_ref(&id), None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("pass --yes"), "{}", text(&out.stderr));
    assert_eq!(world.footprint(&id).await, footprint);
    // An unknown tenant is exit 6.
    let out = world.delete("nobody_here", &[], None);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    expect_ok(&world.delete(&id, &[], None), "delete");
    assert_eq!(world.footprint(&id).await, Footprint::default());
}

#[tokio::test]
async fn dry_run_changes_nothing_postgres_database() {
    dry_run_changes_nothing(Setup::PgDatabase).await;
}

#[tokio::test]
async fn dry_run_changes_nothing_postgres_schema() {
    dry_run_changes_nothing(Setup::PgSchema).await;
}

#[tokio::test]
async fn dry_run_changes_nothing_postgres_table() {
    dry_run_changes_nothing(Setup::PgTable).await;
}

#[tokio::test]
async fn dry_run_changes_nothing_sqlite_database() {
    dry_run_changes_nothing(Setup::SqliteDatabase).await;
}

#[tokio::test]
async fn dry_run_changes_nothing_postgres_cache() {
    dry_run_changes_nothing(Setup::PgCache).await;
}

#[tokio::test]
async fn dry_run_changes_nothing_sqlite_table() {
    dry_run_changes_nothing(Setup::SqliteTable).await;
}

/// A database made outside tenancy and registered with `--no-create-database` is kept
/// (tables, rows and role) by a delete, and dropped only with `--drop-adopted-database`
/// (its role still kept).
#[tokio::test]
async fn an_adopted_database_survives_a_delete() {
    let Some(world) = World::new(Setup::PgDatabase).await else { return };
    let pg = world.pg.as_ref().expect("PostgreSQL");
    for drop_it in [false, true] {
        let id = unique_name("a");
        let (db, user) = (World::db_name(&id), World::db_user(&id));
        pg.track_database(&db);
        pg.track_role(&user);
        pg.admin
            .execute_unprepared(&format!("CREATE ROLE \"{user}\" LOGIN PASSWORD '{PASSWORD}'"))
            .await
            .expect("create the role");
        pg.admin.execute_unprepared(&format!("CREATE DATABASE \"{db}\" OWNER \"{user}\"")).await.expect("create db");
        let mut args = world.create_args(&id);
        let at = args.iter().position(|a| a == "--create-database").expect("flag");
        args[at] = "--no-create-database".to_owned();
        expect_ok(&world.run(env!("CARGO_BIN_EXE_createtenant"), &args, None), "adopt");
        world.seed(&id).await;

        let extra: &[&str] = if drop_it { &["--drop-adopted-database", "--json"] } else { &["--json"] };
        let out = world.delete(&id, extra, None);
        expect_ok(&out, "delete");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let footprint = world.footprint(&id).await;
        assert_eq!(footprint.registry, None, "{footprint:?}");
        assert_eq!(footprint.operation, None, "{footprint:?}");
        let kinds: Vec<&str> =
            report["removals"].as_array().expect("removals").iter().filter_map(|r| r["object"].as_str()).collect();
        if drop_it {
            assert_eq!(kinds, ["database", "kept", "cache_namespace", "registry_row"], "{report}");
            assert_eq!(footprint.storage, [format!("role {user}")], "only the role is left");
        } else {
            assert_eq!(kinds, ["kept", "cache_namespace", "registry_row"], "{report}");
            assert_eq!(footprint.storage, [format!("database {db}"), format!("role {user}")]);
            // Its tables and rows are untouched.
            let url = tenancy_test_support::with_database(&postgres_admin_url(), &db);
            let conn = sea_orm::Database::connect(url).await.expect("connect to the kept database");
            let rows = tenancy_test_support::count(&conn, "SELECT count(*) FROM tasks", vec![]).await;
            assert_eq!(rows, 2);
            conn.close().await.expect("close");
        }
    }
}

/// A delete with `--backup`, then the documented restore: create the tenant again with
/// `--migrate`, load the backup; the tenant's rows are what they were.
async fn a_backup_restores(setup: Setup) {
    a_backup_restores_with(setup, None).await;
}

/// `path`: the `PATH` of `deletetenant`, to leave `pg_dump` out.
async fn a_backup_restores_with(setup: Setup, path: Option<&str>) {
    let Some(world) = World::new(setup).await else { return };
    let other = unique_name("o");
    expect_ok(&world.create(&other, None), "create the other tenant");
    world.seed(&other).await;
    let id = unique_name("b");
    expect_ok(&world.create(&id, None), "create");
    world.seed(&id).await;
    let before = world.data(&id).await;
    let backup = world.dir.path().join("backup.dump");
    let args: Vec<String> = [id.as_str(), "--yes", "--backup", backup.to_str().expect("path"), "--json"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let mut command = world.command(env!("CARGO_BIN_EXE_deletetenant"), &args);
    if let Some(path) = path {
        command.env("PATH", path);
    }
    let out = command.output().expect("run deletetenant");
    expect_ok(&out, "delete with a backup");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(world.footprint(&id).await, Footprint::default());
    let format = report["backup"]["format"].as_str().unwrap_or_default().to_owned();
    if path.is_some() {
        assert_eq!(format, "sql_script", "{report}");
    }

    // A second backup to the same path is refused before anything is deleted.
    let out = world.delete(&other, &["--backup", backup.to_str().expect("path")], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("nothing was deleted"), "{}", text(&out.stderr));
    assert_eq!(world.footprint(&other).await.registry.as_deref(), Some("ready"));

    if setup == Setup::SqliteDatabase {
        // The copy is the database: put it back and register it.
        assert_eq!(format, "sqlite_file", "{report}");
        std::fs::copy(&backup, world.dir.path().join(format!("{}.db", World::db_name(&id)))).expect("copy back");
        let mut args = world.create_args(&id);
        let at = args.iter().position(|a| a == "--create-database").expect("flag");
        args[at] = "--no-create-database".to_owned();
        expect_ok(&world.run(env!("CARGO_BIN_EXE_createtenant"), &args, None), "register the copy");
        assert_eq!(world.data(&id).await, before, "the restored rows differ");
        return;
    }
    expect_ok(&world.create(&id, None), "create it again");
    // This process's pool of the deleted tenant holds sessions the delete ended.
    world.tenancy.reset_tenant_pool(&id.parse().expect("an id"));
    match (setup, format.as_str()) {
        (Setup::PgDatabase | Setup::PgSchema, "pg_dump") => {
            let target = match setup {
                Setup::PgDatabase => tenancy_test_support::with_database(&postgres_admin_url(), &World::db_name(&id)),
                _ => world.url.clone(),
            };
            let out = Command::new("pg_restore")
                .args(["--data-only", &format!("--dbname={target}"), backup.to_str().expect("path")])
                .output()
                .expect("pg_restore");
            assert!(out.status.success(), "pg_restore: {}", text(&out.stderr));
        }
        // Where `pg_dump` is not installed, database and schema tenants get the script too.
        (Setup::PgTable | Setup::PgDatabase | Setup::PgSchema, "sql_script") => {
            let target = match setup {
                Setup::PgDatabase => tenancy_test_support::with_database(&postgres_admin_url(), &World::db_name(&id)),
                _ => world.url.clone(),
            };
            let out = Command::new("psql")
                .args([&target, "-v", "ON_ERROR_STOP=1", "-q", "-f", backup.to_str().expect("path")])
                .output()
                .expect("psql");
            assert!(out.status.success(), "psql: {}", text(&out.stderr));
        }
        (Setup::SqliteTable, "sql_script") => {
            let script = std::fs::read_to_string(&backup).expect("read the script");
            world.tenancy.master().execute_unprepared(&script).await.expect("run the script");
        }
        other => panic!("unexpected backup format {other:?}: {report}"),
    }
    assert_eq!(world.data(&id).await, before, "{setup:?}: the restored rows differ");
}

#[tokio::test]
async fn a_backup_restores_postgres_database() {
    a_backup_restores(Setup::PgDatabase).await;
}

#[tokio::test]
async fn a_backup_restores_postgres_schema() {
    a_backup_restores(Setup::PgSchema).await;
}

#[tokio::test]
async fn a_backup_restores_without_pg_dump_postgres_database() {
    a_backup_restores_with(Setup::PgDatabase, Some("/nonexistent")).await;
}

#[tokio::test]
async fn a_backup_restores_without_pg_dump_postgres_schema() {
    a_backup_restores_with(Setup::PgSchema, Some("/nonexistent")).await;
}

#[tokio::test]
async fn a_backup_restores_sqlite_database() {
    a_backup_restores(Setup::SqliteDatabase).await;
}

#[tokio::test]
async fn a_backup_restores_postgres_table() {
    a_backup_restores(Setup::PgTable).await;
}

#[tokio::test]
async fn a_backup_restores_sqlite_table() {
    a_backup_restores(Setup::SqliteTable).await;
}

/// Real `SIGKILL`s at moments nobody chose: `createtenant` and then `deletetenant` killed
/// a pseudo-random few milliseconds in, then run once more without interference.
async fn killed_at_random_moments(setup: Setup) {
    let Some(world) = World::new(setup).await else { return };
    let mut seed = u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15;
    let mut next_delay = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::time::Duration::from_millis(seed % 400)
    };
    for round in 0..6 {
        let id = unique_name("r");
        let kill_after = |args: Vec<String>, bin: &str, delay: std::time::Duration| {
            let mut child =
                world.command(bin, &args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn");
            std::thread::sleep(delay);
            let _ = child.kill();
            child.wait().expect("reap")
        };
        let status = kill_after(world.create_args(&id), env!("CARGO_BIN_EXE_createtenant"), next_delay());
        let out = world.create(&id, None);
        // Finished before the kill (or killed after its last commit): the id is taken
        // (3); otherwise the re-run creates it.
        let _ = status;
        assert!(out.status.success() || out.status.code() == Some(3), "{setup:?} round {round}: {}", text(&out.stderr));
        let ready = world.footprint(&id).await;
        assert_eq!((ready.registry.as_deref(), ready.operation.as_deref()), (Some("ready"), None), "{ready:?}");
        world.seed(&id).await;

        let args = vec![id.clone(), "--yes".to_owned()];
        let status = kill_after(args, env!("CARGO_BIN_EXE_deletetenant"), next_delay());
        let out = world.delete(&id, &[], None);
        let _ = status;
        assert!(out.status.success() || out.status.code() == Some(6), "{setup:?} round {round}: {}", text(&out.stderr));
        assert_eq!(world.footprint(&id).await, Footprint::default(), "{setup:?} round {round}: residue");
    }
}

#[tokio::test]
async fn killed_at_random_moments_postgres_database() {
    killed_at_random_moments(Setup::PgDatabase).await;
}

#[tokio::test]
async fn killed_at_random_moments_postgres_schema() {
    killed_at_random_moments(Setup::PgSchema).await;
}

#[tokio::test]
async fn killed_at_random_moments_sqlite_table() {
    killed_at_random_moments(Setup::SqliteTable).await;
}

/// `tenancydoctor` reports an interrupted create and an interrupted delete as stale
/// operations, and `--repair --yes` settles them as a re-run would: the create undone,
/// the delete finished, nothing of either tenant left.
async fn doctor_settles_stale_operations(setup: Setup, create_step: &str, delete_step: &str) {
    let Some(world) = World::new(setup).await else { return };
    let created = unique_name("c");
    assert!(killed(&world.create(&created, Some(create_step))), "createtenant was not stopped");
    let deleted = unique_name("x");
    expect_ok(&world.create(&deleted, None), "create");
    world.seed(&deleted).await;
    assert!(killed(&world.delete(&deleted, &[], Some(delete_step))), "deletetenant was not stopped");

    let doctor = env!("CARGO_BIN_EXE_tenancydoctor");
    let out = world.run(doctor, &["--json".to_owned()], None);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let mut stale: Vec<(String, String)> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["kind"] == "stale_operation")
        .map(|f| (f["tenant"].as_str().unwrap_or_default().to_owned(), f["repairable"].to_string()))
        .collect();
    stale.sort();
    let mut expected = vec![(created.clone(), "true".to_owned()), (deleted.clone(), "true".to_owned())];
    expected.sort();
    assert_eq!(stale, expected, "{report}");

    let out = world.run(doctor, &["--repair".to_owned(), "--yes".to_owned(), "--json".to_owned()], None);
    assert!(out.status.code().is_some(), "{}", text(&out.stderr));
    assert_eq!(world.footprint(&created).await, Footprint::default(), "{}", text(&out.stdout));
    assert_eq!(world.footprint(&deleted).await, Footprint::default(), "{}", text(&out.stdout));
    let out = world.run(doctor, &["--json".to_owned()], None);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(
        !report["findings"].as_array().expect("findings").iter().any(|f| f["kind"] == "stale_operation"),
        "{report}"
    );
}

#[tokio::test]
async fn tenancydoctor_settles_stale_operations_postgres_database() {
    doctor_settles_stale_operations(Setup::PgDatabase, "create-database", "database").await;
}

#[tokio::test]
async fn tenancydoctor_settles_stale_operations_sqlite_table() {
    doctor_settles_stale_operations(Setup::SqliteTable, "claim-id", "rows").await;
}

/// `deletetenant --cache-url` clears the tenant's namespace of the shared Redis cache
/// (with `SCAN`) and leaves every other tenant's keys, and the global ones, as they were.
#[tokio::test]
async fn delete_clears_the_tenants_redis_namespace_only() {
    use tenancy::cache::{CacheConfig, GlobalKey, TenantKey};
    let Some(world) = World::new(Setup::PgTable).await else { return };
    let Some(redis) = tenancy_test_support::RedisPrefix::create(":del").await else { return };
    let cached = tenancy::Tenancy::builder(world.url.clone())
        .secret_key_file(world.dir.path().join("key"))
        .cache(CacheConfig::redis(tenancy_test_support::redis_url()).prefix(redis.prefix.clone()))
        .connect()
        .await
        .expect("connect with Redis");
    let (victim, other) = (unique_name("v"), unique_name("o"));
    for id in [&victim, &other] {
        expect_ok(&world.create(id, None), "create");
        let handle = cached.tenant(id.as_str()).await.expect("handle");
        for n in 0..30 {
            handle.cache().set(&TenantKey::new("carts", format!("user-{n}")), &n, None).await.expect("set");
        }
    }
    cached.global_cache().set(&GlobalKey::new("plans", "all"), &"gold", None).await.expect("set global");
    let before = redis.keys().await;
    assert_eq!(before.len(), 61, "{before:?}");
    let (victim_part, other_part) = (format!(":{{{victim}}}:"), format!(":{{{other}}}:"));

    let redis_url = tenancy_test_support::redis_url();
    let cache_flags = ["--cache-url", redis_url.as_str(), "--cache-prefix", redis.prefix.as_str()];
    // Killed before it reached the cache: the keys are all there, and the re-run clears them.
    assert!(killed(&world.delete(&victim, &cache_flags, Some("login_role"))), "deletetenant was not stopped");
    assert_eq!(redis.keys().await, before);
    let out = world.delete(&victim, &cache_flags, None);
    expect_ok(&out, "delete");
    let after = redis.keys().await;
    assert!(!after.iter().any(|key| key.contains(&victim_part)), "{after:?}");
    let expected: Vec<String> = before.into_iter().filter(|key| !key.contains(&victim_part)).collect();
    assert_eq!(after, expected);
    assert_eq!(after.iter().filter(|key| key.contains(&other_part)).count(), 30);
    assert_eq!(world.footprint(&victim).await, Footprint::default());
}

/// `deletetenant --cache-url redis+cluster://...` clears the tenant's keys on the Redis
/// Cluster (every primary scanned) and leaves the other tenants', on every node, and the
/// global ones, as they were.
#[tokio::test]
async fn delete_clears_the_tenants_namespace_on_redis_cluster_only() {
    use tenancy::cache::{CacheConfig, GlobalKey, TenantKey};
    let Some(world) = World::new(Setup::SqliteTable).await else { return };
    let Some(cluster) = tenancy_test_support::RedisCluster::start() else { return };
    let prefix = unique_name("del_c");
    let cached = tenancy::Tenancy::builder(world.url.clone())
        .secret_key_file(world.dir.path().join("key"))
        .cache(CacheConfig::redis(cluster.url()).prefix(prefix.clone()))
        .connect()
        .await
        .expect("connect with the cluster");
    let ids: Vec<String> = (0..4).map(|n| unique_name(&format!("t{n}"))).collect();
    for id in &ids {
        expect_ok(&world.create(id, None), "create");
        let handle = cached.tenant(id.as_str()).await.expect("handle");
        for n in 0..30 {
            handle.cache().set(&TenantKey::new("carts", format!("user-{n}")), &n, None).await.expect("set");
        }
    }
    cached.global_cache().set(&GlobalKey::new("plans", "all"), &"gold", None).await.expect("set global");
    let before = cluster.keys(&prefix);
    assert_eq!(before.len(), 121);
    let victim_part = format!(":{{{}}}:", ids[0]);

    let cluster_url = cluster.url();
    let out = world.delete(&ids[0], &["--cache-url", &cluster_url, "--cache-prefix", &prefix], None);
    expect_ok(&out, "delete");
    let expected: Vec<String> = before.into_iter().filter(|key| !key.contains(&victim_part)).collect();
    assert_eq!(expected.len(), 91);
    assert_eq!(cluster.keys(&prefix), expected);
    assert_eq!(world.footprint(&ids[0]).await, Footprint::default());
}

/// On a terminal `deletetenant` shows what it will remove and asks to type the tenant id:
/// a wrong answer deletes nothing (exit 130), the right one deletes.
#[test]
fn deletetenant_asks_to_type_the_tenant_id_on_a_terminal() {
    use crate::pty::{answer, exit_code, expect, plain};
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let Some(world) = runtime.block_on(World::new(Setup::SqliteTable)) else { return };
    let id = unique_name("t");
    expect_ok(&world.create(&id, None), "create");
    let spawn = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_deletetenant"));
        command
            .current_dir(world.dir.path())
            .arg(&id)
            .env("DATABASE_URL", &world.url)
            .env("TENANCY_SECRET_KEY_FILE", world.dir.path().join("key"))
            .env("TERM", "xterm-256color")
            .env("NO_COLOR", "1");
        rexpect::session::spawn_command(command, Some(30_000)).expect("spawn in a pty")
    };

    let (mut session, mut transcript) = (spawn(), String::new());
    expect(&mut session, &format!("Deleting tenant '{id}' will:"), &mut transcript);
    expect(&mut session, "remove the registry row", &mut transcript);
    answer(&mut session, "Type the tenant id to delete it:", "someone_else", &mut transcript);
    assert_eq!(exit_code(&session), 130, "{}", plain(&transcript));
    assert_eq!(runtime.block_on(world.footprint(&id)).registry.as_deref(), Some("ready"));

    let (mut session, mut transcript) = (spawn(), String::new());
    answer(&mut session, "Type the tenant id to delete it:", &id, &mut transcript);
    expect(&mut session, &format!("Tenant '{id}' deleted"), &mut transcript);
    assert_eq!(exit_code(&session), 0, "{}", plain(&transcript));
    assert_eq!(runtime.block_on(world.footprint(&id)), Footprint::default());
}

/// A session the delete cannot end (a superuser's, when the admin role is not one): the
/// delete waits `--wait` seconds, then stops with nothing dropped, the database open
/// again and the tenant served as before; once the session is gone, the same command
/// finishes.
#[tokio::test]
async fn a_delete_that_times_out_on_sessions_changes_nothing_and_can_be_run_again() {
    let Some(world) = World::new(Setup::PgDatabase).await else { return };
    let pg = world.pg.as_ref().expect("PostgreSQL");
    let id = unique_name("s");
    expect_ok(&world.create(&id, None), "create");
    let (db, user) = (World::db_name(&id), World::db_user(&id));
    // An admin that may drop the tenant's database and role (it is a member of the owner
    // role and has CREATEROLE) but, being no superuser, cannot end a superuser's session.
    let admin = unique_name("adm");
    pg.track_role(&admin);
    pg.admin
        .execute_unprepared(&format!(
            "CREATE ROLE \"{admin}\" LOGIN CREATEROLE PASSWORD 'adm'; GRANT \"{user}\" TO \"{admin}\" WITH ADMIN OPTION"
        ))
        .await
        .expect("create the admin role");
    let holder = sea_orm::Database::connect(tenancy_test_support::with_database(&postgres_admin_url(), &db))
        .await
        .expect("hold");
    holder.execute_unprepared("SELECT 1").await.expect("a session on the tenant's database");

    let admin_url = format!("postgres://{admin}:adm@127.0.0.1:5432/postgres");
    let args: Vec<String> = [id.as_str(), "--yes", "--wait", "1"].iter().map(|s| (*s).to_owned()).collect();
    let mut command = world.command(env!("CARGO_BIN_EXE_deletetenant"), &args);
    command.env("TENANCY_ADMIN_URL", &admin_url);
    let out = command.output().expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("still has 1 session(s) after 1 s"), "{}", text(&out.stderr));
    let left = world.footprint(&id).await;
    assert_eq!((left.registry.as_deref(), left.operation.as_deref()), (Some("ready"), None), "{left:?}");
    assert_eq!(left.storage, [format!("database {db}"), format!("role {user}")]);
    assert!(
        pg.admin_exists("SELECT 1 FROM pg_database WHERE datname = $1 AND datallowconn", &db).await,
        "the database takes connections again"
    );
    world.tenancy.reset_tenant_pool(&id.parse().expect("id"));
    world.tenancy.tenant(id.as_str()).await.expect("served again").ping().await.expect("ping");

    holder.close().await.expect("end the session");
    world.tenancy.reset_tenant_pool(&id.parse().expect("id"));
    let out = command.output().expect("run again");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(world.footprint(&id).await, Footprint::default());
}
