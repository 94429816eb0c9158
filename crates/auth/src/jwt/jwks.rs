//! The JWKS fetcher: keeps the identity provider's key set fresh.
//!
//! - A background task refreshes the set before it expires (the
//!   provider's `Cache-Control: max-age`, within bounds, or a default).
//! - A token with an unknown `kid` triggers a refetch at once (rotation),
//!   but never sooner than the *refetch floor* after the previous attempt,
//!   and concurrent callers share one fetch: a flood of random `kid`s costs
//!   the provider one request per floor.
//! - A failed fetch keeps the last good set serving, and is retried with
//!   backoff.
//!
//! The background task is spawned at build when a Tokio runtime is
//! running, else on first use; it holds a weak reference and ends once
//! every clone of the layer is gone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::HeaderMap;
use http::header::{ACCEPT, CACHE_CONTROL};
use parking_lot::Mutex;
use tokio::time::Instant;
use towergate_core::BoxError;

use super::keys::KeySet;
use crate::error::{AuthError, BuildError, Chain, reason};
use crate::http_client;

/// How the key set is fetched and kept.
#[derive(Clone, Debug)]
pub(crate) struct JwksConfig {
    pub(crate) url: String,
    pub(crate) default_ttl: Duration,
    pub(crate) min_ttl: Duration,
    pub(crate) max_ttl: Duration,
    pub(crate) refetch_floor: Duration,
    pub(crate) timeout: Duration,
    pub(crate) max_body: usize,
}

/// A handle on the shared fetcher.
#[derive(Clone, Debug)]
pub(crate) struct Jwks {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: JwksConfig,
    url: reqwest::Url,
    /// The URL as logs show it: without a password.
    shown: String,
    client: reqwest::Client,
    keys: ArcSwapOption<KeySet>,
    state: Mutex<State>,
    // One fetch at a time; waiters re-check the floor once they get it.
    fetch_lock: tokio::sync::Mutex<()>,
    started: AtomicBool,
}

#[derive(Debug)]
struct State {
    last_attempt: Option<Instant>,
    next_refresh: Instant,
    failures: u32,
}

// === impl JwksConfig ===

impl JwksConfig {
    pub(crate) fn new(url: String) -> Self {
        Self {
            url,
            default_ttl: Duration::from_secs(300),
            min_ttl: Duration::from_secs(30),
            max_ttl: Duration::from_secs(24 * 3600),
            refetch_floor: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            max_body: 1024 * 1024,
        }
    }

    fn check(&self) -> Result<(), BuildError> {
        if self.min_ttl.is_zero() || self.min_ttl > self.max_ttl {
            return Err(BuildError::new(
                "JWKS TTL bounds must satisfy 0 < min <= max",
            ));
        }
        if self.timeout.is_zero() {
            return Err(BuildError::new("the JWKS timeout must not be zero"));
        }
        if self.refetch_floor.is_zero() {
            // Every token with a made-up `kid` would be a fetch.
            return Err(BuildError::new("the JWKS refetch floor must not be zero"));
        }
        Ok(())
    }
}

// === impl Jwks ===

impl Jwks {
    pub(crate) fn new(
        config: JwksConfig,
        client: Option<reqwest::Client>,
    ) -> Result<Self, BuildError> {
        config.check()?;
        let url = http_client::parse_url("JWKS", &config.url)?;
        let client = match client {
            Some(c) => c,
            None => http_client::client(config.timeout)?,
        };
        let jwks = Self {
            shared: Arc::new(Shared {
                shown: towergate_core::url_without_password(&config.url).into_owned(),
                config,
                url,
                client,
                keys: ArcSwapOption::empty(),
                state: Mutex::new(State {
                    last_attempt: None,
                    next_refresh: Instant::now(),
                    failures: 0,
                }),
                fetch_lock: tokio::sync::Mutex::new(()),
                started: AtomicBool::new(false),
            }),
        };
        // Warm the set now when we can, so the first request does not wait.
        jwks.ensure_started();
        Ok(jwks)
    }

    pub(crate) fn url(&self) -> &str {
        &self.shared.config.url
    }

    /// The current set, if one was ever fetched.
    pub(crate) fn current(&self) -> Option<Arc<KeySet>> {
        self.shared.keys.load_full()
    }

