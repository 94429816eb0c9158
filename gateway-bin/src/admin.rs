//! The admin server: health and readiness probes, the effective
//! configuration (secrets redacted), routes, upstreams, reload, and the
//! dashboard. It runs on its own listener, loopback by default; a token is
//! required to expose it elsewhere, checked in constant time.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use towergate_core::Problem;

use crate::config::schema::Config;
use crate::live::Live;
use crate::reload::{ReloadOutcome, reload_now};

/// What the admin server needs.
#[derive(Clone, Debug)]
pub struct AdminState {
    /// The gateway's live state.
    pub live: Arc<Live>,
    /// The configuration file, for `/admin/reload` (none for the demo).
    pub config_path: Option<PathBuf>,
    /// A fixed bearer token. `None`: the token in effect for the live
    /// configuration (`TOWERGATE_ADMIN_TOKEN`, else `admin.token`), looked
    /// up on each request, so a reload that changes `admin.token` rotates
    /// it; without one there, the API is open (loopback only).
    pub token: Option<Arc<str>>,
}

/// A running admin server.
#[derive(Debug)]
pub struct AdminServer {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// Stops it.
    pub fn stop(self) {
        self.task.abort();
    }
}

/// The admin routes, for a loopback listener: without a token in effect
/// (see [`AdminState::token`]) the API is open.
pub fn router(state: AdminState) -> Router {
    router_for(state, false)
}

/// The admin routes; `exposed`: the listener is reachable from other hosts,
/// so a token is required whatever the live configuration says (a reload
/// cannot open it).
fn router_for(state: AdminState, exposed: bool) -> Router {
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/admin/config", get(config))
        .route("/admin/routes", get(routes))
        .route("/admin/upstreams", get(upstreams))
        .route("/admin/status", get(status))
        .route("/admin/reload", post(reload))
        .route("/admin/cache/purge", post(purge_cache))
        .route("/admin/cache/keys", get(cache_keys))
        .route_layer(middleware::from_fn_with_state(
            (state.clone(), exposed),
            require_token,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/", get(dashboard))
        .merge(protected)
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND).into_full_response() })
        .with_state(state)
}

/// Binds `addr` and serves the admin routes.
pub async fn start(addr: SocketAddr, state: AdminState) -> std::io::Result<AdminServer> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot bind the admin listener {addr}: {e}"),
        )
    })?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "admin listening");
    let app = router_for(state, !addr.ip().is_loopback());
    let task = tokio::spawn(serve(listener, app));
    Ok(AdminServer { addr, task })
}

/// How many connections the admin listener holds at once; more are closed
/// as they come. An operator's dashboard, a Prometheus or two and probes
/// need a handful: the cap keeps an exposed listener from taking the file
/// descriptors the proxy listeners need.
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// How many of those one client address may hold: a single client keeping
/// every slot busy would shut out the probes and the scrapes.
const ADMIN_MAX_PER_CLIENT: usize = 16;

/// The admin connections open per client address.
#[derive(Default)]
struct PerClient(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

/// A connection counted in [`PerClient`] until dropped.
struct ClientSlot(Arc<PerClient>, std::net::IpAddr);

impl PerClient {
    fn take(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<ClientSlot> {
        let mut open = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if *n >= ADMIN_MAX_PER_CLIENT {
            return None;
        }
        *n += 1;
        Some(ClientSlot(self.clone(), ip))
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = (self.0)
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// How long a connection may take to send a request's headers, idle
/// keep-alive included (the dashboard asks every few seconds).
const ADMIN_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(15);

/// Serves the admin routes over HTTP/1.1 until the task is aborted.
async fn serve(listener: TcpListener, app: Router) {
    let slots = Arc::new(tokio::sync::Semaphore::new(ADMIN_MAX_CONNECTIONS));
    let per_client = Arc::new(PerClient::default());
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::warn!(error = %e, "admin listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(client_slot) = per_client.take(peer.ip()) else {
            tracing::debug!(%peer, "admin listener: this client's connection limit reached; closing a new connection");
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("admin listener: connection limit reached; closing a new connection");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _slots = (slot, client_slot);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(ADMIN_HEADER_READ_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
}

/// Starts the admin server the live configuration asks for (`admin`
/// section), if enabled. `TOWERGATE_ADMIN_TOKEN` overrides `admin.token`.
pub async fn start_from_config(
    live: Arc<Live>,
    config_path: Option<PathBuf>,
) -> std::io::Result<Option<AdminServer>> {
    let cfg = live.config();
    if !cfg.admin.enabled {
        return Ok(None);
    }
    let addr: SocketAddr = cfg.admin.listen.parse().map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("admin.listen: {e}"),
        )
    })?;
    // The token the validation checked; and, whatever happened before, no
    // admin API on a non-loopback address without one.
    let token: Option<String> =
        crate::config::admin_token(cfg.admin.token.as_deref()).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("admin.token: {e}"),
            )
        })?;
    if token.is_none() && !addr.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("admin.listen: `{addr}` is not a loopback address and no admin token is set"),
        ));
    }
    let state = AdminState {
        live,
        config_path,
        // Looked up on each request: a reload rotates it.
        token: None,
    };
    start(addr, state).await.map(Some)
}

