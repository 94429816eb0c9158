//! [`Pool`]: a named set of endpoints, their services, their load and their
//! health, shared by every route that sends to it.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::request::Parts;
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tokio::task::{AbortHandle, JoinSet};
use towergate_core::BoxError;

use crate::algorithm::outlier::EjectionPolicy;
use crate::algorithm::{
    ActiveHealth, Outlier, PeakEwma, Random, Ring, RoundRobin, SmoothWeighted, ThreadRandom, ewma,
    least, p2c,
};
use crate::classify::Outcome;
use crate::config::{Algorithm, CircuitBreaker, Ejection};
use crate::discover::{Discover, Dns, Resolver};
use crate::endpoint::{Change, Endpoint, MakeEndpoint};
use crate::error::{BuildError, NoHealthyEndpoint, Overloaded};
use crate::health::HealthCheck;
use crate::state::{ActiveCheckState, EndpointState, Status};

/// A named set of endpoints and their services, shared by the routes that
/// send to it; cheap to clone (one `Arc`).
///
/// The pool picks an endpoint per attempt with its [`Algorithm`], keeps
/// each endpoint's load (requests in flight, peak-EWMA latency) and health
/// (active checks, passive ejection), and enforces the
/// [`CircuitBreaker`] limits. Send requests through it with a
/// [`Balance`](crate::Balance) service.
///
/// Background work (DNS re-resolution, [`Discover`] sources, active health
/// checks) runs on tokio tasks that stop when the last clone of the pool is
/// dropped.
///
/// See the [crate docs](crate) for an example.
pub struct Pool<S> {
    pub(crate) shared: Arc<Shared<S>>,
}

/// Settings for a [`Pool`]; see [`Pool::builder`].
#[must_use]
pub struct PoolBuilder<M> {
    name: Arc<str>,
    make: M,
    algorithm: Algorithm,
    endpoints: Vec<Endpoint>,
    resolvers: Vec<Resolver>,
    discover: Vec<Pin<Box<dyn Discover>>>,
    ejection: Ejection,
    circuit: CircuitBreaker,
    health: Option<HealthCheck>,
    panic_threshold: f64,
    default_rtt: Duration,
    decay: Duration,
}

pub(crate) struct Shared<S> {
    pub(crate) name: Arc<str>,
    /// [`Pool::id`]: a number no other pool of the process had.
    id: usize,
    algorithm: Algorithm,
    members: ArcSwap<Members<S>>,
    /// Serialises membership changes and ejections (both rare).
    update: Mutex<()>,
    make: Box<dyn MakeEndpoint<Service = S>>,
    ejection: Ejection,
    policy: EjectionPolicy,
    pub(crate) circuit: CircuitBreaker,
    health: Option<HealthCheck>,
    resolvers: Vec<Resolver>,
    panic_threshold: f64,
    default_rtt: Duration,
    decay: Duration,
    /// Endpoints out of rotation (ejected or failing checks). While it is
    /// zero, picks skip the health scan entirely.
    degraded: AtomicUsize,
    panicking: AtomicBool,
    /// Requests admitted (`max_requests`); shared with the [`Load`]s that
    /// responses carry.
    requests: Arc<AtomicUsize>,
    pending: AtomicUsize,
    rr: RoundRobin,
    /// Told of each membership change, for the active checks to start and
    /// stop their probes (its own `Arc`: the task waits on it without
    /// keeping the pool alive).
    members_changed: Arc<Notify>,
    /// Dropped with the pool: background tasks see the channel close.
    _shutdown: watch::Sender<()>,
}

/// One membership: swapped whole on change, read lock-free by picks.
struct Members<S> {
    slots: Vec<Arc<Slot<S>>>,
    ring: Option<Ring>,
    wrr: Mutex<SmoothWeighted>,
}

impl<S> Members<S> {
    /// The endpoints `keep` keeps, with their sources: the start of a
    /// membership change (see `Pool::rebuild`).
    fn desired(&self, keep: impl Fn(&Slot<S>) -> bool) -> Vec<(Endpoint, SourceTag)> {
        self.slots
            .iter()
            .filter(|s| keep(s))
            .map(|s| (s.endpoint(), s.source))
            .collect()
    }
}

/// An endpoint in the pool; kept across membership changes while its URL
/// stays, so its statistics do too.
pub(crate) struct Slot<S> {
    endpoint: Endpoint,
    weight: AtomicU32,
    source: SourceTag,
    service: S,
    /// Requests sent and not finished (`max_endpoint_requests`,
    /// `least_requests`, the peak-EWMA cost); shared with the [`Load`]s
    /// that responses carry.
    in_flight: Arc<AtomicUsize>,
    pending: AtomicUsize,
    requests: AtomicU64,
    failures: AtomicU64,
    /// Mirrors `outlier` being ejected, so picks need no lock.
    ejected: AtomicBool,
    active_ok: AtomicBool,
    ewma: Mutex<PeakEwma>,
    outlier: Mutex<Outlier>,
    active: Mutex<ActiveRecord>,
}

#[derive(Debug, Default)]
struct ActiveRecord {
    health: ActiveHealth,
    last_status: Option<u16>,
    last_error: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SourceTag {
    Static,
    Resolver(usize),
    Discover,
    Api,
}

/// An endpoint chosen for one attempt; counts as in flight until dropped,
/// or, once [`finish`](Picked::finish)ed, for as long as the [`Load`] it
/// hands on lives.
pub(crate) struct Picked<S> {
    pub(crate) slot: Arc<Slot<S>>,
    pool: Pool<S>,
    started: Instant,
    /// A cancelled attempt (hedge lost, caller gone) still tells how long
    /// the endpoint took at least.
    observe_on_drop: bool,
    /// The endpoint's count of this attempt; `None` once handed on.
    load: Option<Load>,
}

/// One request counted in a counter of requests in flight (an endpoint's,
/// or the pool's `max_requests`), until it is dropped.
///
/// A response carries it in its body (see
/// [`ResponseBody`](crate::body::ResponseBody)), so that a request counts
/// until its body has streamed, not only until its headers came. It is not
/// generic over the endpoint service, so neither is the body, and it costs
/// no allocation: the counter is the slot's (or the pool's) own `Arc`.
pub(crate) struct Load(Arc<AtomicUsize>);

/// A request waiting for an endpoint service to become ready.
pub(crate) struct PendingGuard<S> {
    slot: Arc<Slot<S>>,
    pool: Pool<S>,
}

/// Now, on tokio's clock (so that `tokio::time::pause` governs it too).
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

// === impl Pool ===

impl<S> Clone for Pool<S> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<S> fmt::Debug for Pool<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.shared.name)
            .field("algorithm", &self.shared.algorithm)
            .field("endpoints", &self.shared.members.load().slots.len())
            .finish_non_exhaustive()
    }
}

