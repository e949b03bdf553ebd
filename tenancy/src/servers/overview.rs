//! What `showservers` shows: per server, its tenants, the size of the databases tenancy
//! uses there, its connections, and whether it answers.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use serde::Serialize;

use super::{Server, ServerMap, TenantServer};
use crate::registry::placement::{Placement, TenantDatabase};
use crate::{Error, Isolation, Result, Tenancy, Tenant};

/// How long a health probe waits for a server.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How many tenants of each relational mode live on a server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TenantCounts {
    /// Database tenants.
    pub database: u64,
    /// Schema tenants.
    pub schema: u64,
    /// Table tenants (always on the master's server).
    pub table: u64,
}

impl TenantCounts {
    /// Every tenant on the server.
    pub fn total(&self) -> u64 {
        self.database + self.schema + self.table
    }

    /// The tenants placement counts: database and schema tenants (table tenants share the
    /// master's tables and are never placed).
    pub fn placed(&self) -> u64 {
        self.database + self.schema
    }
}

/// Whether a server answered, and what it said.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "health", rename_all = "lowercase")]
pub enum ServerHealth {
    /// It answered the probe.
    Up {
        /// `server_version`.
        version: String,
        /// Client connections open on it now.
        connections: i64,
        /// Its `max_connections`.
        max_connections: i64,
        /// Bytes of the databases tenancy uses there (tenant databases; the master
        /// database on the master's server).
        size_bytes: i64,
    },
    /// It did not answer, or refused the credentials.
    Down {
        /// Why, in one line.
        error: String,
    },
}

/// A server with its tenants and health ([`Tenancy::server_overviews`]).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ServerOverview {
    /// The server.
    pub server: Server,
    /// Its tenants.
    pub tenants: TenantCounts,
    /// Whether it answered.
    pub health: ServerHealth,
}

/// The tenants of each of `map`'s servers, in its order.
pub(super) fn count_tenants(map: &ServerMap, tenants: &[Tenant]) -> Vec<TenantCounts> {
    let mut counts = vec![TenantCounts::default(); map.servers.len()];
    for tenant in tenants {
        let TenantServer::Registered(server) = map.server_of(tenant) else { continue };
        let Some(at) = map.servers.iter().position(|s| s.name == server.name) else { continue };
        match tenant.isolation() {
            Isolation::Database => counts[at].database += 1,
            Isolation::Schema => counts[at].schema += 1,
            Isolation::Table => counts[at].table += 1,
            Isolation::Cache => {}
        }
    }
    counts
}

/// [`count_tenants`] without reading every tenant: the registry grouped by mode and
/// place in one query (a handful of rows however many tenants there are), each group then
/// given to its server as [`ServerMap::server_of`] would. Placement runs it for every new
/// tenant. PostgreSQL masters only (servers need one).
pub(super) async fn count_placed(tenancy: &Tenancy, map: &ServerMap) -> Result<Vec<TenantCounts>> {
    if tenancy.backend() != crate::Backend::Postgres {
        return Ok(count_tenants(map, &tenancy.tenants().await?));
    }
    let rows = tenancy
        .master()
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT CAST(isolation_type AS TEXT), config->'shard'->>'server', config->'database'->>'engine',                     config->'database'->>'host', config->'database'->>'port', count(*)              FROM tenancy_tenants GROUP BY 1, 2, 3, 4, 5",
        ))
        .await?;
    let master = map.servers.iter().position(|server| server.is_master());
    let mut counts = vec![TenantCounts::default(); map.servers.len()];
    for row in rows {
        let isolation: String = row.try_get_by_index(0)?;
        let shard: Option<String> = row.try_get_by_index(1)?;
        let engine: Option<String> = row.try_get_by_index(2)?;
        let host: Option<String> = row.try_get_by_index(3)?;
        let port: Option<String> = row.try_get_by_index(4)?;
        let n = u64::try_from(row.try_get_by_index::<i64>(5)?).unwrap_or(0);
        let position = |name: &str| map.servers.iter().position(|server| server.name.as_str() == name);
        let (at, slot): (Option<usize>, fn(&mut TenantCounts) -> &mut u64) = match isolation.parse::<Isolation>() {
            Ok(Isolation::Database) => match (engine.as_deref(), host, port.and_then(|p| p.parse::<u16>().ok())) {
                (Some("postgres"), Some(host), Some(port)) => {
                    (map.servers.iter().position(|server| server.is_at(&host, port)), |c| &mut c.database)
                }
                _ => continue,
            },
            Ok(Isolation::Schema) => match shard {
                Some(name) => (position(&name), |c| &mut c.schema),
                None => (master, |c| &mut c.schema),
            },
            Ok(Isolation::Table) => (master, |c| &mut c.table),
            Ok(Isolation::Cache) | Err(_) => continue,
        };
        if let Some(at) = at {
            *slot(&mut counts[at]) += n;
        }
    }
    Ok(counts)
}

