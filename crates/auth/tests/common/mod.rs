//! Shared test helpers: keys made with rcgen, tokens signed by the
//! independent `jsonwebtoken` crate, a real JWKS server, and an echo app
//! served on loopback.
#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use http::HeaderMap;
use http::header::{CACHE_CONTROL, CONNECTION};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use towergate_core::Identity;
use towergate_test::{Upstream, spawn_upstream};

pub const ISS: &str = "https://idp.test";
pub const AUD: &str = "orders";
pub const SECRET: &[u8] = b"a test secret that is long enough, 48 bytes ok!";

/// A signing key and what a verifier needs of it.
pub struct TestKey {
    pub alg: Algorithm,
    pub enc: EncodingKey,
    pub public_pem: String,
    pub private_pem: String,
    jwk: Value,
}

impl TestKey {
    fn generate(rc: &'static rcgen::SignatureAlgorithm, alg: Algorithm) -> Self {
        let kp = rcgen::KeyPair::generate_for(rc).unwrap();
        let private_pem = kp.serialize_pem();
        let enc = match alg {
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(private_pem.as_bytes()),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(private_pem.as_bytes()),
            _ => EncodingKey::from_rsa_pem(private_pem.as_bytes()),
        }
        .unwrap();
        let jwk = match alg {
            // jsonwebtoken wants PKCS#8 v2 to derive an Ed25519 JWK; the
            // raw public key is all an OKP JWK holds anyway.
            Algorithm::EdDSA => json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(kp.public_key_raw()),
            }),
            _ => serde_json::to_value(Jwk::from_encoding_key(&enc, alg).unwrap()).unwrap(),
        };
        Self {
            alg,
            enc,
            public_pem: kp.public_key_pem(),
            private_pem,
            jwk,
        }
    }

    /// The public JWK with `kid`, as an identity provider publishes it.
    pub fn jwk(&self, kid: &str) -> Value {
        let mut v = self.jwk.clone();
        v["kid"] = json!(kid);
        v["use"] = json!("sig");
        v
    }

    /// A token signed with this key's algorithm.
    pub fn sign(&self, kid: Option<&str>, claims: &Value) -> String {
        self.sign_as(self.alg, kid, claims)
    }

    /// A token signed with another algorithm of the same family.
    pub fn sign_as(&self, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
        let mut h = Header::new(alg);
        h.kid = kid.map(str::to_owned);
        encode(&h, claims, &self.enc).unwrap()
    }
}

macro_rules! key {
    ($name:ident, $rc:expr, $alg:expr) => {
        pub fn $name() -> &'static TestKey {
            static K: OnceLock<TestKey> = OnceLock::new();
            K.get_or_init(|| TestKey::generate($rc, $alg))
        }
    };
}

key!(rsa, &rcgen::PKCS_RSA_SHA256, Algorithm::RS256);
key!(rsa2, &rcgen::PKCS_RSA_SHA256, Algorithm::RS256);
key!(ec256, &rcgen::PKCS_ECDSA_P256_SHA256, Algorithm::ES256);
key!(ec384, &rcgen::PKCS_ECDSA_P384_SHA384, Algorithm::ES384);
key!(ed25519, &rcgen::PKCS_ED25519, Algorithm::EdDSA);

/// A new ES256 key, each call another.
pub fn fresh_ec256() -> TestKey {
    TestKey::generate(&rcgen::PKCS_ECDSA_P256_SHA256, Algorithm::ES256)
}

pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Claims a well-configured layer accepts.
pub fn claims(sub: &str) -> Value {
    json!({
        "sub": sub,
        "iss": ISS,
        "aud": AUD,
        "exp": now() + 600,
        "iat": now(),
        "scope": "orders:read profile",
    })
}

