//! The primary cache key (RFC 9111 §2): which stored responses a request
//! may be answered from, before `Vary` selects among them.
//!
//! The key is a printable string, so that an operator can list keys and
//! purge one:
//!
//! ```text
//! {namespace}|GET|{scheme}://{host}{path}[?{query}][|fh:{hosts}][|fw:{hosts}][|fp:{protos}][|fx:{name}={values}]...[|h:{name}={value}]...[|id:{method}:{issuer}:{identity}]
//! ```
//!
//! - `GET` is the method class: `HEAD` shares the entries of `GET`.
//! - `scheme` is the one the client asked for (see [`request_is_https`]).
//! - `host` is the lowercased authority of the request (URI authority, else
//!   `Host`), `path` the path as received.
//! - `query` per [`KeyQuery`]: parameters sorted by name (so `?a=1&b=2`
//!   and `?b=2&a=1` share an entry; the values of a repeated name keep
//!   their order), optionally filtered; left out when empty. With
//!   [`KeyQuery::Only`], a request with a left-out pair that holds a `;`
//!   has no key (see [`NoKey::AmbiguousQuery`]).
//! - `fh:` and `fw:` the hosts of `X-Forwarded-Host` and of `Forwarded`'s
//!   `host=`, when the peer is a trusted proxy (or unknown): see
//!   [`forwarded_hosts`].
//! - `fp:` the `proto=` of every `Forwarded` element, and one `fx:`
//!   member per other forwarding header an upstream builds URLs from or
//!   picks the resource by (`X-Forwarded-Proto` and the [`URL_CLAIMS`]:
//!   `X-Forwarded-Prefix`, `X-Original-URL`, ...), on the same terms:
//!   see [`push_url_claims`].
//! - one `h:` member per configured key header, in configuration order;
//!   `h:{name}` without `=` means the request lacked the header.
//! - `id:` the authenticating method, the issuer and the configured
//!   `Identity` field.
//!
//! Header values and the identity are percent-encoded (`%`, `|`, `#`,
//! space, controls and non-ASCII bytes), so no value can forge another
//! member or a variant's key (`#` separates it);
//! the path and query are escaped the same way except for `%`, which they
//! already use for their own escaping.
//!
//! A credential never enters a key as it is: the value of a query
//! parameter or key header whose name looks like one
//! ([`looks_secret`]: `api_key`, `access_token`, `authorization`,
//! `x-api-key`, ...) enters as `#` and 32 hex digits of its SHA-256, which
//! keeps two callers' entries apart without showing the key to whoever
//! lists keys or reads logs.

use std::sync::Arc;

use http::header::{FORWARDED, HOST};
use http::{Extensions, HeaderMap, HeaderName, Uri};
use sha2::{Digest, Sha256};
use towergate_core::url_text::looks_secret;
use towergate_core::{ClientAddr, Identity, URL_CLAIMS};

/// Which query parameters are part of the cache key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum KeyQuery {
    /// Every parameter, sorted by name (a repeated name's values in their
    /// order).
    #[default]
    All,
    /// No query at all: `/a?x=1` and `/a?x=2` share one entry.
    None,
    /// Only these parameters (sorted); others are ignored.
    Only(Vec<String>),
}

/// How a layer builds primary keys.
#[derive(Clone, Debug)]
pub(crate) struct KeySpec {
    pub(crate) namespace: Arc<str>,
    pub(crate) query: KeyQuery,
    pub(crate) headers: Vec<HeaderName>,
    pub(crate) identity: Option<String>,
}

/// A primary key with the parts purging filters on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PrimaryKey {
    /// The full key string.
    pub(crate) key: Arc<str>,
    pub(crate) namespace: Arc<str>,
    /// The path as received, for `Purge::Prefix`.
    pub(crate) path: Arc<str>,
}

/// Why a request has no key: it is not cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NoKey {
    /// The route keys by identity and the request has none (or lacks the
    /// field).
    NoIdentity,
    /// With [`KeyQuery::Only`], a pair the key leaves out holds a `;`
    /// (`?utm=x;page=999`): an upstream that splits on `;` as well as `&`
    /// reads a listed parameter in it, one that splits on `&` alone does
    /// not, and no key is right for both.
    AmbiguousQuery,
}

// === impl KeySpec ===

impl KeySpec {
    /// The key of a request for `uri`; `https`: whether the client asked
    /// for an `https` URI (see [`request_is_https`]); `extensions`: the
    /// request's, for its [`Identity`] and [`ClientAddr`].
    pub(crate) fn primary(
        &self,
        uri: &Uri,
        headers: &HeaderMap,
        extensions: &Extensions,
        https: bool,
    ) -> Result<PrimaryKey, NoKey> {
        let host = request_host(uri, headers);
        self.build(https, &host, uri.path(), uri.query(), headers, extensions)
    }

