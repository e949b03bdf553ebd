//! `suspendtenant` for the example app. Run `cargo run --bin suspendtenant -- --help` for the flags.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tenancy_migrate::cli::suspendtenant(example_app::migrators()).await
}
