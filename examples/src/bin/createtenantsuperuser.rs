//! `createtenantsuperuser` for the example app: create an administrator inside one tenant.
//! Run `cargo run --bin createtenantsuperuser -- --help` for the flags.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tenancy_migrate::cli::createtenantsuperuser().await
}
