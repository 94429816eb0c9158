//! What a limit counts by: the client address, a header, who the caller
//! is, the route, any combination of these, or anything an embedder can
//! compute from the request head.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use http::HeaderName;
use http::request::Parts;
use towergate_core::{ClientAddr, Identity, RouteMatch};

/// Computes a rate-limit key from a request head; `None` when the request
/// has none (no such header, anonymous caller), which the layer's
/// [`MissingKey`] policy then decides.
///
/// Closures `Fn(&http::request::Parts) -> Option<String>` implement it, so
/// an embedder can key by anything:
///
/// ```
/// use towergate_ratelimit::{Key, KeyExtractor};
///
/// let by_tenant = |parts: &http::request::Parts| {
///     parts.uri.path().split('/').nth(2).map(str::to_owned)
/// };
/// let (parts, ()) = http::Request::get("/t/acme/orders").body(()).unwrap().into_parts();
/// assert_eq!(by_tenant.extract(&parts).as_deref(), Some("acme"));
/// let key = Key::custom(by_tenant);
/// # let _ = key;
/// ```
pub trait KeyExtractor: Send + Sync + 'static {
    /// The key of this request, if it has one.
    fn extract(&self, parts: &Parts) -> Option<String>;
}

/// The built-in keys.
///
/// Keys read request extensions that other layers set
/// ([`ClientAddr`] from the listener, [`Identity`] from authentication,
/// [`RouteMatch`] from the router), so this crate depends on none of them.
#[derive(Clone)]
#[non_exhaustive]
pub enum Key {
    /// The client IP from [`ClientAddr`] (already resolved through trusted
    /// proxies); nothing when the listener did not record one.
    ClientIp,
    /// The client's network: IPv4 addresses masked to `v4` bits, IPv6 to
    /// `v6` bits. An IPv6 client usually controls a whole /64, so keying by
    /// its full address lets it make up fresh keys.
    ClientNet {
        /// IPv4 prefix length (0 to 32).
        v4: u8,
        /// IPv6 prefix length (0 to 128).
        v6: u8,
    },
    /// The first value of a request header; nothing when absent or empty.
    Header(HeaderName),
    /// A field of the caller's [`Identity`]: `consumer`, `sub`, `iss` or a
    /// claim (dotted paths reach into objects); nothing when anonymous or
    /// the field is absent.
    Identity(Arc<str>),
    /// The matched route's name ([`RouteMatch`]): one bucket per route,
    /// shared by every client.
    Route,
    /// One bucket for every request through the layer.
    Global,
    /// All of these parts, in order; nothing if any part is missing.
    All(Vec<Key>),
    /// An embedder's extractor.
    Custom(Arc<dyn KeyExtractor>),
}

/// What the layer does with a request whose key cannot be extracted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MissingKey {
    /// Refuse it with this status (a `4xx`, typically `400` or `401`) and a
    /// problem+json body; it never reaches the inner service.
    Refuse(http::StatusCode),
    /// Count every such request in one shared bucket per limit (for
    /// example, all anonymous callers together).
    Shared,
}

// === impl Key ===

impl Key {
    /// Keys by the first value of header `name`.
    pub fn header(name: HeaderName) -> Self {
        Self::Header(name)
    }

    /// Keys by a field of the caller's [`Identity`].
    pub fn identity(field: impl Into<Arc<str>>) -> Self {
        Self::Identity(field.into())
    }

    /// Keys by all of `parts` together.
    pub fn all(parts: impl IntoIterator<Item = Key>) -> Self {
        Self::All(parts.into_iter().collect())
    }

    /// Keys by an embedder's extractor (a closure over the request head).
    pub fn custom(extractor: impl KeyExtractor) -> Self {
        Self::Custom(Arc::new(extractor))
    }

    /// Checks prefix lengths, recursively.
    pub(crate) fn validate(&self) -> Result<(), String> {
        match self {
            Key::ClientNet { v4, v6 } if *v4 > 32 || *v6 > 128 => {
                Err(format!("prefix lengths /{v4} and /{v6} out of range"))
            }
            Key::All(parts) if parts.is_empty() => Err("empty combination".to_owned()),
            Key::All(parts) => parts.iter().try_for_each(Key::validate),
            _ => Ok(()),
        }
    }
}

