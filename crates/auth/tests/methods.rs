//! API keys, OAuth2 introspection, forward auth and basic auth, each
//! against real servers on loopback.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get as get_route, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use sha2::{Digest, Sha256};
use towergate_auth::{ApiKeyLayer, BasicAuthLayer, Consumer, ForwardAuthLayer, IntrospectionLayer};
use towergate_test::spawn_upstream;

use common::*;

// === API keys ===

#[tokio::test]
async fn api_key_in_header_or_query() {
    let beta_digest: String = Sha256::digest(b"key-beta")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let layer = ApiKeyLayer::builder()
        .header(http::HeaderName::from_static("x-api-key"))
        .query("api_key")
        .key(
            "key-acme",
            Consumer::new("acme")
                .scopes(["orders:read"])
                .metadata("plan", "gold"),
        )
        .hashed_key(&beta_digest, Consumer::new("beta"))
        .build()
        .unwrap();
    let app = serve(layer).await;

    let r = get(&app.url(), &[("x-api-key", "key-acme")]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let id = &r.body["identity"];
    assert_eq!(id["consumer"], "acme");
    assert_eq!(id["method"], "api_key");
    assert_eq!(id["scopes"], json!(["orders:read"]));
    assert_eq!(id["claims"]["plan"], "gold");

    let r = get(&format!("{}/x?api_key=key-beta&y=1", app.url()), &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["identity"]["consumer"], "beta");

    let r = get(&app.url(), &[("x-api-key", "key-guess")]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.reason(), "unknown_api_key");
    assert_eq!(r.challenge(), "ApiKey realm=\"api\"");
    assert_eq!(r.headers["content-type"], "application/problem+json");
    assert!(!r.body.to_string().contains("key-guess"));

    let r = get(&app.url(), &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.reason(), "missing_credentials");
    assert_eq!(r.challenge(), "ApiKey realm=\"api\"");
}

// === OAuth2 token introspection ===

#[derive(Clone, Default)]
struct Idp {
    hits: Arc<AtomicUsize>,
}

/// An authorization server's introspection endpoint (RFC 7662): it
/// requires the gateway's client credentials and knows a few tokens.
async fn introspect(State(idp): State<Idp>, headers: HeaderMap, body: String) -> Response {
    idp.hits.fetch_add(1, Ordering::SeqCst);
    let expected = format!("Basic {}", STANDARD.encode("gateway:s3cr%C3%A9"));
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&expected) {
        return (http::StatusCode::UNAUTHORIZED, "bad client").into_response();
    }
    let form: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let token = form
        .iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.as_str());
    let answer = match token {
        Some("good-token") => json!({
            "active": true, "sub": "alice", "client_id": "mobile",
            "scope": "read write", "iss": ISS, "aud": AUD, "exp": now() + 3600,
        }),
        Some("short-token") => {
            json!({"active": true, "sub": "brief", "aud": AUD, "exp": now() + 1})
        }
        Some("other-aud") => {
            json!({"active": true, "sub": "x", "aud": "billing", "exp": now() + 60})
        }
        // Keycloak calls a refresh token "active" too.
        Some("refresh-token") => {
            json!({"active": true, "sub": "x", "aud": AUD, "typ": "Refresh", "exp": now() + 60})
        }
        // Keycloak's offline refresh tokens, logout tokens and serialised
        // ID tokens: none of them is an access token.
        Some(t @ ("offline-token" | "logout-token" | "serialized-id")) => {
            let typ = match t {
                "offline-token" => "Offline",
                "logout-token" => "Logout",
                _ => "Serialized-ID",
            };
            json!({"active": true, "sub": "x", "aud": AUD, "typ": typ, "exp": now() + 60})
        }
        Some("dpop-access") => json!({
            "active": true, "sub": "x", "aud": AUD, "token_type": "DPoP", "typ": "at+jwt",
            "exp": now() + 60,
        }),
        Some("typed-access") => json!({
            "active": true, "sub": "x", "aud": AUD, "typ": "Bearer",
            "token_type": "urn:ietf:params:oauth:token-type:access_token", "exp": now() + 60,
        }),
        _ => json!({"active": false}),
    };
    axum::Json(answer).into_response()
}

async fn idp_server() -> (towergate_test::Upstream, Idp) {
    let idp = Idp::default();
    let app = Router::new()
        .route("/introspect", post(introspect))
        .route(
            "/introspect-slowly",
            post(
                |idp: State<Idp>, headers: HeaderMap, body: String| async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    introspect(idp, headers, body).await
                },
            ),
        )
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "late"
            }),
        )
        .route(
            "/slow-counted",
            post(|State(idp): State<Idp>| async move {
                idp.hits.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(3)).await;
                "late"
            }),
        )
        .with_state(idp.clone());
    (spawn_upstream(app).await, idp)
}

