//! Failure injection for crash tests (feature `fault-injection`): with
//! `TENANCY_FAULT_AFTER_STEP=<step>` set, a command aborts its process right after that
//! step, the way a `SIGKILL` would stop it, leaving whatever the step left. Steps are
//! [`tenancy::ProvisionStep::slug`]s, [`tenancy::deletion::Removal::kind`]s and
//! [`tenancy::renaming::RenameStep::slug`]s.

/// The environment variable naming the step to die after.
pub const FAULT_ENV: &str = "TENANCY_FAULT_AFTER_STEP";

/// Aborts the process if `step` is the one `TENANCY_FAULT_AFTER_STEP` names (only with
/// the `fault-injection` feature; a no-op otherwise).
pub fn after_step(step: &str) {
    #[cfg(feature = "fault-injection")]
    if std::env::var(FAULT_ENV).is_ok_and(|wanted| wanted == step) {
        std::process::abort();
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = step;
}
