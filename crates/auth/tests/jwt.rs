//! JWT with static keys (shared secret, PEM), over a real socket: every
//! algorithm, the RFC test vectors, token sources, leeway and identity.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;
use towergate_auth::{Algorithm, JwtLayer, TokenSource};

use common::*;

fn secret_layer() -> JwtLayer {
    JwtLayer::builder()
        .secret(SECRET)
        .algorithms([Algorithm::HS256, Algorithm::HS384, Algorithm::HS512])
        .issuer(ISS)
        .audience(AUD)
        .build()
        .unwrap()
}

#[tokio::test]
async fn shared_secret_every_hmac_algorithm() {
    let app = serve(secret_layer()).await;
    let url = format!("{}/orders", app.url());
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let token = encode(
            &Header::new(alg),
            &claims("alice"),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        let r = bearer(&url, &token).await;
        assert_eq!(r.status, 200, "{alg:?}: {r:?}");
        assert_eq!(r.body["identity"]["subject"], "alice");
        assert_eq!(r.body["identity"]["method"], "jwt");
        assert_eq!(r.body["identity"]["issuer"], ISS);
        assert_eq!(
            r.body["identity"]["scopes"],
            json!(["orders:read", "profile"])
        );
    }
}

#[tokio::test]
async fn no_token_is_401_with_a_bare_challenge() {
    let app = serve(secret_layer()).await;
    let r = get(&app.url(), &[]).await;
    assert_eq!(r.status, 401);
    // RFC 6750 §3.1: no error code when the request had no token.
    assert_eq!(r.challenges(), ["Bearer realm=\"api\""]);
    assert_eq!(r.reason(), "missing_credentials");
    assert_eq!(r.headers["content-type"], "application/problem+json");
    // Another scheme in Authorization is "no token" too.
    let r = get(&app.url(), &[("authorization", "Basic Zm9vOmJhcg==")]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.challenge(), "Bearer realm=\"api\"");
}

#[tokio::test]
async fn pem_keys_every_asymmetric_algorithm() {
    let rsa_layer = JwtLayer::builder()
        .pem(&rsa().public_pem)
        .algorithms([
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ])
        .audience(AUD)
        .build()
        .unwrap();
    let app = serve(rsa_layer).await;
    for alg in [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
    ] {
        let r = bearer(&app.url(), &rsa().sign_as(alg, None, &claims("rsa-user"))).await;
        assert_eq!(r.status, 200, "{alg:?}: {r:?}");
        assert_eq!(r.body["identity"]["subject"], "rsa-user");
    }
    // An RSA key of another signer: bad signature.
    let r = bearer(&app.url(), &rsa2().sign(None, &claims("mallory"))).await;
    r.assert_invalid_token("bad_signature");

    for key in [ec256(), ec384(), ed25519()] {
        // Default algorithms come from the key: ES256, ES384, EdDSA.
        let layer = JwtLayer::builder()
            .pem(&key.public_pem)
            .audience(AUD)
            .build()
            .unwrap();
        let app = serve(layer).await;
        let r = bearer(&app.url(), &key.sign(None, &claims("ec-user"))).await;
        assert_eq!(r.status, 200, "{:?}: {r:?}", key.alg);
        // The RSA key's tokens have no business here.
        let r = bearer(&app.url(), &rsa().sign(None, &claims("x"))).await;
        r.assert_invalid_token("algorithm_not_allowed");
    }
}