fn introspection(url: String) -> IntrospectionLayer {
    IntrospectionLayer::builder(url)
        // The secret has a non-ASCII character: RFC 6749 §2.3.1 has it
        // form-encoded before Basic.
        .client_credentials("gateway", "s3cré")
        .audience(AUD)
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap()
}

#[tokio::test]
async fn introspection_active_inactive_and_cached() {
    let (server, idp) = idp_server().await;
    let layer = introspection(format!("{}/introspect", server.url()));
    let debug = format!("{layer:?}");
    assert!(
        !debug.contains("s3cr"),
        "the client secret is never printed: {debug}"
    );
    let app = serve(layer).await;

    let r = bearer(&app.url(), "good-token").await;
    assert_eq!(r.status, 200, "{r:?}");
    let id = &r.body["identity"];
    assert_eq!(id["subject"], "alice");
    assert_eq!(id["consumer"], "mobile");
    assert_eq!(id["issuer"], ISS);
    assert_eq!(id["scopes"], json!(["read", "write"]));
    assert_eq!(id["method"], "introspection");
    assert_eq!(idp.hits.load(Ordering::SeqCst), 1);
    for _ in 0..5 {
        assert_eq!(bearer(&app.url(), "good-token").await.status, 200);
    }
    assert_eq!(idp.hits.load(Ordering::SeqCst), 1, "served from the cache");

    let r = bearer(&app.url(), "revoked-token").await;
    r.assert_invalid_token("inactive_token");
    bearer(&app.url(), "revoked-token")
        .await
        .assert_invalid_token("inactive_token");
    assert_eq!(
        idp.hits.load(Ordering::SeqCst),
        2,
        "inactive answer cached briefly"
    );

    bearer(&app.url(), "other-aud")
        .await
        .assert_invalid_token("wrong_audience");
    // Only an access token opens the API.
    bearer(&app.url(), "refresh-token")
        .await
        .assert_invalid_token("inactive_token");
    for kind in ["offline-token", "logout-token", "serialized-id"] {
        bearer(&app.url(), kind)
            .await
            .assert_invalid_token("inactive_token");
    }
    assert_eq!(bearer(&app.url(), "typed-access").await.status, 200);
    assert_eq!(bearer(&app.url(), "dpop-access").await.status, 200);

    // Cached no longer than the token's exp.
    assert_eq!(bearer(&app.url(), "short-token").await.status, 200);
    let hits = idp.hits.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(bearer(&app.url(), "short-token").await.status, 200);
    assert_eq!(
        idp.hits.load(Ordering::SeqCst),
        hits + 1,
        "re-introspected after exp"
    );

    let r = get(&app.url(), &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.challenge(), "Bearer realm=\"api\"");
}

/// An introspection layer on `path` of the test's authorization server.
fn introspection_at(
    server: &towergate_test::Upstream,
    path: &str,
    timeout: Duration,
    negative_ttl: Option<Duration>,
) -> IntrospectionLayer {
    let mut b = IntrospectionLayer::builder(format!("{}{path}", server.url()))
        .client_credentials("gateway", "s3cré")
        .audience(AUD)
        .timeout(timeout);
    if let Some(ttl) = negative_ttl {
        b = b.negative_ttl(ttl);
    }
    b.build().unwrap()
}

/// The statuses of `n` concurrent requests with `token`.
async fn burst(url: &str, token: &'static str, n: usize) -> Vec<u16> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let url = url.to_owned();
        tasks.spawn(async move { bearer(&url, token).await.status });
    }
    let mut statuses = Vec::new();
    while let Some(status) = tasks.join_next().await {
        statuses.push(status.unwrap());
    }
    statuses
}

