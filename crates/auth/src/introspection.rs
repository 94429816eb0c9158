//! OAuth 2.0 token introspection (RFC 7662) for opaque tokens.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::request::Parts;
use serde_json::{Map, Value};
use tokio::time::Instant;
use towergate_core::Identity;

use crate::authenticator::{Authenticated, Authenticator, BoxFuture};
use crate::cache::{self, TtlCache};
use crate::challenge;
use crate::claims;
use crate::credential::TokenSource;
use crate::error::{AuthError, BuildError, reason};
use crate::http_client;
use crate::layer::{IntrospectionLayer, LayerOptions};

/// Asks an authorization server whether an opaque token is active: the
/// [`Authenticator`] behind [`IntrospectionLayer`].
///
/// The token is POSTed to the introspection endpoint with the client's
/// credentials in HTTP Basic (RFC 7662 §2.1). Answers are cached under the
/// digest of the token (SHA-256 or BLAKE3, as for the verified-token
/// cache of [`Jwt`](crate::Jwt)): active ones until the token's `exp` (at most
/// [`max_ttl`](IntrospectionBuilder::max_ttl)), inactive ones for
/// [`negative_ttl`](IntrospectionBuilder::negative_ttl), in a bounded
/// cache. An inactive token is a `401`; an endpoint that cannot be
/// reached, times out or answers with an error is a `503`, never a `401`:
/// the client's token may be fine.
///
/// The resulting [`Identity`]: `subject` = `sub` (or `username`),
/// `consumer` = `client_id`, `issuer` = `iss`, `scopes` from `scope`,
/// the whole answer in `claims`, `method` = `"introspection"`.
#[derive(Clone)]
pub struct Introspection {
    inner: Arc<Inner>,
}

/// Settings for [`Introspection`] (from [`Introspection::builder`]) or an
/// [`IntrospectionLayer`] (from [`IntrospectionLayer::builder`]).
#[must_use]
pub struct IntrospectionBuilder<O = Introspection> {
    endpoint: String,
    client_id: Option<String>,
    client_secret: Option<String>,
    sources: Vec<TokenSource>,
    timeout: Duration,
    max_ttl: Duration,
    negative_ttl: Duration,
    max_entries: usize,
    max_token_len: usize,
    issuers: Vec<String>,
    audiences: Vec<String>,
    realm: String,
    client: Option<reqwest::Client>,
    pub(crate) layer: LayerOptions,
    _out: PhantomData<fn() -> O>,
}

struct Inner {
    endpoint: reqwest::Url,
    client: reqwest::Client,
    // Form-urlencoded as RFC 6749 §2.3.1 asks, ready for Basic.
    client_id: Option<String>,
    client_secret: Option<String>,
    sources: Vec<TokenSource>,
    timeout: Duration,
    max_ttl: Duration,
    negative_ttl: Duration,
    max_token_len: usize,
    issuers: Vec<String>,
    audiences: Vec<String>,
    realm: String,
    cache: Option<TtlCache<Verdict>>,
    /// Introspections under way, by token digest: a token presented by
    /// many requests at once (a client's burst, a retry storm) costs the
    /// identity provider one call; the others wait for its answer.
    in_flight: std::sync::Mutex<
        std::collections::HashMap<cache::Key, tokio::sync::watch::Receiver<FlightEnd>>,
    >,
}

/// How an introspection under way ended, as its waiters learn it.
#[derive(Clone)]
enum FlightEnd {
    Running,
    /// The endpoint's answer (whether or not it was cached).
    Answered(Verdict),
    /// The endpoint could not be asked, or did not answer.
    Failed,
    /// The leading request went away before the answer.
    Cancelled,
}

/// Marks an introspection under way; [`Flight::end`] (or its drop, as
/// cancelled) tells the waiters how it ended.
struct Flight<'a> {
    inner: &'a Inner,
    key: cache::Key,
    done: tokio::sync::watch::Sender<FlightEnd>,
}

