//! The one error type of `tenancy-migrate`, and the exit codes of its commands.

/// Everything that can go wrong in `tenancy-migrate`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error from the `tenancy` core (registry, provisioning, connections).
    #[error(transparent)]
    Tenancy(#[from] tenancy::Error),

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

    /// A prompt could not be shown or read.
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

    /// `--resume` was asked for, but no run was ever recorded.
    #[error("Nothing to resume: no fleet migration run is recorded yet")]
    NothingToResume,

    /// The person at the terminal pressed Esc or Ctrl-C.
    #[error("Cancelled; nothing was created")]
    Cancelled,

    /// A username that the accounts rules refuse.
    #[error("Invalid username '{given}': {reason}")]
    InvalidUsername {
        /// The username given.
        given: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An email address that is not of the form `local@domain.tld`.
    #[error("Invalid email address '{given}': expected the form name@example.com")]
    InvalidEmail {
        /// The address given.
        given: String,
    },

    /// A password that the policy refuses (the password itself is never part of the message).
    #[error("The password is too weak: {reason}")]
    WeakPassword {
        /// The rule that failed.
        reason: String,
    },

    /// The tenant has a user with this username already.
    #[error("A user named '{username}' already exists in tenant '{tenant}'")]
    UsernameTaken {
        /// The tenant id.
        tenant: String,
        /// The username.
        username: String,
    },

    /// The tenant uses cache isolation: it has no tables, so no users and no SQL.
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
    #[error("No ready tenant with relational storage to choose from; create one with createtenant")]
    NoTenants,

    /// The tenant's user table could not be read or written.
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
    #[error("Cannot hash the password: {reason}")]
    PasswordHash {
        /// The hasher's message (never containing the password).
        reason: String,
    },

    /// A statement given to the tenant shell with `-c` failed.
    #[error("{message}")]
    Statement {
        /// The database's message.
        message: String,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The exit codes of the commands, documented in `--help` and the README.
pub mod exit_code {
    /// Success.
    pub const OK: u8 = 0;
    /// The work failed (a provisioning step or a migration failed; what the run created
    /// was removed again).
    pub const FAILED: u8 = 1;
    /// Invalid input: a bad flag, tenant id, isolation type, port or name, or a value that
    /// is missing with no terminal to ask on.
    pub const INVALID_INPUT: u8 = 2;
    /// Something to be created exists already: the tenant, its database, role or schema.
    pub const ALREADY_EXISTS: u8 = 3;
    /// A database server could not be reached or refused the credentials.
    pub const CANNOT_CONNECT: u8 = 4;
    /// The operator's secret key could not be read or created.
    pub const SECRET_KEY: u8 = 5;
    /// The tenant does not exist.
    pub const NOT_FOUND: u8 = 6;
    /// Cancelled at a prompt (Esc, Ctrl-C) or interrupted.
    pub const CANCELLED: u8 = 130;
}

impl Error {
    /// The process exit code this error maps to (see [`exit_code`]).
    pub fn exit_code(&self) -> u8 {
        use tenancy::Error as T;
        match self {
            Error::Tenancy(err) => match err {
                T::InvalidTenantId { .. }
                | T::InvalidIsolation { .. }
                | T::InvalidIdentifier { .. }
                | T::InvalidPort { .. }
                | T::InvalidHost { .. }
                | T::Missing { .. }
                | T::UnsupportedUrl { .. }
                | T::SchemaNeedsPostgres { .. }
                | T::MissingPassword
                | T::DatabaseMissing { .. } => exit_code::INVALID_INPUT,
                T::TenantExists { .. }
                | T::DatabaseExists { .. }
                | T::DatabaseFileExists { .. }
                | T::RoleExists { .. }
                | T::SchemaExists { .. }
                | T::LoginRoleExists { .. } => exit_code::ALREADY_EXISTS,
                T::CannotConnect { .. } => exit_code::CANNOT_CONNECT,
                T::SecretKey { .. } | T::Decrypt { .. } => exit_code::SECRET_KEY,
                T::TenantNotFound { .. } => exit_code::NOT_FOUND,
                _ => exit_code::FAILED,
            },
            Error::Cancelled => exit_code::CANCELLED,
            Error::NothingToResume
            | Error::NotReady { .. }
            | Error::InvalidUsername { .. }
            | Error::InvalidEmail { .. }
            | Error::WeakPassword { .. }
            | Error::NoRelationalStorage { .. } => exit_code::INVALID_INPUT,
            Error::UsernameTaken { .. } => exit_code::ALREADY_EXISTS,
            Error::NoTenants => exit_code::NOT_FOUND,
            Error::Migration { .. }
            | Error::Prompt { .. }
            | Error::SharedMigration { .. }
            | Error::Accounts { .. }
            | Error::PasswordHash { .. }
            | Error::Statement { .. } => exit_code::FAILED,
        }
    }
}
