//! Tenant jobs (`tenancy::jobs`): the envelope carries the tenant across a queue, a job
//! runs in its tenant's scope and nowhere else, on one tokio worker task, on apalis
//! workers, and across a real Redis list; a job whose tenant was deleted or is suspended
//! is refused before it runs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apalis_core::backend::TaskSink;
use apalis_core::backend::memory::MemoryStorage;
use apalis_core::error::{AbortError, BoxDynError, RetryAfterError};
use apalis_core::worker::builder::WorkerBuilder;
use apalis_core::worker::ext::event_listener::EventListenerExt;
use example_app::Migrator;
use sea_orm::DatabaseConnection;
use serde::{Deserialize, Serialize};
use tenancy::jobs::apalis::TenantJobLayer;
use tenancy::jobs::{Disposition, TenantJob};
use tenancy::{Error, Isolation, NewTenant, Tenancy, TenantConnection, TenantId};
use tenancy_migrate::MigrateOnCreate;
use tenancy_test_support::{PgMaster, RedisPrefix, TempDir, count, unique_name};

use crate::common::{add_project, project_names};

struct Ctx {
    pg: PgMaster,
    tenancy: Tenancy,
    superuser: DatabaseConnection,
    _dir: TempDir,
}

async fn ctx() -> Option<Ctx> {
    let pg = PgMaster::create().await?;
    let dir = TempDir::new();
    let tenancy = pg.tenancy(&dir).await;
    let superuser = pg.connect().await;
    Some(Ctx { pg, tenancy, superuser, _dir: dir })
}

impl Ctx {
    /// A migrated tenant in `isolation` with two projects of its own, named after it.
    async fn tenant(&self, prefix: &str, isolation: Isolation) -> TenantConnection {
        let id: TenantId = unique_name(prefix).parse().expect("valid id");
        let mut new = NewTenant::new(id.clone(), prefix, isolation).expect("a valid new tenant").migrate(true);
        if isolation == Isolation::Database {
            new = new.database(self.pg.new_database("secret"));
        }
        self.tenancy.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.expect("create tenant");
        let handle = self.tenancy.tenant(&id).await.expect("handle");
        for n in 1..=2 {
            add_project(&handle, Some(id.as_str()), &format!("{id}-seed-{n}")).await;
        }
        handle
    }

    /// Rows of the shared `projects` table with this tenant id, as the superuser sees them
    /// (table tenants' rows).
    async fn shared_rows(&self, tenant: &str) -> i64 {
        count(&self.superuser, "SELECT COUNT(*) FROM projects WHERE tenant_id = $1", vec![tenant.into()]).await
    }
}

/// What a job does: read its tenant's projects and, given a name, add one.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ProjectJob {
    seq: usize,
    add: Option<String>,
}

/// What a job saw: the tenant in scope and the projects it read.
#[derive(Debug)]
struct Seen {
    seq: usize,
    tenant: String,
    names: Vec<String>,
}

/// The job: everything through the scope, nothing passed in but the job.
async fn project_job(job: ProjectJob) -> Seen {
    let db = tenancy::current().expect("the job's tenant in scope");
    // Give other jobs on the same task a chance to run in between.
    tokio::task::yield_now().await;
    if let Some(name) = &job.add {
        add_project(&db, Some(db.id().as_str()), name).await;
    }
    tokio::task::yield_now().await;
    let names = project_names(&db).await;
    // Still the same tenant after the awaits.
    let tenant = tenancy::current().expect("still in scope").id().to_string();
    assert_eq!(tenant, db.id().as_str());
    Seen { seq: job.seq, tenant, names }
}

/// Checks what the jobs saw against their envelopes: every job saw its own tenant and
/// only that tenant's projects.
fn check_seen(seen: &[Seen], envelopes: &[TenantJob<ProjectJob>]) {
    for s in seen {
        let envelope = &envelopes[s.seq];
        assert_eq!(s.tenant, envelope.tenant().as_str(), "job {} ran under another tenant", s.seq);
        assert!(s.names.len() >= 2, "job {} saw {:?}", s.seq, s.names);
        for name in &s.names {
            assert!(name.starts_with(&format!("{}-", s.tenant)), "job {} of {} saw {name}", s.seq, s.tenant);
        }
    }
}

/// `rounds` jobs per tenant, interleaved (a, b, c, a, b, c, ...), each adding one project.
fn interleaved(tenants: &[&TenantConnection], rounds: usize, tag: &str) -> Vec<TenantJob<ProjectJob>> {
    let mut envelopes = Vec::new();
    for round in 0..rounds {
        for tenant in tenants {
            let seq = envelopes.len();
            let add = Some(format!("{}-{tag}-{round}", tenant.id()));
            envelopes.push(TenantJob::new(tenant.id().clone(), ProjectJob { seq, add }));
        }
    }
    envelopes
}

