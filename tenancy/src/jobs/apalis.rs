//! Tenant jobs on [apalis](https://docs.rs/apalis) workers (feature `apalis`).
//!
//! [`TenantJobLayer`] is a tower layer for an apalis worker whose tasks are
//! [`TenantJob`]s: for each task it resolves the envelope's tenant through the live
//! registry and runs the handler inside that tenant's [`scope`](crate::scope), so the
//! handler's [`current`](crate::current) is the task's tenant and no other. The handler
//! still receives the whole envelope.
//!
//! ```no_run
//! # async fn demo(tenancy: tenancy::Tenancy) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use apalis_core::backend::TaskSink;
//! use apalis_core::backend::memory::MemoryStorage;
//! use apalis_core::worker::builder::WorkerBuilder;
//! use tenancy::jobs::TenantJob;
//! use tenancy::jobs::apalis::TenantJobLayer;
//!
//! async fn send_invoice(job: TenantJob<i32>) -> Result<(), tenancy::Error> {
//!     let db = tenancy::current()?; // the task's tenant
//!     // ... load invoice `job.job()` through `&db` and send it
//!     Ok(())
//! }
//!
//! let mut queue = MemoryStorage::new();
//! queue.push(TenantJob::new("acme".parse()?, 7)).await?;
//! WorkerBuilder::new("invoices")
//!     .backend(queue)
//!     .layer(TenantJobLayer::new(tenancy))
//!     .build(send_invoice)
//!     .run()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! A task whose tenant cannot be served fails without calling the handler, with the
//! refusal ([`Error::JobRefused`]) wrapped in apalis' own error taxonomy, so apalis'
//! retry policies and backends treat it as they should: a tenant that is gone gives an
//! [`AbortError`] (the task is killed and not retried), any other refusal a
//! [`RetryAfterError`] (the task goes back to pending) with a wait of one second for a
//! tenant being moved (a move takes seconds), [`SERVER_RETRY_AFTER`] for a tenant whose
//! server cannot be reached, and [`TenantJobLayer::retry_after`] otherwise (a suspended
//! tenant; default [`DEFAULT_RETRY_AFTER`]). [`refusal`](super::refusal) finds the
//! refusal in a task's error, in an event listener for example.
//!
//! ## Why apalis
//!
//! Of the Rust job crates that were candidates (apalis, fang, underway, rusty-sidekiq):
//!
//! - **apalis** is the most widely used of them, maintained, and at 1.0 (a stable API).
//!   It is built on tower: a job is a `tower::Service` call and middleware a
//!   `tower::Layer`, exactly the shape of `TenantLayer` for HTTP. Its backends
//!   (PostgreSQL, Redis, SQLite, in-memory, cron) are separate crates over one core, so
//!   one layer covers them all, and its core already has the error types a refusal maps
//!   to (abort versus retry after a delay). `apalis-core` without its default features
//!   adds three crates to this workspace (itself, `pin-project` and its macro crate; its
//!   `futures-*`, `rand`, `thiserror` and tower trait crates were here already), built
//!   in about six seconds on two cores.
//! - **fang** brings diesel (and its migrations) or its own sqlx queue and a
//!   `typetag`-based task trait; it has no middleware hook to wrap a task's future.
//! - **underway** is PostgreSQL-only, pre-1.0 (0.2), and its jobs are durable step
//!   functions with their own queue tables: a heavier model for one envelope.
//! - **rusty-sidekiq** is Redis-only, speaks Sidekiq's Ruby wire format (a worker is a
//!   trait with a class name), and pulls bb8, cron and its own Redis pool.
//!
//! Only `apalis-core` is a dependency of this crate: the applications' `apalis` (or a
//! backend crate) re-exports the same core.
//!
//! [`AbortError`]: apalis_core::error::AbortError
//! [`RetryAfterError`]: apalis_core::error::RetryAfterError

use std::fmt;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::error::{AbortError, BoxDynError, RetryAfterError};
use apalis_core::task::Task;
use tower_layer::Layer;
use tower_service::Service;

use super::{Disposition, TenantJob};
use crate::{BoxFuture, Error, Tenancy};

/// How long a job of a suspended tenant waits before it is tried again, by default.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How long a job of a tenant whose server cannot be reached waits.
pub const SERVER_RETRY_AFTER: Duration = Duration::from_secs(5);

