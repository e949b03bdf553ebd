//! The tenant registry: the `tenancy_tenants` table of the master database, the
//! framework's own migrations that create it, and the [`Tenant`] read from it.
//!
//! Reading a row ([`Tenant::from_row`]) is the one place a registry entry can be found
//! corrupt: what comes out is a [`Tenant`] whose [`Placement`] has every part its mode
//! needs.

pub(crate) mod id;
pub(crate) mod isolation;
pub mod ledger;
mod migrations;
pub(crate) mod placement;

use chrono::{DateTime, Utc};
use sea_orm::{DeriveActiveEnum, EnumIter};

pub use self::migrations::{FRAMEWORK_MIGRATIONS_TABLE, RegistryMigrator};
use self::placement::Placement;
use crate::{Error, Isolation, Result, TenantId};

/// The registry table's name (**contract**).
pub const REGISTRY_TABLE: &str = "tenancy_tenants";

/// A tenant as the registry records it.
///
/// Made only by reading the registry (or by provisioning), so its placement always fits
/// its isolation mode.
#[derive(Clone, Debug, PartialEq)]
pub struct Tenant {
    id: TenantId,
    name: String,
    placement: Placement,
    status: TenantStatus,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl Tenant {
    /// A tenant about to be claimed by provisioning.
    pub(crate) fn provisioning(id: TenantId, name: String, placement: Placement) -> Tenant {
        let now = Utc::now();
        Tenant { id, name, placement, status: TenantStatus::Provisioning, created_at: now, updated_at: now }
    }

    /// The tenant's id.
    pub fn id(&self) -> &TenantId {
        &self.id
    }

    /// A human-readable name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How the tenant's data is isolated.
    pub fn isolation(&self) -> Isolation {
        self.placement.isolation()
    }

    /// Where the tenant's data lives.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Where the tenant is in its life cycle.
    pub fn status(&self) -> TenantStatus {
        self.status
    }

    /// When the registry row was created.
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }

    /// When the registry row last changed.
    pub fn updated_at(&self) -> DateTime<Utc> {
        self.updated_at
    }

    /// Marks the tenant ready (provisioning's last step wrote it so).
    pub(crate) fn set_ready(&mut self, at: DateTime<Utc>) {
        self.status = TenantStatus::Ready;
        self.updated_at = at;
    }

    /// Reads a registry row.
    ///
    /// # Errors
    /// [`Error::CorruptRegistry`] for a row this version cannot read: an invalid id, or a
    /// config that does not fit the isolation mode.
    pub(crate) fn from_row(row: entity::Model) -> Result<Tenant> {
        let corrupt = |reason: String| Error::CorruptRegistry { tenant: row.tenant_id.clone(), reason };
        let id = TenantId::new(row.tenant_id.clone()).map_err(|err| corrupt(err.to_string()))?;
        let placement = Placement::from_stored(row.isolation_type, row.config).map_err(corrupt)?;
        Ok(Tenant {
            id,
            name: row.name,
            placement,
            status: row.status,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }

    /// The registry row of this tenant.
    pub(crate) fn to_row(&self) -> entity::ActiveModel {
        use sea_orm::ActiveValue::Set;
        entity::ActiveModel {
            tenant_id: Set(self.id.to_string()),
            name: Set(self.name.clone()),
            isolation_type: Set(self.isolation()),
            config: Set(self.placement.to_stored()),
            status: Set(self.status),
            created_at: Set(self.created_at),
            updated_at: Set(self.updated_at),
        }
    }
}

/// Where a tenant is in its life cycle, as stored in the registry's `status` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(sea_orm::sea_query::StringLen::None)")]
#[non_exhaustive]
pub enum TenantStatus {
    /// A `createtenant` run has claimed the id and is creating the tenant's storage. A
    /// tenant in this state is not served.
    #[sea_orm(string_value = "provisioning")]
    Provisioning,
    /// The tenant is fully created and may be served.
    #[sea_orm(string_value = "ready")]
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

impl std::fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub(crate) mod entity {
    //! The sea-orm entity of `tenancy_tenants`.
    #![allow(unreachable_pub, reason = "derive macros generate `pub` items in this private module")]
    #![allow(missing_docs, reason = "private entity; the columns are documented on `Tenant`")]

    use sea_orm::entity::prelude::*;

    use super::TenantStatus;
    use crate::Isolation;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenancy_tenants")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        pub name: String,
        pub isolation_type: Isolation,
        #[sea_orm(column_type = "JsonBinary")]
        pub config: Json,
        pub status: TenantStatus,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
