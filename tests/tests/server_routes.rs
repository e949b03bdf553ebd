//! Database tenants spread over three PostgreSQL servers (the main test server and two of
//! the test's own, [`PgServer`]): the tenant pools of one server stay within its share of
//! the connection budget while the other servers' tenants are served, and a server that
//! goes down fails only its own tenants, with [`Error::ServerUnavailable`] naming it,
//! until it is back. Connections are counted with the superuser's own `pg_stat_activity`
//! queries on each server, never through the library.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use tenancy::secrets::Password;
use tenancy::servers::NewServer;
use tenancy::{Error, Isolation, NewDatabase, NewTenant, Tenancy, TenantConnection, TenantId};
use tenancy_test_support::{PgMaster, PgServer, TempDir, count, unique_name};

/// The per-server budget under test, in connections (one per pool).
const SERVER_BUDGET: i64 = 2;

/// How long a call to a tenant of a stopped server may take before the test calls it hung:
/// far above the probe's few seconds, so it only catches a call waiting on something that
/// never comes (a leaked permit, a lock held across a connect).
const HANG: Duration = Duration::from_secs(30);

struct Fleet {
    pg: PgMaster,
    tenancy: Tenancy,
    _dir: TempDir,
    /// The busy server, its tenants and their databases.
    east: PgServer,
    east_tenants: Vec<(TenantId, String)>,
    /// The server stopped in the outage test.
    west: PgServer,
    west_tenants: Vec<(TenantId, String)>,
    /// Tenants on the main server (the master's).
    main_tenants: Vec<(TenantId, String)>,
}

/// A master with servers `east` and `west` registered, `east_n` tenants on east, two on
/// west and two on the main server; `None` when PostgreSQL or its binaries are missing
/// outside CI.
async fn fleet(east_n: usize) -> Option<Fleet> {
    let east = PgServer::start()?;
    let west = PgServer::start()?;
    let pg = PgMaster::create().await?;
    let dir = TempDir::new();
    let tenancy = pg
        .builder(&dir)
        .tenant_connection_budget(8)
        .server_connection_budget(SERVER_BUDGET as u32)
        .connections_per_tenant_pool(1)
        .connect()
        .await
        .expect("connect master");
    for (name, server) in [("east", &east), ("west", &west)] {
        let new = NewServer::new(name, "127.0.0.1", server.port, "postgres").expect("a valid server");
        tenancy.add_server(new).await.expect("add the server");
    }
    let mut fleet = Fleet {
        pg,
        tenancy,
        _dir: dir,
        east,
        east_tenants: Vec::new(),
        west,
        west_tenants: Vec::new(),
        main_tenants: Vec::new(),
    };
    let (east_port, west_port) = (fleet.east.port, fleet.west.port);
    fleet.east_tenants = fleet.tenants("east", east_port, east_n).await;
    fleet.west_tenants = fleet.tenants("west", west_port, 2).await;
    fleet.main_tenants = fleet.tenants("main", 5432, 2).await;
    Some(fleet)
}

impl Fleet {
    /// `n` database tenants on the server at `port`, each with a table holding its own id.
    async fn tenants(&self, prefix: &str, port: u16, n: usize) -> Vec<(TenantId, String)> {
        let made = (0..n).map(|_| async move {
            let id: TenantId = unique_name(prefix).parse().expect("valid id");
            let (db, user) = (unique_name("db"), unique_name("u"));
            if port == 5432 {
                self.pg.track_database(&db);
                self.pg.track_role(&user);
            }
            let database = NewDatabase::create(db.clone()).login(user, Password::new("pw")).server("127.0.0.1", port);
            let new =
                NewTenant::new(id.clone(), id.to_string(), Isolation::Database).expect("new tenant").database(database);
            self.tenancy.create_tenant(new, &()).await.expect("create tenant");
            let handle = self.tenancy.tenant(&id).await.expect("handle");
            handle.execute_unprepared("CREATE TABLE owner (id text)").await.expect("create table");
            let insert = format!("INSERT INTO owner VALUES ('{id}')");
            handle.execute_unprepared(&insert).await.expect("insert");
            (id, db)
        });
        futures_util::future::join_all(made).await
    }

