//! Moving a tenant to another isolation mode or server with its data (`movetenant`):
//! the orchestration over the storage drivers and the copy engines, journaled like
//! creation and deletion ([`crate::operations`]).
//!
//! The order, each step journaled before it acts:
//!
//! 1. **freeze**: the registry row becomes `moving` (no process serves the tenant; the
//!    live registry closes its pools in every process) and the sessions of its own
//!    database or login role are ended;
//! 2. **provision**: the target storage is created by the driver of the new mode and
//!    migrated to the version the source is at (the source must be at the migrator's
//!    version: [`crate::ProvisionHooks::check_version`]), each object journaled for undo;
//! 3. **copy**: table by table, parents first, in one transaction of the target, the
//!    tenant column of every row set to the tenant's id; sequences moved past the copied
//!    keys; into shared tables a key another tenant holds stops the copy
//!    ([`crate::Error::KeyCollision`]);
//! 4. **verify**: row count and checksum of every table, source against copy;
//! 5. **switch**: one master transaction points the registry row at the copy, serves the
//!    tenant again, converts its login role (schema ↔ table) and records the source as a
//!    [`Leftover`] (or, with `drop_source`, journals it for removal);
//! 6. **drop source** (only with `drop_source`).
//!
//! A crash before the switch leaves the registry pointing at the source; running the same
//! move again removes the partial copy, then moves. After the switch the registry points
//! at the copy; running it again finishes dropping the source.

pub(crate) mod clone;
mod copy_postgres;
mod copy_sqlite;
pub(crate) mod leftovers;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{
    AccessMode, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, EntityTrait, IsolationLevel,
    QueryFilter, TransactionOptions, TransactionTrait,
};
use serde::Serialize;

pub use self::leftovers::Leftover;
use crate::connection::binding::{Binding, begin_bound, end_bound};
use crate::operations::{self, Guard, OperationKind, UndoEntry};
use crate::provisioning::{NewDatabase, NewTenant, ProvisionHooks, Run, ServerChoice};
use crate::registry::entity;
use crate::registry::placement::{Placement, ShardDatabase, TenantDatabase};
use crate::sql::quote_ident;
use crate::storage::{Plan, SessionsOf};
use crate::{Backend, BoxError, Error, Isolation, Result, Tenancy, Tenant, TenantId, TenantStatus};

/// The application migrator's history table: never copied (the target is migrated).
pub(crate) const MIGRATION_TABLE: &str = "seaql_migrations";

/// A table to copy, as the target has it.
#[derive(Clone, Debug)]
pub(crate) struct TableSpec {
    pub(crate) name: String,
    /// Columns a row is inserted with (generated ones are computed), in table order.
    pub(crate) columns: Vec<String>,
    /// The primary key's columns.
    pub(crate) key: Vec<String>,
    /// `(column, sequence)` of sequence-fed columns (serial and identity), PostgreSQL.
    pub(crate) sequences: Vec<(String, String)>,
    /// A `GENERATED ALWAYS AS IDENTITY` column is inserted with `OVERRIDING SYSTEM VALUE`.
    pub(crate) identity_always: bool,
    /// The tenant column, for tenant-scoped tables.
    pub(crate) tenant_column: Option<String>,
}

impl TableSpec {
    /// The insert's column list, quoted: `"id", "tenant_id", …`.
    pub(crate) fn column_list(&self) -> String {
        self.columns.iter().map(|c| crate::sql::quote_ident(c)).collect::<Vec<_>>().join(", ")
    }

    /// The select list that feeds the insert from rows named `row`: each column as read,
    /// the tenant column replaced by `new_id` (the parameter `placeholder`).
    pub(crate) fn select_list(&self, row: &str, placeholder: &str) -> String {
        self.columns
            .iter()
            .map(|c| match &self.tenant_column {
                Some(tenant_column) if tenant_column == c => placeholder.to_owned(),
                _ => format!("{row}.{}", crate::sql::quote_ident(c)),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The value bound to the placeholder of [`TableSpec::select_list`]: the new id, when
    /// the table has a tenant column (an unused parameter has no type to infer).
    pub(crate) fn tenant_value(&self, new_id: &str) -> Vec<sea_orm::Value> {
        self.tenant_column.as_ref().map(|_| new_id.into()).into_iter().collect()
    }
}

/// Rows copied of one table.
#[derive(Clone, Debug)]
pub(crate) struct Copied {
    pub(crate) rows: u64,
}

/// Row count and checksum of a tenant's rows of one table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Checksum {
    pub(crate) rows: u64,
    pub(crate) digest: String,
    /// Rows whose tenant column is not the expected tenant id.
    pub(crate) foreign: u64,
}

/// Where [`Tenancy::move_tenant`] takes a tenant.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum MoveTo {
    /// A database of its own: on another server, or (SQLite) a file beside the master.
    Database(NewDatabase),
    /// A schema named after the tenant (PostgreSQL), on the server the placement policy
    /// picks ([`Tenancy::pick_server`]; the master database when no other server is
    /// registered). A schema tenant stays on its server: this names no move for it.
    Schema,
    /// A schema named after the tenant on the named server: in the master database for
    /// the master's server, else in that server's shard database. A schema tenant moves
    /// between servers this way.
    SchemaOn(crate::servers::ServerName),
    /// The master's shared tables.
    Table,
}

impl MoveTo {
    /// Whether `tenant` is there already: a move to it has nothing to do (a move whose
    /// process died right after its switch, run again).
    pub fn holds(&self, tenant: &Tenant) -> bool {
        match (self, tenant.placement()) {
            (MoveTo::Schema, Placement::Schema { .. }) | (MoveTo::Table, Placement::Table { .. }) => true,
            (MoveTo::SchemaOn(server), Placement::Schema { shard, .. }) => {
                schema_server(shard.as_ref()) == server.as_str()
            }
            (MoveTo::Database(new), Placement::Database(TenantDatabase::Sqlite(db))) => db.name == new.name(),
            (MoveTo::Database(new), Placement::Database(TenantDatabase::Postgres(db))) => {
                db.name == new.name() && new.is_at(&db.host, db.port)
            }
            _ => false,
        }
    }

