//! Tenant handles for table isolation on PostgreSQL: the database enforces the tenant
//! through row-level security. Each handle stamps its tenant on inserts, sees and changes
//! only its own rows whatever the query forgets, cannot write another tenant's rows, and
//! leaves nothing bound on the pooled connection; with no tenant bound, nothing is seen.

#[allow(dead_code, reason = "each test file uses a part of the shared helpers")]
mod common;

use common::project_names as names;
use example_app::Migrator;
use example_app::entities::{comment, project, task};
use futures_util::StreamExt;
use sea_orm::prelude::{ChronoUtc, Expr};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, NotSet, PaginatorTrait,
    QueryFilter, Set, Statement, TransactionError, TransactionTrait, Unchanged,
};
use tenancy::{Error, Isolation, NewTenant, Tenancy, TenantConnection, TenantId};
use tenancy_migrate::MigrateOnCreate;
use tenancy_tests::{PgMaster, TempDir, column_strings, count, unique_name};

struct Ctx {
    _pg: PgMaster,
    tenancy: Tenancy,
    /// A superuser connection to the master: row-level security does not apply to it.
    superuser: DatabaseConnection,
    _dir: TempDir,
}

async fn ctx() -> Option<Ctx> {
    let pg = PgMaster::create().await?;
    let dir = TempDir::new();
    let tenancy = pg.tenancy(&dir).await;
    let superuser = pg.connect().await;
    Some(Ctx { _pg: pg, tenancy, superuser, _dir: dir })
}

impl Ctx {
    /// Creates a migrated table tenant and returns its handle.
    async fn table_tenant(&self, prefix: &str) -> TenantConnection {
        let id: TenantId = unique_name(prefix).parse().expect("valid id");
        let new = NewTenant {
            id: id.clone(),
            name: format!("{id} Inc."),
            isolation: Isolation::Table,
            database: None,
            migrate: true,
        };
        self.tenancy.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.expect("create table tenant");
        self.tenancy.tenant(&id).await.expect("table handle")
    }

    /// Rows of `table` the superuser sees for `tenant`.
    async fn rows_of(&self, table: &str, tenant: &TenantConnection) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE tenant_id = $1");
        count(&self.superuser, &sql, vec![tenant.id().as_str().into()]).await
    }

    /// Project names the superuser sees for `tenant`, sorted.
    async fn project_names_of(&self, tenant: &TenantConnection) -> Vec<String> {
        let sql = "SELECT name FROM projects WHERE tenant_id = $1 ORDER BY name";
        column_strings(&self.superuser, sql, vec![tenant.id().as_str().into()]).await
    }
}