impl Pool<()> {
    /// Starts building the pool `name`, whose endpoints become services
    /// through `make`.
    pub fn builder<M: MakeEndpoint>(name: impl Into<Arc<str>>, make: M) -> PoolBuilder<M> {
        PoolBuilder {
            name: name.into(),
            make,
            algorithm: Algorithm::default(),
            endpoints: Vec::new(),
            resolvers: Vec::new(),
            discover: Vec::new(),
            ejection: Ejection::default(),
            circuit: CircuitBreaker::default(),
            health: None,
            panic_threshold: 0.5,
            default_rtt: Duration::from_millis(30),
            decay: Duration::from_secs(10),
        }
    }
}

impl<S> Pool<S>
where
    S: Clone + Send + Sync + 'static,
{
    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The number of endpoints, in rotation or not.
    pub fn len(&self) -> usize {
        self.shared.members.load().slots.len()
    }

    /// Whether the pool has no endpoint.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The endpoints, with their current weights.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.shared
            .members
            .load()
            .slots
            .iter()
            .map(|s| s.endpoint())
            .collect()
    }

    /// An identity of this pool (its clones share it), never reused by
    /// another pool of the process (an address could be): state kept about
    /// a pool outside it (a metrics exporter's last counts) is keyed by it,
    /// so a pool rebuilt by a reload starts afresh.
    pub fn id(&self) -> usize {
        self.shared.id
    }

    /// Each endpoint's health, load and counters, for the admin API.
    pub fn snapshot(&self) -> Vec<EndpointState> {
        let shared = &*self.shared;
        let now = now();
        shared
            .members
            .load()
            .slots
            .iter()
            .map(|s| {
                let outlier = *s.outlier.lock();
                let ejected_for_ms = outlier
                    .ejected_until()
                    .filter(|u| *u > now)
                    .map(|u| u64::try_from((u - now).as_millis()).unwrap_or(u64::MAX));
                let active_check = shared.health.as_ref().map(|_| {
                    let a = s.active.lock();
                    ActiveCheckState {
                        healthy: a.health.is_healthy(),
                        consecutive_successes: a.health.successes(),
                        consecutive_failures: a.health.failures(),
                        last_status: a.last_status,
                        last_error: a.last_error.clone(),
                    }
                });
                let weight = s.weight();
                let status = if weight == 0 {
                    Status::Draining
                } else if !s.active_ok.load(Ordering::Acquire) {
                    Status::Unhealthy
                } else if ejected_for_ms.is_some() {
                    Status::Ejected
                } else {
                    Status::Healthy
                };
                EndpointState {
                    url: s.endpoint.url().to_owned(),
                    weight,
                    source: s.source.name(),
                    status,
                    active_check,
                    in_flight: s.in_flight.load(Ordering::Relaxed),
                    pending: s.pending.load(Ordering::Relaxed),
                    ewma_ms: s.ewma.lock().estimate(now, shared.decay) / 1e6,
                    requests: s.requests.load(Ordering::Relaxed),
                    failures: s.failures.load(Ordering::Relaxed),
                    consecutive_failures: outlier.consecutive_failures(),
                    ejected_for_ms,
                    ejections: outlier.ejections(),
                }
            })
            .collect()
    }

    /// The endpoint a request with this key hash would go to now (`None`:
    /// no key), as a request would pick it. For tools and benchmarks.
    pub fn select(&self, key_hash: Option<u64>) -> Result<Endpoint, BoxError> {
        let picked = self.pick(key_hash, &[])?;
        let e = picked.slot.endpoint();
        picked.release();
        Ok(e)
    }

    /// The key hash of a request, for a consistent-hash pool.
    pub fn request_hash(&self, parts: &Parts) -> Option<u64> {
        match &self.shared.algorithm {
            Algorithm::ConsistentHash(key) => key.hash(parts),
            _ => None,
        }
    }

    /// Adds an endpoint (or updates the weight of the one with its URL).
    pub fn insert(&self, endpoint: Endpoint) -> Result<(), BoxError> {
        self.change(Change::Insert(endpoint), SourceTag::Api)
    }

    /// Removes the endpoint with this URL; returns whether there was one.
    /// Requests in flight to it finish.
    pub fn remove(&self, url: &str) -> bool {
        let _g = self.shared.update.lock();
        let current = self.shared.members.load_full();
        if !current.slots.iter().any(|s| s.endpoint.url() == url) {
            return false;
        }
        let desired = current.desired(|s| s.endpoint.url() != url);
        self.rebuild(&current, desired);
        true
    }

    /// Starts this pool's DNS and SRV endpoints from those of `previous`
    /// (the pool a reload replaces) for each source the two have alike, so
    /// that the new pool serves at once instead of after its first lookup,
    /// and keeps serving if that lookup fails. A source that has already
    /// resolved here is left as it is; the next lookup replaces what was
    /// taken over, as it would any earlier answer. Their health and
    /// ejection state come over with [`adopt_state`](Self::adopt_state).
    /// Returns how many endpoints were taken.
    pub fn adopt_resolved(&self, previous: &Pool<S>) -> usize {
        if Arc::ptr_eq(&self.shared, &previous.shared) {
            return 0;
        }
        let old = previous.shared.members.load_full();
        let _g = self.shared.update.lock();
        let current = self.shared.members.load_full();
        let mut desired = current.desired(|_| true);
        let mut taken = 0;
        for (i, r) in self.shared.resolvers.iter().enumerate() {
            let tag = SourceTag::Resolver(i);
            if current.slots.iter().any(|s| s.source == tag) {
                continue;
            }
            let Some(j) = previous
                .shared
                .resolvers
                .iter()
                .position(|p| p.same_source(r))
            else {
                continue;
            };
            for s in old
                .slots
                .iter()
                .filter(|s| s.source == SourceTag::Resolver(j))
            {
                if !desired.iter().any(|(d, _)| d.url() == s.endpoint.url()) {
                    desired.push((s.endpoint(), tag));
                    taken += 1;
                }
            }
        }
        if taken > 0 {
            self.rebuild(&current, desired);
            tracing::debug!(pool = %self.shared.name, taken, "resolved endpoints taken over from the previous pool");
        }
        taken
    }

    /// Carries each endpoint's state over from `previous` (the pool a
    /// reload replaces) to the endpoints of this pool with the same URL:
    /// its outlier ejection (and the back-off of its next one) when this
    /// pool ejects too, its active-check record when this pool checks too,
    /// and its latency estimate. A reload (a SIGHUP for log rotation
    /// included) would otherwise put an endpoint found dead back in
    /// rotation until checks or failures found it again. Call it after
    /// [`adopt_resolved`](Self::adopt_resolved), which brings the resolved
    /// endpoints over. Returns how many endpoints were carried over.
    pub fn adopt_state(&self, previous: &Pool<S>) -> usize {
        if Arc::ptr_eq(&self.shared, &previous.shared) {
            return 0;
        }
        let old = previous.shared.members.load_full();
        let _g = self.shared.update.lock();
        let current = self.shared.members.load_full();
        let ejects = self.shared.ejection.enabled;
        let checks = self.shared.health.is_some() && previous.shared.health.is_some();
        let mut carried = 0;
        for slot in &current.slots {
            let Some(o) = old
                .slots
                .iter()
                .find(|o| o.endpoint.url() == slot.endpoint.url())
            else {
                continue;
            };
            if ejects {
                let outlier = *o.outlier.lock();
                *slot.outlier.lock() = outlier;
                slot.ejected
                    .store(o.ejected.load(Ordering::Acquire), Ordering::Release);
            }
            if checks {
                let record = {
                    let a = o.active.lock();
                    (a.health, a.last_status, a.last_error.clone())
                };
                let mut b = slot.active.lock();
                (b.health, b.last_status, b.last_error) = record;
                slot.active_ok
                    .store(o.active_ok.load(Ordering::Acquire), Ordering::Release);
            }
            let ewma = *o.ewma.lock();
            *slot.ewma.lock() = ewma;
            carried += 1;
        }
        Self::count_degraded(&self.shared, &current);
        carried
    }

    /// Re-resolves every DNS (and SRV) source now, instead of waiting for
    /// its interval; the first error is returned, after all were tried.
    pub async fn refresh(&self) -> Result<(), BoxError> {
        let mut first = None;
        for (i, r) in self.shared.resolvers.iter().enumerate() {
            if let Err(e) = self.resolve_one(i, r).await {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    async fn resolve_one(&self, i: usize, r: &Resolver) -> Result<(), BoxError> {
        match r.resolve().await {
            Ok(endpoints) => {
                self.replace_source(SourceTag::Resolver(i), endpoints);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(pool = %self.shared.name, source = %r, error = %e, "resolution failed; keeping the previous endpoints");
                Err(e)
            }
        }
    }

    pub(crate) fn change(&self, change: Change, tag: SourceTag) -> Result<(), BoxError> {
        match change {
            Change::Insert(e) => {
                let _g = self.shared.update.lock();
                let current = self.shared.members.load_full();
                let mut desired = current.desired(|_| true);
                match desired.iter_mut().find(|(d, _)| d.url() == e.url()) {
                    Some((d, _)) => *d = e.clone(),
                    None => desired.push((e.clone(), tag)),
                }
                let failed = self.rebuild(&current, desired);
                match failed.into_iter().next() {
                    Some((_, err)) => Err(err),
                    None => Ok(()),
                }
            }
            Change::Remove(url) => {
                self.remove(&url);
                Ok(())
            }
        }
    }

    /// Makes `endpoints` the whole contribution of one source.
    fn replace_source(&self, tag: SourceTag, endpoints: Vec<Endpoint>) {
        let _g = self.shared.update.lock();
        let current = self.shared.members.load_full();
        let mut desired = current.desired(|s| s.source != tag);
        desired.extend(endpoints.into_iter().map(|e| (e, tag)));
        self.rebuild(&current, desired);
    }

    /// Installs a new membership: surviving URLs keep their slot (and its
    /// statistics), new ones get a service from `make`. Called with the
    /// update lock held. Returns the endpoints whose service failed.
    fn rebuild(
        &self,
        current: &Members<S>,
        desired: Vec<(Endpoint, SourceTag)>,
    ) -> Vec<(Endpoint, BoxError)> {
        let shared = &*self.shared;
        let now = now();
        let average = self.average_rtt(current, None);
        let mut seen = HashSet::new();
        let mut slots = Vec::with_capacity(desired.len());
        let mut failed = Vec::new();
        for (endpoint, tag) in desired {
            if !seen.insert(endpoint.url_arc().clone()) {
                // Another source has it already: the first one keeps it.
                continue;
            }
            if let Some(s) = current
                .slots
                .iter()
                .find(|s| s.endpoint.url() == endpoint.url())
            {
                let old = s.weight.swap(endpoint.weight(), Ordering::AcqRel);
                if old != endpoint.weight() {
                    tracing::info!(pool = %shared.name, endpoint = %endpoint.url(), weight = endpoint.weight(), "endpoint weight changed");
                }
                slots.push(s.clone());
                continue;
            }
            match shared.make.make_endpoint(&endpoint) {
                Ok(service) => {
                    tracing::info!(pool = %shared.name, endpoint = %endpoint.url(), weight = endpoint.weight(), source = tag.name(), "endpoint added");
                    slots.push(Arc::new(Slot::new(endpoint, tag, service, average, now)));
                }
                Err(e) => {
                    tracing::warn!(pool = %shared.name, endpoint = %endpoint.url(), error = %e, "endpoint left out: its service could not be made");
                    failed.push((endpoint, e));
                }
            }
        }
        for s in &current.slots {
            if !slots.iter().any(|n| Arc::ptr_eq(n, s)) {
                tracing::info!(pool = %shared.name, endpoint = %s.endpoint.url(), "endpoint removed");
            }
        }
        let ring = match shared.algorithm {
            Algorithm::ConsistentHash(_) => Some(Ring::new(
                slots.iter().map(|s| (s.endpoint.url(), s.weight())),
            )),
            _ => None,
        };
        let members = Members {
            slots,
            ring,
            wrr: Mutex::new(SmoothWeighted::default()),
        };
        Self::count_degraded(shared, &members);
        shared.members.store(Arc::new(members));
        shared.members_changed.notify_one();
        failed
    }

    fn count_degraded(shared: &Shared<S>, members: &Members<S>) {
        let n = members
            .slots
            .iter()
            .filter(|s| s.ejected.load(Ordering::Acquire) || !s.active_ok.load(Ordering::Acquire))
            .count();
        shared.degraded.store(n, Ordering::Release);
    }

    /// Recounts the endpoints out of rotation. Under the update lock: two
    /// recounts racing could otherwise store an older count over a newer
    /// one, and a count of zero turns the health filter off.
    fn refresh_degraded(&self) {
        let _g = self.shared.update.lock();
        let members = self.shared.members.load();
        Self::count_degraded(&self.shared, &members);
    }

    /// The mean latency estimate of the endpoints in rotation, other than
    /// `except`: where a new or returning endpoint starts, so it is neither
    /// flooded (starting at zero) nor starved (keeping an old peak).
    fn average_rtt(&self, members: &Members<S>, except: Option<&Arc<Slot<S>>>) -> f64 {
        let (sum, n) = members
            .slots
            .iter()
            .filter(|s| except.is_none_or(|e| !Arc::ptr_eq(e, s)))
            .filter(|s| s.in_rotation())
            .fold((0.0, 0u32), |(sum, n), s| {
                (sum + s.ewma.lock().last(), n + 1)
            });
        if n == 0 {
            self.shared.default_rtt.as_secs_f64() * 1e9
        } else {
            sum / f64::from(n)
        }
    }

    fn restart_ewma(&self, slot: &Arc<Slot<S>>, now: Instant) {
        let members = self.shared.members.load();
        let avg = self.average_rtt(&members, Some(slot));
        slot.ewma.lock().reset(avg, now);
    }

    /// Whether `slot` takes traffic, clearing its ejection if it has run
    /// out (the slow path, taken only while some endpoint is out).
    fn available(&self, slot: &Arc<Slot<S>>, now: Instant) -> bool {
        if slot.weight() == 0 || !slot.active_ok.load(Ordering::Acquire) {
            return false;
        }
        if slot.ejected.load(Ordering::Acquire) {
            // The flag changes under the outlier lock, as it is set: cleared
            // after the lock, it could undo an ejection made in between.
            let returned = {
                let mut o = slot.outlier.lock();
                if o.is_ejected(now) {
                    return false;
                }
                let returned = o.expire(now);
                slot.ejected.store(false, Ordering::Release);
                returned
            };
            if returned {
                tracing::info!(pool = %self.shared.name, endpoint = %slot.endpoint.url(), "ejection over: endpoint back in rotation");
                self.restart_ewma(slot, now);
            }
            self.refresh_degraded();
        }
        true
    }

    /// Chooses an endpoint for an attempt, never one of `tried` (a retry or
    /// a hedge goes elsewhere, or not at all). Fails fast: never waits for
    /// an endpoint.
    pub(crate) fn pick(
        &self,
        hash: Option<u64>,
        tried: &[Arc<Slot<S>>],
    ) -> Result<Picked<S>, BoxError> {
        let shared = &*self.shared;
        let circuit = &shared.circuit;
        if circuit
            .max_pending
            .is_some_and(|max| shared.pending.load(Ordering::Acquire) >= max)
        {
            return Err(self.overloaded("pool"));
        }
        let members = shared.members.load();
        let slots = &members.slots;
        if slots.is_empty() {
            return Err(NoHealthyEndpoint::new(shared.name.clone()).into());
        }
        let now = now();
        let filter_health = if shared.degraded.load(Ordering::Acquire) == 0 {
            false
        } else {
            let total = slots.iter().filter(|s| s.weight() > 0).count();
            let up = slots.iter().filter(|s| self.available(s, now)).count();
            let panic =
                shared.panic_threshold > 0.0 && (up as f64) < shared.panic_threshold * total as f64;
            if panic != shared.panicking.swap(panic, Ordering::AcqRel) {
                if panic {
                    tracing::warn!(pool = %shared.name, up, total, "too few endpoints healthy: panic mode, balancing over all of them");
                } else {
                    tracing::info!(pool = %shared.name, up, total, "enough endpoints healthy again: panic mode over");
                }
            }
            if !panic && up == 0 {
                return Err(NoHealthyEndpoint::new(shared.name.clone()).into());
            }
            !panic
        };
        // A full endpoint (per-endpoint limits) found while acquiring.
        let mut full: Vec<usize> = Vec::new();
        let mut capped = false;
        // Every miss marks its endpoint full, so this ends by
        // `slots.len() + 1` picks: all endpoints are tried before an
        // `Overloaded`.
        for _ in 0..=slots.len() {
            let eligible = |i: usize| {
                let s = &slots[i];
                if s.weight() == 0 || full.contains(&i) {
                    return false;
                }
                if filter_health && !s.in_rotation() {
                    return false;
                }
                if tried.iter().any(|t| Arc::ptr_eq(t, s)) {
                    return false;
                }
                circuit
                    .max_endpoint_pending
                    .is_none_or(|max| s.pending.load(Ordering::Relaxed) < max)
            };
            let Some(i) = self.choose(&members, hash, eligible, now) else {
                break;
            };
            let slot = &slots[i];
            if slot.try_acquire(circuit.max_endpoint_requests) {
                return Ok(Picked {
                    slot: slot.clone(),
                    pool: self.clone(),
                    started: now,
                    observe_on_drop: true,
                    load: Some(Load(slot.in_flight.clone())),
                });
            }
            capped = true;
            full.push(i);
        }
        let any_pending_cap = circuit.max_endpoint_pending.is_some_and(|max| {
            slots
                .iter()
                .any(|s| s.pending.load(Ordering::Relaxed) >= max)
        });
        if capped || any_pending_cap {
            Err(self.overloaded("endpoint"))
        } else {
            Err(NoHealthyEndpoint::new(shared.name.clone()).into())
        }
    }

    /// Whether the pool has an endpoint taking traffic that is not one of
    /// `tried`, health aside (the pick that follows sees to that): a cheap
    /// check before waiting to retry.
    pub(crate) fn has_untried(&self, tried: &[Arc<Slot<S>>]) -> bool {
        self.shared
            .members
            .load()
            .slots
            .iter()
            .any(|s| s.weight() > 0 && !tried.iter().any(|t| Arc::ptr_eq(t, s)))
    }

    fn choose(
        &self,
        members: &Members<S>,
        hash: Option<u64>,
        mut eligible: impl FnMut(usize) -> bool,
        now: Instant,
    ) -> Option<usize> {
        let shared = &*self.shared;
        let slots = &members.slots;
        let n = slots.len();
        let p2c = |eligible: &mut dyn FnMut(usize) -> bool| {
            p2c::pick(
                n,
                eligible,
                |i| {
                    let s = &slots[i];
                    let est = s.ewma.lock().estimate(now, shared.decay);
                    ewma::cost(est, s.in_flight.load(Ordering::Relaxed), s.weight())
                },
                &mut ThreadRandom,
            )
        };
        match &shared.algorithm {
            Algorithm::PeakEwma => p2c(&mut eligible),
            Algorithm::LeastRequests => least::pick(
                n,
                eligible,
                |i| {
                    let s = &slots[i];
                    (s.in_flight.load(Ordering::Relaxed) as f64 + 1.0)
                        / f64::from(s.weight().max(1))
                },
                &mut ThreadRandom,
            ),
            Algorithm::RoundRobin => shared.rr.pick(n, eligible),
            Algorithm::WeightedRoundRobin => {
                members.wrr.lock().pick(n, |i| slots[i].weight(), eligible)
            }
            Algorithm::ConsistentHash(_) => match (hash, &members.ring) {
                (Some(h), Some(ring)) => ring.lookup(h, eligible),
                _ => p2c(&mut eligible),
            },
        }
    }

    fn overloaded(&self, scope: &'static str) -> BoxError {
        Overloaded::new(
            self.shared.name.clone(),
            scope,
            self.shared.circuit.retry_after,
        )
        .into()
    }

    /// Counts a request against `max_requests` (`None`: no such limit,
    /// nothing counted).
    pub(crate) fn admit(&self) -> Result<Option<Load>, BoxError> {
        let Some(max) = self.shared.circuit.max_requests else {
            return Ok(None);
        };
        let prev = self.shared.requests.fetch_add(1, Ordering::AcqRel);
        if prev >= max {
            self.shared.requests.fetch_sub(1, Ordering::AcqRel);
            return Err(self.overloaded("pool"));
        }
        Ok(Some(Load(self.shared.requests.clone())))
    }

    /// Counts a wait for `slot`'s service to become ready.
    pub(crate) fn enter_pending(&self, slot: &Arc<Slot<S>>) -> PendingGuard<S> {
        slot.pending.fetch_add(1, Ordering::AcqRel);
        self.shared.pending.fetch_add(1, Ordering::AcqRel);
        PendingGuard {
            slot: slot.clone(),
            pool: self.clone(),
        }
    }

    /// Records how an attempt went: load, passive health, counters.
    fn record(&self, slot: &Arc<Slot<S>>, outcome: Outcome, rtt: Duration, now: Instant) {
        let shared = &*self.shared;
        slot.requests.fetch_add(1, Ordering::Relaxed);
        match outcome {
            // Not the endpoint's fault (a route's own short timeout, the
            // client's body), so no failure; but it took this long at
            // least, and an endpoint that stopped answering must not look
            // faster and faster to the latency-aware pick as its estimate
            // decays.
            Outcome::Ignore => slot.observe_at_least(rtt, now, shared.decay),
            Outcome::Success => {
                slot.ewma.lock().observe(rtt, now, shared.decay);
                slot.outlier.lock().on_success();
            }
            _ => {
                slot.failures.fetch_add(1, Ordering::Relaxed);
                slot.ewma.lock().observe_failure(rtt, now, shared.decay);
                if shared.ejection.enabled && slot.outlier.lock().on_failure(&shared.policy) {
                    self.try_eject(slot, now);
                }
            }
        }
    }

    fn try_eject(&self, slot: &Arc<Slot<S>>, now: Instant) {
        let shared = &*self.shared;
        let _g = shared.update.lock();
        let members = shared.members.load();
        if !members.slots.iter().any(|s| Arc::ptr_eq(s, slot)) {
            return;
        }
        let total = members.slots.iter().filter(|s| s.weight() > 0).count();
        let out = members
            .slots
            .iter()
            .filter(|s| s.ejected.load(Ordering::Acquire) && s.outlier.lock().is_ejected(now))
            .count();
        let allowed = (shared.ejection.max_ratio * total as f64).floor() as usize;
        if out >= allowed {
            tracing::debug!(pool = %shared.name, endpoint = %slot.endpoint.url(), out, allowed, "not ejecting: the largest share of the pool is out already");
            return;
        }
        let (d, n) = {
            let mut o = slot.outlier.lock();
            if o.ejected_until().is_some() {
                // Failures that were in flight together each asked for the
                // ejection; the first one did it.
                return;
            }
            let ejected = (o.eject(now, &shared.policy), o.ejections());
            slot.ejected.store(true, Ordering::Release);
            ejected
        };
        tracing::warn!(pool = %shared.name, endpoint = %slot.endpoint.url(), ejected_for = ?d, ejections = n, "endpoint ejected after consecutive failures");
        Self::count_degraded(shared, &members);
    }

    /// Records an active check's result.
    fn record_check(
        &self,
        slot: &Arc<Slot<S>>,
        ok: bool,
        status: Option<u16>,
        error: Option<String>,
    ) {
        let shared = &*self.shared;
        let Some(cfg) = &shared.health else { return };
        let transition = {
            let mut a = slot.active.lock();
            a.last_status = status;
            a.last_error = error.clone();
            a.health
                .record(ok, cfg.healthy_threshold, cfg.unhealthy_threshold)
        };
        match transition {
            Some(false) => {
                slot.active_ok.store(false, Ordering::Release);
                tracing::warn!(pool = %shared.name, endpoint = %slot.endpoint.url(), status, error, "endpoint failed its health checks: out of rotation");
                self.refresh_degraded();
            }
            Some(true) => {
                let now = now();
                let was_ejected = {
                    let mut o = slot.outlier.lock();
                    slot.ejected.store(false, Ordering::Release);
                    o.uneject(now)
                };
                slot.active_ok.store(true, Ordering::Release);
                self.restart_ewma(slot, now);
                tracing::info!(pool = %shared.name, endpoint = %slot.endpoint.url(), was_ejected, "endpoint passed its health checks: back in rotation");
                self.refresh_degraded();
            }
            None => {}
        }
    }
}

/// One probe of `endpoint`, within the check's timeout: whether it passed,
/// the status it got, and why it failed.
async fn probe(cfg: &HealthCheck, endpoint: &Endpoint) -> (bool, Option<u16>, Option<String>) {
    let probe = cfg.checker.check(endpoint, &cfg.path);
    match tokio::time::timeout(cfg.timeout, probe).await {
        Ok(Ok(status)) if cfg.passes(status) => (true, Some(status.as_u16()), None),
        Ok(Ok(status)) => (
            false,
            Some(status.as_u16()),
            Some(format!("unexpected status {status}")),
        ),
        Ok(Err(e)) => (false, None, Some(e.to_string())),
        Err(_) => (
            false,
            None,
            Some(format!("no answer within {:?}", cfg.timeout)),
        ),
    }
}

// === impl PoolBuilder ===

impl<M: MakeEndpoint> PoolBuilder<M> {
    /// The balancing algorithm (default [`Algorithm::PeakEwma`]).
    pub fn algorithm(mut self, a: Algorithm) -> Self {
        self.algorithm = a;
        self
    }

    /// Adds a static endpoint.
    pub fn endpoint(mut self, e: Endpoint) -> Self {
        self.endpoints.push(e);
        self
    }

    /// Adds static endpoints.
    pub fn endpoints(mut self, es: impl IntoIterator<Item = Endpoint>) -> Self {
        self.endpoints.extend(es);
        self
    }

    /// Adds the addresses a DNS name resolves to, re-resolved on its
    /// interval.
    pub fn dns(mut self, dns: Dns) -> Self {
        self.resolvers.push(Resolver::Dns(dns));
        self
    }

    /// Adds the targets of SRV records, re-resolved on their interval; a
    /// failed re-resolution keeps the endpoints of the last good one (see
    /// [`Srv`](crate::Srv)).
    #[cfg(feature = "srv")]
    pub fn srv(mut self, srv: crate::discover::Srv) -> Self {
        self.resolvers
            .push(Resolver::Srv(Box::new(crate::discover::SrvSource::new(
                srv,
            ))));
        self
    }

    /// Adds the endpoints a [`Discover`] source reports.
    pub fn discover(mut self, d: impl Discover) -> Self {
        self.discover.push(Box::pin(d));
        self
    }

    /// Passive ejection settings (default [`Ejection::default`]).
    pub fn ejection(mut self, e: Ejection) -> Self {
        self.ejection = e;
        self
    }

    /// Circuit-breaker limits (default none).
    pub fn circuit_breaker(mut self, c: CircuitBreaker) -> Self {
        self.circuit = c;
        self
    }

    /// Active health checks (default none).
    pub fn health_check(mut self, h: HealthCheck) -> Self {
        self.health = Some(h);
        self
    }

    /// When fewer than this share of the endpoints is healthy, balance over
    /// all of them rather than overload the few (Envoy's panic threshold).
    /// `0.0` turns it off: with no healthy endpoint, requests fail with
    /// [`NoHealthyEndpoint`]. Default 0.5.
    pub fn panic_threshold(mut self, share: f64) -> Self {
        self.panic_threshold = share;
        self
    }

    /// Peak-EWMA settings: the estimate of an endpoint that has no history
    /// yet and no peer to copy (default 30 ms), and how fast estimates
    /// forget (default 10 s), as in linkerd2-proxy.
    pub fn ewma(mut self, default_rtt: Duration, decay: Duration) -> Self {
        self.default_rtt = default_rtt;
        self.decay = decay;
        self
    }

    /// Builds the pool and starts its background tasks (which needs a
    /// tokio runtime when DNS, discovery or health checks are configured).
    pub fn build(self) -> Result<Pool<M::Service>, BuildError>
    where
        M::Service: Clone + Send + Sync + 'static,
    {
        self.build_with(true)
    }

    /// Builds the pool with every check [`build`](Self::build) makes, but
    /// starts none of its background tasks (no DNS lookup, no discovery, no
    /// health check; no runtime needed): to validate settings, as a
    /// configuration check does for an upstream nothing uses yet.
    pub fn build_idle(self) -> Result<Pool<M::Service>, BuildError>
    where
        M::Service: Clone + Send + Sync + 'static,
    {
        self.build_with(false)
    }

    fn build_with(self, start: bool) -> Result<Pool<M::Service>, BuildError>
    where
        M::Service: Clone + Send + Sync + 'static,
    {
        if self.name.is_empty() {
            return Err(BuildError::new("a pool needs a name"));
        }
        let name = &self.name;
        let bad = |what: String| BuildError::new(format!("pool {name}: {what}"));
        if !(0.0..=1.0).contains(&self.panic_threshold) {
            return Err(bad("panic_threshold must be within 0..=1".into()));
        }
        if self.default_rtt.is_zero() || self.decay.is_zero() {
            return Err(bad("EWMA default RTT and decay must not be zero".into()));
        }
        self.ejection.validate().map_err(|e| bad(e.to_string()))?;
        self.circuit.validate().map_err(|e| bad(e.to_string()))?;
        if let Some(h) = &self.health {
            h.validate().map_err(|e| bad(e.to_string()))?;
        }
        for r in &self.resolvers {
            match r {
                Resolver::Dns(d) => d.validate(),
                #[cfg(feature = "srv")]
                Resolver::Srv(s) => s.validate(),
            }
            .map_err(|e| bad(e.to_string()))?;
        }
        let mut seen = HashSet::new();
        for e in &self.endpoints {
            if e.url().is_empty() {
                return Err(bad("an endpoint has an empty URL".into()));
            }
            if !seen.insert(e.url_arc().clone()) {
                return Err(bad(format!("endpoint {} is listed twice", e.url())));
            }
        }
        let background = start
            && (!self.resolvers.is_empty() || !self.discover.is_empty() || self.health.is_some());
        let runtime = if background {
            Some(tokio::runtime::Handle::try_current().map_err(|_| {
                bad(
                    "DNS, discovery and health checks need to be built inside a tokio runtime"
                        .into(),
                )
            })?)
        } else {
            None
        };

        let (shutdown, _) = watch::channel(());
        static POOLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let shared = Arc::new(Shared {
            name: self.name.clone(),
            id: POOLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            algorithm: self.algorithm,
            members: ArcSwap::from_pointee(Members {
                slots: Vec::new(),
                ring: None,
                wrr: Mutex::new(SmoothWeighted::default()),
            }),
            update: Mutex::new(()),
            make: Box::new(self.make),
            policy: self.ejection.policy(),
            ejection: self.ejection,
            circuit: self.circuit,
            health: self.health,
            resolvers: self.resolvers,
            panic_threshold: self.panic_threshold,
            default_rtt: self.default_rtt,
            decay: self.decay,
            degraded: AtomicUsize::new(0),
            panicking: AtomicBool::new(false),
            requests: Arc::new(AtomicUsize::new(0)),
            pending: AtomicUsize::new(0),
            rr: RoundRobin::default(),
            members_changed: Arc::new(Notify::new()),
            _shutdown: shutdown,
        });
        let pool = Pool { shared };
        {
            let _g = pool.shared.update.lock();
            let current = pool.shared.members.load_full();
            let desired = self
                .endpoints
                .into_iter()
                .map(|e| (e, SourceTag::Static))
                .collect();
            if let Some((e, err)) = pool.rebuild(&current, desired).into_iter().next() {
                return Err(bad(format!("endpoint {}: {err}", e.url())));
            }
        }
        if let Some(rt) = runtime {
            pool.spawn_tasks(&rt, self.discover);
        }
        Ok(pool)
    }
}

impl<M> fmt::Debug for PoolBuilder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("endpoints", &self.endpoints)
            .field("resolvers", &self.resolvers)
            .field("discover", &self.discover.len())
            .field("ejection", &self.ejection)
            .field("circuit", &self.circuit)
            .field("health", &self.health)
            .field("panic_threshold", &self.panic_threshold)
            .finish_non_exhaustive()
    }
}

