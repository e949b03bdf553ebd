//! Tenant handles for schema isolation on PostgreSQL: every statement runs in a master
//! transaction whose `search_path` is the tenant's schema alone. Each handle reads and
//! writes only its own schema, never falls through to `public`, and leaves nothing on the
//! pooled connection, even when one pooled connection serves both tenants in turn.

#[allow(dead_code, reason = "each test file uses a part of the shared helpers")]
mod common;

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
use tenancy::{Isolation, NewTenant, Tenancy, TenantConnection, TenantId};
use tenancy_migrate::MigrateOnCreate;
use tenancy_tests::{PgMaster, TempDir, count, unique_name};

struct Ctx {
    pg: PgMaster,
    tenancy: Tenancy,
    /// A superuser connection to the master, with the default `search_path`.
    superuser: DatabaseConnection,
    dir: TempDir,
}

async fn ctx() -> Option<Ctx> {
    let pg = PgMaster::create().await?;
    let dir = TempDir::new();
    let tenancy = pg.tenancy(&dir).await;
    let superuser = pg.connect().await;
    Some(Ctx { pg, tenancy, superuser, dir })
}

impl Ctx {
    /// Creates a migrated schema tenant and returns its id.
    async fn schema_tenant(&self, prefix: &str) -> TenantId {
        let id: TenantId = unique_name(prefix).parse().expect("valid id");
        let new = NewTenant {
            id: id.clone(),
            name: format!("{id} Inc."),
            isolation: Isolation::Schema,
            database: None,
            migrate: true,
        };
        self.tenancy.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.expect("create schema tenant");
        id
    }

    /// Rows of `table` in the tenant's schema, as the superuser sees them.
    async fn rows_in(&self, tenant: &TenantConnection, table: &str) -> i64 {
        let schema = tenant.tenant().config.schema.as_deref().expect("schema");
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

async fn add_project<C: ConnectionTrait>(db: &C, tenant: &TenantConnection, name: &str) -> project::Model {
    project::ActiveModel {
        tenant_id: Set(tenant.id().to_string()),
        name: Set(name.to_owned()),
        created_at: Set(ChronoUtc::now()),
        ..Default::default()
    }
    .insert(db)
    .await
    .expect("insert project")
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
        let project = add_project(db, db, &name).await;
        add_task(db, &project, &format!("{name} task")).await;
    }
}

#[tokio::test]
async fn each_schema_tenant_sees_and_changes_only_its_own_schema() {
    let Some(ctx) = ctx().await else { return };
    let a = ctx.tenancy.tenant(&ctx.schema_tenant("acme").await).await.expect("schema handle");
    let b = ctx.tenancy.tenant(&ctx.schema_tenant("globex").await).await.expect("schema handle");
    assert_eq!(a.isolation(), Isolation::Schema);
    assert_eq!(a.get_database_backend(), DbBackend::Postgres);
    seed(&a, "acme").await;
    seed(&b, "globex").await;
    add_project(&b, &b, "globex-extra").await;

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
    add_project(&txn, &a, "kept").await;
    let nested = txn.begin().await.unwrap();
    add_project(&nested, &a, "dropped").await;
    assert_eq!(names(&nested).await, ["acme-only", "dropped", "kept", "renamed"]);
    nested.rollback().await.unwrap();
    assert_eq!(names(&txn).await, ["acme-only", "kept", "renamed"], "still the tenant's schema after the savepoint");
    txn.commit().await.unwrap();
    assert_eq!(ctx.rows_in(&a, "projects").await, 3);
    assert_eq!(ctx.rows_in(&b, "projects").await, 3);
    let err = project::Entity::find().stream(&b).await.err().unwrap();
    assert!(err.to_string().contains("stream inside a transaction"), "{err}");
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
async fn one_pooled_connection_serves_both_schema_tenants_in_turn() {
    let Some(ctx) = ctx().await else { return };
    let a_id = ctx.schema_tenant("acme").await;
    let b_id = ctx.schema_tenant("globex").await;
    // A second Tenancy whose master pool has a single connection: every call of either
    // handle reuses it.
    let single = Tenancy::builder(ctx.pg.url.clone())
        .secret_key_file(ctx.dir.path().join("key"))
        .max_connections(1)
        .connect()
        .await
        .expect("connect");
    let a = single.tenant(&a_id).await.unwrap();
    let b = single.tenant(&b_id).await.unwrap();
    add_project(&a, &a, "a1").await;
    add_project(&b, &b, "b1").await;
    for round in 0..3 {
        assert_eq!(names(&a).await, ["a1"], "round {round}");
        let txn = b.begin().await.unwrap();
        assert_eq!(names(&txn).await, ["b1"]);
        add_project(&txn, &b, "b-rolled-back").await;
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
    let Some(ctx) = ctx().await else { return };
    let a = ctx.tenancy.tenant(&ctx.schema_tenant("acme").await).await.unwrap();
    add_project(&a, &a, "mine").await;
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
    add_project(&a, &a, "also mine").await;
    assert_eq!(count(&ctx.superuser, "SELECT COUNT(*) FROM public.projects", vec![]).await, 1);
    assert_eq!(ctx.rows_in(&a, "projects").await, 2);
}
