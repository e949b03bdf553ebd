//! The live registry: the registry held in memory by [`Tenancy`](crate::Tenancy) and
//! refreshed on change, so that [`Tenancy::tenant`](crate::Tenancy::tenant) (and the tower
//! layer) resolve tenants without a query per call, and a running process follows
//! suspensions and deletions made by another one.
//!
//! How changes reach it: the registry's triggers (framework migration
//! `m20261206_000005_announce_registry_changes`) announce every change of a registry row
//! in the changing transaction, whoever makes it.
//!
//! - PostgreSQL: `NOTIFY` on [`REGISTRY_CHANNEL`] with the tenant id as payload (an empty
//!   payload means "re-read everything"). A feed task `LISTEN`s on a dedicated connection
//!   (application name [`LISTENER_APPLICATION_NAME`]) and re-reads the rows named, batched.
//!   A lost connection (an error, or sqlx's reconnect, across which notifications are
//!   lost) makes the registry not live until the listener is back and everything was
//!   re-read; a heartbeat on the listener connection every [`HEARTBEAT`] catches a
//!   connection that went silent without closing.
//! - SQLite: the triggers bump the generation counter in [`REGISTRY_CHANGES_TABLE`]; the
//!   feed task reads it every [`SQLITE_POLL_INTERVAL`] and re-reads the registry when it
//!   moved.
//!
//! Fail closed: while the registry is not live (not started yet, listener lost, poll
//! failing, or the feed task gone with its runtime) every lookup reads the row, as
//! without a live registry. A change is therefore served stale only between its commit
//! and its notification's processing (milliseconds), or, on SQLite, up to one poll
//! interval; on PostgreSQL a silently dead listener connection adds at most
//! `HEARTBEAT + HEARTBEAT_TIMEOUT` before lookups fall back to reads.
//!
//! Custom domains ([`crate::domains`]) are held beside the tenants: a domain change is
//! announced as a change of its tenant, and re-reading a tenant re-reads its domains. While
//! live, a domain the snapshot does not have leads nowhere (no query): a domain added by
//! another process is seen once its notification is processed (milliseconds; on SQLite,
//! one poll interval), one added by this process at once.
//!
//! A tenant that leaves the set of servable tenants (suspended, deleted, back to
//! provisioning) or whose row changed has its pool in this process closed.
//!
//! An id that is not in the snapshot (a tenant created a moment ago, whose notification is
//! still on its way, or an id that does not exist) is read once, and so is a tenant the
//! snapshot has in `provisioning` (another process is about to mark it ready); the answer is kept (an
//! absent id as a negative entry, which a change of that tenant replaces), so repeating an
//! unknown id costs nothing. Unknown ids are read one at a time: a lookup that cannot start
//! its read within 50 ms answers "not found" from the snapshot, so a flood of distinct
//! made-up ids costs at most one registry query at a time.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use sea_orm::sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter, Statement};
use tokio::sync::{Semaphore, watch};

use super::{Tenant, TenantStatus, entity};
use crate::connection::pooler::{MasterAccess, Pooler};
use crate::connection::pools::TenantPools;
use crate::domains::{self, Domain};
use crate::{Error, Result, TenantId};

/// The PostgreSQL notification channel registry changes are announced on (**contract**):
/// payload = the tenant id, or empty for "re-read everything".
pub const REGISTRY_CHANNEL: &str = "tenancy_registry";

/// The SQLite table whose one row (`id = 1`) holds the `generation` counter the registry's
/// triggers bump on every change (**contract**).
pub const REGISTRY_CHANGES_TABLE: &str = "tenancy_registry_changes";

/// The `application_name` of the live registry's listener connection on PostgreSQL, so it
/// can be told apart in `pg_stat_activity`.
pub const LISTENER_APPLICATION_NAME: &str = "tenancy registry listener";

/// How often the SQLite feed reads the generation counter.
pub const SQLITE_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How often the PostgreSQL feed checks its listener connection with `SELECT 1`.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// How long the heartbeat waits before it declares the listener connection dead.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(1);

/// The longest wait between two attempts to bring a lost feed back.
const MAX_RETRY: Duration = Duration::from_secs(1);

