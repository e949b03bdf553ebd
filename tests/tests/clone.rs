//! Cloning tenants from templates (`NewTenant::from_template`, `createtenant --from`,
//! `clonetenant`) in every mode pair: the clone's rows equal the template's (read with
//! the test's own SQL, straight from the storage), every tenant column holds the new id,
//! the template and a bystander are untouched, sequences continue past the copied keys,
//! and a schema cloned from a schema runs no migration.

use std::sync::atomic::{AtomicUsize, Ordering};

use example_app::Migrator;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend, Statement};
use tenancy::{
    BoxError, BoxFuture, Error, Isolation, NewTenant, Placement, ProvisionHooks, ProvisionStep, Tenancy, Tenant,
    TenantDatabase,
};
use tenancy_migrate::MigrateOnCreate;
use tenancy_test_support::{PgMaster, TempDir, unique_name, with_database};

/// The example app's tenant tables, parents first.
const TABLES: [&str; 4] = ["projects", "tasks", "comments", "tenant_users"];

/// [`MigrateOnCreate`] that counts how often it migrated.
struct Counting {
    inner: MigrateOnCreate<'static>,
    migrations: AtomicUsize,
}

impl Counting {
    fn new() -> Counting {
        Counting { inner: MigrateOnCreate::new(&Migrator), migrations: AtomicUsize::new(0) }
    }
}

impl ProvisionHooks for Counting {
    fn migrate<'a>(
        &'a self,
        tenancy: &'a Tenancy,
        tenant: &'a Tenant,
        within: Option<&'a DatabaseTransaction>,
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        self.migrations.fetch_add(1, Ordering::SeqCst);
        self.inner.migrate(tenancy, tenant, within)
    }

    fn after_step(&self, step: ProvisionStep) -> Result<(), BoxError> {
        self.inner.after_step(step)
    }

    fn check_version<'a>(&'a self, tenancy: &'a Tenancy, tenant: &'a Tenant) -> BoxFuture<'a, Result<(), BoxError>> {
        self.inner.check_version(tenancy, tenant)
    }
}

/// A master (PostgreSQL or SQLite) and what reads its tenants' storage directly.
struct World {
    tenancy: Tenancy,
    pg: Option<PgMaster>,
    dir: TempDir,
}

impl World {
    async fn postgres() -> Option<World> {
        let pg = PgMaster::create().await?;
        let dir = TempDir::new();
        let tenancy = pg.builder(&dir).live_registry(false).connect().await.expect("connect");
        Some(World { tenancy, pg: Some(pg), dir })
    }

    async fn sqlite() -> World {
        let dir = TempDir::new();
        let tenancy = dir.sqlite_builder().live_registry(false).connect().await.expect("connect");
        World { tenancy, pg: None, dir }
    }

    fn new_tenant(&self, id: &str, isolation: Isolation) -> NewTenant {
        let new = NewTenant::new(id, format!("{id} Inc"), isolation).expect("new tenant");
        match (isolation, &self.pg) {
            (Isolation::Database, Some(pg)) => new.database(pg.new_database("clone pass")),
            (Isolation::Database, None) => new.database(tenancy::NewDatabase::create(unique_name("file"))),
            _ => new,
        }
    }

    async fn create(&self, id: &str, isolation: Isolation) -> Tenant {
        self.tenancy
            .create_tenant(self.new_tenant(id, isolation).migrate(true), &MigrateOnCreate::new(&Migrator))
            .await
            .unwrap_or_else(|err| panic!("create {id}: {err}"))
            .tenant
    }

