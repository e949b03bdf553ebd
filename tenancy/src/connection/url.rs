//! The connection plumbing: database URLs parsed once into typed parts (which backend,
//! where a SQLite file lives, which server), printing a URL without its password, and
//! opening pools with the framework's defaults.

use std::path::{Path, PathBuf};

use sea_orm::DatabaseConnection;
use secrecy::ExposeSecret;

use super::pooler::Pooler;
use crate::{Error, Result};

/// The master database used when `DATABASE_URL` is not set: a SQLite file in the
/// working folder, created on first use.
pub const DEFAULT_MASTER_URL: &str = "sqlite://tenancy.db?mode=rwc";

/// The master database URL from the environment: `DATABASE_URL`, or
/// [`DEFAULT_MASTER_URL`] when it is unset or empty.
pub fn master_url_from_env() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_MASTER_URL.to_owned())
}

/// The kinds of master database `tenancy` supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL: every isolation mode.
    Postgres,
    /// SQLite: database (one file per tenant), table and cache isolation.
    Sqlite,
}

impl Backend {
    /// The backend a master database URL names, checked the way [`crate::Tenancy::connect`]
    /// checks it, without connecting.
    ///
    /// # Errors
    /// [`Error::UnsupportedUrl`] for anything but PostgreSQL and SQLite URLs.
    pub fn of_url(url: &str) -> Result<Backend> {
        MasterUrl::parse(url).map(|parsed| parsed.backend())
    }

    /// The product name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "PostgreSQL",
            Backend::Sqlite => "SQLite",
        }
    }
}

/// The default PostgreSQL port: the one place it is written.
pub const DEFAULT_POSTGRES_PORT: u16 = 5432;

/// A master database URL, parsed once by [`crate::Tenancy::connect`] into the parts the
/// rest of the crate needs, so nothing parses it again.
#[derive(Clone)]
pub(crate) enum MasterUrl {
    /// A PostgreSQL server: every isolation mode.
    Postgres(url::Url),
    /// A SQLite database.
    Sqlite {
        /// The URL as given, for connecting.
        raw: String,
        /// The folder beside the master file that tenant database files go in; `None`
        /// for an in-memory master.
        dir: Option<PathBuf>,
    },
}

impl std::fmt::Debug for MasterUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterUrl").field("url", &redact_url(self.as_str())).field("backend", &self.backend()).finish()
    }
}

impl MasterUrl {
    pub(crate) fn parse(raw: &str) -> Result<Self> {
        let raw = raw.trim();
        let scheme = raw.split(':').next().unwrap_or_default().to_ascii_lowercase();
        match scheme.as_str() {
            "postgres" | "postgresql" => {
                let url = url::Url::parse(raw).map_err(|_| Error::UnsupportedUrl {
                    url: redact_url(raw),
                    reason: "it is not a valid URL (expected postgres://user:password@host:port/database)",
                })?;
                Ok(MasterUrl::Postgres(url))
            }
            "sqlite" => {
                let dir = sqlite_path(raw).map(|path| {
                    path.parent()
                        .filter(|dir| !dir.as_os_str().is_empty())
                        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
                });
                Ok(MasterUrl::Sqlite { raw: raw.to_owned(), dir })
            }
            _ => Err(Error::UnsupportedUrl {
                url: redact_url(raw),
                reason: "supported master databases are postgres://… and sqlite://…",
            }),
        }
    }

    /// The URL to connect with (it may hold a password: never print it).
    pub(crate) fn as_str(&self) -> &str {
        match self {
            MasterUrl::Postgres(url) => url.as_str(),
            MasterUrl::Sqlite { raw, .. } => raw,
        }
    }

    pub(crate) fn backend(&self) -> Backend {
        match self {
            MasterUrl::Postgres(_) => Backend::Postgres,
            MasterUrl::Sqlite { .. } => Backend::Sqlite,
        }
    }

    /// The folder of a SQLite master file.
    pub(crate) fn sqlite_dir(&self) -> Option<&Path> {
        match self {
            MasterUrl::Sqlite { dir, .. } => dir.as_deref(),
            MasterUrl::Postgres(_) => None,
        }
    }

    /// The file name of a SQLite master (not its folder), `None` for an in-memory one.
    pub(crate) fn sqlite_file_name(&self) -> Option<String> {
        match self {
            MasterUrl::Sqlite { raw, .. } => {
                sqlite_path(raw)?.file_name().map(|name| name.to_string_lossy().into_owned())
            }
            MasterUrl::Postgres(_) => None,
        }
    }

