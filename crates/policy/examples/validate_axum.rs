//! An axum app that validates `POST /orders` against a JSON Schema with
//! towergate's `ValidateLayer`, and nothing else of towergate.
//!
//! ```text
//! cargo run -p towergate-policy --example validate_axum
//! curl -i localhost:3000/orders -H 'content-type: application/json' \
//!      -d '{"customer": "c-1", "items": [{"sku": "A-1", "qty": 0}]}'
//! # 400 application/problem+json, errors: [{"path": "/items/0/qty", ...}]
//! ```

use axum::Router;
use axum::routing::post;
use http::Method;
use serde_json::json;
use towergate_policy::ValidateLayer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let validate = ValidateLayer::builder()
        .methods([Method::POST])
        .json_schema(json!({
            "type": "object",
            "required": ["customer", "items"],
            "properties": {
                "customer": {"type": "string", "minLength": 1},
                "items": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["sku", "qty"],
                        "properties": {
                            "sku": {"type": "string"},
                            "qty": {"type": "integer", "minimum": 1}
                        }
                    }
                }
            }
        }))
        .max_body_bytes(64 * 1024)
        .build()?;

    // The handler only ever sees bodies that passed the schema.
    let app = Router::new().route(
        "/orders",
        post(
            |axum::Json(order): axum::Json<serde_json::Value>| async move {
                axum::Json(json!({"accepted": order["items"].as_array().map_or(0, Vec::len)}))
            },
        )
        .layer(validate),
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
