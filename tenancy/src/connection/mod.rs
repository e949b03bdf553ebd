//! The tenant connection: [`TenantConnection`] (a tenant's handle, which every sea-orm call
//! accepts), its transactions, the pools behind it, the binding of shared transactions,
//! the task-local context and the tower layer.
//!
//! A handle picks its [`Route`] once, when it is made (from the tenant's placement, by
//! its storage driver); every `ConnectionTrait`, `StreamTrait` and `TransactionTrait`
//! method then decides and delegates in a line or two, as sea-orm's own wrappers do.

pub(crate) mod binding;
mod call;
pub mod context;
#[cfg(feature = "tower")]
pub mod layer;
pub mod pooler;
pub(crate) mod pools;
pub(crate) mod transaction;
pub(crate) mod url;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tracing::Instrument;

use sea_orm::{
    AccessMode, ConnectionTrait, DbBackend, DbErr, ExecResult, IsolationLevel, QueryResult, QueryStream, Statement,
    StreamTrait, TransactionError, TransactionOptions, TransactionTrait,
};

pub(crate) use self::binding::Binding;
pub use self::binding::TenantBinding;
use self::binding::{begin_bound, end_bound};
pub(crate) use self::call::to_db_err;
use self::call::{Call, Check, Execute, QueryAll, QueryOne, Unprepared};
use self::pooler::Pooler;
use self::pools::PoolEntry;
use self::transaction::TenantTransaction;
use crate::table_isolation::sqlite_rewrite;
use crate::{Error, Isolation, Result, Tenancy, Tenant, TenantId, TenantStatus};

/// How a handle reaches its tenant's storage: decided once, when it is made.
#[derive(Clone, Debug)]
pub(crate) enum Route {
    /// A pool of the tenant's own: a database tenant's database, or the master database
    /// logged in as a schema or table tenant's role. `sqlite`: a SQLite file, whose
    /// statements are checked for `ATTACH`.
    OwnPool { sqlite: bool },
    /// Transactions of the master pool, bound to the tenant.
    Bound(Binding),
    /// A table tenant on a SQLite master: statements checked and rewritten, on the master
    /// pool.
    SqliteRewrite,
    /// A cache tenant: nothing relational.
    NoStorage,
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
/// let acme = tenancy.tenant("acme").await?;
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
///   the pooled connection (behind PgBouncer in transaction mode too, see
///   [`crate::pooler`]); the role switch
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
///   (behind PgBouncer in transaction mode too, see [`crate::pooler`]).
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
    route: Route,
    /// Known without connecting: `get_database_backend` is synchronous.
    backend: DbBackend,
    /// The server (name or address) found unreachable by a call of this handle, for the
    /// tower layer's answer.
    unavailable: std::sync::OnceLock<String>,
}

impl std::fmt::Debug for TenantConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantConnection")
            .field("tenant", self.id())
            .field("isolation", &self.isolation())
            .finish_non_exhaustive()
    }
}

impl TenantConnection {
    /// The handle of `tenant`, which must be ready (see [`Tenancy::tenant`]).
    pub(crate) fn open(tenancy: Tenancy, tenant: Tenant) -> Result<TenantConnection> {
        if tenant.status() == TenantStatus::Suspended {
            let reason = tenant.suspension().and_then(|suspension| suspension.reason.clone());
            return Err(Error::TenantSuspended { tenant: tenant.id().to_string(), reason });
        }
        if tenant.status() == TenantStatus::Moving {
            return Err(Error::TenantMoving { tenant: tenant.id().to_string() });
        }
        if tenant.status() != TenantStatus::Ready {
            return Err(Error::TenantNotReady { tenant: tenant.id().to_string(), status: tenant.status() });
        }
        let route = crate::storage::route(&tenancy, &tenant)?;
        let backend = match (&route, tenant.placement().database()) {
            (Route::OwnPool { sqlite: true }, _) => DbBackend::Sqlite,
            (_, Some(_)) => DbBackend::Postgres,
            // Schema, table and cache tenants live on (or beside) the master; for a cache
            // tenant its backend is as good as any for the statements sea-orm builds
            // before the call is refused.
            _ => tenancy.master().get_database_backend(),
        };
        Ok(TenantConnection {
            inner: Arc::new(Inner { tenancy, tenant, route, backend, unavailable: std::sync::OnceLock::new() }),
        })
    }

