//! JWT bearer tokens (RFC 7519), verified with keys from a shared secret,
//! PEM, or a JWKS URL.

mod jwks;
mod keys;
mod validate;

use std::fmt;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use http::request::Parts;
use jsonwebtoken::{Algorithm, AlgorithmFamily, Validation};
use serde_json::{Map, Value};
use tokio::time::Instant;
use towergate_core::Identity;

use self::jwks::{Jwks, JwksConfig};
use self::keys::{KeyEntry, KeySet, Lookup};
use self::validate::Refusal;
use crate::authenticator::{Authenticated, Authenticator, BoxFuture};
use crate::cache::{self, TtlCache};
use crate::challenge;
use crate::claims;
use crate::credential::TokenSource;
use crate::error::{AuthError, BuildError};
use crate::layer::{JwtLayer, LayerOptions};

/// The shortest shared secret accepted: RFC 7518 §3.2 asks for a key at
/// least as long as the hash output, and HS256's is 32 bytes.
const MIN_SECRET_LEN: usize = 32;

/// Verifies JWTs: the [`Authenticator`] behind [`JwtLayer`].
///
/// The algorithms are fixed when it is built; a token's `alg` must be one
/// of them and must fit the family of the key that verifies it, so
/// `alg: none` and algorithm confusion (an `HS256` token "signed" with an
/// RSA public key's bytes) are refused before any cryptography. Keys come
/// from the configuration only, never from the token (`jwk`, `jku`, `x5u`
/// headers are ignored).
///
/// Checks: size (before any parsing), signature, `exp` (required unless
/// [`require_exp(false)`](JwtBuilder::require_exp)), `nbf`, `iat` not in
/// the future, `iss` and `aud` when configured, each with a leeway.
///
/// Verified tokens are cached (bounded) until the earlier of their `exp`
/// and a short TTL; a cached token whose key has left the JWKS is verified
/// again, and so refused. The cache is keyed by a digest of the token,
/// never the token: its SHA-256 where the CPU has SHA instructions, its
/// BLAKE3 elsewhere, where a portable SHA-256 of a 550-byte token costs
/// 2.6 µs against BLAKE3's 0.67 µs (SHA-256 on the SHA instructions:
/// 0.33 µs).
///
/// The resulting [`Identity`]: `subject` = `sub`, `issuer` = `iss`,
/// `consumer` = `client_id` or `azp` (see
/// [`consumer_claim`](JwtBuilder::consumer_claim)), `scopes` from `scope`
/// or `scp`, every claim in `claims`, `method` = `"jwt"`.
#[derive(Clone)]
pub struct Jwt {
    inner: Arc<Inner>,
}

/// Settings for a [`Jwt`] (from [`Jwt::builder`]) or a [`JwtLayer`] (from
/// [`JwtLayer::builder`]).
#[must_use]
pub struct JwtBuilder<O = Jwt> {
    static_keys: Vec<KeyEntry>,
    deferred: Option<BuildError>,
    jwks: Option<JwksConfig>,
    client: Option<reqwest::Client>,
    algorithms: Option<Vec<Algorithm>>,
    issuers: Vec<String>,
    audiences: Vec<String>,
    leeway: Duration,
    require_exp: bool,
    sources: Vec<TokenSource>,
    max_token_len: usize,
    realm: String,
    cache_ttl: Duration,
    cache_capacity: usize,
    consumer_claims: Option<Vec<String>>,
    pub(crate) layer: LayerOptions,
    _out: PhantomData<fn() -> O>,
}

struct Inner {
    static_keys: KeySet,
    jwks: Option<Jwks>,
    algorithms: Vec<Algorithm>,
    validations: Vec<(Algorithm, Validation)>,
    leeway_secs: u64,
    sources: Vec<TokenSource>,
    max_token_len: usize,
    realm: String,
    /// Shared, so that a hit clones the identity only.
    cache: Option<TtlCache<Arc<Cached>>>,
    cache_ttl: Duration,
    consumer_claims: Vec<String>,
    /// Issuers are configured: `iss` must be one string.
    issuer_checked: bool,
}

