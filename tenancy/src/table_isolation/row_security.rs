//! Row-level security for table isolation on PostgreSQL: the database itself keeps each
//! table-isolated tenant to its own rows of the shared tables.
//!
//! [`enable_row_security`] (the row-security step, which the migrator of
//! `tenancy-migrate` runs in the transaction of every migration of the shared tables)
//! secures every table-scoped model's ([`crate::scoped_models`]) table in the master's
//! `public` schema: row-level security enabled and forced, a policy
//! [`POLICY_NAME`] comparing the tenant column with the bound tenant (and a restrictive
//! twin, [`GUARD_POLICY_NAME`], so that no policy the application adds can widen it),
//! that tenant as the
//! column's default, and the application role ([`app_role`]) allowed to read and write
//! the rows. It also closes the ways around the policies that the application's own
//! schema can open: foreign keys between scoped tables get the tenant column, views over
//! scoped tables become `security_invoker`, materialized views over them are kept from
//! tenants (see [`enable_row_security_in`]). [`audit`] walks the catalog and lists what
//! is not so.
//!
//! # The bound tenant
//!
//! The tenant a statement is bound to comes from one of two places:
//!
//! - the connection's **session user**, when it is a tenant's own login role
//!   ([`crate::TenantLogin`], named [`tenant_role_prefix`] + tenant id): the tenant's own
//!   pool ([`crate::TenantBinding::TenantPools`], the default). `session_user` is the role
//!   the connection logged in as, which no statement can change: `SET ROLE` (to the
//!   application role, of which the tenant role is a member) and
//!   `set_config('role', ...)` change `current_user` only, `SET SESSION AUTHORIZATION`
//!   needs a superuser session user, and tenant roles are not members of each other. The
//!   `tenancy.tenant_id` setting is never consulted for such a connection, so setting it
//!   (in a `SELECT`, a `DO` block, for the session) changes nothing. Such a role is no
//!   superuser, has no `BYPASSRLS` and owns nothing, so the forced policies always apply
//!   to it;
//! - otherwise the `tenancy.tenant_id` setting, which a handle using
//!   [`crate::TenantBinding::SharedTransactions`] sets for each transaction together with
//!   a switch to the application role. There the session user is the master user, so the
//!   binding is only as strong as the statements run inside the transaction are trusted
//!   (see that binding's documentation).
//!
//! A master secured by an older version (whose policies read `current_user`) gets the
//! current policies and defaults the next time the step runs: the next migration of the
//! shared tables, or a call of [`enable_row_security`].
//!
//! # What the application's schema must not do
//!
//! - **Views.** A view is evaluated with its owner's rights, and migrations run as the
//!   master user (often a superuser, which row-level security does not apply to): granted
//!   to tenants, a plain view over a scoped table shows every tenant's rows. The step sets
//!   `security_invoker = true` on every view, of any schema, that reads a scoped table
//!   directly or through other views; the reader then needs privileges on the tables too
//!   (tenants have them on scoped tables; grant the application role `SELECT` on shared
//!   tables a view joins). A view the master user may not alter is refused.
//! - **Materialized views** hold every tenant's rows and cannot be `security_invoker`:
//!   the step revokes them from `PUBLIC`, the application role and the tenant roles,
//!   reports them ([`RowSecurityReport::materialized_views`]) and logs a warning on every
//!   run. Read them through the master connection (and filter by tenant yourself), or use
//!   a table the application maintains per tenant instead.
//! - **`SECURITY DEFINER` functions** (and functions called by views) run with their
//!   owner's rights, which the step cannot see into: one owned by a superuser or a
//!   `BYPASSRLS` role reads every tenant's rows for whoever may execute it. Owned by an
//!   ordinary master user, the forced policies still apply with the caller's session user
//!   (the tenant). Do not grant tenants such functions over scoped tables; revoke
//!   `EXECUTE` from `PUBLIC` on them.
//! - **Foreign keys** between scoped tables must include the tenant column, or a tenant
//!   could point at another tenant's row (learning that it exists from which inserts
//!   succeed, since constraint checks ignore row-level security) and another tenant's
//!   delete would cascade into its rows. The step rewrites them on PostgreSQL; on SQLite
//!   (which cannot alter a foreign key) it refuses, naming what to declare:
//!   `FOREIGN KEY (tenant_id, parent_id) REFERENCES parent (tenant_id, id)` with
//!   `UNIQUE (tenant_id, id)` on the parent.
//!
//! # Catalog metadata
//!
//! Row-level security hides rows, not the catalog: a tenant login role can read
//! `pg_namespace` (other schema tenants' schema names, which are their tenant ids),
//! `pg_roles` (every tenant's login role name, hence every tenant id), and the statistics
//! views (`pg_stat_all_tables`, `pg_class.reltuples`: approximate row counts of the shared
//! tables and of other schema tenants' tables). Nothing of another tenant's rows is
//! readable that way, but an operator who wants the ids private can `REVOKE SELECT ON
//! pg_catalog.pg_roles, pg_catalog.pg_authid` ... (and the statistics views) `FROM
//! PUBLIC` in the master database, at the price of tools that expect them.

use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, Statement, TransactionTrait};

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
    Ok(tenant_role_prefix_and_database(db).await?.0)
}

/// [`tenant_role_prefix`] and the name of the database `db` is connected to, in one query.
pub(crate) async fn tenant_role_prefix_and_database<C: ConnectionTrait>(db: &C) -> Result<(String, String)> {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT $1 || left(md5(current_database()), 10) || '_', current_database()::text",
            [TENANT_ROLE_PREFIX.into()],
        ))
        .await?;
    let Some(row) = row else { return Ok(Default::default()) };
    Ok((row.try_get_by_index::<String>(0)?, row.try_get_by_index::<String>(1)?))
}

