//! Config → `towergate-policy` and `towergate-cache`: CORS, header
//! transforms, validation, compression, redirects, fixed responses and
//! caching. Each function returns a [`Wrap`] that puts the layer around a
//! route's service; `stack.rs` decides the order.

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use tower::{Layer, ServiceExt};
use towergate_cache::{CacheLayer, CacheStore, KeyQuery};
use towergate_policy::{
    CompressionPolicy, CorsPolicy, FixedResponse, HeaderTransformLayer, Op, Origin, Redirect,
    Template, ValidateLayer,
};

use super::Registry;
use crate::config::schema::{
    CacheStoreConfig, CompressionSpec, CorsConfig, HeaderOps, QueryKey, RedirectConfig,
    RespondConfig, RouteCacheConfig, ValidateConfig,
};
use crate::config::validate::size_value;
use crate::config::{ConfigError, parse_duration, push_new};
use crate::stack::{RouteService, Wrap, boxed, resolve_path};

fn err(errs: &mut Vec<ConfigError>, path: impl Into<String>, msg: impl Into<String>) {
    errs.push(ConfigError::new(path, msg));
}

fn header_name(
    s: &str,
    path: impl Into<String>,
    errs: &mut Vec<ConfigError>,
) -> Option<HeaderName> {
    match HeaderName::from_bytes(s.as_bytes()) {
        Ok(h) => Some(h),
        Err(_) => {
            err(errs, path, format!("`{s}` is not a header name"));
            None
        }
    }
}

fn method(s: &str, path: impl Into<String>, errs: &mut Vec<ConfigError>) -> Option<Method> {
    match Method::from_bytes(s.to_ascii_uppercase().as_bytes()) {
        Ok(m) => Some(m),
        Err(_) => {
            err(errs, path, format!("`{s}` is not an HTTP method"));
            None
        }
    }
}

/// CORS: preflights answered here, headers added to every answer
/// (refusals included, so a browser can read a 401).
pub(crate) fn cors_layer(c: &CorsConfig, p: &str, errs: &mut Vec<ConfigError>) -> Option<Wrap> {
    let before = errs.len();
    let mut b = CorsPolicy::builder();
    // Browsers apply no CORS to WebSockets: a page elsewhere may open one
    // with the user's cookies. The route's origins decide those too.
    let mut upgrade_origins: Option<Arc<[Origin]>> = None;
    if c.origins.iter().any(|o| o == "*") {
        if c.origins.len() > 1 {
            err(errs, format!("{p}.origins"), "`*` stands alone");
        }
        b = b.allow_any_origin();
    } else if c.origins.is_empty() {
        err(
            errs,
            format!("{p}.origins"),
            "list the allowed origins, or `*`",
        );
    } else {
        let mut origins = Vec::new();
        for (i, o) in c.origins.iter().enumerate() {
            match Origin::parse(o) {
                Ok(o) => origins.push(o),
                Err(e) => err(errs, format!("{p}.origins[{i}]"), e.to_string()),
            }
        }
        upgrade_origins = Some(Arc::from(origins.clone()));
        b = b.allow_origins(origins);
    }
    if c.methods.iter().any(|m| m == "*") {
        b = b.allow_any_method();
    } else if c.methods.is_empty() {
        b = b.allow_methods([Method::GET, Method::HEAD, Method::POST]);
    } else {
        let ms: Vec<Method> = c
            .methods
            .iter()
            .enumerate()
            .filter_map(|(i, m)| method(m, format!("{p}.methods[{i}]"), errs))
            .collect();
        b = b.allow_methods(ms);
    }
    if c.headers.iter().any(|h| h == "*") {
        b = b.allow_any_header();
    } else if c.headers.iter().any(|h| h == "mirror") {
        b = b.mirror_request_headers();
    } else if !c.headers.is_empty() {
        let hs: Vec<HeaderName> = c
            .headers
            .iter()
            .enumerate()
            .filter_map(|(i, h)| header_name(h, format!("{p}.headers[{i}]"), errs))
            .collect();
        b = b.allow_headers(hs);
    }
    if !c.expose_headers.is_empty() {
        let hs: Vec<HeaderName> = c
            .expose_headers
            .iter()
            .enumerate()
            .filter_map(|(i, h)| header_name(h, format!("{p}.expose_headers[{i}]"), errs))
            .collect();
        b = b.expose_headers(hs);
    }
    b = b.allow_credentials(c.credentials);
    if let Some(m) = &c.max_age {
        match parse_duration(m) {
            Ok(d) => b = b.max_age(d),
            Err(e) => err(errs, format!("{p}.max_age"), e),
        }
    }
    if errs.len() > before {
        return None;
    }
    match b.build() {
        Ok(layer) => Some(Box::new(move |svc: RouteService| {
            let svc = boxed(layer.layer(svc));
            match upgrade_origins {
                Some(origins) => upgrades_from(origins, svc),
                None => svc,
            }
        })),
        Err(e) => {
            let key = if c.credentials {
                "credentials"
            } else {
                "origins"
            };
            err(errs, format!("{p}.{key}"), e.to_string());
            None
        }
    }
}

