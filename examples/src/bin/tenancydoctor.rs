//! `tenancydoctor` for the example app. Run `cargo run --bin tenancydoctor -- --help` for the flags.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tenancy_migrate::cli::tenancydoctor(example_app::migrators()).await
}
