//! Migrating one tenant: the application's migrator, run in one transaction on the
//! tenant's storage under a per-tenant advisory lock.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;

use sea_orm::sea_query::{Alias, Query};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, Schema, Statement, TransactionTrait,
};
use sea_orm_migration::{MigrationTrait, MigratorTraitSelf, SchemaManager, seaql_migrations};
use tenancy::sql::quote_ident;
use tenancy::{BoxFuture, Isolation, Placement, Tenancy, Tenant};

use crate::{Error, MigrationOutcome, Result};

/// A migrator behind a pointer, so fleets and commands can hold the application's
/// migrator without being generic over it. Built from any sea-orm-migration migrator
/// with [`Migrators::new`].
pub(crate) trait DynMigrator: Send + Sync {
    fn migrations(&self) -> Vec<Box<dyn MigrationTrait>>;
    fn names(&self) -> Vec<String> {
        self.migrations().iter().map(|m| m.name().to_owned()).collect()
    }
    fn table_name(&self) -> String;
    fn pending_read_only<'a>(&'a self, db: &'a DatabaseConnection) -> BoxFuture<'a, Result<Vec<String>, DbErr>>;
}

impl<M: MigratorTraitSelf + 'static> DynMigrator for M {
    fn migrations(&self) -> Vec<Box<dyn MigrationTrait>> {
        MigratorTraitSelf::migrations(self)
    }

    fn table_name(&self) -> String {
        self.migration_table_name().to_string()
    }

    fn pending_read_only<'a>(&'a self, db: &'a DatabaseConnection) -> BoxFuture<'a, Result<Vec<String>, DbErr>> {
        Box::pin(async move {
            Ok(self.get_pending_migrations_read_only(db).await?.iter().map(|m| m.name().to_owned()).collect())
        })
    }
}

/// The application's migrators: the per-tenant one and, optionally, the shared one for
/// the master database's own tables (Django's `SHARED_APPS`), which runs first.
#[derive(Clone)]
pub struct Migrators {
    pub(crate) tenant: Arc<dyn DynMigrator>,
    pub(crate) shared: Option<Arc<dyn DynMigrator>>,
}

impl std::fmt::Debug for Migrators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migrators")
            .field("tenant", &self.tenant.names())
            .field("shared", &self.shared.as_ref().map(|s| s.names()))
            .finish()
    }
}

impl Migrators {
    /// The per-tenant migrator alone.
    pub fn new<M: MigratorTraitSelf + 'static>(tenant: M) -> Self {
        Self { tenant: Arc::new(tenant), shared: None }
    }

    /// Adds the migrator of the master database's shared tables. It must keep its
    /// history in a table of its own (override `migration_table_name`), since table
    /// isolation migrates the tenant tables in the same database.
    pub fn with_shared<S: MigratorTraitSelf + 'static>(mut self, shared: S) -> Self {
        self.shared = Some(Arc::new(shared));
        self
    }

    /// The names of the per-tenant migrations, in order.
    pub fn tenant_migration_names(&self) -> Vec<String> {
        self.tenant.names()
    }
}

/// Advisory-lock namespace of tenant migrations (`'tena'` in ASCII); the second key is
/// PostgreSQL's `hashtext` of the tenant id. A collision only makes two tenants wait for
/// each other, never run together wrongly.
const LOCK_NAMESPACE: i32 = 0x7465_6e61;

/// The lock name of the shared tables that all table-isolated tenants use (`-` cannot
/// appear in a tenant id, so it cannot collide with one).
pub(crate) const SHARED_TABLES_LOCK: &str = "-shared-tables";

/// Where a tenant's migrations run.
enum Target<'a> {
    /// A connection of the master pool; `schema` is set as the transaction's only
    /// `search_path` entry.
    Master { db: &'a DatabaseConnection, schema: Option<&'a str> },
    /// A connection of the tenant's own (closed afterwards); `schema` as for `Master`.
    Own(DatabaseConnection, Option<&'a str>),
    /// The admin pool of a shard database, kept for the next tenant there; `schema` as
    /// for `Master`.
    Shard(DatabaseConnection, &'a str),
}

/// What is known of a tenant's bookkeeping table before its migration transaction
/// starts: what decides the statements sent before the migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Known {
    /// Nothing: its applied versions are read first (one query, outside a transaction),
    /// and nothing more is sent when none is pending.
    Nothing,
    /// A fleet run's batched read ([`applied_in_schemas`]) just found the table and a
    /// pending migration: the transaction starts at once, without looking for the table.
    Behind,
    /// The tenant is being created: it has no bookkeeping table yet.
    Fresh,
}

