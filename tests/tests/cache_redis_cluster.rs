//! Cache isolation on Redis Cluster (`CacheConfig::redis` with a `redis+cluster://` URL):
//! each test starts a three-primary cluster of its own (`RedisCluster`), killed when it
//! ends. The shared suite, then what only a cluster has: a tenant's keys in one slot,
//! clearing across every primary, a slot being migrated, a rename across slots.

use crate::cache_common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cache_common::{Fixture, Kind};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use tenancy::Error;
use tenancy::cache::{CacheConfig, GlobalKey, TenantCache, TenantKey};
use tenancy_test_support::{RedisCluster, TempDir, unique_name};

#[tokio::test]
async fn tenants_with_the_same_keys_see_only_their_own() {
    let Some(f) = Fixture::new(Kind::RedisCluster).await else { return };
    cache_common::tenants_with_the_same_keys_see_only_their_own(&f).await;
}

#[tokio::test]
async fn clearing_one_tenant_leaves_the_others_byte_for_byte() {
    let Some(f) = Fixture::new(Kind::RedisCluster).await else { return };
    cache_common::clearing_one_tenant_leaves_the_others_byte_for_byte(&f).await;
}

#[tokio::test]
async fn ttl_is_honoured() {
    let Some(f) = Fixture::new(Kind::RedisCluster).await else { return };
    cache_common::ttl_is_honoured(&f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_context_picks_the_namespace_even_in_spawned_tasks() {
    let Some(f) = Fixture::new(Kind::RedisCluster).await else { return };
    cache_common::the_context_picks_the_namespace_even_in_spawned_tasks(&f).await;
}

#[tokio::test]
async fn get_or_load_loads_once_and_stores_no_failure() {
    let Some(f) = Fixture::new(Kind::RedisCluster).await else { return };
    cache_common::get_or_load_loads_once_and_stores_no_failure(&f).await;
}

#[tokio::test]
async fn read_through_hits_the_database_once_then_the_cache() {
    cache_common::read_through_hits_the_database_once_then_the_cache(Kind::RedisCluster).await;
}

/// The fixture's cluster and a cluster connection of the test's own.
async fn cluster_of(f: &Fixture) -> (&RedisCluster, ClusterConnection) {
    let cluster = f.redis.as_ref().expect("a Redis fixture").cluster();
    let conn = cluster.connect().await;
    (cluster, conn)
}

/// The slot of a tenant's keys: the slot of its hash tag.
fn slot_of(cache: &TenantCache) -> Slot {
    Slot::for_key(cache.namespace())
}

/// `CLUSTER KEYSLOT` of `key`, asked of the cluster.
fn slot_number(cluster: &RedisCluster, key: &str) -> u16 {
    redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query(&mut cluster.node(cluster.ports[0])).expect("CLUSTER KEYSLOT")
}

/// Each key's `DUMP` payload (the serialized value, without its TTL) and `PTTL`, read
/// through the cluster's routing (which follows `ASK` during a migration).
async fn snapshot(conn: &ClusterConnection, keys: &[String]) -> BTreeMap<String, (Vec<u8>, i64)> {
    let mut out = BTreeMap::new();
    for key in keys {
        let mut conn = conn.clone();
        let dump: Option<Vec<u8>> = redis::cmd("DUMP").arg(key).query_async(&mut conn).await.expect("DUMP");
        let pttl: i64 = redis::cmd("PTTL").arg(key).query_async(&mut conn).await.expect("PTTL");
        out.insert(key.clone(), (dump.unwrap_or_else(|| panic!("{key} is missing")), pttl));
    }
    out
}

/// Same payloads; each TTL what it was (none stays none) less at most the time between
/// the start of the first snapshot and the end of the second.
fn assert_unchanged(
    before: &BTreeMap<String, (Vec<u8>, i64)>,
    after: &BTreeMap<String, (Vec<u8>, i64)>,
    elapsed: Duration,
) {
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>());
    let slack = i64::try_from(elapsed.as_millis()).unwrap() + 2;
    for (key, (dump, ttl)) in before {
        let (dump_after, ttl_after) = &after[key];
        assert_eq!(dump_after, dump, "{key}: the value changed");
        if *ttl == -1 {
            assert_eq!(*ttl_after, -1, "{key}: an expiry appeared");
        } else {
            assert!(
                *ttl_after > 0 && *ttl_after <= *ttl && ttl - ttl_after <= slack,
                "{key}: TTL {ttl} -> {ttl_after}"
            );
        }
    }
}

/// Keys of `tenant` through the crate: `count` entries, every third expiring in 10 minutes
/// and every fifth in an hour.
async fn fill(tenant: &TenantCache, count: usize) -> Vec<String> {
    let mut keys = Vec::new();
    for i in 0..count {
        let key = TenantKey::new("items", format!("item-{i}"));
        let ttl = match i {
            i if i % 3 == 0 => Some(Duration::from_secs(600)),
            i if i % 5 == 0 => Some(Duration::from_secs(3600)),
            _ => None,
        };
        tenant.set(&key, &format!("{}#{i}", tenant.tenant()), ttl).await.expect("set");
        keys.push(tenant.store_key(&key));
    }
    keys.sort();
    keys
}

#[tokio::test]
async fn clearing_a_tenant_of_100000_keys_leaves_nine_others_byte_for_byte() {
    let Some(f) = Fixture::new(Kind::RedisCluster).await else { return };
    let (cluster, conn) = cluster_of(&f).await;
    let big = f.cache_tenant(&unique_name("big")).await.cache();
    let mut others = Vec::new();
    for n in 0..9 {
        others.push(f.cache_tenant(&unique_name(&format!("t{n}"))).await.cache());
    }
    // The big tenant's 100,000 keys, written as the crate would, in pipelines (one slot:
    // one node per pipeline).
    const BIG: usize = 100_000;
    for chunk in (0..BIG).collect::<Vec<_>>().chunks(10_000) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            let key = big.store_key(&TenantKey::new("items", format!("item-{i}")));
            let value = serde_json::to_vec(&format!("big#{i}")).unwrap();
            if i % 4 == 0 {
                pipe.cmd("SET").arg(key).arg(value).arg("PX").arg(600_000).ignore();
            } else {
                pipe.cmd("SET").arg(key).arg(value).ignore();
            }
        }
        pipe.query_async::<()>(&mut conn.clone()).await.expect("pipelined SETs");
    }
    assert_eq!(cluster.keys(big.namespace()).len(), BIG);
    let mut kept = Vec::new();
    for tenant in &others {
        kept.extend(fill(tenant, 300).await);
    }
    let global = f.tenancy.global_cache();
    let global_key = GlobalKey::new("plans", "gold");
    global.set(&global_key, &"shared", Some(Duration::from_secs(600))).await.unwrap();
    kept.push(global.store_key(&global_key));
    kept.sort();
    // The ten tenants are spread over the primaries (else the test would show little).
    let nodes: std::collections::BTreeSet<u16> =
        others.iter().chain([&big]).map(|t| cluster.owner_of(slot_number(cluster, t.namespace()))).collect();
    assert!(nodes.len() >= 2, "all ten tenants on one node: {nodes:?}");

    let started = Instant::now();
    let before = snapshot(&conn, &kept).await;
    let removed = big.clear().await.expect("clear");
    let after = snapshot(&conn, &kept).await;
    assert_eq!(removed, BIG as u64);
    assert_unchanged(&before, &after, started.elapsed());
    for port in cluster.ports {
        assert_eq!(
            cluster.keys_on(port, big.namespace()),
            Vec::<String>::new(),
            "a key of the cleared tenant on {port}"
        );
    }
    let RawKeys(all) = RawKeys::of(&f).await;
    assert_eq!(all, kept, "exactly the nine others' and the global keys remain");
    for tenant in &others {
        let value: Option<String> = tenant.get(&TenantKey::new("items", "item-7")).await.unwrap();
        assert_eq!(value, Some(format!("{}#7", tenant.tenant())));
    }
}

