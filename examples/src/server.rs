//! The HTTP service: the project tracker's JSON API, one process serving tenants of all
//! four isolation modes side by side.
//!
//! [`TenantLayer`] resolves each request's tenant, from the `X-Tenant` header if the
//! request has one, otherwise from the subdomain of its `Host` under the base domain
//! (`acme.localhost:8080` is tenant `acme` with the default base `localhost`), and hands
//! the handlers the tenant's [`TenantConnection`]. Handlers only ever see that handle: the
//! same sea-orm code reaches the tenant's own database, its schema, or its rows of the
//! shared tables. A missing, unknown or not-ready tenant gets `404` from the layer.
//!
//! | route | tenant | answer |
//! | --- | --- | --- |
//! | `GET /health` | no | `{"status":"ok"}` |
//! | `GET /plans` | no | the shared plans (master database) |
//! | `GET /tenant` | yes | the tenant's id, name and isolation mode (every mode) |
//! | `GET /projects` | yes | the tenant's projects |
//! | `POST /projects` `{"name"}` | yes | `201`, the new project |
//! | `GET /projects/{id}` | yes | the project with its tasks |
//! | `POST /projects/{id}/tasks` `{"title"}` | yes | `201`, the new task |
//! | `GET /tasks/{id}` | yes | the task with its comments |
//! | `POST /tasks/{id}/comments` `{"body"}` | yes | `201`, the new comment |
//! | `GET /dashboard` | yes | the tenant's counts (the cache-scoped `dashboard_stats`, read through the tenant's cache) |
//! | `PUT /notes/{key}` `{"text"}` | yes | `204`; a note in the tenant's cache namespace (every mode, cache tenants too) |
//! | `GET /notes/{key}` | yes | the tenant's note, `404` if none |
//!
//! Errors are JSON, `{"error": "<message>"}`, with the status of [`Error::status`]: `404`
//! for a row the tenant does not have (another tenant's included), `422` for an invalid
//! field, `409` when a cache-isolated tenant calls a relational endpoint (it has no
//! tables; [`Error::NoRelationalStorage`]), `500` without detail when the database fails.

use std::net::SocketAddr;
use std::process::ExitCode;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use clap::Parser;
use sea_orm::prelude::ChronoUtc;
use sea_orm::{ActiveModelTrait, EntityTrait, ModelTrait, QueryOrder, Set, TransactionTrait};
use serde::{Deserialize, Serialize};
use tenancy::cache::{CacheConfig, TenantKey};
use tenancy::{Isolation, Tenancy, TenantConnection, TenantLayer, TenantResolver};
use tenancy_migrate::cli::Exit;

use crate::Error;
use crate::entities::{comment, dashboard_stats, plan, project, task};

/// Serve the project tracker's HTTP API for every tenant of the master database.
///
/// The tenant comes from the X-Tenant header, or else from the Host header: a tenant's
/// custom domain (adddomain), or else its subdomain under --base-domain. Stops on Ctrl-C (or SIGTERM) after the requests in flight.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "serve",
    after_help = Exit::after_help(
        "Environment:\n  \
        DATABASE_URL         master database (default: sqlite://tenancy.db?mode=rwc)\n  \
        TENANCY_BIND         address to listen on (default: 127.0.0.1:8080)\n  \
        TENANCY_BASE_DOMAIN  domain the tenants' subdomains are under (default: localhost)\n  \
        TENANCY_CACHE_URL    Redis for the tenants' cache namespaces (default: in-process cache)\n  \
        TENANCY_CACHE_PREFIX first part of every cache key (default: tenancy)\n  \
        TENANCY_CONNECTION_BUDGET         connections all tenant pools may hold together\n  \
        TENANCY_SERVER_CONNECTION_BUDGET  connections the tenant pools of one server may hold\n  \
        TENANCY_POOLER       none, session or transaction: the pooler DATABASE_URL names (default: none)\n  \
        TENANCY_DIRECT_URL   the master database reached directly, behind a pooler\n  \
        TENANCY_BINDING      tenant-pools or shared-transactions (default: tenant-pools)",
        &[
            (Exit::Success, Some("stopped by Ctrl-C or SIGTERM")),
            (Exit::Failed, Some("cannot listen, or the server failed")),
            (Exit::InvalidInput, None),
            (Exit::CannotConnect, Some("cannot connect to the master database")),
        ],
    )
)]
pub struct ServeArgs {
    /// Address to listen on, as IP:PORT (port 0 picks a free one; the address is printed)
    #[arg(long, env = "TENANCY_BIND", default_value = "127.0.0.1:8080", value_name = "ADDR", hide_env_values = true)]
    pub bind: SocketAddr,

