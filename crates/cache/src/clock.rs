//! Where the cache reads the time, so tests can travel in it.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

/// The wall clock the cache computes ages and freshness with.
///
/// HTTP dates (`Date`, `Expires`, `Last-Modified`) are wall-clock times, so
/// unlike a rate limiter the cache needs a [`SystemTime`]. Tests inject a
/// [`ManualClock`] to make entries stale without sleeping.
pub trait Clock: fmt::Debug + Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The real clock ([`SystemTime::now`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

/// A clock that moves only when told to, shared by its clones.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use towergate_cache::{Clock, ManualClock};
///
/// let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
/// let clock = ManualClock::new(start);
/// let same = clock.clone();
/// clock.advance(Duration::from_secs(3));
/// assert_eq!(same.now(), start + Duration::from_secs(3));
/// ```
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<Mutex<SystemTime>>,
}

// === impl SystemClock ===

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

// === impl ManualClock ===

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: SystemTime) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// A clock standing at the current time, whole seconds (HTTP dates
    /// have a one-second resolution, so ages come out exact).
    pub fn starting_now() -> Self {
        let now = SystemTime::now();
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Self::new(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock();
        *now += by;
    }

    /// Sets the clock to `to` (which may be in the past).
    pub fn set(&self, to: SystemTime) {
        *self.now.lock() = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock()
    }
}
