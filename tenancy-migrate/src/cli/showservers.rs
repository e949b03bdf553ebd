//! `showservers`: the PostgreSQL servers tenants are placed on, with their tenants, size,
//! connections and health.

use std::process::ExitCode;

use clap::Parser;
use tenancy::servers::{ServerHealth, ServerOverview};

use super::Exit;
use crate::Result;

/// List the servers: name, address, state, weight, tenants (database/schema/table), the
/// size of the databases tenancy uses there, connections against max_connections, and
/// whether it answers (each probed in parallel for a few seconds). The master's own server
/// is listed first, as `master`. Passwords never appear.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "showservers",
    after_help = Exit::after_help(
        "Environment:\n  \
        DATABASE_URL             master database (default: sqlite://tenancy.db?mode=rwc)\n  \
        TENANCY_SECRET_KEY       key that decrypts the servers' stored admin passwords\n  \
        TENANCY_SECRET_KEY_FILE  file holding that key (default: .tenancy-secret.key)",
        &[
            (Exit::Success, Some("listed (a server that does not answer is listed as down)")),
            (Exit::InvalidInput, None),
            (Exit::CannotConnect, Some("cannot connect to the master database")),
        ],
    )
)]
pub struct ShowServersArgs {
    /// Print JSON (an array with one object per server) for scripts
    #[arg(long)]
    pub json: bool,

    /// The master database.
    #[command(flatten)]
    pub master: super::MasterArgs,
}

/// Runs `showservers` with the process's arguments.
pub async fn showservers(migrators: crate::Migrators) -> ExitCode {
    match super::parse_args() {
        Ok(args) => showservers_with_args(args, migrators).await,
        Err(code) => code,
    }
}

/// Runs `showservers` with parsed arguments; returns the exit code.
pub async fn showservers_with_args(args: ShowServersArgs, _migrators: crate::Migrators) -> ExitCode {
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => super::report_error(&err),
    }
}

async fn run(args: ShowServersArgs) -> Result<()> {
    let tenancy = args.master.connect().await?;
    let overviews = tenancy.server_overviews().await?;
    if args.json {
        let servers: Vec<serde_json::Value> = overviews.iter().map(describe).collect();
        println!("{}", serde_json::to_string_pretty(&servers).unwrap_or_default());
    } else {
        print!("{}", table(&overviews));
    }
    Ok(())
}

/// One server as JSON: the server (no password), its tenants and its health.
fn describe(overview: &ServerOverview) -> serde_json::Value {
    let mut value = super::addserver::describe(&overview.server);
    let tenants = &overview.tenants;
    value["tenants"] = serde_json::json!({
        "database": tenants.database,
        "schema": tenants.schema,
        "table": tenants.table,
        "total": tenants.total(),
    });
    match &overview.health {
        ServerHealth::Up { version, connections, max_connections, size_bytes } => {
            value["health"] = "up".into();
            value["version"] = version.clone().into();
            value["connections"] = (*connections).into();
            value["max_connections"] = (*max_connections).into();
            value["size_bytes"] = (*size_bytes).into();
        }
        ServerHealth::Down { error } => {
            value["health"] = "down".into();
            value["error"] = error.clone().into();
        }
    }
    value
}

/// An aligned text table, with the reasons of servers that are down below it.
fn table(overviews: &[ServerOverview]) -> String {
    let header = ["NAME", "ADDRESS", "STATE", "WEIGHT", "TENANTS (D/S/T)", "SIZE", "CONNECTIONS", "HEALTH"];
    let mut notes = Vec::new();
    let rows: Vec<[String; 8]> = overviews
        .iter()
        .map(|o| {
            let t = &o.tenants;
            let (size, connections, health) = match &o.health {
                ServerHealth::Up { connections, max_connections, size_bytes, .. } => (
                    size(u64::try_from(*size_bytes).unwrap_or_default()),
                    format!("{connections}/{max_connections}"),
                    "up".to_owned(),
                ),
                ServerHealth::Down { error } => {
                    notes.push(format!("{}: {error}", o.server.name));
                    ("?".to_owned(), "?".to_owned(), "down".to_owned())
                }
            };
            [
                o.server.name.to_string(),
                o.server.address(),
                o.server.state.to_string(),
                o.server.weight.to_string(),
                format!("{} ({}/{}/{})", t.total(), t.database, t.schema, t.table),
                size,
                connections,
                health,
            ]
        })
        .collect();
    let mut out = super::table::aligned(header, &rows);
    if overviews.is_empty() {
        out.push_str("(no servers: a SQLite master has none)\n");
    }
    for note in notes {
        out.push_str(&format!("down {note}\n"));
    }
    out
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / f64::from(1 << 30)),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1 << 20)),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / f64::from(1 << 10)),
        b => format!("{b} B"),
    }
}