    /// Host and port of a PostgreSQL master.
    pub(crate) fn postgres_server(&self) -> Option<(String, u16)> {
        match self {
            MasterUrl::Postgres(url) => {
                Some((url.host_str().unwrap_or("localhost").to_owned(), url.port().unwrap_or(DEFAULT_POSTGRES_PORT)))
            }
            MasterUrl::Sqlite { .. } => None,
        }
    }

    /// `host:port` of a PostgreSQL master, `local file` for SQLite.
    pub(crate) fn server(&self) -> String {
        match self {
            MasterUrl::Postgres(url) => server_of(url),
            MasterUrl::Sqlite { .. } => "local file".to_owned(),
        }
    }

    /// The PostgreSQL master's URL logged in as `user` with `password`: the master's host,
    /// port, database and options, the tenant's credentials.
    pub(crate) fn with_login(&self, user: &str, password: &str) -> Option<url::Url> {
        let MasterUrl::Postgres(url) = self else { return None };
        let mut url = url.clone();
        url.set_username(user).ok()?;
        url.set_password(Some(password)).ok()?;
        Some(url)
    }
}

/// `host:port` of a PostgreSQL URL, the port defaulting to [`DEFAULT_POSTGRES_PORT`].
pub(crate) fn server_of(url: &url::Url) -> String {
    format!("{}:{}", url.host_str().unwrap_or("localhost"), url.port().unwrap_or(DEFAULT_POSTGRES_PORT))
}

/// The file a `sqlite:` URL names, or `None` for an in-memory database.
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" { None } else { Some(PathBuf::from(path)) }
}

/// The SQLite URL of a file, created on first connection when `create` is true.
pub(crate) fn sqlite_url(path: &Path, create: bool) -> String {
    let mode = if create { "rwc" } else { "rw" };
    format!("sqlite://{}?mode={mode}", path.display())
}

/// `url` with its password replaced by `***`, for messages and logs.
///
/// ```
/// assert_eq!(
///     tenancy::redact_url("postgres://app:s3cret@db:5432/main"),
///     "postgres://app:***@db:5432/main"
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Setting a password only fails for URLs that cannot have one, and this one has.
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        // An unparsable URL may still hold a secret: keep only the scheme.
        Err(_) => format!("{}://…", url.split(':').next().unwrap_or("?")),
    }
}

/// Builds a PostgreSQL URL from parts, percent-encoding the user and password.
pub(crate) fn postgres_url(
    user: &str,
    password: Option<&str>,
    host: &str,
    port: u16,
    database: &str,
) -> Result<url::Url> {
    let host_part = if host.contains(':') { format!("[{host}]") } else { host.to_owned() };
    let mut url = url::Url::parse(&format!("postgres://{host_part}:{port}/{database}"))
        .map_err(|_| Error::InvalidHost { given: host.to_owned() })?;
    let bad_host = || Error::InvalidHost { given: host.to_owned() };
    url.set_username(user).map_err(|()| bad_host())?;
    url.set_password(password).map_err(|()| bad_host())?;
    Ok(url)
}

/// Validates a host name or IP address given for a tenant's database server.
pub(crate) fn check_host(host: &str) -> Result<()> {
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
    if valid { Ok(()) } else { Err(Error::InvalidHost { given: host.to_owned() }) }
}

/// The credentials that create roles and databases on a tenant's server: parsed once from
/// `TENANCY_ADMIN_URL` (its user, password, database and options), or the master URL's
/// user and password with the maintenance database `postgres`. Host and port always come
/// from the tenant's own config, so one admin URL serves every server.
#[derive(Clone)]
pub(crate) struct AdminUrl {
    template: url::Url,
    database: String,
}

impl std::fmt::Debug for AdminUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_url(self.template.as_str()))
    }
}

impl AdminUrl {
    /// The admin credentials: from `given` (`TENANCY_ADMIN_URL`) if set, else the master's.
    ///
    /// # Errors
    /// [`Error::UnsupportedUrl`] when `given` is not a PostgreSQL URL.
    pub(crate) fn new(given: Option<&str>, master: &MasterUrl) -> Result<Option<AdminUrl>> {
        if let Some(given) = given {
            let template = url::Url::parse(given)
                .ok()
                .filter(|url| matches!(url.scheme(), "postgres" | "postgresql"))
                .ok_or_else(|| Error::UnsupportedUrl {
                    url: redact_url(given),
                    reason: "TENANCY_ADMIN_URL is not a valid postgres:// URL",
                })?;
            let database = template.path().trim_start_matches('/').to_owned();
            let database = if database.is_empty() { "postgres".to_owned() } else { database };
            return Ok(Some(AdminUrl { template, database }));
        }
        Ok(match master {
            MasterUrl::Postgres(url) => Some(AdminUrl { template: url.clone(), database: "postgres".to_owned() }),
            MasterUrl::Sqlite { .. } => None,
        })
    }

