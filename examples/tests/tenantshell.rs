//! `tenantshell`: `-c` for scripts and the interactive prompt on a pseudo-terminal, against
//! schema and table tenants holding rows of two tenants each. The shell sees its tenant's
//! rows only, even for a query without any filter.

use crate::pty;

use std::process::{Command, Output, Stdio};

use pty::type_text;
use rexpect::process::WaitStatus;
use rexpect::session::{PtySession, spawn_command};
use sea_orm::prelude::ChronoUtc;
use sea_orm::{ActiveModelTrait, NotSet, Set};
use tenancy::{Isolation, NewDatabase, NewTenant, Tenancy, TenantId};
use tenancy_test_support::{PgMaster, TempDir, count, unique_name};

use example_app::entities::project;

const TIMEOUT_MS: u64 = 30_000;

pub(crate) fn shell(dir: &TempDir, url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tenantshell"))
        .current_dir(dir.path())
        .args(args)
        .env("DATABASE_URL", url)
        .env("TENANCY_SECRET_KEY_FILE", dir.path().join("key"))
        .env_remove("TENANCY_SHELL_HISTORY")
        .stdin(Stdio::null())
        .output()
        .expect("run tenantshell")
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub(crate) async fn create(
    tenancy: &Tenancy,
    id: &str,
    isolation: Isolation,
    database: Option<NewDatabase>,
) -> TenantId {
    let id: TenantId = id.parse().unwrap();
    let hooks = tenancy_migrate::MigrateOnCreate::new(&example_app::Migrator);
    let new = NewTenant::new(id.clone(), format!("Tenant {id}"), isolation)
        .expect("a valid new tenant")
        .database(database)
        .migrate(true);
    tenancy.create_tenant(new, &hooks).await.expect("create tenant");
    id
}

/// Two projects, `<tenant>-one` and `<tenant>-two` (see [`add_named_projects`]).
async fn add_projects(tenancy: &Tenancy, tenant: &TenantId) {
    add_named_projects(tenancy, tenant, &["one", "two"]).await;
}

/// Projects named `<tenant>-<name>`, inserted through the tenant's handle (the tenant
/// column left to the handle's mode: stamped by the default in table mode).
pub(crate) async fn add_named_projects(tenancy: &Tenancy, tenant: &TenantId, names: &[&str]) {
    let handle = tenancy.tenant(tenant).await.unwrap();
    for name in names {
        project::ActiveModel {
            tenant_id: if handle.isolation() == Isolation::Table { NotSet } else { Set(tenant.to_string()) },
            name: Set(format!("{tenant}-{name}")),
            created_at: Set(ChronoUtc::now()),
            ..Default::default()
        }
        .insert(&handle)
        .await
        .expect("insert project");
    }
}

/// Schema tenants `sa`, `sb` and table tenants `ta`, `tb`, two projects each.
struct Fleet {
    pg: PgMaster,
    dir: TempDir,
    tenancy: Tenancy,
    schema: [TenantId; 2],
    table: [TenantId; 2],
}

async fn fleet() -> Option<Fleet> {
    let pg = PgMaster::create().await?;
    let dir = TempDir::new();
    let tenancy = pg.tenancy(&dir).await;
    let schema = [
        create(&tenancy, &unique_name("sa"), Isolation::Schema, None).await,
        create(&tenancy, &unique_name("sb"), Isolation::Schema, None).await,
    ];
    let table = [
        create(&tenancy, &unique_name("ta"), Isolation::Table, None).await,
        create(&tenancy, &unique_name("tb"), Isolation::Table, None).await,
    ];
    for tenant in schema.iter().chain(&table) {
        add_projects(&tenancy, tenant).await;
    }
    Some(Fleet { pg, dir, tenancy, schema, table })
}

#[tokio::test]
async fn dash_c_sees_only_its_tenant_in_schema_and_table_modes() {
    let Some(f) = fleet().await else { return };
    let master = f.pg.connect().await;
    // The shared table really holds both table tenants' rows: the shell's view below is
    // narrowed by the binding, not by an empty table.
    assert_eq!(count(&master, "SELECT COUNT(*) FROM public.projects", vec![]).await, 4);

    for (own, other) in [(&f.schema[0], &f.schema[1]), (&f.table[0], &f.table[1]), (&f.table[1], &f.table[0])] {
        let out = shell(&f.dir, &f.pg.url, &[own.as_str(), "-c", "SELECT * FROM projects"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 5, "{stdout}");
        assert_eq!(
            lines[0].split('|').map(str::trim).collect::<Vec<_>>(),
            ["id", "tenant_id", "name", "created_at"],
            "{stdout}"
        );
        assert!(lines[1].chars().all(|c| c == '-' || c == '+'), "{stdout}");
        for (line, name) in lines[2..4].iter().zip(["one", "two"]) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            assert_eq!(cells[1..3], [own.as_str(), &format!("{own}-{name}")], "{stdout}");
        }
        assert_eq!(lines[4], "(2 rows)");
        assert!(!stdout.contains(other.as_str()), "{own} sees {other}:\n{stdout}");
        assert_eq!(text(&out.stderr), "");
    }

    // Aligned columns, psql style, and a count of affected rows for writes.
    let sa = f.schema[0].as_str();
    let out = shell(
        &f.dir,
        &f.pg.url,
        &[sa, "-c", "SELECT 7 AS n, 'seven' AS word, NULL::text AS nothing, 2.50::numeric AS price"],
    );
    assert_eq!(
        text(&out.stdout),
        " n | word  | nothing | price\n---+-------+---------+-------\n 7 | seven | NULL    | 2.50\n(1 row)\n"
    );
    let ta = f.table[0].as_str();
    let out = shell(&f.dir, &f.pg.url, &[ta, "-c", "INSERT INTO projects (name) VALUES ('from the shell');"]);
    assert_eq!(text(&out.stdout), "OK, 1 row affected\n", "{}", text(&out.stderr));
    // Stamped with the shell's tenant by the column default.
    let stamped = "SELECT COUNT(*) FROM public.projects WHERE name = 'from the shell' AND tenant_id = $1";
    assert_eq!(count(&master, stamped, vec![ta.into()]).await, 1);
    let out = shell(&f.dir, &f.pg.url, &[ta, "-c", "UPDATE projects SET name = name || '!'"]);
    assert_eq!(text(&out.stdout), "OK, 3 rows affected\n", "{}", text(&out.stderr));
    let bangs = "SELECT COUNT(*) FROM public.projects WHERE name LIKE '%!'";
    assert_eq!(count(&master, bangs, vec![]).await, 3, "another tenant's rows were updated");

    // \dt: the schema tenant's own tables; the table tenant's scoped shared tables.
    let out = shell(&f.dir, &f.pg.url, &[sa, "-c", "\\dt"]);
    let tables: Vec<String> = text(&out.stdout).lines().skip(2).map(|l| l.trim().to_owned()).collect();
    assert_eq!(tables, ["comments", "projects", "seaql_migrations", "tasks", "tenant_users", "(5 rows)"]);
    let out = shell(&f.dir, &f.pg.url, &[ta, "-c", "\\dt"]);
    let tables: Vec<String> = text(&out.stdout).lines().skip(2).map(|l| l.trim().to_owned()).collect();
    assert_eq!(tables, ["comments", "projects", "tasks", "tenant_users", "(4 rows)"]);

    // A failing statement: its error on stderr, exit 1. Another schema's table is not in
    // the search path.
    let out = shell(&f.dir, &f.pg.url, &[sa, "-c", "SELECT * FROM plans"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "Error: relation \"plans\" does not exist\n");
    // Statements that would escape the per-statement binding are refused.
    for (sql, start) in
        [("BEGIN", "Error: transaction control is not available"), ("SET ROLE postgres", "Error: SET is not available")]
    {
        let out = shell(&f.dir, &f.pg.url, &[ta, "-c", sql]);
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out.stderr).starts_with(start), "{}", text(&out.stderr));
    }
    // A database tenant on PostgreSQL: its own database.
    let new_db = f.pg.new_database("tenant db password");
    let dbt = create(&f.tenancy, &unique_name("dbt"), Isolation::Database, Some(new_db)).await;
    add_projects(&f.tenancy, &dbt).await;
    let out = shell(&f.dir, &f.pg.url, &[dbt.as_str(), "-c", "SELECT name FROM projects ORDER BY name"]);
    let width = format!("{dbt}-one").len();
    assert_eq!(
        text(&out.stdout),
        format!(" name\n{}\n {dbt}-one\n {dbt}-two\n(2 rows)\n", "-".repeat(width + 2)),
        "{}",
        text(&out.stderr)
    );
    let out = shell(&f.dir, &f.pg.url, &[dbt.as_str(), "-c", "\\dt"]);
    let tables: Vec<String> = text(&out.stdout).lines().skip(2).map(|l| l.trim().to_owned()).collect();
    assert_eq!(tables, ["comments", "projects", "seaql_migrations", "tasks", "tenant_users", "(5 rows)"]);

    // One statement per input: a second one smuggled in after a semicolon is refused by
    // PostgreSQL, so it cannot undo the tenant binding; nothing of the input ran.
    let out = shell(&f.dir, &f.pg.url, &[ta, "-c", "UPDATE projects SET name = 'x'; RESET ROLE; DELETE FROM projects"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "Error: cannot insert multiple commands into a prepared statement\n");
    assert_eq!(count(&master, "SELECT COUNT(*) FROM public.projects WHERE name <> 'x'", vec![]).await, 5);

    // Unknown and cache tenants.
    let out = shell(&f.dir, &f.pg.url, &["nosuchtenant", "-c", "SELECT 1"]);
    assert_eq!(out.status.code(), Some(6));
    assert_eq!(text(&out.stderr), "Error: Tenant 'nosuchtenant' does not exist\n");
    let cache = create(&f.tenancy, &unique_name("cc"), Isolation::Cache, None).await;
    let out = shell(&f.dir, &f.pg.url, &[cache.as_str(), "-c", "SELECT 1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("uses cache isolation and has no relational storage"), "{}", text(&out.stderr));
}

/// The guard refuses `set_config(...)` however it is spelled, but it is a convenience:
/// `DO` blocks pass it, and what keeps them (and anything else) to the shell's tenant is
/// the tenant's login role. Each attempt is checked on the rows of both tenants, as the
/// superuser sees them, and on the next statement of the shell.
#[tokio::test]
async fn set_config_and_do_blocks_cannot_reach_another_tenant() {
    let Some(f) = fleet().await else { return };
    let master = f.pg.connect().await;
    let names = async |tenant: &TenantId, isolation: Isolation| {
        let table = match isolation {
            Isolation::Schema => format!("{}.projects", tenancy::sql::quote_ident(tenant.as_str())),
            _ => "public.projects".to_owned(),
        };
        let sql = format!("SELECT name FROM {table} WHERE tenant_id = $1 ORDER BY name");
        tenancy_test_support::column_strings(&master, &sql, vec![tenant.as_str().into()]).await
    };
    let login = async |tenant: &TenantId| {
        f.tenancy.tenant(tenant).await.unwrap().tenant().placement().login().expect("a login role").user.clone()
    };
    let q = tenancy::sql::quote_literal;
    for (isolation, [own, other]) in [(Isolation::Schema, &f.schema), (Isolation::Table, &f.table)] {
        let other_role = login(other).await;
        let untouched = [format!("{other}-one"), format!("{other}-two")];

        // set_config, however spelled: refused before it reaches the database.
        for sql in [
            format!("SELECT set_config('role', {}, false)", q(&other_role)),
            format!("SELECT pg_catalog.set_config('tenancy.tenant_id', {}, false)", q(other.as_str())),
            format!("SELECT \"set_config\"('search_path', {}, false), * FROM projects", q(other.as_str())),
            format!("SELECT 1 FROM projects WHERE set_config('role', {}, true) IS NULL", q(&other_role)),
        ] {
            let out = shell(&f.dir, &f.pg.url, &[own.as_str(), "-c", &sql]);
            assert_eq!(out.status.code(), Some(1), "{sql}");
            assert!(text(&out.stderr).starts_with("Error: set_config() is not available"), "{}", text(&out.stderr));
        }

        // DO blocks pass the guard (here with the settings made through `EXECUTE`, which
        // the guard cannot read); the database stops them at the tenant's role.
        let attempts = [
            // Become the other tenant's login role.
            format!("DO $$ BEGIN EXECUTE 'SET ROLE ' || quote_ident({}); END $$", q(&other_role)),
            format!(
                "DO $$ BEGIN EXECUTE 'SET ROLE ' || quote_ident({}); UPDATE projects SET name = 'pwned'; END $$",
                q(&other_role)
            ),
            // Point the session at the other tenant (its schema; its id), then write.
            match isolation {
                Isolation::Schema => format!(
                    "DO $$ BEGIN EXECUTE 'SET search_path = ' || quote_ident({}); \
                     UPDATE projects SET name = 'pwned'; END $$",
                    q(other.as_str())
                ),
                _ => format!(
                    "DO $$ BEGIN EXECUTE 'SET tenancy.tenant_id = ' || quote_literal({}); \
                     UPDATE projects SET name = 'pwned'; END $$",
                    q(other.as_str())
                ),
            },
            // Name the other schema directly.
            format!(
                "DO $$ BEGIN UPDATE {}.projects SET name = 'pwned'; END $$",
                tenancy::sql::quote_ident(other.as_str())
            ),
        ];
        let mut attempts = attempts.to_vec();
        if isolation == Isolation::Table {
            // Become the application role the tenant's role is a member of, then name the
            // other tenant in the setting the policies fall back to for non-tenant
            // sessions: the policies go by the session's login role, so nothing changes.
            let app_role = tenancy::rls::app_role(&master).await.unwrap();
            attempts.push(format!(
                "DO $$ BEGIN EXECUTE 'SET ROLE ' || quote_ident({}); \
                 EXECUTE 'SET tenancy.tenant_id = ' || quote_literal({}); \
                 UPDATE projects SET name = 'pwned'; INSERT INTO projects (tenant_id, name, created_at) \
                 VALUES ({}, 'planted', now()); END $$",
                q(&app_role),
                q(other.as_str()),
                q(other.as_str())
            ));
        }
        for sql in &attempts {
            let out = shell(&f.dir, &f.pg.url, &[own.as_str(), "-c", sql]);
            let said = format!("{isolation}: {sql}: {}{}", text(&out.stdout), text(&out.stderr));
            assert_eq!(names(other, isolation).await, untouched, "{said}");
        }
        // The tenant's own rows are the only ones a DO block reached (the table tenant's
        // UPDATE ran, on its rows alone: the policy goes by the role, not the setting).
        let own_names = names(own, isolation).await;
        assert!(own_names.iter().all(|n| n == "pwned" || n.starts_with(own.as_str())), "{own_names:?}");
        if isolation == Isolation::Table {
            assert_eq!(own_names, ["pwned", "pwned"], "the DO block's UPDATE reached the tenant's own rows");
        }
        // The next statement of the shell still sees the tenant's rows only.
        let out = shell(&f.dir, &f.pg.url, &[own.as_str(), "-c", "SELECT tenant_id FROM projects"]);
        let stdout = text(&out.stdout);
        assert!(stdout.contains(own.as_str()) && !stdout.contains(other.as_str()), "{stdout}");
    }
}

#[tokio::test]
async fn dash_c_on_a_sqlite_database_tenant() {
    let dir = TempDir::new();
    let url = dir.sqlite_master_url();
    let tenancy = Tenancy::builder(url.clone()).secret_key_file(dir.path().join("key")).connect().await.unwrap();
    let database = NewDatabase::create("acme_db");
    let acme = create(&tenancy, "acme", Isolation::Database, Some(database)).await;
    add_projects(&tenancy, &acme).await;
    let out = shell(&dir, &url, &["acme", "-c", "SELECT name FROM projects ORDER BY name"]);
    assert_eq!(text(&out.stdout), " name\n----------\n acme-one\n acme-two\n(2 rows)\n", "{}", text(&out.stderr));
    let out = shell(&dir, &url, &["acme", "-c", "\\dt"]);
    let tables: Vec<String> = text(&out.stdout).lines().skip(2).map(|l| l.trim().to_owned()).collect();
    assert_eq!(tables, ["comments", "projects", "seaql_migrations", "tasks", "tenant_users", "(5 rows)"]);
}

/// The shell of a table tenant on a SQLite master, where no row-level security backs the
/// handle: it sees its own rows only, reaches no table the app's models do not declare,
/// and lists the declared ones. (Before the shell took the app's models, it linked none,
/// and every statement ran unscoped: both tenants' rows were shown.)
#[tokio::test]
async fn dash_c_on_a_sqlite_table_tenant_reaches_only_its_rows_and_the_declared_tables() {
    let dir = TempDir::new();
    let url = dir.sqlite_master_url();
    let tenancy = Tenancy::builder(url.clone()).secret_key_file(dir.path().join("key")).connect().await.unwrap();
    let ta = create(&tenancy, "ta", Isolation::Table, None).await;
    let tb = create(&tenancy, "tb", Isolation::Table, None).await;
    add_projects(&tenancy, &ta).await;
    add_projects(&tenancy, &tb).await;

    let out = shell(&dir, &url, &["ta", "-c", "SELECT name FROM projects ORDER BY name"]);
    assert_eq!(text(&out.stdout), " name\n--------\n ta-one\n ta-two\n(2 rows)\n", "{}", text(&out.stderr));
    let out = shell(&dir, &url, &["tb", "-c", "UPDATE projects SET name = 'mine'"]);
    assert_eq!(text(&out.stdout), "OK, 2 rows affected\n", "{}", text(&out.stderr));
    for sql in [
        "SELECT * FROM tenancy_tenants",
        "UPDATE tenancy_tenants SET status = 'provisioning'",
        "SELECT sql FROM sqlite_master",
        "SELECT * FROM seaql_migrations",
        "ATTACH DATABASE 'master.db' AS m",
        "PRAGMA foreign_keys = OFF",
    ] {
        let out = shell(&dir, &url, &["ta", "-c", sql]);
        assert_eq!(out.status.code(), Some(1), "{sql}: {}", text(&out.stdout));
        assert!(text(&out.stderr).contains("refusing"), "{sql}: {}", text(&out.stderr));
    }
    let out = shell(&dir, &url, &["ta", "-c", "\\dt"]);
    let tables: Vec<String> = text(&out.stdout).lines().skip(2).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        tables,
        [
            "comments|scoped",
            "plans|shared,read-only",
            "projects|scoped",
            "tasks|scoped",
            "tenant_users|scoped",
            "(5rows)"
        ]
    );
    // The master afterwards: ta's rows untouched by tb's update, the registry intact.
    let master = tenancy.master();
    let names = tenancy_test_support::column_strings(master, "SELECT name FROM projects ORDER BY name", vec![]).await;
    assert_eq!(names, ["mine", "mine", "ta-one", "ta-two"]);
    let ready = "SELECT COUNT(*) FROM tenancy_tenants WHERE status = 'ready'";
    assert_eq!(tenancy_test_support::count(master, ready, vec![]).await, 2);
}

fn spawn(f: &Fleet, tenant: &TenantId, history: &std::path::Path) -> PtySession {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantshell"));
    cmd.current_dir(f.dir.path())
        .arg(tenant.as_str())
        .env("DATABASE_URL", &f.pg.url)
        .env("TENANCY_SHELL_HISTORY", history)
        .env("TERM", "xterm-256color")
        .env("NO_COLOR", "1")
        .env_remove("TENANCY_SECRET_KEY")
        // The key the tenants' login role passwords were encrypted with.
        .env("TENANCY_SECRET_KEY_FILE", f.dir.path().join("key"));
    spawn_command(cmd, Some(TIMEOUT_MS)).expect("spawn tenantshell in a pty")
}

/// What the terminal shows until `text` appears (then consumed).
fn until(session: &mut PtySession, text: &str) -> String {
    session.exp_string(text).unwrap_or_else(|e| panic!("waiting for {text:?}: {e}"))
}

#[tokio::test]
async fn interactive_prompt_in_schema_and_table_modes() {
    let Some(f) = fleet().await else { return };
    for (own, other, mode, tables) in
        [(&f.schema[0], &f.schema[1], "schema", "(5 rows)"), (&f.table[0], &f.table[1], "table", "(4 rows)")]
    {
        let history = f.dir.path().join(format!("history-{own}"));
        let mut session = spawn(&f, own, &history);
        let prompt = format!("{own}=> ");
        until(&mut session, &format!("Tenant '{own}' ({mode} isolation"));
        until(&mut session, &prompt);

        type_text(&mut session, "\\dt\r");
        let listed = until(&mut session, tables);
        assert!(listed.contains("projects") && listed.contains("tenant_users"), "{listed}");
        until(&mut session, &prompt);

        // An error is printed and the shell goes on.
        type_text(&mut session, "SELECT nope FROM projects;\r");
        until(&mut session, "ERROR: column \"nope\" does not exist");
        until(&mut session, &prompt);

        // A statement over two lines: the second line's prompt says it continues.
        type_text(&mut session, "SELECT name FROM projects\r");
        until(&mut session, &format!("{own}-> "));
        type_text(&mut session, "ORDER BY name;\r");
        let rows = until(&mut session, "(2 rows)");
        assert!(rows.contains(&format!(" {own}-one\r\n {own}-two\r\n")), "{rows:?}");
        assert!(!rows.contains(other.as_str()), "{own} sees {other}: {rows}");
        until(&mut session, &prompt);

        // Ctrl-C drops the line being typed.
        type_text(&mut session, "SELECT 'dropped'");
        type_text(&mut session, "\u{3}");
        until(&mut session, &prompt);
        type_text(&mut session, "SELECT 'kept' AS word;\r");
        let shown = until(&mut session, "(1 row)");
        assert!(shown.contains(" kept\r\n"), "{shown:?}");

        type_text(&mut session, "\\q\r");
        session.exp_eof().expect("\\q quits");
        match session.process().wait().unwrap() {
            WaitStatus::Exited(_, code) => assert_eq!(code, 0),
            other => panic!("{other:?}"),
        }
        let saved = std::fs::read_to_string(&history).expect("history saved");
        assert!(saved.contains("\\dt") && saved.contains("SELECT nope FROM projects;"), "{saved}");
        assert!(!saved.contains("dropped"), "{saved}");
    }
}

#[test]
fn help_documents_every_flag_and_the_exit_codes() {
    let out = Command::new(env!("CARGO_BIN_EXE_tenantshell")).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = text(&out.stdout);
    for needle in [
        "[TENANT_ID]",
        "<TENANT_ID|--tenants <IDS>|--all|--isolation <TYPE>>",
        "-c, --command <SQL>",
        "--tenants <IDS>",
        "--all",
        "--isolation <TYPE>",
        "-j, --jobs <N>",
        "--write",
        "--json",
        "Fleet SQL",
        "--history-file <PATH>",
        "--no-history",
        "--database-url",
        "TENANCY_SHELL_HISTORY",
        "\\dt",
        "\\q",
        "1 the -c statement failed",
        "6 no such tenant",
        "no security boundary",
    ] {
        assert!(help.contains(needle), "missing {needle} in:\n{help}");
    }
}