    /// The set to look `kid` up in: the current one if it knows `kid`,
    /// else the one after a refetch (if the floor allows one).
    pub(crate) async fn keys_for(&self, kid: Option<&str>) -> Result<Arc<KeySet>, AuthError> {
        self.ensure_started();
        if let Some(set) = self.current()
            && kid.is_none_or(|k| set.has_kid(k))
        {
            return Ok(set);
        }
        if let Some(kid) = kid {
            tracing::debug!(kid, url = %self.shared.shown, "unknown kid, refetching the JWKS");
        }
        self.shared.refetch_if_allowed().await;
        let set = self.current().ok_or_else(|| {
            AuthError::unavailable(
                reason::KEYS_UNAVAILABLE,
                "the identity provider's keys are not available",
                "no JWKS fetched yet",
            )
        })?;
        // A `kid` the last good set does not know, while the provider
        // cannot be reached: maybe a key it rotated to meanwhile. An
        // outage (503: retry), not an invalid token (401: every client
        // would drop a good token and log in again, at an identity
        // provider already in trouble).
        if let Some(kid) = kid
            && !set.has_kid(kid)
            && self.shared.state.lock().failures > 0
        {
            return Err(AuthError::unavailable(
                reason::KEYS_UNAVAILABLE,
                "the identity provider's keys could not be refreshed",
                "unknown kid while the JWKS cannot be fetched",
            ));
        }
        Ok(set)
    }

    fn ensure_started(&self) {
        // A plain load first: this runs on every request, and a swap would
        // write to a shared cache line each time.
        if self.shared.started.load(Ordering::Acquire)
            || self.shared.started.swap(true, Ordering::AcqRel)
        {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let weak = Arc::downgrade(&self.shared);
                handle.spawn(refresh_loop(weak));
            }
            // No runtime yet (built in a sync `main`): try again on first use.
            Err(_) => self.shared.started.store(false, Ordering::Release),
        }
    }
}

// === impl Shared ===

impl Shared {
    async fn refetch_if_allowed(&self) {
        let _one_at_a_time = self.fetch_lock.lock().await;
        let recent = self
            .state
            .lock()
            .last_attempt
            .is_some_and(|t| t.elapsed() < self.config.refetch_floor);
        if !recent {
            self.fetch_now().await;
        }
    }

    /// Fetches and stores the set; call with `fetch_lock` held.
    async fn fetch_now(&self) {
        let started = Instant::now();
        self.state.lock().last_attempt = Some(started);
        let outcome = self.fetch().await;
        let mut state = self.state.lock();
        match outcome {
            Ok((set, ttl)) => {
                tracing::debug!(url = %self.shown, keys = set.len(), ttl = ?ttl, "JWKS refreshed");
                self.keys.store(Some(Arc::new(set)));
                state.failures = 0;
                state.next_refresh = started + refresh_after(ttl);
            }
            Err(e) => {
                state.failures = state.failures.saturating_add(1);
                let delay = retry_after(
                    self.config.refetch_floor,
                    state.failures,
                    self.config.max_ttl.min(Duration::from_secs(300)),
                );
                state.next_refresh = started + delay;
                tracing::warn!(
                    url = %self.shown,
                    error = %Chain(&*e),
                    keeping = self.keys.load().as_ref().map_or(0, |s| s.len()),
                    retry_in = ?delay,
                    "JWKS fetch failed; the last good key set keeps serving"
                );
            }
        }
    }

    async fn fetch(&self) -> Result<(KeySet, Duration), BoxError> {
        let rsp = self
            .client
            .get(self.url.clone())
            .header(ACCEPT, "application/json")
            .timeout(self.config.timeout)
            .send()
            .await
            // reqwest's message would show the URL, password and all.
            .map_err(reqwest::Error::without_url)?;
        if !rsp.status().is_success() {
            return Err(format!("JWKS endpoint answered {}", rsp.status()).into());
        }
        let ttl = ttl(
            max_age(rsp.headers()),
            self.config.default_ttl,
            self.config.min_ttl,
            self.config.max_ttl,
        );
        let body = http_client::read_limited(rsp, self.config.max_body).await?;
        let set = KeySet::from_jwks(&body)?;
        Ok((set, ttl))
    }
}

