//! `Tenancy::diagnose` and `Tenancy::repair` on a SQLite master: tenant files missing,
//! orphaned (carrying this master's mark) and unowned (not carrying it).

use sea_orm::{ConnectionTrait, DbBackend, Statement};
use tenancy::doctor::Finding;
use tenancy::{Isolation, NewDatabase, NewTenant, Tenancy};
use tenancy_test_support::TempDir;

async fn create(tenancy: &Tenancy, id: &str, isolation: Isolation) {
    let mut new = NewTenant::new(id, id, isolation).expect("a valid new tenant");
    if isolation == Isolation::Database {
        new = new.database(NewDatabase::create(format!("{id}_db")));
    }
    tenancy.create_tenant(new, &()).await.expect("create");
}

async fn forget(tenancy: &Tenancy, id: &str) {
    tenancy
        .master()
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "DELETE FROM tenancy_tenants WHERE tenant_id = ?",
            [id.into()],
        ))
        .await
        .expect("delete the registry row");
}

#[tokio::test]
async fn a_healthy_sqlite_master_has_no_findings() {
    let dir = TempDir::new();
    let tenancy = dir.sqlite_builder().connect().await.expect("connect");
    create(&tenancy, "acme", Isolation::Database).await;
    create(&tenancy, "globex", Isolation::Table).await;
    create(&tenancy, "initech", Isolation::Cache).await;
    assert_eq!(tenancy.diagnose().await.expect("diagnose"), []);
}

#[tokio::test]
async fn tenant_files_missing_orphaned_and_unowned() {
    let dir = TempDir::new();
    let tenancy = dir.sqlite_builder().connect().await.expect("connect");
    for id in ["lost", "gone", "kept"] {
        create(&tenancy, id, Isolation::Database).await;
    }
    let file = |name: &str| dir.path().join(format!("{name}.db"));
    std::fs::remove_file(file("lost_db")).expect("remove by hand");
    forget(&tenancy, "gone").await;
    // A SQLite file this master did not make, and a file that is no database at all.
    std::fs::copy(dir.path().join("master.db"), file("copied")).expect("copy");
    std::fs::write(file("notes"), "not a database").expect("write");

    let findings = tenancy.diagnose().await.expect("diagnose");
    let mut kinds: Vec<(&str, String)> = findings.iter().map(|f| (f.kind(), f.subject())).collect();
    kinds.sort();
    let shown = |name: &str| format!("file '{}'", file(name).display());
    assert_eq!(
        kinds,
        [
            ("missing_database_file", shown("lost_db")),
            ("orphan_database_file", shown("gone_db")),
            ("unowned_database_file", shown("copied")),
            ("unowned_database_file", shown("notes")),
        ]
    );
    assert_eq!(findings.iter().filter(|f| f.repairable()).count(), 1);
    assert!(matches!(&findings[0], Finding::MissingDatabaseFile { tenant, .. } if tenant.as_str() == "lost"));

    let repairs = tenancy.repair(&findings).await.expect("repair");
    assert_eq!(repairs.iter().filter(|r| r.outcome.is_ok()).count(), 1, "{repairs:?}");
    assert!(!file("gone_db").exists(), "the orphan is removed");
    for kept in ["kept_db", "copied", "notes"] {
        assert!(file(kept).exists(), "{kept} stays");
    }
    assert!(dir.path().join("master.db").exists());
    tenancy.tenant("kept").await.expect("handle").ping().await.expect("the kept tenant still works");
}
