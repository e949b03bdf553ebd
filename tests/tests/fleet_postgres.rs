//! Fleet migrations against the real PostgreSQL server: every mode migrated and
//! re-migrated, a failing tenant with the ledger and `--resume`, two runs at once, shared
//! migrations first, and schema tenants that never touch `public`.

#![allow(elided_lifetimes_in_paths, reason = "async_trait migrations must match sea-orm-migration's trait")]
#![allow(non_camel_case_types, reason = "migration structs are named like their migration files")]

use example_app::Migrator;
use sea_orm::{ConnectionTrait, DatabaseConnection};
use sea_orm_migration::prelude::*;
use tenancy::ledger::TenantOutcome;
use tenancy::{Isolation, NewTenant, Tenancy, TenantId};
use tenancy_migrate::Migrators;
use tenancy_migrate::fleet::{FleetOptions, migrate_all, migrate_all_listed, plan};
use tenancy_test_support::{PgMaster, TempDir, column_strings, count, exists};

use crate::common::{Listed, outcomes};

struct Ctx {
    pg: PgMaster,
    tenancy: Tenancy,
    master: DatabaseConnection,
    _dir: TempDir,
}

async fn ctx() -> Option<Ctx> {
    let pg = PgMaster::create().await?;
    let dir = TempDir::new();
    let tenancy = pg.tenancy(&dir).await;
    let master = pg.connect().await;
    Some(Ctx { pg, tenancy, master, _dir: dir })
}

impl Ctx {
    /// Registers a tenant without migrating it.
    async fn tenant(&self, id: &str, isolation: Isolation) {
        let database = (isolation == Isolation::Database).then(|| self.pg.new_database("pw"));
        let new = NewTenant::new(id, id, isolation).expect("a valid new tenant").database(database);
        self.tenancy.create_tenant(new, &()).await.expect("create tenant");
    }

    async fn schema_table_exists(&self, schema: &str, table: &str) -> bool {
        count(
            &self.master,
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2",
            vec![schema.into(), table.into()],
        )
        .await
            == 1
    }
}

async fn run(ctx: &Ctx, migrators: &Migrators, options: FleetOptions) -> Listed {
    let (report, tenants) = migrate_all_listed(&ctx.tenancy, migrators, &options, &|_| {}).await.expect("fleet run");
    Listed { report, tenants }
}

#[tokio::test]
async fn every_mode_migrates_then_reports_nothing_pending() {
    let Some(ctx) = ctx().await else { return };
    ctx.tenant("a_db", Isolation::Database).await;
    ctx.tenant("b_schema", Isolation::Schema).await;
    ctx.tenant("c_table", Isolation::Table).await;
    ctx.tenant("d_cache", Isolation::Cache).await;
    let migrators = example_app::migrators();

    let first = run(&ctx, &migrators, FleetOptions::default()).await;
    assert_eq!(
        outcomes(&first),
        [
            ("a_db".into(), TenantOutcome::Migrated),
            ("b_schema".into(), TenantOutcome::Migrated),
            ("c_table".into(), TenantOutcome::Migrated),
            ("d_cache".into(), TenantOutcome::Skipped),
        ]
    );
    assert_eq!(first.shared, ["m20260101_000003_create_plans"]);
    assert!(first.succeeded());
    // Where the migrations landed.
    assert!(ctx.schema_table_exists("b_schema", "projects").await);
    assert!(ctx.schema_table_exists("b_schema", "seaql_migrations").await);
    assert!(ctx.schema_table_exists("public", "projects").await, "table tenants use the shared tables");
    assert!(ctx.schema_table_exists("public", "plans").await, "shared migrations ran on the master");
    let a = ctx.tenancy.get_tenant("a_db").await.unwrap();
    let a_db = ctx.tenancy.connect_storage(&a).await.unwrap().unwrap();
    assert_eq!(count(&a_db, "SELECT COUNT(*) FROM seaql_migrations", vec![]).await, 3);
    a_db.close().await.unwrap();

    let second = run(&ctx, &migrators, FleetOptions::default()).await;
    assert_eq!(second.count(TenantOutcome::UpToDate), 3, "{:?}", outcomes(&second));
    assert_eq!(second.count(TenantOutcome::Migrated), 0);
    assert!(second.shared.is_empty());
    // Both runs are in the ledger.
    let ledger = ctx.tenancy.ledger().entries(first.run_id).await.unwrap();
    assert_eq!(ledger.len(), 4);
    let b = ledger.iter().find(|e| e.tenant_id == "b_schema").unwrap();
    assert_eq!(b.migrations.len(), 3);
    assert_eq!(ctx.tenancy.ledger().last_run().await.unwrap().unwrap().id, second.run_id);
}