// === background tasks ===

impl<S> Pool<S>
where
    S: Clone + Send + Sync + 'static,
{
    fn spawn_tasks(&self, rt: &tokio::runtime::Handle, discover: Vec<Pin<Box<dyn Discover>>>) {
        let weak = Arc::downgrade(&self.shared);
        for (i, r) in self.shared.resolvers.iter().enumerate() {
            rt.spawn(resolve_task(
                weak.clone(),
                i,
                r.interval(),
                self.shared._shutdown.subscribe(),
            ));
        }
        for d in discover {
            rt.spawn(discover_task(
                weak.clone(),
                d,
                self.shared._shutdown.subscribe(),
            ));
        }
        if self.shared.health.is_some() {
            rt.spawn(health_task(
                weak,
                self.shared.members_changed.clone(),
                self.shared._shutdown.subscribe(),
            ));
        }
    }
}

async fn resolve_task<S>(
    pool: Weak<Shared<S>>,
    i: usize,
    every: Duration,
    mut shutdown: watch::Receiver<()>,
) where
    S: Clone + Send + Sync + 'static,
{
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        let Some(shared) = pool.upgrade() else { return };
        let pool = Pool { shared };
        if let Some(r) = pool.shared.resolvers.get(i) {
            // Logged inside; the previous endpoints stay.
            let _ = pool.resolve_one(i, r).await;
        }
    }
}

