//! The one place that turns a configuration into a gateway stack.
//!
//! Read it top to bottom: the edge service records who is calling, the
//! router picks a route, the route's target enforces its body limit and
//! forwards through the proxy; operational errors are rescued into problem
//! responses at the route's edge so the router never sees an error.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::shared::SharedService;
use axum::body::Body;
use futures_util::future::BoxFuture;
use http::{Request, Response, StatusCode, header};
use http_body_util::{LengthLimitError, Limited};
use tower::{Service, ServiceBuilder, ServiceExt};
use towergate_auth::{AuthFailure, AuthLayer, ClearedHeaders, IpFilterLayer};
use towergate_core::body::ResponseBody;
use towergate_core::{BoxError, Problem, RequestId, TrustedProxies};
use towergate_observe::access_log::{LogFormat, Sink};
use towergate_observe::{
    AccessLogLayer, Metrics, ObserveLayer, RecordLayer, RecordUpstreamLayer, RequestIdLayer,
    TraceLayer,
};
use towergate_proxy::{Client, Proxy, RouteSettings};
use towergate_ratelimit::error::RateLimited;
use towergate_ratelimit::{ConcurrencyLimitLayer, RateLimitLayer};
use towergate_routing::{Route as RoutingRoute, Router};

use crate::balance;
use crate::config::schema::{self, Config, ValueMatch};
use crate::config::validate::{check_structure, has_user_info, parse_net, size_value};
use crate::config::{ConfigError, ConfigErrors, parse_duration};
use crate::policy::{self, Registry};
use crate::tls;

/// The service a route resolves to.
pub type RouteService = SharedService<Request<Body>, Response<Body>, Infallible>;

/// The body of what the edge answers: the router's, wrapped by the observe
/// layers (or not watched, with observation off). hyper takes it as it is:
/// no box around it for a common type.
pub type EdgeBody = towergate_observe::body::ResponseBody<ResponseBody<Body>>;

/// The whole stack, from the edge: what a listener serves.
pub type EdgeStackService = SharedService<Request<Body>, Response<EdgeBody>, Infallible>;

/// A compiled configuration: everything needed to serve, nothing bound yet.
#[derive(Debug)]
pub struct Compiled {
    /// State kept across reloads.
    pub registry: Arc<Registry>,
    /// The configuration it was compiled from.
    pub config: Arc<Config>,
    /// The request-handling stack.
    pub stack: Arc<Stack>,
    /// Listeners to bind.
    pub listeners: Vec<ListenerPlan>,
    /// Connection-level settings.
    pub server: ServerSettings,
}

/// A listener to bind.
#[derive(Clone, Debug)]
pub struct ListenerPlan {
    /// Name for logs.
    pub name: String,
    /// Address.
    pub addr: SocketAddr,
    /// TLS, if terminated here.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Whether HTTP/2 is offered.
    pub http2: bool,
}

/// Connection-level settings (not hot-reloadable: they apply to listeners).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSettings {
    /// Largest request head.
    pub max_header_bytes: usize,
    /// Time to receive a request head.
    pub header_read_timeout: Duration,
    /// Most open connections.
    pub max_connections: usize,
    /// Drain time on shutdown.
    pub drain_timeout: Duration,
    /// Time between "not ready" and closing the listeners on shutdown.
    pub shutdown_delay: Duration,
    /// Time an HTTP/2 connection with no stream open is kept.
    pub http2_idle_timeout: Duration,
    /// Time a write to a client may stay blocked before the connection is
    /// closed.
    pub send_timeout: Duration,
}

/// The request-handling part of a compiled configuration; swapped whole on
/// reload.
#[derive(Debug)]
pub struct Stack {
    pub(crate) edge: EdgeStackService,
    pub(crate) trusted: TrustedProxies,
    /// Identity headers of any route's authentication: no client may set
    /// them, on any route.
    pub(crate) cleared: ClearedHeaders,
    /// Each balanced upstream's pool (one per upstream, shared by its
    /// routes).
    pub(crate) pools: Vec<(String, balance::ProxyPool)>,
}

impl Stack {
    /// Starts the DNS and SRV endpoints of this stack's pools from those of
    /// `previous` (the stack a reload replaces), pool by pool with the same
    /// key: a reload then neither empties a pool until its first lookup nor
    /// leaves it empty when that lookup fails; and each endpoint's health,
    /// ejection and latency estimate with them.
    pub(crate) fn adopt_resolved(&self, previous: &Stack) {
        for (key, pool) in &self.pools {
            if let Some((_, old)) = previous.pools.iter().find(|(k, _)| k == key) {
                pool.adopt_resolved(old);
                // Health and ejections too: a reload (a SIGHUP for log
                // rotation included) must not put a dead endpoint back.
                pool.adopt_state(old);
            }
        }
    }

    /// Each balanced upstream's endpoints: health, load, latency, ejection.
    pub fn upstream_states(&self) -> Vec<(String, Vec<towergate_balance::EndpointState>)> {
        self.pools
            .iter()
            .map(|(name, pool)| (name.clone(), pool.snapshot()))
            .collect()
    }

    /// Every pool's endpoints, with its upstream (one pool per upstream).
    pub(crate) fn pool_states(&self) -> Vec<PoolState> {
        self.pools
            .iter()
            .map(|(name, pool)| PoolState {
                upstream: name.clone(),
                endpoints: pool.snapshot(),
            })
            .collect()
    }
}

/// One pool's state, for the metrics: see [`Stack::pool_states`].
pub(crate) struct PoolState {
    pub(crate) upstream: String,
    pub(crate) endpoints: Vec<towergate_balance::EndpointState>,
}

/// Compiles a configuration, reporting every error with its path.
pub fn compile(cfg: &Config) -> Result<Compiled, ConfigErrors> {
    compile_with(cfg, Arc::new(Registry::default()))
}

/// Compiles a configuration only to check it (`towergate check`): every
/// error [`compile`] finds, without its side effects (no access-log file
/// created, no DNS lookup or health check started).
pub fn check(cfg: &Config) -> Result<Compiled, ConfigErrors> {
    compile_with(cfg, Arc::new(Registry::check_only()))
}

/// Compiles a configuration, reusing the state in `registry` (rate-limit
/// buckets, store connections) that should survive a reload.
pub fn compile_with(cfg: &Config, registry: Arc<Registry>) -> Result<Compiled, ConfigErrors> {
    // What an earlier compile left staged is not this one's.
    registry.discard_staged();
    let compiled = compile_staged(cfg, registry.clone());
    if compiled.is_err() {
        // A refused configuration's new authenticators (a JWKS fetcher, an
        // introspection client and its secret) stop now, not at the next
        // reload.
        registry.discard_staged();
    }
    compiled
}

