//! Moving a tenant to another isolation mode with its data (`Tenancy::move_tenant`), on
//! real PostgreSQL for every ordered pair of relational modes and on SQLite between
//! database and table isolation, with the example app's data (projects, tasks and
//! comments linked by foreign keys, and the accounts module's `tenant_users`).
//!
//! The rows are compared with checksums this file computes itself, reading each storage
//! directly as the superuser (PostgreSQL) or through its file (SQLite), never through the
//! library: the moved tenant's rows are identical before and after (the tenant column left
//! out, then checked to hold the tenant id everywhere), the other tenants' rows identical
//! byte for byte, and the sequences continue past the copied keys.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use crate::common;
use example_app::Migrator;
use example_app::entities::{comment, project, task};
use sea_orm::prelude::{ChronoDateTimeUtc, ChronoUtc};
use sea_orm::{
    ActiveModelTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, NotSet, Set, Statement,
    TransactionTrait,
};
use tenancy::relocation::{MoveEvent, MoveOptions, MoveStep, MoveTo};
use tenancy::{
    Error, Isolation, NewDatabase, NewTenant, Placement, Tenancy, Tenant, TenantConnection, TenantDatabase, TenantId,
    TenantStatus,
};
use tenancy_migrate::MigrateOnCreate;
use tenancy_migrate::accounts::tenant_user;
use tenancy_test_support::{PgMaster, TempDir, postgres_admin_url, unique_name, with_database};

/// The example app's tenant tables, parents first.
const TABLES: [&str; 4] = ["projects", "tasks", "comments", "tenant_users"];
/// The moved tenant's data: projects, tasks per project, comments per task, users.
const BIG: Seed = Seed { projects: 50, tasks: 4, comments: 2, users: 6 };
/// A bystander's data.
const SMALL: Seed = Seed { projects: 5, tasks: 2, comments: 1, users: 2 };

#[derive(Clone, Copy, Debug)]
struct Seed {
    projects: i32,
    tasks: i32,
    comments: i32,
    users: i32,
}

impl Seed {
    fn rows(self) -> [u64; 4] {
        let tasks = self.projects * self.tasks;
        [self.projects, tasks, tasks * self.comments, self.users].map(|n| u64::try_from(n).unwrap())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Database,
    Schema,
    Table,
}

impl Mode {
    fn isolation(self) -> Isolation {
        match self {
            Mode::Database => Isolation::Database,
            Mode::Schema => Isolation::Schema,
            Mode::Table => Isolation::Table,
        }
    }
}

fn hooks() -> MigrateOnCreate<'static> {
    MigrateOnCreate::new(&Migrator)
}

/// Inserts `seed`'s rows through the tenant's handle, the tenant column set to its id.
/// With `ids_from`, keys are given explicitly from that number on (and the shared
/// tables' sequences are left where they are): a bystander in shared tables whose keys
/// stay clear of the moved tenant's.
async fn seed(db: &TenantConnection, seed: Seed, ids_from: Option<i32>) {
    let id = db.id().as_str().to_owned();
    let key = |n: i32| ids_from.map_or(NotSet, |base| Set(base + n));
    let at = |n: i32| {
        let n = i64::from(n);
        ChronoDateTimeUtc::from_timestamp(
            1_700_000_000 + n * 3_671,
            u32::try_from(n * 123_457 % 1_000_000).unwrap() * 1_000,
        )
        .unwrap()
    };
    let (mut task_n, mut comment_n) = (0, 0);
    for p in 0..seed.projects {
        let project = project::ActiveModel {
            id: key(p),
            tenant_id: Set(id.clone()),
            name: Set(format!("Projekt {p} « café ✓ 東京 » of {id}")),
            created_at: Set(at(p)),
        }
        .insert(db)
        .await
        .expect("insert project");
        for t in 0..seed.tasks {
            let task = task::ActiveModel {
                id: key(task_n),
                tenant_id: Set(id.clone()),
                project_id: Set(project.id),
                title: Set(format!("Task {t} of {p}: 'quoted' \"double\" \\ back\nslash")),
                done: Set(t % 2 == 0),
                created_at: Set(at(task_n)),
            }
            .insert(db)
            .await
            .expect("insert task");
            task_n += 1;
            for c in 0..seed.comments {
                comment::ActiveModel {
                    id: key(comment_n),
                    tenant_id: Set(id.clone()),
                    task_id: Set(task.id),
                    body: Set(format!(
                        "Comment {c} on {}: ✅ emoji 🎉, tab\there, {}",
                        task.id,
                        "x".repeat(c as usize * 40)
                    )),
                    created_at: Set(at(comment_n)),
                }
                .insert(db)
                .await
                .expect("insert comment");
                comment_n += 1;
            }
        }
    }
    for u in 0..seed.users {
        tenant_user::ActiveModel {
            id: key(u),
            tenant_id: Set(id.clone()),
            username: Set(format!("user{u}")),
            email: Set(format!("ü{u}@例え.jp")),
            password_hash: Set(format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${u:0>43}")),
            is_superuser: Set(u == 0),
            created_at: Set(at(u)),
        }
        .insert(db)
        .await
        .expect("insert tenant user");
    }
}

/// Adds a project, a task and a comment through `db` with keys from the sequences, and
/// returns the project's key.
async fn add_after_move(db: &TenantConnection) -> i32 {
    let id = db.id().as_str().to_owned();
    let project = project::ActiveModel {
        tenant_id: Set(id.clone()),
        name: Set("after the move".to_owned()),
        created_at: Set(ChronoUtc::now()),
        ..Default::default()
    }
    .insert(db)
    .await
    .expect("insert a project after the move");
    let task = task::ActiveModel {
        tenant_id: Set(id.clone()),
        project_id: Set(project.id),
        title: Set("new".to_owned()),
        done: Set(false),
        created_at: Set(ChronoUtc::now()),
        ..Default::default()
    }
    .insert(db)
    .await
    .expect("insert a task after the move");
    comment::ActiveModel {
        tenant_id: Set(id.clone()),
        task_id: Set(task.id),
        body: Set("new".to_owned()),
        created_at: Set(ChronoUtc::now()),
        ..Default::default()
    }
    .insert(db)
    .await
    .expect("insert a comment after the move");
    tenant_user::ActiveModel {
        tenant_id: Set(id),
        username: Set("newcomer".to_owned()),
        email: Set("new@example.com".to_owned()),
        password_hash: Set("$argon2id$v=19$new".to_owned()),
        is_superuser: Set(false),
        created_at: Set(ChronoUtc::now()),
        ..Default::default()
    }
    .insert(db)
    .await
    .expect("insert a user after the move");
    project.id
}

/// Rows, digest and rows whose tenant column is not the tenant's, per table.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Sums {
    tables: BTreeMap<String, (u64, String)>,
    foreign: u64,
}

