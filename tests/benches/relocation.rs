//! Relocation benchmark (issue 13): moving a tenant with its data, and creating a tenant
//! from a template. Run with `cargo bench -p tenancy-tests --bench relocation`
//! (PostgreSQL on 127.0.0.1:5432 or `TENANCY_TEST_POSTGRES_URL`; the SQLite master is a
//! temporary file). `TENANCY_BENCH_ROWS` scales the moved tenant (default 100000: a tenth
//! projects, six tenths tasks, three tenths comments); `TENANCY_BENCH_CLONES` sets N of the
//! clone benchmark (default 100), `TENANCY_BENCH_DATABASE_CLONES` its database-mode count
//! (default 5); `TENANCY_BENCH_LOG_STATEMENTS=1` makes the server log every statement of
//! the clone benchmark's master with its duration (for profiling; server log access needed).
//!
//! 1. **Move.** One tenant travels through every ordered pair of PostgreSQL modes
//!    (database → schema → table → database → table → schema → database) with
//!    `Tenancy::move_tenant` (default options: the source is kept, then removed untimed
//!    with `remove_leftovers` before the next move), beside a small table-isolated
//!    bystander whose rows are checked unchanged at the end. After each move, the floor:
//!    the same rows from the same (kept) source piped with `COPY (SELECT …) TO STDOUT` into
//!    `COPY … FROM STDIN` of a freshly migrated target of the same kind (a scratch
//!    database, or a scratch schema of the master for schema and table targets), through
//!    sqlx's raw copy on two superuser connections. The floor times the data only; the
//!    move's time includes everything (freeze, provisioning and migrating the target,
//!    copy, verification by checksums, the switch), and its steps are printed apart.
//!    On a SQLite master: database → table → database, against `INSERT … SELECT` over
//!    `ATTACH` into a freshly migrated scratch file, in one transaction.
//! 2. **Clone.** N schema tenants created from a migrated schema template holding a few
//!    rows (`createtenant --from`) against N created with `--migrate`, alternating in one
//!    process; median and p90 per create, ratio clone / migrate. The same for a handful
//!    of database tenants.
//! 3. **Clean-up.** Every tenant is deleted, the masters and scratch databases dropped,
//!    and `pg_database` / `pg_roles` checked for anything left with this run's names.

#![allow(missing_docs, clippy::print_stdout, reason = "a benchmark binary")]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use example_app::Migrator;
use futures_util::StreamExt;
use sea_orm::sqlx::postgres::PgPoolCopyExt;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement, TransactionTrait};
use sea_orm_migration::MigratorTrait;
use tenancy::relocation::{MoveEvent, MoveOptions, MoveStep, MoveTo};
use tenancy::{Isolation, NewDatabase, NewTenant, Placement, Tenancy, Tenant, TenantDatabase, TenantId};
use tenancy_migrate::MigrateOnCreate;
use tenancy_test_support::{PgMaster, TempDir, postgres_admin_url, unique_name, with_database};

/// The copied tables, parents first, with the columns copied.
const TABLES: [(&str, &str); 3] = [
    ("projects", "id, tenant_id, name, created_at"),
    ("tasks", "id, tenant_id, project_id, title, done, created_at"),
    ("comments", "id, tenant_id, task_id, body, created_at"),
];

/// Bytes gathered per `COPY … FROM STDIN` send of the floor.
const COPY_BUFFER: usize = 256 * 1024;

/// Keys of the bystander's rows start here, far above the moved tenant's.
const BYSTANDER_BASE: i64 = 10_000_000;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// Rows per table for `total` rows: 10 % projects, 60 % tasks, 30 % comments.
fn split(total: usize) -> (i64, i64, i64) {
    let projects = (total / 10).max(1) as i64;
    let tasks = (total * 6 / 10).max(1) as i64;
    (projects, tasks, total as i64 - projects - tasks)
}

fn q(ident: &str) -> String {
    tenancy::sql::quote_ident(ident)
}

