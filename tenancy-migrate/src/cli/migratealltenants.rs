//! `migratealltenants`: the fleet migrator.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use indicatif::ProgressBar;
use tenancy::ledger::TenantOutcome;
use tenancy::{Isolation, TenantId};

use super::Exit;
use crate::Result;
use crate::fleet::{self, FleetEvent, FleetOptions, FleetReport, OutcomeCounts, ServerLabel, TenantReport};
use crate::migrator::Migrators;

/// Migrate every tenant (or a selection): bounded concurrency, one transaction and
/// advisory lock per tenant, a run ledger in the master database, and a summary.
///
/// Tenants are grouped by the server they are on, and servers migrate in parallel, each
/// within its share of --jobs (or --jobs-per-server). By default no new tenant starts
/// after the first failure; --continue-on-error runs them all. A server that cannot be
/// reached stops only its own tenants. --canary / --canary-tenants migrate a few tenants
/// first and stop if one fails. --resume re-runs only what the last run did not finish.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "migratealltenants",
    after_help = Exit::after_help(
        "Environment:\n  DATABASE_URL  master database (default: sqlite://tenancy.db?mode=rwc)",
        &[
            (Exit::Success, Some("every tenant migrated or up to date (skipped tenants are reported, not failures)")),
            (Exit::Failed, Some("some tenants failed or were not attempted (see the summary; rerun with --resume)")),
            (Exit::InvalidInput, Some("the run could not start (bad flag, nothing to resume, unknown server or canary tenant)")),
            (Exit::CannotConnect, Some("cannot connect")),
            (Exit::NotFound, Some("a tenant given with --tenants does not exist")),
        ],
    )
)]
pub struct MigrateAllArgs {
    /// Tenants migrated at once, at least 1 [default: half the master connection budget]
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: Option<u32>,

    /// Tenants migrated at once on one server, at least 1 [default: --jobs divided among the servers of the run]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs_per_server: Option<u32>,

    /// Migrate the first N tenants (one per server in turn, by id) first; stop if one fails
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "canary_tenants")]
    pub canary: Option<u32>,

    /// Migrate these tenants (comma-separated ids) first; stop if one fails
    #[arg(long, value_delimiter = ',', value_name = "IDS", value_parser = super::value::listed_tenant_id)]
    pub canary_tenants: Option<Vec<TenantId>>,

    /// Only tenants on this server (host:port, as the summary lists them)
    #[arg(long, value_name = "NAME")]
    pub server: Option<String>,

    /// Keep going after a tenant fails
    #[arg(long)]
    pub continue_on_error: bool,

    /// Only re-run what the last run did not finish (failed or not attempted)
    #[arg(long, alias = "only-failed")]
    pub resume: bool,

    /// Show which migrations each tenant would get, touching nothing
    #[arg(long, alias = "dry-run")]
    pub plan: bool,

    /// Only these tenants (comma-separated ids)
    #[arg(long, value_delimiter = ',', value_name = "IDS", value_parser = super::value::listed_tenant_id)]
    pub tenants: Option<Vec<TenantId>>,

    /// Only tenants of this isolation type: database, schema, table or cache
    #[arg(long, value_name = "TYPE")]
    pub isolation: Option<Isolation>,

    /// Leave suspended tenants alone (by default they are migrated like ready ones)
    #[arg(long)]
    pub skip_suspended: bool,

    /// Print the result as JSON on stdout (per-tenant lines are left out)
    #[arg(long)]
    pub json: bool,

    /// The master database.
    #[command(flatten)]
    pub master: super::MasterArgs,
}

/// Runs `migratealltenants` with the process's arguments.
pub async fn migratealltenants(migrators: Migrators) -> ExitCode {
    match super::parse_args() {
        Ok(args) => migratealltenants_with_args(args, migrators).await,
        Err(code) => code,
    }
}

/// Runs `migratealltenants` with parsed arguments; returns the exit code.
pub async fn migratealltenants_with_args(args: MigrateAllArgs, migrators: Migrators) -> ExitCode {
    match run(args, migrators).await {
        Ok(exit) => exit.into(),
        Err(err) => super::report_error(&err),
    }
}

fn options(args: &MigrateAllArgs) -> FleetOptions {
    FleetOptions {
        // `0` is the default in `FleetOptions`; clap refuses a 0 given as --jobs.
        jobs: count(args.jobs),
        jobs_per_server: count(args.jobs_per_server),
        continue_on_error: args.continue_on_error,
        resume: args.resume,
        tenants: args.tenants.clone(),
        isolation: args.isolation,
        server: args.server.as_ref().map(|server| ServerLabel::new(server.trim())),
        skip_suspended: args.skip_suspended,
        canary: count(args.canary),
        canary_tenants: args.canary_tenants.clone(),
    }
}

