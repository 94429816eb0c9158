//! URLs as logs, errors and the admin API show them: without passwords.

use std::borrow::Cow;

/// `url` with the password of its user info replaced by `<redacted>`; a
/// user info without `:` (a bare token, `https://TOKEN@host`) is replaced
/// whole. Anything that is not `scheme://authority...` is returned as is.
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
/// assert_eq!(shown("not a url"), "not a url");
/// ```
pub fn url_without_password(url: &str) -> Cow<'_, str> {
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
}
