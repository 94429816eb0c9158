//! Errors of the cache layer.

/// A [`CacheLayer`](crate::CacheLayer) configuration that cannot work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The namespace is empty or contains `|`, whitespace or control
    /// characters (it is the first member of every key).
    #[error(
        "invalid cache namespace {0:?}: must be non-empty, without `|`, whitespace or control characters"
    )]
    InvalidNamespace(String),
    /// The `Cache-Status` cache name is not an RFC 8941 token.
    #[error("invalid Cache-Status name {0:?}: must be a structured-field token")]
    InvalidCacheStatusName(String),
    /// `key_identity` names an empty field.
    #[error("key_identity needs a field name")]
    EmptyIdentityField,
    /// `key_query(KeyQuery::Only(..))` with a parameter name containing
    /// `&` or `=`.
    #[error("invalid key query parameter name {0:?}")]
    InvalidQueryParam(String),
    /// `max_waiters` of 0 with collapsing on: use `collapse(false)`.
    #[error("max_waiters must be at least 1 when collapsing is on")]
    NoWaiters,
}