impl KeyExtractor for Key {
    fn extract(&self, parts: &Parts) -> Option<String> {
        if let Key::Custom(extractor) = self {
            return extractor.extract(parts);
        }
        let mut value = String::new();
        self.extract_into(parts, &mut value).then_some(value)
    }
}

impl Key {
    /// Appends what [`extract`](KeyExtractor::extract) returns to `out`
    /// without allocating for the built-in keys (the layer builds bucket
    /// ids on every request); `false`, with `out` as it was, when the
    /// request has no key.
    pub(crate) fn extract_into(&self, parts: &Parts, out: &mut String) -> bool {
        match self {
            Key::ClientIp => match parts.extensions.get::<ClientAddr>() {
                Some(a) => {
                    push_ip(out, canonical(a.client));
                    true
                }
                None => false,
            },
            Key::ClientNet { v4, v6 } => match parts.extensions.get::<ClientAddr>() {
                Some(a) => {
                    push_network(out, a.client, *v4, *v6);
                    true
                }
                None => false,
            },
            // Without surrounding spaces and tabs, as auth compares it:
            // HTTP/1 parsers strip them, HTTP/2 keeps them, and `K`, `K `
            // and ` K` must be one key (one bucket), not three.
            Key::Header(name) => match parts.headers.get(name).map(|v| trim_ows(v.as_bytes())) {
                Some(v) if !v.is_empty() => {
                    push_bounded(out, v);
                    true
                }
                _ => false,
            },
            Key::Identity(field) => parts
                .extensions
                .get::<Identity>()
                .and_then(|id| id.field(field))
                .map(|v| push_bounded(out, v.as_bytes()))
                .is_some(),
            Key::Route => parts
                .extensions
                .get::<RouteMatch>()
                .map(|m| out.push_str(&m.route))
                .is_some(),
            Key::Global => true,
            Key::All(keys) => {
                // Length-prefixed so that ("a:b", "c") and ("a", "b:c") differ.
                let start = out.len();
                for key in keys {
                    let at = out.len();
                    if !key.extract_into(parts, out) {
                        out.truncate(start);
                        return false;
                    }
                    let len = out.len() - at;
                    out.insert(at, ':');
                    out.insert_str(at, itoa::Buffer::new().format(len));
                }
                true
            }
            Key::Custom(extractor) => extractor.extract(parts).map(|v| out.push_str(&v)).is_some(),
        }
    }
}

impl<F> KeyExtractor for F
where
    F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
{
    fn extract(&self, parts: &Parts) -> Option<String> {
        self(parts)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::ClientIp => f.write_str("ClientIp"),
            Key::ClientNet { v4, v6 } => f
                .debug_struct("ClientNet")
                .field("v4", v4)
                .field("v6", v6)
                .finish(),
            Key::Header(name) => f.debug_tuple("Header").field(name).finish(),
            Key::Identity(field) => f.debug_tuple("Identity").field(field).finish(),
            Key::Route => f.write_str("Route"),
            Key::Global => f.write_str("Global"),
            Key::All(keys) => f.debug_tuple("All").field(keys).finish(),
            Key::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl fmt::Display for Key {
    /// How refusals name the missing key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::ClientIp | Key::ClientNet { .. } => f.write_str("client address"),
            Key::Header(name) => write!(f, "header {name}"),
            Key::Identity(field) => write!(f, "identity field {field}"),
            Key::Route => f.write_str("route"),
            Key::Global => f.write_str("global"),
            Key::All(keys) => {
                for (i, key) in keys.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" + ")?;
                    }
                    write!(f, "{key}")?;
                }
                Ok(())
            }
            Key::Custom(_) => f.write_str("custom key"),
        }
    }
}

