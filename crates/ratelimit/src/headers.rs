//! The rate-limit response headers.
//!
//! Current draft syntax (draft-ietf-httpapi-ratelimit-headers-08 to -10),
//! Structured Field lists of a quoted policy name with parameters:
//!
//! ```text
//! RateLimit-Policy: "per-ip";q=20;w=2, "hourly";q=1000;w=3600
//! RateLimit: "per-ip";r=7;t=2
//! ```
//!
//! - `RateLimit-Policy` lists every limit of the layer: `w` is the window in
//!   seconds (how long an empty bucket takes to fill: burst × interval,
//!   rounded up) and `q` the quota, what a full bucket admits within `w`
//!   (the burst, plus what refills in the part of `w` past the window when
//!   it is not whole seconds). `Limit::per_minute(100)` is `q=100;w=60`;
//!   `10/s` with a burst of 1 is `q=10;w=1`.
//! - `RateLimit` reports the tightest limit only (fewest `r`emaining; on a
//!   refusal, the refusing limit that asks to wait longest): `t` is the
//!   seconds until that bucket is full again, rounded up.
//! - Legacy, when enabled: `X-RateLimit-Limit` (the burst, which
//!   `remaining` counts down from; `q` when the window is whole seconds),
//!   `X-RateLimit-Remaining` (= `r`) and `X-RateLimit-Reset` (= `t`, seconds
//!   from now) for the same tightest limit.
//!
//! With several rate-limit layers on one route, each appends its members to
//! the two list fields (a list may span header lines), and the legacy
//! headers keep the lowest remaining.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::gcra::{Gcra, Outcome};

/// `RateLimit-Policy`: every limit of the layer.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`: the tightest limit's state.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// Legacy `X-RateLimit-Limit`.
pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// Legacy `X-RateLimit-Remaining`.
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// Legacy `X-RateLimit-Reset` (seconds from now).
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// The headers of one decision, computed when it is made and applied to
/// the response when it comes back.
#[derive(Clone, Debug)]
pub(crate) struct Report {
    policy: HeaderValue,
    rate: HeaderValue,
    legacy: Option<Legacy>,
}

#[derive(Clone, Debug)]
struct Legacy {
    limit: u64,
    remaining: u64,
    reset: u64,
}

const MICROS: u64 = 1_000_000;

/// Whole seconds, rounded up: a client that waits that long is never early.
pub(crate) fn seconds_ceil(micros: u64) -> u64 {
    micros.div_ceil(MICROS)
}

/// One member of `RateLimit-Policy`, with its [`quota_window`]. Names are
/// checked tokens (no quote or backslash), so they need no escaping in an
/// sf-string.
pub(crate) fn policy_item(name: &str, (q, w): (u64, u64)) -> String {
    format!("\"{name}\";q={q};w={w}")
}

/// `q` and `w` of `count` requests per `period` µs with a burst of
/// `burst`: `w` is the window (`burst × period / count`) in whole seconds,
/// rounded up, and `q` what a full bucket admits within `w`: the burst,
/// plus what refills in the part of `w` past the window. So `q/w` is
/// never below the real rate: `10/s` with a burst of 1 is `q=10;w=1`, not
/// `q=1;w=1`. Computed from the limit as written, not from its GCRA
/// interval, which is rounded up to a whole microsecond: `3/s` is
/// `q=3;w=1`, not the `q=5;w=2` of a window 2 µs over a second.
pub(crate) fn quota_window(count: u64, period: u64, burst: u64) -> (u64, u64) {
    let (count, period, burst) = (u128::from(count), u128::from(period), u128::from(burst));
    if count == 0 || period == 0 {
        return (0, 0);
    }
    let micros = u128::from(MICROS);
    let w = (burst * period).div_ceil(count * micros);
    let q = burst + (w * micros * count).saturating_sub(burst * period) / period;
    let clamp = |v: u128| u64::try_from(v).unwrap_or(u64::MAX);
    (clamp(q), clamp(w))
}

/// The constant start of a limit's `RateLimit` member, `"name";r=`: made
/// once per limit, so that a report only formats its two numbers.
pub(crate) fn rate_prefix(name: &str) -> Box<[u8]> {
    format!("\"{name}\";r=").into_bytes().into_boxed_slice()
}

/// The longest `RateLimit` member: a 64-byte name (the most the layer
/// accepts) and two 20-digit numbers.
const RATE_MAX: usize = 1 + 64 + 4 + 20 + 3 + 20;

// === impl Report ===