/// The token a protected route asks for: `Ok(None)` when the API is open,
/// `Err` when the token in effect is unusable (then nothing matches).
fn required_token(state: &AdminState) -> Result<Option<Arc<str>>, String> {
    match &state.token {
        // An embedder's token is held to the file's rules: an empty one
        // (a secret that came through empty) must not open the API.
        Some(fixed) => crate::config::check_admin_token(fixed).map(|()| Some(fixed.clone())),
        None => crate::config::admin_token(state.live.config().admin.token.as_deref())
            .map(|t| t.map(Arc::from)),
    }
}

/// Why a request to an open (tokenless, loopback) admin API is refused:
/// a web page in a browser on this host can reach loopback too. A name
/// that rebinds to 127.0.0.1 shows in `Host`; a cross-site form or fetch
/// that changes something (reload, purge) shows in `Origin`.
fn browser_from_elsewhere(req: &Request) -> Option<&'static str> {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    if header(header::HOST).is_some_and(|h| !loopback_host(h)) {
        return Some(
            "the admin API without a token answers only to a loopback Host (localhost, 127.0.0.1, [::1])",
        );
    }
    let reads = matches!(*req.method(), http::Method::GET | http::Method::HEAD);
    // A change comes from no browser page (no `Origin`) or from a page of
    // the admin API's own origin: a page served by another loopback port
    // (a dev server, the demo, an upstream's HTML behind a loopback
    // listener) is another site.
    if !reads
        && header(header::ORIGIN).is_some_and(|o| {
            o.split_once("://").is_none_or(|(_, authority)| {
                !header(header::HOST).is_some_and(|h| same_authority(authority, h))
            })
        })
    {
        return Some("the admin API without a token takes changes only from its own origin");
    }
    None
}

/// Whether an `Origin`'s authority and a `Host` name the same host and
/// port (ignoring case; a missing port is 80, the plain-HTTP admin API's
/// default).
fn same_authority(origin: &str, host: &str) -> bool {
    fn split(a: &str) -> (String, &str) {
        let (name, port) = match a.strip_prefix('[').and_then(|r| r.split_once(']')) {
            // `[v6]` or `[v6]:port`
            Some((v6, after)) => (format!("[{v6}]"), after.strip_prefix(':').unwrap_or("")),
            None => match a.rsplit_once(':') {
                Some((name, port)) => (name.to_owned(), port),
                None => (a.to_owned(), ""),
            },
        };
        (
            name.to_ascii_lowercase(),
            if port.is_empty() { "80" } else { port },
        )
    }
    split(origin) == split(host)
}

/// Whether `host` (`name[:port]`, `[v6][:port]`) names this host's loopback.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        },
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What a protected admin route lets through.
#[derive(Debug, PartialEq)]
enum Gate {
    /// Everything: no token in effect, loopback listener.
    Open,
    /// Requests with this bearer token.
    Token(Arc<str>),
    /// Nothing, for this reason.
    Closed(String),
}

/// The gate for the token required (see [`required_token`]) on a listener
/// that is `exposed` (not loopback): an exposed listener is never open.
fn gate(required: Result<Option<Arc<str>>, String>, exposed: bool) -> Gate {
    match required {
        Ok(Some(t)) => Gate::Token(t),
        Ok(None) if !exposed => Gate::Open,
        Ok(None) => {
            Gate::Closed("no admin token in effect on a non-loopback admin listener".into())
        }
        Err(e) => Gate::Closed(format!("admin token unusable: {e}")),
    }
}

