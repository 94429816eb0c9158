//! A bounded cache whose entries expire, keyed by a cryptographic digest.
//!
//! Verified tokens, introspection answers and password checks are cached
//! under the digest of the credential, never the credential itself: a
//! memory dump shows no usable token.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

/// The digest of a credential.
pub(crate) type Key = [u8; 32];

/// The cache key of a credential made of the concatenated `parts`: its
/// SHA-256 where the CPU has SHA instructions, its BLAKE3 elsewhere.
///
/// Both are collision and preimage resistant, which is all a cache key
/// needs: no one can make a token whose key is that of another, and the
/// key does not give the token back. They differ in cost. A JWT of about
/// 550 bytes takes 0.33 µs with the SHA extensions (every AMD Zen, most
/// Intel since Ice Lake, ARMv8 with the crypto extensions), but 2.6 µs in
/// portable SHA-256 code on the hosts without them (Intel Skylake and
/// Cascade Lake servers, common in clouds); BLAKE3 takes 0.67 µs there.
/// Keys live only in this process's memory, so which digest a process
/// uses is its own choice, made once.
///
/// API keys are not cached credentials: their digests are SHA-256 always
/// ([`sha256_of`]), as configured `key_sha256` digests are.
pub(crate) fn key_of(parts: &[&[u8]]) -> Key {
    if sha_instructions() {
        sha256_of(parts)
    } else {
        blake3_of(parts)
    }
}

/// SHA-256 of the concatenated parts.
pub(crate) fn sha256_of(parts: &[&[u8]]) -> Key {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// BLAKE3 of the concatenated parts.
fn blake3_of(parts: &[&[u8]]) -> Key {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// Whether `sha2` runs SHA-256 on the CPU's SHA instructions here: asked
/// the way `sha2` asks (`cpufeatures`, with the same features), so that
/// both agree on every target and OS. Detected once.
#[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
fn sha_instructions() -> bool {
    cpufeatures::new!(sha_cpuid, "sha", "sse4.1");
    sha_cpuid::get()
}

/// See the x86 version.
#[cfg(target_arch = "aarch64")]
fn sha_instructions() -> bool {
    cpufeatures::new!(sha2_hwcap, "sha2");
    sha2_hwcap::get()
}

/// `sha2` has no accelerated code for this target.
#[cfg(not(any(target_arch = "x86_64", target_arch = "x86", target_arch = "aarch64")))]
fn sha_instructions() -> bool {
    false
}

/// A per-process random salt, so that cache keys of low-entropy secrets
/// (passwords) cannot be reversed by hashing guesses offline.
pub(crate) fn random_salt() -> [u8; 16] {
    // RandomState is seeded from the OS; two of them give 128 random bits
    // without another dependency.
    let a = std::collections::hash_map::RandomState::new().build_hasher();
    let b = std::collections::hash_map::RandomState::new().build_hasher();
    let mut out = [0u8; 16];
    let mut ha = a;
    0xa5u8.hash(&mut ha);
    let mut hb = b;
    0x5au8.hash(&mut hb);
    out[..8].copy_from_slice(&ha.finish().to_le_bytes());
    out[8..].copy_from_slice(&hb.finish().to_le_bytes());
    out
}

const SHARDS: usize = 16;

type Shard<V> = Mutex<HashMap<Key, Entry<V>, DigestState>>;

/// Hashes a [`Key`] for the cache's maps from its first 8 bytes: a key is
/// a digest already, so SipHash over all 32 bytes (about 270 instructions
/// a look-up) would add nothing. The bytes are mixed with a per-process
/// random seed, so that keys ground to share their low bits (a cache of
/// refusals takes any token) do not share a bucket.
#[derive(Clone, Copy)]
struct DigestState(u64);

struct DigestHasher {
    seed: u64,
    state: u64,
}

/// Sharded so that concurrent requests rarely wait on the same lock.
pub(crate) struct TtlCache<V> {
    shards: Box<[Shard<V>]>,
    per_shard: usize,
}

struct Entry<V> {
    value: V,
    expires: Instant,
}

// === impl TtlCache ===

impl<V: Clone> TtlCache<V> {
    /// A cache of at most about `capacity` entries (rounded up to a
    /// multiple of the shard count).
    pub(crate) fn new(capacity: usize) -> Self {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        let shards = (0..SHARDS)
            .map(|_| Mutex::new(HashMap::with_hasher(DigestState::random())))
            .collect::<Vec<_>>()
            .into_boxed_slice();
        Self { shards, per_shard }
    }

    fn shard(&self, key: &Key) -> &Shard<V> {
        // The key is a digest: its first byte is uniformly distributed.
        &self.shards[usize::from(key[0]) % SHARDS]
    }

    /// The value, if present and not expired.
    pub(crate) fn get(&self, key: &Key) -> Option<V> {
        let now = Instant::now();
        let mut shard = self.shard(key).lock();
        match shard.get(key) {
            Some(e) if e.expires > now => Some(e.value.clone()),
            Some(_) => {
                shard.remove(key);
                None
            }
            None => None,
        }
    }

    /// Stores `value` until `expires`. When the shard is full, expired
    /// entries go first, then the one closest to expiry.
    pub(crate) fn insert(&self, key: Key, value: V, expires: Instant) {
        let now = Instant::now();
        if expires <= now {
            return;
        }
        let mut shard = self.shard(&key).lock();
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            shard.retain(|_, e| e.expires > now);
            if shard.len() >= self.per_shard
                && let Some(victim) = shard.iter().min_by_key(|(_, e)| e.expires).map(|(k, _)| *k)
            {
                shard.remove(&victim);
            }
        }
        shard.insert(key, Entry { value, expires });
    }

    /// Forgets `key`.
    pub(crate) fn remove(&self, key: &Key) {
        self.shard(key).lock().remove(key);
    }

    /// The number of entries, expired ones included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

// === impl DigestState ===

impl DigestState {
    fn random() -> Self {
        let salt = random_salt();
        let mut seed = [0; 8];
        seed.copy_from_slice(&salt[..8]);
        Self(u64::from_le_bytes(seed))
    }
}

impl BuildHasher for DigestState {
    type Hasher = DigestHasher;

    fn build_hasher(&self) -> DigestHasher {
        DigestHasher {
            seed: self.0,
            state: 0,
        }
    }
}

impl Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        // A key is written as its length, then its 32 bytes: both are
        // constant but the first 8 bytes of the digest.
        let word = match bytes.get(..8) {
            Some(eight) => {
                let mut w = [0; 8];
                w.copy_from_slice(eight);
                u64::from_le_bytes(w)
            }
            None => bytes.iter().fold(0, |w, &b| (w << 8) | u64::from(b)),
        };
        self.state = self.state.rotate_left(29) ^ word;
    }

    fn finish(&self) -> u64 {
        // Two folded multiplies, by a constant and by the seed: every bit
        // of the state reaches the low bits, which pick the bucket, and the
        // high 7, hashbrown's tag, in a way that depends on the seed. (One
        // multiply by the seed alone leaves keys that differ only in their
        // high bits in a few buckets for some seeds: a test below.)
        folded_multiply(
            folded_multiply(self.state ^ self.seed, 0x9e37_79b9_7f4a_7c15),
            self.seed | 1,
        )
    }
}

