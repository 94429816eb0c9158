//! Templates: `/users/{params.id}/orders?since={query.since}`.
//!
//! Parsing, rendering with percent-encoding by position, and extraction of
//! the calls a template depends on. Pure: no I/O, no tower.

use std::fmt;

/// Where a template variable takes its value from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// `{params.NAME}`: a path parameter of the matched route.
    Params,
    /// `{query.NAME}`: a query parameter of the incoming request, decoded.
    Query,
    /// `{header.NAME}`: a header of the incoming request.
    Header,
    /// `{identity.FIELD}`: a field of the caller's identity.
    Identity,
    /// `{CALL.path}`: a field of an earlier call's response JSON.
    Call(String),
}

/// A `{source.field}` variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Var {
    pub(crate) source: Source,
    /// Everything after the first dot; a dotted JSON path for calls and
    /// identity claims, a lower-case header name for headers.
    pub(crate) field: String,
    /// The variable as written, without braces, for messages.
    pub(crate) text: String,
}

/// How a value is escaped where it is inserted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Position {
    /// Inside the path: a value is one segment, `/` and `?` are escaped.
    Path,
    /// After `?`: `&`, `=`, `+` and `#` are escaped too.
    Query,
    /// A header value: inserted as is (and validated as a header value).
    Header,
}

/// What a template produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An origin-form path with optional query: `/a/{x}?b={y}`.
    Uri,
    /// A header value.
    Header,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Lit(String),
    Var(Var, Position),
}

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Template {
    text: String,
    parts: Vec<Part>,
}

// === impl Template ===

