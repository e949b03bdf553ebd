//! `adddomain <tenant_id> <domain> [--primary]` and `removedomain <domain>`: the custom
//! domains [`tenancy::TenantResolver::Domain`] serves a tenant under.

use std::process::ExitCode;

use clap::Parser;
use tenancy::{Domain, DomainAdded, TenantId};

use super::Exit;
use crate::Result;

const ENVIRONMENT: &str = "Environment:\n  DATABASE_URL  master database (default: sqlite://tenancy.db?mode=rwc)";

/// Give a tenant a custom domain: requests whose host is that domain are served as the
/// tenant (with TenantResolver::Domain). The domain is stored normalised (lower case, no
/// trailing dot, international names as punycode); a domain has one tenant. A tenant's
/// first domain is its primary one. Adding a domain the tenant has already changes nothing
/// (except --primary).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "adddomain",
    after_help = Exit::after_help(ENVIRONMENT, &[
        (Exit::Success, Some("added (or the tenant had it already)")),
        (Exit::InvalidInput, Some("not a domain (a scheme, port, path, IP address, single label...)")),
        (Exit::AlreadyExists, Some("another tenant has the domain")),
        (Exit::CannotConnect, None),
        (Exit::NotFound, Some("no such tenant")),
    ]),
)]
pub struct AddDomainArgs {
    /// The tenant
    pub tenant_id: TenantId,

    /// The domain, such as shop.example.com (no scheme, port or path)
    pub domain: Domain,

    /// Make it the tenant's primary domain (the one to build links with)
    #[arg(long)]
    pub primary: bool,

    /// The master database.
    #[command(flatten)]
    pub master: super::MasterArgs,
}

/// Take a custom domain away from its tenant. Removing a tenant's primary domain makes
/// its oldest remaining domain the primary one.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "removedomain",
    after_help = Exit::after_help(ENVIRONMENT, &[
        (Exit::Success, Some("removed")),
        (Exit::InvalidInput, Some("not a domain")),
        (Exit::CannotConnect, None),
        (Exit::NotFound, Some("no tenant has the domain")),
    ]),
)]
pub struct RemoveDomainArgs {
    /// The domain
    pub domain: Domain,

    /// The master database.
    #[command(flatten)]
    pub master: super::MasterArgs,
}

/// Runs `adddomain` with the process's arguments. It takes the app's migrators like every
/// command, though it migrates nothing.
pub async fn adddomain(migrators: crate::Migrators) -> ExitCode {
    match super::parse_args() {
        Ok(args) => adddomain_with_args(args, migrators).await,
        Err(code) => code,
    }
}

/// Runs `adddomain` with parsed arguments; returns the exit code.
pub async fn adddomain_with_args(args: AddDomainArgs, _migrators: crate::Migrators) -> ExitCode {
    let run = async {
        let tenancy = args.master.connect().await?;
        let added = tenancy.add_domain(&args.tenant_id, &args.domain, args.primary).await?;
        let primary = tenancy
            .domains(Some(&args.tenant_id))
            .await?
            .into_iter()
            .find(|domain| domain.domain == args.domain)
            .is_some_and(|domain| domain.primary);
        let role = if primary { " (primary)" } else { "" };
        match added {
            DomainAdded::Added => println!("✓ Domain '{}' added to tenant '{}'{role}", args.domain, args.tenant_id),
            DomainAdded::AlreadyThere => {
                println!("✓ Tenant '{}' has the domain '{}'{role}", args.tenant_id, args.domain);
            }
        }
        Result::Ok(())
    };
    match run.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => super::report_error(&err),
    }
}

/// Runs `removedomain` with the process's arguments.
pub async fn removedomain(migrators: crate::Migrators) -> ExitCode {
    match super::parse_args() {
        Ok(args) => removedomain_with_args(args, migrators).await,
        Err(code) => code,
    }
}

/// Runs `removedomain` with parsed arguments; returns the exit code.
pub async fn removedomain_with_args(args: RemoveDomainArgs, _migrators: crate::Migrators) -> ExitCode {
    let run = async {
        let tenancy = args.master.connect().await?;
        let removed = tenancy.remove_domain(&args.domain).await?;
        println!("✓ Domain '{}' removed from tenant '{}'", removed.domain, removed.tenant);
        Result::Ok(())
    };
    match run.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => super::report_error(&err),
    }
}
