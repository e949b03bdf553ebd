//! Creating tenants: validate everything, claim the id, create the storage, migrate,
//! mark ready, and on any failure undo exactly what this run created.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use chrono::Utc;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter,
    Statement, TransactionTrait, sea_query::Expr,
};

use crate::config::{DatabaseConfig, PostgresDatabase, SqliteDatabase, TenantLogin};
use crate::dburl::{self, Backend};
use crate::id::validate_sql_name;
use crate::registry::entity;
use crate::rls;
use crate::secret::{Password, scram_sha256_verifier, scram_sha256_verifier_of_generated};
use crate::sql::{quote_ident, quote_literal};
use crate::tenancy::connect;
use crate::{BoxError, Error, Isolation, Result, Tenancy, Tenant, TenantConfig, TenantId, TenantStatus};

/// A boxed, `Send` future, as returned by [`ProvisionHooks::migrate`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The default PostgreSQL port, used when a database tenant's config gives none.
pub const DEFAULT_POSTGRES_PORT: u16 = 5432;

/// What to create: the input of [`Tenancy::create_tenant`].
#[derive(Debug, Clone)]
pub struct NewTenant {
    /// The new tenant's id.
    pub id: TenantId,
    /// A human-readable name (must not be blank).
    pub name: String,
    /// How its data is isolated.
    pub isolation: Isolation,
    /// For database isolation: the database to create or adopt.
    pub database: Option<NewDatabase>,
    /// Whether to run the application's migrations for the tenant before marking it
    /// ready (through [`ProvisionHooks::migrate`]).
    pub migrate: bool,
}

/// The database of a database-isolated tenant.
///
/// On a PostgreSQL master every field is used; on a SQLite master the tenant's database
/// is the file `<name>.db` beside the master file and only `name` and `create` are used.
#[derive(Debug, Clone)]
pub struct NewDatabase {
    /// Database name.
    pub name: String,
    /// `true`: create the role and database (both must not exist yet). `false`: the
    /// database exists already; check that the credentials connect to it.
    pub create: bool,
    /// The role the tenant connects as (PostgreSQL).
    pub user: Option<String>,
    /// The role's password (PostgreSQL). Stored only encrypted.
    pub password: Option<Password>,
    /// The server's host; default `localhost` (PostgreSQL).
    pub host: Option<String>,
    /// The server's port; default 5432 (PostgreSQL).
    pub port: Option<u16>,
}

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
    /// not `ready` yet. Called only when [`NewTenant::migrate`] is set and the mode has
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

/// How the tenant's storage will be made, decided during validation.
enum Storage {
    Postgres {
        admin: DatabaseConnection,
        config: PostgresDatabase,
        verifier: Option<String>,
    },
    SqliteFile {
        config: SqliteDatabase,
        path: PathBuf,
        create: bool,
    },
    Schema {
        name: String,
        login: PlannedLogin,
    },
    /// Table isolation on PostgreSQL: the tenant's login role.
    TableRole {
        login: PlannedLogin,
    },
    None,
}

/// A tenant login role to create: its registry record and its password's SCRAM verifier.
struct PlannedLogin {
    config: TenantLogin,
    verifier: String,
}

/// What to remove again if a later step fails.
enum Undo {
    DeleteRow,
    DropRole(String),
    DropDatabase(String),
    RemoveFile(PathBuf),
    DropSchema(String),
    /// A tenant login role on the master, with the privileges granted to it.
    DropLoginRole(String),
}

impl Tenancy {
    /// Creates a tenant: the registry row, its storage, optionally its migrations.
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
        let name = new.name.trim().to_owned();
        if name.is_empty() {
            return Err(Error::Missing { value: crate::MissingValue::TenantName });
        }
        let storage = self.plan_storage(&new).await?;
        if self.find_tenant(&new.id).await?.is_some() {
            return Err(Error::TenantExists { id: new.id.to_string() });
        }
        if let Err(err) = self.check_storage_is_free(&storage).await {
            close_admin(&storage).await;
            // A concurrent run for the same id may have claimed it and created the
            // storage since the registry check above: report the id, not the storage.
            if self.find_tenant(&new.id).await?.is_some() {
                return Err(Error::TenantExists { id: new.id.to_string() });
            }
            return Err(err);
        }

