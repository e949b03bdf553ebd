//! Tenant handle benchmark: plain sea-orm against the tenant handle, per isolation mode
//! (database, schema and table; schema and table with both bindings: the tenant's own
//! pool and shared master transactions). Run with
//! `cargo bench -p tenancy-tests --bench handles` (PostgreSQL on 127.0.0.1:5432 or
//! `TENANCY_TEST_POSTGRES_URL`).
//!
//! Both sides talk to the same tenant database as the same role; the plain side is a
//! `DatabaseConnection` opened directly, the handle side goes through `Tenancy::tenant`.
//! Operations alternate between the two sides so drift affects both alike; medians are
//! compared.

#![allow(missing_docs, clippy::print_stdout, reason = "a benchmark binary")]

use std::time::{Duration, Instant};

use example_app::Migrator;
use example_app::entities::project;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait,
};
use tenancy::secrets::Password;
use tenancy::{Isolation, NewDatabase, NewTenant, Tenancy, TenantBinding, TenantConnection};
use tenancy_migrate::MigrateOnCreate;
use tenancy_test_support::{PgMaster, TempDir, unique_name};

const ROUNDS: usize = 2_000;

async fn pk_read<C: ConnectionTrait>(db: &C, id: i32) {
    project::Entity::find_by_id(id).one(db).await.expect("pk read").expect("row");
}

async fn filtered_read<C: ConnectionTrait>(db: &C, id: i32) {
    let rows = project::Entity::find()
        .filter(project::Column::Id.gte(id))
        .order_by_asc(project::Column::Id)
        .limit(20)
        .all(db)
        .await
        .expect("filtered read");
    assert_eq!(rows.len(), 20);
}

async fn insert<C: ConnectionTrait>(db: &C, i: usize, tenant: &str) {
    project::ActiveModel {
        tenant_id: Set(tenant.to_owned()),
        name: Set(format!("inserted {i}")),
        created_at: Set(sea_orm::prelude::ChronoUtc::now()),
        ..Default::default()
    }
    .insert(db)
    .await
    .expect("insert");
}

async fn transaction<C: TransactionTrait>(db: &C, id: i32) {
    let txn = db.begin().await.expect("begin");
    for k in 0..10 {
        pk_read(&txn, id + k).await;
    }
    sea_orm::TransactionSession::commit(txn).await.expect("commit");
}

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e6
}

async fn measure<P, H, FutP, FutH>(name: &str, mut plain: P, mut handle: H)
where
    P: FnMut(usize) -> FutP,
    H: FnMut(usize) -> FutH,
    FutP: std::future::Future<Output = ()>,
    FutH: std::future::Future<Output = ()>,
{
    let (mut plain_samples, mut handle_samples) = (Vec::with_capacity(ROUNDS), Vec::with_capacity(ROUNDS));
    for i in 0..ROUNDS {
        let started = Instant::now();
        plain(i).await;
        plain_samples.push(started.elapsed());
        let started = Instant::now();
        handle(i).await;
        handle_samples.push(started.elapsed());
    }
    let (p, h) = (median(plain_samples), median(handle_samples));
    println!("  {name:<28} plain {p:>8.1} µs   handle {h:>8.1} µs   ratio {:.3}", h / p);
}

/// Runs the four operations against `base` (plain sea-orm) and `handle`.
async fn compare(base: &DatabaseConnection, handle: &TenantConnection, first_id: i32) {
    let tenant = handle.id().to_string();
    measure(
        "primary-key read",
        |i| pk_read(base, first_id + (i % 900) as i32),
        |i| pk_read(handle, first_id + (i % 900) as i32),
    )
    .await;
    measure(
        "20-row filtered read",
        |i| filtered_read(base, first_id + (i % 900) as i32),
        |i| filtered_read(handle, first_id + (i % 900) as i32),
    )
    .await;
    measure("insert", |i| insert(base, i, &tenant), |i| insert(handle, i, &tenant)).await;
    measure(
        "10-statement transaction",
        |i| transaction(base, first_id + (i % 800) as i32),
        |i| transaction(handle, first_id + (i % 800) as i32),
    )
    .await;
}

