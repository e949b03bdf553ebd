//! Tenant handles for schema isolation on PostgreSQL, with both bindings: the tenant's own
//! pool logged in as its login role (whose `search_path` is the schema and which may use
//! no other), and shared master transactions whose `search_path` is the tenant's schema
//! alone. Each handle reads and writes only its own schema, never falls through to
//! `public`, and leaves nothing on a pooled connection, even when one pooled connection
//! serves both tenants in turn.

use crate::common;

use common::project_names as names;
use example_app::Migrator;
use example_app::entities::{project, task};
use futures_util::StreamExt;
use sea_orm::prelude::{ChronoUtc, Expr};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, PaginatorTrait,
    QueryFilter, Set, Statement, TransactionTrait,
};
use tenancy::sql::quote_ident;
use tenancy::{Isolation, NewTenant, Tenancy, TenantBinding, TenantConnection, TenantId};
use tenancy_migrate::MigrateOnCreate;
use tenancy_test_support::{PgMaster, TempDir, count, unique_name};

struct Ctx {
    pg: PgMaster,
    tenancy: Tenancy,
    /// A superuser connection to the master, with the default `search_path`.
    superuser: DatabaseConnection,
    dir: TempDir,
}

async fn ctx(binding: TenantBinding) -> Option<Ctx> {
    let pg = PgMaster::create().await?;
    let dir = TempDir::new();
    let tenancy = pg.builder(&dir).tenant_binding(binding).connect().await.expect("connect the test master");
    let superuser = pg.connect().await;
    Some(Ctx { pg, tenancy, superuser, dir })
}

impl Ctx {
    /// Creates a migrated schema tenant and returns its id.
    async fn schema_tenant(&self, prefix: &str) -> TenantId {
        let id: TenantId = unique_name(prefix).parse().expect("valid id");
        let new = NewTenant::new(id.clone(), format!("{id} Inc."), Isolation::Schema)
            .expect("a valid new tenant")
            .migrate(true);
        self.tenancy.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.expect("create schema tenant");
        id
    }

    /// Rows of `table` in the tenant's schema, as the superuser sees them.
    async fn rows_in(&self, tenant: &TenantConnection, table: &str) -> i64 {
        let schema = tenant.tenant().placement().schema().expect("schema");
        let sql = format!("SELECT COUNT(*) FROM {}.{}", quote_ident(schema), quote_ident(table));
        count(&self.superuser, &sql, vec![]).await
    }

    /// Whether `public.projects` exists.
    async fn public_projects_exists(&self) -> bool {
        let sql = "SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = 'projects'";
        count(&self.superuser, sql, vec![]).await > 0
    }

    /// The default `search_path` of a fresh connection.
    async fn default_search_path(&self) -> String {
        search_path(&self.superuser).await
    }
}

async fn search_path(db: &DatabaseConnection) -> String {
    let sql = "SELECT current_setting('search_path')";
    let row = db.query_one_raw(Statement::from_string(DbBackend::Postgres, sql)).await.unwrap().unwrap();
    row.try_get_by_index::<String>(0).unwrap()
}

async fn add_task(db: &TenantConnection, project: &project::Model, title: &str) -> task::Model {
    task::ActiveModel {
        tenant_id: Set(db.id().to_string()),
        project_id: Set(project.id),
        title: Set(title.to_owned()),
        done: Set(false),
        created_at: Set(ChronoUtc::now()),
        ..Default::default()
    }
    .insert(db)
    .await
    .expect("insert task")
}

/// Seeds two projects (`shared`, `<prefix>-only`) with a task each.
async fn seed(db: &TenantConnection, prefix: &str) {
    for name in ["shared".to_owned(), format!("{prefix}-only")] {
        let project = common::add_project(db, Some(db.id().as_str()), &name).await;
        add_task(db, &project, &format!("{name} task")).await;
    }
}

#[tokio::test]
async fn each_schema_tenant_sees_and_changes_only_its_own_schema_through_its_own_pool() {
    leak_probe(TenantBinding::TenantPools).await;
}

#[tokio::test]
async fn each_schema_tenant_sees_and_changes_only_its_own_schema_through_shared_transactions() {
    leak_probe(TenantBinding::SharedTransactions).await;
}