/// The example migrations, plus one that fails where a tenant already has an
/// incompatible `audit` table.
#[derive(Debug)]
struct WithAudit;

#[derive(DeriveMigrationName)]
struct m20260201_000001_create_audit;

#[async_trait::async_trait]
impl MigrationTrait for m20260201_000001_create_audit {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("audit")
                    .if_not_exists()
                    .col(ColumnDef::new("id").integer().not_null().primary_key())
                    .col(ColumnDef::new("tenant_id").string().not_null())
                    .to_owned(),
            )
            .await?;
        // Fails on a pre-existing `audit` table without a tenant_id column.
        manager.create_index(Index::create().name("audit_tenant").table("audit").col("tenant_id").to_owned()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table("audit").to_owned()).await
    }
}

impl MigratorTrait for WithAudit {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut all = Migrator::migrations();
        all.push(Box::new(m20260201_000001_create_audit));
        all
    }
}

#[tokio::test]
async fn a_failing_tenant_is_in_the_ledger_and_resume_finishes_the_job() {
    let Some(ctx) = ctx().await else { return };
    for id in ["t1", "t2", "t3", "t4"] {
        ctx.tenant(id, Isolation::Schema).await;
    }
    // t2 holds an `audit` table the new migration cannot index.
    ctx.master.execute_unprepared("CREATE TABLE t2.audit (id int)").await.unwrap();
    let migrators = Migrators::new(WithAudit);

    // Default: after the first failure no new tenant starts.
    let report = run(&ctx, &migrators, FleetOptions { jobs: 1, ..FleetOptions::default() }).await;
    assert_eq!(
        outcomes(&report),
        [
            ("t1".into(), TenantOutcome::Migrated),
            ("t2".into(), TenantOutcome::Failed),
            ("t3".into(), TenantOutcome::NotAttempted),
            ("t4".into(), TenantOutcome::NotAttempted),
        ]
    );
    assert!(!report.succeeded());
    let t2 = report.tenants.iter().find(|t| t.tenant.as_str() == "t2").unwrap();
    assert!(t2.detail.as_deref().unwrap().contains("tenant_id"), "{:?}", t2.detail);
    // The failed tenant's transaction rolled back whole: none of its migrations applied.
    assert!(!ctx.schema_table_exists("t2", "projects").await);
    assert!(!ctx.schema_table_exists("t2", "seaql_migrations").await);
    let ledger = ctx.tenancy.ledger().entries(report.run_id).await.unwrap();
    let by_id: Vec<(String, TenantOutcome)> = ledger.iter().map(|e| (e.tenant_id.clone(), e.outcome)).collect();
    assert_eq!(by_id, outcomes(&report));
    assert!(ledger[1].detail.as_deref().unwrap().contains("tenant_id"));
    assert_eq!(ledger[0].migrations.len(), 4);

    // Fix t2, resume: only the unfinished tenants run.
    ctx.master.execute_unprepared("DROP TABLE t2.audit").await.unwrap();
    let resumed = run(&ctx, &migrators, FleetOptions { resume: true, jobs: 2, ..FleetOptions::default() }).await;
    assert_eq!(
        outcomes(&resumed),
        [
            ("t2".into(), TenantOutcome::Migrated),
            ("t3".into(), TenantOutcome::Migrated),
            ("t4".into(), TenantOutcome::Migrated),
        ]
    );
    assert!(resumed.succeeded());
    for id in ["t1", "t2", "t3", "t4"] {
        assert_eq!(count(&ctx.master, &format!("SELECT COUNT(*) FROM {id}.seaql_migrations"), vec![]).await, 4);
    }
}

