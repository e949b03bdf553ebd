//! `adddomain` for the example app. Run `cargo run --bin adddomain -- --help` for the flags.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tenancy_migrate::cli::adddomain(example_app::migrators()).await
}
