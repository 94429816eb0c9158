//! The configuration schema: plain structs, one per section of the file.
//!
//! Every struct refuses unknown keys. Durations and sizes are kept as
//! written here and parsed by validation, which knows their paths.
//! `docs/configuration.md` is the reference for every key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use super::policies::*;

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
    /// Named authentication methods that routes refer to.
    #[serde(default)]
    pub auth_providers: BTreeMap<String, AuthProvider>,
    /// Where rate-limit state lives: in memory (one instance) or in Redis
    /// (shared by many instances).
    #[serde(default)]
    pub rate_limiting: RateLimiting,
    /// Request ids, access log, tracing.
    #[serde(default)]
    pub observability: Observability,
    /// The shared response cache.
    #[serde(default)]
    pub cache: CacheStoreConfig,
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

/// A URL as shown: its password (or a bare token as user info) redacted;
/// see [`towergate_core::url_without_password`].
pub(crate) fn redact_url<S: serde::Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&towergate_core::url_without_password(v))
}

/// [`redact_url`] for an optional URL.
pub(crate) fn redact_url_opt<S: serde::Serializer>(
    v: &Option<String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(url) => redact_url(url, s),
        None => s.serialize_none(),
    }
}

/// Header values as shown: those of headers that carry credentials
/// (`Authorization`, cookies, names with `token`, `key`, `secret`,
/// `auth`, ...) redacted; the others, templates mostly, as written.
pub(crate) fn redact_header_values<S: serde::Serializer>(
    v: &BTreeMap<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(v.iter().map(|(name, value)| {
        let shown = if credential_header(name) {
            "<redacted>"
        } else {
            value.as_str()
        };
        (name, shown)
    }))
}

/// Match conditions as shown: the value (or pattern) a credential-like
/// header or query parameter must have is redacted (a route reserved to
/// callers that send `x-internal-token: s3cr3t` must not show `s3cr3t`).
fn redact_match_values<S: serde::Serializer>(
    v: &BTreeMap<String, ValueMatch>,
    s: S,
) -> Result<S::Ok, S::Error> {
    const HIDDEN: &str = "<redacted>";
    s.collect_map(v.iter().map(|(name, m)| {
        let shown = match m {
            _ if !credential_header(name) => m.clone(),
            ValueMatch::Equals(_) => ValueMatch::Equals(HIDDEN.into()),
            ValueMatch::Rule(r) => ValueMatch::Rule(ValueRule {
                equals: r.equals.as_ref().map(|_| HIDDEN.into()),
                present: r.present,
                regex: r.regex.as_ref().map(|_| HIDDEN.into()),
            }),
        };
        (name, shown)
    }))
}

/// Whether a header (or query parameter) of this name may carry a
/// credential.
fn credential_header(name: &str) -> bool {
    towergate_core::url_text::looks_secret(name) || name.to_ascii_lowercase().contains("key")
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
    /// How long an upgraded connection (a WebSocket tunnel) may carry no
    /// byte either way before both sides are closed. Default `1h`.
    pub tunnel_idle_timeout: Option<String>,
    /// How long an HTTP/2 connection with no stream open is kept before
    /// the gateway closes it (`GOAWAY`). Default `3m`.
    pub http2_idle_timeout: Option<String>,
    /// How long a write to a client may stay blocked (the client takes no
    /// byte) before its connection is closed. Default `60s`.
    pub send_timeout: Option<String>,
    /// The protocols a client may switch to (`Upgrade`, answered `101`)
    /// through the gateway. Default `[websocket]`; `h2c` is refused.
    pub upgrade_protocols: Option<Vec<String>>,
    /// On shutdown, how long `/readyz` answers 503 before the listeners
    /// close, so a fronting load balancer stops sending. Default `0s`.
    pub shutdown_delay: Option<String>,
    /// Peers (IPs or CIDRs) whose forwarding headers are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Default request body limit for every route. Default `10MB`.
    pub max_body: Option<Size>,
    /// Pseudonym in `Via`, a token. Default `towergate`.
    pub via: Option<String>,
}

