//! The database driver: a database-isolated tenant has a database of its own, owned by a
//! role of its own, on the PostgreSQL server its config names; on a SQLite master, a file
//! beside the master file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection};

use crate::connection::Route;
use crate::connection::url::{self, Backend, connect};
use crate::deletion::Removal;
use crate::operations::UndoEntry;
use crate::provisioning::{Created, NewTenant, ProvisionStep, Run, StepFailure};
use crate::registry::id::validate_sql_name;
use crate::registry::placement::{Ownership, PostgresDatabase, SqliteDatabase, TenantDatabase};
use crate::secrets::scram_sha256_verifier;
use crate::sql::{quote_ident, quote_literal};
use crate::storage::Plan;
use crate::{BoxError, Error, MissingValue, Result, Tenancy, Tenant, TenantId};

/// A PostgreSQL database to create (or adopt), with the admin connection that does it.
pub(crate) struct PostgresPlan {
    pub(crate) config: PostgresDatabase,
    admin: DatabaseConnection,
    /// The SCRAM verifier of the role to create; `None` when adopting a database.
    verifier: Option<String>,
    /// The tenant and the master database's name, for the mark ([`super::marker`]).
    tenant: TenantId,
    master: String,
    /// A clone's template database on the same server, copied with `CREATE DATABASE …
    /// TEMPLATE` when no session uses it.
    template: Option<TemplateDatabase>,
    /// The admin credentials' URL for the server (to reach the new database itself).
    admin_url: ::url::Url,
}

/// A database tenant's database that a clone can be made from on the server itself.
struct TemplateDatabase {
    name: String,
    /// The template tenant's role, which owns the template's objects.
    owner: String,
}

fn ownership(creates: bool) -> Ownership {
    if creates { Ownership::Created } else { Ownership::Adopted }
}

/// A SQLite file to create (or adopt).
pub(crate) struct SqlitePlan {
    pub(crate) config: SqliteDatabase,
    path: PathBuf,
    create: bool,
    /// The mark written into a created file's header ([`super::marker`]).
    application_id: i32,
}

pub(crate) async fn plan(tenancy: &Tenancy, new: &NewTenant) -> Result<Plan> {
    let db = new.database_spec().ok_or(Error::Missing { value: MissingValue::DatabaseName })?;
    validate_sql_name("database name", db.name())?;
    match tenancy.backend() {
        Backend::Sqlite => {
            let dir = tenancy.sqlite_dir().ok_or(Error::UnsupportedUrl {
                url: "sqlite::memory:".to_owned(),
                reason: "database isolation on SQLite needs a master database file, not an in-memory one",
            })?;
            let config = SqliteDatabase { name: db.name().to_owned(), ownership: ownership(db.creates()) };
            let path = config.file_in(dir);
            let application_id =
                super::marker::sqlite_application_id(&tenancy.master_url().sqlite_file_name().unwrap_or_default());
            Ok(Plan::SqliteFile(SqlitePlan { config, path, create: db.creates(), application_id }))
        }
        Backend::Postgres => {
            let login = db.postgres_login().ok_or(Error::Missing { value: MissingValue::DatabaseUser })?;
            validate_sql_name("database user", login.user())?;
            let password = login.password();
            if password.expose().is_empty() {
                return Err(Error::Missing { value: MissingValue::DatabasePassword });
            }
            let placed = match new.server() {
                Some(name) => crate::ServerChoice::Named(name.clone()).resolve(tenancy).await?,
                None => db.server_choice().resolve(tenancy).await?,
            };
            let (key, _) = tenancy.secret_key()?;
            let config = PostgresDatabase {
                password: key.encrypt(password, new.id().as_str()),
                name: db.name().to_owned(),
                user: login.user().to_owned(),
                host: placed.host,
                port: placed.port,
                ownership: ownership(db.creates()),
            };
            let admin_url = tenancy.admin_url_for(&config.host, config.port).await?;
            let admin = connect(admin_url.as_str(), None).await?;
            let verifier = db.creates().then(|| scram_sha256_verifier(password));
            if !db.creates() {
                // Adopting an existing database: the credentials must work now.
                let url =
                    url::postgres_url(&config.user, Some(password.expose()), &config.host, config.port, &config.name)?;
                match connect(url.as_str(), None).await {
                    Ok(conn) => {
                        let _ = conn.close().await;
                    }
                    Err(err) => {
                        let _ = admin.close().await;
                        return Err(err);
                    }
                }
            }
            let master = tenancy.master_identity().await?.1.clone();
            let template = match new.template() {
                Some(template) => template_database(tenancy, template, &config, &admin).await?,
                None => None,
            };
            Ok(Plan::PostgresDatabase(Box::new(PostgresPlan {
                config,
                admin,
                verifier,
                tenant: new.id().clone(),
                master,
                template,
                admin_url,
            })))
        }
    }
}