#[tokio::test]
async fn continue_on_error_runs_every_tenant() {
    let Some(ctx) = ctx().await else { return };
    for id in ["c1", "c2", "c3"] {
        ctx.tenant(id, Isolation::Schema).await;
    }
    ctx.master.execute_unprepared("CREATE TABLE c1.audit (id int)").await.unwrap();
    let options = FleetOptions { jobs: 1, continue_on_error: true, ..FleetOptions::default() };
    let report = run(&ctx, &Migrators::new(WithAudit), options).await;
    assert_eq!(
        outcomes(&report),
        [
            ("c1".into(), TenantOutcome::Failed),
            ("c2".into(), TenantOutcome::Migrated),
            ("c3".into(), TenantOutcome::Migrated),
        ]
    );
}

#[tokio::test]
async fn two_runs_at_once_never_migrate_a_tenant_twice() {
    let Some(ctx) = ctx().await else { return };
    let ids: Vec<String> = (0..8).map(|i| format!("p{i}")).collect();
    for id in &ids {
        ctx.tenant(id, Isolation::Schema).await;
    }
    let migrators = Migrators::new(Migrator);
    let options = FleetOptions { jobs: 3, continue_on_error: true, ..FleetOptions::default() };
    let (a, b) = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        futures_join(
            migrate_all_listed(&ctx.tenancy, &migrators, &options, &|_| {}),
            migrate_all_listed(&ctx.tenancy, &migrators, &options, &|_| {}),
        ),
    )
    .await
    .expect("no deadlock");
    let (a, b) = (a.unwrap(), b.unwrap());
    let (a, b) = (Listed { report: a.0, tenants: a.1 }, Listed { report: b.0, tenants: b.1 });
    assert!(a.succeeded() && b.succeeded(), "{:?}\n{:?}", a.tenants, b.tenants);
    for id in &ids {
        let migrated = [&a, &b]
            .iter()
            .filter(|r| r.tenants.iter().any(|t| t.tenant.as_str() == id && t.outcome == TenantOutcome::Migrated))
            .count();
        assert_eq!(migrated, 1, "{id} migrated by {migrated} runs");
        assert_eq!(count(&ctx.master, &format!("SELECT COUNT(*) FROM {id}.seaql_migrations"), vec![]).await, 3);
    }
}

async fn futures_join<A: std::future::Future, B: std::future::Future>(a: A, b: B) -> (A::Output, B::Output) {
    tokio::join!(a, b)
}

/// A migration that creates a table and drops `projects`: in a schema tenant both must
/// stay inside its schema.
#[derive(Debug)]
struct DropsAndCreates;

#[derive(DeriveMigrationName)]
struct m20260301_000001_reshape;

#[async_trait::async_trait]
impl MigrationTrait for m20260301_000001_reshape {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create().table("reshaped").col(ColumnDef::new("id").integer().primary_key()).to_owned(),
            )
            .await?;
        manager.drop_table(Table::drop().table("projects").if_exists().to_owned()).await
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Ok(())
    }
}

impl MigratorTrait for DropsAndCreates {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m20260301_000001_reshape)]
    }
}

