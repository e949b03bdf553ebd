//! `movetenant <ID> --to database|schema|table`: moves a tenant to another isolation mode
//! or database with its data, verified, then switched in one transaction. Journaled:
//! killed at any moment, running the same command again rolls back a move stopped before
//! its switch and moves again, or finishes one stopped after it.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tenancy::relocation::{MoveEvent, MoveOptions, MovePlan, MoveTo, Moved};
use tenancy::secrets::Password;
use tenancy::servers::ServerName;
use tenancy::{Backend, Isolation, NewDatabase, Tenancy, TenantId};

use super::Exit;
use super::prompt::Prompter;
use crate::{Error, MigrateOnCreate, Migrators, Result};

const ENVIRONMENT: &str = "Environment:\n  \
    DATABASE_URL             master database (default: sqlite://tenancy.db?mode=rwc)\n  \
    TENANT_DB_PASSWORD       password of the new database's user (--to database on PostgreSQL)\n  \
    TENANCY_ADMIN_URL        credentials that create roles and databases on the target server\n  \
    TENANCY_SECRET_KEY       key that encrypts stored passwords (base64 of 32 bytes)\n  \
    TENANCY_SECRET_KEY_FILE  file holding that key (default: .tenancy-secret.key)";

/// Move a tenant to another isolation mode, database or server with its data.
///
/// The new storage is created and migrated, the rows copied table by table and verified
/// (row counts and checksums), then the registry points at the copy in one transaction;
/// running servers follow within a second. The tenant is not served during the copy
/// (HTTP 503 with Retry-After). The old storage is kept (deletetenant --leftovers removes
/// it) unless --drop-source. Asks to type the tenant id first, unless --yes.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "movetenant",
    after_help = Exit::after_help(ENVIRONMENT, &[
        (Exit::Success, Some("moved (or --dry-run: the plan was printed)")),
        (Exit::Failed, Some("the move failed; before the switch the tenant stays where it was, served again")),
        (Exit::InvalidInput, Some("invalid input, or no terminal to confirm on and no --yes")),
        (Exit::AlreadyExists, Some("the target database, role or schema exists already")),
        (Exit::CannotConnect, None),
        (Exit::SecretKey, None),
        (Exit::NotFound, Some("no such tenant, or no such server (--server)")),
        (Exit::Busy, None),
        (Exit::Refused, Some("refused (the message says why), or the server takes no new tenants (--server)")),
        (Exit::Cancelled, Some("not confirmed: nothing was moved")),
    ]),
)]
pub struct MoveTenantArgs {
    /// The tenant to move
    pub tenant_id: TenantId,

    /// Where to: database, schema or table
    #[arg(long, value_name = "ISOLATION")]
    pub to: Isolation,

    /// Name of the new database (--to database)
    #[arg(long, value_name = "NAME")]
    pub db_name: Option<String>,

    /// User of the new database, created with it (--to database on PostgreSQL)
    #[arg(long, value_name = "USER")]
    pub db_user: Option<String>,

    /// Registered server to move to (--to database or schema on PostgreSQL; see showservers)
    /// [default: by the placement policy]
    #[arg(long, value_name = "NAME", conflicts_with_all = ["db_host", "db_port"])]
    pub server: Option<ServerName>,

    /// Server of the new database, by address (--to database on PostgreSQL)
    #[arg(long, value_name = "HOST")]
    pub db_host: Option<String>,

    /// Port of the new database's server (with --db-host) [default: the master's]
    #[arg(long, value_name = "PORT", value_parser = super::value::port)]
    pub db_port: Option<u16>,

    /// Drop the old storage once the registry points at the copy, instead of keeping it
    #[arg(long)]
    pub drop_source: bool,

    /// Print what would be copied (tables, rows, sizes) and left behind; change nothing
    #[arg(long, alias = "plan")]
    pub dry_run: bool,

    /// Move without asking (for scripts)
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Print the result (or the plan) as JSON
    #[arg(long)]
    pub json: bool,

    /// Seconds to wait for the tenant's sessions to end before giving up
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub wait: u64,

    /// Never prompt: a value that is not given is an error
    #[arg(long)]
    pub no_input: bool,

    /// The master database.
    #[command(flatten)]
    pub master: super::MasterArgs,
}

/// Runs `movetenant` with the process's arguments.
pub async fn movetenant(migrators: Migrators) -> ExitCode {
    match super::parse_args() {
        Ok(args) => movetenant_with_args(args, migrators).await,
        Err(code) => code,
    }
}

/// Runs `movetenant` with parsed arguments; returns the exit code.
pub async fn movetenant_with_args(args: MoveTenantArgs, migrators: Migrators) -> ExitCode {
    match run(&args, &migrators).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => super::report_error(&err),
    }
}

