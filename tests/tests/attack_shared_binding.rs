//! Attacks on `TenantBinding::SharedTransactions` (PostgreSQL): one tenant's statements
//! try to leave something on the shared master connection that catches the next
//! tenant's reads and writes, or the library's own registry queries. The master pool has
//! a single connection, so the next tenant (and the library) always gets the connection
//! the attacker used. Temporary tables, views and functions named like the scoped
//! tables or the registry, created through `execute_unprepared` (several statements),
//! raw statements, transactions (with `ON COMMIT PRESERVE ROWS`, savepoints), session
//! settings and held cursors: none may survive the attacker's transaction. Each check
//! asserts the rows each tenant sees, where its writes land (as the superuser sees the
//! real tables) and the connection's state as the library sees it.
//!
//! What these tests do not claim: hostile raw SQL under this binding runs on the master
//! owner's session and can undo the binding inside its own transaction (see the docs of
//! `TenantBinding`); the default `TenantPools` binding is the one that contains it.

use crate::common;

use common::project_names as names;
use example_app::Migrator;
use example_app::entities::project;
use futures_util::StreamExt;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, Statement, TransactionTrait};
use tenancy::sql::{quote_ident, quote_literal};
use tenancy::{Isolation, NewTenant, Tenancy, TenantBinding, TenantConnection, TenantId};
use tenancy_migrate::MigrateOnCreate;
use tenancy_test_support::{PgMaster, TempDir, column_strings, count, unique_name};

struct Ctx {
    _pg: PgMaster,
    _dir: TempDir,
    /// Shared transactions on a master pool of one connection.
    single: Tenancy,
    /// A superuser connection to the master database: the real tables, as they are.
    superuser: DatabaseConnection,
    isolation: Isolation,
    /// The attacker's and the victim's handles (on `single`).
    a: TenantConnection,
    b: TenantConnection,
}

/// Two migrated tenants of `isolation`, one project each (`a1`, `b1`), and their handles
/// on a `Tenancy` whose master pool has one connection.
async fn ctx(isolation: Isolation) -> Option<Ctx> {
    let pg = PgMaster::create().await?;
    let dir = TempDir::new();
    let setup = pg.builder(&dir).tenant_binding(TenantBinding::SharedTransactions).connect().await.unwrap();
    let mut ids = Vec::new();
    for prefix in ["acme", "globex"] {
        let id: TenantId = unique_name(prefix).parse().unwrap();
        let new =
            NewTenant::new(id.clone(), format!("{id} Inc."), isolation).expect("a valid new tenant").migrate(true);
        setup.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.expect("create tenant");
        ids.push(id);
    }
    let single = pg
        .builder(&dir)
        .tenant_binding(TenantBinding::SharedTransactions)
        .max_connections(1)
        .connect()
        .await
        .expect("connect with one master connection");
    let a = single.tenant(&ids[0]).await.unwrap();
    let b = single.tenant(&ids[1]).await.unwrap();
    let superuser = pg.connect().await;
    let ctx = Ctx { _pg: pg, _dir: dir, single, superuser, isolation, a, b };
    ctx.add(&ctx.a, &ctx.a, "a1").await;
    ctx.add(&ctx.b, &ctx.b, "b1").await;
    Some(ctx)
}

fn pg(sql: impl Into<String>) -> Statement {
    Statement::from_string(DbBackend::Postgres, sql.into())
}

impl Ctx {
    /// The real table `table` of `tenant` (its schema's, or the shared one in `public`).
    fn real_table(&self, tenant: &TenantConnection, table: &str) -> String {
        match self.isolation {
            Isolation::Schema => {
                format!("{}.{}", quote_ident(tenant.tenant().placement().schema().unwrap()), quote_ident(table))
            }
            _ => format!("public.{}", quote_ident(table)),
        }
    }

    /// The names in `tenant`'s real `projects` rows, sorted, as the superuser sees them.
    async fn stored_names(&self, tenant: &TenantConnection) -> Vec<String> {
        let sql =
            format!("SELECT name FROM {} WHERE tenant_id = $1 ORDER BY name", self.real_table(tenant, "projects"));
        column_strings(&self.superuser, &sql, vec![tenant.id().as_str().into()]).await
    }

