//! Fleet runs: migrate every tenant (or a selection) with bounded concurrency, servers in
//! parallel with a share of the budget each, a ledger in the master database,
//! stop-or-continue on failure, a server outage that stops only that server, canary
//! stages, resume, and plans.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sea_orm::{DbErr, RuntimeErr};
use tenancy::ledger::{OutcomeRecord, TenantOutcome};
use tenancy::servers::{MASTER_SERVER, ServerMap, TenantServer};
use tenancy::{Isolation, Tenancy, Tenant, TenantId, TenantStatus};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::migrator::{DynMigrator, Migrators, migrate_master, migrate_one, pending_read_only};
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

/// The result of [`migrate_all`].
#[derive(Debug, Clone, Default)]
pub struct FleetReport {
    /// The ledger run id.
    pub run_id: i64,
    /// The shared (master) migrations applied first.
    pub shared: Vec<String>,
    /// One report per selected tenant, ordered by tenant id.
    pub tenants: Vec<TenantReport>,
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

impl FleetReport {
    /// How many tenants ended with `outcome`.
    pub fn count(&self, outcome: TenantOutcome) -> usize {
        self.tenants.iter().filter(|t| t.outcome == outcome).count()
    }

    /// Whether no tenant failed or was left unattempted.
    pub fn succeeded(&self) -> bool {
        self.tenants.iter().all(|t| !t.outcome.is_unfinished())
    }

