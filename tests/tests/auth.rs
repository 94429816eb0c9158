//! Authentication and authorization through the assembled gateway: JWT with
//! a real JWKS server, API keys, introspection, forward auth, basic auth, IP
//! lists, any-of/all-of, rules, identity headers and credential stripping.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic by design

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use support::{client, gateway, gateway_from_file, get_json};
use towergate_test::{assert_problem_reqwest, echo_router, spawn_upstream};

const SECRET: &str = "an e2e shared secret of at least 32 bytes!";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn header<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    v["headers"][name][0].as_str()
}

/// A JWKS server with one ES256 key, and a signer for it.
async fn jwks() -> (towergate_test::Upstream, EncodingKey) {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let enc = EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap();
    let mut jwk =
        serde_json::to_value(Jwk::from_encoding_key(&enc, Algorithm::ES256).unwrap()).unwrap();
    jwk["kid"] = json!("k1");
    let set = json!({ "keys": [jwk] });
    let server = spawn_upstream(
        Router::new().route("/jwks.json", get(move || async move { axum::Json(set) })),
    )
    .await;
    (server, enc)
}

#[tokio::test]
async fn jwt_api_keys_rules_headers_and_stripping() {
    let echo = spawn_upstream(echo_router("echo")).await;
    let (idp, signer) = jwks().await;
    let yaml = format!(
        r#"listen: "127.0.0.1:0"
auth_providers:
  employees:
    jwt:
      jwks_url: "{idp}/jwks.json"
      issuer: "https://idp.test"
      audience: "orders"
      algorithms: [ES256]
  partners:
    api_key:
      header: x-api-key
      keys:
        - {{ consumer: acme, key: "acme-key-0123456789", scopes: ["orders:read"], metadata: {{ plan: gold }} }}
        - {{ consumer: globex, key_sha256: "{globex_sha}" }}
  service:
    jwt: {{ secret: "{SECRET}", algorithms: [HS256], audience: "internal" }}
routes:
  - name: orders
    match: {{ path_prefix: "/orders/" }}
    upstream: "{up}"
    auth:
      any_of: [employees, partners]
      require: {{ scopes: ["orders:read"] }}
      identity_headers: {{ sub: x-user-id, consumer: x-consumer, plan: x-plan }}
      strip_credentials: true
  - name: internal
    match: {{ path_prefix: "/internal/" }}
    upstream: "{up}"
    auth: {{ any_of: [service] }}
"#,
        idp = idp.url(),
        up = echo.url(),
        globex_sha = "8b3f1b7e2f3c0c9a3b2f6d0d6c9a7e1f4b5d6c7e8f9a0b1c2d3e4f5a6b7c8d9e", // no key hashes to this
    );
    let (_gw, addr) = gateway(&yaml).await;
    let c = client();
    let url = format!("http://{addr}/orders/1");

    // No credential: 401 naming both schemes.
    let rsp = c.get(&url).send().await.unwrap();
    let challenges: Vec<String> = rsp
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(challenges.len(), 2, "{challenges:?}");
    assert!(challenges.iter().any(|c| c.starts_with("Bearer")));
    assert!(challenges.iter().any(|c| c.starts_with("ApiKey")));
    assert_problem_reqwest(rsp, 401).await;

    // A valid JWT from the JWKS: identity headers arrive, spoofed ones do
    // not, the token is stripped.
    let token = {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("k1".into());
        let claims = json!({"sub": "ada", "iss": "https://idp.test", "aud": "orders", "exp": now() + 300, "scope": "orders:read"});
        encode(&h, &claims, &signer).unwrap()
    };
    let v: Value = c
        .get(&url)
        .bearer_auth(&token)
        .header("x-user-id", "mallory")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(header(&v, "x-user-id"), Some("ada"));
    assert_eq!(v["headers"]["x-user-id"].as_array().unwrap().len(), 1);
    assert!(
        v["headers"].get("authorization").is_none(),
        "credential stripped"
    );

    // Wrong audience, expired, alg none: 401 invalid_token.
    let bad = [
        json!({"sub": "ada", "iss": "https://idp.test", "aud": "billing", "exp": now() + 300, "scope": "orders:read"}),
        json!({"sub": "ada", "iss": "https://idp.test", "aud": "orders", "exp": now() - 3600, "scope": "orders:read"}),
    ];
    for claims in bad {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("k1".into());
        let t = encode(&h, &claims, &signer).unwrap();
        let rsp = c.get(&url).bearer_auth(t).send().await.unwrap();
        let ch = rsp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(ch.contains("invalid_token"), "{ch}");
        assert_problem_reqwest(rsp, 401).await;
    }
    let none = format!(
        "{}.{}.",
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0",
        "eyJzdWIiOiJhZGEiLCJhdWQiOiJvcmRlcnMiLCJpc3MiOiJodHRwczovL2lkcC50ZXN0In0"
    );
    assert_eq!(
        c.get(&url).bearer_auth(none).send().await.unwrap().status(),
        401
    );

    // An API key: consumer and metadata become headers; the key is stripped.
    let v: Value = c
        .get(&url)
        .header("x-api-key", "acme-key-0123456789")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(header(&v, "x-consumer"), Some("acme"));
    assert_eq!(header(&v, "x-plan"), Some("gold"));
    assert!(v["headers"].get("x-api-key").is_none());
    assert_eq!(
        c.get(&url)
            .header("x-api-key", "nope")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    // Authenticated but without the scope: 403.
    let token = {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("k1".into());
        encode(&h, &json!({"sub": "bob", "iss": "https://idp.test", "aud": "orders", "exp": now() + 300, "scope": "other"}), &signer).unwrap()
    };
    let rsp = c.get(&url).bearer_auth(token).send().await.unwrap();
    assert_problem_reqwest(rsp, 403).await;

    // A token for another route's audience is refused there.
    let internal = hs256(json!({"sub": "svc", "aud": "internal", "exp": now() + 300}));
    let orders_token = hs256(json!({"sub": "svc", "aud": "orders", "exp": now() + 300}));
    assert_eq!(
        c.get(format!("http://{addr}/internal/x"))
            .bearer_auth(&internal)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("http://{addr}/internal/x"))
            .bearer_auth(&orders_token)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test]
async fn identity_headers_cannot_be_spoofed_through_an_open_route() {
    // One upstream, reached by a route that authenticates (and tells the
    // upstream who called in `x-user-id`) and by one that does not: the
    // open route must not pass a client's own `x-user-id`.
    let echo = spawn_upstream(echo_router("echo")).await;
    let yaml = format!(
        r#"listen: "127.0.0.1:0"
auth_providers:
  service:
    jwt: {{ secret: "{SECRET}", algorithms: [HS256] }}
  sso:
    forward: {{ url: "http://127.0.0.1:1/check", copy_headers: [authorization, x-auth-user] }}
routes:
  - name: private
    match: {{ path_prefix: "/private/" }}
    upstream: "{up}"
    auth: {{ any_of: [service], identity_headers: {{ sub: x-user-id }} }}
  - name: sso
    match: {{ path_prefix: "/sso/" }}
    upstream: "{up}"
    auth: {{ any_of: [sso] }}
  - name: public
    match: {{ path_prefix: "/public/" }}
    upstream: "{up}"
"#,
        up = echo.url(),
    );
    let (_gw, addr) = gateway(&yaml).await;
    let c = client();
    let public = format!("http://{addr}/public/whoami");
    let v = get_json(
        &public,
        &[
            ("x-user-id", "admin"),
            ("x_user_id", "admin"),
            ("x-other", "kept"),
        ],
    )
    .await;
    assert_eq!(header(&v, "x-user-id"), None, "{v}");
    assert_eq!(header(&v, "x_user_id"), None, "{v}");
    assert_eq!(header(&v, "x-other"), Some("kept"), "{v}");
    // What a forward-auth service's answer replaces on its own route
    // (`copy_headers: [authorization]`) is cleared there only: the client's
    // credentials still reach the other routes.
    let v = get_json(
        &public,
        &[("authorization", "Bearer mine"), ("x-auth-user", "admin")],
    )
    .await;
    assert_eq!(header(&v, "authorization"), Some("Bearer mine"), "{v}");
    assert_eq!(header(&v, "x-auth-user"), None, "{v}");
    // The authenticated route still tells the upstream who called.
    let token = hs256(json!({"sub": "ada", "exp": now() + 300}));
    let bearer = format!("Bearer {token}");
    let v = get_json(
        &format!("http://{addr}/private/whoami"),
        &[("authorization", &bearer), ("x-user-id", "admin")],
    )
    .await;
    assert_eq!(header(&v, "x-user-id"), Some("ada"), "{v}");
    // Two tokens: the gateway would check one, an upstream might read the
    // other.
    let forged = format!("{}x", hs256(json!({"sub": "root", "exp": now() + 300})));
    let rsp = c
        .get(format!("http://{addr}/private/whoami"))
        .bearer_auth(&token)
        .header("authorization", format!("Bearer {forged}"))
        .send()
        .await
        .unwrap();
    assert_problem_reqwest(rsp, 401).await;
}

#[tokio::test]
async fn introspection_forward_basic_ip_and_all_of() {
    let echo = spawn_upstream(echo_router("echo")).await;
    let introspect = spawn_upstream(Router::new().route(
        "/introspect",
        post(|body: String| async move {
            let active = body.contains("token=opaque-good");
            axum::Json(if active {
                json!({"active": true, "sub": "ivy", "scope": "read", "client_id": "mobile", "exp": now() + 600})
            } else {
                json!({"active": false})
            })
        }),
    ))
    .await;
    let authz = spawn_upstream(Router::new().route(
        "/check",
        get(|req: Request| async move {
            let h = req.headers();
            match h.get("x-ticket").and_then(|v| v.to_str().ok()) {
                Some("ok") => ([("x-auth-user", "fwd-user")], "").into_response(),
                Some("login") => Response::builder()
                    .status(302)
                    .header("location", "https://login.test/")
                    .body(axum::body::Body::empty())
                    .unwrap(),
                _ => (
                    http::StatusCode::UNAUTHORIZED,
                    [("www-authenticate", "Ticket")],
                    "no ticket",
                )
                    .into_response(),
            }
        }),
    ))
    .await;
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let yaml = format!(
        r#"listen: "127.0.0.1:0"
server: {{ trusted_proxies: ["127.0.0.1"] }}
auth_providers:
  opaque:
    introspection: {{ url: "{ins}/introspect", client_id: gw, client_secret: "gw-secret" }}
  ticket:
    forward: {{ url: "{fwd}/check", forward_headers: [x-ticket], copy_headers: [x-auth-user] }}
  staff:
    basic: {{ users: ["alice:{hash}"], realm: "staff" }}
  keys:
    api_key: {{ keys: [{{ consumer: ops, key: "ops-key-0123456789" }}] }}
routes:
  - name: opaque
    match: {{ path_prefix: "/opaque/" }}
    upstream: "{up}"
    auth: {{ any_of: [opaque], identity_headers: {{ sub: x-user-id }} }}
  - name: ticket
    match: {{ path_prefix: "/ticket/" }}
    upstream: "{up}"
    auth: {{ any_of: [ticket] }}
  - name: staff
    match: {{ path_prefix: "/staff/" }}
    upstream: "{up}"
    auth: {{ any_of: [staff], identity_headers: {{ sub: x-user }}, strip_credentials: true }}
  - name: both
    match: {{ path_prefix: "/both/" }}
    upstream: "{up}"
    auth: {{ all_of: [keys, staff] }}
  - name: office
    match: {{ path_prefix: "/office/" }}
    upstream: "{up}"
    ip: {{ allow: ["10.0.0.0/8", "2001:db8::/32"], deny: ["10.6.6.0/24"] }}
"#,
        ins = introspect.url(),
        fwd = authz.url(),
        up = echo.url(),
    );
    let (_gw, addr) = gateway(&yaml).await;
    let c = client();
    let base = format!("http://{addr}");

    // Introspection.
    let v: Value = c
        .get(format!("{base}/opaque/x"))
        .bearer_auth("opaque-good")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(header(&v, "x-user-id"), Some("ivy"));
    let rsp = c
        .get(format!("{base}/opaque/x"))
        .bearer_auth("opaque-bad")
        .send()
        .await
        .unwrap();
    assert_problem_reqwest(rsp, 401).await;

    // Forward auth: 2xx passes and copies headers; anything else goes back.
    let v: Value = c
        .get(format!("{base}/ticket/x"))
        .header("x-ticket", "ok")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(header(&v, "x-auth-user"), Some("fwd-user"));
    let no_redirect = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let rsp = no_redirect
        .get(format!("{base}/ticket/x"))
        .header("x-ticket", "login")
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 302);
    assert_eq!(rsp.headers()["location"], "https://login.test/");
    let rsp = c.get(format!("{base}/ticket/x")).send().await.unwrap();
    assert_eq!(rsp.status(), 401);
    assert_eq!(rsp.headers()["www-authenticate"], "Ticket");

    // Basic auth against a bcrypt hash.
    let v: Value = c
        .get(format!("{base}/staff/x"))
        .basic_auth("alice", Some("s3cret"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(header(&v, "x-user"), Some("alice"));
    assert!(v["headers"].get("authorization").is_none());
    let rsp = c
        .get(format!("{base}/staff/x"))
        .basic_auth("alice", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert!(
        rsp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic realm=\"staff\"")
    );
    assert_problem_reqwest(rsp, 401).await;

    // All of: an API key and basic credentials together.
    let both = |key: Option<&str>, basic: bool| {
        let mut rb = c.get(format!("{base}/both/x"));
        if let Some(k) = key {
            rb = rb.header("x-api-key", k);
        }
        if basic {
            rb = rb.basic_auth("alice", Some("s3cret"));
        }
        rb
    };
    assert_eq!(
        both(Some("ops-key-0123456789"), true)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        both(Some("ops-key-0123456789"), false)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(both(None, true).send().await.unwrap().status(), 401);

    // IP lists on the client address derived through the trusted proxy.
    for (xff, want) in [
        ("10.1.2.3", 200),
        ("10.6.6.6", 403),
        ("192.0.2.7", 403),
        ("2001:db8::1", 200),
        ("2001:db9::1", 403),
    ] {
        let rsp = c
            .get(format!("{base}/office/x"))
            .header("x-forwarded-for", xff)
            .send()
            .await
            .unwrap();
        assert_eq!(rsp.status().as_u16(), want, "{xff}");
        if want == 403 {
            assert_problem_reqwest(rsp, 403).await;
        }
    }
}

/// An Authelia-style rule on `^/admin/` must see `/admin/users`, not the
/// `/users` the route strips it to for the upstream.
#[tokio::test]
async fn forward_auth_sees_the_path_before_strip_prefix() {
    let echo = spawn_upstream(echo_router("echo")).await;
    let authz = spawn_upstream(Router::new().route(
        "/check",
        get(|req: Request| async move {
            let uri = req
                .headers()
                .get("x-forwarded-uri")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            if uri.starts_with("/admin/") {
                ([("x-seen-uri", uri)], "").into_response()
            } else {
                (http::StatusCode::FORBIDDEN, uri).into_response()
            }
        }),
    ))
    .await;
    let yaml = format!(
        r#"listen: "127.0.0.1:0"
auth_providers:
  sso:
    forward: {{ url: "{fwd}/check", copy_headers: [x-seen-uri] }}
routes:
  - name: admin
    match: {{ path_prefix: "/admin/" }}
    strip_prefix: true
    upstream: "{up}"
    auth: {{ any_of: [sso] }}
"#,
        fwd = authz.url(),
        up = echo.url(),
    );
    let (_gw, addr) = gateway(&yaml).await;
    let rsp = client()
        .get(format!("http://{addr}/admin//x/../users?page=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    let v: Value = rsp.json().await.unwrap();
    assert_eq!(v["path"], "/users");
    assert_eq!(v["query"], "page=2");
    // Normalised, as the router matched it.
    assert_eq!(header(&v, "x-seen-uri"), Some("/admin/users?page=2"));
}

#[test]
fn bad_auth_config_names_its_path() {
    let cases = [
        (
            "auth_providers: { a: { jwt: { algorithms: [RS256] } } }",
            "auth_providers.a.jwt",
        ),
        (
            "auth_providers: { a: { jwt: { secret: \"0123456789abcdef0123456789abcdef!\", algorithms: [XX999] } } }",
            "auth_providers.a.jwt.algorithms[0]",
        ),
        (
            "auth_providers: { a: { api_key: { keys: [] } } }",
            "auth_providers.a.api_key.keys",
        ),
        (
            "auth_providers: { a: { api_key: { keys: [{ consumer: x }] } } }",
            "auth_providers.a.api_key.keys[0]",
        ),
        ("auth_providers: { a: {} }", "auth_providers.a"),
        (
            "auth_providers: { a: { basic: { users_file: /nonexistent/users } } }",
            "auth_providers.a.basic.users_file",
        ),
    ];
    for (providers, path) in cases {
        let yaml = format!(
            "listen: \"127.0.0.1:0\"\n{providers}\nroutes:\n  - name: r\n    upstream: \"http://127.0.0.1:1\"\n"
        );
        let cfg = towergate::config::parse_str(&yaml, towergate::config::Format::Yaml).unwrap();
        let e = towergate::stack::compile(&cfg).unwrap_err();
        assert!(e.has_path(path), "{providers}: {e}");
    }
    let yaml = "listen: \"127.0.0.1:0\"\nroutes:\n  - name: r\n    upstream: \"http://127.0.0.1:1\"\n    auth: { any_of: [ghost] }\n    ip: { allow: [\"10.0.0.0/40\"] }\n";
    let cfg = towergate::config::parse_str(yaml, towergate::config::Format::Yaml).unwrap();
    let e = towergate::stack::compile(&cfg).unwrap_err();
    assert!(e.has_path("routes[0].auth.any_of[0]"), "{e}");
    assert!(e.has_path("routes[0].ip.allow[0]"), "{e}");
}

#[tokio::test]
async fn a_reload_reads_a_changed_users_file() {
    // The provider's definition names the file by path only: a removed
    // or changed user must still be picked up by a reload.
    let echo = spawn_upstream(echo_router("echo")).await;
    let dir = std::env::temp_dir().join(format!("towergate-auth-users-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let users = dir.join("users");
    let line = |pw: &str| format!("alice:{}\n", bcrypt::hash(pw, 4).unwrap());
    std::fs::write(&users, line("first-password")).unwrap();
    let path = dir.join("gateway.yaml");
    std::fs::write(
        &path,
        format!(
            r#"listen: "127.0.0.1:0"
auth_providers:
  b: {{ basic: {{ users_file: "{}" }} }}
routes:
  - name: r
    match: {{ path_prefix: "/" }}
    upstream: "{}"
    auth: {{ any_of: [b] }}
"#,
            users.display(),
            echo.url()
        ),
    )
    .unwrap();
    let (gw, addr) = gateway_from_file(&path).await;
    let status = |pw: &'static str| {
        let url = format!("http://{addr}/x");
        async move {
            client()
                .get(url)
                .basic_auth("alice", Some(pw))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(status("first-password").await, 200);
    std::fs::write(&users, line("second-password")).unwrap();
    match towergate::reload::reload_now(&path, &gw.live()) {
        towergate::reload::ReloadOutcome::Applied { .. } => {}
        towergate::reload::ReloadOutcome::Rejected(e) => panic!("{e}"),
    }
    assert_eq!(status("first-password").await, 401);
    assert_eq!(status("second-password").await, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_reloaded_secret_takes_effect() {
    // Authenticators are kept across reloads while their definition does
    // not change; a changed secret (shown redacted, so not compared as
    // shown) must build a new one.
    const NEW: &str = "another e2e shared secret of at least 32 bytes";
    let echo = spawn_upstream(echo_router("echo")).await;
    let text = |secret: &str| {
        format!(
            r#"listen: "127.0.0.1:0"
auth_providers:
  j: {{ jwt: {{ secret: "{secret}", algorithms: [HS256] }} }}
routes:
  - name: r
    match: {{ path_prefix: "/" }}
    upstream: "{}"
    auth: {{ any_of: [j] }}
"#,
            echo.url()
        )
    };
    let dir = std::env::temp_dir().join(format!("towergate-auth-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.yaml");
    std::fs::write(&path, text(SECRET)).unwrap();
    let (gw, addr) = gateway_from_file(&path).await;
    let claims = json!({"sub": "alice", "exp": now() + 300});
    let old = hs256(claims.clone());
    let new = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(NEW.as_bytes()),
    )
    .unwrap();
    let status = |token: String| {
        let url = format!("http://{addr}/x");
        async move {
            client()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(status(old.clone()).await, 200);
    assert_eq!(status(new.clone()).await, 401);
    std::fs::write(&path, text(NEW)).unwrap();
    match towergate::reload::reload_now(&path, &gw.live()) {
        towergate::reload::ReloadOutcome::Applied { .. } => {}
        towergate::reload::ReloadOutcome::Rejected(e) => panic!("{e}"),
    }
    assert_eq!(status(old).await, 401);
    assert_eq!(status(new).await, 200);
    gw.shutdown().await;
}
