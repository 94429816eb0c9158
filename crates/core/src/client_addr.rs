use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

/// Where a request came from, recorded by the listener.
///
/// `peer` is the TCP peer. `client` is the address of the real client: the
/// peer itself, unless the peer is a trusted proxy, in which case it is the
/// right-most address of `X-Forwarded-For` that is not itself trusted (the
/// only one a trusted proxy vouches for).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The client, derived from trusted forwarding headers.
    pub client: IpAddr,
    /// Whether the connection to the gateway used TLS.
    pub tls: bool,
    /// Whether the client asked for an `https` URI: the connection used
    /// TLS, or, from a trusted proxy, its `X-Forwarded-Proto` says so (the
    /// scheme the proxy tells the upstream: see `towergate-proxy`).
    pub https: bool,
}

/// The set of peers whose forwarding headers are believed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

// === impl ClientAddr ===

impl ClientAddr {
    /// A client that is its own peer.
    pub fn direct(peer: SocketAddr, tls: bool) -> Self {
        Self {
            peer,
            client: peer.ip(),
            tls,
            https: tls,
        }
    }

    /// Derives the client address from `X-Forwarded-For`, believing it only
    /// as far as the chain of trusted proxies goes.
    ///
    /// ```
    /// use towergate_core::{ClientAddr, TrustedProxies};
    /// let trusted = TrustedProxies::new(["10.0.0.0/8".parse().unwrap()]);
    /// let mut h = http::HeaderMap::new();
    /// h.insert("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.0.0.2".parse().unwrap());
    /// let a = ClientAddr::resolve("10.0.0.1:5000".parse().unwrap(), false, &h, &trusted);
    /// assert_eq!(a.client.to_string(), "203.0.113.9");
    /// // An untrusted peer's header is not believed.
    /// let a = ClientAddr::resolve("192.0.2.1:5000".parse().unwrap(), false, &h, &trusted);
    /// assert_eq!(a.client.to_string(), "192.0.2.1");
    /// ```
    pub fn resolve(
        peer: SocketAddr,
        tls: bool,
        headers: &HeaderMap,
        trusted: &TrustedProxies,
    ) -> Self {
        let mut client = peer.ip();
        let mut https = tls;
        if trusted.contains(client) {
            // The first hop's scheme, as the proxy passes it on; from
            // `Forwarded` (RFC 7239) when the proxy sends only that.
            if let Some(proto) = headers.get("x-forwarded-proto") {
                let first = proto
                    .as_bytes()
                    .split(|&b| b == b',')
                    .next()
                    .unwrap_or_default();
                https = first.trim_ascii().eq_ignore_ascii_case(b"https");
            } else if let Some(proto) = forwarded_params(headers, b"proto").next().flatten() {
                https = proto.eq_ignore_ascii_case(b"https");
            }
            // Walk X-Forwarded-For from the right: each hop was added by the
            // proxy to its right, so it is believable while that proxy is trusted.
            // Split as bytes: a line with a byte that is not text (which
            // the client wrote into its own part, left of the proxy's) must
            // not hide the proxy's hops, as reading the line as text would.
            let mut hops: Vec<&[u8]> = headers
                .get_all("x-forwarded-for")
                .iter()
                .flat_map(|v| v.as_bytes().split(|&b| b == b','))
                .map(<[u8]>::trim_ascii)
                .filter(|s| !s.is_empty())
                .collect();
            // A proxy that sends only `Forwarded`: its `for=` values, walked
            // the same way (`"[2001:db8::1]:4711"` is an address and port;
            // `unknown` and obfuscated `_names` stop the walk).
            if hops.is_empty() && headers.contains_key("forwarded") {
                hops = forwarded_params(headers, b"for").flatten().collect();
            }
            for hop in hops.iter().rev() {
                match std::str::from_utf8(hop).ok().and_then(parse_ip) {
                    Some(ip) => {
                        client = ip;
                        if !trusted.contains(ip) {
                            break;
                        }
                    }
                    None => break,
                }
            }
        }
        Self {
            peer,
            client,
            tls,
            https,
        }
    }
}

