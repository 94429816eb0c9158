//! [`RateLimitLayer`] and its builder, and the decision logic its services
//! share.

use std::any::Any;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::{HeaderValue, Response, StatusCode, header};
use tower::Layer;
use towergate_core::Problem;
use towergate_core::body::ResponseBody;

use crate::error::{BuildError, RateLimited, StoreError, StoreUnavailable};
use crate::gcra::{Gcra, Outcome, Verdict};
use crate::headers::{Report, policy_item, quota_window, rate_prefix, seconds_ceil};
use crate::key::{Key, MissingKey};
use crate::limit::{FailurePolicy, Limit};
use crate::service::RateLimit;
use crate::store::{Batch, Bucket, MemoryStore, Store};

/// Applies rate limits and quotas to requests: see the [crate docs](crate).
///
/// Built with [`RateLimitLayer::builder`]. Cheap to clone; clones share the
/// store, so every route or service wrapped by clones of one layer counts
/// into the same buckets.
#[derive(Clone, Debug)]
#[must_use]
pub struct RateLimitLayer {
    pub(crate) shared: Arc<Shared>,
}

/// Builds a [`RateLimitLayer`].
///
/// ```
/// use http::StatusCode;
/// use towergate_ratelimit::{Key, Limit, MemoryStore, MissingKey, RateLimitLayer};
///
/// let layer = RateLimitLayer::builder()
///     .limit(Limit::per_second(10).burst(20).name("per-ip"))
///     .limit(Limit::per_day(10_000).name("daily"))
///     .key(Key::ClientIp)
///     .store(MemoryStore::new())
///     .on_missing_key(MissingKey::Refuse(StatusCode::UNAUTHORIZED))
///     .legacy_headers(true)
///     .build()
///     .unwrap();
/// # let _ = layer;
/// ```
#[derive(Debug)]
#[must_use]
pub struct RateLimitLayerBuilder {
    limits: Vec<Limit>,
    key: Option<Key>,
    store: Option<Arc<dyn Store>>,
    /// The store again, when it is a [`MemoryStore`].
    memory: Option<MemoryStore>,
    fallback: Option<MemoryStore>,
    scope: String,
    missing: MissingKey,
    legacy: bool,
}

/// The compiled configuration every clone and service shares.
pub(crate) struct Shared {
    limits: Box<[Compiled]>,
    store: Arc<dyn Store>,
    /// The store again, when it is a [`MemoryStore`]: layers of one limit
    /// then decide in `call` without a `Batch`, a `Verdict` or dynamic
    /// dispatch, all of which a memory store has no use for.
    memory: Option<MemoryStore>,
    /// The local limiter of fail-open limits while the store is down.
    fallback: MemoryStore,
    scope: Arc<str>,
    /// `<scope>|`, the start of every batch tag.
    tag_prefix: Box<str>,
    /// Every limit counts by the same key: the key value is the store's
    /// co-location tag, so keys spread over a Redis Cluster.
    uniform: bool,
    missing: MissingKey,
    legacy: bool,
    policy: HeaderValue,
}

struct Compiled {
    name: Arc<str>,
    /// `<scope>:<name>:`, the start of its bucket ids.
    id_prefix: Box<str>,
    /// The start of its `RateLimit` member.
    rate_prefix: Box<[u8]>,
    gcra: Gcra,
    key: Key,
    on_failure: FailurePolicy,
}

/// What the layer does with a request.
#[derive(Debug)]
pub(crate) enum Decision {
    Allow(Option<Report>),
    Refuse(Box<Refusal>),
}

/// A refusal, ready to become a response of any body type.
#[derive(Debug)]
pub(crate) struct Refusal {
    problem: Problem,
    report: Option<Report>,
    limited: Option<RateLimited>,
    unavailable: Option<StoreUnavailable>,
}

// === impl RateLimitLayer ===

impl RateLimitLayer {
    /// A builder with no limits, no default key, a [`MemoryStore`], missing
    /// keys refused with `400`, and no legacy headers.
    pub fn builder() -> RateLimitLayerBuilder {
        RateLimitLayerBuilder {
            limits: Vec::new(),
            key: None,
            store: None,
            memory: None,
            fallback: None,
            scope: "default".to_owned(),
            missing: MissingKey::Refuse(StatusCode::BAD_REQUEST),
            legacy: false,
        }
    }

