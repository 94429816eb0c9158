//! Two axum handlers protected by a `JwtLayer`, and who the caller is in
//! each of them.
//!
//! The example starts the app on a free loopback port, calls it with a
//! valid token, an invalid one and none, prints what came back, and exits:
//!
//! ```text
//! cargo run -p towergate-auth --example axum
//! ```

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use jsonwebtoken::{EncodingKey, Header, encode, get_current_timestamp};
use serde_json::json;
use towergate_auth::{Algorithm, AuthIdentity, JwtLayer, Rule};

/// Shared with the (pretend) identity provider that signs the tokens.
const SECRET: &[u8] = b"example secret, at least 32 bytes long";

async fn profile(AuthIdentity(id): AuthIdentity) -> String {
    format!(
        "profile of {} (scopes: {})",
        id.subject.unwrap_or_default(),
        id.scopes.join(" ")
    )
}

async fn orders(AuthIdentity(id): AuthIdentity) -> String {
    format!("orders of {}", id.subject.unwrap_or_default())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let jwt = JwtLayer::builder()
        .secret(SECRET)
        .algorithms([Algorithm::HS256])
        .issuer("https://idp.example")
        .audience("shop")
        .leeway(Duration::from_secs(30))
        .build()?;
    // /orders also needs a scope: a valid token without it gets a 403.
    let app = Router::new()
        .route("/profile", get(profile))
        .route(
            "/orders",
            get(orders).route_layer(
                JwtLayer::builder()
                    .secret(SECRET)
                    .require(Rule::scopes(["orders:read"]))
                    .build()?,
            ),
        )
        .layer(jwt);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    println!("listening on http://{addr}");

    let claims = json!({
        "sub": "alice",
        "iss": "https://idp.example",
        "aud": "shop",
        "scope": "profile",
        "exp": get_current_timestamp() + 300,
    });
    let valid = encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )?;
    let forged = encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(b"not the secret, but just as long!!"),
    )?;

    let client = reqwest::Client::new();
    for (path, token, what) in [
        ("/profile", Some(&valid), "valid token"),
        ("/orders", Some(&valid), "valid token, missing scope"),
        ("/profile", Some(&forged), "forged token"),
        ("/profile", None, "no token"),
    ] {
        let mut req = client.get(format!("http://{addr}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let rsp = req.send().await?;
        let status = rsp.status();
        let challenge = rsp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = rsp.text().await?;
        println!("GET {path} with {what}: {status}");
        if let Some(c) = challenge {
            println!("  WWW-Authenticate: {c}");
        }
        println!("  {body}");
    }

    server.abort();
    Ok(())
}
