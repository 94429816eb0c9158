//! URLs as logs, errors and the admin API show them: without passwords.

use std::borrow::Cow;

/// Words that make a name (a query parameter's, a header's) look like it
/// holds a credential, in lower case: a name that contains one is never
/// shown with its value.
pub const CREDENTIAL_WORDS: [&str; 12] = [
    "token",
    "secret",
    "pass",
    "apikey",
    "api_key",
    "api-key",
    "auth",
    "signature",
    "session",
    "credential",
    "cookie",
    "private",
];

/// Whether `name` (a query parameter's, a header's) looks like it holds a
/// credential: it contains one of [`CREDENTIAL_WORDS`], in any case.
///
/// ```
/// use towergate_core::url_text::looks_secret;
/// assert!(looks_secret("X-Internal-Token"));
/// assert!(looks_secret("pass"));
/// assert!(!looks_secret("page"));
/// ```
pub fn looks_secret(name: &str) -> bool {
    let name = name.as_bytes();
    CREDENTIAL_WORDS.iter().any(|w| {
        name.windows(w.len())
            .any(|part| part.eq_ignore_ascii_case(w.as_bytes()))
    })
}

/// `url` with the password of its user info replaced by `<redacted>`; a
/// user info without `:` (a bare token, `https://TOKEN@host`) is replaced
/// whole; so is the value of a query parameter whose name looks like a
/// credential ([`looks_secret`]: `redis+unix:///run/redis.sock?pass=...`,
/// `?access_token=...`). Anything that is not `scheme://...` is returned
/// as is.
///
/// A URL in a configuration file may carry credentials
/// (`redis://:password@host`, `https://user:pass@idp/jwks`); whatever
/// shows a URL (an error message, `/admin/config`, a log line) shows this.
///
/// ```
/// use towergate_core::url_without_password as shown;
/// assert_eq!(shown("redis://:pw@cache:6379/0"), "redis://:<redacted>@cache:6379/0");
/// assert_eq!(shown("https://u:p@idp/jwks?x=a@b"), "https://u:<redacted>@idp/jwks?x=a@b");
/// assert_eq!(shown("https://ghp_token@host/x"), "https://<redacted>@host/x");
/// assert_eq!(shown("http://127.0.0.1:4318"), "http://127.0.0.1:4318");
/// assert_eq!(shown("redis+unix:///s.sock?db=1&pass=pw"), "redis+unix:///s.sock?db=1&pass=<redacted>");
/// assert_eq!(shown("not a url"), "not a url");
/// ```
pub fn url_without_password(url: &str) -> Cow<'_, str> {
    if !url.contains("://") {
        return Cow::Borrowed(url);
    }
    match without_user_info(url) {
        Cow::Borrowed(u) => without_secret_query(u),
        Cow::Owned(u) => Cow::Owned(without_secret_query(&u).into_owned()),
    }
}

/// The query's credential-like values replaced (see [`url_without_password`]).
fn without_secret_query(url: &str) -> Cow<'_, str> {
    let Some(q) = url.find('?') else {
        return Cow::Borrowed(url);
    };
    let end = url[q..].find('#').map_or(url.len(), |i| q + i);
    let query = &url[q + 1..end];
    let secret = |pair: &str| {
        pair.split_once('=')
            .is_some_and(|(name, _)| looks_secret(name))
    };
    if !query.split('&').any(secret) {
        return Cow::Borrowed(url);
    }
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..=q]);
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((name, _)) if looks_secret(name) => {
                out.push_str(name);
                out.push_str("=<redacted>");
            }
            _ => out.push_str(pair),
        }
    }
    out.push_str(&url[end..]);
    Cow::Owned(out)
}

fn without_user_info(url: &str) -> Cow<'_, str> {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return Cow::Borrowed(url);
    };
    let rest = &url[start..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let at = match authority.rfind('@') {
        Some(at) => at,
        // A password with an unencoded `/`, `?` or `#` ends the authority
        // early (and makes the URL invalid, so an error shows it): a
        // `user:...@` before the last `@` is still treated as user info,
        // erring on the side of hiding.
        None => match rest.rfind('@') {
            Some(at)
                if rest[..at]
                    .find(':')
                    .is_some_and(|colon| !rest[..colon].contains(['/', '?', '#'])) =>
            {
                at
            }
            _ => return Cow::Borrowed(url),
        },
    };
    let info = &rest[..at];
    let user = match info.split_once(':') {
        Some((user, _)) => &info[..=user.len()],
        None => "",
    };
    Cow::Owned(format!("{}{user}<redacted>{}", &url[..start], &rest[at..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_forms() {
        assert_eq!(
            url_without_password("redis://:pw@h"),
            "redis://:<redacted>@h"
        );
        assert_eq!(
            url_without_password("redis://u:p:q@h"),
            "redis://u:<redacted>@h"
        );
        assert_eq!(
            url_without_password("http://a@b@h/p"),
            "http://<redacted>@h/p"
        );
        assert_eq!(url_without_password("http://h/p@q"), "http://h/p@q");
        assert_eq!(url_without_password("http://h?x=u:p@q"), "http://h?x=u:p@q");
        assert_eq!(url_without_password("http://h#u:p@q"), "http://h#u:p@q");
        assert_eq!(url_without_password("http://@h"), "http://<redacted>@h");
        assert_eq!(url_without_password(""), "");
        // Unencoded `#`, `/` or `?` in the password.
        assert_eq!(
            url_without_password("redis://:pa#ss@cache:6379"),
            "redis://:<redacted>@cache:6379"
        );
        assert_eq!(
            url_without_password("https://u:p/q?r@h/x"),
            "https://u:<redacted>@h/x"
        );
    }

    #[test]
    fn credential_like_query_values() {
        assert_eq!(
            url_without_password("redis://:pw@h/0?password=x&db=1#f"),
            "redis://:<redacted>@h/0?password=<redacted>&db=1#f"
        );
        assert_eq!(
            url_without_password("https://idp/jwks?Access_Token=abc&v=2"),
            "https://idp/jwks?Access_Token=<redacted>&v=2"
        );
        assert_eq!(
            url_without_password("https://h/p?page=2&q"),
            "https://h/p?page=2&q"
        );
        assert_eq!(
            url_without_password("https://h/p?#token=x"),
            "https://h/p?#token=x"
        );
    }
}
