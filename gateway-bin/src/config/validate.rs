use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::schema::{
    Config, Route, Size, StoreKind, TokenFrom, TracingProtocol, Upstream, ValueMatch,
};
use super::{ConfigError, ConfigErrors, parse_duration, parse_size};

/// Checks everything that can be checked without building the stack, then
/// builds it (without binding sockets) to catch the rest: route templates,
/// certificates, TLS files. Reports every error found.
pub fn validate(cfg: &Config) -> Result<(), ConfigErrors> {
    crate::stack::compile(cfg).map(|_| ())
}

/// The structural checks; `compile` runs them first and adds its own.
pub(crate) fn check_structure(cfg: &Config, errs: &mut Vec<ConfigError>) {
    // Listeners.
    if cfg.listen.is_none() && cfg.listeners.is_empty() {
        errs.push(ConfigError::new(
            "listen",
            "no listener: set `listen: \"127.0.0.1:8080\"` or a `listeners` list",
        ));
    }
    if let Some(l) = &cfg.listen {
        check_addr("listen", l, errs);
    }
    for (i, l) in cfg.listeners.iter().enumerate() {
        check_addr(&format!("listeners[{i}].addr"), &l.addr, errs);
        if let Some(tls) = &l.tls {
            if tls.certificates.is_empty() {
                errs.push(ConfigError::new(
                    format!("listeners[{i}].tls.certificates"),
                    "at least one certificate is required",
                ));
            }
            let defaults = tls
                .certificates
                .iter()
                .filter(|c| c.server_names.is_empty())
                .count();
            if defaults > 1 {
                errs.push(ConfigError::new(
                    format!("listeners[{i}].tls.certificates"),
                    "more than one certificate without `server_names`: only one can be the default",
                ));
            }
        }
    }

    // Two sockets on one address (or a port also taken by a wildcard
    // address): `run` would fail to bind the second.
    let mut bound: Vec<(String, SocketAddr)> = Vec::new();
    let candidates = cfg
        .listen
        .iter()
        .map(|l| ("listen".to_owned(), l.as_str()))
        .chain(
            cfg.listeners
                .iter()
                .enumerate()
                .map(|(i, l)| (format!("listeners[{i}].addr"), l.addr.as_str())),
        )
        .chain(
            cfg.admin
                .enabled
                .then(|| ("admin.listen".to_owned(), cfg.admin.listen.as_str())),
        );
    for (path, text) in candidates {
        let Ok(addr) = text.parse::<SocketAddr>() else {
            continue;
        };
        if addr.port() != 0 {
            // A wildcard covers its own family. (Whether `[::]` also takes
            // IPv4 depends on the host's `bindv6only`: `0.0.0.0:P` beside
            // `[::]:P` is left to the bind, which names the listener.)
            let covers = |w: &SocketAddr, other: &SocketAddr| {
                w.ip().is_unspecified() && w.is_ipv4() == other.is_ipv4()
            };
            let clash = bound.iter().find(|(_, b)| {
                b.port() == addr.port()
                    && (b.ip() == addr.ip() || covers(b, &addr) || covers(&addr, b))
            });
            if let Some((other, _)) = clash {
                errs.push(ConfigError::new(
                    path.clone(),
                    format!("`{addr}` is already bound by `{other}`"),
                ));
            }
        }
        bound.push((path, addr));
    }

    // Admin.
    if cfg.admin.enabled {
        match (
            cfg.admin.listen.parse::<SocketAddr>(),
            admin_token(cfg.admin.token.as_deref()),
        ) {
            (_, Err(e)) => errs.push(ConfigError::new("admin.token", e)),
            (Ok(a), Ok(None)) if !a.ip().is_loopback() => {
                errs.push(ConfigError::new(
                    "admin.listen",
                    format!("`{a}` is not a loopback address: set `admin.token` (or TOWERGATE_ADMIN_TOKEN) to expose the admin API"),
                ));
            }
            (Ok(_), Ok(_)) => {}
            (Err(_), _) => check_addr("admin.listen", &cfg.admin.listen, errs),
        }
    }
    if let Some(Err(e)) = cfg.admin.token.as_deref().map(check_admin_token) {
        errs.push(ConfigError::new("admin.token", e));
    }

    // Observability: a ratio, not a percentage (`10` would sample all).
    if let Some(ratio) = cfg
        .observability
        .tracing
        .as_ref()
        .and_then(|t| t.sample_ratio)
        && !(0.0..=1.0).contains(&ratio)
    {
        errs.push(ConfigError::new(
            "observability.tracing.sample_ratio",
            format!("{ratio} is not between 0 and 1 (0.01 samples 1 % of the requests)"),
        ));
    }

    // The exporter is built at start, where a bad endpoint only disables
    // it with a log line: `check` says so first.
    if let Some(t) = &cfg.observability.tracing {
        let endpoint = t.otlp_endpoint.parse::<http::Uri>().ok();
        let http_url = endpoint.as_ref().is_some_and(|u| {
            matches!(u.scheme_str(), Some("http" | "https"))
                && u.authority().is_some_and(|a| !a.host().is_empty())
        });
        if !http_url {
            errs.push(ConfigError::new(
                "observability.tracing.otlp_endpoint",
                format!(
                    "`{}` is not an http(s) URL (`http://collector:4318`)",
                    towergate_core::url_without_password(&t.otlp_endpoint)
                ),
            ));
        } else if t.protocol == TracingProtocol::Grpc
            && endpoint
                .as_ref()
                .and_then(|u| u.scheme_str())
                .is_some_and(|s| s.eq_ignore_ascii_case("https"))
        {
            // The gRPC exporter is built without TLS: it would fail at
            // start and export would be off, with one log line.
            errs.push(ConfigError::new(
                "observability.tracing.otlp_endpoint",
                format!(
                    "`{}`: OTLP over gRPC is plaintext only (`http://collector:4317`); for an https:// collector use `protocol: http` (OTLP/HTTP protobuf)",
                    towergate_core::url_without_password(&t.otlp_endpoint)
                ),
            ));
        }
        if t.service_name
            .as_deref()
            .is_some_and(|n| n.trim().is_empty())
        {
            errs.push(ConfigError::new(
                "observability.tracing.service_name",
                "must not be empty",
            ));
        }
    }

    // The access log is built only when observability and the log are
    // on: its format is checked whatever they are, so turning them on by
    // a reload cannot be what finds it wrong.
    if let Some(f) = &cfg.observability.access_log.format
        && !matches!(f.as_str(), "json" | "common" | "combined")
    {
        errs.push(ConfigError::new(
            "observability.access_log.format",
            format!("`{f}`: use json, common or combined"),
        ));
    }

    // A query parameter an auth provider reads a credential from is never
    // logged, whatever its name (the access log refuses credential-like
    // names by itself, but `key` or `sig` are not).
    for (i, kept) in cfg.observability.access_log.keep_query.iter().enumerate() {
        for (name, p) in &cfg.auth_providers {
            let read = [
                p.api_key.as_ref().and_then(|k| k.query.as_deref()),
                token_query(p.jwt.as_ref().and_then(|j| j.token_from.as_ref())),
                token_query(p.introspection.as_ref().and_then(|j| j.token_from.as_ref())),
            ];
            if read.into_iter().flatten().any(|q| same_query_name(q, kept)) {
                errs.push(ConfigError::new(
                    format!("observability.access_log.keep_query[{i}]"),
                    format!("`{kept}` carries the credential of auth provider `{name}`: it is never logged"),
                ));
            }
        }
    }

    // Server.
    let s = &cfg.server;
    // Checked by each proxy as it is built, so at the routes (or, with
    // only `dns`/`srv` pools, at run time: every request a 503) if left
    // to them.
    if let Some(v) = &s.via
        && !towergate_proxy::is_token(v)
    {
        errs.push(ConfigError::new(
            "server.via",
            format!(
                "`{v}` is not a token: one word of letters, digits and !#$%&'*+-.^_`|~ (no spaces)"
            ),
        ));
    }
    if let Some(v) = &s.header_read_timeout {
        check_positive_duration("server.header_read_timeout", v, errs);
    }
    if let Some(v) = &s.send_timeout {
        check_positive_duration("server.send_timeout", v, errs);
    }
    if let Some(v) = &s.drain_timeout {
        check_duration("server.drain_timeout", v, errs);
    }
    if let Some(v) = &s.tunnel_idle_timeout {
        check_positive_duration("server.tunnel_idle_timeout", v, errs);
    }
    for (name, u) in &cfg.upstreams {
        if let Some(v) = &u.body_idle_timeout {
            check_positive_duration(&format!("upstreams.{name}.body_idle_timeout"), v, errs);
        }
        if let Some(v) = &u.keepalive_timeout {
            check_positive_duration(&format!("upstreams.{name}.keepalive_timeout"), v, errs);
        }
    }
    if let Some(v) = &s.http2_idle_timeout {
        check_positive_duration("server.http2_idle_timeout", v, errs);
    }
    for (i, p) in s.upgrade_protocols.iter().flatten().enumerate() {
        let at = format!("server.upgrade_protocols[{i}]");
        if p.eq_ignore_ascii_case("h2c") {
            errs.push(ConfigError::new(
                at,
                "`h2c` cannot be tunnelled: it would give clients an HTTP/2 connection to the upstream past every check of the gateway (h2c smuggling)",
            ));
        } else if p.is_empty()
            || !p
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            errs.push(ConfigError::new(
                at,
                format!("`{p}` is not a protocol name (a token, without version)"),
            ));
        }
    }
    if let Some(v) = &s.shutdown_delay {
        check_duration("server.shutdown_delay", v, errs);
    }
    if let Some(v) = &s.max_header_bytes {
        match size_value(v) {
            Ok(n) if !(8 * 1024..=16 * 1024 * 1024).contains(&n) => errs.push(ConfigError::new(
                "server.max_header_bytes",
                format!("{n} bytes: give 8KiB to 16MiB"),
            )),
            Ok(_) => {}
            Err(e) => errs.push(ConfigError::new("server.max_header_bytes", e)),
        }
    }
    if let Some(v) = &s.max_body {
        check_size("server.max_body", v, errs);
    }
    if s.max_connections == Some(0) {
        errs.push(ConfigError::new(
            "server.max_connections",
            "must be at least 1",
        ));
    }
    // A shutdown waits for every connection's permit back at once.
    if s.max_connections.is_some_and(|n| n > 10_000_000) {
        errs.push(ConfigError::new(
            "server.max_connections",
            "at most 10000000",
        ));
    }
    for (i, t) in s.trusted_proxies.iter().enumerate() {
        if parse_net(t).is_none() {
            errs.push(ConfigError::new(
                format!("server.trusted_proxies[{i}]"),
                format!("`{t}` is not an IP address or CIDR network"),
            ));
        }
    }

    // The response cache and the rate-limit stores are built only when a
    // route uses them: checked here whatever the routes, so a reload that
    // adds the first such route is not what finds them wrong.
    check_cache_store(cfg, errs);
    check_rate_limiting(cfg, errs);

    // Upstreams.
    for (name, u) in &cfg.upstreams {
        let p = format!("upstreams.{name}");
        let balanced = !u.endpoints.is_empty() || u.dns.is_some() || u.srv.is_some();
        match (&u.url, !balanced) {
            (Some(url), true) => check_url(&format!("{p}.url"), url, errs),
            (None, false) => {
                for (i, e) in u.endpoints.iter().enumerate() {
                    let url = match e {
                        super::schema::EndpointSpec::Url(url) => url,
                        super::schema::EndpointSpec::Weighted { url, .. } => url,
                    };
                    check_url(&format!("{p}.endpoints[{i}]"), url, errs);
                }
            }
            (None, true) => errs.push(ConfigError::new(
                format!("{p}.url"),
                "give `url`, or a pool: `endpoints`, `dns` or `srv`",
            )),
            (Some(_), false) => errs.push(ConfigError::new(
                format!("{p}.endpoints"),
                "`url` and `endpoints` exclude each other",
            )),
        }
        // A single `url` is proxied without a pool: these would be ignored.
        for (set, key) in [
            (u.balance.is_some(), "balance"),
            (u.hedge.is_some(), "hedge"),
            (u.request_timeout.is_some(), "request_timeout"),
            (u.health_check.is_some(), "health_check"),
            (u.ejection.is_some(), "ejection"),
            (u.circuit_breaker.is_some(), "circuit_breaker"),
            (u.retry.is_some(), "retry"),
        ] {
            if set && !balanced {
                errs.push(ConfigError::new(
                    format!("{p}.{key}"),
                    "applies only to a pool: give `endpoints`, `dns` or `srv` instead of `url`",
                ));
            }
        }
        check_pool_settings(u, &p, errs);
        if let Some(v) = &u.connect_timeout {
            check_positive_duration(&format!("{p}.connect_timeout"), v, errs);
        }
        if let Some(v) = &u.timeout {
            check_positive_duration(&format!("{p}.timeout"), v, errs);
        }
        if let Some(tls) = &u.tls {
            if tls.client_cert.is_some() != tls.client_key.is_some() {
                errs.push(ConfigError::new(
                    format!("{p}.tls"),
                    "`client_cert` and `client_key` go together",
                ));
            }
            // Used only by https:// endpoints (a pool's may be found by
            // DNS, with `scheme: https`).
            let https = |url: &str| {
                url.get(..8)
                    .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
            };
            let by_scheme = |s: Option<&String>| s.is_some_and(|s| s == "https");
            if let Some(url) = &u.url
                && !https(url)
            {
                errs.push(ConfigError::new(
                    format!("{p}.tls"),
                    "TLS settings on an upstream whose URL is not https://",
                ));
            } else if u.url.is_none()
                && balanced
                && !u.endpoints.iter().any(|e| https(e.url()))
                && !u.dns.as_ref().is_some_and(|d| by_scheme(d.scheme.as_ref()))
                && !u.srv.as_ref().is_some_and(|d| by_scheme(d.scheme.as_ref()))
            {
                errs.push(ConfigError::new(
                    format!("{p}.tls"),
                    "TLS settings on a pool with no https:// endpoint (`endpoints` all http://, `dns`/`srv` without `scheme: https`): they would be ignored",
                ));
            }
        }
    }

    // Routes.
    if cfg.routes.is_empty() {
        errs.push(ConfigError::new(
            "routes",
            "no routes: the gateway would answer 404 to everything",
        ));
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut seen_matches: HashMap<(i32, String), usize> = HashMap::new();
    for (i, r) in cfg.routes.iter().enumerate() {
        let p = format!("routes[{i}]");
        if r.name.trim().is_empty() {
            errs.push(ConfigError::new(format!("{p}.name"), "must not be empty"));
        } else if let Some(j) = names.insert(&r.name, i) {
            errs.push(ConfigError::new(
                format!("{p}.name"),
                format!("duplicate route name `{}` (also routes[{j}])", r.name),
            ));
        }
        check_target(cfg, r, &p, errs);
        if let Some(v) = &r.timeout {
            check_positive_duration(&format!("{p}.timeout"), v, errs);
        }
        if let Some(v) = &r.max_body {
            check_size(&format!("{p}.max_body"), v, errs);
        }
        let m = &r.matcher;
        if m.path.is_some() && m.path_prefix.is_some() {
            errs.push(ConfigError::new(
                format!("{p}.match"),
                "`path` and `path_prefix` exclude each other",
            ));
        }
        if r.strip_prefix && m.path_prefix.is_none() {
            errs.push(ConfigError::new(
                format!("{p}.strip_prefix"),
                "needs `match.path_prefix`",
            ));
        }
        if r.strip_prefix && r.rewrite.is_some() {
            errs.push(ConfigError::new(
                format!("{p}.rewrite"),
                "`rewrite` and `strip_prefix` exclude each other",
            ));
        }
        if r.preserve_host && r.host_rewrite.is_some() {
            errs.push(ConfigError::new(
                format!("{p}.host_rewrite"),
                "`host_rewrite` and `preserve_host` exclude each other",
            ));
        }
        for (k, v) in m.headers.iter() {
            check_value_match(&format!("{p}.match.headers.{k}"), v, errs);
        }
        for (k, v) in m.query.iter() {
            check_value_match(&format!("{p}.match.query.{k}"), v, errs);
        }
        // A route whose match equals an earlier one's, at the same priority,
        // can never be chosen.
        // Keyed by the match's `Debug` text (maps in sorted order), so
        // 10,000 routes cost 10,000 lookups rather than 50 million
        // comparisons. Not its JSON: that is the shown form, where the
        // values of credential-like headers are all `<redacted>`.
        let key = (r.priority, format!("{:?}", r.matcher));
        if let Some(&j) = seen_matches.get(&key) {
            errs.push(ConfigError::new(
                format!("{p}.match"),
                format!(
                    "unreachable: same match and priority as routes[{j}] (`{}`), which always wins",
                    cfg.routes[j].name
                ),
            ));
        } else {
            seen_matches.insert(key, i);
        }
    }
}