/// The SQL expression for the tenant a statement is bound to, in the policies and column
/// defaults: the tenant a tenant login role names when the *session* user is one (a
/// connection of the tenant's own pool), otherwise the transaction's `tenancy.tenant_id`
/// setting (the shared-pool binding, whose session user is the master user), otherwise
/// NULL, which matches no row.
///
/// `session_user` is the role the connection logged in as: no statement of the session
/// can change it (`SET ROLE` and `set_config('role', ...)` change `current_user` only;
/// `SET SESSION AUTHORIZATION` needs a superuser session user). So a tenant's connection
/// is bound to its tenant whatever it does, even after switching to the application role
/// it belongs to, and the setting is never consulted for it.
fn bound_tenant_sql(role_prefix: &str) -> String {
    let setting = format!("current_setting({}, true)", quote_literal(TENANT_SETTING));
    let len = role_prefix.len();
    format!(
        "(CASE WHEN left(session_user::text, {len}) = {prefix} THEN substr(session_user::text, {start}) \
         ELSE {setting} END)",
        prefix = quote_literal(role_prefix),
        start = len + 1,
    )
}

/// The name of the policy [`enable_row_security`] creates on every scoped table.
pub const POLICY_NAME: &str = "tenancy_tenant_isolation";

/// The name of the restrictive policy [`enable_row_security`] creates next to
/// [`POLICY_NAME`], with the same condition: permissive policies are OR-ed together, so
/// a permissive policy the application adds (`USING (true)` for an admin, say) would
/// widen the tenant's rows; a restrictive one is AND-ed with them all, so nothing can.
pub const GUARD_POLICY_NAME: &str = "tenancy_tenant_guard";

/// The setting holding the bound tenant id, set per transaction by the tenant handle.
pub const TENANT_SETTING: &str = "tenancy.tenant_id";

/// Advisory lock key (`pg_advisory_xact_lock(bigint)`) serialising row-security steps
/// ([`enable_row_security_in`]) on one database (`'tenarls'` as ASCII bytes). The
/// migrator takes it before migrating the shared tables, so that a migration and a
/// concurrent step never wait for each other's table locks in opposite orders.
pub const ROW_SECURITY_LOCK: i64 = 0x0074_656e_6172_6c73;

/// What [`enable_row_security`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RowSecurityReport {
    /// Tables now under row-level security, as `(table, tenant column)`, sorted by table.
    pub secured: Vec<(String, String)>,
    /// Table-scoped models whose table does not exist in the `public` schema (yet), so
    /// were left alone.
    pub missing: Vec<String>,
    /// Every view (of any schema, as `schema.view`) that reads a secured table, directly
    /// or through other views: each is now `security_invoker`, so it shows a tenant its
    /// own rows only (and a role without privileges on the tables nothing). Sorted.
    pub views: Vec<String>,
    /// Every materialized view (as `schema.view`) that reads a secured table: it holds
    /// the rows of every tenant and cannot apply the policies, so `PUBLIC`, the
    /// application role and the tenant login roles may not read it (their privileges are
    /// revoked on every run, and each run logs a warning naming it). Sorted.
    pub materialized_views: Vec<String>,
    /// Foreign keys between secured tables that this run rewrote to include the tenant
    /// column, as `table.constraint`. Sorted.
    pub foreign_keys_rewritten: Vec<String>,
    /// Unique constraints this run added to parent tables for those foreign keys, as
    /// `table.constraint`.
    pub unique_keys_added: Vec<String>,
}

/// The table-scoped models' `(table, tenant column)`.
fn table_scoped() -> Result<Vec<(&'static str, &'static str)>> {
    Ok(scoped_models()?
        .iter()
        .filter_map(|model| model.scope().table_column().map(|column| (model.table(), column)))
        .collect())
}

/// Secures the table-scoped models' tables of the master `db` for table isolation, in
/// one transaction: see [`enable_row_security_in`], which does the work.
///
/// # Errors
/// As [`enable_row_security_in`]; nothing is changed then.
pub async fn enable_row_security(db: &DatabaseConnection) -> Result<RowSecurityReport> {
    if table_scoped()?.is_empty() {
        return Ok(RowSecurityReport::default());
    }
    let txn = db.begin().await?;
    let report = enable_row_security_in(&txn).await?;
    txn.commit().await?;
    Ok(report)
}

