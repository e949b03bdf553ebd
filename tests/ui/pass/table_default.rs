// The default: table-scoped on the `tenant_id` field of a `DeriveEntityModel` model.

mod invoice {
    use sea_orm::entity::prelude::*;
    use tenancy::tenant_scoped;

    #[tenant_scoped]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "invoices")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub tenant_id: String,
        pub total_cents: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use tenancy::{Scope, TenantScoped};

fn main() {
    assert_eq!(invoice::Entity::SCOPE, Scope::Table { column: "tenant_id" });
    assert!(matches!(invoice::Entity::tenant_column(), Some(invoice::Column::TenantId)));
}