impl Flight<'_> {
    fn end(&self, end: FlightEnd) {
        // Out of the map first: a waiter that goes on to lead the next
        // try must not find this flight again.
        self.inner
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.key);
        self.done.send_if_modified(|state| {
            let running = matches!(state, FlightEnd::Running);
            if running {
                *state = end;
            }
            running
        });
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        if matches!(*self.done.borrow(), FlightEnd::Running) {
            self.end(FlightEnd::Cancelled);
        }
    }
}

/// A cached answer.
#[derive(Clone)]
enum Verdict {
    Active(Identity),
    Refused(&'static str, &'static str),
}

const INACTIVE: (&str, &str) = (reason::INACTIVE_TOKEN, "the token is not active");
const WRONG_ISSUER: (&str, &str) = (reason::WRONG_ISSUER, "the token's issuer is not accepted");
const NOT_ACCESS: (&str, &str) = (reason::INACTIVE_TOKEN, "the token is not an access token");
const WRONG_AUDIENCE: (&str, &str) = (
    reason::WRONG_AUDIENCE,
    "the token is not meant for this audience",
);

/// Answers are small JSON objects.
const MAX_ANSWER: usize = 64 * 1024;

// === impl Introspection ===

impl Introspection {
    /// Starts building a client of the introspection endpoint `endpoint`.
    pub fn builder(endpoint: impl Into<String>) -> IntrospectionBuilder<Introspection> {
        IntrospectionBuilder::new(endpoint.into())
    }
}

impl Authenticator for Introspection {
    fn authenticate<'a>(
        &'a self,
        req: &'a Parts,
    ) -> BoxFuture<'a, Result<Option<Authenticated>, AuthError>> {
        Box::pin(async move {
            let Some(found) = self.inner.sources.iter().find_map(|s| s.extract(req)) else {
                return Ok(None);
            };
            let token = found.map_err(|_| {
                self.inner
                    .refuse(reason::MALFORMED, "the token is malformed")
            })?;
            self.inner.check(&token).await.map(|id| Some(id.into()))
        })
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

impl fmt::Debug for Introspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("Introspection")
            .field("endpoint", &i.endpoint.as_str())
            .field("client_id", &i.client_id)
            .field(
                "client_secret",
                &i.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("sources", &i.sources)
            .field("timeout", &i.timeout)
            .field("max_ttl", &i.max_ttl)
            .field("negative_ttl", &i.negative_ttl)
            .field("cache", &i.cache)
            .finish()
    }
}

/// How many failed leaders' tries a request waits for before it answers
/// 503 without a call of its own.
const LEADER_ROUNDS: usize = 3;

// === impl Inner ===

impl Inner {
    fn refuse(&self, reason: &'static str, description: &'static str) -> AuthError {
        AuthError::unauthenticated(reason, description).with_challenge(challenge::bearer(
            &self.realm,
            Some(("invalid_token", description)),
        ))
    }

