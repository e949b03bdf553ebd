//! [`NewTenant`]: what [`Tenancy::create_tenant`](crate::Tenancy::create_tenant) creates.

use crate::connection::url::DEFAULT_POSTGRES_PORT;
use crate::secrets::Password;
use crate::servers::ServerName;
use crate::{Error, Isolation, Result, Tenancy, TenantId};

/// What to create: the input of [`Tenancy::create_tenant`](crate::Tenancy::create_tenant).
///
/// ```
/// use tenancy::{Isolation, NewDatabase, NewTenant};
/// use tenancy::secrets::Password;
///
/// let table = NewTenant::new("globex", "Globex Corporation", Isolation::Table)?.migrate(true);
/// let database = NewTenant::new("acme", "ACME", Isolation::Database)?
///     .database(NewDatabase::create("acme_db").login("acme_user", Password::new("s3cret".to_owned())));
/// assert_eq!(database.id().as_str(), "acme");
/// # Ok::<(), tenancy::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct NewTenant {
    id: TenantId,
    name: String,
    isolation: Isolation,
    database: Option<NewDatabase>,
    migrate: bool,
    template: Option<TenantId>,
    server: Option<ServerName>,
}

impl NewTenant {
    /// A tenant with this id, human-readable name and isolation mode; not migrated unless
    /// [`migrate`](Self::migrate) says so.
    ///
    /// # Errors
    /// [`Error::InvalidTenantId`] for an id that is not one, [`Error::Missing`] for a
    /// blank name.
    pub fn new<I>(id: I, name: impl Into<String>, isolation: Isolation) -> Result<NewTenant>
    where
        I: TryInto<TenantId>,
        Error: From<I::Error>,
    {
        let name = name.into().trim().to_owned();
        if name.is_empty() {
            return Err(Error::Missing { value: crate::MissingValue::TenantName });
        }
        Ok(NewTenant {
            id: id.try_into()?,
            name,
            isolation,
            database: None,
            migrate: false,
            template: None,
            server: None,
        })
    }

    /// The database of a database-isolated tenant (required for that mode, ignored by the
    /// others); `None` takes a database given before away again.
    pub fn database(mut self, database: impl Into<Option<NewDatabase>>) -> Self {
        self.database = database.into();
        self
    }

    /// Whether to run the application's migrations for the tenant before marking it
    /// ready (through [`ProvisionHooks::migrate`](crate::ProvisionHooks::migrate)).
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// Makes the tenant a copy of `template`'s data (`clonetenant`, `createtenant
    /// --from`): its storage is created as for any tenant, then given the template's
    /// tables and rows, the tenant column of every row holding the new id, and verified
    /// against the template (row counts and checksums). A schema tenant cloned from a
    /// schema template on PostgreSQL gets its tables from the template's catalog instead
    /// of from the migrations (one transaction, no migration runs); otherwise the storage
    /// is migrated first and the template must be at the migrator's version. Into shared
    /// tables, a template key another tenant holds refuses the clone
    /// ([`Error::KeyCollision`]).
    pub fn from_template(mut self, template: TenantId) -> Self {
        self.template = Some(template);
        self
    }

    /// The registered server the tenant's storage goes on ([`crate::servers`]): for schema
    /// isolation, a schema of that server's shard database (the master's own server: the
    /// master database); for database isolation, a database there (as
    /// [`NewDatabase::on_server`]). Without it the placement policy picks
    /// ([`crate::Tenancy::pick_server`]). Table and cache tenants live in the master and
    /// its cache: refused for them.
    pub fn on_server(mut self, server: ServerName) -> Self {
        self.server = Some(server);
        self
    }

    /// The server given with [`on_server`](Self::on_server).
    pub fn server(&self) -> Option<&ServerName> {
        self.server.as_ref()
    }

    /// The template given with [`from_template`](Self::from_template).
    pub fn template(&self) -> Option<&TenantId> {
        self.template.as_ref()
    }

    /// The new tenant's id.
    pub fn id(&self) -> &TenantId {
        &self.id
    }

    /// Its name, trimmed.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its isolation mode.
    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// The database given with [`database`](Self::database).
    pub fn database_spec(&self) -> Option<&NewDatabase> {
        self.database.as_ref()
    }

    /// Whether migrations run before the tenant is marked ready.
    pub fn migrates(&self) -> bool {
        self.migrate
    }

    /// The arguments as the operations journal records them: everything but the password,
    /// so a re-run with the same arguments is recognised.
    pub(crate) fn journal_params(&self) -> serde_json::Value {
        let database = self.database.as_ref().map(|db| {
            serde_json::json!({
                "name": db.name(),
                "create": db.creates(),
                "user": db.postgres_login().map(DatabaseLogin::user),
                "server": db.server_choice().journal_value(),
            })
        });
        serde_json::json!({
            "name": self.name,
            "isolation": self.isolation.to_string(),
            "database": database,
            "migrate": self.migrate,
            "from": self.template.as_ref().map(TenantId::as_str),
            "server": self.server.as_ref().map(ServerName::as_str),
        })
    }
}

/// The database of a database-isolated tenant: created by the run, or an existing one
/// adopted.
///
/// On a PostgreSQL master it needs the role the tenant connects as
/// ([`login`](Self::login)); on a SQLite master the tenant's database is the file
/// `<name>.db` beside the master file and only the name is used.
#[derive(Debug, Clone)]
pub struct NewDatabase {
    name: String,
    create: bool,
    login: Option<DatabaseLogin>,
    server: ServerChoice,
}

