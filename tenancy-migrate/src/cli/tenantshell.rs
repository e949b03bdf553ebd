//! `tenantshell <tenant_id>`: an SQL prompt bound to one tenant, Django's `shell` with a
//! tenant context.
//!
//! Every statement runs through the tenant's handle ([`tenancy::TenantConnection`]), the
//! same one the application uses: the tenant's own database, its schema as the only
//! `search_path` entry, or (table isolation) the shared tables under row-level security
//! with the tenant bound (on a SQLite master: checked and rewritten by the handle's
//! allowlist, which knows the app's models only when the binary links them, hence the
//! [`Migrators`] argument). So a plain `SELECT * FROM projects` shows that tenant's
//! projects only.
//!
//! # What keeps the shell to its tenant
//!
//! The binding of the handle, not the shell. The shell connects with the default
//! [`tenancy::TenantBinding::TenantPools`]: a schema or table tenant's statements run on
//! connections of the tenant's own pool, logged in as the tenant's login role, which may
//! use its own schema only (schema isolation) or is what the row-level security policies
//! identify the tenant by (table isolation); a database tenant's run in its own
//! database. There is no transaction around each statement: each one commits on its own
//! (autocommit), on whichever connection of the tenant's pool is free. Whatever a
//! statement does to its session (a setting, a temporary table) stays on a connection
//! of that tenant's pool, which only this shell process uses and which closes with it.
//! (A schema or table tenant whose registry row has no login role, from before tenants
//! got one, is the exception: its statements run as the master URL's user in a
//! transaction of the master pool bound with settings, which hostile SQL can undo; see
//! [`tenancy::TenantBinding::SharedTransactions`].)
//!
//! # What the guard is for
//!
//! Before a statement reaches the handle, the shell refuses what would not do what it
//! seems to in this setting: transaction control (`BEGIN`, `COMMIT`, ...: each statement
//! is its own transaction, and the next one may run on another connection), session
//! settings (`SET`, `RESET`, `DISCARD`, and `set_config(...)` calls, which would stay
//! on one pooled connection and apply to some later statements and not others), and
//! several statements in one input (each input is sent as one prepared statement, which
//! PostgreSQL refuses to split). That is a convenience against surprises, not a security
//! boundary: it reads the statement's text, so a `DO` block, a function or a
//! differently spelled call passes it. `DO` blocks are allowed on purpose (loops and
//! data fixes are what an operator's shell is for); what they can reach is what the
//! tenant's role can reach.
//!
//! # Fleet SQL
//!
//! `-c SQL` with `--tenants a,b`, `--all` or `--isolation MODE` instead of a tenant id
//! runs the statement on each of those tenants, through each one's handle and behind the
//! same guard, read-only unless `--write` (see the `fleet` submodule). A single tenant's
//! `-c` keeps committing, as the prompt does: `--write`, `--json` and `--jobs` are fleet
//! flags, and clap refuses them (and every other wrong combination) with exit code 2.
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Parser};
use rustyline::error::ReadlineError;
use sea_orm::sqlx::{Row, TypeInfo, ValueRef};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, QueryResult, RuntimeErr, Statement};
use tenancy::{Isolation, TenantConnection, TenantId};

use super::Exit;
use crate::migrator::Migrators;
use crate::{Error, Result};

mod fleet;

/// Environment variable naming the history file (`--history-file`).
pub const HISTORY_ENV: &str = "TENANCY_SHELL_HISTORY";

/// The history file in the home folder, when neither --history-file nor
/// TENANCY_SHELL_HISTORY names one.
pub const DEFAULT_HISTORY_FILE: &str = ".tenancy_shell_history";

