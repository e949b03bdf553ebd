//! Schema tenants on shard databases: a registered server's `<master>_shard` database
//! holds their schemas, the master only their registry rows. Checked from the catalogs of
//! both servers, attacked from the tenant's own session, migrated by a fleet run, deleted,
//! and undone when the master's last step fails after the shard committed.

use example_app::Migrator;
use example_app::entities::project;
use sea_orm::prelude::ChronoUtc;
use sea_orm::{ActiveModelTrait, ConnectionTrait, Database, DatabaseConnection, EntityTrait, PaginatorTrait, Set};
use tenancy::relocation::{MoveOptions, MoveTo};
use tenancy::servers::{NewServer, ServerName, ServerState};
use tenancy::{BoxError, Error, Isolation, NewTenant, ProvisionHooks, ProvisionStep, Tenancy, TenantId};
use tenancy_migrate::MigrateOnCreate;
use tenancy_migrate::Migrators;
use tenancy_migrate::fleet::{FleetOptions, migrate_all, migrate_all_listed};
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

/// The example app's migrations, with a veto after one provisioning step or one move
/// step.
enum Veto {
    /// After this step of a creation (`MarkReady`: the shard's transaction has committed,
    /// the master's has not).
    Provision(ProvisionStep),
    /// After this step of a move.
    Move(&'static str),
}

impl ProvisionHooks for Veto {
    fn migrate<'a>(
        &'a self,
        tenancy: &'a Tenancy,
        tenant: &'a tenancy::Tenant,
        within: Option<&'a sea_orm::DatabaseTransaction>,
    ) -> tenancy::BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move { MigrateOnCreate::new(&Migrator).migrate(tenancy, tenant, within).await })
    }

    fn check_version<'a>(
        &'a self,
        tenancy: &'a Tenancy,
        tenant: &'a tenancy::Tenant,
    ) -> tenancy::BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move { MigrateOnCreate::new(&Migrator).check_version(tenancy, tenant).await })
    }

    fn after_step(&self, step: ProvisionStep) -> Result<(), BoxError> {
        match self {
            Veto::Provision(vetoed) if *vetoed == step => Err("vetoed".into()),
            _ => Ok(()),
        }
    }

    fn after_move_step(&self, step: &str) -> Result<(), BoxError> {
        match self {
            Veto::Move(vetoed) if *vetoed == step => Err(format!("vetoed after {step}").into()),
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
    let err = ctx.tenancy.create_tenant(new, &Veto::Provision(ProvisionStep::MarkReady)).await.expect_err("vetoed");
    assert!(matches!(err, Error::ProvisioningFailed { .. }), "{err:?}");
    assert!(ctx.tenancy.get_tenant(&id).await.is_err(), "no registry row");
    let shard_db = ctx.shard().await;
    assert!(!exists(&shard_db, "SELECT 1 FROM pg_namespace WHERE nspname = $1", id.as_str()).await, "schema undone");
    let roles = "SELECT COUNT(*) FROM pg_roles WHERE rolname LIKE '%' || $1";
    assert_eq!(count(&ctx.second_server().await, roles, vec![id.as_str().into()]).await, 0, "role undone");
}

#[tokio::test]
async fn a_table_tenant_cannot_be_placed_on_a_server() {
    let Some(ctx) = ctx().await else { return };
    let table: TenantId = unique_name("tbl").parse().expect("valid id");
    let new = NewTenant::new(table.clone(), "Table", Isolation::Table).expect("new").on_server(Ctx::shard2());
    let err = ctx.tenancy.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.expect_err("table on a server");
    assert!(matches!(err, Error::ServerNotPlaceable { .. }), "{err:?}");
    assert!(ctx.tenancy.get_tenant(&table).await.is_err());
}

/// Adds `n` projects (unicode, quotes, newlines) through the tenant's own handle.
async fn seed(ctx: &Ctx, id: &TenantId, n: usize) {
    let handle = ctx.tenancy.tenant(id).await.expect("a handle");
    for i in 0..n {
        add_project(&handle, id, &format!("{id} «project» {i}\n'quoted'")).await;
    }
    drop(handle);
    ctx.tenancy.reset_tenant_pool(id);
}

/// `(rows, md5)` of the tenant's projects in `relation` (a schema's `projects`, or the
/// shared table filtered by tenant), tenant column aside, read by a superuser.
async fn projects_digest(db: &DatabaseConnection, relation: &str, tenant: &TenantId) -> (i64, String) {
    let sql = format!(
        "SELECT COUNT(*), coalesce(md5(string_agg(id::text || ':' || name || ':' || created_at::text, ',' ORDER BY id)), '') \
         FROM {relation} WHERE tenant_id = $1"
    );
    let row = db
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            sql,
            [tenant.as_str().into()],
        ))
        .await
        .expect("digest")
        .expect("a row");
    (row.try_get_by_index(0).expect("count"), row.try_get_by_index(1).expect("md5"))
}

