//! Tenant provisioning against the real PostgreSQL server: catalogs, grants, SCRAM,
//! failures after every step, races, and never touching what existed before.

use crate::common;

use common::FailAfter;
use example_app::Migrator;
use sea_orm::{ConnectionTrait, Database};
use tenancy::secrets::Password;
use tenancy::{Error, Isolation, NewDatabase, NewTenant, ProvisionStep, Tenancy};
use tenancy_migrate::MigrateOnCreate;
use tenancy_test_support::{PgMaster, TempDir, column_strings, count, unique_name};

struct Ctx {
    pg: PgMaster,
    tenancy: Tenancy,
    _dir: TempDir,
}

async fn ctx() -> Option<Ctx> {
    let pg = PgMaster::create().await?;
    let dir = TempDir::new();
    let tenancy = pg.tenancy(&dir).await;
    Some(Ctx { pg, tenancy, _dir: dir })
}

fn tenant(id: &str, isolation: Isolation) -> NewTenant {
    NewTenant::new(id, format!("{id} Corporation"), isolation).expect("a valid new tenant").migrate(true)
}

impl Ctx {
    /// A database request with names tracked for clean-up.
    fn database(&self, create: bool) -> (NewDatabase, String, String) {
        let db = unique_name("db");
        let user = unique_name("u");
        self.pg.track_database(&db);
        self.pg.track_role(&user);
        (
            (if create { NewDatabase::create(db.clone()) } else { NewDatabase::existing(db.clone()) })
                .login(user.clone(), Password::new("s3cret pass'word"))
                .server("127.0.0.1", 5432),
            db,
            user,
        )
    }

    async fn role_exists(&self, role: &str) -> bool {
        self.pg.admin_exists("SELECT 1 FROM pg_roles WHERE rolname = $1", role).await
    }

    /// The login role a schema or table tenant `id` gets on this master.
    async fn login_role(&self, id: &str) -> String {
        let prefix = tenancy::rls::tenant_role_prefix(self.tenancy.master()).await.unwrap();
        format!("{prefix}{id}")
    }

    async fn database_exists(&self, db: &str) -> bool {
        self.pg.admin_exists("SELECT 1 FROM pg_database WHERE datname = $1", db).await
    }

    async fn schema_exists(&self, schema: &str) -> bool {
        let master = self.pg.connect().await;
        tenancy_test_support::exists(&master, "SELECT 1 FROM pg_namespace WHERE nspname = $1", schema).await
    }

    async fn registry_ids(&self) -> Vec<String> {
        self.tenancy.tenants().await.unwrap().into_iter().map(|t| t.id().to_string()).collect()
    }
}

