//! The `plans` table: billing plans, shared by all tenants.
//!
//! This table is untenanted (no `tenant_id`) and only exists in the master
//! database/schema; it is created by [`SharedMigrator`](crate::SharedMigrator).
//! `#[tenancy::shared]` declares it shared: a table-isolated tenant's handle on a SQLite
//! master may read it (and not write it), where every undeclared table is refused.

use sea_orm::entity::prelude::*;

/// A billing plan.
#[tenancy::shared]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize)]
#[sea_orm(table_name = "plans")]
pub struct Model {
    /// Primary key (assigned explicitly, not auto-incremented).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i32,
    /// Unique machine-readable code, e.g. `free`, `pro`, `enterprise`.
    #[sea_orm(unique)]
    pub code: String,
    /// Human-readable plan name.
    pub name: String,
    /// Monthly price in cents.
    pub price_cents: i64,
}

/// Relations of a plan (none).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
