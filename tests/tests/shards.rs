//! Schema tenants on shard databases: a registered server's `<master>_shard` database
//! holds their schemas, the master only their registry rows. Checked from the catalogs of
//! both servers, attacked from the tenant's own session, migrated by a fleet run, deleted,
//! and undone when the master's last step fails after the shard committed.

use example_app::Migrator;
use example_app::entities::project;
use sea_orm::prelude::ChronoUtc;
use sea_orm::{ActiveModelTrait, ConnectionTrait, Database, DatabaseConnection, EntityTrait, PaginatorTrait, Set};
use tenancy::servers::{NewServer, ServerName, ServerState};
use tenancy::{BoxError, Error, Isolation, NewTenant, ProvisionHooks, ProvisionStep, Tenancy, TenantId};
use tenancy_migrate::MigrateOnCreate;
use tenancy_migrate::Migrators;
use tenancy_migrate::fleet::{FleetOptions, migrate_all};
use tenancy_test_support::{PgMaster, PgServer, TempDir, count, exists, unique_name};

struct Ctx {
    // Dropped in this order: the tenancy's pools before the servers go away.
    tenancy: Tenancy,
    pg: PgMaster,
    server: PgServer,
    _dir: TempDir,
}

async fn ctx() -> Option<Ctx> {
    let server = PgServer::start()?;
    let pg = PgMaster::create().await?;
    let dir = TempDir::new();
    let tenancy = pg.tenancy(&dir).await;
    tenancy
        .add_server(NewServer::new("shard2", "127.0.0.1", server.port, "postgres").expect("a valid server"))
        .await
        .expect("add the second server");
    Some(Ctx { tenancy, pg, server, _dir: dir })
}

impl Ctx {
    fn shard2() -> ServerName {
        "shard2".parse().expect("a valid name")
    }

    async fn schema_tenant(&self, prefix: &str, server: Option<ServerName>) -> TenantId {
        let id: TenantId = unique_name(prefix).parse().expect("valid id");
        let mut new = NewTenant::new(id.clone(), "Shard Inc.", Isolation::Schema).expect("new tenant").migrate(true);
        if let Some(server) = server {
            new = new.on_server(server);
        }
        self.tenancy.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.expect("create schema tenant");
        id
    }

    /// A superuser connection to the shard database on the second server.
    async fn shard(&self) -> DatabaseConnection {
        let name = tenancy::ShardDatabase::name_for(&self.pg.name);
        Database::connect(self.server.url(&name)).await.expect("connect to the shard database")
    }

    async fn second_server(&self) -> DatabaseConnection {
        Database::connect(self.server.admin_url()).await.expect("connect to the second server")
    }
}

async fn add_project(db: &impl ConnectionTrait, id: &TenantId, name: &str) -> project::Model {
    project::ActiveModel {
        tenant_id: Set(id.to_string()),
        name: Set(name.to_owned()),
        created_at: Set(ChronoUtc::now()),
        ..Default::default()
    }
    .insert(db)
    .await
    .expect("insert a project")
}

#[tokio::test]
async fn a_schema_tenant_on_a_server_lives_in_its_shard_database() {
    let Some(ctx) = ctx().await else { return };
    let id = ctx.schema_tenant("shard_a", Some(Ctx::shard2())).await;
    let tenant = ctx.tenancy.get_tenant(&id).await.expect("registered");
    let shard = tenant.placement().shard().expect("on a shard").clone();
    assert_eq!(shard.server, "shard2");
    assert_eq!(shard.port, ctx.server.port);
    assert_eq!(shard.database, tenancy::ShardDatabase::name_for(&ctx.pg.name));

    // The schema and its tables are in the shard; the master has no such schema.
    let shard_db = ctx.shard().await;
    let in_shard = "SELECT COUNT(*) FROM pg_tables WHERE schemaname = $1 AND tablename = 'projects'";
    assert_eq!(count(&shard_db, in_shard, vec![id.as_str().into()]).await, 1);
    let master = ctx.pg.connect().await;
    assert!(!exists(&master, "SELECT 1 FROM pg_namespace WHERE nspname = $1", id.as_str()).await);
    // The login role is on the second server only.
    let login = tenant.placement().login().expect("a login role").user.clone();
    let second = ctx.second_server().await;
    assert!(exists(&second, "SELECT 1 FROM pg_roles WHERE rolname = $1", &login).await);
    assert!(!ctx.pg.admin_exists("SELECT 1 FROM pg_roles WHERE rolname = $1", &login).await);

    // Written through the handle, read by the superuser in the shard's schema.
    let handle = ctx.tenancy.tenant(&id).await.expect("a handle");
    add_project(&handle, &id, "on the shard").await;
    assert_eq!(project::Entity::find().count(&handle).await.expect("count"), 1);
    let rows = format!("SELECT COUNT(*) FROM \"{id}\".projects WHERE name = 'on the shard'");
    assert_eq!(count(&shard_db, &rows, vec![]).await, 1);
    drop(handle);
}

