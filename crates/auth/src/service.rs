//! [`Auth`]: the service that authenticates, authorizes, and passes the
//! identity on.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use tower::Service;
use towergate_core::body::ResponseBody;
use towergate_core::{Identity, RequestId};

use crate::authenticator::{Authenticated, Authenticator};
use crate::credential::TokenSource;
use crate::error::{AuthError, AuthErrorKind, Chain, reason};
use crate::future::{Checked, ResponseFuture};
use crate::layer::{AuthLayer, LayerOptions};
use crate::rules::Authorize;

/// The service of [`AuthLayer`] and the single-method layers; see
/// [`AuthLayer`] for what it does.
#[derive(Clone, Debug)]
pub struct Auth<S> {
    inner: S,
    shared: Arc<Shared>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    AnyOf,
    AllOf,
}

/// What every clone of a layer and its services shares.
pub(crate) struct Shared {
    methods: Vec<Arc<dyn Authenticator>>,
    mode: Mode,
    rules: Vec<Arc<dyn Authorize>>,
    identity_headers: Vec<(String, HeaderName)>,
    strip_credentials: bool,
    /// Where the methods read credentials (see
    /// [`Authenticator::credential_sources`]), each place once: emptied
    /// before forwarding unless the credential that was checked came from
    /// there.
    locations: Vec<TokenSource>,
    /// Removed from every incoming request: identity headers and the
    /// headers methods add.
    pub(crate) cleared: ClearedHeaders,
}

/// Every place a method reads a credential, each once.
fn credential_locations(methods: &[Arc<dyn Authenticator>]) -> Vec<TokenSource> {
    let mut locations: Vec<TokenSource> = Vec::new();
    for s in methods
        .iter()
        .filter_map(|m| m.credential_sources())
        .flatten()
    {
        if !locations.contains(s) {
            locations.push(s.clone());
        }
    }
    locations
}

/// Headers the gateway sets toward the upstream to say who the caller is
/// (identity headers, and what methods add, such as a forward-auth
/// service's copied headers), which a client must never set itself.
///
/// An [`AuthLayer`](crate::AuthLayer) removes its own from each request
/// before it authenticates. A route *without* authentication removes
/// nothing by itself, so an upstream reached by both kinds of route would
/// trust a client's `X-User-Id` on the unauthenticated one: a gateway
/// gathers the names of all its layers
/// ([`AuthLayer::cleared_headers`](crate::AuthLayer::cleared_headers),
/// [`ClearedHeaders::merge`]) and [`clear`](Self::clear)s them from every
/// request at its edge.
///
/// ```
/// use http::{HeaderMap, HeaderName, HeaderValue};
/// use towergate_auth::ClearedHeaders;
///
/// let cleared = ClearedHeaders::new([HeaderName::from_static("x-user-id")]);
/// let mut headers = HeaderMap::new();
/// headers.insert("x-user-id", HeaderValue::from_static("admin"));
/// headers.insert("x_user_id", HeaderValue::from_static("admin"));
/// headers.insert("accept", HeaderValue::from_static("*/*"));
/// cleared.clear(&mut headers);
/// assert_eq!(headers.len(), 1);
/// ```
#[derive(Clone, Debug, Default)]
pub struct ClearedHeaders {
    /// Sorted, without duplicates.
    names: Arc<[HeaderName]>,
}

impl ClearedHeaders {
    /// These names (in any order, duplicates allowed).
    pub fn new(names: impl IntoIterator<Item = HeaderName>) -> Self {
        let mut names: Vec<HeaderName> = names.into_iter().collect();
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        names.dedup();
        Self {
            names: names.into(),
        }
    }

