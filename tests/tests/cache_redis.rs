//! Cache isolation on Redis (`CacheConfig::redis`, feature `redis`), against the real
//! server at `TENANCY_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`). Every test uses
//! its own key prefix (with glob and separator characters in it) and removes its keys.

use crate::cache_common;

use std::time::{Duration, Instant};

use cache_common::{Fixture, Kind};
use tenancy::Error;
use tenancy::cache::{CacheConfig, TenantKey};
use tenancy_test_support::{TempDir, unique_name};

#[tokio::test]
async fn tenants_with_the_same_keys_see_only_their_own() {
    let Some(f) = Fixture::new(Kind::Redis).await else { return };
    cache_common::tenants_with_the_same_keys_see_only_their_own(&f).await;
}

#[tokio::test]
async fn clearing_one_tenant_leaves_the_others_byte_for_byte() {
    let Some(f) = Fixture::new(Kind::Redis).await else { return };
    cache_common::clearing_one_tenant_leaves_the_others_byte_for_byte(&f).await;
}

#[tokio::test]
async fn ttl_is_honoured() {
    let Some(f) = Fixture::new(Kind::Redis).await else { return };
    cache_common::ttl_is_honoured(&f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_context_picks_the_namespace_even_in_spawned_tasks() {
    let Some(f) = Fixture::new(Kind::Redis).await else { return };
    cache_common::the_context_picks_the_namespace_even_in_spawned_tasks(&f).await;
}

#[tokio::test]
async fn get_or_load_loads_once_and_stores_no_failure() {
    let Some(f) = Fixture::new(Kind::Redis).await else { return };
    cache_common::get_or_load_loads_once_and_stores_no_failure(&f).await;
}

#[tokio::test]
async fn read_through_hits_the_database_once_then_the_cache() {
    cache_common::read_through_hits_the_database_once_then_the_cache(Kind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearing_is_safe_while_other_tenants_keep_writing() {
    let Some(f) = Fixture::new(Kind::Redis).await else { return };
    let victim = f.cache_tenant(&unique_name("victim")).await.cache();
    let busy = f.cache_tenant(&unique_name("busy")).await.cache();
    for i in 0..3000 {
        victim.set(&TenantKey::new("k", i.to_string()), &i, None).await.unwrap();
    }
    let mut writer = {
        let busy = busy.clone();
        AbortOnDrop(tokio::spawn(async move {
            for i in 0..2000 {
                busy.set(&TenantKey::new("k", i.to_string()), &i, None).await.unwrap();
            }
        }))
    };
    assert_eq!(victim.clear().await.unwrap(), 3000);
    (&mut writer.0).await.unwrap();
    for i in 0..2000 {
        assert_eq!(busy.get::<i32>(&TenantKey::new("k", i.to_string())).await.unwrap(), Some(i));
    }
    let keys = f.redis.as_ref().unwrap().keys().await;
    assert_eq!(keys.len(), 2000);
    assert!(keys.iter().all(|key| key.starts_with(busy.namespace())));
}

/// Stops a spawned task when a failing test unwinds, so it cannot write after the
/// prefix's keys were removed.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A loopback port with nothing listening.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn redis_down_is_a_clear_error_and_never_a_panic() {
    let dir = TempDir::new();
    let url = format!("redis://:hunter2@127.0.0.1:{}", closed_port());
    // Connecting the Tenancy does not need Redis: the cache connects on first use.
    let tenancy = tenancy::Tenancy::builder(dir.sqlite_master_url())
        .secret_key_file(dir.path().join("key"))
        .cache(CacheConfig::redis(url.clone()).prefix(unique_name("down")))
        .connect()
        .await
        .expect("connect without Redis");
    let id: tenancy::TenantId = unique_name("down").parse().unwrap();
    let new = tenancy::NewTenant::new(id.clone(), "Down", tenancy::Isolation::Cache).expect("a valid new tenant");
    tenancy.create_tenant(new, &()).await.unwrap();
    let cache = tenancy.tenant(&id).await.unwrap().cache();
    let key = TenantKey::new("m", "k");
    let started = Instant::now();
    let errors = [
        cache.get::<i32>(&key).await.map(|_| ()).unwrap_err(),
        cache.set(&key, &1, None).await.unwrap_err(),
        cache.delete(&key).await.map(|_| ()).unwrap_err(),
        cache.clear().await.map(|_| ()).unwrap_err(),
    ];
    assert!(started.elapsed() < Duration::from_secs(20), "errors come promptly: {:?}", started.elapsed());
    for err in &errors {
        assert!(matches!(err, Error::CacheUnavailable { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.starts_with("Cannot reach the cache at redis://:***@127.0.0.1:"), "{message}");
        assert!(!format!("{err:?}").contains("hunter2"), "the password is never echoed");
    }
    let loaded: Result<i32, Error> = cache.get_or_load(&key, None, || async { Ok(5) }).await;
    assert!(matches!(loaded, Err(Error::CacheUnavailable { .. })));

    // A URL that is not Redis fails at connect, with a clear message.
    let bad = tenancy::Tenancy::builder(dir.sqlite_master_url())
        .secret_key_file(dir.path().join("key"))
        .cache(CacheConfig::redis("http://user:pw@example.invalid"))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(bad, Error::InvalidCacheUrl { .. }), "{bad:?}");
    assert!(bad.to_string().starts_with("Invalid cache URL 'http://user:***@example.invalid"), "{bad}");
}

#[tokio::test]
async fn redis_coming_back_is_picked_up_without_a_restart() {
    // The manager reconnects by itself: a Tenancy made while the URL's server was away
    // works once a server listens there. Simulated with a TCP relay to the real Redis
    // that starts after the first failure.
    let Some(redis) = tenancy_test_support::RedisPrefix::create("").await else { return };
    let listener_port = closed_port();
    let dir = TempDir::new();
    let tenancy = tenancy::Tenancy::builder(dir.sqlite_master_url())
        .secret_key_file(dir.path().join("key"))
        .cache(CacheConfig::redis(format!("redis://127.0.0.1:{listener_port}")).prefix(redis.prefix.clone()))
        .connect()
        .await
        .unwrap();
    let global = tenancy.global_cache();
    let key = tenancy::cache::GlobalKey::new("m", "k");
    assert!(matches!(global.set(&key, &1, None).await, Err(Error::CacheUnavailable { .. })));

    let target = tenancy_test_support::redis_url();
    let upstream = target.trim_start_matches("redis://").trim_end_matches('/').to_owned();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", listener_port)).await.unwrap();
    let relay = tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    let mut ok = false;
    for _ in 0..50 {
        if global.set(&key, &1, None).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    relay.abort();
    assert!(ok, "the cache works again once Redis is reachable");
    assert_eq!(redis.keys().await, [global.store_key(&key)]);
}