    async fn handles(&self, tenants: &[(TenantId, String)]) -> Vec<TenantConnection> {
        let mut handles = Vec::new();
        for (id, _) in tenants {
            handles.push(self.tenancy.tenant(id).await.expect("handle"));
        }
        handles
    }
}

/// The id the tenant's own table holds, read through its handle.
async fn owner(handle: &TenantConnection) -> Result<String, sea_orm::DbErr> {
    let row = handle.query_one_raw(Statement::from_string(DbBackend::Postgres, "SELECT id FROM owner")).await?;
    Ok(row.expect("a row").try_get_by_index::<String>(0).expect("text"))
}

/// Superuser connection to a server.
async fn superuser(url: String) -> DatabaseConnection {
    sea_orm::Database::connect(url.clone()).await.unwrap_or_else(|err| panic!("connect {url}: {err}"))
}

/// The backends connected to any of `databases`, by pid.
async fn backends(admin: &DatabaseConnection, databases: &[String]) -> BTreeSet<i32> {
    let rows = admin
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pid FROM pg_stat_activity WHERE datname = ANY($1)",
            [databases.to_vec().into()],
        ))
        .await
        .expect("pg_stat_activity");
    rows.iter().map(|row| row.try_get_by_index::<i32>(0).expect("pid")).collect()
}

/// How many of `pids` are still connected.
async fn still_there(admin: &DatabaseConnection, pids: &BTreeSet<i32>) -> i64 {
    let pids: Vec<i32> = pids.iter().copied().collect();
    count(admin, "SELECT COUNT(*) FROM pg_stat_activity WHERE pid = ANY($1)", vec![pids.into()]).await
}