fn lit(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

async fn exec(db: &impl ConnectionTrait, sql: &str) {
    db.execute_unprepared(sql).await.unwrap_or_else(|err| panic!("{sql}: {err}"));
}

async fn scalar_i64(db: &impl ConnectionTrait, sql: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
        .expect("one row");
    row.try_get_by_index::<i64>(0).expect("an integer")
}

async fn scalar_text(db: &impl ConnectionTrait, sql: &str) -> String {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
        .expect("one row");
    row.try_get_by_index::<String>(0).expect("a text")
}

/// Inserts the moved tenant's rows (keys from 1) or the bystander's (keys from
/// [`BYSTANDER_BASE`]) into `schema`'s tables, as the superuser, with valid foreign keys.
async fn fill(db: &DatabaseConnection, schema: &str, tenant: &str, rows: (i64, i64, i64), base: i64) {
    let (projects, tasks, comments) = rows;
    let (s, t) = (q(schema), lit(tenant));
    let sql = match db.get_database_backend() {
        DbBackend::Sqlite => format!(
            "WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < {projects}) \
             INSERT INTO {s}.projects (id, tenant_id, name, created_at) \
             SELECT {base} + i, {t}, 'Project ' || i, '2026-01-01 00:00:00+00:00' FROM g; \
             WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < {tasks}) \
             INSERT INTO {s}.tasks (id, tenant_id, project_id, title, done, created_at) \
             SELECT {base} + i, {t}, {base} + (i - 1) % {projects} + 1, 'Task ' || i, i % 3 = 0, \
                    '2026-01-02 00:00:00+00:00' FROM g; \
             WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < {comments}) \
             INSERT INTO {s}.comments (id, tenant_id, task_id, body, created_at) \
             SELECT {base} + i, {t}, {base} + (i - 1) % {tasks} + 1, 'A comment on the task, number ' || i, \
                    '2026-01-03 00:00:00+00:00' FROM g;"
        ),
        _ => format!(
            "INSERT INTO {s}.projects (id, tenant_id, name, created_at) \
             SELECT {base} + g, {t}, 'Project ' || g, timestamptz '2026-01-01' + g * interval '1 second' \
             FROM generate_series(1, {projects}) g; \
             INSERT INTO {s}.tasks (id, tenant_id, project_id, title, done, created_at) \
             SELECT {base} + g, {t}, {base} + (g - 1) % {projects} + 1, 'Task ' || g, g % 3 = 0, \
                    timestamptz '2026-01-02' + g * interval '1 second' \
             FROM generate_series(1, {tasks}) g; \
             INSERT INTO {s}.comments (id, tenant_id, task_id, body, created_at) \
             SELECT {base} + g, {t}, {base} + (g - 1) % {tasks} + 1, 'A comment on the task, number ' || g, \
                    timestamptz '2026-01-03' + g * interval '1 second' \
             FROM generate_series(1, {comments}) g; \
             SELECT setval(pg_get_serial_sequence('{s}.projects', 'id'), {base} + {projects}); \
             SELECT setval(pg_get_serial_sequence('{s}.tasks', 'id'), {base} + {tasks}); \
             SELECT setval(pg_get_serial_sequence('{s}.comments', 'id'), {base} + {comments});"
        ),
    };
    exec(db, &sql).await;
}

/// Where a tenant's rows are, as the superuser reaches them.
#[derive(Clone, Debug)]
enum Storage {
    /// A database of its own (PostgreSQL: its name; SQLite: its file).
    Database(String),
    /// A schema of the master.
    Schema(String),
    /// The master's shared tables, filtered by the tenant column.
    Table,
}

impl Storage {
    fn of(tenant: &Tenant, sqlite_dir: Option<&std::path::Path>) -> Storage {
        match tenant.placement() {
            Placement::Database(TenantDatabase::Postgres(db)) => Storage::Database(db.name.clone()),
            Placement::Database(TenantDatabase::Sqlite(db)) => {
                Storage::Database(db.file_in(sqlite_dir.expect("a SQLite master")).display().to_string())
            }
            Placement::Schema { schema, .. } => Storage::Schema(schema.clone()),
            Placement::Table { .. } => Storage::Table,
            other => panic!("no relational storage: {other:?}"),
        }
    }

    fn mode(&self) -> &'static str {
        match self {
            Storage::Database(_) => "database",
            Storage::Schema(_) => "schema",
            Storage::Table => "table",
        }
    }

    fn schema(&self) -> &str {
        match self {
            Storage::Schema(schema) => schema,
            Storage::Database(_) | Storage::Table => "public",
        }
    }

    /// `SELECT <columns> FROM <table>` of the tenant's rows (on SQLite, of the table in
    /// the file the connection opened).
    fn select(&self, backend: DbBackend, table: &str, columns: &str, tenant: &str) -> String {
        let filter = match self {
            Storage::Table => format!(" WHERE tenant_id = {}", lit(tenant)),
            Storage::Database(_) | Storage::Schema(_) => String::new(),
        };
        match backend {
            DbBackend::Sqlite => format!("SELECT {columns} FROM {}{filter}", q(table)),
            _ => format!("SELECT {columns} FROM {}.{}{filter}", q(self.schema()), q(table)),
        }
    }

    /// A superuser connection to the storage (PostgreSQL).
    async fn connect_pg(&self, pg: &PgMaster) -> DatabaseConnection {
        match self {
            Storage::Database(name) => {
                Database::connect(with_database(&postgres_admin_url(), name)).await.expect("connect tenant database")
            }
            Storage::Schema(_) | Storage::Table => pg.connect().await,
        }
    }

    /// Rows of the tenant and an order-independent checksum of them (every column; on
    /// SQLite a sum over every column, as it has no digest function).
    async fn digest(&self, db: &DatabaseConnection, tenant: &str) -> (i64, String) {
        let backend = db.get_database_backend();
        let mut rows = 0;
        let mut sums = Vec::new();
        for (table, columns) in TABLES {
            let select = self.select(backend, table, columns, tenant);
            rows += scalar_i64(db, &format!("SELECT count(*) FROM ({select}) x")).await;
            let sum = match backend {
                DbBackend::Sqlite => {
                    let terms = match table {
                        "projects" => "id * 7 + length(tenant_id) + length(name) * 3 + length(created_at) * 5",
                        "tasks" => {
                            "id * 7 + length(tenant_id) + project_id * 11 + length(title) * 3 + done * 13 \
                                    + length(created_at) * 5"
                        }
                        _ => "id * 7 + length(tenant_id) + task_id * 11 + length(body) * 3 + length(created_at) * 5",
                    };
                    format!(
                        "{}",
                        scalar_i64(db, &format!("SELECT CAST(total({terms}) AS INTEGER) FROM ({select}) x")).await
                    )
                }
                _ => {
                    scalar_text(
                        db,
                        &format!(
                            "SELECT md5(COALESCE(string_agg(r, E'\\n' ORDER BY r), '')) \
                             FROM (SELECT to_jsonb(x)::text AS r FROM ({select}) x) y"
                        ),
                    )
                    .await
                }
            };
            sums.push(sum);
        }
        (rows, sums.join("/"))
    }
}

