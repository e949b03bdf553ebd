//! The soak (issue 15): the example app's `serve` process under mixed traffic over many
//! tenants for a bounded time, watched from outside.
//!
//! 1. A fresh master on the local PostgreSQL with `TENANCY_SOAK_TENANTS` (default 1000)
//!    tenants of mixed modes, migrated by the example app's migrator: 55% schema, 40%
//!    table, 5% database. Each gets one seed project named after it.
//! 2. The `serve` binary in its own process (`--connection-budget`
//!    `TENANCY_SOAK_BUDGET`, default 20; `--binding` `TENANCY_SOAK_BINDING`, default
//!    `tenant-pools`), the in-process cache.
//! 3. `TENANCY_SOAK_WORKERS` (default 8) workers, each on its own keep-alive connection,
//!    send requests for `TENANCY_SOAK_SECONDS` (default 600), each to a tenant picked at
//!    random: list projects (45%), create a project (3%), who am I (12%), dashboard (10%),
//!    put and read back a note (10%), add a task to the seed project (10%), show the seed
//!    project with its tasks (10%). Every answer is checked against the tenant asked: a row
//!    with another tenant's id or name is a cross-tenant row.
//! 4. Every `TENANCY_SOAK_SAMPLE_SECONDS` (default 2): the `serve` process's RSS, its
//!    connections to PostgreSQL (every client backend in the bench's databases; nothing
//!    else connects to them), and each of those backends' private memory (`RssAnon` of
//!    `/proc/<pid>/status`) and age (the live registry's listener, which holds its
//!    connection for the process's life, left out of the ages).
//!
//! At the end it prints the samples at the start, middle and end, and checks: zero errors,
//! zero cross-tenant rows, connections never above the budget (the master pool's 10, the
//! tenant budget, the live registry's listener), the server's RSS flat (the end within
//! 15% of the middle), and the backends' memory bounded (the largest at the end within 25%,
//! plus 2 MiB, of the largest at the middle). A failed check exits non-zero.
//!
//! Run with `cargo bench -p example-app --bench soak`. Everything it creates (the master,
//! the tenants' databases and roles) is dropped at the end; the server process is killed
//! if the bench stops early.

#![allow(missing_docs, clippy::print_stdout, reason = "a benchmark binary")]

#[path = "support/http.rs"]
mod http;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use example_app::Migrator;
use example_app::entities::project;
use sea_orm::prelude::ChronoUtc;
use sea_orm::{ActiveModelTrait, ConnectionTrait, DatabaseConnection, Set, Statement};
use serde_json::Value;
use tenancy::{Isolation, NewTenant, Tenancy};
use tenancy_migrate::MigrateOnCreate;
use tenancy_test_support::{PgMaster, TempDir};

/// The master pool's size in `serve` (`tenancy::DEFAULT_MAX_CONNECTIONS`) and the live
/// registry's listener: the connections `serve` holds besides the tenant budget.
const MASTER_CONNECTIONS: u32 = tenancy::DEFAULT_MAX_CONNECTIONS + 1;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

#[derive(Clone, Debug)]
struct Settings {
    tenants: usize,
    seconds: u64,
    workers: usize,
    budget: u32,
    binding: String,
    sample_every: Duration,
    seed: u64,
}

impl Settings {
    fn from_env() -> Settings {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos());
        Settings {
            tenants: env_or("TENANCY_SOAK_TENANTS", 1000).max(1),
            seconds: env_or("TENANCY_SOAK_SECONDS", 600).max(1),
            workers: env_or("TENANCY_SOAK_WORKERS", 8).max(1),
            budget: env_or("TENANCY_SOAK_BUDGET", 20).max(1),
            binding: env_or("TENANCY_SOAK_BINDING", String::from("tenant-pools")),
            sample_every: Duration::from_secs(env_or("TENANCY_SOAK_SAMPLE_SECONDS", 2).max(1)),
            seed: env_or("TENANCY_SOAK_SEED", (nanos as u64) | 1),
        }
    }
}

/// xorshift64*: enough randomness to spread requests over tenants, and a seed to repeat a run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

/// A tenant of the soak and the project it was seeded with.
#[derive(Clone, Debug)]
struct SoakTenant {
    id: String,
    seed_project: i64,
}

