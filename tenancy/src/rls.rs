//! Row-level security for table isolation on PostgreSQL: the database itself keeps each
//! table-isolated tenant to its own rows of the shared tables.
//!
//! [`enable_row_security`] secures every table-scoped model ([`crate::scoped_models`]) whose
//! table exists in the master's `public` schema: row-level security enabled and forced, a
//! policy `tenancy_tenant_isolation` comparing the tenant column with the transaction's
//! `tenancy.tenant_id` setting, that setting as the column's default, and the application
//! role ([`app_role`]) allowed to read and write the rows.
//!
//! The tenant a statement is bound to comes from one of two places:
//!
//! - the connection's login role, when it is a tenant's own role
//!   ([`crate::TenantLogin`], named [`tenant_role_prefix`] + tenant id): the tenant's own
//!   pool ([`crate::TenantBinding::TenantPools`], the default). Such a role is no
//!   superuser, has no `BYPASSRLS` and inherits the application role's privileges;
//! - otherwise the `tenancy.tenant_id` setting, which a handle using
//!   [`crate::TenantBinding::SharedTransactions`] sets for each transaction together with
//!   a switch to the application role.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait};

use crate::sql::{quote_ident, quote_literal};
use crate::{Result, scoped_models};

/// The prefix of the application role a table-isolated tenant's statements run as:
/// `NOLOGIN`, `NOSUPERUSER`, `NOBYPASSRLS`, owning nothing, so the policies always apply
/// to it. The role is per master database ([`app_role`]): roles belong to the whole
/// cluster, and two applications (or test runs) on one server must not share one.
pub const APP_ROLE_PREFIX: &str = "tenancy_app_";

/// The application role of the master database `db` is connected to:
/// [`APP_ROLE_PREFIX`] followed by 12 hex digits of the MD5 of the database name (a
/// fixed-length name that fits PostgreSQL's 63 bytes whatever the database is called).
///
/// # Errors
/// [`crate::Error::Database`] when the query fails.
pub async fn app_role<C: ConnectionTrait>(db: &C) -> Result<String> {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT $1 || left(md5(current_database()), 12)",
            [APP_ROLE_PREFIX.into()],
        ))
        .await?;
    Ok(row.map(|row| row.try_get_by_index::<String>(0)).transpose()?.unwrap_or_default())
}

/// The start of every tenant login role name ([`crate::TenantLogin`]): `tnt_`, then
/// 10 hex digits of the MD5 of the master database's name and `_` (see
/// [`tenant_role_prefix`]), then the tenant id, so the name fits PostgreSQL's 63 bytes for
/// any tenant id and two masters on one server never share a role.
pub const TENANT_ROLE_PREFIX: &str = "tnt_";

/// The prefix of the tenant login roles of the master database `db` is connected to:
/// [`TENANT_ROLE_PREFIX`], 10 hex digits of the MD5 of the database name, `_` (15 bytes).
///
/// # Errors
/// [`crate::Error::Database`] when the query fails.
pub async fn tenant_role_prefix<C: ConnectionTrait>(db: &C) -> Result<String> {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT $1 || left(md5(current_database()), 10) || '_'",
            [TENANT_ROLE_PREFIX.into()],
        ))
        .await?;
    Ok(row.map(|row| row.try_get_by_index::<String>(0)).transpose()?.unwrap_or_default())
}

/// The SQL expression for the tenant a statement is bound to, in the policies and column
/// defaults: the tenant a tenant login role names (a connection of the tenant's own pool:
/// it cannot be changed by a statement, since tenant roles are not members of each
/// other), otherwise the transaction's `tenancy.tenant_id` setting (the shared-pool
/// binding), otherwise NULL, which matches no row.
fn bound_tenant_sql(role_prefix: &str) -> String {
    let setting = format!("current_setting({}, true)", quote_literal(TENANT_SETTING));
    let len = role_prefix.len();
    format!(
        "(CASE WHEN left(current_user::text, {len}) = {prefix} THEN substr(current_user::text, {start}) \
         ELSE {setting} END)",
        prefix = quote_literal(role_prefix),
        start = len + 1,
    )
}