/// An interactive SQL prompt bound to one tenant: its database, its schema, or its rows
/// of the shared tables (row-level security), through the same handle the application
/// uses; or, with -c and --tenants, --all or --isolation, one statement run on many
/// tenants.
///
/// End a statement with ';' (a line without one continues on the next). One statement at
/// a time, each committed on its own; transaction control (BEGIN, COMMIT, ...) and
/// session settings (SET, RESET, DISCARD, set_config) are refused, since the next
/// statement may run on another of the tenant's pooled connections. What keeps the shell
/// to the tenant is the tenant's own login role, not this refusal. Commands:
/// \dt lists the tenant's tables, \? shows help, \q (or Ctrl-D) quits; Ctrl-C discards
/// the line being typed. A failing statement prints its error and the shell goes on.
///
/// Fleet SQL: `-c SQL --tenants a,b` (or --all, or --isolation MODE) runs the statement
/// on each tenant through its own handle, --jobs at a time, and prints each tenant's
/// result (or --json). Read-only unless --write: on PostgreSQL in a READ ONLY
/// transaction, rolled back; on SQLite in a transaction that is always rolled back, a
/// statement that changed rows counting as failed. With --write each tenant's statement
/// commits in its own transaction. --all and --isolation take the ready tenants and list
/// the others (suspended, cache tenants, tenants mid-operation) as skipped.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "tenantshell",
    group(ArgGroup::new("target").required(true).args(["tenant_id", "tenants", "all", "isolation"])),
    group(ArgGroup::new("fleet").args(["tenants", "all", "isolation"])),
    after_help = Exit::after_help(
        "Isolation:\n  \
        Statements run as the tenant's own login role (schema and table tenants) or in the tenant's\n  \
        own database: the database keeps them to the tenant, DO blocks and functions included.\n  \
        The refusals above only prevent surprises on pooled connections; they are no security boundary.\n\n\
        Fleet SQL, for example:\n  \
        tenantshell --all -c 'SELECT count(*) FROM projects'\n  \
        tenantshell --tenants acme,globex --write -c \"UPDATE projects SET archived = true\"\n  \
        tenantshell --isolation schema --json -c 'SELECT max(created_at) FROM projects'\n\n\
        Environment:\n  \
        DATABASE_URL               master database (default: sqlite://tenancy.db?mode=rwc)\n  \
        TENANCY_SHELL_HISTORY      history file (default: ~/.tenancy_shell_history)\n  \
        TENANCY_SECRET_KEY(_FILE)  key that decrypts a database tenant's stored password",
        &[
            (Exit::Success, Some("done")),
            (Exit::Failed, Some("the -c statement failed (fleet SQL: for at least one tenant)")),
            (Exit::InvalidInput, Some("invalid input (flags, tenant id, cache tenant)")),
            (Exit::CannotConnect, Some("cannot connect")),
            (Exit::SecretKey, None),
            (Exit::NotFound, Some("no such tenant (fleet SQL: one named with --tenants; nothing ran)")),
        ],
    )
)]
pub struct TenantShellArgs {
    /// The tenant whose data the shell works on
    pub tenant_id: Option<TenantId>,

    /// Run this one statement (or backslash command), print its result and exit: 0 on
    /// success, 1 if it failed
    #[arg(short = 'c', long = "command", value_name = "SQL")]
    pub command: Option<String>,

    /// Run -c on these tenants (comma-separated ids)
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "IDS",
        value_parser = super::value::listed_tenant_id,
        requires = "command",
        help_heading = "Fleet SQL"
    )]
    pub tenants: Option<Vec<TenantId>>,

    /// Run -c on every ready tenant with relational storage
    #[arg(long, requires = "command", help_heading = "Fleet SQL")]
    pub all: bool,

    /// Run -c on every ready tenant of this isolation type: database, schema or table
    #[arg(long, value_name = "TYPE", requires = "command", help_heading = "Fleet SQL")]
    pub isolation: Option<Isolation>,

    /// Tenants the statement runs on at once, at least 1
    #[arg(
        long,
        short = 'j',
        value_name = "N",
        default_value_t = 4,
        value_parser = clap::value_parser!(u32).range(1..),
        requires = "fleet",
        help_heading = "Fleet SQL"
    )]
    pub jobs: u32,

    /// Commit what the statement changes, one transaction per tenant (default: read-only)
    #[arg(long, requires = "fleet", help_heading = "Fleet SQL")]
    pub write: bool,

    /// Print the results as one JSON document on stdout
    #[arg(long, requires = "fleet", help_heading = "Fleet SQL")]
    pub json: bool,

    /// Where the history of typed lines is kept
    #[arg(long, value_name = "PATH", env = HISTORY_ENV)]
    pub history_file: Option<PathBuf>,

    /// Keep no history (nothing is read or written)
    #[arg(long)]
    pub no_history: bool,

    /// The master database.
    #[command(flatten)]
    pub master: super::MasterArgs,
}

