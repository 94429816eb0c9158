//! [`CacheStore`]: the bounded in-memory store every route's layer shares.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{
    AGE, CONNECTION, CONTENT_LENGTH, DATE, ETAG, HeaderName, LAST_MODIFIED, SET_COOKIE, TE,
    TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderValue, StatusCode};
use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;
use parking_lot::Mutex;

use crate::cache_control::CacheControl;
use crate::collapse::Flight;
use crate::freshness::{Freshness, Timing, http_date, parse_age};
use crate::key::PrimaryKey;
use crate::vary::secondary_key;

/// Variants (distinct `Vary` selections) kept per primary key; a response
/// for one more is served but not stored.
const MAX_VARIANTS: usize = 64;

/// What an index entry weighs on top of its key (it is never resized).
const INDEX_WEIGHT: usize = 512;

/// The bounded in-memory response store, shared by every route's
/// [`CacheLayer`](crate::CacheLayer): build one per gateway.
///
/// Cheap to clone (an `Arc` inside). Entries are weighed in bytes (body,
/// headers, key and a fixed overhead) and evicted least-recently-used first
/// when the total would exceed [`max_bytes`](CacheStoreBuilder::max_bytes).
///
/// ```
/// use towergate_cache::{CacheStore, Purge};
///
/// let store = CacheStore::builder()
///     .max_bytes(32 * 1024 * 1024)
///     .max_entry_bytes(512 * 1024)
///     .build();
/// assert_eq!(store.purge(&Purge::Namespace("users".into())), 0);
/// assert_eq!(store.stats().entries, 0);
/// ```
#[derive(Clone)]
pub struct CacheStore {
    pub(crate) inner: Arc<Inner>,
}

/// Builds a [`CacheStore`].
#[derive(Clone, Debug)]
#[must_use]
pub struct CacheStoreBuilder {
    max_bytes: u64,
    max_entry_bytes: u64,
}

/// Which entries [`CacheStore::purge`] removes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Purge {
    /// Every entry of one route (the layer's
    /// [`namespace`](crate::CacheLayerBuilder::namespace)).
    Namespace(String),
    /// Every variant stored under one primary key (the format is in the
    /// [crate docs](crate#keys); [`CacheStore::keys`] lists them).
    Key(String),
    /// Every entry whose request path starts with `path_prefix`, in one
    /// namespace or in all.
    Prefix {
        /// Restricts the purge to one namespace.
        namespace: Option<String>,
        /// The path prefix, e.g. `/users/42`.
        path_prefix: String,
    },
}

/// Counters (monotonic since the store was built) and gauges of a
/// [`CacheStore`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Requests answered from a fresh stored response (including collapsed
    /// waiters and `304`s generated from the cache).
    pub hits: u64,
    /// GET/HEAD requests forwarded because nothing usable was stored.
    pub misses: u64,
    /// Requests answered with a stale response (`stale-while-revalidate`,
    /// `stale-if-error`, request `max-stale`).
    pub stale_hits: u64,
    /// Stored responses freshened by a `304 Not Modified` from upstream.
    pub revalidated: u64,
    /// Responses stored (including replacements).
    pub stored: u64,
    /// Requests the cache did not look up (`no-store` request, no identity on
    /// an identity-keyed route, methods other than GET/HEAD).
    pub bypassed: u64,
    /// Collapsed waiters served from the store once the leader finished.
    pub collapsed: u64,
    /// Entries evicted to honour the size bound.
    pub evictions: u64,
    /// Gauge: the weighted size of the store, in bytes.
    pub bytes_stored: u64,
    /// Gauge: stored responses (all variants).
    pub entries: u64,
}

pub(crate) struct Inner {
    cache: moka::sync::Cache<Arc<str>, Slot>,
    pub(crate) max_bytes: u64,
    pub(crate) max_entry_bytes: u64,
    pub(crate) counters: Arc<Counters>,
    next_index: AtomicU64,
    pub(crate) flights: Mutex<HashMap<Arc<str>, Arc<Flight>>>,
    revalidating: Mutex<HashSet<Arc<str>>>,
    /// Bytes held by copies being filled (responses streaming to their
    /// clients while a copy accumulates): at most `max_bytes` in all, so
    /// that many slow fills cannot hold memory beyond the store's bound.
    pub(crate) filling: AtomicU64,
    /// The primary keys with requests upstream whose answers may be
    /// stored (fills), and how often each was invalidated or purged since
    /// the first of them left; see [`CacheStore::begin_fill`].
    fills: Mutex<HashMap<Arc<str>, Fills>>,
}

