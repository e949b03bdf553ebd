//! `createtenantsuperuser`: create an administrator inside one tenant.

use std::process::ExitCode;

use clap::Parser;
use sea_orm::SqlErr;
use tenancy::secrets::Password;
use tenancy::{Isolation, Tenancy, TenantId, TenantStatus};

use super::Exit;
use super::prompt::Prompter;
use crate::accounts::{self, Accounts, NewSuperuser, SuperuserStore};
use crate::migrator::Migrators;
use crate::{Error, Result};

/// Environment variable holding the new administrator's password for scripts
/// (`--no-input`, or no terminal).
pub const SUPERUSER_PASSWORD_ENV: &str = "TENANT_SUPERUSER_PASSWORD";

/// Create an administrator (superuser) inside one tenant: in its database or schema, or
/// among its rows of the shared user table (table isolation), through the same tenant
/// handle the application uses.
///
/// Asks for every value not given as a flag when run on a terminal: the tenant (a list of
/// the ready tenants), the username, the email address and the password (hidden, typed
/// twice). Without a terminal, or with --no-input, a missing value is an error and the
/// password comes from TENANT_SUPERUSER_PASSWORD, never from a flag. The password is
/// stored only as an argon2id hash.
///
/// Password policy: at least 10 characters, not only digits, not the username or the
/// email address.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "createtenantsuperuser",
    after_help = Exit::after_help(
        "Environment:\n  \
        DATABASE_URL               master database (default: sqlite://tenancy.db?mode=rwc)\n  \
        TENANT_SUPERUSER_PASSWORD  the administrator's password (read when --no-input is given or there is no terminal)\n  \
        TENANCY_SECRET_KEY(_FILE)  key that decrypts a database tenant's stored password",
        &[
            (Exit::Success, Some("created")),
            (Exit::Failed, Some("failed (nothing written)")),
            (Exit::InvalidInput, Some("invalid input (username, email, weak password, missing value, cache tenant)")),
            (Exit::AlreadyExists, Some("username exists in the tenant")),
            (Exit::CannotConnect, Some("cannot connect")),
            (Exit::SecretKey, None),
            (Exit::NotFound, None),
            (Exit::Cancelled, None),
        ],
    )
)]
pub struct CreateTenantSuperuserArgs {
    /// The tenant to create the administrator in
    #[arg(long, value_name = "ID")]
    pub tenant: Option<TenantId>,

    /// Login name: letters, digits and @ . + - _ (at most 150 characters), unique in the tenant
    #[arg(long, value_name = "NAME")]
    pub username: Option<String>,

    /// Email address
    #[arg(long, value_name = "EMAIL")]
    pub email: Option<String>,

    /// Never prompt: a value that is not given is an error; the password comes from TENANT_SUPERUSER_PASSWORD
    #[arg(long)]
    pub no_input: bool,

    /// The master database.
    #[command(flatten)]
    pub master: super::MasterArgs,
}

/// Runs `createtenantsuperuser` with the process's arguments, for the application whose
/// [`Migrators`] are given, storing the administrator in the accounts module's
/// `tenant_users` table.
///
/// Nothing is migrated: taking the application's migrators makes the binary link the
/// application's crate, and with it the registrations of its `#[tenant_scoped]` and
/// `#[tenancy::shared]` models, which a table-isolated tenant's handle on a SQLite master
/// needs to reach any table (see [`super::tenantshell`]).
pub async fn createtenantsuperuser(migrators: Migrators) -> ExitCode {
    match super::parse_args() {
        Ok(args) => createtenantsuperuser_with_store(args, migrators, Accounts).await,
        Err(code) => code,
    }
}

/// Runs `createtenantsuperuser` with parsed arguments, the application's [`Migrators`]
/// (see [`createtenantsuperuser`] for why) and its own [`SuperuserStore`]; returns the
/// exit code.
pub async fn createtenantsuperuser_with_store<S: SuperuserStore>(
    args: CreateTenantSuperuserArgs,
    migrators: Migrators,
    store: S,
) -> ExitCode {
    // Held, not used: the value is what links the application's models.
    let _linked = migrators;
    match run(args, &store).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => super::report_error(&err),
    }
}

/// Runs a blocking prompt off the async workers (inquire blocks on the terminal).
async fn ask<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    super::blocking(f).await?
}

