//! `createtenant` run as a process with flags (no terminal): outputs, exit codes and the
//! state left in the master database.

use std::process::{Command, Output, Stdio};

use sea_orm::Database;
use tenancy_test_support::{PgMaster, TempDir, column_strings, unique_name};

fn createtenant(dir: &TempDir, database_url: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_createtenant"));
    cmd.current_dir(dir.path())
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("TENANCY_SECRET_KEY")
        .env_remove("TENANT_DB_PASSWORD")
        .env("TENANCY_SECRET_KEY_FILE", dir.path().join("secret.key"))
        .stdin(Stdio::null());
    if let Some(url) = database_url {
        cmd.env("DATABASE_URL", url);
    }
    cmd.output().expect("run createtenant")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn registry_rows(url: &str) -> Vec<String> {
    let db = Database::connect(url.to_owned()).await.expect("master");
    column_strings(
        &db,
        "SELECT tenant_id || ':' || isolation_type || ':' || status FROM tenancy_tenants ORDER BY tenant_id",
        vec![],
    )
    .await
}

#[tokio::test]
async fn default_master_is_sqlite_in_the_working_folder() {
    let dir = TempDir::new();
    let out = createtenant(
        &dir,
        None,
        &[
            "--id",
            "acme",
            "--name",
            "ACME Corporation",
            "--isolation",
            "database",
            "--create-database",
            "--db-name",
            "acme_db",
            "--migrate",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "Starting tenant creation...\n✓ Tenant 'acme' created successfully\n✓ Database 'acme_db' created (./acme_db.db)\n\
             ✓ Migrations completed\nTenant is ready to use\n"
        )
    );
    assert!(dir.path().join("tenancy.db").exists());
    assert!(dir.path().join("acme_db.db").exists());
    let url = format!("sqlite://{}/tenancy.db", dir.path().display());
    assert_eq!(registry_rows(&url).await, ["acme:database:ready"]);
}

#[tokio::test]
async fn every_mode_on_sqlite_by_flags() {
    let dir = TempDir::new();
    let url = dir.sqlite_master_url();
    for (id, isolation, line) in [
        ("tabled", "table", "✓ Shared tables: rows are scoped by tenant_id 'tabled'"),
        ("cached", "cache", "Nothing to migrate: cache tenants have no relational storage"),
    ] {
        let out = createtenant(
            &dir,
            Some(&url),
            &["--id", id, "--name", id, "--isolation", isolation, "--migrate", "--no-input"],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains(line), "{}", text(&out.stdout));
    }
    assert_eq!(registry_rows(&url).await, ["cached:cache:ready", "tabled:table:ready"]);
    // Schema isolation needs PostgreSQL: a clear error, exit 2, nothing created.
    let out = createtenant(&dir, Some(&url), &["--id", "globex", "--name", "G", "--isolation", "schema", "--migrate"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "Error: Schema isolation needs a PostgreSQL master database, and this master is SQLite; database, table \
         and cache isolation work on any master\n  hint: use database, table or cache isolation, or set DATABASE_URL \
         (--database-url) to a postgres:// URL\n",
    );
    assert_eq!(registry_rows(&url).await.len(), 2);
}

#[tokio::test]
async fn errors_are_one_clear_line_with_documented_exit_codes_and_no_state() {
    let dir = TempDir::new();
    let url = dir.sqlite_master_url();
    let ok = createtenant(&dir, Some(&url), &["--id", "acme", "--name", "A", "--isolation", "cache"]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));

    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (
            vec![
                "--id".into(),
                "acme".into(),
                "--name".into(),
                "A".into(),
                "--isolation".into(),
                "table".into(),
                "--no-migrate".into(),
            ],
            3,
            "Error: Tenant with ID 'acme' already exists\n",
        ),
        (
            vec!["--id".into(), "zeta".into(), "--name".into(), "Z".into(), "--isolation".into(), "shared".into()],
            2,
            "Error: Invalid isolation type\nValid options: database, schema, table, cache\n",
        ),
        (
            vec!["--id".into(), "has space".into(), "--name".into(), "Z".into(), "--isolation".into(), "cache".into()],
            2,
            "Error: Invalid tenant ID 'has space': it contains a space.",
        ),
        (
            vec!["--id".into(), "quo'te".into(), "--name".into(), "Z".into(), "--isolation".into(), "cache".into()],
            2,
            "Error: Invalid tenant ID 'quo'te': it contains '''.",
        ),
        (
            vec!["--id".into(), "semi;colon".into(), "--name".into(), "Z".into(), "--isolation".into(), "cache".into()],
            2,
            "Error: Invalid tenant ID 'semi;colon': it contains ';'.",
        ),
        (
            vec!["--id".into(), "Upper".into(), "--name".into(), "Z".into(), "--isolation".into(), "cache".into()],
            2,
            "Error: Invalid tenant ID 'Upper': it starts with the upper-case letter 'U'.",
        ),
        (
            vec!["--id".into(), "public".into(), "--name".into(), "Z".into(), "--isolation".into(), "cache".into()],
            2,
            "Error: Invalid tenant ID 'public': it is a reserved name.",
        ),
        (
            vec!["--id".into(), "pg_x".into(), "--name".into(), "Z".into(), "--isolation".into(), "cache".into()],
            2,
            "Error: Invalid tenant ID 'pg_x': it is a reserved name.",
        ),
        (
            vec!["--id".into(), "a".repeat(64), "--name".into(), "Z".into(), "--isolation".into(), "cache".into()],
            2,
            "it is 64 bytes long",
        ),
        (
            vec![
                "--id".into(),
                "zeta".into(),
                "--name".into(),
                "Z".into(),
                "--isolation".into(),
                "database".into(),
                "--create-database".into(),
                "--db-name".into(),
                "bad name".into(),
                "--no-migrate".into(),
            ],
            2,
            "Error: Invalid database name 'bad name': it contains a space.",
        ),
        (
            vec!["--id".into(), "zeta".into(), "--isolation".into(), "cache".into()],
            2,
            "Error: Missing tenant name: pass --name <NAME> (there is no terminal to ask on)\n",
        ),
        (vec!["--no-input".into()], 2, "Error: Missing tenant ID: pass --id <ID> (--no-input was given)\n"),
    ];
    for (args, code, stderr) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = createtenant(&dir, Some(&url), &args);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).starts_with(stderr) || text(&out.stderr).contains(stderr),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(registry_rows(&url).await, ["acme:cache:ready"], "{args:?} changed the registry");
    }
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files.len(), 1, "only the master file: {files:?}");
}

