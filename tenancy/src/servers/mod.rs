//! Servers as data: the PostgreSQL servers tenants are placed on.
//!
//! One PostgreSQL server holds a few thousand tenant databases or schemas before its
//! catalog, its connections or its disk give out. The master database keeps a table of
//! servers (`tenancy_servers`: name, host, port, maintenance database, admin user, admin
//! password encrypted like tenant passwords, weight, state), and the server of every
//! tenant follows from its placement. The master's own server is always there, named
//! [`MASTER_SERVER`], with the master's credentials.
//!
//! - [`Tenancy::add_server`] connects to a new server with the given admin credentials
//!   before it stores anything.
//! - [`Tenancy::set_server_state`] drains a server (it gets no new tenant), marks it down,
//!   or makes it active again.
//! - [`Tenancy::pick_server`] is the placement policy: among the active servers, the one
//!   with the fewest tenants per unit of weight (ties: the master first, then by name).
//! - [`Tenancy::server_map`] tells the server of each tenant, for fleet runs and listings;
//!   [`Tenancy::server_overviews`] adds health, size and connections.
//!
//! ```no_run
//! # async fn example(tenancy: &tenancy::Tenancy) -> tenancy::Result<()> {
//! use tenancy::secrets::Password;
//! use tenancy::servers::{NewServer, ServerState};
//!
//! let db2 = NewServer::new("db2", "10.0.0.12", 5432, "postgres")?.password(Password::new("s3cret"));
//! tenancy.add_server(db2).await?;
//! let placed = tenancy.pick_server().await?; // where the next database tenant goes
//! tenancy.set_server_state(&"db2".parse()?, ServerState::Draining).await?;
//! # Ok(()) }
//! ```

pub(crate) mod entity;
mod overview;

use std::fmt;
use std::str::FromStr;

use chrono::Utc;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Set};
use serde::Serialize;

pub use self::overview::{ServerHealth, ServerOverview, TenantCounts};
use crate::connection::url::{MasterUrl, connect, postgres_url};
use crate::registry::placement::{Placement, TenantDatabase};
use crate::secrets::{EncryptedSecret, Password};
use crate::{Error, Result, Tenancy, Tenant};

/// The name of the master database's own server, always present.
pub const MASTER_SERVER: &str = "master";

/// How long naming an unreachable tenant server waits for the master's answer.
const SERVER_NAME_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The weight of a server added without `--weight`.
pub const DEFAULT_WEIGHT: u32 = 100;

/// The largest weight a server may have.
pub const MAX_WEIGHT: u32 = 10_000;

/// A server's name: a lower-case ASCII letter, then lower-case letters, digits, `_` or
/// `-`, at most [`ServerName::MAX_LEN`] bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ServerName(String);

impl ServerName {
    /// The longest name.
    pub const MAX_LEN: usize = 40;

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The master's own server.
    pub fn master() -> ServerName {
        ServerName(MASTER_SERVER.to_owned())
    }

    /// Whether this is the master's own server.
    pub fn is_master(&self) -> bool {
        self.0 == MASTER_SERVER
    }
}

impl FromStr for ServerName {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidServerName {
            name: name.escape_debug().to_string(),
            reason: reason.to_owned(),
        };
        let mut chars = name.chars();
        match chars.next() {
            None => return Err(invalid("it is empty")),
            Some(first) if !first.is_ascii_lowercase() => {
                return Err(invalid("it must start with a lower-case letter"));
            }
            Some(_) => {}
        }
        if let Some(bad) = chars.find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))) {
            return Err(invalid(&format!("'{}' is not allowed", bad.escape_debug())));
        }
        if name.len() > Self::MAX_LEN {
            return Err(invalid(&format!("it is {} bytes long", name.len())));
        }
        Ok(ServerName(name.to_owned()))
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a server takes new tenants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerState {
    /// Placement may put new tenants here.
    Active,
    /// No new tenants; its tenants are served, and can be moved off (`drainserver --move`).
    Draining,
    /// Marked down by the operator: no new tenants, and fleet runs leave its tenants alone.
    Down,
}

impl ServerState {
    /// The stored form: `active`, `draining`, `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Active => "active",
            ServerState::Draining => "draining",
            ServerState::Down => "down",
        }
    }

    fn parse(stored: &str) -> Option<ServerState> {
        match stored {
            "active" => Some(ServerState::Active),
            "draining" => Some(ServerState::Draining),
            "down" => Some(ServerState::Down),
            _ => None,
        }
    }
}

