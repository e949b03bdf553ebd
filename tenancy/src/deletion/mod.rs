//! Deleting tenants: the orchestration over the storage drivers' removals, journaled
//! like creation ([`crate::operations`]) so a delete killed at any moment is finished by
//! running it again.
//!
//! The order: take the tenant's operation; list what will be removed ([`Removal`]); write
//! the backup, if asked; mark the registry row `deleting` (no process serves the tenant
//! from then on); remove the storage object by object, each removal idempotent; last,
//! remove the registry row and close the operation in one transaction. Only what tenancy
//! created is dropped: an adopted database is detached and kept unless
//! [`DeleteOptions::drop_adopted_database`] says otherwise.

mod backup;

use crate::registry::placement::ShardDatabase;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, TransactionTrait};
use serde::Serialize;

pub use self::backup::BackupFormat;
use crate::operations::{self, OperationKind};
use crate::registry::entity;
use crate::{BoxError, Error, Result, Tenancy, Tenant, TenantId, TenantStatus};

/// How long a delete waits, by default, for the sessions of a tenant's database or roles
/// to end once it has asked them to.
pub const DEFAULT_SESSION_WAIT: Duration = Duration::from_secs(10);

/// A callback after each removal, for progress (and for tests, to stop a run there).
pub type AfterRemoval = Arc<dyn Fn(&Removal) -> Result<(), BoxError> + Send + Sync>;

/// How [`Tenancy::delete_tenant`] deletes.
#[derive(Clone)]
pub struct DeleteOptions {
    drop_adopted_database: bool,
    backup: Option<PathBuf>,
    session_wait: Duration,
    after_removal: Option<AfterRemoval>,
}

impl Default for DeleteOptions {
    fn default() -> Self {
        DeleteOptions {
            drop_adopted_database: false,
            backup: None,
            session_wait: DEFAULT_SESSION_WAIT,
            after_removal: None,
        }
    }
}

impl fmt::Debug for DeleteOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeleteOptions")
            .field("drop_adopted_database", &self.drop_adopted_database)
            .field("backup", &self.backup)
            .field("session_wait", &self.session_wait)
            .finish_non_exhaustive()
    }
}

impl DeleteOptions {
    /// Drops a database the tenant adopted (`createtenant --no-create-database`) instead
    /// of detaching it. Its role is kept either way: tenancy did not make it.
    pub fn drop_adopted_database(mut self, drop: bool) -> Self {
        self.drop_adopted_database = drop;
        self
    }

    /// Writes a restorable dump of the tenant's data to `path` before anything is
    /// removed (see [`BackupFormat`]); the file must not exist yet.
    pub fn backup(mut self, path: impl Into<PathBuf>) -> Self {
        self.backup = Some(path.into());
        self
    }

    /// How long to wait for the sessions of the tenant's database or roles to end.
    pub fn session_wait(mut self, wait: Duration) -> Self {
        self.session_wait = wait;
        self
    }

    /// Called after each removal; an error stops the delete there (it stays unfinished,
    /// and the next run finishes it).
    pub fn after_removal(mut self, callback: AfterRemoval) -> Self {
        self.after_removal = Some(callback);
        self
    }

    fn journal_params(&self) -> serde_json::Value {
        serde_json::json!({ "drop_adopted_database": self.drop_adopted_database })
    }
}

/// One thing a delete removes (or keeps), in the order it does so.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "object", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Removal {
    /// A tenant's own PostgreSQL database, its sessions ended first.
    Database {
        /// Database name.
        name: String,
        /// `host:port`.
        server: String,
    },
    /// The role that owned a database tenant's database.
    Role {
        /// Role name.
        name: String,
        /// `host:port`.
        server: String,
    },
    /// A SQLite tenant database file and its side files.
    File {
        /// The file.
        path: PathBuf,
    },
    /// A schema tenant's schema, with everything in it.
    Schema {
        /// Schema name.
        name: String,
        /// How many tables it holds.
        tables: u64,
        /// The shard database holding it; `None`: the master database.
        #[serde(skip_serializing_if = "Option::is_none")]
        shard: Option<ShardDatabase>,
    },
    /// A table tenant's rows of one shared table.
    Rows {
        /// The table.
        table: String,
        /// The tenant column.
        column: String,
        /// How many rows the tenant has there.
        rows: u64,
    },
    /// A schema or table tenant's login role on the master (or a shard's server), its
    /// sessions ended first.
    LoginRole {
        /// Role name.
        name: String,
        /// The shard database its privileges are in; `None`: the master database.
        #[serde(skip_serializing_if = "Option::is_none")]
        shard: Option<ShardDatabase>,
    },
    /// Storage earlier moves left behind ([`crate::relocation::Leftover`]).
    Leftovers {
        /// The objects, as `deletetenant --leftovers` removes them.
        objects: Vec<String>,
    },
    /// Every key of the tenant's cache namespace.
    CacheNamespace {
        /// The namespace.
        namespace: String,
    },
    /// Something of the tenant's that is kept, and why.
    Kept {
        /// What is kept.
        what: String,
        /// Why.
        reason: String,
    },
    /// The registry row (last).
    RegistryRow,
}

