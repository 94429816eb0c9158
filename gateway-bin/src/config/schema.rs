//! The configuration schema: plain structs, one per section of the file.
//!
//! Every struct refuses unknown keys. Durations and sizes are kept as
//! written here and parsed by validation, which knows their paths.
//! `docs/configuration.md` is the reference for every key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Shorthand for one plain-HTTP listener on this address.
    pub listen: Option<String>,
    /// Listeners, with TLS and HTTP/2 settings.
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Limits and timeouts of the server side.
    #[serde(default)]
    pub server: Server,
    /// Named upstreams that routes refer to.
    #[serde(default)]
    pub upstreams: BTreeMap<String, Upstream>,
    /// The routes, matched by precedence (see the routing docs).
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Where rate-limit state lives: in memory (one instance) or in Redis
    /// (shared by many instances).
    #[serde(default)]
    pub rate_limiting: RateLimiting,
    /// The admin server (`towergate run` only).
    #[serde(default)]
    pub admin: Admin,
    /// Directory of the file, against which relative paths resolve.
    #[serde(skip)]
    pub base_dir: Option<PathBuf>,
}

/// The admin server: metrics, health, state, reload, dashboard.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Serve the admin API. Default `true`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Where. Default `127.0.0.1:9901`; a non-loopback address needs a token.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// Bearer token required on `/admin/*` and `/metrics` (health probes stay
    /// open). The environment variable `TOWERGATE_ADMIN_TOKEN` overrides it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "redact"
    )]
    pub token: Option<String>,
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: default_admin_listen(),
            token: None,
        }
    }
}

fn default_admin_listen() -> String {
    "127.0.0.1:9901".into()
}

/// Secrets are written as `"<redacted>"` wherever the config is shown.
pub(crate) fn redact<S: serde::Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str("<redacted>"),
        None => s.serialize_none(),
    }
}

/// A listening socket.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// A name for logs.
    pub name: Option<String>,
    /// `IP:PORT` to bind.
    pub addr: String,
    /// Terminate TLS on this listener.
    pub tls: Option<ListenerTls>,
    /// Offer HTTP/2 (ALPN `h2` on TLS, prior knowledge on plain TCP).
    #[serde(default = "yes")]
    pub http2: bool,
}

/// TLS termination settings.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// Certificates, chosen by SNI.
    pub certificates: Vec<Certificate>,
}

/// One certificate and key, and the names it answers for.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// PEM file with the certificate chain, leaf first.
    pub cert: String,
    /// PEM file with the private key.
    pub key: String,
    /// SNI names (exact or `*.example.com`) this certificate is chosen for.
    /// A certificate without names is the default for every other name;
    /// at most one may be the default.
    #[serde(default)]
    pub server_names: Vec<String>,
}

/// Server-side limits.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// Largest request head (request line and headers). Default `64KiB`.
    pub max_header_bytes: Option<Size>,
    /// Time a client has to send its request head (slowloris). Default `10s`.
    pub header_read_timeout: Option<String>,
    /// Most open client connections; further ones wait in the accept queue.
    /// Default `10000`.
    pub max_connections: Option<usize>,
    /// How long in-flight requests may finish on shutdown. Default `30s`.
    pub drain_timeout: Option<String>,
    /// On shutdown, how long `/readyz` answers 503 before the listeners
    /// close, so a fronting load balancer stops sending. Default `0s`.
    pub shutdown_delay: Option<String>,
    /// Peers (IPs or CIDRs) whose forwarding headers are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Default request body limit for every route. Default `10MB`.
    pub max_body: Option<Size>,
    /// Pseudonym in `Via`. Default `towergate`.
    pub via: Option<String>,
}

/// A named upstream.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Base URL: `http://host:port[/base]` or `https://...`.
    pub url: String,
    /// TCP (and TLS) connect timeout. Default `5s`.
    pub connect_timeout: Option<String>,
    /// Time until the response headers arrive. Default `30s`.
    pub timeout: Option<String>,
    /// Speak HTTP/2 only: h2 by ALPN over TLS, h2c by prior knowledge over
    /// plain HTTP. Default `false`.
    #[serde(default)]
    pub http2: bool,
    /// TLS settings for `https` upstreams.
    pub tls: Option<UpstreamTls>,
}

/// TLS to an upstream.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// PEM file of CA certificates to trust instead of the system roots.
    pub ca: Option<String>,
    /// PEM certificate chain presented to the upstream (mTLS).
    pub client_cert: Option<String>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<String>,
    /// Name sent as SNI and verified, instead of the URL's host.
    pub server_name: Option<String>,
}

