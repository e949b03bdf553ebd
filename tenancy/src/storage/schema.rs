//! The schema driver: a schema-isolated tenant has a PostgreSQL schema named after its id,
//! in the master database or in a shard database of another server ([`super::shard`]),
//! and a login role whose `search_path` is that schema and which may use no other.
//!
//! Creating the role, the schema and its privileges and migrating it happen in one
//! transaction of the database that holds the schema; in the master database, marking
//! the tenant ready is part of it, so a failure at any of them, or a crash, leaves no
//! schema behind. On a shard the tenant is marked ready in the master once the shard's
//! transaction committed; a crash between the two leaves the journal's undo entries,
//! which the next run removes.

use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, Statement, TransactionTrait};

use super::login::PlannedLogin;
use crate::connection::url::connect;
use crate::connection::{Binding, Route};
use crate::deletion::Removal;
use crate::operations::UndoEntry;
use crate::provisioning::{Created, NewTenant, ProvisionStep, Run, StepFailure};
use crate::registry::placement::{Placement, ShardDatabase};
use crate::sql::quote_ident;
use crate::{Backend, BoxError, Error, Result, Tenancy, Tenant, TenantBinding, TenantLogin};

/// A schema tenant to make: the schema and its login role, in the master database or a
/// shard.
pub(crate) struct Plan {
    name: String,
    login: PlannedLogin,
    shard: Option<ShardTarget>,
}

/// The shard database a new schema goes in, with the admin connection that makes it.
struct ShardTarget {
    shard: ShardDatabase,
    admin: DatabaseConnection,
}

pub(crate) async fn plan(tenancy: &Tenancy, new: &NewTenant) -> Result<Plan> {
    if tenancy.backend() != Backend::Postgres {
        return Err(Error::SchemaNeedsPostgres { backend: tenancy.backend().name() });
    }
    let login = PlannedLogin::new(tenancy, new.id()).await?;
    let server = match (new.server(), new.template()) {
        (Some(name), _) => tenancy.server_for_new_tenant(name).await?,
        (None, None) => tenancy.pick_server().await?,
        // A clone goes where its template is, if that server takes new tenants: in the
        // same database it is made from the template's catalog, without migrations.
        (None, Some(template)) => match template_server(tenancy, template).await? {
            Some(server) => server,
            None => tenancy.pick_server().await?,
        },
    };
    let shard = match server.is_master() {
        true => None,
        false => {
            let shard = super::shard::ensure(tenancy, &server).await?;
            let admin = super::shard::admin(tenancy, &shard).await?;
            Some(ShardTarget { shard, admin })
        }
    };
    Ok(Plan { name: new.id().to_string(), login, shard })
}

/// The server of a schema template, if it takes new tenants.
async fn template_server(tenancy: &Tenancy, template: &crate::TenantId) -> Result<Option<crate::servers::Server>> {
    let Some(template) = tenancy.find_tenant(template).await? else { return Ok(None) };
    let Placement::Schema { shard, .. } = template.placement() else { return Ok(None) };
    let name: crate::servers::ServerName = match shard {
        Some(shard) => shard.server.parse()?,
        None => crate::servers::ServerName::master(),
    };
    match tenancy.server_for_new_tenant(&name).await {
        Ok(server) => Ok(Some(server)),
        Err(Error::ServerNotAccepting { .. } | Error::UnknownServer { .. }) => Ok(None),
        Err(err) => Err(err),
    }
}

impl Plan {
    /// Whether the schema goes in a shard database (not the master's).
    pub(crate) fn on_shard(&self) -> bool {
        self.shard.is_some()
    }

    /// The tenant keeps `login`, its role already (a table tenant moving to a schema): the
    /// move's switch gives it the schema's `search_path` and takes the shared tables away.
    pub(crate) fn keep_login(&mut self, id: &crate::TenantId, login: TenantLogin) {
        self.login = PlannedLogin::existing(id, login);
    }

    pub(crate) fn placement(&self) -> Placement {
        Placement::Schema {
            schema: self.name.clone(),
            login: Some(self.login.config.clone()),
            shard: self.shard.as_ref().map(|target| target.shard.clone()),
        }
    }