/// Inserts a project without setting its tenant: the column default stamps it.
async fn add_project<C: ConnectionTrait>(db: &C, name: &str) -> project::Model {
    project::ActiveModel {
        tenant_id: NotSet,
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
        tenant_id: NotSet,
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

async fn add_comment(db: &TenantConnection, task: &task::Model, body: &str) -> comment::Model {
    comment::ActiveModel {
        tenant_id: NotSet,
        task_id: Set(task.id),
        body: Set(body.to_owned()),
        created_at: Set(ChronoUtc::now()),
        ..Default::default()
    }
    .insert(db)
    .await
    .expect("insert comment")
}

/// Seeds `db` with two projects (`shared`, `<prefix>-only`), a task on each and a
/// comment on each task.
async fn seed(db: &TenantConnection, prefix: &str) -> Vec<project::Model> {
    let mut projects = Vec::new();
    for name in ["shared".to_owned(), format!("{prefix}-only")] {
        let project = add_project(db, &name).await;
        assert_eq!(project.tenant_id, db.id().as_str(), "the default stamps the tenant");
        let task = add_task(db, &project, &format!("{name} task")).await;
        assert_eq!(task.tenant_id, db.id().as_str());
        let comment = add_comment(db, &task, "looks good").await;
        assert_eq!(comment.tenant_id, db.id().as_str());
        projects.push(project);
    }
    projects
}

#[tokio::test]
async fn each_table_tenant_sees_and_changes_only_its_own_rows() {
    let Some(ctx) = ctx().await else { return };
    let a = ctx.table_tenant("acme").await;
    let b = ctx.table_tenant("globex").await;
    assert_eq!(a.isolation(), Isolation::Table);
    assert_eq!(a.get_database_backend(), DbBackend::Postgres);
    let a_projects = seed(&a, "acme").await;
    seed(&b, "globex").await;

    // Stored with the right tenant, as the superuser sees it.
    for table in ["projects", "tasks", "comments"] {
        assert_eq!(ctx.rows_of(table, &a).await, 2, "{table}");
        assert_eq!(ctx.rows_of(table, &b).await, 2, "{table}");
    }

    // Plain finds, a filter that forgets the tenant, counts.
    assert_eq!(names(&a).await, ["acme-only", "shared"]);
    assert_eq!(names(&b).await, ["globex-only", "shared"]);
    let forgetful = project::Entity::find().filter(project::Column::Name.eq("shared"));
    assert_eq!(forgetful.clone().all(&a).await.unwrap().len(), 1);
    assert_eq!(forgetful.all(&b).await.unwrap()[0].tenant_id, b.id().as_str());
    assert_eq!(project::Entity::find().count(&a).await.unwrap(), 2);
    assert_eq!(task::Entity::find().count(&b).await.unwrap(), 2);
    assert_eq!(comment::Entity::find().count(&a).await.unwrap(), 2);
    let other = project::Entity::find_by_id(a_projects[0].id).one(&b).await.unwrap();
    assert!(other.is_none(), "b cannot read a's project by id");

    // Joins: related rows of the tenant only.
    let with_tasks = project::Entity::find().find_with_related(task::Entity).all(&a).await.unwrap();
    assert_eq!(with_tasks.len(), 2);
    for (project, tasks) in &with_tasks {
        assert_eq!(project.tenant_id, a.id().as_str());
        assert_eq!(tasks.len(), 1);
        assert!(tasks.iter().all(|t| t.tenant_id == a.id().as_str()));
    }

    // Raw SQL through the handle.
    let rows = a.query_all_raw(Statement::from_string(DbBackend::Postgres, "SELECT * FROM projects")).await.unwrap();
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(row.try_get::<String>("", "tenant_id").unwrap(), a.id().as_str());
    }

    // Bulk updates and deletes with no tenant filter touch the tenant's rows only.
    let updated = project::Entity::update_many()
        .col_expr(project::Column::Name, Expr::value("renamed"))
        .filter(project::Column::Name.eq("shared"))
        .exec(&a)
        .await
        .unwrap();
    assert_eq!(updated.rows_affected, 1);
    assert_eq!(ctx.project_names_of(&b).await, ["globex-only", "shared"]);
    assert_eq!(ctx.project_names_of(&a).await, ["acme-only", "renamed"]);
    let deleted = comment::Entity::delete_many().exec(&a).await.unwrap();
    assert_eq!(deleted.rows_affected, 2);
    assert_eq!(ctx.rows_of("comments", &a).await, 0);
    assert_eq!(ctx.rows_of("comments", &b).await, 2, "b's comments untouched");

    // Writing another tenant's rows is refused by the policy's WITH CHECK.
    let foreign = project::ActiveModel {
        tenant_id: Set(b.id().to_string()),
        name: Set("smuggled".to_owned()),
        created_at: Set(ChronoUtc::now()),
        ..Default::default()
    }
    .insert(&a)
    .await
    .unwrap_err();
    assert!(foreign.to_string().contains("row-level security"), "{foreign}");
    let moved = project::ActiveModel {
        id: Unchanged(a_projects[1].id),
        tenant_id: Set(b.id().to_string()),
        ..Default::default()
    }
    .update(&a)
    .await
    .unwrap_err();
    assert!(moved.to_string().contains("row-level security"), "{moved}");
    let moved_many = project::Entity::update_many()
        .col_expr(project::Column::TenantId, Expr::value(b.id().as_str()))
        .exec(&a)
        .await
        .unwrap_err();
    assert!(moved_many.to_string().contains("row-level security"), "{moved_many}");
    assert_eq!(ctx.rows_of("projects", &a).await, 2);
    assert_eq!(ctx.rows_of("projects", &b).await, 2);
    assert_eq!(
        column_strings(&ctx.superuser, "SELECT name FROM projects WHERE name = 'smuggled'", vec![]).await.len(),
        0
    );
}

#[tokio::test]
async fn table_transactions_are_bound_and_nothing_stays_on_the_pool() {
    let Some(ctx) = ctx().await else { return };
    let a = ctx.table_tenant("acme").await;
    let b = ctx.table_tenant("globex").await;
    seed(&b, "globex").await;

    // A transaction with a savepoint rolled back.
    let txn = a.begin().await.unwrap();
    add_project(&txn, "kept").await;
    let nested = txn.begin().await.unwrap();
    add_project(&nested, "dropped").await;
    assert_eq!(names(&nested).await, ["dropped", "kept"]);
    nested.rollback().await.unwrap();
    assert_eq!(names(&txn).await, ["kept"], "only the tenant's rows, inside the transaction");
    txn.commit().await.unwrap();
    assert_eq!(ctx.project_names_of(&a).await, ["kept"]);
    assert_eq!(ctx.rows_of("projects", &b).await, 2);

    // The closure form commits on success and rolls back on failure.
    a.transaction::<_, _, sea_orm::DbErr>(|txn| Box::pin(async move { Ok(add_project(txn, "closure").await) }))
        .await
        .unwrap();
    let failed = a
        .transaction::<_, (), String>(|txn| {
            Box::pin(async move {
                add_project(txn, "undone").await;
                Err("changed my mind".to_owned())
            })
        })
        .await
        .unwrap_err();
    assert!(matches!(failed, TransactionError::Transaction(_)), "{failed}");
    assert_eq!(ctx.project_names_of(&a).await, ["closure", "kept"]);

    // Streams: refused on the handle, bound inside its transaction.
    let err = project::Entity::find().stream(&a).await.err().unwrap();
    assert!(err.to_string().contains("stream inside a transaction"), "{err}");
    let txn = b.begin().await.unwrap();
    let streamed: Vec<_> = project::Entity::find().stream(&txn).await.unwrap().collect().await;
    assert_eq!(streamed.len(), 2);
    assert!(streamed.iter().all(|p| p.as_ref().unwrap().tenant_id == b.id().as_str()));
    txn.commit().await.unwrap();

    // Nothing of the binding survives on the master pool's connections.
    for _ in 0..20 {
        let row = ctx
            .tenancy
            .master()
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT current_user::text, COALESCE(current_setting('tenancy.tenant_id', true), '')",
            ))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.try_get_by_index::<String>(0).unwrap(), "postgres");
        assert_eq!(row.try_get_by_index::<String>(1).unwrap(), "");
    }

    // Fail closed: as the application role with no tenant bound, nothing is visible.
    let app_role = ctx.tenancy.app_role().await.unwrap().to_owned();
    let txn = ctx.tenancy.master().begin().await.unwrap();
    txn.execute_unprepared(&format!("SET LOCAL ROLE {}", tenancy::sql::quote_ident(&app_role))).await.unwrap();
    for table in ["projects", "tasks", "comments"] {
        let row = txn
            .query_one_raw(Statement::from_string(DbBackend::Postgres, format!("SELECT COUNT(*) FROM {table}")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.try_get_by_index::<i64>(0).unwrap(), 0, "{table}");
    }
    txn.rollback().await.unwrap();
}

