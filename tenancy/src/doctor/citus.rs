//! Citus: the registered models and the master's catalog checked against the rules Citus
//! imposes on each isolation mode (`tenancydoctor --citus`, [`Tenancy::diagnose_citus`];
//! the rules and their sources are in `docs/scale-out.md`). Only PostgreSQL's own catalog
//! is read, so the check runs on a server without Citus.
//!
//! - **Table isolation** maps onto tables distributed by the tenant column. Every
//!   table-scoped model's table in the master's `public` schema is read from the catalog:
//!   its primary key and unique indexes must include the tenant column
//!   ([`CitusRule::PrimaryKey`], [`CitusRule::UniqueKey`]); a foreign key to another scoped
//!   table must pair the tenant columns, and none may come from a table that is not
//!   scoped ([`CitusRule::ForeignKey`]); a foreign key to a table that is not scoped needs
//!   that table to be a reference table ([`CitusRule::ReferenceTable`]); key columns must
//!   be `bigint` ([`CitusRule::IntegerKey`]). A model whose table is not in the master (no
//!   table tenant has migrated it yet, or a SQLite master) is checked by what the model
//!   declares: its primary key's columns and their types.
//! - **Schema isolation** maps onto schema-based sharding. The tables in the schemas of the
//!   registered schema tenants (in the master database and in every shard database) are
//!   checked for what `citus_schema_distribute` refuses ([`CitusRule::SchemaSharding`]).
//! - **Database isolation** has nothing to check: Citus does not shard databases.

use std::collections::{BTreeMap, HashMap, HashSet};

use sea_orm::{ColumnType, ConnectionTrait};

use super::finding::CitusRule;
use super::{Finding, json_list, pg};
use crate::registry::placement::{Placement, ShardDatabase};
use crate::{Backend, Result, ScopedModel, Tenancy, TenantId, scoped_models, shared_models};

/// [`Tenancy::diagnose_citus`].
pub(crate) async fn check(tenancy: &Tenancy) -> Result<Vec<Finding>> {
    let scoped: Vec<&ScopedModel> =
        scoped_models()?.into_iter().filter(|model| model.scope().table_column().is_some()).collect();
    let shared: HashSet<&str> = shared_models()?.iter().map(|model| model.table()).collect();
    let mut findings = Vec::new();
    let present = match tenancy.backend() {
        Backend::Postgres => {
            let catalog = Catalog { db: tenancy.master(), scoped: &scoped, shared: &shared };
            catalog.table_isolation(&mut findings).await?
        }
        Backend::Sqlite => HashSet::new(),
    };
    for model in scoped.iter().filter(|model| !present.contains(model.table())) {
        from_model(model, &mut findings);
    }
    if tenancy.backend() == Backend::Postgres {
        // The schemas by the database they are in: the master's, or each shard.
        let mut by_database: Vec<(Option<ShardDatabase>, BTreeMap<String, TenantId>)> = Vec::new();
        for tenant in tenancy.tenants().await? {
            if let Placement::Schema { schema, shard, .. } = tenant.placement() {
                let at = match by_database.iter().position(|(database, _)| database == shard) {
                    Some(at) => at,
                    None => {
                        by_database.push((shard.clone(), BTreeMap::new()));
                        by_database.len() - 1
                    }
                };
                by_database[at].1.insert(schema.clone(), tenant.id().clone());
            }
        }
        for (shard, schemas) in &by_database {
            let home = crate::storage::shard::Home::open(tenancy, shard.as_ref()).await?;
            let checked = schema_sharding(home.db(tenancy), schemas, &mut findings).await;
            home.close().await;
            checked?;
        }
    }
    findings.sort_by_key(sort_key);
    Ok(findings)
}

/// Findings in a stable order: by table, then rule, then message.
fn sort_key(finding: &Finding) -> (String, Option<CitusRule>, String) {
    match finding {
        Finding::Citus { table, rule, problem, .. } => (table.clone(), Some(*rule), problem.clone()),
        other => (other.subject(), None, other.message()),
    }
}

fn finding(table: &str, tenant: Option<&TenantId>, rule: CitusRule, problem: String, fix: String) -> Finding {
    Finding::Citus { table: table.to_owned(), tenant: tenant.cloned(), rule, problem, fix }
}

/// The tenant column of a scoped model (the filter in [`check`] keeps only those).
fn tenant_column(model: &ScopedModel) -> &'static str {
    model.scope().table_column().unwrap_or("tenant_id")
}

