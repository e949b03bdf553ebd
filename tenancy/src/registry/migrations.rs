//! The framework's own migrations of the master database: the registry table and the
//! fleet migration ledger.

use sea_orm_migration::prelude::*;

use super::{REGISTRY_TABLE, entity};

/// The table that records which of the framework's own master-database migrations ran.
///
/// It is not `seaql_migrations`, which belongs to the application's migrator: in table
/// isolation the application migrates the same master database.
pub const FRAMEWORK_MIGRATIONS_TABLE: &str = "tenancy_migrations";

/// The framework's migrations of the master database.
///
/// [`crate::Tenancy::connect`] applies them, so applications never create the registry
/// by hand. They are recorded in [`FRAMEWORK_MIGRATIONS_TABLE`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RegistryMigrator;

impl MigratorTrait for RegistryMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateTenantsTable),
            Box::new(CreateMigrationLedger),
            Box::new(AddTenantSuspension),
            Box::new(CreateOperationsJournal),
        ]
    }

    fn migration_table_name() -> DynIden {
        FRAMEWORK_MIGRATIONS_TABLE.into_iden()
    }
}

struct CreateTenantsTable;

impl MigrationName for CreateTenantsTable {
    fn name(&self) -> &str {
        "m20260101_000001_create_tenancy_tenants"
    }
}

#[allow(elided_lifetimes_in_paths, reason = "async_trait cannot take the early-bound lifetime of `SchemaManager<'_>`")]
#[async_trait::async_trait]
impl MigrationTrait for CreateTenantsTable {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use entity::Column;
        manager
            .create_table(
                Table::create()
                    .table(REGISTRY_TABLE)
                    .if_not_exists()
                    .col(ColumnDef::new(Column::TenantId).string().not_null().primary_key())
                    .col(ColumnDef::new(Column::Name).string().not_null())
                    .col(ColumnDef::new(Column::IsolationType).string().not_null())
                    .col(ColumnDef::new(Column::Config).json_binary().not_null())
                    .col(ColumnDef::new(Column::Status).string().not_null())
                    .col(ColumnDef::new(Column::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Column::UpdatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(REGISTRY_TABLE).to_owned()).await
    }
}

/// The fleet migration ledger ([`crate::ledger`]).
struct CreateMigrationLedger;

impl MigrationName for CreateMigrationLedger {
    fn name(&self) -> &str {
        "m20260101_000002_create_tenancy_migration_ledger"
    }
}

#[allow(elided_lifetimes_in_paths, reason = "async_trait cannot take the early-bound lifetime of `SchemaManager<'_>`")]
#[async_trait::async_trait]
impl MigrationTrait for CreateMigrationLedger {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use super::ledger::{entries, runs};
        manager
            .create_table(
                Table::create()
                    .table(super::ledger::RUNS_TABLE)
                    .if_not_exists()
                    .col(ColumnDef::new(runs::Column::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(runs::Column::StartedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(runs::Column::FinishedAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(runs::Column::Status).string().not_null())
                    .col(ColumnDef::new(runs::Column::Options).json_binary().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(super::ledger::LEDGER_TABLE)
                    .if_not_exists()
                    .col(ColumnDef::new(entries::Column::RunId).big_integer().not_null())
                    .col(ColumnDef::new(entries::Column::TenantId).string().not_null())
                    .col(ColumnDef::new(entries::Column::Outcome).string().not_null())
                    .col(ColumnDef::new(entries::Column::Migrations).json_binary().not_null())
                    .col(ColumnDef::new(entries::Column::Detail).text().null())
                    .col(ColumnDef::new(entries::Column::DurationMs).big_integer().not_null())
                    .col(ColumnDef::new(entries::Column::UpdatedAt).timestamp_with_time_zone().not_null())
                    .primary_key(Index::create().col(entries::Column::RunId).col(entries::Column::TenantId))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(super::ledger::LEDGER_TABLE).to_owned()).await?;
        manager.drop_table(Table::drop().table(super::ledger::RUNS_TABLE).to_owned()).await
    }
}

/// Suspension: why and since when a tenant is suspended. One column per statement, since
/// SQLite alters a table one change at a time.
struct AddTenantSuspension;

impl MigrationName for AddTenantSuspension {
    fn name(&self) -> &str {
        "m20261129_000003_add_tenant_suspension"
    }
}

#[allow(elided_lifetimes_in_paths, reason = "async_trait cannot take the early-bound lifetime of `SchemaManager<'_>`")]
#[async_trait::async_trait]
impl MigrationTrait for AddTenantSuspension {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use entity::Column;
        let table = || Table::alter().table(REGISTRY_TABLE).to_owned();
        // SQLite runs the two statements outside a transaction: a process killed between
        // them leaves the first column without the migration's record, so each column is
        // added only when missing and a re-run finishes the migration.
        if !manager.has_column(REGISTRY_TABLE, "suspended_reason").await? {
            manager
                .alter_table(table().add_column(ColumnDef::new(Column::SuspendedReason).text().null()).to_owned())
                .await?;
        }
        if !manager.has_column(REGISTRY_TABLE, "suspended_at").await? {
            manager
                .alter_table(
                    table()
                        .add_column(ColumnDef::new(Column::SuspendedAt).timestamp_with_time_zone().null())
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use entity::Column;
        let table = || Table::alter().table(REGISTRY_TABLE).to_owned();
        manager.alter_table(table().drop_column(Column::SuspendedAt).to_owned()).await?;
        manager.alter_table(table().drop_column(Column::SuspendedReason).to_owned()).await
    }
}

/// The operations journal ([`crate::operations`]).
struct CreateOperationsJournal;

impl MigrationName for CreateOperationsJournal {
    fn name(&self) -> &str {
        "m20261130_000004_create_tenancy_operations"
    }
}

#[allow(elided_lifetimes_in_paths, reason = "async_trait cannot take the early-bound lifetime of `SchemaManager<'_>`")]
#[async_trait::async_trait]
impl MigrationTrait for CreateOperationsJournal {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use crate::operations::{OPERATIONS_TABLE, OperationColumn as Column};
        manager
            .create_table(
                Table::create()
                    .table(OPERATIONS_TABLE)
                    .if_not_exists()
                    .col(ColumnDef::new(Column::TenantId).string().not_null().primary_key())
                    .col(ColumnDef::new(Column::Kind).string().not_null())
                    .col(ColumnDef::new(Column::Params).json_binary().not_null())
                    .col(ColumnDef::new(Column::Step).text().null())
                    .col(ColumnDef::new(Column::Undo).json_binary().not_null())
                    .col(ColumnDef::new(Column::Worker).string().not_null())
                    .col(ColumnDef::new(Column::StartedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Column::HeartbeatAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(crate::operations::OPERATIONS_TABLE).to_owned()).await
    }
}
