//! [`AuthLayer`] and its builder, and the single-method layers
//! ([`JwtLayer`], [`ApiKeyLayer`], [`IntrospectionLayer`],
//! [`ForwardAuthLayer`], [`BasicAuthLayer`]).

use std::fmt;
use std::sync::Arc;

use http::HeaderName;
use tower::Layer;

use crate::api_key::ApiKeys;
use crate::authenticator::Authenticator;
use crate::basic::BasicAuth;
use crate::error::BuildError;
use crate::forward::ForwardAuth;
use crate::introspection::Introspection;
use crate::jwt::{Jwt, JwtBuilder};
use crate::rules::Authorize;
use crate::service::{Auth, Mode, Shared};

/// Authenticates requests with one or several methods, checks
/// authorization rules, and tells the upstream who the caller is.
///
/// Per request, in order:
/// 1. incoming copies of the identity headers (and of headers the methods
///    add) are removed, so a client cannot spoof them;
/// 2. the methods run: **any-of** (default): the first method whose
///    credential is *present* decides, and with none present the answer is
///    a `401` listing every method's `WWW-Authenticate` challenge;
///    **all-of**: every method must pass, and the identities are merged;
/// 3. the [rules](AuthLayerBuilder::require) run on the identity (`403`);
/// 4. the credentials nobody checked are removed (those of the methods
///    that did not decide, wherever and however spelt; with
///    [`strip_credentials`](AuthLayerBuilder::strip_credentials), the
///    checked ones too), then the [`Identity`](towergate_core::Identity)
///    goes in the request extensions and identity headers are set.
///
/// Refusals are `401`/`403` problem responses; a method that cannot reach
/// what it depends on answers `503`. Cloning is cheap: clones share the
/// methods and their caches.
#[derive(Clone, Debug)]
#[must_use]
pub struct AuthLayer {
    shared: Arc<Shared>,
}

/// Settings for an [`AuthLayer`]; see [`AuthLayer::builder`].
#[derive(Debug)]
#[must_use]
pub struct AuthLayerBuilder {
    methods: Vec<Arc<dyn Authenticator>>,
    mode: Mode,
    pub(crate) layer: LayerOptions,
}

/// What every layer does around its methods: rules, identity headers,
/// credential stripping.
#[derive(Clone, Default)]
pub(crate) struct LayerOptions {
    pub(crate) rules: Vec<Arc<dyn Authorize>>,
    pub(crate) identity_headers: Vec<(String, HeaderName)>,
    pub(crate) strip_credentials: bool,
}

// === impl AuthLayer ===

impl AuthLayer {
    /// Starts building a layer.
    ///
    /// ```
    /// use towergate_auth::{ApiKeys, AuthLayer, Consumer, Jwt, Rule};
    ///
    /// # fn main() -> Result<(), towergate_auth::BuildError> {
    /// let jwt = Jwt::builder().secret([7u8; 32]).audience("orders").build()?;
    /// let keys = ApiKeys::builder()
    ///     .header(http::HeaderName::from_static("x-api-key"))
    ///     .key("k-123", Consumer::new("batch-job").scopes(["orders:read"]))
    ///     .build()?;
    /// // A JWT or an API key, whichever the client sends.
    /// let layer = AuthLayer::builder()
    ///     .method(jwt)
    ///     .method(keys)
    ///     .require(Rule::scopes(["orders:read"]))
    ///     .identity_header("sub", http::HeaderName::from_static("x-user-id"))
    ///     .identity_header("consumer", http::HeaderName::from_static("x-consumer"))
    ///     .strip_credentials(true)
    ///     .build()?;
    /// # drop(layer);
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder() -> AuthLayerBuilder {
        AuthLayerBuilder {
            methods: Vec::new(),
            mode: Mode::AnyOf,
            layer: LayerOptions::default(),
        }
    }

    /// The headers this layer sets toward the upstream and removes from
    /// every request it sees; see [`ClearedHeaders`](crate::ClearedHeaders).
    pub fn cleared_headers(&self) -> &crate::ClearedHeaders {
        &self.shared.cleared
    }

    pub(crate) fn from_parts(
        methods: Vec<Arc<dyn Authenticator>>,
        mode: Mode,
        options: LayerOptions,
    ) -> Self {
        Self {
            shared: Arc::new(Shared::new(methods, mode, options)),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth::from_shared(inner, self.shared.clone())
    }
}

// === impl AuthLayerBuilder ===

impl AuthLayerBuilder {
    /// Adds a method, tried in the order given.
    pub fn method(mut self, method: impl Authenticator) -> Self {
        self.methods.push(Arc::new(method));
        self
    }

