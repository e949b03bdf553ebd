//! The sea-orm entity of `tenancy_operations`.
#![allow(unreachable_pub, reason = "derive macros generate `pub` items in this private module")]
#![allow(missing_docs, reason = "private entity; the columns are documented on `Operation`")]

use sea_orm::entity::prelude::*;

use super::OperationKind;

/// The journal table's name.
pub(crate) const OPERATIONS_TABLE: &str = "tenancy_operations";

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "tenancy_operations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: String,
    pub kind: OperationKind,
    #[sea_orm(column_type = "JsonBinary")]
    pub params: Json,
    pub step: Option<String>,
    #[sea_orm(column_type = "JsonBinary")]
    pub undo: Json,
    pub worker: String,
    pub started_at: DateTimeUtc,
    pub heartbeat_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
