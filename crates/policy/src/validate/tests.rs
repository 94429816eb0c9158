use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tower::{ServiceExt, service_fn};

use super::*;

/// A streamed body of several frames, of unknown length (as a chunked
/// request is).
struct Chunks(VecDeque<&'static str>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(
            self.0
                .pop_front()
                .map(|s| Ok(Frame::data(Bytes::from_static(s.as_bytes())))),
        )
    }
}

async fn call<B>(layer: &ValidateLayer, req: Request<B>) -> (StatusCode, Value)
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<towergate_core::BoxError>,
{
    let svc = layer.layer(service_fn(|req: Request<ValidatedBody<B>>| async move {
        let cl = req
            .headers()
            .get("content-length")
            .map(|v| v.to_str().unwrap().to_owned());
        let te = req.headers().contains_key("transfer-encoding");
        let buffered = matches!(req.body(), ValidatedBody::Buffered { .. });
        let bytes = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => Bytes::new(),
        };
        let v = json!({"cl": cl, "te": te, "buffered": buffered, "body": String::from_utf8_lossy(&bytes)});
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(v.to_string()))))
    }));
    let rsp = svc.oneshot(req).await.unwrap();
    let status = rsp.status();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

fn schema_layer() -> ValidateLayer {
    ValidateLayer::builder()
        .json_schema(json!({"type": "object", "required": ["a"]}))
        .max_body_bytes(16)
        .build()
        .unwrap()
}

#[tokio::test]
async fn chunked_body_is_buffered_with_a_length() {
    let req = Request::post("/")
        .header("content-type", "application/json")
        .header("transfer-encoding", "chunked")
        .body(Chunks(VecDeque::from(["{\"a\"", ": 1", "}"])))
        .unwrap();
    let (status, v) = call(&schema_layer(), req).await;
    assert_eq!(status, 200);
    assert_eq!(
        v,
        json!({"cl": "8", "te": false, "buffered": true, "body": "{\"a\": 1}"})
    );
}

#[tokio::test]
async fn streamed_body_over_the_limit() {
    let req = Request::post("/")
        .header("content-type", "application/json")
        .body(Chunks(VecDeque::from([
            "{\"a\": \"0123",
            "456789abcdef\"}",
        ])))
        .unwrap();
    let (status, v) = call(&schema_layer(), req).await;
    assert_eq!(status, 413);
    assert_eq!(v["limit"], 16);
}

#[tokio::test]
async fn without_a_schema_the_body_streams_untouched() {
    let layer = ValidateLayer::builder()
        .content_types(["text/*"])
        .build()
        .unwrap();
    let req = Request::post("/")
        .header("content-type", "text/plain")
        .body(Chunks(VecDeque::from(["not", " json"])))
        .unwrap();
    let (status, v) = call(&layer, req).await;
    assert_eq!(status, 200);
    assert_eq!(
        v,
        json!({"cl": null, "te": false, "buffered": false, "body": "not json"})
    );
}

#[tokio::test]
async fn schema_skips_bodiless_get_but_not_post() {
    let get = Request::get("/").body(Full::new(Bytes::new())).unwrap();
    let (status, v) = call(&schema_layer(), get).await;
    assert_eq!(
        (status, v["buffered"].clone()),
        (StatusCode::OK, json!(false))
    );
    let post = Request::post("/")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, v) = call(&schema_layer(), post).await;
    assert_eq!(status, 400);
    assert_eq!(v["title"], "Invalid JSON body");
}

#[tokio::test]
async fn problems_carry_the_request_id() {
    let mut req = Request::delete("/").body(Full::new(Bytes::new())).unwrap();
    req.extensions_mut()
        .insert(towergate_core::RequestId("req-9".into()));
    let layer = ValidateLayer::builder()
        .methods([Method::GET])
        .build()
        .unwrap();
    let (status, v) = call(&layer, req).await;
    assert_eq!(status, 405);
    assert_eq!(v["instance"], "req-9");
}

#[test]
fn schema_errors_sorted_and_capped() {
    let schema = jsonschema::validator_for(&json!({
        "type": "array",
        "items": {"type": "integer"}
    }))
    .unwrap();
    let body: Vec<Value> = (0..120).map(|i| json!(format!("s{i}"))).collect();
    let bytes = serde_json::to_vec(&body).unwrap();
    let p = service::check_json(&bytes, &schema).unwrap_err().to_json();
    let errors = p["errors"].as_array().unwrap();
    assert_eq!(errors.len(), MAX_LISTED_ERRORS);
    assert_eq!(p["detail"], "120 schema violation(s)");
    let paths: Vec<&str> = errors.iter().map(|e| e["path"].as_str().unwrap()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted);
    assert_eq!(paths[0], "/0");
}