/// How long a job of a tenant being moved waits: a move takes seconds.
const MOVING_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A tower [`Layer`] for apalis workers of [`TenantJob`]s (see the [module](self)).
#[cfg_attr(docsrs, doc(cfg(feature = "apalis")))]
#[derive(Debug, Clone)]
pub struct TenantJobLayer {
    tenancy: Tenancy,
    retry_after: Duration,
}

impl TenantJobLayer {
    /// A layer that runs each task for its envelope's tenant in `tenancy`.
    pub fn new(tenancy: Tenancy) -> Self {
        Self { tenancy, retry_after: DEFAULT_RETRY_AFTER }
    }

    /// How long a job of a suspended (or otherwise not served) tenant waits before it is
    /// tried again (default [`DEFAULT_RETRY_AFTER`]).
    pub fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = wait;
        self
    }
}

impl<S> Layer<S> for TenantJobLayer {
    type Service = TenantJobService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TenantJobService { inner, tenancy: self.tenancy.clone(), retry_after: self.retry_after }
    }
}

/// The service [`TenantJobLayer`] wraps around a worker's handler.
#[cfg_attr(docsrs, doc(cfg(feature = "apalis")))]
#[derive(Clone)]
pub struct TenantJobService<S> {
    inner: S,
    tenancy: Tenancy,
    retry_after: Duration,
}

impl<S> fmt::Debug for TenantJobService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantJobService")
            .field("tenancy", &self.tenancy)
            .field("retry_after", &self.retry_after)
            .finish_non_exhaustive()
    }
}

impl<S, T> Service<Task<TenantJob<T>>> for TenantJobService<S>
where
    S: Service<Task<TenantJob<T>>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Into<BoxDynError>,
    T: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxDynError;
    type Future = BoxFuture<'static, Result<S::Response, BoxDynError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<TenantJob<T>>) -> Self::Future {
        // The clone that was not made ready stays behind (tower's `Service` docs).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let tenancy = self.tenancy.clone();
        let retry_after = self.retry_after;
        Box::pin(async move {
            let handle = match tenancy.job_handle(task.args.tenant()).await {
                Ok(handle) => handle,
                Err(refused) => return Err(apalis_error(refused, retry_after)),
            };
            // The handler's call inside the scope too: a handler may do work before it
            // returns its future.
            crate::scope(handle, async move { inner.call(task).await }).await.map_err(Into::into)
        })
    }
}

/// A refusal as the apalis error that makes apalis do with the task what its
/// [`Disposition`] says.
fn apalis_error(refused: Error, retry_after: Duration) -> BoxDynError {
    let wait = match &refused {
        Error::JobRefused { disposition: Disposition::Discard, .. } => return Box::new(AbortError::new(refused)),
        Error::JobRefused { source, .. } => match **source {
            Error::TenantMoving { .. } => MOVING_RETRY_AFTER,
            Error::ServerUnavailable { .. } => SERVER_RETRY_AFTER,
            _ => retry_after,
        },
        _ => retry_after,
    };
    Box::new(RetryAfterError::new(refused, wait))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(disposition: Disposition, source: Error) -> Error {
        Error::JobRefused { tenant: "acme".into(), disposition, source: Box::new(source) }
    }

    #[test]
    fn a_tenant_that_is_gone_aborts_and_others_retry_after_their_wait() {
        let gone = apalis_error(
            refused(Disposition::Discard, Error::TenantNotFound { id: "acme".into() }),
            DEFAULT_RETRY_AFTER,
        );
        assert!(gone.downcast_ref::<AbortError>().is_some(), "{gone}");
        assert!(super::super::refusal(gone.as_ref()).is_some());

        let wait = |source| {
            let err = apalis_error(refused(Disposition::RetryLater, source), Duration::from_secs(42));
            let retry = err.downcast_ref::<RetryAfterError>().map(RetryAfterError::get_duration);
            assert!(super::super::refusal(err.as_ref()).is_some());
            retry
        };
        assert_eq!(wait(Error::TenantSuspended { tenant: "acme".into(), reason: None }), Some(Duration::from_secs(42)));
        assert_eq!(wait(Error::TenantMoving { tenant: "acme".into() }), Some(MOVING_RETRY_AFTER));
    }
}