    async fn check(&self, token: &str) -> Result<Identity, AuthError> {
        if token.len() > self.max_token_len {
            return Err(self.refuse(reason::TOKEN_TOO_LARGE, "the token is too large"));
        }
        let key = cache::key_of(&[token.as_bytes()]);
        if let Some(hit) = self.cache.as_ref().and_then(|c| c.get(&key)) {
            return self.answer(hit);
        }
        // Only with a cache (without one, every request asks). The
        // waiters take the leader's answer. When the leader failed (the
        // endpoint timed out) one of them leads the next try and the
        // others wait for it again; after a few failed tries they answer
        // 503: an endpoint in trouble gets one call at a time per token,
        // not one from every waiting request at once. A leader whose
        // client went away costs no round.
        let mut flight = None;
        if self.cache.is_some() {
            let mut failed = 0;
            while flight.is_none() {
                match self.join(key) {
                    Ok(f) => flight = Some(f),
                    Err(_) if failed == LEADER_ROUNDS => {
                        return Err(AuthError::unavailable(
                            reason::INTROSPECTION_UNAVAILABLE,
                            "the token could not be checked; try again later",
                            "the introspection calls this request waited for failed",
                        ));
                    }
                    Err(mut done) => {
                        let end = done
                            .wait_for(|e| !matches!(e, FlightEnd::Running))
                            .await
                            .map(|e| e.clone())
                            .unwrap_or(FlightEnd::Cancelled);
                        match end {
                            FlightEnd::Answered(verdict) => return self.answer(verdict),
                            FlightEnd::Failed => failed += 1,
                            FlightEnd::Running | FlightEnd::Cancelled => {}
                        }
                    }
                }
            }
        }
        let answer = match self.introspect(token).await {
            Ok(answer) => answer,
            Err(e) => {
                if let Some(f) = &flight {
                    f.end(FlightEnd::Failed);
                }
                return Err(e);
            }
        };
        let (verdict, exp) = self.judge(answer);
        if let Some(cache) = &self.cache {
            let ttl = match (&verdict, exp) {
                (Verdict::Active(_), Some(exp)) => {
                    Duration::from_secs(exp.saturating_sub(now_secs())).min(self.max_ttl)
                }
                (Verdict::Active(_), None) => self.max_ttl,
                (Verdict::Refused(..), _) => self.negative_ttl,
            };
            if !ttl.is_zero() {
                cache.insert(key, verdict.clone(), Instant::now() + ttl);
            }
        }
        if let Some(f) = &flight {
            f.end(FlightEnd::Answered(verdict.clone()));
        }
        self.answer(verdict)
    }

    /// Leads the introspection of `key`, or (`Err`) waits for the one
    /// under way.
    fn join(&self, key: cache::Key) -> Result<Flight<'_>, tokio::sync::watch::Receiver<FlightEnd>> {
        let mut flights = self
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(done) = flights.get(&key) {
            return Err(done.clone());
        }
        let (done, rx) = tokio::sync::watch::channel(FlightEnd::Running);
        flights.insert(key, rx);
        Ok(Flight {
            inner: self,
            key,
            done,
        })
    }

    fn answer(&self, v: Verdict) -> Result<Identity, AuthError> {
        match v {
            Verdict::Active(id) => Ok(id),
            Verdict::Refused(reason, description) => Err(self.refuse(reason, description)),
        }
    }

    async fn introspect(&self, token: &str) -> Result<Map<String, Value>, AuthError> {
        let unavailable = |source: Box<dyn std::error::Error + Send + Sync>| {
            AuthError::unavailable(
                reason::INTROSPECTION_UNAVAILABLE,
                "the token could not be checked; try again later",
                source,
            )
        };
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .append_pair("token_type_hint", "access_token")
            .finish();
        let mut req = self
            .client
            .post(self.endpoint.clone())
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .timeout(self.timeout)
            .body(body);
        if let Some(id) = &self.client_id {
            req = req.basic_auth(id, self.client_secret.as_ref());
        }
        // Without the URL: reqwest's message would show its user info.
        let rsp = req
            .send()
            .await
            .map_err(|e| unavailable(e.without_url().into()))?;
        if !rsp.status().is_success() {
            return Err(unavailable(
                format!("introspection endpoint answered {}", rsp.status()).into(),
            ));
        }
        let bytes = http_client::read_limited(rsp, MAX_ANSWER)
            .await
            .map_err(unavailable)?;
        serde_json::from_slice(&bytes).map_err(|e| unavailable(e.into()))
    }

    /// What an answer means, and the token's `exp`.
    fn judge(&self, answer: Map<String, Value>) -> (Verdict, Option<u64>) {
        let refused = |(r, d): (&'static str, &'static str)| (Verdict::Refused(r, d), None);
        if answer.get("active") != Some(&Value::Bool(true)) {
            return refused(INACTIVE);
        }
        let now = now_secs();
        let exp = answer
            .get("exp")
            .and_then(Value::as_f64)
            .map(|f| f.max(0.0) as u64);
        // A server that says "active" about an expired token is wrong.
        if exp.is_some_and(|e| e <= now)
            || answer
                .get("nbf")
                .and_then(Value::as_f64)
                .is_some_and(|n| n > now as f64)
        {
            return refused(INACTIVE);
        }
        // Some servers (Keycloak) call refresh, offline, logout and ID
        // tokens "active" too; only an access token opens an API. An
        // allow-list: a deny-list let each new kind of token in until it
        // was named (Keycloak's `Offline` refresh tokens did).
        if ["token_type", "typ"]
            .iter()
            .filter_map(|k| answer.get(*k))
            .any(|kind| !names_an_access_token(kind))
        {
            return refused(NOT_ACCESS);
        }
        if !self.issuers.is_empty() {
            let iss = answer.get("iss").and_then(Value::as_str);
            if !iss.is_some_and(|i| self.issuers.iter().any(|x| x == i)) {
                return refused(WRONG_ISSUER);
            }
        }
        if !self.audiences.is_empty() {
            let ok = match answer.get("aud") {
                Some(Value::String(a)) => self.audiences.contains(a),
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|x| self.audiences.iter().any(|y| y == x)),
                _ => false,
            };
            if !ok {
                return refused(WRONG_AUDIENCE);
            }
        }
        let identity = Identity {
            subject: claims::string(&answer, "sub").or_else(|| claims::string(&answer, "username")),
            consumer: claims::string(&answer, "client_id"),
            issuer: claims::string(&answer, "iss"),
            scopes: claims::scopes(&answer),
            claims: answer,
            method: Some("introspection"),
        };
        tracing::trace!(sub = identity.subject.as_deref(), "token active");
        (Verdict::Active(identity), exp)
    }
}