async fn leak_probe(binding: TenantBinding) {
    let Some(ctx) = ctx(binding).await else { return };
    let a = ctx.tenancy.tenant(&ctx.schema_tenant("acme").await).await.expect("schema handle");
    let b = ctx.tenancy.tenant(&ctx.schema_tenant("globex").await).await.expect("schema handle");
    assert_eq!(a.isolation(), Isolation::Schema);
    assert_eq!(a.get_database_backend(), DbBackend::Postgres);
    seed(&a, "acme").await;
    seed(&b, "globex").await;
    common::add_project(&b, Some(b.id().as_str()), "globex-extra").await;

    // Stored in each tenant's schema, nothing in public.
    assert_eq!(ctx.rows_in(&a, "projects").await, 2);
    assert_eq!(ctx.rows_in(&b, "projects").await, 3);
    assert_eq!(ctx.rows_in(&a, "tasks").await, 2);
    assert!(!ctx.public_projects_exists().await, "nothing falls through to public");

    // Finds, filters, counts, joins, raw SQL.
    assert_eq!(names(&a).await, ["acme-only", "shared"]);
    assert_eq!(names(&b).await, ["globex-extra", "globex-only", "shared"]);
    let shared = project::Entity::find().filter(project::Column::Name.eq("shared"));
    assert_eq!(shared.clone().all(&a).await.unwrap()[0].tenant_id, a.id().as_str());
    assert_eq!(shared.all(&b).await.unwrap()[0].tenant_id, b.id().as_str());
    assert_eq!(project::Entity::find().count(&a).await.unwrap(), 2);
    assert_eq!(project::Entity::find().count(&b).await.unwrap(), 3);
    let with_tasks = project::Entity::find().find_with_related(task::Entity).all(&a).await.unwrap();
    assert_eq!(with_tasks.len(), 2);
    for (project, tasks) in &with_tasks {
        assert_eq!(project.tenant_id, a.id().as_str());
        assert_eq!(tasks.len(), 1);
        assert!(tasks.iter().all(|t| t.tenant_id == a.id().as_str()));
    }
    let rows = b.query_all_raw(Statement::from_string(DbBackend::Postgres, "SELECT * FROM projects")).await.unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|row| row.try_get::<String>("", "tenant_id").unwrap() == b.id().as_str()));

    // Bulk updates and deletes with no filter touch the tenant's schema only.
    let updated = project::Entity::update_many()
        .col_expr(project::Column::Name, Expr::value("renamed"))
        .filter(project::Column::Name.eq("shared"))
        .exec(&a)
        .await
        .unwrap();
    assert_eq!(updated.rows_affected, 1);
    assert_eq!(names(&a).await, ["acme-only", "renamed"]);
    assert_eq!(names(&b).await, ["globex-extra", "globex-only", "shared"]);
    let deleted = task::Entity::delete_many().exec(&b).await.unwrap();
    assert_eq!(deleted.rows_affected, 2);
    assert_eq!(ctx.rows_in(&b, "tasks").await, 0);
    assert_eq!(ctx.rows_in(&a, "tasks").await, 2, "a's tasks untouched");

    // Transactions with a savepoint rolled back, and streams inside them.
    let txn = a.begin().await.unwrap();
    common::add_project(&txn, Some(a.id().as_str()), "kept").await;
    let nested = txn.begin().await.unwrap();
    common::add_project(&nested, Some(a.id().as_str()), "dropped").await;
    assert_eq!(names(&nested).await, ["acme-only", "dropped", "kept", "renamed"]);
    nested.rollback().await.unwrap();
    assert_eq!(names(&txn).await, ["acme-only", "kept", "renamed"], "still the tenant's schema after the savepoint");
    txn.commit().await.unwrap();
    assert_eq!(ctx.rows_in(&a, "projects").await, 3);
    assert_eq!(ctx.rows_in(&b, "projects").await, 3);
    if binding == TenantBinding::SharedTransactions {
        let err = project::Entity::find().stream(&b).await.err().unwrap();
        assert!(err.to_string().contains("stream inside a transaction"), "{err}");
    } else {
        let streamed: Vec<_> = project::Entity::find().stream(&b).await.unwrap().collect().await;
        assert_eq!(streamed.len(), 3);
        assert!(streamed.iter().all(|p| p.as_ref().unwrap().tenant_id == b.id().as_str()));
    }
    let txn = b.begin().await.unwrap();
    let streamed: Vec<_> = project::Entity::find().stream(&txn).await.unwrap().collect().await;
    assert_eq!(streamed.len(), 3);
    assert!(streamed.iter().all(|p| p.as_ref().unwrap().tenant_id == b.id().as_str()));
    txn.commit().await.unwrap();

    // Nothing of the binding survives on the master pool's connections.
    let default = ctx.default_search_path().await;
    assert!(!default.contains(a.id().as_str()), "{default}");
    for _ in 0..20 {
        assert_eq!(search_path(ctx.tenancy.master()).await, default);
    }
    assert!(!ctx.public_projects_exists().await);
}

#[tokio::test]
async fn one_pooled_master_connection_serves_both_schema_tenants_in_turn() {
    one_connection_in_turn(TenantBinding::SharedTransactions).await;
}

