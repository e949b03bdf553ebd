//! The bounded cache of database-per-tenant connection pools.
//!
//! Thousands of database-isolated tenants must not mean thousands of pools: the cache
//! holds at most `budget / per_pool` pools, evicting the least recently used one when a
//! tenant outside it is needed. The budget is a hard limit on the connections the tenant
//! pools can hold at once, enforced by a semaphore: every live pool holds `per_pool`
//! permits from the moment it is opened until its `close()` has completed, so a pool
//! being closed still counts until its last connection is really gone.
//!
//! Why not `moka`: its eviction listener runs synchronously (or detached) after the entry
//! has already left the cache, with no way for the caller that triggered the eviction to
//! wait for the evicted pool's asynchronous `close()` before opening a new one, and its
//! capacity is approximate (admission policy, deferred maintenance). Neither gives the
//! hard connection guarantee. The cache here is small (a few hundred pools at most), so
//! a hash map with a linear scan for the eviction victim is simpler and fast enough.
//!
//! Pools are keyed by tenant id and opened from the registry record the handle was made
//! with. The live registry ([`crate::registry::live`]) closes the pool of a tenant that is
//! suspended, deleted or whose row changed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sea_orm::{ConnAcquireErr, DatabaseConnection, DbBackend, DbErr};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::url::connect_pool;
use crate::{Error, Result, TenantId};

/// The default global budget of connections all tenant database pools may hold together.
pub const DEFAULT_TENANT_CONNECTION_BUDGET: u32 = 20;

/// The default size of each tenant's database pool.
pub const DEFAULT_CONNECTIONS_PER_TENANT_POOL: u32 = 2;

/// The default time after which an idle connection of a tenant pool is closed.
pub const DEFAULT_TENANT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long opening a tenant pool waits for room in the budget before giving up, the
/// same as the master pool's acquire timeout: a full budget behaves like a full pool.
const BUDGET_TIMEOUT: Duration = Duration::from_secs(8);

/// The sizing of the tenant pool cache, as set on [`crate::TenancyBuilder`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct PoolSettings {
    pub(crate) budget: u32,
    pub(crate) per_pool: u32,
    pub(crate) idle_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            budget: DEFAULT_TENANT_CONNECTION_BUDGET,
            per_pool: DEFAULT_CONNECTIONS_PER_TENANT_POOL,
            idle_timeout: DEFAULT_TENANT_POOL_IDLE_TIMEOUT,
        }
    }
}

impl PoolSettings {
    /// The settings with a pool no larger than the budget, so at least one pool fits.
    fn normalised(self) -> Self {
        let per_pool = self.per_pool.max(1);
        PoolSettings { budget: self.budget.max(per_pool), per_pool, ..self }
    }
}

/// The cache of open tenant pools, shared by the clones of one [`crate::Tenancy`].
pub(crate) struct TenantPools {
    settings: PoolSettings,
    budget: Arc<Semaphore>,
    state: Mutex<State>,
    /// Evicted pools whose close has not completed: their permits are on the way back.
    releasing: Arc<AtomicUsize>,
    /// Signalled when a pool enters the cache: a waiting opener may now evict it.
    inserted: Notify,
}

impl std::fmt::Debug for TenantPools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantPools")
            .field("settings", &self.settings)
            .field("open", &self.lock().pools.len())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    /// A logical clock: bumped on every use, so the smallest `last_used` is the LRU pool.
    tick: u64,
    pools: HashMap<TenantId, Slot>,
    /// One gate per tenant whose pool is being opened, so concurrent first uses of a
    /// tenant open one pool, not one each.
    opening: HashMap<TenantId, Arc<tokio::sync::Mutex<()>>>,
    /// Openers waiting for room in the budget.
    waiting: usize,
}

struct Slot {
    entry: Arc<PoolEntry>,
    last_used: u64,
}

/// An open tenant pool and the budget permits it holds.
///
/// Callers hold an `Arc` of it for the duration of one operation (a lease), so a pool
/// evicted meanwhile is closed only once the operations using it are done.
pub(crate) struct PoolEntry {
    pool: DatabaseConnection,
    permits: Option<OwnedSemaphorePermit>,
    /// Set when evicted, so the close task takes it off [`TenantPools::releasing`].
    evicted: AtomicBool,
    releasing: Arc<AtomicUsize>,
}

