//! `Tenancy::diagnose` and `Tenancy::repair` against the real PostgreSQL server: each fault
//! planted by hand, found, and (the safe ones) repaired, with catalog checks afterwards;
//! another master's orphans on the same server are never this master's.

use crate::common;

use example_app::Migrator;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use tenancy::doctor::{Finding, Server};
use tenancy::{Isolation, NewTenant, Tenancy};
use tenancy_migrate::MigrateOnCreate;
use tenancy_test_support::{PgMaster, RedisPrefix, TempDir, exists, unique_name};

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

fn server() -> Server {
    Server { host: "127.0.0.1".to_owned(), port: 5432 }
}

impl Ctx {
    /// Creates and migrates a tenant; returns its id.
    async fn create(&self, prefix: &str, isolation: Isolation) -> String {
        let id = unique_name(prefix);
        let mut new = NewTenant::new(id.as_str(), id.as_str(), isolation).expect("a valid new tenant").migrate(true);
        if isolation == Isolation::Database {
            new = new.database(self.pg.new_database("s3cret password"));
        }
        self.tenancy.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.expect("create tenant");
        id
    }

    /// Removes a tenant's registry row by hand, leaving its storage: what a crashed or
    /// hand-made delete leaves.
    async fn forget(&self, id: &str) {
        self.master
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "DELETE FROM tenancy_tenants WHERE tenant_id = $1",
                [id.into()],
            ))
            .await
            .expect("delete the registry row");
    }

    async fn login_role(&self, id: &str) -> String {
        format!("{}{id}", tenancy::rls::tenant_role_prefix(self.tenancy.master()).await.expect("prefix"))
    }

    async fn role_exists(&self, role: &str) -> bool {
        self.pg.admin_exists("SELECT 1 FROM pg_roles WHERE rolname = $1", role).await
    }

    async fn database_exists(&self, name: &str) -> bool {
        self.pg.admin_exists("SELECT 1 FROM pg_database WHERE datname = $1", name).await
    }

    async fn schema_exists(&self, schema: &str) -> bool {
        exists(&self.master, "SELECT 1 FROM pg_namespace WHERE nspname = $1", schema).await
    }

    async fn repair_all(&self, findings: &[Finding]) {
        for repair in self.tenancy.repair(findings).await.expect("repair") {
            if repair.finding.repairable() {
                repair.outcome.unwrap_or_else(|err| panic!("{}: {err}", repair.finding.subject()));
            } else {
                assert!(repair.outcome.is_err(), "{} is not repairable", repair.finding.subject());
            }
        }
    }
}

/// The database and role names of a database tenant.
async fn database_of(tenancy: &Tenancy, id: &str) -> (String, String) {
    let tenant = tenancy.get_tenant(id).await.expect("tenant");
    match tenant.placement().database() {
        Some(tenancy::TenantDatabase::Postgres(db)) => (db.name.clone(), db.user.clone()),
        other => panic!("not a PostgreSQL database tenant: {other:?}"),
    }
}

#[tokio::test]
async fn a_healthy_master_has_no_findings() {
    let Some(ctx) = ctx().await else { return };
    ctx.create("doc_db", Isolation::Database).await;
    ctx.create("doc_schema", Isolation::Schema).await;
    ctx.create("doc_table", Isolation::Table).await;
    ctx.create("doc_cache", Isolation::Cache).await;
    assert_eq!(ctx.tenancy.diagnose().await.expect("diagnose"), []);
}

#[tokio::test]
async fn an_orphan_schema_and_its_login_role_are_dropped_and_registered_ones_kept() {
    let Some(ctx) = ctx().await else { return };
    let gone = ctx.create("doc_gone", Isolation::Schema).await;
    let kept = ctx.create("doc_kept", Isolation::Schema).await;
    ctx.forget(&gone).await;
    let (gone_role, kept_role) = (ctx.login_role(&gone).await, ctx.login_role(&kept).await);

    let findings = ctx.tenancy.diagnose().await.expect("diagnose");
    assert_eq!(
        findings,
        [
            Finding::OrphanSchema { schema: gone.clone(), tenant: gone.clone() },
            Finding::OrphanRole { role: gone_role.clone(), server: server(), tenant: gone.clone(), login: true },
        ]
    );
    assert!(findings.iter().all(Finding::repairable));

    ctx.repair_all(&findings).await;
    assert!(!ctx.schema_exists(&gone).await && !ctx.role_exists(&gone_role).await);
    assert!(ctx.schema_exists(&kept).await && ctx.role_exists(&kept_role).await);
    ctx.tenancy.tenant(&kept).await.expect("handle").ping().await.expect("the kept tenant still works");
    assert_eq!(ctx.tenancy.diagnose().await.expect("diagnose again"), []);
}

