//! `deletetenant <tenant_id>`: removes a tenant's storage, cache namespace and registry
//! row, after a confirmation, optionally after a backup. Journaled: killed at any moment,
//! running the same command again finishes the delete.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tenancy::deletion::{DeleteOptions, Deleted, Removal};
use tenancy::{Tenancy, TenantId};

use super::Exit;
use super::prompt::Prompter;
use crate::{Error, Result};

const ENVIRONMENT: &str = "Environment:\n  DATABASE_URL        master database (default: sqlite://tenancy.db?mode=rwc)\n  \
                           TENANCY_ADMIN_URL   admin credentials for database tenants' servers\n  \
                           TENANCY_CACHE_URL   the Redis cache whose namespace of the tenant is cleared";

/// Delete a tenant: its database, schema, rows or cache namespace (only what tenancy
/// created), its login role, then its registry row. Asks to type the tenant id first,
/// unless --yes.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "deletetenant",
    after_help = Exit::after_help(ENVIRONMENT, &[
        (Exit::Success, Some("deleted (or --dry-run: the plan was printed)")),
        (Exit::Failed, Some("a removal or the backup failed (run it again to finish a started delete)")),
        (Exit::InvalidInput, Some("invalid input, or no terminal to confirm on and no --yes")),
        (Exit::CannotConnect, None),
        (Exit::NotFound, None),
        (Exit::Busy, None),
        (Exit::Cancelled, Some("not confirmed: nothing was deleted")),
    ]),
)]
pub struct DeleteTenantArgs {
    /// The tenant to delete
    pub tenant_id: TenantId,

    /// Delete without asking (for scripts)
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// List what would be removed, object by object, and change nothing
    #[arg(long, alias = "plan")]
    pub dry_run: bool,

    /// Print the result (or the plan) as JSON
    #[arg(long)]
    pub json: bool,

    /// First write a restorable dump of the tenant's data to this new file
    #[arg(long, value_name = "PATH")]
    pub backup: Option<PathBuf>,

    /// Also drop a database the tenant adopted (createtenant --no-create-database)
    #[arg(long)]
    pub drop_adopted_database: bool,

    /// Remove only what earlier moves left behind (movetenant keeps the old storage); the
    /// tenant stays
    #[arg(long, conflicts_with_all = ["backup", "drop_adopted_database"])]
    pub leftovers: bool,

    /// Seconds to wait for the tenant's sessions to end before giving up
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub wait: u64,

    /// The Redis cache whose namespace of the tenant is cleared.
    #[command(flatten)]
    pub cache: super::CacheArgs,

    /// The master database.
    #[command(flatten)]
    pub master: super::MasterArgs,
}

/// Runs `deletetenant` with the process's arguments.
pub async fn deletetenant(migrators: crate::Migrators) -> ExitCode {
    match super::parse_args() {
        Ok(args) => deletetenant_with_args(args, migrators).await,
        Err(code) => code,
    }
}

/// Runs `deletetenant` with parsed arguments; returns the exit code.
pub async fn deletetenant_with_args(args: DeleteTenantArgs, _migrators: crate::Migrators) -> ExitCode {
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => super::report_error(&err),
    }
}