impl PoolEntry {
    /// The tenant's pool.
    pub(crate) fn connection(&self) -> &DatabaseConnection {
        &self.pool
    }

    /// Whether no connection of the pool is checked out (by a query, transaction or
    /// stream), so closing it now waits for nobody.
    fn is_idle(&self) -> bool {
        match self.pool.get_database_backend() {
            DbBackend::Postgres => {
                let pool = self.pool.get_postgres_connection_pool();
                pool.size() as usize == pool.num_idle()
            }
            DbBackend::Sqlite => {
                let pool = self.pool.get_sqlite_connection_pool();
                pool.size() as usize == pool.num_idle()
            }
            _ => true,
        }
    }
}

impl Drop for PoolEntry {
    fn drop(&mut self) {
        // The last lease is gone (the pool was evicted or the `Tenancy` dropped): close
        // the pool and only then give its permits back, so the budget counts the
        // connections until they are really closed. The opener that evicted this pool
        // waits for those permits, which is how it awaits the close.
        let pool = self.pool.clone();
        let permits = self.permits.take();
        let releasing = self.evicted.load(Ordering::Acquire).then(|| Arc::clone(&self.releasing));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(err) = pool.close().await {
                    tracing::warn!(error = %err, "closing an evicted tenant pool failed");
                }
                drop(permits);
                if let Some(releasing) = releasing {
                    releasing.fetch_sub(1, Ordering::AcqRel);
                }
            });
        }
        // Without a runtime (dropped after it shut down) there is nobody left to open
        // another pool; the pool's connections close as it is dropped.
    }
}

impl TenantPools {
    pub(crate) fn new(settings: PoolSettings) -> TenantPools {
        let settings = settings.normalised();
        TenantPools {
            budget: Arc::new(Semaphore::new(settings.budget as usize)),
            settings,
            state: Mutex::new(State::default()),
            releasing: Arc::new(AtomicUsize::new(0)),
            inserted: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock, and the state stays consistent at every
        // step anyway: a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached pool of `id`, marked as just used.
    fn cached(&self, id: &TenantId) -> Option<Arc<PoolEntry>> {
        let mut state = self.lock();
        state.tick += 1;
        let tick = state.tick;
        let slot = state.pools.get_mut(id)?;
        slot.last_used = tick;
        Some(Arc::clone(&slot.entry))
    }

    /// A lease on the pool of a database-isolated tenant, opening it (and evicting the
    /// least recently used pool if the budget is full) when it is not cached.
    ///
    /// `url` gives the URL to open the pool with (it may decrypt a password, so it is
    /// called only when a pool is opened).
    pub(crate) async fn lease(&self, id: &TenantId, url: impl FnOnce() -> Result<String>) -> Result<Arc<PoolEntry>> {
        if let Some(entry) = self.cached(id) {
            return Ok(entry);
        }
        let gate = Arc::clone(self.lock().opening.entry(id.clone()).or_default());
        let result = {
            let _opening = gate.lock().await;
            self.open(id, url).await
        };
        let mut state = self.lock();
        if state.opening.get(id).is_some_and(|current| Arc::ptr_eq(current, &gate)) {
            state.opening.remove(id);
        }
        result
    }

    async fn open(&self, id: &TenantId, url: impl FnOnce() -> Result<String>) -> Result<Arc<PoolEntry>> {
        // Another task may have opened it while this one waited at the gate.
        if let Some(entry) = self.cached(id) {
            return Ok(entry);
        }
        let url = url()?;
        let permits = self.reserve().await?;
        let pool = connect_pool(&url, None, self.settings.per_pool, Some(self.settings.idle_timeout), true).await?;
        let entry = Arc::new(PoolEntry {
            pool,
            permits: Some(permits),
            evicted: AtomicBool::new(false),
            releasing: Arc::clone(&self.releasing),
        });
        {
            let mut state = self.lock();
            state.tick += 1;
            let tick = state.tick;
            let slot = state.pools.entry(id.clone()).or_insert(Slot { entry: Arc::clone(&entry), last_used: tick });
            // Should two pools of one tenant ever race in, the first stays cached and the
            // second is closed once its caller is done with it.
            slot.last_used = tick;
        }
        self.inserted.notify_waiters();
        Ok(entry)
    }

    /// Takes `per_pool` permits from the budget, evicting least recently used pools as
    /// long as the pools already on their way out do not cover every waiting opener.
    ///
    /// A waiter wakes when permits come back (an evicted pool finished closing) or when a
    /// pool enters the cache (one more candidate to evict): without the latter, openers
    /// that found the cache empty because every pool was being opened would wait for
    /// permits that no one frees.
    async fn reserve(&self) -> Result<OwnedSemaphorePermit> {
        let wanted = self.settings.per_pool;
        if let Ok(permits) = Arc::clone(&self.budget).try_acquire_many_owned(wanted) {
            return Ok(permits);
        }
        let deadline = tokio::time::Instant::now() + BUDGET_TIMEOUT;
        let _waiting = Waiting::new(self);
        loop {
            // Registered before looking, so an insertion from here on is not missed.
            let inserted = self.inserted.notified();
            tokio::pin!(inserted);
            inserted.as_mut().enable();
            if let Ok(permits) = Arc::clone(&self.budget).try_acquire_many_owned(wanted) {
                return Ok(permits);
            }
            // Dropped outside the lock: dropping the last lease starts the close, which
            // returns the permits.
            let victim = self.evict_if_needed();
            drop(victim);
            tokio::select! {
                permits = Arc::clone(&self.budget).acquire_many_owned(wanted) => {
                    // The semaphore is never closed.
                    if let Ok(permits) = permits {
                        return Ok(permits);
                    }
                }
                () = &mut inserted => {}
                () = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(
                        budget = self.settings.budget,
                        per_pool = self.settings.per_pool,
                        "tenant connection budget exhausted: no tenant pool was freed within {BUDGET_TIMEOUT:?}"
                    );
                    return Err(Error::Database(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)));
                }
            }
        }
    }