async fn require_token(
    State((state, exposed)): State<(AdminState, bool)>,
    req: Request,
    next: Next,
) -> Response {
    let token = match gate(required_token(&state), exposed) {
        Gate::Open => {
            return match browser_from_elsewhere(&req) {
                None => next.run(req).await,
                Some(why) => Problem::new(StatusCode::FORBIDDEN)
                    .detail(why)
                    .into_full_response()
                    .into_response(),
            };
        }
        Gate::Token(t) => Some(t),
        Gate::Closed(why) => {
            // Once loudly; then quietly, since any client can ask again.
            static TOLD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            if TOLD.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::debug!(reason = %why, "the admin API stays closed");
            } else {
                tracing::error!(reason = %why, "the admin API stays closed");
            }
            None
        }
    };
    // `Bearer` in any case (RFC 9110: schemes are case-insensitive); no
    // credential is no match, whatever the token.
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    if let (Some(t), Some(given)) = (token, given)
        && !t.is_empty()
        && constant_time_eq(given.as_bytes(), t.as_bytes())
    {
        next.run(req).await
    } else {
        Problem::new(StatusCode::UNAUTHORIZED)
            .detail("the admin API needs `Authorization: Bearer <admin token>`")
            .header(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"towergate-admin\""),
            )
            .into_full_response()
            .into_response()
    }
}

/// Compares without an early exit, so timing does not reveal how much of
/// a guess was right. The length is not secret.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let registry = state.live.registry();
    // Gauges read from the stores at scrape time.
    let degraded = registry.redis_stores().iter().any(|s| s.degraded());
    registry.metrics().redis_degraded(degraded);
    registry.record_pool_states(&state.live.stack().pool_states());
    if let Some(cache) = registry.cache() {
        let stats = cache.stats();
        registry
            .metrics()
            .cache_size(stats.bytes_stored, stats.entries);
    }
    (
        [(
            header::CONTENT_TYPE,
            towergate_observe::metrics::CONTENT_TYPE,
        )],
        registry.metrics().encode(),
    )
        .into_response()
}

async fn readyz(State(state): State<AdminState>) -> Response {
    if state.live.is_draining() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": "draining"})),
        )
            .into_response()
    } else {
        Json(json!({"ready": true})).into_response()
    }
}

async fn config(State(state): State<AdminState>) -> Json<Value> {
    Json(serde_json::to_value(&*state.live.config()).unwrap_or(Value::Null))
}

async fn routes(State(state): State<AdminState>) -> Json<Value> {
    let cfg = state.live.config();
    let routes: Vec<Value> = cfg
        .routes
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "priority": r.priority,
                "match": r.matcher,
                "target": if !r.upstream.is_empty() {
                    "upstream"
                } else if r.aggregate.is_some() {
                    "aggregate"
                } else if r.redirect.is_some() {
                    "redirect"
                } else {
                    "respond"
                },
                "upstream": r.upstream,
                "aggregate_calls": r.aggregate.as_ref().map(|a| {
                    a.calls
                        .iter()
                        .map(|c| json!({"name": c.name, "upstream": c.upstream, "path": c.path}))
                        .collect::<Vec<_>>()
                }),
                "cached": r.cache.is_some(),
                "strip_prefix": r.strip_prefix,
                "rewrite": r.rewrite,
                "timeout": r.timeout,
            })
        })
        .collect();
    Json(Value::Array(routes))
}

async fn upstreams(State(state): State<AdminState>) -> Json<Value> {
    let mut list = upstream_list(&state.live.config());
    let states = state.live.stack().upstream_states();
    if let Value::Array(items) = &mut list {
        for item in items.iter_mut() {
            let name = item["name"].as_str().unwrap_or("").to_owned();
            if let Some((_, eps)) = states.iter().find(|(n, _)| *n == name) {
                item["endpoints"] = serde_json::to_value(eps).unwrap_or(Value::Null);
            }
        }
    }
    Json(list)
}

fn upstream_list(cfg: &Config) -> Value {
    let mut out: Vec<Value> = cfg
        .upstreams
        .iter()
        .map(|(name, u)| {
            json!({
                "name": name,
                "url": u.url.as_deref().or_else(|| u.endpoints.first().map(|e| e.url()))
                    .map(|url| towergate_core::url_without_password(url).into_owned()),
                "http2": u.http2,
                "routes": cfg.routes.iter().filter(|r| route_uses(r, name)).map(|r| r.name.as_str()).collect::<Vec<_>>(),
            })
        })
        .collect();
    // Inline URLs: one entry per URL, with every route that uses it (as
    // its upstream or in an aggregate's calls).
    let mut inline: Vec<(&str, Vec<&str>)> = Vec::new();
    for r in &cfg.routes {
        for url in route_targets(r).filter(|u| u.contains("://")) {
            match inline.iter_mut().find(|(u, _)| *u == url) {
                Some((_, routes)) if routes.last() == Some(&r.name.as_str()) => {}
                Some((_, routes)) => routes.push(&r.name),
                None => inline.push((url, vec![&r.name])),
            }
        }
    }
    for (url, routes) in inline {
        out.push(json!({ "name": url, "url": url, "http2": false, "routes": routes }));
    }
    Value::Array(out)
}

