//! Per-route policies through the assembled gateway: CORS preflights, header
//! transforms, request validation with JSON Schema, compression decoded by
//! a real client (curl), request decompression, redirects, fixed responses.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic by design

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::Request;
use axum::response::IntoResponse;
use axum::routing::{any, get};
use serde_json::{Value, json};
use support::{client, gateway, gateway_from_file};
use towergate_test::{assert_problem_reqwest, echo_router, spawn_upstream};

/// An upstream that counts its requests, echoes request bodies byte for
/// byte (`/raw`), and serves bodies of several kinds.
async fn upstream(count: Arc<AtomicUsize>) -> towergate_test::Upstream {
    let c = count.clone();
    let echo = echo_router("echo");
    let app = Router::new()
        .route(
            "/raw",
            any(move |req: Request| {
                let c = c.clone();
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    let ct = req.headers().get("content-type").cloned();
                    let body = axum::body::to_bytes(req.into_body(), usize::MAX)
                        .await
                        .unwrap();
                    let mut rsp = body.into_response();
                    if let Some(ct) = ct {
                        rsp.headers_mut().insert("x-received-content-type", ct);
                    }
                    rsp
                }
            }),
        )
        .route(
            "/text",
            get(|| async { ([("content-type", "text/plain")], big_text()) }),
        )
        .route(
            "/small",
            get(|| async { ([("content-type", "text/plain")], "tiny") }),
        )
        .route(
            "/png",
            get(|| async { ([("content-type", "image/png")], big_text()) }),
        )
        .route(
            "/encoded",
            get(|| async {
                (
                    [
                        ("content-type", "text/plain"),
                        ("content-encoding", "identity-test"),
                    ],
                    big_text(),
                )
            }),
        )
        .fallback_service({
            let count = count.clone();
            tower::ServiceBuilder::new()
                .map_request(move |r: Request| {
                    count.fetch_add(1, Ordering::SeqCst);
                    r
                })
                .service(echo)
        });
    spawn_upstream(app).await
}

fn big_text() -> String {
    (0..2000)
        .map(|i| format!("line {i}: the quick brown fox jumps over the lazy dog\n"))
        .collect()
}