    /// The target with its server fixed: a server named by `--server`, or the placement
    /// policy's pick, becomes that server's address, so every step of the move (and
    /// [`MoveTo::holds`]) sees one place. A database tenant moved by policy into a
    /// database of the name it has stays on its server.
    ///
    /// # Errors
    /// [`Error::UnknownServer`], [`Error::ServerNotAccepting`] (a named server that is
    /// draining or down) or [`Error::NoActiveServer`], or a master database error.
    pub async fn pinned(&self, tenancy: &Tenancy, tenant: &Tenant) -> Result<MoveTo> {
        if tenancy.backend() != Backend::Postgres {
            return Ok(self.clone());
        }
        let new = match self {
            MoveTo::Database(new) => new,
            MoveTo::Table => return Ok(MoveTo::Table),
            MoveTo::Schema => {
                let server = match tenant.placement() {
                    // A schema tenant stays where it is (`holds`): a re-run after the
                    // switch finds it there.
                    Placement::Schema { shard, .. } => schema_server(shard.as_ref()).parse()?,
                    _ => tenancy.pick_server().await?.name,
                };
                return Ok(MoveTo::SchemaOn(server));
            }
            MoveTo::SchemaOn(name) => {
                // Where it is already (a re-run), or a server that takes new tenants.
                if !self.holds(tenant) {
                    tenancy.server_for_new_tenant(name).await?;
                }
                return Ok(self.clone());
            }
        };
        let (host, port) = match new.server_choice() {
            ServerChoice::Address { .. } => return Ok(self.clone()),
            ServerChoice::Named(name) => {
                // A draining or down server takes no tenant, moved ones included.
                let server = tenancy.server_for_new_tenant(name).await?;
                (server.host, server.port)
            }
            ServerChoice::Policy => match tenant.placement() {
                Placement::Database(TenantDatabase::Postgres(db)) if db.name == new.name() => {
                    (db.host.clone(), db.port)
                }
                _ => {
                    let server = tenancy.pick_server().await?;
                    (server.host, server.port)
                }
            },
        };
        Ok(MoveTo::Database(new.clone().server(host, port)))
    }

    /// The isolation mode the tenant will have.
    pub fn isolation(&self) -> Isolation {
        match self {
            MoveTo::Database(_) => Isolation::Database,
            MoveTo::Schema | MoveTo::SchemaOn(_) => Isolation::Schema,
            MoveTo::Table => Isolation::Table,
        }
    }
}

/// The name of the server a schema in `shard` (the master database: `None`) is on.
fn schema_server(shard: Option<&ShardDatabase>) -> &str {
    shard.map_or(crate::servers::MASTER_SERVER, |shard| shard.server.as_str())
}

/// Whether a move from `source` into `target` keeps the tenant's login role: between
/// schema and table isolation on the same server (the master's: table tenants live
/// there), where the switch converts it. Elsewhere the target gets a role of its own.
fn keeps_login(source: &Placement, target_isolation: Isolation, target_on_shard: bool) -> bool {
    let pair = matches!(
        (source, target_isolation),
        (Placement::Schema { .. }, Isolation::Table) | (Placement::Table { .. }, Isolation::Schema)
    );
    pair && source.shard().is_none() && !target_on_shard
}

/// A step of a move, as the journal and [`crate::ProvisionHooks::after_move_step`] name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum MoveStep {
    /// The tenant stops being served and its sessions end.
    Freeze,
    /// The target storage is created and migrated (its own steps are
    /// [`crate::ProvisionStep`]s).
    Provision,
    /// The rows are copied.
    Copy,
    /// The copy is verified.
    Verify,
    /// The registry points at the copy.
    Switch,
    /// The source is removed (`drop_source`).
    DropSource,
}

impl MoveStep {
    /// The step's name in the journal and in `TENANCY_FAULT_AFTER_STEP`.
    pub fn slug(self) -> &'static str {
        match self {
            MoveStep::Freeze => "freeze",
            MoveStep::Provision => "provision",
            MoveStep::Copy => "copy",
            MoveStep::Verify => "verify",
            MoveStep::Switch => "switch",
            MoveStep::DropSource => "drop-source",
        }
    }
}

impl fmt::Display for MoveStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MoveStep::Freeze => "freezing the tenant",
            MoveStep::Provision => "creating the new storage",
            MoveStep::Copy => "copying the rows",
            MoveStep::Verify => "verifying the copy",
            MoveStep::Switch => "switching the registry to the copy",
            MoveStep::DropSource => "dropping the old storage",
        })
    }
}

/// Progress of a move, for [`MoveOptions::on_event`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum MoveEvent<'a> {
    /// A step starts.
    Step(MoveStep),
    /// A table's copy progressed: `rows` of `total` copied.
    Table {
        /// The table.
        table: &'a str,
        /// Rows copied so far.
        rows: u64,
        /// Rows to copy.
        total: u64,
    },
}

/// A callback for each [`MoveEvent`].
pub type OnMoveEvent = Arc<dyn Fn(&MoveEvent<'_>) + Send + Sync>;

/// How [`Tenancy::move_tenant`] moves.
#[derive(Clone)]
pub struct MoveOptions {
    to: MoveTo,
    drop_source: bool,
    session_wait: Duration,
    on_event: Option<OnMoveEvent>,
}

impl fmt::Debug for MoveOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MoveOptions")
            .field("to", &self.to)
            .field("drop_source", &self.drop_source)
            .field("session_wait", &self.session_wait)
            .finish_non_exhaustive()
    }
}

impl MoveOptions {
    /// A move to `to`, keeping the source as a [`Leftover`].
    pub fn new(to: MoveTo) -> Self {
        MoveOptions { to, drop_source: false, session_wait: crate::deletion::DEFAULT_SESSION_WAIT, on_event: None }
    }

    /// Removes the source once the registry points at the copy, instead of keeping it.
    pub fn drop_source(mut self, drop: bool) -> Self {
        self.drop_source = drop;
        self
    }

    /// How long to wait for the sessions of the tenant's database or role to end.
    pub fn session_wait(mut self, wait: Duration) -> Self {
        self.session_wait = wait;
        self
    }

    /// Called as the move progresses.
    pub fn on_event(mut self, callback: OnMoveEvent) -> Self {
        self.on_event = Some(callback);
        self
    }

    /// Where the tenant goes.
    pub fn to(&self) -> &MoveTo {
        &self.to
    }

    fn event(&self, event: &MoveEvent<'_>) {
        if let Some(callback) = &self.on_event {
            callback(event);
        }
    }
}

/// One table of a move's plan.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct PlannedTable {
    /// The table.
    pub table: String,
    /// The tenant's rows.
    pub rows: u64,
    /// Their size in bytes (PostgreSQL: as stored; SQLite: the values' length).
    pub bytes: u64,
}

/// What a move would do ([`Tenancy::move_plan`]).
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct MovePlan {
    /// The tenant.
    pub tenant: TenantId,
    /// Its mode now.
    pub from: Isolation,
    /// Its mode after the move.
    pub to: Isolation,
    /// Where its data lives now.
    pub source: String,
    /// The tables to copy, parents first.
    pub tables: Vec<PlannedTable>,
    /// The source's objects, kept as leftovers (or dropped with `drop_source`).
    pub source_objects: Vec<UndoEntry>,
}

/// A verified table of a move.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct VerifiedTable {
    /// The table.
    pub table: String,
    /// Rows copied, equal at both ends.
    pub rows: u64,
    /// The checksum both ends had.
    pub checksum: String,
}

