//! Tenant handles for table isolation on PostgreSQL: the database enforces the tenant
//! through row-level security. Each handle stamps its tenant on inserts, sees and changes
//! only its own rows whatever the query forgets, cannot write another tenant's rows, and
//! leaves nothing bound on the pooled connection; with no tenant bound, nothing is seen.
//! Both bindings are probed: the tenant's own pool (logged in as its login role, which
//! the policies recognise) and shared master transactions (`set_config(..., true)`).

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
use tenancy::{Isolation, NewTenant, Tenancy, TenantBinding, TenantConnection, TenantId};
use tenancy_migrate::MigrateOnCreate;
use tenancy_test_support::{PgMaster, TempDir, column_strings, count, unique_name};

struct Ctx {
    _pg: PgMaster,
    tenancy: Tenancy,
    /// A superuser connection to the master: row-level security does not apply to it.
    superuser: DatabaseConnection,
    _dir: TempDir,
}

async fn ctx(binding: TenantBinding) -> Option<Ctx> {
    let pg = PgMaster::create().await?;
    let dir = TempDir::new();
    let tenancy = pg.builder(&dir).tenant_binding(binding).connect().await.expect("connect the test master");
    let superuser = pg.connect().await;
    Some(Ctx { _pg: pg, tenancy, superuser, _dir: dir })
}

