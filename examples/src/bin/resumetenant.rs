//! `resumetenant` for the example app. Run `cargo run --bin resumetenant -- --help` for the flags.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tenancy_migrate::cli::resumetenant(example_app::migrators()).await
}
