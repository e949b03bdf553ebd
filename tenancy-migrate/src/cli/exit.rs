//! The exit codes of the commands, listed once: each command's `--help`, these docs and
//! the README's table are made from [`Exit`].

use std::fmt::Write as _;

use crate::Error;

/// Declares [`Exit`] from one line per code: the variant, the code, the short wording of
/// `--help` and the meaning (which is also the variant's documentation).
macro_rules! exit_codes {
    ($($variant:ident = $code:literal, $short:literal, $meaning:literal;)*) => {
        /// How a command ended: the process's exit code. Each variant's documentation is
        /// its line of the README's table ([`Exit::table`]).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Exit {
            $(#[doc = $meaning] $variant = $code,)*
        }

        impl Exit {
            /// Every exit code, in increasing order.
            pub const ALL: &'static [Exit] = &[$(Exit::$variant),*];

            /// What the code means, for every command (the README's table).
            pub const fn meaning(self) -> &'static str {
                match self {
                    $(Exit::$variant => $meaning,)*
                }
            }

            /// The code's meaning in a few words (a command's `--help` uses these unless
            /// it words a code for itself).
            pub const fn short(self) -> &'static str {
                match self {
                    $(Exit::$variant => $short,)*
                }
            }
        }
    };
}

exit_codes! {
    Success = 0, "success", "success";
    Failed = 1, "failed",
        "the work failed; what the run created was removed again (`tenantshell -c`: the statement failed, for at least \
         one tenant)";
    InvalidInput = 2, "invalid input",
        "invalid input (flag, id, isolation, name, port, username, email, weak password, a cache tenant where \
         tables are needed, a server name or weight), or a missing value with no terminal to ask on";
    AlreadyExists = 3, "already exists",
        "the tenant, its database, role or schema exists already; the username exists in the tenant; a server \
         of that name or address is registered already";
    CannotConnect = 4, "cannot connect to a database server",
        "a database server cannot be reached or refused the credentials (or they may not create databases and \
         roles)";
    SecretKey = 5, "secret key unreadable", "the secret key cannot be read or created";
    NotFound = 6, "no such tenant", "no such tenant, no server of that name, or no tenant has the domain";
    Busy = 7, "tenant busy",
        "another lifecycle operation holds the tenant: still running, or interrupted (the message names the \
         command that finishes it)";
    Findings = 8, "problems found", "tenancydoctor found problems";
    Refused = 9, "refused",
        "a move was refused before anything changed: the tenant is not at the migrator's version, a move's \
         leftovers remain, a key collides with another tenant's in the shared tables, or the move is not possible \
         (the message says which); or the server named takes no new tenants (draining or down), or no server \
         does";
    Cancelled = 130, "cancelled", "cancelled at a prompt (Esc, Ctrl-C) or interrupted";
}

/// Whether `err` refused a move or a clone before it changed anything: also when it is
/// the cause of a failed step (a clone's copy is a step of `createtenant`).
fn refused(err: &tenancy::Error) -> bool {
    use tenancy::Error as T;
    match err {
        T::CannotRelocate { .. }
        | T::LeftoversRemain { .. }
        | T::KeyCollision { .. }
        | T::ServerNotAccepting { .. }
        | T::NoActiveServer { .. } => true,
        T::MoveFailed { source, .. } | T::ProvisioningFailed { source, .. } => {
            source.downcast_ref::<Error>().is_some_and(|e| matches!(e, Error::NotAtMigratorVersion { .. }))
                || source.downcast_ref::<tenancy::Error>().is_some_and(refused)
        }
        _ => false,
    }
}

