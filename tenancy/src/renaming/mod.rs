//! Renaming tenants: a tenant's id changes everywhere it lives, journaled like creation
//! and deletion ([`crate::operations`]) so a rename killed at any moment is finished by
//! running it again.
//!
//! What changes, step by step ([`RenameStep`], each idempotent):
//!
//! 1. **stop serving**: a ready tenant is marked `renaming` (not served; a suspended one
//!    stays suspended), so no process writes under the old id while its rows move;
//! 2. **schema** (schema isolation): `ALTER SCHEMA … RENAME` to the new id, its mark
//!    (the comment `tenancy:<master database>:<id>`) rewritten;
//! 3. **login role** (schema and table isolation on PostgreSQL): its sessions ended, then
//!    renamed to the role prefix + the new id (PostgreSQL keeps a SCRAM password across a
//!    rename; only MD5 ones are cleared, and tenancy never makes those), its
//!    `search_path` set to the renamed schema, its mark rewritten. In table isolation the
//!    row-security policies read the tenant from the login role's name, so the renamed
//!    role sees exactly the rows that now hold the new id;
//! 4. **database marks** (database isolation on PostgreSQL): the database and role keep
//!    their names, which the operator chose; only the marks tenancy wrote are rewritten;
//! 5. **tenant columns**: every scoped table's tenant column, old id → new id, in every
//!    mode (in the tenant's own database or schema too, so the data stays movable), in
//!    one transaction: on PostgreSQL one statement whose data-modifying CTEs update every
//!    table, so the foreign keys that include the tenant column (`tasks (tenant_id,
//!    project_id) -> projects (tenant_id, id)`) are checked once, at the statement's end;
//!    on SQLite with `PRAGMA defer_foreign_keys`;
//! 6. **cache namespace**: the tenant's keys moved to the new namespace, values and TTLs
//!    kept ([`crate::cache::CacheStore::move_namespace`]);
//! 7. **registry**: one transaction changes the registry row's id (stored passwords
//!    re-encrypted under the new id, which they are bound to), moves the fleet ledger's
//!    history to the new id ([`crate::ledger`]: `renamed_from` keeps the old one) and the
//!    storage earlier moves left behind ([`crate::relocation::Leftover`], which keeps its
//!    names), and closes the operation. The registry's triggers announce the change as the old id
//!    gone and the new one added: running servers answer "not found" for the old id and
//!    serve the new one within a second (the live registry).
//!
//! The operation is journaled under both ids (one row each, the same arguments), so
//! while it runs or stays unfinished, nothing else (`createtenant`, `deletetenant`,
//! `suspendtenant`, another rename) acts on either id.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter, Statement, TransactionTrait,
};
use serde::Serialize;

mod columns;

use crate::operations::{self, Guard, OperationKind};
use crate::registry::entity;
use crate::registry::placement::{Ownership, Placement, TenantDatabase, TenantLogin};
use crate::sql::{quote_ident, quote_literal};
use crate::storage::{self, marker};
use crate::{BoxError, Error, Isolation, Result, Tenancy, Tenant, TenantId, TenantStatus};

/// How long a rename waits, by default, for the sessions of a tenant's login role to end.
pub const DEFAULT_SESSION_WAIT: Duration = Duration::from_secs(10);

/// A callback after each step, for progress (and for tests, to stop a run there).
pub type AfterRenameStep = Arc<dyn Fn(&RenameStep) -> Result<(), BoxError> + Send + Sync>;

/// How [`Tenancy::rename_tenant`] renames.
#[derive(Clone)]
pub struct RenameOptions {
    session_wait: Duration,
    after_step: Option<AfterRenameStep>,
}

impl Default for RenameOptions {
    fn default() -> Self {
        RenameOptions { session_wait: DEFAULT_SESSION_WAIT, after_step: None }
    }
}

impl fmt::Debug for RenameOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RenameOptions").field("session_wait", &self.session_wait).finish_non_exhaustive()
    }
}

impl RenameOptions {
    /// How long to wait for the sessions of the tenant's login role to end.
    pub fn session_wait(mut self, wait: Duration) -> Self {
        self.session_wait = wait;
        self
    }

