//! Attacks on SQLite tenants through their own SQL (issue 10, classes 5 and 6), each on a
//! connection budget of one, with the next statement on the same connection checked and
//! the database state (rows, catalogs, attached databases) asserted afterwards:
//!
//! - a table-isolated tenant on a SQLite master reaches only its `#[tenant_scoped]`
//!   tables (its rows) and the `#[tenancy::shared]` ones (read-only unless writable):
//!   never the registry, another master table, `sqlite_master`, a view, a pragma
//!   function, a temporary object or an attached file;
//! - no SQLite tenant, database isolation included, can `ATTACH` (or `DETACH`) a file.

use example_app::entities::project;
use example_app::{Migrator, SharedMigrator};
use futures_util::StreamExt;
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, PaginatorTrait, Set, Statement, StreamTrait,
    TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use tenancy::{Isolation, NewDatabase, NewTenant, Tenancy, TenantConnection, TenantId};
use tenancy_migrate::MigrateOnCreate;
use tenancy_test_support::{TempDir, column_strings, count, table_tenants, unique_name};

/// A table every tenant may write (`#[tenancy::shared(writable)]`), beside the example
/// app's read-only `plans`.
mod guestbook {
    use sea_orm::entity::prelude::*;

    #[tenancy::shared(writable)]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "guestbook")]
    pub(crate) struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub line: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

struct Master {
    tenancy: Tenancy,
    dir: TempDir,
    a: TenantConnection,
    b: TenantConnection,
}

/// A SQLite master whose pool has ONE connection, two migrated table tenants with a
/// project each, the shared `plans` (as the app's shared migration seeds them), a writable `guestbook`, and a master table
/// no model declares (`internal_notes`).
async fn master() -> Master {
    let dir = TempDir::new();
    let tenancy = dir.sqlite_builder().max_connections(1).connect().await.unwrap();
    SharedMigrator::up(tenancy.master(), None).await.unwrap();
    tenancy
        .master()
        .execute_unprepared(
            "CREATE TABLE guestbook (id INTEGER PRIMARY KEY, line TEXT NOT NULL);
             CREATE TABLE internal_notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
             INSERT INTO internal_notes (body) VALUES ('secret');",
        )
        .await
        .unwrap();
    let prefixes = ["acme", "globex"];
    let mut handles = table_tenants(&tenancy, &MigrateOnCreate::new(&Migrator), true, &prefixes).await;
    for (handle, prefix) in handles.iter().zip(prefixes) {
        project::ActiveModel { name: Set(format!("{prefix}-project")), ..Default::default() }
            .insert(handle)
            .await
            .unwrap();
    }
    let b = handles.pop().unwrap();
    let a = handles.pop().unwrap();
    Master { tenancy, dir, a, b }
}

fn sql(text: &str) -> Statement {
    Statement::from_string(DbBackend::Sqlite, text.to_owned())
}

/// Every way the handle runs SQL: prepared query and execute, unprepared, inside a
/// transaction (and its savepoint), and as a stream. All must fail.
async fn refused_everywhere(db: &TenantConnection, text: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let mut push = |result: Result<(), DbErr>, how: &str| match result {
        Ok(()) => panic!("{how}: {text} ran"),
        Err(err) => errors.push(err.to_string()),
    };
    push(db.query_all_raw(sql(text)).await.map(drop), "query_all_raw");
    push(db.execute_raw(sql(text)).await.map(drop), "execute_raw");
    push(db.execute_unprepared(text).await.map(drop), "execute_unprepared");
    push(db.execute_unprepared(&format!("SELECT 1; {text}")).await.map(drop), "execute_unprepared batch");
    let txn = db.begin().await.unwrap();
    push(txn.query_all_raw(sql(text)).await.map(drop), "transaction query");
    push(txn.execute_unprepared(text).await.map(drop), "transaction execute_unprepared");
    let nested = txn.begin().await.unwrap();
    push(nested.execute_raw(sql(text)).await.map(drop), "savepoint execute_raw");
    nested.rollback().await.unwrap();
    txn.rollback().await.unwrap();
    push(db.stream_raw(sql(text)).await.map(drop), "stream");
    for error in &errors {
        assert!(error.contains("refusing"), "{text}: {error}");
    }
    errors
}

/// The next statements on the (single) master connection: each tenant still sees exactly
/// its own project, and the library's registry lookup still finds the right tenants.
async fn still_isolated(m: &Master) {
    for (handle, prefix) in [(&m.a, "acme"), (&m.b, "globex")] {
        let projects = project::Entity::find().all(handle).await.unwrap();
        let names: Vec<_> = projects.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, [format!("{prefix}-project")]);
        let again = m.tenancy.tenant(handle.id()).await.unwrap();
        assert_eq!(again.id(), handle.id());
        assert_eq!(again.isolation(), Isolation::Table);
    }
    // Nothing attached, nothing temporary, on the one pooled connection (`temp` is listed
    // once anything has looked at the temporary schema, as the count below does).
    let attached = column_strings(m.tenancy.master(), "SELECT name FROM pragma_database_list", vec![]).await;
    assert!(attached.iter().all(|name| name == "main" || name == "temp"), "databases on the connection: {attached:?}");
    assert_eq!(count(m.tenancy.master(), "SELECT COUNT(*) FROM sqlite_temp_master", vec![]).await, 0);
}