/// Runs `tenantshell` with the process's arguments, for the application whose
/// [`Migrators`] are given.
///
/// The shell does not migrate anything: taking the application's migrators makes the
/// binary link the application's crate, and with it the registrations of its
/// `#[tenant_scoped]` and `#[tenancy::shared]` models. A table-isolated tenant's handle on
/// a SQLite master reaches only the tables those models declare, so a shell that linked
/// no models could reach no table at all (it refuses; it never runs a statement
/// unscoped).
pub async fn tenantshell(migrators: Migrators) -> ExitCode {
    match super::parse_args() {
        Ok(args) => tenantshell_with_args(args, migrators).await,
        Err(code) => code,
    }
}

/// Runs `tenantshell` with parsed arguments; returns the exit code. See [`tenantshell`]
/// for why it takes the application's [`Migrators`].
pub async fn tenantshell_with_args(args: TenantShellArgs, migrators: Migrators) -> ExitCode {
    // Held, not used: the value is what links the application's models (see above).
    let _linked = migrators;
    let result = match fleet::Selection::of(&args) {
        Some(selection) => fleet::run(&args, selection).await,
        None => run(args).await.map(|()| Exit::Success),
    };
    match result {
        Ok(exit) => exit.into(),
        Err(err) => super::report_error(&err),
    }
}

/// One tenant: `-c` or the interactive prompt.
async fn run(args: TenantShellArgs) -> Result<()> {
    // clap requires a tenant id when no fleet flag is given.
    let Some(id) = args.tenant_id.clone() else {
        return Err(Error::MissingInput {
            what: "tenant id".to_owned(),
            how: "give it as the first argument".to_owned(),
        });
    };
    let tenancy = args.master.connect().await?;
    let db = tenancy.tenant(&id).await?;
    // A wrong secret key or an unreachable server is reported as such, with its exit code.
    db.ping().await?;
    if db.isolation() == Isolation::Cache {
        return Err(Error::NoRelationalStorage { tenant: id.to_string(), what: "the tenant shell" });
    }
    if let Some(command) = &args.command {
        let output = execute(&db, command).await.map_err(|message| Error::Statement { message })?;
        print!("{output}");
        return Ok(());
    }
    let history = if args.no_history {
        None
    } else {
        args.history_file
            .clone()
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(DEFAULT_HISTORY_FILE)))
    };
    if std::io::stdin().is_terminal() {
        println!(
            "Tenant '{id}' ({} isolation, {}). Type \\? for help, \\q to quit.",
            db.isolation(),
            tenancy.describe_location(db.tenant())
        );
    }
    let runtime = tokio::runtime::Handle::current();
    // rustyline blocks on the terminal: the loop runs on a blocking thread and drives each
    // statement on the runtime from there.
    super::blocking(move || repl(&runtime, &db, history)).await?
}

/// Reads lines until `\q` or end of input, running each complete statement.
fn repl(runtime: &tokio::runtime::Handle, db: &TenantConnection, history: Option<PathBuf>) -> Result<()> {
    let config = rustyline::Config::builder().auto_add_history(false).build();
    let mut editor = rustyline::DefaultEditor::with_config(config)
        .map_err(|err| Error::Statement { message: format!("cannot open the terminal: {err}") })?;
    if let Some(path) = &history {
        // A first run has no history yet; any other read problem only costs the history.
        let _ = editor.load_history(path);
    }
    let tenant = db.id().to_string();
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() { format!("{tenant}=> ") } else { format!("{tenant}-> ") };
        let line = match editor.readline(&prompt) {
            Ok(line) => line,
            // Ctrl-C: drop what was being typed, as psql does.
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(err) => {
                eprintln!("ERROR: cannot read the terminal: {err}");
                break;
            }
        };
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(trimmed);
        if buffer.is_empty() && trimmed.starts_with('\\') {
            if trimmed == "\\q" {
                break;
            }
            report(runtime.block_on(execute(db, trimmed)));
            continue;
        }
        if !buffer.is_empty() {
            buffer.push('\n');
        }
        buffer.push_str(trimmed);
        if buffer.ends_with(';') {
            let statement = std::mem::take(&mut buffer);
            report(runtime.block_on(execute(db, &statement)));
        }
    }
    if let Some(path) = &history
        && let Err(err) = editor.save_history(path)
    {
        eprintln!("WARNING: cannot save the history to {}: {err}", path.display());
    }
    Ok(())
}

