//! Cache isolation: each tenant gets a namespace in a shared cache.
//!
//! The cache is chosen once, on the [`TenancyBuilder`] with
//! [`cache`](crate::TenancyBuilder::cache): an in-process cache ([`CacheConfig::memory`],
//! the default) or Redis (`CacheConfig::redis`, feature `redis`). A tenant's view of it
//! comes from the tenant's handle, [`TenantConnection::cache`], or from the task-local
//! context, [`current`]; there is no other way to build one, so tenant code always works
//! inside the namespace of the tenant it serves, and no tenant in scope is an error.
//!
//! ```no_run
//! use std::time::Duration;
//! use tenancy::cache::{CacheConfig, TenantKey};
//!
//! # #[cfg(feature = "redis")]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let tenancy = tenancy::Tenancy::builder(tenancy::master_url_from_env())
//!     .cache(CacheConfig::redis_from_env()) // TENANCY_CACHE_URL, default redis://127.0.0.1:6379
//!     .connect()
//!     .await?;
//! let acme = tenancy.tenant("acme").await?;
//! let cache = acme.cache();
//! let key = TenantKey::new("carts", "user-7");
//! cache.set(&key, &vec![3, 1, 4], Some(Duration::from_secs(600))).await?;
//! let cart: Option<Vec<i32>> = cache.get(&key).await?;
//! assert_eq!(cart, Some(vec![3, 1, 4]));
//! cache.clear().await?; // acme's keys only
//! # Ok(()) }
//! ```
//!
//! # Keys
//!
//! A tenant's entry lives at `<prefix>:{<tenant>}:<model>:<key>` and a global one at
//! `<prefix>:g:<model>:<key>`, with every component percent-encoded so that no tenant
//! id, model name or key can collide with another's, or match another tenant's clear
//! (see the `key` module notes in the source). The `{<tenant>}` part is a Redis Cluster
//! hash tag, so one tenant's keys share a slot. The prefix ([`CacheConfig::prefix`],
//! default [`DEFAULT_PREFIX`]) keeps applications sharing one Redis apart.
//!
//! Tenant keys ([`TenantKey`]) and global keys ([`GlobalKey`]) are different types: a
//! [`TenantCache`] takes only the former and a [`GlobalCache`] only the latter, so data
//! cannot land in the shared namespace by accident:
//!
//! ```compile_fail
//! # async fn demo(acme: tenancy::TenantConnection) -> tenancy::Result<()> {
//! use tenancy::cache::GlobalKey;
//! acme.cache().set(&GlobalKey::new("plans", "gold"), &1, None).await?; // a tenant cache takes TenantKey
//! # Ok(()) }
//! ```
//!
//! # Values, expiry and clearing
//!
//! Values are serialized with serde (JSON), so any `Serialize` type can be stored and
//! read back as any compatible `Deserialize` type. An entry expires after the TTL given
//! to [`TenantCache::set`] (`None`: never, unless evicted); the Redis backend stores it
//! with millisecond precision (`SET ... PX`), and a TTL under a millisecond (zero
//! included, which Redis refuses) becomes one millisecond.
//!
//! [`TenantCache::clear`] removes the tenant's keys and nothing else. On Redis it walks
//! the keyspace with `SCAN ... MATCH <prefix>:{<tenant>}:* COUNT 1000` and removes what
//! it finds with `UNLINK` in batches of at most that size, never `FLUSHDB`; other
//! tenants keep reading and writing meanwhile. Keys the tenant writes *while* it is being
//! cleared may survive (SCAN promises only the keys that existed throughout). On Redis
//! Cluster (a `redis+cluster://` URL) it scans every primary the cluster lists at that
//! moment, so a slot that moved, or is being migrated with its keys on two nodes, is
//! cleared wherever its keys are.
//!
//! # When the cache is down
//!
//! Every call returns an error, [`Error::CacheUnavailable`] (or [`Error::CacheCommand`]
//! when the server refuses a command): never a panic, and never another tenant's data.
//! The Redis connection is opened on first use and reopened after a failure, so
//! [`Tenancy::connect`](crate::Tenancy::connect) works while Redis is down and the cache
//! works again as soon as it is back. The read-through helper ([`ReadThrough`])
//! reports the cache error too rather than silently doubling the database's load.

mod key;
mod memory;
mod read_through;
#[cfg(feature = "redis")]
mod redis;

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use self::memory::MemoryStore;
pub use self::read_through::ReadThrough;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::RedisStore;
use crate::{Error, Result, TenantId};
#[cfg(doc)]
use crate::{Tenancy, TenancyBuilder, TenantConnection};

/// The key prefix used unless [`CacheConfig::prefix`] sets another.
pub const DEFAULT_PREFIX: &str = "tenancy";

/// The environment variable `CacheConfig::redis_from_env` reads the Redis URL from.
pub const CACHE_URL_ENV: &str = "TENANCY_CACHE_URL";

