//! The lock a live worker holds on its operation, which dies with the worker.
//!
//! - **PostgreSQL**: a session-level advisory lock on a connection of its own
//!   (`application_name` [`LOCK_APPLICATION_NAME`]), held for as long as the operation
//!   runs. A killed process's connection closes and the lock is free. The operation's
//!   journal writes go through that same connection, each one conditional on the session
//!   still holding the lock, so a worker whose connection was cut (and silently replaced
//!   by a new one) cannot write another worker's journal: it stops with
//!   [`crate::Error::OperationLost`]. One connection for the lock and the journal keeps a
//!   lifecycle command at two connections in all (this one and the master pool's). The
//!   lock connection always reaches the server directly: behind a pooler the master URL
//!   is the direct one (`TENANCY_DIRECT_URL`), never a transaction-mode pooler, where a
//!   session lock would stay on a server connection others reuse.
//! - **SQLite** has no session locks: the worker renews a lease (the row's
//!   `heartbeat_at`) every second. A lease older than [`LEASE`] is stale, and so is one
//!   written by a process of this host that no longer exists.

use std::time::Duration;

use chrono::Utc;
use sea_orm::sea_query::{Expr, Query, SimpleExpr};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter, Statement, TransactionTrait,
};

use super::{Operation, OperationColumn, OperationEntity};
use crate::connection::url::connect_lock;
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

/// Opens a connection to hold an operation's lock on: of its own, to the master's server
/// directly (`url` is the direct one behind a pooler).
pub(crate) async fn connect(url: &str) -> Result<DatabaseConnection> {
    connect_lock(url, LOCK_APPLICATION_NAME).await
}

/// The `application_name` of the connections holding operation locks, so an operator
/// sees them in `pg_stat_activity`.
pub(crate) const LOCK_APPLICATION_NAME: &str = "tenancy operation lock";

/// The key of `id`'s operation lock (`$1` is the id): 64 bits of an MD5 of a prefixed id,
/// so it does not meet the fleet's per-tenant migration locks.
macro_rules! lock_key {
    () => {
        "('x' || substr(md5('tenancy-operation:' || $1), 1, 16))::bit(64)::bigint"
    };
}

/// Takes the lock for the session.
const TRY_LOCK: &str = concat!("SELECT pg_catalog.pg_try_advisory_lock(", lock_key!(), ")");

/// Probes the lock: free to take (and let go with the probe's transaction) means no
/// worker holds it. Session and transaction advisory locks of one key exclude each other.
const PROBE_LOCK: &str = concat!("SELECT pg_catalog.pg_try_advisory_xact_lock(", lock_key!(), ")");

/// True while the statement's own session holds the lock: a bigint advisory lock shows in
/// `pg_locks` as its high half in `classid`, its low half in `objid`, `objsubid` 1.
const HOLDS_LOCK: &str = concat!(
    "EXISTS (SELECT 1 FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid() \
     AND granted AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = ",
    lock_key!(),
    ")"
);

/// The lock this process holds on one tenant's operation.
pub(crate) enum WorkerLock {
    Postgres {
        /// The connection whose session holds the advisory lock, and writes the journal.
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
                let connection = match tenancy.take_operation_connection().await {
                    Some(connection) => connection,
                    None => connect(tenancy.master_url().as_str()).await?,
                };
                if !try_lock(&connection, TRY_LOCK, id).await? {
                    let _ = connection.close().await;
                    return Ok(Err(()));
                }
                Ok(Ok(WorkerLock::Postgres { connection }))
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
        Ok(update.exec(self.journal(tenancy)).await?.rows_affected == 1)
    }

    /// Where this worker writes its journal: the lock's connection (PostgreSQL), or the
    /// master pool (SQLite).
    pub(crate) fn journal<'a>(&'a self, tenancy: &'a Tenancy) -> &'a DatabaseConnection {
        match self {
            WorkerLock::Postgres { connection } => connection,
            WorkerLock::Sqlite { .. } => tenancy.master(),
        }
    }

    /// Whether this worker still holds the operation, after a journal write failed: its
    /// lock connection answers and its session holds the lock (PostgreSQL), or its lease
    /// row still names it (SQLite). A failure to tell counts as lost.
    pub(crate) async fn still_held(&self, tenancy: &Tenancy, id: &TenantId) -> bool {
        let held = Query::select().expr(self.held(id)).to_owned();
        match self {
            WorkerLock::Postgres { connection } => {
                let statement = connection.get_database_backend().build(&held);
                matches!(
                    connection.query_one_raw(statement).await.map(|row| row.map(|row| row.try_get_by_index::<bool>(0))),
                    Ok(Some(Ok(true)))
                )
            }
            WorkerLock::Sqlite { .. } => OperationEntity::find_by_id(id.as_str())
                .filter(self.held(id))
                .one(tenancy.master())
                .await
                .is_ok_and(|row| row.is_some()),
        }
    }

    /// The condition a journal write of `id`'s row adds, so it changes nothing once this
    /// worker lost the operation: the writing session holds the lock (PostgreSQL; a
    /// connection cut and reopened by the pool holds none), or the row's lease still names
    /// this process (SQLite).
    pub(crate) fn held(&self, id: &TenantId) -> SimpleExpr {
        match self {
            WorkerLock::Postgres { .. } => Expr::cust_with_values(HOLDS_LOCK, [id.as_str()]),
            WorkerLock::Sqlite { .. } => OperationColumn::Worker.eq(this_worker()),
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
            // Closing the session releases its lock.
            WorkerLock::Postgres { connection } => {
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

async fn try_lock<C: ConnectionTrait>(db: &C, sql: &str, id: &TenantId) -> Result<bool> {
    let row = db.query_one_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, [id.as_str().into()])).await?;
    Ok(row.map(|row| row.try_get_by_index::<bool>(0)).transpose()?.unwrap_or(false))
}

/// Whether `operation`'s worker is alive.
pub(crate) async fn is_alive(tenancy: &Tenancy, operation: &Operation) -> Result<bool> {
    match tenancy.backend() {
        Backend::Postgres => {
            // Free to take means nobody holds it; the probe's transaction lets it go again.
            let txn = tenancy.master().begin().await?;
            let free = try_lock(&txn, PROBE_LOCK, &operation.tenant).await?;
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