/// Applies the pending migrations of `migrator` to one tenant, given what is `known` of
/// its bookkeeping.
pub(crate) async fn migrate_one(
    tenancy: &Tenancy,
    tenant: &Tenant,
    migrator: &dyn DynMigrator,
    known: Known,
) -> Result<MigrationOutcome> {
    let (target, lock) = match tenant.placement() {
        Placement::Table { .. } => (Target::Master { db: tenancy.master(), schema: None }, SHARED_TABLES_LOCK),
        Placement::Schema { schema, shard: None, .. } => {
            (Target::Master { db: tenancy.master(), schema: Some(schema) }, tenant.id().as_str())
        }
        Placement::Schema { schema, shard: Some(shard), .. } => {
            (Target::Shard(tenancy.shard_admin_pool(shard).await?, schema), tenant.id().as_str())
        }
        placement => match tenancy.connect_storage(tenant).await? {
            Some(conn) => (Target::Own(conn, placement.schema()), tenant.id().as_str()),
            None => return Ok(MigrationOutcome::NothingToMigrate),
        },
    };
    let (db, schema) = match &target {
        Target::Master { db, schema } => (*db, *schema),
        Target::Own(conn, schema) => (conn, *schema),
        Target::Shard(pool, schema) => (pool, Some(*schema)),
    };
    // Table tenants' migrations change the shared tables: the row-security step secures
    // them in the same transaction (PostgreSQL; on SQLite it checks the foreign keys), so
    // a migration and its securing commit together or not at all.
    let secure = tenant.isolation() == Isolation::Table;
    let result = run_migrations(Conn::Pool(db), schema, lock, migrator, known, secure).await.map_err(|f| f.of(tenant));
    if let Target::Own(conn, _) = target {
        let _ = conn.close().await;
    }
    // Nothing to migrate, but the shared tables may have been secured by an older version
    // (policies that a tenant's `SET ROLE` could get around): secure them now.
    if secure
        && matches!(result, Ok(MigrationOutcome::UpToDate))
        && !tenancy::rls::row_security_is_current(tenancy.master()).await?
    {
        tracing::info!("the shared tables' row security is out of date; securing them again");
        tenancy::enable_row_security(tenancy.master()).await?;
    }
    // Statements this process's handles prepared against the old tables would be refused
    // ("cached plan must not change result type"): the tenant's next use opens new
    // connections. (Table tenants share tables: a change reaches every tenant's pool.)
    if matches!(result, Ok(MigrationOutcome::Applied(_))) {
        match tenant.isolation() {
            Isolation::Table => {
                for other in tenancy.tenants().await?.iter().filter(|t| t.isolation() == Isolation::Table) {
                    tenancy.reset_tenant_pool(other.id());
                }
            }
            _ => {
                tenancy.reset_tenant_pool(tenant.id());
            }
        }
    }
    result
}

/// What the master's shared migrations are reported as (in place of a tenant id).
pub(crate) const SHARED_MASTER_TARGET: &str = "(master: shared tables)";

/// Applies the shared migrator to the master database's own tables.
pub(crate) async fn migrate_master(tenancy: &Tenancy, migrator: &dyn DynMigrator) -> Result<MigrationOutcome> {
    // Scoped tables may come from the shared migrator too: secured in its transaction.
    run_migrations(Conn::Pool(tenancy.master()), None, SHARED_MASTER_LOCK, migrator, Known::Nothing, true)
        .await
        .map_err(|failure| failure.into_error(SHARED_MASTER_TARGET.to_owned()))
}

/// Why [`run_migrations`] failed; [`Failure::of`] makes it the tenant's [`Error`].
enum Failure {
    /// A migration (`Some(name)`) or the bookkeeping around them (`None`) failed.
    Db(Option<String>, DbErr),
    /// A migration panicked; `message` is the panic's text.
    Panicked { migration: String, message: String },
}

impl Failure {
    fn of(self, tenant: &Tenant) -> Error {
        self.into_error(tenant.id().to_string())
    }

    fn into_error(self, tenant: String) -> Error {
        match self {
            Failure::Db(migration, source) => Error::Migration { tenant, migration, source },
            Failure::Panicked { migration, message } => Error::MigrationPanicked { tenant, migration, message },
        }
    }
}

/// The text of a panic's payload (`panic!` with a literal gives a `&str`, with
/// arguments a `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(text), _) => (*text).to_owned(),
        (None, Some(text)) => text.clone(),
        (None, None) => "(no message)".to_owned(),
    }
}

/// The lock name of the master's shared migrations.
const SHARED_MASTER_LOCK: &str = "-master";

