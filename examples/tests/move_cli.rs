//! `movetenant` as processes: stopped dead after every step of a move (the fault hook, as
//! `SIGKILL` would) and by real `SIGKILL`s at moments nobody chose, then run once more;
//! afterwards the tenant is served from exactly one place with exactly its rows (read
//! with the test's own SQL, never through the library), every other tenant's rows are as
//! they were, and the catalogs hold the target and the kept source and nothing else.
//! Also the command's own behaviour (`--dry-run`, confirmation, refusals).

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};

use example_app::entities::{comment, project, task};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use tenancy::operations::UndoEntry;
use tenancy_test_support::{postgres_admin_url, unique_name, with_database};

use crate::commands::text;
use crate::lifecycle::{Setup, World, expect_ok, killed};

/// The example app's tenant tables.
const TABLES: [&str; 4] = ["projects", "tasks", "comments", "tenant_users"];

/// The first key of the next seeded tenant: every tenant's keys differ, so any of them
/// can move into the shared tables.
static NEXT_KEY: AtomicI32 = AtomicI32::new(1000);

/// Where a mode keeps a tenant's rows.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Place {
    /// A schema of the master named after the tenant.
    Schema,
    /// The master's shared tables.
    Table,
    /// A PostgreSQL database of its own and its user.
    PgDatabase { db: String, user: String },
    /// A SQLite file beside the master.
    SqliteDatabase(String),
}

/// Where `movetenant --to` sends the tenant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum To {
    Schema,
    Table,
    Database,
}

impl To {
    fn flag(self) -> &'static str {
        match self {
            To::Schema => "schema",
            To::Table => "table",
            To::Database => "database",
        }
    }
}

/// The database a move to database mode creates for `id`.
fn moved_db(id: &str) -> String {
    format!("{id}_mv")
}

fn moved_user(id: &str) -> String {
    format!("{id}_mu")
}

pub(crate) fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn is_postgres(world: &World) -> bool {
    world.pg.is_some()
}

/// Where `id` lives when created in the world's setup.
fn source_place(world: &World, id: &str) -> Place {
    match world.setup {
        Setup::PgSchema => Place::Schema,
        Setup::PgTable | Setup::SqliteTable => Place::Table,
        Setup::PgDatabase => Place::PgDatabase { db: World::db_name(id), user: World::db_user(id) },
        Setup::SqliteDatabase => Place::SqliteDatabase(World::db_name(id)),
        other => panic!("no relational place for {other:?}"),
    }
}

/// Where a move to database mode puts `id` on PostgreSQL.
pub(crate) fn target_place_pg(id: &str) -> Place {
    Place::PgDatabase { db: moved_db(id), user: moved_user(id) }
}

fn target_place(world: &World, id: &str, to: To) -> Place {
    match (to, is_postgres(world)) {
        (To::Schema, _) => Place::Schema,
        (To::Table, _) => Place::Table,
        (To::Database, true) => Place::PgDatabase { db: moved_db(id), user: moved_user(id) },
        (To::Database, false) => Place::SqliteDatabase(moved_db(id)),
    }
}

fn isolation_of(place: &Place) -> &'static str {
    match place {
        Place::Schema => "schema",
        Place::Table => "table",
        Place::PgDatabase { .. } | Place::SqliteDatabase(_) => "database",
    }
}

/// `movetenant <id> --to <to> [database flags] --yes` plus `extra`.
pub(crate) fn move_args(world: &World, id: &str, to: To, extra: &[&str]) -> Vec<String> {
    let mut args = strings(&[id, "--to", to.flag()]);
    if to == To::Database {
        args.extend(strings(&["--db-name", &moved_db(id)]));
        if let Some(pg) = &world.pg {
            pg.track_database(&moved_db(id));
            pg.track_role(&moved_user(id));
            args.extend(strings(&["--db-user", &moved_user(id), "--db-host", "127.0.0.1", "--db-port", "5432"]));
        }
    }
    args.extend(strings(extra));
    args
}

pub(crate) fn movetenant(world: &World, args: &[String], fault: Option<&str>) -> Output {
    world.run(env!("CARGO_BIN_EXE_movetenant"), args, fault)
}

/// A connection to `place` (the master's for schema and table), as the superuser.
async fn open(world: &World, place: &Place) -> Option<DatabaseConnection> {
    match place {
        Place::Schema | Place::Table => None,
        Place::PgDatabase { db, .. } => {
            Some(sea_orm::Database::connect(with_database(&postgres_admin_url(), db)).await.expect("connect"))
        }
        Place::SqliteDatabase(name) => {
            let path = world.dir.path().join(format!("{name}.db"));
            Some(sea_orm::Database::connect(format!("sqlite://{}?mode=ro", path.display())).await.expect("open"))
        }
    }
}

pub(crate) async fn strings_of(db: &DatabaseConnection, sql: &str, values: Vec<sea_orm::Value>) -> Vec<String> {
    let sql = match db.get_database_backend() {
        DbBackend::Sqlite => sql.replace("$1", "?").replace("$2", "?"),
        _ => sql.to_owned(),
    };
    db.query_all_raw(Statement::from_sql_and_values(db.get_database_backend(), sql.clone(), values))
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).expect("text"))
        .collect()
}

/// A tenant's rows at `place`, read with plain SQL: per table, every row as the text of
/// all its columns but the tenant column, sorted; and the tenant column's values found
/// there (a place of its own must hold the tenant's id only).
#[derive(Debug, PartialEq)]
pub(crate) struct Rows {
    pub(crate) tables: BTreeMap<String, Vec<String>>,
    pub(crate) owners: BTreeSet<String>,
}

