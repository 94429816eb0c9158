//! `towergate demo`: the gateway with an embedded configuration in front of
//! three in-process services, so a fresh checkout shows what it does with
//! one command.

use std::net::SocketAddr;

use axum::extract::Path;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// The embedded configuration; `{users}`, `{orders}`, `{notifications}` and
/// `{listen}` are filled in at start.
pub const DEMO_CONFIG: &str = r#"
listen: "{listen}"
auth_providers:
  demo-jwt:
    jwt: { secret: "{jwt_secret}", algorithms: [HS256], audience: "demo" }
  demo-keys:
    api_key:
      header: x-api-key
      keys:
        - { consumer: acme, key: "demo-key-0123456789", metadata: { plan: gold } }
server:
  max_body: "1MB"
upstreams:
  users:
    # two instances, health-checked. Round-robin so that a curl loop sees
    # both; the default, P2C peak-EWMA, would send a lone sequential client
    # to the faster one (it spreads load, not single requests).
    endpoints: ["http://{users}", "http://{users2}"]
    balance: round_robin
    health_check: { path: /healthz, interval: "2s" }
    retry: { max_retries: 1 }
    timeout: "5s"
routes:
  - name: users
    match: { path_prefix: "/users/" }
    strip_prefix: true
    upstream: users
  - name: orders
    match: { path_prefix: "/orders/", methods: [GET, POST] }
    strip_prefix: true
    upstream: "http://{orders}"
    rate_limit:
      key: ip
      limits:
        - { name: per-ip, rate: "5/10s" }
  - name: notifications
    match: { path: "/notifications/{user}", methods: [GET] }
    rewrite: "/inbox/{user}"
    upstream: "http://{notifications}"
  - name: account
    match: { path_prefix: "/account/" }
    strip_prefix: true
    upstream: "http://{notifications}"
    auth:
      any_of: [demo-jwt, demo-keys]
      identity_headers: { sub: x-user-id, consumer: x-consumer }
      strip_credentials: true
  - name: beta-orders
    match: { path_prefix: "/orders/", methods: [GET, POST], headers: { x-beta: "1" } }
    strip_prefix: true
    upstream: "http://{notifications}"
  # One request, three services: the caller's user (by the JWT's subject),
  # that user's orders (by a field of the first answer) and their inbox.
  - name: home
    match: { path: "/screens/home", methods: [GET] }
    auth: { any_of: [demo-jwt] }
    aggregate:
      deadline: "2s"
      calls:
        - { name: user, upstream: users, path: "/{identity.sub}", allow: [id, name, customer_id] }
        - { name: orders, upstream: "http://{orders}", path: "/{user.customer_id}", required: false, timeout: "1s" }
        - { name: notifications, upstream: "http://{notifications}", path: "/inbox/{identity.sub}", required: false, allow: [unread] }
  # Cached for 30 s by the service's Cache-Control, compressed for clients
  # that ask, served without the upstream's Server header.
  - name: catalog
    match: { path: "/catalog", methods: [GET, HEAD] }
    rewrite: "/catalog"
    upstream: "http://{orders}"
    cache: { ttl: "10s" }
    compression: true
    response_headers: { hide_server: true, set: { x-served-by: "towergate ({route})" } }
  # A browser app on another origin creates orders: CORS preflights are
  # answered here, and bodies are checked against a JSON Schema first.
  - name: new-order
    match: { path: "/api/orders", methods: [POST, OPTIONS] }
    rewrite: "/new"
    upstream: "http://{orders}"
    cors:
      origins: ["https://app.example.com", "https://*.example.dev"]
      methods: [POST]
      headers: [content-type, authorization]
      max_age: "10m"
    validate:
      content_types: [application/json]
      max_body: "16KB"
      schema:
        type: object
        required: [item, qty]
        additionalProperties: false
        properties:
          item: { type: string, minLength: 1 }
          qty: { type: integer, minimum: 1, maximum: 100 }
  - name: old-users
    match: { path: "/old/users/{*rest}" }
    redirect: { to: "/users/{params.rest}", status: 308 }
  - name: maintenance
    match: { path: "/maintenance" }
    respond: { status: 503, body: "down for maintenance, back soon\n", headers: { retry-after: "120" } }
"#;