#[tokio::test]
async fn schema_tenant_migrations_never_touch_public() {
    let Some(ctx) = ctx().await else { return };
    ctx.master
        .execute_unprepared("CREATE TABLE public.projects (id int); INSERT INTO public.projects VALUES (7)")
        .await
        .unwrap();
    ctx.tenant("reshaper", Isolation::Schema).await;
    let report = run(&ctx, &Migrators::new(DropsAndCreates), FleetOptions::default()).await;
    assert_eq!(outcomes(&report), [("reshaper".into(), TenantOutcome::Migrated)]);
    assert!(ctx.schema_table_exists("reshaper", "reshaped").await);
    assert!(!ctx.schema_table_exists("public", "reshaped").await);
    assert!(!ctx.schema_table_exists("public", "seaql_migrations").await);
    assert_eq!(count(&ctx.master, "SELECT COUNT(*) FROM public.projects WHERE id = 7", vec![]).await, 1);
}

#[tokio::test]
async fn failing_shared_migrations_touch_no_tenant_and_plan_touches_nothing() {
    let Some(ctx) = ctx().await else { return };
    ctx.tenant("s1", Isolation::Schema).await;
    let migrators = example_app::migrators();

    // The plan lists what would run and creates nothing, not even the migration table.
    let plans = plan(&ctx.tenancy, &migrators, &FleetOptions::default()).await.unwrap();
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].pending.len(), 3);
    assert!(!ctx.schema_table_exists("s1", "seaql_migrations").await);

    // An incompatible `plans` table makes the shared migration fail.
    ctx.master.execute_unprepared("CREATE TABLE public.plans (id int)").await.unwrap();
    let err = migrate_all(&ctx.tenancy, &migrators, &FleetOptions::default(), &|_| {}).await.unwrap_err();
    assert!(matches!(err, tenancy_migrate::Error::SharedMigration { .. }), "{err}");
    assert!(!ctx.schema_table_exists("s1", "projects").await, "a tenant was touched");
    let last = ctx.tenancy.ledger().last_run().await.unwrap().unwrap();
    assert_eq!(last.status, tenancy::ledger::RunStatus::Failed);
}

#[tokio::test]
async fn selections_and_not_ready_tenants() {
    let Some(ctx) = ctx().await else { return };
    ctx.tenant("x1", Isolation::Schema).await;
    ctx.tenant("x2", Isolation::Schema).await;
    ctx.tenant("x3", Isolation::Table).await;
    // A tenant left `provisioning` by a crashed createtenant.
    ctx.master
        .execute_unprepared("UPDATE tenancy_tenants SET status = 'provisioning' WHERE tenant_id = 'x2'")
        .await
        .unwrap();
    let migrators = Migrators::new(Migrator);
    let only = FleetOptions { tenants: Some(vec!["x1".parse().unwrap()]), ..FleetOptions::default() };
    assert_eq!(outcomes(&run(&ctx, &migrators, only).await), [("x1".into(), TenantOutcome::Migrated)]);
    let schemas = FleetOptions { isolation: Some(Isolation::Schema), ..FleetOptions::default() };
    let report = run(&ctx, &migrators, schemas).await;
    assert_eq!(outcomes(&report), [("x1".into(), TenantOutcome::UpToDate), ("x2".into(), TenantOutcome::Skipped)]);
    assert!(report.tenants[1].detail.as_deref().unwrap().contains("provisioning"));
    assert!(!ctx.schema_table_exists("x2", "projects").await);
    let unknown = FleetOptions { tenants: Some(vec![TenantId::new("nope").unwrap()]), ..FleetOptions::default() };
    let err = migrate_all(&ctx.tenancy, &migrators, &unknown, &|_| {}).await.unwrap_err();
    assert_eq!(err.to_string(), "Tenant 'nope' does not exist");
    assert!(exists(&ctx.master, "SELECT 1 FROM tenancy_tenants WHERE tenant_id = $1", "x3").await);
    let _ = column_strings(&ctx.master, "SELECT tenant_id FROM tenancy_tenants", vec![]).await;
}

#[derive(DeriveMigrationName)]
struct m20261201_000001_add_project_archived_at;

