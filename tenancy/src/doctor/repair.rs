//! `--repair`: drops orphans this master can prove it made, and runs the row-security step
//! again. Nothing a registry row names is ever dropped: the registry is read again first,
//! and each object's mark is read again just before it is dropped.

use std::collections::BTreeMap;

use sea_orm::{ConnectionTrait, DatabaseConnection};

use super::orphans::{ObjectKind, comment_of, sqlite_mark};
use super::{Finding, Owned, Server, master_name};
use crate::sql::quote_ident;
use crate::storage::{database, login, marker, schema};
use crate::{Error, Result, Tenancy};

/// What repairing one finding did.
#[derive(Debug)]
#[non_exhaustive]
pub struct Repair {
    /// The finding.
    pub finding: Finding,
    /// `Ok` when it was repaired; [`Error::RepairFailed`] when it was not (not a finding
    /// repairs fix, changed since it was found, or the repair failed).
    pub outcome: Result<()>,
}

/// [`crate::Tenancy::repair`].
pub(crate) async fn repair(tenancy: &Tenancy, findings: &[Finding]) -> Result<Vec<Repair>> {
    // The journal before the registry (see `Owned::renaming`).
    let renames = Owned::renaming(tenancy).await?;
    let registry = tenancy.tenants().await?;
    let owned = Owned::of(&registry, &tenancy.leftovers(None).await?).and(renames);
    let master = master_name(tenancy).await?.unwrap_or_default();
    let mut run = Run { tenancy, owned, master, admins: BTreeMap::new(), row_security: None };

    // Databases before roles (a role that owns a database cannot be dropped), schemas
    // before login roles (privileges on them), row security last.
    // Stale operations first: settling them may remove what would otherwise look orphaned.
    let rank = |finding: &Finding| match finding {
        Finding::StaleOperation { .. } => -1,
        Finding::OrphanDatabase { .. } | Finding::OrphanDatabaseFile { .. } => 0,
        Finding::OrphanSchema { .. } => 1,
        Finding::OrphanRole { .. } => 2,
        _ => 3,
    };
    let mut ordered: Vec<&Finding> = findings.iter().collect();
    ordered.sort_by_key(|finding| rank(finding));
    let mut repairs = Vec::with_capacity(ordered.len());
    for finding in ordered {
        let outcome =
            run.one(finding).await.map_err(|reason| Error::RepairFailed { subject: finding.subject(), reason });
        if outcome.is_ok() {
            tracing::info!(subject = %finding.subject(), kind = finding.kind(), "repaired");
        }
        repairs.push(Repair { finding: finding.clone(), outcome });
    }
    for conn in run.admins.into_values() {
        let _ = conn.close().await;
    }
    Ok(repairs)
}

struct Run<'a> {
    tenancy: &'a Tenancy,
    owned: Owned,
    master: String,
    admins: BTreeMap<Server, DatabaseConnection>,
    /// The row-security step's outcome, once it ran (it repairs every such finding at once).
    row_security: Option<Result<(), String>>,
}

impl Run<'_> {
    async fn one(&mut self, finding: &Finding) -> Result<(), String> {
        let owned_by_row = || Err("a registry row names it now".to_owned());
        match finding {
            Finding::OrphanDatabase { database, server, tenant } => {
                if self.owned.databases.contains(database) {
                    return owned_by_row();
                }
                let admin = &self.admin(server).await?.clone();
                check_mark(admin, &self.master, ObjectKind::Database, database, tenant).await?;
                // FORCE ends the sessions still open on it.
                let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(database));
                admin.execute_unprepared(&sql).await.map(drop).map_err(|err| err.to_string())
            }
            Finding::OrphanRole { role, server, tenant, login } => {
                if self.owned.roles.contains(role) {
                    return owned_by_row();
                }
                if *login {
                    let master = self.tenancy.master();
                    check_mark(master, &self.master, ObjectKind::Role, role, tenant).await?;
                    // With what was granted to it in the master database.
                    login::drop_login_role(master, role).await.map_err(|err| err.to_string())
                } else {
                    let admin = &self.admin(server).await?.clone();
                    check_mark(admin, &self.master, ObjectKind::Role, role, tenant).await?;
                    let sql = format!("DROP ROLE IF EXISTS {}", quote_ident(role));
                    admin.execute_unprepared(&sql).await.map(drop).map_err(|err| err.to_string())
                }
            }
            Finding::OrphanSchema { schema: name, tenant } => {
                if self.owned.schemas.contains(name) {
                    return owned_by_row();
                }
                let master = self.tenancy.master();
                check_mark(master, &self.master, ObjectKind::Schema, name, tenant).await?;
                schema::drop_schema(master, name).await.map_err(|err| err.to_string())
            }
            Finding::OrphanDatabaseFile { path } => {
                let name = path.file_stem().map(|stem| stem.to_string_lossy().into_owned()).unwrap_or_default();
                if self.owned.files.contains(&name) {
                    return owned_by_row();
                }
                let file = self.tenancy.master_url().sqlite_file_name().unwrap_or_default();
                if sqlite_mark(path) != Some(marker::sqlite_application_id(&file)) {
                    return Err("its header no longer carries this master's mark".to_owned());
                }
                database::remove_sqlite_file(path).map_err(|err| err.to_string())
            }
            Finding::RowSecurity { .. } | Finding::ViewBypassesRowSecurity { .. } => {
                if self.row_security.is_none() {
                    let outcome = crate::rls::enable_row_security(self.tenancy.master())
                        .await
                        .map(drop)
                        .map_err(|err| with_causes(&err));
                    self.row_security = Some(outcome);
                }
                self.row_security.clone().unwrap_or(Ok(()))
            }
            Finding::StaleOperation { tenant, .. } => {
                crate::operations::settle_stale(self.tenancy, tenant).await.map_err(|err| with_causes(&err))
            }
            other => Err(format!("{} is not something --repair fixes; {}", other.kind(), other.fix())),
        }
    }

    async fn admin(&mut self, server: &Server) -> Result<&DatabaseConnection, String> {
        if !self.admins.contains_key(server) {
            let url = self.tenancy.admin_url_for(&server.host, server.port).await.map_err(|err| err.to_string())?;
            let conn = crate::connection::url::connect(url.as_str(), None).await.map_err(|err| err.to_string())?;
            self.admins.insert(server.clone(), conn);
        }
        self.admins.get(server).ok_or_else(|| format!("no connection to {server}"))
    }
}

/// Refuses unless the object still carries the mark of the master `master` for `tenant`.
async fn check_mark(
    db: &DatabaseConnection,
    master: &str,
    kind: ObjectKind,
    name: &str,
    tenant: &str,
) -> Result<(), String> {
    let comment = comment_of(db, kind, name).await.map_err(|err| err.to_string())?;
    match comment.as_deref().and_then(|comment| marker::tenant_of(comment, master)) {
        Some(marked) if marked == tenant => Ok(()),
        _ => Err("it no longer carries this master's mark (or is gone)".to_owned()),
    }
}

/// An error and its causes on one line.
fn with_causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}
