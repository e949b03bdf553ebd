//! The table driver: a table-isolated tenant's rows live in the master database's shared
//! tables. On PostgreSQL it gets a login role that the row-level security policies know
//! it by ([`crate::rls`]); on SQLite its handle rewrites statements instead
//! ([`crate::table_isolation`]).

use super::login::PlannedLogin;
use crate::connection::{Binding, Route};
use crate::provisioning::{Created, NewTenant, ProvisionStep, Run, StepFailure};
use crate::registry::placement::Placement;
use crate::{Backend, Result, Tenancy, TenantBinding, TenantLogin};

/// A table tenant to make: its login role on PostgreSQL, nothing on SQLite.
pub(crate) struct Plan {
    login: Option<PlannedLogin>,
}

pub(crate) async fn plan(tenancy: &Tenancy, new: &NewTenant) -> Result<Plan> {
    let login = match tenancy.backend() {
        Backend::Postgres => Some(PlannedLogin::new(tenancy, new.id()).await?),
        Backend::Sqlite => None,
    };
    Ok(Plan { login })
}

impl Plan {
    pub(crate) fn placement(&self) -> Placement {
        Placement::Table { login: self.login.as_ref().map(|login| login.config.clone()) }
    }

    pub(crate) async fn check_free(&self, tenancy: &Tenancy) -> Result<()> {
        match &self.login {
            Some(login) => login.check_free(tenancy).await,
            None => Ok(()),
        }
    }

    pub(crate) async fn create(&self, tenancy: &Tenancy, run: &mut Run<'_>) -> Result<(), StepFailure> {
        let Some(login) = &self.login else { return Ok(()) };
        let user = &login.config.user;
        run.step(ProvisionStep::CreateRole, async {
            let txn = sea_orm::TransactionTrait::begin(tenancy.master()).await?;
            let database = &tenancy.master_identity().await?.1;
            super::login::create_table_tenant_role(&txn, &login.tenant, user, &login.verifier, database).await?;
            txn.commit().await?;
            Ok(Some(login.undo()))
        })
        .await?;
        run.created(Created::Role { name: user.clone(), server: tenancy.master_server() });
        Ok(())
    }
}

/// Table tenants on a SQLite master get their statements rewritten; on PostgreSQL they
/// use their login's pool, or transactions of the master pool bound to them
/// ([`TenantBinding::SharedTransactions`], or a tenant registered without a login).
pub(crate) fn route(tenancy: &Tenancy, login: Option<&TenantLogin>) -> Route {
    match tenancy.backend() {
        Backend::Sqlite => Route::SqliteRewrite,
        Backend::Postgres if login.is_none() || tenancy.tenant_binding() == TenantBinding::SharedTransactions => {
            Route::Bound(Binding::Table)
        }
        Backend::Postgres => Route::OwnPool { sqlite: false },
    }
}
