//! The connection pool of one upstream (scheme and authority), written over
//! hyper's connection API.
//!
//! Each [`Proxy`](crate::Proxy) takes its upstream's [`Host`] once, when it
//! is built, so that a request finds its connections without hashing a key
//! (hyper-util's legacy client hashed `(Scheme, Authority)` with SipHash
//! twice per request, and built and rebuilt the request URI).
//!
//! - HTTP/1.1 connections wait in a last-in-first-out stack while idle; a
//!   request takes the most recently used one that is ready, or connects.
//!   A connection goes back as soon as it is ready for the next request,
//!   which for a response read whole with its headers is at once, and
//!   otherwise when its body has been read (a small task waits for that).
//! - One HTTP/2 connection per upstream carries every request, once ALPN
//!   (or [`http2_only`](crate::ClientBuilder::http2_only)) has chosen it.
//! - A request that a reused connection refused before sending anything
//!   (the upstream closed it while idle) is sent again on a new connection.
//! - Idle connections older than the idle timeout are closed by a task
//!   that runs only while the pool holds any.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use http::header::{HOST, TE};
use http::uri::{Authority, Parts, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::MaybeHttpsStream;
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tower::Service;
use towergate_core::BoxError;

use crate::client::{Connector, ProxyBody};

/// What sending a request can fail with, before any classification.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection: TCP, TLS or the connect deadline (a `BoxError` from
    /// [`Connector`]), or the HTTP handshake. Nothing reached the upstream.
    Connect(BoxError),
    /// A new connection refused the request before sending any of it.
    /// Nothing reached the upstream, so it is as safe to retry as a
    /// failed connect.
    Unsent(hyper::Error),
    /// The exchange failed on an established connection.
    Request(hyper::Error),
}

/// The future of one exchange: checkout or connect, send, and the answer's
/// headers.
pub(crate) type SendFuture =
    Pin<Box<dyn Future<Output = Result<Response<Incoming>, SendError>> + Send>>;

/// Pool settings shared by every [`Host`] of a client.
#[derive(Clone)]
pub(crate) struct Settings {
    /// Ordinary requests: HTTP/1.1, or HTTP/2 by ALPN or prior knowledge.
    pub(crate) any: Connector,
    /// Upgrade requests: HTTP/1.1 whatever the upstream prefers.
    pub(crate) http1: Connector,
    pub(crate) http2_only: bool,
    /// HTTP/2 pings: interval, and how long an answer may take.
    pub(crate) http2_keep_alive: Option<(Duration, Duration)>,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_idle: usize,
}

/// The connections to one upstream.
pub(crate) struct Host {
    settings: Settings,
    scheme: Scheme,
    /// `scheme` is `https` (compared once, not per request).
    https: bool,
    authority: Authority,
    /// `scheme://authority/`, what the connector is called with.
    target: Uri,
    state: Mutex<State>,
    /// Wakes the requests waiting for an HTTP/2 connect to end.
    h2_connected: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    /// Ready HTTP/1.1 connections, the most recently used last.
    idle: Vec<Idle>,
    /// The shared HTTP/2 connection, and when it was last used.
    h2: Option<(http2::SendRequest<ProxyBody>, Instant)>,
    /// Whether the task closing expired idle connections is running.
    reaping: bool,
    /// Whether new connections are expected to be HTTP/2: `http2_only`,
    /// or ALPN chose `h2` for the last connection made.
    speaks_h2: bool,
    /// Whether an HTTP/2 connection is being made; others wait for it.
    h2_connecting: bool,
    /// How many of those connects failed, so that their waiters fail too.
    h2_failures: u64,
}

struct Idle {
    tx: http1::SendRequest<ProxyBody>,
    since: Instant,
}

/// A connection taken for one request.
enum Conn {
    Http1(http1::SendRequest<ProxyBody>),
    Http2(http2::SendRequest<ProxyBody>),
}

// === impl Host ===