/// Whether a `token_type` or `typ` of an answer names an access token:
/// `Bearer` or `DPoP` (RFC 7662's `token_type`, the schemes the token is
/// used with), `access_token` or its RFC 8693 URN, `at+jwt` (RFC 9068,
/// with or without `application/`). `null` counts as absent; anything else
/// (`Refresh`, `Offline`, `Logout`, `ID`, `Serialized-ID`, a number) is not
/// an access token.
fn names_an_access_token(kind: &Value) -> bool {
    const ACCESS: &[&str] = &[
        "bearer",
        "dpop",
        "access_token",
        "urn:ietf:params:oauth:token-type:access_token",
        "at+jwt",
        "application/at+jwt",
    ];
    match kind {
        Value::Null => true,
        Value::String(s) => ACCESS.iter().any(|a| s.eq_ignore_ascii_case(a)),
        _ => false,
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// === impl IntrospectionBuilder ===

impl<O> IntrospectionBuilder<O> {
    fn new(endpoint: String) -> Self {
        Self {
            endpoint,
            client_id: None,
            client_secret: None,
            sources: Vec::new(),
            timeout: Duration::from_secs(5),
            max_ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(5),
            max_entries: 10_000,
            max_token_len: 8 * 1024,
            issuers: Vec::new(),
            audiences: Vec::new(),
            realm: "api".to_owned(),
            client: None,
            layer: LayerOptions::default(),
            _out: PhantomData,
        }
    }

    /// The gateway's own client credentials at the authorization server,
    /// sent with HTTP Basic.
    pub fn client_credentials(
        mut self,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        self.client_id = Some(client_id.into());
        self.client_secret = Some(client_secret.into());
        self
    }

    /// Where the token is read from; default `Authorization: Bearer`.
    /// Several calls add sources, tried in order.
    pub fn token_from(mut self, source: TokenSource) -> Self {
        self.sources.push(source);
        self
    }

    /// How long the endpoint may take, connecting included. Default 5 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = crate::bounded(timeout);
        self
    }

    /// The longest an active answer is cached (never past the token's
    /// `exp`); zero turns the cache off. Default 5 minutes.
    pub fn max_ttl(mut self, ttl: Duration) -> Self {
        self.max_ttl = crate::bounded(ttl);
        self
    }

    /// How long an inactive answer is cached, so a client retrying a dead
    /// token does not hit the server each time. Default 5 s; zero
    /// disables it.
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = crate::bounded(ttl);
        self
    }

    /// How many answers are cached at most. Default 10 000.
    pub fn max_entries(mut self, entries: usize) -> Self {
        self.max_entries = entries;
        self
    }

    /// The largest token sent to the endpoint. Default 8 KiB.
    pub fn max_token_size(mut self, bytes: usize) -> Self {
        self.max_token_len = bytes;
        self
    }

    /// An accepted issuer; when any is set the answer's `iss` must be one.
    pub fn issuer(mut self, iss: impl Into<String>) -> Self {
        self.issuers.push(iss.into());
        self
    }

    /// An accepted audience; when any is set the answer's `aud` must name
    /// one.
    pub fn audience(mut self, aud: impl Into<String>) -> Self {
        self.audiences.push(aud.into());
        self
    }

    /// The realm of the `WWW-Authenticate: Bearer` challenge. Default `api`.
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = realm.into();
        self
    }

    /// The HTTP client to use (custom roots, proxy).
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    fn build_introspection(self) -> Result<Introspection, BuildError> {
        let endpoint = http_client::parse_url("introspection", &self.endpoint)?;
        challenge::check_realm(&self.realm)?;
        if self.timeout.is_zero() {
            return Err(BuildError::new(
                "the introspection timeout must not be zero",
            ));
        }
        let client = match self.client {
            Some(c) => c,
            None => http_client::client(self.timeout)?,
        };
        let encode = |s: String| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let cache = (self.max_entries > 0 && !self.max_ttl.is_zero())
            .then(|| TtlCache::new(self.max_entries));
        Ok(Introspection {
            inner: Arc::new(Inner {
                endpoint,
                client,
                client_id: self.client_id.map(encode),
                client_secret: self.client_secret.map(encode),
                sources: if self.sources.is_empty() {
                    vec![TokenSource::Bearer]
                } else {
                    self.sources
                },
                timeout: self.timeout,
                max_ttl: self.max_ttl,
                negative_ttl: self.negative_ttl,
                max_token_len: self.max_token_len,
                issuers: self.issuers,
                audiences: self.audiences,
                realm: self.realm,
                cache,
                in_flight: std::sync::Mutex::default(),
            }),
        })
    }
}