/// What [`Tenancy::move_tenant`] did.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Moved {
    /// The tenant, as the registry now holds it.
    #[serde(skip)]
    pub tenant: Tenant,
    /// Its id.
    #[serde(rename = "tenant")]
    pub id: TenantId,
    /// Its mode before.
    pub from: Isolation,
    /// Its mode now.
    pub to: Isolation,
    /// Each table copied and verified (empty when a re-run only finished dropping the
    /// source).
    pub tables: Vec<VerifiedTable>,
    /// The source's objects: kept as leftovers, or dropped.
    pub source_objects: Vec<UndoEntry>,
    /// Whether the source was dropped.
    pub source_dropped: bool,
    /// Whether this run resumed an interrupted move.
    pub resumed: bool,
    /// Whether the tenant was there already (nothing was done).
    pub already_there: bool,
}

/// How long a freeze lets the tenant's sessions end by themselves before ending them.
const FREEZE_GRACE: Duration = Duration::from_secs(2);

/// The journal's step of a move whose registry switch committed.
const SWITCHED: &str = "switched";

/// [`Tenancy::move_plan`].
pub(crate) async fn plan(tenancy: &Tenancy, id: &TenantId, to: &MoveTo) -> Result<MovePlan> {
    let tenant = tenancy.get_tenant(id).await?;
    let to = &to.pinned(tenancy, &tenant).await?;
    refuse_pair(tenancy, &tenant, to)?;
    let on_shard = matches!(to, MoveTo::SchemaOn(server) if !server.is_master());
    let tables = match tenancy.backend() {
        Backend::Postgres => {
            let side = PgSide::of(tenancy, &tenant).await?;
            let listed = match crate::storage::table::tenant_columns(tenancy).await {
                Ok(columns) => side.tables(tenancy, &columns).await,
                Err(err) => Err(err),
            };
            let sized = match listed {
                Ok(specs) => {
                    let sizes = copy_postgres::sizes(side.db(tenancy), &side.end, &specs).await;
                    sizes.map(|sizes| planned(&specs, sizes))
                }
                Err(err) => Err(err),
            };
            side.close().await;
            sized?
        }
        Backend::Sqlite => {
            let file = sqlite_file(tenancy, &tenant)?;
            let conn = copy_sqlite::open(&file, &file).await?;
            let end = sqlite_end(&tenant, "main");
            let names = shared_names(tenancy, &tenant).await?;
            let specs = copy_sqlite::tables(
                &conn,
                &end,
                &crate::storage::table::tenant_columns(tenancy).await?,
                names.as_deref(),
            )
            .await;
            let sized = match specs {
                Ok(specs) => copy_sqlite::sizes(&conn, &end, &specs).await.map(|sizes| planned(&specs, sizes)),
                Err(err) => Err(err),
            };
            let _ = conn.close().await;
            sized?
        }
    };
    Ok(MovePlan {
        tenant: id.clone(),
        from: tenant.isolation(),
        to: to.isolation(),
        source: crate::storage::describe(tenancy, &tenant),
        tables,
        source_objects: source_objects(tenancy, &tenant, keeps_login(tenant.placement(), to.isolation(), on_shard))
            .await?,
    })
}

fn planned(specs: &[TableSpec], sizes: Vec<(u64, u64)>) -> Vec<PlannedTable> {
    specs
        .iter()
        .zip(sizes)
        .map(|(spec, (rows, bytes))| PlannedTable { table: spec.name.clone(), rows, bytes })
        .collect()
}

/// Refuses a move this master cannot make, before anything is touched.
fn refuse_pair(tenancy: &Tenancy, tenant: &Tenant, to: &MoveTo) -> Result<()> {
    let refuse = |reason: String| Error::CannotRelocate { action: "move", tenant: tenant.id().to_string(), reason };
    let (from, into) = (tenant.isolation(), to.isolation());
    if from == Isolation::Cache {
        return Err(refuse("a cache tenant has no relational storage to move".to_owned()));
    }
    if into == Isolation::Schema && tenancy.backend() == Backend::Sqlite {
        return Err(refuse(
            "schema isolation needs a PostgreSQL master; on SQLite move to database or table".to_owned(),
        ));
    }
    if let (Placement::Schema { shard, .. }, MoveTo::SchemaOn(server)) = (tenant.placement(), to)
        && schema_server(shard.as_ref()) == server.as_str()
    {
        return Err(refuse(format!("it is a schema tenant on server '{server}' already")));
    }
    if from == into && !matches!(from, Isolation::Database | Isolation::Schema) {
        return Err(refuse(format!("it is a {from} tenant already")));
    }
    if from == Isolation::Schema && matches!(to, MoveTo::Schema) {
        return Err(refuse("it is a schema tenant already; name another server to move it to".to_owned()));
    }
    if let (Placement::Database(TenantDatabase::Sqlite(current)), MoveTo::Database(new)) = (tenant.placement(), to)
        && current.name == new.name()
    {
        return Err(refuse(format!("it lives in database '{}' already", current.name)));
    }
    if let (Placement::Database(TenantDatabase::Postgres(current)), MoveTo::Database(new)) = (tenant.placement(), to)
        && current.name == new.name()
        && new.is_at(&current.host, current.port)
    {
        return Err(refuse(format!("it lives in database '{}' on {} already", current.name, current.server())));
    }
    if let MoveTo::Database(new) = to
        && !new.creates()
    {
        return Err(refuse(
            "a move copies into a database it creates; an existing database cannot be adopted".to_owned(),
        ));
    }
    Ok(())
}

/// The new-tenant description of the target: the tenant's id and name in the new mode,
/// migrated.
fn target_of(tenant: &Tenant, to: &MoveTo) -> Result<NewTenant> {
    let new = NewTenant::new(tenant.id().clone(), tenant.name(), to.isolation())?.migrate(true);
    Ok(match to {
        MoveTo::Database(database) => new.database(database.clone()),
        MoveTo::SchemaOn(server) => new.on_server(server.clone()),
        MoveTo::Schema => new,
        MoveTo::Table => new,
    })
}

