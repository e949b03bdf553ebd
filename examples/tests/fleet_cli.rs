//! `migratetenant`, `migratealltenants` and `showtenants` run as processes against the
//! real PostgreSQL server: per-tenant lines, summary, exit codes, `--resume`, `--plan`,
//! `--json`.

use std::process::{Command, Output, Stdio};

use crate::commands::text;

use sea_orm::ConnectionTrait;
use tenancy::secrets::Password;
use tenancy::{Isolation, NewDatabase, NewTenant, Tenancy};
use tenancy_test_support::{PgMaster, TempDir, count, unique_name};

fn command(bin: &str, pg: &PgMaster, dir: &TempDir, args: &[&str]) -> Output {
    crate::commands::run(bin, dir, &pg.url, args)
}

async fn setup(pg: &PgMaster, dir: &TempDir) -> Tenancy {
    let tenancy = Tenancy::builder(pg.url.clone()).secret_key_file(dir.path().join("key")).connect().await.unwrap();
    for id in ["f1", "f2", "f3"] {
        let new = NewTenant::new(id.parse::<tenancy::TenantId>().unwrap(), id.to_owned(), Isolation::Schema)
            .expect("a valid new tenant");
        tenancy.create_tenant(new, &()).await.unwrap();
    }
    let (db, user) = (unique_name("db"), unique_name("u"));
    pg.track_database(&db);
    pg.track_role(&user);
    let database = NewDatabase::create(db).login(user, Password::new("very secret pw")).server("127.0.0.1", 5432);
    let new =
        NewTenant::new("f0db", "Database Co", Isolation::Database).expect("a valid new tenant").database(database);
    tenancy.create_tenant(new, &()).await.unwrap();
    tenancy
}

