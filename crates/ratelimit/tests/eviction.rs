//! The in-memory store stays within its bound under a flood of distinct
//! keys, and forgetting idle keys never changes a decision.

// Helpers outside #[test] fns are test code too.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use towergate_ratelimit::gcra::Gcra;
use towergate_ratelimit::store::{Batch, Bucket};
use towergate_ratelimit::{Limit, ManualClock, MemoryStore};

const BOUND: usize = 10_000;
const FLOOD: usize = 200_000;

fn batch(i: usize, gcra: Gcra) -> Batch {
    Batch::new("", vec![Bucket::new(format!("client-{i}"), gcra)])
}

#[test]
fn flood_of_live_keys_stays_within_the_bound() {
    let store = MemoryStore::builder().max_keys(BOUND).build().unwrap();
    // Every key stays live (TAT an hour ahead) for the whole test.
    let gcra = Limit::per_hour(1).gcra().unwrap();
    for i in 0..FLOOD {
        assert!(store.decide(&batch(i, gcra)).allowed, "fresh key {i}");
        if i % 10_000 == 0 {
            assert!(store.len() <= BOUND, "{} keys after {i}", store.len());
        }
    }
    assert!(store.len() <= BOUND);
    assert!(
        store.len() >= BOUND / 2,
        "the store is still used: {}",
        store.len()
    );
    assert!(store.evictions() > 0, "live keys had to go");
    // Recent keys are still remembered: the last one is refused again.
    assert!(!store.decide(&batch(FLOOD - 1, gcra)).allowed);
}

#[test]
fn idle_keys_are_forgotten_without_changing_decisions() {
    let clock = ManualClock::new();
    let store = MemoryStore::builder()
        .max_keys(BOUND)
        .clock(clock.clone())
        .build()
        .unwrap();
    // 1 per ms, burst 1: each key is idle again 1 ms after its request.
    let gcra = Gcra::new(1_000, 1).unwrap();
    for i in 0..FLOOD {
        if i % 1_000 == 0 {
            clock.advance(Duration::from_millis(2));
        }
        assert!(store.decide(&batch(i, gcra)).allowed);
        assert!(store.len() <= BOUND);
    }
    assert_eq!(store.evictions(), 0, "only expired keys were forgotten");
    // A forgotten key and a never-seen key decide alike.
    clock.advance(Duration::from_millis(2));
    let forgotten = store.decide(&batch(0, gcra));
    let fresh = store.decide(&batch(FLOOD + 1, gcra));
    assert_eq!(forgotten, fresh);
}
