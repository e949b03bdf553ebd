//! [`Tenancy`]: the entry point, holding the master database connection.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, EntityTrait, QueryOrder, Statement,
    TransactionTrait,
};
use sea_orm_migration::MigratorTrait;

use crate::config::DatabaseConfig;
use crate::dburl::{self, Backend, MasterUrl};
use crate::handle::TenantBinding;
use crate::pools::{PoolSettings, TenantPools};
use crate::registry::{RegistryMigrator, entity};
use crate::secret::{KeySource, Password, SecretKey};
use crate::sql::quote_ident;
use crate::{Error, Isolation, Result, Tenant, TenantId};

/// The default key file, in the working folder, used when neither `TENANCY_SECRET_KEY`
/// nor `TENANCY_SECRET_KEY_FILE` is set.
pub const DEFAULT_SECRET_KEY_FILE: &str = ".tenancy-secret.key";

/// How long a pooled connection lives before it is replaced (see `connect_pool`).
const MAX_CONNECTION_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// The master pool's default connection budget.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;

/// The multi-tenancy entry point: a connection to the master database, which holds the
/// tenant registry, plus what is needed to reach each tenant's storage.
///
/// Cheap to clone: clones share the master connection pool.
#[derive(Clone)]
pub struct Tenancy {
    master: DatabaseConnection,
    max_connections: u32,
    url: MasterUrl,
    admin_url: Option<String>,
    secret_key_file: PathBuf,
    secret_key: std::sync::Arc<OnceLock<(SecretKey, KeySource)>>,
    /// The database-per-tenant pools, shared by every clone.
    pools: std::sync::Arc<TenantPools>,
    /// The table-isolation application role of this master database, read once.
    app_role: std::sync::Arc<tokio::sync::OnceCell<String>>,
    /// How schema and table tenants' handles reach their data.
    binding: TenantBinding,
    /// The tenant login role prefix and the name of the master database, read once.
    master_identity: std::sync::Arc<tokio::sync::OnceCell<(String, String)>>,
    /// The cache tenants' namespaces live in (see `cache/mod.rs`).
    pub(crate) cache: crate::cache::SharedCache,
}

impl std::fmt::Debug for Tenancy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenancy")
            .field("master", &self.url)
            .field("admin_url", &self.admin_url.as_deref().map(dburl::redact_url))
            .field("secret_key_file", &self.secret_key_file)
            .finish_non_exhaustive()
    }
}

/// Options for [`Tenancy`]; start from [`Tenancy::builder`].
#[derive(Debug, Clone)]
pub struct TenancyBuilder {
    url: String,
    max_connections: u32,
    admin_url: Option<String>,
    secret_key_file: Option<PathBuf>,
    tenant_pools: PoolSettings,
    binding: TenantBinding,
    /// Set by `TenancyBuilder::cache` (in `cache/mod.rs`).
    pub(crate) cache: crate::cache::CacheConfig,
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

    /// Connects to the master database and applies the framework's own migrations
    /// (creating `tenancy_tenants` on first use).
    ///
    /// # Errors
    /// [`Error::UnsupportedUrl`] for a URL that is neither PostgreSQL nor SQLite,
    /// [`Error::CannotConnect`] when the server cannot be reached, [`Error::Database`]
    /// when the registry migration fails.
    pub async fn connect(self) -> Result<Tenancy> {
        let url = MasterUrl::parse(&self.url)?;
        let cache = self.cache.open()?;
        // Shared transactions bind tenants on the master pool's connections, where a
        // statement prepared under one tenant's `search_path` must never run for another
        // (PostgreSQL would re-plan it and fail with "cached plan must not change result
        // type" where the tenants' tables differ): that pool prepares unnamed statements.
        let named_statements = self.binding == TenantBinding::TenantPools;
        let master = connect_pool(&url.raw, None, self.max_connections, None, named_statements).await?;
        migrate_registry(&master).await?;
        let admin_url =
            self.admin_url.or_else(|| std::env::var("TENANCY_ADMIN_URL").ok()).filter(|url| !url.trim().is_empty());
        Ok(Tenancy {
            master,
            max_connections: self.max_connections,
            url,
            admin_url,
            secret_key_file: self.secret_key_file.unwrap_or_else(|| PathBuf::from(DEFAULT_SECRET_KEY_FILE)),
            secret_key: std::sync::Arc::new(OnceLock::new()),
            app_role: std::sync::Arc::new(tokio::sync::OnceCell::new()),
            pools: std::sync::Arc::new(TenantPools::new(self.tenant_pools)),
            binding: self.binding,
            master_identity: std::sync::Arc::new(tokio::sync::OnceCell::new()),
            cache,
        })
    }
}