/// Wall-clock marks of a move's steps, from `MoveOptions::on_event`.
#[derive(Clone, Default)]
struct Marks(Arc<Mutex<Vec<(MoveStep, Instant)>>>);

impl Marks {
    fn options(&self, to: MoveTo) -> MoveOptions {
        let marks = self.0.clone();
        MoveOptions::new(to).on_event(Arc::new(move |event| {
            if let MoveEvent::Step(step) = event {
                marks.lock().expect("marks").push((*step, Instant::now()));
            }
        }))
    }

    /// `(prepare, [(step, time)])`: before the first step, then each step to the next
    /// mark (the last to `end`).
    fn steps(&self, start: Instant, end: Instant) -> (Duration, Vec<(MoveStep, Duration)>) {
        let marks = self.0.lock().expect("marks");
        let prepare = marks.first().map_or(end - start, |(_, at)| *at - start);
        let steps = marks
            .iter()
            .enumerate()
            .map(|(i, (step, at))| (*step, marks.get(i + 1).map_or(end, |(_, next)| *next) - *at))
            .collect();
        (prepare, steps)
    }
}

/// One measured move.
struct MoveRow {
    pair: String,
    rows: i64,
    moved: Duration,
    floor: Duration,
    prepare: Duration,
    steps: Vec<(MoveStep, Duration)>,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn print_moves(title: &str, floor_name: &str, rows: &[MoveRow]) {
    println!("{title}");
    println!(
        "  {:<20} {:>8} {:>10} {:>12} {:>12} {:>12} {:>12}",
        "pair", "rows", "move s", "move rows/s", "floor s", "floor rows/s", "move/floor"
    );
    for r in rows {
        println!(
            "  {:<20} {:>8} {:>10.3} {:>12.0} {:>12.3} {:>12.0} {:>12.1}",
            r.pair,
            r.rows,
            secs(r.moved),
            r.rows as f64 / secs(r.moved),
            secs(r.floor),
            r.rows as f64 / secs(r.floor),
            secs(r.moved) / secs(r.floor),
        );
    }
    println!("  floor: {floor_name}");
    println!("  where a move's time goes (ms; from MoveOptions::on_event):");
    println!(
        "  {:<20} {:>8} {:>8} {:>10} {:>8} {:>8} {:>8} {:>11}",
        "pair", "prepare", "freeze", "provision", "copy", "verify", "switch", "copy/floor"
    );
    for r in rows {
        let step =
            |wanted: MoveStep| r.steps.iter().find(|(s, _)| *s == wanted).map_or(0.0, |(_, d)| d.as_secs_f64() * 1e3);
        println!(
            "  {:<20} {:>8.0} {:>8.0} {:>10.0} {:>8.0} {:>8.0} {:>8.0} {:>11.2}",
            r.pair,
            r.prepare.as_secs_f64() * 1e3,
            step(MoveStep::Freeze),
            step(MoveStep::Provision),
            step(MoveStep::Copy),
            step(MoveStep::Verify),
            step(MoveStep::Switch),
            step(MoveStep::Copy) / (r.floor.as_secs_f64() * 1e3),
        );
    }
}

/// A freshly migrated target of `mode`'s kind for the PostgreSQL floor: a scratch
/// database, or a scratch schema of the master. Returns the connection and the schema.
async fn pg_floor_target(pg: &PgMaster, mode: Isolation) -> (DatabaseConnection, String, Option<String>) {
    match mode {
        Isolation::Database => {
            let name = unique_name("floordb");
            pg.track_database(&name);
            exec(&pg.admin, &format!("CREATE DATABASE {}", q(&name))).await;
            let db = Database::connect(with_database(&postgres_admin_url(), &name)).await.expect("connect scratch");
            Migrator::up(&db, None).await.expect("migrate the scratch database");
            (db, "public".to_owned(), Some(name))
        }
        _ => {
            let schema = unique_name("floor");
            let db = pg.connect().await;
            let txn = db.begin().await.expect("begin");
            exec(&txn, &format!("CREATE SCHEMA {}", q(&schema))).await;
            exec(&txn, &format!("SELECT set_config('search_path', {}, true)", lit(&q(&schema)))).await;
            Migrator::up(&txn, None).await.expect("migrate the scratch schema");
            txn.commit().await.expect("commit");
            (db, schema, None)
        }
    }
}

/// The floor: the tenant's rows of every table from `source` piped with
/// `COPY (SELECT …) TO STDOUT` into `COPY … FROM STDIN` of a fresh target of `mode`.
async fn pg_copy_floor(pg: &PgMaster, source: &Storage, tenant: &str, mode: Isolation, expected: i64) -> Duration {
    let from = source.connect_pg(pg).await;
    let (into, schema, database) = pg_floor_target(pg, mode).await;
    let (out_pool, in_pool) = (from.get_postgres_connection_pool(), into.get_postgres_connection_pool());
    let started = Instant::now();
    let mut copied = 0;
    for (table, columns) in TABLES {
        let mut out = out_pool
            .copy_out_raw(&format!("COPY ({}) TO STDOUT", source.select(DbBackend::Postgres, table, columns, tenant)))
            .await
            .expect("COPY TO STDOUT");
        let mut sink = in_pool
            .copy_in_raw(&format!("COPY {}.{} ({columns}) FROM STDIN", q(&schema), q(table)))
            .await
            .expect("COPY FROM STDIN");
        // COPY TO STDOUT yields one message per row: gather them into larger sends, as
        // `psql` does, so the floor is not a measure of small writes.
        let mut buffer = Vec::with_capacity(COPY_BUFFER + 4096);
        while let Some(chunk) = out.next().await {
            buffer.extend_from_slice(&chunk.expect("a COPY chunk"));
            if buffer.len() >= COPY_BUFFER {
                sink.send(buffer.as_slice()).await.expect("send a COPY chunk");
                buffer.clear();
            }
        }
        if !buffer.is_empty() {
            sink.send(buffer.as_slice()).await.expect("send a COPY chunk");
        }
        copied += sink.finish().await.expect("finish COPY");
    }
    let elapsed = started.elapsed();
    assert_eq!(copied as i64, expected, "the floor copied every row");
    let _ = from.close().await;
    let _ = into.close().await;
    match database {
        Some(name) => exec(&pg.admin, &format!("DROP DATABASE {} WITH (FORCE)", q(&name))).await,
        None => {
            let master = pg.connect().await;
            exec(&master, &format!("DROP SCHEMA {} CASCADE", q(&schema))).await;
            let _ = master.close().await;
        }
    }
    elapsed
}

/// A timed move.
struct Timed {
    total: Duration,
    prepare: Duration,
    steps: Vec<(MoveStep, Duration)>,
    /// The tenant as the registry holds it after the move.
    tenant: Tenant,
}

/// Moves `id` to `to`, timed, with its steps' marks.
async fn timed_move(tenancy: &Tenancy, id: &TenantId, to: MoveTo, hooks: &MigrateOnCreate<'_>) -> Timed {
    let marks = Marks::default();
    let options = marks.options(to);
    let started = Instant::now();
    let moved = tenancy.move_tenant(id.clone(), &options, hooks).await.expect("move the tenant");
    let end = Instant::now();
    let (prepare, steps) = marks.steps(started, end);
    Timed { total: end - started, prepare, steps, tenant: moved.tenant }
}

async fn bench_pg_moves(pg: &PgMaster, dir: &TempDir, total: usize) -> Vec<MoveRow> {
    let tenancy = pg.tenancy(dir).await;
    let hooks = MigrateOnCreate::new(&Migrator);
    let split = split(total);
    let total = split.0 + split.1 + split.2;

    // The bystander: table-isolated, its keys far above the mover's.
    let bystander: TenantId = unique_name("bystander").parse().expect("an id");
    let new = NewTenant::new(bystander.clone(), "Bystander", Isolation::Table).expect("new").migrate(true);
    tenancy.create_tenant(new, &hooks).await.expect("create the bystander");
    let master = pg.connect().await;
    fill(&master, "public", bystander.as_str(), (10, 20, 10), BYSTANDER_BASE).await;
    let bystander_before = Storage::Table.digest(&master, bystander.as_str()).await;

    // The mover: a database tenant, filled by the superuser in its own database.
    let id: TenantId = unique_name("mover").parse().expect("an id");
    let new = NewTenant::new(id.clone(), "Mover", Isolation::Database)
        .expect("new")
        .database(pg.new_database("bench-pw"))
        .migrate(true);
    let created = tenancy.create_tenant(new, &hooks).await.expect("create the mover");
    let mut storage = Storage::of(&created.tenant, None);
    {
        let db = storage.connect_pg(pg).await;
        fill(&db, "public", id.as_str(), split, 0).await;
        exec(&db, "ANALYZE").await;
        let _ = db.close().await;
    }
    let digest = {
        let db = storage.connect_pg(pg).await;
        let digest = storage.digest(&db, id.as_str()).await;
        let _ = db.close().await;
        digest
    };
    assert_eq!(digest.0, total, "the mover holds its rows");

    let route = [Isolation::Schema, Isolation::Table, Isolation::Database, Isolation::Table, Isolation::Schema];
    let mut rows = Vec::new();
    for to in route.into_iter().chain([Isolation::Database]) {
        let move_to = match to {
            Isolation::Database => MoveTo::Database(pg.new_database("bench-pw")),
            Isolation::Schema => MoveTo::Schema,
            _ => MoveTo::Table,
        };
        let pair = format!("{} -> {}", storage.mode(), to);
        let Timed { total: moved, prepare, steps, tenant } = timed_move(&tenancy, &id, move_to, &hooks).await;
        let target = Storage::of(&tenant, None);
        {
            let db = target.connect_pg(pg).await;
            assert_eq!(target.digest(&db, id.as_str()).await, digest, "{pair}: every row arrived unchanged");
            let _ = db.close().await;
        }
        let floor = pg_copy_floor(pg, &storage, id.as_str(), to, total).await;
        let removed = tenancy.remove_leftovers(&id).await.expect("remove the source");
        assert!(!removed.is_empty(), "{pair}: the source was kept");
        rows.push(MoveRow { pair, rows: total, moved, floor, prepare, steps });
        storage = target;
    }
    assert_eq!(
        Storage::Table.digest(&master, bystander.as_str()).await,
        bystander_before,
        "the bystander's rows are untouched"
    );
    for tenant in [&id, &bystander] {
        tenancy.delete_tenant(tenant.clone(), &Default::default()).await.expect("delete a tenant");
    }
    let _ = master.close().await;
    rows
}

/// A single-connection SQLite pool on `file`.
async fn sqlite_file(file: &str) -> DatabaseConnection {
    let mut options = ConnectOptions::new(format!("sqlite://{file}?mode=rwc"));
    options.max_connections(1).min_connections(1).sqlx_logging(false);
    Database::connect(options).await.expect("open a SQLite file")
}

/// The SQLite floor: `INSERT … SELECT` over `ATTACH` into a freshly migrated scratch
/// file, in one transaction.
async fn sqlite_floor(dir: &TempDir, source: &Storage, tenant: &str, expected: i64) -> Duration {
    let scratch = dir.path().join(format!("{}.db", unique_name("floor")));
    let db = sqlite_file(&scratch.display().to_string()).await;
    Migrator::up(&db, None).await.expect("migrate the scratch file");
    let file = match source {
        Storage::Database(file) => file.clone(),
        _ => dir.path().join("master.db").display().to_string(),
    };
    let started = Instant::now();
    exec(&db, &format!("ATTACH DATABASE {} AS src", lit(&file))).await;
    let txn = db.begin().await.expect("begin");
    let mut copied = 0;
    for (table, columns) in TABLES {
        let filter = match source {
            Storage::Table => format!(" WHERE tenant_id = {}", lit(tenant)),
            _ => String::new(),
        };
        copied += txn
            .execute_unprepared(&format!(
                "INSERT INTO main.{table} ({columns}) SELECT {columns} FROM src.{table}{filter}"
            ))
            .await
            .expect("INSERT … SELECT")
            .rows_affected();
    }
    txn.commit().await.expect("commit");
    let elapsed = started.elapsed();
    assert_eq!(copied as i64, expected, "the floor copied every row");
    exec(&db, "DETACH DATABASE src").await;
    let _ = db.close().await;
    let _ = std::fs::remove_file(scratch);
    elapsed
}

async fn bench_sqlite_moves(total: usize) -> Vec<MoveRow> {
    let dir = TempDir::new();
    let tenancy = dir.sqlite_builder().connect().await.expect("connect the SQLite master");
    let hooks = MigrateOnCreate::new(&Migrator);
    let split = split(total);
    let total = split.0 + split.1 + split.2;
    let master_file = dir.path().join("master.db").display().to_string();

    let bystander: TenantId = unique_name("bystander").parse().expect("an id");
    let new = NewTenant::new(bystander.clone(), "Bystander", Isolation::Table).expect("new").migrate(true);
    tenancy.create_tenant(new, &hooks).await.expect("create the bystander");
    let master = sqlite_file(&master_file).await;
    fill(&master, "main", bystander.as_str(), (10, 20, 10), BYSTANDER_BASE).await;
    let bystander_before = Storage::Table.digest(&master, bystander.as_str()).await;
    let _ = master.close().await;

    let id: TenantId = unique_name("mover").parse().expect("an id");
    let new = NewTenant::new(id.clone(), "Mover", Isolation::Database)
        .expect("new")
        .database(NewDatabase::create(unique_name("moverdb")))
        .migrate(true);
    let created = tenancy.create_tenant(new, &hooks).await.expect("create the mover");
    let mut storage = Storage::of(&created.tenant, tenancy.sqlite_dir());
    let digest = {
        let Storage::Database(file) = &storage else { unreachable!("a database tenant") };
        let db = sqlite_file(file).await;
        fill(&db, "main", id.as_str(), split, 0).await;
        let digest = storage.digest(&db, id.as_str()).await;
        let _ = db.close().await;
        digest
    };
    assert_eq!(digest.0, total, "the mover holds its rows");

    let mut rows = Vec::new();
    for to in [Isolation::Table, Isolation::Database] {
        let move_to = match to {
            Isolation::Database => MoveTo::Database(NewDatabase::create(unique_name("moverdb"))),
            _ => MoveTo::Table,
        };
        let pair = format!("{} -> {}", storage.mode(), to);
        let Timed { total: moved, prepare, steps, tenant } = timed_move(&tenancy, &id, move_to, &hooks).await;
        let target = Storage::of(&tenant, tenancy.sqlite_dir());
        {
            let file = match &target {
                Storage::Database(file) => file.clone(),
                _ => master_file.clone(),
            };
            let db = sqlite_file(&file).await;
            assert_eq!(target.digest(&db, id.as_str()).await, digest, "{pair}: every row arrived unchanged");
            let _ = db.close().await;
        }
        let floor = sqlite_floor(&dir, &storage, id.as_str(), total).await;
        let removed = tenancy.remove_leftovers(&id).await.expect("remove the source");
        assert!(!removed.is_empty(), "{pair}: the source was kept");
        rows.push(MoveRow { pair, rows: total, moved, floor, prepare, steps });
        storage = target;
    }
    let master = sqlite_file(&master_file).await;
    assert_eq!(
        Storage::Table.digest(&master, bystander.as_str()).await,
        bystander_before,
        "the bystander's rows are untouched"
    );
    let _ = master.close().await;
    for tenant in [&id, &bystander] {
        tenancy.delete_tenant(tenant.clone(), &Default::default()).await.expect("delete a tenant");
    }
    rows
}

fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    let index = ((samples.len() as f64 * p).ceil() as usize).saturating_sub(1).min(samples.len() - 1);
    samples[index].as_secs_f64() * 1e3
}