fn compile_staged(cfg: &Config, registry: Arc<Registry>) -> Result<Compiled, ConfigErrors> {
    let mut errs = Vec::new();
    check_structure(cfg, &mut errs);
    let base = cfg.base_dir.clone();
    let server = server_settings(&cfg.server);
    let trusted = TrustedProxies::new(
        cfg.server
            .trusted_proxies
            .iter()
            .filter_map(|s| parse_net(s)),
    );
    let via = cfg.server.via.clone().unwrap_or_else(|| "towergate".into());
    let default_max_body = cfg
        .server
        .max_body
        .as_ref()
        .and_then(|s| size_value(s).ok())
        .unwrap_or(10_000_000);

    let listeners = compile_listeners(cfg, base.as_deref(), &mut errs);

    // One pooled client per named upstream, one shared by inline URLs of
    // each protocol: pools are shared by all routes using them.
    let mut forwards = Forwards::new(cfg, &registry, &trusted, &via, base.as_deref(), &mut errs);
    // Authentication methods are shared by the routes that name them (one
    // JWKS fetcher, one token cache).
    let (providers, provider_keys) = policy::providers(cfg, &registry, &mut errs);

    // One response cache for the gateway, if any route caches.
    let cache_store = if cfg.routes.iter().any(|r| r.cache.is_some()) {
        policy::cache_store(&cfg.cache, &registry, &mut errs)
    } else {
        None
    };
    let mut cache_routes = HashMap::new();

    let mut builder = Router::builder();
    // Every auth layer's identity headers, cleared from every request at
    // the edge (see `ClearedHeaders`).
    let mut cleared = Vec::new();
    for (i, r) in cfg.routes.iter().enumerate() {
        let p = format!("routes[{i}]");
        let route = match routing_route(r, &p) {
            Ok(route) => route,
            Err(e) => {
                errs.push(e);
                continue;
            }
        };
        // Templates, regexes and rewrites are checked by the router itself;
        // building the route alone ties its error to this path.
        if let Err(e) = Router::<()>::builder().route(route.clone(), ()).build() {
            errs.push(ConfigError::new(format!("{p}.match"), e.to_string()));
            continue;
        }
        let max_body = r
            .max_body
            .as_ref()
            .and_then(|s| size_value(s).ok())
            .unwrap_or(default_max_body);
        // The route's target: a proxied upstream, an aggregate of several
        // upstream calls, a redirect or a fixed answer.
        let target = if !r.upstream.is_empty() {
            let opts = ForwardOpts {
                preserve_host: r.preserve_host,
                host_rewrite: r.host_rewrite.clone(),
                timeout: r.timeout.clone(),
                route: r.name.clone(),
            };
            match forwards.get(&r.upstream, &opts, &format!("{p}.upstream")) {
                Ok(forward) => Target::Proxy(RouteTarget {
                    forward,
                    max_body,
                    route: Arc::from(r.name.as_str()),
                }),
                Err(e) => {
                    errs.extend(e);
                    continue;
                }
            }
        } else if let Some(a) = &r.aggregate {
            match crate::aggregate::target(
                a,
                r,
                &mut forwards,
                cfg.observability.request_id_header.as_deref(),
                &format!("{p}.aggregate"),
            ) {
                Ok(svc) => Target::Other(svc),
                Err(mut es) => {
                    errs.append(&mut es);
                    continue;
                }
            }
        } else if let Some(red) = &r.redirect {
            match policy::redirect(red, &format!("{p}.redirect"), &mut errs) {
                Some(svc) => Target::Other(svc),
                None => continue,
            }
        } else if let Some(f) = &r.respond {
            match policy::fixed_response(f, &format!("{p}.respond"), &mut errs) {
                Some(svc) => Target::Other(svc),
                None => continue,
            }
        } else {
            continue; // reported by check_structure
        };
        let rate_limit = r
            .rate_limit
            .as_ref()
            .map(|rl| {
                policy::rate_limit_layers(
                    &r.name,
                    rl,
                    &cfg.rate_limiting,
                    &registry,
                    r.auth.is_some(),
                    &format!("{p}.rate_limit"),
                    &mut errs,
                )
            })
            .unwrap_or_default();
        let concurrency = r.concurrency.as_ref().and_then(|c| {
            policy::concurrency_layer(
                c,
                &r.name,
                &registry,
                &format!("{p}.concurrency"),
                &mut errs,
            )
        });
        let auth = r.auth.as_ref().and_then(|a| {
            if let Some(req) = &a.require {
                policy::check_require(req, &format!("{p}.auth.require"), &mut errs);
            }
            policy::auth_layer(a, &providers, cfg, &format!("{p}.auth"), &mut errs)
        });
        if let Some(a) = &auth {
            cleared.push(a.cleared_headers().clone());
        }
        let ip =
            r.ip.as_ref()
                .and_then(|i| policy::ip_layer(i, &format!("{p}.ip"), &mut errs));
        let cors = r
            .cors
            .as_ref()
            .and_then(|c| policy::cors_layer(c, &format!("{p}.cors"), &mut errs));
        let compression = r
            .compression
            .as_ref()
            .and_then(|c| policy::compression_layer(c, &format!("{p}.compression"), &mut errs));
        let validate = r.validate.as_ref().and_then(|v| {
            // The proxy's own clock for a request body: the route's
            // `timeout`, else its upstream's, else the default.
            let body_timeout = r
                .timeout
                .as_deref()
                .or_else(|| {
                    cfg.upstreams
                        .get(&r.upstream)
                        .and_then(|u| u.timeout.as_deref())
                })
                .and_then(|t| parse_duration(t).ok())
                .unwrap_or(towergate_policy::validate::DEFAULT_BODY_TIMEOUT);
            policy::validate_layer(
                v,
                base.as_deref(),
                max_body,
                body_timeout,
                &format!("{p}.validate"),
                &mut errs,
            )
        });
        let transform = policy::transform_layer(
            r.request_headers.as_ref(),
            r.response_headers.as_ref(),
            &p,
            &mut errs,
        );
        let cache = match (&r.cache, &cache_store) {
            (Some(c), Some((_, store))) => {
                // Everything that decides what a cached entry holds: a
                // change to any of it purges the route's entries on reload.
                // `Debug`, not `Serialize`, which redacts credential
                // header values for display: a changed one must purge.
                let settings = format!(
                    "{:?}",
                    (
                        c,
                        &r.upstream,
                        &r.matcher,
                        &r.strip_prefix,
                        &r.rewrite,
                        &r.request_headers,
                        r.preserve_host,
                        &r.host_rewrite,
                    )
                );
                cache_routes.insert(r.name.clone(), settings);
                policy::cache_layer(
                    &r.name,
                    c,
                    r.request_headers.as_ref(),
                    store.clone(),
                    &format!("{p}.cache"),
                    &mut errs,
                )
            }
            _ => None,
        };
        let redirect_https = if r.redirect_https {
            policy::redirect(
                &schema::RedirectConfig {
                    https: true,
                    ..Default::default()
                },
                &format!("{p}.redirect_https"),
                &mut errs,
            )
        } else {
            None
        };
        let layers = RouteLayers {
            redirect_https,
            cors,
            compression,
            ip,
            auth,
            rate_limit: rate_limit.after_auth,
            rate_limit_before_auth: rate_limit.before_auth,
            decompress: r.decompress_request.then(policy::decompression),
            validate,
            transform,
            cache,
            concurrency,
        };
        builder = builder.route(
            route,
            route_stack(target, layers, &r.name, registry.metrics(), &trusted),
        );
    }

    // Balanced upstreams that no route uses yet: their settings are checked
    // now, not first by the reload that routes to them. Their pools are
    // built only to be checked (no DNS lookup, no health check), and
    // dropped.
    forwards.start_pools = false;
    for (name, u) in &cfg.upstreams {
        let balanced = !u.endpoints.is_empty() || u.dns.is_some() || u.srv.is_some();
        if balanced && !forwards.asked.contains(name) {
            let opts = ForwardOpts {
                preserve_host: false,
                host_rewrite: None,
                timeout: None,
                route: String::new(),
            };
            if let Err(Some(e)) = forwards.get(name, &opts, &format!("upstreams.{name}")) {
                errs.push(e);
            }
            forwards.pools.remove(name);
        }
    }

    let forget_endpoints_after = match &cfg.observability.forget_endpoints_after {
        None => towergate_observe::metrics::DEFAULT_FORGET_ENDPOINTS_AFTER,
        Some(d) => parse_duration(d).unwrap_or_else(|e| {
            errs.push(ConfigError::new("observability.forget_endpoints_after", e));
            Duration::ZERO
        }),
    };
    if !errs.is_empty() {
        return Err(ConfigErrors {
            source: None,
            errors: errs,
        });
    }
    let router = builder
        .build()
        .map_err(|e| ConfigErrors::one(None, ConfigError::new("routes", e.to_string())))?;
    let edge = edge_stack(cfg, &registry, router)?;
    let pools = forwards.pools.into_iter().collect();
    registry.commit_cache(cache_store, cache_routes);
    registry.commit_redis(crate::policy::redis_in_use(&cfg.rate_limiting).as_deref());
    registry.commit_authenticators(&provider_keys);
    registry.commit_memory(&policy::rate_limit_scopes(cfg));
    registry.commit_concurrency(
        &cfg.routes
            .iter()
            .filter(|r| r.concurrency.is_some())
            .map(|r| r.name.as_str())
            .collect(),
    );
    registry
        .metrics()
        .forget_endpoints_after(forget_endpoints_after);
    Ok(Compiled {
        registry,
        config: Arc::new(cfg.clone()),
        stack: Arc::new(Stack {
            edge,
            trusted,
            pools,
            // Credentials a forward-auth service may hand back in place of
            // the client's (`copy_headers: [authorization]`) are that
            // route's business: cleared on it, kept on every other.
            cleared: ClearedHeaders::merge(&cleared).without(&[
                http::header::AUTHORIZATION,
                http::header::COOKIE,
                http::header::PROXY_AUTHORIZATION,
                http::header::HOST,
            ]),
        }),
        listeners,
        server,
    })
}

