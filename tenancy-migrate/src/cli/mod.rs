//! The library behind the tenant commands.
//!
//! Each command is one async function taking the application's
//! [`Migrators`](crate::Migrators), so the application's binaries are three lines, the
//! way sea-orm-migration's `cli::run_cli(Migrator)` works:
//!
//! ```no_run
//! # use sea_orm_migration::prelude::*;
//! # struct Migrator;
//! # impl MigratorTrait for Migrator { fn migrations() -> Vec<Box<dyn MigrationTrait>> { vec![] } }
//! #[tokio::main]
//! async fn main() -> std::process::ExitCode {
//!     tenancy_migrate::cli::createtenant(tenancy_migrate::Migrators::new(Migrator)).await
//! }
//! ```
//!
//! Every command takes the same value, including those that migrate nothing
//! (`tenantshell`, `createtenantsuperuser`): it makes the binary link the application's
//! crate, and so the registrations of its `#[tenant_scoped]` and `#[tenancy::shared]`
//! models (a crate a binary never names is not linked, and neither are its
//! registrations). A table-isolated tenant's handle on a SQLite master reaches only the
//! tables those models declare, so with no models linked it refuses every table rather
//! than run anything unscoped. `createtenant --migrate` runs the tenant migrator;
//! `migratealltenants` runs the shared one first.
//!
//! # Arguments
//!
//! Flags are typed by clap: a tenant id, an isolation type or a port that does not parse
//! is refused before anything is connected to, with exit code 2 and `tenancy`'s own
//! message for it (the one a prompt shows when it asks again); `--jobs` below 1 gets
//! clap's usage error, also exit code 2.
//!
//! # Exit codes
//!
//! Listed once, in [`Exit`]; each command's `--help` names the ones it can end with.
//! [`Exit::table`] is the README's table.
//!
//! # Errors and hints
//!
//! [`report_error`] prints an error the same way for every command: `Error: <message>`,
//! its causes, and for errors of the `tenancy` core (which speak of values, not of
//! flags) a `hint:` line naming the flag, prompt or environment variable that gives what
//! was missing or wrong.

mod addserver;
mod createtenant;
mod createtenantsuperuser;
mod deletetenant;
mod domains;
mod drainserver;
mod exit;
mod migratealltenants;
mod migratetenant;
mod movetenant;
mod prompt;
mod renametenant;
mod showservers;
mod showtenants;
mod suspension;
mod table;
mod tenancydoctor;
mod tenantshell;

use std::error::Error as StdError;
use std::io::Write;
use std::process::ExitCode;

pub use addserver::{AddServerArgs, SERVER_PASSWORD_ENV, addserver, addserver_with_args};
pub use createtenant::{CreateTenantArgs, PASSWORD_ENV, clonetenant, createtenant, createtenant_with_args};
pub use createtenantsuperuser::{
    CreateTenantSuperuserArgs, SUPERUSER_PASSWORD_ENV, createtenantsuperuser, createtenantsuperuser_with_store,
};
pub use deletetenant::{DeleteTenantArgs, deletetenant, deletetenant_with_args};
pub use domains::{
    AddDomainArgs, RemoveDomainArgs, adddomain, adddomain_with_args, removedomain, removedomain_with_args,
};
pub use drainserver::{
    DrainServerArgs, UndrainServerArgs, drainserver, drainserver_with_args, undrainserver, undrainserver_with_args,
};
pub use exit::Exit;
pub use migratealltenants::{MigrateAllArgs, migratealltenants, migratealltenants_with_args};
pub use migratetenant::{MigrateTenantArgs, migratetenant, migratetenant_with_args};
pub use movetenant::{MoveTenantArgs, movetenant, movetenant_with_args};
pub use renametenant::{RenameTenantArgs, renametenant, renametenant_with_args};
pub use showservers::{ShowServersArgs, showservers, showservers_with_args};
pub use showtenants::{ShowTenantsArgs, showtenants, showtenants_with_args};
pub use suspension::{
    ResumeTenantArgs, SuspendTenantArgs, resumetenant, resumetenant_with_args, suspendtenant, suspendtenant_with_args,
};
pub use tenancydoctor::{TenancyDoctorArgs, tenancydoctor, tenancydoctor_with_args};
pub use tenantshell::{DEFAULT_HISTORY_FILE, HISTORY_ENV, TenantShellArgs, tenantshell, tenantshell_with_args};

use crate::Error;

/// The master database flags every command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct MasterArgs {
    /// Master database URL
    #[arg(long, env = "DATABASE_URL", default_value = tenancy::DEFAULT_MASTER_URL, hide_env_values = true)]
    pub database_url: String,

    /// The master database reached directly, when --database-url names a connection pooler (PgBouncer): commands connect to it instead
    #[arg(long, env = tenancy::pooler::DIRECT_URL_ENV, value_name = "URL", hide_env_values = true)]
    pub direct_url: Option<String>,
}

