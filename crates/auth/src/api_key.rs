//! API keys: a key in a header or query parameter, owned by a consumer.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use http::request::Parts;
use http::{HeaderName, HeaderValue};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;
use towergate_core::Identity;

use crate::authenticator::{Authenticated, Authenticator, BoxFuture};
use crate::cache::{Key, sha256_of};
use crate::challenge;
use crate::credential::TokenSource;
use crate::error::{AuthError, BuildError, reason};
use crate::layer::{ApiKeyLayer, LayerOptions};

/// Keys longer than this are refused without being hashed.
const MAX_KEY_LEN: usize = 1024;

/// Who owns an API key: a name, granted scopes, and metadata that goes to
/// [`Identity::claims`].
#[derive(Clone, PartialEq)]
pub struct Consumer {
    name: String,
    scopes: Vec<String>,
    metadata: Map<String, Value>,
}

/// Checks API keys: the [`Authenticator`] behind [`ApiKeyLayer`].
///
/// Keys are kept only as SHA-256 digests: the plain key is hashed when it
/// is added and never kept in memory or logged. [`hashed_key`] takes a
/// digest directly, so a configuration file need not hold plain keys.
///
/// The resulting [`Identity`]: `consumer` = the consumer's name, `scopes`
/// its scopes, `claims` its metadata, `method` = `"api_key"`.
///
/// [`hashed_key`]: ApiKeysBuilder::hashed_key
///
/// ```
/// use tower::ServiceExt;
/// use towergate_auth::{ApiKeyLayer, Consumer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let layer = ApiKeyLayer::builder()
///     .header(http::HeaderName::from_static("x-api-key"))
///     .key("s3cr3t-k3y", Consumer::new("acme").metadata("plan", "gold"))
///     .identity_header("consumer", http::HeaderName::from_static("x-consumer"))
///     .build()?;
/// let svc = tower::ServiceBuilder::new().layer(layer).service(tower::service_fn(
///     |req: http::Request<String>| async move {
///         let consumer = req.headers()["x-consumer"].to_str().unwrap_or("").to_owned();
///         Ok::<_, std::convert::Infallible>(http::Response::new(consumer))
///     },
/// ));
/// let req = http::Request::get("/").header("x-api-key", "s3cr3t-k3y").body(String::new())?;
/// let rsp = svc.clone().oneshot(req).await?;
/// assert_eq!(rsp.status(), 200);
/// let req = http::Request::get("/").header("x-api-key", "guess").body(String::new())?;
/// assert_eq!(svc.oneshot(req).await?.status(), 401);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ApiKeys {
    inner: Arc<Inner>,
}

/// Settings for [`ApiKeys`] (from [`ApiKeys::builder`]) or an
/// [`ApiKeyLayer`] (from [`ApiKeyLayer::builder`]).
#[must_use]
pub struct ApiKeysBuilder<O = ApiKeys> {
    keys: Vec<(Key, Consumer)>,
    sources: Vec<TokenSource>,
    realm: String,
    deferred: Option<BuildError>,
    pub(crate) layer: LayerOptions,
    _out: PhantomData<fn() -> O>,
}

struct Inner {
    // Keyed by the digest of the key. Looking a digest up in a HashMap is
    // not constant-time, but what it could leak is how much of the digest
    // of the attacker's own guess matches a stored digest, and that says
    // nothing about any key (SHA-256 is preimage resistant). The final
    // comparison is constant-time all the same.
    keys: HashMap<Key, Consumer>,
    sources: Vec<TokenSource>,
    realm: String,
}

// === impl Consumer ===

impl Consumer {
    /// A consumer named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            scopes: Vec::new(),
            metadata: Map::new(),
        }
    }

    /// Scopes granted to the consumer's keys.
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes.extend(scopes.into_iter().map(Into::into));
        self
    }

    /// A metadata entry (plan, tenant, groups, ...), readable by rules and
    /// identity headers as a claim.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn identity(&self) -> Identity {
        Identity {
            subject: None,
            consumer: Some(self.name.clone()),
            issuer: None,
            scopes: self.scopes.clone(),
            claims: self.metadata.clone(),
            method: Some("api_key"),
        }
    }
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("metadata", &self.metadata)
            .finish()
    }
}

// === impl ApiKeys ===

impl ApiKeys {
    /// Starts building a key set.
    pub fn builder() -> ApiKeysBuilder<ApiKeys> {
        ApiKeysBuilder::new()
    }

    /// The consumer owning `key`, if any.
    pub fn lookup(&self, key: &str) -> Option<&Consumer> {
        if key.len() > MAX_KEY_LEN {
            return None;
        }
        let digest = sha256_of(&[key.as_bytes()]);
        let (stored, consumer) = self.inner.keys.get_key_value(&digest)?;
        bool::from(stored.ct_eq(&digest)).then_some(consumer)
    }
}

impl Authenticator for ApiKeys {
    fn authenticate<'a>(
        &'a self,
        req: &'a Parts,
    ) -> BoxFuture<'a, Result<Option<Authenticated>, AuthError>> {
        let outcome = match self.inner.sources.iter().find_map(|s| s.extract(req)) {
            None => Ok(None),
            Some(Err(_)) => Err(AuthError::unauthenticated(
                reason::MALFORMED,
                "the API key is not readable",
            )),
            Some(Ok(key)) => match self.lookup(&key) {
                Some(consumer) => {
                    tracing::trace!(consumer = %consumer.name, "api key accepted");
                    Ok(Some(consumer.identity().into()))
                }
                None => Err(AuthError::unauthenticated(
                    reason::UNKNOWN_API_KEY,
                    "the API key is not valid",
                )),
            },
        };
        // Nothing to wait for: the lookup is a hash and a map access.
        Box::pin(std::future::ready(outcome))
    }

    fn challenge(&self) -> Option<HeaderValue> {
        Some(challenge::simple("ApiKey", &self.inner.realm))
    }

    fn strip_credential(&self, req: &mut Parts) {
        for s in &self.inner.sources {
            s.strip(req);
        }
    }

    fn credential_sources(&self) -> Option<&[TokenSource]> {
        Some(&self.inner.sources)
    }
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Neither keys nor digests: only how many there are.
        f.debug_struct("ApiKeys")
            .field("keys", &self.inner.keys.len())
            .field("sources", &self.inner.sources)
            .field("realm", &self.inner.realm)
            .finish()
    }
}

