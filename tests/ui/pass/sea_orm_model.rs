// A model declared with `#[sea_orm::model]`, relations included. `#[tenant_scoped]` goes
// above it: `#[sea_orm::model]` copies the attributes below it onto `ModelEx`.

mod customer {
    use sea_orm::entity::prelude::*;

    #[tenancy::tenant_scoped]
    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "customers")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub tenant_id: String,
        #[sea_orm(has_many)]
        pub orders: HasMany<super::order::Entity>,
    }

    impl ActiveModelBehavior for ActiveModel {}
}

mod order {
    use sea_orm::entity::prelude::*;

    #[tenancy::tenant_scoped]
    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "orders")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub tenant_id: String,
        pub customer_id: i32,
        #[sea_orm(belongs_to, from = "customer_id", to = "id")]
        pub customer: BelongsTo<super::customer::Entity>,
    }

    impl ActiveModelBehavior for ActiveModel {}
}

use tenancy::{Scope, TenantScoped};

fn main() {
    assert_eq!(customer::Entity::SCOPE, Scope::Table { column: "tenant_id" });
    assert!(matches!(order::Entity::tenant_column(), Some(order::Column::TenantId)));
    let tables: Vec<_> = tenancy::scoped_models().unwrap().iter().map(|model| model.table()).collect();
    assert_eq!(tables, ["customers", "orders"]);
}
