//! Binding a tenant to transactions of the shared master pool
//! ([`TenantBinding::SharedTransactions`], or a tenant without a login role): the
//! settings that bind a transaction, and the session reset before it commits.

use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, Statement, TransactionOptions};

use crate::Tenancy;

/// How the handles of schema- and table-isolated tenants on a PostgreSQL master reach
/// their data; set with [`TenancyBuilder::tenant_binding`](crate::TenancyBuilder::tenant_binding).
///
/// Either way no session state outlives a transaction on a connection another tenant
/// could use, so both work behind a transaction-mode pooler such as PgBouncer, once
/// tenancy is told it is there ([`TenancyBuilder::pooler`](crate::TenancyBuilder::pooler),
/// see [`crate::pooler`]). They
/// differ in what they hold against *hostile* SQL, that is, SQL run through a handle that
/// tries to undo the binding (`RESET ROLE`, `set_config(...)`, `DO` blocks, names
/// qualified with another tenant's schema):
///
/// | | [`TenantPools`](Self::TenantPools) (default) | [`SharedTransactions`](Self::SharedTransactions) |
/// | --- | --- | --- |
/// | logged in as | the tenant's own login role | the master URL's user (often a superuser) |
/// | enforced by | the database: the role's privileges and the row-level security policies | settings of the transaction, which its statements can change |
/// | sea-orm code, forgotten filters, unqualified raw SQL | contained | contained |
/// | temporary objects, session settings left by a statement | stay in the tenant's own pool | removed before the transaction commits |
/// | hostile raw SQL | contained | **not contained**: it runs with the master user's privileges |
///
/// Choose `SharedTransactions` only when every statement that reaches a tenant's handle
/// is the application's own code; keep the default when tenants' own SQL (a report
/// builder, a shell, user-supplied queries) can reach a handle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TenantBinding {
    /// Each tenant has a pool of its own, logged in as the tenant's login role
    /// ([`crate::TenantLogin`], made by `create_tenant`): the role's defaults and
    /// privileges bind every connection of the pool to the tenant for its whole life,
    /// so a statement costs what it costs on plain sea-orm. A tenant whose pool is not
    /// open pays a new connection (PostgreSQL forks a backend for it): with many more
    /// tenants busy at once than the budget holds pools for, nearly every request does,
    /// and the server spends its time forking (the soak of `docs/soak.md`: 1,000 tenants
    /// at random over a budget of 20 served about a quarter of the requests per second
    /// that `SharedTransactions` served). Size the budget for the tenants busy at once, or
    /// choose `SharedTransactions` for such traffic. Pools share the budget of
    /// [`TenancyBuilder::tenant_connection_budget`](crate::TenancyBuilder::tenant_connection_budget)
    /// with database-isolated tenants and are cached least recently used first; a
    /// pooler keys its pools by user, so it keeps tenants apart too.
    ///
    /// The default: the fastest, and the database enforces the binding against anything
    /// the tenant's SQL can do, hostile raw SQL included. A schema tenant's role may use
    /// its own schema only; a table tenant's role is what the row-level security
    /// policies identify the tenant by, and it has no way around them. Whatever a
    /// statement leaves on its session (settings, temporary objects) stays on a
    /// connection of the tenant's own pool, which no other tenant ever gets.
    #[default]
    TenantPools,
    /// Every statement or transaction runs in a transaction of the shared master pool
    /// that first binds the tenant with transaction-scoped `set_config(..., true)` calls:
    /// a schema tenant's `search_path` (its schema, then `pg_temp`), a table tenant's id
    /// in `tenancy.tenant_id` with a switch to the application role (and `search_path`
    /// `public, pg_temp`). No connections per tenant, for applications with more
    /// concurrently busy tenants than a connection budget can hold pools for.
    ///
    /// What it guarantees: sea-orm code, and raw SQL that does not try to undo the
    /// binding, reaches the tenant's data only, whatever filter it forgets. Nothing a
    /// transaction leaves on the shared connection reaches the next tenant or the
    /// library's own registry queries: `pg_temp` comes last in the bound `search_path`
    /// (a temporary table never shadows a tenant's table), and before the outermost
    /// transaction commits the session is reset in one round trip (`RESET SESSION
    /// AUTHORIZATION; RESET ROLE; RESET ALL; DISCARD TEMP; DISCARD SEQUENCES; CLOSE ALL;
    /// UNLISTEN *; SELECT pg_advisory_unlock_all()`): temporary tables, views and
    /// functions (`ON COMMIT PRESERVE ROWS` ones too), session-level settings
    /// (`set_config(..., false)`, `SET`), held cursors, listened channels and session
    /// advisory locks are gone. A rolled-back transaction takes its own with it.
    ///
    /// What it does **not** guarantee: containment of hostile raw SQL. The connection is
    /// logged in as the master URL's user, often a superuser, and the binding is made of
    /// settings that a statement inside the transaction can change: `RESET ROLE` or
    /// `set_config('role', ...)` gives back the master user's privileges,
    /// `set_config('tenancy.tenant_id', <another tenant>, true)` or
    /// `set_config('search_path', ...)` rebinds the transaction, a name qualified with
    /// another schema reaches it, and the master user can read or change the registry
    /// or any tenant's data, or end the transaction itself (`COMMIT` inside
    /// `execute_unprepared`) before the reset. No check after the statement could undo
    /// what it already read, so none is pretended. When tenants' own SQL may reach a
    /// handle, keep [`TenantPools`](Self::TenantPools).
    ///
    /// The price: four extra round trips per single statement (BEGIN, the binding, the
    /// session reset, COMMIT) and two per transaction (the binding and the reset); the
    /// reset costs about what a `SELECT 1` round trip costs (measured with pgbench on a
    /// local server: 65 to 95 µs each, the server's own work negligible).
    /// Statements are not cached (prepared unnamed) on the master pool, and its
    /// connections are replaced every minute: a PostgreSQL backend keeps the catalog
    /// entries of every tenant schema it has served and never frees them, so one serving
    /// a thousand tenants would otherwise grow by tens of MiB (`docs/soak.md`).
    SharedTransactions,
}