async fn run(args: &MoveTenantArgs, migrators: &Migrators) -> Result<()> {
    let tenancy = args.master.connect().await?;
    let prompter = Prompter::new(args.no_input || args.json);
    let to = target(args, &tenancy, &prompter)?;
    let id = &args.tenant_id;
    // An interrupted move of the tenant is settled by the move below, without a plan.
    let interrupted = tenancy
        .unfinished_operations()
        .await?
        .iter()
        .any(|op| op.tenant == *id && op.kind == tenancy::operations::OperationKind::Move);
    // The server fixed once (a --server name becomes its address), so that the check
    // below and the move see one place.
    let tenant = tenancy.get_tenant(id).await?;
    let to = to.pinned(&tenancy, &tenant).await?;
    // Already there (a move that finished, run again): the move below says so.
    let there = to.holds(&tenant);
    let plan = match (interrupted || there) && !args.dry_run {
        true => None,
        false => Some(tenancy.move_plan(id, &to).await?),
    };
    if args.dry_run {
        if let Some(plan) = &plan {
            print_plan(plan, args.drop_source, args.json);
        }
        return Ok(());
    }
    if let Some(plan) = &plan
        && !args.yes
    {
        confirm(plan, args, &prompter).await?;
    }
    let progress = Progress::new(args.json);
    let events = progress.clone();
    let options = MoveOptions::new(to)
        .drop_source(args.drop_source)
        .session_wait(Duration::from_secs(args.wait))
        .on_event(Arc::new(move |event: &MoveEvent<'_>| events.show(event)));
    let hooks = MigrateOnCreate::from(migrators);
    let moved = tenancy.move_tenant(id, &options, &hooks).await;
    progress.finish();
    print_result(&moved?, args.json);
    Ok(())
}

/// The target from the flags (and, for a PostgreSQL database, the password from the
/// environment or a prompt).
fn target(args: &MoveTenantArgs, tenancy: &Tenancy, prompter: &Prompter) -> Result<MoveTo> {
    Ok(match args.to {
        Isolation::Schema => match &args.server {
            Some(server) => MoveTo::SchemaOn(server.clone()),
            None => MoveTo::Schema,
        },
        Isolation::Table => match &args.server {
            // Table tenants live in the master database's shared tables.
            Some(server) => {
                return Err(tenancy::Error::ServerNotPlaceable {
                    server: server.to_string(),
                    isolation: Isolation::Table,
                }
                .into());
            }
            None => MoveTo::Table,
        },
        Isolation::Cache => {
            return Err(tenancy::Error::CannotRelocate {
                action: "move",
                tenant: args.tenant_id.to_string(),
                reason: "cache isolation has no relational storage to hold its rows; move to database, schema or table"
                    .to_owned(),
            }
            .into());
        }
        Isolation::Database => {
            let name = args.db_name.clone().ok_or_else(|| prompter.missing("the new database's name", "--db-name"))?;
            let database = NewDatabase::create(name);
            match tenancy.backend() {
                Backend::Sqlite if args.server.is_some() => return Err(tenancy::Error::ServersNeedPostgres.into()),
                Backend::Sqlite => MoveTo::Database(database),
                Backend::Postgres => {
                    let user =
                        args.db_user.clone().ok_or_else(|| prompter.missing("the new database's user", "--db-user"))?;
                    let password = match std::env::var(super::PASSWORD_ENV).ok().filter(|p| !p.is_empty()) {
                        Some(password) => Password::new(password),
                        None => prompter.password(
                            "Password of the new database's user:",
                            "the new database user's password",
                            super::PASSWORD_ENV,
                        )?,
                    };
                    let database = database.login(user, password);
                    if let Some(server) = &args.server {
                        return Ok(MoveTo::Database(database.on_server(server.clone())));
                    }
                    // By address, or (neither given) where the placement policy puts it,
                    // as `createtenant` does.
                    match (&args.db_host, args.db_port) {
                        (None, None) => MoveTo::Database(database),
                        (host, port) => {
                            let (master_host, master_port) = master_server(tenancy);
                            MoveTo::Database(
                                database.server(host.clone().unwrap_or(master_host), port.unwrap_or(master_port)),
                            )
                        }
                    }
                }
            }
        }
    })
}

/// The master's host and port, the default server of a new database.
fn master_server(tenancy: &Tenancy) -> (String, u16) {
    let server = tenancy.master_server();
    match server.rsplit_once(':') {
        Some((host, port)) => (host.to_owned(), port.parse().unwrap_or(tenancy::DEFAULT_POSTGRES_PORT)),
        None => (server, tenancy::DEFAULT_POSTGRES_PORT),
    }
}

fn print_plan(plan: &MovePlan, drop_source: bool, json: bool) {
    if json {
        let value = serde_json::json!({ "dry_run": true, "drop_source": drop_source, "plan": plan });
        println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
        return;
    }
    print!("{}", describe_plan(plan, drop_source));
    println!("Nothing was changed (--dry-run).");
}

fn describe_plan(plan: &MovePlan, drop_source: bool) -> String {
    use std::fmt::Write as _;
    let mut text = format!(
        "Moving tenant '{}' from {} isolation ({}) to {} isolation would copy:\n",
        plan.tenant, plan.from, plan.source, plan.to
    );
    let (mut rows, mut bytes) = (0, 0);
    for table in &plan.tables {
        let _ = writeln!(text, "  - table '{}': {} row(s), {}", table.table, table.rows, size(table.bytes));
        rows += table.rows;
        bytes += table.bytes;
    }
    let _ = writeln!(text, "  in all {} table(s), {rows} row(s), {}", plan.tables.len(), size(bytes));
    let verb = if drop_source { "then drop" } else { "and keep (deletetenant --leftovers removes it)" };
    for object in &plan.source_objects {
        let _ = writeln!(text, "  {verb}: {object}");
    }
    text
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1 << 20)),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / f64::from(1 << 10)),
        b => format!("{b} B"),
    }
}

