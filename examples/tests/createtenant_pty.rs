//! `createtenant` driven through a pseudo-terminal, the way a person runs it: the
//! documented transcript, the masked password, Esc.

use crate::pty;

use std::process::Command;

use pty::{answer, exit_code, plain, type_text};
use rexpect::session::{PtySession, spawn_command};
use sea_orm::Database;
use tenancy_test_support::{PgMaster, TempDir, column_strings, unique_name};

const TIMEOUT_MS: u64 = 30_000;

fn spawn(dir: &TempDir, database_url: &str) -> PtySession {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_createtenant"));
    cmd.current_dir(dir.path())
        .env("DATABASE_URL", database_url)
        .env("TERM", "xterm-256color")
        .env("NO_COLOR", "1")
        .env_remove("TENANT_DB_PASSWORD")
        .env_remove("TENANCY_SECRET_KEY")
        .env_remove("TENANCY_SECRET_KEY_FILE");
    spawn_command(cmd, Some(TIMEOUT_MS)).expect("spawn createtenant in a pty")
}

#[tokio::test]
async fn transcript_database_mode_on_postgres() {
    let Some(pg) = PgMaster::create().await else { return };
    let dir = TempDir::new();
    let id = unique_name("acme");
    let db = unique_name("acme_db");
    let user = unique_name("acme_user");
    pg.track_database(&db);
    pg.track_role(&user);
    let password = "hunter2pass";

    let (mut session, mut transcript) = (spawn(&dir, &pg.url), String::new());
    session.exp_string("Starting tenant creation...").expect("banner");
    answer(&mut session, "Enter tenant ID (unique):", &id, &mut transcript);
    answer(&mut session, "Enter tenant name:", "ACME Corporation", &mut transcript);
    answer(&mut session, "Select isolation type (database/schema/table/cache):", "database", &mut transcript);
    answer(&mut session, "Do you want to create the database now? (y/n):", "y", &mut transcript);
    answer(&mut session, "Enter database name for tenant:", &db, &mut transcript);
    answer(&mut session, "Enter database user:", &user, &mut transcript);
    answer(&mut session, "Enter database password:", password, &mut transcript);
    answer(&mut session, "Enter database host:", "localhost", &mut transcript);
    answer(&mut session, "Enter database port (default: 5432):", "5432", &mut transcript);
    answer(&mut session, "Do you want to run migrations for this tenant now? (y/n):", "y", &mut transcript);
    let rest = session.exp_eof().expect("createtenant finishes");
    transcript.push_str(&rest);
    assert_eq!(exit_code(&session), 0, "{}", plain(&transcript));

    let screen = plain(&transcript);
    for line in [
        format!("Enter tenant ID (unique): {id}"),
        "Enter tenant name: ACME Corporation".to_owned(),
        "Select isolation type (database/schema/table/cache): database".to_owned(),
        "Do you want to create the database now? (y/n): y".to_owned(),
        format!("Enter database name for tenant: {db}"),
        format!("Enter database user: {user}"),
        format!("Enter database password: {}", "*".repeat(password.len())),
        "Enter database host: localhost".to_owned(),
        "Enter database port (default: 5432): 5432".to_owned(),
        "Do you want to run migrations for this tenant now? (y/n): y".to_owned(),
        format!("✓ Tenant '{id}' created successfully"),
        format!("✓ Database '{db}' created"),
        "✓ Migrations completed".to_owned(),
        "Tenant is ready to use".to_owned(),
    ] {
        assert!(screen.contains(&line), "missing {line:?} in:\n{screen}");
    }
    assert!(!transcript.contains(password), "the password was echoed");

    let master = Database::connect(pg.url.clone()).await.unwrap();
    let rows =
        column_strings(&master, "SELECT status FROM tenancy_tenants WHERE tenant_id = $1", vec![id.into()]).await;
    assert_eq!(rows, ["ready"]);
    assert!(pg.admin_exists("SELECT 1 FROM pg_database WHERE datname = $1", &db).await);
}

