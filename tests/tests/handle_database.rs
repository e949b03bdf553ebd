//! Tenant handles for database and cache isolation: sea-orm code runs unchanged against
//! `&handle`, each tenant sees only its own database, the per-tenant pools stay within
//! the connection budget, and the handles that cannot work say why.

use crate::common;

use common::project_names as names;
use example_app::Migrator;
use example_app::entities::{project, task};
use futures_util::StreamExt;
use sea_orm::prelude::{ChronoUtc, Expr};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, ModelTrait, PaginatorTrait,
    QueryFilter, QueryOrder, Set, Statement, TransactionError, TransactionTrait,
};
use tenancy::secrets::Password;
use tenancy::{Error, Isolation, NewDatabase, NewTenant, Tenancy, TenantConnection, TenantId};
use tenancy_migrate::MigrateOnCreate;
use tenancy_test_support::{PgMaster, TempDir, count, unique_name, with_database};

struct Ctx {
    pg: PgMaster,
    tenancy: Tenancy,
    _dir: TempDir,
}

async fn ctx(budget: u32, per_pool: u32) -> Option<Ctx> {
    let pg = PgMaster::create().await?;
    let dir = TempDir::new();
    let tenancy = Tenancy::builder(pg.url.clone())
        .secret_key_file(dir.path().join("key"))
        .tenant_connection_budget(budget)
        .connections_per_tenant_pool(per_pool)
        .connect()
        .await
        .expect("connect master");
    Some(Ctx { pg, tenancy, _dir: dir })
}

impl Ctx {
    /// Creates a database tenant (migrated when `migrate`) and returns its id and database.
    async fn database_tenant(&self, prefix: &str, migrate: bool) -> (TenantId, String) {
        let id: TenantId = unique_name(prefix).parse().expect("valid id");
        let db = unique_name("db");
        let user = unique_name("u");
        self.pg.track_database(&db);
        self.pg.track_role(&user);
        let new = NewTenant::new(id.clone(), format!("{id} Inc."), Isolation::Database)
            .expect("a valid new tenant")
            .database(
                NewDatabase::create(db.clone()).login(user, Password::new("pa ss'word")).server("127.0.0.1", 5432),
            )
            .migrate(migrate);
        self.tenancy.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.expect("create database tenant");
        (id, db)
    }

    /// Superuser count of `projects` rows in a tenant database.
    async fn projects_in(&self, db: &str) -> i64 {
        let conn = sea_orm::Database::connect(with_database(&self.pg.url, db)).await.expect("superuser connects");
        let n = count(&conn, "SELECT COUNT(*) FROM projects", vec![]).await;
        conn.close().await.expect("close");
        n
    }