/// [`Tenancy::move_tenant`].
pub(crate) async fn move_tenant(
    tenancy: &Tenancy,
    id: &TenantId,
    options: &MoveOptions,
    hooks: &dyn ProvisionHooks,
) -> Result<Moved> {
    let tenant = tenancy.get_tenant(id).await?;
    crate::entry::record_isolation(tenant.isolation());
    let to = &options.to.pinned(tenancy, &tenant).await?;
    let new = target_of(&tenant, to)?;
    let params = serde_json::json!({ "to": new.journal_params(), "drop_source": options.drop_source });
    let begun = operations::begin(tenancy, OperationKind::Move, id, params).await?;
    let mut guard = begun.guard;
    let resumed = begun.resumed.is_some();
    if let Some(stale) = &begun.resumed {
        if stale.step.as_deref().is_some_and(|step| step == SWITCHED || step.starts_with("drop ")) {
            tracing::warn!(tenant = %id, "finishing an interrupted movetenant: dropping the old storage");
            let objects = guard.undo_entries().to_vec();
            drop_source(tenancy, id, &mut guard, &objects).await?;
            guard.finish(tenancy).await?;
            let now = tenancy.get_tenant(id).await?;
            return Ok(Moved {
                id: id.clone(),
                from: tenant.isolation(),
                to: now.isolation(),
                tenant: now,
                tables: Vec::new(),
                source_objects: objects,
                source_dropped: true,
                resumed,
                already_there: false,
            });
        }
        tracing::warn!(tenant = %id, step = ?stale.step, "rolling back an interrupted movetenant before moving again");
        if let Err(err) = roll_back(tenancy, id, &mut guard).await {
            guard.abandon().await;
            return Err(err);
        }
    }
    // Run again after a move that finished (its process died right after the switch):
    // there is nothing left to do.
    let now = tenancy.get_tenant(id).await?;
    if to.holds(&now) && now.status() != TenantStatus::Moving {
        guard.finish(tenancy).await?;
        return Ok(Moved {
            id: id.clone(),
            from: now.isolation(),
            to: now.isolation(),
            tenant: now,
            tables: Vec::new(),
            source_objects: Vec::new(),
            source_dropped: false,
            resumed,
            already_there: true,
        });
    }
    if let Err(err) = refuse_pair(tenancy, &tenant, to) {
        guard.finish(tenancy).await?;
        return Err(err);
    }
    match move_planned(tenancy, &new, options, hooks, &mut guard, resumed).await {
        Ok(moved) => {
            guard.finish(tenancy).await?;
            Ok(moved)
        }
        // Nothing of the move is left (never started, or rolled back): the operation is over.
        Err(Unfinished::RolledBack(err)) => {
            guard.finish(tenancy).await?;
            Err(err)
        }
        // A roll-back that failed, or a failure after the switch: a re-run settles it.
        Err(Unfinished::Kept(err)) => {
            guard.abandon().await;
            Err(err)
        }
    }
}

/// How a failed move leaves its operation.
enum Unfinished {
    /// Nothing of the move remains: the operation is closed.
    RolledBack(Error),
    /// The journal keeps it for a re-run.
    Kept(Error),
}

impl From<Error> for Unfinished {
    fn from(err: Error) -> Self {
        Unfinished::RolledBack(err)
    }
}

async fn move_planned(
    tenancy: &Tenancy,
    new: &NewTenant,
    options: &MoveOptions,
    hooks: &dyn ProvisionHooks,
    guard: &mut Guard,
    resumed: bool,
) -> Result<Moved, Unfinished> {
    let id = new.id();
    // The tenant as it is now (a roll-back may just have served it again).
    let tenant = tenancy.get_tenant(id).await?;
    if !matches!(tenant.status(), TenantStatus::Ready | TenantStatus::Suspended) {
        return Err(Error::TenantNotReady { tenant: id.to_string(), status: tenant.status() }.into());
    }
    let left = leftovers::list(tenancy, Some(id)).await?;
    if !left.is_empty() {
        let objects: Vec<String> = left.iter().map(|l| l.object.to_string()).collect();
        let count = left.len();
        return Err(Error::LeftoversRemain { tenant: id.to_string(), count, objects: objects.join(", ") }.into());
    }
    hooks.check_version(tenancy, &tenant).await.map_err(|source| Error::MoveFailed {
        tenant: id.to_string(),
        step: "checking the tenant's migrations".to_owned(),
        source,
    })?;
    let mut plan = Plan::new(tenancy, new).await?;
    // Between schema and table isolation on one server the tenant keeps its login role:
    // the switch converts it.
    let on_shard = matches!(&plan, Plan::Schema(plan) if plan.on_shard());
    if keeps_login(tenant.placement(), new.isolation(), on_shard) {
        match (&mut plan, tenant.placement().login()) {
            (Plan::Schema(plan), Some(login)) => plan.keep_login(id, login.clone()),
            (Plan::Table(plan), Some(login)) => plan.keep_login(id, login.clone()),
            _ => {}
        }
    }
    let result = match plan.check_free(tenancy).await {
        Ok(()) => run(tenancy, &tenant, &plan, options, hooks, guard, resumed).await,
        Err(err) => Err(err.into()),
    };
    plan.close().await;
    result
}

/// The steps; before the switch any failure is rolled back here.
async fn run(
    tenancy: &Tenancy,
    tenant: &Tenant,
    plan: &Plan,
    options: &MoveOptions,
    hooks: &dyn ProvisionHooks,
    guard: &mut Guard,
    resumed: bool,
) -> Result<Moved, Unfinished> {
    let id = tenant.id();
    let step_failed =
        |step: MoveStep, source: BoxError| Error::MoveFailed { tenant: id.to_string(), step: step.to_string(), source };
    let target = Tenant::provisioning(id.clone(), tenant.name().to_owned(), plan.placement());

    let before_switch = async {
        begin_step(tenancy, guard, options, MoveStep::Freeze).await?;
        freeze(tenancy, tenant, options.session_wait).await?;
        after_step(hooks, MoveStep::Freeze).map_err(|source| step_failed(MoveStep::Freeze, source))?;

        begin_step(tenancy, guard, options, MoveStep::Provision).await?;
        provision(tenancy, plan, &target, hooks, guard).await?;
        after_step(hooks, MoveStep::Provision).map_err(|source| step_failed(MoveStep::Provision, source))?;

        begin_step(tenancy, guard, options, MoveStep::Copy).await?;
        let specs = copy(tenancy, tenant, &target, id.as_str(), options).await?;
        after_step(hooks, MoveStep::Copy).map_err(|source| step_failed(MoveStep::Copy, source))?;

        begin_step(tenancy, guard, options, MoveStep::Verify).await?;
        let verified = verify(tenancy, tenant, &target, &specs, id.as_str()).await?;
        after_step(hooks, MoveStep::Verify).map_err(|source| step_failed(MoveStep::Verify, source))?;
        Ok::<_, Error>(verified)
    };
    let verified = match before_switch.await {
        Ok(verified) => verified,
        Err(err) => {
            return match roll_back(tenancy, id, guard).await {
                Ok(()) => Err(Unfinished::RolledBack(err)),
                Err(rollback) => Err(Unfinished::Kept(Error::MoveFailed {
                    tenant: id.to_string(),
                    step: format!("rolling back ({err})"),
                    source: Box::new(rollback),
                })),
            };
        }
    };

    // A failure from here on leaves the journal to the re-run: before the switch commits
    // it rolls back, after it it finishes.
    let kept = |err: Error| Unfinished::Kept(err);
    begin_step(tenancy, guard, options, MoveStep::Switch).await.map_err(kept)?;
    let keeps = keeps_login(tenant.placement(), target.isolation(), target.placement().shard().is_some());
    let objects = source_objects(tenancy, tenant, keeps).await.map_err(kept)?;
    let moved = switch(tenancy, tenant, &target, keeps, &objects, options.drop_source, guard).await.map_err(kept)?;
    if let Err(source) = after_step(hooks, MoveStep::Switch) {
        return Err(kept(step_failed(MoveStep::Switch, source)));
    }
    let mut report = Moved {
        id: id.clone(),
        from: tenant.isolation(),
        to: moved.isolation(),
        tenant: moved,
        tables: verified,
        source_objects: objects.clone(),
        source_dropped: false,
        resumed,
        already_there: false,
    };
    if options.drop_source {
        options.event(&MoveEvent::Step(MoveStep::DropSource));
        drop_source(tenancy, id, guard, &objects).await.map_err(kept)?;
        report.source_dropped = true;
    }
    Ok(report)
}

