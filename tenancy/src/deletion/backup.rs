//! `deletetenant --backup PATH`: a restorable dump of the tenant's data, written before
//! anything is removed.
//!
//! Backups hold the tenant's rows, not its structure (the application's migrations are
//! the structure), so a tenant is restored by creating it again with `--migrate` and then
//! loading the backup into it:
//!
//! - A PostgreSQL database or schema tenant: `pg_dump --format=custom --data-only` (without
//!   the migration table) where `pg_dump` is installed; load it with
//!   `pg_restore --data-only --dbname=<the tenant's database, or the master for a schema>`.
//! - A SQLite database tenant: a consistent copy of its file (`VACUUM INTO`); restore by
//!   copying it back to `<name>.db` and registering it (`--no-create-database`).
//! - Otherwise, and always for table tenants: a SQL script of the tenant's rows made
//!   through the library, one `INSERT` per table; run it against the database the rows
//!   came from, as the tables' owner (`psql -f`, `sqlite3 DB < FILE`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use serde::Serialize;

use super::Removal;
use crate::connection::binding::{Binding, begin_bound, end_bound};
use crate::connection::url::connect;
use crate::registry::placement::{Placement, TenantDatabase};
use crate::sql::{quote_ident, quote_literal};
use crate::{Backend, Error, Result, Tenancy, Tenant};

/// The application migrator's history table, which backups leave out.
const MIGRATION_TABLE: &str = "seaql_migrations";

/// What kind of file a backup is, which says how to restore it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BackupFormat {
    /// `pg_dump --format=custom`: `pg_restore --dbname=... PATH`.
    PgDump,
    /// A copy of the SQLite tenant database: copy it back to `<name>.db`.
    SqliteFile,
    /// A SQL script of the tenant's rows: run it (`psql -f PATH`, `sqlite3 DB < PATH`).
    SqlScript,
}

/// A written backup.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Backup {
    /// The file.
    pub path: PathBuf,
    /// How to restore it.
    pub format: BackupFormat,
}

/// Writes the backup of `tenant` to `path`, which must not exist.
pub(crate) async fn write(tenancy: &Tenancy, tenant: &Tenant, removals: &[Removal], path: &Path) -> Result<Backup> {
    let failed =
        |reason: String| Error::BackupFailed { tenant: tenant.id().to_string(), path: path.to_owned(), reason };
    if path.exists() {
        return Err(failed("the file exists already; name a new file".to_owned()));
    }
    let format = match tenant.placement() {
        Placement::Database(TenantDatabase::Postgres(db)) => {
            let mut url = tenancy.admin_url_for(&db.host, db.port).await?;
            url.set_path(&format!("/{}", db.name));
            match pg_dump(&url, None, path).await {
                Ok(()) => BackupFormat::PgDump,
                Err(reason) => {
                    tracing::info!(tenant = %tenant.id(), %reason, "pg_dump unavailable; writing a SQL script");
                    let conn = connect(url.as_str(), None).await?;
                    let script = script_of_schema(&conn, tenant, "public").await;
                    let _ = conn.close().await;
                    write_file(path, &script?).map_err(failed)?;
                    BackupFormat::SqlScript
                }
            }
        }
        Placement::Database(TenantDatabase::Sqlite(_)) => {
            let conn = crate::storage::migration_target(tenancy, tenant)
                .await?
                .ok_or_else(|| failed("no database to copy".to_owned()))?;
            let copied =
                conn.execute_unprepared(&format!("VACUUM INTO {}", quote_literal(&path.display().to_string()))).await;
            let _ = conn.close().await;
            copied.map_err(|err| failed(err.to_string()))?;
            BackupFormat::SqliteFile
        }
        Placement::Schema { schema, .. } => {
            let url = url::Url::parse(tenancy.master_url().as_str()).map_err(|err| failed(err.to_string()))?;
            match pg_dump(&url, Some(schema), path).await {
                Ok(()) => BackupFormat::PgDump,
                Err(reason) => {
                    tracing::info!(tenant = %tenant.id(), %reason, "pg_dump unavailable; writing a SQL script");
                    let script = script_of_schema(tenancy.master(), tenant, schema).await?;
                    write_file(path, &script).map_err(failed)?;
                    BackupFormat::SqlScript
                }
            }
        }
        Placement::Table { .. } | Placement::Cache => {
            let script = script_of_rows(tenancy, tenant, removals).await?;
            write_file(path, &script).map_err(failed)?;
            BackupFormat::SqlScript
        }
    };
    Ok(Backup { path: path.to_owned(), format })
}

/// Runs `pg_dump` (custom format) of the database at `url`, or of one schema of it. The
/// password goes through the environment, never the command line.
async fn pg_dump(url: &url::Url, schema: Option<&str>, path: &Path) -> std::result::Result<(), String> {
    let mut url = url.clone();
    let password = url.password().map(|p| percent_encoding::percent_decode_str(p).decode_utf8_lossy().into_owned());
    let _ = url.set_password(None);
    let mut command = std::process::Command::new("pg_dump");
    command.arg("--format=custom").arg("--data-only").arg(format!("--file={}", path.display()));
    let schema_name = schema.unwrap_or("public");
    if let Some(schema) = schema {
        command.arg(format!("--schema={}", quote_ident(schema)));
    }
    // The migration history comes with the restored tenant's own `--migrate`.
    command.arg(format!("--exclude-table={}.{}", quote_ident(schema_name), MIGRATION_TABLE));
    command.arg(format!("--dbname={url}"));
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .map_err(|err| err.to_string())?
        .map_err(|err| format!("pg_dump: {err}"))?;
    if output.status.success() {
        return Ok(());
    }
    let _ = std::fs::remove_file(path);
    Err(format!("pg_dump failed: {}", String::from_utf8_lossy(&output.stderr).trim()))
}

