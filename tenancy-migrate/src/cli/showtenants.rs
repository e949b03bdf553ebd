//! `showtenants`: the tenants, where their data lives, and how far they are migrated.

use std::process::ExitCode;

use std::collections::HashMap;

use clap::Parser;
use serde::Serialize;
use tenancy::{TenantDomain, TenantId};

use super::Exit;
use crate::Result;
use crate::fleet::{self, FleetOptions, TenantPlan};
use crate::migrator::Migrators;

/// List tenants: id, name, isolation, status, the server its storage is on (a registered
/// server's name, `host:port` of an unregistered one; SQLite files and cache tenants
/// count as the master's), where the data lives, applied and pending migration counts,
/// custom domains (the primary one first, marked `*`). Passwords never appear.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "showtenants",
    after_help = Exit::after_help(
        "Environment:\n  DATABASE_URL  master database (default: sqlite://tenancy.db?mode=rwc)",
        &[(Exit::Success, Some("listed")), (Exit::InvalidInput, None), (Exit::CannotConnect, Some("cannot connect"))],
    )
)]
pub struct ShowTenantsArgs {
    /// Print JSON (an array of tenants) for scripts
    #[arg(long)]
    pub json: bool,

    /// Only tenants with pending migrations
    #[arg(long)]
    pub pending: bool,

    /// The master database.
    #[command(flatten)]
    pub master: super::MasterArgs,
}

/// Runs `showtenants` with the process's arguments.
pub async fn showtenants(migrators: Migrators) -> ExitCode {
    match super::parse_args() {
        Ok(args) => showtenants_with_args(args, migrators).await,
        Err(code) => code,
    }
}

/// Runs `showtenants` with parsed arguments; returns the exit code.
pub async fn showtenants_with_args(args: ShowTenantsArgs, migrators: Migrators) -> ExitCode {
    match run(args, migrators).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => super::report_error(&err),
    }
}

async fn run(args: ShowTenantsArgs, migrators: Migrators) -> Result<()> {
    let tenancy = args.master.connect().await?;
    let mut plans = fleet::plan(&tenancy, &migrators, &FleetOptions::default()).await?;
    if args.pending {
        plans.retain(|plan| !plan.pending.is_empty());
    }
    let mut domains: HashMap<TenantId, Vec<TenantDomain>> = HashMap::new();
    for domain in tenancy.domains(None).await? {
        domains.entry(domain.tenant.clone()).or_default().push(domain);
    }
    let shown: Vec<Shown<'_>> = plans
        .iter()
        .map(|plan| Shown {
            plan,
            domains: domains
                .get(&plan.tenant)
                .map(|domains| {
                    domains.iter().map(|d| ShownDomain { domain: d.domain.as_str(), primary: d.primary }).collect()
                })
                .unwrap_or_default(),
        })
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&shown).unwrap_or_default());
    } else {
        print!("{}", table(&shown));
    }
    Ok(())
}

/// A tenant as listed: its plan and its custom domains (the primary one first).
#[derive(Serialize)]
struct Shown<'a> {
    #[serde(flatten)]
    plan: &'a TenantPlan,
    domains: Vec<ShownDomain<'a>>,
}

#[derive(Serialize)]
struct ShownDomain<'a> {
    domain: &'a str,
    primary: bool,
}

/// An aligned text table.
fn table(shown: &[Shown<'_>]) -> String {
    let header = ["ID", "NAME", "ISOLATION", "STATUS", "SERVER", "LOCATION", "APPLIED", "PENDING", "DOMAINS"];
    let rows: Vec<[String; 9]> = shown
        .iter()
        .map(|Shown { plan: p, domains }| {
            [
                p.tenant.to_string(),
                p.name.clone(),
                p.isolation.to_string(),
                p.status.clone(),
                p.server.to_string(),
                p.location.clone(),
                if p.error.is_some() { "?".to_owned() } else { p.applied.to_string() },
                match &p.error {
                    Some(error) => format!("? ({error})"),
                    None => p.pending.len().to_string(),
                },
                domains
                    .iter()
                    .map(|d| if d.primary { format!("{}*", d.domain) } else { d.domain.to_owned() })
                    .collect::<Vec<_>>()
                    .join(", "),
            ]
        })
        .collect();
    let mut out = super::table::aligned(header, &rows);
    if shown.is_empty() {
        out.push_str("(no tenants)\n");
    }
    out
}
