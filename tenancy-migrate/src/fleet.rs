//! Fleet runs: migrate every tenant (or a selection) with bounded concurrency, a ledger
//! in the master database, stop-or-continue on failure, resume, and plans.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tenancy::ledger::{OutcomeRecord, TenantOutcome};
use tenancy::{Isolation, Tenancy, Tenant, TenantId, TenantStatus};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::migrator::{Migrators, migrate_master, migrate_one, pending_read_only};
use crate::{Error, MigrationOutcome, Result};

/// Which tenants a fleet run or plan takes, and how.
#[derive(Debug, Clone, Default)]
pub struct FleetOptions {
    /// How many tenants migrate at once; `0` means [`default_jobs`].
    pub jobs: usize,
    /// Run every tenant even after one failed (default: after the first failure no new
    /// tenant starts).
    pub continue_on_error: bool,
    /// Take only what the last run did not finish (failed or not attempted).
    pub resume: bool,
    /// Only these tenants (all of them must exist).
    pub tenants: Option<Vec<TenantId>>,
    /// Only tenants of this isolation mode.
    pub isolation: Option<Isolation>,
    /// Leave suspended tenants alone (default: they are migrated like ready ones, so a
    /// resumed tenant is never behind).
    pub skip_suspended: bool,
}

/// The default `--jobs`: half the master pool's connection budget, so a fleet run leaves
/// connections for the ledger and for the application.
pub fn default_jobs(tenancy: &Tenancy) -> usize {
    usize::try_from(tenancy.connection_budget() / 2).unwrap_or(1).max(1)
}

/// What a fleet run did to one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantReport {
    /// The tenant.
    pub tenant: TenantId,
    /// Its isolation mode.
    pub isolation: Isolation,
    /// The outcome.
    pub outcome: TenantOutcome,
    /// Migrations applied.
    pub migrations: Vec<String>,
    /// The error of a failed tenant, or why a tenant was skipped.
    pub detail: Option<String>,
    /// Time spent on the tenant.
    pub duration: Duration,
}

/// The result of [`migrate_all`].
#[derive(Debug, Clone, Default)]
pub struct FleetReport {
    /// The ledger run id.
    pub run_id: i64,
    /// The shared (master) migrations applied first.
    pub shared: Vec<String>,
    /// One report per selected tenant, ordered by tenant id.
    pub tenants: Vec<TenantReport>,
}

impl FleetReport {
    /// How many tenants ended with `outcome`.
    pub fn count(&self, outcome: TenantOutcome) -> usize {
        self.tenants.iter().filter(|t| t.outcome == outcome).count()
    }

    /// Whether no tenant failed or was left unattempted.
    pub fn succeeded(&self) -> bool {
        self.tenants.iter().all(|t| !t.outcome.is_unfinished())
    }
}

