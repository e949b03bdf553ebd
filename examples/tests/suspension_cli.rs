//! `suspendtenant` and `resumetenant` run as processes against a SQLite master: the
//! registry row, `showtenants`, fleet migrations with and without `--skip-suspended`, and
//! the exit codes.

use std::process::Output;

use crate::commands::text;

use sea_orm::{ConnectionTrait, DbBackend, Statement};
use tenancy::{Isolation, NewTenant, Tenancy};
use tenancy_test_support::TempDir;

fn command(bin: &str, dir: &TempDir, args: &[&str]) -> Output {
    crate::commands::run(bin, dir, &dir.sqlite_master_url(), args)
}

/// `(status, suspended_reason, suspended_at is set)` of a registry row.
async fn row(tenancy: &Tenancy, id: &str) -> (String, Option<String>, bool) {
    let sql = "SELECT status, suspended_reason, suspended_at IS NOT NULL FROM tenancy_tenants WHERE tenant_id = ?";
    let row = tenancy
        .master()
        .query_one_raw(Statement::from_sql_and_values(DbBackend::Sqlite, sql, [id.into()]))
        .await
        .expect("read the row")
        .expect("the row");
    (row.try_get_by_index(0).unwrap(), row.try_get_by_index(1).unwrap(), row.try_get_by_index(2).unwrap())
}

#[tokio::test]
async fn suspend_and_resume_through_the_commands() {
    let dir = TempDir::new();
    let tenancy = dir.sqlite_builder().connect().await.expect("connect");
    for id in ["acme", "globex"] {
        let new = NewTenant::new(id, id, Isolation::Database)
            .expect("a valid new tenant")
            .database(tenancy::NewDatabase::create(format!("{id}_db")));
        // Not migrated yet: the fleet runs below do it.
        tenancy.create_tenant(new, &()).await.expect("create");
    }

    let out = command(env!("CARGO_BIN_EXE_suspendtenant"), &dir, &["acme", "--reason", "unpaid invoice"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "✓ Tenant 'acme' suspended\n");
    assert_eq!(row(&tenancy, "acme").await, ("suspended".to_owned(), Some("unpaid invoice".to_owned()), true));
    assert_eq!(row(&tenancy, "globex").await, ("ready".to_owned(), None, false));

    let out = command(env!("CARGO_BIN_EXE_showtenants"), &dir, &["--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let statuses: Vec<(&str, &str)> = listed
        .as_array()
        .expect("an array")
        .iter()
        .map(|t| (t["tenant"].as_str().unwrap_or_default(), t["status"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(statuses, [("acme", "suspended"), ("globex", "ready")], "{listed}");

    // Fleet runs migrate a suspended tenant unless told to leave it alone.
    let out = command(env!("CARGO_BIN_EXE_migratealltenants"), &dir, &["--skip-suspended", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let outcome = |report: &serde_json::Value, id: &str| {
        let tenants = report["tenants"].as_array().expect("tenants").clone();
        let tenant = tenants.into_iter().find(|t| t["tenant"] == id).expect("the tenant");
        tenant["outcome"].as_str().unwrap_or_default().to_owned()
    };
    assert_eq!(outcome(&report, "acme"), "skipped", "{report}");
    assert_eq!(outcome(&report, "globex"), "migrated", "{report}");
    let out = command(env!("CARGO_BIN_EXE_migratealltenants"), &dir, &["--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(outcome(&report, "acme"), "migrated", "{report}");
    assert_eq!(outcome(&report, "globex"), "up_to_date", "{report}");

    // An unknown tenant is exit 6 and changes nothing.
    let out = command(env!("CARGO_BIN_EXE_suspendtenant"), &dir, &["nobody"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("Tenant 'nobody' does not exist"), "{}", text(&out.stderr));

    let out = command(env!("CARGO_BIN_EXE_resumetenant"), &dir, &["acme"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "✓ Tenant 'acme' resumed\n");
    assert_eq!(row(&tenancy, "acme").await, ("ready".to_owned(), None, false));
    tenancy.tenant("acme").await.expect("served again").ping().await.expect("reachable");
}
