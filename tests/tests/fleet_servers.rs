//! Fleet runs across three PostgreSQL servers (the main test server and two of the test's
//! own, [`PgServer`]): servers in parallel within their share of the jobs, a server
//! stopped in the middle of a run and `resume` once it is back, canary stages, and a run
//! restricted to one server. Each tenant's migrations are read with the test's own SQL on
//! its own server.

#![allow(elided_lifetimes_in_paths, reason = "async_trait migrations must match sea-orm-migration's trait")]
#![allow(non_camel_case_types, reason = "migration structs are named like their migration files")]

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use example_app::Migrator;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use sea_orm_migration::prelude::*;
use tenancy::ledger::TenantOutcome;
use tenancy::secrets::Password;
use tenancy::{Isolation, NewDatabase, NewTenant, Tenancy, TenantId};
use tenancy_migrate::Migrators;
use tenancy_migrate::fleet::{FleetOptions, ServerLabel, migrate_all, migrate_all_listed};
use tenancy_test_support::{PgMaster, PgServer, TempDir, count, unique_name};

use crate::common::{Listed, outcomes};

/// The main test server's port (the master's).
const MAIN_PORT: u16 = 5432;

/// The advisory-lock namespace of tenant migrations (`'tena'`, tenancy-migrate's
/// `LOCK_NAMESPACE`): holding `(namespace, hashtext(id))` on a tenant's database makes its
/// migration wait, as a second run would.
const LOCK_NAMESPACE: i32 = 0x7465_6e61;

/// A master on the main server and two more servers, with database tenants on any of them.
struct World {
    pg: PgMaster,
    servers: [PgServer; 2],
    tenancy: Tenancy,
    /// Each tenant's port and database.
    places: Mutex<HashMap<String, (u16, String)>>,
    _dir: TempDir,
}

async fn world() -> Option<World> {
    let first = PgServer::start()?;
    let second = PgServer::start()?;
    let pg = PgMaster::create().await?;
    let dir = TempDir::new();
    let tenancy = pg.tenancy(&dir).await;
    Some(World { pg, servers: [first, second], tenancy, places: Mutex::new(HashMap::new()), _dir: dir })
}

fn label(port: u16) -> ServerLabel {
    // The master's own server by name; the others, not registered, by address.
    if port == MAIN_PORT { ServerLabel::new("master") } else { ServerLabel::new(format!("127.0.0.1:{port}")) }
}

impl World {
    /// The ports of the three servers: the main one, then the test's two.
    fn ports(&self) -> [u16; 3] {
        [MAIN_PORT, self.servers[0].port, self.servers[1].port]
    }

    /// A ready, unmigrated database tenant `id` on the server at `port`.
    async fn tenant(&self, id: &str, port: u16) {
        let database = if port == MAIN_PORT {
            self.pg.new_database("pw")
        } else {
            // Dropped with its server.
            NewDatabase::create(unique_name("db"))
                .login(unique_name("u"), Password::new("pw"))
                .server("127.0.0.1", port)
        };
        let db = database.name().to_owned();
        let new = NewTenant::new(id, id, Isolation::Database).expect("a valid new tenant").database(Some(database));
        self.tenancy.create_tenant(new, &()).await.expect("create tenant");
        self.places.lock().unwrap().insert(id.to_owned(), (port, db));
    }

    /// A superuser connection to tenant `id`'s database, on its server.
    async fn connect(&self, id: &str) -> DatabaseConnection {
        let (port, db) = self.places.lock().unwrap()[id].clone();
        Database::connect(format!("postgres://postgres@127.0.0.1:{port}/{db}")).await.expect("connect to a tenant")
    }

    /// How many migrations tenant `id` has recorded (`None`: no migration table at all).
    async fn applied(&self, id: &str) -> Option<i64> {
        let db = self.connect(id).await;
        let exists = count(&db, "SELECT COUNT(*) FROM pg_tables WHERE tablename = 'seaql_migrations'", vec![]).await;
        let applied =
            if exists == 1 { Some(count(&db, "SELECT COUNT(*) FROM seaql_migrations", vec![]).await) } else { None };
        db.close().await.expect("close");
        applied
    }

    /// Runs `sql` on tenant `id`'s database as the superuser.
    async fn execute(&self, id: &str, sql: &str) {
        let db = self.connect(id).await;
        db.execute_unprepared(sql).await.expect("statement");
        db.close().await.expect("close");
    }