/// Creates the login role of a table-isolated tenant on the master `txn` runs on: no
/// superuser, no `BYPASSRLS`, owning nothing, inheriting the application role's
/// privileges on the scoped tables (and creating that role if missing), allowed to
/// connect to the master database. `verifier` is the password's SCRAM verifier, so the
/// password itself never reaches the server's statement log.
pub(crate) async fn create_table_tenant_role(
    txn: &sea_orm::DatabaseTransaction,
    role: &str,
    verifier: &str,
    database: &str,
) -> Result<()> {
    let app_role = app_role(txn).await?;
    ensure_app_role(txn, &app_role).await?;
    let grant = format!("GRANT {} TO {}", quote_ident(&app_role), quote_ident(role));
    create_login_role(txn, role, verifier, true, database, &grant).await
}

/// `CREATE ROLE ... LOGIN` without powers that could defeat isolation, `CONNECT` on the
/// master database `database` (in case it was revoked from `PUBLIC`), then `and_then`
/// (a statement without values, or empty): one round trip.
pub(crate) async fn create_login_role<C: ConnectionTrait>(
    db: &C,
    role: &str,
    verifier: &str,
    inherit: bool,
    database: &str,
    and_then: &str,
) -> Result<()> {
    let inherit = if inherit { "INHERIT" } else { "NOINHERIT" };
    let role = quote_ident(role);
    db.execute_unprepared(&format!(
        "CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION {inherit} \
         PASSWORD {verifier}; GRANT CONNECT ON DATABASE {database} TO {role}; {and_then}",
        verifier = quote_literal(verifier),
        database = quote_ident(database),
    ))
    .await?;
    Ok(())
}

/// The name of the policy [`enable_row_security`] creates on every scoped table.
pub const POLICY_NAME: &str = "tenancy_tenant_isolation";

/// The setting holding the bound tenant id, set per transaction by the tenant handle.
pub const TENANT_SETTING: &str = "tenancy.tenant_id";

/// Advisory lock key serialising [`enable_row_security`] runs on one database
/// (`'tenarls'` as ASCII bytes).
const RLS_LOCK_KEY: i64 = 0x0074_656e_6172_6c73;

/// What [`enable_row_security`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RowSecurityReport {
    /// Tables now under row-level security, as `(table, tenant column)`, sorted by table.
    pub secured: Vec<(String, String)>,
    /// Table-scoped models whose table does not exist in the `public` schema (yet), so
    /// were left alone.
    pub missing: Vec<String>,
}

