//! Background jobs that keep their tenant across a queue.
//!
//! A job queued while serving a tenant must run for that tenant, and for nobody else, when
//! a worker picks it up: later, in another task, maybe in another process. Frameworks
//! that keep the current tenant in a global (or a thread-local set and reset around each
//! job) have run jobs under the previous job's tenant, or under none, when a reset was
//! missed. Here the tenant travels *with* the job, and a job runs inside
//! [`scope`](crate::scope), a task-local that belongs to the job's own future: it cannot
//! outlive the job, nor reach the next job on the same worker, even when one task polls
//! many jobs at once.
//!
//! - [`TenantJob`] is the envelope: the tenant id and the job, serializable with serde, so
//!   it crosses any queue (a channel, a Redis list, a database table) as JSON:
//!   `{"tenant":"acme","job":{...}}`. It is made from the tenant in scope
//!   ([`TenantJob::in_current_scope`], an error outside a scope) or for a named tenant
//!   ([`TenantJob::new`]); there is no envelope without a tenant.
//! - [`Tenancy::run_job`] runs one: it resolves the tenant *when the job runs*, through
//!   the live registry ([`Tenancy::tenant`]), opens its pool, and runs the job inside the
//!   tenant's scope, where [`current`](crate::current) (and every sea-orm call through
//!   that handle) reaches only that tenant's data. [`Tenancy::spawn_job`] does the same
//!   in a new tokio task.
//! - A tenant that cannot be served then refuses the job with [`Error::JobRefused`]: the
//!   job did not start, and its [`Disposition`] says what the queue should do with it.
//!   Only a tenant that is provably gone (no longer registered, or being deleted) makes
//!   it [`Disposition::Discard`]; anything else (suspended, being moved, still being
//!   created or renamed, its server unreachable, the registry unreadable) is
//!   [`Disposition::RetryLater`], so no job is lost to a passing condition.
//! - With the `apalis` feature, `apalis::TenantJobLayer` does this for the workers of
//!   [apalis](https://docs.rs/apalis) (the `apalis` module says why apalis).
//!
//! ```no_run
//! # async fn demo(tenancy: tenancy::Tenancy) -> Result<(), Box<dyn std::error::Error>> {
//! use tenancy::jobs::{Disposition, TenantJob};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct SendInvoice {
//!     invoice: i32,
//! }
//!
//! // While serving acme's request: the envelope takes the tenant from the scope.
//! let acme = tenancy.tenant("acme").await?;
//! let queued = tenancy::scope(acme, async { TenantJob::in_current_scope(SendInvoice { invoice: 7 }) }).await?;
//! let json = serde_json::to_string(&queued)?;
//! // ... the JSON crosses the queue; on the worker:
//! let job: TenantJob<SendInvoice> = serde_json::from_str(&json)?;
//! match tenancy
//!     .run_job(job, |job| async move {
//!         let db = tenancy::current()?; // acme's handle, and only acme's
//!         // ... load invoice `job.invoice` through `&db` and send it
//!         Ok::<_, tenancy::Error>(())
//!     })
//!     .await
//! {
//!     Ok(outcome) => outcome?, // the job ran; this is what it returned
//!     Err(refused) => match refused.job_disposition() {
//!         Some(Disposition::RetryLater) => { /* leave the message on the queue */ }
//!         _ => { /* the tenant is gone: drop (or dead-letter) the message */ }
//!     },
//! }
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::{Error, Result, Tenancy, TenantConnection, TenantId, TenantStatus};

#[cfg(feature = "apalis")]
#[cfg_attr(docsrs, doc(cfg(feature = "apalis")))]
pub mod apalis;
mod tasks;

/// A job and the tenant it belongs to: what goes on the queue.
///
/// Serialized with serde as `{"tenant": "<id>", "job": <the job>}`; deserializing checks
/// the tenant id like [`TenantId::new`] does, so an envelope always names a valid tenant
/// (whether that tenant still exists is checked when the job runs).
///
/// ```
/// use tenancy::jobs::TenantJob;
///
/// let job = TenantJob::new("acme".parse()?, 42);
/// let json = serde_json::to_string(&job).unwrap();
/// assert_eq!(json, r#"{"tenant":"acme","job":42}"#);
/// let back: TenantJob<i32> = serde_json::from_str(&json).unwrap();
/// assert_eq!(back, job);
/// assert!(serde_json::from_str::<TenantJob<i32>>(r#"{"tenant":"Not An Id","job":1}"#).is_err());
/// assert!(serde_json::from_str::<TenantJob<i32>>(r#"{"job":1}"#).is_err());
/// # Ok::<(), tenancy::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TenantJob<T> {
    tenant: TenantId,
    job: T,
}

impl<T> TenantJob<T> {
    /// `job` for `tenant`.
    pub fn new(tenant: TenantId, job: T) -> Self {
        Self { tenant, job }
    }

    /// `job` for the tenant in scope ([`current`](crate::current)): what a request handler
    /// queues.
    ///
    /// # Errors
    /// [`Error::NoTenantInScope`] outside any [`scope`](crate::scope): a job with no
    /// tenant is not made, so it can never run as "whatever tenant the worker has".
    pub fn in_current_scope(job: T) -> Result<Self> {
        Ok(Self::new(crate::current()?.id().clone(), job))
    }

    /// The tenant the job runs for.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The job.
    pub fn job(&self) -> &T {
        &self.job
    }

    /// The job, without its tenant.
    pub fn into_job(self) -> T {
        self.job
    }
}