// === impl FillTicket ===

impl FillTicket {
    /// Whether the key was neither invalidated nor purged since the fill
    /// began.
    fn is_current(&self) -> bool {
        self.store
            .inner
            .fills
            .lock()
            .get(&self.key)
            .is_some_and(|f| f.generation == self.generation)
    }
}

impl Drop for FillTicket {
    fn drop(&mut self) {
        let mut fills = self.store.inner.fills.lock();
        if let Some(f) = fills.get_mut(&self.key) {
            f.count = f.count.saturating_sub(1);
            if f.count == 0 {
                fills.remove(&self.key);
            }
        }
    }
}

/// One primary key's fills in flight.
#[derive(Debug)]
struct Fills {
    namespace: Arc<str>,
    path: Arc<str>,
    /// Invalidations and purges of the key while fills were in flight.
    generation: u64,
    /// Fills in flight.
    count: usize,
}

/// A request gone upstream for a primary key whose answer may be stored:
/// [`CacheStore::insert`] stores it only if the key was neither
/// invalidated nor purged since. Dropping it ends the fill.
#[derive(Debug)]
pub(crate) struct FillTicket {
    store: CacheStore,
    key: Arc<str>,
    generation: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) stale_hits: AtomicU64,
    pub(crate) revalidated: AtomicU64,
    pub(crate) stored: AtomicU64,
    pub(crate) bypassed: AtomicU64,
    pub(crate) collapsed: AtomicU64,
    evictions: AtomicU64,
    responses: AtomicI64,
}

/// One moka value: the index of a primary key, or one stored response.
#[derive(Clone)]
enum Slot {
    Index(Arc<Index>),
    Response(Arc<Stored>),
}

/// The entry at a primary key: which request fields the stored responses
/// vary on, and the keys of those variants (to invalidate them all).
struct Index {
    /// Variants are served only while their index is the current one, so
    /// variants orphaned by an evicted or replaced index are never served.
    id: u64,
    vary: Arc<[HeaderName]>,
    variants: Mutex<Vec<Arc<str>>>,
    key: PrimaryKey,
}

/// A stored response.
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) key: PrimaryKey,
    index: u64,
    pub(crate) variant: Arc<str>,
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) timing: Timing,
    pub(crate) cc: CacheControl,
}

/// A response head ready to be stored once its body is complete.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) key: PrimaryKey,
    /// The fill this response is, since its request went upstream.
    pub(crate) ticket: FillTicket,
    pub(crate) vary: Arc<[HeaderName]>,
    /// The secondary key of the request that fetched it.
    pub(crate) secondary: String,
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) timing: Timing,
    pub(crate) cc: CacheControl,
}

/// The outcome of a lookup.
pub(crate) enum Lookup {
    /// Nothing stored for the primary key.
    UriMiss,
    /// Responses stored for the primary key, none for this request's `Vary`
    /// selection.
    VaryMiss,
    Found(Arc<Stored>),
}

/// Held while a background revalidation of one variant runs.
pub(crate) struct Revalidating {
    store: CacheStore,
    variant: Arc<str>,
}

// === impl CacheStore ===

impl CacheStore {
    /// A builder with the defaults: 64 MiB in all, 1 MiB per entry.
    pub fn builder() -> CacheStoreBuilder {
        CacheStoreBuilder {
            max_bytes: 64 * 1024 * 1024,
            max_entry_bytes: 1024 * 1024,
        }
    }

