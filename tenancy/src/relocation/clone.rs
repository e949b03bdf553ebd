//! Cloning a tenant from a template (`clonetenant`, `createtenant --from`): the
//! [`ProvisionStep::CopyTemplate`](crate::ProvisionStep::CopyTemplate) step of
//! provisioning, which gives the new tenant's storage the template's tables and rows.
//!
//! - Schema from a schema template on PostgreSQL: the tables, sequences, constraints and
//!   indexes are made from the template's catalog and the rows copied with
//!   `INSERT … SELECT`, all inside provisioning's master transaction, so signup runs no
//!   migration at all (the template's `seaql_migrations` rows come along). A template
//!   holding anything else (views, functions, types, triggers, policies, partitions)
//!   takes the general way below instead: fail closed rather than clone it half.
//! - Otherwise: the new storage is migrated (the template must be at the migrator's
//!   version), then the rows are copied by the move's engine.
//!
//! Either way the tenant column of every copied row holds the new id, and each table's
//! rows are verified against the template (count and checksum, tenant column aside).

use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, Statement, Value};

use super::{MoveOptions, MoveTo, PgSide, copy_postgres};
use crate::provisioning::ProvisionHooks;
use crate::registry::placement::Placement;
use crate::sql::{quote_ident, quote_literal};
use crate::{Error, Result, Tenancy, Tenant, TenantId, TenantStatus};

