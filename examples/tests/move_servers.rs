//! A database tenant moved to another PostgreSQL server and back with its data, killed
//! in the middle of such a move, cloned onto another server, and a move to a server that
//! is down. The second server is the test's own ([`PgServer`]: `initdb` into a temporary
//! folder, started on a free loopback port, stopped and removed afterwards); its rows and
//! catalogs are read with the test's own SQL, never through the library.

use std::collections::BTreeSet;

use sea_orm::DatabaseConnection;
use tenancy::{Placement, TenantDatabase};
use tenancy_test_support::{PgServer, unique_name};

use crate::commands::text;
use crate::lifecycle::{Setup, World, expect_ok, killed};
use crate::move_cli::{
    Place, Rows, leftovers, movetenant, operation, registry, rows, rows_in, seed, shell, storage, strings, strings_of,
};

/// The main test server (the one the master lives on).
const MAIN_PORT: u16 = 5432;

/// The second server and a master on the first, or `None` when either is missing outside CI.
async fn two_servers() -> Option<(PgServer, World)> {
    let server = PgServer::start()?;
    let world = World::new(Setup::PgDatabase).await?;
    Some((server, world))
}

/// `movetenant <id> --to database` into database `db` of role `user` on `127.0.0.1:port`.
fn move_to_server(id: &str, db: &str, user: &str, port: u16, extra: &[&str]) -> Vec<String> {
    let mut args = strings(&[id, "--to", "database", "--db-name", db, "--db-user", user]);
    args.extend(strings(&["--db-host", "127.0.0.1", "--db-port", &port.to_string()]));
    args.extend(strings(extra));
    args
}

/// `(host, port, database, user)` the registry names for a PostgreSQL database tenant.
async fn placed(world: &World, id: &str) -> (String, u16, String, String) {
    let id: tenancy::TenantId = id.parse().expect("an id");
    let tenant = world.tenancy.get_tenant(&id).await.expect("the tenant");
    match tenant.placement() {
        Placement::Database(TenantDatabase::Postgres(db)) => {
            (db.host.clone(), db.port, db.name.clone(), db.user.clone())
        }
        other => panic!("{id} is not a PostgreSQL database tenant: {other:?}"),
    }
}

async fn connect(url: String) -> DatabaseConnection {
    sea_orm::Database::connect(url.clone()).await.unwrap_or_else(|err| panic!("connect to {url}: {err}"))
}

/// The tenant's rows in database `db` on the second server.
async fn rows_on(server: &PgServer, db: &str, id: &str) -> Rows {
    let conn = connect(server.url(db)).await;
    let found = rows_in(&conn, &Place::PgDatabase { db: db.to_owned(), user: String::new() }, id).await;
    conn.close().await.expect("close");
    found
}

/// Databases and roles on the second server whose name holds `id`.
async fn objects_on(server: &PgServer, id: &str) -> BTreeSet<String> {
    let admin = connect(server.admin_url()).await;
    let mut found = BTreeSet::new();
    for (what, sql) in [
        ("database", "SELECT datname::text FROM pg_database WHERE strpos(datname, $1) > 0"),
        ("role", "SELECT rolname::text FROM pg_roles WHERE strpos(rolname, $1) > 0"),
    ] {
        found.extend(strings_of(&admin, sql, vec![id.into()]).await.into_iter().map(|n| format!("{what} {n}")));
    }
    admin.close().await.expect("close");
    found
}

/// Every database and role on the second server that the test made (all but initdb's).
async fn all_objects_on(server: &PgServer) -> BTreeSet<String> {
    let admin = connect(server.admin_url()).await;
    let mut found = BTreeSet::new();
    for (what, sql) in [
        (
            "database",
            "SELECT datname::text FROM pg_database WHERE datname NOT IN ('postgres', 'template0', 'template1')",
        ),
        ("role", "SELECT rolname::text FROM pg_roles WHERE rolname <> 'postgres' AND rolname NOT LIKE 'pg\\_%'"),
    ] {
        found.extend(strings_of(&admin, sql, vec![]).await.into_iter().map(|n| format!("{what} {n}")));
    }
    admin.close().await.expect("close");
    found
}

fn both(db: &str, user: &str) -> BTreeSet<String> {
    [format!("database {db}"), format!("role {user}")].into_iter().collect()
}

