//! The pure part of forwarding: which headers go upstream and which come
//! back, and how the forwarding headers are written. No tower, no I/O.

use std::cell::RefCell;
use std::net::IpAddr;

use bytes::{BufMut, BytesMut};
use http::header::{
    CONNECTION, COOKIE, Entry, FORWARDED, HOST, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE,
    TRANSFER_ENCODING, UPGRADE, VIA,
};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Uri, Version};
use towergate_core::{ClientAddr, TrustedProxies, URL_CLAIMS};

#[cfg(test)]
mod tests;

pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Hop-by-hop headers that are never forwarded as they are (RFC 9110
/// 7.6.1), besides `Connection` itself and the names it lists. Proxy-Auth*
/// are meant for this proxy, not for the next hop.
static HOP_BY_HOP: [HeaderName; 8] = [
    KEEP_ALIVE,
    PROXY_CONNECTION,
    TE,
    TRANSFER_ENCODING,
    UPGRADE,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    // HTTP/2's upgrade settings, for this connection only (RFC 9113 §3.1).
    HTTP2_SETTINGS,
];

/// Whether `name` is `Connection` or in [`HOP_BY_HOP`]: by its text, which
/// the compiler turns into a switch on the length and a comparison or two
/// (comparing with each of the eight names costs several times that).
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "http2-settings"
    )
}

/// What [`strip_hop_by_hop_found`] keeps although it is hop-by-hop.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Keep {
    /// Keep `Upgrade` and answer with `Connection: upgrade`: the message
    /// asks for (or agrees to) a protocol switch the proxy will tunnel.
    pub(crate) upgrade: bool,
    /// Keep `TE: trailers`: the next hop is HTTP/2, where it is the one
    /// allowed value and gRPC needs it.
    pub(crate) te_trailers: bool,
}

/// What the proxy knows about the hop it received a request on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hop<'a> {
    /// The connection the request came on, if the listener recorded it.
    pub(crate) client: Option<&'a ClientAddr>,
    /// Peers whose forwarding headers are believed.
    pub(crate) trusted: &'a TrustedProxies,
    /// The Host the client asked for.
    pub(crate) host: Option<&'a HeaderValue>,
    /// `http` or `https`, when known.
    pub(crate) proto: Option<&'static str>,
}

/// Whether the message asks to switch protocols: `Connection: upgrade` plus
/// an `Upgrade` header.
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

/// The protocols of a request's `Upgrade` (`name[/version]`, RFC 9110
/// §7.8) whose name `allowed` (lowercase) lists, as the `Upgrade` value to
/// offer upstream; `None` when it lists none of them.
pub(crate) fn upgrade_offer(headers: &HeaderMap, allowed: &[String]) -> Option<HeaderValue> {
    let mut offer = String::new();
    for protocol in upgrade_protocols(headers.get_all(UPGRADE).iter()) {
        let name = protocol.split('/').next().unwrap_or_default().trim();
        if allowed.iter().any(|a| a.eq_ignore_ascii_case(name)) {
            if !offer.is_empty() {
                offer.push_str(", ");
            }
            offer.push_str(protocol);
        }
    }
    if offer.is_empty() {
        return None;
    }
    HeaderValue::from_str(&offer).ok()
}

/// Whether a `101`'s `Upgrade` (`chosen`) names one of the protocols
/// `offered`, by name.
pub(crate) fn upgrade_accepts(offered: &HeaderValue, chosen: Option<&HeaderValue>) -> bool {
    let Some(chosen) = chosen else {
        return false;
    };
    let name = |p: &str| p.split('/').next().unwrap_or_default().trim().to_owned();
    let offered: Vec<String> = upgrade_protocols(std::iter::once(offered))
        .map(name)
        .collect();
    // Every protocol the 101 switches to (a list names a stack) must have
    // been offered, and it must name one.
    let mut chosen = upgrade_protocols(std::iter::once(chosen))
        .map(name)
        .peekable();
    chosen.peek().is_some() && chosen.all(|c| offered.iter().any(|o| o.eq_ignore_ascii_case(&c)))
}

/// The protocols of `Upgrade` values, trimmed, empty ones skipped.
fn upgrade_protocols<'a>(
    values: impl Iterator<Item = &'a HeaderValue>,
) -> impl Iterator<Item = &'a str> {
    values
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
}

