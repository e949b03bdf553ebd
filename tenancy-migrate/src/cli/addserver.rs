//! `addserver NAME --host H --port P --user U`: registers a PostgreSQL server tenants can
//! be placed on, after connecting to it with the admin credentials given.

use std::process::ExitCode;

use clap::Parser;
use tenancy::secrets::Password;
use tenancy::servers::{DEFAULT_WEIGHT, NewServer, Server};

use super::Exit;
use super::prompt::Prompter;
use crate::Result;

/// Environment variable holding the server admin's password for scripts.
pub const SERVER_PASSWORD_ENV: &str = "TENANCY_SERVER_PASSWORD";

/// Register a PostgreSQL server: database tenants can then be placed on it by name
/// (`createtenant --server NAME`) or by the placement policy.
///
/// The server is connected to with the credentials given before anything is stored; the
/// admin must be a superuser, or have CREATEDB and CREATEROLE. The admin's password is
/// read from a hidden prompt or from TENANCY_SERVER_PASSWORD, never from a flag, and is
/// stored encrypted with the operator's key. An empty TENANCY_SERVER_PASSWORD with
/// --no-input means no password (a server that trusts the admin).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "addserver",
    after_help = Exit::after_help(
        "Environment:\n  \
        DATABASE_URL             master database (a postgres:// URL: servers need a PostgreSQL master)\n  \
        TENANCY_SERVER_PASSWORD  the admin's password, without a prompt\n  \
        TENANCY_SECRET_KEY       key that encrypts stored passwords (base64 of 32 bytes)\n  \
        TENANCY_SECRET_KEY_FILE  file holding that key (default: .tenancy-secret.key, generated if missing)",
        &[
            (Exit::Success, Some("added")),
            (Exit::Failed, None),
            (Exit::InvalidInput, Some("invalid input (name, host, port, user, weight), or a SQLite master")),
            (Exit::AlreadyExists, Some("a server of that name or address is registered already")),
            (Exit::CannotConnect, Some("the server cannot be reached, refused the credentials, or they may not create databases and roles (nothing stored)")),
            (Exit::SecretKey, None),
            (Exit::Cancelled, None),
        ],
    )
)]
pub struct AddServerArgs {
    /// The server's name: a lower-case letter, then lower-case letters, digits, '_' or '-' (at most 40 bytes)
    #[arg(value_name = "NAME")]
    pub name: String,

    /// Host name or address
    #[arg(long, value_name = "HOST")]
    pub host: String,

    /// Port
    #[arg(long, value_name = "PORT", default_value_t = tenancy::DEFAULT_POSTGRES_PORT, value_parser = super::value::port)]
    pub port: u16,

    /// The admin role that creates tenant roles and databases there
    #[arg(long, value_name = "USER")]
    pub user: String,

    /// The database admin connections use
    #[arg(long, value_name = "DB", default_value = "postgres")]
    pub maintenance_db: String,

    /// Its share of new tenants relative to the other servers (1 to 10000; the master's is 100)
    #[arg(long, value_name = "W", default_value_t = DEFAULT_WEIGHT)]
    pub weight: u32,

    /// Never prompt: the password comes from TENANCY_SERVER_PASSWORD (unset: none)
    #[arg(long)]
    pub no_input: bool,

    /// Print the server added as JSON
    #[arg(long)]
    pub json: bool,

    /// The master database.
    #[command(flatten)]
    pub master: super::MasterArgs,
}

/// Runs `addserver` with the process's arguments. It takes the app's migrators like every
/// command, though it migrates nothing.
pub async fn addserver(migrators: crate::Migrators) -> ExitCode {
    match super::parse_args() {
        Ok(args) => addserver_with_args(args, migrators).await,
        Err(code) => code,
    }
}

/// Runs `addserver` with parsed arguments; returns the exit code.
pub async fn addserver_with_args(args: AddServerArgs, _migrators: crate::Migrators) -> ExitCode {
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => super::report_error(&err),
    }
}

async fn run(args: AddServerArgs) -> Result<()> {
    // Every flag is checked before the master is connected to or a password asked for.
    let new = NewServer::new(&args.name, args.host.trim(), args.port, args.user.trim())?
        .maintenance_db(args.maintenance_db.trim())?
        .weight(args.weight)?;
    let tenancy = args.master.connect().await?;
    let password = match std::env::var(SERVER_PASSWORD_ENV) {
        Ok(password) => Password::new(password),
        Err(_) if args.no_input => Password::new(String::new()),
        Err(_) => {
            let prompter = Prompter::new(args.no_input);
            let message = format!("Password of '{}' on {}:{}:", args.user.trim(), args.host.trim(), args.port);
            super::blocking(move || {
                prompter.hidden_password(&message, "the server admin's password", SERVER_PASSWORD_ENV)
            })
            .await??
        }
    };
    let server = tenancy.add_server(new.password(password)).await?;
    if let Some(path) = tenancy.generated_key_file() {
        eprintln!(
            "Generated the secret key file '{}' (readable only by you). Keep it safe and back it up: \
             stored passwords cannot be decrypted without it.",
            path.display()
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&describe(&server)).unwrap_or_default());
    } else {
        println!(
            "✓ Server '{}' at {} added (admin '{}', weight {}, {})",
            server.name,
            server.address(),
            args.user.trim(),
            server.weight,
            server.state
        );
    }
    Ok(())
}

/// A server as JSON, without its password.
pub(super) fn describe(server: &Server) -> serde_json::Value {
    let admin = match &server.admin {
        tenancy::servers::ServerAdmin::Master => serde_json::Value::Null,
        tenancy::servers::ServerAdmin::Stored { user, .. } => serde_json::json!(user),
    };
    serde_json::json!({
        "name": server.name,
        "host": server.host,
        "port": server.port,
        "address": server.address(),
        "maintenance_db": server.maintenance_db,
        "admin_user": admin,
        "weight": server.weight,
        "state": server.state,
        "master": server.is_master(),
    })
}
