//! IP addresses as text without `core::fmt`: the request path writes the
//! client's address into forwarding headers, rate-limit keys and log lines,
//! and `Display` for `IpAddr` costs several times what this does.

use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr};

/// Writes `ip` to `out` exactly as its `Display` does (IPv6 compressed,
/// lowercase, IPv4-mapped addresses as `::ffff:a.b.c.d`).
///
/// ```
/// use std::net::IpAddr;
/// let mut out = String::new();
/// for ip in ["203.0.113.9", "2001:db8::1", "::ffff:1.2.3.4"] {
///     let ip: IpAddr = ip.parse().unwrap();
///     out.clear();
///     towergate_core::write_ip(&mut out, ip);
///     assert_eq!(out, ip.to_string());
/// }
/// ```
pub fn write_ip<W: Write>(out: &mut W, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => write_ipv4(out, a),
        IpAddr::V6(a) => {
            if let Some(mapped) = a.to_ipv4_mapped() {
                let _ = out.write_str("::ffff:");
                return write_ipv4(out, mapped);
            }
            let groups = a.segments();
            // The first longest run of zero groups.
            let (mut run_at, mut run_len) = (0, 0);
            let mut i = 0;
            while i < groups.len() {
                let len = groups[i..].iter().take_while(|&&g| g == 0).count();
                if len > run_len {
                    (run_at, run_len) = (i, len);
                }
                i += len.max(1);
            }
            if run_len < 2 {
                write_groups(out, &groups);
            } else {
                write_groups(out, &groups[..run_at]);
                let _ = out.write_str("::");
                write_groups(out, &groups[run_at + run_len..]);
            }
        }
    }
}

fn write_ipv4<W: Write>(out: &mut W, ip: Ipv4Addr) {
    let mut text = [0u8; 15];
    let mut len = 0;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            text[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            text[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        text[len] = b'0' + octet % 10;
        len += 1;
    }
    // Digits and dots: always UTF-8.
    if let Ok(s) = std::str::from_utf8(&text[..len]) {
        let _ = out.write_str(s);
    }
}

/// Colon-separated lowercase hex groups without leading zeros.
fn write_groups<W: Write>(out: &mut W, groups: &[u16]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, &group) in groups.iter().enumerate() {
        if i > 0 {
            let _ = out.write_char(':');
        }
        let digits = (4 - group.leading_zeros() / 4).max(1);
        for shift in (0..digits).rev() {
            let _ = out.write_char(char::from(
                HEX[usize::from((group >> (shift * 4)) as u8 & 0xf)],
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    fn text(ip: IpAddr) -> String {
        let mut out = String::new();
        write_ip(&mut out, ip);
        out
    }

    #[test]
    fn like_display() {
        for ip in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.100.9",
            "::",
            "::1",
            "1::",
            "2001:db8::1",
            "2001:db8:0:1:0:0:0:1",
            "2001:0:0:1:0:0:0:1",
            "2001:db8:1:0:2:3:4:5",
            "0:0:1:0:0:0:1:0",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:1.2.3.4",
            "::1.2.3.4",
            "fe80::a:b0:c00:d000",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(text(ip), ip.to_string());
        }
        // Every octet value in every position.
        for pos in 0..4 {
            for v in 0..=255u8 {
                let mut o = [1, 2, 3, 4];
                o[pos] = v;
                let ip = IpAddr::V4(Ipv4Addr::from(o));
                assert_eq!(text(ip), ip.to_string());
            }
        }
        // Pseudo-random v6 addresses with mostly-zero groups, so that runs
        // of zeros of every length and position come up.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut g = [0u16; 8];
            for slot in &mut g {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *slot = match x % 6 {
                    0..=2 => 0,
                    3 => 1,
                    4 => 0xabc,
                    _ => (x >> 16) as u16,
                };
            }
            let ip = IpAddr::V6(Ipv6Addr::from(g));
            assert_eq!(text(ip), ip.to_string());
        }
    }
}