/// Where [`run_migrations`] runs: a pool (its own transaction) or a caller's transaction.
#[derive(Clone, Copy)]
enum Conn<'a> {
    Pool(&'a DatabaseConnection),
    Within(&'a DatabaseTransaction),
}

/// Migrates a tenant whose schema a provisioning transaction just created, inside that
/// transaction.
pub(crate) async fn migrate_within(
    txn: &DatabaseTransaction,
    tenant: &Tenant,
    migrator: &dyn DynMigrator,
) -> Result<MigrationOutcome> {
    run_migrations(Conn::Within(txn), tenant.placement().schema(), tenant.id().as_str(), migrator, Known::Fresh, false)
        .await
        .map_err(|f| f.of(tenant))
}

/// Unless `known` says otherwise, the fast path reads the applied versions with one query
/// and returns when nothing is pending. Otherwise one transaction takes the tenant's advisory lock (so two runs never
/// migrate one tenant at once: the second waits, then finds nothing pending), scopes
/// `search_path` to the tenant's schema for that transaction only (safe behind a
/// transaction-mode pooler), and applies every pending migration or none.
///
/// With `secure`, the row-security step ([`tenancy::rls::enable_row_security_in`]) runs
/// in that transaction after the migrations, and its lock is taken before them (the lock
/// order every step follows: a step never waits for a migration's table locks while the
/// migration waits for the step's lock).
///
/// The migrations are applied here rather than through sea-orm-migration's `up`, which
/// re-creates its bookkeeping table three times per call and wraps each migration in a
/// transaction of its own: on PostgreSQL one outer transaction makes the whole tenant
/// atomic, and the bookkeeping is one query to read and one to write. The bookkeeping
/// table and its rows are the same as sea-orm-migration's, so its CLI still works.
///
/// A migration that panics fails like one that returns an error: the panic is caught
/// and the transaction rolled back (dropped uncommitted), so a command reports it and
/// provisioning undoes what it created, instead of the process dying half-way.
///
/// A migrated tenant costs, on PostgreSQL: `BEGIN`, the lock (with `search_path`), the
/// applied versions, the migrations' own statements, one `INSERT` of their bookkeeping,
/// `COMMIT`; plus the fast path's read when nothing is `known`, and a look for the
/// bookkeeping table when that read failed. Every statement but the fast path's has the
/// same text for every tenant, so each is prepared once per connection.
async fn run_migrations(
    conn: Conn<'_>,
    schema: Option<&str>,
    lock: &str,
    migrator: &dyn DynMigrator,
    known: Known,
    secure: bool,
) -> Result<MigrationOutcome, Failure> {
    let table = migrator.table_name();
    // Whether the bookkeeping table is known to exist (`None`: look for it).
    let mut table_exists = match known {
        Known::Nothing => None,
        Known::Behind => Some(true),
        Known::Fresh => Some(false),
    };
    if known == Known::Nothing
        && let Conn::Pool(db) = conn
        && let Some(applied) = applied_versions(db, schema, &table).await
    {
        if migrator.names().iter().all(|name| applied.contains(name)) {
            return Ok(MigrationOutcome::UpToDate);
        }
        table_exists = Some(true);
    }
    let bookkeeping = |source| Failure::Db(None, source);
    let mut previous_search_path = None;
    // Inside a caller's transaction this is a savepoint: a failure rolls back only our part.
    let (backend, txn) = match conn {
        Conn::Pool(db) => (db.get_database_backend(), db.begin().await.map_err(bookkeeping)?),
        Conn::Within(outer) => (outer.get_database_backend(), outer.begin().await.map_err(bookkeeping)?),
    };
    let has_table = match backend {
        DbBackend::Postgres => {
            let qualified = match schema {
                Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(&table)),
                None => quote_ident(&table),
            };
            let search_path = match schema {
                Some(schema) => quote_ident(schema),
                // Database and table tenants keep the connection's own search path.
                None => "\"$user\", public".to_owned(),
            };
            // language=PostgreSQL
            let lock_sql = "SELECT current_setting('search_path'), set_config('search_path', $1, true), \
                            pg_advisory_xact_lock($2, hashtext($3))";
            let row = txn
                .query_one_raw(Statement::from_sql_and_values(
                    backend,
                    lock_sql,
                    [search_path.into(), LOCK_NAMESPACE.into(), lock.into()],
                ))
                .await
                .map_err(bookkeeping)?;
            previous_search_path = row.and_then(|row| row.try_get_by_index::<String>(0).ok());
            if secure {
                txn.execute_raw(Statement::from_sql_and_values(
                    backend,
                    "SELECT pg_advisory_xact_lock($1)",
                    [tenancy::rls::ROW_SECURITY_LOCK.into()],
                ))
                .await
                .map_err(bookkeeping)?;
            }
            if let Some(exists) = table_exists {
                // Seen by a read before the transaction (tables are not dropped under a
                // run), or a tenant being created, which has none yet: no need to look.
                exists
            } else {
                // A statement of its own: its snapshot is taken after the lock was granted, so
                // it sees what a run that held the lock before us committed.
                let row = txn
                    .query_one_raw(Statement::from_sql_and_values(
                        backend,
                        "SELECT to_regclass($1) IS NOT NULL",
                        [qualified.into()],
                    ))
                    .await
                    .map_err(bookkeeping)?;
                row.map(|row| row.try_get_by_index::<bool>(0)).transpose().map_err(bookkeeping)?.unwrap_or(false)
            }
        }
        _ => txn
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                [table.clone().into()],
            ))
            .await
            .map_err(bookkeeping)?
            .is_some(),
    };
    if !has_table {
        let mut create = Schema::new(backend).create_table_from_entity(seaql_migrations::Entity);
        create.table(Alias::new(table.as_str())).if_not_exists();
        txn.execute(&create).await.map_err(bookkeeping)?;
    }
    // Read after creating too: a run that held the lock before us may have created the
    // table and recorded its migrations even though our probe did not see the table.
    let applied: HashSet<String> = txn
        .query_all_raw(Statement::from_string(backend, format!("SELECT version FROM {}", quote_ident(&table))))
        .await
        .map_err(bookkeeping)?
        .iter()
        .map(|row| row.try_get_by_index::<String>(0))
        .collect::<Result<_, _>>()
        .map_err(bookkeeping)?;
    let pending: Vec<Box<dyn MigrationTrait>> =
        migrator.migrations().into_iter().filter(|m| !applied.contains(m.name())).collect();
    if pending.is_empty() {
        txn.commit().await.map_err(bookkeeping)?;
        restore_search_path(conn, previous_search_path).await.map_err(bookkeeping)?;
        return Ok(MigrationOutcome::UpToDate);
    }
    if let Some(manual) = pending.iter().find(|m| m.use_transaction() == Some(false)) {
        return Err(Failure::Db(
            Some(manual.name().to_owned()),
            DbErr::Custom(
                "this migration opts out of transactions (use_transaction = Some(false)); tenancy-migrate applies \
                 each tenant's migrations in one transaction, so it cannot run it"
                    .to_owned(),
            ),
        ));
    }
    let manager = SchemaManager::new(&txn);
    let applied_at = chrono::Utc::now().timestamp();
    let mut record = Query::insert();
    record.into_table(Alias::new(table.as_str())).columns([Alias::new("version"), Alias::new("applied_at")]);
    let mut done = Vec::with_capacity(pending.len());
    for migration in &pending {
        let name = migration.name().to_owned();
        // The migration is the application's code: whatever state it panics in, the
        // transaction it ran in is dropped without a commit below.
        match AssertUnwindSafe(migration.up(&manager)).catch_unwind().await {
            Ok(Ok(())) => {}
            Ok(Err(source)) => return Err(Failure::Db(Some(name), source)),
            Err(payload) => {
                return Err(Failure::Panicked { migration: name, message: panic_message(payload.as_ref()) });
            }
        }
        record
            .values([name.clone().into(), applied_at.into()])
            .map_err(|e| bookkeeping(DbErr::Custom(e.to_string())))?;
        done.push(name);
    }
    txn.execute(&record).await.map_err(bookkeeping)?;
    if secure {
        tenancy::rls::enable_row_security_in(&txn).await.map_err(|err| match err {
            tenancy::Error::Database(err) => bookkeeping(err),
            other => bookkeeping(DbErr::Custom(other.to_string())),
        })?;
    }
    txn.commit().await.map_err(bookkeeping)?;
    restore_search_path(conn, previous_search_path).await.map_err(bookkeeping)?;
    Ok(MigrationOutcome::Applied(done))
}

