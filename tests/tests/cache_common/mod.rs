//! The cache-isolation suite, run against each backend by `cache_memory.rs`,
//! `cache_redis.rs` and `cache_redis_cluster.rs`: the same scenarios, asserted on the
//! stored bytes.

use std::collections::BTreeMap;
use std::time::Duration;

use sea_orm::{ConnectionTrait, Set, Statement};
use tenancy::cache::{CacheConfig, GlobalKey, TenantCache, TenantKey};
use tenancy::{Error, Isolation, NewTenant, Tenancy, TenantConnection, TenantId};
use tenancy_test_support::{PgMaster, RedisCluster, RedisPrefix, TempDir, unique_name};

/// A prefix full of characters that would break a naive key layout or glob.
pub(crate) const TRICKY_PREFIX_SUFFIX: &str = ":*?[a-z]\\%{x}";

/// Which backend a fixture uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Memory,
    Redis,
    /// A three-primary Redis Cluster of the fixture's own.
    RedisCluster,
}

/// Raw access to the Redis a fixture's cache uses, below the crate: for assertions on
/// the stored keys, bytes and TTLs.
pub(crate) enum RawRedis {
    /// The test Redis, under a unique prefix.
    Single(RedisPrefix),
    /// A cluster of the fixture's own (killed with it), under a unique prefix.
    Cluster {
        cluster: RedisCluster,
        /// The unique start of every key of the fixture.
        unique: String,
        conn: redis::cluster_async::ClusterConnection,
    },
}

impl RawRedis {
    /// Every key of the fixture, sorted (on a cluster: from every node).
    pub(crate) async fn keys(&self) -> Vec<String> {
        match self {
            RawRedis::Single(redis) => redis.keys().await,
            RawRedis::Cluster { cluster, unique, .. } => cluster.keys(unique),
        }
    }

    /// The bytes at `key` (on a cluster: wherever its slot is served).
    pub(crate) async fn raw(&self, key: &str) -> Option<Vec<u8>> {
        match self {
            RawRedis::Single(redis) => redis.raw(key).await,
            RawRedis::Cluster { conn, .. } => {
                redis::cmd("GET").arg(key).query_async(&mut conn.clone()).await.expect("GET")
            }
        }
    }

    /// `PTTL key`: milliseconds left, -1 for no expiry, -2 for no key.
    pub(crate) async fn pttl(&self, key: &str) -> i64 {
        let cmd = redis::cmd("PTTL").arg(key).clone();
        match self {
            RawRedis::Single(redis) => cmd.query_async(&mut redis.conn.clone()).await.expect("PTTL"),
            RawRedis::Cluster { conn, .. } => cmd.query_async(&mut conn.clone()).await.expect("PTTL"),
        }
    }

    /// The cluster, for a fixture of [`Kind::RedisCluster`].
    pub(crate) fn cluster(&self) -> &RedisCluster {
        match self {
            RawRedis::Cluster { cluster, .. } => cluster,
            RawRedis::Single(_) => panic!("not a cluster fixture"),
        }
    }
}

/// A `Tenancy` on a fresh SQLite master with the chosen cache; on Redis, under a unique
/// prefix whose keys are removed when the fixture drops.
pub(crate) struct Fixture {
    pub(crate) tenancy: Tenancy,
    pub(crate) redis: Option<RawRedis>,
    _dir: TempDir,
}

impl Fixture {
    pub(crate) async fn new(kind: Kind) -> Option<Fixture> {
        let dir = TempDir::new();
        let (config, redis) = config(kind).await?;
        let tenancy = Tenancy::builder(dir.sqlite_master_url())
            .secret_key_file(dir.path().join("key"))
            .cache(config)
            .connect()
            .await
            .expect("connect");
        Some(Fixture { tenancy, redis, _dir: dir })
    }