fn report(result: std::result::Result<String, String>) {
    match result {
        Ok(output) => print!("{output}"),
        Err(message) => eprintln!("ERROR: {message}"),
    }
}

/// Runs one statement or backslash command through the tenant's handle; returns what to
/// print, or the error message.
async fn execute(db: &TenantConnection, input: &str) -> std::result::Result<String, String> {
    let sql = trimmed(input);
    match sql {
        // `\q` quits the interactive loop before it gets here; in `-c` there is nothing to quit.
        "" | "\\q" => return Ok(String::new()),
        "\\dt" => return list_tables(db).await,
        "\\?" | "\\h" | "help" => return Ok(HELP.to_owned()),
        _ if sql.starts_with('\\') => {
            let command = sql.split_whitespace().next().unwrap_or(sql);
            return Err(format!("unknown command {command}; \\? lists the commands"));
        }
        _ => {}
    }
    Ok(match statement(db, sql).await.map_err(|e| e.message)? {
        Output::Rows(rows) => format_rows(&rows),
        Output::Affected(n) => affected(n),
    })
}

/// `input` without surrounding blanks and trailing semicolons.
fn trimmed(input: &str) -> &str {
    input.trim().trim_end_matches(|c: char| c == ';' || c.is_whitespace())
}

/// What a statement gave.
enum Output {
    /// The rows of a query (or of a statement with `RETURNING`).
    Rows(Vec<QueryResult>),
    /// How many rows a statement without rows to show changed.
    Affected(u64),
}

/// `OK, n rows affected`, psql's wording.
fn affected(n: u64) -> String {
    format!("OK, {n} row{} affected\n", if n == 1 { "" } else { "s" })
}

/// Why a statement did not run: the guard's refusal or the database's error.
struct Failure {
    /// The message to show (the database's own, where there is one).
    message: String,
    /// PostgreSQL refused a write in a read-only transaction (SQLSTATE 25006).
    read_only: bool,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure { message, read_only: false }
    }
}

impl From<&DbErr> for Failure {
    fn from(err: &DbErr) -> Self {
        Failure { message: message(err), read_only: sqlstate(err).as_deref() == Some("25006") }
    }
}

/// Runs one SQL statement on `db` (the tenant's handle, or a transaction of it) after the
/// guard ([`guard`]).
async fn statement<C: ConnectionTrait>(db: &C, sql: &str) -> std::result::Result<Output, Failure> {
    let first = guard(sql)?;
    let backend = db.get_database_backend();
    if returns_rows(&first, sql) {
        let rows =
            db.query_all_raw(Statement::from_string(backend, sql.to_owned())).await.map_err(|e| Failure::from(&e))?;
        Ok(Output::Rows(rows))
    } else {
        // Prepared, like queries: PostgreSQL then runs exactly one statement, so the guard
        // cannot be sidestepped by a `RESET ROLE` after a semicolon.
        let result =
            db.execute_raw(Statement::from_string(backend, sql.to_owned())).await.map_err(|e| Failure::from(&e))?;
        Ok(Output::Affected(result.rows_affected()))
    }
}

