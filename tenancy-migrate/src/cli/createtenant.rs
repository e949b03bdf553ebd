//! `createtenant`: register a tenant and create its storage.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{ArgAction, Parser};
use tenancy::secrets::Password;
use tenancy::servers::{Server, ServerName, ServerState};
use tenancy::{Backend, Created, Isolation, NewDatabase, NewTenant, Tenancy, TenantId};

use super::Exit;
use super::prompt::Prompter;
use crate::{Error, MigrateOnCreate, Migrators, Result};

/// Environment variable holding the tenant database password for scripts.
pub const PASSWORD_ENV: &str = "TENANT_DB_PASSWORD";

/// Create a tenant: register it in the master database and create what its isolation mode
/// needs (role and database, schema, or nothing but the registry row), then optionally
/// run the application's migrations for it.
///
/// Asks for every value not given as a flag when run on a terminal. Without a terminal,
/// or with --no-input, a missing value is an error. The database password is read from
/// the prompt or from TENANT_DB_PASSWORD, never from a flag.
///
/// A database goes on the server --server names, or at --db-host/--db-port; with
/// neither, without a terminal or with --no-input, the placement policy picks the active
/// server with the fewest database and schema tenants per unit of weight (ties: the
/// master's own server, then by name). On a terminal, when servers other than the
/// master's are registered (addserver), a list of the active ones is shown, the policy's
/// pick first selected; otherwise the host and port are asked for.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "createtenant",
    after_help = Exit::after_help(
        "Environment:\n  \
        DATABASE_URL             master database (default: sqlite://tenancy.db?mode=rwc)\n  \
        TENANT_DB_PASSWORD       password of the tenant's database user (database isolation)\n  \
        TENANCY_ADMIN_URL        credentials that create roles and databases (default: DATABASE_URL's, database 'postgres')\n  \
        TENANCY_SECRET_KEY       key that encrypts stored passwords (base64 of 32 bytes)\n  \
        TENANCY_SECRET_KEY_FILE  file holding that key (default: .tenancy-secret.key, generated if missing)",
        &[
            (Exit::Success, Some("created")),
            (Exit::Failed, Some("failed (what was created was removed)")),
            (Exit::InvalidInput, None),
            (Exit::AlreadyExists, None),
            (Exit::CannotConnect, None),
            (Exit::SecretKey, None),
            (Exit::NotFound, Some("no such template (--from) or server (--server)")),
            (Exit::Busy, Some("the id has an unfinished delete, or a create of other arguments (the message says which)")),
            (Exit::Refused, Some("the template cannot be cloned so (--from, the message says why), or the server takes no new tenants")),
            (Exit::Cancelled, None),
        ],
    )
)]
pub struct CreateTenantArgs {
    /// Tenant ID: a lower-case letter, then lower-case letters, digits or '_' (at most 48 bytes)
    #[arg(long, value_name = "ID")]
    pub id: Option<TenantId>,

    /// Human-readable tenant name
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Isolation type: database, schema, table or cache
    #[arg(long, value_name = "TYPE")]
    pub isolation: Option<Isolation>,

    /// Create the tenant's database now (database isolation)
    #[arg(long, overrides_with = "no_create_database", action = ArgAction::SetTrue)]
    pub create_database: bool,

    /// Use an existing database: check that the credentials connect to it
    #[arg(long, overrides_with = "create_database", action = ArgAction::SetTrue)]
    pub no_create_database: bool,

    /// Name of the tenant's database (database isolation)
    #[arg(long, value_name = "NAME")]
    pub db_name: Option<String>,

    /// Database user the tenant connects as (database isolation on PostgreSQL)
    #[arg(long, value_name = "USER")]
    pub db_user: Option<String>,

    /// Registered server of the tenant's database or schema (database or schema isolation
    /// on PostgreSQL; see showservers) [default: the placement policy's pick]
    #[arg(long, value_name = "NAME", conflicts_with_all = ["db_host", "db_port"])]
    pub server: Option<ServerName>,

    /// Host of the tenant's database server (database isolation on PostgreSQL)
    #[arg(long, value_name = "HOST")]
    pub db_host: Option<String>,

    /// Port of the tenant's database server [default: 5432]
    #[arg(long, value_name = "PORT", value_parser = super::value::port)]
    pub db_port: Option<u16>,

    /// Make the tenant a copy of this tenant's tables and rows (a template): no migrations
    /// run; the tenant column of every row holds the new id [default isolation: the
    /// template's]
    #[arg(long, value_name = "TEMPLATE", conflicts_with_all = ["migrate", "no_migrate", "no_create_database"])]
    pub from: Option<TenantId>,

