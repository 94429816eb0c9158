//! Rewrite templates (`/v2/users/{id}`) and prefix stripping: the path a
//! matched request is forwarded with.

use std::sync::Arc;

use crate::error::BuildErrorKind;
use crate::normalize::canonicalize_into;

/// A compiled rewrite template.
#[derive(Clone, Debug)]
pub(crate) struct Rewrite {
    parts: Vec<Part>,
    /// Upper bound of the literal bytes, to size the output once.
    literal_len: usize,
}

#[derive(Clone, Debug)]
enum Part {
    Literal(Box<str>),
    /// Index into the route's parameters (template order).
    Param(usize),
}

// === impl Rewrite ===

impl Rewrite {
    /// Parses `template` against the parameter names the route's path captures.
    pub(crate) fn parse(template: &str, params: &[Arc<str>]) -> Result<Self, BuildErrorKind> {
        let invalid = |reason| BuildErrorKind::InvalidRewrite {
            template: template.to_owned(),
            reason,
        };
        if !template.starts_with('/') {
            return Err(invalid("a rewrite template starts with `/`"));
        }
        if template.contains(['?', '#']) {
            return Err(invalid(
                "a rewrite sets the path only; the query string is kept",
            ));
        }
        let mut parts = Vec::new();
        let mut literal_len = 0;
        let mut rest = template;
        while !rest.is_empty() {
            let (literal, after) = match rest.find(['{', '}']) {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            if !literal.is_empty() {
                let mut canonical = String::with_capacity(literal.len());
                canonicalize_into(literal, &mut canonical)
                    .map_err(|_| invalid("invalid or ambiguous percent-encoding"))?;
                literal_len += canonical.len();
                parts.push(Part::Literal(canonical.into()));
            }
            if after.is_empty() {
                break;
            }
            let Some(inner) = after.strip_prefix('{') else {
                return Err(invalid("unbalanced `}`"));
            };
            let Some(end) = inner.find('}') else {
                return Err(invalid("unbalanced `{`"));
            };
            let name = &inner[..end];
            let name = name.strip_prefix('*').unwrap_or(name);
            let Some(index) = params.iter().position(|p| &**p == name) else {
                return Err(BuildErrorKind::UnknownRewriteParam {
                    template: template.to_owned(),
                    param: name.to_owned(),
                });
            };
            parts.push(Part::Param(index));
            rest = &inner[end + 1..];
        }
        // The output is forwarded as it is, never normalised again: a `..`
        // there (`%2e%2e` is one, literals being decoded) would climb out of
        // the rewritten path on the upstream, and `..;` would in a servlet
        // container. A parameter stands in as `{`, which no canonical
        // literal holds: what it captures is never a dot segment.
        let mut shape = String::with_capacity(literal_len + parts.len());
        for part in &parts {
            match part {
                Part::Literal(s) => shape.push_str(s),
                Part::Param(_) => shape.push('{'),
            }
        }
        let dot_segment = |seg: &str| {
            let seg = seg.split_once(';').map_or(seg, |(s, _)| s);
            seg == "." || seg == ".."
        };
        if shape.split('/').any(dot_segment) {
            return Err(invalid("a `.` or `..` segment is not allowed"));
        }
        Ok(Self { parts, literal_len })
    }

    /// Fills the template with the raw (still percent-encoded, canonical)
    /// text the parameters captured in `path`, so that an escaped `?` in a
    /// parameter stays escaped in the new path.
    pub(crate) fn expand(&self, path: &str, spans: &[(usize, usize)]) -> String {
        let mut out = String::with_capacity(self.literal_len + path.len());
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Param(i) => {
                    let value = spans
                        .get(*i)
                        .and_then(|&(start, end)| path.get(start..end))
                        .unwrap_or("");
                    out.push_str(value);
                }
            }
        }
        out
    }
}