impl Rows {
    pub(crate) fn count(&self) -> usize {
        self.tables.values().map(Vec::len).sum()
    }
}

pub(crate) async fn rows(world: &World, place: &Place, id: &str) -> Rows {
    let own = open(world, place).await;
    let found = rows_in(own.as_ref().unwrap_or(world.tenancy.master()), place, id).await;
    if let Some(own) = own {
        own.close().await.expect("close");
    }
    found
}

/// [`rows`] read through `db`, which holds `place` (a database on another server too).
pub(crate) async fn rows_in(db: &DatabaseConnection, place: &Place, id: &str) -> Rows {
    let postgres = db.get_database_backend() == DbBackend::Postgres;
    let schema = match place {
        Place::Schema => id,
        _ => "public",
    };
    let (mut tables, mut owners) = (BTreeMap::new(), BTreeSet::new());
    for table in TABLES {
        let columns = match postgres {
            true => {
                let sql = "SELECT column_name::text FROM information_schema.columns \
                           WHERE table_schema = $1 AND table_name = $2 ORDER BY column_name";
                strings_of(db, sql, vec![schema.into(), table.into()]).await
            }
            false => {
                let sql = format!("SELECT name FROM pragma_table_info('{table}') ORDER BY name");
                strings_of(db, &sql, vec![]).await
            }
        };
        if columns.is_empty() {
            continue;
        }
        let text: Vec<String> = columns
            .iter()
            .filter(|c| *c != "tenant_id")
            .map(|c| format!("COALESCE(CAST(\"{c}\" AS TEXT), '~')"))
            .collect();
        let from = match postgres {
            true => format!("\"{schema}\".\"{table}\""),
            false => format!("\"{table}\""),
        };
        let only = match place {
            Place::Table => format!(" WHERE tenant_id = '{id}'"),
            _ => String::new(),
        };
        let mut found = strings_of(db, &format!("SELECT {} FROM {from}{only}", text.join(" || '|' || ")), vec![]).await;
        found.sort();
        tables.insert(table.to_owned(), found);
        owners.extend(strings_of(db, &format!("SELECT DISTINCT tenant_id FROM {from}{only}"), vec![]).await);
    }
    Rows { tables, owners }
}

/// Gives `id` a project, two tasks, a comment on each and a user, through its handle,
/// with keys no other tenant of the process has.
pub(crate) async fn seed(world: &World, id: &str) {
    let base = NEXT_KEY.fetch_add(1000, Ordering::Relaxed);
    let db = world.tenancy.tenant(id).await.expect("the tenant's handle");
    let project = project::ActiveModel {
        id: Set(base + 1),
        tenant_id: Set(id.to_owned()),
        name: Set(format!("{id} project")),
        created_at: Set(chrono::Utc::now()),
    }
    .insert(&db)
    .await
    .expect("insert a project");
    for n in 0..2 {
        let task = task::ActiveModel {
            id: Set(base + 1 + n),
            tenant_id: Set(id.to_owned()),
            project_id: Set(project.id),
            title: Set(format!("task {n} of {id}")),
            done: Set(n == 1),
            created_at: Set(chrono::Utc::now()),
        }
        .insert(&db)
        .await
        .expect("insert a task");
        comment::ActiveModel {
            id: Set(base + 1 + n),
            tenant_id: Set(id.to_owned()),
            task_id: Set(task.id),
            body: Set(format!("comment on {n}")),
            created_at: Set(chrono::Utc::now()),
        }
        .insert(&db)
        .await
        .expect("insert a comment");
    }
    db.execute_unprepared(&format!(
        "INSERT INTO tenant_users (id, tenant_id, username, email, password_hash, is_superuser) \
         VALUES ({}, '{id}', 'admin', 'admin@{id}.test', 'not-a-hash', true)",
        base + 1
    ))
    .await
    .expect("insert a user");
}

/// `(isolation, status)` of the registry row.
pub(crate) async fn registry(world: &World, id: &str) -> Option<(String, String)> {
    let isolation =
        world.scalar("SELECT CAST(isolation_type AS TEXT) FROM tenancy_tenants WHERE tenant_id = $1", vec![id.into()]);
    let isolation = isolation.await?;
    let status = world.scalar("SELECT status FROM tenancy_tenants WHERE tenant_id = $1", vec![id.into()]).await?;
    Some((isolation, status))
}

/// `(kind, step)` of the tenant's unfinished operation.
pub(crate) async fn operation(world: &World, id: &str) -> Option<(String, Option<String>)> {
    let kind = world.scalar("SELECT kind FROM tenancy_operations WHERE tenant_id = $1", vec![id.into()]).await?;
    let sql = "SELECT COALESCE(step, '') FROM tenancy_operations WHERE tenant_id = $1";
    let step = world.scalar(sql, vec![id.into()]).await.filter(|step| !step.is_empty());
    Some((kind, step))
}

/// The tenant's login role (schema and table tenants on PostgreSQL).
async fn login(world: &World, id: &str) -> String {
    let prefix = tenancy::rls::tenant_role_prefix(world.tenancy.master()).await.expect("the login prefix");
    format!("{prefix}{id}")
}