    /// A session holding tenant `id`'s migration lock until it is closed (or its server
    /// stops).
    async fn hold_lock(&self, id: &str) -> DatabaseConnection {
        let db = self.connect(id).await;
        db.execute_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT pg_advisory_lock($1, hashtext($2))",
            [LOCK_NAMESPACE.into(), id.into()],
        ))
        .await
        .expect("take the tenant's migration lock");
        db
    }
}

fn ids(ids: &[&str]) -> Vec<TenantId> {
    ids.iter().map(|id| id.parse().expect("an id")).collect()
}

async fn run(world: &World, migrators: &Migrators, options: FleetOptions) -> Listed {
    let (report, tenants) = migrate_all_listed(&world.tenancy, migrators, &options, &|_| {}).await.expect("fleet run");
    Listed { report, tenants }
}

/// Waits (at most two minutes: a hang guard, not a measurement) until `ready` holds.
async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, mut ready: impl FnMut() -> F) {
    for _ in 0..1200 {
        if ready().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("gave up waiting until {what}");
}

/// Migrations that record, per server port, how many of them run at once: each one
/// counts itself in on its server, waits at a barrier of three (so three tenants are
/// inside together), and counts itself out. A server that ever has more than one inside
/// shows in [`Probe::max`].
#[derive(Default)]
struct Probe {
    inside: HashMap<i32, usize>,
    max: HashMap<i32, usize>,
}

fn probe() -> &'static Mutex<Probe> {
    static PROBE: OnceLock<Mutex<Probe>> = OnceLock::new();
    PROBE.get_or_init(Mutex::default)
}

fn barrier() -> &'static tokio::sync::Barrier {
    static BARRIER: OnceLock<tokio::sync::Barrier> = OnceLock::new();
    BARRIER.get_or_init(|| tokio::sync::Barrier::new(3))
}

async fn probed(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), "SELECT inet_server_port()"))
        .await?
        .ok_or_else(|| DbErr::Custom("no port".to_owned()))?;
    let port: i32 = row.try_get_by_index(0)?;
    {
        let mut probe = probe().lock().unwrap();
        let inside = probe.inside.entry(port).or_default();
        *inside += 1;
        let now = *inside;
        let max = probe.max.entry(port).or_default();
        *max = (*max).max(now);
    }
    barrier().wait().await;
    *probe().lock().unwrap().inside.entry(port).or_default() -= 1;
    Ok(())
}

struct m20260401_000001_probe;

// Named by hand: `DeriveMigrationName` names a migration after its file, one per file.
impl MigrationName for m20260401_000001_probe {
    fn name(&self) -> &str {
        "m20260401_000001_probe"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for m20260401_000001_probe {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        probed(manager).await
    }
}

struct m20260401_000002_probe_again;

// Named by hand: `DeriveMigrationName` names a migration after its file, one per file.
impl MigrationName for m20260401_000002_probe_again {
    fn name(&self) -> &str {
        "m20260401_000002_probe_again"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for m20260401_000002_probe_again {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        probed(manager).await
    }
}

struct ProbeOnce;

impl MigratorTrait for ProbeOnce {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m20260401_000001_probe)]
    }
}

struct ProbeTwice;

impl MigratorTrait for ProbeTwice {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m20260401_000001_probe), Box::new(m20260401_000002_probe_again)]
    }
}

/// Two tenants on each of three servers. With `jobs_per_server` 1 (and 6 jobs), and then
/// with 3 jobs divided among the three servers by default, three tenants run at once (the
/// barrier of three lets none finish before three are inside), never two on one server.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn servers_migrate_in_parallel_within_their_share() {
    let Some(world) = world().await else { return };
    for (n, port) in world.ports().into_iter().enumerate() {
        world.tenant(&format!("p{n}a"), port).await;
        world.tenant(&format!("p{n}b"), port).await;
    }
    let guard = Duration::from_secs(120);

    let options = FleetOptions { jobs: 6, jobs_per_server: 1, ..FleetOptions::default() };
    let report = tokio::time::timeout(guard, run(&world, &Migrators::new(ProbeOnce), options))
        .await
        .expect("three tenants never ran at once");
    assert!(report.succeeded(), "{:?}", report.tenants);
    assert_eq!(report.count(TenantOutcome::Migrated), 6);
    let max = std::mem::take(&mut probe().lock().unwrap().max);
    let expected: HashMap<i32, usize> = world.ports().iter().map(|port| (i32::from(*port), 1)).collect();
    assert_eq!(max, expected, "tenants at once per server port, --jobs-per-server 1");

    // The default share: 3 jobs over 3 servers is 1 each.
    let options = FleetOptions { jobs: 3, ..FleetOptions::default() };
    let report = tokio::time::timeout(guard, run(&world, &Migrators::new(ProbeTwice), options))
        .await
        .expect("three tenants never ran at once");
    assert!(report.succeeded(), "{:?}", report.tenants);
    let max = std::mem::take(&mut probe().lock().unwrap().max);
    assert_eq!(max, expected, "tenants at once per server port, the default share");

    // The report and the ledger name each tenant's server.
    let by_server = report.by_server();
    assert_eq!(by_server.len(), 3);
    for port in world.ports() {
        assert_eq!(by_server[&label(port)].migrated, 2, "{port}");
    }
    for entry in world.tenancy.ledger().entries(report.run_id).await.unwrap() {
        let (port, _) = world.places.lock().unwrap()[&entry.tenant_id].clone();
        assert_eq!(entry.server.as_deref(), Some(label(port).as_str()), "{}", entry.tenant_id);
    }
    for id in ["p0a", "p1b", "p2a"] {
        assert_eq!(world.applied(id).await, Some(2), "{id}");
    }
}

