//! Tenant login roles: the PostgreSQL roles schema and table tenants' own connections log
//! in as ([`crate::TenantLogin`]). Made, and dropped again, by the schema and table drivers.

use sea_orm::{ConnectionTrait, DatabaseConnection};

use crate::operations::UndoEntry;
use crate::registry::id::TenantId;
use crate::registry::placement::ShardDatabase;
use crate::secrets::{Password, scram_sha256_verifier_of_generated};
use crate::sql::{quote_ident, quote_literal};
use crate::table_isolation::row_security;
use crate::{BoxError, Result, Tenancy, TenantLogin};

/// Advisory-lock namespace of granting `CONNECT` to a new login role (`'tcon'` in ASCII);
/// held by the granting transaction, which must be short.
const GRANT_LOCK_NAMESPACE: i32 = 0x7463_6f6e;

/// A tenant login role to create: its registry record and its password's SCRAM verifier.
pub(crate) struct PlannedLogin {
    pub(crate) tenant: TenantId,
    pub(crate) config: TenantLogin,
    pub(crate) verifier: String,
    /// The role exists already (a tenant moving between schema and table isolation keeps
    /// its role): nothing to create, nothing to undo.
    pub(crate) existing: bool,
}

impl PlannedLogin {
    /// The login role of a new schema or table tenant on the PostgreSQL master, with a
    /// random password that only the secret key can recover.
    pub(crate) async fn new(tenancy: &Tenancy, id: &TenantId) -> Result<PlannedLogin> {
        let (prefix, _) = tenancy.master_identity().await?;
        let password = Password::generate();
        let (key, _) = tenancy.secret_key()?;
        Ok(PlannedLogin {
            tenant: id.clone(),
            verifier: scram_sha256_verifier_of_generated(&password),
            config: TenantLogin { user: format!("{prefix}{id}"), password: key.encrypt(&password, id.as_str()) },
            existing: false,
        })
    }

    /// The role `login` of `id`, which exists already.
    pub(crate) fn existing(id: &TenantId, login: TenantLogin) -> PlannedLogin {
        PlannedLogin { tenant: id.clone(), config: login, verifier: String::new(), existing: true }
    }

    /// Refuses a role name that exists already (left over, or another master's).
    pub(crate) async fn check_free(&self, tenancy: &Tenancy) -> Result<()> {
        let user = &self.config.user;
        if self.existing {
            return Ok(());
        }
        if super::exists(tenancy.master(), "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", user).await? {
            return Err(crate::Error::LoginRoleExists { name: user.clone() });
        }
        Ok(())
    }

    /// What removes the role again (a role of the master's server).
    pub(crate) fn undo(&self) -> UndoEntry {
        UndoEntry::LoginRole { name: self.config.user.clone(), shard: None }
    }
}

/// Creates the login role of a table-isolated tenant on the master `txn` runs on: no
/// superuser, no `BYPASSRLS`, owning nothing, inheriting the application role's
/// privileges on the scoped tables (and creating that role if missing), allowed to
/// connect to the master database. `verifier` is the password's SCRAM verifier, so the
/// password itself never reaches the server's statement log.
pub(crate) async fn create_table_tenant_role(
    txn: &sea_orm::DatabaseTransaction,
    tenant: &TenantId,
    role: &str,
    verifier: &str,
    database: &str,
) -> Result<()> {
    let app_role = row_security::app_role(txn).await?;
    row_security::ensure_app_role(txn, &app_role).await?;
    let grant = format!("GRANT {} TO {}", quote_ident(&app_role), quote_ident(role));
    create_login_role(txn, tenant, role, verifier, true, database, &grant).await
}

