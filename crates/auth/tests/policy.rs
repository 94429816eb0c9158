//! What the layers do around authentication: IP allow/deny lists,
//! authorization rules (403), any-of/all-of method sets, identity headers
//! for the upstream (never spoofable) and credential stripping.
#![allow(clippy::unwrap_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use http::{HeaderName, Response};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::{ServiceBuilder, ServiceExt, service_fn};
use towergate_auth::{
    ApiKeyLayer, ApiKeys, AuthLayer, BasicAuth, Consumer, IpFilterLayer, Jwt, JwtLayer, Rule,
    TokenSource,
};
use towergate_core::{ClientAddr, Identity, TrustedProxies};
use towergate_test::{echo_router, spawn_upstream};

use common::*;

fn h(name: &'static str) -> HeaderName {
    HeaderName::from_static(name)
}

// === IP filter ===

async fn ip_status(layer: &IpFilterLayer, addr: Option<&str>) -> (u16, Value) {
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(service_fn(|_: http::Request<String>| async {
            Ok::<_, Infallible>(Response::new(String::from("in")))
        }));
    let mut req = http::Request::new(String::new());
    if let Some(a) = addr {
        req.extensions_mut()
            .insert(ClientAddr::direct(a.parse().unwrap(), false));
    }
    let rsp = svc.oneshot(req).await.unwrap();
    let status = rsp.status().as_u16();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn ip_allow_and_deny_v4_v6_and_mapped() {
    let layer = IpFilterLayer::builder()
        .allow("10.0.0.0/8".parse::<ipnet::IpNet>().unwrap())
        .allow("2001:db8::/32".parse::<ipnet::IpNet>().unwrap())
        .deny("10.6.6.0/24".parse::<ipnet::IpNet>().unwrap())
        .deny("2001:db8:bad::/48".parse::<ipnet::IpNet>().unwrap())
        .build()
        .unwrap();
    for (addr, status) in [
        ("10.1.2.3:1", 200),
        ("10.6.6.6:1", 403),
        ("192.0.2.1:1", 403),
        ("[2001:db8::1]:1", 200),
        ("[2001:db8:bad::1]:1", 403),
        ("[2001:db9::1]:1", 403),
        // IPv4-mapped IPv6 (a dual-stack listener) is matched as IPv4.
        ("[::ffff:10.1.2.3]:1", 200),
        ("[::ffff:10.6.6.6]:1", 403),
    ] {
        let (got, body) = ip_status(&layer, Some(addr)).await;
        assert_eq!(got, status, "{addr}");
        if status == 403 {
            assert_eq!(body["reason"], "ip_denied");
        }
    }
    // No recorded address: the filter fails closed.
    assert_eq!(ip_status(&layer, None).await.0, 403);
    assert!(IpFilterLayer::builder().build().is_err());
}

/// Over a real socket, with the client address resolved by the listener's
/// trusted-proxy rules: a trusted proxy's X-Forwarded-For counts, a
/// client's own does not.
#[tokio::test]
async fn ip_filter_behind_trusted_proxies() {
    let layer = IpFilterLayer::builder()
        .allow("10.0.0.0/8".parse::<ipnet::IpNet>().unwrap())
        .deny("10.6.6.0/24".parse::<ipnet::IpNet>().unwrap())
        .build()
        .unwrap();
    let start = |trusted: TrustedProxies| {
        let layer = layer.clone();
        async move {
            // What the gateway's listener does: record the client address.
            let record = tower::util::MapRequestLayer::new(move |mut req: Request| {
                let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().unwrap().0;
                let addr = ClientAddr::resolve(peer, false, req.headers(), &trusted);
                req.extensions_mut().insert(addr);
                req
            });
            let app = Router::new()
                .fallback(echo)
                .layer(layer)
                .layer(record)
                .into_make_service_with_connect_info::<SocketAddr>();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let task = tokio::spawn(async move { axum::serve(listener, app).await });
            (format!("http://{addr}"), task)
        }
    };
    let (trusting, t1) = start(TrustedProxies::new(["127.0.0.1/32".parse().unwrap()])).await;
    let call = |url: String, ip: &'static str| async move {
        get(&url, &[("x-forwarded-for", ip)]).await.status
    };
    assert_eq!(call(trusting.clone(), "10.1.1.1").await, 200);
    assert_eq!(call(trusting.clone(), "10.6.6.6").await, 403);
    assert_eq!(
        get(&trusting, &[]).await.status,
        403,
        "127.0.0.1 is not allowed"
    );

    let (untrusting, t2) = start(TrustedProxies::none()).await;
    assert_eq!(
        call(untrusting, "10.1.1.1").await,
        403,
        "XFF from a client is not believed"
    );
    t1.abort();
    t2.abort();

    // axum's ConnectInfo alone also works.
    let deny_local = IpFilterLayer::builder()
        .deny("127.0.0.0/8".parse::<ipnet::IpNet>().unwrap())
        .build()
        .unwrap();
    let app = Router::new()
        .fallback(echo)
        .layer(deny_local)
        .into_make_service_with_connect_info::<SocketAddr>();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move { axum::serve(listener, app).await });
    let r = get(&format!("http://{addr}"), &[]).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.reason(), "ip_denied");
    task.abort();
}

