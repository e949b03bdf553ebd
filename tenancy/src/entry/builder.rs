//! [`TenancyBuilder`]: the options of [`Tenancy`], and connecting to the master database.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait};
use sea_orm_migration::MigratorTrait;

use super::{DEFAULT_MAX_CONNECTIONS, DEFAULT_SECRET_KEY_FILE, Parts, Tenancy};
use crate::Error;
use crate::cache::CacheConfig;
use crate::connection::TenantBinding;
use crate::connection::pooler::{DIRECT_URL_ENV, Pooler, PoolerRoute};
use crate::connection::pools::{PoolSettings, TenantPools};
use crate::connection::url::{AdminUrl, MAX_CONNECTION_LIFETIME, MasterUrl, SHARED_CONNECTION_LIFETIME, connect_pool};
use crate::registry::FRAMEWORK_MIGRATIONS_TABLE;
use crate::{RegistryMigrator, Result};

/// Options for [`Tenancy`]; start from [`Tenancy::builder`].
#[derive(Debug, Clone)]
pub struct TenancyBuilder {
    url: String,
    max_connections: u32,
    admin_url: Option<String>,
    secret_key_file: Option<PathBuf>,
    tenant_pools: PoolSettings,
    binding: TenantBinding,
    cache: CacheConfig,
    live_registry: bool,
    /// `None`: [`Pooler::from_env`].
    pooler: Option<Pooler>,
    /// `None`: `TENANCY_DIRECT_URL`, if set.
    direct_url: Option<String>,
}

impl TenancyBuilder {
    /// The connection used to create roles and databases for database-isolated tenants.
    ///
    /// Its user, password, database (the maintenance database, normally `postgres`) and
    /// options are used; host and port always come from the tenant's own config, so one
    /// admin URL serves every server. Defaults to `TENANCY_ADMIN_URL`, then to the master
    /// URL's credentials with the database `postgres`.
    pub fn admin_url(mut self, url: impl Into<String>) -> Self {
        self.admin_url = Some(url.into());
        self
    }