    /// Rows through the tenant's handle, keys starting at `base` (so tenants of the shared
    /// tables do not collide): 5 projects, 3 tasks each, a comment per task, a user.
    async fn seed(&self, id: &str, base: i64) {
        let handle = self.tenancy.tenant(id).await.expect("handle");
        let backend = handle.get_database_backend();
        let now = if backend == DbBackend::Postgres { "now()" } else { "CURRENT_TIMESTAMP" };
        for p in 0..5 {
            let project = base + p;
            let sql = format!(
                "INSERT INTO projects (id, tenant_id, name, created_at) VALUES ({project}, '{id}', 'Project {p} ü \"q\"', {now})"
            );
            handle.execute_unprepared(&sql).await.expect("project");
            for t in 0..3 {
                let task = base * 10 + p * 3 + t;
                handle
                    .execute_unprepared(&format!(
                        "INSERT INTO tasks (id, tenant_id, project_id, title, done) VALUES ({task}, '{id}', {project}, 'Task {t}', {})",
                        if t == 0 { "true" } else { "false" }
                    ))
                    .await
                    .expect("task");
                handle
                    .execute_unprepared(&format!(
                        "INSERT INTO comments (id, tenant_id, task_id, body) VALUES ({task}, '{id}', {task}, 'Note {t}')"
                    ))
                    .await
                    .expect("comment");
            }
        }
        let user = format!(
            "INSERT INTO tenant_users (id, tenant_id, username, email, password_hash, is_superuser) \
             VALUES ({base}, '{id}', 'admin', 'a@example.com', 'x', true)"
        );
        handle.execute_unprepared(&user).await.expect("user");
    }

    /// A connection to where `tenant`'s tables are, and the filter of its rows: the test's
    /// own reading, not the library's.
    async fn storage(&self, tenant: &Tenant) -> (DatabaseConnection, String, String) {
        let id = tenant.id().as_str();
        match (tenant.placement(), &self.pg) {
            (Placement::Database(TenantDatabase::Postgres(db)), Some(pg)) => {
                let conn = Database::connect(with_database(&pg.url, &db.name)).await.expect("tenant database");
                (conn, "public.".to_owned(), String::new())
            }
            (Placement::Schema { schema, .. }, Some(pg)) => {
                (pg.connect().await, format!("\"{schema}\"."), String::new())
            }
            (Placement::Table { .. }, Some(pg)) => {
                (pg.connect().await, "public.".to_owned(), format!(" WHERE tenant_id = '{id}'"))
            }
            (Placement::Database(TenantDatabase::Sqlite(db)), None) => {
                let url = format!("sqlite://{}?mode=ro", db.file_in(self.dir.path()).display());
                (Database::connect(url).await.expect("tenant file"), String::new(), String::new())
            }
            (Placement::Table { .. }, None) => {
                let url = format!("sqlite://{}?mode=ro", self.dir.path().join("master.db").display());
                (
                    Database::connect(url).await.expect("master file"),
                    String::new(),
                    format!(" WHERE tenant_id = '{id}'"),
                )
            }
            (placement, _) => panic!("no storage to read: {placement:?}"),
        }
    }

    /// Every row of every table of `tenant` but its tenant column, sorted, as text; and
    /// the distinct tenant-column values.
    async fn rows(&self, tenant: &Tenant) -> (Vec<String>, Vec<String>) {
        let (conn, prefix, filter) = self.storage(tenant).await;
        let backend = conn.get_database_backend();
        let mut rows = Vec::new();
        let mut ids = Vec::new();
        for table in TABLES {
            let sql = match backend {
                DbBackend::Postgres => format!(
                    "SELECT '{table}:' || (to_jsonb(t) - 'tenant_id')::text FROM {prefix}{table} t{filter} ORDER BY 1"
                ),
                _ => format!(
                    "SELECT '{table}:' || json_object({}) FROM {table} t{filter} ORDER BY 1",
                    self.sqlite_columns(&conn, table).await
                ),
            };
            for row in conn.query_all_raw(Statement::from_string(backend, sql)).await.expect("rows") {
                rows.push(row.try_get_by_index::<String>(0).expect("text"));
            }
            let sql = format!("SELECT DISTINCT tenant_id FROM {prefix}{table} t{filter}");
            for row in conn.query_all_raw(Statement::from_string(backend, sql)).await.expect("ids") {
                ids.push(row.try_get_by_index::<String>(0).expect("id"));
            }
        }
        let _ = conn.close().await;
        ids.sort();
        ids.dedup();
        (rows, ids)
    }

    /// `'col', t.col, ...` of a SQLite table, its tenant column left out.
    async fn sqlite_columns(&self, conn: &DatabaseConnection, table: &str) -> String {
        let sql = format!("SELECT name FROM pragma_table_info('{table}') WHERE name <> 'tenant_id' ORDER BY cid");
        let names: Vec<String> = conn
            .query_all_raw(Statement::from_string(DbBackend::Sqlite, sql))
            .await
            .expect("columns")
            .iter()
            .map(|row| row.try_get_by_index::<String>(0).expect("name"))
            .collect();
        names.iter().map(|name| format!("'{name}', t.\"{name}\"")).collect::<Vec<_>>().join(", ")
    }
}