/// What to write instead of an integer key column.
fn bigint_fix(table: &str, column: &str) -> String {
    format!(
        "make it bigint (ALTER TABLE {table} ALTER COLUMN {column} TYPE bigint, with the columns referencing it and \
         its sequence; i64 in the model, big_pk_auto / big_integer in migrations): sequences narrower than bigint \
         fail for inserts on Citus worker nodes"
    )
}

/// A model whose table is not in the master's `public` schema: its declared primary key.
fn from_model(model: &ScopedModel, findings: &mut Vec<Finding>) {
    let table = model.table();
    let column = tenant_column(model);
    let key = model.primary_key();
    let names: Vec<&str> = key.iter().map(|key| key.name).collect();
    let source = format!("the model {model} (its table is not in the master database, so the model was checked)");
    if !names.contains(&column) {
        findings.push(finding(
            table,
            None,
            CitusRule::PrimaryKey,
            format!(
                "the primary key ({}) declared by {source} does not include the tenant column {column}",
                names.join(", ")
            ),
            format!(
                "declare PRIMARY KEY ({column}, {}) in the migration and mark {column} #[sea_orm(primary_key)] too",
                names.join(", ")
            ),
        ));
    }
    for key in &key {
        if matches!(
            key.column_type,
            ColumnType::TinyInteger
                | ColumnType::SmallInteger
                | ColumnType::Integer
                | ColumnType::TinyUnsigned
                | ColumnType::SmallUnsigned
                | ColumnType::Unsigned
        ) {
            findings.push(finding(
                table,
                None,
                CitusRule::IntegerKey,
                format!("primary key column {} is a 32-bit or narrower integer in {source}", key.name),
                bigint_fix(table, key.name),
            ));
        }
    }
}

/// Table isolation's shared tables, read from the master's catalog.
struct Catalog<'a, C> {
    db: &'a C,
    scoped: &'a [&'a ScopedModel],
    shared: &'a HashSet<&'a str>,
}