#[tokio::test]
async fn database_tenant_gets_role_database_grants_and_migrations() {
    let Some(ctx) = ctx().await else { return };
    let id = unique_name("acme");
    let (db, name, user) = ctx.database(true);
    let mut new = tenant(&id, Isolation::Database);
    new = new.database(db);
    let created = ctx.tenancy.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.expect("create");
    assert!(created.migrated);
    assert_eq!(created.created.len(), 2, "{:?}", created.created);

    // The role logs in and its password is a SCRAM verifier, never plain text or MD5.
    let verifier = column_strings(
        &ctx.pg.admin,
        "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
        vec![user.clone().into()],
    )
    .await;
    assert!(verifier[0].starts_with("SCRAM-SHA-256$4096:"), "{verifier:?}");
    assert!(!verifier[0].contains("s3cret"));
    assert_scram_matches(&verifier[0], "s3cret pass'word");
    // The database is owned by the role; PUBLIC may not connect, the role may.
    let owner = column_strings(
        &ctx.pg.admin,
        "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1",
        vec![name.clone().into()],
    )
    .await;
    assert_eq!(owner, std::slice::from_ref(&user));
    let public_connect = count(
        &ctx.pg.admin,
        "SELECT COUNT(*) FROM pg_database d, aclexplode(COALESCE(d.datacl, acldefault('d', d.datdba))) a \
         WHERE d.datname = $1 AND a.grantee = 0 AND a.privilege_type = 'CONNECT'",
        vec![name.clone().into()],
    )
    .await;
    assert_eq!(public_connect, 0, "PUBLIC keeps CONNECT");
    let role_connect = count(
        &ctx.pg.admin,
        "SELECT COUNT(*)::bigint FROM pg_database WHERE datname = $1 AND has_database_privilege($2, oid, 'CONNECT')",
        vec![name.clone().into(), user.clone().into()],
    )
    .await;
    assert_eq!(role_connect, 1);

    // Migrations ran inside the tenant database, as the tenant role, with the password.
    let tenant_url = format!("postgres://{user}:{}@127.0.0.1:5432/{name}", "s3cret%20pass%27word");
    let tenant_db = Database::connect(tenant_url).await.expect("tenant role logs in with its password");
    let applied = column_strings(&tenant_db, "SELECT version FROM seaql_migrations ORDER BY version", vec![]).await;
    assert_eq!(applied.len(), 3, "{applied:?}");
    let owners = column_strings(
        &tenant_db,
        "SELECT tableowner::text FROM pg_tables WHERE schemaname = 'public' AND tablename IN ('projects','tasks','comments')",
        vec![],
    )
    .await;
    assert_eq!(owners, [user.clone(), user.clone(), user.clone()]);
    tenant_db.close().await.unwrap();

    // The registry row holds the password encrypted only.
    let master = ctx.pg.connect().await;
    let config = column_strings(
        &master,
        "SELECT config::text FROM tenancy_tenants WHERE tenant_id = $1",
        vec![id.clone().into()],
    )
    .await;
    let config: serde_json::Value = serde_json::from_str(&config[0]).unwrap();
    let stored = config["database"]["password"].as_str().unwrap();
    assert!(stored.starts_with("v1:"), "{stored}");
    assert!(!config.to_string().contains("s3cret"));
    assert_eq!(config["database"]["engine"], "postgres");
    assert_eq!(config["database"]["user"], user.as_str());
    let status =
        column_strings(&master, "SELECT status FROM tenancy_tenants WHERE tenant_id = $1", vec![id.into()]).await;
    assert_eq!(status, ["ready"]);
}

#[tokio::test]
async fn existing_database_is_adopted_after_a_connection_check() {
    let Some(ctx) = ctx().await else { return };
    let (mut db, name, user) = ctx.database(false);
    ctx.pg.admin.execute_unprepared(&format!("CREATE ROLE \"{user}\" LOGIN PASSWORD 'right'")).await.unwrap();
    ctx.pg.admin.execute_unprepared(&format!("CREATE DATABASE \"{name}\" OWNER \"{user}\"")).await.unwrap();

    // Credentials the server refuses (this server trusts loopback passwords, so the
    // refusal is for a role that does not exist): the connection error, nothing
    // registered, nothing dropped.
    let wrong = db.clone().login(unique_name("nobody"), Password::new("s3cret pass'word"));
    let mut new = tenant("adopter", Isolation::Database);
    new = new.database(wrong);
    let err = ctx.tenancy.create_tenant(new.clone(), &MigrateOnCreate::new(&Migrator)).await.unwrap_err();
    assert_eq!(err.to_string(), "Cannot connect to database server");
    assert!(ctx.registry_ids().await.is_empty());
    assert!(ctx.database_exists(&name).await && ctx.role_exists(&user).await);

    db = db.login(user.clone(), Password::new("right"));
    new = new.database(db);
    let created = ctx.tenancy.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.expect("adopt");
    assert!(created.created.is_empty(), "adopting creates nothing: {:?}", created.created);
    let tenant_db = Database::connect(format!("postgres://{user}:right@127.0.0.1:5432/{name}")).await.unwrap();
    assert_eq!(count(&tenant_db, "SELECT COUNT(*) FROM seaql_migrations", vec![]).await, 3);
    tenant_db.close().await.unwrap();
}