fn pg(sql: impl Into<String>, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// Gives `target` (being provisioned; `txn` is provisioning's master transaction for a
/// schema tenant) the tables and rows of `template_id`.
pub(crate) async fn populate(
    tenancy: &Tenancy,
    template_id: &TenantId,
    target: &Tenant,
    txn: Option<&DatabaseTransaction>,
    hooks: &dyn ProvisionHooks,
) -> Result<()> {
    let template = tenancy.get_tenant(template_id).await?;
    let refuse = |reason: String| Error::CannotRelocate { action: "clone", tenant: template_id.to_string(), reason };
    if !matches!(template.status(), TenantStatus::Ready | TenantStatus::Suspended) {
        return Err(refuse(format!("the template is not ready (status '{}')", template.status())));
    }
    if !template.isolation().has_relational_storage() {
        return Err(refuse("a cache tenant has no tables to copy".to_owned()));
    }
    if !target.isolation().has_relational_storage() {
        return Err(refuse("a cache tenant cannot hold a template's tables".to_owned()));
    }
    let new_id = target.id().as_str();
    // From the catalog only within one database: the master's, or one shard.
    if let (Placement::Schema { schema: from, .. }, Placement::Schema { schema: into, .. }, Some(txn)) =
        (template.placement(), target.placement(), txn)
        && template.placement().shard() == target.placement().shard()
        && catalog_cloneable(txn, from).await?
    {
        let columns = crate::storage::table::tenant_columns(tenancy).await?;
        return clone_schema(txn, &template, from, into, new_id, &columns).await;
    }
    // A database made with `CREATE DATABASE … TEMPLATE` holds the template's tables and
    // rows already: only the tenant column is the clone's to set.
    if let Placement::Database(crate::TenantDatabase::Postgres(_)) = target.placement()
        && let Some(conn) = crate::storage::migration_target(tenancy, target).await?
    {
        let templated = match has_tables(&conn).await {
            Ok(true) => Some(claim_rows(tenancy, &conn, new_id).await),
            Ok(false) => None,
            Err(err) => Some(Err(err)),
        };
        let _ = conn.close().await;
        if let Some(claimed) = templated {
            let specs = claimed?;
            return super::verify(tenancy, &template, target, &specs, new_id).await.map(drop);
        }
    }
    hooks.check_version(tenancy, &template).await.map_err(|source| Error::MoveFailed {
        tenant: template_id.to_string(),
        step: "checking the template's migrations".to_owned(),
        source,
    })?;
    hooks.migrate(tenancy, target, txn).await.map_err(|source| Error::MoveFailed {
        tenant: new_id.to_owned(),
        step: "migrating the new storage".to_owned(),
        source,
    })?;
    match (txn, target.placement()) {
        (Some(txn), Placement::Schema { schema, .. }) => copy_into(tenancy, &template, txn, schema, new_id).await,
        _ => {
            let specs = super::copy(tenancy, &template, target, new_id, &MoveOptions::new(MoveTo::Table)).await?;
            super::verify(tenancy, &template, target, &specs, new_id).await.map(drop)
        }
    }
}

/// Copies the template's rows into a schema being made in `txn` (migrated in it), then
/// verifies them in the same transaction.
async fn copy_into(
    tenancy: &Tenancy,
    template: &Tenant,
    txn: &DatabaseTransaction,
    into: &str,
    new_id: &str,
) -> Result<()> {
    let from = PgSide::of(tenancy, template).await?;
    let copied = async {
        let columns = crate::storage::table::tenant_columns(tenancy).await?;
        let source_specs = from.tables(tenancy, &columns).await?;
        let names: Vec<String> = source_specs.iter().map(|s| s.name.clone()).collect();
        let specs = copy_postgres::tables(txn, into, &columns, Some(&names)).await?;
        let into_end = copy_postgres::End { schema: into.to_owned(), shared_by: None };
        let src = from.begin(tenancy, true).await?;
        let written = async {
            copy_postgres::clear(txn, &into_end, &specs).await?;
            let mut maxima = Vec::new();
            for spec in &specs {
                copy_postgres::copy_table(
                    &src,
                    &from.end,
                    txn,
                    &into_end,
                    spec,
                    template.id().as_str(),
                    new_id,
                    &mut |_| {},
                )
                .await?;
                maxima.extend(copy_postgres::sequence_maxima(txn, &into_end, spec).await?);
            }
            copy_postgres::advance_sequences(txn, &maxima).await
        }
        .await;
        from.end(tenancy, src).await?;
        written?;
        // Verified inside the transaction that holds the copy.
        let src = from.begin(tenancy, true).await?;
        src.execute_unprepared(copy_postgres::CHECKSUM_SETTINGS).await?;
        txn.execute_unprepared(copy_postgres::CHECKSUM_SETTINGS).await?;
        let mut result = Ok(());
        for spec in &specs {
            let a = copy_postgres::checksum(&src, &from.end, spec, template.id().as_str()).await?;
            let b = copy_postgres::checksum(txn, &into_end, spec, new_id).await?;
            if a.rows != b.rows || a.digest != b.digest || b.foreign > 0 {
                result = Err(mismatch(template, &spec.name, &a, &b));
                break;
            }
        }
        from.end(tenancy, src).await?;
        result
    }
    .await;
    from.close().await;
    copied
}

fn mismatch(template: &Tenant, table: &str, a: &super::Checksum, b: &super::Checksum) -> Error {
    Error::CopyMismatch {
        tenant: template.id().to_string(),
        table: table.to_owned(),
        source_rows: a.rows,
        target_rows: b.rows,
        source_digest: a.digest.clone(),
        target_digest: b.digest.clone(),
        foreign_rows: b.foreign,
    }
}

/// Whether the template schema holds only what [`clone_schema`] makes: tables (not
/// partitioned), their sequences, constraints and indexes.
async fn catalog_cloneable(txn: &DatabaseTransaction, schema: &str) -> Result<bool> {
    let row = txn
        .query_one_raw(pg(
            "WITH ns AS (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = $1) \
             SELECT (SELECT count(*) FROM pg_catalog.pg_class c, ns WHERE c.relnamespace = ns.oid \
                       AND (c.relkind NOT IN ('r', 'S', 'i') OR c.relispartition)) \
                  + (SELECT count(*) FROM pg_catalog.pg_proc p, ns WHERE p.pronamespace = ns.oid) \
                  + (SELECT count(*) FROM pg_catalog.pg_type t, ns WHERE t.typnamespace = ns.oid \
                       AND (t.typtype IN ('e', 'd', 'r', 'm') OR (t.typtype = 'c' AND t.typrelid = 0))) \
                  + (SELECT count(*) FROM pg_catalog.pg_trigger g JOIN pg_catalog.pg_class c ON c.oid = g.tgrelid, ns \
                       WHERE c.relnamespace = ns.oid AND NOT g.tgisinternal) \
                  + (SELECT count(*) FROM pg_catalog.pg_policy y JOIN pg_catalog.pg_class c ON c.oid = y.polrelid, ns \
                       WHERE c.relnamespace = ns.oid) \
                  + (SELECT count(*) FROM pg_catalog.pg_class c, ns WHERE c.relnamespace = ns.oid \
                       AND c.relkind = 'r' AND (c.relrowsecurity OR c.relhasrules))",
            vec![schema.into()],
        ))
        .await?;
    Ok(row.map(|row| row.try_get_by_index::<i64>(0)).transpose()?.unwrap_or(1) == 0)
}

/// Makes in schema `into` the tables of schema `from` (read from the catalog), copies
/// their rows and sequence positions, and verifies the rows; all in `txn`.
async fn clone_schema(
    txn: &DatabaseTransaction,
    template: &Tenant,
    from: &str,
    into: &str,
    new_id: &str,
    columns: &std::collections::BTreeMap<String, String>,
) -> Result<()> {
    let saved: String = txn
        .query_one_raw(pg("SELECT pg_catalog.current_setting('search_path')", vec![]))
        .await?
        .map(|row| row.try_get_by_index(0))
        .transpose()?
        .unwrap_or_default();
    // Definitions rendered with the template first on the search path come out
    // unqualified; run with the new schema there, they make its own objects.
    set_search_path(txn, &quote_ident(from)).await?;
    let script = structure_script(txn, from, into).await?;
    set_search_path(txn, &format!("{}, pg_catalog", quote_ident(into))).await?;
    txn.execute_unprepared(&script).await?;
    let specs = copy_postgres::tables(txn, into, columns, None).await?;
    let mut specs_all = specs.clone();
    // The migration history comes along too: the clone is at the template's version.
    specs_all.extend(copy_postgres::tables_named(txn, into, &[super::MIGRATION_TABLE.to_owned()]).await?);
    let (from_end, into_end) = (
        copy_postgres::End { schema: from.to_owned(), shared_by: None },
        copy_postgres::End { schema: into.to_owned(), shared_by: None },
    );
    for spec in &specs_all {
        copy_postgres::insert_select(txn, &from_end, &into_end, spec, new_id).await?;
    }
    copy_sequences(txn, from, into).await?;
    txn.execute_unprepared(copy_postgres::CHECKSUM_SETTINGS).await?;
    for spec in &specs {
        let a = copy_postgres::checksum(txn, &from_end, spec, template.id().as_str()).await?;
        let b = copy_postgres::checksum(txn, &into_end, spec, new_id).await?;
        if a.rows != b.rows || a.digest != b.digest || b.foreign > 0 {
            return Err(mismatch(template, &spec.name, &a, &b));
        }
    }
    set_search_path(txn, &saved).await
}

async fn set_search_path(txn: &DatabaseTransaction, path: &str) -> Result<()> {
    txn.execute_raw(pg("SELECT pg_catalog.set_config('search_path', $1, true)", vec![path.into()])).await?;
    Ok(())
}

/// The DDL that makes in `into` what `from` holds: sequences, tables with their columns,
/// defaults, identities and generated columns, then constraints (foreign keys last), other
/// indexes, and the sequences' owners. Read with `from` on the search path.
async fn structure_script(txn: &DatabaseTransaction, from: &str, into: &str) -> Result<String> {
    let into_q = quote_ident(into);
    let from_lit = quote_literal(from);
    let mut script = Vec::new();
    // Sequences that are not an identity column's (those come with their column).
    let sequences = txn
        .query_all_raw(pg(
            format!(
                "SELECT pg_catalog.quote_ident(c.relname), pg_catalog.format_type(s.seqtypid, NULL), s.seqincrement, \
                        s.seqmin, s.seqmax, s.seqstart, s.seqcache, s.seqcycle \
                 FROM pg_catalog.pg_sequence s JOIN pg_catalog.pg_class c ON c.oid = s.seqrelid \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = {from_lit} AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
                       WHERE d.objid = c.oid AND d.classid = 'pg_catalog.pg_class'::regclass AND d.deptype = 'i') \
                 ORDER BY c.relname"
            ),
            vec![],
        ))
        .await?;
    for row in &sequences {
        let (name, ty): (String, String) = (row.try_get_by_index(0)?, row.try_get_by_index(1)?);
        let (inc, min, max, start, cache): (i64, i64, i64, i64, i64) = (
            row.try_get_by_index(2)?,
            row.try_get_by_index(3)?,
            row.try_get_by_index(4)?,
            row.try_get_by_index(5)?,
            row.try_get_by_index(6)?,
        );
        let cycle: bool = row.try_get_by_index(7)?;
        script.push(format!(
            "CREATE SEQUENCE {into_q}.{name} AS {ty} INCREMENT BY {inc} MINVALUE {min} MAXVALUE {max} \
             START WITH {start} CACHE {cache} {}CYCLE",
            if cycle { "" } else { "NO " }
        ));
    }
    let columns = txn
        .query_all_raw(pg(
            format!(
                "SELECT pg_catalog.quote_ident(c.relname), pg_catalog.quote_ident(a.attname), \
                        pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull, \
                        pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated::text, \
                        CASE WHEN a.attcollation <> t.typcollation THEN \
                          (SELECT pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname) \
                           FROM pg_catalog.pg_collation co JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace \
                           WHERE co.oid = a.attcollation) END \
                 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                 JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
                 LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum \
                 WHERE n.nspname = {from_lit} AND c.relkind = 'r' ORDER BY c.relname, a.attnum"
            ),
            vec![],
        ))
        .await?;
    let mut tables: Vec<(String, Vec<String>)> = Vec::new();
    for row in &columns {
        let (table, column, ty): (String, String, String) =
            (row.try_get_by_index(0)?, row.try_get_by_index(1)?, row.try_get_by_index(2)?);
        let not_null: bool = row.try_get_by_index(3)?;
        let default: Option<String> = row.try_get_by_index(4)?;
        let (identity, generated): (String, String) = (row.try_get_by_index(5)?, row.try_get_by_index(6)?);
        let collation: Option<String> = row.try_get_by_index(7)?;
        let mut definition = format!("{column} {ty}");
        if let Some(collation) = collation {
            definition.push_str(&format!(" COLLATE {collation}"));
        }
        match (identity.as_str(), generated.as_str(), default) {
            ("a", _, _) => definition.push_str(" GENERATED ALWAYS AS IDENTITY"),
            ("d", _, _) => definition.push_str(" GENERATED BY DEFAULT AS IDENTITY"),
            (_, "s", Some(expression)) => definition.push_str(&format!(" GENERATED ALWAYS AS ({expression}) STORED")),
            (_, _, Some(expression)) => definition.push_str(&format!(" DEFAULT {expression}")),
            _ => {}
        }
        if not_null {
            definition.push_str(" NOT NULL");
        }
        match tables.last_mut() {
            Some((name, columns)) if *name == table => columns.push(definition),
            _ => tables.push((table, vec![definition])),
        }
    }
    let constraints = txn
        .query_all_raw(pg(
            format!(
                "SELECT pg_catalog.quote_ident(c.relname), pg_catalog.quote_ident(k.conname), \
                        pg_catalog.pg_get_constraintdef(k.oid), k.contype = 'f' \
                 FROM pg_catalog.pg_constraint k JOIN pg_catalog.pg_class c ON c.oid = k.conrelid \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = {from_lit} AND k.contype IN ('p', 'u', 'c', 'x', 'f') \
                 ORDER BY c.relname, k.conname"
            ),
            vec![],
        ))
        .await?;
    // Keys and checks are made with their table (cheaper than altering it after); foreign
    // keys once every table they may reference exists.
    let mut foreign_keys = Vec::new();
    for row in &constraints {
        let (table, name, definition): (String, String, String) =
            (row.try_get_by_index(0)?, row.try_get_by_index(1)?, row.try_get_by_index(2)?);
        let foreign: bool = row.try_get_by_index(3)?;
        let constraint = format!("CONSTRAINT {name} {definition}");
        match tables.iter_mut().find(|(name, _)| *name == table) {
            Some((_, columns)) if !foreign => columns.push(constraint),
            _ => foreign_keys.push(format!("ALTER TABLE {into_q}.{table} ADD {constraint}")),
        }
    }
    for (table, columns) in &tables {
        script.push(format!("CREATE TABLE {into_q}.{table} ({})", columns.join(", ")));
    }
    script.extend(foreign_keys);
    // Index definitions always name the table with its schema: swap it for the new one.
    let indexes = txn
        .query_all_raw(pg(
            format!(
                "SELECT pg_catalog.replace(pg_catalog.pg_get_indexdef(i.indexrelid), \
                          ' ON ' || pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(t.relname) || ' ', \
                          ' ON ' || {} || '.' || pg_catalog.quote_ident(t.relname) || ' ') \
                 FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class t ON t.oid = i.indrelid \
                 JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace \
                 WHERE n.nspname = {from_lit} \
                   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conindid = i.indexrelid) \
                 ORDER BY 1",
                quote_literal(&into_q)
            ),
            vec![],
        ))
        .await?;
    for row in &indexes {
        script.push(row.try_get_by_index(0)?);
    }
    // Serial columns own their sequences, so dropping the column drops the sequence.
    let owned = txn
        .query_all_raw(pg(
            format!(
                "SELECT pg_catalog.quote_ident(s.relname), pg_catalog.quote_ident(t.relname), \
                        pg_catalog.quote_ident(a.attname) \
                 FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S' \
                 JOIN pg_catalog.pg_class t ON t.oid = d.refobjid \
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid \
                 JOIN pg_catalog.pg_namespace n ON n.oid = s.relnamespace \
                 WHERE n.nspname = {from_lit} AND d.deptype = 'a' AND d.classid = 'pg_catalog.pg_class'::regclass"
            ),
            vec![],
        ))
        .await?;
    for row in &owned {
        let (sequence, table, column): (String, String, String) =
            (row.try_get_by_index(0)?, row.try_get_by_index(1)?, row.try_get_by_index(2)?);
        script.push(format!("ALTER SEQUENCE {into_q}.{sequence} OWNED BY {into_q}.{table}.{column}"));
    }
    Ok(script.join(";\n"))
}

