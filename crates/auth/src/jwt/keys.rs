//! Verification keys: a set of them, built from a JWKS document, PEM or a
//! shared secret, and the choice of the keys that may verify a token.
//!
//! A key can verify only the algorithms of its own family (and curve), so a
//! token whose `alg` names another family (`HS256` over an RSA public key:
//! algorithm confusion) finds no key at all.

use std::fmt;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde::Deserialize;

/// The most keys tried for one token that names no `kid`: bounds the work
/// an attacker can cause with a kid-less token.
const MAX_CANDIDATES: usize = 4;

/// One verification key and what it may verify.
pub(crate) struct KeyEntry {
    pub(crate) kid: Option<String>,
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) key: DecodingKey,
    /// A digest of a JWK's key material (0 for the provider's own keys):
    /// a cached token is trusted while the set still has this key, not
    /// merely its `kid`, which a provider may reuse for new material.
    pub(crate) fingerprint: u64,
}

/// The keys of one source (static, or one JWKS fetch).
#[derive(Default)]
pub(crate) struct KeySet {
    entries: Vec<KeyEntry>,
    /// The most keys without `kid` tried for one token.
    max_candidates: usize,
}

/// The outcome of looking a token's key up.
pub(crate) enum Lookup<'a> {
    /// Keys to try, in order.
    Found(Vec<&'a KeyEntry>),
    /// The token names a `kid` this set does not have.
    UnknownKid,
    /// No key here can verify the token's `alg`.
    NoKeyForAlg,
}

/// Why a JWKS document could not be used.
#[derive(Debug)]
pub(crate) struct JwksInvalid(pub(crate) String);

#[derive(Deserialize)]
struct JwksDocument {
    keys: Vec<serde_json::Value>,
}

// === impl KeyEntry ===

impl KeyEntry {
    /// A shared secret, for the HMAC algorithms.
    pub(crate) fn secret(kid: Option<String>, secret: &[u8]) -> Self {
        Self {
            kid,
            algorithms: AlgorithmFamily::Hmac.algorithms().to_vec(),
            key: DecodingKey::from_secret(secret),
            fingerprint: 0,
        }
    }

    /// A public key in PEM: RSA, EC (P-256 or P-384) or Ed25519.
    pub(crate) fn pem(kid: Option<String>, pem: &[u8]) -> Result<Self, String> {
        if pem.windows(11).any(|w| w == b"PRIVATE KEY") {
            return Err("a private key was given; give the public key".into());
        }
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Self {
                kid,
                algorithms: AlgorithmFamily::Rsa.algorithms().to_vec(),
                key,
                fingerprint: 0,
            });
        }
        if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            // The uncompressed point's length gives the curve.
            let algorithms = match key.try_get_as_bytes().map(<[u8]>::len) {
                Ok(65) => vec![Algorithm::ES256],
                Ok(97) => vec![Algorithm::ES384],
                _ => return Err("unsupported EC curve (P-256 and P-384 are)".into()),
            };
            return Ok(Self {
                kid,
                algorithms,
                key,
                fingerprint: 0,
            });
        }
        if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            return Ok(Self {
                kid,
                algorithms: vec![Algorithm::EdDSA],
                key,
                fingerprint: 0,
            });
        }
        Err("not an RSA, EC or Ed25519 public key in PEM".into())
    }

    /// A JWK, if it is a signature key this layer can use; `Err` says why
    /// not (for the log).
    fn from_jwk(jwk: &Jwk) -> Result<Self, String> {
        let kid = jwk.common.key_id.clone();
        if let Some(u) = &jwk.common.public_key_use
            && *u != PublicKeyUse::Signature
        {
            return Err("not a signature key (use)".into());
        }
        if let Some(ops) = &jwk.common.key_operations
            && !ops.contains(&KeyOperations::Verify)
        {
            return Err("not a verification key (key_ops)".into());
        }
        let family_algs: Vec<Algorithm> = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa.algorithms().to_vec(),
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => vec![Algorithm::ES256],
                EllipticCurve::P384 => vec![Algorithm::ES384],
                _ => return Err("unsupported curve".into()),
            },
            AlgorithmParameters::OctetKeyPair(p) => match p.curve {
                EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
                _ => return Err("unsupported curve".into()),
            },
            // A JWKS is public: a shared secret has no business in one.
            AlgorithmParameters::OctetKey(_) => return Err("symmetric key in a JWKS".into()),
            _ => return Err("unsupported key type".into()),
        };
        // A key that names its algorithm verifies that one only.
        let algorithms = match &jwk.common.key_algorithm {
            Some(a) => match a.to_string().parse::<Algorithm>() {
                Ok(alg) if family_algs.contains(&alg) => vec![alg],
                _ => return Err("alg does not fit the key".into()),
            },
            None => family_algs,
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("bad key: {e}"))?;
        Ok(Self {
            kid,
            fingerprint: fingerprint(&jwk.algorithm, &algorithms),
            algorithms,
            key,
        })
    }
}

