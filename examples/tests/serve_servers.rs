//! One `serve` process over tenants spread across three PostgreSQL servers (the main test
//! server and two of the test's own, [`PgServer`]): schema and table tenants in the
//! master, database tenants on each server, and schema tenants in the shard databases of
//! the two others, placed by the policy or by `--server`. `showservers` counts
//! them per server. Every tenant is answered with its own rows only; then one server is
//! stopped: its tenants (a shard tenant among them) get `503` naming the server, every
//! other tenant keeps getting `200` with its own rows, and none ever sees another
//! tenant's rows. Once the server is back, its tenants are answered again.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tenancy::servers::NewServer;
use tenancy_test_support::{PgServer, unique_name};

use crate::commands::text;
use crate::lifecycle::{Setup, World, expect_ok};
use crate::move_cli::{create_args_as, seed, strings};
use crate::move_serve::{get, spawn_serve};

/// `createtenant` of a database tenant on the server `server` names, or (`None`) where
/// the placement policy puts it; checks that it is on the server at `port`.
async fn create_database_tenant(world: &World, id: &str, server: Option<&str>, port: u16) {
    let (db, user) = (World::db_name(id), World::db_user(id));
    if port == 5432 {
        let pg = world.pg.as_ref().expect("PostgreSQL");
        pg.track_database(&db);
        pg.track_role(&user);
    }
    let mut args = strings(&["--id", id, "--name", id, "--isolation", "database", "--migrate", "--no-input"]);
    args.extend(strings(&["--create-database", "--db-name", &db, "--db-user", &user]));
    if let Some(server) = server {
        args.extend(strings(&["--server", server]));
    }
    expect_ok(&world.run(env!("CARGO_BIN_EXE_createtenant"), &args, None), &format!("create {id} on {server:?}"));
    let tenant = world.tenancy.get_tenant(id).await.expect("registered");
    match tenant.placement() {
        tenancy::Placement::Database(tenancy::TenantDatabase::Postgres(db)) => assert_eq!(db.port, port, "{id}"),
        other => panic!("{id}: {other:?}"),
    }
}

/// The TCP connections process `pid` holds open to `server` (read with `ss`).
fn connections_of(pid: u32, server: &PgServer) -> usize {
    let port = format!("dport = :{}", server.port);
    let out = std::process::Command::new("ss").args(["-Htnp", "state", "established", &port]).output().expect("run ss");
    assert!(out.status.success(), "ss: {}", text(&out.stderr));
    text(&out.stdout).lines().filter(|line| line.contains(&format!("pid={pid},"))).count()
}

/// `showservers --json`: each server's name and `[database, schema, table]` tenants, in
/// its order (the master's first, then by name).
fn showservers_counts(world: &World) -> Vec<(String, [u64; 3])> {
    let out = world.run(env!("CARGO_BIN_EXE_showservers"), &strings(&["--json"]), None);
    expect_ok(&out, "showservers --json");
    let listed: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let count = |server: &Value, mode: &str| server["tenants"][mode].as_u64().expect("a count");
    listed
        .as_array()
        .expect("an array")
        .iter()
        .map(|s| {
            let name = s["name"].as_str().expect("a name").to_owned();
            (name, [count(s, "database"), count(s, "schema"), count(s, "table")])
        })
        .collect()
}

/// `/projects` of `id`: `Ok` when it is exactly the tenant's own seeded project, `Err`
/// with status and body otherwise. Another tenant's row is a panic, whatever the status.
fn projects(addr: SocketAddr, id: &str) -> Result<(), (u16, Option<String>, Value)> {
    let (status, retry_after, list) = get(addr, "/projects", id);
    if status != 200 {
        return Err((status, retry_after, list));
    }
    let rows = list.as_array().unwrap_or_else(|| panic!("{id}: not a list: {list}"));
    let owners: Vec<&str> = rows.iter().map(|p| p["tenant_id"].as_str().expect("owner")).collect();
    let names: Vec<&str> = rows.iter().map(|p| p["name"].as_str().expect("name")).collect();
    assert!(owners.iter().all(|o| *o == id), "{id} got another tenant's rows: {list}");
    assert_eq!(names, [format!("{id} project")], "{id}: {list}");
    Ok(())
}