#[tokio::test]
async fn pem_from_a_file_and_with_kid() {
    let dir = std::env::temp_dir().join(format!("towergate-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ec.pem");
    std::fs::write(&path, &ec256().public_pem).unwrap();
    let layer = JwtLayer::builder()
        .pem_file(&path)
        .pem_with_kid("rsa-1", &rsa().public_pem)
        .algorithms([Algorithm::ES256, Algorithm::RS256])
        .build()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let app = serve(layer).await;
    let r = bearer(&app.url(), &ec256().sign(None, &claims("a"))).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = bearer(&app.url(), &rsa().sign(Some("rsa-1"), &claims("b"))).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = bearer(&app.url(), &rsa().sign(Some("rsa-9"), &claims("c"))).await;
    r.assert_invalid_token("unknown_key");

    let missing = JwtLayer::builder().pem_file("/nonexistent/key.pem").build();
    assert!(missing.unwrap_err().to_string().contains("cannot read"));
}

/// RFC 7515 appendix A.1: the HS256 example, byte for byte (its JSON has
/// CR LF inside, so this also proves the signature is checked over the
/// exact encoded bytes). It expired in 2011.
#[tokio::test]
async fn rfc7515_a1_hs256_vector() {
    const TOKEN: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9\
        .eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ\
        .dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let key = URL_SAFE_NO_PAD
        .decode("AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow")
        .unwrap();
    let age = now() - 1_300_819_380;

    // With a leeway that reaches back to 2011, it verifies.
    let layer = JwtLayer::builder()
        .secret(&key)
        .leeway(Duration::from_secs(age + 3600))
        .issuer("joe")
        .build()
        .unwrap();
    let app = serve(layer).await;
    let r = bearer(&app.url(), TOKEN).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["identity"]["issuer"], "joe");
    assert_eq!(
        r.body["identity"]["claims"]["http://example.com/is_root"],
        true
    );
    // One bit of the signature off: refused.
    let tampered = TOKEN.replace("dBjftJeZ4CVP", "dBjftJeZ4CVQ");
    bearer(&app.url(), &tampered)
        .await
        .assert_invalid_token("bad_signature");

    // With the default leeway: signature fine, token expired.
    let layer = JwtLayer::builder().secret(&key).build().unwrap();
    let app = serve(layer).await;
    bearer(&app.url(), TOKEN)
        .await
        .assert_invalid_token("expired");
}

/// RFC 8037 appendix A.4: the Ed25519 example. Its payload is not a JSON
/// claim set, so a verifier that checked the signature refuses it as
/// malformed, whereas one bit off in the signature is a bad signature.
#[tokio::test]
async fn rfc8037_a4_eddsa_vector() {
    const TOKEN: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc\
        .hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
    // A.2's public key, wrapped in SubjectPublicKeyInfo.
    let x = URL_SAFE_NO_PAD
        .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
        .unwrap();
    let mut spki = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    spki.extend_from_slice(&x);
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        STANDARD.encode(&spki)
    );
    let layer = JwtLayer::builder().pem(pem).build().unwrap();
    let app = serve(layer).await;
    bearer(&app.url(), TOKEN)
        .await
        .assert_invalid_token("malformed");
    let tampered = TOKEN.replace("hgyY0il_", "hgyY0il-");
    bearer(&app.url(), &tampered)
        .await
        .assert_invalid_token("bad_signature");
}

/// A layer that accepts both HS256 (with its own secret) and RS256 (with an
/// RSA key): an HS256 token "signed" with the RSA public key's bytes is
/// checked against the secret only, never against the RSA key's bytes.
#[tokio::test]
async fn algorithm_confusion_with_both_families_allowed() {
    let layer = JwtLayer::builder()
        .secret(SECRET)
        .pem_with_kid("rsa-1", &rsa().public_pem)
        .algorithms([Algorithm::HS256, Algorithm::RS256])
        .build()
        .unwrap();
    let app = serve(layer).await;
    let forged = |kid: Option<&str>| {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = kid.map(str::to_owned);
        encode(
            &h,
            &claims("mallory"),
            &EncodingKey::from_secret(rsa().public_pem.as_bytes()),
        )
        .unwrap()
    };
    // Naming the RSA key: that key cannot verify HS256.
    bearer(&app.url(), &forged(Some("rsa-1")))
        .await
        .assert_invalid_token("unknown_key");
    // Naming no key: only the real secret is tried.
    bearer(&app.url(), &forged(None))
        .await
        .assert_invalid_token("bad_signature");
    // The genuine articles pass.
    assert_eq!(bearer(&app.url(), &hs256(&claims("a"))).await.status, 200);
    let r = bearer(&app.url(), &rsa().sign(Some("rsa-1"), &claims("b"))).await;
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test]
async fn token_from_cookie_or_query() {
    let layer = JwtLayer::builder()
        .secret(SECRET)
        .token_from(TokenSource::Cookie("session".into()))
        .token_from(TokenSource::Query("access_token".into()))
        .build()
        .unwrap();
    let app = serve(layer).await;
    let token = hs256(&claims("cookie-monster"));
    let r = get(
        &app.url(),
        &[("cookie", &format!("theme=dark; session={token}"))],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["identity"]["subject"], "cookie-monster");
    let r = get(&format!("{}/x?access_token={token}", app.url()), &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    // Bearer was not configured: not a source.
    let r = bearer(&app.url(), &token).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.reason(), "missing_credentials");
}