impl fmt::Display for ServerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The credentials that create roles, databases and schemas on a server.
#[derive(Clone, Debug, PartialEq)]
pub enum ServerAdmin {
    /// The master's own server: `TENANCY_ADMIN_URL`, else the master URL's credentials.
    Master,
    /// Credentials given to `addserver`, the password stored encrypted.
    Stored {
        /// The admin role.
        user: String,
        /// Its password, encrypted with the operator's key and bound to this server's
        /// name; `None` when the server trusts the admin without one.
        password: Option<EncryptedSecret>,
    },
}

/// A PostgreSQL server tenants can be placed on.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Server {
    /// Its name, unique.
    pub name: ServerName,
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// The database admin connections use (`postgres` by default).
    pub maintenance_db: String,
    /// How it is administered.
    pub admin: ServerAdmin,
    /// Its share of new tenants relative to the other servers.
    pub weight: u32,
    /// Whether it takes new tenants.
    pub state: ServerState,
}

impl Server {
    /// `host:port`.
    pub fn address(&self) -> String {
        address(&self.host, self.port)
    }

    /// Whether this is the master's own server.
    pub fn is_master(&self) -> bool {
        self.name.is_master()
    }

    /// Whether it is where tenants at `host:port` live (`localhost`, `127.0.0.1` and
    /// `::1` are one host).
    pub fn is_at(&self, host: &str, port: u16) -> bool {
        self.port == port && same_host(&self.host, host)
    }
}

fn address(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

pub(crate) fn same_host(a: &str, b: &str) -> bool {
    let loopback = |h: &str| matches!(h, "localhost" | "127.0.0.1" | "::1" | "[::1]");
    a.eq_ignore_ascii_case(b) || (loopback(a) && loopback(b))
}

/// A server to add ([`Tenancy::add_server`]).
#[derive(Clone, Debug)]
pub struct NewServer {
    name: ServerName,
    host: String,
    port: u16,
    user: String,
    password: Option<Password>,
    maintenance_db: String,
    weight: u32,
}

impl NewServer {
    /// A server at `host:port` administered by `user`, with the maintenance database
    /// `postgres`, weight [`DEFAULT_WEIGHT`] and no password.
    ///
    /// # Errors
    /// [`Error::InvalidServerName`], [`Error::InvalidHost`], [`Error::InvalidPort`] or
    /// [`Error::InvalidIdentifier`] for the user.
    pub fn new(name: &str, host: &str, port: u16, user: &str) -> Result<NewServer> {
        let name: ServerName = name.parse()?;
        if name.is_master() {
            return Err(Error::InvalidServerName {
                name: name.to_string(),
                reason: "it names the master's own server, which is always there".to_owned(),
            });
        }
        crate::connection::url::check_host(host)?;
        if port == 0 {
            return Err(Error::InvalidPort { given: "0".to_owned() });
        }
        if user.is_empty() || user.len() > 63 || user.chars().any(char::is_control) {
            return Err(Error::InvalidIdentifier {
                what: "server admin user",
                value: user.escape_debug().to_string(),
                reason: "it must be 1 to 63 bytes without control characters".to_owned(),
            });
        }
        Ok(NewServer {
            name,
            host: host.to_owned(),
            port,
            user: user.to_owned(),
            password: None,
            maintenance_db: "postgres".to_owned(),
            weight: DEFAULT_WEIGHT,
        })
    }

    /// The admin's password (stored encrypted).
    #[must_use]
    pub fn password(mut self, password: Password) -> Self {
        self.password = (!password.expose().is_empty()).then_some(password);
        self
    }

    /// The database admin connections use.
    ///
    /// # Errors
    /// [`Error::InvalidIdentifier`] when it is empty, longer than 63 bytes or holds a
    /// control character, a space, `/`, `?`, `#` or `%`. (Not [`crate::validate_sql_name`]: that refuses reserved names
    /// such as `postgres`, the usual maintenance database.)
    pub fn maintenance_db(mut self, database: &str) -> Result<Self> {
        // It becomes the path of a URL: no characters that end or escape a path.
        let bad = |c: char| c.is_control() || matches!(c, '/' | '?' | '#' | '%' | ' ');
        if database.is_empty() || database.len() > 63 || database.chars().any(bad) {
            return Err(Error::InvalidIdentifier {
                what: "maintenance database",
                value: database.escape_debug().to_string(),
                reason: "it must be 1 to 63 bytes without control characters, spaces, '/', '?', '#' or '%'".to_owned(),
            });
        }
        database.clone_into(&mut self.maintenance_db);
        Ok(self)
    }

    /// Its share of new tenants, from 1 to [`MAX_WEIGHT`].
    ///
    /// # Errors
    /// [`Error::InvalidWeight`] outside that range.
    pub fn weight(mut self, weight: u32) -> Result<Self> {
        if !(1..=MAX_WEIGHT).contains(&weight) {
            return Err(Error::InvalidWeight { given: weight.to_string() });
        }
        self.weight = weight;
        Ok(self)
    }

    /// The server's name.
    pub fn name(&self) -> &ServerName {
        &self.name
    }
}

/// Where a tenant's storage is, among the servers ([`ServerMap::server_of`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TenantServer<'a> {
    /// On a registered server (the master's own included).
    Registered(&'a Server),
    /// On a PostgreSQL server no `addserver` registered (a tenant created with
    /// `--db-host` before it was).
    Unregistered {
        /// Host.
        host: &'a str,
        /// Port.
        port: u16,
    },
    /// No server: a SQLite file or a cache namespace.
    Embedded,
}

impl TenantServer<'_> {
    /// The server's name, `host:port` of an unregistered one, `-` for none.
    pub fn label(&self) -> String {
        match self {
            TenantServer::Registered(server) => server.name.to_string(),
            TenantServer::Unregistered { host, port } => address(host, *port),
            TenantServer::Embedded => "-".to_owned(),
        }
    }

    /// The registered server, if it is one.
    pub fn server(&self) -> Option<&Server> {
        match self {
            TenantServer::Registered(server) => Some(server),
            _ => None,
        }
    }
}