    /// Run the application's migrations for the tenant now
    #[arg(long, overrides_with = "no_migrate", action = ArgAction::SetTrue)]
    pub migrate: bool,

    /// Do not run migrations now
    #[arg(long, overrides_with = "migrate", action = ArgAction::SetTrue)]
    pub no_migrate: bool,

    /// Never prompt: a value that is not given is an error
    #[arg(long)]
    pub no_input: bool,

    /// The master database.
    #[command(flatten)]
    pub master: super::MasterArgs,
}

impl CreateTenantArgs {
    fn create_database(&self) -> Option<bool> {
        flag_pair(self.create_database, self.no_create_database)
    }

    fn migrate(&self) -> Option<bool> {
        flag_pair(self.migrate, self.no_migrate)
    }
}

fn flag_pair(yes: bool, no: bool) -> Option<bool> {
    match (yes, no) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
}

/// Runs `createtenant` with the process's arguments, for the application whose
/// [`Migrators`] are given (`--migrate` runs their tenant migrator); see
/// [`CreateTenantArgs`].
pub async fn createtenant(migrators: Migrators) -> ExitCode {
    match super::parse_args() {
        Ok(args) => createtenant_with_args(args, migrators).await,
        Err(code) => code,
    }
}

/// Runs `clonetenant`: `createtenant` with `--from TEMPLATE` required (see
/// [`CreateTenantArgs::from`]).
pub async fn clonetenant(migrators: Migrators) -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let command = CreateTenantArgs::command()
        .name("clonetenant")
        .bin_name("clonetenant")
        .about(
            "Create a tenant as a copy of a template tenant's tables and rows (the tenant column of every row \
             holds the new id), verified table by table; no migrations run. Takes createtenant's flags.",
        )
        .mut_arg("from", |arg| arg.required(true));
    let parsed = command.try_get_matches().and_then(|matches| CreateTenantArgs::from_arg_matches(&matches));
    match parsed {
        Ok(args) => createtenant_with_args(args, migrators).await,
        Err(err) => {
            let _ = err.print();
            u8::try_from(err.exit_code()).map_or(Exit::InvalidInput.into(), ExitCode::from)
        }
    }
}

/// Runs `createtenant` with parsed arguments, printing progress and errors; returns the
/// exit code.
pub async fn createtenant_with_args(args: CreateTenantArgs, migrators: Migrators) -> ExitCode {
    println!("Starting tenant creation...");
    match run(args, migrators).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => super::report_error(&err),
    }
}

/// The master pool's connections of one creation: the provisioning transaction and a
/// read beside it.
const CREATE_CONNECTIONS: u32 = 2;

/// Everything `createtenant` asks, after flags and prompts.
struct Answers {
    new: NewTenant,
}

async fn run(args: CreateTenantArgs, migrators: Migrators) -> Result<()> {
    let backend = Backend::of_url(args.master.url())?;
    let password_env = std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty()).map(Password::new);
    // Connect first: an unreachable master is reported before any question is asked.
    // Creating a tenant uses two pooled master connections at once (the provisioning
    // transaction and a read beside it), and the operation's lock one of its own. All
    // three open together now instead of one by one on the way; the pool's cap keeps
    // sqlx from opening more whenever a released connection is still on its way back
    // (see `warm_master_pool`).
    let tenancy = args.master.builder().max_connections(CREATE_CONNECTIONS).connect().await?;
    tenancy.open_operation_connection();
    super::warm_master_pool(&tenancy, CREATE_CONNECTIONS as usize);
    let template = match &args.from {
        Some(template) => Some(tenancy.get_tenant(template).await?.isolation()),
        None => None,
    };
    let from = args.from.clone();
    let servers = offered_servers(&tenancy, &args).await?;
    let named_server = args.server.is_some();
    // inquire blocks on the terminal; keep that off the async workers.
    let answers = super::blocking(move || ask(&args, backend, password_env, template, &servers)).await??;

    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&interrupted);
    let watcher = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            flag.store(true, Ordering::SeqCst);
        }
    });
    let hooks = MigrateOnCreate::from(&migrators).interrupt_on(&interrupted);
    let result = tenancy.create_tenant(answers.new, &hooks).await;
    watcher.abort();
    if let Some(path) = tenancy.generated_key_file() {
        eprintln!(
            "Generated the secret key file '{}' (readable only by you). Keep it safe and back it up: \
             stored database passwords cannot be decrypted without it.",
            path.display()
        );
    }
    let provisioned = match result {
        Err(tenancy::Error::ProvisioningFailed { .. }) if interrupted.load(Ordering::SeqCst) => {
            return Err(Error::Cancelled);
        }
        other => other?,
    };

    let tenant = &provisioned.tenant;
    println!("✓ Tenant '{}' created successfully", tenant.id());
    for created in &provisioned.created {
        match created {
            Created::Database { name, .. } => println!("✓ Database '{name}' created"),
            Created::DatabaseFile { name, path } => {
                println!("✓ Database '{name}' created ({})", path.display());
            }
            Created::Schema { name } => println!("✓ Schema '{name}' created"),
            // The role is part of creating the database; the transcript names only that.
            _ => {}
        }
    }
    if provisioned.created.is_empty()
        && let Some(db) = tenant.placement().database()
    {
        println!("✓ Using existing database '{}'", db.name());
    }
    if matches!(tenant.isolation(), Isolation::Database | Isolation::Schema) && backend == Backend::Postgres {
        let map = tenancy.server_map().await?;
        // With the master's server alone there is no choice to report (the documented
        // transcript); with others registered, where the database went.
        if map.servers().len() > 1 || named_server {
            let on = map.server_of(tenant);
            match on.server() {
                Some(server) => println!("✓ On server '{}' ({})", server.name, server.address()),
                None => println!("✓ On server {} (not registered)", on.label()),
            }
        }
    }
    match tenant.isolation() {
        Isolation::Table => println!("✓ Shared tables: rows are scoped by tenant_id '{}'", tenant.id()),
        Isolation::Cache => {
            println!("✓ Cache namespace '{}' ready", tenant.id());
            println!("Nothing to migrate: cache tenants have no relational storage");
        }
        _ => {}
    }
    match &from {
        Some(template) => println!("✓ Tables and rows copied from template '{template}' and verified"),
        None if provisioned.migrated => println!("✓ Migrations completed"),
        None => {}
    }
    println!("Tenant is ready to use");
    Ok(())
}

