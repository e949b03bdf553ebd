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
//! The budget is per server as well: every pool also holds `per_pool` permits of its
//! server's budget ([`crate::TenancyBuilder::server_connection_budget`], the global budget
//! by default), the server being the `host:port` of the pool's URL (loopback names are
//! one host; SQLite files count as one local server). When a server's budget is full, an
//! opener evicts the least recently used pool of that same server, so busy tenants of one
//! server never push out another server's pools for room they would not get anyway; when
//! the global budget is full, it evicts the least recently used pool of any server.
//!
//! A server that is down fails only its own tenants, and fast: before a pool is opened,
//! the server is probed with a plain TCP connection (no session, so no permit is held
//! while a dead server times out), and a server found unreachable is remembered for
//! [`DOWN_MEMO`], during which its tenants' openers fail at once with
//! [`Error::ServerUnavailable`] instead of each waiting for the probe again. A server that
//! took a connection within the last [`UP_MEMO`] is not probed: PostgreSQL forks a backend
//! for every TCP connection, the probe's included, so with many tenants taking turns in
//! the budget a probe per open would double the server's forks. Nothing is reserved for
//! a failed open and no lock is held across a connect.
//!
//! Pools are keyed by tenant id and opened from the registry record the handle was made
//! with. The live registry ([`crate::registry::live`]) closes the pool of a tenant that is
//! suspended, deleted or whose row changed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sea_orm::{ConnAcquireErr, DatabaseConnection, DbBackend, DbErr, RuntimeErr};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::url::{MAX_CONNECTION_LIFETIME, connect_pool, postgres_address, probe};
use crate::{Error, Result, TenantId};

/// The default global budget of connections all tenant database pools may hold together.
pub const DEFAULT_TENANT_CONNECTION_BUDGET: u32 = 20;

/// The default size of each tenant's database pool.
pub const DEFAULT_CONNECTIONS_PER_TENANT_POOL: u32 = 2;

/// The most connections of one shard database's admin pool
/// ([`Tenancy::shard_admin_pool`](crate::Tenancy::shard_admin_pool)): enough for a fleet
/// run's jobs on one server; more wait for a connection.
pub const SHARD_POOL_CONNECTIONS: u32 = 8;

/// The default time after which an idle connection of a tenant pool is closed.
pub const DEFAULT_TENANT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long opening a tenant pool waits for room in the budget before giving up, the
/// same as the master pool's acquire timeout: a full budget behaves like a full pool.
const BUDGET_TIMEOUT: Duration = Duration::from_secs(8);

/// How long the TCP probe of a tenant's server waits for an answer before the server
/// counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a server found unreachable is taken to be down without probing it again: its
/// tenants' requests fail at once meanwhile, then the next opener probes it afresh.
pub(crate) const DOWN_MEMO: Duration = Duration::from_secs(1);

/// How long a server that took a connection (or answered a probe) counts as up without
/// probing it again before the next pool is opened on it. A server that went down within
/// it costs its next opener a failed connect (reported within a second or so by
/// `connect_explained`'s own probe) rather than a probe.
const UP_MEMO: Duration = Duration::from_secs(1);

/// The sizing of the tenant pool cache, as set on [`crate::TenancyBuilder`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct PoolSettings {
    pub(crate) budget: u32,
    /// Each server's budget; `None`: the global budget.
    pub(crate) server_budget: Option<u32>,
    pub(crate) per_pool: u32,
    pub(crate) idle_timeout: Duration,
    /// What stands between the pools and their servers.
    pub(crate) pooler: super::pooler::Pooler,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            budget: DEFAULT_TENANT_CONNECTION_BUDGET,
            server_budget: None,
            per_pool: DEFAULT_CONNECTIONS_PER_TENANT_POOL,
            idle_timeout: DEFAULT_TENANT_POOL_IDLE_TIMEOUT,
            pooler: super::pooler::Pooler::None,
        }
    }
}

impl PoolSettings {
    /// The settings with a pool no larger than either budget, so at least one pool fits,
    /// and a server budget no larger than the global one.
    fn normalised(self) -> Self {
        let per_pool = self.per_pool.max(1);
        let budget = self.budget.max(per_pool);
        let server_budget = self.server_budget.unwrap_or(budget).clamp(per_pool, budget);
        PoolSettings { budget, server_budget: Some(server_budget), per_pool, ..self }
    }

    /// Each server's budget (after [`PoolSettings::normalised`]).
    fn server_budget(&self) -> u32 {
        self.server_budget.unwrap_or(self.budget)
    }
}

/// The cache of open tenant pools, shared by the clones of one [`crate::Tenancy`].
pub(crate) struct TenantPools {
    settings: PoolSettings,
    /// The global budget.
    budget: Arc<Budget>,
    state: Mutex<State>,
    /// Signalled when a pool enters the cache: a waiting opener may now evict it.
    inserted: Notify,
}

