//! Freshness lifetime, age and staleness (RFC 9111 §4.2), from headers and
//! injected times only.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use http::header::{AGE, DATE, EXPIRES, LAST_MODIFIED};

use crate::cache_control::{CacheControl, parse_delta};

/// When a stored response was requested and received, and what it said
/// about its own age: the inputs of the §4.2.3 age calculation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Timing {
    /// When the cache sent the request that produced the response.
    pub(crate) request_time: SystemTime,
    /// When the cache received the response head.
    pub(crate) response_time: SystemTime,
    /// The response's `Date`, if valid.
    pub(crate) date: Option<SystemTime>,
    /// The response's `Age`, if valid (else 0).
    pub(crate) age_value: u64,
}

/// The verdict on a stored response at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Freshness {
    /// The freshness lifetime (§4.2.1).
    pub(crate) lifetime: Duration,
    /// The current age (§4.2.3).
    pub(crate) age: Duration,
}

// === impl Timing ===

impl Timing {
    /// Reads `Date` and `Age` from a response received at `response_time`
    /// for a request sent at `request_time`.
    pub(crate) fn new(
        headers: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
    ) -> Self {
        Self {
            request_time,
            response_time,
            date: http_date(headers, DATE),
            age_value: parse_age(headers).unwrap_or(0),
        }
    }

    /// `corrected_initial_age` of §4.2.3.
    pub(crate) fn corrected_initial_age(&self) -> Duration {
        let apparent_age = self
            .date
            .and_then(|date| self.response_time.duration_since(date).ok())
            .unwrap_or(Duration::ZERO);
        let response_delay = self
            .response_time
            .duration_since(self.request_time)
            .unwrap_or(Duration::ZERO);
        let corrected_age_value = Duration::from_secs(self.age_value) + response_delay;
        apparent_age.max(corrected_age_value)
    }

    /// `current_age` of §4.2.3: the initial age plus the time resident in
    /// the cache. A clock that went backwards counts as no residence.
    pub(crate) fn current_age(&self, now: SystemTime) -> Duration {
        let resident = now
            .duration_since(self.response_time)
            .unwrap_or(Duration::ZERO);
        self.corrected_initial_age() + resident
    }

    /// The `Date` to compute `Expires` against: the response's own, or the
    /// time it was received when it had none (§4.2.1).
    fn date_or_received(&self) -> SystemTime {
        self.date.unwrap_or(self.response_time)
    }
}

// === impl Freshness ===

impl Freshness {
    /// Evaluates a response with directives `cc` and headers `headers`.
    pub(crate) fn new(
        cc: &CacheControl,
        headers: &HeaderMap,
        timing: &Timing,
        default_ttl: Option<Duration>,
        now: SystemTime,
    ) -> Self {
        Self {
            lifetime: lifetime(cc, headers, timing, default_ttl).unwrap_or(Duration::ZERO),
            age: timing.current_age(now),
        }
    }

    /// `lifetime > age` (§4.2).
    pub(crate) fn is_fresh(&self) -> bool {
        self.lifetime > self.age
    }

    /// How long it stays fresh (zero when stale).
    pub(crate) fn remaining(&self) -> Duration {
        self.lifetime.saturating_sub(self.age)
    }

    /// How long it has been stale (zero when fresh).
    pub(crate) fn staleness(&self) -> Duration {
        self.age.saturating_sub(self.lifetime)
    }
}

/// The freshness lifetime (§4.2.1): `s-maxage` (a shared cache), then
/// `max-age`, then `Expires` − `Date`, then the configured heuristic
/// (`default_ttl`, §4.2.2). `None` when the response states nothing and no
/// heuristic is configured.
pub(crate) fn lifetime(
    cc: &CacheControl,
    headers: &HeaderMap,
    timing: &Timing,
    default_ttl: Option<Duration>,
) -> Option<Duration> {
    if let Some(s) = cc.s_maxage {
        return Some(Duration::from_secs(s));
    }
    if let Some(s) = cc.max_age {
        return Some(Duration::from_secs(s));
    }
    if let Some(expires) = headers.get(EXPIRES) {
        // An invalid Expires (`0`) means "already expired" (§5.3).
        let expires = expires
            .to_str()
            .ok()
            .and_then(|s| httpdate::parse_http_date(s.trim()).ok());
        return Some(match expires {
            Some(at) => at
                .duration_since(timing.date_or_received())
                .unwrap_or(Duration::ZERO),
            None => Duration::ZERO,
        });
    }
    default_ttl
}

/// Whether the response states its lifetime explicitly.
pub(crate) fn has_explicit_lifetime(cc: &CacheControl, headers: &HeaderMap) -> bool {
    cc.s_maxage.is_some() || cc.max_age.is_some() || headers.contains_key(EXPIRES)
}

/// `Age`: one field line of `1*DIGIT`; anything else (negative, float,
/// list, several lines) is ignored, as the cache tests' `age-parse` checks
/// expect.
pub(crate) fn parse_age(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(AGE).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    parse_delta(first.to_str().ok()?.trim())
}

/// A header holding an HTTP date (IMF-fixdate or an obsolete format).
pub(crate) fn http_date(headers: &HeaderMap, name: http::HeaderName) -> Option<SystemTime> {
    let v = headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(v.trim()).ok()
}