/// What the cache says of a token.
enum Cache {
    /// Verified before, and still trusted.
    Hit(Identity),
    /// To verify; then cached under this key (`None`: no cache).
    Miss(Option<cache::Key>),
}

/// A verified token, and where its key came from.
struct Cached {
    identity: Identity,
    /// The JWKS key that verified it (`kid` and key material), if one
    /// did: the entry is trusted only while that key is still in the set.
    jwks_key: Option<(String, u64)>,
}

// === impl Jwt ===

impl Jwt {
    /// Starts building a verifier.
    pub fn builder() -> JwtBuilder<Jwt> {
        JwtBuilder::new()
    }

    /// Verifies a token and returns who it says the caller is. This is what
    /// the layer does with the token it extracted.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        self.inner.verify(token).await
    }

    /// The JWKS URL, if keys come from one.
    pub fn jwks_url(&self) -> Option<&str> {
        self.inner.jwks.as_ref().map(Jwks::url)
    }
}

impl Authenticator for Jwt {
    fn authenticate<'a>(
        &'a self,
        req: &'a Parts,
    ) -> BoxFuture<'a, Result<Option<Authenticated>, AuthError>> {
        let Some(found) = self.inner.sources.iter().find_map(|s| s.extract(req)) else {
            return Box::pin(std::future::ready(Ok(None)));
        };
        let Ok(token) = found else {
            let refused = self.inner.refuse(validate::MALFORMED, None);
            return Box::pin(std::future::ready(Err(refused)));
        };
        // A cached token is answered here, in a small box: the future that
        // verifies (and may wait for a JWKS) is made only on a miss.
        match self.inner.cached(&token) {
            Err(e) => Box::pin(std::future::ready(Err(e))),
            Ok(Cache::Hit(identity)) => Box::pin(std::future::ready(Ok(Some(identity.into())))),
            Ok(Cache::Miss(key)) => Box::pin(async move {
                let identity = self.inner.verify_uncached(&token, key).await?;
                Ok(Some(identity.into()))
            }),
        }
    }

    fn challenge(&self) -> Option<HeaderValue> {
        Some(challenge::bearer(&self.inner.realm, None))
    }

    fn insufficient_scope_challenge(&self, scope: &str) -> Option<HeaderValue> {
        Some(challenge::insufficient_scope(&self.inner.realm, scope))
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

impl fmt::Debug for Jwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        let (issuers, audiences) = i
            .validations
            .first()
            .map(|(_, v)| (v.iss.clone(), v.aud.clone()))
            .unwrap_or_default();
        f.debug_struct("Jwt")
            .field("realm", &i.realm)
            .field("algorithms", &i.algorithms)
            .field("issuers", &issuers)
            .field("audiences", &audiences)
            .field("leeway_secs", &i.leeway_secs)
            .field("static_keys", &i.static_keys)
            .field("jwks", &i.jwks.as_ref().map(Jwks::url))
            .field("sources", &i.sources)
            .field("max_token_len", &i.max_token_len)
            .field("cache", &i.cache)
            .finish()
    }
}

// === impl Inner ===

impl Inner {
    fn refuse(&self, r: Refusal, kid: Option<&str>) -> AuthError {
        tracing::debug!(kid, reason = r.reason, "jwt refused");
        AuthError::unauthenticated(r.reason, r.description).with_challenge(challenge::bearer(
            &self.realm,
            Some(("invalid_token", r.description)),
        ))
    }