/// Everything in the catalogs (and the folder) whose name holds `id`, and the shared
/// tables that hold rows of it.
pub(crate) async fn storage(world: &World, id: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    if let Some(pg) = &world.pg {
        for (what, sql) in [
            ("database", "SELECT datname::text FROM pg_database WHERE strpos(datname, $1) > 0"),
            ("role", "SELECT rolname::text FROM pg_roles WHERE strpos(rolname, $1) > 0"),
        ] {
            found.extend(strings_of(&pg.admin, sql, vec![id.into()]).await.into_iter().map(|n| format!("{what} {n}")));
        }
        let sql = "SELECT nspname::text FROM pg_namespace WHERE strpos(nspname, $1) > 0";
        let schemas = strings_of(world.tenancy.master(), sql, vec![id.into()]).await;
        found.extend(schemas.into_iter().map(|n| format!("schema {n}")));
    }
    for entry in std::fs::read_dir(world.dir.path()).expect("read the folder") {
        let name = entry.expect("entry").file_name().to_string_lossy().into_owned();
        if name.contains(id) {
            found.insert(format!("file {name}"));
        }
    }
    for table in TABLES {
        let sql = format!("SELECT CAST(count(*) AS TEXT) FROM {table} WHERE tenant_id = $1");
        let has_table = match world.pg {
            Some(_) => {
                "SELECT relname::text FROM pg_class WHERE relname = $1 AND relkind = 'r' \
                        AND relnamespace = 'public'::regnamespace"
            }
            None => "SELECT name FROM sqlite_master WHERE type = 'table' AND name = $1",
        };
        if world.scalar(has_table, vec![table.into()]).await.is_none() {
            continue;
        }
        if world.scalar(&sql, vec![id.into()]).await.is_some_and(|n| n != "0") {
            found.insert(format!("rows {table}"));
        }
    }
    found
}

/// What `place` holds of `id`, in [`storage`]'s words.
async fn objects(world: &World, place: &Place, id: &str) -> BTreeSet<String> {
    let mut objects = BTreeSet::new();
    match place {
        Place::Schema => {
            objects.insert(format!("schema {id}"));
            objects.insert(format!("role {}", login(world, id).await));
        }
        Place::Table => {
            objects.extend(TABLES.iter().map(|t| format!("rows {t}")));
            if is_postgres(world) {
                objects.insert(format!("role {}", login(world, id).await));
            }
        }
        Place::PgDatabase { db, user } => {
            objects.insert(format!("database {db}"));
            objects.insert(format!("role {user}"));
        }
        Place::SqliteDatabase(name) => {
            objects.insert(format!("file {name}.db"));
        }
    }
    objects
}

/// The tenant's leftovers, in [`storage`]'s words.
pub(crate) async fn leftovers(world: &World, id: &str) -> BTreeSet<String> {
    let id = id.parse().expect("an id");
    let left = world.tenancy.leftovers(Some(&id)).await.expect("the leftovers");
    left.iter()
        .map(|leftover| match &leftover.object {
            UndoEntry::Schema { name, .. } => format!("schema {name}"),
            UndoEntry::LoginRole { name, .. } | UndoEntry::Role { name, .. } => format!("role {name}"),
            UndoEntry::Database { name, .. } => format!("database {name}"),
            UndoEntry::File { path } => {
                format!("file {}", path.file_name().expect("a file name").to_string_lossy())
            }
            UndoEntry::Rows { table, .. } => format!("rows {table}"),
            other => panic!("unexpected leftover {other:?}"),
        })
        .collect()
}

/// Runs `tenantshell <id> -c <sql>`.
pub(crate) fn shell(world: &World, id: &str, sql: &str) -> Output {
    world.run(env!("CARGO_BIN_EXE_tenantshell"), &strings(&[id, "-c", sql]), None)
}

/// One insert through `tenantshell` lands at `target` (its sequence is past the copied
/// keys) and nowhere else.
async fn insert_lands_at(world: &World, id: &str, source: &Place, target: &Place) {
    let (at_source, at_target) = (rows(world, source, id).await, rows(world, target, id).await);
    let sql = format!(
        "INSERT INTO projects (tenant_id, name, created_at) VALUES ('{id}', 'after the move', CURRENT_TIMESTAMP)"
    );
    let out = shell(world, id, &sql);
    expect_ok(&out, "insert through tenantshell");
    assert_eq!(rows(world, target, id).await.count(), at_target.count() + 1, "the insert is not at the target");
    if source != target {
        assert_eq!(rows(world, source, id).await, at_source, "the insert changed the old storage");
    }
}

/// The steps after which `movetenant` is stopped, for a move from the world's setup to
/// `to`.
fn move_steps(setup: Setup, to: To) -> &'static [&'static str] {
    match (setup, to) {
        (Setup::PgSchema, To::Table) => &["freeze", "migrate", "provision", "copy", "verify", "switch"],
        (Setup::PgTable, To::Schema) => {
            &["freeze", "create-schema", "grant-privileges", "migrate", "provision", "copy", "verify", "switch"]
        }
        (Setup::PgSchema | Setup::PgTable, To::Database) => &[
            "freeze",
            "create-role",
            "create-database",
            "grant-privileges",
            "migrate",
            "provision",
            "copy",
            "verify",
            "switch",
        ],
        (Setup::PgDatabase, To::Schema) => &[
            "freeze",
            "create-role",
            "create-schema",
            "grant-privileges",
            "migrate",
            "provision",
            "copy",
            "verify",
            "switch",
        ],
        (Setup::SqliteTable, To::Database) => {
            &["freeze", "create-database-file", "migrate", "provision", "copy", "verify", "switch"]
        }
        (Setup::SqliteDatabase, To::Table) => &["freeze", "migrate", "provision", "copy", "verify", "switch"],
        other => panic!("no steps listed for {other:?}"),
    }
}

