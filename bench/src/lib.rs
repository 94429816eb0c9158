//! Shared bits of the benchmark binaries: argument parsing, runtimes and
//! latency percentiles. The binaries are driven by `bench/run.sh` and
//! `bench/instructions.sh`; see `docs/benchmarks.md`.

use std::net::SocketAddr;
use std::time::Duration;

/// The error type of the benchmark binaries.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Reads `--name value` from the command line, or `default`.
pub fn arg(name: &str, default: &str) -> String {
    let mut args = std::env::args();
    while let Some(a) = args.next() {
        if a == name {
            return args.next().unwrap_or_else(|| default.to_owned());
        }
    }
    default.to_owned()
}

/// Reads `--name value` and parses it, naming the argument in the error.
pub fn parsed<T>(name: &str, default: &str) -> Result<T, Error>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let v = arg(name, default);
    v.parse::<T>()
        .map_err(|e| format!("{name} {v}: {e}").into())
}

/// Whether `--name` was given (with or without a value).
pub fn has(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

/// Parses an address argument.
pub fn addr_arg(name: &str, default: &str) -> Result<SocketAddr, Error> {
    parsed(name, default)
}

/// A duration given in (fractional) seconds.
pub fn secs_arg(name: &str, default: &str) -> Result<Duration, Error> {
    let s: f64 = parsed(name, default)?;
    Duration::try_from_secs_f64(s).map_err(|e| format!("{name} {s}: {e}").into())
}

/// A runtime with `threads` workers (1 = current-thread, the cheapest).
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

/// Latency summary of a run, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Percentiles {
    /// Number of samples.
    pub count: usize,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
}

/// Nearest-rank percentiles of `samples` (sorted in place).
pub fn percentiles(samples: &mut [u64]) -> Percentiles {
    samples.sort_unstable();
    let n = samples.len();
    let at = |q: f64| -> u64 {
        if n == 0 {
            return 0;
        }
        // Nearest rank: the smallest sample with at least q of them at or below it.
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        samples.get(rank - 1).copied().unwrap_or(0)
    };
    Percentiles {
        count: n,
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        p999: at(0.999),
        max: samples.last().copied().unwrap_or(0),
    }
}

/// The JWK of a P-256 public key given as its uncompressed point
/// (`0x04 || x || y`, 65 bytes), with key id `kid`: one member of a JWKS's
/// `keys` (what `jwt-token --alg ES256` writes).
pub fn es256_jwk(point: &[u8], kid: &str) -> Result<serde_json::Value, Error> {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (x, y) = match point {
        [0x04, rest @ ..] if rest.len() == 64 => rest.split_at(32),
        _ => return Err("not an uncompressed P-256 point".into()),
    };
    Ok(serde_json::json!({
        "kty": "EC",
        "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(x),
        "y": URL_SAFE_NO_PAD.encode(y),
        "kid": kid,
        "alg": "ES256",
        "use": "sig",
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        let p = percentiles(&mut v);
        assert_eq!(
            (p.count, p.p50, p.p90, p.p99, p.max),
            (100, 50, 90, 99, 100)
        );
        assert_eq!(percentiles(&mut []), Percentiles::default());
        assert_eq!(percentiles(&mut [7]).p999, 7);
    }

    #[test]
    fn es256_jwk_verifies_the_tokens_of_its_key() {
        use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(es256_jwk(pair.public_key_raw(), "a").unwrap()).unwrap();
        assert_eq!(jwk.common.key_id.as_deref(), Some("a"));
        let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        let claims =
            serde_json::json!({ "sub": "s", "exp": jsonwebtoken::get_current_timestamp() + 60 });
        let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &key).unwrap();
        let decoded = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &DecodingKey::from_jwk(&jwk).unwrap(),
            &Validation::new(Algorithm::ES256),
        )
        .unwrap();
        assert_eq!(decoded.claims["sub"], "s");
        // Another key's JWK does not verify it.
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let other: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(es256_jwk(other.public_key_raw(), "b").unwrap()).unwrap();
        assert!(
            jsonwebtoken::decode::<serde_json::Value>(
                &token,
                &DecodingKey::from_jwk(&other).unwrap(),
                &Validation::new(Algorithm::ES256),
            )
            .is_err()
        );
        assert!(es256_jwk(&[0x04; 33], "c").is_err());
    }
}