async fn clone_case(world: World, from: Isolation, to: Isolation) {
    let (template_id, clone_id, bystander_id) = ("tmpl", "clone", "bystander");
    let template = world.create(template_id, from).await;
    world.seed(template_id, 100).await;
    let bystander = world.create(bystander_id, Isolation::Table).await;
    world.seed(bystander_id, 500).await;
    let template_before = world.rows(&template).await;
    let bystander_before = world.rows(&bystander).await;
    assert_eq!(template_before.1, vec![template_id.to_owned()]);
    assert_eq!(template_before.0.len(), 5 + 15 + 15 + 1, "seeded rows");

    // Into the shared tables a table template's keys are taken by the template itself: such
    // a clone is refused, and nothing of it is kept.
    let hooks = Counting::new();
    let created =
        world.tenancy.create_tenant(world.new_tenant(clone_id, to).from_template(template.id().clone()), &hooks).await;
    if from == Isolation::Table && to == Isolation::Table {
        match created {
            Err(Error::ProvisioningFailed { source, .. }) => {
                let err = source.downcast_ref::<Error>().expect("a tenancy error");
                assert!(matches!(err, Error::KeyCollision { .. }), "{err}");
            }
            other => panic!("a table clone of a table template must be refused: {other:?}"),
        }
        assert!(world.tenancy.find_tenant(clone_id).await.expect("registry").is_none(), "no registry row is left");
        assert_eq!(world.rows(&template).await, template_before);
        assert_eq!(world.rows(&bystander).await, bystander_before);
        return;
    }
    let clone = created.unwrap_or_else(|err| panic!("clone {from} -> {to}: {err}")).tenant;
    assert_eq!(clone.isolation(), to);
    assert_eq!(clone.status(), tenancy::TenantStatus::Ready);
    let expected_migrations = usize::from(!(from == Isolation::Schema && to == Isolation::Schema));
    assert_eq!(hooks.migrations.load(Ordering::SeqCst), expected_migrations, "migrations run for {from} -> {to}");

    let (rows, ids) = world.rows(&clone).await;
    assert_eq!(rows, template_before.0, "the clone's rows equal the template's");
    assert_eq!(ids, vec![clone_id.to_owned()], "every tenant column holds the new id");
    assert_eq!(world.rows(&template).await, template_before, "the template is untouched");
    assert_eq!(world.rows(&bystander).await, bystander_before, "the bystander is untouched");

    // Sequences continue past the copied keys: an insert without an id succeeds.
    let handle = world.tenancy.tenant(clone_id).await.expect("clone handle");
    handle
        .execute_unprepared(&format!("INSERT INTO projects (tenant_id, name) VALUES ('{clone_id}', 'After the clone')"))
        .await
        .expect("insert after the clone");
    let handle = world.tenancy.tenant(template_id).await.expect("template handle");
    handle
        .execute_unprepared(&format!(
            "INSERT INTO projects (tenant_id, name) VALUES ('{template_id}', 'Template goes on')"
        ))
        .await
        .expect("insert into the template after the clone");
    let (rows, _) = world.rows(&clone).await;
    assert_eq!(rows.len(), template_before.0.len() + 1);

    for id in [clone_id, template_id, bystander_id] {
        world.tenancy.delete_tenant(id, &Default::default()).await.unwrap_or_else(|err| panic!("delete {id}: {err}"));
    }
}

macro_rules! postgres_cases {
    ($($name:ident: $from:ident -> $to:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(world) = World::postgres().await else { return };
            clone_case(world, Isolation::$from, Isolation::$to).await;
        }
    )*};
}

postgres_cases! {
    postgres_schema_to_schema: Schema -> Schema;
    postgres_schema_to_table: Schema -> Table;
    postgres_schema_to_database: Schema -> Database;
    postgres_table_to_schema: Table -> Schema;
    postgres_table_to_table: Table -> Table;
    postgres_table_to_database: Table -> Database;
    postgres_database_to_schema: Database -> Schema;
    postgres_database_to_table: Database -> Table;
    postgres_database_to_database: Database -> Database;
}

