//! The lock a live worker holds on its operation, which dies with the worker.
//!
//! - **PostgreSQL**: a transaction-level advisory lock, taken in a transaction held open
//!   on a connection of its own for as long as the operation runs. A killed process's
//!   connection closes, the server ends the transaction and the lock is free. Being
//!   transaction-scoped, it also holds behind a transaction-mode pooler.
//! - **SQLite** has no session locks: the worker renews a lease (the row's
//!   `heartbeat_at`) every second. A lease older than [`LEASE`] is stale, and so is one
//!   written by a process of this host that no longer exists.

use std::time::Duration;

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter,
    Statement, TransactionTrait,
};

use super::{Operation, OperationColumn, OperationEntity};
use crate::connection::url::connect;
use crate::{Backend, Result, Tenancy, TenantId};

/// How long a SQLite worker's lease lasts without a heartbeat.
pub(crate) const LEASE: Duration = Duration::from_secs(10);

/// How often a SQLite worker renews its lease.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// `host:pid` of this process.
pub(crate) fn this_worker() -> String {
    format!("{}:{}", hostname(), std::process::id())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The advisory lock of `id`'s operations: 64 bits of an MD5 of a prefixed id, so it
/// does not meet the fleet's per-tenant migration locks.
const TRY_LOCK: &str =
    "SELECT pg_try_advisory_xact_lock(('x' || substr(md5('tenancy-operation:' || $1), 1, 16))::bit(64)::bigint)";

/// The lock this process holds on one tenant's operation.
pub(crate) enum WorkerLock {
    Postgres {
        /// The transaction holding the advisory lock; ended by [`WorkerLock::release`].
        txn: Option<DatabaseTransaction>,
        connection: DatabaseConnection,
    },
    Sqlite {
        heartbeat: Option<tokio::task::JoinHandle<()>>,
    },
}

impl WorkerLock {
    /// Takes the lock of `id`: `Err(())` when a live worker of another process holds it.
    pub(crate) async fn acquire(tenancy: &Tenancy, id: &TenantId) -> Result<Result<WorkerLock, ()>> {
        match tenancy.backend() {
            Backend::Postgres => {
                let connection = connect(tenancy.master_url().as_str(), None).await?;
                let txn = connection.begin().await?;
                if !try_lock(&txn, id).await? {
                    let _ = txn.rollback().await;
                    let _ = connection.close().await;
                    return Ok(Err(()));
                }
                Ok(Ok(WorkerLock::Postgres { txn: Some(txn), connection }))
            }
            Backend::Sqlite => Ok(Ok(WorkerLock::Sqlite { heartbeat: None })),
        }
    }

    /// Whether `operation`'s worker, not this one, is alive. On PostgreSQL this lock
    /// excludes it; on SQLite the row's lease tells.
    pub(crate) fn others_alive(&self, operation: &Operation) -> bool {
        match self {
            WorkerLock::Postgres { .. } => false,
            WorkerLock::Sqlite { .. } => lease_alive(operation),
        }
    }

    /// Makes `stale`'s row this worker's. On SQLite, whose lock is the row itself, this
    /// fails (`false`) when the row's worker is alive after all or another process took it
    /// over first.
    pub(crate) async fn take_over(&self, tenancy: &Tenancy, stale: &Operation) -> Result<bool> {
        let mut update = OperationEntity::update_many()
            .col_expr(OperationColumn::Worker, Expr::value(this_worker()))
            .col_expr(OperationColumn::HeartbeatAt, Expr::value(Utc::now()))
            .filter(OperationColumn::TenantId.eq(stale.tenant.as_str()));
        if let WorkerLock::Sqlite { .. } = self {
            // Compare and swap on the worker (`host:pid`): of several processes taking over,
            // one wins.
            update = update.filter(OperationColumn::Worker.eq(stale.worker.as_str()));
        }
        Ok(update.exec(tenancy.master()).await?.rows_affected == 1)
    }

    /// Whether this worker still holds the operation: its lock transaction answers
    /// (PostgreSQL), or its lease row still names it (SQLite).
    pub(crate) async fn still_held(&self, tenancy: &Tenancy, id: &TenantId) -> bool {
        match self {
            WorkerLock::Postgres { txn: Some(txn), .. } => txn.execute_unprepared("SELECT 1").await.is_ok(),
            WorkerLock::Postgres { txn: None, .. } => false,
            WorkerLock::Sqlite { .. } => OperationEntity::find_by_id(id.as_str())
                .filter(OperationColumn::Worker.eq(this_worker()))
                .one(tenancy.master())
                .await
                .map(|row| row.is_some())
                // A row deleted by this operation's own last step reads as gone; any other
                // failure to read is not a reason to stop.
                .unwrap_or(true),
        }
    }

    /// Starts renewing the lease (SQLite; nothing to do on PostgreSQL).
    pub(crate) fn start_heartbeat(&mut self, tenancy: &Tenancy, id: &TenantId) {
        let WorkerLock::Sqlite { heartbeat } = self else { return };
        let (master, id, worker) = (tenancy.master().clone(), id.to_string(), this_worker());
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                let renewed = OperationEntity::update_many()
                    .col_expr(OperationColumn::HeartbeatAt, Expr::value(Utc::now()))
                    .filter(OperationColumn::TenantId.eq(id.as_str()))
                    .filter(OperationColumn::Worker.eq(worker.as_str()))
                    .exec(&master)
                    .await;
                if let Err(err) = renewed {
                    tracing::warn!(tenant = %id, error = %err, "could not renew the operation's lease");
                }
            }
        });
        *heartbeat = Some(task);
    }

    /// Releases the lock.
    pub(crate) async fn release(mut self) {
        match &mut self {
            WorkerLock::Postgres { txn, connection } => {
                if let Some(txn) = txn.take() {
                    let _ = txn.rollback().await;
                }
                let _ = connection.close_by_ref().await;
            }
            WorkerLock::Sqlite { heartbeat } => {
                if let Some(task) = heartbeat.take() {
                    task.abort();
                }
            }
        }
    }
}