/// After the jobs: each tenant holds its two seeds and exactly its `rounds` job rows.
async fn check_rows(tenants: &[&TenantConnection], rounds: usize, tag: &str) {
    for tenant in tenants {
        let id = tenant.id();
        let mut expected: Vec<String> = (1..=2).map(|n| format!("{id}-seed-{n}")).collect();
        expected.extend((0..rounds).map(|round| format!("{id}-{tag}-{round}")));
        expected.sort();
        assert_eq!(project_names(*tenant).await, expected, "rows of {id}");
    }
}

/// One worker task takes jobs off a channel one after the other, as a queue consumer
/// does: tenant jobs of four tenants (database, schema and two table tenants, which share
/// the `projects` table) interleaved, and plain jobs between them, which must see no
/// tenant at all.
#[tokio::test]
async fn interleaved_jobs_on_one_worker_task_see_only_their_tenant() {
    let Some(ctx) = ctx().await else { return };
    let database = ctx.tenant("jdb", Isolation::Database).await;
    let schema = ctx.tenant("jschema", Isolation::Schema).await;
    let table_a = ctx.tenant("jtable_a", Isolation::Table).await;
    let table_b = ctx.tenant("jtable_b", Isolation::Table).await;
    let tenants = [&database, &schema, &table_a, &table_b];
    let envelopes = interleaved(&tenants, 3, "job");

    enum Message {
        Tenant(String),
        Plain,
    }
    let (queue, mut inbox) = tokio::sync::mpsc::unbounded_channel();
    for (i, envelope) in envelopes.iter().enumerate() {
        queue.send(Message::Tenant(serde_json::to_string(envelope).expect("to JSON"))).expect("send");
        if i % 3 == 2 {
            queue.send(Message::Plain).expect("send");
        }
    }
    queue.send(Message::Plain).expect("send");
    drop(queue);

    let tenancy = ctx.tenancy.clone();
    let worker = tokio::spawn(async move {
        let (mut seen, mut plain) = (Vec::new(), Vec::new());
        while let Some(message) = inbox.recv().await {
            match message {
                Message::Tenant(json) => {
                    let job: TenantJob<ProjectJob> = serde_json::from_str(&json).expect("from JSON");
                    seen.push(tenancy.run_job(job, project_job).await.expect("not refused"));
                }
                // A job that belongs to no tenant, after tenant jobs on the same task.
                Message::Plain => plain.push(tenancy::current().map(|db| db.id().to_string())),
            }
        }
        (seen, plain)
    });
    let (seen, plain) = worker.await.expect("worker");
    check_seen(&seen, &envelopes);
    assert_eq!(seen.iter().map(|s| s.seq).collect::<Vec<_>>(), (0..envelopes.len()).collect::<Vec<_>>());
    assert_eq!(plain.len(), envelopes.len() / 3 + 1);
    assert!(plain.iter().all(|p| matches!(p, Err(Error::NoTenantInScope))), "{plain:?}");
    check_rows(&tenants, 3, "job").await;
    // The table tenants' rows in the shared table carry their own ids.
    for tenant in [&table_a, &table_b] {
        assert_eq!(ctx.shared_rows(tenant.id().as_str()).await, 5);
    }

    // `spawn_job` from inside another tenant's scope: the job runs for its envelope's
    // tenant, resolved in the new task, not for the spawner's.
    let job = TenantJob::new(schema.id().clone(), ProjectJob { seq: 0, add: None });
    let seen = tenancy::scope(table_a.clone(), async {
        let spawned = ctx.tenancy.spawn_job(job, project_job);
        let seen = spawned.await;
        // The spawner keeps its own tenant.
        assert_eq!(tenancy::current().expect("the spawner's scope").id(), table_a.id());
        seen
    })
    .await
    .expect("spawned task")
    .expect("not refused");
    assert_eq!(seen.tenant, schema.id().as_str());
    assert_eq!(seen.names, project_names(&schema).await);
    assert!(matches!(tenancy::current(), Err(Error::NoTenantInScope)));
}

