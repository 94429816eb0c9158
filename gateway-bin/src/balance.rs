//! Config → `towergate-balance`: an upstream with several endpoints becomes
//! a pool of proxies (one per endpoint), and each route using it a
//! `Balance` service over that pool with the upstream's retry policy.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{HeaderName, Request, StatusCode};
use http_body_util::Empty;
use tower::Layer;
use tower::ServiceExt;
use towergate_balance::discover::Srv;
use towergate_balance::{
    Algorithm, Balance, CircuitBreaker, Ejection, Endpoint, HashKey, HealthCheck, Outcome, Pool,
    RetryBudget, RetryOn, RetryPolicy,
};
use towergate_balance::{Classify, Dns, Hedge, classify};
use towergate_core::{BoxError, cause_ref};
use towergate_observe::{Metrics, RecordUpstream, RecordUpstreamLayer};
use towergate_proxy::error::{RequestBodyFailed, UpstreamTimeout, UpstreamUnavailable};
use towergate_proxy::{Proxy, WeakClient};

use crate::config::schema::{BalanceSpec, EndpointSpec, Upstream};
use crate::config::{ConfigError, parse_duration};
use crate::stack::ProxySettings;

/// An endpoint: the proxy, recording its own latency and status.
pub(crate) type ProxyEndpoint = RecordUpstream<Proxy>;
/// A pool of proxy endpoints.
pub(crate) type ProxyPool = Pool<ProxyEndpoint>;
/// How the balancer reads the proxy's errors.
#[derive(Clone, Debug)]
pub(crate) struct ProxyClassify {
    /// The longest response timeout among the routes (and aggregate calls)
    /// sharing the pool, in nanoseconds. A shorter one running out is that
    /// route's impatience, not the endpoint's fault: one route's 200 ms
    /// must not eject endpoints that another route waits 60 s for. When
    /// every route waits as long, a timeout counts as usual, so an endpoint
    /// that stopped answering is still ejected.
    patience: Arc<AtomicU64>,
}

impl ProxyClassify {
    /// Counts `timeout` (a route's, or the upstream's own) among the pool's.
    pub(crate) fn note_timeout(patience: &AtomicU64, timeout: Duration) {
        let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        patience.fetch_max(nanos, Ordering::Relaxed);
    }
}