#[tokio::test]
async fn transcript_schema_and_sqlite_modes() {
    // Schema mode asks no database questions and names the schema it made.
    if let Some(pg) = PgMaster::create().await {
        let dir = TempDir::new();
        let id = unique_name("globex");
        let (mut session, mut transcript) = (spawn(&dir, &pg.url), String::new());
        answer(&mut session, "Enter tenant ID (unique):", &id, &mut transcript);
        answer(&mut session, "Enter tenant name:", "Globex", &mut transcript);
        answer(&mut session, "Select isolation type (database/schema/table/cache):", "schema", &mut transcript);
        answer(&mut session, "Do you want to run migrations for this tenant now? (y/n):", "y", &mut transcript);
        transcript.push_str(&session.exp_eof().expect("finishes"));
        assert_eq!(exit_code(&session), 0, "{}", plain(&transcript));
        let screen = plain(&transcript);
        assert!(screen.contains(&format!("✓ Schema '{id}' created")), "{screen}");
        assert!(!screen.contains("Enter database"), "{screen}");
        assert!(pg.admin_exists("SELECT 1 FROM pg_database WHERE datname = $1", &pg.name).await);
    }

    // On the SQLite master, database isolation asks only the database name.
    let dir = TempDir::new();
    let url = dir.sqlite_master_url();
    let (mut session, mut transcript) = (spawn(&dir, &url), String::new());
    answer(&mut session, "Enter tenant ID (unique):", "acme", &mut transcript);
    answer(&mut session, "Enter tenant name:", "ACME Corporation", &mut transcript);
    answer(&mut session, "Select isolation type (database/schema/table/cache):", "database", &mut transcript);
    answer(&mut session, "Do you want to create the database now? (y/n):", "y", &mut transcript);
    answer(&mut session, "Enter database name for tenant:", "acme_db", &mut transcript);
    answer(&mut session, "Do you want to run migrations for this tenant now? (y/n):", "n", &mut transcript);
    transcript.push_str(&session.exp_eof().expect("finishes"));
    assert_eq!(exit_code(&session), 0, "{}", plain(&transcript));
    let screen = plain(&transcript);
    assert!(!screen.contains("Enter database user"), "{screen}");
    assert!(screen.contains("✓ Database 'acme_db' created"), "{screen}");
    assert!(!screen.contains("✓ Migrations completed"), "{screen}");
    assert!(dir.path().join("acme_db.db").exists());
}

#[tokio::test]
async fn invalid_answers_are_asked_again() {
    let dir = TempDir::new();
    let url = dir.sqlite_master_url();
    let (mut session, mut transcript) = (spawn(&dir, &url), String::new());
    answer(&mut session, "Enter tenant ID (unique):", "Bad Id", &mut transcript);
    session.exp_string("it starts with the upper-case letter 'B'").expect("the reason is shown");
    // Clear the rejected input, then type a valid id.
    type_text(&mut session, &"\u{7f}".repeat(6));
    type_text(&mut session, "okid\r");
    answer(&mut session, "Enter tenant name:", "Okay", &mut transcript);
    answer(&mut session, "Select isolation type (database/schema/table/cache):", "cache", &mut transcript);
    transcript.push_str(&session.exp_eof().expect("finishes"));
    assert_eq!(exit_code(&session), 0, "{}", plain(&transcript));
    assert!(plain(&transcript).contains("✓ Tenant 'okid' created successfully"));
}

#[tokio::test]
async fn escape_at_a_prompt_exits_quietly_with_nothing_created() {
    let dir = TempDir::new();
    let url = dir.sqlite_master_url();
    let (mut session, mut transcript) = (spawn(&dir, &url), String::new());
    answer(&mut session, "Enter tenant ID (unique):", "quitter", &mut transcript);
    session.exp_string("Enter tenant name:").expect("second prompt");
    session.send("\u{1b}").unwrap();
    session.flush().unwrap();
    let rest = session.exp_eof().expect("exits");
    assert_eq!(exit_code(&session), 130, "{}", plain(&rest));
    assert!(!plain(&rest).contains("Error"), "{}", plain(&rest));
    let master = Database::connect(url).await.unwrap();
    let rows = column_strings(&master, "SELECT tenant_id FROM tenancy_tenants", vec![]).await;
    assert!(rows.is_empty(), "{rows:?}");
}

#[tokio::test]
async fn ctrl_c_at_a_prompt_exits_quietly_with_nothing_created() {
    let dir = TempDir::new();
    let url = dir.sqlite_master_url();
    let (mut session, mut transcript) = (spawn(&dir, &url), String::new());
    answer(&mut session, "Enter tenant ID (unique):", "interrupted", &mut transcript);
    answer(&mut session, "Enter tenant name:", "Interrupted", &mut transcript);
    session.exp_string("Select isolation type").expect("third prompt");
    session.send_control('c').unwrap();
    let rest = session.exp_eof().expect("exits");
    assert_eq!(exit_code(&session), 130, "{}", plain(&rest));
    let master = Database::connect(url).await.unwrap();
    let rows = column_strings(&master, "SELECT tenant_id FROM tenancy_tenants", vec![]).await;
    assert!(rows.is_empty(), "{rows:?}");
}