    /// A store with the default bounds.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Removes the selected entries and returns how many stored responses
    /// were removed.
    ///
    /// Walks the whole store (purges are rare, admin-driven operations), so
    /// the count is exact.
    pub fn purge(&self, sel: &Purge) -> usize {
        // Fills in flight for what is purged are not stored: a purge says
        // the content changed.
        for (key, fills) in self.inner.fills.lock().iter_mut() {
            let hit = match sel {
                Purge::Namespace(ns) => *fills.namespace == **ns,
                Purge::Key(k) => **key == **k,
                Purge::Prefix {
                    namespace,
                    path_prefix,
                } => {
                    namespace
                        .as_deref()
                        .is_none_or(|ns| *fills.namespace == *ns)
                        && fills.path.starts_with(path_prefix.as_str())
                }
            };
            if hit {
                fills.generation += 1;
            }
        }
        let matches = |key: &PrimaryKey| match sel {
            Purge::Namespace(ns) => *key.namespace == **ns,
            Purge::Key(k) => *key.key == **k,
            Purge::Prefix {
                namespace,
                path_prefix,
            } => {
                namespace.as_deref().is_none_or(|ns| *key.namespace == *ns)
                    && key.path.starts_with(path_prefix.as_str())
            }
        };
        let doomed: Vec<Arc<str>> = self
            .inner
            .cache
            .iter()
            .filter(|(_, slot)| matches(slot.key()))
            .map(|(k, _)| Arc::clone(&*k))
            .collect();
        let mut removed = 0;
        for k in doomed {
            if let Some(Slot::Response(_)) = self.inner.cache.remove(&k) {
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::debug!(?sel, removed, "cache purge");
        }
        removed
    }

    /// The primary keys that have responses stored, sorted (for an admin
    /// listing; walks the whole store).
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .inner
            .cache
            .iter()
            .filter_map(|(_, slot)| match slot {
                Slot::Response(r) => Some(r.key.key.to_string()),
                Slot::Index(_) => None,
            })
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// Counters and gauges. Settles the store's pending bookkeeping first,
    /// so the gauges are exact.
    pub fn stats(&self) -> CacheStats {
        self.run_pending_tasks();
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            hits: get(&c.hits),
            misses: get(&c.misses),
            stale_hits: get(&c.stale_hits),
            revalidated: get(&c.revalidated),
            stored: get(&c.stored),
            bypassed: get(&c.bypassed),
            collapsed: get(&c.collapsed),
            evictions: get(&c.evictions),
            bytes_stored: self.inner.cache.weighted_size(),
            entries: u64::try_from(c.responses.load(Ordering::Relaxed)).unwrap_or(0),
        }
    }

    /// Runs the store's pending evictions and bookkeeping now (moka does
    /// them lazily); tests call it before reading sizes.
    pub fn run_pending_tasks(&self) {
        self.inner.cache.run_pending_tasks();
    }

