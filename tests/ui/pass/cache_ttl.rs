// A cache-scoped model, with a time to live in seconds; it has no tenant column.

mod session {
    use sea_orm::entity::prelude::*;

    #[tenancy::tenant_scoped(cache, ttl = 300)]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sessions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub token: String,
        pub user_id: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use std::time::Duration;
use tenancy::{Scope, TenantScoped};

fn main() {
    assert_eq!(session::Entity::SCOPE, Scope::Cache { ttl: Some(Duration::from_secs(300)), column: None });
    assert!(session::Entity::tenant_column().is_none());
}