/// What a route or an aggregate call forwards to, by upstream name or URL:
/// the clients and balanced pools built so far, shared by every user of
/// the same upstream with the same proxy settings.
pub(crate) struct Forwards<'a> {
    clients: HashMap<String, (Client, &'a schema::Upstream)>,
    inline_client: Result<Client, String>,
    pools: HashMap<String, balance::ProxyPool>,
    registry: &'a Registry,
    trusted: TrustedProxies,
    via: String,
    /// Whether pools built now start their DNS lookups and health checks
    /// (not when they are built only to check an unused upstream).
    start_pools: bool,
    /// The balanced upstreams a pool was asked for (built or failed).
    asked: std::collections::HashSet<String>,
    /// Per pool, the longest response timeout of the routes using it.
    patience: HashMap<String, Arc<std::sync::atomic::AtomicU64>>,
    /// `server.tunnel_idle_timeout`.
    tunnel_idle_timeout: Duration,
    /// `server.upgrade_protocols`.
    upgrade_protocols: Arc<[String]>,
}

/// Per-route proxy settings.
pub(crate) struct ForwardOpts {
    pub(crate) preserve_host: bool,
    pub(crate) host_rewrite: Option<String>,
    pub(crate) timeout: Option<String>,
    pub(crate) route: String,
}

impl<'a> Forwards<'a> {
    fn new(
        cfg: &'a Config,
        registry: &'a Registry,
        trusted: &TrustedProxies,
        via: &str,
        base: Option<&Path>,
        errs: &mut Vec<ConfigError>,
    ) -> Self {
        let mut clients = HashMap::new();
        for (name, u) in &cfg.upstreams {
            match build_client(u, base) {
                Ok(c) => {
                    clients.insert(name.clone(), (c, u));
                }
                Err(e) => errs.push(ConfigError::new(format!("upstreams.{name}.tls"), e)),
            }
        }
        Self {
            clients,
            inline_client: Client::builder().build().map_err(|e| e.to_string()),
            pools: HashMap::new(),
            start_pools: !registry.is_check_only(),
            asked: std::collections::HashSet::new(),
            patience: HashMap::new(),
            tunnel_idle_timeout: cfg
                .server
                .tunnel_idle_timeout
                .as_deref()
                .and_then(|t| parse_duration(t).ok())
                .unwrap_or(Duration::from_secs(3600)),
            upgrade_protocols: cfg
                .server
                .upgrade_protocols
                .clone()
                .unwrap_or_else(|| vec!["websocket".to_owned()])
                .into(),
            registry,
            trusted: trusted.clone(),
            via: via.to_owned(),
        }
    }

    /// The metrics handle, for the upstream recorders of aggregate calls.
    pub(crate) fn metrics(&self) -> towergate_observe::Metrics {
        self.registry.metrics().clone()
    }

