//! Procedural macros of [`tenancy`](https://docs.rs/tenancy): `#[tenant_scoped]`.
//!
//! Implementation detail of the `tenancy` crate; use the macros through `tenancy`.
//! The `#[tenant_scoped]` attribute arrives with the tenant-connection work; this crate
//! is in the workspace now so that the crate layout and its lints are fixed early.
