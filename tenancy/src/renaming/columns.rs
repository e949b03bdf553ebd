//! The rename's tenant-column step: every scoped table's tenant column, old id → new id,
//! wherever the tenant's rows are, in one transaction.
//!
//! Which tables: in the master's shared tables (table isolation) the scoped models linked
//! into the program and, on PostgreSQL, every row-secured table
//! ([`crate::storage::table::tenant_tables`]); in a tenant's own database or schema,
//! where every table is the tenant's, also every table with a column named like a scoped
//! model's tenant column (`tenant_id` by default), so tables of models this program does
//! not link keep movable data too.
//!
//! Foreign keys that include the tenant column (`tasks (tenant_id, project_id) ->
//! projects (tenant_id, id)`) fail a table-by-table update: the first table changed
//! leaves rows pointing at keys that no longer exist. On PostgreSQL all tables change in
//! one statement of data-modifying CTEs: the foreign-key checks (`NO ACTION`, also
//! `RESTRICT` and `CASCADE`) run at the end of the statement, when both sides hold the new
//! id, and still catch a real violation. On SQLite, `PRAGMA defer_foreign_keys` moves
//! them to the commit.

use std::collections::{BTreeMap, BTreeSet};

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait};

use super::RenameStep;
use crate::connection::url::connect;
use crate::registry::placement::{Placement, TenantDatabase};
use crate::sql::quote_ident;
use crate::storage::{self, table};
use crate::{Backend, BoxError, Error, Result, Tenancy, Tenant, TenantId};

/// Sets `to` where the tenant column holds the tenant's old id; the rows changed per table.
/// `home`: the database of a schema tenant's schema (the master's, or its shard).
pub(super) async fn update(
    tenancy: &Tenancy,
    home: &sea_orm::DatabaseConnection,
    tenant: &Tenant,
    steps: &[RenameStep],
    to: &TenantId,
) -> Result<Vec<(String, u64)>> {
    let from = tenant.id();
    let fail = |source: BoxError| Error::RenameFailed {
        from: from.to_string(),
        to: to.to_string(),
        step: RenameStep::TenantColumns.slug().to_owned(),
        source,
    };
    match tenant.placement() {
        Placement::Database(database) => {
            // The registry still holds the old id, which the password is bound to.
            let url = storage::database::url(tenancy, tenant, database)?;
            let conn = connect(&url, None).await?;
            let updated = match database {
                TenantDatabase::Postgres(_) => async {
                    let tables = postgres_tables(&conn, None).await?;
                    let txn = conn.begin().await?;
                    let rows = in_one_statement(&txn, None, &tables, from, to).await?;
                    txn.commit().await?;
                    Ok(rows)
                }
                .await
                .map_err(fail),
                TenantDatabase::Sqlite(_) => async {
                    let tables = sqlite_tables(&conn).await?;
                    sqlite(&conn, &tables, from, to).await
                }
                .await
                .map_err(fail),
            };
            let _ = conn.close().await;
            updated
        }
        Placement::Schema { schema, .. } => {
            // The schema's name now: renamed by the step before.
            let schema = steps
                .iter()
                .find_map(|step| match step {
                    RenameStep::Schema { to, .. } => Some(to.as_str()),
                    _ => None,
                })
                .unwrap_or(schema);
            async {
                let tables = postgres_tables(home, Some(schema)).await?;
                let txn = home.begin().await?;
                let rows = in_one_statement(&txn, Some(schema), &tables, from, to).await?;
                txn.commit().await?;
                Ok(rows)
            }
            .await
            .map_err(fail)
        }
        Placement::Table { .. } => {
            let tables = table::tenant_tables(tenancy).await?;
            match tenancy.backend() {
                Backend::Postgres => shared_postgres(tenancy, &tables, from, to).await,
                Backend::Sqlite => sqlite(tenancy.master(), &tables, from, to).await.map_err(fail),
            }
        }
        Placement::Cache => Ok(Vec::new()),
    }
}

/// The tenant column names of the scoped models linked into the program, and
/// `tenant_id`; with the models' own `table -> column`.
fn model_columns() -> Result<(BTreeSet<String>, BTreeMap<String, String>)> {
    let mut names = BTreeSet::from(["tenant_id".to_owned()]);
    let mut declared = BTreeMap::new();
    for model in crate::scoped_models()? {
        if let Some(column) = model.scope().table_column() {
            names.insert(column.to_owned());
            declared.insert(model.table().to_owned(), column.to_owned());
        }
    }
    Ok((names, declared))
}