#[async_trait::async_trait]
impl MigrationTrait for m20261201_000001_add_project_archived_at {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("projects")
                    .add_column(ColumnDef::new("archived_at").timestamp_with_time_zone().null())
                    .to_owned(),
            )
            .await
    }
}

/// The example app's migrations and one more.
struct WithArchivedAt;

impl MigratorTrait for WithArchivedAt {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut all = Migrator::migrations();
        all.push(Box::new(m20261201_000001_add_project_archived_at));
        all
    }
}

/// A run reads the registry a page (500) at a time and schema tenants' applied migrations
/// a batch at a time: over three pages, every tenant is selected, reported and in the
/// ledger once, schema tenants on every page are migrated, and a batch with a schema
/// that has no bookkeeping table yet falls back to reading each tenant.
#[tokio::test]
async fn a_run_over_several_pages_of_the_registry_takes_every_tenant_once() {
    let Some(ctx) = ctx().await else { return };
    // Cache tenants are registry rows alone: cheap filler for the pages, copied from one
    // registered through the API.
    ctx.tenant("c0000", Isolation::Cache).await;
    ctx.master
        .execute_unprepared(
            "INSERT INTO tenancy_tenants (tenant_id, name, isolation_type, config, status, created_at, updated_at) \
             SELECT 'c' || lpad(i::text, 4, '0'), name, isolation_type, config, status, created_at, updated_at \
             FROM tenancy_tenants, generate_series(1, 1049) AS i WHERE tenant_id = 'c0000'",
        )
        .await
        .expect("copy the cache tenant");
    // Page 1, page 2 (between c0600 and c0601), page 3.
    let schemas = ["a_first", "c0600b", "z_last"];
    for id in schemas {
        ctx.tenant(id, Isolation::Schema).await;
    }
    let total = 1050 + schemas.len();
    let expect = |listed: &Listed, outcome: TenantOutcome| {
        let mut got: Vec<String> =
            listed.tenants.iter().filter(|t| t.outcome == outcome).map(|t| t.tenant.to_string()).collect();
        got.sort();
        got
    };

    // Nothing applied: no bookkeeping table, so the batched read fails and each reads its own.
    let first = run(&ctx, &Migrators::new(Migrator), FleetOptions { jobs: 2, ..FleetOptions::default() }).await;
    assert!(first.succeeded(), "{:?}", first.unfinished);
    assert_eq!(first.tenants.len(), total, "each tenant reported once");
    assert_eq!(expect(&first, TenantOutcome::Migrated), schemas);
    assert_eq!(first.count(TenantOutcome::Skipped), 1050);
    let ledger = ctx.tenancy.ledger().entries(first.run_id).await.unwrap();
    assert_eq!(ledger.len(), total, "every tenant selected in the ledger");
    assert!(ledger.iter().all(|e| e.outcome != TenantOutcome::NotAttempted));

    // One new migration: the batched read finds all three behind.
    let second = run(&ctx, &Migrators::new(WithArchivedAt), FleetOptions { jobs: 2, ..FleetOptions::default() }).await;
    assert_eq!(expect(&second, TenantOutcome::Migrated), schemas);
    assert_eq!(second.tenants.len(), total);
    for schema in schemas {
        let sql = format!(
            "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = '{schema}' AND table_name = 'projects' AND column_name = 'archived_at'"
        );
        assert_eq!(count(&ctx.master, &sql, vec![]).await, 1, "{schema} migrated");
    }
    // Nothing pending: all three found up to date by the batched read.
    let third = run(&ctx, &Migrators::new(WithArchivedAt), FleetOptions::default()).await;
    assert_eq!(expect(&third, TenantOutcome::UpToDate), schemas);
    assert!(third.succeeded());
    assert_eq!(third.count(TenantOutcome::Skipped) + third.count(TenantOutcome::UpToDate), total);
    assert_eq!(ctx.tenancy.ledger().entries(third.run_id).await.unwrap().len(), total);
}
