//! `serve` for the example app: the HTTP API for every tenant. Run `cargo run --bin serve -- --help` for the flags.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    example_app::server::serve().await
}
