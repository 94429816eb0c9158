//! Authentication and authorization for towergate, as Tower layers: prove
//! who the caller is, refuse what the route does not allow, and tell the
//! upstream who the caller is.
//!
//! | method | layer | authenticator |
//! |---|---|---|
//! | JWT (HS, RS, PS, ES, EdDSA; secret, PEM or JWKS URL) | [`JwtLayer`] | [`Jwt`] |
//! | API keys (header, query), stored as SHA-256 | [`ApiKeyLayer`] | [`ApiKeys`] |
//! | OAuth2 token introspection (RFC 7662) | [`IntrospectionLayer`] | [`Introspection`] |
//! | forward auth (external authorization service) | [`ForwardAuthLayer`] | [`ForwardAuth`] |
//! | HTTP Basic (bcrypt, argon2) | [`BasicAuthLayer`] | [`BasicAuth`] |
//! | several at once (any-of, all-of) | [`AuthLayer`] | any of the above, or yours |
//! | client address allow/deny lists | [`IpFilterLayer`] | — |
//!
//! Each layer establishes a [`towergate_core::Identity`] (subject,
//! consumer, issuer, scopes, claims, method) and puts it in the request
//! extensions, for later layers (rate limiting by consumer), for
//! [rules](Rule) (scopes, claims, groups: `403` when not met), for the
//! upstream as [identity headers](AuthLayerBuilder::identity_header) (a
//! client's own copies of those headers are always removed), and for
//! axum handlers through [`AuthIdentity`].
//!
//! Refusals are RFC 9457 problem documents with a `reason` member (one of
//! [`error::reason`]): `401` with a `WWW-Authenticate` challenge
//! (`Bearer realm="api", error="invalid_token", error_description="..."`,
//! no `error` when no token was sent; RFC 6750), `403` for policy
//! (`error="insufficient_scope"` for missing scopes), `503` when the
//! identity provider, introspection endpoint or auth service cannot be
//! reached (the credential may be fine). Nothing about a token is logged
//! but its subject and `kid`; keys, secrets and passwords never are.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//!
//! use http::{Request, Response, StatusCode};
//! use jsonwebtoken::{EncodingKey, Header, encode};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use towergate_auth::{Algorithm, JwtLayer};
//! use towergate_core::Identity;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let secret = b"a shared secret of at least 32 bytes!";
//! let layer = JwtLayer::builder()
//!     .secret(secret)
//!     .algorithms([Algorithm::HS256])
//!     .issuer("https://idp.example.com")
//!     .audience("orders")
//!     .build()?;
//!
//! // The handler sees who the caller is.
//! let svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|req: Request<String>| async move {
//!         let id = req.extensions().get::<Identity>().cloned().unwrap_or_default();
//!         Ok::<_, Infallible>(Response::new(id.subject.unwrap_or_default()))
//!     }));
//!
//! // No token: 401 with a challenge that names no error.
//! let rsp = svc.clone().oneshot(Request::new(String::new())).await?;
//! assert_eq!(rsp.status(), StatusCode::UNAUTHORIZED);
//! assert_eq!(rsp.headers()["www-authenticate"], "Bearer realm=\"api\"");
//!
//! // A valid token: through, with the identity.
//! let claims = serde_json::json!({
//!     "sub": "alice",
//!     "iss": "https://idp.example.com",
//!     "aud": "orders",
//!     "exp": jsonwebtoken::get_current_timestamp() + 600,
//! });
//! let token = encode(&Header::default(), &claims, &EncodingKey::from_secret(secret))?;
//! let req = Request::get("/orders")
//!     .header("authorization", format!("Bearer {token}"))
//!     .body(String::new())?;
//! let rsp = svc.clone().oneshot(req).await?;
//! assert_eq!(rsp.status(), StatusCode::OK);
//!
//! // A tampered one: 401 saying why.
//! let req = Request::get("/orders")
//!     .header("authorization", format!("Bearer {token}x"))
//!     .body(String::new())?;
//! let rsp = svc.oneshot(req).await?;
//! assert_eq!(rsp.status(), StatusCode::UNAUTHORIZED);
//! assert!(rsp.headers()["www-authenticate"].to_str()?.contains("error=\"invalid_token\""));
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! | name | description | default |
//! |---|---|---|
//! | `axum` | the [`AuthIdentity`] extractor; client addresses from axum's `ConnectInfo` in [`IpFilterLayer`] | yes |

mod macros;

mod api_key;
mod authenticator;
mod basic;
mod cache;
mod challenge;
mod claims;
mod credential;
pub mod error;
#[cfg(feature = "axum")]
mod extract;
mod forward;
pub mod future;
mod http_client;
mod introspection;
mod ip;
mod ip_filter;
mod jwt;
mod layer;
mod rules;
mod service;

pub use api_key::{ApiKeys, ApiKeysBuilder, Consumer};
pub use authenticator::{Authenticated, Authenticator, BoxFuture};
pub use basic::{BasicAuth, BasicAuthBuilder};
pub use credential::TokenSource;
pub use error::{AuthError, AuthErrorKind, AuthFailure, BuildError};
#[cfg(feature = "axum")]
pub use extract::{AuthIdentity, MissingIdentity};
pub use forward::{ForwardAuth, ForwardAuthBuilder};
pub use introspection::{Introspection, IntrospectionBuilder};
pub use ip_filter::{IpFilter, IpFilterBuilder, IpFilterLayer};
pub use jsonwebtoken::Algorithm;
pub use jwt::{Jwt, JwtBuilder};
pub use layer::{
    ApiKeyLayer, AuthLayer, AuthLayerBuilder, BasicAuthLayer, ForwardAuthLayer, IntrospectionLayer,
    JwtLayer,
};
pub use rules::{Authorize, Rule};
pub use service::{Auth, ClearedHeaders};

/// The longest duration a builder keeps (thirty years): longer ones are
/// cut to it, so that `now + ttl` cannot overflow (a panic) on the request
/// path, whatever a caller passes (`Duration::MAX` for "for ever"), nor
/// `now - leeway` underflow in `jsonwebtoken` (now is ~56 years after
/// 1970), while a leeway that reaches back to an RFC's 2011 example still
/// fits.
const LONGEST: std::time::Duration = std::time::Duration::from_secs(30 * 365 * 86_400);

fn bounded(d: std::time::Duration) -> std::time::Duration {
    d.min(LONGEST)
}