impl Tenancy {
    /// Connects to the master database at `url` with default options.
    ///
    /// ```no_run
    /// # async fn demo() -> tenancy::Result<()> {
    /// let tenancy = tenancy::Tenancy::connect(tenancy::master_url_from_env()).await?;
    /// for tenant in tenancy.tenants().await? {
    ///     println!("{} ({})", tenant.id, tenant.isolation);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`TenancyBuilder::connect`].
    pub async fn connect(url: impl Into<String>) -> Result<Tenancy> {
        Self::builder(url).connect().await
    }

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
            cache: crate::cache::CacheConfig::default(),
        }
    }

    /// How handles of schema and table tenants reach their data (see
    /// [`TenancyBuilder::tenant_binding`]).
    pub fn tenant_binding(&self) -> TenantBinding {
        self.binding
    }

    /// `host:port` of the master database server, for messages (`local file` for SQLite).
    pub fn master_server(&self) -> String {
        match url::Url::parse(&self.url.raw) {
            Ok(url) if self.backend() == Backend::Postgres => {
                format!("{}:{}", url.host_str().unwrap_or("localhost"), url.port().unwrap_or(5432))
            }
            _ => "local file".to_owned(),
        }
    }

    /// The master database connection (the registry and, in table isolation, the shared
    /// tables).
    pub fn master(&self) -> &DatabaseConnection {
        &self.master
    }

    /// The application role table-isolated tenants' statements run as on this master
    /// database ([`crate::rls::app_role`]), queried once and then cached.
    ///
    /// # Errors
    /// [`Error::Database`] when the query fails.
    pub async fn app_role(&self) -> Result<&str> {
        self.app_role.get_or_try_init(|| crate::rls::app_role(&self.master)).await.map(String::as_str)
    }

    /// The tenant login role prefix ([`crate::rls::tenant_role_prefix`]) and the name of
    /// the PostgreSQL master database, queried once and then cached.
    pub(crate) async fn master_identity(&self) -> Result<&(String, String)> {
        self.master_identity
            .get_or_try_init(|| async {
                let prefix = crate::rls::tenant_role_prefix(&self.master).await?;
                let row = self
                    .master
                    .query_one_raw(Statement::from_string(DbBackend::Postgres, "SELECT current_database()::text"))
                    .await?;
                let database = row.map(|row| row.try_get_by_index::<String>(0)).transpose()?.unwrap_or_default();
                Ok((prefix, database))
            })
            .await
    }

    /// The master pool's connection budget (see [`TenancyBuilder::max_connections`]).
    pub fn connection_budget(&self) -> u32 {
        self.max_connections
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
        self.pools.evict(id)
    }

    /// The cache of database-per-tenant pools.
    pub(crate) fn pools(&self) -> &TenantPools {
        &self.pools
    }

    /// The master database's backend.
    pub fn backend(&self) -> Backend {
        self.url.backend
    }

    /// The folder holding the master SQLite file (and tenant database files), if the
    /// master is a SQLite file.
    pub fn sqlite_dir(&self) -> Option<&Path> {
        self.url.sqlite_dir.as_deref()
    }

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
            .map(Tenant::try_from)
            .collect()
    }

    /// The registered tenant with this id, if any.
    ///
    /// # Errors
    /// As [`Tenancy::tenants`].
    pub async fn find_tenant(&self, id: &TenantId) -> Result<Option<Tenant>> {
        entity::Entity::find_by_id(id.as_str()).one(&self.master).await?.map(Tenant::try_from).transpose()
    }

    /// The registered tenant with this id.
    ///
    /// # Errors
    /// [`Error::TenantNotFound`] when there is none, otherwise as [`Tenancy::tenants`].
    pub async fn get_tenant(&self, id: &TenantId) -> Result<Tenant> {
        self.find_tenant(id).await?.ok_or_else(|| Error::TenantNotFound { id: id.to_string() })
    }

    /// The operator's secret key, loaded (or generated) on first use.
    ///
    /// # Errors
    /// [`Error::SecretKey`] when the key cannot be read or created.
    pub fn secret_key(&self) -> Result<&(SecretKey, KeySource)> {
        if let Some(loaded) = self.secret_key.get() {
            return Ok(loaded);
        }
        let loaded = SecretKey::load_or_create(&self.secret_key_file)?;
        // Another thread may have won the race; both loaded the same key material.
        Ok(self.secret_key.get_or_init(|| loaded))
    }

    /// Where a tenant's data lives, for listings: never a password.
    pub fn describe_location(&self, tenant: &Tenant) -> String {
        match tenant.isolation {
            Isolation::Cache => format!("cache namespace '{}'", tenant.id),
            Isolation::Table => "shared tables of the master database".to_owned(),
            Isolation::Schema => format!("schema '{}'", tenant.config.schema.as_deref().unwrap_or("?")),
            Isolation::Database => match &tenant.config.database {
                Some(DatabaseConfig::Postgres(db)) => {
                    format!("database '{}' on {} as '{}'", db.name, db.server(), db.user)
                }
                Some(DatabaseConfig::Sqlite(db)) => match self.sqlite_dir() {
                    Some(dir) => format!("file '{}'", db.file_in(dir).display()),
                    None => format!("file '{}.db'", db.name),
                },
                None => "?".to_owned(),
            },
        }
    }

    /// The key file this instance generated because no key existed yet, if it did.
    ///
    /// Commands tell the operator where it is (and to back it up) whether or not the work
    /// that needed the key succeeded.
    pub fn generated_key_file(&self) -> Option<&Path> {
        match self.secret_key.get() {
            Some((_, KeySource::Generated(path))) => Some(path),
            _ => None,
        }
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
    /// [`Error::CannotConnect`], [`Error::Decrypt`], [`Error::SecretKey`], or
    /// [`Error::CorruptRegistry`] when the config does not match the mode.
    pub async fn connect_storage(&self, tenant: &Tenant) -> Result<Option<DatabaseConnection>> {
        let corrupt =
            |reason: &str| Error::CorruptRegistry { tenant: tenant.id.to_string(), reason: reason.to_owned() };
        match tenant.isolation {
            Isolation::Cache => Ok(None),
            Isolation::Table => Ok(Some(self.master.clone())),
            Isolation::Schema => {
                let schema =
                    tenant.config.schema.as_deref().ok_or_else(|| corrupt("schema tenant without a schema"))?;
                Ok(Some(connect(&self.url.raw, Some(schema)).await?))
            }
            Isolation::Database => Ok(Some(connect(&self.database_url(tenant)?, None).await?)),
        }
    }

    /// The URL of a database-isolated tenant's own database, or of the master database as
    /// a schema or table tenant's login role, with its password decrypted (so never to be
    /// printed: use [`dburl::redact_url`]).
    fn database_url(&self, tenant: &Tenant) -> Result<String> {
        let corrupt =
            |reason: &str| Error::CorruptRegistry { tenant: tenant.id.to_string(), reason: reason.to_owned() };
        if matches!(tenant.isolation, Isolation::Schema | Isolation::Table) {
            let login = tenant.config.login.as_ref().ok_or_else(|| corrupt("no login role"))?;
            let password = self.secret_key()?.0.decrypt(&login.password, tenant.id.as_str())?;
            let mut url = url::Url::parse(&self.url.raw).map_err(|_| corrupt("the master URL cannot be parsed"))?;
            // The master URL's host, port, database and options; the tenant's credentials.
            url.set_username(&login.user)
                .and_then(|()| url.set_password(Some(password.expose())))
                .map_err(|()| corrupt("the master URL has no host to log in to"))?;
            return Ok(url.into());
        }
        match &tenant.config.database {
            Some(DatabaseConfig::Postgres(db)) => {
                let password = self.secret_key()?.0.decrypt(&db.password, tenant.id.as_str())?;
                let url = dburl::postgres_url(&db.user, Some(password.expose()), &db.host, db.port, &db.name)?;
                Ok(url.into())
            }
            Some(DatabaseConfig::Sqlite(db)) => {
                let dir = self.sqlite_dir().ok_or_else(|| corrupt("SQLite tenant database without a master file"))?;
                Ok(dburl::sqlite_url(&db.file_in(dir), false))
            }
            None => Err(corrupt("database tenant without a database config")),
        }
    }

    /// Opens a pool of up to `max_connections` to a database-isolated tenant's database
    /// (or a schema or table tenant's login on the master database) for the tenant pool
    /// cache: no connection kept open once idle for `idle_timeout`.
    pub(crate) async fn open_tenant_pool(
        &self,
        tenant: &Tenant,
        max_connections: u32,
        idle_timeout: Duration,
    ) -> Result<DatabaseConnection> {
        connect_pool(&self.database_url(tenant)?, None, max_connections, Some(idle_timeout), true).await
    }

    /// The URL of the admin connection for the server at `host:port`.
    pub(crate) fn admin_url_for(&self, host: &str, port: u16) -> Result<url::Url> {
        let template = self.admin_url.as_deref().unwrap_or(&self.url.raw);
        let parsed = url::Url::parse(template).map_err(|_| Error::UnsupportedUrl {
            url: dburl::redact_url(template),
            reason: "TENANCY_ADMIN_URL is not a valid postgres:// URL",
        })?;
        let database =
            if self.admin_url.is_some() { parsed.path().trim_start_matches('/').to_owned() } else { String::new() };
        let user = urlencoding_decode(parsed.username());
        let password = parsed.password().map(urlencoding_decode);
        let mut url = dburl::postgres_url(
            user.expose(),
            password.as_ref().map(Password::expose),
            host,
            port,
            if database.is_empty() { "postgres" } else { &database },
        )?;
        url.set_query(parsed.query());
        Ok(url)
    }
}

