//! The migration creating `tenant_users`, for the application's tenant migrator.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{boolean, pk_auto, string, timestamp_with_time_zone_default_now};

/// Creates `tenant_users` and its unique index on `(tenant_id, username)`.
///
/// Portable DDL (PostgreSQL and SQLite). Add it to the tenant migrator, after the
/// application's own migrations (see [`crate::accounts::migrations`]).
#[derive(Debug, Clone, Copy)]
pub struct CreateTenantUsers;

/// The migration's name as recorded in `seaql_migrations`.
pub const CREATE_TENANT_USERS: &str = "m20260101_100001_tenancy_create_tenant_users";

/// The unique index's name.
pub const USERNAME_INDEX: &str = "ux-tenant_users-tenant_id-username";

impl MigrationName for CreateTenantUsers {
    fn name(&self) -> &str {
        CREATE_TENANT_USERS
    }
}

// `#[async_trait]` migrations take `&SchemaManager` as sea-orm-migration's trait declares it.
#[allow(elided_lifetimes_in_paths, reason = "async_trait signatures must match sea-orm-migration's trait")]
#[async_trait::async_trait]
impl MigrationTrait for CreateTenantUsers {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TenantUsers::Table)
                    .if_not_exists()
                    .col(pk_auto(TenantUsers::Id))
                    .col(string(TenantUsers::TenantId))
                    .col(string(TenantUsers::Username))
                    .col(string(TenantUsers::Email))
                    .col(string(TenantUsers::PasswordHash))
                    .col(boolean(TenantUsers::IsSuperuser).default(false))
                    .col(timestamp_with_time_zone_default_now(TenantUsers::CreatedAt))
                    .to_owned(),
            )
            .await?;
        // Unique per tenant, not globally: in table isolation every tenant's users share
        // the table, and two tenants may each have an `admin`.
        manager
            .create_index(
                Index::create()
                    .name(USERNAME_INDEX)
                    .table(TenantUsers::Table)
                    .col(TenantUsers::TenantId)
                    .col(TenantUsers::Username)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(TenantUsers::Table).if_exists().to_owned()).await
    }
}

#[derive(DeriveIden)]
enum TenantUsers {
    Table,
    Id,
    TenantId,
    Username,
    Email,
    PasswordHash,
    IsSuperuser,
    CreatedAt,
}
