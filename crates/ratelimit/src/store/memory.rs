//! The in-memory store: sharded, bounded, exact.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hashbrown::HashTable;

use super::{Batch, Check, Store};
use crate::clock::{Clock, SystemClock};
use crate::error::BuildError;
use crate::gcra::{Gcra, Outcome, Verdict, decide};

/// Rate-limit state in this process: N shards of
/// `Mutex<HashTable<(key, TAT and window)>>` holding at most `max_keys` keys
/// in all, each shard at least 1,024 of them (or all, in a smaller store).
///
/// Decisions are exact: the shards of a batch are locked (in index order,
/// so two batches never deadlock) while its TATs are read, decided and
/// written. Clones share the state.
///
/// # Bounded memory, no sweeper
///
/// Nothing runs in the background. When a shard is full and a new key
/// arrives, the shard first forgets every key whose TAT is in the past:
/// such a key decides exactly like a key never seen (a full bucket), so
/// forgetting it never changes a decision. If live keys still fill more
/// than 7/8 of the shard, it forgets the live keys that owe the least
/// relative to their own limit (`(TAT - now) / window`) down to 7/8: those
/// are the buckets closest to full, so forgetting them forgives the least.
/// Not the smallest TATs: limits of different windows share a store, and an
/// exhausted route-wide `5000/s` bucket (TAT one second ahead) owes its
/// whole burst while a client's first request to `1000/h` (TAT 3.6 s ahead)
/// owes a thousandth of its own; a flood of new clients must push out the
/// clients, not hand the route a fresh burst. [`MemoryStore::evictions`]
/// counts them. Each
/// shard is cleaned at most once per `capacity / 8` new keys, so the
/// amortised cost per new key stays constant under a flood of distinct keys,
/// and the number of keys never exceeds [`MemoryStore::max_keys`].
///
/// ```
/// use towergate_ratelimit::MemoryStore;
/// use towergate_ratelimit::store::{Batch, Bucket};
/// use towergate_ratelimit::gcra::Gcra;
///
/// let store = MemoryStore::builder().max_keys(1_000).build().unwrap();
/// let per_second = Gcra::new(1_000_000, 1).unwrap();
/// for i in 0..10_000 {
///     let batch = Batch::new("", vec![Bucket::new(format!("k{i}"), per_second)]);
///     assert!(store.decide(&batch).allowed);
/// }
/// assert!(store.len() <= 1_000);
/// ```
#[derive(Clone, Debug)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

/// Builds a [`MemoryStore`].
#[derive(Debug)]
#[must_use]
pub struct MemoryStoreBuilder {
    max_keys: usize,
    shards: usize,
    clock: Arc<dyn Clock>,
}

struct Inner {
    shards: Box<[Mutex<Shard>]>,
    /// Keys per shard: a shard makes room when it alone is full.
    per_shard: usize,
    hasher: RandomState,
    clock: Arc<dyn Clock>,
    evictions: AtomicU64,
}

/// One shard's keys and TATs, placed by [`Inner::hash`]: the hash that
/// picked the shard also places the key in it, so a request hashes its key
/// once.
#[derive(Default)]
struct Shard {
    tats: HashTable<(Box<str>, Held)>,
}

/// What the store keeps of a bucket: its TAT, and the window of the limit
/// that wrote it, which eviction weighs the TAT against.
#[derive(Clone, Copy, Debug)]
struct Held {
    tat: u64,
    window: u64,
}

const DEFAULT_MAX_KEYS: usize = 100_000;
const DEFAULT_SHARDS: usize = 64;
/// The fewest keys a shard holds (unless the whole store holds fewer): a
/// shard makes room when it is full, however empty the others are, so
/// tiny shards (`max_keys` 100 in 64 shards: one key each) would let two
/// clients in one shard push each other out, and neither be limited.
const MIN_PER_SHARD: usize = 1_024;

// === impl MemoryStore ===

impl MemoryStore {
    /// A store of at most 100,000 keys in 64 shards, on the system clock.
    pub fn new() -> Self {
        Self::with_parts(
            DEFAULT_MAX_KEYS,
            DEFAULT_SHARDS,
            Arc::new(SystemClock::new()),
        )
    }