/// Removes the headers a request's `Connection` field names (its
/// connection options, RFC 9110 §7.6.1), and those names from
/// `Connection`, which keeps only the tokens the proxy reads itself
/// (`upgrade`, `close`, `keep-alive`, `te`, ...).
///
/// Call it where the request arrives, before any layer adds headers: the
/// proxy strips what `Connection` names when the request leaves, and by
/// then a client's `Connection: x-user-id, x-request-id` would name the
/// identity and request-id headers the gateway's layers set, and remove
/// them. The towergate binary calls it for every request it accepts.
///
/// ```
/// use http::HeaderMap;
/// let mut h = HeaderMap::new();
/// h.insert("connection", "x-user-id, Upgrade, host".parse().unwrap());
/// h.insert("x-user-id", "root".parse().unwrap());
/// h.insert("host", "api.example".parse().unwrap());
/// h.insert("upgrade", "websocket".parse().unwrap());
/// towergate_proxy::strip_connection_options(&mut h);
/// assert!(h.get("x-user-id").is_none());
/// assert_eq!(h["connection"], "upgrade");
/// assert_eq!(h["upgrade"], "websocket");
/// assert_eq!(h["host"], "api.example");
/// ```
pub fn strip_connection_options(headers: &mut HeaderMap) {
    // Most requests have none: a walk over a few names (an enum compare
    // each) is cheaper than hashing `connection` to look it up.
    let present = if headers.keys_len() <= 8 {
        headers.keys().any(|k| *k == CONNECTION)
    } else {
        headers.contains_key(CONNECTION)
    };
    if !present {
        return;
    }
    let tokens: Vec<String> = connection_tokens(headers)
        .map(|t| t.to_ascii_lowercase())
        .collect();
    let mut kept: Vec<&str> = Vec::new();
    for token in &tokens {
        let Ok(name) = HeaderName::from_bytes(token.as_bytes()) else {
            continue;
        };
        if is_hop_by_hop(&name) || token == "close" {
            if !kept.contains(&token.as_str()) {
                kept.push(token);
            }
        } else if name != HOST && name != http::header::CONTENT_LENGTH && !is_forwarding(&name) {
            // (The request's host and framing are not the client's to
            // drop: routing and the body read them. Nor are the forwarding
            // headers a trusted proxy in front wrote: a client's
            // `Connection: X-Forwarded-For`, passed on by that proxy, would
            // make the proxy's own address the client's. They are replaced
            // or removed later for any other peer.)
            headers.remove(name);
        }
    }
    headers.remove(CONNECTION);
    if let Ok(v) = HeaderValue::from_str(&kept.join(", "))
        && !kept.is_empty()
    {
        headers.insert(CONNECTION, v);
    }
}

/// Joins an HTTP/2 request's `cookie` fields into one, with `"; "`: HTTP/2
/// lets a client split its cookies over several fields (RFC 9113 §8.2.3),
/// and they must be one before an HTTP/1.1 hop, where a second `Cookie`
/// line is read as a list (`,`) or not at all (RFC 6265 §5.4 allows one).
pub(crate) fn join_cookie_crumbs(headers: &mut HeaderMap) {
    let mut all = headers.get_all(COOKIE).iter();
    if all.next().is_none() || all.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for crumb in headers.get_all(COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(crumb.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(COOKIE, v);
    }
}

/// What one pass over a request's header names found: most requests carry
/// neither kind, and one pass (a switch on each name's text) is cheaper
/// than the removals, each a hash and a probe.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Names {
    /// `Connection` or a fixed hop-by-hop header ([`strip_hop_by_hop_found`]).
    pub(crate) hop_by_hop: bool,
    /// A client-address claim ([`strip_client_claims`]).
    pub(crate) claims: bool,
}

pub(crate) fn scan_names(headers: &HeaderMap) -> Names {
    let mut found = Names::default();
    for name in headers.keys() {
        found.hop_by_hop |= is_hop_by_hop(name);
        found.claims |= is_client_claim(name);
    }
    found
}

