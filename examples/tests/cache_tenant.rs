//! A cache-isolated tenant end to end: `createtenant` registers it, its cache namespace
//! works at once (in-process and on the real Redis), and `migratetenant` says there is
//! nothing to migrate.

use std::process::{Command, Output, Stdio};

use sea_orm::{ConnectionTrait, Database};
use tenancy::cache::{CacheConfig, TenantKey};
use tenancy::{Isolation, Tenancy};
use tenancy_test_support::{RedisPrefix, TempDir, column_strings, unique_name};

fn run(binary: &str, dir: &TempDir, url: &str, args: &[&str]) -> Output {
    Command::new(binary)
        .current_dir(dir.path())
        .args(args)
        .env("DATABASE_URL", url)
        .env_remove("TENANCY_SECRET_KEY")
        .env("TENANCY_SECRET_KEY_FILE", dir.path().join("secret.key"))
        .stdin(Stdio::null())
        .output()
        .expect("run binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn a_cache_tenant_created_by_the_cli_works_at_once() {
    let dir = TempDir::new();
    let url = dir.sqlite_master_url();
    let id = unique_name("cached");
    let out = run(
        env!("CARGO_BIN_EXE_createtenant"),
        &dir,
        &url,
        &["--id", &id, "--name", "Cached Co", "--isolation", "cache", "--migrate", "--no-input"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("Nothing to migrate: cache tenants have no relational storage"),
        "{}",
        text(&out.stdout)
    );
    let master = Database::connect(url.clone()).await.expect("master");
    let rows = column_strings(
        &master,
        "SELECT tenant_id || ':' || isolation_type || ':' || status FROM tenancy_tenants",
        vec![],
    )
    .await;
    assert_eq!(rows, [format!("{id}:cache:ready")]);
    master.close().await.expect("close");

    // The in-process default: usable at once, no storage to create.
    let tenancy =
        Tenancy::builder(url.clone()).secret_key_file(dir.path().join("secret.key")).connect().await.expect("connect");
    let handle = tenancy.tenant(&id).await.expect("handle");
    assert_eq!(handle.isolation(), Isolation::Cache);
    let key = TenantKey::new("carts", "user-7");
    handle.cache().set(&key, &["sku-1", "sku-2"], None).await.expect("set");
    assert_eq!(handle.cache().get::<Vec<String>>(&key).await.unwrap(), Some(vec!["sku-1".into(), "sku-2".into()]));
    // Relational calls are refused: the cache is all this tenant has.
    assert!(handle.execute_unprepared("SELECT 1").await.is_err());

    // On the real Redis.
    let Some(redis) = RedisPrefix::create(":e2e").await else { return };
    let tenancy = Tenancy::builder(url.clone())
        .secret_key_file(dir.path().join("secret.key"))
        .cache(CacheConfig::redis(tenancy_test_support::redis_url()).prefix(redis.prefix.clone()))
        .connect()
        .await
        .expect("connect");
    let cache = tenancy.tenant(&id).await.expect("handle").cache();
    cache.set(&key, &["sku-3"], None).await.expect("set on Redis");
    let store_key = cache.store_key(&key);
    assert_eq!(store_key, format!("{}:{{{id}}}:carts:user-7", redis.prefix.replace(':', "%3A")));
    assert_eq!(redis.keys().await, std::slice::from_ref(&store_key));
    assert_eq!(redis.raw(&store_key).await, Some(br#"["sku-3"]"#.to_vec()));

    let out = run(env!("CARGO_BIN_EXE_migratetenant"), &dir, &url, &[&id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "Migrating tenant '{id}' (cache, cache namespace '{id}')...\n\
             Nothing to migrate: cache tenants have no relational storage\n"
        )
    );
    // Migrating left the namespace as it was.
    assert_eq!(cache.get::<Vec<String>>(&key).await.unwrap(), Some(vec!["sku-3".into()]));
    assert_eq!(cache.clear().await.unwrap(), 1);
    assert!(redis.keys().await.is_empty());
}