/// Fills every value from flags or prompts, validating each as it comes.
fn ask(
    args: &CreateTenantArgs,
    backend: Backend,
    password_env: Option<Password>,
    template: Option<Isolation>,
    servers: &Offered,
) -> Result<Answers> {
    let prompter = Prompter::new(args.no_input);

    let id: TenantId = match &args.id {
        Some(id) => id.clone(),
        None => prompter
            .text("Enter tenant ID (unique):", "--id <ID>", "tenant ID", |input| {
                TenantId::new(input).map(drop).map_err(|e| e.to_string())
            })?
            .parse()?,
    };
    let name = match &args.name {
        Some(name) if name.trim().is_empty() => {
            return Err(Error::MissingInput {
                what: "tenant name".to_owned(),
                how: "--name must not be blank".to_owned(),
            });
        }
        Some(name) => name.trim().to_owned(),
        None => prompter.text("Enter tenant name:", "--name <NAME>", "tenant name", |input| {
            if input.is_empty() { Err("The tenant name must not be empty".to_owned()) } else { Ok(()) }
        })?,
    };
    let isolation: Isolation = match (args.isolation, template) {
        (Some(isolation), _) => isolation,
        (None, Some(isolation)) => isolation,
        (None, None) => prompter.select(
            "Select isolation type (database/schema/table/cache):",
            "--isolation <TYPE>",
            "isolation type",
            Isolation::ALL.to_vec(),
        )?,
    };
    if isolation == Isolation::Schema && backend != Backend::Postgres {
        return Err(tenancy::Error::SchemaNeedsPostgres { backend: backend.name() }.into());
    }

    let database = if isolation == Isolation::Database {
        Some(ask_database(args, backend, password_env, &prompter, servers)?)
    } else {
        None
    };

    let migrate = if isolation.has_relational_storage() && template.is_none() {
        match args.migrate() {
            Some(migrate) => migrate,
            None => prompter.confirm(
                "Do you want to run migrations for this tenant now? (y/n):",
                "--migrate or --no-migrate",
                "whether to run migrations",
            )?,
        }
    } else {
        false
    };

    let mut new = NewTenant::new(id, name, isolation)?.migrate(migrate);
    // A database goes on its server through `NewDatabase` (above); any other mode takes
    // the server here (schema: a shard database there; table and cache refuse it).
    if let (Some(server), false) = (&args.server, isolation == Isolation::Database) {
        new = new.on_server(server.clone());
    }
    if let Some(template) = &args.from {
        new = new.from_template(template.clone());
    }
    Ok(Answers {
        new: match database {
            Some(database) => new.database(database),
            None => new,
        },
    })
}

