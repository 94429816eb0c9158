//! IP allow and deny lists, the pure part of
//! [`IpFilterLayer`](crate::IpFilterLayer).

use std::net::IpAddr;

use ipnet::IpNet;

/// Allow and deny lists of networks. Deny wins; a non-empty allow list
/// admits only its networks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct IpAccess {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

/// What the lists say about an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allowed,
    Denied,
    NotAllowed,
}

// === impl IpAccess ===

impl IpAccess {
    pub(crate) fn new(allow: Vec<IpNet>, deny: Vec<IpNet>) -> Self {
        Self {
            allow: allow.into_iter().map(normalize_net).collect(),
            deny: deny.into_iter().map(normalize_net).collect(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    pub(crate) fn check(&self, ip: IpAddr) -> Verdict {
        let ip = normalize_ip(ip);
        if self.deny.iter().any(|n| n.contains(&ip)) {
            Verdict::Denied
        } else if self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip)) {
            Verdict::Allowed
        } else {
            Verdict::NotAllowed
        }
    }
}

/// `::ffff:a.b.c.d` is the IPv4 client `a.b.c.d` on a dual-stack socket:
/// match it against the IPv4 lists.
pub(crate) fn normalize_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A network written in IPv4-mapped form (`::ffff:10.0.0.0/104`) is the
/// IPv4 network it maps.
fn normalize_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn deny_wins_and_allow_restricts() {
        let a = IpAccess::new(
            vec![net("10.0.0.0/8"), net("2001:db8::/32")],
            vec![net("10.6.6.0/24")],
        );
        assert_eq!(a.check(ip("10.1.2.3")), Verdict::Allowed);
        assert_eq!(a.check(ip("10.6.6.6")), Verdict::Denied);
        assert_eq!(a.check(ip("192.0.2.1")), Verdict::NotAllowed);
        assert_eq!(a.check(ip("2001:db8::1")), Verdict::Allowed);
        assert_eq!(a.check(ip("2001:db9::1")), Verdict::NotAllowed);
        // IPv4-mapped clients are matched as IPv4.
        assert_eq!(a.check(ip("::ffff:10.1.2.3")), Verdict::Allowed);
        assert_eq!(a.check(ip("::ffff:10.6.6.6")), Verdict::Denied);
    }

    #[test]
    fn deny_only_and_mapped_networks() {
        let a = IpAccess::new(vec![], vec![net("::ffff:192.0.2.0/120")]);
        assert_eq!(a.check(ip("192.0.2.9")), Verdict::Denied);
        assert_eq!(a.check(ip("198.51.100.1")), Verdict::Allowed);
        assert!(!a.is_empty());
        assert!(IpAccess::default().is_empty());
    }
}
