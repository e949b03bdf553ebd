//! # tenancy
//!
//! Multi-tenancy for [sea-orm](https://www.sea-ql.org/SeaORM) applications.
//!
//! A *tenant* is one customer of a SaaS application. `tenancy` keeps a registry of
//! tenants in a *master database* and keeps each tenant's data apart in one of four
//! [isolation modes](Isolation):
//!
//! | mode | where the tenant's data lives |
//! | --- | --- |
//! | [`Isolation::Database`] | its own database, owned by its own role, on the server its config names (on SQLite: its own file) |
//! | [`Isolation::Schema`] | a PostgreSQL schema named after the tenant id, in the master database |
//! | [`Isolation::Table`] | shared tables of the master database, rows told apart by `tenant_id` |
//! | [`Isolation::Cache`] | a key namespace in the shared cache; no relational storage |
//!
//! ## The master database
//!
//! [`Tenancy::connect`] takes the master database URL: `DATABASE_URL` in the commands,
//! or [`DEFAULT_MASTER_URL`] (`sqlite://tenancy.db?mode=rwc`, a file in the working
//! folder) when it is unset. Connecting applies the framework's own migration, which
//! creates the registry table `tenancy_tenants`.
//!
//! ## Creating a tenant
//!
//! ```no_run
//! use tenancy::{Isolation, NewTenant, Tenancy};
//!
//! # async fn demo() -> tenancy::Result<()> {
//! let tenancy = Tenancy::connect(tenancy::master_url_from_env()).await?;
//! let new = NewTenant::new("globex", "Globex Corporation", Isolation::Table)?;
//! let created = tenancy.create_tenant(new, &()).await?;
//! assert_eq!(created.tenant.status(), tenancy::TenantStatus::Ready);
//! # Ok(()) }
//! ```
//!
//! Provisioning validates everything first, claims the id, creates what the mode needs,
//! runs migrations if asked (through [`ProvisionHooks`], which `tenancy-migrate`
//! implements with the application's migrator), and marks the tenant ready. Any failure
//! removes what the run created, and only that.
//!
//! A database tenant names its database with [`NewDatabase`]:
//! `NewDatabase::create("acme_db").login("acme_user", password).server("db-1", 5432)`
//! on PostgreSQL (the role and database are created), `NewDatabase::existing(...)` to
//! adopt one, just the name on a SQLite master (a file beside it).
//!
//! Every registered [`Tenant`] has a [`Placement`]: where its data lives, read once from
//! the registry in a shape that holds exactly what its mode needs (a PostgreSQL database
//! and its role, a SQLite file, a schema and its login role, a table tenant's login role,
//! or nothing for the cache). `use tenancy::prelude::*` brings the everyday names in.
//!
//! ## Checking and repairing
//!
//! [`Tenancy::diagnose`] checks the registry against what exists (missing storage,
//! orphans, cache namespaces of unknown tenants, table isolation) and returns typed
//! [`doctor::Finding`]s; [`Tenancy::repair`] fixes the safe ones: it drops orphans this
//! master provably made (tenancy marks what it creates, see [`doctor`]) and re-runs the
//! row-security step. The `tenancydoctor` command of `tenancy-migrate` adds migration
//! drift and prints them. [`Tenancy::diagnose_citus`] (`tenancydoctor --citus`) checks
//! the registered models and the master's catalog against the rules Citus imposes on
//! table and schema isolation (`docs/scale-out.md`).
//!
//! ## Secrets
//!
//! Database passwords of database-isolated tenants are stored encrypted
//! (XChaCha20-Poly1305) with the operator's key: `TENANCY_SECRET_KEY` (32 bytes,
//! base64), or the file `TENANCY_SECRET_KEY_FILE` names, or [`DEFAULT_SECRET_KEY_FILE`]
//! (generated with mode 0600 on first use). PostgreSQL receives a SCRAM-SHA-256 verifier
//! computed here, so the plain password never reaches the server or its log.
//!
//! ## Scoped models
//!
//! Tenants in [`Isolation::Table`] share tables, and tenants in [`Isolation::Cache`]
//! share the cache. [`tenant_scoped`](macro@tenant_scoped) on a sea-orm model says how
//! its data is told apart per tenant: by a `tenant_id` column (or the column it names),
//! or by the tenant's cache namespace. It implements [`TenantScoped`] for the model's
//! `Entity` and registers the model, so [`scoped_models`] lists every scoped model in
//! the program.
//!
//! ```
//! mod invoice {
//!     use sea_orm::entity::prelude::*;
//!     use tenancy::tenant_scoped;
//!
//!     #[tenant_scoped]
//!     #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
//!     #[sea_orm(table_name = "invoices")]
//!     pub struct Model {
//!         #[sea_orm(primary_key)]
//!         pub id: i32,
//!         pub tenant_id: String,
//!         pub total_cents: i64,
//!     }
//!
//!     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
//!     pub enum Relation {}
//!
//!     impl ActiveModelBehavior for ActiveModel {}
//! }
//!
//! mod session {
//!     use sea_orm::entity::prelude::*;
//!
//!     #[tenancy::tenant_scoped(cache, ttl = 1800)]
//!     #[sea_orm::model]
//!     #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
//!     #[sea_orm(table_name = "sessions")]
//!     pub struct Model {
//!         #[sea_orm(primary_key)]
//!         pub token: String,
//!         pub user_id: i32,
//!     }
//!
//!     impl ActiveModelBehavior for ActiveModel {}
//! }
//!
//! use std::time::Duration;
//! use tenancy::{Scope, TenantScoped};
//!
//! assert_eq!(invoice::Entity::SCOPE, Scope::Table { column: "tenant_id" });
//! assert!(matches!(invoice::Entity::tenant_column(), Some(invoice::Column::TenantId)));
//! assert_eq!(session::Entity::SCOPE, Scope::Cache { ttl: Some(Duration::from_secs(1800)), column: None });
//!
//! // Sorted by table; two models claiming one table are an error here.
//! let models = tenancy::scoped_models()?;
//! let invoices = models.iter().find(|model| model.table() == "invoices").unwrap();
//! assert!(invoices.entity().ends_with("invoice::Entity"));
//! # Ok::<(), tenancy::Error>(())
//! ```
//!
//! A compile error points at the mistake: an unknown option, a model without a
//! `tenant_id` field, a tenant column that is not a `String`, or `ttl` without `cache`.
//! A cache-scoped model read through to a table names that table's tenant column with
//! `#[tenant_scoped(cache, column = "tenant_id")]`, so table isolation scopes it too.
//!
//! Tables every tenant shares (plans, countries) are declared with
//! [`shared`](macro@shared), and listed by [`shared_models`]. They matter on a SQLite
//! master, where a table-isolated tenant's handle reaches only the tables the linked
//! models declare (see "Working with a tenant's data"):
//!
//! ```
//! mod plan {
//!     use sea_orm::entity::prelude::*;
//!
//!     #[tenancy::shared] // `#[tenancy::shared(writable)]` lets tenants write it too
//!     #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
//!     #[sea_orm(table_name = "plans")]
//!     pub struct Model {
//!         #[sea_orm(primary_key)]
//!         pub id: i32,
//!         pub code: String,
//!     }
//!
//!     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
//!     pub enum Relation {}
//!
//!     impl ActiveModelBehavior for ActiveModel {}
//! }
//!
//! let shared = tenancy::shared_models()?;
//! assert!(shared.iter().any(|model| model.table() == "plans" && !model.writable()));
//! # Ok::<(), tenancy::Error>(())
//! ```
//!
//! ## Working with a tenant's data
//!
//! [`Tenancy::tenant`] returns a [`TenantConnection`]: a handle that implements
//! sea-orm's `ConnectionTrait`, `TransactionTrait` and `StreamTrait`, so existing
//! sea-orm code takes `&handle` unchanged (`Entity::find().all(&handle)`). For a
//! database-isolated tenant it reaches the tenant's own database through a pool from a
//! bounded, least-recently-used cache under a global connection budget
//! ([`TenancyBuilder::tenant_connection_budget`],
//! [`TenancyBuilder::connections_per_tenant_pool`]). A cache-isolated tenant's handle
//! refuses relational calls with a clear error.
//!
//! Schema- and table-isolated tenants on a PostgreSQL master get a login role of their
//! own when they are created ([`TenantLogin`]: a random password, stored encrypted). By
//! default ([`TenantBinding::TenantPools`]) their handles use pools logged in as that
//! role, cached under the same budget: a schema tenant's role has its schema as
//! `search_path` and may use no other schema; a table tenant's role is what the
//! row-level security policies of [`enable_row_security`] compare with (see [`rls`]), and
//! it has no way around them. A statement then costs what it costs in plain sea-orm, and
//! the database itself enforces the isolation. [`TenantBinding::SharedTransactions`]
//! binds them per transaction on the master pool instead (`set_config(..., true)`), for
//! applications with more busy tenants than pools fit in the budget. Either way nothing
//! bound to a tenant stays on a connection another tenant can get, so both work behind a
//! transaction-mode pooler such as PgBouncer once [`TenancyBuilder::pooler`] says it is
//! there (see [`pooler`]: sqlx's prepared statements need it).
//! On a SQLite master, which has no row-level security, a table-isolated tenant's handle
//! checks every statement (parsed with `sqlparser`) against an allowlist: `SELECT`,
//! `INSERT`, `UPDATE` and `DELETE` on the `#[tenant_scoped]` tables, rewritten to reach
//! the tenant's rows alone (inserts stamped), and on the tables the app declares
//! [`shared`](macro@shared) (read-only unless `#[tenancy::shared(writable)]`). Every
//! other table (the registry, undeclared tables, views, `sqlite_master`) and every other
//! statement (`ATTACH`, `PRAGMA`, DDL, temporary objects, transaction control) is
//! refused, so a program that links none of the app's models reaches no table at all.
//! No SQLite tenant, database isolation included, can `ATTACH` another file.
//!
//! Code deep inside a request reads the tenant from a task-local scope instead of taking
//! the handle as a parameter: [`scope`] sets it, [`current`] reads it, and [`spawn`]
//! starts a task that keeps it (a plain `tokio::spawn` does not). Outside a scope,
//! [`current`] is an error ([`Error::NoTenantInScope`]), never shared data.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use sea_orm::ConnectionTrait;
//!
//! let tenancy = tenancy::Tenancy::builder(tenancy::master_url_from_env())
//!     .tenant_connection_budget(50)
//!     .connections_per_tenant_pool(2)
//!     .connect()
//!     .await?;
//! let acme = tenancy.tenant("acme").await?;
//! tenancy::scope(acme, async {
//!     let db = tenancy::current()?;
//!     db.execute_unprepared("DELETE FROM sessions").await?;
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })
//! .await?;
//! # Ok(()) }
//! ```
//!
//! ## Custom domains
//!
//! A tenant can have domains of its own ([`domains`]): [`Tenancy::add_domain`] records one
//! (normalised by [`Domain`], one owner each), and the tower layer's
//! `TenantResolver::Domain` (feature `tower`) serves requests for it as that tenant, from the live
//! registry, without a query per request.
//!
//! ```no_run
//! # #[cfg(feature = "tower")]
//! # async fn demo(tenancy: tenancy::Tenancy) -> tenancy::Result<()> {
//! use tenancy::{TenantLayer, TenantResolver};
//!
//! tenancy.add_domain("acme", &"shop.acme.com".parse()?, true).await?;
//! let layer = TenantLayer::new(
//!     tenancy,
//!     TenantResolver::FirstOf(vec![
//!         TenantResolver::Domain,
//!         TenantResolver::Subdomain { base_domain: "example.com".to_owned() },
//!     ]),
//! );
//! # let _ = layer;
//! # Ok(()) }
//! ```
//!
//! ## Background jobs
//!
//! A job queued while serving a tenant carries the tenant with it: a [`jobs::TenantJob`]
//! is the tenant id and the job, serialized with serde (`{"tenant":"acme","job":...}`),
//! made from the tenant in scope or for a named one. [`Tenancy::run_job`] (or
//! [`Tenancy::spawn_job`], on a new tokio task) resolves the tenant when the job runs and
//! runs it inside the tenant's [`scope`], which ends with the job, so the next job on the
//! same worker never sees it. A tenant that cannot be served refuses the job before it
//! starts ([`Error::JobRefused`]), with a [`jobs::Disposition`] for the queue: discard
//! it when the tenant is gone, retry it later otherwise. The `apalis` feature adds the
//! same as a layer for [apalis](https://docs.rs/apalis) workers (`jobs::apalis`).
//!
//! ```no_run
//! # async fn demo(tenancy: tenancy::Tenancy) -> Result<(), Box<dyn std::error::Error>> {
//! use tenancy::jobs::TenantJob;
//!
//! let acme = tenancy.tenant("acme").await?;
//! let queued = tenancy::scope(acme, async { TenantJob::in_current_scope("weekly-report".to_owned()) }).await?;
//! let json = serde_json::to_string(&queued)?; // onto any queue, and back on a worker:
//! let job: TenantJob<String> = serde_json::from_str(&json)?;
//! let report = tenancy
//!     .run_job(job, |name| async move {
//!         let db = tenancy::current()?; // acme's handle
//!         # let _ = db;
//!         Ok::<_, tenancy::Error>(format!("{name} of acme"))
//!     })
//!     .await??;
//! # let _ = report;
//! # Ok(()) }
//! ```
//!
//! ## Cache isolation
//!
//! Every tenant, whatever its mode, has a namespace in a shared cache, and a tenant in
//! [`Isolation::Cache`] has nothing else. The cache is chosen on the builder: the
//! in-process [`cache::CacheConfig::memory`] is the default; `CacheConfig::redis`
//! (feature `redis`) shares it between processes. A tenant's view of it,
//! [`cache::TenantCache`], comes from its handle ([`TenantConnection::cache`]) or from the
//! tenant in scope ([`cache::current`]), and reaches only that tenant's keys: get, set
//! with an optional TTL, delete, get-or-load, and clear the whole tenant. Values are
//! serialized with serde.
//!
//! ```no_run
//! # #[cfg(feature = "redis")]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tenancy::cache::{CacheConfig, TenantKey};
//!
//! let tenancy = tenancy::Tenancy::builder(tenancy::master_url_from_env())
//!     .cache(CacheConfig::redis_from_env()) // TENANCY_CACHE_URL, default redis://127.0.0.1:6379
//!     .connect()
//!     .await?;
//! let acme = tenancy.tenant("acme").await?;
//! tenancy::scope(acme, async {
//!     let cache = tenancy::cache::current()?; // acme's namespace
//!     let key = TenantKey::new("carts", "user-7");
//!     cache.set(&key, &["sku-1", "sku-2"], Some(Duration::from_secs(900))).await?;
//!     let cart: Option<Vec<String>> = cache.get(&key).await?;
//!     assert_eq!(cart.map(|c| c.len()), Some(2));
//!     Ok::<_, tenancy::Error>(())
//! })
//! .await?;
//! # Ok(()) }
//! ```
//!
//! Keys are `<prefix>:{<tenant>}:<model>:<key>`, each part percent-encoded, so no tenant
//! id, model or key can collide with another tenant's or match its clear, and `{<tenant>}`
//! is a Redis Cluster hash tag. [`cache::TenantCache::clear`] removes the tenant's keys
//! with `SCAN`/`UNLINK` in batches, never `FLUSHDB`. Shared data goes through
//! [`Tenancy::global_cache`], whose [`cache::GlobalKey`] is a different type from
//! [`cache::TenantKey`], so tenant data cannot land there by accident. When Redis is down
//! each call returns [`Error::CacheUnavailable`]; nothing panics.
//!
//! A `#[tenant_scoped(cache, ttl = N)]` model gets a read-through helper,
//! [`TenantConnection::read_through`]: [`cache::ReadThrough::find_by_id`] answers from
//! the cache, or loads the row through the tenant's handle and caches it for the model's
//! TTL; its `insert`, `update` and `delete_by_id` write through the handle and drop the
//! cached entry. See [`cache`] for the details.
//!
//! ## The tenant lifecycle
//!
//! [`Tenancy::suspend_tenant`] stops serving a tenant and keeps its data;
//! [`Tenancy::resume_tenant`] serves it again. [`Tenancy::delete_tenant`] removes what
//! tenancy created of its storage, its cache namespace and then its registry row
//! ([`deletion`]: an adopted database is kept, a backup can be written first), and
//! [`Tenancy::delete_plan`] lists that without changing anything:
//!
//! ```no_run
//! # async fn demo(tenancy: tenancy::Tenancy) -> tenancy::Result<()> {
//! use tenancy::deletion::DeleteOptions;
//!
//! let options = DeleteOptions::default().backup("acme.backup");
//! for removal in tenancy.delete_plan("acme", &options).await? {
//!     println!("will {removal}");
//! }
//! let deleted = tenancy.delete_tenant("acme", &options).await?;
//! assert!(deleted.backup.is_some());
//! # Ok(()) }
//! ```
//!
//! [`Tenancy::rename_tenant`] changes a tenant's id everywhere it lives (registry row,
//! schema, login role, the tenant column of its rows in every mode, cache keys, ledger
//! history; see [`renaming`]); the old id is unknown afterwards.
//!
//! [`Tenancy::move_tenant`] moves a tenant to another isolation mode, or its database to
//! another database or server, with its data: the new storage is made and migrated, the
//! rows copied table by table and verified (counts and checksums), then the registry
//! switched in one transaction; the old storage is kept as a
//! [`Leftover`](relocation::Leftover) until [`Tenancy::remove_leftovers`]. A tenant made
//! with [`NewTenant::from_template`] starts as a verified copy of another tenant's data
//! (a schema from a schema template without running a migration). See [`relocation`]:
//!
//! ```no_run
//! # async fn demo(tenancy: tenancy::Tenancy, hooks: impl tenancy::ProvisionHooks) -> tenancy::Result<()> {
//! use tenancy::relocation::{MoveOptions, MoveTo};
//!
//! for table in tenancy.move_plan("acme", &MoveTo::Schema).await?.tables {
//!     println!("{}: {} rows", table.table, table.rows);
//! }
//! let moved = tenancy.move_tenant("acme", &MoveOptions::new(MoveTo::Schema), &hooks).await?;
//! assert_eq!(moved.to, tenancy::Isolation::Schema);
//! # Ok(()) }
//! ```
//!
//! Creating, deleting, moving and renaming are journaled ([`operations`]): each writes an
//! operation to the master before it acts, held by a lock that dies with its process. Two
//! processes never act on one tenant at once ([`Error::OperationInProgress`]); an
//! operation whose process died is finished (a delete, a rename, a move past its switch)
//! or undone (a create, a move before its switch) by
//! the same call made again, and any other call on that tenant is refused with
//! [`Error::StaleOperation`], which names the command that settles it. [`Tenancy::unfinished_operations`] lists them, and
//! [`Tenancy::diagnose`] reports the stale ones.
//!
//! Servers follow these changes without a restart: [`Tenancy::tenant`] serves tenants
//! from an in-memory copy of the registry that every registry change updates within a
//! second in every process ([`live`]), and a suspended or deleted tenant's pools are
//! closed.
//!
//! ## Environment
//!
//! | variable | meaning |
//! | --- | --- |
//! | `DATABASE_URL` | the master database; default `sqlite://tenancy.db?mode=rwc` |
//! | `TENANCY_ADMIN_URL` | credentials used to create roles and databases (host and port come from the tenant's config); default: those of `DATABASE_URL`, database `postgres` |
//! | `TENANCY_SECRET_KEY` | the operator's key, base64 of 32 bytes |
//! | `TENANCY_SECRET_KEY_FILE` | a file holding that key; default `.tenancy-secret.key` |
//! | `TENANCY_CACHE_URL` | the Redis cache, read by `CacheConfig::redis_from_env` (feature `redis`); default `redis://127.0.0.1:6379` |

