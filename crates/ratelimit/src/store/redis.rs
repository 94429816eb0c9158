//! The Redis store: every gateway instance shares the same buckets, one
//! Lua script call per decision.

use std::borrow::Cow;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::runtime::Handle;
use tokio::sync::Notify;

use super::{Batch, Check, Store};
use crate::clock::duration_micros;
use crate::error::{BuildError, StoreError};
use crate::gcra::{Outcome, Verdict};

/// GCRA over every bucket of one decision, atomically: check all, store
/// new TATs only if all admit. Mirrors `gcra::decide` line for line, in
/// microseconds of the Redis server's clock (`TIME`), so instances whose
/// clocks disagree still agree on every decision.
///
/// Keys expire with their TAT (`PX`): a bucket past its TAT is a full
/// bucket anyway, so Redis memory holds only keys that carry state.
///
/// The reply is one string of decimal integers separated by spaces, not an
/// array of integers: redis-rs's reply parser costs about 1,500
/// instructions per array element, 8,800 for the six numbers of one
/// bucket, a quarter of what a whole plain proxied request costs; one
/// string is one element, and its numbers are read here (see [`parse`]).
const SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local probes = {}
local allowed = 1
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local window = interval * tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local capped = 0
  if tat > now + window then
    tat = now + window
    capped = 1
  end
  local allow_at = tat + interval - window
  if allow_at > now then allowed = 0 end
  probes[i] = {interval, window, tat, allow_at, capped}
