//! Where the in-memory store reads the time, so tests can move it by hand.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A monotonic clock in microseconds, as the in-memory store reads it.
///
/// Only differences matter: the origin is arbitrary (the store's creation
/// for [`SystemClock`]). It must never go backwards; GCRA tolerates a clock
/// that stands still.
pub trait Clock: fmt::Debug + Send + Sync + 'static {
    /// Microseconds since this clock's origin.
    fn now_micros(&self) -> u64;
}

/// The real monotonic clock (`Instant`), counted from its creation.
#[derive(Clone, Copy, Debug)]
pub struct SystemClock {
    origin: Instant,
}

/// A clock that moves only when told to, shared by its clones.
///
/// ```
/// use std::time::Duration;
/// use towergate_ratelimit::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// let same = clock.clone();
/// clock.advance(Duration::from_millis(3));
/// assert_eq!(same.now_micros(), 3_000);
/// ```
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    micros: Arc<AtomicU64>,
}

// === impl SystemClock ===

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now_micros(&self) -> u64 {
        duration_micros(self.origin.elapsed())
    }
}

// === impl ManualClock ===

impl ManualClock {
    /// A clock at 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.micros.fetch_add(duration_micros(by), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_micros(&self) -> u64 {
        self.micros.load(Ordering::SeqCst)
    }
}

/// Whole microseconds in `d`, saturating (584,000 years is enough).
pub(crate) fn duration_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