    /// Server connections to any of `databases`, once at most `limit` or after a second.
    ///
    /// The grace is for the server, not for `tenancy`: a backend whose client has closed
    /// the connection leaves `pg_stat_activity` a moment later, as its process exits, and
    /// the next pool may be open by then. A pool really over the budget would stay (its
    /// connections idle for a minute before closing), so it still fails the check.
    async fn connections_settled(&self, databases: &[String], limit: i64) -> i64 {
        let mut open = self.connections_to(databases).await;
        for _ in 0..40 {
            if open <= limit {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            open = self.connections_to(databases).await;
        }
        open
    }

    /// Server connections open to any of `databases` right now.
    async fn connections_to(&self, databases: &[String]) -> i64 {
        let list = databases.iter().map(|db| format!("'{db}'")).collect::<Vec<_>>().join(", ");
        count(&self.pg.admin, &format!("SELECT COUNT(*) FROM pg_stat_activity WHERE datname IN ({list})"), vec![]).await
    }
}

async fn add_task(db: &TenantConnection, project: &project::Model, title: &str) {
    task::ActiveModel {
        tenant_id: Set(db.id().to_string()),
        project_id: Set(project.id),
        title: Set(title.to_owned()),
        done: Set(false),
        created_at: Set(ChronoUtc::now()),
        ..Default::default()
    }
    .insert(db)
    .await
    .expect("insert task");
}

#[tokio::test]
async fn each_database_tenant_sees_only_its_own_rows() {
    let Some(ctx) = ctx(20, 2).await else { return };
    let (a_id, a_db) = ctx.database_tenant("acme", true).await;
    let (b_id, b_db) = ctx.database_tenant("globex", true).await;
    let a = ctx.tenancy.tenant(&a_id).await.expect("handle a");
    let b = ctx.tenancy.tenant(&b_id).await.expect("handle b");
    assert_eq!(a.id(), &a_id);
    assert_eq!(a.isolation(), Isolation::Database);
    assert_eq!(a.get_database_backend(), DbBackend::Postgres);
    let debug = format!("{a:?}");
    assert!(debug.contains(a_id.as_str()) && !debug.contains("pa ss") && !debug.contains("v1:"), "{debug}");

    // ActiveModel inserts through each handle.
    let alpha = common::add_project(&a, Some(a.id().as_str()), "alpha").await;
    common::add_project(&a, Some(a.id().as_str()), "beta").await;
    common::add_project(&a, Some(a.id().as_str()), "gamma").await;
    let one = common::add_project(&b, Some(b.id().as_str()), "one").await;
    common::add_project(&b, Some(b.id().as_str()), "two").await;
    add_task(&a, &alpha, "write spec").await;
    add_task(&a, &alpha, "review spec").await;
    add_task(&b, &one, "unrelated").await;

    // find, count, filters.
    assert_eq!(names(&a).await, ["alpha", "beta", "gamma"]);
    assert_eq!(names(&b).await, ["one", "two"]);
    assert_eq!(project::Entity::find().count(&a).await.unwrap(), 3);
    assert_eq!(project::Entity::find().count(&b).await.unwrap(), 2);
    let filtered = project::Entity::find().filter(project::Column::Name.starts_with("g")).all(&a).await.unwrap();
    assert_eq!(filtered.len(), 1);
    assert!(project::Entity::find().filter(project::Column::Name.eq("alpha")).one(&b).await.unwrap().is_none());
    assert!(
        project::Entity::find().filter(project::Column::TenantId.eq(b_id.as_str())).all(&a).await.unwrap().is_empty()
    );

    // Relations.
    let with_tasks = project::Entity::find()
        .find_with_related(task::Entity)
        .order_by_asc(project::Column::Name)
        .all(&a)
        .await
        .unwrap();
    assert_eq!(with_tasks.len(), 3);
    assert_eq!(with_tasks[0].1.len(), 2);
    assert_eq!(alpha.find_related(task::Entity).count(&a).await.unwrap(), 2);
    assert_eq!(task::Entity::find().count(&b).await.unwrap(), 1);

    // update_many / delete_many touch only the handle's tenant.
    let updated = project::Entity::update_many()
        .col_expr(project::Column::Name, Expr::cust("upper(name)"))
        .exec(&a)
        .await
        .unwrap();
    assert_eq!(updated.rows_affected, 3);
    assert_eq!(names(&a).await, ["ALPHA", "BETA", "GAMMA"]);
    assert_eq!(names(&b).await, ["one", "two"]);
    let deleted = project::Entity::delete_many().filter(project::Column::Name.eq("BETA")).exec(&a).await.unwrap();
    assert_eq!(deleted.rows_affected, 1);
    assert_eq!(
        project::Entity::delete_many().filter(project::Column::Name.eq("BETA")).exec(&b).await.unwrap().rows_affected,
        0
    );

    // Transactions: commit keeps, rollback (explicit and by error) discards.
    let txn = b.begin().await.unwrap();
    project::ActiveModel {
        tenant_id: Set(b_id.to_string()),
        name: Set("three".into()),
        created_at: Set(ChronoUtc::now()),
        ..Default::default()
    }
    .insert(&txn)
    .await
    .unwrap();
    assert_eq!(project::Entity::find().count(&txn).await.unwrap(), 3);
    txn.commit().await.unwrap();
    let txn = b.begin().await.unwrap();
    project::Entity::delete_many().exec(&txn).await.unwrap();
    txn.rollback().await.unwrap();
    assert_eq!(project::Entity::find().count(&b).await.unwrap(), 3);
    let failed: Result<(), TransactionError<DbErr>> = a
        .transaction(|txn| {
            Box::pin(async move {
                project::Entity::delete_many().exec(txn).await?;
                Err(DbErr::Custom("changed my mind".into()))
            })
        })
        .await;
    assert!(matches!(failed, Err(TransactionError::Transaction(_))), "{failed:?}");
    assert_eq!(project::Entity::find().count(&a).await.unwrap(), 2);
    let renamed = a
        .transaction::<_, u64, DbErr>(|txn| {
            Box::pin(async move {
                let res = project::Entity::update_many()
                    .col_expr(project::Column::Name, Expr::cust("lower(name)"))
                    .exec(txn)
                    .await?;
                Ok(res.rows_affected)
            })
        })
        .await
        .unwrap();
    assert_eq!(renamed, 2);
    assert_eq!(names(&a).await, ["alpha", "gamma"]);

    // Streams.
    let mut stream = project::Entity::find().order_by_asc(project::Column::Name).stream(&b).await.unwrap();
    let mut streamed = Vec::new();
    while let Some(row) = stream.next().await {
        streamed.push(row.unwrap().name);
    }
    drop(stream);
    assert_eq!(streamed, ["one", "three", "two"]);

    // Raw statements.
    let row = a
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT current_database()::text, current_user::text",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get_by_index::<String>(0).unwrap(), a_db);
    b.execute_unprepared("INSERT INTO projects (tenant_id, name, created_at) VALUES ('x', 'raw', now())")
        .await
        .unwrap();
    let rows = b
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT name FROM projects WHERE name = $1",
            ["raw".into()],
        ))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert!(
        a.query_all_raw(Statement::from_string(DbBackend::Postgres, "SELECT 1 FROM projects WHERE name = 'raw'"))
            .await
            .unwrap()
            .is_empty()
    );

    // The superuser agrees on what is where.
    assert_eq!(ctx.projects_in(&a_db).await, 2);
    assert_eq!(ctx.projects_in(&b_db).await, 4);
}