    /// Domain the tenants' subdomains are under: acme.<base> is tenant acme
    #[arg(
        long,
        env = "TENANCY_BASE_DOMAIN",
        default_value = "localhost",
        value_name = "DOMAIN",
        hide_env_values = true
    )]
    pub base_domain: String,

    /// Redis URL for the tenants' cache namespaces; without it, an in-process cache
    #[arg(long, env = "TENANCY_CACHE_URL", value_name = "URL", hide_env_values = true)]
    pub cache_url: Option<String>,

    /// The first part of every cache key, so several apps can share one Redis
    #[arg(long, env = "TENANCY_CACHE_PREFIX", default_value = "tenancy", value_name = "PREFIX")]
    pub cache_prefix: String,

    /// The most connections all tenant pools may hold together [default: 20]
    #[arg(long, env = "TENANCY_CONNECTION_BUDGET", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub connection_budget: Option<u32>,

    /// The most connections the tenant pools of any one server may hold together
    /// [default: the whole --connection-budget]
    #[arg(
        long,
        env = "TENANCY_SERVER_CONNECTION_BUDGET",
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub server_connection_budget: Option<u32>,

    /// What stands between serve and PostgreSQL: none, session or transaction (PgBouncer's pool_mode); transaction needs --direct-url
    #[arg(long, env = tenancy::pooler::POOLER_ENV, default_value = "none", value_name = "MODE")]
    pub pooler: tenancy::Pooler,

    /// How schema and table tenants' handles reach their data: tenant-pools (each tenant logged in as its own role) or shared-transactions (transactions of the master pool bound with settings)
    #[arg(long, env = "TENANCY_BINDING", default_value = "tenant-pools", value_name = "BINDING", value_parser = parse_binding)]
    pub binding: tenancy::TenantBinding,

    /// The master database.
    #[command(flatten)]
    pub master: tenancy_migrate::cli::MasterArgs,
}

fn parse_binding(value: &str) -> Result<tenancy::TenantBinding, String> {
    match value {
        "tenant-pools" => Ok(tenancy::TenantBinding::TenantPools),
        "shared-transactions" => Ok(tenancy::TenantBinding::SharedTransactions),
        other => Err(format!("'{other}' is no binding: expected tenant-pools or shared-transactions")),
    }
}

/// Runs `serve` with the process's arguments; see [`ServeArgs`].
pub async fn serve() -> ExitCode {
    serve_with_args(ServeArgs::parse()).await
}

/// Runs `serve` with parsed arguments until Ctrl-C or SIGTERM; returns the exit code.
pub async fn serve_with_args(args: ServeArgs) -> ExitCode {
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        // The tenant commands' report: same message layout and exit codes.
        Err(Error::Tenancy(err)) => tenancy_migrate::cli::report_error(&err.into()),
        Err(err) => {
            eprintln!("Error: {err}");
            let causes = crate::error::source_chain(&err);
            if !causes.is_empty() {
                eprintln!("  caused by: {causes}");
            }
            Exit::Failed.into()
        }
    }
}