impl MasterArgs {
    /// The URL commands connect to: the direct one when given, else the master URL.
    /// Commands are operations (DDL, advisory locks, long transactions): they bypass a
    /// pooler (see `tenancy::pooler`).
    pub fn url(&self) -> &str {
        self.direct_url.as_deref().filter(|url| !url.trim().is_empty()).unwrap_or(&self.database_url)
    }

    /// A builder for the master database the way commands reach it: [`MasterArgs::url`],
    /// with no pooler in between.
    ///
    /// Without a direct URL the pooler named in `TENANCY_POOLER` applies: a
    /// transaction-mode one is refused ([`tenancy::Error::PoolerNeedsDirectUrl`]), since
    /// provisioning and migrations cannot run through it.
    pub fn builder(&self) -> tenancy::TenancyBuilder {
        let builder = tenancy::Tenancy::builder(self.url());
        match self.direct_url.as_deref().filter(|url| !url.trim().is_empty()) {
            Some(_) => builder.pooler(tenancy::Pooler::None),
            None => builder,
        }
    }

    /// Connects the way commands do ([`MasterArgs::builder`]).
    ///
    /// # Errors
    /// As [`tenancy::TenancyBuilder::connect`].
    pub async fn connect(&self) -> tenancy::Result<tenancy::Tenancy> {
        self.builder().connect().await
    }
}

/// The shared cache tenants' namespaces live in, for the commands that clear or inspect
/// them (`deletetenant`, `tenancydoctor`). Without `--cache-url` a command has only its
/// own in-process cache, which no server shares.
#[derive(Debug, Clone, clap::Args)]
pub struct CacheArgs {
    /// The Redis cache URL, redis://host:port or, for Redis Cluster, redis+cluster://host:port,host:port,... (default: none, the command's own in-process cache)
    #[cfg(feature = "redis")]
    #[arg(long, env = "TENANCY_CACHE_URL", value_name = "URL", hide_env_values = true)]
    pub cache_url: Option<String>,

    /// The cache's key prefix
    #[cfg(feature = "redis")]
    #[arg(long, env = "TENANCY_CACHE_PREFIX", default_value = tenancy::cache::DEFAULT_PREFIX, value_name = "PREFIX")]
    pub cache_prefix: String,
}

impl CacheArgs {
    /// `builder` with the Redis cache, when one is named.
    pub fn apply(&self, builder: tenancy::TenancyBuilder) -> tenancy::TenancyBuilder {
        #[cfg(feature = "redis")]
        if let Some(url) = self.cache_url.as_ref().filter(|url| !url.trim().is_empty()) {
            return builder.cache(tenancy::cache::CacheConfig::redis(url.clone()).prefix(self.cache_prefix.clone()));
        }
        builder
    }
}

/// Prints `err` the way every command does: `Error: <message>` on stderr, then its causes
/// indented, then a hint naming the flag or prompt that gives what was missing or wrong
/// (for the core's errors, whose messages name no flags); returns the matching exit code.
pub fn report_error(err: &Error) -> ExitCode {
    match err {
        Error::Cancelled => {
            let _ = writeln!(std::io::stderr().lock(), "{err}");
        }
        // Reported as the core's own error: its message, causes and hint.
        Error::Tenancy(inner) => write_report(inner),
        other => write_report(other),
    }
    Exit::of(err).into()
}

fn write_report(err: &(dyn StdError + 'static)) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "Error: {err}");
    let core = err.downcast_ref::<tenancy::Error>();
    if let Some(tenancy::Error::CannotConnect { target, .. }) = core {
        let _ = writeln!(stderr, "  at {target}");
    }
    let mut last = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // Wrappers often repeat their source's text ("Connection Error: <source>").
        if !last.contains(&text) {
            let _ = writeln!(stderr, "  caused by: {text}");
        }
        last = text;
        source = cause.source();
    }
    if let Some(hint) = core.and_then(hint) {
        let _ = writeln!(stderr, "  hint: {hint}");
    }
}

