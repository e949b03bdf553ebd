//! `clonetenant` for the example app. Run `cargo run --bin clonetenant -- --help` for the flags.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tenancy_migrate::cli::clonetenant(example_app::migrators()).await
}
