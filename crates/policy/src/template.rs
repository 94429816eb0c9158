//! Templates: strings with `{variables}` taken from a request.

use std::borrow::Cow;
use std::fmt::Write as _;

use http::{Extensions, HeaderMap, HeaderName, Method, Request, Uri, header};
use towergate_core::{ClientAddr, Identity, RequestId, RouteMatch};

use crate::BuildError;

/// A string with `{variables}` that are filled in from a request.
///
/// | variable | value |
/// |---|---|
/// | `{params.NAME}` | a path parameter the route captured ([`RouteMatch`]) |
/// | `{identity.FIELD}` | a field of the caller's [`Identity`] (`sub`, `consumer`, `iss`, a claim path such as `org.id`) |
/// | `{client.ip}` | the resolved client address ([`ClientAddr::client`]) |
/// | `{client.peer}` | the TCP peer, `ip:port` ([`ClientAddr::peer`]) |
/// | `{request_id}` | the [`RequestId`] |
/// | `{header.NAME}` | the first value of an incoming request header |
/// | `{route}` | the matched route's name |
/// | `{method}` | the request method |
/// | `{path}` | the request path |
/// | `{host}` | the `Host` header, or the URI authority (HTTP/2) |
/// | `{query.NAME}` | the first value of a query parameter, decoded |
///
/// `{{` and `}}` stand for literal braces. A variable the request does not
/// have, or whose value is empty, is *missing*: [`Template::render`] then
/// gives `None` (a header transform skips the operation).
///
/// ```
/// use http::Request;
/// use towergate_core::RouteMatch;
/// use towergate_policy::Template;
///
/// let t = Template::parse("user {params.id} on {route} {{literal}}").unwrap();
/// let mut req = Request::get("/users/42").body(()).unwrap();
/// req.extensions_mut().insert(RouteMatch {
///     route: "users".into(),
///     params: vec![("id".into(), "42".into())],
/// });
/// assert_eq!(t.render(&req).as_deref(), Some("user 42 on users {literal}"));
///
/// // A missing variable makes the whole expansion missing.
/// let t = Template::parse("{identity.sub}").unwrap();
/// assert_eq!(t.render(&req), None);
/// assert!(Template::parse("{nope}").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Var(Var),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Var {
    Param(String),
    Identity(String),
    ClientIp,
    ClientPeer,
    RequestId,
    Header(HeaderName),
    Route,
    Method,
    Path,
    Host,
    Query(String),
}

/// What a template is rendered from: the parts of a request that templates
/// can read.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ctx<'a> {
    pub(crate) method: &'a Method,
    pub(crate) uri: &'a Uri,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) extensions: &'a Extensions,
}

// === impl Template ===

impl Template {
    /// Parses a template; unknown variables, empty names and unbalanced
    /// braces are errors.
    pub fn parse(source: &str) -> Result<Self, BuildError> {
        let err = |reason: String| BuildError::InvalidTemplate {
            template: source.to_owned(),
            reason,
        };
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = source.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|&(_, c)| c) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|&(_, c)| c) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => return Err(err(format!("unmatched `}}` at byte {i}"))),
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for (_, c) in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        if c == '{' {
                            return Err(err(format!("`{{` inside the variable at byte {i}")));
                        }
                        name.push(c);
                    }
                    if !closed {
                        return Err(err(format!("unclosed `{{` at byte {i}")));
                    }
                    let var = Var::parse(name.trim()).map_err(err)?;
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Var(var));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Self {
            source: source.to_owned(),
            parts,
        })
    }

    /// The template as it was written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the template has no variables.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// Renders the template from a request; `None` when a variable is
    /// missing (absent or empty).
    pub fn render<B>(&self, req: &Request<B>) -> Option<String> {
        self.render_ctx(&Ctx::of(req), verbatim, false)
    }

    /// The literal text before the first variable.
    pub(crate) fn literal_prefix(&self) -> &str {
        match self.parts.first() {
            Some(Part::Literal(s)) => s,
            _ => "",
        }
    }

    /// Renders with each variable's value passed through `encode`. With
    /// `lossy`, a missing variable renders as nothing instead of failing.
    pub(crate) fn render_ctx(
        &self,
        ctx: &Ctx<'_>,
        encode: impl Fn(&str) -> Cow<'_, str>,
        lossy: bool,
    ) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Var(v) => match v.value(ctx) {
                    Some(value) if !value.is_empty() => out.push_str(&encode(&value)),
                    _ if lossy => {}
                    _ => return None,
                },
            }
        }
        Some(out)
    }
}