#[tokio::test]
async fn schema_tenant_gets_its_schema_and_migrations_inside_it() {
    let Some(ctx) = ctx().await else { return };
    let id = unique_name("globex");
    let created = ctx
        .tenancy
        .create_tenant(tenant(&id, Isolation::Schema), &MigrateOnCreate::new(&Migrator))
        .await
        .expect("create");
    let role = ctx.login_role(&id).await;
    assert_eq!(
        created.created,
        [
            tenancy::Created::Role { name: role.clone(), server: "127.0.0.1:5432".into() },
            tenancy::Created::Schema { name: id.clone() }
        ]
    );
    assert_eq!(created.tenant.placement().login().map(|login| login.user.as_str()), Some(role.as_str()));
    assert!(ctx.schema_exists(&id).await);
    let master = ctx.pg.connect().await;
    // The login role: its schema as search_path, rows of the migrated tables and nothing else.
    let settings = column_strings(
        &master,
        "SELECT array_to_string(s.setconfig, ',') FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole \
         WHERE r.rolname = $1",
        vec![role.clone().into()],
    )
    .await;
    assert_eq!(settings, [format!("search_path={id}")]);
    for table in ["projects", "tasks", "comments"] {
        let privileges = column_strings(
            &master,
            "SELECT string_agg(privilege_type, ',' ORDER BY privilege_type) FROM information_schema.role_table_grants \
             WHERE grantee = $1 AND table_schema = $2 AND table_name = $3",
            vec![role.clone().into(), id.clone().into(), table.into()],
        )
        .await;
        assert_eq!(privileges, ["DELETE,INSERT,SELECT,UPDATE"], "{table}");
    }
    let tables = column_strings(
        &master,
        "SELECT table_schema || '.' || table_name FROM information_schema.tables \
         WHERE table_schema IN ($1, 'public') AND table_name IN ('projects','tasks','comments','seaql_migrations') ORDER BY 1",
        vec![id.clone().into()],
    )
    .await;
    let expected: Vec<String> =
        ["comments", "projects", "seaql_migrations", "tasks"].iter().map(|t| format!("{id}.{t}")).collect();
    assert_eq!(tables, expected, "nothing may land in public");
    let applied = count(&master, &format!("SELECT COUNT(*) FROM \"{id}\".seaql_migrations"), vec![]).await;
    assert_eq!(applied, 3);
}

#[tokio::test]
async fn table_and_cache_tenants_on_postgres() {
    let Some(ctx) = ctx().await else { return };
    ctx.tenancy
        .create_tenant(tenant("tabled", Isolation::Table), &MigrateOnCreate::new(&Migrator))
        .await
        .expect("table tenant");
    let master = ctx.pg.connect().await;
    let shared = count(
        &master,
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public' AND table_name IN ('projects','tasks','comments')",
        vec![],
    )
    .await;
    assert_eq!(shared, 3);
    let schemas_before = count(&master, "SELECT COUNT(*) FROM pg_namespace", vec![]).await;
    ctx.tenancy
        .create_tenant(tenant("cached", Isolation::Cache), &MigrateOnCreate::new(&Migrator))
        .await
        .expect("cache tenant");
    assert_eq!(count(&master, "SELECT COUNT(*) FROM pg_namespace", vec![]).await, schemas_before);
    let rows = column_strings(
        &master,
        "SELECT tenant_id || ':' || isolation_type || ':' || status FROM tenancy_tenants ORDER BY 1",
        vec![],
    )
    .await;
    assert_eq!(rows, ["cached:cache:ready", "tabled:table:ready"]);
    // The table tenant's login role inherits the application role; the cache tenant has none.
    let role = ctx.login_role("tabled").await;
    let app_role = tenancy::rls::app_role(&master).await.unwrap();
    let member =
        "SELECT COUNT(*) FROM pg_roles WHERE rolname = $1 AND rolinherit AND pg_has_role(rolname, $2, 'MEMBER')";
    assert_eq!(count(&master, member, vec![role.into(), app_role.into()]).await, 1);
    let cached = ctx.tenancy.get_tenant("cached").await.unwrap();
    assert!(cached.placement().login().is_none());
    assert!(!ctx.role_exists(&ctx.login_role("cached").await).await);
}

#[tokio::test]
async fn database_mode_failure_after_each_step_leaves_nothing() {
    let Some(ctx) = ctx().await else { return };
    for step in [
        ProvisionStep::ClaimId,
        ProvisionStep::CreateRole,
        ProvisionStep::CreateDatabase,
        ProvisionStep::GrantPrivileges,
        ProvisionStep::Migrate,
        ProvisionStep::MarkReady,
    ] {
        let id = unique_name("f");
        let (db, name, user) = ctx.database(true);
        let mut new = tenant(&id, Isolation::Database);
        new = new.database(db);
        let err = ctx.tenancy.create_tenant(new.clone(), &FailAfter(step)).await.unwrap_err();
        assert!(matches!(&err, Error::ProvisioningFailed { step: s, .. } if *s == step), "{step:?}: {err}");
        assert!(!ctx.registry_ids().await.contains(&id), "{step:?} left a registry row");
        assert!(!ctx.role_exists(&user).await, "{step:?} left role {user}");
        assert!(!ctx.database_exists(&name).await, "{step:?} left database {name}");
        // The same request works on a second try.
        ctx.tenancy.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.expect("retry works");
        assert!(ctx.role_exists(&user).await && ctx.database_exists(&name).await);
    }
}

