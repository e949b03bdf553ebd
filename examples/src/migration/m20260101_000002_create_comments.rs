//! Tenant migration: creates `comments` (with a cascading foreign key
//! `comments (tenant_id, task_id) -> tasks (tenant_id, id)`, which keeps a comment on
//! a task of its own tenant, and an index on `comments (tenant_id, task_id)`).

use sea_orm_migration::{prelude::*, schema::*};

/// Creates the `comments` table.
#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The foreign key is declared inside CREATE TABLE: SQLite cannot add
        // one afterwards with ALTER TABLE.
        manager
            .create_table(
                Table::create()
                    .table(Comments::Table)
                    .if_not_exists()
                    .col(pk_auto(Comments::Id))
                    .col(string(Comments::TenantId))
                    .col(integer(Comments::TaskId))
                    .col(text(Comments::Body))
                    .col(timestamp_with_time_zone_default_now(Comments::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk-comments-task_id")
                            .from(Comments::Table, (Comments::TenantId, Comments::TaskId))
                            .to(Tasks::Table, (Tasks::TenantId, Tasks::Id))
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_index(
                Index::create()
                    .name("idx-comments-tenant_id-task_id")
                    .table(Comments::Table)
                    .col(Comments::TenantId)
                    .col(Comments::TaskId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Dropping the table drops its index and foreign key with it.
        manager.drop_table(Table::drop().table(Comments::Table).if_exists().to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Comments {
    Table,
    Id,
    TenantId,
    TaskId,
    Body,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Tasks {
    Table,
    TenantId,
    Id,
}
