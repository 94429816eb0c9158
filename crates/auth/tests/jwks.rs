//! JWT with keys from a real JWKS server on loopback: rotation, refetch on
//! an unknown `kid`, the refetch floor against `kid` floods, a provider
//! that goes down, background refresh, and every attack.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;
use towergate_auth::{Algorithm, JwtLayer};

use common::*;

fn layer(jwks: &JwksServer, floor: Duration) -> JwtLayer {
    JwtLayer::builder()
        .jwks_url(jwks.url())
        .issuer(ISS)
        .audience(AUD)
        .algorithms([Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA])
        .jwks_ttl_bounds(Duration::from_millis(500), Duration::from_secs(3600))
        .jwks_refetch_floor(floor)
        .build()
        .unwrap()
}

/// The first answer to `token` that is not 200, asking every 100 ms for
/// up to 6 s (the set refreshes within its max-age of 1–2 s).
async fn refused_soon(url: &str, token: &str, what: &str) -> Reply {
    let start = Instant::now();
    loop {
        let r = bearer(url, token).await;
        if r.status != 200 {
            return r;
        }
        assert!(start.elapsed() < Duration::from_secs(6), "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Old tokens stay valid while their key is published; a new `kid` costs
/// exactly one refetch; once the old key is withdrawn, its tokens stop
/// working at the next refresh even though they were cached.
#[tokio::test]
async fn key_rotation() {
    let jwks = JwksServer::start(vec![rsa().jwk("k1")], 2).await;
    let app = serve(layer(&jwks, Duration::from_millis(300))).await;
    let old = rsa().sign(Some("k1"), &claims("alice"));
    let r = bearer(&app.url(), &old).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(jwks.hits(), 1);

    // The provider publishes k2 next to k1 and starts signing with it.
    jwks.set_keys(vec![rsa().jwk("k1"), rsa2().jwk("k2")]);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let new = rsa2().sign(Some("k2"), &claims("bob"));
    let before = jwks.hits();
    let r = bearer(&app.url(), &new).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        jwks.hits(),
        before + 1,
        "exactly one refetch for the new kid"
    );
    assert_eq!(bearer(&app.url(), &new).await.status, 200);
    assert_eq!(jwks.hits(), before + 1, "known kid: no refetch");

    // k1 is withdrawn: the old token keeps working until the set is
    // refreshed (max-age 2 s), then is refused although it was cached.
    jwks.set_keys(vec![rsa2().jwk("k2")]);
    assert_eq!(bearer(&app.url(), &old).await.status, 200);
    let refused = refused_soon(&app.url(), &old, "old key never removed").await;
    refused.assert_invalid_token("unknown_key");
    assert_eq!(bearer(&app.url(), &new).await.status, 200);
}

/// A token without a `kid` is verified by whichever key fits; its cache
/// entry follows that key, not the first one tried: once that key is
/// withdrawn, the token is refused although it was cached.
#[tokio::test]
async fn a_cached_token_without_kid_follows_the_key_that_verified_it() {
    let jwks = JwksServer::start(vec![rsa().jwk("k1"), rsa2().jwk("k2")], 1).await;
    let app = serve(layer(&jwks, Duration::from_millis(300))).await;
    let token = rsa2().sign(None, &claims("alice"));
    assert_eq!(bearer(&app.url(), &token).await.status, 200);
    // k2 is withdrawn; k1, tried first, is still there.
    jwks.set_keys(vec![rsa().jwk("k1")]);
    let refused = refused_soon(&app.url(), &token, "a withdrawn key's token kept passing").await;
    assert_eq!(refused.status, 401, "{refused:?}");
}

/// A provider that reuses a `kid` for new key material: tokens cached
/// under the old material are refused once the set has the new one.
#[tokio::test]
async fn a_cached_token_follows_its_key_material_not_just_its_kid() {
    let jwks = JwksServer::start(vec![rsa().jwk("k1")], 1).await;
    let app = serve(layer(&jwks, Duration::from_millis(300))).await;
    let token = rsa().sign(Some("k1"), &claims("alice"));
    assert_eq!(bearer(&app.url(), &token).await.status, 200);
    jwks.set_keys(vec![rsa2().jwk("k1")]);
    let refused = refused_soon(&app.url(), &token, "a replaced key's token kept passing").await;
    assert_eq!(refused.status, 401, "{refused:?}");
    let fresh = rsa2().sign(Some("k1"), &claims("bob"));
    assert_eq!(bearer(&app.url(), &fresh).await.status, 200);
}

/// The identity provider goes away: the last good key set keeps serving,
/// and unknown kids are refused as unknown (not as an outage).
#[tokio::test]
async fn provider_down_keeps_the_last_good_set() {
    let jwks = JwksServer::start(vec![rsa().jwk("k1")], 1).await;
    let app = serve(layer(&jwks, Duration::from_millis(200))).await;
    assert_eq!(
        bearer(&app.url(), &rsa().sign(Some("k1"), &claims("a")))
            .await
            .status,
        200
    );
    drop(jwks);
    // Past max-age: the background refresh has failed at least once.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A token never seen before (not cached) still verifies.
    let r = bearer(&app.url(), &rsa().sign(Some("k1"), &claims("fresh"))).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["identity"]["subject"], "fresh");
    // A `kid` the last good set does not know, while the provider is
    // down: perhaps a key it rotated to; an outage, not a bad token.
    let r = bearer(&app.url(), &rsa().sign(Some("k-new"), &claims("b"))).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.reason(), "keys_unavailable");
}