#[tokio::test]
async fn tenant_pools_stay_within_the_connection_budget() {
    const BUDGET: i64 = 4;
    let Some(ctx) = ctx(BUDGET as u32, 1).await else { return };
    // Created concurrently: provisioning eight databases one by one takes seconds.
    let tenants = futures_util::future::join_all((0..8).map(|_| ctx.database_tenant("busy", false))).await;
    let databases: Vec<String> = tenants.iter().map(|(_, db)| db.clone()).collect();
    // Handles made once: the second lap finds most pools evicted, and the same handles
    // reopen them transparently.
    let mut handles = Vec::new();
    for (id, _) in &tenants {
        handles.push(ctx.tenancy.tenant(id).await.expect("handle"));
    }
    assert_eq!(ctx.connections_to(&databases).await, 0, "handles open no connection before use");
    for lap in 0..2 {
        for (handle, (_, db)) in handles.iter().zip(&tenants) {
            let row = handle
                .query_one_raw(Statement::from_string(DbBackend::Postgres, "SELECT current_database()::text"))
                .await
                .unwrap_or_else(|err| panic!("lap {lap}, {db}: {err}"))
                .unwrap();
            assert_eq!(&row.try_get_by_index::<String>(0).unwrap(), db);
            let open = ctx.connections_settled(&databases, BUDGET).await;
            assert!(open <= BUDGET, "lap {lap}, after {db}: {open} connections, budget {BUDGET}");
            assert_eq!(ctx.connections_to(std::slice::from_ref(db)).await, 1, "{db}");
        }
    }
    assert_eq!(ctx.connections_to(&databases).await, BUDGET);

    // All at once, twice the tenants the budget holds: the openers queue for the budget
    // while evicted pools close, and every query gets through (none waits for permits
    // that nobody frees).
    for round in 0..2 {
        let queries = handles.iter().map(|handle| handle.execute_unprepared("SELECT pg_sleep(0.05)"));
        for result in futures_util::future::join_all(queries).await {
            result.unwrap_or_else(|err| panic!("round {round} under contention: {err}"));
        }
        let open = ctx.connections_settled(&databases, BUDGET).await;
        assert!(open <= BUDGET, "round {round}: {open} connections, budget {BUDGET}");
    }
}

