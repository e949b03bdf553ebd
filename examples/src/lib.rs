//! The example application of the repository: a small multi-tenant project
//! tracker built on sea-orm.
//!
//! It is the app used by the repository's binaries and tests to exercise the
//! tenancy framework. It provides:
//!
//! * [`entities`]: the sea-orm entities — the tenant-scoped `projects`,
//!   `tasks` and `comments` tables (each with a `tenant_id` column) and the
//!   shared, untenanted `plans` table;
//! * [`migration`]: the migrations, split into the tenant [`Migrator`]
//!   (run for every tenant) and the [`SharedMigrator`] (run on the master
//!   database/schema only);
//! * [`server`]: the HTTP service (axum), which serves tenants of all four isolation
//!   modes from one process behind `tenancy`'s tower layer;
//! * [`Error`]: what a request or `serve` can fail with.
//!
//! Its binaries are three-line shells: `createtenant`, `migratetenant`,
//! `migratealltenants` and `showtenants` over `tenancy_migrate::cli`, and `serve` over
//! [`server::serve`].

// A panic is not an error report: library code returns errors (unit tests may unwrap).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![warn(missing_docs)]

pub mod entities;
mod error;
pub mod migration;
pub mod server;

pub use error::Error;
pub use migration::{Migrator, SharedMigrator};

/// The app's migrators as the tenant commands take them: [`Migrator`] for every tenant
/// and [`SharedMigrator`] for the master database's own tables.
pub fn migrators() -> tenancy_migrate::Migrators {
    tenancy_migrate::Migrators::new(Migrator).with_shared(SharedMigrator)
}
