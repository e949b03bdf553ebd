//! Where a tenant's data lives: [`Placement`], parsed once from the registry's `config`
//! column, in a shape that cannot express an invalid tenant.
//!
//! The JSON stored in `config` keeps the shape of the first version (`database`,
//! `schema` and `login` keys, only those of the tenant's mode present), so masters
//! written by it open unchanged; [`StoredConfig`] is that shape and nothing else reads it.

use std::path::{Path, PathBuf};

use crate::Isolation;
use crate::secrets::EncryptedSecret;

/// Where a tenant's data lives, by isolation mode.
///
/// Read from the registry once ([`crate::Tenant::placement`]); every part a mode needs is
/// there, so nothing checks it again.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Placement {
    /// [`Isolation::Database`]: a database of its own.
    Database(TenantDatabase),
    /// [`Isolation::Schema`]: a schema of the PostgreSQL master database (the default
    /// shard), or of a shard database on another server.
    Schema {
        /// The schema's name (the tenant id).
        schema: String,
        /// The login role its connections use; `None` only for a tenant registered
        /// without one, whose handle binds transactions of the master pool instead.
        login: Option<TenantLogin>,
        /// The shard database holding the schema; `None`: the master database.
        shard: Option<ShardDatabase>,
    },
    /// [`Isolation::Table`]: rows in the master database's shared tables.
    Table {
        /// The login role the row-level security policies know the tenant by (PostgreSQL
        /// master); `None` on a SQLite master, where statements are rewritten instead.
        login: Option<TenantLogin>,
    },
    /// [`Isolation::Cache`]: a namespace of the shared cache, nothing relational.
    Cache,
}

impl Placement {
    /// The isolation mode this placement belongs to.
    pub fn isolation(&self) -> Isolation {
        match self {
            Placement::Database(_) => Isolation::Database,
            Placement::Schema { .. } => Isolation::Schema,
            Placement::Table { .. } => Isolation::Table,
            Placement::Cache => Isolation::Cache,
        }
    }

    /// The tenant's own login role on the master database (schema and table tenants on
    /// PostgreSQL).
    pub fn login(&self) -> Option<&TenantLogin> {
        match self {
            Placement::Schema { login, .. } | Placement::Table { login } => login.as_ref(),
            Placement::Database(_) | Placement::Cache => None,
        }
    }

    /// The shard database of a schema tenant that is not in the master database.
    pub fn shard(&self) -> Option<&ShardDatabase> {
        match self {
            Placement::Schema { shard, .. } => shard.as_ref(),
            _ => None,
        }
    }

    /// The schema of a schema tenant.
    pub fn schema(&self) -> Option<&str> {
        match self {
            Placement::Schema { schema, .. } => Some(schema),
            _ => None,
        }
    }

    /// The database of a database tenant.
    pub fn database(&self) -> Option<&TenantDatabase> {
        match self {
            Placement::Database(database) => Some(database),
            _ => None,
        }
    }

    /// Reads the stored `config` of a tenant of mode `isolation`.
    ///
    /// # Errors
    /// Why the config cannot be the mode's: the registry row is corrupt.
    pub(crate) fn from_stored(isolation: Isolation, config: serde_json::Value) -> Result<Self, String> {
        let stored: StoredConfig = serde_json::from_value(config).map_err(|err| format!("config: {err}"))?;
        let StoredConfig { database, schema, login, shard } = stored;
        if shard.is_some() && isolation != Isolation::Schema {
            return Err(format!("a {isolation} tenant's config names a shard database"));
        }
        let unexpected = |what: &str| Err(format!("a {isolation} tenant's config has {what}"));
        match isolation {
            Isolation::Database => {
                let database = database.ok_or("a database tenant's config names no database")?;
                if schema.is_some() {
                    return unexpected("a schema");
                }
                if login.is_some() {
                    return unexpected("a login role");
                }
                Ok(Placement::Database(database))
            }
            Isolation::Schema => {
                let schema = schema.ok_or("a schema tenant's config names no schema")?;
                if database.is_some() {
                    return unexpected("a database");
                }
                Ok(Placement::Schema { schema, login, shard })
            }
            Isolation::Table => match (database, schema) {
                (None, None) => Ok(Placement::Table { login }),
                (Some(_), _) => unexpected("a database"),
                (_, Some(_)) => unexpected("a schema"),
            },
            Isolation::Cache => match (database, schema, login) {
                (None, None, None) => Ok(Placement::Cache),
                _ => unexpected("relational storage"),
            },
        }
    }

    /// The JSON stored in the registry's `config` column for this placement (the shape
    /// of the first version, read back by the registry unchanged).
    pub fn to_stored(&self) -> serde_json::Value {
        let stored = match self {
            Placement::Database(database) => {
                StoredConfig { database: Some(database.clone()), ..StoredConfig::default() }
            }
            Placement::Schema { schema, login, shard } => StoredConfig {
                schema: Some(schema.clone()),
                login: login.clone(),
                shard: shard.clone(),
                ..StoredConfig::default()
            },
            Placement::Table { login } => StoredConfig { login: login.clone(), ..StoredConfig::default() },
            Placement::Cache => StoredConfig::default(),
        };
        // A struct of strings, numbers and options: serializing it cannot fail.
        serde_json::to_value(stored).unwrap_or_default()
    }
}

