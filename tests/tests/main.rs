//! The cross-crate integration tests, one module per file, linked into one binary: each
//! binary links sea-orm, sqlx and tokio, and on a two-core CI linking twenty of them cost
//! more than compiling the tests. Run one file's tests with
//! `cargo test -p tenancy-tests --test integration handle_schema::`.
//!
//! `scoped_registry.rs`, `scoped_duplicate.rs` and `handle_table.rs` are binaries of their
//! own (see `Cargo.toml`): the model registry is process-wide and they assert what it holds.

mod cache_common;
mod common;

mod attack_shared_binding;
mod attack_sqlite;
mod cache_memory;
mod cache_redis;
mod cache_redis_cluster;
mod cache_scoped_table;
mod citus_check;
mod clone;
mod concurrent_signups;
mod context;
mod doctor_postgres;
mod doctor_sqlite;
mod domains;
mod fixture_master;
mod fleet_postgres;
mod fleet_servers;
mod fleet_sqlite;
mod handle_database;
mod handle_schema;
mod jobs;
mod layer;
mod live_registry;
mod nonsuperuser_master;
mod operations;
mod provision_postgres;
mod provision_sqlite;
mod relocation;
mod server_routes;
mod servers;
mod shards;
mod table_isolation_attacks;
mod tracing_spans;
mod ui;