impl Host {
    pub(crate) fn new(settings: Settings, scheme: Scheme, authority: Authority) -> Self {
        let target = Uri::from_parts({
            let mut p = Parts::default();
            p.scheme = Some(scheme.clone());
            p.authority = Some(authority.clone());
            p.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
            p
        })
        // Scheme, authority and path are all present and valid.
        .unwrap_or_default();
        Self {
            settings,
            https: scheme == Scheme::HTTPS,
            scheme,
            authority,
            target,
            state: Mutex::new(State::default()),
            h2_connected: tokio::sync::Notify::new(),
        }
    }

    /// Whether its connections may turn out HTTP/2 without being asked
    /// to: by ALPN, over TLS.
    pub(crate) fn may_pick_http2(&self) -> bool {
        self.https
    }

    /// Sends `req` (origin-form URI, `Host` set) over a pooled or new
    /// connection. An upgrade request goes over HTTP/1.1.
    ///
    /// `dispatched` is set while the request is in a connection's hands
    /// (and cleared if it comes back unsent): a timeout before that is a
    /// connect timeout, safe to retry elsewhere.
    pub(crate) fn send(
        self: &Arc<Self>,
        req: Request<ProxyBody>,
        upgrade: bool,
        dispatched: Arc<AtomicBool>,
    ) -> SendFuture {
        Box::pin(self.clone().exchange(req, upgrade, dispatched))
    }

    async fn exchange(
        self: Arc<Self>,
        mut req: Request<ProxyBody>,
        upgrade: bool,
        dispatched: Arc<AtomicBool>,
    ) -> Result<Response<Incoming>, SendError> {
        // A request refused unsent by a reused connection is sent again:
        // after one refusal no idle HTTP/1.1 connection is tried (a new
        // one is made), and a new connection's refusal is an error, so
        // this loop ends; `MAX_TRIES` bounds it whatever happens.
        const MAX_TRIES: usize = 3;
        let mut tries = 0;
        loop {
            tries += 1;
            let last = tries >= MAX_TRIES;
            let checked_out = if tries == 1 {
                self.checkout(upgrade)
            } else {
                None
            };
            let (conn, reused) = match checked_out {
                Some(conn) => (conn, true),
                // HTTP/2: share the connection another request is making
                // (after a refusal too: a GOAWAY refuses many at once).
                // The connect and wait futures are boxed: inline, they
                // would make this future several kilobytes, all copied into
                // its box on every request (see `send`).
                None if !upgrade && !last => match Box::pin(self.wait_for_h2()).await? {
                    H2Turn::Shared(conn) => (conn, true),
                    H2Turn::Connect(lead) => {
                        let conn = Box::pin(self.connect(false)).await;
                        if conn.is_err()
                            && let Some(lead) = &lead
                        {
                            lead.failed();
                        }
                        // Wakes the requests that waited for this connect.
                        drop(lead);
                        (conn?, false)
                    }
                },
                None => (Box::pin(self.connect(upgrade)).await?, false),
            };
            let reused = reused && !last;
            match conn {
                Conn::Http1(mut tx) => {
                    // The request may have been prepared for HTTP/2 (an
                    // HTTP/2-only client, or a retry after the HTTP/2
                    // connection refused it): HTTP/1.1 sends origin form.
                    if req.version() == Version::HTTP_2 {
                        *req.version_mut() = Version::HTTP_11;
                    }
                    // `TE: trailers` was kept for HTTP/2, which ALPN may
                    // have chosen; HTTP/1.1 did, where TE is hop-by-hop.
                    if self.https {
                        req.headers_mut().remove(TE);
                    }
                    origin_form(&mut req);
                    dispatched.store(true, Ordering::Relaxed);
                    match tx.try_send_request(req).await {
                        Ok(rsp) => {
                            // A 101 hands the connection over to the upgrade.
                            if rsp.status() != StatusCode::SWITCHING_PROTOCOLS {
                                self.checkin(tx);
                            }
                            return Ok(rsp);
                        }
                        Err(mut e) => match e.take_message() {
                            Some(back) if reused => {
                                dispatched.store(false, Ordering::Relaxed);
                                req = back;
                            }
                            Some(_) => return Err(SendError::Unsent(e.into_error())),
                            None => return Err(SendError::Request(e.into_error())),
                        },
                    }
                }
                Conn::Http2(mut tx) => {
                    absolute_form(&mut req, &self.scheme, &self.authority);
                    *req.version_mut() = Version::HTTP_2;
                    dispatched.store(true, Ordering::Relaxed);
                    match tx.try_send_request(req).await {
                        Ok(rsp) => return Ok(rsp),
                        Err(mut e) => match e.take_message() {
                            Some(back) if reused => {
                                dispatched.store(false, Ordering::Relaxed);
                                self.forget_closed_h2();
                                req = back;
                            }
                            Some(_) => return Err(SendError::Unsent(e.into_error())),
                            None => return Err(SendError::Request(e.into_error())),
                        },
                    }
                }
            }
        }
    }

