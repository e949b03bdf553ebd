//! Helpers shared by several test files (`use crate::common;`).

use example_app::Migrator;
use example_app::entities::project;
use sea_orm::prelude::ChronoUtc;
use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait, NotSet, QueryOrder, Set};
use tenancy::{BoxError, BoxFuture, ProvisionHooks, ProvisionStep, Tenancy, Tenant};
use tenancy_migrate::MigrateOnCreate;

/// Provisioning hooks that migrate with the example app's migrator, then fail right after
/// the given step: the failure injection of the "nothing left behind" tests.
pub(crate) struct FailAfter(pub(crate) ProvisionStep);

impl ProvisionHooks for FailAfter {
    fn migrate<'a>(
        &'a self,
        tenancy: &'a Tenancy,
        tenant: &'a Tenant,
        within: Option<&'a sea_orm::DatabaseTransaction>,
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        // The real hooks, so the injected failure comes after a real migration.
        Box::pin(async move { MigrateOnCreate::new(&Migrator).migrate(tenancy, tenant, within).await })
    }

    fn after_step(&self, step: ProvisionStep) -> Result<(), BoxError> {
        if step == self.0 { Err(format!("injected failure after {step}").into()) } else { Ok(()) }
    }
}

/// The names of the projects `db` sees, sorted: what the handle tests compare per tenant.
pub(crate) async fn project_names<C: ConnectionTrait>(db: &C) -> Vec<String> {
    project::Entity::find()
        .order_by_asc(project::Column::Name)
        .all(db)
        .await
        .expect("find projects")
        .into_iter()
        .map(|p| p.name)
        .collect()
}

/// Inserts a project named `name` through `db` (a handle or a transaction of one): with
/// the tenant column set to `tenant`, or, given `None`, left to the column default, which
/// table isolation on PostgreSQL fills with the bound tenant.
pub(crate) async fn add_project<C: ConnectionTrait>(db: &C, tenant: Option<&str>, name: &str) -> project::Model {
    project::ActiveModel {
        tenant_id: tenant.map_or(NotSet, |id| Set(id.to_owned())),
        name: Set(name.to_owned()),
        created_at: Set(ChronoUtc::now()),
        ..Default::default()
    }
    .insert(db)
    .await
    .expect("insert project")
}

/// Asks `tenancy` for `id` until the answer satisfies `check` or the live registry's bound
/// (one second) passed, and returns the last answer: a registry row changed by hand reaches
/// the live registry through its notification, a few milliseconds after the commit.
pub(crate) async fn until_registry_follows(
    tenancy: &Tenancy,
    id: &str,
    check: impl Fn(&tenancy::Result<tenancy::TenantConnection>) -> bool,
) -> tenancy::Result<tenancy::TenantConnection> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let answer = tenancy.tenant(id).await;
        if check(&answer) || std::time::Instant::now() >= deadline {
            return answer;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A fleet run's report and every tenant's, by id (`fleet::migrate_all_listed`).
pub(crate) struct Listed {
    pub(crate) report: tenancy_migrate::fleet::FleetReport,
    pub(crate) tenants: Vec<tenancy_migrate::fleet::TenantReport>,
}

impl std::ops::Deref for Listed {
    type Target = tenancy_migrate::fleet::FleetReport;

    fn deref(&self) -> &Self::Target {
        &self.report
    }
}

/// Each tenant's outcome, by id.
pub(crate) fn outcomes(listed: &Listed) -> Vec<(String, tenancy::ledger::TenantOutcome)> {
    listed.tenants.iter().map(|t| (t.tenant.to_string(), t.outcome)).collect()
}
