//! GCRA, the generic cell rate algorithm: the pure arithmetic of every
//! limit in this crate, with no I/O, no locks and no tower. Time is passed
//! in as a `now` argument, in ticks (the crate uses microseconds), so the
//! same code is driven by a monotonic clock in memory, by a manual clock in
//! tests, and mirrored line for line by the Redis script, which reads the
//! time from Redis.
//!
//! # The algorithm
//!
//! A limit of `burst` requests with one request earned back every
//! `interval` ticks keeps one number per key: the *theoretical arrival
//! time* (TAT), the instant at which the bucket would be full again. With
//! `window = burst × interval`, a request arriving at `now` is admitted iff
//!
//! ```text
//! tat' = max(tat, now) + interval        (the TAT if this request is taken)
//! tat' - window <= now
//! ```
//!
//! and, if admitted, `tat'` is stored. That is all the state there is: one
//! integer per key, no timestamps of past requests, no refill task. A key
//! whose TAT is in the past behaves exactly like a key never seen, which is
//! why stores may forget such keys at any time (idle eviction, Redis key
//! expiry) without ever changing a decision.
//!
//! From the same numbers:
//!
//! - `remaining = (now + window - tat') / interval`: requests that would be
//!   admitted right now, back to back;
//! - `reset_after = tat' - now`: time until the bucket is full again;
//! - `retry_after = tat' - window - now` for a refused request: time until
//!   this request would be admitted.
//!
//! # Several limits, one decision
//!
//! [`decide`] checks every limit of a request against its own TAT and
//! commits (returns new TATs to store) only if all of them admit it: a
//! request refused by one limit consumes nothing from the others, so a
//! client hammering a per-second limit does not also burn its daily quota.
//!
//! # Why not `governor`
//!
//! `governor` implements the same algorithm, but its keyed limiter commits
//! on every check (no "check all limits, then commit"), keeps keys in a map
//! that grows until someone calls `retain_recent` (no bound on the number of
//! keys), reads its own clock (the Redis store must use the Redis server's
//! time), and cannot be mirrored in a Lua script. The arithmetic is twenty
//! lines, so this module owns it and the memory and Redis stores share it.
//!
//! # Exactness
//!
//! The interval is a whole number of ticks, rounded *up* by
//! [`Limit`](crate::Limit) when the period does not divide evenly: a limit
//! is never exceeded, and at most one tick per request slower than asked.
//! All arithmetic saturates instead of overflowing.

/// The largest window (`burst × interval`, in ticks) a [`Gcra`] accepts:
/// 2^50 µs, about 35 years. Keeping every TAT below 2^53 lets the Redis
/// script (Lua numbers are doubles) compute exactly.
pub const MAX_WINDOW: u64 = 1 << 50;

/// One limit's parameters: `burst` requests at once, one more every
/// `interval` ticks.
///
/// ```
/// use towergate_ratelimit::gcra::Gcra;
///
/// // 2 at once, then one every 10 ticks.
/// let g = Gcra::new(10, 2).unwrap();
/// let a = g.check(None, 100);
/// assert!(a.allowed);
/// assert_eq!(a.remaining, 1);
/// let b = g.check(Some(a.tat), 100);
/// assert!(b.allowed);
/// assert_eq!(b.remaining, 0);
/// let c = g.check(Some(b.tat), 100);
/// assert!(!c.allowed);
/// assert_eq!(c.retry_after, 10);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Gcra {
    interval: u64,
    burst: u64,
}

/// What one limit says about one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Whether this limit alone admits the request.
    pub allowed: bool,
    /// Requests this limit would admit right now, after this decision.
    pub remaining: u64,
    /// Ticks until this limit's bucket is full again.
    pub reset_after: u64,
    /// Ticks until this limit would admit the request; 0 when it admits it.
    pub retry_after: u64,
    /// The TAT to store if the decision commits.
    pub tat: u64,
}

/// What all the limits of a request say together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Whether every limit admits the request: only then are new TATs stored.
    pub allowed: bool,
    /// One outcome per limit, in the order the limits were given.
    pub outcomes: Vec<Outcome>,
}