    /// The store the layer decides with.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    /// The local limiter that fail-open limits use while the store fails.
    pub fn fallback(&self) -> &MemoryStore {
        &self.shared.fallback
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, self.clone())
    }
}

// === impl RateLimitLayerBuilder ===

impl RateLimitLayerBuilder {
    /// Adds a limit; every limit is checked on every request.
    pub fn limit(mut self, limit: Limit) -> Self {
        self.limits.push(limit);
        self
    }

    /// The key of limits that do not set their own.
    pub fn key(mut self, key: Key) -> Self {
        self.key = Some(key);
        self
    }

    /// The store (default: a new [`MemoryStore`]); pass a
    /// [`RedisStore`](crate::RedisStore) to share limits between instances.
    pub fn store(mut self, store: impl Store) -> Self {
        self.memory = (&store as &dyn Any).downcast_ref::<MemoryStore>().cloned();
        self.store = Some(Arc::new(store));
        self
    }

    /// The store, already shared.
    pub fn shared_store(mut self, store: Arc<dyn Store>) -> Self {
        self.memory = None;
        self.store = Some(store);
        self
    }

    /// The local limiter for fail-open limits while the store fails
    /// (default: a new [`MemoryStore`]).
    pub fn fallback(mut self, fallback: MemoryStore) -> Self {
        self.fallback = Some(fallback);
        self
    }

    /// A namespace for this layer's buckets in the store (default
    /// `"default"`): layers with the same scope and limit names count into
    /// the same buckets, as one limit across routes; give layers distinct
    /// scopes to count separately. Same characters as limit names.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = scope.into();
        self
    }

    /// What to do when a request has no key (default: refuse with `400`).
    pub fn on_missing_key(mut self, missing: MissingKey) -> Self {
        self.missing = missing;
        self
    }

    /// Also send `X-RateLimit-Limit`, `-Remaining` and `-Reset` (default off).
    pub fn legacy_headers(mut self, enabled: bool) -> Self {
        self.legacy = enabled;
        self
    }

    /// Checks every setting and compiles the layer.
    pub fn build(self) -> Result<RateLimitLayer, BuildError> {
        if self.limits.is_empty() {
            return Err(BuildError::NoLimits);
        }
        check_name(&self.scope)?;
        if let MissingKey::Refuse(status) = self.missing
            && !status.is_client_error()
        {
            return Err(BuildError::InvalidStatus(status));
        }
        let mut names = HashSet::new();
        let mut limits = Vec::with_capacity(self.limits.len());
        let mut policy = Vec::with_capacity(self.limits.len());
        for limit in self.limits {
            let name: Arc<str> = match &limit.name {
                Some(name) => name.clone(),
                None => limit.default_name().into(),
            };
            check_name(&name)?;
            if !names.insert(name.clone()) {
                return Err(BuildError::DuplicateName(name.to_string()));
            }
            let Some(gcra) = limit.gcra() else {
                return Err(BuildError::InvalidLimit {
                    limit: name.to_string(),
                    reason: "count, period and burst must be positive, at most one request per \
                             microsecond, and burst x period / count at most 35 years"
                        .to_owned(),
                });
            };
            let Some(key) = limit.key.clone().or_else(|| self.key.clone()) else {
                return Err(BuildError::NoKey(name.to_string()));
            };
            key.validate().map_err(|reason| BuildError::InvalidKey {
                limit: name.to_string(),
                reason,
            })?;
            policy.push(policy_item(
                &name,
                quota_window(
                    limit.count,
                    crate::clock::duration_micros(limit.period),
                    limit.burst.unwrap_or(limit.count),
                ),
            ));
            limits.push(Compiled {
                id_prefix: format!("{}:{name}:", self.scope).into(),
                rate_prefix: rate_prefix(&name),
                name,
                gcra,
                key,
                on_failure: limit.on_store_failure,
            });
        }
        let policy = policy.join(", ");
        let policy =
            HeaderValue::from_str(&policy).map_err(|_| BuildError::InvalidName(policy.clone()))?;
        let uniform = limits.windows(2).all(|w| w[0].key == w[1].key);
        let (store, memory) = match self.store {
            Some(store) => (store, self.memory),
            None => {
                let memory = MemoryStore::new();
                (Arc::new(memory.clone()) as Arc<dyn Store>, Some(memory))
            }
        };
        Ok(RateLimitLayer {
            shared: Arc::new(Shared {
                limits: limits.into(),
                store,
                memory,
                fallback: self.fallback.unwrap_or_default(),
                tag_prefix: format!("{}|", self.scope).into(),
                scope: self.scope.into(),
                uniform,
                missing: self.missing,
                legacy: self.legacy,
                policy,
            }),
        })
    }
}