/// The servers, read once, to tell the server of many tenants.
#[derive(Clone, Debug, Default)]
pub struct ServerMap {
    servers: Vec<Server>,
}

impl ServerMap {
    /// Every server, the master's first.
    pub fn servers(&self) -> &[Server] {
        &self.servers
    }

    /// The server named `name`.
    pub fn get(&self, name: &ServerName) -> Option<&Server> {
        self.servers.iter().find(|server| &server.name == name)
    }

    /// The registered server at `host:port`.
    pub fn at(&self, host: &str, port: u16) -> Option<&Server> {
        self.servers.iter().find(|server| server.is_at(host, port))
    }

    /// The server `tenant`'s storage is on.
    pub fn server_of<'a>(&'a self, tenant: &'a Tenant) -> TenantServer<'a> {
        match tenant.placement() {
            Placement::Database(TenantDatabase::Postgres(db)) => match self.at(&db.host, db.port) {
                Some(server) => TenantServer::Registered(server),
                None => TenantServer::Unregistered { host: &db.host, port: db.port },
            },
            Placement::Database(TenantDatabase::Sqlite(_)) | Placement::Cache => TenantServer::Embedded,
            Placement::Schema { shard: Some(shard), .. } => {
                match self.servers.iter().find(|server| server.name.as_str() == shard.server) {
                    Some(server) => TenantServer::Registered(server),
                    None => TenantServer::Unregistered { host: &shard.host, port: shard.port },
                }
            }
            Placement::Schema { shard: None, .. } | Placement::Table { .. } => self
                .servers
                .iter()
                .find(|server| server.is_master())
                .map_or(TenantServer::Embedded, TenantServer::Registered),
        }
    }
}

impl Tenancy {
    /// The master's own server, or `None` on a SQLite master.
    fn own_server(&self) -> Option<Server> {
        let MasterUrl::Postgres(url) = self.master_url() else { return None };
        Some(Server {
            name: ServerName::master(),
            host: url.host_str().unwrap_or("localhost").trim_matches(['[', ']']).to_owned(),
            port: url.port().unwrap_or(crate::DEFAULT_POSTGRES_PORT),
            maintenance_db: "postgres".to_owned(),
            admin: ServerAdmin::Master,
            weight: DEFAULT_WEIGHT,
            state: ServerState::Active,
        })
    }