    /// The key a request would have for another URI on `host`: the
    /// invalidation of `Location`/`Content-Location` targets (§4.4).
    pub(crate) fn build(
        &self,
        https: bool,
        host: &str,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Result<PrimaryKey, NoKey> {
        let identity = extensions.get::<Identity>();
        let mut key = String::with_capacity(self.namespace.len() + host.len() + path.len() + 16);
        key.push_str(&self.namespace);
        // The target URI (RFC 9111 §2), scheme included: an upstream may
        // answer an `http` request with a redirect to `https`, which must
        // not be served to `https` clients (a loop).
        key.push_str(if https {
            "|GET|https://"
        } else {
            "|GET|http://"
        });
        push_escaped(&mut key, host, false);
        push_escaped(&mut key, path, false);
        let query = self.query(query.unwrap_or(""))?;
        if !query.is_empty() {
            key.push('?');
            push_escaped(&mut key, &query, false);
        }
        // A trusted proxy's `X-Forwarded-Host` and `Forwarded: host=` reach
        // the upstream as sent, and upstreams build links and redirects
        // from them: a response for another forwarded host is another
        // response. So do its scheme, port, prefix and original-URL
        // headers, and some upstreams serve another path by the latter.
        // An untrusted peer's are replaced or removed by the proxy (the
        // `Host` and scheme are already in the key): leaving them out
        // keeps clients from splitting the cache with them. Without a
        // `ClientAddr` (embedded use) nothing stripped them.
        let trusted = extensions
            .get::<ClientAddr>()
            .is_none_or(|c| c.trusted_peer);
        if trusted {
            let (fh, fw) = forwarded_hosts(headers);
            let fp = forwarded_param(headers, b"proto", false);
            for (member, values) in [("|fh:", fh), ("|fw:", fw), ("|fp:", fp)] {
                if let Some(values) = values {
                    key.push_str(member);
                    key.push_str(&values);
                }
            }
            push_url_claims(&mut key, headers);
        }
        for name in &self.headers {
            key.push_str("|h:");
            key.push_str(name.as_str());
            if let Some(value) = combined_value(headers, name) {
                key.push('=');
                if looks_secret(name.as_str()) {
                    // Keys are listed by the admin API and logged: a
                    // credential (`x-api-key`, `authorization`) enters as a
                    // digest, which keeps entries apart all the same.
                    push_digest(&mut key, &value);
                } else {
                    push_escaped(&mut key, &value, true);
                }
            }
        }
        if let Some(field) = &self.identity {
            let value = identity
                .and_then(|id| id.field(field))
                .ok_or(NoKey::NoIdentity)?;
            // Which method and issuer vouched for it too: `sub` 42 of one
            // identity provider is not `sub` 42 of another, nor the basic
            // user `42`.
            key.push_str("|id:");
            push_escaped(
                &mut key,
                identity.and_then(|id| id.method).unwrap_or(""),
                true,
            );
            key.push(':');
            push_escaped(
                &mut key,
                identity.and_then(|id| id.issuer.as_deref()).unwrap_or(""),
                true,
            );
            key.push(':');
            push_escaped(&mut key, &value, true);
        }
        Ok(PrimaryKey {
            key: key.into(),
            namespace: self.namespace.clone(),
            path: path.into(),
        })
    }

    /// The query as it enters the key: filtered and sorted.
    pub(crate) fn query(&self, query: &str) -> Result<String, NoKey> {
        if matches!(self.query, KeyQuery::None) {
            return Ok(String::new());
        }
        // (name, the pair as sent): `flag` and `flag=` stay apart, as an
        // upstream may tell them apart.
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let name = pair.split_once('=').map_or(pair, |(name, _)| name);
            let kept = match &self.query {
                // As upstreams read names: decoded (`pa%67e` is `page`),
                // and some (ASP.NET) regardless of case. Matching more
                // spellings only puts more in the key; missing one would
                // let `?pa%67e=999` share the key of a request without it.
                KeyQuery::Only(names) => is_listed(names, name),
                _ => true,
            };
            if kept {
                // A `;` in a kept pair is in the key as sent: whichever
                // way the upstream splits, no other request shares it.
                pairs.push((name, pair));
            } else if pair.contains(';') {
                // Some upstreams (older Java and Python frameworks) split
                // on `;` too: to them `utm=x;page=999` holds `page`, and a
                // key without it would be that of a request for the
                // first page. Splitting on `;` here is no cure: to an
                // upstream splitting on `&` alone, `page=2;x` is not page
                // 2, and its answer (a 404) would be stored as page 2's.
                // Such a request is not cached at all.
                return Err(NoKey::AmbiguousQuery);
            }
        }
        // By name only, and stable: the values of a repeated name keep
        // their order (`?sort=price&sort=name` is not `?sort=name&sort=price`
        // to an upstream reading them in order).
        pairs.sort_by(|a, b| a.0.cmp(b.0));
        let mut out = String::with_capacity(query.len());
        for (i, (name, pair)) in pairs.iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                // A credential in the query (`?api_key=...`): a digest, as
                // for headers.
                // By the name as upstreams read it: `api%5Fkey` is a key.
                Some((_, value)) if !value.is_empty() && looks_secret(&decode_name(name)) => {
                    out.push_str(name);
                    out.push('=');
                    push_digest(&mut out, value);
                }
                _ => out.push_str(pair),
            }
        }
        Ok(out)
    }
}