/// A budget of connections (the global one, or one server's) and its bookkeeping.
struct Budget {
    permits: Arc<Semaphore>,
    /// Evicted pools whose close has not completed: their permits are on the way back.
    releasing: AtomicUsize,
    /// Openers waiting for its permits (changed under the state lock).
    waiting: AtomicUsize,
}

impl Budget {
    fn new(size: u32) -> Arc<Budget> {
        Arc::new(Budget {
            permits: Arc::new(Semaphore::new(size as usize)),
            releasing: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
        })
    }
}

/// The server a pool's connections go to, as the budgets count them: `host:port` of its
/// URL, loopback names written one way; one key for all SQLite files.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ServerKey(String);

impl ServerKey {
    fn of(address: Option<&str>) -> ServerKey {
        let Some(address) = address else { return ServerKey("local files".to_owned()) };
        let (host, port) = address.rsplit_once(':').unwrap_or((address, ""));
        let host = if crate::servers::same_host(host, "localhost") { "localhost" } else { host };
        ServerKey(format!("{}:{port}", host.to_ascii_lowercase()))
    }
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
    /// Each server's budget, made on its first pool.
    servers: HashMap<ServerKey, Arc<Budget>>,
    /// What was last seen of each server, and when (see [`DOWN_MEMO`] and [`UP_MEMO`]).
    seen: HashMap<ServerKey, Seen>,
    /// One gate per tenant whose pool is being opened, so concurrent first uses of a
    /// tenant open one pool, not one each.
    opening: HashMap<TenantId, Arc<tokio::sync::Mutex<()>>>,
}

/// What was last seen of a server.
enum Seen {
    /// It took a connection or answered a probe at this instant.
    Up(Instant),
    /// It could not be reached at this instant, for this reason.
    Down(Instant, DbErr),
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
    /// The permits of its server's budget and of the global budget.
    permits: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
    /// Set when evicted, so the close task takes it off the budgets' `releasing`.
    evicted: AtomicBool,
    /// Its server's budget and the global one.
    budgets: [Arc<Budget>; 2],
    server: ServerKey,
    /// `host:port` of a PostgreSQL pool.
    address: Option<String>,
}

impl PoolEntry {
    /// The tenant's pool.
    pub(crate) fn connection(&self) -> &DatabaseConnection {
        &self.pool
    }

    /// `host:port` of the server of a PostgreSQL pool.
    pub(crate) fn address(&self) -> Option<&str> {
        self.address.as_deref()
    }