    /// Called after each step; an error stops the rename there (it stays unfinished, and
    /// the next run finishes it).
    pub fn after_step(mut self, callback: AfterRenameStep) -> Self {
        self.after_step = Some(callback);
        self
    }
}

/// One step of a rename, in the order a rename takes them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RenameStep {
    /// The tenant stops being served (status `renaming`, pools closed).
    StopServing,
    /// A schema tenant's schema is renamed.
    Schema {
        /// The schema's name now.
        from: String,
        /// Its new name.
        to: String,
    },
    /// A schema or table tenant's login role is renamed (its sessions ended first).
    LoginRole {
        /// The role's name now.
        from: String,
        /// Its new name.
        to: String,
    },
    /// A database tenant's database and role keep their names (the operator chose them);
    /// the marks tenancy wrote on them name the new id.
    DatabaseMarks {
        /// The database.
        database: String,
        /// Its role.
        role: String,
        /// `host:port`.
        server: String,
    },
    /// The tenant column of every scoped table holds the new id.
    TenantColumns,
    /// The tenant's cache keys move to the new namespace.
    CacheNamespace {
        /// The old namespace.
        from: String,
        /// The new one.
        to: String,
    },
    /// The registry row gets the new id, the ledger's history follows, the operation
    /// ends: one transaction.
    Registry,
}

impl RenameStep {
    /// The step's name in the operations journal and in `TENANCY_FAULT_AFTER_STEP`:
    /// `stop-serving`, `rename-schema`, `rename-login-role`, `rewrite-database-marks`,
    /// `update-tenant-columns`, `move-cache-namespace`, `switch-registry`.
    pub fn slug(&self) -> &'static str {
        match self {
            RenameStep::StopServing => "stop-serving",
            RenameStep::Schema { .. } => "rename-schema",
            RenameStep::LoginRole { .. } => "rename-login-role",
            RenameStep::DatabaseMarks { .. } => "rewrite-database-marks",
            RenameStep::TenantColumns => "update-tenant-columns",
            RenameStep::CacheNamespace { .. } => "move-cache-namespace",
            RenameStep::Registry => "switch-registry",
        }
    }
}

impl fmt::Display for RenameStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RenameStep::StopServing => f.write_str("stop serving the tenant while it is renamed"),
            RenameStep::Schema { from, to } => write!(f, "rename schema '{from}' to '{to}'"),
            RenameStep::LoginRole { from, to } => write!(f, "rename role '{from}' to '{to}' (ending its sessions)"),
            RenameStep::DatabaseMarks { database, role, server } => write!(
                f,
                "keep database '{database}' and role '{role}' on {server} (names chosen by the operator); \
                 rewrite tenancy's marks on them"
            ),
            RenameStep::TenantColumns => f.write_str("set the tenant column of every scoped table to the new id"),
            RenameStep::CacheNamespace { from, to } => write!(f, "move cache keys from '{from}' to '{to}'"),
            RenameStep::Registry => {
                f.write_str("give the registry row the new id, move the migration ledger's history to it")
            }
        }
    }
}

/// What [`Tenancy::rename_tenant`] did.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Renamed {
    /// The old id.
    pub from: TenantId,
    /// The new id.
    pub to: TenantId,
    /// Each step, in order.
    pub steps: Vec<RenameStep>,
    /// Rows whose tenant column this run changed, per table (a resumed run counts only
    /// what was left).
    pub rows: Vec<(String, u64)>,
    /// Cache keys moved (or, for a store that cannot move keys, cleared).
    pub cache_keys: u64,
    /// Whether this run finished a rename an earlier, interrupted run had started.
    pub resumed: bool,
}

/// The ids a rename's journal rows hold (`{"from": ..., "to": ...}`).
pub(crate) fn journaled_ids(params: &serde_json::Value) -> Option<(TenantId, TenantId)> {
    let id = |key: &str| params.get(key)?.as_str().and_then(|id| TenantId::new(id.to_owned()).ok());
    Some((id("from")?, id("to")?))
}

fn journal_params(from: &TenantId, to: &TenantId) -> serde_json::Value {
    serde_json::json!({ "from": from, "to": to })
}

