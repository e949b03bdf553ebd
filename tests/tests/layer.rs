//! The tower layer behind a real axum server: each resolver finds the request's tenant,
//! handlers see only that tenant's data (through the extension and through
//! `tenancy::current()`), and unknown, not-ready or missing tenants get a 404.

use std::net::SocketAddr;

use crate::common;

use axum::extract::Request;
use axum::routing::get;
use axum::{Extension, Router, ServiceExt};
use example_app::Migrator;
use example_app::entities::project;
use sea_orm::prelude::ChronoUtc;
use sea_orm::{ActiveModelTrait, ConnectionTrait, DbBackend, EntityTrait, QueryOrder, Set, Statement};
use tenancy::{Isolation, NewTenant, Tenancy, TenantConnection, TenantId, TenantLayer, TenantResolver};
use tenancy_migrate::MigrateOnCreate;
use tenancy_test_support::{PgMaster, TempDir, unique_name};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower_layer::Layer;

async fn names(db: &TenantConnection) -> String {
    let projects = project::Entity::find().order_by_asc(project::Column::Id).all(db).await.expect("list projects");
    projects.into_iter().map(|p| p.name).collect::<Vec<_>>().join(",")
}

async fn by_extension(Extension(db): Extension<TenantConnection>) -> String {
    names(&db).await
}

async fn by_current() -> String {
    names(&tenancy::current().expect("tenant in scope")).await
}

/// Serves the router on a fresh port, with `layer` on its routes (`Router::layer`), or
/// around the whole router when `outside` (needed when the layer rewrites the URI, as
/// axum routes before route layers run).
async fn serve(layer: TenantLayer, outside: bool) -> SocketAddr {
    let app = Router::new().route("/projects", get(by_extension)).route("/current", get(by_current));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    if outside {
        let app = ServiceExt::<Request>::into_make_service(layer.layer(app));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    } else {
        let app = app.layer(layer);
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    }
    addr
}