/// Creates `n` tenants of `mode` from `template` and `n` with `--migrate`, alternating
/// which goes first; prints median and p90 of each and the ratios.
async fn clone_round(pg: &PgMaster, tenancy: &Tenancy, template: &TenantId, mode: Isolation, n: usize) {
    let hooks = MigrateOnCreate::new(&Migrator);
    let (mut cloned, mut migrated) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut made = Vec::with_capacity(2 * n);
    for i in 0..n {
        for clone_it in if i % 2 == 0 { [true, false] } else { [false, true] } {
            let id: TenantId = unique_name(if clone_it { "clone" } else { "fresh" }).parse().expect("an id");
            let mut new = NewTenant::new(id.clone(), "Bench tenant", mode).expect("new");
            if mode == Isolation::Database {
                new = new.database(pg.new_database("bench-pw"));
            }
            new = if clone_it { new.from_template(template.clone()) } else { new.migrate(true) };
            let started = Instant::now();
            tenancy.create_tenant(new, &hooks).await.expect("create a tenant");
            let elapsed = started.elapsed();
            if clone_it {
                cloned.push(elapsed)
            } else {
                migrated.push(elapsed)
            }
            made.push(id);
        }
    }
    let (clone_median, clone_p90) = (percentile(&mut cloned, 0.5), percentile(&mut cloned, 0.9));
    let (migrate_median, migrate_p90) = (percentile(&mut migrated, 0.5), percentile(&mut migrated, 0.9));
    println!(
        "  {mode:<8} N = {n:<4} from template: median {clone_median:>8.2} ms  p90 {clone_p90:>8.2} ms\n  \
         {:<15} --migrate:      median {migrate_median:>8.2} ms  p90 {migrate_p90:>8.2} ms   \
         ratio clone/migrate median {:.2}  p90 {:.2}",
        "",
        clone_median / migrate_median,
        clone_p90 / migrate_p90,
    );
    // A clone holds the template's rows under its own id.
    if let Some(first) = made.iter().find(|id| id.as_str().starts_with("clone")) {
        let tenant = tenancy.get_tenant(first).await.expect("a clone");
        let storage = Storage::of(&tenant, None);
        let db = storage.connect_pg(pg).await;
        let rows = storage.digest(&db, first.as_str()).await.0;
        assert_eq!(rows, 3 + 5 + 2, "the clone holds the template's rows under its id");
        let _ = db.close().await;
    }
    for id in made {
        tenancy.delete_tenant(id, &Default::default()).await.expect("delete a tenant");
    }
}