/// A database tenant on the main server goes to the second server with its rows (the
/// registry names the new server, the old database is kept as a leftover and listed),
/// is served from there (reads and an insert through `tenantshell`), and comes back with
/// `--drop-source`, leaving nothing on the second server; a bystander is untouched.
#[tokio::test]
async fn movetenant_moves_a_database_tenant_to_another_server_and_back() {
    let Some((server, world)) = two_servers().await else { return };
    let pg = world.pg.as_ref().expect("PostgreSQL");
    let bystander = unique_name("b");
    expect_ok(&world.create(&bystander, None), "create the bystander");
    seed(&world, &bystander).await;
    let bystander_place = Place::PgDatabase { db: World::db_name(&bystander), user: World::db_user(&bystander) };
    let bystander_rows = rows(&world, &bystander_place, &bystander).await;
    let bystander_storage = storage(&world, &bystander).await;

    let id = unique_name("s");
    expect_ok(&world.create(&id, None), "create");
    seed(&world, &id).await;
    let source = Place::PgDatabase { db: World::db_name(&id), user: World::db_user(&id) };
    let before = rows(&world, &source, &id).await;
    assert_eq!((before.count(), before.owners.iter().collect::<Vec<_>>()), (6, vec![&id]));
    let source_storage = storage(&world, &id).await;
    assert_eq!(source_storage, both(&World::db_name(&id), &World::db_user(&id)));

    // Out to the second server; the source is kept.
    let (far_db, far_user) = (format!("{id}_far"), format!("{id}_fu"));
    world.tenancy.reset_tenant_pool(&id.parse().expect("an id"));
    let out = movetenant(&world, &move_to_server(&id, &far_db, &far_user, server.port, &["--yes"]), None);
    expect_ok(&out, "move to the second server");
    assert_eq!(registry(&world, &id).await, Some(("database".to_owned(), "ready".to_owned())));
    assert_eq!(operation(&world, &id).await, None);
    assert_eq!(placed(&world, &id).await, ("127.0.0.1".to_owned(), server.port, far_db.clone(), far_user.clone()));
    assert_eq!(rows_on(&server, &far_db, &id).await, before, "the rows on the second server");
    assert_eq!(objects_on(&server, &id).await, both(&far_db, &far_user), "the second server's catalogs");
    // The main server keeps the source, untouched, as the tenant's leftovers.
    assert_eq!(storage(&world, &id).await, source_storage, "the main server's catalogs");
    assert_eq!(rows(&world, &source, &id).await, before, "the kept source changed");
    assert_eq!(leftovers(&world, &id).await, source_storage, "the leftovers");
    let out = world.delete(&id, &["--leftovers", "--dry-run"], None);
    expect_ok(&out, "deletetenant --leftovers --dry-run");
    let listed = text(&out.stdout);
    for object in [
        format!("database '{}' on 127.0.0.1:{MAIN_PORT}", World::db_name(&id)),
        format!("role '{}' on 127.0.0.1:{MAIN_PORT}", World::db_user(&id)),
    ] {
        assert!(listed.contains(&object), "{object} not listed: {listed}");
    }
    assert_eq!(storage(&world, &id).await, source_storage, "--dry-run removed something");

    // Served from the second server: reads and an insert through tenantshell.
    let out = shell(&world, &id, "SELECT name FROM projects ORDER BY id");
    expect_ok(&out, "a read through tenantshell");
    assert!(text(&out.stdout).contains(&format!("{id} project")), "{}", text(&out.stdout));
    let sql = format!(
        "INSERT INTO projects (tenant_id, name, created_at) VALUES ('{id}', 'on the second server', CURRENT_TIMESTAMP)"
    );
    expect_ok(&shell(&world, &id, &sql), "an insert through tenantshell");
    let far = rows_on(&server, &far_db, &id).await;
    assert_eq!(far.count(), before.count() + 1, "the insert is not on the second server: {far:?}");
    assert!(far.tables["projects"].iter().any(|row| row.contains("on the second server")), "{far:?}");
    assert_eq!(far.owners, BTreeSet::from([id.clone()]));
    assert_eq!(rows(&world, &source, &id).await, before, "the insert reached the old database");
    let out = shell(&world, &id, "SELECT name FROM projects ORDER BY id");
    assert!(text(&out.stdout).contains("on the second server"), "{}", text(&out.stdout));

    // The leftovers go; then back to the main server, dropping the second server's copy.
    expect_ok(&world.delete(&id, &["--leftovers"], None), "deletetenant --leftovers");
    assert_eq!(storage(&world, &id).await, BTreeSet::new(), "the leftovers on the main server");
    let (home_db, home_user) = (format!("{id}_home"), format!("{id}_hu"));
    pg.track_database(&home_db);
    pg.track_role(&home_user);
    let out =
        movetenant(&world, &move_to_server(&id, &home_db, &home_user, MAIN_PORT, &["--drop-source", "--yes"]), None);
    expect_ok(&out, "move back with --drop-source");
    let home = Place::PgDatabase { db: home_db.clone(), user: home_user.clone() };
    assert_eq!(placed(&world, &id).await, ("127.0.0.1".to_owned(), MAIN_PORT, home_db.clone(), home_user.clone()));
    assert_eq!(registry(&world, &id).await, Some(("database".to_owned(), "ready".to_owned())));
    assert_eq!(operation(&world, &id).await, None);
    assert_eq!(rows(&world, &home, &id).await, far, "the rows back on the main server");
    assert_eq!(objects_on(&server, &id).await, BTreeSet::new(), "the second server keeps something of the tenant");
    assert_eq!(all_objects_on(&server).await, BTreeSet::new(), "the second server's catalogs");
    assert_eq!(leftovers(&world, &id).await, BTreeSet::new());
    assert_eq!(storage(&world, &id).await, both(&home_db, &home_user));

    assert_eq!(rows(&world, &bystander_place, &bystander).await, bystander_rows, "the bystander's rows");
    assert_eq!(storage(&world, &bystander).await, bystander_storage, "the bystander's storage");
    for tenant in [&id, &bystander] {
        world.tenancy.reset_tenant_pool(&tenant.parse().expect("an id"));
        expect_ok(&world.delete(tenant, &[], None), "delete");
        assert_eq!(storage(&world, tenant).await, BTreeSet::new(), "{tenant}");
    }
}