fn schema_projects(schema: &str) -> String {
    format!("\"{schema}\".projects")
}

async fn role_can_login(db: &DatabaseConnection, role: &str) -> Option<bool> {
    let row = db
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = $1",
            [role.into()],
        ))
        .await
        .expect("query");
    row.map(|row| row.try_get_by_index(0).expect("rolcanlogin"))
}

/// A schema tenant moves from the master database to a shard on another server, from the
/// shard into the master's shared tables, and from there onto the shard again: rows equal
/// byte for byte each time, a login role of its own on each server, the sources kept as
/// leftovers or dropped, and the moved tenant's own SQL reaching nothing of its old home.
#[tokio::test]
async fn a_schema_tenant_moves_between_servers_and_modes_with_its_rows() {
    let Some(ctx) = ctx().await else { return };
    let hooks = MigrateOnCreate::new(&Migrator);
    let id = ctx.schema_tenant("mv", Some(ServerName::master())).await;
    let bystander = ctx.schema_tenant("by", Some(Ctx::shard2())).await;
    seed(&ctx, &id, 30).await;
    seed(&ctx, &bystander, 3).await;
    let master = ctx.pg.connect().await;
    let shard_db = ctx.shard().await;
    let second = ctx.second_server().await;
    let before = projects_digest(&master, &schema_projects(id.as_str()), &id).await;
    let bystander_before = projects_digest(&shard_db, &schema_projects(bystander.as_str()), &bystander).await;
    assert_eq!(before.0, 30);
    let master_login =
        ctx.tenancy.get_tenant(&id).await.expect("tenant").placement().login().expect("login").user.clone();

    // master → shard2, keeping the source.
    let plan = ctx.tenancy.move_plan(&id, &MoveTo::Schema).await.expect_err("a schema tenant stays without a server");
    assert!(matches!(plan, Error::CannotRelocate { .. }), "{plan:?}");
    let moved = ctx
        .tenancy
        .move_tenant(&id, &MoveOptions::new(MoveTo::SchemaOn(Ctx::shard2())), &hooks)
        .await
        .expect("move onto the shard");
    assert_eq!(moved.tables.iter().find(|t| t.table == "projects").map(|t| t.rows), Some(30));
    let tenant = ctx.tenancy.get_tenant(&id).await.expect("tenant");
    assert_eq!(tenant.placement().shard().map(|s| s.server.as_str()), Some("shard2"));
    assert_eq!(projects_digest(&shard_db, &schema_projects(id.as_str()), &id).await, before, "rows on the shard");
    // The old schema and role are the tenant's leftovers on the master's server; the old
    // role may not log in.
    assert_eq!(projects_digest(&master, &schema_projects(id.as_str()), &id).await, before, "source kept");
    assert_eq!(role_can_login(&master, &master_login).await, Some(false));
    let new_login = tenant.placement().login().expect("login").user.clone();
    assert_eq!(role_can_login(&second, &new_login).await, Some(true), "a role of its own on shard2");
    assert_eq!(ctx.tenancy.leftovers(Some(&id)).await.expect("leftovers").len(), 2);

    // Served from the shard; a new row gets a key above the copied ones; the tenant's SQL
    // reaches neither its old schema (another server) nor its neighbour.
    let handle = ctx.tenancy.tenant(&id).await.expect("a handle");
    assert_eq!(project::Entity::find().count(&handle).await.expect("count"), 30);
    let max_before = count(&shard_db, &format!("SELECT max(id)::bigint FROM \"{id}\".projects"), vec![]).await;
    let added = add_project(&handle, &id, "after the move").await;
    assert!(i64::from(added.id) > max_before, "key {} after max {max_before}", added.id);
    for attack in [
        format!("SELECT name FROM \"{bystander}\".projects"),
        "SET ROLE postgres".to_owned(),
        format!("SELECT set_config('search_path', '\"{bystander}\"', false); SELECT name FROM projects"),
    ] {
        assert!(handle.execute_unprepared(&attack).await.is_err(), "ran `{attack}`");
        assert_eq!(project::Entity::find().count(&handle).await.expect("count"), 31, "{attack}");
    }
    drop(handle);
    ctx.tenancy.reset_tenant_pool(&id);
    ctx.tenancy.remove_leftovers(&id).await.expect("remove leftovers");
    assert!(!exists(&master, "SELECT 1 FROM pg_namespace WHERE nspname = $1", id.as_str()).await);
    assert_eq!(role_can_login(&master, &master_login).await, None, "old role dropped");

    // shard2 → the master's shared tables, dropping the source.
    let on_shard = projects_digest(&shard_db, &schema_projects(id.as_str()), &id).await;
    ctx.tenancy
        .move_tenant(&id, &MoveOptions::new(MoveTo::Table).drop_source(true), &hooks)
        .await
        .expect("move into the shared tables");
    let tenant = ctx.tenancy.get_tenant(&id).await.expect("tenant");
    assert_eq!(tenant.isolation(), Isolation::Table);
    assert_eq!(projects_digest(&master, "public.projects", &id).await, on_shard, "rows in the shared table");
    assert!(!exists(&shard_db, "SELECT 1 FROM pg_namespace WHERE nspname = $1", id.as_str()).await, "schema dropped");
    assert_eq!(role_can_login(&second, &new_login).await, None, "shard2's role dropped");
    let table_login = tenant.placement().login().expect("login").user.clone();
    assert_eq!(role_can_login(&master, &table_login).await, Some(true), "a role of its own on the master");
    let handle = ctx.tenancy.tenant(&id).await.expect("a handle");
    assert_eq!(project::Entity::find().count(&handle).await.expect("count"), 31);
    drop(handle);
    ctx.tenancy.reset_tenant_pool(&id);

    // The shared tables → shard2 again (by name), dropping the source.
    let in_table = projects_digest(&master, "public.projects", &id).await;
    let plan = ctx.tenancy.move_plan(&id, &MoveTo::SchemaOn(Ctx::shard2())).await.expect("a plan");
    assert_eq!(plan.to, Isolation::Schema);
    ctx.tenancy
        .move_tenant(&id, &MoveOptions::new(MoveTo::SchemaOn(Ctx::shard2())).drop_source(true), &hooks)
        .await
        .expect("move onto the shard again");
    assert_eq!(projects_digest(&shard_db, &schema_projects(id.as_str()), &id).await, in_table);
    assert_eq!(projects_digest(&master, "public.projects", &id).await.0, 0, "shared rows dropped");
    assert_eq!(role_can_login(&master, &table_login).await, None, "the master's role dropped");
    // Run again: it is there already.
    let again = ctx
        .tenancy
        .move_tenant(&id, &MoveOptions::new(MoveTo::SchemaOn(Ctx::shard2())), &hooks)
        .await
        .expect("nothing to move");
    assert!(again.already_there);
    assert_eq!(
        projects_digest(&shard_db, &schema_projects(bystander.as_str()), &bystander).await,
        bystander_before,
        "the bystander on the same shard is untouched"
    );
}

