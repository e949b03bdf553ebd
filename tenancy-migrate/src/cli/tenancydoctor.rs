//! `tenancydoctor [--json] [--repair] [--yes]`: the registry checked against what exists
//! (missing storage, orphans, cache namespaces, table isolation, migration drift), one
//! line per finding with what to do, and the safe repairs. `tenancydoctor --citus
//! [--json]`: the app's models and the master's catalog checked against Citus's rules.

use std::collections::HashSet;
use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;
use tenancy::Tenancy;
use tenancy::doctor::{Finding, Repair};

use super::Exit;
use super::prompt::Prompter;
use crate::migrator::Migrators;
use crate::{Error, Result};

const ENVIRONMENT: &str = "Environment:\n  DATABASE_URL        master database (default: sqlite://tenancy.db?mode=rwc)\n  \
     TENANCY_ADMIN_URL   credentials for the servers of database tenants\n  \
     TENANCY_SECRET_KEY, TENANCY_SECRET_KEY_FILE  to read database tenants' migrations";

/// Check the registry against reality: storage of registered tenants that is missing,
/// storage no tenant owns (orphans tenancy marked as its own; objects only named like a
/// tenant's), cache namespaces of unknown tenants, table isolation (row security, views,
/// roles), and migration drift. One line per finding with what to do.
///
/// `--repair` fixes the safe subset after confirmation: it drops the orphans tenancy
/// provably made for this master and runs the row-security step again. It never drops
/// anything a registered tenant owns, nor anything it did not mark.
///
/// `--citus` runs another check instead: whether the app's schema would run on Citus
/// (the registered models, the shared tables of table isolation and the schema tenants'
/// schemas against the rules of docs/scale-out.md). Citus need not be installed.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "tenancydoctor",
    after_help = Exit::after_help(ENVIRONMENT, &[
        (Exit::Success, Some("no problems (after --repair: none left)")),
        (Exit::Failed, Some("a check could not run (a catalog or the registry could not be read)")),
        (Exit::InvalidInput, Some("invalid input, or --repair without --yes and no terminal (nothing changed)")),
        (Exit::CannotConnect, None),
        (Exit::Findings, Some("problems found (after --repair: some are left; with --citus: a table breaks a rule of Citus)")),
        (Exit::Cancelled, None),
    ]),
)]
pub struct TenancyDoctorArgs {
    /// Print JSON for scripts: {"findings": [...], "repairs": [...]}
    #[arg(long)]
    pub json: bool,

    /// Fix the safe subset (drop orphans tenancy made, re-secure the scoped tables), after
    /// confirmation
    #[arg(long)]
    pub repair: bool,

    /// Instead of the registry checks: check the app's models and the master's catalog
    /// against the rules Citus imposes (primary, unique and foreign keys with the tenant
    /// column, reference tables, bigint keys, schema-based sharding); reports only
    #[arg(long, conflicts_with = "repair")]
    pub citus: bool,

    /// Repair without asking (scripts); without it and without a terminal, --repair
    /// refuses and changes nothing
    #[arg(long, requires = "repair")]
    pub yes: bool,

    /// The Redis cache to look for namespaces of unknown tenants in.
    #[command(flatten)]
    pub cache: super::CacheArgs,

    /// The master database.
    #[command(flatten)]
    pub master: super::MasterArgs,
}

/// Runs `tenancydoctor` with the process's arguments.
pub async fn tenancydoctor(migrators: Migrators) -> ExitCode {
    match super::parse_args() {
        Ok(args) => tenancydoctor_with_args(args, migrators).await,
        Err(code) => code,
    }
}

/// Runs `tenancydoctor` with parsed arguments; returns the exit code.
pub async fn tenancydoctor_with_args(args: TenancyDoctorArgs, migrators: Migrators) -> ExitCode {
    match run(args, migrators).await {
        Ok(exit) => exit.into(),
        Err(err) => super::report_error(&err),
    }
}

