//! `createtenantsuperuser` run as a process with flags (no terminal): the row it writes in
//! each isolation mode (argon2id hash, never the password), and the errors that write
//! nothing.

use std::process::{Command, Output, Stdio};

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, EntityTrait, Statement};
use tenancy::{Isolation, NewDatabase, NewTenant, Tenancy, TenantId};
use tenancy_migrate::accounts::tenant_user;
use tenancy_test_support::{PgMaster, TempDir, count, unique_name, with_database};

const PASSWORD: &str = "correct horse battery";

fn superuser(dir: &TempDir, url: &str, args: &[&str], password: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_createtenantsuperuser"));
    cmd.current_dir(dir.path())
        .args(args)
        .env("DATABASE_URL", url)
        .env_remove("TENANT_SUPERUSER_PASSWORD")
        .env_remove("TENANCY_SECRET_KEY")
        .env("TENANCY_SECRET_KEY_FILE", dir.path().join("key"))
        .stdin(Stdio::null());
    if let Some(password) = password {
        cmd.env("TENANT_SUPERUSER_PASSWORD", password);
    }
    cmd.output().expect("run createtenantsuperuser")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Flags for `--tenant <id> --username <name> --email <name>@example.com --no-input`.
fn flags<'a>(tenant: &'a str, username: &'a str, email: &'a str) -> Vec<&'a str> {
    vec!["--tenant", tenant, "--username", username, "--email", email, "--no-input"]
}

/// A row of `tenant_users` as the tests compare it.
#[derive(Debug)]
struct UserRow {
    tenant_id: String,
    username: String,
    email: String,
    password_hash: String,
    is_superuser: bool,
}

/// Every row of the user table `table` (qualified as needed), read as the superuser (no
/// row-level security), ordered by tenant and username.
async fn users(db: &DatabaseConnection, table: &str) -> Vec<UserRow> {
    db.query_all_raw(Statement::from_string(
        db.get_database_backend(),
        format!(
            "SELECT tenant_id, username, email, password_hash, is_superuser FROM {table} ORDER BY tenant_id, username"
        ),
    ))
    .await
    .expect("read tenant_users")
    .iter()
    .map(|row| UserRow {
        tenant_id: row.try_get_by_index(0).unwrap(),
        username: row.try_get_by_index(1).unwrap(),
        email: row.try_get_by_index(2).unwrap(),
        password_hash: row.try_get_by_index(3).unwrap(),
        is_superuser: row.try_get_by_index(4).unwrap(),
    })
    .collect()
}

/// The row is the administrator `username` of `tenant`, its password stored as an
/// argon2id hash that verifies `password` and nothing else.
fn assert_admin(row: &UserRow, tenant: &str, username: &str, password: &str) {
    assert_eq!((row.tenant_id.as_str(), row.username.as_str()), (tenant, username));
    assert_eq!(row.email, format!("{username}@example.com"));
    assert!(row.is_superuser);
    assert!(row.password_hash.starts_with("$argon2id$v=19$"), "{}", row.password_hash);
    assert!(!row.password_hash.contains(password), "the password is stored in plain text");
    let hash = PasswordHash::new(&row.password_hash).expect("a PHC string");
    assert!(argon2::Argon2::default().verify_password(password.as_bytes(), &hash).is_ok(), "hash does not verify");
    assert!(argon2::Argon2::default().verify_password(b"correct horse batterY", &hash).is_err());
}

async fn create(tenancy: &Tenancy, id: &str, isolation: Isolation, database: Option<NewDatabase>) -> TenantId {
    let id: TenantId = id.parse().unwrap();
    let hooks = tenancy_migrate::MigrateOnCreate::new(&example_app::Migrator);
    let new = NewTenant::new(id.clone(), format!("Tenant {id}"), isolation)
        .expect("a valid new tenant")
        .database(database)
        .migrate(true);
    tenancy.create_tenant(new, &hooks).await.expect("create tenant");
    id
}

