//! [`Balance`]: sends each request to an endpoint of a [`Pool`], with
//! retries, timeouts and hedging.

use std::fmt;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{Either, select};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use parking_lot::Mutex;
use tower::Service;
use towergate_core::{BoxError, TunnelHold};

use crate::algorithm::{BudgetWindow, LatencyHistogram, Random, ThreadRandom};
use crate::body::{Held, ReplaySource, ResponseBody, RetryBody};
use crate::classify::{Classify, DefaultClassify, Outcome};
use crate::error::{BodyConsumed, BuildError, Timeout};
use crate::future::ResponseFuture;
use crate::pool::{Load, Picked, Pool, Slot, now};
use crate::retry::{HEDGE_MIN_SAMPLES, Hedge, HedgeDelay, RetryPolicy};

/// Sends each request to an endpoint of a [`Pool`]: picks one, retries
/// failures on another within a budget, enforces per-attempt and overall
/// timeouts, and may hedge slow reads.
///
/// A `Balance` is the per-route half: several routes can share one pool
/// (its endpoints, load and health) with their own retry and timeout
/// policies. It has no inner service (the pool's endpoints are its inner
/// services), so it is built from a pool rather than as a layer.
///
/// It is always ready; refusals (open circuit, no healthy endpoint) are
/// errors from the future, at once. Errors are `BoxError`s holding
/// [`Overloaded`](crate::error::Overloaded),
/// [`NoHealthyEndpoint`](crate::error::NoHealthyEndpoint),
/// [`Timeout`](crate::error::Timeout), or the last attempt's own error.
/// When every attempt got a failure response (a 503), the last one is
/// returned as it is.
///
/// A request counts in flight (against the
/// [`CircuitBreaker`](crate::CircuitBreaker) limits, and as its endpoint's
/// load) until its response body ends or is dropped, or, for a `101` that
/// opened a tunnel, until the tunnel closes; see [`ResponseBody`].
///
/// Cloning is cheap: clones share the pool, the policy and the budget.
///
/// See the [crate docs](crate) for an example.
pub struct Balance<S, C = DefaultClassify> {
    pool: Pool<S>,
    route: Arc<Route<C>>,
}

/// Settings for a [`Balance`]; see [`Balance::builder`].
#[must_use]
pub struct BalanceBuilder<S, C> {
    pool: Pool<S>,
    classify: C,
    retry: RetryPolicy,
    timeout: Option<Duration>,
    attempt_timeout: Option<Duration>,
    hedge: Option<Hedge>,
    buffer_limit: usize,
    on_retry: Option<OnRetry>,
}

/// Called once per retry (and per hedge) the balance sends.
type OnRetry = Arc<dyn Fn() + Send + Sync>;

struct Route<C> {
    classify: C,
    retry: RetryPolicy,
    budget: Option<Mutex<BudgetWindow>>,
    timeout: Option<Duration>,
    attempt_timeout: Option<Duration>,
    hedge: Option<Hedge>,
    latencies: LatencyHistogram,
    buffer_limit: usize,
    on_retry: Option<OnRetry>,
}

type Attempted<RB> = (Result<Response<ResponseBody<RB>>, BoxError>, Outcome);

// === impl Balance ===

impl<S> Balance<S> {
    /// Starts building a balance over `pool`.
    pub fn builder(pool: Pool<S>) -> BalanceBuilder<S, DefaultClassify> {
        BalanceBuilder {
            pool,
            classify: DefaultClassify,
            retry: RetryPolicy::default(),
            timeout: None,
            attempt_timeout: None,
            hedge: None,
            buffer_limit: 0,
            on_retry: None,
        }
    }

    /// A balance with the default policy: [`RetryPolicy::default`], no
    /// timeouts of its own, no hedging, default classification.
    pub fn new(pool: Pool<S>) -> Self {
        Self {
            pool,
            route: Arc::new(Route {
                classify: DefaultClassify,
                retry: RetryPolicy::default(),
                budget: RetryPolicy::default()
                    .budget
                    .map(|b| Mutex::new(BudgetWindow::new(b.ttl, b.min_per_sec, b.ratio, now()))),
                timeout: None,
                attempt_timeout: None,
                hedge: None,
                latencies: LatencyHistogram::default(),
                buffer_limit: 0,
                on_retry: None,
            }),
        }
    }
}