async fn run(args: ServeArgs) -> Result<(), Error> {
    let cache = match args.cache_url.filter(|url| !url.trim().is_empty()) {
        Some(url) => CacheConfig::redis(url),
        None => CacheConfig::memory(),
    };
    let mut builder = Tenancy::builder(&args.master.database_url)
        .cache(cache.prefix(args.cache_prefix))
        .pooler(args.pooler)
        .tenant_binding(args.binding);
    if let Some(direct) = args.master.direct_url.filter(|url| !url.trim().is_empty()) {
        builder = builder.direct_url(direct);
    }
    if let Some(budget) = args.connection_budget {
        builder = builder.tenant_connection_budget(budget);
    }
    if let Some(budget) = args.server_connection_budget {
        builder = builder.server_connection_budget(budget);
    }
    let tenancy = builder.connect().await?;
    let listener =
        tokio::net::TcpListener::bind(args.bind).await.map_err(|source| Error::Bind { addr: args.bind, source })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind { addr: args.bind, source })?;
    // The first line of stdout, for scripts and tests that bind port 0.
    println!("listening on http://{addr}");
    let app = router(tenancy, resolver(&args.base_domain));
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await.map_err(Error::Serve)?;
    println!("shut down");
    Ok(())
}

/// Resolves when the process gets Ctrl-C (SIGINT) or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        // If the handler cannot be installed, the process keeps the default behaviour
        // (killed by the signal): waiting forever here is the right fallback.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Where the app finds a request's tenant: the `X-Tenant` header if present, otherwise
/// the `Host`: a tenant's custom domain, or else its subdomain under `base_domain` (a
/// host that is one tenant's domain and another's subdomain gets `421`).
pub fn resolver(base_domain: &str) -> TenantResolver {
    TenantResolver::FirstOf(vec![
        TenantResolver::header("x-tenant"),
        TenantResolver::Domain,
        TenantResolver::Subdomain { base_domain: base_domain.to_owned() },
    ])
}

/// The app's routes: the tenant routes behind [`TenantLayer`], `/health` and `/plans`
/// outside it.
pub fn router(tenancy: Tenancy, resolver: TenantResolver) -> Router {
    let tenant_routes = Router::new()
        .route("/tenant", get(show_tenant))
        .route("/projects", get(list_projects).post(create_project))
        .route("/projects/{id}", get(show_project))
        .route("/projects/{id}/tasks", post(create_task))
        .route("/tasks/{id}", get(show_task))
        .route("/tasks/{id}/comments", post(create_comment))
        .route("/dashboard", get(dashboard))
        .route("/notes/{key}", get(show_note).put(put_note))
        .layer(TenantLayer::new(tenancy.clone(), resolver));
    Router::new()
        .route("/health", get(health))
        .route("/plans", get(list_plans))
        .with_state(tenancy)
        .merge(tenant_routes)
}

/// `GET /health`: the process is up (no tenant, no database).
async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// `GET /plans`: the shared, untenanted plans, read from the master database; the only
/// handler that sees it.
async fn list_plans(State(tenancy): State<Tenancy>) -> Result<Json<Vec<plan::Model>>, Error> {
    Ok(Json(plan::Entity::find().order_by_asc(plan::Column::Id).all(tenancy.master()).await?))
}

/// What `GET /tenant` answers.
#[derive(Debug, Serialize)]
struct TenantInfo {
    id: String,
    name: String,
    isolation: Isolation,
}

/// `GET /tenant`: who the request's tenant is; served in every isolation mode.
async fn show_tenant(Extension(db): Extension<TenantConnection>) -> Json<TenantInfo> {
    let tenant = db.tenant();
    Json(TenantInfo { id: tenant.id().to_string(), name: tenant.name().to_owned(), isolation: tenant.isolation() })
}

/// Refuses a cache-isolated tenant, which has no tables, before any relational call.
fn relational(db: &TenantConnection) -> Result<(), Error> {
    match db.isolation() {
        Isolation::Cache => Err(Error::NoRelationalStorage { tenant: db.id().to_string() }),
        _ => Ok(()),
    }
}