    /// The forwarding service for `upstream`; `Err(None)` when the error
    /// was reported already (unknown upstream, client that failed).
    pub(crate) fn get(
        &mut self,
        upstream: &str,
        o: &ForwardOpts,
        path: &str,
    ) -> Result<Forward, Option<ConfigError>> {
        let (url, client, upstream_timeout, named) = if upstream.contains("://") {
            match &self.inline_client {
                Ok(c) => (upstream.to_owned(), c.clone(), None, None),
                Err(e) => return Err(Some(ConfigError::new(path, e.clone()))),
            }
        } else if let Some((c, u)) = self.clients.get(upstream) {
            (
                u.url.clone().unwrap_or_default(),
                c.clone(),
                u.timeout.as_deref(),
                Some(*u),
            )
        } else {
            return Err(None);
        };
        let upstream_timeout = upstream_timeout
            .and_then(|t| parse_duration(t).ok())
            .unwrap_or(Duration::from_secs(30));
        let body_idle_timeout = named
            .and_then(|u| u.body_idle_timeout.as_deref())
            .and_then(|t| parse_duration(t).ok())
            .unwrap_or(Duration::from_secs(300));
        let route_timeout = o.timeout.as_deref().and_then(|t| parse_duration(t).ok());
        match named {
            // Several endpoints: one balanced pool per upstream, shared by
            // every route that uses it (one set of health checks,
            // ejections and circuit-breaker counts). Its proxies have the
            // upstream's own settings; a route that differs (timeout,
            // preserve_host, host_rewrite) sends its own with each request.
            Some(u) if !u.endpoints.is_empty() || u.dns.is_some() || u.srv.is_some() => {
                let at = format!("upstreams.{upstream}");
                self.asked.insert(upstream.to_owned());
                let pool = match self.pools.get(upstream) {
                    Some(pool) => pool.clone(),
                    // Refused by the validation; not built, so that no log
                    // line or error of the pool's shows its password.
                    None if u.endpoints.iter().any(|e| has_user_info(e.url())) => {
                        return Err(None);
                    }
                    None => {
                        let settings = ProxySettings {
                            client,
                            timeout: upstream_timeout,
                            preserve_host: false,
                            host_rewrite: None,
                            trusted: self.trusted.clone(),
                            via: self.via.clone(),
                            route_settings: true,
                            tunnel_idle_timeout: self.tunnel_idle_timeout,
                            upgrade_protocols: self.upgrade_protocols.clone(),
                            body_idle_timeout,
                        };
                        let pool = balance::pool(
                            upstream,
                            u,
                            &settings,
                            self.registry.metrics(),
                            self.start_pools,
                            &at,
                        )
                        .map_err(Some)?;
                        self.pools.insert(upstream.to_owned(), pool.clone());
                        pool
                    }
                };
                let mut own = None;
                if let Some(t) = route_timeout.filter(|t| *t != upstream_timeout) {
                    own = Some(RouteSettings::new().timeout(t));
                }
                if o.preserve_host {
                    own = Some(own.unwrap_or_default().preserve_host(true));
                }
                if let Some(h) = &o.host_rewrite {
                    let at = path.strip_suffix(".upstream").unwrap_or(path);
                    own = Some(own.unwrap_or_default().host_override(h).map_err(|e| {
                        Some(ConfigError::new(
                            format!("{at}.host_rewrite"),
                            e.to_string(),
                        ))
                    })?);
                }
                let patience = self
                    .patience
                    .entry(upstream.to_owned())
                    .or_default()
                    .clone();
                balance::ProxyClassify::note_timeout(
                    &patience,
                    route_timeout.unwrap_or(upstream_timeout),
                );
                balance::balance(pool, u, &at, &o.route, self.registry.metrics(), patience)
                    .map(|b| Forward::Pool(b, own))
                    .map_err(Some)
            }
            _ => ProxySettings {
                client,
                timeout: route_timeout.unwrap_or(upstream_timeout),
                preserve_host: o.preserve_host,
                host_rewrite: o.host_rewrite.clone(),
                trusted: self.trusted.clone(),
                via: self.via.clone(),
                route_settings: false,
                tunnel_idle_timeout: self.tunnel_idle_timeout,
                upgrade_protocols: self.upgrade_protocols.clone(),
                body_idle_timeout,
            }
            .proxy(&url)
            .map(Forward::One)
            .map_err(|e| Some(ConfigError::new(path, e))),
        }
    }
}

/// The optional layers of one route.
struct RouteLayers {
    redirect_https: Option<RouteService>,
    cors: Option<Wrap>,
    compression: Option<Wrap>,
    ip: Option<IpFilterLayer>,
    auth: Option<AuthLayer>,
    rate_limit: Option<RateLimitLayer>,
    rate_limit_before_auth: Option<RateLimitLayer>,
    decompress: Option<Wrap>,
    validate: Option<Wrap>,
    transform: Option<Wrap>,
    cache: Option<Wrap>,
    concurrency: Option<ConcurrencyLimitLayer>,
}

/// Puts one layer around a route's service (built from config by
/// `policy`), boxing the result.
pub(crate) type Wrap = Box<dyn FnOnce(RouteService) -> RouteService>;

/// What a route ends in.
enum Target {
    /// Proxied to an upstream (one URL or a pool).
    Proxy(RouteTarget),
    /// Answered by the gateway or by several upstream calls: aggregate,
    /// redirect, fixed response.
    Other(RouteService),
}

/// Boxes any service into a [`RouteService`]: its body becomes the common
/// one, and an error (a layer's own failure) becomes a 500 problem, logged.
pub(crate) fn boxed<S, B>(svc: S) -> RouteService
where
    S: Service<Request<Body>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    SharedService::new(Rescue {
        inner: svc,
        not_ready: None,
    })
}

/// See [`boxed`]: errors become 500 problems, bodies the common body.
#[derive(Clone)]
struct Rescue<S> {
    inner: S,
    /// A readiness error, answered on the next call.
    not_ready: Option<Arc<str>>,
}

impl<S, B> Service<Request<Body>> for Rescue<S>
where
    S: Service<Request<Body>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => {
                let e: BoxError = e.into();
                self.not_ready = Some(Arc::from(ErrorChain(&*e).to_string()));
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let id = req.extensions().get::<towergate_core::RequestId>().cloned();
        if let Some(e) = self.not_ready.take() {
            return Box::pin(async move { Ok(layer_failed(&e, id)) });
        }
        let fut = self.inner.call(req);
        Box::pin(async move {
            Ok(match fut.await {
                Ok(rsp) => rsp.map(Body::new),
                Err(e) => {
                    let e: BoxError = e.into();
                    layer_failed(&ErrorChain(&*e).to_string(), id)
                }
            })
        })
    }
}