/// The tables of a tenant's own PostgreSQL schema (`None`: the connection's current one)
/// with a tenant column, as `table -> column` (a model's declared column first).
async fn postgres_tables<C: ConnectionTrait>(
    db: &C,
    schema: Option<&str>,
) -> Result<BTreeMap<String, String>, BoxError> {
    let (names, declared) = model_columns()?;
    let names = serde_json::Value::from(names.into_iter().collect::<Vec<_>>()).to_string();
    // Partitions are left out: their parent's update reaches their rows.
    // language=PostgreSQL
    let sql = "SELECT c.relname::text, a.attname::text FROM pg_catalog.pg_class c \
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
               JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
               WHERE n.nspname = coalesce($1, current_schema()) AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
                 AND a.attname::text IN (SELECT json_array_elements_text($2::json)) \
               ORDER BY 1, 2";
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            [schema.map(str::to_owned).into(), names.into()],
        ))
        .await?;
    let mut tables = BTreeMap::new();
    for row in rows {
        let (table, column): (String, String) = (row.try_get_by_index(0)?, row.try_get_by_index(1)?);
        if declared.get(&table).is_some_and(|wanted| *wanted != column) {
            continue;
        }
        // Two candidate columns and no model to choose: `tenant_id` sorts after most
        // names, so the last one wins only when it is the default.
        if !tables.contains_key(&table) || column == "tenant_id" {
            tables.insert(table, column);
        }
    }
    Ok(tables)
}

/// The tables of a tenant's own SQLite database with a tenant column.
async fn sqlite_tables(db: &DatabaseConnection) -> Result<BTreeMap<String, String>, BoxError> {
    let (names, declared) = model_columns()?;
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY 1, 2",
        ))
        .await?;
    let mut tables = BTreeMap::new();
    for row in rows {
        let (table, column): (String, String) = (row.try_get_by_index(0)?, row.try_get_by_index(1)?);
        if !names.contains(&column) || declared.get(&table).is_some_and(|wanted| *wanted != column) {
            continue;
        }
        if !tables.contains_key(&table) || column == "tenant_id" {
            tables.insert(table, column);
        }
    }
    Ok(tables)
}

/// Every table's tenant column in one statement (see the module docs); the rows changed
/// per table.
async fn in_one_statement<C: ConnectionTrait>(
    db: &C,
    schema: Option<&str>,
    tables: &BTreeMap<String, String>,
    from: &TenantId,
    to: &TenantId,
) -> Result<Vec<(String, u64)>, BoxError> {
    if tables.is_empty() {
        return Ok(Vec::new());
    }
    let qualified = |table: &str| match schema {
        Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(table)),
        None => quote_ident(table),
    };
    let mut ctes = Vec::new();
    let mut counts = Vec::new();
    for (n, (table, column)) in tables.iter().enumerate() {
        let column = quote_ident(column);
        ctes.push(format!("u{n} AS (UPDATE {} SET {column} = $2 WHERE {column} = $1 RETURNING 1)", qualified(table)));
        counts.push(format!("(SELECT count(*) FROM u{n})"));
    }
    let sql = format!("WITH {} SELECT {}", ctes.join(", "), counts.join(", "));
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            [from.as_str().into(), to.as_str().into()],
        ))
        .await?
        .ok_or("the update returned no row")?;
    let mut rows = Vec::with_capacity(tables.len());
    for (n, table) in tables.keys().enumerate() {
        let count = row.try_get_by_index::<i64>(n)?;
        rows.push((table.clone(), u64::try_from(count).unwrap_or(0)));
    }
    Ok(rows)
}

