//! Storage that no registry row owns: schemas, tenant login roles, databases and their
//! roles on every server the registry names, SQLite files in the master's folder.
//!
//! An object carrying this master's mark (`storage::marker`) is an orphan `--repair` may
//! drop; one only named like a tenant's is reported and left alone.

use std::path::{Path, PathBuf};

use sea_orm::{ConnectionTrait, DatabaseConnection};

use super::{Admins, Finding, Owned, Server, master_name, pg};
use crate::storage::marker;
use crate::{Result, Tenancy, TenantId};

/// An object that may be an orphan, as listed before the registry is read.
#[derive(Debug)]
pub(super) enum Listed {
    /// A schema of the master database (not a system one, not `public`).
    Schema {
        name: String,
        /// The tenant this master's mark names, if it carries one.
        mark: Option<String>,
        /// Whether a tenant login role of this master is named after it or was granted it.
        looks_like: bool,
    },
    /// A role named with this master's tenant login role prefix.
    LoginRole { name: String, server: Server, mark: Option<String> },
    /// A role (not a tenant login role) carrying this master's mark.
    Role { name: String, server: Server, tenant: String },
    /// A database carrying this master's mark.
    Database { name: String, server: Server, tenant: String },
    /// A `*.db` file in a SQLite master's folder, other than the master.
    File { path: PathBuf, name: String, marked: bool },
}

/// Lists what could be orphaned, without judging it yet.
pub(super) async fn list(tenancy: &Tenancy, admins: &Admins) -> Result<Vec<Listed>> {
    let mut listed = Vec::new();
    if let Some(master) = master_name(tenancy).await? {
        let prefix = tenancy.master_identity().await?.0.clone();
        let db = tenancy.master();
        // language=PostgreSQL
        let sql = "SELECT n.nspname::text, coalesce(obj_description(n.oid, 'pg_namespace'), ''), \
                     EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname::text = $1 || n.nspname::text) \
                     OR EXISTS (SELECT 1 FROM aclexplode(n.nspacl) a JOIN pg_catalog.pg_roles r ON r.oid = a.grantee \
                       WHERE left(r.rolname::text, length($1)) = $1) \
                   FROM pg_catalog.pg_namespace n \
                   WHERE n.nspname::text !~ '^pg_' AND n.nspname::text NOT IN ('public', 'information_schema') \
                   ORDER BY 1";
        for row in db.query_all_raw(pg(sql, vec![prefix.clone().into()])).await? {
            let comment: String = row.try_get_by_index(1)?;
            listed.push(Listed::Schema {
                name: row.try_get_by_index(0)?,
                mark: marker::tenant_of(&comment, &master).map(str::to_owned),
                looks_like: row.try_get_by_index(2)?,
            });
        }
        if let Some((host, port)) = tenancy.master_url().postgres_server() {
            let server = Server { host, port };
            // language=PostgreSQL
            let sql = "SELECT rolname::text, coalesce(shobj_description(oid, 'pg_authid'), '') \
                       FROM pg_catalog.pg_roles WHERE left(rolname::text, length($1)) = $1 ORDER BY 1";
            for row in db.query_all_raw(pg(sql, vec![prefix.clone().into()])).await? {
                let comment: String = row.try_get_by_index(1)?;
                listed.push(Listed::LoginRole {
                    name: row.try_get_by_index(0)?,
                    server: server.clone(),
                    mark: marker::tenant_of(&comment, &master).map(str::to_owned),
                });
            }
        }
        let start = format!("{}{master}:", marker::PREFIX);
        for (server, admin) in admins.reachable() {
            // Compared as a prefix, not with LIKE: a database name may hold `_` or `%`.
            // language=PostgreSQL
            let sql = "SELECT 'database', datname::text, shobj_description(oid, 'pg_database') \
                         FROM pg_catalog.pg_database \
                         WHERE left(shobj_description(oid, 'pg_database'), length($1)) = $1 \
                       UNION ALL \
                       SELECT 'role', rolname::text, shobj_description(oid, 'pg_authid') FROM pg_catalog.pg_roles \
                         WHERE left(shobj_description(oid, 'pg_authid'), length($1)) = $1 \
                           AND left(rolname::text, length($2)) <> $2 \
                       ORDER BY 1, 2";
            for row in admin.query_all_raw(pg(sql, vec![start.clone().into(), prefix.clone().into()])).await? {
                let (kind, name, comment): (String, String, String) =
                    (row.try_get_by_index(0)?, row.try_get_by_index(1)?, row.try_get_by_index(2)?);
                let Some(tenant) = marker::tenant_of(&comment, &master).map(str::to_owned) else { continue };
                let server = server.clone();
                listed.push(match kind.as_str() {
                    "database" => Listed::Database { name, server, tenant },
                    _ => Listed::Role { name, server, tenant },
                });
            }
        }
    }
    if let (Some(dir), Some(master_file)) = (tenancy.sqlite_dir(), tenancy.master_url().sqlite_file_name()) {
        let id = marker::sqlite_application_id(&master_file);
        let entries = std::fs::read_dir(dir).map_err(|source| crate::Error::Io { path: dir.to_path_buf(), source })?;
        for entry in entries.flatten() {
            let path = entry.path();
            let is_db = path.extension().is_some_and(|ext| ext == "db") && path.is_file();
            let file_name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
            if !is_db || file_name == master_file {
                continue;
            }
            let name = file_name.trim_end_matches(".db").to_owned();
            listed.push(Listed::File { marked: sqlite_mark(&path) == Some(id), path, name });
        }
    }
    Ok(listed)
}