/// Every key of the fixture, from every node.
struct RawKeys(Vec<String>);

impl RawKeys {
    async fn of(f: &Fixture) -> RawKeys {
        RawKeys(f.redis.as_ref().expect("a Redis fixture").keys().await)
    }
}

/// A tenant id unlike `base`'s whose keys hash to `slot`.
fn id_in_slot(base: &str, slot: Slot) -> String {
    (0..1_000_000)
        .map(|i| format!("{base}_{i}"))
        .find(|id| Slot::for_key(format!("{{{id}}}")) == slot)
        .expect("an id in the slot")
}

#[tokio::test]
async fn clearing_a_tenant_whose_slot_is_migrating_removes_its_keys_on_both_nodes() {
    let Some(f) = Fixture::new(Kind::RedisCluster).await else { return };
    let (cluster, conn) = cluster_of(&f).await;
    let victim = f.cache_tenant(&unique_name("victim")).await.cache();
    // A neighbour in the same slot (so migrated with it) and a tenant elsewhere.
    let neighbour = f.cache_tenant(&id_in_slot(&unique_name("n"), slot_of(&victim))).await.cache();
    let elsewhere = f.cache_tenant(&unique_name("other")).await.cache();
    assert_eq!(slot_of(&neighbour), slot_of(&victim));
    assert_ne!(slot_of(&elsewhere), slot_of(&victim));
    let victim_keys = fill(&victim, 100).await;
    let neighbour_keys = fill(&neighbour, 100).await;
    let elsewhere_keys = fill(&elsewhere, 100).await;

    // The slot, half moved: the source is MIGRATING to the target, the target IMPORTING
    // from the source, and half of each tenant's keys MIGRATEd.
    let slot = slot_number(cluster, victim.namespace());
    let nodes = cluster.nodes();
    let source = nodes.iter().find(|n| n.slots.iter().any(|r| r.contains(&slot))).expect("the slot's owner").clone();
    let target = nodes.iter().find(|n| n.port != source.port).expect("another node").clone();
    let setslot = |port: u16, args: &[&str]| {
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("SETSLOT").arg(slot).arg(args);
        cmd.query::<()>(&mut cluster.node(port)).unwrap_or_else(|err| panic!("SETSLOT {args:?} on {port}: {err}"));
    };
    setslot(target.port, &["IMPORTING", &source.id]);
    setslot(source.port, &["MIGRATING", &target.id]);
    let migrate = |keys: &[String]| {
        let mut cmd = redis::cmd("MIGRATE");
        cmd.arg("127.0.0.1").arg(target.port).arg("").arg(0).arg(5000).arg("KEYS").arg(keys);
        cmd.query::<String>(&mut cluster.node(source.port)).expect("MIGRATE");
    };
    migrate(&victim_keys[..50]);
    migrate(&neighbour_keys[..50]);
    assert_eq!(cluster.keys_on(source.port, victim.namespace()), victim_keys[50..]);
    assert_eq!(cluster.keys_on(target.port, victim.namespace()), victim_keys[..50]);
    assert_eq!(cluster.keys_on(target.port, neighbour.namespace()), neighbour_keys[..50]);

    let kept: Vec<String> = neighbour_keys.iter().chain(&elsewhere_keys).cloned().collect();
    let started = Instant::now();
    let before = snapshot(&conn, &kept).await;
    let removed = victim.clear().await.expect("clear during the migration");
    let after = snapshot(&conn, &kept).await;
    assert_eq!(removed, 100, "both halves");
    for port in cluster.ports {
        assert_eq!(cluster.keys_on(port, victim.namespace()), Vec::<String>::new(), "a victim key on {port}");
    }
    assert_unchanged(&before, &after, started.elapsed());
    assert_eq!(cluster.keys_on(source.port, neighbour.namespace()), neighbour_keys[50..]);
    assert_eq!(cluster.keys_on(target.port, neighbour.namespace()), neighbour_keys[..50]);
    assert_eq!(RawKeys::of(&f).await.0, {
        let mut all = kept.clone();
        all.sort();
        all
    });
    // The crate reads the neighbour's keys on either side meanwhile.
    let first: Option<String> = neighbour.get(&TenantKey::new("items", "item-0")).await.unwrap();
    assert_eq!(first, Some(format!("{}#0", neighbour.tenant())));

    // The migration ends (the rest moved, the slot given to the target everywhere): the
    // neighbour's keys are all read there, and clearing it finds them on the new owner.
    migrate(&neighbour_keys[50..]);
    for port in cluster.ports {
        setslot(port, &["NODE", &target.id]);
    }
    for (i, key) in [0, 1, 99].into_iter().map(|i| (i, TenantKey::new("items", format!("item-{i}")))) {
        let value: Option<String> = neighbour.get(&key).await.unwrap();
        assert_eq!(value, Some(format!("{}#{i}", neighbour.tenant())));
    }
    assert_eq!(cluster.keys_on(target.port, neighbour.namespace()).len(), 100);
    assert_eq!(neighbour.clear().await.unwrap(), 100);
    assert_eq!(cluster.keys(neighbour.namespace()), Vec::<String>::new());
    assert_eq!(RawKeys::of(&f).await.0, elsewhere_keys);
}