async fn begin_step(tenancy: &Tenancy, guard: &Guard, options: &MoveOptions, step: MoveStep) -> Result<()> {
    options.event(&MoveEvent::Step(step));
    guard.step(tenancy, step.slug()).await
}

fn after_step(hooks: &dyn ProvisionHooks, step: MoveStep) -> Result<(), BoxError> {
    hooks.after_move_step(step.slug())
}

/// Stops serving the tenant: `moving` in the registry (every process's live registry
/// closes its pools), then its own sessions ended.
async fn freeze(tenancy: &Tenancy, tenant: &Tenant, wait: Duration) -> Result<()> {
    let id = tenant.id();
    crate::deletion::mark(tenancy, id, TenantStatus::Moving).await?;
    tenancy.reset_tenant_pool(id);
    // Servers stop serving the tenant as soon as their live registry hears of it, and
    // close its pools once their requests in flight are done: give them that moment before
    // ending what is left, so a request under way finishes instead of failing.
    let grace = wait.min(FREEZE_GRACE);
    let remaining = match tenant.placement() {
        Placement::Database(TenantDatabase::Postgres(db)) => {
            let admin =
                crate::connection::url::connect(tenancy.admin_url_for(&db.host, db.port).await?.as_str(), None).await?;
            let drained = crate::storage::drain_sessions(&admin, SessionsOf::Database(&db.name), grace).await;
            let remaining = match drained {
                Ok(()) => crate::storage::end_sessions(&admin, SessionsOf::Database(&db.name), wait).await,
                Err(err) => Err(err),
            };
            let _ = admin.close().await;
            remaining.map(|n| (n, format!("database {}", db.name)))?
        }
        placement => match placement.login() {
            Some(login) => {
                let shard = placement.shard();
                let home = crate::storage::shard::Home::open(tenancy, shard).await?;
                let drained =
                    crate::storage::drain_sessions(home.db(tenancy), SessionsOf::Role(&login.user), grace).await;
                home.close().await;
                drained?;
                // The role may not log in while the rows are copied (a client outside
                // tenancy holding its password included); the switch or a roll-back lets
                // it in again. Its sessions are ended; if some remain, it may log in again
                // and the move stops.
                crate::storage::login::close_login_role_in(tenancy, tenant, shard, &login.user, wait).await?;
                (0, String::new())
            }
            None => (0, String::new()),
        },
    };
    if remaining.0 > 0 {
        return Err(Error::SessionsRemain {
            tenant: id.to_string(),
            database: remaining.1,
            sessions: remaining.0,
            waited_secs: wait.as_secs(),
        });
    }
    Ok(())
}

/// Serves the tenant again from where it was: `suspended` if it was, else `ready`.
async fn unfreeze(tenancy: &Tenancy, id: &TenantId) -> Result<()> {
    let Some(row) = entity::Entity::find_by_id(id.as_str()).one(tenancy.master()).await? else {
        return Ok(());
    };
    if row.status != TenantStatus::Moving {
        return Ok(());
    }
    let status = if row.suspended_at.is_some() { TenantStatus::Suspended } else { TenantStatus::Ready };
    // The login role the freeze closed opens again (before the tenant is served), on its
    // server.
    let tenant = Tenant::from_row(row)?;
    if let Some(login) = tenant.placement().login() {
        let home = crate::storage::shard::Home::open(tenancy, tenant.placement().shard()).await?;
        let opened = open_login_role(home.db(tenancy), &login.user).await;
        home.close().await;
        opened?;
    }
    crate::deletion::mark(tenancy, id, status).await
}

/// `ALTER ROLE … LOGIN`, if the role exists.
async fn open_login_role<C: ConnectionTrait>(db: &C, role: &str) -> Result<()> {
    let statement = crate::sql::quote_literal(&format!("ALTER ROLE {} LOGIN", quote_ident(role)));
    db.execute_unprepared(&format!(
        "DO $tenancy$ BEGIN \
           IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = {}) THEN EXECUTE {statement}; END IF; \
         END $tenancy$",
        crate::sql::quote_literal(role)
    ))
    .await?;
    Ok(())
}

/// Removes what the move made (newest first) and serves the tenant from its source again.
async fn roll_back(tenancy: &Tenancy, id: &TenantId, guard: &mut Guard) -> Result<()> {
    let leftovers = crate::provisioning::undo(tenancy, id, guard.undo_entries()).await;
    if !leftovers.is_empty() {
        return Err(Error::RollbackFailed {
            tenant: id.to_string(),
            step: crate::ProvisionStep::ClaimId,
            leftovers: leftovers.join(", "),
            source: "could not remove the partial copy of an interrupted move".into(),
        });
    }
    guard.clear_undo(tenancy).await?;
    unfreeze(tenancy, id).await
}

/// Creates and migrates the target storage, each object journaled before it is made.
async fn provision(
    tenancy: &Tenancy,
    plan: &Plan,
    target: &Tenant,
    hooks: &dyn ProvisionHooks,
    guard: &mut Guard,
) -> Result<()> {
    let id = target.id();
    let failed = |(step, source): (crate::ProvisionStep, BoxError)| Error::ProvisioningFailed {
        tenant: id.to_string(),
        step,
        source,
    };
    let mut run = Run::new(tenancy, hooks, guard);
    plan.create_role(tenancy, &mut run).await.map_err(failed)?;
    let txn = match plan.transaction_home(tenancy) {
        Some((home, _)) => Some(home.begin().await?),
        None => None,
    };
    let made = async {
        plan.create(tenancy, &mut run, txn.as_ref()).await?;
        run.step(crate::ProvisionStep::Migrate, None, async {
            hooks.migrate(tenancy, target, txn.as_ref()).await?;
            Ok(())
        })
        .await
    }
    .await;
    match (made, txn) {
        (Ok(()), Some(txn)) => txn.commit().await.map_err(Into::into),
        (Ok(()), None) => Ok(()),
        (Err(err), txn) => {
            if let Some(txn) = txn {
                let _ = txn.rollback().await;
            }
            Err(failed(err))
        }
    }
}

/// One PostgreSQL end of a copy: its connection and which rows are the tenant's.
struct PgSide {
    /// A connection of its own (a tenant database), closed afterwards; `None`: the master.
    own: Option<DatabaseConnection>,
    end: copy_postgres::End,
}

