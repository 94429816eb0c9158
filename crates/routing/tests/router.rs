//! The router as a plain Tower service: params, rewrites, problem answers,
//! normalisation and readiness.

mod support;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use http::{Method, Request, Response, StatusCode};
use serde_json::json;
use tower::{Service, ServiceExt, service_fn};
use towergate_core::{RequestId, RouteMatch};
use towergate_routing::error::BuildErrorKind;
use towergate_routing::{Route, Router};
use towergate_test::assert_problem;

use support::{Echo, json, to_axum};

fn router(routes: impl IntoIterator<Item = Route>) -> Router<Echo> {
    routes
        .into_iter()
        .fold(Router::builder(), |b, r| {
            let echo = Echo::named(r.name());
            b.route(r, echo)
        })
        .build()
        .expect("valid routes")
}

async fn send(
    router: &Router<Echo>,
    req: Request<String>,
) -> Response<towergate_core::body::ResponseBody<String>> {
    router.clone().oneshot(req).await.expect("infallible")
}

fn req(method: Method, uri: &str) -> Request<String> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(String::new())
        .expect("valid request")
}

#[tokio::test]
async fn params_are_captured_into_route_match() {
    let r = router([
        Route::new("user").path_template("/users/{id}"),
        Route::new("files").path_template("/files/{*rest}"),
    ]);
    let v = json(send(&r, req(Method::GET, "/users/caf%C3%A9?x=1")).await).await;
    assert_eq!(v["route"], "user");
    assert_eq!(v["params"], json!({"id": "café"}));
    assert_eq!(
        v["path"], "/users/caf%C3%A9",
        "the path is forwarded still encoded"
    );
    assert_eq!(v["query"], "x=1");

    let v = json(send(&r, req(Method::GET, "/files/a/b%20c.txt")).await).await;
    assert_eq!(v["route"], "files");
    assert_eq!(v["params"], json!({"rest": "a/b c.txt"}));
}

#[tokio::test]
async fn rewrites_and_strip_prefix_keep_the_query() {
    let r = router([
        Route::new("v2")
            .path_template("/users/{id}")
            .rewrite("/v2/users/{id}"),
        Route::new("files")
            .path_template("/files/{*rest}")
            .rewrite("/static/{rest}"),
        Route::new("tenant")
            .path_prefix("/tenants/{t}/")
            .strip_prefix(true),
        Route::new("api").path_prefix("/api/").strip_prefix(true),
    ]);
    let cases = [
        ("/users/42?full=1", "v2", "/v2/users/42", Some("full=1")),
        ("/files/css/site.css", "files", "/static/css/site.css", None),
        (
            "/tenants/acme/orders/7?x=y",
            "tenant",
            "/orders/7",
            Some("x=y"),
        ),
        ("/tenants/acme/", "tenant", "/", None),
        ("/api/users/42", "api", "/users/42", None),
        ("/api/", "api", "/", None),
    ];
    for (uri, route, path, query) in cases {
        let v = json(send(&r, req(Method::GET, uri)).await).await;
        assert_eq!(v["route"], route, "{uri}");
        assert_eq!(v["path"], path, "{uri}");
        assert_eq!(v["query"], json!(query), "{uri}");
    }
    let v = json(send(&r, req(Method::GET, "/tenants/acme/x")).await).await;
    assert_eq!(v["params"], json!({"t": "acme"}));
}

/// Layers behind the router that judge the client's path (forward auth)
/// get it, normalised, when a route changed what the upstream is sent.
#[tokio::test]
async fn the_routed_path_is_kept_when_a_route_changes_it() {
    let r = router([
        Route::new("admin")
            .path_prefix("/admin/")
            .strip_prefix(true),
        Route::new("v2")
            .path_template("/users/{id}")
            .rewrite("/v2/users/{id}"),
        Route::new("plain").path_prefix("/plain/"),
    ]);
    for (uri, path, routed) in [
        ("/admin/users?x=1", "/users", json!("/admin/users?x=1")),
        ("/admin//a/../users", "/users", json!("/admin/users")),
        ("/users/42", "/v2/users/42", json!("/users/42")),
        ("/plain/./x?y", "/plain/x", json!(null)),
    ] {
        let v = json(send(&r, req(Method::GET, uri)).await).await;
        assert_eq!(v["path"], path, "{uri}");
        assert_eq!(v["routed"], routed, "{uri}");
    }
}

