//! The live registry: two independent `Tenancy` instances on one master (an operator's and
//! a server's). What the operator changes (suspend, resume, a deleted registry row) the
//! server sees within a second, without a query per lookup: the server keeps answering
//! from memory while the registry table is out of its reach, which an instance reading
//! per call cannot. The server's pools of a suspended or deleted tenant are closed
//! (`pg_stat_activity`), and losing the listener connection falls back to reads until it
//! is back.

use std::future::Future;
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait};
use tenancy::live::LISTENER_APPLICATION_NAME;
use tenancy::{Error, Isolation, NewDatabase, NewTenant, Tenancy, TenantId};
use tenancy_test_support::{PgMaster, TempDir, count, unique_name};

/// How long another instance may take to follow a change (the bound).
const BOUND: Duration = Duration::from_secs(1);

/// Polls `check` until it holds or `within` passed; returns how long it took.
async fn within<F, Fut>(within: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What `tenancy.tenant(id)` answers, in short.
async fn answer(tenancy: &Tenancy, id: &TenantId) -> &'static str {
    match tenancy.tenant(id).await {
        Ok(_) => "ready",
        Err(Error::TenantSuspended { .. }) => "suspended",
        Err(Error::TenantNotFound { .. }) => "not found",
        Err(Error::TenantNotReady { .. }) => "not ready",
        Err(Error::Database(_)) => "database error",
        Err(other) => panic!("unexpected answer for {id}: {other}"),
    }
}

/// Waits until `tenancy`'s live registry has read the registry.
async fn live(tenancy: &Tenancy, any: &TenantId) {
    let _ = tenancy.tenant(any).await;
    within(Duration::from_secs(5), "the live registry starts", || async { tenancy.registry_is_live() }).await;
}

async fn execute(db: &DatabaseConnection, sql: &str, values: Vec<sea_orm::Value>) {
    db.execute_raw(Statement::from_sql_and_values(db.get_database_backend(), sql, values)).await.expect(sql);
}

/// Suspends `id` through `operator` and checks that `server` answers "suspended" within
/// the bound, then resumes it and checks "ready" the same way.
async fn suspend_and_resume(operator: &Tenancy, server: &Tenancy, id: &TenantId) {
    assert_eq!(answer(server, id).await, "ready");
    operator.suspend_tenant(id, Some("unpaid".to_owned())).await.expect("suspend");
    let took =
        within(BOUND, "the server sees the suspension", || async { answer(server, id).await == "suspended" }).await;
    eprintln!("suspension of {id} seen after {took:?}");
    operator.resume_tenant(id).await.expect("resume");
    let took = within(BOUND, "the server sees the resumption", || async { answer(server, id).await == "ready" }).await;
    eprintln!("resumption of {id} seen after {took:?}");
}

/// Backends of the server's pools connected as `role` (a tenant's own login).
async fn sessions_of(pg: &PgMaster, role: &str) -> i64 {
    count(&pg.admin, "SELECT count(*) FROM pg_stat_activity WHERE usename = $1", vec![role.into()]).await
}

#[tokio::test]
async fn postgres_another_instance_follows_suspend_resume_and_delete() {
    let Some(pg) = PgMaster::create().await else { return };
    let dir = TempDir::new();
    let operator = pg.tenancy(&dir).await;
    let server = pg.tenancy(&dir).await;
    let db_tenant: TenantId = unique_name("live_d").parse().expect("id");
    let schema_tenant: TenantId = unique_name("live_s").parse().expect("id");
    let (database, role) = (unique_name("db"), unique_name("u"));
    pg.track_database(&database);
    pg.track_role(&role);
    let new = NewTenant::new(db_tenant.clone(), "D", Isolation::Database).expect("new tenant").database(
        NewDatabase::create(database)
            .login(role.clone(), tenancy::secrets::Password::new("pw"))
            .server("127.0.0.1", 5432),
    );
    operator.create_tenant(new, &()).await.expect("create the database tenant");
    let new = NewTenant::new(schema_tenant.clone(), "S", Isolation::Schema).expect("new tenant");
    operator.create_tenant(new, &()).await.expect("create the schema tenant");
    live(&server, &db_tenant).await;

    // The server's pool of the database tenant holds a connection as its role.
    server.tenant(&db_tenant).await.expect("handle").ping().await.expect("ping");
    assert!(sessions_of(&pg, &role).await >= 1);

    suspend_and_resume(&operator, &server, &db_tenant).await;
    suspend_and_resume(&operator, &server, &schema_tenant).await;

    // Suspending closed the server's pool of the tenant: its sessions leave.
    server.tenant(&db_tenant).await.expect("handle").ping().await.expect("ping");
    operator.suspend_tenant(&db_tenant, None).await.expect("suspend");
    let took =
        within(BOUND, "the suspended tenant's sessions end", || async { sessions_of(&pg, &role).await == 0 }).await;
    eprintln!("suspended tenant's sessions gone after {took:?}");
    operator.resume_tenant(&db_tenant).await.expect("resume");
    within(BOUND, "resumed", || async { answer(&server, &db_tenant).await == "ready" }).await;

    // A deleted registry row (what `deletetenant` ends with): not found within the bound,
    // and the server's sessions to the tenant's database are gone.
    server.tenant(&db_tenant).await.expect("handle").ping().await.expect("ping");
    assert!(sessions_of(&pg, &role).await >= 1);
    let master = pg.connect().await;
    execute(&master, "DELETE FROM tenancy_tenants WHERE tenant_id = $1", vec![db_tenant.as_str().into()]).await;
    let took =
        within(BOUND, "the server sees the deletion", || async { answer(&server, &db_tenant).await == "not found" })
            .await;
    eprintln!("deletion seen after {took:?}");
    within(BOUND, "the deleted tenant's sessions end", || async { sessions_of(&pg, &role).await == 0 }).await;
    // The other tenant is untouched.
    assert_eq!(answer(&server, &schema_tenant).await, "ready");
    master.close().await.expect("close");
}