/// Refuses what would not do what it seems to (see the module docs): transaction control
/// and session settings. Returns the statement's first keyword, upper-cased.
fn guard(sql: &str) -> std::result::Result<String, String> {
    let first = first_keyword(sql);
    match first.as_str() {
        "BEGIN" | "START" | "COMMIT" | "END" | "ROLLBACK" | "ABORT" | "SAVEPOINT" | "RELEASE" => {
            return Err("transaction control is not available: each statement runs in a transaction of its own, \
                 bound to the tenant"
                .to_owned());
        }
        "SET" | "RESET" | "DISCARD" => return Err(format!("{first} {SESSION_SETTING_REFUSED}")),
        _ => {}
    }
    if calls_set_config(sql) {
        return Err(format!("set_config() {SESSION_SETTING_REFUSED}"));
    }
    Ok(first)
}

const HELP: &str = "\
  \\dt        list the tenant's tables
  \\?         this help
  \\q         quit (Ctrl-D too)
  SQL;       run a statement (end it with ';'; a line without one continues)
";

/// The statement's first word, upper-cased (after leading comments and parentheses).
fn first_keyword(sql: &str) -> String {
    let mut rest = sql.trim_start();
    loop {
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, next)| next).trim_start();
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, next)| next).trim_start();
        } else if let Some(after) = rest.strip_prefix('(') {
            rest = after.trim_start();
        } else {
            break;
        }
    }
    rest.chars().take_while(|c| c.is_ascii_alphabetic()).collect::<String>().to_ascii_uppercase()
}

/// Why a statement that changes session settings is refused, after its first word.
const SESSION_SETTING_REFUSED: &str = "is not available: a session setting would stay on one of the tenant's \
                                       pooled connections and apply to some later statements only";

/// Whether `sql` calls `set_config` (any case, quoted or schema-qualified, anywhere in the
/// text, string literals and `DO` bodies included): the guard errs on the side of
/// refusing, since a false alarm only costs a rephrased statement.
fn calls_set_config(sql: &str) -> bool {
    let text = sql.to_ascii_lowercase().replace('"', "");
    text.match_indices("set_config").any(|(at, word)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].trim_start().chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') && after == Some('(')
    })
}

/// Whether a statement produces rows to print (rather than a count of rows affected).
fn returns_rows(first: &str, sql: &str) -> bool {
    matches!(first, "SELECT" | "WITH" | "VALUES" | "TABLE" | "SHOW" | "EXPLAIN" | "PRAGMA")
        || sql
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .any(|word| word.eq_ignore_ascii_case("RETURNING"))
}

/// The tenant's tables: those of its database or schema, or (table isolation) the shared
/// tables its rows are kept apart in, which are exactly those under the tenancy policy.
async fn list_tables(db: &TenantConnection) -> std::result::Result<String, String> {
    let sql = match (db.isolation(), db.get_database_backend()) {
        // The handle reaches exactly the tables the linked models declare.
        (Isolation::Table, DbBackend::Sqlite) => return declared_tables(),
        (_, DbBackend::Sqlite) => {
            "SELECT name AS \"table\" FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
             ORDER BY name"
                .to_owned()
        }
        (Isolation::Table, _) => format!(
            "SELECT tablename::text AS \"table\" FROM pg_policies WHERE schemaname = 'public' AND policyname = {} \
             ORDER BY 1",
            tenancy::sql::quote_literal(tenancy::rls::POLICY_NAME)
        ),
        // The handle's search_path is the tenant's schema alone (schema isolation), or the
        // tenant database's own (database isolation): current_schema() is the tenant's.
        _ => "SELECT table_name::text AS \"table\" FROM information_schema.tables \
              WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY 1"
            .to_owned(),
    };
    let rows =
        db.query_all_raw(Statement::from_string(db.get_database_backend(), sql)).await.map_err(|e| message(&e))?;
    Ok(format_rows(&rows))
}