/// A one-shot HTTP/1.1 GET; returns the status code and the body.
async fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut request = format!("GET {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")) {
        request.push_str("Host: localhost\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
    let status = head.split(' ').nth(1).expect("status").parse().expect("numeric status");
    let chunked = head.lines().any(|line| line.eq_ignore_ascii_case("transfer-encoding: chunked"));
    (status, if chunked { dechunk(body) } else { body.to_owned() })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

async fn database_tenant(pg: &PgMaster, tenancy: &Tenancy, id: &TenantId, project: &str) {
    let new = NewTenant::new(id.clone(), format!("{id} Inc."), Isolation::Database)
        .expect("a valid new tenant")
        .database(pg.new_database("pw"))
        .migrate(true);
    tenancy.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.expect("create tenant");
    insert_project(tenancy, id.as_str(), project).await;
}

/// Gives tenant `id` a project named `name`, through its handle.
async fn insert_project(tenancy: &Tenancy, id: &str, name: &str) {
    let db = tenancy.tenant(id).await.expect("handle");
    project::ActiveModel {
        tenant_id: Set(id.to_owned()),
        name: Set(name.to_owned()),
        created_at: Set(ChronoUtc::now()),
        ..Default::default()
    }
    .insert(&db)
    .await
    .expect("insert project");
}

#[tokio::test]
async fn layer_resolves_tenants_over_http() {
    let Some(pg) = PgMaster::create().await else { return };
    let dir = TempDir::new();
    let tenancy = pg.tenancy(&dir).await;
    let a: TenantId = unique_name("a").parse().expect("id");
    let b: TenantId = unique_name("b").parse().expect("id");
    let c: TenantId = unique_name("c").parse().expect("id");
    tokio::join!(
        database_tenant(&pg, &tenancy, &a, "alpha"),
        database_tenant(&pg, &tenancy, &b, "beta"),
        database_tenant(&pg, &tenancy, &c, "gamma"),
    );
    tenancy
        .master()
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE tenancy_tenants SET status = 'provisioning' WHERE tenant_id = $1",
            [c.to_string().into()],
        ))
        .await
        .expect("mark c not ready");
    common::until_registry_follows(&tenancy, c.as_str(), Result::is_err).await.expect_err("c is not served");

    let (a, b, c) = (a.as_str(), b.as_str(), c.as_str());
    let header = serve(TenantLayer::new(tenancy.clone(), TenantResolver::header("x-tenant")), false).await;
    assert_eq!(get_with(header, "/projects", &[("X-Tenant", a)]).await, (200, "alpha".to_owned()));
    assert_eq!(get_with(header, "/projects", &[("X-Tenant", b)]).await, (200, "beta".to_owned()));
    assert_eq!(get_with(header, "/current", &[("X-Tenant", a)]).await, (200, "alpha".to_owned()));
    assert_eq!(get_with(header, "/current", &[("X-Tenant", b)]).await, (200, "beta".to_owned()));
    for headers in [&[("X-Tenant", "nobody")][..], &[("X-Tenant", c)], &[("X-Tenant", "Not An Id!")], &[]] {
        let (status, body) = get_with(header, "/projects", headers).await;
        assert_eq!(status, 404, "{headers:?}");
        assert!(![a, b, c].iter().any(|id| body.contains(id)), "{body}");
    }

    let subdomain = serve(
        TenantLayer::new(tenancy.clone(), TenantResolver::Subdomain { base_domain: "example.test".to_owned() }),
        false,
    )
    .await;
    let host = format!("{a}.example.test:8080");
    assert_eq!(get_with(subdomain, "/projects", &[("Host", &host)]).await, (200, "alpha".to_owned()));
    let host = format!("{b}.example.test");
    assert_eq!(get_with(subdomain, "/current", &[("Host", &host)]).await, (200, "beta".to_owned()));
    assert_eq!(get_with(subdomain, "/projects", &[("Host", "example.test")]).await.0, 404);
    let host = format!("{a}.example.other");
    assert_eq!(get_with(subdomain, "/projects", &[("Host", &host)]).await.0, 404);

    let prefix = serve(TenantLayer::new(tenancy, TenantResolver::PathPrefix), true).await;
    assert_eq!(get_with(prefix, &format!("/{a}/projects"), &[]).await, (200, "alpha".to_owned()));
    assert_eq!(get_with(prefix, &format!("/{b}/current?x=1"), &[]).await, (200, "beta".to_owned()));
    assert_eq!(get_with(prefix, &format!("/{c}/projects"), &[]).await.0, 404);
    assert_eq!(get_with(prefix, "/projects", &[]).await.0, 404);
}

#[tokio::test]
async fn a_tenant_the_layer_cannot_open_is_a_500_that_names_nothing() {
    let Some(pg) = PgMaster::create().await else { return };
    let dir = TempDir::new();
    let tenancy = pg.tenancy(&dir).await;
    let good: TenantId = unique_name("good").parse().expect("id");
    let broken: TenantId = unique_name("broken").parse().expect("id");
    tokio::join!(database_tenant(&pg, &tenancy, &good, "fine"), database_tenant(&pg, &tenancy, &broken, "unreachable"),);
    // The registry row no longer says where the tenant's database is.
    tenancy
        .master()
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE tenancy_tenants SET config = '{}' WHERE tenant_id = $1",
            [broken.to_string().into()],
        ))
        .await
        .expect("corrupt the registry row");
    common::until_registry_follows(&tenancy, broken.as_str(), Result::is_err).await.expect_err("broken is refused");

    let addr = serve(TenantLayer::new(tenancy, TenantResolver::header("x-tenant")), false).await;
    let (status, body) = get_with(addr, "/projects", &[("X-Tenant", broken.as_str())]).await;
    assert_eq!(status, 500);
    assert_eq!(body, "internal server error\n", "no tenant, path or cause is shown to the client");
    assert_eq!(get_with(addr, "/projects", &[("X-Tenant", good.as_str())]).await, (200, "fine".to_owned()));
}

/// The raw response head of a GET, for its headers.
async fn head_of(addr: SocketAddr, path: &str, tenant: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nx-tenant: {tenant}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response.split_once("\r\n\r\n").expect("head and body").0.to_ascii_lowercase()
}

