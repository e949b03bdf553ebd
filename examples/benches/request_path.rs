//! The request path (issue 15): the example app's `GET /projects` served through
//! `TenantLayer` against the same handler on plain sea-orm, over real HTTP on loopback, in
//! one process.
//!
//! - **tenancy**: `example_app::server::router` (the app's own routes and layer), one
//!   tenant per isolation mode (schema, table, database), with each tenant binding
//!   (`TenantPools`, and `SharedTransactions` for schema and table);
//! - **plain**: the same query (`project::Entity::find().order_by_asc(id).all(&db)`,
//!   answered as JSON the same way) on one plain `DatabaseConnection` to a database the
//!   example app's `Migrator` made, holding the same rows. Its pool is configured like the
//!   tenant pools (same size, no statement logging, no ping before every checkout), so the
//!   difference is what tenancy adds.
//!
//! Both servers listen on 127.0.0.1:0 in this process. The load generator is a loop of
//! `TENANCY_BENCH_WORKERS` (default 4) concurrent workers, each on its own keep-alive
//! HTTP/1.1 connection, sending `TENANCY_BENCH_REQUESTS` (default 250) requests per round;
//! plain and tenancy alternate for `TENANCY_BENCH_ROUNDS` (default 6) rounds, the order
//! swapped every round, after one unmeasured warm-up round each. Pools hold as many
//! connections as there are workers.
//!
//! Run with `cargo bench -p example-app --bench request_path` (PostgreSQL on
//! 127.0.0.1:5432 or `TENANCY_TEST_POSTGRES_URL`). Everything it creates (a fresh master,
//! the plain database, the tenants' database and roles) is dropped at the end.

#![allow(missing_docs, clippy::print_stdout, reason = "a benchmark binary")]

#[path = "support/http.rs"]
mod http;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use example_app::Migrator;
use example_app::entities::project;
use sea_orm::prelude::ChronoUtc;
use sea_orm::{
    ActiveModelTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, EntityTrait, QueryOrder, Set,
};
use sea_orm_migration::MigratorTrait;
use tenancy::{Isolation, NewTenant, Tenancy, TenantBinding, TenantId};
use tenancy_migrate::MigrateOnCreate;
use tenancy_test_support::{PgMaster, TempDir, unique_name, with_database};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Projects per tenant (and in the plain database).
const ROWS: usize = 10;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).filter(|v| *v > 0).unwrap_or(default)
}

/// The load: workers, requests per worker per round, measured rounds per side.
#[derive(Clone, Copy, Debug)]
struct Load {
    workers: usize,
    requests: usize,
    rounds: usize,
}

/// One side's server: where it listens and the `x-tenant` header it needs.
#[derive(Clone, Debug)]
struct Target {
    addr: SocketAddr,
    tenant: Option<String>,
}

/// A keep-alive connection that sends one fixed `GET /projects` again and again.
struct Client {
    http: http::Client,
    request: Vec<u8>,
}

impl Client {
    async fn connect(target: &Target) -> Client {
        let http = http::Client::connect(target.addr).await.expect("connect to the server");
        Client { http, request: http::request("GET", "/projects", target.tenant.as_deref(), None) }
    }

    /// Sends the request and reads the whole response; returns its body.
    async fn get(&mut self) -> &[u8] {
        let (status, body) = self.http.send(&self.request).await.expect("a response");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(body));
        body
    }
}

/// Runs `load.requests` requests on each of `load.workers` connections at once; returns
/// every request's latency and the round's wall time.
async fn round(target: &Target, load: Load) -> (Vec<Duration>, Duration) {
    let mut clients = Vec::with_capacity(load.workers);
    for _ in 0..load.workers {
        let mut client = Client::connect(target).await;
        // Every side answers the same ten projects.
        let body = client.get().await;
        let rows = body.windows(5).filter(|w| w == b"\"id\":").count();
        assert_eq!(rows, ROWS, "{}", String::from_utf8_lossy(body));
        clients.push(client);
    }
    let started = Instant::now();
    let workers: Vec<JoinHandle<Vec<Duration>>> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(load.requests);
                for _ in 0..load.requests {
                    let sent = Instant::now();
                    client.get().await;
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(load.workers * load.requests);
    for worker in workers {
        latencies.extend(worker.await.expect("a worker"));
    }
    (latencies, started.elapsed())
}

/// Latencies and wall time of one side, over all its rounds.
#[derive(Default)]
struct Measured {
    latencies: Vec<Duration>,
    wall: Duration,
}

impl Measured {
    fn add(&mut self, (latencies, wall): (Vec<Duration>, Duration)) {
        self.latencies.extend(latencies);
        self.wall += wall;
    }

    /// The `q` quantile (nearest rank), in microseconds.
    fn quantile_us(&mut self, q: f64) -> f64 {
        self.latencies.sort_unstable();
        let rank = ((q * self.latencies.len() as f64).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[rank - 1].as_secs_f64() * 1e6
    }

    fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }
}

/// Plain and tenancy, alternated (the order swapped every round) after a warm-up of each.
async fn compare(plain: &Target, tenancy: &Target, load: Load) -> (Measured, Measured) {
    round(plain, load).await;
    round(tenancy, load).await;
    let (mut a, mut b) = (Measured::default(), Measured::default());
    for n in 0..load.rounds {
        if n % 2 == 0 {
            a.add(round(plain, load).await);
            b.add(round(tenancy, load).await);
        } else {
            b.add(round(tenancy, load).await);
            a.add(round(plain, load).await);
        }
    }
    (a, b)
}

async fn serve(listener: TcpListener, app: Router) -> JoinHandle<()> {
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") })
}

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    (listener, addr)
}