/// The tables a table-isolated tenant on a SQLite master can reach: its scoped tables
/// and the shared ones the linked models declare.
fn declared_tables() -> std::result::Result<String, String> {
    let scoped = tenancy::scoped_models().map_err(|e| e.to_string())?;
    let shared = tenancy::shared_models().map_err(|e| e.to_string())?;
    let mut rows: Vec<Vec<String>> = scoped
        .iter()
        // Cache-scoped models that name a tenant column are scoped tables too.
        .filter(|model| model.scope().table_column().is_some())
        .map(|model| vec![model.table().to_owned(), "scoped".to_owned()])
        .chain(shared.iter().map(|model| {
            let access = if model.writable() { "shared" } else { "shared, read-only" };
            vec![model.table().to_owned(), access.to_owned()]
        }))
        .collect();
    rows.sort();
    if rows.is_empty() {
        return Ok("(0 rows: this binary links no #[tenant_scoped] or #[tenancy::shared] model)\n".to_owned());
    }
    Ok(format_table(&["table".to_owned(), "access".to_owned()], &rows))
}

/// The database's error inside `err`, if it is one.
fn database_error(err: &DbErr) -> Option<&dyn sea_orm::sqlx::error::DatabaseError> {
    match err {
        DbErr::Exec(RuntimeErr::SqlxError(sqlx)) | DbErr::Query(RuntimeErr::SqlxError(sqlx)) => {
            sqlx.as_database_error()
        }
        _ => None,
    }
}

/// The database's own message where there is one (`relation "x" does not exist`), without
/// sea-orm's wrapping.
fn message(err: &DbErr) -> String {
    database_error(err).map_or_else(|| err.to_string(), |db| db.message().to_owned())
}

/// The database's SQLSTATE code for `err`, if it has one.
fn sqlstate(err: &DbErr) -> Option<String> {
    database_error(err)?.code().map(|code| code.into_owned())
}

/// Rows as an aligned table, psql style, followed by the row count.
fn format_rows(rows: &[QueryResult]) -> String {
    let Some(first) = rows.first() else {
        return "(0 rows)\n".to_owned();
    };
    let header = first.column_names();
    let cells: Vec<Vec<String>> =
        rows.iter().map(|row| (0..header.len()).map(|i| cell(row, i).to_string()).collect()).collect();
    format_table(&header, &cells)
}

/// Cells under a header, aligned psql style, followed by the row count.
fn format_table(header: &[String], cells: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |row: &[String]| {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, width)| format!(" {cell:<width$} ")).collect();
        format!("{}\n", cells.join("|").trim_end())
    };
    let mut out = line(header);
    out.push_str(&widths.iter().map(|width| "-".repeat(width + 2)).collect::<Vec<_>>().join("+"));
    out.push('\n');
    for row in cells {
        out.push_str(&line(row));
    }
    out.push_str(&format!("({} row{})\n", cells.len(), if cells.len() == 1 { "" } else { "s" }));
    out
}

/// One value of a result row, as far as the driver decodes it.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Null,
    Integer(i64),
    Float(f64),
    Bool(bool),
    /// PostgreSQL `numeric`, in its exact decimal form.
    Numeric(String),
    /// A `json` / `jsonb` value.
    Json(serde_json::Value),
    /// Text, and every other value as text (dates, times, bytes, uuids, enums, ...).
    Text(String),
}

impl std::fmt::Display for Cell {
    /// As the tables show it: `NULL` for null, JSON in its JSON text, the rest as is.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cell::Null => f.write_str("NULL"),
            Cell::Integer(v) => write!(f, "{v}"),
            Cell::Float(v) => write!(f, "{v}"),
            Cell::Bool(v) => write!(f, "{v}"),
            Cell::Json(v) => write!(f, "{v}"),
            Cell::Numeric(v) | Cell::Text(v) => f.write_str(v),
        }
    }
}

impl Cell {
    /// The value in JSON: numbers as numbers (a `numeric` when a JSON number holds it
    /// exactly, else its decimal text; a float that is not finite as text), null as
    /// null, JSON as itself, everything else as a string.
    fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Cell::Null => Value::Null,
            Cell::Integer(v) => Value::from(*v),
            Cell::Float(v) => {
                serde_json::Number::from_f64(*v).map_or_else(|| Value::String(v.to_string()), Value::Number)
            }
            Cell::Bool(v) => Value::Bool(*v),
            Cell::Json(v) => v.clone(),
            Cell::Numeric(v) => exact_number(v).unwrap_or_else(|| Value::String(v.clone())),
            Cell::Text(v) => Value::String(v.clone()),
        }
    }
}