async fn bench_clones(pg: &PgMaster, dir: &TempDir, n: usize, database_n: usize) {
    let tenancy = pg.tenancy(dir).await;
    let hooks = MigrateOnCreate::new(&Migrator);
    println!(
        "clone benchmark: create from a migrated template holding 10 rows vs create with --migrate (ms per create)"
    );
    for (mode, count) in [(Isolation::Schema, n), (Isolation::Database, database_n)] {
        if count == 0 {
            continue;
        }
        let template: TenantId = unique_name("template").parse().expect("an id");
        let mut new = NewTenant::new(template.clone(), "Template", mode).expect("new").migrate(true);
        if mode == Isolation::Database {
            new = new.database(pg.new_database("bench-pw"));
        }
        let created = tenancy.create_tenant(new, &hooks).await.expect("create the template");
        let storage = Storage::of(&created.tenant, None);
        let db = storage.connect_pg(pg).await;
        fill(&db, storage.schema(), template.as_str(), (3, 5, 2), 0).await;
        let _ = db.close().await;
        // Warm-up: one of each, not counted.
        let warm: Vec<TenantId> =
            vec![unique_name("warm").parse().expect("an id"), unique_name("warm").parse().expect("an id")];
        for (i, id) in warm.iter().enumerate() {
            let mut new = NewTenant::new(id.clone(), "Warm-up", mode).expect("new");
            if mode == Isolation::Database {
                new = new.database(pg.new_database("bench-pw"));
            }
            new = if i == 0 { new.from_template(template.clone()) } else { new.migrate(true) };
            tenancy.create_tenant(new, &hooks).await.expect("warm-up create");
            tenancy.delete_tenant(id.clone(), &Default::default()).await.expect("delete a tenant");
        }
        clone_round(pg, &tenancy, &template, mode, count).await;
        tenancy.delete_tenant(template, &Default::default()).await.expect("delete the template");
    }
}