/// The example app's `GET /projects` on a plain connection: the same query, answered the
/// same way (a failure is a `500`, as the app's `Error` answers a database error).
async fn plain_list_projects(State(db): State<DatabaseConnection>) -> Result<Json<Vec<project::Model>>, StatusCode> {
    let projects = project::Entity::find().order_by_asc(project::Column::Id).all(&db).await;
    projects.map(Json).map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)
}

async fn insert_projects<C: ConnectionTrait>(db: &C, tenant: &str) {
    for n in 0..ROWS {
        project::ActiveModel {
            tenant_id: Set(tenant.to_owned()),
            name: Set(format!("project {n}")),
            created_at: Set(ChronoUtc::now()),
            ..Default::default()
        }
        .insert(db)
        .await
        .expect("insert a project");
    }
}

/// A plain database made by the example app's migrator, holding the same rows.
async fn plain_database(pg: &PgMaster, connections: u32) -> DatabaseConnection {
    let name = unique_name("plain");
    pg.track_database(&name);
    pg.admin.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await.expect("create the plain database");
    let mut options = ConnectOptions::new(with_database(&pg.url, &name));
    // As the tenant pools are set up (tenancy/src/connection/url.rs): the same size, no
    // statement log, a ping only for a connection idle 30 s.
    options
        .max_connections(connections)
        .min_connections(0)
        .sqlx_logging(false)
        .test_before_acquire_if_idle_for(Duration::from_secs(30));
    let db = Database::connect(options).await.expect("connect the plain database");
    Migrator::up(&db, None).await.expect("migrate the plain database");
    insert_projects(&db, "plain_tenant").await;
    db
}

/// A tenant of `isolation` with the same rows.
async fn tenant(pg: &PgMaster, tenancy: &Tenancy, isolation: Isolation) -> TenantId {
    let id: TenantId = unique_name(&format!("rp_{isolation}")).parse().expect("a tenant id");
    let mut new = NewTenant::new(id.clone(), "Bench", isolation).expect("a new tenant").migrate(true);
    if isolation == Isolation::Database {
        new = new.database(pg.new_database("bench-password"));
    }
    tenancy.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.expect("create the tenant");
    insert_projects(&tenancy.tenant(&id).await.expect("the tenant's handle"), id.as_str()).await;
    id
}

#[tokio::main]
async fn main() {
    let load = Load {
        workers: env_usize("TENANCY_BENCH_WORKERS", 4),
        requests: env_usize("TENANCY_BENCH_REQUESTS", 250),
        rounds: env_usize("TENANCY_BENCH_ROUNDS", 6),
    };
    let connections = u32::try_from(load.workers).unwrap_or(u32::MAX);
    let pg = PgMaster::create().await.expect("PostgreSQL is not reachable; nothing measured");
    let dir = TempDir::new();
    let setup = pg.tenancy(&dir).await;
    let mut tenants = Vec::new();
    for isolation in [Isolation::Schema, Isolation::Table, Isolation::Database] {
        tenants.push((isolation, tenant(&pg, &setup, isolation).await));
    }
    drop(setup);
    let plain_db = plain_database(&pg, connections).await;
    let (listener, addr) = bind().await;
    let plain_server =
        serve(listener, Router::new().route("/projects", get(plain_list_projects)).with_state(plain_db.clone())).await;
    let plain = Target { addr, tenant: None };

    println!(
        "request path benchmark: GET /projects ({ROWS} rows), {} workers x {} requests x {} rounds per side, \
         pools of {connections} connections",
        load.workers, load.requests, load.rounds
    );
    println!(
        "| isolation | binding | plain p50 µs | tenancy p50 µs | p50 ratio | plain p99 µs | tenancy p99 µs | p99 ratio \
         | plain req/s | tenancy req/s | req/s ratio |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (isolation, id) in &tenants {
        let bindings: &[TenantBinding] = match isolation {
            Isolation::Database => &[TenantBinding::TenantPools],
            _ => &[TenantBinding::TenantPools, TenantBinding::SharedTransactions],
        };
        for binding in bindings {
            let tenancy = pg
                .builder(&dir)
                .tenant_binding(*binding)
                .connections_per_tenant_pool(connections)
                // The shared transactions' pool: as many connections as the plain side,
                // and two for the framework's own reads.
                .max_connections(connections + 2)
                .connect()
                .await
                .expect("connect the master");
            let (listener, addr) = bind().await;
            let server = serve(
                listener,
                example_app::server::router(tenancy.clone(), example_app::server::resolver("localhost")),
            )
            .await;
            let target = Target { addr, tenant: Some(id.to_string()) };
            let (mut a, mut b) = compare(&plain, &target, load).await;
            assert!(tenancy.registry_is_live(), "the live registry serves the measured requests");
            let (a50, b50, a99, b99) =
                (a.quantile_us(0.5), b.quantile_us(0.5), a.quantile_us(0.99), b.quantile_us(0.99));
            let (ars, brs) = (a.per_second(), b.per_second());
            println!(
                "| {isolation} | {binding:?} | {a50:.0} | {b50:.0} | {:.2}x | {a99:.0} | {b99:.0} | {:.2}x | {ars:.0} | {brs:.0} | {:.2}x |",
                b50 / a50,
                b99 / a99,
                brs / ars
            );
            server.abort();
            let _ = server.await;
            tenancy.master().clone().close().await.expect("close the master pool");
        }
    }
    plain_server.abort();
    let _ = plain_server.await;
    plain_db.close().await.expect("close the plain database");
    drop(pg);
}