impl Sums {
    fn rows(&self) -> Vec<u64> {
        TABLES.iter().map(|t| self.tables[*t].0).collect()
    }
}

// ---------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------

/// Where a tenant's rows are on PostgreSQL, as the test reads them.
#[derive(Clone, Debug)]
enum PgStore {
    /// Its own database (`public` schema).
    Database(String),
    /// A schema of the master.
    Schema(String),
    /// The master's shared tables, the rows of this tenant.
    Shared(String),
}

impl PgStore {
    fn of(tenant: &Tenant) -> PgStore {
        match tenant.placement() {
            Placement::Database(TenantDatabase::Postgres(db)) => PgStore::Database(db.name.clone()),
            Placement::Schema { schema, .. } => PgStore::Schema(schema.clone()),
            Placement::Table { .. } => PgStore::Shared(tenant.id().to_string()),
            other => panic!("not a PostgreSQL placement: {other:?}"),
        }
    }
}

struct Pg {
    pg: PgMaster,
    tenancy: Tenancy,
    /// A superuser connection to the master: row-level security does not apply to it.
    superuser: DatabaseConnection,
    dir: TempDir,
}

async fn pg() -> Option<Pg> {
    let pg = PgMaster::create().await?;
    let dir = TempDir::new();
    let tenancy = pg.tenancy(&dir).await;
    let superuser = pg.connect().await;
    Some(Pg { pg, tenancy, superuser, dir })
}

async fn one_of<C: ConnectionTrait>(db: &C, sql: &str, values: Vec<sea_orm::Value>) -> i64 {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(db.get_database_backend(), sql, values))
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
        .expect("one row");
    row.try_get_by_index::<i64>(0).expect("an integer")
}

impl Pg {
    /// A migrated tenant in `mode`, with `data` seeded through its handle.
    async fn tenant(&self, prefix: &str, mode: Mode, data: Seed, ids_from: Option<i32>) -> TenantId {
        let id: TenantId = unique_name(prefix).parse().expect("a valid id");
        let mut new =
            NewTenant::new(id.clone(), format!("{prefix} Ltd."), mode.isolation()).expect("new").migrate(true);
        if mode == Mode::Database {
            new = new.database(self.pg.new_database("pw of a tenant"));
        }
        self.tenancy.create_tenant(new, &hooks()).await.expect("create tenant");
        let handle = self.tenancy.tenant(&id).await.expect("handle");
        seed(&handle, data, ids_from).await;
        id
    }

    fn move_to(&self, mode: Mode) -> (MoveTo, Option<String>) {
        match mode {
            Mode::Database => {
                let new = self.pg.new_database("pw after the move");
                let name = new.name().to_owned();
                (MoveTo::Database(new), Some(name))
            }
            Mode::Schema => (MoveTo::Schema, None),
            Mode::Table => (MoveTo::Table, None),
        }
    }

    async fn store(&self, id: &TenantId) -> PgStore {
        PgStore::of(&self.tenancy.get_tenant(id).await.expect("tenant"))
    }

    /// The tenant's rows at `store`, summed: every column but the tenant column (or every
    /// column, `whole`), ordered by key, in UTC.
    async fn sums(&self, store: &PgStore, id: &TenantId, whole: bool) -> Sums {
        let (own, schema, filter) = match store {
            PgStore::Database(name) => {
                let db =
                    Database::connect(with_database(&postgres_admin_url(), name)).await.expect("connect tenant db");
                (Some(db), "public".to_owned(), false)
            }
            PgStore::Schema(schema) => (None, schema.clone(), false),
            PgStore::Shared(_) => (None, "public".to_owned(), true),
        };
        let db = own.as_ref().unwrap_or(&self.superuser);
        let txn = db.begin().await.expect("begin");
        txn.execute_unprepared("SET LOCAL TimeZone = 'UTC'").await.expect("utc");
        let mut sums = Sums { tables: BTreeMap::new(), foreign: 0 };
        let row = if whole { "to_jsonb(t)::text" } else { "(to_jsonb(t) - 'tenant_id')::text" };
        for table in TABLES {
            let sql = format!(
                "SELECT count(*), md5(COALESCE(string_agg({row}, E'\\n' ORDER BY t.id), '')), \
                        count(*) FILTER (WHERE t.tenant_id IS DISTINCT FROM $1) \
                 FROM \"{schema}\".{table} t {}",
                if filter { "WHERE t.tenant_id = $1" } else { "" }
            );
            let found = txn
                .query_one_raw(Statement::from_sql_and_values(DbBackend::Postgres, &sql, [id.as_str().into()]))
                .await
                .unwrap_or_else(|err| panic!("{sql}: {err}"))
                .expect("a row");
            let rows: i64 = found.try_get_by_index(0).unwrap();
            sums.tables.insert(table.to_owned(), (u64::try_from(rows).unwrap(), found.try_get_by_index(1).unwrap()));
            sums.foreign += u64::try_from(found.try_get_by_index::<i64>(2).unwrap()).unwrap();
        }
        txn.commit().await.expect("commit");
        if let Some(own) = own {
            own.close().await.expect("close");
        }
        sums
    }

