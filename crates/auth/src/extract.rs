//! [`AuthIdentity`]: the caller's identity in an axum handler.

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;
use towergate_core::{Identity, Problem};

use crate::error::reason;

/// Extracts the [`Identity`] an auth layer in front of the handler
/// established.
///
/// Without an identity (no auth layer on this route) the extractor refuses
/// with a `401` problem; use `Option<AuthIdentity>` on routes where
/// authentication is optional.
///
/// ```
/// use axum::{Router, routing::get};
/// use towergate_auth::{AuthIdentity, JwtLayer};
///
/// async fn me(AuthIdentity(id): AuthIdentity) -> String {
///     format!("hello {}", id.subject.unwrap_or_default())
/// }
///
/// # fn main() -> Result<(), towergate_auth::BuildError> {
/// let app: Router = Router::new()
///     .route("/me", get(me))
///     .layer(JwtLayer::builder().secret([1u8; 32]).build()?);
/// # drop(app);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct AuthIdentity(pub Identity);

/// The refusal of [`AuthIdentity`]: no auth layer set an identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MissingIdentity;

// === impl AuthIdentity ===

impl<S: Send + Sync> FromRequestParts<S> for AuthIdentity {
    type Rejection = MissingIdentity;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Identity>()
            .cloned()
            .map(AuthIdentity)
            .ok_or(MissingIdentity)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for AuthIdentity {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Identity>()
            .cloned()
            .map(AuthIdentity))
    }
}

impl std::ops::Deref for AuthIdentity {
    type Target = Identity;

    fn deref(&self) -> &Identity {
        &self.0
    }
}

// === impl MissingIdentity ===

impl IntoResponse for MissingIdentity {
    fn into_response(self) -> Response {
        Problem::new(StatusCode::UNAUTHORIZED)
            .detail("this route needs an authenticated caller")
            .extension("reason", reason::MISSING_CREDENTIALS)
            .into_full_response()
            .map(axum::body::Body::new)
    }
}

impl std::fmt::Display for MissingIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no authenticated identity in the request")
    }
}

impl std::error::Error for MissingIdentity {}