/// What the commands' user can do about a core error, in the commands' words (flags,
/// prompts, environment variables), which the core's messages leave out.
fn hint(err: &tenancy::Error) -> Option<&'static str> {
    use tenancy::{Error as T, MissingValue as V};
    Some(match err {
        T::Missing { value: V::TenantName } => "give it with --name <NAME> or at the prompt",
        T::Missing { value: V::DatabaseName } => "give it with --db-name <NAME> or at the prompt",
        T::Missing { value: V::DatabaseUser } => "give it with --db-user <USER> or at the prompt",
        T::Missing { value: V::DatabasePassword } => {
            "type it at the prompt or set TENANT_DB_PASSWORD (passwords are never taken from flags)"
        }
        T::DatabaseExists { .. } | T::DatabaseFileExists { .. } => {
            "answer 'n' to \"create the database now\" (--no-create-database) to use it, or choose another name"
        }
        T::DatabaseMissing { .. } => "answer 'y' to \"create the database now\" (--create-database) to create it",
        T::TenantNotReady { .. } => "it is served once createtenant finishes provisioning it",
        T::SessionsRemain { .. } => "raise --wait, or stop the processes still connected, then run the command again",
        T::ServerUnreachable { .. } => {
            "check --host, --port and --user, and the password (prompt or TENANCY_SERVER_PASSWORD); nothing was stored"
        }
        T::ServerNotAccepting { .. } | T::NoActiveServer { .. } => "`showservers` lists the servers and their states",
        T::PoolerNeedsDirectUrl => {
            "set TENANCY_DIRECT_URL (--direct-url) to the server's own address, not the pooler's"
        }
        T::DomainTaken { .. } => "`removedomain DOMAIN` takes it from its tenant; `showtenants` lists who has which",
        T::DomainNotFound { .. } => "`showtenants` lists the tenants' domains",
        T::InvalidPooler { .. } => "set TENANCY_POOLER to none, session or transaction, or unset it",
        T::SchemaNeedsPostgres { .. } => {
            "use database, table or cache isolation, or set DATABASE_URL (--database-url) to a postgres:// URL"
        }
        _ => return None,
    })
}

/// Parses the process's arguments. A value that one of the commands' own parsers refused
/// (a tenant id, an isolation type, a port: `tenancy`'s errors) is reported as the
/// commands report errors, with its exit code; anything else (an unknown flag, `--help`)
/// as clap does.
fn parse_args<A: clap::Parser>() -> Result<A, ExitCode> {
    A::try_parse().map_err(|err| {
        if let Some(core) = err.source().and_then(|source| source.downcast_ref::<tenancy::Error>()) {
            write_report(core);
            return Exit::InvalidInput.into();
        }
        let _ = err.print();
        // 0 for --help and --version, 2 for a usage error.
        u8::try_from(err.exit_code()).map_or(Exit::InvalidInput.into(), ExitCode::from)
    })
}

/// Value parsers for flags, reporting in `tenancy`'s words (see [`parse_args`]).
mod value {
    use tenancy::TenantId;

    /// A TCP port: a number from 1 to 65535.
    pub(super) fn port(input: &str) -> Result<u16, tenancy::Error> {
        match input.trim().parse::<u16>() {
            Ok(port) if port > 0 => Ok(port),
            _ => Err(tenancy::Error::InvalidPort { given: input.trim().to_owned() }),
        }
    }

    /// A tenant id in a comma-separated list, where spaces around it are not part of it.
    pub(super) fn listed_tenant_id(input: &str) -> Result<TenantId, tenancy::Error> {
        input.trim().parse()
    }
}

/// Asks on the terminal to type a value (a tenant id) before something that cannot be
/// undone; returns what was typed, trimmed. Esc or Ctrl-C is [`Error::Cancelled`].
async fn typed_answer(message: &'static str) -> Result<String, Error> {
    let typed = blocking(move || {
        inquire::Text::new(message).prompt().map_err(|err| match err {
            inquire::InquireError::OperationCanceled | inquire::InquireError::OperationInterrupted => Error::Cancelled,
            source => Error::Prompt { prompt: "confirmation".to_owned(), source },
        })
    })
    .await??;
    Ok(typed.trim().to_owned())
}

/// Opens up to `connections` connections of the master pool at once, in the background.
///
/// A command process starts with one master connection and sqlx opens the others one at
/// a time, on the way, when a statement finds none idle (a connection handed back goes
/// to the pool from a task of its own, so the next statement rarely finds it): each is a
/// few milliseconds on the command's critical path. Opened together at the start, they
/// overlap with the first reads instead. Nothing on SQLite, whose pool is one file.
fn warm_master_pool(tenancy: &tenancy::Tenancy, connections: usize) {
    if tenancy.backend() != tenancy::Backend::Postgres {
        return;
    }
    let pool = tenancy.master().get_postgres_connection_pool().clone();
    tokio::spawn(async move {
        // Held until all are open, so each acquire opens a connection of its own; then
        // handed back to the pool. A failure is the next statement's to report.
        let _held = futures_util::future::join_all((0..connections).map(|_| pool.acquire())).await;
    });
}

/// The progress bar of a command that works through tenants (`migratealltenants`, fleet
/// SQL), on stderr: `total` tenants, the current one as its message.
fn tenant_bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} tenants {elapsed_precise} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Waits for a blocking task (a prompt, the shell's line editor). A panic in it is a bug,
/// not an answer: it goes on unwinding here.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => Ok(value),
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        // The runtime is shutting down (the process is being stopped).
        Err(_) => Err(Error::Cancelled),
    }
}
