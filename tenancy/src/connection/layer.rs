//! A [tower](https://docs.rs/tower) layer that finds the tenant of each HTTP request.
//!
//! [`TenantLayer`] resolves the tenant id from the request ([`TenantResolver`]), opens
//! its handle with [`Tenancy::tenant`], puts the [`TenantConnection`] in the request's
//! extensions and runs the inner service inside [`scope`](crate::scope), so handlers
//! read it either way: as an extension (axum's `Extension<TenantConnection>`) or with
//! [`current`](crate::current).
//!
//! A request whose tenant id is missing, invalid, unknown or not ready gets a
//! `404 Not Found` with a short plain-text body that names no tenant; a suspended tenant
//! gets `503 Service Unavailable` with a `Retry-After` header
//! ([`TenantLayer::retry_after`], default [`DEFAULT_RETRY_AFTER`]) and a body that gives no
//! reason; a tenant whose server cannot be reached ([`Error::ServerUnavailable`]) gets
//! `503 Service Unavailable` with a `Retry-After` of [`SERVER_RETRY_AFTER`] and the body
//! `server 'NAME' cannot be reached` (the registered server's name, else its `host:port`);
//! any other error gets a `500 Internal Server Error`, logged with `tracing` and not
//! shown to the client.
//!
//! # Custom domains and subdomains
//!
//! [`TenantResolver::Domain`] looks the request's host up among the tenants' custom
//! domains ([`crate::domains`], from the live registry: no query per request), and finds
//! nothing for a host no tenant has, so the next resolver of a
//! [`FirstOf`](TenantResolver::FirstOf) is asked. Put it before
//! [`Subdomain`](TenantResolver::Subdomain): `FirstOf(vec![Domain, Subdomain { .. }])`
//! serves customers' domains and the tenants' subdomains side by side.
//!
//! The two never disagree silently. When one of them decides a request and the other
//! names a different tenant that exists for the same host (a tenant's custom domain
//! `beta.example.com` while `beta` is another tenant under the base domain `example.com`),
//! the request gets `421 Misdirected Request` and the conflict is logged with both tenant
//! ids, whatever their order: it is served as neither tenant. A subdomain whose label is
//! no tenant is no disagreement: with `Domain` first, `www.example.com` as a tenant's
//! custom domain is served as that tenant when `www` is not a tenant (with `Subdomain`
//! first it is read as the tenant `www`, which does not exist: `404`).
//!
//! A tenant with a pool of its own (database isolation, and schema or table tenants bound
//! through their login roles) has it opened before the inner service runs, so an
//! unreachable server is answered before the handler is. When the server goes away while
//! the handler runs (its pool was open), the handle notices on the failed call, and the
//! handler's response is replaced by that same `503`: whatever it answered was the
//! failure's consequence.
//!
//! ```no_run
//! # async fn demo(tenancy: tenancy::Tenancy) {
//! use tenancy::{TenantLayer, TenantResolver};
//!
//! let layer = TenantLayer::new(tenancy, TenantResolver::header("x-tenant"));
//! // With axum: `Router::new().route(...).layer(layer)`.
//! # let _ = layer;
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{CONTENT_TYPE, HOST, RETRY_AFTER};
use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use tower_layer::Layer;
use tower_service::Service;

use crate::{Error, Tenancy, TenantConnection, TenantId};

