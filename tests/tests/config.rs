//! Every kind of bad configuration is refused at load, with the path of the
//! bad key.

#![allow(clippy::unwrap_used, clippy::useless_format)] // one format style for every case

use towergate::config::{ConfigErrors, Format, parse_str};

fn errors(yaml: &str, format: Format) -> ConfigErrors {
    match parse_str(yaml, format) {
        Err(e) => e,
        Ok(cfg) => match towergate::stack::compile(&cfg) {
            Err(e) => e,
            Ok(_) => panic!("config was accepted:\n{yaml}"),
        },
    }
}

const GOOD_ROUTE: &str = r#"  - name: users
    match: { path_prefix: "/users/" }
    upstream: "http://127.0.0.1:7001"
"#;

#[test]
fn each_kind_of_bad_config_names_its_path() {
    let cases: Vec<(String, &str, &str)> = vec![
        (
            format!(
                "listen: \"127.0.0.1:8080\"\nroutes:\n  - name: a\n    upstreem: \"http://x\"\n"
            ),
            "routes[0].upstreem",
            "unknown field",
        ),
        (
            format!(
                "listen: \"127.0.0.1:8080\"\nroutes:\n  - name: a\n    match: {{ path_prefixx: \"/a\" }}\n    upstream: \"http://x\"\n"
            ),
            "routes[0].match.path_prefixx",
            "unknown field",
        ),
        (
            format!("listen: \"nonsense\"\nroutes:\n{GOOD_ROUTE}"),
            "listen",
            "IP:PORT",
        ),
        (
            format!("listen: \"127.0.0.1:1\"\nroutes:\n  - name: a\n    upstream: \"ftp://x\"\n"),
            "routes[0].upstream",
            "scheme",
        ),
        (
            format!("listen: \"127.0.0.1:1\"\nroutes:\n  - name: a\n    upstream: \"nowhere\"\n"),
            "routes[0].upstream",
            "upstreams",
        ),
        (
            format!("listen: \"127.0.0.1:1\"\nroutes:\n{GOOD_ROUTE}    timeout: \"10 parsecs\"\n"),
            "routes[0].timeout",
            "unit",
        ),
        (
            format!("listen: \"127.0.0.1:1\"\nroutes:\n{GOOD_ROUTE}    timeout: \"10\"\n"),
            "routes[0].timeout",
            "no unit",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nroutes:\n{GOOD_ROUTE}{}",
                GOOD_ROUTE.replace("/users/", "/other/")
            ),
            "routes[1].name",
            "duplicate",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nroutes:\n  - name: a\n    match: {{ path: \"/a/{{id\" }}\n    upstream: \"http://x\"\n"
            ),
            "routes[0].match",
            "",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nroutes:\n  - name: a\n    match: {{ headers: {{ x-v: {{ regex: \"(\" }} }} }}\n    upstream: \"http://x\"\n"
            ),
            "routes[0].match",
            "",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nroutes:\n  - name: a\n    match: {{ methods: [\"GE T\"] }}\n    upstream: \"http://x\"\n"
            ),
            "routes[0].match.methods[0]",
            "method",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nroutes:\n  - name: a\n    match: {{ path: \"/a\" }}\n    strip_prefix: true\n    upstream: \"http://x\"\n"
            ),
            "routes[0].strip_prefix",
            "path_prefix",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nroutes:\n  - name: a\n    match: {{ path: \"/a/{{id}}\" }}\n    rewrite: \"/b/{{nope}}\"\n    upstream: \"http://x\"\n"
            ),
            "routes[0].match",
            "nope",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nserver: {{ trusted_proxies: [\"10.0.0.0/33\"] }}\nroutes:\n{GOOD_ROUTE}"
            ),
            "server.trusted_proxies[0]",
            "CIDR",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nserver: {{ max_body: \"10 apples\" }}\nroutes:\n{GOOD_ROUTE}"
            ),
            "server.max_body",
            "unit",
        ),
        (
            format!(
                "listeners:\n  - addr: \"127.0.0.1:0\"\n    tls:\n      certificates:\n        - {{ cert: \"/nonexistent/x.crt\", key: \"/nonexistent/x.key\" }}\nroutes:\n{GOOD_ROUTE}"
            ),
            "listeners[0].tls.certificates[0].cert",
            "/nonexistent/x.crt",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nupstreams:\n  u:\n    url: \"https://x\"\n    tls: {{ ca: \"/nonexistent/ca.pem\" }}\nroutes:\n  - name: a\n    upstream: u\n"
            ),
            "upstreams.u.tls",
            "/nonexistent/ca.pem",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nroutes:\n{GOOD_ROUTE}{}",
                GOOD_ROUTE.replace("name: users", "name: users2")
            ),
            "routes[1].match",
            "unreachable",
        ),
        (format!("routes:\n{GOOD_ROUTE}"), "listen", "no listener"),
        (
            format!("listen: \"127.0.0.1:1\"\nroutes: []\n"),
            "routes",
            "no routes",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nroutes:\n  - name: a\n    match: {{ headers: {{ x-v: {{ equals: \"1\", regex: \"1\" }} }} }}\n    upstream: \"http://x\"\n"
            ),
            "routes[0].match.headers.x-v",
            "exactly one",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nupstreams:\n  u:\n    endpoints: [{{ url: \"http://a:1\", weight: 2, backup: true }}]\nroutes:\n  - name: a\n    upstream: u\n"
            ),
            "upstreams.u.endpoints[0]",
            "",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nupstreams:\n  u:\n    endpoints: [\"http://a:1\"]\n    balance: {{ consistent_hash: ip, fallback: x }}\nroutes:\n  - name: a\n    upstream: u\n"
            ),
            "upstreams.u.balance",
            "",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nauth_providers:\n  k: {{ api_key: {{ keys: [{{ consumer: c, key: \"k-0123456789abcdef\" }}] }} }}\nroutes:\n  - name: a\n    upstream: \"http://x\"\n    auth: {{ any_of: [k], require: {{ claims: {{ role: {{ oneof: [admin] }} }} }} }}\n"
            ),
            "routes[0].auth.require.claims.role",
            "did you mean `one_of`",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nauth_providers:\n  k: {{ api_key: {{ keys: [{{ consumer: c, key: \"k-0123456789abcdef\" }}] }} }}\nroutes:\n  - name: a\n    upstream: \"http://x\"\n    auth: {{ any_of: [k], require: {{ claims: {{ role: {{ one_of: admin }} }} }} }}\n"
            ),
            "routes[0].auth.require.claims.role",
            "takes a list",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nserver: {{ header_read_timeout: \"0s\" }}\nroutes:\n{GOOD_ROUTE}"
            ),
            "server.header_read_timeout",
            "more than 0",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nroutes:\n  - name: a\n    upstream: \"http://a:1\"\n    cache: {{ key: {{ identity: iss }} }}\n"
            ),
            "routes[0].cache.key.identity",
            "shared by many callers",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nserver: {{ upgrade_protocols: [websocket, H2C] }}\nroutes:\n{GOOD_ROUTE}"
            ),
            "server.upgrade_protocols[1]",
            "h2c smuggling",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nserver: {{ http2_idle_timeout: \"0s\" }}\nroutes:\n{GOOD_ROUTE}"
            ),
            "server.http2_idle_timeout",
            "more than 0",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nserver: {{ max_header_bytes: \"4KiB\" }}\nroutes:\n{GOOD_ROUTE}"
            ),
            "server.max_header_bytes",
            "8KiB to 16MiB",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nupstreams:\n  u: {{ url: \"http://a:1\", timeout: \"0ms\" }}\nroutes:\n  - name: a\n    upstream: u\n"
            ),
            "upstreams.u.timeout",
            "more than 0",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nupstreams:\n  u: {{ url: \"http://a:1\", keepalive_timeout: \"0s\", body_idle_timeout: \"5m\" }}\nroutes:\n  - name: a\n    upstream: u\n"
            ),
            "upstreams.u.keepalive_timeout",
            "more than 0",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nroutes:\n  - name: a\n    aggregate:\n      max_concurrent_calls: 2305843009213693952\n      calls: [{{ name: x, upstream: \"http://a:1\", path: /x }}]\n"
            ),
            "routes[0].aggregate.max_concurrent_calls",
            "at most",
        ),
        (
            // Used by no route yet: still checked.
            format!(
                "listen: \"127.0.0.1:1\"\nupstreams:\n  spare:\n    endpoints: [\"http://a:1\"]\n    balance: fastest\nroutes:\n{GOOD_ROUTE}"
            ),
            "upstreams.spare.balance",
            "",
        ),
        (
            format!(
                "listen: \"127.0.0.1:18080\"\nlisteners:\n  - addr: \"0.0.0.0:18080\"\nroutes:\n{GOOD_ROUTE}"
            ),
            "listeners[0].addr",
            "already bound by `listen`",
        ),
        (
            format!("listen: \"127.0.0.1:9901\"\nroutes:\n{GOOD_ROUTE}"),
            "admin.listen",
            "already bound by `listen`",
        ),
        (
            // Only a DNS pool: no proxy is built at load to refuse it.
            format!(
                "listen: \"127.0.0.1:1\"\nserver: {{ via: \"tower gate\" }}\nupstreams:\n  d: {{ dns: {{ host: svc.local, port: 80 }} }}\nroutes:\n  - name: a\n    upstream: d\n"
            ),
            "server.via",
            "not a token",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nobservability:\n  tracing: {{ otlp_endpoint: \"https://c:4317\", protocol: grpc }}\nroutes:\n{GOOD_ROUTE}"
            ),
            "observability.tracing.otlp_endpoint",
            "plaintext only",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nupstreams:\n  u: {{ endpoints: [\"http://a:1\"], health_check: {{ interval: \"0s\" }} }}\nroutes:\n  - name: a\n    upstream: u\n"
            ),
            "upstreams.u.health_check.interval",
            "more than 0",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nupstreams:\n  u: {{ endpoints: [\"http://a:1\"], request_timeout: \"0s\" }}\nroutes:\n  - name: a\n    upstream: u\n"
            ),
            "upstreams.u.request_timeout",
            "more than 0",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nupstreams:\n  u: {{ endpoints: [\"http://a:1\"], retry: {{ budget_ratio: 2000 }} }}\nroutes:\n  - name: a\n    upstream: u\n"
            ),
            "upstreams.u.retry.budget_ratio",
            "between 0 and 1000",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nupstreams:\n  s: {{ srv: {{ name: _http._tcp.svc.local, interval: \"0s\" }} }}\nroutes:\n  - name: a\n    upstream: s\n"
            ),
            "upstreams.s.srv.interval",
            "more than 0",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nupstreams:\n  u: {{ url: \"http://a:1\", retry: {{ max_retries: 1 }} }}\nroutes:\n  - name: a\n    upstream: u\n"
            ),
            "upstreams.u.retry",
            "`endpoints`, `dns` or `srv`",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nupstreams:\n  u: {{ endpoints: [\"http://a:1\"], tls: {{ server_name: a }} }}\nroutes:\n  - name: a\n    upstream: u\n"
            ),
            "upstreams.u.tls",
            "no https:// endpoint",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nroutes:\n  - name: a\n    aggregate:\n      deadline: \"0s\"\n      calls: [{{ name: x, upstream: \"http://a:1\", path: /x }}]\n"
            ),
            "routes[0].aggregate.deadline",
            "more than 0",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nroutes:\n  - name: a\n    aggregate:\n      max_response_size: 0\n      calls: [{{ name: x, upstream: \"http://a:1\", path: /x }}]\n"
            ),
            "routes[0].aggregate.max_response_size",
            "at least 1",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nrate_limiting:\n  store: redis\n  redis: {{ url: \"redis://127.0.0.1:6379\", timeout: \"0s\" }}\nroutes:\n{GOOD_ROUTE}    rate_limit: {{ limits: [{{ rate: \"10/s\" }}] }}\n"
            ),
            "rate_limiting.redis.timeout",
            "more than 0",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nrate_limiting:\n  store: redis\n  redis: {{ url: \"redis://127.0.0.1:6379\", connect_timeout: \"0s\" }}\nroutes:\n{GOOD_ROUTE}    rate_limit: {{ limits: [{{ rate: \"10/s\" }}] }}\n"
            ),
            "rate_limiting.redis.connect_timeout",
            "more than 0",
        ),
        (
            // No route rate-limits, or caches: checked all the same.
            format!(
                "listen: \"127.0.0.1:1\"\nrate_limiting: {{ max_keys: 0 }}\nroutes:\n{GOOD_ROUTE}"
            ),
            "rate_limiting.max_keys",
            "at least 1",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\ncache: {{ max_size: \"64 apples\" }}\nroutes:\n{GOOD_ROUTE}"
            ),
            "cache.max_size",
            "unit",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nobservability: {{ enabled: false, access_log: {{ format: jsonl }} }}\nroutes:\n{GOOD_ROUTE}"
            ),
            "observability.access_log.format",
            "json, common or combined",
        ),
        (
            format!(
                "listen: \"127.0.0.1:1\"\nroutes:\n  - name: a\n    redirect: {{ to: \"https://b.example/\", port: 8443 }}\n"
            ),
            "routes[0].redirect.port",
            "https: true",
        ),
    ];
    for (yaml, path, needle) in cases {
        let e = errors(&yaml, Format::Yaml);
        let hit = e.errors.iter().find(|err| err.path == path);
        let Some(hit) = hit else {
            panic!("expected an error at `{path}` for\n{yaml}\ngot: {e}");
        };
        assert!(
            hit.message.contains(needle),
            "`{path}`: {:?} lacks {needle:?}",
            hit.message
        );
    }
}

/// A pool's bad settings are all reported, each at its own path (the
/// balancer, built after, reports only its first, at `endpoints`).
#[test]
fn a_pools_errors_are_all_reported_at_their_paths() {
    let yaml = r#"listen: "127.0.0.1:1"
upstreams:
  u:
    endpoints: ["http://127.0.0.1:1"]
    health_check: { interval: "0s", timeout: "0s" }
    ejection: { base_time: "0s", max_time: "0s" }
    circuit_breaker: { max_requests: 0, max_endpoint_requests: 0 }
  d:
    dns: { host: svc.local, port: 80, interval: "0s" }
routes:
  - name: a
    upstream: u
"#;
    let e = errors(yaml, Format::Yaml);
    for p in [
        "upstreams.u.health_check.interval",
        "upstreams.u.health_check.timeout",
        "upstreams.u.ejection.base_time",
        "upstreams.u.ejection.max_time",
        "upstreams.u.circuit_breaker.max_requests",
        "upstreams.u.circuit_breaker.max_endpoint_requests",
        "upstreams.d.dns.interval",
    ] {
        assert!(e.has_path(p), "missing {p} in {e}");
    }
}

/// A setting checked at load and again by the builder that uses it (once
/// per route for a shared store) is reported once.
#[test]
fn a_store_error_is_reported_once() {
    let yaml = format!(
        "listen: \"127.0.0.1:1\"\ncache: {{ max_size: \"64 apples\" }}\nrate_limiting:\n  store: redis\n  redis: {{ url: \"redis://127.0.0.1:6379\", timeout: soon }}\nroutes:\n{GOOD_ROUTE}    cache: {{ ttl: 1m }}\n    rate_limit: {{ limits: [{{ rate: \"10/s\" }}] }}\n{}    rate_limit: {{ limits: [{{ rate: \"10/s\" }}] }}\n",
        GOOD_ROUTE
            .replace("name: users", "name: other")
            .replace("/users/", "/other/")
    );
    let e = errors(&yaml, Format::Yaml);
    for p in ["cache.max_size", "rate_limiting.redis.timeout"] {
        let n = e.errors.iter().filter(|err| err.path == p).count();
        assert_eq!(n, 1, "{p} in {e}");
    }
}

#[test]
fn routes_told_apart_by_credential_like_values_are_both_reachable() {
    // The shown form of a match hides such values (`<redacted>`); telling
    // routes apart must not use it.
    let yaml = r#"listen: "127.0.0.1:0"
routes:
  - name: google
    match: { path_prefix: /login, headers: { x-auth-provider: google } }
    upstream: "http://127.0.0.1:1"
  - name: github
    match: { path_prefix: /login, headers: { x-auth-provider: github } }
    upstream: "http://127.0.0.1:2"
  - name: key-a
    match: { path_prefix: /k, query: { key: a } }
    upstream: "http://127.0.0.1:1"
  - name: key-b
    match: { path_prefix: /k, query: { key: b } }
    upstream: "http://127.0.0.1:2"
"#;
    let cfg = parse_str(yaml, Format::Yaml).unwrap();
    towergate::stack::compile(&cfg).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn yaml_reads_only_true_and_false_as_booleans() {
    // YAML 1.1 read `on`, `NO`, `yes` as booleans, before the schema could
    // say they are strings (the "Norway problem"); TOML never did.
    let yaml = r#"listen: "127.0.0.1:0"
routes:
  - name: r
    match: { path_prefix: / }
    upstream: "http://127.0.0.1:1"
    request_headers:
      set: { x-flag: on, x-country: NO, x-answer: yes }
"#;
    let cfg = parse_str(yaml, Format::Yaml).unwrap_or_else(|e| panic!("{e}"));
    towergate::stack::compile(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let shown = serde_json::to_string(&cfg).unwrap();
    for kept in [
        "\"x-flag\":\"on\"",
        "\"x-country\":\"NO\"",
        "\"x-answer\":\"yes\"",
    ] {
        assert!(shown.contains(kept), "{kept} missing: {shown}");
    }
}

#[test]
fn all_errors_are_reported_together() {
    let yaml = r#"listen: "nonsense"
server: { drain_timeout: "forever" }
observability: { forget_endpoints_after: "soon" }
routes:
  - name: a
    upstream: "nowhere"
  - name: a
    match: { path_prefix: "/b/" }
    timeout: "1 fortnight"
    upstream: "http://x"
"#;
    let e = errors(yaml, Format::Yaml);
    for p in [
        "listen",
        "server.drain_timeout",
        "routes[0].upstream",
        "routes[1].name",
        "routes[1].timeout",
        "observability.forget_endpoints_after",
    ] {
        assert!(e.has_path(p), "missing {p} in {e}");
    }
    let text = e.to_string();
    assert!(text.contains("6 errors"), "{text}");
}

#[test]
fn toml_has_the_same_schema_and_paths() {
    let ok = r#"
listen = "127.0.0.1:8080"
[[routes]]
name = "users"
match = { path_prefix = "/users/" }
strip_prefix = true
upstream = "http://127.0.0.1:7001"
"#;
    let cfg = parse_str(ok, Format::Toml).unwrap();
    towergate::stack::compile(&cfg).unwrap();
    let bad = r#"
listen = "127.0.0.1:8080"
[[routes]]
name = "users"
upstream = "http://127.0.0.1:7001"
[[routes]]
name = "orders"
upstream = "http://127.0.0.1:7002"
timeout = 5
"#;
    let e = errors(bad, Format::Toml);
    assert!(e.has_path("routes[1].timeout"), "{e}");
    let e = errors("listen = \"127.0.0.1:1\"\nbogus = 1\n", Format::Toml);
    assert!(e.errors[0].message.contains("bogus"), "{e}");
}

#[test]
fn seed_example_is_valid() {
    let yaml = r#"listen: "127.0.0.1:8080"
routes:
  - name: users
    match: { path_prefix: "/users/" }
    strip_prefix: true
    upstream: "http://127.0.0.1:7001"
  - name: orders
    match: { path_prefix: "/orders/" }
    strip_prefix: true
    upstream: "http://127.0.0.1:7002"
"#;
    let cfg = parse_str(yaml, Format::Yaml).unwrap();
    let c = towergate::stack::compile(&cfg).unwrap();
    assert_eq!(c.listeners.len(), 1);
    assert_eq!(c.listeners[0].addr.to_string(), "127.0.0.1:8080");
}

#[test]
fn yaml_syntax_errors_are_reported() {
    let e = parse_str("listen: [unclosed\n", Format::Yaml).unwrap_err();
    assert!(e.errors[0].message.contains("YAML"), "{e}");
}