/// Negative entries kept at most; beyond, they are all dropped (and read again once).
const MAX_ABSENT: usize = 10_000;

/// How long a lookup of an unknown id waits for the read of another unknown id to finish
/// before it answers "not found" from the snapshot.
const MISS_WAIT: Duration = Duration::from_millis(50);

/// Ids re-read in one query; a larger burst of notifications re-reads everything.
const MAX_BATCH: usize = 256;

/// What the snapshot knows about one id.
#[derive(Clone, Debug, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "nearly every entry is a tenant: boxing it would add an allocation per tenant for the rare other two"
)]
enum Known {
    Tenant(Tenant),
    /// A row this version cannot read ([`Error::CorruptRegistry`]).
    Corrupt(String),
    /// No row (a negative entry).
    Absent,
}

impl Known {
    fn from_row(row: entity::Model) -> Option<(TenantId, Known)> {
        // A row whose id is no valid id can never be asked for.
        let id = TenantId::new(row.tenant_id.clone()).ok()?;
        let known = match Tenant::from_row(row) {
            Ok(tenant) => Known::Tenant(tenant),
            Err(Error::CorruptRegistry { reason, .. }) => Known::Corrupt(reason),
            Err(other) => Known::Corrupt(other.to_string()),
        };
        Some((id, known))
    }

    /// Whether a tenant pool may stay open for this state.
    fn servable(&self) -> bool {
        matches!(self, Known::Tenant(tenant) if tenant.status() == TenantStatus::Ready)
    }

    /// Whether the state can be answered from memory: not a tenant being provisioned,
    /// which another process is about to mark ready (read again, like an unknown id).
    fn settled(&self) -> bool {
        !matches!(self, Known::Tenant(tenant) if tenant.status() == TenantStatus::Provisioning)
    }

    fn into_result(self, id: &TenantId) -> Result<Tenant> {
        match self {
            Known::Tenant(tenant) => Ok(tenant),
            Known::Corrupt(reason) => Err(Error::CorruptRegistry { tenant: id.to_string(), reason }),
            Known::Absent => Err(Error::TenantNotFound { id: id.to_string() }),
        }
    }
}

#[derive(Default)]
struct Snapshot {
    known: HashMap<TenantId, Known>,
    /// Every custom domain and its tenant.
    domains: HashMap<Domain, TenantId>,
    absent: usize,
    /// Bumped by every change the feed applies: a lookup's read of an unknown id is kept
    /// only if nothing changed while it ran, so it cannot overwrite a newer state.
    changes: u64,
}

impl Snapshot {
    /// Replaces what is known of the domains of `tenants` with `found`.
    fn set_domains(&mut self, tenants: &HashSet<TenantId>, found: Vec<(Domain, TenantId)>) {
        self.domains.retain(|_, owner| !tenants.contains(owner));
        self.domains.extend(found);
    }

    /// Sets what is known of `id`; returns whether its pool in this process must be
    /// closed: it is not servable now, or its row changed.
    fn set(&mut self, id: TenantId, known: Known) -> bool {
        let close = !known.servable() || self.known.get(&id).is_some_and(|before| *before != known);
        if known == Known::Absent {
            if self.absent >= MAX_ABSENT {
                self.known.retain(|_, known| *known != Known::Absent);
                self.absent = 0;
            }
            self.absent += 1;
        }
        if self.known.insert(id, known) == Some(Known::Absent) {
            self.absent -= 1;
        }
        close
    }
}