/// The shared tables of a PostgreSQL master. Their forced row-level security would keep
/// the update from the tenant's rows (a policy cannot let one statement read rows of one
/// tenant and write them as another's), so unless the master user is exempt from it
/// (superuser, `BYPASSRLS`) it is lifted for the transaction: `NO FORCE` lets the owner,
/// the master user that migrated the tables, through; `FORCE` is back before the commit,
/// so no other session ever sees the tables without it. Those `ALTER TABLE`s hold the
/// tables' exclusive locks until the commit: other tenants wait that long.
///
/// The rows changed are compared with the rows the tenant itself sees (counted in
/// transactions bound to it): a master user that reached fewer rolls everything back.
async fn shared_postgres(
    tenancy: &Tenancy,
    tables: &BTreeMap<String, String>,
    from: &TenantId,
    to: &TenantId,
) -> Result<Vec<(String, u64)>> {
    let fail = |source: BoxError| Error::RenameFailed {
        from: from.to_string(),
        to: to.to_string(),
        step: RenameStep::TenantColumns.slug().to_owned(),
        source,
    };
    let mut expected = BTreeMap::new();
    for (table, column) in tables {
        expected.insert(table.clone(), table::count_rows(tenancy, from, table, column).await?);
    }
    let txn = tenancy.master().begin().await?;
    let updated = async {
        let forced = match bypasses_row_security(&txn).await? {
            true => Vec::new(),
            false => forced_tables(&txn, tables).await?,
        };
        for table in &forced {
            txn.execute_unprepared(&format!("ALTER TABLE public.{} NO FORCE ROW LEVEL SECURITY", quote_ident(table)))
                .await?;
        }
        let rows = in_one_statement(&txn, Some("public"), tables, from, to).await?;
        for table in &forced {
            txn.execute_unprepared(&format!("ALTER TABLE public.{} FORCE ROW LEVEL SECURITY", quote_ident(table)))
                .await?;
        }
        for (table, changed) in &rows {
            let wanted = expected.get(table).copied().unwrap_or(0);
            if *changed != wanted {
                return Err(format!(
                    "the master user reached {changed} of the tenant's {wanted} row(s) of table '{table}' \
                     (it must own the shared tables, or bypass row-level security); nothing was changed"
                )
                .into());
            }
        }
        Ok::<_, BoxError>(rows)
    }
    .await;
    match updated {
        Ok(rows) => {
            txn.commit().await?;
            Ok(rows)
        }
        Err(source) => {
            let _ = txn.rollback().await;
            Err(fail(source))
        }
    }
}

/// Whether the connection's user is exempt from row-level security (a superuser, or
/// `BYPASSRLS`).
async fn bypasses_row_security<C: ConnectionTrait>(db: &C) -> Result<bool, BoxError> {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT rolsuper OR rolbypassrls FROM pg_catalog.pg_roles WHERE rolname = current_user",
        ))
        .await?;
    Ok(row.map(|row| row.try_get_by_index::<bool>(0)).transpose()?.unwrap_or(false))
}

/// The tables of `tables` whose row-level security is forced.
async fn forced_tables<C: ConnectionTrait>(db: &C, tables: &BTreeMap<String, String>) -> Result<Vec<String>, BoxError> {
    let names = serde_json::Value::from(tables.keys().cloned().collect::<Vec<_>>()).to_string();
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT c.relname::text FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public' \
             WHERE c.relforcerowsecurity AND c.relname::text IN (SELECT json_array_elements_text($1::json)) \
             ORDER BY 1",
            [names.into()],
        ))
        .await?;
    rows.iter().map(|row| Ok(row.try_get_by_index::<String>(0)?)).collect()
}

/// SQLite: table by table in one transaction, the foreign keys checked at its commit.
async fn sqlite(
    db: &DatabaseConnection,
    tables: &BTreeMap<String, String>,
    from: &TenantId,
    to: &TenantId,
) -> Result<Vec<(String, u64)>, BoxError> {
    let txn = db.begin().await?;
    let updated = async {
        // Reset by the commit: it lasts for this transaction only.
        txn.execute_unprepared("PRAGMA defer_foreign_keys = ON").await?;
        let mut rows = Vec::with_capacity(tables.len());
        for (table, column) in tables {
            let column = quote_ident(column);
            let done = txn
                .execute_raw(Statement::from_sql_and_values(
                    DbBackend::Sqlite,
                    format!("UPDATE {} SET {column} = ? WHERE {column} = ?", quote_ident(table)),
                    [to.as_str().into(), from.as_str().into()],
                ))
                .await?;
            rows.push((table.clone(), done.rows_affected()));
        }
        Ok::<_, BoxError>(rows)
    }
    .await;
    match updated {
        Ok(rows) => {
            txn.commit().await?;
            Ok(rows)
        }
        Err(err) => {
            let _ = txn.rollback().await;
            Err(err)
        }
    }
}
