//! The in-process cache backend, on `moka`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;

use super::CacheStore;
use crate::Result;

/// The in-process [`CacheStore`]: a `moka` cache bounded by the bytes of its keys and
/// values, with a TTL per entry. Private to the process; clearing a namespace walks the
/// cache and removes the namespace's entries.
#[derive(Clone)]
pub struct MemoryStore {
    cache: Cache<String, Entry>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").field("entries", &self.cache.entry_count()).finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct Entry {
    bytes: Arc<[u8]>,
    ttl: Option<Duration>,
    /// When the entry expires: what a move keeps.
    expires_at: Option<Instant>,
}

impl Entry {
    fn new(bytes: Arc<[u8]>, ttl: Option<Duration>) -> Entry {
        Entry { bytes, ttl, expires_at: ttl.and_then(|ttl| Instant::now().checked_add(ttl)) }
    }
}

/// Each entry lives for the TTL it was stored with, counted from its last write.
struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _key: &String, value: &Entry, _created_at: Instant) -> Option<Duration> {
        value.ttl
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Entry,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        value.ttl
    }
}

impl MemoryStore {
    /// A store holding up to `capacity` bytes of keys and values.
    pub fn new(capacity: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(capacity)
            .weigher(|key: &String, entry: &Entry| u32::try_from(key.len() + entry.bytes.len()).unwrap_or(u32::MAX))
            .expire_after(PerEntryTtl)
            .build();
        Self { cache }
    }
}

#[async_trait::async_trait]
impl CacheStore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.cache.get(key).await.map(|entry| entry.bytes.to_vec()))
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<()> {
        self.cache.insert(key.to_owned(), Entry::new(value.into(), ttl)).await;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        Ok(self.cache.remove(key).await.is_some())
    }

    async fn delete_namespace(&self, namespace: &str) -> Result<u64> {
        // Collect first: removing while iterating is allowed, but the iterator may then
        // skip or repeat entries.
        let keys: Vec<Arc<String>> =
            self.cache.iter().filter(|(key, _)| key.starts_with(namespace)).map(|(key, _)| key).collect();
        let mut removed = 0;
        for key in keys {
            if self.cache.remove(key.as_str()).await.is_some() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn move_namespace(&self, from: &str, to: &str) -> Result<Option<u64>> {
        let keys: Vec<Arc<String>> =
            self.cache.iter().filter(|(key, _)| key.starts_with(from)).map(|(key, _)| key).collect();
        let mut moved = 0;
        for key in keys {
            let Some(entry) = self.cache.remove(key.as_str()).await else { continue };
            let ttl = match entry.expires_at {
                Some(at) => match at.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    // Expired meanwhile: nothing to move.
                    _ => continue,
                },
                None => None,
            };
            let target = format!("{to}{}", &key[from.len()..]);
            self.cache.insert(target, Entry::new(entry.bytes, ttl)).await;
            moved += 1;
        }
        Ok(Some(moved))
    }

    async fn visit_keys(&self, prefix: &str, visit: &mut (dyn for<'k> FnMut(&'k str) + Send)) -> Result<bool> {
        for (key, _) in self.cache.iter() {
            if key.starts_with(prefix) {
                visit(&key);
            }
        }
        Ok(true)
    }
}
