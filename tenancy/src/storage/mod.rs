//! Storage drivers: one per isolation mode, each owning, for its mode, what the rest of
//! the crate needs to know about a tenant's storage:
//!
//! | driver | provisioning plan and steps | undo | migration target | connection route |
//! | --- | --- | --- | --- | --- |
//! | [`database`] | role + database, or a SQLite file | drop them | the tenant's database | the tenant's own pool |
//! | [`schema`] | login role + schema, in one master transaction | drop them | the master, `search_path` = the schema | the login's pool, or bound master transactions |
//! | [`table`] | login role (PostgreSQL) | drop it | the master's shared tables | the login's pool, bound master transactions, or rewritten statements (SQLite) |
//! | [`cache`] | nothing | nothing | none | none |
//!
//! Provisioning ([`crate::provisioning`]) is the orchestration over a driver's [`Plan`];
//! the tenant connection asks [`route`] once, when a handle is made. Deleting, copying and
//! moving tenants will be more functions of the same drivers.

pub(crate) mod cache;
pub(crate) mod database;
pub(crate) mod login;
pub(crate) mod marker;
pub(crate) mod schema;
pub(crate) mod shard;
pub(crate) mod table;

use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, Statement};

use crate::connection::Route;
use std::time::Duration;

use crate::deletion::Removal;
use crate::operations::UndoEntry;
use crate::provisioning::{NewTenant, Run, StepFailure};
use crate::registry::placement::{Placement, TenantDatabase};
use crate::registry::{TenantStatus, entity};
use crate::{BoxError, Error, Isolation, Result, Tenancy, Tenant, TenantId};

/// How a new tenant's storage will be made: decided, and validated, before anything is
/// created.
pub(crate) enum Plan {
    /// Database isolation on a PostgreSQL server.
    PostgresDatabase(Box<database::PostgresPlan>),
    /// Database isolation on a SQLite master.
    SqliteFile(database::SqlitePlan),
    /// Schema isolation.
    Schema(schema::Plan),
    /// Table isolation.
    Table(table::Plan),
    /// Cache isolation: nothing to make.
    Cache,
}

impl Plan {
    /// Validates the mode-specific input of `new` and plans its storage.
    pub(crate) async fn new(tenancy: &Tenancy, new: &NewTenant) -> Result<Plan> {
        if let (Some(server), Isolation::Table | Isolation::Cache) = (new.server(), new.isolation()) {
            return Err(Error::ServerNotPlaceable { server: server.to_string(), isolation: new.isolation() });
        }
        match new.isolation() {
            Isolation::Database => database::plan(tenancy, new).await,
            Isolation::Schema => schema::plan(tenancy, new).await.map(Plan::Schema),
            Isolation::Table => table::plan(tenancy, new).await.map(Plan::Table),
            Isolation::Cache => Ok(Plan::Cache),
        }
    }

    /// Where the tenant's data will live: what the registry row records.
    pub(crate) fn placement(&self) -> Placement {
        match self {
            Plan::PostgresDatabase(plan) => Placement::Database(TenantDatabase::Postgres(plan.config.clone())),
            Plan::SqliteFile(plan) => Placement::Database(TenantDatabase::Sqlite(plan.config.clone())),
            Plan::Schema(plan) => plan.placement(),
            Plan::Table(plan) => plan.placement(),
            Plan::Cache => Placement::Cache,
        }
    }

    /// Refuses to create over anything that exists already.
    pub(crate) async fn check_free(&self, tenancy: &Tenancy) -> Result<()> {
        match self {
            Plan::PostgresDatabase(plan) => plan.check_free().await,
            Plan::SqliteFile(plan) => plan.check_free(),
            Plan::Schema(plan) => plan.check_free(tenancy).await,
            Plan::Table(plan) => plan.check_free(tenancy).await,
            Plan::Cache => Ok(()),
        }
    }

    /// The database whose one transaction makes the storage and migrates it (schema
    /// isolation), and whether it is the master's, whose transaction then also marks the
    /// tenant ready: one atomic step. `None`: the driver commits as it goes.
    pub(crate) fn transaction_home<'a>(&'a self, tenancy: &'a Tenancy) -> Option<(&'a DatabaseConnection, bool)> {
        match self {
            Plan::Schema(plan) => Some(plan.home(tenancy)),
            _ => None,
        }
    }

    /// Creates the login role a schema tenant gets, in a short transaction of its own
    /// before [`Plan::transaction_home`]'s begins (journaled for undo like every object):
    /// granting it `CONNECT` rewrites its database's one `pg_database` row, which two
    /// creators' long transactions would both hold ("tuple concurrently updated").
    pub(crate) async fn create_role(&self, tenancy: &Tenancy, run: &mut Run<'_>) -> Result<(), StepFailure> {
        match self {
            Plan::Schema(plan) => plan.create_role(tenancy, run).await,
            _ => Ok(()),
        }
    }

    /// Creates the storage, recording what it made in `run`. `txn` is the transaction of
    /// [`Plan::transaction_home`]; a schema tenant's role is made before it
    /// ([`Plan::create_role`]).
    pub(crate) async fn create(
        &self,
        tenancy: &Tenancy,
        run: &mut Run<'_>,
        txn: Option<&DatabaseTransaction>,
    ) -> Result<(), StepFailure> {
        match self {
            Plan::PostgresDatabase(plan) => plan.create(run).await,
            Plan::SqliteFile(plan) => plan.create(run).await,
            Plan::Schema(plan) => plan.create(tenancy, run, txn).await,
            Plan::Table(plan) => plan.create(tenancy, run).await,
            Plan::Cache => Ok(()),
        }
    }

    /// Releases what planning opened (the admin connection of a PostgreSQL database).
    pub(crate) async fn close(&self) {
        match self {
            Plan::PostgresDatabase(plan) => plan.close().await,
            Plan::Schema(plan) => plan.close().await,
            _ => {}
        }
    }
}

