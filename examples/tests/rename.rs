//! `renametenant` as a process, in every mode (PostgreSQL database, schema, table, cache;
//! SQLite database, table, cache), with the example app's data: projects, tasks and
//! comments (foreign keys that include the tenant column) and a `tenant_users` row.
//!
//! Every check reads the rows with the test's own SQL, not the library's: per table the
//! count and a checksum of every column but the tenant column (PostgreSQL `md5`, SQLite
//! the concatenated rows themselves), equal before and after, with every tenant column
//! holding the new id; another tenant's rows (all columns, and on PostgreSQL each row's
//! `xmin`: not even rewritten) equal before and after. The catalogs show the new schema
//! and login role and none of the old; the old id is unknown; the new one serves its rows
//! and takes an insert (sequences continue); a running server with the live registry
//! follows within a second. Then the same with `renametenant` killed after every step
//! (`TENANCY_FAULT_AFTER_STEP`) and run once more, other lifecycle commands on either id
//! refused (exit 7) meanwhile.

use std::process::Output;
use std::time::{Duration, Instant};

use example_app::entities::project;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement,
};
use sea_orm::{EntityTrait, QueryOrder};
use tenancy_test_support::{postgres_admin_url, unique_name, with_database};

use crate::commands::text;
use crate::lifecycle::{Setup, World, expect_ok, killed};

/// The example app's scoped tables and their columns other than the tenant column.
const TABLES: [(&str, &[&str]); 4] = [
    ("projects", &["id", "name", "created_at"]),
    ("tasks", &["id", "project_id", "title", "done", "created_at"]),
    ("comments", &["id", "task_id", "body", "created_at"]),
    ("tenant_users", &["id", "username", "email", "password_hash", "is_superuser", "created_at"]),
];

/// The steps `renametenant` takes in this setup.
fn rename_steps(setup: Setup) -> &'static [&'static str] {
    match setup {
        Setup::PgDatabase => &[
            "stop-serving",
            "rewrite-database-marks",
            "update-tenant-columns",
            "move-cache-namespace",
            "switch-registry",
        ],
        Setup::PgSchema => &[
            "stop-serving",
            "rename-schema",
            "rename-login-role",
            "update-tenant-columns",
            "move-cache-namespace",
            "switch-registry",
        ],
        Setup::PgTable => {
            &["stop-serving", "rename-login-role", "update-tenant-columns", "move-cache-namespace", "switch-registry"]
        }
        Setup::SqliteDatabase | Setup::SqliteTable => {
            &["stop-serving", "update-tenant-columns", "move-cache-namespace", "switch-registry"]
        }
        Setup::PgCache | Setup::SqliteCache => &["stop-serving", "move-cache-namespace", "switch-registry"],
    }
}

fn is_postgres(setup: Setup) -> bool {
    matches!(setup, Setup::PgDatabase | Setup::PgSchema | Setup::PgTable | Setup::PgCache)
}

impl World {
    fn rename(&self, old: &str, new: &str, extra: &[&str], fault: Option<&str>) -> Output {
        let mut args = vec![old.to_owned(), new.to_owned(), "--yes".to_owned()];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        self.run(env!("CARGO_BIN_EXE_renametenant"), &args, fault)
    }