    /// The names of all of `sets`.
    pub fn merge<'a>(sets: impl IntoIterator<Item = &'a ClearedHeaders>) -> Self {
        Self::new(sets.into_iter().flat_map(|s| s.names.iter().cloned()))
    }

    /// These names but `names`: at a gateway's edge, the credentials
    /// (`Authorization`, `Cookie`) that a forward-auth service's answer may
    /// replace on its own route must reach the others as the client sent
    /// them.
    pub fn without(&self, names: &[HeaderName]) -> Self {
        Self::new(self.names.iter().filter(|n| !names.contains(n)).cloned())
    }

    /// The names, sorted.
    pub fn names(&self) -> &[HeaderName] {
        &self.names
    }

    /// Whether there is no name.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Removes the names from `headers`, and their spellings with `_` for
    /// `-`: CGI-style upstreams (PHP-FPM, WSGI, Rack) read `x-user-id` and
    /// `x_user_id` both as `HTTP_X_USER_ID`, so the underscore spelling
    /// would pass a spoofed identity where the gateway sets none (an
    /// API-key caller has no subject). Names with an underscore are rare:
    /// one pass over the names finds none.
    pub fn clear(&self, headers: &mut HeaderMap) {
        if self.names.is_empty() {
            return;
        }
        for h in self.names.iter() {
            headers.remove(h);
        }
        if !headers.keys().any(|k| k.as_str().contains('_')) {
            return;
        }
        let spoofs: Vec<HeaderName> = headers
            .keys()
            .filter(|k| {
                let name = k.as_str().as_bytes();
                name.contains(&b'_')
                    && self.names.iter().any(|c| {
                        let c = c.as_str().as_bytes();
                        c.len() == name.len()
                            && c.iter()
                                .zip(name)
                                .all(|(&a, &b)| a == b || (a == b'-' && b == b'_'))
                    })
            })
            .cloned()
            .collect();
        for name in spoofs {
            headers.remove(name);
        }
    }
}

// === impl Auth ===

impl<S> Auth<S> {
    /// Wraps `inner` with the checks of `layer`.
    pub fn new(inner: S, layer: &AuthLayer) -> Self {
        tower::Layer::layer(layer, inner)
    }

    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Auth<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The service that was polled ready goes with this request; the
        // clone stays for the next `poll_ready`.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let (parts, body) = req.into_parts();
        // Boxed: authentication is naturally asynchronous (JWKS fetch,
        // introspection, auth service, password hashing off-thread).
        let check = Box::pin(self.shared.clone().check(parts));
        ResponseFuture::new(check, inner, body)
    }
}

// === impl Shared ===

impl Shared {
    pub(crate) fn new(
        methods: Vec<Arc<dyn Authenticator>>,
        mode: Mode,
        options: LayerOptions,
    ) -> Self {
        let cleared = ClearedHeaders::new(
            options
                .identity_headers
                .iter()
                .map(|(_, h)| h.clone())
                .chain(
                    methods
                        .iter()
                        .flat_map(|m| m.added_headers().iter().cloned()),
                ),
        );
        let locations = credential_locations(&methods);
        Self {
            methods,
            mode,
            rules: options.rules,
            identity_headers: options.identity_headers,
            strip_credentials: options.strip_credentials,
            locations,
            cleared,
        }
    }

    pub(crate) async fn check(self: Arc<Self>, mut parts: Parts) -> Checked {
        self.cleared.clear(&mut parts.headers);
        let request_id = parts.extensions.get::<RequestId>().cloned();
        let refuse = |e: AuthError| {
            let rid = request_id.as_ref().map(RequestId::as_str);
            match e.kind() {
                AuthErrorKind::Unavailable => tracing::warn!(
                    request_id = rid,
                    reason = e.reason(),
                    error = %Chain(&e),
                    "authentication could not be completed"
                ),
                _ => tracing::debug!(
                    request_id = rid,
                    status = e.status().as_u16(),
                    reason = e.reason(),
                    "request refused"
                ),
            }
            e.into_response(rid)
        };

        let outcome = match self.mode {
            Mode::AnyOf => self.any_of(&parts).await,
            Mode::AllOf => self.all_of(&parts).await,
        };
        let (authenticated, decider) = outcome.map_err(refuse)?;
        let Authenticated { identity, headers } = authenticated;

        for rule in &self.rules {
            if let Err(e) = rule.authorize(&identity, &parts) {
                return Err(refuse(self.with_scope_challenge(e, decider)));
            }
        }

        // Before the headers of the gateway go on: those are not the
        // client's (a forward-auth service may answer with an
        // `Authorization` for the upstream).
        self.remove_credentials(&mut parts, decider);

        let mut last = None;
        for (name, value) in headers {
            // `HeaderMap::into_iter` names a header once, then `None` for
            // its further values.
            if let Some(n) = name {
                last = Some(n);
            }
            if let Some(n) = &last {
                parts.headers.append(n.clone(), value);
            }
        }
        for (field, header) in &self.identity_headers {
            match identity_field(&identity, field).map(|v| HeaderValue::from_str(&v)) {
                Some(Ok(v)) => {
                    parts.headers.insert(header.clone(), v);
                }
                Some(Err(_)) => {
                    tracing::debug!(field, header = %header, "identity field is not a valid header value")
                }
                None => {}
            }
        }
        parts.extensions.insert(identity);
        Ok(parts)
    }