#[tokio::test]
async fn schema_mode_failure_after_each_step_leaves_nothing() {
    let Some(ctx) = ctx().await else { return };
    for step in [
        ProvisionStep::ClaimId,
        ProvisionStep::CreateRole,
        ProvisionStep::CreateSchema,
        ProvisionStep::GrantPrivileges,
        ProvisionStep::Migrate,
        ProvisionStep::MarkReady,
    ] {
        let id = unique_name("s");
        let err = ctx.tenancy.create_tenant(tenant(&id, Isolation::Schema), &FailAfter(step)).await.unwrap_err();
        assert!(matches!(&err, Error::ProvisioningFailed { step: s, .. } if *s == step), "{step:?}: {err}");
        assert!(!ctx.registry_ids().await.contains(&id), "{step:?} left a registry row");
        assert!(!ctx.schema_exists(&id).await, "{step:?} left schema {id}");
        assert!(!ctx.role_exists(&ctx.login_role(&id).await).await, "{step:?} left the login role");
    }
}

#[tokio::test]
async fn table_mode_failure_after_each_step_leaves_nothing() {
    let Some(ctx) = ctx().await else { return };
    for step in [ProvisionStep::ClaimId, ProvisionStep::CreateRole, ProvisionStep::Migrate, ProvisionStep::MarkReady] {
        let id = unique_name("t");
        let err = ctx.tenancy.create_tenant(tenant(&id, Isolation::Table), &FailAfter(step)).await.unwrap_err();
        assert!(matches!(&err, Error::ProvisioningFailed { step: s, .. } if *s == step), "{step:?}: {err}");
        assert!(!ctx.registry_ids().await.contains(&id), "{step:?} left a registry row");
        assert!(!ctx.role_exists(&ctx.login_role(&id).await).await, "{step:?} left the login role");
    }
}

#[tokio::test]
async fn a_left_over_login_role_is_refused_and_kept() {
    let Some(ctx) = ctx().await else { return };
    let id = unique_name("left");
    let role = ctx.login_role(&id).await;
    ctx.pg.admin.execute_unprepared(&format!("CREATE ROLE \"{role}\"")).await.unwrap();
    for isolation in [Isolation::Schema, Isolation::Table] {
        let err =
            ctx.tenancy.create_tenant(tenant(&id, isolation), &MigrateOnCreate::new(&Migrator)).await.unwrap_err();
        assert!(matches!(&err, Error::LoginRoleExists { name } if *name == role), "{err}");
        assert!(err.to_string().starts_with(&format!("Login role '{role}' already exists")), "{err}");
        assert!(ctx.registry_ids().await.is_empty());
        assert!(!ctx.schema_exists(&id).await);
    }
    assert!(ctx.role_exists(&role).await, "the pre-existing role was dropped");
}

#[tokio::test]
async fn pre_existing_role_database_and_schema_are_refused_and_kept() {
    let Some(ctx) = ctx().await else { return };
    // A role that exists already.
    let (db, name, user) = ctx.database(true);
    ctx.pg.admin.execute_unprepared(&format!("CREATE ROLE \"{user}\"")).await.unwrap();
    let mut new = tenant("rolecheck", Isolation::Database);
    new = new.database(db.clone());
    let err = ctx.tenancy.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.unwrap_err();
    assert!(matches!(err, Error::RoleExists { .. }), "{err}");
    assert!(err.to_string().starts_with(&format!("Database user '{user}' already exists")), "{err}");
    assert!(ctx.role_exists(&user).await, "the pre-existing role was dropped");
    assert!(!ctx.database_exists(&name).await);

    // A database that exists already.
    let (db, name, _) = ctx.database(true);
    ctx.pg.admin.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await.unwrap();
    let mut new = tenant("dbcheck", Isolation::Database);
    new = new.database(db);
    let err = ctx.tenancy.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.unwrap_err();
    assert!(matches!(err, Error::DatabaseExists { .. }), "{err}");
    assert!(ctx.database_exists(&name).await, "the pre-existing database was dropped");

    // A schema that exists already.
    let master = ctx.pg.connect().await;
    master.execute_unprepared("CREATE SCHEMA squatter").await.unwrap();
    let err = ctx
        .tenancy
        .create_tenant(tenant("squatter", Isolation::Schema), &MigrateOnCreate::new(&Migrator))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::SchemaExists { .. }), "{err}");
    assert!(ctx.schema_exists("squatter").await);
    assert!(ctx.registry_ids().await.is_empty());
}

