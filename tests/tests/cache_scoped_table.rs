//! Cache-scoped models read through to a table, in table isolation: the table is shared
//! by every table tenant, so a model without a tenant column is refused for them, and a
//! model that names its column (`#[tenant_scoped(cache, column = "...")]`) gets the
//! table isolation of a table-scoped model — row-level security on PostgreSQL, statement
//! scoping on SQLite. Probed on both masters, on a budget of one connection, with the
//! other tenant's primary key.

use sea_orm::{ConnectionTrait, DbBackend, Set, Statement};
use tenancy::{Error, Tenancy, TenantConnection};
use tenancy_test_support::{PgMaster, TempDir, count, table_tenants};

/// A cache-scoped model read through to the `cached_sessions` table, which has a tenant
/// column.
mod session {
    use sea_orm::entity::prelude::*;

    #[tenancy::tenant_scoped(cache, ttl = 300, column = "tenant_id")]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    #[sea_orm(table_name = "cached_sessions")]
    pub(crate) struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub token: String,
        pub tenant_id: String,
        pub user_name: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A cache-scoped model read through to `cached_flags`, a table without a tenant column:
/// fine for database tenants, refused for table tenants.
mod flag {
    use sea_orm::entity::prelude::*;

    #[tenancy::tenant_scoped(cache)]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    #[sea_orm(table_name = "cached_flags")]
    pub(crate) struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub enabled: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The tables, created on the master as a migration would (`sql` in the master's dialect).
async fn create_tables(master: &sea_orm::DatabaseConnection) {
    master
        .execute_unprepared(
            "CREATE TABLE cached_sessions (token TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, user_name TEXT NOT NULL); \
             CREATE TABLE cached_flags (name TEXT PRIMARY KEY, enabled BOOLEAN NOT NULL)",
        )
        .await
        .expect("create tables");
}

/// Each tenant reads its own session through the cache; the other's token is not found,
/// neither from the database nor (afterwards) from the cache; an insert is stamped with
/// the tenant; the model without a column is refused.
async fn probe(tenancy: &Tenancy, master: &sea_orm::DatabaseConnection) {
    let [a, b]: [TenantConnection; 2] =
        table_tenants(tenancy, &(), false, &["rta", "rtb"]).await.try_into().expect("two tenants");
    let sessions_a = a.read_through::<session::Entity>().expect("a column: allowed");
    let sessions_b = b.read_through::<session::Entity>().expect("a column: allowed");

    // Inserts through each handle: the tenant is stamped by the isolation, not the caller.
    for (sessions, db, token) in [(&sessions_a, &a, "tok-a"), (&sessions_b, &b, "tok-b")] {
        let row = sessions
            .insert(session::ActiveModel {
                token: Set(token.to_owned()),
                tenant_id: Set(db.id().to_string()),
                user_name: Set(format!("user of {token}")),
            })
            .await
            .expect("insert through the read-through helper");
        assert_eq!(row.tenant_id, db.id().as_str());
    }

    // Each tenant finds its own row, twice (database, then cache), and never the other's.
    for _ in 0..2 {
        assert_eq!(sessions_a.find_by_id("tok-a").await.unwrap().map(|s| s.user_name), Some("user of tok-a".into()));
        assert_eq!(sessions_a.find_by_id("tok-b").await.unwrap(), None, "a reads b's session");
        assert_eq!(sessions_b.find_by_id("tok-a").await.unwrap(), None, "b reads a's session");
    }
    // Deleting the other's token through the helper deletes nothing.
    assert_eq!(sessions_a.delete_by_id("tok-b").await.unwrap(), 0);
    let backend = master.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => "SELECT COUNT(*) FROM cached_sessions WHERE tenant_id = $1",
        _ => "SELECT COUNT(*) FROM cached_sessions WHERE tenant_id = ?",
    };
    assert_eq!(count(master, sql, vec![b.id().as_str().into()]).await, 1, "b's row survives a's delete");
    assert_eq!(count(master, sql, vec![a.id().as_str().into()]).await, 1);

    // Without a tenant column the table is one table of all table tenants: refused.
    let err = a.read_through::<flag::Entity>().expect_err("a shared table behind a cache model");
    assert!(
        matches!(&err, Error::SharedCacheTable { table, tenant } if table == "cached_flags" && tenant == a.id().as_str())
    );
    let message = err.to_string();
    assert!(message.contains("cached_flags") && message.contains("column = \"tenant_id\""), "{message}");

    // The same statement on the same (single) connection afterwards is still scoped.
    let raw = Statement::from_string(backend, "SELECT COUNT(*) AS n FROM cached_sessions".to_owned());
    let seen = a.query_one_raw(raw).await.unwrap().unwrap().try_get_by_index::<i64>(0).unwrap();
    assert_eq!(seen, 1, "a raw count through a's handle sees a's row only");
}

#[tokio::test]
async fn cache_models_backed_by_a_table_are_scoped_on_a_sqlite_master() {
    let dir = TempDir::new();
    let tenancy = dir.sqlite_builder().tenant_connection_budget(1).connect().await.unwrap();
    create_tables(tenancy.master()).await;
    let master = tenancy.master().clone();
    probe(&tenancy, &master).await;
}

#[tokio::test]
async fn cache_models_backed_by_a_table_are_scoped_on_a_postgres_master() {
    let Some(pg) = PgMaster::create().await else { return };
    let dir = TempDir::new();
    let tenancy = pg.builder(&dir).tenant_connection_budget(1).connections_per_tenant_pool(1).connect().await.unwrap();
    create_tables(tenancy.master()).await;
    let report = tenancy::enable_row_security(tenancy.master()).await.expect("row security");
    assert!(report.secured.iter().any(|(table, column)| table == "cached_sessions" && column == "tenant_id"));
    assert!(!report.secured.iter().any(|(table, _)| table == "cached_flags"), "no column, nothing to secure");
    let superuser = pg.connect().await;
    probe(&tenancy, &superuser).await;
}