fn layer_failed(e: &str, request_id: Option<towergate_core::RequestId>) -> Response<Body> {
    tracing::error!(error = %e, "route layer failed");
    let mut problem = Problem::new(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(id) = request_id {
        problem = problem.instance_if_absent(id.as_str());
    }
    problem.into_full_response().map(Body::new)
}

/// Wraps `svc` in `layer`, mapping the layer's response body back to the
/// common one so every route has the same type.
fn wrap<L>(svc: RouteService, layer: L) -> RouteService
where
    L: tower::Layer<RouteService>,
    L::Service: Service<Request<Body>, Response = Response<ResponseBody<Body>>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    <L::Service as Service<Request<Body>>>::Future: Send + 'static,
{
    SharedService::new(
        ServiceBuilder::new()
            .map_response(|r: Response<ResponseBody<Body>>| r.map(Body::new))
            .layer(layer)
            .service(svc),
    )
}

/// A route's stack, built inside out; read the comments bottom to top for
/// the order a request meets them.
fn route_stack(
    target: Target,
    layers: RouteLayers,
    route: &str,
    metrics: &Metrics,
    trusted: &TrustedProxies,
) -> RouteService {
    // 10. The upstream's latency and status, per endpoint, for metrics, the
    //     span and the access log (a pool records each endpoint itself, see
    //     `balance.rs`; an aggregate records each call's upstream).
    let mut svc = match target {
        Target::Proxy(target) => match &target.forward {
            Forward::One(proxy) => {
                let upstream = proxy.upstream().to_owned();
                SharedService::new(
                    ServiceBuilder::new()
                        .layer(
                            // The observe layers read the endpoint from the
                            // observation; no response extension needed.
                            RecordUpstreamLayer::new(upstream)
                                .forget_when_dropped(true)
                                .metrics(metrics.clone())
                                .mark_response(false)
                                .record_request(false),
                        )
                        .service(target),
                )
            }
            Forward::Pool(..) => SharedService::new(target),
        },
        Target::Other(svc) => svc,
    };
    // 9. A concurrency limit guards the upstream: only requests that will
    //    reach it (not refused, not cache hits) take a slot.
    if let Some(c) = layers.concurrency {
        svc = wrap(svc, c);
    }
    // 8. The response cache: hits never reach the upstream; per-user
    //    responses are keyed by identity (known only after auth).
    if let Some(c) = layers.cache {
        svc = c(svc);
        let metrics = metrics.clone();
        let route: Arc<str> = Arc::from(route);
        svc = SharedService::new(svc.map_response(move |rsp: Response<Body>| {
            count_cache(&metrics, &route, &rsp);
            rsp
        }));
    }
    // 7. Header transforms: request edits are what the upstream (and the
    //    cache key) see; response edits sit outside the cache, so per-request
    //    values (request id) are never stored and replayed.
    if let Some(t) = layers.transform {
        svc = t(svc);
    }
    // 6. Validation of the request (methods, content type, JSON Schema,
    //    required parameters): after auth and limits, so anonymous or
    //    over-limit callers cannot make the gateway parse their bodies.
    if let Some(v) = layers.validate {
        svc = v(svc);
    }
    // 5. Compressed request bodies are decoded before validation reads them.
    if let Some(d) = layers.decompress {
        svc = d(svc);
    }
    // 4. Rate limits and quotas: after auth, so they can key on the caller's
    //    identity; refused requests get 429 with `RateLimit-*` and
    //    `Retry-After` and never reach the upstream.
    if let Some(l) = layers.rate_limit {
        svc = wrap(svc, l);
    }
    // 3. Authentication and authorization: 401/403 here; on success the
    //    `Identity` is in the extensions and the identity headers are set
    //    (incoming copies removed first, so clients cannot spoof them).
    //    The caller's identity goes to the access log right after, so the
    //    answers of every later layer (429, 400, cache hits) carry it.
    if let Some(a) = layers.auth {
        // One box for both: this is on every authenticated request.
        svc = wrap(
            svc,
            ServiceBuilder::new()
                .layer(a)
                .layer(RecordLayer::new())
                .into_inner(),
        );
    }
    // 2b. Limits marked `before_auth`: failed logins count too, and a
    //     caller over the limit costs no credential check.
    if let Some(l) = layers.rate_limit_before_auth {
        svc = wrap(svc, l);
    }
    // 2. IP allow/deny: the cheapest refusal, before any credential is read.
    if let Some(i) = layers.ip {
        svc = wrap(svc, i);
    }
    // 1. Compression of responses (cached ones included), then CORS:
    //    preflights carry no credentials, so they are answered before auth,
    //    and CORS headers go on refusals too, so a browser can read a 401.
    if let Some(c) = layers.compression {
        svc = c(svc);
    }
    if let Some(c) = layers.cors {
        svc = c(svc);
    }
    // 0b. Plain-HTTP requests are sent to HTTPS before anything else.
    if let Some(redirect) = layers.redirect_https {
        svc = https_only(redirect, svc, trusted.clone());
    }
    // 0. The route's name goes to the observation first, so refusals above
    //    are counted under their route; refusals are counted by reason.
    let metrics = metrics.clone();
    SharedService::new(
        ServiceBuilder::new()
            .layer(RecordLayer::new())
            .map_response(move |rsp: Response<Body>| {
                count_refusal(&metrics, &rsp);
                rsp
            })
            .service(svc),
    )
}

/// Requests that came over TLS go to `inner`, the others to `redirect`.
/// Behind a TLS-terminating proxy the gateway sees plain HTTP: a trusted
/// peer's `X-Forwarded-Proto: https` counts as TLS (no redirect loop).
fn https_only(
    redirect: RouteService,
    inner: RouteService,
    trusted: TrustedProxies,
) -> RouteService {
    SharedService::new(tower::service_fn(move |req: Request<Body>| {
        let addr = req.extensions().get::<towergate_core::ClientAddr>();
        let forwarded_https = || {
            addr.is_some_and(|a| trusted.contains(a.peer.ip()))
                && req
                    .headers()
                    .get("x-forwarded-proto")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| {
                        v.split(',')
                            .next_back()
                            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
                    })
        };
        let tls = addr.is_some_and(|a| a.tls) || forwarded_https();
        let svc = if tls { inner.clone() } else { redirect.clone() };
        svc.oneshot(req)
    }))
}

/// Counts what the cache did with a request, from its `Cache-Status`
/// entry (ours is the last: RFC 9211 appends each cache's entry after the
/// upstream caches').
fn count_cache(metrics: &Metrics, route: &Arc<str>, rsp: &Response<Body>) {
    let Some(entry) = rsp
        .headers()
        .get_all("cache-status")
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
    else {
        return;
    };
    metrics.cache_request(route.clone(), cache_result(entry));
}

/// The metric label of one `Cache-Status` entry.
fn cache_result(entry: &str) -> &'static str {
    let params: Vec<&str> = entry.split(';').map(str::trim).skip(1).collect();
    let has = |p: &str| params.contains(&p);
    let fwd = params
        .iter()
        .find_map(|p| p.strip_prefix("fwd="))
        .unwrap_or("");
    let detail = params
        .iter()
        .find_map(|p| p.strip_prefix("detail="))
        .unwrap_or("");
    if has("hit") {
        if detail.starts_with("stale") || detail == "max-stale" {
            "stale"
        } else {
            "hit"
        }
    } else if detail == "stale-if-error" {
        "stale"
    } else if params.contains(&"fwd-status=304") {
        "revalidated"
    } else if matches!(fwd, "bypass" | "method") {
        "bypass"
    } else {
        // uri-miss, vary-miss, miss, a stale entry fetched anew, a refetch
        // the client asked for.
        "miss"
    }
}

fn count_refusal(metrics: &Metrics, rsp: &Response<Body>) {
    if let Some(f) = rsp.extensions().get::<AuthFailure>() {
        metrics.auth_failure(f.reason);
    }
    if let Some(r) = rsp.extensions().get::<RateLimited>() {
        metrics.rate_limited(r.limit().to_owned());
    }
}