    /// Every server: the master's own first (on a PostgreSQL master), then the added ones
    /// by name.
    ///
    /// # Errors
    /// A master database error, or [`Error::CorruptRegistry`] for an unreadable row.
    pub async fn servers(&self) -> Result<Vec<Server>> {
        let mut rows = entity::Entity::find().all(self.master()).await?;
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        let mut servers = Vec::with_capacity(rows.len() + 1);
        let master_row = rows.iter().position(|row| row.name == MASTER_SERVER).map(|at| rows.remove(at));
        if let Some(mut master) = self.own_server() {
            if let Some(row) = master_row {
                // Only the state and the weight of the master's server are stored.
                master.weight = u32::try_from(row.weight).unwrap_or(DEFAULT_WEIGHT);
                master.state = ServerState::parse(&row.state).unwrap_or(ServerState::Active);
            }
            servers.push(master);
        }
        for row in rows {
            servers.push(from_row(row)?);
        }
        Ok(servers)
    }

    /// The servers, to tell where tenants are ([`ServerMap::server_of`]).
    ///
    /// # Errors
    /// As [`Tenancy::servers`].
    pub async fn server_map(&self) -> Result<ServerMap> {
        Ok(ServerMap { servers: self.servers().await? })
    }

    /// The name of the registered server at `address` (`host:port`), asked of the master
    /// only when a tenant's server cannot be reached, never per request; `None` for an
    /// address no server is registered at, or when the master does not answer within
    /// [`SERVER_NAME_TIMEOUT`].
    pub(crate) async fn server_name_at(&self, address: &str) -> Option<String> {
        let (host, port) = address.rsplit_once(':')?;
        let port = port.parse().ok()?;
        let servers = tokio::time::timeout(SERVER_NAME_TIMEOUT, self.servers()).await.ok()?.ok()?;
        servers.into_iter().find(|server| server.is_at(host, port)).map(|server| server.name.to_string())
    }

    /// The server named `name`.
    ///
    /// # Errors
    /// [`Error::UnknownServer`] listing the known ones.
    pub async fn server(&self, name: &ServerName) -> Result<Server> {
        let mut servers = self.servers().await?;
        match servers.iter().position(|server| &server.name == name) {
            Some(at) => Ok(servers.swap_remove(at)),
            None => Err(unknown_server(name, &servers)),
        }
    }