/// Parameter `name` of each element of `Forwarded` (RFC 7239 §4), in
/// order, unquoted (`None` for an element without it).
fn forwarded_params<'h>(
    headers: &'h HeaderMap,
    name: &'h [u8],
) -> impl Iterator<Item = Option<&'h [u8]>> {
    headers
        .get_all("forwarded")
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(move |element| {
            element.split(|&b| b == b';').find_map(|pair| {
                let pair = pair.trim_ascii();
                let eq = pair.iter().position(|&b| b == b'=')?;
                let (key, value) = (&pair[..eq], &pair[eq + 1..]);
                if !key.trim_ascii().eq_ignore_ascii_case(name) {
                    return None;
                }
                let value = value.trim_ascii();
                Some(
                    value
                        .strip_prefix(b"\"")
                        .and_then(|v| v.strip_suffix(b"\""))
                        .unwrap_or(value),
                )
            })
        })
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    // "[::1]" (Forwarded's form of an IPv6 address without a port)
    if let Some(inner) = s.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
        return inner.parse::<IpAddr>().ok();
    }
    // "1.2.3.4:567" or "[::1]:567"
    s.parse::<SocketAddr>().ok().map(|a| a.ip())
}

// === impl TrustedProxies ===

impl TrustedProxies {
    /// Trusts the given networks.
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        Self {
            nets: nets.into_iter().collect(),
        }
    }

    /// Trusts no one: forwarding headers from clients are never believed.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn trusted() -> TrustedProxies {
        TrustedProxies::new([
            "10.0.0.0/8".parse().unwrap(),
            "127.0.0.1/32".parse().unwrap(),
        ])
    }

    #[test]
    fn a_proxy_that_sends_only_forwarded_is_read() {
        let mut h = HeaderMap::new();
        h.insert(
            "forwarded",
            HeaderValue::from_static(
                "for=6.6.6.6, for=\"[2001:db8::1]:4711\";proto=https, For=10.0.0.9;proto=http",
            ),
        );
        let a = ClientAddr::resolve("10.0.0.1:5000".parse().unwrap(), false, &h, &trusted());
        assert_eq!(a.client.to_string(), "2001:db8::1");
        // The first element's scheme is the client's: none here, so the
        // connection's.
        assert!(!a.https);
        let mut h = HeaderMap::new();
        h.insert(
            "forwarded",
            HeaderValue::from_static("for=\"[2001:db8::7]\";proto=https"),
        );
        let a = ClientAddr::resolve("10.0.0.1:5000".parse().unwrap(), false, &h, &trusted());
        assert_eq!(a.client.to_string(), "2001:db8::7");
        assert!(a.https);
        // `unknown` stops the walk at the proxy's own address.
        h.insert("forwarded", HeaderValue::from_static("for=unknown"));
        let a = ClientAddr::resolve("10.0.0.1:5000".parse().unwrap(), false, &h, &trusted());
        assert_eq!(a.client.to_string(), "10.0.0.1");
        // Untrusted peers' `Forwarded` is not read.
        h.insert(
            "forwarded",
            HeaderValue::from_static("for=1.2.3.4;proto=https"),
        );
        let a = ClientAddr::resolve("192.0.2.1:5000".parse().unwrap(), false, &h, &trusted());
        assert_eq!(a.client.to_string(), "192.0.2.1");
        assert!(!a.https);
    }

    #[test]
    fn bytes_that_are_not_text_hide_no_hop() {
        // The client wrote `\xff`; the trusted proxy appended its address
        // to the same line, as nginx's `$proxy_add_x_forwarded_for` does.
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff, 198.51.100.7").unwrap(),
        );
        let peer = "10.0.0.1:1".parse().unwrap();
        let a = ClientAddr::resolve(peer, false, &h, &trusted());
        assert_eq!(a.client.to_string(), "198.51.100.7");
        // The garbage is the last hop believed: it stops the walk.
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"1.1.1.1, \xff\xfe, 10.0.0.9").unwrap(),
        );
        let a = ClientAddr::resolve(peer, false, &h, &trusted());
        assert_eq!(a.client.to_string(), "10.0.0.9");
    }

    #[test]
    fn chain_of_trusted_proxies() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "1.1.1.1".parse().unwrap());
        h.append("x-forwarded-for", "2.2.2.2, 10.1.1.1".parse().unwrap());
        let a = ClientAddr::resolve("127.0.0.1:1".parse().unwrap(), true, &h, &trusted());
        assert_eq!(a.client, "2.2.2.2".parse::<IpAddr>().unwrap());
        assert!(a.tls);
    }

    #[test]
    fn garbage_stops_the_walk() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.1.1.1, nonsense".parse().unwrap());
        let a = ClientAddr::resolve("10.0.0.1:1".parse().unwrap(), false, &h, &trusted());
        assert_eq!(a.client, "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn all_trusted_gives_leftmost() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "10.9.9.9, 10.0.0.3".parse().unwrap());
        let a = ClientAddr::resolve("10.0.0.1:1".parse().unwrap(), false, &h, &trusted());
        assert_eq!(a.client, "10.9.9.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn mapped_v6_peer() {
        let t = trusted();
        assert!(t.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!t.contains("::1".parse().unwrap()));
    }
}