impl<S, C> Balance<S, C> {
    /// The pool it sends to.
    pub fn pool(&self) -> &Pool<S> {
        &self.pool
    }

    /// Retries (and hedges) left in the budget now; `None` without a budget.
    pub fn budget_left(&self) -> Option<f64> {
        self.route.budget.as_ref().map(|b| b.lock().balance(now()))
    }
}

impl<S, C> Clone for Balance<S, C> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            route: self.route.clone(),
        }
    }
}

impl<S, C> fmt::Debug for Balance<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balance")
            .field("pool", &self.pool)
            .field("retry", &self.route.retry)
            .field("timeout", &self.route.timeout)
            .field("attempt_timeout", &self.route.attempt_timeout)
            .field("hedge", &self.route.hedge)
            .field("buffer_limit", &self.route.buffer_limit)
            .finish_non_exhaustive()
    }
}

impl<S, C, B, RB> Service<Request<B>> for Balance<S, C>
where
    S: Service<Request<RetryBody<B>>, Response = Response<RB>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    RB: Send + 'static,
    C: Classify,
{
    type Response = Response<ResponseBody<RB>>;
    type Error = BoxError;
    type Future = ResponseFuture<Response<ResponseBody<RB>>>;

    /// Always ready: endpoints are chosen, and refusals made, per request.
    #[inline]
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let admission = match self.pool.admit() {
            Ok(a) => a,
            Err(e) => return ResponseFuture::rejected(e),
        };
        let pool = self.pool.clone();
        let route = self.route.clone();
        // The deadline is kept inside, by each wait, rather than by
        // dropping the whole request when it passes: an attempt it cuts
        // short must be recorded as a timeout of its endpoint, or one that
        // accepts and never answers is never ejected when the deadline is
        // shorter than the attempt's own timeout.
        let deadline = route.timeout.and_then(Deadline::after);
        ResponseFuture::inner(async move {
            // Admitted while the attempts run, then for as long as the
            // response lasts.
            let rsp = dispatch(pool, route, req, deadline).await?;
            Ok(hand_on(rsp, admission))
        })
    }
}

/// Makes the response carry the request's counts to its end: in its body,
/// or, for a `101` that opened a tunnel (its [`TunnelHold`]), in the tunnel,
/// which is the endpoint's work until it closes (its body is empty and
/// goes at once).
fn hand_on<RB>(
    mut rsp: Response<ResponseBody<RB>>,
    admission: Option<Load>,
) -> Response<ResponseBody<RB>> {
    let tunnel = if rsp.status() == StatusCode::SWITCHING_PROTOCOLS {
        rsp.extensions().get::<TunnelHold>().cloned()
    } else {
        None
    };
    let held = rsp.body_mut().held_mut();
    match tunnel {
        Some(hold) => hold.hold(Box::new(Held {
            endpoint: held.endpoint.take(),
            request: admission,
        })),
        None => held.request = admission,
    }
    rsp
}

/// The whole request's deadline ([`BalanceBuilder::timeout`]).
#[derive(Clone, Copy, Debug)]
struct Deadline {
    at: tokio::time::Instant,
    after: Duration,
}

impl Deadline {
    /// `None` when `after` is too far off to be represented: no deadline.
    fn after(after: Duration) -> Option<Self> {
        let at = tokio::time::Instant::now().checked_add(after)?;
        Some(Self { at, after })
    }

    fn passed(&self) -> bool {
        tokio::time::Instant::now() >= self.at
    }

    fn error(&self) -> BoxError {
        Timeout::request(self.after).into()
    }
}

/// `f`, failed with the request's [`Timeout`] if the deadline passes first.
async fn within<T>(
    deadline: Option<Deadline>,
    f: impl Future<Output = Result<T, BoxError>>,
) -> Result<T, BoxError> {
    match deadline {
        None => f.await,
        Some(d) => tokio::time::timeout_at(d.at, f)
            .await
            .unwrap_or_else(|_| Err(d.error())),
    }
}

