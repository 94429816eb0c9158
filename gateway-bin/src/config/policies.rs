//! Schema of the per-route policies and targets beyond plain proxying:
//! CORS, header transforms, request validation, compression, redirects,
//! fixed responses, caching and aggregation. `docs/policies.md`,
//! `docs/caching.md` and `docs/aggregation.md` describe every key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::schema::{Size, redact_header_values};

/// Cross-origin resource sharing; preflights are answered here.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Allowed origins: exact (`https://app.example.com`), wildcard
    /// subdomain (`https://*.example.com`) or `"*"` (any, no credentials).
    #[serde(default)]
    pub origins: Vec<String>,
    /// Allowed methods, or `["*"]`. Default `GET, HEAD, POST`.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Allowed request headers, or `["*"]`; `mirror` echoes what the
    /// preflight asks for. Default none beyond the CORS-safelisted ones.
    #[serde(default)]
    pub headers: Vec<String>,
    /// Response headers the browser may read.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// Allow cookies and credentials (refused together with `*`).
    #[serde(default)]
    pub credentials: bool,
    /// How long a preflight answer may be cached by the browser.
    pub max_age: Option<String>,
}

/// Header edits, applied in the order remove, rename, set, add.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderOps {
    /// Replace (or create) these headers; values are templates.
    #[serde(default, serialize_with = "redact_header_values")]
    pub set: BTreeMap<String, String>,
    /// Append these headers; values are templates.
    #[serde(default, serialize_with = "redact_header_values")]
    pub add: BTreeMap<String, String>,
    /// Remove these headers.
    #[serde(default)]
    pub remove: Vec<String>,
    /// Rename headers: `{ from: to }`.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Responses only: remove `Server` and `X-Powered-By`.
    #[serde(default)]
    pub hide_server: bool,
}

/// Request validation.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ValidateConfig {
    /// Allowed methods (405 otherwise).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Allowed content types of request bodies (415 otherwise).
    #[serde(default)]
    pub content_types: Vec<String>,
    /// JSON Schema file for JSON bodies (relative to the config file).
    pub json_schema: Option<String>,
    /// The JSON Schema inline, instead of a file.
    pub schema: Option<serde_json::Value>,
    /// Largest body that is validated (413 beyond). Default `1MiB`.
    pub max_body: Option<Size>,
    /// Required query parameters: `name: regex` (`""`: present).
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Required headers: `name: regex` (`""`: present).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// `compression: true`, or its settings.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum CompressionSpec {
    /// On with the defaults, or off.
    On(bool),
    /// On with these settings.
    With(CompressionConfig),
}

/// Response compression settings.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CompressionConfig {
    /// Smallest body compressed. Default `1KiB`.
    pub min_size: Option<Size>,
    /// Compressible content types (prefixes). Default text, JSON,
    /// JavaScript, XML, SVG.
    #[serde(default)]
    pub content_types: Vec<String>,
    /// Any of `gzip`, `br`, `zstd`. Default all three.
    #[serde(default)]
    pub algorithms: Vec<String>,
}

/// A redirect answered by the gateway.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedirectConfig {
    /// Target: a path or URL template (`/v2/{params.rest}`,
    /// `https://new.example.com/{params.rest}`).
    pub to: Option<String>,
    /// Redirect to the same host and path over HTTPS.
    #[serde(default)]
    pub https: bool,
    /// HTTPS port (with `https`), when not 443.
    pub port: Option<u16>,
    /// 301, 302, 303, 307 or 308. Default 301 (`https`) or 302 (`to`):
    /// browsers remember a 301 for good.
    pub status: Option<u16>,
    /// Append the request's query string. Default `true`.
    pub keep_query: Option<bool>,
}

/// A fixed answer (maintenance page, health stub).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RespondConfig {
    /// Status code.
    pub status: u16,
    /// Body text.
    pub body: Option<String>,
    /// Default `text/plain; charset=utf-8` when there is a body.
    pub content_type: Option<String>,
    /// Extra headers.
    #[serde(default, serialize_with = "redact_header_values")]
    pub headers: BTreeMap<String, String>,
}

/// The shared response cache (all routes with `cache` use it).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CacheStoreConfig {
    /// Memory bound of all entries. Default `64MiB`.
    pub max_size: Option<Size>,
    /// Largest response stored. Default `1MiB`.
    pub max_entry_size: Option<Size>,
}

/// A route's caching.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteCacheConfig {
    /// Lifetime of responses that carry no freshness information (none:
    /// such responses are not stored).
    pub ttl: Option<String>,
    /// Cacheable statuses. Default 200, 203, 204, 300, 301, 308, 404, 405,
    /// 410, 414, 501.
    #[serde(default)]
    pub statuses: Vec<u16>,
    /// What the cache key is made of, beyond method, host and path.
    #[serde(default)]
    pub key: CacheKeyConfig,
    /// Concurrent misses for one key make one upstream request. Default `true`.
    pub collapse: Option<bool>,
    /// Longest wait for a collapsed request. Default `5s`.
    pub collapse_timeout: Option<String>,
    /// Ignore the request's `Cache-Control` (`no-cache`, `max-age=0`),
    /// but for `no-store`. Default `false`.
    pub ignore_request_cache_control: Option<bool>,
}

/// Parts of the cache key.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CacheKeyConfig {
    /// `all` (default), `none`, or a list of query parameter names.
    pub query: Option<QueryKey>,
    /// Request headers in the key.
    #[serde(default)]
    pub headers: Vec<String>,
    /// An identity field (`sub`, `consumer`, a claim): one entry per caller.
    pub identity: Option<String>,
}

/// The query part of a cache key.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum QueryKey {
    /// `all` or `none`.
    Mode(String),
    /// These parameters only.
    Only(Vec<String>),
}

/// An aggregate endpoint: several upstream calls, one merged JSON answer.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AggregateConfig {
    /// The calls, in merge order.
    pub calls: Vec<AggregateCall>,
    /// Overall deadline. Default `10s`.
    pub deadline: Option<String>,
    /// Largest response read per call. Default `1MiB`.
    pub max_response_size: Option<Size>,
    /// Most calls in flight at once for one request. Default 16.
    pub max_concurrent_calls: Option<usize>,
}

/// One upstream call of an aggregate.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AggregateCall {
    /// Unique name; other calls refer to its response as `{name.field}`.
    pub name: String,
    /// A URL or the name of an entry of `upstreams`.
    pub upstream: String,
    /// Default `GET`.
    pub method: Option<String>,
    /// Path and query template: `/users/{identity.sub}`, `/orders?user={user.id}`.
    pub path: String,
    /// This call's own timeout.
    pub timeout: Option<String>,
    /// A required call that fails fails the request. Default `true`.
    pub required: Option<bool>,
    /// Incoming headers passed to this call.
    #[serde(default)]
    pub pass_headers: Vec<String>,
    /// Headers set on this call (templates).
    #[serde(default, serialize_with = "redact_header_values")]
    pub set_headers: BTreeMap<String, String>,
    /// Key of this call's part in the answer. Default: the call's name.
    pub group: Option<String>,
    /// Merge this call's object into the top level instead of a group.
    #[serde(default)]
    pub merge: bool,
    /// Use this sub-object of the response (`data.user`).
    pub pick: Option<String>,
    /// Keep only these fields.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Drop these fields.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Rename fields: `{ from: to }`.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
}
