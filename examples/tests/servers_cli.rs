//! The server commands through the real binaries, on three PostgreSQL servers: the
//! master's own (127.0.0.1:5432) and two of the test's own ([`PgServer`]), which ask every
//! TCP connection for a password and are administered by a role of the test's with a
//! password, given to `addserver` through `TENANCY_SERVER_PASSWORD`. `addserver` (and its
//! refusals), database tenants placed by the policy, by `--server` and by weight, a
//! draining server, `showservers`/`showtenants`, `drainserver --move` and
//! `undrainserver`. Where tenants are is read from each server's catalogs with the test's
//! own SQL, and their rows compared before and after a move.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Output;

use sea_orm::{ConnectionTrait, DatabaseConnection};
use tenancy::{Placement, TenantDatabase};
use tenancy_test_support::{PgServer, unique_name, with_database};

use crate::commands::text;
use crate::lifecycle::{Setup, World, expect_ok};
use crate::move_cli::{Place, Rows, create_args_as, registry, rows_in, seed, shell, strings, strings_of};

/// The master's server.
const MAIN_PORT: u16 = 5432;
/// The superuser's password on the test's servers.
const SUPERUSER_PASSWORD: &str = "testSuper1";
/// The password of the admin role `addserver` registers.
const ADMIN_PASSWORD: &str = "adminPass1";

/// A server of the test's own that asks for passwords, with an admin role (a superuser
/// with a password) for `addserver`.
struct Far {
    server: PgServer,
    admin: String,
}

impl Far {
    async fn start() -> Option<Far> {
        let mut server = PgServer::start()?;
        server.require_passwords(SUPERUSER_PASSWORD).await;
        let admin = unique_name("adm");
        let conn = connect(&server.admin_url()).await;
        conn.execute_unprepared(&format!("CREATE ROLE \"{admin}\" LOGIN SUPERUSER PASSWORD '{ADMIN_PASSWORD}'"))
            .await
            .expect("create the admin role");
        conn.close().await.expect("close");
        Some(Far { server, admin })
    }

    fn port(&self) -> u16 {
        self.server.port
    }
}

/// A master and `n` servers of the test's own, or `None` when a service is missing outside CI.
async fn world_and(n: usize) -> Option<(World, Vec<Far>)> {
    let mut servers = Vec::new();
    for _ in 0..n {
        servers.push(Far::start().await?);
    }
    let world = World::new(Setup::PgDatabase).await?;
    Some((world, servers))
}

async fn connect(url: &str) -> DatabaseConnection {
    sea_orm::Database::connect(url.to_owned()).await.unwrap_or_else(|err| panic!("connect to {url}: {err}"))
}

/// Runs one of the app's commands with `TENANCY_SERVER_PASSWORD` set (or unset).
fn run(world: &World, bin: &str, args: &[String], server_password: Option<&str>) -> Output {
    let mut command = world.command(bin, args);
    match server_password {
        Some(password) => command.env("TENANCY_SERVER_PASSWORD", password),
        None => command.env_remove("TENANCY_SERVER_PASSWORD"),
    };
    command.output().expect("run the command")
}

fn addserver(world: &World, name: &str, far: &Far, extra: &[&str], password: Option<&str>) -> Output {
    let port = far.port().to_string();
    let mut args = strings(&[name, "--host", "127.0.0.1", "--port", &port, "--user", &far.admin, "--no-input"]);
    args.extend(strings(extra));
    run(world, env!("CARGO_BIN_EXE_addserver"), &args, password)
}