async fn run(args: &DeleteTenantArgs) -> Result<()> {
    let tenancy = args.cache.apply(args.master.builder()).connect().await?;
    let id = &args.tenant_id;
    if args.leftovers {
        return remove_leftovers(&tenancy, args).await;
    }
    let mut options = DeleteOptions::default()
        .drop_adopted_database(args.drop_adopted_database)
        .session_wait(Duration::from_secs(args.wait));
    if let Some(path) = &args.backup {
        options = options.backup(path.clone());
    }
    let plan = match tenancy.delete_plan(id, &options).await {
        Ok(plan) => Some(plan),
        // A delete interrupted after its last step left only its journal entry: the
        // delete below finishes it (or reports the tenant unknown).
        Err(tenancy::Error::TenantNotFound { .. }) if !args.dry_run => None,
        Err(err) => return Err(err.into()),
    };
    if args.dry_run {
        let plan = plan.unwrap_or_default();
        print_plan(id, &plan, args.json);
        return Ok(());
    }
    if let Some(plan) = &plan
        && !args.yes
    {
        confirm(id, plan, args.json).await?;
    }
    if !args.json {
        options = options.after_removal(std::sync::Arc::new(|removal: &Removal| {
            crate::fault::after_step(removal.kind());
            eprintln!("  ✓ {removal}");
            Ok(())
        }));
    } else {
        options = options.after_removal(std::sync::Arc::new(|removal: &Removal| {
            crate::fault::after_step(removal.kind());
            Ok(())
        }));
    }
    let deleted = tenancy.delete_tenant(id, &options).await?;
    print_result(&deleted, args.json);
    Ok(())
}

fn print_plan(id: &TenantId, plan: &[Removal], json: bool) {
    if json {
        let value = serde_json::json!({ "tenant": id, "dry_run": true, "removals": plan });
        println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
        return;
    }
    println!("Deleting tenant '{id}' would:");
    for removal in plan {
        println!("  - {removal}");
    }
    println!("Nothing was changed (--dry-run).");
}

fn print_result(deleted: &Deleted, json: bool) {
    if json {
        let value = serde_json::json!({
            "tenant": deleted.tenant,
            "dry_run": false,
            "removals": deleted.removals,
            "backup": deleted.backup,
            "resumed": deleted.resumed,
        });
        println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
        return;
    }
    if let Some(backup) = &deleted.backup {
        println!("✓ Backup written to '{}' ({:?})", backup.path.display(), backup.format);
    }
    match deleted.resumed {
        true => println!("✓ Tenant '{}' deleted (an interrupted delete was finished)", deleted.tenant),
        false => println!("✓ Tenant '{}' deleted", deleted.tenant),
    }
}

/// Shows the plan and asks to type the tenant id; without a terminal, refuses.
async fn confirm(id: &TenantId, plan: &[Removal], json: bool) -> Result<()> {
    let prompter = Prompter::new(json);
    if !prompter.is_interactive() {
        return Err(Error::MissingInput {
            what: "confirmation".to_owned(),
            how: "pass --yes to delete without a terminal; nothing was deleted".to_owned(),
        });
    }
    eprintln!("Deleting tenant '{id}' will:");
    for removal in plan {
        eprintln!("  - {removal}");
    }
    let expected = id.to_string();
    let typed = super::typed_answer("Type the tenant id to delete it:").await?;
    if typed != expected {
        return Err(Error::NotConfirmed { tenant: expected, typed });
    }
    Ok(())
}

/// `--leftovers`: removes what earlier moves of the tenant left behind, after a
/// confirmation, keeping the tenant.
async fn remove_leftovers(tenancy: &Tenancy, args: &DeleteTenantArgs) -> Result<()> {
    let id = &args.tenant_id;
    tenancy.get_tenant(id).await?;
    let left = tenancy.leftovers(Some(id)).await?;
    let plan: Vec<Removal> =
        vec![Removal::Leftovers { objects: left.iter().map(|l| format!("{} ({})", l.object, l.reason)).collect() }];
    if args.dry_run || left.is_empty() {
        if args.json {
            let value = serde_json::json!({ "tenant": id, "dry_run": args.dry_run, "leftovers": left });
            println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
        } else if left.is_empty() {
            println!("Tenant '{id}' has nothing left behind by a move.");
        } else {
            print_plan(id, &plan, false);
        }
        return Ok(());
    }
    if !args.yes {
        confirm(id, &plan, args.json).await?;
    }
    let removed = tenancy.remove_leftovers(id).await?;
    if args.json {
        let value = serde_json::json!({ "tenant": id, "dry_run": false, "removed": removed });
        println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
    } else {
        for leftover in &removed {
            println!("✓ Removed {}", leftover.object);
        }
    }
    Ok(())
}
