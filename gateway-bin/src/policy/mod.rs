//! Config → crate builders for the per-route policies. Each function maps
//! one section of a route onto the crate's own builder and reports errors
//! with their path; `stack.rs` decides the order the layers run in.

mod auth;
mod route;

pub(crate) use auth::{auth_layer, check_require, ip_layer, providers};
pub(crate) use route::{
    cache_layer, compression_layer, cors_layer, decompression, fixed_response, redirect,
    store as cache_store, transform_layer, validate_layer,
};

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderName, StatusCode};
use towergate_ratelimit::{
    ConcurrencyLimitLayer, FailurePolicy, Key, Limit, MemoryStore, MissingKey, RateLimitLayer,
    RedisStore,
};

use crate::config::schema::{
    Concurrency, FailureMode, KeySpec, LimitConfig, MissingKeyConfig, RateLimiting, RouteRateLimit,
    StoreKind,
};
use crate::config::{ConfigError, parse_duration, push_new};

/// State that outlives a reload: rate-limit buckets are kept when a route
/// keeps its name, so a reload never hands every client a fresh burst, and
/// a Redis connection is reused while its settings do not change.
#[derive(Debug, Default)]
pub struct Registry {
    metrics: towergate_observe::Metrics,
    access_log: Mutex<Option<(String, towergate_observe::AccessLogLayer)>>,
    /// Each rate-limit scope's memory store, with the `max_keys` asked for.
    memory: Mutex<HashMap<String, (usize, MemoryStore)>>,
    /// Stores resized by the configuration being compiled, taken into
    /// `memory` only when it is applied (see [`Registry::commit_memory`]):
    /// a compile that fails must not leave a copy that the live stack does
    /// not update in place of the live store.
    memory_staged: Mutex<HashMap<String, (usize, MemoryStore)>>,
    redis: Mutex<HashMap<String, RedisStore>>,
    authenticators: Mutex<HashMap<String, Arc<dyn towergate_auth::Authenticator>>>,
    /// The keys of the authenticators the running configuration uses: a
    /// compile that fails leaves the ones it built behind, dropped as the
    /// next compile starts (see [`Registry::discard_staged`]).
    authenticators_live: Mutex<std::collections::HashSet<String>>,
    ejections_seen: Mutex<HashMap<String, u64>>,
    /// Each route's count of requests in flight for `concurrency`, by route
    /// name: a reload's new limit counts the requests the old stack let in.
    concurrency: Mutex<HashMap<String, ConcurrencyLimitLayer>>,
    /// The upstreams whose circuit state was last exported, to drop the
    /// series of those a reload removed.
    circuits_seen: Mutex<std::collections::BTreeSet<String>>,
    /// The response cache and the settings it was built with.
    cache: Mutex<Option<(String, towergate_cache::CacheStore)>>,
    /// Each cached route's cache settings when last compiled, to purge a
    /// route's entries when they change.
    cache_routes: Mutex<HashMap<String, String>>,
    /// Compiling only to check (`towergate check`): no file is created,
    /// no background work starts.
    check_only: bool,
}

/// Ejections since the last scrape, of an endpoint that had `before` then
/// and has `now`: fewer now means another pool (a reload's) since, all new.
fn new_ejections(before: u64, now: u64) -> u64 {
    now.checked_sub(before).unwrap_or(now)
}

/// An upstream's circuit over its endpoints' statuses: those draining on
/// purpose (weight 0) are left out; none left, or none healthy, is open.
fn circuit(
    statuses: &[towergate_balance::state::Status],
) -> towergate_observe::metrics::CircuitState {
    use towergate_balance::state::Status;
    use towergate_observe::metrics::CircuitState;
    let in_rotation = statuses.iter().filter(|s| **s != Status::Draining);
    let (healthy, all) = in_rotation.fold((0, 0), |(h, a), s| {
        (h + usize::from(*s == Status::Healthy), a + 1)
    });
    if healthy == 0 {
        CircuitState::Open
    } else if healthy == all {
        CircuitState::Closed
    } else {
        CircuitState::HalfOpen
    }
}