/// How a transaction of the master pool is bound to a tenant.
#[derive(Clone, Debug)]
pub(crate) enum Binding {
    /// A schema tenant: `search_path` is its schema (quoted), then `pg_temp`.
    Schema {
        /// The value of `search_path`.
        search_path: String,
    },
    /// A table tenant: its id in `tenancy.tenant_id`, the application role, and
    /// `search_path` `public, pg_temp`.
    Table,
}

/// A transaction of the master pool bound to the tenant for its whole life, with
/// transaction-scoped settings (`set_config(..., true)`) that end with it and never reach
/// the next user of the pooled connection; savepoints nested in it stay bound:
///
/// - table isolation: the tenant id in `tenancy.tenant_id`, the application role, and
///   `search_path` set to `public, pg_temp`;
/// - schema isolation: `search_path` set to the tenant's schema, then `pg_temp`.
///
/// `pg_temp` is named last so that a temporary relation never shadows a table of the
/// tenant (PostgreSQL searches it first when it is not named). It must end with
/// [`end_bound`] (or a rollback), which removes what the tenant's statements left on the
/// session before the connection goes back to the pool.
///
/// A single statement through the handle therefore costs four extra round trips (BEGIN,
/// the `set_config` query, the session reset, COMMIT); removing them (pipelining, binding
/// in the statement itself, or schema-qualified statements for schema isolation) is
/// future work.
pub(crate) async fn begin_bound(
    tenancy: &Tenancy,
    tenant: &str,
    binding: &Binding,
    options: TransactionOptions,
) -> Result<DatabaseTransaction, DbErr> {
    let bind = match binding {
        Binding::Schema { search_path } => Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT set_config('search_path', $1, true)",
            [search_path.as_str().into()],
        ),
        Binding::Table => {
            let role = tenancy.app_role().await.map_err(super::to_db_err)?.to_owned();
            // The shared tables live in `public` (where `enable_row_security` secures
            // them); `pg_temp` last, as for schema tenants.
            Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT set_config($1, $2, true), set_config('role', $3, true), \
                 set_config('search_path', 'public, pg_temp', true)",
                [crate::rls::TENANT_SETTING.into(), tenant.into(), role.into()],
            )
        }
    };
    let txn = super::pooler::begin(tenancy.traffic_pool(), options, tenancy.pooler()).await?;
    txn.execute_raw(bind).await?;
    Ok(txn)
}