// === authorization rules ===

#[tokio::test]
async fn scope_rule_is_403_insufficient_scope() {
    let layer = JwtLayer::builder()
        .secret(SECRET)
        .require(Rule::scopes(["orders:read", "orders:write"]))
        .build()
        .unwrap();
    let app = serve(layer).await;
    let r = bearer(&app.url(), &hs256(&claims("reader"))).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.reason(), "insufficient_scope");
    assert_eq!(
        r.challenge(),
        "Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"orders:write\""
    );
    let mut c = claims("writer");
    c["scope"] = json!("orders:read orders:write");
    assert_eq!(bearer(&app.url(), &hs256(&c)).await.status, 200);
    // Not authenticated at all is still a 401.
    assert_eq!(get(&app.url(), &[]).await.status, 401);
}

#[tokio::test]
async fn claim_and_group_rules_are_403() {
    let cases: Vec<(Rule, Value, Value)> = vec![
        (
            Rule::claim_equals("org.id", 7),
            json!({"org": {"id": 7}}),
            json!({"org": {"id": 8}}),
        ),
        (
            Rule::claim_contains("roles", "admin"),
            json!({"roles": ["user", "admin"]}),
            json!({"roles": ["user"]}),
        ),
        (
            Rule::claim_one_of("tier", ["gold", "silver"]),
            json!({"tier": "silver"}),
            json!({"tier": "bronze"}),
        ),
        (
            Rule::groups(["ops", "sre"]),
            json!({"groups": ["dev", "sre"]}),
            json!({"groups": ["dev"]}),
        ),
    ];
    for (rule, allowed, refused) in cases {
        let layer = JwtLayer::builder()
            .secret(SECRET)
            .require(rule.clone())
            .build()
            .unwrap();
        let app = serve(layer).await;
        let token = |extra: &Value| {
            let mut c = claims("u");
            for (k, v) in extra.as_object().unwrap() {
                c[k] = v.clone();
            }
            hs256(&c)
        };
        assert_eq!(
            bearer(&app.url(), &token(&allowed)).await.status,
            200,
            "{rule:?}"
        );
        let r = bearer(&app.url(), &token(&refused)).await;
        assert_eq!(r.status, 403, "{rule:?}");
        assert_eq!(r.reason(), "not_allowed");
        assert!(r.headers.get("www-authenticate").is_none());
        // The refusal names the claim, not the caller's value.
        assert!(!r.body["detail"].to_string().contains("bronze"));
    }
}

