//! [`Tenancy`]: the entry point, holding the master database connection. Every public
//! method of `Tenancy` is here; each delegates to the module that owns the work.

mod builder;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tracing::Instrument;

pub use self::builder::TenancyBuilder;
use crate::cache::{CacheStore, GlobalCache, SharedCache};
use crate::connection::TenantBinding;
use crate::connection::pooler::{MasterAccess, Pooler, PoolerRoute};
use crate::connection::pools::TenantPools;
use crate::connection::url::{AdminUrl, Backend, MasterUrl};
use crate::provisioning::{NewTenant, ProvisionHooks, Provisioned};
use crate::registry::entity;
use crate::registry::ledger::Ledger;
use crate::registry::live::LiveRegistry;
use crate::secrets::{KeySource, SecretKey};
use crate::{Error, Result, Tenant, TenantConnection, TenantId};

/// The default key file, in the working folder, used when neither `TENANCY_SECRET_KEY`
/// nor `TENANCY_SECRET_KEY_FILE` is set.
pub const DEFAULT_SECRET_KEY_FILE: &str = ".tenancy-secret.key";

/// The master pool's default connection budget.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;

/// The multi-tenancy entry point: a connection to the master database, which holds the
/// tenant registry, plus what is needed to reach each tenant's storage.
///
/// Cheap to clone: clones share the master connection pool, the tenant pools and the
/// cache.
#[derive(Clone)]
pub struct Tenancy {
    master: DatabaseConnection,
    shared: Arc<Shared>,
}

/// What the clones of one [`Tenancy`] share.
struct Shared {
    max_connections: u32,
    /// The master database reached directly: the master URL, or behind a pooler
    /// `TENANCY_DIRECT_URL`.
    url: MasterUrl,
    /// What stands between the application's pools and PostgreSQL.
    pooler: Pooler,
    /// Behind a pooler: how tenants' pools on the master's server reach it.
    route: Option<PoolerRoute>,
    /// How the live registry reaches the master database.
    registry: crate::registry::live::Master,
    /// Behind a pooler: the master pool through it, which tenants' traffic uses (bound
    /// transactions, registry reads); the `master` pool of [`Tenancy`] then reaches the
    /// server directly.
    pooled: Option<DatabaseConnection>,
    /// `None` on a SQLite master without `TENANCY_ADMIN_URL`: nothing to administer.
    admin_url: Option<AdminUrl>,
    secret_key_file: PathBuf,
    secret_key: OnceLock<(SecretKey, KeySource)>,
    /// The tenant pools (database tenants and tenant logins); shared with the live
    /// registry's feed, which closes the pools of tenants that stop being served.
    pools: Arc<TenantPools>,
    /// The registry in memory ([`TenancyBuilder::live_registry`]); `None`: read per call.
    live: Option<LiveRegistry>,
    /// The table-isolation application role of this master database, read once.
    app_role: tokio::sync::OnceCell<String>,
    /// How schema and table tenants' handles reach their data.
    binding: TenantBinding,
    /// The tenant login role prefix and the name of the master database, read once.
    master_identity: tokio::sync::OnceCell<(String, String)>,
    /// The cache tenants' namespaces live in.
    cache: SharedCache,
    /// Admin pools of the shard databases ([`Tenancy::shard_admin_pool`]), opened on first
    /// use.
    shard_pools: tokio::sync::Mutex<std::collections::HashMap<crate::ShardDatabase, DatabaseConnection>>,
    /// The connection the next lifecycle operation holds its lock on, being opened
    /// ([`Tenancy::open_operation_connection`]).
    spare_operation_connection: std::sync::Mutex<Option<tokio::task::JoinHandle<Result<DatabaseConnection>>>>,
}

/// What [`TenancyBuilder::connect`] gathered.
struct Parts {
    master: DatabaseConnection,
    pooled: Option<DatabaseConnection>,
    max_connections: u32,
    url: MasterUrl,
    pooler: Pooler,
    route: Option<PoolerRoute>,
    admin_url: Option<AdminUrl>,
    secret_key_file: PathBuf,
    pools: TenantPools,
    live: bool,
    binding: TenantBinding,
    cache: SharedCache,
}

impl std::fmt::Debug for Tenancy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenancy")
            .field("master", &self.shared.url)
            .field("admin_url", &self.shared.admin_url)
            .field("secret_key_file", &self.shared.secret_key_file)
            .finish_non_exhaustive()
    }
}