async fn discover_task<S>(
    pool: Weak<Shared<S>>,
    mut d: Pin<Box<dyn Discover>>,
    mut shutdown: watch::Receiver<()>,
) where
    S: Clone + Send + Sync + 'static,
{
    loop {
        let change = tokio::select! {
            _ = shutdown.changed() => return,
            c = std::future::poll_fn(|cx| d.as_mut().poll_change(cx)) => c,
        };
        let Some(shared) = pool.upgrade() else { return };
        let pool = Pool { shared };
        match change {
            None => {
                tracing::info!(pool = %pool.shared.name, "discovery source ended; its endpoints stay");
                return;
            }
            Some(Ok(change)) => {
                // A failed service is logged inside and left out.
                let _ = pool.change(change, SourceTag::Discover);
            }
            Some(Err(e)) => {
                tracing::warn!(pool = %pool.shared.name, error = %e, "discovery source failed");
            }
        }
    }
}

/// Active checks: one probe loop per endpoint ([`probe_task`]), started
/// for each endpoint that joins and stopped for each that leaves. Probing
/// each endpoint on its own schedule, rather than all of them in rounds,
/// means a probe that hangs until its timeout delays no other endpoint's
/// checks, so neither the detection of a failing endpoint nor the return
/// of a recovered one.
async fn health_task<S>(
    pool: Weak<Shared<S>>,
    members_changed: Arc<Notify>,
    mut shutdown: watch::Receiver<()>,
) where
    S: Clone + Send + Sync + 'static,
{
    // The loops die with this task (the pool dropped): the set aborts them.
    let mut running = JoinSet::new();
    // Each endpoint's loop, by the address of its slot: the loop holds the
    // slot, so the address is not reused while its entry is here.
    let mut probes: HashMap<usize, AbortHandle> = HashMap::new();
    loop {
        {
            let Some(shared) = pool.upgrade() else { return };
            let Some(cfg) = shared.health.clone() else {
                return;
            };
            let members = shared.members.load_full();
            drop(shared);
            let current: HashSet<usize> = members.slots.iter().map(|s| slot_key(s)).collect();
            probes.retain(|key, probe| {
                let stays = current.contains(key);
                if !stays {
                    probe.abort();
                }
                stays
            });
            for slot in &members.slots {
                probes.entry(slot_key(slot)).or_insert_with(|| {
                    running.spawn(probe_task(pool.clone(), slot.clone(), cfg.clone()))
                });
            }
            // The aborted loops' results.
            while running.try_join_next().is_some() {}
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = members_changed.notified() => {}
        }
    }
}

