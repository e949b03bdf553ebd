//! Shard databases: a database on a registered server that holds the schemas of many
//! schema tenants ([`ShardDatabase`]), the master database holding only their registry
//! rows. The master database itself is the default shard (`Placement::Schema` with no
//! shard), as in the first version.
//!
//! A shard is made on first use by the server's admin, closed to `PUBLIC`, and never
//! dropped by tenancy: each tenant's login role gets `CONNECT` on it and `USAGE` on its own
//! schema only, exactly as on the master.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

use crate::connection::url::connect;
use crate::registry::placement::ShardDatabase;
use crate::servers::Server;
use crate::sql::quote_ident;
use crate::{Result, Tenancy};

/// The database a schema tenant's schema and login role are in: the master's pool, or an
/// admin connection of its shard, closed after use.
pub(crate) struct Home {
    shard: Option<DatabaseConnection>,
}

impl Home {
    /// The master database for `None`, else `shard` as its server's admin.
    pub(crate) async fn open(tenancy: &Tenancy, shard: Option<&ShardDatabase>) -> Result<Home> {
        Ok(Home {
            shard: match shard {
                Some(shard) => Some(admin(tenancy, shard).await?),
                None => None,
            },
        })
    }

    pub(crate) fn db<'a>(&'a self, tenancy: &'a Tenancy) -> &'a DatabaseConnection {
        self.shard.as_ref().unwrap_or(tenancy.master())
    }

    pub(crate) async fn close(self) {
        if let Some(shard) = self.shard {
            let _ = shard.close().await;
        }
    }
}

/// A connection as the server's admin to `shard`.
pub(crate) async fn admin(tenancy: &Tenancy, shard: &ShardDatabase) -> Result<DatabaseConnection> {
    let mut url = tenancy.admin_url_for(&shard.host, shard.port).await?;
    url.set_path(&format!("/{}", shard.database));
    connect(url.as_str(), None).await
}

/// `server`'s shard database of this master, created if it does not exist yet.
pub(crate) async fn ensure(tenancy: &Tenancy, server: &Server) -> Result<ShardDatabase> {
    let master = &tenancy.master_identity().await?.1;
    let shard = ShardDatabase {
        server: server.name.to_string(),
        host: server.host.clone(),
        port: server.port,
        database: ShardDatabase::name_for(master),
    };
    let url = tenancy.server_admin_url(server)?;
    let admin = connect(url.as_str(), None).await?;
    let made = make(&admin, &shard.database).await;
    let _ = admin.close().await;
    made.map(|()| shard)
}

async fn make(admin: &DatabaseConnection, name: &str) -> Result<()> {
    let exists = admin
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1",
            [name.into()],
        ))
        .await?
        .is_some();
    if exists {
        return Ok(());
    }
    let database = quote_ident(name);
    match admin.execute_unprepared(&format!("CREATE DATABASE {database}")).await {
        Ok(_) => {}
        // Another creator made it first (42P04 duplicate_database; 23505 when both
        // inserted into pg_database at once): it is there, which is all we need.
        Err(err) if is_duplicate(&err) => return Ok(()),
        Err(err) => return Err(err.into()),
    }
    // Tenant roles are granted CONNECT one by one, as on the master.
    admin.execute_unprepared(&format!("REVOKE CONNECT, TEMPORARY ON DATABASE {database} FROM PUBLIC")).await?;
    Ok(())
}

fn is_duplicate(err: &sea_orm::DbErr) -> bool {
    let code = match err {
        sea_orm::DbErr::Exec(sea_orm::RuntimeErr::SqlxError(err))
        | sea_orm::DbErr::Query(sea_orm::RuntimeErr::SqlxError(err)) => {
            err.as_database_error().and_then(|db| db.code()).map(|code| code.into_owned())
        }
        _ => None,
    };
    matches!(code.as_deref(), Some("42P04" | "23505"))
}
