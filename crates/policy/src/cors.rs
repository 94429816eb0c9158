//! CORS per route, on top of tower-http's [`CorsLayer`], with wildcard
//! subdomain origins and misconfigurations refused at build time.
//!
//! tower-http's `CorsLayer` panics on its first request when credentials
//! are combined with a wildcard; [`CorsPolicy::build`] refuses those
//! combinations with a [`BuildError`] instead, so a bad route fails at
//! configuration time.
//!
//! The layer answers every `OPTIONS` request itself (the preflight never
//! reaches the upstream); an origin that is not allowed gets an answer
//! without `Access-Control-Allow-Origin`, which the browser treats as a
//! refusal.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer, ExposeHeaders};

use crate::BuildError;

/// An allowed origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// One origin, compared exactly (ASCII case-insensitively):
    /// `https://app.example.com`, `http://localhost:3000`.
    Exact(HeaderValue),
    /// Every subdomain of `suffix`, at any depth, with this scheme:
    /// `https://*.example.com` allows `https://a.example.com` and
    /// `https://a.b.example.com`, but not `https://example.com` nor
    /// `https://evil-example.com`. A port in `suffix`
    /// (`example.com:8443`) must be the origin's port; without one the
    /// origin must have no port.
    WildcardSubdomain {
        /// The scheme, lowercase (`https`).
        scheme: String,
        /// The domain below which subdomains are allowed, lowercase, with
        /// an optional `:port` (`example.com`, `example.com:8443`).
        suffix: String,
    },
}

/// A CORS policy under construction; [`build`](CorsPolicy::build) checks it
/// and gives tower-http's [`CorsLayer`].
///
/// Methods default to `GET, HEAD, POST`; no request header beyond the
/// CORS-safelisted ones is allowed and none is exposed until set.
///
/// ```
/// use std::time::Duration;
/// use http::{Method, header};
/// use towergate_policy::{BuildError, CorsPolicy, Origin};
///
/// let layer = CorsPolicy::builder()
///     .allow_origin(Origin::parse("https://*.example.com")?)
///     .allow_origin(Origin::parse("http://localhost:3000")?)
///     .allow_methods([Method::GET, Method::POST])
///     .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
///     .allow_credentials(true)
///     .max_age(Duration::from_secs(600))
///     .build()?;
/// # let _ = layer;
///
/// // Credentials with a wildcard is refused (tower-http would panic).
/// let err = CorsPolicy::builder()
///     .allow_any_origin()
///     .allow_credentials(true)
///     .build()
///     .unwrap_err();
/// assert_eq!(err, BuildError::CredentialsWithWildcard { what: "origin" });
/// # Ok::<(), BuildError>(())
/// ```
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct CorsPolicy {
    origins: Vec<Origin>,
    any_origin: bool,
    methods: Option<Vec<Method>>,
    any_method: bool,
    headers: Vec<HeaderName>,
    any_header: bool,
    mirror_headers: bool,
    expose: Vec<HeaderName>,
    expose_any: bool,
    credentials: bool,
    max_age: Option<Duration>,
}

// === impl Origin ===

impl Origin {
    /// Parses `scheme://host[:port]` or `scheme://*.domain[:port]`.
    ///
    /// `*` alone (use [`CorsPolicy::allow_any_origin`]), `null`, paths,
    /// user info and a `*` anywhere but at the start of the host are
    /// refused.
    ///
    /// ```
    /// use towergate_policy::Origin;
    /// let o = Origin::parse("https://*.example.com").unwrap();
    /// assert!(o.matches("https://a.b.example.com"));
    /// assert!(!o.matches("https://example.com"));
    /// assert!(!o.matches("https://evil-example.com"));
    /// assert!(!o.matches("http://a.example.com"));
    /// assert!(Origin::parse("https://example.com/").is_err());
    /// ```
    pub fn parse(origin: &str) -> Result<Self, BuildError> {
        let err = |reason| BuildError::InvalidOrigin {
            origin: origin.to_owned(),
            reason,
        };
        if origin == "*" {
            return Err(err("use allow_any_origin() to allow any origin"));
        }
        if origin.eq_ignore_ascii_case("null") {
            return Err(err(
                "the `null` origin is shared by every sandboxed document and file: page",
            ));
        }
        let (scheme, authority) = origin
            .split_once("://")
            .ok_or_else(|| err("expected scheme://host[:port]"))?;
        if !is_scheme(scheme) {
            return Err(err("invalid scheme"));
        }
        if authority.contains(['/', '?', '#']) {
            return Err(err("an origin has no path, query or fragment"));
        }
        if authority.contains('@') {
            return Err(err("an origin has no user info"));
        }
        let scheme = scheme.to_ascii_lowercase();
        let authority = authority.to_ascii_lowercase();
        if let Some(suffix) = authority.strip_prefix("*.") {
            let (host, _) = split_port(suffix).ok_or_else(|| err("invalid port"))?;
            if !is_domain(host) {
                return Err(err("expected a domain after `*.`"));
            }
            return Ok(Origin::WildcardSubdomain {
                scheme,
                suffix: suffix.to_owned(),
            });
        }
        if authority.contains('*') {
            return Err(err("a wildcard is only allowed as `scheme://*.domain`"));
        }
        let (host, _) = split_port(&authority).ok_or_else(|| err("invalid port"))?;
        let ipv6 = host.starts_with('[')
            && host.ends_with(']')
            && host[1..host.len() - 1]
                .parse::<std::net::Ipv6Addr>()
                .is_ok();
        if !ipv6 && !is_domain(host) {
            return Err(err("invalid host"));
        }
        HeaderValue::try_from(format!("{scheme}://{authority}"))
            .map(Origin::Exact)
            .map_err(|_| err("not a valid header value"))
    }