/// A named upstream.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Base URL of a single endpoint: `http://host:port[/base]` or
    /// `https://...`. Exclusive with `endpoints`.
    #[serde(serialize_with = "redact_url_opt")]
    pub url: Option<String>,
    /// Several endpoints, load balanced: URLs or `{ url, weight }`.
    #[serde(default)]
    pub endpoints: Vec<EndpointSpec>,
    /// Endpoints from DNS A/AAAA records, re-resolved on an interval.
    pub dns: Option<DnsConfig>,
    /// Endpoints from DNS SRV records (Consul, Kubernetes headless
    /// services), re-resolved on an interval.
    pub srv: Option<SrvConfig>,
    /// Overall deadline of a request across its attempts (504 beyond).
    pub request_timeout: Option<String>,
    /// Send a second attempt to another endpoint when the first is slow
    /// (idempotent requests only): `{ after: "50ms" }` or `{ percentile: 0.95 }`.
    pub hedge: Option<HedgeConfig>,
    /// `p2c` (default: peak-EWMA), `least_requests`, `round_robin`,
    /// `weighted_round_robin`, or `{ consistent_hash: KEY }`.
    pub balance: Option<BalanceSpec>,
    /// Active health checks.
    pub health_check: Option<HealthCheckConfig>,
    /// Passive health: outlier ejection.
    pub ejection: Option<EjectionConfig>,
    /// Limits on requests in flight.
    pub circuit_breaker: Option<CircuitBreakerConfig>,
    /// Retries to other endpoints.
    pub retry: Option<RetryConfig>,
    /// TCP (and TLS) connect timeout. Default `5s`.
    pub connect_timeout: Option<String>,
    /// Time until the response headers arrive. Default `30s`.
    pub timeout: Option<String>,
    /// Longest pause in a response body, once its headers came. Default
    /// `5m`.
    pub body_idle_timeout: Option<String>,
    /// How long an idle pooled connection to it is kept. Default `90s`.
    pub keepalive_timeout: Option<String>,
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
    /// A URL, or the name of an entry of `upstreams`. A route has exactly
    /// one target: `upstream`, `aggregate`, `redirect` or `respond`.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        serialize_with = "redact_url"
    )]
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
    /// Client address allow/deny lists.
    pub ip: Option<IpRules>,
    /// Authentication and authorization.
    pub auth: Option<RouteAuth>,
    /// Rate limits and quotas.
    pub rate_limit: Option<RouteRateLimit>,
    /// Most requests in flight on this route; more get 503 at once.
    pub concurrency: Option<Concurrency>,
    /// Cross-origin resource sharing.
    pub cors: Option<CorsConfig>,
    /// Edits of the request's headers before it goes upstream.
    pub request_headers: Option<HeaderOps>,
    /// Edits of the response's headers before it goes to the client.
    pub response_headers: Option<HeaderOps>,
    /// Request validation (methods, content types, JSON Schema, required
    /// query parameters and headers).
    pub validate: Option<ValidateConfig>,
    /// Response compression by `Accept-Encoding`.
    pub compression: Option<CompressionSpec>,
    /// Decode `Content-Encoding` (gzip, br, zstd) request bodies.
    #[serde(default)]
    pub decompress_request: bool,
    /// Plain-HTTP requests are redirected to HTTPS; HTTPS ones go on.
    #[serde(default)]
    pub redirect_https: bool,
    /// Response caching.
    pub cache: Option<RouteCacheConfig>,
    /// Target: several upstream calls merged into one JSON answer.
    pub aggregate: Option<AggregateConfig>,
    /// Target: a redirect.
    pub redirect: Option<RedirectConfig>,
    /// Target: a fixed response.
    pub respond: Option<RespondConfig>,
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
    #[serde(serialize_with = "redact_url_opt")]
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
    /// Checked before authentication, so that requests refused with 401
    /// (guessed passwords, forged tokens) count too and an RSA check is
    /// not done for a caller over the limit. Not with an `identity:` key.
    #[serde(default)]
    pub before_auth: bool,
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
    #[serde(default, serialize_with = "redact_match_values")]
    pub headers: BTreeMap<String, ValueMatch>,
    /// Query-parameter conditions.
    #[serde(default, serialize_with = "redact_match_values")]
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

/// Client address rules: deny wins over allow; with an allow list, only
/// listed clients pass.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IpRules {
    /// IPs or CIDRs allowed.
    #[serde(default)]
    pub allow: Vec<String>,
    /// IPs or CIDRs refused.
    #[serde(default)]
    pub deny: Vec<String>,
}

/// A route's authentication and authorization.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteAuth {
    /// Providers, the first whose credential is present decides.
    #[serde(default)]
    pub any_of: Vec<String>,
    /// Providers that must all pass.
    #[serde(default)]
    pub all_of: Vec<String>,
    /// Authorization rules on the identity (403 when not met).
    pub require: Option<Require>,
    /// Identity fields sent upstream as headers: `sub: X-User-Id`.
    #[serde(default)]
    pub identity_headers: BTreeMap<String, String>,
    /// Remove the credential before forwarding.
    #[serde(default)]
    pub strip_credentials: bool,
}