#[tokio::test]
async fn one_servers_tenants_stay_within_its_budget_while_the_others_are_served() {
    let Some(fleet) = fleet(6).await else { return };
    let east_dbs: Vec<String> = fleet.east_tenants.iter().map(|(_, db)| db.clone()).collect();
    let east_admin = superuser(fleet.east.admin_url()).await;
    let west_admin = superuser(fleet.west.admin_url()).await;
    let west_dbs: Vec<String> = fleet.west_tenants.iter().map(|(_, db)| db.clone()).collect();

    // The other servers' tenants first: their pools are open (and idle) before the load.
    let others = [fleet.handles(&fleet.west_tenants).await, fleet.handles(&fleet.main_tenants).await].concat();
    for handle in &others {
        assert_eq!(owner(handle).await.expect("served"), handle.id().as_str());
    }
    let west_before = backends(&west_admin, &west_dbs).await;
    assert_eq!(west_before.len(), 2, "west's two pools are open");

    // The sampler: east's tenant connections, as east's superuser sees them, all through
    // the load. A backend whose client has just closed leaves pg_stat_activity a moment
    // later, as its process exits: a sample over the budget counts only if those backends
    // are still there a little later (a pool over the budget would keep its connection).
    let stop = Arc::new(AtomicBool::new(false));
    let (highest, samples) = (Arc::new(AtomicI64::new(0)), Arc::new(AtomicI64::new(0)));
    let sampler = {
        let (stop, highest, samples, dbs) = (stop.clone(), highest.clone(), samples.clone(), east_dbs.clone());
        let admin = east_admin.clone();
        tokio::spawn(async move {
            let mut over = Vec::new();
            while !stop.load(Ordering::Acquire) {
                let pids = backends(&admin, &dbs).await;
                samples.fetch_add(1, Ordering::AcqRel);
                let mut seen = pids.len() as i64;
                if seen > SERVER_BUDGET {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    seen = still_there(&admin, &pids).await;
                    if seen > SERVER_BUDGET {
                        over.push(pids);
                    }
                }
                highest.fetch_max(seen, Ordering::AcqRel);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            over
        })
    };

    // East's six tenants hammered at once, three times over, while west's and the main
    // server's tenants answer between the rounds and during them.
    let east = fleet.handles(&fleet.east_tenants).await;
    for round in 0..3 {
        let busy = east.iter().map(|handle| async move {
            handle.execute_unprepared("SELECT pg_sleep(0.05)").await?;
            owner(handle).await.map(|found| (handle.id().to_string(), found))
        });
        let served = others.iter().map(|handle| async move { owner(handle).await });
        let (busy, served) = tokio::join!(futures_util::future::join_all(busy), futures_util::future::join_all(served));
        for result in busy {
            let (id, found) = result.unwrap_or_else(|err| panic!("round {round}, east: {err}"));
            assert_eq!(found, id, "round {round}: each tenant reads its own table");
        }
        for (handle, result) in others.iter().zip(served) {
            let found = result.unwrap_or_else(|err| panic!("round {round}, {}: {err}", handle.id()));
            assert_eq!(found, handle.id().as_str());
        }
    }
    stop.store(true, Ordering::Release);
    let over = sampler.await.expect("sampler");
    assert!(over.is_empty(), "east's tenant connections went over its budget of {SERVER_BUDGET}: {over:?}");
    assert!(samples.load(Ordering::Acquire) > 0, "the sampler ran");
    assert!(highest.load(Ordering::Acquire) >= 1, "the sampler saw east's connections");

    // East evicted its own pools for room, not west's: west's connections are the same
    // two backends as before the load.
    assert_eq!(backends(&west_admin, &west_dbs).await, west_before, "west's pools survived east's load");
    drop(fleet);
}

#[tokio::test]
async fn a_stopped_server_fails_only_its_tenants_until_it_is_back() {
    let Some(mut fleet) = fleet(2).await else { return };
    let west_port = fleet.west.port;
    let west = fleet.handles(&fleet.west_tenants).await;
    let others = [fleet.handles(&fleet.east_tenants).await, fleet.handles(&fleet.main_tenants).await].concat();
    // West's pools are open when it goes down: their dead connections must not stay.
    for handle in west.iter().chain(&others) {
        assert_eq!(owner(handle).await.expect("served"), handle.id().as_str());
    }

    fleet.west.stop();
    let expected = format!("is on server 'west' at 127.0.0.1:{west_port}, which cannot be reached");

    // Several laps, west's tenants and the others at once: west's fail naming the server,
    // the others answer with their own rows throughout.
    for lap in 0..4 {
        let failing = west.iter().map(|handle| tokio::time::timeout(HANG, owner(handle)));
        let served = others.iter().map(|handle| tokio::time::timeout(HANG, owner(handle)));
        let (failing, served) =
            tokio::join!(futures_util::future::join_all(failing), futures_util::future::join_all(served));
        for (handle, result) in west.iter().zip(failing) {
            let err = result.expect("a call to a stopped server's tenant returns").expect_err("west is down");
            let message = err.to_string();
            assert!(message.contains(&expected), "lap {lap}, {}: {message}", handle.id());
            assert!(message.contains(&format!("Tenant '{}'", handle.id())), "{message}");
        }
        for (handle, result) in others.iter().zip(served) {
            let found = result.expect("returns").unwrap_or_else(|err| panic!("lap {lap}, {}: {err}", handle.id()));
            assert_eq!(found, handle.id().as_str());
        }
    }
    // As a library error, from a fresh handle too.
    let fresh = fleet.tenancy.tenant(&fleet.west_tenants[0].0).await.expect("the handle needs no connection");
    match tokio::time::timeout(HANG, fresh.ping()).await.expect("ping returns") {
        Err(Error::ServerUnavailable { tenant, server, address, .. }) => {
            assert_eq!(tenant, fleet.west_tenants[0].0.as_str());
            assert_eq!(server, "west");
            assert_eq!(address, format!("127.0.0.1:{west_port}"));
        }
        other => panic!("expected ServerUnavailable, got {other:?}"),
    }

    // The failures left the budget whole: every other tenant still opens and answers (a
    // leaked permit per failure would have exhausted the budget of 8 long ago).
    for handle in &others {
        fleet.tenancy.reset_tenant_pool(handle.id());
    }
    for handle in &others {
        assert_eq!(owner(handle).await.expect("served after the outage"), handle.id().as_str());
    }

    // Back up: west's tenants answer again through the same handles, on new connections.
    fleet.west.restart();
    for handle in &west {
        let mut answer = Err(sea_orm::DbErr::Custom("not tried".to_owned()));
        // A server found down is taken as down for a second before it is probed again.
        for _ in 0..40 {
            answer = owner(handle).await;
            if answer.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert_eq!(answer.expect("west's tenant answers after the restart"), handle.id().as_str());
    }
}