end
local out = {allowed}
for i = 1, #KEYS do
  local interval, window, tat, allow_at, capped = unpack(probes[i])
  if allowed == 1 or capped == 1 then
    if allowed == 1 then tat = tat + interval end
    redis.call('SET', KEYS[i], string.format('%.0f', tat),
      'PX', string.format('%.0f', math.ceil((tat - now) / 1000)))
  end
  local admits = 0
  if allow_at <= now then admits = 1 end
  local retry = allow_at - now
  if retry < 0 then retry = 0 end
  local remaining = math.floor((now + window - tat) / interval)
  if remaining < 0 then remaining = 0 end
  out[#out + 1] = admits
  out[#out + 1] = remaining
  out[#out + 1] = tat - now
  out[#out + 1] = retry
  out[#out + 1] = tat
end
for i = 1, #out do out[i] = string.format('%.0f', out[i]) end
return table.concat(out, ' ')
";

/// Numbers per bucket in the script's reply.
const REPLY_FIELDS: usize = 5;

/// Rate-limit state in Redis, shared by every gateway instance that uses
/// the same server and prefix.
///
/// - **One round trip per decision**: all buckets of a request go to one
///   `EVALSHA` of a Lua script, which reads the time with `TIME`, decides
///   with GCRA and writes only if every limit admits. Redis runs scripts
///   one at a time, so decisions are atomic across instances. Each new
///   connection loads the script before any decision uses it (a restarted
///   Redis has forgotten it); should Redis still answer `NOSCRIPT`,
///   `redis::Script` loads it and calls again.
/// - **Cluster-compatible keys**: `<prefix>{<tag>}<bucket id>`, where the
///   tag is the batch's tag, so every key of one decision hashes to one slot.
///   A tag with a brace (a client-chosen key value such as `a}1`) is
///   replaced by its digest: Redis hashes only up to the first `}`, so such
///   values would otherwise all land in one slot. The connection is to one
///   server (standalone, or a proxy in front of a cluster), not a Cluster
///   client: a node's `MOVED` answer is a failure.
/// - **Never hangs**: each call is bounded by [`timeout`](RedisStoreBuilder::timeout)
///   (50 ms by default). Connecting is not: it takes several round trips
///   (TCP, TLS, `AUTH`, loading the script), so it runs in a background
///   task bounded by [`connect_timeout`](RedisStoreBuilder::connect_timeout)
///   (1 s by default), tried again every probe interval until it succeeds;
///   a decision that gives up waiting never cancels it. After any failed
///   call (a timeout, `READONLY` from a primary demoted by a failover, an
///   error) the store drops the connection and makes a new one, so that a
///   half-open socket or a server that changed roles is not asked again and
///   again.
/// - **Degraded mode**: after a failure, the store answers
///   [`StoreError::Degraded`] at once, without touching the network, for
///   [`probe_interval`](RedisStoreBuilder::probe_interval) (1 s by
///   default) and for as long as it has no connection; then one request
///   probes Redis (the first as soon as a new connection is ready), and the
///   first success ends degraded mode. The layer applies each limit's
///   [`FailurePolicy`](crate::FailurePolicy) to these errors. Entering and
///   leaving degraded mode is logged (`warn`/`info`); while degraded, at
///   most one warning per 10 s.
///
/// Clones share the connection and the health state. Building needs a
/// Tokio runtime and starts connecting in the background without waiting,
/// so a gateway starts even while Redis is down; until the first
/// connection is ready, decisions wait for it within their timeout.
#[derive(Clone, Debug)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

/// Builds a [`RedisStore`].
#[derive(Clone, Debug)]
#[must_use]
pub struct RedisStoreBuilder {
    url: String,
    prefix: String,
    timeout: Duration,
    connect_timeout: Duration,
    probe_interval: Duration,
}

struct Inner {
    /// The connection decisions use; `None` while a new one is being made
    /// (at the start, and after a failed call gave the previous one up).
    /// Exactly one connect task runs while it is `None`.
    conn: ArcSwapOption<ConnectionManager>,
    /// Wakes the decisions waiting for the first connection.
    connected: Notify,
    /// What a new connection is made from, and where its task runs.
    client: redis::Client,
    config: ConnectionManagerConfig,
    connect_timeout: Duration,
    runtime: Handle,
    script: Script,
    prefix: String,
    timeout: Duration,
    health: Health,
}

/// Degraded-mode bookkeeping, lock-free: it is read on every decision.
struct Health {
    origin: Instant,
    probe_interval: u64,
    degraded: AtomicBool,
    /// While degraded: when (µs since `origin`) the next probe may go out.
    next_probe: AtomicU64,
    failures: AtomicU64,
    /// When the last warning was logged, and how many failures since.
    last_warn: AtomicU64,
    unreported: AtomicU64,
}

/// At most one "still degraded" warning per this many µs.
const WARN_EVERY: u64 = 10_000_000;

// === impl RedisStore ===

impl RedisStore {
    /// A builder for a store on `url` (`redis://host:port/db`,
    /// `rediss://` for TLS if the `redis` crate is built with it).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            prefix: "towergate:rl:".to_owned(),
            timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(1),
            probe_interval: Duration::from_secs(1),
        }
    }

    /// Whether the store is in degraded mode (its last call failed).
    pub fn degraded(&self) -> bool {
        self.inner.health.degraded.load(Ordering::Acquire)
    }

    /// How many calls to Redis have failed or timed out since the start.
    pub fn failures(&self) -> u64 {
        self.inner.health.failures.load(Ordering::Relaxed)
    }

    /// Sends `PING`, within the store's timeout; a readiness check for
    /// embedders and tests. Does not change the degraded state.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let ping = async {
            let mut conn = ConnectionManager::clone(&*self.inner.connection().await);
            redis::cmd("PING").query_async::<String>(&mut conn).await
        };
        match tokio::time::timeout(self.inner.timeout, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Backend(Box::new(e))),
            Err(_) => Err(StoreError::TimedOut(self.inner.timeout)),
        }
    }

    async fn run(
        inner: Arc<Inner>,
        keys: Vec<String>,
        args: Vec<u64>,
    ) -> Result<Verdict, StoreError> {
        let mut invocation = inner.script.prepare_invoke();
        for key in &keys {
            invocation.key(key);
        }
        for arg in &args {
            invocation.arg(arg);
        }
        // The connection this call used, if it got one before the timeout.
        let mut used = None;
        let call = async {
            let conn = inner.connection().await;
            let mut manager = ConnectionManager::clone(&conn);
            used = Some(conn);
            invocation.invoke_async::<Vec<u8>>(&mut manager).await
        };
        // Bounded on towergate's own timer, not tokio's: this timeout is
        // armed and disarmed on every decision and seldom fires, which is
        // what that timer is for (tokio's registration and removal cost
        // ~600 instructions a decision; see `towergate_core::timer`).
        let called = {
            let mut call = std::pin::pin!(call);
            let mut deadline = std::pin::pin!(towergate_core::timer::sleep(inner.timeout));
            std::future::poll_fn(|cx| match call.as_mut().poll(cx) {
                Poll::Ready(r) => Poll::Ready(Some(r)),
                Poll::Pending => deadline.as_mut().poll(cx).map(|()| None),
            })
            .await
        };
        let result = match called {
            Some(Ok(reply)) => parse(&reply, keys.len()),
            Some(Err(e)) => Err(StoreError::Backend(Box::new(e))),
            None => Err(StoreError::TimedOut(inner.timeout)),
        };
        match &result {
            Ok(_) => inner.health.succeeded(),
            Err(e) => {
                inner.health.failed(e);
                // Without `used`, the call timed out waiting for a
                // connection that is still being made: nothing to replace.
                if let (Some(used), false) = (&used, matches!(e, StoreError::BadReply(_))) {
                    inner.reconnect(used);
                }
            }
        }
        result
    }
}