    /// A tenant with the example's rows and an administrator in `tenant_users`.
    async fn populated(&self, id: &str) {
        expect_ok(&self.create(id, None), "create");
        self.seed(id).await;
        let args: Vec<String> = ["--tenant", id, "--username", "admin", "--email", "admin@example.com", "--no-input"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let mut command = self.command(env!("CARGO_BIN_EXE_createtenantsuperuser"), &args);
        command.env("TENANT_SUPERUSER_PASSWORD", "Correct-Horse-Battery-9");
        expect_ok(&command.output().expect("createtenantsuperuser"), "createtenantsuperuser");
    }

    /// Where the rows of the tenant created as `storage` live: the master, or its own
    /// database (whose name the rename keeps).
    async fn rows_db(&self, storage: &str) -> DatabaseConnection {
        match self.setup {
            Setup::PgDatabase => Database::connect(with_database(&postgres_admin_url(), &World::db_name(storage)))
                .await
                .expect("connect to the tenant's database"),
            Setup::SqliteDatabase => {
                let file = self.dir.path().join(format!("{}.db", World::db_name(storage)));
                Database::connect(format!("sqlite://{}?mode=rw", file.display())).await.expect("open the tenant file")
            }
            _ => self.tenancy.master().clone(),
        }
    }

    /// Per scoped table, `rows:checksum:rows whose tenant column is not id` of tenant `id`
    /// (created as `storage`): its columns but the tenant column, or with `whole` every
    /// column (and on PostgreSQL each row's `xmin`, which any rewrite changes).
    async fn checksums(&self, storage: &str, id: &str, whole: bool) -> Vec<String> {
        let db = self.rows_db(storage).await;
        let postgres = db.get_database_backend() == DbBackend::Postgres;
        let literal = format!("'{id}'");
        let (qualifier, filter) = match self.setup {
            Setup::PgSchema => (format!("\"{id}\"."), String::new()),
            Setup::PgTable | Setup::SqliteTable => (String::new(), format!("WHERE tenant_id = {literal}")),
            _ => (String::new(), String::new()),
        };
        let mut sums = Vec::new();
        for (table, columns) in TABLES {
            let mut columns: Vec<String> = columns.iter().map(|c| (*c).to_owned()).collect();
            if whole {
                columns.push("tenant_id".to_owned());
                if postgres {
                    columns.push("xmin".to_owned());
                }
            }
            let sql = if postgres {
                format!(
                    "SELECT count(*)::text || ':' || coalesce(md5(string_agg(concat_ws(',', {cols}), '|' ORDER BY id)), '-') \
                     || ':' || (count(*) FILTER (WHERE tenant_id <> {literal}))::text FROM {qualifier}{table} {filter}",
                    cols = columns.join(", ")
                )
            } else {
                format!(
                    "SELECT count(*) || ':' || coalesce(group_concat(x, '|'), '-') || ':' || coalesce(sum(bad), 0) \
                     FROM (SELECT {cols} AS x, tenant_id <> {literal} AS bad FROM {table} {filter} ORDER BY id)",
                    cols = columns.join(" || ',' || ")
                )
            };
            let row = db
                .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
                .await
                .unwrap_or_else(|err| panic!("checksum of {table}: {err}"))
                .expect("a row");
            sums.push(format!("{table} {}", row.try_get_by_index::<String>(0).expect("text")));
        }
        if matches!(self.setup, Setup::PgDatabase | Setup::SqliteDatabase) {
            db.close().await.expect("close");
        }
        sums
    }

    async fn texts(&self, sql: &str, values: Vec<sea_orm::Value>) -> Vec<String> {
        let db = self.tenancy.master();
        let sql = match db.get_database_backend() {
            DbBackend::Sqlite => sql.replace("$1", "?").replace("$2", "?"),
            _ => sql.to_owned(),
        };
        db.query_all_raw(Statement::from_sql_and_values(db.get_database_backend(), sql, values))
            .await
            .expect("query")
            .iter()
            .map(|row| row.try_get_by_index::<String>(0).expect("text"))
            .collect()
    }

    async fn admin_texts(&self, sql: &str, value: &str) -> Vec<String> {
        let admin = &self.pg.as_ref().expect("PostgreSQL").admin;
        admin
            .query_all_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, [value.into()]))
            .await
            .expect("catalog")
            .iter()
            .map(|row| row.try_get_by_index::<String>(0).expect("text"))
            .collect()
    }

    /// The journal's rows, as `tenant kind`.
    async fn journal(&self) -> Vec<String> {
        let mut rows = self.texts("SELECT tenant_id || ' ' || kind FROM tenancy_operations", vec![]).await;
        rows.sort();
        rows
    }

    /// Everything the rename of `old` (created as `old`) to `new` must show once done;
    /// `before` are the tenant's checksums before it.
    async fn assert_renamed(&self, old: &str, new: &str, before: &[String], what: &str) {
        let setup = self.setup;
        // Every row as it was, the tenant column now holding the new id.
        assert_eq!(self.checksums(old, new, false).await, before, "{setup:?} {what}: the rows changed");
        if matches!(setup, Setup::PgTable | Setup::SqliteTable) {
            let none: Vec<String> = TABLES.iter().map(|(table, _)| format!("{table} 0:-:0")).collect();
            assert_eq!(self.checksums(old, old, false).await, none, "{setup:?} {what}: rows left under the old id");
        }
        // The registry, the journal, the handles.
        let status = self.texts("SELECT status FROM tenancy_tenants WHERE tenant_id = $1", vec![new.into()]).await;
        assert_eq!(status, ["ready"], "{setup:?} {what}");
        assert!(
            self.texts("SELECT status FROM tenancy_tenants WHERE tenant_id = $1", vec![old.into()]).await.is_empty(),
            "{setup:?} {what}: the old id is still registered"
        );
        assert_eq!(self.journal().await, Vec::<String>::new(), "{setup:?} {what}: an operation is left");
        match self.tenancy.tenant(old).await {
            Err(tenancy::Error::TenantNotFound { .. }) => {}
            other => panic!("{setup:?} {what}: the old id answers {other:?}"),
        }
        if is_postgres(setup) {
            self.assert_catalogs(old, new, what).await;
        }
    }

    /// The new names exist, marked for the new id; the old ones are gone.
    async fn assert_catalogs(&self, old: &str, new: &str, what: &str) {
        let setup = self.setup;
        let prefix = tenancy::rls::tenant_role_prefix(self.tenancy.master()).await.expect("prefix");
        let master = self.texts("SELECT current_database()::text", vec![]).await.remove(0);
        let mark = format!("tenancy:{master}:{new}");
        let role = "SELECT rolname::text || ' ' || coalesce(shobj_description(oid, 'pg_authid'), '') || ' ' || \
                    coalesce(array_to_string(rolconfig, ','), '') || ' ' || rolcanlogin::text \
                    FROM pg_roles WHERE rolname = $1";
        let schema = "SELECT nspname::text || ' ' || coalesce(obj_description(oid, 'pg_namespace'), '') \
                      FROM pg_namespace WHERE nspname = $1";
        let (old_login, new_login) = (format!("{prefix}{old}"), format!("{prefix}{new}"));
        assert!(self.admin_texts(role, &old_login).await.is_empty(), "{setup:?} {what}: the old login role is left");
        assert!(self.texts(schema, vec![old.into()]).await.is_empty(), "{setup:?} {what}: a schema of the old id");
        match setup {
            Setup::PgSchema => {
                assert_eq!(
                    self.admin_texts(role, &new_login).await,
                    [format!("{new_login} {mark} search_path={new} true")],
                    "{what}"
                );
                assert_eq!(self.texts(schema, vec![new.into()]).await, [format!("{new} {mark}")], "{what}");
            }
            Setup::PgTable => {
                assert_eq!(self.admin_texts(role, &new_login).await, [format!("{new_login} {mark}  true")], "{what}");
            }
            Setup::PgDatabase => {
                // The names the operator chose are kept; tenancy's marks name the new id.
                let database = "SELECT datname::text || ' ' || coalesce(shobj_description(oid, 'pg_database'), '') \
                                FROM pg_database WHERE datname = $1";
                let db = World::db_name(old);
                assert_eq!(self.admin_texts(database, &db).await, [format!("{db} {mark}")], "{what}");
                let user = format!("{old}_u");
                assert_eq!(self.admin_texts(role, &user).await, [format!("{user} {mark}  true")], "{what}");
            }
            _ => {}
        }
    }

    /// The new handle reads the tenant's project and takes a new one, numbered after the
    /// old ones.
    async fn assert_serves(&self, new: &str, max_before: i32) {
        let db = self.tenancy.tenant(new).await.expect("the new id is served");
        let projects = project::Entity::find().order_by_asc(project::Column::Id).all(&db).await.expect("projects");
        assert_eq!(projects.len(), 1, "{projects:?}");
        assert!(projects.iter().all(|p| p.tenant_id == new), "{projects:?}");
        let inserted = project::ActiveModel {
            tenant_id: Set(new.to_owned()),
            name: Set("after the rename".to_owned()),
            created_at: Set(chrono::Utc::now()),
            ..Default::default()
        }
        .insert(&db)
        .await
        .expect("an insert after the rename");
        assert!(inserted.id > max_before, "the sequence went back: {} after {max_before}", inserted.id);
    }

    async fn max_project_id(&self, id: &str) -> i32 {
        let db = self.tenancy.tenant(id).await.expect("handle");
        let projects = project::Entity::find().all(&db).await.expect("projects");
        projects.iter().map(|p| p.id).max().unwrap_or(0)
    }
}

