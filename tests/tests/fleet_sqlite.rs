//! Fleet migrations on the embedded SQLite master: database files, shared tables and
//! cache tenants, migrated and re-migrated, with a plan that touches nothing.

use tenancy::ledger::TenantOutcome;
use tenancy::{Isolation, NewDatabase, NewTenant, Tenancy};
use tenancy_migrate::fleet::{FleetOptions, migrate_all, migrate_all_listed, plan};
use tenancy_test_support::{TempDir, column_strings};

#[tokio::test]
async fn sqlite_fleet_migrates_each_mode_once() {
    let dir = TempDir::new();
    let tenancy =
        Tenancy::builder(dir.sqlite_master_url()).secret_key_file(dir.path().join("key")).connect().await.unwrap();
    for (id, isolation) in [("filed", Isolation::Database), ("tabled", Isolation::Table), ("cached", Isolation::Cache)]
    {
        let database = (isolation == Isolation::Database).then(|| NewDatabase::create(format!("{id}_db")));
        let new = NewTenant::new(id, id, isolation).expect("a valid new tenant").database(database);
        tenancy.create_tenant(new, &()).await.unwrap();
    }
    let migrators = example_app::migrators();
    let plans = plan(&tenancy, &migrators, &FleetOptions::default()).await.unwrap();
    let pending: Vec<(String, usize)> = plans.iter().map(|p| (p.tenant.to_string(), p.pending.len())).collect();
    assert_eq!(pending, [("cached".into(), 0), ("filed".into(), 3), ("tabled".into(), 3)]);

    let (_, first) = migrate_all_listed(&tenancy, &migrators, &FleetOptions::default(), &|_| {}).await.unwrap();
    let got: Vec<_> = first.iter().map(|t| (t.tenant.to_string(), t.outcome)).collect();
    assert_eq!(
        got,
        [
            ("cached".into(), TenantOutcome::Skipped),
            ("filed".into(), TenantOutcome::Migrated),
            ("tabled".into(), TenantOutcome::Migrated),
        ]
    );
    let file = sea_orm::Database::connect(format!("sqlite://{}/filed_db.db", dir.path().display())).await.unwrap();
    let versions = column_strings(&file, "SELECT version FROM seaql_migrations ORDER BY version", vec![]).await;
    assert_eq!(versions.len(), 3);
    let plans_master = column_strings(tenancy.master(), "SELECT code FROM plans ORDER BY code", vec![]).await;
    assert_eq!(plans_master, ["enterprise", "free", "pro"]);

    let second = migrate_all(&tenancy, &migrators, &FleetOptions::default(), &|_| {}).await.unwrap();
    assert_eq!(second.count(TenantOutcome::UpToDate), 2);
    assert!(second.succeeded());
}
