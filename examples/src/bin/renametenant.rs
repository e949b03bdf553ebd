//! `renametenant` for the example app. Run `cargo run --bin renametenant -- --help` for the flags.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tenancy_migrate::cli::renametenant(example_app::migrators()).await
}
