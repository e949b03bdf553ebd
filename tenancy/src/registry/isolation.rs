//! The four isolation modes.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// How a tenant's data is kept apart from other tenants' data.
///
/// Stored in the registry's `isolation_type` column as its lower-case name (a sea-orm
/// active enum).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    sea_orm::EnumIter,
    sea_orm::DeriveActiveEnum,
)]
#[serde(rename_all = "lowercase")]
#[sea_orm(rs_type = "String", db_type = "String(sea_orm::sea_query::StringLen::None)", rename_all = "lowercase")]
pub enum Isolation {
    /// The tenant has a database of its own, owned by a role of its own, on the server
    /// its config names (a separate file beside the master on SQLite).
    Database,
    /// The tenant has a PostgreSQL schema named after its id inside the master database.
    Schema,
    /// The tenant's rows live in shared tables of the master database, told apart by a
    /// `tenant_id` column.
    Table,
    /// The tenant has a key namespace in the shared cache and no relational storage.
    Cache,
}

impl Isolation {
    /// Every mode, in the order the prompts list them.
    pub const ALL: [Isolation; 4] = [Isolation::Database, Isolation::Schema, Isolation::Table, Isolation::Cache];

    /// The name stored in the registry's `isolation_type` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Database => "database",
            Isolation::Schema => "schema",
            Isolation::Table => "table",
            Isolation::Cache => "cache",
        }
    }

    /// Whether tenants of this mode have relational storage to migrate.
    pub fn has_relational_storage(self) -> bool {
        self != Isolation::Cache
    }
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Isolation {
    type Err = Error;

    /// Parses a mode name, ignoring surrounding white space and case.
    fn from_str(s: &str) -> Result<Self> {
        let wanted = s.trim();
        Self::ALL
            .into_iter()
            .find(|mode| mode.as_str().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| Error::InvalidIsolation { given: s.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for mode in Isolation::ALL {
            assert_eq!(mode.as_str().parse::<Isolation>().unwrap(), mode);
            assert_eq!(mode.to_string(), mode.as_str());
        }
        assert_eq!(" Schema ".parse::<Isolation>().unwrap(), Isolation::Schema);
    }

    #[test]
    fn invalid_lists_the_options() {
        let err = "shared".parse::<Isolation>().unwrap_err().to_string();
        assert_eq!(err, "Invalid isolation type\nValid options: database, schema, table, cache");
    }
}
