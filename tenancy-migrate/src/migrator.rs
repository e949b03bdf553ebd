//! Migrating one tenant: the application's migrator, run in one transaction on the
//! tenant's storage under a per-tenant advisory lock.

use std::collections::HashSet;
use std::sync::Arc;

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, Statement, TransactionTrait,
};
use sea_orm_migration::MigratorTraitSelf;
use tenancy::sql::quote_ident;
use tenancy::{BoxFuture, Isolation, Tenancy, Tenant};

use crate::{Error, MigrationOutcome, Result};

/// A migrator behind a pointer, so fleets and commands can hold the application's
/// migrator without being generic over it. Built from any sea-orm-migration migrator
/// with [`Migrators::new`].
pub(crate) trait DynMigrator: Send + Sync {
    fn names(&self) -> Vec<String>;
    fn table_name(&self) -> String;
    fn pending<'a>(&'a self, txn: &'a DatabaseTransaction) -> BoxFuture<'a, Result<Vec<String>, DbErr>>;
    fn pending_read_only<'a>(&'a self, db: &'a DatabaseConnection) -> BoxFuture<'a, Result<Vec<String>, DbErr>>;
    fn up<'a>(&'a self, txn: &'a DatabaseTransaction) -> BoxFuture<'a, Result<(), DbErr>>;
}

impl<M: MigratorTraitSelf + 'static> DynMigrator for M {
    fn names(&self) -> Vec<String> {
        self.migrations().iter().map(|m| m.name().to_owned()).collect()
    }

    fn table_name(&self) -> String {
        self.migration_table_name().to_string()
    }

    fn pending<'a>(&'a self, txn: &'a DatabaseTransaction) -> BoxFuture<'a, Result<Vec<String>, DbErr>> {
        Box::pin(
            async move { Ok(self.get_pending_migrations(txn).await?.iter().map(|m| m.name().to_owned()).collect()) },
        )
    }

    fn pending_read_only<'a>(&'a self, db: &'a DatabaseConnection) -> BoxFuture<'a, Result<Vec<String>, DbErr>> {
        Box::pin(async move {
            Ok(self.get_pending_migrations_read_only(db).await?.iter().map(|m| m.name().to_owned()).collect())
        })
    }

    fn up<'a>(&'a self, txn: &'a DatabaseTransaction) -> BoxFuture<'a, Result<(), DbErr>> {
        Box::pin(async move { MigratorTraitSelf::up(self, txn, None).await })
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
    /// A connection of the tenant's own (closed afterwards).
    Own(DatabaseConnection),
}

/// Applies the pending migrations of `migrator` to one tenant.
pub(crate) async fn migrate_one(
    tenancy: &Tenancy,
    tenant: &Tenant,
    migrator: &dyn DynMigrator,
) -> Result<MigrationOutcome> {
    let (target, lock) = match tenant.isolation {
        Isolation::Cache => return Ok(MigrationOutcome::NothingToMigrate),
        Isolation::Table => (Target::Master { db: tenancy.master(), schema: None }, SHARED_TABLES_LOCK),
        Isolation::Schema => {
            let schema = tenant.config.schema.as_deref().ok_or_else(|| tenancy::Error::CorruptRegistry {
                tenant: tenant.id.to_string(),
                reason: "schema tenant without a schema".to_owned(),
            })?;
            (Target::Master { db: tenancy.master(), schema: Some(schema) }, tenant.id.as_str())
        }
        Isolation::Database => {
            let conn = tenancy.connect_storage(tenant).await?.ok_or_else(|| tenancy::Error::CorruptRegistry {
                tenant: tenant.id.to_string(),
                reason: "database tenant without storage".to_owned(),
            })?;
            (Target::Own(conn), tenant.id.as_str())
        }
    };
    let (db, schema) = match &target {
        Target::Master { db, schema } => (*db, *schema),
        Target::Own(conn) => (conn, None),
    };
    let result = run_migrations(db, schema, lock, migrator)
        .await
        .map_err(|source| Error::Migration { tenant: tenant.id.to_string(), source });
    if let Target::Own(conn) = target {
        let _ = conn.close().await;
    }
    result
}

/// Applies the shared migrator to the master database's own tables.
pub(crate) async fn migrate_master(tenancy: &Tenancy, migrator: &dyn DynMigrator) -> Result<MigrationOutcome, DbErr> {
    run_migrations(tenancy.master(), None, SHARED_MASTER_LOCK, migrator).await
}

/// The lock name of the master's shared migrations.
const SHARED_MASTER_LOCK: &str = "-master";

/// The fast path reads the applied versions with one query and returns when nothing is
/// pending; otherwise one transaction takes the tenant's advisory lock (so two runs
/// never migrate one tenant at once: the second waits, then finds nothing pending),
/// scopes `search_path` to the tenant's schema for that transaction only (safe behind a
/// transaction-mode pooler), and applies every pending migration or none.
async fn run_migrations(
    db: &DatabaseConnection,
    schema: Option<&str>,
    lock: &str,
    migrator: &dyn DynMigrator,
) -> Result<MigrationOutcome, DbErr> {
    if let Some(applied) = applied_versions(db, schema, &migrator.table_name()).await
        && migrator.names().iter().all(|name| applied.contains(name))
    {
        return Ok(MigrationOutcome::UpToDate);
    }
    let txn = db.begin().await?;
    if db.get_database_backend() == DbBackend::Postgres {
        // language=PostgreSQL
        let sql = "SELECT set_config('search_path', $1, true), pg_advisory_xact_lock($2, hashtext($3))";
        let search_path = match schema {
            Some(schema) => quote_ident(schema),
            // Keep the connection's own search path for database and table tenants.
            None => "\"$user\", public".to_owned(),
        };
        txn.query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            [search_path.into(), LOCK_NAMESPACE.into(), lock.into()],
        ))
        .await?;
    }
    let pending = migrator.pending(&txn).await?;
    if pending.is_empty() {
        txn.commit().await?;
        return Ok(MigrationOutcome::UpToDate);
    }
    migrator.up(&txn).await?;
    txn.commit().await?;
    Ok(MigrationOutcome::Applied(pending))
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
    let applied = match tenant.isolation {
        Isolation::Cache => return Ok(Vec::new()),
        Isolation::Table => applied_versions(tenancy.master(), None, &migrator.table_name()).await,
        Isolation::Schema => {
            applied_versions(tenancy.master(), tenant.config.schema.as_deref(), &migrator.table_name()).await
        }
        Isolation::Database => {
            let conn = tenancy.connect_storage(tenant).await?;
            let Some(conn) = conn else { return Ok(Vec::new()) };
            let pending = migrator.pending_read_only(&conn).await;
            let _ = conn.close().await;
            return pending.map_err(|source| Error::Migration { tenant: tenant.id.to_string(), source });
        }
    };
    let applied = applied.unwrap_or_default();
    Ok(names.into_iter().filter(|name| !applied.contains(name)).collect())
}