/// A provider that was never reachable: no key to verify with is an
/// outage, 503, not the client's fault.
#[tokio::test]
async fn provider_never_reachable_is_503() {
    let dead = dead_port().await;
    let layer = JwtLayer::builder()
        .jwks_url(format!("http://{dead}/jwks.json"))
        .audience(AUD)
        .http_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let app = serve(layer).await;
    let r = bearer(&app.url(), &rsa().sign(Some("k1"), &claims("a"))).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.reason(), "keys_unavailable");
    assert!(r.headers.get("www-authenticate").is_none());
    // An outage: the client should retry, not drop its token.
    assert_eq!(r.headers["retry-after"], "5");
}

/// 100 tokens with random kids, twice over: the floor lets at most one
/// refetch through per floor period, and concurrent callers share it.
#[tokio::test]
async fn kid_flood_is_bounded_by_the_floor() {
    let floor = Duration::from_secs(2);
    let jwks = JwksServer::start(vec![rsa().jwk("k1")], 3600).await;
    let app = serve(layer(&jwks, floor)).await;
    assert_eq!(
        bearer(&app.url(), &rsa().sign(Some("k1"), &claims("a")))
            .await
            .status,
        200
    );
    // The first fetch happened before that answer.
    let start = Instant::now();
    assert_eq!(jwks.hits(), 1);
    let rounds: Vec<Vec<String>> = (0..2)
        .map(|round| {
            (0..100)
                // Ed25519 signs fast; the kid is what matters here.
                .map(|i| ed25519().sign(Some(&format!("random-{round}-{i}")), &claims("x")))
                .collect()
        })
        .collect();
    // Past the floor of the first fetch, so the flood may cause one.
    tokio::time::sleep((floor + Duration::from_millis(100)).saturating_sub(start.elapsed())).await;

    let flood = Instant::now();
    for tokens in rounds {
        let mut tasks = tokio::task::JoinSet::new();
        for token in tokens {
            let url = app.url();
            tasks.spawn(async move { bearer(&url, &token).await });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap().assert_invalid_token("unknown_key");
        }
    }
    // One refetch, plus one per further floor period the flood lasted
    // (a slow debug build may take more than one).
    let periods = (flood.elapsed().as_secs_f64() / floor.as_secs_f64()).floor() as usize;
    let hits = jwks.hits();
    assert!(
        (2..=2 + periods).contains(&hits),
        "{hits} fetches for 200 random kids in {:?}",
        flood.elapsed()
    );
}

/// The set is refreshed in the background as `max-age` says, within the
/// bounds, without any request asking.
#[tokio::test]
async fn background_refresh_honours_max_age() {
    let short = JwksServer::start(vec![rsa().jwk("k1")], 1).await;
    let long = JwksServer::start(vec![rsa().jwk("k1")], 3600).await;
    let _a = layer(&short, Duration::from_secs(10));
    let _b = layer(&long, Duration::from_secs(10));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // max-age 1 s, refreshed at 80 %: fetches at 0, 0.8, 1.6, 2.4 s.
    assert!((2..=5).contains(&short.hits()), "{}", short.hits());
    assert_eq!(long.hits(), 1);
}

/// EC and Ed25519 keys from the JWKS, next to RSA.
#[tokio::test]
async fn jwks_with_ec_and_ed25519_keys() {
    let jwks = JwksServer::start(
        vec![rsa().jwk("r"), ec256().jwk("e"), ed25519().jwk("d")],
        3600,
    )
    .await;
    let app = serve(layer(&jwks, Duration::from_secs(10))).await;
    for (key, kid) in [(rsa(), "r"), (ec256(), "e"), (ed25519(), "d")] {
        let r = bearer(&app.url(), &key.sign(Some(kid), &claims("k"))).await;
        assert_eq!(r.status, 200, "{kid}: {r:?}");
    }
    // The EC key's kid on an EdDSA token: that key cannot verify it.
    bearer(&app.url(), &ed25519().sign(Some("e"), &claims("k")))
        .await
        .assert_invalid_token("unknown_key");
}

