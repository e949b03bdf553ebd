//! `#[tenant_scoped]` models register themselves: `tenancy::scoped_models()` lists them
//! sorted by table with their scopes, and each entity's `tenant_column()` is the
//! `Column` sea-orm generated for the tenant field. `#[tenancy::shared]` models register
//! likewise in `tenancy::shared_models()`.
//!
//! This binary links no other crate's models (not the example app's): a table tenant's
//! handle on a SQLite master here shows what an incomplete registry does. It refuses.

use std::time::Duration;

use sea_orm::IdenStatic;
use tenancy::{Scope, TenantScoped};

/// `tenancy` under another path, as a crate re-exporting it has it, for
/// `#[tenant_scoped(crate = "...")]`.
mod app {
    pub(crate) use tenancy as framework;
}

/// Table-scoped on the default `tenant_id`.
mod invoice {
    use sea_orm::entity::prelude::*;

    pub(crate) const ATTRIBUTE_LINE: u32 = line!() + 1;
    #[tenancy::tenant_scoped]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "invoices")]
    pub(crate) struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub tenant_id: String,
        pub total_cents: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Table-scoped on another field, whose SQL name differs from the field's.
mod member {
    use sea_orm::entity::prelude::*;

    #[tenancy::tenant_scoped(column = "org_id", crate = "crate::app::framework")]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "members")]
    pub(crate) struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        #[sea_orm(column_name = "organisation")]
        pub org_id: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Table-scoped under a `rename_all` that changes every SQL column name.
mod audit_entry {
    use sea_orm::entity::prelude::*;

    #[tenancy::tenant_scoped]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_entries", rename_all = "camelCase")]
    pub(crate) struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub tenant_id: String,
        pub action: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Cache-scoped, with and without a time to live.
mod session {
    use sea_orm::entity::prelude::*;

    #[tenancy::tenant_scoped(cache, ttl = 300)]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "sessions")]
    pub(crate) struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub token: String,
        pub user_id: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

mod feature_flag {
    use sea_orm::entity::prelude::*;

    #[tenancy::tenant_scoped(cache)]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "feature_flags")]
    pub(crate) struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub enabled: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Shared, read-only for tenants.
mod country {
    #![allow(unreachable_pub, reason = "`#[sea_orm::model]` generates `pub` items next to the model")]

    use sea_orm::entity::prelude::*;

    #[tenancy::shared]
    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "countries")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub code: String,
        pub name: String,
    }

    impl ActiveModelBehavior for ActiveModel {}
}

/// Shared and writable, through a re-exported `tenancy`.
mod announcement {
    use sea_orm::entity::prelude::*;

