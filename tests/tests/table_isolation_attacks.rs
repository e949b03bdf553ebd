//! Table isolation on PostgreSQL under attack from the tenant's own SQL, on a connection
//! budget of one so that whatever a statement leaves on the pooled connection is what the
//! next statement (the tenant's own, through sea-orm) runs with:
//!
//! 1. the tenant's login role cannot rebind itself to another tenant (`SET ROLE` to the
//!    application role, `set_config(..., false)` in a `SELECT` or a `DO` block, `SET
//!    SESSION AUTHORIZATION`, another tenant's role);
//! 2. views over scoped tables, created by a migration and granted to `PUBLIC`, show the
//!    reader its own rows only, and materialized views over them are refused;
//! 3. foreign keys between scoped tables include the tenant column, so a tenant can neither
//!    point at another tenant's row nor learn that it exists, and no cascade crosses tenants;
//!
//! and (4) the catalog audit finds nothing after migrating table and schema tenants with an
//! "outside app" migration (views, a view over a view, plain foreign keys), and finds what
//! an operator breaks by hand.
//!
//! Every attack asserts on the rows seen and on the database state read as a superuser.
//! Classes 2 and 3 are enforced by the database itself, so they are also checked through
//! shared master transactions (`TenantBinding::SharedTransactions`, one master
//! connection); class 1 is about the tenant's own login role, which only the default
//! binding uses (the shared binding's trust in its setting is documented with it).

use crate::common;

use common::project_names as names;
use example_app::entities::{project, task};
use sea_orm::prelude::ChronoUtc;
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, NotSet, Set, SqlErr,
    Statement,
};
use sea_orm_migration::{MigrationName, MigrationTrait, MigratorTrait, SchemaManager};
use tenancy::sql::{quote_ident, quote_literal};
use tenancy::{Isolation, NewTenant, Tenancy, TenantConnection, TenantId};
use tenancy_migrate::MigrateOnCreate;
use tenancy_test_support::{PgMaster, TempDir, column_strings, count, unique_name};

/// Two scoped tables of the "outside app", with plain foreign keys the row-security step
/// must rewrite: `labels.board_id -> boards.id` (cascading, deferrable; `boards` has no
/// unique key on `(tenant_id, id)` yet) and `labels.project_id -> projects.id` (set null).
mod board {
    use sea_orm::entity::prelude::*;

    #[tenancy::tenant_scoped]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "boards")]
    pub(crate) struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub tenant_id: String,
        pub name: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

mod label {
    use sea_orm::entity::prelude::*;

    #[tenancy::tenant_scoped]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "labels")]
    pub(crate) struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub tenant_id: String,
        pub name: String,
        pub board_id: i32,
        pub project_id: Option<i32>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The outside app's own migration, as a user writes it: plain foreign keys, a reporting
/// view, a view over that view and a materialized view, all granted to `PUBLIC`.
struct OutsideMigration;

impl MigrationName for OutsideMigration {
    fn name(&self) -> &str {
        "m20260201_000001_outside_app"
    }
}

const POSTGRES_OUTSIDE: &[&str] = &[
    "CREATE TABLE boards (id serial PRIMARY KEY, tenant_id varchar NOT NULL, name varchar NOT NULL)",
    "CREATE TABLE labels (id serial PRIMARY KEY, tenant_id varchar NOT NULL, name varchar NOT NULL, \
     board_id integer NOT NULL REFERENCES boards (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED, \
     project_id integer REFERENCES projects (id) ON DELETE SET NULL)",
    "CREATE VIEW project_overview AS SELECT p.tenant_id, p.name, \
     (SELECT count(*) FROM tasks t WHERE t.project_id = p.id) AS tasks FROM projects p",
    "CREATE VIEW project_overview_names AS SELECT tenant_id, name FROM project_overview",
    "CREATE MATERIALIZED VIEW project_totals AS SELECT tenant_id, count(*) AS projects FROM projects GROUP BY tenant_id",
    "GRANT SELECT ON project_overview, project_overview_names, project_totals TO PUBLIC",
];

const SQLITE_OUTSIDE: &[&str] = &[
    "CREATE TABLE boards (id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, name TEXT NOT NULL)",
    "CREATE TABLE labels (id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, name TEXT NOT NULL, \
     board_id INTEGER NOT NULL REFERENCES boards (id) ON DELETE CASCADE, \
     project_id INTEGER REFERENCES projects (id) ON DELETE SET NULL)",
];

// The signature sea-orm-migration's trait declares (an elided lifetime in a path).
#[allow(elided_lifetimes_in_paths, reason = "async_trait signatures must match sea-orm-migration's trait")]
#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for OutsideMigration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let statements = match db.get_database_backend() {
            DbBackend::Sqlite => SQLITE_OUTSIDE,
            _ => POSTGRES_OUTSIDE,
        };
        for sql in statements {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }
}

/// The example app's tenant migrations followed by the outside app's.
struct OutsideMigrator;

#[sea_orm_migration::async_trait::async_trait]
impl MigratorTrait for OutsideMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut migrations = example_app::Migrator::migrations();
        migrations.push(Box::new(OutsideMigration));
        migrations
    }
}