pub(crate) fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

pub(crate) fn size_value(v: &Size) -> Result<u64, String> {
    match v {
        Size::Bytes(n) => Ok(*n),
        Size::Text(t) => parse_size(t),
    }
}

/// A route has exactly one target, and the upstreams it names exist.
fn check_target(cfg: &Config, r: &Route, p: &str, errs: &mut Vec<ConfigError>) {
    let targets: Vec<&str> = [
        (!r.upstream.is_empty(), "upstream"),
        (r.aggregate.is_some(), "aggregate"),
        (r.redirect.is_some(), "redirect"),
        (r.respond.is_some(), "respond"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect();
    match targets.as_slice() {
        [] => errs.push(ConfigError::new(
            format!("{p}.upstream"),
            "a route needs a target: `upstream`, `aggregate`, `redirect` or `respond`",
        )),
        [_] => {}
        [first, rest @ ..] => errs.push(ConfigError::new(
            format!("{p}.{}", rest[0]),
            format!(
                "`{first}` and `{}` exclude each other: a route has one target",
                rest[0]
            ),
        )),
    }
    if !r.upstream.is_empty() {
        check_upstream_ref(cfg, &format!("{p}.upstream"), &r.upstream, errs);
    }
    if let Some(a) = &r.aggregate {
        if a.calls.is_empty() {
            errs.push(ConfigError::new(
                format!("{p}.aggregate.calls"),
                "needs at least one call",
            ));
        }
        for (i, c) in a.calls.iter().enumerate() {
            let cp = format!("{p}.aggregate.calls[{i}]");
            check_upstream_ref(cfg, &format!("{cp}.upstream"), &c.upstream, errs);
            if let Some(t) = &c.timeout {
                check_positive_duration(&format!("{cp}.timeout"), t, errs);
            }
        }
        if let Some(t) = &a.deadline {
            check_positive_duration(&format!("{p}.aggregate.deadline"), t, errs);
        }
        if let Some(v) = &a.max_response_size {
            check_positive_size(&format!("{p}.aggregate.max_response_size"), v, errs);
        }
        if a.max_concurrent_calls == Some(0) {
            errs.push(ConfigError::new(
                format!("{p}.aggregate.max_concurrent_calls"),
                "must be at least 1",
            ));
        }
    }
    // `port` is the HTTPS port of `https: true`; a `to` target carries its
    // own, and the redirect would ignore this one.
    if let Some(red) = &r.redirect
        && red.port.is_some()
        && red.to.is_some()
    {
        errs.push(ConfigError::new(
            format!("{p}.redirect.port"),
            "applies only with `https: true`; with `to`, write the port in its URL",
        ));
    }
    let proxied = !r.upstream.is_empty();
    for (set, key) in [
        (r.cache.is_some() && !proxied, "cache"),
        (r.strip_prefix && !proxied, "strip_prefix"),
        (r.rewrite.is_some() && !proxied, "rewrite"),
        (r.timeout.is_some() && !proxied, "timeout"),
        (r.preserve_host && !proxied, "preserve_host"),
        (r.host_rewrite.is_some() && !proxied, "host_rewrite"),
        (r.max_body.is_some() && !proxied, "max_body"),
    ] {
        if set {
            errs.push(ConfigError::new(
                format!("{p}.{key}"),
                "only applies to a route with an `upstream`",
            ));
        }
    }
}

fn check_upstream_ref(cfg: &Config, path: &str, v: &str, errs: &mut Vec<ConfigError>) {
    if v.contains("://") {
        check_url(path, v, errs);
    } else if !cfg.upstreams.contains_key(v) {
        errs.push(ConfigError::new(
            path,
            format!("`{v}` is neither a URL nor the name of an entry in `upstreams`"),
        ));
    }
}

fn check_value_match(path: &str, v: &ValueMatch, errs: &mut Vec<ConfigError>) {
    if let ValueMatch::Rule(r) = v {
        let n = r.equals.is_some() as u8 + r.present.is_some() as u8 + r.regex.is_some() as u8;
        if n != 1 {
            errs.push(ConfigError::new(
                path,
                "give exactly one of `equals`, `present`, `regex`",
            ));
        }
        if r.present == Some(false) {
            errs.push(ConfigError::new(
                format!("{path}.present"),
                "`present: false` is not supported; omit the condition",
            ));
        }
    }
}

fn check_addr(path: &str, v: &str, errs: &mut Vec<ConfigError>) {
    if v.parse::<SocketAddr>().is_err() {
        errs.push(ConfigError::new(
            path,
            format!("`{v}` is not an IP:PORT address (e.g. \"0.0.0.0:8080\")"),
        ));
    }
}

fn check_duration(path: &str, v: &str, errs: &mut Vec<ConfigError>) {
    if let Err(e) = parse_duration(v) {
        errs.push(ConfigError::new(path, e));
    }
}

/// A duration that must not be zero: a zero timeout fails everything at
/// once (every connection closed, every request a 504).
fn check_positive_duration(path: &str, v: &str, errs: &mut Vec<ConfigError>) {
    match parse_duration(v) {
        Ok(d) if d.is_zero() => errs.push(ConfigError::new(path, "must be more than 0")),
        Ok(_) => {}
        Err(e) => errs.push(ConfigError::new(path, e)),
    }
}

fn check_size(path: &str, v: &Size, errs: &mut Vec<ConfigError>) {
    if let Err(e) = size_value(v) {
        errs.push(ConfigError::new(path, e));
    }
}

/// A size that must not be zero.
fn check_positive_size(path: &str, v: &Size, errs: &mut Vec<ConfigError>) {
    match size_value(v) {
        Ok(0) => errs.push(ConfigError::new(path, "must be at least 1 byte")),
        Ok(_) => {}
        Err(e) => errs.push(ConfigError::new(path, e)),
    }
}

/// A count that must not be zero.
fn check_at_least_one<N: Into<u64> + Copy>(path: &str, v: Option<N>, errs: &mut Vec<ConfigError>) {
    if v.is_some_and(|n| n.into() == 0) {
        errs.push(ConfigError::new(path, "must be at least 1"));
    }
}

/// `cache`: the same rules as `policy::cache_store`.
fn check_cache_store(cfg: &Config, errs: &mut Vec<ConfigError>) {
    let mut size = |key: &str, v: &Option<Size>, default: u64| match v {
        None => Some(default),
        Some(v) => size_value(v)
            .map_err(|e| errs.push(ConfigError::new(format!("cache.{key}"), e)))
            .ok(),
    };
    let max = size("max_size", &cfg.cache.max_size, 64 << 20);
    let entry = size("max_entry_size", &cfg.cache.max_entry_size, 1 << 20);
    if let (Some(max), Some(entry)) = (max, entry)
        && entry > max
    {
        errs.push(ConfigError::new(
            "cache.max_entry_size",
            "larger than `max_size`",
        ));
    }
}

/// `rate_limiting`: the rules of the in-memory and Redis stores.
fn check_rate_limiting(cfg: &Config, errs: &mut Vec<ConfigError>) {
    let rl = &cfg.rate_limiting;
    if rl.max_keys == Some(0) {
        errs.push(ConfigError::new(
            "rate_limiting.max_keys",
            "must be at least 1",
        ));
    }
    let redis = rl.redis.as_ref();
    if rl.store == StoreKind::Redis
        && redis.and_then(|r| r.url.as_ref()).is_none()
        && std::env::var("REDIS_URL").is_err()
    {
        errs.push(ConfigError::new(
            "rate_limiting.redis.url",
            "`store: redis` needs a URL (or the REDIS_URL environment variable)",
        ));
    }
    let Some(r) = redis else {
        return;
    };
    if let Some(v) = &r.timeout {
        check_positive_duration("rate_limiting.redis.timeout", v, errs);
    }
    // Zero, no connection attempt ever completes: Redis is never used.
    if let Some(v) = &r.connect_timeout {
        check_positive_duration("rate_limiting.redis.connect_timeout", v, errs);
    }
    if let Some(prefix) = &r.prefix
        && prefix.contains(['{', '}'])
    {
        errs.push(ConfigError::new(
            "rate_limiting.redis.prefix",
            format!(
                "{prefix:?} contains a brace, which would change the keys' Redis Cluster hash tag"
            ),
        ));
    }
}

/// The settings of a pool (`endpoints`, `dns`, `srv`) that the balancer
/// refuses when it is built: there, every error but the first is lost and
/// the zero values are reported at `endpoints` or `retry`. Checked here at
/// their own paths, all of them, whether the upstream is a pool or not.
fn check_pool_settings(u: &Upstream, p: &str, errs: &mut Vec<ConfigError>) {
    if let Some(v) = u.dns.as_ref().and_then(|d| d.interval.as_ref()) {
        check_positive_duration(&format!("{p}.dns.interval"), v, errs);
    }
    if let Some(v) = u.srv.as_ref().and_then(|d| d.interval.as_ref()) {
        check_positive_duration(&format!("{p}.srv.interval"), v, errs);
    }
    if let Some(v) = &u.request_timeout {
        check_positive_duration(&format!("{p}.request_timeout"), v, errs);
    }
    if let Some(h) = &u.health_check {
        let hp = format!("{p}.health_check");
        if let Some(v) = &h.interval {
            check_positive_duration(&format!("{hp}.interval"), v, errs);
        }
        if let Some(v) = &h.timeout {
            check_positive_duration(&format!("{hp}.timeout"), v, errs);
        }
        // A probe that may outlast its interval delays the next one: its
        // endpoint's detection and recovery then follow the timeout.
        let (interval, timeout) = (
            h.interval
                .as_deref()
                .map_or(Ok(Duration::from_secs(5)), parse_duration),
            h.timeout
                .as_deref()
                .map_or(Ok(Duration::from_secs(1)), parse_duration),
        );
        if let (Ok(interval), Ok(timeout)) = (interval, timeout)
            && !interval.is_zero()
            && timeout >= interval
        {
            errs.push(ConfigError::new(
                format!("{hp}.timeout"),
                format!("{timeout:?} is not below the interval ({interval:?})"),
            ));
        }
        if let Some(path) = &h.path
            && !path.starts_with('/')
        {
            errs.push(ConfigError::new(
                format!("{hp}.path"),
                format!("`{path}` does not start with `/`"),
            ));
        }
        check_at_least_one(
            &format!("{hp}.healthy_threshold"),
            h.healthy_threshold,
            errs,
        );
        check_at_least_one(
            &format!("{hp}.unhealthy_threshold"),
            h.unhealthy_threshold,
            errs,
        );
    }
    if let Some(e) = &u.ejection {
        let ep = format!("{p}.ejection");
        check_at_least_one(
            &format!("{ep}.consecutive_failures"),
            e.consecutive_failures,
            errs,
        );
        let mut time = |key: &str, v: &Option<String>, default: Duration| match v {
            None => Some(default),
            Some(t) => {
                let before = errs.len();
                check_positive_duration(&format!("{ep}.{key}"), t, errs);
                (errs.len() == before)
                    .then(|| parse_duration(t).ok())
                    .flatten()
            }
        };
        let base = time("base_time", &e.base_time, Duration::from_secs(10));
        let max = time("max_time", &e.max_time, Duration::from_secs(300));
        if let (Some(base), Some(max)) = (base, max)
            && max < base
        {
            let (key, msg) = if e.max_time.is_some() {
                ("max_time", format!("shorter than `base_time` ({base:?})"))
            } else {
                (
                    "base_time",
                    format!("longer than `max_time` (default {max:?})"),
                )
            };
            errs.push(ConfigError::new(format!("{ep}.{key}"), msg));
        }
        if let Some(r) = e.max_ejected_ratio
            && !(0.0..=1.0).contains(&r)
        {
            errs.push(ConfigError::new(
                format!("{ep}.max_ejected_ratio"),
                format!("{r} is not between 0 and 1"),
            ));
        }
    }
    if let Some(c) = &u.circuit_breaker {
        let cp = format!("{p}.circuit_breaker");
        // A limit of 0 would refuse every request.
        for (key, v) in [
            ("max_requests", c.max_requests),
            ("max_endpoint_requests", c.max_endpoint_requests),
        ] {
            if v == Some(0) {
                errs.push(ConfigError::new(
                    format!("{cp}.{key}"),
                    "must be at least 1 (0 would refuse every request)",
                ));
            }
        }
        if let Some(v) = &c.retry_after {
            check_duration(&format!("{cp}.retry_after"), v, errs);
        }
    }
    if let Some(ratio) = u.retry.as_ref().and_then(|r| r.budget_ratio)
        && !(ratio.is_finite() && (0.0..=1000.0).contains(&ratio))
    {
        errs.push(ConfigError::new(
            format!("{p}.retry.budget_ratio"),
            format!("{ratio} is not between 0 and 1000 (0.2: retries add at most 20 % load)"),
        ));
    }
}

/// Whether `url` names a user (`http://user:pass@host`).
pub(crate) fn has_user_info(url: &str) -> bool {
    url.parse::<http::Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| a.as_str().contains('@')))
        .unwrap_or(false)
}

