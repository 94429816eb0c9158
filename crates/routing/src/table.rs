//! The compiled route table: a segment trie over the path templates, the
//! per-route host, method, header and query predicates, and a precedence
//! rank computed once at build time. No tower here.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use http::{HeaderMap, Method};

use crate::error::{BuildError, BuildErrorKind};
use crate::matchers::{
    HeaderMatcher, HostPattern, QueryMatcher, QueryPairs, normalize_host, parse_query,
};
use crate::percent::decode_lossy;
use crate::rewrite::{Rewrite, join_remainder};
use crate::route::{PathSpec, Route};
use crate::template::{PathPattern, Segment, Tail};

#[cfg(test)]
mod tests;

/// A compiled route table, usable without tower: give it a request's
/// method, host, normalised path, headers and query, get back which route
/// matches.
///
/// Paths are compiled into a segment trie (static children in a map, one
/// parameter child, catch-all and prefix ends), so a lookup walks the trie
/// once instead of trying every route. The walk backtracks through static,
/// parameter and catch-all branches and considers every route whose path
/// matches; the other constraints filter those, and the survivor with the
/// best precedence rank (computed at build time, see the
/// [crate docs](crate#precedence)) wins.
///
/// ```
/// use http::{HeaderMap, Method};
/// use towergate_routing::{Outcome, Route, RouteTable};
///
/// let table = RouteTable::new([
///     Route::new("user").method(Method::GET).path_template("/users/{id}"),
///     Route::new("users").path_prefix("/users/"),
/// ])
/// .unwrap();
/// let headers = HeaderMap::new();
///
/// match table.find(&Method::GET, None, "/users/42", &headers, None) {
///     Outcome::Matched { index, params, .. } => {
///         assert_eq!(table.name(index), Some("user"));
///         assert_eq!(params[0].1, "42");
///     }
///     other => panic!("{other:?}"),
/// }
/// // The specific route does not allow DELETE, so the prefix route answers.
/// let found = table.find(&Method::DELETE, None, "/users/42", &headers, None);
/// assert!(matches!(found, Outcome::Matched { index: 1, .. }));
/// ```
pub struct RouteTable {
    routes: Vec<CompiledRoute>,
    /// One entry per (route, host pattern), in rank order: a route with
    /// several hosts ranks differently depending on which host matched.
    entries: Vec<Entry>,
    root: Node,
}

/// What [`RouteTable::find`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A route matches.
    Matched {
        /// The route's position in the table, in declaration order.
        index: usize,
        /// Captured path parameters in template order, percent-decoded
        /// (invalid UTF-8 replaced). A catch-all captures the rest of the
        /// path, slashes included.
        params: Vec<(Arc<str>, String)>,
        /// The path to forward, when the route strips its prefix or rewrites
        /// the path; `None` means "the path as given". Always starts with `/`.
        upstream_path: Option<String>,
    },
    /// Some routes match everything but the method.
    MethodNotAllowed {
        /// The union of their methods, sorted, `HEAD` included with `GET`.
        allow: Vec<Method>,
    },
    /// No route matches.
    NotFound,
}

struct CompiledRoute {
    name: Arc<str>,
    priority: i32,
    /// `None` allows every method; `GET` brings `HEAD` along.
    methods: Option<Box<[Method]>>,
    headers: Box<[HeaderMatcher]>,
    query: Box<[QueryMatcher]>,
    pattern: PathPattern,
    forward: Forward,
}

enum Forward {
    Unchanged,
    StripPrefix,
    Rewrite(Rewrite),
}

struct Entry {
    route: usize,
    host: Option<HostPattern>,
}

/// Everything a route is ranked by, most significant first. Lower wins.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct RankKey {
    priority: Reverse<i32>,
    host: (u8, Reverse<usize>),
    path: Vec<u8>,
    any_method: bool,
    headers: Reverse<usize>,
    query: Reverse<usize>,
    declared: usize,
    host_index: usize,
}