#[tokio::test]
async fn sqlite_database_file_tenants_work_through_the_handle() {
    let dir = TempDir::new();
    let tenancy = Tenancy::builder(dir.sqlite_master_url())
        .secret_key_file(dir.path().join("key"))
        .tenant_connection_budget(2)
        .connections_per_tenant_pool(1)
        .connect()
        .await
        .expect("connect master");
    let mut handles = Vec::new();
    for name in ["acme", "globex", "initech"] {
        let new = NewTenant::new(name.parse::<tenancy::TenantId>().unwrap(), name.to_owned(), Isolation::Database)
            .expect("a valid new tenant")
            .database(NewDatabase::create(format!("{name}_db")))
            .migrate(true);
        tenancy.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.expect("create");
        handles.push(tenancy.tenant(name).await.expect("handle"));
    }
    assert_eq!(handles[0].get_database_backend(), DbBackend::Sqlite);
    // Three tenants, room for two pools: every lap evicts and reopens.
    for lap in 0..2 {
        for (i, handle) in handles.iter().enumerate() {
            common::add_project(handle, Some(handle.id().as_str()), &format!("{}-{lap}", handle.id())).await;
            assert_eq!(project::Entity::find().count(handle).await.unwrap(), lap + 1, "tenant {i}");
        }
    }
    assert_eq!(names(&handles[1]).await, ["globex-0", "globex-1"]);
    let txn = handles[2].begin().await.unwrap();
    project::Entity::delete_many().exec(&txn).await.unwrap();
    txn.rollback().await.unwrap();
    let mut stream = project::Entity::find().stream(&handles[2]).await.unwrap();
    let mut streamed = 0;
    while let Some(row) = stream.next().await {
        assert!(row.unwrap().name.starts_with("initech-"));
        streamed += 1;
    }
    assert_eq!(streamed, 2);
}

#[tokio::test]
async fn cache_schema_table_unready_and_unknown_tenants_are_refused_clearly() {
    let Some(ctx) = ctx(20, 2).await else { return };
    let new = |id: &str, isolation| NewTenant::new(id, id, isolation).expect("a valid new tenant");
    let cache_id = unique_name("sessions");
    ctx.tenancy.create_tenant(new(&cache_id, Isolation::Cache), &()).await.unwrap();
    let cache = ctx.tenancy.tenant(cache_id.as_str()).await.expect("cache handle");
    assert_eq!(cache.isolation(), Isolation::Cache);
    let expected = format!("tenant '{cache_id}' uses cache isolation and has no relational storage");
    let err = project::Entity::find().all(&cache).await.unwrap_err();
    assert!(matches!(&err, DbErr::Custom(message) if *message == expected), "{err}");
    assert!(cache.begin().await.unwrap_err().to_string().contains(&expected));
    assert!(cache.execute_unprepared("SELECT 1").await.unwrap_err().to_string().contains(&expected));
    assert!(project::Entity::find().stream(&cache).await.err().unwrap().to_string().contains(&expected));

    // Schema and table tenants get a handle on PostgreSQL (see handle_schema.rs and
    // handle_table.rs).
    let schema_id = unique_name("schemy");
    ctx.tenancy.create_tenant(new(&schema_id, Isolation::Schema), &()).await.unwrap();
    let table_id = unique_name("tably");
    ctx.tenancy.create_tenant(new(&table_id, Isolation::Table), &()).await.unwrap();
    assert_eq!(ctx.tenancy.tenant(schema_id.as_str()).await.unwrap().isolation(), Isolation::Schema);
    assert_eq!(ctx.tenancy.tenant(table_id.as_str()).await.unwrap().isolation(), Isolation::Table);

    // A tenant still being provisioned is not served.
    let (busy, _) = ctx.database_tenant("half", false).await;
    ctx.tenancy
        .master()
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE tenancy_tenants SET status = 'provisioning' WHERE tenant_id = $1",
            [busy.as_str().into()],
        ))
        .await
        .unwrap();
    let answer = common::until_registry_follows(&ctx.tenancy, busy.as_str(), Result::is_err).await;
    let err = answer.unwrap_err();
    assert!(matches!(err, Error::TenantNotReady { .. }), "{err}");
    assert!(err.to_string().contains("is not ready (status 'provisioning')"), "{err}");

    let err = ctx.tenancy.tenant("nobody_here").await.unwrap_err();
    assert!(matches!(err, Error::TenantNotFound { .. }), "{err}");
}
