//! Request collapsing: concurrent misses for one primary key make one
//! upstream request.
//!
//! The first miss becomes the leader and holds a [`Leader`] guard; it moves
//! into the response body and is dropped once the entry is stored, or the
//! response turned out not storable, or its body failed or was dropped.
//! Dropping it always wakes the waiters, who then look the store up again
//! and, finding nothing, go upstream themselves. Waiters wait at most the
//! layer's timeout, and at most `max_waiters` wait per key: nothing here
//! can deadlock. A flight older than that timeout takes no more waiters:
//! the next miss leads a new one (a leader whose client reads slowly, or
//! not at all, holds up one timeout's worth of waiters, not every miss
//! until it ends).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::store::CacheStore;

/// One in-flight leader request.
#[derive(Debug)]
pub(crate) struct Flight {
    done: watch::Sender<bool>,
    waiters: AtomicUsize,
    started: tokio::time::Instant,
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

/// The leader's guard; dropping it releases the waiters.
pub(crate) struct Leader {
    store: CacheStore,
    key: Arc<str>,
    flight: Arc<Flight>,
}

/// A waiter's place in the queue.
pub(crate) struct Waiter {
    rx: watch::Receiver<bool>,
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
    let (done, _) = watch::channel(false);
    let flight = Arc::new(Flight {
        done,
        waiters: AtomicUsize::new(0),
        started: tokio::time::Instant::now(),
    });
    flights.insert(Arc::clone(key), Arc::clone(&flight));
    Join::Leader(Leader {
        store: store.clone(),
        key: Arc::clone(key),
        flight,
    })
}

// === impl Waiter ===

impl Waiter {
    /// Waits until the leader is done or `timeout` passed; returns whether
    /// the leader finished.
    pub(crate) async fn wait(mut self, timeout: Duration) -> bool {
        let done = tokio::time::timeout(timeout, self.rx.wait_for(|done| *done)).await;
        // A closed channel also means the leader is gone.
        done.is_ok()
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.flight.waiters.fetch_sub(1, Ordering::AcqRel);
    }
}

// === impl Leader ===

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
        self.flight.done.send_replace(true);
    }
}

impl fmt::Debug for Leader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leader").field("key", &self.key).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(30);

    #[tokio::test(start_paused = true)]
    async fn a_flight_older_than_the_timeout_takes_no_more_waiters() {
        let store = CacheStore::new();
        let key: Arc<str> = "k".into();
        let timeout = Duration::from_secs(5);
        let Join::Leader(stuck) = join(&store, &key, 8, timeout) else {
            panic!("first is leader")
        };
        assert!(matches!(join(&store, &key, 8, timeout), Join::Waiter(_)));
        tokio::time::advance(timeout).await;
        // The stuck leader still holds its flight: the next miss leads a
        // new one, which the stuck leader's end does not close.
        let Join::Leader(fresh) = join(&store, &key, 8, timeout) else {
            panic!("a new leader")
        };
        drop(stuck);
        assert!(matches!(join(&store, &key, 8, timeout), Join::Waiter(_)));
        drop(fresh);
    }

    #[tokio::test]
    async fn waiters_wake_when_the_leader_drops() {
        let store = CacheStore::new();
        let key: Arc<str> = "k".into();
        let Join::Leader(leader) = join(&store, &key, 2, LONG) else {
            panic!("first is leader")
        };
        let Join::Waiter(w1) = join(&store, &key, 2, LONG) else {
            panic!("second waits")
        };
        let Join::Waiter(w2) = join(&store, &key, 2, LONG) else {
            panic!("third waits")
        };
        assert!(matches!(join(&store, &key, 2, LONG), Join::Busy));
        let t1 = tokio::spawn(w1.wait(Duration::from_secs(30)));
        drop(leader);
        assert!(t1.await.unwrap());
        assert!(w2.wait(Duration::from_secs(30)).await);
        // The key is free again.
        assert!(matches!(join(&store, &key, 2, LONG), Join::Leader(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_time_out() {
        let store = CacheStore::new();
        let key: Arc<str> = "k".into();
        let _leader = join(&store, &key, 8, LONG);
        let Join::Waiter(w) = join(&store, &key, 8, LONG) else {
            panic!("waits")
        };
        assert!(!w.wait(Duration::from_secs(5)).await);
    }
}
