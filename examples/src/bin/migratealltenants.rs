//! `migratealltenants` for the example app. Run `cargo run --bin migratealltenants -- --help` for the flags.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tenancy_migrate::cli::migratealltenants(example_app::migrators()).await
}
