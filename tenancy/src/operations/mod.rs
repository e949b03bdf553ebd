//! The operations journal: every lifecycle operation (create, delete) is written to the
//! master database's `tenancy_operations` table before it acts, so a run killed at any
//! moment can be found, and finished or undone, by the next run.
//!
//! - **One operation per tenant.** The table's primary key is the tenant id: while a row
//!   exists no other lifecycle operation starts on that tenant. A rename holds both of its
//!   ids, with one row each (the same arguments in both), taken old id first.
//! - **A live worker holds a lock** that dies with it: a transaction-level
//!   advisory lock held open on a connection of its own (PostgreSQL), or a lease whose
//!   heartbeat the worker renews every second (SQLite). A row whose lock is free is
//!   *stale*: its worker is gone.
//! - **Intent before action.** Before a step creates something, the step's undo entry is
//!   appended to the row; the undo entries carry everything needed to
//!   remove the object again (server, name), so undoing needs neither the original
//!   arguments nor the process that wrote them.
//! - **The last change and the row's removal are one transaction**: marking a created
//!   tenant ready, or removing a deleted tenant's registry row, deletes the operation row
//!   in the same transaction. A row therefore always means "not
//!   finished".
//!
//! What a stale operation's re-run does is its kind's choice ([`OperationKind`]): a create
//! is undone and then run again, a delete or a rename is finished.

mod entity;
mod worker;

use crate::registry::placement::ShardDatabase;
use std::fmt;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use serde::{Deserialize, Serialize};

pub(crate) use self::entity::OPERATIONS_TABLE;
pub(crate) use self::entity::{Column as OperationColumn, Entity as OperationEntity};
use self::worker::WorkerLock;
pub(crate) use self::worker::{connect as connect_lock, this_worker};
use crate::{Error, Result, Tenancy, TenantId};

/// What a lifecycle operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, sea_orm::EnumIter, sea_orm::DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(sea_orm::sea_query::StringLen::None)")]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OperationKind {
    /// `createtenant`: a stale one is undone, then created again.
    #[sea_orm(string_value = "create")]
    Create,
    /// `deletetenant`: a stale one is finished.
    #[sea_orm(string_value = "delete")]
    Delete,
    /// `movetenant`: a stale one is rolled back and moved again before its switch, and
    /// finished after it.
    #[sea_orm(string_value = "move")]
    Move,
    /// `renametenant`: held under both ids (one journal row each, same arguments); a stale
    /// one is finished.
    #[sea_orm(string_value = "rename")]
    Rename,
}

impl OperationKind {
    /// The command that runs operations of this kind.
    pub fn command(self) -> &'static str {
        match self {
            OperationKind::Create => "createtenant",
            OperationKind::Delete => "deletetenant",
            OperationKind::Move => "movetenant",
            OperationKind::Rename => "renametenant",
        }
    }

    /// What a re-run does with a stale operation of this kind.
    pub fn recovery(self) -> &'static str {
        match self {
            OperationKind::Create => "undoes what it created, then creates the tenant",
            OperationKind::Delete => "finishes the delete",
            OperationKind::Move => {
                "rolls back a move stopped before its switch and moves again, or finishes one after it"
            }
            OperationKind::Rename => "finishes the rename",
        }
    }
}

impl fmt::Display for OperationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OperationKind::Create => "create",
            OperationKind::Delete => "delete",
            OperationKind::Move => "move",
            OperationKind::Rename => "rename",
        })
    }
}

/// An unfinished lifecycle operation, as the journal records it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Operation {
    /// The tenant it acts on.
    pub tenant: TenantId,
    /// What it does.
    pub kind: OperationKind,
    /// Its arguments, without secrets: a re-run must give the same ones to resume it.
    pub params: serde_json::Value,
    /// The last step it started.
    pub step: Option<String>,
    /// What it created (or, for a delete, what it was removing), oldest first.
    pub undo: Vec<UndoEntry>,
    /// `host:pid` of the process that ran it.
    pub worker: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When its worker last proved alive (SQLite) or started (PostgreSQL).
    pub heartbeat_at: DateTime<Utc>,
    /// Whether its worker was alive when the journal was read: `false` is a stale
    /// operation, which a re-run of its command (or `tenancydoctor --repair`) settles.
    pub worker_alive: bool,
}

