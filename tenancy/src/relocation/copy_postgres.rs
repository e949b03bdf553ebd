//! Copying a tenant's rows between two PostgreSQL storages (a tenant database's `public`
//! schema, a tenant schema of the master, or the master's shared tables) through the
//! library, table by table: read through a cursor as JSON, written in batches with
//! `INSERT … SELECT … FROM json_populate_recordset(…)`, which keeps every value exactly
//! (each column is parsed by its own type's input function). No `COPY`, no
//! `ALTER TABLE … SET SCHEMA`, no `CREATE TABLE AS`: the same statements work across
//! servers and where Citus forbids those.

use std::collections::BTreeMap;

use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, Statement, Value};

use super::{Copied, TableSpec};
use crate::sql::{quote_ident, quote_literal};
use crate::{Error, Result};

/// Rows per `INSERT`: large enough that round trips do not dominate, small enough that a
/// batch stays a few megabytes.
pub(crate) const BATCH_ROWS: usize = 2_000;

/// Which rows of a storage's tables are the tenant's.
#[derive(Clone, Debug)]
pub(crate) struct End {
    /// The schema holding the tables: `public` for a tenant database and for the shared
    /// tables, the tenant's schema for schema isolation.
    pub(crate) schema: String,
    /// For the master's shared tables: the tenant whose rows these are (each table's
    /// tenant column equals it). `None`: every row is the tenant's.
    pub(crate) shared_by: Option<String>,
}

impl End {
    fn table(&self, table: &str) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(table))
    }

    /// ` WHERE t.<tenant column> = '<id>'` for shared tables (the id is validated: a
    /// lower-case letter, then letters, digits and `_`).
    fn filter(&self, spec: &TableSpec) -> String {
        match (&self.shared_by, &spec.tenant_column) {
            (Some(id), Some(column)) => format!(" WHERE t.{} = {}", quote_ident(column), quote_literal(id)),
            // Shared tables without a tenant column are never listed for a shared end.
            _ => String::new(),
        }
    }
}