/// A move onto a shard that fails after the copy leaves the tenant where it was, served,
/// and nothing of the copy on the shard's server.
#[tokio::test]
async fn a_failed_move_onto_a_shard_is_undone_there() {
    let Some(ctx) = ctx().await else { return };
    let id = ctx.schema_tenant("mvfail", Some(ServerName::master())).await;
    seed(&ctx, &id, 5).await;
    let err = ctx
        .tenancy
        .move_tenant(&id, &MoveOptions::new(MoveTo::SchemaOn(Ctx::shard2())), &Veto::Move("copy"))
        .await
        .expect_err("vetoed after the copy");
    assert!(matches!(err, Error::MoveFailed { .. }), "{err:?}");
    let tenant = ctx.tenancy.get_tenant(&id).await.expect("tenant");
    assert!(tenant.placement().shard().is_none(), "still in the master database");
    assert_eq!(tenant.status(), tenancy::TenantStatus::Ready);
    let login = tenant.placement().login().expect("login").user.clone();
    assert_eq!(role_can_login(&ctx.pg.connect().await, &login).await, Some(true), "its role opened again");
    assert!(!exists(&ctx.shard().await, "SELECT 1 FROM pg_namespace WHERE nspname = $1", id.as_str()).await);
    assert_eq!(role_can_login(&ctx.second_server().await, &login).await, None, "no role left on shard2");
    let handle = ctx.tenancy.tenant(&id).await.expect("served again");
    assert_eq!(project::Entity::find().count(&handle).await.expect("count"), 5);
}