#[tokio::test]
async fn postgres_lookups_are_served_from_memory() {
    let Some(pg) = PgMaster::create().await else { return };
    let dir = TempDir::new();
    let operator = pg.tenancy(&dir).await;
    let server = pg.tenancy(&dir).await;
    let per_call = pg.builder(&dir).live_registry(false).connect().await.expect("connect");
    let tenant: TenantId = unique_name("live_m").parse().expect("id");
    let unknown: TenantId = unique_name("nobody").parse().expect("id");
    let new = NewTenant::new(tenant.clone(), "M", Isolation::Schema).expect("new tenant");
    operator.create_tenant(new, &()).await.expect("create");
    live(&server, &tenant).await;
    assert_eq!(answer(&server, &unknown).await, "not found");
    assert_eq!(answer(&per_call, &tenant).await, "ready");

    // The registry table out of reach: a lookup that queried it would fail.
    let master = pg.connect().await;
    execute(&master, "ALTER TABLE tenancy_tenants RENAME TO tenancy_tenants_hidden", vec![]).await;
    assert_eq!(answer(&per_call, &tenant).await, "database error", "the control instance reads per call");
    for _ in 0..100 {
        let handle = server.tenant(&tenant).await.expect("served from memory");
        handle.ping().await.expect("the tenant's storage is still there");
        // The unknown id was read once; its negative entry answers now.
        assert_eq!(answer(&server, &unknown).await, "not found");
    }
    execute(&master, "ALTER TABLE tenancy_tenants_hidden RENAME TO tenancy_tenants", vec![]).await;
    master.close().await.expect("close");
}

#[tokio::test]
async fn postgres_lost_listener_falls_back_to_reads() {
    let Some(pg) = PgMaster::create().await else { return };
    let dir = TempDir::new();
    let operator = pg.tenancy(&dir).await;
    let server = pg.tenancy(&dir).await;
    let tenant: TenantId = unique_name("live_l").parse().expect("id");
    let new = NewTenant::new(tenant.clone(), "L", Isolation::Schema).expect("new tenant");
    operator.create_tenant(new, &()).await.expect("create");
    live(&server, &tenant).await;

    let listeners = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2";
    let values = || vec![pg.name.as_str().into(), LISTENER_APPLICATION_NAME.into()];
    assert_eq!(count(&pg.admin, listeners, values()).await, 1, "one listener: the server's");
    execute(
        &pg.admin,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2",
        values(),
    )
    .await;
    // Changes made while the listener is gone are still seen within the bound...
    operator.suspend_tenant(&tenant, None).await.expect("suspend");
    within(BOUND, "the suspension is seen without the listener", || async {
        answer(&server, &tenant).await == "suspended"
    })
    .await;
    // ...and the listener comes back, having re-read everything.
    within(Duration::from_secs(5), "the listener is back", || async {
        server.registry_is_live() && count(&pg.admin, listeners, values()).await == 1
    })
    .await;
    assert_eq!(answer(&server, &tenant).await, "suspended");
    operator.resume_tenant(&tenant).await.expect("resume");
    within(BOUND, "the resumption is seen", || async { answer(&server, &tenant).await == "ready" }).await;
}

#[tokio::test]
async fn postgres_commands_that_ask_for_no_handle_do_not_listen() {
    let Some(pg) = PgMaster::create().await else { return };
    let dir = TempDir::new();
    let tenancy = pg.tenancy(&dir).await;
    let new = NewTenant::new(unique_name("live_c"), "C", Isolation::Schema).expect("new tenant");
    tenancy.create_tenant(new, &()).await.expect("create");
    assert_eq!(tenancy.tenants().await.expect("list").len(), 1);
    let listeners = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2";
    let values = vec![pg.name.as_str().into(), LISTENER_APPLICATION_NAME.into()];
    assert_eq!(count(&pg.admin, listeners, values).await, 0);
    assert!(!tenancy.registry_is_live());
}