#[tokio::test]
async fn closure_rules_and_rules_on_api_key_metadata() {
    let layer = ApiKeyLayer::builder()
        .key(
            "k-ro",
            Consumer::new("reader").metadata("groups", json!(["readers"])),
        )
        .key(
            "k-adm",
            Consumer::new("admin").metadata("groups", json!(["admins"])),
        )
        .require(Rule::groups(["readers", "admins"]))
        .require(|id: &Identity, req: &http::request::Parts| {
            req.method == http::Method::GET || id.consumer.as_deref() == Some("admin")
        })
        .build()
        .unwrap();
    let app = serve(layer).await;
    let post = |key: &'static str| {
        let url = app.url();
        async move {
            client()
                .post(url)
                .header("x-api-key", key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(get(&app.url(), &[("x-api-key", "k-ro")]).await.status, 200);
    assert_eq!(post("k-ro").await, 403);
    assert_eq!(post("k-adm").await, 200);
}

// === several methods ===

fn jwt() -> Jwt {
    Jwt::builder().secret(SECRET).build().unwrap()
}

fn keys() -> ApiKeys {
    ApiKeys::builder()
        .key("key-1", Consumer::new("acme").scopes(["extra"]))
        .build()
        .unwrap()
}

#[tokio::test]
async fn any_of_the_first_present_credential_decides() {
    let layer = AuthLayer::builder()
        .method(jwt())
        .method(keys())
        .method(
            BasicAuth::builder()
                .user("ops", bcrypt::hash("pw", 4).unwrap())
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let app = serve(layer).await;
    let token = hs256(&claims("alice"));
    let auth = format!("Bearer {token}");

    let r = get(&app.url(), &[("authorization", &auth)]).await;
    assert_eq!(r.body["identity"]["method"], "jwt");
    let r = get(&app.url(), &[("x-api-key", "key-1")]).await;
    assert_eq!(r.body["identity"]["method"], "api_key");
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "ops:pw")
    );
    let r = get(&app.url(), &[("authorization", &basic)]).await;
    assert_eq!(r.body["identity"]["method"], "basic");

    // Nothing presented: every scheme is offered.
    let r = get(&app.url(), &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.reason(), "missing_credentials");
    assert_eq!(
        r.challenges(),
        [
            "Bearer realm=\"api\"",
            "ApiKey realm=\"api\"",
            "Basic realm=\"api\", charset=\"UTF-8\""
        ]
    );

    // A bad JWT decides, even with a good API key beside it.
    let r = get(
        &app.url(),
        &[("authorization", "Bearer x.y.z"), ("x-api-key", "key-1")],
    )
    .await;
    r.assert_invalid_token("malformed");
    // A good JWT decides, the bad key is not even looked at.
    let r = get(
        &app.url(),
        &[("authorization", &auth), ("x-api-key", "nope")],
    )
    .await;
    assert_eq!(r.status, 200);
    // Nor does it reach the upstream: nobody checked it. The deciding
    // credential does (no `strip_credentials`).
    assert!(r.body["headers"].get("x-api-key").is_none(), "{:?}", r.body);
    assert_eq!(r.body["headers"]["authorization"][0], auth.as_str());
}

/// With `any_of`, the credentials of the methods that did not decide were
/// never checked: they do not reach the upstream (a forged bearer beside a
/// good API key would be trusted by an upstream that decodes it), unless
/// they are where the deciding credential is. They go by where they are,
/// not by whether the gateway can read them: upstreams read more.
#[tokio::test]
async fn any_of_removes_the_credentials_nobody_checked() {
    let layer = AuthLayer::builder()
        .method(keys())
        .method(jwt())
        .build()
        .unwrap();
    let app = serve(layer).await;
    // A tab after the scheme (Python's `split()` and Go's `strings.Fields`
    // still find the token), or a byte that is not ASCII: no bearer token
    // to the gateway, one to the upstream.
    for forged in [
        "Bearer forged.jwt.x",
        "Bearer\tforged.jwt.x",
        "Bearer forged.jwt.x\u{e9}",
    ] {
        let r = get(
            &app.url(),
            &[("x-api-key", "key-1"), ("authorization", forged)],
        )
        .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.body["identity"]["method"], "api_key");
        assert!(
            r.body["headers"].get("authorization").is_none(),
            "{forged:?}: {:?}",
            r.body
        );
        assert_eq!(r.body["headers"]["x-api-key"][0], "key-1");
    }

    // A JWT read from `X-Token`: its underscore spelling, which PHP, WSGI
    // and Rack read as `X_TOKEN` too, goes even when sent alone. So do the
    // other query spellings of a token read from the query, and the other
    // source of the deciding method (the API key came in the header, the
    // `api_key` parameter was never looked at).
    let layer = AuthLayer::builder()
        .method(
            ApiKeys::builder()
                .header(h("x-api-key"))
                .query("api_key")
                .key("key-1", Consumer::new("acme"))
                .build()
                .unwrap(),
        )
        .method(
            Jwt::builder()
                .secret(SECRET)
                .token_from(TokenSource::Header(h("x-token")))
                .token_from(TokenSource::Query("access_token".into()))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let app = serve(layer).await;
    let url = format!(
        "{}/items?a=1&api_key=forged&access.token=forged&ACCESS_TOKEN=forged&b=2",
        app.url()
    );
    let r = get(&url, &[("x-api-key", "key-1"), ("x_token", "forged.jwt.x")]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["identity"]["method"], "api_key");
    assert!(r.body["headers"].get("x_token").is_none(), "{:?}", r.body);
    assert_eq!(r.body["uri"], "/items?a=1&b=2");
    assert_eq!(r.body["headers"]["x-api-key"][0], "key-1");
    // The key in the query was checked: it stays, the forged token goes.
    let url = format!("{}/items?api_key=key-1", app.url());
    let r = get(&url, &[("x_token", "forged.jwt.x")]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["uri"], "/items?api_key=key-1");
    assert!(r.body["headers"].get("x_token").is_none(), "{:?}", r.body);
    // Two JWT providers on the one bearer: the checked token stays.
    let layer = AuthLayer::builder()
        .method(jwt())
        .method(jwt())
        .build()
        .unwrap();
    let app = serve(layer).await;
    let auth = format!("Bearer {}", hs256(&claims("alice")));
    let r = get(&app.url(), &[("authorization", &auth)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["headers"]["authorization"][0], auth.as_str());
}

/// A forward-auth service decides by what it was sent (here a Basic
/// `Authorization`, which the JWT method before it passed over): that
/// stays, the other methods' credentials go.
#[tokio::test]
async fn forward_auth_deciding_removes_the_other_credentials() {
    let auth = spawn_upstream(Router::new().route(
        "/auth",
        axum::routing::get(|headers: http::HeaderMap| async move {
            match headers.get("authorization").map(|v| v.as_bytes()) {
                Some(b"Basic b2s6b2s=") => http::StatusCode::OK,
                _ => http::StatusCode::UNAUTHORIZED,
            }
        }),
    ))
    .await;
    let layer = AuthLayer::builder()
        .method(keys())
        .method(jwt())
        .method(
            towergate_auth::ForwardAuth::builder(format!("{}/auth", auth.url()))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let app = serve(layer).await;
    // No `X-Api-Key`, so the auth service decides; `x_api_key` reaches a
    // CGI-style upstream as the API key, which nobody checked.
    let r = get(
        &app.url(),
        &[("authorization", "Basic b2s6b2s="), ("x_api_key", "key-1")],
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["identity"]["method"], "forward_auth");
    assert_eq!(r.body["headers"]["authorization"][0], "Basic b2s6b2s=");
    assert!(r.body["headers"].get("x_api_key").is_none(), "{:?}", r.body);
}

/// With `all_of`, each method checked one credential: a method's other
/// sources were not checked either.
#[tokio::test]
async fn all_of_removes_the_sources_not_read() {
    let layer = AuthLayer::builder()
        .all_of()
        .method(jwt())
        .method(
            ApiKeys::builder()
                .header(h("x-api-key"))
                .query("api_key")
                .key("key-1", Consumer::new("acme"))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let app = serve(layer).await;
    let auth = format!("Bearer {}", hs256(&claims("alice")));
    let url = format!("{}/items?api_key=forged&b=2", app.url());
    let r = get(&url, &[("authorization", &auth), ("x-api-key", "key-1")]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["uri"], "/items?b=2");
    assert_eq!(r.body["headers"]["authorization"][0], auth.as_str());
    assert_eq!(r.body["headers"]["x-api-key"][0], "key-1");
}

#[tokio::test]
async fn all_of_needs_every_method_and_merges() {
    let layer = AuthLayer::builder()
        .all_of()
        .method(jwt())
        .method(keys())
        .require(Rule::scopes(["orders:read", "extra"]))
        .build()
        .unwrap();
    let app = serve(layer).await;
    let auth = format!("Bearer {}", hs256(&claims("alice")));

    let r = get(
        &app.url(),
        &[("authorization", &auth), ("x-api-key", "key-1")],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let id = &r.body["identity"];
    assert_eq!(id["subject"], "alice");
    assert_eq!(id["consumer"], "acme");
    assert_eq!(id["method"], "jwt");
    assert_eq!(id["scopes"], json!(["orders:read", "profile", "extra"]));

    let r = get(&app.url(), &[("authorization", &auth)]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.reason(), "missing_credentials");
    assert_eq!(r.challenges().len(), 2);
    let r = get(
        &app.url(),
        &[("authorization", &auth), ("x-api-key", "bad")],
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.reason(), "unknown_api_key");
    assert!(AuthLayer::builder().build().is_err());
}

// === identity headers and stripping, at a real echo upstream ===

#[tokio::test]
async fn identity_headers_reach_the_upstream_and_cannot_be_spoofed() {
    let layer = JwtLayer::builder()
        .secret(SECRET)
        .identity_header("sub", h("x-user-id"))
        .identity_header("consumer", h("x-consumer"))
        .identity_header("org.id", h("x-org"))
        .identity_header("scope", h("x-scopes"))
        .strip_credentials(true)
        .build()
        .unwrap();
    let app = spawn_upstream(echo_router("svc").layer(layer)).await;
    let mut c = claims("alice");
    c["client_id"] = json!("web");
    let r = get(
        &app.url(),
        &[
            ("authorization", &format!("Bearer {}", hs256(&c))),
            ("x-user-id", "root"),
            ("x-org", "666"),
            ("x-consumer", "admin"),
            // CGI-style upstreams read these as the same variables.
            ("x_org", "666"),
            ("x_user-id", "root"),
            ("x_other", "kept"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let hs = &r.body["headers"];
    assert!(
        hs.get("x_org").is_none() && hs.get("x_user-id").is_none(),
        "{hs}"
    );
    assert_eq!(hs["x_other"], json!(["kept"]));
    assert_eq!(hs["x-user-id"], json!(["alice"]));
    assert_eq!(hs["x-consumer"], json!(["web"]));
    assert_eq!(hs["x-scopes"], json!(["orders:read profile"]));
    // The token has no org claim: the client's copy is gone all the same.
    assert!(hs.get("x-org").is_none(), "{hs}");
    assert!(hs.get("authorization").is_none(), "credential stripped");

    // Without stripping, the credential goes through.
    let keep = JwtLayer::builder().secret(SECRET).build().unwrap();
    let app = spawn_upstream(echo_router("svc").layer(keep)).await;
    let r = bearer(&app.url(), &hs256(&claims("a"))).await;
    assert!(r.body["headers"]["authorization"].is_array());
}

#[tokio::test]
async fn api_key_and_cookie_credentials_are_stripped() {
    let layer = ApiKeyLayer::builder()
        .header(h("x-api-key"))
        .query("api_key")
        .key("key-1", Consumer::new("acme"))
        .identity_header("consumer", h("x-consumer"))
        .strip_credentials(true)
        .build()
        .unwrap();
    let app = spawn_upstream(echo_router("svc").layer(layer)).await;
    let r = get(
        &format!("{}/items?a=1&api_key=key-1&b=%20x", app.url()),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["query"], "a=1&b=%20x");
    assert_eq!(r.body["headers"]["x-consumer"], json!(["acme"]));
    let r = get(&app.url(), &[("x-api-key", "key-1")]).await;
    assert!(r.body["headers"].get("x-api-key").is_none());

    let layer = JwtLayer::builder()
        .secret(SECRET)
        .token_from(TokenSource::Cookie("session".into()))
        .strip_credentials(true)
        .build()
        .unwrap();
    let app = spawn_upstream(echo_router("svc").layer(layer)).await;
    let cookie = format!("theme=dark; session={}; lang=en", hs256(&claims("a")));
    let r = get(&app.url(), &[("cookie", &cookie)]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["headers"]["cookie"], json!(["theme=dark; lang=en"]));
}
