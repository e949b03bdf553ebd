//! The tenant registry: the `tenancy_tenants` table of the master database, the
//! framework's own migration that creates it, and the [`Tenant`] record read from it.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use sea_orm_migration::prelude::*;

use crate::{Error, Isolation, Result, TenantConfig, TenantId};

/// The registry table's name (**contract**).
pub const REGISTRY_TABLE: &str = "tenancy_tenants";

/// The table that records which of the framework's own master-database migrations ran.
///
/// It is not `seaql_migrations`, which belongs to the application's migrator: in table
/// isolation the application migrates the same master database.
pub const FRAMEWORK_MIGRATIONS_TABLE: &str = "tenancy_migrations";

/// A tenant as the registry records it.
#[derive(Clone, Debug, PartialEq)]
pub struct Tenant {
    /// The tenant's id.
    pub id: TenantId,
    /// A human-readable name.
    pub name: String,
    /// How the tenant's data is isolated.
    pub isolation: Isolation,
    /// Mode-specific configuration (database location, schema).
    pub config: TenantConfig,
    /// Where the tenant is in its life cycle.
    pub status: TenantStatus,
    /// When the registry row was created.
    pub created_at: DateTime<Utc>,
    /// When the registry row last changed.
    pub updated_at: DateTime<Utc>,
}

/// Where a tenant is in its life cycle, as stored in the registry's `status` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TenantStatus {
    /// A `createtenant` run has claimed the id and is creating the tenant's storage. A
    /// tenant in this state is not served.
    Provisioning,
    /// The tenant is fully created and may be served.
    Ready,
}

impl TenantStatus {
    /// The value stored in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Provisioning => "provisioning",
            TenantStatus::Ready => "ready",
        }
    }
}

impl fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TenantStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "provisioning" => Ok(TenantStatus::Provisioning),
            "ready" => Ok(TenantStatus::Ready),
            other => Err(format!("unknown status '{other}'")),
        }
    }
}

pub(crate) mod entity {
    //! The sea-orm entity of `tenancy_tenants`.
    #![allow(unreachable_pub, reason = "derive macros generate `pub` items in this private module")]
    #![allow(missing_docs, reason = "private entity; the columns are documented on `Tenant`")]

    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenancy_tenants")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        pub name: String,
        pub isolation_type: String,
        #[sea_orm(column_type = "JsonBinary")]
        pub config: Json,
        pub status: String,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

impl TryFrom<entity::Model> for Tenant {
    type Error = Error;

    fn try_from(row: entity::Model) -> Result<Self> {
        let corrupt = |reason: String| Error::CorruptRegistry { tenant: row.tenant_id.clone(), reason };
        Ok(Tenant {
            id: TenantId::new(row.tenant_id.clone()).map_err(|e| corrupt(e.to_string()))?,
            isolation: row
                .isolation_type
                .parse()
                .map_err(|_| corrupt(format!("unknown isolation type '{}'", row.isolation_type)))?,
            config: serde_json::from_value(row.config.clone()).map_err(|e| corrupt(format!("config: {e}")))?,
            status: row.status.parse().map_err(corrupt)?,
            name: row.name,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// The framework's migrations of the master database.
///
/// [`crate::Tenancy::connect`] applies them, so applications never create the registry
/// by hand. They are recorded in [`FRAMEWORK_MIGRATIONS_TABLE`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RegistryMigrator;

impl MigratorTrait for RegistryMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateTenantsTable), Box::new(CreateMigrationLedger)]
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
        use crate::ledger::{entries, runs};
        manager
            .create_table(
                Table::create()
                    .table(crate::ledger::RUNS_TABLE)
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
                    .table(crate::ledger::LEDGER_TABLE)
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
        manager.drop_table(Table::drop().table(crate::ledger::LEDGER_TABLE).to_owned()).await?;
        manager.drop_table(Table::drop().table(crate::ledger::RUNS_TABLE).to_owned()).await
    }
}