/// Names go into sf-strings and store keys: keep them to a safe token.
fn check_name(name: &str) -> Result<(), BuildError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(BuildError::InvalidName(name.to_owned()))
    }
}

// === impl Shared ===

impl Shared {
    pub(crate) fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// The decision on this request when it can be made at once, without
    /// a [`Batch`]: one limit in a [`MemoryStore`], the common case.
    /// `None` otherwise: then [`batch`](Self::batch) and the store decide.
    pub(crate) fn decide_at_once(&self, parts: &Parts) -> Option<Decision> {
        let (Some(memory), [limit]) = (&self.memory, &*self.limits) else {
            return None;
        };
        let id = match self.bucket_id(parts, limit, None) {
            Ok(id) => id,
            Err(refusal) => return Some(Decision::Refuse(refusal)),
        };
        // What `conclude` makes of a verdict of one outcome: a memory store
        // never fails, and the only limit is the tightest.
        let outcome = memory.decide_one(&id, limit.gcra);
        Some(self.answer(limit, outcome.allowed, &outcome, outcome.retry_after))
    }

    /// The buckets of this request, or the refusal of a request without a key.
    ///
    /// A bucket id is `<scope>:<limit>:<part>`, where the key part is
    /// `=<key value>`, or `*` for the shared bucket of key-less requests:
    /// the two can never collide. A bucket's tag must be a function of its
    /// id: with one key for all limits it is `<scope>|<part>` (spread over
    /// Cluster slots), otherwise `<scope>|` (one slot per layer). Never
    /// empty, thanks to the `|`, so the `{}` is always a real hash tag.
    pub(crate) fn batch(&self, parts: &Parts) -> Result<Batch, Box<Refusal>> {
        // Built in place, one allocation per id and one for the tag: this
        // runs on every request.
        let (first, rest) = match &*self.limits {
            [first, rest @ ..] => (first, rest),
            [] => return Ok(Batch::new(self.tag_prefix.to_string(), Vec::new())),
        };
        let id = self.bucket_id(parts, first, None)?;
        let part = &id[first.id_prefix.len()..];
        let uniform = self.uniform.then_some(part);
        let mut tag = String::with_capacity(self.tag_prefix.len() + uniform.map_or(0, str::len));
        tag.push_str(&self.tag_prefix);
        tag.push_str(uniform.unwrap_or_default());
        if rest.is_empty() {
            return Ok(Batch::one(tag, Bucket::new(id, first.gcra)));
        }
        let mut buckets = Vec::with_capacity(self.limits.len());
        for limit in rest {
            buckets.push(Bucket::new(
                self.bucket_id(parts, limit, uniform)?,
                limit.gcra,
            ));
        }
        // The first goes in last: `uniform` borrows its id until here.
        buckets.insert(0, Bucket::new(id, first.gcra));
        Ok(Batch::new(tag, buckets))
    }

    /// `<scope>:<limit>:` and the key part: `uniform` if given (already
    /// extracted), else this limit's.
    fn bucket_id(
        &self,
        parts: &Parts,
        limit: &Compiled,
        uniform: Option<&str>,
    ) -> Result<String, Box<Refusal>> {
        // Room for an IPv6 address without growing.
        let mut id = String::with_capacity(limit.id_prefix.len() + 48);
        id.push_str(&limit.id_prefix);
        if let Some(part) = uniform {
            id.push_str(part);
            return Ok(id);
        }
        id.push('=');
        if !limit.key.extract_into(parts, &mut id) {
            match self.missing {
                MissingKey::Shared => {
                    id.truncate(limit.id_prefix.len());
                    id.push('*');
                }
                MissingKey::Refuse(status) => {
                    return Err(Box::new(Refusal::missing_key(status, limit)));
                }
            }
        }
        Ok(id)
    }