/// Authorization rules; all must hold.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Require {
    /// Scopes the caller must all have.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Claim conditions: a value (equals), `{ one_of: [..] }` or `{ contains: .. }`.
    #[serde(default)]
    pub claims: BTreeMap<String, ClaimRule>,
    /// The caller must be in one of these groups (claim `groups`).
    #[serde(default)]
    pub groups: Vec<String>,
}

/// A claim condition.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum ClaimRule {
    /// `{ one_of: [..] }` or `{ contains: .. }`.
    Rule(ClaimRuleSpec),
    /// Equals this value.
    Equals(serde_json::Value),
}

/// The long form of a claim condition: exactly one key.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClaimRuleSpec {
    /// The claim is one of these values.
    pub one_of: Option<Vec<serde_json::Value>>,
    /// The claim (an array or a space-separated string) contains this value.
    pub contains: Option<serde_json::Value>,
}

/// A named authentication method: exactly one of the keys.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthProvider {
    /// JSON Web Tokens.
    pub jwt: Option<JwtProvider>,
    /// API keys.
    pub api_key: Option<ApiKeyProvider>,
    /// OAuth2 token introspection (RFC 7662).
    pub introspection: Option<IntrospectionProvider>,
    /// External authorization service.
    pub forward: Option<ForwardProvider>,
    /// HTTP Basic against bcrypt/argon2 hashes.
    pub basic: Option<BasicProvider>,
}

/// Where a token is read from: `bearer`, or `{ header | cookie | query: NAME }`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum TokenFrom {
    /// `bearer`.
    Word(String),
    /// A header, cookie or query parameter.
    Named(TokenFromSpec),
}

/// The long form of [`TokenFrom`]: exactly one key.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenFromSpec {
    /// A header's whole value.
    pub header: Option<String>,
    /// A cookie.
    pub cookie: Option<String>,
    /// A query parameter.
    pub query: Option<String>,
}

/// JWT settings; keys from one of `jwks_url`, `secret`/`secret_env`, `pem_file`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtProvider {
    /// JWKS URL, fetched, cached and refreshed.
    #[serde(serialize_with = "redact_url_opt")]
    pub jwks_url: Option<String>,
    /// Shared secret (HS*), at least 32 bytes.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "redact"
    )]
    pub secret: Option<String>,
    /// Environment variable holding the shared secret.
    pub secret_env: Option<String>,
    /// PEM public key file(s).
    #[serde(default)]
    pub pem_files: Vec<String>,
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Required `aud`.
    pub audience: Option<String>,
    /// Allowed algorithms (`RS256`, `ES256`, `EdDSA`, `HS256`, ...).
    #[serde(default)]
    pub algorithms: Vec<String>,
    /// Clock leeway for `exp`, `nbf`, `iat`. Default `30s`.
    pub leeway: Option<String>,
    /// Where the token is. Default `bearer`.
    pub token_from: Option<TokenFrom>,
    /// Claim holding the consumer.
    pub consumer_claim: Option<String>,
    /// Realm in `WWW-Authenticate`.
    pub realm: Option<String>,
}

/// API keys.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyProvider {
    /// Header carrying the key. Default `x-api-key`.
    pub header: Option<String>,
    /// Query parameter carrying the key (instead of the header).
    pub query: Option<String>,
    /// The keys.
    pub keys: Vec<ApiKeyEntry>,
    /// Realm in `WWW-Authenticate`.
    pub realm: Option<String>,
}

/// One API key, stored hashed in memory.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// Who it belongs to.
    pub consumer: String,
    /// The key in plain text (hashed at load; prefer `key_sha256`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "redact"
    )]
    pub key: Option<String>,
    /// SHA-256 of the key, hex.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "redact"
    )]
    pub key_sha256: Option<String>,
    /// Scopes granted.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Metadata, as claims of the identity.
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// OAuth2 token introspection.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionProvider {
    /// The introspection endpoint.
    #[serde(serialize_with = "redact_url")]
    pub url: String,
    /// Client id for HTTP Basic to the endpoint.
    pub client_id: Option<String>,
    /// Client secret.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "redact"
    )]
    pub client_secret: Option<String>,
    /// Environment variable holding the client secret.
    pub client_secret_env: Option<String>,
    /// Call timeout. Default `2s`.
    pub timeout: Option<String>,
    /// Longest a result is cached. Default `5m`.
    pub max_ttl: Option<String>,
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Required `aud`.
    pub audience: Option<String>,
    /// Where the token is. Default `bearer`.
    pub token_from: Option<TokenFrom>,
    /// Realm in `WWW-Authenticate`.
    pub realm: Option<String>,
}