/// One request: attempts until one succeeds or no retry is allowed.
async fn dispatch<S, C, B, RB>(
    pool: Pool<S>,
    route: Arc<Route<C>>,
    req: Request<B>,
    deadline: Option<Deadline>,
) -> Result<Response<ResponseBody<RB>>, BoxError>
where
    S: Service<Request<RetryBody<B>>, Response = Response<RB>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    RB: Send + 'static,
    C: Classify,
{
    let (parts, body) = req.into_parts();
    let hash = pool.request_hash(&parts);
    let method_allows = route.retry.method_allows(&parts.method);
    let body = if route.buffer_limit > 0 && route.retry.max_retries > 0 && method_allows {
        within(deadline, ReplaySource::buffered(body, route.buffer_limit)).await?
    } else {
        ReplaySource::streaming(body)
    };
    route.deposit();
    let hedge = route.hedge.is_some() && is_safe_read(&parts) && body.is_replayable();

    let mut tried: Vec<Arc<Slot<S>>> = Vec::new();
    let mut picked = pool.pick(hash, &[])?;
    let Some(mut attempt_body) = body.attempt() else {
        picked.release();
        return Err(BodyConsumed.into());
    };
    let mut retries = 0u32;
    loop {
        tried.push(picked.slot.clone());
        let req = Request::from_parts(parts.clone(), attempt_body);
        let (result, outcome) = if hedge && retries == 0 {
            let sent = tried.len();
            let done = hedged(
                &pool, &route, picked, req, hash, &body, &parts, &mut tried, deadline,
            )
            .await;
            if tried.len() > sent {
                // The hedge was an extra attempt: it counts as a retry, so
                // a hedged request makes at most `max_retries + 1` attempts
                // like any other (2 with `max_retries: 0`: the hedge).
                retries += 1;
            }
            done
        } else {
            attempt(&route, picked, req, deadline).await
        };

        // A retry goes to an endpoint this request has not tried: with
        // none left (a pool of one, or all tried) there is no retry, and
        // no back-off spent waiting for one.
        let retry = outcome.is_failure()
            && retries < route.retry.max_retries
            && route.retry.on.matches(outcome)
            && (method_allows || outcome == Outcome::ConnectFailure)
            && body.attempt().is_some()
            && !deadline.is_some_and(|d| d.passed())
            && pool.has_untried(&tried);
        if !retry {
            return result;
        }
        if !route.budget_left_now() {
            tracing::debug!(pool = %pool.name(), ?outcome, "retry budget exhausted: not retrying");
            return result;
        }
        let delay = route.retry.backoff.delay(retries, ThreadRandom.unit());
        if !delay.is_zero() {
            let wait = async {
                tokio::time::sleep(delay).await;
                Ok(())
            };
            within(deadline, wait).await?;
        }
        // Only now is the retry sure to happen, so only now is it spent
        // from the budget and counted: the metric counts retries sent.
        let Ok(next) = pool.pick(hash, &tried) else {
            // No untried endpoint takes traffic: the answer is the failure
            // that was to be retried.
            return result;
        };
        let Some(next_body) = body.attempt() else {
            next.release();
            return result;
        };
        if !route.withdraw() {
            next.release();
            tracing::debug!(pool = %pool.name(), ?outcome, "retry budget exhausted: not retrying");
            return result;
        }
        tracing::debug!(pool = %pool.name(), ?outcome, retry = retries + 1, "retrying on another endpoint");
        if let Some(f) = &route.on_retry {
            f();
        }
        picked = next;
        attempt_body = next_body;
        retries += 1;
    }
}