    /// Whether the value of a request's `Origin` header is allowed.
    pub fn matches(&self, origin: impl AsRef<[u8]>) -> bool {
        let origin = origin.as_ref();
        match self {
            Origin::Exact(v) => v.as_bytes().eq_ignore_ascii_case(origin),
            Origin::WildcardSubdomain { scheme, suffix } => {
                let Ok(origin) = std::str::from_utf8(origin) else {
                    return false;
                };
                let Some((o_scheme, authority)) = origin.split_once("://") else {
                    return false;
                };
                if !o_scheme.eq_ignore_ascii_case(scheme) {
                    return false;
                }
                let (Some((host, port)), Some((s_host, s_port))) =
                    (split_port(authority), split_port(suffix))
                else {
                    return false;
                };
                if port != s_port {
                    return false;
                }
                let host = host.to_ascii_lowercase();
                let Some(sub) = host
                    .strip_suffix(s_host)
                    .and_then(|rest| rest.strip_suffix('.'))
                else {
                    return false;
                };
                is_domain(sub)
            }
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Exact(v) => f.write_str(&String::from_utf8_lossy(v.as_bytes())),
            Origin::WildcardSubdomain { scheme, suffix } => write!(f, "{scheme}://*.{suffix}"),
        }
    }
}

impl std::str::FromStr for Origin {
    type Err = BuildError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

// === impl CorsPolicy ===

impl CorsPolicy {
    /// An empty policy: set at least one origin.
    pub fn builder() -> Self {
        Self::default()
    }

    /// Allows one more origin.
    pub fn allow_origin(mut self, origin: Origin) -> Self {
        self.origins.push(origin);
        self
    }

    /// Allows these origins too.
    pub fn allow_origins(mut self, origins: impl IntoIterator<Item = Origin>) -> Self {
        self.origins.extend(origins);
        self
    }

    /// Allows any origin (`Access-Control-Allow-Origin: *`); not with
    /// credentials.
    pub fn allow_any_origin(mut self) -> Self {
        self.any_origin = true;
        self
    }

    /// The methods allowed in preflight answers (default `GET, HEAD, POST`).
    pub fn allow_methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods.get_or_insert_with(Vec::new).extend(methods);
        self
    }

    /// Allows any method (`*`); not with credentials.
    pub fn allow_any_method(mut self) -> Self {
        self.any_method = true;
        self
    }

    /// Request headers allowed in preflight answers.
    pub fn allow_headers(mut self, headers: impl IntoIterator<Item = HeaderName>) -> Self {
        self.headers.extend(headers);
        self
    }

    /// Allows any request header (`*`); not with credentials (use
    /// [`mirror_request_headers`](Self::mirror_request_headers) then).
    pub fn allow_any_header(mut self) -> Self {
        self.any_header = true;
        self
    }

    /// Allows whatever headers the preflight asks for, by echoing
    /// `Access-Control-Request-Headers`; works with credentials.
    pub fn mirror_request_headers(mut self) -> Self {
        self.mirror_headers = true;
        self
    }

    /// Response headers the browser may show to scripts.
    pub fn expose_headers(mut self, headers: impl IntoIterator<Item = HeaderName>) -> Self {
        self.expose.extend(headers);
        self
    }