    /// For an upstream that speaks HTTP/2: the shared connection if there
    /// is one; else, when another request is connecting, waits for it and
    /// shares its connection, or fails with it (a down upstream is not
    /// tried again by every waiter); else this request connects, and others
    /// wait for it. An HTTP/1.1 upstream: connect.
    async fn wait_for_h2(&self) -> Result<H2Turn<'_>, SendError> {
        let (notified, failures) = {
            let mut state = self.lock();
            if !(self.settings.http2_only || state.speaks_h2) {
                return Ok(H2Turn::Connect(None));
            }
            if let Some((tx, used)) = &mut state.h2
                && tx.is_ready()
            {
                *used = Instant::now();
                return Ok(H2Turn::Shared(Conn::Http2(tx.clone())));
            }
            if !state.h2_connecting {
                state.h2_connecting = true;
                return Ok(H2Turn::Connect(Some(ConnectDone { host: self })));
            }
            // Registered before the lock is released: no wake-up is lost.
            (self.h2_connected.notified(), state.h2_failures)
        };
        notified.await;
        if let Some(conn) = self.checkout(false) {
            return Ok(H2Turn::Shared(conn));
        }
        if self.lock().h2_failures != failures {
            return Err(SendError::Connect(
                "the HTTP/2 connection this request waited for could not be made".into(),
            ));
        }
        // The connecting request was dropped before it finished: connect.
        Ok(H2Turn::Connect(None))
    }

    /// A pooled connection that is ready, if there is one.
    fn checkout(&self, upgrade: bool) -> Option<Conn> {
        let mut state = self.lock();
        if !upgrade && let Some((tx, used)) = &mut state.h2 {
            if tx.is_ready() {
                *used = Instant::now();
                return Some(Conn::Http2(tx.clone()));
            }
            // Closed, or going away: the next request connects again.
            state.h2 = None;
        }
        if self.settings.http2_only && !upgrade {
            return None;
        }
        if state.idle.is_empty() {
            return None;
        }
        let now = Instant::now();
        while let Some(idle) = state.idle.pop() {
            // Idle connections went in ready; one that is not ready now has
            // been closed since. An expired one may be closed by the
            // upstream at any moment: it is closed here instead.
            if idle.tx.is_ready()
                && now.saturating_duration_since(idle.since) < self.settings.idle_timeout
            {
                return Some(Conn::Http1(idle.tx));
            }
        }
        None
    }

    /// Returns an HTTP/1.1 connection to the pool once it is ready for
    /// another request.
    fn checkin(self: &Arc<Self>, tx: http1::SendRequest<ProxyBody>) {
        if self.settings.max_idle == 0 || tx.is_closed() {
            return;
        }
        if tx.is_ready() {
            self.put_idle(tx);
            return;
        }
        // The response body (or the rest of the request body) is still on
        // the connection; it is ready again once both are through.
        let host = Arc::downgrade(self);
        spawn(async move {
            let mut tx = tx;
            if tx.ready().await.is_ok()
                && let Some(host) = host.upgrade()
            {
                host.put_idle(tx);
            }
        });
    }

    fn put_idle(self: &Arc<Self>, tx: http1::SendRequest<ProxyBody>) {
        let since = Instant::now();
        let mut state = self.lock();
        if state.idle.len() >= self.settings.max_idle {
            // Full: closed connections go first, then the oldest; the one
            // just used is the one to keep.
            state.idle.retain(|i| i.tx.is_ready());
            if state.idle.len() >= self.settings.max_idle {
                state.idle.remove(0);
            }
        }
        state.idle.push(Idle { tx, since });
        self.reap_later(&mut state);
    }

    /// Connects and handshakes; an HTTP/2 connection is shared at once.
    async fn connect(self: &Arc<Self>, upgrade: bool) -> Result<Conn, SendError> {
        let mut connector = if upgrade {
            self.settings.http1.clone()
        } else {
            self.settings.any.clone()
        };
        let io = connector
            .call(self.target.clone())
            .await
            .map_err(SendError::Connect)?;
        let h2 = !upgrade && (self.settings.http2_only || negotiated_h2(&io));
        if !upgrade && !self.settings.http2_only {
            // The upstream (or the one behind its address now) may change
            // its mind: follow what the last connection chose.
            self.lock().speaks_h2 = h2;
        }
        if !h2 {
            let (tx, conn) = http1::Builder::new()
                .handshake(io)
                .await
                .map_err(|e| SendError::Connect(Box::new(e)))?;
            spawn_connection(async move {
                if let Err(error) = conn.with_upgrades().await {
                    tracing::debug!(%error, "upstream HTTP/1.1 connection failed");
                }
            })?;
            return Ok(Conn::Http1(tx));
        }
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder.timer(TokioTimer::new());
        if let Some((interval, timeout)) = self.settings.http2_keep_alive {
            builder
                .keep_alive_interval(interval)
                .keep_alive_timeout(timeout)
                .keep_alive_while_idle(true);
        }
        let (mut tx, conn) = builder
            .handshake(io)
            .await
            .map_err(|e| SendError::Connect(Box::new(e)))?;
        spawn_connection(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%error, "upstream HTTP/2 connection failed");
            }
        })?;
        tx.ready()
            .await
            .map_err(|e| SendError::Connect(Box::new(e)))?;
        let mut state = self.lock();
        match &state.h2 {
            // Another request connected first: keep that one shared, and
            // let this one close after this request.
            Some((shared, _)) if shared.is_ready() => {}
            _ => {
                state.h2 = Some((tx.clone(), Instant::now()));
                self.reap_later(&mut state);
            }
        }
        Ok(Conn::Http2(tx))
    }

    /// Drops the shared HTTP/2 connection if it has closed.
    fn forget_closed_h2(&self) {
        let mut state = self.lock();
        if state
            .h2
            .as_ref()
            .is_some_and(|(shared, _)| !shared.is_ready())
        {
            state.h2 = None;
        }
    }

    /// Starts the reaper if it is not running.
    fn reap_later(self: &Arc<Self>, state: &mut State) {
        if state.reaping {
            return;
        }
        let host = Arc::downgrade(self);
        let every = (self.settings.idle_timeout / 4).max(Duration::from_millis(10));
        state.reaping = spawn(reap(host, every));
    }

    /// Closes expired connections; false once nothing is left to watch.
    fn reap(&self, now: Instant) -> bool {
        let timeout = self.settings.idle_timeout;
        let mut state = self.lock();
        state
            .idle
            .retain(|i| i.tx.is_ready() && now.saturating_duration_since(i.since) < timeout);
        if let Some((tx, used)) = &state.h2
            && (!tx.is_ready() || now.saturating_duration_since(*used) >= timeout)
        {
            state.h2 = None;
        }
        let busy = !state.idle.is_empty() || state.h2.is_some();
        state.reaping = busy;
        busy
    }

    /// How many idle HTTP/1.1 connections are pooled, and whether an
    /// HTTP/2 connection is shared; for tests.
    #[cfg(test)]
    fn counts(&self) -> (usize, bool) {
        let state = self.lock();
        (state.idle.len(), state.h2.is_some())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing in the pool's critical sections can panic half-way, so a
        // poisoned lock still guards consistent data.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// Spawns on the current tokio runtime; false (and `fut` dropped) outside
/// one, where the caller does without.
fn spawn(fut: impl Future<Output = ()> + Send + 'static) -> bool {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(fut);
            true
        }
        Err(_) => false,
    }
}