#[tokio::test]
async fn postgres_database_schema_and_table_modes() {
    let Some(pg) = PgMaster::create().await else { return };
    let dir = TempDir::new();
    let tenancy = pg.tenancy(&dir).await;
    let new_db = pg.new_database("tenant db password");
    let db_name = new_db.name().to_owned();
    let dbt = create(&tenancy, &unique_name("dbt"), Isolation::Database, Some(new_db)).await;
    let sch = create(&tenancy, &unique_name("sch"), Isolation::Schema, None).await;
    let ta = create(&tenancy, &unique_name("ta"), Isolation::Table, None).await;
    let tb = create(&tenancy, &unique_name("tb"), Isolation::Table, None).await;
    let master = pg.connect().await;

    for (tenant, location) in [
        (&dbt, "database isolation".to_owned()),
        (&sch, format!("schema isolation, schema '{sch}'")),
        (&ta, "table isolation, shared tables of the master database".to_owned()),
        (&tb, "table isolation, shared tables of the master database".to_owned()),
    ] {
        let out = superuser(&dir, &pg.url, &flags(tenant.as_str(), "admin", "admin@example.com"), Some(PASSWORD));
        assert!(out.status.success(), "{tenant}: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(
            stdout.starts_with(&format!("✓ Superuser 'admin' created in tenant '{tenant}' ({location}")),
            "{stdout}"
        );
        assert!(!stdout.contains(PASSWORD) && !text(&out.stderr).contains(PASSWORD));
    }

    // Each row where its mode keeps the tenant's data, hashed.
    let tenant_db = Database::connect(with_database(&pg.url, &db_name)).await.unwrap();
    let rows = users(&tenant_db, "tenant_users").await;
    assert_eq!(rows.len(), 1);
    assert_admin(&rows[0], dbt.as_str(), "admin", PASSWORD);
    let rows = users(&master, &format!("\"{sch}\".tenant_users")).await;
    assert_eq!(rows.len(), 1);
    assert_admin(&rows[0], sch.as_str(), "admin", PASSWORD);
    // Table mode: both tenants' `admin` in the shared table, each stamped with its tenant.
    let rows = users(&master, "public.tenant_users").await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let mut expected = [ta.as_str(), tb.as_str()];
    expected.sort_unstable();
    assert_admin(&rows[0], expected[0], "admin", PASSWORD);
    assert_admin(&rows[1], expected[1], "admin", PASSWORD);
    // ... under the row-level security that keeps each tenant to its own users: through
    // its handle, each table tenant sees its own `admin` only.
    let secured = "SELECT COUNT(*) FROM pg_class WHERE relname = 'tenant_users' \
                   AND relnamespace = 'public'::regnamespace AND relrowsecurity AND relforcerowsecurity";
    assert_eq!(count(&master, secured, vec![]).await, 1);
    for tenant in [&ta, &tb] {
        let handle = tenancy.tenant(tenant).await.unwrap();
        let seen = tenant_user::Entity::find().all(&handle).await.unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].tenant_id, tenant.as_str());
    }

    // A duplicate username in one tenant: exit 3, still one row (the other table tenant's
    // `admin` did not count as a duplicate above).
    for (tenant, table, conn) in [
        (&dbt, "tenant_users".to_owned(), &tenant_db),
        (&sch, format!("\"{sch}\".tenant_users"), &master),
        (&ta, "public.tenant_users".to_owned(), &master),
    ] {
        let out =
            superuser(&dir, &pg.url, &flags(tenant.as_str(), "admin", "admin@example.com"), Some("another password"));
        assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
        assert_eq!(text(&out.stderr), format!("Error: A user named 'admin' already exists in tenant '{tenant}'\n"));
        let rows = users(conn, &table).await;
        assert_eq!(rows.iter().filter(|row| row.tenant_id == tenant.as_str()).count(), 1);
        let row = rows.iter().find(|row| row.tenant_id == tenant.as_str()).unwrap();
        assert_admin(row, tenant.as_str(), "admin", PASSWORD);
    }

    // Weak passwords and bad input: exit 2, a clear line, nothing written, no password shown.
    let cases: [(&[&str], Option<&str>, &str); 7] = [
        (
            &["--username", "bob", "--email", "bob@example.com"],
            Some("short1"),
            "The password is too weak: it is shorter than 10 characters",
        ),
        (
            &["--username", "bob", "--email", "bob@example.com"],
            Some("12345678901234"),
            "The password is too weak: it consists of digits only",
        ),
        (
            &["--username", "bobthebuilder", "--email", "bob@example.com"],
            Some("BobTheBuilder"),
            "The password is too weak: it is the username",
        ),
        (
            &["--username", "bob", "--email", "bob@example.com"],
            None,
            "Missing password: set TENANT_SUPERUSER_PASSWORD (--no-input was given; passwords are never taken from flags)",
        ),
        (
            &["--username", "bob", "--email", "not-an-email"],
            Some(PASSWORD),
            "Invalid email address 'not-an-email': expected the form name@example.com",
        ),
        (
            &["--username", "bob smith", "--email", "bob@example.com"],
            Some(PASSWORD),
            "Invalid username 'bob smith': it contains ' '; use letters, digits and @ . + - _ only",
        ),
        (
            &["--email", "bob@example.com"],
            Some(PASSWORD),
            "Missing username: pass --username <NAME> (--no-input was given)",
        ),
    ];
    for tenant in [&sch, &ta] {
        for (args, password, message) in &cases {
            let mut all = vec!["--tenant", tenant.as_str(), "--no-input"];
            all.extend_from_slice(args);
            let out = superuser(&dir, &pg.url, &all, *password);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
            assert_eq!(text(&out.stderr), format!("Error: {message}\n"));
            if let Some(password) = password {
                assert!(!text(&out.stderr).contains(password) && !text(&out.stdout).contains(password));
            }
        }
    }
    assert_eq!(users(&master, &format!("\"{sch}\".tenant_users")).await.len(), 1);
    assert_eq!(users(&master, "public.tenant_users").await.len(), 2);

    // An unknown tenant: exit 6. A cache tenant: a clear error, exit 2.
    let out = superuser(&dir, &pg.url, &flags("nosuchtenant", "admin", "admin@example.com"), Some(PASSWORD));
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "Error: Tenant 'nosuchtenant' does not exist\n");
    let cache = create(&tenancy, &unique_name("cached"), Isolation::Cache, None).await;
    let out = superuser(&dir, &pg.url, &flags(cache.as_str(), "admin", "admin@example.com"), Some(PASSWORD));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        format!(
            "Error: Tenant '{cache}' uses cache isolation and has no relational storage; a superuser needs a \
             database, schema or table tenant\n"
        )
    );
    // No tenant and no terminal: asked for by flag.
    let out = superuser(&dir, &pg.url, &["--username", "bob", "--email", "bob@example.com"], Some(PASSWORD));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "Error: Missing tenant: pass --tenant <ID> (there is no terminal to ask on)\n");
    assert_eq!(users(&master, "public.tenant_users").await.len(), 2);
}