    /// The database the schema goes in: the master's pool, or the shard's admin
    /// connection; provisioning makes its transaction there.
    pub(crate) fn home<'a>(&'a self, tenancy: &'a Tenancy) -> (&'a DatabaseConnection, bool) {
        match &self.shard {
            Some(target) => (&target.admin, false),
            None => (tenancy.master(), true),
        }
    }

    /// Releases the shard's admin connection.
    pub(crate) async fn close(&self) {
        if let Some(target) = &self.shard {
            let _ = target.admin.close_by_ref().await;
        }
    }

    pub(crate) async fn check_free(&self, tenancy: &Tenancy) -> Result<()> {
        // Both in one round trip.
        let row = self
            .home(tenancy)
            .0
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1), \
                 EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $2)",
                [self.name.as_str().into(), self.login.config.user.as_str().into()],
            ))
            .await?;
        let (schema_exists, role_exists) = match row {
            Some(row) => (row.try_get_by_index::<bool>(0)?, row.try_get_by_index::<bool>(1)?),
            None => (false, false),
        };
        if schema_exists {
            return Err(Error::SchemaExists { name: self.name.clone() });
        }
        if role_exists && !self.login.existing {
            return Err(Error::LoginRoleExists { name: self.login.config.user.clone() });
        }
        Ok(())
    }

    /// The login role, in a short transaction of the schema's database before the long
    /// one of [`Plan::create`] begins (see [`super::Plan::create_role`]); journaled, so a
    /// failure later or a crash has it dropped again.
    pub(crate) async fn create_role(&self, tenancy: &Tenancy, run: &mut Run<'_>) -> Result<(), StepFailure> {
        if self.login.existing {
            return Ok(());
        }
        let (name, user) = (&self.name, &self.login.config.user);
        let shard = self.shard.as_ref().map(|target| target.shard.clone());
        let undo = UndoEntry::LoginRole { name: user.clone(), shard: shard.clone() };
        run.step(ProvisionStep::CreateRole, Some(undo), async {
            // The role's connections see the tenant's schema alone (made next).
            let search_path = format!("ALTER ROLE {} SET search_path = {}", quote_ident(user), quote_ident(name));
            let database = match &shard {
                Some(shard) => &shard.database,
                None => &tenancy.master_identity().await?.1,
            };
            let login = &self.login;
            let txn = self.home(tenancy).0.begin().await?;
            let made = super::login::create_login_role(
                &txn,
                &login.tenant,
                user,
                &login.verifier,
                false,
                database,
                &search_path,
            )
            .await;
            match made {
                Ok(()) => txn.commit().await?,
                Err(err) => {
                    let _ = txn.rollback().await;
                    return Err(err.into());
                }
            }
            Ok(())
        })
        .await?;
        let server = shard.as_ref().map_or_else(|| tenancy.master_server(), ShardDatabase::address);
        run.created(Created::Role { name: user.clone(), server });
        Ok(())
    }

    /// The schema and the privileges, in `txn` (the transaction that provisioning commits
    /// once the tenant is migrated and, in the master database, marked ready).
    pub(crate) async fn create(
        &self,
        tenancy: &Tenancy,
        run: &mut Run<'_>,
        txn: Option<&DatabaseTransaction>,
    ) -> Result<(), StepFailure> {
        let (name, user) = (&self.name, &self.login.config.user);
        let in_txn = || -> Result<&DatabaseTransaction, BoxError> {
            txn.ok_or_else(|| "schema isolation is provisioned in a transaction of the schema's database".into())
        };
        // Rolled back with the transaction; the journal covers a crash after the commit.
        let shard = self.shard.as_ref().map(|target| target.shard.clone());
        run.step(
            ProvisionStep::CreateSchema,
            Some(UndoEntry::Schema { name: name.clone(), shard: shard.clone() }),
            async {
                // Marked as this master's (see `marker`), in the same round trip.
                let schema = format!("SCHEMA {}", quote_ident(name));
                let mark = super::marker::comment_sql(&schema, &tenancy.master_identity().await?.1, &self.login.tenant);
                in_txn()?.execute_unprepared(&format!("CREATE {schema}; {mark}")).await?;
                Ok(())
            },
        )
        .await?;
        run.created(Created::Schema { name: name.clone() });
        run.step(ProvisionStep::GrantPrivileges, None, async {
            let (schema, role) = (quote_ident(name), quote_ident(user));
            // Rows, not structure: the tenant's migrations run as the master user, whose
            // future tables and sequences in the schema the role may use. One round trip:
            // DDL without values, identifiers validated and quoted.
            in_txn()?
                .execute_unprepared(&format!(
                    "GRANT USAGE ON SCHEMA {schema} TO {role}; \
                     ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} \
                     GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}; \
                     ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT USAGE, SELECT ON SEQUENCES TO {role}"
                ))
                .await?;
            Ok(())
        })
        .await
    }
}