/// The users service; the demo runs two instances of it.
pub fn users_service(instance: &'static str) -> Router {
    Router::new()
        .route(
            "/",
            get(move || async move {
                Json(json!({"instance": instance, "users": [{"id": 42, "name": "Ada"}, {"id": 7, "name": "Linus"}]}))
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/{id}",
            get(move |Path(id): Path<String>| async move {
                // Numeric ids, or a login (the demo JWT's subject, `ada`).
                let (id, num) = match id.parse::<u64>() {
                    Ok(n) => (json!(n), n),
                    Err(_) => (json!(id), id.bytes().map(u64::from).sum()),
                };
                Json(json!({"id": id, "name": format!("user-{id}"), "customer_id": num * 10, "instance": instance}))
            }),
        )
}

/// Orders: a list per user, and POST to create one; a cacheable catalog.
pub fn orders_service() -> Router {
    Router::new()
        .route(
            "/catalog",
            get(|| async {
                let items: Vec<Value> = (1..=40)
                    .map(|i| json!({"sku": format!("sku-{i}"), "name": format!("item number {i}"), "price": i * 3}))
                    .collect();
                (
                    [
                        (http::header::CACHE_CONTROL, "public, max-age=30"),
                        (http::header::SERVER, "demo-orders/1.0"),
                    ],
                    Json(json!({"items": items})),
                )
            }),
        )
        .route(
            "/new",
            axum::routing::post(|body: axum::body::Bytes| async move {
                let order: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                (
                    http::StatusCode::CREATED,
                    Json(json!({"created": true, "order": order})),
                )
            }),
        )
        .route(
        "/{id}",
        get(|Path(id): Path<u64>| async move {
            Json(json!({"id": id, "items": ["book", "pen"], "total": 12.5}))
        })
        .post(|Path(id): Path<u64>, body: String| async move {
            (
                http::StatusCode::CREATED,
                Json(json!({"id": id, "created": true, "body": body})),
            )
        }),
    )
}

/// Notifications: an inbox per user.
pub fn notifications_service() -> Router {
    Router::new()
        .route(
            "/whoami",
            get(|headers: http::HeaderMap| async move {
                let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
                Json(json!({
                    "user": h("x-user-id"),
                    "consumer": h("x-consumer"),
                    "saw_credentials": headers.contains_key("authorization") || headers.contains_key("x-api-key"),
                }))
            }),
        )
        .route(
            "/inbox/{user}",
            get(|Path(user): Path<String>| async move { Json(json!({"user": user, "unread": 3})) }),
        )
        .fallback(|uri: http::Uri| async move {
            Json::<Value>(json!({"service": "notifications", "path": uri.path()}))
        })
}

async fn spawn(app: Router) -> std::io::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(l, app).await {
            tracing::error!(error = %e, "demo service stopped");
        }
    });
    Ok(addr)
}

/// A started demo: the gateway, its configuration and the demo services.
#[derive(Debug)]
pub struct Demo {
    /// The gateway.
    pub gateway: crate::RunningGateway,
    /// The configuration it runs, with addresses filled in.
    pub config: String,
    /// Addresses of the users service's two instances, then of the orders
    /// and notifications services.
    pub services: [SocketAddr; 4],
    /// A JWT the demo's `account` route accepts (HS256, valid for a day).
    pub token: String,
}

/// The demo's shared JWT secret: for the demo only, printed on purpose.
const DEMO_JWT_SECRET: &str = "towergate-demo-secret-not-for-production";

/// Starts the three demo services and the gateway in front of them.
pub async fn start(listen: SocketAddr) -> Result<Demo, Box<dyn std::error::Error + Send + Sync>> {
    let users = spawn(users_service("users-1")).await?;
    let users2 = spawn(users_service("users-2")).await?;
    let orders = spawn(orders_service()).await?;
    let notifications = spawn(notifications_service()).await?;
    let config = DEMO_CONFIG
        .replace("{jwt_secret}", DEMO_JWT_SECRET)
        .replace("{listen}", &listen.to_string())
        .replace("{users}", &users.to_string())
        .replace("{users2}", &users2.to_string())
        .replace("{orders}", &orders.to_string())
        .replace("{notifications}", &notifications.to_string());
    let cfg = crate::config::parse_str(&config, crate::config::Format::Yaml)?;
    let gateway = crate::start(crate::stack::compile(&cfg)?).await?;
    let token = demo_token()?;
    Ok(Demo {
        gateway,
        config,
        services: [users, users2, orders, notifications],
        token,
    })
}

fn demo_token() -> Result<String, jsonwebtoken::errors::Error> {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + 86_400;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "ada", "aud": "demo", "exp": exp, "scope": "demo"}),
        &jsonwebtoken::EncodingKey::from_secret(DEMO_JWT_SECRET.as_bytes()),
    )
}

