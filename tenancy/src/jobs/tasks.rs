//! Tenant jobs on plain tokio tasks.

use std::future::Future;

use tokio::task::JoinHandle;

use super::TenantJob;
use crate::{Result, Tenancy};

impl Tenancy {
    /// Spawns a tokio task that runs `f` with the envelope's job as
    /// [`run_job`](Tenancy::run_job) does: the tenant resolved when the task runs, not
    /// now, and the job inside its scope.
    ///
    /// ```no_run
    /// # async fn demo(tenancy: tenancy::Tenancy) -> Result<(), Box<dyn std::error::Error>> {
    /// use tenancy::jobs::TenantJob;
    ///
    /// let job = TenantJob::new("acme".parse()?, "weekly-report".to_owned());
    /// let done = tenancy.spawn_job(job, |report| async move {
    ///     let db = tenancy::current()?;
    ///     // ... build `report` from acme's data through `&db`
    ///     Ok::<_, tenancy::Error>(report.len())
    /// });
    /// let ran = done.await?; // Err: the task panicked or was aborted
    /// let returned = ran?; // Err: refused (`Error::JobRefused`), the job did not run
    /// let length = returned?; // Err: the job's own error
    /// # let _ = length;
    /// # Ok(()) }
    /// ```
    ///
    /// # Panics
    /// As [`tokio::spawn`], when called outside a tokio runtime.
    pub fn spawn_job<T, F, Fut>(&self, job: TenantJob<T>, f: F) -> JoinHandle<Result<Fut::Output>>
    where
        T: Send + 'static,
        F: FnOnce(T) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        let tenancy = self.clone();
        tokio::spawn(async move { tenancy.run_job(job, f).await })
    }
}
