//! What authentication costs per request: JWT verification (RS256, ES256,
//! HS256; uncached, and served from the verified-token cache) and an
//! API-key lookup among 10 000 keys.
//!
//! ```text
//! cargo bench -p towergate-auth -- --warm-up-time 1 --measurement-time 3
//! ```
#![allow(clippy::unwrap_used, missing_docs)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{EncodingKey, Header, encode, get_current_timestamp};
use serde_json::json;
use towergate_auth::{Algorithm, ApiKeys, Consumer, Jwt};

const SECRET: &[u8] = b"a benchmark secret of at least 32 bytes";

/// Verification with static keys never waits: one poll finishes it, so the
/// figures hold no executor overhead.
fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("static-key verification should not wait"),
    }
}

struct Case {
    name: &'static str,
    token: String,
    uncached: Jwt,
    cached: Jwt,
}

/// A token, and verifiers with the cache off and on.
fn case(name: &'static str, alg: Algorithm, enc: EncodingKey, make: impl Fn(usize) -> Jwt) -> Case {
    let claims = json!({
        "sub": "alice",
        "iss": "https://idp.bench",
        "aud": "orders",
        "scope": "orders:read orders:write profile",
        "exp": get_current_timestamp() + 3600,
        "iat": get_current_timestamp(),
    });
    let token = encode(&Header::new(alg), &claims, &enc).unwrap();
    Case {
        name,
        token,
        uncached: make(0),
        cached: make(10_000),
    }
}

fn jwt(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _enter = rt.enter();

    let rsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let builder = |pem: Option<String>, cache: usize| {
        let b = Jwt::builder()
            .issuer("https://idp.bench")
            .audience("orders")
            .cache_capacity(cache);
        match pem {
            Some(p) => b.pem(p),
            None => b.secret(SECRET),
        }
        .build()
        .unwrap()
    };
    let cases = [
        case(
            "RS256",
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(rsa.serialize_pem().as_bytes()).unwrap(),
            |cache| builder(Some(rsa.public_key_pem()), cache),
        ),
        case(
            "ES256",
            Algorithm::ES256,
            EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap(),
            |cache| builder(Some(ec.public_key_pem()), cache),
        ),
        case(
            "HS256",
            Algorithm::HS256,
            EncodingKey::from_secret(SECRET),
            |cache| builder(None, cache),
        ),
    ];
    let mut group = c.benchmark_group("jwt");
    for case in cases {
        assert!(now(case.uncached.verify(&case.token)).is_ok());
        assert!(now(case.cached.verify(&case.token)).is_ok());
        group.bench_function(format!("{}/uncached", case.name), |b| {
            b.iter(|| now(case.uncached.verify(black_box(&case.token))).unwrap())
        });
        group.bench_function(format!("{}/cached", case.name), |b| {
            b.iter(|| now(case.cached.verify(black_box(&case.token))).unwrap())
        });
    }
    group.finish();
}

fn api_key(c: &mut Criterion) {
    let mut b = ApiKeys::builder();
    for i in 0..10_000 {
        b = b.key(
            format!("key-{i:05}-{}", "x".repeat(24)),
            Consumer::new(format!("c{i}")),
        );
    }
    let keys = b.build().unwrap();
    let present = format!("key-04242-{}", "x".repeat(24));
    let absent = format!("key-99999-{}", "x".repeat(24));
    assert!(keys.lookup(&present).is_some());
    let mut group = c.benchmark_group("api_key");
    group.bench_function("lookup/hit", |b| {
        b.iter(|| keys.lookup(black_box(&present)).is_some())
    });
    group.bench_function("lookup/miss", |b| {
        b.iter(|| keys.lookup(black_box(&absent)).is_none())
    });
    group.finish();
}

criterion_group!(benches, jwt, api_key);
criterion_main!(benches);