    /// As [`Fixture::new`], on a PostgreSQL master (for database-isolated tenants).
    pub(crate) async fn with_postgres(kind: Kind) -> Option<(Fixture, PgMaster)> {
        let pg = PgMaster::create().await?;
        let dir = TempDir::new();
        let (config, redis) = config(kind).await?;
        let tenancy = Tenancy::builder(pg.url.clone())
            .secret_key_file(dir.path().join("key"))
            .cache(config)
            .connect()
            .await
            .expect("connect");
        Some((Fixture { tenancy, redis, _dir: dir }, pg))
    }

    /// Registers a cache-isolated tenant and returns its handle.
    pub(crate) async fn cache_tenant(&self, id: &str) -> TenantConnection {
        let id: TenantId = id.parse().expect("valid id");
        let new = NewTenant::new(id.clone(), id.to_string(), Isolation::Cache).expect("a valid new tenant");
        self.tenancy.create_tenant(new, &()).await.expect("create cache tenant");
        self.tenancy.tenant(&id).await.expect("handle")
    }

    /// The bytes stored at `store_key`: read straight from Redis (not through the
    /// crate) on Redis, from the in-process store otherwise.
    pub(crate) async fn raw(&self, store_key: &str) -> Option<Vec<u8>> {
        match &self.redis {
            Some(redis) => redis.raw(store_key).await,
            None => self.tenancy.cache_store().get(store_key).await.expect("store get"),
        }
    }
}

async fn config(kind: Kind) -> Option<(CacheConfig, Option<RawRedis>)> {
    Some(match kind {
        Kind::Memory => (CacheConfig::memory().prefix(unique_name("mem")), None),
        Kind::Redis => {
            let redis = RedisPrefix::create(TRICKY_PREFIX_SUFFIX).await?;
            let config = CacheConfig::redis(tenancy_test_support::redis_url()).prefix(redis.prefix.clone());
            (config, Some(RawRedis::Single(redis)))
        }
        Kind::RedisCluster => {
            let cluster = RedisCluster::start()?;
            let unique = unique_name("cache_c");
            let config = CacheConfig::redis(cluster.url()).prefix(format!("{unique}{TRICKY_PREFIX_SUFFIX}"));
            let conn = cluster.connect().await;
            (config, Some(RawRedis::Cluster { cluster, unique, conn }))
        }
    })
}

/// Two tenant ids where one is a prefix of the other (`acme_…`, `acme_…2`).
fn prefix_pair(name: &str) -> (String, String) {
    let first = unique_name(name);
    let second = format!("{first}2");
    (first, second)
}

/// Keys whose models and keys would collide under a naive `model:key` join or match a
/// naive glob.
fn tricky_keys() -> Vec<TenantKey> {
    let mut keys = Vec::new();
    for (model, key) in [
        ("sessions", "abc"),
        ("a:b", "c"),
        ("a", "b:c"),
        ("a", "b%3Ac"),
        ("*", "*"),
        ("?", "[a-z]"),
        ("m", "\\*"),
        ("m", "%2A"),
        ("{x}", "}{"),
        ("", ""),
        ("m", ""),
        ("", "m"),
        ("é", "ü:*"),
    ] {
        keys.push(TenantKey::new(model, key));
    }
    keys
}

/// Distinct bytes per (tenant, key) so any cross-read shows.
fn value_for(tenant: &TenantCache, index: usize) -> String {
    format!("{}#{index}", tenant.tenant())
}