async fn run<S: SuperuserStore>(args: CreateTenantSuperuserArgs, store: &S) -> Result<()> {
    let prompter = Prompter::new(args.no_input);
    // Everything given on the command line is checked before anything is connected to.
    let tenant_id = args.tenant.clone();
    let username = args.username.as_deref().map(str::trim).map(str::to_owned);
    if let Some(username) = &username {
        accounts::check_username(username)?;
    }
    let email = args.email.as_deref().map(str::trim).map(str::to_owned);
    if let Some(email) = &email {
        accounts::check_email(email)?;
    }
    let password_env =
        std::env::var(SUPERUSER_PASSWORD_ENV).ok().filter(|password| !password.is_empty()).map(Password::new);

    let tenancy = args.master.connect().await?;
    let tenant_id = match tenant_id {
        Some(id) => id,
        None => choose_tenant(&tenancy, prompter).await?,
    };
    let db = tenancy.tenant(&tenant_id).await?;
    // A wrong secret key or an unreachable server is reported as such, with its exit code.
    db.ping().await?;
    if db.isolation() == Isolation::Cache {
        return Err(Error::NoRelationalStorage { tenant: tenant_id.to_string(), what: "a superuser" });
    }

    let username = match username {
        Some(username) => username,
        None => {
            ask(move || {
                prompter.text("Enter username:", "--username <NAME>", "username", |input| {
                    accounts::check_username(input).map_err(|e| e.to_string())
                })
            })
            .await?
        }
    };
    // Before the password is asked for: a taken name (or a missing user table) is known now.
    let accounts_error = |source| Error::Accounts { tenant: tenant_id.to_string(), source };
    if store.username_exists(&db, &username).await.map_err(accounts_error)? {
        return Err(Error::UsernameTaken { tenant: tenant_id.to_string(), username });
    }

    let email = match email {
        Some(email) => email,
        None => {
            ask(move || {
                prompter.text("Enter email address:", "--email <EMAIL>", "email address", |input| {
                    accounts::check_email(input).map_err(|e| e.to_string())
                })
            })
            .await?
        }
    };
    let password = match password_env {
        Some(password) => {
            accounts::check_password(password.expose(), &username, &email)?;
            password
        }
        None => {
            let (name, mail) = (username.clone(), email.clone());
            ask(move || {
                prompter.new_password(
                    "Enter password:",
                    "Enter password again:",
                    "password",
                    SUPERUSER_PASSWORD_ENV,
                    move |input| accounts::check_password(input, &name, &mail).map_err(|e| e.to_string()),
                )
            })
            .await?
        }
    };
    // argon2id is deliberately slow: keep it off the async workers.
    let password_hash = super::blocking(move || accounts::hash_password(&password)).await??;

    let user = NewSuperuser { username, email, password_hash };
    store.insert_superuser(&db, &user).await.map_err(|err| match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => {
            Error::UsernameTaken { tenant: tenant_id.to_string(), username: user.username.clone() }
        }
        _ => accounts_error(err),
    })?;
    println!(
        "✓ Superuser '{}' created in tenant '{tenant_id}' ({} isolation, {})",
        user.username,
        db.isolation(),
        tenancy.describe_location(db.tenant())
    );
    Ok(())
}

/// A ready tenant with relational storage, as the selection list shows it.
struct Choice(tenancy::Tenant);

impl std::fmt::Display for Choice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, {})", self.0.id(), self.0.name(), self.0.isolation())
    }
}

/// Asks for the tenant from the list of ready tenants that can hold users.
async fn choose_tenant(tenancy: &Tenancy, prompter: Prompter) -> Result<TenantId> {
    // A missing tenant with no terminal is reported as such, whatever the registry holds.
    if !prompter.is_interactive() {
        return Err(prompter.missing("tenant", "--tenant <ID>"));
    }
    let choices: Vec<Choice> = tenancy
        .tenants()
        .await?
        .into_iter()
        .filter(|t| t.status() == TenantStatus::Ready && t.isolation().has_relational_storage())
        .map(Choice)
        .collect();
    if choices.is_empty() {
        return Err(Error::NoTenants);
    }
    let choice = ask(move || prompter.select("Select tenant:", "--tenant <ID>", "tenant", choices)).await?;
    Ok(choice.0.id().clone())
}
