//! The migration run ledger: which fleet migration runs happened and what each did to
//! each tenant, kept in the master database so that a run can be resumed and an operator
//! can see which tenant is behind.

use std::fmt;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
};

#[cfg(doc)]
use crate::Tenancy;
use crate::{Result, TenantId};

/// The ledger's run table.
pub const RUNS_TABLE: &str = "tenancy_migration_runs";
/// The ledger's per-tenant table.
pub const LEDGER_TABLE: &str = "tenancy_migration_ledger";

/// What a fleet run did (or has not yet done) to one tenant, as stored in the ledger's
/// `outcome` column (a sea-orm active enum).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, sea_orm::EnumIter, sea_orm::DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(sea_orm::sea_query::StringLen::None)", rename_all = "snake_case")]
pub enum TenantOutcome {
    /// Selected for the run but not attempted (yet): the run stopped after a failure, was
    /// interrupted, or is still going.
    NotAttempted,
    /// Pending migrations were applied.
    Migrated,
    /// Nothing was pending.
    UpToDate,
    /// A migration failed; the tenant's transaction was rolled back.
    Failed,
    /// The tenant is not `ready` (or has nothing to migrate) and was left alone.
    Skipped,
}

impl TenantOutcome {
    /// The value stored in the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantOutcome::NotAttempted => "not_attempted",
            TenantOutcome::Migrated => "migrated",
            TenantOutcome::UpToDate => "up_to_date",
            TenantOutcome::Failed => "failed",
            TenantOutcome::Skipped => "skipped",
        }
    }

    /// Whether a resumed run must take this tenant again.
    pub fn is_unfinished(self) -> bool {
        matches!(self, TenantOutcome::NotAttempted | TenantOutcome::Failed)
    }
}

impl fmt::Display for TenantOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One tenant's line in the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    /// The run.
    pub run_id: i64,
    /// The tenant.
    pub tenant_id: String,
    /// What happened.
    pub outcome: TenantOutcome,
    /// The migrations applied (for [`TenantOutcome::Migrated`]).
    pub migrations: Vec<String>,
    /// The error (for [`TenantOutcome::Failed`]) or the reason (for
    /// [`TenantOutcome::Skipped`]).
    pub detail: Option<String>,
    /// How long the tenant took, in milliseconds.
    pub duration_ms: i64,
    /// The id the tenant had when the run recorded this line, if it was renamed since
    /// (`renametenant` keeps a tenant's history under its new id).
    pub renamed_from: Option<String>,
    /// The server the tenant was on when the run recorded this line (`None` for lines
    /// written before the ledger kept it, and for a selected tenant never recorded).
    pub server: Option<String>,
}

/// One tenant's outcome, as written to the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutcomeRecord {
    /// The tenant.
    pub tenant: TenantId,
    /// What happened.
    pub outcome: TenantOutcome,
    /// The migrations applied.
    pub migrations: Vec<String>,
    /// The error or skip reason.
    pub detail: Option<String>,
    /// How long the tenant took, in milliseconds.
    pub duration_ms: i64,
    /// The server the tenant's storage is on, as the fleet run named it.
    pub server: Option<String>,
}

/// A fleet migration run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationRun {
    /// The run's id (increasing).
    pub id: i64,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it finished; `None` while running or if the process died.
    pub finished_at: Option<DateTime<Utc>>,
    /// Where the run is.
    pub status: RunStatus,
}

/// Where a fleet run is, as stored in the run table's `status` column (a sea-orm active
/// enum).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, sea_orm::EnumIter, sea_orm::DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(sea_orm::sea_query::StringLen::None)", rename_all = "snake_case")]
pub enum RunStatus {
    /// Started and not finished (or its process died).
    Running,
    /// Every selected tenant migrated or was up to date.
    Succeeded,
    /// A tenant (or the shared tables) failed.
    Failed,
}