fn b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

#[tokio::test]
async fn every_attack_is_refused() {
    let jwks = JwksServer::start(vec![rsa().jwk("k1")], 3600).await;
    let app = serve(layer(&jwks, Duration::from_secs(10))).await;
    let url = app.url();
    let sign = |c: serde_json::Value| rsa().sign(Some("k1"), &c);
    let good = sign(claims("alice"));
    assert_eq!(bearer(&url, &good).await.status, 200);

    // alg: none, any spelling, no signature.
    for alg in ["none", "None", "NONE"] {
        let t = format!(
            "{}.{}.",
            b64(&format!(r#"{{"alg":"{alg}","typ":"JWT","kid":"k1"}}"#)),
            b64(&claims("mallory").to_string())
        );
        bearer(&url, &t)
            .await
            .assert_invalid_token("algorithm_not_allowed");
    }
    let r = bearer(
        &url,
        &format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64("{}")),
    )
    .await;
    assert!(
        r.challenge()
            .contains("error_description=\"unsigned tokens"),
        "{r:?}"
    );

    // HS256 "signed" with the RSA public key (as published) as the secret.
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("k1".into());
    let confused = encode(
        &h,
        &claims("mallory"),
        &EncodingKey::from_secret(rsa().public_pem.as_bytes()),
    )
    .unwrap();
    bearer(&url, &confused)
        .await
        .assert_invalid_token("algorithm_not_allowed");

    // Time claims.
    let mut c = claims("a");
    c["exp"] = json!(now() - 3600);
    bearer(&url, &sign(c)).await.assert_invalid_token("expired");
    let mut c = claims("a");
    c["nbf"] = json!(now() + 3600);
    bearer(&url, &sign(c))
        .await
        .assert_invalid_token("not_yet_valid");
    let mut c = claims("a");
    c["iat"] = json!(now() + 3600);
    bearer(&url, &sign(c))
        .await
        .assert_invalid_token("issued_in_future");
    let mut c = claims("a");
    c.as_object_mut().unwrap().remove("exp");
    bearer(&url, &sign(c))
        .await
        .assert_invalid_token("missing_claim");

    // Issuer and audience.
    let mut c = claims("a");
    c["iss"] = json!("https://evil.test");
    bearer(&url, &sign(c))
        .await
        .assert_invalid_token("wrong_issuer");
    // An array holding the accepted issuer is not that issuer.
    let mut c = claims("a");
    c["iss"] = json!(["https://evil.test", c["iss"].clone()]);
    bearer(&url, &sign(c))
        .await
        .assert_invalid_token("wrong_issuer");
    // An `exp` far beyond what an `Instant` holds: accepted, and cached
    // for the cache's own time (it overflowed and panicked).
    let mut c = claims("a");
    c["exp"] = json!(10_000_000_000_000_000_000u64);
    let reply = bearer(&url, &sign(c)).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let mut c = claims("a");
    c.as_object_mut().unwrap().remove("iss");
    bearer(&url, &sign(c))
        .await
        .assert_invalid_token("missing_claim");
    let mut c = claims("a");
    c["aud"] = json!(["billing", "reports"]);
    bearer(&url, &sign(c))
        .await
        .assert_invalid_token("wrong_audience");

    // Signatures: tampered, or by another key under the right kid.
    let (head, sig) = good.rsplit_once('.').unwrap();
    let mid = sig.len() / 2;
    let flipped = if &sig[mid..=mid] == "A" { "B" } else { "A" };
    let tampered = format!("{head}.{}{flipped}{}", &sig[..mid], &sig[mid + 1..]);
    bearer(&url, &tampered)
        .await
        .assert_invalid_token("bad_signature");
    bearer(&url, &rsa2().sign(Some("k1"), &claims("mallory")))
        .await
        .assert_invalid_token("bad_signature");
    // Claims changed after signing.
    let parts: Vec<&str> = good.split('.').collect();
    let mut c = claims("root");
    c["scope"] = json!("admin");
    let swapped = format!("{}.{}.{}", parts[0], b64(&c.to_string()), parts[2]);
    bearer(&url, &swapped)
        .await
        .assert_invalid_token("bad_signature");

    // Truncated, in two ways.
    bearer(&url, head).await.assert_invalid_token("malformed");
    let short = &good[..good.len() - 20];
    let r = bearer(&url, short).await;
    assert!(
        ["bad_signature", "malformed"].contains(&r.reason()),
        "{r:?}"
    );
    r.assert_invalid_token(r.reason());

    // Oversized: refused before parsing.
    let mut c = claims("a");
    c["pad"] = json!("x".repeat(9000));
    bearer(&url, &sign(c))
        .await
        .assert_invalid_token("token_too_large");

    // Garbage.
    bearer(&url, "@@@.###.$$$")
        .await
        .assert_invalid_token("malformed");
    bearer(&url, &format!("{}.{}.c2ln", b64("nope"), b64("{}")))
        .await
        .assert_invalid_token("malformed");
    bearer(&url, "a.b.c.d")
        .await
        .assert_invalid_token("malformed");
    bearer(
        &url,
        &format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"RS256","crit":["b64"]}"#),
            b64("{}")
        ),
    )
    .await
    .assert_invalid_token("unsupported_header");

    // The good token still passes after all this.
    assert_eq!(bearer(&url, &good).await.status, 200);
}