    /// The outcomes per server, servers in label order.
    pub fn by_server(&self) -> BTreeMap<ServerLabel, OutcomeCounts> {
        let mut servers: BTreeMap<ServerLabel, OutcomeCounts> = BTreeMap::new();
        for tenant in &self.tenants {
            servers.entry(tenant.server.clone()).or_default().add(tenant.outcome);
        }
        servers
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

/// The tenants of a run, validated before anything is written.
struct Selection {
    tenants: Vec<Tenant>,
    canary: HashSet<TenantId>,
    servers: ServerMap,
}

/// Selects the tenants of a run: the registry, filtered by `options`. Every id and
/// server named in `options` is checked here, before the run writes anything.
async fn select(tenancy: &Tenancy, options: &FleetOptions) -> Result<Selection> {
    let mut tenants = tenancy.tenants().await?;
    tenants.sort_by(|a, b| a.id().cmp(b.id()));
    // The servers of every registered tenant (and the master), before any filter.
    let servers = tenancy.server_map().await?;
    let mut known_servers: BTreeSet<ServerLabel> = tenants.iter().map(|t| server_label(&servers, t)).collect();
    known_servers.extend(servers.servers().iter().map(|server| ServerLabel(server.name.to_string())));
    known_servers.insert(ServerLabel(MASTER_SERVER.to_owned()));
    if let Some(wanted) = &options.tenants {
        let known: HashSet<&str> = tenants.iter().map(|t| t.id().as_str()).collect();
        if let Some(missing) = wanted.iter().find(|id| !known.contains(id.as_str())) {
            return Err(tenancy::Error::TenantNotFound { id: missing.to_string() }.into());
        }
        let wanted: HashSet<&str> = wanted.iter().map(TenantId::as_str).collect();
        tenants.retain(|t| wanted.contains(t.id().as_str()));
    }
    if let Some(server) = &options.server {
        if !known_servers.contains(server) {
            return Err(Error::UnknownServer {
                server: server.to_string(),
                known: known_servers.into_iter().map(|label| label.0).collect(),
            });
        }
        tenants.retain(|t| &server_label(&servers, t) == server);
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
    let canary = match (&options.canary_tenants, options.canary) {
        (Some(named), _) => {
            let selected: HashSet<&TenantId> = tenants.iter().map(Tenant::id).collect();
            let unknown: Vec<String> =
                named.iter().filter(|id| !selected.contains(id)).map(TenantId::to_string).collect();
            if !unknown.is_empty() {
                return Err(Error::UnknownCanaryTenants { unknown });
            }
            named.iter().cloned().collect()
        }
        (None, 0) => HashSet::new(),
        (None, n) => {
            // Table tenants share one migration of the shared tables, never a canary of
            // their own; tenants that will be skipped cannot show anything either.
            let mut by_server: BTreeMap<ServerLabel, Vec<TenantId>> = BTreeMap::new();
            for tenant in
                tenants.iter().filter(|t| t.isolation() != Isolation::Table && skip_reason(t, options).is_none())
            {
                by_server.entry(server_label(&servers, tenant)).or_default().push(tenant.id().clone());
            }
            canary_pick(&by_server, n).into_iter().collect()
        }
    };
    Ok(Selection { tenants, canary, servers })
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
    let Selection { tenants, canary, servers } = select(tenancy, options).await?;
    let jobs = if options.jobs == 0 { default_jobs(tenancy) } else { options.jobs };
    let ids: Vec<TenantId> = tenants.iter().map(|t| t.id().clone()).collect();
    let labelled: Vec<(Tenant, ServerLabel)> = tenants
        .into_iter()
        .map(|tenant| {
            let label = server_label(&servers, &tenant);
            (tenant, label)
        })
        .collect();
    let mut per_server: BTreeMap<ServerLabel, usize> = BTreeMap::new();
    for (tenant, label) in &labelled {
        if skip_reason(tenant, options).is_none() {
            *per_server.entry(label.clone()).or_default() += 1;
        }
    }
    let shares = server_shares(&per_server, jobs, options.jobs_per_server);
    let mut canary_ids: Vec<TenantId> = canary.iter().cloned().collect();
    canary_ids.sort();
    let run_id = tenancy
        .ledger()
        .start_run(
            &ids,
            serde_json::json!({
                "jobs": jobs,
                "jobs_per_server": shares,
                "continue_on_error": options.continue_on_error,
                "resume": options.resume,
                "tenants": options.tenants.as_ref().map(|t| t.iter().map(TenantId::to_string).collect::<Vec<_>>()),
                "isolation": options.isolation.map(Isolation::as_str),
                "server": options.server,
                "canary": canary_ids,
            }),
        )
        .await?;
    on_event(FleetEvent::Started { run_id, total: labelled.len() });

    let mut report = FleetReport { run_id, canary: canary_ids, ..FleetReport::default() };
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

    let mut ledger = LedgerBuffer { run_id, pending: Vec::new(), last_flush: Instant::now(), done: Vec::new() };
    // Not-ready and cache tenants are reported, never migrated.
    let (mut canary_stage, mut rest) = (Stage::default(), Stage::default());
    for (tenant, server) in labelled {
        if let Some(reason) = skip_reason(&tenant, options) {
            let tenant_report = TenantReport {
                tenant: tenant.id().clone(),
                isolation: tenant.isolation(),
                server,
                outcome: TenantOutcome::Skipped,
                migrations: Vec::new(),
                detail: Some(reason),
                duration: Duration::ZERO,
            };
            ledger.push(tenancy, tenant_report, on_event).await?;
            continue;
        }
        let stage = if canary.contains(tenant.id()) { &mut canary_stage } else { &mut rest };
        match tenant.isolation() {
            Isolation::Table => stage.tables.push((tenant, server)),
            _ => stage.tenants.push((tenant, server)),
        }
    }
    // All table tenants share the master's tables: one migration for all of them, in the
    // canary stage when one of them is a canary.
    if !canary_stage.tables.is_empty() {
        canary_stage.tables.append(&mut rest.tables);
    }
    let in_canary: HashSet<TenantId> =
        canary_stage.tenants.iter().chain(&canary_stage.tables).map(|(t, _)| t.id().clone()).collect();

    let run = Run {
        tenancy: tenancy.clone(),
        migrator: Arc::clone(&migrators.tenant),
        jobs: Arc::new(Semaphore::new(jobs)),
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
    };
    let mut unreachable = Vec::new();
    // Without a canary stage, it is empty and everything is in the rest.
    run.stage(canary_stage, &mut ledger, &mut unreachable, on_event).await?;
    let failed: Vec<TenantId> = ledger
        .done
        .iter()
        .filter(|t| in_canary.contains(&t.tenant) && t.outcome.is_unfinished())
        .map(|t| t.tenant.clone())
        .collect();
    if failed.is_empty() {
        run.stage(rest, &mut ledger, &mut unreachable, on_event).await?;
    } else {
        on_event(FleetEvent::CanaryFailed(&failed));
        report.canary_failed = true;
        let names: Vec<String> = failed.iter().map(TenantId::to_string).collect();
        let why = format!("not started: the canary stage failed ({})", names.join(", "));
        for (tenant, server) in rest.tables.into_iter().chain(rest.tenants) {
            ledger.push(tenancy, not_attempted(&tenant, server, why.clone()), on_event).await?;
        }
    }
    ledger.flush(tenancy).await?;
    let mut done = ledger.done;
    done.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    report.tenants = done;
    report.unreachable = unreachable;
    tenancy.ledger().finish_run(run_id, report.succeeded()).await?;
    Ok(report)
}

/// The tenants one stage of a run migrates: table tenants (one shared migration) and
/// the others (each on its own).
#[derive(Default)]
struct Stage {
    tables: Vec<(Tenant, ServerLabel)>,
    tenants: Vec<(Tenant, ServerLabel)>,
}

/// One server's limit and state in a run.
struct ServerSlot {
    /// Its share of the run's jobs.
    permits: Arc<Semaphore>,
    /// Set when one of its tenants found it unreachable: none of its tenants starts after.
    down: Arc<AtomicBool>,
}

/// What the stages of a run share.
struct Run {
    tenancy: Tenancy,
    migrator: Arc<dyn DynMigrator>,
    /// The run's global limit.
    jobs: Arc<Semaphore>,
    servers: BTreeMap<ServerLabel, ServerSlot>,
    /// Set by a failing tenant (without `continue_on_error`): no new tenant starts.
    stop: Arc<AtomicBool>,
    continue_on_error: bool,
}

impl Run {
    /// Migrates one stage's tenants: the table tenants' shared migration first, then the
    /// others, servers in parallel, each server's tenants in id order.
    async fn stage(
        &self,
        stage: Stage,
        ledger: &mut LedgerBuffer,
        unreachable: &mut Vec<ServerLabel>,
        on_event: &(dyn Fn(FleetEvent<'_>) + Send + Sync),
    ) -> Result<()> {
        let tenancy = &self.tenancy;
        if let Some((first, _)) = stage.tables.first() {
            let started = Instant::now();
            let result = migrate_one(tenancy, first, self.migrator.as_ref(), false).await;
            if result.is_err() && !self.continue_on_error {
                self.stop.store(true, Ordering::SeqCst);
            }
            for (tenant, server) in &stage.tables {
                ledger.push(tenancy, to_report(tenant, server.clone(), &result, started.elapsed()), on_event).await?;
            }
        }

        let mut queues: BTreeMap<ServerLabel, VecDeque<Tenant>> = BTreeMap::new();
        for (tenant, server) in stage.tenants {
            queues.entry(server).or_default().push_back(tenant);
        }
        let mut running: JoinSet<TenantReport> = JoinSet::new();
        loop {
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
                    let Some(tenant) = queue.pop_front() else { continue };
                    let (tenancy, migrator, stop, down, server, continue_on_error) = (
                        tenancy.clone(),
                        Arc::clone(&self.migrator),
                        Arc::clone(&self.stop),
                        Arc::clone(&slot.down),
                        server.clone(),
                        self.continue_on_error,
                    );
                    running.spawn(async move {
                        let started = Instant::now();
                        let result = migrate_one(&tenancy, &tenant, migrator.as_ref(), false).await;
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
                    });
                    started = true;
                }
            }
            match running.join_next().await {
                Some(joined) => {
                    // A migration's panic is caught and reported as the tenant's failure; a
                    // panic anywhere else in the task is a bug of this crate: let it surface.
                    let tenant_report = joined.unwrap_or_else(|err| std::panic::resume_unwind(err.into_panic()));
                    let server = tenant_report.server.clone();
                    ledger.push(tenancy, tenant_report, on_event).await?;
                    // The server is gone: its queued tenants are not attempted, now.
                    if self.servers.get(&server).is_some_and(|slot| slot.down.load(Ordering::SeqCst))
                        && !unreachable.contains(&server)
                    {
                        on_event(FleetEvent::ServerUnreachable(&server));
                        unreachable.push(server.clone());
                        let why = format!("server {server} unreachable");
                        for tenant in queues.get_mut(&server).map(std::mem::take).unwrap_or_default() {
                            ledger.push(tenancy, not_attempted(&tenant, server.clone(), why.clone()), on_event).await?;
                        }
                    }
                }
                None => break,
            }
        }
        // Whatever was never started stays `not_attempted` in the ledger.
        for (server, queue) in queues {
            for tenant in queue {
                let why = "not started: an earlier tenant failed".to_owned();
                ledger.push(tenancy, not_attempted(&tenant, server.clone(), why), on_event).await?;
            }
        }
        Ok(())
    }
}

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
            server: Some(report.server.to_string()),
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
    let Selection { tenants, servers, .. } = select(tenancy, options).await?;
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
            server: server_label(&servers, &tenant),
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