/// A large body gets its first error only: listing them all would build
/// one error per bad node first (here 50,000, a hundred times the body).
#[test]
fn a_large_body_reports_its_first_schema_error() {
    let schema = jsonschema::validator_for(&json!({
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"type": "object"}}}
    }))
    .unwrap();
    let zeros = vec!["0"; 50_000].join(",");
    let bytes = format!("{{\"items\":[{zeros}]}}").into_bytes();
    assert!(bytes.len() > 16 * 1024);
    let p = service::check_json(&bytes, &schema).unwrap_err().to_json();
    let errors = p["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["path"], "/items/0");
    assert!(p["detail"].as_str().unwrap().contains("first"), "{p}");
    // And a valid one passes.
    let objects = vec!["{}"; 10_000].join(",");
    let ok = format!("{{\"items\":[{objects}]}}").into_bytes();
    assert!(service::check_json(&ok, &schema).is_ok());
}

#[test]
fn invalid_json_names_line_and_column() {
    let schema = jsonschema::validator_for(&json!({})).unwrap();
    let p = service::check_json(b"{\n  \"a\": }", &schema)
        .unwrap_err()
        .to_json();
    assert_eq!(p["status"], 400);
    assert_eq!(p["line"], 2);
    assert_eq!(p["column"], 8);
    assert!(p["detail"].as_str().unwrap().contains("line 2 column 8"));
}

#[test]
fn build_errors() {
    let e = ValidateLayer::builder()
        .json_schema(json!({"type": "no-such-type"}))
        .build()
        .unwrap_err();
    assert!(matches!(e, BuildError::InvalidSchema { .. }), "{e}");
    let e = ValidateLayer::builder()
        .json_schema(json!({"$ref": "https://example.com/schema.json"}))
        .build()
        .unwrap_err();
    assert!(
        e.to_string().contains("https://example.com/schema.json"),
        "{e}"
    );
    let e = ValidateLayer::builder()
        .content_types(["json"])
        .build()
        .unwrap_err();
    assert_eq!(
        e,
        BuildError::InvalidMediaType {
            value: "json".into()
        }
    );
    let e = ValidateLayer::builder()
        .methods(Vec::new())
        .build()
        .unwrap_err();
    assert_eq!(e, BuildError::NoMethods);
    // local $refs work
    let _ = ValidateLayer::builder()
        .json_schema(json!({
            "$defs": {"qty": {"type": "integer"}},
            "properties": {"qty": {"$ref": "#/$defs/qty"}}
        }))
        .build()
        .unwrap();
}

/// A validated parameter or header is checked once and must be sent once:
/// the upstream may read another copy than the one checked (the last, as
/// PHP does, or all of them).
#[tokio::test]
async fn repeated_validated_values_are_refused() {
    let layer = ValidateLayer::builder()
        .require_query("tenant", Some(regex::Regex::new("[a-z]+").unwrap()))
        .require_header(
            http::HeaderName::from_static("x-api-version"),
            Some(regex::Regex::new("[0-9]+").unwrap()),
        )
        .content_types(["application/json"])
        .build()
        .unwrap();
    let get = |uri: &str, headers: &[(&str, &str)]| {
        let mut b = Request::get(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Full::new(Bytes::new())).unwrap()
    };
    let (status, _) = call(&layer, get("/?tenant=acme", &[("x-api-version", "2")])).await;
    assert_eq!(status, 200);
    let (status, v) = call(
        &layer,
        get("/?tenant=acme&tenant=..%2Fx", &[("x-api-version", "2")]),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(v["errors"][0]["name"], "tenant");
    assert_eq!(v["errors"][0]["message"], "must appear once");
    let (status, v) = call(
        &layer,
        get(
            "/?tenant=acme",
            &[("x-api-version", "2"), ("x-api-version", "x")],
        ),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(v["errors"][0]["name"], "x-api-version");
    // Two content types on a body: 415.
    let req = Request::post("/?tenant=acme")
        .header("x-api-version", "2")
        .header("content-type", "application/json")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let (status, v) = call(&layer, req).await;
    assert_eq!(status, 415);
    assert!(
        v["detail"].as_str().unwrap().contains("one Content-Type"),
        "{v}"
    );
}

/// A body that sends its first bytes and then nothing more, ever.
struct Stalls(Option<&'static str>);

impl Body for Stalls {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.0.take() {
            Some(s) => Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(s.as_bytes()))))),
            None => Poll::Pending,
        }
    }
}

#[tokio::test]
async fn a_body_that_stops_coming_is_answered_408_at_the_body_timeout() {
    let layer = ValidateLayer::builder()
        .json_schema(json!({"type": "object"}))
        .body_timeout(std::time::Duration::from_millis(100))
        .build()
        .unwrap();
    let req = Request::post("/")
        .header("content-type", "application/json")
        .header("content-length", "100")
        .body(Stalls(Some("{\"a\"")))
        .unwrap();
    let (status, v) = tokio::time::timeout(std::time::Duration::from_secs(10), call(&layer, req))
        .await
        .expect("the stalled body was given up");
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    assert!(v["detail"].as_str().unwrap().contains("100 ms"), "{v}");
    // A body that comes in time passes as before.
    let req = Request::post("/")
        .header("content-type", "application/json")
        .body(Chunks(VecDeque::from(["{\"a\"", ": 1}"])))
        .unwrap();
    assert_eq!(call(&layer, req).await.0, StatusCode::OK);
}