/// The row-security step, in the caller's transaction `txn` on the master database (the
/// migrator of `tenancy-migrate` runs it in the transaction of the migrations that
/// created or changed the tables, so a migration and its securing commit together or
/// not at all).
///
/// On PostgreSQL, under an advisory lock so concurrent runs on one database wait for each
/// other, and idempotently (policies and defaults re-created, so a master secured by an
/// older version gets the current ones):
///
/// 1. every table-scoped model's table in `public`: row-level security enabled and
///    forced, the policies [`POLICY_NAME`] and [`GUARD_POLICY_NAME`] and the tenant
///    column's default as the module
///    docs describe, and the application role ([`app_role`], created if missing) allowed
///    to read and write the rows;
/// 2. every foreign key from one of those tables to another that does not include the
///    tenant column is replaced by one that does, `(tenant, cols) REFERENCES parent
///    (tenant, referenced cols)`, keeping its name, `ON DELETE` / `ON UPDATE` actions and
///    deferrability (`ON DELETE SET NULL` / `SET DEFAULT` touch the original columns only,
///    never the tenant column); the parent gets the unique constraint on
///    `(tenant, referenced cols)` the new key needs unless a unique index covers exactly
///    those columns. A tenant then cannot point at another tenant's row, learn that it
///    exists, or be reached by another tenant's cascade;
/// 3. every view, of any schema, that reads one of those tables directly or through other
///    views is set `security_invoker = true`, so it is evaluated with the reader's rights
///    and policies, not its owner's;
/// 4. every materialized view over them (which holds every tenant's rows and cannot be
///    `security_invoker`) has its privileges revoked from `PUBLIC`, the application role
///    and the tenant login roles, is listed in [`RowSecurityReport::materialized_views`],
///    and is logged with `tracing::warn!` on every run: fail closed, the application must
///    read it through its master connection, not through a tenant handle.
///
/// On a SQLite master, which has no row-level security and cannot alter foreign keys,
/// nothing is changed: the step checks (with `pragma_foreign_key_list`) that every
/// foreign key between table-scoped tables includes the tenant column, and refuses
/// otherwise. Tables of scoped models that do not exist are skipped (listed in
/// [`RowSecurityReport::missing`] on PostgreSQL).
///
/// Requires PostgreSQL 15 or later (`security_invoker`, `ON DELETE SET NULL (columns)`).
///
/// # Errors
/// - [`crate::Error::DuplicateScopedTable`] when two models claim one table;
/// - [`crate::Error::RowSecurityRefused`] for a foreign key that cannot be rewritten (or
///   on SQLite, any that lacks the tenant column: the message says what to declare), a
///   view the master user may not alter, a materialized view that stays readable by
///   tenants;
/// - [`crate::Error::Database`] when a statement fails (a scoped table without its tenant
///   column, a master user allowed neither to create the role nor to alter the tables).
///
/// The caller's transaction should then be rolled back.
pub async fn enable_row_security_in(txn: &DatabaseTransaction) -> Result<RowSecurityReport> {
    let scoped = table_scoped()?;
    if scoped.is_empty() {
        return Ok(RowSecurityReport::default());
    }
    match txn.get_database_backend() {
        DbBackend::Postgres => secure_postgres(txn, &scoped).await,
        DbBackend::Sqlite => {
            check_sqlite_foreign_keys(txn, &scoped).await?;
            Ok(RowSecurityReport::default())
        }
        _ => Ok(RowSecurityReport::default()),
    }
}

/// Whether the row-security step of this version has secured every table-scoped table
/// present in `public` of the PostgreSQL master `db`: each has the restrictive policy
/// [`GUARD_POLICY_NAME`] binding the tenant from `session_user`. One read-only query;
/// `true` on SQLite. The migrator asks it when there is nothing to migrate, so a master
/// secured by an older version is brought up to date by the next `migratetenant` or
/// `migratealltenants`, not only by the next migration.
///
/// # Errors
/// [`crate::Error::DuplicateScopedTable`], or [`crate::Error::Database`] when the query
/// fails.
pub async fn row_security_is_current<C: ConnectionTrait>(db: &C) -> Result<bool> {
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(true);
    }
    let scoped = table_scoped()?;
    if scoped.is_empty() {
        return Ok(true);
    }
    // language=PostgreSQL
    let sql = "SELECT NOT EXISTS (SELECT 1 FROM pg_class c \
                 WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') \
                   AND c.relname::text IN (SELECT json_array_elements_text($1::json)) \
                   AND NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = $2 \
                     AND pg_get_expr(p.polqual, p.polrelid) LIKE '%SESSION_USER%'))";
    let row = db
        .query_one_raw(pg(sql, vec![json_list(scoped.iter().map(|(table, _)| *table)), GUARD_POLICY_NAME.into()]))
        .await?;
    Ok(row.map(|row| row.try_get_by_index::<bool>(0)).transpose()?.unwrap_or(false))
}

/// A statement for PostgreSQL with values.
fn pg(sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// `names` as a JSON array, bound as text and read with `json_array_elements_text`: a
/// list of names as one value without the driver's array support.
fn json_list<'a>(names: impl IntoIterator<Item = &'a str>) -> sea_orm::Value {
    serde_json::Value::from(names.into_iter().collect::<Vec<_>>()).to_string().into()
}

/// A JSON array of strings read back from a query.
fn from_json_list(text: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|err| crate::Error::Database(sea_orm::DbErr::Custom(err.to_string())))
}