/// Databases and roles with this process's unique names, or the masters' derived roles.
async fn residue(masters: &[String]) -> Vec<String> {
    let admin = Database::connect(postgres_admin_url()).await.expect("connect admin");
    let pid = format!("%\\_{}\\_%", std::process::id());
    let mut prefixes = Vec::new();
    for master in masters {
        prefixes.push(format!("rolname LIKE 'tnt\\_' || left(md5({}), 10) || '\\_%'", lit(master)));
        prefixes.push(format!("rolname = 'tenancy_app_' || left(md5({}), 12)", lit(master)));
    }
    let roles = if prefixes.is_empty() { "false".to_owned() } else { prefixes.join(" OR ") };
    let rows = admin
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            format!(
                "SELECT 'database ' || datname FROM pg_database WHERE datname LIKE {p} \
                 UNION ALL SELECT 'role ' || rolname FROM pg_roles WHERE rolname LIKE {p} OR {roles}",
                p = lit(&pid)
            ),
        ))
        .await
        .expect("residue query");
    let _ = admin.close().await;
    rows.iter().map(|row| row.try_get_by_index::<String>(0).expect("text")).collect()
}

#[tokio::main]
async fn main() {
    let total = env_usize("TENANCY_BENCH_ROWS", 100_000);
    let clones = env_usize("TENANCY_BENCH_CLONES", 100);
    let database_clones = env_usize("TENANCY_BENCH_DATABASE_CLONES", 5);
    let mut masters = Vec::new();
    {
        let Some(pg) = PgMaster::create().await else {
            eprintln!("PostgreSQL is not reachable; nothing measured");
            std::process::exit(1);
        };
        masters.push(pg.name.clone());
        let dir = TempDir::new();
        let rows = bench_pg_moves(&pg, &dir, total).await;
        print_moves(
            "move benchmark, PostgreSQL: one tenant through every ordered pair of modes (source kept)",
            "COPY (SELECT …) TO STDOUT piped into COPY … FROM STDIN (sqlx raw copy) of a freshly migrated scratch \
             database/schema; data only",
            &rows,
        );
    }
    let rows = bench_sqlite_moves(total).await;
    print_moves(
        "move benchmark, SQLite master",
        "INSERT … SELECT over ATTACH into a freshly migrated scratch file, one transaction; data only",
        &rows,
    );
    {
        let Some(pg) = PgMaster::create().await else {
            eprintln!("PostgreSQL is not reachable; nothing measured");
            std::process::exit(1);
        };
        masters.push(pg.name.clone());
        if std::env::var_os("TENANCY_BENCH_LOG_STATEMENTS").is_some() {
            // Profiling: the server logs every statement on this master with its duration.
            exec(&pg.admin, &format!("ALTER DATABASE {} SET log_min_duration_statement = 0", q(&pg.name))).await;
        }
        let dir = TempDir::new();
        bench_clones(&pg, &dir, clones, database_clones).await;
    }
    let left = residue(&masters).await;
    assert!(left.is_empty(), "left behind: {left:?}");
    println!("clean-up: no database or role of this run is left in pg_database / pg_roles");
}
