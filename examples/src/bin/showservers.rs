//! `showservers` for the example app. Run `cargo run --bin showservers -- --help` for the flags.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tenancy_migrate::cli::showservers(example_app::migrators()).await
}
