//! # tenancy
//!
//! Multi-tenancy for [sea-orm](https://www.sea-ql.org/SeaORM) applications.
//!
//! A *tenant* is one customer of a SaaS application. `tenancy` keeps a registry of
//! tenants in a *master database* and keeps each tenant's data apart in one of four
//! [isolation modes](Isolation):
//!
//! | mode | where the tenant's data lives |
//! | --- | --- |
//! | [`Isolation::Database`] | its own database, owned by its own role, on the server its config names (on SQLite: its own file) |
//! | [`Isolation::Schema`] | a PostgreSQL schema named after the tenant id, in the master database |
//! | [`Isolation::Table`] | shared tables of the master database, rows told apart by `tenant_id` |
//! | [`Isolation::Cache`] | a key namespace in the shared cache; no relational storage |
//!
//! ## The master database
//!
//! [`Tenancy::connect`] takes the master database URL: `DATABASE_URL` in the commands,
//! or [`DEFAULT_MASTER_URL`] (`sqlite://tenancy.db?mode=rwc`, a file in the working
//! folder) when it is unset. Connecting applies the framework's own migration, which
//! creates the registry table `tenancy_tenants`.
//!
//! ## Creating a tenant
//!
//! ```no_run
//! use tenancy::{Isolation, NewTenant, Tenancy};
//!
//! # async fn demo() -> tenancy::Result<()> {
//! let tenancy = Tenancy::connect(tenancy::master_url_from_env()).await?;
//! let created = tenancy
//!     .create_tenant(
//!         NewTenant {
//!             id: "globex".parse()?,
//!             name: "Globex Corporation".into(),
//!             isolation: Isolation::Table,
//!             database: None,
//!             migrate: false,
//!         },
//!         &(),
//!     )
//!     .await?;
//! assert_eq!(created.tenant.status, tenancy::TenantStatus::Ready);
//! # Ok(()) }
//! ```
//!
//! Provisioning validates everything first, claims the id, creates what the mode needs,
//! runs migrations if asked (through [`ProvisionHooks`], which `tenancy-migrate`
//! implements with the application's migrator), and marks the tenant ready. Any failure
//! removes what the run created, and only that.
//!
//! ## Secrets
//!
//! Database passwords of database-isolated tenants are stored encrypted
//! (XChaCha20-Poly1305) with the operator's key: `TENANCY_SECRET_KEY` (32 bytes,
//! base64), or the file `TENANCY_SECRET_KEY_FILE` names, or [`DEFAULT_SECRET_KEY_FILE`]
//! (generated with mode 0600 on first use). PostgreSQL receives a SCRAM-SHA-256 verifier
//! computed here, so the plain password never reaches the server or its log.
//!
//! ## Environment
//!
//! | variable | meaning |
//! | --- | --- |
//! | `DATABASE_URL` | the master database; default `sqlite://tenancy.db?mode=rwc` |
//! | `TENANCY_ADMIN_URL` | credentials used to create roles and databases (host and port come from the tenant's config); default: those of `DATABASE_URL`, database `postgres` |
//! | `TENANCY_SECRET_KEY` | the operator's key, base64 of 32 bytes |
//! | `TENANCY_SECRET_KEY_FILE` | a file holding that key; default `.tenancy-secret.key` |

mod config;
mod dburl;
mod error;
mod id;
mod isolation;
pub mod ledger;
mod provision;
mod registry;
pub mod secret;
pub mod sql;
mod tenancy;

pub use crate::config::{DatabaseConfig, PostgresDatabase, SqliteDatabase, TenantConfig};
pub use crate::dburl::{Backend, DEFAULT_MASTER_URL, master_url_from_env, redact_url};
pub use crate::error::{BoxError, Error, Result};
pub use crate::id::{TenantId, validate_sql_name};
pub use crate::isolation::Isolation;
pub use crate::provision::{
    BoxFuture, Created, DEFAULT_POSTGRES_PORT, NewDatabase, NewTenant, ProvisionHooks, ProvisionStep, Provisioned,
};
pub use crate::registry::{FRAMEWORK_MIGRATIONS_TABLE, REGISTRY_TABLE, RegistryMigrator, Tenant, TenantStatus};
pub use crate::tenancy::{DEFAULT_MAX_CONNECTIONS, DEFAULT_SECRET_KEY_FILE, Tenancy, TenancyBuilder};

/// Re-exports for the application's convenience, so it names one version of each.
pub use sea_orm;
pub use sea_orm_migration;