/// Inside a caller's transaction, the tenant's `search_path` set above outlives our
/// savepoint; put the caller's back so its next statements resolve as before.
async fn restore_search_path(conn: Conn<'_>, previous: Option<String>) -> Result<(), DbErr> {
    if let (Conn::Within(outer), Some(previous)) = (conn, previous) {
        outer
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT set_config('search_path', $1, true)",
                [previous.into()],
            ))
            .await?;
    }
    Ok(())
}

/// The applied migration versions, read with a single query; `None` when that is not
/// possible (no migration table yet), in which case the slow path decides.
async fn applied_versions(db: &DatabaseConnection, schema: Option<&str>, table: &str) -> Option<HashSet<String>> {
    let table = match schema {
        Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(table)),
        None => quote_ident(table),
    };
    let rows = db
        .query_all_raw(Statement::from_string(db.get_database_backend(), format!("SELECT version FROM {table}")))
        .await
        .ok()?;
    rows.iter().map(|row| row.try_get_by_index::<String>(0).ok()).collect()
}

/// The pending migrations of one tenant, read without changing anything (`--plan`,
/// `showtenants`). Cache tenants have none.
pub(crate) async fn pending_read_only(
    tenancy: &Tenancy,
    tenant: &Tenant,
    migrator: &dyn DynMigrator,
) -> Result<Vec<String>> {
    let names = migrator.names();
    let applied = match tenant.isolation() {
        Isolation::Cache => return Ok(Vec::new()),
        Isolation::Table => applied_versions(tenancy.master(), None, &migrator.table_name()).await,
        Isolation::Schema => {
            applied_versions(tenancy.master(), tenant.placement().schema(), &migrator.table_name()).await
        }
        Isolation::Database => {
            let conn = tenancy.connect_storage(tenant).await?;
            let Some(conn) = conn else { return Ok(Vec::new()) };
            let pending = migrator.pending_read_only(&conn).await;
            let _ = conn.close().await;
            return pending.map_err(|source| Error::Migration {
                tenant: tenant.id().to_string(),
                migration: None,
                source,
            });
        }
    };
    let applied = applied.unwrap_or_default();
    Ok(names.into_iter().filter(|name| !applied.contains(name)).collect())
}