impl Classify for ProxyClassify {
    fn classify_error(&self, error: &(dyn std::error::Error + 'static)) -> Outcome {
        if let Some(t) = cause_ref::<UpstreamTimeout>(error)
            && !t.is_connect()
            && t.after().is_some_and(|after| {
                after < Duration::from_nanos(self.patience.load(Ordering::Relaxed))
            })
        {
            return Outcome::Ignore;
        }
        classify_proxy_error(error)
    }
}
/// A route's balancer.
pub(crate) type ProxyBalance = Balance<ProxyEndpoint, ProxyClassify>;

/// The proxy's typed errors, as the balancer needs them: whether the
/// request left the gateway decides whether it is safe to retry.
fn classify_proxy_error(e: &(dyn std::error::Error + 'static)) -> Outcome {
    if let Some(u) = cause_ref::<UpstreamUnavailable>(e) {
        return if u.is_connect() {
            Outcome::ConnectFailure
        } else {
            Outcome::Failure
        };
    }
    if let Some(t) = cause_ref::<UpstreamTimeout>(e) {
        return if t.is_connect() {
            Outcome::ConnectFailure
        } else {
            Outcome::Timeout
        };
    }
    if cause_ref::<RequestBodyFailed>(e).is_some() {
        // The client's body broke: not the endpoint's fault.
        return Outcome::Ignore;
    }
    classify::default_error(e)
}

fn dur(
    v: &Option<String>,
    path: String,
    default: Duration,
    errs: &mut Vec<ConfigError>,
) -> Duration {
    match v {
        None => default,
        Some(t) => parse_duration(t).unwrap_or_else(|e| {
            errs.push(ConfigError::new(path, e));
            default
        }),
    }
}

/// The proxies to a pool's endpoints, for its requests and its health
/// checks alike.
struct EndpointProxies {
    settings: ProxySettings,
    /// One client per name that endpoints are found under (it carries the
    /// SNI), shared by that name's addresses. Held weakly: a client lives
    /// as long as a proxy built with it (an endpoint's, a probe's), so the
    /// clients of names that left the pool go with their last endpoint.
    /// SRV target names churn (Consul node names, autoscaled hosts), and
    /// each client holds its own TLS settings and connection pools.
    named_clients: Mutex<HashMap<String, WeakClient>>,
}

impl EndpointProxies {
    /// The proxy to `e`. One found through DNS is dialled by address but
    /// named by its host: SNI and certificate name over TLS, and Host.
    fn proxy(&self, e: &Endpoint) -> Result<Proxy, BoxError> {
        let settings = &self.settings;
        match e.hostname().map(|h| h.trim_end_matches('.')) {
            Some(name) if !name.is_empty() => {
                let https = e.url().starts_with("https://");
                let client = if https {
                    let mut clients = self
                        .named_clients
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    match clients.get(name).and_then(WeakClient::upgrade) {
                        Some(c) => c,
                        None => {
                            // Entries of names no endpoint uses any more
                            // are swept as new names come, so the map
                            // never holds many more names than are in use.
                            clients.retain(|_, c| c.is_alive());
                            let c = settings.client.for_server_name(name)?;
                            clients.insert(name.to_owned(), c.downgrade());
                            c
                        }
                    }
                } else {
                    settings.client.clone()
                };
                let host = match e.socket_addr().map(|a| a.port()) {
                    Some(port) if port != if https { 443 } else { 80 } => format!("{name}:{port}"),
                    _ => name.to_owned(),
                };
                settings.named_proxy(e.url(), client, host)
            }
            _ => settings.proxy(e.url()),
        }
        .map_err(BoxError::from)
    }
}

/// Builds the pool of an upstream with `endpoints`.
/// `start`: whether the pool's DNS lookups and health checks run (false:
/// built only to check the upstream's settings).
pub(crate) fn pool(
    name: &str,
    u: &Upstream,
    settings: &ProxySettings,
    metrics: &Metrics,
    start: bool,
    p: &str,
) -> Result<ProxyPool, ConfigError> {
    let mut errs = Vec::new();
    let proxies = Arc::new(EndpointProxies {
        settings: settings.clone(),
        named_clients: Mutex::default(),
    });
    let make_proxies = proxies.clone();
    let make_metrics = metrics.clone();
    let make = move |e: &Endpoint| -> Result<ProxyEndpoint, BoxError> {
        let proxy = make_proxies.proxy(e)?;
        Ok(RecordUpstreamLayer::new(e.url().to_owned())
            .forget_when_dropped(true)
            .metrics(make_metrics.clone())
            .mark_response(false)
            .record_request(false)
            .layer(proxy))
    };
    let endpoints = u.endpoints.iter().map(|e| match e {
        EndpointSpec::Url(url) => Endpoint::new(url.as_str()),
        EndpointSpec::Weighted { url, weight } => Endpoint::new(url.as_str()).with_weight(*weight),
    });
    let mut b = Pool::builder(name.to_owned(), make).endpoints(endpoints);
    if let Some(d) = &u.dns {
        let mut dns = Dns::new(d.host.clone(), d.port).interval(dur(
            &d.interval,
            format!("{p}.dns.interval"),
            Duration::from_secs(30),
            &mut errs,
        ));
        if let Some(s) = &d.scheme {
            if s != "http" && s != "https" {
                errs.push(ConfigError::new(
                    format!("{p}.dns.scheme"),
                    "use http or https",
                ));
            }
            dns = dns.scheme(s.clone());
        }
        b = b.dns(dns);
    }
    if let Some(d) = &u.srv {
        let mut srv = Srv::new(d.name.clone()).interval(dur(
            &d.interval,
            format!("{p}.srv.interval"),
            Duration::from_secs(30),
            &mut errs,
        ));
        if let Some(s) = &d.scheme {
            if s != "http" && s != "https" {
                errs.push(ConfigError::new(
                    format!("{p}.srv.scheme"),
                    "use http or https",
                ));
            }
            srv = srv.scheme(s.clone());
        }
        if let Some(ns) = &d.nameserver {
            match ns.parse() {
                Ok(addr) => srv = srv.nameserver(addr),
                Err(_) => errs.push(ConfigError::new(
                    format!("{p}.srv.nameserver"),
                    format!("`{ns}` is not an address like 127.0.0.1:8600"),
                )),
            }
        }
        b = b.srv(srv);
    }
    if let Some(spec) = &u.balance {
        b = b.algorithm(algorithm(spec, &format!("{p}.balance"))?);
    }
    if let Some(h) = &u.health_check {
        // Probes go as requests do: an endpoint found through DNS is
        // checked under its name (SNI, certificate, Host).
        let checker = move |e: &Endpoint, path: &str| {
            let proxy = proxies.proxy(e);
            let req = Request::get(path.to_owned()).body(Empty::<bytes::Bytes>::new());
            async move {
                let proxy = proxy?;
                let req = req.map_err(BoxError::from)?;
                let rsp = proxy.oneshot(req).await?;
                Ok::<StatusCode, BoxError>(rsp.status())
            }
        };
        let mut hc = HealthCheck::new(checker)
            .path(h.path.clone().unwrap_or_else(|| "/healthz".into()))
            .interval(dur(
                &h.interval,
                format!("{p}.health_check.interval"),
                Duration::from_secs(5),
                &mut errs,
            ))
            .timeout(dur(
                &h.timeout,
                format!("{p}.health_check.timeout"),
                Duration::from_secs(1),
                &mut errs,
            ));
        if !h.expected_statuses.is_empty() {
            hc = hc.expected_statuses(h.expected_statuses.iter().map(|s| *s..=*s));
        }
        if let Some(n) = h.healthy_threshold {
            hc = hc.healthy_threshold(n);
        }
        if let Some(n) = h.unhealthy_threshold {
            hc = hc.unhealthy_threshold(n);
        }
        b = b.health_check(hc);
    }
    if let Some(e) = &u.ejection {
        let mut ej = Ejection::default();
        if let Some(n) = e.consecutive_failures {
            ej = ej.consecutive_failures(n);
        }
        ej = ej
            .base_time(dur(
                &e.base_time,
                format!("{p}.ejection.base_time"),
                Duration::from_secs(10),
                &mut errs,
            ))
            .max_time(dur(
                &e.max_time,
                format!("{p}.ejection.max_time"),
                Duration::from_secs(300),
                &mut errs,
            ));
        if let Some(r) = e.max_ejected_ratio {
            ej = ej.max_ejected_ratio(r);
        }
        b = b.ejection(ej);
    }
    if let Some(c) = &u.circuit_breaker {
        let mut cb = CircuitBreaker::new();
        if let Some(n) = c.max_requests {
            cb = cb.max_requests(n);
        }
        if let Some(n) = c.max_endpoint_requests {
            cb = cb.max_endpoint_requests(n);
        }
        cb = cb.retry_after(dur(
            &c.retry_after,
            format!("{p}.circuit_breaker.retry_after"),
            Duration::from_secs(1),
            &mut errs,
        ));
        b = b.circuit_breaker(cb);
    }
    if let Some(e) = errs.into_iter().next() {
        return Err(e);
    }
    if start { b.build() } else { b.build_idle() }
        .map_err(|e| ConfigError::new(format!("{p}.endpoints"), e.to_string()))
}

fn algorithm(spec: &BalanceSpec, p: &str) -> Result<Algorithm, ConfigError> {
    match spec {
        BalanceSpec::Name(n) => match n.as_str() {
            "p2c" | "peak_ewma" => Ok(Algorithm::PeakEwma),
            "least_requests" => Ok(Algorithm::LeastRequests),
            "round_robin" => Ok(Algorithm::RoundRobin),
            "weighted_round_robin" => Ok(Algorithm::WeightedRoundRobin),
            other => Err(ConfigError::new(
                p,
                format!(
                    "`{other}`: use p2c, least_requests, round_robin, weighted_round_robin or {{ consistent_hash: KEY }}"
                ),
            )),
        },
        BalanceSpec::Hash { consistent_hash } => {
            let key = match consistent_hash.split_once(':') {
                None if consistent_hash == "ip" => HashKey::ClientIp,
                Some(("header", h)) => {
                    HashKey::Header(HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                        ConfigError::new(
                            format!("{p}.consistent_hash"),
                            format!("`{h}` is not a header name"),
                        )
                    })?)
                }
                Some(("cookie", c)) => HashKey::Cookie(c.into()),
                Some(("identity", f)) => HashKey::Identity(f.into()),
                Some(("param", n)) => HashKey::PathParam(n.into()),
                _ => {
                    return Err(ConfigError::new(
                        format!("{p}.consistent_hash"),
                        format!(
                            "`{consistent_hash}`: use ip, header:NAME, cookie:NAME, identity:FIELD or param:NAME"
                        ),
                    ));
                }
            };
            Ok(Algorithm::ConsistentHash(key))
        }
    }
}

