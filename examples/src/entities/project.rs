//! The `projects` table: the top-level, tenant-scoped object of the tracker.

use sea_orm::entity::prelude::*;

/// A project owned by one tenant.
#[tenancy::tenant_scoped]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize)]
#[sea_orm(table_name = "projects")]
pub struct Model {
    /// Auto-incremented primary key.
    #[sea_orm(primary_key)]
    pub id: i32,
    /// Identifier of the tenant owning the row.
    pub tenant_id: String,
    /// Human-readable project name.
    pub name: String,
    /// Creation timestamp (UTC).
    pub created_at: DateTimeUtc,
}

/// Relations of a project.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// A project has many tasks.
    #[sea_orm(has_many = "super::task::Entity")]
    Tasks,
}

impl Related<super::task::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Tasks.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
