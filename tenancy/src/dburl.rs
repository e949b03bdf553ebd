//! Database URLs: which backend a URL names, where a SQLite file lives, and how to
//! print a URL without its password.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The master database used when `DATABASE_URL` is not set: a SQLite file in the
/// working folder, created on first use.
pub const DEFAULT_MASTER_URL: &str = "sqlite://tenancy.db?mode=rwc";

/// The master database URL from the environment: `DATABASE_URL`, or
/// [`DEFAULT_MASTER_URL`] when it is unset or empty.
pub fn master_url_from_env() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_MASTER_URL.to_owned())
}

/// The kinds of master database `tenancy` supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL: every isolation mode.
    Postgres,
    /// SQLite: database (one file per tenant), table and cache isolation.
    Sqlite,
}

impl Backend {
    /// The backend a master database URL names, checked the way [`crate::Tenancy::connect`]
    /// checks it, without connecting.
    ///
    /// # Errors
    /// [`Error::UnsupportedUrl`] for anything but PostgreSQL and SQLite URLs.
    pub fn of_url(url: &str) -> Result<Backend> {
        MasterUrl::parse(url).map(|parsed| parsed.backend)
    }

    /// The product name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "PostgreSQL",
            Backend::Sqlite => "SQLite",
        }
    }
}

/// A parsed master database URL.
#[derive(Clone)]
pub(crate) struct MasterUrl {
    pub(crate) raw: String,
    pub(crate) backend: Backend,
    /// The folder tenant database files go in (SQLite only).
    pub(crate) sqlite_dir: Option<PathBuf>,
}

impl std::fmt::Debug for MasterUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterUrl").field("url", &redact_url(&self.raw)).field("backend", &self.backend).finish()
    }
}

impl MasterUrl {
    pub(crate) fn parse(raw: &str) -> Result<Self> {
        let raw = raw.trim();
        let scheme = raw.split(':').next().unwrap_or_default().to_ascii_lowercase();
        match scheme.as_str() {
            "postgres" | "postgresql" => {
                url::Url::parse(raw).map_err(|_| Error::UnsupportedUrl {
                    url: redact_url(raw),
                    reason: "it is not a valid URL (expected postgres://user:password@host:port/database)",
                })?;
                Ok(Self { raw: raw.to_owned(), backend: Backend::Postgres, sqlite_dir: None })
            }
            "sqlite" => {
                let dir = sqlite_path(raw).map(|path| {
                    path.parent()
                        .filter(|dir| !dir.as_os_str().is_empty())
                        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
                });
                Ok(Self { raw: raw.to_owned(), backend: Backend::Sqlite, sqlite_dir: dir })
            }
            _ => Err(Error::UnsupportedUrl {
                url: redact_url(raw),
                reason: "supported master databases are postgres://… and sqlite://…",
            }),
        }
    }
}

/// The file a `sqlite:` URL names, or `None` for an in-memory database.
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" { None } else { Some(PathBuf::from(path)) }
}

/// The SQLite URL of a file, created on first connection when `create` is true.
pub(crate) fn sqlite_url(path: &Path, create: bool) -> String {
    let mode = if create { "rwc" } else { "rw" };
    format!("sqlite://{}?mode={mode}", path.display())
}

/// `url` with its password replaced by `***`, for messages and logs.
///
/// ```
/// assert_eq!(
///     tenancy::redact_url("postgres://app:s3cret@db:5432/main"),
///     "postgres://app:***@db:5432/main"
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Setting a password only fails for URLs that cannot have one, and this one has.
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        // An unparsable URL may still hold a secret: keep only the scheme.
        Err(_) => format!("{}://…", url.split(':').next().unwrap_or("?")),
    }
}

/// Builds a PostgreSQL URL from parts, percent-encoding the user and password.
pub(crate) fn postgres_url(
    user: &str,
    password: Option<&str>,
    host: &str,
    port: u16,
    database: &str,
) -> Result<url::Url> {
    let host_part = if host.contains(':') { format!("[{host}]") } else { host.to_owned() };
    let mut url = url::Url::parse(&format!("postgres://{host_part}:{port}/{database}"))
        .map_err(|_| Error::InvalidHost { given: host.to_owned() })?;
    let bad_host = || Error::InvalidHost { given: host.to_owned() };
    url.set_username(user).map_err(|()| bad_host())?;
    url.set_password(password).map_err(|()| bad_host())?;
    Ok(url)
}

/// Validates a host name or IP address given for a tenant's database server.
pub(crate) fn check_host(host: &str) -> Result<()> {
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
    if valid { Ok(()) } else { Err(Error::InvalidHost { given: host.to_owned() }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths() {
        let url = MasterUrl::parse("sqlite://tenancy.db?mode=rwc").unwrap();
        assert_eq!(url.backend, Backend::Sqlite);
        assert_eq!(url.sqlite_dir.unwrap(), PathBuf::from("."));
        let url = MasterUrl::parse("sqlite:///var/lib/app/master.db").unwrap();
        assert_eq!(url.sqlite_dir.unwrap(), PathBuf::from("/var/lib/app"));
        assert!(MasterUrl::parse("sqlite::memory:").unwrap().sqlite_dir.is_none());
    }

    #[test]
    fn unsupported() {
        let err = MasterUrl::parse("mysql://root:pw@localhost/db").unwrap_err().to_string();
        assert!(err.contains("mysql://root:***@localhost/db"), "{err}");
        assert!(!err.contains("pw@"), "{err}");
    }

    #[test]
    fn builds_encoded_postgres_urls() {
        let url = postgres_url("acme_user", Some("p@ss:/w"), "localhost", 5432, "acme_db").unwrap();
        assert_eq!(url.as_str(), "postgres://acme_user:p%40ss%3A%2Fw@localhost:5432/acme_db");
        assert_eq!(redact_url(url.as_str()), "postgres://acme_user:***@localhost:5432/acme_db");
    }

    #[test]
    fn hosts() {
        assert!(check_host("db-1.internal").is_ok());
        assert!(check_host("127.0.0.1").is_ok());
        assert!(check_host("").is_err());
        assert!(check_host("a b").is_err());
        assert!(check_host("x/y").is_err());
    }
}