#[tokio::test]
async fn not_found_is_problem_json() {
    let r = router([Route::new("user").path_template("/users/{id}")]);
    let rsp = send(&r, req(Method::GET, "/nope//x/")).await;
    let v = assert_problem(to_axum(rsp), 404).await;
    assert_eq!(v["title"], "Not Found");
    assert_eq!(v["detail"], "no route matches GET /nope/x/");
}

#[tokio::test]
async fn connect_is_refused_whatever_the_routes() {
    let r = router([Route::new("all").path_prefix("/")]);
    let mut rq = req(Method::CONNECT, "/");
    *rq.uri_mut() = "internal.example:443".parse().unwrap();
    let rsp = send(&r, rq).await;
    let v = assert_problem(to_axum(rsp), 501).await;
    assert_eq!(v["title"], "Not Implemented");
}

/// `GET up.example:80` has no path: read as `/`, it would take a root
/// route with its rewrite skipped, so it is refused whatever the routes.
#[tokio::test]
async fn authority_form_is_for_connect_only() {
    let r = router([Route::new("all").path_prefix("/").rewrite("/x/")]);
    for method in [Method::GET, Method::POST, Method::OPTIONS] {
        let mut rq = req(method.clone(), "/");
        *rq.uri_mut() = "up.example:80".parse().unwrap();
        let v = assert_problem(to_axum(send(&r, rq).await), 400).await;
        assert!(
            v["detail"].as_str().unwrap().contains("authority-form"),
            "{method}: {v}"
        );
    }
    let v = json(send(&r, req(Method::GET, "/a")).await).await;
    assert_eq!(v["path"], "/x/a");
}

/// The host in the target (HTTP/2 `:authority`, absolute form) is held to
/// the rules of `Host`: a list there would match `*.example` routes while
/// the upstream reads its first name.
#[tokio::test]
async fn a_bad_host_in_the_target_is_refused() {
    let r = router([Route::new("wild").host("*.example").path_prefix("/")]);
    let mut h2 = req(Method::GET, "https://a.example,evil.example/x");
    *h2.version_mut() = http::Version::HTTP_2;
    let mut h1 = req(Method::GET, "http://evil.example,a.example/x");
    h1.headers_mut()
        .insert("host", "a.example".parse().unwrap());
    for rq in [h2, h1] {
        let uri = rq.uri().clone();
        let v = assert_problem(to_axum(send(&r, rq).await), 400).await;
        assert!(
            v["detail"].as_str().unwrap().contains("authority"),
            "{uri}: {v}"
        );
    }
    let mut ok = req(Method::GET, "https://b.example/x");
    *ok.version_mut() = http::Version::HTTP_2;
    assert_eq!(json(send(&r, ok).await).await["route"], "wild");
}

#[tokio::test]
async fn method_not_allowed_lists_allow() {
    let r = router([
        Route::new("read")
            .method(Method::GET)
            .path_template("/items/{id}"),
        Route::new("write")
            .method(Method::PUT)
            .method(Method::DELETE)
            .path_template("/items/{id}"),
    ]);
    let rsp = send(&r, req(Method::POST, "/items/1")).await;
    assert_eq!(rsp.headers()["allow"], "DELETE, GET, HEAD, PUT");
    let v = assert_problem(to_axum(rsp), 405).await;
    assert_eq!(v["title"], "Method Not Allowed");
    assert_eq!(v["detail"], "method POST is not allowed on /items/1");
}

#[tokio::test]
async fn head_is_allowed_by_get() {
    let r = router([Route::new("read").method(Method::GET).path_exact("/x")]);
    let rsp = send(&r, req(Method::HEAD, "/x")).await;
    assert_eq!(rsp.status(), StatusCode::OK);
    let v = json(rsp).await;
    assert_eq!(v["route"], "read");
    assert_eq!(v["method"], "HEAD");
}