/// Puts every table-scoped model's table of the PostgreSQL master `db` under row-level
/// security, as the module docs describe, and creates the role [`app_role`] if missing.
///
/// Idempotent (the policy is re-created, grants repeated), in one transaction under an
/// advisory lock so concurrent runs on one database wait for each other. Tables of
/// scoped models that do not exist in `public` are skipped and listed in
/// [`RowSecurityReport::missing`]. On a SQLite master it does nothing and reports nothing
/// secured: SQLite has no row-level security.
///
/// # Errors
/// [`crate::Error::DuplicateScopedTable`] when two models claim one table,
/// [`crate::Error::Database`] when a statement fails (a scoped table without its tenant
/// column, a master user allowed neither to create the role nor to alter the tables);
/// nothing is changed then.
pub async fn enable_row_security(db: &DatabaseConnection) -> Result<RowSecurityReport> {
    let mut report = RowSecurityReport::default();
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(report);
    }
    let models = scoped_models()?;
    let scoped: Vec<(&str, &str)> = models
        .iter()
        .filter_map(|model| model.scope().table_column().map(|column| (model.table(), column)))
        .collect();
    if scoped.is_empty() {
        return Ok(report);
    }
    let pg = |sql: &str, values: Vec<sea_orm::Value>| Statement::from_sql_and_values(DbBackend::Postgres, sql, values);
    let txn = db.begin().await?;
    txn.execute_raw(pg("SELECT pg_advisory_xact_lock($1)", vec![RLS_LOCK_KEY.into()])).await?;
    let app_role = app_role(&txn).await?;
    ensure_app_role(&txn, &app_role).await?;

    let role = quote_ident(&app_role);
    let bound_tenant = bound_tenant_sql(&tenant_role_prefix(&txn).await?);
    // In the policies as a scalar subquery: evaluated once per statement (an InitPlan),
    // not once per row, and compared like a parameter. (A column default cannot hold a
    // subquery, and is evaluated once per inserted row anyway.)
    let policy_tenant = format!("(SELECT {bound_tenant})");
    txn.execute_unprepared(&format!("GRANT USAGE ON SCHEMA public TO {role}")).await?;
    for (table, column) in scoped {
        let exists = txn
            .query_one_raw(pg(
                "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = 'public' AND c.relname = $1 AND c.relkind IN ('r', 'p')",
                vec![table.into()],
            ))
            .await?
            .is_some();
        if !exists {
            report.missing.push(table.to_owned());
            continue;
        }
        let qtable = format!("public.{}", quote_ident(table));
        let qcolumn = quote_ident(column);
        let policy = quote_ident(POLICY_NAME);
        for sql in [
            format!("ALTER TABLE {qtable} ENABLE ROW LEVEL SECURITY"),
            format!("ALTER TABLE {qtable} FORCE ROW LEVEL SECURITY"),
            format!("DROP POLICY IF EXISTS {policy} ON {qtable}"),
            // No tenant role and an unset setting is NULL (or '' once the session has seen
            // it set): no row matches, so a statement without a bound tenant sees nothing
            // and writes nothing.
            format!(
                "CREATE POLICY {policy} ON {qtable} FOR ALL USING ({qcolumn} = {policy_tenant}) \
                 WITH CHECK ({qcolumn} = {policy_tenant})"
            ),
            format!("ALTER TABLE {qtable} ALTER COLUMN {qcolumn} SET DEFAULT {bound_tenant}"),
            format!("GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE {qtable} TO {role}"),
        ] {
            txn.execute_unprepared(&sql).await?;
        }
        let sequences = txn
            .query_all_raw(pg(
                "SELECT s.relname FROM pg_class s \
                 JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid \
                 JOIN pg_class t ON d.refobjid = t.oid \
                 JOIN pg_namespace n ON n.oid = t.relnamespace AND n.oid = s.relnamespace \
                 WHERE s.relkind = 'S' AND d.deptype IN ('a', 'i') AND n.nspname = 'public' AND t.relname = $1",
                vec![table.into()],
            ))
            .await?;
        for row in sequences {
            let sequence: String = row.try_get_by_index(0)?;
            txn.execute_unprepared(&format!(
                "GRANT USAGE, SELECT ON SEQUENCE public.{} TO {role}",
                quote_ident(&sequence)
            ))
            .await?;
        }
        report.secured.push((table.to_owned(), column.to_owned()));
    }
    txn.commit().await?;
    Ok(report)
}

/// Creates the application role unless it exists, and lets the current user switch to it.
///
/// Roles belong to the whole cluster, so masters in other databases may create it at the
/// same moment (their advisory locks are per database): a concurrent creator's role is
/// as good as ours.
async fn ensure_app_role(txn: &sea_orm::DatabaseTransaction, app_role: &str) -> Result<()> {
    let role = quote_ident(app_role);
    let name = quote_literal(app_role);
    // The exception block is a subtransaction: losing the race leaves ours intact.
    txn.execute_unprepared(&format!(
        "DO $tenancy$ BEGIN \
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {name}) THEN \
             CREATE ROLE {role} NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT; \
           END IF; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; \
         END $tenancy$"
    ))
    .await?;
    let pg = |sql: &str| Statement::from_sql_and_values(DbBackend::Postgres, sql, [app_role.into()]);
    // A role of that name made by someone else with powers that defeat the policies is
    // stripped of them (only then: concurrent ALTER ROLEs could conflict).
    let privileged = txn
        .query_one_raw(pg("SELECT 1 FROM pg_roles WHERE rolname = $1 AND (rolsuper OR rolbypassrls OR rolcanlogin)"))
        .await?
        .is_some();
    if privileged {
        txn.execute_unprepared(&format!("ALTER ROLE {role} NOSUPERUSER NOBYPASSRLS NOLOGIN")).await?;
    }
    // `set_config('role', ...)` needs membership (superusers have it implicitly).
    let member = txn.query_one_raw(pg("SELECT 1 WHERE pg_has_role(current_user, $1, 'MEMBER')")).await?.is_some();
    if !member {
        txn.execute_unprepared(&format!("GRANT {role} TO CURRENT_USER")).await?;
    }
    Ok(())
}