impl Store for RedisStore {
    fn check(&self, batch: &Batch) -> Check {
        let connected = self.inner.conn.load().is_some();
        if let Some(wait) = self.inner.health.skip(connected) {
            return Check::ready(Err(StoreError::Degraded(wait)));
        }
        let prefix = &self.inner.prefix;
        let tag = hash_tag(batch.tag());
        // `<prefix>{<tag>}<id>`, put together without the formatting
        // machinery (a visible share of a decision's cost).
        let keys = batch
            .buckets()
            .iter()
            .map(|b| {
                let mut key = String::with_capacity(prefix.len() + tag.len() + 2 + b.id().len());
                key.push_str(prefix);
                key.push('{');
                key.push_str(&tag);
                key.push('}');
                key.push_str(b.id());
                key
            })
            .collect();
        let args = batch
            .buckets()
            .iter()
            .flat_map(|b| [b.gcra().interval(), b.gcra().burst()])
            .collect();
        Check::pending(Self::run(self.inner.clone(), keys, args))
    }
}

/// What goes between the braces of a key for a batch tagged `tag`: the tag
/// itself, or, if it holds a brace, `#` and 32 hex digits of its BLAKE3
/// digest (the same on every instance).
///
/// Redis Cluster hashes a key by what lies between its first `{` and the
/// next `}`. Tags hold client-chosen key values, so a client sending
/// `a}1`, `a}2`, ... would otherwise put every key in the slot of `a`,
/// one node. The digest only spreads slots: keys stay distinct, because
/// each ends with its bucket id.
fn hash_tag(tag: &str) -> Cow<'_, str> {
    if !tag.contains(['{', '}']) {
        // Most tags: unchanged, so keys written before keep their names.
        return Cow::Borrowed(tag);
    }
    let digest = blake3::hash(tag.as_bytes());
    let mut out = String::with_capacity(33);
    out.push('#');
    for b in &digest.as_bytes()[..16] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    Cow::Owned(out)
}

/// The script's reply: `allowed`, then per bucket `admits remaining
/// reset_after retry_after tat`, decimal integers separated by spaces.
fn parse(reply: &[u8], buckets: usize) -> Result<Verdict, StoreError> {
    let bad = |what: &str| {
        StoreError::BadReply(format!(
            "{what} in {:?}",
            String::from_utf8_lossy(&reply[..reply.len().min(200)])
        ))
    };
    let count = 1 + REPLY_FIELDS * buckets;
    let mut values = Vec::with_capacity(count);
    for token in reply.split(|&b| b == b' ') {
        if values.len() == count {
            return Err(bad(&format!(
                "more than {count} numbers for {buckets} buckets"
            )));
        }
        let v = decimal(token).ok_or_else(|| bad("not a number"))?;
        values.push(u64::try_from(v).map_err(|_| bad(&format!("negative {v}")))?);
    }
    if values.len() != count {
        return Err(bad(&format!("not {count} numbers for {buckets} buckets")));
    }
    let outcomes = values[1..]
        .chunks_exact(REPLY_FIELDS)
        .map(|f| Outcome {
            allowed: f[0] == 1,
            remaining: f[1],
            reset_after: f[2],
            retry_after: f[3],
            tat: f[4],
        })
        .collect();
    Ok(Verdict {
        allowed: values[0] == 1,
        outcomes,
    })
}

