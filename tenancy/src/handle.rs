//! [`TenantConnection`]: a tenant's handle, which every sea-orm call accepts.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, ExecResult, IsolationLevel, QueryResult,
    QueryStream, Statement, StreamTrait, TransactionError, TransactionOptions, TransactionTrait,
};

use crate::config::DatabaseConfig;
use crate::pools::PoolEntry;
use crate::transaction::TenantTransaction;
use crate::{Error, Isolation, Result, Tenancy, Tenant, TenantId, TenantStatus};

/// How the handles of schema- and table-isolated tenants on a PostgreSQL master reach
/// their data; set with [`TenancyBuilder::tenant_binding`](crate::TenancyBuilder::tenant_binding).
///
/// Either way no session state outlives a transaction on a connection another tenant
/// could use, so both are safe behind a transaction-mode pooler such as PgBouncer. They
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
    /// so a statement costs what it costs on plain sea-orm. Pools share the budget of
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
    /// Statements are not cached (prepared unnamed) on the master pool.
    SharedTransactions,
}

/// A tenant's handle: pass `&handle` wherever sea-orm takes a connection.
///
/// It implements [`ConnectionTrait`], [`TransactionTrait`] and [`StreamTrait`], so
/// existing sea-orm code runs against the tenant's data unchanged:
///
/// ```no_run
/// # mod project {
/// #     use sea_orm::entity::prelude::*;
/// #     #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
/// #     #[sea_orm(table_name = "projects")]
/// #     pub struct Model { #[sea_orm(primary_key)] pub id: i32, pub name: String }
/// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
/// #     pub enum Relation {}
/// #     impl ActiveModelBehavior for ActiveModel {}
/// # }
/// use sea_orm::{EntityTrait, PaginatorTrait, TransactionTrait};
///
/// # async fn demo(tenancy: tenancy::Tenancy) -> Result<(), Box<dyn std::error::Error>> {
/// let acme = tenancy.tenant(&"acme".parse()?).await?;
/// let projects = project::Entity::find().all(&acme).await?;
/// let txn = acme.begin().await?;
/// let count = project::Entity::find().count(&txn).await?;
/// txn.commit().await?;
/// # Ok(()) }
/// ```
///
/// What the handle reaches depends on the tenant's [isolation mode](Isolation):
///
/// - [`Isolation::Database`]: the tenant's own database, through a pool from the
///   [`Tenancy`]'s bounded cache (see [`TenancyBuilder::tenant_connection_budget`]).
///   The pool is opened on first use, not when the handle is made, and an evicted pool
///   is reopened transparently on the next call; a handle stays valid for the life of
///   its `Tenancy`. When the budget is full, opening a pool evicts the least recently
///   used one and waits for it to close; if every pool stays busy (say, a transaction on
///   one tenant held open while another tenant is used, under a budget of one pool) the
///   call fails after 8 seconds with `DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)`,
///   as a full pool would.
/// - [`Isolation::Table`] on a PostgreSQL master: the shared tables of the master
///   database, under the row-level security [`enable_row_security`] sets up (the
///   migrator of `tenancy-migrate` runs it). With [`TenantBinding::TenantPools`] (the
///   default) the handle uses the tenant's own pool, logged in as its login role: the
///   policies read the tenant from the session's login role (`session_user`, which no
///   statement can change: `SET ROLE` and `set_config` do not rebind it), the role has
///   no way around them, and
///   single statements cost no extra round trip. With
///   [`TenantBinding::SharedTransactions`] (or for a tenant without a login role) every
///   statement runs in a transaction of the master pool that first binds the tenant with
///   `set_config('tenancy.tenant_id', <tenant>, true)` and `set_config('role', <the application role>, true)`:
///   the policies then show and accept only the tenant's rows, inserts get the tenant
///   stamped through the column default, and a filter that forgets the tenant still
///   sees nothing else. The settings are transaction-scoped (with `search_path` set to
///   `public, pg_temp`), and the session is reset before the commit, so nothing stays on
///   the pooled connection (safe behind PgBouncer in transaction mode); the role switch
///   subjects even a superuser or `BYPASSRLS` master connection to the policies.
///   [`begin`](TransactionTrait::begin) returns a transaction bound the same way.
///   Streaming straight from the handle is refused with a [`DbErr::Custom`]: sea-orm's
///   stream borrows its transaction, so stream inside `handle.begin()` instead. The
///   binding guards sea-orm code against a forgotten filter, not against hostile raw
///   SQL: a statement that itself runs `RESET ROLE` or `set_config` can undo it (see
///   [`TenantBinding::SharedTransactions`]).
/// - [`Isolation::Schema`] (PostgreSQL master only): the tenant's schema in the master
///   database. With [`TenantBinding::TenantPools`] (the default) the handle uses the
///   tenant's own pool, logged in as its login role, whose `search_path` is the schema
///   and which may use no other schema. With [`TenantBinding::SharedTransactions`] (or for
///   a tenant without a login role) every statement runs in a transaction of the master
///   pool that first sets
///   `set_config('search_path', '<the quoted schema>, pg_temp', true)`: the tenant's
///   schema, so an unqualified table never falls through to `public` (where
///   table-isolated tenants keep their shared tables), and the temporary schema last, so
///   a temporary table never shadows the tenant's. The setting is transaction-scoped and
///   the session is reset before the commit, so nothing stays on the pooled connection
///   (safe behind PgBouncer in transaction mode).
///   [`begin`](TransactionTrait::begin) returns a transaction bound the same way, and
///   streaming works as for table isolation: inside `handle.begin()`, not on the handle.
///   The binding guards sea-orm code, not hostile raw SQL: a schema-qualified name or a
///   statement that changes `search_path` reaches past it (see
///   [`TenantBinding::SharedTransactions`]).
/// - [`Isolation::Cache`]: nothing relational. Every call returns a [`DbErr::Custom`]
///   saying that the tenant uses cache isolation and has no relational storage.
///
/// - [`Isolation::Table`] on a SQLite master, which has no row-level security or
///   privileges: the handle runs statements on the master's tables, and checks every
///   statement against an allowlist first. A table-isolated tenant may run only
///   `SELECT`, `INSERT`, `UPDATE` and `DELETE` (with common table expressions), and only
///   on the tables the linked models declare: its `#[tenant_scoped]` tables
///   ([`crate::scoped_models`]), rewritten so they reach only its rows (reads, joins,
///   subqueries and counts see them alone, updates and deletes are confined to them,
///   inserts get the tenant stamped, a statement that would assign another tenant is
///   refused), and the [`shared`](macro@crate::shared) tables ([`crate::shared_models`]),
///   read as they are and written only when declared `#[tenancy::shared(writable)]`.
///   Everything else is refused with a [`DbErr::Custom`] naming the table or statement
///   and why ([`crate::Error::UnscopableStatement`]): the registry `tenancy_tenants`,
///   tables no linked model declares (so a binary that links none of the app's models
///   reaches no table at all), views, `sqlite_master`, another schema than `main`,
///   pragma functions, `load_extension`, `ATTACH`, `PRAGMA`, DDL and temporary objects,
///   transaction control, and SQL tenancy cannot parse. The statements share the master
///   pool with the library's own registry queries: no statement the allowlist passes can
///   change a connection's state (no temporary object to shadow the registry, no
///   attached file, no pragma, no transaction left open), so what a tenant runs cannot
///   reach the library's next query on that connection. Transactions and streams work
///   on the handle and inside its transactions, checked alike. (A SQLite master cannot
///   have schema tenants at all.)
/// - Any other SQLite tenant (database isolation, its own file): `ATTACH` and `DETACH`
///   (and `VACUUM ... INTO`) are refused on the handle, in its transactions, in
///   multi-statement `execute_unprepared` calls and for streams, so a tenant's connection
///   never reaches the master's registry or another tenant's file, and no attachment
///   stays on a pooled connection. sqlx exposes no authorizer or attached-database limit
///   without `unsafe`, so the statement's tokens are inspected: the keyword refused
///   wherever it appears unquoted (SQLite attaches only through that statement).
///
/// Cheap to clone (one reference count). Its `Debug` output names the tenant and its
/// mode only, never a credential.
///
/// [`TenancyBuilder::tenant_connection_budget`]: crate::TenancyBuilder::tenant_connection_budget
/// [`enable_row_security`]: crate::enable_row_security
#[derive(Clone)]
pub struct TenantConnection {
    inner: Arc<Inner>,
}