impl Ctx {
    /// Creates a migrated table tenant and returns its handle.
    async fn table_tenant(&self, prefix: &str) -> TenantConnection {
        let id: TenantId = unique_name(prefix).parse().expect("valid id");
        let new = NewTenant::new(id.clone(), format!("{id} Inc."), Isolation::Table)
            .expect("a valid new tenant")
            .migrate(true);
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
        let project = common::add_project(db, None, &name).await;
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
async fn each_table_tenant_sees_and_changes_only_its_own_rows_through_its_own_pool() {
    leak_probe(TenantBinding::TenantPools).await;
}

#[tokio::test]
async fn each_table_tenant_sees_and_changes_only_its_own_rows_through_shared_transactions() {
    leak_probe(TenantBinding::SharedTransactions).await;
}

async fn leak_probe(binding: TenantBinding) {
    let Some(ctx) = ctx(binding).await else { return };
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
async fn table_transactions_through_its_own_pool_are_bound_and_nothing_stays_on_the_master_pool() {
    transactions(TenantBinding::TenantPools).await;
}

#[tokio::test]
async fn table_transactions_through_shared_transactions_are_bound_and_nothing_stays_on_the_pool() {
    transactions(TenantBinding::SharedTransactions).await;
}

async fn transactions(binding: TenantBinding) {
    let Some(ctx) = ctx(binding).await else { return };
    let a = ctx.table_tenant("acme").await;
    let b = ctx.table_tenant("globex").await;
    seed(&b, "globex").await;

    // A transaction with a savepoint rolled back.
    let txn = a.begin().await.unwrap();
    common::add_project(&txn, None, "kept").await;
    let nested = txn.begin().await.unwrap();
    common::add_project(&nested, None, "dropped").await;
    assert_eq!(names(&nested).await, ["dropped", "kept"]);
    nested.rollback().await.unwrap();
    assert_eq!(names(&txn).await, ["kept"], "only the tenant's rows, inside the transaction");
    txn.commit().await.unwrap();
    assert_eq!(ctx.project_names_of(&a).await, ["kept"]);
    assert_eq!(ctx.rows_of("projects", &b).await, 2);

    // The closure form commits on success and rolls back on failure.
    a.transaction::<_, _, sea_orm::DbErr>(|txn| {
        Box::pin(async move { Ok(common::add_project(txn, None, "closure").await) })
    })
    .await
    .unwrap();
    let failed = a
        .transaction::<_, (), String>(|txn| {
            Box::pin(async move {
                common::add_project(txn, None, "undone").await;
                Err("changed my mind".to_owned())
            })
        })
        .await
        .unwrap_err();
    assert!(matches!(failed, TransactionError::Transaction(_)), "{failed}");
    assert_eq!(ctx.project_names_of(&a).await, ["closure", "kept"]);

    // Streams: bound inside its transaction; on the handle itself, refused for shared
    // transactions (the stream would borrow a transaction) and bound on the tenant's pool.
    if binding == TenantBinding::SharedTransactions {
        let err = project::Entity::find().stream(&a).await.err().unwrap();
        assert!(err.to_string().contains("stream inside a transaction"), "{err}");
    } else {
        let streamed: Vec<_> = project::Entity::find().stream(&b).await.unwrap().collect().await;
        assert_eq!(streamed.len(), 2);
        assert!(streamed.iter().all(|p| p.as_ref().unwrap().tenant_id == b.id().as_str()));
    }
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
    let Some(ctx) = ctx(TenantBinding::TenantPools).await else { return };
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
async fn table_tenants_on_a_sqlite_master_see_only_their_rows() {
    let dir = TempDir::new();
    let tenancy = dir.sqlite_builder().connect().await.unwrap();
    let handles =
        tenancy_test_support::table_tenants(&tenancy, &MigrateOnCreate::new(&Migrator), true, &["acme", "globex"])
            .await;
    let (a, b) = (&handles[0], &handles[1]);
    assert_eq!(a.get_database_backend(), DbBackend::Sqlite);
    let a_projects = seed(a, "acme").await;
    seed(b, "globex").await;
    common::add_project(b, None, "globex-extra").await;
    let report = tenancy::enable_row_security(tenancy.master()).await.unwrap();
    assert!(report.secured.is_empty(), "SQLite has no row-level security");

    // What the master holds: every row stamped with its tenant.
    let master = tenancy.master();
    let owners = |table: &str| {
        let sql = format!("SELECT tenant_id FROM {table} ORDER BY tenant_id");
        async move { column_strings(master, &sql, vec![]).await }
    };
    assert_eq!(owners("projects").await.iter().filter(|t| **t == a.id().as_str()).count(), 2);
    assert_eq!(owners("projects").await.iter().filter(|t| **t == b.id().as_str()).count(), 3);

    // Finds, filters, counts, joins, raw SQL with the filter forgotten, streams.
    assert_eq!(names(a).await, ["acme-only", "shared"]);
    assert_eq!(names(b).await, ["globex-extra", "globex-only", "shared"]);
    assert_eq!(project::Entity::find().count(a).await.unwrap(), 2);
    let shared = project::Entity::find().filter(project::Column::Name.eq("shared")).all(b).await.unwrap();
    assert_eq!(shared.len(), 1);
    assert_eq!(shared[0].tenant_id, b.id().as_str());
    let with_tasks = project::Entity::find().find_with_related(task::Entity).all(a).await.unwrap();
    assert_eq!(with_tasks.len(), 2);
    assert!(with_tasks.iter().all(|(p, tasks)| p.tenant_id == a.id().as_str() && tasks.len() == 1));
    let rows = b.query_all_raw(Statement::from_string(DbBackend::Sqlite, "SELECT * FROM projects")).await.unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|row| row.try_get::<String>("", "tenant_id").unwrap() == b.id().as_str()));
    let by_other_id = project::Entity::find_by_id(a_projects[0].id).one(b).await.unwrap();
    assert!(by_other_id.is_none(), "a's project id finds nothing for b");
    let streamed: Vec<_> = project::Entity::find().stream(a).await.unwrap().collect().await;
    assert_eq!(streamed.len(), 2);

    // Writes stay with the tenant; moving a row to another tenant is refused.
    let updated = project::Entity::update_many().col_expr(project::Column::Name, Expr::value("renamed")).exec(a).await;
    assert_eq!(updated.unwrap().rows_affected, 2);
    assert_eq!(names(b).await, ["globex-extra", "globex-only", "shared"]);
    let deleted = comment::Entity::delete_many().exec(b).await.unwrap();
    assert_eq!(deleted.rows_affected, 2);
    assert_eq!(comment::Entity::find().count(a).await.unwrap(), 2);
    a.execute_unprepared("DELETE FROM tasks WHERE title LIKE '%task'").await.unwrap();
    assert_eq!(task::Entity::find().count(a).await.unwrap(), 0);
    assert_eq!(task::Entity::find().count(b).await.unwrap(), 2);
    let moved = project::Entity::update_many()
        .col_expr(project::Column::TenantId, Expr::value(b.id().as_str()))
        .exec(a)
        .await
        .unwrap_err();
    assert!(moved.to_string().contains("refusing"), "{moved}");
    let ddl = a.execute_unprepared("DROP TABLE projects").await.unwrap_err();
    assert!(ddl.to_string().contains("refusing DROP TABLE"), "{ddl}");
    // Only declared tables are reachable: not the registry (tests/attack_sqlite.rs has more).
    let registry = a.query_all_raw(Statement::from_string(DbBackend::Sqlite, "SELECT * FROM tenancy_tenants")).await;
    assert!(registry.unwrap_err().to_string().contains("tenancy registry"));

    // Transactions and savepoints are scoped alike.
    let txn = a.begin().await.unwrap();
    common::add_project(&txn, None, "kept").await;
    let nested = txn.begin().await.unwrap();
    common::add_project(&nested, None, "dropped").await;
    assert_eq!(names(&nested).await, ["dropped", "kept", "renamed", "renamed"]);
    nested.rollback().await.unwrap();
    assert_eq!(project::Entity::find().count(&txn).await.unwrap(), 3);
    txn.commit().await.unwrap();
    assert_eq!(names(b).await, ["globex-extra", "globex-only", "shared"]);
    assert_eq!(owners("projects").await.len(), 6);
}

#[tokio::test]
async fn a_table_tenants_login_role_is_unprivileged_and_cannot_rebind_itself() {
    let Some(ctx) = ctx(TenantBinding::TenantPools).await else { return };
    let a = ctx.table_tenant("acme").await;
    let b = ctx.table_tenant("globex").await;
    seed(&a, "acme").await;
    seed(&b, "globex").await;
    let login = a.tenant().placement().login().cloned().expect("a login role");

    // No superuser, no BYPASSRLS, owns nothing; its privileges come from the app role.
    let attributes = "SELECT COUNT(*) FROM pg_roles WHERE rolname = $1 AND rolcanlogin \
                      AND NOT rolsuper AND NOT rolbypassrls AND NOT rolcreaterole AND NOT rolcreatedb";
    assert_eq!(count(&ctx.superuser, attributes, vec![login.user.clone().into()]).await, 1);
    let owns = "SELECT COUNT(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE r.rolname = $1";
    assert_eq!(count(&ctx.superuser, owns, vec![login.user.clone().into()]).await, 0);
    let app_role = ctx.tenancy.app_role().await.unwrap().to_owned();
    let member = "SELECT COUNT(*) WHERE pg_has_role($1, $2, 'USAGE')";
    assert_eq!(count(&ctx.superuser, member, vec![login.user.clone().into(), app_role.into()]).await, 1);
    let whoami = a.query_one_raw(Statement::from_string(DbBackend::Postgres, "SELECT current_user::text")).await;
    assert_eq!(whoami.unwrap().unwrap().try_get_by_index::<String>(0).unwrap(), login.user);

    // The tenant comes from the role name: setting `tenancy.tenant_id` (for the session,
    // even) or switching role to another tenant's does not reach b's rows.
    a.execute_unprepared(&format!("SET tenancy.tenant_id = '{}'", b.id())).await.unwrap();
    assert_eq!(names(&a).await, ["acme-only", "shared"]);
    a.execute_unprepared("RESET tenancy.tenant_id").await.unwrap();
    let b_role = b.tenant().placement().login().cloned().unwrap().user;
    let err = a.execute_unprepared(&format!("SET ROLE {}", tenancy::sql::quote_ident(&b_role))).await.unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    assert_eq!(names(&b).await, ["globex-only", "shared"]);
}

/// One connection for every tenant (the master pool's for shared transactions, the
/// whole tenant budget for tenant pools): the two tenants take turns on it, with a
/// rolled-back transaction and a rolled-back savepoint between them.
async fn one_connection_in_turn(binding: TenantBinding) {
    let Some(ctx) = ctx(binding).await else { return };
    let a_id = ctx.table_tenant("acme").await.id().clone();
    let b_id = ctx.table_tenant("globex").await.id().clone();
    let single = ctx
        ._pg
        .builder(&ctx._dir)
        .tenant_binding(binding)
        .max_connections(1)
        .tenant_connection_budget(1)
        .connections_per_tenant_pool(1)
        .connect()
        .await
        .expect("connect");
    let a = single.tenant(&a_id).await.unwrap();
    let b = single.tenant(&b_id).await.unwrap();
    common::add_project(&a, None, "a1").await;
    common::add_project(&b, None, "b1").await;
    for round in 0..3 {
        assert_eq!(names(&a).await, ["a1"], "round {round}");
        let txn = b.begin().await.unwrap();
        common::add_project(&txn, None, "b-rolled-back").await;
        assert_eq!(names(&txn).await, ["b-rolled-back", "b1"]);
        txn.rollback().await.unwrap();
        assert_eq!(project::Entity::find().count(&a).await.unwrap(), 1);
        let txn = a.begin().await.unwrap();
        let savepoint = txn.begin().await.unwrap();
        common::add_project(&savepoint, None, "a-savepoint").await;
        savepoint.rollback().await.unwrap();
        assert_eq!(names(&txn).await, ["a1"]);
        txn.commit().await.unwrap();
        assert_eq!(names(&b).await, ["b1"]);
    }
    assert_eq!(ctx.project_names_of(&a).await, ["a1"]);
    assert_eq!(ctx.project_names_of(&b).await, ["b1"]);
}

#[tokio::test]
async fn one_pooled_master_connection_serves_both_table_tenants_in_turn() {
    one_connection_in_turn(TenantBinding::SharedTransactions).await;
}

#[tokio::test]
async fn a_budget_of_one_connection_serves_both_table_tenants_in_turn() {
    one_connection_in_turn(TenantBinding::TenantPools).await;
}