/// A route.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Unique name: in logs, metrics and `RouteMatch`.
    pub name: String,
    /// What requests the route takes.
    #[serde(rename = "match", default)]
    pub matcher: Match,
    /// Higher wins over the specificity rules. Default `0`.
    #[serde(default)]
    pub priority: i32,
    /// Remove the matched `path_prefix` before forwarding.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Replace the path with this template (`{param}` from the match).
    pub rewrite: Option<String>,
    /// A URL, or the name of an entry of `upstreams`.
    pub upstream: String,
    /// Send the client's `Host` upstream instead of the upstream's.
    #[serde(default)]
    pub preserve_host: bool,
    /// Send this `Host` upstream.
    pub host_rewrite: Option<String>,
    /// Overrides the upstream's `timeout` for this route.
    pub timeout: Option<String>,
    /// Request body limit; larger bodies get 413.
    pub max_body: Option<Size>,
    /// Rate limits and quotas.
    pub rate_limit: Option<RouteRateLimit>,
    /// Most requests in flight on this route; more get 503 at once.
    pub concurrency: Option<Concurrency>,
}

/// The rate-limit store, shared by every route.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimiting {
    /// `memory` (default) or `redis`.
    #[serde(default)]
    pub store: StoreKind,
    /// Redis settings, for `store: redis`.
    pub redis: Option<RedisSettings>,
    /// Most keys the in-memory store keeps per route (idle keys are
    /// evicted first). Default `100000`.
    pub max_keys: Option<usize>,
}

/// Where rate-limit state lives.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// In this process.
    #[default]
    Memory,
    /// In Redis, shared by every instance.
    Redis,
}

/// Redis connection settings.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://host:port[/db]`; `REDIS_URL` when omitted.
    pub url: Option<String>,
    /// Key prefix. Default `towergate:`.
    pub prefix: Option<String>,
    /// Per-decision timeout. Default `50ms`.
    pub timeout: Option<String>,
    /// Connect timeout. Default `1s`.
    pub connect_timeout: Option<String>,
}

/// A route's rate limits.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteRateLimit {
    /// What limits count by unless they say otherwise. Default `ip`.
    pub key: Option<KeySpec>,
    /// The limits; all are checked, the tightest is reported.
    pub limits: Vec<LimitConfig>,
    /// Requests without a key: `400` (default), `401`, or `shared` (one
    /// bucket for all of them).
    pub on_missing_key: Option<MissingKeyConfig>,
    /// Also send `X-RateLimit-Limit/-Remaining/-Reset`.
    #[serde(default)]
    pub legacy_headers: bool,
    /// Bucket namespace; routes with the same scope share buckets. Default:
    /// the route name.
    pub scope: Option<String>,
}

/// One limit.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// Name in headers and problems.
    pub name: Option<String>,
    /// `"10/s"`, `"1000/h"`, `"5000/d"`, `"100000/month"`, `"20/10s"`.
    pub rate: String,
    /// Requests admitted at once from a full bucket. Default: the count.
    pub burst: Option<u64>,
    /// Overrides the route's key.
    pub key: Option<KeySpec>,
    /// When the shared store is down: `open` (default: limit locally) or
    /// `closed` (503).
    pub on_store_failure: Option<FailureMode>,
}

/// A key: one part (`ip`, `route`, `global`, `header:NAME`,
/// `identity:FIELD`, `net:V4BITS/V6BITS`) or a list of parts.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum KeySpec {
    /// One part.
    One(String),
    /// All parts together.
    All(Vec<String>),
}

/// What to do with a request that has no key.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum MissingKeyConfig {
    /// Refuse with this 4xx status.
    Status(u16),
    /// `shared`.
    Word(String),
}

/// Store failure policy.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Keep serving, limiting locally.
    Open,
    /// Answer 503.
    Closed,
}

/// A concurrency limit.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Concurrency {
    /// Most requests in flight.
    pub max: usize,
    /// `Retry-After` on the 503. Default `1s`.
    pub retry_after: Option<String>,
}

/// The match part of a route. All given conditions must hold.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// One host (exact or `*.example.com`).
    pub host: Option<String>,
    /// Several hosts, any of them.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Methods; none means any. `GET` also allows `HEAD`.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Exact path or template (`/users/{id}`, `/files/{*rest}`).
    pub path: Option<String>,
    /// Path prefix, on segment boundaries; templates allowed.
    pub path_prefix: Option<String>,
    /// Header conditions.
    #[serde(default)]
    pub headers: BTreeMap<String, ValueMatch>,
    /// Query-parameter conditions.
    #[serde(default)]
    pub query: BTreeMap<String, ValueMatch>,
}

/// A header or query condition: a plain string means "equals".
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum ValueMatch {
    /// The value equals this string.
    Equals(String),
    /// `{ equals: .. }`, `{ present: true }` or `{ regex: .. }`.
    Rule(ValueRule),
}

/// The long form of a [`ValueMatch`]: exactly one key.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ValueRule {
    /// Equals this value.
    pub equals: Option<String>,
    /// Is present (with any value).
    pub present: Option<bool>,
    /// Matches this regex (anchored).
    pub regex: Option<String>,
}

/// A size: bytes as a number, or a string with a unit (`"10MB"`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Size {
    /// Bytes.
    Bytes(u64),
    /// With a unit.
    Text(String),
}

fn yes() -> bool {
    true
}