struct Inner {
    tenancy: Tenancy,
    tenant: Tenant,
    /// Known without connecting: `get_database_backend` is synchronous.
    backend: DbBackend,
}

impl std::fmt::Debug for TenantConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantConnection")
            .field("tenant", &self.inner.tenant.id)
            .field("isolation", &self.inner.tenant.isolation)
            .finish_non_exhaustive()
    }
}

impl Tenancy {
    /// The handle of a ready tenant, for its database-isolated, schema- or table-isolated
    /// (PostgreSQL master) or cache-isolated data.
    ///
    /// Looks the tenant up in the registry on every call (a single-row query); the handle
    /// itself can be kept and cloned freely. No connection to the tenant's database is
    /// opened here: that happens on the handle's first use.
    ///
    /// # Errors
    /// - [`Error::TenantNotFound`] when no tenant has this id;
    /// - [`Error::TenantNotReady`] when the tenant is still being provisioned;
    /// - [`Error::HandleNotYetSupported`] for a schema tenant a SQLite master's registry
    ///   claims to have (schema isolation needs PostgreSQL);
    /// - [`Error::CorruptRegistry`] when a database tenant's config does not say where its
    ///   database is (or names a SQLite file while the master is not a SQLite file), or a
    ///   schema tenant's config names no schema;
    /// - [`Error::Database`] when the registry cannot be read.
    pub async fn tenant(&self, id: &TenantId) -> Result<TenantConnection> {
        let tenant = self.get_tenant(id).await?;
        if tenant.status != TenantStatus::Ready {
            return Err(Error::TenantNotReady { tenant: id.to_string(), status: tenant.status });
        }
        let corrupt = |reason: &str| Error::CorruptRegistry { tenant: id.to_string(), reason: reason.to_owned() };
        let backend = match tenant.isolation {
            Isolation::Database => match &tenant.config.database {
                Some(DatabaseConfig::Postgres(_)) => DbBackend::Postgres,
                Some(DatabaseConfig::Sqlite(_)) if self.sqlite_dir().is_some() => DbBackend::Sqlite,
                Some(DatabaseConfig::Sqlite(_)) => return Err(corrupt("SQLite tenant database without a master file")),
                None => return Err(corrupt("database tenant without a database config")),
            },
            // Nothing relational is reached; the master's backend is as good as any for
            // the statements sea-orm builds before the call is refused.
            Isolation::Cache => self.master().get_database_backend(),
            Isolation::Table => self.master().get_database_backend(),
            Isolation::Schema if self.master().get_database_backend() == DbBackend::Postgres => {
                if tenant.config.schema.is_none() {
                    return Err(corrupt("schema tenant without a schema"));
                }
                DbBackend::Postgres
            }
            isolation @ Isolation::Schema => {
                return Err(Error::HandleNotYetSupported { tenant: id.to_string(), isolation });
            }
        };
        Ok(TenantConnection { inner: Arc::new(Inner { tenancy: self.clone(), tenant, backend }) })
    }
}