/// A connection's task must run, or the connection is useless.
fn spawn_connection(fut: impl Future<Output = ()> + Send + 'static) -> Result<(), SendError> {
    if spawn(fut) {
        Ok(())
    } else {
        Err(SendError::Connect(
            "no tokio runtime to drive the upstream connection".into(),
        ))
    }
}

/// What a request does when it finds no HTTP/2 connection to share.
enum H2Turn<'a> {
    /// Another request's connect made one.
    Shared(Conn),
    /// Connect; with a guard if others wait for this connect.
    Connect(Option<ConnectDone<'a>>),
}

/// Held by the request that makes the HTTP/2 connection others wait for:
/// dropped when the connect ends, however it ends (the request may be
/// dropped too), it clears `h2_connecting` and wakes them.
struct ConnectDone<'a> {
    host: &'a Host,
}

impl ConnectDone<'_> {
    /// The connect failed: the waiters fail with it.
    fn failed(&self) {
        let mut state = self.host.lock();
        state.h2_failures = state.h2_failures.wrapping_add(1);
    }
}

impl Drop for ConnectDone<'_> {
    fn drop(&mut self) {
        self.host.lock().h2_connecting = false;
        self.host.h2_connected.notify_waiters();
    }
}

/// Marks the reaper stopped if its task is dropped before it ends (its
/// runtime shut down), so that the next idle connection starts another.
struct Reaping(Option<Weak<Host>>);

