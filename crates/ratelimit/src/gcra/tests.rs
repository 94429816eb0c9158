use proptest::prelude::*;

use super::*;

/// Runs a single limit over arrival times, committing like a store does,
/// and returns the times of the admitted requests.
fn admitted_times(gcra: Gcra, arrivals: &[u64]) -> Vec<u64> {
    let mut tat = None;
    let mut admitted = Vec::new();
    for &now in arrivals {
        let o = gcra.check(tat, now);
        if o.allowed {
            tat = Some(o.tat);
            admitted.push(now);
        }
    }
    admitted
}

#[test]
fn fresh_key_has_full_burst() {
    let g = Gcra::new(100, 5).unwrap();
    let o = g.check(None, 1_000);
    assert!(o.allowed);
    assert_eq!(o.remaining, 4);
    assert_eq!(o.reset_after, 100);
    assert_eq!(o.retry_after, 0);
    assert_eq!(o.tat, 1_100);
}

#[test]
fn burst_at_once_then_one_per_interval() {
    let g = Gcra::new(100, 5).unwrap();
    let mut tat = None;
    // Exactly `burst` at the same instant, counting down.
    for k in 0..5 {
        let o = g.check(tat, 0);
        assert!(o.allowed, "request {k}");
        assert_eq!(o.remaining, 4 - k);
        assert_eq!(o.reset_after, (k + 1) * 100);
        tat = Some(o.tat);
    }
    let refused = g.check(tat, 0);
    assert!(!refused.allowed);
    assert_eq!(refused.remaining, 0);
    assert_eq!(refused.retry_after, 100);
    assert_eq!(refused.reset_after, 500);
    assert_eq!(refused.tat, 500, "a refusal leaves the TAT alone");

    // One tick early is still refused, with one tick to wait.
    let early = g.check(tat, 99);
    assert!(!early.allowed);
    assert_eq!(early.retry_after, 1);

    // Then exactly one per interval, never two.
    for step in 1..=20u64 {
        let now = step * 100;
        let o = g.check(tat, now);
        assert!(o.allowed, "steady request at {now}");
        assert_eq!(o.remaining, 0);
        tat = Some(o.tat);
        assert!(!g.check(tat, now).allowed, "second request at {now}");
    }
}

#[test]
fn an_idle_key_is_a_fresh_key() {
    let g = Gcra::new(100, 3).unwrap();
    let a = g.check(Some(50), 10_000);
    let b = g.check(None, 10_000);
    assert_eq!(a, b, "a TAT in the past must decide like no TAT");
}

#[test]
fn partial_refill() {
    let g = Gcra::new(100, 5).unwrap();
    // Empty bucket at t=0 (TAT 500); 250 ticks later 2 have come back.
    let o = g.check(Some(500), 250);
    assert!(o.allowed);
    assert_eq!(o.remaining, 1);
    assert_eq!(o.reset_after, 350);
}

#[test]
fn refusal_consumes_nothing_from_other_limits() {
    let loose = Gcra::new(10, 100).unwrap();
    let tight = Gcra::new(1_000, 1).unwrap();
    let v = decide([(loose, Some(500)), (tight, Some(1_000))], 0);
    assert!(!v.allowed);
    assert!(v.outcomes[0].allowed, "the loose limit alone would admit");
    assert_eq!(v.outcomes[0].tat, 500, "but its TAT must not move");
    assert_eq!(v.outcomes[0].remaining, 50);
    assert_eq!(v.outcomes[0].retry_after, 0);
    assert!(!v.outcomes[1].allowed);
    assert_eq!(v.outcomes[1].retry_after, 1_000);
    assert_eq!(v.retry_after(), 1_000);
    assert_eq!(v.tightest(), Some(1));
}