impl Registry {
    /// A registry for compiling only to check a configuration: the access
    /// log writes nowhere (its file is not created), pools start no DNS
    /// lookup and no health check.
    pub fn check_only() -> Self {
        Self {
            check_only: true,
            ..Self::default()
        }
    }

    /// Whether this registry compiles only to check.
    pub(crate) fn is_check_only(&self) -> bool {
        self.check_only
    }

    /// The process's metrics: one registry for the gateway's life, so
    /// counters survive reloads.
    pub fn metrics(&self) -> &towergate_observe::Metrics {
        &self.metrics
    }

    /// Feeds the balancer's state to the metrics at scrape time: new
    /// ejections since the last scrape, and each upstream's circuit state
    /// over the endpoints in rotation of all its pools (closed: every one
    /// healthy; half-open: some out; open: none healthy, or none at all,
    /// so requests only go out in panic mode or fail). Endpoints draining
    /// on purpose (weight 0) are left out. An upstream gone from the
    /// configuration loses its series.
    pub(crate) fn record_pool_states(&self, pools: &[crate::stack::PoolState]) {
        use std::collections::BTreeMap;
        use towergate_balance::state::Status;
        let Ok(mut seen) = self.ejections_seen.lock() else {
            return;
        };
        let mut now = HashMap::with_capacity(seen.len());
        // Per upstream, its endpoints' statuses.
        let mut circuits: BTreeMap<&str, Vec<Status>> = BTreeMap::new();
        for p in pools {
            let statuses = circuits.entry(p.upstream.as_str()).or_default();
            for e in &p.endpoints {
                // Keyed by upstream and endpoint, not by pool: a pool a
                // reload rebuilds takes its endpoints' ejection counts
                // over (`Pool::adopt_state`), and counts them on from
                // there; one that starts from 0 reads as a reset. (Pools
                // of one upstream seen together are told apart by their
                // order.)
                let mut key = format!("{}\u{0}{}", p.upstream, e.url);
                let base = key.len();
                let mut n = 0u32;
                while now.contains_key(&key) {
                    n += 1;
                    key.truncate(base);
                    key.push_str(&format!("\u{0}{n}"));
                }
                let before = seen.get(&key).copied().unwrap_or(0);
                for _ in 0..new_ejections(before, e.ejections) {
                    self.metrics.ejection(p.upstream.clone());
                }
                now.insert(key, e.ejections);
                statuses.push(e.status);
            }
        }
        // Pools that are gone are forgotten.
        *seen = now;
        let Ok(mut known) = self.circuits_seen.lock() else {
            return;
        };
        for (upstream, statuses) in &circuits {
            self.metrics.circuit_state(*upstream, circuit(statuses));
        }
        known.retain(|upstream| {
            let kept = circuits.contains_key(upstream.as_str());
            if !kept {
                self.metrics.forget_circuit_state(upstream.as_str());
            }
            kept
        });
        known.extend(circuits.keys().map(|u| (*u).to_owned()));
    }

    /// The response cache, if a configuration ever used one.
    pub fn cache(&self) -> Option<towergate_cache::CacheStore> {
        self.cache.lock().ok()?.as_ref().map(|(_, c)| c.clone())
    }

    /// The response cache for these settings (its key): the running one
    /// while they do not change (entries survive reloads), a new one
    /// otherwise. Nothing changes until [`commit_cache`](Self::commit_cache):
    /// a configuration that fails to compile leaves the running cache alone.
    pub(crate) fn cache_store(
        &self,
        key: &str,
        build: impl FnOnce() -> towergate_cache::CacheStore,
    ) -> Option<(String, towergate_cache::CacheStore)> {
        let slot = self.cache.lock().ok()?;
        if let Some((k, c)) = &*slot
            && k == key
        {
            return Some((key.to_owned(), c.clone()));
        }
        Some((key.to_owned(), build()))
    }

    /// After a successful compile: keeps the configuration's cache (none if
    /// no route caches any more), records each cached route's settings, and
    /// purges the entries of routes whose settings changed or that left.
    pub(crate) fn commit_cache(
        &self,
        store: Option<(String, towergate_cache::CacheStore)>,
        routes: HashMap<String, String>,
    ) {
        if let Ok(mut slot) = self.cache.lock() {
            *slot = store;
        }
        let Ok(mut old) = self.cache_routes.lock() else {
            return;
        };
        if let Some(store) = self.cache() {
            for (name, settings) in old.iter() {
                if routes.get(name) != Some(settings) {
                    let n = store.purge(&towergate_cache::Purge::Namespace(name.clone()));
                    tracing::info!(route = %name, purged = n, "route's cache settings changed: its entries purged");
                }
            }
        }
        *old = routes;
    }

