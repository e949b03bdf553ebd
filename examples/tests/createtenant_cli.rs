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
    assert!(
        text(&out.stderr).starts_with("Error: Schema isolation needs a PostgreSQL master database"),
        "{}",
        text(&out.stderr)
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