/// The high and low halves of the full product, XORed.
fn folded_multiply(a: u64, b: u64) -> u64 {
    let m = u128::from(a) * u128::from(b);
    (m as u64) ^ ((m >> 64) as u64)
}

impl<V> fmt::Debug for TtlCache<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys are digests of credentials and values identities: neither is
        // worth printing.
        let len: usize = self.shards.iter().map(|s| s.lock().len()).sum();
        f.debug_struct("TtlCache")
            .field("len", &len)
            .field("capacity", &(self.per_shard * SHARDS))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn expiry_and_bound() {
        let c = TtlCache::new(16);
        let k = key_of(&[b"a"]);
        c.insert(k, 1, Instant::now() + Duration::from_secs(1));
        assert_eq!(c.get(&k), Some(1));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(c.get(&k), None);

        for i in 0..1000u32 {
            c.insert(
                key_of(&[&i.to_le_bytes()]),
                i,
                Instant::now() + Duration::from_secs(10),
            );
        }
        assert!(c.len() <= 16, "{}", c.len());
    }

    /// The published test vectors of both digests, for "abc", and a key
    /// that is one of them, split anywhere.
    #[test]
    fn digests_are_sha256_or_blake3() {
        let hex = |k: Key| k.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let blake = "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85";
        assert_eq!(hex(sha256_of(&[b"abc"])), sha);
        assert_eq!(hex(sha256_of(&[b"a", b"", b"bc"])), sha);
        assert_eq!(hex(blake3_of(&[b"abc"])), blake);
        assert_eq!(hex(blake3_of(&[b"ab", b"c"])), blake);
        let key = hex(key_of(&[b"a", b"bc"]));
        let expected = if sha_instructions() { sha } else { blake };
        assert_eq!(key, expected);
        assert_ne!(key_of(&[b"abc"]), key_of(&[b"abd"]));
    }

    #[test]
    fn digest_hasher_spreads_keys() {
        let state = DigestState::random();
        let hash = |k: &Key| state.hash_one(k);
        let a = key_of(&[b"a"]);
        assert_eq!(hash(&a), hash(&a));
        let mut b = a;
        b[0] ^= 1;
        assert_ne!(hash(&a), hash(&b));
        // 1,000 keys that differ only in 4 bytes of the first 8 (low, middle
        // or high bits of the word), under many seeds: the low 10 bits (the
        // bucket in a map of 1,024) and the top 7 (hashbrown's tag) take
        // about as many values as random hashes would (~632 and ~128).
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..64 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let state = DigestState(rng);
            for at in [0, 2, 4] {
                let hashes: Vec<u64> = (0..1000u32)
                    .map(|i| {
                        let mut k = [0u8; 32];
                        k[at..at + 4].copy_from_slice(&i.to_le_bytes());
                        state.hash_one(k)
                    })
                    .collect();
                let distinct = |bits: fn(u64) -> u64| {
                    hashes
                        .iter()
                        .map(|&h| bits(h))
                        .collect::<std::collections::HashSet<u64>>()
                        .len()
                };
                let (low, tag) = (distinct(|h| h & 0x3ff), distinct(|h| h >> 57));
                assert!(
                    low > 550 && tag > 100,
                    "seed {rng:#x}, at {at}: {low}, {tag}"
                );
            }
        }
    }

    #[test]
    fn salts_differ() {
        assert_ne!(random_salt(), random_salt());
    }
}