async fn secure_postgres(txn: &DatabaseTransaction, scoped: &[(&str, &str)]) -> Result<RowSecurityReport> {
    let mut report = RowSecurityReport::default();
    txn.execute_raw(pg("SELECT pg_advisory_xact_lock($1)", vec![ROW_SECURITY_LOCK.into()])).await?;
    let app_role = app_role(txn).await?;
    ensure_app_role(txn, &app_role).await?;
    let role_prefix = tenant_role_prefix(txn).await?;

    let role = quote_ident(&app_role);
    let bound_tenant = bound_tenant_sql(&role_prefix);
    // In the policies as a scalar subquery: evaluated once per statement (an InitPlan),
    // not once per row, and compared like a parameter. (A column default cannot hold a
    // subquery, and is evaluated once per inserted row anyway.)
    let policy_tenant = format!("(SELECT {bound_tenant})");
    txn.execute_unprepared(&format!("GRANT USAGE ON SCHEMA public TO {role}")).await?;
    let mut present = Vec::new();
    for &(table, column) in scoped {
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
        let (policy, guard) = (quote_ident(POLICY_NAME), quote_ident(GUARD_POLICY_NAME));
        // One round trip: DDL without values, identifiers quoted.
        txn.execute_unprepared(&format!(
            "ALTER TABLE {qtable} ENABLE ROW LEVEL SECURITY; \
             ALTER TABLE {qtable} FORCE ROW LEVEL SECURITY; \
             DROP POLICY IF EXISTS {policy} ON {qtable}; \
             CREATE POLICY {policy} ON {qtable} AS PERMISSIVE FOR ALL USING ({qcolumn} = {policy_tenant}) \
               WITH CHECK ({qcolumn} = {policy_tenant}); \
             DROP POLICY IF EXISTS {guard} ON {qtable}; \
             CREATE POLICY {guard} ON {qtable} AS RESTRICTIVE FOR ALL USING ({qcolumn} = {policy_tenant}) \
               WITH CHECK ({qcolumn} = {policy_tenant}); \
             ALTER TABLE {qtable} ALTER COLUMN {qcolumn} SET DEFAULT {bound_tenant}; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE {qtable} TO {role}"
        ))
        .await?;
        let sequences = txn
            .query_all_raw(pg(
                "SELECT s.relname::text FROM pg_class s \
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
        present.push((table, column));
    }
    report.secured.sort();
    secure_foreign_keys(txn, &present, &mut report).await?;
    secure_views(txn, &present, &app_role, &role_prefix, &mut report).await?;
    Ok(report)
}

/// A foreign key as the catalog describes it.
#[derive(Debug)]
struct ForeignKey {
    name: String,
    child: String,
    parent: String,
    columns: Vec<String>,
    referenced: Vec<String>,
    on_update: String,
    on_delete: String,
    matching: String,
    deferrable: bool,
    deferred: bool,
    /// The columns `ON DELETE SET NULL / SET DEFAULT (columns)` names (PostgreSQL 15).
    set_columns: Vec<String>,
}

/// The foreign keys between the `public` tables `tables` (children and parents both in
/// the list), sorted by table and name; not the copies PostgreSQL keeps on partitions,
/// which follow their parent constraint.
async fn foreign_keys_between<C: ConnectionTrait>(txn: &C, tables: &[(&str, &str)]) -> Result<Vec<ForeignKey>> {
    // language=PostgreSQL
    let sql = "WITH scoped AS (SELECT c.oid FROM pg_class c \
                 WHERE c.relnamespace = 'public'::regnamespace \
                 AND c.relname::text IN (SELECT json_array_elements_text($1::json))) \
               SELECT con.conname::text, c.relname::text, p.relname::text, \
                 (SELECT json_agg(a.attname ORDER BY k.i) FROM unnest(con.conkey) WITH ORDINALITY k(n, i) \
                    JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n)::text, \
                 (SELECT json_agg(a.attname ORDER BY k.i) FROM unnest(con.confkey) WITH ORDINALITY k(n, i) \
                    JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n)::text, \
                 con.confupdtype::text, con.confdeltype::text, con.confmatchtype::text, \
                 con.condeferrable, con.condeferred, \
                 COALESCE((SELECT json_agg(a.attname ORDER BY k.i) FROM unnest(con.confdelsetcols) \
                    WITH ORDINALITY k(n, i) JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n), \
                    '[]'::json)::text \
               FROM pg_constraint con \
               JOIN pg_class c ON c.oid = con.conrelid JOIN pg_class p ON p.oid = con.confrelid \
               WHERE con.contype = 'f' AND con.conparentid = 0 AND con.conrelid IN (SELECT oid FROM scoped) \
                 AND con.confrelid IN (SELECT oid FROM scoped) \
               ORDER BY 2, 1";
    let rows = txn.query_all_raw(pg(sql, vec![json_list(tables.iter().map(|(table, _)| *table))])).await?;
    let mut keys = Vec::with_capacity(rows.len());
    for row in rows {
        keys.push(ForeignKey {
            name: row.try_get_by_index(0)?,
            child: row.try_get_by_index(1)?,
            parent: row.try_get_by_index(2)?,
            columns: from_json_list(&row.try_get_by_index::<String>(3)?)?,
            referenced: from_json_list(&row.try_get_by_index::<String>(4)?)?,
            on_update: row.try_get_by_index(5)?,
            on_delete: row.try_get_by_index(6)?,
            matching: row.try_get_by_index(7)?,
            deferrable: row.try_get_by_index(8)?,
            deferred: row.try_get_by_index(9)?,
            set_columns: from_json_list(&row.try_get_by_index::<String>(10)?)?,
        });
    }
    Ok(keys)
}

/// Whether a foreign key from a table with tenant column `child_tenant` to one with
/// `parent_tenant` pairs the two tenant columns.
fn pairs_tenants(columns: &[String], referenced: &[String], child_tenant: &str, parent_tenant: &str) -> bool {
    columns.iter().zip(referenced).any(|(c, r)| c == child_tenant && r == parent_tenant)
}

/// What to declare instead of a foreign key without the tenant column.
fn composite_fix(
    child_tenant: &str,
    columns: &[String],
    parent: &str,
    parent_tenant: &str,
    referenced: &[String],
) -> String {
    let (columns, referenced) = (columns.join(", "), referenced.join(", "));
    format!(
        "declare it as FOREIGN KEY ({child_tenant}, {columns}) REFERENCES {parent} ({parent_tenant}, {referenced}), \
         with UNIQUE ({parent_tenant}, {referenced}) on {parent}"
    )
}

/// The SQL of a referential action code of `pg_constraint`.
fn action_sql(code: &str) -> &'static str {
    match code {
        "r" => "RESTRICT",
        "c" => "CASCADE",
        "n" => "SET NULL",
        "d" => "SET DEFAULT",
        _ => "NO ACTION",
    }
}

/// A constraint name of at most 63 bytes: `name` itself, or its start and a hash of it.
fn constraint_name(name: &str) -> String {
    const MAX: usize = 63;
    if name.len() <= MAX {
        return name.to_owned();
    }
    let digest = <sha2::Sha256 as sha2::Digest>::digest(name.as_bytes());
    let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let mut cut = MAX - hash.len() - 1;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{hash}", &name[..cut])
}

/// Step 2 of [`enable_row_security_in`]: foreign keys between scoped tables include the
/// tenant column.
async fn secure_foreign_keys(
    txn: &DatabaseTransaction,
    tables: &[(&str, &str)],
    report: &mut RowSecurityReport,
) -> Result<()> {
    let tenant_of: std::collections::HashMap<&str, &str> = tables.iter().copied().collect();
    for key in foreign_keys_between(txn, tables).await? {
        let (Some(&child_tenant), Some(&parent_tenant)) =
            (tenant_of.get(key.child.as_str()), tenant_of.get(key.parent.as_str()))
        else {
            continue;
        };
        if pairs_tenants(&key.columns, &key.referenced, child_tenant, parent_tenant) {
            continue;
        }
        let object = format!("foreign key \"{}\" of table \"{}\"", key.name, key.child);
        let fix = composite_fix(child_tenant, &key.columns, &key.parent, parent_tenant, &key.referenced);
        let refuse = |reason: String| crate::Error::RowSecurityRefused { object: object.clone(), reason };
        if key.columns.iter().any(|c| c == child_tenant) || key.referenced.iter().any(|r| r == parent_tenant) {
            return Err(refuse(format!("it pairs a tenant column with another column; {fix}")));
        }
        if matches!(key.on_update.as_str(), "n" | "d") {
            return Err(refuse(format!(
                "ON UPDATE {} would also clear the tenant column of the composite key; {fix} and \
                 ON UPDATE NO ACTION, RESTRICT or CASCADE",
                action_sql(&key.on_update)
            )));
        }
        if key.matching == "f" && key.columns.len() > 1 {
            return Err(refuse(format!(
                "MATCH FULL over several columns changes meaning once the tenant column (never null) joins \
                 the key; {fix}"
            )));
        }
        ensure_parent_unique(txn, &key.parent, parent_tenant, &key.referenced, report).await?;

        let list = |columns: &[String]| columns.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ");
        let on_delete = match key.on_delete.as_str() {
            // Only the original columns are cleared: the tenant column keeps the tenant.
            code @ ("n" | "d") => {
                let set = if key.set_columns.is_empty() { &key.columns } else { &key.set_columns };
                format!("{} ({})", action_sql(code), list(set))
            }
            code => action_sql(code).to_owned(),
        };
        let timing = match (key.deferrable, key.deferred) {
            (true, true) => "DEFERRABLE INITIALLY DEFERRED",
            (true, false) => "DEFERRABLE INITIALLY IMMEDIATE",
            (false, _) => "NOT DEFERRABLE",
        };
        let name = quote_ident(&key.name);
        let sql = format!(
            "ALTER TABLE public.{child} DROP CONSTRAINT {name}, ADD CONSTRAINT {name} \
             FOREIGN KEY ({child_tenant}, {columns}) REFERENCES public.{parent} ({parent_tenant}, {referenced}) \
             ON UPDATE {on_update} ON DELETE {on_delete} {timing}",
            child = quote_ident(&key.child),
            child_tenant = quote_ident(child_tenant),
            columns = list(&key.columns),
            parent = quote_ident(&key.parent),
            parent_tenant = quote_ident(parent_tenant),
            referenced = list(&key.referenced),
            on_update = action_sql(&key.on_update),
        );
        match txn.execute_unprepared(&sql).await {
            Ok(_) => {}
            Err(err) if matches!(err.sql_err(), Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_))) => {
                return Err(refuse(format!(
                    "rows of {} already reference a row of {} that belongs to another tenant; correct them, \
                     then migrate again ({err})",
                    key.child, key.parent
                )));
            }
            Err(err) => return Err(err.into()),
        }
        tracing::info!(table = %key.child, foreign_key = %key.name, "foreign key rewritten to include the tenant column");
        report.foreign_keys_rewritten.push(format!("{}.{}", key.child, key.name));
    }
    report.foreign_keys_rewritten.sort();
    Ok(())
}