// === impl ApiKeysBuilder ===

impl<O> ApiKeysBuilder<O> {
    pub(crate) fn new() -> Self {
        Self {
            keys: Vec::new(),
            sources: Vec::new(),
            realm: "api".to_owned(),
            deferred: None,
            layer: LayerOptions::default(),
            _out: PhantomData,
        }
    }

    /// Reads the key from this header. Sources are tried in the order
    /// given; default `X-Api-Key`.
    pub fn header(self, name: HeaderName) -> Self {
        self.token_from(TokenSource::Header(name))
    }

    /// Reads the key from this query parameter.
    pub fn query(self, name: impl Into<String>) -> Self {
        self.token_from(TokenSource::Query(name.into()))
    }

    /// Reads the key from a source (header, query parameter, cookie, or
    /// `Authorization: Bearer`).
    pub fn token_from(mut self, source: TokenSource) -> Self {
        self.sources.push(source);
        self
    }

    /// Adds a key, given in plain text and hashed at once.
    pub fn key(mut self, key: impl AsRef<[u8]>, consumer: Consumer) -> Self {
        let key = key.as_ref();
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            self.defer(BuildError::new(format!(
                "an API key must be 1 to {MAX_KEY_LEN} bytes"
            )));
        } else {
            self.keys.push((sha256_of(&[key]), consumer));
        }
        self
    }

    /// Adds a key by the hex SHA-256 digest of its plain text
    /// (`printf %s KEY | sha256sum`).
    pub fn hashed_key(mut self, sha256_hex: &str, consumer: Consumer) -> Self {
        match parse_hex_digest(sha256_hex) {
            Some(d) => self.keys.push((d, consumer)),
            None => self.defer(BuildError::new(
                "a hashed API key must be 64 hex digits (SHA-256)",
            )),
        }
        self
    }

    /// The realm of the `WWW-Authenticate: ApiKey` challenge. Default `api`.
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = realm.into();
        self
    }

    fn defer(&mut self, e: BuildError) {
        if self.deferred.is_none() {
            self.deferred = Some(e);
        }
    }

    fn build_keys(self) -> Result<ApiKeys, BuildError> {
        if let Some(e) = self.deferred {
            return Err(e);
        }
        challenge::check_realm(&self.realm)?;
        let mut keys = HashMap::with_capacity(self.keys.len());
        for (digest, consumer) in self.keys {
            if let Some(prev) = keys.insert(digest, consumer) {
                return Err(BuildError::new(format!(
                    "an API key of consumer {:?} is given twice",
                    prev.name
                )));
            }
        }
        let sources = if self.sources.is_empty() {
            vec![TokenSource::Header(HeaderName::from_static("x-api-key"))]
        } else {
            self.sources
        };
        Ok(ApiKeys {
            inner: Arc::new(Inner {
                keys,
                sources,
                realm: self.realm,
            }),
        })
    }
}

fn parse_hex_digest(s: &str) -> Option<Key> {
    let s = s.trim().as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

impl ApiKeysBuilder<ApiKeys> {
    /// Builds the key set, to combine with other methods in an
    /// [`AuthLayer`](crate::AuthLayer).
    pub fn build(self) -> Result<ApiKeys, BuildError> {
        self.build_keys()
    }
}

impl ApiKeysBuilder<ApiKeyLayer> {
    /// Builds the layer.
    pub fn build(self) -> Result<ApiKeyLayer, BuildError> {
        let layer = self.layer.clone();
        Ok(ApiKeyLayer::from_parts(self.build_keys()?, layer))
    }
}

impl ApiKeyLayer {
    /// Starts building the layer.
    pub fn builder() -> ApiKeysBuilder<ApiKeyLayer> {
        ApiKeysBuilder::new()
    }
}

impl<O> fmt::Debug for ApiKeysBuilder<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeysBuilder")
            .field("keys", &self.keys.len())
            .field("sources", &self.sources)
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

crate::macros::layer_options!(ApiKeysBuilder<ApiKeyLayer>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_hashed_keys() {
        // printf %s hello | sha256sum
        let keys = ApiKeys::builder()
            .key("k1", Consumer::new("one"))
            .hashed_key(
                "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
                Consumer::new("two"),
            )
            .build()
            .unwrap();
        assert_eq!(keys.lookup("k1").map(Consumer::name), Some("one"));
        assert_eq!(keys.lookup("hello").map(Consumer::name), Some("two"));
        assert!(keys.lookup("k2").is_none());
        assert!(!format!("{keys:?}").contains("k1"));
    }

    #[test]
    fn build_errors() {
        assert!(
            ApiKeys::builder()
                .hashed_key("abc", Consumer::new("x"))
                .build()
                .is_err()
        );
        assert!(
            ApiKeys::builder()
                .key("", Consumer::new("x"))
                .build()
                .is_err()
        );
        assert!(
            ApiKeys::builder()
                .key("same", Consumer::new("a"))
                .key("same", Consumer::new("b"))
                .build()
                .is_err()
        );
    }
}