    /// The tenant, as the registry recorded it when the handle was made.
    pub fn tenant(&self) -> &Tenant {
        &self.inner.tenant
    }

    /// The tenant's id.
    pub fn id(&self) -> &TenantId {
        self.inner.tenant.id()
    }

    /// The tenant's isolation mode.
    pub fn isolation(&self) -> Isolation {
        self.inner.tenant.isolation()
    }

    /// The tenant's namespace in the cache: the same for every handle of the tenant.
    ///
    /// Works for every isolation mode; for an [`Isolation::Cache`] tenant it is the
    /// tenant's only storage.
    pub fn cache(&self) -> crate::cache::TenantCache {
        self.inner.tenancy.shared_cache().tenant(self.id())
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
        // Without values, in one round trip: nothing prepared, safe behind any pooler.
        let select_one = "SELECT 1";
        match &self.inner.route {
            Route::NoStorage => {}
            Route::Bound(_) | Route::SqliteRewrite => {
                self.inner.tenancy.master().execute_unprepared(select_one).await?;
            }
            Route::OwnPool { .. } => {
                let lease = self.open_lease().await?;
                if let Err(err) = lease.connection().execute_unprepared(select_one).await {
                    return Err(self.failure(&lease, err).await);
                }
            }
        }
        Ok(())
    }

    /// Opens the tenant's own pool if it is not open yet (a cached pool costs a lookup),
    /// so that an unreachable server shows as [`Error::ServerUnavailable`] before a
    /// request's handler (or a job) runs. Tenants without a pool of their own: `Ok`,
    /// nothing done.
    pub(crate) async fn open_pool(&self) -> Result<()> {
        match &self.inner.route {
            Route::OwnPool { .. } => self.open_lease().await.map(drop),
            _ => Ok(()),
        }
    }

    /// The server a call of this handle found unreachable, if any: its registered name,
    /// else `host:port`.
    #[cfg(feature = "tower")]
    pub(crate) fn unavailable_server(&self) -> Option<&str> {
        self.inner.unavailable.get().map(String::as_str)
    }

    /// A lease on the tenant's own pool for one operation, so the pool is not closed
    /// under it.
    async fn open_lease(&self) -> Result<Arc<PoolEntry>> {
        let (tenancy, tenant) = (&self.inner.tenancy, &self.inner.tenant);
        match tenancy.pools().lease(tenant.id(), || crate::storage::pool_url(tenancy, tenant)).await {
            Err(err @ Error::ServerUnavailable { .. }) => Err(self.unavailable(err).await),
            other => other,
        }
    }

    async fn lease(&self) -> Result<Arc<PoolEntry>, DbErr> {
        self.open_lease().await.map_err(to_db_err)
    }

    /// `err` of a call on `lease`, or [`Error::ServerUnavailable`] (as a connection error)
    /// when it was the loss of the server (see [`TenantPools::after_failure`]).
    ///
    /// [`TenantPools::after_failure`]: pools::TenantPools::after_failure
    async fn failed(&self, lease: &PoolEntry, err: DbErr) -> DbErr {
        to_db_err(self.failure(lease, err).await)
    }

    /// [`TenantConnection::failed`] as a tenancy error.
    async fn failure(&self, lease: &PoolEntry, err: DbErr) -> Error {
        match self.inner.tenancy.pools().after_failure(self.id(), lease, &err).await {
            Some(unavailable) => self.unavailable(unavailable).await,
            None => Error::Database(err),
        }
    }

    /// `err` ([`Error::ServerUnavailable`] from the pools, which know addresses only)
    /// naming the registered server at the address, recorded on the handle.
    async fn unavailable(&self, err: Error) -> Error {
        let Error::ServerUnavailable { tenant, address, source, .. } = err else { return err };
        let server = self.inner.tenancy.server_name_at(&address).await.unwrap_or_else(|| address.clone());
        let _ = self.inner.unavailable.set(server.clone());
        Error::ServerUnavailable { tenant, server, address, source }
    }

