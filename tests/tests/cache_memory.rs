//! Cache isolation on the in-process backend (`CacheConfig::memory`, the default).

use crate::cache_common;

use cache_common::{Fixture, Kind};

#[tokio::test]
async fn tenants_with_the_same_keys_see_only_their_own() {
    let f = Fixture::new(Kind::Memory).await.expect("memory fixture");
    cache_common::tenants_with_the_same_keys_see_only_their_own(&f).await;
}

#[tokio::test]
async fn clearing_one_tenant_leaves_the_others_byte_for_byte() {
    let f = Fixture::new(Kind::Memory).await.expect("memory fixture");
    cache_common::clearing_one_tenant_leaves_the_others_byte_for_byte(&f).await;
}

#[tokio::test]
async fn ttl_is_honoured() {
    let f = Fixture::new(Kind::Memory).await.expect("memory fixture");
    cache_common::ttl_is_honoured(&f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_context_picks_the_namespace_even_in_spawned_tasks() {
    let f = Fixture::new(Kind::Memory).await.expect("memory fixture");
    cache_common::the_context_picks_the_namespace_even_in_spawned_tasks(&f).await;
}

#[tokio::test]
async fn get_or_load_loads_once_and_stores_no_failure() {
    let f = Fixture::new(Kind::Memory).await.expect("memory fixture");
    cache_common::get_or_load_loads_once_and_stores_no_failure(&f).await;
}

#[tokio::test]
async fn read_through_hits_the_database_once_then_the_cache() {
    cache_common::read_through_hits_the_database_once_then_the_cache(Kind::Memory).await;
}

#[tokio::test]
async fn the_default_cache_is_in_process_and_private_to_each_tenancy() {
    // Two Tenancy instances on one master: the in-process cache is per instance.
    let dir = tenancy_test_support::TempDir::new();
    let connect = || async {
        tenancy::Tenancy::builder(dir.sqlite_master_url())
            .secret_key_file(dir.path().join("key"))
            .connect()
            .await
            .expect("connect")
    };
    let (one, two) = (connect().await, connect().await);
    assert!(format!("{:?}", one.cache_store()).starts_with("MemoryStore"));
    let key = tenancy::cache::GlobalKey::new("flags", "beta");
    one.global_cache().set(&key, &true, None).await.unwrap();
    assert_eq!(one.global_cache().get::<bool>(&key).await.unwrap(), Some(true));
    assert_eq!(two.global_cache().get::<bool>(&key).await.unwrap(), None);
}