fn check_url(path: &str, url: &str, errs: &mut Vec<ConfigError>) {
    // Errors show it without a password.
    let v = towergate_core::url_without_password(url);
    match url.parse::<http::Uri>() {
        Ok(u) => {
            match u.scheme_str() {
                Some("http") | Some("https") => {}
                _ => errs.push(ConfigError::new(
                    path,
                    format!("`{v}`: the scheme must be http or https"),
                )),
            }
            if u.host().is_none_or(str::is_empty) {
                errs.push(ConfigError::new(path, format!("`{v}` has no host")));
            }
            if u.query().is_some() {
                errs.push(ConfigError::new(
                    path,
                    format!("`{v}`: an upstream URL cannot have a query"),
                ));
            }
            // The proxy refuses it too, but only for the upstreams it
            // builds (not one no route uses): refused here, it never waits
            // for the first reload that routes to it.
            if has_user_info(url) {
                errs.push(ConfigError::new(
                    path,
                    format!(
                        "`{v}`: an upstream URL cannot carry user info; send credentials with the route's `request_headers`"
                    ),
                ));
            }
        }
        Err(e) => errs.push(ConfigError::new(path, format!("`{v}` is not a URL: {e}"))),
    }
}

/// The admin token in effect: `TOWERGATE_ADMIN_TOKEN` when set and not
/// empty, else `admin.token`. The validation and the admin server both ask
/// this, so what was checked is what is enforced.
pub fn admin_token(configured: Option<&str>) -> Result<Option<String>, String> {
    effective_admin_token(std::env::var_os(ADMIN_TOKEN_ENV), configured)
}

