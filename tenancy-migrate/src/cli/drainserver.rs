//! `drainserver NAME [--move]` and `undrainserver NAME`: keep new tenants off a server
//! (and move its database tenants off it), or let it take new tenants again.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tenancy::relocation::{MoveOptions, MoveTo};
use tenancy::servers::{ServerName, ServerState};
use tenancy::{Isolation, NewDatabase, Placement, TenantDatabase, TenantId};

use super::Exit;
use super::prompt::Prompter;
use crate::{Error, MigrateOnCreate, Migrators, Result};

const ENVIRONMENT: &str = "Environment:\n  \
    DATABASE_URL             master database (a postgres:// URL: servers need a PostgreSQL master)\n  \
    TENANCY_SECRET_KEY       key that decrypts stored passwords (--move)\n  \
    TENANCY_SECRET_KEY_FILE  file holding that key (default: .tenancy-secret.key)";

/// Drain a server: it takes no new tenants (placement skips it, `createtenant --server`
/// refuses it); its tenants are still served.
///
/// With --move, its database and schema tenants are then moved off it one by one, each to
/// the server the placement policy picks (among the active ones), created, migrated,
/// copied, verified and switched as `movetenant` does: a database tenant into a database of
/// the same name, with a role of the same name and password; a schema tenant into a schema
/// of the same name in that server's shard database (the master database for the master's
/// server), with a new login role there. The old databases and schemas are kept on the
/// drained server as each tenant's leftovers (`deletetenant ID --leftovers` removes them)
/// unless --drop-source. The first move that fails stops the run (that tenant stays where
/// it was, served again); running the command again moves the rest. Table tenants are
/// listed, not moved: they live in the master database's shared tables. Asks to type the
/// server's name first, unless --yes.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "drainserver",
    after_help = Exit::after_help(ENVIRONMENT, &[
        (Exit::Success, Some("drained (--move: every database and schema tenant moved off)")),
        (Exit::Failed, Some("a move failed: that tenant stays where it was, served again, and the ones before it are moved")),
        (Exit::InvalidInput, Some("invalid input, or --move without a terminal to confirm on and no --yes")),
        (Exit::AlreadyExists, Some("a target database or role exists already (--move)")),
        (Exit::CannotConnect, None),
        (Exit::SecretKey, None),
        (Exit::NotFound, Some("no such server")),
        (Exit::Busy, None),
        (Exit::Refused, Some("a move was refused, or no other server takes new tenants (--move)")),
        (Exit::Cancelled, Some("not confirmed: nothing was changed")),
    ]),
)]
pub struct DrainServerArgs {
    /// The server to drain
    #[arg(value_name = "NAME")]
    pub name: ServerName,

    /// Then move its database and schema tenants to the servers placement picks
    #[arg(long = "move")]
    pub move_tenants: bool,

    /// Drop each old database or schema once its tenant is moved, instead of keeping it as a leftover
    #[arg(long, requires = "move_tenants")]
    pub drop_source: bool,

    /// Move without asking (for scripts)
    #[arg(long, short = 'y', requires = "move_tenants")]
    pub yes: bool,

    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,

    /// Seconds to wait for each tenant's sessions to end before giving up
    #[arg(long, value_name = "SECONDS", default_value_t = 10, requires = "move_tenants")]
    pub wait: u64,

    /// The master database.
    #[command(flatten)]
    pub master: super::MasterArgs,
}

/// Undrain a server: it takes new tenants again (also one marked down).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "undrainserver",
    after_help = Exit::after_help(ENVIRONMENT, &[
        (Exit::Success, Some("active (or was active)")),
        (Exit::InvalidInput, None),
        (Exit::CannotConnect, None),
        (Exit::NotFound, Some("no such server")),
    ]),
)]
pub struct UndrainServerArgs {
    /// The server to make active again
    #[arg(value_name = "NAME")]
    pub name: ServerName,

    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,

    /// The master database.
    #[command(flatten)]
    pub master: super::MasterArgs,
}

/// Runs `drainserver` with the process's arguments; `--move` migrates the moved tenants'
/// new databases with the app's tenant migrator.
pub async fn drainserver(migrators: Migrators) -> ExitCode {
    match super::parse_args() {
        Ok(args) => drainserver_with_args(args, migrators).await,
        Err(code) => code,
    }
}

/// Runs `drainserver` with parsed arguments; returns the exit code.
pub async fn drainserver_with_args(args: DrainServerArgs, migrators: Migrators) -> ExitCode {
    match drain(&args, &migrators).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => super::report_error(&err),
    }
}

/// Runs `undrainserver` with the process's arguments.
pub async fn undrainserver(migrators: Migrators) -> ExitCode {
    match super::parse_args() {
        Ok(args) => undrainserver_with_args(args, migrators).await,
        Err(code) => code,
    }
}

/// Runs `undrainserver` with parsed arguments; returns the exit code.
pub async fn undrainserver_with_args(args: UndrainServerArgs, _migrators: Migrators) -> ExitCode {
    let run = async {
        let tenancy = args.master.connect().await?;
        let (server, before) = tenancy.set_server_state(&args.name, ServerState::Active).await?;
        if args.json {
            let value = serde_json::json!({ "server": server.name, "state": server.state, "previous_state": before });
            println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
        } else {
            println!("✓ Server '{}' is active (was {before}): it takes new tenants again", server.name);
        }
        Result::Ok(())
    };
    match run.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => super::report_error(&err),
    }
}

/// A tenant on the server, and whether `--move` can move it.
struct OnServer {
    id: TenantId,
    isolation: Isolation,
    /// Its database and role, for a PostgreSQL database tenant.
    database: Option<(String, String)>,
}