    /// The configured total bound, in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.inner.max_bytes
    }

    /// The configured per-entry body bound, in bytes.
    pub fn max_entry_bytes(&self) -> u64 {
        self.inner.max_entry_bytes
    }

    pub(crate) fn lookup(&self, key: &PrimaryKey, request: &HeaderMap) -> Lookup {
        let Some(Slot::Index(index)) = self.inner.cache.get(&key.key) else {
            return Lookup::UriMiss;
        };
        let variant = variant_key(&key.key, &secondary_key(&index.vary, request));
        match self.inner.cache.get(variant.as_str()) {
            Some(Slot::Response(r)) if r.index == index.id => Lookup::Found(r),
            _ => Lookup::VaryMiss,
        }
    }

    /// Stores a complete response; returns whether it was stored.
    pub(crate) fn insert(&self, pending: Pending, body: Bytes) -> bool {
        if body.len() as u64 > self.inner.max_entry_bytes {
            return false;
        }
        // Invalidated or purged since the request went upstream (a `PUT`
        // to the same URI, an admin purge after a deploy): what it fetched
        // may be what the invalidation was for.
        if !pending.ticket.is_current() {
            return false;
        }
        let index = self.index_for(&pending.key, &pending.vary);
        let variant: Arc<str> = variant_key(&pending.key.key, &pending.secondary).into();
        {
            let mut variants = index.variants.lock();
            if !variants.contains(&variant) {
                if variants.len() >= MAX_VARIANTS {
                    // Variants the store evicted (or that expired) free
                    // their places: the first 64 selections ever seen must
                    // not hold them for as long as the URL is popular.
                    variants.retain(|v| self.inner.cache.contains_key(&**v));
                    if variants.len() >= MAX_VARIANTS {
                        return false;
                    }
                }
                variants.push(Arc::clone(&variant));
            }
        }
        let mut headers = pending.headers;
        sanitize(&mut headers);
        let mut headers = owned(&headers);
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        let ticket = pending.ticket;
        let stored = Stored {
            key: pending.key,
            index: index.id,
            variant: Arc::clone(&variant),
            status: pending.status,
            headers,
            body,
            timing: pending.timing,
            cc: pending.cc,
        };
        self.put(Arc::clone(&variant), stored);
        // An invalidation between the check above and the store found
        // nothing to remove: take it back out.
        if !ticket.is_current() {
            self.inner.cache.invalidate(&variant);
            return false;
        }
        true
    }

    /// Replaces `old` with its freshened copy after a `304` (§4.3.4).
    pub(crate) fn freshen(
        &self,
        old: &Stored,
        not_modified: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
    ) -> Arc<Stored> {
        let mut headers = old.headers.clone();
        let mut replaced: HashSet<&HeaderName> = HashSet::new();
        for (name, value) in not_modified {
            if !updatable(name) {
                continue;
            }
            if replaced.insert(name) {
                headers.remove(name);
            }
            headers.append(name.clone(), owned_value(value));
        }
        sanitize(&mut headers);
        let timing = Timing {
            request_time,
            response_time,
            date: http_date(&headers, DATE),
            age_value: parse_age(not_modified).unwrap_or(0),
        };
        let stored = Arc::new(Stored {
            key: old.key.clone(),
            index: old.index,
            variant: Arc::clone(&old.variant),
            status: old.status,
            cc: CacheControl::from_headers(&headers),
            headers,
            body: old.body.clone(),
            timing,
        });
        // Only if the slot still holds `old`: a purge in between wins, and
        // so does a newer response stored meanwhile (a late 304 for the old
        // one must not put its body back).
        let still_old = matches!(
            self.inner.cache.get(&old.variant),
            Some(Slot::Response(current)) if std::ptr::eq(Arc::as_ptr(&current), old)
        );
        if still_old {
            if stored.cc.no_store || stored.cc.private {
                // The 304 made it private or unstorable (§4.3.4 updates
                // the stored fields): it may serve this request, as the
                // upstream said, and no other.
                self.inner.cache.invalidate(&old.variant);
            } else {
                // Replaces the old response: the removal listener counts
                // one response less, this one more.
                self.inner
                    .counters
                    .responses
                    .fetch_add(1, Ordering::Relaxed);
                self.inner.cache.insert(
                    Arc::clone(&old.variant),
                    Slot::Response(Arc::clone(&stored)),
                );
            }
        }
        self.inner
            .counters
            .revalidated
            .fetch_add(1, Ordering::Relaxed);
        stored
    }

    /// A request for `key` goes upstream, and its answer may be stored:
    /// from now on, an invalidation or a purge of `key` keeps it from
    /// being stored (see [`insert`](Self::insert)).
    pub(crate) fn begin_fill(&self, key: &PrimaryKey) -> FillTicket {
        let mut fills = self.inner.fills.lock();
        let entry = fills.entry(Arc::clone(&key.key)).or_insert_with(|| Fills {
            namespace: Arc::clone(&key.namespace),
            path: Arc::clone(&key.path),
            generation: 0,
            count: 0,
        });
        entry.count += 1;
        FillTicket {
            store: self.clone(),
            key: Arc::clone(&key.key),
            generation: entry.generation,
        }
    }

    /// Removes every variant of one primary key (§4.4 invalidation);
    /// returns how many responses were removed.
    pub(crate) fn invalidate(&self, key: &str) -> usize {
        // Even when nothing is stored yet: a fill in flight is what it
        // stops. Before the removal, so that a fill stored meanwhile sees
        // it when it checks again (see `insert`).
        if let Some(fills) = self.inner.fills.lock().get_mut(key) {
            fills.generation += 1;
        }
        self.remove_variants(key)
    }

    /// Removes the index of one primary key and every variant it names;
    /// returns how many responses were removed. Unlike
    /// [`invalidate`](Self::invalidate), fills in flight stay current.
    fn remove_variants(&self, key: &str) -> usize {
        let Some(Slot::Index(index)) = self.inner.cache.remove(key) else {
            return 0;
        };
        let variants = std::mem::take(&mut *index.variants.lock());
        variants
            .iter()
            .filter(|v| matches!(self.inner.cache.remove(&***v), Some(Slot::Response(_))))
            .count()
    }

    /// Claims the background revalidation of `variant`; `None` when one
    /// already runs.
    pub(crate) fn begin_revalidation(&self, variant: &Arc<str>) -> Option<Revalidating> {
        self.inner
            .revalidating
            .lock()
            .insert(Arc::clone(variant))
            .then(|| Revalidating {
                store: self.clone(),
                variant: Arc::clone(variant),
            })
    }

    fn index_for(&self, key: &PrimaryKey, vary: &Arc<[HeaderName]>) -> Arc<Index> {
        if let Some(Slot::Index(index)) = self.inner.cache.get(&key.key) {
            if index.vary == *vary {
                return index;
            }
            // The resource now varies differently: its old variants can
            // never be selected again. Not an invalidation: the response
            // being stored is the one that says so, and other fills in
            // flight bring answers no less current than before.
            self.remove_variants(&key.key);
        }
        let index = Arc::new(Index {
            id: self.inner.next_index.fetch_add(1, Ordering::Relaxed),
            vary: Arc::clone(vary),
            variants: Mutex::new(Vec::new()),
            key: key.clone(),
        });
        self.inner
            .cache
            .insert(Arc::clone(&key.key), Slot::Index(Arc::clone(&index)));
        index
    }

    fn put(&self, variant: Arc<str>, stored: Stored) {
        self.inner.counters.stored.fetch_add(1, Ordering::Relaxed);
        self.inner
            .counters
            .responses
            .fetch_add(1, Ordering::Relaxed);
        self.inner
            .cache
            .insert(variant, Slot::Response(Arc::new(stored)));
    }
}