/// Adds `UNIQUE (tenant, referenced)` to `parent` unless a unique index covers exactly
/// those columns (in any order, as a foreign key needs).
async fn ensure_parent_unique(
    txn: &DatabaseTransaction,
    parent: &str,
    tenant: &str,
    referenced: &[String],
    report: &mut RowSecurityReport,
) -> Result<()> {
    let columns: Vec<&str> = std::iter::once(tenant).chain(referenced.iter().map(String::as_str)).collect();
    // language=PostgreSQL
    let sql = "SELECT 1 FROM pg_index i \
               WHERE i.indrelid = $1::regclass AND i.indisunique AND i.indisvalid \
                 AND i.indpred IS NULL AND i.indexprs IS NULL AND i.indnkeyatts = $3 \
                 AND NOT EXISTS (SELECT 1 FROM generate_series(0, i.indnkeyatts - 1) g \
                   LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[g] \
                   WHERE a.attname IS NULL \
                      OR a.attname::text NOT IN (SELECT json_array_elements_text($2::json)))";
    let qualified = format!("public.{}", quote_ident(parent));
    let len = i32::try_from(columns.len()).unwrap_or(i32::MAX);
    let covered = txn
        .query_one_raw(pg(sql, vec![qualified.clone().into(), json_list(columns.iter().copied()), len.into()]))
        .await?
        .is_some();
    if covered {
        return Ok(());
    }
    let name = constraint_name(&format!("{parent}_{}_key", columns.join("_")));
    let list = columns.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ");
    txn.execute_unprepared(&format!("ALTER TABLE {qualified} ADD CONSTRAINT {} UNIQUE ({list})", quote_ident(&name)))
        .await?;
    report.unique_keys_added.push(format!("{parent}.{name}"));
    Ok(())
}

