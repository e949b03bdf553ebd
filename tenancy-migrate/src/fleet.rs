//! Fleet runs: migrate every tenant (or a selection) with bounded concurrency, servers in
//! parallel with a share of the budget each, a ledger in the master database,
//! stop-or-continue on failure, a server outage that stops only that server, canary
//! stages, resume, and plans.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sea_orm::{DatabaseConnection, DbErr, RuntimeErr};
use tenancy::ledger::{OutcomeRecord, RunDraft, TenantOutcome};
use tenancy::servers::{MASTER_SERVER, ServerMap, TenantServer};
use tenancy::{Isolation, Placement, ShardDatabase, Tenancy, Tenant, TenantId, TenantStatus};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::migrator::{
    DynMigrator, Known, Migrators, applied_in_schemas, migrate_master, migrate_one, pending_read_only,
};
use crate::{Error, MigrationOutcome, Result};

/// Which tenants a fleet run or plan takes, and how.
#[derive(Debug, Clone, Default)]
pub struct FleetOptions {
    /// How many tenants migrate at once, over all servers; `0` means [`default_jobs`].
    pub jobs: usize,
    /// How many tenants migrate at once on one server; `0` means the global jobs divided
    /// among the servers of the run (see [`server_shares`]), at least 1 each.
    pub jobs_per_server: usize,
    /// Run every tenant even after one failed (default: after the first failure no new
    /// tenant starts). A server that cannot be reached is not such a failure: it stops
    /// only its own tenants.
    pub continue_on_error: bool,
    /// Take only what the last run did not finish (failed or not attempted).
    pub resume: bool,
    /// Only these tenants (all of them must exist).
    pub tenants: Option<Vec<TenantId>>,
    /// Only tenants of this isolation mode.
    pub isolation: Option<Isolation>,
    /// Only tenants on this server (see [`server_label`]).
    pub server: Option<ServerLabel>,
    /// Leave suspended tenants alone (default: they are migrated like ready ones, so a
    /// resumed tenant is never behind).
    pub skip_suspended: bool,
    /// Migrate this many tenants first (a canary stage, see [`canary_pick`]); `0` for none.
    pub canary: usize,
    /// Migrate exactly these tenants first (a canary stage); they must be selected. Takes
    /// precedence over `canary`.
    pub canary_tenants: Option<Vec<TenantId>>,
}

/// The default `--jobs`: half the master pool's connection budget, so a fleet run leaves
/// connections for the ledger and for the application.
pub fn default_jobs(tenancy: &Tenancy) -> usize {
    usize::try_from(tenancy.connection_budget() / 2).unwrap_or(1).max(1)
}

/// The server a tenant's storage lives on, as fleet runs group, limit and report tenants.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct ServerLabel(String);

impl ServerLabel {
    /// A label as given (`--server`).
    pub fn new(label: impl Into<String>) -> Self {
        ServerLabel(label.into())
    }

    /// The label's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServerLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The server of `tenant`: `host:port` of a PostgreSQL database tenant's own server, the
/// master's `host:port` for every other tenant (schema, table and cache tenants live on
/// the master; so do SQLite database files), `master` on a SQLite master.
///
/// The one place that knows how a server is named: everything else in a fleet run only
/// compares labels.
pub fn server_label(servers: &ServerMap, tenant: &Tenant) -> ServerLabel {
    match servers.server_of(tenant) {
        // A SQLite file or a cache namespace: the master's.
        TenantServer::Embedded => ServerLabel(MASTER_SERVER.to_owned()),
        located => ServerLabel(located.label()),
    }
}

/// How many tenants may migrate at once on each of `servers` (label and number of
/// tenants to migrate there): `per_server` for each when it is not `0`; otherwise `jobs`
/// divided among them, the remainder going one each to the servers with the most
/// tenants, and at least 1 each (so more servers than jobs still all make progress; the
/// global limit still holds).
pub fn server_shares(
    servers: &BTreeMap<ServerLabel, usize>,
    jobs: usize,
    per_server: usize,
) -> BTreeMap<ServerLabel, usize> {
    if per_server > 0 {
        return servers.keys().map(|label| (label.clone(), per_server)).collect();
    }
    let count = servers.len().max(1);
    let (base, extra) = (jobs / count, jobs % count);
    let mut busiest: Vec<(&ServerLabel, &usize)> = servers.iter().collect();
    busiest.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    busiest
        .iter()
        .enumerate()
        .map(|(rank, (label, _))| ((*label).clone(), (base + usize::from(rank < extra)).max(1)))
        .collect()
}

/// The canary stage of `--canary n`: tenants taken one per server in turn (servers in
/// label order, each server's tenants by id), so a canary stage meets every server before
/// it takes a second tenant of one.
pub fn canary_pick(by_server: &BTreeMap<ServerLabel, Vec<TenantId>>, n: usize) -> Vec<TenantId> {
    let mut queues: Vec<VecDeque<&TenantId>> = by_server
        .values()
        .map(|ids| {
            let mut ids: Vec<&TenantId> = ids.iter().collect();
            ids.sort();
            ids.into_iter().collect()
        })
        .collect();
    let mut picked = Vec::with_capacity(n);
    while picked.len() < n && queues.iter().any(|q| !q.is_empty()) {
        for queue in &mut queues {
            if picked.len() == n {
                break;
            }
            if let Some(id) = queue.pop_front() {
                picked.push(id.clone());
            }
        }
    }
    picked
}

/// What a fleet run did to one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantReport {
    /// The tenant.
    pub tenant: TenantId,
    /// Its isolation mode.
    pub isolation: Isolation,
    /// The server its storage is on.
    pub server: ServerLabel,
    /// The outcome.
    pub outcome: TenantOutcome,
    /// Migrations applied.
    pub migrations: Vec<String>,
    /// The error of a failed tenant, or why a tenant was skipped or not attempted.
    pub detail: Option<String>,
    /// Time spent on the tenant.
    pub duration: Duration,
}