    /// Whether anything of `store` is still there: the database, the schema, or any of the
    /// tenant's rows in the shared tables.
    async fn store_exists(&self, store: &PgStore) -> bool {
        match store {
            PgStore::Database(name) => self.pg.admin_exists("SELECT 1 FROM pg_database WHERE datname = $1", name).await,
            PgStore::Schema(schema) => {
                tenancy_test_support::exists(&self.superuser, "SELECT 1 FROM pg_namespace WHERE nspname = $1", schema)
                    .await
            }
            PgStore::Shared(id) => {
                let mut any = 0;
                for table in TABLES {
                    let sql = format!("SELECT count(*) FROM public.{table} WHERE tenant_id = $1");
                    any += one_of(&self.superuser, &sql, vec![id.as_str().into()]).await;
                }
                any > 0
            }
        }
    }

    async fn role_exists(&self, role: &str) -> bool {
        self.pg.admin_exists("SELECT 1 FROM pg_roles WHERE rolname = $1", role).await
    }

    /// Largest key of the tenant's projects at `store`.
    async fn max_project(&self, store: &PgStore, id: &TenantId) -> i64 {
        let sums_sql = |schema: &str, filter: bool| {
            format!(
                "SELECT COALESCE(max(id), 0)::bigint FROM \"{schema}\".projects WHERE {}",
                if filter { "tenant_id = $1" } else { "$1::text IS NOT NULL" }
            )
        };
        match store {
            PgStore::Database(name) => {
                let db = Database::connect(with_database(&postgres_admin_url(), name)).await.expect("connect");
                let max = one_of(&db, &sums_sql("public", false), vec![id.as_str().into()]).await;
                db.close().await.expect("close");
                max
            }
            PgStore::Schema(schema) => {
                one_of(&self.superuser, &sums_sql(schema, false), vec![id.as_str().into()]).await
            }
            PgStore::Shared(_) => one_of(&self.superuser, &sums_sql("public", true), vec![id.as_str().into()]).await,
        }
    }

    /// A connection of its own (one session) logged in as `tenant`'s login role with its
    /// decrypted password, to the master.
    async fn login_as(&self, tenant: &Tenant) -> (DatabaseConnection, String) {
        let login = tenant.placement().login().cloned().expect("a login role");
        let secret = self.tenancy.secret_key().expect("secret key");
        let password = secret.0.decrypt(&login.password, tenant.id().as_str()).expect("decrypt");
        let encoded: String = password
            .expose()
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        let url = format!("postgres://{}:{encoded}@127.0.0.1:5432/{}", login.user, self.pg.name);
        let db = Database::connect(ConnectOptions::new(url).max_connections(1).min_connections(1).to_owned())
            .await
            .expect("the login role logs in");
        (db, login.user)
    }
}

async fn query_err(db: &DatabaseConnection, sql: &str) -> Option<String> {
    db.query_all_raw(Statement::from_string(DbBackend::Postgres, sql)).await.err().map(|err| err.to_string())
}

/// Moves a seeded tenant from `from` to `to` with a bystander in `to` (and a neighbour in
/// the shared tables when it leaves them) and checks rows, registry, sequences and the
/// source's fate.
async fn pg_pair(from: Mode, to: Mode, drop_source: bool) {
    let Some(ctx) = pg().await else { return };
    // Shared-table bystanders take keys far from the moved tenant's, which start at 1.
    let bystander = ctx.tenant("bystander", to, SMALL, (to == Mode::Table).then_some(100_000)).await;
    let neighbour = match from {
        Mode::Table => Some(ctx.tenant("neighbour", Mode::Table, SMALL, Some(200_000)).await),
        _ => None,
    };
    let id = ctx.tenant("mover", from, BIG, None).await;
    let source = ctx.store(&id).await;
    let before = ctx.sums(&source, &id, false).await;
    assert_eq!(before.rows(), BIG.rows(), "{before:?}");
    assert_eq!(before.foreign, 0);
    let max_before = ctx.max_project(&source, &id).await;
    let others_before = others(&ctx, &bystander, neighbour.as_ref()).await;
    let was = ctx.tenancy.get_tenant(&id).await.unwrap();
    let login_before = was.placement().login().cloned().map(|l| l.user);
    let source_role = match was.placement() {
        Placement::Database(TenantDatabase::Postgres(db)) => Some(db.user.clone()),
        _ => None,
    };

    // Once, the shared sequence is ahead of the copied keys: the move must not set it back.
    let sequence_ahead = (to == Mode::Table && drop_source).then_some(5_000);
    if let Some(ahead) = sequence_ahead {
        let sql = format!("SELECT setval(pg_get_serial_sequence('public.projects', 'id'), {ahead})::bigint");
        assert_eq!(one_of(&ctx.superuser, &sql, vec![]).await, ahead);
    }

    let (target, new_db) = ctx.move_to(to);
    let plan = ctx.tenancy.move_plan(&id, &target).await.expect("plan");
    let planned: BTreeMap<&str, u64> = plan.tables.iter().map(|t| (t.table.as_str(), t.rows)).collect();
    let expected: BTreeMap<&str, u64> = TABLES.iter().copied().zip(BIG.rows()).collect();
    assert_eq!(planned, expected, "{plan:?}");

    let moved = ctx
        .tenancy
        .move_tenant(&id, &MoveOptions::new(target).drop_source(drop_source), &hooks())
        .await
        .unwrap_or_else(|err| panic!("move {from:?} -> {to:?}: {err} ({err:?})"));
    assert_eq!((moved.from, moved.to), (from.isolation(), to.isolation()));
    assert_eq!(moved.tables.len(), TABLES.len(), "{:?}", moved.tables);
    assert_eq!(moved.source_dropped, drop_source);

    // The registry: the new mode and place, served.
    let now = ctx.tenancy.get_tenant(&id).await.unwrap();
    assert_eq!(now.isolation(), to.isolation());
    assert_eq!(now.status(), TenantStatus::Ready);
    match (to, now.placement()) {
        (Mode::Database, Placement::Database(TenantDatabase::Postgres(db))) => {
            assert_eq!(Some(&db.name), new_db.as_ref());
        }
        (Mode::Schema, Placement::Schema { schema, .. }) => assert_eq!(schema, id.as_str()),
        (Mode::Table, Placement::Table { .. }) => {}
        (_, other) => panic!("placement after the move: {other:?}"),
    }
    // Schema and table tenants keep their login role between those two modes.
    if matches!((from, to), (Mode::Schema, Mode::Table) | (Mode::Table, Mode::Schema)) {
        assert_eq!(now.placement().login().map(|l| l.user.clone()), login_before);
    }

    // Every row identical at the new place, its tenant column the tenant's id.
    let target_store = PgStore::of(&now);
    let after = ctx.sums(&target_store, &id, false).await;
    assert_eq!(after, before, "{from:?} -> {to:?}: the copy differs");
    assert_eq!(others(&ctx, &bystander, neighbour.as_ref()).await, others_before, "another tenant's rows changed");

    // The hostile checks of the login role a schema or table tenant keeps.
    match (from, to) {
        (Mode::Schema, Mode::Table) => schema_to_table_login_is_a_table_login(&ctx, &now, &bystander, &before).await,
        (Mode::Table, Mode::Schema) => table_to_schema_login_is_a_schema_login(&ctx, &now, &bystander).await,
        _ => {}
    }

    // The sequences continue past the copied keys, for the tenant and its neighbours.
    let handle = ctx.tenancy.tenant(&id).await.expect("served after the move");
    let new_key = add_after_move(&handle).await;
    assert!(i64::from(new_key) > max_before, "new key {new_key} after copied {max_before}");
    if let Some(ahead) = sequence_ahead {
        assert!(i64::from(new_key) > ahead, "the shared sequence went back: new key {new_key}");
    }
    assert_eq!(ctx.sums(&target_store, &id, false).await.rows(), BIG.rows().map(|n| n + 1));
    if to == Mode::Table {
        add_after_move(&ctx.tenancy.tenant(&bystander).await.unwrap()).await;
    }

    // The source: kept as leftovers until removed, or dropped at once.
    let left = ctx.tenancy.leftovers(Some(&id)).await.expect("leftovers");
    if drop_source {
        assert!(left.is_empty(), "{left:?}");
        assert!(!ctx.store_exists(&source).await, "the source {source:?} is still there");
    } else {
        assert!(!left.is_empty());
        assert!(ctx.store_exists(&source).await, "the kept source {source:?} is gone");
        assert_eq!(ctx.sums(&source, &id, false).await, before, "the kept source changed");
        let removed = ctx.tenancy.remove_leftovers(&id).await.expect("remove leftovers");
        assert_eq!(removed.len(), left.len());
        assert!(ctx.tenancy.leftovers(Some(&id)).await.unwrap().is_empty());
        assert!(!ctx.store_exists(&source).await, "the source {source:?} outlived remove_leftovers");
    }
    // What is gone with the source: a database tenant's role; a login role that the new
    // mode does not use.
    if let Some(login) = &login_before {
        let kept = matches!(to, Mode::Schema | Mode::Table);
        assert_eq!(ctx.role_exists(login).await, kept, "login role {login}");
    }
    if let Some(role) = &source_role {
        assert!(!ctx.role_exists(role).await, "the source database's role {role} outlived its database");
    }
    // The tenant keeps working from its new place, its data whole.
    assert_eq!(ctx.sums(&target_store, &id, false).await.rows(), BIG.rows().map(|n| n + 1));
    assert!(ctx.tenancy.unfinished_operations().await.unwrap().is_empty());
}