    /// A project for `tenant` through `db`.
    async fn add(&self, db: &impl ConnectionTrait, tenant: &TenantConnection, name: &str) {
        let id = (self.isolation == Isolation::Schema).then(|| tenant.id());
        common::add_project(db, id.map(TenantId::as_str), name).await;
    }

    /// The victim writes and reads after an attack: it sees exactly its own rows (through
    /// the handle and streamed inside a transaction), its write lands in its real table,
    /// the attacker's real table is untouched, and the library still reads the real
    /// registry on the same (single) connection, which holds no temporary object.
    async fn victim_unharmed(&self, variant: &str, b_expected: &mut Vec<String>) {
        let (a, b) = (&self.a, &self.b);
        let name = format!("b-after-{variant}");
        self.add(b, b, &name).await;
        b_expected.push(name);
        b_expected.sort();
        assert_eq!(names(b).await, *b_expected, "{variant}: what the victim sees");
        let txn = b.begin().await.unwrap();
        let streamed: Vec<String> =
            project::Entity::find().stream(&txn).await.unwrap().map(|p| p.unwrap().name).collect().await;
        let mut streamed = streamed;
        streamed.sort();
        assert_eq!(streamed, *b_expected, "{variant}: what the victim streams");
        txn.commit().await.unwrap();
        assert_eq!(self.stored_names(b).await, *b_expected, "{variant}: where the victim's writes land");
        assert_eq!(self.stored_names(a).await, ["a1"], "{variant}: the attacker's real table");
        assert_eq!(names(a).await, ["a1"], "{variant}: what the attacker sees next");
        self.registry_intact(variant).await;
        self.connection_clean(variant).await;
    }

    /// The library's registry reads, on the one master connection, find the real rows.
    async fn registry_intact(&self, variant: &str) {
        let ids: Vec<String> = self.single.tenants().await.unwrap().into_iter().map(|t| t.id().to_string()).collect();
        let mut expected = vec![self.a.id().to_string(), self.b.id().to_string()];
        expected.sort();
        assert_eq!(ids, expected, "{variant}: the registry as the library reads it");
        let b = self.single.tenant(self.b.id()).await.unwrap_or_else(|e| panic!("{variant}: {e}"));
        assert_eq!(b.tenant().placement(), self.b.tenant().placement(), "{variant}: the victim's registry row");
        let mut expected = names(&self.b).await;
        expected.sort();
        assert_eq!(names(&b).await, expected, "{variant}: a fresh handle of the victim");
    }

    /// The master connection as the library gets it: no temporary relation or function,
    /// the master owner's role, no tenant setting, the default `search_path`.
    async fn connection_clean(&self, variant: &str) {
        let master = self.single.master();
        let sql = "SELECT (SELECT COUNT(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()) \
                   + (SELECT COUNT(*) FROM pg_proc WHERE pronamespace = pg_my_temp_schema())";
        assert_eq!(count(master, sql, vec![]).await, 0, "{variant}: temporary objects left on the connection");
        let row = master
            .query_one_raw(pg("SELECT current_user::text, session_user::text, \
                 COALESCE(current_setting('tenancy.tenant_id', true), ''), current_setting('search_path')"))
            .await
            .unwrap()
            .unwrap();
        let values: Vec<String> = (0..4).map(|i| row.try_get_by_index::<String>(i).unwrap()).collect();
        assert_eq!(values, ["postgres", "postgres", "", "\"$user\", public"], "{variant}: session state");
    }
}

