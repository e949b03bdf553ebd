// `#[tenancy::shared]` and `#[tenancy::shared(writable)]` register the model's table.

mod plan {
    use sea_orm::entity::prelude::*;

    #[tenancy::shared]
    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "plans")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
    }

    impl ActiveModelBehavior for ActiveModel {}
}

mod guestbook {
    use sea_orm::entity::prelude::*;

    #[tenancy::shared(writable)]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "guestbook")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

fn main() {
    let shared = tenancy::shared_models().unwrap();
    let listed: Vec<(&str, bool)> = shared.iter().map(|model| (model.table(), model.writable())).collect();
    assert_eq!(listed, [("guestbook", true), ("plans", false)]);
}