/// Where a request names its tenant.
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantResolver {
    /// The first label of the `Host` header under `base_domain`: `acme.example.com`
    /// with base `example.com` is tenant `acme`. The port, if any, is ignored; a host
    /// with more than one label above the base names no tenant.
    Subdomain {
        /// The domain the tenants' subdomains are under, such as `example.com`.
        base_domain: String,
    },
    /// The value of this header.
    Header(HeaderName),
    /// The first path segment: `/acme/projects` is tenant `acme`, and the inner service
    /// sees the request as `/projects` (the query kept), so routes don't repeat it.
    ///
    /// With axum, wrap the whole `Router` (`layer.layer(router)`, served through
    /// `axum::ServiceExt::into_make_service`) rather than calling `Router::layer`: axum
    /// routes a request before the layers of its routes run, so they cannot rewrite it.
    PathPrefix,
    /// The request's host (the `Host` header, else the URI's; the port ignored) when it is
    /// one of the tenants' custom domains ([`crate::domains`], added with
    /// [`Tenancy::add_domain`] or `adddomain`): that domain's tenant. A host no tenant has
    /// finds nothing, so in a [`FirstOf`](Self::FirstOf) the next resolver is asked. See
    /// the [module docs](self#custom-domains-and-subdomains) for how it and
    /// [`Subdomain`](Self::Subdomain) are kept from disagreeing.
    Domain,
    /// Each resolver in turn: the first one that finds a tenant id in the request decides,
    /// as in `FirstOf(vec![TenantResolver::header("x-tenant"), TenantResolver::Subdomain { .. }])`
    /// (the header if the request has one, the subdomain otherwise). A later resolver is
    /// not asked when an earlier one names a tenant that does not exist: the request gets
    /// the `404`, it never falls through to another tenant.
    ///
    /// The layer resolves a tenant; it does not authenticate anyone. A header or a path
    /// is whatever the client sends, so with a header first any client can name any
    /// tenant: an application that signs users in per subdomain puts `Subdomain` first
    /// (or only), or checks that the signed-in user belongs to the handle's tenant.
    FirstOf(Vec<TenantResolver>),
}

impl TenantResolver {
    /// [`TenantResolver::Header`] for a header name known at compile time, such as
    /// `"x-tenant"`.
    ///
    /// # Panics
    /// When `name` is not a valid header name (as [`HeaderName::from_static`]: it must
    /// be lowercase).
    pub fn header(name: &'static str) -> Self {
        Self::Header(HeaderName::from_static(name))
    }

    /// The resolvers a request is asked in order: a [`FirstOf`](Self::FirstOf) flattened
    /// (nested ones are asked depth first, which is the same order).
    fn flatten(&self, into: &mut Vec<TenantResolver>) {
        match self {
            Self::FirstOf(resolvers) => resolvers.iter().for_each(|resolver| resolver.flatten(into)),
            other => into.push(other.clone()),
        }
    }

    /// Whether this resolver reads the request's host.
    fn reads_host(&self) -> bool {
        matches!(self, Self::Subdomain { .. } | Self::Domain)
    }

    /// The tenant id the request names, and for [`TenantResolver::PathPrefix`] the URI
    /// without it; `None` when the request names none. [`TenantResolver::Domain`] needs the
    /// domains and is resolved by [`Resolvers::resolve`].
    fn resolve(&self, request: &Request<impl Sized>) -> Option<(String, Option<Uri>)> {
        match self {
            Self::Subdomain { base_domain } => {
                let host = host(request)?;
                let host = host.rsplit_once(':').map_or(host, |(name, _port)| name).to_ascii_lowercase();
                let base = base_domain.trim_matches('.').to_ascii_lowercase();
                let label = host.strip_suffix(&base)?.strip_suffix('.')?;
                (!label.is_empty() && !label.contains('.')).then(|| (label.to_owned(), None))
            }
            Self::Header(name) => Some((request.headers().get(name)?.to_str().ok()?.trim().to_owned(), None)),
            Self::PathPrefix => {
                let uri = request.uri();
                let rest = uri.path().strip_prefix('/')?;
                let (id, path) = match rest.find('/') {
                    Some(slash) => (&rest[..slash], &rest[slash..]),
                    None => (rest, "/"),
                };
                if id.is_empty() {
                    return None;
                }
                let path_and_query = match uri.query() {
                    Some(query) => format!("{path}?{query}"),
                    None => path.to_owned(),
                };
                let mut parts = uri.clone().into_parts();
                parts.path_and_query = Some(PathAndQuery::try_from(path_and_query).ok()?);
                Some((id.to_owned(), Some(Uri::from_parts(parts).ok()?)))
            }
            Self::Domain => None,
            Self::FirstOf(resolvers) => resolvers.iter().find_map(|resolver| resolver.resolve(request)),
        }
    }
}

/// The request's host: the `Host` header, else the URI's (HTTP/2's `:authority`).
fn host(request: &Request<impl Sized>) -> Option<&str> {
    match request.headers().get(HOST) {
        Some(value) => value.to_str().ok(),
        None => request.uri().host(),
    }
}

/// A [`TenantResolver`] ready to ask: flattened, and knowing whether it needs the
/// domains (the common resolvers then stay one synchronous pass).
#[derive(Debug)]
struct Resolvers {
    resolver: TenantResolver,
    /// The leaves in order, when one of them is [`TenantResolver::Domain`].
    with_domains: Option<Vec<TenantResolver>>,
}