    /// The key file used when `TENANCY_SECRET_KEY` and `TENANCY_SECRET_KEY_FILE` are
    /// unset. Defaults to [`DEFAULT_SECRET_KEY_FILE`] in the working folder.
    pub fn secret_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.secret_key_file = Some(path.into());
        self
    }

    /// The most connections the master pool opens (default 10): the connection budget that
    /// fleet operations size their concurrency by.
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// The most connections all database-isolated tenants' pools may hold together
    /// (default [`DEFAULT_TENANT_CONNECTION_BUDGET`](crate::DEFAULT_TENANT_CONNECTION_BUDGET)),
    /// on top of the master pool's [`max_connections`](Self::max_connections).
    ///
    /// Tenant pools are cached, least recently used first out: at most
    /// `budget / connections_per_tenant_pool` are open at once, and a pool is closed
    /// before its connections are counted as free. Raised to one pool's size if smaller.
    pub fn tenant_connection_budget(mut self, budget: u32) -> Self {
        self.tenant_pools.budget = budget;
        self
    }

    /// The most connections the tenant pools on any one server may hold together (default:
    /// the [`tenant_connection_budget`](Self::tenant_connection_budget), so one server may
    /// use it all). A server is the `host:port` a pool connects to (loopback names count
    /// as one host; all SQLite tenant files as one local server); a pool holds its
    /// connections' share of both budgets. When its server's budget is full, opening a
    /// pool evicts the least recently used pool of that server; when the global budget is
    /// full, the least recently used pool of any server. Raised to one pool's size if
    /// smaller, lowered to the global budget if larger.
    ///
    /// It keeps a few busy tenants of one server from holding every connection of the
    /// budget, and each server below its own `max_connections`.
    pub fn server_connection_budget(mut self, budget: u32) -> Self {
        self.tenant_pools.server_budget = Some(budget);
        self
    }

    /// The most connections one tenant's database pool opens (default
    /// [`DEFAULT_CONNECTIONS_PER_TENANT_POOL`](crate::DEFAULT_CONNECTIONS_PER_TENANT_POOL),
    /// at least 1).
    pub fn connections_per_tenant_pool(mut self, connections: u32) -> Self {
        self.tenant_pools.per_pool = connections.max(1);
        self
    }

    /// How long a tenant pool's connection may stay idle before it is closed (default
    /// [`DEFAULT_TENANT_POOL_IDLE_TIMEOUT`](crate::DEFAULT_TENANT_POOL_IDLE_TIMEOUT)), so
    /// quiet tenants hold no server connections even while their pool stays cached.
    pub fn tenant_pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.tenant_pools.idle_timeout = timeout;
        self
    }

    /// How handles of schema- and table-isolated tenants on a PostgreSQL master reach
    /// their data (default [`TenantBinding::TenantPools`]); see [`TenantBinding`].
    ///
    /// The two differ in their threat model. [`TenantBinding::TenantPools`] logs each
    /// tenant in as its own role, so the database contains whatever SQL reaches a handle,
    /// hostile raw SQL included. [`TenantBinding::SharedTransactions`] binds each
    /// transaction of the master pool with settings and resets the session before it
    /// commits: it contains sea-orm code and leaves nothing behind for the next tenant,
    /// but **not** hostile raw SQL, which runs as the master URL's user (often a
    /// superuser) and can change the settings that bind it (`RESET ROLE`,
    /// `set_config('tenancy.tenant_id', ...)`, `set_config('search_path', ...)`). Choose
    /// it only when no SQL from tenants or their users reaches a handle.
    pub fn tenant_binding(mut self, binding: TenantBinding) -> Self {
        self.binding = binding;
        self
    }

    /// The cache tenants' namespaces live in (default: [`CacheConfig::memory`]).
    ///
    /// [`connect`](TenancyBuilder::connect) then fails with [`Error::InvalidCacheUrl`]
    /// for a Redis URL it cannot use; it does not contact Redis (that happens on the first
    /// cache call), so a Redis outage does not stop the application from starting.
    ///
    /// ```no_run
    /// # #[cfg(feature = "redis")]
    /// # async fn demo() -> tenancy::Result<()> {
    /// use tenancy::cache::CacheConfig;
    /// let tenancy = tenancy::Tenancy::builder(tenancy::master_url_from_env())
    ///     .cache(CacheConfig::redis("redis://127.0.0.1:6379").prefix("shop"))
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// [`Error::InvalidCacheUrl`]: crate::Error::InvalidCacheUrl
    pub fn cache(mut self, config: CacheConfig) -> Self {
        self.cache = config;
        self
    }

    /// Whether [`Tenancy::tenant`] (and the tower layer) serve tenants from the live
    /// registry (default `true`): the registry held in memory and kept in step with the
    /// master database by `LISTEN`/`NOTIFY` on PostgreSQL and polling every
    /// [`SQLITE_POLL_INTERVAL`](crate::live::SQLITE_POLL_INTERVAL) on SQLite, so lookups
    /// cost no query and changes made by other processes (suspensions, deletions) are
    /// followed within milliseconds (see [`crate::live`]).
    ///
    /// It starts on the first [`Tenancy::tenant`] call, so commands that never ask for a
    /// handle open no listener. On PostgreSQL it holds one connection of its own to the
    /// master database (outside [`max_connections`](Self::max_connections)); on SQLite it
    /// reads one row of the master every poll.
    ///
    /// `false` reads the registry row on every call instead.
    pub fn live_registry(mut self, live: bool) -> Self {
        self.live_registry = live;
        self
    }

    /// What stands between the application and PostgreSQL (default: `TENANCY_POOLER`,
    /// else [`Pooler::None`]); see [`crate::pooler`].
    ///
    /// Behind a transaction-mode pooler ([`Pooler::Transaction`]) every statement with
    /// values that tenancy sends (through a tenant's handle, its transactions, and the
    /// registry reads) runs in a transaction of its own that first clears what other
    /// clients prepared on the server connection; the pools prepare nothing for reuse. It
    /// needs the [`direct_url`](Self::direct_url) as well, for what cannot go through
    /// such a pooler.
    pub fn pooler(mut self, pooler: Pooler) -> Self {
        self.pooler = Some(pooler);
        self
    }

    /// The master database reached directly, not through the pooler the master URL names
    /// (default: `TENANCY_DIRECT_URL`, if set).
    ///
    /// It carries what a transaction-mode pooler cannot: the registry's migration check on
    /// connecting, the live registry's `LISTEN` (one connection per process), creating
    /// and dropping tenants' databases and roles (the admin credentials default to this
    /// URL's), and the one-off connections of lifecycle operations and migrations.
    /// Tenants' pools on the same server (their login roles, their databases) go through
    /// the pooler: the master URL's host and port replace the direct ones.
    pub fn direct_url(mut self, url: impl Into<String>) -> Self {
        self.direct_url = Some(url.into());
        self
    }

    /// Connects to the master database and applies the framework's own migrations
    /// (creating `tenancy_tenants` on first use).
    ///
    /// # Errors
    /// [`Error::UnsupportedUrl`] for a URL that is neither PostgreSQL nor SQLite,
    /// [`Error::CannotConnect`] when the server cannot be reached, [`Error::Database`]
    /// when the registry migration fails.
    pub async fn connect(self) -> Result<Tenancy> {
        let app_url = MasterUrl::parse(&self.url)?;
        let pooler = match self.pooler {
            Some(pooler) => pooler,
            None => Pooler::from_env()?,
        };
        let direct_url = self
            .direct_url
            .or_else(|| std::env::var(DIRECT_URL_ENV).ok())
            .filter(|url| !url.trim().is_empty())
            .map(|url| MasterUrl::parse(&url))
            .transpose()?;
        let (url, route) = match direct_url {
            // Without a pooler the master URL reaches the server itself.
            Some(_) if pooler == Pooler::None => (app_url.clone(), None),
            Some(direct) => {
                let route = PoolerRoute::new(&app_url, &direct).ok_or(Error::UnsupportedUrl {
                    url: crate::redact_url(direct.as_str()),
                    reason: "a pooler stands in front of PostgreSQL: the master URL and TENANCY_DIRECT_URL must both \
                             be postgres:// URLs",
                })?;
                (direct, Some(route))
            }
            None if pooler == Pooler::Transaction => return Err(Error::PoolerNeedsDirectUrl),
            None => (app_url.clone(), None),
        };
        let cache = self.cache.open()?;
        // Shared transactions bind tenants on the master pool's connections, where a
        // statement prepared under one tenant's `search_path` must never run for another
        // (PostgreSQL would re-plan it and fail with "cached plan must not change result
        // type" where the tenants' tables differ): that pool prepares unnamed statements.
        let named_statements = self.binding == TenantBinding::TenantPools;
        // Behind a pooler the master pool reaches the server directly, for the library's
        // operations and the application's own statements; a second pool through the
        // pooler carries the tenants' traffic (see `pooled`).
        let idle = route.as_ref().map(|_| DIRECT_POOL_IDLE_TIMEOUT);
        let master_pooler = if route.is_some() { Pooler::None } else { pooler };
        // Under shared transactions every tenant's statements run on these connections.
        let lifetime = match self.binding {
            TenantBinding::SharedTransactions => SHARED_CONNECTION_LIFETIME,
            TenantBinding::TenantPools => MAX_CONNECTION_LIFETIME,
        };
        let master =
            connect_pool(url.as_str(), self.max_connections, idle, lifetime, named_statements, master_pooler).await?;
        migrate_registry(&master).await?;
        let pooled = match &route {
            Some(_) => Some(
                connect_pool(app_url.as_str(), self.max_connections, None, lifetime, named_statements, pooler).await?,
            ),
            None => None,
        };
        let admin_url =
            self.admin_url.or_else(|| std::env::var("TENANCY_ADMIN_URL").ok()).filter(|url| !url.trim().is_empty());
        let admin_url = AdminUrl::new(admin_url.as_deref(), &url)?;
        Ok(Tenancy::from_parts(Parts {
            master,
            pooled,
            max_connections: self.max_connections,
            url,
            pooler,
            route,
            admin_url,
            secret_key_file: self.secret_key_file.unwrap_or_else(|| PathBuf::from(DEFAULT_SECRET_KEY_FILE)),
            pools: TenantPools::new(PoolSettings { pooler, ..self.tenant_pools }),
            live: self.live_registry,
            binding: self.binding,
            cache,
        }))
    }
}