/// One attempt on the picked endpoint, classified and recorded.
async fn attempt<S, C, B, RB>(
    route: &Route<C>,
    picked: Picked<S>,
    req: Request<RetryBody<B>>,
    deadline: Option<Deadline>,
) -> Attempted<RB>
where
    S: Service<Request<RetryBody<B>>, Response = Response<RB>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    C: Classify,
{
    if let Some(d) = deadline.filter(Deadline::passed) {
        // Nothing was sent, so nothing to hold against the endpoint.
        picked.release();
        return (Err(d.error()), Outcome::Ignore);
    }
    let mut svc = picked.slot.service().clone();
    let started = now();
    let call = async {
        // Counted as pending only while the service makes us wait.
        let mut waiting = None;
        std::future::poll_fn(|cx| {
            let p = svc.poll_ready(cx);
            if p.is_pending() && waiting.is_none() {
                waiting = Some(picked.pool().enter_pending(&picked.slot));
            }
            p
        })
        .await
        .map_err(Into::into)?;
        drop(waiting);
        svc.call(req).await.map_err(Into::into)
    };
    // The attempt's own timeout, or the request's deadline when that comes
    // first: cut short by either, the attempt is the endpoint's timeout.
    // (A request dropped by its caller drops this attempt unrecorded: the
    // client going away is not the endpoint's fault.)
    let own = route.attempt_timeout.and_then(|t| {
        let at = tokio::time::Instant::now().checked_add(t)?;
        Some((at, Timeout::attempt(t)))
    });
    let request = deadline.map(|d| (d.at, Timeout::request(d.after)));
    let limit = match (own, request) {
        (Some(own), Some(request)) => Some(if request.0 <= own.0 { request } else { own }),
        (own, request) => own.or(request),
    };
    let result = match limit {
        None => call.await,
        Some((at, timeout)) => tokio::time::timeout_at(at, call)
            .await
            .unwrap_or_else(|_| Err(timeout.into())),
    };
    let outcome = match &result {
        Ok(rsp) => route.classify.classify_response(rsp),
        // Our own timeout, whatever the embedder's classifier knows.
        Err(e) if e.is::<Timeout>() => Outcome::Timeout,
        Err(e) => route.classify.classify_error(&**e),
    };
    // A timed-out attempt took this long at least: kept as a lower bound,
    // or the slow tail would be missing from the percentile that hedging
    // waits for. (A failure's time says nothing of an answer's.)
    if route.hedge.is_some() && matches!(outcome, Outcome::Success | Outcome::Timeout) {
        route
            .latencies
            .record(now().saturating_duration_since(started));
    }
    // Latency is taken at the headers; the attempt stays in flight with its
    // response body (a failure's count goes now).
    let load = picked.finish(outcome);
    let result = result.map(|rsp| rsp.map(|body| ResponseBody::new(body, load)));
    (result, outcome)
}

/// The first attempt of a safe read, with a second one on another endpoint
/// if the first is slow; the first good answer wins.
#[allow(clippy::too_many_arguments)]
async fn hedged<S, C, B, RB>(
    pool: &Pool<S>,
    route: &Route<C>,
    picked: Picked<S>,
    req: Request<RetryBody<B>>,
    hash: Option<u64>,
    body: &ReplaySource<B>,
    parts: &Parts,
    tried: &mut Vec<Arc<Slot<S>>>,
    deadline: Option<Deadline>,
) -> Attempted<RB>
where
    S: Service<Request<RetryBody<B>>, Response = Response<RB>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    C: Classify,
{
    let started = now();
    let mut first = pin!(attempt(route, picked, req, deadline));
    let delay = route.hedge_delay();
    match select(first.as_mut(), pin!(tokio::time::sleep(delay))).await {
        Either::Left((done, _)) => return done,
        Either::Right(((), _)) => {}
    }
    if deadline.is_some_and(|d| d.passed()) {
        // No time left for a second attempt; the first ends now.
        return first.await;
    }
    // Never the endpoint already waited on: nothing to hedge with then.
    let Ok(second) = pool.pick(hash, tried) else {
        return first.await;
    };
    let Some(second_body) = body.attempt() else {
        second.release();
        return first.await;
    };
    if !route.withdraw() {
        second.release();
        return first.await;
    }
    tracing::debug!(pool = %pool.name(), after = ?delay, "hedging a slow request on another endpoint");
    if let Some(f) = &route.on_retry {
        f();
    }
    tried.push(second.slot.clone());
    let second = pin!(attempt(
        route,
        second,
        Request::from_parts(parts.clone(), second_body),
        deadline,
    ));
    // The loser is dropped, which cancels it.
    match select(first, second).await {
        Either::Left((done, other)) | Either::Right((done, other)) if done.1.is_failure() => {
            // The failed answer goes now: its endpoint stops counting it
            // while the other attempt is awaited.
            drop(done);
            other.await
        }
        Either::Left((done, _)) => done,
        Either::Right((done, _)) => {
            // The first attempt lost: it took this long at least. Kept as a
            // lower bound, or only the hedges' fast answers would be
            // measured, the percentile would keep falling and hedging grow
            // until it spent the whole retry budget. (A second attempt
            // that loses is not kept: it started late, so its time says
            // little, and the first one's answer was measured.)
            route
                .latencies
                .record(now().saturating_duration_since(started));
            done
        }
    }
}

/// Reads that may be sent twice at once: no side effects, no upgrade.
fn is_safe_read(parts: &Parts) -> bool {
    matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS)
        && !parts.headers.contains_key(http::header::UPGRADE)
}

