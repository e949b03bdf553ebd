//! Copying a tenant's rows between two SQLite storages (a tenant database file, or the
//! master's shared tables): one connection to the target file with the source file
//! attached as `src`, then `INSERT … SELECT` table by table in one transaction. The
//! connection is the library's own, never a tenant's (whose handles refuse `ATTACH`).

use std::collections::BTreeMap;
use std::path::Path;

use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, Statement, Value};
use sha2::{Digest, Sha256};

use super::{Checksum, Copied, TableSpec};
use crate::connection::url::{connect, sqlite_url};
use crate::sql::{quote_ident, quote_literal};
use crate::{Error, Result};

/// Which database of the connection, and which of its rows are the tenant's.
#[derive(Clone, Debug)]
pub(crate) struct End {
    /// `main` (the target file) or `src` (the attached source).
    pub(crate) db: &'static str,
    /// For the master's shared tables: the tenant whose rows these are.
    pub(crate) shared_by: Option<String>,
}

impl End {
    fn table(&self, table: &str) -> String {
        format!("{}.{}", self.db, quote_ident(table))
    }

    fn filter(&self, spec: &TableSpec) -> String {
        match (&self.shared_by, &spec.tenant_column) {
            (Some(id), Some(column)) => format!(" WHERE t.{} = {}", quote_ident(column), quote_literal(id)),
            _ => String::new(),
        }
    }
}

fn sqlite(sql: impl Into<String>, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Sqlite, sql, values)
}

/// A connection of its own to `target`, with `source` attached as `src`.
pub(crate) async fn open(target: &Path, source: &Path) -> Result<DatabaseConnection> {
    let conn = connect(&sqlite_url(target, false), None).await?;
    let source = source.to_str().ok_or_else(|| Error::CopyFailed {
        table: String::new(),
        reason: format!("the file name '{}' is not UTF-8", source.display()),
    })?;
    if let Err(err) = conn.execute_unprepared(&format!("ATTACH DATABASE {} AS src", quote_literal(source))).await {
        let _ = conn.close_by_ref().await;
        return Err(err.into());
    }
    Ok(conn)
}

/// The tables of `end` with their columns and keys, parents first; see
/// [`super::copy_postgres::tables`].
pub(crate) async fn tables<C: ConnectionTrait>(
    db: &C,
    end: &End,
    tenant_columns: &BTreeMap<String, String>,
    only: Option<&[String]>,
) -> Result<Vec<TableSpec>> {
    let names = db
        .query_all_raw(sqlite(
            format!(
                "SELECT name FROM {}.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
                 AND name <> ? ORDER BY name",
                end.db
            ),
            vec![super::MIGRATION_TABLE.into()],
        ))
        .await?;
    let mut specs = BTreeMap::new();
    let mut edges = Vec::new();
    for row in names {
        let name: String = row.try_get_by_index(0)?;
        if only.is_some_and(|only| !only.contains(&name)) {
            continue;
        }
        let mut spec = TableSpec {
            tenant_column: tenant_columns.get(&name).cloned(),
            name: name.clone(),
            columns: Vec::new(),
            key: Vec::new(),
            sequences: Vec::new(),
            identity_always: false,
        };
        let columns = db
            .query_all_raw(sqlite(
                "SELECT name, pk, hidden FROM pragma_table_xinfo(?, ?) ORDER BY cid",
                vec![name.as_str().into(), end.db.into()],
            ))
            .await?;
        for column in columns {
            let (column, pk, hidden): (String, i64, i64) =
                (column.try_get_by_index(0)?, column.try_get_by_index(1)?, column.try_get_by_index(2)?);
            // Generated columns (hidden 2 and 3) are computed, not copied.
            if hidden != 0 {
                continue;
            }
            if pk > 0 {
                spec.key.push(column.clone());
            }
            spec.columns.push(column);
        }
        let parents = db
            .query_all_raw(sqlite(
                "SELECT \"table\" FROM pragma_foreign_key_list(?, ?)",
                vec![name.as_str().into(), end.db.into()],
            ))
            .await?;
        for parent in parents {
            edges.push((name.clone(), parent.try_get_by_index::<String>(0)?));
        }
        specs.insert(name, spec);
    }
    edges.retain(|(child, parent)| child != parent && specs.contains_key(parent));
    let mut order = crate::storage::table::delete_order(specs.keys().cloned().collect(), &edges);
    order.reverse();
    Ok(order.into_iter().filter_map(|name| specs.remove(&name)).collect())
}