    /// The admin URL for the server at `host:port`.
    pub(crate) fn for_server(&self, host: &str, port: u16) -> Result<url::Url> {
        let decode = |value: &str| percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned();
        let user = decode(self.template.username());
        let password = self.template.password().map(|password| crate::secrets::Password::new(decode(password)));
        let password = password.as_ref().map(crate::secrets::Password::expose);
        let mut url = postgres_url(&user, password, host, port, &self.database)?;
        url.set_query(self.template.query());
        Ok(url)
    }
}

/// How long a pooled connection lives before it is replaced (see [`connect_pool`]).
pub(crate) const MAX_CONNECTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// How long a connection of a pool that serves every tenant (the master pool under
/// [`crate::TenantBinding::SharedTransactions`]) lives: a PostgreSQL backend keeps the
/// catalog entries of every schema and table it has touched and never frees them, so one
/// that serves many tenants at random grows by about 50 KiB per tenant it meets
/// (measured by the soak, `docs/soak.md`). Replaced every minute, it holds what one
/// minute's traffic touched; the cost is one new connection per pool slot a minute.
pub(crate) const SHARED_CONNECTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(60);

/// Opens a connection pool with the framework's defaults: no statement logging (a
/// statement may carry a secret), a short connect timeout so an unreachable server is
/// reported promptly, and optionally a fixed `search_path`.
pub(crate) async fn connect(url: &str, search_path: Option<&str>) -> Result<DatabaseConnection> {
    connect_with(url, search_path, PoolShape { max_connections: 1, maintained: false, ..PoolShape::default() }).await
}

/// [`connect`] naming its session `application_name` (sent in the startup packet, no
/// extra round trip): the connection that holds an operation's lock.
pub(crate) async fn connect_lock(url: &str, application_name: &'static str) -> Result<DatabaseConnection> {
    let shape = PoolShape {
        max_connections: 1,
        maintained: false,
        application_name: Some(application_name),
        ..PoolShape::default()
    };
    connect_with(url, None, shape).await
}

/// A pool of up to `max_connections` admin connections to `url`, closed after `idle`,
/// each pinged before it is handed out: a pool kept across a server's restart gives out
/// live connections only.
pub(crate) async fn connect_admin_pool(
    url: &str,
    max_connections: u32,
    idle: std::time::Duration,
) -> Result<DatabaseConnection> {
    connect_with(
        url,
        None,
        PoolShape { max_connections, idle_timeout: Some(idle), ping_always: true, ..PoolShape::default() },
    )
    .await
}

/// [`connect`] with a pool of up to `max_connections`, closing connections idle for
/// `idle_timeout` if given, replacing each after `max_lifetime`, and preparing unnamed
/// (uncached) statements only unless `named_statements`. Behind a `pooler` the
/// connections send no startup parameter a pooler may refuse, and behind a
/// transaction-mode one nothing is prepared for reuse (see [`super::pooler`]).
pub(crate) async fn connect_pool(
    url: &str,
    max_connections: u32,
    idle_timeout: Option<std::time::Duration>,
    max_lifetime: std::time::Duration,
    named_statements: bool,
    pooler: Pooler,
) -> Result<DatabaseConnection> {
    let named_statements = named_statements && pooler != Pooler::Transaction;
    connect_with(
        url,
        None,
        PoolShape { max_connections, idle_timeout, max_lifetime, named_statements, pooler, ..PoolShape::default() },
    )
    .await
}

/// What a pool of [`connect_with`] is like.
struct PoolShape {
    max_connections: u32,
    /// How long a connection may stay idle before it is closed; `None`: sqlx's default.
    idle_timeout: Option<std::time::Duration>,
    /// Whether sqlx caches prepared statements per connection.
    named_statements: bool,
    /// Whether connections are replaced after `max_lifetime` and closed when idle.
    maintained: bool,
    /// How long a connection of a maintained pool lives.
    max_lifetime: std::time::Duration,
    /// Whether every connection is pinged before it is handed out.
    ping_always: bool,
    /// What stands between the pool and PostgreSQL.
    pooler: Pooler,
    /// The sessions' `application_name`, if not sqlx's default.
    application_name: Option<&'static str>,
}