/// Server B is stopped while its first tenant waits for its migration lock and server
/// C's second tenant waits for its own: B's tenant fails naming the server, B's other
/// tenants are not attempted, and C's tenant, released after the outage was recorded,
/// still migrates (a run without `continue_on_error`). The live servers' tenants are
/// served while B is down. Once B is back, `resume` finishes exactly B's tenants.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_down_mid_run_stops_only_its_tenants_and_resume_finishes_them() {
    let Some(mut world) = world().await else { return };
    let [main, b, c] = world.ports();
    for (id, port) in [("m1", main), ("m2", main), ("b1", b), ("b2", b), ("b3", b), ("c1", c), ("c2", c)] {
        world.tenant(id, port).await;
    }
    let b1_lock = world.hold_lock("b1").await;
    let c2_lock = world.hold_lock("c2").await;

    let fleet = {
        let (tenancy, migrators) = (world.tenancy.clone(), Migrators::new(Migrator));
        tokio::spawn(async move {
            let options = FleetOptions { jobs: 3, ..FleetOptions::default() };
            migrate_all_listed(&tenancy, &migrators, &options, &|_| {}).await
        })
    };
    let waiting = |port: u16| async move {
        let admin = Database::connect(format!("postgres://postgres@127.0.0.1:{port}/postgres")).await.unwrap();
        let n =
            count(&admin, "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted", vec![]).await;
        admin.close().await.unwrap();
        n
    };
    wait_until("b1 and c2 wait for their locks, m1, m2 and c1 are migrated", || async {
        waiting(b).await == 1
            && waiting(c).await == 1
            && world.applied("m1").await == Some(3)
            && world.applied("m2").await == Some(3)
            && world.applied("c1").await == Some(3)
    })
    .await;

    // The run goes on on the runtime's other workers meanwhile.
    tokio::task::block_in_place(|| world.servers[0].stop());
    drop(b1_lock);
    let tenancy = world.tenancy.clone();
    wait_until("the ledger records b1's failure", || async {
        let Some(last) = tenancy.ledger().last_run().await.unwrap() else { return false };
        tenancy
            .ledger()
            .entries(last.id)
            .await
            .unwrap()
            .iter()
            .any(|e| e.tenant_id == "b1" && e.outcome == TenantOutcome::Failed)
    })
    .await;
    // The outage is recorded; only now may c2 go on.
    c2_lock.close().await.unwrap();
    let (report, tenants) = fleet.await.unwrap().expect("the run ends");
    let report = Listed { report, tenants };

    assert_eq!(
        outcomes(&report),
        [
            ("b1".into(), TenantOutcome::Failed),
            ("b2".into(), TenantOutcome::NotAttempted),
            ("b3".into(), TenantOutcome::NotAttempted),
            ("c1".into(), TenantOutcome::Migrated),
            ("c2".into(), TenantOutcome::Migrated),
            ("m1".into(), TenantOutcome::Migrated),
            ("m2".into(), TenantOutcome::Migrated),
        ]
    );
    assert!(!report.succeeded());
    assert_eq!(report.unreachable, [label(b)]);
    let b_down = format!("server 127.0.0.1:{b} unreachable");
    let detail = |id: &str| report.tenants.iter().find(|t| t.tenant.as_str() == id).unwrap().detail.clone().unwrap();
    assert!(detail("b1").starts_with(&format!("{b_down}: ")), "{}", detail("b1"));
    assert_eq!(detail("b2"), b_down);
    assert_eq!(detail("b3"), b_down);
    for id in ["m1", "m2", "c1", "c2"] {
        assert_eq!(world.applied(id).await, Some(3), "{id}");
    }
    let ledger = world.tenancy.ledger().entries(report.run_id).await.unwrap();
    let servers: Vec<(&str, TenantOutcome, Option<&str>)> =
        ledger.iter().map(|e| (e.tenant_id.as_str(), e.outcome, e.server.as_deref())).collect();
    let (lm, lb, lc) = (label(main), label(b), label(c));
    assert_eq!(
        servers,
        [
            ("b1", TenantOutcome::Failed, Some(lb.as_str())),
            ("b2", TenantOutcome::NotAttempted, Some(lb.as_str())),
            ("b3", TenantOutcome::NotAttempted, Some(lb.as_str())),
            ("c1", TenantOutcome::Migrated, Some(lc.as_str())),
            ("c2", TenantOutcome::Migrated, Some(lc.as_str())),
            ("m1", TenantOutcome::Migrated, Some(lm.as_str())),
            ("m2", TenantOutcome::Migrated, Some(lm.as_str())),
        ]
    );
    assert!(ledger[0].detail.as_deref().unwrap().starts_with(&b_down), "{:?}", ledger[0].detail);

    // While B is down, the tenants of the live servers are served.
    for id in ["m1", "c2"] {
        let handle = world.tenancy.tenant(id).await.expect("a handle");
        let row = handle
            .query_one_raw(Statement::from_string(handle.get_database_backend(), "SELECT COUNT(*) FROM projects"))
            .await
            .unwrap_or_else(|err| panic!("{id} while B is down: {err}"))
            .expect("a row");
        assert_eq!(row.try_get_by_index::<i64>(0).expect("a count"), 0, "{id}");
    }

    // B comes back: resume takes exactly its three tenants.
    tokio::task::block_in_place(|| world.servers[0].start_again());
    let resumed =
        run(&world, &Migrators::new(Migrator), FleetOptions { resume: true, ..FleetOptions::default() }).await;
    assert_eq!(
        outcomes(&resumed),
        [
            ("b1".into(), TenantOutcome::Migrated),
            ("b2".into(), TenantOutcome::Migrated),
            ("b3".into(), TenantOutcome::Migrated),
        ]
    );
    assert!(resumed.succeeded() && resumed.unreachable.is_empty());
    for id in ["b1", "b2", "b3"] {
        assert_eq!(world.applied(id).await, Some(3), "{id}");
    }
}

