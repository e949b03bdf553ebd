//! `migratetenant <tenant_id>`: migrate one tenant.

use std::process::ExitCode;

use clap::Parser;
use tenancy::{TenantId, TenantStatus};

use super::Exit;
use crate::migrator::{Known, Migrators, migrate_one};
use crate::{Error, MigrationOutcome, Result};

/// Migrate one tenant: apply the application's pending migrations to its database, schema
/// or the shared tables, in one transaction under the tenant's advisory lock.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "migratetenant",
    after_help = Exit::after_help(
        "Environment:\n  DATABASE_URL  master database (default: sqlite://tenancy.db?mode=rwc)",
        &[
            (Exit::Success, Some("migrated or up to date")),
            (Exit::Failed, Some("a migration failed or panicked (rolled back)")),
            (Exit::InvalidInput, None),
            (Exit::CannotConnect, None),
            (Exit::SecretKey, None),
            (Exit::NotFound, None),
        ],
    )
)]
pub struct MigrateTenantArgs {
    /// The tenant to migrate
    pub tenant_id: TenantId,

    /// The master database.
    #[command(flatten)]
    pub master: super::MasterArgs,
}

/// Runs `migratetenant` with the process's arguments.
pub async fn migratetenant(migrators: Migrators) -> ExitCode {
    match super::parse_args() {
        Ok(args) => migratetenant_with_args(args, migrators).await,
        Err(code) => code,
    }
}

/// Runs `migratetenant` with parsed arguments; returns the exit code.
pub async fn migratetenant_with_args(args: MigrateTenantArgs, migrators: Migrators) -> ExitCode {
    match run(args, migrators).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => super::report_error(&err),
    }
}

async fn run(args: MigrateTenantArgs, migrators: Migrators) -> Result<()> {
    let id = args.tenant_id;
    let tenancy = args.master.connect().await?;
    let tenant = tenancy.get_tenant(&id).await?;
    // A suspended tenant is migrated too, so it is not behind when it is resumed.
    if !matches!(tenant.status(), TenantStatus::Ready | TenantStatus::Suspended) {
        return Err(Error::NotReady { tenant: id.to_string(), status: tenant.status().to_string() });
    }
    println!("Migrating tenant '{id}' ({}, {})...", tenant.isolation(), tenancy.describe_location(&tenant));
    match migrate_one(&tenancy, &tenant, migrators.tenant.as_ref(), Known::Nothing).await? {
        MigrationOutcome::Applied(names) => {
            println!("✓ Applied {} migration(s): {}", names.len(), names.join(", "));
        }
        MigrationOutcome::UpToDate => println!("✓ Up to date: no pending migrations"),
        MigrationOutcome::NothingToMigrate => {
            println!("Nothing to migrate: cache tenants have no relational storage");
        }
    }
    Ok(())
}