impl Report {
    /// `rate_prefix` is the limit's [`rate_prefix`].
    pub(crate) fn new(
        policy: HeaderValue,
        rate_prefix: &[u8],
        gcra: Gcra,
        outcome: &Outcome,
        legacy: bool,
    ) -> Self {
        let reset = seconds_ceil(outcome.reset_after);
        // Per request: two numbers into a stack buffer, one copy into the
        // header value; no `core::fmt`.
        let (mut remaining, mut reset_digits) = (itoa::Buffer::new(), itoa::Buffer::new());
        let mut buf = [0; RATE_MAX];
        let mut len = 0;
        for part in [
            rate_prefix,
            remaining.format(outcome.remaining).as_bytes(),
            b";t=",
            reset_digits.format(reset).as_bytes(),
        ] {
            // A longer prefix than any checked name yields an empty value
            // rather than a panic.
            if let Some(dst) = buf.get_mut(len..len + part.len()) {
                dst.copy_from_slice(part);
            }
            len += part.len();
        }
        Self {
            policy,
            // Names are checked tokens and numbers are digits: always valid.
            rate: buf
                .get(..len)
                .and_then(|rate| HeaderValue::from_bytes(rate).ok())
                .unwrap_or(HeaderValue::from_static("")),
            legacy: legacy.then_some(Legacy {
                limit: gcra.burst(),
                remaining: outcome.remaining,
                reset,
            }),
        }
    }

    /// Adds the headers to a response.
    pub(crate) fn apply(self, headers: &mut HeaderMap) {
        headers.append(RATELIMIT_POLICY, self.policy);
        headers.append(RATELIMIT, self.rate);
        if let Some(legacy) = self.legacy {
            let lower = headers
                .get(X_RATELIMIT_REMAINING)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .is_none_or(|theirs| legacy.remaining < theirs);
            if lower {
                headers.insert(X_RATELIMIT_LIMIT, legacy.limit.into());
                headers.insert(X_RATELIMIT_REMAINING, legacy.remaining.into());
                headers.insert(X_RATELIMIT_RESET, legacy.reset.into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(
            policy_item("per-ip", quota_window(10, 1_000_000, 20)),
            "\"per-ip\";q=20;w=2"
        );
        // Windows that are not whole seconds: q/w is the real rate, or more.
        assert_eq!(quota_window(10, 1_000_000, 1), (10, 1)); // 10/s burst 1
        assert_eq!(quota_window(20, 10_000_000, 3), (4, 2)); // 20/10s burst 3
        assert_eq!(quota_window(100, 60_000_000, 100), (100, 60));
        // Rates whose interval is not a whole number of microseconds.
        assert_eq!(quota_window(3, 1_000_000, 3), (3, 1));
        assert_eq!(quota_window(7, 60_000_000, 7), (7, 60));
        assert_eq!(quota_window(3, 1_000_000, 1), (3, 1));
        assert_eq!(quota_window(7, 1_000_000, 10), (14, 2));
        assert_eq!(quota_window(0, 1_000_000, 1), (0, 0));
        let g = Gcra::new(100_000, 20).unwrap(); // 10/s burst 20
        let o = Outcome {
            allowed: true,
            remaining: 7,
            reset_after: 1_300_000,
            retry_after: 0,
            tat: 0,
        };
        let mut h = HeaderMap::new();
        Report::new(
            HeaderValue::from_static("\"per-ip\";q=20;w=2"),
            &rate_prefix("per-ip"),
            g,
            &o,
            true,
        )
        .apply(&mut h);
        assert_eq!(h["ratelimit-policy"], "\"per-ip\";q=20;w=2");
        assert_eq!(h["ratelimit"], "\"per-ip\";r=7;t=2");
        assert_eq!(h["x-ratelimit-limit"], "20");
        assert_eq!(h["x-ratelimit-remaining"], "7");
        assert_eq!(h["x-ratelimit-reset"], "2");

        // A second layer with more remaining appends to the lists but leaves
        // the legacy headers alone.
        let more = Outcome { remaining: 50, ..o };
        Report::new(
            HeaderValue::from_static("\"b\";q=60;w=6"),
            &rate_prefix("b"),
            g,
            &more,
            true,
        )
        .apply(&mut h);
        assert_eq!(h.get_all("ratelimit").iter().count(), 2);
        assert_eq!(h["x-ratelimit-remaining"], "7");
        assert_eq!(seconds_ceil(0), 0);
        assert_eq!(seconds_ceil(u64::MAX), u64::MAX / MICROS + 1);
        assert_eq!(seconds_ceil(1), 1);
        assert_eq!(seconds_ceil(1_000_000), 1);
    }

    #[test]
    fn longest_rate_fits() {
        let name = "n".repeat(64);
        let o = Outcome {
            allowed: true,
            remaining: u64::MAX,
            reset_after: u64::MAX,
            retry_after: 0,
            tat: 0,
        };
        let g = Gcra::new(1, 1).unwrap();
        let report = Report::new(
            HeaderValue::from_static(""),
            &rate_prefix(&name),
            g,
            &o,
            false,
        );
        let expected = format!("\"{name}\";r={};t={}", u64::MAX, u64::MAX / MICROS + 1);
        assert_eq!(report.rate, expected.as_str());
        assert_eq!(expected.len(), RATE_MAX - 6, "reset has fewer digits");

        // Never reached through the layer (names are at most 64 bytes), but
        // no panic either.
        let long = rate_prefix(&"n".repeat(100));
        let report = Report::new(HeaderValue::from_static(""), &long, g, &o, false);
        assert_eq!(report.rate, "");
    }
}
