//! The doctor: the registry checked against what exists, and the safe repairs.
//!
//! [`crate::Tenancy::diagnose`] returns [`Finding`]s, one per problem, each with its data,
//! a one-line message, what to do, and whether [`crate::Tenancy::repair`] may fix it. The
//! checks, one file per concern:
//!
//! - `storage`: registry rows whose storage is missing (a database tenant's database and
//!   role on the server its config names, or its SQLite file; a schema tenant's schema and
//!   login role; a table tenant's login role);
//! - `orphans`: storage no registry row owns. Tenancy marks what it creates (see
//!   `storage::marker`: `COMMENT ... IS 'tenancy:<master database>:<tenant>'` on
//!   PostgreSQL objects, the `application_id` of SQLite files), so an object with this
//!   master's mark and no row is an orphan `--repair` may drop, while one only named like a
//!   tenant's is reported and never dropped. Roles and databases belong to the whole
//!   server: the master's name in the mark keeps other masters' objects out;
//! - `cache`: cache namespaces of tenants that are not registered (reported only);
//! - `row_security`: table isolation on PostgreSQL ([`crate::rls::audit`], and views
//!   whose owner's rights reach past the policies).
//!
//! Migration drift needs the application's migrators, so `tenancy-migrate` checks it and
//! returns the same [`Finding`]s.
//!
//! - `citus` ([`crate::Tenancy::diagnose_citus`], `tenancydoctor --citus`; apart from
//!   [`crate::Tenancy::diagnose`], being about whether the app's schema would run on
//!   Citus, not about the registry's health): the registered models and the master's
//!   catalog checked against the rules Citus imposes on table and schema isolation
//!   ([`CitusRule`]).
//!
//! - stale operations: lifecycle operations of the journal ([`crate::operations`]) whose
//!   worker is gone. `--repair` settles them as a re-run of their command would: a create
//!   is undone, a delete finished.

mod cache;
mod citus;
mod finding;
mod orphans;
mod repair;
mod row_security;
mod storage;

use std::collections::{BTreeMap, HashSet};

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

pub(crate) use self::citus::check as diagnose_citus;
pub use self::finding::{CitusRule, Finding, Server};
pub use self::repair::Repair;
pub(crate) use self::repair::repair;
use crate::registry::placement::{Placement, TenantDatabase};
use crate::{Backend, Result, Tenancy, Tenant};

/// [`Tenancy::diagnose`].
pub(crate) async fn diagnose(tenancy: &Tenancy) -> Result<Vec<Finding>> {
    let mut findings = Vec::new();
    let registry = tenancy.tenants().await?;
    let admins = Admins::connect(tenancy, &registry).await?;
    findings.extend(admins.unreachable());

    // Storage is listed first and the registry read again after: provisioning claims a
    // tenant's registry row before it creates (and marks) anything, so an object listed
    // here whose row the second read lacks was not being created: its row is gone.
    let listed = orphans::list(tenancy, &admins).await?;
    let namespaces = cache::list(tenancy).await?;
    // The journal before the registry: see `Owned::renaming`.
    let renames = Owned::renaming(tenancy).await?;
    let registry = tenancy.tenants().await?;
    let leftovers = tenancy.leftovers(None).await?;
    let owned = Owned::of(&registry, &leftovers).and(renames);

    findings.extend(storage::missing(tenancy, &registry, &admins).await?);
    findings.extend(orphans::judge(listed, &owned));
    findings.extend(cache::judge(namespaces, &owned));
    findings.extend(row_security::check(tenancy).await?);
    // Kept on purpose, but still storage the operator should decide about.
    for leftover in leftovers {
        findings.push(Finding::Leftover {
            tenant: leftover.tenant,
            object: leftover.object.to_string(),
            reason: leftover.reason,
            since: leftover.left_at,
        });
    }
    for operation in tenancy.unfinished_operations().await? {
        if !operation.worker_alive {
            findings.push(Finding::StaleOperation {
                command: format!("{} {}", operation.kind.command(), operation.arguments()),
                tenant: operation.tenant,
                operation: operation.kind.to_string(),
            });
        }
    }
    admins.close().await;
    Ok(findings)
}