// === impl Route ===

impl<C> Route<C> {
    fn deposit(&self) {
        if let Some(b) = &self.budget {
            b.lock().deposit(now());
        }
    }

    /// Whether the budget has a retry left, without taking it.
    fn budget_left_now(&self) -> bool {
        self.budget
            .as_ref()
            .is_none_or(|b| b.lock().balance(now()) >= 1.0)
    }

    fn withdraw(&self) -> bool {
        self.budget
            .as_ref()
            .is_none_or(|b| b.lock().try_withdraw(now()))
    }

    fn hedge_delay(&self) -> Duration {
        let Some(h) = &self.hedge else {
            return Duration::MAX;
        };
        let d = match h.delay {
            HedgeDelay::Fixed(d) => d,
            HedgeDelay::Percentile { q, initial } => self
                .latencies
                .quantile(q, HEDGE_MIN_SAMPLES)
                .unwrap_or(initial),
        };
        d.max(h.min_delay)
    }
}

// === impl BalanceBuilder ===

impl<S, C> BalanceBuilder<S, C> {
    /// How attempts are classified (default [`DefaultClassify`]).
    pub fn classify<C2: Classify>(self, classify: C2) -> BalanceBuilder<S, C2> {
        BalanceBuilder {
            pool: self.pool,
            classify,
            retry: self.retry,
            timeout: self.timeout,
            attempt_timeout: self.attempt_timeout,
            hedge: self.hedge,
            buffer_limit: self.buffer_limit,
            on_retry: self.on_retry,
        }
    }

    /// The retry policy (default [`RetryPolicy::default`]).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The whole request's deadline, attempts and back-off included;
    /// expiry fails it with [`Timeout`](crate::error::Timeout). Default none.
    /// An attempt it cuts short is recorded as a [`Outcome::Timeout`] of
    /// its endpoint (for passive health), as its own timeout would be; a
    /// request dropped by its caller is not held against the endpoint.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// Each attempt's deadline (until the response headers); an attempt
    /// that runs out is a [`Outcome::Timeout`], retried if the policy says
    /// so. Default none. Connect timeouts are the endpoint service's.
    pub fn attempt_timeout(mut self, d: Duration) -> Self {
        self.attempt_timeout = Some(d);
        self
    }

    /// Hedges slow safe reads (default off).
    pub fn hedge(mut self, hedge: Hedge) -> Self {
        self.hedge = Some(hedge);
        self
    }

    /// Calls `f` each time a retry (or a hedge) is sent to another endpoint (for a
    /// retries counter: the gateway feeds `towergate_retries_total{route}`).
    pub fn on_retry(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_retry = Some(Arc::new(f));
        self
    }

    /// Buffers request bodies of up to `limit` bytes before the first
    /// attempt, so that retries can send them again (default 0: bodies
    /// stream, and a request is retried only while its body is untouched).
    /// A longer body streams on after the bytes read. Only requests that
    /// the policy may retry are buffered.
    pub fn buffer_requests(mut self, limit: usize) -> Self {
        self.buffer_limit = limit;
        self
    }

    /// Builds the service.
    pub fn build(self) -> Result<Balance<S, C>, BuildError> {
        self.retry.validate()?;
        if let Some(h) = &self.hedge {
            h.validate()?;
        }
        if self.timeout.is_some_and(|t| t.is_zero())
            || self.attempt_timeout.is_some_and(|t| t.is_zero())
        {
            return Err(BuildError::new("balance: timeouts must not be zero"));
        }
        let budget = self
            .retry
            .budget
            .map(|b| Mutex::new(BudgetWindow::new(b.ttl, b.min_per_sec, b.ratio, now())));
        Ok(Balance {
            pool: self.pool,
            route: Arc::new(Route {
                classify: self.classify,
                retry: self.retry,
                budget,
                timeout: self.timeout,
                attempt_timeout: self.attempt_timeout,
                hedge: self.hedge,
                latencies: LatencyHistogram::default(),
                buffer_limit: self.buffer_limit,
                on_retry: self.on_retry,
            }),
        })
    }
}

impl<S, C> fmt::Debug for BalanceBuilder<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalanceBuilder")
            .field("pool", &self.pool)
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("hedge", &self.hedge)
            .field("buffer_limit", &self.buffer_limit)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