/// A trie node. Leaf lists hold entry ids in rank order, so a lookup can
/// stop scanning a list as soon as it reaches a worse rank than its best.
#[derive(Default)]
struct Node {
    statics: HashMap<Box<str>, Node, BuildHasherDefault<Fnv1a>>,
    param: Option<Box<Node>>,
    /// Templates that end here.
    exact: Vec<u32>,
    /// Catch-alls and prefixes without a trailing `/`: zero or more
    /// further segments.
    rest_any: Vec<u32>,
    /// Prefixes ending in `/`: at least one further segment.
    rest_some: Vec<u32>,
}

/// FNV-1a, for the trie's static segments: a lookup hashes one or two short
/// segments per request, where SipHash's set-up dominates. Flooding is no
/// concern here: the keys are the configuration's segments, requests only
/// look them up, so a crafted segment can at worst land in one bucket of
/// configured keys.
struct Fnv1a(u64);

/// The best candidate found so far during a lookup.
struct Best {
    entry: u32,
    /// Where the unmatched remainder of the path starts.
    remainder: usize,
}

// === impl RouteTable ===

impl RouteTable {
    /// Compiles `routes`, in declaration order (which is also the last
    /// tie-breaker of precedence).
    ///
    /// Every validation happens here: names (non-empty, unique), path
    /// templates, host patterns, header names and values, regexes, rewrite
    /// templates and their parameters, strip-prefix on a non-prefix route.
    pub fn new(routes: impl IntoIterator<Item = Route>) -> Result<Self, BuildError> {
        let mut names = HashSet::new();
        let mut compiled = Vec::new();
        let mut hosts = Vec::new();
        for route in routes {
            let fail = |kind| BuildError::new(&route.name, kind);
            if route.name.is_empty() {
                return Err(fail(BuildErrorKind::EmptyName));
            }
            if !names.insert(route.name.clone()) {
                return Err(fail(BuildErrorKind::DuplicateName));
            }
            let route_hosts = route
                .hosts
                .iter()
                .map(|h| HostPattern::parse(h))
                .collect::<Result<Vec<_>, _>>()
                .map_err(fail)?;
            compiled.push(CompiledRoute::compile(&route).map_err(fail)?);
            hosts.push(route_hosts);
        }

        let mut keyed: Vec<(RankKey, Entry)> = Vec::new();
        for (index, (route, route_hosts)) in compiled.iter().zip(hosts).enumerate() {
            let mut push = |host: Option<HostPattern>, host_index| {
                let key = route.rank_key(host.as_ref(), index, host_index);
                keyed.push((key, Entry { route: index, host }));
            };
            if route_hosts.is_empty() {
                push(None, 0);
            }
            for (host_index, host) in route_hosts.into_iter().enumerate() {
                push(Some(host), host_index);
            }
        }
        // The rank is the position in this order, so a lookup only compares
        // entry ids.
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        let entries: Vec<Entry> = keyed.into_iter().map(|(_, e)| e).collect();

        let mut root = Node::default();
        for (id, entry) in entries.iter().enumerate() {
            if let Some(route) = compiled.get(entry.route) {
                // More than u32::MAX entries cannot be held in memory anyway.
                root.insert(&route.pattern, u32::try_from(id).unwrap_or(u32::MAX));
            }
        }
        Ok(Self {
            routes: compiled,
            entries,
            root,
        })
    }