#[tokio::test]
async fn sqlite_database_mode() {
    let dir = TempDir::new();
    let url = dir.sqlite_master_url();
    let tenancy = Tenancy::builder(url.clone()).secret_key_file(dir.path().join("key")).connect().await.unwrap();
    let database = NewDatabase::create("acme_db");
    let acme = create(&tenancy, "acme", Isolation::Database, Some(database)).await;

    let out = superuser(&dir, &url, &flags(acme.as_str(), "admin", "admin@example.com"), Some(PASSWORD));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let location = tenancy.describe_location(&tenancy.get_tenant(&acme).await.unwrap());
    assert_eq!(
        text(&out.stdout),
        format!("✓ Superuser 'admin' created in tenant 'acme' (database isolation, {location})\n")
    );
    let tenant_db = Database::connect(format!("sqlite://{}/acme_db.db", dir.path().display())).await.unwrap();
    let rows = users(&tenant_db, "tenant_users").await;
    assert_eq!(rows.len(), 1);
    assert_admin(&rows[0], "acme", "admin", PASSWORD);

    let out = superuser(&dir, &url, &flags("acme", "admin", "admin@example.com"), Some(PASSWORD));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let out = superuser(&dir, &url, &flags("acme", "carol", "carol@example.com"), Some("carol@example.com"));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "Error: The password is too weak: it is the email address\n");
    assert_eq!(users(&tenant_db, "tenant_users").await.len(), 1);

    // A tenant whose migrations never ran has no user table: said so, with the fix, before
    // any password is hashed.
    let database = NewDatabase::create("bare_db");
    let new = NewTenant::new("bare", "Bare", Isolation::Database).expect("a valid new tenant").database(database);
    tenancy.create_tenant(new, &()).await.unwrap();
    let out = superuser(&dir, &url, &flags("bare", "admin", "admin@example.com"), Some(PASSWORD));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        "Error: Cannot use the user table of tenant 'bare' (with the accounts module: add \
         tenancy_migrate::accounts::migrations() to the tenant migrator and run migratetenant)\n  \
         caused by: Query Error: error returned from database: (code: 1) no such table: tenant_users\n"
    );
}