fn slot_key<S>(slot: &Arc<Slot<S>>) -> usize {
    Arc::as_ptr(slot).addr()
}

/// One endpoint's active checks: a probe every `interval` from the start
/// of the previous one (at once after it, when a probe took longer), each
/// later by a random part of a tenth of the interval, the first one too:
/// a pool's endpoints are not all probed at the same moment.
async fn probe_task<S>(pool: Weak<Shared<S>>, slot: Arc<Slot<S>>, cfg: HealthCheck)
where
    S: Clone + Send + Sync + 'static,
{
    let jitter = || (cfg.interval / 10).mul_f64(ThreadRandom.unit());
    tokio::time::sleep(jitter()).await;
    loop {
        let started = tokio::time::Instant::now();
        let (ok, status, error) = probe(&cfg, &slot.endpoint()).await;
        {
            let Some(shared) = pool.upgrade() else { return };
            Pool { shared }.record_check(&slot, ok, status, error);
        }
        match started.checked_add(cfg.interval.saturating_add(jitter())) {
            Some(next) => tokio::time::sleep_until(next).await,
            // An interval too long to be represented: never again.
            None => std::future::pending().await,
        }
    }
}

// === impl Slot ===

impl<S> Slot<S> {
    fn new(endpoint: Endpoint, source: SourceTag, service: S, rtt_ns: f64, now: Instant) -> Self {
        let mut ewma = PeakEwma::new(Duration::ZERO, now);
        ewma.reset(rtt_ns, now);
        Self {
            weight: AtomicU32::new(endpoint.weight()),
            endpoint,
            source,
            service,
            in_flight: Arc::new(AtomicUsize::new(0)),
            pending: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            ejected: AtomicBool::new(false),
            active_ok: AtomicBool::new(true),
            ewma: Mutex::new(ewma),
            outlier: Mutex::new(Outlier::default()),
            active: Mutex::new(ActiveRecord::default()),
        }
    }

    fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// In rotation by the lock-free flags alone.
    fn in_rotation(&self) -> bool {
        self.active_ok.load(Ordering::Acquire) && !self.ejected.load(Ordering::Acquire)
    }

    pub(crate) fn endpoint(&self) -> Endpoint {
        self.endpoint.clone().with_weight(self.weight())
    }

    pub(crate) fn service(&self) -> &S {
        &self.service
    }

    /// An attempt that ended without an answer took `waited` at least: a
    /// lower bound, which only ever raises the latency estimate.
    fn observe_at_least(&self, waited: Duration, now: Instant, decay: Duration) {
        let mut e = self.ewma.lock();
        if waited.as_secs_f64() * 1e9 > e.last() {
            e.observe(waited, now, decay);
        }
    }

    fn try_acquire(&self, max: Option<usize>) -> bool {
        match max {
            None => {
                self.in_flight.fetch_add(1, Ordering::AcqRel);
                true
            }
            Some(max) => self
                .in_flight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max).then_some(n + 1)
                })
                .is_ok(),
        }
    }
}

// === impl SourceTag ===

impl SourceTag {
    fn name(self) -> &'static str {
        match self {
            Self::Static => "static",
            Self::Resolver(_) => "dns",
            Self::Discover => "discover",
            Self::Api => "api",
        }
    }
}