/// A suspended tenant: the registry keeps why and since when, `tenancy.tenant` answers a
/// typed error, the layer answers 503 with `Retry-After` and no reason, other tenants are
/// served, and resuming serves it again. Only ready tenants can be suspended.
#[tokio::test]
async fn a_suspended_tenant_gets_503_with_retry_after_until_resumed() {
    let dir = TempDir::new();
    let tenancy = dir.sqlite_builder().connect().await.expect("connect");
    for id in ["acme", "globex"] {
        let new = NewTenant::new(id, id, Isolation::Table).expect("a valid new tenant").migrate(true);
        tenancy.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.expect("create");
    }
    let layer = TenantLayer::new(tenancy.clone(), TenantResolver::header("x-tenant"))
        .retry_after(std::time::Duration::from_secs(42));
    let addr = serve(layer, false).await;

    let suspended = tenancy.suspend_tenant("acme", Some("unpaid invoice 7".to_owned())).await.expect("suspend");
    assert_eq!(suspended.status(), tenancy::TenantStatus::Suspended);
    let row = tenancy
        .master()
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT status, suspended_reason, suspended_at IS NOT NULL FROM tenancy_tenants WHERE tenant_id = 'acme'",
        ))
        .await
        .expect("read the row")
        .expect("the row");
    assert_eq!(row.try_get_by_index::<String>(0).unwrap(), "suspended");
    assert_eq!(row.try_get_by_index::<String>(1).unwrap(), "unpaid invoice 7");
    assert!(row.try_get_by_index::<bool>(2).unwrap());

    let err = tenancy.tenant("acme").await.unwrap_err();
    assert!(
        matches!(&err, tenancy::Error::TenantSuspended { tenant, reason } if tenant == "acme" && reason.as_deref() == Some("unpaid invoice 7")),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "Tenant 'acme' is suspended: unpaid invoice 7");
    let head = head_of(addr, "/projects", "acme").await;
    assert!(head.starts_with("http/1.1 503"), "{head}");
    assert!(head.contains("\r\nretry-after: 42"), "{head}");
    assert_eq!(get_with(addr, "/projects", &[("x-tenant", "acme")]).await, (503, "tenant suspended\n".to_owned()));
    assert_eq!(get_with(addr, "/projects", &[("x-tenant", "globex")]).await.0, 200);

    let resumed = tenancy.resume_tenant("acme").await.expect("resume");
    assert_eq!((resumed.status(), resumed.suspension()), (tenancy::TenantStatus::Ready, None));
    assert_eq!(get_with(addr, "/projects", &[("x-tenant", "acme")]).await.0, 200);
    // Resuming a ready tenant changes nothing; unknown tenants are named as such.
    assert_eq!(tenancy.resume_tenant("acme").await.expect("resume again").status(), tenancy::TenantStatus::Ready);
    assert!(matches!(tenancy.suspend_tenant("nobody", None).await, Err(tenancy::Error::TenantNotFound { .. })));
    // A tenant still being provisioned is not marked.
    tenancy
        .master()
        .execute_unprepared("UPDATE tenancy_tenants SET status = 'provisioning' WHERE tenant_id = 'globex'")
        .await
        .unwrap();
    assert!(matches!(tenancy.suspend_tenant("globex", None).await, Err(tenancy::Error::TenantNotReady { .. })));
    assert_eq!(tenancy.get_tenant("globex").await.unwrap().status(), tenancy::TenantStatus::Provisioning);
}

/// Index and sequential scans of the master's framework tables (`public.tenancy_*`), the
/// registry `tenancy_tenants` among them, read once no session of the master database is
/// left: a backend sends its pending table statistics when it exits, so what the counters
/// show then is every scan the sessions made (PostgreSQL 15 otherwise holds them back
/// for up to a second, or longer under contention).
async fn framework_table_scans(pg: &PgMaster) -> std::collections::BTreeMap<String, i64> {
    let sessions = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while tenancy_test_support::count(&pg.admin, sessions, vec![pg.name.as_str().into()]).await > 0 {
        assert!(std::time::Instant::now() < deadline, "sessions of the master database did not end");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let master = pg.connect().await;
    let rows = master
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT relname::text, (coalesce(seq_scan, 0) + coalesce(idx_scan, 0))::bigint \
             FROM pg_stat_user_tables WHERE schemaname = 'public' AND relname LIKE 'tenancy\\_%'",
        ))
        .await
        .expect("read the table statistics");
    master.close().await.expect("close");
    rows.iter().map(|row| (row.try_get_by_index(0).expect("name"), row.try_get_by_index(1).expect("scans"))).collect()
}