/// A count flag as `FleetOptions` takes it: `0` for "not given" (clap refuses a given 0).
fn count(flag: Option<u32>) -> usize {
    flag.map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX))
}

async fn run(args: MigrateAllArgs, migrators: Migrators) -> Result<Exit> {
    let options = options(&args);
    let tenancy = args.master.connect().await?;
    if args.plan {
        let plans = fleet::plan(&tenancy, &migrators, &options).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&plans).unwrap_or_default());
        } else {
            for plan in &plans {
                match (&plan.error, plan.pending.is_empty()) {
                    (Some(error), _) => println!("{} ({}): cannot read: {error}", plan.tenant, plan.isolation),
                    (None, true) => println!("{} ({}): up to date", plan.tenant, plan.isolation),
                    (None, false) => println!(
                        "{} ({}): {} pending: {}",
                        plan.tenant,
                        plan.isolation,
                        plan.pending.len(),
                        plan.pending.join(", ")
                    ),
                }
            }
            let behind = plans.iter().filter(|p| !p.pending.is_empty()).count();
            println!("Plan: {behind} of {} tenant(s) have pending migrations; nothing was changed", plans.len());
        }
        return Ok(Exit::Success);
    }

    let progress = Progress::new(args.json);
    let report = fleet::migrate_all(&tenancy, &migrators, &options, &|event| progress.event(event)).await;
    progress.finish();
    let report = match report {
        Ok(report) => report,
        Err(err) => {
            // The tenants listed so far, and the error: the JSON stays whole.
            progress.close_json(&serde_json::json!({ "succeeded": false, "error": err.to_string() }));
            return Err(err);
        }
    };
    if args.json {
        progress.close_json(&report_json(&report));
    } else {
        let total = OutcomeCounts {
            migrated: report.count(TenantOutcome::Migrated),
            up_to_date: report.count(TenantOutcome::UpToDate),
            failed: report.count(TenantOutcome::Failed),
            skipped: report.count(TenantOutcome::Skipped),
            not_attempted: report.count(TenantOutcome::NotAttempted),
        };
        println!("Summary: {} (run {})", counts(&total), report.run_id);
        for (server, on_server) in report.by_server() {
            let down = if report.unreachable.contains(&server) { " (unreachable)" } else { "" };
            println!("  {server}: {}{down}", counts(&on_server));
        }
        if report.canary_failed {
            println!(
                "The canary stage failed; no other tenant was started. Fix the failures, then continue with: \
                 migratealltenants --resume"
            );
        } else if !report.unreachable.is_empty() {
            let servers: Vec<&str> = report.unreachable.iter().map(ServerLabel::as_str).collect();
            println!(
                "Server(s) unreachable: {}; once back, finish with: migratealltenants --resume",
                servers.join(", ")
            );
        } else if !report.succeeded() {
            println!("Fix the failures, then finish with: migratealltenants --resume");
        }
    }
    Ok(if report.succeeded() { Exit::Success } else { Exit::Failed })
}

fn counts(counts: &OutcomeCounts) -> String {
    format!(
        "{} migrated, {} up to date, {} failed, {} skipped, {} not attempted",
        counts.migrated, counts.up_to_date, counts.failed, counts.skipped, counts.not_attempted
    )
}

/// The fields of the JSON report that follow its tenants.
fn report_json(report: &FleetReport) -> serde_json::Value {
    serde_json::json!({
        "shared": report.shared,
        "summary": {
            "migrated": report.count(TenantOutcome::Migrated),
            "up_to_date": report.count(TenantOutcome::UpToDate),
            "failed": report.count(TenantOutcome::Failed),
            "skipped": report.count(TenantOutcome::Skipped),
            "not_attempted": report.count(TenantOutcome::NotAttempted),
        },
        "servers": report
            .by_server()
            .into_iter()
            .map(|(server, counts)| {
                let unreachable = report.unreachable.contains(&server);
                (server.to_string(), serde_json::json!({ "summary": counts, "unreachable": unreachable }))
            })
            .collect::<serde_json::Map<_, _>>(),
        "canary": { "tenants": report.canary, "failed": report.canary_failed },
        "succeeded": report.succeeded(),
    })
}