/// A shard tenant renamed: schema and role renamed on its shard's server (the password
/// kept), every row's tenant column the new id, served under the new id only.
#[tokio::test]
async fn a_shard_tenant_is_renamed_on_its_shard() {
    let Some(ctx) = ctx().await else { return };
    let id = ctx.schema_tenant("ren", Some(Ctx::shard2())).await;
    seed(&ctx, &id, 4).await;
    let old_login = ctx.tenancy.get_tenant(&id).await.expect("tenant").placement().login().expect("login").user.clone();
    let second = ctx.second_server().await;
    let verifier = "SELECT rolpassword FROM pg_authid WHERE rolname = $1";
    let password_before = strings(&second, verifier, &old_login).await;
    let new_id: TenantId = unique_name("renamed").parse().expect("valid id");
    ctx.tenancy
        .rename_tenant(id.clone(), new_id.clone(), &tenancy::renaming::RenameOptions::default())
        .await
        .expect("rename");
    let shard_db = ctx.shard().await;
    assert!(!exists(&shard_db, "SELECT 1 FROM pg_namespace WHERE nspname = $1", id.as_str()).await);
    let (rows, _) = projects_digest(&shard_db, &schema_projects(new_id.as_str()), &new_id).await;
    assert_eq!(rows, 4, "rows carry the new id");
    let tenant = ctx.tenancy.get_tenant(&new_id).await.expect("renamed");
    let new_login = tenant.placement().login().expect("login").user.clone();
    assert_eq!(role_can_login(&second, &old_login).await, None);
    assert_eq!(strings(&second, verifier, &new_login).await, password_before, "the password survives");
    assert!(ctx.tenancy.get_tenant(&id).await.is_err(), "the old id is gone");
    let handle = ctx.tenancy.tenant(&new_id).await.expect("a handle");
    assert_eq!(project::Entity::find().count(&handle).await.expect("count"), 4);
}

async fn strings(db: &DatabaseConnection, sql: &str, value: &str) -> Vec<String> {
    db.query_all_raw(sea_orm::Statement::from_sql_and_values(sea_orm::DbBackend::Postgres, sql, [value.into()]))
        .await
        .expect("query")
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).expect("text"))
        .collect()
}

/// A clone of a shard template is made on the template's server (from its catalog, in the
/// same shard), or on another server by name (migrated, then copied): the rows with the
/// new id, the template untouched.
#[tokio::test]
async fn clones_of_a_shard_template_land_on_its_server_or_the_one_named() {
    let Some(ctx) = ctx().await else { return };
    let hooks = MigrateOnCreate::new(&Migrator);
    let template = ctx.schema_tenant("tpl", Some(Ctx::shard2())).await;
    seed(&ctx, &template, 6).await;
    let shard_db = ctx.shard().await;
    let template_digest = projects_digest(&shard_db, &schema_projects(template.as_str()), &template).await;

    let near: TenantId = unique_name("near").parse().expect("valid id");
    let new = NewTenant::new(near.clone(), "Near", Isolation::Schema).expect("new").from_template(template.clone());
    ctx.tenancy.create_tenant(new, &hooks).await.expect("clone on the template's server");
    let tenant = ctx.tenancy.get_tenant(&near).await.expect("cloned");
    assert_eq!(tenant.placement().shard().map(|s| s.server.as_str()), Some("shard2"));
    let near_digest = projects_digest(&shard_db, &schema_projects(near.as_str()), &near).await;
    assert_eq!(near_digest, template_digest, "the template's rows, as the clone's");

    let far: TenantId = unique_name("far").parse().expect("valid id");
    let new = NewTenant::new(far.clone(), "Far", Isolation::Schema)
        .expect("new")
        .from_template(template.clone())
        .on_server(ServerName::master());
    ctx.tenancy.create_tenant(new, &hooks).await.expect("clone onto the master's server");
    let tenant = ctx.tenancy.get_tenant(&far).await.expect("cloned");
    assert!(tenant.placement().shard().is_none());
    let far_digest = projects_digest(&ctx.pg.connect().await, &schema_projects(far.as_str()), &far).await;
    assert_eq!(far_digest, template_digest);
    let handle = ctx.tenancy.tenant(&far).await.expect("a handle");
    assert_eq!(project::Entity::find().count(&handle).await.expect("count"), 6);
    assert_eq!(projects_digest(&shard_db, &schema_projects(template.as_str()), &template).await, template_digest);
}

/// The advisory-lock namespace of tenant migrations (`tenancy_migrate`'s, `'tena'`).
const LOCK_NAMESPACE: i32 = 0x7465_6e61;