pub(crate) mod runs {
    #![allow(unreachable_pub, reason = "derive macros generate `pub` items in this private module")]
    #![allow(missing_docs, reason = "private entity; documented on `MigrationRun`")]
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenancy_migration_runs")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub started_at: DateTimeUtc,
        pub finished_at: Option<DateTimeUtc>,
        pub status: super::RunStatus,
        #[sea_orm(column_type = "JsonBinary")]
        pub options: Json,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod entries {
    #![allow(unreachable_pub, reason = "derive macros generate `pub` items in this private module")]
    #![allow(missing_docs, reason = "private entity; documented on `LedgerEntry`")]
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenancy_migration_ledger")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub run_id: i64,
        // The tenant id is part of the key so the ledger can be distributed by tenant
        // (Citus) like every other tenant-keyed table.
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        pub outcome: super::TenantOutcome,
        #[sea_orm(column_type = "JsonBinary")]
        pub migrations: Json,
        pub detail: Option<String>,
        pub duration_ms: i64,
        pub updated_at: DateTimeUtc,
        pub renamed_from: Option<String>,
        pub server: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The fleet migration ledger of a master database, from [`Tenancy::ledger`].
#[derive(Clone, Copy, Debug)]
pub struct Ledger<'a> {
    master: &'a DatabaseConnection,
}

impl<'a> Ledger<'a> {
    pub(crate) fn new(master: &'a DatabaseConnection) -> Self {
        Ledger { master }
    }

    /// Starts opening a run: its row and, a page at a time through [`RunDraft::select`],
    /// its selected tenants, all in one transaction that [`RunDraft::open`] commits. Until
    /// an outcome is recorded for a selected tenant, it reads as `not_attempted` (also
    /// after a crash); a draft dropped without being opened leaves nothing behind.
    ///
    /// # Errors
    /// [`crate::Error::Database`].
    pub async fn draft_run(&self) -> Result<RunDraft> {
        let txn = self.master.begin().await?;
        let run = runs::ActiveModel {
            started_at: Set(Utc::now()),
            finished_at: Set(None),
            status: Set(RunStatus::Running),
            options: Set(serde_json::json!({})),
            ..Default::default()
        };
        let run_id = runs::Entity::insert(run).exec(&txn).await?.last_insert_id;
        Ok(RunDraft { txn, run_id })
    }

    /// Records what a run did to one tenant.
    ///
    /// # Errors
    /// [`crate::Error::Database`].
    pub async fn record_outcome(&self, run_id: i64, record: &OutcomeRecord) -> Result<()> {
        self.record_outcomes(run_id, std::slice::from_ref(record)).await
    }

    /// Records several outcomes with one multi-row insert per 500 (one round trip and
    /// one commit for a batch, not one per tenant: what keeps a fleet run with nothing
    /// pending fast). Recording a tenant twice in one run keeps the later outcome.
    ///
    /// # Errors
    /// [`crate::Error::Database`].
    pub async fn record_outcomes(&self, run_id: i64, records: &[OutcomeRecord]) -> Result<()> {
        let now = Utc::now();
        for chunk in records.chunks(500) {
            let rows = chunk.iter().map(|record| entries::ActiveModel {
                run_id: Set(run_id),
                tenant_id: Set(record.tenant.to_string()),
                outcome: Set(record.outcome),
                migrations: Set(serde_json::json!(record.migrations)),
                detail: Set(record.detail.clone()),
                duration_ms: Set(record.duration_ms),
                updated_at: Set(now),
                renamed_from: Set(None),
                server: Set(record.server.clone()),
            });
            entries::Entity::insert_many(rows)
                .on_conflict(
                    OnConflict::columns([entries::Column::RunId, entries::Column::TenantId])
                        .update_columns([
                            entries::Column::Outcome,
                            entries::Column::Migrations,
                            entries::Column::Detail,
                            entries::Column::DurationMs,
                            entries::Column::UpdatedAt,
                            entries::Column::Server,
                        ])
                        .to_owned(),
                )
                .exec_without_returning(self.master)
                .await?;
        }
        Ok(())
    }