/// What is orphaned (marked, no row) and what is only unowned (unmarked, no row).
pub(super) fn judge(listed: Vec<Listed>, owned: &Owned) -> Vec<Finding> {
    let mut findings = Vec::new();
    for item in listed {
        let finding = match item {
            Listed::Schema { name, .. } if owned.schemas.contains(&name) => continue,
            Listed::Schema { name, mark: Some(tenant), .. } => Finding::OrphanSchema { schema: name, tenant },
            Listed::Schema { name, mark: None, looks_like: true } if TenantId::new(name.as_str()).is_ok() => {
                Finding::UnownedSchema { schema: name }
            }
            Listed::Schema { .. } => continue,
            Listed::LoginRole { name, .. } | Listed::Role { name, .. } if owned.roles.contains(&name) => continue,
            Listed::LoginRole { name, server, mark: Some(tenant) } => {
                Finding::OrphanRole { role: name, server, tenant, login: true }
            }
            Listed::LoginRole { name, server, mark: None } => Finding::UnownedRole { role: name, server },
            Listed::Role { name, server, tenant } => Finding::OrphanRole { role: name, server, tenant, login: false },
            Listed::Database { name, .. } if owned.databases.contains(&name) => continue,
            Listed::Database { name, server, tenant } => Finding::OrphanDatabase { database: name, server, tenant },
            Listed::File { name, .. } if owned.files.contains(&name) => continue,
            Listed::File { path, marked: true, .. } => Finding::OrphanDatabaseFile { path },
            Listed::File { path, marked: false, .. } => Finding::UnownedDatabaseFile { path },
        };
        findings.push(finding);
    }
    findings
}

/// The `application_id` in a SQLite file's header (bytes 68..72, big-endian), read
/// without opening the database; `None` for a file that is not a SQLite database.
pub(super) fn sqlite_mark(path: &Path) -> Option<i32> {
    use std::io::Read as _;
    let mut header = [0u8; 72];
    std::fs::File::open(path).ok()?.read_exact(&mut header).ok()?;
    if &header[..16] != b"SQLite format 3\0" {
        return None;
    }
    Some(i32::from_be_bytes([header[68], header[69], header[70], header[71]]))
}

/// The comment on a role, database or schema, read again just before a repair drops it.
pub(super) async fn comment_of(db: &DatabaseConnection, kind: ObjectKind, name: &str) -> Result<Option<String>> {
    let sql = match kind {
        ObjectKind::Schema => {
            "SELECT obj_description(oid, 'pg_namespace') FROM pg_catalog.pg_namespace WHERE nspname::text = $1"
        }
        ObjectKind::Role => {
            "SELECT shobj_description(oid, 'pg_authid') FROM pg_catalog.pg_roles WHERE rolname::text = $1"
        }
        ObjectKind::Database => {
            "SELECT shobj_description(oid, 'pg_database') FROM pg_catalog.pg_database WHERE datname::text = $1"
        }
    };
    let row = db.query_one_raw(pg(sql, vec![name.into()])).await?;
    Ok(row.map(|row| row.try_get_by_index::<Option<String>>(0)).transpose()?.flatten())
}

/// What [`comment_of`] reads.
#[derive(Debug, Clone, Copy)]
pub(super) enum ObjectKind {
    Schema,
    Role,
    Database,
}