#[tokio::test]
async fn cors_preflights_are_answered_at_the_gateway() {
    let count = Arc::new(AtomicUsize::new(0));
    let up = upstream(count.clone()).await;
    let (_gw, addr) = gateway(&format!(
        r#"listen: "127.0.0.1:0"
routes:
  - name: api
    match: {{ path_prefix: "/" }}
    upstream: "{}"
    cors:
      origins: ["https://app.example.com", "https://*.example.dev"]
      methods: [GET, POST]
      headers: [content-type, authorization]
      expose_headers: [x-request-id]
      credentials: true
      max_age: "10m"
"#,
        up.url()
    ))
    .await;
    let c = client();
    let preflight = |origin: &'static str| {
        c.request(reqwest::Method::OPTIONS, format!("http://{addr}/orders"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    // Allowed: exact and wildcard-subdomain origins.
    for origin in ["https://app.example.com", "https://shop.eu.example.dev"] {
        let rsp = preflight(origin).await.unwrap();
        assert!(rsp.status().is_success(), "{}", rsp.status());
        let h = rsp.headers();
        assert_eq!(h["access-control-allow-origin"], origin);
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["access-control-max-age"], "600");
        let methods = h["access-control-allow-methods"].to_str().unwrap();
        assert!(methods.contains("POST"), "{methods}");
        let headers = h["access-control-allow-headers"].to_str().unwrap();
        assert!(headers.contains("content-type"), "{headers}");
    }
    // Refused: no allow-origin, so the browser blocks the real request.
    for origin in [
        "https://evil.example.com",
        "https://example.dev",
        "https://evil-example.dev",
    ] {
        let rsp = preflight(origin).await.unwrap();
        assert!(
            rsp.headers().get("access-control-allow-origin").is_none(),
            "{origin} was allowed"
        );
    }
    assert_eq!(
        count.load(Ordering::SeqCst),
        0,
        "a preflight reached the upstream"
    );
    // A simple request goes through, with the CORS headers added.
    let rsp = c
        .get(format!("http://{addr}/orders"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(
        rsp.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(
        rsp.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("x-request-id")
    );
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn credentials_with_any_origin_is_a_config_error() {
    let cfg = towergate::config::parse_str(
        r#"listen: "127.0.0.1:0"
routes:
  - name: api
    match: { path_prefix: "/" }
    upstream: "http://127.0.0.1:1"
    cors: { origins: ["*"], credentials: true }
"#,
        towergate::config::Format::Yaml,
    )
    .unwrap();
    let e = towergate::stack::compile(&cfg).unwrap_err();
    assert!(
        e.errors
            .iter()
            .any(|e| e.path == "routes[0].cors.credentials"),
        "{e}"
    );
}

#[tokio::test]
async fn header_transforms_reach_the_upstream_and_the_client() {
    let count = Arc::new(AtomicUsize::new(0));
    let up = upstream(count).await;
    let (_gw, addr) = gateway(&format!(
        r#"listen: "127.0.0.1:0"
routes:
  - name: users
    match: {{ path: "/users/{{id}}" }}
    upstream: "{}"
    request_headers:
      set: {{ x-user-id: "{{params.id}}", x-route: "{{route}}", x-req: "{{request_id}}", x-client: "{{client.ip}}", x-user-sub: "{{identity.sub}}" }}
      add: {{ x-tag: "a" }}
      remove: [x-drop-me]
      rename: {{ x-old-name: x-new-name }}
    response_headers:
      hide_server: true
      set: {{ x-served-by: "towergate/{{route}}" }}
      remove: [x-internal]
"#,
        up.url()
    ))
    .await;
    let rsp = client()
        .get(format!("http://{addr}/users/42"))
        .header("x-drop-me", "secret")
        .header("x-old-name", "v")
        .header("x-tag", "client")
        .header("x-request-id", "req-transform-1")
        // Anonymous: `{identity.sub}` renders nothing, and the client's
        // own value must not take its place.
        .header("x-user-sub", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    assert!(rsp.headers().get("server").is_none());
    assert_eq!(rsp.headers()["x-served-by"], "towergate/users");
    let v: Value = rsp.json().await.unwrap();
    let h = &v["headers"];
    assert_eq!(h["x-user-id"], json!(["42"]));
    assert_eq!(h["x-route"], json!(["users"]));
    assert_eq!(h["x-req"], json!(["req-transform-1"]));
    assert_eq!(h["x-client"], json!(["127.0.0.1"]));
    assert_eq!(h["x-tag"], json!(["client", "a"]));
    assert!(h.get("x-drop-me").is_none(), "{h}");
    assert!(h.get("x-user-sub").is_none(), "{h}");
    assert!(h.get("x-old-name").is_none(), "{h}");
    assert_eq!(h["x-new-name"], json!(["v"]));
}

#[tokio::test]
async fn json_bodies_are_validated_and_forwarded_byte_identical() {
    let count = Arc::new(AtomicUsize::new(0));
    let up = upstream(count.clone()).await;
    let dir = std::env::temp_dir().join(format!("tg-schema-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("order.json"),
        serde_json::to_vec(&json!({
            "type": "object",
            "required": ["item", "qty"],
            "properties": {
                "item": {"type": "string"},
                "qty": {"type": "integer", "minimum": 1},
                "notes": {"type": "array", "items": {"type": "string"}}
            }
        }))
        .unwrap(),
    )
    .unwrap();
    let yaml = format!(
        r#"listen: "127.0.0.1:0"
routes:
  - name: orders
    match: {{ path: "/orders", methods: [POST, PUT, DELETE] }}
    rewrite: "/raw"
    upstream: "{}"
    validate:
      methods: [POST, PUT]
      content_types: [application/json]
      json_schema: order.json
      max_body: "1KB"
      query: {{ shop: "[a-z]+" }}
      headers: {{ x-tenant: "" }}
"#,
        up.url()
    );
    let path = dir.join("gw.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let (gw, addr) = gateway_from_file(&path).await;
    let c = client();
    let post = |body: &'static str| {
        c.post(format!("http://{addr}/orders?shop=main"))
            .header("content-type", "application/json")
            .header("x-tenant", "t1")
            .body(body)
            .send()
    };

    // Valid: the upstream gets exactly these bytes (odd spacing kept).
    let valid = "{ \"item\":\"pen\",  \"qty\": 2,\n \"notes\": [\"blue\"] }";
    let rsp = post(valid).await.unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(
        rsp.bytes().await.unwrap(),
        Bytes::from_static(valid.as_bytes())
    );
    assert_eq!(count.load(Ordering::SeqCst), 1);

    // Wrong type.
    let p = assert_problem_reqwest(post(r#"{"item":"pen","qty":"two"}"#).await.unwrap(), 400).await;
    let paths: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/qty"], "{p}");
    // Missing field (reported at the object that lacks it).
    let p = assert_problem_reqwest(post(r#"{"qty":1}"#).await.unwrap(), 400).await;
    let errors = p["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{p}");
    assert_eq!(errors[0]["path"], "");
    assert!(
        errors[0]["message"].as_str().unwrap().contains("item"),
        "{p}"
    );
    // Too large: refused before the schema, without reading it all.
    let big: &'static str =
        Box::leak(format!(r#"{{"item":"{}","qty":1}}"#, "x".repeat(2000)).into_boxed_str());
    assert_problem_reqwest(post(big).await.unwrap(), 413).await;
    // Not JSON at all.
    assert_problem_reqwest(post("{nope").await.unwrap(), 400).await;
    // Wrong content type, missing query parameter and header, wrong method.
    let rsp = c
        .post(format!("http://{addr}/orders?shop=main"))
        .header("content-type", "text/plain")
        .header("x-tenant", "t1")
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_problem_reqwest(rsp, 415).await;
    let rsp = c
        .post(format!("http://{addr}/orders?shop=M41N"))
        .header("content-type", "application/json")
        .body(valid)
        .send()
        .await
        .unwrap();
    let p = assert_problem_reqwest(rsp, 400).await;
    let text = p.to_string();
    assert!(text.contains("shop") && text.contains("x-tenant"), "{p}");
    let rsp = c
        .delete(format!("http://{addr}/orders?shop=main"))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 405);
    let allow = rsp.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("POST") && allow.contains("PUT"), "{allow}");
    // None of the refusals reached the upstream.
    assert_eq!(count.load(Ordering::SeqCst), 1);
    gw.shutdown().await;
}

fn curl(args: &[&str]) -> (String, Vec<u8>) {
    let headers = std::env::temp_dir().join(format!(
        "tg-curl-{}-{}",
        std::process::id(),
        fastrand_like()
    ));
    let out = std::process::Command::new("curl")
        .args(["-s", "--noproxy", "*", "-D"])
        .arg(&headers)
        .args(args)
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "curl failed: {out:?}");
    let h = std::fs::read_to_string(&headers)
        .unwrap()
        .to_ascii_lowercase();
    let _ = std::fs::remove_file(&headers);
    (h, out.stdout)
}

fn fastrand_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_compressed_and_decoded_by_a_real_client() {
    let count = Arc::new(AtomicUsize::new(0));
    let up = upstream(count).await;
    let (_gw, addr) = gateway(&format!(
        r#"listen: "127.0.0.1:0"
routes:
  - name: files
    match: {{ path_prefix: "/" }}
    upstream: "{}"
    compression: {{ min_size: 512 }}
    decompress_request: true
"#,
        up.url()
    ))
    .await;
    let original = big_text();
    let url = format!("http://{addr}/text");
    let addr_s = url.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        for enc in ["gzip", "br", "zstd"] {
            let (h, body) = curl(&[
                "--compressed",
                "-H",
                &format!("accept-encoding: {enc}"),
                &addr_s,
            ]);
            seen.push((enc, h, body));
        }
        seen
    })
    .await
    .unwrap();
    for (enc, h, body) in result {
        assert!(
            h.contains(&format!("content-encoding: {enc}")),
            "{enc}: {h}"
        );
        assert_eq!(
            String::from_utf8(body).unwrap(),
            original,
            "{enc} decoded differently"
        );
    }
    // Compressed bytes on the wire are smaller.
    let raw = client()
        .get(&url)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.headers()["content-encoding"], "gzip");
    assert!(raw.bytes().await.unwrap().len() < original.len() / 4);
    // Not compressed: small bodies, images, already-encoded bodies, and
    // clients that did not ask.
    for (path, want) in [
        ("/small", None),
        ("/png", None),
        ("/encoded", Some("identity-test")),
    ] {
        let rsp = client()
            .get(format!("http://{addr}{path}"))
            .header("accept-encoding", "gzip, br")
            .send()
            .await
            .unwrap();
        assert_eq!(
            rsp.headers()
                .get("content-encoding")
                .map(|v| v.to_str().unwrap()),
            want,
            "{path}"
        );
    }
    let rsp = client().get(&url).send().await.unwrap();
    assert!(rsp.headers().get("content-encoding").is_none());
    assert_eq!(rsp.text().await.unwrap(), original);
    // A gzip request body arrives decoded at the upstream (curl gzips
    // nothing itself, so the body is gzip bytes made by the gateway's own
    // compression above).
    let gz = client()
        .get(&url)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let rsp = client()
        .post(format!("http://{addr}/raw"))
        .header("content-encoding", "gzip")
        .header("content-type", "text/plain")
        .body(gz)
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    // The echo is compressed again on the way back only if asked; reqwest
    // asks for nothing.
    assert_eq!(rsp.text().await.unwrap(), original);
}

#[tokio::test]
async fn redirects_and_fixed_responses() {
    let (_gw, addr) = gateway(
        r#"listen: "127.0.0.1:0"
routes:
  - name: old
    match: { path: "/old/{*rest}" }
    redirect: { to: "/v2/{params.rest}", status: 308 }
  - name: secure
    match: { path_prefix: "/secure/" }
    redirect_https: true
    respond: { status: 200, body: "only over TLS" }
  - name: moved
    match: { path: "/moved" }
    redirect: { https: true, port: 8443 }
  - name: maintenance
    match: { path: "/maintenance" }
    respond:
      status: 503
      body: "back soon"
      content_type: "text/plain"
      headers: { retry-after: "120" }
"#,
    )
    .await;
    let c = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let rsp = c
        .get(format!("http://{addr}/old/a/b?x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 308);
    assert_eq!(rsp.headers()["location"], "/v2/a/b?x=1");
    let rsp = c
        .get(format!("http://{addr}/secure/page?q=2"))
        .header("host", "shop.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 301);
    assert_eq!(
        rsp.headers()["location"],
        "https://shop.example.com/secure/page?q=2"
    );
    let rsp = c
        .get(format!("http://{addr}/moved"))
        .header("host", "shop.example.com:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 301);
    assert_eq!(
        rsp.headers()["location"],
        "https://shop.example.com:8443/moved"
    );
    let rsp = c
        .get(format!("http://{addr}/maintenance"))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 503);
    assert_eq!(rsp.headers()["retry-after"], "120");
    assert_eq!(rsp.headers()["content-type"], "text/plain");
    assert_eq!(rsp.text().await.unwrap(), "back soon");
}

#[tokio::test]
async fn bad_policy_config_names_the_key() {
    for (yaml, path) in [
        (
            "cors: { origins: [\"https://*.\"] }",
            "routes[0].cors.origins[0]",
        ),
        (
            "request_headers: { set: { \"bad header\": x } }",
            "routes[0].request_headers.set.bad header",
        ),
        (
            "request_headers: { set: { x-a: \"{nope.x}\" } }",
            "routes[0].request_headers.set.x-a",
        ),
        (
            "validate: { schema: { type: 12 } }",
            "routes[0].validate.schema",
        ),
        (
            "validate: { json_schema: missing.json }",
            "routes[0].validate.json_schema",
        ),
        (
            "validate: { query: { q: \"(\" } }",
            "routes[0].validate.query.q",
        ),
        (
            "compression: { algorithms: [lz4] }",
            "routes[0].compression.algorithms[0]",
        ),
        (
            "request_headers: { hide_server: true }",
            "routes[0].request_headers.hide_server",
        ),
    ] {
        let full = format!(
            "listen: \"127.0.0.1:0\"\nroutes:\n  - name: r\n    match: {{ path_prefix: \"/\" }}\n    upstream: \"http://127.0.0.1:1\"\n    {yaml}\n"
        );
        let cfg = towergate::config::parse_str(&full, towergate::config::Format::Yaml).unwrap();
        let e = towergate::stack::compile(&cfg).unwrap_err();
        assert!(e.errors.iter().any(|e| e.path == path), "{yaml}: {e}");
    }
    // Targets exclude each other, and a route needs one.
    for (extra, path) in [
        ("    respond: { status: 200 }\n", "routes[0].respond"),
        ("    redirect: { to: \"/x\" }\n", "routes[0].redirect"),
        (
            "    cache: { ttl: \"1s\" }\n    respond: { status: 200 }\n",
            "routes[0].respond",
        ),
    ] {
        let full = format!(
            "listen: \"127.0.0.1:0\"\nroutes:\n  - name: r\n    match: {{ path_prefix: \"/\" }}\n    upstream: \"http://127.0.0.1:1\"\n{extra}"
        );
        let cfg = towergate::config::parse_str(&full, towergate::config::Format::Yaml).unwrap();
        let e = towergate::stack::compile(&cfg).unwrap_err();
        assert!(e.errors.iter().any(|e| e.path == path), "{extra}: {e}");
    }
    // Caching needs a proxied upstream.
    let cfg = towergate::config::parse_str(
        "listen: \"127.0.0.1:0\"\nroutes:\n  - name: r\n    match: { path_prefix: \"/\" }\n    respond: { status: 200 }\n    cache: { ttl: \"1s\" }\n",
        towergate::config::Format::Yaml,
    )
    .unwrap();
    let e = towergate::stack::compile(&cfg).unwrap_err();
    assert!(e.errors.iter().any(|e| e.path == "routes[0].cache"), "{e}");
    // A fixed response's type has its own setting, and its framing is the
    // server's: a second Content-Type, or a Content-Length, is refused.
    for (name, path) in [
        ("content-type", "routes[0].respond.headers.content-type"),
        ("Content-Length", "routes[0].respond.headers.Content-Length"),
    ] {
        let cfg = towergate::config::parse_str(
            &format!("listen: \"127.0.0.1:0\"\nroutes:\n  - name: r\n    match: {{ path_prefix: \"/\" }}\n    respond: {{ status: 200, body: \"{{}}\", headers: {{ {name}: \"1\" }} }}\n"),
            towergate::config::Format::Yaml,
        )
        .unwrap();
        let e = towergate::stack::compile(&cfg).unwrap_err();
        assert!(e.errors.iter().any(|e| e.path == path), "{e}");
    }
    let cfg = towergate::config::parse_str(
        "listen: \"127.0.0.1:0\"\nroutes:\n  - name: r\n    match: { path_prefix: \"/\" }\n",
        towergate::config::Format::Yaml,
    )
    .unwrap();
    let e = towergate::stack::compile(&cfg).unwrap_err();
    assert!(
        e.errors.iter().any(|e| e.path == "routes[0].upstream"),
        "{e}"
    );
}

/// The validation buffers no more than the route forwards: a route's
/// `max_body` below the validation's default (1 MiB) caps what the schema
/// check reads, and the answer is the validation's 413.
#[tokio::test]
async fn the_route_max_body_caps_what_the_validation_reads() {
    let up = spawn_upstream(echo_router("up")).await;
    let (_gw, addr) = gateway(&format!(
        r#"listen: "127.0.0.1:0"
routes:
  - name: items
    match: {{ path: "/items" }}
    upstream: "{}"
    max_body: "64KB"
    validate:
      schema: {{ type: object, properties: {{ items: {{ type: array, items: {{ type: object }} }} }} }}
"#,
        up.url()
    ))
    .await;
    let zeros = vec!["0"; 450_000].join(",");
    let body = format!(r#"{{"items":[{zeros}]}}"#);
    assert!(body.len() > 800_000);
    let rsp = client()
        .post(format!("http://{addr}/items"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let p = assert_problem_reqwest(rsp, 413).await;
    assert_eq!(p["limit"], 64_000, "{p}");
}
