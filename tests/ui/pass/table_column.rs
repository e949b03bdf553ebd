// `column` names the tenant field; the attribute may also follow the derive, and the
// field's type may be spelled out in full.

mod member {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "members")]
    #[tenancy::tenant_scoped(column = "org_id")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub org_id: ::std::string::String,
        pub email: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use tenancy::{Scope, TenantScoped};

fn main() {
    assert_eq!(member::Entity::SCOPE, Scope::Table { column: "org_id" });
    assert!(matches!(member::Entity::tenant_column(), Some(member::Column::OrgId)));
}
