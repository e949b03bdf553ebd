//! Tenant migration: creates `projects` and `tasks` (with a cascading foreign
//! key `tasks (tenant_id, project_id) -> projects (tenant_id, id)` and an index on
//! `tasks (tenant_id, project_id)`).
//!
//! The foreign key includes the tenant column, so in table isolation a task can only
//! point at a project of its own tenant: pointing at another tenant's project fails
//! exactly as pointing at a missing one, and another tenant's delete cannot cascade
//! into this tenant's rows. That needs a unique key on `projects (tenant_id, id)`.
//! (On PostgreSQL the row-security step would rewrite a plain key this way; SQLite
//! cannot alter a foreign key, so the migration declares it.)

use sea_orm_migration::{prelude::*, schema::*};

/// Creates the `projects` and `tasks` tables.
#[derive(Debug, DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Projects::Table)
                    .if_not_exists()
                    .col(pk_auto(Projects::Id))
                    .col(string(Projects::TenantId))
                    .col(string(Projects::Name))
                    .col(timestamp_with_time_zone_default_now(Projects::CreatedAt))
                    // What the tenant-scoped foreign keys of `tasks` reference.
                    .index(
                        Index::create()
                            .unique()
                            .name("projects_tenant_id_id_key")
                            .col(Projects::TenantId)
                            .col(Projects::Id),
                    )
                    .to_owned(),
            )
            .await?;

        // The foreign key is declared inside CREATE TABLE: SQLite cannot add
        // one afterwards with ALTER TABLE.
        manager
            .create_table(
                Table::create()
                    .table(Tasks::Table)
                    .if_not_exists()
                    .col(pk_auto(Tasks::Id))
                    .col(string(Tasks::TenantId))
                    .col(integer(Tasks::ProjectId))
                    .col(string(Tasks::Title))
                    .col(boolean(Tasks::Done).default(false))
                    .col(timestamp_with_time_zone_default_now(Tasks::CreatedAt))
                    // What the tenant-scoped foreign key of `comments` references.
                    .index(Index::create().unique().name("tasks_tenant_id_id_key").col(Tasks::TenantId).col(Tasks::Id))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk-tasks-project_id")
                            .from(Tasks::Table, (Tasks::TenantId, Tasks::ProjectId))
                            .to(Projects::Table, (Projects::TenantId, Projects::Id))
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_index(
                Index::create()
                    .name("idx-tasks-tenant_id-project_id")
                    .table(Tasks::Table)
                    .col(Tasks::TenantId)
                    .col(Tasks::ProjectId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Dropping a table drops its indexes and foreign keys with it.
        manager.drop_table(Table::drop().table(Tasks::Table).if_exists().to_owned()).await?;
        manager.drop_table(Table::drop().table(Projects::Table).if_exists().to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Projects {
    Table,
    Id,
    TenantId,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Tasks {
    Table,
    Id,
    TenantId,
    ProjectId,
    Title,
    Done,
    CreatedAt,
}