/// [`Tenancy::rename_plan`]: the steps a rename would take, changing nothing.
pub(crate) async fn plan(tenancy: &Tenancy, from: &TenantId, to: &TenantId) -> Result<Vec<RenameStep>> {
    if from == to {
        return Err(Error::RenameToSameId { id: from.to_string() });
    }
    let tenant = tenancy.find_tenant(from).await?.ok_or_else(|| Error::TenantNotFound { id: from.to_string() })?;
    if tenancy.find_tenant(to).await?.is_some() {
        return Err(Error::TenantExists { id: to.to_string() });
    }
    steps(tenancy, &tenant, to).await
}

async fn steps(tenancy: &Tenancy, tenant: &Tenant, to: &TenantId) -> Result<Vec<RenameStep>> {
    let from = tenant.id();
    let mut list = vec![RenameStep::StopServing];
    match tenant.placement() {
        // In the master database or a shard: the same steps, in that database.
        Placement::Schema { schema, login, .. } => {
            // The schema is named after the id (**contract**); one that is not keeps its name.
            if schema == from.as_str() {
                list.push(RenameStep::Schema { from: schema.clone(), to: to.to_string() });
            }
            if let Some(login) = login {
                list.push(RenameStep::LoginRole { from: login.user.clone(), to: login_name(tenancy, to).await? });
            }
            list.push(RenameStep::TenantColumns);
        }
        Placement::Table { login } => {
            if let Some(login) = login {
                list.push(RenameStep::LoginRole { from: login.user.clone(), to: login_name(tenancy, to).await? });
            }
            list.push(RenameStep::TenantColumns);
        }
        Placement::Database(TenantDatabase::Postgres(db)) => {
            list.push(RenameStep::DatabaseMarks {
                database: db.name.clone(),
                role: db.user.clone(),
                server: db.server(),
            });
            list.push(RenameStep::TenantColumns);
        }
        Placement::Database(TenantDatabase::Sqlite(_)) => list.push(RenameStep::TenantColumns),
        Placement::Cache => {}
    }
    let cache = tenancy.shared_cache();
    list.push(RenameStep::CacheNamespace {
        from: cache.tenant(from).namespace().to_owned(),
        to: cache.tenant(to).namespace().to_owned(),
    });
    list.push(RenameStep::Registry);
    Ok(list)
}

/// The login role name of tenant `id` on this master.
async fn login_name(tenancy: &Tenancy, id: &TenantId) -> Result<String> {
    Ok(format!("{}{id}", tenancy.master_identity().await?.0))
}

/// The operation under both ids: `from`'s row first, then `to`'s.
struct Held {
    from: Guard,
    to: Guard,
    resumed: bool,
}

impl Held {
    async fn take(tenancy: &Tenancy, from: &TenantId, to: &TenantId) -> Result<Held> {
        let params = journal_params(from, to);
        let first = operations::begin(tenancy, OperationKind::Rename, from, params.clone()).await?;
        let second = match operations::begin(tenancy, OperationKind::Rename, to, params).await {
            Ok(second) => second,
            Err(err) => {
                // Nothing was renamed under this run: close `from`'s row, unless it is an
                // interrupted run's (then it stays for a re-run).
                match first.resumed {
                    Some(_) => first.guard.abandon().await,
                    None => {
                        let _ = first.guard.finish(tenancy).await;
                    }
                }
                return Err(err);
            }
        };
        let resumed = first.resumed.is_some() || second.resumed.is_some();
        Ok(Held { from: first.guard, to: second.guard, resumed })
    }

    /// Ends an operation that changed nothing: closed, or (a resumed one) left for a
    /// re-run.
    async fn settle(self, tenancy: &Tenancy) {
        match self.resumed {
            true => self.abandon().await,
            false => {
                let _ = self.from.finish(tenancy).await;
                let _ = self.to.finish(tenancy).await;
            }
        }
    }

    async fn abandon(self) {
        self.from.abandon().await;
        self.to.abandon().await;
    }

    async fn step(&self, tenancy: &Tenancy, step: &RenameStep) -> Result<()> {
        self.from.step(tenancy, step.slug()).await?;
        self.to.step(tenancy, step.slug()).await
    }
}

