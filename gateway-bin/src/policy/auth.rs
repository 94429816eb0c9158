//! Config → `towergate-auth`: named providers built once per configuration
//! (and kept across reloads while unchanged, so JWKS and token caches stay
//! warm), then one `AuthLayer` and one `IpFilterLayer` per route.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use towergate_auth::{
    Algorithm, ApiKeys, AuthLayer, Authenticator, BasicAuth, Consumer, ForwardAuth, Introspection,
    IpFilterLayer, Jwt, Rule, TokenSource,
};

use super::Registry;
use crate::config::schema::{
    AuthProvider, ClaimRule, Config, IpRules, Require, RouteAuth, TokenFrom, TokenFromSpec,
};
use crate::config::validate::parse_net;
use crate::config::{ConfigError, parse_duration};
use crate::stack::resolve_path;

/// The providers of a configuration, by name.
pub(crate) type Providers = HashMap<String, Arc<dyn Authenticator>>;

/// The timeout of an introspection or forward-auth call when not set.
const AUTH_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Builds every provider, reusing unchanged ones from `registry`; also
/// returns their keys in the registry, for
/// [`Registry::commit_authenticators`].
pub(crate) fn providers(
    cfg: &Config,
    registry: &Registry,
    errs: &mut Vec<ConfigError>,
) -> (Providers, HashSet<String>) {
    let base = cfg.base_dir.as_deref();
    let mut out = Providers::new();
    let mut keys = HashSet::new();
    for (name, p) in &cfg.auth_providers {
        let path = format!("auth_providers.{name}");
        // The cache key is the provider's whole definition, secrets
        // included (which is why it is never shown): any change rebuilds
        // it. `Debug`, not `Serialize`, which redacts them for display: a
        // rotated secret or URL password must make a new authenticator.
        // Files are named by path in the definition: their contents go in
        // too, so that a rotated PEM key or an edited users file is read
        // again by a reload.
        let key = format!(
            "{name}\u{0}{p:?}\u{0}{base:?}\u{0}{:016x}",
            files_digest(p, base)
        );
        if let Some(existing) = registry.authenticator(&key) {
            out.insert(name.clone(), existing);
            keys.insert(key);
            continue;
        }
        if let Some(a) = provider(p, base, &path, errs) {
            registry.keep_authenticator(key.clone(), a.clone());
            out.insert(name.clone(), a);
            keys.insert(key);
        }
    }
    (out, keys)
}

/// A digest of the files `p` reads (PEM keys, a users file); an unreadable
/// file counts as such (its error is reported when the provider is built).
fn files_digest(p: &AuthProvider, base: Option<&Path>) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    let pem = p.jwt.iter().flat_map(|j| j.pem_files.iter());
    let users = p.basic.iter().flat_map(|b| b.users_file.iter());
    for f in pem.chain(users) {
        std::fs::read(resolve_path(base, f)).ok().hash(&mut h);
    }
    h.finish()
}

