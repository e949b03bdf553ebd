//! `tenancydoctor` run as a process: a clean master, planted faults, `--json`, drift,
//! `--repair` refused without a terminal or `--yes`, and repairs checked in the catalogs.

use std::process::Output;

use crate::commands::{run, text};

use example_app::Migrator;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use tenancy::{Isolation, NewDatabase, NewTenant};
use tenancy_migrate::MigrateOnCreate;
use tenancy_test_support::{PgMaster, TempDir, exists, unique_name};

const DOCTOR: &str = env!("CARGO_BIN_EXE_tenancydoctor");

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|err| panic!("{err}: {}", text(&out.stdout)))
}

/// `(kind, tenant, repairable)` of each finding, sorted.
fn kinds(report: &serde_json::Value) -> Vec<(String, Option<String>, bool)> {
    let mut kinds: Vec<_> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap_or_default().to_owned(),
                f["tenant"].as_str().map(str::to_owned),
                f["repairable"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    kinds.sort();
    kinds
}

#[tokio::test]
async fn a_clean_sqlite_master_exits_0_and_reports_no_findings() {
    let dir = TempDir::new();
    let url = dir.sqlite_master_url();
    let tenancy = dir.sqlite_builder().connect().await.expect("connect");
    for (id, isolation) in [("acme", Isolation::Database), ("globex", Isolation::Table), ("initech", Isolation::Cache)]
    {
        let mut new = NewTenant::new(id, id, isolation).expect("new tenant");
        if isolation == Isolation::Database {
            new = new.database(NewDatabase::create(format!("{id}_db")));
        }
        tenancy.create_tenant(new, &()).await.expect("create");
    }
    let out = run(env!("CARGO_BIN_EXE_migratealltenants"), &dir, &url, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = run(DOCTOR, &dir, &url, &[]);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(text(&out.stdout), "✓ No problems found\n");
    let out = run(DOCTOR, &dir, &url, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(json(&out), serde_json::json!({"findings": [], "repairs": []}));
}

#[tokio::test]
async fn sqlite_faults_are_listed_and_the_orphan_removed_only_when_confirmed() {
    let dir = TempDir::new();
    let url = dir.sqlite_master_url();
    let tenancy = dir.sqlite_builder().connect().await.expect("connect");
    for id in ["acme", "gone"] {
        let new = NewTenant::new(id, id, Isolation::Database)
            .expect("new tenant")
            .database(NewDatabase::create(format!("{id}_db")))
            .migrate(id == "gone");
        tenancy.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.expect("create");
    }
    tenancy
        .master()
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "DELETE FROM tenancy_tenants WHERE tenant_id = ?",
            ["gone".into()],
        ))
        .await
        .expect("forget");
    let orphan = dir.path().join("gone_db.db");

    // acme was never migrated, nor were the shared tables; gone_db.db is an orphan.
    let out = run(DOCTOR, &dir, &url, &["--json"]);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out.stderr));
    let report = json(&out);
    assert_eq!(
        kinds(&report),
        [
            ("migrations_behind".to_owned(), None, false),
            ("migrations_behind".to_owned(), Some("acme".to_owned()), false),
            ("orphan_database_file".to_owned(), None, true),
        ],
        "{report}"
    );
    let out = run(DOCTOR, &dir, &url, &[]);
    assert_eq!(out.status.code(), Some(8));
    let lines = text(&out.stdout);
    assert!(lines.contains("run migratetenant acme"), "{lines}");
    assert!(lines.ends_with("3 problem(s) found; 1 can be fixed with tenancydoctor --repair\n"), "{lines}");

    // No terminal and no --yes: refused, nothing changed.
    let out = run(DOCTOR, &dir, &url, &["--repair"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("pass --yes"), "{}", text(&out.stderr));
    assert!(orphan.exists());

    let out = run(DOCTOR, &dir, &url, &["--repair", "--yes", "--json"]);
    assert_eq!(out.status.code(), Some(8), "drift is left: {}", text(&out.stderr));
    let report = json(&out);
    assert_eq!(report["repairs"][0]["kind"], "orphan_database_file", "{report}");
    assert_eq!(report["repairs"][0]["repaired"], true, "{report}");
    assert!(!orphan.exists(), "the orphan file is removed");
    assert!(dir.path().join("acme_db.db").exists());
    assert_eq!(kinds(&report).len(), 2, "{report}");
}

#[tokio::test]
async fn postgres_orphan_schema_and_unknown_migrations_through_the_command() {
    let Some(pg) = PgMaster::create().await else { return };
    let dir = TempDir::new();
    let tenancy = pg.tenancy(&dir).await;
    let (gone, kept) = (unique_name("doc_gone"), unique_name("doc_kept"));
    for id in [&gone, &kept] {
        let new = NewTenant::new(id.as_str(), id.as_str(), Isolation::Schema).expect("new tenant").migrate(true);
        tenancy.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.expect("create");
    }
    let out = run(env!("CARGO_BIN_EXE_migratealltenants"), &dir, &pg.url, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let master = pg.connect().await;
    master
        .execute_unprepared(&format!(
            "DELETE FROM tenancy_tenants WHERE tenant_id = '{gone}'; \
             INSERT INTO \"{kept}\".seaql_migrations (version, applied_at) VALUES ('m29990101_000001_from_the_future', 0)"
        ))
        .await
        .expect("plant");

    let out = run(DOCTOR, &dir, &pg.url, &["--json"]);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out.stderr));
    let report = json(&out);
    assert_eq!(
        kinds(&report),
        [
            ("orphan_role".to_owned(), Some(gone.clone()), true),
            ("orphan_schema".to_owned(), Some(gone.clone()), true),
            ("unknown_migrations".to_owned(), Some(kept.clone()), false),
        ],
        "{report}"
    );

    let out = run(DOCTOR, &dir, &pg.url, &["--repair", "--yes"]);
    assert_eq!(out.status.code(), Some(8), "{}{}", text(&out.stdout), text(&out.stderr));
    let lines = text(&out.stdout);
    assert!(lines.contains(&format!("✓ Repaired schema '{gone}'")), "{lines}");
    assert!(!exists(&master, "SELECT 1 FROM pg_namespace WHERE nspname = $1", &gone).await);
    assert!(exists(&master, "SELECT 1 FROM pg_namespace WHERE nspname = $1", &kept).await);
    let prefix = tenancy::rls::tenant_role_prefix(&master).await.expect("prefix");
    assert!(!pg.admin_exists("SELECT 1 FROM pg_roles WHERE rolname = $1", &format!("{prefix}{gone}")).await);
    assert!(pg.admin_exists("SELECT 1 FROM pg_roles WHERE rolname = $1", &format!("{prefix}{kept}")).await);

    master
        .execute_unprepared(&format!("DELETE FROM \"{kept}\".seaql_migrations WHERE version LIKE 'm2999%'"))
        .await
        .expect("undo the plant");
    let out = run(DOCTOR, &dir, &pg.url, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(json(&out), serde_json::json!({"findings": [], "repairs": []}));
}