impl Drop for Reaping {
    fn drop(&mut self) {
        if let Some(host) = self.0.take().and_then(|h| h.upgrade()) {
            host.lock().reaping = false;
        }
    }
}

async fn reap(host: Weak<Host>, every: Duration) {
    let mut running = Reaping(Some(host.clone()));
    loop {
        tokio::time::sleep(every).await;
        match host.upgrade() {
            Some(host) if host.reap(Instant::now()) => {}
            // Ended on its own: `reap` cleared the flag (or the host is gone).
            _ => {
                running.0 = None;
                return;
            }
        }
    }
}

/// HTTP/2 needs the scheme and authority (`:scheme`, `:authority`); the
/// request was prepared in origin form, which HTTP/1.1 sends as it is.
///
/// `:authority` is the request's `Host` (the upstream's, the client's with
/// `preserve_host`, or the `host_rewrite`), moved out of the header: HTTP/2
/// servers read the host from `:authority`, and a `host` field that
/// differs from it makes the request malformed (RFC 9113 §8.3.1). The
/// connection (and its TLS name) stays the upstream's.
fn absolute_form(req: &mut Request<ProxyBody>, scheme: &Scheme, authority: &Authority) {
    if req.uri().scheme().is_some() {
        return;
    }
    let host = req
        .headers_mut()
        .remove(HOST)
        .and_then(|h| Authority::try_from(h.as_bytes()).ok());
    let uri = req.uri_mut();
    let mut parts = std::mem::take(uri).into_parts();
    parts.scheme = Some(scheme.clone());
    parts.authority = Some(host.unwrap_or_else(|| authority.clone()));
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    // Scheme, authority and path are present, so this cannot fail.
    if let Ok(absolute) = Uri::from_parts(parts) {
        *uri = absolute;
    }
}

