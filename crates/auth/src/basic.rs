//! HTTP Basic authentication (RFC 7617) against bcrypt or argon2 hashes.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderValue;
use http::header::AUTHORIZATION;
use http::request::Parts;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use towergate_core::Identity;

use crate::authenticator::{Authenticated, Authenticator, BoxFuture};
use crate::cache::{self, TtlCache};
use crate::challenge;
use crate::credential::{TokenSource, split_scheme};
use crate::error::{AuthError, BuildError, reason};
use crate::layer::{BasicAuthLayer, LayerOptions};

/// Basic credentials longer than this are refused unread.
const MAX_CREDENTIALS: usize = 4096;

/// Checks `Authorization: Basic` credentials: the [`Authenticator`]
/// behind [`BasicAuthLayer`].
///
/// Users come from `user:hash` lines (a file or a string), one per line,
/// `#` comments allowed, with bcrypt (`$2b$...`) or argon2 PHC
/// (`$argon2id$...`) hashes. Hashing is deliberately slow, so it runs on
/// Tokio's blocking pool, at most a few at a time (the rest wait), and
/// successes are cached briefly under a salted digest of the credentials (see
/// the verified-token cache of [`Jwt`](crate::Jwt)).
/// An unknown user costs the same as a wrong password, so response times
/// do not reveal which user names exist.
///
/// A `401` carries `WWW-Authenticate: Basic realm="...", charset="UTF-8"`.
/// The [`Identity`]: `subject` = the user name, `method` = `"basic"`.
#[derive(Clone)]
pub struct BasicAuth {
    inner: Arc<Inner>,
}

/// Settings for [`BasicAuth`] (from [`BasicAuth::builder`]) or a
/// [`BasicAuthLayer`] (from [`BasicAuthLayer::builder`]).
#[must_use]
pub struct BasicAuthBuilder<O = BasicAuth> {
    users: Vec<(String, String)>,
    deferred: Option<BuildError>,
    realm: String,
    cache_ttl: Duration,
    cache_capacity: usize,
    concurrency: usize,
    pub(crate) layer: LayerOptions,
    _out: PhantomData<fn() -> O>,
}

struct Inner {
    users: HashMap<String, PasswordHash>,
    /// Verified against for unknown users, to spend the same time.
    decoy: PasswordHash,
    realm: String,
    salt: [u8; 16],
    cache: Option<TtlCache<()>>,
    cache_ttl: Duration,
    permits: Arc<Semaphore>,
}

#[derive(Clone)]
enum PasswordHash {
    Bcrypt(String),
    Argon2(String),
}

// === impl PasswordHash ===

impl PasswordHash {
    /// A rough verification time, in µs, to compare hashes by: bcrypt
    /// takes about 60 µs per unit of `2^cost`, Argon2 about 1 µs per KiB
    /// of memory per pass. Unknown parameters count as the most costly.
    fn cost(&self) -> u64 {
        match self {
            Self::Bcrypt(h) => h
                .split('$')
                .nth(2)
                .and_then(|c| c.parse::<u32>().ok())
                .map_or(u64::MAX, |c| 60u64.saturating_mul(1u64 << c.min(31))),
            Self::Argon2(h) => {
                let param = |name: &str| {
                    h.split('$')
                        .flat_map(|part| part.split(','))
                        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                        .and_then(|v| v.parse::<u64>().ok())
                };
                match (param("m"), param("t")) {
                    (Some(m), Some(t)) => m.saturating_mul(t),
                    _ => u64::MAX,
                }
            }
        }
    }
}

// === impl BasicAuth ===

impl BasicAuth {
    /// Starts building a user list.
    pub fn builder() -> BasicAuthBuilder<BasicAuth> {
        BasicAuthBuilder::new()
    }
}