/// Temporary tables, views and functions named like the scoped table, planted by the
/// attacker in every way a handle runs SQL; after each, the victim is unharmed.
async fn temporary_objects_do_not_outlive_the_transaction(isolation: Isolation) {
    let Some(ctx) = ctx(isolation).await else { return };
    let (a, b) = (&ctx.a, &ctx.b);
    let mut b_expected = vec!["b1".to_owned()];
    // What the attacker copies into its shadow tables: its own rows (schema tenants are
    // the master owner: they could copy anything, which is exactly why nothing may stay).
    let like = "(LIKE projects INCLUDING ALL)";

    // `execute_unprepared` with several statements: a shadow table holding a copy.
    a.execute_unprepared(&format!(
        "CREATE TEMP TABLE projects {like}; INSERT INTO pg_temp.projects SELECT * FROM projects; \
         INSERT INTO pg_temp.projects (id, tenant_id, name, created_at) VALUES (100000, {}, 'planted', now())",
        quote_literal(b.id().as_str())
    ))
    .await
    .unwrap();
    ctx.victim_unharmed("unprepared", &mut b_expected).await;

    // A raw prepared statement.
    a.execute_raw(pg("CREATE TEMP TABLE projects AS SELECT * FROM projects")).await.unwrap();
    ctx.victim_unharmed("raw statement", &mut b_expected).await;

    // Inside `begin()`, committed: a view over the attacker's rows (writes through it
    // would land in the attacker's table).
    let txn = a.begin().await.unwrap();
    txn.execute_unprepared("CREATE TEMP VIEW projects AS SELECT * FROM projects").await.unwrap();
    assert_eq!(names(&txn).await, ["a1"], "inside its own transaction the tenant sees its rows");
    txn.commit().await.unwrap();
    ctx.victim_unharmed("view in a transaction", &mut b_expected).await;

    // `ON COMMIT PRESERVE ROWS`, and a shadow of another table made in a released
    // savepoint.
    let txn = a.begin().await.unwrap();
    txn.execute_unprepared(&format!(
        "CREATE TEMP TABLE projects {like} ON COMMIT PRESERVE ROWS; \
         INSERT INTO pg_temp.projects SELECT * FROM projects"
    ))
    .await
    .unwrap();
    let savepoint = txn.begin().await.unwrap();
    savepoint.execute_unprepared("CREATE TEMP TABLE tasks (LIKE tasks INCLUDING DEFAULTS)").await.unwrap();
    savepoint.commit().await.unwrap();
    txn.commit().await.unwrap();
    ctx.victim_unharmed("on commit preserve rows", &mut b_expected).await;

    // A temporary function behind a temporary view.
    a.execute_unprepared(
        "CREATE FUNCTION pg_temp.planted() RETURNS varchar LANGUAGE sql AS $$ SELECT 'planted'::varchar $$; \
         CREATE TEMP VIEW projects AS SELECT id, tenant_id, pg_temp.planted() AS name, created_at FROM projects",
    )
    .await
    .unwrap();
    ctx.victim_unharmed("function and view", &mut b_expected).await;

    // A shadow created through the closure form of a transaction.
    a.transaction::<_, _, sea_orm::DbErr>(|txn| {
        Box::pin(async move { txn.execute_unprepared("CREATE TEMP TABLE projects AS SELECT * FROM projects").await })
    })
    .await
    .unwrap();
    ctx.victim_unharmed("closure transaction", &mut b_expected).await;
}

#[tokio::test]
async fn schema_tenants_temporary_objects_do_not_outlive_the_transaction() {
    temporary_objects_do_not_outlive_the_transaction(Isolation::Schema).await;
}

#[tokio::test]
async fn table_tenants_temporary_objects_do_not_outlive_the_transaction() {
    temporary_objects_do_not_outlive_the_transaction(Isolation::Table).await;
}

