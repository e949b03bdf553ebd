//! `drainserver` for the example app. Run `cargo run --bin drainserver -- --help` for the flags.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tenancy_migrate::cli::drainserver(example_app::migrators()).await
}