/// Steps 3 and 4 of [`enable_row_security_in`]: views over scoped tables evaluated with
/// the reader's rights, materialized views over them kept from tenants.
async fn secure_views(
    txn: &DatabaseTransaction,
    tables: &[(&str, &str)],
    app_role: &str,
    role_prefix: &str,
    report: &mut RowSecurityReport,
) -> Result<()> {
    for view in views_over(txn, tables).await? {
        let qualified = format!("{}.{}", quote_ident(&view.schema), quote_ident(&view.name));
        let shown = format!("{}.{}", view.schema, view.name);
        if view.materialized {
            tracing::warn!(
                materialized_view = %shown,
                "a materialized view reads tenant-scoped tables: it holds every tenant's rows and cannot apply \
                 row-level security, so PUBLIC, the application role and the tenant login roles may not read it"
            );
            let readers = readers_of(txn, &qualified, app_role, role_prefix).await?;
            let mut grantees = vec!["PUBLIC".to_owned(), quote_ident(app_role)];
            grantees.extend(readers.iter().filter(|r| *r != app_role).map(|r| quote_ident(r)));
            txn.execute_unprepared(&format!("REVOKE ALL ON TABLE {qualified} FROM {}", grantees.join(", "))).await?;
            // REVOKE by someone else than the owner only warns: check that it took.
            let left = readers_of(txn, &qualified, app_role, role_prefix).await?;
            if !left.is_empty() {
                return Err(crate::Error::RowSecurityRefused {
                    object: format!("materialized view \"{shown}\""),
                    reason: format!(
                        "it holds every tenant's rows and stays readable by {} after REVOKE (the master user does \
                         not own it, or a role they belong to was granted it); revoke it, or make the master \
                         user its owner",
                        left.join(", ")
                    ),
                });
            }
            report.materialized_views.push(shown);
        } else {
            if !view.security_invoker
                && let Err(err) =
                    txn.execute_unprepared(&format!("ALTER VIEW {qualified} SET (security_invoker = true)")).await
            {
                return Err(crate::Error::RowSecurityRefused {
                    object: format!("view \"{shown}\""),
                    reason: format!(
                        "it reads tenant-scoped tables with its owner's rights, and setting security_invoker = true \
                         failed ({err}); make the master user its owner, or set it yourself"
                    ),
                });
            }
            report.views.push(shown);
        }
    }
    Ok(())
}

/// A view or materialized view that reads a scoped table.
struct View {
    schema: String,
    name: String,
    materialized: bool,
    security_invoker: bool,
}

/// The views and materialized views of any schema that read one of the `public` tables
/// `tables`, directly or through other views (their rewrite rules' dependencies), sorted.
async fn views_over<C: ConnectionTrait>(db: &C, tables: &[(&str, &str)]) -> Result<Vec<View>> {
    // language=PostgreSQL
    let sql = "WITH RECURSIVE dependents(oid) AS ( \
                 SELECT c.oid FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace \
                   AND c.relkind IN ('r', 'p') AND c.relname::text IN (SELECT json_array_elements_text($1::json)) \
                 UNION \
                 SELECT r.ev_class FROM dependents d \
                 JOIN pg_depend dep ON dep.refclassid = 'pg_class'::regclass AND dep.refobjid = d.oid \
                   AND dep.classid = 'pg_rewrite'::regclass \
                 JOIN pg_rewrite r ON r.oid = dep.objid \
                 WHERE r.ev_class <> d.oid) \
               SELECT n.nspname::text, c.relname::text, c.relkind = 'm', \
                 EXISTS (SELECT 1 FROM pg_options_to_table(c.reloptions) o \
                   WHERE o.option_name = 'security_invoker' AND lower(o.option_value) IN ('true', 'on', 'yes', '1')) \
               FROM dependents d JOIN pg_class c ON c.oid = d.oid JOIN pg_namespace n ON n.oid = c.relnamespace \
               WHERE c.relkind IN ('v', 'm') ORDER BY 1, 2";
    let rows = db.query_all_raw(pg(sql, vec![json_list(tables.iter().map(|(table, _)| *table))])).await?;
    let mut views = Vec::with_capacity(rows.len());
    for row in rows {
        views.push(View {
            schema: row.try_get_by_index(0)?,
            name: row.try_get_by_index(1)?,
            materialized: row.try_get_by_index(2)?,
            security_invoker: row.try_get_by_index(3)?,
        });
    }
    Ok(views)
}

/// The application role and tenant login roles that may read `relation` (qualified and
/// quoted), through `PUBLIC`, membership or a grant of their own.
async fn readers_of<C: ConnectionTrait>(
    db: &C,
    relation: &str,
    app_role: &str,
    role_prefix: &str,
) -> Result<Vec<String>> {
    // language=PostgreSQL
    let sql = "SELECT r.rolname::text FROM pg_roles r \
               WHERE (r.rolname = $1 OR left(r.rolname, length($2)) = $2) \
                 AND has_table_privilege(r.oid, $3::regclass, 'SELECT') ORDER BY 1";
    let rows = db.query_all_raw(pg(sql, vec![app_role.into(), role_prefix.into(), relation.into()])).await?;
    rows.iter().map(|row| Ok(row.try_get_by_index::<String>(0)?)).collect()
}

/// A foreign key of a SQLite table: `(id, parent, from columns, to columns)`, a `to`
/// column being `None` for the parent's primary key.
type SqliteForeignKey = (i64, String, Vec<String>, Vec<Option<String>>);