impl Authenticator for BasicAuth {
    fn authenticate<'a>(
        &'a self,
        req: &'a Parts,
    ) -> BoxFuture<'a, Result<Option<Authenticated>, AuthError>> {
        Box::pin(async move {
            let mut values = req.headers.get_all(AUTHORIZATION).iter();
            let Some(value) = values.next() else {
                return Ok(None);
            };
            // Two `Authorization` lines: one checked here, the other maybe
            // read by the upstream.
            if values.next().is_some() {
                return Err(AuthError::unauthenticated(
                    reason::MALFORMED,
                    "more than one Authorization header",
                ));
            }
            let Some((scheme, encoded)) = split_scheme(value) else {
                return Ok(None);
            };
            if !scheme.eq_ignore_ascii_case("basic") {
                return Ok(None);
            }
            let (user, password) = decode(encoded.trim()).ok_or_else(|| {
                AuthError::unauthenticated(reason::MALFORMED, "the Basic credentials are malformed")
            })?;
            self.inner
                .check(user, password)
                .await
                .map(|id| Some(id.into()))
        })
    }

    fn challenge(&self) -> Option<HeaderValue> {
        HeaderValue::from_str(&format!(
            "Basic realm=\"{}\", charset=\"UTF-8\"",
            self.inner.realm
        ))
        .ok()
    }

    fn credential_sources(&self) -> Option<&[TokenSource]> {
        static AUTHORIZATION_HEADER: std::sync::LazyLock<[TokenSource; 1]> =
            std::sync::LazyLock::new(|| [TokenSource::Header(AUTHORIZATION)]);
        Some(&*AUTHORIZATION_HEADER)
    }

    fn strip_credential(&self, req: &mut Parts) {
        // By location, whatever the scheme: see `TokenSource::strip`.
        TokenSource::Header(AUTHORIZATION).strip(req);
    }
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // User names are not secret, hashes are not printed anyway.
        let mut users: Vec<&str> = self.inner.users.keys().map(String::as_str).collect();
        users.sort_unstable();
        f.debug_struct("BasicAuth")
            .field("users", &users)
            .field("realm", &self.inner.realm)
            .field("cache", &self.inner.cache)
            .finish()
    }
}

/// `user:password` from the base64 of a Basic credential.
fn decode(encoded: &str) -> Option<(String, String)> {
    if encoded.len() > MAX_CREDENTIALS {
        return None;
    }
    let raw = STANDARD.decode(encoded).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

// === impl Inner ===

/// The cache key of a user and password, salted. The user's length comes
/// first: `a` with `b\0c` and `a\0b` with `c` are two credentials, and
/// must be two keys.
fn credential_key(salt: &[u8], user: &str, password: &str) -> cache::Key {
    let user_len = (user.len() as u64).to_le_bytes();
    cache::key_of(&[salt, &user_len, user.as_bytes(), password.as_bytes()])
}

impl Inner {
    async fn check(&self, user: String, password: String) -> Result<Identity, AuthError> {
        let key = credential_key(&self.salt, &user, &password);
        let identity = || Identity {
            subject: Some(user.clone()),
            method: Some("basic"),
            ..Identity::default()
        };
        if self.cache.as_ref().and_then(|c| c.get(&key)).is_some() {
            return Ok(identity());
        }
        let (hash, known) = match self.users.get(&user) {
            Some(h) => (h.clone(), true),
            None => (self.decoy.clone(), false),
        };
        let unavailable = |source: Box<dyn std::error::Error + Send + Sync>| {
            AuthError::unavailable(
                reason::VERIFIER_UNAVAILABLE,
                "the credentials could not be checked; try again later",
                source,
            )
        };
        // Waiting here rather than on the blocking pool keeps a flood of
        // wrong passwords from occupying hundreds of threads.
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| unavailable(e.into()))?;
        let matches = tokio::task::spawn_blocking(move || hash.verify(&password))
            .await
            .map_err(|e| unavailable(e.into()))?;
        if matches && known {
            if let Some(cache) = &self.cache {
                cache.insert(key, (), Instant::now() + self.cache_ttl);
            }
            tracing::trace!(user = %user, "basic credentials accepted");
            Ok(identity())
        } else {
            tracing::debug!(user = %user, "basic credentials refused");
            Err(AuthError::unauthenticated(
                reason::BAD_CREDENTIALS,
                "wrong user name or password",
            ))
        }
    }
}