fn ask_database(
    args: &CreateTenantArgs,
    backend: Backend,
    password_env: Option<Password>,
    prompter: &Prompter,
    servers: &Offered,
) -> Result<NewDatabase> {
    let create = match args.create_database() {
        Some(create) => create,
        // A clone copies into a database it creates.
        None if args.from.is_some() => true,
        None => prompter.confirm(
            "Do you want to create the database now? (y/n):",
            "--create-database or --no-create-database",
            "whether to create the database",
        )?,
    };
    let name = given_or_asked(args.db_name.as_deref(), "database name", || {
        prompter.text("Enter database name for tenant:", "--db-name <NAME>", "database name", |input| {
            check_name("database name", input)
        })
    })?;
    if backend == Backend::Sqlite {
        if args.server.is_some() {
            return Err(tenancy::Error::ServersNeedPostgres.into());
        }
        // On SQLite the tenant's database is a file beside the master: nothing else to ask.
        return Ok(new_database(name, create));
    }
    let user = given_or_asked(args.db_user.as_deref(), "database user", || {
        prompter.text("Enter database user:", "--db-user <USER>", "database user", |input| {
            check_name("database user", input)
        })
    })?;
    let password = match password_env {
        Some(password) => password,
        None => prompter.password("Enter database password:", "database password", PASSWORD_ENV)?,
    };
    let database = new_database(name, create).login(user, password);
    if let Some(server) = &args.server {
        return Ok(database.on_server(server.clone()));
    }
    if args.db_host.is_none() {
        if !prompter.is_interactive() && args.db_port.is_none() {
            // No terminal to ask on: the placement policy picks.
            return Ok(database);
        }
        if let Some(server) = ask_server(servers, prompter)? {
            return Ok(database.on_server(server));
        }
    }
    let host = match &args.db_host {
        Some(host) => host.trim().to_owned(),
        None => prompter.text("Enter database host:", "--db-host <HOST>", "database host", |input| {
            if input.is_empty() { Err("The host must not be empty".to_owned()) } else { Ok(()) }
        })?,
    };
    let port = match args.db_port {
        Some(port) => port,
        None => super::value::port(&prompter.text_with_default(
            "Enter database port (default: 5432):",
            "--db-port <PORT>",
            "database port",
            "5432",
            |input| super::value::port(input).map(drop).map_err(|e| e.to_string()),
        )?)?,
    };
    Ok(database.server(host, port))
}

/// The servers a prompt offers: the active ones, the placement policy's pick first
/// selected. Empty when only the master's own server is registered (the prompts then ask
/// for a host and port, as before servers were data) or nothing is to be asked.
#[derive(Debug, Default)]
struct Offered {
    servers: Vec<OfferedServer>,
    pick: usize,
}

/// A server in the prompt's list.
#[derive(Debug, Clone)]
struct OfferedServer {
    name: ServerName,
    label: String,
}

impl std::fmt::Display for OfferedServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label)
    }
}

async fn offered_servers(tenancy: &Tenancy, args: &CreateTenantArgs) -> Result<Offered> {
    let asks = matches!(args.isolation, None | Some(Isolation::Database))
        && args.server.is_none()
        && args.db_host.is_none()
        && tenancy.backend() == Backend::Postgres;
    if !asks {
        return Ok(Offered::default());
    }
    let all = tenancy.servers().await?;
    if all.len() <= 1 {
        return Ok(Offered::default());
    }
    let pick = tenancy.pick_server().await.ok().map(|server| server.name);
    let active: Vec<&Server> = all.iter().filter(|server| server.state == ServerState::Active).collect();
    Ok(Offered {
        pick: active.iter().position(|server| Some(&server.name) == pick.as_ref()).unwrap_or(0),
        servers: active
            .into_iter()
            .map(|server| {
                let mark = if Some(&server.name) == pick.as_ref() { ", placement's pick" } else { "" };
                OfferedServer {
                    name: server.name.clone(),
                    label: format!("{} ({}, weight {}{mark})", server.name, server.address(), server.weight),
                }
            })
            .collect(),
    })
}

/// Asks which registered server takes the database, when there is a choice.
fn ask_server(offered: &Offered, prompter: &Prompter) -> Result<Option<ServerName>> {
    if offered.servers.is_empty() {
        return Ok(None);
    }
    let chosen = prompter.select_from(
        "Select database server:",
        "--server <NAME>",
        "database server",
        offered.servers.clone(),
        offered.pick,
    )?;
    Ok(Some(chosen.name))
}

fn new_database(name: String, create: bool) -> NewDatabase {
    if create { NewDatabase::create(name) } else { NewDatabase::existing(name) }
}

fn given_or_asked(given: Option<&str>, what: &'static str, ask: impl FnOnce() -> Result<String>) -> Result<String> {
    let value = match given {
        Some(value) => value.trim().to_owned(),
        None => ask()?,
    };
    tenancy::validate_sql_name(what, &value)?;
    Ok(value)
}

fn check_name(what: &'static str, value: &str) -> std::result::Result<(), String> {
    tenancy::validate_sql_name(what, value).map_err(|e| e.to_string())
}
