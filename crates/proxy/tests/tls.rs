//! TLS to the upstream: a private CA, SNI override, mTLS, untrusted certs.
#![allow(clippy::unwrap_used)]

mod common;

use towergate_core::cause_ref;
use towergate_proxy::error::{UpstreamUnavailable, to_problem};
use towergate_proxy::{Client, Proxy};
use towergate_test::echo_router;
use towergate_test::tls::TestCa;

use common::{call, call_err, get, json, spawn_tls};

fn proxy(url: String, client: Client) -> Proxy {
    Proxy::builder(url).client(client).build().unwrap()
}

#[tokio::test]
async fn https_upstream_with_a_private_ca() {
    let ca = TestCa::new();
    let cert = ca.leaf(&["localhost", "127.0.0.1"]);
    let up = spawn_tls(echo_router("svc"), &cert, None).await;
    let client = Client::builder()
        .ca_pem(ca.cert_pem.clone())
        .build()
        .unwrap();

    // By DNS name and by IP address (IP SAN, no SNI).
    let port = up.addr.port();
    for url in [
        format!("https://localhost:{port}/base"),
        format!("https://127.0.0.1:{port}/base"),
    ] {
        let v = json(call(&proxy(url.clone(), client.clone()), get("/a?b=1")).await).await;
        assert_eq!(v["path"], "/base/a", "{url}");
        assert_eq!(v["query"], "b=1", "{url}");
    }
}

#[tokio::test]
async fn ca_pem_may_hold_several_certificates() {
    let ca = TestCa::new();
    let other = TestCa::new();
    let cert = ca.leaf(&["localhost"]);
    let up = spawn_tls(echo_router("svc"), &cert, None).await;
    let bundle = format!("{}\n{}", other.cert_pem, ca.cert_pem);
    let client = Client::builder().ca_pem(bundle).build().unwrap();
    let url = format!("https://localhost:{}", up.addr.port());
    let rsp = call(&proxy(url, client), get("/")).await;
    assert_eq!(rsp.status(), 200);
}

#[tokio::test]
async fn server_name_override() {
    let ca = TestCa::new();
    let cert = ca.leaf(&["svc.internal"]);
    let up = spawn_tls(echo_router("svc"), &cert, None).await;
    let url = format!("https://127.0.0.1:{}", up.addr.port());

    let named = Client::builder()
        .ca_pem(ca.cert_pem.clone())
        .server_name("svc.internal")
        .build()
        .unwrap();
    let rsp = call(&proxy(url.clone(), named), get("/")).await;
    assert_eq!(rsp.status(), 200);

    // Without it the certificate does not match the IP.
    let unnamed = Client::builder()
        .ca_pem(ca.cert_pem.clone())
        .build()
        .unwrap();
    let err = call_err(&proxy(url, unnamed), get("/")).await;
    assert!(cause_ref::<UpstreamUnavailable>(&*err).is_some(), "{err:?}");
}

#[tokio::test]
async fn mtls_upstream_requires_a_client_certificate() {
    let ca = TestCa::new();
    let server_cert = ca.leaf(&["localhost"]);
    let client_cert = ca.leaf(&["gateway.internal"]);
    let up = spawn_tls(echo_router("svc"), &server_cert, Some(&ca)).await;
    let url = format!("https://localhost:{}", up.addr.port());

    let anonymous = Client::builder()
        .ca_pem(ca.cert_pem.clone())
        .build()
        .unwrap();
    let err = call_err(&proxy(url.clone(), anonymous), get("/")).await;
    assert!(cause_ref::<UpstreamUnavailable>(&*err).is_some(), "{err:?}");
    assert_eq!(to_problem(&*err).status(), 502);

    let authenticated = Client::builder()
        .ca_pem(ca.cert_pem.clone())
        .client_cert_pem(client_cert.cert_pem.clone(), client_cert.key_pem.clone())
        .build()
        .unwrap();
    let v = json(call(&proxy(url, authenticated), get("/me")).await).await;
    assert_eq!(v["path"], "/me");
}

#[tokio::test]
async fn untrusted_certificate_is_unavailable() {
    let ca = TestCa::new();
    let stranger = TestCa::new();
    let cert = stranger.leaf(&["localhost"]);
    let up = spawn_tls(echo_router("svc"), &cert, None).await;
    let url = format!("https://localhost:{}", up.addr.port());

    let client = Client::builder()
        .ca_pem(ca.cert_pem.clone())
        .build()
        .unwrap();
    let err = call_err(&proxy(url.clone(), client), get("/")).await;
    let unavailable = cause_ref::<UpstreamUnavailable>(&*err).unwrap();
    assert!(unavailable.is_connect());
    let problem = to_problem(&*err);
    assert_eq!(problem.status(), 502);
    assert!(!problem.detail_text().unwrap().contains("certificate"));

    // System roots do not know a test CA either.
    let system = Client::builder().build().unwrap();
    let err = call_err(&proxy(url, system), get("/")).await;
    assert!(cause_ref::<UpstreamUnavailable>(&*err).is_some(), "{err:?}");
}

#[test]
fn bad_pem_is_a_build_error() {
    let ca = TestCa::new();
    let cert = ca.leaf(&["x"]);
    assert!(Client::builder().ca_pem("garbage").build().is_err());
    assert!(Client::builder().ca_pem("").build().is_err());
    assert!(
        Client::builder()
            .client_cert_pem(cert.cert_pem.clone(), "not a key")
            .build()
            .is_err()
    );
    let other = ca.leaf(&["y"]);
    assert!(
        Client::builder()
            .client_cert_pem(cert.cert_pem.clone(), other.key_pem.clone())
            .build()
            .is_err(),
        "a key that does not match the certificate"
    );
    assert!(
        Client::builder()
            .server_name("not a name!")
            .build()
            .is_err()
    );
    assert!(Client::builder().server_name("[::1]").build().is_ok());
}