/// Removes hop-by-hop headers: `Connection`, every header it names, and the
/// fixed list of RFC 9110 7.6.1 (plus `Proxy-Connection`, `Proxy-Auth*`).
/// Most messages carry none of them: callers first look for one in a pass
/// over the names ([`scan_names`], [`is_hop_by_hop`]), cheaper than the
/// removals here, each a hash and a probe.
pub(crate) fn strip_hop_by_hop_found(headers: &mut HeaderMap, keep: Keep) {
    let listed: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    let keep_upgrade = keep.upgrade && headers.contains_key(UPGRADE);
    let te_trailers = keep.te_trailers
        && headers
            .get_all(TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| {
                let name = t.split(';').next().unwrap_or_default().trim();
                name.eq_ignore_ascii_case("trailers")
            });

    headers.remove(CONNECTION);
    for name in listed.iter().chain(HOP_BY_HOP.iter()) {
        if keep_upgrade && *name == UPGRADE {
            continue;
        }
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if te_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

/// The Host a client asked for: its `Host` header, or the authority of an
/// HTTP/2 request's `:authority` (which the server put in the URI).
pub(crate) fn requested_host(headers: &HeaderMap, uri: &Uri) -> Option<HeaderValue> {
    if let Some(host) = headers.get(HOST) {
        return Some(host.clone());
    }
    // Host and port: userinfo (`u@host`) names no host, and is no header's
    // business upstream.
    uri.authority().and_then(|a| {
        let host = a.as_str().rsplit_once('@').map_or(a.as_str(), |(_, h)| h);
        HeaderValue::from_str(host).ok()
    })
}

/// Writes `X-Forwarded-For`, `Forwarded`, `X-Forwarded-Proto` and
/// `X-Forwarded-Host`.
///
/// A trusted peer's headers are kept and our hop is appended; anyone else's
/// are replaced, since a client can write whatever it likes in them. Without
/// a [`ClientAddr`] the peer is unknown, so nothing incoming is believed and
/// `Forwarded` says `for=unknown` (RFC 7239 6.3).
pub(crate) fn set_forwarding(headers: &mut HeaderMap, hop: &Hop<'_>) {
    let trusted = hop
        .client
        .is_some_and(|c| hop.trusted.contains(c.peer.ip()));
    let peer = hop.client.map(|c| c.peer.ip().to_canonical());
    let proto = hop
        .client
        .map(|c| if c.tls { "https" } else { "http" })
        .or(hop.proto);

    // Room for the four headers at once: one growth of the map at most.
    let _ = headers.try_reserve(4);

    // The peer's address as a header value, for both headers.
    let peer_text = peer.and_then(peer_value);

    // X-Forwarded-For
    match &peer_text {
        Some(ip) => {
            if trusted {
                append_list(headers, X_FORWARDED_FOR, ip.as_bytes());
            } else {
                headers.insert(X_FORWARDED_FOR, ip.clone());
            }
        }
        None => {
            headers.remove(X_FORWARDED_FOR);
        }
    }

    // Forwarded
    let peer = peer.zip(peer_text.as_ref());
    if trusted {
        let element = forwarded_element(peer.map(|(ip, t)| (ip, t.as_bytes())), proto, hop.host);
        append_list(headers, FORWARDED, &element);
    } else {
        match forwarded_value(peer, proto, hop.host) {
            Some(v) => {
                headers.insert(FORWARDED, v);
            }
            None => {
                headers.remove(FORWARDED);
            }
        }
    }

    // X-Forwarded-Proto and -Host describe the first hop: a trusted proxy's
    // values are the original ones, so they win over ours.
    for (name, ours) in [
        (X_FORWARDED_PROTO, proto.map(HeaderValue::from_static)),
        (X_FORWARDED_HOST, hop.host.cloned()),
    ] {
        if trusted && headers.contains_key(&name) {
            continue;
        }
        match ours {
            Some(v) => {
                headers.insert(name, v);
            }
            None => {
                headers.remove(name);
            }
        }
    }
}

/// Whether the `Transfer-Encoding` lines name `chunked` alone.
pub(crate) fn only_chunked(headers: &HeaderMap) -> bool {
    let mut codings = headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|c| !c.is_empty());
    codings
        .next()
        .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
        && codings.next().is_none()
}

/// `Forwarded`, `X-Forwarded-For`/`-Proto`/`-Host` and the
/// [`is_client_claim`] names: what trusted proxies write about the client.
fn is_forwarding(name: &HeaderName) -> bool {
    *name == FORWARDED
        || matches!(
            name.as_str(),
            "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host"
        )
        || is_client_claim(name)
}

/// Whether `name` is a header some proxy sets to tell its upstream about
/// the client, which an upstream may believe: by its text, like
/// [`is_hop_by_hop`]. Underscore spellings count too (`x_real_ip`, and
/// `x_forwarded_for` beside the `x-forwarded-for` the proxy rewrites):
/// CGI-style upstreams read both as `HTTP_X_REAL_IP`.
fn is_client_claim(name: &HeaderName) -> bool {
    let name = name.as_str();
    // Most names are ruled out by their length and last byte, before any
    // comparison (`x-request-id`, `traceparent` on every observed request).
    if !CLAIM_FILTER.may_match(name.as_bytes()) {
        return false;
    }
    if is_claim_name(name) {
        return true;
    }
    name.as_bytes().contains(&b'_') && {
        let dashed = name.replace('_', "-");
        is_claim_name(&dashed) || UNDERSCORED_FORWARDING.contains(&dashed.as_str())
    }
}

/// The client-address claims ([`is_client_claim`]), dashed. The claims of
/// the scheme and the path (`X-Forwarded-Ssl`, `X-Original-URL`, ...) are
/// [`URL_CLAIMS`], in `towergate-core` because the cache keys a trusted
/// proxy's values of them.
const ADDRESS_CLAIMS: [&str; 8] = [
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-cluster-client-ip",
    "x-forwarded-server",
    "x-original-forwarded-for",
];

/// Every client claim ([`is_client_claim`]), dashed.
const CLAIM_NAMES: [&[&str]; 2] = [&ADDRESS_CLAIMS, &URL_CLAIMS];

/// The forwarding headers the proxy rewrites itself, which count as claims
/// only in an underscore spelling (`x_forwarded_for`).
const UNDERSCORED_FORWARDING: [&str; 3] =
    ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"];

fn is_claim_name(name: &str) -> bool {
    CLAIM_NAMES.iter().any(|list| list.contains(&name))
}

/// For each name length, the last bytes (ASCII) a claim of that length
/// ends with, in either spelling: `_` and `-` are inside names, never last.
struct NameFilter([u128; Self::MAX_LEN + 1]);

impl NameFilter {
    const MAX_LEN: usize = 32;

    const fn of<const N: usize>(lists: [&[&str]; N]) -> Self {
        let mut masks = [0u128; Self::MAX_LEN + 1];
        let mut l = 0;
        while l < lists.len() {
            let mut i = 0;
            while i < lists[l].len() {
                let b = lists[l][i].as_bytes();
                assert!(b.len() <= Self::MAX_LEN && b[b.len() - 1] < 128);
                masks[b.len()] |= 1 << b[b.len() - 1];
                i += 1;
            }
            l += 1;
        }
        Self(masks)
    }

    fn may_match(&self, name: &[u8]) -> bool {
        match (self.0.get(name.len()), name.last()) {
            (Some(mask), Some(&last)) if last < 128 => mask & (1 << last) != 0,
            _ => false,
        }
    }
}

const CLAIM_FILTER: NameFilter =
    NameFilter::of([&ADDRESS_CLAIMS, &URL_CLAIMS, &UNDERSCORED_FORWARDING]);

/// Removes the client-address headers upstream stacks believe
/// ([`is_client_claim`]: `X-Real-IP` above all) unless the peer is a
/// trusted proxy: from anyone else they are the client's own claims.
/// Call it before [`set_forwarding`], when [`scan_names`] found some.
pub(crate) fn strip_client_claims(headers: &mut HeaderMap, hop: &Hop<'_>) {
    if hop
        .client
        .is_some_and(|c| hop.trusted.contains(c.peer.ip()))
    {
        return;
    }
    let claims: Vec<HeaderName> = headers
        .keys()
        .filter(|k| is_client_claim(k))
        .cloned()
        .collect();
    for name in claims {
        headers.remove(name);
    }
}

/// This proxy's `Via` entries (`1.1 towergate`, ...), one per protocol
/// version, made once when the proxy is built: most messages carry no `Via`,
/// and then the entry goes in as a clone (which shares its bytes) instead of
/// being formatted and validated on every request and response.
#[derive(Clone, Debug)]
pub(crate) struct ViaEntries {
    http_09: HeaderValue,
    http_10: HeaderValue,
    http_11: HeaderValue,
    http_2: HeaderValue,
    http_3: HeaderValue,
}

impl ViaEntries {
    /// The entries for `pseudonym`, which the caller has checked is a token
    /// (token characters are always valid in a header value).
    pub(crate) fn new(pseudonym: &str) -> Result<Self, http::header::InvalidHeaderValue> {
        let entry = |protocol: &str| {
            HeaderValue::from_maybe_shared(bytes::Bytes::from([protocol, " ", pseudonym].concat()))
        };
        Ok(Self {
            http_09: entry("0.9")?,
            http_10: entry("1.0")?,
            http_11: entry("1.1")?,
            http_2: entry("2")?,
            http_3: entry("3")?,
        })
    }

    /// The entry for a message received with `version`.
    fn get(&self, version: Version) -> &HeaderValue {
        match version {
            Version::HTTP_09 => &self.http_09,
            Version::HTTP_10 => &self.http_10,
            Version::HTTP_2 => &self.http_2,
            Version::HTTP_3 => &self.http_3,
            _ => &self.http_11,
        }
    }
}

/// Appends this proxy to `Via` (RFC 9110 7.6.3): `1.1 towergate`, with the
/// version of the message as it was received.
pub(crate) fn append_via(headers: &mut HeaderMap, version: Version, via: &ViaEntries) {
    let entry = via.get(version);
    // One hash for the common case, where there is no `Via` to extend.
    match headers.entry(VIA) {
        Entry::Vacant(slot) => {
            slot.insert(entry.clone());
        }
        Entry::Occupied(_) => append_list(headers, VIA, entry.as_bytes()),
    }
}

/// Joins the upstream's base path and the request's path and query:
/// `/api` + `/42?x=1` is `/api/42?x=1`, with exactly one slash at the seam.
pub(crate) fn join_path(base: &str, pq: Option<&PathAndQuery>) -> String {
    let base = base.trim_end_matches('/');
    let (path, query) = match pq {
        Some(pq) => (pq.path(), pq.query()),
        None => ("/", None),
    };
    let mut out =
        String::with_capacity(base.len() + path.len() + query.map_or(0, |q| q.len() + 1) + 1);
    out.push_str(base);
    if path == "*" && base.is_empty() {
        // `OPTIONS *` is about the server as a whole; keep it so.
        out.push('*');
    } else if path != "*" {
        if !path.starts_with('/') {
            out.push('/');
        }
        out.push_str(path);
    }
    if out.is_empty() {
        out.push('/');
    }
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Whether `s` is an RFC 9110 token (the grammar of a `Via` pseudonym and of
/// an unquoted `Forwarded` value): letters, digits and ``!#$%&'*+-.^_`|~``.
/// [`ProxyBuilder::build`](crate::ProxyBuilder::build) refuses a `via` that
/// is not one; public so that a configuration is checked by the same rule
/// before any proxy is built.
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

thread_local! {
    /// The peer address this thread wrote last, and its text as a header
    /// value: a keep-alive connection sends many requests from one
    /// address, and a proxy in front of the gateway is one address for
    /// all of them. Reused, the text costs a comparison and a reference
    /// count instead of formatting, validation and an allocation (~400
    /// instructions per request).
    static LAST_PEER: RefCell<Option<(IpAddr, HeaderValue)>> = const { RefCell::new(None) };
}

/// What a `Forwarded` value of ours is made of, and the value.
struct ForwardedValue {
    peer: Option<IpAddr>,
    proto: Option<&'static str>,
    /// A copy: a request's `HeaderValue` shares the bytes of its
    /// connection's read buffer, which a clone kept here would pin.
    host: Option<Box<[u8]>>,
    value: HeaderValue,
}

thread_local! {
    /// The `Forwarded` value this thread wrote last (when it was ours
    /// alone): the requests of a keep-alive connection share peer, scheme
    /// and Host, so the value is a comparison and a reference count
    /// instead of being built, validated and allocated again (~300
    /// instructions per request).
    static LAST_FORWARDED: RefCell<Option<ForwardedValue>> = const { RefCell::new(None) };
}

/// Our `Forwarded` value for a hop that is not a trusted proxy's: its
/// element alone (`None` cannot happen: the element is made of an address,
/// a scheme and a valid header value, quoted where needed).
fn forwarded_value(
    peer: Option<(IpAddr, &HeaderValue)>,
    proto: Option<&'static str>,
    host: Option<&HeaderValue>,
) -> Option<HeaderValue> {
    let ip = peer.map(|(ip, _)| ip);
    let cached = LAST_FORWARDED.with(|last| match &*last.borrow() {
        Some(f)
            if f.peer == ip
                && f.proto == proto
                && f.host.as_deref() == host.map(HeaderValue::as_bytes) =>
        {
            Some(f.value.clone())
        }
        _ => None,
    });
    if cached.is_some() {
        return cached;
    }
    let element = forwarded_element(peer.map(|(ip, t)| (ip, t.as_bytes())), proto, host);
    // The value takes the element's bytes as they are.
    let value = HeaderValue::from_maybe_shared(bytes::Bytes::from(element)).ok()?;
    LAST_FORWARDED.with(|last| {
        *last.borrow_mut() = Some(ForwardedValue {
            peer: ip,
            proto,
            host: host.map(|h| h.as_bytes().into()),
            value: value.clone(),
        });
    });
    Some(value)
}

/// `ip` as text, in a header value (`None` cannot happen: the text of an
/// address is digits, dots, colons and hex letters).
fn peer_value(ip: IpAddr) -> Option<HeaderValue> {
    let cached = LAST_PEER.with(|last| match &*last.borrow() {
        Some((seen, value)) if *seen == ip => Some(value.clone()),
        _ => None,
    });
    if cached.is_some() {
        return cached;
    }
    let mut text = IpText::new();
    let value = HeaderValue::from_str(text.write(ip)).ok()?;
    LAST_PEER.with(|last| *last.borrow_mut() = Some((ip, value.clone())));
    Some(value)
}

/// An IP address as text in a buffer on the stack (45 bytes is the longest
/// IPv6 text). IPv4, the common case, is written without `core::fmt`, whose
/// machinery costs more than the rest of the forwarding headers together.
struct IpText {
    buf: [u8; 48],
    len: usize,
}

impl IpText {
    fn new() -> Self {
        Self {
            buf: [0; 48],
            len: 0,
        }
    }

    fn write(&mut self, ip: IpAddr) -> &str {
        self.len = 0;
        towergate_core::write_ip(self, ip);
        // Digits, dots, colons and hex letters only.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let slot = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The comma-separated tokens of every `Connection` header.
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// One `Forwarded` element for this hop: `for=...;proto=...;host=...`;
/// `peer` is the address and its text.
fn forwarded_element(
    peer: Option<(IpAddr, &[u8])>,
    proto: Option<&str>,
    host: Option<&HeaderValue>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    out.extend_from_slice(b"for=");
    match peer {
        Some((IpAddr::V4(_), text)) => out.extend_from_slice(text),
        // An IPv6 node is bracketed, and the brackets and colons make it a
        // quoted-string (RFC 7239 6).
        Some((IpAddr::V6(_), text)) => {
            out.extend_from_slice(b"\"[");
            out.extend_from_slice(text);
            out.extend_from_slice(b"]\"");
        }
        None => out.extend_from_slice(b"unknown"),
    }
    if let Some(proto) = proto {
        out.extend_from_slice(b";proto=");
        out.extend_from_slice(proto.as_bytes());
    }
    if let Some(host) = host.and_then(|h| h.to_str().ok()) {
        out.extend_from_slice(b";host=");
        push_quoted_if_needed(&mut out, host);
    }
    out
}

/// A `Forwarded` value: bare when it is a token, else a quoted-string
/// (`host="example.com:8080"`: the colon is not a token character).
fn push_quoted_if_needed(out: &mut Vec<u8>, value: &str) {
    if is_token(value) {
        out.extend_from_slice(value.as_bytes());
        return;
    }
    out.push(b'"');
    for b in value.bytes() {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// Folds every line of a list header into one and appends `item`, so the
/// order of hops stays obvious to whoever reads only the first line.
fn append_list(headers: &mut HeaderMap, name: HeaderName, item: &[u8]) {
    let mut joined = BytesMut::new();
    for value in headers.get_all(&name) {
        if value.is_empty() {
            continue;
        }
        joined.put_slice(value.as_bytes());
        joined.put_slice(b", ");
    }
    joined.put_slice(item);
    // Concatenating valid values with ", " keeps it valid; if not, the
    // incoming list is dropped rather than the request failed.
    match HeaderValue::from_maybe_shared(joined.freeze()) {
        Ok(v) => {
            headers.insert(name, v);
        }
        Err(_) => replace(headers, name, item),
    }
}

fn replace(headers: &mut HeaderMap, name: HeaderName, item: &[u8]) {
    match HeaderValue::from_bytes(item) {
        Ok(v) => {
            headers.insert(name, v);
        }
        Err(_) => {
            headers.remove(name);
        }
    }
}