    /// Marks it evicted: counted as releasing in both its budgets until its close is done.
    /// Called under the state lock, before the close can possibly finish and uncount it.
    fn mark_evicted(&self) {
        for budget in &self.budgets {
            budget.releasing.fetch_add(1, Ordering::AcqRel);
        }
        self.evicted.store(true, Ordering::Release);
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
        let releasing = self.evicted.load(Ordering::Acquire).then(|| self.budgets.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(err) = pool.close().await {
                    tracing::warn!(error = %err, "closing an evicted tenant pool failed");
                }
                drop(permits);
                for budget in releasing.iter().flatten() {
                    budget.releasing.fetch_sub(1, Ordering::AcqRel);
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
            budget: Budget::new(settings.budget),
            settings,
            state: Mutex::new(State::default()),
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
        let address = postgres_address(&url);
        let server = ServerKey::of(address.as_deref());
        let recently_up = matches!(self.lock().seen.get(&server), Some(Seen::Up(at)) if at.elapsed() < UP_MEMO);
        if let Some(address) = address.as_ref().filter(|_| !recently_up) {
            self.check_reachable(id, &server, address).await?;
        }
        let server_budget = self.server_budget(&server);
        let permits = self.reserve(&server, &server_budget).await?;
        let pool = match connect_pool(
            &url,
            self.settings.per_pool,
            Some(self.settings.idle_timeout),
            MAX_CONNECTION_LIFETIME,
            true,
            self.settings.pooler,
        )
        .await
        {
            Ok(pool) => {
                self.lock().seen.insert(server.clone(), Seen::Up(Instant::now()));
                pool
            }
            Err(err) => {
                // The server may have gone between the probe and the connect: say so, and
                // remember it, rather than report a driver error. The permits go back as
                // they are dropped.
                drop(permits);
                if let Some(address) = &address {
                    self.check_reachable(id, &server, address).await?;
                }
                return Err(err);
            }
        };
        let entry = Arc::new(PoolEntry {
            pool,
            permits: Some(permits),
            evicted: AtomicBool::new(false),
            budgets: [server_budget, Arc::clone(&self.budget)],
            server,
            address,
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

    /// The budget of `server`, made on first use.
    fn server_budget(&self, server: &ServerKey) -> Arc<Budget> {
        let mut state = self.lock();
        Arc::clone(state.servers.entry(server.clone()).or_insert_with(|| Budget::new(self.settings.server_budget())))
    }

    /// `Ok` when the server at `address` answers a TCP probe, else
    /// [`Error::ServerUnavailable`] (naming the server by its address: the caller may know
    /// its registered name). A server found down within [`DOWN_MEMO`] is not probed again.
    async fn check_reachable(&self, id: &TenantId, server: &ServerKey, address: &str) -> Result<()> {
        let unavailable = |source| Error::ServerUnavailable {
            tenant: id.to_string(),
            server: address.to_owned(),
            address: address.to_owned(),
            source: Box::new(source),
        };
        let memo = match self.lock().seen.get(server) {
            Some(Seen::Down(at, err)) if at.elapsed() < DOWN_MEMO => Some(err.clone()),
            _ => None,
        };
        if let Some(err) = memo {
            return Err(unavailable(err));
        }
        match probe(address, PROBE_TIMEOUT).await {
            Ok(()) => {
                self.lock().seen.insert(server.clone(), Seen::Up(Instant::now()));
                Ok(())
            }
            Err(err) => {
                tracing::warn!(server = %address, error = %err, "a tenant server cannot be reached");
                self.lock().seen.insert(server.clone(), Seen::Down(Instant::now(), err.clone()));
                Err(unavailable(err))
            }
        }
    }

    /// After a call on `entry` (the pool of `id`) failed with `err`: when `err` may be the
    /// connection's loss, the server is probed, returning [`Error::ServerUnavailable`]
    /// when it cannot be reached. The pool is evicted then, or when `err` is a broken
    /// connection (its other connections may be dead too: the server restarted), so the
    /// next call opens a new one; a pool that only timed out waiting for a busy connection
    /// of a reachable server stays. `None`: `err` stands.
    pub(crate) async fn after_failure(&self, id: &TenantId, entry: &PoolEntry, err: &DbErr) -> Option<Error> {
        if !may_be_connection_loss(err) {
            return None;
        }
        let unreachable = match entry.address() {
            Some(address) => self.check_reachable(id, &entry.server, address).await.err(),
            None => None,
        };
        if unreachable.is_some() || broken_connection(err) {
            let evicted = {
                let mut state = self.lock();
                let current = state.pools.get(id).is_some_and(|slot| std::ptr::eq(Arc::as_ptr(&slot.entry), entry));
                let slot = if current { state.pools.remove(id) } else { None };
                if let Some(slot) = &slot {
                    slot.entry.mark_evicted();
                }
                slot
            };
            // Dropped outside the lock: the last lease spawns the close.
            drop(evicted);
        }
        unreachable
    }

    /// Takes `per_pool` permits from `server`'s budget, then from the global one (always in
    /// that order), evicting least recently used pools where needed: of the same server
    /// for the former, of any server for the latter.
    async fn reserve(
        &self,
        server: &ServerKey,
        server_budget: &Arc<Budget>,
    ) -> Result<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        let deadline = tokio::time::Instant::now() + BUDGET_TIMEOUT;
        let own = self.acquire(server_budget, Some(server), deadline).await?;
        let global = self.acquire(&self.budget, None, deadline).await?;
        Ok((own, global))
    }

    /// Takes `per_pool` permits from `budget`, evicting least recently used pools (of
    /// `server`, or of any server when `None`) as long as the pools already on their way
    /// out do not cover every waiting opener.
    ///
    /// A waiter wakes when permits come back (an evicted pool finished closing) or when a
    /// pool enters the cache (one more candidate to evict): without the latter, openers
    /// that found the cache empty because every pool was being opened would wait for
    /// permits that no one frees.
    async fn acquire(
        &self,
        budget: &Arc<Budget>,
        server: Option<&ServerKey>,
        deadline: tokio::time::Instant,
    ) -> Result<OwnedSemaphorePermit> {
        let wanted = self.settings.per_pool;
        if let Ok(permits) = Arc::clone(&budget.permits).try_acquire_many_owned(wanted) {
            return Ok(permits);
        }
        let _waiting = Waiting::new(self, budget);
        loop {
            // Registered before looking, so an insertion from here on is not missed.
            let inserted = self.inserted.notified();
            tokio::pin!(inserted);
            inserted.as_mut().enable();
            if let Ok(permits) = Arc::clone(&budget.permits).try_acquire_many_owned(wanted) {
                return Ok(permits);
            }
            // Dropped outside the lock: dropping the last lease starts the close, which
            // returns the permits.
            let victim = self.evict_if_needed(budget, server);
            drop(victim);
            tokio::select! {
                permits = Arc::clone(&budget.permits).acquire_many_owned(wanted) => {
                    // The semaphore is never closed.
                    if let Ok(permits) = permits {
                        return Ok(permits);
                    }
                }
                () = &mut inserted => {}
                () = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(
                        budget = self.settings.budget,
                        server_budget = self.settings.server_budget(),
                        server = server.map(|server| server.0.as_str()),
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
            slot.entry.mark_evicted();
            slot.entry
        };
        // Dropped outside the lock: the last reference spawns the close.
        drop(entry);
        true
    }

    /// Removes the least recently used pool (of `server`, or of any server when `None`)
    /// from the cache if the pools already closing will not make room in `budget` for
    /// every opener waiting for it, preferring pools nobody is using (a pool in use is only
    /// closed once its work is done, which makes the opener wait).
    fn evict_if_needed(&self, budget: &Budget, server: Option<&ServerKey>) -> Option<Arc<PoolEntry>> {
        let mut state = self.lock();
        if budget.releasing.load(Ordering::Acquire) >= budget.waiting.load(Ordering::Acquire) {
            return None;
        }
        let candidate = |slot: &&Slot| server.is_none_or(|server| slot.entry.server == *server);
        let idle = |slot: &Slot| Arc::strong_count(&slot.entry) == 1 && slot.entry.is_idle();
        let victim = state
            .pools
            .iter()
            .filter(|(_, slot)| candidate(slot) && idle(slot))
            .min_by_key(|(_, slot)| slot.last_used)
            .or_else(|| state.pools.iter().filter(|(_, slot)| candidate(slot)).min_by_key(|(_, slot)| slot.last_used))
            .map(|(id, _)| id.clone())?;
        tracing::debug!(tenant = %victim, "evicting the least recently used tenant pool");
        let entry = state.pools.remove(&victim)?.entry;
        entry.mark_evicted();
        Some(entry)
    }
}

/// Whether a failed call's error may mean the connection or its server is gone (rather
/// than a statement PostgreSQL refused): connecting and acquiring errors, and broken
/// connections ([`broken_connection`]).
fn may_be_connection_loss(err: &DbErr) -> bool {
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(sqlx)) | DbErr::Query(RuntimeErr::SqlxError(sqlx)) => {
            matches!(**sqlx, sea_orm::sqlx::Error::PoolTimedOut | sea_orm::sqlx::Error::PoolClosed)
                || broken_connection(err)
        }
        _ => false,
    }
}

/// Whether a failed call's connection broke under it: I/O, TLS and protocol errors, and
/// PostgreSQL's own connection-exception and shutdown codes (classes `08` and `57P`).
fn broken_connection(err: &DbErr) -> bool {
    match err {
        DbErr::Exec(RuntimeErr::SqlxError(err)) | DbErr::Query(RuntimeErr::SqlxError(err)) => {
            match err.as_database_error() {
                Some(db) => db.code().is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
                None => matches!(
                    **err,
                    sea_orm::sqlx::Error::Io(_)
                        | sea_orm::sqlx::Error::Tls(_)
                        | sea_orm::sqlx::Error::Protocol(_)
                        | sea_orm::sqlx::Error::WorkerCrashed
                ),
            }
        }
        _ => false,
    }
}

/// An opener counted in a budget's `waiting` until it leaves [`TenantPools::acquire`], by
/// any path (including cancellation).
struct Waiting<'a>(&'a TenantPools, &'a Budget);

impl<'a> Waiting<'a> {
    fn new(pools: &'a TenantPools, budget: &'a Budget) -> Self {
        let _state = pools.lock();
        budget.waiting.fetch_add(1, Ordering::AcqRel);
        Waiting(pools, budget)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let _state = self.0.lock();
        self.1.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_keys() {
        let key = |address: &str| ServerKey::of(Some(address)).0;
        assert_eq!(key("127.0.0.1:5432"), "localhost:5432");
        assert_eq!(key("localhost:5432"), key("::1:5432"));
        assert_ne!(key("127.0.0.1:5432"), key("127.0.0.1:5433"));
        assert_eq!(key("DB2.internal:5432"), "db2.internal:5432");
        assert_eq!(ServerKey::of(None).0, "local files");
    }

    #[test]
    fn server_budget_defaults_to_the_global_one_and_stays_within_it() {
        let settings = |budget, server_budget, per_pool| {
            let normalised = PoolSettings { budget, server_budget, per_pool, ..PoolSettings::default() }.normalised();
            (normalised.budget, normalised.server_budget())
        };
        assert_eq!(settings(20, None, 2), (20, 20));
        assert_eq!(settings(20, Some(6), 2), (20, 6));
        assert_eq!(settings(20, Some(50), 2), (20, 20));
        assert_eq!(settings(20, Some(1), 2), (20, 2));
        assert_eq!(settings(1, Some(1), 3), (3, 3));
    }
}