/// On a SQLite master: every foreign key between table-scoped tables must pair the
/// tenant columns (SQLite cannot alter a foreign key, so the step can only refuse).
async fn check_sqlite_foreign_keys(txn: &DatabaseTransaction, scoped: &[(&str, &str)]) -> Result<()> {
    let sqlite =
        |sql: &str, values: Vec<sea_orm::Value>| Statement::from_sql_and_values(DbBackend::Sqlite, sql, values);
    let tenant_of = |table: &str| {
        scoped.iter().find(|(name, _)| name.eq_ignore_ascii_case(table)).map(|&(name, column)| (name, column))
    };
    let mut unsafe_keys = Vec::new();
    for &(table, child_tenant) in scoped {
        let rows = txn
            .query_all_raw(sqlite(
                "SELECT id, \"table\", \"from\", \"to\" FROM pragma_foreign_key_list(?) ORDER BY id, seq",
                vec![table.into()],
            ))
            .await?;
        let mut keys: Vec<SqliteForeignKey> = Vec::new();
        for row in rows {
            let id: i64 = row.try_get_by_index(0)?;
            let parent: String = row.try_get_by_index(1)?;
            let from: String = row.try_get_by_index(2)?;
            let to: Option<String> = row.try_get_by_index(3)?;
            match keys.last_mut() {
                Some(key) if key.0 == id => {
                    key.2.push(from);
                    key.3.push(to);
                }
                _ => keys.push((id, parent, vec![from], vec![to])),
            }
        }
        for (_, parent, columns, to) in keys {
            let Some((parent, parent_tenant)) = tenant_of(&parent) else { continue };
            let referenced: Vec<String> = if to.iter().all(Option::is_some) {
                to.into_iter().flatten().collect()
            } else {
                // `REFERENCES parent` without columns: the parent's primary key.
                let rows = txn
                    .query_all_raw(sqlite(
                        "SELECT name FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk",
                        vec![parent.into()],
                    ))
                    .await?;
                rows.iter().map(|row| row.try_get_by_index::<String>(0)).collect::<Result<_, _>>()?
            };
            if pairs_tenants(&columns, &referenced, child_tenant, parent_tenant) {
                continue;
            }
            unsafe_keys.push(format!(
                "table \"{table}\" has FOREIGN KEY ({}) REFERENCES {parent} ({}): {}",
                columns.join(", "),
                referenced.join(", "),
                composite_fix(child_tenant, &columns, parent, parent_tenant, &referenced)
            ));
        }
    }
    if unsafe_keys.is_empty() {
        return Ok(());
    }
    Err(crate::Error::RowSecurityRefused {
        object: "foreign keys between tenant-scoped tables without the tenant column".to_owned(),
        reason: format!(
            "a tenant could point at (and learn of) another tenant's row, and SQLite cannot alter a foreign key, so \
             the migration must declare them with it; {}",
            unsafe_keys.join("; ")
        ),
    })
}

/// Creates the application role unless it exists, and lets the current user switch to it.
///
/// Roles belong to the whole cluster, so masters in other databases may create it at the
/// same moment (their advisory locks are per database): a concurrent creator's role is
/// as good as ours.
pub(crate) async fn ensure_app_role(txn: &sea_orm::DatabaseTransaction, app_role: &str) -> Result<()> {
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

/// What kind of hole [`audit`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum AuditKind {
    /// A scoped table without row-level security enabled and forced, or without the
    /// tenancy policies.
    TableNotSecured,
    /// A tenancy policy or tenant column default that does not bind the tenant from the
    /// session user (so a statement could change the tenant it sees).
    Policy,
    /// A view over a scoped table that is not `security_invoker`.
    View,
    /// A materialized view over a scoped table that the application role or a tenant
    /// role may read.
    MaterializedView,
    /// A foreign key between scoped tables without the tenant column.
    ForeignKey,
    /// A tenant login role (or the application role) with a power or a membership that
    /// could take it past the policies or into another tenant's binding.
    Role,
}

/// One hole [`audit`] found: what kind, which object, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub struct AuditFinding {
    /// The kind of hole.
    pub kind: AuditKind,
    /// The object, as in `public.tasks`, `public.labels.labels_board_id_fkey`, a role name.
    pub object: String,
    /// What is wrong with it.
    pub detail: String,
}

impl std::fmt::Display for AuditFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} {}: {}", self.kind, self.object, self.detail)
    }
}