/// Runs `envelopes` on one apalis worker with the tenant layer, `concurrency` tasks at
/// most in flight (`None`: no limit, every task on the worker's one task at once), and
/// returns what each job saw, the errors of the tasks that failed, and how many jobs were
/// in flight at most.
async fn run_on_apalis(
    envelopes: &[TenantJob<ProjectJob>],
    concurrency: Option<usize>,
    layer: TenantJobLayer,
) -> (Vec<Seen>, Vec<Arc<BoxDynError>>, usize) {
    let mut queue = MemoryStorage::new();
    for envelope in envelopes {
        queue.push(envelope.clone()).await.expect("push");
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let (in_flight, most_in_flight) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let handler = {
        let (seen, in_flight, most_in_flight) = (seen.clone(), in_flight, most_in_flight.clone());
        move |job: TenantJob<ProjectJob>| {
            let (seen, in_flight, most_in_flight) = (seen.clone(), in_flight.clone(), most_in_flight.clone());
            async move {
                // The envelope's tenant is the one in scope.
                let in_scope = tenancy::current().map_err(|err| err.to_string())?;
                assert_eq!(in_scope.id(), job.tenant());
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                most_in_flight.fetch_max(now, Ordering::SeqCst);
                let result = project_job(job.into_job()).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                seen.lock().expect("lock").push(result);
                Ok::<_, String>(())
            }
        }
    };
    let on_event = {
        let errors = errors.clone();
        move |_: &apalis_core::worker::context::WorkerContext, event: &apalis_core::worker::event::Event| {
            if let Some(err) = event.as_error() {
                errors.lock().expect("lock").push(err);
            }
        }
    };
    let expected = envelopes.len();
    let done = {
        let (seen, errors) = (seen.clone(), errors.clone());
        move || seen.lock().expect("lock").len() + errors.lock().expect("lock").len() >= expected
    };
    let builder = WorkerBuilder::new(unique_name("worker")).backend(queue).on_event(on_event);
    let stop = move |ctx: apalis_core::worker::context::WorkerContext| {
        let done = done.clone();
        async move {
            while !done() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            ctx.stop()
        }
    };
    let run = match concurrency {
        Some(max) => {
            let worker = builder.layer(tower::limit::ConcurrencyLimitLayer::new(max)).layer(layer).build(handler);
            tokio::time::timeout(Duration::from_secs(60), worker.run_with_ctx(stop)).await
        }
        None => {
            let worker = builder.layer(layer).build(handler);
            tokio::time::timeout(Duration::from_secs(60), worker.run_with_ctx(stop)).await
        }
    };
    run.expect("the worker finished in time").expect("the worker ran");
    let seen = std::mem::take(&mut *seen.lock().expect("lock"));
    let errors = std::mem::take(&mut *errors.lock().expect("lock"));
    (seen, errors, most_in_flight.load(Ordering::SeqCst))
}

/// The same on apalis workers: one task at a time, then all of them in flight at once on
/// the worker's one task (apalis polls its tasks' futures together), where a tenant set
/// around each job rather than carried by its future would leak into the others.
#[tokio::test]
async fn interleaved_jobs_on_an_apalis_worker_see_only_their_tenant() {
    let Some(ctx) = ctx().await else { return };
    let schema = ctx.tenant("aschema", Isolation::Schema).await;
    let table_a = ctx.tenant("atable_a", Isolation::Table).await;
    let table_b = ctx.tenant("atable_b", Isolation::Table).await;
    let tenants = [&schema, &table_a, &table_b];

    for (concurrency, tag) in [(Some(1), "apalis1"), (None, "apalisn")] {
        let envelopes = interleaved(&tenants, 4, tag);
        let layer = TenantJobLayer::new(ctx.tenancy.clone());
        let (mut seen, errors, most_in_flight) = run_on_apalis(&envelopes, concurrency, layer).await;
        assert!(errors.is_empty(), "{errors:?}");
        match concurrency {
            Some(max) => assert_eq!(most_in_flight, max),
            // The jobs did interleave on the worker's task.
            None => assert!(most_in_flight > 1, "{most_in_flight}"),
        }
        seen.sort_by_key(|s| s.seq);
        assert_eq!(seen.iter().map(|s| s.seq).collect::<Vec<_>>(), (0..envelopes.len()).collect::<Vec<_>>());
        check_seen(&seen, &envelopes);
        assert!(matches!(tenancy::current(), Err(Error::NoTenantInScope)));
    }
    for tenant in tenants {
        let names = project_names(tenant).await;
        for tag in ["apalis1", "apalisn"] {
            let added = names.iter().filter(|name| name.contains(&format!("-{tag}-"))).count();
            assert_eq!(added, 4, "{tag} rows of {}: {names:?}", tenant.id());
        }
        assert!(names.iter().all(|name| name.starts_with(&format!("{}-", tenant.id()))), "{names:?}");
    }
}

/// A job queued for a tenant that is deleted before it runs is refused for good: the job
/// does not run, nothing is written anywhere, and the next job on the same worker runs
/// for its own tenant.
#[tokio::test]
async fn a_job_whose_tenant_was_deleted_is_refused_and_discarded() {
    let Some(ctx) = ctx().await else { return };
    let doomed = ctx.tenant("doomed", Isolation::Table).await;
    let other = ctx.tenant("other", Isolation::Table).await;
    let doomed_id = doomed.id().clone();
    let job = tenancy::scope(doomed.clone(), async {
        TenantJob::in_current_scope(ProjectJob { seq: 0, add: Some(format!("{doomed_id}-late")) })
    })
    .await
    .expect("a tenant in scope");
    let json = serde_json::to_string(&job).expect("to JSON");
    drop(doomed);

    let deleted = ctx.tenancy.delete_tenant(&doomed_id, &Default::default()).await.expect("delete");
    assert_eq!(deleted.tenant, doomed_id);
    assert_eq!(ctx.shared_rows(doomed_id.as_str()).await, 0, "deleting removes the tenant's rows");

    let ran = Arc::new(AtomicUsize::new(0));
    let job: TenantJob<ProjectJob> = serde_json::from_str(&json).expect("from JSON");
    let refused = ctx
        .tenancy
        .run_job(job, |job| {
            ran.fetch_add(1, Ordering::SeqCst);
            project_job(job)
        })
        .await
        .expect_err("refused");
    assert_eq!(ran.load(Ordering::SeqCst), 0, "the job did not run");
    assert_eq!(refused.job_disposition(), Some(Disposition::Discard));
    let Error::JobRefused { tenant, source, .. } = &refused else { panic!("{refused:?}") };
    assert_eq!(tenant, doomed_id.as_str());
    assert!(matches!(**source, Error::TenantNotFound { ref id } if id == doomed_id.as_str()), "{source:?}");
    assert_eq!(
        tenancy::error_chain(&refused),
        format!(
            "Job for tenant '{doomed_id}' not run: discard it, the tenant is gone: Tenant '{doomed_id}' does not exist"
        )
    );
    // Nothing written, under the deleted id or another tenant's.
    assert_eq!(ctx.shared_rows(doomed_id.as_str()).await, 0);
    assert_eq!(project_names(&other).await.len(), 2);
    assert!(matches!(tenancy::current(), Err(Error::NoTenantInScope)));

    // On apalis: the task is aborted (not retried), the handler never called, and the
    // next task on the worker runs for its own tenant.
    let late = TenantJob::new(doomed_id.clone(), ProjectJob { seq: 0, add: Some(format!("{doomed_id}-late")) });
    let next = TenantJob::new(other.id().clone(), ProjectJob { seq: 1, add: Some(format!("{}-next", other.id())) });
    let envelopes = [late, next];
    let (seen, errors, _) = run_on_apalis(&envelopes, Some(1), TenantJobLayer::new(ctx.tenancy.clone())).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    let err: &BoxDynError = &errors[0];
    assert!(err.downcast_ref::<AbortError>().is_some(), "{err}");
    let refused = tenancy::jobs::refusal(err.as_ref()).expect("the refusal among the causes");
    assert!(
        matches!(refused, Error::JobRefused { tenant, disposition: Disposition::Discard, .. } if tenant == doomed_id.as_str())
    );
    assert_eq!(seen.iter().map(|s| s.seq).collect::<Vec<_>>(), [1]);
    check_seen(&seen, &envelopes);
    assert_eq!(ctx.shared_rows(doomed_id.as_str()).await, 0);
    let mut expected = vec![format!("{}-next", other.id())];
    expected.extend((1..=2).map(|n| format!("{}-seed-{n}", other.id())));
    expected.sort();
    assert_eq!(project_names(&other).await, expected);
}

/// A suspended tenant's job is refused as "retry later" and runs once the tenant is
/// resumed.
#[tokio::test]
async fn a_suspended_tenants_job_is_retried_later_and_runs_after_resume() {
    let Some(ctx) = ctx().await else { return };
    let acme = ctx.tenant("acme", Isolation::Schema).await;
    let id = acme.id().clone();
    let job = TenantJob::new(id.clone(), ProjectJob { seq: 0, add: Some(format!("{id}-after-resume")) });

    ctx.tenancy.suspend_tenant(&id, Some("unpaid".to_owned())).await.expect("suspend");
    let ran = AtomicUsize::new(0);
    let refused = ctx
        .tenancy
        .run_job(job.clone(), |job| {
            ran.fetch_add(1, Ordering::SeqCst);
            project_job(job)
        })
        .await
        .expect_err("refused while suspended");
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(refused.job_disposition(), Some(Disposition::RetryLater));
    let Error::JobRefused { source, .. } = &refused else { panic!("{refused:?}") };
    assert!(matches!(**source, Error::TenantSuspended { ref reason, .. } if reason.as_deref() == Some("unpaid")));
    assert_eq!(project_names(&acme).await.len(), 2, "nothing written");

    // On apalis: a retry-after error with the layer's wait, the handler not called.
    let layer = TenantJobLayer::new(ctx.tenancy.clone()).retry_after(Duration::from_secs(42));
    let (seen, errors, _) = run_on_apalis(std::slice::from_ref(&job), Some(1), layer).await;
    assert!(seen.is_empty());
    assert_eq!(errors.len(), 1);
    let retry = errors[0].downcast_ref::<RetryAfterError>().expect("a retry-after error");
    assert_eq!(retry.get_duration(), Duration::from_secs(42));
    assert_eq!(tenancy::jobs::refusal(&**errors[0]).and_then(Error::job_disposition), Some(Disposition::RetryLater));

    ctx.tenancy.resume_tenant(&id).await.expect("resume");
    let seen = ctx.tenancy.run_job(job, project_job).await.expect("runs after resume");
    assert_eq!(seen.tenant, id.as_str());
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    let mut expected = vec![format!("{id}-after-resume")];
    expected.extend((1..=2).map(|n| format!("{id}-seed-{n}")));
    expected.sort();
    assert_eq!(project_names(&acme).await, expected);
}

/// Envelopes made in two tenants' scopes cross a real Redis list as JSON (LPUSH, BRPOP on
/// a worker task) and run for the tenant that queued them.
#[tokio::test]
async fn envelopes_cross_a_redis_queue_with_their_tenant() {
    let Some(ctx) = ctx().await else { return };
    let Some(redis) = RedisPrefix::create("_jobs").await else { return };
    let acme = ctx.tenant("racme", Isolation::Table).await;
    let globex = ctx.tenant("rglobex", Isolation::Schema).await;
    let key = format!("{}:queue", redis.prefix);

    // Producers: request handlers of each tenant queue a job from their scope.
    let mut conn = redis.conn.clone();
    for (seq, tenant) in [&acme, &globex, &acme, &globex].into_iter().enumerate() {
        let json = tenancy::scope(tenant.clone(), async {
            let job =
                TenantJob::in_current_scope(ProjectJob { seq, add: Some(format!("{}-redis-{seq}", tenant.id())) })
                    .expect("a tenant in scope");
            serde_json::to_string(&job).expect("to JSON")
        })
        .await;
        assert!(json.contains(&format!(r#""tenant":"{}""#, tenant.id())), "{json}");
        let _: i64 = redis::cmd("LPUSH").arg(&key).arg(json).query_async(&mut conn).await.expect("LPUSH");
    }

    // The consumer: a worker task that knows nothing of tenants.
    let tenancy = ctx.tenancy.clone();
    let mut conn = redis.conn.clone();
    let worker_key = key.clone();
    let seen = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..4 {
            let (_, json): (String, String) =
                redis::cmd("BRPOP").arg(&worker_key).arg(5).query_async(&mut conn).await.expect("BRPOP");
            let job: TenantJob<ProjectJob> = serde_json::from_str(&json).expect("from JSON");
            let queued_for = job.tenant().to_string();
            let seen_by_job = tenancy.run_job(job, project_job).await.expect("not refused");
            seen.push((queued_for, seen_by_job));
        }
        seen
    })
    .await
    .expect("worker");
    assert_eq!(seen.len(), 4);
    for (seq, (queued_for, s)) in seen.iter().enumerate() {
        // FIFO: LPUSH then BRPOP.
        assert_eq!(s.seq, seq);
        assert_eq!(&s.tenant, queued_for);
        assert!(s.names.iter().all(|name| name.starts_with(&format!("{queued_for}-"))), "{:?}", s.names);
    }
    for tenant in [&acme, &globex] {
        let names = project_names(tenant).await;
        let added: Vec<_> = names.iter().filter(|name| name.contains("-redis-")).collect();
        assert_eq!(added.len(), 2, "{names:?}");
    }
    let mut conn = redis.conn.clone();
    let left: i64 = redis::cmd("LLEN").arg(&key).query_async(&mut conn).await.expect("LLEN");
    assert_eq!(left, 0);
    let _: i64 = redis::cmd("DEL").arg(&key).query_async(&mut conn).await.expect("DEL");
}