    /// Every Redis store in use, for the degraded gauge.
    /// Keeps only the Redis store of the configuration just compiled
    /// (`in_use`, its settings' key; none for `store: memory`), once the
    /// compile succeeded: a store a reload left behind gets no more calls,
    /// so its last failure would hold `towergate_redis_degraded` at 1.
    pub(crate) fn commit_redis(&self, in_use: Option<&str>) {
        if let Ok(mut map) = self.redis.lock() {
            map.retain(|key, _| Some(key.as_str()) == in_use);
        }
    }

    pub(crate) fn redis_stores(&self) -> Vec<RedisStore> {
        self.redis
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The access-log layer for `key` (its configuration), reusing the
    /// running writer when the configuration did not change.
    pub(crate) fn access_log(
        &self,
        key: &str,
        build: impl FnOnce() -> Result<towergate_observe::AccessLogLayer, String>,
    ) -> Result<towergate_observe::AccessLogLayer, String> {
        let mut slot = self
            .access_log
            .lock()
            .map_err(|_| "registry lock poisoned".to_owned())?;
        if let Some((k, l)) = &*slot
            && k == key
        {
            return Ok(l.clone());
        }
        let l = build()?;
        *slot = Some((key.to_owned(), l.clone()));
        Ok(l)
    }

    /// Opens the access log's file again (log rotation, on SIGHUP).
    pub fn reopen_access_log(&self, timeout: std::time::Duration) {
        if let Ok(slot) = self.access_log.lock()
            && let Some((_, l)) = &*slot
            && !l.reopen(timeout)
        {
            // The writer already said why when the file would not open;
            // this covers a writer too busy to answer in time.
            tracing::warn!(
                ?timeout,
                "access log: not reopened; lines may still go to the file renamed away"
            );
        }
    }

    /// Flushes the access log, at shutdown.
    pub fn flush_access_log(&self, timeout: std::time::Duration) {
        if let Ok(slot) = self.access_log.lock()
            && let Some((_, l)) = &*slot
        {
            l.flush(timeout);
        }
    }
    fn authenticator(&self, key: &str) -> Option<Arc<dyn towergate_auth::Authenticator>> {
        self.authenticators.lock().ok()?.get(key).cloned()
    }

    fn keep_authenticator(&self, key: String, a: Arc<dyn towergate_auth::Authenticator>) {
        if let Ok(mut m) = self.authenticators.lock() {
            m.insert(key, a);
        }
    }

    /// Keeps only the authenticators of the configuration just compiled:
    /// a replaced one (a changed provider) is dropped with its secrets and
    /// its background JWKS refresh, instead of living on after every
    /// reload.
    pub(crate) fn commit_authenticators(&self, in_use: &std::collections::HashSet<String>) {
        if let Ok(mut m) = self.authenticators.lock() {
            m.retain(|key, _| in_use.contains(key));
        }
        if let Ok(mut live) = self.authenticators_live.lock() {
            live.clone_from(in_use);
        }
    }

    /// The memory store of a rate-limit scope, kept across reloads; a
    /// changed `max_keys` gets a store of the new size that starts with the
    /// old one's buckets.
    fn memory(&self, scope: &str, max_keys: usize) -> Result<MemoryStore, String> {
        let poisoned = |_| "registry lock poisoned".to_owned();
        let mut map = self.memory.lock().map_err(poisoned)?;
        let mut staged = self.memory_staged.lock().map_err(poisoned)?;
        if let Some((asked, s)) = staged.get(scope)
            && *asked == max_keys
        {
            return Ok(s.clone());
        }
        match map.get(scope) {
            Some((asked, s)) if *asked == max_keys => {
                staged.remove(scope);
                Ok(s.clone())
            }
            Some((_, s)) => {
                let resized = s.resized(max_keys).map_err(|e| e.to_string())?;
                staged.insert(scope.to_owned(), (max_keys, resized.clone()));
                Ok(resized)
            }
            None => {
                let store = MemoryStore::builder()
                    .max_keys(max_keys)
                    .build()
                    .map_err(|e| e.to_string())?;
                map.insert(scope.to_owned(), (max_keys, store.clone()));
                Ok(store)
            }
        }
    }

    /// Forgets what a compile staged (called as the next one starts): the
    /// stores it resized, and the authenticators it built that the running
    /// configuration does not use (a failed reload's new JWKS provider
    /// stops fetching, and its secrets are dropped).
    pub(crate) fn discard_staged(&self) {
        if let Ok(mut staged) = self.memory_staged.lock() {
            staged.clear();
        }
        if let (Ok(mut m), Ok(live)) = (self.authenticators.lock(), self.authenticators_live.lock())
        {
            m.retain(|key, _| live.contains(key));
        }
    }

    /// How many authenticators are kept (for tests).
    #[cfg(test)]
    pub(crate) fn authenticators_kept(&self) -> usize {
        self.authenticators.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Keeps the in-flight counts of the routes that still have a
    /// concurrency limit.
    pub(crate) fn commit_concurrency(&self, in_use: &std::collections::HashSet<&str>) {
        if let Ok(mut kept) = self.concurrency.lock() {
            kept.retain(|route, _| in_use.contains(route.as_str()));
        }
    }

    /// Takes in the stores the configuration just compiled resized, and
    /// keeps only those of its rate-limit scopes: a removed or renamed
    /// route's buckets are freed instead of living as long as the process.
    pub(crate) fn commit_memory(&self, in_use: &std::collections::HashSet<String>) {
        if let (Ok(mut map), Ok(mut staged)) = (self.memory.lock(), self.memory_staged.lock()) {
            map.extend(staged.drain());
            map.retain(|scope, _| in_use.contains(scope));
        }
    }

    fn redis(&self, settings: &RedisResolved) -> Result<RedisStore, String> {
        let key = settings.key();
        let mut map = self
            .redis
            .lock()
            .map_err(|_| "registry lock poisoned".to_owned())?;
        if let Some(s) = map.get(&key) {
            return Ok(s.clone());
        }
        let store = RedisStore::builder(settings.url.clone())
            .prefix(settings.prefix.clone())
            .timeout(settings.timeout)
            .connect_timeout(settings.connect_timeout)
            .build()
            .map_err(|e| e.to_string())?;
        map.insert(key, store.clone());
        Ok(store)
    }
}

/// The rate-limit scopes of `cfg`'s routes (their memory stores); see
/// [`Registry::commit_memory`].
pub(crate) fn rate_limit_scopes(cfg: &crate::config::Config) -> std::collections::HashSet<String> {
    cfg.routes
        .iter()
        .filter_map(|r| {
            let rl = r.rate_limit.as_ref()?;
            Some(rl.scope.clone().unwrap_or_else(|| r.name.clone()))
        })
        .collect()
}

/// The key of the Redis store `store` asks for, if it asks for one; see
/// [`Registry::commit_redis`].
pub(crate) fn redis_in_use(store: &RateLimiting) -> Option<String> {
    if !matches!(store.store, StoreKind::Redis) {
        return None;
    }
    resolve_redis(store, &mut Vec::new()).map(|r| r.key())
}

impl RedisResolved {
    /// What the registry keeps its store under.
    fn key(&self) -> String {
        format!("{self:?}")
    }
}

#[derive(Debug)]
struct RedisResolved {
    url: String,
    prefix: String,
    timeout: Duration,
    connect_timeout: Duration,
}

/// The `ip` key, and the default: the client's IPv4 address, or its IPv6
/// /64, which one client usually holds whole (keyed by the full address,
/// it would rotate its low 64 bits into a new bucket per request).
/// `net:32/128` keys by the exact address.
const CLIENT: Key = Key::ClientNet { v4: 32, v6: 64 };

/// A route's rate-limit layers: the limits marked `before_auth` run
/// before authentication (so failed logins count too), the others after
/// it (so they can key on the caller's identity).
#[derive(Default)]
pub(crate) struct RateLimitLayers {
    pub(crate) before_auth: Option<RateLimitLayer>,
    pub(crate) after_auth: Option<RateLimitLayer>,
}

/// Where a route's buckets live.
enum Stores {
    Memory(MemoryStore),
    /// Redis, with the in-memory fallback.
    Redis(RedisStore, MemoryStore),
}

/// Builds a route's rate-limit layers.
pub(crate) fn rate_limit_layers(
    route: &str,
    cfg: &RouteRateLimit,
    store: &RateLimiting,
    registry: &Registry,
    authenticated: bool,
    p: &str,
    errs: &mut Vec<ConfigError>,
) -> RateLimitLayers {
    let before = errs.len();
    let key = match &cfg.key {
        Some(k) => parse_key(k, &format!("{p}.key"), errs),
        None => Some(CLIENT),
    };
    // Without `auth` no request has an identity: every one would be
    // refused (or, with `on_missing_key: shared`, all share one bucket).
    let no_identity = |key: &Key, at: String, errs: &mut Vec<ConfigError>| {
        if !authenticated && uses_identity(key) {
            errs.push(ConfigError::new(
                at,
                "keys on `identity:`, but the route has no `auth`: no request would have one",
            ));
        }
    };
    if let Some(k) = &key {
        no_identity(k, format!("{p}.key"), errs);
    }
    if cfg.limits.is_empty() {
        errs.push(ConfigError::new(
            format!("{p}.limits"),
            "at least one limit is required",
        ));
    }
    let mut early = Vec::new();
    let mut late = Vec::new();
    // Names are bucket ids within the scope: unique over both layers.
    let mut names = HashSet::new();
    for (i, l) in cfg.limits.iter().enumerate() {
        let lp = format!("{p}.limits[{i}]");
        let Some(limit) = limit(l, &lp, errs) else {
            continue;
        };
        if let Some(own) = limit.own_key() {
            no_identity(own, format!("{lp}.key"), errs);
        }
        let name = limit.display_name();
        if !names.insert(name.clone()) {
            errs.push(ConfigError::new(
                format!("{lp}.name"),
                format!("`{name}` names two limits of this route; give each its own `name`"),
            ));
            continue;
        }
        if l.before_auth {
            if limit.own_key().or(key.as_ref()).is_some_and(uses_identity) {
                errs.push(ConfigError::new(
                    format!("{lp}.before_auth"),
                    "this limit keys on `identity:`, which is known only after authentication",
                ));
                continue;
            }
            early.push(limit);
        } else {
            late.push(limit);
        }
    }
    let missing = match &cfg.on_missing_key {
        None => None,
        Some(MissingKeyConfig::Word(w)) if w == "shared" => Some(MissingKey::Shared),
        Some(MissingKeyConfig::Status(s)) => match StatusCode::from_u16(*s) {
            Ok(st) if st.is_client_error() => Some(MissingKey::Refuse(st)),
            _ => {
                errs.push(ConfigError::new(
                    format!("{p}.on_missing_key"),
                    "must be a 4xx status or `shared`",
                ));
                None
            }
        },
        Some(MissingKeyConfig::Word(w)) => {
            errs.push(ConfigError::new(
                format!("{p}.on_missing_key"),
                format!("`{w}`: use a 4xx status or `shared`"),
            ));
            None
        }
    };
    let scope = cfg.scope.clone().unwrap_or_else(|| route.to_owned());
    let max_keys = store.max_keys.unwrap_or(100_000);
    let local = match registry.memory(&scope, max_keys) {
        Ok(s) => s,
        Err(e) => {
            errs.push(ConfigError::new("rate_limiting.max_keys", e));
            return RateLimitLayers::default();
        }
    };
    let stores = match store.store {
        StoreKind::Memory => Stores::Memory(local),
        StoreKind::Redis => {
            let Some(resolved) = resolve_redis(store, errs) else {
                return RateLimitLayers::default();
            };
            match registry.redis(&resolved) {
                Ok(r) => Stores::Redis(r, local),
                Err(e) => {
                    errs.push(ConfigError::new("rate_limiting.redis", e));
                    return RateLimitLayers::default();
                }
            }
        }
    };
    if errs.len() > before {
        return RateLimitLayers::default();
    }
    let mut build = |limits: Vec<Limit>| -> Option<RateLimitLayer> {
        if limits.is_empty() {
            return None;
        }
        let mut b = RateLimitLayer::builder()
            .scope(scope.clone())
            .legacy_headers(cfg.legacy_headers);
        if let Some(k) = &key {
            b = b.key(k.clone());
        }
        if let Some(m) = missing {
            b = b.on_missing_key(m);
        }
        for limit in limits {
            b = b.limit(limit);
        }
        b = match &stores {
            Stores::Memory(local) => b.store(local.clone()),
            Stores::Redis(r, local) => b.store(r.clone()).fallback(local.clone()),
        };
        match b.build() {
            Ok(l) => Some(l),
            Err(e) => {
                errs.push(ConfigError::new(p, e.to_string()));
                None
            }
        }
    };
    RateLimitLayers {
        before_auth: build(early),
        after_auth: build(late),
    }
}

/// Whether `key` reads the caller's identity.
fn uses_identity(key: &Key) -> bool {
    match key {
        Key::Identity(_) => true,
        Key::All(parts) => parts.iter().any(uses_identity),
        _ => false,
    }
}

fn resolve_redis(store: &RateLimiting, errs: &mut Vec<ConfigError>) -> Option<RedisResolved> {
    let r = store
        .redis
        .clone()
        .unwrap_or(crate::config::schema::RedisSettings {
            url: None,
            prefix: None,
            timeout: None,
            connect_timeout: None,
        });
    let url = match r.url.or_else(|| std::env::var("REDIS_URL").ok()) {
        Some(u) => u,
        None => {
            push_new(
                errs,
                ConfigError::new(
                    "rate_limiting.redis.url",
                    "`store: redis` needs a URL (or the REDIS_URL environment variable)",
                ),
            );
            return None;
        }
    };
    let dur =
        |v: &Option<String>, path: &str, default: Duration, errs: &mut Vec<ConfigError>| match v {
            None => default,
            Some(t) => parse_duration(t).unwrap_or_else(|e| {
                push_new(errs, ConfigError::new(path, e));
                default
            }),
        };
    Some(RedisResolved {
        url,
        prefix: r.prefix.unwrap_or_else(|| "towergate:".into()),
        timeout: dur(
            &r.timeout,
            "rate_limiting.redis.timeout",
            Duration::from_millis(50),
            errs,
        ),
        connect_timeout: dur(
            &r.connect_timeout,
            "rate_limiting.redis.connect_timeout",
            Duration::from_secs(1),
            errs,
        ),
    })
}

fn limit(l: &LimitConfig, p: &str, errs: &mut Vec<ConfigError>) -> Option<Limit> {
    let (count, period) = match parse_rate(&l.rate) {
        Ok(r) => r,
        Err(e) => {
            errs.push(ConfigError::new(format!("{p}.rate"), e));
            return None;
        }
    };
    let mut limit = Limit::new(count, period);
    if let Some(b) = l.burst {
        if b == 0 {
            errs.push(ConfigError::new(format!("{p}.burst"), "must be at least 1"));
        }
        limit = limit.burst(b);
    }
    if let Some(n) = &l.name {
        limit = limit.name(n.as_str());
    }
    if let Some(k) = &l.key
        && let Some(k) = parse_key(k, &format!("{p}.key"), errs)
    {
        limit = limit.key(k);
    }
    if let Some(m) = l.on_store_failure {
        limit = limit.on_store_failure(match m {
            FailureMode::Open => FailurePolicy::FailOpen,
            FailureMode::Closed => FailurePolicy::FailClosed,
        });
    }
    if limit.gcra().is_none() {
        errs.push(ConfigError::new(
            format!("{p}.rate"),
            format!("`{}` is out of range", l.rate),
        ));
        return None;
    }
    Some(limit)
}

/// `"10/s"`, `"1000/h"`, `"5/min"`, `"20/10s"`, `"100000/month"`.
pub(crate) fn parse_rate(s: &str) -> Result<(u64, Duration), String> {
    let (n, per) = s.split_once('/').ok_or_else(|| {
        format!("`{s}` is not a rate: write COUNT/PERIOD, e.g. \"10/s\", \"1000/h\"")
    })?;
    let count: u64 = n
        .trim()
        .parse()
        .map_err(|_| format!("`{n}` in `{s}` is not a count"))?;
    if count == 0 {
        return Err(format!("`{s}`: the count must be at least 1"));
    }
    let period = match per.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        "d" | "day" => Duration::from_secs(86_400),
        "month" => Duration::from_secs(30 * 86_400),
        other => parse_duration(other).map_err(|e| format!("`{s}`: {e}"))?,
    };
    if period.is_zero() {
        return Err(format!("`{s}`: the period must not be zero"));
    }
    Ok((count, period))
}

fn parse_key(k: &KeySpec, p: &str, errs: &mut Vec<ConfigError>) -> Option<Key> {
    match k {
        KeySpec::One(s) => key_part(s, p, errs),
        KeySpec::All(parts) => {
            let mut keys = Vec::new();
            for (i, s) in parts.iter().enumerate() {
                keys.push(key_part(s, &format!("{p}[{i}]"), errs)?);
            }
            Some(Key::all(keys))
        }
    }
}

fn key_part(s: &str, p: &str, errs: &mut Vec<ConfigError>) -> Option<Key> {
    let bad = |errs: &mut Vec<ConfigError>, why: String| {
        errs.push(ConfigError::new(p, why));
        None
    };
    match s.split_once(':') {
        None => match s {
            "ip" => Some(CLIENT),
            "route" => Some(Key::Route),
            "global" => Some(Key::Global),
            other => bad(
                errs,
                format!(
                    "unknown key `{other}` (ip, route, global, header:NAME, identity:FIELD, net:V4/V6)"
                ),
            ),
        },
        Some(("header", name)) => match HeaderName::from_bytes(name.trim().as_bytes()) {
            Ok(h) => Some(Key::header(h)),
            Err(_) => bad(errs, format!("`{name}` is not a header name")),
        },
        Some(("identity", field)) if !field.trim().is_empty() => Some(Key::identity(field.trim())),
        Some(("net", bits)) => {
            let parsed = bits
                .split_once('/')
                .and_then(|(a, b)| Some((a.parse::<u8>().ok()?, b.parse::<u8>().ok()?)));
            match parsed {
                Some((v4, v6)) if v4 <= 32 && v6 <= 128 => Some(Key::ClientNet { v4, v6 }),
                _ => bad(
                    errs,
                    format!("`{s}`: write net:V4BITS/V6BITS, e.g. net:24/64"),
                ),
            }
        }
        Some(_) => bad(
            errs,
            format!(
                "unknown key `{s}` (ip, route, global, header:NAME, identity:FIELD, net:V4/V6)"
            ),
        ),
    }
}

/// Builds route `route`'s concurrency limit, counting the requests in
/// flight together with the route's limit before the reload, if it had
/// one.
pub(crate) fn concurrency_layer(
    c: &Concurrency,
    route: &str,
    registry: &Registry,
    p: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<ConcurrencyLimitLayer> {
    if c.max == 0 {
        errs.push(ConfigError::new(format!("{p}.max"), "must be at least 1"));
        return None;
    }
    let retry_after = match &c.retry_after {
        None => Duration::from_secs(1),
        Some(t) => match parse_duration(t) {
            Ok(d) => d,
            Err(e) => {
                errs.push(ConfigError::new(format!("{p}.retry_after"), e));
                return None;
            }
        },
    };
    let layer = match registry.concurrency.lock() {
        Ok(mut kept) => match kept.get(route) {
            Some(before) => before.sharing(c.max),
            None => {
                let layer = ConcurrencyLimitLayer::new(c.max);
                kept.insert(route.to_owned(), layer.clone());
                layer
            }
        },
        Err(_) => ConcurrencyLimitLayer::new(c.max),
    };
    Some(layer.retry_after(retry_after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circuit_state_over_the_endpoints_in_rotation() {
        use towergate_balance::state::Status::{Draining, Ejected, Healthy, Unhealthy};
        use towergate_observe::metrics::CircuitState::{Closed, HalfOpen, Open};
        assert_eq!(circuit(&[Healthy, Healthy]), Closed);
        assert_eq!(circuit(&[Healthy, Ejected]), HalfOpen);
        assert_eq!(circuit(&[Unhealthy, Ejected]), Open);
        // Draining on purpose is not a failure.
        assert_eq!(circuit(&[Healthy, Draining]), Closed);
        // No endpoint at all (discovery found none), or only draining ones:
        // nothing takes requests.
        assert_eq!(circuit(&[]), Open);
        assert_eq!(circuit(&[Draining]), Open);
    }

    #[tokio::test]
    async fn only_the_redis_store_in_use_is_kept() {
        // Stores connect lazily: no Redis needed to build them.
        let resolved = |url: &str| RedisResolved {
            url: url.to_owned(),
            prefix: "towergate:".to_owned(),
            timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_millis(50),
        };
        let (a, b) = (
            resolved("redis://127.0.0.1:1/0"),
            resolved("redis://127.0.0.1:2/0"),
        );
        let registry = Registry::default();
        registry.redis(&a).unwrap();
        registry.redis(&b).unwrap();
        assert_eq!(registry.redis_stores().len(), 2);
        // A reload moved the limits from A to B: A's state no longer counts.
        registry.commit_redis(Some(&b.key()));
        assert_eq!(registry.redis_stores().len(), 1);
        // Then to memory.
        registry.commit_redis(None);
        assert!(registry.redis_stores().is_empty());
    }

    #[test]
    fn the_ip_key_groups_an_ipv6_client_by_its_64() {
        use towergate_ratelimit::KeyExtractor;
        let key = key_part("ip", "k", &mut Vec::new()).unwrap();
        let of = |addr: &str| {
            let mut req = http::Request::new(());
            req.extensions_mut()
                .insert(towergate_core::ClientAddr::direct(
                    addr.parse().unwrap(),
                    false,
                ));
            key.extract(&req.into_parts().0).unwrap()
        };
        // Rotating the low 64 bits does not make a new client.
        assert_eq!(of("[2001:db8:1:2::7]:1"), of("[2001:db8:1:2:ffff::9]:1"));
        assert_ne!(of("[2001:db8:1:2::7]:1"), of("[2001:db8:1:3::7]:1"));
        // IPv4 clients (mapped or not) by their address.
        assert_ne!(of("203.0.113.7:1"), of("203.0.113.8:1"));
        assert_eq!(of("203.0.113.7:1"), of("[::ffff:203.0.113.7]:1"));
    }

    #[test]
    fn ejections_of_a_rebuilt_pool_all_count() {
        assert_eq!(new_ejections(3, 5), 2);
        assert_eq!(new_ejections(5, 5), 0);
        // A reload's new pool (or one at a reused address) starts at 0.
        assert_eq!(new_ejections(5, 2), 2);
        assert_eq!(new_ejections(0, 4), 4);
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("10/s"), Ok((10, Duration::from_secs(1))));
        assert_eq!(parse_rate("1000/h"), Ok((1000, Duration::from_secs(3600))));
        assert_eq!(parse_rate("5/min"), Ok((5, Duration::from_secs(60))));
        assert_eq!(parse_rate("20/10s"), Ok((20, Duration::from_secs(10))));
        assert_eq!(
            parse_rate("7/month"),
            Ok((7, Duration::from_secs(30 * 86_400)))
        );
        assert!(parse_rate("10").is_err());
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("ten/s").is_err());
        assert!(parse_rate("10/fortnight").is_err());
    }

    #[test]
    fn keys() {
        let mut errs = Vec::new();
        assert!(key_part("ip", "k", &mut errs).is_some());
        assert!(key_part("header:x-api-key", "k", &mut errs).is_some());
        assert!(key_part("identity:consumer", "k", &mut errs).is_some());
        assert!(key_part("net:24/64", "k", &mut errs).is_some());
        assert!(errs.is_empty());
        assert!(key_part("nope", "k", &mut errs).is_none());
        assert!(key_part("net:40/64", "k", &mut errs).is_none());
        assert!(key_part("header:bad header", "k", &mut errs).is_none());
        assert_eq!(errs.len(), 3);
    }
}