/// The edge of the stack, in front of the router: request id (so everything
/// else sees it), the request span (so the rest logs inside it), metrics,
/// the access log. Built once per configuration; the metrics registry and
/// the access-log writer live in the registry and survive reloads.
fn edge_stack(
    cfg: &Config,
    registry: &Registry,
    router: Router<RouteService>,
) -> Result<EdgeStackService, ConfigErrors> {
    let obs = &cfg.observability;
    let one = |path: &str, e: String| ConfigErrors::one(None, ConfigError::new(path, e));
    let mut rid = RequestIdLayer::builder()
        .trust_incoming(obs.trust_request_id.unwrap_or(true))
        .generate(obs.generate_request_id.unwrap_or(true));
    if let Some(h) = &obs.request_id_header {
        rid = rid.header(h.clone());
    }
    let rid = rid
        .build()
        .map_err(|e| one("observability.request_id_header", e.to_string()))?;
    if !obs.enabled {
        return Ok(SharedService::new(
            ServiceBuilder::new()
                .map_response(|r: Response<ResponseBody<Body>>| {
                    r.map(towergate_observe::body::ResponseBody::unwatched)
                })
                .service(router),
        ));
    }
    let mut layer = ObserveLayer::builder()
        .request_id(rid)
        .metrics(registry.metrics().clone());
    if let Some(trace) = trace_layer(obs) {
        layer = layer.trace(trace);
    }
    if let Some(log) =
        access_log_layer(obs, registry, cfg.base_dir.as_deref()).map_err(|(p, e)| one(&p, e))?
    {
        layer = layer.access_log(log);
    }
    // One layer for the four: one future, one body wrapper each way (the
    // separate layers stacked cost a future, a box and a body wrapper
    // each). In place: the router gets the request as it came (an empty
    // body, most requests', is not wrapped at all).
    Ok(SharedService::new(
        ServiceBuilder::new()
            .layer(layer.build().in_place())
            .service(router),
    ))
}

/// The request span, when traces are exported: sampling is decided here
/// (parent-based, then `tracing.sample_ratio`), before any span is built,
/// so a request that is not sampled costs its trace context only
/// (`init_tracing` gives the OpenTelemetry SDK an always-on, parent-based
/// sampler to match). Without an exporter no subscriber layer wants the
/// span (the log layer filters it out), so there is none, and the client's
/// trace headers go to the upstream as they came.
fn trace_layer(obs: &schema::Observability) -> Option<TraceLayer> {
    obs.tracing.as_ref().map(|t| {
        TraceLayer::builder()
            .sample_ratio(t.sample_ratio.unwrap_or(DEFAULT_SAMPLE_RATIO))
            .b3(t.b3)
            .trust_sampled(t.trust_client_sampling)
            .build()
    })
}

/// `observability.tracing.sample_ratio` when not given.
const DEFAULT_SAMPLE_RATIO: f64 = 0.01;

fn access_log_layer(
    obs: &schema::Observability,
    registry: &Registry,
    base: Option<&Path>,
) -> Result<Option<AccessLogLayer>, (String, String)> {
    let a = &obs.access_log;
    if !a.enabled {
        return Ok(None);
    }
    let format = match a.format.as_deref().unwrap_or("json") {
        "json" => LogFormat::Json,
        "common" => LogFormat::Common,
        "combined" => LogFormat::Combined,
        other => {
            return Err((
                "observability.access_log.format".into(),
                format!("`{other}`: use json, common or combined"),
            ));
        }
    };
    // A relative path is the config file's directory's, as every other
    // file the configuration names.
    let sink = match a.sink.as_deref().unwrap_or("stdout") {
        "stdout" => Sink::Stdout,
        "stderr" => Sink::Stderr,
        // Checking: the file's directory must exist, but the file is not
        // created.
        path if registry.is_check_only() => {
            let file = resolve_path(base, path);
            check_sink(&file).map_err(|e| ("observability.access_log.sink".into(), e))?;
            Sink::writer(std::io::sink())
        }
        path => Sink::file(resolve_path(base, path)),
    };
    let key = format!(
        "{}\u{0}{sink:?}",
        serde_json::to_string(a).unwrap_or_default()
    );
    let metrics = registry.metrics().clone();
    registry
        .access_log(&key, || {
            AccessLogLayer::builder()
                .sink(sink)
                .format(format)
                .keep_query_params(a.keep_query.clone())
                .metrics(metrics)
                .build()
                .map_err(|e| e.to_string())
        })
        .map(Some)
        .map_err(|e| ("observability.access_log".into(), e))
}

/// What opening the access-log file at `run` would find wrong, found
/// without creating it: a directory in its place, an existing file that
/// cannot be appended to, a missing or read-only directory.
fn check_sink(file: &Path) -> Result<(), String> {
    if file.is_dir() {
        return Err(format!("`{}` is a directory", file.display()));
    }
    if file.exists() {
        // Opened for appending without `create`: nothing is made.
        return std::fs::OpenOptions::new()
            .append(true)
            .open(file)
            .map(drop)
            .map_err(|e| format!("cannot open `{}`: {e}", file.display()));
    }
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err(format!("`{}` is not a directory", dir.display())),
        Ok(m) if m.permissions().readonly() => Err(format!("`{}` is read-only", dir.display())),
        Ok(_) => Ok(()),
        Err(_) => Err(format!("`{}`: no such directory", dir.display())),
    }
}

fn server_settings(s: &schema::Server) -> ServerSettings {
    let dur = |v: &Option<String>, d: u64| {
        v.as_deref()
            .and_then(|t| parse_duration(t).ok())
            .unwrap_or(Duration::from_secs(d))
    };
    ServerSettings {
        max_header_bytes: s
            .max_header_bytes
            .as_ref()
            .and_then(|v| size_value(v).ok())
            .map(|n| n.clamp(8192, 16 << 20) as usize)
            .unwrap_or(64 * 1024),
        header_read_timeout: dur(&s.header_read_timeout, 10),
        max_connections: s.max_connections.unwrap_or(10_000),
        drain_timeout: dur(&s.drain_timeout, 30),
        shutdown_delay: dur(&s.shutdown_delay, 0),
        http2_idle_timeout: dur(&s.http2_idle_timeout, 180),
        send_timeout: dur(&s.send_timeout, 60),
    }
}

fn compile_listeners(
    cfg: &Config,
    base: Option<&Path>,
    errs: &mut Vec<ConfigError>,
) -> Vec<ListenerPlan> {
    let mut out = Vec::new();
    if let Some(l) = &cfg.listen
        && let Ok(addr) = l.parse()
    {
        out.push(ListenerPlan {
            name: "default".into(),
            addr,
            tls: None,
            http2: true,
        });
    }
    for (i, l) in cfg.listeners.iter().enumerate() {
        let Ok(addr) = l.addr.parse() else { continue };
        let tls = match &l.tls {
            None => None,
            Some(t) => match tls::server_config(t, base, l.http2, &format!("listeners[{i}].tls")) {
                Ok(c) => Some(c),
                Err(e) => {
                    errs.push(e);
                    continue;
                }
            },
        };
        out.push(ListenerPlan {
            name: l.name.clone().unwrap_or_else(|| format!("listener-{i}")),
            addr,
            tls,
            http2: l.http2,
        });
    }
    out
}

fn build_client(u: &schema::Upstream, base: Option<&Path>) -> Result<Client, String> {
    let mut b = Client::builder().http2_only(u.http2);
    if let Some(t) = u
        .connect_timeout
        .as_deref()
        .and_then(|t| parse_duration(t).ok())
    {
        b = b.connect_timeout(t);
    }
    if let Some(t) = u
        .keepalive_timeout
        .as_deref()
        .and_then(|t| parse_duration(t).ok())
    {
        b = b.pool_idle_timeout(t);
    }
    if let Some(tls) = &u.tls {
        if let Some(ca) = &tls.ca {
            b = b.ca_pem(read(base, ca)?);
        }
        if let (Some(c), Some(k)) = (&tls.client_cert, &tls.client_key) {
            b = b.client_cert_pem(read(base, c)?, read(base, k)?);
        }
        if let Some(n) = &tls.server_name {
            b = b.server_name(n.clone());
        }
    }
    b.build().map_err(|e| e.to_string())
}