    async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        match self.cached(token)? {
            Cache::Hit(identity) => Ok(identity),
            Cache::Miss(key) => self.verify_uncached(token, key).await,
        }
    }

    /// The size check, then the cache: the identity of a cached token still
    /// trusted, else the key to cache it under once verified.
    fn cached(&self, token: &str) -> Result<Cache, AuthError> {
        // Before anything else, so that a huge token costs nothing.
        if token.len() > self.max_token_len {
            return Err(self.refuse(validate::TOO_LARGE, None));
        }
        let Some(cache) = &self.cache else {
            return Ok(Cache::Miss(None));
        };
        let key = cache::key_of(&[token.as_bytes()]);
        if let Some(hit) = cache.get(&key) {
            if self.still_trusted(&hit) {
                return Ok(Cache::Hit(hit.identity.clone()));
            }
            cache.remove(&key);
        }
        Ok(Cache::Miss(Some(key)))
    }

    /// Verifies a token the cache did not answer for, and caches it under
    /// `cache_key`.
    async fn verify_uncached(
        &self,
        token: &str,
        cache_key: Option<cache::Key>,
    ) -> Result<Identity, AuthError> {
        let header =
            validate::parse_header(token, &self.algorithms).map_err(|r| self.refuse(r, None))?;
        let kid = header.kid.as_deref();
        let (claims, verified_by) = self.check_signature_and_claims(token, &header).await?;
        let now = now_secs();
        match claims.get("iat") {
            None => {}
            Some(v) => match v.as_f64() {
                Some(iat) if iat > (now + self.leeway_secs) as f64 => {
                    return Err(self.refuse(validate::ISSUED_IN_FUTURE, kid));
                }
                Some(_) => {}
                None => return Err(self.refuse(validate::BAD_CLAIM, kid)),
            },
        }
        // `exp` may be a float (NumericDate allows it); saturate into seconds.
        let exp = claims
            .get("exp")
            .and_then(Value::as_f64)
            .map(|f| f.max(0.0) as u64);
        let identity = self.identity(claims);
        tracing::trace!(sub = identity.subject.as_deref(), kid, "jwt accepted");

        // A token verified by a JWKS key without a `kid` is not cached: a
        // hit could not tell whether that key is still published.
        let cacheable = !matches!(verified_by, VerifiedBy::Jwks(None));
        let jwks_key = match verified_by {
            VerifiedBy::Jwks(key) => key,
            VerifiedBy::Static => None,
        };
        if let (Some(cache), Some(key), true) = (&self.cache, cache_key, cacheable) {
            // The shorter of the two as a duration first: an `exp` far in
            // the future (any u64 parses) would overflow an `Instant`.
            let ttl = match exp {
                Some(exp) => self
                    .cache_ttl
                    .min(Duration::from_secs(exp.saturating_sub(now))),
                None => self.cache_ttl,
            };
            let expires = Instant::now() + ttl;
            cache.insert(
                key,
                Arc::new(Cached {
                    identity: identity.clone(),
                    jwks_key,
                }),
                expires,
            );
        }
        Ok(identity)
    }

    fn still_trusted(&self, hit: &Cached) -> bool {
        match (&hit.jwks_key, &self.jwks) {
            (Some((kid, fp)), Some(jwks)) => {
                jwks.current().is_some_and(|set| set.has_key(kid, *fp))
            }
            _ => true,
        }
    }

    /// Verifies with the static keys, else with the JWKS; returns the claims
    /// and which key verified them.
    async fn check_signature_and_claims(
        &self,
        token: &str,
        header: &validate::Header,
    ) -> Result<(Map<String, Value>, VerifiedBy), AuthError> {
        let kid = header.kid.as_deref();
        let miss = match self.static_keys.lookup(kid, header.alg) {
            Lookup::Found(candidates) => {
                let verified = self
                    .decode(token, header.alg, kid, &candidates)
                    .map(|(c, _)| (c, VerifiedBy::Static));
                // Configured keys without an id stand in for any `kid`; a
                // token they do not verify, whose `kid` no configured key
                // names, may still be the provider's (PEM files beside a
                // JWKS during a migration).
                match verified {
                    Err(e)
                        if self.jwks.is_some()
                            && e.reason() == validate::BAD_SIGNATURE.reason
                            && !kid.is_some_and(|k| self.static_keys.has_kid(k)) =>
                    {
                        validate::BAD_SIGNATURE
                    }
                    other => return other,
                }
            }
            Lookup::UnknownKid => validate::UNKNOWN_KID,
            Lookup::NoKeyForAlg => validate::NO_KEY_FOR_ALG,
        };
        let Some(jwks) = &self.jwks else {
            return Err(self.refuse(miss, kid));
        };
        let set = jwks.keys_for(kid).await?;
        match set.lookup(kid, header.alg) {
            Lookup::Found(candidates) => {
                let (claims, by) = self.decode(token, header.alg, kid, &candidates)?;
                // The key that verified it, not the first candidate: a
                // token without a `kid` may be verified by any of them.
                Ok((
                    claims,
                    VerifiedBy::Jwks(by.kid.clone().map(|kid| (kid, by.fingerprint))),
                ))
            }
            Lookup::UnknownKid => Err(self.refuse(validate::UNKNOWN_KID, kid)),
            Lookup::NoKeyForAlg => Err(self.refuse(validate::NO_KEY_FOR_ALG, kid)),
        }
    }

    /// The claims, and the candidate that verified them.
    fn decode<'k>(
        &self,
        token: &str,
        alg: Algorithm,
        kid: Option<&str>,
        candidates: &[&'k KeyEntry],
    ) -> Result<(Map<String, Value>, &'k KeyEntry), AuthError> {
        let Some((_, validation)) = self.validations.iter().find(|(a, _)| *a == alg) else {
            return Err(self.refuse(validate::ALG_NOT_ALLOWED, kid));
        };
        let mut refusal = validate::BAD_SIGNATURE;
        for entry in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &entry.key, validation) {
                // jsonwebtoken accepts an `iss` array that merely contains
                // an accepted issuer (`["https://evil/", "https://idp/"]`);
                // an issuer is one string, compared exactly.
                Ok(data)
                    if self.issuer_checked
                        && !data.claims.get("iss").is_some_and(Value::is_string) =>
                {
                    refusal = validate::WRONG_ISSUER;
                    break;
                }
                Ok(data) => return Ok((data.claims, entry)),
                // Another candidate key may verify it.
                Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature) => {
                    continue;
                }
                Err(e) => {
                    refusal = validate::refusal(&e);
                    break;
                }
            }
        }
        Err(self.refuse(refusal, kid))
    }

    fn identity(&self, claims: Map<String, Value>) -> Identity {
        Identity {
            subject: claims::string(&claims, "sub"),
            consumer: claims::first_string(&claims, &self.consumer_claims),
            issuer: claims::string(&claims, "iss"),
            scopes: claims::scopes(&claims),
            claims,
            method: Some("jwt"),
        }
    }
}