/// One tenant in the JSON report.
fn tenant_json(t: &TenantReport) -> serde_json::Value {
    serde_json::json!({
        "tenant": t.tenant,
        "isolation": t.isolation,
        "server": t.server,
        "outcome": t.outcome.as_str(),
        "migrations": t.migrations,
        "detail": t.detail,
        "duration_ms": u64::try_from(t.duration.as_millis()).unwrap_or(u64::MAX),
    })
}

/// A progress bar on a terminal; one line per tenant otherwise (unless `--json`). With
/// `--json`, the report is written as the run goes, each tenant when it is done (in the
/// order they finish), so the command holds no list of ten thousand tenants: `run_id`
/// and `tenants` first, the summary when the run ends ([`Progress::close_json`]).
struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
    /// With `--json`: whether the object is open (`Some`), and whether a tenant was
    /// written into it (a comma before the next).
    json: Option<std::sync::Mutex<JsonState>>,
}

#[derive(Default)]
struct JsonState {
    open: bool,
    tenants: usize,
}

impl Progress {
    fn new(json: bool) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = terminal.then(|| super::tenant_bar(0));
        Self { lines: !terminal && !json, bar, json: json.then(Default::default) }
    }

    fn json_state(&self) -> Option<std::sync::MutexGuard<'_, JsonState>> {
        self.json.as_ref().map(|state| state.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Ends the JSON report, if the run started one, with `rest`'s fields (an object). A
    /// run that could not start writes none: its error goes to stderr.
    fn close_json(&self, rest: &serde_json::Value) {
        let Some(mut state) = self.json_state() else { return };
        if !state.open {
            return;
        }
        let fields = serde_json::to_string_pretty(rest).unwrap_or_else(|_| "{}".to_owned());
        let fields = fields.trim().trim_start_matches('{').trim_end_matches('}').trim_end();
        println!("\n  ],{fields}\n}}");
        state.open = false;
    }

    fn event(&self, event: FleetEvent<'_>) {
        match event {
            FleetEvent::Started { total, run_id } => {
                if let Some(bar) = &self.bar {
                    bar.set_length(total as u64);
                }
                if let Some(mut state) = self.json_state() {
                    print!("{{\n  \"run_id\": {run_id},\n  \"tenants\": [");
                    state.open = true;
                }
            }
            FleetEvent::SharedApplied(names) => {
                self.line(format!("✓ master: shared migrations applied ({})", names.join(", ")));
            }
            FleetEvent::ServerUnreachable(server) => {
                self.line(format!("✗ server {server} unreachable: its remaining tenants are not attempted"));
            }
            FleetEvent::CanaryFailed(tenants) => {
                let ids: Vec<String> = tenants.iter().map(TenantId::to_string).collect();
                self.line(format!("✗ canary failed ({}): no other tenant starts", ids.join(", ")));
            }
            FleetEvent::TenantDone(report) => {
                if let Some(mut state) = self.json_state() {
                    let comma = if state.tenants == 0 { "" } else { "," };
                    print!("{comma}\n    {}", tenant_json(report));
                    state.tenants += 1;
                }
                let line = describe(report);
                if let Some(bar) = &self.bar {
                    if report.outcome == TenantOutcome::Failed {
                        bar.println(&line);
                    }
                    bar.set_message(format!("{} on {}", report.tenant, report.server));
                    bar.inc(1);
                } else if self.lines {
                    println!("{line}");
                }
            }
        }
    }

    /// A line above the bar, or on stdout without one (not with `--json`).
    fn line(&self, line: String) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None if self.lines => println!("{line}"),
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// One tenant's line: its outcome, then the server it is on.
fn describe(report: &TenantReport) -> String {
    let millis = report.duration.as_millis();
    let (tenant, server) = (&report.tenant, &report.server);
    match report.outcome {
        TenantOutcome::Migrated => {
            format!("✓ {tenant}: migrated ({}) in {millis} ms [{server}]", report.migrations.join(", "))
        }
        TenantOutcome::UpToDate => format!("= {tenant}: up to date [{server}]"),
        TenantOutcome::Failed => {
            format!("✗ {tenant}: failed: {} [{server}]", report.detail.as_deref().unwrap_or("unknown error"))
        }
        TenantOutcome::Skipped => format!("- {tenant}: skipped: {} [{server}]", report.detail.as_deref().unwrap_or("")),
        TenantOutcome::NotAttempted => match &report.detail {
            Some(detail) => format!("… {tenant}: not attempted: {detail} [{server}]"),
            None => format!("… {tenant}: not attempted [{server}]"),
        },
    }
}