#[test]
fn help_documents_every_flag_and_the_exit_codes() {
    let out = Command::new(env!("CARGO_BIN_EXE_createtenantsuperuser")).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = text(&out.stdout);
    for needle in [
        "--tenant <ID>",
        "--username <NAME>",
        "--email <EMAIL>",
        "--no-input",
        "--database-url",
        "TENANT_SUPERUSER_PASSWORD",
        "at least 10 characters",
        "3 username exists in the tenant",
        "6 no such tenant",
    ] {
        assert!(help.contains(needle), "missing {needle} in:\n{help}");
    }
}

/// The wrong secret key: the tenant's login role password cannot be decrypted, which is
/// reported as a key problem (exit 5) before any question, and nothing is written.
#[tokio::test]
async fn a_wrong_secret_key_is_reported_as_such() {
    let Some(pg) = PgMaster::create().await else { return };
    let dir = TempDir::new();
    let tenancy = pg.tenancy(&dir).await;
    let id = create(&tenancy, &unique_name("keyed"), Isolation::Schema, None).await;
    let out = Command::new(env!("CARGO_BIN_EXE_createtenantsuperuser"))
        .current_dir(dir.path())
        .args(flags(id.as_str(), "admin", "admin@example.com"))
        .env("DATABASE_URL", &pg.url)
        .env("TENANT_SUPERUSER_PASSWORD", PASSWORD)
        // A valid key, but not the one the tenant's secrets were encrypted with.
        .env("TENANCY_SECRET_KEY", "BwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSY=")
        .stdin(Stdio::null())
        .output()
        .expect("run createtenantsuperuser");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.starts_with("Error: Cannot decrypt"), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    let master = pg.connect().await;
    assert!(users(&master, &format!("\"{id}\".tenant_users")).await.is_empty());
}

/// Table tenants on a SQLite master: the command reaches `tenant_users` through the
/// handle's allowlist (the binary links the app's models and the accounts model), one
/// administrator per tenant, and the same username in another tenant is no clash.
#[tokio::test]
async fn sqlite_table_mode() {
    let dir = TempDir::new();
    let url = dir.sqlite_master_url();
    let tenancy = Tenancy::builder(url.clone()).secret_key_file(dir.path().join("key")).connect().await.unwrap();
    let ta = create(&tenancy, "ta", Isolation::Table, None).await;
    let tb = create(&tenancy, "tb", Isolation::Table, None).await;
    for tenant in [&ta, &tb] {
        let out = superuser(&dir, &url, &flags(tenant.as_str(), "admin", "admin@example.com"), Some(PASSWORD));
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let out = superuser(&dir, &url, &flags(ta.as_str(), "admin", "admin@example.com"), Some(PASSWORD));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let master = Database::connect(&url).await.unwrap();
    let rows = users(&master, "tenant_users").await;
    assert_eq!(rows.len(), 2);
    assert_admin(&rows[0], "ta", "admin", PASSWORD);
    assert_admin(&rows[1], "tb", "admin", PASSWORD);
}