/// An HS256 token over `SECRET`.
pub fn hs256(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

// === a real JWKS server ===

#[derive(Clone)]
struct JwksState {
    keys: Arc<Mutex<Vec<Value>>>,
    hits: Arc<AtomicUsize>,
    max_age: Arc<AtomicU64>,
}

/// An identity provider's JWKS endpoint on loopback whose key set the test
/// changes and whose hits it counts.
pub struct JwksServer {
    pub server: Upstream,
    state: JwksState,
}

impl JwksServer {
    pub async fn start(keys: Vec<Value>, max_age: u64) -> Self {
        let state = JwksState {
            keys: Arc::new(Mutex::new(keys)),
            hits: Arc::new(AtomicUsize::new(0)),
            max_age: Arc::new(AtomicU64::new(max_age)),
        };
        let app = Router::new()
            .route("/jwks.json", axum::routing::get(jwks))
            .with_state(state.clone());
        Self {
            server: spawn_upstream(app).await,
            state,
        }
    }

    pub fn url(&self) -> String {
        format!("{}/jwks.json", self.server.url())
    }

    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    pub fn set_keys(&self, keys: Vec<Value>) {
        *self.state.keys.lock().unwrap() = keys;
    }

    pub fn set_max_age(&self, secs: u64) {
        self.state.max_age.store(secs, Ordering::SeqCst);
    }
}

async fn jwks(State(s): State<JwksState>) -> Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let keys = s.keys.lock().unwrap().clone();
    let max_age = s.max_age.load(Ordering::SeqCst);
    (
        [
            (CACHE_CONTROL, format!("public, max-age={max_age}")),
            // No keep-alive: once the server is stopped, it is unreachable.
            (CONNECTION, "close".to_owned()),
        ],
        axum::Json(json!({ "keys": keys })),
    )
        .into_response()
}

/// A port nothing listens on.
pub async fn dead_port() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

// === an echo app behind the layer ===

/// Answers with what reached it: URI, headers, and the identity the layer
/// set, as JSON.
pub async fn echo(req: Request) -> axum::Json<Value> {
    let mut headers = serde_json::Map::new();
    for (k, v) in req.headers() {
        let e = headers
            .entry(k.as_str().to_owned())
            .or_insert_with(|| json!([]));
        e.as_array_mut()
            .unwrap()
            .push(json!(String::from_utf8_lossy(v.as_bytes())));
    }
    let identity = req.extensions().get::<Identity>().map(|id| {
        json!({
            "subject": id.subject,
            "consumer": id.consumer,
            "issuer": id.issuer,
            "scopes": id.scopes,
            "claims": id.claims,
            "method": id.method,
        })
    });
    axum::Json(json!({
        "uri": req.uri().to_string(),
        "headers": headers,
        "identity": identity,
    }))
}

/// Serves the echo app behind `layer` on loopback.
pub async fn serve<L>(layer: L) -> Upstream
where
    L: tower::Layer<axum::routing::Route> + Clone + Send + Sync + 'static,
    L::Service: tower::Service<Request> + Clone + Send + Sync + 'static,
    <L::Service as tower::Service<Request>>::Response: IntoResponse + 'static,
    <L::Service as tower::Service<Request>>::Error: Into<std::convert::Infallible> + 'static,
    <L::Service as tower::Service<Request>>::Future: Send + 'static,
{
    spawn_upstream(Router::new().fallback(echo).layer(layer)).await
}

/// What a client saw.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The single `WWW-Authenticate` value.
    pub fn challenge(&self) -> &str {
        self.headers
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    pub fn challenges(&self) -> Vec<String> {
        self.headers
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    pub fn reason(&self) -> &str {
        self.body["reason"].as_str().unwrap_or("")
    }

    /// Asserts a 401 problem with `reason` and an `invalid_token` bearer
    /// challenge.
    #[track_caller]
    pub fn assert_invalid_token(&self, reason: &str) {
        assert_eq!(self.status, 401, "{self:?}");
        assert_eq!(self.reason(), reason, "{self:?}");
        assert_eq!(
            self.headers["content-type"], "application/problem+json",
            "{self:?}"
        );
        let c = self.challenge();
        assert!(
            c.starts_with("Bearer realm=\"api\", error=\"invalid_token\", error_description=\""),
            "{c}"
        );
        // The detail is about the token, never its content.
        let detail = self.body["detail"].as_str().unwrap();
        assert!(!detail.contains("eyJ"), "{detail}");
    }
}

thread_local! {
    // One client per test: libtest runs each test on a thread of its own,
    // and building a client (loading the system roots) is not free.
    static CLIENT: reqwest::Client = reqwest::Client::new();
}

pub fn client() -> reqwest::Client {
    CLIENT.with(Clone::clone)
}

/// GET `url` with `headers`.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = client().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let rsp = req.send().await.unwrap();
    let status = rsp.status().as_u16();
    let headers = rsp.headers().clone();
    let bytes = rsp.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Reply {
        status,
        headers,
        body,
    }
}

/// GET `url` with `Authorization: Bearer token`.
pub async fn bearer(url: &str, token: &str) -> Reply {
    get(url, &[("authorization", &format!("Bearer {token}"))]).await
}
