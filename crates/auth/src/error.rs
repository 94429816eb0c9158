//! Typed errors of the auth layers, named after what happened.
//!
//! An [`Authenticator`](crate::Authenticator) or an
//! [`Authorize`](crate::Authorize) rule refuses a request with an
//! [`AuthError`]; the [`Auth`](crate::Auth) service turns it into the
//! answer: a `401` or `403` problem with the right `WWW-Authenticate`, a
//! `503` problem when a service the method depends on is down, or the
//! external authorization service's own answer.
//!
//! Builders fail with a [`BuildError`].

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use towergate_core::{BoxError, Problem};

/// Machine-readable reasons, put in the `reason` member of every problem
/// document the auth layers answer with.
///
/// They name what is wrong without revealing anything about the keys.
pub mod reason {
    /// No credential was presented.
    pub const MISSING_CREDENTIALS: &str = "missing_credentials";
    /// The credential is not well formed (not three base64url segments,
    /// not JSON, bad Basic encoding, ...).
    pub const MALFORMED: &str = "malformed";
    /// The token is larger than the layer accepts; it was not parsed.
    pub const TOKEN_TOO_LARGE: &str = "token_too_large";
    /// The token's `alg` is not one the layer allows (`none`, or an
    /// algorithm of another family).
    pub const ALGORITHM_NOT_ALLOWED: &str = "algorithm_not_allowed";
    /// The token uses a JOSE header extension (`crit`) the layer does not
    /// understand.
    pub const UNSUPPORTED_HEADER: &str = "unsupported_header";
    /// The signature does not verify.
    pub const BAD_SIGNATURE: &str = "bad_signature";
    /// No key with the token's `kid`, or none that can verify its `alg`.
    pub const UNKNOWN_KEY: &str = "unknown_key";
    /// `exp` is in the past (beyond the leeway).
    pub const EXPIRED: &str = "expired";
    /// `nbf` is in the future (beyond the leeway).
    pub const NOT_YET_VALID: &str = "not_yet_valid";
    /// `iat` is in the future (beyond the leeway).
    pub const ISSUED_IN_FUTURE: &str = "issued_in_future";
    /// `iss` is not the expected issuer.
    pub const WRONG_ISSUER: &str = "wrong_issuer";
    /// `aud` does not name this audience.
    pub const WRONG_AUDIENCE: &str = "wrong_audience";
    /// A claim the layer requires is missing.
    pub const MISSING_CLAIM: &str = "missing_claim";
    /// The introspection endpoint says the token is not active.
    pub const INACTIVE_TOKEN: &str = "inactive_token";
    /// No consumer owns this API key.
    pub const UNKNOWN_API_KEY: &str = "unknown_api_key";
    /// Wrong user name or password.
    pub const BAD_CREDENTIALS: &str = "bad_credentials";
    /// The caller lacks a required scope.
    pub const INSUFFICIENT_SCOPE: &str = "insufficient_scope";
    /// An authorization rule refused the caller.
    pub const NOT_ALLOWED: &str = "not_allowed";
    /// The client address is denied (or not allowed).
    pub const IP_DENIED: &str = "ip_denied";
    /// The JWKS has never been fetched successfully.
    pub const KEYS_UNAVAILABLE: &str = "keys_unavailable";
    /// The introspection endpoint could not be asked.
    pub const INTROSPECTION_UNAVAILABLE: &str = "introspection_unavailable";
    /// The external authorization service could not be asked.
    pub const AUTH_SERVICE_UNAVAILABLE: &str = "auth_service_unavailable";
    /// Password verification could not run.
    pub const VERIFIER_UNAVAILABLE: &str = "verifier_unavailable";
}

/// Why a request was refused.
///
/// Build one with [`unauthenticated`](Self::unauthenticated),
/// [`forbidden`](Self::forbidden), [`unavailable`](Self::unavailable) or
/// [`answered`](Self::answered). The `detail` goes to the client: never put
/// key material or token contents in it.
pub struct AuthError {
    kind: AuthErrorKind,
    reason: &'static str,
    detail: Cow<'static, str>,
    challenges: Vec<HeaderValue>,
    missing_scope: Option<String>,
    answer: Option<Box<Response<Bytes>>>,
    source: Option<BoxError>,
}

/// What kind of refusal an [`AuthError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthErrorKind {
    /// A credential was presented but is not valid, or none was: `401`.
    Unauthenticated,
    /// The caller is known but not allowed: `403`.
    Forbidden,
    /// A service the method depends on (identity provider, introspection
    /// endpoint, auth service) could not answer: `503`, never `401`, so
    /// that clients do not throw away good credentials.
    Unavailable,
    /// An external authorization service refused; its answer is returned
    /// to the client as it is.
    Answered,
}

/// A builder was given settings that cannot work.
#[derive(Debug)]
pub struct BuildError {
    message: String,
    source: Option<BoxError>,
}

// === impl AuthError ===

impl AuthError {
    /// A `401`: the credential is missing or not valid.
    pub fn unauthenticated(reason: &'static str, detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(AuthErrorKind::Unauthenticated, reason, detail.into())
    }

    /// A `403`: the caller is authenticated but not allowed.
    pub fn forbidden(reason: &'static str, detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(AuthErrorKind::Forbidden, reason, detail.into())
    }

    /// A `503`: the method could not reach what it needs. `source` goes to
    /// the log, never to the client.
    pub fn unavailable(
        reason: &'static str,
        detail: impl Into<Cow<'static, str>>,
        source: impl Into<BoxError>,
    ) -> Self {
        let mut e = Self::new(AuthErrorKind::Unavailable, reason, detail.into());
        e.source = Some(source.into());
        e
    }

