use serde_json::{Map, Value};

/// Who the caller is, as an authentication layer established it.
///
/// Authentication layers insert it in the request extensions; rate limiting
/// keys on it, authorization rules read it, and the proxy can pass chosen
/// fields to the upstream as headers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Identity {
    /// The subject (`sub` of a JWT, user of basic auth).
    pub subject: Option<String>,
    /// The consumer (API-key owner, OAuth client) the request is billed to.
    pub consumer: Option<String>,
    /// The issuer that vouched for the caller.
    pub issuer: Option<String>,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// All claims or metadata, for claim rules and claim-keyed limits.
    pub claims: Map<String, Value>,
    /// How the caller was authenticated (`jwt`, `api_key`, ...).
    pub method: Option<&'static str>,
}

impl Identity {
    /// A field by name: `sub`/`subject`, `consumer`, `iss`/`issuer`, or a claim
    /// (by its whole name, else as a dotted path into objects: `org.id`). Strings are returned as
    /// they are, other JSON values in their JSON form.
    ///
    /// ```
    /// let mut id = towergate_core::Identity::default();
    /// id.subject = Some("alice".into());
    /// id.claims.insert("org".into(), serde_json::json!({"id": 7}));
    /// assert_eq!(id.field("sub").as_deref(), Some("alice"));
    /// assert_eq!(id.field("org.id").as_deref(), Some("7"));
    /// assert_eq!(id.field("missing"), None);
    /// // A claim whose name has dots is found by its whole name first.
    /// id.claims.insert("https://acme.com/tenant".into(), serde_json::json!("t1"));
    /// assert_eq!(id.field("https://acme.com/tenant").as_deref(), Some("t1"));
    /// ```
    pub fn field(&self, name: &str) -> Option<String> {
        match name {
            "sub" | "subject" => return self.subject.clone(),
            "consumer" => return self.consumer.clone(),
            "iss" | "issuer" => return self.issuer.clone(),
            _ => {}
        }
        // A claim named with dots (`https://acme.com/tenant`, as OIDC
        // providers name custom claims) is itself first, as the rules read
        // claims; then the dotted path.
        let v = match self.claims.get(name) {
            Some(v) => v,
            None => {
                let mut parts = name.split('.');
                let first = parts.next()?;
                let mut v = self.claims.get(first)?;
                for p in parts {
                    v = v.get(p)?;
                }
                v
            }
        };
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }
}