    /// Closes a run with its final status (`succeeded` or `failed`).
    ///
    /// # Errors
    /// [`crate::Error::Database`].
    pub async fn finish_run(&self, run_id: i64, succeeded: bool) -> Result<()> {
        runs::Entity::update_many()
            .col_expr(runs::Column::FinishedAt, Expr::value(Some(Utc::now())))
            .col_expr(
                runs::Column::Status,
                Expr::value(if succeeded { RunStatus::Succeeded } else { RunStatus::Failed }),
            )
            .filter(runs::Column::Id.eq(run_id))
            .exec(self.master)
            .await?;
        Ok(())
    }

    /// The most recent run, if any.
    ///
    /// # Errors
    /// [`crate::Error::Database`].
    pub async fn last_run(&self) -> Result<Option<MigrationRun>> {
        Ok(runs::Entity::find().order_by_desc(runs::Column::Id).limit(1).one(self.master).await?.map(|run| {
            MigrationRun { id: run.id, started_at: run.started_at, finished_at: run.finished_at, status: run.status }
        }))
    }

    /// The ledger of one run, ordered by tenant id: every selected tenant, with
    /// [`TenantOutcome::NotAttempted`] for those without a recorded outcome.
    ///
    /// # Errors
    /// [`crate::Error::Database`], also for an outcome this version does not know.
    pub async fn entries(&self, run_id: i64) -> Result<Vec<LedgerEntry>> {
        // Runs opened before the selection was kept as `not_attempted` lines list it in
        // their options.
        let selected: Vec<String> = match runs::Entity::find_by_id(run_id).one(self.master).await? {
            Some(run) => serde_json::from_value(run.options["selected"].clone()).unwrap_or_default(),
            None => return Ok(Vec::new()),
        };
        let mut recorded: std::collections::HashMap<String, LedgerEntry> = entries::Entity::find()
            .filter(entries::Column::RunId.eq(run_id))
            .all(self.master)
            .await?
            .into_iter()
            .map(|row| {
                Ok((
                    row.tenant_id.clone(),
                    LedgerEntry {
                        run_id: row.run_id,
                        outcome: row.outcome,
                        migrations: serde_json::from_value(row.migrations).unwrap_or_default(),
                        detail: row.detail,
                        duration_ms: row.duration_ms,
                        tenant_id: row.tenant_id,
                        renamed_from: row.renamed_from,
                        server: row.server,
                    },
                ))
            })
            .collect::<Result<_>>()?;
        let mut ledger: Vec<LedgerEntry> = selected
            .into_iter()
            .map(|tenant_id| {
                recorded.remove(&tenant_id).unwrap_or(LedgerEntry {
                    run_id,
                    tenant_id,
                    outcome: TenantOutcome::NotAttempted,
                    migrations: Vec::new(),
                    detail: None,
                    duration_ms: 0,
                    renamed_from: None,
                    server: None,
                })
            })
            .collect();
        ledger.extend(recorded.into_values());
        ledger.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
        Ok(ledger)
    }
}

/// A run being opened ([`Ledger::draft_run`]): an open transaction of the master.
#[derive(Debug)]
pub struct RunDraft {
    txn: DatabaseTransaction,
    run_id: i64,
}

impl RunDraft {
    /// The id the run will have.
    pub fn run_id(&self) -> i64 {
        self.run_id
    }