/// `[-]digits` as an `i64`; `None` for anything else or an overflow.
fn decimal(t: &[u8]) -> Option<i64> {
    let (negative, digits) = match t {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, t),
    };
    if digits.is_empty() {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
    }
    Some(if negative { -n } else { n })
}

// === impl RedisStoreBuilder ===

impl RedisStoreBuilder {
    /// Prefix of every key (default `towergate:rl:`); no `{` or `}`, which
    /// would change the Cluster hash tag.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Longest wait for one decision (default 50 ms). Connecting is not
    /// counted: it happens in the background (see
    /// [`connect_timeout`](Self::connect_timeout)), except that the first
    /// decisions after building wait for the first connection this long.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Longest wait for one connection attempt in the background, loading
    /// the script included (default 1 s). Attempts repeat every
    /// [`probe_interval`](Self::probe_interval) until one succeeds.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long to leave Redis alone after a failure before one request
    /// probes it again (default 1 s).
    pub fn probe_interval(mut self, interval: Duration) -> Self {
        self.probe_interval = interval;
        self
    }

    /// The store. Parses the URL and starts connecting in the background,
    /// without waiting. Fails outside a Tokio runtime, on a bad URL or
    /// prefix, or on a zero timeout.
    pub fn build(self) -> Result<RedisStore, BuildError> {
        if self.prefix.contains(['{', '}']) {
            return Err(BuildError::InvalidStore(format!(
                "Redis key prefix {:?} contains a brace",
                self.prefix
            )));
        }
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(BuildError::InvalidStore(
                "Redis timeout or connect timeout is zero".to_owned(),
            ));
        }
        // Connections are made by tasks on this runtime (and the connection
        // manager spawns its own); without one, spawning would panic.
        let Ok(runtime) = Handle::try_current() else {
            return Err(BuildError::NoRuntime);
        };
        let client = redis::Client::open(self.url.as_str()).map_err(BuildError::Redis)?;
        // No response timeout and no retries in the client: every call has
        // its own deadline here (the decision timeout, or connect_timeout
        // for the connect task), and the connect task does the retrying, at
        // the probe interval.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(None)
            .set_number_of_retries(0);
        let inner = Arc::new(Inner {
            conn: ArcSwapOption::empty(),
            connected: Notify::new(),
            client,
            config,
            connect_timeout: self.connect_timeout,
            runtime,
            script: Script::new(SCRIPT),
            prefix: self.prefix,
            timeout: self.timeout,
            health: Health::new(duration_micros(self.probe_interval)),
        });
        inner.spawn_connect();
        Ok(RedisStore { inner })
    }
}

impl Inner {
    /// The current connection, waiting (unbounded: callers bound it) for
    /// the connect task when there is none.
    async fn connection(&self) -> Arc<ConnectionManager> {
        loop {
            if let Some(conn) = self.conn.load_full() {
                return conn;
            }
            // Registered before the second look, so a connection stored in
            // between still wakes this caller.
            let mut notified = std::pin::pin!(self.connected.notified());
            notified.as_mut().enable();
            if let Some(conn) = self.conn.load_full() {
                return conn;
            }
            notified.await;
        }
    }

    /// Gives up the connection `used` by a failed call and starts making a
    /// new one: the connection manager reconnects by itself only when the
    /// socket breaks, not when calls time out on a half-open one or a
    /// demoted primary answers `READONLY`. Calls that failed together on
    /// the same connection start one connect task.
    fn reconnect(self: &Arc<Self>, used: &Arc<ConnectionManager>) {
        let previous = self
            .conn
            .compare_and_swap(used, None::<Arc<ConnectionManager>>);
        if previous.as_ref().is_some_and(|p| Arc::ptr_eq(p, used)) {
            tracing::debug!("redis rate-limit store: replacing the connection after a failure");
            self.spawn_connect();
        }
    }

    /// Makes a connection in a task of its own, so that no decision's
    /// timeout can cancel it: a connect that takes longer than one
    /// decision may wait still completes, and then serves every decision.
    /// The task holds the store weakly and stops when it is dropped.
    fn spawn_connect(self: &Arc<Self>) {
        let store = Arc::downgrade(self);
        drop(self.runtime.spawn(Self::connect(store)));
    }

