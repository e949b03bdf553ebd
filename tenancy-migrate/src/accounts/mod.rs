//! An optional accounts module: a `tenant_users` table for the administrators (and users)
//! of each tenant, which `createtenantsuperuser` writes to.
//!
//! # Using it
//!
//! Add its migration to the application's **tenant** migrator, after the application's
//! own migrations. The tenant migrator creates the table wherever the tenant's data
//! lives: in each tenant's database or schema, or, for table isolation, once in the
//! master database's shared tables, where row-level security then keeps each tenant to
//! its own users (the entity is `#[tenant_scoped]`, so `tenancy::enable_row_security`
//! covers it like any scoped model):
//!
//! ```
//! use sea_orm_migration::prelude::*;
//!
//! pub struct Migrator;
//!
//! impl MigratorTrait for Migrator {
//!     fn migrations() -> Vec<Box<dyn MigrationTrait>> {
//!         let mut migrations: Vec<Box<dyn MigrationTrait>> = vec![
//!             // Box::new(m20260101_000001_create_projects::Migration), ...
//!         ];
//!         migrations.extend(tenancy_migrate::accounts::migrations());
//!         migrations
//!     }
//! }
//! # assert_eq!(Migrator::migrations().len(), 1);
//! ```
//!
//! then run `migratetenant` / `migratealltenants`. An application with a user table of its
//! own implements [`SuperuserStore`] instead and passes it to
//! [`crate::cli::createtenantsuperuser_with_store`].
//!
//! # Passwords
//!
//! Passwords are hashed with argon2id (the `argon2` crate's defaults: version 0x13,
//! 19 MiB, 2 passes, 1 lane) and a random 16-byte salt, and stored as the PHC string
//! `$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`. [`verify_password`] checks a password
//! against it. [`check_password`] is the policy `createtenantsuperuser` applies:
//!
//! - at least [`MIN_PASSWORD_CHARS`] characters and at most [`MAX_PASSWORD_CHARS`];
//! - not only digits;
//! - not the username or the email address (compared without regard to case).

pub mod migration;
pub mod tenant_user;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use sea_orm::{ActiveModelTrait, ColumnTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, Set};
use sea_orm_migration::MigrationTrait;
use tenancy::secrets::Password;
use tenancy::{BoxFuture, TenantConnection};

use crate::{Error, Result};

/// The accounts module's tenant migrations, in order, to append to the application's
/// tenant migrator (see the module docs).
pub fn migrations() -> Vec<Box<dyn MigrationTrait>> {
    vec![Box::new(migration::CreateTenantUsers)]
}

/// The shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 10;

/// The longest password accepted, in characters (hashing cost stays bounded).
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// The longest username accepted, in characters.
pub const MAX_USERNAME_CHARS: usize = 150;

/// The longest email address accepted, in characters.
pub const MAX_EMAIL_CHARS: usize = 254;

/// Checks a username: 1 to [`MAX_USERNAME_CHARS`] characters, each a letter, a digit or
/// one of `@ . + - _` (Django's rule).
///
/// # Errors
/// [`Error::InvalidUsername`] saying what is wrong.
pub fn check_username(username: &str) -> Result<()> {
    let invalid = |reason: String| Error::InvalidUsername { given: username.to_owned(), reason };
    if username.is_empty() {
        return Err(invalid("it is empty".to_owned()));
    }
    if username.chars().count() > MAX_USERNAME_CHARS {
        return Err(invalid(format!("it is longer than {MAX_USERNAME_CHARS} characters")));
    }
    if let Some(c) = username.chars().find(|c| !(c.is_alphanumeric() || "@.+-_".contains(*c))) {
        return Err(invalid(format!("it contains {c:?}; use letters, digits and @ . + - _ only")));
    }
    Ok(())
}

/// Checks an email address: `local@domain`, one `@`, a dot in the domain, no spaces, at
/// most [`MAX_EMAIL_CHARS`] characters. (Whether it receives mail is not checked.)
///
/// # Errors
/// [`Error::InvalidEmail`].
pub fn check_email(email: &str) -> Result<()> {
    let valid = email.chars().count() <= MAX_EMAIL_CHARS
        && !email.chars().any(char::is_whitespace)
        && match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.split('.').count() >= 2
                    && domain.split('.').all(|part| !part.is_empty())
            }
            None => false,
        };
    if valid { Ok(()) } else { Err(Error::InvalidEmail { given: email.to_owned() }) }
}

/// Applies the password policy of the module docs. The password itself never appears in
/// the error.
///
/// # Errors
/// [`Error::WeakPassword`] naming the rule that failed.
pub fn check_password(password: &str, username: &str, email: &str) -> Result<()> {
    let weak = |reason: String| Err(Error::WeakPassword { reason });
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return weak(format!("it is shorter than {MIN_PASSWORD_CHARS} characters"));
    }
    if chars > MAX_PASSWORD_CHARS {
        return weak(format!("it is longer than {MAX_PASSWORD_CHARS} characters"));
    }
    if password.chars().all(|c| c.is_ascii_digit()) {
        return weak("it consists of digits only".to_owned());
    }
    let lower = password.to_lowercase();
    if lower == username.to_lowercase() {
        return weak("it is the username".to_owned());
    }
    if lower == email.to_lowercase() {
        return weak("it is the email address".to_owned());
    }
    Ok(())
}