/// What a queue should do with a job whose tenant refused it ([`Error::JobRefused`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Disposition {
    /// The tenant exists but cannot be served now (suspended, being moved, created or
    /// renamed, its server unreachable, the registry unreadable): keep the job and try it
    /// again later. A renamed tenant's old id ends up unknown, and the job then
    /// [`Discard`](Disposition::Discard)ed: a job never follows a tenant to a new id.
    RetryLater,
    /// The tenant is gone (no longer registered, or being deleted): the job can never run.
    /// Drop it, or move it to a dead-letter queue.
    Discard,
}

impl fmt::Display for Disposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Disposition::RetryLater => "retry it later",
            Disposition::Discard => "discard it, the tenant is gone",
        })
    }
}

impl Disposition {
    /// What a failure to serve the tenant means for its jobs: only a tenant that is
    /// provably gone discards them.
    fn of(err: &Error) -> Self {
        match err {
            Error::TenantNotFound { .. } | Error::TenantNotReady { status: TenantStatus::Deleting, .. } => {
                Disposition::Discard
            }
            _ => Disposition::RetryLater,
        }
    }
}

impl Error {
    /// For [`Error::JobRefused`], what to do with the job; `None` for every other error
    /// (an error the job itself returned, say).
    pub fn job_disposition(&self) -> Option<Disposition> {
        match self {
            Error::JobRefused { disposition, .. } => Some(*disposition),
            _ => None,
        }
    }
}

/// The [`Error::JobRefused`] in `err` or among its causes: how a job framework's error
/// (which wraps the one a job service returned) is told apart from the job's own failure.
pub fn refusal<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Error> {
    let mut next = Some(err);
    while let Some(err) = next {
        if let Some(refused @ Error::JobRefused { .. }) = err.downcast_ref::<Error>() {
            return Some(refused);
        }
        next = err.source();
    }
    None
}

impl Tenancy {
    /// Runs `f` with the envelope's job inside its tenant's [`scope`](crate::scope), the
    /// tenant resolved now, through the live registry (see the [module](self)).
    ///
    /// The scope holds for the whole of `f`, the call that makes its future included, and
    /// ends with it: whatever runs next on the same task sees no tenant, or its own.
    ///
    /// # Errors
    /// [`Error::JobRefused`] when the tenant cannot be served: `f` was not called. What
    /// `f` returns is the `Ok` value, errors included.
    pub async fn run_job<T, F, Fut>(&self, job: TenantJob<T>, f: F) -> Result<Fut::Output>
    where
        F: FnOnce(T) -> Fut,
        Fut: Future,
    {
        let handle = self.job_handle(&job.tenant).await?;
        Ok(crate::scope(handle, async move { f(job.job).await }).await)
    }

    /// The handle a job of `tenant` runs with, its pool open (so an unreachable server
    /// refuses the job before it starts rather than failing it half-way), or the refusal.
    pub(crate) async fn job_handle(&self, tenant: &TenantId) -> Result<TenantConnection> {
        let handle = match self.tenant(tenant).await {
            Ok(handle) => handle.open_pool().await.map(|()| handle),
            Err(err) => Err(err),
        };
        handle.map_err(|source| Error::JobRefused {
            tenant: tenant.to_string(),
            disposition: Disposition::of(&source),
            source: Box::new(source),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_tenant_that_is_gone_discards_its_jobs() {
        let gone = Error::TenantNotFound { id: "acme".into() };
        assert_eq!(Disposition::of(&gone), Disposition::Discard);
        let deleting = Error::TenantNotReady { tenant: "acme".into(), status: TenantStatus::Deleting };
        assert_eq!(Disposition::of(&deleting), Disposition::Discard);
        for status in [TenantStatus::Provisioning, TenantStatus::Renaming, TenantStatus::Moving] {
            let not_ready = Error::TenantNotReady { tenant: "acme".into(), status };
            assert_eq!(Disposition::of(&not_ready), Disposition::RetryLater, "{status:?}");
        }
        let suspended = Error::TenantSuspended { tenant: "acme".into(), reason: None };
        assert_eq!(Disposition::of(&suspended), Disposition::RetryLater);
        let moving = Error::TenantMoving { tenant: "acme".into() };
        assert_eq!(Disposition::of(&moving), Disposition::RetryLater);
        let registry = Error::Database(sea_orm::DbErr::Custom("connection reset".into()));
        assert_eq!(Disposition::of(&registry), Disposition::RetryLater);
    }

    #[test]
    fn a_refusal_is_found_among_the_causes_and_names_the_tenant() {
        let refused = Error::JobRefused {
            tenant: "acme".into(),
            disposition: Disposition::RetryLater,
            source: Box::new(Error::TenantSuspended { tenant: "acme".into(), reason: Some("unpaid".into()) }),
        };
        assert_eq!(
            crate::error_chain(&refused),
            "Job for tenant 'acme' not run: retry it later: Tenant 'acme' is suspended: unpaid"
        );
        assert_eq!(refused.job_disposition(), Some(Disposition::RetryLater));
        assert_eq!(Error::NoTenantInScope.job_disposition(), None);

        #[derive(Debug, thiserror::Error)]
        #[error("wrapped")]
        struct Wrapper(#[source] Error);
        let wrapped = Wrapper(refused);
        assert!(matches!(refusal(&wrapped), Some(Error::JobRefused { tenant, .. }) if tenant == "acme"));
        assert!(refusal(&Wrapper(Error::NoTenantInScope)).is_none());
    }

    #[tokio::test]
    async fn no_envelope_without_a_tenant_in_scope() {
        assert!(matches!(TenantJob::in_current_scope(1), Err(Error::NoTenantInScope)));
    }
}