struct Ctx {
    _pg: PgMaster,
    /// Creates tenants (default pools).
    tenancy: Tenancy,
    /// The handles under attack: one connection for all tenant pools together.
    single: Tenancy,
    /// A superuser connection to the master: row-level security does not apply to it.
    superuser: DatabaseConnection,
    _dir: TempDir,
}

async fn ctx() -> Option<Ctx> {
    let pg = PgMaster::create().await?;
    let dir = TempDir::new();
    let tenancy = pg.tenancy(&dir).await;
    let single = pg
        .builder(&dir)
        .tenant_connection_budget(1)
        .connections_per_tenant_pool(1)
        .connect()
        .await
        .expect("connect with a budget of one");
    let superuser = pg.connect().await;
    Some(Ctx { _pg: pg, tenancy, single, superuser, _dir: dir })
}

impl Ctx {
    /// Creates a migrated tenant (the outside app's migrator) and returns its handle on the
    /// budget of one.
    async fn tenant(&self, prefix: &str, isolation: Isolation) -> TenantConnection {
        let id: TenantId = unique_name(prefix).parse().expect("valid id");
        let new = NewTenant::new(id.clone(), id.to_string(), isolation).expect("a valid new tenant").migrate(true);
        self.tenancy.create_tenant(new, &MigrateOnCreate::new(&OutsideMigrator)).await.expect("create tenant");
        self.single.tenant(&id).await.expect("handle")
    }

    /// Everything of `tenant` in the shared tables, as the superuser sees it.
    async fn state_of(&self, tenant: &TenantConnection) -> Vec<String> {
        let sql = "SELECT 'project ' || id || ' ' || name FROM projects WHERE tenant_id = $1 \
                   UNION ALL SELECT 'task ' || id || ' ' || project_id || ' ' || title FROM tasks WHERE tenant_id = $1 \
                   UNION ALL SELECT 'board ' || id || ' ' || name FROM boards WHERE tenant_id = $1 \
                   UNION ALL SELECT 'label ' || id || ' ' || board_id || ' ' || coalesce(project_id::text, '-') \
                     FROM labels WHERE tenant_id = $1 \
                   ORDER BY 1";
        column_strings(&self.superuser, sql, vec![tenant.id().as_str().into()]).await
    }

    /// A `Tenancy` binding tenants in shared master transactions, on one master connection.
    async fn shared(&self) -> Tenancy {
        self._pg
            .builder(&self._dir)
            .tenant_binding(tenancy::TenantBinding::SharedTransactions)
            .max_connections(1)
            .connect()
            .await
            .expect("connect with shared transactions")
    }

    async fn app_role(&self) -> String {
        self.tenancy.app_role().await.expect("app role").to_owned()
    }
}

async fn add_task<C: ConnectionTrait>(db: &C, project_id: i32, title: &str) -> Result<task::Model, DbErr> {
    task::ActiveModel {
        tenant_id: NotSet,
        project_id: Set(project_id),
        title: Set(title.to_owned()),
        done: Set(false),
        created_at: Set(ChronoUtc::now()),
        ..Default::default()
    }
    .insert(db)
    .await
}

async fn add_board<C: ConnectionTrait>(db: &C, name: &str) -> board::Model {
    board::ActiveModel { tenant_id: NotSet, name: Set(name.to_owned()), ..Default::default() }
        .insert(db)
        .await
        .expect("insert board")
}

async fn add_label<C: ConnectionTrait>(db: &C, board_id: i32, project_id: Option<i32>) -> Result<label::Model, DbErr> {
    label::ActiveModel {
        tenant_id: NotSet,
        name: Set("label".to_owned()),
        board_id: Set(board_id),
        project_id: Set(project_id),
        ..Default::default()
    }
    .insert(db)
    .await
}

/// Seeds a tenant with a project, a task on it, a board and a label on both.
async fn seed(db: &TenantConnection, prefix: &str) -> (project::Model, board::Model) {
    let project = common::add_project(db, None, &format!("{prefix}-project")).await;
    add_task(db, project.id, &format!("{prefix}-task")).await.expect("insert task");
    let board = add_board(db, &format!("{prefix}-board")).await;
    add_label(db, board.id, Some(project.id)).await.expect("insert label");
    (project, board)
}

/// One integer from `sql` run through `db`.
async fn int<C: ConnectionTrait>(db: &C, sql: &str) -> i64 {
    let row = db.query_one_raw(Statement::from_string(DbBackend::Postgres, sql)).await.expect(sql).expect("a row");
    row.try_get_by_index::<i64>(0).expect("an integer")
}