#[tokio::test]
async fn problems_carry_the_request_id() {
    let r = router([]);
    let mut request = req(Method::GET, "/");
    request
        .extensions_mut()
        .insert(RequestId(Arc::from("req-7")));
    let v = assert_problem(to_axum(send(&r, request).await), 404).await;
    assert_eq!(v["instance"], "req-7");
}

/// `/admin/` is guarded (say, by an auth layer on its service); `/public/`
/// is not. No spelling of a traversal may reach the admin resources through
/// the public route, and the admin service must see the path it is guarding.
#[tokio::test]
async fn traversal_cannot_cross_routes() {
    let r = router([
        Route::new("public").path_prefix("/public/"),
        Route::new("admin").path_prefix("/admin/"),
    ]);
    for uri in [
        "/public/../admin/x",
        "/public/%2e%2e/admin/x",
        "/public/%2E%2E/admin/x",
        "/public/.%2e/admin/x",
        "/public/./../admin/x",
        "/public//..//admin/x",
        "/%2e%2e/admin/x",
        "/public/a/../../admin/x",
        "/../../admin/x",
    ] {
        let rsp = send(&r, req(Method::GET, uri)).await;
        let v = json(rsp).await;
        assert_eq!(v["service"], "admin", "{uri}");
        assert_eq!(
            v["path"], "/admin/x",
            "{uri}: upstream sees the normalised path"
        );
    }
    let mut refused = 0;
    for (uri, why) in [
        ("/public/..%2fadmin/x", "encoded slash"),
        ("/public/..%2Fadmin/x", "encoded slash"),
        ("/public/..%5cadmin/x", "encoded backslash"),
        ("/public/..\\admin/x", "backslash"),
        ("/public/x%00", "NUL"),
        ("/public/%zz", "percent-encoding"),
    ] {
        let Ok(request) = Request::get(uri).body(String::new()) else {
            // `http` itself refuses some of these; that is fine too.
            continue;
        };
        let v = assert_problem(to_axum(send(&r, request).await), 400).await;
        let detail = v["detail"].as_str().unwrap();
        assert!(detail.contains(why), "{uri}: {detail}");
        refused += 1;
    }
    // Only a raw backslash and a raw NUL can be refused by `http` first.
    assert!(refused >= 4, "{refused}");
    // The public route still works, with the normalised path.
    let v = json(send(&r, req(Method::GET, "/public/a/./b//c")).await).await;
    assert_eq!(v["service"], "public");
    assert_eq!(v["path"], "/public/a/b/c");
}

#[tokio::test]
async fn host_from_header_or_authority() {
    let r = router([
        Route::new("api").host("api.example.com").path_prefix("/"),
        Route::new("wild").host("*.example.com").path_prefix("/"),
    ]);
    let mut request = req(Method::GET, "/x");
    request
        .headers_mut()
        .insert("host", "API.example.com:443".parse().unwrap());
    assert_eq!(json(send(&r, request).await).await["route"], "api");

    // HTTP/2 requests carry the host in `:authority`, which `http` puts in the URI.
    let v = json(send(&r, req(Method::GET, "https://a.example.com/x?q=1")).await).await;
    assert_eq!(v["route"], "wild");

    let rsp = send(&r, req(Method::GET, "/x")).await;
    assert_problem(to_axum(rsp), 404).await;
}

