//! A cheap timer for timeouts that seldom fire.
//!
//! A gateway arms two timeouts per request: the wait for the next request
//! head on a keep-alive connection (hyper's header-read timeout), and the
//! wait for the upstream's answer. Both are armed and disarmed on every
//! request, and seldom fire (an idle connection's header-read timeout
//! does, once, when it closes the connection). tokio's timer wheel is
//! built for timers that fire, and arming one there (a registration with
//! the time driver, under its lock) and disarming it (the same again) cost
//! 600 to 800 instructions per timer, a few percent of a proxied request.
//!
//! This timer keeps armed deadlines in a few slabs behind their own locks
//! (sharded by thread), and one background thread, `towergate-timer`,
//! sleeps until the earliest deadline it knows of, wakes the tasks whose
//! deadline has passed, and sleeps again. Arming is a lock, a slab insert
//! and a waker clone; disarming is a lock and a remove. A deadline earlier
//! than the one the thread sleeps towards wakes it (a lock and a notify,
//! by the first such arm of a round only); the others (the common case:
//! timeouts of one kind all lie the same distance ahead) cost the thread
//! nothing.
//!
//! Each round of the thread looks at every armed deadline, so there is at
//! most one round per [`GRAIN`], whatever the number of deadlines that
//! fall due: those due meanwhile are served together.
//!
//! A [`Sleep`] never completes before its deadline; it completes at most
//! a grain and a thread wake-up after it.
//! It needs no runtime: it works under any executor. It reads the real
//! clock, so it does not follow tokio's paused test clock
//! (`tokio::time::pause`): timeouts that tests drive with paused time (the
//! balancer's, the caches') stay on tokio's timer.
//!
//! ```
//! use std::time::{Duration, Instant};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let start = Instant::now();
//! towergate_core::timer::sleep(Duration::from_millis(20)).await;
//! assert!(start.elapsed() >= Duration::from_millis(20));
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use slab::Slab;

/// A future that completes once its deadline has passed; see the
/// [module docs](self).
#[must_use = "a sleep does nothing unless polled"]
pub struct Sleep {
    deadline: Instant,
    /// Where it is armed, once polled before its deadline.
    armed: Option<Armed>,
}

#[derive(Clone, Copy)]
struct Armed {
    shard: usize,
    key: usize,
}

/// A future that completes after `duration`.
pub fn sleep(duration: Duration) -> Sleep {
    let now = Instant::now();
    sleep_until(now.checked_add(duration).unwrap_or_else(far_future))
}

/// A future that completes at `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        armed: None,
    }
}

/// The rounds in which the thread serves deadlines: a deadline is served
/// up to this much after it has passed.
pub const GRAIN: Duration = Duration::from_millis(5);

/// Shards of the armed deadlines: threads arm in their own shard, so
/// worker threads seldom meet on a lock.
const SHARDS: usize = 8;

/// The longest the timer thread sleeps without looking: a safety net only,
/// every earlier deadline wakes it.
const MAX_PARK: Duration = Duration::from_secs(30);

/// `next_wake` when the thread is scanning or has nothing to wait for:
/// every new deadline is earlier, so every arm wakes it.
const SCANNING: u64 = u64::MAX;

struct Timer {
    shards: [Mutex<Slab<Entry>>; SHARDS],
    /// When the thread will look next at the latest (in nanoseconds since
    /// `base`): an arm with an earlier deadline wakes it.
    next_wake: AtomicU64,
    base: Instant,
    /// Set (under its lock) when a deadline earlier than `next_wake` came.
    dirty: Mutex<bool>,
    /// Set by the first arm of a round that must wake the thread: the
    /// others see it and leave the lock and the notify (a `futex` call)
    /// alone. Cleared by the thread when a round starts.
    pending: AtomicBool,
    wake: Condvar,
    started: AtomicBool,
}

struct Entry {
    deadline: Instant,
    /// Taken when the deadline has passed and the task was woken.
    waker: Option<Waker>,
}

// === impl Sleep ===