/// Reads, updates, deletes and inserts aimed at `other`'s rows through `db`, the handle of
/// `own`, after whatever rebinding attempt the caller made on its only connection: none
/// reaches `other`, and the next sea-orm statement on the connection still sees `own`'s
/// rows alone.
async fn aim_at_other(ctx: &Ctx, own: &TenantConnection, other: &TenantConnection, how: &str) {
    let other_before = ctx.state_of(other).await;
    let o = quote_literal(other.id().as_str());
    for table in ["projects", "tasks", "boards", "labels"] {
        let seen = int(own, &format!("SELECT count(*) FROM {table} WHERE tenant_id = {o}")).await;
        assert_eq!(seen, 0, "{how}: other tenant's {table} seen");
        let all =
            int(own, &format!("SELECT count(*) FROM {table} WHERE tenant_id <> {}", quote_literal(own.id().as_str())))
                .await;
        assert_eq!(all, 0, "{how}: foreign rows of {table} seen");
    }
    let updated = own.execute_unprepared(&format!("UPDATE projects SET name = 'pwned' WHERE tenant_id = {o}")).await;
    assert_eq!(updated.map(|r| r.rows_affected()).unwrap_or(0), 0, "{how}: update reached the other tenant");
    let deleted = own.execute_unprepared(&format!("DELETE FROM tasks WHERE tenant_id = {o}")).await;
    assert_eq!(deleted.map(|r| r.rows_affected()).unwrap_or(0), 0, "{how}: delete reached the other tenant");
    let deleted = own.execute_unprepared(&format!("DELETE FROM labels WHERE tenant_id = {o}")).await;
    assert_eq!(deleted.map(|r| r.rows_affected()).unwrap_or(0), 0, "{how}: delete reached the other tenant");
    let smuggled =
        own.execute_unprepared(&format!("INSERT INTO projects (tenant_id, name) VALUES ({o}, 'smuggled')")).await;
    assert!(smuggled.is_err(), "{how}: a row was inserted for the other tenant");
    // A row without a tenant is stamped with the connection's own tenant, not the setting.
    own.execute_unprepared("INSERT INTO projects (name) VALUES ('stamped')").await.expect("insert own row");
    let stamped = column_strings(&ctx.superuser, "SELECT tenant_id FROM projects WHERE name = 'stamped'", vec![]).await;
    assert_eq!(stamped, [own.id().as_str()], "{how}: the default stamped another tenant");
    ctx.superuser.execute_unprepared("DELETE FROM projects WHERE name = 'stamped'").await.unwrap();

    assert_eq!(ctx.state_of(other).await, other_before, "{how}: the other tenant's rows changed");
    let smuggled = "SELECT count(*) FROM projects WHERE name IN ('pwned', 'smuggled')";
    assert_eq!(count(&ctx.superuser, smuggled, vec![]).await, 0, "{how}");
    // The next statement on the same connection, through sea-orm.
    assert_eq!(names(own).await, [format!("{}-project", short(own))], "{how}: next statement");
}

/// The prefix a test gave a tenant (`acme`, `globex`): its id up to the first `_`.
fn short(db: &TenantConnection) -> &str {
    db.id().as_str().split('_').next().unwrap_or_default()
}

/// Puts the connection back to its login state between variants (each variant starts clean;
/// state left by a variant is checked by that variant's own next statement).
async fn reset(db: &TenantConnection) {
    db.execute_unprepared("RESET ROLE").await.expect("reset role");
    db.execute_unprepared("RESET tenancy.tenant_id").await.expect("reset setting");
}