/// [`Tenancy::rename_tenant`].
pub(crate) async fn rename(
    tenancy: &Tenancy,
    from: &TenantId,
    to: &TenantId,
    options: &RenameOptions,
) -> Result<Renamed> {
    if from == to {
        return Err(Error::RenameToSameId { id: from.to_string() });
    }
    let held = Held::take(tenancy, from, to).await?;
    // The journal rows are removed with the registry row's change: while they exist, the
    // registry still has `from` and not `to`.
    let tenant = match checked(tenancy, from, to).await {
        Ok(tenant) => tenant,
        Err(err) => {
            held.settle(tenancy).await;
            return Err(err);
        }
    };
    let steps = match steps(tenancy, &tenant, to).await {
        Ok(steps) => steps,
        Err(err) => {
            held.settle(tenancy).await;
            return Err(err);
        }
    };
    // The schema's and login role's database: the master's, or the tenant's shard.
    let home = match storage::shard::Home::open(tenancy, tenant.placement().shard()).await {
        Ok(home) => home,
        Err(err) => {
            held.settle(tenancy).await;
            return Err(err);
        }
    };
    let renamed = run_steps(tenancy, &tenant, to, &steps, options, held, &home).await;
    home.close().await;
    renamed
}

/// The steps of a rename, in `home` (the database of the tenant's schema or login role).
async fn run_steps(
    tenancy: &Tenancy,
    tenant: &Tenant,
    to: &TenantId,
    steps: &[RenameStep],
    options: &RenameOptions,
    held: Held,
    home: &storage::shard::Home,
) -> Result<Renamed> {
    let from = tenant.id();
    let db = home.db(tenancy);
    // Everything that can refuse the rename refuses it before anything changes.
    if let Err(err) = check_free(tenancy, db, tenant, to, steps).await {
        held.settle(tenancy).await;
        return Err(err);
    }

    let mut renamed = Renamed {
        from: from.clone(),
        to: to.clone(),
        steps: steps.to_vec(),
        rows: Vec::new(),
        cache_keys: 0,
        resumed: held.resumed,
    };
    let fail = |step: &RenameStep, source: BoxError| Error::RenameFailed {
        from: from.to_string(),
        to: to.to_string(),
        step: step.slug().to_owned(),
        source,
    };
    for step in steps {
        held.step(tenancy, step).await?;
        let done: Result<()> = match step {
            RenameStep::StopServing => stop_serving(tenancy, tenant).await,
            RenameStep::Schema { from: old, to: new } => {
                rename_schema(tenancy, db, old, new, to).await.map_err(|source| fail(step, source))
            }
            RenameStep::LoginRole { from: old, to: new } => {
                rename_login_role(tenancy, db, tenant, old, new, to, options.session_wait).await
            }
            RenameStep::DatabaseMarks { .. } => {
                rewrite_database_marks(tenancy, tenant, to).await.map_err(|source| fail(step, source))
            }
            RenameStep::TenantColumns => match columns::update(tenancy, db, tenant, steps, to).await {
                Ok(rows) => {
                    renamed.rows = rows;
                    Ok(())
                }
                Err(err) => Err(err),
            },
            RenameStep::CacheNamespace { .. } => match move_cache(tenancy, tenant, to).await {
                Ok(keys) => {
                    renamed.cache_keys = keys;
                    Ok(())
                }
                Err(err) => Err(err),
            },
            RenameStep::Registry => switch_registry(tenancy, tenant, to, steps, &held).await,
        };
        if let Err(err) = done {
            // The first step failing changed nothing (one conditional update): serve the
            // tenant again; any later one leaves the rename for a re-run to finish.
            if *step == RenameStep::StopServing && !held.resumed {
                held.settle(tenancy).await;
            } else {
                held.abandon().await;
            }
            return Err(err);
        }
        if let Some(callback) = &options.after_step
            && let Err(source) = callback(step)
        {
            held.abandon().await;
            return Err(Error::RenameInterrupted {
                from: from.to_string(),
                to: to.to_string(),
                step: step.slug().to_owned(),
                source,
            });
        }
    }
    // The rows are gone with the registry's change; this releases the locks.
    let _ = held.from.finish(tenancy).await;
    let _ = held.to.finish(tenancy).await;
    Ok(renamed)
}

