//! Errors of building a policy.

/// A policy could not be built from the values given to its builder.
///
/// Each variant names the offending value, so the binary can point at the
/// line of configuration it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// An allowed CORS origin is not `scheme://host[:port]` or
    /// `scheme://*.suffix[:port]`.
    #[error("invalid CORS origin {origin:?}: {reason}")]
    InvalidOrigin {
        /// The origin as given.
        origin: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// `allow_credentials(true)` with a wildcard, which browsers refuse (and
    /// tower-http's `CorsLayer` would panic on).
    #[error("CORS: allow_credentials(true) cannot be combined with a wildcard (`*`) {what}")]
    CredentialsWithWildcard {
        /// Which setting is a wildcard: `origin`, `methods`, `headers` or
        /// `expose headers`.
        what: &'static str,
    },
    /// Contradictory or empty CORS settings.
    #[error("CORS: {0}")]
    Cors(String),
    /// A template does not parse.
    #[error("invalid template {template:?}: {reason}")]
    InvalidTemplate {
        /// The template as given.
        template: String,
        /// Why it was refused.
        reason: String,
    },
    /// A header transform touches a header that would break message framing.
    #[error("header {name:?} cannot be transformed: {reason}")]
    ForbiddenHeader {
        /// The header name.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A media type or media range does not parse.
    #[error("invalid media type {value:?}: expected `type/subtype`, `type/*` or `type/*+suffix`")]
    InvalidMediaType {
        /// The value as given.
        value: String,
    },
    /// A pattern for a query parameter or header does not compile once
    /// anchored.
    #[error("invalid pattern for {name:?}: {reason}")]
    InvalidPattern {
        /// The parameter or header it applies to.
        name: String,
        /// The regex error.
        reason: String,
    },
    /// The JSON Schema does not compile (including unresolvable `$ref`s:
    /// remote references are never fetched).
    #[error("invalid JSON Schema: {reason}")]
    InvalidSchema {
        /// The compiler's message.
        reason: String,
    },
    /// A method allow-list is empty.
    #[error("the list of allowed methods is empty")]
    NoMethods,
    /// A redirect status that is not 301, 302, 303, 307 or 308.
    #[error("invalid redirect status {status}: expected 301, 302, 303, 307 or 308")]
    InvalidRedirectStatus {
        /// The status given.
        status: u16,
    },
}