    /// The tenants whose pools are cached now.
    pub(crate) fn open_ids(&self) -> Vec<TenantId> {
        self.lock().pools.keys().cloned().collect()
    }

    /// Removes `id`'s pool from the cache, if open: it is closed once its last lease is
    /// gone, and the next use opens a new one. Returns whether there was one.
    pub(crate) fn evict(&self, id: &TenantId) -> bool {
        let entry = {
            let mut state = self.lock();
            let Some(slot) = state.pools.remove(id) else { return false };
            self.releasing.fetch_add(1, Ordering::AcqRel);
            slot.entry.evicted.store(true, Ordering::Release);
            slot.entry
        };
        // Dropped outside the lock: the last reference spawns the close.
        drop(entry);
        true
    }

    /// Removes the least recently used pool from the cache if the pools already closing
    /// will not make room for every waiting opener, preferring pools nobody is using (a
    /// pool in use is only closed once its work is done, which makes the opener wait).
    fn evict_if_needed(&self) -> Option<Arc<PoolEntry>> {
        let mut state = self.lock();
        if self.releasing.load(Ordering::Acquire) >= state.waiting {
            return None;
        }
        let idle = |slot: &Slot| Arc::strong_count(&slot.entry) == 1 && slot.entry.is_idle();
        let victim = state
            .pools
            .iter()
            .filter(|(_, slot)| idle(slot))
            .min_by_key(|(_, slot)| slot.last_used)
            .or_else(|| state.pools.iter().min_by_key(|(_, slot)| slot.last_used))
            .map(|(id, _)| id.clone())?;
        tracing::debug!(tenant = %victim, "evicting the least recently used tenant pool");
        let entry = state.pools.remove(&victim)?.entry;
        // Counted under the lock, before the close can possibly finish and uncount it.
        self.releasing.fetch_add(1, Ordering::AcqRel);
        entry.evicted.store(true, Ordering::Release);
        Some(entry)
    }
}

/// An opener counted in [`State::waiting`] until it leaves [`TenantPools::reserve`], by
/// any path (including cancellation).
struct Waiting<'a>(&'a TenantPools);

impl<'a> Waiting<'a> {
    fn new(pools: &'a TenantPools) -> Self {
        pools.lock().waiting += 1;
        Waiting(pools)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.lock().waiting -= 1;
    }
}