async fn registry_rows(m: &Master) -> Vec<String> {
    column_strings(
        m.tenancy.master(),
        "SELECT tenant_id || ':' || name || ':' || isolation_type || ':' || status FROM tenancy_tenants ORDER BY 1",
        vec![],
    )
    .await
}

#[tokio::test]
async fn a_table_tenant_cannot_read_or_write_the_registry() {
    let m = master().await;
    let before = registry_rows(&m).await;
    assert_eq!(before.len(), 2);
    let b = m.b.id().as_str();
    for text in [
        "SELECT * FROM tenancy_tenants".to_owned(),
        r#"SELECT * FROM "TENANCY_TENANTS""#.to_owned(),
        "SELECT * FROM [tenancy_tenants]".to_owned(),
        "SELECT * FROM main.tenancy_tenants".to_owned(),
        "SELECT name FROM projects WHERE EXISTS (SELECT 1 FROM tenancy_tenants)".to_owned(),
        "SELECT name FROM projects WHERE id IN (SELECT rowid FROM tenancy_tenants)".to_owned(),
        "SELECT name FROM projects UNION SELECT config FROM tenancy_tenants".to_owned(),
        "WITH t AS (SELECT * FROM tenancy_tenants) SELECT * FROM t".to_owned(),
        format!("UPDATE tenancy_tenants SET status = 'provisioning' WHERE tenant_id = '{b}'"),
        format!("DELETE FROM tenancy_tenants WHERE tenant_id = '{b}'"),
        "INSERT INTO tenancy_tenants (tenant_id, name, isolation_type, config, status) \
         VALUES ('evil', 'E', 'table', '{}', 'ready')"
            .to_owned(),
        "INSERT INTO projects (name) SELECT name FROM tenancy_tenants".to_owned(),
    ] {
        let errors = refused_everywhere(&m.a, &text).await;
        assert!(errors.iter().all(|e| e.contains("tenancy_tenants") || e.contains("TENANCY_TENANTS")), "{text}");
        still_isolated(&m).await;
    }
    assert_eq!(registry_rows(&m).await, before);
}

#[tokio::test]
async fn a_table_tenant_cannot_reach_undeclared_tables_views_or_sqlite_master() {
    let m = master().await;
    // A view over a scoped table, as a migration would create it on the master.
    m.tenancy.master().execute_unprepared("CREATE VIEW every_project AS SELECT * FROM projects").await.unwrap();
    for text in [
        "SELECT * FROM internal_notes",
        "SELECT name FROM projects JOIN internal_notes ON 1",
        "SELECT name FROM projects WHERE 1 IN internal_notes",
        "UPDATE internal_notes SET body = 'mine'",
        "DELETE FROM internal_notes",
        "INSERT INTO internal_notes (body) VALUES ('planted')",
        "SELECT * FROM every_project",
        "SELECT COUNT(*) FROM main.every_project",
        "SELECT sql FROM sqlite_master",
        "SELECT sql FROM sqlite_schema",
        "SELECT name FROM sqlite_temp_master",
        "SELECT * FROM sqlite_sequence",
        "SELECT * FROM pragma_table_info('tenancy_tenants')",
        "SELECT name FROM pragma_database_list",
        "SELECT * FROM pragma_index_list('projects')",
        "SELECT load_extension('/tmp/x')",
        "SELECT * FROM generate_series(1, 3)",
    ] {
        let errors = refused_everywhere(&m.a, text).await;
        assert!(!errors.is_empty());
        still_isolated(&m).await;
    }
    assert_eq!(column_strings(m.tenancy.master(), "SELECT body FROM internal_notes", vec![]).await, ["secret"]);
    // The view itself still shows every tenant's rows, to the master only.
    assert_eq!(count(m.tenancy.master(), "SELECT COUNT(*) FROM every_project", vec![]).await, 2);
}

