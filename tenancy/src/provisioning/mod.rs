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

pub use self::new_tenant::{DatabaseLogin, NewDatabase, NewTenant, ServerChoice};
use crate::operations::{self, Guard, OperationKind, UndoEntry};
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
    /// Copying a template tenant's tables and rows into the new tenant, and verifying
    /// them ([`NewTenant::from_template`]).
    CopyTemplate,
    /// Setting the registry row to `ready`.
    MarkReady,
}

impl ProvisionStep {
    /// The step's name in the operations journal and in `TENANCY_FAULT_AFTER_STEP`.
    pub fn slug(self) -> &'static str {
        match self {
            ProvisionStep::ClaimId => "claim-id",
            ProvisionStep::CreateRole => "create-role",
            ProvisionStep::CreateDatabase => "create-database",
            ProvisionStep::GrantPrivileges => "grant-privileges",
            ProvisionStep::CreateDatabaseFile => "create-database-file",
            ProvisionStep::CreateSchema => "create-schema",
            ProvisionStep::Migrate => "migrate",
            ProvisionStep::CopyTemplate => "copy-template",
            ProvisionStep::MarkReady => "mark-ready",
        }
    }

    /// Every step in the order a run can take them.
    pub const ALL: [ProvisionStep; 9] = [
        ProvisionStep::ClaimId,
        ProvisionStep::CreateRole,
        ProvisionStep::CreateDatabase,
        ProvisionStep::GrantPrivileges,
        ProvisionStep::CreateDatabaseFile,
        ProvisionStep::CreateSchema,
        ProvisionStep::Migrate,
        ProvisionStep::CopyTemplate,
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
            ProvisionStep::CopyTemplate => "copying the template's data",
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

    /// Checks that `tenant`'s storage is at the migrator's version: neither behind (a
    /// migration not applied) nor ahead (one the migrator does not know). A move refuses
    /// a tenant that is not, since its copy is made by migrating new storage to that
    /// version. Without a migrator (the `()` hooks) nothing can be checked: refused.
    fn check_version<'a>(&'a self, tenancy: &'a Tenancy, tenant: &'a Tenant) -> BoxFuture<'a, Result<(), BoxError>> {
        let _ = (tenancy, tenant);
        Box::pin(async { Err("no migrator was given to check the tenant's migrations against".into()) })
    }

    /// Called after each step of a move ([`crate::relocation::MoveStep`]) succeeded,
    /// with the step's journal name. An error stops the move there, as a crash would.
    fn after_move_step(&self, step: &str) -> Result<(), BoxError> {
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

/// A failed step and why.
pub(crate) type StepFailure = (ProvisionStep, BoxError);

/// One provisioning run: its journaled operation, and the steps' reporting to the hooks.
pub(crate) struct Run<'h> {
    tenancy: &'h Tenancy,
    hooks: &'h dyn ProvisionHooks,
    guard: &'h mut Guard,
    created: Vec<Created>,
}