impl PgSide {
    async fn of(tenancy: &Tenancy, tenant: &Tenant) -> Result<PgSide> {
        let id = tenant.id().to_string();
        match tenant.placement() {
            // The shard database, as its server's admin.
            Placement::Schema { schema, shard: Some(_), .. } => {
                let own = crate::storage::migration_target(tenancy, tenant).await?;
                Ok(PgSide { own, end: copy_postgres::End { schema: schema.clone(), shared_by: None } })
            }
            Placement::Database(TenantDatabase::Postgres(_)) => {
                let own = crate::storage::migration_target(tenancy, tenant).await?;
                Ok(PgSide { own, end: copy_postgres::End { schema: "public".to_owned(), shared_by: None } })
            }
            Placement::Schema { schema, .. } => {
                Ok(PgSide { own: None, end: copy_postgres::End { schema: schema.clone(), shared_by: None } })
            }
            Placement::Table { .. } => {
                Ok(PgSide { own: None, end: copy_postgres::End { schema: "public".to_owned(), shared_by: Some(id) } })
            }
            _ => Err(Error::CannotRelocate {
                action: "move",
                tenant: id,
                reason: "its storage is not on PostgreSQL".to_owned(),
            }),
        }
    }

    fn db<'a>(&'a self, tenancy: &'a Tenancy) -> &'a DatabaseConnection {
        self.own.as_ref().unwrap_or(tenancy.master())
    }

    /// A transaction on this end: bound to the tenant for shared tables (row-level
    /// security then shows and takes its rows only).
    async fn begin(&self, tenancy: &Tenancy, read_only: bool) -> Result<DatabaseTransaction> {
        let options = TransactionOptions {
            isolation_level: Some(IsolationLevel::RepeatableRead),
            access_mode: Some(if read_only { AccessMode::ReadOnly } else { AccessMode::ReadWrite }),
            sqlite_transaction_mode: None,
        };
        Ok(match &self.end.shared_by {
            Some(id) => begin_bound(tenancy, id, &Binding::Table, options).await?,
            None => self.db(tenancy).begin_with_options(options).await?,
        })
    }

    async fn end(&self, tenancy: &Tenancy, txn: DatabaseTransaction) -> Result<()> {
        match self.end.shared_by {
            Some(_) => end_bound(txn, tenancy).await?,
            None => txn.commit().await?,
        }
        Ok(())
    }

    /// The tenant's tables at this end.
    /// `columns`: the tenant column of every tenant-scoped table (read once per copy).
    async fn tables(&self, tenancy: &Tenancy, columns: &BTreeMap<String, String>) -> Result<Vec<TableSpec>> {
        let only: Option<Vec<String>> = self.end.shared_by.as_ref().map(|_| columns.keys().cloned().collect());
        copy_postgres::tables(self.db(tenancy), &self.end.schema, columns, only.as_deref()).await
    }

    async fn close(self) {
        if let Some(own) = self.own {
            let _ = own.close().await;
        }
    }
}

/// The shared tables' names for a table tenant (the only tables that are its), `None`
/// for a tenant whose every table is its own.
async fn shared_names(tenancy: &Tenancy, tenant: &Tenant) -> Result<Option<Vec<String>>> {
    Ok(match tenant.placement() {
        Placement::Table { .. } => Some(crate::storage::table::tenant_tables(tenancy).await?.into_keys().collect()),
        _ => None,
    })
}

/// The SQLite file of a tenant's storage: its own, or the master's.
fn sqlite_file(tenancy: &Tenancy, tenant: &Tenant) -> Result<std::path::PathBuf> {
    let dir = tenancy.sqlite_dir().ok_or_else(|| Error::CannotRelocate {
        action: "move",
        tenant: tenant.id().to_string(),
        reason: "an in-memory SQLite master has no files to move between".to_owned(),
    })?;
    Ok(match tenant.placement() {
        Placement::Database(TenantDatabase::Sqlite(db)) => db.file_in(dir),
        _ => dir.join(tenancy.master_url().sqlite_file_name().unwrap_or_default()),
    })
}

fn sqlite_end(tenant: &Tenant, db: &'static str) -> copy_sqlite::End {
    let shared_by = matches!(tenant.placement(), Placement::Table { .. }).then(|| tenant.id().to_string());
    copy_sqlite::End { db, shared_by }
}

/// The tables to copy, as the target has them: every table of the source that is the
/// tenant's. Refuses a table the target lacks, and rows that shared tables could not keep
/// apart (a table without a tenant column).
fn tables_to_copy(
    tenant: &Tenant,
    target: &Tenant,
    source: &[TableSpec],
    source_rows: &[(u64, u64)],
    target_specs: Vec<TableSpec>,
) -> Result<Vec<TableSpec>> {
    let refuse = |reason: String| Error::CannotRelocate { action: "move", tenant: tenant.id().to_string(), reason };
    let shared_target = target.isolation() == Isolation::Table;
    let mut copy = Vec::new();
    for (spec, (rows, _)) in source.iter().zip(source_rows) {
        if shared_target && spec.tenant_column.is_none() {
            if *rows > 0 {
                return Err(refuse(format!(
                    "table '{}' has no tenant column, so its {rows} row(s) cannot be kept apart in the shared tables",
                    spec.name
                )));
            }
            continue;
        }
        if !target_specs.iter().any(|t| t.name == spec.name) {
            return Err(refuse(format!(
                "the new storage has no table '{}' after its migrations: the source has tables the migrator does not make",
                spec.name
            )));
        }
    }
    let wanted: Vec<&str> = copy_names(source, source_rows, shared_target);
    for spec in target_specs {
        if wanted.contains(&spec.name.as_str()) {
            copy.push(spec);
        }
    }
    Ok(copy)
}

fn copy_names<'a>(source: &'a [TableSpec], rows: &[(u64, u64)], shared_target: bool) -> Vec<&'a str> {
    source
        .iter()
        .zip(rows)
        .filter(|(spec, _)| !(shared_target && spec.tenant_column.is_none()))
        .map(|(spec, _)| spec.name.as_str())
        .collect()
}

