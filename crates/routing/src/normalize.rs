//! Path normalisation: the one canonical form the router matches on and the
//! upstream receives, so that both agree on which resource a path names.

use std::borrow::Cow;

use crate::error::PathError;
use crate::percent::{hex_value, is_pchar, is_unreserved, push_escaped};

/// Normalises a request path (the path component only, without the query).
///
/// The router matches on the result and forwards the result, so an upstream
/// never sees a path the router read differently:
///
/// - escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded,
///   other escapes are kept with upper-case hex digits, and characters that
///   may not appear raw in a path (space, non-ASCII, ...) are escaped;
/// - `%2F`, `%5C`, `%00`, a raw NUL, a raw `\` and malformed escapes are
///   refused with a [`PathError`]: upstreams disagree on what they mean;
/// - repeated slashes collapse into one;
/// - `.` and `..` segments are removed as RFC 3986 section 5.2.4 does,
///   *after* decoding, so `/%2e%2e/admin` is `/admin`, and `..` never climbs
///   above the root; one with `;` parameters (`..;`, `.;x`), which servlet
///   containers resolve as a dot segment, is refused;
/// - a trailing `/` is kept; the empty path becomes `/`.
///
/// A path that is already canonical is borrowed, not copied.
///
/// ```
/// use towergate_routing::{normalize_path, PathError};
///
/// assert_eq!(normalize_path("/public/%2e%2e/admin").unwrap(), "/admin");
/// assert_eq!(normalize_path("/a//b/./c/").unwrap(), "/a/b/c/");
/// assert_eq!(normalize_path("/caf%c3%a9").unwrap(), "/caf%C3%A9");
/// assert_eq!(normalize_path("/a%2fb"), Err(PathError::EncodedSlash));
/// ```
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let Some(rest) = raw.strip_prefix('/') else {
        return if raw.is_empty() {
            Ok(Cow::Borrowed("/"))
        } else {
            Err(PathError::NotAbsolute)
        };
    };
    if is_canonical(rest) {
        return Ok(Cow::Borrowed(raw));
    }
    let mut decoded = String::with_capacity(raw.len() + 8);
    canonicalize_into(raw, &mut decoded)?;
    if decoded
        .split('/')
        .any(|seg| is_dot_with_params(seg.as_bytes()))
    {
        return Err(PathError::DotSegmentParams);
    }
    Ok(Cow::Owned(remove_dot_segments(&decoded)))
}

/// Decodes unreserved escapes, upper-cases the others, escapes what may not
/// appear raw, and refuses what [`normalize_path`] refuses. Slashes are
/// copied as they are. Templates use it for their static segments so that
/// they are written in the same form as the paths they are compared with.
pub(crate) fn canonicalize_into(s: &str, out: &mut String) -> Result<(), PathError> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex_value);
                let lo = bytes.get(i + 2).copied().and_then(hex_value);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::InvalidEscape);
                };
                match hi << 4 | lo {
                    b'/' => return Err(PathError::EncodedSlash),
                    b'\\' => return Err(PathError::EncodedBackslash),
                    0 => return Err(PathError::Nul),
                    v if is_unreserved(v) => out.push(char::from(v)),
                    v => push_escaped(out, v),
                }
                i += 3;
                continue;
            }
            0 => return Err(PathError::Nul),
            b'\\' => return Err(PathError::Backslash),
            b'/' => out.push('/'),
            b if is_pchar(b) => out.push(char::from(b)),
            b => push_escaped(out, b),
        }
        i += 1;
    }
    Ok(())
}

/// Whether the path after its leading `/` is already in canonical form, so
/// the common case costs one scan and no allocation.
fn is_canonical(rest: &str) -> bool {
    // By hand rather than `split('/')`: paths are short, and a memchr per
    // segment costs more than looking at each byte once.
    let bytes = rest.as_bytes();
    let mut start = 0;
    loop {
        let end = bytes[start..]
            .iter()
            .position(|&b| b == b'/')
            .map_or(bytes.len(), |i| start + i);
        let seg = &bytes[start..end];
        let last = end == bytes.len();
        if (seg.is_empty() && !last) || is_dot(seg) || is_dot_with_params(seg) {
            return false;
        }
        if !is_canonical_segment(seg) {
            return false;
        }
        if last {
            return true;
        }
        start = end + 1;
    }
}

fn is_dot(seg: &[u8]) -> bool {
    seg == b"." || seg == b".."
}

/// `.;…` or `..;…`: a dot segment once a servlet container has dropped
/// its `;` parameters.
fn is_dot_with_params(seg: &[u8]) -> bool {
    seg.iter()
        .position(|&b| b == b';')
        .is_some_and(|semi| is_dot(&seg[..semi]))
}