/// `CREATE ROLE ... LOGIN` without powers that could defeat isolation, marked as
/// `tenant`'s ([`super::marker`]), `CONNECT` on the master database `database` (in case it
/// was revoked from `PUBLIC`), then `and_then` (a statement without values, or empty): one
/// round trip. `db` must be a short transaction: it holds the lock that makes concurrent
/// grants take turns until it ends.
pub(crate) async fn create_login_role<C: ConnectionTrait>(
    db: &C,
    tenant: &TenantId,
    role: &str,
    verifier: &str,
    inherit: bool,
    database: &str,
    and_then: &str,
) -> Result<()> {
    let inherit = if inherit { "INHERIT" } else { "NOINHERIT" };
    let mark = super::marker::comment_sql(&format!("ROLE {}", quote_ident(role)), database, tenant);
    let role = quote_ident(role);
    // `GRANT CONNECT` rewrites the database's one `pg_database` row: creators take turns
    // (until their short transactions end) instead of failing with "tuple concurrently
    // updated".
    db.execute_unprepared(&format!(
        "SELECT pg_catalog.pg_advisory_xact_lock({GRANT_LOCK_NAMESPACE}, 0); \
         CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION {inherit} \
         PASSWORD {verifier}; {mark}; GRANT CONNECT ON DATABASE {database} TO {role}; {and_then}",
        verifier = quote_literal(verifier),
        database = quote_ident(database),
    ))
    .await?;
    Ok(())
}

/// Drops a tenant login role on the master's server, or on a shard's server (revoking
/// what was granted to it in the shard database).
pub(crate) async fn drop_login_role_in(
    tenancy: &Tenancy,
    shard: Option<&ShardDatabase>,
    name: &str,
) -> Result<(), BoxError> {
    let home = super::shard::Home::open(tenancy, shard).await?;
    let dropped = drop_login_role(home.db(tenancy), name).await;
    home.close().await;
    dropped
}

/// [`close_role_on`] the master's server or a shard's (`shard`).
pub(crate) async fn close_login_role_in(
    tenancy: &Tenancy,
    tenant: &crate::Tenant,
    shard: Option<&ShardDatabase>,
    name: &str,
    wait: std::time::Duration,
) -> Result<()> {
    let home = super::shard::Home::open(tenancy, shard).await?;
    let closed = close_role_on(home.db(tenancy), tenant, name, wait).await;
    home.close().await;
    closed
}

/// Drops a tenant login role on the master, revoking what was granted to it first.
pub(crate) async fn drop_login_role(master: &DatabaseConnection, name: &str) -> Result<(), BoxError> {
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

/// The master database's URL logged in as the tenant's role, its password decrypted.
pub(crate) fn url(
    tenancy: &Tenancy,
    tenant: &crate::Tenant,
    login: &TenantLogin,
    shard: Option<&ShardDatabase>,
) -> Result<String> {
    let password = tenancy.secret_key()?.0.decrypt(&login.password, tenant.id().as_str())?;
    if let Some(shard) = shard {
        // The master URL's options (TLS, timeouts) do not carry over to another server.
        let url = crate::connection::url::postgres_url(
            &login.user,
            Some(password.expose()),
            &shard.host,
            shard.port,
            &shard.database,
        )?;
        return Ok(url.into());
    }
    let url = tenancy.master_url().with_login(&login.user, password.expose()).ok_or_else(|| {
        crate::Error::CorruptRegistry {
            tenant: tenant.id().to_string(),
            reason: "a tenant login role is registered but the master is not a PostgreSQL server".to_owned(),
        }
    })?;
    Ok(url.into())
}

/// Stops a tenant login role from logging in and ends its sessions (waiting at most
/// `wait`), so dropping it, its schema or its rows waits on none of them.
async fn close_role_on(
    master: &DatabaseConnection,
    tenant: &crate::Tenant,
    name: &str,
    wait: std::time::Duration,
) -> Result<()> {
    if !super::exists(master, "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", name).await? {
        return Ok(());
    }
    master.execute_unprepared(&format!("ALTER ROLE {} NOLOGIN", quote_ident(name))).await?;
    let remaining = super::end_sessions(master, super::SessionsOf::Role(name), wait).await?;
    if remaining > 0 {
        master.execute_unprepared(&format!("ALTER ROLE {} LOGIN", quote_ident(name))).await?;
        return Err(crate::Error::SessionsRemain {
            tenant: tenant.id().to_string(),
            database: format!("role {name}"),
            sessions: remaining,
            waited_secs: wait.as_secs(),
        });
    }
    Ok(())
}
