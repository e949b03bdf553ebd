//! The tenant registry: the `tenancy_tenants` table of the master database, the
//! framework's own migrations that create it, and the [`Tenant`] read from it.
//!
//! Reading a row ([`Tenant::from_row`]) is the one place a registry entry can be found
//! corrupt: what comes out is a [`Tenant`] whose [`Placement`] has every part its mode
//! needs.

pub(crate) mod id;
pub(crate) mod isolation;
pub mod ledger;
pub mod live;
mod migrations;
pub(crate) mod placement;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, DeriveActiveEnum, EntityTrait, EnumIter, QueryFilter};

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
    suspension: Option<Suspension>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// Why and since when a tenant is suspended ([`TenantStatus::Suspended`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Suspension {
    /// The operator's reason, if one was given.
    pub reason: Option<String>,
    /// When the tenant was suspended.
    pub since: DateTime<Utc>,
}

impl Tenant {
    /// A tenant about to be claimed by provisioning.
    pub(crate) fn provisioning(id: TenantId, name: String, placement: Placement) -> Tenant {
        let now = Utc::now();
        Tenant {
            id,
            name,
            placement,
            status: TenantStatus::Provisioning,
            suspension: None,
            created_at: now,
            updated_at: now,
        }
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

    /// Why and since when the tenant is suspended, when it is.
    pub fn suspension(&self) -> Option<&Suspension> {
        self.suspension.as_ref()
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
        let suspension = match (row.status, row.suspended_at) {
            (TenantStatus::Suspended, Some(since)) => Some(Suspension { reason: row.suspended_reason, since }),
            (TenantStatus::Suspended, None) => return Err(corrupt("a suspended tenant without a time".to_owned())),
            _ => None,
        };
        Ok(Tenant {
            id,
            name: row.name,
            placement,
            status: row.status,
            suspension,
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
            suspended_reason: Set(self.suspension.as_ref().and_then(|s| s.reason.clone())),
            suspended_at: Set(self.suspension.as_ref().map(|s| s.since)),
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
    /// The operator stopped serving the tenant (`suspendtenant`); its data is kept, fleet
    /// migrations still migrate it, and `resumetenant` serves it again.
    #[sea_orm(string_value = "suspended")]
    Suspended,
    /// A `deletetenant` run is removing the tenant's storage; the registry row goes last.
    /// A tenant in this state is not served.
    #[sea_orm(string_value = "deleting")]
    Deleting,
    /// A `movetenant` run is copying the tenant to its new place; it is not served until
    /// the registry switches to the copy (or the move is rolled back).
    #[sea_orm(string_value = "moving")]
    Moving,
    /// A `renametenant` run is changing the tenant's id; the registry row gets the new id
    /// last, and the tenant is served again under it. A tenant in this state is not served
    /// (a suspended tenant stays suspended while it is renamed).
    #[sea_orm(string_value = "renaming")]
    Renaming,
}

impl TenantStatus {
    /// The value stored in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Provisioning => "provisioning",
            TenantStatus::Ready => "ready",
            TenantStatus::Suspended => "suspended",
            TenantStatus::Deleting => "deleting",
            TenantStatus::Moving => "moving",
            TenantStatus::Renaming => "renaming",
        }
    }
}

impl std::fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Suspends a ready (or already suspended) tenant, keeping `reason` and the time: one
/// conditional update, so a tenant being provisioned is never marked.
pub(crate) async fn suspend(master: &DatabaseConnection, id: &TenantId, reason: Option<String>) -> Result<Tenant> {
    let now = Utc::now();
    let updated = entity::Entity::update_many()
        .col_expr(entity::Column::Status, Expr::value(TenantStatus::Suspended))
        .col_expr(entity::Column::SuspendedReason, Expr::value(reason))
        .col_expr(entity::Column::SuspendedAt, Expr::value(Some(now)))
        .col_expr(entity::Column::UpdatedAt, Expr::value(now))
        .filter(entity::Column::TenantId.eq(id.as_str()))
        .filter(entity::Column::Status.is_in([TenantStatus::Ready, TenantStatus::Suspended]))
        .exec(master)
        .await?;
    settled(master, id, updated.rows_affected, TenantStatus::Suspended).await
}

/// Serves a suspended (or already ready) tenant again.
pub(crate) async fn resume(master: &DatabaseConnection, id: &TenantId) -> Result<Tenant> {
    let now = Utc::now();
    let updated = entity::Entity::update_many()
        .col_expr(entity::Column::Status, Expr::value(TenantStatus::Ready))
        .col_expr(entity::Column::SuspendedReason, Expr::value(Option::<String>::None))
        .col_expr(entity::Column::SuspendedAt, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(entity::Column::UpdatedAt, Expr::value(now))
        .filter(entity::Column::TenantId.eq(id.as_str()))
        .filter(entity::Column::Status.eq(TenantStatus::Suspended))
        .exec(master)
        .await?;
    settled(master, id, updated.rows_affected, TenantStatus::Ready).await
}

/// The tenant after a status change to `wanted`: unknown is [`Error::TenantNotFound`], a
/// tenant in another state (being provisioned) [`Error::TenantNotReady`].
async fn settled(master: &DatabaseConnection, id: &TenantId, changed: u64, wanted: TenantStatus) -> Result<Tenant> {
    let row = entity::Entity::find_by_id(id.as_str()).one(master).await?;
    let tenant = row.map(Tenant::from_row).transpose()?.ok_or_else(|| Error::TenantNotFound { id: id.to_string() })?;
    if changed == 0 && tenant.status() != wanted {
        return Err(Error::TenantNotReady { tenant: id.to_string(), status: tenant.status() });
    }
    Ok(tenant)
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
        pub suspended_reason: Option<String>,
        pub suspended_at: Option<DateTimeUtc>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
