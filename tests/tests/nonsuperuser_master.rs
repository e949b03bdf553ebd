//! A master database owned by an ordinary role (`LOGIN CREATEROLE`, no superuser, no
//! `BYPASSRLS`), as a managed PostgreSQL service gives: table and schema tenants are
//! created, migrated and isolated with either binding, row-level security is forced on
//! the tables that role owns, and its own connections see no tenant rows at all.

use crate::common;

use common::project_names as names;
use example_app::Migrator;
use example_app::entities::project;
use sea_orm::prelude::ChronoUtc;
use sea_orm::{ActiveModelTrait, ConnectionTrait, NotSet, Set};
use tenancy::{Isolation, NewTenant, Tenancy, TenantBinding, TenantConnection, TenantId};
use tenancy_migrate::MigrateOnCreate;
use tenancy_test_support::{PgMaster, TempDir, count, unique_name};

/// `url` with its user replaced by `user` (no password: the test server trusts loopback).
fn as_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{user}@{host}")
}

async fn add_project(db: &TenantConnection, name: &str) {
    project::ActiveModel {
        tenant_id: NotSet,
        name: Set(name.to_owned()),
        created_at: Set(ChronoUtc::now()),
        ..Default::default()
    }
    .insert(db)
    .await
    .expect("insert project");
}

async fn create(tenancy: &Tenancy, prefix: &str, isolation: Isolation) -> TenantId {
    let id: TenantId = unique_name(prefix).parse().expect("id");
    let new = NewTenant::new(id.clone(), id.to_string(), isolation).expect("a valid new tenant").migrate(true);
    tenancy.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.expect("create tenant as the owner");
    id
}

#[tokio::test]
async fn an_ordinary_owner_gets_the_same_isolation() {
    let Some(pg) = PgMaster::create().await else { return };
    let owner = unique_name("owner");
    pg.track_role(&owner);
    pg.admin
        .execute_unprepared(&format!(
            "CREATE ROLE \"{owner}\" LOGIN CREATEROLE NOSUPERUSER NOBYPASSRLS; \
             ALTER DATABASE \"{}\" OWNER TO \"{owner}\"",
            pg.name
        ))
        .await
        .expect("an ordinary owner");
    let dir = TempDir::new();
    let url = as_user(&pg.url, &owner);
    let connect = |binding| {
        Tenancy::builder(url.clone()).secret_key_file(dir.path().join("key")).tenant_binding(binding).connect()
    };
    let tenancy = connect(TenantBinding::TenantPools).await.expect("connect as the owner");
    let a = create(&tenancy, "acme", Isolation::Table).await;
    let b = create(&tenancy, "globex", Isolation::Table).await;
    let s = create(&tenancy, "initech", Isolation::Schema).await;
    let shared = connect(TenantBinding::SharedTransactions).await.expect("connect as the owner");

    for (binding, tenancy) in [("tenant pools", &tenancy), ("shared transactions", &shared)] {
        let (ha, hb, hs) =
            (tenancy.tenant(&a).await.unwrap(), tenancy.tenant(&b).await.unwrap(), tenancy.tenant(&s).await.unwrap());
        add_project(&ha, &format!("a via {binding}")).await;
        add_project(&hb, &format!("b via {binding}")).await;
        project::ActiveModel {
            tenant_id: Set(s.to_string()),
            name: Set(format!("s via {binding}")),
            created_at: Set(ChronoUtc::now()),
            ..Default::default()
        }
        .insert(&hs)
        .await
        .expect("insert into the schema tenant");
    }
    for tenancy in [&tenancy, &shared] {
        let (ha, hb, hs) =
            (tenancy.tenant(&a).await.unwrap(), tenancy.tenant(&b).await.unwrap(), tenancy.tenant(&s).await.unwrap());
        assert_eq!(names(&ha).await, ["a via shared transactions", "a via tenant pools"]);
        assert_eq!(names(&hb).await, ["b via shared transactions", "b via tenant pools"]);
        assert_eq!(names(&hs).await, ["s via shared transactions", "s via tenant pools"]);
    }

    // The owner owns the secured tables, is subject to them (forced), and binds nothing:
    // its own connections see no tenant's rows.
    let superuser = pg.connect().await;
    let owned = "SELECT COUNT(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner \
                 WHERE r.rolname = $1 AND c.relname IN ('projects', 'tasks', 'comments') \
                 AND c.relrowsecurity AND c.relforcerowsecurity AND c.relnamespace = 'public'::regnamespace";
    assert_eq!(count(&superuser, owned, vec![owner.clone().into()]).await, 3);
    assert_eq!(count(tenancy.master(), "SELECT COUNT(*) FROM projects", vec![]).await, 0);
    assert_eq!(count(&superuser, "SELECT COUNT(*) FROM public.projects", vec![]).await, 4);
    let unprivileged = "SELECT COUNT(*) FROM pg_roles WHERE (rolname = $1 OR rolname LIKE 'tnt\\_%' OR rolname = $2) \
                        AND (rolsuper OR rolbypassrls)";
    let app_role = tenancy.app_role().await.unwrap().to_owned();
    assert_eq!(count(&superuser, unprivileged, vec![owner.into(), app_role.into()]).await, 0);
}
