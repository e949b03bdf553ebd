//! `createtenantsuperuser` driven through a pseudo-terminal: the tenant chosen from the
//! list, the hidden password typed twice (a weak one and a mismatch asked again), Esc.
//! The password never reaches the screen.

use crate::pty;

use std::process::Command;

use pty::{answer, exit_code, expect, plain, type_text};
use rexpect::session::{PtySession, spawn_command};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use tenancy::{Isolation, NewTenant, Tenancy, TenantId};
use tenancy_migrate::accounts::{tenant_user, verify_password};
use tenancy_test_support::{PgMaster, TempDir, unique_name};

const TIMEOUT_MS: u64 = 30_000;

fn spawn(dir: &TempDir, database_url: &str) -> PtySession {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_createtenantsuperuser"));
    cmd.current_dir(dir.path())
        .env("DATABASE_URL", database_url)
        .env("TERM", "xterm-256color")
        .env("NO_COLOR", "1")
        .env_remove("TENANT_SUPERUSER_PASSWORD")
        .env_remove("TENANCY_SECRET_KEY")
        .env("TENANCY_SECRET_KEY_FILE", dir.path().join("key"));
    spawn_command(cmd, Some(TIMEOUT_MS)).expect("spawn createtenantsuperuser in a pty")
}

async fn create(tenancy: &Tenancy, id: &str, isolation: Isolation) -> TenantId {
    let id: TenantId = id.parse().unwrap();
    let hooks = tenancy_migrate::MigrateOnCreate::new(&example_app::Migrator);
    let new = NewTenant::new(id.clone(), format!("Tenant {id}"), isolation).expect("a valid new tenant").migrate(true);
    tenancy.create_tenant(new, &hooks).await.expect("create tenant");
    id
}

async fn users(tenancy: &Tenancy, tenant: &TenantId) -> Vec<tenant_user::Model> {
    let handle = tenancy.tenant(tenant).await.unwrap();
    tenant_user::Entity::find().all(&handle).await.unwrap()
}

#[tokio::test]
async fn choose_tenant_and_type_the_password_twice_in_schema_and_table_modes() {
    let Some(pg) = PgMaster::create().await else { return };
    let dir = TempDir::new();
    let tenancy = pg.tenancy(&dir).await;
    let schema = create(&tenancy, &unique_name("sch"), Isolation::Schema).await;
    let table = create(&tenancy, &unique_name("tab"), Isolation::Table).await;
    // Not offered: a cache tenant has nowhere to keep users.
    let cache = create(&tenancy, &unique_name("cac"), Isolation::Cache).await;

    for (tenant, password) in [(&schema, "Tr0ub4dor&3x"), (&table, "staple battery horse")] {
        let (mut session, mut transcript) = (spawn(&dir, &pg.url), String::new());
        expect(&mut session, "Select tenant:", &mut transcript);
        // The list shows every ready tenant with relational storage, cache ones left out.
        expect(&mut session, &format!("{table} (Tenant {table}, table)"), &mut transcript);
        // Typing filters the list; Enter picks the match.
        type_text(&mut session, tenant.as_str());
        type_text(&mut session, "\r");
        answer(&mut session, "Enter username:", "admin", &mut transcript);
        answer(&mut session, "Enter email address:", "admin@example.com", &mut transcript);
        // A weak password is refused with the reason and asked again.
        answer(&mut session, "Enter password:", "qwz9", &mut transcript);
        expect(&mut session, "The password is too weak: it is shorter than 10 characters", &mut transcript);
        // (A refused hidden answer is cleared: the next keys start afresh.)
        type_text(&mut session, password);
        type_text(&mut session, "\r");
        // A mismatch on the second typing starts over.
        answer(&mut session, "Enter password again:", "something else", &mut transcript);
        expect(&mut session, "The passwords do not match; type it again", &mut transcript);
        // Back at the first typing; its prompt line is still on the screen, so nothing
        // new is drawn to wait for.
        type_text(&mut session, password);
        type_text(&mut session, "\r");
        answer(&mut session, "Enter password again:", password, &mut transcript);
        transcript.push_str(&session.exp_eof().expect("finishes"));
        let screen = plain(&transcript);
        assert_eq!(exit_code(&session), 0, "{screen}");

        assert!(screen.contains("Enter username: admin"), "{screen}");
        assert!(screen.contains("Enter email address: admin@example.com"), "{screen}");
        assert!(screen.contains(&format!("✓ Superuser 'admin' created in tenant '{tenant}'")), "{screen}");
        assert!(!screen.contains(cache.as_str()), "a cache tenant was offered:\n{screen}");
        // Nothing of any typed password reached the terminal, not even as its length.
        for typed in [password, "qwz9", "something else"] {
            assert!(!transcript.contains(typed), "{typed:?} was echoed:\n{screen}");
        }
        assert!(!screen.contains(&"*".repeat(password.len())), "{screen}");

        let rows = users(&tenancy, tenant).await;
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].username.as_str(), rows[0].tenant_id.as_str()), ("admin", tenant.as_str()));
        assert!(rows[0].is_superuser);
        assert!(rows[0].password_hash.starts_with("$argon2id$"), "{}", rows[0].password_hash);
        assert!(verify_password(password, &rows[0].password_hash));
        assert!(!verify_password("something else", &rows[0].password_hash));
    }
}

#[tokio::test]
async fn escape_at_the_password_writes_nothing() {
    let Some(pg) = PgMaster::create().await else { return };
    let dir = TempDir::new();
    let tenancy = pg.tenancy(&dir).await;
    let table = create(&tenancy, &unique_name("tab"), Isolation::Table).await;

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_createtenantsuperuser"));
    cmd.args(["--tenant", table.as_str(), "--username", "admin"])
        .current_dir(dir.path())
        .env("DATABASE_URL", &pg.url)
        .env("TERM", "xterm-256color")
        .env("NO_COLOR", "1")
        .env_remove("TENANT_SUPERUSER_PASSWORD")
        .env_remove("TENANCY_SECRET_KEY")
        // The key the tenant's login role password was encrypted with.
        .env("TENANCY_SECRET_KEY_FILE", dir.path().join("key"));
    let mut session = spawn_command(cmd, Some(TIMEOUT_MS)).unwrap();
    let mut transcript = String::new();
    // Flags given are not asked again.
    answer(&mut session, "Enter email address:", "admin@example.com", &mut transcript);
    answer(&mut session, "Enter password:", "staple battery horse", &mut transcript);
    expect(&mut session, "Enter password again:", &mut transcript);
    // Esc at the second typing goes back to the first (inquire), Esc there cancels.
    session.send("\u{1b}").unwrap();
    session.flush().unwrap();
    // (The first prompt's line is still on the screen: nothing is redrawn to wait for.)
    std::thread::sleep(std::time::Duration::from_millis(300));
    session.send("\u{1b}").unwrap();
    session.flush().unwrap();
    transcript.push_str(&session.exp_eof().expect("exits"));
    let screen = plain(&transcript);
    assert_eq!(exit_code(&session), 130, "{screen}");
    assert!(!screen.contains("Enter username"), "{screen}");
    assert!(!screen.contains("Error"), "{screen}");
    assert!(!transcript.contains("staple battery horse"));
    assert!(users(&tenancy, &table).await.is_empty());
    // Not even another tenant's view: the shared table is empty.
    let master = pg.connect().await;
    let all = tenant_user::Entity::find().filter(tenant_user::Column::Username.eq("admin")).all(&master).await.unwrap();
    assert!(all.is_empty());
}