// === impl PasswordHash ===

impl PasswordHash {
    fn parse(hash: &str) -> Result<Self, String> {
        if ["$2a$", "$2b$", "$2y$", "$2x$"]
            .iter()
            .any(|p| hash.starts_with(p))
        {
            // Parsed only: hashing here would make start-up as slow as
            // one login per user.
            hash.parse::<bcrypt::HashParts>()
                .map_err(|e| format!("bad bcrypt hash: {e}"))?;
            return Ok(PasswordHash::Bcrypt(hash.to_owned()));
        }
        if hash.starts_with("$argon2") {
            argon2::PasswordHash::new(hash).map_err(|e| format!("bad argon2 hash: {e}"))?;
            return Ok(PasswordHash::Argon2(hash.to_owned()));
        }
        Err("unsupported hash (bcrypt $2b$... or argon2 $argon2id$... are)".into())
    }

    fn verify(&self, password: &str) -> bool {
        match self {
            PasswordHash::Bcrypt(h) => bcrypt::verify(password, h).unwrap_or(false),
            PasswordHash::Argon2(h) => {
                use argon2::PasswordVerifier;
                argon2::PasswordHash::new(h).is_ok_and(|parsed| {
                    argon2::Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok()
                })
            }
        }
    }
}

// === impl BasicAuthBuilder ===

impl<O> BasicAuthBuilder<O> {
    fn new() -> Self {
        Self {
            users: Vec::new(),
            deferred: None,
            realm: "api".to_owned(),
            cache_ttl: Duration::from_secs(30),
            cache_capacity: 10_000,
            concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
            layer: LayerOptions::default(),
            _out: PhantomData,
        }
    }

    fn defer(&mut self, e: BuildError) {
        if self.deferred.is_none() {
            self.deferred = Some(e);
        }
    }

    /// A user and the bcrypt or argon2 (PHC) hash of their password.
    pub fn user(mut self, name: impl Into<String>, hash: impl Into<String>) -> Self {
        self.users.push((name.into(), hash.into()));
        self
    }

    /// Users from `user:hash` lines; blank lines and `#` comments are
    /// skipped.
    pub fn users(mut self, lines: &str) -> Self {
        for (n, line) in lines.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once(':') {
                Some((user, hash)) if !user.is_empty() => {
                    self.users.push((user.to_owned(), hash.trim().to_owned()));
                }
                _ => self.defer(BuildError::new(format!(
                    "line {}: expected user:hash",
                    n + 1
                ))),
            }
        }
        self
    }

    /// Users from a file of `user:hash` lines, read now.
    pub fn users_file(mut self, path: impl AsRef<Path>) -> Self {
        let path = path.as_ref();
        match std::fs::read_to_string(path) {
            Ok(text) => self.users(&text),
            Err(e) => {
                self.defer(BuildError::with_source(
                    format!("cannot read {}", path.display()),
                    e,
                ));
                self
            }
        }
    }

    /// The realm of the `WWW-Authenticate: Basic` challenge. Default `api`.
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = realm.into();
        self
    }

    /// How long a success is remembered; zero turns the cache off.
    /// Default 30 s.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = crate::bounded(ttl);
        self
    }

    /// How many verifications run at once on the blocking pool. Default:
    /// the number of CPUs.
    pub fn max_concurrent_verifications(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    fn build_basic(self) -> Result<BasicAuth, BuildError> {
        if let Some(e) = self.deferred {
            return Err(e);
        }
        challenge::check_realm(&self.realm)?;
        if self.concurrency == 0 {
            return Err(BuildError::new(
                "max_concurrent_verifications must be at least 1",
            ));
        }
        let mut users = HashMap::with_capacity(self.users.len());
        let mut decoy = None;
        for (name, hash) in self.users {
            let parsed = PasswordHash::parse(&hash)
                .map_err(|why| BuildError::new(format!("user {name:?}: {why}")))?;
            // The decoy (verified for unknown users) is the costliest hash:
            // a cheaper one would answer unknown names faster than known
            // ones, and tell them apart.
            if decoy
                .as_ref()
                .is_none_or(|d: &PasswordHash| parsed.cost() > d.cost())
            {
                decoy = Some(parsed.clone());
            }
            if users.insert(name.clone(), parsed).is_some() {
                return Err(BuildError::new(format!("user {name:?} is given twice")));
            }
        }
        let Some(decoy) = decoy else {
            return Err(BuildError::new("basic auth needs at least one user"));
        };
        let cache = (!self.cache_ttl.is_zero() && self.cache_capacity > 0)
            .then(|| TtlCache::new(self.cache_capacity));
        Ok(BasicAuth {
            inner: Arc::new(Inner {
                users,
                decoy,
                realm: self.realm,
                salt: cache::random_salt(),
                cache,
                cache_ttl: self.cache_ttl,
                permits: Arc::new(Semaphore::new(self.concurrency)),
            }),
        })
    }
}