/// Stopped dead after the copy to the second server, then run again: the tenant stays on
/// the main server until the re-run, which removes the partial copy and moves it; back
/// with `--drop-source`, stopped after the switch, the re-run drops the second server's
/// database.
#[tokio::test]
async fn movetenant_to_another_server_killed_after_the_copy_is_finished_by_a_rerun() {
    let Some((server, world)) = two_servers().await else { return };
    let pg = world.pg.as_ref().expect("PostgreSQL");
    let id = unique_name("k");
    expect_ok(&world.create(&id, None), "create");
    seed(&world, &id).await;
    let source = Place::PgDatabase { db: World::db_name(&id), user: World::db_user(&id) };
    let before = rows(&world, &source, &id).await;
    let source_storage = storage(&world, &id).await;

    let (far_db, far_user) = (format!("{id}_far"), format!("{id}_fu"));
    let args = move_to_server(&id, &far_db, &far_user, server.port, &["--yes"]);
    world.tenancy.reset_tenant_pool(&id.parse().expect("an id"));
    let out = movetenant(&world, &args, Some("copy"));
    assert!(killed(&out), "movetenant was not stopped: {}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(registry(&world, &id).await, Some(("database".to_owned(), "moving".to_owned())));
    assert_eq!(operation(&world, &id).await.map(|(kind, _)| kind).as_deref(), Some("move"));
    assert_eq!(placed(&world, &id).await.1, MAIN_PORT, "the registry left the main server before the switch");
    assert_eq!(rows(&world, &source, &id).await, before, "the source changed");
    // The copy is there, unverified, on the second server.
    assert_eq!(objects_on(&server, &id).await, both(&far_db, &far_user));

    let out = movetenant(&world, &args, None);
    expect_ok(&out, "the re-run");
    assert_eq!(registry(&world, &id).await, Some(("database".to_owned(), "ready".to_owned())));
    assert_eq!(operation(&world, &id).await, None);
    assert_eq!(placed(&world, &id).await, ("127.0.0.1".to_owned(), server.port, far_db.clone(), far_user.clone()));
    assert_eq!(rows_on(&server, &far_db, &id).await, before, "the rows on the second server");
    assert_eq!(all_objects_on(&server).await, both(&far_db, &far_user), "the second server's catalogs");
    assert_eq!(storage(&world, &id).await, source_storage, "the main server's catalogs");
    assert_eq!(leftovers(&world, &id).await, source_storage, "the leftovers");
    expect_ok(&world.delete(&id, &["--leftovers"], None), "deletetenant --leftovers");

    let (home_db, home_user) = (format!("{id}_home"), format!("{id}_hu"));
    pg.track_database(&home_db);
    pg.track_role(&home_user);
    let back = move_to_server(&id, &home_db, &home_user, MAIN_PORT, &["--drop-source", "--yes"]);
    let out = movetenant(&world, &back, Some("switch"));
    assert!(killed(&out), "movetenant was not stopped: {}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(placed(&world, &id).await.1, MAIN_PORT, "the switch did not point at the main server");
    assert_eq!(operation(&world, &id).await.map(|(kind, _)| kind).as_deref(), Some("move"));
    assert_eq!(objects_on(&server, &id).await, both(&far_db, &far_user), "dropped before the re-run");
    let out = movetenant(&world, &back, None);
    expect_ok(&out, "the re-run after the switch");
    assert_eq!(operation(&world, &id).await, None);
    assert_eq!(all_objects_on(&server).await, BTreeSet::new(), "the second server's catalogs");
    let home = Place::PgDatabase { db: home_db.clone(), user: home_user.clone() };
    assert_eq!(rows(&world, &home, &id).await, before, "the rows back on the main server");
    assert_eq!(storage(&world, &id).await, both(&home_db, &home_user));

    world.tenancy.reset_tenant_pool(&id.parse().expect("an id"));
    expect_ok(&world.delete(&id, &[], None), "delete");
    assert_eq!(storage(&world, &id).await, BTreeSet::new());
}

/// The steps of a move of a database tenant to a database on another server, after which
/// `TENANCY_FAULT_AFTER_STEP` stops it (the copy has a test of its own above).
const MOVE_STEPS: [&str; 8] =
    ["freeze", "create-role", "create-database", "grant-privileges", "migrate", "provision", "verify", "switch"];

/// Stopped dead after every other step of a move to the second server, each time with a
/// fresh tenant, then run once more: the registry stays on the main server until the
/// switch, and after the re-run the tenant is on the second server with exactly its rows,
/// the second server holds its database and role once (no partial copy beside them), and
/// a delete leaves nothing on either server.
#[tokio::test]
async fn movetenant_to_another_server_killed_after_every_step_is_finished_by_a_rerun() {
    let Some((server, world)) = two_servers().await else { return };
    for step in MOVE_STEPS {
        let what = format!("stopped after {step}");
        let id = unique_name("e");
        expect_ok(&world.create(&id, None), "create");
        seed(&world, &id).await;
        let source = Place::PgDatabase { db: World::db_name(&id), user: World::db_user(&id) };
        let before = rows(&world, &source, &id).await;
        let source_storage = storage(&world, &id).await;
        let (far_db, far_user) = (format!("{id}_far"), format!("{id}_fu"));
        let args = move_to_server(&id, &far_db, &far_user, server.port, &["--yes"]);
        world.tenancy.reset_tenant_pool(&id.parse().expect("an id"));

        let out = movetenant(&world, &args, Some(step));
        assert!(killed(&out), "{what}: not stopped: {}{}", text(&out.stdout), text(&out.stderr));
        if step == "switch" {
            assert_eq!(placed(&world, &id).await.1, server.port, "{what}");
            assert_eq!(registry(&world, &id).await, Some(("database".to_owned(), "ready".to_owned())), "{what}");
            assert_eq!(operation(&world, &id).await, None, "{what}");
        } else {
            assert_eq!(placed(&world, &id).await.1, MAIN_PORT, "{what}: the registry left the main server");
            assert_eq!(registry(&world, &id).await, Some(("database".to_owned(), "moving".to_owned())), "{what}");
            assert_eq!(operation(&world, &id).await.map(|(kind, _)| kind).as_deref(), Some("move"), "{what}");
            assert_eq!(rows(&world, &source, &id).await, before, "{what}: the source changed");
        }

        let out = movetenant(&world, &args, None);
        expect_ok(&out, &format!("{what}: the re-run"));
        assert_eq!(registry(&world, &id).await, Some(("database".to_owned(), "ready".to_owned())), "{what}");
        assert_eq!(operation(&world, &id).await, None, "{what}");
        let at = ("127.0.0.1".to_owned(), server.port, far_db.clone(), far_user.clone());
        assert_eq!(placed(&world, &id).await, at, "{what}");
        assert_eq!(rows_on(&server, &far_db, &id).await, before, "{what}: the rows on the second server");
        assert_eq!(all_objects_on(&server).await, both(&far_db, &far_user), "{what}: the second server's catalogs");
        assert_eq!(storage(&world, &id).await, source_storage, "{what}: the main server's catalogs");
        assert_eq!(leftovers(&world, &id).await, source_storage, "{what}: the leftovers");

        // A plain delete removes the tenant on the second server and its leftovers here.
        world.tenancy.reset_tenant_pool(&id.parse().expect("an id"));
        expect_ok(&world.delete(&id, &[], None), &format!("{what}: delete"));
        assert_eq!(all_objects_on(&server).await, BTreeSet::new(), "{what}: the second server after the delete");
        assert_eq!(storage(&world, &id).await, BTreeSet::new(), "{what}: the main server after the delete");
    }
}

/// `createtenant --from` a database template on the main server into a database on the
/// second server: the template's rows under the new id, the template untouched; deleting
/// the clone leaves nothing on the second server.
#[tokio::test]
async fn createtenant_from_a_template_clones_onto_another_server() {
    let Some((server, world)) = two_servers().await else { return };
    let template = unique_name("t");
    expect_ok(&world.create(&template, None), "create the template");
    seed(&world, &template).await;
    let template_place = Place::PgDatabase { db: World::db_name(&template), user: World::db_user(&template) };
    let template_rows = rows(&world, &template_place, &template).await;
    let template_storage = storage(&world, &template).await;

    let id = unique_name("c");
    let (db, user) = (format!("{id}_db"), format!("{id}_u"));
    let mut args = strings(&["--id", &id, "--name", &id, "--isolation", "database", "--from", &template]);
    args.extend(strings(&["--db-name", &db, "--db-user", &user, "--db-host", "127.0.0.1"]));
    args.extend(strings(&["--db-port", &server.port.to_string(), "--no-input"]));
    let out = world.run(env!("CARGO_BIN_EXE_createtenant"), &args, None);
    expect_ok(&out, "createtenant --from onto the second server");
    assert_eq!(registry(&world, &id).await, Some(("database".to_owned(), "ready".to_owned())));
    assert_eq!(placed(&world, &id).await, ("127.0.0.1".to_owned(), server.port, db.clone(), user.clone()));
    let cloned = rows_on(&server, &db, &id).await;
    assert_eq!(cloned.tables, template_rows.tables, "the clone's rows");
    assert_eq!(cloned.owners, BTreeSet::from([id.clone()]), "the clone's tenant column");
    assert_eq!(all_objects_on(&server).await, both(&db, &user), "the second server's catalogs");
    assert_eq!(storage(&world, &id).await, BTreeSet::new(), "the clone left something on the main server");
    assert_eq!(rows(&world, &template_place, &template).await, template_rows, "the template changed");
    assert_eq!(storage(&world, &template).await, template_storage);
    // Served from the second server.
    let out = shell(&world, &id, "SELECT name FROM projects ORDER BY id");
    expect_ok(&out, "a read through tenantshell");
    assert!(text(&out.stdout).contains(&format!("{template} project")), "{}", text(&out.stdout));

    expect_ok(&world.delete(&id, &[], None), "delete the clone");
    assert_eq!(all_objects_on(&server).await, BTreeSet::new(), "the second server's catalogs");
    assert_eq!(registry(&world, &id).await, None);
    world.tenancy.reset_tenant_pool(&template.parse().expect("an id"));
    expect_ok(&world.delete(&template, &[], None), "delete the template");
    assert_eq!(storage(&world, &template).await, BTreeSet::new());
}

/// A move to a server that is down fails with exit 4 naming the server, and changes
/// nothing: the tenant is ready and served from the main server, no operation is left.
#[tokio::test]
async fn movetenant_to_a_server_that_is_down_changes_nothing() {
    let Some((mut server, world)) = two_servers().await else { return };
    server.stop();
    let id = unique_name("d");
    expect_ok(&world.create(&id, None), "create");
    seed(&world, &id).await;
    let source = Place::PgDatabase { db: World::db_name(&id), user: World::db_user(&id) };
    let before = rows(&world, &source, &id).await;
    let source_storage = storage(&world, &id).await;
    let placed_before = placed(&world, &id).await;

    let args = move_to_server(&id, &format!("{id}_far"), &format!("{id}_fu"), server.port, &["--yes"]);
    let out = movetenant(&world, &args, None);
    assert_eq!(out.status.code(), Some(4), "{}{}", text(&out.stdout), text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&format!("127.0.0.1:{}", server.port)), "the server is not named: {stderr}");

    assert_eq!(registry(&world, &id).await, Some(("database".to_owned(), "ready".to_owned())));
    assert_eq!(operation(&world, &id).await, None, "an operation was left");
    assert_eq!(placed(&world, &id).await, placed_before);
    assert_eq!(rows(&world, &source, &id).await, before);
    assert_eq!(storage(&world, &id).await, source_storage);
    assert_eq!(leftovers(&world, &id).await, BTreeSet::new());
    let out = shell(&world, &id, "SELECT name FROM projects ORDER BY id");
    expect_ok(&out, "a read through tenantshell");
    assert!(text(&out.stdout).contains(&format!("{id} project")), "{}", text(&out.stdout));

    world.tenancy.reset_tenant_pool(&id.parse().expect("an id"));
    expect_ok(&world.delete(&id, &[], None), "delete");
    assert_eq!(storage(&world, &id).await, BTreeSet::new());
}
