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
    /// Whether the TCP peer is a trusted proxy: its forwarding headers
    /// (`X-Forwarded-Host`, `Forwarded`, the [`URL_CLAIMS`]) reach the
    /// upstream as it sent them, so whatever depends on what the upstream sees (a cache key)
    /// must take them into account.
    pub trusted_peer: bool,
}

/// Request headers (dashed, lowercase) through which a proxy tells its
/// upstream what URL the client asked for, besides `X-Forwarded-Host`,
/// `X-Forwarded-Proto` and `Forwarded`: upstream stacks build links and
/// redirects from them (`X-Forwarded-Prefix`: Spring, ASP.NET's path
/// base; the port; the scheme, which Rack reads from `X-Forwarded-Ssl`
/// before `X-Forwarded-Proto`), and some serve another resource by them
/// (`X-Original-URL`, `X-Rewrite-URL`: IIS, Symfony, Zend serve that path
/// instead of the request's).
///
/// One list for the two crates that must agree on it: `towergate-proxy`
/// strips them unless the peer is a trusted proxy (a client has no say in
/// them), and `towergate-cache` keys a trusted proxy's values, as they
/// reach the upstream unchanged and choose its answer.
pub const URL_CLAIMS: [&str; 8] = [
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-ssl",
    "front-end-https",
    "x-forwarded-scheme",
    "x-url-scheme",
    "x-original-url",
    "x-rewrite-url",
];

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
            trusted_peer: false,
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
    /// assert!(a.trusted_peer);
    /// // An untrusted peer's header is not believed.
    /// let a = ClientAddr::resolve("192.0.2.1:5000".parse().unwrap(), false, &h, &trusted);
    /// assert_eq!(a.client.to_string(), "192.0.2.1");
    /// assert!(!a.trusted_peer);
    /// ```
    pub fn resolve(
        peer: SocketAddr,
        tls: bool,
        headers: &HeaderMap,
        trusted: &TrustedProxies,
    ) -> Self {
        let mut client = peer.ip();
        let mut https = tls;
        let trusted_peer = trusted.contains(client);
        if trusted_peer {
            // The first hop's scheme, as the proxy passes it on.
            if let Some(proto) = headers.get("x-forwarded-proto") {
                let first = proto
                    .as_bytes()
                    .split(|&b| b == b',')
                    .next()
                    .unwrap_or_default();
                https = first.trim_ascii().eq_ignore_ascii_case(b"https");
            }
            // Walk X-Forwarded-For from the right: each hop was added by the
            // proxy to its right, so it is believable while that proxy is trusted.
            // Split as bytes: a line with a byte that is not text (which
            // the client wrote into its own part, left of the proxy's) must
            // not hide the proxy's hops, as reading the line as text would.
            let hops: Vec<&[u8]> = headers
                .get_all("x-forwarded-for")
                .iter()
                .flat_map(|v| v.as_bytes().split(|&b| b == b','))
                .map(<[u8]>::trim_ascii)
                .filter(|s| !s.is_empty())
                .collect();
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
            trusted_peer,
        }
    }
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
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