    /// A builder to set the bound, the shard count or the clock.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder {
            max_keys: DEFAULT_MAX_KEYS,
            shards: DEFAULT_SHARDS,
            clock: Arc::new(SystemClock::new()),
        }
    }

    fn with_parts(max_keys: usize, shards: usize, clock: Arc<dyn Clock>) -> Self {
        let shards = shards.clamp(1, (max_keys / MIN_PER_SHARD).max(1));
        Self {
            inner: Arc::new(Inner {
                shards: (0..shards).map(|_| Mutex::default()).collect(),
                per_shard: (max_keys / shards).max(1),
                hasher: RandomState::default(),
                clock,
                evictions: AtomicU64::new(0),
            }),
        }
    }

    /// Decides `batch` now, synchronously: what [`Store::check`] does.
    pub fn decide(&self, batch: &Batch) -> Verdict {
        let inner = &*self.inner;
        let now = inner.clock.now_micros();
        let buckets = batch.buckets();

        // One limit per layer is the common case: no allocation but the
        // outcome itself.
        if let [bucket] = buckets {
            let outcome = inner.decide_one(bucket.id(), bucket.gcra(), now);
            return Verdict {
                allowed: outcome.allowed,
                outcomes: vec![outcome],
            };
        }

        let hashes: Vec<u64> = buckets.iter().map(|b| inner.hash(b.id())).collect();
        let index: Vec<usize> = hashes.iter().map(|&h| inner.shard_of(h)).collect();
        let mut order = index.clone();
        order.sort_unstable();
        order.dedup();
        // Locked in ascending shard order: two batches sharing shards
        // always take them in the same order, so they cannot deadlock.
        let mut guards: Vec<MutexGuard<'_, Shard>> = order.iter().map(|&i| inner.lock(i)).collect();
        let slot = |shard: usize| order.binary_search(&shard).unwrap_or(0);

        let tats: Vec<Option<u64>> = hashes
            .iter()
            .zip(&index)
            .zip(buckets)
            .map(|((&h, &i), b)| guards[slot(i)].find(h, b.id()))
            .collect();
        let verdict = decide(
            buckets.iter().zip(&tats).map(|(b, &tat)| (b.gcra(), tat)),
            now,
        );
        for (((b, (&h, &i)), o), &tat) in buckets
            .iter()
            .zip(hashes.iter().zip(&index))
            .zip(&verdict.outcomes)
            .zip(&tats)
        {
            // A refusal writes only a state it read as capped (see
            // `Gcra::check`), so that the next interval admits.
            if verdict.allowed || tat.is_some_and(|t| o.tat < t) {
                let held = Held::new(o.tat, b.gcra());
                inner.store(&mut guards[slot(i)], h, b.id(), held, now);
            }
        }
        verdict
    }

    /// Decides one bucket now: [`decide`](Self::decide) for a batch of
    /// one, without the batch.
    pub(crate) fn decide_one(&self, id: &str, gcra: Gcra) -> Outcome {
        let inner = &*self.inner;
        inner.decide_one(id, gcra, inner.clock.now_micros())
    }

    /// Keys held now, at most [`max_keys`](Self::max_keys). Locks every
    /// shard in turn: for tests and metrics, not the request path.
    pub fn len(&self) -> usize {
        (0..self.inner.shards.len())
            .map(|i| self.inner.lock(i).tats.len())
            .sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most keys this store holds (the requested bound, rounded down to
    /// a multiple of the shard count).
    pub fn max_keys(&self) -> usize {
        self.inner.per_shard * self.inner.shards.len()
    }

    /// A store of at most `max_keys` keys that starts with this one's live
    /// buckets (as many as fit), on the same clock and shard count: what a
    /// configuration that changes `max_keys` swaps in, so that clients keep
    /// their buckets instead of each getting a full one again. Fails if
    /// `max_keys` is zero.
    pub fn resized(&self, max_keys: usize) -> Result<MemoryStore, BuildError> {
        if max_keys == 0 {
            return Err(BuildError::InvalidStore(
                "max_keys must be positive".to_owned(),
            ));
        }
        let old = &*self.inner;
        let new = Self::with_parts(max_keys, old.shards.len(), old.clock.clone());
        let now = old.clock.now_micros();
        for i in 0..old.shards.len() {
            let live: Vec<(Box<str>, Held)> = old
                .lock(i)
                .tats
                .iter()
                .filter(|(_, held)| held.tat > now)
                .cloned()
                .collect();
            for (id, held) in live {
                let inner = &*new.inner;
                let hash = inner.hash(&id);
                let mut shard = inner.lock(inner.shard_of(hash));
                inner.store(&mut shard, hash, &id, held, now);
            }
        }
        Ok(new)
    }

    /// How many live keys (TAT in the future) were forgotten to stay within
    /// the bound: each such key got a full bucket back early. Zero unless
    /// about as many keys are active at once as the store holds (a shard
    /// makes room when it is full, and keys spread over shards only about
    /// evenly; shards hold at least 1,024 keys, so the spread is close).
    pub fn evictions(&self) -> u64 {
        self.inner.evictions.load(Ordering::Relaxed)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl Store for MemoryStore {
    fn check(&self, batch: &Batch) -> Check {
        Check::ready(Ok(self.decide(batch)))
    }
}

// === impl MemoryStoreBuilder ===

impl MemoryStoreBuilder {
    /// The most keys held at once (default 100,000).
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// How many independently locked shards (default 64); fewer when
    /// `max_keys` is small, so that each shard holds at least 1,024 keys
    /// (one shard below 2,048 keys).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards;
        self
    }

    /// The clock (default [`SystemClock`]); tests pass a
    /// [`ManualClock`](crate::ManualClock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The store; fails if `max_keys` or `shards` is zero.
    pub fn build(self) -> Result<MemoryStore, BuildError> {
        if self.max_keys == 0 || self.shards == 0 {
            return Err(BuildError::InvalidStore(
                "max_keys and shards must be positive".to_owned(),
            ));
        }
        Ok(MemoryStore::with_parts(
            self.max_keys,
            self.shards,
            self.clock,
        ))
    }
}

// === impl Inner ===

impl Inner {
    fn decide_one(&self, id: &str, gcra: Gcra, now: u64) -> Outcome {
        let hash = self.hash(id);
        let mut shard = self.lock(self.shard_of(hash));
        // One lookup for a key already held, the usual case.
        match shard.tats.find_mut(hash, |(k, _)| **k == *id) {
            Some((_, held)) => {
                let outcome = gcra.check(Some(held.tat), now);
                // A refusal writes only a state it read as capped (see
                // `Gcra::check`), so that the next interval admits.
                if outcome.allowed || outcome.tat < held.tat {
                    *held = Held::new(outcome.tat, gcra);
                }
                outcome
            }
            None => {
                let outcome = gcra.check(None, now);
                if outcome.allowed {
                    // Known absent (the look-up above, under this lock):
                    // no second look-up before the insert.
                    let held = Held::new(outcome.tat, gcra);
                    self.insert_absent(&mut shard, hash, id, held, now);
                }
                outcome
            }
        }
    }

    /// A keyed hash with a random seed: clients choose keys, and must not
    /// be able to aim them all at one shard. SipHash, not a faster hash:
    /// its secret cannot be learnt from timing, so a client cannot fill
    /// one shard on purpose to evict others' buckets, nor slow a map down
    /// with collisions. It is computed once per key and request: it picks
    /// the shard ([`shard_of`](Self::shard_of)) and places the key in the
    /// shard's table.
    fn hash(&self, id: &str) -> u64 {
        // The bytes alone, in one write: `str`'s `Hash` adds a terminator
        // byte (a second write) so that strings hashed one after another
        // stay apart, and an id is hashed alone; SipHash's last block
        // holds the length.
        let mut h = self.hasher.build_hasher();
        h.write(id.as_bytes());
        h.finish()
    }

    fn shard_of(&self, hash: u64) -> usize {
        // Bits 32 and up: the table places keys by the low bits and tags
        // them with the top 7, so the keys of one shard still spread over
        // its table (SipHash's bits are independent of each other).
        ((hash >> 32) % self.shards.len() as u64) as usize
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        // A panic under the lock cannot leave a TAT half-written (they are
        // plain integers), so a poisoned shard is still a good shard.
        self.shards[shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn store(&self, shard: &mut Shard, hash: u64, id: &str, held: Held, now: u64) {
        if let Some((_, slot)) = shard.tats.find_mut(hash, |(k, _)| **k == *id) {
            *slot = held;
            return;
        }
        self.insert_absent(shard, hash, id, held, now);
    }

    /// Stores the state of a key the shard does not hold, making room
    /// first when the shard is full.
    fn insert_absent(&self, shard: &mut Shard, hash: u64, id: &str, held: Held, now: u64) {
        if shard.tats.len() >= self.per_shard {
            let evicted = shard.make_room(now, self.per_shard);
            self.evictions.fetch_add(evicted, Ordering::Relaxed);
        }
        // When the table grows, the keys it moves are hashed again.
        shard
            .tats
            .insert_unique(hash, (id.into(), held), |(k, _)| self.hash(k));
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("shards", &self.shards.len())
            .field("per_shard", &self.per_shard)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

// === impl Shard ===

impl Shard {
    /// The TAT of `id`, whose hash is `hash`.
    fn find(&self, hash: u64, id: &str) -> Option<u64> {
        self.tats
            .find(hash, |(k, _)| **k == *id)
            .map(|(_, held)| held.tat)
    }

    /// Shrinks a full shard to at most 7/8 of `capacity`; returns how many
    /// live keys it had to forget: those that owe the least relative to
    /// their window.
    fn make_room(&mut self, now: u64, capacity: usize) -> u64 {
        // Free: an expired TAT decides like no TAT.
        self.tats.retain(|(_, held)| held.tat > now);
        let target = capacity - (capacity / 8).max(1);
        if self.tats.len() <= target {
            return 0;
        }
        let excess = self.tats.len() - target;
        let mut debts: Vec<Debt> = self.tats.iter().map(|(_, h)| Debt::of(h, now)).collect();
        let threshold = *debts.select_nth_unstable(excess - 1).1;
        // Every debt below the threshold goes, then ties at it until
        // `excess`: no more live state is lost than needed, and a tie met
        // first in the table never saves a smaller debt.
        let below = debts.iter().filter(|&&d| d < threshold).count();
        let mut ties = excess - below;
        self.tats.retain(|(_, held)| {
            let debt = Debt::of(held, now);
            if debt < threshold {
                false
            } else if debt == threshold && ties > 0 {
                ties -= 1;
                false
            } else {
                true
            }
        });
        excess as u64
    }
}

// === impl Held ===

impl Held {
    fn new(tat: u64, gcra: Gcra) -> Self {
        Self {
            tat,
            window: gcra.window(),
        }
    }
}

/// How much of its window a live bucket owes, `(tat - now) / window`,
/// ordered exactly: compared by cross-multiplying in 128 bits, no floats.
#[derive(Clone, Copy, Debug)]
struct Debt {
    owed: u64,
    window: u64,
}

impl Debt {
    fn of(held: &Held, now: u64) -> Self {
        Self {
            owed: held.tat.saturating_sub(now),
            // Never zero (a `Gcra` has a positive window); `max` keeps the
            // ordering total anyway.
            window: held.window.max(1),
        }
    }
}

impl Ord for Debt {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let mine = u128::from(self.owed) * u128::from(other.window);
        let theirs = u128::from(other.owed) * u128::from(self.window);
        mine.cmp(&theirs)
    }
}

impl PartialOrd for Debt {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Equal debts are equal ratios (1/2 of 2 s and 1/2 of 1 h), as `Ord` has it.
impl PartialEq for Debt {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Debt {}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ManualClock;
    use crate::store::Bucket;

    fn one(id: &str, gcra: Gcra) -> Batch {
        Batch::new("", vec![Bucket::new(id, gcra)])
    }

    /// A lower limit under the same names (a reload from 1000/h to
    /// 10/min) refuses for one of its intervals, not for the hour the old
    /// state ran ahead; alone and in a batch.
    #[test]
    fn a_lowered_limit_forgets_the_old_window_after_one_interval() {
        let clock = ManualClock::new();
        let store = MemoryStore::builder().clock(clock.clone()).build().unwrap();
        let hourly = Gcra::new(3_600_000, 1_000).unwrap(); // 1000/h, in µs
        let per_minute = Gcra::new(6_000_000, 10).unwrap(); // 10/min
        let pair = |g: Gcra| Batch::new("", vec![Bucket::new("a", g), Bucket::new("b", g)]);
        for _ in 0..1_000 {
            assert!(store.decide(&one("k", hourly)).allowed);
            assert!(store.decide(&pair(hourly)).allowed);
        }
        assert!(!store.decide(&one("k", hourly)).allowed);
        let refused = store.decide(&one("k", per_minute));
        assert!(!refused.allowed);
        assert_eq!(refused.outcomes[0].retry_after, 6_000_000);
        let refused = store.decide(&pair(per_minute));
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after(), 6_000_000);
        clock.advance(Duration::from_secs(6));
        assert!(store.decide(&one("k", per_minute)).allowed);
        assert!(store.decide(&pair(per_minute)).allowed);
        // And then the new rate holds.
        assert!(!store.decide(&one("k", per_minute)).allowed);
        assert!(!store.decide(&pair(per_minute)).allowed);
    }

    #[test]
    fn expired_keys_go_first_and_change_nothing() {
        let clock = ManualClock::new();
        let store = MemoryStore::builder()
            .max_keys(8)
            .shards(1)
            .clock(clock.clone())
            .build()
            .unwrap();
        let g = Gcra::new(1_000, 2).unwrap();
        for i in 0..8 {
            assert!(store.decide(&one(&format!("old{i}"), g)).allowed);
        }
        assert_eq!(store.len(), 8);
        // All eight TATs are now in the past.
        clock.advance(Duration::from_millis(5));
        assert!(store.decide(&one("new", g)).allowed);
        assert_eq!(store.len(), 1, "only the new key is live");
        assert_eq!(store.evictions(), 0);
    }

    #[test]
    fn a_resized_store_keeps_the_live_buckets() {
        let clock = ManualClock::new();
        let store = MemoryStore::builder()
            .max_keys(1_000)
            .shards(4)
            .clock(clock.clone())
            .build()
            .unwrap();
        let g = Gcra::new(1_000_000, 1).unwrap(); // 1/s, burst 1
        let short = Gcra::new(1_000, 1).unwrap();
        for i in 0..100 {
            assert!(store.decide(&one(&format!("k{i}"), g)).allowed);
        }
        assert!(store.decide(&one("spent", short)).allowed);
        clock.advance(Duration::from_millis(5));
        let bigger = store.resized(2_000).unwrap();
        assert_eq!(bigger.max_keys(), 2_000);
        assert_eq!(bigger.len(), 100, "only live buckets move");
        for i in 0..100 {
            assert!(
                !bigger.decide(&one(&format!("k{i}"), g)).allowed,
                "k{i} kept its bucket"
            );
        }
        // Smaller than what is live: as many as fit, the bound holds.
        let smaller = store.resized(40).unwrap();
        assert!(smaller.len() <= 40);
        assert!(store.resized(0).is_err());
    }

    /// The one hash picks the shard and places the key in it: keys spread
    /// over the shards, and every key is found again after its shard's
    /// table has grown many times (and moved it).
    #[test]
    fn keys_spread_over_shards_and_are_found_after_growth() {
        let clock = ManualClock::new();
        let store = MemoryStore::builder()
            .max_keys(64 * 1_024)
            .shards(64)
            .clock(clock.clone())
            .build()
            .unwrap();
        // One request per interval: a second request at once is refused
        // only if the first one's TAT was found.
        let g = Gcra::new(1_000_000, 1).unwrap();
        let keys: Vec<String> = (0..20_000).map(|i| format!("client-{i}")).collect();
        for k in &keys {
            assert!(store.decide(&one(k, g)).allowed, "{k} is new");
        }
        assert_eq!(store.len(), keys.len());
        for k in &keys {
            assert!(!store.decide(&one(k, g)).allowed, "{k} was found");
        }
        let sizes: Vec<usize> = (0..64).map(|i| store.inner.lock(i).tats.len()).collect();
        let mean = keys.len() / 64;
        assert!(
            sizes.iter().all(|&n| n > mean / 2 && n < mean * 2),
            "{sizes:?}"
        );
        // Batches look keys up by the same hash.
        let batch = Batch::new("", vec![Bucket::new("client-7", g), Bucket::new("new", g)]);
        assert!(!store.decide(&batch).allowed, "client-7 was found");
        assert!(
            store.decide(&one("new", g)).allowed,
            "a refused batch stores nothing"
        );
        // And keys an allowed batch stored are found one at a time.
        let batch = Batch::new("", vec![Bucket::new("b1", g), Bucket::new("b2", g)]);
        assert!(store.decide(&batch).allowed);
        for k in ["b1", "b2"] {
            assert!(!store.decide(&one(k, g)).allowed, "{k} was found");
        }
    }

    #[test]
    fn live_keys_with_least_debt_go_when_full() {
        let clock = ManualClock::new();
        let store = MemoryStore::builder()
            .max_keys(8)
            .shards(1)
            .clock(clock.clone())
            .build()
            .unwrap();
        let g = Gcra::new(1_000_000, 10).unwrap();
        // "heavy" owes the most: it must survive eviction.
        for _ in 0..5 {
            assert!(store.decide(&one("heavy", g)).allowed);
        }
        for i in 0..7 {
            assert!(store.decide(&one(&format!("light{i}"), g)).allowed);
        }
        assert_eq!(store.len(), 8);
        assert!(store.decide(&one("newcomer", g)).allowed);
        assert!(store.len() <= 8);
        assert_eq!(store.evictions(), 1, "down to 7 of 8, then the newcomer");
        let heavy = store.decide(&one("heavy", g));
        assert_eq!(heavy.outcomes[0].remaining, 4, "heavy kept its debt");
    }

    /// Limits of different windows share a store: a route-wide bucket
    /// (window 1 s) that is exhausted owes all of its window, while a
    /// client's first request to 1000/h owes a thousandth of its window,
    /// though its TAT lies further ahead. A flood of new clients must push
    /// out the clients, not give the route a fresh burst.
    #[test]
    fn eviction_weighs_debt_against_each_bucket_window() {
        let clock = ManualClock::new();
        let store = MemoryStore::builder()
            .max_keys(64)
            .shards(1)
            .clock(clock.clone())
            .build()
            .unwrap();
        let route = Gcra::new(200, 5_000).unwrap(); // 5000/s: window 1 s
        let hourly = Gcra::new(3_600_000, 1_000).unwrap(); // 1000/h: window 1 h
        for _ in 0..5_000 {
            assert!(store.decide(&one("route", route)).allowed);
        }
        assert!(!store.decide(&one("route", route)).allowed, "exhausted");
        for i in 0..64 {
            // A microsecond apart: no ties, so the order of eviction is
            // that of the ranking alone, not of the table.
            clock.advance(Duration::from_micros(1));
            assert!(store.decide(&one(&format!("client{i}"), hourly)).allowed);
        }
        assert!(store.evictions() > 0, "the flood had to push keys out");
        assert!(
            !store.decide(&one("route", route)).allowed,
            "the exhausted route bucket was forgiven"
        );
    }

    /// Shards of a small store are not so small that two active clients
    /// push each other out while the store has room for both.
    #[test]
    fn a_small_store_holds_as_many_keys_as_asked() {
        let clock = ManualClock::new();
        let store = MemoryStore::builder()
            .max_keys(64)
            .clock(clock.clone())
            .build()
            .unwrap();
        let hourly = Gcra::new(3_600_000_000, 1).unwrap(); // 1/h
        for i in 0..40 {
            assert!(store.decide(&one(&format!("k{i}"), hourly)).allowed);
        }
        for i in 0..40 {
            assert!(
                !store.decide(&one(&format!("k{i}"), hourly)).allowed,
                "k{i} was forgotten"
            );
        }
        assert_eq!(store.evictions(), 0);
    }

    #[test]
    fn multi_shard_batch_is_all_or_nothing() {
        let store = MemoryStore::builder().shards(16).build().unwrap();
        let loose = Gcra::new(1_000, 100).unwrap();
        let tight = Gcra::new(1_000_000, 1).unwrap();
        let batch = |n: usize| {
            Batch::new(
                "",
                (0..n)
                    .map(|i| Bucket::new(format!("loose{i}"), loose))
                    .chain([Bucket::new("tight", tight)])
                    .collect(),
            )
        };
        assert!(store.decide(&batch(5)).allowed);
        let refused = store.decide(&batch(5));
        assert!(!refused.allowed);
        for o in &refused.outcomes[..5] {
            assert_eq!(o.remaining, 99, "refused requests consume nothing");
        }
    }
}
