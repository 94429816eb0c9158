//! Makes the key pairs and tokens of the `features` and `jwks` scenarios,
//! and prints one token signed with the private key (issuer `bench`,
//! audience `bench`, valid for a day).
//!
//! - RS256 (default): writes the public key (SPKI PEM, what
//!   `auth_providers.X.jwt.pem_files` reads) to `--public-key`.
//!   `jwt-token --public-key /tmp/w/jwt-public.pem > /tmp/w/jwt-token.txt`
//! - ES256 with a key id: writes the public key as one JWK (a member of a
//!   JWKS's `keys`) to `--jwk`; the token's header names `--kid`.
//!   `jwt-token --alg ES256 --kid a --jwk /tmp/w/jwk-a.json > /tmp/w/es256-a.txt`

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use towergate_bench::Error;

fn main() -> Result<(), Error> {
    let alg = towergate_bench::arg("--alg", "RS256");
    let (header, key) = match alg.as_str() {
        "RS256" => {
            let path = towergate_bench::arg("--public-key", "jwt-public.pem");
            let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)?;
            std::fs::write(&path, pair.public_key_pem())?;
            let key = EncodingKey::from_rsa_pem(pair.serialize_pem().as_bytes())?;
            (Header::new(Algorithm::RS256), key)
        }
        "ES256" => {
            let kid = towergate_bench::arg("--kid", "bench");
            let path = towergate_bench::arg("--jwk", "jwk.json");
            let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            std::fs::write(
                &path,
                towergate_bench::es256_jwk(pair.public_key_raw(), &kid)?.to_string(),
            )?;
            let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes())?;
            let mut header = Header::new(Algorithm::ES256);
            header.kid = Some(kid);
            (header, key)
        }
        other => return Err(format!("--alg {other}: RS256 or ES256").into()),
    };
    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({
        "sub": "bench-user",
        "iss": "bench",
        "aud": "bench",
        "iat": now,
        "exp": now + 86_400,
    });
    let token = jsonwebtoken::encode(&header, &claims, &key)?;
    println!("{token}");
    Ok(())
}