/// The tenant to rename, once both ids are held: `from` registered and renamable, `to`
/// free.
async fn checked(tenancy: &Tenancy, from: &TenantId, to: &TenantId) -> Result<Tenant> {
    let tenant = tenancy.find_tenant(from).await?.ok_or_else(|| Error::TenantNotFound { id: from.to_string() })?;
    crate::entry::record_isolation(tenant.isolation());
    if tenancy.find_tenant(to).await?.is_some() {
        return Err(Error::TenantExists { id: to.to_string() });
    }
    match tenant.status() {
        TenantStatus::Ready | TenantStatus::Suspended | TenantStatus::Renaming => Ok(tenant),
        status => Err(Error::TenantNotReady { tenant: from.to_string(), status }),
    }
}

/// Refuses a rename whose new names are taken (while the old ones still exist: a name
/// taken by this rename's own earlier run is its result), and a cache tenant on a store
/// that cannot move its keys.
async fn check_free(
    tenancy: &Tenancy,
    db: &DatabaseConnection,
    tenant: &Tenant,
    to: &TenantId,
    steps: &[RenameStep],
) -> Result<()> {
    for step in steps {
        match step {
            RenameStep::Schema { from, to } => {
                let (old, new) = (schema_exists(db, from).await?, schema_exists(db, to).await?);
                if old && new {
                    return Err(Error::SchemaExists { name: to.clone() });
                }
            }
            RenameStep::LoginRole { from, to } => {
                let (old, new) = (role_exists(db, from).await?, role_exists(db, to).await?);
                if old && new {
                    return Err(Error::LoginRoleExists { name: to.clone() });
                }
            }
            _ => {}
        }
    }
    if tenant.isolation() == Isolation::Cache && !cache_can_move(tenancy).await? {
        return Err(Error::RenameFailed {
            from: tenant.id().to_string(),
            to: to.to_string(),
            step: "check".to_owned(),
            source: "the cache store cannot move keys, and a cache tenant's keys are its only storage".into(),
        });
    }
    Ok(())
}

async fn cache_can_move(tenancy: &Tenancy) -> Result<bool> {
    // Moving between two namespaces no tenant id can have ('%' is always encoded) says
    // whether the store can, and moves nothing.
    Ok(tenancy.cache_store().move_namespace("%probe-from%", "%probe-to%").await?.is_some())
}

async fn schema_exists(db: &DatabaseConnection, name: &str) -> Result<bool> {
    storage::exists(db, "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1", name).await
}

async fn role_exists(db: &DatabaseConnection, name: &str) -> Result<bool> {
    storage::exists(db, "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", name).await
}

