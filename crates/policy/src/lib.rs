//! Everyday per-route policies for towergate, as Tower layers and services.
//!
//! Most of it is tower-http, configured and checked; this crate adds what
//! tower-http lacks.
//!
//! | policy | type | built on |
//! |---|---|---|
//! | CORS, with wildcard subdomain origins | [`CorsPolicy`] → `CorsLayer` | tower-http `cors` |
//! | header transforms on request and response, from [`Template`]s | [`HeaderTransformLayer`] | — |
//! | method, content-type, query, header and JSON Schema validation | [`ValidateLayer`] | `jsonschema`, `http_body_util::Limited` |
//! | response compression (gzip, br, zstd) | [`CompressionPolicy`] → `CompressionLayer` | tower-http `compression` |
//! | request decompression | [`request_decompression`] | tower-http `decompression` |
//! | HTTP→HTTPS and path redirects, fixed answers | [`Redirect`], [`FixedResponse`] | — |
//!
//! Builders check everything they are given and return a [`BuildError`]
//! naming the offending value instead of panicking (tower-http's
//! `CorsLayer` would panic on credentials with a wildcard). Refusals are
//! RFC 9457 problem documents ([`towergate_core::Problem`]). Templates read
//! what earlier gateway layers put in the request extensions:
//! [`RouteMatch`](towergate_core::RouteMatch),
//! [`Identity`](towergate_core::Identity),
//! [`ClientAddr`](towergate_core::ClientAddr) and
//! [`RequestId`](towergate_core::RequestId).
//!
//! # CORS
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Method, Request, Response, StatusCode};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use towergate_policy::{CorsPolicy, Origin};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cors = CorsPolicy::builder()
//!     .allow_origin(Origin::parse("https://*.example.com")?)
//!     .allow_methods([Method::GET, Method::PUT])
//!     .build()?;
//! let svc = ServiceBuilder::new()
//!     .layer(cors)
//!     .service(service_fn(|_req: Request<String>| async {
//!         Ok::<_, Infallible>(Response::new(String::from("from upstream")))
//!     }));
//!
//! let preflight = Request::options("/items")
//!     .header("origin", "https://app.example.com")
//!     .header("access-control-request-method", "PUT")
//!     .body(String::new())?;
//! let rsp = svc.clone().oneshot(preflight).await?;
//! assert_eq!(rsp.status(), StatusCode::OK);
//! assert_eq!(rsp.headers()["access-control-allow-origin"], "https://app.example.com");
//! assert!(rsp.body().is_empty(), "answered without the upstream");
//!
//! let evil = Request::get("/items").header("origin", "https://evil-example.com").body(String::new())?;
//! let rsp = svc.oneshot(evil).await?;
//! assert!(!rsp.headers().contains_key("access-control-allow-origin"));
//! # Ok(())
//! # }
//! ```
//!
//! # Header transforms
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use towergate_core::Identity;
//! use towergate_policy::{HeaderTransformLayer, Op, Template};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let layer = HeaderTransformLayer::builder()
//!     .request(Op::Set("x-user".parse()?, Template::parse("user={identity.sub}")?))
//!     .request(Op::Remove("cookie".parse()?))
//!     .strip_server_headers()
//!     .build()?;
//! let svc = ServiceBuilder::new().layer(layer).service(service_fn(|req: Request<()>| async move {
//!     assert_eq!(req.headers()["x-user"], "user=alice");
//!     assert!(!req.headers().contains_key("cookie"));
//!     let rsp = Response::builder().header("x-powered-by", "php").body(()).unwrap();
//!     Ok::<_, Infallible>(rsp)
//! }));
//! let mut req = Request::get("/").header("cookie", "a=b").body(())?;
//! req.extensions_mut().insert(Identity { subject: Some("alice".into()), ..Default::default() });
//! let rsp = svc.oneshot(req).await?;
//! assert!(!rsp.headers().contains_key("x-powered-by"));
//! # Ok(())
//! # }
//! ```
//!
//! # Validation
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::BodyExt;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use towergate_policy::ValidateLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let layer = ValidateLayer::builder()
//!     .json_schema(serde_json::json!({
//!         "type": "object",
//!         "properties": {"items": {"type": "array", "items": {
//!             "type": "object", "required": ["qty"],
//!             "properties": {"qty": {"type": "integer"}}
//!         }}}
//!     }))
//!     .build()?;
//! let svc = ServiceBuilder::new().layer(layer).service(service_fn(|_req| async {
//!     Ok::<_, Infallible>(Response::new(String::new()))
//! }));
//! let req = Request::post("/orders")
//!     .header("content-type", "application/json")
//!     .body(r#"{"items": [{"qty": "two"}]}"#.to_owned())?;
//! let rsp = svc.oneshot(req).await?;
//! assert_eq!(rsp.status(), StatusCode::BAD_REQUEST);
//! let body = rsp.into_body().collect().await?.to_bytes();
//! let problem: serde_json::Value = serde_json::from_slice(&body)?;
//! assert_eq!(problem["errors"][0]["path"], "/items/0/qty");
//! # Ok(())
//! # }
//! ```
//!
//! # Compression
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use towergate_policy::CompressionPolicy;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let svc = ServiceBuilder::new()
//!     .layer(CompressionPolicy::new().layer())
//!     .service(service_fn(|req: Request<String>| async move {
//!         let ct = if req.uri().path() == "/logo.png" { "image/png" } else { "text/plain" };
//!         let rsp = Response::builder().header("content-type", ct).body("x".repeat(4096)).unwrap();
//!         Ok::<_, Infallible>(rsp)
//!     }));
//! let get = |path| Request::get(path).header("accept-encoding", "br, zstd").body(String::new());
//! let rsp = svc.clone().oneshot(get("/big.txt")?).await?;
//! assert_eq!(rsp.headers()["content-encoding"], "zstd");
//! let rsp = svc.oneshot(get("/logo.png")?).await?;
//! assert!(!rsp.headers().contains_key("content-encoding"));
//! # Ok(())
//! # }
//! ```
//!
//! # Redirects and fixed responses
//!
//! ```
//! use http::{HeaderValue, Request, StatusCode};
//! use tower::ServiceExt;
//! use towergate_policy::{FixedResponse, Redirect};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let req = Request::get("/login?next=%2F").header("host", "example.com").body(())?;
//! let rsp = Redirect::https(None).status(StatusCode::PERMANENT_REDIRECT)?.oneshot(req).await?;
//! assert_eq!(rsp.status(), StatusCode::PERMANENT_REDIRECT);
//! assert_eq!(rsp.headers()["location"], "https://example.com/login?next=%2F");
//!
//! let teapot = FixedResponse::new(StatusCode::IM_A_TEAPOT)
//!     .body("short and stout", HeaderValue::from_static("text/plain"));
//! let rsp = teapot.oneshot(Request::get("/").body(())?).await?;
//! assert_eq!(rsp.status(), 418);
//! # Ok(())
//! # }
//! ```

pub mod compression;
pub mod cors;
mod error;
pub mod media_type;
pub mod redirect;
mod template;
pub mod transform;
pub mod validate;

pub use compression::{CompressPredicate, CompressionPolicy, request_decompression};
pub use cors::{CorsPolicy, Origin};
pub use error::BuildError;
pub use redirect::{FixedResponse, Redirect};
pub use template::Template;
pub use transform::{HeaderTransform, HeaderTransformBuilder, HeaderTransformLayer, Op};
pub use validate::{Validate, ValidateLayer, ValidateLayerBuilder, ValidatedBody};