#[tokio::test]
async fn a_missing_schema_is_reported_and_never_repaired() {
    let Some(ctx) = ctx().await else { return };
    let id = ctx.create("doc_lost", Isolation::Schema).await;
    ctx.master.execute_unprepared(&format!("DROP SCHEMA \"{id}\" CASCADE")).await.expect("drop by hand");

    let findings = ctx.tenancy.diagnose().await.expect("diagnose");
    assert_eq!(findings, [Finding::MissingSchema { tenant: id.parse().unwrap(), schema: id.clone() }]);
    assert!(!findings[0].repairable());
    let repairs = ctx.tenancy.repair(&findings).await.expect("repair");
    assert!(repairs[0].outcome.is_err());
    // The registry row and the login role are left alone.
    assert!(ctx.tenancy.find_tenant(&id).await.expect("find").is_some());
    assert!(ctx.role_exists(&ctx.login_role(&id).await).await);
}

#[tokio::test]
async fn a_missing_database_is_reported_and_an_orphan_database_with_its_role_dropped() {
    let Some(ctx) = ctx().await else { return };
    let lost = ctx.create("doc_lostdb", Isolation::Database).await;
    let (lost_db, lost_user) = database_of(&ctx.tenancy, &lost).await;
    ctx.pg.admin.execute_unprepared(&format!("DROP DATABASE \"{lost_db}\" WITH (FORCE)")).await.expect("drop");
    let gone = ctx.create("doc_gonedb", Isolation::Database).await;
    let (gone_db, gone_user) = database_of(&ctx.tenancy, &gone).await;
    ctx.forget(&gone).await;

    let findings = ctx.tenancy.diagnose().await.expect("diagnose");
    assert_eq!(
        findings,
        [
            Finding::MissingDatabase { tenant: lost.parse().unwrap(), database: lost_db.clone(), server: server() },
            Finding::OrphanDatabase { database: gone_db.clone(), server: server(), tenant: gone.clone() },
            Finding::OrphanRole { role: gone_user.clone(), server: server(), tenant: gone.clone(), login: false },
        ]
    );
    ctx.repair_all(&findings).await;
    assert!(!ctx.database_exists(&gone_db).await && !ctx.role_exists(&gone_user).await);
    // The registered tenant's role stays, though its database is gone.
    assert!(ctx.role_exists(&lost_user).await);
    assert!(ctx.tenancy.find_tenant(&lost).await.expect("find").is_some());
}

#[tokio::test]
async fn unmarked_objects_named_like_a_tenant_are_reported_never_dropped() {
    let Some(ctx) = ctx().await else { return };
    let table = ctx.create("doc_login", Isolation::Table).await;
    let table_role = ctx.login_role(&table).await;
    ctx.forget(&table).await;
    // Made by hand: named like this master's tenant objects, but carrying no mark.
    let fake = unique_name("doc_fake");
    let fake_role = ctx.login_role(&fake).await;
    ctx.master
        .execute_unprepared(&format!(
            "CREATE ROLE \"{fake_role}\" NOLOGIN; CREATE SCHEMA \"{fake}\"; GRANT USAGE ON SCHEMA \"{fake}\" TO \"{fake_role}\""
        ))
        .await
        .expect("plant");
    // An application schema that is nobody's tenant: not a finding at all.
    let app_schema = unique_name("reports");
    ctx.master.execute_unprepared(&format!("CREATE SCHEMA \"{app_schema}\"")).await.expect("app schema");

    let findings = ctx.tenancy.diagnose().await.expect("diagnose");
    assert_eq!(
        findings,
        [
            Finding::UnownedSchema { schema: fake.clone() },
            // Login roles are listed by name: `doc_fake...` before `doc_login...`.
            Finding::UnownedRole { role: fake_role.clone(), server: server() },
            Finding::OrphanRole { role: table_role.clone(), server: server(), tenant: table.clone(), login: true },
        ]
    );
    ctx.repair_all(&findings).await;
    assert!(!ctx.role_exists(&table_role).await, "the marked orphan login role is dropped");
    assert!(ctx.role_exists(&fake_role).await && ctx.schema_exists(&fake).await, "unmarked objects stay");
    assert!(ctx.schema_exists(&app_schema).await);
    ctx.master.execute_unprepared(&format!("DROP SCHEMA \"{fake}\"; DROP ROLE \"{fake_role}\"")).await.expect("clean");
}