impl TenantConnection {
    /// The tenant, as the registry recorded it when the handle was made.
    pub fn tenant(&self) -> &Tenant {
        &self.inner.tenant
    }

    /// The tenant's id.
    pub fn id(&self) -> &TenantId {
        &self.inner.tenant.id
    }

    /// The tenant's isolation mode.
    pub fn isolation(&self) -> Isolation {
        self.inner.tenant.isolation
    }

    /// Reaches the tenant's storage now, with one trivial statement, so that a wrong
    /// secret key, refused credentials or an unreachable server surface as the
    /// [`Error`] they are ([`Error::Decrypt`], [`Error::CannotConnect`], ...) rather than
    /// as a database error of the first real statement. Commands call it before asking
    /// their questions. A cache tenant has nothing relational to reach: `Ok`.
    ///
    /// # Errors
    /// What opening the tenant's pool or running `SELECT 1` on its storage fails with.
    pub async fn ping(&self) -> Result<()> {
        let inner = &*self.inner;
        let select_one = Statement::from_string(inner.backend, "SELECT 1");
        match inner.tenant.isolation {
            Isolation::Cache => return Ok(()),
            _ if self.bound() || self.sqlite_scoped() => {
                inner.tenancy.master().execute_raw(select_one).await?;
            }
            _ => {
                let lease = inner.tenancy.pools().lease(&inner.tenancy, &inner.tenant).await?;
                lease.connection().execute_raw(select_one).await?;
            }
        }
        Ok(())
    }

