//! Creating tenants: the orchestration over a storage driver ([`crate::storage`]).
//!
//! Validate everything, claim the id, let the driver create the storage (recording an
//! undo entry per step), migrate, mark ready; on any failure undo exactly what this run
//! created, newest first.

mod new_tenant;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use chrono::Utc;
use sea_orm::{ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, TransactionTrait, sea_query::Expr};

pub use self::new_tenant::{DatabaseLogin, NewDatabase, NewTenant};
use crate::registry::entity;
use crate::storage::Plan;
use crate::{BoxError, Error, Result, Tenancy, Tenant, TenantId, TenantStatus};

/// A boxed, `Send` future, as returned by [`ProvisionHooks::migrate`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A step of provisioning, reported to [`ProvisionHooks::after_step`] and named in
/// [`Error::ProvisioningFailed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProvisionStep {
    /// Inserting the registry row in state `provisioning`.
    ClaimId,
    /// `CREATE ROLE` for a database tenant.
    CreateRole,
    /// `CREATE DATABASE` for a database tenant.
    CreateDatabase,
    /// Revoking `CONNECT` from `PUBLIC` and granting the tenant role its privileges.
    GrantPrivileges,
    /// Creating a SQLite tenant database file.
    CreateDatabaseFile,
    /// `CREATE SCHEMA` for a schema tenant.
    CreateSchema,
    /// Running the application's migrations for the tenant.
    Migrate,
    /// Setting the registry row to `ready`.
    MarkReady,
}

impl ProvisionStep {
    /// Every step in the order a run can take them.
    pub const ALL: [ProvisionStep; 8] = [
        ProvisionStep::ClaimId,
        ProvisionStep::CreateRole,
        ProvisionStep::CreateDatabase,
        ProvisionStep::GrantPrivileges,
        ProvisionStep::CreateDatabaseFile,
        ProvisionStep::CreateSchema,
        ProvisionStep::Migrate,
        ProvisionStep::MarkReady,
    ];
}

impl fmt::Display for ProvisionStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProvisionStep::ClaimId => "registering the tenant",
            ProvisionStep::CreateRole => "creating the database user",
            ProvisionStep::CreateDatabase => "creating the database",
            ProvisionStep::GrantPrivileges => "granting database privileges",
            ProvisionStep::CreateDatabaseFile => "creating the database file",
            ProvisionStep::CreateSchema => "creating the schema",
            ProvisionStep::Migrate => "running migrations",
            ProvisionStep::MarkReady => "marking the tenant ready",
        })
    }
}

/// Something a provisioning run created (and would remove again on failure).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Created {
    /// A PostgreSQL role.
    Role {
        /// Role name.
        name: String,
        /// `host:port`.
        server: String,
    },
    /// A PostgreSQL database.
    Database {
        /// Database name.
        name: String,
        /// `host:port`.
        server: String,
    },
    /// A SQLite database file.
    DatabaseFile {
        /// The database name (the file is `<name>.db`).
        name: String,
        /// The file.
        path: PathBuf,
    },
    /// A PostgreSQL schema in the master database.
    Schema {
        /// Schema name.
        name: String,
    },
}

impl fmt::Display for Created {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Created::Role { name, server } => write!(f, "database user '{name}' on {server}"),
            Created::Database { name, server } => write!(f, "database '{name}' on {server}"),
            Created::DatabaseFile { path, .. } => write!(f, "database file '{}'", path.display()),
            Created::Schema { name } => write!(f, "schema '{name}'"),
        }
    }
}

/// The outcome of a successful [`Tenancy::create_tenant`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Provisioned {
    /// The tenant, now `ready`.
    pub tenant: Tenant,
    /// What this run created, in order.
    pub created: Vec<Created>,
    /// Whether migrations ran.
    pub migrated: bool,
}

/// Callbacks of a provisioning run.
///
/// `tenancy-migrate` implements [`ProvisionHooks::migrate`] with the application's
/// migrator. [`ProvisionHooks::after_step`] lets callers report progress or abort a run
/// (tests use it to inject a failure after every step).
pub trait ProvisionHooks: Sync {
    /// Runs the application's migrations for `tenant`, whose storage exists but which is
    /// not `ready` yet. Called only when [`NewTenant::migrate`] asked for it and the mode has
    /// relational storage.
    ///
    /// `within` is set for schema isolation on PostgreSQL: the schema was created in that
    /// transaction of the master database, and migrating inside it (its `search_path` is
    /// the hook's to set, for the transaction only) makes creating the schema, migrating
    /// it and marking the tenant ready one atomic step.
    fn migrate<'a>(
        &'a self,
        tenancy: &'a Tenancy,
        tenant: &'a Tenant,
        within: Option<&'a DatabaseTransaction>,
    ) -> BoxFuture<'a, Result<(), BoxError>>;

    /// Called after each step succeeded. An error aborts the run, which is then undone.
    fn after_step(&self, step: ProvisionStep) -> Result<(), BoxError> {
        let _ = step;
        Ok(())
    }
}