/// What `r` sends requests to: its upstream and its aggregate's calls.
fn route_targets(r: &crate::config::schema::Route) -> impl Iterator<Item = &str> {
    let calls = r.aggregate.iter().flat_map(|a| a.calls.iter());
    std::iter::once(r.upstream.as_str())
        .filter(|u| !u.is_empty())
        .chain(calls.map(|c| c.upstream.as_str()))
}

fn route_uses(r: &crate::config::schema::Route, upstream: &str) -> bool {
    route_targets(r).any(|u| u == upstream)
}

async fn status(State(state): State<AdminState>) -> Json<Value> {
    let stats = state.live.reload_stats();
    Json(json!({
        "draining": state.live.is_draining(),
        "listeners": state.live.listeners().iter().map(|l| json!({"name": l.name, "addr": l.addr.to_string(), "tls": l.tls.is_some(), "http2": l.http2})).collect::<Vec<_>>(),
        "reloads": {
            "ok": stats.ok,
            "failed": stats.failed,
            "last_error": stats.last_error.map(|e| errors_json(&e)),
        },
        "config_file": state.config_path.as_ref().map(|p| p.display().to_string()),
    }))
}

fn errors_json(e: &crate::config::ConfigErrors) -> Value {
    Value::Array(
        e.errors
            .iter()
            .map(|e| json!({"path": e.path, "message": e.message}))
            .collect(),
    )
}

async fn reload(State(state): State<AdminState>) -> Response {
    let Some(path) = state.config_path.clone() else {
        return Problem::new(StatusCode::CONFLICT)
            .detail("this gateway runs an embedded configuration: there is no file to reload")
            .into_full_response()
            .into_response();
    };
    let live = state.live.clone();
    let outcome = tokio::task::spawn_blocking(move || reload_now(&path, &live)).await;
    match outcome {
        Ok(ReloadOutcome::Applied { listeners_changed }) => {
            Json(json!({"applied": true, "listeners_changed": listeners_changed})).into_response()
        }
        Ok(ReloadOutcome::Rejected(e)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"applied": false, "errors": errors_json(&e)})),
        )
            .into_response(),
        Err(_) => Problem::new(StatusCode::INTERNAL_SERVER_ERROR)
            .detail("the reload task failed")
            .into_full_response()
            .into_response(),
    }
}

/// The response cache's primary keys (`?route=NAME` for one route's), for
/// `{"key": ...}` purges; at most 10,000.
async fn cache_keys(
    State(state): State<AdminState>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Json<Value> {
    let Some(cache) = state.live.registry().cache() else {
        return Json(json!({"keys": [], "total": 0}));
    };
    let prefix = q.get("route").map(|r| format!("{r}|"));
    let keys: Vec<String> = cache
        .keys()
        .into_iter()
        .filter(|k| prefix.as_ref().is_none_or(|p| k.starts_with(p.as_str())))
        .collect();
    let total = keys.len();
    Json(json!({"keys": keys.into_iter().take(10_000).collect::<Vec<_>>(), "total": total}))
}

/// What to purge from the response cache: `{"route": NAME}` (every entry
/// of a route), `{"prefix": "/users/", "route": NAME?}` (paths starting
/// with it: the path the upstream is sent, after `strip_prefix`/`rewrite`),
/// or `{"key": KEY}` (one entry, as `/admin/cache/keys` lists them).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    route: Option<String>,
    prefix: Option<String>,
    key: Option<String>,
}

async fn purge_cache(State(state): State<AdminState>, body: axum::body::Bytes) -> Response {
    let bad = |detail: String| {
        Problem::new(StatusCode::BAD_REQUEST)
            .detail(detail)
            .into_full_response()
            .into_response()
    };
    let req: PurgeRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return bad(format!(
                "expected {{\"route\"|\"prefix\"|\"key\": ...}}: {e}"
            ));
        }
    };
    let sel = match (req.key, req.prefix, req.route) {
        (Some(k), None, None) => towergate_cache::Purge::Key(k),
        (None, Some(prefix), route) => towergate_cache::Purge::Prefix {
            namespace: route,
            path_prefix: prefix,
        },
        (None, None, Some(route)) => towergate_cache::Purge::Namespace(route),
        _ => return bad("give `key`, or `prefix` (with an optional `route`), or `route`".into()),
    };
    let Some(cache) = state.live.registry().cache() else {
        return Json(json!({"purged": 0})).into_response();
    };
    let n = cache.purge(&sel);
    tracing::info!(?sel, purged = n, "cache purged through the admin API");
    Json(json!({"purged": n})).into_response()
}