impl Operation {
    fn from_row(row: entity::Model) -> Result<Operation> {
        let corrupt = |reason: String| Error::CorruptRegistry { tenant: row.tenant_id.clone(), reason };
        let tenant = TenantId::new(row.tenant_id.clone()).map_err(|err| corrupt(err.to_string()))?;
        let undo = serde_json::from_value(row.undo.clone())
            .map_err(|err| corrupt(format!("operation journal's undo entries: {err}")))?;
        Ok(Operation {
            tenant,
            kind: row.kind,
            params: row.params,
            step: row.step,
            undo,
            worker: row.worker,
            started_at: row.started_at,
            heartbeat_at: row.heartbeat_at,
            worker_alive: true,
        })
    }

    /// The error a command gets for this operation when its worker is gone.
    pub(crate) fn stale_error(&self) -> Error {
        Error::StaleOperation {
            tenant: self.tenant.to_string(),
            kind: self.kind,
            started: self.started_at,
            worker: self.worker.clone(),
            step: self.step.clone().unwrap_or_else(|| STARTING.to_owned()),
            arguments: self.arguments(),
        }
    }

    /// The arguments of the command that resumes it: the tenant id, or for a rename the
    /// old and the new id (whichever of its two rows this is).
    pub fn arguments(&self) -> String {
        match (self.kind, crate::renaming::journaled_ids(&self.params)) {
            (OperationKind::Rename, Some((from, to))) => format!("{from} {to}"),
            _ => self.tenant.to_string(),
        }
    }

    /// The error a command gets for this operation while its worker is alive.
    pub(crate) fn busy_error(&self) -> Error {
        Error::OperationInProgress {
            tenant: self.tenant.to_string(),
            kind: self.kind,
            started: self.started_at,
            worker: self.worker.clone(),
        }
    }
}

/// Something an operation created, with what it takes to remove it again: written to
/// the journal before the object is made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "undo")]
#[non_exhaustive]
pub enum UndoEntry {
    /// The registry row, while it is still `provisioning`.
    RegistryRow,
    /// A database tenant's role on its server.
    Role {
        /// Role name.
        name: String,
        /// Server host.
        host: String,
        /// Server port.
        port: u16,
    },
    /// A database tenant's database on its server.
    Database {
        /// Database name.
        name: String,
        /// Server host.
        host: String,
        /// Server port.
        port: u16,
    },
    /// A SQLite tenant database file (and its side files).
    File {
        /// The file.
        path: std::path::PathBuf,
    },
    /// A schema of the master database, or of a shard database.
    Schema {
        /// Schema name.
        name: String,
        /// The shard database holding it; `None`: the master database.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shard: Option<ShardDatabase>,
    },
    /// A tenant login role on the master's server (or a shard's), with the privileges
    /// granted to it.
    LoginRole {
        /// Role name.
        name: String,
        /// The shard database its privileges are in; `None`: the master database.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shard: Option<ShardDatabase>,
    },
    /// The tenant's rows of one shared table of the master.
    Rows {
        /// The table.
        table: String,
        /// Its tenant column.
        column: String,
    },
}

impl fmt::Display for UndoEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UndoEntry::RegistryRow => f.write_str("registry row"),
            UndoEntry::Role { name, host, port } => write!(f, "role '{name}' on {host}:{port}"),
            UndoEntry::Database { name, host, port } => write!(f, "database '{name}' on {host}:{port}"),
            UndoEntry::File { path } => write!(f, "file '{}'", path.display()),
            UndoEntry::Schema { name, shard: None } => write!(f, "schema '{name}'"),
            UndoEntry::Schema { name, shard: Some(shard) } => {
                write!(f, "schema '{name}' of shard '{}' on {}", shard.database, shard.address())
            }
            UndoEntry::LoginRole { name, shard: None } => write!(f, "role '{name}'"),
            UndoEntry::LoginRole { name, shard: Some(shard) } => write!(f, "role '{name}' on {}", shard.address()),
            UndoEntry::Rows { table, .. } => write!(f, "the tenant's rows of table '{table}'"),
        }
    }
}

