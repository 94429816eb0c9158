//! Consistent hashing on a ring with virtual nodes (ketama style).
//!
//! Each endpoint is hashed onto the ring at `160 × weight` points; a key
//! goes to the first point at or after its hash. When an endpoint leaves,
//! only the keys that landed on its points move (about `1/N` of them), and
//! they spread over the remaining endpoints instead of piling onto one
//! neighbour. An endpoint that is unhealthy or already tried is skipped by
//! walking on to the next point, which needs no rebuild and keeps every
//! other key where it was.
//!
//! The hash is a fixed FNV-1a with a murmur3 finaliser, not `std`'s
//! `DefaultHasher`: every gateway instance, whatever its Rust version, must
//! send a key to the same endpoint.

/// Virtual nodes per unit of weight.
pub const VNODES_PER_WEIGHT: u32 = 160;

/// Most virtual nodes one endpoint gets, whatever its weight, so that a
/// huge weight cannot make the ring huge.
pub const MAX_VNODES: u32 = 160 * 64;

/// A hash ring over endpoints `0..n`.
///
/// ```
/// use towergate_balance::algorithm::{ring, Ring};
///
/// let r = Ring::new([("a", 1), ("b", 1), ("c", 1)]);
/// let key = ring::hash64(b"user-42");
/// let owner = r.lookup(key, |_| true).unwrap();
/// // The same key always lands on the same endpoint...
/// assert_eq!(r.lookup(key, |_| true), Some(owner));
/// // ...and moves only when that endpoint is out.
/// let next = r.lookup(key, |i| i != owner).unwrap();
/// assert_ne!(next, owner);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Ring {
    points: Vec<Point>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Point {
    hash: u64,
    member: u32,
}

/// FNV-1a, stable across platforms and Rust versions.
#[derive(Clone, Copy, Debug)]
struct Fnv(u64);

// === impl Ring ===

impl Ring {
    /// Builds the ring; member `i` is the `i`-th `(key, weight)`. Points are
    /// placed by the key (the endpoint's URL), not by the index, so every
    /// instance that knows the same endpoints builds the same ring, whatever
    /// order it discovered them in.
    pub fn new<'a>(members: impl IntoIterator<Item = (&'a str, u32)>) -> Self {
        let mut points = Vec::new();
        for (member, (key, weight)) in members.into_iter().enumerate() {
            let vnodes = VNODES_PER_WEIGHT.saturating_mul(weight).min(MAX_VNODES);
            let Ok(member) = u32::try_from(member) else {
                break;
            };
            for v in 0..vnodes {
                let hash = Fnv::new()
                    .write(key.as_bytes())
                    .write(b"#")
                    .write(&v.to_le_bytes())
                    .finish();
                points.push(Point { hash, member });
            }
        }
        points.sort_unstable();
        Self { points }
    }

    /// The member that owns `key_hash`: the first eligible one at or after
    /// it on the ring.
    pub fn lookup(&self, key_hash: u64, mut eligible: impl FnMut(usize) -> bool) -> Option<usize> {
        let len = self.points.len();
        if len == 0 {
            return None;
        }
        let start = self.points.partition_point(|p| p.hash < key_hash);
        let mut last = usize::MAX;
        for k in 0..len {
            let m = self.points[(start + k) % len].member as usize;
            // Neighbouring points often share a member: test it once.
            if m != last {
                if eligible(m) {
                    return Some(m);
                }
                last = m;
            }
        }
        None
    }

    /// The number of points on the ring.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether the ring has no point.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

/// A stable 64-bit hash of `bytes`, for keys.
pub fn hash64(bytes: &[u8]) -> u64 {
    Fnv::new().write(bytes).finish()
}

// === impl Fnv ===

impl Fnv {
    const fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn write(mut self, bytes: &[u8]) -> Self {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }

    /// FNV alone clusters similar inputs (`a#1`, `a#2`); murmur3's fmix64
    /// spreads them over the whole ring.
    fn finish(self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^= h >> 33;
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("http://10.0.0.{i}:8080")).collect()
    }

    #[test]
    fn about_one_nth_moves_when_an_endpoint_leaves() {
        let n = 10;
        let all = names(n);
        let before = Ring::new(all.iter().map(|s| (s.as_str(), 1)));
        // Endpoint 3 leaves: the new ring has the other nine, renumbered.
        let rest: Vec<&String> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 3)
            .map(|(_, s)| s)
            .collect();
        let after = Ring::new(rest.iter().map(|s| (s.as_str(), 1)));
        let keys = 20_000;
        let mut moved = 0;
        for k in 0..keys {
            let h = hash64(format!("key-{k}").as_bytes());
            let a = &all[before.lookup(h, |_| true).expect("owner")];
            let b = rest[after.lookup(h, |_| true).expect("owner")];
            if a != b {
                moved += 1;
                // Only keys of the endpoint that left may move.
                assert_eq!(a, &all[3]);
            }
        }
        let share = moved as f64 / keys as f64;
        assert!((share - 1.0 / n as f64).abs() < 0.04, "moved {share}");
    }

    #[test]
    fn skipping_an_ineligible_member_moves_only_its_keys() {
        let all = names(5);
        let r = Ring::new(all.iter().map(|s| (s.as_str(), 1)));
        for k in 0..5_000 {
            let h = hash64(format!("k{k}").as_bytes());
            let a = r.lookup(h, |_| true).expect("owner");
            let b = r.lookup(h, |i| i != 2).expect("owner");
            if a != 2 {
                assert_eq!(a, b);
            } else {
                assert_ne!(b, 2);
            }
        }
        assert_eq!(r.lookup(1, |_| false), None);
    }

    #[test]
    fn balance_and_weights() {
        let all = names(4);
        let r = Ring::new(
            all.iter()
                .enumerate()
                .map(|(i, s)| (s.as_str(), if i == 0 { 2 } else { 1 })),
        );
        let mut counts = [0usize; 4];
        let keys = 50_000;
        for k in 0..keys {
            counts[r
                .lookup(hash64(format!("{k}").as_bytes()), |_| true)
                .expect("owner")] += 1;
        }
        // Weight 2 of 5: 40%; weight 1: 20%, within a few points.
        let share = |c: usize| c as f64 / keys as f64;
        assert!((share(counts[0]) - 0.4).abs() < 0.06, "{counts:?}");
        for &c in &counts[1..] {
            assert!((share(c) - 0.2).abs() < 0.05, "{counts:?}");
        }
    }

    #[test]
    fn hash_is_stable() {
        // Fixed values: a change here would remap every key in production.
        assert_eq!(hash64(b""), Fnv::new().finish());
        assert_eq!(hash64(b"user-42"), 0xa395_32c7_ab05_1e8d);
        assert_ne!(hash64(b"user-42"), hash64(b"user-43"));
    }
}