#[tokio::test]
async fn renaming_a_cache_tenant_moves_its_keys_to_another_slot() {
    let Some(f) = Fixture::new(Kind::RedisCluster).await else { return };
    let (cluster, conn) = cluster_of(&f).await;
    let old = f.cache_tenant(&unique_name("old")).await.cache();
    let other = f.cache_tenant(&unique_name("other")).await.cache();
    // A new id on another node than the old one's, so `RENAME` could not have been used.
    let old_port = cluster.owner_of(slot_number(cluster, old.namespace()));
    let new_id = (0..1000)
        .map(|i| format!("{}_{i}", unique_name("new")))
        .find(|id| cluster.owner_of(slot_number(cluster, &format!("{{{id}}}"))) != old_port)
        .expect("an id on another node");
    let old_keys = fill(&old, 300).await;
    let other_keys = fill(&other, 50).await;
    let global = f.tenancy.global_cache();
    global.set(&GlobalKey::new("plans", "gold"), &"shared", None).await.unwrap();

    let started = Instant::now();
    let before = snapshot(&conn, &old_keys).await;
    let other_before = snapshot(&conn, &other_keys).await;
    let renamed = f
        .tenancy
        .rename_tenant(old.tenant().as_str(), new_id.as_str(), &tenancy::renaming::RenameOptions::default())
        .await
        .expect("rename");
    assert_eq!(renamed.cache_keys, 300);
    let new = f.tenancy.tenant(new_id.as_str()).await.expect("the new id").cache();
    let moved: Vec<String> =
        old_keys.iter().map(|key| key.replacen(old.namespace(), new.namespace(), 1)).collect::<Vec<_>>();
    let after = snapshot(&conn, &moved).await;
    let other_after = snapshot(&conn, &other_keys).await;
    // Same payloads and TTLs, under the new names.
    let renamed_before: BTreeMap<String, (Vec<u8>, i64)> =
        before.into_iter().map(|(key, value)| (key.replacen(old.namespace(), new.namespace(), 1), value)).collect();
    assert_unchanged(&renamed_before, &after, started.elapsed());
    assert_unchanged(&other_before, &other_after, started.elapsed());
    let new_port = cluster.owner_of(slot_number(cluster, new.namespace()));
    assert_ne!(new_port, old_port);
    let mut on_new_node = cluster.keys_on(new_port, new.namespace());
    on_new_node.sort();
    let mut expected_moved = moved.clone();
    expected_moved.sort();
    assert_eq!(on_new_node, expected_moved);
    assert_eq!(cluster.keys(old.namespace()), Vec::<String>::new(), "no key left under the old id");
    let mut expected: Vec<String> = moved.into_iter().chain(other_keys).collect();
    expected.push(global.store_key(&GlobalKey::new("plans", "gold")));
    expected.sort();
    assert_eq!(RawKeys::of(&f).await.0, expected);
    let value: Option<String> = new.get(&TenantKey::new("items", "item-4")).await.unwrap();
    assert_eq!(value, Some(format!("{}#4", old.tenant())));
}