pub(crate) fn resolve_path(base: Option<&Path>, p: &str) -> PathBuf {
    let path = PathBuf::from(p);
    match base {
        Some(b) if path.is_relative() => b.join(path),
        _ => path,
    }
}

fn read(base: Option<&Path>, p: &str) -> Result<Vec<u8>, String> {
    let path = resolve_path(base, p);
    std::fs::read(&path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))
}

fn routing_route(r: &schema::Route, p: &str) -> Result<RoutingRoute, ConfigError> {
    let m = &r.matcher;
    let mut route = RoutingRoute::new(r.name.as_str()).priority(r.priority);
    for h in m.host.iter().chain(m.hosts.iter()) {
        route = route.host(h.clone());
    }
    for (i, meth) in m.methods.iter().enumerate() {
        let parsed =
            http::Method::from_bytes(meth.to_ascii_uppercase().as_bytes()).map_err(|_| {
                ConfigError::new(
                    format!("{p}.match.methods[{i}]"),
                    format!("`{meth}` is not an HTTP method"),
                )
            })?;
        route = route.method(parsed);
    }
    route = match (&m.path, &m.path_prefix) {
        (Some(path), _) => route.path_exact(path.clone()),
        (None, Some(prefix)) => route.path_prefix(prefix.clone()),
        (None, None) => route.path_prefix("/"),
    };
    for (k, v) in &m.headers {
        if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
            return Err(ConfigError::new(
                format!("{p}.match.headers.{k}"),
                format!("`{k}` is not a header name"),
            ));
        }
        route = match value_rule(v) {
            Rule::Equals(s) => route.header_equals(k.clone(), s),
            Rule::Present => route.header_present(k.clone()),
            Rule::Regex(s) => route.header_regex(k.clone(), s),
        };
    }
    for (k, v) in &m.query {
        route = match value_rule(v) {
            Rule::Equals(s) => route.query_equals(k.clone(), s),
            Rule::Present => route.query_present(k.clone()),
            Rule::Regex(s) => route.query_regex(k.clone(), s),
        };
    }
    if r.strip_prefix {
        route = route.strip_prefix(true);
    }
    if let Some(t) = &r.rewrite {
        route = route.rewrite(t.clone());
    }
    Ok(route)
}

enum Rule {
    Equals(String),
    Present,
    Regex(String),
}

fn value_rule(v: &ValueMatch) -> Rule {
    match v {
        ValueMatch::Equals(s) => Rule::Equals(s.clone()),
        ValueMatch::Rule(r) => match (&r.equals, &r.regex) {
            (Some(e), _) => Rule::Equals(e.clone()),
            (None, Some(re)) => Rule::Regex(re.clone()),
            (None, None) => Rule::Present,
        },
    }
}

/// A route's target: body limit, then the proxy, with operational errors
/// turned into problem responses here so they carry the request id.
#[derive(Clone, Debug)]
struct RouteTarget {
    forward: Forward,
    max_body: u64,
    route: Arc<str>,
}

/// Where a route forwards: one upstream URL, or a balanced pool with the
/// route's own proxy settings, if it has any.
#[derive(Clone, Debug)]
pub(crate) enum Forward {
    One(Proxy),
    Pool(balance::ProxyBalance, Option<RouteSettings>),
}

/// What every proxy of a route shares, single or pooled.
#[derive(Clone, Debug)]
pub(crate) struct ProxySettings {
    pub(crate) client: Client,
    pub(crate) timeout: Duration,
    pub(crate) preserve_host: bool,
    pub(crate) host_rewrite: Option<String>,
    pub(crate) trusted: TrustedProxies,
    pub(crate) via: String,
    /// Whether a request's [`RouteSettings`] are used (a pool's proxies,
    /// shared by routes).
    pub(crate) route_settings: bool,
    /// `server.tunnel_idle_timeout`.
    pub(crate) tunnel_idle_timeout: Duration,
    /// `server.upgrade_protocols`.
    pub(crate) upgrade_protocols: Arc<[String]>,
    /// The upstream's `body_idle_timeout`.
    pub(crate) body_idle_timeout: Duration,
}

impl ProxySettings {
    pub(crate) fn proxy(&self, url: &str) -> Result<Proxy, String> {
        self.build_proxy(url, self.client.clone(), None)
    }

    /// The proxy to an endpoint reached by address but known by a name (one
    /// found through DNS): `client` sends the name as SNI, and the name is
    /// the upstream's Host unless the route preserves the client's Host or
    /// rewrites it.
    pub(crate) fn named_proxy(
        &self,
        url: &str,
        client: Client,
        host: String,
    ) -> Result<Proxy, String> {
        self.build_proxy(url, client, Some(host))
    }

    fn build_proxy(
        &self,
        url: &str,
        client: Client,
        named: Option<String>,
    ) -> Result<Proxy, String> {
        let mut pb = Proxy::builder(url)
            .client(client)
            .timeout(self.timeout)
            .preserve_host(self.preserve_host)
            .trusted_proxies(self.trusted.clone())
            .via(self.via.clone())
            .route_settings(self.route_settings)
            .tunnel_idle_timeout(Some(self.tunnel_idle_timeout))
            .upgrade_protocols(self.upgrade_protocols.iter().cloned())
            .body_idle_timeout(Some(self.body_idle_timeout));
        if let Some(h) = &self.host_rewrite {
            pb = pb.host_override(h.clone());
        } else if let Some(h) = named.filter(|_| !self.preserve_host) {
            pb = pb.host_override(h);
        }
        pb.build().map_err(|e| e.to_string())
    }
}

// === impl RouteTarget ===

