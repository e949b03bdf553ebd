//! Fleet benchmark (issue: per-tenant migrations). Run with
//! `cargo bench -p tenancy-tests --bench fleet` (PostgreSQL on 127.0.0.1:5432, or
//! `TENANCY_TEST_POSTGRES_URL`); `TENANCY_BENCH_N=100,1000` picks the fleet sizes.
//!
//! For each N, in one process against a fresh master database:
//! 1. create N schema tenants with the example app's migrations through `tenancy`,
//!    interleaved with the floor: the same migrations' DDL sent through a plain
//!    connection, one transaction per schema (no registry, no bookkeeping);
//! 2. migrate one new migration across all tenants with `--jobs 2`, against the floor
//!    of that DDL sent one transaction per schema;
//! 3. a fleet run with nothing pending;
//! 4. peak RSS of the process for that N (the high-water mark is reset between sizes).
//!
//! Ratios are printed against the floor measured in the same run.

#![allow(elided_lifetimes_in_paths, reason = "async_trait migrations must match sea-orm-migration's trait")]
#![allow(non_camel_case_types, reason = "migration structs are named like their migration files")]
#![allow(missing_docs, clippy::print_stdout, reason = "a benchmark binary")]

use std::time::{Duration, Instant};

use example_app::Migrator;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait};
use sea_orm_migration::prelude::*;
use tenancy::{Isolation, NewTenant, Tenancy};
use tenancy_migrate::fleet::{FleetOptions, migrate_all};
use tenancy_migrate::{MigrateOnCreate, Migrators};
use tenancy_test_support::{PgMaster, TempDir, peak_rss_kib, reset_peak_rss};

#[derive(DeriveMigrationName)]
struct m20260401_000001_create_labels;

#[async_trait::async_trait]
impl MigrationTrait for m20260401_000001_create_labels {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("labels")
                    .col(ColumnDef::new("id").integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new("tenant_id").string().not_null())
                    .col(ColumnDef::new("name").string().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create().name("labels_tenant_name").table("labels").col("tenant_id").col("name").to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table("labels").to_owned()).await
    }
}

/// The example migrations plus one new migration.
struct WithLabels;

impl MigratorTrait for WithLabels {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut all = Migrator::migrations();
        all.push(Box::new(m20260401_000001_create_labels));
        all
    }
}

/// The floor: `migrations`' DDL in one transaction on a plain connection, in `schema`.
async fn floor(db: &DatabaseConnection, schema: &str, create: bool, migrations: &[Box<dyn MigrationTrait>]) {
    let txn = db.begin().await.expect("begin");
    let quoted = tenancy::sql::quote_ident(schema);
    if create {
        txn.execute_unprepared(&format!("CREATE SCHEMA {quoted}")).await.expect("create schema");
    }
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT set_config('search_path', $1, true)",
        [quoted.into()],
    ))
    .await
    .expect("search_path");
    let manager = SchemaManager::new(&txn);
    for migration in migrations {
        migration.up(&manager).await.expect("floor migration");
    }
    txn.commit().await.expect("commit");
}

fn per_tenant(total: Duration, n: usize) -> f64 {
    total.as_secs_f64() * 1000.0 / n as f64
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::var("TENANCY_BENCH_N")
        .unwrap_or_else(|_| "100,1000".to_owned())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    println!("fleet benchmark: schema tenants on the local PostgreSQL; times are per tenant");
    for n in sizes {
        reset_peak_rss();
        let Some(pg) = PgMaster::create().await else {
            eprintln!("PostgreSQL is not reachable; nothing measured");
            std::process::exit(1);
        };
        let dir = TempDir::new();
        let tenancy = Tenancy::builder(pg.url.clone()).secret_key_file(dir.path().join("key")).connect().await.unwrap();
        let plain = pg.connect().await;
        let migrations = Migrator::migrations();

        // 1. Creation, interleaved so both see the same catalog growth.
        let (mut floor_total, mut tenancy_total, mut stock_total) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        for i in 0..n {
            // Reference: stock sea-orm-migration (`Migrator::up`) in one transaction per
            // schema, bookkeeping included, no registry.
            let started = Instant::now();
            let schema = tenancy::sql::quote_ident(&format!("stock_{i}"));
            let txn = plain.begin().await.unwrap();
            txn.execute_unprepared(&format!("CREATE SCHEMA {schema}")).await.unwrap();
            txn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT set_config('search_path', $1, true)",
                [schema.into()],
            ))
            .await
            .unwrap();
            Migrator::up(&txn, None).await.expect("stock migration");
            txn.commit().await.unwrap();
            stock_total += started.elapsed();

            let started = Instant::now();
            floor(&plain, &format!("floor_{i}"), true, &migrations).await;
            floor_total += started.elapsed();

            let started = Instant::now();
            let new = NewTenant::new(format!("t_{i}"), format!("Tenant {i}"), Isolation::Schema)
                .expect("a valid new tenant")
                .migrate(true);
            tenancy.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.expect("create tenant");
            tenancy_total += started.elapsed();
        }
        let (floor_create, tenancy_create) = (per_tenant(floor_total, n), per_tenant(tenancy_total, n));
        let stock_create = per_tenant(stock_total, n);

        // 2. One new migration across the fleet.
        let new_migration: Vec<Box<dyn MigrationTrait>> = vec![Box::new(m20260401_000001_create_labels)];
        let started = Instant::now();
        for i in 0..n {
            floor(&plain, &format!("floor_{i}"), false, &new_migration).await;
        }
        let floor_migrate = per_tenant(started.elapsed(), n);
        let migrators = Migrators::new(WithLabels);
        let options = FleetOptions { jobs: 2, ..FleetOptions::default() };
        let started = Instant::now();
        let report = migrate_all(&tenancy, &migrators, &options, &|_| {}).await.expect("fleet run");
        let fleet_migrate = per_tenant(started.elapsed(), n);
        assert!(report.succeeded() && report.count(tenancy::ledger::TenantOutcome::Migrated) == n);

        // 3. Nothing pending.
        let started = Instant::now();
        let report = migrate_all(&tenancy, &migrators, &options, &|_| {}).await.expect("fleet run");
        let idle = per_tenant(started.elapsed(), n);
        assert_eq!(report.count(tenancy::ledger::TenantOutcome::UpToDate), n);

        println!("N = {n}");
        println!(
            "  create schema tenant + migrations: tenancy {tenancy_create:.2} ms, floor {floor_create:.2} ms, ratio {:.2} (target <= 1.5)",
            tenancy_create / floor_create
        );
        println!(
            "    (reference: stock sea-orm-migration Migrator::up in one transaction, no registry: {stock_create:.2} ms, ratio to floor {:.2})",
            stock_create / floor_create
        );
        println!(
            "  fleet migrate 1 migration, --jobs 2: tenancy {fleet_migrate:.2} ms, floor (1 txn/tenant, sequential) {floor_migrate:.2} ms, ratio {:.2} (target <= 2.0)",
            fleet_migrate / floor_migrate
        );
        println!("  fleet run, nothing pending: {idle:.3} ms per tenant (target < 1 ms)");
        println!("  peak RSS: {} KiB", peak_rss_kib());
        let _ = plain.close().await;
    }
}