/// Copies the tenant's rows from `source` to `target` (a tenant of the same id, or a
/// clone's), the tenant column set to `new_id`; returns the tables copied, as the target
/// has them.
pub(crate) async fn copy(
    tenancy: &Tenancy,
    source: &Tenant,
    target: &Tenant,
    new_id: &str,
    options: &MoveOptions,
) -> Result<Vec<TableSpec>> {
    match tenancy.backend() {
        Backend::Postgres => {
            let from = PgSide::of(tenancy, source).await?;
            let into = match PgSide::of(tenancy, target).await {
                Ok(into) => into,
                Err(err) => {
                    from.close().await;
                    return Err(err);
                }
            };
            let copied = copy_pg(tenancy, source, target, &from, &into, new_id, options).await;
            from.close().await;
            into.close().await;
            copied
        }
        Backend::Sqlite => {
            let conn = copy_sqlite::open(&sqlite_file(tenancy, target)?, &sqlite_file(tenancy, source)?).await?;
            let copied = copy_lite(tenancy, source, target, &conn, new_id).await;
            let _ = conn.close().await;
            copied
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn copy_pg(
    tenancy: &Tenancy,
    source: &Tenant,
    target: &Tenant,
    from: &PgSide,
    into: &PgSide,
    new_id: &str,
    options: &MoveOptions,
) -> Result<Vec<TableSpec>> {
    let columns = crate::storage::table::tenant_columns(tenancy).await?;
    let source_specs = from.tables(tenancy, &columns).await?;
    let rows = copy_postgres::sizes(from.db(tenancy), &from.end, &source_specs).await?;
    let names: Vec<String> = source_specs.iter().map(|s| s.name.clone()).collect();
    let target_specs = copy_postgres::tables(into.db(tenancy), &into.end.schema, &columns, Some(&names)).await?;
    let specs = tables_to_copy(source, target, &source_specs, &rows, target_specs)?;
    let totals: Vec<u64> = specs
        .iter()
        .map(|s| source_specs.iter().zip(&rows).find(|(t, _)| t.name == s.name).map_or(0, |(_, r)| r.0))
        .collect();

    let src = from.begin(tenancy, true).await?;
    let dst = match into.begin(tenancy, false).await {
        Ok(dst) => dst,
        Err(err) => {
            let _ = src.rollback().await;
            return Err(err);
        }
    };
    let written = async {
        copy_postgres::clear(&dst, &into.end, &specs).await?;
        let mut maxima = Vec::new();
        for (spec, total) in specs.iter().zip(&totals) {
            let mut progress = |rows: u64| options.event(&MoveEvent::Table { table: &spec.name, rows, total: *total });
            copy_postgres::copy_table(
                &src,
                &from.end,
                &dst,
                &into.end,
                spec,
                source.id().as_str(),
                new_id,
                &mut progress,
            )
            .await?;
            maxima.extend(copy_postgres::sequence_maxima(&dst, &into.end, spec).await?);
        }
        Ok::<_, Error>(maxima)
    }
    .await;
    let _ = src.rollback().await;
    let maxima = match written {
        Ok(maxima) => {
            into.end(tenancy, dst).await?;
            maxima
        }
        Err(err) => {
            let _ = dst.rollback().await;
            return Err(err);
        }
    };
    // Sequences of a tenant database are its role's; the master's are the master user's.
    copy_postgres::advance_sequences(into.db(tenancy), &maxima).await?;
    Ok(specs)
}

async fn copy_lite(
    tenancy: &Tenancy,
    source: &Tenant,
    target: &Tenant,
    conn: &DatabaseConnection,
    new_id: &str,
) -> Result<Vec<TableSpec>> {
    let (from, into) = (sqlite_end(source, "src"), sqlite_end(target, "main"));
    let into = copy_sqlite::End { shared_by: into.shared_by.map(|_| new_id.to_owned()), ..into };
    let columns = crate::storage::table::tenant_columns(tenancy).await?;
    let names = shared_names(tenancy, source).await?;
    let source_specs = copy_sqlite::tables(conn, &from, &columns, names.as_deref()).await?;
    let rows = copy_sqlite::sizes(conn, &from, &source_specs).await?;
    let wanted: Vec<String> = source_specs.iter().map(|s| s.name.clone()).collect();
    let target_specs = copy_sqlite::tables(conn, &into, &columns, Some(&wanted)).await?;
    let specs = tables_to_copy(source, target, &source_specs, &rows, target_specs)?;
    let txn = conn.begin().await?;
    let written = async {
        copy_sqlite::clear(&txn, &into, &specs).await?;
        for spec in &specs {
            copy_sqlite::copy_table(&txn, &from, &into, spec, source.id().as_str(), new_id).await?;
        }
        Ok::<_, Error>(())
    }
    .await;
    match written {
        Ok(()) => txn.commit().await?,
        Err(err) => {
            let _ = txn.rollback().await;
            return Err(err);
        }
    }
    Ok(specs)
}

/// Compares every copied table's rows and checksum at both ends.
pub(crate) async fn verify(
    tenancy: &Tenancy,
    source: &Tenant,
    target: &Tenant,
    specs: &[TableSpec],
    new_id: &str,
) -> Result<Vec<VerifiedTable>> {
    let mut sums = Vec::with_capacity(specs.len());
    match tenancy.backend() {
        Backend::Postgres => {
            let from = PgSide::of(tenancy, source).await?;
            let into = PgSide::of(tenancy, target).await?;
            let summed = async {
                let src = from.begin(tenancy, true).await?;
                let dst = into.begin(tenancy, true).await?;
                src.execute_unprepared(copy_postgres::CHECKSUM_SETTINGS).await?;
                dst.execute_unprepared(copy_postgres::CHECKSUM_SETTINGS).await?;
                for spec in specs {
                    let a = copy_postgres::checksum(&src, &from.end, spec, source.id().as_str()).await?;
                    let b = copy_postgres::checksum(&dst, &into.end, spec, new_id).await?;
                    sums.push((spec.name.clone(), a, b));
                }
                from.end(tenancy, src).await?;
                into.end(tenancy, dst).await?;
                Ok::<_, Error>(())
            }
            .await;
            from.close().await;
            into.close().await;
            summed?;
        }
        Backend::Sqlite => {
            let conn = copy_sqlite::open(&sqlite_file(tenancy, target)?, &sqlite_file(tenancy, source)?).await?;
            let (from, into) = (sqlite_end(source, "src"), sqlite_end(target, "main"));
            let into = copy_sqlite::End { shared_by: into.shared_by.map(|_| new_id.to_owned()), ..into };
            let summed = async {
                for spec in specs {
                    let a = copy_sqlite::checksum(&conn, &from, spec, source.id().as_str()).await?;
                    let b = copy_sqlite::checksum(&conn, &into, spec, new_id).await?;
                    sums.push((spec.name.clone(), a, b));
                }
                Ok::<_, Error>(())
            }
            .await;
            let _ = conn.close().await;
            summed?;
        }
    }
    let mut verified = Vec::with_capacity(sums.len());
    for (table, a, b) in sums {
        if a.rows != b.rows || a.digest != b.digest || b.foreign > 0 {
            return Err(Error::CopyMismatch {
                tenant: source.id().to_string(),
                table,
                source_rows: a.rows,
                target_rows: b.rows,
                source_digest: a.digest,
                target_digest: b.digest,
                foreign_rows: b.foreign,
            });
        }
        verified.push(VerifiedTable { table, rows: b.rows, checksum: b.digest });
    }
    Ok(verified)
}

/// The source's objects a move leaves behind, in the order they are removed.
/// `keeps_login`: the target keeps the source's login role ([`keeps_login`]).
async fn source_objects(tenancy: &Tenancy, tenant: &Tenant, keeps_login: bool) -> Result<Vec<UndoEntry>> {
    let mut objects = Vec::new();
    match tenant.placement() {
        Placement::Database(TenantDatabase::Postgres(db)) if db.ownership.created_by_tenancy() => {
            objects.push(UndoEntry::Database { name: db.name.clone(), host: db.host.clone(), port: db.port });
            objects.push(UndoEntry::Role { name: db.user.clone(), host: db.host.clone(), port: db.port });
        }
        Placement::Database(TenantDatabase::Sqlite(db)) if db.ownership.created_by_tenancy() => {
            if let Some(dir) = tenancy.sqlite_dir() {
                objects.push(UndoEntry::File { path: db.file_in(dir) });
            }
        }
        // An adopted database is the operator's: it is detached, never listed to drop.
        Placement::Database(_) => {}
        Placement::Schema { schema, login, shard } => {
            objects.push(UndoEntry::Schema { name: schema.clone(), shard: shard.clone() });
            if let (Some(login), false) = (login, keeps_login) {
                objects.push(UndoEntry::LoginRole { name: login.user.clone(), shard: shard.clone() });
            }
        }
        Placement::Table { login } => {
            for removal in crate::storage::table::removals(tenancy, tenant.id(), None).await? {
                if let crate::deletion::Removal::Rows { table, column, .. } = removal {
                    objects.push(UndoEntry::Rows { table, column });
                }
            }
            if let (Some(login), false) = (login, keeps_login) {
                objects.push(UndoEntry::LoginRole { name: login.user.clone(), shard: None });
            }
        }
        Placement::Cache => {}
    }
    Ok(objects)
}

/// Points the registry at the copy and serves the tenant again, in one master
/// transaction with the login role's conversion (`keeps_login`) and the source's record
/// (leftovers, or the journal's list to drop).
#[allow(clippy::too_many_arguments)]
async fn switch(
    tenancy: &Tenancy,
    tenant: &Tenant,
    target: &Tenant,
    keeps_login: bool,
    objects: &[UndoEntry],
    drop_source: bool,
    guard: &mut Guard,
) -> Result<Tenant> {
    let id = tenant.id();
    let row = entity::Entity::find_by_id(id.as_str()).one(tenancy.master()).await?;
    let status = match row.and_then(|row| row.suspended_at) {
        Some(_) => TenantStatus::Suspended,
        None => TenantStatus::Ready,
    };
    let txn = tenancy.master().begin().await?;
    let switched = async {
        let updated = entity::Entity::update_many()
            .col_expr(entity::Column::IsolationType, Expr::value(target.isolation()))
            .col_expr(entity::Column::Config, Expr::value(target.placement().to_stored()))
            .col_expr(entity::Column::Status, Expr::value(status))
            .col_expr(entity::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(entity::Column::TenantId.eq(id.as_str()))
            .filter(entity::Column::Status.eq(TenantStatus::Moving))
            .exec(&txn)
            .await?;
        if updated.rows_affected != 1 {
            return Err(Error::TenantNotReady { tenant: id.to_string(), status: TenantStatus::Moving });
        }
        if keeps_login {
            convert_login(&txn, tenant, target).await?;
        }
        if drop_source {
            guard.replace_in(&txn, SWITCHED, objects.to_vec()).await?;
        } else {
            let reason = format!("moved from {} to {} isolation", tenant.isolation(), target.isolation());
            leftovers::record(&txn, id, objects, &reason).await?;
            guard.finish_in(&txn).await?;
        }
        Ok::<_, Error>(())
    }
    .await;
    match switched {
        Ok(()) => txn.commit().await?,
        Err(err) => {
            let _ = txn.rollback().await;
            return Err(err);
        }
    }
    tenancy.reset_tenant_pool(id);
    let now = tenancy.get_tenant(id).await?;
    tenancy.registry_changed(&now);
    Ok(now)
}

/// Between schema and table isolation the tenant keeps its login role; its powers change
/// with the registry, in the same transaction.
async fn convert_login(txn: &DatabaseTransaction, tenant: &Tenant, target: &Tenant) -> Result<()> {
    let (Some(login), Placement::Schema { schema: from_schema, .. }, Placement::Table { .. }) =
        (tenant.placement().login(), tenant.placement(), target.placement())
    else {
        if let (Some(login), Placement::Table { .. }, Placement::Schema { schema, .. }) =
            (tenant.placement().login(), tenant.placement(), target.placement())
        {
            // Table → schema: out of the application role (no shared tables), its schema
            // alone on the search path.
            let app = crate::rls::app_role(txn).await?;
            let role = quote_ident(&login.user);
            txn.execute_unprepared(&format!(
                "REVOKE {app} FROM {role}; ALTER ROLE {role} NOINHERIT LOGIN; \
                 ALTER ROLE {role} SET search_path = {schema}",
                app = quote_ident(&app),
                schema = quote_ident(schema),
            ))
            .await?;
        }
        return Ok(());
    };
    // Schema → table: no more schema, the application role's privileges under row-level
    // security, which knows the tenant by this role's name.
    let app = crate::rls::app_role(txn).await?;
    crate::table_isolation::row_security::ensure_app_role(txn, &app).await?;
    let role = quote_ident(&login.user);
    txn.execute_unprepared(&format!(
        "REVOKE ALL ON SCHEMA {schema} FROM {role}; ALTER ROLE {role} RESET search_path; \
         ALTER ROLE {role} INHERIT LOGIN; GRANT {app} TO {role}",
        schema = quote_ident(from_schema),
        app = quote_ident(&app),
    ))
    .await?;
    Ok(())
}

/// Removes the source after the switch, object by object, each journaled first.
async fn drop_source(tenancy: &Tenancy, id: &TenantId, guard: &mut Guard, objects: &[UndoEntry]) -> Result<()> {
    for object in objects {
        guard.step(tenancy, &format!("drop {object}")).await?;
        crate::storage::undo(tenancy, id, object).await.map_err(|source| Error::MoveFailed {
            tenant: id.to_string(),
            step: format!("dropping the old storage ({object}); run the move again to finish"),
            source,
        })?;
    }
    Ok(())
}

/// Settles `id`'s stale move as `tenancydoctor --repair` does: one stopped before its
/// switch is rolled back (the tenant stays where it was), one after it finishes dropping
/// the source.
pub(crate) async fn settle_stale(tenancy: &Tenancy, id: &TenantId, params: serde_json::Value) -> Result<()> {
    let begun = operations::begin(tenancy, OperationKind::Move, id, params).await?;
    let mut guard = begun.guard;
    let switched = begun
        .resumed
        .as_ref()
        .and_then(|stale| stale.step.as_deref())
        .is_some_and(|step| step == SWITCHED || step.starts_with("drop "));
    let settled = match switched {
        true => {
            let objects = guard.undo_entries().to_vec();
            drop_source(tenancy, id, &mut guard, &objects).await
        }
        false => roll_back(tenancy, id, &mut guard).await,
    };
    match settled {
        Ok(()) => guard.finish(tenancy).await,
        Err(err) => {
            guard.abandon().await;
            Err(err)
        }
    }
}