/// Refuses (`403`) an upgrade request (a WebSocket) whose `Origin` is not
/// one of `origins`; requests without `Origin` (not from a browser) and
/// plain requests pass.
fn upgrades_from(origins: Arc<[Origin]>, inner: RouteService) -> RouteService {
    boxed(tower::service_fn(move |req: Request<Body>| {
        let refused = req.headers().contains_key(http::header::UPGRADE)
            && req
                .headers()
                .get(http::header::ORIGIN)
                .is_some_and(|o| !origins.iter().any(|allowed| allowed.matches(o.as_bytes())));
        let inner = inner.clone();
        async move {
            if refused {
                let problem = towergate_core::Problem::new(StatusCode::FORBIDDEN)
                    .detail("this origin may not open a WebSocket here");
                let problem = match req.extensions().get::<towergate_core::RequestId>() {
                    Some(id) => problem.instance(id.as_str()),
                    None => problem,
                };
                return Ok::<_, std::convert::Infallible>(
                    problem.into_full_response().map(Body::new),
                );
            }
            inner.oneshot(req).await
        }
    }))
}

fn ops(h: &HeaderOps, p: &str, request: bool, errs: &mut Vec<ConfigError>) -> Vec<Op> {
    let mut out = Vec::new();
    for (i, name) in h.remove.iter().enumerate() {
        if let Some(n) = header_name(name, format!("{p}.remove[{i}]"), errs) {
            out.push(Op::Remove(n));
        }
    }
    if h.hide_server {
        if request {
            err(
                errs,
                format!("{p}.hide_server"),
                "only for `response_headers`",
            );
        } else {
            out.push(Op::Remove(http::header::SERVER));
            out.push(Op::Remove(HeaderName::from_static("x-powered-by")));
        }
    }
    for (from, to) in &h.rename {
        let (f, t) = (
            header_name(from, format!("{p}.rename.{from}"), errs),
            header_name(to, format!("{p}.rename.{from}"), errs),
        );
        if let (Some(f), Some(t)) = (f, t) {
            out.push(Op::Rename(f, t));
        }
    }
    for (kind, map) in [("set", &h.set), ("add", &h.add)] {
        for (name, v) in map {
            let path = format!("{p}.{kind}.{name}");
            let Some(n) = header_name(name, path.clone(), errs) else {
                continue;
            };
            match Template::parse(v) {
                Ok(t) if kind == "set" => out.push(Op::Set(n, t)),
                Ok(t) => out.push(Op::Add(n, t)),
                Err(e) => err(errs, path, e.to_string()),
            }
        }
    }
    out
}