impl OnServer {
    /// Database and schema tenants move; table tenants live in the master's shared tables.
    fn movable(&self) -> bool {
        self.database.is_some() || self.isolation == Isolation::Schema
    }
}

async fn drain(args: &DrainServerArgs, migrators: &Migrators) -> Result<()> {
    let tenancy = args.master.connect().await?;
    let map = tenancy.server_map().await?;
    // Unknown names are refused before anything is asked or changed.
    let server = tenancy.server(&args.name).await?;
    let tenants = tenancy.tenants().await?;
    let on_server: Vec<OnServer> = tenants
        .iter()
        .filter(|tenant| map.server_of(tenant).server().is_some_and(|s| s.name == server.name))
        .map(|tenant| OnServer {
            id: tenant.id().clone(),
            isolation: tenant.isolation(),
            database: match tenant.placement() {
                Placement::Database(TenantDatabase::Postgres(db)) => Some((db.name.clone(), db.user.clone())),
                _ => None,
            },
        })
        .collect();
    let (movable, staying): (Vec<&OnServer>, Vec<&OnServer>) = on_server.iter().partition(|t| t.movable());
    if args.move_tenants && !args.yes && !movable.is_empty() {
        confirm(&args.name, &movable, args.drop_source, args.json).await?;
    }

    let (_, before) = tenancy.set_server_state(&args.name, ServerState::Draining).await?;
    if !args.json {
        println!("✓ Server '{}' is draining (was {before}): it gets no new tenants", args.name);
    }
    let mut moved = Vec::new();
    if args.move_tenants {
        let hooks = MigrateOnCreate::from(migrators);
        for tenant in &movable {
            let target = tenancy.pick_server().await?;
            let to = match &tenant.database {
                Some((database, user)) => {
                    let current = tenancy.get_tenant(&tenant.id).await?;
                    let Placement::Database(TenantDatabase::Postgres(db)) = current.placement() else { continue };
                    // The same role and password on the new server: the tenant's credentials stay.
                    let password = tenancy.secret_key()?.0.decrypt(&db.password, tenant.id.as_str())?;
                    MoveTo::Database(
                        NewDatabase::create(database.clone())
                            .login(user.clone(), password)
                            .on_server(target.name.clone()),
                    )
                }
                None => MoveTo::SchemaOn(target.name.clone()),
            };
            if !args.json {
                eprintln!("  moving {} tenant '{}' to server '{}'…", tenant.isolation, tenant.id, target.name);
            }
            let options =
                MoveOptions::new(to).drop_source(args.drop_source).session_wait(Duration::from_secs(args.wait));
            let result = tenancy.move_tenant(&tenant.id, &options, &hooks).await?;
            let rows: u64 = result.tables.iter().map(|t| t.rows).sum();
            if !args.json {
                let (what, kept) = match &tenant.database {
                    Some((database, _)) => (format!("database '{database}'"), "old database"),
                    None => (format!("schema '{}'", tenant.id), "old schema"),
                };
                let kept_how = if result.source_dropped { "dropped" } else { "kept as a leftover" };
                println!(
                    "✓ Tenant '{}' moved to server '{}' ({what}): {rows} row(s) copied and verified; {kept} {kept_how}",
                    tenant.id, target.name
                );
            }
            moved.push(serde_json::json!({
                "tenant": tenant.id,
                "isolation": tenant.isolation,
                "database": tenant.database.as_ref().map(|(database, _)| database),
                "to_server": target.name,
                "to_address": target.address(),
                "rows": rows,
                "source_dropped": result.source_dropped,
            }));
        }
    }
    if args.json {
        let remaining: Vec<serde_json::Value> = match args.move_tenants {
            true => Vec::new(),
            false => movable.iter().map(|t| serde_json::json!({ "tenant": t.id, "isolation": t.isolation })).collect(),
        };
        let staying: Vec<serde_json::Value> =
            staying.iter().map(|t| serde_json::json!({ "tenant": t.id, "isolation": t.isolation })).collect();
        let value = serde_json::json!({
            "server": args.name,
            "state": ServerState::Draining,
            "previous_state": before,
            "moved": moved,
            "movable": remaining,
            "not_movable": staying,
        });
        println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
        return Ok(());
    }
    if !args.move_tenants && !movable.is_empty() {
        println!(
            "  {} database or schema tenant(s) remain on it; `drainserver {} --move` moves them off",
            movable.len(),
            args.name
        );
    }
    if !staying.is_empty() {
        let ids: Vec<String> = staying.iter().map(|t| format!("{} ({})", t.id, t.isolation)).collect();
        println!(
            "  Not movable off it: {} (table tenants live in the master database's shared tables)",
            ids.join(", ")
        );
    }
    Ok(())
}

/// Lists the tenants to move and asks to type the server's name; without a terminal,
/// refuses.
async fn confirm(name: &ServerName, movable: &[&OnServer], drop_source: bool, json: bool) -> Result<()> {
    let prompter = Prompter::new(json);
    if !prompter.is_interactive() {
        return Err(Error::MissingInput {
            what: "confirmation".to_owned(),
            how: "pass --yes to move the tenants without a terminal; nothing was changed".to_owned(),
        });
    }
    eprintln!("Draining server '{name}' moves these tenants to the servers placement picks:");
    for tenant in movable {
        eprintln!("  - {} ({})", tenant.id, tenant.isolation);
    }
    let old = if drop_source { "dropped" } else { "kept as leftovers" };
    eprintln!("Each is not served while its rows are copied; the old databases and schemas are {old}.");
    let typed = super::typed_answer("Type the server's name to drain it:").await?;
    if typed != name.as_str() {
        return Err(Error::DrainNotConfirmed { server: name.to_string(), typed });
    }
    Ok(())
}