    /// Turns a store's answer into what to do with the request, applying
    /// the failure policies when the store could not answer.
    pub(crate) fn conclude(&self, result: Result<Verdict, StoreError>, batch: &Batch) -> Decision {
        let verdict = match result {
            Ok(verdict) if verdict.outcomes.len() == self.limits.len() => verdict,
            other => {
                let error = match other {
                    Err(error) => error,
                    Ok(_) => StoreError::BadReply("one outcome per limit expected".to_owned()),
                };
                if let Some(limit) = self
                    .limits
                    .iter()
                    .find(|l| l.on_failure == FailurePolicy::FailClosed)
                {
                    tracing::debug!(%error, limit = %limit.name, "rate-limit store failed; failing closed");
                    let retry = match error {
                        StoreError::Degraded(wait) => wait,
                        _ => Duration::from_secs(1),
                    };
                    return Decision::Refuse(Box::new(Refusal::unavailable(limit, retry)));
                }
                tracing::debug!(%error, "rate-limit store failed; deciding with the local limiter");
                self.fallback.decide(batch)
            }
        };
        let Some(i) = verdict.tightest() else {
            return Decision::Allow(None);
        };
        self.answer(
            &self.limits[i],
            verdict.allowed,
            &verdict.outcomes[i],
            verdict.retry_after(),
        )
    }

    /// The decision, reporting `limit`'s `outcome` (the tightest), with
    /// `retry_after` µs to wait on a refusal.
    fn answer(
        &self,
        limit: &Compiled,
        allowed: bool,
        outcome: &Outcome,
        retry_after: u64,
    ) -> Decision {
        let report = Report::new(
            self.policy.clone(),
            &limit.rate_prefix,
            limit.gcra,
            outcome,
            self.legacy,
        );
        if allowed {
            Decision::Allow(Some(report))
        } else {
            let retry = Duration::from_micros(retry_after);
            Decision::Refuse(Box::new(Refusal::limited(limit, retry, report)))
        }
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limits", &self.limits)
            .field("store", &self.store)
            .field("scope", &self.scope)
            .field("missing", &self.missing)
            .field("legacy", &self.legacy)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Compiled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limit")
            .field("name", &self.name)
            .field("gcra", &self.gcra)
            .field("key", &self.key)
            .field("on_failure", &self.on_failure)
            .finish()
    }
}

// === impl Refusal ===

impl Refusal {
    fn limited(limit: &Compiled, retry: Duration, report: Report) -> Self {
        let secs = retry_after_secs(retry);
        let problem = Problem::new(StatusCode::TOO_MANY_REQUESTS)
            .detail(format!(
                "rate limit \"{}\" exceeded; retry in {secs} s",
                limit.name
            ))
            .extension("limit", &*limit.name)
            .extension("retry_after", secs)
            .header(header::RETRY_AFTER, secs.into());
        Self {
            problem,
            report: Some(report),
            limited: Some(RateLimited::new(limit.name.clone(), retry)),
            unavailable: None,
        }
    }

    fn unavailable(limit: &Compiled, retry: Duration) -> Self {
        // No store error text here: 5xx bodies never carry internals; the
        // store logs them.
        let problem = Problem::new(StatusCode::SERVICE_UNAVAILABLE)
            .detail("rate limiting is temporarily unavailable")
            .header(header::RETRY_AFTER, retry_after_secs(retry).into());
        Self {
            problem,
            report: None,
            limited: None,
            unavailable: Some(StoreUnavailable::new(limit.name.clone())),
        }
    }

    fn missing_key(status: StatusCode, limit: &Compiled) -> Self {
        let problem = Problem::new(status)
            .detail(format!("the request has no {} to rate-limit by", limit.key))
            .extension("limit", &*limit.name);
        Self {
            problem,
            report: None,
            limited: None,
            unavailable: None,
        }
    }

    /// The answer; `request` names the refused request's id as the
    /// problem's `instance`, as every problem of the gateway does.
    pub(crate) fn into_response<B>(self, request: &http::Extensions) -> Response<ResponseBody<B>> {
        let problem = match request.get::<towergate_core::RequestId>() {
            Some(id) => self.problem.instance_if_absent(id.as_str()),
            None => self.problem,
        };
        let mut rsp = problem.into_response();
        if let Some(report) = self.report {
            report.apply(rsp.headers_mut());
        }
        if let Some(limited) = self.limited {
            rsp.extensions_mut().insert(limited);
        }
        if let Some(unavailable) = self.unavailable {
            rsp.extensions_mut().insert(unavailable);
        }
        rsp
    }
}

