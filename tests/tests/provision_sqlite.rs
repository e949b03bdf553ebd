//! Tenant provisioning on the embedded SQLite master: every mode, failures, races.

use crate::common;

use common::FailAfter;
use example_app::Migrator;
use sea_orm::{ConnectionTrait, Database};
use tenancy::{Error, Isolation, NewDatabase, NewTenant, ProvisionStep, Tenancy, TenantStatus};
use tenancy_migrate::MigrateOnCreate;
use tenancy_test_support::{TempDir, column_strings, count, unique_name};

async fn master(dir: &TempDir) -> Tenancy {
    Tenancy::builder(dir.sqlite_master_url())
        .secret_key_file(dir.path().join("key"))
        .connect()
        .await
        .expect("connect master")
}

fn new_tenant(id: &str, isolation: Isolation) -> NewTenant {
    NewTenant::new(id, format!("{id} Inc."), isolation).expect("a valid new tenant").migrate(true)
}

fn sqlite_db(name: &str, create: bool) -> Option<NewDatabase> {
    Some(if create { NewDatabase::create(name) } else { NewDatabase::existing(name) })
}

async fn table_names(db: &sea_orm::DatabaseConnection) -> Vec<String> {
    column_strings(db, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name", vec![]).await
}

#[tokio::test]
async fn connecting_creates_the_registry_by_migration() {
    let dir = TempDir::new();
    let tenancy = master(&dir).await;
    let tables = table_names(tenancy.master()).await;
    assert!(tables.contains(&"tenancy_tenants".to_owned()), "{tables:?}");
    assert!(tables.contains(&"tenancy_migrations".to_owned()), "{tables:?}");
    // Connecting again applies nothing new and keeps the rows.
    let again = master(&dir).await;
    // The registry table, the fleet ledger, the suspension columns, the operations journal,
    // the change triggers, the leftovers of moves, the ledger's renamed ids, the servers,
    // the ledger's servers, the custom domains.
    assert_eq!(count(again.master(), "SELECT COUNT(*) FROM tenancy_migrations", vec![]).await, 10);
    assert!(table_names(again.master()).await.contains(&"tenancy_domains".to_owned()));
}

#[tokio::test]
async fn table_tenant_migrates_the_shared_tables_once() {
    let dir = TempDir::new();
    let tenancy = master(&dir).await;
    let created = tenancy
        .create_tenant(new_tenant("acme", Isolation::Table), &MigrateOnCreate::new(&Migrator))
        .await
        .expect("create");
    assert!(created.migrated);
    assert!(created.created.is_empty());
    let tables = table_names(tenancy.master()).await;
    for table in ["projects", "tasks", "comments", "seaql_migrations"] {
        assert!(tables.contains(&table.to_owned()), "{table} missing from {tables:?}");
    }
    let rows = column_strings(
        tenancy.master(),
        "SELECT tenant_id || ',' || name || ',' || isolation_type || ',' || status FROM tenancy_tenants",
        vec![],
    )
    .await;
    assert_eq!(rows, ["acme,acme Inc.,table,ready"]);
    // A second table tenant finds the shared tables up to date.
    tenancy
        .create_tenant(new_tenant("globex", Isolation::Table), &MigrateOnCreate::new(&Migrator))
        .await
        .expect("second table tenant");
    assert_eq!(count(tenancy.master(), "SELECT COUNT(*) FROM seaql_migrations", vec![]).await, 3);
}

#[tokio::test]
async fn cache_tenant_is_a_row_and_nothing_else() {
    let dir = TempDir::new();
    let tenancy = master(&dir).await;
    let before = table_names(tenancy.master()).await;
    let created = tenancy
        .create_tenant(new_tenant("cachey", Isolation::Cache), &MigrateOnCreate::new(&Migrator))
        .await
        .expect("create");
    assert!(!created.migrated, "cache tenants have nothing to migrate");
    assert_eq!(table_names(tenancy.master()).await, before);
    let tenant = tenancy.get_tenant("cachey").await.unwrap();
    assert_eq!(tenant.isolation(), Isolation::Cache);
    assert_eq!(tenant.status(), TenantStatus::Ready);
    let outcome = tenancy_migrate::migrate_tenant(&tenancy, &tenant, &Migrator).await.unwrap();
    assert_eq!(outcome, tenancy_migrate::MigrationOutcome::NothingToMigrate);
}

#[tokio::test]
async fn database_tenant_gets_its_own_file_beside_the_master() {
    let dir = TempDir::new();
    let tenancy = master(&dir).await;
    let mut new = new_tenant("acme", Isolation::Database);
    new = new.database(sqlite_db("acme_db", true));
    let created = tenancy.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.expect("create");
    let file = dir.path().join("acme_db.db");
    assert!(file.exists());
    assert_eq!(created.created, [tenancy::Created::DatabaseFile { name: "acme_db".into(), path: file.clone() }]);
    let tenant_db = Database::connect(format!("sqlite://{}?mode=ro", file.display())).await.unwrap();
    let tables = table_names(&tenant_db).await;
    for table in ["projects", "tasks", "comments", "seaql_migrations"] {
        assert!(tables.contains(&table.to_owned()), "{table} missing from {tables:?}");
    }
    assert_eq!(count(&tenant_db, "SELECT COUNT(*) FROM seaql_migrations", vec![]).await, 3);
    // The master got no application tables.
    assert!(!table_names(tenancy.master()).await.contains(&"projects".to_owned()));
    let config = column_strings(tenancy.master(), "SELECT config FROM tenancy_tenants", vec![]).await;
    let config: serde_json::Value = serde_json::from_str(&config[0]).unwrap();
    assert_eq!(config, serde_json::json!({"database": {"engine": "sqlite", "name": "acme_db", "created": true}}));

    // Creating over the existing file is refused; adopting it works.
    let mut again = new_tenant("acme2", Isolation::Database);
    again = again.database(sqlite_db("acme_db", true));
    let err = tenancy.create_tenant(again, &MigrateOnCreate::new(&Migrator)).await.unwrap_err();
    assert!(matches!(err, Error::DatabaseFileExists { .. }), "{err}");
    let mut adopt = new_tenant("acme3", Isolation::Database);
    adopt = adopt.database(sqlite_db("acme_db", false));
    tenancy.create_tenant(adopt, &MigrateOnCreate::new(&Migrator)).await.expect("adopt existing file");
    assert!(file.exists());
}

#[tokio::test]
async fn schema_isolation_is_refused_on_sqlite() {
    let dir = TempDir::new();
    let tenancy = master(&dir).await;
    let err = tenancy
        .create_tenant(new_tenant("acme", Isolation::Schema), &MigrateOnCreate::new(&Migrator))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::SchemaNeedsPostgres { .. }), "{err}");
    assert!(err.to_string().contains("needs a PostgreSQL master database"), "{err}");
    assert!(tenancy.tenants().await.unwrap().is_empty());
}