#[tokio::test]
async fn concurrent_requests_with_one_token_make_one_introspection() {
    // A client's burst, or a retry storm, with one token: the identity
    // provider is asked once, the other requests wait for its answer.
    let (server, idp) = idp_server().await;
    // A timeout far above the endpoint's 300 ms: a busy machine must not
    // turn the test into a 503.
    let layer = introspection_at(&server, "/introspect-slowly", Duration::from_secs(10), None);
    let app = serve(layer).await;
    assert!(
        burst(&app.url(), "good-token", 20)
            .await
            .iter()
            .all(|s| *s == 200)
    );
    assert_eq!(idp.hits.load(Ordering::SeqCst), 1);
    // A refused token is shared the same way.
    assert!(
        burst(&app.url(), "forged-token", 10)
            .await
            .iter()
            .all(|s| *s == 401)
    );
    assert_eq!(idp.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn waiters_take_the_answer_even_when_it_is_not_cached() {
    // `negative_ttl: 0` caches no refusal: the waiters still take the
    // leader's answer (401), instead of counting it as a failed try.
    let (server, idp) = idp_server().await;
    let layer = introspection_at(
        &server,
        "/introspect-slowly",
        Duration::from_secs(10),
        Some(Duration::ZERO),
    );
    let app = serve(layer).await;
    assert!(
        burst(&app.url(), "forged-token", 20)
            .await
            .iter()
            .all(|s| *s == 401)
    );
    assert_eq!(idp.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_failing_endpoint_gets_one_call_per_round_not_one_per_request() {
    // Every call times out: the first request leads, the others wait; when
    // it fails, one of them leads the next try, and so on for a few
    // rounds; then all answer 503. Not 20 calls at once after the first.
    let (server, idp) = idp_server().await;
    let layer = introspection_at(&server, "/slow-counted", Duration::from_millis(300), None);
    let app = serve(layer).await;
    assert!(
        burst(&app.url(), "good-token", 20)
            .await
            .iter()
            .all(|s| *s == 503)
    );
    let calls = idp.hits.load(Ordering::SeqCst);
    assert!((1..=4).contains(&calls), "{calls} calls for 20 requests");
}

#[tokio::test]
async fn introspection_endpoint_trouble_is_503() {
    let (server, _) = idp_server().await;
    // Down.
    let dead = dead_port().await;
    let app = serve(introspection(format!("http://{dead}/introspect"))).await;
    let r = bearer(&app.url(), "good-token").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.reason(), "introspection_unavailable");
    assert!(r.headers.get("www-authenticate").is_none());
    // Too slow.
    let app = serve(introspection(format!("{}/slow", server.url()))).await;
    let started = std::time::Instant::now();
    let r = bearer(&app.url(), "good-token").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // Refuses the gateway's credentials: the gateway's problem, not the
    // client's.
    let wrong = IntrospectionLayer::builder(format!("{}/introspect", server.url()))
        .client_credentials("gateway", "wrong")
        .build()
        .unwrap();
    let app = serve(wrong).await;
    assert_eq!(bearer(&app.url(), "good-token").await.status, 503);
}

// === forward auth ===

/// An SSO-style auth service: lets `Bearer letmein` through with identity
/// headers, redirects browsers without credentials to a login page, and
/// refuses anything else.
async fn auth_service(headers: HeaderMap) -> Response {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    match h("authorization").as_str() {
        "Bearer letmein" => (
            [
                ("x-user-id", "u-42".to_owned()),
                ("x-auth-roles", "admin".to_owned()),
                ("x-not-copied", "nope".to_owned()),
                (
                    "x-seen",
                    format!(
                        "{} {} {} {}",
                        h("x-forwarded-method"),
                        h("x-forwarded-uri"),
                        h("x-forwarded-proto"),
                        h("x-custom")
                    ),
                ),
            ],
            "ok",
        )
            .into_response(),
        "" => (
            http::StatusCode::FOUND,
            [
                ("location", "https://login.test/?rd=orders".to_owned()),
                ("set-cookie", "csrf=abc; HttpOnly".to_owned()),
            ],
        )
            .into_response(),
        "Bearer huge" => (http::StatusCode::FORBIDDEN, "x".repeat(100_000)).into_response(),
        _ => (
            http::StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Bearer realm=\"sso\"")],
            "denied by sso",
        )
            .into_response(),
    }
}

fn forward_layer(url: String) -> ForwardAuthLayer {
    ForwardAuthLayer::builder(url)
        .forward_header(http::header::AUTHORIZATION)
        .forward_header(http::HeaderName::from_static("x-custom"))
        .copy_response_header(http::HeaderName::from_static("x-user-id"))
        .copy_response_header(http::HeaderName::from_static("x-auth-roles"))
        .copy_response_header(http::HeaderName::from_static("x-seen"))
        .subject_header(http::HeaderName::from_static("x-user-id"))
        .timeout(Duration::from_millis(500))
        .max_body(1024)
        .build()
        .unwrap()
}

#[tokio::test]
async fn forward_auth_passes_and_copies_headers() {
    let auth = spawn_upstream(Router::new().route("/auth", get_route(auth_service)).route(
        "/slow",
        get_route(|| async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            "late"
        }),
    ))
    .await;
    let app = serve(forward_layer(format!("{}/auth", auth.url()))).await;
    let url = format!("{}/orders?x=1", app.url());

    let r = get(
        &url,
        &[
            ("authorization", "Bearer letmein"),
            ("x-custom", "hello"),
            // Spoofing attempts: removed before the auth service's copies.
            ("x-user-id", "root"),
            ("x-auth-roles", "superuser"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let h = &r.body["headers"];
    assert_eq!(h["x-user-id"], json!(["u-42"]));
    assert_eq!(h["x-auth-roles"], json!(["admin"]));
    assert_eq!(h["x-seen"], json!(["GET /orders?x=1 http hello"]));
    assert!(h.get("x-not-copied").is_none());
    assert_eq!(r.body["identity"]["subject"], "u-42");
    assert_eq!(r.body["identity"]["method"], "forward_auth");

    // Refusals come back as the auth service gave them.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let rsp = no_redirects.get(&url).send().await.unwrap();
    assert_eq!(rsp.status(), 302);
    assert_eq!(rsp.headers()["location"], "https://login.test/?rd=orders");
    assert_eq!(rsp.headers()["set-cookie"], "csrf=abc; HttpOnly");

    let rsp = no_redirects
        .get(&url)
        .header("authorization", "Bearer wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 401);
    assert_eq!(rsp.headers()["www-authenticate"], "Bearer realm=\"sso\"");
    assert_eq!(rsp.text().await.unwrap(), "denied by sso");

    // A body over the limit is dropped; status and headers stay.
    let rsp = no_redirects
        .get(&url)
        .header("authorization", "Bearer huge")
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 403);
    assert_eq!(rsp.text().await.unwrap(), "");

    // Auth service too slow, or gone: 503.
    let slow = serve(forward_layer(format!("{}/slow", auth.url()))).await;
    let r = get(&slow.url(), &[("authorization", "Bearer letmein")]).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.reason(), "auth_service_unavailable");
    let dead = dead_port().await;
    let gone = serve(forward_layer(format!("http://{dead}/auth"))).await;
    let r = get(&gone.url(), &[("authorization", "Bearer letmein")]).await;
    assert_eq!(r.status, 503, "{r:?}");
}

// === basic auth ===

fn argon2_hash(password: &str) -> String {
    use argon2::PasswordHasher;
    // Small parameters: this is a test, and debug builds are slow.
    let params = argon2::Params::new(1024, 1, 1, None).unwrap();
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let hash: argon2::PasswordHash = a.hash_password(password.as_bytes()).unwrap();
    hash.to_string()
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

#[tokio::test]
async fn basic_auth_with_bcrypt_and_argon2() {
    let bcrypt_hash = bcrypt::hash("wonderland", 4).unwrap();
    let file = format!(
        "# users\nalice:{bcrypt_hash}\n\nbob:{}\n",
        argon2_hash("builder")
    );
    let dir = std::env::temp_dir().join(format!("towergate-basic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("users");
    std::fs::write(&path, file).unwrap();
    let layer = BasicAuthLayer::builder()
        .users_file(&path)
        .realm("admin area")
        .build()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let app = serve(layer).await;

    for (user, pw) in [("alice", "wonderland"), ("bob", "builder")] {
        let r = get(&app.url(), &[("authorization", &basic(user, pw))]).await;
        assert_eq!(r.status, 200, "{user}: {r:?}");
        assert_eq!(r.body["identity"]["subject"], user);
        assert_eq!(r.body["identity"]["method"], "basic");
        // Again, from the cache.
        let r = get(&app.url(), &[("authorization", &basic(user, pw))]).await;
        assert_eq!(r.status, 200);
    }
    for (user, pw) in [("alice", "builder"), ("bob", "wonderland"), ("carol", "x")] {
        let r = get(&app.url(), &[("authorization", &basic(user, pw))]).await;
        assert_eq!(r.status, 401, "{user}");
        assert_eq!(r.reason(), "bad_credentials");
        assert_eq!(
            r.challenge(),
            "Basic realm=\"admin area\", charset=\"UTF-8\""
        );
    }
    let r = get(&app.url(), &[("authorization", "Basic !!!")]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.reason(), "malformed");
    let r = get(&app.url(), &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.challenge(),
        "Basic realm=\"admin area\", charset=\"UTF-8\""
    );
}

#[tokio::test]
async fn basic_auth_in_memory_list() {
    let layer = BasicAuthLayer::builder()
        .user("svc", bcrypt::hash("pw", 4).unwrap())
        .build()
        .unwrap();
    let app = serve(layer).await;
    assert_eq!(
        get(&app.url(), &[("authorization", &basic("svc", "pw"))])
            .await
            .status,
        200
    );
    assert_eq!(
        get(&app.url(), &[("authorization", &basic("svc", "pw2"))])
            .await
            .status,
        401
    );
}