/// Decides one request against several limits: each item is a limit and its
/// stored TAT (`None` for a key never seen or forgotten).
///
/// If every limit admits the request, the verdict is allowed and each
/// outcome carries the TAT to store and the `remaining`/`reset_after` after
/// consuming. Otherwise nothing may be stored: outcomes report what each
/// limit has left without this request, and the refusing ones say when to
/// retry.
///
/// ```
/// use towergate_ratelimit::gcra::{Gcra, decide};
///
/// let per_second = Gcra::new(100, 10).unwrap();
/// let tight = Gcra::new(1_000, 1).unwrap();
/// // `tight` is exhausted: the request is refused and `per_second` keeps
/// // its 10 requests.
/// let v = decide([(per_second, None), (tight, Some(1_500))], 1_000);
/// assert!(!v.allowed);
/// assert_eq!(v.outcomes[0].remaining, 10);
/// assert_eq!(v.outcomes[1].retry_after, 500);
/// ```
pub fn decide(limits: impl IntoIterator<Item = (Gcra, Option<u64>)>, now: u64) -> Verdict {
    // First pass: where each limit stands. Second pass: report, consuming
    // only if every limit admits.
    let probes: Vec<Probe> = limits
        .into_iter()
        .map(|(gcra, tat)| gcra.probe(tat, now))
        .collect();
    let allowed = probes.iter().all(|p| p.allow_at <= now);
    let outcomes = probes
        .into_iter()
        .map(|p| p.outcome(allowed, now))
        .collect();
    Verdict { allowed, outcomes }
}

/// One limit's position before the decision.
struct Probe {
    gcra: Gcra,
    /// `max(tat, now)`: a TAT in the past is a full bucket.
    tat: u64,
    /// The TAT if this request is taken.
    next: u64,
    /// When this request would be admitted.
    allow_at: u64,
}

// === impl Gcra ===

impl Gcra {
    /// `burst` requests at once, one more every `interval` ticks; `None` if
    /// either is zero or the window exceeds [`MAX_WINDOW`].
    pub const fn new(interval: u64, burst: u64) -> Option<Self> {
        if interval == 0 || burst == 0 {
            return None;
        }
        match interval.checked_mul(burst) {
            Some(window) if window <= MAX_WINDOW => Some(Self { interval, burst }),
            _ => None,
        }
    }

    /// Ticks between two requests in a steady stream (the emission interval).
    pub const fn interval(&self) -> u64 {
        self.interval
    }

    /// Requests admitted at once from a full bucket.
    pub const fn burst(&self) -> u64 {
        self.burst
    }

    /// `burst × interval`: how long an empty bucket takes to fill up.
    pub const fn window(&self) -> u64 {
        // Cannot overflow: checked in `new`.
        self.interval * self.burst
    }

    /// Decides one request against this limit alone; same as [`decide`]
    /// with one limit, without the allocation.
    pub fn check(&self, tat: Option<u64>, now: u64) -> Outcome {
        let p = self.probe(tat, now);
        let allowed = p.allow_at <= now;
        p.outcome(allowed, now)
    }

    fn probe(&self, tat: Option<u64>, now: u64) -> Probe {
        // A state this limit could have left is never more than a window
        // ahead; one that is was left by another limit under the same name
        // (a reload that lowered the rate or the burst) or by a clock that
        // stepped back (Redis's, between instances): read as an empty
        // bucket, it refuses for one interval, not for the old window. The
        // stores write such a capped state back even on a refusal (the
        // outcome's `tat` is below the stored one), so that the interval
        // runs from now.
        let tat = tat
            .unwrap_or(now)
            .max(now)
            .min(now.saturating_add(self.window()));
        let next = tat.saturating_add(self.interval);
        Probe {
            gcra: *self,
            tat,
            next,
            allow_at: next.saturating_sub(self.window()),
        }
    }
}

// === impl Probe ===

impl Probe {
    /// The outcome once the verdict is known: `commit` says whether every
    /// limit admitted the request, so this one consumes.
    fn outcome(&self, commit: bool, now: u64) -> Outcome {
        let Gcra { interval, .. } = self.gcra;
        let window = self.gcra.window();
        let tat = if commit { self.next } else { self.tat };
        Outcome {
            allowed: self.allow_at <= now,
            remaining: now.saturating_add(window).saturating_sub(tat) / interval,
            reset_after: tat.saturating_sub(now),
            retry_after: self.allow_at.saturating_sub(now),
            tat,
        }
    }
}

// === impl Verdict ===

impl Verdict {
    /// The index of the outcome to report to the client: for a refusal, the
    /// refusing limit that asks to wait longest; otherwise the limit with the
    /// fewest requests left (the longer reset on a tie). `None` only when
    /// there are no limits.
    pub fn tightest(&self) -> Option<usize> {
        let indexed = self.outcomes.iter().enumerate();
        if self.allowed {
            indexed
                .min_by_key(|(_, o)| (o.remaining, std::cmp::Reverse(o.reset_after)))
                .map(|(i, _)| i)
        } else {
            indexed
                .filter(|(_, o)| !o.allowed)
                .max_by_key(|(_, o)| o.retry_after)
                .map(|(i, _)| i)
        }
    }

    /// Ticks until the request would be admitted by every limit that
    /// refused it (0 when allowed).
    pub fn retry_after(&self) -> u64 {
        self.outcomes
            .iter()
            .map(|o| o.retry_after)
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests;
