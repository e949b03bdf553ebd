//! `migratetenant` for the example app. Run `cargo run --bin migratetenant -- --help` for the flags.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tenancy_migrate::cli::migratetenant(example_app::migrators()).await
}
