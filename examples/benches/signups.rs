//! Creation throughput with 1, 2, 4 and 8 concurrent creators (issue 15, concurrent
//! signups): N schema tenants (`TENANCY_BENCH_N`, default 200), migrated with the example
//! app's migrator, on a fresh master each time, created
//!
//! - **in process**: one `Tenancy`, C tasks taking ids from a shared counter;
//! - **as processes**: the `createtenant` binary, C processes at a time.
//!
//! Run with `cargo bench -p example-app --bench signups` (PostgreSQL on 127.0.0.1:5432 or
//! `TENANCY_TEST_POSTGRES_URL`). Tenants per second, and the speed-up against one creator
//! measured in the same run. On a 2-core machine the creators share the cores with the
//! server, so the speed-up is bounded by them, not by the framework's locking.
//!
//! Then the single creator's milliseconds per tenant in process and as a process, and
//! their ratio: what a `createtenant` process costs on top of the work (issue 15).
//! `TENANCY_BENCH_CREATORS=1` (a comma-separated list) measures only those creator counts.

#![allow(missing_docs, clippy::print_stdout, reason = "a benchmark binary")]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use example_app::Migrator;
use tenancy::{Isolation, NewTenant};
use tenancy_migrate::MigrateOnCreate;
use tenancy_test_support::{PgMaster, TempDir};

const CREATORS: [usize; 4] = [1, 2, 4, 8];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// `n` schema tenants created by `creators` tasks of one `Tenancy`.
async fn in_process(n: usize, creators: usize) -> Duration {
    let pg = PgMaster::create().await.expect("PostgreSQL is not reachable; nothing measured");
    let dir = TempDir::new();
    // A master connection per creator's transaction, and some for the journal.
    let tenancy = pg.builder(&dir).max_connections(u32::try_from(creators * 2 + 2).unwrap_or(32)).connect().await;
    let tenancy = tenancy.expect("connect the master");
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..creators)
        .map(|_| {
            let (tenancy, next) = (tenancy.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let new = NewTenant::new(format!("t_{i}"), "Bench", Isolation::Schema).expect("a new tenant");
                    tenancy.create_tenant(new.migrate(true), &MigrateOnCreate::new(&Migrator)).await.expect("create");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a creator");
    }
    let took = started.elapsed();
    drop(tenancy);
    drop(pg);
    took
}

/// `n` schema tenants created by `createtenant` processes, `creators` at a time.
async fn as_processes(n: usize, creators: usize) -> Duration {
    let pg = PgMaster::create().await.expect("PostgreSQL is not reachable; nothing measured");
    let dir = TempDir::new();
    // The registry tables and the key exist before the clock starts, as on a live system.
    let tenancy = pg.tenancy(&dir).await;
    tenancy.secret_key().expect("generate the secret key");
    drop(tenancy);
    let spawn = |i: usize| -> Child {
        let id = format!("t_{i}");
        Command::new(env!("CARGO_BIN_EXE_createtenant"))
            .args(["--id", &id, "--name", "Bench", "--isolation", "schema", "--migrate", "--no-input"])
            .env("DATABASE_URL", &pg.url)
            .env("TENANCY_SECRET_KEY_FILE", dir.path().join("key"))
            .env_remove("TENANCY_SECRET_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn createtenant")
    };
    let started = Instant::now();
    let mut next = 0;
    let mut running: Vec<Child> = Vec::new();
    while next < n || !running.is_empty() {
        while running.len() < creators && next < n {
            running.push(spawn(next));
            next += 1;
        }
        let child = running.remove(0);
        let out = child.wait_with_output().expect("wait for createtenant");
        assert!(out.status.success(), "createtenant: {}", String::from_utf8_lossy(&out.stderr));
    }
    let took = started.elapsed();
    drop(pg);
    took
}

/// The creator counts to measure: `TENANCY_BENCH_CREATORS` (e.g. `1` or `1,8`), else
/// [`CREATORS`].
fn creator_counts() -> Vec<usize> {
    let given = std::env::var("TENANCY_BENCH_CREATORS").unwrap_or_default();
    let given: Vec<usize> = given.split(',').filter_map(|c| c.trim().parse().ok()).filter(|&c| c > 0).collect();
    if given.is_empty() { CREATORS.to_vec() } else { given }
}

#[tokio::main]
async fn main() {
    let n = env_usize("TENANCY_BENCH_N", 200);
    println!("signups benchmark: {n} schema tenants per run, a fresh master each time");
    println!("| creators | in process tenants/s | speed-up | processes tenants/s | speed-up |");
    println!("| --- | --- | --- | --- | --- |");
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let mut base: Option<(f64, f64)> = None;
    let mut single: Option<(Duration, Duration)> = None;
    for creators in creator_counts() {
        let (inside_took, outside_took) = (in_process(n, creators).await, as_processes(n, creators).await);
        if creators == 1 {
            single = Some((inside_took, outside_took));
        }
        let (inside, outside) = (rate(inside_took), rate(outside_took));
        let (base_inside, base_outside) = *base.get_or_insert((inside, outside));
        println!(
            "| {creators} | {inside:.1} | {:.2}x | {outside:.1} | {:.2}x |",
            inside / base_inside,
            outside / base_outside
        );
    }
    if let Some((inside, outside)) = single {
        let per_tenant = |d: Duration| d.as_secs_f64() * 1000.0 / n as f64;
        println!(
            "one creator: {:.1} ms per tenant in process, {:.1} ms per tenant as createtenant processes: {:.2}x",
            per_tenant(inside),
            per_tenant(outside),
            outside.as_secs_f64() / inside.as_secs_f64()
        );
    }
}