/// Every unfinished operation, with whether its worker is still alive.
///
/// # Errors
/// [`Error::Database`] on a query failure.
pub(crate) async fn unfinished(tenancy: &Tenancy) -> Result<Vec<Operation>> {
    let rows = OperationEntity::find().all(tenancy.master()).await?;
    let mut found = Vec::with_capacity(rows.len());
    for row in rows {
        let mut operation = Operation::from_row(row)?;
        operation.worker_alive = worker::is_alive(tenancy, &operation).await?;
        found.push(operation);
    }
    found.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    Ok(found)
}

/// Refuses when `id` has an unfinished operation: [`Error::OperationInProgress`] while its
/// worker lives, [`Error::StaleOperation`] once it is gone. For commands that are not
/// lifecycle operations themselves but must not act on a tenant half made or half removed.
pub(crate) async fn refuse_if_unfinished(tenancy: &Tenancy, id: &TenantId) -> Result<()> {
    let Some(row) = OperationEntity::find_by_id(id.as_str()).one(tenancy.master()).await? else {
        return Ok(());
    };
    let operation = Operation::from_row(row)?;
    match worker::is_alive(tenancy, &operation).await? {
        true => Err(operation.busy_error()),
        false => Err(operation.stale_error()),
    }
}

/// The step an operation is at before it records one.
const STARTING: &str = "starting";

/// A started (or taken over) operation, held by this process until [`Guard::finish`].
pub(crate) struct Guard {
    tenant: TenantId,
    undo: Vec<UndoEntry>,
    lock: WorkerLock,
}

/// What [`begin`] found.
pub(crate) struct Begun {
    /// The operation, now this process's.
    pub(crate) guard: Guard,
    /// The stale operation of the same kind and arguments it took over, if any.
    pub(crate) resumed: Option<Operation>,
}

/// Starts operation `kind` on `id` with `params` (no secrets), or takes over a stale one of
/// the same kind and arguments.
///
/// # Errors
/// [`Error::OperationInProgress`] while another live worker holds the tenant;
/// [`Error::StaleOperation`] when a stale operation of another kind or other arguments
/// must be finished first; [`Error::Database`] on a query failure.
pub(crate) async fn begin(
    tenancy: &Tenancy,
    kind: OperationKind,
    id: &TenantId,
    params: serde_json::Value,
) -> Result<Begun> {
    let lock = match WorkerLock::acquire(tenancy, id).await? {
        Ok(lock) => lock,
        Err(()) => {
            // Another live worker: name its operation if it has written one yet.
            let row = OperationEntity::find_by_id(id.as_str()).one(tenancy.master()).await?;
            return Err(match row {
                Some(row) => Operation::from_row(row)?.busy_error(),
                None => Error::OperationInProgress {
                    tenant: id.to_string(),
                    kind,
                    started: Utc::now(),
                    worker: "another process".to_owned(),
                },
            });
        }
    };
    let now = Utc::now();
    let row = entity::ActiveModel {
        tenant_id: Set(id.to_string()),
        kind: Set(kind),
        params: Set(params.clone()),
        step: Set(None),
        undo: Set(serde_json::json!([])),
        worker: Set(this_worker()),
        started_at: Set(now),
        heartbeat_at: Set(now),
    };
    let inserted = OperationEntity::insert(row)
        .on_conflict(OnConflict::column(OperationColumn::TenantId).do_nothing().to_owned())
        .exec_without_returning(lock.journal(tenancy))
        .await?;
    if inserted == 1 {
        let mut guard = Guard { tenant: id.clone(), undo: Vec::new(), lock };
        guard.lock.start_heartbeat(tenancy, id);
        return Ok(Begun { guard, resumed: None });
    }
    // A row exists and this process holds the lock: the row's worker is gone.
    let Some(existing) = OperationEntity::find_by_id(id.as_str()).one(lock.journal(tenancy)).await? else {
        // Finished between the insert and the read: start afresh.
        drop(lock);
        return Box::pin(begin(tenancy, kind, id, params)).await;
    };
    let stale = Operation::from_row(existing)?;
    if lock.others_alive(&stale) {
        return Err(stale.busy_error());
    }
    if stale.kind != kind || stale.params != params {
        return Err(stale.stale_error());
    }
    if !lock.take_over(tenancy, &stale).await? {
        return Err(stale.busy_error());
    }
    tracing::warn!(tenant = %id, %kind, worker = %stale.worker, step = ?stale.step, "resuming a stale operation");
    let mut guard = Guard { tenant: id.clone(), undo: stale.undo.clone(), lock };
    guard.lock.start_heartbeat(tenancy, id);
    Ok(Begun { guard, resumed: Some(stale) })
}