fn is_canonical_segment(seg: &[u8]) -> bool {
    let upper_hex = |b: Option<&u8>| {
        b.copied()
            .filter(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b))
            .and_then(hex_value)
    };
    let mut i = 0;
    while let Some(&b) = seg.get(i) {
        if b == b'%' {
            let (Some(hi), Some(lo)) = (upper_hex(seg.get(i + 1)), upper_hex(seg.get(i + 2)))
            else {
                return false;
            };
            let v = hi << 4 | lo;
            if is_unreserved(v) || matches!(v, b'/' | b'\\' | 0) {
                return false;
            }
            i += 3;
        } else if is_pchar(b) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// RFC 3986 5.2.4 on a decoded path that starts with `/`, with empty
/// segments collapsed. A path ending in `/`, `/.` or `/..` keeps a trailing
/// slash, as the RFC's algorithm leaves one.
fn remove_dot_segments(decoded: &str) -> String {
    let rest = decoded.strip_prefix('/').unwrap_or(decoded);
    let mut out: Vec<&str> = Vec::new();
    let mut trailing = false;
    for seg in rest.split('/') {
        match seg {
            "" | "." => trailing = true,
            ".." => {
                out.pop();
                trailing = true;
            }
            s => {
                out.push(s);
                trailing = false;
            }
        }
    }
    let mut path = String::with_capacity(decoded.len());
    for seg in &out {
        path.push('/');
        path.push_str(seg);
    }
    if trailing || path.is_empty() {
        path.push('/');
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        match normalize_path(raw) {
            Ok(p) => p.into_owned(),
            Err(e) => panic!("{raw:?} refused: {e}"),
        }
    }

    #[test]
    fn traversal_is_resolved_after_decoding() {
        assert_eq!(ok("/%2e%2e/admin"), "/admin");
        assert_eq!(ok("/public/%2E%2E/admin"), "/admin");
        assert_eq!(ok("/public/../admin"), "/admin");
        assert_eq!(ok("/public/.%2e/admin/x"), "/admin/x");
        assert_eq!(ok("/public/%2e/x"), "/public/x");
    }

    #[test]
    fn dot_segments_per_rfc_3986() {
        assert_eq!(ok("/a/./b/../c/"), "/a/c/");
        assert_eq!(ok("/.."), "/");
        assert_eq!(ok("/../../x"), "/x");
        assert_eq!(ok("/a/.."), "/");
        assert_eq!(ok("/a/b/.."), "/a/");
        assert_eq!(ok("/a/."), "/a/");
        assert_eq!(ok("/a/b/c/./../../g"), "/a/g");
        assert_eq!(ok("/a/..b/c"), "/a/..b/c", "`..b` is an ordinary segment");
    }

    #[test]
    fn slashes_collapse_and_trailing_slash_is_kept() {
        assert_eq!(ok("/a//b///c"), "/a/b/c");
        assert_eq!(ok("//"), "/");
        assert_eq!(ok("/a//"), "/a/");
        assert_eq!(ok("/users/"), "/users/");
        assert_eq!(ok(""), "/");
        assert_eq!(ok("/"), "/");
    }

    #[test]
    fn only_unreserved_escapes_are_decoded() {
        assert_eq!(ok("/%41bc"), "/Abc");
        assert_eq!(ok("/%7euser/%5f%2D"), "/~user/_-");
        assert_eq!(ok("/caf%c3%a9"), "/caf%C3%A9");
        assert_eq!(ok("/a%20b"), "/a%20b");
        assert_eq!(ok("/a%3fb%25"), "/a%3Fb%25");
        assert_eq!(ok("/%25%32%46"), "/%252F", "decoding happens once");
    }

    #[test]
    fn characters_that_may_not_appear_raw_are_escaped() {
        assert_eq!(ok("/a b"), "/a%20b");
        assert_eq!(ok("/café"), "/caf%C3%A9");
        assert_eq!(ok("/{x}"), "/%7Bx%7D");
        assert_eq!(
            ok("/a:b@c;d=e,f+g!h$i&j'k(l)m*"),
            "/a:b@c;d=e,f+g!h$i&j'k(l)m*"
        );
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        let cases = [
            ("/a%2fb", PathError::EncodedSlash),
            ("/a%2Fb", PathError::EncodedSlash),
            ("/public/..%2fadmin", PathError::EncodedSlash),
            ("/a%5cb", PathError::EncodedBackslash),
            ("/a%5Cb", PathError::EncodedBackslash),
            ("/a\\b", PathError::Backslash),
            ("/a%00", PathError::Nul),
            ("/a\0b", PathError::Nul),
            ("/a%zz", PathError::InvalidEscape),
            ("/a%4", PathError::InvalidEscape),
            ("/a%", PathError::InvalidEscape),
            ("*", PathError::NotAbsolute),
            ("a/b", PathError::NotAbsolute),
            ("/public/..;/admin", PathError::DotSegmentParams),
            ("/public/%2e%2e;x=1/admin", PathError::DotSegmentParams),
            ("/public/%2E.;/admin", PathError::DotSegmentParams),
            ("/a/.;/b", PathError::DotSegmentParams),
            ("/a/..;", PathError::DotSegmentParams),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_path(raw), Err(want), "{raw:?}");
        }
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        for raw in [
            "/",
            "/users/42",
            "/users/",
            "/caf%C3%A9",
            "/a%20b",
            "/a:b@c",
            "/a;x=1/b",
            "/a/...;/b",
            "/a/x..;/b",
        ] {
            assert!(
                matches!(normalize_path(raw), Ok(Cow::Borrowed(p)) if p == raw),
                "{raw:?}"
            );
        }
        for raw in ["/a//b", "/a/./b", "/%41", "/caf%c3%a9", "/a b"] {
            assert!(matches!(normalize_path(raw), Ok(Cow::Owned(_))), "{raw:?}");
        }
    }

    #[test]
    fn normalisation_is_idempotent() {
        let inputs = [
            "/%2e%2e/admin",
            "/a//b///c",
            "/a/./b/../c/",
            "/caf%c3%a9/x%20y/",
            "/a b/ü",
            "/..",
            "/%7e/.%2E/z",
        ];
        for raw in inputs {
            let once = ok(raw);
            assert_eq!(ok(&once), once, "{raw:?}");
            assert!(
                matches!(normalize_path(&once), Ok(Cow::Borrowed(_))),
                "{raw:?}"
            );
        }
    }
}
