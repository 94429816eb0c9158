#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use super::*;

/// What the proxy does with a message's headers: look for a hop-by-hop
/// name, then strip.
fn strip_hop_by_hop(h: &mut HeaderMap, keep: Keep) {
    if h.keys().any(is_hop_by_hop) {
        strip_hop_by_hop_found(h, keep);
    }
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn all<'a>(h: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    h.get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}

fn trusted() -> TrustedProxies {
    TrustedProxies::new(["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()])
}

fn addr(peer: &str, tls: bool) -> ClientAddr {
    ClientAddr::direct(peer.parse::<SocketAddr>().unwrap(), tls)
}

fn host(h: &str) -> HeaderValue {
    HeaderValue::from_str(h).unwrap()
}

// === hop-by-hop ===

#[test]
fn strips_fixed_hop_by_hop_headers() {
    let mut h = headers(&[
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("te", "gzip"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "websocket"),
        ("proxy-authorization", "Basic Zm9vOmJhcg=="),
        ("proxy-authenticate", "Basic"),
        ("authorization", "Bearer abc"),
        ("content-type", "text/plain"),
        ("trailer", "x-checksum"),
    ]);
    strip_hop_by_hop(&mut h, Keep::default());
    let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["authorization", "content-type", "trailer"]);
}

#[test]
fn strips_headers_named_in_connection() {
    let mut h = headers(&[
        ("connection", "close, X-Secret"),
        ("connection", " x-other ,, "),
        ("x-secret", "1"),
        ("x-other", "2"),
        ("x-kept", "3"),
    ]);
    strip_hop_by_hop(&mut h, Keep::default());
    assert!(h.get("x-secret").is_none());
    assert!(h.get("x-other").is_none());
    assert!(h.get("connection").is_none());
    assert_eq!(h["x-kept"], "3");
}

#[test]
fn garbage_in_connection_is_ignored() {
    let mut h = headers(&[
        ("connection", "not a header name, x-a"),
        ("x-a", "1"),
        ("x-b", "2"),
    ]);
    strip_hop_by_hop(&mut h, Keep::default());
    assert!(h.get("x-a").is_none());
    assert_eq!(h["x-b"], "2");
}

#[test]
fn upgrade_is_kept_when_asked() {
    let mut h = headers(&[
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "websocket"),
        ("keep-alive", "timeout=5"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ]);
    assert!(is_upgrade(&h));
    strip_hop_by_hop(
        &mut h,
        Keep {
            upgrade: true,
            te_trailers: false,
        },
    );
    assert_eq!(all(&h, "connection"), ["upgrade"]);
    assert_eq!(all(&h, "upgrade"), ["websocket"]);
    assert!(h.get("keep-alive").is_none());
    assert!(h.get("sec-websocket-key").is_some());
}

#[test]
fn keep_upgrade_without_upgrade_header_adds_nothing() {
    let mut h = headers(&[("connection", "upgrade")]);
    assert!(!is_upgrade(&h));
    strip_hop_by_hop(
        &mut h,
        Keep {
            upgrade: true,
            te_trailers: false,
        },
    );
    assert!(h.is_empty());
}

#[test]
fn upgrade_needs_connection_token() {
    assert!(!is_upgrade(&headers(&[("upgrade", "websocket")])));
    assert!(!is_upgrade(&headers(&[
        ("connection", "upgraded"),
        ("upgrade", "h2c")
    ])));
    assert!(is_upgrade(&headers(&[
        ("connection", "UPGRADE"),
        ("upgrade", "h2c")
    ])));
}

#[test]
fn te_trailers_only_for_h2() {
    let mut h = headers(&[("te", "trailers, deflate;q=0.5")]);
    strip_hop_by_hop(
        &mut h,
        Keep {
            upgrade: false,
            te_trailers: true,
        },
    );
    assert_eq!(all(&h, "te"), ["trailers"]);

    let mut h = headers(&[("te", "deflate")]);
    strip_hop_by_hop(
        &mut h,
        Keep {
            upgrade: false,
            te_trailers: true,
        },
    );
    assert!(h.get("te").is_none());

    let mut h = headers(&[("te", "trailers")]);
    strip_hop_by_hop(&mut h, Keep::default());
    assert!(h.get("te").is_none());
}

// === X-Forwarded-For ===

#[test]
fn xff_from_untrusted_peer_is_replaced() {
    let mut h = headers(&[
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-for", "7.7.7.7"),
    ]);
    let c = addr("192.0.2.10:4000", false);
    set_forwarding(
        &mut h,
        &Hop {
            client: Some(&c),
            trusted: &trusted(),
            host: None,
            proto: None,
        },
    );
    assert_eq!(all(&h, "x-forwarded-for"), ["192.0.2.10"]);
}

#[test]
fn client_address_claims_go_unless_the_peer_is_trusted() {
    let claims = [
        ("x-real-ip", "6.6.6.6"),
        ("true-client-ip", "6.6.6.6"),
        ("cf-connecting-ip", "6.6.6.6"),
        ("x-forwarded-port", "443"),
        ("x-forwarded-prefix", "/admin"),
        ("x_real_ip", "6.6.6.6"),
        ("x_forwarded_for", "6.6.6.6"),
        ("x-other", "kept"),
    ];
    for (peer, trusted_peer) in [("192.0.2.10:4000", false), ("10.0.0.2:4000", true)] {
        let mut h = headers(&claims);
        let c = addr(peer, false);
        assert!(scan_names(&h).claims);
        let hop = Hop {
            client: Some(&c),
            trusted: &trusted(),
            host: None,
            proto: None,
        };
        strip_client_claims(&mut h, &hop);
        set_forwarding(&mut h, &hop);
        for (name, value) in &claims[..7] {
            if trusted_peer {
                assert_eq!(all(&h, name), [*value], "{name}");
            } else {
                assert!(h.get(*name).is_none(), "{name}");
            }
        }
        assert_eq!(all(&h, "x-other"), ["kept"]);
    }
}

#[test]
fn xff_from_trusted_peer_is_appended() {
    let mut h = headers(&[
        ("x-forwarded-for", "203.0.113.9"),
        ("x-forwarded-for", "10.1.1.1"),
    ]);
    let c = addr("10.0.0.2:4000", false);
    set_forwarding(
        &mut h,
        &Hop {
            client: Some(&c),
            trusted: &trusted(),
            host: None,
            proto: None,
        },
    );
    assert_eq!(
        all(&h, "x-forwarded-for"),
        ["203.0.113.9, 10.1.1.1, 10.0.0.2"]
    );
}

#[test]
fn xff_is_created_when_absent() {
    let mut h = HeaderMap::new();
    let c = addr("10.0.0.2:4000", false);
    set_forwarding(
        &mut h,
        &Hop {
            client: Some(&c),
            trusted: &trusted(),
            host: None,
            proto: None,
        },
    );
    assert_eq!(all(&h, "x-forwarded-for"), ["10.0.0.2"]);
}

#[test]
fn xff_uses_plain_ipv4_for_mapped_peer() {
    let mut h = HeaderMap::new();
    let c = addr("[::ffff:192.0.2.7]:4000", false);
    set_forwarding(
        &mut h,
        &Hop {
            client: Some(&c),
            trusted: &trusted(),
            host: None,
            proto: None,
        },
    );
    assert_eq!(all(&h, "x-forwarded-for"), ["192.0.2.7"]);
    assert_eq!(all(&h, "forwarded"), ["for=192.0.2.7;proto=http"]);
}

#[test]
fn without_client_addr_nothing_incoming_is_believed() {
    let mut h = headers(&[
        ("x-forwarded-for", "6.6.6.6"),
        ("forwarded", "for=6.6.6.6"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
    ]);
    let host = host("api.example");
    set_forwarding(
        &mut h,
        &Hop {
            client: None,
            trusted: &trusted(),
            host: Some(&host),
            proto: None,
        },
    );
    assert!(h.get("x-forwarded-for").is_none());
    assert!(h.get("x-forwarded-proto").is_none());
    assert_eq!(all(&h, "x-forwarded-host"), ["api.example"]);
    assert_eq!(all(&h, "forwarded"), ["for=unknown;host=api.example"]);
}

// === Forwarded, X-Forwarded-Proto, X-Forwarded-Host ===

#[test]
fn forwarded_ipv4_with_proto_and_host() {
    let mut h = HeaderMap::new();
    let c = addr("192.0.2.43:1234", true);
    let host = host("api.example");
    set_forwarding(
        &mut h,
        &Hop {
            client: Some(&c),
            trusted: &trusted(),
            host: Some(&host),
            proto: None,
        },
    );
    assert_eq!(
        all(&h, "forwarded"),
        ["for=192.0.2.43;proto=https;host=api.example"]
    );
    assert_eq!(all(&h, "x-forwarded-proto"), ["https"]);
    assert_eq!(all(&h, "x-forwarded-host"), ["api.example"]);
}

#[test]
fn forwarded_ipv6_is_quoted_and_bracketed() {
    let mut h = HeaderMap::new();
    let c = addr("[2001:db8:cafe::17]:4711", false);
    let host = host("api.example:8080");
    set_forwarding(
        &mut h,
        &Hop {
            client: Some(&c),
            trusted: &trusted(),
            host: Some(&host),
            proto: None,
        },
    );
    assert_eq!(
        all(&h, "forwarded"),
        ["for=\"[2001:db8:cafe::17]\";proto=http;host=\"api.example:8080\""]
    );
    assert_eq!(all(&h, "x-forwarded-for"), ["2001:db8:cafe::17"]);
}

#[test]
fn peer_text_follows_the_peer_on_one_thread() {
    // The text of the last peer is kept per thread: each request must
    // still get its own peer's address, whatever came before.
    let peers = [
        ("192.0.2.43:1", "192.0.2.43", "for=192.0.2.43"),
        ("192.0.2.43:2", "192.0.2.43", "for=192.0.2.43"),
        ("[2001:db8::1]:3", "2001:db8::1", "for=\"[2001:db8::1]\""),
        // IPv4-mapped: written as the IPv4 address it is.
        (
            "[::ffff:198.51.100.7]:4",
            "198.51.100.7",
            "for=198.51.100.7",
        ),
        ("192.0.2.44:5", "192.0.2.44", "for=192.0.2.44"),
        ("192.0.2.43:6", "192.0.2.43", "for=192.0.2.43"),
    ];
    for (peer, xff, forwarded) in peers {
        let mut h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        let c = addr(peer, false);
        set_forwarding(
            &mut h,
            &Hop {
                client: Some(&c),
                trusted: &trusted(),
                host: None,
                proto: None,
            },
        );
        assert_eq!(all(&h, "x-forwarded-for"), [xff], "{peer}");
        assert_eq!(
            all(&h, "forwarded"),
            [format!("{forwarded};proto=http")],
            "{peer}"
        );
    }
    // A trusted peer's list is extended with the cached text too.
    let mut h = headers(&[("x-forwarded-for", "203.0.113.9")]);
    let c = addr("10.1.2.3:7", false);
    for _ in 0..2 {
        set_forwarding(
            &mut h,
            &Hop {
                client: Some(&c),
                trusted: &trusted(),
                host: None,
                proto: None,
            },
        );
    }
    assert_eq!(
        all(&h, "x-forwarded-for"),
        ["203.0.113.9, 10.1.2.3, 10.1.2.3"]
    );
}

#[test]
fn forwarded_value_follows_peer_scheme_and_host_on_one_thread() {
    // The last `Forwarded` value is kept per thread: each request must
    // still get the value of its own peer, scheme and Host.
    let cases = [
        (
            "192.0.2.50:1",
            false,
            Some("a.example"),
            "for=192.0.2.50;proto=http;host=a.example",
        ),
        (
            "192.0.2.50:2",
            false,
            Some("a.example"),
            "for=192.0.2.50;proto=http;host=a.example",
        ),
        (
            "192.0.2.50:3",
            false,
            Some("b.example"),
            "for=192.0.2.50;proto=http;host=b.example",
        ),
        (
            "192.0.2.50:4",
            true,
            Some("b.example"),
            "for=192.0.2.50;proto=https;host=b.example",
        ),
        ("192.0.2.50:5", true, None, "for=192.0.2.50;proto=https"),
        ("192.0.2.51:6", true, None, "for=192.0.2.51;proto=https"),
        (
            "192.0.2.51:7",
            true,
            Some("b.example:8443"),
            "for=192.0.2.51;proto=https;host=\"b.example:8443\"",
        ),
        (
            "192.0.2.50:8",
            false,
            Some("a.example"),
            "for=192.0.2.50;proto=http;host=a.example",
        ),
    ];
    for (peer, tls, host_name, forwarded) in cases {
        // Whatever the client sent is replaced.
        let mut h = headers(&[("forwarded", "for=6.6.6.6")]);
        let c = addr(peer, tls);
        let host = host_name.map(host);
        set_forwarding(
            &mut h,
            &Hop {
                client: Some(&c),
                trusted: &trusted(),
                host: host.as_ref(),
                proto: None,
            },
        );
        assert_eq!(all(&h, "forwarded"), [forwarded], "{peer}");
    }
    // Without a peer, `for=unknown` with the hop's own scheme.
    let mut h = HeaderMap::new();
    set_forwarding(
        &mut h,
        &Hop {
            client: None,
            trusted: &trusted(),
            host: None,
            proto: Some("https"),
        },
    );
    assert_eq!(all(&h, "forwarded"), ["for=unknown;proto=https"]);
}

#[test]
fn forwarded_from_trusted_peer_is_appended() {
    let mut h = headers(&[
        ("forwarded", "for=203.0.113.9;proto=https;host=api.example"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "api.example"),
    ]);
    let c = addr("[fd00::2]:4000", false);
    let host = host("internal-lb");
    set_forwarding(
        &mut h,
        &Hop {
            client: Some(&c),
            trusted: &trusted(),
            host: Some(&host),
            proto: None,
        },
    );
    assert_eq!(
        all(&h, "forwarded"),
        [
            "for=203.0.113.9;proto=https;host=api.example, for=\"[fd00::2]\";proto=http;host=internal-lb"
        ]
    );
    // The first hop's values survive: they describe what the client used.
    assert_eq!(all(&h, "x-forwarded-proto"), ["https"]);
    assert_eq!(all(&h, "x-forwarded-host"), ["api.example"]);
}

#[test]
fn forwarded_from_untrusted_peer_is_replaced() {
    let mut h = headers(&[
        ("forwarded", "for=6.6.6.6"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
    ]);
    let c = addr("192.0.2.1:4000", false);
    let host = host("api.example");
    set_forwarding(
        &mut h,
        &Hop {
            client: Some(&c),
            trusted: &trusted(),
            host: Some(&host),
            proto: None,
        },
    );
    assert_eq!(
        all(&h, "forwarded"),
        ["for=192.0.2.1;proto=http;host=api.example"]
    );
    assert_eq!(all(&h, "x-forwarded-proto"), ["http"]);
    assert_eq!(all(&h, "x-forwarded-host"), ["api.example"]);
}

/// The quoted form `forwarded_element` writes, as a string.
fn quote_if_needed(value: &str) -> String {
    let mut out = Vec::new();
    push_quoted_if_needed(&mut out, value);
    String::from_utf8(out).unwrap()
}

#[test]
fn forwarded_host_quotes_special_characters() {
    assert_eq!(quote_if_needed("a.example"), "a.example");
    assert_eq!(quote_if_needed("a\"b\\c"), "\"a\\\"b\\\\c\"");
    assert_eq!(quote_if_needed(""), "\"\"");
}

// === Via ===

fn via(pseudonym: &str) -> ViaEntries {
    ViaEntries::new(pseudonym).unwrap()
}

#[test]
fn via_is_added_with_received_version() {
    let mut h = HeaderMap::new();
    append_via(&mut h, Version::HTTP_11, &via("towergate"));
    assert_eq!(all(&h, "via"), ["1.1 towergate"]);

    let mut h = HeaderMap::new();
    append_via(&mut h, Version::HTTP_2, &via("towergate"));
    assert_eq!(all(&h, "via"), ["2 towergate"]);

    let mut h = HeaderMap::new();
    append_via(&mut h, Version::HTTP_10, &via("edge"));
    assert_eq!(all(&h, "via"), ["1.0 edge"]);
}

#[test]
fn via_is_appended_to_existing() {
    let mut h = headers(&[("via", "1.0 fred, 1.1 p.example.net"), ("via", "2 cdn")]);
    append_via(&mut h, Version::HTTP_11, &via("towergate"));
    assert_eq!(
        all(&h, "via"),
        ["1.0 fred, 1.1 p.example.net, 2 cdn, 1.1 towergate"]
    );
}

#[test]
fn via_entries_for_every_version() {
    let v = via("edge");
    for (version, want) in [
        (Version::HTTP_09, "0.9 edge"),
        (Version::HTTP_10, "1.0 edge"),
        (Version::HTTP_11, "1.1 edge"),
        (Version::HTTP_2, "2 edge"),
        (Version::HTTP_3, "3 edge"),
    ] {
        let mut h = HeaderMap::new();
        append_via(&mut h, version, &v);
        assert_eq!(all(&h, "via"), [want]);
    }
    // An empty incoming line is dropped, as before.
    let mut h = headers(&[("via", "")]);
    append_via(&mut h, Version::HTTP_11, &v);
    assert_eq!(all(&h, "via"), ["1.1 edge"]);
}

#[test]
fn tokens() {
    assert!(is_token("towergate"));
    assert!(is_token("gw-1.eu_west"));
    assert!(!is_token(""));
    assert!(!is_token("two words"));
    assert!(!is_token("a,b"));
}

// === paths and hosts ===

fn pq(s: &str) -> PathAndQuery {
    s.parse().unwrap()
}

#[test]
fn join_paths() {
    assert_eq!(join_path("/api", Some(&pq("/42?x=1"))), "/api/42?x=1");
    assert_eq!(join_path("/api/", Some(&pq("/42"))), "/api/42");
    assert_eq!(join_path("", Some(&pq("/42?x=1&y"))), "/42?x=1&y");
    assert_eq!(join_path("/", Some(&pq("/"))), "/");
    assert_eq!(join_path("/api", Some(&pq("/"))), "/api/");
    assert_eq!(join_path("/api", Some(&pq("/?q"))), "/api/?q");
    assert_eq!(join_path("/api", None), "/api/");
    assert_eq!(join_path("", None), "/");
    assert_eq!(join_path("/api", Some(&pq("/a//b"))), "/api/a//b");
    assert_eq!(join_path("", Some(&pq("*"))), "*");
}

#[test]
fn requested_host_prefers_header_then_authority() {
    let uri: Uri = "https://h2.example/x".parse().unwrap();
    let h = headers(&[("host", "h1.example")]);
    assert_eq!(requested_host(&h, &uri).unwrap(), "h1.example");
    assert_eq!(
        requested_host(&HeaderMap::new(), &uri).unwrap(),
        "h2.example"
    );
    assert!(requested_host(&HeaderMap::new(), &"/x".parse().unwrap()).is_none());
    let uri: Uri = "https://user:secret@h2.example:8443/x".parse().unwrap();
    assert_eq!(
        requested_host(&HeaderMap::new(), &uri).unwrap(),
        "h2.example:8443"
    );
}

/// The peer text `set_forwarding` writes, as a string.
fn ip_text(ip: IpAddr) -> String {
    IpText::new().write(ip).to_owned()
}

#[test]
fn ip_text_is_display() {
    for octet in 0..=255u8 {
        for ip in [
            std::net::Ipv4Addr::new(octet, 0, 100, 9),
            std::net::Ipv4Addr::new(255, octet, 10, 1),
            std::net::Ipv4Addr::new(1, 20, octet, 199),
            std::net::Ipv4Addr::new(99, 100, 101, octet),
        ] {
            assert_eq!(ip_text(IpAddr::V4(ip)), ip.to_string());
        }
    }
    let v6: IpAddr = "2001:db8::1".parse().unwrap();
    assert_eq!(ip_text(v6), "2001:db8::1");
}

#[test]
fn hop_by_hop_names_by_text() {
    for name in HOP_BY_HOP.iter().chain([&CONNECTION]) {
        assert!(is_hop_by_hop(name), "{name}");
    }
    for name in [
        "host",
        "user-agent",
        "x-request-id",
        "trailer",
        "tes",
        "keep-alivex",
    ] {
        assert!(!is_hop_by_hop(&HeaderName::from_static(name)), "{name}");
    }
}

#[test]
fn cookie_crumbs_are_joined() {
    let mut h = HeaderMap::new();
    h.append(http::header::COOKIE, HeaderValue::from_static("a=1"));
    h.append(http::header::COOKIE, HeaderValue::from_static("b=2"));
    h.append(http::header::COOKIE, HeaderValue::from_static("c=3"));
    join_cookie_crumbs(&mut h);
    let all: Vec<_> = h.get_all(http::header::COOKIE).iter().collect();
    assert_eq!(all, ["a=1; b=2; c=3"]);
    // One field, or none: left alone.
    let mut h = HeaderMap::new();
    join_cookie_crumbs(&mut h);
    assert!(h.is_empty());
    h.insert(http::header::COOKIE, HeaderValue::from_static("a=1, b"));
    join_cookie_crumbs(&mut h);
    assert_eq!(h[http::header::COOKIE], "a=1, b");
}

#[test]
fn only_allowed_upgrade_protocols_are_offered() {
    let allowed = ["websocket".to_owned()];
    let offer = |v: &str| {
        upgrade_offer(
            &headers(&[("connection", "upgrade"), ("upgrade", v)]),
            &allowed,
        )
    };
    assert_eq!(offer("websocket").unwrap(), "websocket");
    assert_eq!(offer("WebSocket/13").unwrap(), "WebSocket/13");
    // h2c (or anything else) is not offered, alone or beside websocket.
    assert!(offer("h2c").is_none());
    assert!(offer("TLS/1.2, SPDY/3.1").is_none());
    assert_eq!(offer("h2c, websocket").unwrap(), "websocket");
    // HTTP2-Settings goes with the hop-by-hop headers.
    let mut h = headers(&[
        ("connection", "upgrade"),
        ("upgrade", "h2c"),
        ("http2-settings", "AAMAAABkAAQAAP__"),
    ]);
    strip_hop_by_hop(&mut h, Keep::default());
    assert!(h.is_empty(), "{h:?}");
}

#[test]
fn a_101_must_name_an_offered_protocol() {
    let offered = HeaderValue::from_static("websocket");
    let v = |s: &'static str| HeaderValue::from_static(s);
    assert!(upgrade_accepts(&offered, Some(&v("websocket"))));
    assert!(upgrade_accepts(&offered, Some(&v("WebSocket"))));
    assert!(!upgrade_accepts(&offered, Some(&v("h2c"))));
    assert!(!upgrade_accepts(&offered, Some(&v("websocket, h2c"))));
    assert!(!upgrade_accepts(&offered, Some(&v(" , "))));
    assert!(!upgrade_accepts(&offered, None));
}

#[test]
fn only_chunked_is_chunked_alone() {
    for (te, want) in [
        (&["chunked"][..], true),
        (&["Chunked "][..], true),
        (&["gzip, chunked"][..], false),
        (&["gzip", "chunked"][..], false),
        (&["chunked, chunked"][..], false),
        (&["identity"][..], false),
    ] {
        let pairs: Vec<(&str, &str)> = te.iter().map(|v| ("transfer-encoding", *v)).collect();
        assert_eq!(only_chunked(&headers(&pairs)), want, "{te:?}");
    }
}

/// A client's `Connection` cannot drop what a trusted proxy in front
/// wrote about the client; other listed headers still go.
#[test]
fn connection_options_never_name_forwarding_headers() {
    let mut h = headers(&[
        (
            "connection",
            "x-forwarded-for, X-Forwarded-Proto, forwarded, x-real-ip, x-custom",
        ),
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-proto", "https"),
        ("forwarded", "for=203.0.113.7"),
        ("x-real-ip", "203.0.113.7"),
        ("x-custom", "1"),
    ]);
    strip_connection_options(&mut h);
    assert_eq!(all(&h, "x-forwarded-for"), ["203.0.113.7"]);
    assert_eq!(all(&h, "x-forwarded-proto"), ["https"]);
    assert_eq!(all(&h, "forwarded"), ["for=203.0.113.7"]);
    assert_eq!(all(&h, "x-real-ip"), ["203.0.113.7"]);
    assert!(h.get("x-custom").is_none());
    assert!(h.get("connection").is_none());
}

#[test]
fn scheme_and_url_override_headers_are_client_claims() {
    for name in [
        "x-forwarded-ssl",
        "front-end-https",
        "x-forwarded-scheme",
        "x-url-scheme",
        "x-original-url",
        "x-rewrite-url",
        "x_original_url",
        "x_forwarded_ssl",
    ] {
        assert!(is_client_claim(&HeaderName::from_static(name)), "{name}");
    }
    assert!(!is_client_claim(&HeaderName::from_static("x-request-id")));
}

#[test]
fn every_claim_passes_the_name_filter_in_both_spellings() {
    for name in CLAIM_NAMES.into_iter().flatten() {
        let underscored = name.replace('-', "_");
        for n in [name, underscored.as_str()] {
            assert!(
                is_client_claim(&HeaderName::from_bytes(n.as_bytes()).unwrap()),
                "{n}"
            );
        }
    }
    for name in UNDERSCORED_FORWARDING {
        let underscored = name.replace('-', "_");
        assert!(is_client_claim(
            &HeaderName::from_bytes(underscored.as_bytes()).unwrap()
        ));
        assert!(!is_client_claim(&HeaderName::from_static(name)), "{name}");
    }
    // The names of an ordinary request are ruled out by the filter alone.
    for name in [
        "host",
        "x-request-id",
        "traceparent",
        "user-agent",
        "accept",
        "content-length",
        "x-real-ipv6",
        "a",
    ] {
        assert!(!is_client_claim(&HeaderName::from_static(name)), "{name}");
    }
    assert!(!CLAIM_FILTER.may_match(b"x-request-id"));
    assert!(!CLAIM_FILTER.may_match(b"traceparent"));
    assert!(!CLAIM_FILTER.may_match(&[b'x'; 200]));
}