macro_rules! sqlite_cases {
    ($($name:ident: $from:ident -> $to:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            clone_case(World::sqlite().await, Isolation::$from, Isolation::$to).await;
        }
    )*};
}

sqlite_cases! {
    sqlite_table_to_database: Table -> Database;
    sqlite_database_to_table: Database -> Table;
    sqlite_database_to_database: Database -> Database;
    sqlite_table_to_table: Table -> Table;
}

/// A schema cloned from a schema template has the template's structure exactly: tables,
/// columns, defaults, constraints, indexes, sequences and grants, compared as `pg_dump`
/// prints them (names aside).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_clone_has_the_templates_structure() {
    let Some(world) = World::postgres().await else { return };
    world.create("tmpl", Isolation::Schema).await;
    world
        .tenancy
        .create_tenant(
            world.new_tenant("copy", Isolation::Schema).from_template("tmpl".parse().expect("id")),
            &Counting::new(),
        )
        .await
        .expect("clone");
    let Some(pg) = &world.pg else { return };
    let dump = |schema: &str| {
        let out = std::process::Command::new("pg_dump")
            .args(["--schema-only", "--no-owner", "-n", schema, &pg.url])
            .output()
            .expect("pg_dump runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let prefix = "tnt_";
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|line| {
                !line.starts_with("--") && !line.starts_with("\\restrict") && !line.starts_with("\\unrestrict")
            })
            .map(|line| {
                let line = line.replace(schema, "SCHEMA");
                // The login roles differ by their tenant id only.
                match line.find(prefix) {
                    Some(at) => format!(
                        "{}ROLE{}",
                        &line[..at],
                        line[at..].find([';', ' ']).map_or("", |end| &line[at + end..])
                    ),
                    None => line,
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let (template, copy) = (dump("tmpl"), dump("copy"));
    assert!(template.contains("CREATE TABLE SCHEMA.tasks"), "{template}");
    assert_eq!(copy, template);
    for id in ["copy", "tmpl"] {
        world.tenancy.delete_tenant(id, &Default::default()).await.expect("delete");
    }
}

/// A cache tenant has nothing to copy: refused, nothing created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_template_is_refused() {
    let world = World::sqlite().await;
    world
        .tenancy
        .create_tenant(NewTenant::new("cached", "C", Isolation::Cache).expect("new"), &())
        .await
        .expect("cache");
    let err = world
        .tenancy
        .create_tenant(
            world.new_tenant("copy", Isolation::Table).from_template("cached".parse().expect("id")),
            &Counting::new(),
        )
        .await
        .expect_err("refused");
    let Error::ProvisioningFailed { source, .. } = &err else { panic!("{err}") };
    assert!(source.to_string().contains("cache tenant has no tables"), "{source}");
    assert!(world.tenancy.find_tenant("copy").await.expect("registry").is_none());
}

/// A database tenant cloned from a database template on the same server: with no
/// session on the template, `CREATE DATABASE … TEMPLATE` makes it and no migration runs;
/// the new role owns every object (the template's role owns none and its database stays
/// its own); with a session on the template, the clone is migrated and copied instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_clone_uses_create_database_template_when_the_template_is_idle() {
    let Some(world) = World::postgres().await else { return };
    let template = world.create("tmpl", Isolation::Database).await;
    world.seed("tmpl", 100).await;
    let before = world.rows(&template).await;
    let Some(TenantDatabase::Postgres(template_db)) = template.placement().database().cloned() else { panic!() };
    let pg = world.pg.as_ref().expect("postgres");

    // Idle template: no pool of this process holds it (closing one takes a moment).
    world.tenancy.reset_tenant_pool(template.id());
    for _ in 0..100 {
        let sessions = tenancy_test_support::count(
            &pg.admin,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
            vec![template_db.name.as_str().into()],
        )
        .await;
        if sessions == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let hooks = Counting::new();
    let clone = world
        .tenancy
        .create_tenant(world.new_tenant("idle", Isolation::Database).from_template(template.id().clone()), &hooks)
        .await
        .expect("clone of an idle template")
        .tenant;
    assert_eq!(hooks.migrations.load(Ordering::SeqCst), 0, "made from the template, not migrated");
    let (rows, ids) = world.rows(&clone).await;
    assert_eq!(rows, before.0);
    assert_eq!(ids, vec!["idle".to_owned()]);
    let Some(TenantDatabase::Postgres(clone_db)) = clone.placement().database().cloned() else { panic!() };
    let conn = Database::connect(with_database(&pg.url, &clone_db.name)).await.expect("clone database");
    let owners = tenancy_test_support::column_strings(
        &conn,
        "SELECT DISTINCT pg_get_userbyid(c.relowner)::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'S', 'i')",
        vec![],
    )
    .await;
    let _ = conn.close().await;
    assert_eq!(owners, vec![clone_db.user.clone()], "the new role owns every object");
    let owner = tenancy_test_support::column_strings(
        &pg.admin,
        "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1",
        vec![template_db.name.as_str().into()],
    )
    .await;
    assert_eq!(owner, vec![template_db.user.clone()], "the template's database stays its role's");
    assert_eq!(world.rows(&template).await, before, "the template is untouched");
    // The clone's role works on its own rows: the sequence goes on past the copied keys.
    world
        .tenancy
        .tenant("idle")
        .await
        .expect("handle")
        .execute_unprepared("INSERT INTO projects (tenant_id, name) VALUES ('idle', 'Mine')")
        .await
        .expect("insert as the clone's role");

    // A session on the template: the library copy.
    let busy = Database::connect(with_database(&pg.url, &template_db.name)).await.expect("session on the template");
    let hooks = Counting::new();
    let clone = world
        .tenancy
        .create_tenant(world.new_tenant("busy", Isolation::Database).from_template(template.id().clone()), &hooks)
        .await
        .expect("clone of a busy template")
        .tenant;
    let _ = busy.close().await;
    assert_eq!(hooks.migrations.load(Ordering::SeqCst), 1, "migrated, then copied");
    let (rows, ids) = world.rows(&clone).await;
    assert_eq!(rows, before.0);
    assert_eq!(ids, vec!["busy".to_owned()]);
    for id in ["idle", "busy", "tmpl"] {
        world.tenancy.delete_tenant(id, &Default::default()).await.expect("delete");
    }
}

/// What a move keeps is listed by the doctor as a leftover, never as an orphan, and
/// `repair` leaves it; `remove_leftovers` removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_doctor_lists_what_a_move_left_and_repair_keeps_it() {
    use tenancy::doctor::Finding;
    use tenancy::relocation::{MoveOptions, MoveTo};
    let Some(world) = World::postgres().await else { return };
    let tenant = world.create("mover", Isolation::Schema).await;
    world.seed("mover", 100).await;
    let before = world.rows(&tenant).await;
    let moved = world
        .tenancy
        .move_tenant("mover", &MoveOptions::new(MoveTo::Table), &MigrateOnCreate::new(&Migrator))
        .await
        .expect("move");
    assert_eq!(world.rows(&moved.tenant).await, before);
    let pg = world.pg.as_ref().expect("postgres");
    let schema_exists = || async {
        tenancy_test_support::exists(&pg.connect().await, "SELECT 1 FROM pg_namespace WHERE nspname = $1", "mover")
            .await
    };
    assert!(schema_exists().await, "the old schema is kept");

    let findings = world.tenancy.diagnose().await.expect("diagnose");
    let leftovers: Vec<&Finding> = findings.iter().filter(|f| f.kind() == "leftover").collect();
    assert_eq!(leftovers.len(), 1, "{findings:?}");
    assert_eq!(leftovers[0].subject(), "schema 'mover'");
    assert!(leftovers[0].to_string().contains("deletetenant mover --leftovers"), "{}", leftovers[0]);
    assert!(!leftovers[0].repairable());
    assert!(findings.iter().all(|f| !f.kind().starts_with("orphan_")), "{findings:?}");
    world.tenancy.repair(&findings).await.expect("repair");
    assert!(schema_exists().await, "repair keeps what a move left");

    let removed = world.tenancy.remove_leftovers(moved.tenant.id()).await.expect("remove leftovers");
    assert_eq!(removed.len(), 1);
    assert!(!schema_exists().await, "removed");
    let findings = world.tenancy.diagnose().await.expect("diagnose");
    assert!(findings.iter().all(|f| f.kind() != "leftover"), "{findings:?}");
    assert_eq!(world.rows(&world.tenancy.get_tenant("mover").await.expect("tenant")).await, before);
    world.tenancy.delete_tenant("mover", &Default::default()).await.expect("delete");
}