/// The template's database, when it is a PostgreSQL database tenant's on the same server
/// and the admin is a superuser (who alone may hand the copied objects to the new role).
async fn template_database(
    tenancy: &Tenancy,
    template: &TenantId,
    config: &PostgresDatabase,
    admin: &DatabaseConnection,
) -> Result<Option<TemplateDatabase>> {
    let Some(TenantDatabase::Postgres(db)) = tenancy.get_tenant(template).await?.placement().database().cloned() else {
        return Ok(None);
    };
    if db.host != config.host || db.port != config.port {
        return Ok(None);
    }
    let row = admin
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user",
        ))
        .await?;
    let superuser = row.map(|row| row.try_get_by_index::<bool>(0)).transpose()?.unwrap_or(false);
    Ok(superuser.then_some(TemplateDatabase { name: db.name, owner: db.user }))
}

/// Whether `err` is PostgreSQL's "object in use" (SQLSTATE 55006): `CREATE DATABASE …
/// TEMPLATE` while a session uses the template.
fn in_use(err: &sea_orm::DbErr) -> bool {
    match err {
        sea_orm::DbErr::Exec(sea_orm::RuntimeErr::SqlxError(err))
        | sea_orm::DbErr::Query(sea_orm::RuntimeErr::SqlxError(err)) => {
            err.as_database_error().and_then(|db| db.code()).is_some_and(|code| code == "55006")
        }
        _ => false,
    }
}

impl PostgresPlan {
    /// `CREATE DATABASE … TEMPLATE` of the clone's template, its objects then handed to the
    /// new role; `false` (nothing made) when a session uses the template.
    async fn create_from_template(&self, template: &TemplateDatabase) -> Result<bool, BoxError> {
        let (config, admin) = (&self.config, &self.admin);
        let (database, user) = (quote_ident(&config.name), quote_ident(&config.user));
        let created = admin
            .execute_unprepared(&format!(
                "CREATE DATABASE {database} TEMPLATE {} OWNER {user}",
                quote_ident(&template.name)
            ))
            .await;
        match created {
            Ok(_) => {}
            Err(err) if in_use(&err) => return Ok(false),
            Err(err) => return Err(err.into()),
        }
        // The copied objects are the template role's. REASSIGN OWNED also hands over the
        // databases that role owns (its own, the template): they are given back in the
        // same transaction.
        let mut url = self.admin_url.clone();
        url.set_path(&format!("/{}", config.name));
        let conn = connect(url.as_str(), None).await?;
        let owner = quote_ident(&template.owner);
        let handed = conn
            .execute_unprepared(&format!(
                "BEGIN; \
                 CREATE TEMPORARY TABLE tenancy_owned ON COMMIT DROP AS \
                   SELECT datname FROM pg_catalog.pg_database WHERE datdba = (SELECT oid FROM pg_catalog.pg_roles \
                   WHERE rolname = {owner_literal}); \
                 REASSIGN OWNED BY {owner} TO {user}; \
                 DO $tenancy$ DECLARE d text; BEGIN \
                   FOR d IN SELECT datname FROM tenancy_owned LOOP \
                     EXECUTE format('ALTER DATABASE %I OWNER TO %I', d, {owner_literal}); \
                   END LOOP; \
                 END $tenancy$; \
                 COMMIT",
                owner_literal = quote_literal(&template.owner),
            ))
            .await;
        let _ = conn.close().await;
        handed?;
        Ok(true)
    }