impl Tenancy {
    /// Starts a [`TenancyBuilder`] for the master database at `url`.
    ///
    /// Its defaults bind schema and table tenants' handles through pools of their own
    /// login roles ([`TenantBinding::TenantPools`]), which contain hostile SQL; see
    /// [`TenancyBuilder::tenant_binding`] for the faster-to-scale alternative and the
    /// threats it does not cover.
    pub fn builder(url: impl Into<String>) -> TenancyBuilder {
        TenancyBuilder {
            url: url.into(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            admin_url: None,
            secret_key_file: None,
            tenant_pools: PoolSettings::default(),
            binding: TenantBinding::default(),
            cache: CacheConfig::default(),
            live_registry: true,
            pooler: None,
            direct_url: None,
        }
    }
}

/// Applies [`RegistryMigrator`] so that concurrent first runs cannot trip over each other.
///
/// Every command connects, so this runs once per process: a master that is up to date
/// costs one read; only a master missing a migration (or one this read cannot judge)
/// takes the lock and runs the migrator.
async fn migrate_registry(master: &DatabaseConnection) -> Result<()> {
    if registry_up_to_date(master).await {
        return Ok(());
    }
    match master.get_database_backend() {
        DbBackend::Postgres => {
            // Concurrent `CREATE TABLE IF NOT EXISTS` can still fail on PostgreSQL's
            // catalog unique indexes, so the first run takes a transaction-scoped
            // advisory lock; it is released at commit even behind a pooler.
            let txn = master.begin().await?;
            txn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_advisory_xact_lock($1)",
                [REGISTRY_LOCK_KEY.into()],
            ))
            .await?;
            RegistryMigrator::up(&txn, None).await?;
            txn.commit().await?;
            Ok(())
        }
        _ => {
            // SQLite serialises writers; a racing process may insert the same migration
            // record first, after which nothing is pending and the failure is moot.
            let mut attempt = 0;
            loop {
                match RegistryMigrator::up(master, None).await {
                    Ok(()) => return Ok(()),
                    Err(err) => {
                        attempt += 1;
                        let pending = RegistryMigrator::get_pending_migrations(master).await;
                        if matches!(&pending, Ok(p) if p.is_empty()) {
                            return Ok(());
                        }
                        if attempt >= 3 {
                            return Err(err.into());
                        }
                        tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                    }
                }
            }
        }
    }
}