#[test]
fn allowed_verdict_consumes_from_all() {
    let a = Gcra::new(10, 100).unwrap();
    let b = Gcra::new(1_000, 3).unwrap();
    let v = decide([(a, None), (b, None)], 7);
    assert!(v.allowed);
    assert_eq!(v.outcomes[0].tat, 17);
    assert_eq!(v.outcomes[0].remaining, 99);
    assert_eq!(v.outcomes[1].tat, 1_007);
    assert_eq!(v.outcomes[1].remaining, 2);
    assert_eq!(v.tightest(), Some(1), "fewest remaining");
    assert_eq!(v.retry_after(), 0);
}

#[test]
fn tightest_breaks_ties_on_longer_reset() {
    let short = Gcra::new(10, 2).unwrap();
    let long = Gcra::new(1_000, 2).unwrap();
    let v = decide([(short, None), (long, None)], 0);
    assert_eq!(v.outcomes[0].remaining, v.outcomes[1].remaining);
    assert_eq!(v.tightest(), Some(1));
}

#[test]
fn refusal_reports_the_longest_wait() {
    let a = Gcra::new(10, 1).unwrap();
    let b = Gcra::new(100, 1).unwrap();
    let v = decide([(a, Some(10)), (b, Some(100))], 0);
    assert!(!v.allowed);
    assert_eq!(v.tightest(), Some(1));
    assert_eq!(v.retry_after(), 100);
}

#[test]
fn rejects_bad_parameters() {
    assert!(Gcra::new(0, 1).is_none());
    assert!(Gcra::new(1, 0).is_none());
    assert!(Gcra::new(MAX_WINDOW, 2).is_none());
    assert!(Gcra::new(u64::MAX, u64::MAX).is_none());
    assert_eq!(
        Gcra::new(MAX_WINDOW, 1).map(|g| g.window()),
        Some(MAX_WINDOW)
    );
}

#[test]
fn no_overflow_near_the_end_of_time() {
    let g = Gcra::new(MAX_WINDOW, 1).unwrap();
    // Saturating arithmetic: no panic even at the very end of u64 time
    // (584,000 years of microseconds), where answers may be lenient.
    let _ = g.check(Some(u64::MAX), u64::MAX - 10);
    let _ = g.check(None, u64::MAX);
    let _ = decide([(g, Some(u64::MAX))], 0);
    // Far from the edge, the numbers are exact.
    let now = u64::MAX / 2;
    let o = g.check(None, now);
    assert!(o.allowed);
    let again = g.check(Some(o.tat), now);
    assert!(!again.allowed);
    assert_eq!(again.retry_after, MAX_WINDOW);
}

#[test]
fn empty_decision_is_allowed() {
    let v = decide([], 0);
    assert!(v.allowed);
    assert_eq!(v.tightest(), None);
}