#[tokio::test]
async fn a_shard_tenant_cannot_reach_its_neighbour_on_the_same_shard() {
    let Some(ctx) = ctx().await else { return };
    let (a, b) = (
        ctx.schema_tenant("shard_x", Some(Ctx::shard2())).await,
        ctx.schema_tenant("shard_y", Some(Ctx::shard2())).await,
    );
    let b_handle = ctx.tenancy.tenant(&b).await.expect("b");
    add_project(&b_handle, &b, "b's secret").await;
    let a_handle = ctx.tenancy.tenant(&a).await.expect("a");
    // Every statement is a's own SQL in its own session (its pool has one budget).
    let attacks = [
        format!("SELECT name FROM \"{b}\".projects"),
        format!("SELECT set_config('search_path', '\"{b}\"', false); SELECT name FROM projects"),
        "SET ROLE postgres".to_owned(),
        "CREATE TEMP TABLE stolen (x int)".to_owned(),
        format!("DO $$ BEGIN EXECUTE 'SELECT count(*) FROM \"{b}\".projects'; END $$"),
        format!("CREATE VIEW peek AS SELECT * FROM \"{b}\".projects"),
        "CREATE SCHEMA mine".to_owned(),
    ];
    for attack in &attacks {
        let result = a_handle.execute_unprepared(attack).await;
        assert!(result.is_err(), "tenant {a} ran `{attack}`");
        // The next statement on the same connection still sees only a's rows.
        assert_eq!(project::Entity::find().count(&a_handle).await.expect("count after attack"), 0, "{attack}");
    }
    let rows = format!("SELECT COUNT(*) FROM \"{b}\".projects");
    assert_eq!(count(&ctx.shard().await, &rows, vec![]).await, 1, "b's row untouched");
    drop((a_handle, b_handle));
}

#[tokio::test]
async fn the_policy_spreads_schema_tenants_by_weight_and_skips_a_draining_server() {
    let Some(ctx) = ctx().await else { return };
    // master 100, shard2 100: alternate, ties to the master first.
    let mut placed = Vec::new();
    for _ in 0..4 {
        let id = ctx.schema_tenant("spread", None).await;
        let tenant = ctx.tenancy.get_tenant(&id).await.expect("registered");
        placed.push(tenant.placement().shard().map(|shard| shard.server.clone()));
    }
    assert_eq!(placed.iter().filter(|server| server.is_none()).count(), 2, "{placed:?}");
    assert_eq!(placed.iter().filter(|server| server.as_deref() == Some("shard2")).count(), 2, "{placed:?}");

    ctx.tenancy.set_server_state(&Ctx::shard2(), ServerState::Draining).await.expect("drain");
    for _ in 0..2 {
        let id = ctx.schema_tenant("drained", None).await;
        assert!(ctx.tenancy.get_tenant(&id).await.expect("registered").placement().shard().is_none());
    }
    let id: TenantId = unique_name("refused").parse().expect("valid id");
    let new = NewTenant::new(id.clone(), "Refused", Isolation::Schema).expect("new").on_server(Ctx::shard2());
    let err = ctx.tenancy.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.expect_err("draining");
    assert!(matches!(err, Error::ServerNotAccepting { .. }), "{err:?}");
    assert!(ctx.tenancy.get_tenant(&id).await.is_err(), "no registry row");
}