    /// Exposes every response header (`*`); not with credentials.
    pub fn expose_any_header(mut self) -> Self {
        self.expose_any = true;
        self
    }

    /// Sends `Access-Control-Allow-Credentials: true` (cookies, auth).
    pub fn allow_credentials(mut self, allow: bool) -> Self {
        self.credentials = allow;
        self
    }

    /// How long a browser may cache the preflight answer.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// Checks the policy and builds the layer.
    ///
    /// Refused: no origin at all, `allow_any_*` together with explicit
    /// values, and credentials with any wildcard (origin, methods, headers,
    /// exposed headers, including a literal `*` in a list).
    pub fn build(self) -> Result<CorsLayer, BuildError> {
        let star = |name: &HeaderName| name.as_str() == "*";
        if self.any_origin && !self.origins.is_empty() {
            return Err(BuildError::Cors(
                "allow_any_origin() conflicts with listed origins".into(),
            ));
        }
        if !self.any_origin && self.origins.is_empty() {
            return Err(BuildError::Cors(
                "no allowed origin: set allow_origin(s) or allow_any_origin()".into(),
            ));
        }
        if self.any_method && self.methods.is_some() {
            return Err(BuildError::Cors(
                "allow_any_method() conflicts with listed methods".into(),
            ));
        }
        if [
            self.any_header,
            self.mirror_headers,
            !self.headers.is_empty(),
        ]
        .iter()
        .filter(|b| **b)
        .count()
            > 1
        {
            return Err(BuildError::Cors(
                "choose one of allow_headers, allow_any_header and mirror_request_headers".into(),
            ));
        }
        if self.expose_any && !self.expose.is_empty() {
            return Err(BuildError::Cors(
                "expose_any_header() conflicts with listed exposed headers".into(),
            ));
        }
        if self.credentials {
            let what = if self.any_origin {
                Some("origin")
            } else if self.any_method || self.methods.iter().flatten().any(|m| m.as_str() == "*") {
                Some("methods")
            } else if self.any_header || self.headers.iter().any(star) {
                Some("headers")
            } else if self.expose_any || self.expose.iter().any(star) {
                Some("expose headers")
            } else {
                None
            };
            if let Some(what) = what {
                return Err(BuildError::CredentialsWithWildcard { what });
            }
        }

        let mut layer = CorsLayer::new();
        layer = if self.any_origin {
            layer.allow_origin(AllowOrigin::any())
        } else {
            // Re-parse, so origins built from the enum directly are checked
            // (and normalised) too.
            let origins = self
                .origins
                .iter()
                .map(|o| Origin::parse(&o.to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            if origins.iter().all(|o| matches!(o, Origin::Exact(_))) {
                let values = origins.into_iter().filter_map(|o| match o {
                    Origin::Exact(v) => Some(v),
                    Origin::WildcardSubdomain { .. } => None,
                });
                layer.allow_origin(AllowOrigin::list(values))
            } else {
                layer.allow_origin(AllowOrigin::predicate(move |origin, _| {
                    origins.iter().any(|o| o.matches(origin.as_bytes()))
                }))
            }
        };
        layer = if self.any_method {
            layer.allow_methods(AllowMethods::any())
        } else {
            let methods = self
                .methods
                .unwrap_or_else(|| vec![Method::GET, Method::HEAD, Method::POST]);
            layer.allow_methods(AllowMethods::list(methods))
        };
        if self.any_header {
            layer = layer.allow_headers(AllowHeaders::any());
        } else if self.mirror_headers {
            layer = layer.allow_headers(AllowHeaders::mirror_request());
        } else if !self.headers.is_empty() {
            layer = layer.allow_headers(AllowHeaders::list(self.headers));
        }
        if self.expose_any {
            layer = layer.expose_headers(ExposeHeaders::any());
        } else if !self.expose.is_empty() {
            layer = layer.expose_headers(ExposeHeaders::list(self.expose));
        }
        if self.credentials {
            layer = layer.allow_credentials(true);
        }
        if let Some(max_age) = self.max_age {
            layer = layer.max_age(max_age);
        }
        Ok(layer)
    }
}

/// Splits `host[:port]`; `None` when the port is not a number. IPv6
/// literals keep their brackets.
fn split_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => (&authority[..i], Some(&authority[i + 1..])),
        _ => (authority, None),
    };
    match port {
        None => Some((host, None)),
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some((host, Some(p.parse().ok()?)))
        }
        Some(_) => None,
    }
}