/// Which PostgreSQL server a new database goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerChoice {
    /// The server the placement policy picks ([`crate::Tenancy::pick_server`]): the
    /// active server with the fewest tenants per unit of weight.
    Policy,
    /// A registered server, by name (`createtenant --server`).
    Named(ServerName),
    /// A server by address (`--db-host`/`--db-port`), registered or not.
    Address {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
}

impl ServerChoice {
    fn journal_value(&self) -> serde_json::Value {
        match self {
            ServerChoice::Policy => serde_json::json!("policy"),
            ServerChoice::Named(name) => serde_json::json!({ "name": name.as_str() }),
            ServerChoice::Address { host, port } => serde_json::json!({ "host": host, "port": port }),
        }
    }

    /// Where the database goes: the server's address and, when it is registered, its
    /// name. A registered server that is draining or down takes no new database.
    ///
    /// # Errors
    /// [`Error::UnknownServer`], [`Error::ServerNotAccepting`], [`Error::NoActiveServer`],
    /// [`Error::InvalidHost`] or [`Error::InvalidPort`].
    pub(crate) async fn resolve(&self, tenancy: &Tenancy) -> Result<PlacedServer> {
        let placed = |server: crate::servers::Server| PlacedServer {
            host: server.host.clone(),
            port: server.port,
            name: Some(server.name),
        };
        match self {
            ServerChoice::Policy => match tenancy.backend() {
                crate::Backend::Postgres => Ok(placed(tenancy.pick_server().await?)),
                // A SQLite master has no server of its own: the first version's default.
                crate::Backend::Sqlite => {
                    Ok(PlacedServer { host: "localhost".to_owned(), port: DEFAULT_POSTGRES_PORT, name: None })
                }
            },
            ServerChoice::Named(name) => Ok(placed(tenancy.server_for_new_tenant(name).await?)),
            ServerChoice::Address { host, port } => {
                crate::connection::url::check_host(host)?;
                if *port == 0 {
                    return Err(Error::InvalidPort { given: "0".to_owned() });
                }
                let registered = match tenancy.backend() {
                    crate::Backend::Postgres => tenancy.server_map().await?.at(host, *port).cloned(),
                    crate::Backend::Sqlite => None,
                };
                match registered {
                    Some(server) if server.state != crate::servers::ServerState::Active => {
                        Err(Error::ServerNotAccepting { server: server.name.to_string(), state: server.state.as_str() })
                    }
                    registered => {
                        Ok(PlacedServer { host: host.clone(), port: *port, name: registered.map(|server| server.name) })
                    }
                }
            }
        }
    }
}

/// The server a new database was placed on ([`ServerChoice::resolve`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlacedServer {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Its name, when it is a registered server.
    pub(crate) name: Option<ServerName>,
}

impl NewDatabase {
    /// A database to create, with its role: neither may exist yet.
    pub fn create(name: impl Into<String>) -> Self {
        NewDatabase { name: name.into(), create: true, login: None, server: ServerChoice::Policy }
    }

    /// A database that exists already: the run checks that the credentials connect to
    /// it, and creates nothing.
    pub fn existing(name: impl Into<String>) -> Self {
        NewDatabase { create: false, ..NewDatabase::create(name) }
    }

    /// The PostgreSQL role the tenant connects as. The password is stored only
    /// encrypted.
    pub fn login(mut self, user: impl Into<String>, password: Password) -> Self {
        self.login = Some(DatabaseLogin { user: user.into(), password });
        self
    }

    /// The PostgreSQL server of the database, by address. Without this or
    /// [`on_server`](Self::on_server), the placement policy picks a registered server
    /// ([`crate::Tenancy::pick_server`]).
    pub fn server(mut self, host: impl Into<String>, port: u16) -> Self {
        self.server = ServerChoice::Address { host: host.into(), port };
        self
    }

    /// The registered server of the database, by name ([`crate::servers`]).
    pub fn on_server(mut self, server: ServerName) -> Self {
        self.server = ServerChoice::Named(server);
        self
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the run creates the database (`false`: adopts an existing one).
    pub fn creates(&self) -> bool {
        self.create
    }

    /// The PostgreSQL credentials, if given.
    pub fn postgres_login(&self) -> Option<&DatabaseLogin> {
        self.login.as_ref()
    }

    /// Which server the database goes on.
    pub fn server_choice(&self) -> &ServerChoice {
        &self.server
    }

    /// Whether it is to go on the server at `host:port` (given by address).
    pub(crate) fn is_at(&self, host: &str, port: u16) -> bool {
        match &self.server {
            ServerChoice::Address { host: given, port: given_port } => {
                *given_port == port && crate::servers::same_host(given, host)
            }
            ServerChoice::Named(_) | ServerChoice::Policy => false,
        }
    }
}

/// The role of a PostgreSQL tenant database (see [`NewDatabase::login`]).
#[derive(Debug, Clone)]
pub struct DatabaseLogin {
    user: String,
    password: Password,
}

impl DatabaseLogin {
    /// The role name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The role's password.
    pub fn password(&self) -> &Password {
        &self.password
    }
}