    /// A lease on the tenant's pool for one operation, so the pool is not closed under it.
    async fn lease(&self) -> Result<Arc<PoolEntry>, DbErr> {
        let inner = &*self.inner;
        match inner.tenant.isolation {
            Isolation::Database | Isolation::Schema | Isolation::Table => {
                inner.tenancy.pools().lease(&inner.tenancy, &inner.tenant).await.map_err(to_db_err)
            }
            // Cache tenants have nothing to lease.
            Isolation::Cache => Err(DbErr::Custom(format!(
                "tenant '{}' uses {} isolation and has no relational storage",
                inner.tenant.id, inner.tenant.isolation
            ))),
        }
    }
}

impl TenantConnection {
    /// Whether calls run in a tenant-bound transaction of the master pool: schema and
    /// table isolation with [`TenantBinding::SharedTransactions`], or for a tenant that
    /// has no login role of its own.
    fn bound(&self) -> bool {
        let inner = &*self.inner;
        matches!(inner.tenant.isolation, Isolation::Schema | Isolation::Table)
            && inner.backend == DbBackend::Postgres
            && (inner.tenancy.tenant_binding() == TenantBinding::SharedTransactions
                || inner.tenant.config.login.is_none())
    }

    /// A transaction of the master pool bound to the tenant for its whole life, with
    /// transaction-scoped settings (`set_config(..., true)`) that end with it and never
    /// reach the next user of the pooled connection; savepoints nested in it stay bound:
    ///
    /// - table isolation: the tenant id in `tenancy.tenant_id`, the application role, and
    ///   `search_path` set to `public, pg_temp`;
    /// - schema isolation: `search_path` set to the tenant's schema, then `pg_temp`.
    ///
    /// `pg_temp` is named last so that a temporary relation never shadows a table of the
    /// tenant (PostgreSQL searches it first when it is not named). It must end with
    /// [`end_bound`] (or a rollback), which removes what the tenant's statements left on
    /// the session before the connection goes back to the pool.
    ///
    /// A single statement through the handle therefore costs four extra round trips
    /// (BEGIN, the `set_config` query, the session reset, COMMIT); removing them
    /// (pipelining, binding in the statement itself, or schema-qualified statements for
    /// schema isolation) is future work.
    async fn begin_bound(&self, options: TransactionOptions) -> Result<DatabaseTransaction, DbErr> {
        let tenant = &self.inner.tenant;
        let bind = match tenant.isolation {
            Isolation::Schema => {
                // Checked by `Tenancy::tenant`; a handle never exists without it.
                let schema = tenant.config.schema.as_deref().ok_or_else(|| {
                    DbErr::Custom(format!("tenant '{}' is a schema tenant without a schema", tenant.id))
                })?;
                // `pg_temp` last: unless named, PostgreSQL searches the temporary schema
                // first, and a temporary relation would shadow the tenant's tables.
                Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT set_config('search_path', $1, true)",
                    [format!("{}, pg_temp", crate::sql::quote_ident(schema)).into()],
                )
            }
            _ => {
                let role = self.inner.tenancy.app_role().await.map_err(to_db_err)?.to_owned();
                // The shared tables live in `public` (where `enable_row_security` secures
                // them); `pg_temp` last, as for schema tenants.
                Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT set_config($1, $2, true), set_config('role', $3, true), \
                     set_config('search_path', 'public, pg_temp', true)",
                    [crate::rls::TENANT_SETTING.into(), tenant.id.as_str().into(), role.into()],
                )
            }
        };
        let txn = self.inner.tenancy.master().begin_with_options(options).await?;
        txn.execute_raw(bind).await?;
        Ok(txn)
    }
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

