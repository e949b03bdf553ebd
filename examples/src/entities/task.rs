//! The `tasks` table: work items belonging to a project.

use sea_orm::entity::prelude::*;

/// A task of a project.
#[tenancy::tenant_scoped]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize)]
#[sea_orm(table_name = "tasks")]
pub struct Model {
    /// Auto-incremented primary key.
    #[sea_orm(primary_key)]
    pub id: i32,
    /// Identifier of the tenant owning the row.
    pub tenant_id: String,
    /// The project this task belongs to (`projects.id`, deleted in cascade).
    pub project_id: i32,
    /// Short title of the task.
    pub title: String,
    /// Whether the task is completed.
    pub done: bool,
    /// Creation timestamp (UTC).
    pub created_at: DateTimeUtc,
}

/// Relations of a task.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// A task belongs to a project.
    #[sea_orm(
        belongs_to = "super::project::Entity",
        from = "Column::ProjectId",
        to = "super::project::Column::Id",
        on_delete = "Cascade"
    )]
    Project,
    /// A task has many comments.
    #[sea_orm(has_many = "super::comment::Entity")]
    Comments,
}

impl Related<super::project::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Project.def()
    }
}

impl Related<super::comment::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Comments.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