async fn dashboard() -> Html<&'static str> {
    Html(include_str!("admin/dashboard.html"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{Gate, browser_from_elsewhere, constant_time_eq, gate, loopback_host};

    #[test]
    fn loopback_hosts() {
        for yes in [
            "localhost",
            "LOCALHOST:9901",
            "127.0.0.1",
            "127.0.0.1:9901",
            "127.9.9.9:1",
            "[::1]",
            "[::1]:9901",
        ] {
            assert!(loopback_host(yes), "{yes}");
        }
        for no in [
            "evil.example",
            "evil.example:9901",
            "10.0.0.1:9901",
            "[::2]:80",
            "localhost.evil.example",
            "",
            "127.0.0.1.nip.io",
        ] {
            assert!(!loopback_host(no), "{no}");
        }
    }

    #[test]
    fn browsers_from_elsewhere_are_refused_by_the_open_api() {
        let req = |method: &str, host: Option<&str>, origin: Option<&str>| {
            let mut b = http::Request::builder().method(method).uri("/admin/reload");
            if let Some(h) = host {
                b = b.header("host", h);
            }
            if let Some(o) = origin {
                b = b.header("origin", o);
            }
            b.body(axum::body::Body::empty()).unwrap()
        };
        // curl, Prometheus, the dashboard page itself.
        assert_eq!(
            browser_from_elsewhere(&req("GET", Some("127.0.0.1:9901"), None)),
            None
        );
        assert_eq!(browser_from_elsewhere(&req("GET", None, None)), None);
        assert_eq!(
            browser_from_elsewhere(&req(
                "POST",
                Some("localhost:9901"),
                Some("http://localhost:9901")
            )),
            None
        );
        // DNS rebinding: a page of evil.example whose name now points here.
        assert!(browser_from_elsewhere(&req("GET", Some("evil.example:9901"), None)).is_some());
        // A cross-site form or fetch posting to loopback.
        assert!(
            browser_from_elsewhere(&req(
                "POST",
                Some("127.0.0.1:9901"),
                Some("https://evil.example")
            ))
            .is_some()
        );
        assert!(
            browser_from_elsewhere(&req("POST", Some("127.0.0.1:9901"), Some("null"))).is_some()
        );
        // Another loopback port is another site: a dev server's page, the
        // demo's, an upstream's HTML behind a loopback listener.
        for other in [
            "http://127.0.0.1:8080",
            "http://localhost",
            "http://localhost:9902",
        ] {
            assert!(
                browser_from_elsewhere(&req("POST", Some("localhost:9901"), Some(other))).is_some(),
                "{other}"
            );
        }
        for same in [
            ("[::1]:9901", "http://[::1]:9901"),
            ("LOCALHOST", "http://localhost:80"),
        ] {
            assert_eq!(
                browser_from_elsewhere(&req("POST", Some(same.0), Some(same.1))),
                None,
                "{same:?}"
            );
        }
        // A cross-site read is the browser's to block (no CORS headers here).
        assert_eq!(
            browser_from_elsewhere(&req(
                "GET",
                Some("127.0.0.1:9901"),
                Some("https://evil.example")
            )),
            None
        );
    }

    #[test]
    fn an_exposed_listener_is_never_open() {
        let t: Arc<str> = Arc::from("0123456789abcdef");
        assert_eq!(gate(Ok(Some(t.clone())), false), Gate::Token(t.clone()));
        assert_eq!(gate(Ok(Some(t.clone())), true), Gate::Token(t));
        assert_eq!(gate(Ok(None), false), Gate::Open);
        // A reload that dropped the token does not open a public listener.
        assert!(matches!(gate(Ok(None), true), Gate::Closed(_)));
        // Nor does an unusable token, anywhere.
        assert!(matches!(gate(Err("bad".into()), false), Gate::Closed(_)));
        assert!(matches!(gate(Err("bad".into()), true), Gate::Closed(_)));
    }

    #[test]
    fn an_embedders_token_is_held_to_the_files_rules() {
        for bad in ["", "short", "0123456789 abcdef", "pässwörd-0123456789"] {
            assert!(crate::config::check_admin_token(bad).is_err(), "{bad:?}");
        }
        assert!(crate::config::check_admin_token("0123456789abcdef").is_ok());
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abcdef0123456789", b"abcdef0123456789"));
        assert!(!constant_time_eq(b"abcdef0123456789", b"abcdef0123456788"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