/// How a handle of `tenant` reaches its storage, decided once when it is made.
///
/// # Errors
/// [`crate::Error::HandleNotYetSupported`] or [`crate::Error::CorruptRegistry`] when this
/// master cannot serve the placement.
pub(crate) fn route(tenancy: &Tenancy, tenant: &Tenant) -> Result<Route> {
    match tenant.placement() {
        Placement::Database(database) => database::route(tenancy, tenant, database),
        Placement::Schema { schema, login, shard } => {
            schema::route(tenancy, tenant, schema, login.as_ref(), shard.as_ref())
        }
        Placement::Table { login } => Ok(table::route(tenancy, login.as_ref())),
        Placement::Cache => Ok(Route::NoStorage),
    }
}

/// The URL of the tenant's own pool: a database tenant's database, or the master
/// database logged in as a schema or table tenant's role. Its password is decrypted: never
/// print it.
pub(crate) fn pool_url(tenancy: &Tenancy, tenant: &Tenant) -> Result<String> {
    let url = storage_url(tenancy, tenant)?;
    // Behind a pooler, tenants on the master's server are reached through it too.
    Ok(match tenancy.pooler_route() {
        Some(route) => route.through_pooler(url),
        None => url,
    })
}

/// The URL of the tenant's own storage on its server, not through any pooler.
fn storage_url(tenancy: &Tenancy, tenant: &Tenant) -> Result<String> {
    match tenant.placement() {
        Placement::Database(database) => database::url(tenancy, tenant, database),
        placement => match placement.login() {
            Some(login) => login::url(tenancy, tenant, login, placement.shard()),
            None => Err(crate::Error::CorruptRegistry {
                tenant: tenant.id().to_string(),
                reason: format!("a {} tenant without a login role has no pool of its own", tenant.isolation()),
            }),
        },
    }
}

/// A connection to the tenant's relational storage for its migrations (see
/// [`Tenancy::connect_storage`]).
pub(crate) async fn migration_target(tenancy: &Tenancy, tenant: &Tenant) -> Result<Option<DatabaseConnection>> {
    match tenant.placement() {
        Placement::Database(database) => database::migration_target(tenancy, tenant, database).await.map(Some),
        Placement::Schema { schema, shard, .. } => {
            schema::migration_target(tenancy, schema, shard.as_ref()).await.map(Some)
        }
        Placement::Table { .. } => Ok(Some(tenancy.master().clone())),
        Placement::Cache => Ok(None),
    }
}

/// Where a tenant's data lives, for listings: never a password.
pub(crate) fn describe(tenancy: &Tenancy, tenant: &Tenant) -> String {
    match tenant.placement() {
        Placement::Database(database) => database::describe(tenancy, database),
        Placement::Schema { schema, shard: None, .. } => format!("schema '{schema}'"),
        Placement::Schema { schema, shard: Some(shard), .. } => {
            format!(
                "schema '{schema}' of shard '{}' on server '{}' ({})",
                shard.database,
                shard.server,
                shard.address()
            )
        }
        Placement::Table { .. } => "shared tables of the master database".to_owned(),
        Placement::Cache => format!("cache namespace '{}'", tenant.id()),
    }
}

/// Whether `sql` with one bound `value` returns a row.
pub(crate) async fn exists(db: &DatabaseConnection, sql: &str, value: &str) -> Result<bool> {
    Ok(db.query_one_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, [value.into()])).await?.is_some())
}

/// Removes one object an operation journaled (see [`crate::operations`]), if it exists:
/// every entry carries what it takes, so this needs neither the plan nor the process that
/// made it.
pub(crate) async fn undo(tenancy: &Tenancy, id: &TenantId, entry: &UndoEntry) -> Result<(), BoxError> {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    match entry {
        // Only while still `provisioning`: a ready tenant's row is never an undo's.
        UndoEntry::RegistryRow => entity::Entity::delete_many()
            .filter(entity::Column::TenantId.eq(id.as_str()))
            .filter(entity::Column::Status.eq(TenantStatus::Provisioning))
            .exec(tenancy.master())
            .await
            .map(drop)
            .map_err(Into::into),
        UndoEntry::Role { .. } | UndoEntry::Database { .. } => database::drop_on_server(tenancy, entry).await,
        UndoEntry::File { path } => database::remove_sqlite_file(path),
        UndoEntry::Schema { name, shard } => schema::drop_schema_in(tenancy, shard.as_ref(), name).await,
        UndoEntry::LoginRole { name, shard } => login::drop_login_role_in(tenancy, shard.as_ref(), name).await,
        UndoEntry::Rows { table, column } => table::delete_rows(tenancy, id, table, column).await.map_err(Into::into),
    }
}

