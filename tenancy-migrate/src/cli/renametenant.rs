//! `renametenant <OLD> <NEW>`: changes a tenant's id everywhere it lives (registry,
//! schema, login role, the tenant column of its rows, cache keys, ledger history), after
//! a confirmation. Journaled: killed at any moment, running the same command again
//! finishes the rename.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tenancy::TenantId;
use tenancy::renaming::{RenameOptions, RenameStep, Renamed};

use super::Exit;
use super::prompt::Prompter;
use crate::{Error, Result};

const ENVIRONMENT: &str = "Environment:\n  DATABASE_URL        master database (default: sqlite://tenancy.db?mode=rwc)\n  \
                           TENANCY_ADMIN_URL   admin credentials for database tenants' servers (their marks are \
                           rewritten)\n  \
                           TENANCY_CACHE_URL   the Redis cache whose keys of the tenant move to the new id";

/// Rename a tenant: its registry row, schema, login role, the tenant column of its rows,
/// its cache keys and its migration history take the new id; the old id is unknown
/// afterwards. Asks to type the new id first, unless --yes.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "renametenant",
    after_help = Exit::after_help(ENVIRONMENT, &[
        (Exit::Success, Some("renamed")),
        (Exit::Failed, Some("a step failed (run it again to finish a started rename)")),
        (Exit::InvalidInput, Some("invalid id, the same id twice, or no terminal to confirm on and no --yes")),
        (Exit::AlreadyExists, Some("the new id (or its schema or login role) is taken")),
        (Exit::CannotConnect, None),
        (Exit::SecretKey, None),
        (Exit::NotFound, Some("no tenant has the old id")),
        (Exit::Busy, None),
        (Exit::Cancelled, Some("not confirmed: nothing was renamed")),
    ]),
)]
pub struct RenameTenantArgs {
    /// The tenant's id now
    pub old: TenantId,

    /// Its new id
    pub new: TenantId,

    /// Rename without asking (for scripts)
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,

    /// Seconds to wait for the sessions of the tenant's login role to end before giving up
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub wait: u64,

    /// The Redis cache whose keys of the tenant move to the new id.
    #[command(flatten)]
    pub cache: super::CacheArgs,

    /// The master database.
    #[command(flatten)]
    pub master: super::MasterArgs,
}

/// Runs `renametenant` with the process's arguments.
pub async fn renametenant(migrators: crate::Migrators) -> ExitCode {
    match super::parse_args() {
        Ok(args) => renametenant_with_args(args, migrators).await,
        Err(code) => code,
    }
}

/// Runs `renametenant` with parsed arguments; returns the exit code.
pub async fn renametenant_with_args(args: RenameTenantArgs, _migrators: crate::Migrators) -> ExitCode {
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => super::report_error(&err),
    }
}

async fn run(args: &RenameTenantArgs) -> Result<()> {
    let tenancy = args.cache.apply(args.master.builder()).connect().await?;
    let (old, new) = (&args.old, &args.new);
    let plan = match tenancy.rename_plan(old, new).await {
        Ok(plan) => Some(plan),
        // An interrupted rename still has its journal rows (and the registry row under
        // the old id): the plan reads fine. Anything the plan refuses, the rename refuses
        // too, with the operation's own error first (a busy id is exit 7, not 3).
        Err(tenancy::Error::TenantExists { .. } | tenancy::Error::TenantNotFound { .. }) => None,
        Err(err) => return Err(err.into()),
    };
    if let Some(plan) = &plan
        && !args.yes
    {
        confirm(old, new, plan, args.json).await?;
    }
    let json = args.json;
    let options = RenameOptions::default().session_wait(Duration::from_secs(args.wait)).after_step(Arc::new(
        move |step: &RenameStep| {
            crate::fault::after_step(step.slug());
            if !json {
                eprintln!("  ✓ {step}");
            }
            Ok(())
        },
    ));
    let renamed = tenancy.rename_tenant(old, new, &options).await?;
    print_result(&renamed, args.json);
    Ok(())
}

fn print_result(renamed: &Renamed, json: bool) {
    if json {
        let rows: serde_json::Map<String, serde_json::Value> =
            renamed.rows.iter().map(|(table, rows)| (table.clone(), (*rows).into())).collect();
        let value = serde_json::json!({
            "from": renamed.from,
            "to": renamed.to,
            "steps": renamed.steps,
            "rows": rows,
            "cache_keys": renamed.cache_keys,
            "resumed": renamed.resumed,
        });
        println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
        return;
    }
    let finished = if renamed.resumed { " (an interrupted rename was finished)" } else { "" };
    println!("✓ Tenant '{}' renamed to '{}'{finished}", renamed.from, renamed.to);
}

/// Shows the plan and asks to type the new id; without a terminal, refuses.
async fn confirm(old: &TenantId, new: &TenantId, plan: &[RenameStep], json: bool) -> Result<()> {
    let prompter = Prompter::new(json);
    if !prompter.is_interactive() {
        return Err(Error::MissingInput {
            what: "confirmation".to_owned(),
            how: "pass --yes to rename without a terminal; nothing was renamed".to_owned(),
        });
    }
    eprintln!("Renaming tenant '{old}' to '{new}' will:");
    for step in plan {
        eprintln!("  - {step}");
    }
    eprintln!("Requests for '{old}' fail while it runs and are answered 'not found' afterwards.");
    let expected = new.to_string();
    let typed = super::typed_answer("Type the new tenant id to rename it:").await?;
    if typed != expected {
        return Err(Error::RenameNotConfirmed { new: expected, typed });
    }
    Ok(())
}