/// Checks that the connected role may create databases and roles.
pub(super) async fn check_admin(conn: &DatabaseConnection) -> Result<()> {
    let row = conn
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT current_user::text, rolsuper OR (rolcreatedb AND rolcreaterole) \
             FROM pg_catalog.pg_roles WHERE rolname = current_user",
        ))
        .await?;
    let (user, may) = match row {
        Some(row) => (row.try_get_by_index::<String>(0)?, row.try_get_by_index::<bool>(1)?),
        None => (String::new(), false),
    };
    if may { Ok(()) } else { Err(Error::ServerAdminLacksPrivileges { user }) }
}

impl Tenancy {
    /// Every server with its tenants, probed for health, size and connections (the
    /// servers in parallel, each probe bounded by a few seconds).
    ///
    /// # Errors
    /// A master database error; a server that does not answer is reported as
    /// [`ServerHealth::Down`], not as an error.
    pub async fn server_overviews(&self) -> Result<Vec<ServerOverview>> {
        let map = self.server_map().await?;
        let tenants = self.tenants().await?;
        let counts = count_tenants(&map, &tenants);
        let master_db = match self.backend() {
            crate::Backend::Postgres => Some(self.master_identity().await?.1.clone()),
            crate::Backend::Sqlite => None,
        };
        let probes = map.servers.iter().map(|server| {
            let mut databases: Vec<String> = tenants
                .iter()
                .filter(|tenant| map.server_of(tenant).server().is_some_and(|s| s.name == server.name))
                .filter_map(|tenant| match tenant.placement() {
                    Placement::Database(TenantDatabase::Postgres(db)) => Some(db.name.clone()),
                    _ => None,
                })
                .collect();
            if server.is_master() {
                databases.extend(master_db.clone());
            }
            // The shard database of this master's schema tenants there.
            let at = map.servers.iter().position(|s| s.name == server.name);
            if !server.is_master() && at.is_some_and(|at| counts[at].schema > 0) {
                databases.extend(master_db.as_deref().map(crate::registry::placement::ShardDatabase::name_for));
            }
            async move {
                match tokio::time::timeout(PROBE_TIMEOUT, self.probe(server, &databases)).await {
                    Ok(Ok(health)) => health,
                    Ok(Err(err)) => ServerHealth::Down { error: one_line(&err) },
                    Err(_) => ServerHealth::Down { error: format!("no answer within {}s", PROBE_TIMEOUT.as_secs()) },
                }
            }
        });
        let healths = futures_util::future::join_all(probes).await;
        Ok(map
            .servers
            .iter()
            .zip(counts)
            .zip(healths)
            .map(|((server, tenants), health)| ServerOverview { server: server.clone(), tenants, health })
            .collect())
    }

    async fn probe(&self, server: &Server, databases: &[String]) -> Result<ServerHealth> {
        let url = self.server_admin_url(server)?;
        let conn = crate::connection::url::connect(url.as_str(), None).await?;
        let row = conn
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT current_setting('server_version'), \
                 (SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE backend_type = 'client backend')::bigint, \
                 current_setting('max_connections')::bigint, \
                 (SELECT coalesce(sum(pg_catalog.pg_database_size(datname)), 0) FROM pg_catalog.pg_database \
                  WHERE datname = ANY($1))::bigint",
                [databases.to_vec().into()],
            ))
            .await;
        let _ = conn.close().await;
        let row = row?.ok_or_else(|| Error::Statement { reason: "the health probe returned no row".to_owned() })?;
        Ok(ServerHealth::Up {
            version: row.try_get_by_index(0)?,
            connections: row.try_get_by_index(1)?,
            max_connections: row.try_get_by_index(2)?,
            size_bytes: row.try_get_by_index(3)?,
        })
    }
}

/// An error and its causes on one line.
fn one_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line.replace('\n', " ")
}