        let config = match &storage {
            Storage::Postgres { config, .. } => {
                TenantConfig { database: Some(DatabaseConfig::Postgres(config.clone())), ..TenantConfig::default() }
            }
            Storage::SqliteFile { config, .. } => {
                TenantConfig { database: Some(DatabaseConfig::Sqlite(config.clone())), ..TenantConfig::default() }
            }
            Storage::Schema { name, login } => TenantConfig {
                schema: Some(name.clone()),
                login: Some(login.config.clone()),
                ..TenantConfig::default()
            },
            Storage::TableRole { login } => {
                TenantConfig { login: Some(login.config.clone()), ..TenantConfig::default() }
            }
            Storage::None => TenantConfig::default(),
        };
        let now = Utc::now();
        let mut tenant = Tenant {
            id: new.id.clone(),
            name,
            isolation: new.isolation,
            config,
            status: TenantStatus::Provisioning,
            created_at: now,
            updated_at: now,
        };

        let mut run = Run { undo: Vec::new(), created: Vec::new() };
        let outcome = self.run_steps(&new, &mut tenant, &storage, hooks, &mut run).await;
        let result = match outcome {
            Ok(()) => Ok(Provisioned {
                tenant,
                created: run.created,
                migrated: new.migrate && new.isolation.has_relational_storage(),
            }),
            Err((step, source)) => {
                // A lost race for the id is not a failure to undo: this run created nothing.
                if step == ProvisionStep::ClaimId
                    && run.undo.is_empty()
                    && let Some(Error::TenantExists { id }) = source.downcast_ref::<Error>()
                {
                    close_admin(&storage).await;
                    return Err(Error::TenantExists { id: id.clone() });
                }
                let leftovers = self.undo(&new.id, &storage, run.undo).await;
                if leftovers.is_empty() {
                    Err(Error::ProvisioningFailed { tenant: new.id.to_string(), step, source })
                } else {
                    Err(Error::RollbackFailed {
                        tenant: new.id.to_string(),
                        step,
                        leftovers: leftovers.join(", "),
                        source,
                    })
                }
            }
        };
        close_admin(&storage).await;
        result
    }

    /// Validates the isolation-specific input and decides how the storage will be made.
    async fn plan_storage(&self, new: &NewTenant) -> Result<Storage> {
        match new.isolation {
            Isolation::Cache => Ok(Storage::None),
            Isolation::Table => match self.backend() {
                Backend::Postgres => Ok(Storage::TableRole { login: self.plan_login(&new.id).await? }),
                Backend::Sqlite => Ok(Storage::None),
            },
            Isolation::Schema => match self.backend() {
                Backend::Postgres => {
                    Ok(Storage::Schema { name: new.id.to_string(), login: self.plan_login(&new.id).await? })
                }
                other @ Backend::Sqlite => Err(Error::SchemaNeedsPostgres { backend: other.name() }),
            },
            Isolation::Database => {
                let db = new.database.as_ref().ok_or(Error::Missing { value: crate::MissingValue::DatabaseName })?;
                validate_sql_name("database name", &db.name)?;
                match self.backend() {
                    Backend::Sqlite => {
                        let dir = self.sqlite_dir().ok_or(Error::UnsupportedUrl {
                            url: "sqlite::memory:".to_owned(),
                            reason: "database isolation on SQLite needs a master database file, not an in-memory one",
                        })?;
                        let config = SqliteDatabase { name: db.name.clone() };
                        let path = config.file_in(dir);
                        Ok(Storage::SqliteFile { config, path, create: db.create })
                    }
                    Backend::Postgres => {
                        let user =
                            db.user.clone().ok_or(Error::Missing { value: crate::MissingValue::DatabaseUser })?;
                        validate_sql_name("database user", &user)?;
                        let host = db.host.clone().unwrap_or_else(|| "localhost".to_owned());
                        dburl::check_host(&host)?;
                        let port = db.port.unwrap_or(DEFAULT_POSTGRES_PORT);
                        if port == 0 {
                            return Err(Error::InvalidPort { given: "0".to_owned() });
                        }
                        let password = db
                            .password
                            .clone()
                            .ok_or(Error::Missing { value: crate::MissingValue::DatabasePassword })?;
                        if password.expose().is_empty() {
                            return Err(Error::Missing { value: crate::MissingValue::DatabasePassword });
                        }
                        let (key, _) = self.secret_key()?;
                        let config = PostgresDatabase {
                            password: key.encrypt(&password, new.id.as_str()),
                            name: db.name.clone(),
                            user,
                            host,
                            port,
                        };
                        let admin_url = self.admin_url_for(&config.host, config.port)?;
                        let admin = connect(admin_url.as_str(), None).await?;
                        let verifier = db.create.then(|| scram_sha256_verifier(&password));
                        if !db.create {
                            // Adopting an existing database: the credentials must work now.
                            let url = dburl::postgres_url(
                                &config.user,
                                Some(password.expose()),
                                &config.host,
                                config.port,
                                &config.name,
                            )?;
                            let probe = connect(url.as_str(), None).await;
                            match probe {
                                Ok(conn) => {
                                    let _ = conn.close().await;
                                }
                                Err(err) => {
                                    let _ = admin.close().await;
                                    return Err(err);
                                }
                            }
                        }
                        Ok(Storage::Postgres { admin, config, verifier })
                    }
                }
            }
        }
    }

    /// The login role of a new schema or table tenant on the PostgreSQL master, with a
    /// random password that only the secret key can recover.
    async fn plan_login(&self, id: &TenantId) -> Result<PlannedLogin> {
        let (prefix, _) = self.master_identity().await?;
        let password = Password::generate();
        let (key, _) = self.secret_key()?;
        Ok(PlannedLogin {
            verifier: scram_sha256_verifier_of_generated(&password),
            config: TenantLogin { user: format!("{prefix}{id}"), password: key.encrypt(&password, id.as_str()) },
        })
    }

    /// Refuses to create over anything that exists already.
    async fn check_storage_is_free(&self, storage: &Storage) -> Result<()> {
        match storage {
            Storage::Postgres { admin, config, verifier } => {
                if verifier.is_none() {
                    return Ok(());
                }
                if exists(admin, "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", &config.user).await? {
                    return Err(Error::RoleExists { name: config.user.clone(), server: config.server() });
                }
                if exists(admin, "SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1", &config.name).await? {
                    return Err(Error::DatabaseExists { name: config.name.clone(), server: config.server() });
                }
                Ok(())
            }
            Storage::SqliteFile { path, create, .. } => match (create, path.exists()) {
                (true, true) => Err(Error::DatabaseFileExists { path: path.clone() }),
                (false, false) => Err(Error::DatabaseMissing { name: path.display().to_string() }),
                _ => Ok(()),
            },
            Storage::Schema { name, login } => {
                // Both in one round trip.
                let row = self
                    .master()
                    .query_one_raw(Statement::from_sql_and_values(
                        DbBackend::Postgres,
                        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1), \
                         EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $2)",
                        [name.as_str().into(), login.config.user.as_str().into()],
                    ))
                    .await?;
                let (schema_exists, role_exists) = match row {
                    Some(row) => (row.try_get_by_index::<bool>(0)?, row.try_get_by_index::<bool>(1)?),
                    None => (false, false),
                };
                if schema_exists {
                    return Err(Error::SchemaExists { name: name.clone() });
                }
                if role_exists {
                    return Err(Error::LoginRoleExists { name: login.config.user.clone() });
                }
                Ok(())
            }
            Storage::TableRole { login } => self.check_login_is_free(login).await,
            Storage::None => Ok(()),
        }
    }

    async fn check_login_is_free(&self, login: &PlannedLogin) -> Result<()> {
        let user = &login.config.user;
        if exists(self.master(), "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", user).await? {
            return Err(Error::LoginRoleExists { name: user.clone() });
        }
        Ok(())
    }

    async fn run_steps<H: ProvisionHooks>(
        &self,
        new: &NewTenant,
        tenant: &mut Tenant,
        storage: &Storage,
        hooks: &H,
        run: &mut Run,
    ) -> Result<(), (ProvisionStep, BoxError)> {
        use ProvisionStep as Step;

        run.step(Step::ClaimId, hooks, async {
            self.claim(tenant).await?;
            Ok(Some(Undo::DeleteRow))
        })
        .await?;

        // Schema isolation: creating the schema, migrating it and marking the tenant ready
        // are one transaction, so a failure at any of them leaves no schema behind even if
        // this process dies before it can undo anything.
        let schema_txn = match storage {
            Storage::Schema { .. } => {
                Some(self.master().begin().await.map_err(|e| (Step::CreateSchema, Box::new(e) as BoxError))?)
            }
            _ => None,
        };
        let result = self.storage_steps(new, tenant, storage, hooks, run, schema_txn.as_ref()).await;
        match (result, schema_txn) {
            (Ok(()), Some(txn)) => txn.commit().await.map_err(|e| (Step::MarkReady, Box::new(e) as BoxError)),
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
    async fn storage_steps<H: ProvisionHooks>(
        &self,
        new: &NewTenant,
        tenant: &mut Tenant,
        storage: &Storage,
        hooks: &H,
        run: &mut Run,
        schema_txn: Option<&DatabaseTransaction>,
    ) -> Result<(), (ProvisionStep, BoxError)> {
        use ProvisionStep as Step;

        match storage {
            Storage::Postgres { admin, config, verifier: Some(verifier) } => {
                let server = config.server();
                let user = quote_ident(&config.user);
                let database = quote_ident(&config.name);
                run.step(Step::CreateRole, hooks, async {
                    admin
                        .execute_unprepared(&format!("CREATE ROLE {user} LOGIN PASSWORD {}", quote_literal(verifier)))
                        .await?;
                    Ok(Some(Undo::DropRole(config.user.clone())))
                })
                .await?;
                run.created.push(Created::Role { name: config.user.clone(), server: server.clone() });
                run.step(Step::CreateDatabase, hooks, async {
                    admin.execute_unprepared(&format!("CREATE DATABASE {database} OWNER {user}")).await?;
                    Ok(Some(Undo::DropDatabase(config.name.clone())))
                })
                .await?;
                run.created.push(Created::Database { name: config.name.clone(), server });
                run.step(Step::GrantPrivileges, hooks, async {
                    admin
                        .execute_unprepared(&format!("REVOKE CONNECT, TEMPORARY ON DATABASE {database} FROM PUBLIC"))
                        .await?;
                    admin
                        .execute_unprepared(&format!(
                            "GRANT CONNECT, TEMPORARY, CREATE ON DATABASE {database} TO {user}"
                        ))
                        .await?;
                    Ok(None)
                })
                .await?;
            }
            Storage::Postgres { verifier: None, .. } | Storage::None => {}
            Storage::TableRole { login } => {
                let user = &login.config.user;
                run.step(Step::CreateRole, hooks, async {
                    let txn = self.master().begin().await?;
                    let database = &self.master_identity().await?.1;
                    rls::create_table_tenant_role(&txn, user, &login.verifier, database).await?;
                    txn.commit().await?;
                    Ok(Some(Undo::DropLoginRole(user.clone())))
                })
                .await?;
                run.created.push(Created::Role { name: user.clone(), server: self.master_server() });
            }
            Storage::SqliteFile { config, path, create: true } => {
                run.step(Step::CreateDatabaseFile, hooks, async {
                    // Mark for removal before creating, so a half-written file goes too.
                    let conn =
                        connect(&dburl::sqlite_url(path, true), None).await.map_err(|err| Box::new(err) as BoxError)?;
                    conn.close().await?;
                    Ok(Some(Undo::RemoveFile(path.clone())))
                })
                .await?;
                run.created.push(Created::DatabaseFile { name: config.name.clone(), path: path.clone() });
            }
            Storage::SqliteFile { create: false, .. } => {}
            Storage::Schema { name, login } => {
                let user = &login.config.user;
                let in_txn = |what: &str| -> Result<&DatabaseTransaction, BoxError> {
                    schema_txn.ok_or_else(|| format!("no transaction for {what}").into())
                };
                run.step(Step::CreateRole, hooks, async {
                    let txn = in_txn("the schema tenant's role")?;
                    // The role's connections see the tenant's schema alone.
                    let search_path =
                        format!("ALTER ROLE {} SET search_path = {}", quote_ident(user), quote_ident(name));
                    let database = &self.master_identity().await?.1;
                    rls::create_login_role(txn, user, &login.verifier, false, database, &search_path).await?;
                    // Rolled back with the transaction; the undo entry covers a failed commit.
                    Ok(Some(Undo::DropLoginRole(user.clone())))
                })
                .await?;
                run.created.push(Created::Role { name: user.clone(), server: self.master_server() });
                run.step(Step::CreateSchema, hooks, async {
                    let sql = format!("CREATE SCHEMA {}", quote_ident(name));
                    match schema_txn {
                        Some(txn) => txn.execute_unprepared(&sql).await?,
                        None => self.master().execute_unprepared(&sql).await?,
                    };
                    // Rolled back with the transaction; the undo entry covers a failed commit.
                    Ok(Some(Undo::DropSchema(name.clone())))
                })
                .await?;
                run.created.push(Created::Schema { name: name.clone() });
                run.step(Step::GrantPrivileges, hooks, async {
                    let txn = in_txn("the schema tenant's privileges")?;
                    let (schema, role) = (quote_ident(name), quote_ident(user));
                    // Rows, not structure: the tenant's migrations run as the master user,
                    // whose future tables and sequences in the schema the role may use.
                    // One round trip: DDL without values, identifiers validated and quoted.
                    txn.execute_unprepared(&format!(
                        "GRANT USAGE ON SCHEMA {schema} TO {role}; \
                         ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} \
                         GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}; \
                         ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT USAGE, SELECT ON SEQUENCES TO {role}"
                    ))
                    .await?;
                    Ok(None)
                })
                .await?;
            }
        }

        if new.migrate && new.isolation.has_relational_storage() {
            let snapshot = tenant.clone();
            run.step(Step::Migrate, hooks, async {
                hooks.migrate(self, &snapshot, schema_txn).await?;
                Ok(None)
            })
            .await?;
        }

        run.step(Step::MarkReady, hooks, async {
            let now = Utc::now();
            let mark = entity::Entity::update_many()
                .col_expr(entity::Column::Status, Expr::value(TenantStatus::Ready.as_str()))
                .col_expr(entity::Column::UpdatedAt, Expr::value(now))
                .filter(entity::Column::TenantId.eq(tenant.id.as_str()));
            match schema_txn {
                Some(txn) => mark.exec(txn).await?,
                None => mark.exec(self.master()).await?,
            };
            tenant.status = TenantStatus::Ready;
            tenant.updated_at = now;
            Ok(None)
        })
        .await?;
        Ok(())
    }

    /// Inserts the registry row in state `provisioning`; the primary key makes exactly one
    /// of several concurrent runs win.
    async fn claim(&self, tenant: &Tenant) -> Result<(), BoxError> {
        use sea_orm::ActiveValue::Set;
        let row = entity::ActiveModel {
            tenant_id: Set(tenant.id.to_string()),
            name: Set(tenant.name.clone()),
            isolation_type: Set(tenant.isolation.as_str().to_owned()),
            config: Set(serde_json::to_value(&tenant.config)?),
            status: Set(TenantStatus::Provisioning.as_str().to_owned()),
            created_at: Set(tenant.created_at),
            updated_at: Set(tenant.updated_at),
        };
        match entity::Entity::insert(row).exec_without_returning(self.master()).await {
            Ok(_) => Ok(()),
            Err(err) if matches!(err.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))) => {
                Err(Box::new(Error::TenantExists { id: tenant.id.to_string() }))
            }
            Err(err) => Err(Box::new(err)),
        }
    }

    /// Removes what a failed run created, newest first. Returns what could not be removed.
    async fn undo(&self, id: &TenantId, storage: &Storage, undo: Vec<Undo>) -> Vec<String> {
        let mut leftovers = Vec::new();
        let admin = match storage {
            Storage::Postgres { admin, .. } => Some(admin),
            _ => None,
        };
        for item in undo.into_iter().rev() {
            let (what, outcome): (String, Result<(), BoxError>) = match item {
                Undo::DeleteRow => (
                    format!("registry row '{id}'"),
                    entity::Entity::delete_many()
                        // The primary key made this run the row's only writer.
                        .filter(entity::Column::TenantId.eq(id.as_str()))
                        .exec(self.master())
                        .await
                        .map(drop)
                        .map_err(Into::into),
                ),
                Undo::DropRole(name) => {
                    (format!("role '{name}'"), ddl(admin, &format!("DROP ROLE IF EXISTS {}", quote_ident(&name))).await)
                }
                Undo::DropDatabase(name) => (
                    format!("database '{name}'"),
                    // FORCE ends sessions a failed migration may have left open.
                    ddl(admin, &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(&name))).await,
                ),
                Undo::DropLoginRole(name) => (format!("role '{name}'"), drop_login_role(self.master(), &name).await),
                Undo::DropSchema(name) => (
                    format!("schema '{name}'"),
                    ddl(Some(self.master()), &format!("DROP SCHEMA IF EXISTS {} CASCADE", quote_ident(&name))).await,
                ),
                Undo::RemoveFile(path) => (format!("file '{}'", path.display()), remove_sqlite_file(&path)),
            };
            if let Err(err) = outcome {
                tracing::error!(tenant = %id, what = %what, error = %err, "could not undo a provisioning step");
                leftovers.push(what);
            }
        }
        leftovers
    }
}