/// The path a prefix route forwards: `base` (the rewritten prefix, `/` when
/// stripping) followed by what the prefix did not match.
///
/// `remainder` is the byte offset in `path` where the unmatched segments
/// begin; it is past the end when the prefix matched the whole path, as
/// `/users` does on `/users`. The result always starts with `/`.
pub(crate) fn join_remainder(base: &str, path: &str, remainder: usize) -> String {
    // The `/` before the remainder separates it from the prefix; keeping it
    // makes "/users/" minus "/users/" give "/", and "/users/42" give "/42".
    let tail = remainder
        .checked_sub(1)
        .and_then(|slash| path.get(slash..))
        .unwrap_or("");
    let base = if tail.is_empty() {
        base
    } else {
        base.trim_end_matches('/')
    };
    let mut out = String::with_capacity(base.len() + tail.len() + 1);
    out.push_str(base);
    out.push_str(tail);
    if !out.starts_with('/') {
        out.insert(0, '/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(names: &[&str]) -> Vec<Arc<str>> {
        names.iter().map(|n| Arc::from(*n)).collect()
    }

    #[test]
    fn expands_raw_params() {
        let rw = Rewrite::parse("/v2/users/{id}/x", &params(&["id"])).unwrap();
        let path = "/users/a%3Fb";
        assert_eq!(rw.expand(path, &[(7, 12)]), "/v2/users/a%3Fb/x");

        let rw = Rewrite::parse("/static/{*rest}", &params(&["rest"])).unwrap();
        assert_eq!(rw.expand("/files/a/b", &[(7, 10)]), "/static/a/b");
        let rw = Rewrite::parse("/static/{rest}", &params(&["rest"])).unwrap();
        assert_eq!(rw.expand("/files/a/b", &[(7, 10)]), "/static/a/b");
    }

    #[test]
    fn literals_are_canonical() {
        let rw = Rewrite::parse("/caf%c3%a9/%7e{id}", &params(&["id"])).unwrap();
        assert_eq!(rw.expand("/x/1", &[(3, 4)]), "/caf%C3%A9/~1");
    }

    #[test]
    fn invalid_templates() {
        let p = params(&["id"]);
        for (template, want) in [
            ("v2/{id}", "starts with"),
            ("/v2/{id", "unbalanced `{`"),
            ("/v2/id}", "unbalanced `}`"),
            ("/v2?x=1", "query"),
            ("/v2/%2f", "percent"),
            ("/v2/%2e%2e/admin/{id}", "`..` segment"),
            ("/v2/%2E%2e/admin/{id}", "`..` segment"),
            ("/v2/.%2e/{id}", "`..` segment"),
            ("/v2/../{id}", "`..` segment"),
            ("/v2/{id}/..", "`..` segment"),
            ("/v2/{id}/%2e", "`..` segment"),
            ("/v2/..;x/{id}", "`..` segment"),
            ("/./v2", "`..` segment"),
        ] {
            match Rewrite::parse(template, &p) {
                Err(BuildErrorKind::InvalidRewrite { reason, .. }) => {
                    assert!(reason.contains(want), "{template}: {reason}")
                }
                other => panic!("{template}: {other:?}"),
            }
        }
        // Dots that do not make a whole segment are ordinary text.
        for ok in [
            "/v2/.well-known/{id}",
            "/v2/{id}..",
            "/v2/..{id}",
            "/v2/a..b",
        ] {
            assert!(Rewrite::parse(ok, &p).is_ok(), "{ok}");
        }
        assert!(matches!(
            Rewrite::parse("/v2/{user}", &p),
            Err(BuildErrorKind::UnknownRewriteParam { param, .. }) if param == "user"
        ));
    }

    #[test]
    fn joins_the_remainder_of_a_prefix() {
        // strip "/users/" (remainder starts after the slash at 6)
        assert_eq!(join_remainder("/", "/users/42", 7), "/42");
        assert_eq!(join_remainder("/", "/users/", 7), "/");
        assert_eq!(join_remainder("/", "/users/42/", 7), "/42/");
        // strip "/users" from "/users": nothing remains
        assert_eq!(join_remainder("/", "/users", 7), "/");
        // prefix "/" keeps everything
        assert_eq!(join_remainder("/", "/a/b", 1), "/a/b");
        // rewrite the prefix
        assert_eq!(join_remainder("/v2/", "/api/x", 5), "/v2/x");
        assert_eq!(join_remainder("/v2", "/api/x", 5), "/v2/x");
        assert_eq!(join_remainder("/v2/", "/api/", 5), "/v2/");
        assert_eq!(join_remainder("/v2/", "/api", 5), "/v2/");
    }
}