impl Sleep {
    /// When it completes.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the deadline has passed.
    pub fn is_elapsed(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Moves the deadline; the sleep is armed again at its next poll.
    pub fn reset(&mut self, deadline: Instant) {
        self.disarm();
        self.deadline = deadline;
    }

    fn disarm(&mut self) {
        if let Some(a) = self.armed.take() {
            // The key is ours until we remove it. The waker is dropped
            // after the lock: dropping one may run arbitrary code.
            let removed = lock(&timer().shards[a.shard]).try_remove(a.key);
            drop(removed);
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            self.disarm();
            return Poll::Ready(());
        }
        let t = timer();
        match self.armed {
            Some(a) => {
                // Polled again before the deadline: keep the latest waker.
                let mut shard = lock(&t.shards[a.shard]);
                let (fired, old) = match shard.get_mut(a.key) {
                    Some(e) => match &e.waker {
                        // The thread fired it between the clock read above
                        // and this lock: the deadline has passed.
                        None => (true, None),
                        Some(w) if w.will_wake(cx.waker()) => (false, None),
                        Some(_) => (false, e.waker.replace(cx.waker().clone())),
                    },
                    None => (true, None),
                };
                drop(shard);
                drop(old);
                if fired {
                    cx.waker().wake_by_ref();
                }
            }
            None => {
                let shard = shard_of_this_thread();
                let key = lock(&t.shards[shard]).insert(Entry {
                    deadline: self.deadline,
                    waker: Some(cx.waker().clone()),
                });
                self.armed = Some(Armed { shard, key });
                t.armed_until(self.deadline);
            }
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.disarm();
    }
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .field("armed", &self.armed.is_some())
            .finish()
    }
}

// === impl Timer ===

fn timer() -> &'static Timer {
    static TIMER: OnceLock<Timer> = OnceLock::new();
    TIMER.get_or_init(|| Timer {
        shards: std::array::from_fn(|_| Mutex::new(Slab::new())),
        next_wake: AtomicU64::new(SCANNING),
        base: Instant::now(),
        dirty: Mutex::new(false),
        pending: AtomicBool::new(false),
        wake: Condvar::new(),
        started: AtomicBool::new(false),
    })
}

impl Timer {
    /// A deadline was just armed: wake the thread if it sleeps past it.
    fn armed_until(&'static self, deadline: Instant) {
        if self.nanos(deadline) >= self.next_wake.load(Ordering::SeqCst) {
            return;
        }
        // Another arm of this round has woken the thread already: the
        // round it wakes for starts after that arm, so it finds this one.
        if self.pending.swap(true, Ordering::SeqCst) && self.started.load(Ordering::Relaxed) {
            return;
        }
        let mut dirty = lock(&self.dirty);
        *dirty = true;
        self.wake.notify_one();
        if !self.started.load(Ordering::Relaxed) {
            // Started by the first arm, under the lock so only once; a
            // failed start is tried again at the next arm.
            let started = std::thread::Builder::new()
                .name("towergate-timer".into())
                .spawn(move || self.run())
                .is_ok();
            self.started.store(started, Ordering::Relaxed);
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX - 1)
    }

    fn run(&'static self) {
        let mut due = Vec::new();
        let mut last_scan: Option<Instant> = None;
        loop {
            // One round per grain at most: what falls due meanwhile waits
            // for the round, and is served with the others.
            if let Some(since) = last_scan.map(|at| at.elapsed())
                && since < GRAIN
            {
                std::thread::sleep(GRAIN - since);
            }
            // Arms from now on see SCANNING and mark the timer dirty: this
            // scan may miss them, the next one will not.
            self.pending.store(false, Ordering::SeqCst);
            self.next_wake.store(SCANNING, Ordering::SeqCst);
            let now = Instant::now();
            last_scan = Some(now);
            let mut earliest: Option<Instant> = None;
            for shard in &self.shards {
                let mut shard = lock(shard);
                for (_, e) in shard.iter_mut() {
                    if e.waker.is_none() {
                        continue;
                    }
                    if e.deadline <= now {
                        due.extend(e.waker.take());
                    } else if earliest.is_none_or(|at| e.deadline < at) {
                        earliest = Some(e.deadline);
                    }
                }
            }
            // Woken outside the locks: a wake may run the task right here.
            // A waker that panics must not end this thread (every timeout
            // would stop) nor cost the others their wake-up.
            for w in due.drain(..) {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.wake()));
            }
            let mut dirty = lock(&self.dirty);
            if !*dirty {
                let park = earliest.map_or(MAX_PARK, |at| {
                    at.saturating_duration_since(Instant::now()).min(MAX_PARK)
                });
                if let Some(at) = earliest {
                    self.next_wake.store(self.nanos(at), Ordering::SeqCst);
                }
                dirty = match self.wake.wait_timeout_while(dirty, park, |d| !*d) {
                    Ok((d, _)) => d,
                    Err(p) => p.into_inner().0,
                };
            }
            *dirty = false;
        }
    }
}

/// The shard this thread arms in, dealt round-robin at its first arm.
fn shard_of_this_thread() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

/// A deadline no timeout reaches, for durations that overflow `Instant`.
fn far_future() -> Instant {
    let now = Instant::now();
    now.checked_add(Duration::from_secs(86_400 * 365 * 30))
        .unwrap_or(now)
}