    pub(crate) async fn check_free(&self) -> Result<()> {
        if self.verifier.is_none() {
            return Ok(());
        }
        let config = &self.config;
        if super::exists(&self.admin, "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", &config.user).await? {
            return Err(Error::RoleExists { name: config.user.clone(), server: config.server() });
        }
        if super::exists(&self.admin, "SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1", &config.name).await? {
            return Err(Error::DatabaseExists { name: config.name.clone(), server: config.server() });
        }
        Ok(())
    }

    pub(crate) async fn create(&self, run: &mut Run<'_>) -> Result<(), StepFailure> {
        // Adopting: the database and its role exist already.
        let Some(verifier) = &self.verifier else { return Ok(()) };
        let (config, admin) = (&self.config, &self.admin);
        let server = config.server();
        let user = quote_ident(&config.user);
        let database = quote_ident(&config.name);
        let on_server = |name: &str| (name.to_owned(), config.host.clone(), config.port);
        let (name, host, port) = on_server(&config.user);
        run.step(ProvisionStep::CreateRole, Some(UndoEntry::Role { name, host, port }), async {
            // Created and marked as this master's in one implicit transaction. An admin
            // that is no superuser (CREATEDB CREATEROLE, as a managed server gives) must be
            // a member of the role to make it the new database's owner: it grants itself
            // the role it just created.
            let mark = super::marker::comment_sql(&format!("ROLE {user}"), &self.master, &self.tenant);
            let member = format!(
                "DO $member$ BEGIN IF NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) \
                 THEN EXECUTE format('GRANT %I TO %I', {}, current_user); END IF; END $member$",
                quote_literal(&config.user)
            );
            admin
                .execute_unprepared(&format!(
                    "CREATE ROLE {user} LOGIN PASSWORD {}; {mark}; {member}",
                    quote_literal(verifier)
                ))
                .await?;
            Ok(())
        })
        .await?;
        run.created(Created::Role { name: config.user.clone(), server: server.clone() });
        let (name, host, port) = on_server(&config.name);
        run.step(ProvisionStep::CreateDatabase, Some(UndoEntry::Database { name, host, port }), async {
            if let Some(template) = &self.template
                && self.create_from_template(template).await?
            {
                return Ok(());
            }
            admin.execute_unprepared(&format!("CREATE DATABASE {database} OWNER {user}")).await?;
            Ok(())
        })
        .await?;
        run.created(Created::Database { name: config.name.clone(), server });
        run.step(ProvisionStep::GrantPrivileges, None, async {
            admin.execute_unprepared(&format!("REVOKE CONNECT, TEMPORARY ON DATABASE {database} FROM PUBLIC")).await?;
            admin
                .execute_unprepared(&format!("GRANT CONNECT, TEMPORARY, CREATE ON DATABASE {database} TO {user}"))
                .await?;
            // Not in the CreateDatabase step: CREATE DATABASE runs alone, and the database
            // must be in the undo log before anything else can fail.
            let mark = super::marker::comment_sql(&format!("DATABASE {database}"), &self.master, &self.tenant);
            admin.execute_unprepared(&mark).await?;
            Ok(())
        })
        .await
    }

    /// Releases the admin connection.
    pub(crate) async fn close(&self) {
        let _ = self.admin.close_by_ref().await;
    }
}

impl SqlitePlan {
    pub(crate) fn check_free(&self) -> Result<()> {
        match (self.create, self.path.exists()) {
            (true, true) => Err(Error::DatabaseFileExists { path: self.path.clone() }),
            (false, false) => Err(Error::DatabaseMissing { name: self.path.display().to_string() }),
            _ => Ok(()),
        }
    }