#[tokio::test]
async fn shared_tables_are_read_only_unless_declared_writable() {
    let m = master().await;
    // Read: the shared plans, joined and filtered, through sea-orm and raw SQL.
    let all_plans = "SELECT code || ':' || name || ':' || price_cents FROM plans ORDER BY id";
    let plans_before = column_strings(m.tenancy.master(), all_plans, vec![]).await;
    assert!(!plans_before.is_empty());
    let plans = example_app::entities::plan::Entity::find().all(&m.a).await.unwrap();
    assert_eq!(plans.len(), plans_before.len());
    let joined =
        m.b.query_all_raw(sql("SELECT p.name, x.code FROM projects p JOIN plans x ON x.id = 1")).await.unwrap();
    assert_eq!(joined.len(), 1, "b's one project with the first plan");
    for text in [
        "INSERT INTO plans (id, code, name, price_cents) VALUES (2, 'evil', 'Evil', 0)",
        "UPDATE plans SET price_cents = 0",
        "DELETE FROM plans",
        "UPDATE main.plans SET name = 'x'",
        "WITH c AS (SELECT 1) DELETE FROM plans",
        "INSERT OR REPLACE INTO plans (id, code, name, price_cents) VALUES (1, 'free', 'Hijacked', 0)",
    ] {
        let errors = refused_everywhere(&m.a, text).await;
        assert!(errors.iter().any(|e| e.contains("read-only")), "{text}: {errors:?}");
        still_isolated(&m).await;
    }
    assert_eq!(column_strings(m.tenancy.master(), all_plans, vec![]).await, plans_before);
    // Writable: both tenants write and read the one shared guestbook.
    guestbook::ActiveModel { line: Set("from a".to_owned()), ..Default::default() }.insert(&m.a).await.unwrap();
    m.b.execute_unprepared("INSERT INTO guestbook (line) VALUES ('from b')").await.unwrap();
    assert_eq!(guestbook::Entity::find().count(&m.a).await.unwrap(), 2);
    m.b.execute_unprepared("UPDATE guestbook SET line = upper(line)").await.unwrap();
    assert_eq!(
        column_strings(m.tenancy.master(), "SELECT line FROM guestbook ORDER BY id", vec![]).await,
        ["FROM A", "FROM B"]
    );
    still_isolated(&m).await;
}

#[tokio::test]
async fn temporary_objects_cannot_shadow_the_registry_or_scoped_tables() {
    let m = master().await;
    let before = registry_rows(&m).await;
    for text in [
        "CREATE TEMP TABLE tenancy_tenants (tenant_id TEXT, name TEXT, isolation_type TEXT, config TEXT, status TEXT)",
        "CREATE TEMPORARY TABLE projects AS SELECT * FROM projects",
        "CREATE TEMP VIEW tenancy_tenants AS SELECT 'x' AS tenant_id",
        "CREATE TEMP VIEW projects AS SELECT * FROM main.projects",
        "CREATE TEMP TRIGGER t AFTER INSERT ON projects BEGIN DELETE FROM projects; END",
        "CREATE TABLE mine (id INTEGER)",
        "CREATE VIEW mine AS SELECT * FROM projects",
        "DROP TABLE projects",
        "ALTER TABLE projects RENAME TO gone",
        "CREATE INDEX i ON projects (name)",
    ] {
        refused_everywhere(&m.a, text).await;
        still_isolated(&m).await;
    }
    assert_eq!(registry_rows(&m).await, before);
    let schema = "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('mine', 'gone', 'i', 't')";
    assert_eq!(count(m.tenancy.master(), schema, vec![]).await, 0);
}

#[tokio::test]
async fn pragmas_transaction_control_and_other_statements_are_refused() {
    let m = master().await;
    let foreign_keys =
        || async { count(m.tenancy.master(), "SELECT foreign_keys FROM pragma_foreign_keys", vec![]).await };
    let before = foreign_keys().await;
    for text in [
        "PRAGMA foreign_keys = OFF",
        "PRAGMA query_only = 1",
        "pragma writable_schema = on",
        "PRAGMA table_info('tenancy_tenants')",
        "VACUUM",
        "VACUUM INTO '/tmp/tenancy-copy.db'",
        "REINDEX",
        "ANALYZE",
        "BEGIN",
        "COMMIT",
        "SAVEPOINT s",
        "RELEASE s",
        "EXPLAIN SELECT * FROM tenancy_tenants",
        "SELECT $$; DELETE FROM plans; --$$",
        "THIS IS NOT SQL",
    ] {
        refused_everywhere(&m.a, text).await;
        still_isolated(&m).await;
    }
    assert_eq!(foreign_keys().await, before);
}