impl Template {
    /// [`render_ctx`](Self::render_ctx) (lossy) for a redirect's location:
    /// values in the authority of a template anchored to a host
    /// (`https://{query.region}.example.com/`) keep only what a host and
    /// port are made of, so no value can end the authority early and send
    /// the client to a host of its choosing (`?region=evil.com/` would
    /// make `https://evil.com/.example.com/`); values elsewhere are
    /// path-encoded.
    pub(crate) fn render_location(&self, ctx: &Ctx<'_>) -> String {
        // Where the authority starts and ends: after the first `//` of the
        // literal text, until the next `/`, `?` or `#` of it.
        #[derive(PartialEq)]
        enum At {
            Scheme,
            Authority,
            Rest,
        }
        let mut at = At::Scheme;
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => {
                    out.push_str(s);
                    let mut rest = s.as_str();
                    if at == At::Scheme
                        && let Some(i) = rest.find("//")
                    {
                        at = At::Authority;
                        rest = &rest[i + 2..];
                    }
                    if at == At::Authority && rest.contains(['/', '?', '#']) {
                        at = At::Rest;
                    }
                }
                // The request's path (normalised, starting with `/`)
                // right after a host ends the authority:
                // `https://new.example.com{path}`.
                Part::Var(Var::Path) if at == At::Authority => {
                    out.push_str(&encode_path(ctx.uri.path()));
                    at = At::Rest;
                }
                Part::Var(v) => {
                    if let Some(value) = v.value(ctx).filter(|v| !v.is_empty()) {
                        match at {
                            At::Authority => out.push_str(&encode_authority(&value)),
                            _ => out.push_str(&encode_path(&value)),
                        }
                    }
                }
            }
        }
        out
    }
}

/// Percent-encodes all but what a host and port are made of (letters,
/// digits, `-`, `.`, `:` and the brackets of an IPv6 address).
pub(crate) fn encode_authority(value: &str) -> Cow<'_, str> {
    percent_encode(value, |b| {
        b.is_ascii_alphanumeric() || b"-.:[]".contains(&b)
    })
}

/// `value` with every byte `keep` refuses percent-encoded.
fn percent_encode(value: &str, keep: impl Fn(u8) -> bool) -> Cow<'_, str> {
    if value.bytes().all(&keep) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for b in value.bytes() {
        if keep(b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    Cow::Owned(out)
}

impl std::fmt::Display for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for Template {
    type Err = BuildError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

// === impl Var ===

impl Var {
    fn parse(name: &str) -> Result<Self, String> {
        let sub = |prefix: &str| -> Result<Option<String>, String> {
            match name.strip_prefix(prefix) {
                None => Ok(None),
                Some("") => Err(format!("`{{{prefix}}}` needs a name after the dot")),
                Some(rest) => Ok(Some(rest.to_owned())),
            }
        };
        if let Some(n) = sub("params.")? {
            return Ok(Var::Param(n));
        }
        if let Some(n) = sub("identity.")? {
            return Ok(Var::Identity(n));
        }
        if let Some(n) = sub("query.")? {
            return Ok(Var::Query(n));
        }
        if let Some(n) = sub("header.")? {
            return HeaderName::from_bytes(n.as_bytes())
                .map(Var::Header)
                .map_err(|_| format!("`{n}` is not a header name"));
        }
        Ok(match name {
            "client.ip" => Var::ClientIp,
            "client.peer" => Var::ClientPeer,
            "request_id" => Var::RequestId,
            "route" => Var::Route,
            "method" => Var::Method,
            "path" => Var::Path,
            "host" => Var::Host,
            "" => return Err("empty variable `{}`".to_owned()),
            other => return Err(format!("unknown variable `{{{other}}}`")),
        })
    }

    fn value<'a>(&self, ctx: &Ctx<'a>) -> Option<Cow<'a, str>> {
        let ext = ctx.extensions;
        match self {
            Var::Param(n) => ext
                .get::<RouteMatch>()
                .and_then(|m| m.param(n))
                .map(Cow::Borrowed),
            Var::Identity(f) => ext
                .get::<Identity>()
                .and_then(|i| i.field(f))
                .map(Cow::Owned),
            Var::ClientIp => ext
                .get::<ClientAddr>()
                .map(|a| Cow::Owned(a.client.to_string())),
            Var::ClientPeer => ext
                .get::<ClientAddr>()
                .map(|a| Cow::Owned(a.peer.to_string())),
            Var::RequestId => ext.get::<RequestId>().map(|r| Cow::Borrowed(r.as_str())),
            Var::Header(h) => ctx
                .headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(Cow::Borrowed),
            Var::Route => ext.get::<RouteMatch>().map(|m| Cow::Borrowed(&*m.route)),
            Var::Method => Some(Cow::Borrowed(ctx.method.as_str())),
            Var::Path => Some(Cow::Borrowed(ctx.uri.path())),
            Var::Host => ctx.host().map(Cow::Borrowed),
            Var::Query(n) => ctx.uri.query().and_then(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == n.as_str())
                    .map(|(_, v)| Cow::Owned(v.into_owned()))
            }),
        }
    }
}