/// A plain pool with the handle's pool settings (ping only after 30 s idle).
async fn plain_pool(url: String, search_path: Option<&str>) -> DatabaseConnection {
    let mut options = sea_orm::ConnectOptions::new(url);
    options.test_before_acquire_if_idle_for(Duration::from_secs(30)).sqlx_logging(false);
    if let Some(schema) = search_path {
        options.set_schema_search_path(tenancy::sql::quote_ident(schema));
    }
    sea_orm::Database::connect(options).await.expect("plain pool")
}

async fn new_tenant(tenancy: &Tenancy, id: &str, isolation: Isolation, database: Option<NewDatabase>) {
    let new = NewTenant::new(id, id, isolation).expect("a valid new tenant").database(database).migrate(true);
    tenancy.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.expect("create tenant");
}

#[tokio::main]
async fn main() {
    let Some(pg) = PgMaster::create().await else {
        eprintln!("PostgreSQL is not reachable; nothing measured");
        std::process::exit(1);
    };
    let dir = TempDir::new();
    let tenancy = Tenancy::builder(pg.url.clone()).secret_key_file(dir.path().join("key")).connect().await.unwrap();
    let shared = Tenancy::builder(pg.url.clone())
        .secret_key_file(dir.path().join("key"))
        .tenant_binding(TenantBinding::SharedTransactions)
        .connect()
        .await
        .unwrap();
    let (db, user) = (unique_name("bench_db"), unique_name("bench_u"));
    pg.track_database(&db);
    pg.track_role(&user);
    let database =
        NewDatabase::create(db.clone()).login(user.clone(), Password::new("bench-pw")).server("127.0.0.1", 5432);
    new_tenant(&tenancy, "bench", Isolation::Database, Some(database)).await;
    new_tenant(&tenancy, "bench_schema", Isolation::Schema, None).await;
    new_tenant(&tenancy, "bench_table", Isolation::Table, None).await;

    println!("tenant handle benchmark, {ROUNDS} rounds each, medians; plain pools use the handle's pool options");
    // Database isolation: plain = a pool on the tenant's database as its role.
    let handle = tenancy.tenant("bench").await.unwrap();
    let plain = plain_pool(format!("postgres://{user}:bench-pw@127.0.0.1:5432/{db}"), None).await;
    for i in 0..1_000 {
        insert(&plain, i, "seed").await;
    }
    println!(" database isolation (target <= 1.05):");
    compare(&plain, &handle, 1).await;
    let _ = plain.close().await;

    // Schema isolation: plain = a pool whose connections have the tenant's search_path.
    let plain = plain_pool(pg.url.clone(), Some("bench_schema")).await;
    for i in 0..1_000 {
        insert(&plain, i, "seed").await;
    }
    for (binding, tenancy) in [("tenant pools", &tenancy), ("shared transactions", &shared)] {
        let handle = tenancy.tenant("bench_schema").await.unwrap();
        println!(" schema isolation, {binding} (target <= 1.3 single statements, <= 1.1 in a transaction):");
        compare(&plain, &handle, 1).await;
    }
    let _ = plain.close().await;

    // Table isolation: plain = the shared tables on the master, no binding (the master
    // user bypasses row security), rows stamped with the tenant by hand.
    let handle = tenancy.tenant("bench_table").await.unwrap();
    let plain = plain_pool(pg.url.clone(), None).await;
    for i in 0..1_000 {
        insert(&handle, i, "bench_table").await;
    }
    let first: i32 = {
        let row = plain
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SELECT MIN(id) FROM projects".to_owned(),
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get_by_index(0).unwrap()
    };
    // Statistics, as a live database has them (the planner's estimate of the policy's
    // selectivity otherwise defaults to a guess).
    plain.execute_unprepared("ANALYZE projects").await.unwrap();
    println!(" table isolation, tenant pools (target <= 1.3 single statements, <= 1.1 in a transaction):");
    compare(&plain, &handle, first).await;
    let handle = shared.tenant("bench_table").await.unwrap();
    println!(" table isolation, shared transactions:");
    compare(&plain, &handle, first).await;
    let _ = plain.close().await;
}