/// The mix of modes: 11 schema, 8 table and 1 database tenant in every 20.
fn isolation_of(i: usize) -> Isolation {
    match i % 20 {
        0..=10 => Isolation::Schema,
        11..=18 => Isolation::Table,
        _ => Isolation::Database,
    }
}

/// Creates the tenants with four concurrent creators; returns them and the names of the
/// tenant databases.
async fn create_tenants(pg: &Arc<PgMaster>, tenancy: &Tenancy, n: usize) -> (Vec<SoakTenant>, Vec<String>) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let creators: Vec<_> = (0..4)
        .map(|_| {
            let (pg, tenancy, next) = (pg.clone(), tenancy.clone(), next.clone());
            tokio::spawn(async move {
                let mut made = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return made;
                    }
                    let isolation = isolation_of(i);
                    let id = format!("soak_{i}");
                    let mut new = NewTenant::new(id.clone(), "Soak", isolation).expect("a new tenant").migrate(true);
                    let mut database = None;
                    if isolation == Isolation::Database {
                        let request = pg.new_database("soak-password");
                        database = Some(request.name().to_owned());
                        new = new.database(request);
                    }
                    tenancy.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.expect("create a tenant");
                    let handle = tenancy.tenant(id.as_str()).await.expect("the tenant's handle");
                    let seed = project::ActiveModel {
                        tenant_id: Set(id.clone()),
                        name: Set(format!("{id} seed")),
                        created_at: Set(ChronoUtc::now()),
                        ..Default::default()
                    }
                    .insert(&handle)
                    .await
                    .expect("seed a project");
                    made.push((SoakTenant { id, seed_project: i64::from(seed.id) }, database));
                    if (i + 1) % 100 == 0 {
                        println!("  {} tenants created ({:.0} s)", i + 1, started.elapsed().as_secs_f64());
                    }
                }
            })
        })
        .collect();
    let (mut tenants, mut databases) = (Vec::with_capacity(n), Vec::new());
    for creator in creators {
        for (tenant, database) in creator.await.expect("a creator") {
            tenants.push(tenant);
            databases.extend(database);
        }
    }
    (tenants, databases)
}

/// The `serve` process; killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(pg: &PgMaster, dir: &Path, settings: &Settings) -> Server {
        let log = std::fs::File::create(dir.join("serve.log")).expect("create the server's log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_serve"))
            .env("DATABASE_URL", &pg.url)
            .env("TENANCY_SECRET_KEY_FILE", dir.join("key"))
            .env("TENANCY_BIND", "127.0.0.1:0")
            .env("TENANCY_CONNECTION_BUDGET", settings.budget.to_string())
            .env("TENANCY_BINDING", &settings.binding)
            .env("RUST_LOG", "warn")
            .env_remove("TENANCY_CACHE_URL")
            .env_remove("TENANCY_POOLER")
            .env_remove("TENANCY_SERVER_CONNECTION_BUDGET")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start serve");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("serve's stdout");
        BufReader::new(stdout).read_line(&mut line).expect("serve's first line");
        let addr = line.trim().strip_prefix("listening on http://").and_then(|addr| addr.parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let log = std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default();
            panic!("serve did not start: {line:?}\n{log}");
        };
        Server { child, addr }
    }

    fn rss_kib(&self) -> u64 {
        status_kib(self.child.id(), "VmRSS:").unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `kB` field of `/proc/<pid>/status`.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    line[field.len()..].trim().trim_end_matches("kB").trim().parse().ok()
}

/// What the load generator counts.
#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
    cross_tenant: AtomicU64,
    first_errors: std::sync::Mutex<Vec<String>>,
}

impl Counters {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_errors.lock().unwrap_or_else(|e| e.into_inner());
        if first.len() < 10 {
            first.push(what);
        }
    }
}

/// Whether a project or task row (`tenant_id`, and `name` or `title`) is the tenant's own.
fn owned_by(row: &Value, tenant: &str, text_field: &str) -> bool {
    let prefix = format!("{tenant} ");
    row["tenant_id"].as_str() == Some(tenant) && row[text_field].as_str().is_some_and(|text| text.starts_with(&prefix))
}