    /// Removes the credentials nobody checked: with `any_of`, those of the
    /// methods that did not decide and the deciding one's other sources;
    /// with `all_of`, each method's sources it did not read. A place where
    /// a checked credential was read keeps it (two JWT providers on the
    /// one bearer token). With `strip_credentials`, every method removes
    /// its own, the checked ones too.
    ///
    /// By place, not by what a method makes of the value there: a
    /// `Bearer\t<forged>` that no method reads as a token is still one to
    /// an upstream that splits on any whitespace.
    fn remove_credentials(&self, parts: &mut Parts, decider: Option<usize>) {
        if self.strip_credentials {
            for m in &self.methods {
                m.strip_credential(parts);
            }
            return;
        }
        // One method reading one place (a route with one JWT provider on
        // the bearer token, the usual case): the method that passed read
        // its credential there, so nothing is unchecked; skipping saves
        // reading the credential a second time (the whole token's text).
        if self.locations.is_empty() || (self.methods.len() == 1 && self.locations.len() == 1) {
            return;
        }
        let checked_by: &[Arc<dyn Authenticator>] = match (self.mode, decider) {
            (Mode::AnyOf, Some(i)) => self.methods.get(i..=i).unwrap_or_default(),
            (Mode::AnyOf, None) => &[],
            (Mode::AllOf, _) => &self.methods,
        };
        // Read before anything is removed: removing changes what is
        // present.
        let checked: Vec<&TokenSource> = checked_by
            .iter()
            .flat_map(|m| m.credential_read_from(parts))
            .collect();
        for place in &self.locations {
            if !checked.iter().any(|c| c.shares_location(place)) {
                place.strip(parts);
            }
        }
    }

    /// The first method whose credential is present decides.
    async fn any_of(&self, parts: &Parts) -> Result<(Authenticated, Option<usize>), AuthError> {
        for (i, m) in self.methods.iter().enumerate() {
            match m.authenticate(parts).await {
                Ok(Some(a)) => return Ok((a, Some(i))),
                Ok(None) => {}
                Err(e) => return Err(with_method_challenge(e, &**m)),
            }
        }
        Err(self.missing())
    }

    /// Every method must pass.
    async fn all_of(&self, parts: &Parts) -> Result<(Authenticated, Option<usize>), AuthError> {
        let mut merged: Option<Authenticated> = None;
        for m in &self.methods {
            match m.authenticate(parts).await {
                Ok(Some(a)) => match &mut merged {
                    None => merged = Some(a),
                    Some(acc) => merge(acc, a),
                },
                // The client has to send every credential: say which.
                Ok(None) => return Err(self.missing()),
                Err(e) => return Err(with_method_challenge(e, &**m)),
            }
        }
        merged.map(|a| (a, None)).ok_or_else(|| self.missing())
    }

    fn missing(&self) -> AuthError {
        let mut e = AuthError::unauthenticated(
            reason::MISSING_CREDENTIALS,
            "no credentials were presented",
        );
        for m in &self.methods {
            if let Some(c) = m.challenge() {
                e = e.with_challenge(c);
            }
        }
        e
    }