/// Hashes `password` with argon2id and a fresh random salt; returns the PHC string.
///
/// # Errors
/// [`Error::PasswordHash`] when the system's random source or the hasher fails.
pub fn hash_password(password: &Password) -> Result<String> {
    let mut salt = [0_u8; 16];
    getrandom::fill(&mut salt).map_err(|err| Error::PasswordHash { reason: err.to_string() })?;
    let salt = SaltString::encode_b64(&salt).map_err(|err| Error::PasswordHash { reason: err.to_string() })?;
    Argon2::default()
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| Error::PasswordHash { reason: err.to_string() })
}

/// Whether `password` matches the PHC string `hash` (any algorithm the `argon2` crate
/// reads: argon2id, argon2i, argon2d). A malformed hash is a mismatch.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
}

/// A new administrator, ready to store: validated, password already hashed.
#[derive(Clone, PartialEq, Eq)]
pub struct NewSuperuser {
    /// The login name (checked by [`check_username`]).
    pub username: String,
    /// The email address (checked by [`check_email`]).
    pub email: String,
    /// The argon2id PHC string of the password ([`hash_password`]).
    pub password_hash: String,
}

impl std::fmt::Debug for NewSuperuser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The hash is not the password, but it is still what an offline attack starts from.
        f.debug_struct("NewSuperuser")
            .field("username", &self.username)
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// Where `createtenantsuperuser` stores administrators: the accounts module's
/// `tenant_users` ([`Accounts`], the default) or an application's own user table.
///
/// Both methods receive the tenant's handle, so whatever they run is scoped to the tenant
/// (its database, its schema, or its rows under row-level security) like any other
/// sea-orm call through the handle.
pub trait SuperuserStore: Send + Sync {
    /// Whether `username` is taken in the tenant. Also the probe that the user table
    /// exists: an error here is reported before the password is asked for.
    fn username_exists<'a>(&'a self, db: &'a TenantConnection, username: &'a str)
    -> BoxFuture<'a, Result<bool, DbErr>>;

    /// Stores the administrator. A unique-constraint violation on the username is
    /// reported as "username taken" (two runs racing for one name).
    fn insert_superuser<'a>(
        &'a self,
        db: &'a TenantConnection,
        user: &'a NewSuperuser,
    ) -> BoxFuture<'a, Result<(), DbErr>>;
}

/// The default [`SuperuserStore`]: the accounts module's `tenant_users` table.
#[derive(Debug, Clone, Copy, Default)]
pub struct Accounts;

impl SuperuserStore for Accounts {
    fn username_exists<'a>(
        &'a self,
        db: &'a TenantConnection,
        username: &'a str,
    ) -> BoxFuture<'a, Result<bool, DbErr>> {
        Box::pin(async move {
            let found =
                tenant_user::Entity::find().filter(tenant_user::Column::Username.eq(username)).count(db).await?;
            Ok(found > 0)
        })
    }

    fn insert_superuser<'a>(
        &'a self,
        db: &'a TenantConnection,
        user: &'a NewSuperuser,
    ) -> BoxFuture<'a, Result<(), DbErr>> {
        Box::pin(async move {
            // Set explicitly in every mode: database and schema tenants have no column
            // default, and in table mode the row-level security check accepts only this
            // tenant's id anyway.
            tenant_user::ActiveModel {
                tenant_id: Set(db.id().to_string()),
                username: Set(user.username.clone()),
                email: Set(user.email.clone()),
                password_hash: Set(user.password_hash.clone()),
                is_superuser: Set(true),
                created_at: Set(chrono::Utc::now()),
                ..Default::default()
            }
            .insert(db)
            .await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        assert!(check_password("correct horse", "admin", "a@b.co").is_ok());
        for (password, why) in [
            ("short1", "shorter than 10"),
            ("12345678901", "digits only"),
            ("AdministratorX", "the username"),
            ("a@example.com", "the email address"),
        ] {
            let err = check_password(password, "administratorx", "a@example.com").unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
            assert!(!err.contains(password), "{err}");
        }
        assert!(check_username("ad.min+1@x").is_ok());
        assert!(check_username("").is_err());
        assert!(check_username("has space").is_err());
        assert!(check_email("a@example.com").is_ok());
        for bad in ["a", "a@b", "@b.co", "a@@b.co", "a b@c.de", "a@b..c"] {
            assert!(check_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hashes_are_argon2id_salted_and_verify() {
        let password = Password::new("correct horse battery");
        let first = hash_password(&password).unwrap();
        let second = hash_password(&password).unwrap();
        assert!(first.starts_with("$argon2id$v=19$"), "{first}");
        assert_ne!(first, second, "each hash has its own salt");
        assert!(!first.contains("correct horse"));
        assert!(verify_password("correct horse battery", &first));
        assert!(!verify_password("correct horse battery!", &first));
        assert!(!verify_password("x", "not a hash"));
    }
}