impl<'h> Run<'h> {
    /// A run over the operation `guard` holds.
    pub(crate) fn new(tenancy: &'h Tenancy, hooks: &'h dyn ProvisionHooks, guard: &'h mut Guard) -> Run<'h> {
        Run { tenancy, hooks, guard, created: Vec::new() }
    }

    /// Runs one step: journals the step and, before the work, what it will create
    /// (`creates`), then lets the hooks veto.
    pub(crate) async fn step(
        &mut self,
        step: ProvisionStep,
        creates: Option<UndoEntry>,
        work: impl Future<Output = Result<(), BoxError>>,
    ) -> Result<(), StepFailure> {
        let failed = |err: Error| (step, Box::new(err) as BoxError);
        self.guard.step(self.tenancy, step.slug()).await.map_err(failed)?;
        let journaled = creates.is_some();
        if let Some(entry) = creates {
            self.guard.intend(self.tenancy, entry).await.map_err(failed)?;
        }
        if let Err(err) = work.await {
            // A single DDL statement that failed created nothing, and what it would have
            // made may be someone else's: forget the intent (a half-written file is the
            // exception, and is removed).
            if journaled && !matches!(self.guard.undo_entries().last(), Some(UndoEntry::File { .. })) {
                self.guard.forget_last(self.tenancy).await.map_err(failed)?;
            }
            return Err((step, err));
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
    let result = journaled(tenancy, &new, &plan, hooks).await;
    plan.close().await;
    result
}

async fn journaled<H: ProvisionHooks>(
    tenancy: &Tenancy,
    new: &NewTenant,
    plan: &Plan,
    hooks: &H,
) -> Result<Provisioned> {
    let id = new.id();
    let begun = match operations::begin(tenancy, OperationKind::Create, id, new.journal_params()).await {
        Ok(begun) => begun,
        // Another live run is creating this id: as before the journal, the id is taken.
        Err(Error::OperationInProgress { kind: OperationKind::Create, .. }) => {
            return Err(Error::TenantExists { id: id.to_string() });
        }
        Err(err) => return Err(err),
    };
    let mut guard = begun.guard;
    if let Some(stale) = begun.resumed {
        tracing::warn!(tenant = %id, step = ?stale.step, "undoing an interrupted createtenant before creating again");
        let leftovers = undo(tenancy, id, guard.undo_entries()).await;
        if !leftovers.is_empty() {
            guard.abandon().await;
            return Err(Error::RollbackFailed {
                tenant: id.to_string(),
                step: ProvisionStep::ClaimId,
                leftovers: leftovers.join(", "),
                source: "could not undo an interrupted createtenant".into(),
            });
        }
        guard.clear_undo(tenancy).await?;
    }
    let result = create_planned(tenancy, new, plan, hooks, &mut guard).await;
    match &result {
        // Marking the tenant ready removed the operation's row in its own transaction.
        Ok(_) => guard.finished().await,
        Err(Error::RollbackFailed { .. }) => guard.abandon().await,
        Err(_) => guard.finish(tenancy).await?,
    }
    result
}

async fn create_planned<H: ProvisionHooks>(
    tenancy: &Tenancy,
    new: &NewTenant,
    plan: &Plan,
    hooks: &H,
    guard: &mut Guard,
) -> Result<Provisioned> {
    let id = new.id();
    if tenancy.find_tenant(id).await?.is_some() {
        return Err(Error::TenantExists { id: id.to_string() });
    }
    plan.check_free(tenancy).await?;

    let mut tenant = Tenant::provisioning(id.clone(), new.name().to_owned(), plan.placement());
    let mut run = Run { tenancy, hooks, guard, created: Vec::new() };
    match run_steps(new, &mut tenant, plan, &mut run).await {
        Ok(()) => Ok(Provisioned {
            tenant,
            created: run.created,
            migrated: (new.migrates() || new.template().is_some()) && new.isolation().has_relational_storage(),
        }),
        Err((step, source)) => {
            let leftovers = undo(tenancy, id, run.guard.undo_entries()).await;
            if leftovers.is_empty() {
                run.guard.clear_undo(tenancy).await?;
                Err(Error::ProvisioningFailed { tenant: id.to_string(), step, source })
            } else {
                Err(Error::RollbackFailed { tenant: id.to_string(), step, leftovers: leftovers.join(", "), source })
            }
        }
    }
}

async fn run_steps(new: &NewTenant, tenant: &mut Tenant, plan: &Plan, run: &mut Run<'_>) -> Result<(), StepFailure> {
    let tenancy = run.tenancy;
    run.step(ProvisionStep::ClaimId, Some(UndoEntry::RegistryRow), claim(tenancy, tenant)).await?;

    // A driver that provisions in one transaction (schema isolation) makes creating the
    // storage and migrating it one step; in the master database marking the tenant ready
    // is part of it, so a failure at any of them leaves nothing behind even if this
    // process dies before it can undo. A shard's transaction commits first, then the
    // master marks the tenant ready: the journal undoes a shard schema whose tenant never
    // became ready.
    plan.create_role(tenancy, run).await?;
    let home = plan.transaction_home(tenancy);
    let txn = match home {
        Some((home, _)) => {
            Some(home.begin().await.map_err(|e| (ProvisionStep::CreateSchema, Box::new(e) as BoxError))?)
        }
        None => None,
    };
    let in_master = home.is_none_or(|(_, master)| master);
    let result = storage_steps(new, tenant, plan, run, txn.as_ref()).await;
    let result = match (result, in_master) {
        (Ok(()), true) => mark_ready(run, tenant, txn.as_ref()).await,
        (result, _) => result,
    };
    match (result, txn) {
        (Ok(()), Some(txn)) => {
            txn.commit().await.map_err(|e| (ProvisionStep::MarkReady, Box::new(e) as BoxError))?;
            if !in_master {
                mark_ready(run, tenant, None).await?;
            }
            Ok(())
        }
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

/// Marks the tenant ready, in `txn` (the master's) or a transaction of its own.
async fn mark_ready(
    run: &mut Run<'_>,
    tenant: &mut Tenant,
    txn: Option<&DatabaseTransaction>,
) -> Result<(), StepFailure> {
    let now = Utc::now();
    run.mark_ready(tenant.id(), now, txn).await?;
    tenant.set_ready(now);
    Ok(())
}

/// The steps after the claim: storage and migrations.
async fn storage_steps(
    new: &NewTenant,
    tenant: &mut Tenant,
    plan: &Plan,
    run: &mut Run<'_>,
    txn: Option<&DatabaseTransaction>,
) -> Result<(), StepFailure> {
    let tenancy = run.tenancy;
    plan.create(tenancy, run, txn).await?;

    if let Some(template) = new.template() {
        let snapshot = tenant.clone();
        let hooks = run.hooks;
        run.step(ProvisionStep::CopyTemplate, None, async {
            crate::relocation::clone::populate(tenancy, template, &snapshot, txn, hooks).await?;
            Ok(())
        })
        .await?;
    } else if new.migrates() && new.isolation().has_relational_storage() {
        let snapshot = tenant.clone();
        let hooks = run.hooks;
        run.step(ProvisionStep::Migrate, None, async {
            hooks.migrate(tenancy, &snapshot, txn).await?;
            Ok(())
        })
        .await?;
    }
    Ok(())
}

impl Run<'_> {
    /// The last step: marks the tenant ready and closes its operation in one transaction
    /// (the driver's, or one of its own), committed after the hooks' veto, so an operation
    /// row always means the tenant is not ready.
    async fn mark_ready(
        &mut self,
        id: &TenantId,
        now: chrono::DateTime<Utc>,
        txn: Option<&DatabaseTransaction>,
    ) -> Result<(), StepFailure> {
        let step = ProvisionStep::MarkReady;
        let failed = |err: BoxError| (step, err);
        self.guard.step(self.tenancy, step.slug()).await.map_err(|err| failed(Box::new(err)))?;
        let own = match txn {
            Some(_) => None,
            None => Some(self.tenancy.master().begin().await.map_err(|err| failed(Box::new(err)))?),
        };
        let Some(on) = own.as_ref().or(txn) else {
            return Err(failed("no transaction to mark the tenant ready in".into()));
        };
        entity::Entity::update_many()
            .col_expr(entity::Column::Status, Expr::value(TenantStatus::Ready))
            .col_expr(entity::Column::UpdatedAt, Expr::value(now))
            .filter(entity::Column::TenantId.eq(id.as_str()))
            .exec(on)
            .await
            .map_err(|err| failed(Box::new(err)))?;
        self.guard.finish_in(on).await.map_err(|err| failed(Box::new(err)))?;
        // The hooks' veto comes before the commit, as for the driver's transaction: a
        // vetoed (or killed) run leaves the tenant unready and its operation open.
        self.hooks.after_step(step).map_err(failed)?;
        if let Some(own) = own {
            own.commit().await.map_err(|err| failed(Box::new(err)))?;
        }
        Ok(())
    }
}

/// Inserts the registry row in state `provisioning`.
async fn claim(tenancy: &Tenancy, tenant: &Tenant) -> Result<(), BoxError> {
    match entity::Entity::insert(tenant.to_row()).exec_without_returning(tenancy.master()).await {
        Ok(_) => Ok(()),
        Err(err) if matches!(err.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))) => {
            Err(Box::new(Error::TenantExists { id: tenant.id().to_string() }))
        }
        Err(err) => Err(Box::new(err)),
    }
}

/// Removes what a run created, newest first, from its journal entries. Returns what could
/// not be removed.
///
/// A run killed in the middle of a statement may leave it running on the server for a
/// moment (a `CREATE DATABASE` whose client is gone finishes first): the database is not
/// there yet when its entry is undone, and then makes its role impossible to drop. So a
/// pass that leaves something is run again, whole (every entry is idempotent), for a few
/// seconds.
pub(crate) async fn undo(tenancy: &Tenancy, id: &TenantId, entries: &[UndoEntry]) -> Vec<String> {
    const PASSES: u32 = 8;
    let mut leftovers = Vec::new();
    for pass in 1..=PASSES {
        leftovers.clear();
        for entry in entries.iter().rev() {
            if let Err(err) = crate::storage::undo(tenancy, id, entry).await {
                if pass == PASSES {
                    tracing::error!(tenant = %id, what = %entry, error = %err, "could not undo a provisioning step");
                }
                leftovers.push(entry.to_string());
            }
        }
        if leftovers.is_empty() {
            break;
        }
        if pass < PASSES {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
    leftovers
}