    /// A `403` for missing scopes gets the bearer `insufficient_scope`
    /// challenge of the method that authenticated the caller (or, with
    /// all-of, of the first bearer method).
    fn with_scope_challenge(&self, e: AuthError, decider: Option<usize>) -> AuthError {
        if e.kind() != AuthErrorKind::Forbidden || e.has_challenge() {
            return e;
        }
        let Some(scope) = e.missing_scope().map(str::to_owned) else {
            return e;
        };
        let challenge = match decider {
            Some(i) => self
                .methods
                .get(i)
                .and_then(|m| m.insufficient_scope_challenge(&scope)),
            None => self
                .methods
                .iter()
                .find_map(|m| m.insufficient_scope_challenge(&scope)),
        };
        match challenge {
            Some(c) => e.with_challenge(c),
            None => e,
        }
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("methods", &self.methods)
            .field("mode", &self.mode)
            .field("rules", &self.rules.len())
            .field("identity_headers", &self.identity_headers)
            .field("strip_credentials", &self.strip_credentials)
            .finish()
    }
}

/// A `401` without a challenge gets the method's.
fn with_method_challenge(e: AuthError, m: &dyn Authenticator) -> AuthError {
    if e.kind() == AuthErrorKind::Unauthenticated
        && !e.has_challenge()
        && let Some(c) = m.challenge()
    {
        return e.with_challenge(c);
    }
    e
}

/// Merges a further identity into the first: the first method's fields
/// win, scopes are united, claims are added where absent.
fn merge(acc: &mut Authenticated, next: Authenticated) {
    let (a, b) = (&mut acc.identity, next.identity);
    if a.subject.is_none() {
        a.subject = b.subject;
    }
    if a.consumer.is_none() {
        a.consumer = b.consumer;
    }
    if a.issuer.is_none() {
        a.issuer = b.issuer;
    }
    for s in b.scopes {
        if !a.scopes.contains(&s) {
            a.scopes.push(s);
        }
    }
    for (k, v) in b.claims {
        a.claims.entry(k).or_insert(v);
    }
    if a.method.is_none() {
        a.method = b.method;
    }
    let mut last = None;
    for (name, value) in next.headers {
        if let Some(n) = name {
            last = Some(n);
        }
        if let Some(n) = &last {
            acc.headers.append(n.clone(), value);
        }
    }
}

/// An identity field for a header: what [`Identity::field`] gives, plus
/// `scope` (space-separated) and `method`.
fn identity_field(id: &Identity, field: &str) -> Option<String> {
    match field {
        "scope" | "scopes" => (!id.scopes.is_empty()).then(|| id.scopes.join(" ")),
        "method" => id.method.map(str::to_owned),
        other => id.field(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merging() {
        let mut a = Authenticated::from(Identity {
            subject: Some("alice".into()),
            scopes: vec!["read".into()],
            method: Some("jwt"),
            ..Identity::default()
        });
        let mut b = Identity {
            subject: Some("svc".into()),
            consumer: Some("acme".into()),
            scopes: vec!["read".into(), "write".into()],
            method: Some("api_key"),
            ..Identity::default()
        };
        b.claims.insert("plan".into(), json!("gold"));
        merge(&mut a, b.into());
        let id = a.identity;
        assert_eq!(id.subject.as_deref(), Some("alice"));
        assert_eq!(id.consumer.as_deref(), Some("acme"));
        assert_eq!(id.scopes, ["read", "write"]);
        assert_eq!(id.claims["plan"], "gold");
        assert_eq!(id.method, Some("jwt"));
    }

    #[test]
    fn fields_for_headers() {
        let id = Identity {
            scopes: vec!["a".into(), "b".into()],
            method: Some("jwt"),
            ..Identity::default()
        };
        assert_eq!(identity_field(&id, "scope").as_deref(), Some("a b"));
        assert_eq!(identity_field(&id, "method").as_deref(), Some("jwt"));
        assert_eq!(identity_field(&id, "sub"), None);
    }
}