#[tokio::test]
async fn fleet_commands_end_to_end() {
    let Some(pg) = PgMaster::create().await else { return };
    let dir = TempDir::new();
    let tenancy = setup(&pg, &dir).await;
    let master = pg.connect().await;
    let all = env!("CARGO_BIN_EXE_migratealltenants");
    let show = env!("CARGO_BIN_EXE_showtenants");
    let one = env!("CARGO_BIN_EXE_migratetenant");

    // showtenants --json before anything: everyone behind, no secret anywhere.
    let out = command(show, &pg, &dir, &["--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = listed.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0]["tenant"], "f0db");
    assert_eq!(rows[0]["isolation"], "database");
    assert_eq!(rows[0]["status"], "ready");
    assert!(rows[0]["location"].as_str().unwrap().contains("127.0.0.1:5432"));
    assert_eq!(rows[1]["pending"].as_array().unwrap().len(), 3);
    assert_eq!(rows[1]["applied"], 0);
    assert!(!text(&out.stdout).contains("very secret") && !text(&out.stdout).contains("v1:"));

    // --plan touches nothing.
    let out = command(all, &pg, &dir, &["--plan"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("f1 (schema): 3 pending"), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("Plan: 4 of 4 tenant(s) have pending migrations"), "{}", text(&out.stdout));
    assert_eq!(
        count(&master, "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'seaql_migrations'", vec![])
            .await,
        0
    );

    // f2 holds a `comments` table the second migration cannot index: it fails, f3 is
    // not attempted, the exit code says so.
    master.execute_unprepared("CREATE TABLE f2.comments (id int)").await.unwrap();
    let out = command(all, &pg, &dir, &["--jobs", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("✓ master: shared migrations applied (m20260101_000003_create_plans)"), "{stdout}");
    assert!(
        stdout.contains(
            "✓ f0db: migrated (m20260101_000001_create_projects_and_tasks, m20260101_000002_create_comments, \
             m20260101_100001_tenancy_create_tenant_users)"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("✗ f2: failed: Migrating tenant 'f2' failed"), "{stdout}");
    assert!(stdout.contains("… f3: not attempted"), "{stdout}");
    assert!(stdout.contains("Summary: 2 migrated, 0 up to date, 1 failed, 0 skipped, 1 not attempted"), "{stdout}");
    assert!(stdout.contains("migratealltenants --resume"), "{stdout}");

    // showtenants --pending lists exactly the tenants behind.
    let out = command(show, &pg, &dir, &["--pending", "--json"]);
    let behind: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = behind.as_array().unwrap().iter().map(|r| r["tenant"].as_str().unwrap()).collect();
    assert_eq!(ids, ["f2", "f3"]);
    let out = command(show, &pg, &dir, &[]);
    let table = text(&out.stdout);
    assert!(table.starts_with("ID  "), "{table}");
    assert!(
        table.lines().any(|l| l.starts_with("f1 ") && l.contains("schema") && l.trim_end().ends_with('0')),
        "{table}"
    );

    // Fix and resume: only the unfinished tenants run; JSON for scripts.
    master.execute_unprepared("DROP TABLE f2.comments").await.unwrap();
    let out = command(all, &pg, &dir, &["--resume", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["summary"]["migrated"], 2);
    assert_eq!(report["succeeded"], true);
    // Listed as they finish.
    let mut ids: Vec<&str> =
        report["tenants"].as_array().unwrap().iter().map(|t| t["tenant"].as_str().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["f2", "f3"]);
    let last = tenancy.ledger().last_run().await.unwrap().unwrap();
    assert_eq!(report["run_id"], last.id);

    // Everything is up to date now.
    let out = command(all, &pg, &dir, &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("Summary: 0 migrated, 4 up to date, 0 failed, 0 skipped, 0 not attempted"),
        "{}",
        text(&out.stdout)
    );

    // migratetenant: one tenant, and the errors.
    let out = command(one, &pg, &dir, &["f1"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("✓ Up to date: no pending migrations"), "{}", text(&out.stdout));
    let out = command(one, &pg, &dir, &["nope"]);
    assert_eq!(out.status.code(), Some(6));
    assert_eq!(text(&out.stderr), "Error: Tenant 'nope' does not exist\n");
    let out = command(all, &pg, &dir, &["--tenants", "f1,nope"]);
    assert_eq!(out.status.code(), Some(6));
    let out = command(all, &pg, &dir, &["--isolation", "shared"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("Error: Invalid isolation type\nValid options"), "{}", text(&out.stderr));
}

#[tokio::test]
async fn resume_without_history_is_an_input_error() {
    let dir = TempDir::new();
    let out = Command::new(env!("CARGO_BIN_EXE_migratealltenants"))
        .current_dir(dir.path())
        .arg("--resume")
        .env("DATABASE_URL", dir.sqlite_master_url())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stderr), "Error: Nothing to resume: no fleet migration run is recorded yet\n");
}

#[tokio::test]
async fn two_migratealltenants_processes_at_once() {
    let Some(pg) = PgMaster::create().await else { return };
    let dir = TempDir::new();
    let tenancy = Tenancy::builder(pg.url.clone()).secret_key_file(dir.path().join("key")).connect().await.unwrap();
    let ids: Vec<String> = (0..10).map(|i| format!("twin{i}")).collect();
    for id in &ids {
        let new = NewTenant::new(id.parse::<tenancy::TenantId>().unwrap(), id.clone(), Isolation::Schema)
            .expect("a valid new tenant");
        tenancy.create_tenant(new, &()).await.unwrap();
    }
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_migratealltenants"))
            .current_dir(dir.path())
            .args(["--jobs", "3", "--json"])
            .env("DATABASE_URL", &pg.url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let (first, second) = (spawn(), spawn());
    let (first, second) = (first.wait_with_output().unwrap(), second.wait_with_output().unwrap());
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(second.status.success(), "{}", text(&second.stderr));
    let reports: Vec<serde_json::Value> =
        [&first, &second].iter().map(|out| serde_json::from_slice(&out.stdout).unwrap()).collect();
    for id in &ids {
        let migrated = reports
            .iter()
            .filter(|r| {
                r["tenants"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|t| t["tenant"] == id.as_str() && t["outcome"] == "migrated")
            })
            .count();
        assert_eq!(migrated, 1, "{id} was migrated by {migrated} runs");
    }
    let master = pg.connect().await;
    for id in &ids {
        assert_eq!(count(&master, &format!("SELECT COUNT(*) FROM {id}.seaql_migrations"), vec![]).await, 3);
    }
}