// === impl Picked ===

impl<S> Picked<S>
where
    S: Clone + Send + Sync + 'static,
{
    /// Records the attempt's outcome, its latency taken now (at the
    /// response headers), and hands on the endpoint's count of it: the
    /// attempt stays in flight until that is dropped (with the response
    /// body, or the tunnel a `101` opened).
    pub(crate) fn finish(mut self, outcome: Outcome) -> Option<Load> {
        self.observe_on_drop = false;
        let now = now();
        let rtt = now.saturating_duration_since(self.started);
        self.pool.record(&self.slot, outcome, rtt, now);
        self.load.take()
    }

    /// Gives the endpoint back without recording anything.
    pub(crate) fn release(mut self) {
        self.observe_on_drop = false;
    }

    pub(crate) fn pool(&self) -> &Pool<S> {
        &self.pool
    }
}

impl<S> Drop for Picked<S> {
    // The endpoint's count goes with `load`, unless it was handed on.
    fn drop(&mut self) {
        if self.observe_on_drop {
            let now = now();
            let waited = now.saturating_duration_since(self.started);
            self.slot
                .observe_at_least(waited, now, self.pool.shared.decay);
        }
    }
}

// === impl Load ===

impl Drop for Load {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl fmt::Debug for Load {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Load")
            .field(&self.0.load(Ordering::Relaxed))
            .finish()
    }
}

// === impl PendingGuard ===

impl<S> Drop for PendingGuard<S> {
    fn drop(&mut self) {
        self.slot.pending.fetch_sub(1, Ordering::AcqRel);
        self.pool.shared.pending.fetch_sub(1, Ordering::AcqRel);
    }
}
