//! Table isolation: tenants share tables, their rows told apart by a tenant column.
//!
//! One job, two strategies, chosen by the master database's backend:
//!
//! - [`row_security`] (PostgreSQL, public as [`crate::rls`]): the migrator secures every
//!   `#[tenant_scoped]` table with row-level security policies that read the tenant from
//!   the session's login role, so the database itself refuses other tenants' rows.
//! - [`sqlite_rewrite`] (SQLite, which has neither policies nor roles): every statement
//!   of a table tenant's handle is checked against an allowlist and rewritten to reach
//!   the tenant's rows alone.

pub mod row_security;
pub(crate) mod sqlite_rewrite;
