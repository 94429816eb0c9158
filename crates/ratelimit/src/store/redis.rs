//! The Redis store: every gateway instance shares the same buckets, one
//! Lua script call per decision.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

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
return out
";

/// Numbers per bucket in the script's reply.
const REPLY_FIELDS: usize = 5;

/// Rate-limit state in Redis, shared by every gateway instance that uses
/// the same server and prefix.
///
/// - **One round trip per decision**: all buckets of a request go to one
///   `EVALSHA` of a Lua script (loaded on `NOSCRIPT` by `redis::Script`),
///   which reads the time with `TIME`, decides with GCRA and writes only if
///   every limit admits. Redis runs scripts one at a time, so decisions are
///   atomic across instances.
/// - **Cluster-compatible keys**: `<prefix>{<tag>}<bucket id>`, where the
///   tag is the batch's tag, so every key of one decision hashes to one slot.
///   The connection is to one server (standalone, or a proxy in front of a
///   cluster), not a Cluster client: a node's `MOVED` answer is a failure.
/// - **Never hangs**: each call is bounded by [`timeout`](RedisStoreBuilder::timeout)
///   (50 ms by default). A [`ConnectionManager`] reconnects in the
///   background when its connection breaks; and after any failed call
///   (a timeout, `READONLY` from a primary demoted by a failover, an error)
///   the store replaces the connection with a new one, so that a half-open
///   socket or a server that changed roles is not asked again and again.
///   Failures are rare while healthy and probes are one per interval while
///   degraded, so this reconnects at most about once per interval.
/// - **Degraded mode**: after a failure, the store answers
///   [`StoreError::Degraded`] at once, without touching the network, for
///   [`probe_interval`](RedisStoreBuilder::probe_interval) (1 s by
///   default); then one request probes Redis, and the first success ends
///   degraded mode. The layer applies each limit's
///   [`FailurePolicy`](crate::FailurePolicy) to these errors. Entering and
///   leaving degraded mode is logged (`warn`/`info`); while degraded, at
///   most one warning per 10 s.
///
/// Clones share the connection and the health state. Building needs a
/// Tokio runtime, and connects lazily, so a gateway starts even while
/// Redis is down.
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
    conn: ArcSwap<ConnectionManager>,
    /// What a replacement connection is made from.
    client: redis::Client,
    config: ConnectionManagerConfig,
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
        let mut conn = ConnectionManager::clone(&self.inner.conn.load());
        let ping = redis::cmd("PING");
        match tokio::time::timeout(self.inner.timeout, ping.query_async::<String>(&mut conn)).await
        {
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
        let used = inner.conn.load_full();
        let mut conn = ConnectionManager::clone(&used);
        let call = invocation.invoke_async::<Vec<i64>>(&mut conn);
        let result = match tokio::time::timeout(inner.timeout, call).await {
            Ok(Ok(reply)) => parse(&reply, keys.len()),
            Ok(Err(e)) => Err(StoreError::Backend(Box::new(e))),
            Err(_) => Err(StoreError::TimedOut(inner.timeout)),
        };
        match &result {
            Ok(_) => inner.health.succeeded(),
            Err(e) => {
                inner.health.failed(e);
                if !matches!(e, StoreError::BadReply(_)) {
                    inner.reconnect(&used);
                }
            }
        }
        result
    }
}

impl Store for RedisStore {
    fn check(&self, batch: &Batch) -> Check {
        if let Some(wait) = self.inner.health.skip() {
            return Check::ready(Err(StoreError::Degraded(wait)));
        }
        let prefix = &self.inner.prefix;
        let tag = batch.tag();
        let keys = batch
            .buckets()
            .iter()
            .map(|b| format!("{prefix}{{{tag}}}{}", b.id()))
            .collect();
        let args = batch
            .buckets()
            .iter()
            .flat_map(|b| [b.gcra().interval(), b.gcra().burst()])
            .collect();
        Check::pending(Self::run(self.inner.clone(), keys, args))
    }
}