/// One request to `tenant`; checks the answer. Returns `Err` for a transport failure, after
/// which the worker reconnects.
async fn one_request(
    client: &mut http::Client,
    rng: &mut Rng,
    tenant: &SoakTenant,
    counters: &Counters,
    serial: u64,
) -> std::io::Result<()> {
    let id = tenant.id.as_str();
    let seed = tenant.seed_project;
    let pick = rng.below(100);
    // (request, expected status, what a good body is)
    let (method, path, body, expected): (&str, String, Option<String>, u16) = match pick {
        0..=44 => ("GET", "/projects".into(), None, 200),
        45..=47 => ("POST", "/projects".into(), Some(format!(r#"{{"name":"{id} p{serial}"}}"#)), 201),
        48..=59 => ("GET", "/tenant".into(), None, 200),
        60..=69 => ("GET", "/dashboard".into(), None, 200),
        70..=79 => ("PUT", "/notes/soak".into(), Some(format!(r#"{{"text":"{id}"}}"#)), 204),
        80..=89 => ("POST", format!("/projects/{seed}/tasks"), Some(format!(r#"{{"title":"{id} t{serial}"}}"#)), 201),
        _ => ("GET", format!("/projects/{seed}"), None, 200),
    };
    let request = http::request(method, &path, Some(id), body.as_deref());
    counters.requests.fetch_add(1, Ordering::Relaxed);
    let (status, answer) = client.send(&request).await?;
    if status != expected {
        counters.error(format!("{method} {path} for {id}: {status} {}", String::from_utf8_lossy(answer)));
        return Ok(());
    }
    let json: Value =
        if answer.is_empty() { Value::Null } else { serde_json::from_slice(answer).unwrap_or(Value::Null) };
    let own = match pick {
        0..=44 => json.as_array().is_some_and(|rows| !rows.is_empty() && rows.iter().all(|r| owned_by(r, id, "name"))),
        45..=47 => owned_by(&json, id, "name"),
        48..=59 => json["id"].as_str() == Some(id),
        60..=69 => json.is_object(),
        70..=79 => {
            // The note just written, read back: the tenant's own text.
            let (status, answer) = client.send(&http::request("GET", "/notes/soak", Some(id), None)).await?;
            counters.requests.fetch_add(1, Ordering::Relaxed);
            let note: Value = serde_json::from_slice(answer).unwrap_or(Value::Null);
            if status != 200 {
                counters.error(format!("GET /notes/soak for {id}: {status} {}", String::from_utf8_lossy(answer)));
                return Ok(());
            }
            note["text"].as_str() == Some(id)
        }
        80..=89 => owned_by(&json, id, "title") && json["project_id"].as_i64() == Some(seed),
        _ => {
            owned_by(&json, id, "name")
                && json["tasks"].as_array().is_some_and(|tasks| tasks.iter().all(|t| owned_by(t, id, "title")))
        }
    };
    if !own {
        counters.cross_tenant.fetch_add(1, Ordering::Relaxed);
        counters.error(format!("{method} {path} for {id}: not the tenant's own answer: {json}"));
    }
    Ok(())
}

/// A worker: requests until `deadline`; returns its latencies in microseconds.
async fn worker(
    addr: SocketAddr,
    tenants: Arc<Vec<SoakTenant>>,
    counters: Arc<Counters>,
    mut rng: Rng,
    deadline: Instant,
) -> Vec<u32> {
    let mut latencies = Vec::new();
    let mut client = None;
    let mut serial = 0u64;
    while Instant::now() < deadline {
        let connection = match client.as_mut() {
            Some(connection) => connection,
            None => match http::Client::connect(addr).await {
                Ok(connection) => client.insert(connection),
                Err(err) => {
                    counters.error(format!("connect to serve: {err}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        serial += 1;
        let tenant = &tenants[rng.below(tenants.len())];
        let sent = Instant::now();
        if let Err(err) = one_request(connection, &mut rng, tenant, &counters, serial).await {
            counters.error(format!("request for {}: {err}", tenant.id));
            client = None;
        }
        latencies.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
    }
    latencies
}

/// One look at the server and its backends.
#[derive(Clone, Debug)]
struct Sample {
    at: Duration,
    requests: u64,
    server_rss_kib: u64,
    connections: usize,
    backend_max_kib: u64,
    backend_mean_kib: u64,
    oldest_backend: Duration,
}

impl Sample {
    /// The samples of a stretch of the run, summed up: the RSS at its end, the most of
    /// everything else. A backend's memory rises and falls as it is replaced, so a stretch
    /// longer than a connection's lifetime tells more than one sample.
    fn window(samples: &[Sample]) -> Sample {
        let last = samples.last().expect("a window has samples");
        Sample {
            at: last.at,
            requests: last.requests,
            server_rss_kib: last.server_rss_kib,
            connections: samples.iter().map(|s| s.connections).max().unwrap_or(0),
            backend_max_kib: samples.iter().map(|s| s.backend_max_kib).max().unwrap_or(0),
            backend_mean_kib: samples.iter().map(|s| s.backend_mean_kib).max().unwrap_or(0),
            oldest_backend: samples.iter().map(|s| s.oldest_backend).max().unwrap_or_default(),
        }
    }

    fn row(&self, label: &str) -> String {
        format!(
            "| {label} | {:.0} s | {} | {:.1} | {} | {:.1} | {:.1} | {:.0} s |",
            self.at.as_secs_f64(),
            self.requests,
            self.server_rss_kib as f64 / 1024.0,
            self.connections,
            self.backend_max_kib as f64 / 1024.0,
            self.backend_mean_kib as f64 / 1024.0,
            self.oldest_backend.as_secs_f64()
        )
    }
}

const TABLE_HEAD: &str = "| stretch | until | requests | serve RSS MiB (at its end) | most PG connections | \
largest backend MiB | largest backend mean MiB | oldest backend |\n| --- | --- | --- | --- | --- | --- | --- | --- |";

/// A client backend connected to the bench's databases.
struct Backend {
    pid: u32,
    age: f64,
    /// The live registry's listener, which holds its one connection for the process's life.
    listener: bool,
}

/// The client backends connected to the bench's databases.
async fn backends(admin: &DatabaseConnection, databases: &[String]) -> Vec<Backend> {
    let rows = admin
        .query_all_raw(Statement::from_sql_and_values(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT pid, extract(epoch FROM now() - backend_start)::float8 AS age, application_name = $2 AS listener \
             FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND datname = ANY($1) AND pid <> pg_backend_pid()",
            [databases.to_vec().into(), tenancy::live::LISTENER_APPLICATION_NAME.into()],
        ))
        .await
        .expect("read pg_stat_activity");
    rows.iter()
        .map(|row| {
            let pid: i32 = row.try_get("", "pid").expect("pid");
            Backend {
                pid: u32::try_from(pid).unwrap_or(0),
                age: row.try_get("", "age").expect("age"),
                listener: row.try_get("", "listener").expect("listener"),
            }
        })
        .collect()
}

async fn sample(
    admin: &DatabaseConnection,
    databases: &[String],
    server: &Server,
    counters: &Counters,
    started: Instant,
) -> Sample {
    let backends = backends(admin, databases).await;
    let memory: Vec<u64> = backends.iter().filter_map(|b| status_kib(b.pid, "RssAnon:")).collect();
    Sample {
        at: started.elapsed(),
        requests: counters.requests.load(Ordering::Relaxed),
        server_rss_kib: server.rss_kib(),
        connections: backends.len(),
        backend_max_kib: memory.iter().copied().max().unwrap_or(0),
        backend_mean_kib: memory.iter().sum::<u64>() / (memory.len().max(1) as u64),
        oldest_backend: Duration::from_secs_f64(
            backends.iter().filter(|b| !b.listener).map(|b| b.age).fold(0.0, f64::max),
        ),
    }
}

fn quantile_ms(sorted: &[u32], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).map_or(0.0, |us| f64::from(*us) / 1000.0)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let settings = Settings::from_env();
    let pg = Arc::new(PgMaster::create().await.expect("PostgreSQL is not reachable; nothing measured"));
    let dir = TempDir::new();
    println!(
        "soak: {} tenants (55% schema, 40% table, 5% database), {} workers for {} s, tenant budget {}, \
         binding {}, seed {}",
        settings.tenants, settings.workers, settings.seconds, settings.budget, settings.binding, settings.seed
    );
    let setup = pg.tenancy(&dir).await;
    let (tenants, mut databases) = create_tenants(&pg, &setup, settings.tenants).await;
    drop(setup);
    databases.push(pg.name.clone());
    // Wait for the setup's connections to go, so every backend counted below is the server's.
    let admin = pg.admin.clone();
    for _ in 0..300 {
        if backends(&admin, &databases).await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let server = Server::start(&pg, dir.path(), &settings);
    let budget = usize::try_from(settings.budget + MASTER_CONNECTIONS).unwrap_or(usize::MAX);
    println!(
        "serve listening on {}; connection budget {budget} (tenants {} + master pool and listener {MASTER_CONNECTIONS})",
        server.addr, settings.budget
    );
    let counters = Arc::new(Counters::default());
    let tenants = Arc::new(tenants);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(settings.seconds);
    let workers: Vec<_> = (0..settings.workers)
        .map(|n| {
            let rng = Rng(settings.seed.wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(n as u64 + 1)) | 1);
            tokio::spawn(worker(server.addr, tenants.clone(), counters.clone(), rng, deadline))
        })
        .collect();

    println!("every minute, the most (and the RSS at its end) of its samples:");
    println!("{TABLE_HEAD}");
    let mut samples: Vec<Sample> = Vec::new();
    let mut minute_from = 0;
    while Instant::now() < deadline {
        tokio::time::sleep(settings.sample_every.min(deadline.saturating_duration_since(Instant::now()))).await;
        samples.push(sample(&admin, &databases, &server, &counters, started).await);
        let minute = samples.last().map_or(0, |s| s.at.as_secs() / 60);
        if minute > samples[minute_from].at.as_secs() / 60 {
            println!("{}", Sample::window(&samples[minute_from..]).row("minute"));
            minute_from = samples.len();
        }
    }
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.expect("a worker"));
    }
    latencies.sort_unstable();
    samples.push(sample(&admin, &databases, &server, &counters, started).await);
    drop(server);

    // Thirds of the run: the first holds the warm-up, the other two are compared.
    let third = samples.len().div_ceil(3).max(1);
    let thirds: Vec<Sample> = samples.chunks(third).map(Sample::window).collect();
    let (start, middle, end) = (&thirds[0], &thirds[thirds.len() / 2], &thirds[thirds.len() - 1]);
    let whole = Sample::window(&samples);
    println!();
    println!("{TABLE_HEAD}");
    println!("{}", start.row("first third"));
    println!("{}", middle.row("middle third"));
    println!("{}", end.row("last third"));
    let requests = counters.requests.load(Ordering::Relaxed);
    let errors = counters.errors.load(Ordering::Relaxed);
    let cross = counters.cross_tenant.load(Ordering::Relaxed);
    let (max_connections, max_backend, oldest) = (whole.connections, whole.backend_max_kib, whole.oldest_backend);
    println!(
        "\n{requests} requests in {:.0} s ({:.0}/s), p50 {:.2} ms, p99 {:.2} ms; {errors} errors, {cross} cross-tenant answers",
        end.at.as_secs_f64(),
        requests as f64 / end.at.as_secs_f64(),
        quantile_ms(&latencies, 0.5),
        quantile_ms(&latencies, 0.99)
    );
    println!(
        "most PG connections at once {max_connections} (budget {budget}); largest backend {:.1} MiB; oldest backend seen {:.0} s",
        max_backend as f64 / 1024.0,
        oldest.as_secs_f64()
    );
    for error in counters.first_errors.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        println!("  error: {error}");
    }

    let checks = [
        ("zero errors", errors == 0),
        ("zero cross-tenant answers", cross == 0),
        ("connections never above the budget", max_connections <= budget),
        (
            "serve RSS flat: at the end within 15% of the middle third's end",
            end.server_rss_kib * 100 <= middle.server_rss_kib * 115,
        ),
        (
            "backend memory bounded: the largest backend of the last third within 25% (+2 MiB) of the middle third's",
            end.backend_max_kib * 100 <= middle.backend_max_kib * 125 + 2048 * 100,
        ),
    ];
    let mut failed = false;
    for (check, ok) in checks {
        println!("{} {check}", if ok { "PASS" } else { "FAIL" });
        failed |= !ok;
    }
    drop(admin);
    if failed { std::process::ExitCode::FAILURE } else { std::process::ExitCode::SUCCESS }
}