impl Removal {
    /// Whether this entry removes something (not [`Removal::Kept`]).
    pub fn removes(&self) -> bool {
        !matches!(self, Removal::Kept { .. })
    }

    /// The kind of object, as `--json` names it (`database`, `role`, `file`, `schema`,
    /// `rows`, `login_role`, `cache_namespace`, `kept`, `registry_row`).
    pub fn kind(&self) -> &'static str {
        match self {
            Removal::Database { .. } => "database",
            Removal::Role { .. } => "role",
            Removal::File { .. } => "file",
            Removal::Schema { .. } => "schema",
            Removal::Rows { .. } => "rows",
            Removal::LoginRole { .. } => "login_role",
            Removal::Leftovers { .. } => "leftovers",
            Removal::CacheNamespace { .. } => "cache_namespace",
            Removal::Kept { .. } => "kept",
            Removal::RegistryRow => "registry_row",
        }
    }

    /// The journal's name of the step.
    fn step(&self) -> String {
        match self {
            Removal::Database { name, .. } => format!("drop database {name}"),
            Removal::Role { name, .. } => format!("drop role {name}"),
            Removal::File { path } => format!("remove file {}", path.display()),
            Removal::Schema { name, .. } => format!("drop schema {name}"),
            Removal::Rows { table, .. } => format!("delete rows of {table}"),
            Removal::LoginRole { name, .. } => format!("drop role {name}"),
            Removal::Leftovers { .. } => "remove leftovers".to_owned(),
            Removal::CacheNamespace { namespace } => format!("clear cache namespace {namespace}"),
            Removal::Kept { what, .. } => format!("keep {what}"),
            Removal::RegistryRow => "remove registry row".to_owned(),
        }
    }
}

impl fmt::Display for Removal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Removal::Database { name, server } => write!(f, "drop database '{name}' on {server} (ending its sessions)"),
            Removal::Role { name, server } => write!(f, "drop role '{name}' on {server}"),
            Removal::File { path } => write!(f, "remove file '{}'", path.display()),
            Removal::Schema { name, tables, shard: None } => {
                write!(f, "drop schema '{name}' with its {tables} table(s)")
            }
            Removal::Schema { name, tables, shard: Some(shard) } => write!(
                f,
                "drop schema '{name}' with its {tables} table(s) from shard '{}' on {}",
                shard.database,
                shard.address()
            ),
            Removal::Rows { table, column, rows } => write!(f, "delete {rows} row(s) of table '{table}' ({column})"),
            Removal::LoginRole { name, shard: None } => write!(f, "drop role '{name}' (ending its sessions)"),
            Removal::LoginRole { name, shard: Some(shard) } => {
                write!(f, "drop role '{name}' on {} (ending its sessions)", shard.address())
            }
            Removal::Leftovers { objects } => {
                write!(f, "remove what earlier moves left behind: {}", objects.join(", "))
            }
            Removal::CacheNamespace { namespace } => write!(f, "clear cache namespace '{namespace}'"),
            Removal::Kept { what, reason } => write!(f, "keep {what}: {reason}"),
            Removal::RegistryRow => f.write_str("remove the registry row"),
        }
    }
}

/// What [`Tenancy::delete_tenant`] did, or (dry run) would do.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Deleted {
    /// The tenant as the registry held it.
    pub tenant: TenantId,
    /// Each removal, in order.
    pub removals: Vec<Removal>,
    /// The backup written, if one was asked for.
    pub backup: Option<backup::Backup>,
    /// Whether this run finished a delete an earlier, interrupted run had started.
    pub resumed: bool,
}

/// [`Tenancy::delete_plan`]: what a delete would remove, changing nothing.
pub(crate) async fn plan(tenancy: &Tenancy, id: &TenantId, options: &DeleteOptions) -> Result<Vec<Removal>> {
    let tenant = tenancy.find_tenant(id).await?.ok_or_else(|| Error::TenantNotFound { id: id.to_string() })?;
    removals(tenancy, &tenant, options).await
}

