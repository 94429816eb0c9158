//! [`CacheLayer`] and its builder.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};
use tower::Layer;

use crate::clock::{Clock, SystemClock};
use crate::error::BuildError;
use crate::key::{KeyQuery, KeySpec};
use crate::service::Cache;
use crate::store::CacheStore;

/// The statuses stored by default: RFC 9110 §15.1's heuristically
/// cacheable statuses, without `206` (ranges are not stored).
pub const DEFAULT_CACHEABLE_STATUSES: [u16; 11] =
    [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

/// Caches GET and HEAD responses in a shared [`CacheStore`]: see the
/// [crate docs](crate) for the semantics.
///
/// Built with [`CacheLayer::builder`]. Cheap to clone; clones share the
/// configuration and the store.
#[derive(Clone, Debug)]
#[must_use]
pub struct CacheLayer {
    pub(crate) config: Arc<Config>,
}

/// Builds a [`CacheLayer`].
///
/// ```
/// use std::time::Duration;
/// use http::{HeaderName, StatusCode};
/// use towergate_cache::{CacheLayer, CacheStore, KeyQuery};
///
/// let store = CacheStore::builder().max_bytes(16 << 20).build();
/// let layer = CacheLayer::builder(store)
///     .namespace("catalog")
///     .default_ttl(Duration::from_secs(30))
///     .cacheable_statuses([StatusCode::OK, StatusCode::NOT_FOUND])
///     .key_query(KeyQuery::Only(vec!["page".into()]))
///     .key_header(HeaderName::from_static("x-tenant"))
///     .collapse_timeout(Duration::from_secs(2))
///     .build()
///     .unwrap();
/// # let _ = layer;
/// ```
#[derive(Debug)]
#[must_use]
pub struct CacheLayerBuilder {
    store: CacheStore,
    namespace: String,
    default_ttl: Option<Duration>,
    statuses: Vec<u16>,
    key_query: KeyQuery,
    key_headers: Vec<HeaderName>,
    key_identity: Option<String>,
    gateway_set_headers: Vec<HeaderName>,
    collapse: bool,
    collapse_timeout: Duration,
    max_waiters: usize,
    clock: Arc<dyn Clock>,
    status_name: String,
    ignore_request_cache_control: bool,
}

/// What every service of one layer shares.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) store: CacheStore,
    pub(crate) key: KeySpec,
    pub(crate) default_ttl: Option<Duration>,
    pub(crate) statuses: Vec<u16>,
    /// See [`CacheLayerBuilder::gateway_set_header`].
    pub(crate) gateway_set_headers: Vec<HeaderName>,
    pub(crate) collapse: bool,
    pub(crate) collapse_timeout: Duration,
    pub(crate) ignore_request_cache_control: bool,
    pub(crate) max_waiters: usize,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) status_name: Arc<str>,
}

// === impl CacheLayer ===

impl CacheLayer {
    /// A builder for a layer storing into `store`.
    pub fn builder(store: CacheStore) -> CacheLayerBuilder {
        CacheLayerBuilder {
            store,
            namespace: "default".into(),
            default_ttl: None,
            statuses: DEFAULT_CACHEABLE_STATUSES.to_vec(),
            key_query: KeyQuery::All,
            key_headers: Vec::new(),
            key_identity: None,
            gateway_set_headers: Vec::new(),
            collapse: true,
            collapse_timeout: Duration::from_secs(5),
            max_waiters: 1024,
            clock: Arc::new(SystemClock),
            status_name: "towergate".into(),
            ignore_request_cache_control: false,
        }
    }

    /// The store this layer caches into.
    pub fn store(&self) -> &CacheStore {
        &self.config.store
    }

    /// The namespace of this layer's keys.
    pub fn namespace(&self) -> &str {
        &self.config.key.namespace
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = Cache<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Cache::new(inner, self.clone())
    }
}

// === impl CacheLayerBuilder ===