/// External authorization: a sub-request per request.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ForwardProvider {
    /// The auth service URL.
    #[serde(serialize_with = "redact_url")]
    pub url: String,
    /// Request headers sent to it (plus `X-Forwarded-Method`/`-Uri`).
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// Its response headers copied onto the upstream request on success.
    #[serde(default)]
    pub copy_headers: Vec<String>,
    /// Header of its response naming the subject.
    pub subject_header: Option<String>,
    /// Call timeout. Default `2s`.
    pub timeout: Option<String>,
}

/// HTTP Basic.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BasicProvider {
    /// File of `user:hash` lines (bcrypt or argon2 PHC strings).
    pub users_file: Option<String>,
    /// `user:hash` lines inline.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "redact_all"
    )]
    pub users: Vec<String>,
    /// Realm in `WWW-Authenticate`.
    pub realm: Option<String>,
}

fn redact_all<S: serde::Serializer>(v: &[String], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for line in v {
        let user = line.split(':').next().unwrap_or("");
        seq.serialize_element(&format!("{user}:<redacted>"))?;
    }
    seq.end()
}

/// Request ids, access log and tracing.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Observability {
    /// Request ids, spans, metrics and the access log for each request.
    /// Default `true`; `false` leaves only what the routes themselves do
    /// (for benchmarks of the observation cost, or behind a proxy that
    /// already observes).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Header carrying the request id. Default `x-request-id`.
    pub request_id_header: Option<String>,
    /// Keep a well-formed incoming request id. Default `true`.
    pub trust_request_id: Option<bool>,
    /// Give a request without a kept id a new one. Default `true`; `false`
    /// passes on only a kept incoming id (for a gateway behind a proxy
    /// that sets them, or to save their cost).
    pub generate_request_id: Option<bool>,
    /// One line per request.
    #[serde(default)]
    pub access_log: AccessLogConfig,
    /// OpenTelemetry traces. The exporter (`otlp_endpoint`, `protocol`,
    /// `service_name`) is set up at start and a reload does not change it;
    /// the request layer (`sample_ratio`, `trust_client_sampling`, `b3`,
    /// whether the block is there) is rebuilt at each reload.
    pub tracing: Option<TracingConfig>,
    /// How long an upstream endpoint's series stay in `/metrics` once it
    /// left every pool (a reload, DNS discovery). Default `5m`.
    pub forget_endpoints_after: Option<String>,
}

impl Default for Observability {
    fn default() -> Self {
        Self {
            enabled: true,
            request_id_header: None,
            trust_request_id: None,
            generate_request_id: None,
            access_log: AccessLogConfig::default(),
            tracing: None,
            forget_endpoints_after: None,
        }
    }
}

/// The access log.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// Write it. Default `false`.
    #[serde(default)]
    pub enabled: bool,
    /// `json` (default), `common` or `combined`.
    pub format: Option<String>,
    /// `stdout` (default), `stderr`, or a file path.
    pub sink: Option<String>,
    /// Query parameters kept in the logged path (all others are dropped).
    #[serde(default)]
    pub keep_query: Vec<String>,
}

/// OpenTelemetry traces over OTLP (HTTP/protobuf or gRPC).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// Collector URL: the OTLP/HTTP base URL (`http://127.0.0.1:4318`,
    /// `/v1/traces` is appended), or for gRPC the collector's address as
    /// given (`http://127.0.0.1:4317`, plaintext only).
    #[serde(serialize_with = "redact_url")]
    pub otlp_endpoint: String,
    /// The OTLP wire protocol: `http` (default) or `grpc`.
    #[serde(default)]
    pub protocol: TracingProtocol,
    /// `service.name`. Default `towergate`.
    pub service_name: Option<String>,
    /// Share of new traces sampled, 0.0 to 1.0 (parent-based). Default `0.01`.
    pub sample_ratio: Option<f64>,
    /// Also read a client's B3 single header (`b3`, Zipkin) when it sent no
    /// valid `traceparent`, and send `b3` to the upstream beside
    /// `traceparent`. Default `false`.
    #[serde(default)]
    pub b3: bool,
    /// Follow a client's "sampled" flag (parent-based). Default `true`;
    /// `false` at an internet-facing edge, so that clients cannot make
    /// every request of theirs export a span: their requests are sampled
    /// at `sample_ratio`, keeping their trace ids.
    #[serde(default = "yes")]
    pub trust_client_sampling: bool,
}

