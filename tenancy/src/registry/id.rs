//! Tenant ids and the identifier rules they share with other SQL names.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// A validated tenant id: the key of the registry and, in schema isolation, the name of
/// the tenant's PostgreSQL schema.
///
/// A tenant id starts with a lower-case ASCII letter, continues with lower-case ASCII
/// letters, digits and `_`, is at most [`TenantId::MAX_LEN`] bytes long and is not one of
/// the reserved names (`public`, `information_schema`, `postgres`, `template0`,
/// `template1`, anything starting with `pg_`, and the framework's own `tenancy` /
/// `tenancy_*`).
///
/// ```
/// use tenancy::TenantId;
///
/// let id: TenantId = "acme".parse()?;
/// assert_eq!(id.as_str(), "acme");
/// assert!("Acme".parse::<TenantId>().is_err());
/// assert!("pg_catalog".parse::<TenantId>().is_err());
/// # Ok::<(), tenancy::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

impl TenantId {
    /// The longest tenant id, in bytes.
    ///
    /// PostgreSQL truncates identifiers at 63 bytes. Tenant ids are kept to 48 so that
    /// every name the framework derives from one (a prefix or suffix of up to 15 bytes,
    /// such as a per-tenant role or lock name) still fits without truncation, because a
    /// truncated name could collide with another tenant's.
    pub const MAX_LEN: usize = 48;

    /// Validates `id` and wraps it.
    ///
    /// # Errors
    /// [`Error::InvalidTenantId`] naming the first rule `id` breaks.
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        match check_identifier(&id, Self::MAX_LEN).or_else(|| reserved_reason(&id)) {
            None => Ok(Self(id)),
            Some(reason) => Err(Error::InvalidTenantId { id: printable(&id), reason }),
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({:?})", self.0)
    }
}

impl FromStr for TenantId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl TryFrom<String> for TenantId {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        Self::new(s)
    }
}

impl TryFrom<&str> for TenantId {
    type Error = Error;

    fn try_from(id: &str) -> Result<Self> {
        TenantId::new(id)
    }
}

impl TryFrom<&String> for TenantId {
    type Error = Error;

    fn try_from(id: &String) -> Result<Self> {
        TenantId::new(id.as_str())
    }
}

/// So that APIs taking `impl TryInto<TenantId>` take `&TenantId` too.
impl From<&TenantId> for TenantId {
    fn from(id: &TenantId) -> Self {
        id.clone()
    }
}

impl From<TenantId> for String {
    fn from(id: TenantId) -> Self {
        id.0
    }
}

impl AsRef<str> for TenantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Checks the shape shared by tenant ids and the SQL names users give for a tenant
/// (database and role names): `[a-z][a-z0-9_]*`, at most `max_len` bytes.
///
/// Returns the reason of the first violation. The shape is deliberately narrower than
/// what PostgreSQL accepts when quoted: these names end up in URLs, file names, shell
/// sessions and log lines, where anything else needs escaping somewhere.
pub(crate) fn check_identifier(value: &str, max_len: usize) -> Option<String> {
    let Some(first) = value.chars().next() else {
        return Some("it is empty".to_owned());
    };
    if !first.is_ascii_lowercase() {
        return Some(format!("it starts with {}", describe(first)));
    }
    if let Some(bad) = value.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')) {
        return Some(format!("it contains {}", describe(bad)));
    }
    if value.len() > max_len {
        return Some(format!("it is {} bytes long", value.len()));
    }
    None
}

/// Names no tenant may take because PostgreSQL or the framework owns them.
fn reserved_reason(id: &str) -> Option<String> {
    const RESERVED: [&str; 6] = ["public", "information_schema", "postgres", "template0", "template1", "tenancy"];
    if RESERVED.contains(&id) || id.starts_with("pg_") || id.starts_with("tenancy_") {
        Some("it is a reserved name".to_owned())
    } else {
        None
    }
}

/// Validates a database or role name given for a database-isolated tenant: the tenant-id
/// shape (`[a-z][a-z0-9_]*`) up to PostgreSQL's 63 bytes, and no reserved name.
///
/// `what` names the value in the error (`"database name"`, `"database user"`).
///
/// # Errors
/// [`Error::InvalidIdentifier`] naming the first rule `value` breaks.
pub fn validate_sql_name(what: &'static str, value: &str) -> Result<()> {
    // Role names starting with `pg_` are refused by PostgreSQL itself; database names
    // are refused too so that a tenant database never looks like a system one.
    let reason = check_identifier(value, 63).or_else(|| {
        (value.starts_with("pg_") || ["postgres", "template0", "template1", "public"].contains(&value))
            .then(|| "it is a reserved name".to_owned())
    });
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidIdentifier { what, value: printable(value), reason }),
    }
}

fn describe(c: char) -> String {
    match c {
        ' ' => "a space".to_owned(),
        c if c.is_ascii_uppercase() => format!("the upper-case letter '{c}'"),
        c if c.is_control() => format!("the control character {c:?}"),
        c => format!("'{c}'"),
    }
}

/// Escapes control characters so a hostile id cannot rewrite the terminal line that
/// reports it.
fn printable(value: &str) -> String {
    value.chars().flat_map(char::escape_default).collect::<String>().replace("\\'", "'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_ids() {
        for id in ["acme", "a", "acme_2", "a1_b2", &"a".repeat(48)] {
            assert_eq!(TenantId::new(id).unwrap().as_str(), id);
        }
    }

    #[test]
    fn rejects_bad_ids_with_reasons() {
        let cases = [
            ("", "it is empty"),
            ("Acme", "it starts with the upper-case letter 'A'"),
            ("acMe", "it contains the upper-case letter 'M'"),
            ("1acme", "it starts with '1'"),
            ("_acme", "it starts with '_'"),
            ("ac me", "it contains a space"),
            ("ac'me", "it contains '''"),
            ("ac\"me", "it contains '\"'"),
            ("acme;drop", "it contains ';'"),
            ("acme-co", "it contains '-'"),
            ("acmé", "it contains 'é'"),
            ("public", "it is a reserved name"),
            ("pg_catalog", "it is a reserved name"),
            ("information_schema", "it is a reserved name"),
            ("postgres", "it is a reserved name"),
            ("template1", "it is a reserved name"),
            ("tenancy_tenants", "it is a reserved name"),
        ];
        for (id, reason) in cases {
            match TenantId::new(id) {
                Err(Error::InvalidTenantId { reason: got, .. }) => assert_eq!(got, reason, "{id:?}"),
                other => panic!("{id:?} gave {other:?}"),
            }
        }
        let long = "a".repeat(49);
        let err = TenantId::new(long).unwrap_err().to_string();
        assert!(err.contains("it is 49 bytes long"), "{err}");
        assert!(err.contains("at most 48 bytes"), "{err}");
    }

    #[test]
    fn control_characters_are_escaped_in_messages() {
        let err = TenantId::new("a\u{1b}[2Jb").unwrap_err().to_string();
        assert!(!err.contains('\u{1b}'), "{err}");
    }

    #[test]
    fn serde_validates() {
        let id: TenantId = serde_json::from_str("\"acme\"").unwrap();
        assert_eq!(id.as_str(), "acme");
        assert!(serde_json::from_str::<TenantId>("\"Bad Id\"").is_err());
    }

    #[test]
    fn sql_names() {
        assert!(validate_sql_name("database name", "acme_db").is_ok());
        assert!(validate_sql_name("database user", "pg_monitor").is_err());
        assert!(validate_sql_name("database name", "a\"b").is_err());
        assert!(validate_sql_name("database name", &"a".repeat(64)).is_err());
    }
}