/// Rows and bytes of each table the tenant has at `end` (bytes: the rows' text length).
pub(crate) async fn sizes<C: ConnectionTrait>(db: &C, end: &End, specs: &[TableSpec]) -> Result<Vec<(u64, u64)>> {
    let mut sizes = Vec::with_capacity(specs.len());
    for spec in specs {
        let length: Vec<String> =
            spec.columns.iter().map(|c| format!("COALESCE(length(t.{}), 0)", quote_ident(c))).collect();
        let row = db
            .query_one_raw(sqlite(
                format!(
                    "SELECT count(*), COALESCE(sum({}), 0) FROM {} t{}",
                    if length.is_empty() { "0".to_owned() } else { length.join(" + ") },
                    end.table(&spec.name),
                    end.filter(spec)
                ),
                vec![],
            ))
            .await?;
        let (rows, bytes) = match row {
            Some(row) => (row.try_get_by_index::<i64>(0)?, row.try_get_by_index::<i64>(1)?),
            None => (0, 0),
        };
        sizes.push((u64::try_from(rows).unwrap_or(0), u64::try_from(bytes).unwrap_or(0)));
    }
    Ok(sizes)
}

/// Deletes the rows of every table at `end` (children first): a copy starts from nothing.
pub(crate) async fn clear(txn: &DatabaseTransaction, end: &End, specs: &[TableSpec]) -> Result<()> {
    for spec in specs.iter().rev() {
        txn.execute_unprepared(&format!("DELETE FROM {} AS t{}", end.table(&spec.name), end.filter(spec))).await?;
    }
    Ok(())
}

/// Copies one table's tenant rows from `source` to `target` in `txn`, the tenant column set
/// to `new_id`; refuses before writing when a key is taken at the target.
pub(crate) async fn copy_table(
    txn: &DatabaseTransaction,
    source: &End,
    target: &End,
    spec: &TableSpec,
    tenant: &str,
    new_id: &str,
) -> Result<Copied> {
    if target.shared_by.is_some() && !spec.key.is_empty() {
        let matches: Vec<String> = spec.key.iter().map(|c| format!("x.{c} = t.{c}", c = quote_ident(c))).collect();
        let shown: Vec<String> =
            spec.key.iter().map(|c| format!("{} || '=' || t.{}", quote_literal(c), quote_ident(c))).collect();
        let taken = txn
            .query_one_raw(sqlite(
                format!(
                    "SELECT {} FROM {} t{} {} EXISTS (SELECT 1 FROM {} x WHERE {}) LIMIT 1",
                    shown.join(" || ', ' || "),
                    source.table(&spec.name),
                    source.filter(spec),
                    if source.filter(spec).is_empty() { "WHERE" } else { "AND" },
                    target.table(&spec.name),
                    matches.join(" AND ")
                ),
                vec![],
            ))
            .await?;
        if let Some(row) = taken {
            let key: String = row.try_get_by_index(0)?;
            return Err(Error::KeyCollision { tenant: tenant.to_owned(), table: spec.name.clone(), key });
        }
    }
    let inserted = txn
        .execute_raw(sqlite(
            format!(
                "INSERT INTO {} ({}) SELECT {} FROM {} t{}",
                target.table(&spec.name),
                spec.column_list(),
                spec.select_list("t", "?"),
                source.table(&spec.name),
                source.filter(spec)
            ),
            spec.tenant_value(new_id),
        ))
        .await?
        .rows_affected();
    Ok(Copied { rows: inserted })
}

/// Row count and checksum of the tenant's rows of one table at `end`, the tenant column
/// left out, and how many rows' tenant column is not `expected_id`.
pub(crate) async fn checksum<C: ConnectionTrait>(
    db: &C,
    end: &End,
    spec: &TableSpec,
    expected_id: &str,
) -> Result<Checksum> {
    // Blobs have no JSON form: their hex, marked, stands in for them.
    let values: Vec<String> = spec
        .columns
        .iter()
        .filter(|c| spec.tenant_column.as_ref() != Some(*c))
        .map(|c| {
            let c = quote_ident(c);
            format!("CASE typeof(t.{c}) WHEN 'blob' THEN 'blob:' || hex(t.{c}) ELSE t.{c} END")
        })
        .collect();
    let rows = db
        .query_all_raw(sqlite(
            format!(
                "SELECT json_array({}) AS r FROM {} t{} ORDER BY r",
                values.join(", "),
                end.table(&spec.name),
                end.filter(spec)
            ),
            vec![],
        ))
        .await?;
    let mut digest = Sha256::new();
    for row in &rows {
        digest.update(row.try_get_by_index::<String>(0)?.as_bytes());
        digest.update(b"\n");
    }
    let foreign = match &spec.tenant_column {
        Some(column) => {
            let filter = end.filter(spec);
            let differs = format!("t.{} IS NOT ?", quote_ident(column));
            let condition =
                if filter.is_empty() { format!(" WHERE {differs}") } else { format!("{filter} AND {differs}") };
            let row = db
                .query_one_raw(sqlite(
                    format!("SELECT count(*) FROM {} t{condition}", end.table(&spec.name)),
                    vec![expected_id.into()],
                ))
                .await?;
            row.map(|row| row.try_get_by_index::<i64>(0)).transpose()?.unwrap_or(0)
        }
        None => 0,
    };
    Ok(Checksum {
        rows: rows.len() as u64,
        digest: digest.finalize().iter().map(|b| format!("{b:02x}")).collect(),
        foreign: u64::try_from(foreign).unwrap_or(0),
    })
}
