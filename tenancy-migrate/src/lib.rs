//! # tenancy-migrate
//!
//! Per-tenant migrations for [`tenancy`], on top of
//! [sea-orm-migration](https://www.sea-ql.org/SeaORM/docs/migration/setting-up-migration/),
//! and the library behind the tenant commands (`createtenant`, ...).
//!
//! An application keeps its usual `Migrator` (a `MigratorTrait` implementation). This
//! crate runs it against each tenant's storage:
//!
//! | isolation | where the migrations run | where `seaql_migrations` lives |
//! | --- | --- | --- |
//! | database | the tenant's own database, connected as the tenant's role | that database |
//! | schema | the master database with `search_path` set to the tenant's schema only | the tenant's schema |
//! | table | the master database's shared tables, once for all table tenants | the master database |
//! | cache | nowhere: there is nothing relational to migrate | — |
//!
//! ```no_run
//! # use sea_orm_migration::prelude::*;
//! # struct Migrator;
//! # impl MigratorTrait for Migrator { fn migrations() -> Vec<Box<dyn MigrationTrait>> { vec![] } }
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let tenancy = tenancy::Tenancy::connect(tenancy::master_url_from_env()).await?;
//! let tenant = tenancy.get_tenant("acme").await?;
//! let outcome = tenancy_migrate::migrate_tenant(&tenancy, &tenant, &Migrator).await?;
//! println!("{outcome}");
//! # Ok(()) }
//! ```
//!
//! ## Commands
//!
//! The application's binaries are thin shells over `cli` (feature `cli`); see there for
//! the commands, their flags and exit codes.
//!
//! ## Accounts
//!
//! `accounts` (feature `accounts`) is an optional `tenant_users` table (a migration for the
//! tenant migrator and a `#[tenant_scoped]` entity) that `createtenantsuperuser` writes
//! administrators to; an application with its own user table implements
//! `accounts::SuperuserStore` instead.
//!
//! ## Features
//!
//! - `cli` (default): the commands, with what they need (clap, inquire, indicatif,
//!   rustyline); turns on `accounts`.
//! - `accounts`: the accounts module (argon2id password hashing).
//!
//! A server that only migrates tenants ([`migrate_tenant`], [`fleet`]) can leave both
//! out: `tenancy-migrate = { version = "...", default-features = false }`.
// A panic is not an error report: library code returns errors (unit tests may unwrap).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "accounts")]
#[cfg_attr(docsrs, doc(cfg(feature = "accounts")))]
pub mod accounts;
#[cfg(feature = "cli")]
#[cfg_attr(docsrs, doc(cfg(feature = "cli")))]
pub mod cli;
pub mod drift;
mod error;
pub mod fault;
pub mod fleet;
mod migrator;

use std::fmt;

use sea_orm::DatabaseTransaction;
use sea_orm_migration::MigratorTraitSelf;
use tenancy::{BoxError, BoxFuture, ProvisionHooks, ProvisionStep, Tenancy, Tenant};

pub use crate::error::{Error, Result};
use crate::migrator::DynMigrator;
pub use crate::migrator::Migrators;

/// What migrating one tenant did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationOutcome {
    /// These migrations were applied, in order.
    Applied(Vec<String>),
    /// Nothing was pending.
    UpToDate,
    /// The tenant has no relational storage (cache isolation).
    NothingToMigrate,
}

impl fmt::Display for MigrationOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MigrationOutcome::Applied(names) => write!(f, "applied {} migration(s): {}", names.len(), names.join(", ")),
            MigrationOutcome::UpToDate => f.write_str("up to date"),
            MigrationOutcome::NothingToMigrate => {
                f.write_str("nothing to migrate: cache tenants have no relational storage")
            }
        }
    }
}