fn add(world: &World, name: &str, far: &Far, extra: &[&str]) {
    expect_ok(&addserver(world, name, far, extra, Some(ADMIN_PASSWORD)), &format!("addserver {name}"));
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

fn output(out: &Output) -> String {
    format!("exit {:?}\n{}\n{}", out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// `createtenant` of a database tenant `id` (database `<id>_db`, role `<id>_u`), with no
/// server unless `extra` names one; tracked for clean-up on the master's server.
fn create(world: &World, id: &str, extra: &[&str]) -> Output {
    let pg = world.pg.as_ref().expect("PostgreSQL");
    let (db, user) = (World::db_name(id), World::db_user(id));
    pg.track_database(&db);
    pg.track_role(&user);
    let mut args = strings(&["--id", id, "--name", id, "--isolation", "database", "--create-database"]);
    args.extend(strings(&["--db-name", &db, "--db-user", &user, "--migrate", "--no-input"]));
    args.extend(strings(extra));
    run(world, env!("CARGO_BIN_EXE_createtenant"), &args, None)
}

/// Schema tenant `id` is registered in the shard of `server` (at `port`), its schema is
/// gone from the master database, and its seeded project is read through `tenantshell`.
async fn assert_in_shard_of(world: &World, id: &str, server: &str, port: u16) {
    let tenant = world.tenancy.get_tenant(id).await.expect("registered");
    assert_eq!(tenant.placement().shard().map(|s| (s.server.as_str(), s.port)), Some((server, port)), "{id}");
    let in_master = world.scalar("SELECT nspname::text FROM pg_namespace WHERE nspname = $1", vec![id.into()]).await;
    assert_eq!(in_master, None, "{id}'s schema is still in the master database");
    let out = shell(world, id, "SELECT name FROM projects ORDER BY id");
    expect_ok(&out, &format!("a read through tenantshell on {server}"));
    assert!(text(&out.stdout).contains(&format!("{id} project")), "{}", output(&out));
}

/// `showservers --json`, by name: the whole object.
fn showservers(world: &World) -> BTreeMap<String, serde_json::Value> {
    let out = run(world, env!("CARGO_BIN_EXE_showservers"), &strings(&["--json"]), None);
    expect_ok(&out, "showservers --json");
    let stdout = text(&out.stdout);
    assert!(!stdout.contains(ADMIN_PASSWORD) && !stdout.contains("v1:"), "a password in showservers: {stdout}");
    let listed: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let servers = listed.as_array().expect("an array");
    assert_eq!(servers[0]["name"], "master", "the master's server comes first: {stdout}");
    servers.iter().map(|s| (s["name"].as_str().expect("a name").to_owned(), s.clone())).collect()
}

/// `name -> database tenants` of `showservers --json`.
fn database_counts(world: &World) -> BTreeMap<String, u64> {
    showservers(world)
        .into_iter()
        .map(|(name, s)| (name, s["tenants"]["database"].as_u64().expect("a count")))
        .collect()
}

/// The port the registry names for a database tenant.
async fn port_of(world: &World, id: &str) -> u16 {
    let tenant = world.tenancy.get_tenant(id).await.expect("the tenant");
    match tenant.placement() {
        Placement::Database(TenantDatabase::Postgres(db)) => db.port,
        other => panic!("{id} is not a PostgreSQL database tenant: {other:?}"),
    }
}

/// The superuser URL of `database` on the server at `port`.
fn url_at(servers: &[Far], port: u16, database: &str) -> String {
    match servers.iter().find(|far| far.port() == port) {
        Some(far) => far.server.url(database),
        None => with_database(&tenancy_test_support::postgres_admin_url(), database),
    }
}

/// Which of `ids` have a database (`<id>_db`) in the catalog of the server at `port`.
async fn databases_at(servers: &[Far], port: u16, ids: &[String]) -> BTreeSet<String> {
    let conn = connect(&url_at(servers, port, "postgres")).await;
    let names: Vec<String> = ids.iter().map(|id| World::db_name(id)).collect();
    let found =
        strings_of(&conn, "SELECT datname::text FROM pg_database WHERE datname = ANY($1)", vec![names.into()]).await;
    conn.close().await.expect("close");
    ids.iter().filter(|id| found.contains(&World::db_name(id))).cloned().collect()
}

/// The tenant's rows, read where the registry says its database is.
async fn rows_now(world: &World, servers: &[Far], id: &str) -> Rows {
    let port = port_of(world, id).await;
    let (db, user) = (World::db_name(id), World::db_user(id));
    let conn = connect(&url_at(servers, port, &db)).await;
    let rows = rows_in(&conn, &Place::PgDatabase { db, user }, id).await;
    conn.close().await.expect("close");
    rows
}

/// `addserver` connects with the password of `TENANCY_SERVER_PASSWORD` before it stores
/// anything: a wrong password, an admin without the privileges and a dead port are exit 4
/// with no row; the stored password is encrypted; a name or address taken is exit 3; a
/// bad name or weight is exit 2; `showservers --json` lists them without passwords.
#[tokio::test]
async fn addserver_connects_first_and_stores_the_password_encrypted() {
    let Some((world, servers)) = world_and(1).await else { return };
    let far = &servers[0];
    let master = world.pg.as_ref().expect("PostgreSQL").connect().await;
    let rows = || async {
        strings_of(&master, "SELECT name || '|' || coalesce(admin_password, '') FROM tenancy_servers", vec![]).await
    };

    let out = addserver(&world, "db2", far, &[], Some("wrong-password"));
    assert_eq!(code(&out), Some(4), "{}", output(&out));
    assert!(text(&out.stderr).contains(&format!("127.0.0.1:{}", far.port())), "{}", output(&out));
    assert_eq!(rows().await, Vec::<String>::new(), "a refused server was stored");
    // No password at all (the server asks for one).
    let out = addserver(&world, "db2", far, &[], None);
    assert_eq!(code(&out), Some(4), "{}", output(&out));
    // A role that may log in but not create databases and roles.
    let plain = unique_name("plain");
    let superuser = connect(&far.server.admin_url()).await;
    superuser
        .execute_unprepared(&format!("CREATE ROLE \"{plain}\" LOGIN PASSWORD '{ADMIN_PASSWORD}'"))
        .await
        .expect("create a plain role");
    superuser.close().await.expect("close");
    let port = far.port().to_string();
    let args = strings(&["db2", "--host", "127.0.0.1", "--port", &port, "--user", &plain, "--no-input"]);
    let out = run(&world, env!("CARGO_BIN_EXE_addserver"), &args, Some(ADMIN_PASSWORD));
    assert_eq!(code(&out), Some(4), "{}", output(&out));
    assert!(text(&out.stderr).contains("CREATEDB"), "{}", output(&out));
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port();
    let args = strings(&["dead", "--host", "127.0.0.1", "--port", &dead.to_string(), "--user", "x", "--no-input"]);
    let out = run(&world, env!("CARGO_BIN_EXE_addserver"), &args, Some(ADMIN_PASSWORD));
    assert_eq!(code(&out), Some(4), "{}", output(&out));
    assert_eq!(rows().await, Vec::<String>::new(), "a refused server was stored");

    let out = addserver(&world, "db2", far, &["--weight", "150"], Some(ADMIN_PASSWORD));
    expect_ok(&out, "addserver");
    assert!(text(&out.stdout).contains(&format!("Server 'db2' at 127.0.0.1:{} added", far.port())), "{}", output(&out));
    let stored = rows().await;
    assert_eq!(stored.len(), 1);
    let password = stored[0].strip_prefix("db2|").expect("db2's row");
    assert!(password.starts_with("v1:") && !password.contains(ADMIN_PASSWORD), "stored as {password}");

    // Taken: the name, and the address under another name.
    let out = addserver(&world, "db2", far, &[], Some(ADMIN_PASSWORD));
    assert_eq!(code(&out), Some(3), "{}", output(&out));
    let out = addserver(&world, "other", far, &[], Some(ADMIN_PASSWORD));
    assert_eq!(code(&out), Some(3), "{}", output(&out));
    // Invalid input, refused before anything is connected to.
    for (name, extra) in [("Bad Name", &[][..]), ("master", &[][..]), ("db9", &["--weight", "0"][..])] {
        let out = addserver(&world, name, far, extra, Some(ADMIN_PASSWORD));
        assert_eq!(code(&out), Some(2), "{name} {extra:?}: {}", output(&out));
    }
    assert_eq!(rows().await.len(), 1);

    let listed = showservers(&world);
    assert_eq!(listed.keys().collect::<Vec<_>>(), ["db2", "master"]);
    let db2 = &listed["db2"];
    assert_eq!((db2["port"].as_u64(), db2["weight"].as_u64()), (Some(u64::from(far.port())), Some(150)));
    assert_eq!((db2["state"].as_str(), db2["health"].as_str()), (Some("active"), Some("up")), "{db2}");
    assert_eq!(db2["admin_user"].as_str(), Some(far.admin.as_str()));
    assert_eq!(listed["master"]["port"].as_u64(), Some(u64::from(MAIN_PORT)));
    let table = run(&world, env!("CARGO_BIN_EXE_showservers"), &[], None);
    expect_ok(&table, "showservers");
    assert!(text(&table.stdout).lines().any(|l| l.starts_with("db2 ") && l.contains("active")), "{}", output(&table));
    master.close().await.expect("close");
}

/// Six database tenants created without a server spread two by two over three servers of
/// equal weight (each server's catalog holds its two databases); `--server` names one; a
/// draining server gets none (exit 9 when named), an unknown one is exit 6; after
/// `undrainserver` the policy picks it again; `showservers` and `showtenants` count and
/// name the servers.
#[tokio::test]
async fn tenants_spread_over_three_servers_by_policy_and_by_name() {
    let Some((world, servers)) = world_and(2).await else { return };
    add(&world, "db2", &servers[0], &[]);
    add(&world, "db3", &servers[1], &[]);
    let ports = BTreeMap::from([("master", MAIN_PORT), ("db2", servers[0].port()), ("db3", servers[1].port())]);
    let name_of = |port: u16| *ports.iter().find(|(_, p)| **p == port).expect("a known port").0;
    let mut ids = Vec::new();
    let mut placed: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for n in 0..6 {
        let id = unique_name(&format!("p{n}"));
        let out = create(&world, &id, &[]);
        expect_ok(&out, "createtenant by policy");
        let server = name_of(port_of(&world, &id).await);
        assert!(text(&out.stdout).contains(&format!("✓ On server '{server}'")), "{}", output(&out));
        placed.entry(server).or_default().push(id.clone());
        ids.push(id);
    }
    for (server, port) in &ports {
        let expected: BTreeSet<String> = placed.get(server).cloned().unwrap_or_default().into_iter().collect();
        assert_eq!(expected.len(), 2, "{server} got {expected:?}");
        assert_eq!(databases_at(&servers, *port, &ids).await, expected, "the catalog of {server}");
    }
    let counts = database_counts(&world);
    assert_eq!(counts, BTreeMap::from([("db2".to_owned(), 2), ("db3".to_owned(), 2), ("master".to_owned(), 2)]));
    // showtenants names each tenant's server.
    let out = run(&world, env!("CARGO_BIN_EXE_showtenants"), &strings(&["--json"]), None);
    expect_ok(&out, "showtenants --json");
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    for row in listed.as_array().expect("an array") {
        let id = row["tenant"].as_str().expect("an id");
        let server = placed.iter().find(|(_, ids)| ids.iter().any(|i| i == id)).expect("placed").0;
        assert_eq!(row["server"].as_str(), Some(*server), "{row}");
    }
    let out = run(&world, env!("CARGO_BIN_EXE_showtenants"), &[], None);
    assert!(text(&out.stdout).lines().next().is_some_and(|header| header.contains("SERVER")), "{}", output(&out));

    // By name.
    let named = unique_name("n");
    let out = create(&world, &named, &["--server", "db3"]);
    expect_ok(&out, "createtenant --server db3");
    assert_eq!(port_of(&world, &named).await, servers[1].port());
    assert!(databases_at(&servers, servers[1].port(), std::slice::from_ref(&named)).await.contains(&named));
    ids.push(named);

    // db2 drains: the next two go elsewhere (master and db3 tie at 3... the master first,
    // then the master has 3 and db3 3: the master again); named, it refuses.
    let out = run(&world, env!("CARGO_BIN_EXE_drainserver"), &strings(&["db2"]), None);
    expect_ok(&out, "drainserver db2");
    assert_eq!(showservers(&world)["db2"]["state"], "draining");
    for n in 0..2 {
        let id = unique_name(&format!("d{n}"));
        expect_ok(&create(&world, &id, &[]), "createtenant while db2 drains");
        assert_eq!(port_of(&world, &id).await, MAIN_PORT, "{id}");
        ids.push(id);
    }
    let refused = unique_name("r");
    let out = create(&world, &refused, &["--server", "db2"]);
    assert_eq!(code(&out), Some(9), "{}", output(&out));
    assert!(text(&out.stderr).contains("draining"), "{}", output(&out));
    assert_eq!(registry(&world, &refused).await, None, "a refused tenant left a row");
    assert!(databases_at(&servers, servers[0].port(), std::slice::from_ref(&refused)).await.is_empty());
    let out = create(&world, &refused, &["--server", "nope"]);
    assert_eq!(code(&out), Some(6), "{}", output(&out));
    let out = create(&world, &refused, &["--server", "db3", "--db-host", "127.0.0.1"]);
    assert_eq!(code(&out), Some(2), "{}", output(&out));
    assert_eq!(registry(&world, &refused).await, None);
    let counts = database_counts(&world);
    assert_eq!(counts, BTreeMap::from([("db2".to_owned(), 2), ("db3".to_owned(), 3), ("master".to_owned(), 4)]));

    // Active again: the least loaded, it gets the next one.
    let out = run(&world, env!("CARGO_BIN_EXE_undrainserver"), &strings(&["db2", "--json"]), None);
    expect_ok(&out, "undrainserver db2");
    let undrained: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!((undrained["state"].as_str(), undrained["previous_state"].as_str()), (Some("active"), Some("draining")));
    let id = unique_name("u");
    expect_ok(&create(&world, &id, &[]), "createtenant after undrainserver");
    assert_eq!(port_of(&world, &id).await, servers[0].port());
    ids.push(id);
    let out = run(&world, env!("CARGO_BIN_EXE_drainserver"), &strings(&["nope"]), None);
    assert_eq!(code(&out), Some(6), "{}", output(&out));

    for id in &ids {
        expect_ok(&world.delete(id, &[], None), "deletetenant");
    }
    for port in ports.values() {
        assert!(databases_at(&servers, *port, &ids).await.is_empty(), "a database left on {port}");
    }
}

/// With the master's server draining (`drainserver master`) and weights 100 and 200, six
/// tenants go two to one and four to the other.
#[tokio::test]
async fn weights_share_new_tenants() {
    let Some((world, servers)) = world_and(2).await else { return };
    add(&world, "light", &servers[0], &["--weight", "100"]);
    add(&world, "heavy", &servers[1], &["--weight", "200"]);
    let out = run(&world, env!("CARGO_BIN_EXE_drainserver"), &strings(&["master"]), None);
    expect_ok(&out, "drainserver master");
    let mut ids = Vec::new();
    for n in 0..6 {
        let id = unique_name(&format!("w{n}"));
        expect_ok(&create(&world, &id, &[]), "createtenant by policy");
        ids.push(id);
    }
    let light = databases_at(&servers, servers[0].port(), &ids).await;
    let heavy = databases_at(&servers, servers[1].port(), &ids).await;
    assert_eq!((light.len(), heavy.len()), (2, 4), "light {light:?}, heavy {heavy:?}");
    assert!(databases_at(&servers, MAIN_PORT, &ids).await.is_empty(), "the draining master got a tenant");
    let counts = database_counts(&world);
    assert_eq!(counts, BTreeMap::from([("heavy".to_owned(), 4), ("light".to_owned(), 2), ("master".to_owned(), 0)]));
    expect_ok(&run(&world, env!("CARGO_BIN_EXE_undrainserver"), &strings(&["master"]), None), "undrainserver master");
    assert_eq!(showservers(&world)["master"]["state"], "active");
    for id in &ids {
        expect_ok(&world.delete(id, &[], None), "deletetenant");
    }
}

/// `drainserver db2 --move --drop-source` moves each of db2's database tenants to the
/// servers placement picks, rows intact (compared before and after), and leaves nothing
/// of them on db2; without `--yes` and without a terminal it changes nothing. Schema
/// tenants on the master are listed as not movable when the master drains.
#[tokio::test]
async fn drainserver_move_empties_a_server_with_the_rows_intact() {
    let Some((world, servers)) = world_and(2).await else { return };
    add(&world, "db2", &servers[0], &[]);
    add(&world, "db3", &servers[1], &[]);
    let db2 = servers[0].port();
    let mut ids = Vec::new();
    let mut before = BTreeMap::new();
    for n in 0..3 {
        let id = unique_name(&format!("m{n}"));
        expect_ok(&create(&world, &id, &["--server", "db2"]), "createtenant --server db2");
        seed(&world, &id).await;
        world.tenancy.reset_tenant_pool(&id.parse().expect("an id"));
        before.insert(id.clone(), rows_now(&world, &servers, &id).await);
        ids.push(id);
    }
    assert_eq!(databases_at(&servers, db2, &ids).await.len(), 3);

    // No terminal, no --yes: refused, nothing changed.
    let out = run(&world, env!("CARGO_BIN_EXE_drainserver"), &strings(&["db2", "--move"]), None);
    assert_eq!(code(&out), Some(2), "{}", output(&out));
    assert_eq!(showservers(&world)["db2"]["state"], "active");

    let args = strings(&["db2", "--move", "--yes", "--drop-source", "--json"]);
    let out = run(&world, env!("CARGO_BIN_EXE_drainserver"), &args, None);
    expect_ok(&out, "drainserver --move");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let moved = report["moved"].as_array().expect("moved");
    assert_eq!(moved.len(), 3, "{report}");
    assert!(moved.iter().all(|m| m["to_server"] != "db2" && m["source_dropped"] == true), "{report}");
    for id in &ids {
        assert_eq!(registry(&world, id).await, Some(("database".to_owned(), "ready".to_owned())));
        assert_ne!(port_of(&world, id).await, db2, "{id} is still on db2");
        assert_eq!(&rows_now(&world, &servers, id).await, &before[id], "{id}'s rows");
        let out = shell(&world, id, "SELECT name FROM projects ORDER BY id");
        expect_ok(&out, "a read through tenantshell");
        assert!(text(&out.stdout).contains(&format!("{id} project")), "{}", output(&out));
    }
    // Nothing of them is left on db2, and it gets no new tenant.
    assert!(databases_at(&servers, db2, &ids).await.is_empty(), "a database left on db2");
    let left = connect(&servers[0].server.admin_url()).await;
    let roles: Vec<String> = ids.iter().map(|id| World::db_user(id)).collect();
    let found =
        strings_of(&left, "SELECT rolname::text FROM pg_roles WHERE rolname = ANY($1)", vec![roles.into()]).await;
    assert!(found.is_empty(), "roles left on db2: {found:?}");
    left.close().await.expect("close");
    let listed = showservers(&world);
    assert_eq!(
        (listed["db2"]["state"].as_str(), listed["db2"]["tenants"]["total"].as_u64()),
        (Some("draining"), Some(0))
    );

    // Draining the master's server: its schema tenant (placed there by name: the policy
    // would put it on db3, which has fewer tenants) moves to db3's shard database, the
    // only active server left; its table tenant stays in the shared tables.
    let schema = unique_name("s");
    let mut args = create_args_as(&world, &schema, "schema");
    args.extend(strings(&["--server", "master"]));
    let out = run(&world, env!("CARGO_BIN_EXE_createtenant"), &args, None);
    expect_ok(&out, "createtenant --isolation schema --server master");
    assert!(text(&out.stdout).contains("✓ On server 'master'"), "{}", output(&out));
    seed(&world, &schema).await;
    world.tenancy.reset_tenant_pool(&schema.parse().expect("an id"));
    let table = unique_name("t");
    expect_ok(
        &run(&world, env!("CARGO_BIN_EXE_createtenant"), &create_args_as(&world, &table, "table"), None),
        "table",
    );
    let out = run(&world, env!("CARGO_BIN_EXE_drainserver"), &strings(&["master", "--json"]), None);
    expect_ok(&out, "drainserver master");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    // Movable: the schema tenant, and the database tenants the policy put on the master.
    let movable = report["movable"].as_array().expect("movable").clone();
    assert!(movable.iter().any(|t| t["tenant"] == schema.as_str() && t["isolation"] == "schema"), "{report}");
    assert_eq!(report["not_movable"][0]["tenant"], table.as_str(), "{report}");
    let args = strings(&["master", "--move", "--yes", "--drop-source", "--json"]);
    let out = run(&world, env!("CARGO_BIN_EXE_drainserver"), &args, None);
    expect_ok(&out, "drainserver master --move");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let moved = report["moved"].as_array().expect("moved");
    assert_eq!(moved.len(), movable.len(), "{report}");
    assert!(moved.iter().all(|m| m["to_server"] == "db3"), "db2 drains too: {report}");
    assert!(moved.iter().any(|m| m["tenant"] == schema.as_str()), "{report}");
    assert_eq!(report["not_movable"][0]["tenant"], table.as_str(), "{report}");
    for id in &ids {
        assert_eq!(&rows_now(&world, &servers, id).await, &before[id], "{id}'s rows after the master drained");
    }
    assert_eq!(registry(&world, &schema).await, Some(("schema".to_owned(), "ready".to_owned())));
    // Its schema left the master database; its rows are read through tenantshell on db3.
    assert_in_shard_of(&world, &schema, "db3", servers[1].port()).await;
    assert_eq!(showservers(&world)["db3"]["tenants"]["schema"].as_u64(), Some(1));
    // movetenant --server: refused while db2 drains (nothing changes), then back onto it.
    let back = &ids[0];
    let mut args = strings(&[back, "--to", "database", "--db-name", &World::db_name(back)]);
    args.extend(strings(&["--db-user", &World::db_user(back), "--server", "db2", "--yes"]));
    let port_before = port_of(&world, back).await;
    let out = run(&world, env!("CARGO_BIN_EXE_movetenant"), &args, None);
    assert_eq!(code(&out), Some(9), "{}", output(&out));
    assert_eq!(port_of(&world, back).await, port_before);
    for server in ["master", "db2"] {
        expect_ok(&run(&world, env!("CARGO_BIN_EXE_undrainserver"), &strings(&[server]), None), "undrainserver");
    }
    world.tenancy.reset_tenant_pool(&back.parse().expect("an id"));
    let out = run(&world, env!("CARGO_BIN_EXE_movetenant"), &args, None);
    expect_ok(&out, "movetenant --server db2");
    assert_eq!(port_of(&world, back).await, db2);
    assert_eq!(&rows_now(&world, &servers, back).await, &before[back], "{back}'s rows back on db2");
    assert_eq!(databases_at(&servers, db2, std::slice::from_ref(back)).await.len(), 1);
    assert!(showservers(&world).values().all(|s| s["state"] == "active"));

    for id in ids.iter().chain([&schema, &table]) {
        world.tenancy.reset_tenant_pool(&id.parse().expect("an id"));
        expect_ok(&world.delete(id, &[], None), "deletetenant");
    }
}

/// On a terminal, with a server besides the master's registered, `createtenant` asks
/// which server instead of a host and port, with the policy's pick selected (here the
/// second in the list: the master has a tenant already); Enter takes it.
#[tokio::test]
async fn createtenant_on_a_terminal_offers_the_servers_with_the_policys_pick_selected() {
    use crate::pty::{answer, exit_code, plain};
    let Some((world, servers)) = world_and(1).await else { return };
    add(&world, "db2", &servers[0], &[]);
    let first = unique_name("f");
    expect_ok(&create(&world, &first, &[]), "createtenant by policy");
    assert_eq!(port_of(&world, &first).await, MAIN_PORT, "a tie goes to the master");

    let id = unique_name("t");
    let pg = world.pg.as_ref().expect("PostgreSQL");
    let (db, user) = (World::db_name(&id), World::db_user(&id));
    pg.track_database(&db);
    pg.track_role(&user);
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_createtenant"));
    command
        .current_dir(world.dir.path())
        .env("DATABASE_URL", &world.url)
        .env("TENANCY_SECRET_KEY_FILE", world.dir.path().join("key"))
        .env("TENANT_DB_PASSWORD", crate::lifecycle::PASSWORD)
        .env("TERM", "xterm-256color")
        .env("NO_COLOR", "1")
        .env_remove("TENANCY_SECRET_KEY");
    let mut session = rexpect::session::spawn_command(command, Some(30_000)).expect("spawn createtenant in a pty");
    let mut transcript = String::new();
    answer(&mut session, "Enter tenant ID (unique):", &id, &mut transcript);
    answer(&mut session, "Enter tenant name:", "Terminal", &mut transcript);
    answer(&mut session, "Select isolation type (database/schema/table/cache):", "database", &mut transcript);
    answer(&mut session, "Do you want to create the database now? (y/n):", "y", &mut transcript);
    answer(&mut session, "Enter database name for tenant:", &db, &mut transcript);
    answer(&mut session, "Enter database user:", &user, &mut transcript);
    answer(&mut session, "Select database server:", "", &mut transcript);
    answer(&mut session, "Do you want to run migrations for this tenant now? (y/n):", "n", &mut transcript);
    transcript.push_str(&session.exp_eof().expect("createtenant finishes"));
    let screen = plain(&transcript);
    assert_eq!(exit_code(&session), 0, "{screen}");
    assert!(screen.contains("Select database server: db2"), "{screen}");
    assert!(!screen.contains("Enter database host"), "{screen}");
    assert!(screen.contains("✓ On server 'db2'"), "{screen}");
    assert_eq!(port_of(&world, &id).await, servers[0].port());
    assert_eq!(databases_at(&servers, servers[0].port(), std::slice::from_ref(&id)).await.len(), 1);
    for id in [&first, &id] {
        expect_ok(&world.delete(id, &[], None), "deletetenant");
    }
}

/// `movetenant` across servers: a schema tenant moves from the master database to db2's
/// shard database by `--server` (its rows read back through `tenantshell`, its old schema
/// gone); `--to table --server` is refused with nothing changed; a database tenant moved
/// without `--server` or `--db-host` goes where the policy picks, as `createtenant` does.
#[tokio::test]
async fn movetenant_moves_schema_tenants_between_servers_and_places_by_policy() {
    let Some((world, servers)) = world_and(1).await else { return };
    add(&world, "db2", &servers[0], &[]);
    let move_args = |id: &str, extra: &[&str]| {
        let mut args = strings(&[id]);
        args.extend(strings(extra));
        args
    };
    let schema = unique_name("s");
    let mut args = create_args_as(&world, &schema, "schema");
    args.extend(strings(&["--server", "master"]));
    expect_ok(&run(&world, env!("CARGO_BIN_EXE_createtenant"), &args, None), "createtenant schema on master");
    seed(&world, &schema).await;
    world.tenancy.reset_tenant_pool(&schema.parse().expect("an id"));

    let out = run(
        &world,
        env!("CARGO_BIN_EXE_movetenant"),
        &move_args(&schema, &["--to", "table", "--server", "db2", "--yes"]),
        None,
    );
    assert_eq!(code(&out), Some(2), "{}", output(&out));
    assert!(text(&out.stderr).contains("--server 'db2' does not apply to table isolation"), "{}", output(&out));
    assert_eq!(registry(&world, &schema).await, Some(("schema".to_owned(), "ready".to_owned())));

    let args = move_args(&schema, &["--to", "schema", "--server", "db2", "--yes", "--drop-source", "--json"]);
    let out = run(&world, env!("CARGO_BIN_EXE_movetenant"), &args, None);
    expect_ok(&out, "movetenant --to schema --server db2");
    let moved: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(moved["source_dropped"], true, "{moved}");
    assert_in_shard_of(&world, &schema, "db2", servers[0].port()).await;
    // Without --server a schema tenant stays where it is: nothing to move.
    let out = run(&world, env!("CARGO_BIN_EXE_movetenant"), &move_args(&schema, &["--to", "schema", "--yes"]), None);
    expect_ok(&out, "movetenant --to schema again");
    let still = world.tenancy.get_tenant(schema.as_str()).await.expect("registered");
    assert_eq!(still.placement().shard().map(|s| s.server.as_str()), Some("db2"));
    assert_eq!(showservers(&world)["db2"]["tenants"]["schema"].as_u64(), Some(1));

    // Two database tenants on the master: a move without a server goes to db2 (one
    // tenant against two).
    let (first, second) = (unique_name("d"), unique_name("e"));
    for id in [&first, &second] {
        expect_ok(&create(&world, id, &["--server", "master"]), "createtenant --server master");
        assert_eq!(port_of(&world, id).await, MAIN_PORT);
    }
    seed(&world, &first).await;
    world.tenancy.reset_tenant_pool(&first.parse().expect("an id"));
    let new_db = format!("{}_moved", World::db_name(&first));
    let args = move_args(
        &first,
        &["--to", "database", "--db-name", &new_db, "--db-user", &World::db_user(&first), "--yes", "--drop-source"],
    );
    expect_ok(&run(&world, env!("CARGO_BIN_EXE_movetenant"), &args, None), "movetenant --to database by policy");
    assert_eq!(port_of(&world, &first).await, servers[0].port(), "the policy's pick: db2");
    let out = shell(&world, &first, "SELECT name FROM projects ORDER BY id");
    expect_ok(&out, "a read through tenantshell on db2");
    assert!(text(&out.stdout).contains(&format!("{first} project")), "{}", output(&out));

    for id in [&schema, &first, &second] {
        world.tenancy.reset_tenant_pool(&id.parse().expect("an id"));
        expect_ok(&world.delete(id, &[], None), "deletetenant");
    }
}

/// Whether the schema `schema` and the role `role` exist in `database` on the server at
/// `port` (the master's server, or one of the test's), as its superuser sees it.
async fn schema_and_role_at(servers: &[Far], port: u16, database: &str, schema: &str, role: &str) -> (bool, bool) {
    let conn = connect(&url_at(servers, port, database)).await;
    let found = |sql: &'static str, value: &str| {
        let value = value.to_owned();
        let conn = &conn;
        async move { !strings_of(conn, sql, vec![value.into()]).await.is_empty() }
    };
    let schema = found("SELECT nspname::text FROM pg_namespace WHERE nspname = $1", schema).await;
    let role = found("SELECT rolname::text FROM pg_roles WHERE rolname = $1", role).await;
    conn.close().await.expect("close");
    (schema, role)
}

/// `movetenant --to schema --server … --drop-source` killed (as `SIGKILL` would) after each
/// step in turn, the tenant going back and forth between the master database and db2's
/// shard: before the switch the registry still points at the source (status `moving`),
/// after it at the target; each time the same command run again finishes the move, with
/// the rows intact, and nothing of the tenant is left on the server it left.
#[tokio::test]
async fn movetenant_between_servers_killed_after_every_step_is_finished_by_a_rerun() {
    let Some((world, servers)) = world_and(1).await else { return };
    add(&world, "db2", &servers[0], &[]);
    let master_db = world.scalar("SELECT current_database()::text", vec![]).await.expect("the master database");
    let shard_db = tenancy::ShardDatabase::name_for(&master_db);
    let id = unique_name("k");
    let mut args = create_args_as(&world, &id, "schema");
    args.extend(strings(&["--server", "master"]));
    expect_ok(&run(&world, env!("CARGO_BIN_EXE_createtenant"), &args, None), "createtenant on master");
    seed(&world, &id).await;
    world.tenancy.reset_tenant_pool(&id.parse().expect("an id"));
    let login = world
        .tenancy
        .get_tenant(id.as_str())
        .await
        .expect("registered")
        .placement()
        .login()
        .expect("a role")
        .user
        .clone();
    let places = [("master", MAIN_PORT, master_db.as_str()), ("db2", servers[0].port(), shard_db.as_str())];

    for (n, step) in ["freeze", "provision", "copy", "verify", "switch"].into_iter().enumerate() {
        let (from, to) = if n % 2 == 0 { (places[0], places[1]) } else { (places[1], places[0]) };
        let args = strings(&[&id, "--to", "schema", "--server", to.0, "--yes", "--drop-source"]);
        let out = world.run(env!("CARGO_BIN_EXE_movetenant"), &args, Some(step));
        assert!(crate::lifecycle::killed(&out), "not stopped after {step}: {}", output(&out));
        let status = if step == "switch" { "ready" } else { "moving" };
        assert_eq!(registry(&world, &id).await, Some(("schema".to_owned(), status.to_owned())), "after {step}");
        let at = world.tenancy.get_tenant(id.as_str()).await.expect("registered");
        let server = at.placement().shard().map_or("master", |shard| shard.server.as_str()).to_owned();
        let expected = if step == "switch" { to.0 } else { from.0 };
        assert_eq!(server, expected, "the registry after {step}");

        expect_ok(&world.run(env!("CARGO_BIN_EXE_movetenant"), &args, None), &format!("the re-run after {step}"));
        assert_eq!(registry(&world, &id).await, Some(("schema".to_owned(), "ready".to_owned())), "after {step}");
        let at = world.tenancy.get_tenant(id.as_str()).await.expect("registered");
        assert_eq!(at.placement().shard().map_or("master", |shard| shard.server.as_str()), to.0, "after {step}");
        assert_eq!(schema_and_role_at(&servers, to.1, to.2, &id, &login).await, (true, true), "{step}: target");
        assert_eq!(schema_and_role_at(&servers, from.1, from.2, &id, &login).await, (false, false), "{step}: source");
        let out = shell(&world, &id, "SELECT name FROM projects ORDER BY id");
        expect_ok(&out, "a read through tenantshell");
        assert!(text(&out.stdout).contains(&format!("{id} project")), "after {step}: {}", output(&out));
        assert!(world.tenancy.leftovers(Some(&id.parse().expect("an id"))).await.expect("leftovers").is_empty());
    }
    world.tenancy.reset_tenant_pool(&id.parse().expect("an id"));
    expect_ok(&world.delete(&id, &[], None), "deletetenant");
}