/// One identity provider, two routes with different audiences: a token
/// for one is refused by the other.
#[tokio::test]
async fn token_for_another_routes_audience() {
    let jwks = JwksServer::start(vec![rsa().jwk("k1")], 3600).await;
    let route_layer = |aud: &str| {
        JwtLayer::builder()
            .jwks_url(jwks.url())
            .issuer(ISS)
            .audience(aud)
            .build()
            .unwrap()
    };
    let app = axum::Router::new()
        .nest(
            "/orders",
            axum::Router::new()
                .fallback(echo)
                .layer(route_layer("orders")),
        )
        .nest(
            "/billing",
            axum::Router::new()
                .fallback(echo)
                .layer(route_layer("billing")),
        );
    let app = towergate_test::spawn_upstream(app).await;
    let mut c = claims("a");
    c["aud"] = json!("billing");
    let billing_token = rsa().sign(Some("k1"), &c);
    let r = bearer(&format!("{}/billing/x", app.url()), &billing_token).await;
    assert_eq!(r.status, 200, "{r:?}");
    bearer(&format!("{}/orders/x", app.url()), &billing_token)
        .await
        .assert_invalid_token("wrong_audience");
}

/// Built where no Tokio runtime runs (a sync `main` building its stack):
/// the fetcher starts on first use instead.
#[test]
fn built_outside_a_runtime() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let jwks = rt.block_on(JwksServer::start(vec![rsa().jwk("k1")], 3600));
    let layer = layer(&jwks, Duration::from_secs(10));
    assert_eq!(jwks.hits(), 0);
    rt.block_on(async {
        let app = serve(layer).await;
        let r = bearer(&app.url(), &rsa().sign(Some("k1"), &claims("a"))).await;
        assert_eq!(r.status, 200, "{r:?}");
    });
    assert_eq!(jwks.hits(), 1);
}

#[tokio::test]
async fn configured_keys_beside_a_jwks_and_more_than_four_of_them() {
    // A PEM key (which has no id) beside the provider's JWKS, as during a
    // migration: the provider's tokens still verify, and so do the PEM
    // key's; a token neither signed does not.
    let jwks = JwksServer::start(vec![rsa().jwk("k1")], 60).await;
    let layer = JwtLayer::builder()
        .jwks_url(jwks.url())
        .issuer(ISS)
        .audience(AUD)
        .algorithms([Algorithm::RS256])
        .pem(&rsa2().public_pem)
        .build()
        .unwrap();
    let app = serve(layer).await;
    let r = bearer(&app.url(), &rsa().sign(Some("k1"), &claims("idp"))).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = bearer(&app.url(), &rsa2().sign(None, &claims("own"))).await;
    assert_eq!(r.status, 200, "{r:?}");
    let forged = format!("{}x", rsa().sign(Some("k1"), &claims("idp")));
    assert_eq!(bearer(&app.url(), &forged).await.status, 401);

    // Five configured keys without ids: the fifth's tokens verify too.
    let keys: Vec<TestKey> = (0..5).map(|_| fresh_ec256()).collect();
    let mut b = JwtLayer::builder()
        .issuer(ISS)
        .audience(AUD)
        .algorithms([Algorithm::ES256]);
    for k in &keys {
        b = b.pem(&k.public_pem);
    }
    let app = serve(b.build().unwrap()).await;
    let r = bearer(&app.url(), &keys[4].sign(None, &claims("fifth"))).await;
    assert_eq!(r.status, 200, "{r:?}");
}