fn provider(
    p: &AuthProvider,
    base: Option<&Path>,
    path: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<Arc<dyn Authenticator>> {
    let n = p.jwt.is_some() as u8
        + p.api_key.is_some() as u8
        + p.introspection.is_some() as u8
        + p.forward.is_some() as u8
        + p.basic.is_some() as u8;
    if n != 1 {
        errs.push(ConfigError::new(
            path,
            "give exactly one of `jwt`, `api_key`, `introspection`, `forward`, `basic`",
        ));
        return None;
    }
    let built: Result<Arc<dyn Authenticator>, (String, String)> = if let Some(j) = &p.jwt {
        jwt(j, base, &format!("{path}.jwt"), errs).map(|a| Arc::new(a) as Arc<dyn Authenticator>)
    } else if let Some(k) = &p.api_key {
        api_keys(k, &format!("{path}.api_key"), errs).map(|a| Arc::new(a) as Arc<dyn Authenticator>)
    } else if let Some(i) = &p.introspection {
        introspection(i, &format!("{path}.introspection"), errs)
            .map(|a| Arc::new(a) as Arc<dyn Authenticator>)
    } else if let Some(f) = &p.forward {
        forward(f, &format!("{path}.forward"), errs).map(|a| Arc::new(a) as Arc<dyn Authenticator>)
    } else if let Some(b) = &p.basic {
        basic(b, base, &format!("{path}.basic")).map(|a| Arc::new(a) as Arc<dyn Authenticator>)
    } else {
        return None;
    };
    match built {
        Ok(a) => Some(a),
        Err((p, e)) => {
            errs.push(ConfigError::new(p, e));
            None
        }
    }
}

type Built<T> = Result<T, (String, String)>;

fn duration(v: &Option<String>, path: String, errs: &mut Vec<ConfigError>) -> Option<Duration> {
    let t = v.as_ref()?;
    match parse_duration(t) {
        Ok(d) => Some(d),
        Err(e) => {
            errs.push(ConfigError::new(path, e));
            None
        }
    }
}

fn token_source(t: &TokenFrom, path: &str) -> Built<TokenSource> {
    let bad = || {
        (
            path.to_owned(),
            "use `bearer` or one of `{ header | cookie | query: NAME }`".to_owned(),
        )
    };
    match t {
        TokenFrom::Word(w) if w.eq_ignore_ascii_case("bearer") => Ok(TokenSource::Bearer),
        TokenFrom::Word(_) => Err(bad()),
        TokenFrom::Named(TokenFromSpec {
            header: Some(h),
            cookie: None,
            query: None,
        }) => header_name(h, path).map(TokenSource::Header),
        TokenFrom::Named(TokenFromSpec {
            header: None,
            cookie: Some(c),
            query: None,
        }) => Ok(TokenSource::Cookie(c.clone())),
        TokenFrom::Named(TokenFromSpec {
            header: None,
            cookie: None,
            query: Some(q),
        }) => Ok(TokenSource::Query(q.clone())),
        TokenFrom::Named(_) => Err(bad()),
    }
}

fn header_name(h: &str, path: &str) -> Built<HeaderName> {
    HeaderName::from_bytes(h.as_bytes())
        .map_err(|_| (path.to_owned(), format!("`{h}` is not a header name")))
}

/// Warns about an identity provider reached over plain HTTP beyond this
/// host: whoever is on the path can put keys in the JWKS, or read the
/// introspection client's secret and every token. (Inside a cluster's
/// network that may be a choice; it is the operator's to make.)
fn warn_if_plain_http(url: &str, at: &str) {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return;
    };
    let loopback = uri.host().is_some_and(|h| {
        h == "localhost"
            || h.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    if uri.scheme_str() == Some("http") && !loopback {
        tracing::warn!(
            at,
            url = %towergate_core::url_without_password(url),
            "identity provider over plain http: anyone on the path can forge keys or read tokens; use https"
        );
    }
}

fn jwt(
    j: &crate::config::schema::JwtProvider,
    base: Option<&Path>,
    p: &str,
    errs: &mut Vec<ConfigError>,
) -> Built<Jwt> {
    let mut b = Jwt::builder();
    let mut sources = 0;
    if let Some(url) = &j.jwks_url {
        warn_if_plain_http(url, &format!("{p}.jwks_url"));
        b = b.jwks_url(url.clone());
        sources += 1;
    }
    let secret = match (&j.secret, &j.secret_env) {
        (Some(s), None) => Some(s.clone()),
        (None, Some(var)) => Some(std::env::var(var).map_err(|_| {
            (
                format!("{p}.secret_env"),
                format!("environment variable `{var}` is not set"),
            )
        })?),
        (Some(_), Some(_)) => {
            return Err((
                format!("{p}.secret"),
                "`secret` and `secret_env` exclude each other".into(),
            ));
        }
        (None, None) => None,
    };
    if let Some(s) = secret {
        b = b.secret(s);
        sources += 1;
    }
    for (i, f) in j.pem_files.iter().enumerate() {
        let path = resolve_path(base, f);
        if !path.is_file() {
            return Err((
                format!("{p}.pem_files[{i}]"),
                format!("cannot read `{}`", path.display()),
            ));
        }
        b = b.pem_file(path);
        sources += 1;
    }
    if sources == 0 {
        return Err((
            p.to_owned(),
            "give keys: `jwks_url`, `secret`/`secret_env` or `pem_files`".into(),
        ));
    }
    if !j.algorithms.is_empty() {
        let mut algs = Vec::new();
        for (i, a) in j.algorithms.iter().enumerate() {
            match Algorithm::from_str(a) {
                Ok(alg) => algs.push(alg),
                Err(_) => {
                    return Err((
                        format!("{p}.algorithms[{i}]"),
                        format!("`{a}` is not a JWT algorithm"),
                    ));
                }
            }
        }
        b = b.algorithms(algs);
    }
    if let Some(i) = &j.issuer {
        b = b.issuer(i.clone());
    }
    if let Some(a) = &j.audience {
        b = b.audience(a.clone());
    }
    if let Some(l) = duration(&j.leeway, format!("{p}.leeway"), errs) {
        b = b.leeway(l);
    }
    if let Some(t) = &j.token_from {
        b = b.token_from(token_source(t, &format!("{p}.token_from"))?);
    }
    if let Some(c) = &j.consumer_claim {
        b = b.consumer_claim(c.clone());
    }
    if let Some(r) = &j.realm {
        b = b.realm(r.clone());
    }
    b.build().map_err(|e| (p.to_owned(), e.to_string()))
}

fn api_keys(
    k: &crate::config::schema::ApiKeyProvider,
    p: &str,
    _errs: &mut Vec<ConfigError>,
) -> Built<ApiKeys> {
    let mut b = ApiKeys::builder();
    match (&k.header, &k.query) {
        (Some(h), None) => b = b.header(header_name(h, &format!("{p}.header"))?),
        (None, Some(q)) => b = b.query(q.clone()),
        (Some(h), Some(q)) => {
            b = b
                .header(header_name(h, &format!("{p}.header"))?)
                .query(q.clone());
        }
        (None, None) => {}
    }
    if k.keys.is_empty() {
        return Err((format!("{p}.keys"), "at least one key is required".into()));
    }
    for (i, e) in k.keys.iter().enumerate() {
        let mut consumer = Consumer::new(e.consumer.clone()).scopes(e.scopes.clone());
        for (mk, mv) in &e.metadata {
            consumer = consumer.metadata(mk.clone(), mv.clone());
        }
        b = match (&e.key, &e.key_sha256) {
            (Some(plain), None) => b.key(plain, consumer),
            (None, Some(hex)) => b.hashed_key(hex, consumer),
            _ => {
                return Err((
                    format!("{p}.keys[{i}]"),
                    "give exactly one of `key` and `key_sha256`".into(),
                ));
            }
        };
    }
    if let Some(r) = &k.realm {
        b = b.realm(r.clone());
    }
    b.build().map_err(|e| (format!("{p}.keys"), e.to_string()))
}

fn introspection(
    i: &crate::config::schema::IntrospectionProvider,
    p: &str,
    errs: &mut Vec<ConfigError>,
) -> Built<Introspection> {
    warn_if_plain_http(&i.url, &format!("{p}.url"));
    let mut b = Introspection::builder(i.url.clone());
    let secret = match (&i.client_secret, &i.client_secret_env) {
        (Some(s), None) => Some(s.clone()),
        (None, Some(var)) => Some(std::env::var(var).map_err(|_| {
            (
                format!("{p}.client_secret_env"),
                format!("environment variable `{var}` is not set"),
            )
        })?),
        (Some(_), Some(_)) => {
            return Err((
                format!("{p}.client_secret"),
                "`client_secret` and `client_secret_env` exclude each other".into(),
            ));
        }
        (None, None) => None,
    };
    match (&i.client_id, secret) {
        (Some(id), Some(secret)) => b = b.client_credentials(id.clone(), secret),
        (None, None) => {}
        _ => {
            return Err((
                p.to_owned(),
                "`client_id` and a client secret go together".into(),
            ));
        }
    }
    // 2 s unless set, as documented: an authentication call is on the
    // request's path (the crate's own default is 5 s).
    b = b.timeout(duration(&i.timeout, format!("{p}.timeout"), errs).unwrap_or(AUTH_CALL_TIMEOUT));
    if let Some(t) = duration(&i.max_ttl, format!("{p}.max_ttl"), errs) {
        b = b.max_ttl(t);
    }
    if let Some(v) = &i.issuer {
        b = b.issuer(v.clone());
    }
    if let Some(v) = &i.audience {
        b = b.audience(v.clone());
    }
    if let Some(t) = &i.token_from {
        b = b.token_from(token_source(t, &format!("{p}.token_from"))?);
    }
    if let Some(r) = &i.realm {
        b = b.realm(r.clone());
    }
    b.build().map_err(|e| (format!("{p}.url"), e.to_string()))
}

fn forward(
    f: &crate::config::schema::ForwardProvider,
    p: &str,
    errs: &mut Vec<ConfigError>,
) -> Built<ForwardAuth> {
    let mut b = ForwardAuth::builder(f.url.clone());
    for (i, h) in f.forward_headers.iter().enumerate() {
        b = b.forward_header(header_name(h, &format!("{p}.forward_headers[{i}]"))?);
    }
    for (i, h) in f.copy_headers.iter().enumerate() {
        b = b.copy_response_header(header_name(h, &format!("{p}.copy_headers[{i}]"))?);
    }
    if let Some(h) = &f.subject_header {
        b = b.subject_header(header_name(h, &format!("{p}.subject_header"))?);
    }
    // 2 s unless set, as documented: an authentication call is on the
    // request's path (the crate's own default is 5 s).
    b = b.timeout(duration(&f.timeout, format!("{p}.timeout"), errs).unwrap_or(AUTH_CALL_TIMEOUT));
    b.build().map_err(|e| (format!("{p}.url"), e.to_string()))
}

fn basic(
    b: &crate::config::schema::BasicProvider,
    base: Option<&Path>,
    p: &str,
) -> Built<BasicAuth> {
    let mut builder = BasicAuth::builder();
    if let Some(f) = &b.users_file {
        let path = resolve_path(base, f);
        if !path.is_file() {
            return Err((
                format!("{p}.users_file"),
                format!("cannot read `{}`", path.display()),
            ));
        }
        builder = builder.users_file(path);
    }
    if !b.users.is_empty() {
        builder = builder.users(&b.users.join("\n"));
    }
    if b.users_file.is_none() && b.users.is_empty() {
        return Err((p.to_owned(), "give `users_file` or `users`".into()));
    }
    if let Some(r) = &b.realm {
        builder = builder.realm(r.clone());
    }
    builder.build().map_err(|e| (p.to_owned(), e.to_string()))
}

/// Builds a route's auth layer from its `auth` section.
pub(crate) fn auth_layer(
    a: &RouteAuth,
    providers: &Providers,
    cfg: &Config,
    p: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<AuthLayer> {
    let before = errs.len();
    let (names, all_of, key) = match (a.any_of.is_empty(), a.all_of.is_empty()) {
        (false, true) => (&a.any_of, false, "any_of"),
        (true, false) => (&a.all_of, true, "all_of"),
        (true, true) => {
            errs.push(ConfigError::new(
                p,
                "name providers in `any_of` or `all_of`",
            ));
            return None;
        }
        (false, false) => {
            errs.push(ConfigError::new(
                p,
                "`any_of` and `all_of` exclude each other",
            ));
            return None;
        }
    };
    let mut b = AuthLayer::builder();
    for (i, n) in names.iter().enumerate() {
        match providers.get(n) {
            Some(m) => b = b.shared_method(m.clone()),
            None if cfg.auth_providers.contains_key(n) => {} // its own error is reported
            None => errs.push(ConfigError::new(
                format!("{p}.{key}[{i}]"),
                format!("`{n}` is not in `auth_providers`"),
            )),
        }
    }
    b = if all_of { b.all_of() } else { b.any_of() };
    if let Some(r) = &a.require {
        for rule in rules(r) {
            b = b.require(rule);
        }
    }
    for (field, header) in &a.identity_headers {
        match HeaderName::from_bytes(header.as_bytes()) {
            Ok(h) => b = b.identity_header(field.clone(), h),
            Err(_) => errs.push(ConfigError::new(
                format!("{p}.identity_headers.{field}"),
                format!("`{header}` is not a header name"),
            )),
        }
    }
    b = b.strip_credentials(a.strip_credentials);
    if errs.len() > before {
        return None;
    }
    match b.build() {
        Ok(l) => Some(l),
        Err(e) => {
            errs.push(ConfigError::new(p, e.to_string()));
            None
        }
    }
}

fn rules(r: &Require) -> Vec<Rule> {
    let mut out = Vec::new();
    if !r.scopes.is_empty() {
        out.push(Rule::scopes(r.scopes.clone()));
    }
    if !r.groups.is_empty() {
        out.push(Rule::groups(r.groups.clone()));
    }
    for (claim, rule) in &r.claims {
        match rule {
            ClaimRule::Equals(v) => out.push(Rule::claim_equals(claim.clone(), v.clone())),
            ClaimRule::Rule(spec) => {
                if let Some(values) = &spec.one_of {
                    out.push(Rule::claim_one_of(claim.clone(), values.clone()));
                }
                if let Some(v) = &spec.contains {
                    out.push(Rule::claim_contains(claim.clone(), v.clone()));
                }
            }
        }
    }
    out
}

/// Checks claim rules that serde cannot (exactly one key in the long form).
pub(crate) fn check_require(r: &Require, p: &str, errs: &mut Vec<ConfigError>) {
    for (claim, rule) in &r.claims {
        match rule {
            ClaimRule::Rule(spec) if spec.one_of.is_some() == spec.contains.is_some() => {
                errs.push(ConfigError::new(
                    format!("{p}.claims.{claim}"),
                    "give exactly one of `one_of` and `contains`, or a plain value",
                ));
            }
            // A misspelt long form (`oneOf`, `one-of`, `contain`) would
            // otherwise be an object to equal, which no token has: every
            // caller refused, and no error said why. Other objects are
            // values to equal (an `address` claim `{ country: NL }`).
            ClaimRule::Equals(serde_json::Value::Object(map)) => {
                for key in map.keys() {
                    let squashed: String = key
                        .chars()
                        .filter(|c| *c != '_' && *c != '-')
                        .flat_map(char::to_lowercase)
                        .collect();
                    let meant = match squashed.as_str() {
                        "oneof" | "anyof" | "in" => "one_of",
                        s if s.starts_with("contain") || s == "includes" || s == "has" => {
                            "contains"
                        }
                        _ => continue,
                    };
                    let message = if key == meant {
                        // The long form, but it did not parse.
                        format!(
                            "`{key}` must be alone, and `one_of` takes a list: `{{ one_of: [a, b] }}`, `{{ contains: a }}`"
                        )
                    } else {
                        format!(
                            "unknown condition `{key}`: did you mean `{meant}`? (an object here is otherwise a value the claim must equal)"
                        )
                    };
                    errs.push(ConfigError::new(format!("{p}.claims.{claim}"), message));
                    break;
                }
            }
            _ => {}
        }
    }
}

/// Builds a route's IP filter.
pub(crate) fn ip_layer(r: &IpRules, p: &str, errs: &mut Vec<ConfigError>) -> Option<IpFilterLayer> {
    let before = errs.len();
    let mut b = IpFilterLayer::builder();
    for (i, a) in r.allow.iter().enumerate() {
        match parse_net(a) {
            Some(n) => b = b.allow(n),
            None => errs.push(ConfigError::new(
                format!("{p}.allow[{i}]"),
                format!("`{a}` is not an IP or CIDR"),
            )),
        }
    }
    for (i, d) in r.deny.iter().enumerate() {
        match parse_net(d) {
            Some(n) => b = b.deny(n),
            None => errs.push(ConfigError::new(
                format!("{p}.deny[{i}]"),
                format!("`{d}` is not an IP or CIDR"),
            )),
        }
    }
    if errs.len() > before {
        return None;
    }
    match b.build() {
        Ok(l) => Some(l),
        Err(e) => {
            errs.push(ConfigError::new(p, e.to_string()));
            None
        }
    }
}
