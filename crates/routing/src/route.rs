//! The route builder: what a route matches and how it forwards.

use std::sync::Arc;

use http::Method;

use crate::matchers::ValueSpec;

/// One route: what requests it matches, how it ranks against other routes,
/// and how it rewrites the path it forwards.
///
/// Setters never fail; everything is validated when the table is built, by
/// [`RouterBuilder::build`](crate::RouterBuilder::build) or
/// [`RouteTable::new`](crate::RouteTable::new), which report the route by
/// name.
///
/// ```
/// use http::Method;
/// use towergate_routing::Route;
///
/// let route = Route::new("users")
///     .host("api.example.com")
///     .method(Method::GET)
///     .path_template("/users/{id}")
///     .header_present("authorization")
///     .rewrite("/v2/users/{id}");
/// assert_eq!(route.name(), "users");
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct Route {
    pub(crate) name: Arc<str>,
    pub(crate) hosts: Vec<String>,
    pub(crate) methods: Vec<Method>,
    pub(crate) paths: Vec<PathSpec>,
    pub(crate) headers: Vec<(String, ValueSpec)>,
    pub(crate) query: Vec<(String, ValueSpec)>,
    pub(crate) priority: i32,
    pub(crate) strip_prefix: bool,
    pub(crate) rewrite: Option<String>,
}

#[derive(Clone, Debug)]
pub(crate) enum PathSpec {
    Exact(String),
    Prefix(String),
}

// === impl Route ===

impl Route {
    /// A route named `name` that matches every request until constrained.
    ///
    /// The name must be unique in a table: it is what [`RouteMatch`](towergate_core::RouteMatch)
    /// carries, what metrics are labelled with and what build errors cite.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            hosts: Vec::new(),
            methods: Vec::new(),
            paths: Vec::new(),
            headers: Vec::new(),
            query: Vec::new(),
            priority: 0,
            strip_prefix: false,
            rewrite: None,
        }
    }

    /// Matches requests for this host: `api.example.com`, or `*.example.com`
    /// for any subdomain at any depth (but not `example.com` itself).
    ///
    /// Case and a trailing dot are ignored, as is the request's port. Called
    /// several times, the route matches any of the hosts. Without a host the
    /// route matches every host.
    pub fn host(mut self, pattern: impl Into<String>) -> Self {
        self.hosts.push(pattern.into());
        self
    }

    /// Matches this method. Called several times, any of them. Without a
    /// method the route matches every method. Allowing `GET` also allows
    /// `HEAD`.
    pub fn method(mut self, m: Method) -> Self {
        self.methods.push(m);
        self
    }

    /// Matches exactly this path template: `/users`, `/users/{id}`,
    /// `/files/{*rest}`.
    ///
    /// `{name}` matches one non-empty segment; `{*name}` matches the rest of
    /// the path (zero or more segments) and must be last. A trailing `/`
    /// is significant: `/users/` does not match `/users`.
    pub fn path_exact(mut self, template: impl Into<String>) -> Self {
        self.paths.push(PathSpec::Exact(template.into()));
        self
    }

    /// Matches paths that start with this prefix, on a segment boundary.
    ///
    /// `/users/` matches `/users/` and everything below it, not `/users`;
    /// `/users` matches `/users` and `/users/...`, never `/usersx`; `/`
    /// matches every path. Parameters are allowed (`/tenants/{t}/`), a
    /// catch-all is not.
    pub fn path_prefix(mut self, template: impl Into<String>) -> Self {
        self.paths.push(PathSpec::Prefix(template.into()));
        self
    }

    /// Same as [`path_exact`](Self::path_exact).
    pub fn path_template(self, template: impl Into<String>) -> Self {
        self.path_exact(template)
    }

    /// Requires the header `name` to have exactly `value` (any of its values,
    /// if it is repeated).
    pub fn header_equals(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers
            .push((name.into(), ValueSpec::Equals(value.into())));
        self
    }

    /// Requires the header `name` to be present, whatever its value.
    pub fn header_present(mut self, name: impl Into<String>) -> Self {
        self.headers.push((name.into(), ValueSpec::Present));
        self
    }

    /// Requires a value of the header `name` to match `regex` as a whole (the
    /// pattern is anchored at both ends).
    pub fn header_regex(mut self, name: impl Into<String>, regex: impl Into<String>) -> Self {
        self.headers
            .push((name.into(), ValueSpec::Regex(regex.into())));
        self
    }

    /// Requires the query parameter `name` to have exactly `value` (after
    /// percent-decoding, `+` being a space).
    pub fn query_equals(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.query
            .push((name.into(), ValueSpec::Equals(value.into())));
        self
    }

    /// Requires the query parameter `name` to be present, even empty (`?debug`).
    pub fn query_present(mut self, name: impl Into<String>) -> Self {
        self.query.push((name.into(), ValueSpec::Present));
        self
    }

    /// Requires a value of the query parameter `name` to match `regex` as a
    /// whole (anchored), after percent-decoding.
    pub fn query_regex(mut self, name: impl Into<String>, regex: impl Into<String>) -> Self {
        self.query
            .push((name.into(), ValueSpec::Regex(regex.into())));
        self
    }

    /// Ranks this route above every route of lower priority, whatever their
    /// other matchers. The default is 0.
    pub fn priority(mut self, p: i32) -> Self {
        self.priority = p;
        self
    }

    /// For a [`path_prefix`](Self::path_prefix) route: forward the path
    /// without the matched prefix (`/users/` stripped from `/users/42` gives
    /// `/42`, from `/users/` gives `/`).
    pub fn strip_prefix(mut self, yes: bool) -> Self {
        self.strip_prefix = yes;
        self
    }

    /// Forwards a rewritten path, built from captured parameters:
    /// `/v2/users/{id}`, `/files/{rest}` (`{*rest}` works too).
    ///
    /// On an exact route the template is the whole new path. On a prefix
    /// route it replaces the matched prefix and the rest of the path follows
    /// (`/v2/` on prefix `/api/` turns `/api/users` into `/v2/users`). The
    /// query string is kept either way.
    pub fn rewrite(mut self, template: impl Into<String>) -> Self {
        self.rewrite = Some(template.into());
        self
    }

    /// The route's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}
