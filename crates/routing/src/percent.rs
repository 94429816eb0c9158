//! Percent-encoding helpers shared by normalisation, templates, params and
//! query matching.

use std::borrow::Cow;

/// RFC 3986 `unreserved`: safe to decode, it never changes what a path means.
pub(crate) fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Characters a path segment may carry unescaped (RFC 3986 `pchar` without
/// `%`, which is handled by the callers).
pub(crate) fn is_pchar(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
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
        )
}

pub(crate) fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Appends `%XX` (upper-case hex, as RFC 3986 6.2.2.1 recommends) for `b`.
pub(crate) fn push_escaped(out: &mut String, b: u8) {
    out.push('%');
    out.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
    out.push(char::from(HEX_UPPER[usize::from(b & 0x0f)]));
}

/// Decodes every `%XX` (and `+` as a space when asked, for query strings);
/// invalid escapes are kept as they are and invalid UTF-8 is replaced, so
/// this never fails. Borrows when there is nothing to decode.
pub(crate) fn decode_lossy(s: &str, plus_as_space: bool) -> Cow<'_, str> {
    let needs = s.bytes().any(|b| b == b'%' || (plus_as_space && b == b'+'));
    if !needs {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex_value);
                let lo = bytes.get(i + 2).copied().and_then(hex_value);
                if let (Some(hi), Some(lo)) = (hi, lo) {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' if plus_as_space => out.push(b' '),
            _ => out.push(b),
        }
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_borrows() {
        assert!(matches!(
            decode_lossy("plain", true),
            Cow::Borrowed("plain")
        ));
        assert_eq!(decode_lossy("a%20b+c", true), "a b c");
        assert_eq!(decode_lossy("a%20b+c", false), "a b+c");
        assert_eq!(decode_lossy("caf%C3%A9", false), "café");
        assert_eq!(decode_lossy("100%", false), "100%");
        assert_eq!(decode_lossy("%zz%4", false), "%zz%4");
        assert_eq!(decode_lossy("%FF", false), "\u{FFFD}");
    }

    #[test]
    fn escapes_upper_case() {
        let mut s = String::new();
        push_escaped(&mut s, 0xc3);
        push_escaped(&mut s, b' ');
        assert_eq!(s, "%C3%20");
    }
}