// === impl KeyQuery ===

impl KeyQuery {
    /// Whether the key leaves out the query parameter `name` (as sent).
    pub(crate) fn leaves_out(&self, name: &str) -> bool {
        match self {
            KeyQuery::All => false,
            KeyQuery::None => true,
            KeyQuery::Only(names) => !is_listed(names, name),
        }
    }
}

/// Whether the query parameter `name` (as sent) is one of `names`.
fn is_listed(names: &[String], name: &str) -> bool {
    let decoded = decode_name(name);
    names.iter().any(|n| n.eq_ignore_ascii_case(&decoded))
}

/// The key's view of the forwarded host an upstream may build links from:
/// `X-Forwarded-Host` (all its values, trimmed and lowercased: upstreams
/// differ on which one they read, Rails the last, most others the first)
/// and the `host=` of every `Forwarded` element, in order (an element
/// without one is an empty place, so that which element has it counts).
/// Each `None` when the request has no such host. Values are escaped like
/// header values, and `,` too, so that no value can pose as two.
pub(crate) fn forwarded_hosts(headers: &HeaderMap) -> (Option<String>, Option<String>) {
    let mut fh: Option<String> = None;
    for line in headers.get_all("x-forwarded-host") {
        for value in line.as_bytes().split(|&b| b == b',') {
            let first = fh.is_none();
            let out = fh.get_or_insert_with(String::new);
            if !first {
                out.push(',');
            }
            push_host(out, value);
        }
    }
    (fh, forwarded_param(headers, b"host", true))
}

/// The `{param}=` of every `Forwarded` element, in order (an element
/// without one is an empty place, so that which element has it counts),
/// lowercased when `lowercase` (hosts; a scheme is kept as sent, as an
/// upstream may compare it as sent); `None` when no element has one.
fn forwarded_param(headers: &HeaderMap, param: &[u8], lowercase: bool) -> Option<String> {
    let mut places: Vec<Option<Vec<u8>>> = Vec::new();
    for line in headers.get_all(FORWARDED) {
        for element in split_unquoted(line.as_bytes(), b',') {
            let value = split_unquoted(element, b';').find_map(|pair| {
                let (name, value) = pair.split_at(pair.iter().position(|&b| b == b'=')?);
                name.trim_ascii()
                    .eq_ignore_ascii_case(param)
                    .then(|| unquote(&value[1..]))
            });
            places.push(value);
        }
    }
    places.iter().any(Option::is_some).then(|| {
        let mut out = String::new();
        for (i, value) in places.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            if let Some(value) = value {
                // `=` marks a place with a value: `host=""` is not no host.
                out.push('=');
                if lowercase {
                    push_host(&mut out, value);
                } else {
                    push_list_item(&mut out, value.trim_ascii());
                }
            }
        }
        out
    })
}

/// The forwarding headers other than `X-Forwarded-Host` and `Forwarded`
/// that reach the upstream as a trusted proxy sent them, and that the
/// upstream builds URLs from or picks the resource by: `X-Forwarded-Proto`
/// (all of it: the key's scheme holds only whether its first value is
/// `https`) and the [`URL_CLAIMS`] (`X-Forwarded-Prefix`, `-Port`,
/// `-Ssl`, `-Scheme`, `Front-End-Https`, `X-Url-Scheme`,
/// `X-Original-URL`, `X-Rewrite-URL`), in that order; also in an
/// underscore spelling (`x_original_url`, and `x_forwarded_host`), which
/// CGI-style upstreams read as the same `HTTP_X_ORIGINAL_URL`.
const KEYED_FORWARDING: [&[&str]; 3] = [&["x-forwarded-proto"], &URL_CLAIMS, &["x-forwarded-host"]];

