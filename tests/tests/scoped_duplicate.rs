//! Two `#[tenant_scoped]` models on one table are reported by `tenancy::scoped_models()`,
//! naming both. A test binary of its own: the duplicate would fail every other registry
//! test linked with it.

use tenancy::Error;

mod notes {
    use sea_orm::entity::prelude::*;

    pub(crate) const ATTRIBUTE_LINE: u32 = line!() + 1;
    #[tenancy::tenant_scoped]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "notes")]
    pub(crate) struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub tenant_id: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A copy of `notes` left with the old table name.
mod archived_notes {
    use sea_orm::entity::prelude::*;

    pub(crate) const ATTRIBUTE_LINE: u32 = line!() + 1;
    #[tenancy::tenant_scoped(cache)]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "notes")]
    pub(crate) struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

#[test]
fn two_models_on_one_table_are_reported_with_both_locations() {
    let error = tenancy::scoped_models().expect_err("`notes` is registered twice");
    let file = file!();
    assert_eq!(
        error.to_string(),
        format!(
            "Table 'notes' is registered by two #[tenant_scoped] models, \
             scoped_duplicate::archived_notes::Entity ({file}:{}) and scoped_duplicate::notes::Entity ({file}:{}); \
             a table has one scope, so keep the attribute on one of them",
            archived_notes::ATTRIBUTE_LINE,
            notes::ATTRIBUTE_LINE,
        )
    );
    let Error::DuplicateScopedTable { table, first, second } = error else {
        panic!("expected DuplicateScopedTable, got {error:?}");
    };
    assert_eq!(table, "notes");
    assert_eq!(first.entity(), "scoped_duplicate::archived_notes::Entity");
    assert_eq!(second.entity(), "scoped_duplicate::notes::Entity");
}
