//! `serve` for the example app: the HTTP API for every tenant. Run `cargo run --bin serve -- --help` for the flags.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Warnings and errors of the library (a tenant that cannot be reached, a lost
    // registry listener) on stderr; `RUST_LOG` sets more.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    example_app::server::serve().await
}