pub(crate) async fn tenants_with_the_same_keys_see_only_their_own(f: &Fixture) {
    let (a, b) = prefix_pair("acme");
    let (acme, acme2) = (f.cache_tenant(&a).await.cache(), f.cache_tenant(&b).await.cache());
    let keys = tricky_keys();
    for (i, key) in keys.iter().enumerate() {
        acme.set(key, &value_for(&acme, i), None).await.expect("set");
        acme2.set(key, &value_for(&acme2, i), None).await.expect("set");
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(acme.get::<String>(key).await.expect("get"), Some(value_for(&acme, i)), "{key:?}");
        assert_eq!(acme2.get::<String>(key).await.expect("get"), Some(value_for(&acme2, i)), "{key:?}");
        let raw = f.raw(&acme.store_key(key)).await.expect("stored");
        assert_eq!(raw, serde_json::to_vec(&value_for(&acme, i)).unwrap());
    }
    // Every key is its own entry: 2 tenants x 13 keys, nothing overwritten.
    if let Some(redis) = &f.redis {
        let expected: Vec<String> = {
            let mut all: Vec<String> =
                keys.iter().flat_map(|key| [acme.store_key(key), acme2.store_key(key)]).collect();
            all.sort();
            all
        };
        assert_eq!(redis.keys().await, expected);
        // The tenant is the Redis Cluster hash tag of each of its keys.
        for key in &expected {
            let open = key.find('{').unwrap();
            let close = open + key[open..].find('}').unwrap();
            assert!([a.as_str(), b.as_str()].contains(&&key[open + 1..close]), "{key}");
        }
    }
    // A delete reaches only its own tenant.
    assert!(acme.delete(&keys[0]).await.expect("delete"));
    assert!(!acme.delete(&keys[0]).await.expect("delete again"));
    assert_eq!(acme.get::<String>(&keys[0]).await.unwrap(), None);
    assert_eq!(acme2.get::<String>(&keys[0]).await.unwrap(), Some(value_for(&acme2, 0)));

    // Global keys are a third namespace, untouched by either tenant.
    let global = f.tenancy.global_cache();
    global.set(&GlobalKey::new("sessions", "abc"), "shared", None).await.unwrap();
    assert_eq!(acme2.get::<String>(&keys[0]).await.unwrap(), Some(value_for(&acme2, 0)));
    assert_eq!(global.get::<String>(&GlobalKey::new("sessions", "abc")).await.unwrap().as_deref(), Some("shared"));
    assert!(global.delete(&GlobalKey::new("sessions", "abc")).await.unwrap());
}

pub(crate) async fn clearing_one_tenant_leaves_the_others_byte_for_byte(f: &Fixture) {
    let (a, b) = prefix_pair("acme");
    let c = unique_name("globex");
    let tenants =
        [f.cache_tenant(&a).await.cache(), f.cache_tenant(&b).await.cache(), f.cache_tenant(&c).await.cache()];
    let mut keys = tricky_keys();
    keys.extend((0..200).map(|i| TenantKey::new("items", format!("item-{i}"))));
    for tenant in &tenants {
        for (i, key) in keys.iter().enumerate() {
            tenant.set(key, &value_for(tenant, i), None).await.unwrap();
        }
    }
    let global = f.tenancy.global_cache();
    let global_key = GlobalKey::new("plans", "*");
    global.set(&global_key, &vec![1, 2, 3], None).await.unwrap();

    let mut before: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for tenant in &tenants[1..] {
        for key in &keys {
            let store_key = tenant.store_key(key);
            before.insert(store_key.clone(), f.raw(&store_key).await.expect("stored"));
        }
    }
    let global_before = f.raw(&global.store_key(&global_key)).await.expect("global stored");

    let removed = tenants[0].clear().await.expect("clear");
    assert_eq!(removed, keys.len() as u64);
    for key in &keys {
        assert_eq!(tenants[0].get::<String>(key).await.unwrap(), None, "{key:?} survived the clear");
    }
    for (store_key, bytes) in &before {
        assert_eq!(f.raw(store_key).await.as_ref(), Some(bytes), "{store_key} changed");
    }
    assert_eq!(f.raw(&global.store_key(&global_key)).await, Some(global_before));
    if let Some(redis) = &f.redis {
        let mut expected: Vec<String> = before.keys().cloned().collect();
        expected.push(global.store_key(&global_key));
        expected.sort();
        assert_eq!(redis.keys().await, expected, "exactly the other tenants' and the global keys remain");
    }
    // Clearing again finds nothing; the cleared tenant's namespace works at once.
    assert_eq!(tenants[0].clear().await.unwrap(), 0);
    tenants[0].set(&keys[0], "again", None).await.unwrap();
    assert_eq!(tenants[0].get::<String>(&keys[0]).await.unwrap().as_deref(), Some("again"));
}