#[tokio::test]
async fn a_fleet_run_migrates_shard_tenants_and_deleting_one_removes_it_from_the_shard() {
    let Some(ctx) = ctx().await else { return };
    let on_shard = ctx.schema_tenant("fleet_s", Some(Ctx::shard2())).await;
    let on_master = ctx.schema_tenant("fleet_m", Some(ServerName::master())).await;
    let shard_db = ctx.shard().await;
    // Forget the last migration in the shard's schema: the fleet run applies it again.
    let forget = format!(
        "DELETE FROM \"{on_shard}\".seaql_migrations WHERE version = (SELECT max(version) FROM \"{on_shard}\".seaql_migrations)"
    );
    shard_db.execute_unprepared(&forget).await.expect("forget a migration");
    let before = format!("SELECT COUNT(*) FROM \"{on_shard}\".seaql_migrations");
    let applied = count(&shard_db, &before, vec![]).await;
    let report = migrate_all(&ctx.tenancy, &Migrators::new(Migrator), &FleetOptions::default(), &|_| {})
        .await
        .expect("fleet run");
    assert!(report.succeeded(), "{report:?}");
    assert_eq!(count(&shard_db, &before, vec![]).await, applied + 1);
    let _ = on_master;

    let login =
        ctx.tenancy.get_tenant(&on_shard).await.expect("registered").placement().login().expect("login").user.clone();
    ctx.tenancy.delete_tenant(&on_shard, &tenancy::deletion::DeleteOptions::default()).await.expect("delete");
    assert!(!exists(&shard_db, "SELECT 1 FROM pg_namespace WHERE nspname = $1", on_shard.as_str()).await);
    assert!(!exists(&ctx.second_server().await, "SELECT 1 FROM pg_roles WHERE rolname = $1", &login).await);
}

/// Vetoes the last step: the shard's transaction has committed, the master's has not.
struct VetoReady;

impl ProvisionHooks for VetoReady {
    fn migrate<'a>(
        &'a self,
        tenancy: &'a Tenancy,
        tenant: &'a tenancy::Tenant,
        within: Option<&'a sea_orm::DatabaseTransaction>,
    ) -> tenancy::BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move { MigrateOnCreate::new(&Migrator).migrate(tenancy, tenant, within).await })
    }

    fn after_step(&self, step: ProvisionStep) -> Result<(), BoxError> {
        match step {
            ProvisionStep::MarkReady => Err("vetoed".into()),
            _ => Ok(()),
        }
    }
}

#[tokio::test]
async fn a_failure_after_the_shard_committed_is_undone_on_the_shard() {
    let Some(ctx) = ctx().await else { return };
    let id: TenantId = unique_name("veto").parse().expect("valid id");
    let new =
        NewTenant::new(id.clone(), "Veto", Isolation::Schema).expect("new").migrate(true).on_server(Ctx::shard2());
    let err = ctx.tenancy.create_tenant(new, &VetoReady).await.expect_err("vetoed");
    assert!(matches!(err, Error::ProvisioningFailed { .. }), "{err:?}");
    assert!(ctx.tenancy.get_tenant(&id).await.is_err(), "no registry row");
    let shard_db = ctx.shard().await;
    assert!(!exists(&shard_db, "SELECT 1 FROM pg_namespace WHERE nspname = $1", id.as_str()).await, "schema undone");
    let roles = "SELECT COUNT(*) FROM pg_roles WHERE rolname LIKE '%' || $1";
    assert_eq!(count(&ctx.second_server().await, roles, vec![id.as_str().into()]).await, 0, "role undone");
}

#[tokio::test]
async fn what_shards_do_not_support_yet_is_refused_with_nothing_changed() {
    let Some(ctx) = ctx().await else { return };
    let id = ctx.schema_tenant("refuse", Some(Ctx::shard2())).await;
    let to = tenancy::relocation::MoveTo::Table;
    let err = ctx.tenancy.move_plan(&id, &to).await.expect_err("a shard tenant does not move yet");
    assert!(matches!(err, Error::ShardNotSupported { .. }), "{err:?}");
    let table: TenantId = unique_name("tbl").parse().expect("valid id");
    let new = NewTenant::new(table.clone(), "Table", Isolation::Table).expect("new").on_server(Ctx::shard2());
    let err = ctx.tenancy.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.expect_err("table on a server");
    assert!(matches!(err, Error::ServerNotPlaceable { .. }), "{err:?}");
    assert!(ctx.tenancy.get_tenant(&table).await.is_err());
}
