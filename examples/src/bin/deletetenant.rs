//! `deletetenant` for the example app. Run `cargo run --bin deletetenant -- --help` for the flags.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tenancy_migrate::cli::deletetenant(example_app::migrators()).await
}
