//! Path templates (`/users/{id}`, `/files/{*rest}`, prefixes), parsed once at
//! build time into the segments the trie is made of.

use std::sync::Arc;

use crate::error::{BuildErrorKind, PathError};
use crate::normalize::canonicalize_into;

/// A compiled path matcher: segments from the root, then how it ends.
#[derive(Clone, Debug)]
pub(crate) struct PathPattern {
    pub(crate) segments: Vec<Segment>,
    pub(crate) tail: Tail,
    /// Parameter names in template order; a catch-all is last.
    pub(crate) params: Vec<Arc<str>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    /// A literal segment in canonical form; `""` is a trailing slash.
    Static(Box<str>),
    /// `{name}`: one non-empty segment.
    Param,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tail {
    /// The path ends where the template ends.
    Exact,
    /// `{*name}`: zero or more further segments, captured.
    CatchAll,
    /// A prefix ending in `/`: at least one further segment, possibly empty,
    /// so `/users/` matches `/users/` and `/users/42` but not `/users`.
    PrefixSome,
    /// A prefix not ending in `/`: zero or more further segments, so
    /// `/users` matches `/users` and `/users/42` but never `/usersx`.
    PrefixAny,
}

enum Piece<'a> {
    Static(String),
    Param(&'a str),
    CatchAll(&'a str),
}

// === impl PathPattern ===

impl PathPattern {
    /// `path_exact` / `path_template`.
    pub(crate) fn exact(template: &str) -> Result<Self, BuildErrorKind> {
        let pieces = parse(template).map_err(|reason| invalid(template, reason))?;
        let mut pattern = Self {
            segments: Vec::with_capacity(pieces.len()),
            tail: Tail::Exact,
            params: Vec::new(),
        };
        for piece in pieces {
            match piece {
                Piece::Static(s) => pattern.segments.push(Segment::Static(s.into())),
                Piece::Param(name) => {
                    pattern.segments.push(Segment::Param);
                    pattern.params.push(name.into());
                }
                Piece::CatchAll(name) => {
                    pattern.tail = Tail::CatchAll;
                    pattern.params.push(name.into());
                }
            }
        }
        Ok(pattern)
    }

    /// `path_prefix`.
    pub(crate) fn prefix(template: &str) -> Result<Self, BuildErrorKind> {
        let mut pattern = Self::exact(template)?;
        if pattern.tail == Tail::CatchAll {
            return Err(invalid(
                template,
                "a prefix cannot contain a catch-all; use path_template instead",
            ));
        }
        pattern.tail = if pattern.segments.last() == Some(&Segment::Static("".into())) {
            pattern.segments.pop();
            Tail::PrefixSome
        } else {
            Tail::PrefixAny
        };
        Ok(pattern)
    }

    /// A route without a path matcher: the prefix `/`, which matches every path.
    pub(crate) fn any() -> Self {
        Self {
            segments: Vec::new(),
            tail: Tail::PrefixSome,
            params: Vec::new(),
        }
    }

    pub(crate) fn is_prefix(&self) -> bool {
        matches!(self.tail, Tail::PrefixSome | Tail::PrefixAny)
    }

    /// The path part of the precedence rank: compared left to right, lower
    /// is more specific. A static segment beats a parameter, which beats the
    /// end of an exact template, which beats a catch-all or a prefix ending
    /// in `/`, which beats a prefix without a trailing slash. Two patterns
    /// that match the same path never differ in a way this order leaves
    /// ambiguous, except catch-all versus `/`-prefix, left to later rules.
    pub(crate) fn rank_key(&self) -> Vec<u8> {
        let mut key: Vec<u8> = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Static(_) => 0,
                Segment::Param => 1,
            })
            .collect();
        key.push(match self.tail {
            Tail::Exact => 2,
            Tail::CatchAll | Tail::PrefixSome => 3,
            Tail::PrefixAny => 4,
        });
        key
    }
}

fn invalid(template: &str, reason: &'static str) -> BuildErrorKind {
    BuildErrorKind::InvalidTemplate {
        template: template.to_owned(),
        reason,
    }
}