#[tokio::test]
async fn duplicate_ids_are_refused_and_change_nothing() {
    let dir = TempDir::new();
    let tenancy = master(&dir).await;
    tenancy.create_tenant(new_tenant("acme", Isolation::Cache), &()).await.unwrap();
    let mut dup = new_tenant("acme", Isolation::Database);
    dup = dup.database(sqlite_db("other_db", true));
    let err = tenancy.create_tenant(dup, &()).await.unwrap_err();
    assert_eq!(err.to_string(), "Tenant with ID 'acme' already exists");
    assert!(!dir.path().join("other_db.db").exists());
    let tenants = tenancy.tenants().await.unwrap();
    assert_eq!(tenants.len(), 1);
    assert_eq!(tenants[0].isolation(), Isolation::Cache);
}

#[tokio::test]
async fn a_failure_after_any_step_leaves_nothing_behind() {
    let dir = TempDir::new();
    let tenancy = master(&dir).await;
    for step in
        [ProvisionStep::ClaimId, ProvisionStep::CreateDatabaseFile, ProvisionStep::Migrate, ProvisionStep::MarkReady]
    {
        let id = unique_name("t");
        let mut new = new_tenant(&id, Isolation::Database);
        new = new.database(sqlite_db(&id, true));
        let err = tenancy.create_tenant(new.clone(), &FailAfter(step)).await.unwrap_err();
        match &err {
            Error::ProvisioningFailed { step: failed, .. } => assert_eq!(*failed, step),
            other => panic!("{step:?}: {other}"),
        }
        assert!(tenancy.tenants().await.unwrap().is_empty(), "{step:?} left a row");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.starts_with(&id))
            .collect();
        assert!(leftovers.is_empty(), "{step:?} left {leftovers:?}");
        // And the same request simply works afterwards.
        tenancy.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.expect("retry");
        tenancy
            .master()
            .execute_unprepared(&format!("DELETE FROM tenancy_tenants WHERE tenant_id = '{id}'"))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn concurrent_creates_of_one_id_have_one_winner() {
    let dir = TempDir::new();
    let tenancy = master(&dir).await;
    let runs = (0..3).map(|i| {
        let tenancy = tenancy.clone();
        async move {
            let new = NewTenant::new("race", format!("racer {i}"), Isolation::Table).expect("a valid new tenant");
            tenancy.create_tenant(new, &()).await
        }
    });
    let results = futures_join_all(runs).await;
    let wins = results.iter().filter(|r| r.is_ok()).count();
    let dups = results.iter().filter(|r| matches!(r, Err(Error::TenantExists { id }) if id == "race")).count();
    assert_eq!((wins, dups), (1, 2), "{results:?}");
    assert_eq!(tenancy.tenants().await.unwrap().len(), 1);
}

async fn futures_join_all<F: std::future::Future + Send + 'static>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F::Output: Send,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.expect("task"));
    }
    out
}

