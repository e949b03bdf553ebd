//! Migration drift, for `tenancydoctor`: tenants behind the application's migrator, or
//! with applied migrations it does not know. The core's doctor cannot see it (it has no
//! migrator), so it lives here and returns the core's [`Finding`]s.

use std::collections::HashSet;

use tenancy::doctor::Finding;
use tenancy::{Isolation, Tenancy, TenantStatus};

use crate::Result;
use crate::fleet::error_chain;
use crate::migrator::{DynMigrator, Migrators, applied_read_only, applied_to_master};

/// The drift of every ready or suspended tenant with relational storage (the shared tables
/// of table tenants once, as they are migrated once), and of the master's shared tables
/// when the application has a shared migrator. A tenant whose storage cannot be read gets
/// [`Finding::Unreadable`].
///
/// # Errors
/// [`crate::Error::Tenancy`] when the registry cannot be read.
pub async fn migration_drift(tenancy: &Tenancy, migrators: &Migrators) -> Result<Vec<Finding>> {
    let mut findings = Vec::new();
    let migrator = migrators.tenant.as_ref();
    let mut table_tenants_checked = false;
    for tenant in tenancy.tenants().await? {
        if !matches!(tenant.status(), TenantStatus::Ready | TenantStatus::Suspended) {
            continue;
        }
        let (id, target) = match tenant.isolation() {
            Isolation::Cache => continue,
            Isolation::Table if table_tenants_checked => continue,
            Isolation::Table => {
                table_tenants_checked = true;
                (None, "the shared tables of the table-isolated tenants".to_owned())
            }
            _ => (Some(tenant.id().clone()), format!("tenant '{}'", tenant.id())),
        };
        match applied_read_only(tenancy, &tenant, migrator).await {
            Ok(applied) => compare(&mut findings, id, target, migrator, &applied),
            Err(err) => findings.push(Finding::Unreadable { tenant: tenant.id().clone(), reason: error_chain(&err) }),
        }
    }
    if let Some(shared) = &migrators.shared {
        let applied = applied_to_master(tenancy, shared.as_ref()).await;
        compare(&mut findings, None, "the master's shared tables".to_owned(), shared.as_ref(), &applied);
    }
    Ok(findings)
}

fn compare(
    findings: &mut Vec<Finding>,
    tenant: Option<tenancy::TenantId>,
    target: String,
    migrator: &dyn DynMigrator,
    applied: &HashSet<String>,
) {
    let known = migrator.names();
    let pending: Vec<String> = known.iter().filter(|name| !applied.contains(*name)).cloned().collect();
    let mut unknown: Vec<String> = applied.iter().filter(|name| !known.contains(name)).cloned().collect();
    unknown.sort();
    if !pending.is_empty() {
        findings.push(Finding::MigrationsBehind { tenant: tenant.clone(), target: target.clone(), pending });
    }
    if !unknown.is_empty() {
        findings.push(Finding::UnknownMigrations { tenant, target, unknown });
    }
}
