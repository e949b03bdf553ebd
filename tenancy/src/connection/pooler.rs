//! Running behind a connection pooler such as PgBouncer or RDS Proxy
//! ([`TenancyBuilder::pooler`](crate::TenancyBuilder::pooler)).
//!
//! A pooler in **transaction mode** hands a client a server connection for one
//! transaction at a time; outside a transaction, for one protocol round trip (up to a
//! `Sync`). sqlx, which sea-orm runs on, sends every statement with values in two round
//! trips (`Parse`/`Describe`/`Sync`, then `Bind`/`Execute`/`Sync`) and gives it a named
//! prepared statement (`sqlx_s_N`, numbered per client connection) that it never closes,
//! even with its statement cache off. Outside a transaction the two halves may reach two
//! server connections ("prepared statement ... does not exist"), and names left on a
//! server connection by one client collide with another's ("prepared statement
//! \"sqlx_s_2\" already exists"). PgBouncer 1.18, Debian's, does not track prepared
//! statements at all.
//!
//! So behind a transaction-mode pooler every statement tenancy sends with values runs in
//! a transaction that starts with `DEALLOCATE ALL`: one server connection
//! from `Parse` to `COMMIT`, and no name a previous client left on it. The pools prepare
//! nothing for reuse (their statement cache is off): a name is used once, inside the
//! transaction that prepared it. Statements without values go through the simple
//! protocol in one round trip and need no transaction.
//!
//! What cannot go through a transaction-mode pooler at all uses the direct URL
//! ([`TenancyBuilder::direct_url`](crate::TenancyBuilder::direct_url)): the registry's
//! migration check on connecting (DDL under an advisory lock), the live registry's
//! `LISTEN`, creating and dropping databases and roles (the admin URL defaults to the
//! direct URL's credentials), and the one-off connections of lifecycle operations and
//! migrations.

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, ExecResult, QueryResult, Statement,
    TransactionOptions, TransactionTrait,
};

use super::url::MasterUrl;
use crate::{Error, Result};

/// The environment variable [`Pooler::from_env`] reads.
pub const POOLER_ENV: &str = "TENANCY_POOLER";

/// The environment variable holding the direct URL of the master database (see
/// [`TenancyBuilder::direct_url`](crate::TenancyBuilder::direct_url)).
pub const DIRECT_URL_ENV: &str = "TENANCY_DIRECT_URL";

/// What stands between the application and PostgreSQL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pooler {
    /// Nothing: the URLs reach PostgreSQL itself (the default).
    #[default]
    None,
    /// A pooler in session mode (PgBouncer `pool_mode = session`): a client keeps its
    /// server connection until it disconnects, so everything works as without one.
    Session,
    /// A pooler in transaction mode (PgBouncer `pool_mode = transaction`, RDS Proxy):
    /// every statement with values runs in a transaction of its own that first clears
    /// the prepared statements other clients left on the server connection.
    Transaction,
}

impl Pooler {
    /// The pooler named in [`POOLER_ENV`] (`none`, `session` or `transaction`; unset or
    /// empty: `none`).
    ///
    /// # Errors
    /// [`Error::InvalidPooler`] for any other value.
    pub fn from_env() -> Result<Pooler> {
        match std::env::var(POOLER_ENV) {
            Ok(value) => value.parse(),
            Err(_) => Ok(Pooler::None),
        }
    }

    /// Its name, as [`POOLER_ENV`] takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Pooler::None => "none",
            Pooler::Session => "session",
            Pooler::Transaction => "transaction",
        }
    }
}

impl std::fmt::Display for Pooler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Pooler {
    type Err = Error;

    fn from_str(value: &str) -> Result<Pooler> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "none" => Ok(Pooler::None),
            "session" => Ok(Pooler::Session),
            "transaction" => Ok(Pooler::Transaction),
            _ => Err(Error::InvalidPooler { given: value.to_owned() }),
        }
    }
}

/// Clears the prepared statements a previous client of the server connection left
/// behind. Sent by the simple protocol: one round trip, no prepared statement of its own.
const DEALLOCATE_ALL: &str = "DEALLOCATE ALL";

/// A transaction on `pool` begun with `options`. Behind a transaction-mode pooler it is
/// safe there: the isolation level is set before anything else runs, then `DEALLOCATE
/// ALL`, so the names sqlx gives its statements in it meet none left by another client.
pub(crate) async fn begin(
    pool: &DatabaseConnection,
    options: TransactionOptions,
    pooler: Pooler,
) -> Result<DatabaseTransaction, DbErr> {
    let txn = pool.begin_with_options(options).await?;
    if pooler == Pooler::Transaction {
        txn.execute_unprepared(DEALLOCATE_ALL).await?;
    }
    Ok(txn)
}

/// The master pool for a few statements of the library's own (registry reads): the pool
/// itself, or behind a transaction-mode pooler a transaction of it (see [`begin`]),
/// committed by [`MasterAccess::finish`].
pub(crate) enum MasterAccess<'a> {
    Pool(&'a DatabaseConnection),
    Transaction(DatabaseTransaction),
}

