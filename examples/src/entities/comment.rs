//! The `comments` table: discussion attached to a task.

use sea_orm::entity::prelude::*;

/// A comment posted on a task.
#[tenancy::tenant_scoped]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize)]
#[sea_orm(table_name = "comments")]
pub struct Model {
    /// Auto-incremented primary key.
    #[sea_orm(primary_key)]
    pub id: i32,
    /// Identifier of the tenant owning the row.
    pub tenant_id: String,
    /// The task this comment belongs to (`tasks.id`, deleted in cascade).
    pub task_id: i32,
    /// Text of the comment.
    #[sea_orm(column_type = "Text")]
    pub body: String,
    /// Creation timestamp (UTC).
    pub created_at: DateTimeUtc,
}

/// Relations of a comment.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// A comment belongs to a task.
    #[sea_orm(
        belongs_to = "super::task::Entity",
        from = "Column::TaskId",
        to = "super::task::Column::Id",
        on_delete = "Cascade"
    )]
    Task,
}

impl Related<super::task::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Task.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
