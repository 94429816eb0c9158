use http::{HeaderValue, Method};

use super::*;

fn table(routes: impl IntoIterator<Item = Route>) -> RouteTable {
    RouteTable::new(routes).unwrap()
}

struct Req<'a> {
    method: Method,
    host: Option<&'a str>,
    path: &'a str,
    headers: HeaderMap,
    query: Option<&'a str>,
}

fn get(path: &str) -> Req<'_> {
    Req {
        method: Method::GET,
        host: None,
        path,
        headers: HeaderMap::new(),
        query: None,
    }
}

impl<'a> Req<'a> {
    fn method(mut self, m: Method) -> Self {
        self.method = m;
        self
    }
    fn host(mut self, h: &'a str) -> Self {
        self.host = Some(h);
        self
    }
    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.append(name, HeaderValue::from_static(value));
        self
    }
    fn query(mut self, q: &'a str) -> Self {
        self.query = Some(q);
        self
    }
    fn find(&self, t: &RouteTable) -> Outcome {
        t.find(
            &self.method,
            self.host,
            self.path,
            &self.headers,
            self.query,
        )
    }
    /// The name of the matched route, or "404" / "405".
    fn route<'t>(&self, t: &'t RouteTable) -> &'t str {
        match self.find(t) {
            Outcome::Matched { index, .. } => t.name(index).unwrap(),
            Outcome::MethodNotAllowed { .. } => "405",
            Outcome::NotFound => "404",
        }
    }
    fn params(&self, t: &RouteTable) -> Vec<(String, String)> {
        match self.find(t) {
            Outcome::Matched { params, .. } => params
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            other => panic!("{}: {other:?}", self.path),
        }
    }
    fn upstream(&self, t: &RouteTable) -> Option<String> {
        match self.find(t) {
            Outcome::Matched { upstream_path, .. } => upstream_path,
            other => panic!("{}: {other:?}", self.path),
        }
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn static_param_and_catch_all() {
    let t = table([
        Route::new("me").path_exact("/users/me"),
        Route::new("user").path_template("/users/{id}"),
        Route::new("posts").path_template("/users/{id}/posts/{post}"),
        Route::new("files").path_template("/files/{*rest}"),
        Route::new("root").path_exact("/"),
    ]);
    assert_eq!(get("/users/me").route(&t), "me");
    assert_eq!(get("/users/42").route(&t), "user");
    assert_eq!(get("/users/42/posts/7").route(&t), "posts");
    assert_eq!(get("/users/42/posts").route(&t), "404");
    assert_eq!(
        get("/users/").route(&t),
        "404",
        "a param never matches an empty segment"
    );
    assert_eq!(get("/users").route(&t), "404");
    assert_eq!(get("/").route(&t), "root");
    assert_eq!(get("/files/a/b/c.txt").route(&t), "files");
    assert_eq!(get("/nope").route(&t), "404");
    assert_eq!(get("nope").route(&t), "404", "paths start with /");

    assert_eq!(
        get("/users/42/posts/7").params(&t),
        pairs(&[("id", "42"), ("post", "7")])
    );
    assert_eq!(
        get("/files/a/b/c.txt").params(&t),
        pairs(&[("rest", "a/b/c.txt")])
    );
}

#[test]
fn catch_all_matches_zero_or_more_segments() {
    let t = table([Route::new("files").path_template("/files/{*rest}")]);
    assert_eq!(get("/files").params(&t), pairs(&[("rest", "")]));
    assert_eq!(get("/files/").params(&t), pairs(&[("rest", "")]));
    assert_eq!(get("/files/a").params(&t), pairs(&[("rest", "a")]));
    assert_eq!(get("/files/a/").params(&t), pairs(&[("rest", "a/")]));
    assert_eq!(get("/filesx").route(&t), "404");
}

#[test]
fn params_are_percent_decoded() {
    let t = table([Route::new("user").path_template("/users/{id}/{*rest}")]);
    assert_eq!(
        get("/users/caf%C3%A9/a%20b/%3F").params(&t),
        pairs(&[("id", "café"), ("rest", "a b/?")])
    );
    assert_eq!(
        get("/users/%FF").params(&t),
        pairs(&[("id", "\u{FFFD}"), ("rest", "")])
    );
}

#[test]
fn prefixes_match_on_segment_boundaries() {
    let slash = table([Route::new("p").path_prefix("/users/")]);
    assert_eq!(get("/users/").route(&slash), "p");
    assert_eq!(get("/users/42").route(&slash), "p");
    assert_eq!(get("/users/42/x/").route(&slash), "p");
    assert_eq!(get("/users").route(&slash), "404");
    assert_eq!(get("/usersx").route(&slash), "404");

    let bare = table([Route::new("p").path_prefix("/users")]);
    assert_eq!(get("/users").route(&bare), "p");
    assert_eq!(get("/users/").route(&bare), "p");
    assert_eq!(get("/users/42").route(&bare), "p");
    assert_eq!(get("/usersx").route(&bare), "404");
    assert_eq!(get("/user").route(&bare), "404");

    let root = table([Route::new("p").path_prefix("/")]);
    for path in ["/", "/a", "/a/b/", "/users"] {
        assert_eq!(get(path).route(&root), "p", "{path}");
    }
    let any = table([Route::new("any")]);
    for path in ["/", "/a", "/a/b/"] {
        assert_eq!(get(path).route(&any), "any", "{path}");
    }

    let templated = table([Route::new("t").path_prefix("/tenants/{t}/")]);
    assert_eq!(
        get("/tenants/acme/users/1").params(&templated),
        pairs(&[("t", "acme")])
    );
    assert_eq!(get("/tenants/acme").route(&templated), "404");
    assert_eq!(get("/tenants//x").route(&templated), "404");
}

#[test]
fn backtracks_when_the_specific_route_fails_its_other_matchers() {
    let t = table([
        Route::new("me-admin")
            .path_exact("/users/me")
            .header_present("x-admin"),
        Route::new("user").path_template("/users/{id}"),
        Route::new("deep-static")
            .path_exact("/a/b/c")
            .header_equals("x-v", "2"),
        Route::new("deep-param").path_template("/a/{x}/c"),
        Route::new("deep-tail").path_template("/a/b/{*rest}"),
        Route::new("fallback").path_prefix("/"),
    ]);
    assert_eq!(
        get("/users/me").header("x-admin", "1").route(&t),
        "me-admin"
    );
    assert_eq!(get("/users/me").params(&t), pairs(&[("id", "me")]));
    assert_eq!(get("/a/b/c").header("x-v", "2").route(&t), "deep-static");
    // The static branch fails its header; the param branch at depth 2 and
    // the catch-all at depth 3 both match; static `b` beats `{x}` on the
    // second segment.
    assert_eq!(get("/a/b/c").header("x-v", "1").route(&t), "deep-tail");
    assert_eq!(get("/a/z/c").route(&t), "deep-param");
    assert_eq!(get("/a/z/d").route(&t), "fallback");
}

#[test]
fn hosts() {
    let t = table([
        Route::new("exact").host("api.example.com").path_prefix("/"),
        Route::new("wild").host("*.example.com").path_prefix("/"),
        Route::new("other")
            .host("example.org")
            .host("*.example.net")
            .path_prefix("/"),
    ]);
    assert_eq!(get("/").host("api.example.com").route(&t), "exact");
    assert_eq!(get("/").host("API.Example.COM.:8443").route(&t), "exact");
    assert_eq!(get("/").host("a.example.com").route(&t), "wild");
    assert_eq!(get("/").host("a.b.example.com").route(&t), "wild");
    assert_eq!(get("/").host("example.com").route(&t), "404");
    assert_eq!(get("/").host("example.org").route(&t), "other");
    assert_eq!(get("/").host("x.example.net").route(&t), "other");
    assert_eq!(get("/").route(&t), "404", "no host matches no host pattern");
}

#[test]
fn methods_head_and_405() {
    let t = table([
        Route::new("read")
            .method(Method::GET)
            .path_template("/items/{id}"),
        Route::new("write")
            .method(Method::PUT)
            .method(Method::DELETE)
            .path_template("/items/{id}"),
        Route::new("other-host")
            .host("admin.example.com")
            .method(Method::PATCH)
            .path_template("/items/{id}"),
        Route::new("guarded")
            .method(Method::OPTIONS)
            .path_template("/items/{id}")
            .header_present("x-never"),
    ]);
    assert_eq!(get("/items/1").route(&t), "read");
    assert_eq!(get("/items/1").method(Method::HEAD).route(&t), "read");
    assert_eq!(get("/items/1").method(Method::DELETE).route(&t), "write");
    // Routes failing the host or a header do not contribute to Allow.
    assert_eq!(
        get("/items/1").method(Method::POST).find(&t),
        Outcome::MethodNotAllowed {
            allow: vec![Method::DELETE, Method::GET, Method::HEAD, Method::PUT]
        }
    );
    assert_eq!(
        get("/items").method(Method::POST).find(&t),
        Outcome::NotFound
    );

    let head_only = table([Route::new("h").method(Method::HEAD).path_exact("/")]);
    assert_eq!(get("/").route(&head_only), "405", "HEAD does not bring GET");
}

#[test]
fn headers_and_query() {
    let t = table([
        Route::new("beta")
            .path_exact("/search")
            .header_regex("x-version", "2\\.[0-9]+")
            .query_equals("q", "a b"),
        Route::new("debug")
            .path_exact("/search")
            .query_present("debug"),
        Route::new("search").path_exact("/search"),
    ]);
    let beta = get("/search").header("x-version", "2.1").query("q=a+b");
    assert_eq!(beta.route(&t), "beta");
    assert_eq!(
        get("/search")
            .header("x-version", "2.1")
            .query("q=a%20b")
            .route(&t),
        "beta"
    );
    assert_eq!(
        get("/search")
            .header("x-version", "2.1x")
            .query("q=a+b")
            .route(&t),
        "search"
    );
    assert_eq!(
        get("/search").header("x-version", "2.1").route(&t),
        "search"
    );
    assert_eq!(get("/search").query("debug").route(&t), "debug");
    assert_eq!(get("/search").query("x=1&debug=").route(&t), "debug");
    assert_eq!(get("/search").query("debugx=1").route(&t), "search");
}

#[test]
fn forwarded_paths() {
    let t = table([
        Route::new("strip")
            .path_prefix("/users/")
            .strip_prefix(true),
        Route::new("strip-bare")
            .path_prefix("/api")
            .strip_prefix(true),
        Route::new("tenant")
            .path_prefix("/tenants/{t}/")
            .strip_prefix(true),
        Route::new("v2")
            .path_template("/old/users/{id}")
            .rewrite("/v2/users/{id}"),
        Route::new("files")
            .path_template("/files/{*rest}")
            .rewrite("/static/{rest}"),
        Route::new("prefix-rewrite")
            .path_prefix("/shop/")
            .rewrite("/store/v1/"),
        Route::new("plain").path_exact("/plain"),
    ]);
    assert_eq!(get("/users/42").upstream(&t).as_deref(), Some("/42"));
    assert_eq!(get("/users/").upstream(&t).as_deref(), Some("/"));
    assert_eq!(get("/users/42/x/").upstream(&t).as_deref(), Some("/42/x/"));
    assert_eq!(get("/api").upstream(&t).as_deref(), Some("/"));
    assert_eq!(get("/api/x").upstream(&t).as_deref(), Some("/x"));
    assert_eq!(
        get("/tenants/acme/users/1").upstream(&t).as_deref(),
        Some("/users/1")
    );
    assert_eq!(
        get("/old/users/a%3Fb").upstream(&t).as_deref(),
        Some("/v2/users/a%3Fb")
    );
    assert_eq!(
        get("/files/a/b.css").upstream(&t).as_deref(),
        Some("/static/a/b.css")
    );
    assert_eq!(
        get("/shop/cart/1").upstream(&t).as_deref(),
        Some("/store/v1/cart/1")
    );
    assert_eq!(get("/shop/").upstream(&t).as_deref(), Some("/store/v1/"));
    assert_eq!(get("/plain").upstream(&t), None);
}

#[test]
fn a_route_with_several_hosts_ranks_per_host() {
    let t = table([
        Route::new("wild").host("*.example.com").path_exact("/x"),
        Route::new("multi")
            .host("*.com")
            .host("a.example.com")
            .path_exact("/x"),
    ]);
    // Through its exact host, `multi` beats the wildcard route...
    assert_eq!(get("/x").host("a.example.com").route(&t), "multi");
    // ...but through `*.com` it ranks below `*.example.com`.
    assert_eq!(get("/x").host("b.example.com").route(&t), "wild");
    assert_eq!(get("/x").host("b.other.com").route(&t), "multi");
}

#[test]
fn build_errors() {
    let kind = |routes: Vec<Route>| match RouteTable::new(routes) {
        Err(e) => (
            e.route().to_owned(),
            format!("{:?}", e.kind()),
            e.to_string(),
        ),
        Ok(t) => panic!("built {t:?}"),
    };
    let (route, k, msg) = kind(vec![
        Route::new("a").path_exact("/a"),
        Route::new("a").path_exact("/b"),
    ]);
    assert_eq!(route, "a");
    assert!(k.starts_with("DuplicateName"), "{k}");
    assert_eq!(msg, "route `a`: another route has the same name");

    let cases: Vec<(Route, &str)> = vec![
        (Route::new(""), "EmptyName"),
        (
            Route::new("r").path_exact("/a").path_prefix("/b"),
            "MultiplePaths",
        ),
        (
            Route::new("r").path_template("/f/{*rest}/x"),
            "InvalidTemplate",
        ),
        (Route::new("r").host("*"), "InvalidHost"),
        (
            Route::new("r").header_present("bad name"),
            "InvalidHeaderName",
        ),
        (
            Route::new("r").header_equals("x", "a\r\nb"),
            "InvalidHeaderValue",
        ),
        (Route::new("r").header_regex("x", "("), "InvalidRegex"),
        (Route::new("r").query_regex("q", "[a-"), "InvalidRegex"),
        (Route::new("r").query_present(""), "EmptyQueryName"),
        (
            Route::new("r").path_exact("/a").strip_prefix(true),
            "StripPrefixWithoutPrefix",
        ),
        (
            Route::new("r").strip_prefix(true),
            "StripPrefixWithoutPrefix",
        ),
        (
            Route::new("r")
                .path_prefix("/a/")
                .strip_prefix(true)
                .rewrite("/b/"),
            "StripPrefixAndRewrite",
        ),
        (
            Route::new("r")
                .path_template("/u/{id}")
                .rewrite("/v2/{user}"),
            "UnknownRewriteParam",
        ),
        (
            Route::new("r").path_template("/u/{id}").rewrite("v2"),
            "InvalidRewrite",
        ),
    ];
    for (route, want) in cases {
        let name = route.name().to_owned();
        let (got_route, k, _) = kind(vec![route]);
        assert_eq!(got_route, name);
        assert!(k.starts_with(want), "{want}: {k}");
    }
}

#[test]
fn an_empty_table_finds_nothing() {
    let t = table([]);
    assert!(t.is_empty());
    assert_eq!(get("/").find(&t), Outcome::NotFound);
}

#[test]
fn many_routes() {
    let t = table((0..5_000).map(|i| {
        Route::new(format!("svc{i}"))
            .method(Method::GET)
            .path_template(format!("/svc{i}/items/{{id}}"))
    }));
    assert_eq!(t.len(), 5_000);
    assert_eq!(get("/svc4321/items/9").route(&t), "svc4321");
    assert_eq!(get("/svc4321/items/9").params(&t), pairs(&[("id", "9")]));
    assert_eq!(get("/svc5000/items/9").route(&t), "404");
    assert_eq!(get("/svc1/items/9").method(Method::POST).route(&t), "405");
}