/// The result of [`migrate_all`]: counts, and the tenants that need attention. A run
/// keeps no report of a tenant that migrated, was up to date or was skipped (each was
/// passed to the run's events), so a run over ten thousand tenants holds no more than
/// one over ten; [`migrate_all_listed`] gathers them all for callers that want them.
#[derive(Debug, Clone, Default)]
pub struct FleetReport {
    /// The ledger run id.
    pub run_id: i64,
    /// The shared (master) migrations applied first.
    pub shared: Vec<String>,
    /// The outcomes per server, servers in label order.
    pub servers: BTreeMap<ServerLabel, OutcomeCounts>,
    /// The tenants that failed or were not attempted, ordered by tenant id.
    pub unfinished: Vec<TenantReport>,
    /// The tenants of the canary stage, if the run had one.
    pub canary: Vec<TenantId>,
    /// Whether a canary tenant failed, so the run stopped after the canary stage.
    pub canary_failed: bool,
    /// The servers found unreachable during the run: their remaining tenants were not
    /// attempted.
    pub unreachable: Vec<ServerLabel>,
}

/// How many tenants of a run ended how, on one server or overall.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct OutcomeCounts {
    /// Migrations applied.
    pub migrated: usize,
    /// Nothing was pending.
    pub up_to_date: usize,
    /// Failed.
    pub failed: usize,
    /// Skipped (not ready, cache).
    pub skipped: usize,
    /// Not attempted.
    pub not_attempted: usize,
}

impl OutcomeCounts {
    fn add(&mut self, outcome: TenantOutcome) {
        match outcome {
            TenantOutcome::Migrated => self.migrated += 1,
            TenantOutcome::UpToDate => self.up_to_date += 1,
            TenantOutcome::Failed => self.failed += 1,
            TenantOutcome::Skipped => self.skipped += 1,
            TenantOutcome::NotAttempted => self.not_attempted += 1,
        }
    }
}

impl OutcomeCounts {
    /// How many ended with `outcome`.
    pub fn of(&self, outcome: TenantOutcome) -> usize {
        match outcome {
            TenantOutcome::Migrated => self.migrated,
            TenantOutcome::UpToDate => self.up_to_date,
            TenantOutcome::Failed => self.failed,
            TenantOutcome::Skipped => self.skipped,
            TenantOutcome::NotAttempted => self.not_attempted,
        }
    }
}

impl FleetReport {
    /// How many tenants ended with `outcome`.
    pub fn count(&self, outcome: TenantOutcome) -> usize {
        self.servers.values().map(|counts| counts.of(outcome)).sum()
    }

    /// Whether no tenant failed or was left unattempted.
    pub fn succeeded(&self) -> bool {
        self.unfinished.is_empty()
    }

    /// The outcomes per server, servers in label order.
    pub fn by_server(&self) -> BTreeMap<ServerLabel, OutcomeCounts> {
        self.servers.clone()
    }

    fn record(&mut self, report: &TenantReport) {
        self.servers.entry(report.server.clone()).or_default().add(report.outcome);
        if report.outcome.is_unfinished() {
            self.unfinished.push(report.clone());
        }
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
    /// A server could not be reached: no more of its tenants start in this run.
    ServerUnreachable(&'a ServerLabel),
    /// A canary tenant failed: no tenant after the canary stage starts.
    CanaryFailed(&'a [TenantId]),
}

/// Tenants read from the registry at a time.
const PAGE: u64 = 500;

/// Which registered tenants a run takes: `options` with the ids and resume set made into
/// lookups. Every pass over the registry asks it, so no pass holds the selection.
struct Filter<'a> {
    options: &'a FleetOptions,
    servers: ServerMap,
    wanted: Option<HashSet<&'a str>>,
    /// With `--resume`: the tenants the last run did not finish.
    unfinished: Option<HashSet<String>>,
}

impl Filter<'_> {
    fn selects(&self, tenant: &Tenant, label: &ServerLabel) -> bool {
        self.wanted.as_ref().is_none_or(|wanted| wanted.contains(tenant.id().as_str()))
            && self.options.server.as_ref().is_none_or(|server| server == label)
            && self.options.isolation.is_none_or(|isolation| tenant.isolation() == isolation)
            && self.unfinished.as_ref().is_none_or(|unfinished| unfinished.contains(tenant.id().as_str()))
    }
}

/// What the first pass over the registry found: everything decided before a tenant is
/// touched.
struct Survey {
    /// Selected tenants.
    total: usize,
    /// Selected tenants to migrate (not skipped) per server: what the jobs are shared by.
    per_server: BTreeMap<ServerLabel, usize>,
    /// The canary stage's tenants, ordered by id.
    canary: Vec<TenantId>,
    /// Whether table tenants are to be migrated (one migration of the shared tables), and
    /// whether that happens in the canary stage (one of them is a canary).
    tables: Option<Stage>,
}

/// The two stages of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Canary,
    Rest,
}

/// The filter of a run (or plan) after checking every id and server named in `options`.
async fn filter<'a>(tenancy: &Tenancy, options: &'a FleetOptions) -> Result<Filter<'a>> {
    let unfinished = if options.resume {
        let last = tenancy.ledger().last_run().await?.ok_or(Error::NothingToResume)?;
        let unfinished = tenancy
            .ledger()
            .entries(last.id)
            .await?
            .into_iter()
            .filter(|entry| entry.outcome.is_unfinished())
            .map(|entry| entry.tenant_id)
            .collect();
        Some(unfinished)
    } else {
        None
    };
    Ok(Filter {
        options,
        servers: tenancy.server_map().await?,
        wanted: options.tenants.as_ref().map(|ids| ids.iter().map(TenantId::as_str).collect()),
        unfinished,
    })
}