impl CacheLayerBuilder {
    /// The route name: the first member of every key, and what
    /// [`Purge::Namespace`](crate::Purge::Namespace) removes (default
    /// `default`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The heuristic freshness lifetime of responses that state none
    /// (RFC 9111 §4.2.2). Without it (the default) such responses are not
    /// stored.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = Some(ttl);
        self
    }

    /// The statuses that may be stored (default
    /// [`DEFAULT_CACHEABLE_STATUSES`]). `206` and `304` are never stored.
    pub fn cacheable_statuses(mut self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        self.statuses = statuses.into_iter().map(|s| s.as_u16()).collect();
        self
    }

    /// Which query parameters enter the key (default [`KeyQuery::All`]).
    pub fn key_query(mut self, query: KeyQuery) -> Self {
        self.key_query = query;
        self
    }

    /// Adds a request header to the primary key (e.g. a tenant header).
    pub fn key_header(mut self, name: HeaderName) -> Self {
        if !self.key_headers.contains(&name) {
            self.key_headers.push(name);
        }
        self
    }

    /// Keys entries by this [`Identity`](towergate_core::Identity) field
    /// (e.g. `sub`): per-user responses never reach another user. Requests
    /// without an identity (or without the field) are then not cached, and
    /// responses to requests with `Authorization` may be stored.
    pub fn key_identity(mut self, field: impl Into<String>) -> Self {
        self.key_identity = Some(field.into());
        self
    }

    /// Names a request header that a layer in front sets to one value for
    /// every request, whatever the client sent (the gateway's own API key
    /// for the upstream). Requests carrying a header that looks like a
    /// credential (`X-API-Key`) are otherwise stored only when the upstream
    /// marks its answer shared, since the upstream may answer per key;
    /// this one is the same for every caller.
    pub fn gateway_set_header(mut self, name: HeaderName) -> Self {
        if !self.gateway_set_headers.contains(&name) {
            self.gateway_set_headers.push(name);
        }
        self
    }

    /// Whether concurrent misses for one key make one upstream request
    /// (default true).
    pub fn collapse(mut self, on: bool) -> Self {
        self.collapse = on;
        self
    }

    /// Whether a request's own `Cache-Control` is ignored, but for
    /// `no-store` (default false: honoured, as RFC 9111 says). A browser
    /// sends `max-age=0` on every reload, and any client can send
    /// `no-cache`: each then goes upstream. Ignoring them keeps the
    /// upstream's load in the gateway's hands, as nginx and Varnish do by
    /// default.
    pub fn ignore_request_cache_control(mut self, yes: bool) -> Self {
        self.ignore_request_cache_control = yes;
        self
    }

    /// How long a collapsed request waits for the leader before going
    /// upstream itself (default 5 s).
    pub fn collapse_timeout(mut self, timeout: Duration) -> Self {
        self.collapse_timeout = timeout;
        self
    }

    /// How many requests may wait on one leader; more go upstream at once
    /// (default 1024).
    pub fn max_waiters(mut self, n: usize) -> Self {
        self.max_waiters = n;
        self
    }

    /// The clock ages and freshness are computed with (default
    /// [`SystemClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The cache's name in `Cache-Status` (default `towergate`).
    pub fn cache_status_name(mut self, name: impl Into<String>) -> Self {
        self.status_name = name.into();
        self
    }

    /// Checks the configuration and builds the layer.
    pub fn build(self) -> Result<CacheLayer, BuildError> {
        let ns = &self.namespace;
        if ns.is_empty() || ns.bytes().any(|b| b == b'|' || b <= b' ' || b == 0x7f) {
            return Err(BuildError::InvalidNamespace(self.namespace));
        }
        if !is_sf_token(&self.status_name) || HeaderValue::from_str(&self.status_name).is_err() {
            return Err(BuildError::InvalidCacheStatusName(self.status_name));
        }
        if self.key_identity.as_deref().is_some_and(str::is_empty) {
            return Err(BuildError::EmptyIdentityField);
        }
        if let KeyQuery::Only(names) = &self.key_query
            && let Some(bad) = names
                .iter()
                .find(|n| n.is_empty() || n.contains(['&', '=']))
        {
            return Err(BuildError::InvalidQueryParam(bad.clone()));
        }
        if self.collapse && self.max_waiters == 0 {
            return Err(BuildError::NoWaiters);
        }
        let mut statuses = self.statuses;
        statuses.retain(|s| *s != 206 && *s != 304);
        Ok(CacheLayer {
            config: Arc::new(Config {
                store: self.store,
                key: KeySpec {
                    namespace: self.namespace.into(),
                    query: self.key_query,
                    headers: self.key_headers,
                    identity: self.key_identity,
                },
                default_ttl: self.default_ttl,
                statuses,
                gateway_set_headers: self.gateway_set_headers,
                collapse: self.collapse,
                collapse_timeout: self.collapse_timeout,
                ignore_request_cache_control: self.ignore_request_cache_control,
                max_waiters: self.max_waiters,
                clock: self.clock,
                status_name: self.status_name.into(),
            }),
        })
    }
}

/// RFC 8941 sf-token: `( ALPHA / "*" ) *( tchar / ":" / "/" )`.
fn is_sf_token(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '*')
        && chars.all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~:/".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        let b = || CacheLayer::builder(CacheStore::new());
        assert!(b().build().is_ok());
        assert!(matches!(
            b().namespace("a|b").build(),
            Err(BuildError::InvalidNamespace(_))
        ));
        assert!(matches!(
            b().namespace("").build(),
            Err(BuildError::InvalidNamespace(_))
        ));
        assert!(matches!(
            b().cache_status_name("1abc").build(),
            Err(BuildError::InvalidCacheStatusName(_))
        ));
        assert!(b().cache_status_name("edge-cache/eu").build().is_ok());
        assert!(matches!(
            b().key_identity("").build(),
            Err(BuildError::EmptyIdentityField)
        ));
        assert!(matches!(
            b().key_query(KeyQuery::Only(vec!["a=b".into()])).build(),
            Err(BuildError::InvalidQueryParam(_))
        ));
        assert!(matches!(
            b().max_waiters(0).build(),
            Err(BuildError::NoWaiters)
        ));
        assert!(b().max_waiters(0).collapse(false).build().is_ok());
    }
}