impl BasicAuthBuilder<BasicAuth> {
    /// Builds the user list, to combine with other methods in an
    /// [`AuthLayer`](crate::AuthLayer).
    pub fn build(self) -> Result<BasicAuth, BuildError> {
        self.build_basic()
    }
}

impl BasicAuthBuilder<BasicAuthLayer> {
    /// Builds the layer.
    pub fn build(self) -> Result<BasicAuthLayer, BuildError> {
        let layer = self.layer.clone();
        Ok(BasicAuthLayer::from_parts(self.build_basic()?, layer))
    }
}

impl BasicAuthLayer {
    /// Starts building the layer.
    pub fn builder() -> BasicAuthBuilder<BasicAuthLayer> {
        BasicAuthBuilder::new()
    }
}

impl<O> fmt::Debug for BasicAuthBuilder<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let users: Vec<&str> = self.users.iter().map(|(u, _)| u.as_str()).collect();
        f.debug_struct("BasicAuthBuilder")
            .field("users", &users)
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

crate::macros::layer_options!(BasicAuthBuilder<BasicAuthLayer>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_keys_keep_user_and_password_apart() {
        let salt = cache::random_salt();
        let key = |u, p| credential_key(&salt, u, p);
        assert_ne!(key("a", "b\0c"), key("a\0b", "c"));
        assert_ne!(key("ab", "c"), key("a", "bc"));
        assert_eq!(key("a", "b"), key("a", "b"));
        // Salted: another process, another key.
        assert_ne!(
            key("a", "b"),
            credential_key(&cache::random_salt(), "a", "b")
        );
    }

    /// Unknown users are checked against the costliest hash, whatever the
    /// order of the list.
    #[test]
    fn the_decoy_is_the_costliest_hash() {
        let cheap = bcrypt::hash("pw", 4).unwrap();
        let dear = bcrypt::hash("pw", 6).unwrap();
        let argon = "$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";
        let auth = BasicAuth::builder()
            .user("a", &cheap)
            .user("b", &dear)
            .user("c", argon)
            .build()
            .unwrap();
        assert!(matches!(&auth.inner.decoy, PasswordHash::Bcrypt(h) if *h == dear));
        assert!(PasswordHash::Bcrypt(dear).cost() > PasswordHash::Argon2(argon.into()).cost());
        let heavy = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";
        assert_eq!(PasswordHash::Argon2(heavy.into()).cost(), 38_912);
        assert_eq!(PasswordHash::Bcrypt(cheap).cost(), 960);
    }

    #[test]
    fn decode_credentials() {
        assert_eq!(
            decode("QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
            Some(("Aladdin".into(), "open sesame".into()))
        );
        assert_eq!(decode("!!!"), None);
        assert_eq!(decode("bm9jb2xvbg=="), None); // "nocolon"
    }

    #[test]
    fn build_errors() {
        assert!(BasicAuth::builder().build().is_err());
        assert!(BasicAuth::builder().users("alice").build().is_err());
        assert!(BasicAuth::builder().user("alice", "plain").build().is_err());
        assert!(
            BasicAuth::builder()
                .user("alice", "$2b$10$broken")
                .build()
                .is_err()
        );
    }
}
