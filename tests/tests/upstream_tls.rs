//! HTTPS upstreams configured in the file: a private CA, mTLS, SNI override.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic by design

mod support;

use serde_json::Value;
use support::{client, gateway};
use towergate_test::echo_router;
use towergate_test::tls::{TestCa, spawn_tls_upstream};

#[tokio::test]
async fn https_upstream_with_private_ca_and_client_certificate() {
    let ca = TestCa::new();
    let server = ca.leaf(&["svc.internal"]);
    let gw_cert = ca.leaf(&["gateway.internal"]);
    let up = spawn_tls_upstream(echo_router("secure"), &server, Some(&ca)).await;
    let dir = std::env::temp_dir().join(format!("towergate-uptls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.pem"), &ca.cert_pem).unwrap();
    std::fs::write(dir.join("gw.crt"), &gw_cert.cert_pem).unwrap();
    std::fs::write(dir.join("gw.key"), &gw_cert.key_pem).unwrap();
    let port = up.addr.port();
    let yaml = format!(
        r#"listen: "127.0.0.1:0"
upstreams:
  mtls:
    url: "https://127.0.0.1:{port}"
    tls: {{ ca: "{d}/ca.pem", client_cert: "{d}/gw.crt", client_key: "{d}/gw.key", server_name: "svc.internal" }}
  no-client-cert:
    url: "https://127.0.0.1:{port}"
    tls: {{ ca: "{d}/ca.pem", server_name: "svc.internal" }}
  system-roots:
    url: "https://127.0.0.1:{port}"
    tls: {{ server_name: "svc.internal" }}
routes:
  - name: mtls
    match: {{ path_prefix: "/mtls/" }}
    strip_prefix: true
    upstream: mtls
  - name: no-client-cert
    match: {{ path_prefix: "/nocert/" }}
    strip_prefix: true
    upstream: no-client-cert
  - name: system-roots
    match: {{ path_prefix: "/roots/" }}
    strip_prefix: true
    upstream: system-roots
"#,
        d = dir.display()
    );
    let (_gw, addr) = gateway(&yaml).await;
    let c = client();
    let rsp = c
        .get(format!("http://{addr}/mtls/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    let v: Value = rsp.json().await.unwrap();
    assert_eq!(v["service"], "secure");
    assert_eq!(v["path"], "/hello");
    // The upstream requires a client certificate.
    let rsp = c
        .get(format!("http://{addr}/nocert/hello"))
        .send()
        .await
        .unwrap();
    towergate_test::assert_problem_reqwest(rsp, 502).await;
    // The private CA is not among the system roots.
    let rsp = c
        .get(format!("http://{addr}/roots/hello"))
        .send()
        .await
        .unwrap();
    towergate_test::assert_problem_reqwest(rsp, 502).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_found_through_dns_are_named_by_their_host() {
    // The certificate names `localhost` only, not 127.0.0.1: the endpoint
    // is dialled by the address DNS gave, but SNI, the certificate check
    // and Host carry the name it was found under.
    let ca = TestCa::new();
    let server = ca.leaf(&["localhost"]);
    let up = spawn_tls_upstream(echo_router("named"), &server, None).await;
    let dir = std::env::temp_dir().join(format!("towergate-dnstls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.pem"), &ca.cert_pem).unwrap();
    let port = up.addr.port();
    let yaml = format!(
        r#"listen: "127.0.0.1:0"
upstreams:
  named:
    dns: {{ host: localhost, port: {port}, scheme: https, interval: "1s" }}
    tls: {{ ca: "{d}/ca.pem" }}
    retry: {{ max_retries: 2, on: [connect] }}
    health_check: {{ path: /healthz, interval: "100ms", timeout: "80ms", healthy_threshold: 1, unhealthy_threshold: 1 }}
  rewritten:
    dns: {{ host: localhost, port: {port}, scheme: https, interval: "1s" }}
    tls: {{ ca: "{d}/ca.pem" }}
    retry: {{ max_retries: 2, on: [connect] }}
routes:
  - name: named
    match: {{ path_prefix: "/named/" }}
    upstream: named
  - name: rewritten
    match: {{ path_prefix: "/rewritten/" }}
    upstream: rewritten
    host_rewrite: "api.example"
"#,
        d = dir.display()
    );
    let (gw, addr) = gateway(&yaml).await;
    let c = client();
    for _ in 0..4 {
        let rsp = c
            .get(format!("http://{addr}/named/x"))
            .send()
            .await
            .unwrap();
        assert_eq!(rsp.status(), 200);
        let v: Value = rsp.json().await.unwrap();
        assert_eq!(v["service"], "named");
        assert_eq!(host_of(&v), format!("localhost:{port}"));
    }
    // Health checks go under the name too: the IPv4 endpoint (the one
    // listening) passes them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let states = gw.live().stack().upstream_states();
        let named = states
            .iter()
            .find(|(n, _)| n == "named")
            .map(|(_, s)| s.clone());
        let v4 = named
            .unwrap_or_default()
            .into_iter()
            .find(|s| s.url.contains("127.0.0.1"));
        let checked = v4.as_ref().and_then(|s| s.active_check.clone());
        if let Some(c) = checked.filter(|c| c.last_status.is_some() || c.last_error.is_some()) {
            assert!(c.healthy, "{c:?}");
            assert_eq!(c.last_status, Some(200), "{c:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no health check ran: {v4:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A route's own Host still wins; SNI stays the DNS name.
    let rsp = c
        .get(format!("http://{addr}/rewritten/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    let v: Value = rsp.json().await.unwrap();
    assert_eq!(host_of(&v), "api.example");
}

/// The Host the echo upstream saw: `:authority` over HTTP/2 (which ALPN
/// picks with this upstream), the `host` field over HTTP/1.1.
fn host_of(v: &Value) -> String {
    v["authority"]
        .as_str()
        .or(v["headers"]["host"][0].as_str())
        .unwrap_or_default()
        .to_owned()
}
