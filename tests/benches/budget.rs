//! Connection budget under many database-isolated tenants. Run with
//! `cargo bench -p tenancy-tests --bench budget` (`TENANCY_BENCH_TENANTS`, default 2000).
//!
//! Creates N database tenants (own role and database each), then touches them in turn
//! through their handles twice around, sampling `pg_stat_activity` after every touch for
//! the number of connections open to tenant databases, and reports the maximum against
//! the configured budget, the time per touch (most touches open a pool: the cache holds
//! budget / per-pool pools) and the process's peak RSS for the touching phase.

#![allow(missing_docs, clippy::print_stdout, reason = "a benchmark binary")]

use std::time::Instant;

use sea_orm::{ConnectionTrait, DbBackend, Statement};
use tenancy::{Isolation, NewTenant, Tenancy};
use tenancy_test_support::{PgMaster, TempDir, peak_rss_kib, unique_name};

const BUDGET: u32 = 20;
const PER_POOL: u32 = 2;

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("TENANCY_BENCH_TENANTS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let Some(pg) = PgMaster::create().await else {
        eprintln!("PostgreSQL is not reachable; nothing measured");
        std::process::exit(1);
    };
    let dir = TempDir::new();
    let tenancy = Tenancy::builder(pg.url.clone())
        .secret_key_file(dir.path().join("key"))
        .tenant_connection_budget(BUDGET)
        .connections_per_tenant_pool(PER_POOL)
        .connect()
        .await
        .unwrap();
    let prefix = unique_name("bud");
    let started = Instant::now();
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let (name, user) = (format!("{prefix}_{i}"), tenancy_test_support::unique_name("u"));
        pg.track_database(&name);
        pg.track_role(&user);
        let database = tenancy::NewDatabase::create(name)
            .login(user, tenancy::secrets::Password::new("pw"))
            .server("127.0.0.1", 5432);
        let id = format!("t{i}");
        let new = NewTenant::new(id.parse::<tenancy::TenantId>().unwrap(), id.clone(), Isolation::Database)
            .expect("a valid new tenant")
            .database(database);
        tenancy.create_tenant(new, &()).await.expect("create tenant");
        ids.push(id);
    }
    println!("created {n} database tenants in {:.1} s", started.elapsed().as_secs_f64());

    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let like = format!("{prefix}\\_%");
    let (mut max_open, started) = (0_i64, Instant::now());
    for _round in 0..2 {
        for id in &ids {
            let handle = tenancy.tenant(id).await.expect("handle");
            handle
                .query_one_raw(Statement::from_string(DbBackend::Postgres, "SELECT 1".to_owned()))
                .await
                .expect("touch");
            let row = pg
                .admin
                .query_one_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE datname LIKE $1",
                    [like.clone().into()],
                ))
                .await
                .unwrap()
                .unwrap();
            max_open = max_open.max(row.try_get_by_index::<i64>(0).unwrap());
        }
    }
    let per_touch = started.elapsed().as_secs_f64() * 1000.0 / (2 * n) as f64;
    println!(
        "touched {n} tenants twice around: at most {max_open} connections open to tenant databases (budget {BUDGET}, {PER_POOL} per pool)"
    );
    println!("  {per_touch:.2} ms per touch (registry lookup + pool open when evicted + SELECT 1 + sampling)");
    println!("  peak RSS while touching: {} KiB", peak_rss_kib());
    assert!(max_open <= i64::from(BUDGET), "the budget was exceeded");
}