    /// The answer of an external authorization service, passed back to the
    /// client as it is.
    pub fn answered(response: Response<Bytes>) -> Self {
        let mut e = Self::new(
            AuthErrorKind::Answered,
            reason::NOT_ALLOWED,
            Cow::Borrowed("refused by the authorization service"),
        );
        e.answer = Some(Box::new(response));
        e
    }

    fn new(kind: AuthErrorKind, reason: &'static str, detail: Cow<'static, str>) -> Self {
        Self {
            kind,
            reason,
            detail,
            challenges: Vec::new(),
            missing_scope: None,
            answer: None,
            source: None,
        }
    }

    /// Adds a `WWW-Authenticate` challenge to a `401` (or to a `403`
    /// with `error="insufficient_scope"`); several may be added, one per
    /// scheme the client may use.
    pub fn with_challenge(mut self, challenge: HeaderValue) -> Self {
        self.challenges.push(challenge);
        self
    }

    /// Marks a `403` as a lack of scopes (space-separated), so that a
    /// bearer method can answer with `error="insufficient_scope"`.
    pub fn with_missing_scope(mut self, scope: impl Into<String>) -> Self {
        self.missing_scope = Some(scope.into());
        self
    }

    /// What kind of refusal this is.
    pub fn kind(&self) -> AuthErrorKind {
        self.kind
    }

    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            AuthErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            AuthErrorKind::Forbidden => StatusCode::FORBIDDEN,
            AuthErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            AuthErrorKind::Answered => self
                .answer
                .as_ref()
                .map_or(StatusCode::FORBIDDEN, |r| r.status()),
        }
    }

    /// The machine-readable reason, one of [`reason`].
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// The human-readable detail.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The challenges, one `WWW-Authenticate` header each.
    pub fn challenges(&self) -> &[HeaderValue] {
        &self.challenges
    }

    /// The scopes whose lack caused a `403`, if that was the cause.
    pub fn missing_scope(&self) -> Option<&str> {
        self.missing_scope.as_deref()
    }

    pub(crate) fn has_challenge(&self) -> bool {
        !self.challenges.is_empty()
    }

    /// The response the client gets. `instance` is the request id, if any.
    pub fn into_response(self, instance: Option<&str>) -> Response<Full<Bytes>> {
        let failure = AuthFailure {
            reason: self.reason,
            status: self.status(),
        };
        if let Some(answer) = self.answer {
            let mut rsp = answer.map(Full::new);
            rsp.extensions_mut().insert(failure);
            return rsp;
        }
        let mut problem = Problem::new(self.status())
            .detail(self.detail)
            .extension("reason", self.reason);
        if let Some(i) = instance {
            problem = problem.instance(i);
        }
        let mut rsp = problem.into_full_response();
        // Appended here rather than through `Problem::header`: one
        // challenge per scheme, and `Problem` keeps only the first value of
        // a repeated header.
        for c in self.challenges {
            rsp.headers_mut().append(header::WWW_AUTHENTICATE, c);
        }
        // What the identity provider or auth service could not answer may
        // be answered soon: a client should retry, not drop its credential.
        if self.kind == AuthErrorKind::Unavailable {
            rsp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        rsp.extensions_mut().insert(failure);
        rsp
    }
}

/// In the extensions of every response an auth layer refused: why, for
/// metrics and logs (`reason` is one of [`reason`]'s codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthFailure {
    /// The reason code (`missing_credentials`, `expired`, ...).
    pub reason: &'static str,
    /// The status answered.
    pub status: StatusCode,
}

impl fmt::Debug for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The answer's body may be anything the auth service said: only its
        // status is shown.
        f.debug_struct("AuthError")
            .field("kind", &self.kind)
            .field("reason", &self.reason)
            .field("detail", &self.detail)
            .field("challenges", &self.challenges)
            .field("missing_scope", &self.missing_scope)
            .field("answer", &self.answer.as_ref().map(|r| r.status()))
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.status(), self.reason, self.detail)
    }
}

impl StdError for AuthError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

// === impl BuildError ===

impl BuildError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl StdError for BuildError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// Formats an error with its `source()` chain, for logs.
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn StdError + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cur = self.0.source();
        while let Some(e) = cur {
            write!(f, ": {e}")?;
            cur = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_has_reason_and_challenge() {
        let rsp = AuthError::unauthenticated(reason::EXPIRED, "the token has expired")
            .with_challenge(HeaderValue::from_static("Bearer realm=\"api\""))
            .into_response(Some("req-1"));
        assert_eq!(rsp.status(), 401);
        assert_eq!(rsp.headers()["www-authenticate"], "Bearer realm=\"api\"");
        assert_eq!(rsp.headers()["content-type"], "application/problem+json");
    }

    #[test]
    fn every_challenge_is_sent() {
        let rsp = AuthError::unauthenticated(reason::MISSING_CREDENTIALS, "none")
            .with_challenge(HeaderValue::from_static("Bearer realm=\"api\""))
            .with_challenge(HeaderValue::from_static("ApiKey realm=\"api\""))
            .into_response(None);
        assert_eq!(rsp.headers().get_all("www-authenticate").iter().count(), 2);
    }

    #[test]
    fn answered_keeps_status() {
        let mut r = Response::new(Bytes::from_static(b"go away"));
        *r.status_mut() = StatusCode::FOUND;
        let e = AuthError::answered(r);
        assert_eq!(e.status(), StatusCode::FOUND);
        assert_eq!(e.into_response(None).status(), StatusCode::FOUND);
    }
}