/// A temporary `tenancy_tenants` (empty, or pointing the victim at the attacker's
/// storage) does not reach the library's registry reads.
async fn the_registry_cannot_be_shadowed(isolation: Isolation) {
    let Some(ctx) = ctx(isolation).await else { return };
    let (a, b) = (&ctx.a, &ctx.b);
    let mut b_expected = vec!["b1".to_owned()];
    // The registry's columns, in its order (the suspension columns came last, by migration).
    let columns = "(tenant_id varchar PRIMARY KEY, name varchar, isolation_type varchar, config jsonb, \
                   status varchar, created_at timestamptz, updated_at timestamptz, suspended_reason text, \
                   suspended_at timestamptz)";

    // An empty registry: every tenant would be "not found".
    a.execute_unprepared(&format!("CREATE TEMP TABLE tenancy_tenants {columns}")).await.unwrap();
    ctx.victim_unharmed("empty registry", &mut b_expected).await;

    // A copy of the real rows with the victim sent to the attacker's storage, made in
    // an explicit transaction with `ON COMMIT PRESERVE ROWS`. (A schema tenant runs as the
    // master owner and can read the real registry; a table tenant writes its own rows.)
    let b_row = match isolation {
        Isolation::Schema => format!(
            "INSERT INTO pg_temp.tenancy_tenants SELECT * FROM public.tenancy_tenants; \
             UPDATE pg_temp.tenancy_tenants SET config = jsonb_set(config, '{{schema}}', to_jsonb({}::text)) \
             WHERE tenant_id = {}",
            quote_literal(a.tenant().placement().schema().unwrap()),
            quote_literal(b.id().as_str())
        ),
        _ => format!(
            "INSERT INTO pg_temp.tenancy_tenants VALUES ({id}, 'x', 'table', '{{}}', 'ready', now(), now()), \
             ({b}, 'x', 'table', '{{}}', 'ready', now(), now())",
            id = quote_literal(a.id().as_str()),
            b = quote_literal(b.id().as_str())
        ),
    };
    let txn = a.begin().await.unwrap();
    txn.execute_unprepared(&format!("CREATE TEMP TABLE tenancy_tenants {columns} ON COMMIT PRESERVE ROWS; {b_row}"))
        .await
        .unwrap();
    txn.commit().await.unwrap();
    ctx.victim_unharmed("redirecting registry", &mut b_expected).await;

    if isolation == Isolation::Schema {
        // A real table in the attacker's own schema, and the session's `search_path`
        // pointed at it (`set_config(..., false)` outlives the transaction by design).
        a.execute_unprepared(&format!(
            "CREATE TABLE tenancy_tenants {columns}; SELECT set_config('search_path', {}, false)",
            quote_literal(&quote_ident(a.tenant().placement().schema().unwrap()))
        ))
        .await
        .unwrap();
        ctx.victim_unharmed("session search_path", &mut b_expected).await;
    }
}

#[tokio::test]
async fn schema_tenants_cannot_shadow_the_registry() {
    the_registry_cannot_be_shadowed(Isolation::Schema).await;
}

#[tokio::test]
async fn table_tenants_cannot_shadow_the_registry() {
    the_registry_cannot_be_shadowed(Isolation::Table).await;
}

/// Session-level settings and held cursors set by a tenant's statements do not stay on
/// the connection: the next tenant and the library get the master owner's session.
#[tokio::test]
async fn session_settings_and_held_cursors_do_not_outlive_the_transaction() {
    let Some(ctx) = ctx(Isolation::Table).await else { return };
    let (a, b) = (&ctx.a, &ctx.b);
    let mut b_expected = vec!["b1".to_owned()];
    let app_role = ctx.single.app_role().await.unwrap().to_owned();

    // The tenant setting and the role, for the session: the library would then run its
    // registry reads as the application role (which may not read the registry), and the
    // master owner's own queries would be bound to the victim.
    a.query_all_raw(pg(format!(
        "SELECT set_config('tenancy.tenant_id', {}, false), set_config('role', {}, false), \
                set_config('search_path', 'pg_temp, public', false)",
        quote_literal(b.id().as_str()),
        quote_literal(&app_role)
    )))
    .await
    .unwrap();
    ctx.victim_unharmed("session settings", &mut b_expected).await;

    // The same inside an explicit transaction, with `SET` statements this time.
    let txn = a.begin().await.unwrap();
    txn.execute_unprepared(&format!(
        "SET tenancy.tenant_id = {}; SET search_path = pg_temp, public",
        quote_literal(b.id().as_str())
    ))
    .await
    .unwrap();
    txn.commit().await.unwrap();
    ctx.victim_unharmed("SET in a transaction", &mut b_expected).await;

    // A cursor held past the commit, over the attacker's rows: the victim cannot fetch
    // from it.
    a.execute_unprepared("DECLARE planted CURSOR WITH HOLD FOR SELECT name FROM projects").await.unwrap();
    let fetched = b.query_all_raw(pg("FETCH ALL FROM planted")).await;
    assert!(fetched.is_err(), "the attacker's cursor is still open: {:?}", fetched.map(|rows| rows.len()));
    ctx.victim_unharmed("held cursor", &mut b_expected).await;
}

