//! [`Call`]: the definition of one upstream call of an aggregate.

use std::time::Duration;

use http::{HeaderName, Method};

/// One upstream call of an [`Aggregate`](crate::Aggregate): where it goes,
/// what it sends, how its answer is shaped and where it lands.
///
/// A new call is `GET /`, required, without timeout of its own, and lands
/// under its name. See the [crate docs](crate) for templates, failure
/// handling and merging.
///
/// ```
/// use std::time::Duration;
/// use towergate_aggregate::Call;
///
/// let call = Call::new("orders", "orders-pool")
///     .path("/orders?user={params.id}&limit=5")
///     .pass_header(http::header::AUTHORIZATION)
///     .timeout(Duration::from_millis(300))
///     .required(false)
///     .pick("data")
///     .allow(["id", "total"])
///     .rename("total", "amount");
/// assert_eq!(call.name(), "orders");
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct Call {
    pub(crate) name: String,
    pub(crate) target: String,
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) pass_headers: Vec<HeaderName>,
    pub(crate) set_headers: Vec<(HeaderName, String)>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) required: bool,
    pub(crate) group: Option<String>,
    pub(crate) top_level: bool,
    pub(crate) pick: Option<String>,
    pub(crate) allow: Vec<String>,
    pub(crate) deny: Vec<String>,
    pub(crate) rename: Vec<(String, String)>,
}

// === impl Call ===

impl Call {
    /// A call named `name` (ASCII letters, digits, `-` and `_`; it is how
    /// templates, `X-Aggregate-Partial` and problems refer to the call) to
    /// the target registered as `target`.
    pub fn new(name: impl Into<String>, target: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            target: target.into(),
            method: Method::GET,
            path: "/".to_owned(),
            pass_headers: Vec::new(),
            set_headers: Vec::new(),
            timeout: None,
            required: true,
            group: None,
            top_level: false,
            pick: None,
            allow: Vec::new(),
            deny: Vec::new(),
            rename: Vec::new(),
        }
    }

    /// The call's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The method of the upstream request (default `GET`). The request body
    /// is always empty.
    pub fn method(mut self, m: Method) -> Self {
        self.method = m;
        self
    }

    /// The path and optional query, as a template:
    /// `/orders?user={params.id}&limit=5`. Default `/`.
    pub fn path(mut self, template: impl Into<String>) -> Self {
        self.path = template.into();
        self
    }

    /// Copies the header `name` (all its values) from the incoming request
    /// when present.
    pub fn pass_header(mut self, name: HeaderName) -> Self {
        self.pass_headers.push(name);
        self
    }

    /// Sets the header `name` to a template value
    /// (`"Bearer {header.x-token}"`); it replaces a passed header of the same
    /// name and the default `Accept`.
    pub fn set_header(mut self, name: HeaderName, template: impl Into<String>) -> Self {
        self.set_headers.push((name, template.into()));
        self
    }

    /// A timeout for this call, counted from when it gets a concurrency slot.
    /// Default none: only the aggregate's deadline applies.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// Whether the aggregate fails when this call fails (default `true`).
    /// An optional call that fails is left out and reported as partial.
    pub fn required(mut self, yes: bool) -> Self {
        self.required = yes;
        self
    }

    /// The key of the aggregated object the result goes under; default the
    /// call name.
    pub fn group(mut self, key: impl Into<String>) -> Self {
        self.group = Some(key.into());
        self
    }

    /// Deep-merges the result into the top-level object instead of putting
    /// it under its group. A result that is not an object still goes under
    /// the group.
    pub fn merge_top_level(mut self) -> Self {
        self.top_level = true;
        self
    }

    /// Keeps only the value at a dotted path of the response (`data.user`,
    /// `items.0`); a path that does not exist gives `null`.
    pub fn pick(mut self, json_path: impl Into<String>) -> Self {
        self.pick = Some(json_path.into());
        self
    }

    /// Keeps only these fields (dotted paths) of the picked value, or of
    /// each object element when it is an array. Calling it again adds
    /// fields.
    pub fn allow(mut self, fields: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.allow.extend(fields.into_iter().map(Into::into));
        self
    }

    /// Removes these fields (dotted paths), after `allow`.
    pub fn deny(mut self, fields: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.deny.extend(fields.into_iter().map(Into::into));
        self
    }

    /// Moves the field at `from` to `to` (dotted paths), after `allow` and
    /// `deny`; renames apply in the order given.
    pub fn rename(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        self.rename.push((from.into(), to.into()));
        self
    }
}