#![cfg_attr(docsrs, feature(doc_cfg))]
// A library never prints (errors carry the data; the commands print) and never panics on
// a value it could report, as sea-orm's root says too. Unit tests may unwrap.
#![deny(clippy::print_stdout, clippy::print_stderr, clippy::dbg_macro)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

// The layout is the architecture: the registry (what a tenant is and where its data
// lives), the storage drivers (one file per isolation mode), provisioning (the
// orchestration over a driver), the connection (handles, transactions, pools, context),
// table isolation (row security on PostgreSQL, statement rewriting on SQLite), secrets
// and the cache. `Tenancy`, the entry point, ties them together in `entry`.
pub mod cache;
mod connection;
pub mod deletion;
pub mod doctor;
pub mod domains;
mod entry;
mod error;
pub mod jobs;
mod models;
pub mod operations;
pub mod prelude;
mod provisioning;
mod registry;
pub mod relocation;
pub mod renaming;
pub mod secrets;
pub mod servers;
pub mod sql;
mod storage;
mod table_isolation;

pub use crate::connection::context;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub use crate::connection::layer;
pub use crate::connection::pooler;
pub use crate::registry::ledger;
pub use crate::registry::live;
pub use crate::table_isolation::row_security as rls;

pub use crate::connection::context::{current, scope, spawn};
#[cfg(feature = "tower")]
pub use crate::connection::layer::{DEFAULT_RETRY_AFTER, TenantLayer, TenantResolver, TenantService};
pub use crate::connection::pooler::Pooler;
pub use crate::connection::pools::{
    DEFAULT_CONNECTIONS_PER_TENANT_POOL, DEFAULT_TENANT_CONNECTION_BUDGET, DEFAULT_TENANT_POOL_IDLE_TIMEOUT,
    SHARD_POOL_CONNECTIONS,
};
pub use crate::connection::transaction::TenantTransaction;
pub use crate::connection::url::{Backend, DEFAULT_MASTER_URL, DEFAULT_POSTGRES_PORT, master_url_from_env, redact_url};
pub use crate::connection::{TenantBinding, TenantConnection};
pub use crate::domains::{Domain, DomainAdded, TenantDomain};
pub use crate::entry::{DEFAULT_MAX_CONNECTIONS, DEFAULT_SECRET_KEY_FILE, Tenancy, TenancyBuilder};
pub use crate::error::{BoxError, Error, MissingValue, Result, error_chain};
pub use crate::models::{KeyColumn, Scope, ScopedModel, SharedModel, TenantScoped, scoped_models, shared_models};
pub use crate::provisioning::{
    BoxFuture, Created, DatabaseLogin, NewDatabase, NewTenant, ProvisionHooks, ProvisionStep, Provisioned, ServerChoice,
};
pub use crate::registry::id::{TenantId, validate_sql_name};
pub use crate::registry::isolation::Isolation;
pub use crate::registry::placement::{
    Ownership, Placement, PostgresDatabase, ShardDatabase, SqliteDatabase, TenantDatabase, TenantLogin,
};
pub use crate::registry::{
    FRAMEWORK_MIGRATIONS_TABLE, REGISTRY_TABLE, RegistryMigrator, Suspension, Tenant, TenantStatus,
};
pub use crate::table_isolation::row_security::{RowSecurityReport, enable_row_security};
pub use tenancy_macros::{shared, tenant_scoped};

/// Not public API: what `#[tenant_scoped]`'s generated code calls (semver exempt).
#[doc(hidden)]
pub use crate::models::__private;

/// Re-exports for the application's convenience, so it names one version of each.
pub use sea_orm;
pub use sea_orm_migration;