// === impl Ctx ===

impl<'a> Ctx<'a> {
    pub(crate) fn of<B>(req: &'a Request<B>) -> Self {
        Self {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            extensions: req.extensions(),
        }
    }

    /// `Host`, or the URI authority (HTTP/2 `:authority`).
    pub(crate) fn host(&self) -> Option<&'a str> {
        self.headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| self.uri.authority().map(|a| a.as_str()))
    }
}

/// Leaves a value as it is.
pub(crate) fn verbatim(value: &str) -> Cow<'_, str> {
    Cow::Borrowed(value)
}

/// Percent-encodes what may not appear in a URI path: everything but
/// unreserved characters, sub-delimiters, `:`, `@` and `/`.
pub(crate) fn encode_path(value: &str) -> Cow<'_, str> {
    percent_encode(value, |b| {
        b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b)
    })
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use super::*;

    fn request() -> Request<()> {
        let mut req = Request::post("/orders/7?page=2&q=a%20b&empty=")
            .header("host", "api.example.com:8443")
            .header("x-tenant", "acme")
            .body(())
            .unwrap();
        let mut id = Identity {
            subject: Some("alice".into()),
            ..Default::default()
        };
        id.claims.insert("org".into(), serde_json::json!({"id": 7}));
        let peer: SocketAddr = "10.0.0.1:5555".parse().unwrap();
        let ext = req.extensions_mut();
        ext.insert(id);
        ext.insert(RouteMatch {
            route: "orders".into(),
            params: vec![("id".into(), "7".into())],
        });
        ext.insert(ClientAddr {
            peer,
            client: "203.0.113.9".parse().unwrap(),
            tls: false,
            https: false,
            trusted_peer: false,
        });
        ext.insert(RequestId(Arc::from("req-1")));
        req
    }

    fn render(t: &str) -> Option<String> {
        Template::parse(t).unwrap().render(&request())
    }

    #[test]
    fn every_variable() {
        assert_eq!(
            render(
                "{params.id}|{identity.sub}|{identity.org.id}|{client.ip}|{client.peer}|{request_id}|\
                 {header.X-Tenant}|{route}|{method}|{path}|{host}|{query.q}|{query.page}"
            )
            .as_deref(),
            Some(
                "7|alice|7|203.0.113.9|10.0.0.1:5555|req-1|acme|orders|POST|/orders/7|\
                 api.example.com:8443|a b|2"
            )
        );
    }

    #[test]
    fn escapes_and_spaces() {
        assert_eq!(render("{{x}} { route }}}").as_deref(), Some("{x} orders}"));
        assert_eq!(render("plain").as_deref(), Some("plain"));
        assert_eq!(render("").as_deref(), Some(""));
        assert!(Template::parse("a{{b}}").unwrap().is_literal());
        assert!(!Template::parse("{path}").unwrap().is_literal());
    }

    #[test]
    fn missing_or_empty_variables() {
        assert_eq!(render("x {params.nope}"), None);
        assert_eq!(render("{query.empty}"), None);
        assert_eq!(render("{query.absent}"), None);
        assert_eq!(render("{header.x-absent}"), None);
        assert_eq!(render("{identity.nope}"), None);
        let bare = Request::get("/").body(()).unwrap();
        let t = Template::parse("{route}{request_id}{client.ip}").unwrap();
        assert_eq!(t.render(&bare), None);
        // lossy rendering drops the missing ones
        assert_eq!(
            Template::parse("/v2/{params.nope}/x")
                .unwrap()
                .render_ctx(&Ctx::of(&bare), verbatim, true)
                .as_deref(),
            Some("/v2//x")
        );
    }

    #[test]
    fn parse_errors() {
        for bad in [
            "{",
            "}",
            "a{b",
            "{nope}",
            "{}",
            "{params.}",
            "{identity.}",
            "{query.}",
            "{header.}",
            "{header.bad name}",
            "{a{b}}",
        ] {
            let e = Template::parse(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{bad:?}: {e}");
        }
    }

    #[test]
    fn host_from_authority() {
        let req = Request::get("https://h2.example.com/x").body(()).unwrap();
        assert_eq!(
            Template::parse("{host}").unwrap().render(&req).as_deref(),
            Some("h2.example.com")
        );
    }

    #[test]
    fn path_encoding() {
        assert_eq!(encode_path("a/b c?d#é"), "a/b%20c%3Fd%23%C3%A9");
        assert_eq!(encode_path("plain-1.2_~"), "plain-1.2_~");
        assert_eq!(encode_path("a\\b"), "a%5Cb");
    }
}