/// A registry row is read into a `Tenant` in one place, `Tenant::from_row`: a row whose
/// config does not fit its mode is refused there, naming the tenant and what is wrong, and
/// never reaches a handle; other tenants stay readable one by one.
#[tokio::test]
async fn a_registry_row_that_does_not_fit_its_mode_is_refused_where_it_is_read() {
    let dir = TempDir::new();
    let tenancy = master(&dir).await;
    tenancy.create_tenant(new_tenant("sound", Isolation::Cache), &()).await.expect("create a sound tenant");
    let insert = "INSERT INTO tenancy_tenants (tenant_id, name, isolation_type, config, status, created_at, updated_at) \
                  VALUES (?, 'Broken', ?, ?, 'ready', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')";
    let rows = [
        ("noschema", "schema", "{}", "a schema tenant's config names no schema"),
        ("nodatabase", "database", "{}", "a database tenant's config names no database"),
        (
            "cachewithdb",
            "cache",
            r#"{"database":{"engine":"sqlite","name":"x"}}"#,
            "a cache tenant's config has relational storage",
        ),
    ];
    for (id, isolation, config, reason) in rows {
        tenancy
            .master()
            .execute_raw(sea_orm::Statement::from_sql_and_values(
                sea_orm::DbBackend::Sqlite,
                insert,
                [id.into(), isolation.into(), config.into()],
            ))
            .await
            .expect("plant a broken row");
        for err in [tenancy.get_tenant(id).await.unwrap_err(), tenancy.tenant(id).await.unwrap_err()] {
            assert!(
                matches!(&err, Error::CorruptRegistry { tenant, reason: why } if tenant == id && why == reason),
                "{id}: {err:?}"
            );
            assert_eq!(err.to_string(), format!("Registry row for tenant '{id}' is corrupt: {reason}"));
        }
        let delete = "DELETE FROM tenancy_tenants WHERE tenant_id = ?";
        let delete = sea_orm::Statement::from_sql_and_values(sea_orm::DbBackend::Sqlite, delete, [id.into()]);
        tenancy.master().execute_raw(delete).await.expect("remove the broken row");
    }
    // The sound tenant was readable throughout, by `&str`, `String` and `&TenantId` alike.
    let sound = tenancy.get_tenant("sound").await.expect("by &str");
    assert_eq!(tenancy.get_tenant(String::from("sound")).await.expect("by String"), sound);
    assert_eq!(tenancy.tenant(sound.id()).await.expect("by &TenantId").isolation(), Isolation::Cache);
    // An id that is not one is refused before any query.
    assert!(matches!(tenancy.tenant("Not An Id").await.unwrap_err(), Error::InvalidTenantId { .. }));
}

/// The suspension migration killed after adding its columns but before recording itself
/// (SQLite runs its statements outside a transaction): connecting again finishes it.
#[tokio::test]
async fn a_registry_migration_cut_short_is_finished_by_the_next_connect() {
    let dir = TempDir::new();
    let tenancy = master(&dir).await;
    // The state a kill after the `ALTER TABLE`s leaves: the columns, no record.
    tenancy
        .master()
        .execute_unprepared("DELETE FROM tenancy_migrations WHERE version = 'm20261129_000003_add_tenant_suspension'")
        .await
        .expect("cut the migration short");
    drop(tenancy);
    let tenancy = master(&dir).await;
    let columns = column_strings(
        tenancy.master(),
        "SELECT name FROM pragma_table_info('tenancy_tenants') WHERE name LIKE 'suspended%' ORDER BY name",
        vec![],
    )
    .await;
    assert_eq!(columns, ["suspended_at", "suspended_reason"]);
    assert_eq!(count(tenancy.master(), "SELECT COUNT(*) FROM tenancy_migrations", vec![]).await, 10);
    tenancy.create_tenant(new_tenant("after", Isolation::Cache), &()).await.expect("the registry works");
    tenancy.suspend_tenant("after", None).await.expect("suspend after the finished migration");
}
