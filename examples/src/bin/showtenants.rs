//! `showtenants` for the example app. Run `cargo run --bin showtenants -- --help` for the flags.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tenancy_migrate::cli::showtenants(example_app::migrators()).await
}