/// Progress of a fleet run, for progress bars and per-tenant lines.
#[derive(Debug)]
#[non_exhaustive]
pub enum FleetEvent<'a> {
    /// The run starts on this many tenants.
    Started {
        /// The ledger run id.
        run_id: i64,
        /// Selected tenants.
        total: usize,
    },
    /// The master database's shared migrations were applied (before any tenant).
    SharedApplied(&'a [String]),
    /// One tenant is done.
    TenantDone(&'a TenantReport),
}

/// Selects the tenants of a run: the registry, filtered by `options`.
async fn select(tenancy: &Tenancy, options: &FleetOptions) -> Result<Vec<Tenant>> {
    let mut tenants = tenancy.tenants().await?;
    if let Some(wanted) = &options.tenants {
        let known: HashSet<&str> = tenants.iter().map(|t| t.id().as_str()).collect();
        if let Some(missing) = wanted.iter().find(|id| !known.contains(id.as_str())) {
            return Err(tenancy::Error::TenantNotFound { id: missing.to_string() }.into());
        }
        let wanted: HashSet<&str> = wanted.iter().map(TenantId::as_str).collect();
        tenants.retain(|t| wanted.contains(t.id().as_str()));
    }
    if let Some(isolation) = options.isolation {
        tenants.retain(|t| t.isolation() == isolation);
    }
    if options.resume {
        let last = tenancy.ledger().last_run().await?.ok_or(Error::NothingToResume)?;
        let unfinished: HashSet<String> = tenancy
            .ledger()
            .entries(last.id)
            .await?
            .into_iter()
            .filter(|entry| entry.outcome.is_unfinished())
            .map(|entry| entry.tenant_id)
            .collect();
        tenants.retain(|t| unfinished.contains(t.id().as_str()));
    }
    Ok(tenants)
}

/// Migrates the selected tenants.
///
/// The shared migrator (if any) runs first on the master database; if it fails, no
/// tenant is touched. Table-isolated tenants share one migration of the shared tables.
/// Each other tenant migrates in its own transaction under its advisory lock, at most
/// `jobs` at a time. Every outcome is written to the ledger as it happens, so a run that
/// dies half-way can be resumed with [`FleetOptions::resume`].
///
/// # Errors
/// [`Error::SharedMigration`] when the master's shared migrations fail,
/// [`Error::NothingToResume`], [`Error::Tenancy`] for registry and ledger failures. A
/// failing tenant is not an error: it is in the report (see [`FleetReport::succeeded`]).
pub async fn migrate_all(
    tenancy: &Tenancy,
    migrators: &Migrators,
    options: &FleetOptions,
    on_event: &(dyn Fn(FleetEvent<'_>) + Send + Sync),
) -> Result<FleetReport> {
    let tenants = select(tenancy, options).await?;
    let jobs = if options.jobs == 0 { default_jobs(tenancy) } else { options.jobs };
    let ids: Vec<TenantId> = tenants.iter().map(|t| t.id().clone()).collect();
    let run_id = tenancy
        .ledger()
        .start_run(
            &ids,
            serde_json::json!({
                "jobs": jobs,
                "continue_on_error": options.continue_on_error,
                "resume": options.resume,
                "tenants": options.tenants.as_ref().map(|t| t.iter().map(TenantId::to_string).collect::<Vec<_>>()),
                "isolation": options.isolation.map(Isolation::as_str),
            }),
        )
        .await?;
    on_event(FleetEvent::Started { run_id, total: tenants.len() });

    let mut report = FleetReport { run_id, ..FleetReport::default() };
    if let Some(shared) = &migrators.shared {
        match migrate_master(tenancy, shared.as_ref()).await {
            Ok(MigrationOutcome::Applied(names)) => {
                on_event(FleetEvent::SharedApplied(&names));
                report.shared = names;
            }
            Ok(_) => {}
            Err(source) => {
                tenancy.ledger().finish_run(run_id, false).await?;
                return Err(Error::SharedMigration { source: Box::new(source) });
            }
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut ledger = LedgerBuffer { run_id, pending: Vec::new(), last_flush: Instant::now(), done: Vec::new() };

    // Not-ready and cache tenants are reported, never migrated.
    let mut runnable = Vec::new();
    let mut table_tenants = Vec::new();
    for tenant in tenants {
        let skip = match (tenant.status(), tenant.isolation()) {
            (TenantStatus::Suspended, _) if options.skip_suspended => Some("suspended (--skip-suspended)".to_owned()),
            (TenantStatus::Ready | TenantStatus::Suspended, Isolation::Cache) => {
                Some("cache tenant: nothing to migrate".to_owned())
            }
            (TenantStatus::Ready | TenantStatus::Suspended, _) => None,
            (status, _) => Some(format!("status is '{status}', not 'ready'")),
        };
        match (skip, tenant.isolation()) {
            (Some(reason), isolation) => {
                let tenant_report = TenantReport {
                    tenant: tenant.id().clone(),
                    isolation,
                    outcome: TenantOutcome::Skipped,
                    migrations: Vec::new(),
                    detail: Some(reason),
                    duration: Duration::ZERO,
                };
                ledger.push(tenancy, tenant_report, on_event).await?;
            }
            (None, Isolation::Table) => table_tenants.push(tenant),
            (None, _) => runnable.push(tenant),
        }
    }

    // All table tenants share the master's tables: migrate them once, for all of them.
    if let Some(first) = table_tenants.first() {
        let started = Instant::now();
        let result = migrate_one(tenancy, first, migrators.tenant.as_ref(), false).await;
        if result.is_err() && !options.continue_on_error {
            stop.store(true, Ordering::SeqCst);
        }
        for tenant in &table_tenants {
            ledger.push(tenancy, to_report(tenant, &result, started.elapsed()), on_event).await?;
        }
    }

    let permits = Arc::new(Semaphore::new(jobs));
    let mut running: JoinSet<TenantReport> = JoinSet::new();
    let mut queue = runnable.into_iter();
    loop {
        // Start tenants while permits are free and the run has not been stopped.
        while !stop.load(Ordering::SeqCst) && permits.available_permits() > 0 {
            let Some(tenant) = queue.next() else { break };
            // A permit is free (checked above) and the semaphore is never closed.
            let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else { break };
            let (tenancy, migrator, stop, continue_on_error) =
                (tenancy.clone(), Arc::clone(&migrators.tenant), Arc::clone(&stop), options.continue_on_error);
            running.spawn(async move {
                let started = Instant::now();
                let result = migrate_one(&tenancy, &tenant, migrator.as_ref(), false).await;
                if result.is_err() && !continue_on_error {
                    stop.store(true, Ordering::SeqCst);
                }
                drop(permit);
                to_report(&tenant, &result, started.elapsed())
            });
        }
        match running.join_next().await {
            Some(joined) => {
                // A migration's panic is caught and reported as the tenant's failure; a
                // panic anywhere else in the task is a bug of this crate: let it surface.
                let tenant_report = joined.unwrap_or_else(|err| std::panic::resume_unwind(err.into_panic()));
                ledger.push(tenancy, tenant_report, on_event).await?;
            }
            None => break,
        }
    }
    // Whatever was never started stays `not_attempted` in the ledger.
    for tenant in queue {
        let tenant_report = TenantReport {
            tenant: tenant.id().clone(),
            isolation: tenant.isolation(),
            outcome: TenantOutcome::NotAttempted,
            migrations: Vec::new(),
            detail: Some("not started: an earlier tenant failed".to_owned()),
            duration: Duration::ZERO,
        };
        on_event(FleetEvent::TenantDone(&tenant_report));
        ledger.done.push(tenant_report);
    }
    ledger.flush(tenancy).await?;
    let mut done = ledger.done;
    done.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    report.tenants = done;
    tenancy.ledger().finish_run(run_id, report.succeeded()).await?;
    Ok(report)
}

/// Outcomes on their way to the ledger, written in batches: one transaction per batch
/// instead of one commit per tenant. An outcome lost to a crash before its batch is
/// written leaves the tenant `not_attempted`, and resuming finds it up to date: safe.
struct LedgerBuffer {
    run_id: i64,
    pending: Vec<OutcomeRecord>,
    last_flush: Instant,
    done: Vec<TenantReport>,
}

impl LedgerBuffer {
    const BATCH: usize = 64;
    const MAX_DELAY: Duration = Duration::from_millis(250);

    async fn push(
        &mut self,
        tenancy: &Tenancy,
        report: TenantReport,
        on_event: &(dyn Fn(FleetEvent<'_>) + Send + Sync),
    ) -> Result<()> {
        on_event(FleetEvent::TenantDone(&report));
        self.pending.push(OutcomeRecord {
            tenant: report.tenant.clone(),
            outcome: report.outcome,
            migrations: report.migrations.clone(),
            detail: report.detail.clone(),
            duration_ms: i64::try_from(report.duration.as_millis()).unwrap_or(i64::MAX),
        });
        self.done.push(report);
        // Failures are written at once: they are what an operator looks for first.
        if self.pending.len() >= Self::BATCH
            || self.last_flush.elapsed() >= Self::MAX_DELAY
            || self.pending.last().is_some_and(|r| r.outcome == TenantOutcome::Failed)
        {
            self.flush(tenancy).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, tenancy: &Tenancy) -> Result<()> {
        tenancy.ledger().record_outcomes(self.run_id, &self.pending).await?;
        self.pending.clear();
        self.last_flush = Instant::now();
        Ok(())
    }
}

fn to_report(tenant: &Tenant, result: &Result<MigrationOutcome>, duration: Duration) -> TenantReport {
    let (outcome, migrations, detail) = match result {
        Ok(MigrationOutcome::Applied(names)) => (TenantOutcome::Migrated, names.clone(), None),
        Ok(MigrationOutcome::UpToDate) => (TenantOutcome::UpToDate, Vec::new(), None),
        Ok(MigrationOutcome::NothingToMigrate) => {
            (TenantOutcome::Skipped, Vec::new(), Some("nothing to migrate".to_owned()))
        }
        Err(err) => (TenantOutcome::Failed, Vec::new(), Some(error_chain(err))),
    };
    TenantReport { tenant: tenant.id().clone(), isolation: tenant.isolation(), outcome, migrations, detail, duration }
}

/// An error and its causes on one line, for the ledger and per-tenant output.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// What a fleet run would do to one tenant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TenantPlan {
    /// The tenant.
    pub tenant: TenantId,
    /// Its display name.
    pub name: String,
    /// Its isolation mode.
    pub isolation: Isolation,
    /// Its status.
    pub status: String,
    /// Where its data lives (no secrets).
    pub location: String,
    /// How many tenant migrations are applied.
    pub applied: usize,
    /// The migrations a run would apply, in order.
    pub pending: Vec<String>,
    /// Why the pending list could not be read (the tenant's storage is unreachable).
    pub error: Option<String>,
}

/// The pending migrations of each selected tenant, touching nothing (`--plan`,
/// `showtenants`).
///
/// # Errors
/// [`Error::Tenancy`] for registry failures; a tenant whose storage cannot be read gets
/// its error in [`TenantPlan::error`] instead.
pub async fn plan(tenancy: &Tenancy, migrators: &Migrators, options: &FleetOptions) -> Result<Vec<TenantPlan>> {
    let tenants = select(tenancy, options).await?;
    let total = migrators.tenant.names().len();
    let mut plans = Vec::with_capacity(tenants.len());
    for tenant in tenants {
        let (pending, error) = match pending_read_only(tenancy, &tenant, migrators.tenant.as_ref()).await {
            Ok(pending) => (pending, None),
            Err(err) => (Vec::new(), Some(error_chain(&err))),
        };
        let applied = if tenant.isolation() == Isolation::Cache || error.is_some() { 0 } else { total - pending.len() };
        plans.push(TenantPlan {
            location: tenancy.describe_location(&tenant),
            status: tenant.status().to_string(),
            name: tenant.name().to_owned(),
            isolation: tenant.isolation(),
            tenant: tenant.id().clone(),
            applied,
            pending,
            error,
        });
    }
    Ok(plans)
}