#[tokio::test]
async fn unreachable_server_is_a_connection_error_with_nothing_created() {
    let Some(ctx) = ctx().await else { return };
    let (mut db, _, _) = ctx.database(true);
    db = db.server("127.0.0.1", 1);
    let mut new = tenant("faraway", Isolation::Database);
    new = new.database(db);
    let err = ctx.tenancy.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.unwrap_err();
    assert_eq!(err.to_string(), "Cannot connect to database server");
    assert!(ctx.registry_ids().await.is_empty());
}

#[tokio::test]
async fn three_concurrent_creates_of_one_id() {
    let Some(ctx) = ctx().await else { return };
    let id = unique_name("race");
    let mut handles = Vec::new();
    for _ in 0..3 {
        let tenancy = ctx.tenancy.clone();
        let id = id.clone();
        handles.push(tokio::spawn(async move {
            tenancy.create_tenant(tenant(&id, Isolation::Schema), &MigrateOnCreate::new(&Migrator)).await
        }));
    }
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await.unwrap());
    }
    let wins = results.iter().filter(|r| r.is_ok()).count();
    let dups = results.iter().filter(|r| matches!(r, Err(Error::TenantExists { .. }))).count();
    assert_eq!((wins, dups), (1, 2), "{results:?}");
    assert!(ctx.schema_exists(&id).await);
    assert_eq!(ctx.registry_ids().await, [id]);
}

/// Recomputes the SCRAM-SHA-256 verifier PostgreSQL stored, with Python's hashlib as an
/// implementation independent of ours, from the stored salt and iteration count.
/// (The test server trusts loopback connections, so a login would not prove the password.)
fn assert_scram_matches(verifier: &str, password: &str) {
    let script = r#"
import sys, hashlib, hmac, base64
v, pw = sys.argv[1], sys.argv[2].encode()
head, keys = v.split('$', 1)[1].split('$')
iters, salt = head.split(':')
salted = hashlib.pbkdf2_hmac('sha256', pw, base64.b64decode(salt), int(iters))
client = hmac.new(salted, b'Client Key', 'sha256').digest()
server = hmac.new(salted, b'Server Key', 'sha256').digest()
stored = hashlib.sha256(client).digest()
expect = base64.b64encode(stored).decode() + ':' + base64.b64encode(server).decode()
sys.exit(0 if keys == expect else 1)
"#;
    let status =
        std::process::Command::new("python3").args(["-c", script, verifier, password]).status().expect("python3 runs");
    assert!(status.success(), "stored verifier does not match the password: {verifier}");
}

#[tokio::test]
async fn admin_url_supplies_credentials_and_the_tenant_config_the_server() {
    let Some(ctx) = ctx().await else { return };
    let dir = TempDir::new();
    // Credentials of a role that does not exist: provisioning cannot connect as admin.
    let refused = Tenancy::builder(ctx.pg.url.clone())
        .admin_url(format!("postgres://{}@db.invalid:1/postgres", unique_name("nobody")))
        .secret_key_file(dir.path().join("key"))
        .connect()
        .await
        .unwrap();
    let (db, name, user) = ctx.database(true);
    let mut new = tenant("viaadmin", Isolation::Database);
    new = new.database(db);
    let err = refused.create_tenant(new.clone(), &()).await.unwrap_err();
    assert!(matches!(&err, Error::CannotConnect { target, .. } if target.contains("127.0.0.1:5432")), "{err:?}");
    assert!(!ctx.role_exists(&user).await && !ctx.database_exists(&name).await);
    // The superuser's credentials, with a host and port the tenant's config replaces.
    let admin = Tenancy::builder(ctx.pg.url.clone())
        .admin_url("postgres://postgres@db.invalid:1/postgres")
        .secret_key_file(dir.path().join("key"))
        .connect()
        .await
        .unwrap();
    new = new.migrate(false);
    admin.create_tenant(new, &()).await.expect("created with the admin URL's credentials");
    assert!(ctx.role_exists(&user).await && ctx.database_exists(&name).await);
}

