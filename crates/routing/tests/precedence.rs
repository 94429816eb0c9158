//! The precedence rules of the crate docs, one table row per rule and edge,
//! checked through both the pure `RouteTable` and the `Router` service.

mod support;

use http::{HeaderMap, HeaderValue, Method, Request};
use tower::ServiceExt;
use towergate_routing::{Outcome, Route, RouteTable, Router};

use support::{Echo, json};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Want {
    Route(&'static str),
    NotFound,
    /// With this `Allow` header.
    MethodNotAllowed(&'static str),
}

struct Row {
    rule: &'static str,
    routes: Vec<Route>,
    method: Method,
    host: Option<&'static str>,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    query: Option<&'static str>,
    want: Want,
}

fn row(rule: &'static str, routes: Vec<Route>, path: &'static str, want: Want) -> Row {
    Row {
        rule,
        routes,
        method: Method::GET,
        host: None,
        path,
        headers: &[],
        query: None,
        want,
    }
}

impl Row {
    fn method(mut self, m: Method) -> Self {
        self.method = m;
        self
    }
    fn host(mut self, h: &'static str) -> Self {
        self.host = Some(h);
        self
    }
    fn headers(mut self, h: &'static [(&'static str, &'static str)]) -> Self {
        self.headers = h;
        self
    }
    fn query(mut self, q: &'static str) -> Self {
        self.query = Some(q);
        self
    }
}

use Want::{MethodNotAllowed, NotFound, Route as R};

fn rows() -> Vec<Row> {
    vec![
        // 1. priority
        row(
            "1: higher priority beats a more specific path",
            vec![
                Route::new("catch").path_prefix("/").priority(10),
                Route::new("exact").path_exact("/users/42"),
            ],
            "/users/42",
            R("catch"),
        ),
        row(
            "1: negative priority loses to the default",
            vec![
                Route::new("exact").path_exact("/x").priority(-1),
                Route::new("catch").path_prefix("/"),
            ],
            "/x",
            R("catch"),
        ),
        row(
            "1: priority beats an exact host",
            vec![
                Route::new("host").host("api.example.com").path_exact("/x"),
                Route::new("prio").path_exact("/x").priority(1),
            ],
            "/x",
            R("prio"),
        )
        .host("api.example.com"),
        // 2. host
        row(
            "2: exact host beats wildcard host, even with a less specific path",
            vec![
                Route::new("wild").host("*.example.com").path_exact("/x"),
                Route::new("exact").host("api.example.com").path_prefix("/"),
            ],
            "/x",
            R("exact"),
        )
        .host("api.example.com"),
        row(
            "2: longer wildcard suffix first",
            vec![
                Route::new("short").host("*.example.com"),
                Route::new("long").host("*.eu.example.com"),
            ],
            "/",
            R("long"),
        )
        .host("a.eu.example.com"),
        row(
            "2: the shorter wildcard still serves the rest",
            vec![
                Route::new("short").host("*.example.com"),
                Route::new("long").host("*.eu.example.com"),
            ],
            "/",
            R("short"),
        )
        .host("a.us.example.com"),
        row(
            "2: a wildcard host beats no host",
            vec![
                Route::new("none").path_exact("/x"),
                Route::new("wild").host("*.example.com").path_prefix("/"),
            ],
            "/x",
            R("wild"),
        )
        .host("a.example.com"),
        row(
            "2: wildcard never matches the bare domain",
            vec![Route::new("wild").host("*.example.com")],
            "/",
            NotFound,
        )
        .host("example.com"),
        // 3. path
        row(
            "3: static segment beats param (whatever the order)",
            vec![
                Route::new("param").path_template("/users/{id}"),
                Route::new("static").path_exact("/users/me"),
            ],
            "/users/me",
            R("static"),
        ),
        row(
            "3: param beats catch-all",
            vec![
                Route::new("rest").path_template("/users/{*rest}"),
                Route::new("param").path_template("/users/{id}"),
            ],
            "/users/42",
            R("param"),
        ),
        row(
            "3: exact template beats prefix on the same segments",
            vec![
                Route::new("prefix").path_prefix("/users/"),
                Route::new("exact").path_template("/users/{id}"),
            ],
            "/users/42",
            R("exact"),
        ),
        row(
            "3: exact end beats catch-all",
            vec![
                Route::new("rest").path_template("/files/{*rest}"),
                Route::new("exact").path_exact("/files"),
            ],
            "/files",
            R("exact"),
        ),
        row(
            "3: exact beats the same prefix",
            vec![
                Route::new("prefix").path_prefix("/users"),
                Route::new("exact").path_exact("/users"),
            ],
            "/users",
            R("exact"),
        ),
        row(
            "3: longer prefix wins",
            vec![
                Route::new("api").path_prefix("/api/"),
                Route::new("v1").path_prefix("/api/v1/"),
            ],
            "/api/v1/users",
            R("v1"),
        ),
        row(
            "3: prefix ending in / beats the bare prefix",
            vec![
                Route::new("bare").path_prefix("/api"),
                Route::new("slash").path_prefix("/api/"),
            ],
            "/api/x",
            R("slash"),
        ),
        row(
            "3: the bare prefix alone matches the bare path",
            vec![
                Route::new("bare").path_prefix("/api"),
                Route::new("slash").path_prefix("/api/"),
            ],
            "/api",
            R("bare"),
        ),
        row(
            "3: segments compare from the left: static first segment wins",
            vec![
                Route::new("param-first").path_template("/{tenant}/b"),
                Route::new("static-first").path_prefix("/a/"),
            ],
            "/a/b",
            R("static-first"),
        ),
        row(
            "3: prefix never matches inside a segment",
            vec![Route::new("users").path_prefix("/users")],
            "/usersx",
            NotFound,
        ),
        row(
            "3: a failing specific route falls back to a less specific one",
            vec![
                Route::new("me")
                    .path_exact("/users/me")
                    .header_present("x-admin"),
                Route::new("param").path_template("/users/{id}"),
            ],
            "/users/me",
            R("param"),
        ),
        // 4. methods
        row(
            "4: a route listing methods beats any-method",
            vec![
                Route::new("any").path_exact("/x"),
                Route::new("get").path_exact("/x").method(Method::GET),
            ],
            "/x",
            R("get"),
        ),
        row(
            "4: any-method still serves other methods",
            vec![
                Route::new("any").path_exact("/x"),
                Route::new("get").path_exact("/x").method(Method::GET),
            ],
            "/x",
            R("any"),
        )
        .method(Method::POST),
        row(
            "4: HEAD is served by a GET route",
            vec![
                Route::new("any").path_exact("/x"),
                Route::new("get").path_exact("/x").method(Method::GET),
            ],
            "/x",
            R("get"),
        )
        .method(Method::HEAD),
        // 5. headers, then query
        row(
            "5: more header matchers win",
            vec![
                Route::new("one").path_exact("/x").header_present("a"),
                Route::new("two")
                    .path_exact("/x")
                    .header_present("a")
                    .header_equals("b", "1"),
            ],
            "/x",
            R("two"),
        )
        .headers(&[("a", "z"), ("b", "1")]),
        row(
            "5: failing header matchers fall back",
            vec![
                Route::new("one").path_exact("/x").header_present("a"),
                Route::new("two")
                    .path_exact("/x")
                    .header_present("a")
                    .header_equals("b", "1"),
            ],
            "/x",
            R("one"),
        )
        .headers(&[("a", "z"), ("b", "2")]),
        row(
            "5: headers count before query",
            vec![
                Route::new("query")
                    .path_exact("/x")
                    .query_present("p")
                    .query_present("r"),
                Route::new("header").path_exact("/x").header_present("a"),
            ],
            "/x",
            R("header"),
        )
        .headers(&[("a", "1")])
        .query("p=1&r=2"),
        row(
            "5: more query matchers win",
            vec![
                Route::new("one").path_exact("/x").query_present("p"),
                Route::new("two")
                    .path_exact("/x")
                    .query_present("p")
                    .query_regex("r", "[0-9]+"),
            ],
            "/x",
            R("two"),
        )
        .query("p&r=42"),
        // 6. declaration order
        row(
            "6: first declared wins a tie",
            vec![
                Route::new("first").path_template("/x/{a}"),
                Route::new("second").path_template("/x/{b}"),
            ],
            "/x/1",
            R("first"),
        ),
        // no route, wrong method
        row(
            "404: nothing matches",
            vec![Route::new("x").path_exact("/x")],
            "/y",
            NotFound,
        ),
        row(
            "404: wrong host is not a 405",
            vec![
                Route::new("x")
                    .host("a.example.com")
                    .method(Method::GET)
                    .path_exact("/x"),
            ],
            "/x",
            NotFound,
        )
        .host("b.example.com")
        .method(Method::POST),
        row(
            "405: union of the methods, sorted, HEAD with GET",
            vec![
                Route::new("read").path_exact("/x").method(Method::GET),
                Route::new("write")
                    .path_template("/{any}")
                    .method(Method::PUT)
                    .method(Method::DELETE),
            ],
            "/x",
            MethodNotAllowed("DELETE, GET, HEAD, PUT"),
        )
        .method(Method::POST),
    ]
}

/// Outcomes as text, so a failing row prints what it got.
fn describe(want: Want) -> String {
    match want {
        R(name) => format!("route {name}"),
        NotFound => "404".to_owned(),
        MethodNotAllowed(allow) => format!("405 allow {allow}"),
    }
}

#[test]
fn precedence_table_on_route_table() {
    for row in rows() {
        let table = RouteTable::new(row.routes.clone()).unwrap();
        let mut headers = HeaderMap::new();
        for (k, v) in row.headers {
            headers.append(*k, HeaderValue::from_static(v));
        }
        let got = match table.find(&row.method, row.host, row.path, &headers, row.query) {
            Outcome::Matched { index, .. } => format!("route {}", table.name(index).unwrap()),
            Outcome::NotFound => "404".to_owned(),
            Outcome::MethodNotAllowed { allow } => {
                let list: Vec<&str> = allow.iter().map(Method::as_str).collect();
                format!("405 allow {}", list.join(", "))
            }
        };
        assert_eq!(got, describe(row.want), "{}", row.rule);
    }
}

#[tokio::test]
async fn precedence_table_through_the_router() {
    for row in rows() {
        let router = row
            .routes
            .iter()
            .cloned()
            .fold(Router::builder(), |b, r| {
                let echo = Echo::named(r.name());
                b.route(r, echo)
            })
            .build()
            .unwrap();
        let uri = match row.query {
            Some(q) => format!("{}?{q}", row.path),
            None => row.path.to_owned(),
        };
        let mut req = Request::builder().method(row.method.clone()).uri(uri);
        if let Some(host) = row.host {
            req = req.header("host", host);
        }
        for (k, v) in row.headers {
            req = req.header(*k, *v);
        }
        let rsp = router
            .oneshot(req.body(String::new()).unwrap())
            .await
            .unwrap();
        match row.want {
            R(name) => {
                assert_eq!(rsp.status(), 200, "{}", row.rule);
                assert_eq!(json(rsp).await["route"], name, "{}", row.rule);
            }
            NotFound => assert_eq!(rsp.status(), 404, "{}", row.rule),
            MethodNotAllowed(allow) => {
                assert_eq!(rsp.status(), 405, "{}", row.rule);
                assert_eq!(rsp.headers()["allow"], allow, "{}", row.rule);
            }
        }
    }
}
