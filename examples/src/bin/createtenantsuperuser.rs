//! `createtenantsuperuser` for the example app: create an administrator inside one tenant.
//! It takes the app's migrators so that the binary links the app's models: a table tenant's
//! handle on a SQLite master reaches only the tables they declare.
//! Run `cargo run --bin createtenantsuperuser -- --help` for the flags.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tenancy_migrate::cli::createtenantsuperuser(example_app::migrators()).await
}