    /// Registers a server, after connecting to it with the given credentials.
    ///
    /// # Errors
    /// - [`Error::ServersNeedPostgres`] on a SQLite master;
    /// - [`Error::ServerExists`] when the name or the address is taken;
    /// - [`Error::ServerUnreachable`] when the server cannot be reached or refuses the
    ///   credentials (nothing is stored);
    /// - [`Error::SecretKey`] when the operator's key cannot be read.
    pub async fn add_server(&self, new: NewServer) -> Result<Server> {
        if self.own_server().is_none() {
            return Err(Error::ServersNeedPostgres);
        }
        let existing = self.servers().await?;
        if let Some(taken) = existing.iter().find(|server| server.name == new.name || server.is_at(&new.host, new.port))
        {
            return Err(Error::ServerExists {
                name: new.name.to_string(),
                existing: taken.name.to_string(),
                address: taken.address(),
            });
        }
        let (key, _) = self.secret_key()?;
        let password = new.password.as_ref().map(|password| key.encrypt(password, &secret_context(&new.name)));
        let server = Server {
            name: new.name.clone(),
            host: new.host.clone(),
            port: new.port,
            maintenance_db: new.maintenance_db.clone(),
            admin: ServerAdmin::Stored { user: new.user.clone(), password },
            weight: new.weight,
            state: ServerState::Active,
        };
        let url = postgres_url(
            &new.user,
            new.password.as_ref().map(Password::expose),
            &new.host,
            new.port,
            &new.maintenance_db,
        )?;
        let probe = connect(url.as_str(), None).await.map_err(|err| unreachable(&server, err))?;
        let checked = overview::check_admin(&probe).await;
        let _ = probe.close().await;
        checked.map_err(|err| unreachable(&server, err))?;

        let now = Utc::now();
        let (user, password) = match &server.admin {
            ServerAdmin::Stored { user, password } => {
                (Some(user.clone()), password.as_ref().map(|p| p.as_str().to_owned()))
            }
            ServerAdmin::Master => (None, None),
        };
        let row = entity::ActiveModel {
            name: Set(server.name.to_string()),
            host: Set(server.host.clone()),
            port: Set(i32::from(server.port)),
            maintenance_db: Set(server.maintenance_db.clone()),
            admin_user: Set(user),
            admin_password: Set(password),
            weight: Set(i32::try_from(server.weight).unwrap_or(i32::MAX)),
            state: Set(server.state.as_str().to_owned()),
            created_at: Set(now),
            updated_at: Set(now),
        };
        entity::Entity::insert(row).exec_without_returning(self.master()).await.map_err(|err| {
            if matches!(err.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))) {
                Error::ServerExists {
                    name: server.name.to_string(),
                    existing: server.name.to_string(),
                    address: server.address(),
                }
            } else {
                err.into()
            }
        })?;
        Ok(server)
    }

    /// Sets a server's state: [`ServerState::Draining`] or [`ServerState::Down`] keep new
    /// tenants off it, [`ServerState::Active`] takes them again. Returns the server with
    /// its previous state.
    ///
    /// # Errors
    /// [`Error::UnknownServer`], or a master database error.
    pub async fn set_server_state(&self, name: &ServerName, state: ServerState) -> Result<(Server, ServerState)> {
        let mut server = self.server(name).await?;
        let before = server.state;
        let now = Utc::now();
        if server.is_master() {
            // The master's row holds only its state and weight; written on first change.
            let row = entity::ActiveModel {
                name: Set(MASTER_SERVER.to_owned()),
                host: Set(server.host.clone()),
                port: Set(i32::from(server.port)),
                maintenance_db: Set(server.maintenance_db.clone()),
                admin_user: Set(None),
                admin_password: Set(None),
                weight: Set(i32::try_from(server.weight).unwrap_or(i32::MAX)),
                state: Set(state.as_str().to_owned()),
                created_at: Set(now),
                updated_at: Set(now),
            };
            entity::Entity::insert(row)
                .on_conflict(
                    sea_orm::sea_query::OnConflict::column(entity::Column::Name)
                        .update_columns([entity::Column::State, entity::Column::UpdatedAt])
                        .to_owned(),
                )
                .exec_without_returning(self.master())
                .await?;
        } else {
            entity::Entity::update_many()
                .col_expr(entity::Column::State, sea_orm::sea_query::Expr::value(state.as_str()))
                .col_expr(entity::Column::UpdatedAt, sea_orm::sea_query::Expr::value(now))
                .filter(entity::Column::Name.eq(name.as_str()))
                .exec(self.master())
                .await?;
        }
        server.state = state;
        Ok((server, before))
    }

    /// The placement policy: the active server with the fewest database and schema
    /// tenants per unit of weight; ties go to the master's own server, then by name.
    ///
    /// # Errors
    /// [`Error::NoActiveServer`] when every server is draining or down.
    pub async fn pick_server(&self) -> Result<Server> {
        let map = self.server_map().await?;
        let counts = overview::count_placed(self, &map).await?;
        map.servers
            .iter()
            .enumerate()
            .filter(|(_, server)| server.state == ServerState::Active)
            // Fewest tenants per unit of weight, compared as cross products: exact, no floats.
            .min_by(|(a_at, a), (b_at, b)| {
                let a_load = u128::from(counts[*a_at].placed()) * u128::from(b.weight.max(1));
                let b_load = u128::from(counts[*b_at].placed()) * u128::from(a.weight.max(1));
                a_load.cmp(&b_load).then_with(|| b.is_master().cmp(&a.is_master())).then_with(|| a.name.cmp(&b.name))
            })
            .map(|(_, server)| server.clone())
            .ok_or_else(|| Error::NoActiveServer {
                servers: map.servers.iter().map(|s| format!("{} ({})", s.name, s.state)).collect::<Vec<_>>().join(", "),
            })
    }

    /// The server named `name`, if it takes new tenants.
    ///
    /// # Errors
    /// [`Error::UnknownServer`], or [`Error::ServerNotAccepting`] when it is draining or
    /// down.
    pub async fn server_for_new_tenant(&self, name: &ServerName) -> Result<Server> {
        let server = self.server(name).await?;
        if server.state != ServerState::Active {
            return Err(Error::ServerNotAccepting { server: server.name.to_string(), state: server.state.as_str() });
        }
        Ok(server)
    }

    /// The admin URL (maintenance database) of the server at `host:port`: the stored
    /// credentials of a registered server, else `TENANCY_ADMIN_URL` or the master's.
    ///
    /// # Errors
    /// [`Error::UnsupportedUrl`] when there are no credentials, [`Error::Decrypt`] when
    /// the stored password cannot be decrypted with the operator's key.
    pub(crate) async fn admin_url_for(&self, host: &str, port: u16) -> Result<url::Url> {
        let stored = match self.backend() {
            crate::Backend::Postgres => self.servers().await?.into_iter().find(|server| server.is_at(host, port)),
            crate::Backend::Sqlite => None,
        };
        match stored {
            Some(server) => self.server_admin_url(&server),
            None => self.default_admin_url(host, port),
        }
    }

    /// The admin URL of `server`'s maintenance database.
    ///
    /// # Errors
    /// As [`Tenancy::admin_url_for`].
    pub(crate) fn server_admin_url(&self, server: &Server) -> Result<url::Url> {
        match &server.admin {
            ServerAdmin::Master => self.default_admin_url(&server.host, server.port),
            ServerAdmin::Stored { user, password } => {
                let password = match password {
                    Some(secret) => Some(self.secret_key()?.0.decrypt(secret, &secret_context(&server.name))?),
                    None => None,
                };
                postgres_url(
                    user,
                    password.as_ref().map(Password::expose),
                    &server.host,
                    server.port,
                    &server.maintenance_db,
                )
            }
        }
    }
}

