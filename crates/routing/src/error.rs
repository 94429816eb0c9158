//! Errors of the routing crate: a route table that cannot be built, and a
//! request path that cannot be normalised.

use std::sync::Arc;

/// A route table could not be built: which route, and what is wrong with it.
///
/// Every validation happens in [`RouterBuilder::build`](crate::RouterBuilder::build)
/// (or [`RouteTable::new`](crate::RouteTable::new)), so a table that was built
/// never fails at request time.
///
/// ```
/// use towergate_routing::{Route, RouteTable};
/// use towergate_routing::error::BuildErrorKind;
///
/// let err = RouteTable::new([Route::new("files").path_template("/files/{*rest}/meta")])
///     .unwrap_err();
/// assert_eq!(err.route(), "files");
/// assert!(matches!(err.kind(), BuildErrorKind::InvalidTemplate { .. }));
/// ```
#[derive(Debug, thiserror::Error)]
#[error("route `{route}`: {kind}")]
pub struct BuildError {
    route: Arc<str>,
    kind: BuildErrorKind,
}

/// What is wrong with a route.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildErrorKind {
    /// The route's name is empty; names label metrics and logs.
    #[error("the route name is empty")]
    EmptyName,
    /// Another route has the same name; names must be unique in a table.
    #[error("another route has the same name")]
    DuplicateName,
    /// More than one of `path_exact`, `path_prefix`, `path_template` was set.
    #[error("more than one path matcher is set")]
    MultiplePaths,
    /// A path template is malformed.
    #[error("invalid path template `{template}`: {reason}")]
    InvalidTemplate {
        /// The template as given.
        template: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A host pattern is malformed.
    #[error("invalid host pattern `{pattern}`: {reason}")]
    InvalidHost {
        /// The pattern as given.
        pattern: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A header name is not a valid HTTP header name.
    #[error("invalid header name `{name}`")]
    InvalidHeaderName {
        /// The name as given.
        name: String,
    },
    /// A header value to compare with is not a valid HTTP header value.
    #[error("invalid value for header `{name}`")]
    InvalidHeaderValue {
        /// The header name.
        name: String,
    },
    /// A regular expression does not compile.
    #[error("invalid regex `{pattern}` for {target}: {source}")]
    InvalidRegex {
        /// `header NAME` or `query parameter NAME`.
        target: String,
        /// The pattern as given.
        pattern: String,
        /// The compiler's complaint.
        #[source]
        source: regex::Error,
    },
    /// A query matcher has an empty parameter name.
    #[error("a query matcher has an empty parameter name")]
    EmptyQueryName,
    /// A rewrite template is malformed.
    #[error("invalid rewrite template `{template}`: {reason}")]
    InvalidRewrite {
        /// The template as given.
        template: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A rewrite template uses a parameter the path template does not capture.
    #[error("rewrite template `{template}` references unknown parameter `{param}`")]
    UnknownRewriteParam {
        /// The template as given.
        template: String,
        /// The parameter it names.
        param: String,
    },
    /// `strip_prefix(true)` on a route whose path is not a prefix.
    #[error("strip_prefix needs a path_prefix route")]
    StripPrefixWithoutPrefix,
    /// `strip_prefix(true)` and `rewrite` both set: the forwarded path would be ambiguous.
    #[error("strip_prefix and rewrite cannot be combined (a prefix rewrite to `/` strips)")]
    StripPrefixAndRewrite,
}

/// Why a request path was refused by [`normalize_path`](crate::normalize_path).
///
/// Each of these is a way to make the router and the upstream disagree on
/// which resource a path names, so the router answers `400 Bad Request`
/// instead of guessing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path does not start with `/` (for example `*`).
    #[error("the path does not start with `/`")]
    NotAbsolute,
    /// `%2F`: upstreams disagree on whether it separates segments.
    #[error("an encoded slash (%2F) is not allowed in the path")]
    EncodedSlash,
    /// `%5C`: some upstreams treat it as a separator.
    #[error("an encoded backslash (%5C) is not allowed in the path")]
    EncodedBackslash,
    /// A raw `\`: some upstreams treat it as a separator.
    #[error("a backslash is not allowed in the path")]
    Backslash,
    /// `%00` or a raw NUL: truncates paths in C-based upstreams.
    #[error("a NUL byte is not allowed in the path")]
    Nul,
    /// `%` not followed by two hex digits.
    #[error("invalid percent-encoding in the path")]
    InvalidEscape,
    /// A `.` or `..` segment with `;` parameters (`/public/..;/admin`):
    /// servlet containers (Tomcat, Jetty) drop the parameters and then
    /// resolve the dot segment, which the router would not.
    #[error("a `.` or `..` segment with `;` parameters is not allowed in the path")]
    DotSegmentParams,
}

// === impl BuildError ===

impl BuildError {
    pub(crate) fn new(route: &Arc<str>, kind: BuildErrorKind) -> Self {
        Self {
            route: route.clone(),
            kind,
        }
    }

    /// The name of the offending route.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// What is wrong with it.
    pub fn kind(&self) -> &BuildErrorKind {
        &self.kind
    }
}
