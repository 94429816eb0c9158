//! The pure parts of balancing: endpoint choice, latency estimates, retry
//! budgets, back-off, ejection and health state machines.
//!
//! Nothing here knows about Tower, HTTP or tokio: time is passed in as an
//! [`Instant`](std::time::Instant) and randomness through [`Random`], so each
//! algorithm can be unit-tested deterministically and reused outside this
//! crate. The [`Pool`](crate::Pool) composes them.

pub mod backoff;
pub mod budget;
pub mod ewma;
pub mod health;
pub mod histogram;
pub mod least;
pub mod outlier;
pub mod p2c;
pub mod ring;
pub mod round_robin;
pub mod weighted;

pub use backoff::Backoff;
pub use budget::BudgetWindow;
pub use ewma::PeakEwma;
pub use health::ActiveHealth;
pub use histogram::LatencyHistogram;
pub use outlier::Outlier;
pub use ring::Ring;
pub use round_robin::RoundRobin;
pub use weighted::SmoothWeighted;

/// A source of randomness, injected so that choices are reproducible in
/// tests.
pub trait Random {
    /// A uniformly distributed integer in `0..n`; `0` when `n` is `0`.
    fn below(&mut self, n: usize) -> usize;

    /// A uniformly distributed float in `[0, 1)`.
    fn unit(&mut self) -> f64;
}

/// The production source: `fastrand`'s thread-local generator, which needs
/// no lock and no system call per draw.
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadRandom;

// === impl ThreadRandom ===

impl Random for ThreadRandom {
    #[inline]
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { fastrand::usize(..n) }
    }

    #[inline]
    fn unit(&mut self) -> f64 {
        fastrand::f64()
    }
}

/// A seeded generator, for tests and simulations.
impl Random for fastrand::Rng {
    #[inline]
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { self.usize(..n) }
    }

    #[inline]
    fn unit(&mut self) -> f64 {
        self.f64()
    }
}
