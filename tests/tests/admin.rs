//! The admin API: probes, token, routes, upstreams, redacted config, reload.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic by design

mod support;

use std::sync::Arc;

use serde_json::Value;
use support::gateway_from_file;
use towergate::admin::{AdminState, start};
use towergate_test::{echo_router, spawn_upstream};

const TOKEN: &str = "s3cret-admin-token-123";

fn config(upstream: &str, extra_route: &str) -> String {
    format!(
        r#"listen: "127.0.0.1:0"
admin: {{ token: "{TOKEN}" }}
upstreams:
  echo: {{ url: "{upstream}" }}
routes:
  - name: users
    match: {{ path_prefix: "/users/" }}
    upstream: echo
{extra_route}"#
    )
}

#[tokio::test]
async fn admin_api() {
    let echo = spawn_upstream(echo_router("echo")).await;
    let dir = std::env::temp_dir().join(format!("towergate-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.yaml");
    std::fs::write(&path, config(&echo.url(), "")).unwrap();
    let (gw, _) = gateway_from_file(&path).await;
    let gw_addr = gw.local_addrs()[0];
    let admin = start(
        "127.0.0.1:0".parse().unwrap(),
        AdminState {
            live: gw.live(),
            config_path: Some(path.clone()),
            token: Some(Arc::from(TOKEN)),
        },
    )
    .await
    .unwrap();
    let base = format!("http://{}", admin.addr);
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let auth = |rb: reqwest::RequestBuilder| rb.bearer_auth(TOKEN);

    // Probes are open; the rest needs the token.
    assert_eq!(
        c.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready: Value = c
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["ready"], true);
    let rsp = c.get(format!("{base}/admin/routes")).send().await.unwrap();
    assert_eq!(
        rsp.headers()["www-authenticate"],
        "Bearer realm=\"towergate-admin\""
    );
    towergate_test::assert_problem_reqwest(rsp, 401).await;
    let rsp = c
        .get(format!("{base}/admin/routes"))
        .bearer_auth("wrong-token-wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 401);

    let routes: Value = auth(c.get(format!("{base}/admin/routes")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(routes[0]["name"], "users");
    assert_eq!(routes[0]["match"]["path_prefix"], "/users/");
    let ups: Value = auth(c.get(format!("{base}/admin/upstreams")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ups[0]["name"], "echo");
    assert_eq!(ups[0]["routes"][0], "users");

    // The effective config, with the token redacted.
    let text = auth(c.get(format!("{base}/admin/config")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains(TOKEN), "token leaked: {text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["admin"]["token"], "<redacted>");
    assert_eq!(v["routes"][0]["name"], "users");

    // A bad file: refused, every error with its path; the old config serves.
    std::fs::write(
        &path,
        config(&echo.url(), "  - name: users\n    upstream: nowhere\n"),
    )
    .unwrap();
    let rsp = auth(c.post(format!("{base}/admin/reload")))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 422);
    let v: Value = rsp.json().await.unwrap();
    assert_eq!(v["applied"], false);
    let paths: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"routes[1].name") && paths.contains(&"routes[1].upstream"),
        "{paths:?}"
    );
    let status: Value = auth(c.get(format!("{base}/admin/status")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["reloads"]["failed"], 1);
    assert_eq!(
        c.get(format!("http://{gw_addr}/users/1"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // A good file: applied, and the new route serves.
    std::fs::write(
        &path,
        config(
            &echo.url(),
            "  - name: orders\n    match: { path_prefix: \"/orders/\" }\n    upstream: echo\n",
        ),
    )
    .unwrap();
    let v: Value = auth(c.post(format!("{base}/admin/reload")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["applied"], true);
    assert_eq!(
        c.get(format!("http://{gw_addr}/orders/1"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let status: Value = auth(c.get(format!("{base}/admin/status")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["reloads"]["ok"], 1);
    assert!(status["reloads"]["last_error"].is_null());

    // The dashboard page is served from the binary.
    let html = c
        .get(format!("{base}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("<title>towergate</title>"));
    admin.stop();
    gw.shutdown().await;
}

#[test]
fn non_loopback_admin_needs_a_token() {
    let yaml = "listen: \"127.0.0.1:0\"\nadmin: { listen: \"0.0.0.0:9901\" }\nroutes:\n  - name: a\n    upstream: \"http://127.0.0.1:1\"\n";
    let cfg = towergate::config::parse_str(yaml, towergate::config::Format::Yaml).unwrap();
    let e = towergate::stack::compile(&cfg).unwrap_err();
    assert!(e.has_path("admin.listen"), "{e}");
    let yaml = yaml.replace("0.0.0.0:9901\" }", "0.0.0.0:9901\", token: \"short\" }");
    let cfg = towergate::config::parse_str(&yaml, towergate::config::Format::Yaml).unwrap();
    let e = towergate::stack::compile(&cfg).unwrap_err();
    assert!(e.has_path("admin.token"), "{e}");
}

#[test]
fn secrets_are_redacted_in_the_shown_config() {
    let yaml = r#"listen: "127.0.0.1:0"
admin: { token: "admin-token-0123456789" }
auth_providers:
  j: { jwt: { secret: "jwt-secret-that-is-long-enough-0123456789", algorithms: [HS256] } }
  k: { api_key: { keys: [{ consumer: acme, key: "plain-api-key-0123456789" }, { consumer: b, key_sha256: "ab12" }] } }
  i: { introspection: { url: "http://127.0.0.1:1/i", client_id: gw, client_secret: "introspection-secret-42" } }
  b: { basic: { users: ["alice:$2b$04$hashhashhashhashhashhu"] } }
  w: { jwt: { jwks_url: "https://jwks-user:jwks-password-7@idp/jwks" } }
  i2: { introspection: { url: "https://intro-user:intro-password-8@idp/introspect" } }
  f: { forward: { url: "https://forward-token-9@authz/check" } }
rate_limiting:
  redis: { url: "redis+unix:///run/redis.sock?db=2&pass=redis-unix-password-15" }
observability:
  tracing: { otlp_endpoint: "https://otel-user:otel-password-11@collector:4318" }
routes:
  - name: r
    upstream: "http://127.0.0.1:1"
    request_headers:
      set: { Authorization: "Bearer upstream-key-12", X-Env: prod }
      add: { X-Api-Key: "upstream-key-13" }
  - name: internal
    match: { path_prefix: /internal, headers: { x-internal-token: "match-token-16", x-tenant: acme }, query: { access_token: { regex: "match-token-17.*" } } }
    upstream: "http://127.0.0.1:1"
  - name: fixed
    match: { path_prefix: /fixed }
    respond: { status: 200, headers: { Set-Cookie: "session=respond-cookie-18" } }
  - name: agg
    match: { path_prefix: /agg }
    aggregate:
      calls:
        - { name: a, upstream: "http://127.0.0.1:1", path: /a, set_headers: { X-Service-Token: "service-token-14" } }
"#;
    let cfg = towergate::config::parse_str(yaml, towergate::config::Format::Yaml).unwrap();
    let shown = serde_json::to_string(&cfg).unwrap();
    for secret in [
        "admin-token-0123456789",
        "jwt-secret-that-is-long-enough-0123456789",
        "plain-api-key-0123456789",
        "ab12",
        "introspection-secret-42",
        "hashhash",
        "jwks-password-7",
        "intro-password-8",
        "forward-token-9",
        "otel-password-11",
        "upstream-key-12",
        "upstream-key-13",
        "service-token-14",
        "redis-unix-password-15",
        "match-token-16",
        "match-token-17",
        "respond-cookie-18",
    ] {
        assert!(!shown.contains(secret), "{secret} shown: {shown}");
    }
    assert!(shown.contains("alice:<redacted>"));
    // What is not a secret stays readable: users, hosts, plain headers.
    for kept in [
        "https://jwks-user:<redacted>@idp/jwks",
        "redis+unix:///run/redis.sock?db=2&pass=<redacted>",
        "https://<redacted>@authz/check",
        "\"X-Env\":\"prod\"",
        "\"x-tenant\":\"acme\"",
    ] {
        assert!(shown.contains(kept), "{kept} missing: {shown}");
    }
}

#[test]
fn config_errors_do_not_repeat_a_password() {
    // Errors reach logs, `/admin/reload` answers and `/admin/status`.
    let yaml = r#"listen: "127.0.0.1:0"
auth_providers:
  w: { jwt: { jwks_url: "ftp://u:jwks-pass-1@idp/jwks" } }
routes:
  - name: a
    upstream: "http://u:upstream-pass-2@127.0.0.1:1"
    auth: { any_of: [w] }
"#;
    let cfg = towergate::config::parse_str(yaml, towergate::config::Format::Yaml).unwrap();
    let e = towergate::stack::compile(&cfg).unwrap_err().to_string();
    for secret in ["jwks-pass-1", "upstream-pass-2"] {
        assert!(!e.contains(secret), "{secret} repeated: {e}");
    }
    assert!(e.contains("u:<redacted>@"), "{e}");
}

#[tokio::test]
async fn a_reload_rotates_the_admin_token() {
    // Started from its configuration, the admin API asks for the token the
    // live configuration has: an operator rotating a leaked token reloads.
    const OLD: &str = "old-admin-token-0123456789";
    const NEW: &str = "new-admin-token-0123456789";
    let echo = spawn_upstream(echo_router("echo")).await;
    let dir = std::env::temp_dir().join(format!("towergate-admin-rotate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.yaml");
    let text = |token: &str| {
        config(&echo.url(), "").replace(
            &format!("admin: {{ token: \"{TOKEN}\" }}"),
            &format!("admin: {{ listen: \"127.0.0.1:0\", token: \"{token}\" }}"),
        )
    };
    std::fs::write(&path, text(OLD)).unwrap();
    let (gw, _) = gateway_from_file(&path).await;
    let admin = towergate::admin::start_from_config(gw.live(), Some(path.clone()))
        .await
        .unwrap()
        .unwrap();
    let base = format!("http://{}", admin.addr);
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let status = |token: &'static str| {
        let (c, url) = (c.clone(), format!("{base}/admin/routes"));
        async move { c.get(url).bearer_auth(token).send().await.unwrap().status() }
    };
    assert_eq!(status(OLD).await, 200);
    assert_eq!(status(NEW).await, 401);

    std::fs::write(&path, text(NEW)).unwrap();
    let rsp = c
        .post(format!("{base}/admin/reload"))
        .bearer_auth(OLD)
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200, "{}", rsp.text().await.unwrap());
    assert_eq!(status(OLD).await, 401);
    assert_eq!(status(NEW).await, 200);
    admin.stop();
    gw.shutdown().await;
}

/// The admin listener holds a bounded number of connections, and a bounded
/// number per client: those beyond are closed as they come, and the API
/// answers again once they are gone.
#[tokio::test]
async fn the_admin_listener_caps_its_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let echo = spawn_upstream(echo_router("echo")).await;
    let cfg =
        towergate::config::parse_str(&config(&echo.url(), ""), towergate::config::Format::Yaml)
            .unwrap();
    let gw = towergate::start(towergate::stack::compile(&cfg).unwrap())
        .await
        .unwrap();
    let admin = start(
        "127.0.0.1:0".parse().unwrap(),
        AdminState {
            live: gw.live(),
            config_path: None,
            token: Some(Arc::from(TOKEN)),
        },
    )
    .await
    .unwrap();
    let addr = admin.addr;
    // A client at 127.0.0.i (all of 127/8 is loopback).
    let from = |i: u8| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(format!("127.0.0.{i}:0").parse().unwrap())
            .unwrap();
        socket.connect(addr).await.unwrap()
    };
    // What a new connection from 127.0.0.i gets for `GET /healthz`: the
    // answer's first bytes, or nothing when it is closed at once.
    let ask = |i: u8| async move {
        let mut tcp = from(i).await;
        let _ = tcp
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await;
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("answered or closed at once, not left waiting")
            .unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    // One client holds at most 16 of the slots: its 17th connection is
    // closed, while another client is still served.
    let mut silent = Vec::new();
    for _ in 0..16 {
        silent.push(from(1).await);
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(ask(1).await, "");
    assert!(ask(2).await.starts_with("HTTP/1.1 200"));
    // Four clients take every slot: a fifth is closed too.
    for i in 2..=4 {
        for _ in 0..16 {
            silent.push(from(i).await);
        }
    }
    // Accepted in order: by the time this one is, the 64 hold every slot.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(ask(5).await, "");
    drop(silent);
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match c.get(format!("http://{}/healthz", admin.addr)).send().await {
            Ok(rsp) if rsp.status() == 200 => break,
            _ if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            other => panic!("the API did not answer again: {other:?}"),
        }
    }
    gw.shutdown().await;
}

/// An embedder's fixed token is held to the file's rules: an empty one
/// keeps the API closed; `Bearer` is matched in any case; an upstream
/// used only by an aggregate's calls lists its route.
#[tokio::test]
async fn an_empty_embedded_token_keeps_the_api_closed() {
    let echo = spawn_upstream(echo_router("echo")).await;
    let extra = r#"  - name: screen
    match: { path: "/screen" }
    aggregate:
      calls:
        - { name: a, upstream: only_called, path: "/a" }
"#;
    let text = config(&echo.url(), extra).replace(
        "upstreams:\n",
        &format!("upstreams:\n  only_called: {{ url: \"{}\" }}\n", echo.url()),
    );
    let cfg = towergate::config::parse_str(&text, towergate::config::Format::Yaml).unwrap();
    let gw = towergate::start(towergate::stack::compile(&cfg).unwrap())
        .await
        .unwrap();
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let admin_with = |token: &str| {
        let live = gw.live();
        let token = Arc::from(token);
        async move {
            start(
                "127.0.0.1:0".parse().unwrap(),
                AdminState {
                    live,
                    config_path: None,
                    token: Some(token),
                },
            )
            .await
            .unwrap()
        }
    };
    let empty = admin_with("").await;
    for auth in [None, Some("Bearer "), Some("Bearer")] {
        let mut rb = c.get(format!("http://{}/admin/config", empty.addr));
        if let Some(a) = auth {
            rb = rb.header("authorization", a);
        }
        assert_eq!(rb.send().await.unwrap().status(), 401, "{auth:?}");
    }
    let admin = admin_with(TOKEN).await;
    let rsp = c
        .get(format!("http://{}/admin/upstreams", admin.addr))
        .header("authorization", format!("bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    let v: Value = rsp.json().await.unwrap();
    let called = v
        .as_array()
        .and_then(|a| a.iter().find(|u| u["name"] == "only_called"))
        .cloned()
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(called["routes"], serde_json::json!(["screen"]), "{v}");
}
