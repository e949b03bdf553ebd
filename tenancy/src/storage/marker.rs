//! The mark tenancy leaves on the storage it creates, so that `tenancydoctor` can tell an
//! orphan it may drop (made by this master's provisioning, no registry row left) from an
//! object that is only named like a tenant's (never dropped).
//!
//! - PostgreSQL schemas, roles and databases carry the comment
//!   `tenancy:<master database name>:<tenant id>` (`COMMENT ON SCHEMA | ROLE | DATABASE`),
//!   written in the same step that creates them. Roles and databases belong to the whole
//!   server, so the master database's name is part of the mark: another master on the same
//!   server (a parallel test run, another application) marks its objects with its own name.
//! - SQLite tenant files carry, in the header's `application_id` (a 32-bit integer
//!   SQLite reserves for the application that owns the file), the first four bytes of the
//!   SHA-256 of `tenancy:<master file name>`.

use sha2::Digest as _;

use crate::TenantId;
use crate::sql::quote_literal;

/// Every mark starts with this.
pub(crate) const PREFIX: &str = "tenancy:";

/// The comment marking an object created for `tenant` by the master database `master`.
pub(crate) fn comment(master: &str, tenant: &TenantId) -> String {
    format!("{PREFIX}{master}:{tenant}")
}

/// `COMMENT ON <object> IS '<mark>'`; `object` is a keyword and a quoted identifier, such
/// as `SCHEMA "acme"`.
pub(crate) fn comment_sql(object: &str, master: &str, tenant: &TenantId) -> String {
    format!("COMMENT ON {object} IS {}", quote_literal(&comment(master, tenant)))
}

/// The tenant id a comment marks for the master database `master`, if it is this
/// master's mark.
pub(crate) fn tenant_of<'a>(comment: &'a str, master: &str) -> Option<&'a str> {
    comment.strip_prefix(PREFIX)?.strip_prefix(master)?.strip_prefix(':').filter(|tenant| !tenant.is_empty())
}

/// The `application_id` of the tenant files of the SQLite master file named `master_file`.
pub(crate) fn sqlite_application_id(master_file: &str) -> i32 {
    let digest = sha2::Sha256::digest(format!("{PREFIX}{master_file}").as_bytes());
    i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_names_its_master_and_tenant() {
        let acme: TenantId = "acme".parse().unwrap();
        let mark = comment("shop", &acme);
        assert_eq!(mark, "tenancy:shop:acme");
        assert_eq!(tenant_of(&mark, "shop"), Some("acme"));
        // Another master's mark, or no mark, names no tenant of this master.
        assert_eq!(tenant_of(&mark, "sho"), None);
        assert_eq!(tenant_of(&mark, "shop2"), None);
        assert_eq!(tenant_of("tenancy:shop:", "shop"), None);
        assert_eq!(tenant_of("acme", "shop"), None);
        assert_eq!(comment_sql("SCHEMA \"acme\"", "it's", &acme), "COMMENT ON SCHEMA \"acme\" IS 'tenancy:it''s:acme'");
    }

    #[test]
    fn sqlite_marks_differ_per_master_file() {
        assert_eq!(sqlite_application_id("master.db"), sqlite_application_id("master.db"));
        assert_ne!(sqlite_application_id("master.db"), sqlite_application_id("tenancy.db"));
    }
}
