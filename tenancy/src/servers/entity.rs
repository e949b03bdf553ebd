//! The sea-orm entity of `tenancy_servers`: one row per PostgreSQL server tenants may be
//! placed on. Only [`super`] reads and writes it; everything else sees [`super::Server`].

#![allow(unreachable_pub, reason = "derive macros generate `pub` items in this module")]

use sea_orm::entity::prelude::*;

/// The table's name.
pub(crate) const SERVERS_TABLE: &str = "tenancy_servers";

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "tenancy_servers")]
#[allow(missing_docs, reason = "private entity; the columns are documented on `Server`")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    pub host: String,
    pub port: i32,
    pub maintenance_db: String,
    /// `NULL` for the master's own server, whose credentials are the master's.
    pub admin_user: Option<String>,
    /// Encrypted with the operator's key, bound to `server:<name>`.
    pub admin_password: Option<String>,
    pub weight: i32,
    pub state: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
#[allow(missing_docs, reason = "private entity")]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