/// What the clones of one [`crate::Tenancy`] share of the live registry.
struct Shared {
    snapshot: RwLock<Snapshot>,
    /// Whether the snapshot follows the registry now (see the module docs).
    live: AtomicBool,
    /// Whether a feed task runs (it clears this when it ends, by any path).
    running: AtomicBool,
    /// One read of an unknown id at a time.
    miss_gate: Semaphore,
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, Snapshot> {
        // No code panics while holding the lock; a poisoned lock holds a consistent map.
        self.snapshot.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Snapshot> {
        self.snapshot.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The live registry of one [`crate::Tenancy`] (see the [module](self)). Its feed task
/// starts on the first lookup and stops when this is dropped.
pub(crate) struct LiveRegistry {
    shared: Arc<Shared>,
    /// Dropped with the registry, which ends the feed task.
    stop: watch::Sender<()>,
}

impl std::fmt::Debug for LiveRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveRegistry").field("live", &self.is_live()).finish_non_exhaustive()
    }
}

impl LiveRegistry {
    pub(crate) fn new() -> LiveRegistry {
        LiveRegistry {
            shared: Arc::new(Shared {
                snapshot: RwLock::new(Snapshot::default()),
                live: AtomicBool::new(false),
                running: AtomicBool::new(false),
                miss_gate: Semaphore::new(1),
            }),
            stop: watch::Sender::new(()),
        }
    }

    /// Whether lookups are served from memory now.
    pub(crate) fn is_live(&self) -> bool {
        self.shared.live.load(Ordering::Acquire)
    }

    /// The tenant `id`, from the snapshot when it is live (starting the feed on first
    /// use), from the registry otherwise.
    pub(crate) async fn tenant(&self, master: &Master, pools: &Arc<TenantPools>, id: &TenantId) -> Result<Tenant> {
        self.start(master, pools);
        if !self.is_live() {
            return read_one(master, id).await?.into_result(id);
        }
        let changes = {
            let snapshot = self.shared.read();
            match snapshot.known.get(id) {
                Some(known) if known.settled() => return known.clone().into_result(id),
                _ => snapshot.changes,
            }
        };
        let Ok(Ok(_reading)) = tokio::time::timeout(MISS_WAIT, self.shared.miss_gate.acquire()).await else {
            // Too many reads of unknown ids at once: answer from the snapshot.
            let known = self.shared.read().known.get(id).cloned();
            return known.unwrap_or(Known::Absent).into_result(id);
        };
        // The read before this one, or a notification, may have answered it meanwhile.
        if let Some(known) = self.shared.read().known.get(id).filter(|known| known.settled()) {
            return known.clone().into_result(id);
        }
        let known = read_one(master, id).await?;
        {
            let mut snapshot = self.shared.write();
            if snapshot.changes == changes && self.is_live() {
                snapshot.set(id.clone(), known.clone());
            }
        }
        known.into_result(id)
    }

    /// The tenant `domain` leads to, from the snapshot; [`NotLive`] when the snapshot is
    /// not live (starting the feed on first use): the caller reads the domains table.
    pub(crate) fn domain_owner(
        &self,
        master: &Master,
        pools: &Arc<TenantPools>,
        domain: &Domain,
    ) -> std::result::Result<Option<TenantId>, NotLive> {
        self.start(master, pools);
        if !self.is_live() {
            return Err(NotLive);
        }
        Ok(self.shared.read().domains.get(domain).cloned())
    }

    /// Records the domains of `tenant` this process just committed and read back.
    pub(crate) fn domains_changed(&self, tenant: &TenantId, found: Vec<(Domain, TenantId)>) {
        if self.is_live() {
            let mut snapshot = self.shared.write();
            snapshot.changes += 1;
            snapshot.set_domains(&HashSet::from([tenant.clone()]), found);
        }
    }

    /// Records a change this process just committed (and read back), so that its own next
    /// lookup sees it without waiting for the notification, which follows anyway.
    pub(crate) fn changed(&self, tenant: &Tenant, pools: &TenantPools) {
        if !self.is_live() {
            return;
        }
        let close = {
            let mut snapshot = self.shared.write();
            snapshot.changes += 1;
            snapshot.set(tenant.id().clone(), Known::Tenant(tenant.clone()))
        };
        if close {
            pools.evict(tenant.id());
        }
    }

    /// Records that this process just removed `id`'s registry row.
    pub(crate) fn removed(&self, id: &TenantId, pools: &TenantPools) {
        if self.is_live() {
            let mut snapshot = self.shared.write();
            snapshot.changes += 1;
            snapshot.set(id.clone(), Known::Absent);
            // Its domains went with the row (the foreign key cascades).
            snapshot.domains.retain(|_, owner| owner != id);
        }
        pools.evict(id);
    }