/// Waits until `tenancy` (with a live registry) no longer knows `old` and serves `new`;
/// how long that took.
async fn followed(tenancy: &tenancy::Tenancy, old: &str, new: &str) -> Duration {
    let start = Instant::now();
    loop {
        let gone = matches!(tenancy.tenant(old).await, Err(tenancy::Error::TenantNotFound { .. }));
        let served = tenancy.tenant(new).await.is_ok();
        if gone && served {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(5), "the running server did not follow the rename");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One rename with every check, a running server following it, the ledger's history
/// moved, and (PostgreSQL table isolation) the renamed login role attacked.
async fn renamed_with_every_check(setup: Setup) {
    let Some(world) = World::new(setup).await else { return };
    let (old, new, other) = (unique_name("r"), unique_name("n"), unique_name("o"));
    world.populated(&old).await;
    world.populated(&other).await;
    expect_ok(&world.run(env!("CARGO_BIN_EXE_migratealltenants"), &[], None), "migratealltenants");
    let before = world.checksums(&old, &old, false).await;
    let before_other = world.checksums(&other, &other, true).await;
    assert!(before.iter().all(|sum| !sum.contains(" 0:")), "{setup:?}: the tenant has rows everywhere: {before:?}");
    let max_before = world.max_project_id(&old).await;

    // A running server: a live registry that serves the old id now.
    let server = tenancy::Tenancy::builder(world.url.clone())
        .secret_key_file(world.dir.path().join("key"))
        .connect()
        .await
        .expect("a second Tenancy");
    server.tenant(old.as_str()).await.expect("served before the rename");
    let start = Instant::now();
    while !server.registry_is_live() {
        assert!(start.elapsed() < Duration::from_secs(5), "the live registry did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Without a terminal and without --yes nothing is renamed.
    let out = world.run(env!("CARGO_BIN_EXE_renametenant"), &[old.clone(), new.clone()], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("pass --yes"), "{}", text(&out.stderr));
    assert_eq!(world.checksums(&old, &old, false).await, before);

    let out = world.rename(&old, &new, &["--json"], None);
    expect_ok(&out, "rename");
    let waited = followed(&server, &old, &new).await;
    assert!(waited < Duration::from_secs(1), "{setup:?}: the server followed after {waited:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let slugs: Vec<&str> =
        report["steps"].as_array().expect("steps").iter().filter_map(|s| s["step"].as_str()).collect();
    assert_eq!(slugs.len(), rename_steps(setup).len(), "{report}");
    for (table, rows) in [("projects", 1), ("tasks", 2), ("comments", 2), ("tenant_users", 1)] {
        assert_eq!(report["rows"][table], rows, "{setup:?}: {report}");
    }

    world.assert_renamed(&old, &new, &before, "rename").await;
    assert_eq!(world.checksums(&other, &other, true).await, before_other, "{setup:?}: the other tenant changed");

    // The ledger's history is the new id's, the old one recorded.
    let ledger = world
        .texts(
            "SELECT tenant_id || ' ' || coalesce(renamed_from, '-') FROM tenancy_migration_ledger \
             WHERE tenant_id IN ($1, $2) ORDER BY 1",
            vec![old.as_str().into(), new.as_str().into()],
        )
        .await;
    assert_eq!(ledger, [format!("{new} {old}")], "{setup:?}");
    let run = world.tenancy.ledger().last_run().await.expect("ledger").expect("a run");
    let entries = world.tenancy.ledger().entries(run.id).await.expect("entries");
    assert!(entries.iter().any(|e| e.tenant_id == new && e.renamed_from.as_deref() == Some(old.as_str())));
    assert!(!entries.iter().any(|e| e.tenant_id == old), "{entries:?}");
    // The server the run recorded the line on moves with it.
    let moved = entries.iter().find(|e| e.tenant_id == new).expect("the renamed line");
    assert!(moved.server.as_deref().is_some_and(|server| !server.is_empty()), "{moved:?}");

    if setup == Setup::PgTable {
        // The renamed login role, as its own pool logs in: bound to the new id by its
        // name, it sees all its rows and nothing of the other tenant's.
        let db = world.tenancy.tenant(new.as_str()).await.expect("handle");
        let prefix = tenancy::rls::tenant_role_prefix(world.tenancy.master()).await.expect("prefix");
        for (table, rows) in [("projects", 1), ("tasks", 2), ("comments", 2), ("tenant_users", 1)] {
            let row = db
                .query_one_raw(Statement::from_string(
                    DbBackend::Postgres,
                    format!(
                        "SELECT session_user::text, count(*), count(*) FILTER (WHERE tenant_id <> '{new}'), \
                         (SELECT count(*) FROM {table} WHERE tenant_id = '{other}') FROM {table}"
                    ),
                ))
                .await
                .expect("a query as the renamed role")
                .expect("a row");
            assert_eq!(row.try_get_by_index::<String>(0).expect("user"), format!("{prefix}{new}"));
            assert_eq!(row.try_get_by_index::<i64>(1).expect("count"), rows, "{table}: its own rows");
            assert_eq!(row.try_get_by_index::<i64>(2).expect("count"), 0, "{table}: another tenant's rows");
            assert_eq!(row.try_get_by_index::<i64>(3).expect("count"), 0, "{table}: the other tenant's rows");
        }
        let smuggled = db
            .execute_unprepared(&format!("INSERT INTO projects (tenant_id, name) VALUES ('{other}', 'smuggled')"))
            .await;
        assert!(smuggled.is_err(), "the renamed role wrote a row of another tenant");
        let old_rows = db
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                format!("SELECT count(*) FROM projects WHERE tenant_id = '{old}'"),
            ))
            .await
            .expect("query")
            .expect("row");
        assert_eq!(old_rows.try_get_by_index::<i64>(0).expect("count"), 0);
    }
    world.assert_serves(&new, max_before).await;
    assert_eq!(world.checksums(&other, &other, true).await, before_other, "{setup:?}: the other tenant changed");

    // The new id is taken for another rename; the old one is unknown.
    let out = world.rename(&other, &new, &[], None);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let out = world.rename(&old, &unique_name("x"), &[], None);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    let out = world.rename(&other, &other, &[], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(world.checksums(&other, &other, true).await, before_other);
    drop(server);
}

/// `renametenant` killed after each step in turn: both ids are held (other lifecycle
/// commands on either get exit 7, naming the rename), and one plain re-run finishes it
/// with every check of a clean rename; the other tenant's rows never change.
async fn killed_after_every_step(setup: Setup) {
    let Some(world) = World::new(setup).await else { return };
    let other = unique_name("o");
    world.populated(&other).await;
    let before_other = world.checksums(&other, &other, true).await;
    for step in rename_steps(setup) {
        let (old, new) = (unique_name("k"), unique_name("m"));
        world.populated(&old).await;
        let before = world.checksums(&old, &old, false).await;
        let max_before = world.max_project_id(&old).await;
        let out = world.rename(&old, &new, &[], Some(step));
        assert!(killed(&out), "{setup:?} {step}: renametenant was not stopped: {}", text(&out.stderr));
        if *step == "switch-registry" {
            // Killed after its last commit: done, and a re-run finds no tenant to rename.
            assert_eq!(world.journal().await, Vec::<String>::new());
            let out = world.rename(&old, &new, &[], None);
            assert_eq!(out.status.code(), Some(6), "{setup:?} {step}: {}", text(&out.stderr));
        } else {
            assert_eq!(world.journal().await, [format!("{old} rename"), format!("{new} rename")], "{setup:?} {step}");
            let status =
                world.texts("SELECT status FROM tenancy_tenants WHERE tenant_id = $1", vec![old.as_str().into()]);
            assert_eq!(status.await, ["renaming"], "{setup:?} {step}");
            assert!(world.tenancy.tenant(old.as_str()).await.is_err(), "{setup:?} {step}: served while renamed");
            for id in [&old, &new] {
                for out in [world.delete(id, &[], None), world.create(id, None)] {
                    assert_eq!(out.status.code(), Some(7), "{setup:?} {step} {id}: {}", text(&out.stderr));
                    let stderr = text(&out.stderr);
                    assert!(stderr.contains(&format!("renametenant {old} {new}")), "{stderr}");
                }
            }
            // A rename to a third id is refused too.
            let out = world.rename(&old, &unique_name("z"), &[], None);
            assert_eq!(out.status.code(), Some(7), "{setup:?} {step}: {}", text(&out.stderr));
            expect_ok(&world.rename(&old, &new, &[], None), &format!("{setup:?} {step}: the re-run"));
        }
        world.assert_renamed(&old, &new, &before, step).await;
        world.assert_serves(&new, max_before).await;
        assert_eq!(world.checksums(&other, &other, true).await, before_other, "{setup:?} {step}: the other tenant");
    }
}

#[tokio::test]
async fn rename_postgres_schema() {
    renamed_with_every_check(Setup::PgSchema).await;
}

#[tokio::test]
async fn rename_postgres_table() {
    renamed_with_every_check(Setup::PgTable).await;
}

#[tokio::test]
async fn rename_postgres_database() {
    renamed_with_every_check(Setup::PgDatabase).await;
}

#[tokio::test]
async fn rename_sqlite_database() {
    renamed_with_every_check(Setup::SqliteDatabase).await;
}

#[tokio::test]
async fn rename_sqlite_table() {
    renamed_with_every_check(Setup::SqliteTable).await;
}

#[tokio::test]
async fn rename_killed_after_every_step_postgres_schema() {
    killed_after_every_step(Setup::PgSchema).await;
}

#[tokio::test]
async fn rename_killed_after_every_step_postgres_table() {
    killed_after_every_step(Setup::PgTable).await;
}

#[tokio::test]
async fn rename_killed_after_every_step_postgres_database() {
    killed_after_every_step(Setup::PgDatabase).await;
}

#[tokio::test]
async fn rename_killed_after_every_step_sqlite_database() {
    killed_after_every_step(Setup::SqliteDatabase).await;
}

#[tokio::test]
async fn rename_killed_after_every_step_sqlite_table() {
    killed_after_every_step(Setup::SqliteTable).await;
}

/// Gives tenant `id` twenty cache entries, and one more that expires in ten minutes.
async fn fill(cached: &tenancy::Tenancy, id: &str) {
    use tenancy::cache::TenantKey;
    let cache = cached.tenant(id).await.expect("handle").cache();
    for n in 0..20 {
        cache.set(&TenantKey::new("carts", format!("u{n}")), &n, None).await.expect("set");
    }
    cache.set(&TenantKey::new("sessions", "s1"), &"token", Some(Duration::from_secs(600))).await.expect("set");
}

/// A cache tenant's keys are its data. Renamed with `--cache-url` (and killed after every
/// step, then run again), every key is under the new namespace with its value and what is
/// left of its TTL, none under the old; the other tenant's keys and the global ones are
/// untouched.
async fn cache_tenant_renamed(setup: Setup) {
    use tenancy::cache::{CacheConfig, GlobalKey, TenantKey};
    let Some(world) = World::new(setup).await else { return };
    let Some(redis) = tenancy_test_support::RedisPrefix::create(":ren").await else { return };
    let cached = tenancy::Tenancy::builder(world.url.clone())
        .secret_key_file(world.dir.path().join("key"))
        .cache(CacheConfig::redis(tenancy_test_support::redis_url()).prefix(redis.prefix.clone()))
        .live_registry(false)
        .connect()
        .await
        .expect("connect with Redis");
    let other = unique_name("o");
    expect_ok(&world.create(&other, None), "create the other tenant");
    fill(&cached, &other).await;
    cached.global_cache().set(&GlobalKey::new("plans", "all"), &"gold", None).await.expect("set global");
    let redis_url = tenancy_test_support::redis_url();
    let flags = ["--cache-url", redis_url.as_str(), "--cache-prefix", redis.prefix.as_str()];
    let mut runs: Vec<Option<&str>> = vec![None];
    runs.extend(rename_steps(setup).iter().copied().map(Some));
    for fault in runs {
        let (old, new) = (unique_name("c"), unique_name("d"));
        expect_ok(&world.create(&old, None), "create");
        fill(&cached, &old).await;
        let before = redis.keys().await;
        let out = world.rename(&old, &new, &flags, fault);
        match fault {
            None => expect_ok(&out, "rename"),
            Some("switch-registry") => {
                assert!(killed(&out), "{setup:?}: renametenant was not stopped");
                let out = world.rename(&old, &new, &flags, None);
                assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
            }
            Some(step) => {
                assert!(killed(&out), "{setup:?} {step}: renametenant was not stopped");
                assert_eq!(world.journal().await, [format!("{old} rename"), format!("{new} rename")]);
                expect_ok(&world.rename(&old, &new, &flags, None), &format!("{setup:?} {step}: the re-run"));
            }
        }
        let (old_part, new_part) = (format!(":{{{old}}}:"), format!(":{{{new}}}:"));
        let mut expected: Vec<String> = before.iter().map(|key| key.replace(&old_part, &new_part)).collect();
        expected.sort();
        assert_eq!(redis.keys().await, expected, "{setup:?} {fault:?}: the keys");
        let cache = cached.tenant(new.as_str()).await.expect("the new id is served").cache();
        for n in 0..20 {
            let value: Option<i32> = cache.get(&TenantKey::new("carts", format!("u{n}"))).await.expect("get");
            assert_eq!(value, Some(n), "{setup:?} {fault:?}");
        }
        let session_key = cache.store_key(&TenantKey::new("sessions", "s1"));
        let mut conn = redis.conn.clone();
        let ttl: i64 = redis::cmd("PTTL").arg(&session_key).query_async(&mut conn).await.expect("PTTL");
        assert!(ttl > 0 && ttl <= 600_000, "{setup:?} {fault:?}: the TTL was not kept: {ttl}");
        assert!(matches!(cached.tenant(old.as_str()).await, Err(tenancy::Error::TenantNotFound { .. })));
        assert_eq!(world.journal().await, Vec::<String>::new());
    }
}

#[tokio::test]
async fn rename_postgres_cache_with_redis() {
    cache_tenant_renamed(Setup::PgCache).await;
}

#[tokio::test]
async fn rename_sqlite_cache_with_redis() {
    cache_tenant_renamed(Setup::SqliteCache).await;
}

/// `renametenant --cache-url redis+cluster://...`: a cache tenant's keys move to the new
/// id's slot (another node: `RENAME` could not span them) with their values and TTLs, also
/// when the command is killed right after moving them and run again; the other tenant's
/// keys stay where they were.
#[tokio::test]
async fn rename_cache_tenant_on_redis_cluster() {
    use tenancy::cache::{CacheConfig, TenantKey};
    let Some(world) = World::new(Setup::SqliteCache).await else { return };
    let Some(cluster) = tenancy_test_support::RedisCluster::start() else { return };
    let prefix = unique_name("ren_c");
    let cached = tenancy::Tenancy::builder(world.url.clone())
        .secret_key_file(world.dir.path().join("key"))
        .cache(CacheConfig::redis(cluster.url()).prefix(prefix.clone()))
        .live_registry(false)
        .connect()
        .await
        .expect("connect with the cluster");
    let slot_owner = |id: &str| {
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(format!("{{{id}}}"))
            .query(&mut cluster.node(cluster.ports[0]))
            .expect("CLUSTER KEYSLOT");
        cluster.owner_of(slot)
    };
    let other = unique_name("o");
    expect_ok(&world.create(&other, None), "create the other tenant");
    fill(&cached, &other).await;
    let flags = ["--cache-url", &cluster.url(), "--cache-prefix", &prefix].map(str::to_owned);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    for fault in [None, Some("move-cache-namespace")] {
        let old = unique_name("c");
        let new =
            (0..1000).map(|i| format!("{}_{i}", unique_name("d"))).find(|new| slot_owner(new) != slot_owner(&old));
        let new = new.expect("an id on another node");
        expect_ok(&world.create(&old, None), "create");
        fill(&cached, &old).await;
        let before = cluster.keys(&prefix);
        let out = world.rename(&old, &new, &flags, fault);
        if fault.is_some() {
            assert!(killed(&out), "renametenant was not stopped");
            expect_ok(&world.rename(&old, &new, &flags, None), "the re-run");
        } else {
            expect_ok(&out, "rename");
        }
        let (old_part, new_part) = (format!(":{{{old}}}:"), format!(":{{{new}}}:"));
        let mut expected: Vec<String> = before.iter().map(|key| key.replace(&old_part, &new_part)).collect();
        expected.sort();
        assert_eq!(cluster.keys(&prefix), expected, "{fault:?}: the keys");
        assert_eq!(cluster.keys_on(slot_owner(&new), &format!("{prefix}:{{{new}}}:")).len(), 21, "{fault:?}");
        let cache = cached.tenant(new.as_str()).await.expect("the new id is served").cache();
        for n in 0..20 {
            let value: Option<i32> = cache.get(&TenantKey::new("carts", format!("u{n}"))).await.expect("get");
            assert_eq!(value, Some(n), "{fault:?}");
        }
        let session_key = cache.store_key(&TenantKey::new("sessions", "s1"));
        let mut conn = cluster.connect().await;
        let ttl: i64 = redis::cmd("PTTL").arg(&session_key).query_async(&mut conn).await.expect("PTTL");
        assert!(ttl > 0 && ttl <= 600_000, "{fault:?}: the TTL was not kept: {ttl}");
    }
    let other_cache = cached.tenant(other.as_str()).await.expect("the other tenant").cache();
    let value: Option<i32> = other_cache.get(&TenantKey::new("carts", "u3")).await.expect("get");
    assert_eq!(value, Some(3));
}

/// Through the library, with the in-process cache: a cache tenant's entries move to the
/// new id with their TTLs (an entry about to expire still expires); a suspended table
/// tenant stays suspended, with its reason, under the new id.
#[tokio::test]
async fn rename_through_the_library_keeps_ttls_and_suspensions() {
    use tenancy::cache::TenantKey;
    use tenancy::renaming::{RenameOptions, RenameStep};
    let Some(world) = World::new(Setup::SqliteCache).await else { return };
    let (old, new) = (unique_name("c"), unique_name("d"));
    expect_ok(&world.create(&old, None), "create");
    let cache = world.tenancy.tenant(old.as_str()).await.expect("handle").cache();
    cache.set(&TenantKey::new("carts", "kept"), &1, None).await.expect("set");
    cache.set(&TenantKey::new("carts", "brief"), &2, Some(Duration::from_millis(700))).await.expect("set");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = std::sync::Arc::clone(&seen);
    let options = RenameOptions::default().after_step(std::sync::Arc::new(move |step: &RenameStep| {
        record.lock().expect("lock").push(step.slug());
        Ok(())
    }));
    let renamed = world.tenancy.rename_tenant(old.as_str(), new.as_str(), &options).await.expect("rename");
    assert_eq!(renamed.cache_keys, 2);
    assert_eq!(*seen.lock().expect("lock"), rename_steps(Setup::SqliteCache));
    let cache = world.tenancy.tenant(new.as_str()).await.expect("served").cache();
    assert_eq!(cache.get::<i32>(&TenantKey::new("carts", "kept")).await.expect("get"), Some(1));
    assert_eq!(cache.get::<i32>(&TenantKey::new("carts", "brief")).await.expect("get"), Some(2));
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(cache.get::<i32>(&TenantKey::new("carts", "brief")).await.expect("get"), None, "the TTL was reset");
    assert_eq!(cache.get::<i32>(&TenantKey::new("carts", "kept")).await.expect("get"), Some(1));

    let (old, new) = (unique_name("s"), unique_name("t"));
    let world = World::new(Setup::SqliteTable).await.expect("SQLite");
    world.populated(&old).await;
    let before = world.checksums(&old, &old, false).await;
    let out = world.run(
        env!("CARGO_BIN_EXE_suspendtenant"),
        &[old.clone(), "--reason".to_owned(), "unpaid".to_owned()],
        None,
    );
    expect_ok(&out, "suspend");
    expect_ok(&world.rename(&old, &new, &[], None), "rename a suspended tenant");
    let row = world
        .texts(
            "SELECT status || ' ' || coalesce(suspended_reason, '-') FROM tenancy_tenants WHERE tenant_id = $1",
            vec![new.as_str().into()],
        )
        .await;
    assert_eq!(row, ["suspended unpaid"]);
    assert!(matches!(world.tenancy.tenant(new.as_str()).await, Err(tenancy::Error::TenantSuspended { .. })));
    assert_eq!(world.checksums(&old, &new, false).await, before);
}

/// A rename killed part-way is a stale operation to `tenancydoctor` (under both ids, with
/// the command that finishes it), the half-renamed schema and role are not orphans, and
/// `--repair` finishes the rename.
#[tokio::test]
async fn tenancydoctor_finishes_an_interrupted_rename() {
    let Some(world) = World::new(Setup::PgSchema).await else { return };
    let (old, new) = (unique_name("r"), unique_name("n"));
    world.populated(&old).await;
    let before = world.checksums(&old, &old, false).await;
    assert!(killed(&world.rename(&old, &new, &[], Some("rename-login-role"))), "renametenant was not stopped");
    let doctor = env!("CARGO_BIN_EXE_tenancydoctor");
    let out = world.run(doctor, &["--json".to_owned()], None);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let findings = report["findings"].as_array().expect("findings");
    let mut stale: Vec<String> = findings
        .iter()
        .filter(|f| f["kind"] == "stale_operation")
        .map(|f| f["tenant"].as_str().unwrap_or_default().to_owned())
        .collect();
    stale.sort();
    let mut expected = vec![old.clone(), new.clone()];
    expected.sort();
    assert_eq!(stale, expected, "{report}");
    assert!(report.to_string().contains(&format!("renametenant {old} {new}")), "{report}");
    let orphans: Vec<&serde_json::Value> =
        findings.iter().filter(|f| f["kind"].as_str().is_some_and(|k| k.starts_with("orphan"))).collect();
    assert!(orphans.is_empty(), "half-renamed storage taken for an orphan: {orphans:?}");
    let out = world.run(doctor, &["--repair".to_owned(), "--yes".to_owned()], None);
    assert!(out.status.code().is_some(), "{}", text(&out.stderr));
    world.assert_renamed(&old, &new, &before, "repair").await;
}

/// On a terminal `renametenant` lists its steps and asks to type the new id: a wrong
/// answer renames nothing (exit 130), the right one renames.
#[test]
fn renametenant_asks_to_type_the_new_id_on_a_terminal() {
    use crate::pty::{answer, exit_code, expect, plain};
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let Some(world) = runtime.block_on(World::new(Setup::SqliteTable)) else { return };
    let (old, new) = (unique_name("t"), unique_name("u"));
    expect_ok(&world.create(&old, None), "create");
    let spawn = || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_renametenant"));
        command
            .current_dir(world.dir.path())
            .args([&old, &new])
            .env("DATABASE_URL", &world.url)
            .env("TENANCY_SECRET_KEY_FILE", world.dir.path().join("key"))
            .env("TERM", "xterm-256color")
            .env("NO_COLOR", "1");
        rexpect::session::spawn_command(command, Some(30_000)).expect("spawn in a pty")
    };
    let status = |id: &str| {
        runtime.block_on(world.texts("SELECT status FROM tenancy_tenants WHERE tenant_id = $1", vec![id.into()]))
    };

    let (mut session, mut transcript) = (spawn(), String::new());
    expect(&mut session, &format!("Renaming tenant '{old}' to '{new}' will:"), &mut transcript);
    expect(&mut session, "set the tenant column of every scoped table to the new id", &mut transcript);
    answer(&mut session, "Type the new tenant id to rename it:", &old, &mut transcript);
    assert_eq!(exit_code(&session), 130, "{}", plain(&transcript));
    assert_eq!(status(&old), ["ready"]);
    assert!(status(&new).is_empty());

    let (mut session, mut transcript) = (spawn(), String::new());
    answer(&mut session, "Type the new tenant id to rename it:", &new, &mut transcript);
    expect(&mut session, &format!("Tenant '{old}' renamed to '{new}'"), &mut transcript);
    assert_eq!(exit_code(&session), 0, "{}", plain(&transcript));
    assert!(status(&old).is_empty());
    assert_eq!(status(&new), ["ready"]);
}