/// The environment variable that overrides `admin.token`.
const ADMIN_TOKEN_ENV: &str = "TOWERGATE_ADMIN_TOKEN";

/// The shortest admin token accepted.
const MIN_ADMIN_TOKEN: usize = 16;

/// [`admin_token`] with the environment's value given.
fn effective_admin_token(
    env: Option<std::ffi::OsString>,
    configured: Option<&str>,
) -> Result<Option<String>, String> {
    let from_env = match env {
        None => None,
        Some(v) => match v.into_string() {
            // An empty value (a secret that came through empty) is unset.
            Ok(v) if v.is_empty() => None,
            Ok(v) => Some(v),
            Err(_) => return Err(format!("{ADMIN_TOKEN_ENV} is not valid UTF-8")),
        },
    };
    match from_env {
        Some(t) => match check_admin_token(&t) {
            Ok(()) => Ok(Some(t)),
            Err(e) => Err(format!("{ADMIN_TOKEN_ENV}: {e}")),
        },
        None => Ok(configured.map(str::to_owned)),
    }
}

/// Whether `token` can be an admin token: at least [`MIN_ADMIN_TOKEN`]
/// characters, all visible ASCII (a header carries it: a token with other
/// bytes could never be sent, and every request would get 401).
pub fn check_admin_token(token: &str) -> Result<(), String> {
    if token.len() < MIN_ADMIN_TOKEN {
        return Err(format!("must be at least {MIN_ADMIN_TOKEN} characters"));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be visible ASCII characters only (no spaces)".into());
    }
    Ok(())
}

