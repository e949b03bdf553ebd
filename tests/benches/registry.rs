//! Live registry benchmark: one HTTP request through the tower layer with the live
//! registry (the tenant served from memory) against the same request through a layer
//! whose `Tenancy` reads the registry row on every request (`live_registry(false)`, the
//! behaviour before the live registry), in one process, on one master. Run with
//! `cargo bench -p tenancy-tests --bench registry` (PostgreSQL on 127.0.0.1:5432 or
//! `TENANCY_TEST_POSTGRES_URL`; the SQLite master is a temporary file).
//!
//! Two inner services: one that answers at once (the layer's own cost) and one that runs
//! one `SELECT 1` through the tenant's handle (the smallest real request). Requests
//! alternate between the two layers so drift affects both alike; median and p99 are
//! printed, with the ratio live / per-request read.

#![allow(missing_docs, clippy::print_stdout, reason = "a benchmark binary")]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response};
use sea_orm::{ConnectionTrait, Statement};
use tenancy::{Isolation, NewTenant, Tenancy, TenantLayer, TenantResolver};
use tenancy_test_support::{PgMaster, TempDir};
use tower_layer::Layer;
use tower_service::Service;

const ROUNDS: usize = 5_000;
const TENANT: &str = "bench_live";

/// The inner service: answers at once, or after one `SELECT 1` through the tenant handle.
#[derive(Clone, Copy)]
struct Handler {
    query: bool,
}

impl Service<Request<()>> for Handler {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<String>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<()>) -> Self::Future {
        let query = self.query;
        Box::pin(async move {
            if query {
                let db = tenancy::current().expect("the tenant in scope");
                db.execute_raw(Statement::from_string(db.get_database_backend(), "SELECT 1")).await.expect("SELECT 1");
            }
            Ok(Response::new(String::new()))
        })
    }
}

async fn request<S>(service: &mut S)
where
    S: Service<Request<()>, Response = Response<String>, Error = Infallible>,
{
    let request = Request::builder().uri("/").header("x-tenant", TENANT).body(()).expect("request");
    let response = service.call(request).await.expect("infallible");
    assert_eq!(response.status(), 200, "the tenant is served");
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1).min(sorted.len() - 1);
    sorted[index].as_secs_f64() * 1e6
}

/// Alternates requests through the two layers; prints median, p99 and ratios.
async fn compare(name: &str, live: &Tenancy, per_call: &Tenancy, query: bool) {
    let layer = |tenancy: &Tenancy| TenantLayer::new(tenancy.clone(), TenantResolver::header("x-tenant"));
    let mut live_service = layer(live).layer(Handler { query });
    let mut read_service = layer(per_call).layer(Handler { query });
    // Warm-up: pools open, statements prepared, the live registry started and loaded.
    for _ in 0..200 {
        request(&mut live_service).await;
        request(&mut read_service).await;
    }
    assert!(live.registry_is_live(), "the live registry runs");
    let (mut live_samples, mut read_samples) = (Vec::with_capacity(ROUNDS), Vec::with_capacity(ROUNDS));
    for _ in 0..ROUNDS {
        let started = Instant::now();
        request(&mut read_service).await;
        read_samples.push(started.elapsed());
        let started = Instant::now();
        request(&mut live_service).await;
        live_samples.push(started.elapsed());
    }
    live_samples.sort();
    read_samples.sort();
    let (live_median, read_median) = (percentile(&live_samples, 0.5), percentile(&read_samples, 0.5));
    let (live_p99, read_p99) = (percentile(&live_samples, 0.99), percentile(&read_samples, 0.99));
    println!(
        "  {name:<34} per-request read: median {read_median:>8.1} µs  p99 {read_p99:>8.1} µs\n  \
         {:<34} live registry:    median {live_median:>8.1} µs  p99 {live_p99:>8.1} µs   \
         ratio median {:.3}  p99 {:.3}",
        "",
        live_median / read_median,
        live_p99 / read_p99,
    );
}

async fn run(backend: &str, live: Tenancy, per_call: Tenancy, isolation: Isolation) {
    let new = NewTenant::new(TENANT, TENANT, isolation).expect("a valid new tenant");
    live.create_tenant(new, &()).await.expect("create the tenant");
    println!(" {backend} master, a {isolation} tenant:");
    compare("layer only (inner service answers)", &live, &per_call, false).await;
    compare("layer + one SELECT 1 on the handle", &live, &per_call, true).await;
}

#[tokio::main]
async fn main() {
    println!(
        "live registry benchmark: a request through TenantLayer, {ROUNDS} rounds each (ratio < 1: live is faster)"
    );
    let dir = TempDir::new();
    match PgMaster::create().await {
        Some(pg) => {
            let live = pg.tenancy(&dir).await;
            let per_call = pg.builder(&dir).live_registry(false).connect().await.expect("connect");
            run("PostgreSQL", live, per_call, Isolation::Schema).await;
        }
        None => {
            eprintln!("PostgreSQL is not reachable; nothing measured");
            std::process::exit(1);
        }
    }
    let live = dir.sqlite_builder().connect().await.expect("connect");
    let per_call = dir.sqlite_builder().live_registry(false).connect().await.expect("connect");
    run("SQLite", live, per_call, Isolation::Table).await;
}