/// A ready tenant is marked `renaming`; a suspended one stays suspended. This process
/// closes its pool at once; every other one when the live registry hears of it.
async fn stop_serving(tenancy: &Tenancy, tenant: &Tenant) -> Result<()> {
    let id = tenant.id();
    entity::Entity::update_many()
        .col_expr(entity::Column::Status, Expr::value(TenantStatus::Renaming))
        .col_expr(entity::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(entity::Column::TenantId.eq(id.as_str()))
        .filter(entity::Column::Status.eq(TenantStatus::Ready))
        .exec(tenancy.master())
        .await?;
    if let Some(now) = tenancy.find_tenant(id).await? {
        tenancy.registry_changed(&now);
    }
    tenancy.reset_tenant_pool(id);
    Ok(())
}

/// Renames the schema and rewrites its mark; after an earlier run renamed it, rewrites the
/// mark only.
async fn rename_schema(
    tenancy: &Tenancy,
    db: &DatabaseConnection,
    old: &str,
    new: &str,
    to: &TenantId,
) -> Result<(), BoxError> {
    let master_name = tenancy.master_identity().await?.1.clone();
    let mark = marker::comment_sql(&format!("SCHEMA {}", quote_ident(new)), &master_name, to);
    let sql = match (schema_exists(db, old).await?, schema_exists(db, new).await?) {
        // One implicit transaction: renamed and marked together.
        (true, false) => format!("ALTER SCHEMA {} RENAME TO {}; {mark}", quote_ident(old), quote_ident(new)),
        (false, true) => mark,
        (true, true) => return Err(format!("both schema '{old}' and schema '{new}' exist").into()),
        (false, false) => return Err(format!("neither schema '{old}' nor schema '{new}' exists").into()),
    };
    db.execute_unprepared(&sql).await?;
    Ok(())
}

/// Ends the role's sessions (it may not log in meanwhile), then renames it, points its
/// `search_path` at the renamed schema, rewrites its mark and lets it log in again: one
/// implicit transaction. After an earlier run renamed it, only the settings are applied
/// again.
async fn rename_login_role(
    tenancy: &Tenancy,
    db: &DatabaseConnection,
    tenant: &Tenant,
    old: &str,
    new: &str,
    to: &TenantId,
    wait: Duration,
) -> Result<()> {
    let fail = |source: BoxError| Error::RenameFailed {
        from: tenant.id().to_string(),
        to: to.to_string(),
        step: "rename-login-role".to_owned(),
        source,
    };
    let master_name = tenancy.master_identity().await?.1.clone();
    let quoted = quote_ident(new);
    let mut settings = String::new();
    if let Placement::Schema { schema, .. } = tenant.placement() {
        // The schema's name after the rename (see `steps`).
        let schema = if schema == tenant.id().as_str() { to.as_str() } else { schema.as_str() };
        settings.push_str(&format!("ALTER ROLE {quoted} SET search_path = {}; ", quote_ident(schema)));
    }
    settings.push_str(&marker::comment_sql(&format!("ROLE {quoted}"), &master_name, to));
    settings.push_str(&format!("; ALTER ROLE {quoted} LOGIN"));
    let sql = match (role_exists(db, old).await?, role_exists(db, new).await?) {
        (true, false) => {
            storage::login::close_login_role_in(tenancy, tenant, tenant.placement().shard(), old, wait).await?;
            format!("ALTER ROLE {} RENAME TO {quoted}; {settings}", quote_ident(old))
        }
        (false, true) => settings,
        (true, true) => return Err(fail(format!("both role '{old}' and role '{new}' exist").into())),
        (false, false) => return Err(fail(format!("neither role '{old}' nor role '{new}' exists").into())),
    };
    db.execute_unprepared(&sql).await.map_err(|err| fail(err.into()))?;
    Ok(())
}

/// Rewrites the marks tenancy wrote on a database tenant's database and role (an adopted
/// one carries none, and gets none).
async fn rewrite_database_marks(tenancy: &Tenancy, tenant: &Tenant, to: &TenantId) -> Result<(), BoxError> {
    let Placement::Database(TenantDatabase::Postgres(db)) = tenant.placement() else { return Ok(()) };
    if db.ownership != Ownership::Created {
        return Ok(());
    }
    let master_name = tenancy.master_identity().await?.1.clone();
    let old_mark = marker::comment(&master_name, tenant.id());
    let admin = crate::connection::url::connect(tenancy.admin_url_for(&db.host, db.port).await?.as_str(), None).await?;
    let result = async {
        for (kind, name, catalog) in [("DATABASE", &db.name, "pg_database"), ("ROLE", &db.user, "pg_authid")] {
            let column = if kind == "DATABASE" { "datname" } else { "rolname" };
            let view = if kind == "DATABASE" { "pg_database" } else { "pg_roles" };
            let row = admin
                .query_one_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    format!(
                        "SELECT coalesce(shobj_description(oid, {}), '') FROM pg_catalog.{view} WHERE {column} = $1",
                        quote_literal(catalog)
                    ),
                    [name.as_str().into()],
                ))
                .await?;
            let comment = row.map(|row| row.try_get_by_index::<String>(0)).transpose()?.unwrap_or_default();
            if comment == old_mark {
                let sql = marker::comment_sql(&format!("{kind} {}", quote_ident(name)), &master_name, to);
                admin.execute_unprepared(&sql).await?;
            }
        }
        Ok::<(), BoxError>(())
    }
    .await;
    let _ = admin.close().await;
    result
}

/// Moves the tenant's cache keys; a store that cannot move keys has the old namespace
/// cleared instead (derived data; a cache tenant was refused up front).
async fn move_cache(tenancy: &Tenancy, tenant: &Tenant, to: &TenantId) -> Result<u64> {
    let cache = tenancy.shared_cache();
    match cache.move_tenant(tenant.id(), to).await? {
        Some(moved) => Ok(moved),
        None => cache.tenant(tenant.id()).clear().await,
    }
}

