//! Ten thousand tenants (issue 15). Run with
//! `cargo bench -p tenancy-tests --bench ten_thousand` (PostgreSQL on 127.0.0.1:5432, or
//! `TENANCY_TEST_POSTGRES_URL`). `TENANCY_BENCH_N=1000,10000` (the default) picks the
//! fleet sizes; `TENANCY_BENCH_JOBS=4` the second run's `--jobs`.
//!
//! For each N, on a fresh master database, in one process:
//! 1. create N schema tenants with the example app's migrator (its five tables:
//!    `projects`, `tasks`, `comments`, `tenant_users` and the bookkeeping table), in
//!    process, by as many concurrent creators as the connection budget allows;
//! 2. apply one new migration (a nullable column and an index on it) to every tenant with
//!    the `migratealltenants` command's own code, `--jobs 2`, in a process of its own (this
//!    binary again, so its peak RSS is the migrating process's alone); against the raw-SQL
//!    floor of the same DDL over two sessions, measured once before and once after the run
//!    (other column names, same shape), so both see the same catalog;
//! 3. the same with a second new migration and `--jobs J` against a floor over J sessions;
//! 4. a run with nothing pending, `--jobs 2`.
//!
//! The floor is what any migrator must send per schema, each statement one round trip
//! in the simple protocol: `BEGIN`, `SET LOCAL search_path`, the `ALTER TABLE`, the
//! `CREATE INDEX`, the bookkeeping `INSERT`, `COMMIT`.

#![allow(elided_lifetimes_in_paths, reason = "async_trait migrations must match sea-orm-migration's trait")]
#![allow(non_camel_case_types, reason = "migration structs are named like their migration files")]
#![allow(missing_docs, clippy::print_stdout, clippy::print_stderr, reason = "a benchmark binary")]

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use example_app::Migrator;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use sea_orm_migration::prelude::*;
use tenancy::{Isolation, NewTenant, Tenancy};
use tenancy_migrate::{MigrateOnCreate, Migrators};
use tenancy_test_support::{PgMaster, TempDir, count, peak_rss_kib};

/// The environment variable that makes this binary the migrating process: the number of
/// new migrations its migrator has on top of the example app's.
const CHILD: &str = "TENANCY_BENCH_MIGRATE_CHILD";

/// A nullable column and an index on it, on `projects`.
struct AddColumn {
    name: &'static str,
    column: &'static str,
}