/// Percent-decodes a URL user or password (`url` keeps them encoded).
fn urlencoding_decode(value: &str) -> Password {
    Password::new(percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned())
}

/// Opens a connection pool with the framework's defaults: no statement logging (a
/// statement may carry a secret), a short connect timeout so an unreachable server is
/// reported promptly, and optionally a fixed `search_path`.
pub(crate) async fn connect(url: &str, search_path: Option<&str>) -> Result<DatabaseConnection> {
    connect_pool(url, search_path, 1, None, true).await
}

/// [`connect`] with a pool of up to `max_connections`, closing connections idle for
/// `idle_timeout` if given, and preparing unnamed (uncached) statements only unless
/// `named_statements`.
async fn connect_pool(
    url: &str,
    search_path: Option<&str>,
    max_connections: u32,
    idle_timeout: Option<Duration>,
    named_statements: bool,
) -> Result<DatabaseConnection> {
    let mut options = ConnectOptions::new(url.to_owned());
    if !named_statements {
        options.map_sqlx_postgres_opts(|pg| pg.statement_cache_capacity(0));
    }
    if let Some(timeout) = idle_timeout {
        options.idle_timeout(timeout);
    }
    options
        .max_connections(max_connections)
        .min_connections(0)
        .sqlx_logging(false)
        .connect_timeout(Duration::from_secs(5))
        // sqlx retries refused connections until the acquire timeout: keep it short enough
        // that an unreachable server is reported within seconds.
        .acquire_timeout(Duration::from_secs(8))
        // sqlx pings every pooled connection before handing it out by default: a round
        // trip per statement. Ping only connections idle long enough to have gone stale.
        .test_before_acquire_if_idle_for(Duration::from_secs(30))
        // A PostgreSQL backend keeps the catalog entries of every schema it has touched
        // (about 110 KiB per schema tenant) and never frees them: replacing shared
        // connections after a while bounds that growth across thousands of tenants.
        .max_lifetime(MAX_CONNECTION_LIFETIME);
    if let Some(schema) = search_path {
        // sea-orm writes a value that starts with `"` verbatim into `SET search_path`.
        options.set_schema_search_path(quote_ident(schema));
    }
    let cannot_connect = |source| Error::CannotConnect { target: dburl::redact_url(url), source };
    // sqlx retries a refused connection until its acquire timeout and then reports only
    // "pool timed out"; a plain TCP probe first gives the operator the real reason.
    if let Ok(parsed) = url::Url::parse(url)
        && matches!(parsed.scheme(), "postgres" | "postgresql")
        && let Some(host) = parsed.host_str()
    {
        let address = format!("{}:{}", host.trim_matches(['[', ']']), parsed.port().unwrap_or(5432));
        let probe = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(&address)).await;
        let failure = match probe {
            Ok(Ok(_)) => None,
            Ok(Err(err)) => Some(format!("{address}: {err}")),
            Err(_) => Some(format!("{address}: no answer within 5 seconds")),
        };
        if let Some(reason) = failure {
            return Err(cannot_connect(sea_orm::DbErr::Conn(sea_orm::RuntimeErr::Internal(reason))));
        }
    }
    Database::connect(options).await.map_err(cannot_connect)
}

/// Applies [`RegistryMigrator`] so that concurrent first runs cannot trip over each other.
async fn migrate_registry(master: &DatabaseConnection) -> Result<()> {
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

/// The advisory lock key guarding the framework's master-database migrations
/// (`'tenancy'` as ASCII bytes, so it is recognisable in `pg_locks`).
const REGISTRY_LOCK_KEY: i64 = 0x0074_656e_616e_6379;