#[tokio::test]
async fn a_table_tenant_cannot_become_the_app_role_and_rebind_itself() {
    let Some(ctx) = ctx().await else { return };
    let a = ctx.tenant("acme", Isolation::Table).await;
    let b = ctx.tenant("globex", Isolation::Table).await;
    seed(&a, "acme").await;
    seed(&b, "globex").await;
    let b_before = ctx.state_of(&b).await;
    let app = ctx.app_role().await;
    let (app_ident, app_literal, b_literal) = (quote_ident(&app), quote_literal(&app), quote_literal(b.id().as_str()));
    let login = a.tenant().placement().login().cloned().expect("a login role").user;

    // SET ROLE to the application role (allowed or not), then the setting for the session.
    let _ = a.execute_unprepared(&format!("SET ROLE {app_ident}")).await;
    a.execute_unprepared(&format!("SELECT set_config('tenancy.tenant_id', {b_literal}, false)")).await.unwrap();
    aim_at_other(&ctx, &a, &b, "SET ROLE + set_config").await;
    reset(&a).await;

    // Both settings from inside one SELECT; the next statements run with them.
    let _ = a
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            format!(
                "SELECT set_config('role', {app_literal}, false), set_config('tenancy.tenant_id', {b_literal}, false)"
            ),
        ))
        .await;
    aim_at_other(&ctx, &a, &b, "set_config('role') in a SELECT").await;
    reset(&a).await;

    // The same from a DO block, which also writes at once (everything not its own).
    let not_a = quote_literal(a.id().as_str());
    let _ = a
        .execute_unprepared(&format!(
            "DO $$ BEGIN PERFORM set_config('role', {app_literal}, false); \
             PERFORM set_config('tenancy.tenant_id', {b_literal}, false); \
             UPDATE projects SET name = 'pwned' WHERE tenant_id <> {not_a}; \
             DELETE FROM tasks WHERE tenant_id <> {not_a}; DELETE FROM labels WHERE tenant_id <> {not_a}; END $$"
        ))
        .await;
    assert_eq!(ctx.state_of(&b).await, b_before, "the DO block reached b's rows");
    aim_at_other(&ctx, &a, &b, "DO block").await;
    let inserted = a
        .execute_unprepared(&format!(
            "DO $$ BEGIN SET ROLE {app_ident}; SET tenancy.tenant_id = {b_literal}; \
             INSERT INTO projects (tenant_id, name) VALUES ({b_literal}, 'smuggled'); END $$"
        ))
        .await;
    assert!(inserted.is_err(), "a DO block inserted a row for b");
    aim_at_other(&ctx, &a, &b, "DO block after SET ROLE").await;
    reset(&a).await;

    // Becoming someone else for good: refused, and nothing changes.
    let b_role = b.tenant().placement().login().cloned().expect("b's login role").user;
    for sql in [
        format!("SET SESSION AUTHORIZATION {}", quote_ident(&b_role)),
        "SET SESSION AUTHORIZATION postgres".to_owned(),
        format!("SET SESSION AUTHORIZATION {app_ident}"),
        format!("SET ROLE {}", quote_ident(&b_role)),
        "SET ROLE postgres".to_owned(),
        format!("SELECT set_config('role', {}, false)", quote_literal(&b_role)),
        format!("SELECT set_config('session_authorization', {}, false)", quote_literal(&b_role)),
    ] {
        let err = a.execute_unprepared(&sql).await.expect_err(&sql);
        assert!(err.to_string().contains("permission denied"), "{sql}: {err}");
        let who = a
            .query_one_raw(Statement::from_string(DbBackend::Postgres, "SELECT session_user::text, current_user::text"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(who.try_get_by_index::<String>(0).unwrap(), login, "{sql}");
        assert_eq!(who.try_get_by_index::<String>(1).unwrap(), login, "{sql}");
        aim_at_other(&ctx, &a, &b, &sql).await;
    }
    let _ = a.execute_unprepared(&format!("SET ROLE {app_ident}; RESET ROLE")).await;
    aim_at_other(&ctx, &a, &b, "RESET ROLE").await;

    // A permissive policy the application adds cannot widen a tenant's rows: the
    // restrictive twin still applies.
    for table in ["projects", "tasks", "boards", "labels"] {
        let sql = format!("CREATE POLICY everything ON public.{table} USING (true) WITH CHECK (true)");
        ctx.superuser.execute_unprepared(&sql).await.unwrap();
    }
    let _ = a.execute_unprepared(&format!("SET ROLE {app_ident}")).await;
    aim_at_other(&ctx, &a, &b, "an added permissive policy").await;
    reset(&a).await;

    // The other tenant, next on the budget of one, sees its own rows as they were.
    assert_eq!(names(&b).await, ["globex-project"]);
    assert_eq!(ctx.state_of(&b).await, b_before);

    // The catalog metadata the README lets an operator hide: tenants lose it, and new
    // tenant connections work without it.
    ctx.superuser
        .execute_unprepared(
            "REVOKE SELECT ON pg_catalog.pg_roles, pg_catalog.pg_user, pg_catalog.pg_namespace, \
             pg_catalog.pg_stat_all_tables, pg_catalog.pg_stat_user_tables FROM PUBLIC",
        )
        .await
        .unwrap();
    let fresh = ctx._pg.builder(&ctx._dir).connect().await.unwrap();
    let a_again = fresh.tenant(a.id()).await.unwrap();
    common::add_project(&a_again, None, "acme-later").await;
    assert_eq!(names(&a_again).await, ["acme-later", "acme-project"]);
    for view in ["pg_roles", "pg_namespace", "pg_stat_all_tables"] {
        let sql = format!("SELECT count(*) FROM pg_catalog.{view}");
        let err = a_again.query_one_raw(Statement::from_string(DbBackend::Postgres, sql)).await.unwrap_err();
        assert!(err.to_string().contains("permission denied"), "{view}: {err}");
    }
}

#[tokio::test]
async fn views_over_scoped_tables_show_the_reader_its_own_rows_and_materialized_views_are_refused() {
    let Some(ctx) = ctx().await else { return };
    let a = ctx.tenant("acme", Isolation::Table).await;
    let b = ctx.tenant("globex", Isolation::Table).await;
    let s = ctx.tenant("initech", Isolation::Schema).await;
    seed(&a, "acme").await;
    seed(&b, "globex").await;
    // A schema tenant's table has no column default: the row says whose it is.
    project::ActiveModel {
        tenant_id: Set(s.id().to_string()),
        name: Set("initech-project".to_owned()),
        created_at: Set(ChronoUtc::now()),
        ..Default::default()
    }
    .insert(&s)
    .await
    .expect("insert the schema tenant's project");
    ctx.superuser.execute_unprepared("REFRESH MATERIALIZED VIEW public.project_totals").await.unwrap();
    let a_id = a.id().as_str();

    // The table tenant reads the views: its own rows only, through a view over a view too.
    for view in ["project_overview", "project_overview_names"] {
        let tenants = a
            .query_all_raw(Statement::from_string(DbBackend::Postgres, format!("SELECT tenant_id FROM {view}")))
            .await
            .expect(view);
        let tenants: Vec<String> = tenants.iter().map(|r| r.try_get_by_index(0).unwrap()).collect();
        assert_eq!(tenants, [a_id], "{view}");
    }
    let overview = a
        .query_one_raw(Statement::from_string(DbBackend::Postgres, "SELECT name, tasks FROM project_overview"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(overview.try_get_by_index::<String>(0).unwrap(), "acme-project");
    assert_eq!(overview.try_get_by_index::<i64>(1).unwrap(), 1);
    // The materialized view holds every tenant's rows: refused.
    let totals =
        a.query_all_raw(Statement::from_string(DbBackend::Postgres, "SELECT tenant_id FROM project_totals")).await;
    match totals {
        Err(err) => assert!(err.to_string().contains("permission denied"), "{err}"),
        Ok(rows) => panic!("the materialized view was readable: {} rows", rows.len()),
    }
    assert_eq!(names(&a).await, ["acme-project"], "next statement");

    // The same through shared master transactions (one master connection).
    let shared = ctx.shared().await;
    let a_shared = shared.tenant(a.id()).await.unwrap();
    for view in ["project_overview", "project_overview_names"] {
        let sql = format!("SELECT tenant_id FROM {view}");
        let rows = a_shared.query_all_raw(Statement::from_string(DbBackend::Postgres, sql)).await.expect(view);
        let tenants: Vec<String> = rows.iter().map(|r| r.try_get_by_index(0).unwrap()).collect();
        assert_eq!(tenants, [a_id], "{view} through shared transactions");
    }
    let totals = "SELECT tenant_id FROM project_totals";
    let err = a_shared.query_all_raw(Statement::from_string(DbBackend::Postgres, totals)).await.unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    assert_eq!(names(&a_shared).await, ["acme-project"], "next statement");

    // The schema tenant reaching into public: nothing of anyone.
    for sql in [
        "SELECT tenant_id FROM public.project_overview",
        "SELECT tenant_id FROM public.project_overview_names",
        "SELECT tenant_id FROM public.project_totals",
    ] {
        match s.query_all_raw(Statement::from_string(DbBackend::Postgres, sql)).await {
            Err(err) => assert!(err.to_string().contains("permission denied"), "{sql}: {err}"),
            Ok(rows) => assert!(rows.is_empty(), "{sql}: {} rows of the table tenants", rows.len()),
        }
        // Its own view in its schema still works, on the same connection.
        let own =
            s.query_all_raw(Statement::from_string(DbBackend::Postgres, "SELECT name FROM project_overview")).await;
        assert_eq!(own.expect("own view").len(), 1, "{sql}");
    }

    // The catalog: the views are security_invoker, the materialized view granted to no one.
    let invoker = "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace \
                   AND relname IN ('project_overview', 'project_overview_names') \
                   AND reloptions @> ARRAY['security_invoker=true']";
    assert_eq!(count(&ctx.superuser, invoker, vec![]).await, 2);
    let readable = "SELECT count(*) FROM pg_roles r WHERE (r.rolname = $1 OR r.rolname LIKE 'tnt\\_%') \
                    AND has_table_privilege(r.oid, 'public.project_totals', 'SELECT')";
    assert_eq!(count(&ctx.superuser, readable, vec![ctx.app_role().await.into()]).await, 0);
    let report = tenancy::enable_row_security(ctx.tenancy.master()).await.unwrap();
    assert_eq!(report.materialized_views, ["public.project_totals"]);
}

#[tokio::test]
async fn foreign_keys_between_scoped_tables_stay_within_the_tenant() {
    let Some(ctx) = ctx().await else { return };
    let a = ctx.tenant("acme", Isolation::Table).await;
    let b = ctx.tenant("globex", Isolation::Table).await;
    let (a_project, a_board) = seed(&a, "acme").await;
    let (b_project, b_board) = seed(&b, "globex").await;
    let b_before = ctx.state_of(&b).await;
    let missing = 1_000_000;

    // Pointing at the other tenant's parent fails exactly as pointing at no parent does.
    let fk_error = |err: DbErr| {
        assert!(matches!(err.sql_err(), Some(SqlErr::ForeignKeyConstraintViolation(_))), "{err}");
        err.to_string()
            .replace(&b_project.id.to_string(), "N")
            .replace(&b_board.id.to_string(), "N")
            .replace(&missing.to_string(), "N")
    };
    let across = add_task(&a, b_project.id, "smuggled").await.expect_err("a task under b's project");
    let nowhere = add_task(&a, missing, "orphan").await.expect_err("a task under no project");
    assert_eq!(fk_error(across), fk_error(nowhere));
    let across = add_label(&a, b_board.id, None).await.expect_err("a label on b's board");
    let nowhere = add_label(&a, missing, None).await.expect_err("a label on no board");
    assert_eq!(fk_error(across), fk_error(nowhere));
    let across = add_label(&a, a_board.id, Some(b_project.id)).await.expect_err("a label on b's project");
    let nowhere = add_label(&a, a_board.id, Some(missing)).await.expect_err("a label on no project");
    assert_eq!(fk_error(across), fk_error(nowhere));
    // Raw SQL naming the other tenant's parent, and moving a child under it.
    let raw = a
        .execute_unprepared(&format!("INSERT INTO tasks (project_id, title) VALUES ({}, 'raw')", b_project.id))
        .await
        .expect_err("raw insert under b's project");
    assert!(matches!(raw.sql_err(), Some(SqlErr::ForeignKeyConstraintViolation(_))), "{raw}");
    let moved = a
        .execute_unprepared(&format!("UPDATE tasks SET project_id = {}", b_project.id))
        .await
        .expect_err("moving a's task under b's project");
    assert!(matches!(moved.sql_err(), Some(SqlErr::ForeignKeyConstraintViolation(_))), "{moved}");
    assert_eq!(names(&a).await, ["acme-project"], "next statement");
    // The same through shared master transactions (one master connection).
    let shared = ctx.shared().await;
    let a_shared = shared.tenant(a.id()).await.unwrap();
    let across = add_task(&a_shared, b_project.id, "smuggled").await.expect_err("shared: under b's project");
    let nowhere = add_task(&a_shared, missing, "orphan").await.expect_err("shared: under no project");
    assert_eq!(fk_error(across), fk_error(nowhere));
    let across = add_label(&a_shared, b_board.id, None).await.expect_err("shared: on b's board");
    let nowhere = add_label(&a_shared, missing, None).await.expect_err("shared: on no board");
    assert_eq!(fk_error(across), fk_error(nowhere));
    assert_eq!(names(&a_shared).await, ["acme-project"], "next statement");

    // b deletes its project and board: the cascades reach nothing of a's.
    let a_before = ctx.state_of(&a).await;
    b.execute_unprepared("DELETE FROM projects").await.unwrap();
    b.execute_unprepared("DELETE FROM boards").await.unwrap();
    assert_eq!(ctx.state_of(&a).await, a_before);
    assert!(ctx.state_of(&b).await.is_empty(), "{b_before:?}");
    assert_eq!(int(&a, "SELECT count(*) FROM tasks").await, 1);

    // ON DELETE SET NULL clears the reference, never the tenant column.
    a.execute_unprepared(&format!("DELETE FROM projects WHERE id = {}", a_project.id)).await.unwrap();
    let labels = column_strings(
        &ctx.superuser,
        "SELECT tenant_id || ' ' || coalesce(project_id::text, 'null') FROM labels",
        vec![],
    )
    .await;
    assert_eq!(labels, [format!("{} null", a.id())]);

    // The catalog: the outside app's plain keys were rewritten, names, actions and
    // deferrability kept; the parent got the unique key the new one needs.
    let definitions = column_strings(
        &ctx.superuser,
        "SELECT conname || ': ' || pg_get_constraintdef(oid) FROM pg_constraint \
         WHERE contype = 'f' AND conrelid = 'public.labels'::regclass ORDER BY conname",
        vec![],
    )
    .await;
    assert_eq!(
        definitions,
        [
            "labels_board_id_fkey: FOREIGN KEY (tenant_id, board_id) REFERENCES boards(tenant_id, id) \
             ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED",
            "labels_project_id_fkey: FOREIGN KEY (tenant_id, project_id) REFERENCES projects(tenant_id, id) \
             ON DELETE SET NULL (project_id)",
        ]
    );
    let unique = "SELECT count(*) FROM pg_constraint WHERE contype = 'u' AND conrelid = 'public.boards'::regclass \
                  AND pg_get_constraintdef(oid) = 'UNIQUE (tenant_id, id)'";
    assert_eq!(count(&ctx.superuser, unique, vec![]).await, 1);
    // The example app declares its own composite keys: nothing to rewrite there.
    for (table, definition) in [
        ("tasks", "FOREIGN KEY (tenant_id, project_id) REFERENCES projects(tenant_id, id) ON DELETE CASCADE"),
        ("comments", "FOREIGN KEY (tenant_id, task_id) REFERENCES tasks(tenant_id, id) ON DELETE CASCADE"),
    ] {
        let sql = format!(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE contype = 'f' AND conrelid = 'public.{table}'::regclass"
        );
        assert_eq!(column_strings(&ctx.superuser, &sql, vec![]).await, [definition], "{table}");
    }
    // Idempotent: nothing left to rewrite.
    let report = tenancy::enable_row_security(ctx.tenancy.master()).await.unwrap();
    assert!(report.foreign_keys_rewritten.is_empty(), "{:?}", report.foreign_keys_rewritten);

    // Rows that already cross tenants under a plain key (put there by a superuser) make
    // the rewrite fail: refused, naming the key, and nothing changed.
    let board = add_board(&b, "globex-board-2").await;
    ctx.superuser
        .execute_unprepared(&format!(
            "ALTER TABLE labels DROP CONSTRAINT labels_board_id_fkey, \
             ADD CONSTRAINT labels_board_id_fkey FOREIGN KEY (board_id) REFERENCES boards (id); \
             INSERT INTO labels (tenant_id, name, board_id) VALUES ({}, 'crossing', {})",
            quote_literal(a.id().as_str()),
            board.id
        ))
        .await
        .unwrap();
    let err = tenancy::enable_row_security(ctx.tenancy.master()).await.unwrap_err();
    assert!(matches!(err, tenancy::Error::RowSecurityRefused { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("labels_board_id_fkey") && message.contains("another tenant"), "{message}");
    let plain = "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'labels_board_id_fkey'";
    assert_eq!(column_strings(&ctx.superuser, plain, vec![]).await, ["FOREIGN KEY (board_id) REFERENCES boards(id)"]);
}

#[tokio::test]
async fn a_sqlite_master_refuses_a_foreign_key_between_scoped_tables_without_the_tenant_column() {
    let dir = TempDir::new();
    let tenancy =
        Tenancy::builder(dir.sqlite_master_url()).secret_key_file(dir.path().join("key")).connect().await.unwrap();
    // The example app's own composite keys pass.
    let ok: TenantId = unique_name("acme").parse().unwrap();
    let new = NewTenant::new(ok.clone(), "A", Isolation::Table).expect("a valid new tenant").migrate(true);
    tenancy.create_tenant(new, &MigrateOnCreate::new(&example_app::Migrator)).await.expect("composite keys pass");

    // The outside app's plain keys are refused, naming the table, the key and the fix; the
    // migration is rolled back with the refusal, so a second attempt is refused again.
    for attempt in 0..2 {
        let id: TenantId = unique_name("globex").parse().unwrap();
        let new = NewTenant::new(id.clone(), "G", Isolation::Table).expect("a valid new tenant").migrate(true);
        let err = tenancy.create_tenant(new, &MigrateOnCreate::new(&OutsideMigrator)).await.unwrap_err();
        let mut message = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        for expected in ["labels", "board_id", "boards", "FOREIGN KEY (tenant_id, board_id)", "UNIQUE (tenant_id, id)"]
        {
            assert!(message.contains(expected), "attempt {attempt}: {expected} missing from {message}");
        }
        assert!(tenancy.find_tenant(&id).await.unwrap().is_none(), "attempt {attempt}");
        let tables = column_strings(
            tenancy.master(),
            "SELECT name FROM sqlite_master WHERE name IN ('labels', 'boards')",
            vec![],
        )
        .await;
        assert!(tables.is_empty(), "attempt {attempt}: the refused migration stayed: {tables:?}");
    }
    let _ = task::Entity::find();
}

#[tokio::test]
async fn the_catalog_audit_finds_nothing_after_migration_and_finds_what_an_operator_breaks() {
    use tenancy::rls::{AuditKind, audit};
    let Some(ctx) = ctx().await else { return };
    let a = ctx.tenant("acme", Isolation::Table).await;
    let b = ctx.tenant("globex", Isolation::Table).await;
    let _s = ctx.tenant("initech", Isolation::Schema).await;
    // The shared migrator as well, as the example app's `migratealltenants` runs it.
    let migrators = tenancy_migrate::Migrators::new(OutsideMigrator).with_shared(example_app::SharedMigrator);
    let options = tenancy_migrate::fleet::FleetOptions::default();
    let run = tenancy_migrate::fleet::migrate_all(&ctx.tenancy, &migrators, &options, &|_| {}).await;
    assert!(run.expect("fleet run").succeeded());
    seed(&a, "acme").await;

    let findings = audit(ctx.tenancy.master()).await.expect("audit");
    assert!(findings.is_empty(), "{findings:#?}");
    // The report agrees with the catalog.
    let report = tenancy::enable_row_security(ctx.tenancy.master()).await.unwrap();
    let tables: Vec<&str> = report.secured.iter().map(|(table, _)| table.as_str()).collect();
    assert_eq!(tables, ["boards", "comments", "labels", "projects", "tasks", "tenant_users"]);
    assert_eq!(report.views, ["public.project_overview", "public.project_overview_names"]);
    assert_eq!(report.materialized_views, ["public.project_totals"]);

    // What an operator (a superuser) breaks by hand, the audit finds.
    let (a_role, b_role) = (
        quote_ident(&a.tenant().placement().login().cloned().unwrap().user),
        quote_ident(&b.tenant().placement().login().cloned().unwrap().user),
    );
    let app = quote_ident(&ctx.app_role().await);
    for sql in [
        "CREATE VIEW public.leaky AS SELECT * FROM public.project_overview_names".to_owned(),
        "GRANT SELECT ON public.leaky, public.project_totals TO PUBLIC".to_owned(),
        "ALTER TABLE public.labels ADD CONSTRAINT labels_plain_fkey FOREIGN KEY (board_id) REFERENCES public.boards (id)"
            .to_owned(),
        "ALTER TABLE public.tasks NO FORCE ROW LEVEL SECURITY".to_owned(),
        "ALTER POLICY tenancy_tenant_isolation ON public.comments USING (tenant_id = current_user)".to_owned(),
        "DROP POLICY tenancy_tenant_guard ON public.boards".to_owned(),
        "ALTER TABLE public.projects ALTER COLUMN tenant_id SET DEFAULT current_setting('tenancy.tenant_id', true)"
            .to_owned(),
        format!("GRANT {b_role} TO {a_role}"),
        format!("ALTER ROLE {b_role} CREATEROLE"),
        format!("ALTER ROLE {app} LOGIN"),
    ] {
        ctx.superuser.execute_unprepared(&sql).await.expect(&sql);
    }
    let findings = audit(ctx.tenancy.master()).await.expect("audit");
    let found: Vec<(AuditKind, &str)> = findings.iter().map(|f| (f.kind, f.object.as_str())).collect();
    let (a_name, b_name) = (a_role.trim_matches('"'), b_role.trim_matches('"'));
    let app_name = app.trim_matches('"');
    for expected in [
        (AuditKind::TableNotSecured, "public.tasks"),
        (AuditKind::TableNotSecured, "public.boards"),
        (AuditKind::Policy, "public.comments"),
        (AuditKind::Policy, "public.projects"),
        (AuditKind::View, "public.leaky"),
        (AuditKind::MaterializedView, "public.project_totals"),
        (AuditKind::ForeignKey, "public.labels.labels_plain_fkey"),
        (AuditKind::Role, a_name),
        (AuditKind::Role, b_name),
        (AuditKind::Role, app_name),
    ] {
        assert!(found.contains(&expected), "{expected:?} not in {findings:#?}");
    }
    assert_eq!(findings.len(), 10, "{findings:#?}");

    // The step repairs what is its to repair (the application role included); the tenant
    // roles are the operator's to fix.
    tenancy::enable_row_security(ctx.tenancy.master()).await.expect("the step runs again");
    let left: Vec<(AuditKind, String)> =
        audit(ctx.tenancy.master()).await.unwrap().into_iter().map(|f| (f.kind, f.object)).collect();
    assert_eq!(left, [(AuditKind::Role, a_name.to_owned()), (AuditKind::Role, b_name.to_owned())]);
    // And a's data is still a's alone through the repaired objects.
    let seen = a
        .query_all_raw(Statement::from_string(DbBackend::Postgres, "SELECT tenant_id FROM leaky"))
        .await
        .expect("the repaired view");
    assert!(seen.iter().all(|r| r.try_get_by_index::<String>(0).unwrap() == a.id().as_str()));
    assert_eq!(seen.len(), 1);
}

#[tokio::test]
async fn a_master_secured_by_the_previous_version_is_brought_up_to_date_by_the_next_migrate_run() {
    let Some(ctx) = ctx().await else { return };
    let a = ctx.tenant("acme", Isolation::Table).await;
    let b = ctx.tenant("globex", Isolation::Table).await;
    seed(&a, "acme").await;
    seed(&b, "globex").await;
    // The previous version's policies: one permissive policy on current_user, no guard.
    let prefix = a.tenant().placement().login().cloned().unwrap().user.trim_end_matches(a.id().as_str()).to_owned();
    let old = format!(
        "(SELECT CASE WHEN left(current_user::text, {len}) = {p} THEN substr(current_user::text, {start}) \
         ELSE current_setting('tenancy.tenant_id', true) END)",
        len = prefix.len(),
        p = quote_literal(&prefix),
        start = prefix.len() + 1
    );
    for table in ["projects", "tasks", "comments", "tenant_users", "boards", "labels"] {
        ctx.superuser
            .execute_unprepared(&format!(
                "DROP POLICY tenancy_tenant_guard ON public.{table}; \
                 ALTER POLICY tenancy_tenant_isolation ON public.{table} USING (tenant_id = {old}) \
                 WITH CHECK (tenant_id = {old})"
            ))
            .await
            .unwrap();
    }
    assert!(!tenancy::rls::row_security_is_current(ctx.tenancy.master()).await.unwrap());
    // The hole the old policies had, on the budget of one.
    let app = quote_ident(&ctx.app_role().await);
    let b_literal = quote_literal(b.id().as_str());
    a.execute_unprepared(&format!("SET ROLE {app}; SET tenancy.tenant_id = {b_literal}")).await.unwrap();
    assert_eq!(int(&a, "SELECT count(*) FROM projects").await, 1, "the old policy follows the setting");
    assert_eq!(
        int(&a, &format!("SELECT count(*) FROM projects WHERE tenant_id = {b_literal}")).await,
        1,
        "the old policy shows b's rows"
    );

    // Nothing to migrate, yet the run re-secures the tables.
    let tenant = ctx.tenancy.get_tenant(a.id()).await.unwrap();
    let outcome = tenancy_migrate::migrate_tenant(&ctx.tenancy, &tenant, &OutsideMigrator).await.unwrap();
    assert!(matches!(outcome, tenancy_migrate::MigrationOutcome::UpToDate), "{outcome:?}");
    assert!(tenancy::rls::row_security_is_current(ctx.tenancy.master()).await.unwrap());
    let findings = tenancy::rls::audit(ctx.tenancy.master()).await.unwrap();
    assert!(findings.is_empty(), "{findings:#?}");
    // The same connection, still as the application role with b's id set: b is gone.
    assert_eq!(int(&a, &format!("SELECT count(*) FROM projects WHERE tenant_id = {b_literal}")).await, 0);
    assert_eq!(names(&a).await, ["acme-project"]);
}