/// Which key verified a token.
enum VerifiedBy {
    /// One of the provider's own keys (secret, PEM): trusted for good.
    Static,
    /// A JWKS key, with its `kid` and fingerprint if it has a `kid`.
    Jwks(Option<(String, u64)>),
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// === impl JwtBuilder ===

impl<O> JwtBuilder<O> {
    pub(crate) fn new() -> Self {
        Self {
            static_keys: Vec::new(),
            deferred: None,
            jwks: None,
            client: None,
            algorithms: None,
            issuers: Vec::new(),
            audiences: Vec::new(),
            leeway: Duration::from_secs(30),
            require_exp: true,
            sources: Vec::new(),
            max_token_len: 8 * 1024,
            realm: "api".to_owned(),
            cache_ttl: Duration::from_secs(30),
            cache_capacity: 10_000,
            consumer_claims: None,
            layer: LayerOptions::default(),
            _out: PhantomData,
        }
    }

    fn defer(&mut self, e: BuildError) {
        if self.deferred.is_none() {
            self.deferred = Some(e);
        }
    }

    /// Verifies `HS256`/`HS384`/`HS512` tokens with a shared secret (at
    /// least 32 bytes, RFC 7518 §3.2). May be given several times (secret
    /// rotation).
    pub fn secret(self, secret: impl AsRef<[u8]>) -> Self {
        self.secret_inner(None, secret.as_ref())
    }

    /// A shared secret used only for tokens whose `kid` is `kid`.
    pub fn secret_with_kid(self, kid: impl Into<String>, secret: impl AsRef<[u8]>) -> Self {
        self.secret_inner(Some(kid.into()), secret.as_ref())
    }

    fn secret_inner(mut self, kid: Option<String>, secret: &[u8]) -> Self {
        if secret.len() < MIN_SECRET_LEN {
            self.defer(BuildError::new(format!(
                "a shared secret must be at least {MIN_SECRET_LEN} bytes"
            )));
        } else {
            self.static_keys.push(KeyEntry::secret(kid, secret));
        }
        self
    }

