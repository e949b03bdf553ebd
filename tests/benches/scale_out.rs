//! Scale-out benchmark (issue 14): N schema tenants on one PostgreSQL server against the
//! same N spread over three, creation and one new migration across the fleet. Run with
//! `cargo bench -p tenancy-tests --bench scale_out` (PostgreSQL on 127.0.0.1:5432 or
//! `TENANCY_TEST_POSTGRES_URL`, plus two servers the benchmark starts itself with
//! `initdb`/`pg_ctl`); `TENANCY_BENCH_N` sets N (default 3000), `TENANCY_BENCH_JOBS_PER_SERVER`
//! the fleet run's concurrency per server (default 2).
//!
//! 1. **One server.** A fresh master; N schema tenants created with migrations, one
//!    creator (two creators on one server collide on its `pg_database` row, see the
//!    production-traffic issue); then one new migration across the fleet with
//!    `--jobs-per-server J`.
//! 2. **Three servers.** A second fresh master with the two extra servers registered;
//!    N schema tenants, one creator per server in parallel (each on its own server's shard
//!    database: no shared catalog row between them); the servers' counts (as
//!    `showservers` gives them) are checked equal; the same fleet migration at the same
//!    total concurrency (`--jobs J`); then all of it again on a third fresh master, the
//!    fleet migration with `--jobs-per-server J` (so 3 J at once).
//! 3. Ratios three / one, and the peak RSS of the process during each fleet run (the
//!    high-water mark is reset before each).
//!
//! All three servers share this machine's cores and disk: the ratio shows what the
//! framework adds or saves by spreading, not what separate machines would give.

#![allow(elided_lifetimes_in_paths, reason = "async_trait migrations must match sea-orm-migration's trait")]
#![allow(non_camel_case_types, reason = "migration structs are named like their migration files")]
#![allow(missing_docs, clippy::print_stdout, reason = "a benchmark binary")]

use std::time::{Duration, Instant};

use example_app::Migrator;
use futures_util::future::join_all;
use sea_orm_migration::prelude::*;
use tenancy::servers::{NewServer, ServerName};
use tenancy::{Isolation, NewTenant, Tenancy};
use tenancy_migrate::fleet::{FleetOptions, migrate_all};
use tenancy_migrate::{MigrateOnCreate, Migrators};
use tenancy_test_support::{PgMaster, PgServer, TempDir, peak_rss_kib, reset_peak_rss};

#[derive(DeriveMigrationName)]
struct m20260501_000001_create_badges;

#[async_trait::async_trait]
impl MigrationTrait for m20260501_000001_create_badges {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("badges")
                    .col(ColumnDef::new("id").big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new("tenant_id").string().not_null())
                    .col(ColumnDef::new("name").string().not_null())
                    .to_owned(),
            )
            .await
    }
}

/// The example migrations plus one new migration.
struct WithBadges;

impl MigratorTrait for WithBadges {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut all = Migrator::migrations();
        all.push(Box::new(m20260501_000001_create_badges));
        all
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// Creates `ids` on `server` one after another.
async fn create_on(tenancy: &Tenancy, server: ServerName, ids: Vec<String>) {
    for id in ids {
        let new = NewTenant::new(id, "Bench", Isolation::Schema).expect("a valid new tenant").migrate(true);
        tenancy.create_tenant(new.on_server(server.clone()), &MigrateOnCreate::new(&Migrator)).await.expect("create");
    }
}

/// Creates `n` schema tenants spread evenly over `servers` (named), one creator per server
/// in parallel; how long it took.
async fn create(tenancy: &Tenancy, servers: &[ServerName], n: usize) -> Duration {
    let started = Instant::now();
    let creators = servers.iter().enumerate().map(|(at, server)| {
        let ids = (0..n).filter(|i| i % servers.len() == at).map(|i| format!("t_{i}")).collect();
        create_on(tenancy, server.clone(), ids)
    });
    join_all(creators).await;
    started.elapsed()
}

/// One fleet run that applies the new migration to all `n` tenants, at most `jobs` at once
/// and `jobs_per_server` per server: how long it took and the process's peak RSS meanwhile.
async fn migrate(tenancy: &Tenancy, n: usize, jobs: usize, jobs_per_server: usize) -> (Duration, u64) {
    reset_peak_rss();
    let options = FleetOptions { jobs, jobs_per_server, ..FleetOptions::default() };
    let started = Instant::now();
    let report = migrate_all(tenancy, &Migrators::new(WithBadges), &options, &|_| {}).await.expect("fleet run");
    let took = started.elapsed();
    assert!(report.succeeded(), "fleet run failed");
    assert_eq!(report.count(tenancy::ledger::TenantOutcome::Migrated), n);
    let peak = peak_rss_kib();
    // Where the time goes: each tenant's own time, as the ledger recorded it, per server.
    let rows = tenancy
        .master()
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT coalesce(server, '?'), avg(duration_ms)::float8 FROM tenancy_migration_ledger \
             GROUP BY 1 ORDER BY 1",
        ))
        .await
        .expect("the ledger");
    let per_server: Vec<String> = rows
        .iter()
        .map(|row| {
            let (server, ms): (String, f64) =
                (row.try_get_by_index(0).expect("server"), row.try_get_by_index(1).expect("mean"));
            format!("{server} {ms:.1} ms")
        })
        .collect();
    println!("  --jobs {jobs}: mean time per tenant, by server: {}", per_server.join(", "));
    (took, peak)
}