/// What deleting `tenant` removes of its storage, in order (the cache namespace and the
/// registry row are the deletion's own).
pub(crate) async fn removals(tenancy: &Tenancy, tenant: &Tenant, drop_adopted: bool) -> Result<Vec<Removal>> {
    match tenant.placement() {
        Placement::Database(database) => Ok(database::removals(tenancy, database, drop_adopted)),
        Placement::Schema { schema, login, shard } => {
            schema::removals(tenancy, schema, login.as_ref(), shard.as_ref()).await
        }
        Placement::Table { login } => table::removals(tenancy, tenant.id(), login.as_ref()).await,
        Placement::Cache => Ok(Vec::new()),
    }
}

/// Removes one object of `tenant`'s storage, if it is still there.
pub(crate) async fn remove(tenancy: &Tenancy, tenant: &Tenant, removal: &Removal, wait: Duration) -> Result<()> {
    match removal {
        Removal::Database { .. } | Removal::Role { .. } => database::remove(tenancy, tenant, removal, wait).await,
        Removal::File { path } => database::remove_sqlite_file(path).map_err(|source| Error::DeleteFailed {
            tenant: tenant.id().to_string(),
            what: removal.to_string(),
            source,
        }),
        Removal::Schema { name, shard, .. } => {
            schema::drop_schema_in(tenancy, shard.as_ref(), name).await.map_err(|source| Error::DeleteFailed {
                tenant: tenant.id().to_string(),
                what: removal.to_string(),
                source,
            })
        }
        Removal::LoginRole { name, shard } => {
            login::close_login_role_in(tenancy, tenant, shard.as_ref(), name, wait).await?;
            login::drop_login_role_in(tenancy, shard.as_ref(), name).await.map_err(|source| Error::DeleteFailed {
                tenant: tenant.id().to_string(),
                what: removal.to_string(),
                source,
            })
        }
        Removal::Rows { table, column, .. } => table::delete_rows(tenancy, tenant.id(), table, column).await,
        Removal::Kept { .. } | Removal::CacheNamespace { .. } | Removal::Leftovers { .. } | Removal::RegistryRow => {
            Ok(())
        }
    }
}

/// Whose sessions [`end_sessions`] ends.
#[derive(Clone, Copy, Debug)]
pub(crate) enum SessionsOf<'a> {
    /// Every session connected to this database.
    Database(&'a str),
    /// Every session logged in as this role.
    Role(&'a str),
}

/// Waits at most `grace` for the sessions of `of` to end by themselves (servers closing
/// their pools as the live registry tells them to, requests in flight finishing), so
/// that [`end_sessions`] ends only what would not.
pub(crate) async fn drain_sessions(db: &DatabaseConnection, of: SessionsOf<'_>, grace: Duration) -> Result<()> {
    let (field, value) = match of {
        SessionsOf::Database(name) => ("datname", name),
        SessionsOf::Role(name) => ("usename", name),
    };
    let count =
        format!("SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE {field} = $1 AND pid <> pg_backend_pid()");
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        let row = db.query_one_raw(Statement::from_sql_and_values(DbBackend::Postgres, &count, [value.into()])).await?;
        let remaining = row.map(|row| row.try_get_by_index::<i64>(0)).transpose()?.unwrap_or(0);
        if remaining == 0 || tokio::time::Instant::now() >= deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ends the sessions of `of`, waiting at most `wait` for them to go; how many remain.
pub(crate) async fn end_sessions(db: &DatabaseConnection, of: SessionsOf<'_>, wait: Duration) -> Result<i64> {
    let (field, value) = match of {
        SessionsOf::Database(name) => ("datname", name),
        SessionsOf::Role(name) => ("usename", name),
    };
    let count =
        format!("SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE {field} = $1 AND pid <> pg_backend_pid()");
    // Session by session, skipping those this role may not end (a superuser's, when the
    // admin is none): they are counted below, and the caller gives up after `wait`.
    let terminate = format!(
        "DO $tenancy$ DECLARE p int; BEGIN \
           FOR p IN SELECT pid FROM pg_catalog.pg_stat_activity WHERE {field} = {value} AND pid <> pg_backend_pid() LOOP \
             BEGIN PERFORM pg_catalog.pg_terminate_backend(p); EXCEPTION WHEN insufficient_privilege THEN NULL; END; \
           END LOOP; \
         END $tenancy$",
        value = crate::sql::quote_literal(value)
    );
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        db.execute_unprepared(&terminate).await?;
        let row = db.query_one_raw(Statement::from_sql_and_values(DbBackend::Postgres, &count, [value.into()])).await?;
        let remaining = row.map(|row| row.try_get_by_index::<i64>(0)).transpose()?.unwrap_or(0);
        if remaining == 0 || tokio::time::Instant::now() >= deadline {
            return Ok(remaining);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