impl Default for PoolShape {
    fn default() -> Self {
        PoolShape {
            max_connections: 1,
            idle_timeout: None,
            named_statements: true,
            maintained: true,
            max_lifetime: MAX_CONNECTION_LIFETIME,
            ping_always: false,
            pooler: Pooler::None,
            application_name: None,
        }
    }
}

/// Opens a pool shaped by `shape`. `maintained` pools replace their connections after
/// `max_lifetime`. The one-connection pools of [`connect`] live for one task
/// and are closed by it: they get no lifetime and no idle timeout, and so no maintenance
/// task (sqlx's can spin once such a pool is closed with a connection idle).
async fn connect_with(url: &str, search_path: Option<&str>, shape: PoolShape) -> Result<DatabaseConnection> {
    use sea_orm::ConnectOptions;

    // The password goes to sqlx beside the URL, not in it: sea-orm records its connect
    // options (the URL among them) in a trace-level span, which would show it to any
    // subscriber that takes trace spans.
    let (url_without_password, password) = split_password(url);
    let mut options = ConnectOptions::new(url_without_password);
    let behind_pooler = shape.pooler != Pooler::None;
    let named_statements = shape.named_statements;
    let application_name = shape.application_name;
    if !named_statements || behind_pooler || password.is_some() || application_name.is_some() {
        options.map_sqlx_postgres_opts(move |pg| {
            let pg = if named_statements { pg } else { pg.statement_cache_capacity(0) };
            let pg = match application_name {
                Some(name) => pg.application_name(name),
                None => pg,
            };
            let pg = match &password {
                Some(password) => pg.password(password.expose_secret()),
                None => pg,
            };
            // PgBouncer refuses startup parameters it does not know unless told to ignore
            // them; sqlx's `extra_float_digits` is one. PostgreSQL 12 and later print
            // floats exactly without it.
            if behind_pooler { pg.extra_float_digits(None) } else { pg }
        });
    }
    if let Some(timeout) = shape.idle_timeout {
        options.idle_timeout(timeout);
    }
    options
        .max_connections(shape.max_connections)
        .min_connections(0)
        .sqlx_logging(false)
        .connect_timeout(std::time::Duration::from_secs(5))
        // sqlx retries refused connections until the acquire timeout: keep it short enough
        // that an unreachable server is reported within seconds.
        .acquire_timeout(std::time::Duration::from_secs(8))
        // sqlx pings every pooled connection before handing it out by default: a round
        // trip per statement. Ping only connections idle long enough to have gone stale.
        .test_before_acquire_if_idle_for(std::time::Duration::from_secs(if shape.ping_always { 0 } else { 30 }))
        // A PostgreSQL backend keeps the catalog entries of every schema it has touched
        // (about 110 KiB per schema tenant) and never frees them: replacing shared
        // connections after a while bounds that growth across thousands of tenants.
        .max_lifetime(shape.maintained.then_some(shape.max_lifetime));
    if !shape.maintained {
        options.idle_timeout(None::<std::time::Duration>);
    }
    if let Some(schema) = search_path {
        // sea-orm writes a value that starts with `"` verbatim into `SET search_path`.
        options.set_schema_search_path(crate::sql::quote_ident(schema));
    }
    let cannot_connect = |source| Error::CannotConnect { target: redact_url(url), source };
    connect_explained(url, options).await.map_err(cannot_connect)
}

/// A PostgreSQL URL without its password, and the password (percent-decoded); any other
/// URL, or one without a password, as it is.
fn split_password(url: &str) -> (String, Option<secrecy::SecretString>) {
    let Ok(mut parsed) = url::Url::parse(url) else { return (url.to_owned(), None) };
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return (url.to_owned(), None);
    }
    let Some(encoded) = parsed.password() else { return (url.to_owned(), None) };
    let password = percent_encoding::percent_decode_str(encoded).decode_utf8_lossy().into_owned();
    if parsed.set_password(None).is_err() {
        return (url.to_owned(), None);
    }
    (parsed.to_string(), Some(secrecy::SecretString::from(password)))
}

/// How long a PostgreSQL connection may take before [`connect_explained`] probes its
/// server: far above a reachable server's answer, far below the acquire timeout.
const PROBE_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

