//! The tenant context: which tenant the code deep inside a request works for.
//!
//! [`scope`] runs a future with a tenant in scope, [`current`] reads it from anywhere
//! inside, and [`spawn`] starts a task that keeps it. It is a tokio task-local, so it
//! follows the future it was set on, across `.await`s and threads, and nowhere else: a
//! plain `tokio::spawn` starts a task *without* the tenant (tokio's task-locals are not
//! inherited), which is why [`spawn`] exists.
//!
//! No tenant in scope is always an error ([`Error::NoTenantInScope`]), never a
//! fall-back to shared data.
//!
//! ```no_run
//! use sea_orm::ConnectionTrait;
//!
//! async fn deep_inside_the_request() -> Result<(), Box<dyn std::error::Error>> {
//!     let db = tenancy::current()?;
//!     db.execute_unprepared("UPDATE projects SET name = upper(name)").await?;
//!     Ok(())
//! }
//!
//! # async fn demo(tenancy: tenancy::Tenancy) -> Result<(), Box<dyn std::error::Error>> {
//! let acme = tenancy.tenant("acme").await?;
//! tenancy::scope(acme, deep_inside_the_request()).await?;
//! # Ok(()) }
//! ```

use std::future::Future;

use crate::{Error, Result, TenantConnection};

tokio::task_local! {
    static CURRENT: TenantConnection;
}

/// Runs `f` with `tenant` in scope: inside it, [`current`] returns `tenant`.
///
/// Scopes nest; the innermost wins, and the outer tenant is back once the inner scope's
/// future completes.
pub async fn scope<F: Future>(tenant: TenantConnection, f: F) -> F::Output {
    CURRENT.scope(tenant, f).await
}

/// The tenant in scope.
///
/// # Errors
/// [`Error::NoTenantInScope`] outside any [`scope`] (including inside a task started by
/// a plain `tokio::spawn`).
pub fn current() -> Result<TenantConnection> {
    CURRENT.try_with(TenantConnection::clone).map_err(|_| Error::NoTenantInScope)
}

/// Spawns `f` as a tokio task with the current tenant in scope, as [`tokio::spawn`]
/// would, but keeping the tenant.
///
/// # Errors
/// [`Error::NoTenantInScope`] when there is no tenant to carry: use [`tokio::spawn`]
/// for work that belongs to no tenant, or [`scope`] the task yourself.
///
/// # Panics
/// As [`tokio::spawn`], when called outside a tokio runtime.
pub fn spawn<F>(f: F) -> Result<tokio::task::JoinHandle<F::Output>>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let tenant = current()?;
    Ok(tokio::spawn(CURRENT.scope(tenant, f)))
}