impl Service<Request<Body>> for RouteTarget {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = RouteFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let request_id = req.extensions().get::<RequestId>().cloned();
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body) {
            let rsp = too_large(self.max_body, request_id.as_ref());
            return RouteFuture::Ready { rsp: Some(rsp) };
        }
        // Bodies without a declared length are counted as they stream. A
        // request without a body (most GETs) has nothing to count: it goes
        // on as it is instead of being wrapped and boxed again.
        let mut req = if http_body::Body::is_end_stream(req.body()) {
            req
        } else {
            let max = usize::try_from(self.max_body).unwrap_or(usize::MAX);
            req.map(|b| Body::new(Limited::new(b, max)))
        };
        let route = self.route.clone();
        let max_body = self.max_body;
        match &mut self.forward {
            // The proxy's own future, in place: no box, no `Oneshot`, no
            // clone of the proxy. `Proxy` is always ready (it queues
            // nothing); its readiness is still asked, as tower's contract
            // wants, and a refusal is answered like any proxy error.
            Forward::One(proxy) => {
                let mut cx = Context::from_waker(std::task::Waker::noop());
                match Service::<Request<Body>>::poll_ready(proxy, &mut cx) {
                    Poll::Ready(Ok(())) => RouteFuture::Proxy {
                        fut: proxy.call(req),
                        route,
                        max_body,
                        request_id,
                    },
                    Poll::Ready(Err(err)) => RouteFuture::Ready {
                        rsp: Some(rescue(&*err, &route, max_body, request_id.as_ref())),
                    },
                    Poll::Pending => {
                        let proxy = proxy.clone();
                        RouteFuture::Boxed {
                            fut: Box::pin(async move {
                                Ok(match proxy.oneshot(req).await {
                                    Ok(rsp) => rsp.map(Body::new),
                                    Err(err) => {
                                        rescue(&*err, &route, max_body, request_id.as_ref())
                                    }
                                })
                            }),
                        }
                    }
                }
            }
            Forward::Pool(pool, own) => {
                if let Some(own) = own {
                    req.extensions_mut().insert(own.clone());
                }
                let pool = pool.clone();
                RouteFuture::Boxed {
                    fut: Box::pin(async move {
                        Ok(match pool.oneshot(req).await {
                            Ok(rsp) => rsp.map(Body::new),
                            Err(err) => rescue(&*err, &route, max_body, request_id.as_ref()),
                        })
                    }),
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// [`RouteTarget`]'s future. A route with one upstream (the usual
    /// case) polls the proxy's future in place; a pool's future is boxed.
    #[project = RouteFutureProj]
    pub(crate) enum RouteFuture {
        Proxy {
            #[pin]
            fut: towergate_proxy::future::ResponseFuture,
            route: Arc<str>,
            max_body: u64,
            request_id: Option<RequestId>,
        },
        Boxed {
            fut: BoxFuture<'static, Result<Response<Body>, Infallible>>,
        },
        Ready {
            rsp: Option<Response<Body>>,
        },
    }
}

impl std::future::Future for RouteFuture {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            RouteFutureProj::Proxy {
                fut,
                route,
                max_body,
                request_id,
            } => Poll::Ready(Ok(match std::task::ready!(fut.poll(cx)) {
                Ok(rsp) => rsp.map(Body::new),
                Err(err) => rescue(&*err, route, *max_body, request_id.as_ref()),
            })),
            RouteFutureProj::Boxed { fut } => fut.as_mut().poll(cx),
            // Polled again after its answer (a contract breach): an error
            // answer rather than a panic.
            RouteFutureProj::Ready { rsp } => Poll::Ready(Ok(rsp.take().unwrap_or_else(|| {
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR)
                    .detail("response already taken")
                    .into_full_response()
                    .map(Body::new)
            }))),
        }
    }
}

fn too_large(max: u64, id: Option<&RequestId>) -> Response<Body> {
    let mut p = Problem::new(StatusCode::PAYLOAD_TOO_LARGE).detail(format!(
        "the request body is larger than the route's limit of {max} bytes"
    ));
    if let Some(id) = id {
        p = p.instance(id.as_str());
    }
    let mut rsp = p.into_full_response().map(Body::new);
    // The client's doing, not the upstream's answer.
    rsp.extensions_mut()
        .insert(towergate_core::GatewayAnswer::NotCalled);
    rsp
}

/// Maps an operational error to its problem response, logging the cause:
/// the client gets the status, the log gets the details.
fn rescue(
    err: &(dyn std::error::Error + Send + Sync + 'static),
    route: &str,
    max_body: u64,
    id: Option<&RequestId>,
) -> Response<Body> {
    let id_str = id.map(RequestId::as_str).unwrap_or("-");
    if towergate_core::is_caused_by::<LengthLimitError>(err) {
        tracing::info!(request_id = id_str, route, "request body over the limit");
        return too_large(max_body, id);
    }
    tracing::warn!(request_id = id_str, route, error = %ErrorChain(err), "upstream request failed");
    // The balancer's own refusals (no healthy endpoint, circuit open,
    // overall timeout) first, then the proxy's upstream failures.
    let mut p = towergate_balance::error::to_problem(err)
        .unwrap_or_else(|| towergate_proxy::error::to_problem(err));
    if let Some(id) = id {
        p = p.instance(id.as_str());
    }
    let mut rsp = p.into_full_response().map(Body::new);
    // No answer came from the upstream: a failed call, not its 502.
    rsp.extensions_mut()
        .insert(towergate_core::GatewayAnswer::NoResponse);
    rsp
}

/// Displays an error with its whole `source()` chain.
pub(crate) struct ErrorChain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cur = self.0.source();
        while let Some(e) = cur {
            write!(f, ": {e}")?;
            cur = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::cache_result;

    #[tokio::test]
    async fn a_failed_compile_leaves_no_authenticator_running() {
        use crate::config::{Format, parse_str};
        let cfg = |secret: &str, route_upstream: &str| {
            parse_str(
                &format!(
                    "listen: \"127.0.0.1:0\"\nauth_providers:\n  p: {{ jwt: {{ secret: \"{secret}\" }} }}\nroutes:\n  - name: a\n    upstream: \"{route_upstream}\"\n    auth: {{ any_of: [p] }}\n"
                ),
                Format::Yaml,
            )
            .unwrap()
        };
        let registry = std::sync::Arc::new(crate::policy::Registry::default());
        let good = cfg(
            "a secret of at least thirty-two bytes!!",
            "http://127.0.0.1:1",
        );
        assert!(super::compile_with(&good, registry.clone()).is_ok());
        assert_eq!(registry.authenticators_kept(), 1);
        // A reload with a new provider and an error elsewhere: refused.
        let bad = cfg("another secret, at least thirty-two bytes", "not a url");
        assert!(super::compile_with(&bad, registry.clone()).is_err());
        assert_eq!(
            registry.authenticators_kept(),
            1,
            "what the failed one built is dropped at once"
        );
        assert!(super::compile_with(&good, registry.clone()).is_ok());
        assert_eq!(registry.authenticators_kept(), 1);
    }

    #[test]
    fn cache_status_entries_map_to_metric_results() {
        for (entry, want) in [
            ("towergate; hit; ttl=60", "hit"),
            ("towergate; hit; ttl=3; detail=collapsed", "hit"),
            (
                "towergate; hit; ttl=-2; detail=stale-while-revalidate",
                "stale",
            ),
            ("towergate; hit; ttl=-2; detail=max-stale", "stale"),
            ("towergate; fwd=uri-miss; stored", "miss"),
            ("towergate; fwd=vary-miss", "miss"),
            ("towergate; fwd=miss", "miss"),
            (
                "towergate; fwd=stale; fwd-status=304; ttl=60",
                "revalidated",
            ),
            (
                "towergate; fwd=request; fwd-status=304; ttl=60",
                "revalidated",
            ),
            ("towergate; fwd=stale; stored", "miss"),
            ("towergate; fwd=request", "miss"),
            (
                "towergate; fwd=stale; fwd-status=503; ttl=-5; detail=stale-if-error",
                "stale",
            ),
            ("towergate; fwd=bypass", "bypass"),
            ("towergate; fwd=method", "bypass"),
        ] {
            assert_eq!(cache_result(entry), want, "{entry}");
        }
    }
}