#[tokio::test]
async fn sqlite_another_instance_follows_suspend_resume_and_delete() {
    let dir = TempDir::new();
    let operator = dir.sqlite_builder().connect().await.expect("connect");
    let server = dir.sqlite_builder().connect().await.expect("connect");
    let db_tenant: TenantId = "live_d".parse().expect("id");
    let table_tenant: TenantId = "live_t".parse().expect("id");
    let new = NewTenant::new(db_tenant.clone(), "D", Isolation::Database)
        .expect("new tenant")
        .database(NewDatabase::create("live_d_db"));
    operator.create_tenant(new, &()).await.expect("create the database tenant");
    let new = NewTenant::new(table_tenant.clone(), "T", Isolation::Table).expect("new tenant");
    operator.create_tenant(new, &()).await.expect("create the table tenant");
    live(&server, &db_tenant).await;

    suspend_and_resume(&operator, &server, &db_tenant).await;
    suspend_and_resume(&operator, &server, &table_tenant).await;

    let master = sea_orm::Database::connect(dir.sqlite_master_url()).await.expect("connect");
    execute(&master, "DELETE FROM tenancy_tenants WHERE tenant_id = ?", vec![db_tenant.as_str().into()]).await;
    let took =
        within(BOUND, "the server sees the deletion", || async { answer(&server, &db_tenant).await == "not found" })
            .await;
    eprintln!("deletion seen after {took:?}");
    assert_eq!(answer(&server, &table_tenant).await, "ready");
    master.close().await.expect("close");
}

#[tokio::test]
async fn sqlite_lookups_are_served_from_memory() {
    let dir = TempDir::new();
    let operator = dir.sqlite_builder().connect().await.expect("connect");
    let server = dir.sqlite_builder().connect().await.expect("connect");
    let per_call = dir.sqlite_builder().live_registry(false).connect().await.expect("connect");
    let tenant: TenantId = "live_m".parse().expect("id");
    let new = NewTenant::new(tenant.clone(), "M", Isolation::Database)
        .expect("new tenant")
        .database(NewDatabase::create("live_m_db"));
    operator.create_tenant(new, &()).await.expect("create");
    live(&server, &tenant).await;
    assert_eq!(answer(&server, &"nobody".parse().expect("id")).await, "not found");

    let master = sea_orm::Database::connect(dir.sqlite_master_url()).await.expect("connect");
    execute(&master, "ALTER TABLE tenancy_tenants RENAME TO tenancy_tenants_hidden", vec![]).await;
    assert_eq!(answer(&per_call, &tenant).await, "database error", "the control instance reads per call");
    for _ in 0..100 {
        let handle = server.tenant(&tenant).await.expect("served from memory");
        handle.ping().await.expect("the tenant's file is still there");
        assert_eq!(answer(&server, &"nobody".parse().expect("id")).await, "not found");
    }
    execute(&master, "ALTER TABLE tenancy_tenants_hidden RENAME TO tenancy_tenants", vec![]).await;
    master.close().await.expect("close");
}

#[tokio::test]
async fn registry_changes_are_announced_by_the_database() {
    // The wire contract other processes rely on: a row change notifies the channel with
    // the tenant id, in the changing transaction, and not at all when it rolls back.
    let Some(pg) = PgMaster::create().await else { return };
    let dir = TempDir::new();
    let tenancy = pg.tenancy(&dir).await;
    let id = unique_name("live_n");
    let mut listener = sea_orm::sqlx::postgres::PgListener::connect(&pg.url).await.expect("listen");
    listener.listen(tenancy::live::REGISTRY_CHANNEL).await.expect("listen");
    let new = NewTenant::new(id.clone(), "N", Isolation::Schema).expect("new tenant");
    tenancy.create_tenant(new, &()).await.expect("create");
    let master = pg.connect().await;
    let txn = master.begin().await.expect("begin");
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "UPDATE tenancy_tenants SET name = 'rolled back' WHERE tenant_id = $1",
        [id.as_str().into()],
    ))
    .await
    .expect("update");
    txn.rollback().await.expect("rollback");
    execute(&master, "UPDATE tenancy_tenants SET name = 'renamed' WHERE tenant_id = $1", vec![id.as_str().into()])
        .await;
    execute(&master, "DELETE FROM tenancy_tenants WHERE tenant_id = $1", vec![id.as_str().into()]).await;
    let mut payloads = Vec::new();
    while payloads.len() < 4 {
        let notification = tokio::time::timeout(Duration::from_secs(5), listener.recv())
            .await
            .expect("a notification within 5 s")
            .expect("receive");
        payloads.push(notification.payload().to_owned());
    }
    // Insert (claim) and update (ready) of provisioning, the committed update, the delete.
    assert_eq!(payloads, [id.as_str(); 4]);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), listener.recv()).await.is_err(),
        "the rolled-back update notified nobody"
    );
    master.close().await.expect("close");
}