impl Tenancy {
    fn from_parts(parts: Parts) -> Tenancy {
        let registry = crate::registry::live::Master {
            pool: parts.pooled.clone().unwrap_or_else(|| parts.master.clone()),
            pooler: parts.pooler,
            listen_url: parts.route.as_ref().map(|_| parts.url.as_str().to_owned()),
        };
        Tenancy {
            master: parts.master,
            shared: Arc::new(Shared {
                max_connections: parts.max_connections,
                url: parts.url,
                pooler: parts.pooler,
                registry,
                pooled: parts.pooled,
                route: parts.route,
                admin_url: parts.admin_url,
                secret_key_file: parts.secret_key_file,
                secret_key: OnceLock::new(),
                pools: Arc::new(parts.pools),
                live: parts.live.then(LiveRegistry::new),
                app_role: tokio::sync::OnceCell::new(),
                binding: parts.binding,
                master_identity: tokio::sync::OnceCell::new(),
                cache: parts.cache,
                shard_pools: tokio::sync::Mutex::default(),
                spare_operation_connection: std::sync::Mutex::default(),
            }),
        }
    }

    /// Connects to the master database at `url` with default options.
    ///
    /// ```no_run
    /// # async fn demo() -> tenancy::Result<()> {
    /// let tenancy = tenancy::Tenancy::connect(tenancy::master_url_from_env()).await?;
    /// for tenant in tenancy.tenants().await? {
    ///     println!("{} ({})", tenant.id(), tenant.isolation());
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`TenancyBuilder::connect`].
    pub async fn connect(url: impl Into<String>) -> Result<Tenancy> {
        Self::builder(url).connect().await
    }

    // --- The registry -------------------------------------------------------------------

    /// Every registered tenant, ordered by id.
    ///
    /// # Errors
    /// [`Error::Database`] on a query failure, [`Error::CorruptRegistry`] for a row this
    /// version cannot read.
    pub async fn tenants(&self) -> Result<Vec<Tenant>> {
        entity::Entity::find()
            .order_by_asc(entity::Column::TenantId)
            .all(&self.master)
            .await?
            .into_iter()
            .map(Tenant::from_row)
            .collect()
    }

    /// The next `limit` registered tenants after `after` (from the first when `None`),
    /// ordered by id: the registry a page at a time, for work over every tenant that
    /// should not hold them all (a fleet run over ten thousand tenants). Pass the last id
    /// of a page to get the next; an empty page is the end.
    ///
    /// # Errors
    /// As [`Tenancy::tenants`].
    pub async fn tenants_after(&self, after: Option<&TenantId>, limit: u64) -> Result<Vec<Tenant>> {
        let mut page = entity::Entity::find();
        if let Some(after) = after {
            page = page.filter(entity::Column::TenantId.gt(after.as_str()));
        }
        page.order_by_asc(entity::Column::TenantId)
            .limit(limit)
            .all(&self.master)
            .await?
            .into_iter()
            .map(Tenant::from_row)
            .collect()
    }

    /// The registered tenant with this id, if any.
    ///
    /// # Errors
    /// [`Error::InvalidTenantId`] for an id that is not one, otherwise as
    /// [`Tenancy::tenants`].
    pub async fn find_tenant<I>(&self, id: I) -> Result<Option<Tenant>>
    where
        I: TryInto<TenantId>,
        Error: From<I::Error>,
    {
        self.find_by_id(&id.try_into()?).await
    }

    async fn find_by_id(&self, id: &TenantId) -> Result<Option<Tenant>> {
        entity::Entity::find_by_id(id.as_str()).one(&self.master).await?.map(Tenant::from_row).transpose()
    }

    /// The master pool the application's traffic goes through: behind a pooler the pool
    /// through it, else the master pool.
    pub(crate) fn traffic_pool(&self) -> &DatabaseConnection {
        self.shared.pooled.as_ref().unwrap_or(&self.master)
    }

    /// A tenant's registry row as [`Tenancy::tenant`] reads it without the live registry:
    /// through the traffic pool, safe behind the configured pooler (see [`MasterAccess`]).
    async fn read_for_handle(&self, id: &TenantId) -> Result<Option<Tenant>> {
        let master = MasterAccess::open(self.traffic_pool(), self.shared.pooler).await?;
        let row = entity::Entity::find_by_id(id.as_str()).one(&master).await?;
        master.finish().await?;
        row.map(Tenant::from_row).transpose()
    }

    /// What stands between this process's pools and PostgreSQL
    /// ([`TenancyBuilder::pooler`]).
    pub fn pooler(&self) -> Pooler {
        self.shared.pooler
    }

    /// Whether the traffic pool ([`Tenancy::traffic_pool`]) prepares nothing for reuse:
    /// with shared transactions, or behind a transaction-mode pooler.
    pub(crate) fn traffic_statements_uncached(&self) -> bool {
        self.shared.binding == TenantBinding::SharedTransactions || self.shared.pooler == Pooler::Transaction
    }

    /// Behind a pooler: how tenants' pools on the master's server go through it.
    pub(crate) fn pooler_route(&self) -> Option<&PoolerRoute> {
        self.shared.route.as_ref()
    }

    /// The registered tenant with this id.
    ///
    /// # Errors
    /// [`Error::TenantNotFound`] when there is none, otherwise as [`Tenancy::find_tenant`].
    pub async fn get_tenant<I>(&self, id: I) -> Result<Tenant>
    where
        I: TryInto<TenantId>,
        Error: From<I::Error>,
    {
        let id = id.try_into()?;
        self.find_by_id(&id).await?.ok_or_else(|| Error::TenantNotFound { id: id.to_string() })
    }

    /// Creates a tenant: the registry row, its storage, optionally its migrations (see
    /// [`NewTenant`] and the crate docs' "Creating a tenant").
    ///
    /// Everything that can be checked is checked before anything is created (the id is
    /// free, the role, database or schema do not exist yet, or an existing database
    /// accepts the given credentials; the secret key is readable). Then the id is claimed
    /// by inserting the registry row in state `provisioning` (the primary key settles
    /// races between concurrent runs), the storage is created, migrations run, and the
    /// row is marked `ready`. If any step fails, what this run created is removed again,
    /// in reverse order, together with the row, so the same call can simply be retried.
    /// Nothing that existed before the run is ever dropped.
    ///
    /// # Errors
    /// Validation errors ([`Error::TenantExists`], [`Error::RoleExists`],
    /// [`Error::DatabaseExists`], [`Error::SchemaExists`], [`Error::CannotConnect`],
    /// [`Error::SchemaNeedsPostgres`], [`Error::InvalidIdentifier`], ...) with nothing
    /// created; [`Error::ProvisioningFailed`] after a failed step was undone;
    /// [`Error::RollbackFailed`] when undoing failed too.
    pub async fn create_tenant<H: ProvisionHooks>(&self, new: NewTenant, hooks: &H) -> Result<Provisioned> {
        let span = operation_span("create", new.id(), Some(new.isolation()));
        let provisioned = crate::provisioning::create(self, new, hooks).instrument(span).await?;
        self.registry_changed(&provisioned.tenant);
        Ok(provisioned)
    }

    /// Stops serving a ready tenant, keeping its data: [`Tenancy::tenant`] then answers
    /// [`Error::TenantSuspended`] (with `reason`), and the tower layer `503 Service
    /// Unavailable`. This process's pool of the tenant is closed; fleet migrations still
    /// migrate it. Suspending a suspended tenant again replaces the reason.
    ///
    /// # Errors
    /// [`Error::TenantNotFound`], [`Error::TenantNotReady`] for a tenant being
    /// provisioned, [`Error::Database`].
    pub async fn suspend_tenant<I>(&self, id: I, reason: Option<String>) -> Result<Tenant>
    where
        I: TryInto<TenantId>,
        Error: From<I::Error>,
    {
        let id = id.try_into()?;
        let span = operation_span("suspend", &id, None);
        let tenant = async {
            crate::operations::refuse_if_unfinished(self, &id).await?;
            let tenant = crate::registry::suspend(&self.master, &id, reason).await?;
            record_isolation(tenant.isolation());
            Ok::<_, Error>(tenant)
        }
        .instrument(span)
        .await?;
        self.reset_tenant_pool(&id);
        self.registry_changed(&tenant);
        Ok(tenant)
    }

    /// Serves a suspended tenant again; a ready tenant is left as it is.
    ///
    /// # Errors
    /// As [`Tenancy::suspend_tenant`].
    pub async fn resume_tenant<I>(&self, id: I) -> Result<Tenant>
    where
        I: TryInto<TenantId>,
        Error: From<I::Error>,
    {
        let id = id.try_into()?;
        let span = operation_span("resume", &id, None);
        let tenant = async {
            crate::operations::refuse_if_unfinished(self, &id).await?;
            let tenant = crate::registry::resume(&self.master, &id).await?;
            record_isolation(tenant.isolation());
            Ok::<_, Error>(tenant)
        }
        .instrument(span)
        .await?;
        self.registry_changed(&tenant);
        Ok(tenant)
    }

    /// Deletes a tenant: its storage (what tenancy created of it), its cache namespace,
    /// then its registry row. Journaled: killed at any moment, the same call again
    /// finishes it (see [`crate::deletion`]).
    ///
    /// ```no_run
    /// # async fn demo(tenancy: tenancy::Tenancy) -> tenancy::Result<()> {
    /// use tenancy::deletion::DeleteOptions;
    /// let deleted = tenancy.delete_tenant("acme", &DeleteOptions::default().backup("acme.dump")).await?;
    /// for removal in &deleted.removals {
    ///     println!("{removal}");
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::TenantNotFound`]; [`Error::OperationInProgress`] or
    /// [`Error::StaleOperation`] when another operation holds the tenant;
    /// [`Error::SessionsRemain`] when its sessions did not end in time (nothing was
    /// dropped); [`Error::BackupFailed`]; [`Error::DeleteFailed`] when a removal failed
    /// part-way (run it again to finish).
    pub async fn delete_tenant<I>(
        &self,
        id: I,
        options: &crate::deletion::DeleteOptions,
    ) -> Result<crate::deletion::Deleted>
    where
        I: TryInto<TenantId>,
        Error: From<I::Error>,
    {
        let id = id.try_into()?;
        crate::deletion::delete(self, &id, options).instrument(operation_span("delete", &id, None)).await
    }

    /// What [`Tenancy::delete_tenant`] would remove, in order, changing nothing.
    ///
    /// # Errors
    /// [`Error::TenantNotFound`], or a query failure.
    pub async fn delete_plan<I>(
        &self,
        id: I,
        options: &crate::deletion::DeleteOptions,
    ) -> Result<Vec<crate::deletion::Removal>>
    where
        I: TryInto<TenantId>,
        Error: From<I::Error>,
    {
        crate::deletion::plan(self, &id.try_into()?, options).await
    }

    /// Renames a tenant: its registry row, schema, login role, the tenant column of its
    /// rows in every scoped table, its cache namespace and its migration ledger history
    /// move to the id `to`; `from` is unknown afterwards. Journaled under both ids: killed
    /// at any moment, the same call again finishes it (see [`crate::renaming`]).
    ///
    /// ```no_run
    /// # async fn demo(tenancy: tenancy::Tenancy) -> tenancy::Result<()> {
    /// use tenancy::renaming::RenameOptions;
    /// let renamed = tenancy.rename_tenant("acme", "acme_corp", &RenameOptions::default()).await?;
    /// assert_eq!(renamed.to.as_str(), "acme_corp");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::TenantNotFound`] for an unknown `from`; [`Error::TenantExists`],
    /// [`Error::SchemaExists`] or [`Error::LoginRoleExists`] when `to` or its names are
    /// taken; [`Error::RenameToSameId`]; [`Error::OperationInProgress`] or
    /// [`Error::StaleOperation`] when another operation holds either id;
    /// [`Error::TenantNotReady`] for a tenant being created or deleted;
    /// [`Error::SessionsRemain`] when the login role's sessions did not end in time;
    /// [`Error::RenameFailed`] when a step failed part-way (run it again to finish).
    pub async fn rename_tenant<I, J>(
        &self,
        from: I,
        to: J,
        options: &crate::renaming::RenameOptions,
    ) -> Result<crate::renaming::Renamed>
    where
        I: TryInto<TenantId>,
        J: TryInto<TenantId>,
        Error: From<I::Error> + From<J::Error>,
    {
        let (from, to) = (from.try_into()?, to.try_into()?);
        let span = operation_span("rename", &from, None);
        span.record("to", tracing::field::display(&to));
        crate::renaming::rename(self, &from, &to, options).instrument(span).await
    }

    /// The steps [`Tenancy::rename_tenant`] would take, changing nothing.
    ///
    /// # Errors
    /// [`Error::TenantNotFound`], [`Error::TenantExists`], [`Error::RenameToSameId`], or
    /// a query failure.
    pub async fn rename_plan<I, J>(&self, from: I, to: J) -> Result<Vec<crate::renaming::RenameStep>>
    where
        I: TryInto<TenantId>,
        J: TryInto<TenantId>,
        Error: From<I::Error> + From<J::Error>,
    {
        crate::renaming::plan(self, &from.try_into()?, &to.try_into()?).await
    }

    /// Moves a tenant to another isolation mode or database with its data: the new storage
    /// is created and migrated by `hooks` (`tenancy_migrate::MigrateOnCreate`), the rows
    /// copied and verified, then the registry switched in one transaction; running
    /// servers follow within a second. The tenant is not served while its rows are copied
    /// ([`Error::TenantMoving`]). The source is kept as a [`Leftover`](crate::relocation::Leftover)
    /// unless [`MoveOptions::drop_source`](crate::relocation::MoveOptions::drop_source).
    /// See [`crate::relocation`].
    ///
    /// # Errors
    /// [`Error::TenantNotFound`]; [`Error::CannotRelocate`] for a move this master cannot
    /// make; [`Error::MoveFailed`] when the tenant is not at the migrator's version;
    /// [`Error::LeftoversRemain`]; [`Error::KeyCollision`] into shared tables;
    /// [`Error::CopyMismatch`]; [`Error::SessionsRemain`]; [`Error::OperationInProgress`]
    /// or [`Error::StaleOperation`] when another operation holds the tenant. Before the
    /// switch a failure leaves the tenant where it was, served again.
    pub async fn move_tenant<I, H>(
        &self,
        id: I,
        options: &crate::relocation::MoveOptions,
        hooks: &H,
    ) -> Result<crate::relocation::Moved>
    where
        I: TryInto<TenantId>,
        Error: From<I::Error>,
        H: ProvisionHooks,
    {
        let id = id.try_into()?;
        crate::relocation::move_tenant(self, &id, options, hooks).instrument(operation_span("move", &id, None)).await
    }

    /// What [`Tenancy::move_tenant`] would copy (each table's rows and size) and leave
    /// behind, changing nothing.
    ///
    /// # Errors
    /// [`Error::TenantNotFound`], [`Error::CannotRelocate`], or a query failure.
    pub async fn move_plan<I>(&self, id: I, to: &crate::relocation::MoveTo) -> Result<crate::relocation::MovePlan>
    where
        I: TryInto<TenantId>,
        Error: From<I::Error>,
    {
        crate::relocation::plan(self, &id.try_into()?, to).await
    }

    /// The storage moves left behind: of `id`, or of every tenant.
    ///
    /// # Errors
    /// A query failure.
    pub async fn leftovers(&self, id: Option<&TenantId>) -> Result<Vec<crate::relocation::Leftover>> {
        crate::relocation::leftovers::list(self, id).await
    }

    /// Removes the storage moves left behind of `id` (`deletetenant --leftovers`); a run
    /// killed part-way is finished by the next.
    ///
    /// # Errors
    /// [`Error::DeleteFailed`] naming the object that could not be removed.
    pub async fn remove_leftovers(&self, id: &TenantId) -> Result<Vec<crate::relocation::Leftover>> {
        crate::relocation::leftovers::remove(self, id).await
    }

    /// Every unfinished lifecycle operation, with whether its worker still runs (see
    /// [`crate::operations`]).
    ///
    /// # Errors
    /// A query failure.
    pub async fn unfinished_operations(&self) -> Result<Vec<crate::operations::Operation>> {
        crate::operations::unfinished(self).await
    }

    /// Checks the registry against what exists (missing storage, orphans, cache
    /// namespaces, table isolation): one [`Finding`](crate::doctor::Finding) per problem,
    /// empty when all is well. Read-only. See [`crate::doctor`].
    ///
    /// # Errors
    /// [`Error::Database`] when the registry or a catalog cannot be read, [`Error::Io`]
    /// when a SQLite master's folder cannot be listed, the cache's errors when it cannot
    /// be listed. An unreachable tenant server is a finding, not an error.
    pub async fn diagnose(&self) -> Result<Vec<crate::doctor::Finding>> {
        crate::doctor::diagnose(self).await
    }

    /// Checks whether the application's schema would run on Citus: the registered
    /// `#[tenant_scoped]` models and `#[tenancy::shared]` models, the master's shared
    /// tables of table isolation and the schemas of the schema tenants, against the rules
    /// Citus imposes (primary keys, unique keys and foreign keys with the tenant column,
    /// reference tables, `bigint` keys, what schema-based sharding refuses). One
    /// [`Finding::Citus`](crate::doctor::Finding::Citus) per violation, sorted by table;
    /// empty when there is none. Read-only, and reads PostgreSQL's own catalog only: Citus
    /// need not be installed. A model whose table is not in the master (or on a SQLite
    /// master) is checked by the primary key it declares.
    ///
    /// # Errors
    /// [`Error::Database`] when the registry or the catalog cannot be read, the model
    /// registry's errors ([`Error::DuplicateScopedTable`],
    /// [`Error::ConflictingTableDeclaration`]).
    pub async fn diagnose_citus(&self) -> Result<Vec<crate::doctor::Finding>> {
        crate::doctor::diagnose_citus(self).await
    }

    /// Repairs the findings that may be repaired ([`Finding::repairable`]): drops orphans
    /// this master provably made (the registry is read again, and each object's mark,
    /// just before it is dropped; nothing a registry row names is ever dropped) and runs
    /// the row-security step again. One [`Repair`](crate::doctor::Repair) per finding
    /// given, in the order they were done; a finding that may not be repaired gets
    /// [`Error::RepairFailed`]. Ask the operator first: orphans hold data.
    ///
    /// # Errors
    /// [`Error::Database`] when the registry cannot be read (nothing is done then).
    ///
    /// [`Finding::repairable`]: crate::doctor::Finding::repairable
    pub async fn repair(&self, findings: &[crate::doctor::Finding]) -> Result<Vec<crate::doctor::Repair>> {
        crate::doctor::repair(self, findings).await
    }

    /// The fleet migration ledger (see [`crate::ledger`]).
    pub fn ledger(&self) -> Ledger<'_> {
        Ledger::new(&self.master)
    }

    // --- Tenants' data --------------------------------------------------------------------

    /// The handle of a ready tenant: pass `&handle` wherever sea-orm takes a connection.
    ///
    /// ```no_run
    /// # async fn demo(tenancy: tenancy::Tenancy) -> tenancy::Result<()> {
    /// let acme = tenancy.tenant("acme").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// Serves the tenant from the live registry, the registry held in memory and kept in
    /// step with the master database (see [`crate::live`] and
    /// [`TenancyBuilder::live_registry`]): no query per call once it is live. The first
    /// call starts it; until it has read the registry, and whenever it loses track of it,
    /// calls read the registry row as without it. The handle itself can be kept and cloned
    /// freely, and picks its route to the tenant's storage once, here (a handle made before
    /// a suspension keeps working; ask again to see the change). No connection to the
    /// tenant's database is opened yet: that happens on the handle's first use.
    ///
    /// # Errors
    /// - [`Error::InvalidTenantId`] for an id that is not one;
    /// - [`Error::TenantNotFound`] when no tenant has this id;
    /// - [`Error::TenantNotReady`] when the tenant is still being provisioned;
    /// - [`Error::HandleNotYetSupported`] for a schema tenant a SQLite master's registry
    ///   claims to have (schema isolation needs PostgreSQL);
    /// - [`Error::CorruptRegistry`] when the registry row cannot be read, or a database
    ///   tenant's SQLite file is registered while the master is not a SQLite file;
    /// - [`Error::Database`] when the registry cannot be read.
    pub async fn tenant<I>(&self, id: I) -> Result<TenantConnection>
    where
        I: TryInto<TenantId>,
        Error: From<I::Error>,
    {
        let id = id.try_into()?;
        let span = tracing::debug_span!("tenant_handle", tenant = %id, isolation = tracing::field::Empty);
        async {
            let tenant = match &self.shared.live {
                Some(live) => live.tenant(&self.shared.registry, &self.shared.pools, &id).await?,
                None => self.read_for_handle(&id).await?.ok_or_else(|| Error::TenantNotFound { id: id.to_string() })?,
            };
            record_isolation(tenant.isolation());
            TenantConnection::open(self.clone(), tenant)
        }
        .instrument(span)
        .await
    }

    /// Where a tenant's data lives, for listings: never a password.
    pub fn describe_location(&self, tenant: &Tenant) -> String {
        crate::storage::describe(self, tenant)
    }

    /// A connection to a tenant's own relational storage, for running its migrations:
    ///
    /// - database isolation: the tenant's database, connected as the tenant's role;
    /// - schema isolation: the master database with `search_path` set to the tenant's
    ///   schema alone, so nothing falls through to `public`;
    /// - table isolation: the master database, which holds the shared tables;
    /// - cache isolation: `None`, there is nothing relational.
    ///
    /// The connection (except the shared master) is the caller's: close it when done.
    ///
    /// # Errors
    /// [`Error::CannotConnect`], [`Error::Decrypt`], [`Error::SecretKey`].
    pub async fn connect_storage(&self, tenant: &Tenant) -> Result<Option<DatabaseConnection>> {
        crate::storage::migration_target(self, tenant).await
    }

    /// A pool of admin connections (the server's stored credentials) to `shard`, opened on
    /// first use and kept by this `Tenancy` and its clones: fleet runs migrate the schemas
    /// of a shard through it, as they migrate the master's schemas through the master pool,
    /// setting each transaction's `search_path` to the tenant's schema. At most
    /// [`SHARD_POOL_CONNECTIONS`](crate::SHARD_POOL_CONNECTIONS), each pinged before use
    /// (so a pool kept across the server's restart hands out live ones only) and closed
    /// after 30 seconds idle. Do not close it.
    ///
    /// # Errors
    /// [`Error::CannotConnect`], [`Error::Decrypt`], [`Error::SecretKey`].
    pub async fn shard_admin_pool(&self, shard: &crate::ShardDatabase) -> Result<DatabaseConnection> {
        let mut pools = self.shared.shard_pools.lock().await;
        if let Some(pool) = pools.get(shard) {
            return Ok(pool.clone());
        }
        let mut url = self.admin_url_for(&shard.host, shard.port).await?;
        url.set_path(&format!("/{}", shard.database));
        let idle = std::time::Duration::from_secs(30);
        let pool =
            crate::connection::url::connect_admin_pool(url.as_str(), crate::SHARD_POOL_CONNECTIONS, idle).await?;
        pools.insert(shard.clone(), pool.clone());
        Ok(pool)
    }

    /// Closes the tenant's cached connection pool, if one is open (once the operations
    /// using it are done), so that its next use opens new connections.
    ///
    /// Call it after changing the shape of a tenant's tables from this process:
    /// PostgreSQL refuses to run a statement prepared (and cached by the driver) before a
    /// change of its result columns ("cached plan must not change result type").
    /// `tenancy-migrate` does so after migrating a tenant; a single statement through the
    /// handle that meets the error also does it and retries once on fresh connections.
    /// Returns whether a pool was open.
    pub fn reset_tenant_pool(&self, id: &TenantId) -> bool {
        self.shared.pools.evict(id)
    }

    // --- The cache ------------------------------------------------------------------------

    /// The shared, tenant-less part of the cache, for data that belongs to no tenant
    /// (plans, feature flags). It takes [`GlobalKey`](crate::cache::GlobalKey)s only.
    pub fn global_cache(&self) -> GlobalCache {
        self.shared.cache.global()
    }

    /// The cache store itself, below the key layout: for operations and tests.
    pub fn cache_store(&self) -> &Arc<dyn CacheStore> {
        self.shared.cache.store()
    }

    // --- The master database and its settings ------------------------------------------------

    /// The master database connection (the registry and, in table isolation, the shared
    /// tables).
    ///
    /// Behind a pooler ([`TenancyBuilder::direct_url`]) it reaches the server directly,
    /// so the library's operations and the application's own statements on it work as
    /// without one; tenants' handles go through the pooler.
    pub fn master(&self) -> &DatabaseConnection {
        &self.master
    }

    /// The master database's backend.
    pub fn backend(&self) -> Backend {
        self.shared.url.backend()
    }

    /// `host:port` of the master database server, for messages (`local file` for SQLite).
    pub fn master_server(&self) -> String {
        self.shared.url.server()
    }

    /// The folder holding the master SQLite file (and tenant database files), if the
    /// master is a SQLite file.
    pub fn sqlite_dir(&self) -> Option<&Path> {
        self.shared.url.sqlite_dir()
    }

    /// How handles of schema and table tenants reach their data (see
    /// [`TenancyBuilder::tenant_binding`]).
    pub fn tenant_binding(&self) -> TenantBinding {
        self.shared.binding
    }

    /// The master pool's connection budget (see [`TenancyBuilder::max_connections`]).
    pub fn connection_budget(&self) -> u32 {
        self.shared.max_connections
    }

    /// The application role table-isolated tenants' statements run as on this master
    /// database ([`crate::rls::app_role`]), queried once and then cached.
    ///
    /// # Errors
    /// [`Error::Database`] when the query fails.
    pub async fn app_role(&self) -> Result<&str> {
        self.shared.app_role.get_or_try_init(|| crate::rls::app_role(&self.master)).await.map(String::as_str)
    }

    /// The operator's secret key, loaded (or generated) on first use.
    ///
    /// # Errors
    /// [`Error::SecretKey`] when the key cannot be read or created.
    pub fn secret_key(&self) -> Result<&(SecretKey, KeySource)> {
        if let Some(loaded) = self.shared.secret_key.get() {
            return Ok(loaded);
        }
        let loaded = SecretKey::load_or_create(&self.shared.secret_key_file)?;
        // Another thread may have won the race; both loaded the same key material.
        Ok(self.shared.secret_key.get_or_init(|| loaded))
    }

    /// The key file this instance generated because no key existed yet, if it did.
    ///
    /// Commands tell the operator where it is (and to back it up) whether or not the work
    /// that needed the key succeeded.
    pub fn generated_key_file(&self) -> Option<&Path> {
        match self.shared.secret_key.get() {
            Some((_, KeySource::Generated(path))) => Some(path),
            _ => None,
        }
    }

    /// Starts opening, in the background, the connection the next lifecycle operation of
    /// this instance (create, delete, move, rename) holds its lock and writes its journal
    /// on; nothing on SQLite, whose operations hold a lease instead. For a process about
    /// to run one operation, such as a command: the connect then overlaps its first reads
    /// instead of waiting in front of the operation. Without it each operation opens that
    /// connection when it starts; an unused one is closed with the last clone of this
    /// instance.
    pub fn open_operation_connection(&self) {
        if self.backend() != Backend::Postgres {
            return;
        }
        let url = self.shared.url.as_str().to_owned();
        let opening = tokio::spawn(async move { crate::operations::connect_lock(&url).await });
        if let Ok(mut spare) = self.shared.spare_operation_connection.lock() {
            *spare = Some(opening);
        }
    }

    /// The connection [`Tenancy::open_operation_connection`] opened, if any and not taken.
    pub(crate) async fn take_operation_connection(&self) -> Option<DatabaseConnection> {
        let opening = self.shared.spare_operation_connection.lock().ok()?.take()?;
        match opening.await {
            Ok(Ok(connection)) => Some(connection),
            // A failure to connect is reported by the operation's own attempt.
            _ => None,
        }
    }

    // --- For the crate's modules ----------------------------------------------------------

    /// The parsed master URL.
    pub(crate) fn master_url(&self) -> &MasterUrl {
        &self.shared.url
    }

    /// `TENANCY_ADMIN_URL`'s (or the master's) credentials for the server at `host:port`,
    /// used for servers `addserver` did not register ([`Tenancy::admin_url_for`]).
    ///
    /// # Errors
    /// [`Error::UnsupportedUrl`] when there are none (a SQLite master without
    /// `TENANCY_ADMIN_URL`) or the host makes no URL.
    pub(crate) fn default_admin_url(&self, host: &str, port: u16) -> Result<url::Url> {
        let admin = self.shared.admin_url.as_ref().ok_or(Error::UnsupportedUrl {
            url: "TENANCY_ADMIN_URL".to_owned(),
            reason: "a PostgreSQL tenant database needs admin credentials: set TENANCY_ADMIN_URL",
        })?;
        admin.for_server(host, port)
    }

    /// The tenant pools.
    pub(crate) fn pools(&self) -> &TenantPools {
        &self.shared.pools
    }

    /// The owner of `domain` from the live registry; `NotLive` when there is none or it
    /// is not live now (then the domains table answers).
    pub(crate) fn live_domain_owner(
        &self,
        domain: &crate::Domain,
    ) -> std::result::Result<Option<TenantId>, crate::registry::live::NotLive> {
        let live = self.shared.live.as_ref().ok_or(crate::registry::live::NotLive)?;
        live.domain_owner(&self.shared.registry, &self.shared.pools, domain)
    }

    /// How registry reads for serving requests reach the master (through the pooler, if
    /// one is configured).
    pub(crate) fn registry_reader(&self) -> &crate::registry::live::Master {
        &self.shared.registry
    }

    /// Tells this process's live registry the domains of `id` changed (read back here), so
    /// its own next lookup sees them at once. A failed read only delays that until the
    /// notification.
    pub(crate) async fn domains_changed(&self, id: &TenantId) {
        let Some(live) = &self.shared.live else { return };
        if let Ok(found) = crate::domains::read_all(&self.master, Some(&[id.as_str()])).await {
            live.domains_changed(id, found);
        }
    }

    /// Tells this process's live registry about a registry change it committed, so its own
    /// next [`Tenancy::tenant`] sees it at once.
    pub(crate) fn registry_changed(&self, tenant: &Tenant) {
        if let Some(live) = &self.shared.live {
            live.changed(tenant, &self.shared.pools);
        }
    }

    /// Tells this process's live registry that it removed `id`'s registry row, and closes
    /// its pool of the tenant.
    pub(crate) fn registry_removed(&self, id: &TenantId) {
        match &self.shared.live {
            Some(live) => live.removed(id, &self.shared.pools),
            None => {
                self.shared.pools.evict(id);
            }
        }
    }

    /// Whether [`Tenancy::tenant`] is served from memory right now (see
    /// [`TenancyBuilder::live_registry`]): `false` before the first call, without a live
    /// registry, and while it has lost track of the registry.
    pub fn registry_is_live(&self) -> bool {
        self.shared.live.as_ref().is_some_and(LiveRegistry::is_live)
    }

    /// The cache.
    pub(crate) fn shared_cache(&self) -> &SharedCache {
        &self.shared.cache
    }

    /// The tenant login role prefix ([`crate::rls::tenant_role_prefix`]) and the name of
    /// the PostgreSQL master database, queried once and then cached.
    pub(crate) async fn master_identity(&self) -> Result<&(String, String)> {
        self.shared.master_identity.get_or_try_init(|| crate::rls::tenant_role_prefix_and_database(&self.master)).await
    }
}

/// The span of a lifecycle operation (`tenant_operation`, at info level): what it does and
/// to which tenant, and its isolation as soon as it is known (see [`record_isolation`]);
/// never a secret.
fn operation_span(op: &'static str, id: &TenantId, isolation: Option<crate::Isolation>) -> tracing::Span {
    let span = tracing::info_span!(
        "tenant_operation",
        op,
        tenant = %id,
        isolation = tracing::field::Empty,
        to = tracing::field::Empty,
    );
    if let Some(isolation) = isolation {
        span.record("isolation", tracing::field::display(isolation));
    }
    span
}

/// Records the tenant's isolation in the current span, when it is a `tenant_operation` or
/// `tenant_handle` span that did not know it yet (other spans have no such field).
pub(crate) fn record_isolation(isolation: crate::Isolation) {
    tracing::Span::current().record("isolation", tracing::field::display(isolation));
}
