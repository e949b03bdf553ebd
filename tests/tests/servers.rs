//! Servers as data (`tenancy::servers`) on real PostgreSQL: the master's own server and
//! two of the test's own ([`PgServer`]). The placement policy with ties, weights and
//! states (the master's server's too); a server's admin password encrypted at rest,
//! bound to its server and useless under another key; and a registered server's stored
//! credentials really used to create a tenant there (the server asks every connection
//! for a password, and its admin is no superuser).

use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use tenancy::secrets::Password;
use tenancy::servers::{NewServer, ServerHealth, ServerName, ServerState};
use tenancy::{Error, Isolation, NewDatabase, NewTenant, Placement, Tenancy, Tenant, TenantDatabase};
use tenancy_test_support::{PgMaster, PgServer, TempDir, column_strings, count, unique_name};

const PASSWORD: &str = "tenant-Pass-1";

fn name(text: &str) -> ServerName {
    text.parse().expect("a server name")
}

/// The port a database tenant's registry row names.
fn port_of(tenant: &Tenant) -> u16 {
    match tenant.placement() {
        Placement::Database(TenantDatabase::Postgres(db)) => db.port,
        other => panic!("{} is not a PostgreSQL database tenant: {other:?}", tenant.id()),
    }
}

/// A database tenant with unique names, on the server `choose` picks (tracked on the
/// master's server for clean-up when it lands there).
async fn database_tenant(
    tenancy: &Tenancy,
    pg: &PgMaster,
    choose: impl FnOnce(NewDatabase) -> NewDatabase,
) -> tenancy::Result<Tenant> {
    let id = unique_name("sv");
    let (db, user) = (format!("{id}_db"), format!("{id}_u"));
    pg.track_database(&db);
    pg.track_role(&user);
    let database = choose(NewDatabase::create(db).login(user, Password::new(PASSWORD)));
    let new = NewTenant::new(id.parse::<tenancy::TenantId>()?, &id, Isolation::Database)?.database(database);
    Ok(tenancy.create_tenant(new, &()).await?.tenant)
}

async fn connect(url: &str) -> DatabaseConnection {
    Database::connect(url.to_owned()).await.unwrap_or_else(|err| panic!("connect to {url}: {err}"))
}