    /// Spawns the feed task unless one runs (or there is no runtime to run it on: lookups
    /// then read the registry).
    fn start(&self, master: &Master, pools: &Arc<TenantPools>) {
        if self.shared.running.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        if self.shared.running.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return;
        }
        let feed = Feed {
            master: master.clone(),
            shared: Arc::clone(&self.shared),
            pools: Arc::clone(pools),
            stop: self.stop.subscribe(),
        };
        runtime.spawn(feed.run());
    }
}

/// The live registry cannot answer from memory now (or there is none): read the table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NotLive;

/// How the live registry reaches the master database.
#[derive(Clone)]
pub(crate) struct Master {
    /// The master pool, for reads.
    pub(crate) pool: DatabaseConnection,
    /// What stands between the pool and PostgreSQL: behind a transaction-mode pooler the
    /// reads run in transactions ([`MasterAccess`]).
    pub(crate) pooler: Pooler,
    /// The master database's direct URL, for `LISTEN`, when the pool goes through a
    /// pooler (a transaction-mode pooler would hand the listening session to other
    /// clients); `None`: the pool's own connect options.
    pub(crate) listen_url: Option<String>,
}

/// The task that keeps one snapshot in step with the registry.
struct Feed {
    master: Master,
    shared: Arc<Shared>,
    pools: Arc<TenantPools>,
    stop: watch::Receiver<()>,
}

/// Why a feed loop ended.
enum Ended {
    /// The registry was dropped.
    Stopped,
    /// The feed lost track of the registry (logged).
    Lost,
}

impl Drop for Feed {
    fn drop(&mut self) {
        // However the task ends (stopped, or dropped with its runtime), lookups read the
        // registry again, and the next one starts a new feed.
        self.shared.live.store(false, Ordering::Release);
        self.shared.running.store(false, Ordering::Release);
    }
}

impl Feed {
    async fn run(mut self) {
        let mut retry = Duration::from_millis(50);
        loop {
            let ended = match self.master.pool.get_database_backend() {
                DbBackend::Postgres => self.listen().await,
                _ => self.poll().await,
            };
            self.shared.live.store(false, Ordering::Release);
            if let Ended::Stopped = ended {
                return;
            }
            tokio::select! {
                _ = self.stop.changed() => return,
                () = tokio::time::sleep(retry) => {}
            }
            retry = (retry * 2).min(MAX_RETRY);
        }
    }