/// Connects with `options`, explained when it fails or lingers: sqlx retries a refused connection
/// until its acquire timeout and then reports only "pool timed out", so a plain TCP probe
/// of a PostgreSQL server gives the operator the real reason, and gives it within
/// moments. A connection made in time costs no probe (it would cost the server a forked
/// backend per connect); one that fails, or is not made within [`PROBE_AFTER`], races the
/// probe, and the probe's reason wins when the server does not accept TCP connections.
async fn connect_explained(url: &str, options: sea_orm::ConnectOptions) -> Result<DatabaseConnection, sea_orm::DbErr> {
    // On the heap: sea-orm's connect future is large, and raced on the stack it overflowed
    // a test thread's stack in debug builds.
    let mut connecting = Box::pin(sea_orm::Database::connect(options));
    let Some(address) = postgres_address(url) else { return connecting.await };
    let explain = || probe(&address, std::time::Duration::from_secs(5));
    let failed = tokio::select! {
        connected = &mut connecting => match connected {
            Ok(connection) => return Ok(connection),
            Err(err) => err,
        },
        () = tokio::time::sleep(PROBE_AFTER) => {
            return tokio::select! {
                connected = &mut connecting => connected,
                Err(reason) = explain() => Err(reason),
            };
        }
    };
    // A failure that was not the TCP connection's (credentials, a missing database) is
    // reported as it is.
    explain().await.and(Err(failed))
}

/// `host:port` of a PostgreSQL URL (the port defaulting to [`DEFAULT_POSTGRES_PORT`]),
/// `None` for any other URL.
pub(crate) fn postgres_address(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return None;
    }
    let host = parsed.host_str()?;
    Some(format!("{}:{}", host.trim_matches(['[', ']']), parsed.port().unwrap_or(DEFAULT_POSTGRES_PORT)))
}

/// Whether a server accepts a TCP connection at `address` within `timeout`: a plain probe
/// that opens no database session, so it costs no connection of any budget. The error
/// says why not, as the driver's connection error.
pub(crate) async fn probe(address: &str, timeout: std::time::Duration) -> Result<(), sea_orm::DbErr> {
    let reason = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(_)) => return Ok(()),
        Ok(Err(err)) => format!("{address}: {err}"),
        Err(_) => format!("{address}: no answer within {} seconds", timeout.as_secs()),
    };
    Err(sea_orm::DbErr::Conn(sea_orm::RuntimeErr::Internal(reason)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_leaves_the_url_decoded() {
        let (url, password) = split_password("postgres://acme:p%40ss%2Fw@db.example:5433/acme_db?sslmode=disable");
        assert_eq!(url, "postgres://acme@db.example:5433/acme_db?sslmode=disable");
        assert_eq!(password.map(|p| p.expose_secret().to_owned()).as_deref(), Some("p@ss/w"));
        assert_eq!(split_password("postgres://acme@db/x").0, "postgres://acme@db/x");
        assert!(split_password("postgres://acme@db/x").1.is_none());
        assert_eq!(split_password("sqlite://a:b@/x.db").0, "sqlite://a:b@/x.db");
    }

    #[test]
    fn sqlite_paths() {
        let url = MasterUrl::parse("sqlite://tenancy.db?mode=rwc").unwrap();
        assert_eq!(url.backend(), Backend::Sqlite);
        assert_eq!(url.sqlite_dir().unwrap(), Path::new("."));
        let url = MasterUrl::parse("sqlite:///var/lib/app/master.db").unwrap();
        assert_eq!(url.sqlite_dir().unwrap(), Path::new("/var/lib/app"));
        assert!(MasterUrl::parse("sqlite::memory:").unwrap().sqlite_dir().is_none());
        let url = MasterUrl::parse("postgres://app:pw@db.internal/main").unwrap();
        assert_eq!(url.server(), "db.internal:5432");
    }

    #[test]
    fn unsupported() {
        let err = MasterUrl::parse("mysql://root:pw@localhost/db").unwrap_err().to_string();
        assert!(err.contains("mysql://root:***@localhost/db"), "{err}");
        assert!(!err.contains("pw@"), "{err}");
    }

    #[test]
    fn builds_encoded_postgres_urls() {
        let url = postgres_url("acme_user", Some("p@ss:/w"), "localhost", 5432, "acme_db").unwrap();
        assert_eq!(url.as_str(), "postgres://acme_user:p%40ss%3A%2Fw@localhost:5432/acme_db");
        assert_eq!(redact_url(url.as_str()), "postgres://acme_user:***@localhost:5432/acme_db");
    }

    #[test]
    fn hosts() {
        assert!(check_host("db-1.internal").is_ok());
        assert!(check_host("127.0.0.1").is_ok());
        assert!(check_host("").is_err());
        assert!(check_host("a b").is_err());
        assert!(check_host("x/y").is_err());
    }
}