/// Appends one `|fx:{name}={values}` member per [`KEYED_FORWARDING`]
/// header the request has, in that list's order (spellings of one name by
/// their text): the name as sent, then every value as sent, escaped like
/// header values and `,` too, joined with `,`. An `X-Original-URL:
/// /admin` stored under `/public`'s key would serve the admin page to
/// everyone asking for `/public`.
fn push_url_claims(key: &mut String, headers: &HeaderMap) {
    let mut found: Vec<(usize, &HeaderName)> = Vec::new();
    for name in headers.keys() {
        let n = name.as_str();
        let rank = KEYED_FORWARDING
            .iter()
            .flat_map(|list| list.iter())
            .position(|keyed| same_when_dashed(n, keyed));
        // `X-Forwarded-Host` itself is `fh:`.
        if let Some(rank) = rank
            && n != "x-forwarded-host"
        {
            found.push((rank, name));
        }
    }
    found.sort_unstable_by(|a, b| (a.0, a.1.as_str()).cmp(&(b.0, b.1.as_str())));
    for (_, name) in found {
        key.push_str("|fx:");
        key.push_str(name.as_str());
        key.push('=');
        for (i, value) in headers.get_all(name).iter().enumerate() {
            if i > 0 {
                key.push(',');
            }
            push_list_item(key, value.as_bytes());
        }
    }
}

/// Whether `name` is `dashed` in some spelling with `_` for `-`.
fn same_when_dashed(name: &str, dashed: &str) -> bool {
    name.len() == dashed.len()
        && name
            .bytes()
            .zip(dashed.bytes())
            .all(|(a, b)| a == b || (a == b'_' && b == b'-'))
}

/// A forwarded host as it enters the key: trimmed, lowercased, escaped
/// like a header value, `,` too.
fn push_host(out: &mut String, host: &[u8]) {
    push_list_item(out, &host.trim_ascii().to_ascii_lowercase());
}

/// One value of a list in the key: escaped like a header value, `,` too,
/// so that no value can pose as two. Bytes, not text: two values that are
/// not UTF-8 stay apart (as text both would hold U+FFFD).
fn push_list_item(out: &mut String, value: &[u8]) {
    for &b in value {
        // `%` is escaped too: `%2C` can only be a comma.
        if b == b',' {
            out.push_str("%2C");
        } else {
            push_escaped_byte(out, b, true);
        }
    }
}

/// `s` split on `sep` outside quoted strings (RFC 9110 §5.6.4, with
/// `\` escapes), as `Forwarded` values are (RFC 7239 §4).
fn split_unquoted(s: &[u8], sep: u8) -> impl Iterator<Item = &[u8]> {
    let mut quoted = false;
    let mut escaped = false;
    s.split(move |&b| {
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if b == sep && !quoted {
            return true;
        }
        false
    })
}

/// A `Forwarded` parameter's value, without its quotes and escapes.
fn unquote(value: &[u8]) -> Vec<u8> {
    let value = value.trim_ascii();
    let Some(inner) = value
        .strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
    else {
        return value.to_vec();
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut bytes = inner.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' => out.extend(bytes.next()),
            _ => out.push(b),
        }
    }
    out
}

