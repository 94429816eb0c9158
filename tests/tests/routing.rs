//! Routing through the real gateway: precedence, params, rewrites, 404/405,
//! normalisation. Upstreams are real axum servers on loopback; each route
//! forwards to the echo upstream under a base path named after the route,
//! so the echo tells which route was chosen.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic by design

mod support;

use serde_json::Value;
use support::{client, gateway, raw_get};
use towergate_test::{assert_problem_reqwest, echo_router, spawn_upstream};

const TABLE_ROUTES: &[(&str, &str)] = &[
    ("api-any", r#"{ path_prefix: "/api/" }"#),
    ("api-users-id", r#"{ path: "/api/users/{id}" }"#),
    ("api-users-me", r#"{ path: "/api/users/me" }"#),
    (
        "api-users-post",
        r#"{ path: "/api/users/{id}", methods: [POST] }"#,
    ),
    (
        "host-exact",
        r#"{ host: "api.example.com", path_prefix: "/api/" }"#,
    ),
    (
        "host-wild",
        r#"{ host: "*.example.com", path_prefix: "/api/" }"#,
    ),
    (
        "header-v2",
        r#"{ path_prefix: "/api/", headers: { x-version: "2" } }"#,
    ),
    (
        "header-regex",
        r#"{ path_prefix: "/api/", headers: { x-client: { regex: "ios-[0-9]+" } } }"#,
    ),
    (
        "query-debug",
        r#"{ path_prefix: "/api/", query: { debug: { present: true } } }"#,
    ),
    ("legacy-exact", r#"{ path: "/legacy/x" }"#),
    ("files", r#"{ path: "/files/{*rest}" }"#),
    ("root", r#"{ path_prefix: "/" }"#),
];

async fn table_gateway() -> (
    towergate::RunningGateway,
    std::net::SocketAddr,
    towergate_test::Upstream,
) {
    let echo = spawn_upstream(echo_router("echo")).await;
    let mut yaml = String::from("listen: \"127.0.0.1:0\"\nroutes:\n");
    for (name, m) in TABLE_ROUTES {
        yaml.push_str(&format!(
            "  - name: {name}\n    match: {m}\n    upstream: \"{}/r/{name}\"\n",
            echo.url()
        ));
    }
    // Priority beats specificity.
    yaml.push_str(&format!(
        "  - name: legacy-prio\n    match: {{ path_prefix: \"/legacy/\" }}\n    priority: 10\n    upstream: \"{}/r/legacy-prio\"\n",
        echo.url()
    ));
    let (gw, addr) = gateway(&yaml).await;
    (gw, addr, echo)
}

/// Which route served a response, from the path the echo upstream saw.
fn route_of(v: &Value) -> String {
    let path = v["path"].as_str().unwrap();
    path.trim_start_matches("/r/")
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

/// (method, host, path and query, headers, expected route)
type Row = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[tokio::test]
async fn precedence_table() {
    let (_gw, addr, _echo) = table_gateway().await;
    let c = client();
    // (method, host, path, headers, expected route)
    let rows: &[Row] = &[
        ("GET", "localhost", "/api/users/42", &[], "api-users-id"),
        ("GET", "localhost", "/api/users/me", &[], "api-users-me"),
        ("POST", "localhost", "/api/users/42", &[], "api-users-post"),
        ("DELETE", "localhost", "/api/users/42", &[], "api-users-id"),
        ("GET", "localhost", "/api/orders", &[], "api-any"),
        ("GET", "api.example.com", "/api/orders", &[], "host-exact"),
        (
            "GET",
            "api.example.com:8080",
            "/api/orders",
            &[],
            "host-exact",
        ),
        ("GET", "eu.example.com", "/api/orders", &[], "host-wild"),
        ("GET", "a.b.example.com", "/api/orders", &[], "host-wild"),
        ("GET", "example.com", "/api/orders", &[], "api-any"),
        ("GET", "api.example.com", "/api/users/42", &[], "host-exact"),
        (
            "GET",
            "localhost",
            "/api/orders",
            &[("x-version", "2")],
            "header-v2",
        ),
        (
            "GET",
            "localhost",
            "/api/orders",
            &[("x-version", "3")],
            "api-any",
        ),
        (
            "GET",
            "localhost",
            "/api/orders",
            &[("x-client", "ios-17")],
            "header-regex",
        ),
        (
            "GET",
            "localhost",
            "/api/orders",
            &[("x-client", "ios-17b")],
            "api-any",
        ),
        ("GET", "localhost", "/api/orders?debug", &[], "query-debug"),
        (
            "GET",
            "localhost",
            "/api/orders?debug=1&x=2",
            &[],
            "query-debug",
        ),
        (
            "GET",
            "localhost",
            "/api/users/42",
            &[("x-version", "2")],
            "api-users-id",
        ),
        ("GET", "localhost", "/legacy/x", &[], "legacy-prio"),
        ("GET", "localhost", "/files/a/b/c.txt", &[], "files"),
        ("GET", "localhost", "/other", &[], "root"),
        ("GET", "localhost", "/apix", &[], "root"),
        ("GET", "localhost", "/api", &[], "root"),
    ];
    for (method, host, path, headers, want) in rows {
        let mut rb = c
            .request(method.parse().unwrap(), format!("http://{addr}{path}"))
            .header("host", *host);
        for (k, v) in *headers {
            rb = rb.header(*k, *v);
        }
        let rsp = rb.send().await.unwrap();
        assert_eq!(rsp.status(), 200, "{method} {host}{path} {headers:?}");
        let v: Value = rsp.json().await.unwrap();
        assert_eq!(
            route_of(&v),
            *want,
            "{method} {host}{path} {headers:?} went to {}",
            v["path"]
        );
    }
}

#[tokio::test]
async fn seed_example_strips_prefix() {
    let users = spawn_upstream(echo_router("users")).await;
    let orders = spawn_upstream(echo_router("orders")).await;
    let yaml = format!(
        r#"listen: "127.0.0.1:0"
routes:
  - name: users
    match: {{ path_prefix: "/users/" }}
    strip_prefix: true
    upstream: "{}"
  - name: orders
    match: {{ path_prefix: "/orders/" }}
    strip_prefix: true
    upstream: "{}"
"#,
        users.url(),
        orders.url()
    );
    let (_gw, addr) = gateway(&yaml).await;
    let v: Value = client()
        .get(format!("http://{addr}/users/42"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["service"], "users");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/42");
    let v: Value = client()
        .get(format!("http://{addr}/orders/7?expand=items"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["service"], "orders");
    assert_eq!(v["path"], "/7");
    assert_eq!(v["query"], "expand=items");
    // "/users" is not under the prefix "/users/".
    let rsp = client()
        .get(format!("http://{addr}/users"))
        .send()
        .await
        .unwrap();
    assert_problem_reqwest(rsp, 404).await;
}

#[tokio::test]
async fn params_and_rewrites() {
    let echo = spawn_upstream(echo_router("echo")).await;
    let u = echo.url();
    let yaml = format!(
        r#"listen: "127.0.0.1:0"
routes:
  - name: account-orders
    match: {{ path: "/v1/accounts/{{id}}/orders/{{*rest}}" }}
    rewrite: "/accounts/{{id}}/{{rest}}"
    upstream: "{u}"
  - name: tenant
    match: {{ path_prefix: "/tenants/{{tenant}}/" }}
    strip_prefix: true
    upstream: "{u}/base"
  - name: user
    match: {{ path: "/u/{{name}}" }}
    rewrite: "/users/by-name/{{name}}"
    upstream: "{u}"
"#
    );
    let (_gw, addr) = gateway(&yaml).await;
    let get = |p: String| {
        let c = client();
        async move {
            c.get(p)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let v = get(format!(
        "http://{addr}/v1/accounts/17/orders/2024/03?sort=asc"
    ))
    .await;
    assert_eq!(v["path"], "/accounts/17/2024/03");
    assert_eq!(v["query"], "sort=asc");
    let v = get(format!("http://{addr}/tenants/acme/items/1")).await;
    assert_eq!(v["path"], "/base/items/1");
    let v = get(format!("http://{addr}/tenants/acme/")).await;
    assert_eq!(v["path"], "/base/");
    let v = get(format!("http://{addr}/u/ada%20lovelace")).await;
    assert_eq!(v["path"], "/users/by-name/ada%20lovelace");
}

#[tokio::test]
async fn not_found_and_method_not_allowed() {
    let echo = spawn_upstream(echo_router("echo")).await;
    let u = echo.url();
    let yaml = format!(
        r#"listen: "127.0.0.1:0"
routes:
  - name: read
    match: {{ path: "/things/{{id}}", methods: [GET] }}
    upstream: "{u}"
  - name: write
    match: {{ path: "/things/{{id}}", methods: [POST, PUT] }}
    upstream: "{u}"
"#
    );
    let (_gw, addr) = gateway(&yaml).await;
    let c = client();
    let rsp = c
        .get(format!("http://{addr}/nothing/here"))
        .send()
        .await
        .unwrap();
    assert!(rsp.headers().contains_key("x-request-id"));
    let v = assert_problem_reqwest(rsp, 404).await;
    assert_eq!(v["title"], "Not Found");
    assert!(
        v["detail"].as_str().unwrap().contains("/nothing/here"),
        "{v}"
    );

    let rsp = c
        .delete(format!("http://{addr}/things/1"))
        .send()
        .await
        .unwrap();
    let allow = rsp.headers()["allow"].to_str().unwrap().to_owned();
    let v = assert_problem_reqwest(rsp, 405).await;
    assert_eq!(v["title"], "Method Not Allowed");
    for m in ["GET", "HEAD", "POST", "PUT"] {
        assert!(allow.contains(m), "Allow: {allow}");
    }
    assert!(!allow.contains("DELETE"));
    // HEAD is allowed wherever GET is.
    let rsp = c
        .head(format!("http://{addr}/things/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
}

#[tokio::test]
async fn traversal_and_encoded_slashes_refused() {
    let echo = spawn_upstream(echo_router("echo")).await;
    let u = echo.url();
    let yaml = format!(
        r#"listen: "127.0.0.1:0"
routes:
  - name: public
    match: {{ path_prefix: "/public/" }}
    upstream: "{u}/r/public"
  - name: admin
    match: {{ path_prefix: "/admin/" }}
    upstream: "{u}/r/admin"
"#
    );
    let (_gw, addr) = gateway(&yaml).await;
    // Dot segments are resolved before matching: these reach the admin
    // route (and so its policies), never the public one.
    for p in [
        "/public/../admin/secret",
        "/public/%2e%2e/admin/secret",
        "/public/%2E%2E/admin/secret",
        "/public/./../admin/secret",
        "//public/..//admin/secret",
        "/public/x/../../admin/secret",
    ] {
        let (status, body) = raw_get(addr, p, "").await;
        assert_eq!(status, 200, "{p}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["path"], "/r/admin/admin/secret", "{p}");
    }
    // Beyond the root stays at the root.
    let (status, _) = raw_get(addr, "/../../public/a", "").await;
    assert_eq!(status, 200);
    // Encoded slashes, backslashes, NUL and dot segments with parameters
    // are refused outright.
    for p in [
        "/public/..%2fadmin/secret",
        "/public/%2F..%2Fadmin",
        "/public/..%5cadmin",
        "/public/a%00b",
        "/public/%zz",
        // A dot segment once a servlet container drops `;` parameters.
        "/public/..;/admin/secret",
        "/public/%2e%2e;jsessionid=1/admin/secret",
    ] {
        let (status, body) = raw_get(addr, p, "").await;
        assert_eq!(status, 400, "{p}: {body}");
        assert!(body.contains("\"status\":400"), "{p}: {body}");
    }
}