/// The bystander's (and neighbour's) rows, whole.
async fn others(ctx: &Pg, bystander: &TenantId, neighbour: Option<&TenantId>) -> Vec<Sums> {
    let mut sums = vec![ctx.sums(&ctx.store(bystander).await, bystander, true).await];
    if let Some(neighbour) = neighbour {
        sums.push(ctx.sums(&ctx.store(neighbour).await, neighbour, true).await);
    }
    sums
}

/// After schema → table: the kept login role sees its own rows only in the shared tables
/// and cannot reach its former schema.
async fn schema_to_table_login_is_a_table_login(ctx: &Pg, tenant: &Tenant, bystander: &TenantId, before: &Sums) {
    let (db, user) = ctx.login_as(tenant).await;
    let whoami = db.query_one_raw(Statement::from_string(DbBackend::Postgres, "SELECT current_user::text")).await;
    assert_eq!(whoami.unwrap().unwrap().try_get_by_index::<String>(0).unwrap(), user);
    for table in TABLES {
        let seen = one_of(&db, &format!("SELECT count(*) FROM public.{table}"), vec![]).await;
        assert_eq!(u64::try_from(seen).unwrap(), before.tables[table].0, "{table} as the login role");
        let others = format!("SELECT count(*) FROM public.{table} WHERE tenant_id <> $1");
        assert_eq!(one_of(&db, &others, vec![tenant.id().as_str().into()]).await, 0);
        let bystanders = format!("SELECT count(*) FROM public.{table} WHERE tenant_id = $1");
        assert_eq!(one_of(&db, &bystanders, vec![bystander.as_str().into()]).await, 0);
    }
    // Its former schema (still there as a leftover) is closed to it, by name or path.
    let schema = tenant.id().as_str();
    let err = query_err(&db, &format!("SELECT count(*) FROM \"{schema}\".projects")).await;
    assert!(err.as_deref().is_some_and(|e| e.contains("permission denied")), "{err:?}");
    let _ = db.execute_unprepared(&format!("SET search_path = \"{schema}\"")).await;
    let err = query_err(&db, &format!("SELECT count(*) FROM \"{schema}\".tasks")).await;
    assert!(err.as_deref().is_some_and(|e| e.contains("permission denied")), "{err:?}");
    db.close().await.unwrap();
}

/// After table → schema: the kept login role reaches its schema only, no shared table,
/// and cannot become the application role again.
async fn table_to_schema_login_is_a_schema_login(ctx: &Pg, tenant: &Tenant, bystander: &TenantId) {
    let (db, _) = ctx.login_as(tenant).await;
    let own = one_of(&db, "SELECT count(*) FROM projects", vec![]).await;
    assert_eq!(own, i64::from(BIG.projects), "its schema on the search path");
    for table in TABLES {
        match db
            .query_one_raw(Statement::from_string(DbBackend::Postgres, format!("SELECT count(*) FROM public.{table}")))
            .await
        {
            Err(err) => assert!(err.to_string().contains("permission denied"), "{err}"),
            Ok(row) => panic!("the schema tenant's role reads public.{table}: {row:?} (bystander {bystander})"),
        }
    }
    let app = ctx.tenancy.app_role().await.unwrap().to_owned();
    let err = db.execute_unprepared(&format!("SET ROLE \"{app}\"")).await.unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    db.close().await.unwrap();
}