/// The request's authority, lowercased: the URI's (HTTP/2, absolute form),
/// else `Host`.
pub(crate) fn request_host(uri: &Uri, headers: &HeaderMap) -> String {
    if let Some(authority) = uri.authority() {
        // Host and port: userinfo names no other resource.
        let a = authority.as_str();
        return a
            .rsplit_once('@')
            .map_or(a, |(_, h)| h)
            .to_ascii_lowercase();
    }
    headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .map(|h| h.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// All field lines of `name`, joined with `,`; `None` when absent.
pub(crate) fn combined_value(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let parts: Vec<String> = values
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned())
        .collect();
    Some(parts.join(","))
}

/// `#` and the first 128 bits of `value`'s SHA-256, in hex: tells values
/// apart without showing them.
fn push_digest(out: &mut String, value: &str) {
    let digest = Sha256::digest(value.as_bytes());
    out.push('#');
    for b in &digest[..16] {
        out.push(hex(b >> 4));
        out.push(hex(b & 0xf));
    }
}

/// Whether a request asked for an `https` URI: as the listener recorded it
/// ([`ClientAddr::https`](towergate_core::ClientAddr)), else as its URI
/// says.
pub(crate) fn request_is_https(uri: &Uri, extensions: &http::Extensions) -> bool {
    match extensions.get::<towergate_core::ClientAddr>() {
        Some(c) => c.https,
        None => uri.scheme_str() == Some("https"),
    }
}

/// A query parameter's name, percent-decoded (`+` is a space), as an
/// upstream's framework reads it.
pub(crate) fn decode_name(name: &str) -> std::borrow::Cow<'_, str> {
    if !name.bytes().any(|b| b == b'%' || b == b'+') {
        return std::borrow::Cow::Borrowed(name);
    }
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let hex = |c: u8| char::from(c).to_digit(16);
        match (
            b,
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    std::borrow::Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// Percent-encodes `|`, `#` (which sets a variant's part of a key apart),
/// space, controls and non-ASCII (and `%` when `percent`).
pub(crate) fn push_escaped(out: &mut String, s: &str, percent: bool) {
    for b in s.bytes() {
        push_escaped_byte(out, b, percent);
    }
}

fn push_escaped_byte(out: &mut String, b: u8, percent: bool) {
    let escape = b == b'|' || b == b'#' || b <= b' ' || b >= 0x7f || (percent && b == b'%');
    if escape {
        out.push('%');
        out.push(hex(b >> 4));
        out.push(hex(b & 0xf));
    } else {
        out.push(char::from(b));
    }
}

fn hex(n: u8) -> char {
    char::from(if n < 10 { b'0' + n } else { b'A' + n - 10 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn spec(query: KeyQuery) -> KeySpec {
        KeySpec {
            namespace: "users".into(),
            query,
            headers: vec![],
            identity: None,
        }
    }

    fn host_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("API.example.com"));
        h
    }

    fn key(spec: &KeySpec, uri: &str) -> String {
        let uri: Uri = uri.parse().unwrap();
        spec.primary(&uri, &host_headers(), &Extensions::new(), false)
            .unwrap()
            .key
            .to_string()
    }

    #[test]
    fn format() {
        let s = spec(KeyQuery::All);
        assert_eq!(
            key(&s, "/a/b?x=1"),
            "users|GET|http://api.example.com/a/b?x=1"
        );
        assert_eq!(key(&s, "/a/b"), "users|GET|http://api.example.com/a/b");
        assert_eq!(key(&s, "/a/b?"), "users|GET|http://api.example.com/a/b");
        assert_eq!(
            key(&s, "http://Other:8080/p"),
            "users|GET|http://other:8080/p",
            "URI authority wins over Host"
        );
    }

    #[test]
    fn query_is_sorted() {
        let s = spec(KeyQuery::All);
        assert_eq!(key(&s, "/a?a=1&b=2"), key(&s, "/a?b=2&a=1"));
        assert_eq!(
            key(&s, "/a?b=2&&a=1"),
            "users|GET|http://api.example.com/a?a=1&b=2"
        );
        assert_ne!(key(&s, "/a?a=1"), key(&s, "/a?a=2"));
        // An upstream may tell `a` from `a=`, and reads a repeated name's
        // values in order: so does the key.
        assert_ne!(key(&s, "/a?a"), key(&s, "/a?a="));
        assert_ne!(
            key(&s, "/a?sort=price&sort=name"),
            key(&s, "/a?sort=name&sort=price")
        );
        assert_eq!(
            key(&s, "/a?sort=price&b=1&sort=name"),
            "users|GET|http://api.example.com/a?b=1&sort=price&sort=name"
        );
    }

    #[test]
    fn scheme_encoded_names_and_hash_signs() {
        let s = spec(KeyQuery::Only(vec!["page".into(), "page[number]".into()]));
        let uri: Uri = "/items?page=2".parse().unwrap();
        let http = s
            .primary(&uri, &host_headers(), &Extensions::new(), false)
            .unwrap();
        let https = s
            .primary(&uri, &host_headers(), &Extensions::new(), true)
            .unwrap();
        assert_ne!(http, https);
        assert!(
            https.key.contains("|GET|https://api.example.com/"),
            "{}",
            https.key
        );
        // A listed name spelt another way still enters the key: an upstream
        // reads `pa%67e` (and, in some frameworks, `PAGE`) as `page`.
        assert_ne!(key(&s, "/items?pa%67e=999"), key(&s, "/items"));
        assert_ne!(key(&s, "/items?PAGE=999"), key(&s, "/items"));
        assert_ne!(key(&s, "/items?page%5Bnumber%5D=2"), key(&s, "/items"));
        assert_eq!(key(&s, "/items?other=1"), key(&s, "/items"));
        // `#` sets a variant's part apart: escaped in what callers send.
        let s = KeySpec {
            headers: vec![HeaderName::from_static("x-tenant")],
            ..spec(KeyQuery::All)
        };
        let mut h = host_headers();
        h.insert("x-tenant", HeaderValue::from_static("a#b"));
        let k = s
            .primary(&"/p".parse().unwrap(), &h, &Extensions::new(), false)
            .unwrap();
        assert!(!k.key.contains('#'), "{}", k.key);
    }

    #[test]
    fn credentials_enter_as_digests() {
        let s = spec(KeyQuery::All);
        let k = key(&s, "/items?page=2&api_key=LIVEKEY&Access_Token=abc");
        assert!(!k.contains("LIVEKEY") && !k.contains("abc"), "{k}");
        assert!(k.contains("page=2"), "{k}");
        assert!(k.contains("api_key=%23"), "{k}");
        assert_ne!(k, key(&s, "/items?page=2&api_key=OTHER&Access_Token=abc"));
        assert_eq!(k, key(&s, "/items?Access_Token=abc&page=2&api_key=LIVEKEY"));
        // Spelt with an escape, still a credential.
        let k = key(&s, "/items?api%5Fkey=LIVEKEY");
        assert!(!k.contains("LIVEKEY"), "{k}");
        // An empty value stays as sent.
        assert!(key(&s, "/items?token=").ends_with("?token="));

        let s = KeySpec {
            headers: vec![
                HeaderName::from_static("x-api-key"),
                HeaderName::from_static("x-tenant"),
            ],
            ..spec(KeyQuery::All)
        };
        let mut h = host_headers();
        h.insert("x-api-key", HeaderValue::from_static("HEADERKEY"));
        h.insert("x-tenant", HeaderValue::from_static("acme"));
        let k = s
            .primary(&"/p".parse().unwrap(), &h, &Extensions::new(), false)
            .unwrap()
            .key
            .to_string();
        assert!(!k.contains("HEADERKEY"), "{k}");
        assert!(
            k.contains("|h:x-api-key=#") && k.contains("|h:x-tenant=acme"),
            "{k}"
        );
    }

    #[test]
    fn query_none_and_only() {
        let s = spec(KeyQuery::None);
        assert_eq!(key(&s, "/a?x=1"), key(&s, "/a?x=2"));
        assert_eq!(key(&s, "/a?x=1"), "users|GET|http://api.example.com/a");
        let s = spec(KeyQuery::Only(vec!["page".into(), "size".into()]));
        assert_eq!(
            key(&s, "/a?utm=x&size=10&page=2"),
            "users|GET|http://api.example.com/a?page=2&size=10"
        );
        assert_eq!(key(&s, "/a?utm=x"), key(&s, "/a?utm=y"));
    }

    #[test]
    fn key_headers_and_escaping() {
        let mut s = spec(KeyQuery::All);
        s.headers = vec![HeaderName::from_static("x-tenant")];
        let uri: Uri = "/a".parse().unwrap();
        let mut h = host_headers();
        assert_eq!(
            s.primary(&uri, &h, &Extensions::new(), false)
                .unwrap()
                .key
                .as_ref(),
            "users|GET|http://api.example.com/a|h:x-tenant"
        );
        h.insert("x-tenant", HeaderValue::from_static("a b|c%"));
        assert_eq!(
            s.primary(&uri, &h, &Extensions::new(), false)
                .unwrap()
                .key
                .as_ref(),
            "users|GET|http://api.example.com/a|h:x-tenant=a%20b%7Cc%25"
        );
    }

    fn id_ext(id: &Identity) -> Extensions {
        let mut ext = Extensions::new();
        ext.insert(id.clone());
        ext
    }

    fn user(sub: &str) -> Identity {
        Identity {
            subject: Some(sub.into()),
            ..Identity::default()
        }
    }

    #[test]
    fn identity() {
        let mut s = spec(KeyQuery::All);
        s.identity = Some("sub".into());
        let uri: Uri = "/me".parse().unwrap();
        assert_eq!(
            s.primary(&uri, &host_headers(), &Extensions::new(), false),
            Err(NoKey::NoIdentity)
        );
        let alice = user("alice");
        let k = s
            .primary(&uri, &host_headers(), &id_ext(&alice), false)
            .unwrap();
        assert_eq!(
            k.key.as_ref(),
            "users|GET|http://api.example.com/me|id:::alice"
        );
        // The same subject from another issuer or method is another key.
        let mut other = user("alice");
        other.issuer = Some("https://partners.example".into());
        other.method = Some("jwt");
        let k2 = s
            .primary(&uri, &host_headers(), &id_ext(&other), false)
            .unwrap();
        assert_eq!(
            k2.key.as_ref(),
            "users|GET|http://api.example.com/me|id:jwt:https://partners.example:alice"
        );
        assert_eq!(k.path.as_ref(), "/me");
        let bob = user("bob");
        assert_ne!(
            s.primary(&uri, &host_headers(), &id_ext(&bob), false)
                .unwrap(),
            k
        );
        // No identity value can forge another member.
        let evil = user("x|id:alice");
        assert_ne!(
            s.primary(&uri, &host_headers(), &id_ext(&evil), false)
                .unwrap(),
            k
        );
    }

    #[test]
    fn semicolons_in_left_out_pairs_leave_no_key() {
        let s = spec(KeyQuery::Only(vec!["page".into()]));
        let k = |uri: &str| {
            let uri: Uri = uri.parse().unwrap();
            s.primary(&uri, &host_headers(), &Extensions::new(), false)
        };
        // To an upstream splitting on `;`, this is page 999.
        assert_eq!(k("/items/?utm=x;page=999"), Err(NoKey::AmbiguousQuery));
        assert_eq!(k("/items/?utm;page=999"), Err(NoKey::AmbiguousQuery));
        // A kept pair enters whole: no other request shares its key.
        let kept = k("/items/?page=2;utm=x").unwrap();
        assert_ne!(kept, k("/items/?page=2").unwrap());
        assert!(kept.key.ends_with("?page=2;utm=x"), "{}", kept.key);
        assert!(k("/items/?utm=x&page=2").is_ok());
        // The whole query is in the key, or none of it matters.
        for q in [KeyQuery::All, KeyQuery::None] {
            let s = spec(q);
            let uri: Uri = "/items/?utm=x;page=999".parse().unwrap();
            assert!(
                s.primary(&uri, &host_headers(), &Extensions::new(), false)
                    .is_ok()
            );
        }
    }

    /// The extensions of a request from `ip`, where 10.0.0.0/8 is trusted.
    fn peer_from(ip: &str) -> Extensions {
        let trusted = towergate_core::TrustedProxies::new(["10.0.0.0/8".parse().unwrap()]);
        let mut ext = Extensions::new();
        let addr = format!("{ip}:5000").parse().unwrap();
        ext.insert(ClientAddr::resolve(
            addr,
            false,
            &HeaderMap::new(),
            &trusted,
        ));
        ext
    }

    #[test]
    fn forwarded_hosts_enter_the_key_unless_the_peer_is_untrusted() {
        let s = spec(KeyQuery::All);
        let uri: Uri = "/catalog".parse().unwrap();
        let peer = peer_from;
        let key = |extra: &[(&'static str, &'static str)], ext: &Extensions| {
            let mut h = host_headers();
            for (k, v) in extra {
                h.append(*k, HeaderValue::from_static(v));
            }
            s.primary(&uri, &h, ext, false).unwrap().key.to_string()
        };
        let plain = key(&[], &Extensions::new());
        let evil = [("x-forwarded-host", " Evil.example ")];
        // From a trusted proxy, and embedded (nothing stripped it).
        for ext in [peer("10.0.0.1"), Extensions::new()] {
            assert_eq!(
                key(&evil, &ext),
                "users|GET|http://api.example.com/catalog|fh:evil.example"
            );
            assert_ne!(
                key(&evil, &ext),
                key(&[("x-forwarded-host", "good.example")], &ext)
            );
        }
        // From anyone else the proxy replaces it: no key of its own.
        assert_eq!(key(&evil, &peer("192.0.2.1")), plain);
        assert_eq!(
            key(
                &[("forwarded", "for=1.2.3.4;host=evil.example")],
                &peer("192.0.2.1")
            ),
            plain
        );

        let trusted = peer("10.0.0.1");
        // Every value: upstreams differ on which one they read.
        assert_ne!(
            key(&[("x-forwarded-host", "a.example, evil.example")], &trusted),
            key(&[("x-forwarded-host", "a.example")], &trusted)
        );
        // No value poses as another member or as two.
        assert!(key(&[("x-forwarded-host", "a|h:x b")], &trusted).ends_with("|fh:a%7Ch:x%20b"));
        // `Forwarded`: the host of each element, in its place (and its
        // proto, in `fp:`).
        assert_eq!(
            key(
                &[("forwarded", "for=1.2.3.4;Host=\"Evil.example\";proto=https")],
                &trusted
            ),
            "users|GET|http://api.example.com/catalog|fw:=evil.example|fp:=https"
        );
        assert_eq!(key(&[("forwarded", "for=1.2.3.4")], &trusted), plain);
        assert_ne!(
            key(&[("forwarded", "for=1.2.3.4, host=a")], &trusted),
            key(&[("forwarded", "host=a, for=1.2.3.4")], &trusted)
        );
        assert_ne!(
            key(&[("forwarded", "host=\"a,b\"")], &trusted),
            key(&[("forwarded", "host=a, host=b")], &trusted)
        );
        assert_ne!(
            key(&[("forwarded", "for=\"x;host=a\";host=b")], &trusted),
            key(&[("forwarded", "host=a")], &trusted)
        );
        assert!(key(&[("forwarded", "for=\"x;host=a\";host=b")], &trusted).ends_with("|fw:=b"));
    }

    #[test]
    fn url_claims_enter_the_key_unless_the_peer_is_untrusted() {
        let s = spec(KeyQuery::All);
        let uri: Uri = "/public".parse().unwrap();
        let peer = peer_from;
        let key = |extra: &[(&'static str, &'static [u8])], ext: &Extensions| {
            let mut h = host_headers();
            for (k, v) in extra {
                h.append(*k, HeaderValue::from_bytes(v).unwrap());
            }
            s.primary(&uri, &h, ext, false).unwrap().key.to_string()
        };
        let plain = key(&[], &Extensions::new());
        let admin: &[(&str, &[u8])] = &[("x-original-url", b"/admin/report")];
        for ext in [peer("10.0.0.1"), Extensions::new()] {
            assert_eq!(
                key(admin, &ext),
                "users|GET|http://api.example.com/public|fx:x-original-url=/admin/report"
            );
        }
        // From anyone else the proxy removes them: no key of their own.
        let untrusted = peer("192.0.2.1");
        assert_eq!(key(admin, &untrusted), plain);
        assert_eq!(
            key(
                &[
                    ("x-forwarded-prefix", b"/evil"),
                    ("x-forwarded-proto", b"https, http"),
                    ("forwarded", b"proto=https"),
                    ("x_original_url", b"/admin")
                ],
                &untrusted
            ),
            plain
        );

        let trusted = peer("10.0.0.1");
        // Every claim, and the underscore spellings, in one fixed order
        // whatever the order of the request's lines.
        let all: &[(&str, &[u8])] = &[
            ("x-rewrite-url", b"/r"),
            ("x_original_url", b"/u"),
            ("x-original-url", b"/o"),
            ("x-forwarded-prefix", b"/api"),
            ("x-forwarded-port", b"8443"),
            ("x-forwarded-ssl", b"on"),
            ("front-end-https", b"on"),
            ("x-forwarded-scheme", b"https"),
            ("x-url-scheme", b"https"),
            ("x-forwarded-proto", b"HTTPS"),
            ("x_forwarded_host", b"evil.example"),
        ];
        let mut reversed = all.to_vec();
        reversed.reverse();
        assert_eq!(
            key(all, &trusted),
            "users|GET|http://api.example.com/public|fx:x-forwarded-proto=HTTPS\
             |fx:x-forwarded-port=8443|fx:x-forwarded-prefix=/api|fx:x-forwarded-ssl=on\
             |fx:front-end-https=on|fx:x-forwarded-scheme=https|fx:x-url-scheme=https\
             |fx:x-original-url=/o|fx:x_original_url=/u|fx:x-rewrite-url=/r\
             |fx:x_forwarded_host=evil.example"
        );
        assert_eq!(key(&reversed, &trusted), key(all, &trusted));
        // Each header's values, lines included, as sent.
        assert_ne!(
            key(&[("x-forwarded-proto", b"https, http")], &trusted),
            key(&[("x-forwarded-proto", b"https")], &trusted)
        );
        assert_ne!(
            key(&[("x-forwarded-prefix", b"/a,/b")], &trusted),
            key(
                &[("x-forwarded-prefix", b"/a"), ("x-forwarded-prefix", b"/b")],
                &trusted
            )
        );
        // No value poses as another member, nor two non-UTF-8 values as one.
        assert!(
            key(&[("x-original-url", b"/a|fx:x")], &trusted)
                .ends_with("|fx:x-original-url=/a%7Cfx:x")
        );
        assert_ne!(
            key(&[("x-original-url", b"/a\xff")], &trusted),
            key(&[("x-original-url", b"/a\xfe")], &trusted)
        );
        // `Forwarded`: the proto of each element, in its place, as sent.
        assert_eq!(
            key(
                &[("forwarded", b"for=1.2.3.4;proto=HTTP, for=10.0.0.1")],
                &trusted
            ),
            "users|GET|http://api.example.com/public|fp:=HTTP,"
        );
        assert_ne!(
            key(&[("forwarded", b"for=1.2.3.4, proto=http")], &trusted),
            key(&[("forwarded", b"proto=http, for=1.2.3.4")], &trusted)
        );
        assert_eq!(key(&[("forwarded", b"for=1.2.3.4")], &trusted), plain);
    }
}
