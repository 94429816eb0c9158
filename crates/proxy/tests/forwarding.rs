//! What the upstream sees, and what comes back: paths, headers, pooling.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get as get_route;
use http::Version;
use serde_json::json;
use towergate_core::{ClientAddr, TrustedProxies};
use towergate_proxy::Proxy;
use towergate_test::{echo_router, spawn_upstream};

use common::{call, get, json, spawn_counting};

#[tokio::test]
async fn joins_base_path_and_keeps_query() {
    let up = spawn_upstream(echo_router("svc")).await;
    let cases = [
        ("/api/", "/42?x=1&y=%20z", "/api/42", json!("x=1&y=%20z")),
        ("/api", "/42?x=1", "/api/42", json!("x=1")),
        ("/api", "/", "/api/", json!(null)),
        ("", "/a/b?c", "/a/b", json!("c")),
        ("/", "/a", "/a", json!(null)),
    ];
    for (base, path, want_path, want_query) in cases {
        let proxy = Proxy::builder(format!("{}{base}", up.url()))
            .build()
            .unwrap();
        let v = json(call(&proxy, get(path)).await).await;
        assert_eq!(v["path"], want_path, "{base} + {path}");
        assert_eq!(v["query"], want_query, "{base} + {path}");
    }
}

#[tokio::test]
async fn absolute_form_request_uri_is_rewritten() {
    // HTTP/2 servers hand over absolute URIs; only path and query matter.
    let up = spawn_upstream(echo_router("svc")).await;
    let proxy = Proxy::builder(format!("{}/base", up.url()))
        .build()
        .unwrap();
    let req = http::Request::get("https://api.example/v1/items?page=2")
        .version(Version::HTTP_2)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let v = json(call(&proxy, req).await).await;
    assert_eq!(v["path"], "/base/v1/items");
    assert_eq!(v["query"], "page=2");
    assert_eq!(v["version"], "HTTP/1.1");
    let h = &v["headers"];
    assert_eq!(h["via"], json!(["2 towergate"]));
    assert_eq!(h["x-forwarded-host"], json!(["api.example"]));
    assert_eq!(h["x-forwarded-proto"], json!(["https"]));
}

#[tokio::test]
async fn upstream_sees_clean_and_forwarding_headers() {
    let up = spawn_upstream(echo_router("svc")).await;
    let proxy = Proxy::builder(up.url()).build().unwrap();
    let mut req = http::Request::get("/h")
        .header("host", "api.example")
        .header("connection", "keep-alive, X-Hop")
        .header("keep-alive", "timeout=5")
        .header("x-hop", "connection-scoped")
        .header("proxy-authorization", "Basic eDp5")
        .header("proxy-connection", "keep-alive")
        .header("te", "trailers")
        .header("x-forwarded-for", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6;proto=https")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "spoofed.example")
        .header("via", "1.0 edge")
        .header("authorization", "Bearer token")
        .header("x-custom", "kept")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    req.extensions_mut()
        .insert(ClientAddr::direct("192.0.2.9:5555".parse().unwrap(), false));
    let v = json(call(&proxy, req).await).await;
    let h = &v["headers"];
    for gone in [
        "connection",
        "keep-alive",
        "x-hop",
        "proxy-authorization",
        "proxy-connection",
        "te",
    ] {
        assert!(h.get(gone).is_none(), "{gone} reached the upstream: {h}");
    }
    assert_eq!(h["host"], json!([up.addr.to_string()]));
    assert_eq!(h["x-forwarded-for"], json!(["192.0.2.9"]));
    assert_eq!(
        h["forwarded"],
        json!(["for=192.0.2.9;proto=http;host=api.example"])
    );
    assert_eq!(h["x-forwarded-proto"], json!(["http"]));
    assert_eq!(h["x-forwarded-host"], json!(["api.example"]));
    assert_eq!(h["via"], json!(["1.0 edge, 1.1 towergate"]));
    assert_eq!(h["authorization"], json!(["Bearer token"]));
    assert_eq!(h["x-custom"], json!(["kept"]));
}

#[tokio::test]
async fn trusted_peer_headers_are_extended() {
    let up = spawn_upstream(echo_router("svc")).await;
    let proxy = Proxy::builder(up.url())
        .trusted_proxies(TrustedProxies::new(["10.0.0.0/8".parse().unwrap()]))
        .via("gw-1")
        .build()
        .unwrap();
    let mut req = http::Request::get("/h")
        .header("host", "lb.internal")
        .header("x-forwarded-for", "203.0.113.5")
        .header("forwarded", "for=203.0.113.5;proto=https;host=api.example")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "api.example")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    req.extensions_mut()
        .insert(ClientAddr::direct("10.1.2.3:4000".parse().unwrap(), false));
    let v = json(call(&proxy, req).await).await;
    let h = &v["headers"];
    assert_eq!(h["x-forwarded-for"], json!(["203.0.113.5, 10.1.2.3"]));
    assert_eq!(
        h["forwarded"],
        json!([
            "for=203.0.113.5;proto=https;host=api.example, for=10.1.2.3;proto=http;host=lb.internal"
        ])
    );
    assert_eq!(h["x-forwarded-proto"], json!(["https"]));
    assert_eq!(h["x-forwarded-host"], json!(["api.example"]));
    assert_eq!(h["via"], json!(["1.1 gw-1"]));
}