impl Drop for WorkerLock {
    fn drop(&mut self) {
        if let WorkerLock::Sqlite { heartbeat } = self
            && let Some(task) = heartbeat.take()
        {
            task.abort();
        }
    }
}

async fn try_lock<C: ConnectionTrait>(db: &C, id: &TenantId) -> Result<bool> {
    let row =
        db.query_one_raw(Statement::from_sql_and_values(DbBackend::Postgres, TRY_LOCK, [id.as_str().into()])).await?;
    Ok(row.map(|row| row.try_get_by_index::<bool>(0)).transpose()?.unwrap_or(false))
}

/// Whether `operation`'s worker is alive.
pub(crate) async fn is_alive(tenancy: &Tenancy, operation: &Operation) -> Result<bool> {
    match tenancy.backend() {
        Backend::Postgres => {
            // Free to take means nobody holds it; the probe's transaction lets it go again.
            let txn = tenancy.master().begin().await?;
            let free = try_lock(&txn, &operation.tenant).await?;
            txn.rollback().await?;
            Ok(!free)
        }
        Backend::Sqlite => Ok(lease_alive(operation)),
    }
}

/// A SQLite lease is alive while it is fresh and, when written on this host, its process
/// still runs.
fn lease_alive(operation: &Operation) -> bool {
    let age = Utc::now().signed_duration_since(operation.heartbeat_at);
    if age.to_std().map(|age| age > LEASE).unwrap_or(false) {
        return false;
    }
    match operation.worker.rsplit_once(':') {
        Some((host, pid)) if host == hostname() => match pid.parse::<u32>() {
            Ok(pid) => process_runs(pid),
            Err(_) => true,
        },
        _ => true,
    }
}

/// Whether process `pid` of this host runs (and is not a zombie). Without `/proc` it is
/// assumed to, and the lease decides.
fn process_runs(pid: u32) -> bool {
    if !std::path::Path::new("/proc/self").exists() {
        return true;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold spaces.
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}