/// Walks the catalog of the PostgreSQL master `db` and lists every way around table
/// isolation found, sorted; empty when there is none. Checks, for the table-scoped models'
/// tables in `public`:
///
/// - row-level security enabled and forced, and both tenancy policies present, for all
///   commands, binding the tenant from `session_user` (never `current_user`, which
///   `SET ROLE` changes), as is the tenant column's default;
/// - no view of any schema over them (directly or through views) without
///   `security_invoker`; no materialized view over them readable by the application role
///   or a tenant login role;
/// - no foreign key between them without the tenant column;
/// - no tenant login role (nor the application role) that is a superuser, has
///   `BYPASSRLS`, `CREATEROLE`, `CREATEDB` or `REPLICATION`, owns a relation, or is a
///   member of any role but the application role (another tenant's role, say); the
///   application role cannot log in and is a member of nothing.
///
/// Read-only. On a SQLite master it finds nothing: there the migrator's step refuses
/// unsafe foreign keys, and the handle scopes statements itself.
///
/// # Errors
/// [`crate::Error::DuplicateScopedTable`], or [`crate::Error::Database`] when a catalog
/// query fails.
pub async fn audit<C: ConnectionTrait>(db: &C) -> Result<Vec<AuditFinding>> {
    let mut findings = Vec::new();
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(findings);
    }
    let app_role = app_role(db).await?;
    let prefix = tenant_role_prefix(db).await?;
    let mut found = |kind, object: String, detail: &str| {
        findings.push(AuditFinding { kind, object, detail: detail.to_owned() });
    };

    let mut present = Vec::new();
    for (table, column) in table_scoped()? {
        // language=PostgreSQL
        let sql = "SELECT c.relrowsecurity, c.relforcerowsecurity, \
                     (SELECT json_agg(json_build_array(p.polname::text, p.polpermissive, p.polcmd::text, \
                        coalesce(pg_get_expr(p.polqual, p.polrelid), ''), \
                        coalesce(pg_get_expr(p.polwithcheck, p.polrelid), ''))) \
                      FROM pg_policy p WHERE p.polrelid = c.oid)::text, \
                     coalesce((SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d \
                       JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum \
                       WHERE d.adrelid = c.oid AND a.attname = $2), '') \
                   FROM pg_class c WHERE c.oid = to_regclass($1) AND c.relkind IN ('r', 'p')";
        let qualified = format!("public.{}", quote_ident(table));
        let Some(row) = db.query_one_raw(pg(sql, vec![qualified.into(), column.into()])).await? else { continue };
        present.push((table, column));
        let object = format!("public.{table}");
        let (enabled, forced): (bool, bool) = (row.try_get_by_index(0)?, row.try_get_by_index(1)?);
        if !enabled || !forced {
            found(AuditKind::TableNotSecured, object.clone(), "row-level security is not enabled and forced");
        }
        let policies: Vec<(String, bool, String, String, String)> =
            serde_json::from_str(&row.try_get_by_index::<Option<String>>(2)?.unwrap_or_else(|| "[]".to_owned()))
                .map_err(|err| crate::Error::Database(sea_orm::DbErr::Custom(err.to_string())))?;
        // Bound from the session user (the tenant role's name), never the current user.
        let binds = |expr: &str| {
            expr.contains("SESSION_USER") && !expr.contains("CURRENT_USER") && expr.contains(&quote_literal(&prefix))
        };
        for (name, permissive) in [(POLICY_NAME, true), (GUARD_POLICY_NAME, false)] {
            match policies.iter().find(|p| p.0 == name) {
                None => found(AuditKind::TableNotSecured, object.clone(), &format!("policy {name} is missing")),
                Some((_, is_permissive, command, qual, check)) => {
                    if *is_permissive != permissive || command != "*" || !binds(qual) || !binds(check) {
                        found(
                            AuditKind::Policy,
                            object.clone(),
                            &format!("policy {name} does not bind the tenant from session_user for all commands"),
                        );
                    }
                }
            }
        }
        let default: String = row.try_get_by_index(3)?;
        if !binds(&default) {
            found(
                AuditKind::Policy,
                object,
                &format!("the default of {column} does not bind the tenant from session_user"),
            );
        }
    }

    for view in views_over(db, &present).await? {
        let object = format!("{}.{}", view.schema, view.name);
        if view.materialized {
            let qualified = format!("{}.{}", quote_ident(&view.schema), quote_ident(&view.name));
            let readers = readers_of(db, &qualified, &app_role, &prefix).await?;
            if !readers.is_empty() {
                found(
                    AuditKind::MaterializedView,
                    object,
                    &format!("holds every tenant's rows and is readable by {}", readers.join(", ")),
                );
            }
        } else if !view.security_invoker {
            found(AuditKind::View, object, "reads scoped tables with its owner's rights (not security_invoker)");
        }
    }

    let tenant_of: std::collections::HashMap<&str, &str> = present.iter().copied().collect();
    for key in foreign_keys_between(db, &present).await? {
        let (Some(&child_tenant), Some(&parent_tenant)) =
            (tenant_of.get(key.child.as_str()), tenant_of.get(key.parent.as_str()))
        else {
            continue;
        };
        if !pairs_tenants(&key.columns, &key.referenced, child_tenant, parent_tenant) {
            found(
                AuditKind::ForeignKey,
                format!("public.{}.{}", key.child, key.name),
                &format!("references {} without the tenant column", key.parent),
            );
        }
    }

    // language=PostgreSQL
    let sql = "SELECT r.rolname::text, r.rolsuper, r.rolbypassrls, r.rolcreaterole, r.rolcreatedb, r.rolreplication, \
                 r.rolcanlogin, \
                 coalesce((SELECT string_agg(o.rolname::text, ', ' ORDER BY o.rolname) FROM pg_roles o \
                   WHERE o.oid <> r.oid AND o.rolname <> $1 AND pg_has_role(r.oid, o.oid, 'MEMBER')), ''), \
                 (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                   WHERE c.relowner = r.oid AND n.nspname NOT LIKE 'pg\\_temp\\_%' \
                   AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%') \
               FROM pg_roles r WHERE r.rolname = $1 OR left(r.rolname, length($2)) = $2 ORDER BY 1";
    for row in db.query_all_raw(pg(sql, vec![app_role.clone().into(), prefix.clone().into()])).await? {
        let name: String = row.try_get_by_index(0)?;
        let powers = ["SUPERUSER", "BYPASSRLS", "CREATEROLE", "CREATEDB", "REPLICATION"];
        for (i, power) in powers.iter().enumerate() {
            if row.try_get_by_index::<bool>(i + 1)? {
                found(AuditKind::Role, name.clone(), &format!("has {power}"));
            }
        }
        if name == app_role && row.try_get_by_index::<bool>(6)? {
            found(AuditKind::Role, name.clone(), "the application role can log in");
        }
        let member_of: String = row.try_get_by_index(7)?;
        if !member_of.is_empty() {
            found(AuditKind::Role, name.clone(), &format!("is a member of {member_of}"));
        }
        if row.try_get_by_index::<i64>(8)? > 0 {
            found(AuditKind::Role, name, "owns relations (an owner may disable row-level security)");
        }
    }
    findings.sort();
    Ok(findings)
}