/// What the request names.
enum Named {
    /// No tenant.
    Nobody,
    /// A tenant id, and the URI without it ([`TenantResolver::PathPrefix`]).
    Tenant(String, Option<Uri>),
    /// Two tenants, by its domain and by its subdomain: served as neither.
    Conflict { host: String, by_domain: TenantId, by_subdomain: String },
}

/// What one resolver found, taken from the request before any await (a request body
/// need not be `Sync`, so the request is not held across one).
enum Found {
    Id(Option<(String, Option<Uri>)>),
    Host(Option<crate::Domain>),
}

impl Resolvers {
    fn new(resolver: TenantResolver) -> Resolvers {
        let mut leaves = Vec::new();
        resolver.flatten(&mut leaves);
        let with_domains = leaves.contains(&TenantResolver::Domain).then_some(leaves);
        Resolvers { resolver, with_domains }
    }

    /// What `request` names. Without a [`TenantResolver::Domain`] this is synchronous
    /// (the returned future is ready at once).
    fn resolve(
        &self,
        request: &Request<impl Sized>,
        tenancy: &Tenancy,
    ) -> impl Future<Output = crate::Result<Named>> + Send + 'static {
        use futures_util::future::Either;

        let Some(leaves) = &self.with_domains else {
            // The common resolvers: answered here, nothing kept for later.
            let named = match self.resolver.resolve(request) {
                Some((id, uri)) => Named::Tenant(id, uri),
                None => Named::Nobody,
            };
            return Either::Left(std::future::ready(Ok(named)));
        };
        let found: Vec<(bool, Found)> = leaves
            .iter()
            .map(|leaf| {
                let found = match leaf {
                    TenantResolver::Domain => Found::Host(host(request).and_then(crate::Domain::from_host)),
                    other => Found::Id(other.resolve(request)),
                };
                (leaf.reads_host(), found)
            })
            .collect();
        let host = host(request).map(str::to_owned);
        let tenancy = tenancy.clone();
        Either::Right(async move {
            // Every host-based answer, for the disagreement check.
            let mut by_domain = None;
            let mut by_subdomain = None;
            let mut winner: Option<(String, Option<Uri>)> = None;
            for (reads_host, leaf) in found {
                let answer = match leaf {
                    Found::Host(Some(domain)) => {
                        let owner = tenancy.domain_owner(&domain).await?;
                        if let Some(owner) = &owner {
                            by_domain.get_or_insert_with(|| owner.clone());
                        }
                        owner.map(|owner| (owner.to_string(), None))
                    }
                    Found::Host(None) => None,
                    Found::Id(answer) => {
                        if reads_host && let Some((id, _)) = &answer {
                            by_subdomain.get_or_insert_with(|| id.clone());
                        }
                        answer
                    }
                };
                if winner.is_none() {
                    winner = answer;
                }
            }
            let Some((id, uri)) = winner else { return Ok(Named::Nobody) };
            if let (Some(by_domain), Some(by_subdomain)) = (by_domain, by_subdomain)
                && by_domain.as_str() != by_subdomain
                && (id == by_subdomain || id == by_domain.as_str())
                && subdomain_tenant_exists(&tenancy, &by_subdomain).await?
            {
                let host = host.unwrap_or_default();
                return Ok(Named::Conflict { host, by_domain, by_subdomain });
            }
            Ok(Named::Tenant(id, uri))
        })
    }
}

/// Whether the id a subdomain names is a tenant (in any state): a label that is no
/// tenant does not disagree with a domain.
async fn subdomain_tenant_exists(tenancy: &Tenancy, id: &str) -> crate::Result<bool> {
    let Ok(id) = TenantId::new(id.to_owned()) else { return Ok(false) };
    match tenancy.tenant(&id).await {
        Err(Error::TenantNotFound { .. }) => Ok(false),
        Ok(_) | Err(Error::TenantNotReady { .. } | Error::TenantSuspended { .. } | Error::TenantMoving { .. }) => {
            Ok(true)
        }
        Err(other) => Err(other),
    }
}

/// A tower [`Layer`] that resolves each request's tenant (see the [module](self)).
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
#[derive(Debug, Clone)]
pub struct TenantLayer {
    tenancy: Tenancy,
    resolvers: Arc<Resolvers>,
    retry_after: Duration,
}