/// How long a connection of the direct master pool may stay idle behind a pooler: a
/// process that only serves requests holds none of them for long.
const DIRECT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether the master records exactly the framework migrations this build knows, read
/// in one statement without a lock or a transaction.
///
/// Anything else is `false` and left to the migrator: a missing table (a new master; on
/// PostgreSQL the failed read shows once in the server's log), a missing migration, one
/// this build does not know (the migrator reports it), or a read that failed for another
/// reason (the migrator's own statements then report it). A migration is recorded only
/// once it is applied (in the same transaction on PostgreSQL), so a master that records
/// all of them has all of them.
async fn registry_up_to_date(master: &DatabaseConnection) -> bool {
    let backend = master.get_database_backend();
    let read = format!("SELECT version FROM {FRAMEWORK_MIGRATIONS_TABLE}");
    let Ok(rows) = master.query_all_raw(Statement::from_string(backend, read)).await else {
        return false;
    };
    let applied: Result<BTreeSet<String>, _> = rows.iter().map(|row| row.try_get_by_index::<String>(0)).collect();
    let known: BTreeSet<String> =
        RegistryMigrator::migrations().iter().map(|migration| migration.name().to_owned()).collect();
    applied.is_ok_and(|applied| applied == known)
}

/// The advisory lock key guarding the framework's master-database migrations
/// (`'tenancy'` as ASCII bytes, so it is recognisable in `pg_locks`).
const REGISTRY_LOCK_KEY: i64 = 0x0074_656e_616e_6379;
