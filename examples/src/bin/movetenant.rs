//! `movetenant` for the example app. Run `cargo run --bin movetenant -- --help` for the flags.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tenancy_migrate::cli::movetenant(example_app::migrators()).await
}