/// `{allowed, then per bucket: admits, remaining, reset_after, retry_after, tat}`.
fn parse(reply: &[i64], buckets: usize) -> Result<Verdict, StoreError> {
    if reply.len() != 1 + REPLY_FIELDS * buckets {
        return Err(StoreError::BadReply(format!(
            "{} numbers for {buckets} buckets",
            reply.len()
        )));
    }
    let num = |v: i64| u64::try_from(v).map_err(|_| StoreError::BadReply(format!("negative {v}")));
    let outcomes = reply[1..]
        .chunks_exact(REPLY_FIELDS)
        .map(|f| {
            Ok(Outcome {
                allowed: f[0] == 1,
                remaining: num(f[1])?,
                reset_after: num(f[2])?,
                retry_after: num(f[3])?,
                tat: num(f[4])?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Verdict {
        allowed: reply[0] == 1,
        outcomes,
    })
}

// === impl RedisStoreBuilder ===

impl RedisStoreBuilder {
    /// Prefix of every key (default `towergate:rl:`); no `{` or `}`, which
    /// would change the Cluster hash tag.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Longest wait for one decision, connection included (default 50 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Longest wait for one connection attempt in the background (default 1 s).
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

    /// The store. Parses the URL but does not connect: the first decision
    /// does. Fails outside a Tokio runtime, on a bad URL or prefix.
    pub fn build(self) -> Result<RedisStore, BuildError> {
        if self.prefix.contains(['{', '}']) {
            return Err(BuildError::InvalidStore(format!(
                "Redis key prefix {:?} contains a brace",
                self.prefix
            )));
        }
        if self.timeout.is_zero() {
            return Err(BuildError::InvalidStore("Redis timeout is zero".to_owned()));
        }
        // The connection manager spawns its reconnect task on the current
        // runtime; without one it would panic.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(BuildError::NoRuntime);
        }
        let client = redis::Client::open(self.url.as_str()).map_err(BuildError::Redis)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.timeout))
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
            .map_err(BuildError::Redis)?;
        Ok(RedisStore {
            inner: Arc::new(Inner {
                conn: ArcSwap::from_pointee(conn),
                client,
                config,
                script: Script::new(SCRIPT),
                prefix: self.prefix,
                timeout: self.timeout,
                health: Health::new(duration_micros(self.probe_interval)),
            }),
        })
    }
}

impl Inner {
    /// Replaces the connection `used` by a failed call with a new one
    /// (connected lazily, by the next call): the connection manager
    /// reconnects by itself only when the socket breaks, not when calls
    /// time out on a half-open one or a demoted primary answers
    /// `READONLY`. Calls that failed together on the same connection
    /// replace it once.
    fn reconnect(&self, used: &Arc<ConnectionManager>) {
        let Ok(fresh) =
            ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
        else {
            return;
        };
        let previous = self.conn.compare_and_swap(used, Arc::new(fresh));
        if Arc::ptr_eq(&previous, used) {
            tracing::debug!("redis rate-limit store: a new connection for the next call");
        }
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
    fn skip(&self) -> Option<Duration> {
        if !self.degraded.load(Ordering::Acquire) {
            return None;
        }
        let now = self.now();
        let next = self.next_probe.load(Ordering::Acquire);
        if now < next {
            return Some(Duration::from_micros(next - now));
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
    fn parses_the_script_reply() {
        let v = parse(&[0, 1, 3, 100, 0, 900, 0, 0, 500, 20, 1_500], 2).unwrap();
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
        assert!(matches!(parse(&[1, 1], 1), Err(StoreError::BadReply(_))));
        assert!(matches!(
            parse(&[1, 1, -1, 0, 0, 0], 1),
            Err(StoreError::BadReply(_))
        ));
    }

    #[test]
    fn one_probe_per_interval_while_degraded() {
        let h = Health::new(60_000_000);
        assert_eq!(h.skip(), None, "healthy: always call");
        h.failed(&StoreError::TimedOut(Duration::from_millis(1)));
        assert!(h.skip().is_some(), "degraded: skip until the probe time");
        // Pretend the probe time has come.
        h.next_probe.store(0, Ordering::Release);
        assert_eq!(h.skip(), None, "the first caller probes");
        assert!(h.skip().is_some(), "the others do not");
        h.succeeded();
        assert_eq!(h.skip(), None);
        assert_eq!(h.failures.load(Ordering::Relaxed), 1);
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