#[tokio::test]
async fn a_rewritten_absolute_uri_keeps_scheme_and_authority() {
    let seen = service_fn(|req: Request<String>| async move {
        Ok::<_, Infallible>(Response::new(req.uri().to_string()))
    });
    let r = Router::builder()
        .route(
            Route::new("api").path_prefix("/api/").strip_prefix(true),
            seen,
        )
        .build()
        .unwrap();
    let rsp = r
        .oneshot(req(Method::GET, "https://example.com/api/a//b?x=1"))
        .await
        .unwrap();
    let body = http_body_util::BodyExt::collect(rsp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(body, "https://example.com/a/b?x=1");
}

/// A service that is not ready on its first poll: the router itself is
/// always ready, and the response future drives the route's readiness.
#[derive(Clone)]
struct SlowToStart {
    polls: Arc<AtomicUsize>,
}

impl Service<Request<String>> for SlowToStart {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<String>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.polls.fetch_add(1, Ordering::SeqCst) == 0 {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<String>) -> Self::Future {
        let route = req
            .extensions()
            .get::<RouteMatch>()
            .map(|m| m.route.to_string());
        Box::pin(async move { Ok(Response::new(route.unwrap_or_default())) })
    }
}

#[tokio::test]
async fn readiness_is_driven_by_the_response_future() {
    let polls = Arc::new(AtomicUsize::new(0));
    let mut r = Router::builder()
        .route(
            Route::new("slow").path_exact("/"),
            SlowToStart {
                polls: polls.clone(),
            },
        )
        .build()
        .unwrap();
    // Ready without touching the route's service.
    let ready = std::future::poll_fn(|cx| Service::<Request<String>>::poll_ready(&mut r, cx)).await;
    assert!(ready.is_ok());
    assert_eq!(polls.load(Ordering::SeqCst), 0);

    let rsp = r.call(req(Method::GET, "/")).await.unwrap();
    let body = http_body_util::BodyExt::collect(rsp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(body, "slow");
    assert_eq!(polls.load(Ordering::SeqCst), 2);
}

/// A route service that failed: its readiness error is the answer.
#[derive(Clone)]
struct Broken;

impl Service<Request<String>> for Broken {
    type Response = Response<String>;
    type Error = &'static str;
    type Future = std::future::Ready<Result<Response<String>, &'static str>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), &'static str>> {
        Poll::Ready(Err("broken"))
    }

    fn call(&mut self, _req: Request<String>) -> Self::Future {
        unreachable!("called without being ready")
    }
}

#[tokio::test]
async fn a_route_service_that_fails_readiness_fails_the_request() {
    let mut r = Router::builder()
        .route(Route::new("broken").path_exact("/"), Broken)
        .build()
        .unwrap();
    let err = r.call(req(Method::GET, "/")).await.unwrap_err();
    assert_eq!(err, "broken");
}

#[test]
fn build_errors_name_the_route() {
    let bad = |route: Route| {
        Router::builder()
            .route(Route::new("ok").path_exact("/ok"), Echo::named("ok"))
            .route(route, Echo::named("bad"))
            .build()
            .unwrap_err()
    };
    let err = bad(Route::new("re").header_regex("x-v", "(unclosed"));
    assert_eq!(err.route(), "re");
    assert!(matches!(err.kind(), BuildErrorKind::InvalidRegex { .. }));
    assert!(
        err.to_string()
            .starts_with("route `re`: invalid regex `(unclosed` for header `x-v`")
    );

    let err = bad(Route::new("ok").path_exact("/other"));
    assert!(matches!(err.kind(), BuildErrorKind::DuplicateName));

    let err = bad(Route::new("tail").path_template("/files/{*rest}/meta"));
    assert!(matches!(err.kind(), BuildErrorKind::InvalidTemplate { .. }));
    assert!(
        err.to_string().contains("must be the last segment"),
        "{err}"
    );

    let err = bad(Route::new("rw")
        .path_template("/users/{id}")
        .rewrite("/v2/{uid}"));
    assert!(matches!(
        err.kind(),
        BuildErrorKind::UnknownRewriteParam { param, .. } if param == "uid"
    ));

    let err = bad(Route::new("strip").path_exact("/x").strip_prefix(true));
    assert!(matches!(
        err.kind(),
        BuildErrorKind::StripPrefixWithoutPrefix
    ));
}

#[test]
fn router_is_cheap_to_clone_and_debuggable() {
    let r = router([
        Route::new("a").path_exact("/a"),
        Route::new("b").path_exact("/b"),
    ]);
    let clone = r.clone();
    assert_eq!(clone.table().names().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(clone.service(1).map(|e| &*e.0), Some("b"));
    let debug = format!("{r:?}");
    assert!(
        debug.contains("\"a\"") && debug.contains("\"b\""),
        "{debug}"
    );
}