/// `Retry-After` in whole seconds, rounded up, at least 1.
fn retry_after_secs(retry: Duration) -> u64 {
    seconds_ceil(crate::clock::duration_micros(retry)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_checks_everything() {
        let ok = || RateLimitLayer::builder().key(Key::Global);
        assert!(matches!(
            RateLimitLayer::builder().build(),
            Err(BuildError::NoLimits)
        ));
        assert!(matches!(
            RateLimitLayer::builder()
                .limit(Limit::per_second(1))
                .build(),
            Err(BuildError::NoKey(_))
        ));
        assert!(matches!(
            ok().limit(Limit::per_second(0)).build(),
            Err(BuildError::InvalidLimit { .. })
        ));
        assert!(matches!(
            ok().limit(Limit::per_second(1).burst(0)).build(),
            Err(BuildError::InvalidLimit { .. })
        ));
        assert!(
            ok().limit(Limit::per_second(2_000_000)).build().is_ok(),
            "intervals round up to 1 µs"
        );
        assert!(matches!(
            ok().limit(Limit::new(1, Duration::from_secs(3_600 * 24 * 366 * 40)))
                .build(),
            Err(BuildError::InvalidLimit { .. })
        ));
        assert!(matches!(
            ok().limit(Limit::per_second(1).name("a b")).build(),
            Err(BuildError::InvalidName(_))
        ));
        assert!(matches!(
            ok().limit(Limit::per_second(1).name("\"")).build(),
            Err(BuildError::InvalidName(_))
        ));
        assert!(matches!(
            ok().limit(Limit::per_second(1))
                .limit(Limit::per_second(1))
                .build(),
            Err(BuildError::DuplicateName(_))
        ));
        assert!(matches!(
            ok().limit(Limit::per_second(1))
                .on_missing_key(MissingKey::Refuse(StatusCode::INTERNAL_SERVER_ERROR))
                .build(),
            Err(BuildError::InvalidStatus(_))
        ));
        assert!(matches!(
            ok().limit(Limit::per_second(1).key(Key::ClientNet { v4: 40, v6: 64 }))
                .build(),
            Err(BuildError::InvalidKey { .. })
        ));
        assert!(matches!(
            ok().limit(Limit::per_second(1)).scope("").build(),
            Err(BuildError::InvalidName(_))
        ));
        let layer = ok()
            .limit(Limit::per_second(10).burst(20))
            .limit(Limit::per_hour(1_000))
            .build()
            .unwrap();
        assert_eq!(
            layer.shared.policy,
            "\"10-per-1s\";q=20;w=2, \"1000-per-3600s\";q=1000;w=3600"
        );
    }

    #[test]
    fn bucket_ids_and_tags() {
        let h = || Key::header(http::HeaderName::from_static("x-k"));
        let (parts, ()) = http::Request::get("/")
            .header("x-k", "alice")
            .body(())
            .unwrap()
            .into_parts();

        let uniform = RateLimitLayer::builder()
            .key(h())
            .scope("api")
            .limit(Limit::per_second(1).name("a"))
            .limit(Limit::per_hour(1).name("b"))
            .build()
            .unwrap();
        let batch = uniform.shared.batch(&parts).unwrap();
        assert_eq!(batch.tag(), "api|=alice");
        let ids: Vec<&str> = batch.buckets().iter().map(|b| b.id()).collect();
        assert_eq!(ids, ["api:a:=alice", "api:b:=alice"]);

        let mixed = RateLimitLayer::builder()
            .key(h())
            .limit(Limit::per_second(1).name("a"))
            .limit(Limit::per_hour(1).name("all").key(Key::Global))
            .on_missing_key(MissingKey::Shared)
            .build()
            .unwrap();
        let batch = mixed.shared.batch(&parts).unwrap();
        assert_eq!(batch.tag(), "default|");
        let ids: Vec<&str> = batch.buckets().iter().map(|b| b.id()).collect();
        assert_eq!(ids, ["default:a:=alice", "default:all:="]);

        let (bare, ()) = http::Request::get("/").body(()).unwrap().into_parts();
        let batch = mixed.shared.batch(&bare).unwrap();
        assert_eq!(batch.buckets()[0].id(), "default:a:*");
    }
}