pub(crate) async fn ttl_is_honoured(f: &Fixture) {
    let cache = f.cache_tenant(&unique_name("ttl")).await.cache();
    let (short, long, forever) =
        (TenantKey::new("otp", "short"), TenantKey::new("otp", "long"), TenantKey::new("otp", "forever"));
    cache.set(&short, &1, Some(Duration::from_millis(300))).await.unwrap();
    cache.set(&long, &2, Some(Duration::from_secs(60))).await.unwrap();
    cache.set(&forever, &3, None).await.unwrap();
    if let Some(redis) = &f.redis {
        let short_ttl = redis.pttl(&cache.store_key(&short)).await;
        assert!((1..=300).contains(&short_ttl), "PTTL {short_ttl}");
        let long_ttl = redis.pttl(&cache.store_key(&long)).await;
        assert!((50_000..=60_000).contains(&long_ttl), "PTTL {long_ttl}");
        assert_eq!(redis.pttl(&cache.store_key(&forever)).await, -1, "no expiry");
    }
    assert_eq!(cache.get::<i32>(&short).await.unwrap(), Some(1));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(cache.get::<i32>(&short).await.unwrap(), None, "expired");
    assert_eq!(f.raw(&cache.store_key(&short)).await, None);
    assert_eq!(cache.get::<i32>(&long).await.unwrap(), Some(2));
    assert_eq!(cache.get::<i32>(&forever).await.unwrap(), Some(3));
    // Overwriting resets the TTL to the new one (here: none).
    cache.set(&long, &4, None).await.unwrap();
    if let Some(redis) = &f.redis {
        assert_eq!(redis.pttl(&cache.store_key(&long)).await, -1);
    }
}

pub(crate) async fn the_context_picks_the_namespace_even_in_spawned_tasks(f: &Fixture) {
    let (a, b) = prefix_pair("ctx");
    let (acme, acme2) = (f.cache_tenant(&a).await, f.cache_tenant(&b).await);
    let key = TenantKey::new("jobs", "last");
    // No tenant in scope: an error, never a shared namespace.
    assert!(matches!(tenancy::cache::current(), Err(Error::NoTenantInScope)));

    let from_scope = tenancy::scope(acme.clone(), async {
        let handle = tenancy::spawn(async {
            tokio::task::yield_now().await;
            let cache = tenancy::cache::current()?;
            cache.set(&TenantKey::new("jobs", "last"), "written by a spawned task", None).await?;
            Ok::<_, Error>(cache.tenant().to_string())
        })
        .expect("a tenant in scope");
        // A plain tokio::spawn does not carry the tenant.
        let plain = tokio::spawn(async { tenancy::cache::current().map(|cache| cache.tenant().to_string()) });
        (handle.await.expect("join"), plain.await.expect("join"))
    })
    .await;
    assert_eq!(from_scope.0.expect("spawned task"), a);
    assert!(matches!(from_scope.1, Err(Error::NoTenantInScope)));
    assert_eq!(acme.cache().get::<String>(&key).await.unwrap().as_deref(), Some("written by a spawned task"));
    assert_eq!(acme2.cache().get::<String>(&key).await.unwrap(), None);

    // Nested scopes: the innermost tenant's namespace.
    tenancy::scope(acme.clone(), async {
        tenancy::scope(acme2.clone(), async {
            tenancy::cache::current().unwrap().set(&key, "inner", None).await.unwrap();
        })
        .await;
        assert_eq!(tenancy::cache::current().unwrap().tenant().as_str(), a);
    })
    .await;
    assert_eq!(acme2.cache().get::<String>(&key).await.unwrap().as_deref(), Some("inner"));
    assert_eq!(acme.cache().get::<String>(&key).await.unwrap().as_deref(), Some("written by a spawned task"));
}