    /// PostgreSQL: `LISTEN`, re-read everything, then follow the notifications.
    async fn listen(&mut self) -> Ended {
        let connected = async {
            let options = match &self.master.listen_url {
                Some(url) => url.parse::<PgConnectOptions>()?,
                None => (*self.master.pool.get_postgres_connection_pool().connect_options()).clone(),
            };
            let options = options.application_name(LISTENER_APPLICATION_NAME);
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .acquire_timeout(Duration::from_secs(5))
                .connect_lazy_with(options);
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(REGISTRY_CHANNEL).await?;
            Ok::<_, sea_orm::sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            _ = self.stop.changed() => return Ended::Stopped,
            connected = connected => match connected {
                Ok(listener) => listener,
                Err(err) => {
                    tracing::warn!(error = %err, "live registry: cannot listen for registry changes; reading the registry per lookup");
                    return Ended::Lost;
                }
            }
        };
        // Listening before reading: a change committed from here on is either in the read
        // or notified after it.
        if let Err(err) = self.reload().await {
            tracing::warn!(error = %err, "live registry: cannot read the registry");
            return Ended::Lost;
        }
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // `try_recv` is cancel-safe (sqlx reads a message only once it is complete).
            tokio::select! {
                _ = self.stop.changed() => return Ended::Stopped,
                received = listener.try_recv() => match received {
                    Ok(Some(first)) => {
                        let mut payloads = vec![first.payload().to_owned()];
                        while let Some(next) = listener.next_buffered() {
                            payloads.push(next.payload().to_owned());
                        }
                        if let Err(err) = self.apply(&payloads).await {
                            tracing::warn!(error = %err, "live registry: cannot re-read changed tenants");
                            return Ended::Lost;
                        }
                    }
                    Ok(None) => {
                        // The connection was lost and sqlx made a new one: what was
                        // notified in between is gone, so everything is read again.
                        self.shared.live.store(false, Ordering::Release);
                        tracing::info!("live registry: listener reconnected; re-reading the registry");
                        if let Err(err) = self.reload().await {
                            tracing::warn!(error = %err, "live registry: cannot read the registry");
                            return Ended::Lost;
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "live registry: lost the listener connection; reading the registry per lookup");
                        return Ended::Lost;
                    }
                },
                _ = heartbeat.tick() => {
                    let ping = sea_orm::sqlx::query("SELECT 1").execute(&mut listener);
                    if !matches!(tokio::time::timeout(HEARTBEAT_TIMEOUT, ping).await, Ok(Ok(_))) {
                        tracing::warn!("live registry: the listener connection does not answer; reading the registry per lookup");
                        return Ended::Lost;
                    }
                }
            }
        }
    }

    /// SQLite: re-read everything whenever the generation counter moved.
    async fn poll(&mut self) -> Ended {
        let mut seen = None;
        let mut tick = tokio::time::interval(SQLITE_POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.stop.changed() => return Ended::Stopped,
                _ = tick.tick() => {}
            }
            // Read before the registry: a change after this read moves the counter again.
            let generation = match generation(&self.master.pool).await {
                Ok(generation) => generation,
                Err(err) => {
                    tracing::warn!(error = %err, "live registry: cannot read the registry's generation");
                    return Ended::Lost;
                }
            };
            if seen == Some(generation) {
                continue;
            }
            if let Err(err) = self.reload().await {
                tracing::warn!(error = %err, "live registry: cannot read the registry");
                return Ended::Lost;
            }
            seen = Some(generation);
        }
    }

    /// Replaces the snapshot with the whole registry, closes the pools of tenants that are
    /// no longer served as they were, and makes the snapshot live.
    async fn reload(&self) -> Result<()> {
        let access = MasterAccess::open(&self.master.pool, self.master.pooler).await?;
        let rows = entity::Entity::find().all(&access).await?;
        let domains = domains::read_all(&access, None).await?;
        access.finish().await?;
        let known: HashMap<TenantId, Known> = rows.into_iter().filter_map(Known::from_row).collect();
        let close: Vec<TenantId> = {
            let mut snapshot = self.shared.write();
            let previous = std::mem::replace(&mut snapshot.known, known);
            snapshot.domains = domains.into_iter().collect();
            snapshot.absent = 0;
            snapshot.changes += 1;
            self.shared.live.store(true, Ordering::Release);
            // Pools may have been opened while the snapshot was not live: check every open
            // pool, not only the tenants the previous snapshot knew.
            let open: HashSet<TenantId> = self.pools.open_ids().into_iter().collect();
            open.into_iter()
                .filter(|id| match snapshot.known.get(id) {
                    Some(now) => !now.servable() || previous.get(id).is_some_and(|before| before != now),
                    None => true,
                })
                .collect()
        };
        for id in close {
            tracing::debug!(tenant = %id, "live registry: closing the pool of a tenant that changed");
            self.pools.evict(&id);
        }
        Ok(())
    }

    /// Re-reads the tenants named by a burst of notifications.
    async fn apply(&self, payloads: &[String]) -> Result<()> {
        let mut ids = HashSet::new();
        for payload in payloads {
            match TenantId::new(payload.clone()) {
                Ok(id) => {
                    ids.insert(id);
                }
                // An empty payload asks for a full re-read; so does one that is no id.
                Err(_) => return self.reload().await,
            }
        }
        if ids.len() > MAX_BATCH {
            return self.reload().await;
        }
        let access = MasterAccess::open(&self.master.pool, self.master.pooler).await?;
        let rows = entity::Entity::find()
            .filter(entity::Column::TenantId.is_in(ids.iter().map(TenantId::as_str)))
            .all(&access)
            .await?;
        let named: Vec<&str> = ids.iter().map(TenantId::as_str).collect();
        let domains = domains::read_all(&access, Some(&named)).await?;
        access.finish().await?;
        let mut found: HashMap<TenantId, Known> = rows.into_iter().filter_map(Known::from_row).collect();
        let mut close = Vec::new();
        {
            let mut snapshot = self.shared.write();
            snapshot.changes += 1;
            snapshot.set_domains(&ids, domains);
            for id in ids {
                let now = found.remove(&id).unwrap_or(Known::Absent);
                if snapshot.set(id.clone(), now) {
                    close.push(id);
                }
            }
        }
        for id in close {
            self.pools.evict(&id);
        }
        Ok(())
    }
}