#[tokio::main]
async fn main() {
    let n = env_usize("TENANCY_BENCH_N", 3000);
    let jobs = env_usize("TENANCY_BENCH_JOBS_PER_SERVER", 2).max(1);
    let (Some(second), Some(third)) = (PgServer::start(), PgServer::start()) else {
        eprintln!("initdb/pg_ctl are not installed; nothing measured");
        std::process::exit(1);
    };
    println!("scale-out benchmark: {n} schema tenants, --jobs-per-server {jobs}");

    // 1. One server: the master's own.
    let Some(one_pg) = PgMaster::create().await else {
        eprintln!("PostgreSQL is not reachable; nothing measured");
        std::process::exit(1);
    };
    let one_dir = TempDir::new();
    let one = one_pg.tenancy(&one_dir).await;
    let single_create = create(&one, &[ServerName::master()], n).await;
    let single = migrate(&one, n, jobs, jobs).await;
    drop(one);
    drop(one_pg);

    // 2. Three servers: the master's own and the two started here; a fleet run at the same
    // total concurrency as the one server (`--jobs J`), then on a second fleet made the
    // same way, with J per server (so 3 J at once).
    let names: Vec<ServerName> =
        ["master", "second", "third"].iter().map(|name| name.parse().expect("valid name")).collect();
    let mut spread = Vec::new();
    for jobs_in_all in [jobs, jobs * names.len()] {
        let Some(three_pg) = PgMaster::create().await else { std::process::exit(1) };
        let three_dir = TempDir::new();
        let three = three_pg.tenancy(&three_dir).await;
        for (name, server) in [("second", &second), ("third", &third)] {
            three
                .add_server(NewServer::new(name, "127.0.0.1", server.port, "postgres").expect("valid"))
                .await
                .expect("add server");
        }
        let created = create(&three, &names, n).await;
        let overviews = three.server_overviews().await.expect("overviews");
        let counts: Vec<(String, u64)> =
            overviews.iter().map(|o| (o.server.name.to_string(), o.tenants.schema)).collect();
        assert!(counts.iter().all(|(_, c)| c.abs_diff((n / 3) as u64) <= 1), "uneven spread: {counts:?}");
        let migrated = migrate(&three, n, jobs_in_all, jobs).await;
        spread.push((created, jobs_in_all, migrated, counts));
        drop(three);
        drop(three_pg);
    }

    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "| servers | create s | tenants/s | fleet run | fleet migrate s | tenants/s | peak RSS during the fleet run |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let mut rows = vec![("1", single_create, format!("--jobs {jobs}"), single)];
    for (created, jobs_in_all, migrated, _) in &spread {
        rows.push(("3", *created, format!("--jobs {jobs_in_all} --jobs-per-server {jobs}"), *migrated));
    }
    for (label, create, run, (migrate, peak)) in &rows {
        println!(
            "| {label} | {:.1} | {:.1} | `{run}` | {:.1} | {:.1} | {} MiB |",
            create.as_secs_f64(),
            rate(*create),
            migrate.as_secs_f64(),
            rate(*migrate),
            peak / 1024
        );
    }
    let counts = &spread[0].3;
    println!(
        "ratios three servers / one server: create {:.2}; fleet migrate {:.2} at the same total concurrency, \
         {:.2} at {jobs} per server (below 1: faster); servers' schema tenants: {counts:?}",
        spread[0].0.as_secs_f64() / single_create.as_secs_f64(),
        spread[0].2.0.as_secs_f64() / single.0.as_secs_f64(),
        spread[1].2.0.as_secs_f64() / single.0.as_secs_f64()
    );
}