/// The admin URL is parsed once, when connecting: one that is not a PostgreSQL URL is
/// refused there, naming the setting and with its password redacted, not at the first
/// database tenant.
#[tokio::test]
async fn an_admin_url_that_is_not_postgres_is_refused_when_connecting() {
    let Some(ctx) = ctx().await else { return };
    let dir = TempDir::new();
    for given in ["mysql://root:hunter2@127.0.0.1/db", "not a url"] {
        let err = Tenancy::builder(ctx.pg.url.clone())
            .admin_url(given)
            .secret_key_file(dir.path().join("key"))
            .connect()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::UnsupportedUrl { .. }), "{given}: {err:?}");
        let message = err.to_string();
        assert!(message.contains("TENANCY_ADMIN_URL is not a valid postgres:// URL"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }
}

/// The framework's migrations of an empty master, started by eight processes at once (each
/// `Tenancy` has its own pool, as a process does): every connect succeeds and each
/// migration is recorded once. Connecting reads the recorded versions first and only
/// migrates when one is missing; on an empty master all eight find the table missing and
/// take turns under the advisory lock.
#[tokio::test]
async fn eight_first_connects_at_once_on_an_empty_master() {
    let Some(pg) = PgMaster::create().await else { return };
    let dir = TempDir::new();
    let connects = (0..8).map(|_| pg.builder(&dir).connect());
    let results = futures_util::future::join_all(connects).await;
    for result in &results {
        assert!(result.is_ok(), "{result:?}");
    }
    drop(results);
    let master = pg.connect().await;
    let known =
        i64::try_from(<tenancy::RegistryMigrator as sea_orm_migration::MigratorTrait>::migrations().len()).unwrap();
    assert_eq!(count(&master, "SELECT COUNT(*) FROM tenancy_migrations", vec![]).await, known);
    assert_eq!(count(&master, "SELECT COUNT(DISTINCT version) FROM tenancy_migrations", vec![]).await, known);
}

/// The read that lets an up-to-date master skip the migrator does not skip a missing
/// migration (it is applied on the next connect) nor hide one this build does not know
/// (the migrator refuses it, as it did before the read).
#[tokio::test]
async fn connecting_applies_a_missing_registry_migration_and_refuses_an_unknown_one() {
    let Some(pg) = PgMaster::create().await else { return };
    let dir = TempDir::new();
    drop(pg.tenancy(&dir).await);
    let master = pg.connect().await;
    let known =
        i64::try_from(<tenancy::RegistryMigrator as sea_orm_migration::MigratorTrait>::migrations().len()).unwrap();
    // The last migration adds a column when it is missing: drop both, as before it ran.
    master.execute_unprepared("ALTER TABLE tenancy_migration_ledger DROP COLUMN server").await.unwrap();
    master
        .execute_unprepared("DELETE FROM tenancy_migrations WHERE version = 'm20261221_000010_ledger_server'")
        .await
        .unwrap();
    drop(pg.tenancy(&dir).await);
    assert_eq!(count(&master, "SELECT COUNT(*) FROM tenancy_migrations", vec![]).await, known);
    let column = "SELECT COUNT(*) FROM information_schema.columns \
                  WHERE table_name = 'tenancy_migration_ledger' AND column_name = 'server'";
    assert_eq!(count(&master, column, vec![]).await, 1, "the missing migration was not applied");

    master
        .execute_unprepared(
            "INSERT INTO tenancy_migrations (version, applied_at) VALUES ('m29990101_000001_future', 0)",
        )
        .await
        .unwrap();
    let err = pg.builder(&dir).connect().await.expect_err("a master migrated by a newer build is refused");
    assert!(
        err.to_string().contains("m29990101_000001_future") || format!("{err:?}").contains("m29990101_000001_future"),
        "{err:?}"
    );
}