/// The migrations applied to one tenant's storage (in any order), read without changing
/// anything; empty when no migration table exists yet. Cache tenants have none.
pub(crate) async fn applied_read_only(
    tenancy: &Tenancy,
    tenant: &Tenant,
    migrator: &dyn DynMigrator,
) -> Result<HashSet<String>> {
    let table = migrator.table_name();
    let applied = match tenant.placement() {
        Placement::Cache => return Ok(HashSet::new()),
        Placement::Table { .. } => applied_versions(tenancy.master(), None, &table).await,
        Placement::Schema { schema, shard: None, .. } => applied_versions(tenancy.master(), Some(schema), &table).await,
        Placement::Schema { schema, shard: Some(shard), .. } => {
            applied_versions(&tenancy.shard_admin_pool(shard).await?, Some(schema), &table).await
        }
        placement => {
            let Some(conn) = tenancy.connect_storage(tenant).await? else { return Ok(HashSet::new()) };
            let applied = applied_versions(&conn, placement.schema(), &table).await;
            let _ = conn.close().await;
            applied
        }
    };
    Ok(applied.unwrap_or_default())
}

/// The migrations applied to the master's shared tables by the shared `migrator`.
pub(crate) async fn applied_to_master(tenancy: &Tenancy, migrator: &dyn DynMigrator) -> HashSet<String> {
    applied_versions(tenancy.master(), None, &migrator.table_name()).await.unwrap_or_default()
}

/// The applied versions of the bookkeeping table `table` in each of `schemas`, all on the
/// PostgreSQL database of `db`, read with one query: what lets a fleet run find thousands
/// of tenants up to date with a query per batch instead of one per tenant. `None` when
/// it cannot be read so (not PostgreSQL, a schema without the table): the caller then
/// reads each tenant on its own.
///
/// The query is a `UNION ALL` whose text differs from batch to batch, so it is sent in the
/// simple protocol: prepared, it would cost a round trip and a slot of the connection's
/// statement cache for nothing.
pub(crate) async fn applied_in_schemas(
    db: &DatabaseConnection,
    schemas: &[&str],
    table: &str,
) -> Option<Vec<HashSet<String>>> {
    if db.get_database_backend() != DbBackend::Postgres || schemas.is_empty() {
        return None;
    }
    let table = quote_ident(table);
    let sql = schemas
        .iter()
        .enumerate()
        .map(|(i, schema)| format!("SELECT {i}, version FROM {}.{table}", quote_ident(schema)))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let rows = sea_orm::sqlx::raw_sql(sea_orm::sqlx::AssertSqlSafe(sql))
        .fetch_all(db.get_postgres_connection_pool())
        .await
        .ok()?;
    let mut applied = vec![HashSet::new(); schemas.len()];
    for row in rows {
        use sea_orm::sqlx::Row;
        let (index, version): (i32, String) = (row.try_get(0).ok()?, row.try_get(1).ok()?);
        applied.get_mut(usize::try_from(index).ok()?)?.insert(version);
    }
    Some(applied)
}