#[tokio::test]
async fn postgres_database_to_schema() {
    pg_pair(Mode::Database, Mode::Schema, false).await;
}

#[tokio::test]
async fn postgres_database_to_table() {
    pg_pair(Mode::Database, Mode::Table, false).await;
}

#[tokio::test]
async fn postgres_schema_to_database() {
    pg_pair(Mode::Schema, Mode::Database, false).await;
}

#[tokio::test]
async fn postgres_schema_to_table() {
    pg_pair(Mode::Schema, Mode::Table, false).await;
}

#[tokio::test]
async fn postgres_table_to_database() {
    pg_pair(Mode::Table, Mode::Database, false).await;
}

#[tokio::test]
async fn postgres_table_to_schema() {
    pg_pair(Mode::Table, Mode::Schema, false).await;
}

#[tokio::test]
async fn postgres_schema_to_database_dropping_the_source() {
    pg_pair(Mode::Schema, Mode::Database, true).await;
}

#[tokio::test]
async fn postgres_table_to_schema_dropping_the_source() {
    pg_pair(Mode::Table, Mode::Schema, true).await;
}

#[tokio::test]
async fn postgres_database_to_table_dropping_the_source() {
    pg_pair(Mode::Database, Mode::Table, true).await;
}

#[tokio::test]
async fn postgres_schema_to_table_and_back_keeps_the_login_role_and_the_rows() {
    let Some(ctx) = pg().await else { return };
    let bystander = ctx.tenant("bystander", Mode::Schema, SMALL, None).await;
    let id = ctx.tenant("mover", Mode::Schema, BIG, None).await;
    let was = ctx.tenancy.get_tenant(&id).await.unwrap();
    let before = ctx.sums(&PgStore::of(&was), &id, false).await;
    let others = ctx.sums(&ctx.store(&bystander).await, &bystander, true).await;
    ctx.tenancy.move_tenant(&id, &MoveOptions::new(MoveTo::Table), &hooks()).await.expect("schema -> table");

    // Back while the old schema is kept: refused, nothing changed.
    let err = ctx.tenancy.move_tenant(&id, &MoveOptions::new(MoveTo::Schema), &hooks()).await.unwrap_err();
    assert!(matches!(err, Error::LeftoversRemain { .. }), "{err:?}");
    let now = ctx.tenancy.get_tenant(&id).await.unwrap();
    assert_eq!((now.isolation(), now.status()), (Isolation::Table, TenantStatus::Ready));
    assert!(ctx.tenancy.unfinished_operations().await.unwrap().is_empty());

    ctx.tenancy.remove_leftovers(&id).await.expect("remove the old schema");
    assert!(!ctx.store_exists(&PgStore::Schema(id.to_string())).await);
    ctx.tenancy.move_tenant(&id, &MoveOptions::new(MoveTo::Schema), &hooks()).await.expect("table -> schema");
    let back = ctx.tenancy.get_tenant(&id).await.unwrap();
    assert_eq!(back.placement().login().map(|l| &l.user), was.placement().login().map(|l| &l.user));
    assert_eq!(ctx.sums(&PgStore::of(&back), &id, false).await, before);
    assert_eq!(ctx.sums(&ctx.store(&bystander).await, &bystander, true).await, others);
    table_to_schema_login_is_a_schema_login(&ctx, &back, &bystander).await;
    add_after_move(&ctx.tenancy.tenant(&id).await.unwrap()).await;
    ctx.tenancy.remove_leftovers(&id).await.expect("remove the shared rows");
    assert!(!ctx.store_exists(&PgStore::Shared(id.to_string())).await);
}

/// Everything a refused move must leave as it was: the tenant served from its source,
/// ready, its rows there; no copy, no leftover, no open operation; the bystander intact.
async fn pg_unchanged(ctx: &Pg, id: &TenantId, was: &Tenant, before: &Sums, bystander: &TenantId, others: &Sums) {
    let now = ctx.tenancy.get_tenant(id).await.unwrap();
    assert_eq!(now.status(), TenantStatus::Ready);
    assert_eq!(now.placement(), was.placement());
    assert_eq!(ctx.sums(&PgStore::of(&now), id, false).await, *before);
    let handle = ctx.tenancy.tenant(id).await.expect("still served");
    assert_eq!(common::project_names(&handle).await.len(), usize::try_from(BIG.projects).unwrap());
    assert!(ctx.tenancy.leftovers(Some(id)).await.unwrap().is_empty());
    assert!(ctx.tenancy.unfinished_operations().await.unwrap().is_empty());
    assert_eq!(ctx.sums(&ctx.store(bystander).await, bystander, true).await, *others);
}

#[tokio::test]
async fn postgres_move_into_shared_tables_refuses_a_taken_key_and_changes_nothing() {
    let Some(ctx) = pg().await else { return };
    // Both take keys from 1: the bystander's project 1 is in the shared tables first.
    let bystander = ctx.tenant("bystander", Mode::Table, SMALL, None).await;
    let id = ctx.tenant("mover", Mode::Schema, BIG, None).await;
    let was = ctx.tenancy.get_tenant(&id).await.unwrap();
    let before = ctx.sums(&PgStore::of(&was), &id, false).await;
    let others = ctx.sums(&ctx.store(&bystander).await, &bystander, true).await;

    let err = ctx.tenancy.move_tenant(&id, &MoveOptions::new(MoveTo::Table), &hooks()).await.unwrap_err();
    match &err {
        Error::KeyCollision { tenant, table, key } => {
            assert_eq!(tenant, id.as_str());
            assert!(TABLES.contains(&table.as_str()), "{err}");
            // The key named is one the bystander holds, and the tenant has at its source.
            let key: i32 = key.strip_prefix("id=").and_then(|k| k.parse().ok()).unwrap_or_else(|| panic!("{err}"));
            let held = format!("SELECT count(*) FROM public.{table} WHERE id = $1 AND tenant_id = $2");
            assert_eq!(one_of(&ctx.superuser, &held, vec![key.into(), bystander.as_str().into()]).await, 1, "{err}");
            let own = format!("SELECT count(*) FROM \"{id}\".{table} WHERE id = $1");
            assert_eq!(one_of(&ctx.superuser, &own, vec![key.into()]).await, 1, "{err}");
        }
        other => panic!("expected a key collision, got {other} ({other:?})"),
    }
    pg_unchanged(&ctx, &id, &was, &before, &bystander, &others).await;
    assert!(!ctx.store_exists(&PgStore::Shared(id.to_string())).await, "rows of the refused copy remain");
    let login = was.placement().login().unwrap().user.clone();
    assert!(ctx.role_exists(&login).await, "the refused move dropped the login role");
}

