//! The tenant context: `tenancy::scope`, `tenancy::current` and `tenancy::spawn`.

use example_app::Migrator;
use example_app::entities::project;
use sea_orm::prelude::ChronoUtc;
use sea_orm::{ActiveModelTrait, EntityTrait, QueryOrder, Set};
use tenancy::{Error, Isolation, NewTenant, Tenancy, TenantConnection, TenantId};
use tenancy_migrate::MigrateOnCreate;
use tenancy_test_support::{PgMaster, TempDir, unique_name};

struct Ctx {
    pg: PgMaster,
    tenancy: Tenancy,
    _dir: TempDir,
}

async fn ctx() -> Option<Ctx> {
    let pg = PgMaster::create().await?;
    let dir = TempDir::new();
    let tenancy = pg.tenancy(&dir).await;
    Some(Ctx { pg, tenancy, _dir: dir })
}

impl Ctx {
    /// A tenant's handle: cache isolation (no storage to create) unless `database`.
    async fn tenant(&self, prefix: &str, database: bool) -> TenantConnection {
        let id: TenantId = unique_name(prefix).parse().expect("valid id");
        let new_database = database.then(|| self.pg.new_database("secret"));
        let new =
            NewTenant::new(id.clone(), id.to_string(), if database { Isolation::Database } else { Isolation::Cache })
                .expect("a valid new tenant")
                .database(new_database)
                .migrate(database);
        self.tenancy.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.expect("create tenant");
        self.tenancy.tenant(&id).await.expect("handle")
    }
}

/// Deep inside "the request": no handle passed in, only the context.
async fn current_id() -> String {
    tokio::task::yield_now().await;
    tenancy::current().expect("a tenant in scope").id().to_string()
}

async fn layer_one() -> (String, String) {
    let outer = current_id().await;
    let inner = layer_two().await;
    (outer, inner)
}

async fn layer_two() -> String {
    current_id().await
}

#[tokio::test]
async fn current_returns_the_scoped_tenant_in_nested_calls() {
    let Some(ctx) = ctx().await else { return };
    let acme = ctx.tenant("acme", false).await;
    let globex = ctx.tenant("globex", false).await;
    let (acme_id, globex_id) = (acme.id().to_string(), globex.id().to_string());

    let seen = tenancy::scope(acme, async {
        let (outer, inner) = layer_one().await;
        // The innermost scope wins, and the outer tenant is back after it.
        let nested = tenancy::scope(globex, layer_two()).await;
        let after = current_id().await;
        (outer, inner, nested, after)
    })
    .await;
    assert_eq!(seen, (acme_id.clone(), acme_id.clone(), globex_id, acme_id));
    // The module path works too.
    assert!(tenancy::context::current().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_scopes_each_see_their_own_data() {
    let Some(ctx) = ctx().await else { return };
    let acme = ctx.tenant("acme", true).await;
    let globex = ctx.tenant("globex", true).await;

    async fn work(rounds: usize) -> (String, Vec<String>) {
        for round in 0..rounds {
            let db = tenancy::current().expect("tenant in scope");
            project::ActiveModel {
                tenant_id: Set(db.id().to_string()),
                name: Set(format!("{}-{round}", db.id())),
                created_at: Set(ChronoUtc::now()),
                ..Default::default()
            }
            .insert(&db)
            .await
            .expect("insert");
            tokio::task::yield_now().await;
        }
        let db = tenancy::current().expect("tenant in scope");
        let names = project::Entity::find()
            .order_by_asc(project::Column::Id)
            .all(&db)
            .await
            .expect("find")
            .into_iter()
            .map(|p| p.name)
            .collect();
        (db.id().to_string(), names)
    }

    // Two tasks on the multi-threaded runtime, interleaving their statements.
    let a = tokio::spawn(tenancy::scope(acme.clone(), work(4)));
    let b = tokio::spawn(tenancy::scope(globex.clone(), work(3)));
    let (a_id, a_names) = a.await.unwrap();
    let (b_id, b_names) = b.await.unwrap();
    assert_eq!(a_id, acme.id().as_str());
    assert_eq!(b_id, globex.id().as_str());
    assert_eq!(a_names, (0..4).map(|i| format!("{a_id}-{i}")).collect::<Vec<_>>());
    assert_eq!(b_names, (0..3).map(|i| format!("{b_id}-{i}")).collect::<Vec<_>>());

    // Within one task too: `join!` polls both scopes on the same task.
    let (x, y) = tokio::join!(tenancy::scope(acme, work(0)), tenancy::scope(globex, work(0)));
    assert_eq!((x.1.len(), y.1.len()), (4, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_carries_the_tenant_and_tokio_spawn_does_not() {
    let Some(ctx) = ctx().await else { return };
    let acme = ctx.tenant("acme", false).await;
    let acme_id = acme.id().to_string();

    let (carried, plain) = tenancy::scope(acme, async {
        let carried = tenancy::spawn(async { current_id().await }).expect("tenant in scope").await.unwrap();
        // tokio's task-locals are not inherited by spawned tasks: this is why
        // `tenancy::spawn` exists.
        let plain = tokio::spawn(async { tenancy::current().map(|db| db.id().to_string()) }).await.unwrap();
        (carried, plain)
    })
    .await;
    assert_eq!(carried, acme_id);
    assert!(matches!(plain, Err(Error::NoTenantInScope)), "{plain:?}");
}

#[tokio::test]
async fn no_tenant_in_scope_is_an_error() {
    let err = tenancy::current().unwrap_err();
    assert!(matches!(err, Error::NoTenantInScope));
    assert!(err.to_string().contains("wrap the call in `tenancy::scope"), "{err}");
    let err = tenancy::spawn(async {}).unwrap_err();
    assert!(matches!(err, Error::NoTenantInScope), "{err}");
    assert!(tenancy::context::spawn(async {}).is_err());
}
