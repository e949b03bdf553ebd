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

/// `tenancydoctor --citus` on the example app's own models, migrated for a table tenant
/// (the shared tables in `public`) and a schema tenant: every scoped table's primary key
/// is `id` alone, a 32-bit `serial`, and the foreign key columns are 32-bit too, so each
/// is reported; the composite foreign keys, the per-tenant unique indexes and the schema
/// tenant's schema break no rule. `plans` (shared) is referenced by no scoped table.
#[tokio::test]
async fn citus_check_reports_the_example_apps_keys_through_the_command() {
    let Some(pg) = PgMaster::create().await else { return };
    let dir = TempDir::new();
    let tenancy = pg.tenancy(&dir).await;
    for (prefix, isolation) in [("cit_t", Isolation::Table), ("cit_s", Isolation::Schema)] {
        let id = unique_name(prefix);
        let new = NewTenant::new(id.as_str(), id.as_str(), isolation).expect("new tenant").migrate(true);
        tenancy.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.expect("create");
    }
    // What the findings say is what the catalog holds.
    let master = pg.connect().await;
    let key = tenancy_test_support::column_strings(
        &master,
        "SELECT a.attname::text || ' ' || format_type(a.atttypid, a.atttypmod) FROM pg_constraint c \
         JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey) \
         WHERE c.conrelid = 'public.projects'::regclass AND c.contype = 'p'",
        vec![],
    )
    .await;
    assert_eq!(key, ["id integer"]);

    let out = run(DOCTOR, &dir, &pg.url, &["--citus", "--json"]);
    assert_eq!(out.status.code(), Some(8), "{}{}", text(&out.stdout), text(&out.stderr));
    let report = json(&out);
    let found: Vec<(String, String, Option<String>)> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            let subject = f["subject"].as_str().unwrap_or_default().to_owned();
            let message = f["message"].as_str().unwrap_or_default();
            let problem = message.strip_prefix(&format!("Citus: {subject}: ")).map(str::to_owned);
            (f["kind"].as_str().unwrap_or_default().to_owned(), subject, problem)
        })
        .collect();
    let expected = [
        (
            "citus_primary_key",
            "comments",
            "primary key \"comments_pkey\" (id) does not include the tenant column tenant_id",
        ),
        ("citus_integer_key", "comments", "column id is integer and in the primary key, filled from a sequence"),
        ("citus_integer_key", "comments", "column task_id is integer and in a foreign key"),
        (
            "citus_primary_key",
            "projects",
            "primary key \"projects_pkey\" (id) does not include the tenant column tenant_id",
        ),
        ("citus_integer_key", "projects", "column id is integer and in the primary key, filled from a sequence"),
        ("citus_primary_key", "tasks", "primary key \"tasks_pkey\" (id) does not include the tenant column tenant_id"),
        ("citus_integer_key", "tasks", "column id is integer and in the primary key, filled from a sequence"),
        ("citus_integer_key", "tasks", "column project_id is integer and in a foreign key"),
        (
            "citus_primary_key",
            "tenant_users",
            "primary key \"tenant_users_pkey\" (id) does not include the tenant column tenant_id",
        ),
        ("citus_integer_key", "tenant_users", "column id is integer and in the primary key, filled from a sequence"),
    ]
    .map(|(kind, table, problem)| (kind.to_owned(), format!("table {table}"), Some(problem.to_owned())));
    assert_eq!(found, expected, "{report}");
    assert!(report["findings"].as_array().expect("findings").iter().all(|f| f["repairable"] == false));

    let out = run(DOCTOR, &dir, &pg.url, &["--citus"]);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out.stderr));
    let lines = text(&out.stdout);
    assert!(
        lines.starts_with(
            "✗ citus_primary_key: Citus: table comments: primary key \"comments_pkey\" (id) does not include the \
             tenant column tenant_id; fix: make it PRIMARY KEY (tenant_id, id)"
        ),
        "{lines}"
    );
    assert!(lines.ends_with("\n10 problem(s) found for Citus; see docs/scale-out.md\n"), "{lines}");

    // Reports only: with --repair it is refused before anything runs.
    let out = run(DOCTOR, &dir, &pg.url, &["--citus", "--repair"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}
