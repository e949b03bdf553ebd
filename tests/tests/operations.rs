//! The operations journal: one live worker per tenant, a stale operation found by the
//! next command, and a worker that lost its lock stopping before its next step.
//! PostgreSQL and SQLite masters; the blocking worker is a delete paused in its
//! `after_removal` callback.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use sea_orm::{ConnectionTrait, DbBackend, Statement};
use tenancy::deletion::DeleteOptions;
use tenancy::operations::OperationKind;
use tenancy::{Error, Isolation, NewTenant, Tenancy};
use tenancy_test_support::{PgMaster, TempDir, unique_name};

/// A delete of `id` through `a` that stops after its first removal until told to go on;
/// returns the handle of its task and the sender that lets it go on.
fn paused_delete(
    a: &Tenancy,
    id: &str,
) -> (tokio::task::JoinHandle<tenancy::Result<tenancy::deletion::Deleted>>, mpsc::Sender<()>, mpsc::Receiver<()>) {
    let (reached_tx, reached_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = std::sync::Mutex::new(go_rx);
    let paused = std::sync::atomic::AtomicBool::new(false);
    let options = DeleteOptions::default().after_removal(Arc::new(move |_| {
        // Only after the first removal.
        if paused.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        let _ = reached_tx.send(());
        // Waits without stalling the runtime: `block_in_place` hands this worker's other
        // tasks to another thread first.
        tokio::task::block_in_place(|| {
            let _ = go_rx.lock().map(|rx| rx.recv_timeout(Duration::from_secs(60)));
        });
        Ok(())
    }));
    let (a, id) = (a.clone(), id.to_owned());
    let task = tokio::spawn(async move { a.delete_tenant(id.as_str(), &options).await });
    (task, go_tx, reached_rx)
}

async fn one_worker_per_tenant(a: Tenancy, b: Tenancy) {
    let id = unique_name("w");
    a.create_tenant(NewTenant::new(id.as_str(), "W", Isolation::Cache).expect("new"), &()).await.expect("create");
    let (task, go, reached) = paused_delete(&a, &id);
    tokio::task::spawn_blocking(move || reached.recv_timeout(Duration::from_secs(30)))
        .await
        .expect("join")
        .expect("the delete reached its first removal");

    // Everything else on the tenant is refused while the delete lives, naming it.
    let busy = |result: Result<String, Error>| match result {
        Err(Error::OperationInProgress { kind: OperationKind::Delete, tenant, .. }) => assert_eq!(tenant, id),
        other => panic!("expected the tenant to be busy, got {other:?}"),
    };
    busy(b.delete_tenant(id.as_str(), &DeleteOptions::default()).await.map(|d| d.tenant.to_string()));
    busy(b.suspend_tenant(id.as_str(), None).await.map(|t| t.id().to_string()));
    busy(
        b.create_tenant(NewTenant::new(id.as_str(), "W", Isolation::Cache).expect("new"), &())
            .await
            .map(|p| p.tenant.id().to_string()),
    );
    let operations = b.unfinished_operations().await.expect("list");
    assert_eq!(operations.len(), 1, "{operations:?}");
    assert_eq!(
        (operations[0].tenant.as_str(), operations[0].kind, operations[0].worker_alive),
        (id.as_str(), OperationKind::Delete, true)
    );

    go.send(()).expect("let the delete go on");
    let deleted = task.await.expect("join").expect("the delete finished");
    assert!(!deleted.resumed);
    assert!(b.unfinished_operations().await.expect("list").is_empty());
    assert!(matches!(b.find_tenant(id.as_str()).await, Ok(None)));
    assert!(matches!(b.delete_tenant(id.as_str(), &DeleteOptions::default()).await, Err(Error::TenantNotFound { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_live_worker_per_tenant_postgres() {
    let Some(pg) = PgMaster::create().await else { return };
    let dir = TempDir::new();
    one_worker_per_tenant(pg.tenancy(&dir).await, pg.tenancy(&dir).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_live_worker_per_tenant_sqlite() {
    let dir = TempDir::new();
    let a = dir.sqlite_builder().connect().await.expect("connect");
    let b = dir.sqlite_builder().connect().await.expect("connect");
    one_worker_per_tenant(a, b).await;
}

/// A worker whose lock connection is ended from outside (a network cut, a server
/// restart) is stale at once: another worker takes the delete over and finishes it, and
/// the first stops before its next step instead of acting beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_lost_its_lock_stops_and_another_finishes() {
    let Some(pg) = PgMaster::create().await else { return };
    let dir = TempDir::new();
    let (a, b) = (pg.tenancy(&dir).await, pg.tenancy(&dir).await);
    let id = unique_name("l");
    a.create_tenant(NewTenant::new(id.as_str(), "L", Isolation::Cache).expect("new"), &()).await.expect("create");
    let (task, go, reached) = paused_delete(&a, &id);
    tokio::task::spawn_blocking(move || reached.recv_timeout(Duration::from_secs(30)))
        .await
        .expect("join")
        .expect("the delete reached its first removal");

    // End the session holding the operation's lock (its pool opens a new one, which holds
    // no lock).
    pg.admin
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 \
             AND application_name = 'tenancy operation lock'",
            [pg.name.as_str().into()],
        ))
        .await
        .expect("terminate");
    let mut stale = None;
    for _ in 0..50 {
        let operations = b.unfinished_operations().await.expect("list");
        if operations.first().is_some_and(|op| !op.worker_alive) {
            stale = operations.into_iter().next();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stale = stale.expect("the operation became stale");
    assert_eq!(stale.kind, OperationKind::Delete);
    // Another command names it; the same command finishes it.
    match b.suspend_tenant(id.as_str(), None).await {
        Err(Error::StaleOperation { kind: OperationKind::Delete, ref tenant, .. }) if *tenant == id => {}
        other => panic!("expected a stale operation, got {other:?}"),
    }
    let deleted = b.delete_tenant(id.as_str(), &DeleteOptions::default()).await.expect("finish the delete");
    assert!(deleted.resumed);
    assert!(matches!(b.find_tenant(id.as_str()).await, Ok(None)));

    go.send(()).expect("let the first worker go on");
    match task.await.expect("join") {
        Err(Error::OperationLost { .. }) => {}
        other => panic!("the first worker must stop, got {other:?}"),
    }
    assert!(b.unfinished_operations().await.expect("list").is_empty());
}

/// On SQLite a lease names its process: one whose process is gone is stale at once, and
/// a command of another kind is refused with the command that finishes it.
#[tokio::test]
async fn a_sqlite_lease_of_a_dead_process_is_stale() {
    let dir = TempDir::new();
    let tenancy = dir.sqlite_builder().connect().await.expect("connect");
    tenancy.create_tenant(NewTenant::new("gone", "G", Isolation::Cache).expect("new"), &()).await.expect("create");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    // A pid above the kernel's maximum never runs.
    let worker = format!("{}:4194305", host.trim());
    tenancy
        .master()
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "INSERT INTO tenancy_operations (tenant_id, kind, params, step, undo, worker, started_at, heartbeat_at) \
             VALUES ('gone', 'delete', '{\"drop_adopted_database\":false}', 'drop schema x', '[]', ?, datetime('now'), \
             strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
            [worker.into()],
        ))
        .await
        .expect("plant the operation");
    let operations = tenancy.unfinished_operations().await.expect("list");
    assert!(!operations[0].worker_alive, "{operations:?}");
    let err = tenancy.resume_tenant("gone").await.expect_err("refused");
    let message = err.to_string();
    assert!(matches!(err, Error::StaleOperation { .. }), "{err:?}");
    assert!(
        message.contains("unfinished delete operation") && message.contains("run `deletetenant gone`"),
        "{message}"
    );
    // Other arguments are another command: refused too.
    let other = tenancy.delete_tenant("gone", &DeleteOptions::default().drop_adopted_database(true)).await;
    assert!(matches!(other, Err(Error::StaleOperation { .. })), "{other:?}");
    let deleted = tenancy.delete_tenant("gone", &DeleteOptions::default()).await.expect("finish it");
    assert!(deleted.resumed);
    assert!(tenancy.unfinished_operations().await.expect("list").is_empty());
}

/// A `provisioning` row without an operation (left by a create of the version before the
/// journal, killed part-way) is not stuck: `deletetenant` removes it.
#[tokio::test]
async fn a_provisioning_row_of_an_earlier_version_can_be_deleted() {
    let dir = TempDir::new();
    let tenancy = dir.sqlite_builder().connect().await.expect("connect");
    tenancy
        .master()
        .execute_unprepared(
            "INSERT INTO tenancy_tenants (tenant_id, name, isolation_type, config, status, created_at, updated_at) \
             VALUES ('stuck', 'Stuck', 'table', '{}', 'provisioning', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
        )
        .await
        .expect("plant the row");
    let again = tenancy.create_tenant(NewTenant::new("stuck", "S", Isolation::Table).expect("new"), &()).await;
    assert!(matches!(again, Err(Error::TenantExists { .. })), "{again:?}");
    tenancy.delete_tenant("stuck", &DeleteOptions::default()).await.expect("delete the stuck row");
    assert!(matches!(tenancy.find_tenant("stuck").await, Ok(None)));
    tenancy.create_tenant(NewTenant::new("stuck", "S", Isolation::Table).expect("new"), &()).await.expect("create");
}