/// No hooks: creating a tenant with `migrate: true` fails, since there is no migrator.
impl ProvisionHooks for () {
    fn migrate<'a>(
        &'a self,
        _: &'a Tenancy,
        _: &'a Tenant,
        _: Option<&'a DatabaseTransaction>,
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async { Err("no migrator was given; use tenancy_migrate to create tenants with migrations".into()) })
    }
}

/// What to remove again if a later step fails.
#[derive(Debug)]
pub(crate) enum Undo {
    /// The registry row this run claimed.
    DeleteRow,
    /// A database tenant's role on its server.
    DropRole(String),
    /// A database tenant's database on its server.
    DropDatabase(String),
    /// A SQLite tenant database file.
    RemoveFile(PathBuf),
    /// A schema tenant's schema.
    DropSchema(String),
    /// A tenant login role on the master, with the privileges granted to it.
    DropLoginRole(String),
}

impl fmt::Display for Undo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Undo::DeleteRow => f.write_str("registry row"),
            Undo::DropRole(name) | Undo::DropLoginRole(name) => write!(f, "role '{name}'"),
            Undo::DropDatabase(name) => write!(f, "database '{name}'"),
            Undo::RemoveFile(path) => write!(f, "file '{}'", path.display()),
            Undo::DropSchema(name) => write!(f, "schema '{name}'"),
        }
    }
}

/// A failed step and why.
pub(crate) type StepFailure = (ProvisionStep, BoxError);

/// The undo log of one run, and the steps' reporting to the hooks.
pub(crate) struct Run<'h> {
    hooks: &'h dyn ProvisionHooks,
    undo: Vec<Undo>,
    created: Vec<Created>,
}

impl Run<'_> {
    /// Runs one step: records its undo entry, then lets the hooks veto.
    pub(crate) async fn step(
        &mut self,
        step: ProvisionStep,
        work: impl Future<Output = Result<Option<Undo>, BoxError>>,
    ) -> Result<(), StepFailure> {
        match work.await {
            Ok(undo) => self.undo.extend(undo),
            Err(err) => return Err((step, err)),
        }
        tracing::debug!(?step, "provisioning step done");
        self.hooks.after_step(step).map_err(|err| (step, err))
    }

    /// Records something the run created, for the report.
    pub(crate) fn created(&mut self, created: Created) {
        self.created.push(created);
    }
}

/// [`Tenancy::create_tenant`].
pub(crate) async fn create<H: ProvisionHooks>(tenancy: &Tenancy, new: NewTenant, hooks: &H) -> Result<Provisioned> {
    let plan = Plan::new(tenancy, &new).await?;
    let result = create_planned(tenancy, &new, &plan, hooks).await;
    plan.close().await;
    result
}

async fn create_planned<H: ProvisionHooks>(
    tenancy: &Tenancy,
    new: &NewTenant,
    plan: &Plan,
    hooks: &H,
) -> Result<Provisioned> {
    let id = new.id();
    if tenancy.find_tenant(id).await?.is_some() {
        return Err(Error::TenantExists { id: id.to_string() });
    }
    if let Err(err) = plan.check_free(tenancy).await {
        // A concurrent run for the same id may have claimed it and created the storage
        // since the registry check above: report the id, not the storage.
        if tenancy.find_tenant(id).await?.is_some() {
            return Err(Error::TenantExists { id: id.to_string() });
        }
        return Err(err);
    }

    let mut tenant = Tenant::provisioning(id.clone(), new.name().to_owned(), plan.placement());
    let mut run = Run { hooks, undo: Vec::new(), created: Vec::new() };
    match run_steps(tenancy, new, &mut tenant, plan, &mut run).await {
        Ok(()) => Ok(Provisioned {
            tenant,
            created: run.created,
            migrated: new.migrates() && new.isolation().has_relational_storage(),
        }),
        Err((step, source)) => {
            // A lost race for the id is not a failure to undo: this run created nothing.
            if step == ProvisionStep::ClaimId
                && run.undo.is_empty()
                && let Some(Error::TenantExists { id }) = source.downcast_ref::<Error>()
            {
                return Err(Error::TenantExists { id: id.clone() });
            }
            let leftovers = undo(tenancy, id, plan, run.undo).await;
            if leftovers.is_empty() {
                Err(Error::ProvisioningFailed { tenant: id.to_string(), step, source })
            } else {
                Err(Error::RollbackFailed { tenant: id.to_string(), step, leftovers: leftovers.join(", "), source })
            }
        }
    }
}