/// A digest of a JWK's key material, for [`KeyEntry::fingerprint`]: the
/// same within the process for the same key, whatever the set's order.
fn fingerprint(params: &AlgorithmParameters, algorithms: &[Algorithm]) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    params.hash(&mut h);
    // What it may verify too: the same material republished for another
    // `alg` is another key to a cached token.
    algorithms.hash(&mut h);
    // Never 0, which marks the provider's own keys.
    h.finish() | 1
}

impl fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key itself: a secret must not reach a log.
        f.debug_struct("KeyEntry")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

// === impl KeySet ===

impl KeySet {
    pub(crate) fn new(entries: Vec<KeyEntry>) -> Self {
        Self {
            entries,
            max_candidates: MAX_CANDIDATES,
        }
    }

    /// The gateway's own keys (`secret`, PEM files): every one is tried,
    /// however many there are (the configuration cannot give them ids;
    /// the cap is for a provider's set).
    pub(crate) fn configured(entries: Vec<KeyEntry>) -> Self {
        Self {
            entries,
            max_candidates: usize::MAX,
        }
    }

    /// Parses a JWKS document (RFC 7517 §5), keeping the keys that can
    /// verify signatures and skipping (and logging) the others, so that one
    /// exotic key does not take the whole set down.
    pub(crate) fn from_jwks(body: &[u8]) -> Result<Self, JwksInvalid> {
        let doc: JwksDocument =
            serde_json::from_slice(body).map_err(|e| JwksInvalid(format!("not a JWKS: {e}")))?;
        let mut entries = Vec::with_capacity(doc.keys.len());
        for raw in doc.keys {
            let kid = raw.get("kid").and_then(|v| v.as_str()).map(str::to_owned);
            let parsed = serde_json::from_value::<Jwk>(raw)
                .map_err(|e| format!("unreadable: {e}"))
                .and_then(|jwk| KeyEntry::from_jwk(&jwk));
            match parsed {
                Ok(entry) => entries.push(entry),
                Err(why) => tracing::debug!(kid = kid.as_deref(), %why, "jwks key skipped"),
            }
        }
        if entries.is_empty() {
            return Err(JwksInvalid("no usable signature key".into()));
        }
        Ok(Self::new(entries))
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a key has this `kid`.
    pub(crate) fn has_kid(&self, kid: &str) -> bool {
        self.entries.iter().any(|e| e.kid.as_deref() == Some(kid))
    }

    /// Whether the set has the key of `kid` with this key material.
    pub(crate) fn has_key(&self, kid: &str, fingerprint: u64) -> bool {
        self.entries
            .iter()
            .any(|e| e.kid.as_deref() == Some(kid) && e.fingerprint == fingerprint)
    }

    /// The algorithms some key here can verify.
    pub(crate) fn algorithms(&self) -> impl Iterator<Item = Algorithm> + '_ {
        self.entries
            .iter()
            .flat_map(|e| e.algorithms.iter().copied())
    }