/// `movetenant` stopped after each step in turn, then run once more: the tenant stays
/// where it was (and is refused to other commands) until the switch, is at the target
/// after it, and after the re-run is at the target with exactly its rows, the bystander
/// untouched, the source kept as its leftovers and nothing else in the catalogs.
async fn move_killed_after_every_step(setup: Setup, to: To) {
    let Some(world) = World::new(setup).await else { return };
    let bystander = unique_name("b");
    expect_ok(&world.create(&bystander, None), "create the bystander");
    seed(&world, &bystander).await;
    let bystander_place = source_place(&world, &bystander);
    let bystander_rows = rows(&world, &bystander_place, &bystander).await;
    assert_eq!(bystander_rows.count(), 6, "{bystander_rows:?}");
    let bystander_storage = storage(&world, &bystander).await;

    for (n, step) in move_steps(setup, to).iter().enumerate() {
        let what = format!("{setup:?} → {to:?}, stopped after {step}");
        let id = unique_name("m");
        expect_ok(&world.create(&id, None), "create");
        seed(&world, &id).await;
        let (source, target) = (source_place(&world, &id), target_place(&world, &id, to));
        let before = rows(&world, &source, &id).await;
        assert_eq!((before.count(), before.owners.iter().collect::<Vec<_>>()), (6, vec![&id]), "{what}");
        let source_objects = objects(&world, &source, &id).await;
        assert_eq!(storage(&world, &id).await, source_objects, "{what}: before the move");

        let args = move_args(&world, &id, to, &["--yes"]);
        let out = movetenant(&world, &args, Some(step));
        assert!(killed(&out), "{what}: movetenant was not stopped: {}{}", text(&out.stdout), text(&out.stderr));
        let switched = *step == "switch";
        let (isolation, status) = registry(&world, &id).await.expect("a registry row");
        if switched {
            assert_eq!((isolation.as_str(), status.as_str()), (to.flag(), "ready"), "{what}");
            assert_eq!(operation(&world, &id).await, None, "{what}: the switch finishes the operation");
        } else {
            assert_eq!((isolation.as_str(), status.as_str()), (isolation_of(&source), "moving"), "{what}");
            assert_eq!(operation(&world, &id).await.map(|(kind, _)| kind).as_deref(), Some("move"), "{what}");
            assert_eq!(rows(&world, &source, &id).await, before, "{what}: the source changed");
            // Other lifecycle commands are refused, naming the move.
            let out = world.delete(&id, &[], None);
            assert_eq!(out.status.code(), Some(7), "{what}: {}", text(&out.stderr));
            assert!(text(&out.stderr).contains("movetenant"), "{what}: {}", text(&out.stderr));
            let out = world.run(env!("CARGO_BIN_EXE_suspendtenant"), &strings(&[&id]), None);
            assert_eq!(out.status.code(), Some(7), "{what}: {}", text(&out.stderr));
            assert_eq!(registry(&world, &id).await, Some((isolation.clone(), status.clone())), "{what}");
        }

        let out = movetenant(&world, &args, None);
        expect_ok(&out, &format!("{what}: the re-run"));
        if switched {
            // The move was over: the same command has nothing left to do.
            assert!(text(&out.stdout).contains("nothing to move"), "{what}: {}", text(&out.stdout));
        }
        assert_eq!(registry(&world, &id).await, Some((to.flag().to_owned(), "ready".to_owned())), "{what}");
        assert_eq!(operation(&world, &id).await, None, "{what}");
        let after = rows(&world, &target, &id).await;
        assert_eq!(after, before, "{what}: the tenant's rows at the target");
        assert_eq!(rows(&world, &bystander_place, &bystander).await, bystander_rows, "{what}: the bystander's rows");
        assert_eq!(storage(&world, &bystander).await, bystander_storage, "{what}: the bystander's storage");
        let target_objects = objects(&world, &target, &id).await;
        let expected: BTreeSet<String> = source_objects.union(&target_objects).cloned().collect();
        assert_eq!(storage(&world, &id).await, expected, "{what}: residue");
        let kept: BTreeSet<String> = source_objects.difference(&target_objects).cloned().collect();
        assert_eq!(leftovers(&world, &id).await, kept, "{what}: the leftovers");
        insert_lands_at(&world, &id, &source, &target).await;

        // Every few tenants the leftovers go first; a plain delete removes them otherwise.
        if n % 2 == 0 {
            let out = world.delete(&id, &["--leftovers"], None);
            expect_ok(&out, &format!("{what}: deletetenant --leftovers"));
            assert_eq!(storage(&world, &id).await, target_objects, "{what}: after --leftovers");
            assert_eq!(leftovers(&world, &id).await, BTreeSet::new());
        }
        world.tenancy.reset_tenant_pool(&id.parse().expect("an id"));
        expect_ok(&world.delete(&id, &[], None), &format!("{what}: delete"));
        assert_eq!(storage(&world, &id).await, BTreeSet::new(), "{what}: after the delete");
        assert_eq!(registry(&world, &id).await, None);
    }
    world.tenancy.reset_tenant_pool(&bystander.parse().expect("an id"));
    expect_ok(&world.delete(&bystander, &[], None), "delete the bystander");
    assert_eq!(storage(&world, &bystander).await, BTreeSet::new());
}

#[tokio::test]
async fn movetenant_killed_after_every_step_postgres_schema_to_table() {
    move_killed_after_every_step(Setup::PgSchema, To::Table).await;
}

#[tokio::test]
async fn movetenant_killed_after_every_step_postgres_table_to_schema() {
    move_killed_after_every_step(Setup::PgTable, To::Schema).await;
}