impl PartialEq for Key {
    /// Structural, with custom extractors equal only to themselves: the
    /// layer uses it to see whether all its limits count by the same key.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Key::ClientIp, Key::ClientIp)
            | (Key::Route, Key::Route)
            | (Key::Global, Key::Global) => true,
            (Key::ClientNet { v4: a, v6: b }, Key::ClientNet { v4: c, v6: d }) => a == c && b == d,
            (Key::Header(a), Key::Header(b)) => a == b,
            (Key::Identity(a), Key::Identity(b)) => a == b,
            (Key::All(a), Key::All(b)) => a == b,
            (Key::Custom(a), Key::Custom(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// An IPv4-mapped IPv6 address is the IPv4 client it maps.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `a.b.c.d/len` or `x:y::/len`: the network of `ip`, as
/// `Ipv4Addr`/`Ipv6Addr` display it.
fn push_network(out: &mut String, ip: IpAddr, v4: u8, v6: u8) {
    let len = match canonical(ip) {
        IpAddr::V4(a) => {
            push_ip(out, IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(v4))));
            v4
        }
        IpAddr::V6(a) => {
            push_ip(out, IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(v6))));
            v6
        }
    };
    out.push('/');
    out.push_str(itoa::Buffer::new().format(len));
}

/// The longest key value kept as its own text in a bucket id; a longer
/// one (a header can be 64 KiB) is kept as its digest, so that a store's
/// `max_keys` bounds its memory.
pub(crate) const MAX_KEY_TEXT: usize = 128;

/// Appends a client-given key value: its text (visible ASCII, the usual
/// value, as is; other bytes lossily) up to [`MAX_KEY_TEXT`] bytes, else
/// `#` and 32 hex digits of its BLAKE3 digest, the same on every instance.
fn push_bounded(out: &mut String, value: &[u8]) {
    if value.len() > MAX_KEY_TEXT {
        out.push('#');
        let digest = blake3::hash(value);
        for b in &digest.as_bytes()[..16] {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        return;
    }
    match std::str::from_utf8(value) {
        Ok(text) => out.push_str(text),
        Err(_) => out.push_str(&String::from_utf8_lossy(value)),
    }
}

/// `value` without leading and trailing spaces and tabs (RFC 9110's OWS).
fn trim_ows(value: &[u8]) -> &[u8] {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !ows(b)).unwrap_or(value.len());
    let end = value.iter().rposition(|b| !ows(b)).map_or(start, |i| i + 1);
    &value[start..end]
}

/// `ip` as its `Display` writes it, without `core::fmt`.
fn push_ip(out: &mut String, ip: IpAddr) {
    towergate_core::write_ip(out, ip);
}