/// What a server's stored password is bound to: `server:<name>`, which no tenant id can
/// be (tenant ids have no `:`), so a tenant's ciphertext is never accepted for a server.
fn secret_context(name: &ServerName) -> String {
    format!("server:{name}")
}

fn unreachable(server: &Server, err: Error) -> Error {
    Error::ServerUnreachable { server: server.name.to_string(), address: server.address(), source: Box::new(err) }
}

fn unknown_server(name: &ServerName, servers: &[Server]) -> Error {
    let known = servers.iter().map(|server| server.name.to_string()).collect::<Vec<_>>();
    Error::UnknownServer {
        name: name.to_string(),
        known: if known.is_empty() { "none".to_owned() } else { known.join(", ") },
    }
}

fn from_row(row: entity::Model) -> Result<Server> {
    let corrupt = |reason: String| Error::CorruptServer { server: row.name.clone(), reason };
    let name: ServerName = row.name.parse().map_err(|err: Error| corrupt(err.to_string()))?;
    let port = u16::try_from(row.port).map_err(|_| corrupt(format!("port {}", row.port)))?;
    let state = ServerState::parse(&row.state).ok_or_else(|| corrupt(format!("state '{}'", row.state)))?;
    let weight = u32::try_from(row.weight).map_err(|_| corrupt(format!("weight {}", row.weight)))?;
    let user = row.admin_user.clone().ok_or_else(|| corrupt("no admin user".to_owned()))?;
    let password = match &row.admin_password {
        Some(text) => {
            Some(EncryptedSecret::parse(text).ok_or_else(|| corrupt("unreadable admin password".to_owned()))?)
        }
        None => None,
    };
    Ok(Server {
        name,
        host: row.host,
        port,
        maintenance_db: row.maintenance_db,
        admin: ServerAdmin::Stored { user, password },
        weight,
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        for good in ["db2", "eu-west_1", "a"] {
            assert!(good.parse::<ServerName>().is_ok(), "{good}");
        }
        for bad in ["", "Db2", "2db", "db 2", "db;drop", &"a".repeat(41)] {
            assert!(bad.parse::<ServerName>().is_err(), "{bad}");
        }
        assert!(NewServer::new("master", "127.0.0.1", 5432, "postgres").is_err());
        assert!(NewServer::new("db2", "127.0.0.1", 0, "postgres").is_err());
        assert!(NewServer::new("db2", "bad host", 5432, "postgres").is_err());
        let new = NewServer::new("db2", "127.0.0.1", 5432, "postgres").expect("db2");
        assert!(new.clone().maintenance_db("postgres").is_ok(), "the usual maintenance database");
        assert!(new.clone().maintenance_db("").is_err());
        assert!(new.maintenance_db(&"d".repeat(64)).is_err());
    }

    #[test]
    fn loopback_names_are_one_host() {
        assert!(same_host("localhost", "127.0.0.1"));
        assert!(same_host("DB1.example", "db1.example"));
        assert!(!same_host("db1", "db2"));
    }
}
