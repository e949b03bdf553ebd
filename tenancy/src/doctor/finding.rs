//! [`Finding`]: one problem the doctor found, with its data, a one-line message, what to
//! do about it, and whether `--repair` may fix it.

use std::fmt;
use std::path::PathBuf;

use crate::TenantId;

/// A PostgreSQL server, as a tenant's config or the master URL names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Server {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// A rule of Citus that [`Finding::Citus`] reports a table breaking.
///
/// Table isolation maps onto tables distributed by the tenant column
/// (`create_distributed_table(table, tenant column)`) with the shared tables they reference
/// as reference tables; schema isolation onto schema-based sharding. See
/// `docs/scale-out.md` for the rules and their sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum CitusRule {
    /// A scoped table's primary key does not include its tenant column: Citus enforces
    /// primary keys only when they contain the distribution column.
    PrimaryKey,
    /// A unique constraint or unique index of a scoped table does not include its tenant
    /// column, for the same reason.
    UniqueKey,
    /// A foreign key between two scoped tables that does not pair their tenant columns,
    /// or one from a table that is not tenant-scoped to a scoped one (Citus refuses keys
    /// from reference and local tables to distributed ones).
    ForeignKey,
    /// A scoped table references a table that is not tenant-scoped: on Citus that table
    /// must be a reference table (`create_reference_table`).
    ReferenceTable,
    /// A key column (primary key, foreign key, or one filled from a sequence) of a scoped
    /// table is `smallint`/`integer` where Citus needs `bigint`.
    IntegerKey,
    /// A table in a schema tenant's schema uses a feature Citus's schema-based sharding
    /// refuses (a foreign table, inheritance, a partition across schemas, a foreign key
    /// across schemas other than to a reference table).
    SchemaSharding,
}

impl CitusRule {
    /// The finding's kind for this rule ([`Finding::kind`]).
    pub const fn kind(self) -> &'static str {
        match self {
            CitusRule::PrimaryKey => "citus_primary_key",
            CitusRule::UniqueKey => "citus_unique_key",
            CitusRule::ForeignKey => "citus_foreign_key",
            CitusRule::ReferenceTable => "citus_reference_table",
            CitusRule::IntegerKey => "citus_integer_key",
            CitusRule::SchemaSharding => "citus_schema_sharding",
        }
    }
}