/// `GET /projects`: the tenant's projects, oldest first.
async fn list_projects(Extension(db): Extension<TenantConnection>) -> Result<Json<Vec<project::Model>>, Error> {
    relational(&db)?;
    Ok(Json(project::Entity::find().order_by_asc(project::Column::Id).all(&db).await?))
}

/// The body of `POST /projects`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewProject {
    name: String,
}

/// `POST /projects`: creates a project for the tenant.
async fn create_project(
    Extension(db): Extension<TenantConnection>,
    body: Result<Json<NewProject>, JsonRejection>,
) -> Result<(StatusCode, Json<project::Model>), Error> {
    relational(&db)?;
    let Json(body) = body?;
    let project = project::ActiveModel {
        tenant_id: Set(db.id().to_string()),
        name: Set(short_text("name", body.name)?),
        created_at: Set(ChronoUtc::now()),
        ..Default::default()
    }
    .insert(&db)
    .await?;
    invalidate_dashboard(&db).await?;
    Ok((StatusCode::CREATED, Json(project)))
}

/// A project with its tasks.
#[derive(Debug, Serialize)]
struct ProjectWithTasks {
    #[serde(flatten)]
    project: project::Model,
    tasks: Vec<task::Model>,
}

/// `GET /projects/{id}`: one of the tenant's projects with its tasks; `404` for an id the
/// tenant does not have.
async fn show_project(
    Extension(db): Extension<TenantConnection>,
    id: Result<Path<i32>, PathRejection>,
) -> Result<Json<ProjectWithTasks>, Error> {
    relational(&db)?;
    let Path(id) = id?;
    let project = project::Entity::find_by_id(id).one(&db).await?.ok_or(Error::NotFound { what: "project", id })?;
    let tasks = project.find_related(task::Entity).order_by_asc(task::Column::Id).all(&db).await?;
    Ok(Json(ProjectWithTasks { project, tasks }))
}

/// The body of `POST /projects/{id}/tasks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTask {
    title: String,
    #[serde(default)]
    done: bool,
}

/// `POST /projects/{id}/tasks`: adds a task to one of the tenant's projects.
async fn create_task(
    Extension(db): Extension<TenantConnection>,
    id: Result<Path<i32>, PathRejection>,
    body: Result<Json<NewTask>, JsonRejection>,
) -> Result<(StatusCode, Json<task::Model>), Error> {
    relational(&db)?;
    let (Path(project_id), Json(body)) = (id?, body?);
    let title = short_text("title", body.title)?;
    // The project is looked up through the tenant's handle in the same transaction: a
    // foreign key alone would accept another table-isolated tenant's project id, since
    // PostgreSQL checks foreign keys past row-level security.
    let txn = db.begin().await?;
    project::Entity::find_by_id(project_id)
        .one(&txn)
        .await?
        .ok_or(Error::NotFound { what: "project", id: project_id })?;
    let task = task::ActiveModel {
        tenant_id: Set(db.id().to_string()),
        project_id: Set(project_id),
        title: Set(title),
        done: Set(body.done),
        created_at: Set(ChronoUtc::now()),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    txn.commit().await?;
    invalidate_dashboard(&db).await?;
    Ok((StatusCode::CREATED, Json(task)))
}

/// A task with its comments.
#[derive(Debug, Serialize)]
struct TaskWithComments {
    #[serde(flatten)]
    task: task::Model,
    comments: Vec<comment::Model>,
}

/// `GET /tasks/{id}`: one of the tenant's tasks with its comments.
async fn show_task(
    Extension(db): Extension<TenantConnection>,
    id: Result<Path<i32>, PathRejection>,
) -> Result<Json<TaskWithComments>, Error> {
    relational(&db)?;
    let Path(id) = id?;
    let task = task::Entity::find_by_id(id).one(&db).await?.ok_or(Error::NotFound { what: "task", id })?;
    let comments = task.find_related(comment::Entity).order_by_asc(comment::Column::Id).all(&db).await?;
    Ok(Json(TaskWithComments { task, comments }))
}

/// The body of `POST /tasks/{id}/comments`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewComment {
    body: String,
}

