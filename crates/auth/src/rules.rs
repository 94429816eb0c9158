//! Authorization rules: what an authenticated caller must have to pass.

use std::borrow::Cow;

use http::request::Parts;
use serde_json::Value;
use towergate_core::Identity;

use crate::claims;
use crate::error::{AuthError, reason};

/// A check on an authenticated caller; a refusal is a `403`.
///
/// Implemented by [`Rule`] and by closures
/// `Fn(&Identity, &Parts) -> bool`:
///
/// ```
/// use towergate_auth::{Authorize, Rule};
/// use towergate_core::Identity;
///
/// let only_get = |_: &Identity, req: &http::request::Parts| req.method == http::Method::GET;
/// let (parts, _) = http::Request::post("/").body(()).unwrap().into_parts();
/// assert!(only_get.authorize(&Identity::default(), &parts).is_err());
///
/// let mut id = Identity::default();
/// id.scopes = vec!["read".into()];
/// assert!(Rule::scopes(["read"]).authorize(&id, &parts).is_ok());
/// assert_eq!(
///     Rule::scopes(["read", "write"]).authorize(&id, &parts).unwrap_err().missing_scope(),
///     Some("write")
/// );
/// ```
pub trait Authorize: Send + Sync + 'static {
    /// `Ok` to let the request through, else the refusal (usually
    /// [`AuthError::forbidden`]).
    fn authorize(&self, identity: &Identity, req: &Parts) -> Result<(), AuthError>;
}

/// The built-in rules.
///
/// A claim is named by dotted path (`org.id`); `sub`, `iss`, `consumer`
/// and `method` name the identity's fields, so rules work the same over
/// JWTs, API keys and the other methods.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Rule {
    /// Every one of these scopes is granted.
    Scopes(Vec<String>),
    /// The claim equals the value.
    ClaimEquals {
        /// The claim.
        claim: String,
        /// The value it must have.
        value: Value,
    },
    /// The claim (an array, or a space-separated string) contains the
    /// value.
    ClaimContains {
        /// The claim.
        claim: String,
        /// The element it must contain.
        value: Value,
    },
    /// The claim equals one of the values.
    ClaimOneOf {
        /// The claim.
        claim: String,
        /// The values it may have.
        values: Vec<Value>,
    },
    /// The claim (a list of groups or roles) contains one of these.
    Groups {
        /// The claim, `groups` by default.
        claim: String,
        /// Any one of these groups is enough.
        any_of: Vec<String>,
    },
    /// At least one of the rules holds.
    Any(Vec<Rule>),
}

// === impl Authorize for closures ===

impl<F> Authorize for F
where
    F: Fn(&Identity, &Parts) -> bool + Send + Sync + 'static,
{
    fn authorize(&self, identity: &Identity, req: &Parts) -> Result<(), AuthError> {
        if self(identity, req) {
            Ok(())
        } else {
            Err(AuthError::forbidden(
                reason::NOT_ALLOWED,
                "the caller is not allowed to do this",
            ))
        }
    }
}

// === impl Rule ===

impl Rule {
    /// All of these scopes.
    pub fn scopes<I, S>(scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Rule::Scopes(scopes.into_iter().map(Into::into).collect())
    }

    /// `claim == value`.
    pub fn claim_equals(claim: impl Into<String>, value: impl Into<Value>) -> Self {
        Rule::ClaimEquals {
            claim: claim.into(),
            value: value.into(),
        }
    }

    /// `claim` contains `value`.
    pub fn claim_contains(claim: impl Into<String>, value: impl Into<Value>) -> Self {
        Rule::ClaimContains {
            claim: claim.into(),
            value: value.into(),
        }
    }

    /// `claim` is one of `values`.
    pub fn claim_one_of<I, V>(claim: impl Into<String>, values: I) -> Self
    where
        I: IntoIterator<Item = V>,
        V: Into<Value>,
    {
        Rule::ClaimOneOf {
            claim: claim.into(),
            values: values.into_iter().map(Into::into).collect(),
        }
    }

    /// The `groups` claim contains one of these groups.
    pub fn groups<I, S>(any_of: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::groups_in("groups", any_of)
    }

    /// The claim `claim` (`roles`, `realm_access.roles`, ...) contains one
    /// of these groups.
    pub fn groups_in<I, S>(claim: impl Into<String>, any_of: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Rule::Groups {
            claim: claim.into(),
            any_of: any_of.into_iter().map(Into::into).collect(),
        }
    }

    /// At least one of `rules`.
    pub fn any(rules: impl IntoIterator<Item = Rule>) -> Self {
        Rule::Any(rules.into_iter().collect())
    }

