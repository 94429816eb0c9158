//! Request collapsing: concurrent misses for one primary key make one
//! upstream request.
//!
//! The first miss becomes the leader and holds a [`Leader`] guard; it moves
//! into the response body and ends the flight with its [`Outcome`]:
//! [`Stored`](Outcome::Stored) once the entry is stored (or freshened),
//! [`NotStored`](Outcome::NotStored) once the response turned out not
//! storable (or the upstream failed), and, dropped before it knew,
//! [`Abandoned`](Outcome::Abandoned): its client went away or its body
//! failed. The waiters wake on any of them and look the store up again.
//! Finding nothing, after `NotStored` they go upstream at once (another
//! try would most likely fare no better, and waiting in line for it would
//! serialise them); after `Abandoned` they join again ([`wait`]), so that
//! one of them leads the next try and the rest wait for it, instead of all
//! of them going upstream at once. Waiters wait at most the layer's
//! timeout, counted from their first join however often they join again,
//! and at most `max_waiters` wait per flight: nothing here can deadlock. A
//! flight older than that timeout takes no more waiters: the next miss
//! leads a new one (a leader whose client reads slowly, or not at all,
//! holds up one timeout's worth of waiters, not every miss until it ends).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::store::CacheStore;

/// One in-flight leader request.
#[derive(Debug)]
pub(crate) struct Flight {
    /// `None` while the leader is on its way.
    done: watch::Sender<Option<Outcome>>,
    waiters: AtomicUsize,
    started: Instant,
}

/// How a flight ended, as its waiters learn it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The entry is stored or freshened: the waiters find it.
    Stored,
    /// The response could not be stored, or the upstream failed: the
    /// waiters go upstream at once.
    NotStored,
    /// The leader was dropped before it knew (its client went away, its
    /// body failed): the waiters join again.
    Abandoned,
}

/// What a miss does.
pub(crate) enum Join {
    /// Go upstream and hold this until the entry is stored (or not).
    Leader(Leader),
    /// Wait for the leader.
    Waiter(Waiter),
    /// Too many waiters: go upstream without waiting.
    Busy,
}

/// What a waiter does once its wait is over ([`wait`]).
pub(crate) enum Waited<T> {
    /// What the store now holds for it.
    Found(T),
    /// Lead the next try: the flight was abandoned and this one joined
    /// first.
    Lead(Leader),
    /// Go upstream without waiting any longer.
    Alone,
}

/// The leader's guard; [`finish`](Leader::finish) it with the outcome, or
/// drop it (an [`Outcome::Abandoned`] flight) to release the waiters.
pub(crate) struct Leader {
    store: CacheStore,
    key: Arc<str>,
    flight: Arc<Flight>,
    outcome: Outcome,
}

/// A waiter's place in the queue.
pub(crate) struct Waiter {
    rx: watch::Receiver<Option<Outcome>>,
    flight: Arc<Flight>,
}

/// Joins the flight for `key`, or starts one (also in place of one that
/// has run for `timeout` already).
pub(crate) fn join(
    store: &CacheStore,
    key: &Arc<str>,
    max_waiters: usize,
    timeout: Duration,
) -> Join {
    let mut flights = store.inner.flights.lock();
    if let Some(flight) = flights.get(key).filter(|f| f.started.elapsed() < timeout) {
        if flight.waiters.fetch_add(1, Ordering::AcqRel) >= max_waiters {
            flight.waiters.fetch_sub(1, Ordering::AcqRel);
            return Join::Busy;
        }
        return Join::Waiter(Waiter {
            rx: flight.done.subscribe(),
            flight: Arc::clone(flight),
        });
    }
    let (done, _) = watch::channel(None);
    let flight = Arc::new(Flight {
        done,
        waiters: AtomicUsize::new(0),
        started: Instant::now(),
    });
    flights.insert(Arc::clone(key), Arc::clone(&flight));
    Join::Leader(Leader {
        store: store.clone(),
        key: Arc::clone(key),
        flight,
        outcome: Outcome::Abandoned,
    })
}

/// Waits for the flight `waiter` joined, for at most `timeout` in all,
/// then looks up what the store holds with `found`. A waiter whose leader
/// abandoned the flight and that still finds nothing joins again while
/// time remains: the first to do so leads the next try ([`Waited::Lead`]),
/// the others wait for it. Otherwise (the response was not storable, the
/// time is up, too many wait) it goes upstream alone.
pub(crate) async fn wait<T>(
    mut waiter: Waiter,
    store: &CacheStore,
    key: &Arc<str>,
    max_waiters: usize,
    timeout: Duration,
    mut found: impl FnMut() -> Option<T>,
) -> Waited<T> {
    // From the first join: joining again never makes a waiter wait longer
    // than it would have for one leader.
    let deadline = Instant::now() + timeout;
    loop {
        let outcome = waiter.wait_until(deadline).await;
        // Leaves the old flight before (maybe) joining the next one.
        drop(waiter);
        if let Some(hit) = found() {
            return Waited::Found(hit);
        }
        if outcome != Some(Outcome::Abandoned) || Instant::now() >= deadline {
            return Waited::Alone;
        }
        match join(store, key, max_waiters, timeout) {
            Join::Leader(leader) => return Waited::Lead(leader),
            Join::Waiter(next) => waiter = next,
            Join::Busy => return Waited::Alone,
        }
    }
}

// === impl Waiter ===

impl Waiter {
    /// Waits until the leader is done or `deadline` passed; the flight's
    /// outcome, `None` when the time ran out first.
    async fn wait_until(&mut self, deadline: Instant) -> Option<Outcome> {
        let done = tokio::time::timeout_at(deadline, self.rx.wait_for(Option::is_some)).await;
        match done {
            Ok(Ok(outcome)) => *outcome,
            // The sender lives in the flight, which this waiter holds: it
            // cannot close, but if it did, nobody is leading any more.
            Ok(Err(_)) => Some(Outcome::Abandoned),
            Err(_) => None,
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.flight.waiters.fetch_sub(1, Ordering::AcqRel);
    }
}

// === impl Leader ===

impl Leader {
    /// Ends the flight with what became of the response.
    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.outcome = outcome;
    }
}

/// Ends the flight `leader` leads, if any, with `outcome`.
pub(crate) fn finish(leader: Option<Leader>, outcome: Outcome) {
    if let Some(leader) = leader {
        leader.finish(outcome);
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        {
            let mut flights = self.store.inner.flights.lock();
            if flights
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                flights.remove(&self.key);
            }
        }
        self.flight.done.send_replace(Some(self.outcome));
    }
}

impl fmt::Debug for Leader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leader")
            .field("key", &self.key)
            .field("outcome", &self.outcome)
            .finish()
    }
}

#[cfg(test)]
mod tests;