/// The core's errors say what is wrong in terms of values; the command adds the hint
/// naming its own flag and prompt.
#[tokio::test]
async fn database_file_errors_end_with_the_flag_that_fixes_them() {
    let dir = TempDir::new();
    let url = dir.sqlite_master_url();
    let taken = dir.path().join("taken_db.db");
    std::fs::write(&taken, b"").unwrap();
    let database = |name: &str, create: &str| {
        createtenant(
            &dir,
            Some(&url),
            &["--id", "zeta", "--name", "Z", "--isolation", "database", create, "--db-name", name, "--no-migrate"],
        )
    };

    let out = database("taken_db", "--create-database");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        format!(
            "Error: Database file '{}' already exists\n  hint: answer 'n' to \"create the database now\" \
             (--no-create-database) to use it, or choose another name\n",
            taken.display()
        )
    );

    let out = database("absent_db", "--no-create-database");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        format!(
            "Error: Database '{}' does not exist, and this run was told to use an existing one\n  hint: answer 'y' \
             to \"create the database now\" (--create-database) to create it\n",
            dir.path().join("absent_db.db").display()
        )
    );
    assert!(registry_rows(&url).await.is_empty());
}

#[tokio::test]
async fn unreadable_secret_key_is_exit_5_and_nothing_created() {
    let Some(pg) = PgMaster::create().await else { return };
    let dir = TempDir::new();
    let user = unique_name("u");
    let db = unique_name("db");
    pg.track_role(&user);
    pg.track_database(&db);
    let out = Command::new(env!("CARGO_BIN_EXE_createtenant"))
        .current_dir(dir.path())
        .args(["--id", "keyless", "--name", "K", "--isolation", "database", "--create-database"])
        .args(["--db-name", &db, "--db-user", &user, "--db-host", "127.0.0.1", "--db-port", "5432", "--no-migrate"])
        .env("DATABASE_URL", &pg.url)
        .env("TENANT_DB_PASSWORD", "pw")
        .env_remove("TENANCY_SECRET_KEY")
        .env("TENANCY_SECRET_KEY_FILE", dir.path().join("missing.key"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(text(&out.stderr).starts_with("Error: Cannot read the secret key from"), "{}", text(&out.stderr));
    assert!(registry_rows(&pg.url).await.is_empty());
    assert!(!pg.admin_exists("SELECT 1 FROM pg_roles WHERE rolname = $1", &user).await);
}

#[tokio::test]
async fn postgres_database_mode_by_flags_and_errors() {
    let Some(pg) = PgMaster::create().await else { return };
    let dir = TempDir::new();
    let user = unique_name("u");
    let db = unique_name("db");
    pg.track_role(&user);
    pg.track_database(&db);
    let run = |id: &str, port: &str| {
        Command::new(env!("CARGO_BIN_EXE_createtenant"))
            .current_dir(dir.path())
            .args(["--id", id, "--name", "ACME Corporation", "--isolation", "database", "--create-database"])
            .args(["--db-name", &db, "--db-user", &user, "--db-host", "127.0.0.1", "--db-port", port, "--migrate"])
            .env("DATABASE_URL", &pg.url)
            .env("TENANT_DB_PASSWORD", "correct horse")
            .env_remove("TENANCY_SECRET_KEY")
            .env_remove("TENANCY_SECRET_KEY_FILE")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = run("pgacme", "70000");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stderr), "Error: Invalid port '70000': expected a number from 1 to 65535\n");
    let out = run("pgacme", "1");
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("Error: Cannot connect to database server\n"), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("Connection refused"), "{}", text(&out.stderr));
    // The key was needed (to encrypt the password) before the server was found missing:
    // its file was generated, and the operator told where.
    assert!(text(&out.stderr).starts_with("Generated the secret key file"), "{}", text(&out.stderr));
    assert!(registry_rows(&pg.url).await.is_empty());

    let out = run("pgacme", "5432");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "Starting tenant creation...\n✓ Tenant 'pgacme' created successfully\n✓ Database '{db}' created\n\
             ✓ Migrations completed\nTenant is ready to use\n"
        )
    );
    // The generated key file is private to its owner.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join(".tenancy-secret.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(!text(&out.stdout).contains("correct horse") && !text(&out.stderr).contains("correct horse"));
    assert_eq!(registry_rows(&pg.url).await, ["pgacme:database:ready"]);
    assert!(pg.admin_exists("SELECT 1 FROM pg_database WHERE datname = $1", &db).await);

    // Same database again under another id: refused, the existing database untouched.
    let out = run("pgacme2", "5432");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).starts_with(&format!("Error: Database user '{user}' already exists")),
        "{}",
        text(&out.stderr)
    );
    assert!(pg.admin_exists("SELECT 1 FROM pg_database WHERE datname = $1", &db).await);
    assert_eq!(registry_rows(&pg.url).await, ["pgacme:database:ready"]);
}