/// A decimal's text as a JSON number, when one holds it exactly: an integer that fits
/// 64 bits, or a fraction whose `f64` prints back to the same digits.
fn exact_number(decimal: &str) -> Option<serde_json::Value> {
    match decimal.split_once('.') {
        None => decimal.parse::<i64>().ok().map(serde_json::Value::from),
        Some((_, fraction)) => {
            let float: f64 = decimal.parse().ok()?;
            (format!("{float:.*}", fraction.len()) == decimal).then(|| serde_json::Value::from(float))
        }
    }
}

/// One value: the first Rust type the driver decodes the column as, tried from the most
/// specific; `<type>` text for a type with no decoder here (cast it to text in the query
/// to see it).
fn cell(row: &QueryResult, i: usize) -> Cell {
    macro_rules! try_as {
        ($ty:ty, $cell:expr) => {
            if let Ok(value) = row.try_get_by_index::<Option<$ty>>(i) {
                return value.map_or(Cell::Null, $cell);
            }
        };
    }
    try_as!(i64, Cell::Integer);
    try_as!(i32, |v| Cell::Integer(v.into()));
    try_as!(i16, |v| Cell::Integer(v.into()));
    try_as!(f64, Cell::Float);
    try_as!(f32, |v| Cell::Float(v.into()));
    try_as!(String, Cell::Text);
    try_as!(bool, Cell::Bool);
    try_as!(chrono::DateTime<chrono::Utc>, |v| Cell::Text(v.to_rfc3339()));
    try_as!(chrono::NaiveDateTime, |v| Cell::Text(v.to_string()));
    try_as!(chrono::NaiveDate, |v| Cell::Text(v.to_string()));
    try_as!(chrono::NaiveTime, |v| Cell::Text(v.to_string()));
    try_as!(serde_json::Value, Cell::Json);
    try_as!(Vec<u8>, |v| Cell::Text(format!("\\x{}", v.iter().map(|b| format!("{b:02x}")).collect::<String>())));
    postgres_fallback(row, i).unwrap_or_else(|| Cell::Text("<?>".to_owned()))
}

/// PostgreSQL values without a Rust decoder above: `numeric` and `uuid` decoded from
/// their binary form, other text-like types (enums, `citext`, ...) shown as their UTF-8
/// bytes, anything else as `<type>`.
fn postgres_fallback(row: &QueryResult, i: usize) -> Option<Cell> {
    let value = row.try_as_pg_row()?.try_get_raw(i).ok()?;
    if value.is_null() {
        return Some(Cell::Null);
    }
    let type_name = value.type_info().name().to_owned();
    let bytes = value.as_bytes().ok()?;
    let decoded = match type_name.as_str() {
        "NUMERIC" => numeric(bytes).map(Cell::Numeric),
        "UUID" if bytes.len() == 16 => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            Some(Cell::Text(format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])))
        }
        _ => std::str::from_utf8(bytes)
            .ok()
            .filter(|s| !s.chars().any(char::is_control))
            .map(|s| Cell::Text(s.to_owned())),
    };
    Some(decoded.unwrap_or_else(|| Cell::Text(format!("<{}>", type_name.to_lowercase()))))
}

