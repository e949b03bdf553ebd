//! SeaORM entities of the project tracker.
//!
//! Tenant-scoped tables ([`project`], [`task`], [`comment`]) all carry a
//! `tenant_id` column. In table-isolation mode it is the column that scopes
//! rows to a tenant; in the schema- and database-isolation modes it is still
//! present (and filled) so that the same entities and migrations work in
//! every mode.
//!
//! [`dashboard_stats`] is cache-scoped: a tenant's counts, kept in its cache namespace
//! and derived from its relational data, with no table of its own.
//!
//! [`plan`] is a shared, untenanted table that lives only in the master
//! database/schema.
//!
//! Relations: a project has many tasks, a task belongs to a project and has
//! many comments, a comment belongs to a task.

pub mod comment;
pub mod dashboard_stats;
pub mod plan;
pub mod project;
pub mod task;

/// Convenient re-exports of the entity types under distinct names.
pub mod prelude {
    pub use super::comment::Entity as Comment;
    pub use super::dashboard_stats::Entity as DashboardStats;
    pub use super::plan::Entity as Plan;
    pub use super::project::Entity as Project;
    pub use super::task::Entity as Task;
}