impl IntrospectionBuilder<Introspection> {
    /// Builds the client, to combine with other methods in an
    /// [`AuthLayer`](crate::AuthLayer).
    pub fn build(self) -> Result<Introspection, BuildError> {
        self.build_introspection()
    }
}

impl IntrospectionBuilder<IntrospectionLayer> {
    /// Builds the layer.
    pub fn build(self) -> Result<IntrospectionLayer, BuildError> {
        let layer = self.layer.clone();
        Ok(IntrospectionLayer::from_parts(
            self.build_introspection()?,
            layer,
        ))
    }
}

impl IntrospectionLayer {
    /// Starts building the layer for the introspection endpoint `endpoint`.
    pub fn builder(endpoint: impl Into<String>) -> IntrospectionBuilder<IntrospectionLayer> {
        IntrospectionBuilder::new(endpoint.into())
    }
}

impl<O> fmt::Debug for IntrospectionBuilder<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntrospectionBuilder")
            .field("endpoint", &self.endpoint)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

crate::macros::layer_options!(IntrospectionBuilder<IntrospectionLayer>);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_access_token_types_are_accepted() {
        for ok in [
            json!(null),
            json!("Bearer"),
            json!("DPoP"),
            json!("access_token"),
            json!("urn:ietf:params:oauth:token-type:access_token"),
            json!("AT+JWT"),
            json!("application/at+jwt"),
        ] {
            assert!(names_an_access_token(&ok), "{ok}");
        }
        for refused in [
            json!("Refresh"),
            json!("Offline"),
            json!("Logout"),
            json!("ID"),
            json!("Serialized-ID"),
            json!("urn:ietf:params:oauth:token-type:refresh_token"),
            json!("urn:example:access_token"),
            json!(""),
            json!(1),
            json!(["Bearer"]),
        ] {
            assert!(!names_an_access_token(&refused), "{refused}");
        }
    }
}
