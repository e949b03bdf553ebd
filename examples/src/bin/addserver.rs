//! `addserver` for the example app. Run `cargo run --bin addserver -- --help` for the flags.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tenancy_migrate::cli::addserver(example_app::migrators()).await
}