/// What the registry holds for `id` now.
async fn read_one(master: &Master, id: &TenantId) -> Result<Known> {
    let access = MasterAccess::open(&master.pool, master.pooler).await?;
    let row = entity::Entity::find_by_id(id.as_str()).one(&access).await?;
    access.finish().await?;
    Ok(row.and_then(Known::from_row).map_or(Known::Absent, |(_, known)| known))
}

/// The SQLite registry's generation counter.
async fn generation(master: &DatabaseConnection) -> Result<i64> {
    let row = master
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            format!("SELECT generation FROM {REGISTRY_CHANGES_TABLE} WHERE id = 1"),
        ))
        .await?
        .ok_or_else(|| Error::CorruptRegistry {
            tenant: String::new(),
            reason: format!("the row of {REGISTRY_CHANGES_TABLE} is missing"),
        })?;
    Ok(row.try_get_by_index::<i64>(0)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Isolation;
    use crate::registry::placement::Placement;

    fn tenant(id: &str, status: TenantStatus) -> Tenant {
        let placement = Placement::from_stored(Isolation::Cache, serde_json::json!({})).unwrap();
        let mut tenant = Tenant::provisioning(TenantId::new(id.to_owned()).unwrap(), id.to_owned(), placement);
        tenant.status = status;
        tenant
    }

    fn id(id: &str) -> TenantId {
        TenantId::new(id.to_owned()).unwrap()
    }

    #[test]
    fn pools_close_when_a_tenant_stops_being_served_or_changes() {
        let mut snapshot = Snapshot::default();
        let ready = tenant("acme", TenantStatus::Ready);
        assert!(!snapshot.set(id("acme"), Known::Tenant(ready.clone())));
        assert!(!snapshot.set(id("acme"), Known::Tenant(ready.clone())), "unchanged");
        let mut renamed = ready;
        renamed.name = "Acme Corp".to_owned();
        assert!(snapshot.set(id("acme"), Known::Tenant(renamed)), "changed row");
        assert!(snapshot.set(id("acme"), Known::Tenant(tenant("acme", TenantStatus::Suspended))));
        assert!(snapshot.set(id("acme"), Known::Absent));
        assert!(snapshot.set(id("acme"), Known::Corrupt("bad".to_owned())));
    }

    #[test]
    fn negative_entries_are_bounded() {
        let mut snapshot = Snapshot::default();
        snapshot.set(id("acme"), Known::Tenant(tenant("acme", TenantStatus::Ready)));
        for n in 0..MAX_ABSENT + 5 {
            snapshot.set(id(&format!("nobody_{n}")), Known::Absent);
        }
        assert!(snapshot.absent <= MAX_ABSENT);
        assert_eq!(snapshot.known.values().filter(|known| **known == Known::Absent).count(), snapshot.absent);
        assert!(snapshot.known.contains_key(&id("acme")), "tenants stay");
        // A negative entry replaced by the tenant is no longer counted.
        snapshot.set(id("nobody_1"), Known::Absent);
        let before = snapshot.absent;
        snapshot.set(id("nobody_1"), Known::Tenant(tenant("nobody_1", TenantStatus::Ready)));
        assert_eq!(snapshot.absent, before - 1);
    }

    #[test]
    fn provisioning_is_read_again() {
        assert!(!Known::Tenant(tenant("acme", TenantStatus::Provisioning)).settled());
        assert!(Known::Tenant(tenant("acme", TenantStatus::Suspended)).settled());
        assert!(Known::Absent.settled());
    }
}