async fn removals(tenancy: &Tenancy, tenant: &Tenant, options: &DeleteOptions) -> Result<Vec<Removal>> {
    let mut list = crate::storage::removals(tenancy, tenant, options.drop_adopted_database).await?;
    let left = crate::relocation::leftovers::list(tenancy, Some(tenant.id())).await?;
    if !left.is_empty() {
        list.push(Removal::Leftovers { objects: left.iter().map(|l| l.object.to_string()).collect() });
    }
    list.push(Removal::CacheNamespace { namespace: tenancy.shared_cache().tenant(tenant.id()).namespace().to_owned() });
    list.push(Removal::RegistryRow);
    Ok(list)
}

/// [`Tenancy::delete_tenant`].
pub(crate) async fn delete(tenancy: &Tenancy, id: &TenantId, options: &DeleteOptions) -> Result<Deleted> {
    let begun = operations::begin(tenancy, OperationKind::Delete, id, options.journal_params()).await?;
    let guard = begun.guard;
    let resumed = begun.resumed.is_some();
    let Some(tenant) = tenancy.find_tenant(id).await? else {
        // An interrupted delete that got as far as the registry row is done.
        guard.finish(tenancy).await?;
        return match resumed {
            true => Ok(Deleted { tenant: id.clone(), removals: Vec::new(), backup: None, resumed }),
            false => Err(Error::TenantNotFound { id: id.to_string() }),
        };
    };
    crate::entry::record_isolation(tenant.isolation());
    // A `provisioning` row here has no operation of its own (this one holds the tenant):
    // a create of an earlier version died part-way. Its storage is removed like a ready
    // tenant's; every removal copes with objects that were never made.
    let list = match removals(tenancy, &tenant, options).await {
        Ok(list) => list,
        Err(err) => {
            settle(guard, tenancy, resumed).await;
            return Err(err);
        }
    };

    // Nothing is removed before the backup is written: a failed backup leaves the
    // tenant as it was (unless an earlier run had started removing it).
    let backup = match &options.backup {
        Some(path) => match backup::write(tenancy, &tenant, &list, path).await {
            Ok(backup) => Some(backup),
            Err(err) => {
                settle(guard, tenancy, resumed).await;
                return Err(err);
            }
        },
        None => None,
    };

    // Committed before anything is dropped: every serving process stops serving the
    // tenant and closes its pools as soon as the live registry hears of it (this one at
    // once).
    let previous = tenant.status();
    mark(tenancy, id, TenantStatus::Deleting).await?;
    tenancy.reset_tenant_pool(id);

    let mut first = true;
    for removal in &list {
        guard.step(tenancy, &removal.step()).await?;
        let removed = match removal {
            Removal::RegistryRow => {
                let txn = tenancy.master().begin().await?;
                entity::Entity::delete_many().filter(entity::Column::TenantId.eq(id.as_str())).exec(&txn).await?;
                guard.finish_in(&txn).await?;
                txn.commit().await?;
                tenancy.registry_removed(id);
                Ok(())
            }
            Removal::CacheNamespace { .. } => tenancy.shared_cache().tenant(id).clear().await.map(drop),
            Removal::Leftovers { .. } => crate::relocation::leftovers::remove(tenancy, id).await.map(drop),
            other => crate::storage::remove(tenancy, &tenant, other, options.session_wait).await,
        };
        if let Err(err) = removed {
            // The first removal failing changed nothing (each is one statement or one
            // transaction): serve the tenant again instead of leaving it half deleted.
            if first && !resumed {
                let _ = mark(tenancy, id, previous).await;
                let _ = guard.finish(tenancy).await;
            } else {
                guard.abandon().await;
            }
            return Err(err);
        }
        if removal.removes() {
            first = false;
        }
        if let Some(callback) = &options.after_removal
            && let Err(source) = callback(removal)
        {
            guard.abandon().await;
            return Err(Error::DeleteInterrupted { tenant: id.to_string(), step: removal.step(), source });
        }
    }
    guard.finish(tenancy).await?;
    Ok(Deleted { tenant: id.clone(), removals: list, backup, resumed })
}

/// Ends an operation that removed nothing: closed, or (a resumed one) left for a re-run.
async fn settle(guard: operations::Guard, tenancy: &Tenancy, resumed: bool) {
    match resumed {
        true => guard.abandon().await,
        false => {
            let _ = guard.finish(tenancy).await;
        }
    }
}

/// Sets the registry status and tells this process's live registry (other processes hear
/// of it from the registry's own announcement).
pub(crate) async fn mark(tenancy: &Tenancy, id: &TenantId, status: TenantStatus) -> Result<()> {
    entity::Entity::update_many()
        .col_expr(entity::Column::Status, Expr::value(status))
        .col_expr(entity::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(entity::Column::TenantId.eq(id.as_str()))
        .exec(tenancy.master())
        .await?;
    if let Some(tenant) = tenancy.find_tenant(id).await? {
        tenancy.registry_changed(&tenant);
    }
    Ok(())
}