/// The first pass: checks what `options` name (every id and server exists, every named
/// canary is selected), counts the selection per server, picks the canary stage, and
/// adds each selected tenant to `draft` (when opening a run). Holds no tenant.
async fn survey(tenancy: &Tenancy, filter: &Filter<'_>, draft: Option<&RunDraft>) -> Result<Survey> {
    let options = filter.options;
    let mut known_servers: BTreeSet<ServerLabel> =
        filter.servers.servers().iter().map(|server| ServerLabel(server.name.to_string())).collect();
    known_servers.insert(ServerLabel(MASTER_SERVER.to_owned()));
    let mut missing: BTreeSet<&str> = filter.wanted.iter().flatten().copied().collect();
    let mut named_canaries: HashSet<&TenantId> = options.canary_tenants.iter().flatten().collect();
    let mut survey = Survey { total: 0, per_server: BTreeMap::new(), canary: Vec::new(), tables: None };
    // Each server's first `canary` tenants by id (pages come in id order).
    let mut canary_candidates: BTreeMap<ServerLabel, Vec<TenantId>> = BTreeMap::new();
    let mut any_table = false;
    let mut after: Option<TenantId> = None;
    loop {
        let page = tenancy.tenants_after(after.as_ref(), PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id().clone());
        let mut selected = Vec::new();
        for tenant in &page {
            let label = server_label(&filter.servers, tenant);
            missing.remove(tenant.id().as_str());
            if !filter.selects(tenant, &label) {
                known_servers.insert(label);
                continue;
            }
            survey.total += 1;
            selected.push(tenant.id().clone());
            named_canaries.remove(tenant.id());
            if skip_reason(tenant, options).is_none() {
                if tenant.isolation() == Isolation::Table {
                    any_table = true;
                } else if options.canary > 0 && options.canary_tenants.is_none() {
                    let candidates = canary_candidates.entry(label.clone()).or_default();
                    if candidates.len() < options.canary {
                        candidates.push(tenant.id().clone());
                    }
                }
                *survey.per_server.entry(label.clone()).or_default() += 1;
            }
            known_servers.insert(label);
        }
        if let Some(draft) = draft {
            draft.select(&selected).await?;
        }
    }
    if let Some(missing) = options.tenants.iter().flatten().find(|id| missing.contains(id.as_str())) {
        return Err(tenancy::Error::TenantNotFound { id: missing.to_string() }.into());
    }
    if let Some(server) = &options.server
        && !known_servers.contains(server)
    {
        return Err(Error::UnknownServer {
            server: server.to_string(),
            known: known_servers.into_iter().map(|label| label.0).collect(),
        });
    }
    survey.canary = match &options.canary_tenants {
        Some(named) => {
            if !named_canaries.is_empty() {
                let unknown = named.iter().filter(|id| named_canaries.contains(id)).map(TenantId::to_string).collect();
                return Err(Error::UnknownCanaryTenants { unknown });
            }
            named.clone()
        }
        // Table tenants share one migration of the shared tables, never a canary of
        // their own; tenants that will be skipped cannot show anything either.
        None => canary_pick(&canary_candidates, options.canary),
    };
    survey.canary.sort();
    survey.canary.dedup();
    if any_table {
        // A named canary that is a table tenant takes the shared tables' migration (and so
        // every table tenant) into the canary stage.
        let mut table_canary = false;
        for id in &survey.canary {
            if tenancy.find_tenant(id.clone()).await?.is_some_and(|t| t.isolation() == Isolation::Table) {
                table_canary = true;
                break;
            }
        }
        survey.tables = Some(if table_canary { Stage::Canary } else { Stage::Rest });
    }
    Ok(survey)
}

/// Why a selected tenant is reported without being migrated, if it is.
fn skip_reason(tenant: &Tenant, options: &FleetOptions) -> Option<String> {
    match (tenant.status(), tenant.isolation()) {
        (TenantStatus::Suspended, _) if options.skip_suspended => Some("suspended (--skip-suspended)".to_owned()),
        (TenantStatus::Ready | TenantStatus::Suspended, Isolation::Cache) => {
            Some("cache tenant: nothing to migrate".to_owned())
        }
        (TenantStatus::Ready | TenantStatus::Suspended, _) => None,
        (status, _) => Some(format!("status is '{status}', not 'ready'")),
    }
}

