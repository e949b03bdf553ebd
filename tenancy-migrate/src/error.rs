//! The one error type of `tenancy-migrate`. The exit code each error maps to is the
//! CLI's business: see `crate::cli::Exit`.

/// Everything that can go wrong in `tenancy-migrate`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error from the `tenancy` core (registry, provisioning, connections).
    #[error(transparent)]
    Tenancy(#[from] tenancy::Error),

    /// A tenant to move or copy is not at the migrator's version: its copy is made by
    /// migrating new storage to that version, so the two would differ.
    #[error(
        "Tenant '{tenant}' is not at the migrator's version:{}{} (migratetenant {tenant} brings it up to date; \
         a tenant ahead needs the newer application)",
        if pending.is_empty() { String::new() } else { format!(" {} migration(s) not applied ({})", pending.len(), pending.join(", ")) },
        if unknown.is_empty() { String::new() } else { format!(" {} applied migration(s) the migrator does not know ({})", unknown.len(), unknown.join(", ")) }
    )]
    NotAtMigratorVersion {
        /// The tenant id.
        tenant: String,
        /// Migrations of the migrator the tenant has not applied.
        pending: Vec<String>,
        /// Migrations the tenant applied that the migrator does not know.
        unknown: Vec<String>,
    },

    /// A migration of one tenant failed.
    #[error("Migrating tenant '{tenant}' failed{}", .migration.as_ref().map(|m| format!(" in {m}")).unwrap_or_default())]
    Migration {
        /// The tenant id.
        tenant: String,
        /// The migration that failed, if it was one (and not the bookkeeping).
        migration: Option<String>,
        /// The migrator's error.
        #[source]
        source: sea_orm::DbErr,
    },

    /// A migration of one tenant panicked. Its transaction was rolled back, as for a
    /// failed migration.
    #[error("Migrating tenant '{tenant}' failed: migration {migration} panicked: {message}")]
    MigrationPanicked {
        /// The tenant id.
        tenant: String,
        /// The migration that panicked.
        migration: String,
        /// The panic's message (`"(no message)"` when its payload is not text).
        message: String,
    },

    /// A value was not given, and it cannot be asked for (no terminal, or `--no-input`).
    #[cfg(feature = "cli")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cli")))]
    #[error("Missing {what}: {how}")]
    MissingInput {
        /// What is missing (`tenant ID`, `password`).
        what: String,
        /// How to give it, and why it was not asked for.
        how: String,
    },

    /// A prompt could not be shown or read.
    #[cfg(feature = "cli")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cli")))]
    #[error("Cannot read the answer to \"{prompt}\"")]
    Prompt {
        /// The prompt's message.
        prompt: String,
        /// The terminal error.
        #[source]
        source: inquire::InquireError,
    },

    /// The master database's shared migrations failed; no tenant was touched.
    #[error("Shared migrations of the master database failed; no tenant was migrated")]
    SharedMigration {
        /// The failure.
        #[source]
        source: Box<Error>,
    },

    /// The tenant is not `ready` (still provisioning, or a run died half-way).
    #[error("Tenant '{tenant}' is not ready (status '{status}'); only ready tenants are migrated")]
    NotReady {
        /// The tenant id.
        tenant: String,
        /// Its status.
        status: String,
    },

    /// A fleet run was restricted to a server no tenant is on.
    #[error("Unknown server '{server}'; known servers: {}", known.join(", "))]
    UnknownServer {
        /// The server asked for.
        server: String,
        /// The servers the registry's tenants are on (and the master's).
        known: Vec<String>,
    },

    /// Canary tenants were named that the run does not select.
    #[error(
        "Canary tenant(s) not among the tenants this run selects: {}; --canary-tenants takes ids of selected, \
         existing tenants",
        unknown.join(", ")
    )]
    UnknownCanaryTenants {
        /// The ids that are not selected (or do not exist).
        unknown: Vec<String>,
    },

    /// Tenants named for a fleet statement (`tenantshell --tenants`) that do not exist.
    #[cfg(feature = "cli")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cli")))]
    #[error("No such tenant(s): {}; nothing was run", unknown.join(", "))]
    UnknownTenants {
        /// The ids that are not registered.
        unknown: Vec<String>,
    },

    /// `--resume` was asked for, but no run was ever recorded.
    #[error("Nothing to resume: no fleet migration run is recorded yet")]
    NothingToResume,

    /// The person at the terminal pressed Esc or Ctrl-C.
    #[cfg(feature = "cli")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cli")))]
    #[error("Cancelled; nothing was created")]
    Cancelled,

    /// The confirmation of a rename did not match the new tenant id.
    #[error("Typed '{typed}', not the new tenant id '{new}'; nothing was renamed")]
    RenameNotConfirmed {
        /// The new id asked for.
        new: String,
        /// What was typed.
        typed: String,
    },

    /// The confirmation of a delete did not match the tenant id.
    #[error("Typed '{typed}', not the tenant id '{tenant}'; nothing was deleted")]
    NotConfirmed {
        /// The tenant to delete.
        tenant: String,
        /// What was typed.
        typed: String,
    },

    /// The confirmation of `drainserver --move` did not match the server's name.
    #[error("Typed '{typed}', not the server name '{server}'; nothing was changed")]
    DrainNotConfirmed {
        /// The server to drain.
        server: String,
        /// What was typed.
        typed: String,
    },

    /// A username that the accounts rules refuse.
    #[cfg(feature = "accounts")]
    #[cfg_attr(docsrs, doc(cfg(feature = "accounts")))]
    #[error("Invalid username '{given}': {reason}")]
    InvalidUsername {
        /// The username given.
        given: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An email address that is not of the form `local@domain.tld`.
    #[cfg(feature = "accounts")]
    #[cfg_attr(docsrs, doc(cfg(feature = "accounts")))]
    #[error("Invalid email address '{given}': expected the form name@example.com")]
    InvalidEmail {
        /// The address given.
        given: String,
    },

    /// A password that the policy refuses (the password itself is never part of the message).
    #[cfg(feature = "accounts")]
    #[cfg_attr(docsrs, doc(cfg(feature = "accounts")))]
    #[error("The password is too weak: {reason}")]
    WeakPassword {
        /// The rule that failed.
        reason: String,
    },

    /// The tenant has a user with this username already.
    #[cfg(feature = "accounts")]
    #[cfg_attr(docsrs, doc(cfg(feature = "accounts")))]
    #[error("A user named '{username}' already exists in tenant '{tenant}'")]
    UsernameTaken {
        /// The tenant id.
        tenant: String,
        /// The username.
        username: String,
    },

    /// The tenant uses cache isolation: it has no tables, so no users and no SQL.
    #[cfg(feature = "cli")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cli")))]
    #[error(
        "Tenant '{tenant}' uses cache isolation and has no relational storage; {what} needs a database, schema or table tenant"
    )]
    NoRelationalStorage {
        /// The tenant id.
        tenant: String,
        /// What was asked for ("a superuser", "the tenant shell").
        what: &'static str,
    },

    /// No tenant is ready to choose from.
    #[cfg(feature = "cli")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cli")))]
    #[error("No ready tenant with relational storage to choose from; create one with createtenant")]
    NoTenants,

    /// The tenant's user table could not be read or written.
    #[cfg(feature = "accounts")]
    #[cfg_attr(docsrs, doc(cfg(feature = "accounts")))]
    #[error(
        "Cannot use the user table of tenant '{tenant}' (with the accounts module: add \
         tenancy_migrate::accounts::migrations() to the tenant migrator and run migratetenant)"
    )]
    Accounts {
        /// The tenant id.
        tenant: String,
        /// The database error.
        #[source]
        source: sea_orm::DbErr,
    },

    /// Hashing the password failed (the system's random source or the hasher).
    #[cfg(feature = "accounts")]
    #[cfg_attr(docsrs, doc(cfg(feature = "accounts")))]
    #[error("Cannot hash the password: {reason}")]
    PasswordHash {
        /// The hasher's message (never containing the password).
        reason: String,
    },

    /// A statement given to the tenant shell with `-c` failed.
    #[cfg(feature = "cli")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cli")))]
    #[error("{message}")]
    Statement {
        /// The database's message.
        message: String,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