#[tokio::test]
async fn ipv6_tls_client_in_forwarded() {
    let up = spawn_upstream(echo_router("svc")).await;
    let proxy = Proxy::builder(up.url()).build().unwrap();
    let mut req = http::Request::get("/h")
        .header("host", "api.example:8443")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    req.extensions_mut().insert(ClientAddr::direct(
        "[2001:db8::7]:4000".parse().unwrap(),
        true,
    ));
    let v = json(call(&proxy, req).await).await;
    let h = &v["headers"];
    assert_eq!(h["x-forwarded-for"], json!(["2001:db8::7"]));
    assert_eq!(
        h["forwarded"],
        json!(["for=\"[2001:db8::7]\";proto=https;host=\"api.example:8443\""])
    );
    assert_eq!(h["x-forwarded-proto"], json!(["https"]));
}

#[tokio::test]
async fn host_policies() {
    let up = spawn_upstream(echo_router("svc")).await;
    let req = || {
        http::Request::get("/")
            .header("host", "api.example")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };

    let preserve = Proxy::builder(up.url())
        .preserve_host(true)
        .build()
        .unwrap();
    let v = json(call(&preserve, req()).await).await;
    assert_eq!(v["headers"]["host"], json!(["api.example"]));

    let fixed = Proxy::builder(up.url())
        .preserve_host(true)
        .host_override("svc.internal")
        .build()
        .unwrap();
    let v = json(call(&fixed, req()).await).await;
    assert_eq!(v["headers"]["host"], json!(["svc.internal"]));

    // Preserving with no Host to preserve falls back to the upstream's.
    let v = json(call(&preserve, get("/")).await).await;
    assert_eq!(v["headers"]["host"], json!([up.addr.to_string()]));
}

#[tokio::test]
async fn response_hop_by_hop_headers_are_removed() {
    let app = Router::new().route(
        "/",
        get_route(|| async {
            (
                [
                    ("connection", "x-internal"),
                    ("x-internal", "secret"),
                    ("keep-alive", "timeout=5"),
                    ("proxy-authenticate", "Basic"),
                    ("via", "1.1 backend"),
                    ("x-app", "kept"),
                ],
                "ok",
            )
                .into_response()
        }),
    );
    let up = spawn_upstream(app).await;
    let proxy = Proxy::builder(up.url()).build().unwrap();
    let rsp = call(&proxy, get("/")).await;
    let h = rsp.headers();
    for gone in [
        "connection",
        "x-internal",
        "keep-alive",
        "proxy-authenticate",
    ] {
        assert!(h.get(gone).is_none(), "{gone} came back: {h:?}");
    }
    assert_eq!(h["via"], "1.1 backend, 1.1 towergate");
    assert_eq!(h["x-app"], "kept");
}

#[tokio::test]
async fn connections_are_pooled() {
    let (up, connections) = spawn_counting(echo_router("svc")).await;
    let proxy = Proxy::builder(format!("http://{}", up.addr))
        .build()
        .unwrap();
    for i in 0..5 {
        let v = json(call(&proxy, get(&format!("/{i}"))).await).await;
        assert_eq!(v["path"], format!("/{i}"));
        // Give the finished connection a moment to return to the pool.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn methods_and_bodies_pass_through() {
    let up = spawn_upstream(echo_router("svc")).await;
    let proxy = Proxy::builder(up.url()).build().unwrap();
    let req = http::Request::post("/items")
        .header("content-type", "application/json")
        .body(String::from("{\"a\":1}"))
        .unwrap();
    let v = json(call(&proxy, req).await).await;
    assert_eq!(v["method"], "POST");
    assert_eq!(v["body_len"], 7);
    assert_eq!(v["headers"]["content-type"], json!(["application/json"]));
}