    /// Adds `tenants` to the run's selection, as `not_attempted` (one multi-row insert per
    /// 500).
    ///
    /// # Errors
    /// [`crate::Error::Database`].
    pub async fn select(&self, tenants: &[TenantId]) -> Result<()> {
        let now = Utc::now();
        for chunk in tenants.chunks(500) {
            let rows = chunk.iter().map(|tenant| entries::ActiveModel {
                run_id: Set(self.run_id),
                tenant_id: Set(tenant.to_string()),
                outcome: Set(TenantOutcome::NotAttempted),
                migrations: Set(serde_json::json!([])),
                detail: Set(None),
                duration_ms: Set(0),
                updated_at: Set(now),
                renamed_from: Set(None),
                server: Set(None),
            });
            entries::Entity::insert_many(rows).exec_without_returning(&self.txn).await?;
        }
        Ok(())
    }

    /// Opens the run with its selection; `options` is free-form JSON describing it (jobs,
    /// filters). Returns the run's id.
    ///
    /// # Errors
    /// [`crate::Error::Database`].
    pub async fn open(self, options: serde_json::Value) -> Result<i64> {
        runs::Entity::update_many()
            .col_expr(runs::Column::Options, Expr::value(serde_json::json!({ "options": options })))
            .filter(runs::Column::Id.eq(self.run_id))
            .exec(&self.txn)
            .await?;
        self.txn.commit().await?;
        Ok(self.run_id)
    }
}

/// Moves the ledger's history of tenant `from` to `to` inside `txn` (the rename's last
/// transaction): its lines are keyed by `to` and remember `from` in `renamed_from` (the
/// first id, across several renames), and every run that selected `from` lists `to`.
/// Lines keyed by `to` before (left by an earlier tenant of that id, since deleted) are
/// dropped first: they describe another tenant. Insert then delete, not an update of the
/// key: the ledger stays distributable by tenant (Citus cannot update a distribution
/// column).
pub(crate) async fn rename_tenant<C: sea_orm::ConnectionTrait>(txn: &C, from: &TenantId, to: &TenantId) -> Result<()> {
    let backend = txn.get_database_backend();
    let sql = |sql: String| match backend {
        sea_orm::DbBackend::Sqlite => sql.replace("$1", "?1").replace("$2", "?2"),
        _ => sql,
    };
    let (from_value, to_value): (sea_orm::Value, sea_orm::Value) = (from.as_str().into(), to.as_str().into());
    txn.execute_raw(sea_orm::Statement::from_sql_and_values(
        backend,
        sql(format!("DELETE FROM {LEDGER_TABLE} WHERE tenant_id = $1")),
        [to_value.clone()],
    ))
    .await?;
    txn.execute_raw(sea_orm::Statement::from_sql_and_values(
        backend,
        sql(format!(
            "INSERT INTO {LEDGER_TABLE} \
               (run_id, tenant_id, outcome, migrations, detail, duration_ms, updated_at, renamed_from, server) \
             SELECT run_id, $2, outcome, migrations, detail, duration_ms, updated_at, coalesce(renamed_from, $1), server \
             FROM {LEDGER_TABLE} WHERE tenant_id = $1"
        )),
        [from_value.clone(), to_value],
    ))
    .await?;
    txn.execute_raw(sea_orm::Statement::from_sql_and_values(
        backend,
        sql(format!("DELETE FROM {LEDGER_TABLE} WHERE tenant_id = $1")),
        [from_value],
    ))
    .await?;
    // The runs' selections (a JSON list each): read, rewritten where they name `from`.
    for run in runs::Entity::find().all(txn).await? {
        let Some(selected) = run.options.get("selected").and_then(serde_json::Value::as_array) else { continue };
        if !selected.iter().any(|id| id.as_str() == Some(from.as_str())) {
            continue;
        }
        let mut options = run.options.clone();
        options["selected"] = selected
            .iter()
            .map(|id| if id.as_str() == Some(from.as_str()) { serde_json::json!(to) } else { id.clone() })
            .collect();
        runs::Entity::update_many()
            .col_expr(runs::Column::Options, Expr::value(options))
            .filter(runs::Column::Id.eq(run.id))
            .exec(txn)
            .await?;
    }
    Ok(())
}