async fn run(args: TenancyDoctorArgs, migrators: Migrators) -> Result<Exit> {
    let builder = args.cache.apply(args.master.builder());
    let tenancy = builder.connect().await?;
    if args.citus {
        let findings = tenancy.diagnose_citus().await?;
        if args.json {
            print(&findings, None, true, false);
        } else {
            print_citus(&findings);
        }
        return Ok(exit_for(&findings));
    }
    let findings = examine(&tenancy, &migrators).await?;
    let repairable: Vec<Finding> = findings.iter().filter(|finding| finding.repairable()).cloned().collect();
    if !args.repair || repairable.is_empty() {
        print(&findings, args.repair.then_some(&[][..]), args.json, false);
        return Ok(exit_for(&findings));
    }

    if !args.yes {
        let prompter = Prompter::new(false);
        if !prompter.is_interactive() {
            print(&findings, None, args.json, false);
            return Err(Error::MissingInput {
                what: "confirmation to repair".to_owned(),
                how: "pass --yes (there is no terminal to ask on); nothing was changed".to_owned(),
            });
        }
        // The findings first, so the question is about what is on the screen.
        print(&findings, None, false, true);
        let question = format!(
            "Repair the {} finding(s) marked [repairable] above? Orphans are dropped with their data",
            repairable.len()
        );
        let confirmed =
            super::blocking(move || prompter.confirm(&question, "--yes", "confirmation to repair")).await??;
        if !confirmed {
            eprintln!("Nothing was changed.");
            return Ok(Exit::Findings);
        }
    }

    let repairs = tenancy.repair(&repairable).await?;
    let left = examine(&tenancy, &migrators).await?;
    print(&left, Some(&repairs), args.json, false);
    Ok(exit_for(&left))
}

/// Every finding: the core's checks, then migration drift (left out for tenants whose
/// storage is missing: that finding says more).
async fn examine(tenancy: &Tenancy, migrators: &Migrators) -> Result<Vec<Finding>> {
    let mut findings = tenancy.diagnose().await?;
    let missing: HashSet<String> = findings
        .iter()
        .filter(|finding| finding.kind().starts_with("missing_"))
        .filter_map(|finding| finding.tenant().map(str::to_owned))
        .collect();
    let drift = crate::drift::migration_drift(tenancy, migrators).await?;
    findings.extend(drift.into_iter().filter(|finding| !finding.tenant().is_some_and(|t| missing.contains(t))));
    Ok(findings)
}

fn exit_for(findings: &[Finding]) -> Exit {
    if findings.is_empty() { Exit::Success } else { Exit::Findings }
}

/// `--citus`'s findings as text lines, with a closing line of its own (none of them is
/// one `--repair` fixes: they are the app's migrations to change).
fn print_citus(findings: &[Finding]) {
    let mut out = std::io::stdout().lock();
    for finding in findings {
        let _ = writeln!(out, "✗ {}: {}; fix: {}", finding.kind(), finding.message(), finding.fix());
    }
    let _ = match findings.len() {
        0 => writeln!(out, "✓ No table breaks a rule of Citus"),
        n => writeln!(out, "{n} problem(s) found for Citus; see docs/scale-out.md"),
    };
}

/// The findings (and repairs) as text lines or one JSON object on stdout. `quiet_summary`
/// leaves the closing line out (the findings shown before a question).
fn print(findings: &[Finding], repairs: Option<&[Repair]>, json: bool, quiet_summary: bool) {
    let mut out = std::io::stdout().lock();
    if json {
        let findings: Vec<serde_json::Value> = findings
            .iter()
            .map(|finding| {
                serde_json::json!({
                    "kind": finding.kind(),
                    "tenant": finding.tenant(),
                    "subject": finding.subject(),
                    "message": finding.message(),
                    "fix": finding.fix(),
                    "repairable": finding.repairable(),
                })
            })
            .collect();
        let repairs: Vec<serde_json::Value> = repairs
            .unwrap_or_default()
            .iter()
            .map(|repair| {
                serde_json::json!({
                    "kind": repair.finding.kind(),
                    "subject": repair.finding.subject(),
                    "repaired": repair.outcome.is_ok(),
                    "error": repair.outcome.as_ref().err().map(ToString::to_string),
                })
            })
            .collect();
        let report = serde_json::json!({ "findings": findings, "repairs": repairs });
        let _ = writeln!(out, "{}", serde_json::to_string_pretty(&report).unwrap_or_default());
        return;
    }
    for repair in repairs.unwrap_or_default() {
        let _ = match &repair.outcome {
            Ok(()) => writeln!(out, "✓ Repaired {}", repair.finding.subject()),
            Err(err) => writeln!(out, "✗ Not repaired: {err}"),
        };
    }
    for finding in findings {
        let tag = if finding.repairable() { " [repairable]" } else { "" };
        let _ = writeln!(out, "✗ {}: {}; fix: {}{tag}", finding.kind(), finding.message(), finding.fix());
    }
    if quiet_summary && !findings.is_empty() {
        return;
    }
    let repairable = findings.iter().filter(|finding| finding.repairable()).count();
    let _ = match (findings.len(), repairable) {
        (0, _) => writeln!(out, "✓ No problems found"),
        (n, 0) => writeln!(out, "{n} problem(s) found; none is one --repair fixes"),
        (n, r) => writeln!(out, "{n} problem(s) found; {r} can be fixed with tenancydoctor --repair"),
    };
}