fn write_file(path: &Path, contents: &str) -> std::result::Result<(), String> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(|e| e.to_string())?;
    file.write_all(contents.as_bytes()).and_then(|()| file.sync_all()).map_err(|e| e.to_string())
}

fn header(tenant: &Tenant, restore: &str) -> String {
    format!(
        "-- tenancy backup of tenant '{}' ({} isolation), {}\n-- restore: {restore}\nBEGIN;\n",
        tenant.id(),
        tenant.isolation(),
        chrono::Utc::now().to_rfc3339(),
    )
}

/// Every table of `schema` on `db`, all rows (a schema tenant's schema, or a database
/// tenant's `public`).
async fn script_of_schema(db: &DatabaseConnection, tenant: &Tenant, schema: &str) -> Result<String> {
    let edges = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT c.relname::text, p.relname::text FROM pg_catalog.pg_constraint k \
             JOIN pg_catalog.pg_class c ON c.oid = k.conrelid JOIN pg_catalog.pg_class p ON p.oid = k.confrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE k.contype = 'f' AND n.nspname = $1",
            [schema.into()],
        ))
        .await?
        .into_iter()
        .map(|row| Ok((row.try_get_by_index::<String>(0)?, row.try_get_by_index::<String>(1)?)))
        .collect::<std::result::Result<Vec<_>, sea_orm::DbErr>>()?;
    let tables = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT c.relname::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY 1",
            [schema.into()],
        ))
        .await?;
    let names =
        tables.iter().map(|row| row.try_get_by_index::<String>(0)).collect::<std::result::Result<Vec<_>, _>>()?;
    let mut order = crate::storage::table::delete_order(names, &edges);
    // Referenced tables first.
    order.reverse();
    let mut script =
        header(tenant, "create the tenant again (with --migrate), then run this script against its storage");
    for table in order {
        if table == MIGRATION_TABLE {
            continue;
        }
        let qualified = format!("{}.{}", quote_ident(schema), quote_ident(&table));
        let sql = format!("SELECT coalesce(json_agg(t), '[]')::text FROM (SELECT * FROM {qualified}) t");
        let json = db.query_one_raw(Statement::from_string(DbBackend::Postgres, sql)).await?;
        let json: String = json.map(|row| row.try_get_by_index(0)).transpose()?.unwrap_or_else(|| "[]".to_owned());
        postgres_insert(&mut script, &qualified, &json);
    }
    script.push_str("COMMIT;\n");
    Ok(script)
}

fn postgres_insert(script: &mut String, qualified: &str, json: &str) {
    let _ = writeln!(
        script,
        "INSERT INTO {qualified} SELECT * FROM json_populate_recordset(NULL::{qualified}, {});",
        quote_literal(json)
    );
}

/// A table tenant's rows of every table the delete would empty.
async fn script_of_rows(tenancy: &Tenancy, tenant: &Tenant, removals: &[Removal]) -> Result<String> {
    let id = tenant.id().as_str();
    let restore = match tenancy.backend() {
        Backend::Postgres => "psql \"$DATABASE_URL\" -f THIS_FILE, as the owner of the shared tables",
        Backend::Sqlite => "sqlite3 tenancy.db < THIS_FILE",
    };
    let mut script = header(tenant, restore);
    // The delete's order empties referencing tables first; loading goes the other way.
    for removal in removals.iter().rev() {
        let Removal::Rows { table, column, .. } = removal else { continue };
        match tenancy.backend() {
            Backend::Postgres => {
                let qualified = format!("public.{}", quote_ident(table));
                let sql = format!(
                    "SELECT coalesce(json_agg(t), '[]')::text FROM (SELECT * FROM {qualified} WHERE {} = $1) t",
                    quote_ident(column)
                );
                let txn = begin_bound(tenancy, id, &Binding::Table, Default::default()).await?;
                let row =
                    txn.query_one_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, [id.into()])).await;
                end_bound(txn, tenancy).await?;
                let json: String =
                    row?.map(|row| row.try_get_by_index(0)).transpose()?.unwrap_or_else(|| "[]".to_owned());
                postgres_insert(&mut script, &qualified, &json);
            }
            Backend::Sqlite => {
                let columns = tenancy
                    .master()
                    .query_all_raw(Statement::from_string(
                        DbBackend::Sqlite,
                        format!("SELECT name FROM pragma_table_info({})", quote_literal(table)),
                    ))
                    .await?
                    .into_iter()
                    .map(|row| row.try_get_by_index::<String>(0))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let object = columns
                    .iter()
                    .map(|c| format!("{}, {}", quote_literal(c), quote_ident(c)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!(
                    "SELECT coalesce(json_group_array(json_object({object})), '[]') FROM {} WHERE {} = ?",
                    quote_ident(table),
                    quote_ident(column)
                );
                let row = tenancy
                    .master()
                    .query_one_raw(Statement::from_sql_and_values(DbBackend::Sqlite, sql, [id.into()]))
                    .await?;
                let json: String =
                    row.map(|row| row.try_get_by_index(0)).transpose()?.unwrap_or_else(|| "[]".to_owned());
                let names = columns.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ");
                let values = columns
                    .iter()
                    .map(|c| format!("json_extract(value, {})", quote_literal(&format!("$.\"{c}\""))))
                    .collect::<Vec<_>>()
                    .join(", ");
                let _ = writeln!(
                    script,
                    "INSERT INTO {} ({names}) SELECT {values} FROM json_each({});",
                    quote_ident(table),
                    quote_literal(&json)
                );
            }
        }
    }
    script.push_str("COMMIT;\n");
    Ok(script)
}