impl<'a> MasterAccess<'a> {
    /// Access to `pool`, in a transaction when `pooler` is [`Pooler::Transaction`].
    pub(crate) async fn open(pool: &'a DatabaseConnection, pooler: Pooler) -> Result<MasterAccess<'a>, DbErr> {
        Ok(match pooler {
            Pooler::Transaction => MasterAccess::Transaction(begin(pool, TransactionOptions::default(), pooler).await?),
            Pooler::None | Pooler::Session => MasterAccess::Pool(pool),
        })
    }

    /// Commits the transaction, if there is one.
    pub(crate) async fn finish(self) -> Result<(), DbErr> {
        match self {
            MasterAccess::Pool(_) => Ok(()),
            MasterAccess::Transaction(txn) => txn.commit().await,
        }
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for MasterAccess<'_> {
    fn get_database_backend(&self) -> DbBackend {
        match self {
            MasterAccess::Pool(pool) => pool.get_database_backend(),
            MasterAccess::Transaction(txn) => txn.get_database_backend(),
        }
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        match self {
            MasterAccess::Pool(pool) => pool.execute_raw(stmt).await,
            MasterAccess::Transaction(txn) => txn.execute_raw(stmt).await,
        }
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        match self {
            MasterAccess::Pool(pool) => pool.execute_unprepared(sql).await,
            MasterAccess::Transaction(txn) => txn.execute_unprepared(sql).await,
        }
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        match self {
            MasterAccess::Pool(pool) => pool.query_one_raw(stmt).await,
            MasterAccess::Transaction(txn) => txn.query_one_raw(stmt).await,
        }
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        match self {
            MasterAccess::Pool(pool) => pool.query_all_raw(stmt).await,
            MasterAccess::Transaction(txn) => txn.query_all_raw(stmt).await,
        }
    }
}

/// Where the pooler is: the master database's server reached directly and through the
/// pooler, so the application's pools of tenants on that server (their login roles,
/// their databases, their shard databases) connect through the pooler too.
#[derive(Clone, Debug)]
pub(crate) struct PoolerRoute {
    direct: (String, u16),
    pooled: (String, u16),
}

impl PoolerRoute {
    /// The route from the master URL the application was given (`pooled`) and the direct
    /// one; `None` when either is no PostgreSQL URL.
    pub(crate) fn new(pooled: &MasterUrl, direct: &MasterUrl) -> Option<PoolerRoute> {
        Some(PoolerRoute { direct: direct.postgres_server()?, pooled: pooled.postgres_server()? })
    }

    /// `url` through the pooler when it names the direct server: host and port replaced
    /// by the pooler's, user, password, database and options kept. Any other URL (another
    /// server, a SQLite file) is returned as it is.
    pub(crate) fn through_pooler(&self, url: String) -> String {
        let Ok(mut parsed) = url::Url::parse(&url) else { return url };
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return url;
        }
        let host = parsed.host_str().unwrap_or("localhost").trim_matches(['[', ']']).to_owned();
        let port = parsed.port().unwrap_or(crate::DEFAULT_POSTGRES_PORT);
        if port != self.direct.1 || !crate::servers::same_host(&host, &self.direct.0) {
            return url;
        }
        let (host, port) = &self.pooled;
        let host = if host.contains(':') { format!("[{host}]") } else { host.clone() };
        if parsed.set_host(Some(&host)).is_err() || parsed.set_port(Some(*port)).is_err() {
            return url;
        }
        parsed.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooler_names() {
        assert_eq!("transaction".parse::<Pooler>().unwrap(), Pooler::Transaction);
        assert_eq!(" Session ".parse::<Pooler>().unwrap(), Pooler::Session);
        assert_eq!("".parse::<Pooler>().unwrap(), Pooler::None);
        let err = "statement".parse::<Pooler>().unwrap_err().to_string();
        assert!(err.contains("'statement'") && err.contains("none, session or transaction"), "{err}");
    }

    #[test]
    fn routes_the_direct_server_only() {
        let pooled = MasterUrl::parse("postgres://app:pw@127.0.0.1:6432/main").unwrap();
        let direct = MasterUrl::parse("postgres://app:pw@localhost:5432/main").unwrap();
        let route = PoolerRoute::new(&pooled, &direct).unwrap();
        assert_eq!(
            route.through_pooler("postgres://tnt_acme:s%40cret@127.0.0.1:5432/main?sslmode=disable".to_owned()),
            "postgres://tnt_acme:s%40cret@127.0.0.1:6432/main?sslmode=disable"
        );
        assert_eq!(
            route.through_pooler("postgres://acme:pw@localhost/acme_db".to_owned()),
            "postgres://acme:pw@127.0.0.1:6432/acme_db"
        );
        let elsewhere = "postgres://acme:pw@db2.internal:5432/acme_db".to_owned();
        assert_eq!(route.through_pooler(elsewhere.clone()), elsewhere);
        let sqlite = "sqlite://tenants/acme.db?mode=rw".to_owned();
        assert_eq!(route.through_pooler(sqlite.clone()), sqlite);
    }
}
