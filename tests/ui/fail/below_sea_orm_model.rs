// `#[sea_orm::model]` copies the attributes below it onto `ModelEx`.

mod customer {
    use sea_orm::entity::prelude::*;

    #[sea_orm::model]
    #[tenancy::tenant_scoped]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "customers")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub tenant_id: String,
    }

    impl ActiveModelBehavior for ActiveModel {}
}

fn main() {}