    /// Verifies with a public key in PEM (`PUBLIC KEY` or
    /// `RSA PUBLIC KEY`): RSA (`RS*`, `PS*`), EC P-256 (`ES256`), EC P-384
    /// (`ES384`) or Ed25519 (`EdDSA`). May be given several times.
    pub fn pem(self, pem: impl AsRef<[u8]>) -> Self {
        self.pem_inner(None, pem.as_ref())
    }

    /// A PEM public key used only for tokens whose `kid` is `kid`.
    pub fn pem_with_kid(self, kid: impl Into<String>, pem: impl AsRef<[u8]>) -> Self {
        self.pem_inner(Some(kid.into()), pem.as_ref())
    }

    /// Reads a PEM public key from a file, now.
    pub fn pem_file(mut self, path: impl AsRef<Path>) -> Self {
        let path = path.as_ref();
        match std::fs::read(path) {
            Ok(pem) => self.pem_inner(None, &pem),
            Err(e) => {
                self.defer(BuildError::with_source(
                    format!("cannot read {}", path.display()),
                    e,
                ));
                self
            }
        }
    }

    fn pem_inner(mut self, kid: Option<String>, pem: &[u8]) -> Self {
        match KeyEntry::pem(kid, pem) {
            Ok(k) => self.static_keys.push(k),
            Err(why) => self.defer(BuildError::new(format!("bad PEM key: {why}"))),
        }
        self
    }

    /// Fetches verification keys from a JWKS URL (RFC 7517), kept fresh in
    /// the background and refetched when an unknown `kid` arrives.
    pub fn jwks_url(mut self, url: impl Into<String>) -> Self {
        let url = url.into();
        self.jwks = Some(match self.jwks.take() {
            Some(mut c) => {
                c.url = url;
                c
            }
            None => JwksConfig::new(url),
        });
        self
    }

    fn jwks_config(&mut self) -> &mut JwksConfig {
        self.jwks
            .get_or_insert_with(|| JwksConfig::new(String::new()))
    }

    /// How long a key set is fresh when the provider sends no
    /// `Cache-Control: max-age`. Default 5 minutes.
    pub fn jwks_default_ttl(mut self, ttl: Duration) -> Self {
        self.jwks_config().default_ttl = ttl;
        self
    }

    /// Bounds on the provider's `max-age`. Default 30 s to 24 h.
    pub fn jwks_ttl_bounds(mut self, min: Duration, max: Duration) -> Self {
        let c = self.jwks_config();
        c.min_ttl = crate::bounded(min);
        c.max_ttl = crate::bounded(max);
        self
    }

    /// The least time between two fetches caused by unknown `kid`s, so a
    /// flood of random `kid`s cannot hammer the provider. Default 10 s.
    pub fn jwks_refetch_floor(mut self, floor: Duration) -> Self {
        self.jwks_config().refetch_floor = crate::bounded(floor);
        self
    }

    /// Timeout of a JWKS fetch. Default 5 s.
    pub fn http_timeout(mut self, timeout: Duration) -> Self {
        self.jwks_config().timeout = crate::bounded(timeout);
        self
    }

    /// The HTTP client for JWKS fetches (proxies, custom roots). Its own
    /// timeout applies besides [`http_timeout`](Self::http_timeout).
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// The algorithms this verifier accepts, fixed for its lifetime.
    ///
    /// Default: from the keys: `HS256` for secrets, `RS256` for RSA keys
    /// and JWKS, `ES256`/`ES384` for EC keys, `EdDSA` for Ed25519 keys.
    /// Shared secrets and public keys together need an explicit list.
    pub fn algorithms(mut self, algs: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = Some(algs.into_iter().collect());
        self
    }

    /// An accepted issuer (`iss`); may be given several times. When any is
    /// set, tokens without `iss` are refused.
    pub fn issuer(mut self, iss: impl Into<String>) -> Self {
        self.issuers.push(iss.into());
        self
    }

    /// An accepted audience (`aud`); may be given several times. When any
    /// is set, tokens must name one of them; when none is, `aud` is not
    /// checked (set one in production, or a token for another service
    /// works here too).
    pub fn audience(mut self, aud: impl Into<String>) -> Self {
        self.audiences.push(aud.into());
        self
    }