/// Two tenants on each server and a tenant whose second migration fails (a `comments`
/// table it cannot index): a canary stage of three takes one tenant per server and stops
/// before the rest, whose databases stay without a migration table; named canary tenants
/// likewise; an unknown canary tenant starts no run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_canary_stops_the_run_before_the_rest() {
    let Some(world) = world().await else { return };
    let [main, b, c] = world.ports();
    for (id, port) in [("m1", main), ("m2", main), ("b1", b), ("b2", b), ("c1", c), ("c2", c)] {
        world.tenant(id, port).await;
    }
    let migrators = Migrators::new(Migrator);

    let unknown = FleetOptions { canary_tenants: Some(ids(&["m1", "zz"])), ..FleetOptions::default() };
    let err = migrate_all(&world.tenancy, &migrators, &unknown, &|_| {}).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Canary tenant(s) not among the tenants this run selects: zz; --canary-tenants takes ids of selected, \
         existing tenants"
    );
    assert_eq!(world.tenancy.ledger().last_run().await.unwrap(), None, "a run was recorded");

    // --canary 3: one tenant per server; b1 fails, so m2, b2 and c2 are never started.
    world.execute("b1", "CREATE TABLE comments (id int)").await;
    let report = run(&world, &migrators, FleetOptions { canary: 3, ..FleetOptions::default() }).await;
    assert_eq!(report.canary, ids(&["b1", "c1", "m1"]));
    assert!(report.canary_failed);
    assert_eq!(
        outcomes(&report),
        [
            ("b1".into(), TenantOutcome::Failed),
            ("b2".into(), TenantOutcome::NotAttempted),
            ("c1".into(), TenantOutcome::Migrated),
            ("c2".into(), TenantOutcome::NotAttempted),
            ("m1".into(), TenantOutcome::Migrated),
            ("m2".into(), TenantOutcome::NotAttempted),
        ]
    );
    let b2 = report.tenants.iter().find(|t| t.tenant.as_str() == "b2").unwrap();
    assert_eq!(b2.detail.as_deref(), Some("not started: the canary stage failed (b1)"));
    for id in ["b1", "b2", "c2", "m2"] {
        assert_eq!(world.applied(id).await, None, "{id} was touched");
    }
    assert_eq!(world.applied("c1").await, Some(3));

    // Named canaries: c2 fails now, m2 passes; nobody else starts, b1 included.
    world.execute("b1", "DROP TABLE comments").await;
    world.execute("c2", "CREATE TABLE comments (id int)").await;
    let options = FleetOptions { canary_tenants: Some(ids(&["c2", "m2"])), ..FleetOptions::default() };
    let report = run(&world, &migrators, options).await;
    assert!(report.canary_failed);
    assert_eq!(
        outcomes(&report),
        [
            ("b1".into(), TenantOutcome::NotAttempted),
            ("b2".into(), TenantOutcome::NotAttempted),
            ("c1".into(), TenantOutcome::NotAttempted),
            ("c2".into(), TenantOutcome::Failed),
            ("m1".into(), TenantOutcome::NotAttempted),
            ("m2".into(), TenantOutcome::Migrated),
        ]
    );
    for id in ["b1", "b2", "c2"] {
        assert_eq!(world.applied(id).await, None, "{id} was touched");
    }

    // Fixed: the canaries pass and the rest follow.
    world.execute("c2", "DROP TABLE comments").await;
    let options = FleetOptions { resume: true, canary: 2, ..FleetOptions::default() };
    let report = run(&world, &migrators, options).await;
    assert!(!report.canary_failed && report.succeeded(), "{:?}", report.tenants);
    assert_eq!(
        outcomes(&report),
        [
            ("b1".into(), TenantOutcome::Migrated),
            ("b2".into(), TenantOutcome::Migrated),
            ("c1".into(), TenantOutcome::UpToDate),
            ("c2".into(), TenantOutcome::Migrated),
            ("m1".into(), TenantOutcome::UpToDate),
        ]
    );
    for id in ["m1", "m2", "b1", "b2", "c1", "c2"] {
        assert_eq!(world.applied(id).await, Some(3), "{id}");
    }
}