impl Default for CacheStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for CacheStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheStore")
            .field("max_bytes", &self.inner.max_bytes)
            .field("max_entry_bytes", &self.inner.max_entry_bytes)
            .field("weighted_size", &self.inner.cache.weighted_size())
            .finish_non_exhaustive()
    }
}

// === impl CacheStoreBuilder ===

impl CacheStoreBuilder {
    /// The bound on the store's total weighted size (default 64 MiB).
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Responses whose body is larger are served but not stored (default
    /// 1 MiB). Clamped to `max_bytes` and to 4 GiB.
    pub fn max_entry_bytes(mut self, bytes: u64) -> Self {
        self.max_entry_bytes = bytes;
        self
    }

    /// Builds the store.
    pub fn build(self) -> CacheStore {
        let counters = Arc::new(Counters::default());
        let listener_counters = Arc::clone(&counters);
        let cache = moka::sync::Cache::builder()
            .max_capacity(self.max_bytes)
            // LRU rather than TinyLFU admission: a response just stored must
            // be served to the next request, not rejected as a newcomer.
            .eviction_policy(EvictionPolicy::lru())
            .weigher(|key: &Arc<str>, slot: &Slot| {
                u32::try_from(key.len() + slot.weight()).unwrap_or(u32::MAX)
            })
            .eviction_listener(move |_key, slot: Slot, cause: RemovalCause| {
                if let Slot::Response(_) = slot {
                    listener_counters.responses.fetch_sub(1, Ordering::Relaxed);
                }
                if cause.was_evicted() {
                    listener_counters.evictions.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        CacheStore {
            inner: Arc::new(Inner {
                cache,
                max_bytes: self.max_bytes,
                max_entry_bytes: self
                    .max_entry_bytes
                    .min(self.max_bytes)
                    .min(u64::from(u32::MAX)),
                counters,
                next_index: AtomicU64::new(0),
                flights: Mutex::new(HashMap::new()),
                revalidating: Mutex::new(HashSet::new()),
                filling: AtomicU64::new(0),
                fills: Mutex::new(HashMap::new()),
            }),
        }
    }
}

// === impl Slot ===

impl Slot {
    fn key(&self) -> &PrimaryKey {
        match self {
            Slot::Index(i) => &i.key,
            Slot::Response(r) => &r.key,
        }
    }

    fn weight(&self) -> usize {
        match self {
            Slot::Index(i) => INDEX_WEIGHT + i.vary.len() * 32,
            Slot::Response(r) => {
                let headers: usize = r
                    .headers
                    .iter()
                    .map(|(k, v)| k.as_str().len() + v.len() + 32)
                    .sum();
                r.body.len() + headers + r.variant.len() + 256
            }
        }
    }
}

// === impl Stored ===

impl Stored {
    /// Freshness at `now`, with the layer's heuristic.
    pub(crate) fn freshness(&self, default_ttl: Option<Duration>, now: SystemTime) -> Freshness {
        Freshness::new(&self.cc, &self.headers, &self.timing, default_ttl, now)
    }

    /// Whether a conditional request can validate it.
    pub(crate) fn has_validator(&self) -> bool {
        self.headers.contains_key(ETAG) || self.headers.contains_key(LAST_MODIFIED)
    }
}

// === impl Revalidating ===

impl Drop for Revalidating {
    fn drop(&mut self) {
        self.store.inner.revalidating.lock().remove(&self.variant);
    }
}

/// The moka key of one variant of `primary`.
fn variant_key(primary: &str, secondary: &str) -> String {
    let mut k = String::with_capacity(primary.len() + secondary.len() + 1);
    k.push_str(primary);
    k.push('#');
    k.push_str(secondary);
    k
}

/// A copy of `headers` whose values have bytes of their own.
///
/// hyper parses a response head in place: its header values are slices of
/// the connection's read buffer (one allocation, 8 KiB and more). A value
/// kept in the store would keep that whole buffer alive, many times what
/// the store's weight counts, for as long as the entry lives.
fn owned(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        // As many entries as a valid map held: the append cannot fail.
        let _ = out.try_append(name.clone(), owned_value(value));
    }
    out
}

/// A copy of `value` in its own allocation (see [`owned`]).
fn owned_value(value: &HeaderValue) -> HeaderValue {
    // The bytes of a valid value are valid: the fallback is unreachable.
    let mut copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
    copy.set_sensitive(value.is_sensitive());
    copy
}

/// Removes what must not be stored (RFC 9111 §3.1): hop-by-hop fields and
/// those `Connection` names, and `Age` (the cache computes it).
pub(crate) fn sanitize(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [CONNECTION, TE, TRANSFER_ENCODING, UPGRADE, TRAILER, AGE] {
        headers.remove(name);
    }
    for name in ["keep-alive", "proxy-connection"] {
        headers.remove(name);
    }
}

/// Whether a `304`'s field replaces the stored one (§3.2): not the framing
/// (`Content-Length`), not hop-by-hop fields, not `Age`, and never
/// `Set-Cookie` (the cookie belongs to one client; it is passed on to that
/// client only).
fn updatable(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "content-length"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "transfer-encoding"
            | "upgrade"
            | "trailer"
            | "age"
            | "set-cookie"
            | "set-cookie2"
    ) && name != SET_COOKIE
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use http::header::{AUTHORIZATION, CONTENT_TYPE};

    use super::*;

    #[test]
    fn stored_header_values_do_not_keep_the_read_buffer_alive() {
        // A response head parsed in place, as hyper does: every value is
        // a slice of one read buffer.
        let (buffer, dropped) = towergate_test::tracked_bytes(b"text/plainW/\"v1\"a=1b=2");
        let value =
            |at: std::ops::Range<usize>| HeaderValue::from_maybe_shared(buffer.slice(at)).unwrap();
        let mut parsed = HeaderMap::new();
        parsed.insert(CONTENT_TYPE, value(0..10));
        parsed.insert(ETAG, value(10..16));
        parsed.append(SET_COOKIE, value(16..19));
        parsed.append(SET_COOKIE, value(19..22));
        let mut secret = value(16..19);
        secret.set_sensitive(true);
        parsed.insert(AUTHORIZATION, secret);

        let stored = owned(&parsed);
        drop(parsed);
        drop(buffer);
        assert!(
            dropped.load(Ordering::SeqCst),
            "the read buffer is still alive"
        );

        assert_eq!(stored[CONTENT_TYPE], "text/plain");
        assert_eq!(stored[ETAG], "W/\"v1\"");
        let cookies: Vec<_> = stored.get_all(SET_COOKIE).iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert!(stored[AUTHORIZATION].is_sensitive());
        assert!(!stored[CONTENT_TYPE].is_sensitive());
    }
}
