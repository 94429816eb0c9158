//! `WWW-Authenticate` challenges (RFC 9110 §11.6.1, RFC 6750 §3).

use http::HeaderValue;

use crate::error::BuildError;

/// Checks that `realm` can be put in a quoted-string as it is: printable
/// ASCII without `"` or `\`, so that challenges never need escaping.
pub(crate) fn check_realm(realm: &str) -> Result<(), BuildError> {
    if realm.bytes().all(is_qdtext) {
        Ok(())
    } else {
        Err(BuildError::new(format!(
            "realm {realm:?} must be printable ASCII without '\"' or '\\'"
        )))
    }
}

fn is_qdtext(b: u8) -> bool {
    (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\'
}

/// `Scheme realm="realm"`.
pub(crate) fn simple(scheme: &str, realm: &str) -> HeaderValue {
    value(format!("{scheme} realm=\"{realm}\""))
}

/// `Bearer realm="...", error="...", error_description="..."`.
///
/// With no `error` when no token was sent (RFC 6750 §3.1).
pub(crate) fn bearer(realm: &str, error: Option<(&str, &str)>) -> HeaderValue {
    match error {
        None => simple("Bearer", realm),
        Some((code, description)) => value(format!(
            "Bearer realm=\"{realm}\", error=\"{code}\", error_description=\"{}\"",
            sanitize(description)
        )),
    }
}

/// `Bearer realm="...", error="insufficient_scope", scope="..."`.
pub(crate) fn insufficient_scope(realm: &str, scope: &str) -> HeaderValue {
    value(format!(
        "Bearer realm=\"{realm}\", error=\"insufficient_scope\", scope=\"{}\"",
        sanitize(scope)
    ))
}

/// Descriptions are fixed strings today; this keeps a future dynamic one
/// from breaking the header.
fn sanitize(s: &str) -> String {
    s.bytes()
        .map(|b| if is_qdtext(b) { b as char } else { '?' })
        .collect()
}

fn value(s: String) -> HeaderValue {
    // Every part was checked or sanitised to visible ASCII above.
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_forms() {
        assert_eq!(bearer("api", None), "Bearer realm=\"api\"");
        assert_eq!(
            bearer("api", Some(("invalid_token", "the token has \"expired\""))),
            "Bearer realm=\"api\", error=\"invalid_token\", error_description=\"the token has ?expired?\""
        );
        assert!(check_realm("my api").is_ok());
        assert!(check_realm("a\"b").is_err());
        assert!(check_realm("a\nb").is_err());
    }
}