/// A temporary table used within one transaction still works (as a scratch table: the
/// scoped tables' names resolve to the real tables first), and is gone afterwards, so
/// the same workflow runs again.
#[tokio::test]
async fn temporary_tables_within_one_transaction_still_work() {
    for isolation in [Isolation::Schema, Isolation::Table] {
        let Some(ctx) = ctx(isolation).await else { return };
        let a = &ctx.a;
        for round in 0..2 {
            let txn = a.begin().await.unwrap();
            txn.execute_unprepared(
                "CREATE TEMP TABLE scratch AS SELECT name FROM projects; INSERT INTO scratch VALUES ('extra')",
            )
            .await
            .unwrap_or_else(|e| panic!("{isolation} round {round}: {e}"));
            let rows = column_strings_in(&txn, "SELECT name::text FROM scratch ORDER BY name").await;
            assert_eq!(rows, ["a1", "extra"], "{isolation} round {round}");
            txn.commit().await.unwrap();
            // The same in a single statement (a transaction of its own).
            let rows =
                a.query_all_raw(pg("WITH s AS (SELECT name FROM projects) SELECT name::text FROM s")).await.unwrap();
            assert_eq!(rows.len(), 1);
        }
        // A temporary table named like a scoped table does not shadow it, even inside
        // the transaction that made it (`pg_temp` is searched last): the tenant's reads
        // and writes still reach its real table; the temporary one only by its full name.
        let txn = a.begin().await.unwrap();
        txn.execute_unprepared("CREATE TEMP TABLE projects (LIKE projects INCLUDING ALL)").await.unwrap();
        assert_eq!(names(&txn).await, ["a1"], "{isolation}: the real table, not the empty temporary one");
        ctx.add(&txn, a, "a2").await;
        assert_eq!(count_in(&txn, "SELECT COUNT(*) FROM pg_temp.projects").await, 0, "{isolation}");
        txn.commit().await.unwrap();
        assert_eq!(ctx.stored_names(a).await, ["a1", "a2"], "{isolation}: the write landed in the real table");
        a.execute_unprepared("DELETE FROM projects WHERE name = 'a2'").await.unwrap();
        // A read-only transaction resets the session too (PostgreSQL allows every part
        // of the reset there).
        let txn = a.begin_with_config(None, Some(sea_orm::AccessMode::ReadOnly)).await.unwrap();
        assert_eq!(names(&txn).await, ["a1"], "{isolation}: read-only");
        txn.commit().await.expect("a read-only transaction commits");
        // A rolled-back transaction leaves nothing either.
        let txn = a.begin().await.unwrap();
        txn.execute_unprepared("CREATE TEMP TABLE scratch (n int)").await.unwrap();
        txn.rollback().await.unwrap();
        ctx.connection_clean("after a rollback").await;
        // Committing a transaction a failed statement aborted rolls it back, as sea-orm
        // does, and leaves nothing either.
        let txn = a.begin().await.unwrap();
        txn.execute_unprepared("CREATE TEMP TABLE scratch (n int) ON COMMIT PRESERVE ROWS").await.unwrap();
        assert!(txn.execute_unprepared("SELECT 1/0").await.is_err());
        txn.commit().await.expect("an aborted transaction's commit rolls back");
        ctx.connection_clean("after an aborted transaction").await;
        let mut b_expected = vec!["b1".to_owned()];
        ctx.victim_unharmed("innocent", &mut b_expected).await;
    }
}

async fn column_strings_in<C: ConnectionTrait>(db: &C, sql: &str) -> Vec<String> {
    db.query_all_raw(pg(sql)).await.unwrap().iter().map(|row| row.try_get_by_index::<String>(0).unwrap()).collect()
}

async fn count_in<C: ConnectionTrait>(db: &C, sql: &str) -> i64 {
    db.query_one_raw(pg(sql)).await.unwrap().unwrap().try_get_by_index::<i64>(0).unwrap()
}

/// sqlx names every prepared statement of the uncached shared pool and closes none: the
/// reset before each bound transaction commits deallocates them, so the one shared
/// connection holds only the statements of the transaction running, however many came
/// before (without it: about two more per statement, until the connection is replaced).
#[tokio::test]
async fn the_shared_connection_keeps_no_prepared_statements_across_transactions() {
    let Some(ctx) = ctx(Isolation::Schema).await else { return };
    let held = || async {
        let row = ctx.a.query_one_raw(pg("SELECT count(*) FROM pg_prepared_statements")).await.unwrap().unwrap();
        row.try_get_by_index::<i64>(0).unwrap()
    };
    let before = held().await;
    for _ in 0..40 {
        assert_eq!(names(&ctx.a).await, ["a1"]);
    }
    let after = held().await;
    assert!(after <= before.max(2), "prepared statements on the shared connection: {before} before, {after} after");
}