    /// The keys that may verify a token with this `kid` and `alg`.
    ///
    /// A token's `kid` selects the keys with that id; keys without an id
    /// stand in for any id. A token without `kid` may be verified by any
    /// key of its algorithm (a few at most).
    pub(crate) fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Lookup<'_> {
        let fits = |e: &&KeyEntry| e.algorithms.contains(&alg);
        match kid {
            Some(kid) => {
                let named: Vec<&KeyEntry> = self
                    .entries
                    .iter()
                    .filter(|e| e.kid.as_deref() == Some(kid))
                    .collect();
                if !named.is_empty() {
                    let usable: Vec<&KeyEntry> = named.into_iter().filter(fits).collect();
                    return if usable.is_empty() {
                        Lookup::NoKeyForAlg
                    } else {
                        Lookup::Found(usable)
                    };
                }
                let anonymous: Vec<&KeyEntry> = self
                    .entries
                    .iter()
                    .filter(|e| e.kid.is_none())
                    .filter(fits)
                    .take(self.max_candidates)
                    .collect();
                if anonymous.is_empty() {
                    Lookup::UnknownKid
                } else {
                    Lookup::Found(anonymous)
                }
            }
            None => {
                let usable: Vec<&KeyEntry> = self
                    .entries
                    .iter()
                    .filter(fits)
                    .take(self.max_candidates)
                    .collect();
                if usable.is_empty() {
                    Lookup::NoKeyForAlg
                } else {
                    Lookup::Found(usable)
                }
            }
        }
    }
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.entries).finish()
    }
}

impl fmt::Display for JwksInvalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JwksInvalid {}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 8037 A.2's public key and RFC 7517 A.1's P-256 key.
    const JWKS: &str = r#"{"keys":[
        {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"ed"},
        {"kty":"EC","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
         "y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM","use":"sig","kid":"ec"},
        {"kty":"EC","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
         "y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM","use":"enc","kid":"enc"},
        {"kty":"oct","k":"c2VjcmV0","kid":"oct"},
        {"kty":"whatever","kid":"odd"}
    ]}"#;

    #[test]
    fn jwks_keeps_signature_keys_only() {
        let set = KeySet::from_jwks(JWKS.as_bytes()).unwrap();
        assert_eq!(set.len(), 2);
        assert!(set.has_kid("ed") && set.has_kid("ec"));
        assert!(!set.has_kid("enc") && !set.has_kid("oct") && !set.has_kid("odd"));
    }

    #[test]
    fn lookup_by_kid_and_family() {
        let set = KeySet::from_jwks(JWKS.as_bytes()).unwrap();
        assert!(
            matches!(set.lookup(Some("ec"), Algorithm::ES256), Lookup::Found(v) if v.len() == 1)
        );
        // Right kid, wrong family: confusion is refused.
        assert!(matches!(
            set.lookup(Some("ec"), Algorithm::HS256),
            Lookup::NoKeyForAlg
        ));
        assert!(matches!(
            set.lookup(Some("ec"), Algorithm::ES384),
            Lookup::NoKeyForAlg
        ));
        assert!(matches!(
            set.lookup(Some("nope"), Algorithm::ES256),
            Lookup::UnknownKid
        ));
        assert!(matches!(set.lookup(None, Algorithm::EdDSA), Lookup::Found(v) if v.len() == 1));
        assert!(matches!(
            set.lookup(None, Algorithm::RS256),
            Lookup::NoKeyForAlg
        ));
    }

    #[test]
    fn anonymous_static_key_serves_any_kid() {
        let set = KeySet::new(vec![KeyEntry::secret(None, b"s")]);
        assert!(matches!(
            set.lookup(Some("x"), Algorithm::HS256),
            Lookup::Found(_)
        ));
        assert!(matches!(
            set.lookup(Some("x"), Algorithm::RS256),
            Lookup::UnknownKid
        ));
    }

    #[test]
    fn garbage_jwks() {
        assert!(KeySet::from_jwks(b"{}").is_err());
        assert!(KeySet::from_jwks(b"{\"keys\":[]}").is_err());
        assert!(KeySet::from_jwks(b"not json").is_err());
    }

    #[test]
    fn private_pem_refused() {
        let e = KeyEntry::pem(
            None,
            b"-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n",
        );
        assert!(e.unwrap_err().contains("private"));
    }
}