    fn check(&self, id: &Identity) -> Result<(), AuthError> {
        match self {
            Rule::Scopes(wanted) => {
                let missing: Vec<&str> = wanted
                    .iter()
                    .filter(|s| !id.scopes.contains(s))
                    .map(String::as_str)
                    .collect();
                if missing.is_empty() {
                    Ok(())
                } else {
                    let missing = missing.join(" ");
                    Err(AuthError::forbidden(
                        reason::INSUFFICIENT_SCOPE,
                        format!("missing scope: {missing}"),
                    )
                    .with_missing_scope(missing))
                }
            }
            Rule::ClaimEquals { claim, value } => {
                ok_if(field(id, claim).as_deref() == Some(value), claim)
            }
            Rule::ClaimContains { claim, value } => {
                ok_if(field(id, claim).is_some_and(|v| contains(&v, value)), claim)
            }
            Rule::ClaimOneOf { claim, values } => {
                ok_if(field(id, claim).is_some_and(|v| values.contains(&v)), claim)
            }
            Rule::Groups { claim, any_of } => ok_if(
                field(id, claim).is_some_and(|v| {
                    any_of
                        .iter()
                        .any(|g| contains(&v, &Value::String(g.clone())))
                }),
                claim,
            ),
            Rule::Any(rules) => {
                let mut first = None;
                for r in rules {
                    match r.check(id) {
                        Ok(()) => return Ok(()),
                        Err(e) => {
                            first.get_or_insert(e);
                        }
                    }
                }
                Err(first.unwrap_or_else(|| {
                    AuthError::forbidden(reason::NOT_ALLOWED, "no rule allows this caller")
                }))
            }
        }
    }
}

impl Authorize for Rule {
    fn authorize(&self, identity: &Identity, _req: &Parts) -> Result<(), AuthError> {
        self.check(identity)
    }
}

fn ok_if(ok: bool, claim: &str) -> Result<(), AuthError> {
    if ok {
        Ok(())
    } else {
        // The claim's name, never its value: that is the caller's data.
        Err(AuthError::forbidden(
            reason::NOT_ALLOWED,
            format!("the `{claim}` claim does not allow this request"),
        ))
    }
}

/// The identity's field or claim named `name`.
fn field<'a>(id: &'a Identity, name: &str) -> Option<Cow<'a, Value>> {
    let owned = |s: &Option<String>| s.clone().map(|s| Cow::Owned(Value::String(s)));
    match name {
        "sub" | "subject" if id.subject.is_some() => owned(&id.subject),
        "iss" | "issuer" if id.issuer.is_some() => owned(&id.issuer),
        "consumer" => owned(&id.consumer),
        "method" => id.method.map(|m| Cow::Owned(Value::String(m.to_owned()))),
        _ => claims::lookup(&id.claims, name).map(Cow::Borrowed),
    }
}

fn contains(haystack: &Value, needle: &Value) -> bool {
    match (haystack, needle) {
        (Value::Array(a), n) => a.contains(n),
        (Value::String(s), Value::String(n)) => s
            .split(|c: char| c.is_whitespace() || c == ',')
            .any(|w| w == n),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id() -> Identity {
        let mut id = Identity {
            subject: Some("alice".into()),
            consumer: Some("acme".into()),
            scopes: vec!["read".into()],
            ..Identity::default()
        };
        id.claims = json!({
            "org": {"id": 7, "tier": "gold"},
            "groups": ["dev", "ops"],
            "roles": "admin auditor",
        })
        .as_object()
        .unwrap()
        .clone();
        id
    }

    #[test]
    fn rules() {
        let id = id();
        let ok = |r: Rule| r.check(&id).is_ok();
        assert!(ok(Rule::scopes(["read"])));
        assert!(!ok(Rule::scopes(["read", "write"])));
        assert!(ok(Rule::claim_equals("org.id", 7)));
        assert!(!ok(Rule::claim_equals("org.id", "7")));
        assert!(ok(Rule::claim_equals("sub", "alice")));
        assert!(ok(Rule::claim_equals("consumer", "acme")));
        assert!(ok(Rule::claim_contains("groups", "ops")));
        assert!(ok(Rule::claim_contains("roles", "auditor")));
        assert!(!ok(Rule::claim_contains("roles", "audit")));
        assert!(ok(Rule::claim_one_of("org.tier", ["gold", "silver"])));
        assert!(!ok(Rule::claim_one_of("org.tier", ["bronze"])));
        assert!(ok(Rule::groups(["admins", "dev"])));
        assert!(!ok(Rule::groups(["admins"])));
        assert!(ok(Rule::groups_in("roles", ["admin"])));
        assert!(!ok(Rule::claim_equals("missing", 1)));
        assert!(ok(Rule::any([
            Rule::groups(["admins"]),
            Rule::scopes(["read"])
        ])));
        assert!(!ok(Rule::any([])));
    }

    #[test]
    fn scope_refusal_says_what_is_missing() {
        let e = Rule::scopes(["read", "write", "admin"])
            .check(&id())
            .unwrap_err();
        assert_eq!(e.status(), 403);
        assert_eq!(e.reason(), reason::INSUFFICIENT_SCOPE);
        assert_eq!(e.missing_scope(), Some("write admin"));
    }
}