/// The `config` column as stored: only the part of the tenant's mode is set.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct StoredConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    database: Option<TenantDatabase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schema: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    login: Option<TenantLogin>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shard: Option<ShardDatabase>,
}

/// A shard database: a database on a server that holds the schemas of many schema
/// tenants, the master database holding only their registry rows. Named after the
/// master database ([`ShardDatabase::name_for`]), so two masters sharing a server never
/// share a shard.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ShardDatabase {
    /// The registered server's name.
    pub server: String,
    /// Its host.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// The shard database's name.
    pub database: String,
}

impl ShardDatabase {
    /// The shard database of the master database `master` on any server: `<master>_shard`,
    /// cut to PostgreSQL's 63 bytes.
    pub fn name_for(master: &str) -> String {
        let mut base = master.to_owned();
        while base.len() > 57 {
            base.pop();
        }
        format!("{base}_shard")
    }

    /// `host:port`, for messages.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
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
pub enum TenantDatabase {
    /// A PostgreSQL database on the server the config names.
    Postgres(PostgresDatabase),
    /// A SQLite file beside the master database file.
    Sqlite(SqliteDatabase),
}

impl TenantDatabase {
    /// Whether tenancy created the database or adopted it.
    pub fn ownership(&self) -> Ownership {
        match self {
            TenantDatabase::Postgres(db) => db.ownership,
            TenantDatabase::Sqlite(db) => db.ownership,
        }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        match self {
            TenantDatabase::Postgres(db) => &db.name,
            TenantDatabase::Sqlite(db) => &db.name,
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
    /// Whether tenancy created the database and its role, or adopted them: what
    /// `deletetenant` may drop.
    #[serde(default, rename = "created", skip_serializing_if = "Ownership::is_unrecorded")]
    pub ownership: Ownership,
}

/// Whether tenancy created a tenant's database (and its role) or adopted one that
/// existed (`createtenant --no-create-database`). Recorded when the tenant is created;
/// deleting a tenant drops only what it created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "Option<bool>", into = "Option<bool>")]
pub enum Ownership {
    /// Created by tenancy: a delete drops it.
    Created,
    /// Existed before the tenant was registered: a delete keeps it unless told otherwise.
    Adopted,
    /// Registered by a version that did not record it: treated as adopted.
    #[default]
    Unrecorded,
}

impl Ownership {
    /// Whether a delete drops the database without being told to drop adopted ones.
    pub fn created_by_tenancy(self) -> bool {
        self == Ownership::Created
    }

    fn is_unrecorded(&self) -> bool {
        *self == Ownership::Unrecorded
    }
}

impl From<Option<bool>> for Ownership {
    fn from(created: Option<bool>) -> Self {
        match created {
            Some(true) => Ownership::Created,
            Some(false) => Ownership::Adopted,
            None => Ownership::Unrecorded,
        }
    }
}

impl From<Ownership> for Option<bool> {
    fn from(ownership: Ownership) -> Self {
        match ownership {
            Ownership::Created => Some(true),
            Ownership::Adopted => Some(false),
            Ownership::Unrecorded => None,
        }
    }
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
    /// Whether tenancy created the file or adopted it.
    #[serde(default, rename = "created", skip_serializing_if = "Ownership::is_unrecorded")]
    pub ownership: Ownership,
}

impl SqliteDatabase {
    /// The file, given the folder of the master database.
    pub fn file_in(&self, master_dir: &Path) -> PathBuf {
        master_dir.join(format!("{}.db", self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_shapes_of_the_first_version_round_trip() {
        let login = serde_json::json!({"user": "tnt_x_acme", "password": format!("v1:{}", "A".repeat(64))});
        let rows = [
            (Isolation::Cache, serde_json::json!({})),
            (Isolation::Table, serde_json::json!({})),
            (Isolation::Table, serde_json::json!({ "login": login })),
            (Isolation::Schema, serde_json::json!({ "schema": "acme", "login": login })),
            (Isolation::Database, serde_json::json!({"database": {"engine": "sqlite", "name": "acme_db"}})),
        ];
        for (isolation, stored) in rows {
            let placement =
                Placement::from_stored(isolation, stored.clone()).unwrap_or_else(|err| panic!("{isolation}: {err}"));
            assert_eq!(placement.isolation(), isolation);
            assert_eq!(placement.to_stored(), stored);
        }
    }

    #[test]
    fn a_config_that_does_not_fit_its_mode_is_refused() {
        let refused = [
            (Isolation::Schema, serde_json::json!({})),
            (Isolation::Database, serde_json::json!({})),
            (Isolation::Cache, serde_json::json!({"schema": "acme"})),
            (Isolation::Table, serde_json::json!({"database": {"engine": "sqlite", "name": "x"}})),
            (Isolation::Database, serde_json::json!({"database": {"engine": "mysql", "name": "x"}})),
        ];
        for (isolation, stored) in refused {
            assert!(Placement::from_stored(isolation, stored.clone()).is_err(), "{isolation} {stored}");
        }
    }
}