fn pg(sql: impl Into<String>, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// The tables of `schema` as `db` sees them, with their columns, keys and sequences,
/// parents before the tables whose foreign keys reference them. `tenant_columns` names
/// the tenant column of each tenant-scoped table; `only`, when given, limits the list.
pub(crate) async fn tables<C: ConnectionTrait>(
    db: &C,
    schema: &str,
    tenant_columns: &BTreeMap<String, String>,
    only: Option<&[String]>,
) -> Result<Vec<TableSpec>> {
    tables_except(db, schema, tenant_columns, only, super::MIGRATION_TABLE).await
}

/// The tables `names` of `schema` (the migration table included), none tenant-scoped.
pub(crate) async fn tables_named<C: ConnectionTrait>(db: &C, schema: &str, names: &[String]) -> Result<Vec<TableSpec>> {
    tables_except(db, schema, &BTreeMap::new(), Some(names), "").await
}

async fn tables_except<C: ConnectionTrait>(
    db: &C,
    schema: &str,
    tenant_columns: &BTreeMap<String, String>,
    only: Option<&[String]>,
    except: &str,
) -> Result<Vec<TableSpec>> {
    let rows = db
        .query_all_raw(pg(
            "SELECT c.relname::text, a.attname::text, a.attidentity::text, a.attgenerated::text, \
                    pg_catalog.pg_get_serial_sequence(pg_catalog.quote_ident(n.nspname) || '.' || \
                        pg_catalog.quote_ident(c.relname), a.attname), \
                    COALESCE(a.attnum = ANY (i.indkey), false) \
             FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
             LEFT JOIN pg_catalog.pg_index i ON i.indrelid = c.oid AND i.indisprimary \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
               AND c.relname <> $2 \
             ORDER BY c.relname, a.attnum",
            vec![schema.into(), except.into()],
        ))
        .await?;
    let mut specs: BTreeMap<String, TableSpec> = BTreeMap::new();
    for row in rows {
        let table: String = row.try_get_by_index(0)?;
        let column: String = row.try_get_by_index(1)?;
        let identity: String = row.try_get_by_index(2)?;
        let generated: String = row.try_get_by_index(3)?;
        let sequence: Option<String> = row.try_get_by_index(4)?;
        let key: bool = row.try_get_by_index(5)?;
        if only.is_some_and(|only| !only.contains(&table)) {
            continue;
        }
        let spec = specs.entry(table.clone()).or_insert_with(|| TableSpec {
            tenant_column: tenant_columns.get(&table).cloned(),
            name: table.clone(),
            columns: Vec::new(),
            key: Vec::new(),
            sequences: Vec::new(),
            identity_always: false,
        });
        if !generated.is_empty() {
            continue;
        }
        spec.identity_always |= identity == "a";
        if key {
            spec.key.push(column.clone());
        }
        if let Some(sequence) = sequence {
            spec.sequences.push((column.clone(), sequence));
        }
        spec.columns.push(column);
    }
    let edges = foreign_keys(db, schema).await?;
    let mut order = crate::storage::table::delete_order(specs.keys().cloned().collect(), &edges);
    order.reverse();
    Ok(order.into_iter().filter_map(|name| specs.remove(&name)).collect())
}

/// `(child, parent)` pairs of foreign keys between tables of `schema`.
async fn foreign_keys<C: ConnectionTrait>(db: &C, schema: &str) -> Result<Vec<(String, String)>> {
    let rows = db
        .query_all_raw(pg(
            "SELECT c.relname::text, p.relname::text FROM pg_catalog.pg_constraint k \
             JOIN pg_catalog.pg_class c ON c.oid = k.conrelid \
             JOIN pg_catalog.pg_class p ON p.oid = k.confrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace \
             WHERE k.contype = 'f' AND n.nspname = $1 AND pn.nspname = $1 AND c.oid <> p.oid",
            vec![schema.into()],
        ))
        .await?;
    rows.into_iter().map(|row| Ok((row.try_get_by_index(0)?, row.try_get_by_index(1)?))).collect()
}

/// Rows of each table the tenant has at `end`, and their size in bytes (for plans).
pub(crate) async fn sizes<C: ConnectionTrait>(db: &C, end: &End, specs: &[TableSpec]) -> Result<Vec<(u64, u64)>> {
    let mut sizes = Vec::with_capacity(specs.len());
    for spec in specs {
        let row = db
            .query_one_raw(pg(
                format!(
                    "SELECT count(*), COALESCE(sum(pg_catalog.pg_column_size(t.*)), 0)::bigint FROM {} t{}",
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

/// Copies the tenant's rows of one table from `source` (read in `src`, a transaction
/// whose snapshot the cursor reads) to `target` (written in `dst`), setting the tenant
/// column to `new_id`. `spec` is the target's table. A row whose key is taken at the
/// target (another tenant's row of a shared table) stops the copy with
/// [`Error::KeyCollision`]; the caller rolls `dst` back.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn copy_table(
    src: &DatabaseTransaction,
    source: &End,
    dst: &DatabaseTransaction,
    target: &End,
    spec: &TableSpec,
    tenant: &str,
    new_id: &str,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<Copied> {
    let cursor = "tenancy_copy";
    src.execute_unprepared(&format!(
        "DECLARE {cursor} NO SCROLL CURSOR FOR SELECT pg_catalog.to_json(t)::text FROM {} t{}",
        source.table(&spec.name),
        source.filter(spec)
    ))
    .await?;
    let into = target.table(&spec.name);
    let insert = format!(
        "INSERT INTO {into} ({}) {}SELECT {} FROM pg_catalog.json_populate_recordset(NULL::{into}, $1::json) r \
         ON CONFLICT DO NOTHING",
        spec.column_list(),
        if spec.identity_always { "OVERRIDING SYSTEM VALUE " } else { "" },
        spec.select_list("r", "$2::text"),
    );
    let mut copied = Copied { rows: 0 };
    loop {
        let batch = src.query_all_raw(pg(format!("FETCH FORWARD {BATCH_ROWS} FROM {cursor}"), vec![])).await?;
        if batch.is_empty() {
            break;
        }
        let mut json = String::with_capacity(batch.len() * 128);
        json.push('[');
        for (index, row) in batch.iter().enumerate() {
            if index > 0 {
                json.push(',');
            }
            json.push_str(&row.try_get_by_index::<String>(0)?);
        }
        json.push(']');
        let mut bound: Vec<Value> = vec![json.as_str().into()];
        bound.extend(spec.tenant_value(new_id));
        let inserted = dst.execute_raw(pg(insert.clone(), bound)).await?.rows_affected();
        if inserted < batch.len() as u64 {
            let key = colliding_key(dst, &into, spec, &json).await?;
            return Err(Error::KeyCollision { tenant: tenant.to_owned(), table: spec.name.clone(), key });
        }
        copied.rows += inserted;
        progress(copied.rows);
    }
    src.execute_unprepared(&format!("CLOSE {cursor}")).await?;
    Ok(copied)
}

/// The first row of `json` whose key the tenant does not have at the target after an
/// insert that skipped it: the key another tenant holds.
async fn colliding_key(dst: &DatabaseTransaction, into: &str, spec: &TableSpec, json: &str) -> Result<String> {
    if spec.key.is_empty() {
        return Ok("(a unique key)".to_owned());
    }
    let matches: Vec<String> = spec.key.iter().map(|c| format!("x.{c} = r.{c}", c = quote_ident(c))).collect();
    let shown: Vec<String> =
        spec.key.iter().map(|c| format!("{} || '=' || r.{}::text", quote_literal(c), quote_ident(c))).collect();
    let row = dst
        .query_one_raw(pg(
            format!(
                "SELECT concat_ws(', ', {}) FROM pg_catalog.json_populate_recordset(NULL::{into}, $1::json) r \
                 WHERE NOT EXISTS (SELECT 1 FROM {into} x WHERE {}) LIMIT 1",
                shown.join(", "),
                matches.join(" AND ")
            ),
            vec![json.into()],
        ))
        .await?;
    Ok(row.map(|row| row.try_get_by_index::<String>(0)).transpose()?.unwrap_or_else(|| "(a unique key)".to_owned()))
}

/// Copies every row of one table from `from` to `into` in one `INSERT … SELECT` (both in
/// the database `txn` runs on), the tenant column set to `new_id`.
pub(crate) async fn insert_select(
    txn: &DatabaseTransaction,
    from: &End,
    into: &End,
    spec: &TableSpec,
    new_id: &str,
) -> Result<u64> {
    let inserted = txn
        .execute_raw(pg(
            format!(
                "INSERT INTO {} ({}) {}SELECT {} FROM {} t{}",
                into.table(&spec.name),
                spec.column_list(),
                if spec.identity_always { "OVERRIDING SYSTEM VALUE " } else { "" },
                spec.select_list("t", "$1::text"),
                from.table(&spec.name),
                from.filter(spec)
            ),
            spec.tenant_value(new_id),
        ))
        .await?;
    Ok(inserted.rows_affected())
}

/// Deletes the tenant's rows of every table at `end` (children first), so a copy starts
/// from nothing: rows a migration seeded in fresh storage are the source's to give.
pub(crate) async fn clear(dst: &DatabaseTransaction, end: &End, specs: &[TableSpec]) -> Result<()> {
    for spec in specs.iter().rev() {
        dst.execute_unprepared(&format!("DELETE FROM {} t{}", end.table(&spec.name), end.filter(spec))).await?;
    }
    Ok(())
}

/// The largest value of each sequence-fed column among the tenant's rows at `end`, read in
/// `dst` (for shared tables, the transaction bound to the tenant).
pub(crate) async fn sequence_maxima(
    dst: &DatabaseTransaction,
    end: &End,
    spec: &TableSpec,
) -> Result<Vec<(String, i64)>> {
    let mut maxima = Vec::new();
    for (column, sequence) in &spec.sequences {
        let row = dst
            .query_one_raw(pg(
                format!(
                    "SELECT max(t.{})::bigint FROM {} t{}",
                    quote_ident(column),
                    end.table(&spec.name),
                    end.filter(spec)
                ),
                vec![],
            ))
            .await?;
        if let Some(max) = row.map(|row| row.try_get_by_index::<Option<i64>>(0)).transpose()?.flatten() {
            maxima.push((sequence.clone(), max));
        }
    }
    Ok(maxima)
}

/// Moves each sequence past the copied maximum, never back (a shared table's sequence may
/// be further on for other tenants' rows). `setval` is not transactional: run after the
/// copy committed.
pub(crate) async fn advance_sequences<C: ConnectionTrait>(db: &C, maxima: &[(String, i64)]) -> Result<()> {
    for (sequence, max) in maxima {
        db.query_one_raw(pg(
            "SELECT pg_catalog.setval($1::regclass, $2) \
             WHERE $2 >= COALESCE(pg_catalog.pg_sequence_last_value($1::regclass), 0)",
            vec![sequence.as_str().into(), (*max).into()],
        ))
        .await?;
    }
    Ok(())
}

/// Row count and an order-independent checksum of the tenant's rows of one table at
/// `end`, the tenant column left out (a clone or rename changes it), and how many rows'
/// tenant column is not `expected_id`. Read in `txn`, which must have
/// [`CHECKSUM_SETTINGS`] so both ends print values alike. The rows are ordered byte-wise
/// (`COLLATE "C"`): the two ends may be databases with different default collations.
pub(crate) async fn checksum(
    txn: &DatabaseTransaction,
    end: &End,
    spec: &TableSpec,
    expected_id: &str,
) -> Result<super::Checksum> {
    let (without, foreign) = match &spec.tenant_column {
        Some(column) => (
            format!(" - {}", quote_literal(column)),
            format!("t.{} IS DISTINCT FROM {}", quote_ident(column), quote_literal(expected_id)),
        ),
        None => (String::new(), "false".to_owned()),
    };
    let row = txn
        .query_one_raw(pg(
            format!(
                "SELECT count(*), pg_catalog.md5(COALESCE(string_agg(r, E'\\n' ORDER BY r COLLATE \"C\"), '')), \
                        count(*) FILTER (WHERE f) \
                 FROM (SELECT (pg_catalog.to_jsonb(t){without})::text AS r, {foreign} AS f FROM {} t{}) x",
                end.table(&spec.name),
                end.filter(spec)
            ),
            vec![],
        ))
        .await?;
    let Some(row) = row else {
        return Ok(super::Checksum { rows: 0, digest: String::new(), foreign: 0 });
    };
    Ok(super::Checksum {
        rows: u64::try_from(row.try_get_by_index::<i64>(0)?).unwrap_or(0),
        digest: row.try_get_by_index(1)?,
        foreign: u64::try_from(row.try_get_by_index::<i64>(2)?).unwrap_or(0),
    })
}

/// Settings both ends' checksum transactions share, so values print alike.
pub(crate) const CHECKSUM_SETTINGS: &str = "SET LOCAL TimeZone = 'UTC'; SET LOCAL extra_float_digits = 3; \
     SET LOCAL DateStyle = 'ISO, YMD'; SET LOCAL IntervalStyle = 'postgres'";