impl<C: ConnectionTrait> Catalog<'_, C> {
    /// The checks of every scoped model's table in `public`; returns the tables found.
    async fn table_isolation(&self, findings: &mut Vec<Finding>) -> Result<HashSet<String>> {
        let tables = json_list(self.scoped.iter().map(|model| model.table()));
        // language=PostgreSQL
        let sql = "SELECT c.relname::text FROM pg_catalog.pg_class c \
                   WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') \
                     AND c.relname::text IN (SELECT json_array_elements_text($1::json))";
        let present = super::strings(self.db, sql, vec![tables]).await?;
        if present.is_empty() {
            return Ok(present);
        }
        let tenant_of: HashMap<&str, &str> = self
            .scoped
            .iter()
            .filter(|model| present.contains(model.table()))
            .map(|model| (model.table(), tenant_column(model)))
            .collect();
        self.unique_keys(&tenant_of, findings).await?;
        self.foreign_keys(&tenant_of, findings).await?;
        self.integer_keys(&tenant_of, findings).await?;
        Ok(present)
    }

    /// Primary keys and unique indexes (of constraints or not) without the tenant column.
    async fn unique_keys(&self, tenant_of: &HashMap<&str, &str>, findings: &mut Vec<Finding>) -> Result<()> {
        // Key columns only (`indnkeyatts`: `INCLUDE` columns do not make a key); an
        // expression's position is 0 in `indkey`.
        // language=PostgreSQL
        let sql = "SELECT c.relname::text, i.indisprimary, ic.relname::text, \
                     (SELECT json_agg(COALESCE(a.attname::text, '(expression)') ORDER BY k.i) \
                        FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(n, i) \
                        LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n \
                        WHERE k.i <= i.indnkeyatts)::text, \
                     EXISTS (SELECT 1 FROM pg_catalog.pg_constraint con \
                       WHERE con.conindid = i.indexrelid AND con.contype IN ('p', 'u')) \
                   FROM pg_catalog.pg_index i \
                   JOIN pg_catalog.pg_class c ON c.oid = i.indrelid \
                   JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid \
                   WHERE i.indisunique AND c.relnamespace = 'public'::regnamespace \
                     AND c.relname::text IN (SELECT json_array_elements_text($1::json)) \
                   ORDER BY 1, 2 DESC, 3";
        let rows = self.db.query_all_raw(pg(sql, vec![json_list(tenant_of.keys().copied())])).await?;
        for row in rows {
            let (table, primary, name): (String, bool, String) =
                (row.try_get_by_index(0)?, row.try_get_by_index(1)?, row.try_get_by_index(2)?);
            let columns = from_json_list(&row.try_get_by_index::<String>(3)?)?;
            let constraint: bool = row.try_get_by_index(4)?;
            let Some(&tenant) = tenant_of.get(table.as_str()) else { continue };
            if columns.iter().any(|column| column == tenant) {
                continue;
            }
            let list = columns.join(", ");
            let (rule, problem, fix) = if primary {
                (
                    CitusRule::PrimaryKey,
                    format!("primary key \"{name}\" ({list}) does not include the tenant column {tenant}"),
                    format!(
                        "make it PRIMARY KEY ({tenant}, {list}) (and the model's primary key with it): Citus enforces \
                         a primary key only when it contains the distribution column"
                    ),
                )
            } else {
                let what = if constraint { "unique constraint" } else { "unique index" };
                (
                    CitusRule::UniqueKey,
                    format!("{what} \"{name}\" ({list}) does not include the tenant column {tenant}"),
                    format!(
                        "make it UNIQUE ({tenant}, {list}), unique per tenant: Citus enforces uniqueness only when \
                         the key contains the distribution column"
                    ),
                )
            };
            findings.push(finding(&table, None, rule, problem, fix));
        }
        Ok(())
    }

    /// Foreign keys from or to a scoped table.
    async fn foreign_keys(&self, tenant_of: &HashMap<&str, &str>, findings: &mut Vec<Finding>) -> Result<()> {
        // language=PostgreSQL
        let sql = "WITH scoped AS (SELECT c.oid FROM pg_catalog.pg_class c \
                     WHERE c.relnamespace = 'public'::regnamespace \
                       AND c.relname::text IN (SELECT json_array_elements_text($1::json))) \
                   SELECT con.conname::text, cn.nspname::text, c.relname::text, pn.nspname::text, p.relname::text, \
                     (SELECT json_agg(a.attname ORDER BY k.i) FROM unnest(con.conkey) WITH ORDINALITY k(n, i) \
                        JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n)::text, \
                     (SELECT json_agg(a.attname ORDER BY k.i) FROM unnest(con.confkey) WITH ORDINALITY k(n, i) \
                        JOIN pg_catalog.pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n)::text \
                   FROM pg_catalog.pg_constraint con \
                   JOIN pg_catalog.pg_class c ON c.oid = con.conrelid \
                   JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace \
                   JOIN pg_catalog.pg_class p ON p.oid = con.confrelid \
                   JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace \
                   WHERE con.contype = 'f' AND con.conparentid = 0 \
                     AND (con.conrelid IN (SELECT oid FROM scoped) OR con.confrelid IN (SELECT oid FROM scoped)) \
                   ORDER BY 2, 3, 1";
        let rows = self.db.query_all_raw(pg(sql, vec![json_list(tenant_of.keys().copied())])).await?;
        for row in rows {
            let name: String = row.try_get_by_index(0)?;
            let (child_schema, child): (String, String) = (row.try_get_by_index(1)?, row.try_get_by_index(2)?);
            let (parent_schema, parent): (String, String) = (row.try_get_by_index(3)?, row.try_get_by_index(4)?);
            let columns = from_json_list(&row.try_get_by_index::<String>(5)?)?;
            let referenced = from_json_list(&row.try_get_by_index::<String>(6)?)?;
            let scoped = |schema: &str, table: &str| {
                if schema == "public" { tenant_of.get(table).copied() } else { None }
            };
            let shown = |schema: &str, table: &str| {
                if schema == "public" { table.to_owned() } else { format!("{schema}.{table}") }
            };
            let key = format!("foreign key \"{name}\" ({})", columns.join(", "));
            match (scoped(&child_schema, &child), scoped(&parent_schema, &parent)) {
                (Some(child_tenant), Some(parent_tenant)) => {
                    let paired = columns
                        .iter()
                        .zip(&referenced)
                        .any(|(column, referenced)| column == child_tenant && referenced == parent_tenant);
                    if paired {
                        continue;
                    }
                    let (columns, referenced) = (columns.join(", "), referenced.join(", "));
                    findings.push(finding(
                        &child,
                        None,
                        CitusRule::ForeignKey,
                        format!(
                            "{key} references {parent} ({referenced}) without the tenant columns, so it would join \
                             rows of two shards"
                        ),
                        format!(
                            "declare it FOREIGN KEY ({child_tenant}, {columns}) REFERENCES {parent} ({parent_tenant}, \
                             {referenced}) (the row-security step rewrites it so on PostgreSQL; Citus needs it in \
                             the migration)"
                        ),
                    ));
                }
                (Some(_), None) => {
                    let parent_shown = shown(&parent_schema, &parent);
                    let declared = if parent_schema == "public" && self.shared.contains(parent.as_str()) {
                        "declared #[tenancy::shared]"
                    } else {
                        "not tenant-scoped"
                    };
                    findings.push(finding(
                        &child,
                        None,
                        CitusRule::ReferenceTable,
                        format!(
                            "{key} references {parent_shown}, which is {declared}: a table distributed by the tenant \
                             column may reference only colocated distributed tables and reference tables"
                        ),
                        format!(
                            "make {parent_shown} a reference table before distributing {child} \
                             (SELECT create_reference_table('{parent_shown}')): it is then copied to every node, so \
                             keep it small; or drop the foreign key"
                        ),
                    ));
                }
                (None, Some(_)) => {
                    let child_shown = shown(&child_schema, &child);
                    findings.push(finding(
                        &child_shown,
                        None,
                        CitusRule::ForeignKey,
                        format!(
                            "{key} references the tenant-scoped table {parent} from a table that is not \
                             tenant-scoped: Citus refuses foreign keys from reference and local tables to \
                             distributed tables"
                        ),
                        format!(
                            "drop the foreign key, or make {child_shown} tenant-scoped with the tenant column in the key"
                        ),
                    ));
                }
                (None, None) => {}
            }
        }
        Ok(())
    }

    /// `smallint` and `integer` columns of scoped tables that are keys: in the primary
    /// key, in a foreign key, or filled from a sequence (`serial`, identity).
    async fn integer_keys(&self, tenant_of: &HashMap<&str, &str>, findings: &mut Vec<Finding>) -> Result<()> {
        // language=PostgreSQL
        let sql = "SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod), \
                     (a.attidentity <> '' OR EXISTS (SELECT 1 FROM pg_catalog.pg_attrdef d \
                        WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum \
                          AND pg_get_expr(d.adbin, d.adrelid) LIKE 'nextval(%')), \
                     EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conrelid = a.attrelid \
                        AND k.contype = 'p' AND a.attnum = ANY (k.conkey)), \
                     EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conrelid = a.attrelid \
                        AND k.contype = 'f' AND a.attnum = ANY (k.conkey)) \
                   FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
                   WHERE c.relnamespace = 'public'::regnamespace \
                     AND c.relname::text IN (SELECT json_array_elements_text($1::json)) \
                     AND a.attnum > 0 AND NOT a.attisdropped \
                     AND a.atttypid IN ('pg_catalog.int2'::regtype, 'pg_catalog.int4'::regtype) \
                   ORDER BY 1, a.attnum";
        let rows = self.db.query_all_raw(pg(sql, vec![json_list(tenant_of.keys().copied())])).await?;
        for row in rows {
            let (table, column, sql_type): (String, String, String) =
                (row.try_get_by_index(0)?, row.try_get_by_index(1)?, row.try_get_by_index(2)?);
            let (sequence, primary, foreign): (bool, bool, bool) =
                (row.try_get_by_index(3)?, row.try_get_by_index(4)?, row.try_get_by_index(5)?);
            let roles: Vec<&str> =
                [(primary, "in the primary key"), (foreign, "in a foreign key"), (sequence, "filled from a sequence")]
                    .into_iter()
                    .filter_map(|(is, what)| is.then_some(what))
                    .collect();
            if roles.is_empty() {
                continue;
            }
            findings.push(finding(
                &table,
                None,
                CitusRule::IntegerKey,
                format!("column {column} is {sql_type} and {}", roles.join(", ")),
                bigint_fix(&table, &column),
            ));
        }
        Ok(())
    }
}