    /// Clock skew allowed on `exp`, `nbf` and `iat` (whole seconds).
    /// Default 30 s.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = crate::bounded(leeway);
        self
    }

    /// Whether tokens without `exp` are refused. Default true.
    pub fn require_exp(mut self, yes: bool) -> Self {
        self.require_exp = yes;
        self
    }

    /// Where the token is read from. The first call replaces the default
    /// (`Authorization: Bearer`); further calls add sources, tried in
    /// order.
    pub fn token_from(mut self, source: TokenSource) -> Self {
        self.sources.push(source);
        self
    }

    /// The largest token accepted, checked before any parsing. Default
    /// 8 KiB.
    pub fn max_token_size(mut self, bytes: usize) -> Self {
        self.max_token_len = bytes;
        self
    }

    /// The realm of the `WWW-Authenticate: Bearer` challenge. Default
    /// `api`.
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = realm.into();
        self
    }

    /// How long a verified token stays cached at most (it never outlives
    /// its `exp`). Default 30 s: a key removed from the JWKS stops
    /// verifying cached tokens at the next refresh anyway.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = crate::bounded(ttl);
        self
    }

    /// How many verified tokens are cached; 0 turns the cache off.
    /// Default 10 000.
    pub fn cache_capacity(mut self, entries: usize) -> Self {
        self.cache_capacity = entries;
        self
    }

    /// A claim that names the consumer (the OAuth client). The first call
    /// replaces the default (`client_id`, then `azp`); further calls add
    /// fallbacks.
    pub fn consumer_claim(mut self, claim: impl Into<String>) -> Self {
        self.consumer_claims
            .get_or_insert_with(Vec::new)
            .push(claim.into());
        self
    }

    pub(crate) fn build_jwt(self) -> Result<Jwt, BuildError> {
        if let Some(e) = self.deferred {
            return Err(e);
        }
        challenge::check_realm(&self.realm)?;
        let jwks = match self.jwks {
            Some(c) if c.url.is_empty() => {
                return Err(BuildError::new(
                    "JWKS settings were given without a jwks_url",
                ));
            }
            Some(c) => Some(Jwks::new(c, self.client)?),
            None => None,
        };
        let static_keys = KeySet::configured(self.static_keys);
        if static_keys.is_empty() && jwks.is_none() {
            return Err(BuildError::new(
                "no verification key: give a secret, a PEM key or a jwks_url",
            ));
        }
        let has_secret = static_keys
            .algorithms()
            .any(|a| a.family() == AlgorithmFamily::Hmac);
        let has_public = jwks.is_some()
            || static_keys
                .algorithms()
                .any(|a| a.family() != AlgorithmFamily::Hmac);
        let algorithms = match self.algorithms {
            Some(algs) => algs,
            None if has_secret && has_public => {
                return Err(BuildError::new(
                    "shared secrets and public keys together: list the algorithms explicitly",
                ));
            }
            None => default_algorithms(&static_keys, jwks.is_some()),
        };
        if algorithms.is_empty() {
            return Err(BuildError::new("no algorithm allowed"));
        }
        for alg in &algorithms {
            let usable = static_keys.algorithms().any(|a| a == *alg)
                || (jwks.is_some() && alg.family() != AlgorithmFamily::Hmac);
            if !usable {
                return Err(BuildError::new(format!(
                    "{alg:?} is allowed but no configured key can verify it"
                )));
            }
        }
        let mut required = Vec::new();
        if self.require_exp {
            required.push("exp");
        }
        // jsonwebtoken skips the iss/aud check when the claim is absent:
        // require it whenever an expected value is configured.
        if !self.issuers.is_empty() {
            required.push("iss");
        }
        if !self.audiences.is_empty() {
            required.push("aud");
        }
        let leeway_secs = self.leeway.as_secs();
        let validations = algorithms
            .iter()
            .map(|alg| {
                let mut v = Validation::new(*alg);
                v.leeway = leeway_secs;
                v.validate_exp = true;
                v.validate_nbf = true;
                v.set_required_spec_claims(&required);
                if !self.issuers.is_empty() {
                    v.set_issuer(&self.issuers);
                }
                if self.audiences.is_empty() {
                    v.validate_aud = false;
                } else {
                    v.set_audience(&self.audiences);
                }
                (*alg, v)
            })
            .collect();
        let sources = if self.sources.is_empty() {
            vec![TokenSource::Bearer]
        } else {
            self.sources
        };
        let cache = (self.cache_capacity > 0 && !self.cache_ttl.is_zero())
            .then(|| TtlCache::new(self.cache_capacity));
        Ok(Jwt {
            inner: Arc::new(Inner {
                static_keys,
                jwks,
                algorithms,
                validations,
                leeway_secs,
                sources,
                max_token_len: self.max_token_len,
                realm: self.realm,
                cache,
                cache_ttl: self.cache_ttl,
                consumer_claims: self
                    .consumer_claims
                    .unwrap_or_else(|| vec!["client_id".to_owned(), "azp".to_owned()]),
                issuer_checked: !self.issuers.is_empty(),
            }),
        })
    }
}