/// A shard's server stopped while a fleet run waits on one of its tenants: that tenant
/// fails naming the server, the shard's other tenant is not attempted, the master's tenant
/// is migrated; once the server is back, `--resume` in the same process (whose shard pool
/// still holds connections from before the stop) migrates both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shard_server_down_mid_run_stops_only_its_tenants_and_resume_finishes_them() {
    use tenancy::ledger::TenantOutcome;
    let Some(mut ctx) = ctx().await else { return };
    let bare = |prefix: &str, server: ServerName| {
        let id: TenantId = unique_name(prefix).parse().expect("valid id");
        (id.clone(), NewTenant::new(id, "Bare", Isolation::Schema).expect("new tenant").on_server(server))
    };
    let mut ids = Vec::new();
    for (prefix, server) in [("om", ServerName::master()), ("os1", Ctx::shard2()), ("os2", Ctx::shard2())] {
        let (id, new) = bare(prefix, server);
        ctx.tenancy.create_tenant(new, &()).await.expect("create an unmigrated tenant");
        ids.push(id);
    }
    let (on_master, first, second) = (ids[0].clone(), ids[1].clone(), ids[2].clone());
    // A plan reads each tenant's migrations: the shard's pool keeps an idle connection,
    // which the server's stop will break.
    let planned = tenancy_migrate::fleet::plan(&ctx.tenancy, &Migrators::new(Migrator), &FleetOptions::default())
        .await
        .expect("a plan");
    assert_eq!(planned.len(), 3);
    // The first shard tenant's migration waits on this lock (in the shard database) while
    // the server stops.
    let holder = ctx.shard().await;
    holder
        .execute_unprepared(&format!("SELECT pg_advisory_lock({LOCK_NAMESPACE}, hashtext('{first}'))"))
        .await
        .expect("hold the first shard tenant's migration lock");

    let fleet = {
        let tenancy = ctx.tenancy.clone();
        tokio::spawn(async move {
            let options = FleetOptions { jobs: 2, jobs_per_server: 1, ..FleetOptions::default() };
            migrate_all_listed(&tenancy, &Migrators::new(Migrator), &options, &|_| {}).await
        })
    };
    let master = ctx.pg.connect().await;
    let migrated =
        format!("SELECT COUNT(*) FROM pg_tables WHERE schemaname = '{on_master}' AND tablename = 'projects'");
    let waiting = "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted";
    let mut ready = false;
    for _ in 0..200 {
        if count(&master, &migrated, vec![]).await == 1 && count(&holder, waiting, vec![]).await == 1 {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ready, "the master's tenant migrated and the first shard tenant waiting for its lock");

    tokio::task::block_in_place(|| ctx.server.stop());
    let (report, tenants) = fleet.await.expect("the run's task").expect("the run ends");
    let outcomes: Vec<(String, TenantOutcome)> = tenants.iter().map(|t| (t.tenant.to_string(), t.outcome)).collect();
    let expect = |id: &TenantId, outcome| (id.to_string(), outcome);
    let mut expected = vec![
        expect(&on_master, TenantOutcome::Migrated),
        expect(&first, TenantOutcome::Failed),
        expect(&second, TenantOutcome::NotAttempted),
    ];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    let mut got = outcomes.clone();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, expected, "{report:?}");
    assert_eq!(report.unreachable.iter().map(|l| l.as_str().to_owned()).collect::<Vec<_>>(), ["shard2"]);
    let detail = tenants.iter().find(|t| t.tenant == second).and_then(|t| t.detail.clone());
    assert_eq!(detail.as_deref(), Some("server shard2 unreachable"));

    tokio::task::block_in_place(|| ctx.server.start_again());
    let options = FleetOptions { resume: true, ..FleetOptions::default() };
    let (resumed, tenants) =
        migrate_all_listed(&ctx.tenancy, &Migrators::new(Migrator), &options, &|_| {}).await.expect("resume");
    let mut got: Vec<(String, TenantOutcome)> = tenants.iter().map(|t| (t.tenant.to_string(), t.outcome)).collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected = vec![expect(&first, TenantOutcome::Migrated), expect(&second, TenantOutcome::Migrated)];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, expected, "{resumed:?}");
    let shard_db = ctx.shard().await;
    for id in [&first, &second] {
        let tables = format!("SELECT COUNT(*) FROM pg_tables WHERE schemaname = '{id}' AND tablename = 'projects'");
        assert_eq!(count(&shard_db, &tables, vec![]).await, 1, "{id} migrated on the shard");
    }
}