/// The Redis URL `CacheConfig::redis_from_env` uses when [`CACHE_URL_ENV`] is unset.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The in-process cache's default size: 64 MiB of keys and serialized values.
pub const DEFAULT_MEMORY_CAPACITY: u64 = 64 * 1024 * 1024;

/// A cache backend: stores bytes under the keys this module builds.
///
/// Implemented by [`MemoryStore`] and `RedisStore` (feature `redis`); plug in another with
/// [`CacheConfig::custom`]. Keys arrive fully built and encoded (see the module docs), so
/// a store only stores; the tenant boundary is in how the keys are made.
#[async_trait::async_trait]
pub trait CacheStore: Send + Sync + fmt::Debug + 'static {
    /// The bytes stored at `key`, if any and not expired.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// Stores `value` at `key`, replacing what was there, expiring after `ttl` if given.
    async fn set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<()>;

    /// Removes `key`; whether it was there.
    async fn delete(&self, key: &str) -> Result<bool>;

    /// Removes every key that starts with `namespace` (which contains no glob
    /// character), and only those; how many were removed.
    async fn delete_namespace(&self, namespace: &str) -> Result<u64>;

    /// Moves every key that starts with `from` to the same key starting with `to` instead
    /// (both contain no glob character), keeping each value and what is left of its TTL;
    /// how many moved. A key already at the destination is replaced. `None`, having moved
    /// nothing, when the store cannot move keys: the default (a tenant rename then clears
    /// the old namespace instead, and refuses to rename a cache-isolated tenant, whose
    /// only storage the namespace is).
    async fn move_namespace(&self, from: &str, to: &str) -> Result<Option<u64>> {
        let _ = (from, to);
        Ok(None)
    }

    /// Calls `visit` with every key that starts with `prefix` (which contains no glob
    /// character), for operations that survey the store (`tenancydoctor` looks for the
    /// namespaces of tenants that no longer exist). Returns `false`, having visited
    /// nothing, when the store cannot list its keys: the default.
    async fn visit_keys(&self, prefix: &str, visit: &mut (dyn for<'k> FnMut(&'k str) + Send)) -> Result<bool> {
        let _ = (prefix, visit);
        Ok(false)
    }
}

/// Which cache [`Tenancy`] uses, and its key prefix: give it to
/// [`TenancyBuilder::cache`].
#[derive(Clone)]
pub struct CacheConfig {
    backend: Backend,
    prefix: String,
}

#[derive(Clone)]
enum Backend {
    Memory {
        capacity: u64,
    },
    #[cfg(feature = "redis")]
    Redis {
        url: String,
    },
    Custom(Arc<dyn CacheStore>),
}

impl fmt::Debug for CacheConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("CacheConfig");
        match &self.backend {
            Backend::Memory { capacity } => out.field("memory_capacity", capacity),
            #[cfg(feature = "redis")]
            Backend::Redis { url } => out.field("redis", &crate::redact_url(url)),
            Backend::Custom(store) => out.field("custom", store),
        };
        out.field("prefix", &self.prefix).finish()
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self::memory()
    }
}

impl CacheConfig {
    /// The in-process cache ([`MemoryStore`], on `moka`), holding up to
    /// [`DEFAULT_MEMORY_CAPACITY`] bytes: the default. Each process has its own, so use
    /// Redis when several processes serve the same tenants.
    pub fn memory() -> Self {
        Self { backend: Backend::Memory { capacity: DEFAULT_MEMORY_CAPACITY }, prefix: DEFAULT_PREFIX.to_owned() }
    }

    /// The in-process cache, holding up to `bytes` of keys and serialized values before
    /// it evicts the least useful entries.
    pub fn memory_with_capacity(bytes: u64) -> Self {
        Self { backend: Backend::Memory { capacity: bytes }, ..Self::memory() }
    }

    /// Redis at `url` (`redis://[user:password@]host[:port][/db]` or
    /// `redis+unix:///path`), through one multiplexed connection that reconnects by
    /// itself; or a Redis Cluster at
    /// `redis+cluster://[user:password@]host:port[,host:port…]` (any of its nodes, the
    /// others are discovered). Nothing is connected until the first cache call (a
    /// cluster's connections are opened in the background).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(url: impl Into<String>) -> Self {
        Self { backend: Backend::Redis { url: url.into() }, ..Self::memory() }
    }

    /// Redis at the URL in `TENANCY_CACHE_URL`, or [`DEFAULT_REDIS_URL`] when it is unset
    /// or empty.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis_from_env() -> Self {
        let url = std::env::var(CACHE_URL_ENV).ok().filter(|url| !url.trim().is_empty());
        Self::redis(url.unwrap_or_else(|| DEFAULT_REDIS_URL.to_owned()))
    }

    /// A store of the application's own.
    pub fn custom(store: Arc<dyn CacheStore>) -> Self {
        Self { backend: Backend::Custom(store), ..Self::memory() }
    }

    /// The first component of every key (default [`DEFAULT_PREFIX`]), so applications
    /// (or test runs) sharing one Redis never see each other's keys. Any string works:
    /// it is encoded like every other component.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Opens the store: cheap, nothing is connected yet.
    pub(crate) fn open(&self) -> Result<SharedCache> {
        let store: Arc<dyn CacheStore> = match &self.backend {
            Backend::Memory { capacity } => Arc::new(MemoryStore::new(*capacity)),
            #[cfg(feature = "redis")]
            Backend::Redis { url } => Arc::new(RedisStore::open(url)?),
            Backend::Custom(store) => Arc::clone(store),
        };
        Ok(SharedCache { store, prefix: self.prefix.as_str().into() })
    }
}

