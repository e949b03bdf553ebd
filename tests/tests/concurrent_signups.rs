//! Tenants created concurrently (different ids) all succeed, in every mode: eight creators
//! at once on one master, their catalogs checked afterwards, nothing half-made and no
//! operation left in the journal. A schema or table tenant's login role is granted
//! `CONNECT` on the master database, which rewrites its one `pg_database` row; done inside
//! the long provisioning transaction, two creators collided with "tuple concurrently
//! updated".

use example_app::Migrator;
use futures_util::future::join_all;
use tenancy::{Isolation, NewTenant, TenantId, TenantStatus};
use tenancy_migrate::MigrateOnCreate;
use tenancy_test_support::{PgMaster, TempDir, count, unique_name};

const CREATORS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_creators_of_each_mode_all_succeed() {
    let Some(pg) = PgMaster::create().await else { return };
    let dir = TempDir::new();
    let tenancy = pg.tenancy(&dir).await;
    let master = pg.connect().await;
    for isolation in [Isolation::Schema, Isolation::Table, Isolation::Database, Isolation::Cache] {
        let ids: Vec<TenantId> =
            (0..CREATORS).map(|n| unique_name(&format!("c{n}")).parse().expect("a valid id")).collect();
        let creators = ids.iter().map(|id| {
            let tenancy = tenancy.clone();
            let mut new = NewTenant::new(id.clone(), "Concurrent", isolation).expect("a new tenant").migrate(true);
            if isolation == Isolation::Database {
                new = new.database(pg.new_database("pw"));
            }
            tokio::spawn(async move { tenancy.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await })
        });
        for (id, created) in ids.iter().zip(join_all(creators).await) {
            created.expect("the creator's task").unwrap_or_else(|err| panic!("{isolation} tenant {id}: {err}"));
        }
        for id in &ids {
            let tenant = tenancy.get_tenant(id).await.expect("registered");
            assert_eq!(tenant.status(), TenantStatus::Ready, "{id}");
            match isolation {
                Isolation::Schema => {
                    let sql = "SELECT COUNT(*) FROM pg_tables WHERE schemaname = $1 AND tablename = 'projects'";
                    assert_eq!(count(&master, sql, vec![id.as_str().into()]).await, 1, "{id}'s schema");
                }
                Isolation::Table | Isolation::Database | Isolation::Cache => {}
            }
            if let Some(login) = tenant.placement().login() {
                let sql = "SELECT COUNT(*) FROM pg_roles WHERE rolname = $1 AND rolcanlogin \
                           AND has_database_privilege(rolname, current_database(), 'CONNECT')";
                assert_eq!(count(&master, sql, vec![login.user.as_str().into()]).await, 1, "{id}'s role");
            }
            // Served: its own handle answers.
            if isolation != Isolation::Cache {
                let handle = tenancy.tenant(id).await.expect("a handle");
                sea_orm::ConnectionTrait::execute_unprepared(&handle, "SELECT count(*) FROM projects")
                    .await
                    .unwrap_or_else(|err| panic!("{id}: {err}"));
            }
        }
        assert!(tenancy.unfinished_operations().await.expect("the journal").is_empty(), "{isolation}");
    }
    let left = "SELECT COUNT(*) FROM tenancy_tenants WHERE status <> 'ready'";
    assert_eq!(count(&master, left, vec![]).await, 0, "nothing half-made");
}
