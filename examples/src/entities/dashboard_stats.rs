//! `dashboard_stats`: a tenant's project counts, a cache-scoped model.
//!
//! The numbers are derived from the tenant's [`projects`](super::project),
//! [`tasks`](super::task) and [`comments`](super::comment), so they need no table of their
//! own: the model is kept in the tenant's cache namespace for 60 seconds and recomputed
//! from the tenant's data on a miss. (A cache-scoped model read through to a table of its
//! own would need a tenant column for table isolation, declared with
//! `#[tenant_scoped(cache, column = "tenant_id")]`; without one, `read_through` refuses
//! table tenants.) `table_name` names the model in cache keys.

use sea_orm::entity::prelude::*;
use sea_orm::{ConnectionTrait, PaginatorTrait, QueryFilter};

/// The counts a tenant's dashboard shows.
#[tenancy::tenant_scoped(cache, ttl = 60)]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
#[sea_orm(table_name = "dashboard_stats")]
pub struct Model {
    /// Which summary this is; the dashboard has one, [`SUMMARY`].
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    /// Number of projects.
    pub projects: i64,
    /// Number of tasks.
    pub tasks: i64,
    /// Number of tasks not done yet.
    pub open_tasks: i64,
    /// Number of comments.
    pub comments: i64,
    /// When the numbers were computed (UTC): at most the time to live old.
    pub computed_at: DateTimeUtc,
}

/// Relations of the stats (none: they are derived, not stored).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// The [`Model::name`] of the dashboard's summary.
pub const SUMMARY: &str = "summary";

/// Computes the summary from the tenant's relational data: the source a cache miss reads
/// through to. `db` is a tenant handle (or a transaction of one), so every count is the
/// tenant's own whatever its isolation mode.
///
/// # Errors
/// The [`DbErr`] of a failing count.
pub async fn compute<C: ConnectionTrait>(db: &C) -> Result<Model, DbErr> {
    use super::{comment, project, task};
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    Ok(Model {
        name: SUMMARY.to_owned(),
        projects: count(project::Entity::find().count(db).await?),
        tasks: count(task::Entity::find().count(db).await?),
        open_tasks: count(task::Entity::find().filter(task::Column::Done.eq(false)).count(db).await?),
        comments: count(comment::Entity::find().count(db).await?),
        computed_at: ChronoUtc::now(),
    })
}