/// Drops a tenant's schema with everything in it.
pub(crate) async fn drop_schema(master: &DatabaseConnection, name: &str) -> Result<(), BoxError> {
    master.execute_unprepared(&format!("DROP SCHEMA IF EXISTS {} CASCADE", quote_ident(name))).await?;
    Ok(())
}

/// Drops a schema of the master database or of a shard.
pub(crate) async fn drop_schema_in(
    tenancy: &Tenancy,
    shard: Option<&ShardDatabase>,
    name: &str,
) -> Result<(), BoxError> {
    let home = super::shard::Home::open(tenancy, shard).await?;
    let dropped = drop_schema(home.db(tenancy), name).await;
    home.close().await;
    dropped
}

/// The schema's database (the master, or its shard as the server's admin) with
/// `search_path` set to the tenant's schema alone, so nothing falls through to `public`.
pub(crate) async fn migration_target(
    tenancy: &Tenancy,
    schema: &str,
    shard: Option<&ShardDatabase>,
) -> Result<DatabaseConnection> {
    match shard {
        None => connect(tenancy.master_url().as_str(), Some(schema)).await,
        Some(shard) => {
            let mut url = tenancy.admin_url_for(&shard.host, shard.port).await?;
            url.set_path(&format!("/{}", shard.database));
            connect(url.as_str(), Some(schema)).await
        }
    }
}

/// The login's pool, or transactions of the master pool bound to the schema
/// ([`TenantBinding::SharedTransactions`], or a tenant registered without a login).
pub(crate) fn route(
    tenancy: &Tenancy,
    tenant: &Tenant,
    schema: &str,
    login: Option<&TenantLogin>,
    shard: Option<&ShardDatabase>,
) -> Result<Route> {
    if tenancy.backend() != Backend::Postgres {
        return Err(Error::HandleNotYetSupported { tenant: tenant.id().to_string(), isolation: tenant.isolation() });
    }
    if shard.is_some() {
        // The master pool cannot reach another database: a shard tenant always uses
        // its login's pool, whatever the binding.
        return match login {
            Some(_) => Ok(Route::OwnPool { sqlite: false }),
            None => Err(Error::CorruptRegistry {
                tenant: tenant.id().to_string(),
                reason: "a schema tenant on a shard has no login role".to_owned(),
            }),
        };
    }
    if login.is_none() || tenancy.tenant_binding() == TenantBinding::SharedTransactions {
        // `pg_temp` last: unless named, PostgreSQL searches the temporary schema first,
        // and a temporary relation would shadow the tenant's tables.
        return Ok(Route::Bound(Binding::Schema { search_path: format!("{}, pg_temp", quote_ident(schema)) }));
    }
    Ok(Route::OwnPool { sqlite: false })
}

/// What deleting a schema tenant removes: its login role (its sessions ended first, so
/// none holds a lock in the schema), then the schema.
pub(crate) async fn removals(
    tenancy: &Tenancy,
    schema: &str,
    login: Option<&TenantLogin>,
    shard: Option<&ShardDatabase>,
) -> Result<Vec<Removal>> {
    let count = Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')",
        [schema.into()],
    );
    let home = super::shard::Home::open(tenancy, shard).await?;
    let row = home.db(tenancy).query_one_raw(count).await;
    home.close().await;
    let row = row?;
    let tables = row.map(|row| row.try_get_by_index::<i64>(0)).transpose()?.unwrap_or(0);
    let mut list = Vec::new();
    if let Some(login) = login {
        list.push(Removal::LoginRole { name: login.user.clone(), shard: shard.cloned() });
    }
    list.push(Removal::Schema {
        name: schema.to_owned(),
        tables: u64::try_from(tables).unwrap_or(0),
        shard: shard.cloned(),
    });
    Ok(list)
}
