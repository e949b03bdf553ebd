//! The example app's integration tests, one module per file, linked into one binary (one
//! link of sea-orm, sqlx and tokio instead of one per file). They drive the app's command
//! binaries (`CARGO_BIN_EXE_*`) and its library. Run one file's tests with
//! `cargo test -p example-app --test integration tenantshell::`.

mod commands;
mod pty;

mod cache_tenant;
mod clone_cli;
mod createtenant_cli;
mod createtenant_pty;
mod doctor_cli;
mod domains_cli;
mod fleet_cli;
mod fleet_pty;
mod fleet_servers_cli;
mod fleet_sql;
mod lifecycle;
mod migrations;
mod move_cli;
mod move_serve;
mod move_servers;
mod pgbouncer;
mod readme;
mod rename;
mod serve_http;
mod serve_servers;
mod servers_cli;
mod superuser_cli;
mod superuser_pty;
mod suspension_cli;
mod tenantshell;