impl MigrationName for AddColumn {
    fn name(&self) -> &str {
        self.name
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddColumn {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("projects")
                    .add_column(ColumnDef::new(self.column).timestamp_with_time_zone().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create().name(format!("projects_{}", self.column)).table("projects").col(self.column).to_owned(),
            )
            .await
    }
}

const NEW_MIGRATIONS: [AddColumn; 2] = [
    AddColumn { name: "m20261201_000001_projects_archived_at", column: "archived_at" },
    AddColumn { name: "m20261201_000002_projects_due_at", column: "due_at" },
];

/// The example app's migrator and the first `extra` new migrations.
struct WithNew(usize);

#[async_trait::async_trait]
impl sea_orm_migration::MigratorTraitSelf for WithNew {
    fn migrations(&self) -> Vec<Box<dyn MigrationTrait>> {
        let mut all = <Migrator as MigratorTrait>::migrations();
        for new in NEW_MIGRATIONS.iter().take(self.0) {
            all.push(Box::new(AddColumn { name: new.name, column: new.column }));
        }
        all
    }
}

/// The migrating process: `migratealltenants` with this process's arguments, then its
/// peak RSS on stderr.
async fn child(extra: usize) -> std::process::ExitCode {
    let code = tenancy_migrate::cli::migratealltenants(Migrators::new(WithNew(extra))).await;
    eprintln!("peak_rss_kib={}", peak_rss_kib());
    code
}

/// One run of the migrating process: its wall time and peak RSS.
fn migrate_process(url: &str, extra: usize, jobs: usize) -> (Duration, u64) {
    let started = Instant::now();
    let output = Command::new(std::env::current_exe().expect("this binary"))
        .args(["--jobs", &jobs.to_string()])
        .env(CHILD, extra.to_string())
        .env("DATABASE_URL", url)
        .env_remove("TENANCY_DIRECT_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("start the migrating process");
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "migratealltenants failed: {stderr}");
    let rss = stderr
        .lines()
        .find_map(|line| line.strip_prefix("peak_rss_kib="))
        .and_then(|kib| kib.trim().parse().ok())
        .expect("the child's peak RSS");
    (elapsed, rss)
}

/// The floor: `column` added and indexed in every schema, one transaction per schema,
/// the schemas shared out over `sessions` plain connections.
async fn floor(url: &str, schemas: &[String], column: &str, sessions: usize) -> Duration {
    let mut connections = Vec::new();
    for _ in 0..sessions {
        // One connection each: `BEGIN` and what follows must share it.
        let mut options = sea_orm::ConnectOptions::new(url.to_owned());
        options.max_connections(1).min_connections(1).sqlx_logging(false);
        connections.push(Database::connect(options).await.expect("floor connection"));
    }
    let schemas = Arc::new(schemas.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|db| {
            let (schemas, next, column) = (Arc::clone(&schemas), Arc::clone(&next), column.to_owned());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(schema) = schemas.get(i) else { break };
                    floor_one(&db, schema, &column).await;
                }
                let _ = db.close().await;
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("floor task");
    }
    started.elapsed()
}

async fn floor_one(db: &DatabaseConnection, schema: &str, column: &str) {
    let schema = tenancy::sql::quote_ident(schema);
    for sql in [
        "BEGIN".to_owned(),
        format!("SET LOCAL search_path TO {schema}"),
        format!("ALTER TABLE projects ADD COLUMN {column} timestamptz NULL"),
        format!("CREATE INDEX projects_{column} ON projects ({column})"),
        format!("INSERT INTO seaql_migrations (version, applied_at) VALUES ('floor_{column}', 0)"),
        "COMMIT".to_owned(),
    ] {
        db.execute_unprepared(&sql).await.expect("floor statement");
    }
}

/// `n` schema tenants created by `creators` concurrent tasks; their schema names.
async fn create_tenants(tenancy: &Tenancy, n: usize, creators: usize) -> (Duration, Vec<String>) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..creators)
        .map(|_| {
            let (tenancy, next) = (tenancy.clone(), Arc::clone(&next));
            tokio::spawn(async move {
                let mut schemas = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let new = NewTenant::new(format!("t{i:05}"), format!("Tenant {i}"), Isolation::Schema)
                        .expect("a valid new tenant")
                        .migrate(true);
                    let created =
                        tenancy.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.expect("create tenant");
                    let schema = created.tenant.placement().schema().expect("a schema tenant").to_owned();
                    schemas.push(schema);
                }
                schemas
            })
        })
        .collect();
    let mut schemas = Vec::with_capacity(n);
    for task in tasks {
        schemas.extend(task.await.expect("creator task"));
    }
    (started.elapsed(), schemas)
}

fn ms_per_tenant(total: Duration, n: usize) -> f64 {
    total.as_secs_f64() * 1000.0 / n as f64
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).filter(|v| *v > 0).unwrap_or(default)
}

/// How many tenants have `column` on `projects`, read from the catalog.
async fn with_column(pg: &PgMaster, column: &str) -> i64 {
    let master = pg.connect().await;
    let n = count(
        &master,
        "SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
         JOIN pg_namespace s ON s.oid = c.relnamespace \
         WHERE c.relname = 'projects' AND a.attname = $1 AND NOT a.attisdropped AND s.nspname LIKE 't%'",
        vec![column.into()],
    )
    .await;
    let _ = master.close().await;
    n
}

struct Figures {
    n: usize,
    create: Duration,
    creators: usize,
    floor2: (Duration, Duration),
    run2: (Duration, u64),
    jobs: usize,
    floor_j: (Duration, Duration),
    run_j: (Duration, u64),
    idle: (Duration, u64),
}

