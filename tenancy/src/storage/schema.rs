//! The schema driver: a schema-isolated tenant has a PostgreSQL schema of the master
//! database named after its id, and a login role whose `search_path` is that schema and
//! which may use no other.
//!
//! Creating the role, the schema and its privileges, migrating it and marking the tenant
//! ready happen in one transaction of the master database, so a failure at any of them,
//! or a crash, leaves no schema behind.

use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, Statement};

use super::login::PlannedLogin;
use crate::connection::url::connect;
use crate::connection::{Binding, Route};
use crate::deletion::Removal;
use crate::operations::UndoEntry;
use crate::provisioning::{Created, NewTenant, ProvisionStep, Run, StepFailure};
use crate::registry::placement::Placement;
use crate::sql::quote_ident;
use crate::{Backend, BoxError, Error, Result, Tenancy, Tenant, TenantBinding, TenantLogin};

/// A schema tenant to make: the schema and its login role.
pub(crate) struct Plan {
    name: String,
    login: PlannedLogin,
}

pub(crate) async fn plan(tenancy: &Tenancy, new: &NewTenant) -> Result<Plan> {
    match tenancy.backend() {
        Backend::Postgres => {
            Ok(Plan { name: new.id().to_string(), login: PlannedLogin::new(tenancy, new.id()).await? })
        }
        other @ Backend::Sqlite => Err(Error::SchemaNeedsPostgres { backend: other.name() }),
    }
}

impl Plan {
    /// The tenant keeps `login`, its role already (a table tenant moving to a schema): the
    /// move's switch gives it the schema's `search_path` and takes the shared tables away.
    pub(crate) fn keep_login(&mut self, id: &crate::TenantId, login: TenantLogin) {
        self.login = PlannedLogin::existing(id, login);
    }

    pub(crate) fn placement(&self) -> Placement {
        Placement::Schema { schema: self.name.clone(), login: Some(self.login.config.clone()) }
    }

    pub(crate) async fn check_free(&self, tenancy: &Tenancy) -> Result<()> {
        // Both in one round trip.
        let row = tenancy
            .master()
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

    /// The role, the schema and the privileges, in `txn` (the master transaction that
    /// provisioning commits once the tenant is migrated and marked ready).
    pub(crate) async fn create(
        &self,
        tenancy: &Tenancy,
        run: &mut Run<'_>,
        txn: Option<&DatabaseTransaction>,
    ) -> Result<(), StepFailure> {
        let (name, user) = (&self.name, &self.login.config.user);
        let in_txn = || -> Result<&DatabaseTransaction, BoxError> {
            txn.ok_or_else(|| "schema isolation is provisioned in a master transaction".into())
        };
        // Rolled back with the transaction; the journal covers a crash after the commit.
        if !self.login.existing {
            run.step(ProvisionStep::CreateRole, Some(self.login.undo()), async {
                let txn = in_txn()?;
                // The role's connections see the tenant's schema alone.
                let search_path = format!("ALTER ROLE {} SET search_path = {}", quote_ident(user), quote_ident(name));
                let database = &tenancy.master_identity().await?.1;
                let login = &self.login;
                super::login::create_login_role(
                    txn,
                    &login.tenant,
                    user,
                    &login.verifier,
                    false,
                    database,
                    &search_path,
                )
                .await?;
                Ok(())
            })
            .await?;
            run.created(Created::Role { name: user.clone(), server: tenancy.master_server() });
        }
        run.step(ProvisionStep::CreateSchema, Some(UndoEntry::Schema { name: name.clone() }), async {
            // Marked as this master's (see `marker`), in the same round trip.
            let schema = format!("SCHEMA {}", quote_ident(name));
            let mark = super::marker::comment_sql(&schema, &tenancy.master_identity().await?.1, &self.login.tenant);
            in_txn()?.execute_unprepared(&format!("CREATE {schema}; {mark}")).await?;
            Ok(())
        })
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

/// The master database with `search_path` set to the tenant's schema alone, so nothing
/// falls through to `public`.
pub(crate) async fn migration_target(tenancy: &Tenancy, schema: &str) -> Result<DatabaseConnection> {
    connect(tenancy.master_url().as_str(), Some(schema)).await
}

/// The login's pool, or transactions of the master pool bound to the schema
/// ([`TenantBinding::SharedTransactions`], or a tenant registered without a login).
pub(crate) fn route(tenancy: &Tenancy, tenant: &Tenant, schema: &str, login: Option<&TenantLogin>) -> Result<Route> {
    if tenancy.backend() != Backend::Postgres {
        return Err(Error::HandleNotYetSupported { tenant: tenant.id().to_string(), isolation: tenant.isolation() });
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
pub(crate) async fn removals(tenancy: &Tenancy, schema: &str, login: Option<&TenantLogin>) -> Result<Vec<Removal>> {
    let row = tenancy
        .master()
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')",
            [schema.into()],
        ))
        .await?;
    let tables = row.map(|row| row.try_get_by_index::<i64>(0)).transpose()?.unwrap_or(0);
    let mut list = Vec::new();
    if let Some(login) = login {
        list.push(Removal::LoginRole { name: login.user.clone() });
    }
    list.push(Removal::Schema { name: schema.to_owned(), tables: u64::try_from(tables).unwrap_or(0) });
    Ok(list)
}