#[test]
fn help_documents_every_flag_and_the_exit_codes() {
    let out = Command::new(env!("CARGO_BIN_EXE_createtenant")).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = text(&out.stdout);
    for flag in [
        "--id",
        "--name",
        "--isolation",
        "--db-name",
        "--db-user",
        "--db-host",
        "--db-port",
        "--create-database",
        "--no-create-database",
        "--migrate",
        "--no-migrate",
        "--no-input",
        "--database-url",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
    for needle in ["TENANT_DB_PASSWORD", "TENANCY_SECRET_KEY", "Exit codes", "130 cancelled"] {
        assert!(help.contains(needle), "{needle} missing from --help:\n{help}");
    }
    assert!(!help.contains("--password"), "passwords are never taken from flags");
}

/// A tenant migrator whose one migration creates a table, then panics.
struct Panicking;

impl sea_orm_migration::MigratorTrait for Panicking {
    fn migrations() -> Vec<Box<dyn sea_orm_migration::MigrationTrait>> {
        vec![Box::new(PanickingMigration)]
    }
}

struct PanickingMigration;

impl sea_orm_migration::MigrationName for PanickingMigration {
    fn name(&self) -> &str {
        "m20260101_000001_panics"
    }
}

#[sea_orm_migration::async_trait::async_trait]
#[allow(elided_lifetimes_in_paths, reason = "async_trait signatures must match sea-orm-migration's trait")]
impl sea_orm_migration::MigrationTrait for PanickingMigration {
    async fn up(&self, manager: &sea_orm_migration::SchemaManager) -> Result<(), sea_orm::DbErr> {
        use sea_orm::ConnectionTrait as _;
        manager.get_connection().execute_unprepared("CREATE TABLE half_done (id INTEGER)").await?;
        panic!("boom: the migration's own bug");
    }
}

/// Set to the arguments (a JSON array) for [`createtenant_with_a_panicking_migrator`].
const PANICKING_CHILD: &str = "TENANCY_TEST_PANICKING_CREATETENANT";

/// Not a test of its own: `createtenant` with [`Panicking`] as the app's migrator, run
/// when this test binary is started again by [`createtenant_panicking`] with the
/// command's arguments in [`PANICKING_CHILD`] (a command reports on its process's stderr
/// and exit code, which only a process of its own shows). A no-op otherwise.
#[test]
fn createtenant_with_a_panicking_migrator() {
    use clap::Parser as _;
    let Ok(args) = std::env::var(PANICKING_CHILD) else { return };
    let args: Vec<String> = serde_json::from_str(&args).expect("arguments");
    let args =
        tenancy_migrate::cli::CreateTenantArgs::try_parse_from(std::iter::once("createtenant".to_owned()).chain(args))
            .expect("valid arguments");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let code = runtime
        .block_on(tenancy_migrate::cli::createtenant_with_args(args, tenancy_migrate::Migrators::new(Panicking)));
    // `ExitCode` has no number to read back; find the one it equals.
    let code = (0..=u8::MAX).find(|n| std::process::ExitCode::from(*n) == code).expect("an exit code");
    #[allow(clippy::exit, reason = "the child's exit code is what the parent test checks")]
    std::process::exit(code.into());
}

/// Runs `createtenant` with a panicking migrator (see
/// [`createtenant_with_a_panicking_migrator`]) in `dir`, its master at `url`.
fn createtenant_panicking(dir: &TempDir, url: &str, args: &[&str]) -> Output {
    let mut args: Vec<&str> = args.to_vec();
    args.extend(["--database-url", url, "--migrate", "--no-input"]);
    Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "--exact",
            "createtenant_cli::createtenant_with_a_panicking_migrator",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .current_dir(dir.path())
        .env(PANICKING_CHILD, serde_json::to_string(&args).expect("json"))
        .env_remove("DATABASE_URL")
        .env_remove("TENANCY_SECRET_KEY")
        // The default key file in `dir`, generated when a schema tenant's login needs it.
        .env_remove("TENANCY_SECRET_KEY_FILE")
        .stdin(Stdio::null())
        .output()
        .expect("run createtenant")
}

/// The stderr of a run whose migration panicked: a failure (not a cancellation) that
/// says the migration panicked and that what the run created was removed.
fn assert_reports_the_panic(out: &Output, id: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "Error: Creating tenant '{id}' failed while running migrations; everything this run created was removed\n"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "  caused by: Migrating tenant '{id}' failed: migration m20260101_000001_panics panicked: boom: the \
             migration's own bug\n"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("Cancelled"), "{stderr}");
}

