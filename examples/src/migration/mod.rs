//! Database migrations of the project tracker, in the layout of the
//! `sea-orm-cli` migration template.
//!
//! There are two migrators:
//!
//! * [`Migrator`] holds the *tenant* migrations (`projects`, `tasks`,
//!   `comments`, and the accounts module's `tenant_users`). The framework
//!   runs it once per tenant schema/database (the
//!   schema being selected through `search_path`, never named here), or once
//!   in the shared schema in table-isolation mode.
//! * [`SharedMigrator`] holds the *shared* migrations (`plans`), which only run
//!   against the master database/schema. It records its history in its own
//!   table, [`SHARED_MIGRATION_TABLE`], so that both migrators can run against
//!   the same schema (e.g. in table-isolation mode) without each seeing the
//!   other's applied migrations as "missing files".
//!
//! All migrations are portable DDL that works on PostgreSQL and SQLite.

// `#[async_trait]` migrations take `&SchemaManager` as sea-orm-migration's trait declares
// it; spelling the lifetime out would no longer match the trait's signature.
#![allow(elided_lifetimes_in_paths, reason = "async_trait signatures must match sea-orm-migration's trait")]

pub use sea_orm_migration::prelude::*;

pub mod m20260101_000001_create_projects_and_tasks;
pub mod m20260101_000002_create_comments;
pub mod m20260101_000003_create_plans;

/// Name of the history table used by [`SharedMigrator`] (the tenant
/// [`Migrator`] uses sea-orm's default, `seaql_migrations`).
pub const SHARED_MIGRATION_TABLE: &str = "seaql_shared_migrations";

/// Migrator of the tenant-scoped tables (`projects`, `tasks`, `comments`).
#[derive(Debug, Clone, Copy)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut migrations: Vec<Box<dyn MigrationTrait>> = vec![
            Box::new(m20260101_000001_create_projects_and_tasks::Migration),
            Box::new(m20260101_000002_create_comments::Migration),
        ];
        // The accounts module's `tenant_users`, which `createtenantsuperuser` writes to.
        migrations.extend(tenancy_migrate::accounts::migrations());
        migrations
    }
}

/// Migrator of the shared, master-only tables (`plans`).
#[derive(Debug, Clone, Copy)]
pub struct SharedMigrator;

#[async_trait::async_trait]
impl MigratorTrait for SharedMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m20260101_000003_create_plans::Migration)]
    }

    fn migration_table_name() -> DynIden {
        SHARED_MIGRATION_TABLE.into_iden()
    }
}
