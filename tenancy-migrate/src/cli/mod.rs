//! The library behind the tenant commands.
//!
//! Each command is one async function taking the application's migrator, so the
//! application's binaries are three lines, the way sea-orm-migration's
//! `cli::run_cli(Migrator)` works:
//!
//! ```no_run
//! # use sea_orm_migration::prelude::*;
//! # struct Migrator;
//! # impl MigratorTrait for Migrator { fn migrations() -> Vec<Box<dyn MigrationTrait>> { vec![] } }
//! #[tokio::main]
//! async fn main() -> std::process::ExitCode {
//!     tenancy_migrate::cli::createtenant(Migrator).await
//! }
//! ```
//!
//! The commands that reach a tenant's data through its handle, `tenantshell` and
//! `createtenantsuperuser`, take the application's [`Migrators`](crate::Migrators) too,
//! like `migratetenant` and `showtenants`, although they migrate nothing: the value makes
//! the binary link the application's crate, and so the registrations of its
//! `#[tenant_scoped]` and `#[tenancy::shared]` models (a crate a binary never names is not
//! linked, and neither are its registrations). A table-isolated tenant's handle on a
//! SQLite master reaches only the tables those models declare, so with no models linked
//! it refuses every table rather than run anything unscoped:
//!
//! ```no_run
//! # use sea_orm_migration::prelude::*;
//! # struct Migrator;
//! # impl MigratorTrait for Migrator { fn migrations() -> Vec<Box<dyn MigrationTrait>> { vec![] } }
//! #[tokio::main]
//! async fn main() -> std::process::ExitCode {
//!     tenancy_migrate::cli::tenantshell(tenancy_migrate::Migrators::new(Migrator)).await
//! }
//! ```
//!
//! # Exit codes
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | success |
//! | 1 | the work failed; what the run created was removed again (`tenantshell -c`: the statement failed) |
//! | 2 | invalid input (flag, id, isolation, name, port, username, email, weak password, a cache tenant where tables are needed), or a missing value with no terminal to ask on |
//! | 3 | the tenant, its database, role or schema exists already; the username exists in the tenant |
//! | 4 | a database server cannot be reached or refused the credentials |
//! | 5 | the secret key cannot be read or created |
//! | 6 | no such tenant |
//! | 130 | cancelled at a prompt (Esc, Ctrl-C) or interrupted |

mod createtenant;
mod createtenantsuperuser;
mod migratealltenants;
mod migratetenant;
mod prompt;
mod showtenants;
mod tenantshell;

use std::io::Write;
use std::process::ExitCode;

pub use createtenant::{CreateTenantArgs, PASSWORD_ENV, createtenant, createtenant_with_args};
pub use createtenantsuperuser::{
    CreateTenantSuperuserArgs, SUPERUSER_PASSWORD_ENV, createtenantsuperuser, createtenantsuperuser_with_store,
};
pub use migratealltenants::{MigrateAllArgs, migratealltenants, migratealltenants_with_args};
pub use migratetenant::{MigrateTenantArgs, migratetenant, migratetenant_with_args};
pub use showtenants::{ShowTenantsArgs, showtenants, showtenants_with_args};
pub use tenantshell::{DEFAULT_HISTORY_FILE, HISTORY_ENV, TenantShellArgs, tenantshell, tenantshell_with_args};

use crate::Error;

/// The master database flag every command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct MasterArgs {
    /// Master database URL
    #[arg(long, env = "DATABASE_URL", default_value = tenancy::DEFAULT_MASTER_URL, hide_env_values = true)]
    pub database_url: String,
}

/// Prints `err` the way every command does: `Error: <message>` on stderr, then its causes
/// indented, and returns the matching exit code.
pub fn report_error(err: &Error) -> ExitCode {
    let mut stderr = std::io::stderr().lock();
    if matches!(err, Error::Cancelled) {
        let _ = writeln!(stderr, "{err}");
        return ExitCode::from(err.exit_code());
    }
    let _ = writeln!(stderr, "Error: {err}");
    if let Error::Tenancy(tenancy::Error::CannotConnect { target, .. }) = err {
        let _ = writeln!(stderr, "  at {target}");
    }
    let mut source = std::error::Error::source(err);
    // `Tenancy` is transparent: its own message was printed above, skip it.
    if let (Error::Tenancy(inner), Some(s)) = (err, source)
        && std::ptr::addr_eq(s, inner)
    {
        source = s.source();
    }
    let mut last = err.to_string();
    while let Some(cause) = source {
        let text = cause.to_string();
        // Wrappers often repeat their source's text ("Connection Error: <source>").
        if !last.contains(&text) {
            let _ = writeln!(stderr, "  caused by: {text}");
        }
        last = text;
        source = cause.source();
    }
    ExitCode::from(err.exit_code())
}