/// PostgreSQL's binary `numeric`: digit count, weight, sign, display scale (each 16 bits,
/// big-endian), then base-10000 digits.
fn numeric(bytes: &[u8]) -> Option<String> {
    let word = |at: usize| bytes.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let (ndigits, weight, sign, dscale) = (word(0)? as usize, word(2)? as i16, word(4)?, word(6)? as usize);
    match sign {
        0xC000 => return Some("NaN".to_owned()),
        0xD000 => return Some("Infinity".to_owned()),
        0xF000 => return Some("-Infinity".to_owned()),
        _ => {}
    }
    let digits: Vec<u16> = (0..ndigits).map(|k| word(8 + 2 * k)).collect::<Option<_>>()?;
    let digit = |position: i32| -> u16 {
        // The base-10000 digit at `position` (0 = units, -1 = first fractional group).
        let index = i32::from(weight) - position;
        usize::try_from(index).ok().and_then(|index| digits.get(index)).copied().unwrap_or(0)
    };
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        for position in (0..=i32::from(weight)).rev() {
            let group = digit(position);
            if position == i32::from(weight) {
                out.push_str(&group.to_string());
            } else {
                out.push_str(&format!("{group:04}"));
            }
        }
    }
    if dscale > 0 {
        let mut fraction = String::new();
        let mut position = -1;
        while fraction.len() < dscale {
            fraction.push_str(&format!("{:04}", digit(position)));
            position -= 1;
        }
        fraction.truncate(dscale);
        out.push('.');
        out.push_str(&fraction);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_and_row_returning_statements() {
        assert_eq!(first_keyword("  -- note\n /* c */ (select 1)"), "SELECT");
        assert!(returns_rows("SELECT", "select 1"));
        assert!(returns_rows("INSERT", "insert into t values (1) returning id"));
        assert!(!returns_rows("INSERT", "insert into returning_things values (1)"));
        assert!(!returns_rows("UPDATE", "update t set a = 1"));
    }

    #[test]
    fn set_config_calls_are_recognised_however_spelled() {
        for sql in [
            "SELECT set_config('role', 'x', false)",
            "select SET_CONFIG ('search_path', 'x', false)",
            "SELECT pg_catalog.set_config('a.b', 'c', false)",
            "SELECT \"set_config\"('a.b', 'c', false)",
            "SELECT 1 FROM projects WHERE (set_config('a.b', 'c', true)) IS NOT NULL",
        ] {
            assert!(calls_set_config(sql), "{sql}");
        }
        for sql in ["SELECT my_set_config('x')", "SELECT set_config_value FROM settings", "SELECT current_setting('x')"]
        {
            assert!(!calls_set_config(sql), "{sql}");
        }
    }

    #[test]
    fn cells_in_json_keep_their_types() {
        use serde_json::json;
        assert_eq!(Cell::Null.to_json(), json!(null));
        assert_eq!(Cell::Integer(7).to_json(), json!(7));
        assert_eq!(Cell::Float(0.5).to_json(), json!(0.5));
        assert_eq!(Cell::Float(f64::NAN).to_json(), json!("NaN"));
        assert_eq!(Cell::Text("7".to_owned()).to_json(), json!("7"));
        assert_eq!(Cell::Json(json!({"a": [1]})).to_json(), json!({"a": [1]}));
        // A numeric is a number when a JSON number holds it exactly, else its digits.
        assert_eq!(Cell::Numeric("2.50".to_owned()).to_json(), json!(2.5));
        assert_eq!(Cell::Numeric("-12".to_owned()).to_json(), json!(-12));
        for exact in ["123456789012345678901234567890", "0.10000000000000000001", "NaN"] {
            assert_eq!(Cell::Numeric(exact.to_owned()).to_json(), json!(exact));
        }
        assert_eq!(Cell::Numeric("2.50".to_owned()).to_string(), "2.50");
        assert_eq!(Cell::Json(json!("s")).to_string(), "\"s\"");
    }

    #[test]
    fn numerics_decode_from_binary() {
        // 12345.678 → ndigits 3, weight 1, sign +, dscale 3, digits [1, 2345, 6780]
        let bytes: Vec<u8> = [3_u16, 1, 0, 3, 1, 2345, 6780].iter().flat_map(|w| w.to_be_bytes()).collect();
        assert_eq!(numeric(&bytes).unwrap(), "12345.678");
        // -0.05 → ndigits 1, weight -1, sign -, dscale 2, digits [500]
        let bytes: Vec<u8> = [1_u16, 0xFFFF, 0x4000, 2, 500].iter().flat_map(|w| w.to_be_bytes()).collect();
        assert_eq!(numeric(&bytes).unwrap(), "-0.05");
        // 0 → no digits
        let bytes: Vec<u8> = [0_u16, 0, 0, 0].iter().flat_map(|w| w.to_be_bytes()).collect();
        assert_eq!(numeric(&bytes).unwrap(), "0");
    }
}