async fn run_steps(
    tenancy: &Tenancy,
    new: &NewTenant,
    tenant: &mut Tenant,
    plan: &Plan,
    run: &mut Run<'_>,
) -> Result<(), StepFailure> {
    run.step(ProvisionStep::ClaimId, async {
        claim(tenancy, tenant).await?;
        Ok(Some(Undo::DeleteRow))
    })
    .await?;

    // A driver that provisions in a master transaction (schema isolation) makes creating
    // the storage, migrating it and marking the tenant ready one transaction, so a failure
    // at any of them leaves nothing behind even if this process dies before it can undo.
    let txn = match plan.in_master_transaction() {
        true => {
            Some(tenancy.master().begin().await.map_err(|e| (ProvisionStep::CreateSchema, Box::new(e) as BoxError))?)
        }
        false => None,
    };
    let result = storage_steps(tenancy, new, tenant, plan, run, txn.as_ref()).await;
    match (result, txn) {
        (Ok(()), Some(txn)) => txn.commit().await.map_err(|e| (ProvisionStep::MarkReady, Box::new(e) as BoxError)),
        (Ok(()), None) => Ok(()),
        (Err(err), Some(txn)) => {
            // Roll back before the undo log runs: its DROP SCHEMA would wait for this
            // transaction's locks.
            let _ = txn.rollback().await;
            Err(err)
        }
        (Err(err), None) => Err(err),
    }
}

/// The steps after the claim: storage, migrations, `ready`.
async fn storage_steps(
    tenancy: &Tenancy,
    new: &NewTenant,
    tenant: &mut Tenant,
    plan: &Plan,
    run: &mut Run<'_>,
    txn: Option<&DatabaseTransaction>,
) -> Result<(), StepFailure> {
    plan.create(tenancy, run, txn).await?;

    if new.migrates() && new.isolation().has_relational_storage() {
        let snapshot = tenant.clone();
        let hooks = run.hooks;
        run.step(ProvisionStep::Migrate, async {
            hooks.migrate(tenancy, &snapshot, txn).await?;
            Ok(None)
        })
        .await?;
    }

    run.step(ProvisionStep::MarkReady, async {
        let now = Utc::now();
        let mark = entity::Entity::update_many()
            .col_expr(entity::Column::Status, Expr::value(TenantStatus::Ready))
            .col_expr(entity::Column::UpdatedAt, Expr::value(now))
            .filter(entity::Column::TenantId.eq(tenant.id().as_str()));
        match txn {
            Some(txn) => mark.exec(txn).await?,
            None => mark.exec(tenancy.master()).await?,
        };
        tenant.set_ready(now);
        Ok(None)
    })
    .await
}

/// Inserts the registry row in state `provisioning`; the primary key makes exactly one of
/// several concurrent runs win.
async fn claim(tenancy: &Tenancy, tenant: &Tenant) -> Result<(), BoxError> {
    match entity::Entity::insert(tenant.to_row()).exec_without_returning(tenancy.master()).await {
        Ok(_) => Ok(()),
        Err(err) if matches!(err.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))) => {
            Err(Box::new(Error::TenantExists { id: tenant.id().to_string() }))
        }
        Err(err) => Err(Box::new(err)),
    }
}

/// Removes what a failed run created, newest first. Returns what could not be removed.
async fn undo(tenancy: &Tenancy, id: &TenantId, plan: &Plan, undo: Vec<Undo>) -> Vec<String> {
    let mut leftovers = Vec::new();
    for item in undo.into_iter().rev() {
        let outcome = match &item {
            Undo::DeleteRow => entity::Entity::delete_many()
                // The primary key made this run the row's only writer.
                .filter(entity::Column::TenantId.eq(id.as_str()))
                .exec(tenancy.master())
                .await
                .map(drop)
                .map_err(Into::into),
            other => plan.undo(tenancy, other).await,
        };
        if let Err(err) = outcome {
            let what = match &item {
                Undo::DeleteRow => format!("registry row '{id}'"),
                other => other.to_string(),
            };
            tracing::error!(tenant = %id, what = %what, error = %err, "could not undo a provisioning step");
            leftovers.push(what);
        }
    }
    leftovers
}