/// What the `503` of a tenant whose server cannot be reached tells clients to wait.
pub const SERVER_RETRY_AFTER: Duration = Duration::from_secs(5);

/// What a suspended tenant's `503` tells clients to wait by default.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(300);

impl TenantLayer {
    /// A layer that finds tenants in `tenancy` by `resolver`.
    pub fn new(tenancy: Tenancy, resolver: TenantResolver) -> Self {
        Self { tenancy, resolvers: Arc::new(Resolvers::new(resolver)), retry_after: DEFAULT_RETRY_AFTER }
    }

    /// The `Retry-After` of a suspended tenant's `503` (whole seconds; default
    /// [`DEFAULT_RETRY_AFTER`]).
    pub fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = wait;
        self
    }
}

impl<S> Layer<S> for TenantLayer {
    type Service = TenantService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TenantService {
            inner,
            tenancy: self.tenancy.clone(),
            resolvers: Arc::clone(&self.resolvers),
            retry_after: self.retry_after,
        }
    }
}

/// The service [`TenantLayer`] wraps around an inner service.
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
#[derive(Clone)]
pub struct TenantService<S> {
    inner: S,
    tenancy: Tenancy,
    resolvers: Arc<Resolvers>,
    retry_after: Duration,
}

impl<S> fmt::Debug for TenantService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantService")
            .field("tenancy", &self.tenancy)
            .field("resolver", &self.resolvers.resolver)
            .finish()
    }
}

/// The future of [`TenantService`].
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub type TenantFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

impl<S, B, ResBody> Service<Request<B>> for TenantService<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    ResBody: From<&'static str> + From<String>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = TenantFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone that was not made ready stays behind (tower's `Service` docs).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let tenancy = self.tenancy.clone();
        let resolved = self.resolvers.resolve(&request, &tenancy);
        let retry_after = self.retry_after.as_secs();
        Box::pin(async move {
            let (id, uri) = match resolved.await {
                Ok(Named::Tenant(id, uri)) => (id, uri),
                Ok(Named::Nobody) => return Ok(plain(StatusCode::NOT_FOUND, "tenant not found\n")),
                Ok(Named::Conflict { host, by_domain, by_subdomain }) => {
                    tracing::error!(
                        host = %host.escape_debug(),
                        domain_tenant = %by_domain,
                        subdomain_tenant = %by_subdomain,
                        "the host is one tenant's custom domain and names another tenant as a subdomain; serving neither"
                    );
                    return Ok(plain(StatusCode::MISDIRECTED_REQUEST, "this host names two tenants\n"));
                }
                Err(err) => {
                    tracing::error!(error = %crate::error_chain(&err), "cannot read the custom domains");
                    return Ok(plain(StatusCode::INTERNAL_SERVER_ERROR, "internal server error\n"));
                }
            };
            let Ok(id) = TenantId::new(id) else {
                return Ok(plain(StatusCode::NOT_FOUND, "tenant not found\n"));
            };
            let handle = match tenancy.tenant(&id).await {
                Ok(handle) => handle,
                Err(Error::TenantNotFound { .. } | Error::TenantNotReady { .. }) => {
                    return Ok(plain(StatusCode::NOT_FOUND, "tenant not found\n"));
                }
                Err(Error::TenantSuspended { .. }) => {
                    let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, "tenant suspended\n");
                    response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(retry_after));
                    return Ok(response);
                }
                Err(Error::TenantMoving { .. }) => {
                    // A move takes seconds: ask to come back in one.
                    let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, "tenant is being moved\n");
                    response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(1u64));
                    return Ok(response);
                }
                Err(err) => {
                    tracing::error!(tenant = %id, error = %crate::error_chain(&err), "cannot open the tenant's handle");
                    return Ok(plain(StatusCode::INTERNAL_SERVER_ERROR, "internal server error\n"));
                }
            };
            match handle.open_pool().await {
                Ok(()) => {}
                Err(Error::ServerUnavailable { server, .. }) => return Ok(server_unavailable(&server)),
                Err(err) => {
                    tracing::error!(tenant = %id, error = %crate::error_chain(&err), "cannot open the tenant's pool");
                    return Ok(plain(StatusCode::INTERNAL_SERVER_ERROR, "internal server error\n"));
                }
            }
            if let Some(uri) = uri {
                *request.uri_mut() = uri;
            }
            request.extensions_mut().insert::<TenantConnection>(handle.clone());
            let response = crate::scope(handle.clone(), inner.call(request)).await?;
            Ok(match handle.unavailable_server() {
                Some(server) => server_unavailable(server),
                None => response,
            })
        })
    }
}