async fn measure(n: usize, jobs: usize) -> Figures {
    let pg = PgMaster::create().await.expect("PostgreSQL is reachable");
    let dir = TempDir::new();
    let tenancy = pg.tenancy(&dir).await;
    let creators = usize::try_from(tenancy.connection_budget() / 2).unwrap_or(1).clamp(1, 8);
    eprintln!("N = {n}: creating tenants with {creators} creators…");
    let (create, schemas) = create_tenants(&tenancy, n, creators).await;
    drop(tenancy);

    eprintln!("N = {n}: new migration, --jobs 2, between two floors…");
    let before = floor(&pg.url, &schemas, "floor_a", 2).await;
    let run2 = migrate_process(&pg.url, 1, 2);
    let after = floor(&pg.url, &schemas, "floor_b", 2).await;
    assert_eq!(with_column(&pg, "archived_at").await, n as i64, "every tenant migrated");

    eprintln!("N = {n}: second new migration, --jobs {jobs}, between two floors…");
    let before_j = floor(&pg.url, &schemas, "floor_c", jobs).await;
    let run_j = migrate_process(&pg.url, 2, jobs);
    let after_j = floor(&pg.url, &schemas, "floor_d", jobs).await;
    assert_eq!(with_column(&pg, "due_at").await, n as i64, "every tenant migrated");

    eprintln!("N = {n}: nothing pending…");
    let idle = migrate_process(&pg.url, 2, 2);
    Figures { n, create, creators, floor2: (before, after), run2, jobs, floor_j: (before_j, after_j), run_j, idle }
}

fn report(f: &Figures) {
    let n = f.n;
    let floor = |(a, b): (Duration, Duration)| (ms_per_tenant(a, n) + ms_per_tenant(b, n)) / 2.0;
    println!("N = {n}");
    println!(
        "  create (in process, {} creators): {:.2} ms per tenant, {:.0} tenants/s",
        f.creators,
        ms_per_tenant(f.create, n),
        n as f64 / f.create.as_secs_f64()
    );
    for (label, floors, (run, rss)) in
        [("--jobs 2", f.floor2, f.run2), (&*format!("--jobs {}", f.jobs), f.floor_j, f.run_j)]
    {
        let (floor_ms, run_ms) = (floor(floors), ms_per_tenant(run, n));
        println!(
            "  new migration, {label}: {run_ms:.3} ms per tenant ({:.1} s), floor {floor_ms:.3} ms \
             (before {:.3}, after {:.3}), ratio {:.2}x (target <= 1.15x); peak RSS {:.1} MiB (target <= 20)",
            run.as_secs_f64(),
            ms_per_tenant(floors.0, n),
            ms_per_tenant(floors.1, n),
            run_ms / floor_ms,
            rss as f64 / 1024.0
        );
    }
    let (idle, rss) = f.idle;
    println!(
        "  nothing pending, --jobs 2: {:.3} ms per tenant ({:.2} s, target <= 0.25 ms); peak RSS {:.1} MiB",
        ms_per_tenant(idle, n),
        idle.as_secs_f64(),
        rss as f64 / 1024.0
    );
}

fn main() -> std::process::ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    if let Ok(extra) = std::env::var(CHILD) {
        let extra = extra.parse().expect("a number of migrations");
        return runtime.block_on(child(extra));
    }
    let sizes: Vec<usize> = std::env::var("TENANCY_BENCH_N")
        .unwrap_or_else(|_| "1000,10000".to_owned())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let jobs = env_usize("TENANCY_BENCH_JOBS", 4);
    let mut all = Vec::new();
    for n in sizes {
        let figures = runtime.block_on(measure(n, jobs));
        report(&figures);
        all.push(figures);
    }
    if let [small, .., large] = &all[..] {
        let per = |f: &Figures, d: Duration| ms_per_tenant(d, f.n);
        println!(
            "flat in N ({} -> {}): new migration --jobs 2 {:.3} -> {:.3} ms per tenant ({:.2}x); nothing pending \
             {:.3} -> {:.3} ms ({:.2}x); peak RSS {:.1} -> {:.1} MiB",
            small.n,
            large.n,
            per(small, small.run2.0),
            per(large, large.run2.0),
            per(large, large.run2.0) / per(small, small.run2.0),
            per(small, small.idle.0),
            per(large, large.idle.0),
            per(large, large.idle.0) / per(small, small.idle.0),
            small.run2.1 as f64 / 1024.0,
            large.run2.1 as f64 / 1024.0
        );
    }
    std::process::ExitCode::SUCCESS
}