/// Ties go to the master's own server, then by name; fewer tenants per unit of weight
/// wins; draining and down servers (the master's included) are skipped, and with none
/// active placement refuses; a server named for a new tenant must be active.
#[tokio::test]
async fn placement_follows_load_per_weight_ties_and_states() {
    let Some(pg) = PgMaster::create().await else { return };
    let Some(second) = PgServer::start() else { return };
    let Some(third) = PgServer::start() else { return };
    let dir = TempDir::new();
    let tenancy = pg.tenancy(&dir).await;
    tenancy.add_server(NewServer::new("db2", "127.0.0.1", second.port, "postgres").expect("db2")).await.expect("add");
    let db3 = NewServer::new("db3", "127.0.0.1", third.port, "postgres").expect("db3").weight(300).expect("weight");
    tenancy.add_server(db3).await.expect("add db3");
    let names: Vec<String> = tenancy.servers().await.expect("servers").iter().map(|s| s.name.to_string()).collect();
    assert_eq!(names, ["master", "db2", "db3"]);

    // Nobody placed yet: a three-way tie goes to the master's server.
    assert_eq!(tenancy.pick_server().await.expect("pick").name, name("master"));
    // A schema tenant counts for the master: db2 and db3 tie at zero, by name.
    let schema = unique_name("sv");
    let new =
        NewTenant::new(schema.parse::<tenancy::TenantId>().expect("id"), &schema, Isolation::Schema).expect("new");
    tenancy.create_tenant(new, &()).await.expect("a schema tenant");
    assert_eq!(tenancy.pick_server().await.expect("pick").name, name("db2"));
    // One on db2 by name: db3 (0 of 300) is the least loaded.
    let on_db2 = database_tenant(&tenancy, &pg, |db| db.on_server(name("db2"))).await.expect("on db2");
    assert_eq!(port_of(&on_db2), second.port);
    assert_eq!(tenancy.pick_server().await.expect("pick").name, name("db3"));
    // Placed by policy: lands on db3, which with 1 of 300 stays the least loaded.
    let placed = database_tenant(&tenancy, &pg, |db| db).await.expect("by policy");
    assert_eq!(port_of(&placed), third.port);
    assert_eq!(tenancy.pick_server().await.expect("pick").name, name("db3"));
    let on_third = connect(&third.admin_url()).await;
    let placed_db = match placed.placement() {
        Placement::Database(TenantDatabase::Postgres(db)) => db.name.clone(),
        _ => unreachable!(),
    };
    assert_eq!(
        count(&on_third, "SELECT count(*) FROM pg_database WHERE datname = $1", vec![placed_db.into()]).await,
        1
    );
    on_third.close().await.expect("close");

    // Draining db3: master and db2 tie at 1 of 100, the master first.
    let (server, before) = tenancy.set_server_state(&name("db3"), ServerState::Draining).await.expect("drain");
    assert_eq!((server.state, before), (ServerState::Draining, ServerState::Active));
    assert_eq!(tenancy.pick_server().await.expect("pick").name, name("master"));
    // The master's server drains too (its state is stored in a row of its own).
    tenancy.set_server_state(&name("master"), ServerState::Draining).await.expect("drain the master");
    let master = master_row(&pg).await;
    assert_eq!(master, ["master|draining|100|"], "the master's row holds its state, no credentials");
    assert_eq!(tenancy.server(&name("master")).await.expect("master").state, ServerState::Draining);
    assert_eq!(tenancy.pick_server().await.expect("pick").name, name("db2"));
    tenancy.set_server_state(&name("db2"), ServerState::Down).await.expect("down");
    assert!(matches!(tenancy.pick_server().await, Err(Error::NoActiveServer { .. })));
    let refused = database_tenant(&tenancy, &pg, |db| db).await;
    assert!(matches!(refused, Err(Error::NoActiveServer { .. })), "{refused:?}");
    // A draining server named for a new tenant refuses it, and nothing is left behind.
    let refused = database_tenant(&tenancy, &pg, |db| db.on_server(name("db3"))).await;
    assert!(matches!(refused, Err(Error::ServerNotAccepting { .. })), "{refused:?}");
    let unknown = database_tenant(&tenancy, &pg, |db| db.on_server(name("nope"))).await;
    assert!(matches!(unknown, Err(Error::UnknownServer { .. })), "{unknown:?}");
    assert_eq!(tenancy.tenants().await.expect("tenants").len(), 3, "a refused tenant left a row");

    tenancy.set_server_state(&name("master"), ServerState::Active).await.expect("undrain the master");
    assert_eq!(master_row(&pg).await, ["master|active|100|"]);
    assert_eq!(tenancy.pick_server().await.expect("pick").name, name("master"));
    for tenant in tenancy.tenants().await.expect("tenants") {
        tenancy.delete_tenant(tenant.id(), &Default::default()).await.expect("delete");
    }
}

/// The master's row in `tenancy_servers`: `name|state|weight|admin_user`.
async fn master_row(pg: &PgMaster) -> Vec<String> {
    let master = pg.connect().await;
    let rows = column_strings(
        &master,
        "SELECT name || '|' || state || '|' || weight || '|' || coalesce(admin_user, '') FROM tenancy_servers \
         WHERE name = $1",
        vec!["master".into()],
    )
    .await;
    master.close().await.expect("close");
    rows
}

