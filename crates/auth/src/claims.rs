//! Reading identity fields out of a claim set (JWT claims or an
//! introspection answer).

use serde_json::{Map, Value};

/// A string claim.
pub(crate) fn string(claims: &Map<String, Value>, name: &str) -> Option<String> {
    claims.get(name).and_then(Value::as_str).map(str::to_owned)
}

/// The first string claim of `names` that is present.
pub(crate) fn first_string(claims: &Map<String, Value>, names: &[String]) -> Option<String> {
    names.iter().find_map(|n| string(claims, n))
}

/// Granted scopes: `scope` (a space-separated string, RFC 8693 §4.2 and
/// RFC 9068) or `scp` (an array or a string, as Azure AD and Okta send).
pub(crate) fn scopes(claims: &Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    for name in ["scope", "scp"] {
        match claims.get(name) {
            Some(Value::String(s)) => out.extend(s.split_whitespace().map(str::to_owned)),
            Some(Value::Array(a)) => {
                out.extend(a.iter().filter_map(Value::as_str).map(str::to_owned));
            }
            _ => {}
        }
    }
    out.dedup();
    out
}

/// A claim by dotted path (`org.id`), or a top-level claim whose name has
/// dots in it (`https://example.com/roles`).
pub(crate) fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut v = claims.get(parts.next()?)?;
    for p in parts {
        v = v.get(p)?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scope_forms() {
        let c = json!({"scope": "read write", "scp": ["admin"]});
        let c = c.as_object().unwrap();
        assert_eq!(scopes(c), ["read", "write", "admin"]);
    }

    #[test]
    fn dotted() {
        let c = json!({"org": {"id": 7}, "https://x.io/roles": ["a"]});
        let c = c.as_object().unwrap();
        assert_eq!(lookup(c, "org.id"), Some(&json!(7)));
        assert_eq!(lookup(c, "https://x.io/roles"), Some(&json!(["a"])));
        assert_eq!(lookup(c, "org.nope"), None);
    }
}
