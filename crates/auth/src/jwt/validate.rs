//! The pure checks of a compact JWS before and after signature
//! verification: shape, header, algorithm, and the mapping of
//! `jsonwebtoken`'s errors to reasons a client can act on.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use jsonwebtoken::errors::{Error as JwtError, ErrorKind};
use serde::Deserialize;

use crate::error::reason;

/// Why a token was refused: a reason for the problem body and a fixed
/// description for `error_description` (never token or key content).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) reason: &'static str,
    pub(crate) description: &'static str,
}

/// The parts of the JOSE header the layer reads. `jwk`, `jku`, `x5u` and
/// `x5c` are deliberately ignored: keys come from the layer's
/// configuration, never from the token.
#[derive(Deserialize)]
struct RawHeader {
    alg: Option<String>,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

/// What the header says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) alg: Algorithm,
    pub(crate) kid: Option<String>,
}

// === impl Refusal ===

impl Refusal {
    const fn new(reason: &'static str, description: &'static str) -> Self {
        Self {
            reason,
            description,
        }
    }
}

pub(crate) const MALFORMED: Refusal = Refusal::new(reason::MALFORMED, "the token is malformed");
pub(crate) const TOO_LARGE: Refusal =
    Refusal::new(reason::TOKEN_TOO_LARGE, "the token is too large");
pub(crate) const ALG_NONE: Refusal = Refusal::new(
    reason::ALGORITHM_NOT_ALLOWED,
    "unsigned tokens (alg none) are not accepted",
);
pub(crate) const ALG_NOT_ALLOWED: Refusal = Refusal::new(
    reason::ALGORITHM_NOT_ALLOWED,
    "the token's algorithm is not allowed",
);
pub(crate) const CRIT: Refusal = Refusal::new(
    reason::UNSUPPORTED_HEADER,
    "the token has critical header parameters that are not understood",
);
pub(crate) const BAD_SIGNATURE: Refusal =
    Refusal::new(reason::BAD_SIGNATURE, "the signature does not verify");
pub(crate) const UNKNOWN_KID: Refusal =
    Refusal::new(reason::UNKNOWN_KEY, "the token's key id (kid) is not known");
pub(crate) const NO_KEY_FOR_ALG: Refusal = Refusal::new(
    reason::UNKNOWN_KEY,
    "no known key can verify the token's algorithm",
);
pub(crate) const EXPIRED: Refusal = Refusal::new(reason::EXPIRED, "the token has expired");
pub(crate) const NOT_YET_VALID: Refusal =
    Refusal::new(reason::NOT_YET_VALID, "the token is not valid yet (nbf)");
pub(crate) const ISSUED_IN_FUTURE: Refusal = Refusal::new(
    reason::ISSUED_IN_FUTURE,
    "the token was issued in the future (iat)",
);
pub(crate) const WRONG_ISSUER: Refusal =
    Refusal::new(reason::WRONG_ISSUER, "the token's issuer is not accepted");
pub(crate) const WRONG_AUDIENCE: Refusal = Refusal::new(
    reason::WRONG_AUDIENCE,
    "the token is not meant for this audience",
);
pub(crate) const MISSING_CLAIM: Refusal =
    Refusal::new(reason::MISSING_CLAIM, "the token lacks a required claim");
pub(crate) const BAD_CLAIM: Refusal =
    Refusal::new(reason::MALFORMED, "a claim of the token has the wrong type");

/// Checks the shape (three non-empty base64url segments) and reads the
/// header, without any cryptography.
pub(crate) fn parse_header(token: &str, allowed: &[Algorithm]) -> Result<Header, Refusal> {
    let mut segments = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(MALFORMED);
    };
    if h.is_empty() || p.is_empty() || !is_b64url(h) || !is_b64url(p) || !is_b64url(s) {
        return Err(MALFORMED);
    }
    let raw = URL_SAFE_NO_PAD.decode(h).map_err(|_| MALFORMED)?;
    let header: RawHeader = serde_json::from_slice(&raw).map_err(|_| MALFORMED)?;
    let alg = header.alg.ok_or(MALFORMED)?;
    if alg.eq_ignore_ascii_case("none") {
        return Err(ALG_NONE);
    }
    if s.is_empty() {
        return Err(BAD_SIGNATURE);
    }
    let alg: Algorithm = alg.parse().map_err(|_| ALG_NOT_ALLOWED)?;
    if !allowed.contains(&alg) {
        return Err(ALG_NOT_ALLOWED);
    }
    // RFC 7515 §4.1.11: a recipient must refuse critical extensions it does
    // not understand, and this layer understands none.
    if header.crit.is_some() {
        return Err(CRIT);
    }
    Ok(Header {
        alg,
        kid: header.kid,
    })
}

fn is_b64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What a `jsonwebtoken` failure means for the client.
pub(crate) fn refusal(e: &JwtError) -> Refusal {
    match e.kind() {
        ErrorKind::InvalidSignature => BAD_SIGNATURE,
        ErrorKind::ExpiredSignature => EXPIRED,
        ErrorKind::ImmatureSignature => NOT_YET_VALID,
        ErrorKind::InvalidIssuer => WRONG_ISSUER,
        ErrorKind::InvalidAudience => WRONG_AUDIENCE,
        ErrorKind::MissingRequiredClaim(_) => MISSING_CLAIM,
        ErrorKind::InvalidClaimFormat(_) => BAD_CLAIM,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => ALG_NOT_ALLOWED,
        // The key could not be used with this algorithm; keys are filtered
        // by family before, so this is a key the set should not have had.
        ErrorKind::InvalidKeyFormat
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey => NO_KEY_FOR_ALG,
        _ => MALFORMED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(header: &str) -> String {
        format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode(header))
    }

    const ALL: &[Algorithm] = &[Algorithm::RS256, Algorithm::HS256];

    #[test]
    fn header_checks() {
        assert_eq!(
            parse_header(&tok(r#"{"alg":"RS256","kid":"k"}"#), ALL),
            Ok(Header {
                alg: Algorithm::RS256,
                kid: Some("k".into())
            })
        );
        assert_eq!(parse_header(&tok(r#"{"alg":"none"}"#), ALL), Err(ALG_NONE));
        assert_eq!(parse_header(&tok(r#"{"alg":"NoNe"}"#), ALL), Err(ALG_NONE));
        assert_eq!(
            parse_header(&tok(r#"{"alg":"ES256"}"#), ALL),
            Err(ALG_NOT_ALLOWED)
        );
        assert_eq!(
            parse_header(&tok(r#"{"alg":"XX999"}"#), ALL),
            Err(ALG_NOT_ALLOWED)
        );
        assert_eq!(
            parse_header(&tok(r#"{"alg":"RS256","crit":["exp"]}"#), ALL),
            Err(CRIT)
        );
        assert_eq!(parse_header("a.b", ALL), Err(MALFORMED));
        assert_eq!(parse_header("a.b.c.d", ALL), Err(MALFORMED));
        assert_eq!(parse_header("!!!.e30.c2ln", ALL), Err(MALFORMED));
        assert_eq!(parse_header("e30.e30.c2ln", ALL), Err(MALFORMED));
        // `alg: none` tokens have an empty signature.
        let none = format!("{}.e30.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#));
        assert_eq!(parse_header(&none, ALL), Err(ALG_NONE));
    }
}