#[tokio::test]
async fn postgres_a_copy_refused_after_provisioning_leaves_no_database_behind() {
    // A database target is removed again when the copy fails: here the source holds a
    // table the migrator does not make, so the copy refuses after provisioning.
    let Some(ctx) = pg().await else { return };
    let bystander = ctx.tenant("bystander", Mode::Database, SMALL, None).await;
    let id = ctx.tenant("mover", Mode::Schema, BIG, None).await;
    let was = ctx.tenancy.get_tenant(&id).await.unwrap();
    ctx.superuser
        .execute_unprepared(&format!(
            "CREATE TABLE \"{id}\".extra (id serial PRIMARY KEY); INSERT INTO \"{id}\".extra DEFAULT VALUES"
        ))
        .await
        .unwrap();
    let before = ctx.sums(&PgStore::of(&was), &id, false).await;
    let others = ctx.sums(&ctx.store(&bystander).await, &bystander, true).await;
    let (target, new_db) = ctx.move_to(Mode::Database);
    let err = ctx.tenancy.move_tenant(&id, &MoveOptions::new(target), &hooks()).await.unwrap_err();
    assert!(err.to_string().contains("extra"), "{err}");
    pg_unchanged(&ctx, &id, &was, &before, &bystander, &others).await;
    assert!(!ctx.store_exists(&PgStore::Database(new_db.unwrap())).await, "the partial copy's database remains");
}

