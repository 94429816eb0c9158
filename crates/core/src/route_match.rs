use std::sync::Arc;

/// Which route a request matched, and the parameters its path captured.
///
/// The router puts it in the request extensions; every later layer (auth
/// rules, rate-limit keys, aggregation templates, metrics labels) reads the
/// route name from here rather than from the raw path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteMatch {
    /// The route's name, unique in a route table: bounded cardinality, safe as
    /// a metrics label.
    pub route: Arc<str>,
    /// Captured path parameters in template order, percent-decoded.
    pub params: Vec<(Arc<str>, String)>,
}

impl RouteMatch {
    /// A match with no parameters.
    pub fn new(route: impl Into<Arc<str>>) -> Self {
        Self {
            route: route.into(),
            params: Vec::new(),
        }
    }

    /// The value of the parameter `name`, if the path captured it.
    ///
    /// ```
    /// let m = towergate_core::RouteMatch {
    ///     route: "users".into(),
    ///     params: vec![("id".into(), "42".into())],
    /// };
    /// assert_eq!(m.param("id"), Some("42"));
    /// assert_eq!(m.param("nope"), None);
    /// ```
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| &**k == name)
            .map(|(_, v)| v.as_str())
    }
}
