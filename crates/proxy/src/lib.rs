//! The forwarding service of towergate: a [`Proxy`] sends each request to
//! one upstream base URL over a shared, pooled [`Client`], and hands back
//! the upstream's response.
//!
//! - **Streaming both ways.** The request body is sent as the caller
//!   produces it, and the response body ([`ResponseBody`]: the upstream's
//!   `hyper::body::Incoming`) is returned as it streams, so nothing is
//!   buffered and backpressure reaches both ends. A response body that
//!   pauses longer than [`ProxyBuilder::body_idle_timeout`] (default
//!   5 min) fails, so a stalled upstream does not hold both connections
//!   for ever; HTTP/2 upstream connections are pinged
//!   ([`ClientBuilder::http2_keep_alive`]).
//! - **Paths.** The request's path and query are appended to the upstream's
//!   base path: `http://svc:8080/api` + `/42?x=1` is `/api/42?x=1`.
//! - **Headers.** Hop-by-hop headers (`Connection` and every header it
//!   names, `Keep-Alive`, `TE`, `Transfer-Encoding`, `Upgrade`,
//!   `Proxy-*`, `HTTP2-Settings`) are removed both ways. `X-Forwarded-For`, `Forwarded`
//!   (RFC 7239), `X-Forwarded-Proto` and `X-Forwarded-Host` are extended
//!   when the peer recorded in [`ClientAddr`](towergate_core::ClientAddr)
//!   is a [trusted proxy](ProxyBuilder::trusted_proxies) and replaced
//!   otherwise, so a client cannot forge them. `Via` is added both ways.
//!   `Host` is the upstream's, the client's, or a fixed one.
//! - **Upgrades.** `Connection: upgrade` requests for a protocol the proxy
//!   tunnels ([`ProxyBuilder::upgrade_protocols`], WebSocket by default;
//!   never `h2c`) go over HTTP/1.1; on a 101 answer naming that protocol
//!   the two connections are joined by a tunnel task (any other 101 is a
//!   502). This needs the request to come from a hyper or axum server.
//! - **Pooling.** Connections are kept per upstream in a pool of our own
//!   over `hyper::client::conn`, found when the proxy is built rather than
//!   looked up per request; see [`Client`].
//! - **Protocols and TLS.** HTTP/1.1 with keep-alive, HTTP/2 by ALPN, h2c
//!   by prior knowledge ([`ClientBuilder::http2_only`]); rustls with the
//!   aws-lc-rs provider, system roots or a given CA, optional client
//!   certificate. An endpoint dialled by address but known by a name gets
//!   that name as SNI through [`Client::for_server_name`].
//! - **Shared by routes.** A proxy built with
//!   [`route_settings(true)`](ProxyBuilder::route_settings) takes a
//!   request's [`RouteSettings`] (timeout, Host) from its extensions, so
//!   routes that differ in them can share one proxy, or one balanced pool.
//! - **Failures** are `Err(BoxError)` holding
//!   [`UpstreamUnavailable`](error::UpstreamUnavailable) (502),
//!   [`UpstreamTimeout`](error::UpstreamTimeout) (504) or
//!   [`RequestBodyFailed`](error::RequestBodyFailed), each logged with
//!   its cause; [`error::to_problem`] turns them into a problem response.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Empty};
//! use tower::ServiceExt;
//! use towergate_proxy::Proxy;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), towergate_core::BoxError> {
//! // An upstream that serves /api/hello.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let app = axum::Router::new().route("/api/hello", axum::routing::get(|| async { "hi" }));
//! tokio::spawn(async move { axum::serve(listener, app).await });
//!
//! // Requests for /hello go to http://127.0.0.1:PORT/api/hello.
//! let proxy = Proxy::builder(format!("http://{addr}/api")).build()?;
//! let req = http::Request::get("/hello").body(Empty::<Bytes>::new())?;
//! let rsp = proxy.clone().oneshot(req).await?;
//! assert_eq!(rsp.status(), 200);
//! assert_eq!(rsp.headers()["via"], "1.1 towergate");
//! assert_eq!(rsp.into_body().collect().await?.to_bytes(), "hi");
//!
//! // Nothing listens on port 9 of localhost: a typed error, a 502 problem.
//! let down = Proxy::builder("http://127.0.0.1:9").build()?;
//! let err = down.oneshot(http::Request::new(Empty::<Bytes>::new())).await.unwrap_err();
//! assert_eq!(towergate_proxy::error::to_problem(&*err).status(), 502);
//! # Ok(())
//! # }
//! ```
//!
//! In an axum app, answer errors with a problem document:
//!
//! ```
//! use axum::error_handling::HandleError;
//! use towergate_proxy::{Proxy, error::to_problem};
//!
//! # fn main() -> Result<(), towergate_proxy::error::BuildError> {
//! let proxy = Proxy::builder("http://127.0.0.1:7001").build()?;
//! let app: axum::Router = axum::Router::new().nest_service(
//!     "/users",
//!     HandleError::new(proxy, |err: towergate_core::BoxError| async move {
//!         to_problem(&*err).into_full_response()
//!     }),
//! );
//! # drop(app);
//! # Ok(())
//! # }
//! ```

mod body;
mod client;
pub mod error;
pub mod future;
mod headers;
mod pool;
mod service;
mod upgrade;

pub use body::{IdleTimeout, ResponseBody};
pub use client::{Client, ClientBuilder, WeakClient};
pub use error::BuildError;
pub use headers::{is_token, strip_connection_options};
pub use service::{Proxy, ProxyBuilder, RouteSettings};