/// Starts a `Tenancy` (with or without the live registry) serving `tenants` through the
/// layer, sends one request and waits for its live registry, sends `requests` requests per
/// tenant, stops everything, and returns the scans of each framework table its sessions made.
async fn scans_of_a_server(
    pg: &PgMaster,
    dir: &TempDir,
    live: bool,
    tenants: &[(&TenantId, &str)],
    requests: usize,
) -> std::collections::BTreeMap<String, i64> {
    let before = framework_table_scans(pg).await;
    let tenancy = pg.builder(dir).live_registry(live).connect().await.expect("connect");
    let app = Router::new().route("/projects", get(by_extension));
    let app = app.layer(TenantLayer::new(tenancy.clone(), TenantResolver::header("x-tenant")));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let server = tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    // One request starts the live registry; it is then awaited without lookups, so the
    // registry reads before it is live (this request's, and the feed's first read of the
    // whole registry) are the same in every run.
    let (first, project) = tenants[0];
    assert_eq!(get_with(addr, "/projects", &[("x-tenant", first.as_str())]).await, (200, project.to_owned()));
    if live {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !tenancy.registry_is_live() {
            assert!(std::time::Instant::now() < deadline, "the live registry did not start");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    for _ in 0..requests {
        for (id, project) in tenants {
            assert_eq!(get_with(addr, "/projects", &[("x-tenant", id.as_str())]).await, (200, (*project).to_owned()));
        }
    }
    server.abort();
    let _ = server.await;
    tenancy.master().clone().close().await.expect("close the master pool");
    drop(tenancy);
    let after = framework_table_scans(pg).await;
    after.into_iter().map(|(table, scans)| (table.clone(), scans - before.get(&table).copied().unwrap_or(0))).collect()
}

/// Once the registry is live, a request through the layer for a known, ready tenant (a
/// schema tenant and a database tenant) reads no framework table of the master database,
/// the registry included: two servers' runs, one request per tenant and fifty more, scan
/// them equally often. The same runs without the live registry show the requests'
/// registry reads, so the counters do see them.
#[tokio::test]
async fn a_live_registry_serves_requests_without_reading_the_registry() {
    let Some(pg) = PgMaster::create().await else { return };
    let dir = TempDir::new();
    let setup = pg.tenancy(&dir).await;
    let (schema, database): (TenantId, TenantId) =
        (unique_name("scan_s").parse().expect("id"), unique_name("scan_d").parse().expect("id"));
    let new = NewTenant::new(schema.clone(), "S", Isolation::Schema).expect("a valid new tenant").migrate(true);
    setup.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.expect("create the schema tenant");
    let handle = setup.tenant(&schema).await.expect("handle");
    project::ActiveModel {
        tenant_id: Set(schema.to_string()),
        name: Set("sigma".to_owned()),
        created_at: Set(ChronoUtc::now()),
        ..Default::default()
    }
    .insert(&handle)
    .await
    .expect("insert project");
    drop(handle);
    database_tenant(&pg, &setup, &database, "delta").await;
    setup.master().clone().close().await.expect("close the setup's master pool");
    drop(setup);

    let tenants = [(&schema, "sigma"), (&database, "delta")];
    const REQUESTS: usize = 50;
    for live in [true, false] {
        let base = scans_of_a_server(&pg, &dir, live, &tenants, 0).await;
        let loaded = scans_of_a_server(&pg, &dir, live, &tenants, REQUESTS).await;
        eprintln!("live registry {live}: scans with no more requests {base:?}, with {REQUESTS} more each {loaded:?}");
        let registry = |scans: &std::collections::BTreeMap<String, i64>| scans.get("tenancy_tenants").copied();
        assert!(registry(&base).is_some_and(|scans| scans > 0), "the counters see the registry's reads: {base:?}");
        if live {
            assert_eq!(loaded, base, "requests for known tenants read framework tables of the master");
        } else {
            let per_request = registry(&loaded).unwrap_or(0) - registry(&base).unwrap_or(0);
            let requests = i64::try_from(REQUESTS * tenants.len()).expect("small");
            assert!(per_request >= requests, "the control reads the registry per request: {per_request}");
        }
    }
}

/// Custom domains beside subdomains, in both orders: a tenant's domain is served as that
/// tenant (case, port and trailing dot of the `Host` aside, international names by their
/// punycode), a host that is one tenant's domain and another tenant's subdomain gets 421
/// in either order, and without a live registry each request reads the domains table, so
/// an addition or removal applies at once.
#[tokio::test]
async fn custom_domains_and_subdomains_never_disagree_silently() {
    let dir = TempDir::new();
    let tenancy = dir.sqlite_builder().connect().await.expect("connect");
    for (id, project) in [("acme", "acme's"), ("globex", "globex's"), ("beta", "beta's")] {
        let new = NewTenant::new(id, id, Isolation::Table).expect("a valid new tenant").migrate(true);
        tenancy.create_tenant(new, &MigrateOnCreate::new(&Migrator)).await.expect("create");
        insert_project(&tenancy, id, project).await;
    }
    for name in ["shop.acme.test", "bücher.test", "beta.example.test", "www.example.test"] {
        tenancy.add_domain("acme", &name.parse().expect("domain"), false).await.expect("add domain");
    }
    let subdomain = || TenantResolver::Subdomain { base_domain: "example.test".to_owned() };
    let domain_first = serve(
        TenantLayer::new(tenancy.clone(), TenantResolver::FirstOf(vec![TenantResolver::Domain, subdomain()])),
        false,
    )
    .await;
    let subdomain_first = serve(
        TenantLayer::new(tenancy.clone(), TenantResolver::FirstOf(vec![subdomain(), TenantResolver::Domain])),
        false,
    )
    .await;
    for addr in [domain_first, subdomain_first] {
        for host in ["shop.acme.test", "SHOP.Acme.test.:8080", "xn--bcher-kva.test"] {
            assert_eq!(get_with(addr, "/projects", &[("Host", host)]).await, (200, "acme's".to_owned()), "{host}");
        }
        assert_eq!(get_with(addr, "/current", &[("Host", "globex.example.test")]).await, (200, "globex's".to_owned()));
        // acme's domain, beta's subdomain: neither.
        assert_eq!(
            get_with(addr, "/projects", &[("Host", "beta.example.test")]).await,
            (421, "this host names two tenants\n".to_owned())
        );
        for host in ["nobody.test", "127.0.0.1:80", "example.test"] {
            assert_eq!(get_with(addr, "/projects", &[("Host", host)]).await.0, 404, "{host}");
        }
    }
    // `www` is no tenant: the domain decides when it comes first; the subdomain (no such
    // tenant) when it does.
    assert_eq!(get_with(domain_first, "/projects", &[("Host", "www.example.test")]).await, (200, "acme's".to_owned()));
    assert_eq!(get_with(subdomain_first, "/projects", &[("Host", "www.example.test")]).await.0, 404);

    // Without a live registry every request reads the table: changes apply at once.
    let unlive = dir.sqlite_builder().live_registry(false).connect().await.expect("connect");
    let addr = serve(TenantLayer::new(unlive.clone(), TenantResolver::Domain), false).await;
    assert_eq!(get_with(addr, "/projects", &[("Host", "shop.globex.test")]).await.0, 404);
    unlive.add_domain("globex", &"shop.globex.test".parse().expect("domain"), false).await.expect("add");
    assert_eq!(get_with(addr, "/projects", &[("Host", "shop.globex.test")]).await, (200, "globex's".to_owned()));
    unlive.remove_domain(&"shop.globex.test".parse().expect("domain")).await.expect("remove");
    assert_eq!(get_with(addr, "/projects", &[("Host", "shop.globex.test")]).await.0, 404);
}
