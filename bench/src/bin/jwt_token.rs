//! Makes the RS256 key pair and token of the `features` scenario: writes
//! the public key (SPKI PEM, what `auth_providers.X.jwt.pem_files` reads)
//! to `--public-key`, and prints one token signed with the private key
//! (issuer `bench`, audience `bench`, valid for a day).
//!
//! `jwt-token --public-key /tmp/w/jwt-public.pem > /tmp/w/jwt-token.txt`

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use towergate_bench::Error;

fn main() -> Result<(), Error> {
    let path = towergate_bench::arg("--public-key", "jwt-public.pem");
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)?;
    std::fs::write(&path, pair.public_key_pem())?;
    let key = EncodingKey::from_rsa_pem(pair.serialize_pem().as_bytes())?;
    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({
        "sub": "bench-user",
        "iss": "bench",
        "aud": "bench",
        "iat": now,
        "exp": now + 86_400,
    });
    let token = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key)?;
    println!("{token}");
    Ok(())
}