fn default_algorithms(keys: &KeySet, jwks: bool) -> Vec<Algorithm> {
    let mut out = Vec::new();
    let mut add = |a: Algorithm| {
        if !out.contains(&a) {
            out.push(a);
        }
    };
    for a in keys.algorithms() {
        match a.family() {
            AlgorithmFamily::Hmac => add(Algorithm::HS256),
            AlgorithmFamily::Rsa => add(Algorithm::RS256),
            AlgorithmFamily::Ec | AlgorithmFamily::Ed => add(a),
        }
    }
    if jwks {
        add(Algorithm::RS256);
    }
    out
}

impl JwtBuilder<Jwt> {
    /// Builds the verifier, to combine with other methods in an
    /// [`AuthLayer`](crate::AuthLayer).
    pub fn build(self) -> Result<Jwt, BuildError> {
        self.build_jwt()
    }
}

impl JwtBuilder<JwtLayer> {
    /// Builds the layer.
    pub fn build(self) -> Result<JwtLayer, BuildError> {
        let layer = self.layer.clone();
        let jwt = self.build_jwt()?;
        Ok(JwtLayer::from_parts(jwt, layer))
    }
}

impl<O> fmt::Debug for JwtBuilder<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtBuilder")
            .field("static_keys", &self.static_keys)
            .field("jwks", &self.jwks)
            .field("algorithms", &self.algorithms)
            .field("issuers", &self.issuers)
            .field("audiences", &self.audiences)
            .field("leeway", &self.leeway)
            .field("sources", &self.sources)
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

crate::macros::layer_options!(JwtBuilder<JwtLayer>);

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn build_checks() {
        assert!(Jwt::builder().build().is_err(), "no key");
        assert!(Jwt::builder().secret("short").build().is_err());
        assert!(
            Jwt::builder()
                .secret(SECRET)
                .algorithms([Algorithm::RS256])
                .build()
                .is_err(),
            "RS256 without an RSA key"
        );
        assert!(
            Jwt::builder()
                .jwks_url("https://idp.example/jwks")
                .algorithms([Algorithm::HS256])
                .build()
                .is_err(),
            "HS256 from a JWKS"
        );
        assert!(
            Jwt::builder()
                .secret(SECRET)
                .jwks_url("https://idp.example/jwks")
                .build()
                .is_err(),
            "mixed families need explicit algorithms"
        );
        assert!(Jwt::builder().jwks_url("ftp://x").build().is_err());
        // With a JWKS URL, so that the floor is what is refused.
        let floor = |d| {
            Jwt::builder()
                .jwks_url("https://idp.example/jwks")
                .algorithms([Algorithm::RS256])
                .jwks_refetch_floor(d)
                .build()
        };
        assert!(floor(Duration::from_secs(1)).is_ok());
        let e = floor(Duration::ZERO).unwrap_err();
        assert!(e.to_string().contains("refetch floor"), "{e}");
        assert!(Jwt::builder().secret(SECRET).realm("a\"b").build().is_err());
        let jwt = Jwt::builder().secret(SECRET).build().unwrap();
        assert_eq!(jwt.inner.algorithms, [Algorithm::HS256]);
        // The Debug output never shows the secret.
        let dbg = format!("{jwt:?}");
        assert!(!dbg.contains("0123456789abcdef"), "{dbg}");
    }
}