/// `server` restricts a run to the tenants of one server (schema tenants are on the
/// master's); an unknown server is refused with the known ones listed, before any run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_restricted_to_one_server() {
    let Some(world) = world().await else { return };
    let [main, b, c] = world.ports();
    for (id, port) in [("m1", main), ("b1", b), ("b2", b), ("c1", c)] {
        world.tenant(id, port).await;
    }
    let schema = NewTenant::new("s1", "s1", Isolation::Schema).expect("a valid new tenant");
    world.tenancy.create_tenant(schema, &()).await.expect("create the schema tenant");
    let migrators = Migrators::new(Migrator);

    let only_b = FleetOptions { server: Some(label(b)), ..FleetOptions::default() };
    let report = run(&world, &migrators, only_b).await;
    assert_eq!(outcomes(&report), [("b1".into(), TenantOutcome::Migrated), ("b2".into(), TenantOutcome::Migrated)]);
    assert_eq!(report.by_server().keys().collect::<Vec<_>>(), [&label(b)]);
    for (id, applied) in [("b1", Some(3)), ("b2", Some(3)), ("m1", None), ("c1", None)] {
        assert_eq!(world.applied(id).await, applied, "{id}");
    }

    let only_master = FleetOptions { server: Some(label(main)), ..FleetOptions::default() };
    let report = run(&world, &migrators, only_master).await;
    assert_eq!(outcomes(&report), [("m1".into(), TenantOutcome::Migrated), ("s1".into(), TenantOutcome::Migrated)]);
    assert_eq!(world.applied("c1").await, None);

    let runs_before = world.tenancy.ledger().last_run().await.unwrap().map(|r| r.id);
    let nowhere = FleetOptions { server: Some(ServerLabel::new("10.9.9.9:5432")), ..FleetOptions::default() };
    let err = migrate_all(&world.tenancy, &migrators, &nowhere, &|_| {}).await.unwrap_err();
    let mut known: Vec<String> = world.ports().iter().map(|port| label(*port).to_string()).collect();
    known.sort();
    assert_eq!(err.to_string(), format!("Unknown server '10.9.9.9:5432'; known servers: {}", known.join(", ")));
    assert_eq!(world.tenancy.ledger().last_run().await.unwrap().map(|r| r.id), runs_before, "a run was recorded");
}