pub(crate) async fn get_or_load_loads_once_and_stores_no_failure(f: &Fixture) {
    let cache = f.cache_tenant(&unique_name("load")).await.cache();
    let key = TenantKey::new("reports", "2026-11");
    let failed: Result<i64, Error> = cache.get_or_load(&key, None, || async { Err(Error::NoTenantInScope) }).await;
    assert!(failed.is_err());
    assert_eq!(f.raw(&cache.store_key(&key)).await, None, "a failed load stores nothing");
    let calls = std::sync::atomic::AtomicU32::new(0);
    for _ in 0..3 {
        let value: i64 = cache
            .get_or_load(&key, Some(Duration::from_secs(30)), || async {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok::<_, Error>(42)
            })
            .await
            .unwrap();
        assert_eq!(value, 42);
    }
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(f.raw(&cache.store_key(&key)).await, Some(b"42".to_vec()));
    // A value of another shape is a clear error, not garbage.
    let wrong = cache.get::<Vec<String>>(&key).await;
    assert!(
        matches!(&wrong, Err(Error::CacheValue { action: "decode", model, .. }) if model == "reports"),
        "{wrong:?}"
    );
}

/// A cache-scoped model backed by a table, for the read-through helper.
pub(crate) mod session {
    use sea_orm::entity::prelude::*;

    #[tenancy::tenant_scoped(cache, ttl = 60)]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    #[sea_orm(table_name = "sessions")]
    pub(crate) struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub token: String,
        pub user_id: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A table-scoped model: not for the read-through helper.
pub(crate) mod note {
    use sea_orm::entity::prelude::*;

    #[tenancy::tenant_scoped]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    #[sea_orm(table_name = "cache_test_notes")]
    pub(crate) struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub tenant_id: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `sessions` in the tenant's own PostgreSQL database is a view over a function that
/// counts every read in `session_reads` before returning the rows, with an `INSTEAD OF`
/// trigger for writes: each statement that reads the model bumps the counter once, so
/// the test counts real database reads made through the tenant's handle.
// language=PostgreSQL
const COUNTING_SESSIONS: &str = r#"
CREATE TABLE session_rows (token text PRIMARY KEY, user_id integer NOT NULL);
CREATE TABLE session_reads (n integer NOT NULL);
INSERT INTO session_reads VALUES (0);
CREATE FUNCTION read_sessions() RETURNS SETOF session_rows LANGUAGE plpgsql AS $$
BEGIN
    UPDATE session_reads SET n = n + 1;
    RETURN QUERY SELECT * FROM session_rows;
END $$;
CREATE VIEW sessions AS SELECT * FROM read_sessions();
CREATE FUNCTION write_sessions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO session_rows VALUES (NEW.token, NEW.user_id);
        RETURN NEW;
    ELSIF TG_OP = 'UPDATE' THEN
        UPDATE session_rows SET token = NEW.token, user_id = NEW.user_id WHERE token = OLD.token;
        RETURN NEW;
    END IF;
    DELETE FROM session_rows WHERE token = OLD.token;
    RETURN OLD;
END $$;
CREATE TRIGGER write_sessions INSTEAD OF INSERT OR UPDATE OR DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION write_sessions();
"#;

async fn reads(db: &TenantConnection) -> i32 {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), "SELECT n FROM session_reads"))
        .await
        .expect("read counter")
        .expect("one row");
    row.try_get_by_index::<i32>(0).expect("integer")
}