/// Every sequence of `into` continues where its namesake in `from` is.
async fn copy_sequences(txn: &DatabaseTransaction, from: &str, into: &str) -> Result<()> {
    let names = txn
        .query_all_raw(pg(
            "SELECT c.relname::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind = 'S'",
            vec![from.into()],
        ))
        .await?;
    for row in names {
        let name: String = row.try_get_by_index(0)?;
        let (source, target) = (
            format!("{}.{}", quote_ident(from), quote_ident(&name)),
            format!("{}.{}", quote_ident(into), quote_ident(&name)),
        );
        txn.execute_unprepared(&format!(
            "SELECT pg_catalog.setval({}::regclass, s.last_value, s.is_called) FROM {source} s \
             WHERE pg_catalog.to_regclass({}) IS NOT NULL",
            quote_literal(&target),
            quote_literal(&target)
        ))
        .await?;
    }
    Ok(())
}

/// Whether a new database already has tables (it was made from its template).
async fn has_tables(conn: &sea_orm::DatabaseConnection) -> Result<bool> {
    let row = conn
        .query_one_raw(pg(
            "SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') LIMIT 1",
            vec![],
        ))
        .await?;
    Ok(row.is_some())
}

/// Sets the tenant column of every tenant-scoped table of a database copied from its
/// template to `new_id`: one statement, so the foreign keys that include the tenant
/// column are checked once every table is updated. Returns the tables, for verifying.
async fn claim_rows(
    tenancy: &Tenancy,
    conn: &sea_orm::DatabaseConnection,
    new_id: &str,
) -> Result<Vec<super::TableSpec>> {
    let columns = crate::storage::table::tenant_columns(tenancy).await?;
    let specs = copy_postgres::tables(conn, "public", &columns, None).await?;
    let updates: Vec<String> = specs
        .iter()
        .enumerate()
        .filter_map(|(index, spec)| {
            let column = quote_ident(spec.tenant_column.as_ref()?);
            Some(format!(
                "u{index} AS (UPDATE public.{} SET {column} = $1 WHERE {column} IS DISTINCT FROM $1)",
                quote_ident(&spec.name)
            ))
        })
        .collect();
    if !updates.is_empty() {
        conn.execute_raw(pg(format!("WITH {} SELECT 1", updates.join(", ")), vec![new_id.into()])).await?;
    }
    Ok(specs)
}