/// Every name a registry row gives its storage: nothing in here is ever dropped.
#[derive(Debug, Default)]
pub(crate) struct Owned {
    tenants: HashSet<String>,
    schemas: HashSet<String>,
    /// Role names on any server: a role a row names is kept whichever server it is on
    /// (two spellings of one server must not make a registered role look orphaned).
    roles: HashSet<String>,
    databases: HashSet<String>,
    /// SQLite tenant databases' names (the file is `<name>.db`).
    files: HashSet<String>,
}

impl Owned {
    /// What the renames of the journal hold: both ids of each, their schemas and tenant
    /// login roles, whichever name they have at the moment. Read *before* the registry: a
    /// rename's journal rows are removed in the transaction that changes its registry row,
    /// so every rename is seen in the journal read, or finished in the registry read after
    /// it, and its storage is never taken for an orphan.
    async fn renaming(tenancy: &Tenancy) -> Result<Owned> {
        let mut owned = Owned::default();
        let prefix = match tenancy.backend() {
            Backend::Postgres => Some(tenancy.master_identity().await?.0.clone()),
            Backend::Sqlite => None,
        };
        for operation in tenancy.unfinished_operations().await? {
            if operation.kind != crate::operations::OperationKind::Rename {
                continue;
            }
            let Some((from, to)) = crate::renaming::journaled_ids(&operation.params) else { continue };
            for id in [from, to] {
                owned.tenants.insert(id.to_string());
                owned.schemas.insert(id.to_string());
                if let Some(prefix) = &prefix {
                    owned.roles.insert(format!("{prefix}{id}"));
                }
            }
        }
        Ok(owned)
    }

    /// Both sets together.
    fn and(mut self, other: Owned) -> Owned {
        self.tenants.extend(other.tenants);
        self.schemas.extend(other.schemas);
        self.roles.extend(other.roles);
        self.databases.extend(other.databases);
        self.files.extend(other.files);
        self
    }

    /// What the registry rows and the leftovers of moves name.
    fn of(registry: &[Tenant], leftovers: &[crate::relocation::Leftover]) -> Owned {
        use crate::operations::UndoEntry;
        let mut owned = Owned::default();
        for leftover in leftovers {
            match &leftover.object {
                UndoEntry::Schema { name, .. } => {
                    owned.schemas.insert(name.clone());
                }
                UndoEntry::LoginRole { name, .. } | UndoEntry::Role { name, .. } => {
                    owned.roles.insert(name.clone());
                }
                UndoEntry::Database { name, .. } => {
                    owned.databases.insert(name.clone());
                }
                UndoEntry::File { path } => {
                    if let Some(stem) = path.file_stem() {
                        owned.files.insert(stem.to_string_lossy().into_owned());
                    }
                }
                _ => {}
            }
        }
        for tenant in registry {
            owned.tenants.insert(tenant.id().to_string());
            if let Some(login) = tenant.placement().login() {
                owned.roles.insert(login.user.clone());
            }
            match tenant.placement() {
                Placement::Schema { schema, .. } => {
                    owned.schemas.insert(schema.clone());
                }
                Placement::Database(TenantDatabase::Postgres(db)) => {
                    owned.databases.insert(db.name.clone());
                    owned.roles.insert(db.user.clone());
                }
                Placement::Database(TenantDatabase::Sqlite(db)) => {
                    owned.files.insert(db.name.clone());
                }
                Placement::Table { .. } | Placement::Cache => {}
            }
        }
        owned
    }
}