proptest! {
    /// Over any window [a, b] between two admitted requests, a limit admits
    /// at most `(b - a) / interval + burst` requests: rate × elapsed + burst.
    #[test]
    fn never_more_than_rate_times_elapsed_plus_burst(
        interval in 1u64..500,
        burst in 1u64..20,
        gaps in proptest::collection::vec(0u64..300, 1..300),
    ) {
        let g = Gcra::new(interval, burst).unwrap();
        let arrivals: Vec<u64> = gaps
            .iter()
            .scan(0u64, |t, gap| {
                *t += gap;
                Some(*t)
            })
            .collect();
        let admitted = admitted_times(g, &arrivals);
        for i in 0..admitted.len() {
            for j in i..admitted.len() {
                let count = (j - i + 1) as u64;
                let bound = (admitted[j] - admitted[i]) / interval + burst;
                prop_assert!(
                    count <= bound,
                    "{count} admitted in [{}, {}] > {bound}",
                    admitted[i],
                    admitted[j]
                );
            }
        }
    }

    /// Under a stream far faster than the rate, the limit admits exactly the
    /// burst at once and then exactly one per interval: it is also never
    /// stricter than it says.
    #[test]
    fn saturating_stream_gets_exactly_the_rate(
        interval in 1u64..200,
        burst in 1u64..20,
        periods in 1u64..50,
    ) {
        let g = Gcra::new(interval, burst).unwrap();
        // Three bursts' worth at 0, then one request every tick up to
        // periods × interval inclusive.
        let end = periods * interval;
        let arrivals: Vec<u64> = std::iter::repeat_n(0, 3 * burst as usize)
            .chain(1..=end)
            .collect();
        let admitted = admitted_times(g, &arrivals);
        prop_assert_eq!(admitted.len() as u64, burst + periods);
        prop_assert!(admitted[..burst as usize].iter().all(|&t| t == 0));
        for (k, t) in admitted.iter().enumerate().skip(burst as usize) {
            // Request burst + n is admitted exactly at n × interval.
            prop_assert_eq!(*t, (k as u64 + 1 - burst) * interval);
        }
    }

    /// The reported numbers agree with what actually happens next.
    #[test]
    fn reports_are_truthful(
        interval in 1u64..1_000,
        burst in 1u64..20,
        tat in proptest::option::of(0u64..50_000),
        now in 0u64..50_000,
    ) {
        let g = Gcra::new(interval, burst).unwrap();
        let o = g.check(tat, now);
        if o.allowed {
            // `remaining` more are admitted at the same instant, then none.
            let mut t = Some(o.tat);
            for _ in 0..o.remaining {
                let next = g.check(t, now);
                prop_assert!(next.allowed);
                t = Some(next.tat);
            }
            prop_assert!(!g.check(t, now).allowed);
            // After `reset_after` the bucket is full again.
            let full = g.check(Some(o.tat), now + o.reset_after);
            prop_assert_eq!(full.remaining, burst - 1);
        } else {
            // What a store holds after the refusal: the state as read
            // (capped to a window ahead, see `check`).
            let held = Some(o.tat);
            prop_assert_eq!(o.remaining, 0);
            prop_assert!(o.retry_after > 0);
            prop_assert!(o.retry_after <= interval);
            prop_assert!(!g.check(held, now + o.retry_after - 1).allowed);
            prop_assert!(g.check(held, now + o.retry_after).allowed);
        }
    }

    /// With several limits, a refused request leaves every TAT where it was
    /// (read at most a window ahead),
    /// and an admitted one moves each by exactly one interval.
    #[test]
    fn all_or_nothing(
        params in proptest::collection::vec((1u64..100, 1u64..5, proptest::option::of(0u64..1_000)), 1..4),
        now in 0u64..1_000,
    ) {
        let limits: Vec<(Gcra, Option<u64>)> = params
            .iter()
            .map(|&(i, b, t)| (Gcra::new(i, b).unwrap(), t))
            .collect();
        let v = decide(limits.iter().copied(), now);
        prop_assert_eq!(v.allowed, limits.iter().all(|(g, t)| g.check(*t, now).allowed));
        for ((g, t), o) in limits.iter().zip(&v.outcomes) {
            // A state more than a window ahead is read as one window ahead.
            let before = t.unwrap_or(now).max(now).min(now + g.window());
            if v.allowed {
                prop_assert_eq!(o.tat, before + g.interval());
            } else {
                prop_assert_eq!(o.tat, before);
            }
        }
    }
}

#[test]
fn a_state_beyond_the_window_reads_as_an_empty_bucket() {
    // Left by 1000/h under the same name (a reload to 10/min), or by a
    // clock that stepped back: refused for one interval, not for an hour.
    let hourly = Gcra::new(3_600, 1_000).unwrap();
    let mut tat = None;
    for _ in 0..1_000 {
        tat = Some(hourly.check(tat, 0).tat);
    }
    assert_eq!(tat, Some(3_600_000));
    let per_minute = Gcra::new(6_000, 10).unwrap();
    let o = per_minute.check(tat, 0);
    assert!(!o.allowed);
    assert_eq!(o.retry_after, 6_000);
    assert_eq!(o.reset_after, 60_000);
    assert_eq!(o.remaining, 0);
    // The capped state is what a store writes back on this refusal; one
    // interval later the new limit admits.
    assert_eq!(o.tat, 60_000);
    let o = per_minute.check(Some(o.tat), 6_000);
    assert!(o.allowed);
    assert_eq!(o.tat, 66_000);
}