/// The `503` of a tenant whose server cannot be reached, naming the server.
fn server_unavailable<ResBody: From<String>>(server: &str) -> Response<ResBody> {
    let mut response = Response::new(ResBody::from(format!("server '{server}' cannot be reached\n")));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(SERVER_RETRY_AFTER.as_secs()));
    response
}

/// A response with `status` and a plain-text `body`.
fn plain<ResBody: From<&'static str>>(status: StatusCode, body: &'static str) -> Response<ResBody> {
    let mut response = Response::new(ResBody::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(
        resolver: &TenantResolver,
        uri: &str,
        headers: &[(&'static str, &'static str)],
    ) -> Option<(String, Option<String>)> {
        let mut request = Request::builder().uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(()).unwrap();
        resolver.resolve(&request).map(|(id, uri)| (id, uri.map(|uri| uri.to_string())))
    }

    #[test]
    fn subdomain() {
        let r = TenantResolver::Subdomain { base_domain: "example.com".into() };
        assert_eq!(resolve(&r, "/", &[("host", "acme.example.com")]), Some(("acme".into(), None)));
        assert_eq!(resolve(&r, "/", &[("host", "ACME.Example.com:8443")]), Some(("acme".into(), None)));
        assert_eq!(resolve(&r, "http://acme.example.com/x", &[]), Some(("acme".into(), None)));
        assert_eq!(resolve(&r, "/", &[("host", "example.com")]), None);
        assert_eq!(resolve(&r, "/", &[("host", "a.b.example.com")]), None);
        assert_eq!(resolve(&r, "/", &[("host", "acmeexample.com")]), None);
        assert_eq!(resolve(&r, "/", &[("host", "acme.example.org")]), None);
        assert_eq!(resolve(&r, "/", &[]), None);
    }

    #[test]
    fn header() {
        let r = TenantResolver::header("x-tenant");
        assert_eq!(resolve(&r, "/", &[("x-tenant", "acme")]), Some(("acme".into(), None)));
        assert_eq!(resolve(&r, "/", &[]), None);
    }

    #[test]
    fn first_of() {
        let r = TenantResolver::FirstOf(vec![
            TenantResolver::header("x-tenant"),
            TenantResolver::Subdomain { base_domain: "example.com".into() },
        ]);
        let host = ("host", "beta.example.com");
        assert_eq!(resolve(&r, "/", &[("x-tenant", "acme"), host]), Some(("acme".into(), None)));
        assert_eq!(resolve(&r, "/", &[host]), Some(("beta".into(), None)));
        // An unknown id in the header is the request's answer: no fall-through.
        assert_eq!(resolve(&r, "/", &[("x-tenant", "nobody"), host]), Some(("nobody".into(), None)));
        assert_eq!(resolve(&r, "/", &[("host", "example.com")]), None);
        assert_eq!(resolve(&TenantResolver::FirstOf(Vec::new()), "/", &[host]), None);
        let r = TenantResolver::FirstOf(vec![TenantResolver::header("x-tenant"), TenantResolver::PathPrefix]);
        assert_eq!(resolve(&r, "/acme/projects", &[]), Some(("acme".into(), Some("/projects".into()))));
        assert_eq!(resolve(&r, "/acme/projects", &[("x-tenant", "beta")]), Some(("beta".into(), None)));
    }

    #[test]
    fn path_prefix() {
        let r = TenantResolver::PathPrefix;
        assert_eq!(resolve(&r, "/acme/projects", &[]), Some(("acme".into(), Some("/projects".into()))));
        assert_eq!(resolve(&r, "/acme/projects?page=2", &[]), Some(("acme".into(), Some("/projects?page=2".into()))));
        assert_eq!(resolve(&r, "/acme", &[]), Some(("acme".into(), Some("/".into()))));
        assert_eq!(resolve(&r, "/acme?x", &[]), Some(("acme".into(), Some("/?x".into()))));
        assert_eq!(resolve(&r, "/", &[]), None);
        assert_eq!(resolve(&r, "//projects", &[]), None);
    }
}