#[tokio::test]
async fn movetenant_killed_after_every_step_postgres_schema_to_database() {
    move_killed_after_every_step(Setup::PgSchema, To::Database).await;
}

#[tokio::test]
async fn movetenant_killed_after_every_step_postgres_database_to_schema() {
    move_killed_after_every_step(Setup::PgDatabase, To::Schema).await;
}

#[tokio::test]
async fn movetenant_killed_after_every_step_postgres_table_to_database() {
    move_killed_after_every_step(Setup::PgTable, To::Database).await;
}

#[tokio::test]
async fn movetenant_killed_after_every_step_sqlite_table_to_database() {
    move_killed_after_every_step(Setup::SqliteTable, To::Database).await;
}

#[tokio::test]
async fn movetenant_killed_after_every_step_sqlite_database_to_table() {
    move_killed_after_every_step(Setup::SqliteDatabase, To::Table).await;
}

/// Checks a finished move of `id` from `source` to `target`: registry, operation, rows
/// (equal to `before`), and the catalogs (the target plus the kept source).
async fn assert_moved(world: &World, id: &str, source: &Place, target: &Place, before: &Rows, what: &str) {
    let expected = (isolation_of(target).to_owned(), "ready".to_owned());
    assert_eq!(registry(world, id).await, Some(expected), "{what}");
    assert_eq!(operation(world, id).await, None, "{what}");
    assert_eq!(&rows(world, target, id).await, before, "{what}: the tenant's rows at the target");
    let (from, into) = (objects(world, source, id).await, objects(world, target, id).await);
    let all: BTreeSet<String> = from.union(&into).cloned().collect();
    assert_eq!(storage(world, id).await, all, "{what}: residue");
    let kept: BTreeSet<String> = from.difference(&into).cloned().collect();
    assert_eq!(leftovers(world, id).await, kept, "{what}: the leftovers");
}

/// With `--drop-source`, stopped after the switch: the registry points at the target, the
/// operation waits for its re-run (other commands are refused), and the re-run drops the
/// source.
#[tokio::test]
async fn movetenant_drop_source_killed_after_the_switch_is_finished_by_a_rerun() {
    let Some(world) = World::new(Setup::PgSchema).await else { return };
    let id = unique_name("m");
    expect_ok(&world.create(&id, None), "create");
    seed(&world, &id).await;
    let (source, target) = (source_place(&world, &id), target_place(&world, &id, To::Database));
    let before = rows(&world, &source, &id).await;
    let args = move_args(&world, &id, To::Database, &["--yes", "--drop-source"]);
    assert!(killed(&movetenant(&world, &args, Some("switch"))), "movetenant was not stopped");
    assert_eq!(registry(&world, &id).await, Some(("database".to_owned(), "ready".to_owned())));
    assert_eq!(operation(&world, &id).await, Some(("move".to_owned(), Some("switched".to_owned()))));
    let out = world.delete(&id, &[], None);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("movetenant"), "{}", text(&out.stderr));

    let out = movetenant(&world, &args, None);
    expect_ok(&out, "the re-run");
    assert!(text(&out.stdout).contains("Dropped (old storage)"), "{}", text(&out.stdout));
    assert_eq!(registry(&world, &id).await, Some(("database".to_owned(), "ready".to_owned())));
    assert_eq!(operation(&world, &id).await, None);
    assert_eq!(rows(&world, &target, &id).await, before);
    assert_eq!(storage(&world, &id).await, objects(&world, &target, &id).await, "the source is gone");
    assert_eq!(leftovers(&world, &id).await, BTreeSet::new());
    insert_lands_at(&world, &id, &target, &target).await;
    world.tenancy.reset_tenant_pool(&id.parse().expect("an id"));
    expect_ok(&world.delete(&id, &[], None), "delete");
    assert_eq!(storage(&world, &id).await, BTreeSet::new());
}

