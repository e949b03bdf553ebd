//! `tenantshell` for the example app: an SQL prompt bound to one tenant.
//! Run `cargo run --bin tenantshell -- --help` for the flags.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tenancy_migrate::cli::tenantshell().await
}