/// Dot-separated labels of letters, digits and hyphens.
fn is_domain(host: &str) -> bool {
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn is_scheme(s: &str) -> bool {
    s.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    #[test]
    fn wildcard_subdomains() {
        let o = Origin::parse("https://*.example.com").unwrap();
        assert_eq!(
            o,
            Origin::WildcardSubdomain {
                scheme: "https".into(),
                suffix: "example.com".into()
            }
        );
        for ok in [
            "https://a.example.com",
            "https://a.b.example.com",
            "HTTPS://A.Example.COM",
            "https://x-1.example.com",
        ] {
            assert!(o.matches(ok), "{ok}");
        }
        for no in [
            "https://example.com",
            "https://evil-example.com",
            "https://a.evil-example.com",
            "https://example.com.evil.com",
            "https://a.example.com.evil.com",
            "http://a.example.com",
            "https://a.example.com:8443",
            "https://.example.com",
            "https://a..example.com",
            "https://a_b.example.com",
            "https://a.example.com/",
            "https://user@a.example.com",
            "null",
            "",
        ] {
            assert!(!o.matches(no), "{no}");
        }
    }

    #[test]
    fn wildcard_with_port() {
        let o = Origin::parse("https://*.example.com:8443").unwrap();
        assert!(o.matches("https://a.example.com:8443"));
        assert!(!o.matches("https://a.example.com"));
        assert!(!o.matches("https://a.example.com:443"));
        assert!(!o.matches("https://a.example.com:84430"));
        assert_eq!(o.to_string(), "https://*.example.com:8443");
    }

    #[test]
    fn exact_origins() {
        let o = Origin::parse("http://LocalHost:3000").unwrap();
        assert_eq!(
            o,
            Origin::Exact(HeaderValue::from_static("http://localhost:3000"))
        );
        assert!(o.matches("http://localhost:3000"));
        assert!(!o.matches("http://localhost:3001"));
        assert!(!o.matches("http://localhost"));
        assert!(!o.matches("https://localhost:3000"));
        assert!(
            Origin::parse("http://[::1]:8080")
                .unwrap()
                .matches("http://[::1]:8080")
        );
    }

    #[test]
    fn bad_origins() {
        for bad in [
            "*",
            "null",
            "example.com",
            "https://",
            "https://example.com/",
            "https://example.com/path",
            "https://user@example.com",
            "https://a.*.example.com",
            "https://*example.com",
            "https://*.",
            "https://*.example.com:port",
            "https://example.com:99999",
            "1http://example.com",
            "https://exa mple.com",
            "https://[zz]",
        ] {
            let e = Origin::parse(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{bad}: {e}");
        }
    }

    fn base() -> CorsPolicy {
        CorsPolicy::builder()
            .allow_origin(Origin::parse("https://app.example.com").unwrap())
            .allow_credentials(true)
    }

    #[test]
    fn credentials_with_wildcards_are_refused() {
        let cases = [
            (
                CorsPolicy::builder()
                    .allow_any_origin()
                    .allow_credentials(true),
                "origin",
            ),
            (base().allow_any_method(), "methods"),
            (
                base().allow_methods([Method::from_bytes(b"*").unwrap()]),
                "methods",
            ),
            (base().allow_any_header(), "headers"),
            (
                base().allow_headers([HeaderName::from_static("*")]),
                "headers",
            ),
            (base().expose_any_header(), "expose headers"),
            (
                base().expose_headers([HeaderName::from_static("*")]),
                "expose headers",
            ),
        ];
        for (policy, what) in cases {
            assert_eq!(
                policy.build().unwrap_err(),
                BuildError::CredentialsWithWildcard { what }
            );
        }
        // The same wildcards are fine without credentials.
        let _ = CorsPolicy::builder()
            .allow_any_origin()
            .allow_any_method()
            .allow_any_header()
            .expose_any_header()
            .build()
            .unwrap();
        let _ = base()
            .mirror_request_headers()
            .expose_headers([header::ETAG])
            .build()
            .unwrap();
    }

    #[test]
    fn conflicts_and_empty() {
        assert!(matches!(
            CorsPolicy::builder().build(),
            Err(BuildError::Cors(_))
        ));
        assert!(matches!(
            base().allow_any_origin().build(),
            Err(BuildError::Cors(_))
        ));
        assert!(matches!(
            base().allow_any_header().mirror_request_headers().build(),
            Err(BuildError::Cors(_))
        ));
        // A hand-built origin is checked too.
        let star = CorsPolicy::builder()
            .allow_origin(Origin::Exact(HeaderValue::from_static("*")))
            .build();
        assert!(matches!(star, Err(BuildError::InvalidOrigin { .. })));
    }
}