/// With `--drop-source`, killed (`SIGKILL`) while it drops the source schema: the test
/// holds a lock on one of the schema's tables, so the move waits in its `drop schema …`
/// step; there it is killed and its orphaned statement ended. The re-run drops what is
/// left.
#[tokio::test]
async fn movetenant_drop_source_killed_while_dropping_is_finished_by_a_rerun() {
    let Some(world) = World::new(Setup::PgSchema).await else { return };
    let pg = world.pg.as_ref().expect("PostgreSQL");
    let id = unique_name("m");
    expect_ok(&world.create(&id, None), "create");
    seed(&world, &id).await;
    let (source, target) = (source_place(&world, &id), target_place(&world, &id, To::Database));
    let before = rows(&world, &source, &id).await;

    let holder = sea_orm::Database::connect(world.url.clone()).await.expect("connect");
    let lock = sea_orm::TransactionTrait::begin(&holder).await.expect("begin");
    lock.execute_unprepared(&format!("LOCK TABLE \"{id}\".projects IN ACCESS SHARE MODE")).await.expect("lock");

    let args = move_args(&world, &id, To::Database, &["--yes", "--drop-source"]);
    let mut child = world
        .command(env!("CARGO_BIN_EXE_movetenant"), &args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock' \
                   AND query ILIKE 'DROP SCHEMA%'";
    let started = std::time::Instant::now();
    loop {
        let step = operation(&world, &id).await.and_then(|(_, step)| step).unwrap_or_default();
        let blocked = tenancy_test_support::count(&pg.admin, waiting, vec![pg.name.as_str().into()]).await;
        if step.starts_with("drop schema") && blocked == 1 {
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "the move never reached the drop: {step}");
        assert!(child.try_wait().expect("poll").is_none(), "the move ended before its drop: {step}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    // The server would run the orphaned DROP once the lock is free: end it, as a crash
    // of the machine would.
    let end = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 \
               AND wait_event_type = 'Lock' AND query ILIKE 'DROP SCHEMA%'";
    assert_eq!(tenancy_test_support::count(&pg.admin, end, vec![pg.name.as_str().into()]).await, 1);
    lock.rollback().await.expect("release the lock");
    holder.close().await.expect("close");

    assert_eq!(registry(&world, &id).await, Some(("database".to_owned(), "ready".to_owned())));
    let step = operation(&world, &id).await.and_then(|(_, step)| step).unwrap_or_default();
    assert!(step.starts_with("drop schema"), "{step}");
    assert!(storage(&world, &id).await.contains(&format!("schema {id}")), "the schema is still there");
    let out = movetenant(&world, &args, None);
    expect_ok(&out, "the re-run");
    assert_eq!(operation(&world, &id).await, None);
    assert_eq!(rows(&world, &target, &id).await, before);
    assert_eq!(storage(&world, &id).await, objects(&world, &target, &id).await, "the source is gone");
    assert_eq!(leftovers(&world, &id).await, BTreeSet::new());
    world.tenancy.reset_tenant_pool(&id.parse().expect("an id"));
    expect_ok(&world.delete(&id, &[], None), "delete");
    assert_eq!(storage(&world, &id).await, BTreeSet::new());
}

/// Real `SIGKILL`s a pseudo-random 0–400 ms into `movetenant` of a schema tenant to a
/// database and back, each followed by one plain re-run: the tenant ends at the target
/// with exactly its rows, the bystander untouched, nothing but the kept source beside it.
#[tokio::test]
async fn movetenant_killed_at_random_moments_postgres_schema_to_database_and_back() {
    let Some(world) = World::new(Setup::PgSchema).await else { return };
    let mut seed_bits = u64::from(std::process::id()) ^ 0x2545_f491_4f6c_dd1d;
    eprintln!("random kill seed: {seed_bits:#x}");
    let mut next_delay = move || {
        seed_bits ^= seed_bits << 13;
        seed_bits ^= seed_bits >> 7;
        seed_bits ^= seed_bits << 17;
        std::time::Duration::from_millis(seed_bits % 400)
    };
    let bystander = unique_name("b");
    expect_ok(&world.create(&bystander, None), "create the bystander");
    seed(&world, &bystander).await;
    let bystander_rows = rows(&world, &Place::Schema, &bystander).await;
    let id = unique_name("r");
    expect_ok(&world.create(&id, None), "create");
    seed(&world, &id).await;
    let before = rows(&world, &Place::Schema, &id).await;
    for round in 0..3 {
        for to in [To::Database, To::Schema] {
            let source = match to {
                To::Database => Place::Schema,
                _ => target_place(&world, &id, To::Database),
            };
            let target = target_place(&world, &id, to);
            let what = format!("round {round}: → {to:?}");
            let args = move_args(&world, &id, to, &["--yes"]);
            let delay = next_delay();
            let mut child = world
                .command(env!("CARGO_BIN_EXE_movetenant"), &args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn");
            std::thread::sleep(delay);
            let _ = child.kill();
            let status = child.wait().expect("reap");
            let reached = operation(&world, &id).await;
            eprintln!("{what}: killed after {delay:?} ({status}), journal: {reached:?}");
            world.tenancy.reset_tenant_pool(&id.parse().expect("an id"));
            let out = movetenant(&world, &args, None);
            // Killed after its switch (or never killed): the move is over and the same
            // command has nothing left to do.
            expect_ok(&out, &format!("{what}: the re-run"));
            assert_moved(&world, &id, &source, &target, &before, &what).await;
            assert_eq!(rows(&world, &Place::Schema, &bystander).await, bystander_rows, "{what}: the bystander");
            expect_ok(&world.delete(&id, &["--leftovers"], None), &format!("{what}: --leftovers"));
            assert_eq!(storage(&world, &id).await, objects(&world, &target, &id).await, "{what}");
        }
    }
    insert_lands_at(&world, &id, &Place::Schema, &Place::Schema).await;
    for tenant in [&id, &bystander] {
        world.tenancy.reset_tenant_pool(&tenant.parse().expect("an id"));
        expect_ok(&world.delete(tenant, &[], None), "delete");
        assert_eq!(storage(&world, tenant).await, BTreeSet::new());
    }
}

/// `createtenant` args for `id` in `isolation` on the world's PostgreSQL master.
pub(crate) fn create_args_as(world: &World, id: &str, isolation: &str) -> Vec<String> {
    let mut args = strings(&["--id", id, "--name", id, "--isolation", isolation, "--migrate", "--no-input"]);
    if isolation == "database" {
        let pg = world.pg.as_ref().expect("PostgreSQL");
        let (db, user) = (World::db_name(id), World::db_user(id));
        pg.track_database(&db);
        pg.track_role(&user);
        args.extend(strings(&["--create-database", "--db-name", &db, "--db-user", &user]));
        args.extend(strings(&["--db-host", "127.0.0.1", "--db-port", "5432"]));
    }
    args
}

pub(crate) fn create_as(world: &World, id: &str, isolation: &str) {
    let out = world.run(env!("CARGO_BIN_EXE_createtenant"), &create_args_as(world, id, isolation), None);
    expect_ok(&out, &format!("create {id} ({isolation})"));
}

/// Everything a refused or dry move must leave as it was.
#[derive(Debug, PartialEq)]
struct State {
    registry: Option<(String, String)>,
    operation: Option<(String, Option<String>)>,
    storage: BTreeSet<String>,
    rows: Rows,
}

async fn state(world: &World, id: &str, place: &Place) -> State {
    State {
        registry: registry(world, id).await,
        operation: operation(world, id).await,
        storage: storage(world, id).await,
        rows: rows(world, place, id).await,
    }
}

/// `--dry-run` (text and JSON), no terminal without `--yes`, the confirmation on a
/// terminal, the refusals (keys taken in the shared tables, a tenant behind the migrator,
/// leftovers remaining, cache as a target, an unknown tenant) and `deletetenant
/// --leftovers`.
#[tokio::test]
async fn movetenant_cli_plans_confirms_and_refuses() {
    let Some(world) = World::new(Setup::PgSchema).await else { return };
    let id = unique_name("c");
    create_as(&world, &id, "schema");
    seed(&world, &id).await;
    let shared = unique_name("t");
    create_as(&world, &shared, "table");
    seed(&world, &shared).await;
    let shared_rows = rows(&world, &Place::Table, &shared).await;
    let unchanged = state(&world, &id, &Place::Schema).await;

    // The plan, as text and as JSON: per table its rows and size; nothing changes.
    let out = movetenant(&world, &move_args(&world, &id, To::Database, &["--dry-run"]), None);
    expect_ok(&out, "--dry-run");
    let plan = text(&out.stdout);
    assert!(plan.contains(&format!("Moving tenant '{id}' from schema isolation")), "{plan}");
    for (table, count) in [("projects", 1), ("tasks", 2), ("comments", 2), ("tenant_users", 1)] {
        assert!(plan.contains(&format!("table '{table}': {count} row(s), ")), "{table}: {plan}");
    }
    assert!(plan.contains("in all 4 table(s), 6 row(s)"), "{plan}");
    assert!(plan.contains(&format!("and keep (deletetenant --leftovers removes it): schema '{id}'")), "{plan}");
    assert!(plan.contains("Nothing was changed (--dry-run)."), "{plan}");
    let out = movetenant(&world, &move_args(&world, &id, To::Table, &["--dry-run", "--json"]), None);
    expect_ok(&out, "--dry-run --json");
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!((plan["dry_run"].as_bool(), plan["plan"]["to"].as_str()), (Some(true), Some("table")), "{plan}");
    let tables: BTreeMap<String, (u64, u64)> = plan["plan"]["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .map(|t| {
            (
                t["table"].as_str().expect("name").to_owned(),
                (t["rows"].as_u64().expect("rows"), t["bytes"].as_u64().expect("bytes")),
            )
        })
        .collect();
    assert_eq!(
        tables.keys().map(String::as_str).collect::<Vec<_>>(),
        ["comments", "projects", "tasks", "tenant_users"]
    );
    for (table, count) in [("projects", 1), ("tasks", 2), ("comments", 2), ("tenant_users", 1)] {
        assert_eq!(tables[table].0, count, "{plan}");
        assert!(tables[table].1 > 0, "{table} has a size: {plan}");
    }
    assert_eq!(state(&world, &id, &Place::Schema).await, unchanged, "the dry runs changed something");

    // No terminal and no --yes: refused, nothing moved.
    let out = movetenant(&world, &move_args(&world, &id, To::Table, &[]), None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("pass --yes"), "{}", text(&out.stderr));
    assert_eq!(state(&world, &id, &Place::Schema).await, unchanged);

    // Unknown tenant; cache as a target.
    let out = movetenant(&world, &strings(&["nobody_here", "--to", "table", "--yes"]), None);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    let out = movetenant(&world, &strings(&[&id, "--to", "cache", "--yes"]), None);
    let stderr = text(&out.stderr);
    assert!(matches!(out.status.code(), Some(2 | 9)), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("cache isolation has no relational storage"), "{stderr}");
    assert_eq!(state(&world, &id, &Place::Schema).await, unchanged);

    // A key another tenant holds in the shared tables: refused naming table and key,
    // nothing changed, the tenant served.
    let colliding = unique_name("k");
    create_as(&world, &colliding, "schema");
    seed(&world, &colliding).await;
    let taken = world
        .scalar("SELECT CAST(min(id) AS TEXT) FROM public.tasks WHERE tenant_id = $1", vec![shared.as_str().into()])
        .await
        .expect("a task of the table tenant");
    world
        .tenancy
        .master()
        .execute_unprepared(&format!("INSERT INTO \"{colliding}\".tasks (id, tenant_id, project_id, title, done, created_at) SELECT {taken}, tenant_id, id, 'collides', false, created_at FROM \"{colliding}\".projects"))
        .await
        .expect("a task with a taken key");
    let colliding_before = state(&world, &colliding, &Place::Schema).await;
    let out = movetenant(&world, &move_args(&world, &colliding, To::Table, &["--yes"]), None);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(9), "{stderr}");
    assert!(
        stderr.contains(&format!("Key id={taken} of table 'tasks' is taken")),
        "names the table and the key: {stderr}"
    );
    assert_eq!(state(&world, &colliding, &Place::Schema).await, colliding_before, "the refused move changed something");
    assert_eq!(rows(&world, &Place::Table, &shared).await, shared_rows, "the table tenant's rows changed");
    let out = shell(&world, &colliding, "SELECT count(*) AS n FROM tasks");
    expect_ok(&out, "the refused tenant is served");
    assert!(text(&out.stdout).contains(" 3\n"), "{}", text(&out.stdout));

    // A tenant behind the migrator: refused, nothing changed.
    let behind = unique_name("v");
    create_as(&world, &behind, "schema");
    world
        .tenancy
        .master()
        .execute_unprepared(&format!(
            "DELETE FROM \"{behind}\".seaql_migrations WHERE version = (SELECT max(version) FROM \"{behind}\".seaql_migrations)"
        ))
        .await
        .expect("forget a migration");
    let behind_before = state(&world, &behind, &Place::Schema).await;
    let out = movetenant(&world, &move_args(&world, &behind, To::Database, &["--yes"]), None);
    assert_eq!(out.status.code(), Some(9), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("migrat"), "{}", text(&out.stderr));
    assert_eq!(state(&world, &behind, &Place::Schema).await, behind_before, "the refused move changed something");

    // On a terminal: a wrong id cancels (130), nothing moved; the right one moves.
    let confirm = |typed: &str| {
        use crate::pty::{answer, exit_code, expect, plain};
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_movetenant"));
        command
            .current_dir(world.dir.path())
            .args([id.as_str(), "--to", "table"])
            .env("DATABASE_URL", &world.url)
            .env("TENANCY_SECRET_KEY_FILE", world.dir.path().join("key"))
            .env_remove("TENANCY_FAULT_AFTER_STEP")
            .env("TERM", "xterm-256color")
            .env("NO_COLOR", "1");
        let mut session = rexpect::session::spawn_command(command, Some(60_000)).expect("spawn in a pty");
        let mut transcript = String::new();
        expect(&mut session, &format!("Moving tenant '{id}' from schema isolation"), &mut transcript);
        expect(&mut session, "table 'tasks': 2 row(s)", &mut transcript);
        answer(&mut session, "Type the tenant id to move it:", typed, &mut transcript);
        let code = exit_code(&session);
        (code, plain(&transcript))
    };
    let (code, transcript) = confirm("someone_else");
    assert_eq!(code, 130, "{transcript}");
    assert_eq!(state(&world, &id, &Place::Schema).await, unchanged, "a cancelled move changed something");
    let (code, transcript) = confirm(&id);
    assert_eq!(code, 0, "{transcript}");
    assert_moved(&world, &id, &Place::Schema, &Place::Table, &unchanged.rows, "confirmed on a terminal").await;
    assert_eq!(rows(&world, &Place::Table, &shared).await, shared_rows, "the table tenant's rows changed");

    // Leftovers: a second move is refused while they remain; --dry-run lists them,
    // --yes removes them, a second --yes finds nothing.
    let out = movetenant(&world, &move_args(&world, &id, To::Schema, &["--yes"]), None);
    assert_eq!(out.status.code(), Some(9), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("leftovers"), "{}", text(&out.stderr));
    let moved = state(&world, &id, &Place::Table).await;
    let out = world.delete(&id, &["--leftovers", "--dry-run"], None);
    expect_ok(&out, "--leftovers --dry-run");
    assert!(text(&out.stdout).contains(&format!("schema '{id}'")), "{}", text(&out.stdout));
    let out = world.delete(&id, &["--leftovers", "--dry-run", "--json"], None);
    expect_ok(&out, "--leftovers --dry-run --json");
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(listed["leftovers"].as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(state(&world, &id, &Place::Table).await, moved, "--dry-run removed something");
    let out = world.delete(&id, &["--leftovers"], None);
    expect_ok(&out, "--leftovers --yes");
    assert!(text(&out.stdout).contains(&format!("Removed schema '{id}'")), "{}", text(&out.stdout));
    assert_eq!(storage(&world, &id).await, objects(&world, &Place::Table, &id).await);
    assert_eq!(registry(&world, &id).await, Some(("table".to_owned(), "ready".to_owned())));
    assert_eq!(rows(&world, &Place::Table, &id).await, unchanged.rows);
    let out = world.delete(&id, &["--leftovers"], None);
    expect_ok(&out, "--leftovers again");
    assert!(text(&out.stdout).contains("nothing left behind"), "{}", text(&out.stdout));

    for tenant in [&id, &shared, &colliding, &behind] {
        expect_ok(&world.delete(tenant, &[], None), "delete");
        assert_eq!(storage(&world, tenant).await, BTreeSet::new(), "{tenant}");
    }
}

/// Eight `createtenant` processes at once, of schema and then of table tenants (each with a
/// login role granted `CONNECT` on the master database): all exit 0, all ready, no
/// operation left in the journal.
#[tokio::test]
async fn eight_createtenant_processes_at_once_all_succeed() {
    let Some(world) = World::new(Setup::PgSchema).await else { return };
    for isolation in ["schema", "table"] {
        let ids: Vec<String> = (0..8).map(|n| unique_name(&format!("p{n}"))).collect();
        let children: Vec<std::process::Child> = ids
            .iter()
            .map(|id| {
                world
                    .command(env!("CARGO_BIN_EXE_createtenant"), &create_args_as(&world, id, isolation))
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn createtenant")
            })
            .collect();
        for (id, child) in ids.iter().zip(children) {
            let out = child.wait_with_output().expect("wait for createtenant");
            expect_ok(&out, &format!("createtenant {id} ({isolation}) beside seven others"));
            assert_eq!(registry(&world, id).await, Some((isolation.to_owned(), "ready".to_owned())), "{id}");
            assert_eq!(operation(&world, id).await, None, "{id}");
        }
        for id in &ids {
            let out = shell(&world, id, "SELECT count(*) FROM projects");
            expect_ok(&out, &format!("tenantshell {id}"));
            expect_ok(&world.delete(id, &[], None), "deletetenant");
        }
    }
}