/// A server whose every connection needs a password, administered by a role that is no
/// superuser (CREATEDB CREATEROLE): registering it stores the password encrypted
/// (`v1:`, not the plain text), a tenant created there is created by that role (the
/// master's own credentials cannot even connect), another key cannot decrypt the stored
/// password, and a password moved onto another server's row does not decrypt there.
#[tokio::test]
async fn a_servers_stored_credentials_are_encrypted_and_used() {
    let Some(pg) = PgMaster::create().await else { return };
    let Some(mut server) = PgServer::start() else { return };
    let Some(other) = PgServer::start() else { return };
    server.require_passwords("superSecret1").await;
    let admin = unique_name("adm");
    let admin_password = "adminPass-7";
    let superuser = connect(&server.admin_url()).await;
    superuser
        .execute_unprepared(&format!("CREATE ROLE \"{admin}\" LOGIN CREATEDB CREATEROLE PASSWORD '{admin_password}'"))
        .await
        .expect("create the admin role");
    let dir = TempDir::new();
    let tenancy = pg.tenancy(&dir).await;

    // A wrong password: refused, nothing stored.
    let wrong = NewServer::new("far", "127.0.0.1", server.port, &admin).expect("far").password(Password::new("nope"));
    let err = tenancy.add_server(wrong).await.expect_err("a wrong password");
    assert!(matches!(err, Error::ServerUnreachable { .. }), "{err:?}");
    assert_eq!(tenancy.servers().await.expect("servers").len(), 1);
    let far =
        NewServer::new("far", "127.0.0.1", server.port, &admin).expect("far").password(Password::new(admin_password));
    tenancy.add_server(far).await.expect("add the server");
    let master = pg.connect().await;
    let stored =
        column_strings(&master, "SELECT admin_password FROM tenancy_servers WHERE name = $1", vec!["far".into()]).await;
    assert_eq!(stored.len(), 1);
    assert!(stored[0].starts_with("v1:") && !stored[0].contains(admin_password), "stored as {}", stored[0]);

    // A tenant there: created through the stored credentials (the master's URL has no
    // password for this server), so its role is one the admin created and administers.
    let tenant = database_tenant(&tenancy, &pg, |db| db.on_server(name("far"))).await.expect("a tenant on far");
    let Placement::Database(TenantDatabase::Postgres(db)) = tenant.placement() else { unreachable!() };
    assert_eq!(db.port, server.port);
    let owner = column_strings(
        &superuser,
        "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1",
        vec![db.name.clone().into()],
    )
    .await;
    assert_eq!(owner, std::slice::from_ref(&db.user), "the database's owner");
    let admins = column_strings(
        &superuser,
        "SELECT m.rolname::text FROM pg_auth_members a JOIN pg_roles r ON r.oid = a.roleid \
         JOIN pg_roles m ON m.oid = a.member WHERE r.rolname = $1",
        vec![db.user.clone().into()],
    )
    .await;
    assert!(admins.contains(&admin), "the tenant's role is not administered by {admin}: {admins:?}");
    // The tenant connects with its own password and sees its database.
    let handle = tenancy.tenant(tenant.id().as_str()).await.expect("the handle");
    handle.execute_unprepared("CREATE TABLE t (x int)").await.expect("the tenant's own SQL");

    // The overview probes with the stored credentials.
    let overview = tenancy.server_overviews().await.expect("overviews");
    assert!(matches!(overview[1].health, ServerHealth::Up { .. }), "{:?}", overview[1].health);
    assert_eq!(overview[1].tenants.database, 1);

    // Another key cannot decrypt the stored password: no tenant is created, and the
    // overview reports the server down with the reason.
    let other_dir = TempDir::new();
    let stranger = pg.tenancy(&other_dir).await;
    let err = database_tenant(&stranger, &pg, |db| db.on_server(name("far"))).await.expect_err("another key");
    assert!(matches!(err, Error::Decrypt { .. }), "{err:?}");
    let overview = stranger.server_overviews().await.expect("overviews");
    assert!(matches!(&overview[1].health, ServerHealth::Down { .. }), "{:?}", overview[1].health);
    assert_eq!(stranger.tenants().await.expect("tenants").len(), 1);

    // A ciphertext is bound to its server's name: copied onto another server's row, it
    // does not decrypt there.
    let twin = NewServer::new("twin", "127.0.0.1", other.port, "postgres").expect("twin").password(Password::new("x"));
    tenancy.add_server(twin).await.expect("add twin");
    master
        .execute_unprepared(&format!("UPDATE tenancy_servers SET admin_password = '{}' WHERE name = 'twin'", stored[0]))
        .await
        .expect("copy the ciphertext");
    let err = database_tenant(&tenancy, &pg, |db| db.on_server(name("twin"))).await.expect_err("a copied ciphertext");
    assert!(matches!(err, Error::Decrypt { .. }), "{err:?}");

    drop(handle);
    tenancy.delete_tenant(tenant.id(), &Default::default()).await.expect("delete");
    let left =
        count(&superuser, "SELECT count(*) FROM pg_database WHERE datname = $1", vec![db.name.clone().into()]).await;
    assert_eq!(left, 0, "the tenant's database is left on the server");
    superuser.close().await.expect("close");
    master.close().await.expect("close");
}