    pub(crate) async fn create(&self, run: &mut Run<'_>) -> Result<(), StepFailure> {
        if !self.create {
            return Ok(());
        }
        // Journaled for removal before creating, so a half-written file goes too.
        run.step(ProvisionStep::CreateDatabaseFile, Some(UndoEntry::File { path: self.path.clone() }), async {
            let conn = connect(&url::sqlite_url(&self.path, true), None).await?;
            // The mark in the file's header (see `marker`).
            let marked = conn.execute_unprepared(&format!("PRAGMA application_id = {}", self.application_id)).await;
            conn.close().await?;
            marked?;
            Ok(())
        })
        .await?;
        run.created(Created::DatabaseFile { name: self.config.name.clone(), path: self.path.clone() });
        Ok(())
    }
}

/// Removes a SQLite database file and its side files.
pub(crate) fn remove_sqlite_file(path: &Path) -> Result<(), BoxError> {
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

/// The tenant's own pool; a SQLite tenant's statements are checked for `ATTACH`.
pub(crate) fn route(tenancy: &Tenancy, tenant: &Tenant, database: &TenantDatabase) -> Result<Route> {
    match database {
        TenantDatabase::Postgres(_) => Ok(Route::OwnPool { sqlite: false }),
        TenantDatabase::Sqlite(_) if tenancy.sqlite_dir().is_some() => Ok(Route::OwnPool { sqlite: true }),
        TenantDatabase::Sqlite(_) => Err(sqlite_without_master_file(tenant)),
    }
}

fn sqlite_without_master_file(tenant: &Tenant) -> Error {
    Error::CorruptRegistry {
        tenant: tenant.id().to_string(),
        reason: "a SQLite tenant database is registered but the master is not a SQLite file".to_owned(),
    }
}

/// The tenant database's URL, its password decrypted.
pub(crate) fn url(tenancy: &Tenancy, tenant: &Tenant, database: &TenantDatabase) -> Result<String> {
    match database {
        TenantDatabase::Postgres(db) => {
            let password = tenancy.secret_key()?.0.decrypt(&db.password, tenant.id().as_str())?;
            Ok(url::postgres_url(&db.user, Some(password.expose()), &db.host, db.port, &db.name)?.into())
        }
        TenantDatabase::Sqlite(db) => {
            let dir = tenancy.sqlite_dir().ok_or_else(|| sqlite_without_master_file(tenant))?;
            Ok(url::sqlite_url(&db.file_in(dir), false))
        }
    }
}

/// The tenant's database, connected as the tenant's role.
pub(crate) async fn migration_target(
    tenancy: &Tenancy,
    tenant: &Tenant,
    database: &TenantDatabase,
) -> Result<DatabaseConnection> {
    connect(&url(tenancy, tenant, database)?, None).await
}

pub(crate) fn describe(tenancy: &Tenancy, database: &TenantDatabase) -> String {
    match database {
        TenantDatabase::Postgres(db) => format!("database '{}' on {} as '{}'", db.name, db.server(), db.user),
        TenantDatabase::Sqlite(db) => match tenancy.sqlite_dir() {
            Some(dir) => format!("file '{}'", db.file_in(dir).display()),
            None => format!("file '{}.db'", db.name),
        },
    }
}

/// Drops a database tenant's database (ending its sessions) or role on `host:port`, if it
/// exists, with the admin credentials for that server.
pub(crate) async fn drop_on_server(tenancy: &Tenancy, entry: &UndoEntry) -> Result<(), BoxError> {
    let (sql, host, port) = match entry {
        UndoEntry::Role { name, host, port } => (format!("DROP ROLE IF EXISTS {}", quote_ident(name)), host, *port),
        // FORCE ends sessions a failed migration may have left open.
        UndoEntry::Database { name, host, port } => {
            (format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(name)), host, *port)
        }
        other => return Err(format!("not a database server object: {other}").into()),
    };
    let admin = connect(tenancy.admin_url_for(host, port).await?.as_str(), None).await?;
    let dropped = admin.execute_unprepared(&sql).await;
    let _ = admin.close().await;
    dropped?;
    Ok(())
}