/// Row security disabled by hand on one scoped table: tenant `a` then reads tenant `b`'s
/// project (the hole is real); the doctor finds it, and after `--repair` `a` reads its own
/// project only.
#[tokio::test]
async fn row_security_disabled_on_a_table_is_found_and_repaired() {
    let Some(ctx) = ctx().await else { return };
    let handles =
        tenancy_test_support::table_tenants(&ctx.tenancy, &MigrateOnCreate::new(&Migrator), true, &["doc_a", "doc_b"])
            .await;
    common::add_project(&handles[0], None, "a's project").await;
    common::add_project(&handles[1], None, "b's project").await;
    ctx.master.execute_unprepared("ALTER TABLE public.projects DISABLE ROW LEVEL SECURITY").await.expect("disable");
    assert_eq!(common::project_names(&handles[0]).await, ["a's project", "b's project"], "the planted hole");

    let findings = ctx.tenancy.diagnose().await.expect("diagnose");
    assert_eq!(
        findings,
        [Finding::RowSecurity {
            object: "public.projects".to_owned(),
            problem: "row-level security is not enabled and forced".to_owned()
        }]
    );
    ctx.repair_all(&findings).await;
    let enabled = tenancy_test_support::count(
        &ctx.master,
        "SELECT count(*) FROM pg_class WHERE oid = 'public.projects'::regclass AND relrowsecurity AND relforcerowsecurity",
        vec![],
    )
    .await;
    assert_eq!(enabled, 1);
    assert_eq!(common::project_names(&handles[0]).await, ["a's project"]);
    assert_eq!(ctx.tenancy.diagnose().await.expect("diagnose again"), []);
}

/// A view over a scoped table owned by a superuser and granted to the application role
/// shows tenant `a` every tenant's rows; the doctor finds it, and after `--repair` (the
/// view becomes `security_invoker`) `a` sees its own rows only.
#[tokio::test]
async fn a_superuser_view_over_a_scoped_table_is_found_and_repaired() {
    let Some(ctx) = ctx().await else { return };
    let handles =
        tenancy_test_support::table_tenants(&ctx.tenancy, &MigrateOnCreate::new(&Migrator), true, &["doc_a", "doc_b"])
            .await;
    common::add_project(&handles[0], None, "a's project").await;
    common::add_project(&handles[1], None, "b's project").await;
    let app_role = ctx.tenancy.app_role().await.expect("app role").to_owned();
    // The master connection is the superuser `postgres`, which then owns the view.
    ctx.master
        .execute_unprepared(&format!(
            "CREATE VIEW public.all_projects AS SELECT name FROM public.projects; \
             GRANT SELECT ON public.all_projects TO \"{app_role}\""
        ))
        .await
        .expect("plant the view");
    let seen = |db: &tenancy::TenantConnection| {
        let db = db.clone();
        async move {
            let rows = db
                .query_all_raw(Statement::from_string(DbBackend::Postgres, "SELECT name FROM all_projects ORDER BY 1"))
                .await
                .expect("read the view");
            rows.iter().map(|row| row.try_get_by_index::<String>(0).expect("name")).collect::<Vec<_>>()
        }
    };
    assert_eq!(seen(&handles[0]).await, ["a's project", "b's project"], "the planted hole");

    let findings = ctx.tenancy.diagnose().await.expect("diagnose");
    assert_eq!(
        findings,
        [Finding::ViewBypassesRowSecurity {
            view: "public.all_projects".to_owned(),
            owner: "postgres".to_owned(),
            reason: "a superuser, to whom row security does not apply".to_owned(),
        }]
    );
    ctx.repair_all(&findings).await;
    assert_eq!(seen(&handles[0]).await, ["a's project"]);
    assert_eq!(ctx.tenancy.diagnose().await.expect("diagnose again"), []);
}

/// Roles and databases belong to the whole server: another master's orphans (marked with
/// its own name) are not this master's, and its repair leaves them alone.
#[tokio::test]
async fn another_masters_orphans_are_not_reported() {
    let (Some(ours), Some(theirs)) = (ctx().await, ctx().await) else { return };
    let db_tenant = theirs.create("doc_other", Isolation::Database).await;
    let (their_db, their_user) = database_of(&theirs.tenancy, &db_tenant).await;
    let table_tenant = theirs.create("doc_other", Isolation::Table).await;
    let their_login = theirs.login_role(&table_tenant).await;
    theirs.forget(&db_tenant).await;
    theirs.forget(&table_tenant).await;

    assert_eq!(ours.tenancy.diagnose().await.expect("diagnose ours"), []);
    let theirs_found = theirs.tenancy.diagnose().await.expect("diagnose theirs");
    assert_eq!(theirs_found.len(), 3, "{theirs_found:?}");
    // Our repair of their findings refuses: the marks are not ours.
    let repairs = ours.tenancy.repair(&theirs_found).await.expect("repair");
    assert!(repairs.iter().all(|repair| repair.outcome.is_err()), "{repairs:?}");
    assert!(ours.database_exists(&their_db).await && ours.role_exists(&their_user).await);
    assert!(ours.role_exists(&their_login).await);
}