fn print_result(moved: &Moved, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(moved).unwrap_or_default());
        return;
    }
    if moved.already_there {
        println!("✓ Tenant '{}' is a {} tenant there already: nothing to move", moved.id, moved.to);
    } else if moved.tables.is_empty() && moved.resumed {
        println!("✓ Tenant '{}' moved: an interrupted move was finished", moved.id);
    } else {
        let rows: u64 = moved.tables.iter().map(|t| t.rows).sum();
        println!(
            "✓ Tenant '{}' moved from {} to {} isolation: {} table(s), {rows} row(s) copied and verified",
            moved.id,
            moved.from,
            moved.to,
            moved.tables.len()
        );
    }
    for object in &moved.source_objects {
        match moved.source_dropped {
            true => println!("✓ Dropped (old storage): {object}"),
            false => println!("  Kept (old storage): {object}; deletetenant {} --leftovers removes it", moved.id),
        }
    }
}

/// Shows the plan and asks to type the tenant id; without a terminal, refuses.
async fn confirm(plan: &MovePlan, args: &MoveTenantArgs, prompter: &Prompter) -> Result<()> {
    if !prompter.is_interactive() {
        return Err(Error::MissingInput {
            what: "confirmation".to_owned(),
            how: "pass --yes to move without a terminal; nothing was moved".to_owned(),
        });
    }
    eprint!("{}", describe_plan(plan, args.drop_source));
    eprintln!("The tenant is not served while its rows are copied.");
    let expected = plan.tenant.to_string();
    let typed = super::typed_answer("Type the tenant id to move it:").await?;
    if typed != expected {
        return Err(Error::NotConfirmed { tenant: expected, typed });
    }
    Ok(())
}

/// Steps and per-table progress on a terminal (stderr); nothing otherwise.
#[derive(Clone)]
struct Progress {
    bar: Arc<Mutex<Option<ProgressBar>>>,
    shown: bool,
}

impl Progress {
    fn new(json: bool) -> Progress {
        Progress { bar: Arc::new(Mutex::new(None)), shown: !json }
    }

    fn show(&self, event: &MoveEvent<'_>) {
        if !self.shown {
            return;
        }
        let Ok(mut bar) = self.bar.lock() else { return };
        match event {
            MoveEvent::Step(step) => {
                if let Some(bar) = bar.take() {
                    bar.finish_and_clear();
                }
                eprintln!("  {step}…");
            }
            MoveEvent::Table { table, rows, total } => {
                let current = bar.get_or_insert_with(|| {
                    let new = ProgressBar::with_draw_target(Some(*total), ProgressDrawTarget::stderr());
                    new.set_style(
                        ProgressStyle::with_template("    {msg:20} [{bar:30}] {pos}/{len} rows")
                            .unwrap_or_else(|_| ProgressStyle::default_bar())
                            .progress_chars("=> "),
                    );
                    new
                });
                if current.message() != *table {
                    current.set_message(table.to_string());
                    current.set_length(*total);
                }
                current.set_position(*rows);
            }
            _ => {}
        }
    }

    fn finish(&self) {
        if let Ok(mut bar) = self.bar.lock()
            && let Some(bar) = bar.take()
        {
            bar.finish_and_clear();
        }
    }
}