impl Guard {
    /// Records that the step named `step` starts, if this worker still holds the
    /// operation (a lock connection that died means another worker may take over).
    pub(crate) async fn step(&self, tenancy: &Tenancy, step: &str) -> Result<()> {
        let write = OperationEntity::update_many()
            .col_expr(OperationColumn::Step, Expr::value(step))
            .filter(OperationColumn::TenantId.eq(self.tenant.as_str()))
            .filter(self.lock.held(&self.tenant))
            .exec(self.lock.journal(tenancy))
            .await;
        self.written(tenancy, write, step).await
    }

    /// What a journal write of this operation's row came to: `Ok` when it changed the
    /// row; [`Error::OperationLost`] when it changed nothing (the row is no longer this
    /// worker's) or failed on a connection that no longer holds the lock (cut, or
    /// reopened by its pool); the write's own error otherwise.
    async fn written(
        &self,
        tenancy: &Tenancy,
        write: Result<sea_orm::UpdateResult, sea_orm::DbErr>,
        next: &str,
    ) -> Result<()> {
        let lost = || Error::OperationLost { tenant: self.tenant.to_string(), step: next.to_owned() };
        match write {
            Ok(written) if written.rows_affected > 0 => Ok(()),
            Ok(_) => Err(lost()),
            Err(err) => match self.lock.still_held(tenancy, &self.tenant).await {
                true => Err(err.into()),
                false => Err(lost()),
            },
        }
    }

    /// Records, before it is made, something a step is about to create.
    pub(crate) async fn intend(&mut self, tenancy: &Tenancy, entry: UndoEntry) -> Result<()> {
        self.undo.push(entry);
        self.write_undo(tenancy).await
    }

    /// Forgets the newest undo entry: its step failed without creating anything.
    pub(crate) async fn forget_last(&mut self, tenancy: &Tenancy) -> Result<()> {
        self.undo.pop();
        self.write_undo(tenancy).await
    }

    /// Forgets the undo entries (after they were undone).
    pub(crate) async fn clear_undo(&mut self, tenancy: &Tenancy) -> Result<()> {
        self.undo.clear();
        self.write_undo(tenancy).await
    }

    /// What the journal holds for this operation.
    pub(crate) fn undo_entries(&self) -> &[UndoEntry] {
        &self.undo
    }

    async fn write_undo(&self, tenancy: &Tenancy) -> Result<()> {
        let undo = serde_json::to_value(&self.undo).map_err(|err| Error::CorruptRegistry {
            tenant: self.tenant.to_string(),
            reason: format!("cannot encode the operation's undo entries: {err}"),
        })?;
        let write = OperationEntity::update_many()
            .col_expr(OperationColumn::Undo, Expr::value(undo))
            .filter(OperationColumn::TenantId.eq(self.tenant.as_str()))
            .filter(self.lock.held(&self.tenant))
            .exec(self.lock.journal(tenancy))
            .await;
        self.written(tenancy, write, "recording what it creates").await
    }