/// A route's balancer over `pool`, with the upstream's retry policy.
/// The route's balance over `pool`; each retry or hedge counts in
/// `towergate_retries_total{route}`.
/// `patience`: the longest response timeout of the routes sharing `pool`
/// (see [`ProxyClassify`]).
pub(crate) fn balance(
    pool: ProxyPool,
    u: &Upstream,
    p: &str,
    route: &str,
    metrics: &Metrics,
    patience: Arc<AtomicU64>,
) -> Result<ProxyBalance, ConfigError> {
    let mut policy = RetryPolicy::default();
    if let Some(r) = &u.retry {
        if let Some(n) = r.max_retries {
            policy = policy.max_retries(n);
        }
        if !r.on.is_empty() {
            let mut on = RetryOn::none();
            for (i, c) in r.on.iter().enumerate() {
                on = match c {
                    serde_json::Value::String(s) if s == "connect" => on.connect_failure(true),
                    serde_json::Value::String(s) if s == "timeout" => on.timeout(true),
                    serde_json::Value::String(s) if s == "failure" => on.failure(true),
                    serde_json::Value::Number(n) => match n
                        .as_u64()
                        .and_then(|n| u16::try_from(n).ok())
                        .and_then(|n| StatusCode::from_u16(n).ok())
                    {
                        Some(st) => on.status(st),
                        None => {
                            return Err(ConfigError::new(
                                format!("{p}.retry.on[{i}]"),
                                format!("`{n}` is not a status"),
                            ));
                        }
                    },
                    other => {
                        return Err(ConfigError::new(
                            format!("{p}.retry.on[{i}]"),
                            format!("`{other}`: use connect, timeout, failure or a status code"),
                        ));
                    }
                };
            }
            policy = policy.retry_on(on);
        }
        if let Some(ratio) = r.budget_ratio {
            policy = policy.budget(Some(RetryBudget::new(ratio, 10, Duration::from_secs(10))));
        }
        policy = policy.non_idempotent(r.non_idempotent);
    }
    let (metrics, route): (Metrics, Arc<str>) = (metrics.clone(), Arc::from(route));
    let mut b = Balance::builder(pool)
        .classify(ProxyClassify { patience })
        .retry(policy)
        .on_retry(move || metrics.retry(route.clone()));
    if let Some(t) = &u.request_timeout {
        b = b.timeout(
            parse_duration(t).map_err(|e| ConfigError::new(format!("{p}.request_timeout"), e))?,
        );
    }
    if let Some(h) = &u.hedge {
        let hedge = match (&h.after, h.percentile) {
            (Some(a), None) => {
                let after = parse_duration(a)
                    .map_err(|e| ConfigError::new(format!("{p}.hedge.after"), e))?;
                if after.is_zero() {
                    // Not a delay but every read sent twice, until the
                    // retry budget is gone and real retries with it.
                    return Err(ConfigError::new(
                        format!("{p}.hedge.after"),
                        "must be more than 0s (a hedge after 0s sends every read twice)",
                    ));
                }
                Hedge::after(after)
            }
            (None, Some(q)) if (0.5..=0.999).contains(&q) => {
                Hedge::percentile(q, Duration::from_millis(100))
            }
            _ => {
                return Err(ConfigError::new(
                    format!("{p}.hedge"),
                    "give `after: DURATION` or `percentile: 0.5..0.999`",
                ));
            }
        };
        b = b.hedge(hedge);
    }
    b.build()
        .map_err(|e| ConfigError::new(format!("{p}.retry"), e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use towergate_core::TrustedProxies;
    use towergate_proxy::Client;

    fn proxies() -> EndpointProxies {
        EndpointProxies {
            settings: ProxySettings {
                client: Client::builder().build().unwrap(),
                timeout: Duration::from_secs(30),
                preserve_host: false,
                host_rewrite: None,
                trusted: TrustedProxies::default(),
                via: "towergate".into(),
                route_settings: true,
                tunnel_idle_timeout: Duration::from_secs(60),
                upgrade_protocols: Arc::from(Vec::<String>::new()),
                body_idle_timeout: Duration::from_secs(60),
            },
            named_clients: Mutex::default(),
        }
    }

    /// An https endpoint found through DNS under `name`.
    fn named(name: &str) -> Endpoint {
        Endpoint::new("https://127.0.0.1:8443").with_hostname(name)
    }

    /// SRV target names churn (node names, autoscaled hosts): the client
    /// of a name goes with its last endpoint, so the map stays as small as
    /// the set of names in use, while a name in use keeps its client.
    #[test]
    fn clients_of_names_no_endpoint_uses_go() {
        let proxies = proxies();
        let kept = proxies.proxy(&named("node-0.example")).unwrap();
        for i in 1..200 {
            // An endpoint comes, is probed, and leaves with its name.
            let p = proxies.proxy(&named(&format!("node-{i}.example"))).unwrap();
            let probe = proxies.proxy(&named(&format!("node-{i}.example"))).unwrap();
            drop((p, probe));
        }
        let clients = proxies.named_clients.lock().unwrap();
        assert!(clients.len() <= 2, "{} clients kept", clients.len());
        assert!(
            clients.contains_key("node-0.example"),
            "the name in use keeps its client"
        );
        drop(kept);
    }
}