    /// Finds the route for a request.
    ///
    /// - `host`: the `Host` header or the URI authority, as received (case,
    ///   port and a trailing dot are ignored); `None` matches only routes
    ///   without a host.
    /// - `path`: the path *after* [`normalize_path`](crate::normalize_path);
    ///   a path not starting with `/` matches nothing.
    /// - `query`: the raw query string, without `?`.
    pub fn find(
        &self,
        method: &Method,
        host: Option<&str>,
        path: &str,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Outcome {
        if !path.starts_with('/') {
            return Outcome::NotFound;
        }
        // Normalized only if some candidate has a host pattern: most
        // routes have none.
        let mut normalized: Option<Option<Cow<'_, str>>> = None;
        let mut query_pairs: Option<QueryPairs<'_>> = None;
        let mut best: Option<Best> = None;
        let mut best_spans: Vec<(usize, usize)> = Vec::new();
        let mut allow: Vec<Method> = Vec::new();

        let mut visit = |ids: &[u32], spans: &[(usize, usize)], remainder: usize| {
            for &id in ids {
                if best.as_ref().is_some_and(|b| b.entry <= id) {
                    // Lists are in rank order: nothing further can win.
                    break;
                }
                let Some(entry) = self.entries.get(id as usize) else {
                    continue;
                };
                let Some(route) = self.routes.get(entry.route) else {
                    continue;
                };
                if let Some(pattern) = &entry.host {
                    let host = normalized.get_or_insert_with(|| host.map(normalize_host));
                    if !host.as_deref().is_some_and(|h| pattern.matches(h)) {
                        continue;
                    }
                }
                if !route.headers.iter().all(|m| m.matches(headers)) {
                    continue;
                }
                if !route.query.is_empty() {
                    let pairs = query_pairs.get_or_insert_with(|| parse_query(query.unwrap_or("")));
                    if !route.query.iter().all(|m| m.matches(pairs)) {
                        continue;
                    }
                }
                match &route.methods {
                    Some(methods) if !methods.contains(method) => {
                        allow.extend(methods.iter().cloned());
                    }
                    _ => {
                        best = Some(Best {
                            entry: id,
                            remainder,
                        });
                        best_spans.clear();
                        best_spans.extend_from_slice(spans);
                    }
                }
            }
        };
        let mut spans = Vec::new();
        self.root.walk(path, 1, &mut spans, &mut visit);

        match best {
            Some(best) => self.matched(best, best_spans, path),
            None if !allow.is_empty() => {
                allow.sort_by(|a, b| a.as_str().cmp(b.as_str()));
                allow.dedup();
                Outcome::MethodNotAllowed { allow }
            }
            None => Outcome::NotFound,
        }
    }

    fn matched(&self, best: Best, mut spans: Vec<(usize, usize)>, path: &str) -> Outcome {
        let Some(index) = self.entries.get(best.entry as usize).map(|e| e.route) else {
            return Outcome::NotFound;
        };
        let Some(route) = self.routes.get(index) else {
            return Outcome::NotFound;
        };
        if route.pattern.tail == Tail::CatchAll {
            spans.push((best.remainder.min(path.len()), path.len()));
        }
        let params = route
            .pattern
            .params
            .iter()
            .zip(&spans)
            .map(|(name, &(start, end))| {
                let raw = path.get(start..end).unwrap_or("");
                (name.clone(), decode_lossy(raw, false).into_owned())
            })
            .collect();
        let upstream_path = match &route.forward {
            Forward::Unchanged => None,
            Forward::StripPrefix => Some(join_remainder("/", path, best.remainder)),
            Forward::Rewrite(rewrite) => {
                let base = rewrite.expand(path, &spans);
                Some(if route.pattern.is_prefix() {
                    join_remainder(&base, path, best.remainder)
                } else {
                    base
                })
            }
        };
        Outcome::Matched {
            index,
            params,
            upstream_path,
        }
    }

    /// The name of the route at `index` (declaration order).
    pub fn name(&self, index: usize) -> Option<&str> {
        self.routes.get(index).map(|r| &*r.name)
    }

    pub(crate) fn name_arc(&self, index: usize) -> Option<&Arc<str>> {
        self.routes.get(index).map(|r| &r.name)
    }

    /// The route names, in declaration order.
    pub fn names(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.routes.iter().map(|r| &*r.name)
    }

    /// How many routes the table holds.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether the table has no routes (and so answers 404 to everything).
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

impl fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteTable")
            .field("routes", &self.names().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

// === impl CompiledRoute ===

impl CompiledRoute {
    fn compile(route: &Route) -> Result<Self, BuildErrorKind> {
        let pattern = match route.paths.as_slice() {
            [] => PathPattern::any(),
            [PathSpec::Exact(t)] => PathPattern::exact(t)?,
            [PathSpec::Prefix(t)] => PathPattern::prefix(t)?,
            _ => return Err(BuildErrorKind::MultiplePaths),
        };
        let methods = (!route.methods.is_empty()).then(|| {
            let mut methods = route.methods.clone();
            if methods.contains(&Method::GET) && !methods.contains(&Method::HEAD) {
                methods.push(Method::HEAD);
            }
            methods.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            methods.dedup();
            methods.into_boxed_slice()
        });
        let headers = route
            .headers
            .iter()
            .map(|(name, spec)| HeaderMatcher::compile(name, spec))
            .collect::<Result<_, _>>()?;
        let query = route
            .query
            .iter()
            .map(|(name, spec)| QueryMatcher::compile(name, spec))
            .collect::<Result<_, _>>()?;
        let explicit_prefix = matches!(route.paths.as_slice(), [PathSpec::Prefix(_)]);
        let forward = match (route.strip_prefix, &route.rewrite) {
            (true, Some(_)) => return Err(BuildErrorKind::StripPrefixAndRewrite),
            (true, None) if !explicit_prefix => {
                return Err(BuildErrorKind::StripPrefixWithoutPrefix);
            }
            (true, None) => Forward::StripPrefix,
            (false, Some(template)) => Forward::Rewrite(Rewrite::parse(template, &pattern.params)?),
            (false, None) => Forward::Unchanged,
        };
        Ok(Self {
            name: route.name.clone(),
            priority: route.priority,
            methods,
            headers,
            query,
            pattern,
            forward,
        })
    }

    fn rank_key(&self, host: Option<&HostPattern>, declared: usize, host_index: usize) -> RankKey {
        RankKey {
            priority: Reverse(self.priority),
            host: HostPattern::rank_key(host),
            path: self.pattern.rank_key(),
            any_method: self.methods.is_none(),
            headers: Reverse(self.headers.len()),
            query: Reverse(self.query.len()),
            declared,
            host_index,
        }
    }
}

// === impl Fnv1a ===

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

// === impl Node ===

impl Node {
    fn insert(&mut self, pattern: &PathPattern, id: u32) {
        let mut node = self;
        for segment in &pattern.segments {
            node = match segment {
                Segment::Static(s) => node.statics.entry(s.clone()).or_default(),
                Segment::Param => node.param.get_or_insert_with(Box::default),
            };
        }
        match pattern.tail {
            Tail::Exact => node.exact.push(id),
            Tail::CatchAll | Tail::PrefixAny => node.rest_any.push(id),
            Tail::PrefixSome => node.rest_some.push(id),
        }
    }

    /// Visits every leaf list whose path matches `path` from byte `pos` (the
    /// start of the next segment; past the end when no segment is left),
    /// with the spans captured by `{param}` segments on the way.
    ///
    /// Every branch is tried, not only the most specific one, so that a
    /// route whose other constraints fail falls back to a less specific one.
    /// The walk only follows existing nodes, so it is bounded by the size of
    /// the trie, not by the number of segments in the request.
    fn walk<F>(&self, path: &str, pos: usize, spans: &mut Vec<(usize, usize)>, visit: &mut F)
    where
        F: FnMut(&[u32], &[(usize, usize)], usize),
    {
        if !self.rest_any.is_empty() {
            visit(&self.rest_any, spans, pos);
        }
        let Some(rest) = path.get(pos..) else {
            // No segment left: only templates that end here match.
            if !self.exact.is_empty() {
                visit(&self.exact, spans, pos);
            }
            return;
        };
        if !self.rest_some.is_empty() {
            visit(&self.rest_some, spans, pos);
        }
        // Segments are short: a plain loop beats `str::find`'s memchr set-up.
        let (segment, end) = match rest.bytes().position(|b| b == b'/') {
            Some(i) => (&rest[..i], pos + i),
            None => (rest, path.len()),
        };
        if let Some(child) = self.statics.get(segment) {
            child.walk(path, end + 1, spans, visit);
        }
        if let Some(child) = &self.param
            && !segment.is_empty()
        {
            spans.push((pos, end));
            child.walk(path, end + 1, spans, visit);
            spans.pop();
        }
    }
}