/// What a bound transaction resets before it commits, in one round trip (PostgreSQL's
/// simple protocol runs the statements in order), so that nothing a tenant's statements
/// left on the session reaches the next user of the master pool's connection, another
/// tenant or the library's own registry queries:
///
/// - `RESET SESSION AUTHORIZATION`, `RESET ROLE`: a role switch made for the session
///   (`set_config('role', ..., false)`);
/// - `RESET ALL`: every other session-level setting (`search_path`, `tenancy.tenant_id`,
///   ...) back to the connection's defaults;
/// - `DISCARD TEMP`: temporary tables, views, functions and types, whatever their
///   `ON COMMIT` action (`DISCARD ALL` is not allowed in a transaction; these parts are);
/// - `DISCARD SEQUENCES`, `CLOSE ALL`, `UNLISTEN *`, `pg_advisory_unlock_all()`:
///   `lastval()`, cursors held past the commit, listened channels and session advisory
///   locks.
///
/// A rolled-back transaction needs none of it: PostgreSQL undoes the settings and drops
/// the temporary objects made in it.
const RESET_SESSION: &str = "RESET SESSION AUTHORIZATION; RESET ROLE; RESET ALL; DISCARD TEMP; DISCARD SEQUENCES; \
                             CLOSE ALL; UNLISTEN *; SELECT pg_advisory_unlock_all()";

/// [`RESET_SESSION`], then `DEALLOCATE ALL` (see [`end_bound`]).
const RESET_SESSION_AND_STATEMENTS: &str = "RESET SESSION AUTHORIZATION; RESET ROLE; RESET ALL; DISCARD TEMP; \
                                             DISCARD SEQUENCES; CLOSE ALL; UNLISTEN *; \
                                             SELECT pg_advisory_unlock_all(); DEALLOCATE ALL";

/// Commits a transaction from [`begin_bound`] after resetting the
/// session ([`RESET_SESSION`]).
///
/// A transaction that PostgreSQL has already aborted (a statement in it failed) refuses
/// the reset; it is rolled back instead, which undoes everything it did, and `Ok` is
/// returned as for sea-orm's own commit of such a transaction (PostgreSQL answers that
/// `COMMIT` with a rollback, not an error). Any other failure of the reset rolls back and
/// is returned.
///
/// On a traffic pool that prepares nothing for reuse ([`Tenancy::traffic_statements_uncached`])
/// the reset also deallocates the statements the transaction prepared: sqlx names each of
/// them and closes none, and a shared connection would otherwise keep thousands until it
/// is replaced. A pool with sqlx's statement cache must keep them (sqlx reuses them).
pub(crate) async fn end_bound(txn: DatabaseTransaction, tenancy: &Tenancy) -> Result<(), DbErr> {
    let reset = if tenancy.traffic_statements_uncached() { RESET_SESSION_AND_STATEMENTS } else { RESET_SESSION };
    match txn.execute_unprepared(reset).await {
        Ok(_) => txn.commit().await,
        Err(err) => {
            txn.rollback().await?;
            if in_failed_transaction(&err) { Ok(()) } else { Err(err) }
        }
    }
}

/// Whether `err` is PostgreSQL's "current transaction is aborted" (SQLSTATE 25P02).
fn in_failed_transaction(err: &DbErr) -> bool {
    match err {
        DbErr::Exec(sea_orm::RuntimeErr::SqlxError(err)) | DbErr::Query(sea_orm::RuntimeErr::SqlxError(err)) => {
            err.as_database_error().and_then(|db| db.code()).is_some_and(|code| code == "25P02")
        }
        _ => false,
    }
}