fn mask32(len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(len.min(32)))
        .unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(len.min(128)))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use serde_json::json;

    fn parts(build: impl FnOnce(&mut http::Request<()>)) -> Parts {
        let mut req = http::Request::new(());
        build(&mut req);
        req.into_parts().0
    }

    fn client(ip: &str) -> ClientAddr {
        ClientAddr::direct(format!("{ip}:1234").parse().unwrap(), false)
    }

    #[test]
    fn long_key_values_are_kept_as_digests() {
        let long = "k".repeat(64 * 1024);
        let other = format!("{}x", "k".repeat(64 * 1024 - 1));
        let key = Key::Header(http::HeaderName::from_static("x-tenant"));
        let with = |v: &str| {
            let v = HeaderValue::from_str(v).unwrap();
            parts(|r| {
                r.headers_mut().insert("x-tenant", v);
            })
        };
        let a = key.extract(&with(&long)).unwrap();
        assert_eq!(a.len(), 33, "{a}");
        assert!(a.starts_with('#'));
        // The same value, the same bucket; another value, another bucket.
        assert_eq!(key.extract(&with(&long)).unwrap(), a);
        assert_ne!(key.extract(&with(&other)).unwrap(), a);
        // Short values stay readable.
        let short = "t".repeat(MAX_KEY_TEXT);
        assert_eq!(key.extract(&with(&short)).unwrap(), short);
    }

    #[test]
    fn client_ip_and_net() {
        let p = parts(|r| {
            r.extensions_mut().insert(client("203.0.113.77"));
        });
        assert_eq!(Key::ClientIp.extract(&p).as_deref(), Some("203.0.113.77"));
        let net = Key::ClientNet { v4: 24, v6: 64 };
        assert_eq!(net.extract(&p).as_deref(), Some("203.0.113.0/24"));

        let p = parts(|r| {
            r.extensions_mut().insert(ClientAddr::direct(
                "[2001:db8:1:2:3:4:5:6]:1".parse().unwrap(),
                true,
            ));
        });
        assert_eq!(net.extract(&p).as_deref(), Some("2001:db8:1:2::/64"));
        let all = Key::ClientNet { v4: 0, v6: 0 };
        assert_eq!(all.extract(&p).as_deref(), Some("::/0"));

        let p = parts(|r| {
            r.extensions_mut().insert(ClientAddr::direct(
                "[::ffff:10.1.2.3]:1".parse().unwrap(),
                false,
            ));
        });
        assert_eq!(Key::ClientIp.extract(&p).as_deref(), Some("10.1.2.3"));

        assert_eq!(Key::ClientIp.extract(&parts(|_| {})), None, "no fallback");
    }

    #[test]
    fn header_identity_route() {
        let p = parts(|r| {
            r.headers_mut().insert("x-api-key", "k1".parse().unwrap());
            r.headers_mut().insert("x-empty", "".parse().unwrap());
            let utf8 = HeaderValue::from_bytes("caf\u{e9} k".as_bytes()).unwrap();
            r.headers_mut().insert("x-utf8", utf8);
            let obs = HeaderValue::from_bytes(b"a\xffb\tc").unwrap();
            r.headers_mut().insert("x-obs", obs);
            let mut id = Identity {
                consumer: Some("acme".into()),
                ..Identity::default()
            };
            id.claims.insert("org".into(), json!({"id": 7}));
            r.extensions_mut().insert(id);
            r.extensions_mut().insert(RouteMatch::new("users"));
        });
        let h = |n: &'static str| Key::header(HeaderName::from_static(n));
        assert_eq!(h("x-api-key").extract(&p).as_deref(), Some("k1"));
        assert_eq!(h("x-empty").extract(&p), None);
        // Not visible ASCII: read as UTF-8, invalid bytes replaced.
        assert_eq!(h("x-utf8").extract(&p).as_deref(), Some("caf\u{e9} k"));
        assert_eq!(h("x-obs").extract(&p).as_deref(), Some("a\u{fffd}b\tc"));
        assert_eq!(h("x-none").extract(&p), None);
        // Spaces and tabs around a value (HTTP/2 keeps them) make no other key.
        for padded in [" k1", "k1 ", "\tk1\t ", "  k1"] {
            let p = parts(|r| {
                r.headers_mut()
                    .insert("x-api-key", HeaderValue::from_str(padded).unwrap());
            });
            assert_eq!(
                h("x-api-key").extract(&p).as_deref(),
                Some("k1"),
                "{padded:?}"
            );
        }
        let blank = parts(|r| {
            r.headers_mut()
                .insert("x-api-key", HeaderValue::from_static(" \t "));
        });
        assert_eq!(h("x-api-key").extract(&blank), None);
        assert_eq!(
            Key::identity("consumer").extract(&p).as_deref(),
            Some("acme")
        );
        assert_eq!(Key::identity("org.id").extract(&p).as_deref(), Some("7"));
        assert_eq!(Key::identity("sub").extract(&p), None);
        assert_eq!(Key::Route.extract(&p).as_deref(), Some("users"));
        assert_eq!(Key::Global.extract(&p).as_deref(), Some(""));
    }

    #[test]
    fn combinations_are_unambiguous() {
        let hk = |v1: &str, v2: &str| {
            let (v1, v2) = (v1.to_owned(), v2.to_owned());
            parts(move |r| {
                r.headers_mut().insert("a", v1.parse().unwrap());
                r.headers_mut().insert("b", v2.parse().unwrap());
            })
        };
        let key = Key::all([
            Key::header(HeaderName::from_static("a")),
            Key::header(HeaderName::from_static("b")),
        ]);
        let one = key.extract(&hk("x:y", "z")).unwrap();
        let two = key.extract(&hk("x", "y:z")).unwrap();
        assert_ne!(one, two);
        assert_eq!(one, "3:x:y1:z");
        let missing = Key::all([Key::Route, Key::header(HeaderName::from_static("a"))]);
        assert_eq!(missing.extract(&hk("1", "2")), None);
    }

    proptest::proptest! {
        #[test]
        fn random_ips_print_as_display_does(
            v4: u32,
            v6: u128,
            // Mostly-zero groups, so that runs of zeros of every length and
            // position come up.
            groups in proptest::collection::vec(proptest::sample::select(vec![0u16, 0, 0, 1, 0xabc, 0xffff]), 8),
            v4_len in 0u8..=32,
            v6_len in 0u8..=128,
        ) {
            let sparse: [u16; 8] = groups.try_into().unwrap();
            for ip in [
                IpAddr::V4(v4.into()),
                IpAddr::V6(v6.into()),
                IpAddr::V6(Ipv6Addr::from(sparse)),
            ] {
                let mut out = String::new();
                push_ip(&mut out, ip);
                proptest::prop_assert_eq!(&out, &ip.to_string());

                // The allocating formatter this replaced.
                let expected = match canonical(ip) {
                    IpAddr::V4(a) => {
                        format!("{}/{v4_len}", Ipv4Addr::from(u32::from(a) & mask32(v4_len)))
                    }
                    IpAddr::V6(a) => {
                        format!("{}/{v6_len}", Ipv6Addr::from(u128::from(a) & mask128(v6_len)))
                    }
                };
                let mut out = String::from("keep");
                push_network(&mut out, ip, v4_len, v6_len);
                proptest::prop_assert_eq!(out, format!("keep{expected}"));
            }
        }
    }

    #[test]
    fn extract_into_appends_or_leaves_alone() {
        let key = Key::all([Key::header(HeaderName::from_static("a")), Key::Route]);
        let with_a = parts(|r| {
            r.headers_mut().insert("a", "xy".parse().unwrap());
        });
        let mut out = String::from("p:");
        assert!(!key.extract_into(&with_a, &mut out), "no route");
        assert_eq!(out, "p:", "a partial combination is rolled back");
        assert!(!Key::ClientIp.extract_into(&with_a, &mut out));
        assert_eq!(out, "p:");

        let both = parts(|r| {
            r.headers_mut().insert("a", "xy".parse().unwrap());
            r.extensions_mut().insert(RouteMatch::new("users"));
        });
        assert!(key.extract_into(&both, &mut out));
        assert_eq!(out, "p:2:xy5:users");
        let long = Key::all((0..12).map(|_| Key::Route));
        assert_eq!(
            long.extract(&both).unwrap(),
            "5:users".repeat(12),
            "many parts"
        );
        let long = parts(|r| {
            r.headers_mut()
                .insert("a", "x".repeat(123).parse().unwrap());
        });
        let key = Key::all([Key::header(HeaderName::from_static("a")), Key::Global]);
        assert_eq!(
            key.extract(&long).unwrap(),
            format!("123:{}0:", "x".repeat(123))
        );
    }

    #[test]
    fn closures_and_equality() {
        let custom = Key::custom(|p: &Parts| Some(p.method.to_string()));
        assert_eq!(custom.extract(&parts(|_| {})).as_deref(), Some("GET"));
        assert_eq!(custom, custom.clone());
        assert_ne!(custom, Key::custom(|_: &Parts| None));
        assert_eq!(Key::identity("sub"), Key::identity("sub"));
        assert_ne!(Key::identity("sub"), Key::Route);
        assert!(Key::ClientNet { v4: 33, v6: 64 }.validate().is_err());
        assert!(Key::all([]).validate().is_err());
        assert_eq!(
            Key::all([Key::Route, Key::identity("sub")]).to_string(),
            "route + identity field sub"
        );
    }
}