/// The registry row's new id and placement (passwords re-encrypted for the new id), the
/// ledger's history, the end of the operation: one transaction.
async fn switch_registry(
    tenancy: &Tenancy,
    tenant: &Tenant,
    to: &TenantId,
    steps: &[RenameStep],
    held: &Held,
) -> Result<()> {
    let from = tenant.id();
    let placement = renamed_placement(tenancy, tenant, to, steps)?;
    let status = match tenant.status() {
        TenantStatus::Suspended => TenantStatus::Suspended,
        _ => TenantStatus::Ready,
    };
    let txn = tenancy.master().begin().await?;
    let updated = entity::Entity::update_many()
        .col_expr(entity::Column::TenantId, Expr::value(to.as_str()))
        .col_expr(entity::Column::Config, Expr::value(placement.to_stored()))
        .col_expr(entity::Column::Status, Expr::value(status))
        .col_expr(entity::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(entity::Column::TenantId.eq(from.as_str()))
        .exec(&txn)
        .await?;
    if updated.rows_affected != 1 {
        let _ = txn.rollback().await;
        return Err(Error::TenantNotFound { id: from.to_string() });
    }
    crate::ledger::rename_tenant(&txn, from, to).await?;
    // What moves left behind of the tenant is the renamed tenant's (`deletetenant NEW
    // --leftovers` removes it); the objects keep their names.
    {
        use crate::relocation::leftovers::{Entity as Leftovers, LeftoverColumn};
        Leftovers::update_many()
            .col_expr(LeftoverColumn::TenantId, Expr::value(to.as_str()))
            .filter(LeftoverColumn::TenantId.eq(from.as_str()))
            .exec(&txn)
            .await?;
    }
    held.from.finish_in(&txn).await?;
    held.to.finish_in(&txn).await?;
    txn.commit().await?;
    tenancy.registry_removed(from);
    if let Some(renamed) = tenancy.find_tenant(to).await? {
        tenancy.registry_changed(&renamed);
    }
    // The domains followed the id (the foreign key cascades).
    tenancy.domains_changed(to).await;
    Ok(())
}

/// Where the renamed tenant lives: the renamed schema and login role; every stored
/// password decrypted with the old id and encrypted again for the new one (each is bound
/// to its tenant's id, see [`crate::secrets`]).
fn renamed_placement(tenancy: &Tenancy, tenant: &Tenant, to: &TenantId, steps: &[RenameStep]) -> Result<Placement> {
    let from = tenant.id().as_str();
    // The key only when there is a password: a tenant without one (cache, SQLite file) is
    // renamed without a key file.
    let reencrypt = |secret: &crate::secrets::EncryptedSecret| -> Result<crate::secrets::EncryptedSecret> {
        let (key, _) = tenancy.secret_key()?;
        Ok(key.encrypt(&key.decrypt(secret, from)?, to.as_str()))
    };
    let login = |login: &Option<TenantLogin>| -> Result<Option<TenantLogin>> {
        let Some(login) = login else { return Ok(None) };
        let user = steps
            .iter()
            .find_map(|step| match step {
                RenameStep::LoginRole { to, .. } => Some(to.clone()),
                _ => None,
            })
            .unwrap_or_else(|| login.user.clone());
        Ok(Some(TenantLogin { user, password: reencrypt(&login.password)? }))
    };
    Ok(match tenant.placement() {
        Placement::Schema { schema, login: current, shard } => {
            let schema = steps
                .iter()
                .find_map(|step| match step {
                    RenameStep::Schema { to, .. } => Some(to.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| schema.clone());
            Placement::Schema { schema, login: login(current)?, shard: shard.clone() }
        }
        Placement::Table { login: current } => Placement::Table { login: login(current)? },
        Placement::Database(TenantDatabase::Postgres(db)) => {
            let mut db = db.clone();
            db.password = reencrypt(&db.password)?;
            Placement::Database(TenantDatabase::Postgres(db))
        }
        other => other.clone(),
    })
}