/// `POST /tasks/{id}/comments`: comments on one of the tenant's tasks.
async fn create_comment(
    Extension(db): Extension<TenantConnection>,
    id: Result<Path<i32>, PathRejection>,
    body: Result<Json<NewComment>, JsonRejection>,
) -> Result<(StatusCode, Json<comment::Model>), Error> {
    relational(&db)?;
    let (Path(task_id), Json(body)) = (id?, body?);
    let text = body.body.trim();
    if text.is_empty() || text.chars().count() > 10_000 {
        return Err(Error::InvalidField { field: "body", reason: "1 to 10000 characters" });
    }
    let txn = db.begin().await?;
    task::Entity::find_by_id(task_id).one(&txn).await?.ok_or(Error::NotFound { what: "task", id: task_id })?;
    let comment = comment::ActiveModel {
        tenant_id: Set(db.id().to_string()),
        task_id: Set(task_id),
        body: Set(text.to_owned()),
        created_at: Set(ChronoUtc::now()),
        ..Default::default()
    }
    .insert(&txn)
    .await?;
    txn.commit().await?;
    invalidate_dashboard(&db).await?;
    Ok((StatusCode::CREATED, Json(comment)))
}

/// `GET /dashboard`: the tenant's counts, the cache-scoped [`dashboard_stats`] model.
async fn dashboard(Extension(db): Extension<TenantConnection>) -> Result<Json<dashboard_stats::Model>, Error> {
    relational(&db)?;
    // Read through the tenant's cache namespace: computed on a miss and kept for the
    // model's time to live; the writes above drop it, so counts are never stale.
    let ttl = match <dashboard_stats::Entity as tenancy::TenantScoped>::SCOPE {
        tenancy::Scope::Cache { ttl, .. } => ttl,
        tenancy::Scope::Table { .. } => None,
    };
    let stats = db
        .cache()
        .get_or_load(&dashboard_key(), ttl, || async { Ok::<_, Error>(dashboard_stats::compute(&db).await?) })
        .await?;
    Ok(Json(stats))
}

/// A note kept in the tenant's cache namespace: served for tenants of every mode,
/// cache-isolated ones included.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Note {
    text: String,
}

/// How long a note lives in the cache.
const NOTE_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// `PUT /notes/{key}`: stores a note in the tenant's cache for an hour.
async fn put_note(
    Extension(db): Extension<TenantConnection>,
    key: Result<Path<String>, PathRejection>,
    body: Result<Json<Note>, JsonRejection>,
) -> Result<StatusCode, Error> {
    let (Path(key), Json(note)) = (key?, body?);
    if note.text.chars().count() > 10_000 {
        return Err(Error::InvalidField { field: "text", reason: "at most 10000 characters" });
    }
    db.cache().set(&TenantKey::new("notes", key), &note, Some(NOTE_TTL)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /notes/{key}`: the tenant's note, `404` if it has none under that key.
async fn show_note(
    Extension(db): Extension<TenantConnection>,
    key: Result<Path<String>, PathRejection>,
) -> Result<Json<Note>, Error> {
    let Path(key) = key?;
    db.cache().get(&TenantKey::new("notes", key.clone())).await?.map(Json).ok_or(Error::NoteNotFound { key })
}

/// Where the tenant's dashboard summary is cached.
fn dashboard_key() -> TenantKey {
    TenantKey::new("dashboard_stats", dashboard_stats::SUMMARY)
}

/// Drops the tenant's cached dashboard after a write changed its counts.
async fn invalidate_dashboard(db: &TenantConnection) -> Result<(), Error> {
    db.cache().delete(&dashboard_key()).await?;
    Ok(())
}

/// A trimmed name or title of 1 to 200 characters.
fn short_text(field: &'static str, value: String) -> Result<String, Error> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > 200 {
        return Err(Error::InvalidField { field, reason: "1 to 200 characters" });
    }
    Ok(value.to_owned())
}
