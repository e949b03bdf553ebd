//! `createtenant` for the example app: register a tenant and create its storage.
//! Run `cargo run --bin createtenant -- --help` for the flags.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tenancy_migrate::cli::createtenant(example_app::migrators()).await
}