/// One problem found by [`crate::Tenancy::diagnose`] (or, for migration drift, by
/// `tenancy-migrate`).
///
/// *Orphans* are objects tenancy marked as made by this master's provisioning (see
/// [`Finding::OrphanSchema`]) that no registry row owns any more: `--repair` may drop
/// them. *Unowned* objects are only named like a tenant's: they are reported, never
/// dropped. Nothing a registry row names is ever dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Finding {
    /// A database tenant's PostgreSQL database does not exist on the server its config names.
    MissingDatabase {
        /// The tenant.
        tenant: TenantId,
        /// The database's name.
        database: String,
        /// Its server.
        server: Server,
    },
    /// A tenant's role does not exist: a database tenant's owner role on its server, or a
    /// schema or table tenant's login role on the master's.
    MissingRole {
        /// The tenant.
        tenant: TenantId,
        /// The role's name.
        role: String,
        /// Its server.
        server: Server,
    },
    /// A database tenant's SQLite file does not exist.
    MissingDatabaseFile {
        /// The tenant.
        tenant: TenantId,
        /// The file.
        path: PathBuf,
    },
    /// A schema tenant's schema does not exist in the master database.
    MissingSchema {
        /// The tenant.
        tenant: TenantId,
        /// The schema's name.
        schema: String,
    },
    /// A server that tenants' configs name, or a registered one (`addserver`), could not be
    /// reached with the admin credentials, so its tenants and orphans were not checked.
    ServerUnreachable {
        /// The server.
        server: Server,
        /// Its registered name, if a registered server is at that address.
        name: Option<String>,
        /// Why.
        reason: String,
    },
    /// A PostgreSQL database marked `tenancy:<this master>:<tenant>` that no registry row
    /// names. Repairable: dropped (its sessions ended first).
    OrphanDatabase {
        /// The database.
        database: String,
        /// Its server.
        server: Server,
        /// The tenant its mark names.
        tenant: String,
    },
    /// A role marked as made by this master for a tenant that no registry row names: a
    /// database tenant's owner role, or a schema or table tenant's login role (`login`).
    /// Repairable: dropped (a login role with what was granted to it).
    OrphanRole {
        /// The role.
        role: String,
        /// Its server.
        server: Server,
        /// The tenant its mark names.
        tenant: String,
        /// Whether it is a tenant login role of the master database.
        login: bool,
    },
    /// A schema of the master database marked as made by this master for a tenant that no
    /// registry row names. Repairable: dropped with everything in it.
    OrphanSchema {
        /// The schema.
        schema: String,
        /// The tenant its mark names.
        tenant: String,
    },
    /// A SQLite file in the master's folder whose header carries this master's mark and
    /// that no registry row names. Repairable: removed with its side files.
    OrphanDatabaseFile {
        /// The file.
        path: PathBuf,
    },
    /// A schema no registry row names, unmarked, that looks like a tenant's (a tenant
    /// login role of this master is named after it or was granted it). Reported only.
    UnownedSchema {
        /// The schema.
        schema: String,
    },
    /// A role named like this master's tenant login roles that no registry row names and
    /// that tenancy did not mark. Reported only.
    UnownedRole {
        /// The role.
        role: String,
        /// Its server.
        server: Server,
    },
    /// A `*.db` file in the master's folder that no registry row names and that does not
    /// carry this master's mark. Reported only.
    UnownedDatabaseFile {
        /// The file.
        path: PathBuf,
    },
    /// Keys in the cache namespace of a tenant that is not registered. Reported only: the
    /// cache prefix may be shared with another master, whose tenants' keys look the same.
    UnownedCacheNamespace {
        /// The tenant part of the namespace (as encoded in the keys).
        namespace: String,
        /// How many keys it holds.
        keys: u64,
    },
    /// A table-isolation hole in the row-level security of the scoped tables (a table
    /// without row security enabled and forced, a missing or altered policy, a foreign key
    /// without the tenant column, a materialized view tenants can read). Repairable: the
    /// row-security step ([`crate::rls::enable_row_security`]) runs again.
    RowSecurity {
        /// The object, as in `public.tasks`.
        object: String,
        /// What is wrong.
        problem: String,
    },
    /// A view over scoped tables, not `security_invoker`, whose owner row security does
    /// not hold back (a superuser or `BYPASSRLS` role) or who owns a table it reads.
    /// Repairable: the row-security step sets `security_invoker = true` on it.
    ViewBypassesRowSecurity {
        /// The view, as in `reports.all_tasks`.
        view: String,
        /// Its owner.
        owner: String,
        /// Why the owner's rights reach past the policies.
        reason: String,
    },
    /// The application role or a tenant login role has a power or membership that takes
    /// it past the policies (superuser, `BYPASSRLS`, ...). Reported only: roles are the
    /// operator's to change.
    UnsafeRole {
        /// The role.
        role: String,
        /// What is wrong.
        problem: String,
    },
    /// Migrations of the application's migrator not applied to a tenant (or to the shared
    /// tables of table tenants, `tenant` then `None`).
    MigrationsBehind {
        /// The tenant, if the storage is one tenant's.
        tenant: Option<TenantId>,
        /// What was checked, for the message.
        target: String,
        /// The migrations not applied, in order.
        pending: Vec<String>,
    },
    /// Migrations applied to a tenant's storage that the application's migrator does not
    /// know (a newer or another application migrated it).
    UnknownMigrations {
        /// The tenant, if the storage is one tenant's.
        tenant: Option<TenantId>,
        /// What was checked, for the message.
        target: String,
        /// The unknown migrations, sorted.
        unknown: Vec<String>,
    },
    /// A tenant's migrations could not be read (its storage is unreachable).
    Unreadable {
        /// The tenant.
        tenant: TenantId,
        /// Why.
        reason: String,
    },
    /// Storage a move left behind (`movetenant` keeps the old storage): not served, kept
    /// until `deletetenant --leftovers`. Never dropped by `--repair`.
    Leftover {
        /// The tenant it was.
        tenant: TenantId,
        /// The object.
        object: String,
        /// Why it was left.
        reason: String,
        /// Since when.
        since: chrono::DateTime<chrono::Utc>,
    },
    /// A table that breaks a rule Citus imposes on the isolation mode it would be sharded
    /// by (`tenancydoctor --citus`, [`crate::Tenancy::diagnose_citus`]; see
    /// `docs/scale-out.md`). Reported only: the fix is a migration of the application's.
    Citus {
        /// The table: `projects` for a shared table of table isolation (the master's
        /// `public` schema), `acme.notes` for a table in a schema tenant's schema.
        table: String,
        /// The schema tenant whose schema holds the table, if it is one's.
        tenant: Option<TenantId>,
        /// The rule it breaks.
        rule: CitusRule,
        /// What is wrong, naming the constraint, columns or tables.
        problem: String,
        /// What to change.
        fix: String,
    },
    /// A lifecycle operation whose worker is gone.
    StaleOperation {
        /// The tenant.
        tenant: TenantId,
        /// The operation (`create`, `delete`, ...).
        operation: String,
        /// The command that finishes or undoes it.
        command: String,
    },
}