/// Header edits on the request (before it goes upstream) and on the
/// response (before it goes to the client).
pub(crate) fn transform_layer(
    req: Option<&HeaderOps>,
    rsp: Option<&HeaderOps>,
    p: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<Wrap> {
    if req.is_none() && rsp.is_none() {
        return None;
    }
    let before = errs.len();
    let mut b = HeaderTransformLayer::builder();
    if let Some(h) = req {
        for op in ops(h, &format!("{p}.request_headers"), true, errs) {
            b = b.request(op);
        }
    }
    if let Some(h) = rsp {
        for op in ops(h, &format!("{p}.response_headers"), false, errs) {
            b = b.response(op);
        }
    }
    if errs.len() > before {
        return None;
    }
    match b.build() {
        Ok(layer) => Some(Box::new(move |svc: RouteService| boxed(layer.layer(svc)))),
        Err(e) => {
            // The builder does not say which side; name the one configured.
            let side = if req.is_some() {
                "request_headers"
            } else {
                "response_headers"
            };
            err(errs, format!("{p}.{side}"), e.to_string());
            None
        }
    }
}

/// Request validation; the upstream gets the very bytes that were checked.
/// `route_max_body` is the route's own `max_body`: the validation never
/// buffers more than the route would forward; `body_timeout`, the route's
/// upstream `timeout`: it waits for the body no longer than the proxy
/// would.
pub(crate) fn validate_layer(
    v: &ValidateConfig,
    base: Option<&Path>,
    route_max_body: u64,
    body_timeout: std::time::Duration,
    p: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<Wrap> {
    let before = errs.len();
    let mut b = ValidateLayer::builder();
    if !v.methods.is_empty() {
        let ms: Vec<Method> = v
            .methods
            .iter()
            .enumerate()
            .filter_map(|(i, m)| method(m, format!("{p}.methods[{i}]"), errs))
            .collect();
        b = b.methods(ms);
    }
    if !v.content_types.is_empty() {
        b = b.content_types(v.content_types.iter().map(String::as_str));
    }
    let schema = match (&v.json_schema, &v.schema) {
        (Some(_), Some(_)) => {
            err(
                errs,
                format!("{p}.schema"),
                "`schema` and `json_schema` exclude each other",
            );
            None
        }
        (Some(file), None) => {
            let path = resolve_path(base, file);
            match std::fs::read(&path)
                .map_err(|e| format!("cannot read `{}`: {e}", path.display()))
                .and_then(|bytes| {
                    serde_json::from_slice::<serde_json::Value>(&bytes)
                        .map_err(|e| format!("`{}` is not JSON: {e}", path.display()))
                }) {
                Ok(s) => Some(s),
                Err(e) => {
                    err(errs, format!("{p}.json_schema"), e);
                    None
                }
            }
        }
        (None, s) => s.clone(),
    };
    if let Some(s) = schema {
        b = b.json_schema(s);
    }
    let asked = match &v.max_body {
        Some(m) => match size_value(m) {
            Ok(n) => n,
            Err(e) => {
                err(errs, format!("{p}.max_body"), e);
                route_max_body
            }
        },
        None => towergate_policy::validate::DEFAULT_MAX_BODY_BYTES as u64,
    };
    b = b.max_body_bytes(usize::try_from(asked.min(route_max_body)).unwrap_or(usize::MAX));
    b = b.body_timeout(body_timeout);
    let regex = |s: &str, path: String, errs: &mut Vec<ConfigError>| {
        if s.is_empty() {
            return Some(None);
        }
        // The policy crate matches the whole value.
        match regex::Regex::new(s) {
            Ok(r) => Some(Some(r)),
            Err(e) => {
                err(errs, path, format!("bad regex: {e}"));
                None
            }
        }
    };
    for (name, re) in &v.query {
        if let Some(r) = regex(re, format!("{p}.query.{name}"), errs) {
            b = b.require_query(name.clone(), r);
        }
    }
    for (name, re) in &v.headers {
        let path = format!("{p}.headers.{name}");
        let Some(h) = header_name(name, path.clone(), errs) else {
            continue;
        };
        if let Some(r) = regex(re, path, errs) {
            b = b.require_header(h, r);
        }
    }
    if errs.len() > before {
        return None;
    }
    match b.build() {
        Ok(layer) => Some(Box::new(move |svc: RouteService| {
            let inner = svc
                .map_request(|r: Request<towergate_policy::ValidatedBody<Body>>| r.map(Body::new));
            boxed(layer.layer(inner))
        })),
        Err(e) => {
            let key = if v.json_schema.is_some() {
                "json_schema"
            } else if v.schema.is_some() {
                "schema"
            } else {
                "validate"
            };
            err(errs, format!("{p}.{key}"), e.to_string());
            None
        }
    }
}

/// Response compression by `Accept-Encoding`.
pub(crate) fn compression_layer(
    c: &CompressionSpec,
    p: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<Wrap> {
    let settings = match c {
        CompressionSpec::On(false) => return None,
        CompressionSpec::On(true) => Default::default(),
        CompressionSpec::With(s) => s.clone(),
    };
    let mut b = CompressionPolicy::new();
    if let Some(m) = &settings.min_size {
        match size_value(m) {
            Ok(n) => match u16::try_from(n) {
                Ok(n) => b = b.min_size(n),
                Err(_) => err(errs, format!("{p}.min_size"), "at most 65535 bytes"),
            },
            Err(e) => err(errs, format!("{p}.min_size"), e),
        }
    }
    if !settings.content_types.is_empty() {
        b = b.content_types(settings.content_types.iter().map(String::as_str));
    }
    if !settings.algorithms.is_empty() {
        let has = |a: &str| settings.algorithms.iter().any(|x| x == a);
        for (i, a) in settings.algorithms.iter().enumerate() {
            if !matches!(a.as_str(), "gzip" | "br" | "zstd") {
                err(
                    errs,
                    format!("{p}.algorithms[{i}]"),
                    format!("`{a}`: use gzip, br or zstd"),
                );
            }
        }
        b = b.gzip(has("gzip")).br(has("br")).zstd(has("zstd"));
    }
    if let Err(e) = b.try_predicate() {
        err(errs, format!("{p}.content_types"), e.to_string());
        return None;
    }
    let layer = b.layer();
    Some(Box::new(move |svc: RouteService| boxed(layer.layer(svc))))
}

/// Request bodies with `Content-Encoding` decoded before the route sees them.
pub(crate) fn decompression() -> Wrap {
    Box::new(|svc: RouteService| {
        let inner = svc.map_request(
            |r: Request<tower_http::decompression::DecompressionBody<Body>>| r.map(Body::new),
        );
        boxed(towergate_policy::request_decompression().layer(inner))
    })
}

/// A redirect target.
pub(crate) fn redirect(
    r: &RedirectConfig,
    p: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<RouteService> {
    let mut red = match (&r.to, r.https) {
        (Some(_), true) => {
            err(
                errs,
                format!("{p}.to"),
                "`to` and `https` exclude each other",
            );
            return None;
        }
        (None, false) => {
            err(errs, format!("{p}.to"), "give `to` or `https: true`");
            return None;
        }
        (None, true) => Redirect::https(r.port),
        (Some(to), false) => match Template::parse(to) {
            Ok(t) => Redirect::to(t),
            Err(e) => {
                err(errs, format!("{p}.to"), e.to_string());
                return None;
            }
        },
    };
    // A path redirect is temporary unless the route says otherwise
    // (browsers cache a 301 for good); HTTP to HTTPS is permanent.
    let status = r.status.or(if r.to.is_some() { Some(302) } else { None });
    if let Some(s) = status {
        match StatusCode::from_u16(s)
            .map_err(|e| e.to_string())
            .and_then(|st| red.clone().status(st).map_err(|e| e.to_string()))
        {
            Ok(x) => red = x,
            Err(e) => {
                err(errs, format!("{p}.status"), e);
                return None;
            }
        }
    }
    if let Some(k) = r.keep_query {
        red = red.keep_query(k);
    }
    Some(boxed(red))
}

/// A fixed-response target.
pub(crate) fn fixed_response(
    r: &RespondConfig,
    p: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<RouteService> {
    let Ok(status) = StatusCode::from_u16(r.status) else {
        err(
            errs,
            format!("{p}.status"),
            format!("`{}` is not a status", r.status),
        );
        return None;
    };
    let mut f = FixedResponse::new(status);
    if let Some(body) = &r.body {
        let ct = r
            .content_type
            .as_deref()
            .unwrap_or("text/plain; charset=utf-8");
        match HeaderValue::from_str(ct) {
            Ok(ct) => f = f.body(Bytes::from(body.clone()), ct),
            Err(_) => err(
                errs,
                format!("{p}.content_type"),
                "not a valid header value",
            ),
        }
    }
    for (k, v) in &r.headers {
        let path = format!("{p}.headers.{k}");
        let Some(n) = header_name(k, path.clone(), errs) else {
            continue;
        };
        // The body's framing is the server's to write; its type has its
        // own setting, which a second `Content-Type` would contradict.
        if matches!(
            n,
            http::header::CONTENT_LENGTH
                | http::header::TRANSFER_ENCODING
                | http::header::CONNECTION
        ) {
            err(errs, path, "set by the server from the body; leave it out");
            continue;
        }
        if n == http::header::CONTENT_TYPE {
            err(errs, path, "use `content_type`");
            continue;
        }
        match HeaderValue::from_str(v) {
            Ok(v) => f = f.header(n, v),
            Err(_) => err(errs, path, "not a valid header value"),
        }
    }
    Some(boxed(f))
}

/// The gateway's response cache, built on first use and kept across
/// reloads while its size settings do not change.
pub(crate) fn store(
    c: &CacheStoreConfig,
    registry: &Registry,
    errs: &mut Vec<ConfigError>,
) -> Option<(String, CacheStore)> {
    let size = |v: &Option<crate::config::schema::Size>,
                key: &str,
                d: u64,
                errs: &mut Vec<ConfigError>| {
        v.as_ref().map_or(Ok(d), size_value).unwrap_or_else(|e| {
            push_new(errs, ConfigError::new(format!("cache.{key}"), e));
            d
        })
    };
    let max = size(&c.max_size, "max_size", 64 << 20, errs);
    let entry = size(&c.max_entry_size, "max_entry_size", 1 << 20, errs);
    if entry > max {
        push_new(
            errs,
            ConfigError::new("cache.max_entry_size", "larger than `max_size`"),
        );
    }
    registry.cache_store(&format!("{max}/{entry}"), || {
        CacheStore::builder()
            .max_bytes(max)
            .max_entry_bytes(entry)
            .build()
    })
}

/// A route's cache layer, over the shared store; `request_headers`: the
/// route's request header transforms, which run before the cache.
pub(crate) fn cache_layer(
    route: &str,
    c: &RouteCacheConfig,
    request_headers: Option<&HeaderOps>,
    store: CacheStore,
    p: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<Wrap> {
    let before = errs.len();
    let mut b = CacheLayer::builder(store).namespace(route);
    if let Some(t) = &c.ttl {
        match parse_duration(t) {
            Ok(d) => b = b.default_ttl(d),
            Err(e) => err(errs, format!("{p}.ttl"), e),
        }
    }
    if !c.statuses.is_empty() {
        let mut sts = Vec::new();
        for (i, s) in c.statuses.iter().enumerate() {
            match StatusCode::from_u16(*s) {
                Ok(st) => sts.push(st),
                Err(_) => err(
                    errs,
                    format!("{p}.statuses[{i}]"),
                    format!("`{s}` is not a status"),
                ),
            }
        }
        b = b.cacheable_statuses(sts);
    }
    match &c.key.query {
        None => {}
        Some(QueryKey::Mode(m)) if m == "all" => b = b.key_query(KeyQuery::All),
        Some(QueryKey::Mode(m)) if m == "none" => b = b.key_query(KeyQuery::None),
        Some(QueryKey::Mode(m)) => err(
            errs,
            format!("{p}.key.query"),
            format!("`{m}`: use all, none or a list of parameter names"),
        ),
        Some(QueryKey::Only(names)) => b = b.key_query(KeyQuery::Only(names.clone())),
    }
    for (i, h) in c.key.headers.iter().enumerate() {
        if let Some(n) = header_name(h, format!("{p}.key.headers[{i}]"), errs) {
            b = b.key_header(n);
        }
    }
    if let Some(f) = &c.key.identity {
        // The key stands in for the caller: a field that many callers
        // share would serve one caller's private answers to the others
        // (`Authorization` no longer keeps them apart on such a route).
        if matches!(
            f.as_str(),
            "iss" | "issuer" | "aud" | "scope" | "scopes" | "groups" | "method"
        ) {
            err(
                errs,
                format!("{p}.key.identity"),
                format!(
                    "`{f}` is shared by many callers: key by one that names the caller (`sub`, `consumer`, or a claim unique per caller)"
                ),
            );
        } else {
            b = b.key_identity(f.clone());
        }
    }
    // A literal `set` is the same for every caller (the route's own key
    // for the upstream), so it is no caller's credential to the cache.
    // Not a template, which may copy the caller's (or be skipped, leaving
    // the client's value), nor a name that is also added to. Names that
    // do not parse are reported by the transform itself.
    for (name, value) in request_headers.iter().flat_map(|h| &h.set) {
        let literal = Template::parse(value).is_ok_and(|t| t.is_literal());
        let added =
            request_headers.is_some_and(|h| h.add.keys().any(|a| a.eq_ignore_ascii_case(name)));
        if let (true, false, Ok(n)) = (literal, added, HeaderName::from_bytes(name.as_bytes())) {
            b = b.gateway_set_header(n);
        }
    }
    if let Some(on) = c.collapse {
        b = b.collapse(on);
    }
    if let Some(yes) = c.ignore_request_cache_control {
        b = b.ignore_request_cache_control(yes);
    }
    if let Some(t) = &c.collapse_timeout {
        match parse_duration(t) {
            Ok(d) => b = b.collapse_timeout(d),
            Err(e) => err(errs, format!("{p}.collapse_timeout"), e),
        }
    }
    if errs.len() > before {
        return None;
    }
    match b.build() {
        Ok(layer) => Some(Box::new(move |svc: RouteService| boxed(layer.layer(svc)))),
        Err(e) => {
            err(errs, p.to_owned(), e.to_string());
            None
        }
    }
}