/// The data behind these locks stays consistent across a panic (a slab
/// insert or remove, a flag): a poisoned lock is used as it is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How many sleeps are armed with this very deadline (tests).
#[cfg(test)]
fn armed_at(deadline: Instant) -> usize {
    timer()
        .shards
        .iter()
        .map(|s| {
            lock(s)
                .iter()
                .filter(|(_, e)| e.deadline == deadline)
                .count()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::task::Wake;

    use super::*;

    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn poll_once(s: &mut Sleep, flag: &Arc<Flag>) -> Poll<()> {
        let waker = Waker::from(flag.clone());
        Pin::new(s).poll(&mut Context::from_waker(&waker))
    }

    #[tokio::test]
    async fn never_before_the_deadline() {
        for ms in [0u64, 1, 5, 20, 50] {
            let start = Instant::now();
            sleep(Duration::from_millis(ms)).await;
            assert!(start.elapsed() >= Duration::from_millis(ms), "{ms} ms");
        }
    }

    #[tokio::test]
    async fn many_at_once_all_complete() {
        let start = Instant::now();
        let tasks: Vec<_> = (0..200u64)
            .map(|i| tokio::spawn(sleep(Duration::from_millis(i % 40))))
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert!(start.elapsed() >= Duration::from_millis(39));
    }

    #[test]
    fn dropped_sleeps_are_disarmed() {
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        // A deadline of our own: other tests arm sleeps at the same time.
        let at = Instant::now() + Duration::from_secs(3600) + Duration::from_nanos(7_777);
        let mut sleeps: Vec<Sleep> = (0..100).map(|_| sleep_until(at)).collect();
        assert_eq!(armed_at(at), 0);
        for s in &mut sleeps {
            assert!(poll_once(s, &flag).is_pending());
        }
        assert_eq!(armed_at(at), 100);
        // A second poll keeps the entry (and the waker) it has.
        assert!(poll_once(&mut sleeps[0], &flag).is_pending());
        assert_eq!(armed_at(at), 100);
        drop(sleeps);
        assert_eq!(armed_at(at), 0);
        assert!(!flag.0.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn an_earlier_deadline_wakes_the_thread() {
        // The thread sleeps towards the first deadline, an hour away; the
        // second, 30 ms away, must wake it (the safety net is 30 s away).
        let mut far = sleep(Duration::from_secs(3600));
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        assert!(poll_once(&mut far, &flag).is_pending());
        let start = Instant::now();
        let near = tokio::time::timeout(Duration::from_secs(20), sleep(Duration::from_millis(30)));
        assert!(
            near.await.is_ok(),
            "the near deadline did not wake the timer"
        );
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    #[tokio::test]
    async fn reset_moves_the_deadline() {
        let start = Instant::now();
        let mut s = sleep(Duration::from_secs(3600));
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        assert!(poll_once(&mut s, &flag).is_pending());
        s.reset(Instant::now() + Duration::from_millis(20));
        assert!(!s.is_elapsed());
        s.await;
        assert!(start.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn a_passed_deadline_is_ready_at_once_and_arms_nothing() {
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let mut s = sleep_until(Instant::now() - Duration::from_millis(1));
        assert!(s.is_elapsed());
        assert!(poll_once(&mut s, &flag).is_ready());
        assert!(s.armed.is_none());
    }

    #[tokio::test]
    async fn a_panicking_waker_does_not_stop_the_timer() {
        struct Bomb;
        impl Wake for Bomb {
            fn wake(self: Arc<Self>) {
                panic!("a waker that panics (expected in this test)");
            }
        }
        let mut s = sleep(Duration::from_millis(5));
        let waker = Waker::from(Arc::new(Bomb));
        assert!(
            Pin::new(&mut s)
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        // The thread survives the bomb and serves the next deadline.
        let next = tokio::time::timeout(Duration::from_secs(20), sleep(Duration::from_millis(40)));
        assert!(next.await.is_ok(), "the timer thread stopped");
        drop(s);
    }

    #[tokio::test]
    async fn arms_in_a_burst_all_complete() {
        // Many arms while the thread has nothing armed (each could wake
        // it): one wakes it, the round it runs finds them all.
        let start = Instant::now();
        let tasks: Vec<_> = (0..500u64)
            .map(|i| tokio::spawn(sleep(Duration::from_millis(1 + i % 7))))
            .collect();
        let all = async {
            for t in tasks {
                t.await.unwrap();
            }
        };
        assert!(
            tokio::time::timeout(Duration::from_secs(20), all)
                .await
                .is_ok()
        );
        assert!(start.elapsed() >= Duration::from_millis(1));
    }

    #[test]
    fn huge_durations_do_not_overflow() {
        let s = sleep(Duration::MAX);
        assert!(s.deadline() > Instant::now() + Duration::from_secs(86_400));
    }
}