/// The query parameter a token is read from, if it is one.
fn token_query(from: Option<&TokenFrom>) -> Option<&str> {
    match from? {
        TokenFrom::Named(spec) => spec.query.as_deref(),
        TokenFrom::Word(_) => None,
    }
}

/// Whether two query parameter names are one to some upstream (PHP turns
/// `.`, spaces and `[` into `_`; ASP.NET ignores case).
fn same_query_name(a: &str, b: &str) -> bool {
    let fold = |c: u8| match c {
        b'.' | b' ' | b'[' => b'_',
        c => c.to_ascii_lowercase(),
    };
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| fold(x) == fold(y))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::ffi::OsString;

    use super::*;

    #[test]
    fn a_sample_ratio_is_between_0_and_1() {
        let errors = |ratio: &str| {
            let yaml = format!(
                "listen: \"127.0.0.1:0\"\nobservability:\n  tracing: {{ otlp_endpoint: \"http://127.0.0.1:4318\", sample_ratio: {ratio} }}\nroutes:\n  - name: a\n    upstream: \"http://127.0.0.1:1\"\n"
            );
            let cfg = crate::config::parse_str(&yaml, crate::config::Format::Yaml).unwrap();
            let mut errs = Vec::new();
            check_structure(&cfg, &mut errs);
            errs.into_iter().map(|e| e.path).collect::<Vec<_>>()
        };
        for bad in ["10", "-0.5", "1.01"] {
            assert_eq!(errors(bad), ["observability.tracing.sample_ratio"], "{bad}");
        }
        for good in ["0", "0.01", "1"] {
            assert!(errors(good).is_empty(), "{good}");
        }
    }

    #[test]
    fn the_tracing_endpoint_and_service_name_are_checked() {
        let errors = |tracing: &str| {
            let yaml = format!(
                "listen: \"127.0.0.1:0\"\nobservability:\n  tracing: {tracing}\nroutes:\n  - name: a\n    upstream: \"http://127.0.0.1:1\"\n"
            );
            let cfg = crate::config::parse_str(&yaml, crate::config::Format::Yaml).unwrap();
            let mut errs = Vec::new();
            check_structure(&cfg, &mut errs);
            errs.into_iter().map(|e| e.path).collect::<Vec<_>>()
        };
        for bad in ["collector:4318", "udp://c:4318", "http://", "not a url"] {
            assert_eq!(
                errors(&format!("{{ otlp_endpoint: \"{bad}\" }}")),
                ["observability.tracing.otlp_endpoint"],
                "{bad}"
            );
        }
        assert_eq!(
            errors("{ otlp_endpoint: \"http://c:4318\", service_name: \" \" }"),
            ["observability.tracing.service_name"]
        );
        // The gRPC exporter has no TLS: export would silently be off.
        for grpc_tls in ["https://c:4317", "HTTPS://c:4317"] {
            assert_eq!(
                errors(&format!(
                    "{{ otlp_endpoint: \"{grpc_tls}\", protocol: grpc }}"
                )),
                ["observability.tracing.otlp_endpoint"],
                "{grpc_tls}"
            );
        }
        assert!(errors("{ otlp_endpoint: \"http://c:4317\", protocol: grpc }").is_empty());
        assert!(
            errors("{ otlp_endpoint: \"https://c:4318/v1/traces\", protocol: http }").is_empty()
        );
    }

    /// The paths of what `check_structure` finds wrong with `yaml`.
    fn paths(yaml: &str) -> Vec<String> {
        let cfg = crate::config::parse_str(yaml, crate::config::Format::Yaml).unwrap();
        let mut errs = Vec::new();
        check_structure(&cfg, &mut errs);
        errs.into_iter().map(|e| e.path).collect()
    }

    const ROUTE: &str = "routes:\n  - name: a\n    upstream: \"http://127.0.0.1:1\"\n";

    #[test]
    fn a_query_parameter_carrying_a_credential_is_never_kept_in_the_log() {
        let cfg = |keep: &str| {
            format!(
                "listen: \"127.0.0.1:0\"\nobservability:\n  access_log: {{ enabled: true, keep_query: [page, {keep}] }}\nauth_providers:\n  partners: {{ api_key: {{ query: key, keys: [{{ key: \"0123456789abcdef0123\", consumer: acme }}] }} }}\n  sso: {{ jwt: {{ secret: \"0123456789abcdef0123456789abcdef\", token_from: {{ query: jwt }} }} }}\n{ROUTE}"
            )
        };
        for keep in ["key", "KEY", "jwt"] {
            assert_eq!(
                paths(&cfg(keep)),
                ["observability.access_log.keep_query[1]"],
                "{keep}"
            );
        }
        assert!(paths(&cfg("sort")).is_empty());
    }

    #[test]
    fn the_via_pseudonym_is_a_token() {
        for bad in ["tower gate", "a/b", "a,b", "", "gé", "1.1 gw"] {
            assert_eq!(
                paths(&format!(
                    "listen: \"127.0.0.1:0\"\nserver: {{ via: \"{bad}\" }}\n{ROUTE}"
                )),
                ["server.via"],
                "{bad}"
            );
        }
        for good in ["towergate", "edge-1.example", "gw~1"] {
            assert!(
                paths(&format!(
                    "listen: \"127.0.0.1:0\"\nserver: {{ via: \"{good}\" }}\n{ROUTE}"
                ))
                .is_empty(),
                "{good}"
            );
        }
    }

    /// Settings read only when something uses them are checked anyway.
    #[test]
    fn unused_stores_and_a_disabled_access_log_are_checked() {
        let got = paths(&format!(
            "listen: \"127.0.0.1:0\"\nobservability:\n  enabled: false\n  access_log: {{ format: jsonl }}\ncache: {{ max_size: ten, max_entry_size: lots }}\nrate_limiting:\n  store: redis\n  max_keys: 0\n  redis: {{ url: \"redis://r:6379\", timeout: \"0s\", connect_timeout: \"0s\", prefix: \"a{{b}}\" }}\n{ROUTE}"
        ));
        assert_eq!(
            got,
            [
                "observability.access_log.format",
                "cache.max_size",
                "cache.max_entry_size",
                "rate_limiting.max_keys",
                "rate_limiting.redis.timeout",
                "rate_limiting.redis.connect_timeout",
                "rate_limiting.redis.prefix",
            ]
        );
        assert_eq!(
            paths(&format!(
                "listen: \"127.0.0.1:0\"\ncache: {{ max_size: 1KiB, max_entry_size: 2KiB }}\n{ROUTE}"
            )),
            ["cache.max_entry_size"]
        );
    }

    /// Zero and out-of-range pool settings, each at its own path, all of
    /// them (the balancer reports only its first, at `endpoints`).
    #[test]
    fn pool_settings_are_checked_at_their_paths() {
        let got = paths(&format!(
            r#"listen: "127.0.0.1:0"
upstreams:
  p:
    endpoints: ["http://127.0.0.1:1"]
    request_timeout: "0s"
    health_check: {{ interval: "0s", timeout: "0ms", path: healthz, healthy_threshold: 0, unhealthy_threshold: 0 }}
    ejection: {{ consecutive_failures: 0, base_time: "0s", max_time: "0s", max_ejected_ratio: 1.5 }}
    circuit_breaker: {{ max_requests: 0, max_endpoint_requests: 0, retry_after: soon }}
    retry: {{ budget_ratio: -1 }}
  d:
    dns: {{ host: svc.local, port: 80, interval: "0s" }}
  s:
    srv: {{ name: _http._tcp.svc.local, interval: "0s" }}
  e:
    endpoints: ["http://127.0.0.1:2"]
    ejection: {{ base_time: "1m", max_time: "30s" }}
  f:
    endpoints: ["http://127.0.0.1:3"]
    ejection: {{ base_time: "10m" }}
  g:
    endpoints: ["http://127.0.0.1:4"]
    health_check: {{ interval: "1s", timeout: "2s" }}
  h:
    endpoints: ["http://127.0.0.1:5"]
    health_check: {{ timeout: "5s" }}
{ROUTE}"#
        ));
        assert_eq!(
            got,
            [
                "upstreams.d.dns.interval",
                "upstreams.e.ejection.max_time",
                "upstreams.f.ejection.base_time",
                "upstreams.g.health_check.timeout",
                "upstreams.h.health_check.timeout",
                "upstreams.p.request_timeout",
                "upstreams.p.health_check.interval",
                "upstreams.p.health_check.timeout",
                "upstreams.p.health_check.path",
                "upstreams.p.health_check.healthy_threshold",
                "upstreams.p.health_check.unhealthy_threshold",
                "upstreams.p.ejection.consecutive_failures",
                "upstreams.p.ejection.base_time",
                "upstreams.p.ejection.max_time",
                "upstreams.p.ejection.max_ejected_ratio",
                "upstreams.p.circuit_breaker.max_requests",
                "upstreams.p.circuit_breaker.max_endpoint_requests",
                "upstreams.p.circuit_breaker.retry_after",
                "upstreams.p.retry.budget_ratio",
                "upstreams.s.srv.interval",
            ]
        );
        for bad in ["1001", "-0.1"] {
            assert_eq!(
                paths(&format!(
                    "listen: \"127.0.0.1:0\"\nupstreams:\n  p: {{ endpoints: [\"http://127.0.0.1:1\"], retry: {{ budget_ratio: {bad} }} }}\n{ROUTE}"
                )),
                ["upstreams.p.retry.budget_ratio"],
                "{bad}"
            );
        }
    }

    #[test]
    fn pool_only_settings_on_a_single_url_name_the_pool_keys() {
        let cfg = crate::config::parse_str(
            &format!(
                "listen: \"127.0.0.1:0\"\nupstreams:\n  u:\n    url: \"http://127.0.0.1:1\"\n    balance: round_robin\n    hedge: {{ after: 50ms }}\n    request_timeout: 1s\n    health_check: {{}}\n    ejection: {{}}\n    circuit_breaker: {{}}\n    retry: {{}}\n{ROUTE}"
            ),
            crate::config::Format::Yaml,
        )
        .unwrap();
        let mut errs = Vec::new();
        check_structure(&cfg, &mut errs);
        let got: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            got,
            [
                "upstreams.u.balance",
                "upstreams.u.hedge",
                "upstreams.u.request_timeout",
                "upstreams.u.health_check",
                "upstreams.u.ejection",
                "upstreams.u.circuit_breaker",
                "upstreams.u.retry",
            ]
        );
        for e in &errs {
            assert!(e.message.contains("`endpoints`, `dns` or `srv`"), "{e}");
        }
    }

    #[test]
    fn ignored_settings_are_refused() {
        // A redirect's `port` goes with `https: true` only.
        let redirect = |r: &str| {
            paths(&format!(
                "listen: \"127.0.0.1:0\"\nroutes:\n  - name: r\n    redirect: {r}\n"
            ))
        };
        assert_eq!(
            redirect("{ to: \"https://b.example/x\", port: 8443 }"),
            ["routes[0].redirect.port"]
        );
        assert!(redirect("{ https: true, port: 8443 }").is_empty());
        // Upstream TLS settings with no https:// endpoint to use them.
        let tls = |u: &str| {
            paths(&format!(
                "listen: \"127.0.0.1:0\"\nupstreams:\n  u: {{ {u}, tls: {{ server_name: x }} }}\n{ROUTE}"
            ))
        };
        for ignored in [
            "url: \"http://a:1\"",
            "endpoints: [\"http://a:1\", { url: \"http://b:1\", weight: 2 }]",
            "dns: { host: a, port: 80 }",
            "srv: { name: _a._tcp.b, scheme: http }",
        ] {
            assert_eq!(tls(ignored), ["upstreams.u.tls"], "{ignored}");
        }
        for used in [
            "url: \"https://a:1\"",
            "endpoints: [\"http://a:1\", \"HTTPS://b:1\"]",
            "dns: { host: a, port: 443, scheme: https }",
            "srv: { name: _a._tcp.b, scheme: https }",
        ] {
            assert!(tls(used).is_empty(), "{used}");
        }
    }

    #[test]
    fn aggregate_limits_are_not_zero() {
        assert_eq!(
            paths(
                "listen: \"127.0.0.1:0\"\nroutes:\n  - name: a\n    aggregate:\n      deadline: 0s\n      max_response_size: 0\n      max_concurrent_calls: 0\n      calls: [{ name: x, upstream: \"http://a:1\", path: /x }]\n"
            ),
            [
                "routes[0].aggregate.deadline",
                "routes[0].aggregate.max_response_size",
                "routes[0].aggregate.max_concurrent_calls",
            ]
        );
    }

    /// User info in an upstream URL is refused where it is written, used
    /// or not, and no error or serialized config shows its password.
    #[test]
    fn upstream_urls_with_user_info_are_refused_without_showing_it() {
        let yaml = "listen: \"127.0.0.1:0\"\nupstreams:\n  billing: { url: \"https://svc:hunter2@billing\" }\n  pool: { endpoints: [\"http://svc:hunter2@127.0.0.1:1\", { url: \"http://tok@127.0.0.1:2\", weight: 2 }] }\nroutes:\n  - name: a\n    upstream: pool\n  - name: b\n    upstream: \"http://u:hunter2@127.0.0.1:3\"\n";
        let cfg = crate::config::parse_str(yaml, crate::config::Format::Yaml).unwrap();
        let Err(errs) = crate::stack::check(&cfg) else {
            panic!("accepted");
        };
        let paths: Vec<&str> = errs.errors.iter().map(|e| e.path.as_str()).collect();
        for want in [
            "upstreams.billing.url",
            "upstreams.pool.endpoints[0]",
            "upstreams.pool.endpoints[1]",
            "routes[1].upstream",
        ] {
            assert!(paths.contains(&want), "{want} in {paths:?}");
        }
        let text = errs.to_string();
        assert!(text.contains("user info"), "{text}");
        assert!(
            !text.contains("hunter2") && !text.contains("tok@"),
            "{text}"
        );
        let shown = serde_json::to_string(&cfg).unwrap();
        assert!(
            !shown.contains("hunter2") && !shown.contains("tok@"),
            "{shown}"
        );
    }

    #[test]
    fn the_admin_token_in_effect() {
        let long = "0123456789abcdef";
        let env = |v: &str| Some(OsString::from(v));
        assert_eq!(effective_admin_token(None, None), Ok(None));
        assert_eq!(
            effective_admin_token(None, Some(long)).unwrap().as_deref(),
            Some(long)
        );
        // The environment wins over the file.
        assert_eq!(
            effective_admin_token(env("fedcba9876543210"), Some(long))
                .unwrap()
                .as_deref(),
            Some("fedcba9876543210")
        );
        // Empty is unset: the file's token, or none at all (then a
        // non-loopback admin address is refused).
        assert_eq!(
            effective_admin_token(env(""), Some(long))
                .unwrap()
                .as_deref(),
            Some(long)
        );
        assert_eq!(effective_admin_token(env(""), None), Ok(None));
        // Too short, or not text: an error, never "no token".
        assert!(effective_admin_token(env("short"), Some(long)).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStringExt;
            let bad = OsString::from_vec(vec![0xff; 20]);
            assert!(effective_admin_token(Some(bad), None).is_err());
        }
    }
}