impl Exit {
    /// The process exit code.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The exit code `err` ends a command with.
    pub fn of(err: &Error) -> Exit {
        use tenancy::Error as T;
        match err {
            Error::Tenancy(err) => match err {
                T::InvalidTenantId { .. }
                | T::InvalidIsolation { .. }
                | T::InvalidIdentifier { .. }
                | T::InvalidPort { .. }
                | T::InvalidHost { .. }
                | T::Missing { .. }
                | T::UnsupportedUrl { .. }
                | T::SchemaNeedsPostgres { .. }
                | T::DatabaseMissing { .. }
                | T::RenameToSameId { .. }
                | T::InvalidServerName { .. }
                | T::InvalidWeight { .. }
                | T::ServersNeedPostgres
                | T::InvalidPooler { .. }
                | T::PoolerNeedsDirectUrl
                | T::ServerNotPlaceable { .. }
                | T::InvalidDomain { .. } => Exit::InvalidInput,
                T::TenantExists { .. }
                | T::DatabaseExists { .. }
                | T::DatabaseFileExists { .. }
                | T::RoleExists { .. }
                | T::SchemaExists { .. }
                | T::LoginRoleExists { .. }
                | T::ServerExists { .. }
                | T::DomainTaken { .. } => Exit::AlreadyExists,
                T::CannotConnect { .. }
                | T::ServerUnavailable { .. }
                | T::ServerUnreachable { .. }
                | T::ServerAdminLacksPrivileges { .. } => Exit::CannotConnect,
                T::SecretKey { .. } | T::Decrypt { .. } => Exit::SecretKey,
                T::TenantNotFound { .. } | T::UnknownServer { .. } | T::DomainNotFound { .. } => Exit::NotFound,
                T::OperationInProgress { .. } | T::StaleOperation { .. } | T::TenantMoving { .. } => Exit::Busy,
                err if refused(err) => Exit::Refused,
                _ => Exit::Failed,
            },
            Error::Cancelled
            | Error::NotConfirmed { .. }
            | Error::RenameNotConfirmed { .. }
            | Error::DrainNotConfirmed { .. } => Exit::Cancelled,
            Error::NothingToResume
            | Error::UnknownServer { .. }
            | Error::UnknownCanaryTenants { .. }
            | Error::NotReady { .. }
            | Error::MissingInput { .. }
            | Error::InvalidUsername { .. }
            | Error::InvalidEmail { .. }
            | Error::WeakPassword { .. }
            | Error::NoRelationalStorage { .. } => Exit::InvalidInput,
            Error::UsernameTaken { .. } => Exit::AlreadyExists,
            Error::NotAtMigratorVersion { .. } => Exit::Refused,
            Error::NoTenants | Error::UnknownTenants { .. } => Exit::NotFound,
            Error::Migration { .. }
            | Error::MigrationPanicked { .. }
            | Error::Prompt { .. }
            | Error::SharedMigration { .. }
            | Error::Accounts { .. }
            | Error::PasswordHash { .. }
            | Error::Statement { .. } => Exit::Failed,
        }
    }

    /// The README's table of every code and its meaning, as Markdown.
    pub fn table() -> String {
        let mut table = String::from("| code | meaning |\n| --- | --- |\n");
        for exit in Exit::ALL {
            let _ = writeln!(table, "| {} | {} |", exit.code(), exit.meaning());
        }
        table
    }
}

impl Exit {
    /// A command's `--help` epilogue (clap's `after_help`): its `environment` section (or
    /// whatever comes before the codes), then the codes it can end with, one a line, each
    /// worded by the command (`Some`) or with the code's [`Exit::short`] wording.
    pub fn after_help(environment: &str, codes: &[(Exit, Option<&str>)]) -> String {
        let mut help = format!("{}\n\nExit codes:", environment.trim_end());
        for (exit, wording) in codes {
            let _ = write!(help, "\n  {} {}", exit.code(), wording.unwrap_or(exit.short()));
        }
        help
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_in_order() {
        let codes: Vec<u8> = Exit::ALL.iter().map(|exit| exit.code()).collect();
        assert!(codes.windows(2).all(|pair| pair[0] < pair[1]), "{codes:?}");
        assert_eq!(codes, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 130]);
    }

    #[test]
    fn the_table_has_a_row_per_code() {
        let table = Exit::table();
        assert!(table.starts_with("| code | meaning |\n| --- | --- |\n| 0 | success |\n"), "{table}");
        assert!(table.ends_with("| 130 | cancelled at a prompt (Esc, Ctrl-C) or interrupted |\n"), "{table}");
        assert_eq!(table.lines().count(), 2 + Exit::ALL.len());
    }

    #[test]
    fn help_lists_the_codes_given() {
        let help =
            Exit::after_help("Environment:\n  X  y\n", &[(Exit::Success, Some("created")), (Exit::Cancelled, None)]);
        assert_eq!(help, "Environment:\n  X  y\n\nExit codes:\n  0 created\n  130 cancelled");
    }
}