/// Commits a transaction from [`TenantConnection::begin_bound`] after resetting the
/// session ([`RESET_SESSION`]).
///
/// A transaction that PostgreSQL has already aborted (a statement in it failed) refuses
/// the reset; it is rolled back instead, which undoes everything it did, and `Ok` is
/// returned as for sea-orm's own commit of such a transaction (PostgreSQL answers that
/// `COMMIT` with a rollback, not an error). Any other failure of the reset rolls back and
/// is returned.
pub(crate) async fn end_bound(txn: DatabaseTransaction) -> Result<(), DbErr> {
    match txn.execute_unprepared(RESET_SESSION).await {
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

impl TenantConnection {
    /// Whether `err` is PostgreSQL refusing a statement the driver prepared and cached
    /// before the tenant's tables changed shape (a migration ran meanwhile). If so, the
    /// tenant's pool is closed, so the caller can retry once on new connections: the
    /// statement failed before running, so nothing was done twice.
    pub(crate) fn stale_plan(&self, err: &DbErr) -> bool {
        let stale = err.to_string().contains("cached plan must not change result type");
        if stale {
            tracing::info!(tenant = %self.inner.tenant.id, "tables changed shape; reopening the tenant's pool");
            self.inner.tenancy.reset_tenant_pool(&self.inner.tenant.id);
        }
        stale
    }
}

impl TenantConnection {
    /// `stmt` as it may run for this tenant: on a SQLite master, a table-isolated
    /// tenant's statement is checked against the allowlist of [`crate::sqlite_scope`] and
    /// rewritten to reach only the tenant's rows, or refused; any other SQLite tenant's
    /// statement is refused if it would attach a database; everything else is returned as
    /// it is.
    pub(crate) fn scope_statement(&self, stmt: Statement) -> Result<Statement, DbErr> {
        if self.sqlite_scoped() {
            let catalog = catalog()?;
            return crate::sqlite_scope::scope_statement(stmt, self.id().as_str(), &catalog).map_err(to_db_err);
        }
        if self.inner.backend == DbBackend::Sqlite {
            crate::sqlite_scope::refuse_attach(&stmt.sql, self.id().as_str()).map_err(to_db_err)?;
        }
        Ok(stmt)
    }

    /// [`Self::scope_statement`] for `execute_unprepared`: `Some` statements to run (in
    /// order, with `execute_raw`) instead of `sql`, or `None` to run `sql` as it is.
    pub(crate) fn scope_unprepared(&self, sql: &str) -> Result<Option<Vec<Statement>>, DbErr> {
        if self.sqlite_scoped() {
            let catalog = catalog()?;
            let statements =
                crate::sqlite_scope::scope_unprepared(sql, self.id().as_str(), &catalog).map_err(to_db_err)?;
            return Ok(Some(statements));
        }
        if self.inner.backend == DbBackend::Sqlite {
            crate::sqlite_scope::refuse_attach(sql, self.id().as_str()).map_err(to_db_err)?;
        }
        Ok(None)
    }

    /// Whether statements are checked and scoped by rewriting: table isolation on a
    /// SQLite master.
    fn sqlite_scoped(&self) -> bool {
        self.inner.tenant.isolation == Isolation::Table && self.inner.backend == DbBackend::Sqlite
    }

    /// Runs `sql` through `db`, checked and scoped as [`Self::scope_unprepared`] says; the
    /// result of the last statement.
    pub(crate) async fn run_unprepared<C: ConnectionTrait>(&self, db: &C, sql: &str) -> Result<ExecResult, DbErr> {
        match self.scope_unprepared(sql)? {
            None => db.execute_unprepared(sql).await,
            Some(statements) => run_in_order(db, statements).await,
        }
    }
}

/// Runs `statements` one after the other on `db`; the result of the last.
async fn run_in_order<C: ConnectionTrait>(db: &C, statements: Vec<Statement>) -> Result<ExecResult, DbErr> {
    let mut last = None;
    for stmt in statements {
        last = Some(db.execute_raw(stmt).await?);
    }
    last.ok_or_else(|| DbErr::Custom("no statement to run".to_owned()))
}

/// The tables a table-isolated tenant on a SQLite master may reach: the table-scoped
/// models' tables and tenant columns and the shared models' tables, read from the
/// registries once. A model that is not linked into the program is not there, so its
/// table is refused: an incomplete registry fails closed.
fn catalog() -> Result<crate::sqlite_scope::Catalog<'static>, DbErr> {
    type Tables = (Vec<crate::sqlite_scope::ScopedTable<'static>>, Vec<crate::sqlite_scope::SharedTable<'static>>);
    static TABLES: std::sync::OnceLock<Result<Tables, String>> = std::sync::OnceLock::new();
    let tables = TABLES.get_or_init(|| {
        let scoped = crate::scoped_models().map_err(|err| err.to_string())?;
        let shared = crate::shared_models().map_err(|err| err.to_string())?;
        let scoped = scoped
            .iter()
            .filter_map(|model| {
                // A cache-scoped model without a tenant column has none: its table, if
                // any, is not a tenant's (and is refused like any undeclared table).
                let column = model.scope().table_column()?;
                Some(crate::sqlite_scope::ScopedTable { table: model.table(), column })
            })
            .collect();
        let shared = shared
            .iter()
            .map(|model| crate::sqlite_scope::SharedTable { table: model.table(), writable: model.writable() })
            .collect();
        Ok((scoped, shared))
    });
    match tables {
        Ok((scoped, shared)) => Ok(crate::sqlite_scope::Catalog { scoped, shared }),
        Err(message) => Err(DbErr::Custom(message.clone())),
    }
}

/// A `tenancy` error met while opening a tenant pool, as the `DbErr` sea-orm's traits
/// return: the driver's own error where there is one, the message otherwise.
fn to_db_err(err: Error) -> DbErr {
    match err {
        Error::Database(err) | Error::CannotConnect { source: err, .. } => err,
        other => DbErr::Custom(other.to_string()),
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for TenantConnection {
    fn get_database_backend(&self) -> DbBackend {
        self.inner.backend
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        if self.bound() {
            let txn = self.begin_bound(TransactionOptions::default()).await?;
            let result = txn.execute_raw(stmt).await?;
            end_bound(txn).await?;
            return Ok(result);
        }
        let stmt = self.scope_statement(stmt)?;
        if self.sqlite_scoped() {
            return self.inner.tenancy.master().execute_raw(stmt).await;
        }
        let result = self.lease().await?.connection().execute_raw(stmt.clone()).await;
        match result {
            Err(err) if self.stale_plan(&err) => self.lease().await?.connection().execute_raw(stmt).await,
            other => other,
        }
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        if self.bound() {
            let txn = self.begin_bound(TransactionOptions::default()).await?;
            let result = txn.execute_unprepared(sql).await?;
            end_bound(txn).await?;
            return Ok(result);
        }
        if let Some(statements) = self.scope_unprepared(sql)? {
            // Table isolation on a SQLite master: the checked, scoped statements.
            return run_in_order(self.inner.tenancy.master(), statements).await;
        }
        let result = self.lease().await?.connection().execute_unprepared(sql).await;
        match result {
            Err(err) if self.stale_plan(&err) => self.lease().await?.connection().execute_unprepared(sql).await,
            other => other,
        }
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        if self.bound() {
            let txn = self.begin_bound(TransactionOptions::default()).await?;
            let result = txn.query_one_raw(stmt).await?;
            end_bound(txn).await?;
            return Ok(result);
        }
        let stmt = self.scope_statement(stmt)?;
        if self.sqlite_scoped() {
            return self.inner.tenancy.master().query_one_raw(stmt).await;
        }
        let result = self.lease().await?.connection().query_one_raw(stmt.clone()).await;
        match result {
            Err(err) if self.stale_plan(&err) => self.lease().await?.connection().query_one_raw(stmt).await,
            other => other,
        }
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        if self.bound() {
            let txn = self.begin_bound(TransactionOptions::default()).await?;
            let result = txn.query_all_raw(stmt).await?;
            end_bound(txn).await?;
            return Ok(result);
        }
        let stmt = self.scope_statement(stmt)?;
        if self.sqlite_scoped() {
            return self.inner.tenancy.master().query_all_raw(stmt).await;
        }
        let result = self.lease().await?.connection().query_all_raw(stmt.clone()).await;
        match result {
            Err(err) if self.stale_plan(&err) => self.lease().await?.connection().query_all_raw(stmt).await,
            other => other,
        }
    }
}

impl StreamTrait for TenantConnection {
    // The pool's stream owns its connection, so it outlives the lease: an evicted pool's
    // close waits for that connection to come back, and the budget still counts it.
    type Stream<'a> = QueryStream;

    fn get_database_backend(&self) -> DbBackend {
        self.inner.backend
    }

    fn stream_raw<'a>(
        &'a self,
        stmt: Statement,
    ) -> Pin<Box<dyn Future<Output = Result<Self::Stream<'a>, DbErr>> + 'a + Send>> {
        Box::pin(async move {
            if self.bound() {
                return Err(DbErr::Custom(format!(
                    "tenant '{}' uses {} isolation: stream inside a transaction of its handle \
                     (`handle.begin()`), which is bound to the tenant",
                    self.inner.tenant.id, self.inner.tenant.isolation
                )));
            }
            let stmt = self.scope_statement(stmt)?;
            if self.sqlite_scoped() {
                return self.inner.tenancy.master().stream_raw(stmt).await;
            }
            let lease = self.lease().await?;
            lease.connection().stream_raw(stmt).await
        })
    }
}

#[async_trait::async_trait]
impl TransactionTrait for TenantConnection {
    // sea-orm's transaction on the tenant's storage, wrapped so that every statement in it
    // keeps the handle's guarantees (see `TenantTransaction`).
    type Transaction = TenantTransaction;

    async fn begin(&self) -> Result<TenantTransaction, DbErr> {
        self.begin_with_options(TransactionOptions::default()).await
    }

    async fn begin_with_config(
        &self,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<TenantTransaction, DbErr> {
        self.begin_with_options(TransactionOptions { isolation_level, access_mode, ..Default::default() }).await
    }

    async fn begin_with_options(&self, options: TransactionOptions) -> Result<TenantTransaction, DbErr> {
        if self.bound() {
            return Ok(TenantTransaction::bound(self.begin_bound(options).await?, self.clone()));
        }
        let txn = if self.sqlite_scoped() {
            self.inner.tenancy.master().begin_with_options(options).await?
        } else {
            self.lease().await?.connection().begin_with_options(options).await?
        };
        Ok(TenantTransaction::new(txn, self.clone()))
    }

    async fn transaction<F, T, E>(&self, callback: F) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(&'c TenantTransaction) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>> + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        crate::transaction::run(self.begin().await.map_err(TransactionError::Connection)?, callback).await
    }

    async fn transaction_with_config<F, T, E>(
        &self,
        callback: F,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(&'c TenantTransaction) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>> + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        let txn = self.begin_with_config(isolation_level, access_mode).await.map_err(TransactionError::Connection)?;
        crate::transaction::run(txn, callback).await
    }
}

impl TenantConnection {
    /// The [`Tenancy`] the handle came from (for the cache module).
    pub(crate) fn tenancy(&self) -> &Tenancy {
        &self.inner.tenancy
    }
}