/// The cache a [`Tenancy`] holds, shared by its clones and every handle.
#[derive(Clone, Debug)]
pub(crate) struct SharedCache {
    store: Arc<dyn CacheStore>,
    prefix: Arc<str>,
}

impl SharedCache {
    /// The shared, tenant-less part of the cache (see [`Tenancy::global_cache`]).
    pub(crate) fn global(&self) -> GlobalCache {
        GlobalCache { store: Arc::clone(&self.store), namespace: key::global_namespace(&self.prefix).into() }
    }

    /// The store itself, below the key layout.
    pub(crate) fn store(&self) -> &Arc<dyn CacheStore> {
        &self.store
    }

    /// The tenant namespaces present in the store, as `(tenant as encoded, keys)`, sorted;
    /// `None` when the store cannot list its keys. Walks every tenant key (with `SCAN` on
    /// Redis): an operator's survey, not a request path.
    pub(crate) async fn tenant_namespaces(&self) -> Result<Option<Vec<(String, u64)>>> {
        let start = key::tenant_keys_start(&self.prefix);
        let mut found = std::collections::BTreeMap::<String, u64>::new();
        let listed = self
            .store
            .visit_keys(&start, &mut |store_key| {
                if let Some(tenant) = key::tenant_of_key(&start, store_key) {
                    *found.entry(tenant.to_owned()).or_default() += 1;
                }
            })
            .await?;
        Ok(listed.then(|| found.into_iter().collect()))
    }

    /// Moves the keys of tenant `from`'s namespace to tenant `to`'s (see
    /// [`CacheStore::move_namespace`]).
    pub(crate) async fn move_tenant(&self, from: &TenantId, to: &TenantId) -> Result<Option<u64>> {
        let (from, to) =
            (key::tenant_namespace(&self.prefix, from.as_str()), key::tenant_namespace(&self.prefix, to.as_str()));
        self.store.move_namespace(&from, &to).await
    }

    /// A tenant's namespace (see [`TenantConnection::cache`]).
    pub(crate) fn tenant(&self, id: &TenantId) -> TenantCache {
        TenantCache {
            store: Arc::clone(&self.store),
            namespace: key::tenant_namespace(&self.prefix, id.as_str()).into(),
            tenant: id.clone(),
        }
    }
}

/// The cache of the tenant in scope ([`crate::current`]).
///
/// # Errors
/// [`Error::NoTenantInScope`] outside a [`crate::scope`].
pub fn current() -> Result<TenantCache> {
    Ok(crate::current()?.cache())
}

/// The key of an entry in a tenant's namespace: a model (a group of keys, such as a
/// table name) and a key within it. Which tenant is up to the [`TenantCache`] it is
/// used with.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TenantKey {
    model: Cow<'static, str>,
    key: String,
}

impl TenantKey {
    /// The entry `key` of `model`; any strings work.
    pub fn new(model: impl Into<Cow<'static, str>>, key: impl Into<String>) -> Self {
        Self { model: model.into(), key: key.into() }
    }

    /// The model (key group).
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The key within the model.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// The key of an entry shared by all tenants (see [`Tenancy::global_cache`]). A different
/// type from [`TenantKey`] so that neither can be used where the other belongs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GlobalKey {
    model: Cow<'static, str>,
    key: String,
}

impl GlobalKey {
    /// The shared entry `key` of `model`; any strings work.
    pub fn new(model: impl Into<Cow<'static, str>>, key: impl Into<String>) -> Self {
        Self { model: model.into(), key: key.into() }
    }

    /// The model (key group).
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The key within the model.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// One tenant's namespace in the cache; from [`TenantConnection::cache`] or [`current`].
///
/// Cheap to clone. Every method reaches only keys of this tenant.
#[derive(Clone)]
pub struct TenantCache {
    store: Arc<dyn CacheStore>,
    tenant: TenantId,
    namespace: Arc<str>,
}

impl fmt::Debug for TenantCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantCache")
            .field("tenant", &self.tenant)
            .field("namespace", &self.namespace)
            .field("store", &self.store)
            .finish()
    }
}

