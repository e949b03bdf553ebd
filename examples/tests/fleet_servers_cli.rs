//! `migratealltenants` as a process over three PostgreSQL servers (the main test server
//! and two of the test's own, [`PgServer`]), tenants made with `createtenant --db-host
//! 127.0.0.1 --db-port <port>`: a failing canary on one server, then a server stopped
//! while the run waits on one of its tenants (the exit code, lines and summary per server)
//! and `--resume` once it is back; an unknown `--server` and `--canary-tenants` refused
//! before any run.

use std::process::{Output, Stdio};
use std::time::Duration;

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use tenancy_test_support::{PgServer, count, unique_name};

use crate::commands::text;
use crate::lifecycle::{Setup, World, expect_ok};

/// The main test server's port (the master's).
const MAIN_PORT: u16 = 5432;

/// tenancy-migrate's advisory-lock namespace of tenant migrations (`'tena'`).
const LOCK_NAMESPACE: i32 = 0x7465_6e61;

/// A server's label in a fleet run: the master's own server by name, the others (not
/// registered with `addserver`) by address.
fn label(port: u16) -> String {
    if port == MAIN_PORT { "master".to_owned() } else { format!("127.0.0.1:{port}") }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// Creates database tenant `id` on the server at `port` with `createtenant`, unmigrated;
/// returns its database's name.
fn create_on(world: &World, id: &str, port: u16) -> String {
    let (db, user) = (unique_name("db"), unique_name("u"));
    if port == MAIN_PORT {
        let pg = world.pg.as_ref().expect("PostgreSQL");
        pg.track_database(&db);
        pg.track_role(&user);
    }
    let port_text = port.to_string();
    let args = strings(&[
        "--id",
        id,
        "--name",
        id,
        "--isolation",
        "database",
        "--no-migrate",
        "--no-input",
        "--create-database",
        "--db-name",
        &db,
        "--db-user",
        &user,
        "--db-host",
        "127.0.0.1",
        "--db-port",
        &port_text,
    ]);
    expect_ok(&world.run(env!("CARGO_BIN_EXE_createtenant"), &args, None), "createtenant");
    db
}

async fn connect(port: u16, db: &str) -> DatabaseConnection {
    Database::connect(format!("postgres://postgres@127.0.0.1:{port}/{db}")).await.expect("connect")
}

/// How many migrations a tenant database has recorded (`None`: no migration table).
async fn applied(port: u16, db: &str) -> Option<i64> {
    let conn = connect(port, db).await;
    let exists = count(&conn, "SELECT COUNT(*) FROM pg_tables WHERE tablename = 'seaql_migrations'", vec![]).await;
    let applied =
        if exists == 1 { Some(count(&conn, "SELECT COUNT(*) FROM seaql_migrations", vec![]).await) } else { None };
    conn.close().await.expect("close");
    applied
}

/// Sessions waiting for an advisory lock on the server at `port`.
async fn lock_waiters(port: u16) -> i64 {
    let conn = connect(port, "postgres").await;
    let n = count(&conn, "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted", vec![]).await;
    conn.close().await.expect("close");
    n
}

fn migrate_all(world: &World, args: &[&str]) -> Output {
    world.run(env!("CARGO_BIN_EXE_migratealltenants"), &strings(args), None)
}

/// Refusals and a failing canary first. Then server B is stopped while
/// `migratealltenants` waits for the migration lock of its first tenant (the test holds it): exit 1, B's tenants failed / not attempted with the server
/// named, the main server's and C's migrated, per-server summary lines, the ledger's
/// servers; after B is started again, `--resume --json` migrates exactly B's tenants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migratealltenants_survives_a_server_going_down_and_resume_finishes_it() {
    let Some(mut b_server) = PgServer::start() else { return };
    let Some(c_server) = PgServer::start() else { return };
    let Some(world) = World::new(Setup::PgDatabase).await else { return };
    let (b, c) = (b_server.port, c_server.port);
    let mut places = Vec::new();
    for (id, port) in [("m1", MAIN_PORT), ("m2", MAIN_PORT), ("b1", b), ("b2", b), ("c1", c), ("c2", c)] {
        places.push((id, port, create_on(&world, id, port)));
    }
    let db_of = |id: &str| places.iter().find(|(i, _, _)| *i == id).map(|(_, _, db)| db.clone()).expect("a tenant");

    // showtenants --json names each tenant's server.
    let out = world.run(env!("CARGO_BIN_EXE_showtenants"), &strings(&["--json"]), None);
    expect_ok(&out, "showtenants --json");
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let servers: Vec<(String, String)> = listed
        .as_array()
        .expect("an array")
        .iter()
        .map(|t| (t["tenant"].as_str().unwrap().to_owned(), t["server"].as_str().unwrap().to_owned()))
        .collect();
    let mut expected: Vec<(String, String)> =
        places.iter().map(|(id, port, _)| ((*id).to_owned(), label(*port))).collect();
    expected.sort();
    assert_eq!(servers, expected);

    // Unknown server and canary tenant: one line each, exit 2, no run recorded.
    let out = migrate_all(&world, &["--server", "10.9.9.9:5432"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let mut known = [label(MAIN_PORT), label(b), label(c)];
    known.sort();
    assert_eq!(
        text(&out.stderr),
        format!("Error: Unknown server '10.9.9.9:5432'; known servers: {}\n", known.join(", "))
    );
    let out = migrate_all(&world, &["--canary-tenants", "m1,nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        "Error: Canary tenant(s) not among the tenants this run selects: nope; --canary-tenants takes ids of \
         selected, existing tenants\n"
    );
    assert_eq!(world.tenancy.ledger().last_run().await.expect("the ledger"), None);

    // A canary stage on C whose canary (c1) fails: c2 is never started, exit 1.
    let c1 = connect(c, &db_of("c1")).await;
    c1.execute_unprepared("CREATE TABLE comments (id int)").await.expect("plant the failure");
    let out = migrate_all(&world, &["--canary", "1", "--server", &format!("127.0.0.1:{c}")]);
    assert_eq!(out.status.code(), Some(1), "{}{}", text(&out.stdout), text(&out.stderr));
    let stdout = text(&out.stdout);
    for line in [
        "✗ canary failed (c1): no other tenant starts".to_owned(),
        format!("… c2: not attempted: not started: the canary stage failed (c1) [127.0.0.1:{c}]"),
        "The canary stage failed; no other tenant was started. Fix the failures, then continue with: \
         migratealltenants --resume"
            .to_owned(),
    ] {
        assert!(stdout.lines().any(|l| l == line), "no line {line:?} in:\n{stdout}");
    }
    assert!(stdout.contains("✗ c1: failed: Migrating tenant 'c1' failed"), "{stdout}");
    assert_eq!(applied(c, &db_of("c2")).await, None, "c2 was touched");
    for id in ["m1", "b1"] {
        let port = if id == "m1" { MAIN_PORT } else { b };
        assert_eq!(applied(port, &db_of(id)).await, None, "{id} is not on the server of the run");
    }
    c1.execute_unprepared("DROP TABLE comments").await.expect("fix it");
    c1.close().await.expect("close");

    // Hold b1's migration lock, run, and stop B once the others are done.
    let lock = connect(b, &db_of("b1")).await;
    lock.execute_raw(Statement::from_sql_and_values(
        lock.get_database_backend(),
        "SELECT pg_advisory_lock($1, hashtext($2))",
        [LOCK_NAMESPACE.into(), "b1".into()],
    ))
    .await
    .expect("take b1's migration lock");
    let child = world
        .command(env!("CARGO_BIN_EXE_migratealltenants"), &strings(&["--jobs", "3"]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn migratealltenants");
    let mut ready = false;
    // A hang guard (two minutes), not a measurement.
    for _ in 0..1200 {
        let mut done = lock_waiters(b).await == 1;
        for id in ["m1", "m2", "c1", "c2"] {
            let port = if id.starts_with('m') { MAIN_PORT } else { c };
            done = done && applied(port, &db_of(id)).await == Some(3);
        }
        if done {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the run never got to wait for b1 with the other servers done");
    tokio::task::block_in_place(|| b_server.stop());
    drop(lock);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.expect("join").expect("wait");

    assert_eq!(out.status.code(), Some(1), "{}{}", text(&out.stdout), text(&out.stderr));
    let stdout = text(&out.stdout);
    let b_down = format!("server 127.0.0.1:{b} unreachable");
    for line in [
        format!("✗ {b_down}: its remaining tenants are not attempted"),
        format!("… b2: not attempted: {b_down} [127.0.0.1:{b}]"),
        format!("  127.0.0.1:{b}: 0 migrated, 0 up to date, 1 failed, 0 skipped, 1 not attempted (unreachable)"),
        format!("  127.0.0.1:{c}: 2 migrated, 0 up to date, 0 failed, 0 skipped, 0 not attempted"),
        "  master: 2 migrated, 0 up to date, 0 failed, 0 skipped, 0 not attempted".to_owned(),
        format!("Server(s) unreachable: 127.0.0.1:{b}; once back, finish with: migratealltenants --resume"),
    ] {
        assert!(stdout.lines().any(|l| l == line), "no line {line:?} in:\n{stdout}");
    }
    assert!(stdout.contains(&format!("✗ b1: failed: {b_down}: ")), "{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with("✓ c2: migrated (") && l.ends_with(&format!(" [127.0.0.1:{c}]"))),
        "{stdout}"
    );
    assert!(stdout.contains("Summary: 4 migrated, 0 up to date, 1 failed, 0 skipped, 1 not attempted"), "{stdout}");
    let last = world.tenancy.ledger().last_run().await.expect("the ledger").expect("a run");
    let ledger: Vec<(String, String, Option<String>)> = world
        .tenancy
        .ledger()
        .entries(last.id)
        .await
        .expect("the ledger")
        .into_iter()
        .map(|e| (e.tenant_id, e.outcome.to_string(), e.server))
        .collect();
    let on = |port: u16| Some(label(port));
    assert_eq!(
        ledger,
        [
            ("b1".to_owned(), "failed".to_owned(), on(b)),
            ("b2".to_owned(), "not_attempted".to_owned(), on(b)),
            ("c1".to_owned(), "migrated".to_owned(), on(c)),
            ("c2".to_owned(), "migrated".to_owned(), on(c)),
            ("m1".to_owned(), "migrated".to_owned(), on(MAIN_PORT)),
            ("m2".to_owned(), "migrated".to_owned(), on(MAIN_PORT)),
        ]
    );

    // B is back: --resume takes exactly its tenants.
    tokio::task::block_in_place(|| b_server.start_again());
    let out = migrate_all(&world, &["--resume", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    // Listed as they finish.
    let mut tenants: Vec<(&str, &str, &str)> = report["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .map(|t| (t["tenant"].as_str().unwrap(), t["outcome"].as_str().unwrap(), t["server"].as_str().unwrap()))
        .collect();
    tenants.sort_unstable();
    let b_label = format!("127.0.0.1:{b}");
    assert_eq!(tenants, [("b1", "migrated", b_label.as_str()), ("b2", "migrated", b_label.as_str())]);
    assert_eq!(report["servers"][&b_label]["summary"]["migrated"], 2);
    assert_eq!(report["servers"][&b_label]["unreachable"], false);
    assert_eq!(report["servers"].as_object().expect("servers").len(), 1);
    for id in ["b1", "b2"] {
        assert_eq!(applied(b, &db_of(id)).await, Some(3), "{id}");
    }
    drop(c_server);
}