    /// Sets the step and replaces the undo entries inside `db` (a transaction of the change
    /// they describe): a move's switch journals the source to drop in its own commit.
    pub(crate) async fn replace_in<C: ConnectionTrait>(
        &mut self,
        db: &C,
        step: &str,
        undo: Vec<UndoEntry>,
    ) -> Result<()> {
        let encoded = serde_json::to_value(&undo).map_err(|err| Error::CorruptRegistry {
            tenant: self.tenant.to_string(),
            reason: format!("cannot encode the operation's undo entries: {err}"),
        })?;
        OperationEntity::update_many()
            .col_expr(OperationColumn::Step, Expr::value(step))
            .col_expr(OperationColumn::Undo, Expr::value(encoded))
            .filter(OperationColumn::TenantId.eq(self.tenant.as_str()))
            .exec(db)
            .await?;
        self.undo = undo;
        Ok(())
    }

    /// Removes the operation's row inside `txn`, the transaction of its last change; the
    /// lock is released when the guard is dropped after the commit.
    pub(crate) async fn finish_in<C: ConnectionTrait>(&self, txn: &C) -> Result<()> {
        OperationEntity::delete_many().filter(OperationColumn::TenantId.eq(self.tenant.as_str())).exec(txn).await?;
        Ok(())
    }

    /// Removes the operation's row and releases the lock: the operation is over, done or
    /// fully undone.
    pub(crate) async fn finish(self, tenancy: &Tenancy) -> Result<()> {
        self.finish_in(self.lock.journal(tenancy)).await?;
        self.lock.release().await;
        Ok(())
    }

    /// Releases the lock of an operation whose row [`Guard::finish_in`] removed in a
    /// committed transaction: nothing is left to remove.
    pub(crate) async fn finished(self) {
        self.lock.release().await;
    }

    /// Releases the lock, keeping the row: the operation stays unfinished, for a re-run
    /// (or `tenancydoctor --repair`) to finish.
    pub(crate) async fn abandon(self) {
        self.lock.release().await;
    }
}

/// Settles `id`'s stale operation as a re-run of its command would: a create is undone
/// (nothing of the tenant is left), a delete or a rename finished. For
/// `tenancydoctor --repair`.
///
/// # Errors
/// [`Error::OperationInProgress`] when its worker is alive after all (or another process
/// settles it first); the undo's or the delete's errors.
pub(crate) async fn settle_stale(tenancy: &Tenancy, id: &TenantId) -> Result<()> {
    let Some(row) = OperationEntity::find_by_id(id.as_str()).one(tenancy.master()).await? else {
        return Ok(());
    };
    let operation = Operation::from_row(row)?;
    match operation.kind {
        OperationKind::Create => {
            let begun = begin(tenancy, OperationKind::Create, id, operation.params.clone()).await?;
            let guard = begun.guard;
            let leftovers = crate::provisioning::undo(tenancy, id, guard.undo_entries()).await;
            if !leftovers.is_empty() {
                guard.abandon().await;
                return Err(Error::RollbackFailed {
                    tenant: id.to_string(),
                    step: crate::ProvisionStep::ClaimId,
                    leftovers: leftovers.join(", "),
                    source: "could not undo an interrupted createtenant".into(),
                });
            }
            guard.finish(tenancy).await
        }
        OperationKind::Move => crate::relocation::settle_stale(tenancy, id, operation.params.clone()).await,
        OperationKind::Delete => {
            let drop_adopted =
                operation.params.get("drop_adopted_database").and_then(serde_json::Value::as_bool).unwrap_or(false);
            let options = crate::deletion::DeleteOptions::default().drop_adopted_database(drop_adopted);
            crate::deletion::delete(tenancy, id, &options).await.map(drop)
        }
        OperationKind::Rename => {
            let (from, to) =
                crate::renaming::journaled_ids(&operation.params).ok_or_else(|| Error::CorruptRegistry {
                    tenant: id.to_string(),
                    reason: format!("a rename operation without its ids: {}", operation.params),
                })?;
            crate::renaming::rename(tenancy, &from, &to, &crate::renaming::RenameOptions::default()).await.map(drop)
        }
    }
}
