//! The Redis cache backend.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError};

use super::CacheStore;
use super::key::namespace_pattern;
use crate::{Error, Result};

/// How many keys one `SCAN` step looks at, and so the most one `UNLINK` removes: small
/// enough that no step blocks the server noticeably for other tenants.
const CLEAR_BATCH: usize = 1000;

/// The Redis [`CacheStore`] (feature `redis`): one multiplexed connection, opened on
/// first use and reopened after a failure by `redis`'s connection manager.
#[derive(Clone)]
pub struct RedisStore {
    manager: ConnectionManager,
    /// The URL with any password redacted, for error messages.
    target: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("target", &self.target).finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store for the Redis server at `url`; nothing is connected until the first call.
    /// Must be called inside a tokio runtime (the connection manager starts a task).
    ///
    /// # Errors
    /// [`Error::InvalidCacheUrl`] when `url` is not a Redis URL this build supports
    /// (`rediss://` needs TLS, which is not compiled in).
    pub fn open(url: &str) -> Result<Self> {
        let target = crate::redact_url(url);
        let invalid = |err: RedisError| Error::InvalidCacheUrl {
            url: target.clone(),
            reason: format!("{err}; expected redis://[user:password@]host[:port][/db] or redis+unix:///path"),
        };
        let client = Client::open(url).map_err(invalid)?;
        // A request fails within seconds when Redis is away, instead of waiting through
        // the manager's default six reconnection attempts; the next request retries.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(200))
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)));
        let manager = ConnectionManager::new_lazy_with_config(client, config).map_err(invalid)?;
        Ok(Self { manager, target })
    }

    fn error(&self, command: &'static str, err: RedisError) -> Error {
        let target = self.target.clone();
        if err.is_io_error() || err.is_connection_refusal() || err.is_timeout() || err.is_connection_dropped() {
            Error::CacheUnavailable { target, source: Box::new(err) }
        } else {
            Error::CacheCommand { command, target, source: Box::new(err) }
        }
    }

    async fn unlink(&self, keys: &[Vec<u8>]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut conn = self.manager.clone();
        redis::cmd("UNLINK").arg(keys).query_async(&mut conn).await.map_err(|err| self.error("UNLINK", err))
    }

    async fn scan(&self, cursor: u64, pattern: &str) -> Result<(u64, Vec<Vec<u8>>)> {
        let mut conn = self.manager.clone();
        redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(CLEAR_BATCH)
            .query_async(&mut conn)
            .await
            .map_err(|err| self.error("SCAN", err))
    }
}

#[async_trait::async_trait]
impl CacheStore for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let mut conn = self.manager.clone();
        redis::cmd("GET").arg(key).query_async(&mut conn).await.map_err(|err| self.error("GET", err))
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<()> {
        let mut conn = self.manager.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        if let Some(ttl) = ttl {
            // Redis refuses `PX 0`; a TTL under a millisecond rounds up to one.
            let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            cmd.arg("PX").arg(millis);
        }
        cmd.query_async::<()>(&mut conn).await.map_err(|err| self.error("SET", err))
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let mut conn = self.manager.clone();
        let removed: u64 =
            redis::cmd("UNLINK").arg(key).query_async(&mut conn).await.map_err(|err| self.error("UNLINK", err))?;
        Ok(removed > 0)
    }

    async fn delete_namespace(&self, namespace: &str) -> Result<u64> {
        let pattern = namespace_pattern(namespace);
        let (mut cursor, mut found) = self.scan(0, &pattern).await?;
        let mut removed = 0;
        // Each batch is unlinked while the next SCAN step runs, over the same multiplexed
        // connection: one round trip per step instead of two.
        while cursor != 0 {
            let (unlinked, next) = tokio::join!(self.unlink(&found), self.scan(cursor, &pattern));
            removed += unlinked?;
            (cursor, found) = next?;
        }
        removed += self.unlink(&found).await?;
        Ok(removed)
    }

    async fn move_namespace(&self, from: &str, to: &str) -> Result<Option<u64>> {
        // `RENAME` keeps the value and its TTL. Keys renamed leave the pattern, so the
        // scan goes on over the rest; one key at a time, in SCAN-sized steps. (On Redis
        // Cluster the two namespaces hash to different slots: run a rename against a
        // single node, or move the keys with DUMP/RESTORE.)
        let pattern = namespace_pattern(from);
        let mut cursor = 0;
        let mut moved = 0;
        loop {
            let (next, keys) = self.scan(cursor, &pattern).await?;
            for key in keys {
                let Some(rest) = key.strip_prefix(from.as_bytes()) else { continue };
                let mut target = to.as_bytes().to_vec();
                target.extend_from_slice(rest);
                let mut conn = self.manager.clone();
                match redis::cmd("RENAME").arg(&key).arg(&target).query_async::<()>(&mut conn).await {
                    Ok(()) => moved += 1,
                    // Expired between the scan and the rename: nothing to move.
                    Err(err) if err.to_string().contains("no such key") => {}
                    Err(err) => return Err(self.error("RENAME", err)),
                }
            }
            if next == 0 {
                return Ok(Some(moved));
            }
            cursor = next;
        }
    }

    async fn visit_keys(&self, prefix: &str, visit: &mut (dyn for<'k> FnMut(&'k str) + Send)) -> Result<bool> {
        // SCAN in batches, never KEYS: the server keeps serving between steps.
        let pattern = namespace_pattern(prefix);
        let mut cursor = 0;
        loop {
            let (next, keys) = self.scan(cursor, &pattern).await?;
            for key in &keys {
                visit(&String::from_utf8_lossy(key));
            }
            if next == 0 {
                return Ok(true);
            }
            cursor = next;
        }
    }
}