    /// Adds a method already shared elsewhere (one JWKS fetcher and cache
    /// for several routes).
    pub fn shared_method(mut self, method: Arc<dyn Authenticator>) -> Self {
        self.methods.push(method);
        self
    }

    /// The first method whose credential is present decides. The default.
    pub fn any_of(mut self) -> Self {
        self.mode = Mode::AnyOf;
        self
    }

    /// Every method must pass; their identities are merged (the first
    /// method's fields win, scopes are united).
    pub fn all_of(mut self) -> Self {
        self.mode = Mode::AllOf;
        self
    }

    /// Builds the layer.
    pub fn build(self) -> Result<AuthLayer, BuildError> {
        if self.methods.is_empty() {
            return Err(BuildError::new("an auth layer needs at least one method"));
        }
        Ok(AuthLayer::from_parts(self.methods, self.mode, self.layer))
    }
}

crate::macros::layer_options!(AuthLayerBuilder);

// === impl LayerOptions ===

impl fmt::Debug for LayerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LayerOptions")
            .field("rules", &self.rules.len())
            .field("identity_headers", &self.identity_headers)
            .field("strip_credentials", &self.strip_credentials)
            .finish()
    }
}

/// A layer around one method: an [`AuthLayer`] with a builder of its own.
macro_rules! method_layer {
    ($(#[$doc:meta])* $layer:ident, $method:ty) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        #[must_use]
        pub struct $layer {
            auth: AuthLayer,
        }

        impl $layer {
            pub(crate) fn from_parts(method: $method, options: LayerOptions) -> Self {
                Self {
                    auth: AuthLayer::from_parts(vec![Arc::new(method)], Mode::AnyOf, options),
                }
            }

            /// The layer as a general [`AuthLayer`].
            pub fn into_auth_layer(self) -> AuthLayer {
                self.auth
            }

            /// The headers this layer sets toward the upstream and removes
            /// from every request it sees; see
            /// [`ClearedHeaders`](crate::ClearedHeaders).
            pub fn cleared_headers(&self) -> &crate::ClearedHeaders {
                self.auth.cleared_headers()
            }
        }

        impl<S> Layer<S> for $layer {
            type Service = Auth<S>;

            fn layer(&self, inner: S) -> Auth<S> {
                self.auth.layer(inner)
            }
        }
    };
}

method_layer!(
    /// Authenticates requests with a JWT: see [`Jwt`] for what is checked,
    /// and [`AuthLayer`] for what the layer does around it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use towergate_auth::{Algorithm, JwtLayer, Rule, TokenSource};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), towergate_auth::BuildError> {
    /// let layer = JwtLayer::builder()
    ///     .jwks_url("https://idp.example.com/.well-known/jwks.json")
    ///     .issuer("https://idp.example.com/")
    ///     .audience("orders")
    ///     .algorithms([Algorithm::RS256, Algorithm::ES256])
    ///     .leeway(Duration::from_secs(30))
    ///     .token_from(TokenSource::Bearer)
    ///     .require(Rule::scopes(["orders:read"]))
    ///     .identity_header("sub", http::HeaderName::from_static("x-user-id"))
    ///     .build()?;
    /// # drop(layer);
    /// # Ok(())
    /// # }
    /// ```
    JwtLayer,
    Jwt
);

impl JwtLayer {
    /// Starts building the layer.
    pub fn builder() -> JwtBuilder<JwtLayer> {
        JwtBuilder::new()
    }
}

method_layer!(
    /// Authenticates requests with an API key: see [`ApiKeys`].
    ApiKeyLayer,
    ApiKeys
);

method_layer!(
    /// Authenticates requests with OAuth2 token introspection (RFC 7662):
    /// see [`Introspection`].
    IntrospectionLayer,
    Introspection
);

method_layer!(
    /// Asks an external authorization service about each request: see
    /// [`ForwardAuth`].
    ForwardAuthLayer,
    ForwardAuth
);

method_layer!(
    /// Authenticates requests with HTTP Basic credentials: see
    /// [`BasicAuth`].
    BasicAuthLayer,
    BasicAuth
);