/// The stored response's modification time for `If-Modified-Since`
/// (§4.3.2): `Last-Modified`, else `Date`.
pub(crate) fn last_modified(headers: &HeaderMap) -> Option<SystemTime> {
    http_date(headers, LAST_MODIFIED).or_else(|| http_date(headers, DATE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn date(secs: u64) -> HeaderValue {
        HeaderValue::from_str(&httpdate::fmt_http_date(t(secs))).unwrap()
    }

    fn headers(pairs: &[(&'static str, HeaderValue)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.clone());
        }
        h
    }

    fn life(h: &HeaderMap, ttl: Option<Duration>) -> Option<Duration> {
        let cc = CacheControl::from_headers(h);
        lifetime(&cc, h, &Timing::new(h, t(100), t(100)), ttl)
    }

    #[test]
    fn lifetime_precedence() {
        let h = headers(&[
            (
                "cache-control",
                HeaderValue::from_static("max-age=60, s-maxage=10"),
            ),
            ("expires", date(1000)),
            ("date", date(100)),
        ]);
        assert_eq!(life(&h, None), Some(Duration::from_secs(10)));
        let h = headers(&[
            ("cache-control", HeaderValue::from_static("max-age=60")),
            ("expires", date(1000)),
            ("date", date(100)),
        ]);
        assert_eq!(life(&h, None), Some(Duration::from_secs(60)));
        let h = headers(&[("expires", date(1000)), ("date", date(100))]);
        assert_eq!(life(&h, None), Some(Duration::from_secs(900)));
        let h = headers(&[("date", date(100))]);
        assert_eq!(life(&h, None), None);
        assert_eq!(
            life(&h, Some(Duration::from_secs(7))),
            Some(Duration::from_secs(7))
        );
    }

    #[test]
    fn expires_edge_cases() {
        // Past and invalid Expires are stale at once.
        let h = headers(&[("expires", date(50)), ("date", date(100))]);
        assert_eq!(life(&h, None), Some(Duration::ZERO));
        let h = headers(&[("expires", HeaderValue::from_static("0"))]);
        assert_eq!(
            life(&h, Some(Duration::from_secs(60))),
            Some(Duration::ZERO)
        );
        // No (or an invalid) Date: the time of receipt stands in.
        let h = headers(&[
            ("expires", date(110)),
            ("date", HeaderValue::from_static("foo")),
        ]);
        assert_eq!(life(&h, None), Some(Duration::from_secs(10)));
    }

    #[test]
    fn age_calculation() {
        // Date 10 s before receipt, Age 5, 2 s response delay.
        let h = headers(&[("date", date(88)), ("age", HeaderValue::from_static("5"))]);
        let timing = Timing::new(&h, t(96), t(98));
        // apparent 10 vs corrected 5 + 2 = 7
        assert_eq!(timing.corrected_initial_age(), Duration::from_secs(10));
        assert_eq!(timing.current_age(t(108)), Duration::from_secs(20));
        // Age dominates when larger.
        let h = headers(&[("date", date(98)), ("age", HeaderValue::from_static("30"))]);
        let timing = Timing::new(&h, t(96), t(98));
        assert_eq!(timing.corrected_initial_age(), Duration::from_secs(32));
        // A Date in the future gives no negative age.
        let h = headers(&[("date", date(500))]);
        let timing = Timing::new(&h, t(98), t(98));
        assert_eq!(timing.corrected_initial_age(), Duration::ZERO);
        // A clock going backwards does not underflow.
        assert_eq!(timing.current_age(t(0)), Duration::ZERO);
    }

    #[test]
    fn age_header_parsing() {
        let parse = |vals: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in vals {
                h.append(AGE, HeaderValue::from_static(v));
            }
            parse_age(&h)
        };
        assert_eq!(parse(&["15"]), Some(15));
        assert_eq!(parse(&["abc"]), None);
        assert_eq!(parse(&["-7200"]), None);
        assert_eq!(parse(&["7200.0"]), None);
        assert_eq!(parse(&["7200,0"]), None);
        assert_eq!(parse(&["7200", "0"]), None);
        assert_eq!(parse(&[]), None);
    }

    #[test]
    fn freshness_verdict() {
        let h = headers(&[
            ("cache-control", HeaderValue::from_static("max-age=10")),
            ("date", date(0)),
            ("age", HeaderValue::from_static("15")),
        ]);
        let cc = CacheControl::from_headers(&h);
        let timing = Timing::new(&h, t(0), t(0));
        let f = Freshness::new(&cc, &h, &timing, None, t(0));
        assert!(!f.is_fresh());
        assert_eq!(f.staleness(), Duration::from_secs(5));

        let h = headers(&[
            ("cache-control", HeaderValue::from_static("max-age=10")),
            ("date", date(0)),
        ]);
        let timing = Timing::new(&h, t(0), t(0));
        let f = Freshness::new(&cc, &h, &timing, None, t(4));
        assert!(f.is_fresh());
        assert_eq!(f.remaining(), Duration::from_secs(6));
        let f = Freshness::new(&cc, &h, &timing, None, t(10));
        assert!(!f.is_fresh(), "fresh means lifetime > age, strictly");
    }

    #[test]
    fn last_modified_falls_back_to_date() {
        let h = headers(&[("date", date(5))]);
        assert_eq!(last_modified(&h), Some(t(5)));
        let h = headers(&[("date", date(5)), ("last-modified", date(1))]);
        assert_eq!(last_modified(&h), Some(t(1)));
    }
}