    #[tenancy::shared(writable, crate = "crate::app::framework")]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "announcements")]
    pub(crate) struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub body: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

#[test]
fn registry_lists_every_shared_model_sorted_by_table() {
    let models = tenancy::shared_models().expect("no table is declared twice");
    let listed: Vec<(&str, &str, bool)> =
        models.iter().map(|model| (model.table(), model.entity(), model.writable())).collect();
    assert_eq!(
        listed,
        [
            ("announcements", "scoped_registry::announcement::Entity", true),
            ("countries", "scoped_registry::country::Entity", false),
        ]
    );
    assert!(models[1].file().ends_with("scoped_registry.rs"));
    assert!(models[1].to_string().starts_with("scoped_registry::country::Entity ("));
}

/// A table tenant on a SQLite master (one pooled connection) whose app has tables this
/// binary's models do not declare, as a command binary linking no models would: every
/// undeclared table is refused (it used to run unscoped and show every tenant's rows),
/// the declared ones work, and the next statement on the connection is unaffected.
#[tokio::test]
async fn a_sqlite_table_tenant_reaches_no_table_the_linked_models_do_not_declare() {
    use sea_orm::{ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait, Statement};

    let dir = tenancy_test_support::TempDir::new();
    let tenancy = dir.sqlite_builder().max_connections(1).connect().await.unwrap();
    let master = tenancy.master();
    let handles = tenancy_test_support::table_tenants(&tenancy, &(), false, &["acme", "globex"]).await;
    let (a, b) = (&handles[0], &handles[1]);
    master
        .execute_unprepared(&format!(
            "CREATE TABLE projects (id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, name TEXT NOT NULL);
             INSERT INTO projects (tenant_id, name) VALUES ('{a}', 'a-project'), ('{b}', 'b-project');
             CREATE TABLE invoices (id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL, total_cents INTEGER NOT NULL);
             CREATE TABLE countries (code TEXT PRIMARY KEY, name TEXT NOT NULL);
             CREATE TABLE announcements (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
             INSERT INTO countries VALUES ('fr', 'France');",
            a = a.id(),
            b = b.id(),
        ))
        .await
        .unwrap();
    let sql = |text: &str| Statement::from_string(DbBackend::Sqlite, text.to_owned());
    for text in ["SELECT * FROM projects", "SELECT name FROM projects WHERE tenant_id <> ''", "DELETE FROM projects"] {
        let refused = a.query_all_raw(sql(text)).await.unwrap_err().to_string();
        assert!(refused.contains("table \"projects\"") && refused.contains("no linked model declares it"), "{refused}");
        assert!(a.execute_unprepared(text).await.is_err(), "{text}");
        // The next statement on the one connection: a declared table, scoped.
        a.execute_unprepared("INSERT INTO invoices (total_cents) VALUES (5)").await.unwrap();
    }
    assert_eq!(invoice::Entity::find().count(a).await.unwrap(), 3);
    assert_eq!(invoice::Entity::find().count(b).await.unwrap(), 0);
    assert_eq!(country::Entity::find().all(b).await.unwrap().len(), 1);
    assert!(b.execute_unprepared("DELETE FROM countries").await.unwrap_err().to_string().contains("read-only"));
    let posted = announcement::ActiveModel { body: sea_orm::Set("hello".to_owned()), ..Default::default() };
    sea_orm::ActiveModelTrait::insert(posted, b).await.unwrap();
    let seen = announcement::Entity::find().all(a).await.unwrap();
    assert_eq!(seen.iter().map(|row| row.body.as_str()).collect::<Vec<_>>(), ["hello"], "shared with every tenant");
    let rows = "SELECT COUNT(*) AS n FROM projects";
    let count = master.query_one_raw(sql(rows)).await.unwrap().unwrap().try_get::<i64>("", "n").unwrap();
    assert_eq!(count, 2, "both tenants' projects are still there");
}

#[test]
fn registry_lists_every_scoped_model_sorted_by_table() {
    let models = tenancy::scoped_models().expect("no table is registered twice");
    let listed: Vec<(&str, &str, Scope)> =
        models.iter().map(|model| (model.table(), model.entity(), model.scope())).collect();
    assert_eq!(
        listed,
        [
            ("audit_entries", "scoped_registry::audit_entry::Entity", Scope::Table { column: "tenantId" }),
            ("feature_flags", "scoped_registry::feature_flag::Entity", Scope::Cache { ttl: None, column: None }),
            ("invoices", "scoped_registry::invoice::Entity", Scope::Table { column: "tenant_id" }),
            ("members", "scoped_registry::member::Entity", Scope::Table { column: "organisation" }),
            (
                "sessions",
                "scoped_registry::session::Entity",
                Scope::Cache { ttl: Some(Duration::from_secs(300)), column: None }
            ),
        ]
    );
}

#[test]
fn registration_points_at_the_attribute() {
    let models = tenancy::scoped_models().expect("no table is registered twice");
    let invoice = models.iter().find(|model| model.table() == "invoices").expect("invoices registered");
    assert!(invoice.file().ends_with("scoped_registry.rs"), "{}", invoice.file());
    assert_eq!(invoice.line(), invoice::ATTRIBUTE_LINE);
    assert_eq!(
        invoice.to_string(),
        format!("scoped_registry::invoice::Entity ({}:{})", invoice.file(), invoice.line())
    );
}

/// The registration carries the primary key the entity declares, with sea-orm's column
/// types (what `tenancydoctor --citus` checks a model by when its table is missing).
#[test]
fn registration_carries_the_declared_primary_key() {
    let models = tenancy::scoped_models().expect("no table is registered twice");
    let key = |table: &str| -> Vec<(&'static str, sea_orm::ColumnType)> {
        let model = models.iter().find(|model| model.table() == table).expect("registered");
        model.primary_key().into_iter().map(|column| (column.name, column.column_type)).collect()
    };
    assert_eq!(key("invoices"), [("id", sea_orm::ColumnType::Integer)]);
    assert_eq!(key("members"), [("id", sea_orm::ColumnType::Integer)]);
}

#[test]
fn scope_constants_match_the_registry() {
    assert_eq!(invoice::Entity::SCOPE, Scope::Table { column: "tenant_id" });
    assert_eq!(member::Entity::SCOPE, Scope::Table { column: "organisation" });
    assert_eq!(session::Entity::SCOPE, Scope::Cache { ttl: Some(Duration::from_secs(300)), column: None });
    assert_eq!(feature_flag::Entity::SCOPE, Scope::Cache { ttl: None, column: None });
}

#[test]
fn tenant_column_is_the_generated_column_variant() {
    assert!(matches!(invoice::Entity::tenant_column(), Some(invoice::Column::TenantId)));
    assert!(matches!(member::Entity::tenant_column(), Some(member::Column::OrgId)));
    assert!(matches!(audit_entry::Entity::tenant_column(), Some(audit_entry::Column::TenantId)));
    assert!(session::Entity::tenant_column().is_none());
    assert!(feature_flag::Entity::tenant_column().is_none());
}

/// The column name in `Scope::Table` is the SQL name sea-orm gives the column, whatever
/// renaming the model does.
#[test]
fn scope_column_is_the_sql_name_of_the_tenant_column() {
    fn sql_name<E: TenantScoped>() -> &'static str {
        E::tenant_column().expect("table-scoped").as_str()
    }
    fn scope_column<E: TenantScoped>() -> &'static str {
        match E::SCOPE {
            Scope::Table { column } => column,
            Scope::Cache { .. } => panic!("table-scoped"),
        }
    }
    assert_eq!(scope_column::<invoice::Entity>(), sql_name::<invoice::Entity>());
    assert_eq!(scope_column::<member::Entity>(), sql_name::<member::Entity>());
    assert_eq!(scope_column::<audit_entry::Entity>(), sql_name::<audit_entry::Entity>());
}
