#![allow(clippy::unwrap_used)]
//! Header transforms over real sockets, seen at an echo upstream.

mod common;

use axum::Router;
use axum::response::IntoResponse;
use http::{HeaderName, header};
use tower::ServiceBuilder;
use tower::util::MapRequestLayer;
use towergate_policy::{HeaderTransformLayer, Op, Template};

fn h(name: &'static str) -> HeaderName {
    HeaderName::from_static(name)
}

fn t(s: &str) -> Template {
    Template::parse(s).unwrap()
}

#[tokio::test]
async fn request_transforms_reach_the_upstream() {
    let (upstream, _) = common::counting_echo().await;
    let layer = HeaderTransformLayer::builder()
        .request(Op::Set(
            h("x-user"),
            t("user={identity.sub} consumer={identity.consumer}"),
        ))
        .request(Op::Set(h("x-order"), t("{route}/{params.id}")))
        .request(Op::Set(h("x-request-id"), t("{request_id}")))
        .request(Op::Set(h("x-client-ip"), t("{client.ip}")))
        .request(Op::Add(h("x-tag"), t("added")))
        .request(Op::Set(h("x-page"), t("{query.page}")))
        .request(Op::Set(h("x-missing"), t("{query.nope}")))
        .request(Op::Remove(header::COOKIE))
        .request(Op::Rename(h("x-old"), h("x-new")))
        .build()
        .unwrap();
    let stack = ServiceBuilder::new()
        .layer(MapRequestLayer::new(common::with_context))
        .layer(layer)
        .service(common::proxy(upstream.url()));
    let gw = common::serve(Router::new().fallback_service(stack)).await;

    let rsp = common::client()
        .get(gw.url("/orders/42?page=3"))
        .header("x-tag", "original")
        .header("cookie", "secret=1")
        .header("x-old", "moved")
        .header("x-user", "spoofed")
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    let echo: serde_json::Value = rsp.json().await.unwrap();
    let hd = &echo["headers"];
    assert_eq!(
        hd["x-user"],
        serde_json::json!(["user=alice consumer=acme"])
    );
    assert_eq!(hd["x-order"][0], "orders/42");
    assert_eq!(hd["x-request-id"][0], "req-123");
    assert_eq!(hd["x-client-ip"][0], "127.0.0.1");
    assert_eq!(hd["x-tag"], serde_json::json!(["original", "added"]));
    assert_eq!(hd["x-page"][0], "3");
    assert!(
        hd.get("x-missing").is_none(),
        "a missing variable skips the op"
    );
    assert!(hd.get("cookie").is_none());
    assert!(hd.get("x-old").is_none());
    assert_eq!(hd["x-new"][0], "moved");
}

#[tokio::test]
async fn response_transforms() {
    let app = Router::new().fallback(|| async {
        (
            [
                (header::SERVER, "nginx/1.25"),
                (h("x-powered-by"), "PHP/8"),
                (h("x-upstream"), "kept"),
            ],
            "ok",
        )
            .into_response()
    });
    let upstream = towergate_test::spawn_upstream(app).await;
    let layer = HeaderTransformLayer::builder()
        .strip_server_headers()
        .response(Op::Set(
            h("x-served-for"),
            t("{identity.sub} via {method} {path}"),
        ))
        .response(Op::Set(h("x-echo"), t("{header.x-in}")))
        .response(Op::Rename(h("x-upstream"), h("x-origin")))
        .build()
        .unwrap();
    let stack = ServiceBuilder::new()
        .layer(MapRequestLayer::new(common::with_context))
        .layer(layer)
        .service(common::proxy(upstream.url()));
    let gw = common::serve(Router::new().fallback_service(stack)).await;

    let rsp = common::client()
        .get(gw.url("/x"))
        .header("x-in", "from the request")
        .send()
        .await
        .unwrap();
    let hd = rsp.headers();
    assert!(!hd.contains_key("server"));
    assert!(!hd.contains_key("x-powered-by"));
    assert_eq!(hd["x-served-for"], "alice via GET /x");
    assert_eq!(hd["x-echo"], "from the request");
    assert_eq!(hd["x-origin"], "kept");
    assert!(!hd.contains_key("x-upstream"));
    assert_eq!(rsp.text().await.unwrap(), "ok");
}