    /// What every statement of the handle and its transactions goes through.
    pub(crate) fn check(&self) -> Check<'_> {
        match &self.inner.route {
            Route::SqliteRewrite => Check::Rewrite(self.id()),
            Route::OwnPool { sqlite: true } => Check::RefuseAttach(self.id()),
            _ => Check::None,
        }
    }

    /// The refusal of a relational call on a cache tenant.
    fn no_storage(&self) -> DbErr {
        DbErr::Custom(format!(
            "tenant '{}' uses {} isolation and has no relational storage",
            self.id(),
            self.isolation()
        ))
    }

    /// Runs one call the way the route says.
    async fn dispatch<Q: Call>(&self, call: Q) -> Result<Q::Output, DbErr> {
        self.dispatch_in_span(call).instrument(self.statement_span(Q::KIND)).await
    }

    /// The span a statement of this tenant runs in (`tenant_statement`, at debug level):
    /// the tenant, its isolation and the kind of call; never the statement's values, nor its
    /// text (an unprepared statement carries its values in it).
    pub(crate) fn statement_span(&self, kind: &'static str) -> tracing::Span {
        tracing::debug_span!("tenant_statement", tenant = %self.id(), isolation = %self.isolation(), kind)
    }

    async fn dispatch_in_span<Q: Call>(&self, call: Q) -> Result<Q::Output, DbErr> {
        match &self.inner.route {
            Route::Bound(binding) => {
                let txn = begin_bound(&self.inner.tenancy, self.id().as_str(), binding, Default::default()).await?;
                let output = call.run(&txn).await?;
                end_bound(txn, &self.inner.tenancy).await?;
                Ok(output)
            }
            Route::SqliteRewrite => call.checked(self.check())?.run(self.inner.tenancy.master()).await,
            Route::OwnPool { .. } => {
                let call = call.checked(self.check())?;
                let pooler = self.inner.tenancy.pooler();
                let first = {
                    // The lease ends before a retry: the evicted pool gives its share of
                    // the budget back only once nothing holds it.
                    let lease = self.lease().await?;
                    match run_on_pool(call.clone(), lease.connection(), pooler).await {
                        Err(err) => Err(self.failed(&lease, err).await),
                        ok => ok,
                    }
                };
                match first {
                    // Failed before running: retried once on fresh connections.
                    Err(err) if self.stale_plan(&err) => {
                        run_on_pool(call, self.lease().await?.connection(), pooler).await
                    }
                    other => other,
                }
            }
            Route::NoStorage => Err(self.no_storage()),
        }
    }

    /// [`TransactionTrait::begin_with_options`], inside its span.
    async fn begin_in_span(&self, options: TransactionOptions) -> Result<TenantTransaction, DbErr> {
        let tenancy = &self.inner.tenancy;
        match &self.inner.route {
            Route::Bound(binding) => {
                let txn = begin_bound(tenancy, self.id().as_str(), binding, options).await?;
                Ok(TenantTransaction::bound(txn, self.clone()))
            }
            Route::SqliteRewrite => {
                Ok(TenantTransaction::new(tenancy.master().begin_with_options(options).await?, self.clone()))
            }
            Route::OwnPool { .. } => {
                let lease = self.lease().await?;
                let txn = match pooler::begin(lease.connection(), options, tenancy.pooler()).await {
                    Ok(txn) => txn,
                    Err(err) => return Err(self.failed(&lease, err).await),
                };
                Ok(TenantTransaction::new(txn, self.clone()))
            }
            Route::NoStorage => Err(self.no_storage()),
        }
    }

    /// Whether this process reaches PostgreSQL through a transaction-mode pooler.
    fn behind_transaction_pooler(&self) -> bool {
        self.inner.tenancy.pooler() == Pooler::Transaction
    }

    /// Whether `err` is PostgreSQL refusing a statement the driver prepared and cached
    /// before the tenant's tables changed shape (a migration ran meanwhile). If so, the
    /// tenant's pool is closed, so the caller can retry once on new connections: the
    /// statement failed before running, so nothing was done twice.
    pub(crate) fn stale_plan(&self, err: &DbErr) -> bool {
        let stale = err.to_string().contains("cached plan must not change result type");
        if stale {
            tracing::info!(tenant = %self.id(), "tables changed shape; reopening the tenant's pool");
            self.inner.tenancy.reset_tenant_pool(self.id());
        }
        stale
    }
}