/// Admin connections to the PostgreSQL servers to check: the master's, every server a
/// database tenant's config names, and every registered server (`addserver`), also one
/// that holds no tenant (orphans may be left there). A server that cannot be reached is
/// kept with the reason, reported as a finding, and its checks skipped.
pub(crate) struct Admins {
    servers: BTreeMap<Server, std::result::Result<DatabaseConnection, String>>,
    /// The registered servers' names, by the address they were checked at.
    names: BTreeMap<Server, String>,
}

impl Admins {
    async fn connect(tenancy: &Tenancy, registry: &[Tenant]) -> Result<Admins> {
        let mut wanted: Vec<Server> = Vec::new();
        if let Some((host, port)) = tenancy.master_url().postgres_server() {
            wanted.push(Server { host, port });
        }
        for tenant in registry {
            if let Placement::Database(TenantDatabase::Postgres(db)) = tenant.placement() {
                wanted.push(Server { host: db.host.clone(), port: db.port });
            }
        }
        let registered = match tenancy.backend() {
            Backend::Postgres => tenancy.servers().await?,
            Backend::Sqlite => Vec::new(),
        };
        // A registered server is checked once, under the spelling a tenant's config or the
        // master URL already gave its address (`localhost` and `127.0.0.1` are one host).
        for server in &registered {
            if !wanted.iter().any(|known| server.is_at(&known.host, known.port)) {
                wanted.push(Server { host: server.host.clone(), port: server.port });
            }
        }
        let names = wanted
            .iter()
            .filter_map(|known| {
                let server = registered.iter().find(|server| server.is_at(&known.host, known.port))?;
                Some((known.clone(), server.name.to_string()))
            })
            .collect();
        let mut servers = BTreeMap::new();
        for server in wanted {
            if servers.contains_key(&server) {
                continue;
            }
            let connection = match tenancy.admin_url_for(&server.host, server.port).await {
                Ok(url) => crate::connection::url::connect(url.as_str(), None).await.map_err(|err| err.to_string()),
                Err(err) => Err(err.to_string()),
            };
            servers.insert(server, connection);
        }
        Ok(Admins { servers, names })
    }

    /// The reachable servers and their admin connections.
    fn reachable(&self) -> impl Iterator<Item = (&Server, &DatabaseConnection)> {
        self.servers.iter().filter_map(|(server, conn)| conn.as_ref().ok().map(|conn| (server, conn)))
    }

    /// The admin connection to `server`, if it was reachable.
    fn get(&self, server: &Server) -> Option<&DatabaseConnection> {
        self.servers.get(server).and_then(|conn| conn.as_ref().ok())
    }

    fn unreachable(&self) -> Vec<Finding> {
        self.servers
            .iter()
            .filter_map(|(server, conn)| {
                conn.as_ref().err().map(|reason| Finding::ServerUnreachable {
                    server: server.clone(),
                    name: self.names.get(server).cloned(),
                    reason: reason.clone(),
                })
            })
            .collect()
    }

    async fn close(self) {
        for conn in self.servers.into_values().flatten() {
            let _ = conn.close().await;
        }
    }
}

/// The PostgreSQL master's database name, which the marks name; `None` on SQLite.
async fn master_name(tenancy: &Tenancy) -> Result<Option<String>> {
    match tenancy.backend() {
        Backend::Postgres => Ok(Some(tenancy.master_identity().await?.1.clone())),
        Backend::Sqlite => Ok(None),
    }
}

/// A statement for PostgreSQL with values.
fn pg(sql: &str, values: Vec<sea_orm::Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// `names` as one JSON array value, read with `json_array_elements_text`.
fn json_list<'a>(names: impl IntoIterator<Item = &'a str>) -> sea_orm::Value {
    serde_json::Value::from(names.into_iter().collect::<Vec<_>>()).to_string().into()
}

/// The text values of the first column of `sql`.
async fn strings<C: ConnectionTrait>(db: &C, sql: &str, values: Vec<sea_orm::Value>) -> Result<HashSet<String>> {
    let rows = db.query_all_raw(pg(sql, values)).await?;
    rows.iter().map(|row| Ok(row.try_get_by_index::<String>(0)?)).collect()
}
