//! `undrainserver` for the example app. Run `cargo run --bin undrainserver -- --help` for the flags.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tenancy_migrate::cli::undrainserver(example_app::migrators()).await
}
