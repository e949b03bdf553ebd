// A cache-scoped model read through to a table that has a tenant column: the column is
// registered, so table isolation scopes that table like a table-scoped model's.

mod session {
    use sea_orm::entity::prelude::*;

    #[tenancy::tenant_scoped(cache, ttl = 60, column = "org")]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sessions")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub org: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use std::time::Duration;
use tenancy::{Scope, TenantScoped};

fn main() {
    let scope = Scope::Cache { ttl: Some(Duration::from_secs(60)), column: Some("org") };
    assert_eq!(session::Entity::SCOPE, scope);
    assert_eq!(scope.table_column(), Some("org"));
    assert!(matches!(session::Entity::tenant_column(), Some(session::Column::Org)));
}