    async fn connect(store: Weak<Self>) {
        loop {
            let Some(inner) = store.upgrade() else {
                return;
            };
            match tokio::time::timeout(inner.connect_timeout, inner.open()).await {
                Ok(Ok(conn)) => {
                    inner.conn.store(Some(Arc::new(conn)));
                    inner.connected.notify_waiters();
                    inner.health.connected();
                    tracing::debug!("redis rate-limit store: connected");
                    return;
                }
                Ok(Err(e)) => inner.health.failed(&StoreError::Backend(Box::new(e))),
                Err(_) => inner
                    .health
                    .failed(&StoreError::TimedOut(inner.connect_timeout)),
            }
            // One attempt per probe interval, never a busy loop (a zero
            // interval is allowed for probes).
            let pause =
                Duration::from_micros(inner.health.probe_interval).max(Duration::from_millis(10));
            drop(inner);
            tokio::time::sleep(pause).await;
        }
    }

    /// A connected manager with the script loaded: here, off the request
    /// path, because after a Redis restart `EVALSHA` would answer
    /// `NOSCRIPT` and a decision would need three round trips (`EVALSHA`,
    /// `SCRIPT LOAD`, `EVALSHA`) within its timeout.
    async fn open(&self) -> redis::RedisResult<ConnectionManager> {
        let mut conn =
            ConnectionManager::new_with_config(self.client.clone(), self.config.clone()).await?;
        self.script.load_async(&mut conn).await?;
        Ok(conn)
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("degraded", &self.health.degraded.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

// === impl Health ===

impl Health {
    fn new(probe_interval: u64) -> Self {
        Self {
            origin: Instant::now(),
            probe_interval,
            degraded: AtomicBool::new(false),
            next_probe: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_warn: AtomicU64::new(0),
            unreported: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        duration_micros(self.origin.elapsed())
    }

    /// While degraded, how long the caller should not bother Redis; `None`
    /// when it should call (healthy, or this caller won the probe).
    /// `connected`: whether there is a connection to probe with; without
    /// one, a new one is being made, and [`connected`](Self::connected)
    /// lets the next caller probe as soon as it is ready.
    fn skip(&self, connected: bool) -> Option<Duration> {
        if !self.degraded.load(Ordering::Acquire) {
            return None;
        }
        let now = self.now();
        let next = self.next_probe.load(Ordering::Acquire);
        if now < next {
            return Some(Duration::from_micros(next - now));
        }
        if !connected {
            return Some(Duration::from_micros(self.probe_interval));
        }
        // One probe per interval: the caller that moves `next_probe` goes,
        // everyone else keeps deciding without Redis.
        let later = now.saturating_add(self.probe_interval);
        match self
            .next_probe
            .compare_exchange(next, later, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => None,
            Err(_) => Some(Duration::from_micros(self.probe_interval)),
        }
    }

    /// A new connection is ready: the next caller probes it at once
    /// instead of waiting for the rest of the probe interval.
    fn connected(&self) {
        self.next_probe.store(0, Ordering::Release);
    }

    fn succeeded(&self) {
        if self.degraded.swap(false, Ordering::AcqRel) {
            tracing::info!(
                failures = self.failures.load(Ordering::Relaxed),
                "redis rate-limit store recovered; limits are shared again"
            );
        }
    }

    fn failed(&self, error: &StoreError) {
        let now = self.now();
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.next_probe
            .store(now.saturating_add(self.probe_interval), Ordering::Release);
        if !self.degraded.swap(true, Ordering::AcqRel) {
            self.last_warn.store(now, Ordering::Relaxed);
            self.unreported.store(0, Ordering::Relaxed);
            tracing::warn!(%error, "redis rate-limit store degraded; limits fall back to their failure policy");
            return;
        }
        // Still degraded: one line per WARN_EVERY with a count, not one per
        // request.
        let unreported = self.unreported.fetch_add(1, Ordering::Relaxed) + 1;
        let last = self.last_warn.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= WARN_EVERY
            && self
                .last_warn
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.unreported.store(0, Ordering::Relaxed);
            tracing::warn!(%error, failures = unreported, "redis rate-limit store still degraded");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals() {
        assert_eq!(decimal(b"0"), Some(0));
        assert_eq!(decimal(b"-0"), Some(0));
        assert_eq!(decimal(b"-12"), Some(-12));
        assert_eq!(decimal(b"9223372036854775807"), Some(i64::MAX));
        for bad in [
            &b""[..],
            b"-",
            b"9223372036854775808",
            b"1e5",
            b"+1",
            b" 1",
            b"1.0",
        ] {
            assert_eq!(decimal(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn parses_the_script_reply() {
        let v = parse(b"0 1 3 100 0 900 0 0 500 20 1500", 2).unwrap();
        assert!(!v.allowed);
        assert_eq!(
            v.outcomes[1],
            Outcome {
                allowed: false,
                remaining: 0,
                reset_after: 500,
                retry_after: 20,
                tat: 1_500
            }
        );
        let v = parse(b"1 1 7 10 0 1732867200123456", 1).unwrap();
        assert!(v.allowed && v.outcomes[0].allowed);
        assert_eq!(v.outcomes[0].tat, 1_732_867_200_123_456);
        for bad in [
            &b"1 1"[..],
            b"1 1 -1 0 0 0",
            b"1 1 1 0 0 1.7e+15",
            b"1 1 1 0 - 0",
            b"1 1 1 0 0 99999999999999999999",
            b"1 1 1 0 0 +5",
            b"1 1 1 0 0 0 ",
            b"1  1 1 0 0",
            b"",
            b"1 1 1 0 0 0 0",
        ] {
            assert!(
                matches!(parse(bad, 1), Err(StoreError::BadReply(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn one_probe_per_interval_while_degraded() {
        let h = Health::new(60_000_000);
        assert_eq!(h.skip(true), None, "healthy: always call");
        assert_eq!(h.skip(false), None, "healthy: wait for the connection");
        h.failed(&StoreError::TimedOut(Duration::from_millis(1)));
        assert!(
            h.skip(true).is_some(),
            "degraded: skip until the probe time"
        );
        // A new connection is ready: probe it at once.
        h.connected();
        assert!(h.skip(false).is_some(), "no probe without a connection");
        assert_eq!(h.skip(true), None, "the first caller probes");
        assert!(h.skip(true).is_some(), "the others do not");
        h.succeeded();
        assert_eq!(h.skip(true), None);
        assert_eq!(h.failures.load(Ordering::Relaxed), 1);
    }

    /// Redis hashes a key by what lies between its first `{` and the next
    /// `}`: a client's `}` must not cut the tag short and pile its keys on
    /// one slot.
    #[test]
    fn braces_in_a_tag_do_not_choose_the_slot() {
        // What Redis Cluster hashes in `key`.
        fn hashed(key: &str) -> &str {
            let Some(open) = key.find('{') else {
                return key;
            };
            match key[open + 1..].find('}') {
                Some(len) if len > 0 => &key[open + 1..open + 1 + len],
                _ => key,
            }
        }
        let key = |tag: &str, id: &str| format!("p:{{{}}}{id}", hash_tag(tag));
        let (one, two) = (key("s|=a}1", "s:l:=a}1"), key("s|=a}2", "s:l:=a}2"));
        assert_ne!(hashed(&one), hashed(&two), "{one} and {two}");
        assert_ne!(hashed(&one), "s|=a");
        assert_ne!(key("s|={", "x"), key("s|=}", "x"));
        assert_eq!(hash_tag("s|=a}1"), hash_tag("s|=a}1"), "stable");
        // Tags without braces keep their form (and their keys).
        assert_eq!(hash_tag("s|=alice"), "s|=alice");
        assert_eq!(hashed(&key("s|=alice", "s:l:=alice")), "s|=alice");
    }

    #[test]
    fn build_needs_a_runtime_and_a_clean_prefix() {
        assert!(matches!(
            RedisStore::builder("redis://127.0.0.1:1").build(),
            Err(BuildError::NoRuntime)
        ));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            assert!(matches!(
                RedisStore::builder("redis://127.0.0.1:1")
                    .prefix("a{b")
                    .build(),
                Err(BuildError::InvalidStore(_))
            ));
            assert!(matches!(
                RedisStore::builder("nonsense://").build(),
                Err(BuildError::Redis(_))
            ));
            assert!(RedisStore::builder("redis://127.0.0.1:1").build().is_ok());
        });
    }
}
