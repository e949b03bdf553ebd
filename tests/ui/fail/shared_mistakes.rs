// `#[tenancy::shared]`: an unknown option, a model both shared and scoped, and a model
// without a table name are each reported at their tokens.

mod plan {
    use sea_orm::entity::prelude::*;

    #[tenancy::shared(writeable)]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "plans")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

mod invoice {
    use sea_orm::entity::prelude::*;

    #[tenancy::shared]
    #[tenancy::tenant_scoped]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "invoices")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub tenant_id: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

mod country {
    #[tenancy::shared]
    pub struct Model {
        pub code: String,
    }
}

fn main() {}