impl Finding {
    /// A short, stable name of the finding's kind (`orphan_schema`, ...), for scripts.
    pub fn kind(&self) -> &'static str {
        match self {
            Finding::MissingDatabase { .. } => "missing_database",
            Finding::MissingRole { .. } => "missing_role",
            Finding::MissingDatabaseFile { .. } => "missing_database_file",
            Finding::MissingSchema { .. } => "missing_schema",
            Finding::ServerUnreachable { .. } => "server_unreachable",
            Finding::OrphanDatabase { .. } => "orphan_database",
            Finding::OrphanRole { .. } => "orphan_role",
            Finding::OrphanSchema { .. } => "orphan_schema",
            Finding::OrphanDatabaseFile { .. } => "orphan_database_file",
            Finding::UnownedSchema { .. } => "unowned_schema",
            Finding::UnownedRole { .. } => "unowned_role",
            Finding::UnownedDatabaseFile { .. } => "unowned_database_file",
            Finding::UnownedCacheNamespace { .. } => "unowned_cache_namespace",
            Finding::RowSecurity { .. } => "row_security",
            Finding::ViewBypassesRowSecurity { .. } => "view_bypasses_row_security",
            Finding::UnsafeRole { .. } => "unsafe_role",
            Finding::MigrationsBehind { .. } => "migrations_behind",
            Finding::UnknownMigrations { .. } => "unknown_migrations",
            Finding::Unreadable { .. } => "unreadable",
            Finding::StaleOperation { .. } => "stale_operation",
            Finding::Leftover { .. } => "leftover",
            Finding::Citus { rule, .. } => rule.kind(),
        }
    }

    /// The tenant the finding is about: a registered one, or the one an orphan's mark
    /// names.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Finding::MissingDatabase { tenant, .. }
            | Finding::MissingRole { tenant, .. }
            | Finding::MissingDatabaseFile { tenant, .. }
            | Finding::MissingSchema { tenant, .. }
            | Finding::Unreadable { tenant, .. }
            | Finding::Leftover { tenant, .. }
            | Finding::StaleOperation { tenant, .. } => Some(tenant.as_str()),
            Finding::OrphanDatabase { tenant, .. }
            | Finding::OrphanRole { tenant, .. }
            | Finding::OrphanSchema { tenant, .. } => Some(tenant),
            Finding::UnownedCacheNamespace { namespace, .. } => Some(namespace),
            Finding::MigrationsBehind { tenant, .. }
            | Finding::UnknownMigrations { tenant, .. }
            | Finding::Citus { tenant, .. } => tenant.as_ref().map(TenantId::as_str),
            Finding::ServerUnreachable { .. }
            | Finding::OrphanDatabaseFile { .. }
            | Finding::UnownedSchema { .. }
            | Finding::UnownedRole { .. }
            | Finding::UnownedDatabaseFile { .. }
            | Finding::RowSecurity { .. }
            | Finding::ViewBypassesRowSecurity { .. }
            | Finding::UnsafeRole { .. } => None,
        }
    }

    /// The object the finding is about, as in `schema 'acme'` or `database 'acme_db' on
    /// db-1:5432`.
    pub fn subject(&self) -> String {
        match self {
            Finding::MissingDatabase { database, server, .. } | Finding::OrphanDatabase { database, server, .. } => {
                format!("database '{database}' on {server}")
            }
            Finding::MissingRole { role, server, .. }
            | Finding::OrphanRole { role, server, .. }
            | Finding::UnownedRole { role, server } => format!("role '{role}' on {server}"),
            Finding::MissingDatabaseFile { path, .. }
            | Finding::OrphanDatabaseFile { path }
            | Finding::UnownedDatabaseFile { path } => format!("file '{}'", path.display()),
            Finding::MissingSchema { schema, .. }
            | Finding::OrphanSchema { schema, .. }
            | Finding::UnownedSchema { schema } => format!("schema '{schema}'"),
            Finding::ServerUnreachable { server, name: Some(name), .. } => format!("server '{name}' ({server})"),
            Finding::ServerUnreachable { server, name: None, .. } => format!("server {server}"),
            Finding::UnownedCacheNamespace { namespace, .. } => format!("cache namespace '{namespace}'"),
            Finding::RowSecurity { object, .. } => object.clone(),
            Finding::ViewBypassesRowSecurity { view, .. } => format!("view {view}"),
            Finding::UnsafeRole { role, .. } => format!("role '{role}'"),
            Finding::MigrationsBehind { target, .. } | Finding::UnknownMigrations { target, .. } => target.clone(),
            Finding::Unreadable { tenant, .. } | Finding::StaleOperation { tenant, .. } => format!("tenant '{tenant}'"),
            Finding::Leftover { object, .. } => object.clone(),
            Finding::Citus { table, .. } => format!("table {table}"),
        }
    }

    /// What is wrong, in one line.
    pub fn message(&self) -> String {
        match self {
            Finding::MissingDatabase { tenant, database, server } => {
                format!("tenant '{tenant}': its database '{database}' does not exist on {server}")
            }
            Finding::MissingRole { tenant, role, server } => {
                format!("tenant '{tenant}': its role '{role}' does not exist on {server}")
            }
            Finding::MissingDatabaseFile { tenant, path } => {
                format!("tenant '{tenant}': its database file '{}' does not exist", path.display())
            }
            Finding::MissingSchema { tenant, schema } => {
                format!("tenant '{tenant}': its schema '{schema}' does not exist")
            }
            Finding::ServerUnreachable { server, name: Some(name), reason } => {
                format!("cannot reach server '{name}' at {server} to check the tenants on it: {reason}")
            }
            Finding::ServerUnreachable { server, name: None, reason } => {
                format!("cannot reach {server} to check the tenants on it: {reason}")
            }
            Finding::OrphanDatabase { database, server, tenant } => format!(
                "database '{database}' on {server} was created by this master for tenant '{tenant}', which is no \
                 longer registered"
            ),
            Finding::OrphanRole { role, server, tenant, login } => format!(
                "{} '{role}' on {server} was created by this master for tenant '{tenant}', which is no longer \
                 registered",
                if *login { "login role" } else { "role" }
            ),
            Finding::OrphanSchema { schema, tenant } => format!(
                "schema '{schema}' was created by this master for tenant '{tenant}', which is no longer registered"
            ),
            Finding::OrphanDatabaseFile { path } => format!(
                "database file '{}' was created by this master for a tenant that is no longer registered",
                path.display()
            ),
            Finding::UnownedSchema { schema } => format!(
                "schema '{schema}' looks like a tenant's (a tenant login role of this master is named after it or \
                 may use it), but no tenant registers it and tenancy did not mark it as its own"
            ),
            Finding::UnownedRole { role, server } => format!(
                "role '{role}' on {server} is named like a tenant login role of this master, but no tenant registers \
                 it and tenancy did not mark it as its own"
            ),
            Finding::UnownedDatabaseFile { path } => format!(
                "file '{}' in the master's folder looks like a tenant database, but no tenant registers it and it \
                 carries no mark of this master",
                path.display()
            ),
            Finding::UnownedCacheNamespace { namespace, keys } => format!(
                "the cache holds {keys} key(s) in the namespace of tenant '{namespace}', which is not registered"
            ),
            Finding::RowSecurity { object, problem } => format!("table isolation: {object}: {problem}"),
            Finding::ViewBypassesRowSecurity { view, owner, reason } => format!(
                "view {view} reads tenant-scoped tables with the rights of its owner '{owner}' ({reason}), so a \
                 tenant reading it could see other tenants' rows"
            ),
            Finding::UnsafeRole { role, problem } => format!("table isolation: role '{role}' {problem}"),
            Finding::MigrationsBehind { target, pending, .. } => {
                format!("{target}: {} migration(s) not applied: {}", pending.len(), pending.join(", "))
            }
            Finding::UnknownMigrations { target, unknown, .. } => {
                format!("{target}: applied migration(s) the app does not know: {}", unknown.join(", "))
            }
            Finding::Unreadable { tenant, reason } => {
                format!("tenant '{tenant}': cannot read its migrations: {reason}")
            }
            Finding::StaleOperation { tenant, operation, .. } => {
                format!("tenant '{tenant}': a {operation} operation was interrupted and its worker is gone")
            }
            Finding::Leftover { tenant, object, reason, since } => format!(
                "tenant '{tenant}': {object} was left behind when it {reason} ({}); it is no longer served",
                since.format("%Y-%m-%d %H:%M UTC")
            ),
            Finding::Citus { table, problem, .. } => format!("Citus: table {table}: {problem}"),
        }
    }

    /// What to do about it, in one line.
    pub fn fix(&self) -> String {
        let restore = |tenant: &TenantId, what: &str| {
            format!("restore {what} from a backup, or remove the tenant (deletetenant {tenant})")
        };
        let drop = "tenancydoctor --repair drops it (after confirmation; back it up first if its data matters)";
        match self {
            Finding::MissingDatabase { tenant, .. } => restore(tenant, "the database"),
            Finding::MissingRole { tenant, .. } => restore(tenant, "the role"),
            Finding::MissingDatabaseFile { tenant, .. } => restore(tenant, "the file"),
            Finding::MissingSchema { tenant, .. } => restore(tenant, "the schema"),
            Finding::ServerUnreachable { .. } => {
                "check the server and the credentials of TENANCY_ADMIN_URL, then run tenancydoctor again".to_owned()
            }
            Finding::OrphanDatabase { .. }
            | Finding::OrphanRole { .. }
            | Finding::OrphanSchema { .. }
            | Finding::OrphanDatabaseFile { .. } => drop.to_owned(),
            Finding::UnownedSchema { schema } => format!(
                "if it is a leftover, drop it by hand (DROP SCHEMA \"{schema}\" CASCADE); --repair never drops \
                 unmarked objects"
            ),
            Finding::UnownedRole { role, .. } => format!(
                "if it is a leftover, drop it by hand (DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\"); --repair \
                 never drops unmarked objects"
            ),
            Finding::UnownedDatabaseFile { .. } => {
                "if it is a leftover, move or delete it by hand; --repair never removes unmarked files".to_owned()
            }
            Finding::UnownedCacheNamespace { .. } => "if no other master uses this cache and prefix, delete the \
                                                      namespace's keys (SCAN and UNLINK, never FLUSHDB)"
                .to_owned(),
            Finding::RowSecurity { .. } | Finding::ViewBypassesRowSecurity { .. } => {
                "tenancydoctor --repair runs the row-security step again (as migratealltenants does after a \
                 migration of the shared tables)"
                    .to_owned()
            }
            Finding::UnsafeRole { role, .. } => format!(
                "take the power or membership away (ALTER ROLE \"{role}\" NOSUPERUSER NOBYPASSRLS ..., REVOKE ...)"
            ),
            Finding::MigrationsBehind { tenant: Some(tenant), .. } => format!("run migratetenant {tenant}"),
            Finding::MigrationsBehind { tenant: None, .. } => "run migratealltenants".to_owned(),
            Finding::UnknownMigrations { .. } => {
                "run the application version that has these migrations, or check that DATABASE_URL is this \
                 application's master"
                    .to_owned()
            }
            Finding::Unreadable { .. } => "check that its storage exists and its server is reachable".to_owned(),
            Finding::StaleOperation { command, operation, .. } => format!(
                "run `{command}` again with the same arguments, or tenancydoctor --repair ({})",
                match operation.as_str() {
                    "create" => "undoes what it created",
                    "rename" => "finishes the rename",
                    "move" => "rolls back a move stopped before its switch, finishes one after it",
                    _ => "finishes the delete",
                }
            ),
            Finding::Leftover { tenant, .. } => format!(
                "once you no longer need it (to move back, or as a copy), deletetenant {tenant} --leftovers removes it"
            ),
            Finding::Citus { fix, .. } => fix.clone(),
        }
    }

    /// Whether [`crate::Tenancy::repair`] may fix it.
    pub fn repairable(&self) -> bool {
        matches!(
            self,
            Finding::OrphanDatabase { .. }
                | Finding::OrphanRole { .. }
                | Finding::OrphanSchema { .. }
                | Finding::OrphanDatabaseFile { .. }
                | Finding::RowSecurity { .. }
                | Finding::ViewBypassesRowSecurity { .. }
                | Finding::StaleOperation { .. }
        )
    }
}

impl fmt::Display for Finding {
    /// `<message>; <fix>`: one line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; {}", self.message(), self.fix())
    }
}