#[tokio::test]
async fn a_budget_of_one_connection_serves_both_schema_tenants_in_turn() {
    one_connection_in_turn(TenantBinding::TenantPools).await;
}

async fn one_connection_in_turn(binding: TenantBinding) {
    let Some(ctx) = ctx(binding).await else { return };
    let a_id = ctx.schema_tenant("acme").await;
    let b_id = ctx.schema_tenant("globex").await;
    // A second Tenancy with a single connection for tenants: the master pool's for
    // shared transactions, the whole tenant budget for tenant pools (so each tenant's
    // pool is evicted and reopened for the other).
    let single = ctx
        .pg
        .builder(&ctx.dir)
        .tenant_binding(binding)
        .max_connections(1)
        .tenant_connection_budget(1)
        .connections_per_tenant_pool(1)
        .connect()
        .await
        .expect("connect");
    let a = single.tenant(&a_id).await.unwrap();
    let b = single.tenant(&b_id).await.unwrap();
    common::add_project(&a, Some(a.id().as_str()), "a1").await;
    common::add_project(&b, Some(b.id().as_str()), "b1").await;
    for round in 0..3 {
        assert_eq!(names(&a).await, ["a1"], "round {round}");
        let txn = b.begin().await.unwrap();
        assert_eq!(names(&txn).await, ["b1"]);
        common::add_project(&txn, Some(b.id().as_str()), "b-rolled-back").await;
        txn.rollback().await.unwrap();
        assert_eq!(project::Entity::find().count(&a).await.unwrap(), 1);
        let txn = a.begin().await.unwrap();
        assert_eq!(names(&txn).await, ["a1"]);
        txn.commit().await.unwrap();
        assert_eq!(names(&b).await, ["b1"]);
        assert_eq!(search_path(single.master()).await, ctx.default_search_path().await);
    }
    assert_eq!(ctx.rows_in(&a, "projects").await, 1);
    assert_eq!(ctx.rows_in(&b, "projects").await, 1);
    assert!(!ctx.public_projects_exists().await);
}

#[tokio::test]
async fn schema_handles_never_see_the_public_tables() {
    for binding in [TenantBinding::TenantPools, TenantBinding::SharedTransactions] {
        public_tables_unseen(binding).await;
    }
}

async fn public_tables_unseen(binding: TenantBinding) {
    let Some(ctx) = ctx(binding).await else { return };
    let a = ctx.tenancy.tenant(&ctx.schema_tenant("acme").await).await.unwrap();
    common::add_project(&a, Some(a.id().as_str()), "mine").await;
    // Shared tables in public, as table isolation keeps them, with another tenant's row.
    ctx.superuser
        .execute_unprepared(
            "CREATE TABLE public.projects (id serial PRIMARY KEY, tenant_id text NOT NULL, name text NOT NULL, \
             created_at timestamptz NOT NULL DEFAULT now()); \
             INSERT INTO public.projects (tenant_id, name) VALUES ('someone_else', 'theirs')",
        )
        .await
        .unwrap();
    assert_eq!(names(&a).await, ["mine"]);
    let rows = a.query_all_raw(Statement::from_string(DbBackend::Postgres, "SELECT * FROM projects")).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(project::Entity::find().count(&a).await.unwrap(), 1);
    common::add_project(&a, Some(a.id().as_str()), "also mine").await;
    assert_eq!(count(&ctx.superuser, "SELECT COUNT(*) FROM public.projects", vec![]).await, 1);
    assert_eq!(ctx.rows_in(&a, "projects").await, 2);
}