#[tokio::test]
async fn postgres_a_tenant_behind_the_migrator_is_refused_with_nothing_changed() {
    let Some(ctx) = pg().await else { return };
    let bystander = ctx.tenant("bystander", Mode::Table, SMALL, Some(100_000)).await;
    let id = ctx.tenant("mover", Mode::Schema, BIG, None).await;
    let was = ctx.tenancy.get_tenant(&id).await.unwrap();
    ctx.superuser
        .execute_unprepared(&format!(
            "DELETE FROM \"{id}\".seaql_migrations WHERE version = (SELECT max(version) FROM \"{id}\".seaql_migrations)"
        ))
        .await
        .unwrap();
    let before = ctx.sums(&PgStore::of(&was), &id, false).await;
    let others = ctx.sums(&ctx.store(&bystander).await, &bystander, true).await;
    let err = ctx.tenancy.move_tenant(&id, &MoveOptions::new(MoveTo::Table), &hooks()).await.unwrap_err();
    assert!(matches!(err, Error::MoveFailed { .. }), "{err:?}");
    let source = std::error::Error::source(&err).map(ToString::to_string).unwrap_or_default();
    assert!(source.contains("m20260101_100001_tenancy_create_tenant_users"), "{err}: {source}");
    pg_unchanged(&ctx, &id, &was, &before, &bystander, &others).await;
    assert!(!ctx.store_exists(&PgStore::Shared(id.to_string())).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_tenant_being_moved_is_not_served() {
    let Some(ctx) = pg().await else { return };
    let id = ctx.tenant("mover", Mode::Database, BIG, None).await;
    let other = ctx.pg.builder(&ctx.dir).live_registry(false).connect().await.expect("a second process");
    assert!(other.tenant(&id).await.is_ok());

    let (reached_tx, reached_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = std::sync::Mutex::new(go_rx);
    let options = MoveOptions::new(MoveTo::Schema).on_event(Arc::new(move |event| {
        if let MoveEvent::Step(MoveStep::Copy) = event {
            let _ = reached_tx.send(());
            // Waits without stalling the runtime (see `operations.rs`).
            tokio::task::block_in_place(|| {
                let _ = go_rx.lock().map(|rx| rx.recv_timeout(Duration::from_secs(60)));
            });
        }
    }));
    let mover = ctx.tenancy.clone();
    let moving_id = id.clone();
    let task = tokio::spawn(async move { mover.move_tenant(&moving_id, &options, &hooks()).await });
    tokio::task::spawn_blocking(move || reached_rx.recv_timeout(Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("the move reached its copy");

    assert_eq!(other.get_tenant(&id).await.unwrap().status(), TenantStatus::Moving);
    for tenancy in [&other, &ctx.tenancy] {
        match tenancy.tenant(&id).await {
            Err(Error::TenantMoving { tenant }) => assert_eq!(tenant, id.as_str()),
            Err(err) => panic!("expected TenantMoving, got {err} ({err:?})"),
            Ok(_) => panic!("a tenant being moved was served"),
        }
    }
    go_tx.send(()).unwrap();
    let moved = task.await.unwrap().expect("the move finishes");
    assert_eq!(moved.to, Isolation::Schema);
    let handle = other.tenant(&id).await.expect("served again");
    assert_eq!(common::project_names(&handle).await.len(), usize::try_from(BIG.projects).unwrap());
    ctx.tenancy.remove_leftovers(&id).await.unwrap();
}

/// While its rows are copied, a schema tenant's login role cannot log in (a client
/// outside tenancy holding its password included) and the session it had is ended: its
/// next statement fails. After the move (to the shared tables, keeping the role) it logs
/// in again and sees its rows; a move rolled back lets it in again too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_frozen_tenants_login_role_cannot_log_in() {
    let Some(ctx) = pg().await else { return };
    let id = ctx.tenant("frozen", Mode::Schema, SMALL, Some(900_000)).await;
    let tenant = ctx.tenancy.get_tenant(&id).await.unwrap();
    let (before_freeze, user) = ctx.login_as(&tenant).await;
    assert!(query_err(&before_freeze, "SELECT 1").await.is_none());

    let (reached_tx, reached_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = std::sync::Mutex::new(go_rx);
    let options = MoveOptions::new(MoveTo::Table).on_event(Arc::new(move |event| {
        if let MoveEvent::Step(MoveStep::Copy) = event {
            let _ = reached_tx.send(());
            tokio::task::block_in_place(|| {
                let _ = go_rx.lock().map(|rx| rx.recv_timeout(Duration::from_secs(60)));
            });
        }
    }));
    let mover = ctx.tenancy.clone();
    let moving_id = id.clone();
    let task = tokio::spawn(async move { mover.move_tenant(&moving_id, &options, &hooks()).await });
    tokio::task::spawn_blocking(move || reached_rx.recv_timeout(Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("the move reached its copy");

    // The session it had is gone: the next statement on it fails.
    let err = query_err(&before_freeze, "SELECT count(*) FROM projects").await;
    assert!(err.is_some(), "a session of the frozen tenant's role still runs statements");
    // And it cannot log in again.
    let url = format!("postgres://{user}@127.0.0.1:5432/{}", ctx.pg.name);
    let refused = Database::connect(ConnectOptions::new(url).max_connections(1).to_owned()).await;
    let message = refused.err().map(|err| err.to_string()).unwrap_or_default();
    assert!(message.contains("not permitted to log in") || message.contains("password"), "{message}");
    let can_login = one_of(
        &ctx.pg.admin,
        "SELECT count(*) FROM pg_roles WHERE rolname = $1 AND rolcanlogin",
        vec![user.as_str().into()],
    )
    .await;
    assert_eq!(can_login, 0, "the role may not log in while frozen");

    go_tx.send(()).unwrap();
    let moved = task.await.unwrap().expect("the move finishes");
    assert_eq!(moved.to, Isolation::Table);
    let (after, _) = ctx.login_as(&moved.tenant).await;
    let rows = one_of(&after, "SELECT count(*) FROM projects", vec![]).await;
    assert_eq!(rows, i64::from(SMALL.projects), "the role logs in again and sees its rows");
    let _ = after.close().await;
    ctx.tenancy.remove_leftovers(&id).await.unwrap();
}

// ---------------------------------------------------------------------------------------
// SQLite
// ---------------------------------------------------------------------------------------

struct Lite {
    tenancy: Tenancy,
    dir: TempDir,
}

async fn lite() -> Lite {
    let dir = TempDir::new();
    let tenancy = dir.sqlite_builder().connect().await.expect("connect the SQLite master");
    Lite { tenancy, dir }
}

impl Lite {
    async fn tenant(&self, prefix: &str, mode: Mode, data: Seed, ids_from: Option<i32>) -> TenantId {
        let id: TenantId = unique_name(prefix).parse().expect("a valid id");
        let mut new =
            NewTenant::new(id.clone(), format!("{prefix} Ltd."), mode.isolation()).expect("new").migrate(true);
        if mode == Mode::Database {
            new = new.database(NewDatabase::create(unique_name("db")));
        }
        self.tenancy.create_tenant(new, &hooks()).await.expect("create tenant");
        let handle = self.tenancy.tenant(&id).await.expect("handle");
        seed(&handle, data, ids_from).await;
        id
    }

    /// The file holding `tenant`'s rows, and whether they share it with other tenants.
    fn file(&self, tenant: &Tenant) -> (std::path::PathBuf, bool) {
        match tenant.placement() {
            Placement::Database(TenantDatabase::Sqlite(db)) => (db.file_in(self.dir.path()), false),
            Placement::Table { .. } => (self.dir.path().join("master.db"), true),
            other => panic!("not a SQLite placement: {other:?}"),
        }
    }

    /// The tenant's rows in `file`: each row's values as SQL literals (`quote`), in key
    /// order, hashed per table; the tenant column left out unless `whole`.
    async fn sums(&self, (file, shared): &(std::path::PathBuf, bool), id: &TenantId, whole: bool) -> Sums {
        let db = Database::connect(format!("sqlite://{}?mode=ro", file.display())).await.expect("open file");
        let mut sums = Sums { tables: BTreeMap::new(), foreign: 0 };
        for table in TABLES {
            let columns = tenancy_test_support::column_strings(
                &db,
                &format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid"),
                vec![],
            )
            .await;
            let shown: Vec<String> =
                columns.iter().filter(|c| whole || *c != "tenant_id").map(|c| format!("quote(\"{c}\")")).collect();
            let sql = format!(
                "SELECT {}, tenant_id = ? FROM {table} {} ORDER BY id",
                shown.join(" || '|' || "),
                if *shared { "WHERE tenant_id = ?" } else { "" }
            );
            let values: Vec<sea_orm::Value> =
                if *shared { vec![id.as_str().into(), id.as_str().into()] } else { vec![id.as_str().into()] };
            let rows = db
                .query_all_raw(Statement::from_sql_and_values(DbBackend::Sqlite, &sql, values))
                .await
                .unwrap_or_else(|err| panic!("{sql}: {err}"));
            let mut hasher = DefaultHasher::new();
            for row in &rows {
                row.try_get_by_index::<String>(0).unwrap().hash(&mut hasher);
                if !row.try_get_by_index::<bool>(1).unwrap() {
                    sums.foreign += 1;
                }
            }
            sums.tables.insert(table.to_owned(), (rows.len() as u64, format!("{:016x}", hasher.finish())));
        }
        db.close().await.unwrap();
        sums
    }
}

async fn sqlite_pair(from: Mode, to: Mode, drop_source: bool) {
    let ctx = lite().await;
    let bystander = ctx.tenant("bystander", to, SMALL, (to == Mode::Table).then_some(100_000)).await;
    let neighbour = match from {
        Mode::Table => Some(ctx.tenant("neighbour", Mode::Table, SMALL, Some(200_000)).await),
        _ => None,
    };
    let id = ctx.tenant("mover", from, BIG, None).await;
    let was = ctx.tenancy.get_tenant(&id).await.unwrap();
    let source = ctx.file(&was);
    let before = ctx.sums(&source, &id, false).await;
    assert_eq!(before.rows(), BIG.rows());
    assert_eq!(before.foreign, 0);
    let others = async |ctx: &Lite| {
        let mut sums = Vec::new();
        for other in std::iter::once(&bystander).chain(neighbour.as_ref()) {
            let tenant = ctx.tenancy.get_tenant(other).await.unwrap();
            sums.push(ctx.sums(&ctx.file(&tenant), other, true).await);
        }
        sums
    };
    let others_before = others(&ctx).await;

    let new_db = unique_name("db");
    let target = match to {
        Mode::Database => MoveTo::Database(NewDatabase::create(new_db.clone())),
        Mode::Table => MoveTo::Table,
        Mode::Schema => unreachable!("no schemas on SQLite"),
    };
    let moved = ctx
        .tenancy
        .move_tenant(&id, &MoveOptions::new(target).drop_source(drop_source), &hooks())
        .await
        .unwrap_or_else(|err| panic!("move {from:?} -> {to:?}: {err} ({err:?})"));
    assert_eq!(moved.tables.len(), TABLES.len(), "{:?}", moved.tables);

    let now = ctx.tenancy.get_tenant(&id).await.unwrap();
    assert_eq!((now.isolation(), now.status()), (to.isolation(), TenantStatus::Ready));
    if let Placement::Database(TenantDatabase::Sqlite(db)) = now.placement() {
        assert_eq!(db.name, new_db);
    }
    let target_file = ctx.file(&now);
    assert_eq!(ctx.sums(&target_file, &id, false).await, before, "{from:?} -> {to:?}: the copy differs");
    assert_eq!(others(&ctx).await, others_before, "another tenant's rows changed");

    let handle = ctx.tenancy.tenant(&id).await.expect("served after the move");
    let key = add_after_move(&handle).await;
    assert!(key > BIG.projects, "new key {key}");
    if to == Mode::Table {
        add_after_move(&ctx.tenancy.tenant(&bystander).await.unwrap()).await;
    }

    let left = ctx.tenancy.leftovers(Some(&id)).await.unwrap();
    if drop_source {
        assert!(left.is_empty(), "{left:?}");
        assert!(!source_there(&ctx, &source, &id).await, "the source is still there");
    } else {
        assert!(!left.is_empty());
        assert!(source_there(&ctx, &source, &id).await, "the kept source is gone");
        assert_eq!(ctx.sums(&source, &id, false).await, before, "the kept source changed");
        ctx.tenancy.remove_leftovers(&id).await.expect("remove leftovers");
        assert!(ctx.tenancy.leftovers(Some(&id)).await.unwrap().is_empty());
        assert!(!source_there(&ctx, &source, &id).await, "the source outlived remove_leftovers");
    }
    assert_eq!(ctx.sums(&target_file, &id, false).await.rows(), BIG.rows().map(|n| n + 1));
    assert!(ctx.tenancy.unfinished_operations().await.unwrap().is_empty());
}

/// Whether anything of `source` is still there: the file, or the tenant's shared rows.
async fn source_there(ctx: &Lite, source: &(std::path::PathBuf, bool), id: &TenantId) -> bool {
    match source.1 {
        true => ctx.sums(source, id, false).await.rows().iter().sum::<u64>() > 0,
        false => source.0.exists(),
    }
}

#[tokio::test]
async fn sqlite_database_to_table() {
    sqlite_pair(Mode::Database, Mode::Table, false).await;
}

#[tokio::test]
async fn sqlite_table_to_database() {
    sqlite_pair(Mode::Table, Mode::Database, false).await;
}

#[tokio::test]
async fn sqlite_table_to_database_dropping_the_source() {
    sqlite_pair(Mode::Table, Mode::Database, true).await;
}

#[tokio::test]
async fn sqlite_move_into_shared_tables_refuses_a_taken_key_and_changes_nothing() {
    let ctx = lite().await;
    let bystander = ctx.tenant("bystander", Mode::Table, SMALL, None).await;
    let id = ctx.tenant("mover", Mode::Database, BIG, None).await;
    let was = ctx.tenancy.get_tenant(&id).await.unwrap();
    let before = ctx.sums(&ctx.file(&was), &id, false).await;
    let by = ctx.tenancy.get_tenant(&bystander).await.unwrap();
    let others = ctx.sums(&ctx.file(&by), &bystander, true).await;
    let err = ctx.tenancy.move_tenant(&id, &MoveOptions::new(MoveTo::Table), &hooks()).await.unwrap_err();
    match &err {
        Error::KeyCollision { tenant, table, key } => {
            assert_eq!(tenant, id.as_str());
            assert!(TABLES.contains(&table.as_str()), "{err}");
            let key: i32 = key.strip_prefix("id=").and_then(|k| k.parse().ok()).unwrap_or_else(|| panic!("{err}"));
            let master = ctx.dir.path().join("master.db");
            let master = Database::connect(format!("sqlite://{}?mode=ro", master.display())).await.unwrap();
            let held = format!("SELECT count(*) FROM {table} WHERE id = ? AND tenant_id = ?");
            assert_eq!(one_of(&master, &held, vec![key.into(), bystander.as_str().into()]).await, 1, "{err}");
            master.close().await.unwrap();
        }
        other => panic!("expected a key collision, got {other} ({other:?})"),
    }
    let now = ctx.tenancy.get_tenant(&id).await.unwrap();
    assert_eq!((now.placement(), now.status()), (was.placement(), TenantStatus::Ready));
    assert_eq!(ctx.sums(&ctx.file(&now), &id, false).await, before);
    assert_eq!(ctx.sums(&ctx.file(&by), &bystander, true).await, others);
    let shared = ctx.sums(&(ctx.dir.path().join("master.db"), true), &id, false).await;
    assert_eq!(shared.rows(), [0, 0, 0, 0], "rows of the refused copy remain");
    assert!(ctx.tenancy.leftovers(Some(&id)).await.unwrap().is_empty());
    assert!(ctx.tenancy.unfinished_operations().await.unwrap().is_empty());
    let handle = ctx.tenancy.tenant(&id).await.expect("still served");
    assert_eq!(common::project_names(&handle).await.len(), usize::try_from(BIG.projects).unwrap());
}