/// Migrates the selected tenants.
///
/// The shared migrator (if any) runs first on the master database; if it fails, no
/// tenant is touched. Table-isolated tenants share one migration of the shared tables.
/// Each other tenant migrates in its own transaction under its advisory lock. Tenants are
/// grouped by server ([`server_label`]) and the servers run in parallel: at most `jobs`
/// tenants at once over all, and at most each server's share ([`server_shares`]) on one
/// server. A tenant whose server cannot be reached (refused, timed out, shut down under
/// it) fails naming the server, and that server's remaining tenants are left
/// `not_attempted`, while the other servers go on: an outage is not a migration failure
/// and does not stop the run, even without `continue_on_error`.
///
/// With a canary stage (`canary`, `canary_tenants`), those tenants migrate first; if one
/// fails, every other tenant is left `not_attempted` and the run stops.
///
/// Every outcome is written to the ledger (with the tenant's server) as it happens, so a
/// run that dies half-way, or left a server's tenants behind, can be resumed with
/// [`FleetOptions::resume`].
///
/// The registry is read a page at a time, twice (once to check the options and open the
/// run, once to migrate), and schema tenants' applied migrations are read a batch at a
/// time: a run holds a page of tenants, not the fleet, and a tenant with nothing pending
/// costs a share of one query.
///
/// # Errors
/// [`Error::SharedMigration`] when the master's shared migrations fail,
/// [`Error::NothingToResume`], [`Error::UnknownServer`], [`Error::UnknownCanaryTenants`],
/// [`Error::Tenancy`] for registry and ledger failures. A failing tenant is not an
/// error: it is in the report (see [`FleetReport::succeeded`]).
pub async fn migrate_all(
    tenancy: &Tenancy,
    migrators: &Migrators,
    options: &FleetOptions,
    on_event: &(dyn Fn(FleetEvent<'_>) + Send + Sync),
) -> Result<FleetReport> {
    let filter = filter(tenancy, options).await?;
    let draft = tenancy.ledger().draft_run().await?;
    // An error here drops the draft: nothing of the run is written.
    let survey = survey(tenancy, &filter, Some(&draft)).await?;
    let jobs = if options.jobs == 0 { default_jobs(tenancy) } else { options.jobs };
    let shares = server_shares(&survey.per_server, jobs, options.jobs_per_server);
    let run_id = draft
        .open(serde_json::json!({
            "jobs": jobs,
            "jobs_per_server": shares,
            "continue_on_error": options.continue_on_error,
            "resume": options.resume,
            "tenants": options.tenants.as_ref().map(|t| t.iter().map(TenantId::to_string).collect::<Vec<_>>()),
            "isolation": options.isolation.map(Isolation::as_str),
            "server": options.server,
            "canary": survey.canary,
        }))
        .await?;
    on_event(FleetEvent::Started { run_id, total: survey.total });

    let mut report = FleetReport { run_id, canary: survey.canary.clone(), ..FleetReport::default() };
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

    let mut run = Run {
        tenancy: tenancy.clone(),
        migrator: Arc::clone(&migrators.tenant),
        filter,
        canary: survey.canary.iter().cloned().collect(),
        jobs: Arc::new(Semaphore::new(jobs)),
        jobs_total: jobs,
        servers: shares
            .iter()
            .map(|(label, share)| {
                let slot =
                    ServerSlot { permits: Arc::new(Semaphore::new(*share)), down: Arc::new(AtomicBool::new(false)) };
                (label.clone(), slot)
            })
            .collect(),
        stop: Arc::new(AtomicBool::new(false)),
        continue_on_error: options.continue_on_error,
        tables: survey.tables.map(|stage| (stage, None)),
        ledger: LedgerBuffer { run_id, pending: Vec::new(), last_flush: Instant::now(), report },
        unreachable: Vec::new(),
    };
    // Without a canary stage, it is empty and everything is in the rest.
    let why_not = "not started: an earlier tenant failed".to_owned();
    run.stage(Stage::Canary, &why_not, on_event).await?;
    let failed: Vec<TenantId> = run
        .ledger
        .report
        .unfinished
        .iter()
        .filter(|t| run.canary.contains(&t.tenant) || (t.isolation == Isolation::Table && run.tables_in(Stage::Canary)))
        .map(|t| t.tenant.clone())
        .collect();
    if failed.is_empty() {
        run.stage(Stage::Rest, &why_not, on_event).await?;
    } else {
        on_event(FleetEvent::CanaryFailed(&failed));
        run.ledger.report.canary_failed = true;
        let names: Vec<String> = failed.iter().map(TenantId::to_string).collect();
        let why = format!("not started: the canary stage failed ({})", names.join(", "));
        run.stop.store(true, Ordering::SeqCst);
        run.stage(Stage::Rest, &why, on_event).await?;
    }
    run.ledger.flush(tenancy).await?;
    let mut report = run.ledger.report;
    report.unfinished.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    report.unreachable = run.unreachable;
    tenancy.ledger().finish_run(run_id, report.succeeded()).await?;
    Ok(report)
}

/// [`migrate_all`], also returning the report of every tenant, ordered by id, gathered
/// from the run's events: for callers that want each outcome and whose fleet is small
/// enough to hold them (a run itself keeps only counts and the unfinished tenants).
///
/// # Errors
/// As [`migrate_all`].
pub async fn migrate_all_listed(
    tenancy: &Tenancy,
    migrators: &Migrators,
    options: &FleetOptions,
    on_event: &(dyn Fn(FleetEvent<'_>) + Send + Sync),
) -> Result<(FleetReport, Vec<TenantReport>)> {
    let listed = std::sync::Mutex::new(Vec::new());
    let report = migrate_all(tenancy, migrators, options, &|event| {
        if let FleetEvent::TenantDone(tenant) = &event {
            listed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((*tenant).clone());
        }
        on_event(event);
    })
    .await?;
    let mut listed = listed.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    listed.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    Ok((report, listed))
}

/// One server's limit and state in a run.
struct ServerSlot {
    /// Its share of the run's jobs.
    permits: Arc<Semaphore>,
    /// Set when one of its tenants found it unreachable: none of its tenants starts after.
    down: Arc<AtomicBool>,
}

/// Where the tenants of a stage come from: the canary tenants by id, or the registry a
/// page at a time.
enum Feed {
    Listed(Vec<TenantId>),
    Pages { after: Option<TenantId>, done: bool },
}

impl Feed {
    fn exhausted(&self) -> bool {
        match self {
            Feed::Listed(ids) => ids.is_empty(),
            Feed::Pages { done, .. } => *done,
        }
    }

    async fn next(&mut self, tenancy: &Tenancy) -> Result<Vec<Tenant>> {
        match self {
            Feed::Listed(ids) => {
                let mut tenants = Vec::new();
                for id in std::mem::take(ids) {
                    // Deleted since the survey: nothing to migrate.
                    if let Some(tenant) = tenancy.find_tenant(id).await? {
                        tenants.push(tenant);
                    }
                }
                Ok(tenants)
            }
            Feed::Pages { after, done } => {
                let page = tenancy.tenants_after(after.as_ref(), PAGE).await?;
                match page.last() {
                    Some(last) => *after = Some(last.id().clone()),
                    None => *done = true,
                }
                Ok(page)
            }
        }
    }
}

/// A run's state over its stages.
struct Run<'a> {
    tenancy: Tenancy,
    migrator: Arc<dyn DynMigrator>,
    filter: Filter<'a>,
    canary: HashSet<TenantId>,
    /// The run's global limit.
    jobs: Arc<Semaphore>,
    /// The number of its permits.
    jobs_total: usize,
    servers: BTreeMap<ServerLabel, ServerSlot>,
    /// Set by a failing tenant (without `continue_on_error`): no new tenant starts.
    stop: Arc<AtomicBool>,
    continue_on_error: bool,
    /// The stage of the shared tables' migration, and once run, its report (the template
    /// of every table tenant's).
    tables: Option<(Stage, Option<TenantReport>)>,
    ledger: LedgerBuffer,
    unreachable: Vec<ServerLabel>,
}

impl Run<'_> {
    /// Tenants read per query by [`Run::read_applied`]. PostgreSQL plans a `UNION ALL`
    /// of a few hundred tables in more than linear time; 64 costs about what the tables'
    /// first opening in the session costs anyway.
    const READ_BATCH: usize = 64;
    /// Fewer tenants waiting than this, and the next page is read.
    const QUEUE_LOW: usize = 256;

    fn tables_in(&self, stage: Stage) -> bool {
        self.tables.as_ref().is_some_and(|(at, _)| *at == stage)
    }

    /// Migrates one stage's tenants: the table tenants' shared migration first (in its
    /// stage), then the others, servers in parallel, each server's tenants in id order.
    /// Once the run is stopped, what is left is reported not attempted, for `why_not`.
    async fn stage(
        &mut self,
        stage: Stage,
        why_not: &str,
        on_event: &(dyn Fn(FleetEvent<'_>) + Send + Sync),
    ) -> Result<()> {
        let tenancy = self.tenancy.clone();
        if self.tables_in(stage) && !self.stop.load(Ordering::SeqCst) {
            self.migrate_tables().await?;
        }
        let mut feed = match stage {
            Stage::Canary => Feed::Listed(self.canary.iter().cloned().collect()),
            Stage::Rest => Feed::Pages { after: None, done: false },
        };
        let mut queues: BTreeMap<ServerLabel, VecDeque<(Tenant, Known)>> = BTreeMap::new();
        let mut queued = 0;
        let mut running: JoinSet<TenantReport> = JoinSet::new();
        loop {
            while queued < Self::QUEUE_LOW && !feed.exhausted() {
                let page = feed.next(&tenancy).await?;
                let mut candidates = Vec::new();
                for tenant in page {
                    let server = server_label(&self.filter.servers, &tenant);
                    if !self.filter.selects(&tenant, &server)
                        || (stage == Stage::Rest && self.canary.contains(tenant.id()))
                    {
                        continue;
                    }
                    if let Some(report) = self.settled(&tenant, &server, why_not) {
                        self.ledger.push(&tenancy, report, on_event).await?;
                    } else {
                        candidates.push((tenant, server));
                    }
                }
                let known = self.read_applied(&candidates).await;
                for ((tenant, server), known) in candidates.into_iter().zip(known) {
                    match known {
                        Some(known) => {
                            queues.entry(server).or_default().push_back((tenant, known));
                            queued += 1;
                        }
                        None => {
                            let report = TenantReport {
                                tenant: tenant.id().clone(),
                                isolation: tenant.isolation(),
                                server,
                                outcome: TenantOutcome::UpToDate,
                                migrations: Vec::new(),
                                detail: None,
                                duration: Duration::ZERO,
                            };
                            self.ledger.push(&tenancy, report, on_event).await?;
                        }
                    }
                }
            }
            // Start tenants, one per server in turn, while the run and the server have
            // permits free and the run has not been stopped.
            let mut started = true;
            while started && !self.stop.load(Ordering::SeqCst) {
                started = false;
                for (server, queue) in &mut queues {
                    let Some(slot) = self.servers.get(server) else { continue };
                    if queue.is_empty() || slot.down.load(Ordering::SeqCst) {
                        continue;
                    }
                    // Only this loop takes permits (finished tasks give theirs back), so
                    // nothing waits on a semaphore: a tenant starts when both its server
                    // and the run have a permit free, and otherwise waits in its queue.
                    let Ok(job) = Arc::clone(&self.jobs).try_acquire_owned() else { break };
                    let Ok(on_server) = Arc::clone(&slot.permits).try_acquire_owned() else { continue };
                    let Some((tenant, known)) = queue.pop_front() else { continue };
                    queued -= 1;
                    let (tenancy, migrator, stop, down, server, continue_on_error) = (
                        tenancy.clone(),
                        Arc::clone(&self.migrator),
                        Arc::clone(&self.stop),
                        Arc::clone(&slot.down),
                        server.clone(),
                        self.continue_on_error,
                    );
                    // The step's span: the tenant, its isolation and server (never a secret).
                    let span = tracing::info_span!(
                        "fleet_step",
                        tenant = %tenant.id(),
                        isolation = %tenant.isolation(),
                        server = %server,
                    );
                    running.spawn(
                        async move {
                            let started = Instant::now();
                            let result = migrate_one(&tenancy, &tenant, migrator.as_ref(), known).await;
                            let outage = result.as_ref().err().is_some_and(server_unreachable);
                            if outage {
                                down.store(true, Ordering::SeqCst);
                            } else if result.is_err() && !continue_on_error && !down.load(Ordering::SeqCst) {
                                // A tenant failing because its server went away is the outage's,
                                // not a migration failure: it does not stop the other servers.
                                stop.store(true, Ordering::SeqCst);
                            }
                            drop((on_server, job));
                            let mut report = to_report(&tenant, server.clone(), &result, started.elapsed());
                            if outage {
                                report.detail =
                                    Some(format!("server {server} unreachable: {}", report.detail.unwrap_or_default()));
                            }
                            report
                        }
                        .instrument(span),
                    );
                    started = true;
                }
            }
            let Some(joined) = running.join_next().await else {
                // Nothing runs: the stage is over once nothing waits either (or nothing
                // can start any more).
                if (queued == 0 && feed.exhausted()) || self.stop.load(Ordering::SeqCst) {
                    break;
                }
                if queued > 0 && queues.iter().all(|(server, queue)| queue.is_empty() || self.is_down(server)) {
                    break;
                }
                continue;
            };
            // A migration's panic is caught and reported as the tenant's failure; a panic
            // anywhere else in the task is a bug of this crate: let it surface.
            let tenant_report = joined.unwrap_or_else(|err| std::panic::resume_unwind(err.into_panic()));
            let server = tenant_report.server.clone();
            self.ledger.push(&tenancy, tenant_report, on_event).await?;
            // The server is gone: its queued tenants are not attempted, now.
            if self.is_down(&server) && !self.unreachable.contains(&server) {
                on_event(FleetEvent::ServerUnreachable(&server));
                self.unreachable.push(server.clone());
                let why = format!("server {server} unreachable");
                for (tenant, _) in queues.get_mut(&server).map(std::mem::take).unwrap_or_default() {
                    queued -= 1;
                    self.ledger.push(&tenancy, not_attempted(&tenant, server.clone(), why.clone()), on_event).await?;
                }
            }
        }
        // Whatever was never started stays `not_attempted` in the ledger.
        for (server, queue) in queues {
            for (tenant, _) in queue {
                let why = self.why_not_started(&server, why_not);
                self.ledger.push(&tenancy, not_attempted(&tenant, server.clone(), why), on_event).await?;
            }
        }
        while !feed.exhausted() {
            for tenant in feed.next(&tenancy).await? {
                let server = server_label(&self.filter.servers, &tenant);
                if !self.filter.selects(&tenant, &server) || (stage == Stage::Rest && self.canary.contains(tenant.id()))
                {
                    continue;
                }
                let report = match self.settled(&tenant, &server, why_not) {
                    Some(report) => report,
                    None => not_attempted(&tenant, server.clone(), self.why_not_started(&server, why_not)),
                };
                self.ledger.push(&tenancy, report, on_event).await?;
            }
        }
        Ok(())
    }

    fn is_down(&self, server: &ServerLabel) -> bool {
        self.servers.get(server).is_some_and(|slot| slot.down.load(Ordering::SeqCst))
    }

    fn why_not_started(&self, server: &ServerLabel, why_not: &str) -> String {
        if self.is_down(server) { format!("server {server} unreachable") } else { why_not.to_owned() }
    }

    /// The report of a tenant this stage does not start: skipped, a table tenant (the
    /// shared tables' migration's outcome), or not attempted once the run stopped or its
    /// server is down. `None` for a tenant to migrate.
    fn settled(&self, tenant: &Tenant, server: &ServerLabel, why_not: &str) -> Option<TenantReport> {
        if let Some(reason) = skip_reason(tenant, self.filter.options) {
            return Some(TenantReport {
                tenant: tenant.id().clone(),
                isolation: tenant.isolation(),
                server: server.clone(),
                outcome: TenantOutcome::Skipped,
                migrations: Vec::new(),
                detail: Some(reason),
                duration: Duration::ZERO,
            });
        }
        if tenant.isolation() == Isolation::Table {
            return Some(match &self.tables {
                Some((_, Some(template))) => TenantReport {
                    tenant: tenant.id().clone(),
                    isolation: tenant.isolation(),
                    server: server.clone(),
                    ..template.clone()
                },
                _ => not_attempted(tenant, server.clone(), why_not.to_owned()),
            });
        }
        if self.stop.load(Ordering::SeqCst) || self.is_down(server) {
            return Some(not_attempted(tenant, server.clone(), self.why_not_started(server, why_not)));
        }
        None
    }

    /// The one migration of the shared tables for every table tenant, run on the first
    /// of them.
    async fn migrate_tables(&mut self) -> Result<()> {
        let mut first = None;
        let mut after: Option<TenantId> = None;
        'pages: loop {
            let page = self.tenancy.tenants_after(after.as_ref(), PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id().clone());
            for tenant in page {
                let server = server_label(&self.filter.servers, &tenant);
                if tenant.isolation() == Isolation::Table
                    && self.filter.selects(&tenant, &server)
                    && skip_reason(&tenant, self.filter.options).is_none()
                {
                    first = Some((tenant, server));
                    break 'pages;
                }
            }
        }
        let Some((first, server)) = first else { return Ok(()) };
        let started = Instant::now();
        let result = migrate_one(&self.tenancy, &first, self.migrator.as_ref(), Known::Nothing).await;
        if result.is_err() && !self.continue_on_error {
            self.stop.store(true, Ordering::SeqCst);
        }
        if let Some((_, template)) = &mut self.tables {
            *template = Some(to_report(&first, server, &result, started.elapsed()));
        }
        Ok(())
    }

    /// What is known of each tenant's migrations before it starts: `None` for a tenant
    /// found up to date (it is not started at all), [`Known::Behind`] for one with a
    /// pending migration, [`Known::Nothing`] for one that could not be read here (it reads
    /// its own when it starts).
    ///
    /// Schema tenants are read in batches, one query per [`Run::READ_BATCH`] tenants of
    /// one database (the master's, or a shard's); database tenants each need a connection
    /// of their own and read when they start.
    async fn read_applied(&self, tenants: &[(Tenant, ServerLabel)]) -> Vec<Option<Known>> {
        let mut known = vec![Some(Known::Nothing); tenants.len()];
        // The master's schemas, then each shard database's (a handful: a list will do).
        let mut by_database: Vec<SchemasOf<'_>> = vec![(None, Vec::new())];
        for (index, (tenant, _)) in tenants.iter().enumerate() {
            if let Placement::Schema { schema, shard, .. } = tenant.placement() {
                let entry = (index, schema.as_str());
                match by_database.iter_mut().find(|(database, _)| *database == shard.as_ref()) {
                    Some((_, schemas)) => schemas.push(entry),
                    None => by_database.push((shard.as_ref(), vec![entry])),
                }
            }
        }
        let table = self.migrator.table_name();
        let names = self.migrator.names();
        // Owned, so the reads' futures borrow nothing (a run's future must be `Send` for
        // any lifetime a caller gives it).
        let mut batches: Vec<(DatabaseConnection, Vec<(usize, String)>)> = Vec::new();
        for (shard, schemas) in &by_database {
            let db = match shard {
                None => self.tenancy.master().clone(),
                Some(shard) => match self.tenancy.shard_admin_pool(shard).await {
                    Ok(pool) => pool,
                    // Each of its tenants finds out for itself, and reports it.
                    Err(_) => continue,
                },
            };
            batches.extend(schemas.chunks(Self::READ_BATCH).map(|batch| {
                (db.clone(), batch.iter().map(|(index, schema)| (*index, (*schema).to_owned())).collect())
            }));
        }
        // As many reads at once as the run has jobs: a read costs the server little more
        // than opening each table once per session, which sessions do side by side.
        let reads = futures_util::stream::iter(batches)
            .map(|(db, batch)| {
                let table = table.clone();
                async move {
                    let schemas: Vec<&str> = batch.iter().map(|(_, schema)| schema.as_str()).collect();
                    let applied = applied_in_schemas(&db, &schemas, &table).await;
                    (batch, applied)
                }
            })
            .buffer_unordered(self.jobs_total.max(1));
        futures_util::pin_mut!(reads);
        while let Some((batch, applied)) = reads.next().await {
            let Some(applied) = applied else { continue };
            for ((index, _), applied) in batch.iter().zip(applied) {
                let behind = names.iter().any(|name| !applied.contains(name));
                known[*index] = behind.then_some(Known::Behind);
            }
        }
        known
    }
}

/// The schema tenants of one database (`None`: the master's), as their index in a batch
/// of tenants and their schema.
type SchemasOf<'a> = (Option<&'a ShardDatabase>, Vec<(usize, &'a str)>);

fn not_attempted(tenant: &Tenant, server: ServerLabel, why: String) -> TenantReport {
    TenantReport {
        tenant: tenant.id().clone(),
        isolation: tenant.isolation(),
        server,
        outcome: TenantOutcome::NotAttempted,
        migrations: Vec::new(),
        detail: Some(why),
        duration: Duration::ZERO,
    }
}

/// Whether `err` says the tenant's server cannot be reached (refused, timed out, gone
/// mid-transaction, shutting down) rather than that the tenant or a migration is wrong.
/// Decided from the driver's error kinds and SQLSTATE classes, never from message text:
/// a refused password (`28P01`) or a missing database (`3D000`) is the tenant's failure.
pub(crate) fn server_unreachable(err: &Error) -> bool {
    match err {
        Error::Tenancy(tenancy::Error::CannotConnect { source, .. }) | Error::Migration { source, .. } => {
            db_err_unreachable(source)
        }
        _ => false,
    }
}

fn db_err_unreachable(err: &DbErr) -> bool {
    match err {
        // A pool that cannot get a connection in time: its server does not answer.
        DbErr::ConnectionAcquire(_) => true,
        DbErr::Conn(RuntimeErr::SqlxError(err))
        | DbErr::Exec(RuntimeErr::SqlxError(err))
        | DbErr::Query(RuntimeErr::SqlxError(err)) => sqlx_unreachable(err),
        _ => false,
    }
}

fn sqlx_unreachable(err: &sea_orm::sqlx::Error) -> bool {
    use sea_orm::sqlx::Error as E;
    use std::io::ErrorKind as K;
    match err {
        E::Io(io) => matches!(
            io.kind(),
            K::ConnectionRefused
                | K::ConnectionReset
                | K::ConnectionAborted
                | K::NotConnected
                | K::BrokenPipe
                | K::TimedOut
                | K::UnexpectedEof
                | K::HostUnreachable
                | K::NetworkUnreachable
                | K::AddrNotAvailable
        ),
        E::PoolTimedOut | E::WorkerCrashed => true,
        // Class 08: connection exception; 57P01..57P03: the server is shutting down
        // (`terminating connection due to administrator command`), crashed, or starting.
        E::Database(db) => {
            db.code().is_some_and(|code| code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03"))
        }
        _ => false,
    }
}

/// Outcomes on their way to the ledger, written in batches: one transaction per batch
/// instead of one commit per tenant. An outcome lost to a crash before its batch is
/// written leaves the tenant `not_attempted`, and resuming finds it up to date: safe.
struct LedgerBuffer {
    run_id: i64,
    pending: Vec<OutcomeRecord>,
    last_flush: Instant,
    /// The run's report so far: counts, and the unfinished tenants.
    report: FleetReport,
}

impl LedgerBuffer {
    /// A batch is one multi-row insert: tenants found up to date arrive by the hundred.
    const BATCH: usize = 500;
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
            server: Some(report.server.to_string()),
        });
        self.report.record(&report);
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

fn to_report(
    tenant: &Tenant,
    server: ServerLabel,
    result: &Result<MigrationOutcome>,
    duration: Duration,
) -> TenantReport {
    let (outcome, migrations, detail) = match result {
        Ok(MigrationOutcome::Applied(names)) => (TenantOutcome::Migrated, names.clone(), None),
        Ok(MigrationOutcome::UpToDate) => (TenantOutcome::UpToDate, Vec::new(), None),
        Ok(MigrationOutcome::NothingToMigrate) => {
            (TenantOutcome::Skipped, Vec::new(), Some("nothing to migrate".to_owned()))
        }
        Err(err) => (TenantOutcome::Failed, Vec::new(), Some(error_chain(err))),
    };
    TenantReport {
        tenant: tenant.id().clone(),
        isolation: tenant.isolation(),
        server,
        outcome,
        migrations,
        detail,
        duration,
    }
}

/// An error and its causes on one line, for the ledger and per-tenant output.
pub(crate) use tenancy::error_chain;

/// What a fleet run would do to one tenant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TenantPlan {
    /// The tenant.
    pub tenant: TenantId,
    /// Its display name.
    pub name: String,
    /// Its isolation mode.
    pub isolation: Isolation,
    /// The server its storage is on ([`server_label`]).
    pub server: ServerLabel,
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
    let filter = filter(tenancy, options).await?;
    survey(tenancy, &filter, None).await?;
    let total = migrators.tenant.names().len();
    let mut plans = Vec::new();
    let mut after: Option<TenantId> = None;
    loop {
        let page = tenancy.tenants_after(after.as_ref(), PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id().clone());
        for tenant in page {
            if filter.selects(&tenant, &server_label(&filter.servers, &tenant)) {
                plans.push(plan_one(tenancy, migrators, &filter, tenant, total).await);
            }
        }
    }
    Ok(plans)
}

async fn plan_one(
    tenancy: &Tenancy,
    migrators: &Migrators,
    filter: &Filter<'_>,
    tenant: Tenant,
    total: usize,
) -> TenantPlan {
    let (pending, error) = match pending_read_only(tenancy, &tenant, migrators.tenant.as_ref()).await {
        Ok(pending) => (pending, None),
        Err(err) => (Vec::new(), Some(error_chain(&err))),
    };
    let applied = if tenant.isolation() == Isolation::Cache || error.is_some() { 0 } else { total - pending.len() };
    TenantPlan {
        location: tenancy.describe_location(&tenant),
        server: server_label(&filter.servers, &tenant),
        status: tenant.status().to_string(),
        name: tenant.name().to_owned(),
        isolation: tenant.isolation(),
        tenant: tenant.id().clone(),
        applied,
        pending,
        error,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sea_orm::sqlx;

    use super::*;

    fn servers(counts: &[(&str, usize)]) -> BTreeMap<ServerLabel, usize> {
        counts.iter().map(|(label, n)| (ServerLabel::new(*label), *n)).collect()
    }

    fn shares(counts: &[(&str, usize)], jobs: usize, per_server: usize) -> Vec<(String, usize)> {
        server_shares(&servers(counts), jobs, per_server).into_iter().map(|(label, n)| (label.0, n)).collect()
    }

    #[test]
    fn jobs_are_divided_fairly_among_servers() {
        // One server: today's behaviour, all the jobs.
        assert_eq!(shares(&[("a", 10)], 4, 0), [("a".to_owned(), 4)]);
        // The remainder goes to the servers with the most tenants, ties by label.
        assert_eq!(
            shares(&[("a", 2), ("b", 9), ("c", 2)], 4, 0),
            [("a".to_owned(), 1), ("b".to_owned(), 2), ("c".to_owned(), 1)]
        );
        assert_eq!(
            shares(&[("a", 2), ("b", 2), ("c", 2)], 5, 0),
            [("a".to_owned(), 2), ("b".to_owned(), 2), ("c".to_owned(), 1)]
        );
        // More servers than jobs: each still gets one (the global limit still holds).
        assert_eq!(shares(&[("a", 1), ("b", 1), ("c", 1)], 2, 0).iter().map(|(_, n)| n).sum::<usize>(), 3);
        // --jobs-per-server wins.
        assert_eq!(shares(&[("a", 1), ("b", 5)], 8, 3), [("a".to_owned(), 3), ("b".to_owned(), 3)]);
    }

    #[test]
    fn canaries_are_taken_one_server_at_a_time() {
        let by_server: BTreeMap<ServerLabel, Vec<TenantId>> =
            [("x:1", vec!["c", "a", "e"]), ("y:1", vec!["b"]), ("z:1", vec!["f", "d"])]
                .into_iter()
                .map(|(label, ids)| (ServerLabel::new(label), ids.iter().map(|id| id.parse().unwrap()).collect()))
                .collect();
        let pick = |n| canary_pick(&by_server, n).iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(pick(2), ["a", "b"]);
        assert_eq!(pick(4), ["a", "b", "d", "c"]);
        assert_eq!(pick(10), ["a", "b", "d", "c", "f", "e"]);
    }

    fn migration_error(source: DbErr) -> Error {
        Error::Migration { tenant: "t".to_owned(), migration: None, source }
    }

    fn io(kind: std::io::ErrorKind) -> DbErr {
        DbErr::Exec(RuntimeErr::SqlxError(Arc::new(sqlx::Error::Io(kind.into()))))
    }

    #[test]
    fn an_outage_is_told_from_a_failing_tenant_by_error_kind() {
        use std::io::ErrorKind as K;
        for kind in [K::ConnectionRefused, K::ConnectionReset, K::UnexpectedEof, K::TimedOut, K::BrokenPipe] {
            assert!(server_unreachable(&migration_error(io(kind))), "{kind:?}");
            let connect = tenancy::Error::CannotConnect { target: "h:1".to_owned(), source: io(kind) };
            assert!(server_unreachable(&Error::Tenancy(connect)), "{kind:?}");
        }
        let timed_out = DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout);
        assert!(server_unreachable(&migration_error(timed_out)));
        // A migration's own error, a refused login, a panic, a missing file: the tenant's.
        assert!(!server_unreachable(&migration_error(io(K::PermissionDenied))));
        assert!(!server_unreachable(&migration_error(DbErr::Custom("relation exists".to_owned()))));
        let refused = sqlx::Error::Protocol("password authentication failed".to_owned());
        let refused = DbErr::Conn(RuntimeErr::SqlxError(Arc::new(refused)));
        assert!(!server_unreachable(&Error::Tenancy(tenancy::Error::CannotConnect {
            target: "h:1".to_owned(),
            source: refused
        })));
        let panicked =
            Error::MigrationPanicked { tenant: "t".to_owned(), migration: "m".to_owned(), message: "x".to_owned() };
        assert!(!server_unreachable(&panicked));
    }
}
