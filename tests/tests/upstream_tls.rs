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