/// The undo log of one run.
struct Run {
    undo: Vec<Undo>,
    created: Vec<Created>,
}

impl Run {
    /// Runs one step: records its undo action, then lets the hooks veto.
    async fn step<H: ProvisionHooks>(
        &mut self,
        step: ProvisionStep,
        hooks: &H,
        work: impl Future<Output = Result<Option<Undo>, BoxError>>,
    ) -> Result<(), (ProvisionStep, BoxError)> {
        match work.await {
            Ok(undo) => self.undo.extend(undo),
            Err(err) => return Err((step, err)),
        }
        tracing::debug!(?step, "provisioning step done");
        hooks.after_step(step).map_err(|err| (step, err))
    }
}

async fn exists(db: &DatabaseConnection, sql: &str, value: &str) -> Result<bool> {
    Ok(db.query_one_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, [value.into()])).await?.is_some())
}

/// Drops a tenant login role on the master, revoking what was granted to it first.
async fn drop_login_role(master: &DatabaseConnection, name: &str) -> Result<(), BoxError> {
    let (role, literal) = (quote_ident(name), quote_literal(name));
    let drop_owned = quote_literal(&format!("DROP OWNED BY {role}"));
    let drop_role = quote_literal(&format!("DROP ROLE {role}"));
    master
        .execute_unprepared(&format!(
            "DO $tenancy$ BEGIN \
               IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = {literal}) THEN \
                 EXECUTE {drop_owned}; EXECUTE {drop_role}; \
               END IF; \
             END $tenancy$"
        ))
        .await?;
    Ok(())
}

async fn ddl(db: Option<&DatabaseConnection>, sql: &str) -> Result<(), BoxError> {
    let db = db.ok_or("no admin connection")?;
    db.execute_unprepared(sql).await?;
    Ok(())
}

fn remove_sqlite_file(path: &std::path::Path) -> Result<(), BoxError> {
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(side));
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err.into()),
    }
}

async fn close_admin(storage: &Storage) {
    if let Storage::Postgres { admin, .. } = storage {
        let _ = admin.close_by_ref().await;
    }
}
