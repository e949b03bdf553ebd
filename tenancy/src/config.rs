//! What the registry's `config` column holds for each isolation mode.

use std::path::{Path, PathBuf};

use crate::secret::EncryptedSecret;

/// A tenant's configuration, stored as JSON in the registry's `config` column.
///
/// Only the part that belongs to the tenant's isolation mode is set. Passwords are stored
/// encrypted ([`EncryptedSecret`]), never in plain text.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TenantConfig {
    /// Database isolation: where the tenant's database is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseConfig>,
    /// Schema isolation: the tenant's schema in the master database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Schema and table isolation on PostgreSQL: the login role the tenant's own
    /// connections use. Its session defaults and privileges bind the connection to the
    /// tenant (see [`TenantLogin`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<TenantLogin>,
}

/// The PostgreSQL login role of a schema- or table-isolated tenant, made when the tenant
/// is created.
///
/// A connection logged in as this role belongs to the tenant for its whole life, so the
/// tenant is bound without a statement of its own and without session state that could
/// reach another tenant (a transaction-mode pooler such as PgBouncer keeps one pool per
/// user). Schema isolation: the role's `search_path` default is the tenant's schema, and
/// it may use that schema only. Table isolation: the role name itself names the tenant
/// to the row-level security policies, read as the session's login role (`session_user`,
/// which `SET ROLE` cannot change; see [`crate::rls`]), and the role inherits the
/// application role's privileges.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TenantLogin {
    /// The role name: [`crate::rls::tenant_role_prefix`] followed by the tenant id.
    pub user: String,
    /// The role's random password, encrypted with the operator's secret key.
    pub password: EncryptedSecret,
}

/// Where a database-isolated tenant's database lives.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "engine", rename_all = "lowercase")]
pub enum DatabaseConfig {
    /// A PostgreSQL database on the server the config names.
    Postgres(PostgresDatabase),
    /// A SQLite file beside the master database file.
    Sqlite(SqliteDatabase),
}

impl DatabaseConfig {
    /// The database's name.
    pub fn name(&self) -> &str {
        match self {
            DatabaseConfig::Postgres(db) => &db.name,
            DatabaseConfig::Sqlite(db) => &db.name,
        }
    }
}

/// A tenant's own PostgreSQL database and the role that owns it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PostgresDatabase {
    /// Database name.
    pub name: String,
    /// The role the tenant connects as; it owns the database.
    pub user: String,
    /// Server host name or address.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// The role's password, encrypted with the operator's secret key.
    pub password: EncryptedSecret,
}

impl PostgresDatabase {
    /// `host:port`, for messages.
    pub fn server(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// A tenant's own SQLite database file.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SqliteDatabase {
    /// The database name; the file is `<name>.db` in the master database's folder.
    pub name: String,
}

impl SqliteDatabase {
    /// The file, given the folder of the master database.
    pub fn file_in(&self, master_dir: &Path) -> PathBuf {
        master_dir.join(format!("{}.db", self.name))
    }
}
