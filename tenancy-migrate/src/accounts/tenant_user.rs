//! The `tenant_users` table: the users of one tenant, as the accounts module keeps them.

use sea_orm::entity::prelude::*;

/// A user of one tenant. Usernames are unique per tenant; the password is stored only as
/// an argon2id PHC string (`$argon2id$v=19$...`), never in plain text.
#[tenancy::tenant_scoped]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tenant_users")]
pub struct Model {
    /// Auto-incremented primary key.
    #[sea_orm(primary_key)]
    pub id: i32,
    /// The tenant owning the row (stamped and scoped like any `#[tenant_scoped]` model).
    pub tenant_id: String,
    /// The login name, unique within the tenant.
    pub username: String,
    /// The user's email address.
    pub email: String,
    /// The argon2id hash of the password, as a PHC string.
    pub password_hash: String,
    /// Whether the user is an administrator of the tenant.
    pub is_superuser: bool,
    /// When the user was created (UTC).
    pub created_at: DateTimeUtc,
}

/// `tenant_users` has no relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