impl TenantCache {
    /// The tenant.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The start of every store key of this tenant, `<prefix>:{<tenant>}:` encoded.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The store key of `key` (for operations: inspecting Redis by hand).
    pub fn store_key(&self, key: &TenantKey) -> String {
        key::full_key(&self.namespace, &key.model, &key.key)
    }

    /// The value at `key`, if there is one and it has not expired.
    ///
    /// # Errors
    /// [`Error::CacheUnavailable`] / [`Error::CacheCommand`] from the store;
    /// [`Error::CacheValue`] when the stored value is not a `T`.
    pub async fn get<T: DeserializeOwned>(&self, key: &TenantKey) -> Result<Option<T>> {
        get(&*self.store, &self.store_key(key), &key.model).await
    }

    /// Stores `value` at `key`, expiring after `ttl` (`None`: no expiry).
    ///
    /// # Errors
    /// As [`TenantCache::get`].
    pub async fn set<T: Serialize + ?Sized>(&self, key: &TenantKey, value: &T, ttl: Option<Duration>) -> Result<()> {
        set(&*self.store, &self.store_key(key), &key.model, value, ttl).await
    }

    /// Removes `key`; whether it was there.
    ///
    /// # Errors
    /// As [`TenantCache::get`].
    pub async fn delete(&self, key: &TenantKey) -> Result<bool> {
        self.store.delete(&self.store_key(key)).await
    }

    /// The value at `key`, or else the one `load` produces, which is stored with `ttl`
    /// and returned. Concurrent misses each run `load` (no single-flight); the last
    /// store wins.
    ///
    /// # Errors
    /// `load`'s error (nothing is stored then), or the cache's, converted into `E`.
    pub async fn get_or_load<T, E, F, Fut>(&self, key: &TenantKey, ttl: Option<Duration>, load: F) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        E: From<Error>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let store_key = self.store_key(key);
        if let Some(value) = get(&*self.store, &store_key, &key.model).await? {
            return Ok(value);
        }
        let value = load().await?;
        set(&*self.store, &store_key, &key.model, &value, ttl).await?;
        Ok(value)
    }

    /// Removes every key of this tenant, and no other; how many were removed.
    ///
    /// # Errors
    /// As [`TenantCache::get`]; on Redis, keys removed before the error stay removed.
    pub async fn clear(&self) -> Result<u64> {
        self.store.delete_namespace(&self.namespace).await
    }
}

/// The shared, tenant-less part of the cache; from [`Tenancy::global_cache`].
#[derive(Clone, Debug)]
pub struct GlobalCache {
    store: Arc<dyn CacheStore>,
    namespace: Arc<str>,
}

impl GlobalCache {
    /// The store key of `key`.
    pub fn store_key(&self, key: &GlobalKey) -> String {
        key::full_key(&self.namespace, &key.model, &key.key)
    }

    /// The value at `key`, if any.
    ///
    /// # Errors
    /// As [`TenantCache::get`].
    pub async fn get<T: DeserializeOwned>(&self, key: &GlobalKey) -> Result<Option<T>> {
        get(&*self.store, &self.store_key(key), &key.model).await
    }

    /// Stores `value` at `key`, expiring after `ttl` (`None`: no expiry).
    ///
    /// # Errors
    /// As [`TenantCache::get`].
    pub async fn set<T: Serialize + ?Sized>(&self, key: &GlobalKey, value: &T, ttl: Option<Duration>) -> Result<()> {
        set(&*self.store, &self.store_key(key), &key.model, value, ttl).await
    }

    /// Removes `key`; whether it was there.
    ///
    /// # Errors
    /// As [`TenantCache::get`].
    pub async fn delete(&self, key: &GlobalKey) -> Result<bool> {
        self.store.delete(&self.store_key(key)).await
    }
}

async fn get<T: DeserializeOwned>(store: &dyn CacheStore, store_key: &str, model: &str) -> Result<Option<T>> {
    let Some(bytes) = store.get(store_key).await? else { return Ok(None) };
    serde_json::from_slice(&bytes).map(Some).map_err(|source| Error::CacheValue {
        action: "decode",
        model: model.to_owned(),
        type_name: std::any::type_name::<T>(),
        source,
    })
}

async fn set<T: Serialize + ?Sized>(
    store: &dyn CacheStore,
    store_key: &str,
    model: &str,
    value: &T,
    ttl: Option<Duration>,
) -> Result<()> {
    let bytes = serde_json::to_vec(value).map_err(|source| Error::CacheValue {
        action: "encode",
        model: model.to_owned(),
        type_name: std::any::type_name::<T>(),
        source,
    })?;
    store.set(store_key, bytes, ttl).await
}