/// The tables in the registered schema tenants' schemas of one database, checked for what
/// Citus's schema-based sharding refuses (`citus_schema_distribute`, or a table created in
/// a distributed schema): foreign tables, inheritance, partitions whose parent is in
/// another schema, foreign keys out of the schema to anything but a reference table, and
/// foreign keys into it from another schema. One catalog query for all the schemas.
async fn schema_sharding<C: ConnectionTrait>(
    db: &C,
    schemas: &BTreeMap<String, TenantId>,
    findings: &mut Vec<Finding>,
) -> Result<()> {
    if schemas.is_empty() {
        return Ok(());
    }
    // Each row: the tenant schema, its table, the other table (schema-qualified) and what
    // joins them.
    // language=PostgreSQL
    let sql = "WITH s AS (SELECT n.oid FROM pg_catalog.pg_namespace n \
                 WHERE n.nspname::text IN (SELECT json_array_elements_text($1::json))) \
               SELECT n.nspname::text, c.relname::text, '', 'foreign' \
                 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind = 'f' AND n.oid IN (SELECT oid FROM s) \
               UNION ALL \
               SELECT cn.nspname::text, c.relname::text, pn.nspname || '.' || p.relname, \
                 CASE WHEN c.relispartition THEN 'partition_of' ELSE 'inherits' END \
                 FROM pg_catalog.pg_inherits i \
                 JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace \
                 JOIN pg_catalog.pg_class p ON p.oid = i.inhparent JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace \
                 WHERE cn.oid IN (SELECT oid FROM s) AND (NOT c.relispartition OR cn.oid <> pn.oid) \
               UNION ALL \
               SELECT pn.nspname::text, p.relname::text, cn.nspname || '.' || c.relname, \
                 CASE WHEN c.relispartition THEN 'partitioned_into' ELSE 'inherited_by' END \
                 FROM pg_catalog.pg_inherits i \
                 JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace \
                 JOIN pg_catalog.pg_class p ON p.oid = i.inhparent JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace \
                 WHERE pn.oid IN (SELECT oid FROM s) AND cn.oid NOT IN (SELECT oid FROM s) \
               UNION ALL \
               SELECT cn.nspname::text, c.relname::text, pn.nspname || '.' || p.relname, 'references:' || con.conname \
                 FROM pg_catalog.pg_constraint con \
                 JOIN pg_catalog.pg_class c ON c.oid = con.conrelid JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace \
                 JOIN pg_catalog.pg_class p ON p.oid = con.confrelid JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace \
                 WHERE con.contype = 'f' AND con.conparentid = 0 AND cn.oid IN (SELECT oid FROM s) AND cn.oid <> pn.oid \
               UNION ALL \
               SELECT pn.nspname::text, p.relname::text, cn.nspname || '.' || c.relname, 'referenced_by:' || con.conname \
                 FROM pg_catalog.pg_constraint con \
                 JOIN pg_catalog.pg_class c ON c.oid = con.conrelid JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace \
                 JOIN pg_catalog.pg_class p ON p.oid = con.confrelid JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace \
                 WHERE con.contype = 'f' AND con.conparentid = 0 AND pn.oid IN (SELECT oid FROM s) \
                   AND cn.oid NOT IN (SELECT oid FROM s)";
    let rows = db.query_all_raw(pg(sql, vec![json_list(schemas.keys().map(String::as_str))])).await?;
    for row in rows {
        let (schema, table, other, what): (String, String, String, String) =
            (row.try_get_by_index(0)?, row.try_get_by_index(1)?, row.try_get_by_index(2)?, row.try_get_by_index(3)?);
        let tenant = schemas.get(&schema);
        let qualified = format!("{schema}.{table}");
        let other_in_tenant_schema =
            other.split_once('.').is_some_and(|(other_schema, _)| schemas.contains_key(other_schema));
        let (problem, fix) = match what.as_str() {
            "foreign" => (
                "is a foreign table, which a distributed schema cannot hold".to_owned(),
                "move the foreign table out of the tenant's schema".to_owned(),
            ),
            "inherits" | "inherited_by" => (
                format!(
                    "{} {other}: tables in a distributed schema cannot inherit or be inherited",
                    if what == "inherits" { "inherits from" } else { "is inherited by" }
                ),
                "replace the inheritance with separate tables, or declarative partitions within the schema".to_owned(),
            ),
            "partition_of" | "partitioned_into" => (
                format!(
                    "{} {other}, in another schema: a distributed schema's partitions must be in the same schema as \
                     their parent",
                    if what == "partition_of" { "is a partition of" } else { "has the partition" }
                ),
                "keep the parent and its partitions in the tenant's schema".to_owned(),
            ),
            _ => match what.split_once(':') {
                Some(("references", key)) if other_in_tenant_schema => (
                    format!(
                        "foreign key \"{key}\" references {other}, in another tenant's schema: foreign keys across \
                         distributed schemas are not supported"
                    ),
                    "drop the foreign key".to_owned(),
                ),
                Some(("references", key)) => (
                    format!(
                        "foreign key \"{key}\" references {other}, outside the schema: a distributed schema's tables \
                         may reference only their own schema's tables and reference tables"
                    ),
                    format!(
                        "make {other} a reference table (SELECT create_reference_table('{other}')), or drop the key"
                    ),
                ),
                Some((_, key)) => (
                    format!(
                        "is referenced by {other} (foreign key \"{key}\"), from outside the schema: Citus refuses \
                         foreign keys into a distributed schema from another schema"
                    ),
                    format!("drop the foreign key of {other}"),
                ),
                None => continue,
            },
        };
        findings.push(finding(&qualified, tenant, CitusRule::SchemaSharding, problem, fix));
    }
    Ok(())
}

/// A JSON array of strings read back from a query.
fn from_json_list(text: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|err| crate::Error::Database(sea_orm::DbErr::Custom(err.to_string())))
}