/// The curl lines the demo prints, each with what it shows.
pub fn curl_lines(addr: SocketAddr, token: &str) -> Vec<(String, &'static str)> {
    vec![
        (
            format!("curl -i -H 'Authorization: Bearer {token}' http://{addr}/account/whoami"),
            "JWT accepted: the service sees x-user-id: ada, and no token",
        ),
        (
            format!("curl -i -H 'x-api-key: demo-key-0123456789' http://{addr}/account/whoami"),
            "API key accepted: the service sees x-consumer: acme",
        ),
        (
            format!("curl -i http://{addr}/account/whoami"),
            "401 with WWW-Authenticate for both schemes",
        ),
        (
            format!("curl -i http://{addr}/users/42"),
            "users service sees GET /42; `instance` shows which of its two instances answered",
        ),
        (format!("curl -i http://{addr}/users/"), "the list"),
        (
            format!("curl -i http://{addr}/orders/7"),
            "orders service sees GET /7",
        ),
        (
            format!("curl -i -X POST -d 'qty=2' http://{addr}/orders/7"),
            "201 from the orders service",
        ),
        (
            format!("curl -i -H 'x-beta: 1' http://{addr}/orders/7"),
            "the header match wins: the notifications service answers",
        ),
        (
            format!("curl -i http://{addr}/notifications/ada"),
            "rewritten to /inbox/ada",
        ),
        (
            format!("curl -i -X DELETE http://{addr}/notifications/ada"),
            "405 with Allow, problem+json",
        ),
        (format!("curl -i http://{addr}/nope"), "404 problem+json"),
        (
            format!("curl -i --path-as-is http://{addr}/users/../orders/7"),
            "normalised before matching: the orders route",
        ),
        (
            format!(
                "for i in 1 2 3 4 5 6 7; do curl -s -o /dev/null -w '%{{http_code}} ' http://{addr}/orders/9; done; echo"
            ),
            "the orders route allows 5 per 10 s per client: 200s, then 429s (see RateLimit and Retry-After with curl -i)",
        ),
        (
            format!("curl -s -H 'Authorization: Bearer {token}' http://{addr}/screens/home"),
            "one request, three services: user (by the JWT's subject), their orders (by the user's customer_id) and inbox, merged",
        ),
        (
            format!(
                "curl -s -o /dev/null -D - http://{addr}/catalog; curl -s -o /dev/null -D - http://{addr}/catalog"
            ),
            "Cache-Status: miss then hit (the second never reaches the service); no Server header",
        ),
        (
            format!("curl -s -H 'Accept-Encoding: br' -D - -o /dev/null http://{addr}/catalog"),
            "Content-Encoding: br (gzip or zstd when asked for those)",
        ),
        (
            format!(
                "curl -i -X OPTIONS -H 'Origin: https://shop.example.dev' -H 'Access-Control-Request-Method: POST' http://{addr}/api/orders"
            ),
            "CORS preflight answered by the gateway (a wildcard-subdomain origin)",
        ),
        (
            format!(
                "curl -i -H 'content-type: application/json' -d '{{\"item\":\"pen\",\"qty\":0}}' http://{addr}/api/orders"
            ),
            "400 problem+json listing /qty (minimum 1); with qty 2 the order is created",
        ),
        (
            format!("curl -i http://{addr}/old/users/42"),
            "308 to /users/42",
        ),
        (
            format!("curl -i http://{addr}/maintenance"),
            "a fixed 503 answered by the gateway",
        ),
    ]
}

/// Starts the demo, prints the curl lines, and runs until SIGTERM/SIGINT.
pub async fn run(listen: SocketAddr) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let demo = start(listen).await?;
    let addr = demo
        .gateway
        .local_addrs()
        .first()
        .copied()
        .unwrap_or(listen);
    let [users, users2, orders, notifications] = demo.services;
    println!("towergate demo: gateway on http://{addr}");
    println!(
        "  demo services: users {users} and {users2} (balanced), orders {orders}, notifications {notifications}"
    );
    println!("configuration:{}", demo.config);
    println!("try:");
    for (line, what) in curl_lines(addr, &demo.token) {
        println!("  {line}\n      # {what}");
    }
    let admin = match crate::admin::start_from_config(demo.gateway.live(), None).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "demo: no admin server");
            None
        }
    };
    if let Some(a) = &admin {
        println!(
            "  dashboard and admin API: http://{}/  (curl http://{}/admin/routes)",
            a.addr, a.addr
        );
    }
    println!("Ctrl-C stops it.");
    crate::shutdown_signal().await;
    demo.gateway.shutdown().await;
    if let Some(a) = admin {
        a.stop();
    }
    Ok(())
}