/// A loopback port with nothing listening.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_cluster_that_is_down_is_a_clear_error_and_a_bad_url_names_the_valid_forms() {
    let dir = TempDir::new();
    let url = format!("redis+cluster://:hunter2@127.0.0.1:{},127.0.0.1:{}", closed_port(), closed_port());
    let tenancy = tenancy::Tenancy::builder(dir.sqlite_master_url())
        .secret_key_file(dir.path().join("key"))
        .cache(CacheConfig::redis(url).prefix(unique_name("down")))
        .connect()
        .await
        .expect("connect without the cluster");
    let global = tenancy.global_cache();
    let key = GlobalKey::new("m", "k");
    let errors = [
        global.get::<i32>(&key).await.map(|_| ()).unwrap_err(),
        global.set(&key, &1, None).await.unwrap_err(),
        global.delete(&key).await.map(|_| ()).unwrap_err(),
    ];
    for err in &errors {
        assert!(matches!(err, Error::CacheUnavailable { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.starts_with("Cannot reach the cache at redis+cluster://:***@127.0.0.1:"), "{message}");
        assert!(!format!("{err:?}").contains("hunter2"), "the password is never echoed");
    }

    for (bad, why) in [
        ("redis+cluster://127.0.0.1:7001,127.0.0.1", "'127.0.0.1' is not a node"),
        ("redis+cluster://127.0.0.1:7001/2", "no database"),
        ("redis+cluster://", "'' is not a node"),
    ] {
        let err = tenancy::Tenancy::builder(dir.sqlite_master_url())
            .secret_key_file(dir.path().join("key"))
            .cache(CacheConfig::redis(bad))
            .connect()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidCacheUrl { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.starts_with(&format!("Invalid cache URL '{bad}'")), "{message}");
        assert!(message.contains(why), "{message}");
        assert!(message.contains("redis+cluster://[user:password@]host:port[,host:port...]"), "{message}");
    }
}

/// `tenancydoctor`'s survey of the cache walks every primary: namespaces of unregistered
/// tenants on two different nodes are both reported with their key counts, none cleared.
#[tokio::test]
async fn the_doctor_finds_unknown_namespaces_on_every_node() {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    use tenancy::doctor::Finding;
    let Some((f, pg)) = Fixture::with_postgres(Kind::RedisCluster).await else { return };
    let cluster = f.redis.as_ref().expect("a Redis fixture").cluster();
    // Three tenants, each on a node of its own.
    let mut ids: Vec<String> = Vec::new();
    let mut ports = Vec::new();
    while ids.len() < 3 {
        let id = unique_name("doc");
        let port = cluster.owner_of(slot_number(cluster, &format!("{{{id}}}")));
        if !ports.contains(&port) {
            ports.push(port);
            ids.push(id);
        }
    }
    for (n, id) in ids.iter().enumerate() {
        let cache = f.cache_tenant(id).await.cache();
        for key in 0..n + 2 {
            cache.set(&TenantKey::new("carts", key.to_string()), &1, None).await.expect("set");
        }
    }
    let master = pg.connect().await;
    for gone in &ids[..2] {
        master
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "DELETE FROM tenancy_tenants WHERE tenant_id = $1",
                [gone.as_str().into()],
            ))
            .await
            .expect("forget");
    }
    let mut expected = vec![
        Finding::UnownedCacheNamespace { namespace: ids[0].clone(), keys: 2 },
        Finding::UnownedCacheNamespace { namespace: ids[1].clone(), keys: 3 },
    ];
    expected.sort_by_key(|finding| format!("{finding:?}"));
    let mut findings = f.tenancy.diagnose().await.expect("diagnose");
    findings.sort_by_key(|finding| format!("{finding:?}"));
    assert_eq!(findings, expected);
    assert_eq!(RawKeys::of(&f).await.0.len(), 2 + 3 + 4, "nothing was cleared");
}