pub(crate) async fn read_through_hits_the_database_once_then_the_cache(kind: Kind) {
    let Some((f, pg)) = Fixture::with_postgres(kind).await else { return };
    let id: TenantId = unique_name("rt").parse().unwrap();
    let new = NewTenant::new(id.clone(), "Read-through", Isolation::Database)
        .expect("a valid new tenant")
        .database(pg.new_database("secret"));
    f.tenancy.create_tenant(new, &()).await.expect("create database tenant");
    let db = f.tenancy.tenant(&id).await.expect("handle");
    db.execute_unprepared(COUNTING_SESSIONS).await.expect("counting sessions");
    let other = f.cache_tenant(&unique_name("rt_other")).await;

    let sessions = db.read_through::<session::Entity>().expect("cache-scoped");
    assert_eq!(sessions.ttl(), Some(Duration::from_secs(60)));
    let token = "tok:*?[1]";
    let inserted =
        sessions.insert(session::ActiveModel { token: Set(token.to_owned()), user_id: Set(1) }).await.expect("insert");
    let key = sessions.key(token);
    assert_eq!(key, TenantKey::new("sessions", "\"tok:*?[1]\""));
    assert_eq!(f.raw(&db.cache().store_key(&key)).await, None, "an insert caches nothing");

    let before = reads(&db).await;
    assert_eq!(sessions.find_by_id(token).await.unwrap(), Some(inserted.clone()));
    assert_eq!(reads(&db).await, before + 1, "the first read reaches the database once");
    let cached = f.raw(&db.cache().store_key(&key)).await.expect("cached after the first read");
    assert_eq!(serde_json::from_slice::<session::Model>(&cached).unwrap(), inserted);
    if let Some(redis) = &f.redis {
        let ttl = redis.pttl(&db.cache().store_key(&key)).await;
        assert!((50_000..=60_000).contains(&ttl), "the model's TTL: {ttl}");
    }
    for _ in 0..3 {
        assert_eq!(sessions.find_by_id(token).await.unwrap(), Some(inserted.clone()));
    }
    assert_eq!(reads(&db).await, before + 1, "later reads come from the cache");
    // The other tenant's namespace has no such entry.
    assert_eq!(other.cache().get::<session::Model>(&key).await.unwrap(), None);

    // A change made around the helper is not seen until invalidated: proof the value is
    // the cached one.
    db.execute_unprepared("UPDATE session_rows SET user_id = 99").await.unwrap();
    assert_eq!(sessions.find_by_id(token).await.unwrap().unwrap().user_id, 1);
    assert!(sessions.invalidate(token).await.unwrap());
    assert_eq!(sessions.find_by_id(token).await.unwrap().unwrap().user_id, 99);
    assert_eq!(reads(&db).await, before + 2);

    // An update through the helper drops the entry; the next read loads the new row.
    let mut active: session::ActiveModel = inserted.clone().into();
    active.user_id = Set(7);
    sessions.update(active).await.expect("update");
    assert_eq!(f.raw(&db.cache().store_key(&key)).await, None, "the update invalidated the entry");
    let after_update = reads(&db).await;
    assert_eq!(sessions.find_by_id(token).await.unwrap().unwrap().user_id, 7);
    assert_eq!(reads(&db).await, after_update + 1);

    // A delete through the helper drops it too; misses are not cached.
    assert_eq!(sessions.delete_by_id(token).await.unwrap(), 1);
    assert_eq!(f.raw(&db.cache().store_key(&key)).await, None);
    let after_delete = reads(&db).await;
    assert_eq!(sessions.find_by_id(token).await.unwrap(), None);
    assert_eq!(sessions.find_by_id(token).await.unwrap(), None);
    assert_eq!(reads(&db).await, after_delete + 2, "each miss asks the database");
    assert_eq!(f.raw(&db.cache().store_key(&key)).await, None);

    // Only cache-scoped models have the helper.
    let err = db.read_through::<note::Entity>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "Model 'cache_test_notes' is not cache-scoped: add #[tenant_scoped(cache)] (optionally with ttl = <seconds>) \
         to use the read-through cache helper"
    );
    // A cache-isolated tenant's helper reaches the cache, and its database refuses.
    let no_db = other.read_through::<session::Entity>().unwrap();
    let refused = no_db.find_by_id(token).await.unwrap_err();
    assert!(
        matches!(&refused, Error::Database(sea_orm::DbErr::Custom(msg)) if msg.contains("no relational storage")),
        "{refused:?}"
    );
}