/// ATTACH variants, on a table tenant of the master and on database tenants.
fn attach_variants(file: &str) -> Vec<String> {
    vec![
        format!("ATTACH DATABASE '{file}' AS other"),
        format!("attach '{file}' as other"),
        format!("aTtAcH/**/DATABASE '{file}' AS other"),
        format!("  -- comment\n\tATTACH\n'{file}'\nAS other"),
        format!("/* ATTACH in a comment */ ATTACH DATABASE '{file}' AS \"other\""),
        "ATTACH DATABASE ':memory:' AS scratch".to_owned(),
        "DETACH DATABASE main".to_owned(),
    ]
}

#[tokio::test]
async fn a_table_tenant_cannot_attach_a_file() {
    let m = master().await;
    let master_file = m.dir.path().join("master.db");
    for text in attach_variants(&master_file.display().to_string()) {
        let errors = refused_everywhere(&m.a, &text).await;
        assert!(errors.iter().all(|e| e.contains("ATTACH/DETACH")), "{text}: {errors:?}");
        still_isolated(&m).await;
    }
}

/// Two database-isolated tenants in their own SQLite files, one pool of ONE connection
/// each (and a budget of one pool): neither can attach the master or the other's file.
#[tokio::test]
async fn a_database_tenant_cannot_attach_the_master_or_another_tenants_file() {
    let dir = TempDir::new();
    let tenancy = dir
        .sqlite_builder()
        .max_connections(1)
        .tenant_connection_budget(1)
        .connections_per_tenant_pool(1)
        .connect()
        .await
        .unwrap();
    let mut handles = Vec::new();
    for prefix in ["acme", "globex"] {
        let id: TenantId = unique_name(prefix).parse().unwrap();
        let new = NewTenant::new(id.clone(), "T", Isolation::Database)
            .expect("a valid new tenant")
            .database(NewDatabase::create(format!("{id}_db")))
            .migrate(true);
        tenancy.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.unwrap();
        let handle = tenancy.tenant(&id).await.unwrap();
        let name = Set(format!("{prefix}-project"));
        project::ActiveModel { name, tenant_id: Set(id.to_string()), ..Default::default() }
            .insert(&handle)
            .await
            .unwrap();
        handles.push(handle);
    }
    let master_file = dir.path().join("master.db").display().to_string();
    let files: Vec<String> =
        handles.iter().map(|h| dir.path().join(format!("{}_db.db", h.id())).display().to_string()).collect();
    let registry = "SELECT tenant_id || ':' || status FROM tenancy_tenants ORDER BY 1";
    let registry_before = column_strings(tenancy.master(), registry, vec![]).await;

    for (me, other) in [(0, 1), (1, 0)] {
        let db = &handles[me];
        for target in [&master_file, &files[other]] {
            for text in attach_variants(target) {
                let errors = refused_everywhere(db, &text).await;
                assert!(errors.iter().all(|e| e.contains("ATTACH/DETACH")), "{text}: {errors:?}");
                // The next statement on the tenant's one connection: its own file only.
                let listed = db.query_all_raw(sql("SELECT name, file FROM pragma_database_list")).await.unwrap();
                let names: Vec<String> = listed.iter().map(|row| row.try_get_by_index(0).unwrap()).collect();
                assert_eq!(names, ["main"], "{text}");
                let file: String = listed[0].try_get_by_index(1).unwrap();
                assert!(file.ends_with(&format!("{}_db.db", db.id())), "{file}");
                let registry = db.query_all_raw(sql("SELECT * FROM tenancy_tenants")).await.unwrap_err();
                assert!(registry.to_string().contains("no such table"), "{registry}");
                let names = example_app::entities::project::Entity::find().all(db).await.unwrap();
                assert_eq!(names.len(), 1);
                assert_eq!(names[0].name, format!("{}-project", ["acme", "globex"][me]));
            }
        }
    }
    // Nothing was written anywhere else.
    assert_eq!(column_strings(tenancy.master(), registry, vec![]).await, registry_before);
    for handle in &handles {
        assert_eq!(project::Entity::find().count(handle).await.unwrap(), 1);
    }
    // A quoted "attach" is a name, not the statement.
    let quoted = handles[0].query_all_raw(sql(r#"SELECT 1 AS "attach""#)).await.unwrap();
    assert_eq!(quoted.len(), 1);
    // Streams refuse too, and a tenant's stream of its own rows still works.
    let streamed: Vec<_> = project::Entity::find().stream(&handles[1]).await.unwrap().collect().await;
    assert_eq!(streamed.len(), 1);
}