/// HTTP/1.1 sends the path and query alone (and the host in `Host`: a
/// request turned to absolute form for an HTTP/2 connection, then sent
/// back, gets its `Host` again).
fn origin_form(req: &mut Request<ProxyBody>) {
    if req.uri().scheme().is_none() {
        return;
    }
    if !req.headers().contains_key(HOST)
        && let Some(a) = req.uri().authority()
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        req.headers_mut().insert(HOST, v);
    }
    let uri = req.uri_mut();
    *uri = match uri.path_and_query() {
        Some(pq) => Uri::from(pq.clone()),
        None => Uri::from_static("/"),
    };
}

fn negotiated_h2(io: &MaybeHttpsStream<TokioIo<TcpStream>>) -> bool {
    io.connected().is_negotiated_h2()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn absolute_form_adds_scheme_and_authority() {
        let mut req = Request::new(ProxyBody::default());
        *req.uri_mut() = Uri::from_static("/a/b?c=1");
        absolute_form(
            &mut req,
            &Scheme::HTTPS,
            &Authority::from_static("svc:8443"),
        );
        assert_eq!(req.uri(), "https://svc:8443/a/b?c=1");

        // Already absolute: kept.
        *req.uri_mut() = Uri::from_static("http://other/x");
        absolute_form(&mut req, &Scheme::HTTPS, &Authority::from_static("svc"));
        assert_eq!(req.uri(), "http://other/x");

        // The Host chosen for the upstream becomes `:authority`, and goes
        // back to `Host` if the request is sent over HTTP/1.1 after all.
        *req.uri_mut() = Uri::from_static("/a");
        req.headers_mut()
            .insert(HOST, HeaderValue::from_static("public.example"));
        absolute_form(&mut req, &Scheme::HTTPS, &Authority::from_static("svc"));
        assert_eq!(req.uri(), "https://public.example/a");
        assert!(req.headers().get(HOST).is_none());
        origin_form(&mut req);
        assert_eq!(req.uri(), "/a");
        assert_eq!(req.headers()[HOST], "public.example");
    }

    #[test]
    fn http2_upstream_pings_are_on_by_default() {
        let settings = crate::Client::builder().build().unwrap().settings();
        assert_eq!(
            settings.http2_keep_alive,
            Some((Duration::from_secs(30), Duration::from_secs(10)))
        );
        let off = crate::Client::builder()
            .http2_keep_alive(None)
            .build()
            .unwrap()
            .settings();
        assert_eq!(off.http2_keep_alive, None);
    }

    #[test]
    fn empty_pool_reaps_nothing_and_stops() {
        let settings = crate::Client::builder().build().unwrap().settings();
        let host = Host::new(
            settings,
            Scheme::HTTP,
            Authority::from_static("127.0.0.1:1"),
        );
        assert!(!host.reap(Instant::now()));
        assert_eq!(host.counts(), (0, false));
        assert!(host.checkout(false).is_none());
    }

    /// A request's exchange is boxed per request, and a box is filled by a
    /// copy of the whole future: the rare paths (connecting, waiting for
    /// an HTTP/2 connection) are boxed inside it so that it stays small
    /// (848 bytes when this was written, 7,232 with them inline).
    #[test]
    fn exchange_future_stays_small() {
        let settings = crate::Client::builder().build().unwrap().settings();
        let host = Arc::new(Host::new(
            settings,
            Scheme::HTTP,
            Authority::from_static("127.0.0.1:1"),
        ));
        let fut = host
            .clone()
            .exchange(Request::new(ProxyBody::default()), false, Arc::default());
        let size = std::mem::size_of_val(&fut);
        eprintln!("exchange future: {size} bytes");
        assert!(size <= 1024, "the exchange future is {size} bytes");
    }
}