/// What deleting a database tenant removes: the database and role tenancy created, or
/// nothing of an adopted one (unless `drop_adopted`, which drops the database and keeps
/// the role).
pub(crate) fn removals(tenancy: &Tenancy, database: &TenantDatabase, drop_adopted: bool) -> Vec<Removal> {
    let ownership = database.ownership();
    let kept_reason = match ownership {
        Ownership::Created => None,
        Ownership::Adopted => {
            Some("it was adopted (createtenant --no-create-database); --drop-adopted-database drops it")
        }
        Ownership::Unrecorded => Some(
            "the registry does not record that tenancy created it (registered by an earlier version); \
             --drop-adopted-database drops it",
        ),
    };
    match database {
        TenantDatabase::Postgres(db) => {
            let server = db.server();
            let mut list = Vec::new();
            match (kept_reason, drop_adopted) {
                (None, _) => {
                    list.push(Removal::Database { name: db.name.clone(), server: server.clone() });
                    list.push(Removal::Role { name: db.user.clone(), server });
                }
                (Some(_), true) => {
                    list.push(Removal::Database { name: db.name.clone(), server: server.clone() });
                    list.push(Removal::Kept {
                        what: format!("role '{}' on {server}", db.user),
                        reason: "tenancy did not create it".to_owned(),
                    });
                }
                (Some(reason), false) => list.push(Removal::Kept {
                    what: format!("database '{}' and role '{}' on {server}", db.name, db.user),
                    reason: reason.to_owned(),
                }),
            }
            list
        }
        TenantDatabase::Sqlite(db) => {
            let path = match tenancy.sqlite_dir() {
                Some(dir) => db.file_in(dir),
                None => PathBuf::from(format!("{}.db", db.name)),
            };
            match (kept_reason, drop_adopted) {
                (None, _) | (Some(_), true) => vec![Removal::File { path }],
                (Some(reason), false) => {
                    vec![Removal::Kept { what: format!("file '{}'", path.display()), reason: reason.to_owned() }]
                }
            }
        }
    }
}

/// Drops a database tenant's database (after ending its sessions, waiting at most
/// `wait`) or role, if it exists, on the server its config names.
pub(crate) async fn remove(tenancy: &Tenancy, tenant: &Tenant, removal: &Removal, wait: Duration) -> Result<()> {
    let Some(TenantDatabase::Postgres(db)) = tenant.placement().database() else {
        return Err(Error::CorruptRegistry {
            tenant: tenant.id().to_string(),
            reason: "a database removal for a tenant without a PostgreSQL database".to_owned(),
        });
    };
    let admin = connect(tenancy.admin_url_for(&db.host, db.port).await?.as_str(), None).await?;
    let result = match removal {
        Removal::Database { name, .. } => drop_database(&admin, tenant, name, wait).await,
        Removal::Role { name, .. } => admin
            .execute_unprepared(&format!("DROP ROLE IF EXISTS {}", quote_ident(name)))
            .await
            .map(drop)
            .map_err(Into::into),
        _ => Ok(()),
    };
    let _ = admin.close().await;
    result
}

/// Closes the database to new sessions, ends the open ones (waiting at most `wait`),
/// then drops it. When sessions remain, the database is opened again and nothing is
/// dropped.
async fn drop_database(admin: &DatabaseConnection, tenant: &Tenant, name: &str, wait: Duration) -> Result<()> {
    let exists = super::exists(admin, "SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1", name).await?;
    if !exists {
        return Ok(());
    }
    let database = quote_ident(name);
    // A `DROP DATABASE` killed part-way leaves the database invalid (`datconnlimit` -2):
    // nobody can connect and it cannot be altered, only dropped.
    let invalid =
        super::exists(admin, "SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1 AND datconnlimit = -2", name)
            .await?;
    if invalid {
        admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {database}")).await?;
        return Ok(());
    }
    admin.execute_unprepared(&format!("ALTER DATABASE {database} WITH ALLOW_CONNECTIONS false")).await?;
    let remaining = super::end_sessions(admin, super::SessionsOf::Database(name), wait).await?;
    if remaining > 0 {
        admin.execute_unprepared(&format!("ALTER DATABASE {database} WITH ALLOW_CONNECTIONS true")).await?;
        return Err(Error::SessionsRemain {
            tenant: tenant.id().to_string(),
            database: name.to_owned(),
            sessions: remaining,
            waited_secs: wait.as_secs(),
        });
    }
    admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)")).await?;
    Ok(())
}