/// Applies `migrator`'s pending migrations to one tenant's storage, in one transaction
/// under the tenant's advisory lock (see the crate docs for where each mode migrates).
///
/// # Errors
/// [`Error::Tenancy`] when the tenant's storage cannot be reached, [`Error::Migration`]
/// when a migration fails; on PostgreSQL nothing of the failed run is left applied.
pub async fn migrate_tenant<M>(tenancy: &Tenancy, tenant: &Tenant, migrator: &M) -> Result<MigrationOutcome>
where
    M: MigratorTraitSelf + 'static,
{
    migrator::migrate_one(tenancy, tenant, migrator, migrator::Known::Nothing).await
}

/// [`ProvisionHooks`] that migrate a new tenant with the application's tenant migrator.
///
/// Made from the migrator ([`MigrateOnCreate::new`]) or from the application's
/// [`Migrators`] (`MigrateOnCreate::from(&migrators)`, which takes the tenant migrator).
pub struct MigrateOnCreate<'m> {
    migrator: &'m dyn DynMigrator,
    interrupted: Option<&'m std::sync::atomic::AtomicBool>,
}

impl fmt::Debug for MigrateOnCreate<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MigrateOnCreate")
            .field("migrations", &self.migrator.names())
            .field("interrupted", &self.interrupted)
            .finish()
    }
}

impl<'m> MigrateOnCreate<'m> {
    /// Hooks that run `migrator` on the new tenant.
    pub fn new<M: MigratorTraitSelf + 'static>(migrator: &'m M) -> Self {
        Self { migrator, interrupted: None }
    }

    /// Abort (and undo) the run at the next step boundary once `flag` is set, for
    /// example by a Ctrl-C handler.
    pub fn interrupt_on(mut self, flag: &'m std::sync::atomic::AtomicBool) -> Self {
        self.interrupted = Some(flag);
        self
    }
}

impl<'m> From<&'m Migrators> for MigrateOnCreate<'m> {
    /// Hooks that run the tenant migrator of `migrators` on the new tenant (the shared
    /// migrator is the master's, not the tenant's).
    fn from(migrators: &'m Migrators) -> Self {
        Self { migrator: migrators.tenant.as_ref(), interrupted: None }
    }
}

impl ProvisionHooks for MigrateOnCreate<'_> {
    fn migrate<'a>(
        &'a self,
        tenancy: &'a Tenancy,
        tenant: &'a Tenant,
        within: Option<&'a DatabaseTransaction>,
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            // A tenant being created has nothing applied yet: skip the fast-path probe.
            match within {
                Some(txn) => migrator::migrate_within(txn, tenant, self.migrator).await?,
                None => migrator::migrate_one(tenancy, tenant, self.migrator, migrator::Known::Fresh).await?,
            };
            Ok(())
        })
    }

    fn check_version<'a>(&'a self, tenancy: &'a Tenancy, tenant: &'a Tenant) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            let applied = migrator::applied_read_only(tenancy, tenant, self.migrator).await?;
            let known = self.migrator.names();
            let pending: Vec<String> = known.iter().filter(|name| !applied.contains(*name)).cloned().collect();
            let mut unknown: Vec<String> = applied.iter().filter(|name| !known.contains(name)).cloned().collect();
            unknown.sort();
            if pending.is_empty() && unknown.is_empty() {
                return Ok(());
            }
            Err(Box::new(Error::NotAtMigratorVersion { tenant: tenant.id().to_string(), pending, unknown }) as BoxError)
        })
    }

    fn after_move_step(&self, step: &str) -> Result<(), BoxError> {
        fault::after_step(step);
        match self.interrupted {
            Some(flag) if flag.load(std::sync::atomic::Ordering::SeqCst) => Err("interrupted".into()),
            _ => Ok(()),
        }
    }

    fn after_step(&self, step: ProvisionStep) -> Result<(), BoxError> {
        fault::after_step(step.slug());
        match self.interrupted {
            Some(flag) if flag.load(std::sync::atomic::Ordering::SeqCst) => Err("interrupted".into()),
            _ => Ok(()),
        }
    }
}
