//! `suspendtenant <tenant_id> [--reason TEXT]` and `resumetenant <tenant_id>`: stop and
//! start serving a tenant, keeping its data.

use std::process::ExitCode;

use clap::Parser;
use tenancy::TenantId;

use super::Exit;
use crate::Result;

const ENVIRONMENT: &str = "Environment:\n  DATABASE_URL  master database (default: sqlite://tenancy.db?mode=rwc)";

/// Suspend a tenant: its data is kept, servers answer its requests with 503 Service
/// Unavailable, `tenancy.tenant()` refuses it, fleet migrations still migrate it.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "suspendtenant",
    after_help = Exit::after_help(ENVIRONMENT, &[
        (Exit::Success, Some("suspended (or already suspended; the reason is replaced)")),
        (Exit::Failed, Some("the tenant is still being created")),
        (Exit::InvalidInput, None),
        (Exit::CannotConnect, None),
        (Exit::NotFound, None),
        (Exit::Busy, None),
    ]),
)]
pub struct SuspendTenantArgs {
    /// The tenant to suspend
    pub tenant_id: TenantId,

    /// Why, kept in the registry and shown by showtenants (never sent to clients)
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,

    /// The master database.
    #[command(flatten)]
    pub master: super::MasterArgs,
}

/// Resume a suspended tenant: it is served again.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "resumetenant",
    after_help = Exit::after_help(ENVIRONMENT, &[
        (Exit::Success, Some("resumed (or was not suspended)")),
        (Exit::Failed, Some("the tenant is still being created")),
        (Exit::InvalidInput, None),
        (Exit::CannotConnect, None),
        (Exit::NotFound, None),
        (Exit::Busy, None),
    ]),
)]
pub struct ResumeTenantArgs {
    /// The tenant to resume
    pub tenant_id: TenantId,

    /// The master database.
    #[command(flatten)]
    pub master: super::MasterArgs,
}

/// Runs `suspendtenant` with the process's arguments. It takes the app's migrators like
/// every command, though it migrates nothing.
pub async fn suspendtenant(migrators: crate::Migrators) -> ExitCode {
    match super::parse_args() {
        Ok(args) => suspendtenant_with_args(args, migrators).await,
        Err(code) => code,
    }
}

/// Runs `suspendtenant` with parsed arguments; returns the exit code.
pub async fn suspendtenant_with_args(args: SuspendTenantArgs, _migrators: crate::Migrators) -> ExitCode {
    let run = async {
        let tenancy = args.master.connect().await?;
        let reason = args.reason.map(|reason| reason.trim().to_owned()).filter(|reason| !reason.is_empty());
        tenancy.suspend_tenant(&args.tenant_id, reason).await?;
        println!("✓ Tenant '{}' suspended", args.tenant_id);
        Result::Ok(())
    };
    match run.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => super::report_error(&err),
    }
}

/// Runs `resumetenant` with the process's arguments.
pub async fn resumetenant(migrators: crate::Migrators) -> ExitCode {
    match super::parse_args() {
        Ok(args) => resumetenant_with_args(args, migrators).await,
        Err(code) => code,
    }
}

/// Runs `resumetenant` with parsed arguments; returns the exit code.
pub async fn resumetenant_with_args(args: ResumeTenantArgs, _migrators: crate::Migrators) -> ExitCode {
    let run = async {
        let tenancy = args.master.connect().await?;
        tenancy.resume_tenant(&args.tenant_id).await?;
        println!("✓ Tenant '{}' resumed", args.tenant_id);
        Result::Ok(())
    };
    match run.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => super::report_error(&err),
    }
}