/// A cache namespace of a tenant no longer registered is reported, and never cleared.
#[tokio::test]
async fn a_cache_namespace_of_an_unknown_tenant_is_reported_and_kept() {
    let Some(redis) = RedisPrefix::create("doc").await else { return };
    let Some(pg) = PgMaster::create().await else { return };
    let dir = TempDir::new();
    let cache = tenancy::cache::CacheConfig::redis(tenancy_test_support::redis_url()).prefix(redis.prefix.clone());
    let tenancy = pg.builder(&dir).cache(cache).connect().await.expect("connect");
    let (gone, kept) = (unique_name("doc_gone"), unique_name("doc_kept"));
    for id in [&gone, &kept] {
        let new = NewTenant::new(id.as_str(), id.as_str(), Isolation::Cache).expect("new tenant");
        tenancy.create_tenant(new, &()).await.expect("create");
        let cache = tenancy.tenant(id).await.expect("handle").cache();
        for key in ["a", "b"] {
            cache.set(&tenancy::cache::TenantKey::new("carts", key), &1, None).await.expect("set");
        }
    }
    let master = pg.connect().await;
    master
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "DELETE FROM tenancy_tenants WHERE tenant_id = $1",
            [gone.as_str().into()],
        ))
        .await
        .expect("forget");

    let findings = tenancy.diagnose().await.expect("diagnose");
    assert_eq!(findings, [Finding::UnownedCacheNamespace { namespace: gone.clone(), keys: 2 }]);
    assert!(!findings[0].repairable());
    let _ = tenancy.repair(&findings).await.expect("repair");
    assert_eq!(redis.keys().await.len(), 4, "nothing was cleared");
}

/// Registered servers are checked even when no tenant is on them: an orphan left on an
/// otherwise empty server is found (and dropped by the repair), and a registered server
/// that is down is one finding naming it while the rest of the run goes on.
#[tokio::test]
async fn registered_servers_without_tenants_are_checked_and_a_down_one_is_a_finding() {
    let Some(spare) = tenancy_test_support::PgServer::start() else { return };
    let Some(mut gone) = tenancy_test_support::PgServer::start() else { return };
    let Some(ctx) = ctx().await else { return };
    for (name, server) in [("spare", &spare), ("gone", &gone)] {
        let new = tenancy::servers::NewServer::new(name, "127.0.0.1", server.port, "postgres").expect("a server");
        ctx.tenancy.add_server(new).await.expect("add the server");
    }
    // A tenant on the spare server whose registry row is then lost: its database and role
    // stay there, marked, and no tenant names the server any more.
    let id = unique_name("doc_spare");
    let (db, user) = (unique_name("db"), unique_name("u"));
    let database = tenancy::NewDatabase::create(db.clone())
        .login(user.clone(), tenancy::secrets::Password::new("pw"))
        .server("127.0.0.1", spare.port);
    let new = NewTenant::new(id.as_str(), id.as_str(), Isolation::Database).expect("new tenant").database(database);
    ctx.tenancy.create_tenant(new, &()).await.expect("create on the spare server");
    ctx.forget(&id).await;
    gone.stop();

    let on_spare = Server { host: "127.0.0.1".to_owned(), port: spare.port };
    let findings = ctx.tenancy.diagnose().await.expect("diagnose goes on past a down server");
    assert_eq!(findings.len(), 3, "{findings:#?}");
    match &findings[0] {
        Finding::ServerUnreachable { server, name, .. } => {
            assert_eq!(server, &Server { host: "127.0.0.1".to_owned(), port: gone.port });
            assert_eq!(name.as_deref(), Some("gone"));
            let message = findings[0].message();
            assert!(message.contains(&format!("server 'gone' at 127.0.0.1:{}", gone.port)), "{message}");
        }
        other => panic!("expected the down server first, got {other:?}"),
    }
    assert_eq!(
        findings[1..],
        [
            Finding::OrphanDatabase { database: db.clone(), server: on_spare.clone(), tenant: id.clone() },
            Finding::OrphanRole { role: user.clone(), server: on_spare, tenant: id.clone(), login: false },
        ]
    );

    ctx.repair_all(&findings).await;
    let admin = sea_orm::Database::connect(spare.admin_url()).await.expect("connect to the spare server");
    assert!(!exists(&admin, "SELECT 1 FROM pg_database WHERE datname = $1", &db).await, "orphan database dropped");
    assert!(!exists(&admin, "SELECT 1 FROM pg_roles WHERE rolname = $1", &user).await, "orphan role dropped");
    admin.close().await.expect("close");
    // Back up, the server is checked again and has nothing left to report.
    gone.restart();
    assert_eq!(ctx.tenancy.diagnose().await.expect("diagnose"), []);
}