#[tokio::test]
async fn serve_keeps_answering_the_live_servers_tenants_while_one_server_is_down() {
    let Some(east) = PgServer::start() else { return };
    let Some(mut west) = PgServer::start() else { return };
    let Some(world) = World::new(Setup::PgSchema).await else { return };
    for (name, server) in [("east", &east), ("west", &west)] {
        let new = NewServer::new(name, "127.0.0.1", server.port, "postgres").expect("a valid server");
        world.tenancy.add_server(new).await.expect("add the server");
    }
    let (schema, table, main_db) = (unique_name("s"), unique_name("t"), unique_name("m"));
    let (east_db, west_a, west_b) = (unique_name("e"), unique_name("wa"), unique_name("wb"));
    // By the policy (fewest database and schema tenants per weight; ties to the master,
    // then by name) or by name.
    crate::move_cli::create_as(&world, &schema, "schema");
    assert!(world.tenancy.get_tenant(schema.as_str()).await.expect("registered").placement().shard().is_none());
    crate::move_cli::create_as(&world, &table, "table");
    create_database_tenant(&world, &main_db, Some("master"), 5432).await;
    create_database_tenant(&world, &east_db, None, east.port).await;
    create_database_tenant(&world, &west_a, Some("west"), west.port).await;
    create_database_tenant(&world, &west_b, Some("west"), west.port).await;
    // Schema tenants on the other servers' shards: by the policy (east has the fewest
    // tenants: one, against two on the master and two on west), and by name.
    let (east_schema, west_schema) = (unique_name("es"), unique_name("ws"));
    let out = world.run(env!("CARGO_BIN_EXE_createtenant"), &create_args_as(&world, &east_schema, "schema"), None);
    expect_ok(&out, "createtenant --isolation schema by policy");
    assert!(text(&out.stdout).contains("✓ On server 'east'"), "{}", text(&out.stdout));
    let mut args = create_args_as(&world, &west_schema, "schema");
    args.extend(strings(&["--server", "west"]));
    expect_ok(&world.run(env!("CARGO_BIN_EXE_createtenant"), &args, None), "createtenant --server west");
    for (id, server, port) in [(&east_schema, "east", east.port), (&west_schema, "west", west.port)] {
        let tenant = world.tenancy.get_tenant(id.as_str()).await.expect("registered");
        let shard = tenant.placement().shard().unwrap_or_else(|| panic!("{id} is not on a shard"));
        assert_eq!((shard.server.as_str(), shard.port), (server, port), "{id}");
    }
    let counts = showservers_counts(&world);
    assert_eq!(
        counts,
        vec![("master".to_owned(), [1, 1, 1]), ("east".to_owned(), [1, 1, 0]), ("west".to_owned(), [2, 1, 0])],
        "[database, schema, table] per server"
    );
    let live = vec![schema.clone(), table.clone(), main_db.clone(), east_db.clone(), east_schema.clone()];
    let down = vec![west_a.clone(), west_b.clone(), west_schema.clone()];
    for id in live.iter().chain(&down) {
        seed(&world, id).await;
    }

    // One pool per server at a time (two connections each): a server's tenants take turns
    // (without the flag west's three would hold three connections).
    let (mut child, addr) = spawn_serve(&world, &["--connection-budget", "8", "--server-connection-budget", "2"]);
    let serve_pid = child.id();

    let checked = std::panic::AssertUnwindSafe(|| {
        // Every tenant answered with its own rows (their pools are open when west stops).
        for id in live.iter().chain(&down) {
            projects(addr, id).unwrap_or_else(|err| panic!("{id} before the outage: {err:?}"));
        }
        // Each server holds at most its budget of the tenants' connections.
        for (name, server) in [("east", &east), ("west", &west)] {
            let open = connections_of(serve_pid, server);
            assert!((1..=2).contains(&open), "serve holds {open} connections to {name}, its budget is 2");
        }

        west.stop();
        let expected = "server 'west' cannot be reached".to_owned();
        // Readers over every tenant at once, several laps each, each starting elsewhere.
        let readers: Vec<_> = (0..4)
            .map(|worker| {
                let (live, down, expected) = (live.clone(), down.clone(), expected.clone());
                std::thread::spawn(move || {
                    let tenants: Vec<&String> = live.iter().chain(&down).collect();
                    let mut answers = (0, 0);
                    for lap in 0..5 {
                        for n in 0..tenants.len() {
                            let id = tenants[(n + worker) % tenants.len()];
                            match projects(addr, id) {
                                Ok(()) => {
                                    assert!(live.contains(id), "{id} on the stopped server answered 200");
                                    answers.0 += 1;
                                }
                                Err((503, retry_after, body)) if down.contains(id) => {
                                    let body = body.as_str().unwrap_or_default().to_owned();
                                    assert!(body.contains(&expected), "{id}: 503 body {body:?}");
                                    assert!(retry_after.is_some(), "{id}: 503 without Retry-After");
                                    answers.1 += 1;
                                }
                                Err(other) => panic!("lap {lap}, {id}: {other:?}"),
                            }
                        }
                    }
                    answers
                })
            })
            .collect();
        let mut answers = (0, 0);
        for reader in readers {
            let (ok, unavailable) = reader.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            answers = (answers.0 + ok, answers.1 + unavailable);
        }
        assert_eq!(answers, (4 * 5 * live.len(), 4 * 5 * down.len()), "every answer was a 200 or a 503");

        // Back up: its tenants are answered again (a server found down is probed again
        // after a second).
        west.restart();
        for id in &down {
            let mut last = None;
            for _ in 0..40 {
                match projects(addr, id) {
                    Ok(()) => {
                        last = None;
                        break;
                    }
                    Err(err) => last = Some(err),
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            assert!(last.is_none(), "{id} after the restart: {last:?}");
        }
        for id in &live {
            projects(addr, id).unwrap_or_else(|err| panic!("{id} after the outage: {err:?}"));
        }
    });
    let result = std::panic::catch_unwind(checked);
    let _ = child.kill();
    let _ = child.wait();
    if let Err(panic) = result {
        let log = std::fs::read_to_string(world.dir.path().join("serve.log")).unwrap_or_default();
        eprintln!("serve's log:\n{log}");
        std::panic::resume_unwind(panic);
    }
    for id in live.iter().chain(&down) {
        world.tenancy.reset_tenant_pool(&id.parse().expect("an id"));
        expect_ok(&world.delete(id, &[], None), "delete");
    }
}