impl Template {
    /// Parses `text`. `{{` and `}}` stand for literal braces. The error is a
    /// human-readable reason.
    pub(crate) fn parse(text: &str, kind: Kind) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut pos = match kind {
            Kind::Uri => Position::Path,
            Kind::Header => Position::Header,
        };
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|&(_, c)| c) == Some('{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek().map(|&(_, c)| c) == Some('}') => {
                    chars.next();
                    lit.push('}');
                }
                '}' => return Err(format!("unmatched `}}` at byte {i}")),
                '{' => {
                    let rest = &text[i + 1..];
                    let end = rest
                        .find(['}', '{'])
                        .filter(|&e| rest.as_bytes()[e] == b'}')
                        .ok_or_else(|| format!("unclosed `{{` at byte {i}"))?;
                    let var = parse_var(&rest[..end])?;
                    // Skip the variable's characters and the closing brace.
                    for _ in 0..rest[..=end].chars().count() {
                        chars.next();
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Var(var, pos));
                }
                '?' if pos == Position::Path => {
                    pos = Position::Query;
                    lit.push(c);
                }
                _ => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        let template = Self {
            text: text.to_owned(),
            parts,
        };
        template.validate(kind)?;
        Ok(template)
    }

    /// Checks that the literal parts form a valid URI or header value, with
    /// every variable replaced by a harmless sample.
    fn validate(&self, kind: Kind) -> Result<(), String> {
        let sample = self
            .render(|_| Ok::<_, ()>("x".to_owned()))
            .map_err(|()| "cannot render".to_owned())?;
        match kind {
            Kind::Uri => {
                if !sample.starts_with('/') {
                    return Err("a path must start with `/`".into());
                }
                if sample.contains('#') {
                    return Err("a path cannot have a fragment".into());
                }
                http::uri::PathAndQuery::try_from(sample.as_str())
                    .map_err(|e| format!("not a valid path and query: {e}"))?;
            }
            Kind::Header => {
                http::HeaderValue::try_from(sample.as_str())
                    .map_err(|_| "not a valid header value".to_owned())?;
            }
        }
        Ok(())
    }

    /// The template as written.
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// The variables, in order.
    pub(crate) fn vars(&self) -> impl Iterator<Item = &Var> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v, _) => Some(v),
            Part::Lit(_) => None,
        })
    }

    /// [`render`](Self::render) for a URI template, where a variable must
    /// not make its path segment climb out of the template's path: a
    /// segment with a variable in it that renders empty, `.`, `..` or
    /// `..;x` fails with `refuse` of its (first) variable.
    /// `/customers/{query.c}/orders` with `c=..` would ask for `/orders`;
    /// `/files/{query.name}.json` with an empty `name` is still one segment.
    pub(crate) fn render_path<E>(
        &self,
        mut resolve: impl FnMut(&Var) -> Result<String, E>,
        refuse: impl Fn(&Var) -> E,
    ) -> Result<String, E> {
        let mut out = String::with_capacity(self.text.len());
        // The current segment: where it starts in `out`, and its first
        // variable. `None` once past the path (after `?`).
        let mut segment: Option<(usize, Option<&Var>)> = Some((0, None));
        let check = |out: &str, segment: Option<(usize, Option<&Var>)>| match segment {
            Some((start, Some(v))) if not_a_segment(&out[start..]) => Err(refuse(v)),
            _ => Ok(()),
        };
        for part in &self.parts {
            match part {
                Part::Lit(s) => {
                    for c in s.chars() {
                        if segment.is_some() && (c == '/' || c == '?') {
                            check(&out, segment)?;
                            segment = (c == '/').then_some((out.len() + 1, None));
                        }
                        out.push(c);
                    }
                }
                Part::Var(v, pos) => {
                    let value = resolve(v)?;
                    // Escaped, a `/` or `\` still reaches an upstream that
                    // decodes `%2F` or `%5C` before routing (nginx's
                    // `proxy_pass` with a URI, Tomcat, Apache with
                    // `AllowEncodedSlashes`) as a separator, and NUL ends
                    // the path in C: the router refuses all three in a
                    // client's path, and a value may not make them.
                    if segment.is_some() && value.contains(['/', '\\', '\0']) {
                        return Err(refuse(v));
                    }
                    if let Some((_, first @ None)) = &mut segment {
                        *first = Some(v);
                    }
                    encode_into(&mut out, &value, *pos);
                }
            }
        }
        check(&out, segment)?;
        Ok(out)
    }

    /// Renders the template, asking `resolve` for each variable's raw value
    /// and escaping it for its position. The first error of `resolve` stops
    /// rendering.
    pub(crate) fn render<E>(
        &self,
        mut resolve: impl FnMut(&Var) -> Result<String, E>,
    ) -> Result<String, E> {
        let mut out = String::with_capacity(self.text.len());
        for part in &self.parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Var(v, pos) => {
                    let value = resolve(v)?;
                    encode_into(&mut out, &value, *pos);
                }
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn parse_var(inner: &str) -> Result<Var, String> {
    let inner_trimmed = inner.trim();
    let Some((prefix, field)) = inner_trimmed.split_once('.') else {
        return Err(format!(
            "variable `{{{inner}}}` needs a source and a field, as in `{{params.id}}`"
        ));
    };
    if prefix.is_empty() || field.is_empty() || field.split('.').any(str::is_empty) {
        return Err(format!("variable `{{{inner}}}` has an empty part"));
    }
    let (source, field) = match prefix {
        "params" => (Source::Params, field.to_owned()),
        "query" => (Source::Query, field.to_owned()),
        "header" => {
            let name = http::HeaderName::try_from(field)
                .map_err(|_| format!("`{field}` is not a valid header name"))?;
            (Source::Header, name.as_str().to_owned())
        }
        "identity" => (Source::Identity, field.to_owned()),
        call => (Source::Call(call.to_owned()), field.to_owned()),
    };
    Ok(Var {
        source,
        field,
        text: inner_trimmed.to_owned(),
    })
}

/// Whether a rendered path segment would not name a resource of its own
/// below the template's: empty (`//`), a dot segment (`.`, `..`, which the
/// upstream resolves), or one once a servlet container drops its `;`
/// parameters (`..;x`).
fn not_a_segment(segment: &str) -> bool {
    let head = segment.split(';').next().unwrap_or(segment);
    segment.is_empty() || head == "." || head == ".."
}

/// Percent-encodes `value` for `pos`, appending to `out`. Unreserved
/// characters (RFC 3986) are kept everywhere; a path segment keeps the
/// sub-delimiters, `:` and `@` but never `/` or `?`; a query component also
/// escapes `&`, `=`, `+` and `#` so that a value cannot start another
/// parameter.
pub(crate) fn encode_into(out: &mut String, value: &str, pos: Position) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    if pos == Position::Header {
        out.push_str(value);
        return;
    }
    for &b in value.as_bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || match pos {
                Position::Path => matches!(
                    b,
                    b'!' | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                        | b':'
                        | b'@'
                ),
                Position::Query => matches!(
                    b,
                    b'!' | b'$' | b'\'' | b'(' | b')' | b'*' | b',' | b';' | b':' | b'@' | b'/'
                ),
                Position::Header => true,
            };
        if keep {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(t: &Template, f: impl Fn(&Var) -> Option<&'static str>) -> Result<String, String> {
        t.render(|v| f(v).map(str::to_owned).ok_or_else(|| v.text.clone()))
    }

    #[test]
    fn parses_sources() {
        let t = Template::parse(
            "/u/{params.id}/{identity.org.id}?q={query.q}&h={header.X-Trace}&c={user.customer_id}",
            Kind::Uri,
        )
        .unwrap();
        let vars: Vec<_> = t
            .vars()
            .map(|v| (v.source.clone(), v.field.as_str()))
            .collect();
        assert_eq!(
            vars,
            vec![
                (Source::Params, "id"),
                (Source::Identity, "org.id"),
                (Source::Query, "q"),
                (Source::Header, "x-trace"),
                (Source::Call("user".into()), "customer_id"),
            ]
        );
    }

    #[test]
    fn renders_with_position_encoding() {
        let t = Template::parse("/users/{params.id}/x?name={query.name}&n=5", Kind::Uri).unwrap();
        let out = render(&t, |v| match v.field.as_str() {
            "id" => Some("a/b c?d"),
            "name" => Some("x&y=z+1 #é/"),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            out,
            "/users/a%2Fb%20c%3Fd/x?name=x%26y%3Dz%2B1%20%23%C3%A9/&n=5"
        );
    }

    #[test]
    fn path_keeps_sub_delims() {
        let mut s = String::new();
        encode_into(&mut s, "a:b@c=d&e+f", Position::Path);
        assert_eq!(s, "a:b@c=d&e+f");
        let mut s = String::new();
        encode_into(&mut s, "a:b@c=d&e+f", Position::Query);
        assert_eq!(s, "a:b@c%3Dd%26e%2Bf");
    }

    #[test]
    fn header_values_are_raw() {
        let t = Template::parse(
            "Bearer {header.authorization-x} for {identity.sub}",
            Kind::Header,
        )
        .unwrap();
        let out = render(&t, |v| match v.field.as_str() {
            "sub" => Some("alice/1"),
            _ => Some("tok en"),
        })
        .unwrap();
        assert_eq!(out, "Bearer tok en for alice/1");
    }

    #[test]
    fn missing_value_stops_rendering() {
        let t = Template::parse("/a/{params.id}/{query.x}", Kind::Uri).unwrap();
        let err = render(&t, |v| (v.source == Source::Params).then_some("1")).unwrap_err();
        assert_eq!(err, "query.x");
    }

    #[test]
    fn escaped_braces() {
        let t = Template::parse("{{literal}} {params.a}", Kind::Header).unwrap();
        assert_eq!(render(&t, |_| Some("v")).unwrap(), "{literal} v");
        assert_eq!(t.vars().count(), 1);
    }

    #[test]
    fn parse_errors() {
        for (text, kind) in [
            ("/a/{params.id", Kind::Uri),
            ("/a/params.id}", Kind::Uri),
            ("/a/{}", Kind::Uri),
            ("/a/{params}", Kind::Uri),
            ("/a/{user.}", Kind::Uri),
            ("/a/{.x}", Kind::Uri),
            ("/a/{user.a..b}", Kind::Uri),
            ("/a/{params.{id}}", Kind::Uri),
            ("a/{params.id}", Kind::Uri),
            ("/a#frag", Kind::Uri),
            ("/a b", Kind::Uri),
            ("/a/{header.bad name}", Kind::Uri),
            ("line\nbreak", Kind::Header),
        ] {
            assert!(
                Template::parse(text, kind).is_err(),
                "{text:?} should not parse"
            );
        }
    }

    #[test]
    fn no_variables() {
        let t = Template::parse("/health?full=1", Kind::Uri).unwrap();
        assert_eq!(t.vars().count(), 0);
        assert_eq!(render(&t, |_| None).unwrap(), "/health?full=1");
        assert_eq!(t.as_str(), "/health?full=1");
    }
}