async fn refresh_loop(weak: Weak<Shared>) {
    loop {
        let next = match weak.upgrade() {
            Some(s) => s.state.lock().next_refresh,
            None => return,
        };
        tokio::time::sleep_until(next).await;
        let Some(shared) = weak.upgrade() else { return };
        let _one_at_a_time = shared.fetch_lock.lock().await;
        // A request-triggered fetch may have happened meanwhile.
        if shared.state.lock().next_refresh <= Instant::now() {
            shared.fetch_now().await;
        }
    }
}

/// `max-age` of a `Cache-Control` header; `no-cache`/`no-store` count as
/// zero (then the lower bound applies).
pub(crate) fn max_age(headers: &HeaderMap) -> Option<Duration> {
    let mut found = None;
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(s) = value.to_str() else { continue };
        for directive in s.split(',') {
            let directive = directive.trim();
            let (name, arg) = match directive.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (directive, None),
            };
            if name.eq_ignore_ascii_case("no-cache") || name.eq_ignore_ascii_case("no-store") {
                return Some(Duration::ZERO);
            }
            if name.eq_ignore_ascii_case("max-age")
                && let Some(secs) = arg.and_then(|a| a.parse::<u64>().ok())
            {
                found = Some(Duration::from_secs(secs));
            }
        }
    }
    found
}

/// How long a fetched set is fresh.
pub(crate) fn ttl(
    max_age: Option<Duration>,
    default: Duration,
    min: Duration,
    max: Duration,
) -> Duration {
    max_age.unwrap_or(default).clamp(min, max)
}

/// When to refresh a set that is fresh for `ttl`: at 80 %, so that the
/// new set is in place before the old one goes stale.
pub(crate) fn refresh_after(ttl: Duration) -> Duration {
    ttl.mul_f64(0.8)
}

/// When to retry after `failures` failed fetches in a row: from the floor
/// (at least a second), doubling, up to `cap`.
pub(crate) fn retry_after(floor: Duration, failures: u32, cap: Duration) -> Duration {
    let base = floor.max(Duration::from_secs(1));
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    base.saturating_mul(factor).min(cap.max(base))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// Log lines, as a subscriber writes them.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_failed_fetch_logs_the_url_without_its_password() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let url = format!("http://svc:S3cr3t@{closed}/jwks");
        let jwks = Jwks::new(JwksConfig::new(url), None).unwrap();
        assert!(jwks.keys_for(Some("k1")).await.is_err());
        let text = String::from_utf8(logs.0.lock().clone()).unwrap();
        assert!(text.contains("JWKS fetch failed"), "{text}");
        assert!(text.contains("svc:<redacted>@"), "{text}");
        assert!(!text.contains("S3cr3t"), "{text}");
    }

    #[test]
    fn cache_control() {
        let mut h = HeaderMap::new();
        assert_eq!(max_age(&h), None);
        h.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=600"),
        );
        assert_eq!(max_age(&h), Some(Duration::from_secs(600)));
        h.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("max-age=\"60\", must-revalidate"),
        );
        assert_eq!(max_age(&h), Some(Duration::from_secs(60)));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        assert_eq!(max_age(&h), Some(Duration::ZERO));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=banana"));
        assert_eq!(max_age(&h), None);
    }

    #[test]
    fn ttl_is_bounded() {
        let s = Duration::from_secs;
        assert_eq!(ttl(None, s(300), s(30), s(3600)), s(300));
        assert_eq!(ttl(Some(s(1)), s(300), s(30), s(3600)), s(30));
        assert_eq!(ttl(Some(s(86400)), s(300), s(30), s(3600)), s(3600));
        assert_eq!(refresh_after(s(100)), s(80));
    }

    #[test]
    fn backoff() {
        let s = Duration::from_secs;
        assert_eq!(retry_after(s(10), 1, s(300)), s(10));
        assert_eq!(retry_after(s(10), 2, s(300)), s(20));
        assert_eq!(retry_after(s(10), 10, s(300)), s(300));
        assert_eq!(retry_after(Duration::ZERO, 1, s(300)), s(1));
        assert_eq!(retry_after(s(10), u32::MAX, s(300)), s(300));
    }
}