#[tokio::test]
async fn leeway_and_required_claims() {
    let strict = JwtLayer::builder()
        .secret(SECRET)
        .leeway(Duration::ZERO)
        .build()
        .unwrap();
    let lenient = JwtLayer::builder()
        .secret(SECRET)
        .leeway(Duration::from_secs(120))
        .require_exp(false)
        .build()
        .unwrap();
    let strict = serve(strict).await;
    let lenient = serve(lenient).await;
    let just_expired = hs256(&json!({"sub": "a", "exp": now() - 30}));
    bearer(&strict.url(), &just_expired)
        .await
        .assert_invalid_token("expired");
    assert_eq!(bearer(&lenient.url(), &just_expired).await.status, 200);

    let soon = hs256(&json!({"sub": "a", "exp": now() + 600, "nbf": now() + 60}));
    bearer(&strict.url(), &soon)
        .await
        .assert_invalid_token("not_yet_valid");
    assert_eq!(bearer(&lenient.url(), &soon).await.status, 200);

    let no_exp = hs256(&json!({"sub": "a"}));
    bearer(&strict.url(), &no_exp)
        .await
        .assert_invalid_token("missing_claim");
    assert_eq!(bearer(&lenient.url(), &no_exp).await.status, 200);
}

#[tokio::test]
async fn identity_fields_from_claims() {
    let app = serve(JwtLayer::builder().secret(SECRET).build().unwrap()).await;
    let token = hs256(&json!({
        "sub": "alice",
        "azp": "mobile-app",
        "scp": ["a", "b"],
        "exp": now() + 60,
        "org": {"id": 42},
    }));
    let r = bearer(&app.url(), &token).await;
    assert_eq!(r.status, 200, "{r:?}");
    let id = &r.body["identity"];
    assert_eq!(id["consumer"], "mobile-app");
    assert_eq!(id["scopes"], json!(["a", "b"]));
    assert_eq!(id["claims"]["org"]["id"], 42);
    // Served twice, the second time from the verified-token cache.
    let again = bearer(&app.url(), &token).await;
    assert_eq!(again.body["identity"], r.body["identity"]);
}

#[tokio::test]
async fn jwt_verify_directly() {
    let jwt = towergate_auth::Jwt::builder()
        .secret(SECRET)
        .build()
        .unwrap();
    let id = jwt.verify(&hs256(&claims("direct"))).await.unwrap();
    assert_eq!(id.subject.as_deref(), Some("direct"));
    let e = jwt.verify("not-a-token").await.unwrap_err();
    assert_eq!(e.status(), 401);
    assert_eq!(e.reason(), "malformed");
}

#[tokio::test]
async fn durations_of_for_ever_do_not_panic() {
    // `Duration::MAX` for "for ever": cut to thirty years, no overflow on
    // the request path.
    let layer = JwtLayer::builder()
        .secret(SECRET)
        .audience(AUD)
        .issuer(ISS)
        .leeway(std::time::Duration::MAX)
        .cache_ttl(std::time::Duration::MAX)
        .build()
        .unwrap();
    let app = serve(layer).await;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &claims("a"),
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    for _ in 0..2 {
        let r = bearer(&app.url(), &token).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
}