/// Runs `call` on a tenant's own pool; behind a transaction-mode pooler a prepared one
/// runs in a transaction of its own (see [`pooler`]), committed before its output is
/// returned.
async fn run_on_pool<Q: Call>(call: Q, pool: &sea_orm::DatabaseConnection, pooler: Pooler) -> Result<Q::Output, DbErr> {
    if pooler != Pooler::Transaction || !call.prepared() {
        return call.run(pool).await;
    }
    let txn = pooler::begin(pool, TransactionOptions::default(), pooler).await?;
    // A failure drops the transaction, which rolls it back.
    let output = call.run(&txn).await?;
    txn.commit().await?;
    Ok(output)
}

/// The tables a table-isolated tenant on a SQLite master may reach: the table-scoped
/// models' tables and tenant columns and the shared models' tables, read from the
/// registries once. A model that is not linked into the program is not there, so its
/// table is refused: an incomplete registry fails closed.
pub(crate) fn catalog() -> Result<sqlite_rewrite::Catalog<'static>, DbErr> {
    type Tables = (Vec<sqlite_rewrite::ScopedTable<'static>>, Vec<sqlite_rewrite::SharedTable<'static>>);
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
                Some(sqlite_rewrite::ScopedTable { table: model.table(), column })
            })
            .collect();
        let shared = shared
            .iter()
            .map(|model| sqlite_rewrite::SharedTable { table: model.table(), writable: model.writable() })
            .collect();
        Ok((scoped, shared))
    });
    match tables {
        Ok((scoped, shared)) => Ok(sqlite_rewrite::Catalog { scoped, shared }),
        Err(message) => Err(DbErr::Custom(message.clone())),
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for TenantConnection {
    fn get_database_backend(&self) -> DbBackend {
        self.inner.backend
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.dispatch(Execute(stmt)).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.dispatch(Unprepared::Sql(sql)).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.dispatch(QueryOne(stmt)).await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.dispatch(QueryAll(stmt)).await
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
        let span = self.statement_span("stream");
        Box::pin(
            async move {
                match &self.inner.route {
                    Route::Bound(_) => Err(DbErr::Custom(format!(
                        "tenant '{}' uses {} isolation: stream inside a transaction of its handle \
                     (`handle.begin()`), which is bound to the tenant",
                        self.id(),
                        self.isolation()
                    ))),
                    Route::SqliteRewrite => self.inner.tenancy.master().stream_raw(self.check().statement(stmt)?).await,
                    Route::OwnPool { .. } if self.behind_transaction_pooler() => Err(DbErr::Custom(format!(
                        "tenant '{}': behind a transaction-mode pooler a stream must run inside a transaction of its \
                     handle (`handle.begin()`), which keeps one server connection for it",
                        self.id()
                    ))),
                    Route::OwnPool { .. } => {
                        let stmt = self.check().statement(stmt)?;
                        let lease = self.lease().await?;
                        match lease.connection().stream_raw(stmt).await {
                            Err(err) => Err(self.failed(&lease, err).await),
                            ok => ok,
                        }
                    }
                    Route::NoStorage => Err(self.no_storage()),
                }
            }
            .instrument(span),
        )
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
        self.begin_in_span(options).instrument(self.statement_span("begin")).await
    }

    async fn transaction<F, T, E>(&self, callback: F) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(&'c TenantTransaction) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>> + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        transaction::run(self.begin().await.map_err(TransactionError::Connection)?, callback).await
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
        transaction::run(txn, callback).await
    }
}