/// The OTLP wire protocol of [`TracingConfig`].
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TracingProtocol {
    /// Protobuf over HTTP (`POST /v1/traces`, port 4318 by convention).
    #[default]
    Http,
    /// Protobuf over gRPC (port 4317 by convention).
    Grpc,
}

/// An endpoint of a balanced upstream.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged, deny_unknown_fields)]
pub enum EndpointSpec {
    /// A URL, weight 1.
    Url(#[serde(serialize_with = "redact_url")] String),
    /// A URL with a weight.
    Weighted {
        /// The URL.
        #[serde(serialize_with = "redact_url")]
        url: String,
        /// Relative weight (0 drains it).
        weight: u32,
    },
}

impl EndpointSpec {
    /// The endpoint's URL.
    pub fn url(&self) -> &str {
        match self {
            Self::Url(url) | Self::Weighted { url, .. } => url,
        }
    }
}

/// How a balanced upstream picks an endpoint.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged, deny_unknown_fields)]
pub enum BalanceSpec {
    /// `p2c`, `least_requests`, `round_robin`, `weighted_round_robin`.
    Name(String),
    /// `{ consistent_hash: "header:NAME" | "cookie:NAME" | "ip" | "identity:FIELD" | "param:NAME" }`.
    Hash {
        /// The key.
        consistent_hash: String,
    },
}

/// Active health checks.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Path requested with GET. Default `/healthz`.
    pub path: Option<String>,
    /// Default `5s`.
    pub interval: Option<String>,
    /// Default `1s`.
    pub timeout: Option<String>,
    /// Healthy statuses. Default 200-399.
    #[serde(default)]
    pub expected_statuses: Vec<u16>,
    /// Passes in a row to be healthy again. Default 2.
    pub healthy_threshold: Option<u32>,
    /// Failures in a row to be taken out. Default 3.
    pub unhealthy_threshold: Option<u32>,
}

/// Outlier ejection.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EjectionConfig {
    /// Consecutive failures that eject. Default 5.
    pub consecutive_failures: Option<u32>,
    /// First ejection time, doubled on repeats. Default `10s`.
    pub base_time: Option<String>,
    /// Longest ejection. Default `5m`.
    pub max_time: Option<String>,
    /// Most of the pool ever ejected at once. Default 0.5.
    pub max_ejected_ratio: Option<f64>,
}

/// Circuit breaking.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Requests in flight to the whole pool.
    pub max_requests: Option<usize>,
    /// Requests in flight to one endpoint.
    pub max_endpoint_requests: Option<usize>,
    /// `Retry-After` of the 503. Default `1s`.
    pub retry_after: Option<String>,
}

/// Retries.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Extra attempts per request. Default 2.
    pub max_retries: Option<u32>,
    /// Conditions: `connect`, `timeout`, `failure`, or a status (502, 503, 504).
    /// Default `[connect, failure, 502, 503, 504]`.
    #[serde(default)]
    pub on: Vec<serde_json::Value>,
    /// Extra load retries may add, as a share of requests. Default 0.2.
    pub budget_ratio: Option<f64>,
    /// Also retry non-idempotent methods after a failure where the request
    /// may have been processed. Default `false`.
    #[serde(default)]
    pub non_idempotent: bool,
}

/// Endpoints from DNS.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// Name to resolve (A and AAAA).
    pub host: String,
    /// Port of every endpoint.
    pub port: u16,
    /// `http` (default) or `https`.
    pub scheme: Option<String>,
    /// Re-resolution interval. Default `30s`.
    pub interval: Option<String>,
}

/// Endpoints from SRV records.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SrvConfig {
    /// Record name, like `_users._tcp.service.consul` (Consul) or
    /// `_http._tcp.users.default.svc.cluster.local` (Kubernetes).
    pub name: String,
    /// `http` (default) or `https`.
    pub scheme: Option<String>,
    /// Re-resolution interval. Default `30s`.
    pub interval: Option<String>,
    /// DNS server to ask (`127.0.0.1:8600` for a Consul agent) instead of
    /// the system's resolvers.
    pub nameserver: Option<String>,
}

/// Hedging.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HedgeConfig {
    /// A fixed delay.
    pub after: Option<String>,
    /// A latency quantile of recent attempts (0.5 to 0.999).
    pub percentile: Option<f64>,
}
