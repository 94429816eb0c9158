//! The towergate router: a Tower service that sends each request to the
//! service of the route it matches, by host, method, path, headers and
//! query.
//!
//! Routes are described with the [`Route`] builder and compiled once, at
//! [`RouterBuilder::build`], into a [`RouteTable`]: a segment trie over the
//! path templates plus a precedence rank per route. Per request, the
//! [`Router`] normalises the path, walks the trie, and either calls the
//! matched route's service (with a [`RouteMatch`](towergate_core::RouteMatch)
//! in the request extensions) or answers itself with an
//! `application/problem+json` 400, 404 or 405.
//!
//! ```
//! use std::convert::Infallible;
//!
//! use http::{Method, Request, Response, StatusCode};
//! use http_body_util::BodyExt;
//! use tower::{ServiceExt, service_fn};
//! use towergate_core::RouteMatch;
//! use towergate_routing::{Route, Router};
//!
//! // Each route's service answers with what the router told it: the matched
//! // route, its `id` parameter, and the path it forwarded.
//! async fn handler(req: Request<String>) -> Result<Response<String>, Infallible> {
//!     let m = req.extensions().get::<RouteMatch>().cloned().unwrap_or_default();
//!     let id = m.param("id").unwrap_or("-").to_owned();
//!     Ok(Response::new(format!("{} {} {}", m.route, id, req.uri().path())))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let router = Router::builder()
//!     .route(
//!         Route::new("user").method(Method::GET).path_template("/users/{id}"),
//!         service_fn(handler),
//!     )
//!     .route(
//!         Route::new("static").path_prefix("/static/").strip_prefix(true),
//!         service_fn(handler),
//!     )
//!     .build()?;
//!
//! let req = Request::get("/users/42").body(String::new())?;
//! let rsp = router.clone().oneshot(req).await?;
//! assert_eq!(rsp.status(), StatusCode::OK);
//! let body = rsp.into_body().collect().await?.to_bytes();
//! assert_eq!(body, "user 42 /users/42");
//!
//! // The path is normalised, then the prefix is stripped.
//! let req = Request::get("/static/css//./site.css").body(String::new())?;
//! let rsp = router.clone().oneshot(req).await?;
//! let body = rsp.into_body().collect().await?.to_bytes();
//! assert_eq!(body, "static - /css/site.css");
//!
//! // Only the method is wrong: 405, with the methods that would do.
//! let req = Request::post("/users/42").body(String::new())?;
//! let rsp = router.oneshot(req).await?;
//! assert_eq!(rsp.status(), StatusCode::METHOD_NOT_ALLOWED);
//! assert_eq!(rsp.headers()["allow"], "GET, HEAD");
//! assert_eq!(rsp.headers()["content-type"], "application/problem+json");
//! # Ok(())
//! # }
//! ```
//!
//! # Matching
//!
//! A route matches a request when all of its matchers hold:
//!
//! - **Host**: from the `Host` header, or the URI authority (HTTP/2
//!   `:authority`), lower-cased, without port or trailing dot. A pattern is
//!   an exact host or `*.example.com` (any subdomain, at any depth, never
//!   `example.com` itself); several patterns mean any of them; none means
//!   any host.
//! - **Method**: a set, none meaning any method. `GET` brings `HEAD`.
//! - **Path**: an exact template (`/users/{id}`, `/files/{*rest}`) or a
//!   prefix (`/users/`, `/tenants/{t}/`), matched on the
//!   [normalised](normalize_path) path. `{name}` matches one non-empty
//!   segment, `{*name}` the rest of the path (zero or more segments). A
//!   prefix matches on segment boundaries: `/users/` matches `/users/` and
//!   below but not `/users`; `/users` matches `/users` and below but never
//!   `/usersx`; `/` matches everything. No path means any path.
//! - **Headers** and **query parameters**: equal to a value, present, or
//!   matching a regex (anchored at both ends). Query names and values are
//!   percent-decoded, `+` being a space.
//!
//! The trie walk collects every route whose path matches, more and less
//! specific ones alike, so that when the most specific route's other
//! matchers fail, a less specific one still answers.
//!
//! When no route matches, the answer is 404 (`no route matches GET /path`).
//! When some routes match everything but the method, it is 405 with an
//! `Allow` header listing the union of their methods.
//!
//! # Precedence
//!
//! When several routes match, the best one wins, comparing in this order:
//!
//! 1. **Priority**: the higher [`Route::priority`] wins (default 0).
//! 2. **Host**: an exact host beats a wildcard host, a longer wildcard
//!    suffix beats a shorter one (`*.eu.example.com` over `*.example.com`),
//!    and any host pattern beats none.
//! 3. **Path**, segment by segment from the left: a static segment beats a
//!    `{param}`, which beats the end of an exact template, which beats a
//!    catch-all `{*rest}` or a prefix ending in `/`, which beats a prefix
//!    without a trailing `/`. So an exact template beats a prefix over the
//!    same segments, and a longer static match beats a shorter one.
//! 4. **Methods**: a route that lists methods beats one that allows any.
//! 5. **Headers, then query**: more header matchers win, then more query
//!    matchers.
//! 6. **Declaration order**: the route added first wins.
//!
//! Each route's rank is computed when the table is built; a request only
//! picks the lowest rank among the routes that match it.
//!
//! # Paths
//!
//! The path is normalised before matching, and the normalised path is the
//! one forwarded, so the router and the upstream never disagree about which
//! resource is asked for: `/public/../admin/x` and `/public/%2e%2e/admin/x`
//! both reach the route of `/admin/`, never that of `/public/`. Paths that
//! upstreams read in different ways (`%2F`, `%5C`, `\`, NUL, broken
//! escapes) are answered with 400. See [`normalize_path`].
//!
//! On a match, [`Route::strip_prefix`] removes the matched prefix and
//! [`Route::rewrite`] builds a new path from the captured parameters; the
//! query string is kept.
//!
//! # With axum
//!
//! A [`Router`] whose services are infallible is an axum service, for
//! example as the fallback of an application's own routes:
//!
//! ```
//! use std::convert::Infallible;
//!
//! use axum::body::Body;
//! use axum::routing::get;
//! use http::{Request, Response};
//! use tower::service_fn;
//! use towergate_routing::{Route, Router};
//!
//! let backend = service_fn(|_req: Request<Body>| async {
//!     Ok::<_, Infallible>(Response::new(Body::from("from the backend")))
//! });
//! let gateway = Router::builder()
//!     .route(Route::new("api").path_prefix("/api/"), backend)
//!     .build()
//!     .unwrap();
//! let app: axum::Router = axum::Router::new()
//!     .route("/health", get(|| async { "ok" }))
//!     .fallback_service(gateway);
//! # let _ = app;
//! ```

pub mod error;
pub mod future;
mod matchers;
mod normalize;
mod percent;
mod rewrite;
mod route;
mod service;
mod table;
mod template;

pub use error::{BuildError, PathError};
pub use normalize::normalize_path;
pub use route::Route;
pub use service::{Router, RouterBuilder};
pub use table::{Outcome, RouteTable};
