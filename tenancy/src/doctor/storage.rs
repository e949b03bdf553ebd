//! Registry rows whose storage is missing.

use std::collections::{BTreeMap, HashSet};

use super::{Admins, Finding, Server, json_list, strings};
use crate::registry::placement::{Placement, TenantDatabase};
use crate::{Result, Tenancy, Tenant, TenantStatus};

/// Names of roles and databases to look for on one server, with the tenant each belongs to.
#[derive(Default)]
struct Wanted<'a> {
    roles: Vec<(&'a Tenant, &'a str)>,
    databases: Vec<(&'a Tenant, &'a str)>,
    schemas: Vec<(&'a Tenant, &'a str)>,
}

/// Every registered tenant's storage that does not exist. Tenants still being provisioned
/// are left out: their storage is being made (an interrupted run is a stale operation).
pub(super) async fn missing(tenancy: &Tenancy, registry: &[Tenant], admins: &Admins) -> Result<Vec<Finding>> {
    let mut findings = Vec::new();
    let master_server = tenancy.master_url().postgres_server().map(|(host, port)| Server { host, port });
    let mut per_server: BTreeMap<Server, Wanted<'_>> = BTreeMap::new();
    let mut in_master = Wanted::default();
    let mut per_shard: BTreeMap<ShardKey<'_>, Wanted<'_>> = BTreeMap::new();
    // Tenants being created, deleted or renamed are the operations journal's (stale
    // operations).
    for tenant in registry
        .iter()
        .filter(|t| !matches!(t.status(), TenantStatus::Provisioning | TenantStatus::Deleting | TenantStatus::Renaming))
    {
        if let Some(shard) = tenant.placement().shard() {
            let wanted = per_shard.entry(ShardKey(shard)).or_default();
            if let Some(login) = tenant.placement().login() {
                wanted.roles.push((tenant, &login.user));
            }
            if let Some(schema) = tenant.placement().schema() {
                wanted.schemas.push((tenant, schema));
            }
            continue;
        }
        if let Some(login) = tenant.placement().login() {
            in_master.roles.push((tenant, &login.user));
        }
        match tenant.placement() {
            Placement::Schema { schema, .. } => in_master.schemas.push((tenant, schema)),
            Placement::Database(TenantDatabase::Postgres(db)) => {
                let wanted = per_server.entry(Server { host: db.host.clone(), port: db.port }).or_default();
                wanted.roles.push((tenant, &db.user));
                wanted.databases.push((tenant, &db.name));
            }
            Placement::Database(TenantDatabase::Sqlite(db)) => {
                // Without a master folder the registry row is corrupt, which reading the
                // tenant's handle reports; there is no file to look for.
                let Some(dir) = tenancy.sqlite_dir() else { continue };
                let path = db.file_in(dir);
                if !path.is_file() {
                    findings.push(Finding::MissingDatabaseFile { tenant: tenant.id().clone(), path });
                }
            }
            Placement::Table { .. } | Placement::Cache => {}
        }
    }

    if let Some(server) = master_server {
        let master = tenancy.master();
        missing_schemas(&mut findings, master, &in_master.schemas).await?;
        let present = roles(master, &in_master.roles).await?;
        missing_roles(&mut findings, &in_master.roles, &present, &server);
    }

    for (ShardKey(shard), wanted) in &per_shard {
        let server = Server { host: shard.host.clone(), port: shard.port };
        let admin = match crate::storage::shard::admin(tenancy, shard).await {
            Ok(admin) => admin,
            // A shard that cannot be reached: its server's tenants are not checked.
            Err(err) => {
                tracing::warn!(server = %shard.server, error = %err, "shard database unreachable; its tenants are not checked");
                continue;
            }
        };
        let checked = async {
            missing_schemas(&mut findings, &admin, &wanted.schemas).await?;
            let present = roles(&admin, &wanted.roles).await?;
            missing_roles(&mut findings, &wanted.roles, &present, &server);
            Ok::<_, crate::Error>(())
        }
        .await;
        let _ = admin.close().await;
        checked?;
    }

    for (server, wanted) in &per_server {
        // An unreachable server is a finding of its own.
        let Some(admin) = admins.get(server) else { continue };
        let present = strings(
            admin,
            "SELECT datname::text FROM pg_catalog.pg_database WHERE datname::text IN \
             (SELECT json_array_elements_text($1::json))",
            vec![json_list(names(&wanted.databases))],
        )
        .await?;
        for (tenant, database) in &wanted.databases {
            if !present.contains(*database) {
                findings.push(Finding::MissingDatabase {
                    tenant: tenant.id().clone(),
                    database: (*database).to_owned(),
                    server: server.clone(),
                });
            }
        }
        let present = roles(admin, &wanted.roles).await?;
        missing_roles(&mut findings, &wanted.roles, &present, server);
    }
    Ok(findings)
}

/// A shard database, ordered by where it is.
#[derive(PartialEq, Eq)]
struct ShardKey<'a>(&'a crate::registry::placement::ShardDatabase);

impl PartialOrd for ShardKey<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ShardKey<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.0.host, self.0.port, &self.0.database).cmp(&(&other.0.host, other.0.port, &other.0.database))
    }
}

async fn missing_schemas(
    findings: &mut Vec<Finding>,
    db: &sea_orm::DatabaseConnection,
    wanted: &[(&Tenant, &str)],
) -> Result<()> {
    let present = strings(
        db,
        "SELECT nspname::text FROM pg_catalog.pg_namespace WHERE nspname::text IN \
         (SELECT json_array_elements_text($1::json))",
        vec![json_list(names(wanted))],
    )
    .await?;
    for (tenant, schema) in wanted {
        if !present.contains(*schema) {
            findings.push(Finding::MissingSchema { tenant: tenant.id().clone(), schema: (*schema).to_owned() });
        }
    }
    Ok(())
}

fn names<'a>(wanted: &[(&Tenant, &'a str)]) -> Vec<&'a str> {
    wanted.iter().map(|(_, name)| *name).collect()
}

async fn roles(db: &sea_orm::DatabaseConnection, wanted: &[(&Tenant, &str)]) -> Result<HashSet<String>> {
    strings(
        db,
        "SELECT rolname::text FROM pg_catalog.pg_roles WHERE rolname::text IN \
         (SELECT json_array_elements_text($1::json))",
        vec![json_list(names(wanted))],
    )
    .await
}

fn missing_roles(findings: &mut Vec<Finding>, wanted: &[(&Tenant, &str)], present: &HashSet<String>, server: &Server) {
    for (tenant, role) in wanted {
        if !present.contains(*role) {
            findings.push(Finding::MissingRole {
                tenant: tenant.id().clone(),
                role: (*role).to_owned(),
                server: server.clone(),
            });
        }
    }
}