#[tokio::test]
async fn a_schema_tenants_login_role_reaches_its_own_schema_only() {
    let Some(ctx) = ctx(TenantBinding::TenantPools).await else { return };
    let a = ctx.tenancy.tenant(&ctx.schema_tenant("acme").await).await.unwrap();
    let b = ctx.tenancy.tenant(&ctx.schema_tenant("globex").await).await.unwrap();
    common::add_project(&b, Some(b.id().as_str()), "theirs").await;
    let login = a.tenant().placement().login().cloned().expect("a login role");
    let prefix = tenancy::rls::tenant_role_prefix(&ctx.superuser).await.unwrap();
    assert_eq!(login.user, format!("{prefix}{}", a.id()));
    // Its password is stored encrypted only.
    let plain = ctx.tenancy.secret_key().unwrap().0.decrypt(&login.password, a.id().as_str()).unwrap();
    let stored = "SELECT config::text FROM tenancy_tenants WHERE tenant_id = $1";
    let stored = tenancy_test_support::column_strings(&ctx.superuser, stored, vec![a.id().as_str().into()]).await;
    assert!(stored[0].contains(&login.user) && !stored[0].contains(plain.expose()), "{}", stored[0]);

    // The role: no powers around the isolation, its schema as search_path.
    let attributes = "SELECT COUNT(*) FROM pg_roles WHERE rolname = $1 AND rolcanlogin \
                      AND NOT rolsuper AND NOT rolbypassrls AND NOT rolcreaterole AND NOT rolcreatedb";
    assert_eq!(count(&ctx.superuser, attributes, vec![login.user.clone().into()]).await, 1);
    let owns = "SELECT COUNT(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE r.rolname = $1";
    assert_eq!(count(&ctx.superuser, owns, vec![login.user.clone().into()]).await, 0, "owns nothing");
    let whoami = a.query_one_raw(Statement::from_string(DbBackend::Postgres, "SELECT current_user::text")).await;
    assert_eq!(whoami.unwrap().unwrap().try_get_by_index::<String>(0).unwrap(), login.user);
    assert_eq!(search_path(&ctx.tenancy.master().clone()).await, ctx.default_search_path().await);

    // Even a schema-qualified name or a changed search_path cannot reach b's schema.
    let b_schema = quote_ident(b.tenant().placement().schema().unwrap());
    let sql = format!("SELECT COUNT(*) FROM {b_schema}.projects");
    let err = a.query_one_raw(Statement::from_string(DbBackend::Postgres, sql)).await.unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    let txn = a.begin().await.unwrap();
    txn.execute_unprepared(&format!("SET LOCAL search_path = {b_schema}")).await.unwrap();
    // A schema the role may not use is skipped by name lookup: nothing found.
    let err = project::Entity::find().all(&txn).await.unwrap_err();
    assert!(err.to_string().contains("relation \"projects\" does not exist"), "{err}");
    txn.rollback().await.unwrap();
    assert_eq!(ctx.rows_in(&b, "projects").await, 1);
}

/// A fleet migration half done: `a` has a column `b` does not. The same statement text
/// runs for both in turn over one connection budget, before and after `a`'s change, and
/// each gets its own table's shape: never "cached plan must not change result type", never
/// the other tenant's plan.
async fn tables_of_different_shapes(binding: TenantBinding) {
    let Some(ctx) = ctx(binding).await else { return };
    let a_id = ctx.schema_tenant("acme").await;
    let b_id = ctx.schema_tenant("globex").await;
    let single = ctx
        .pg
        .builder(&ctx.dir)
        .tenant_binding(binding)
        .max_connections(1)
        .tenant_connection_budget(2)
        .connections_per_tenant_pool(1)
        .connect()
        .await
        .expect("connect");
    let a = single.tenant(&a_id).await.unwrap();
    let b = single.tenant(&b_id).await.unwrap();
    common::add_project(&a, Some(a.id().as_str()), "a1").await;
    common::add_project(&b, Some(b.id().as_str()), "b1").await;
    let select_all = || Statement::from_string(DbBackend::Postgres, "SELECT * FROM projects");
    let columns = |rows: &[sea_orm::QueryResult]| rows[0].column_names().join(",");
    let before = "id,tenant_id,name,created_at";
    // Prepared (and cached, where statements are cached) before the change.
    for _ in 0..3 {
        assert_eq!(columns(&a.query_all_raw(select_all()).await.unwrap()), before);
        assert_eq!(columns(&b.query_all_raw(select_all()).await.unwrap()), before);
    }
    // `a` is migrated, `b` not yet.
    let schema = quote_ident(a.tenant().placement().schema().unwrap());
    ctx.superuser
        .execute_unprepared(&format!("ALTER TABLE {schema}.projects ADD COLUMN priority integer NOT NULL DEFAULT 3"))
        .await
        .unwrap();
    for round in 0..5 {
        let rows = a.query_all_raw(select_all()).await.unwrap_or_else(|e| panic!("round {round}, a: {e}"));
        assert_eq!(columns(&rows), format!("{before},priority"));
        assert_eq!(rows[0].try_get::<String>("", "name").unwrap(), "a1");
        assert_eq!(rows[0].try_get::<i32>("", "priority").unwrap(), 3);
        let rows = b.query_all_raw(select_all()).await.unwrap_or_else(|e| panic!("round {round}, b: {e}"));
        assert_eq!(columns(&rows), before);
        assert_eq!(rows[0].try_get::<String>("", "name").unwrap(), "b1");
        // sea-orm's own statements name their columns and work for both shapes.
        assert_eq!(names(&a).await, ["a1"]);
        assert_eq!(names(&b).await, ["b1"]);
    }
}

#[tokio::test]
async fn tables_of_different_shapes_never_share_a_plan_on_tenant_pools() {
    tables_of_different_shapes(TenantBinding::TenantPools).await;
}

#[tokio::test]
async fn tables_of_different_shapes_never_share_a_plan_on_shared_transactions() {
    tables_of_different_shapes(TenantBinding::SharedTransactions).await;
}
