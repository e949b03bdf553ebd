//! `removedomain` for the example app. Run `cargo run --bin removedomain -- --help` for the flags.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tenancy_migrate::cli::removedomain(example_app::migrators()).await
}