#[tokio::test]
async fn row_security_is_forced_and_the_app_role_is_unprivileged() {
    let Some(ctx) = ctx().await else { return };
    let _a = ctx.table_tenant("acme").await;

    // Idempotent: a second (and third) run changes nothing and fails on nothing.
    for _ in 0..2 {
        let report = tenancy::enable_row_security(ctx.tenancy.master()).await.expect("enable row security");
        let tables: Vec<&str> = report.secured.iter().map(|(table, _)| table.as_str()).collect();
        assert_eq!(tables, ["comments", "projects", "tasks", "tenant_users"]);
        assert!(report.secured.iter().all(|(_, column)| column == "tenant_id"));
        assert!(report.missing.is_empty(), "{:?}", report.missing);
    }

    let app_role = ctx.tenancy.app_role().await.unwrap().to_owned();
    assert!(app_role.starts_with(tenancy::rls::APP_ROLE_PREFIX), "{app_role}");
    let role = "SELECT COUNT(*) FROM pg_roles WHERE rolname = $1 \
                AND NOT rolsuper AND NOT rolbypassrls AND NOT rolcanlogin";
    assert_eq!(count(&ctx.superuser, role, vec![app_role.clone().into()]).await, 1);
    let owned = "SELECT COUNT(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE r.rolname = $1";
    assert_eq!(count(&ctx.superuser, owned, vec![app_role.into()]).await, 0, "the application role owns nothing");
    for table in ["projects", "tasks", "comments"] {
        let forced = "SELECT COUNT(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                      WHERE n.nspname = 'public' AND c.relname = $1 AND c.relrowsecurity AND c.relforcerowsecurity";
        assert_eq!(count(&ctx.superuser, forced, vec![table.into()]).await, 1, "{table}");
        let policy = "SELECT COUNT(*) FROM pg_policies WHERE schemaname = 'public' AND tablename = $1 \
                      AND policyname = 'tenancy_tenant_isolation'";
        assert_eq!(count(&ctx.superuser, policy, vec![table.into()]).await, 1, "{table}");
    }
}

#[tokio::test]
async fn table_handles_on_a_sqlite_master_are_not_supported_yet() {
    let dir = TempDir::new();
    let tenancy =
        Tenancy::builder(dir.sqlite_master_url()).secret_key_file(dir.path().join("key")).connect().await.unwrap();
    let id: TenantId = unique_name("tably").parse().unwrap();
    let new =
        NewTenant { id: id.clone(), name: "T".into(), isolation: Isolation::Table, database: None, migrate: false };
    tenancy.create_tenant(new, &()).await.unwrap();
    let err = tenancy.tenant(&id).await.unwrap_err();
    assert!(matches!(&err, Error::HandleNotYetSupported { isolation: Isolation::Table, .. }), "{err}");
    let report = tenancy::enable_row_security(tenancy.master()).await.unwrap();
    assert!(report.secured.is_empty());
}