fn parse(template: &str) -> Result<Vec<Piece<'_>>, &'static str> {
    let Some(rest) = template.strip_prefix('/') else {
        return Err("a template starts with `/`");
    };
    let raw: Vec<&str> = rest.split('/').collect();
    let count = raw.len();
    let mut pieces = Vec::with_capacity(count);
    let mut names: Vec<&str> = Vec::new();
    for (i, piece) in raw.into_iter().enumerate() {
        let last = i + 1 == count;
        let braced = piece.strip_prefix('{').and_then(|p| p.strip_suffix('}'));
        if let Some(inner) = braced {
            let (name, catch_all) = match inner.strip_prefix('*') {
                Some(name) => (name, true),
                None => (inner, false),
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err("a parameter name is made of letters, digits and `_`");
            }
            if names.contains(&name) {
                return Err("a parameter name is used twice");
            }
            names.push(name);
            if catch_all {
                if !last {
                    return Err("a catch-all `{*name}` must be the last segment");
                }
                pieces.push(Piece::CatchAll(name));
            } else {
                pieces.push(Piece::Param(name));
            }
            continue;
        }
        if piece.contains(['{', '}']) {
            return Err("a parameter must be a whole segment, as in `/files/{name}`");
        }
        if piece.is_empty() && !last {
            return Err("empty segment (`//`): requests are normalised, it would never match");
        }
        if piece == "." || piece == ".." {
            return Err("dot segment: requests are normalised, it would never match");
        }
        let mut canonical = String::with_capacity(piece.len());
        canonicalize_into(piece, &mut canonical).map_err(|e| match e {
            PathError::EncodedSlash | PathError::EncodedBackslash | PathError::Backslash => {
                "encoded slash or backslash: such requests are refused"
            }
            PathError::Nul => "NUL byte: such requests are refused",
            PathError::InvalidEscape | PathError::NotAbsolute => "invalid percent-encoding",
            PathError::DotSegmentParams => "dot segment with parameters: such requests are refused",
        })?;
        // `%2e%2e` would decode to a dot segment, which requests never contain.
        if canonical == "." || canonical == ".." {
            return Err("dot segment: requests are normalised, it would never match");
        }
        pieces.push(Piece::Static(canonical));
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(r: Result<PathPattern, BuildErrorKind>) -> &'static str {
        match r {
            Err(BuildErrorKind::InvalidTemplate { reason, .. }) => reason,
            other => panic!("expected an invalid template, got {other:?}"),
        }
    }

    #[test]
    fn exact_templates() {
        let p = PathPattern::exact("/users/{id}/posts/{post_id}").unwrap();
        assert_eq!(
            p.segments,
            [
                Segment::Static("users".into()),
                Segment::Param,
                Segment::Static("posts".into()),
                Segment::Param
            ]
        );
        assert_eq!(p.tail, Tail::Exact);
        assert_eq!(p.params, [Arc::from("id"), Arc::from("post_id")]);

        let root = PathPattern::exact("/").unwrap();
        assert_eq!(root.segments, [Segment::Static("".into())]);

        let files = PathPattern::exact("/files/{*rest}").unwrap();
        assert_eq!(files.segments, [Segment::Static("files".into())]);
        assert_eq!(files.tail, Tail::CatchAll);
        assert_eq!(files.params, [Arc::from("rest")]);
    }

    #[test]
    fn static_segments_are_canonical() {
        let p = PathPattern::exact("/caf%c3%a9/%7Euser/a b").unwrap();
        assert_eq!(
            p.segments,
            [
                Segment::Static("caf%C3%A9".into()),
                Segment::Static("~user".into()),
                Segment::Static("a%20b".into())
            ]
        );
    }

    #[test]
    fn prefixes() {
        let p = PathPattern::prefix("/users/").unwrap();
        assert_eq!(p.segments, [Segment::Static("users".into())]);
        assert_eq!(p.tail, Tail::PrefixSome);
        let p = PathPattern::prefix("/users").unwrap();
        assert_eq!(p.tail, Tail::PrefixAny);
        let p = PathPattern::prefix("/").unwrap();
        assert!(p.segments.is_empty());
        assert_eq!(p.tail, Tail::PrefixSome);
        let p = PathPattern::prefix("/tenants/{t}/").unwrap();
        assert_eq!(p.segments[1], Segment::Param);
        assert_eq!(p.params, [Arc::from("t")]);
    }

    #[test]
    fn malformed_templates() {
        assert!(reason(PathPattern::exact("users")).contains("starts with"));
        assert!(reason(PathPattern::exact("/files/{*rest}/x")).contains("last segment"));
        assert!(reason(PathPattern::exact("/a/{id}/{id}")).contains("twice"));
        assert!(reason(PathPattern::exact("/a/{}")).contains("parameter name"));
        assert!(reason(PathPattern::exact("/a/{i-d}")).contains("parameter name"));
        assert!(reason(PathPattern::exact("/a/file.{ext}")).contains("whole segment"));
        assert!(reason(PathPattern::exact("/a/{id")).contains("whole segment"));
        assert!(reason(PathPattern::exact("/a//b")).contains("empty segment"));
        assert!(reason(PathPattern::exact("/a/../b")).contains("dot segment"));
        assert!(reason(PathPattern::exact("/a/%2e%2E/b")).contains("dot segment"));
        assert!(reason(PathPattern::exact("/a%2fb")).contains("slash"));
        assert!(reason(PathPattern::exact("/a%zz")).contains("percent"));
        assert!(reason(PathPattern::prefix("/files/{*rest}")).contains("catch-all"));
    }

    #[test]
    fn rank_keys_order_specificity() {
        let key = |p: Result<PathPattern, BuildErrorKind>| p.unwrap().rank_key();
        // Each one beats the next on a path both match.
        let ordered = [
            key(PathPattern::exact("/users/42")),
            key(PathPattern::exact("/users/{id}")),
            key(PathPattern::exact("/users/{*rest}")),
            key(PathPattern::prefix("/users")),
            key(PathPattern::prefix("/{any}/")),
        ];
        for pair in ordered.windows(2) {
            assert!(pair[0] < pair[1], "{pair:?}");
        }
        assert!(key(PathPattern::exact("/users")) < key(PathPattern::prefix("/users")));
        assert!(key(PathPattern::prefix("/users/")) < key(PathPattern::prefix("/users")));
        assert!(key(PathPattern::prefix("/users/admin/")) < key(PathPattern::prefix("/users/")));
    }
}