#[tokio::test]
async fn a_panicking_migration_is_a_failure_and_leaves_nothing_on_sqlite() {
    let dir = TempDir::new();
    let url = dir.sqlite_master_url();
    let out = createtenant_panicking(&dir, &url, &["--id", "tabled", "--name", "T", "--isolation", "table"]);
    assert_reports_the_panic(&out, "tabled");
    let out = createtenant_panicking(
        &dir,
        &url,
        &["--id", "filed", "--name", "F", "--isolation", "database", "--create-database", "--db-name", "filed_db"],
    );
    assert_reports_the_panic(&out, "filed");

    assert!(registry_rows(&url).await.is_empty());
    let master = Database::connect(url.clone()).await.expect("master");
    let half_done = column_strings(&master, "SELECT name FROM sqlite_master WHERE name = 'half_done'", vec![]).await;
    assert!(half_done.is_empty(), "the panicking migration's table was rolled back");
    assert!(!dir.path().join("filed_db.db").exists(), "the tenant's database file was removed");
}

#[tokio::test]
async fn a_panicking_migration_is_a_failure_and_leaves_nothing_on_postgres() {
    let Some(pg) = PgMaster::create().await else { return };
    let dir = TempDir::new();
    let id = unique_name("boom");
    let out = createtenant_panicking(&dir, &pg.url, &["--id", &id, "--name", "B", "--isolation", "schema"]);
    assert_reports_the_panic(&out, &id);
    assert!(registry_rows(&pg.url).await.is_empty());
    let master = pg.connect().await;
    assert!(!tenancy_test_support::exists(&master, "SELECT 1 FROM pg_namespace WHERE nspname = $1", &id).await);
    assert!(!pg.admin_exists("SELECT 1 FROM pg_roles WHERE rolname LIKE '%' || $1", &id).await);
}
