//! Listeners and the edge of the stack: accept, TLS, HTTP/1.1 and HTTP/2,
//! connection limits, the live stack (see [`crate::live`]), graceful drain.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::body::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_util::task::TaskTracker;
use towergate_core::{ClientAddr, ConnectionLease};

use crate::live::Live;
use idle::{ConnStreams, EdgeExecutor, Guarded, ShutdownSignal, StreamFlow};
use opening::Opening;

mod idle;
mod opening;
use crate::stack::{Compiled, EdgeBody, ListenerPlan, ServerSettings, Stack};

/// A gateway that is serving.
#[derive(Debug)]
pub struct RunningGateway {
    addrs: Vec<SocketAddr>,
    live: Arc<Live>,
    shutdown: watch::Sender<bool>,
    /// The shutdown, as connections watch it.
    signal: Arc<ShutdownSignal>,
    /// The accept loops (and the timer pacer); each hands back, when it
    /// ends, the set of its connections' tasks still running.
    tasks: JoinSet<JoinSet<()>>,
    drain: Duration,
    shutdown_delay: Duration,
    /// One permit per open connection, held by its task and by a tunnel
    /// (WebSocket) that takes it over: all of them free means nothing is
    /// open.
    conns: Arc<Semaphore>,
    max_connections: usize,
    /// The HTTP/2 streams' tasks (hyper runs each stream on a task of its
    /// own, apart from its connection's).
    streams: TaskTracker,
}

/// Binds the listeners of a compiled configuration and starts serving.
pub async fn start(compiled: Compiled) -> std::io::Result<RunningGateway> {
    let Compiled {
        registry,
        config,
        stack,
        listeners,
        server,
    } = compiled;
    let live = Arc::new(Live::new(
        registry,
        stack,
        config,
        listeners.clone(),
        server.clone(),
    ));
    let (shutdown, _) = watch::channel(false);
    let signal = Arc::new(ShutdownSignal::default());
    let conns = Arc::new(Semaphore::new(server.max_connections));
    let streams = TaskTracker::new();
    let mut tasks = JoinSet::new();
    let mut addrs = Vec::new();
    for (index, plan) in listeners.iter().enumerate() {
        let listener = TcpListener::bind(plan.addr).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot bind {} ({}): {e}", plan.addr, plan.name),
            )
        })?;
        let addr = listener.local_addr()?;
        tracing::info!(listener = %plan.name, %addr, tls = plan.tls.is_some(), "listening");
        addrs.push(addr);
        let ctx = AcceptCtx {
            index,
            plan: plan.clone(),
            server: server.clone(),
            live: live.clone(),
            conns: conns.clone(),
            streams: streams.clone(),
            signal: signal.clone(),
        };
        tasks.spawn(accept_loop(listener, ctx, shutdown.subscribe()));
    }
    let pacer = pace_timers(shutdown.subscribe());
    tasks.spawn(async move {
        pacer.await;
        JoinSet::new()
    });
    Ok(RunningGateway {
        addrs,
        live,
        shutdown,
        signal,
        tasks,
        drain: server.drain_timeout,
        shutdown_delay: server.shutdown_delay,
        conns,
        max_connections: server.max_connections,
        streams,
    })
}

/// Headers the stack may add to a request before it goes upstream.
const REQUEST_HEADERS_ADDED: usize = 8;

/// An empty extension map with room for seven entries: what a request
/// collects on its way (client address, request id, observation, route
/// match, identity, trace context, ...). Cloning it allocates the table at
/// that size; a map built by inserting allocates at the first entry and
/// again (moving the entries) at the fourth.
fn presized_extensions() -> http::Extensions {
    static EMPTY: LazyLock<http::Extensions> = LazyLock::new(|| {
        #[derive(Clone, Copy)]
        struct Room<const N: usize>;
        let mut e = http::Extensions::new();
        e.insert(Room::<0>);
        e.insert(Room::<1>);
        e.insert(Room::<2>);
        e.insert(Room::<3>);
        e.insert(Room::<4>);
        e.insert(Room::<5>);
        e.insert(Room::<6>);
        // `clear` keeps the table and marks every slot empty again.
        e.clear();
        e
    });
    EMPTY.clone()
}

/// hyper's timer (the header-read timeout of every keep-alive request,
/// HTTP/2 keep-alive pings) on [`towergate_core::timer`]: arming and
/// disarming it costs a lock and a slab entry, where tokio's timer costs a
/// registration with the time driver and a deregistration (hyper boxes
/// each sleep either way): ~820 instructions per request on tokio's,
/// ~350 on this one (see `docs/benchmarks.md`).
#[derive(Clone, Copy, Debug)]
struct CoarseTimer;

/// A [`towergate_core::timer::Sleep`] as hyper's [`hyper::rt::Sleep`].
struct CoarseSleep(towergate_core::timer::Sleep);

impl hyper::rt::Timer for CoarseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(CoarseSleep(towergate_core::timer::sleep(duration)))
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(CoarseSleep(towergate_core::timer::sleep_until(deadline)))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: std::time::Instant) {
        match sleep.as_mut().downcast_mut_pin::<CoarseSleep>() {
            Some(mut s) => s.0.reset(new_deadline),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

impl std::future::Future for CoarseSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl hyper::rt::Sleep for CoarseSleep {}

/// How often the timer pacer ticks; see [`pace_timers`].
const PACE: Duration = Duration::from_millis(250);

/// Keeps tokio's time driver from waking itself on most requests.
///
/// The driver writes to its eventfd (a `write(2)`, and an `epoll_wait`
/// that returns at once) whenever a timer is armed that is due earlier
/// than the earliest one it knew of when it last parked. hyper's
/// header-read timer and the proxy's response timer are on
/// [`towergate_core::timer`] and never reach the driver, but the timeouts
/// of balanced routes, aggregate calls and the cache's collapsing are
/// tokio timers, armed per request; when the driver last parked with none
/// of those pending, the next one moved its wake-up earlier (0.2 to 0.3
/// extra syscalls per request in `bench/instructions.sh`, measured when
/// every request armed one). A timer that is always due within [`PACE`]
/// keeps the known wake-up earlier than any request's, for the cost of
/// four wake-ups a second.
async fn pace_timers(mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(PACE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // Shutting down (or the gateway dropped): the listeners' tasks
            // are awaited, and this one with them.
            _ = shutdown.changed() => return,
        }
    }
}

// === impl RunningGateway ===

impl RunningGateway {
    /// The bound addresses, in listener order (useful with port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The live state, shared with the reloader and the admin server.
    pub fn live(&self) -> Arc<Live> {
        self.live.clone()
    }

    /// The listeners being served.
    pub fn listeners(&self) -> &[ListenerPlan] {
        self.live.listeners()
    }

    /// Stops accepting, lets in-flight requests finish (up to the drain
    /// timeout) and returns whether everything drained in time.
    ///
    /// Readiness (`/readyz`) turns to 503 first, then, after
    /// `server.shutdown_delay` (so a fronting load balancer stops sending),
    /// the listeners close.
    pub async fn shutdown(mut self) -> bool {
        self.live.set_draining();
        if !self.shutdown_delay.is_zero() {
            self.signal.begin_drain();
            tracing::info!(delay = ?self.shutdown_delay, "draining: not ready; closing listeners after the delay");
            tokio::time::sleep(self.shutdown_delay).await;
        }
        // Every connection's watch (see `idle::Guarded`) closes it once
        // its requests are done: HTTP/1 after the one in flight, HTTP/2
        // after `GOAWAY` and its open streams.
        let _ = self.shutdown.send(true);
        self.signal.begin();
        let mut connections = Vec::new();
        while let Some(done) = self.tasks.join_next().await {
            if let Ok(set) = done {
                connections.push(set);
            }
        }
        let deadline = tokio::time::Instant::now() + self.drain;
        let drained = tokio::time::timeout_at(deadline, async {
            for set in &mut connections {
                while set.join_next().await.is_some() {}
            }
        })
        .await
        .is_ok();
        // Upgraded connections (WebSocket tunnels) left hyper's watch at
        // their 101, but still hold their connection's permit: they get the
        // rest of the drain time to end, as requests do.
        let open = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        let tunnels_done = drained
            && tokio::time::timeout_at(deadline, self.conns.acquire_many(open))
                .await
                .is_ok();
        if drained && !tunnels_done {
            tracing::warn!(timeout = ?self.drain, "drain timeout: closing the remaining upgraded connections (WebSocket tunnels)");
        }
        let drained = drained && tunnels_done;
        if drained {
            tracing::info!("all connections drained");
        } else {
            tracing::warn!(timeout = ?self.drain, "drain timeout: closing the remaining connections");
        }
        // Whatever is left is cut off here, and waited for: the requests
        // it was serving end now (each gets its access-log line, a 499,
        // and its span), before the caller flushes the log and exits.
        for mut set in connections {
            set.shutdown().await;
        }
        // Their HTTP/2 streams run on tasks of their own, which end once
        // their connection is gone.
        self.streams.close();
        if tokio::time::timeout(Duration::from_secs(2), self.streams.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "some HTTP/2 streams had not ended 2 s after their connection was closed"
            );
        }
        drained
    }
}

struct AcceptCtx {
    /// The listener's place in the plan (for its current TLS settings).
    index: usize,
    plan: ListenerPlan,
    server: ServerSettings,
    live: Arc<Live>,
    conns: Arc<Semaphore>,
    streams: TaskTracker,
    /// The shutdown, as connections watch it.
    signal: Arc<ShutdownSignal>,
}

/// hyper's settings for one connection at the edge; `exec` runs (and
/// counts) its HTTP/2 streams.
fn edge_builder(ctx: &AcceptCtx, exec: EdgeExecutor) -> auto::Builder<EdgeExecutor> {
    let mut builder = auto::Builder::new(exec);
    builder
        .http1()
        .timer(CoarseTimer)
        .header_read_timeout(ctx.server.header_read_timeout)
        .max_buf_size(ctx.server.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(CoarseTimer)
        .max_header_list_size(u32::try_from(ctx.server.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)));
    if !ctx.plan.http2 {
        builder = builder.http1_only();
    }
    builder
}

async fn accept_loop(
    listener: TcpListener,
    ctx: AcceptCtx,
    mut shutdown: watch::Receiver<bool>,
) -> JoinSet<()> {
    // The connections' tasks, handed back at the end so that a shutdown
    // can wait for them, and cut off the ones that outlast the drain
    // timeout.
    let mut connections = JoinSet::new();
    let ctx = Arc::new(ctx);
    loop {
        // Waiting for a permit before accepting leaves excess connections in
        // the kernel's backlog instead of accepting and dropping them.
        let permit = tokio::select! {
            p = ctx.conns.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return connections },
            _ = shutdown.changed() => return connections,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return connections,
        };
        let _ = tcp.set_nodelay(true);
        let ctx = ctx.clone();
        // The TLS settings of now: a reload may have renewed a certificate.
        let acceptor = ctx
            .live
            .listener_tls(ctx.index)
            .map(tokio_rustls::TlsAcceptor::from);
        // Counted while open, in the registry that outlives reloads, and
        // limited by the permit: both held by the connection's task and by
        // a tunnel that takes the connection over (see `ConnectionLease`).
        let conn_guard = ctx.live.registry().metrics().open_connection();
        let lease = ConnectionLease(Arc::new((conn_guard, permit)));
        // Finished connections leave the set here, once per accept.
        while connections.try_join_next().is_some() {}
        connections.spawn(async move {
            serve_connection(tcp, peer, acceptor, &ctx, &lease).await;
        });
    }
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    ctx: &AcceptCtx,
    lease: &ConnectionLease,
) {
    let live = ctx.live.clone();
    let streams = ConnStreams::new();
    let exec = EdgeExecutor::new(ctx.streams.clone(), streams.clone())
        .send_timeout(ctx.server.send_timeout);
    let builder = edge_builder(ctx, exec);
    let idle_timeout = ctx.server.http2_idle_timeout;
    match acceptor {
        None => {
            let svc = EdgeService {
                live: live.clone(),
                peer,
                tls: false,
                lease: lease.clone(),
            };
            let io = Opening::new(tcp, ctx.server.header_read_timeout, ctx.plan.http2)
                .on_http2(streams.clone())
                .send_timeout(ctx.server.send_timeout);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
            let conn = Guarded::new(conn, ctx.signal.clone(), streams, idle_timeout);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        Some(acceptor) => {
            let hs =
                tokio::time::timeout(ctx.server.header_read_timeout, acceptor.accept(tcp)).await;
            let tls = match hs {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let svc = EdgeService {
                live: live.clone(),
                peer,
                tls: true,
                lease: lease.clone(),
            };
            let io = Opening::new(tls, ctx.server.header_read_timeout, ctx.plan.http2)
                .on_http2(streams.clone())
                .send_timeout(ctx.server.send_timeout);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
            let conn = Guarded::new(conn, ctx.signal.clone(), streams, idle_timeout);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
    }
}

type EdgeFuture =
    std::pin::Pin<Box<dyn Future<Output = Result<Response<EdgeBody>, Infallible>> + Send>>;

type ServedFuture =
    std::pin::Pin<Box<dyn Future<Output = Result<Response<ServedBody>, Infallible>> + Send>>;

pin_project_lite::pin_project! {
    /// The response future hyper gets: an HTTP/1 request's is the edge
    /// stack's own (no wrapper box); an HTTP/2 stream's is boxed with its
    /// flow watch (see `idle::StreamFlow`).
    #[project = ServedProj]
    enum Served {
        Http1 { #[pin] fut: EdgeFuture },
        Http2 { #[pin] fut: ServedFuture },
    }
}

impl Future for Served {
    type Output = Result<Response<ServedBody>, Infallible>;

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match self.project() {
            ServedProj::Http1 { fut } => fut
                .poll(cx)
                .map(|r| r.map(|rsp| rsp.map(|inner| ServedBody { inner, flow: None }))),
            ServedProj::Http2 { fut } => fut.poll(cx),
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body as hyper sends it: the edge stack's, which on an
    /// HTTP/2 stream tells the stream's flow watch when it hands over a
    /// frame and when it is polled again.
    pub(crate) struct ServedBody {
        #[pin]
        inner: EdgeBody,
        flow: Option<Arc<StreamFlow>>,
    }
}

impl http_body::Body for ServedBody {
    type Data = <EdgeBody as http_body::Body>::Data;
    type Error = <EdgeBody as http_body::Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let Some(flow) = this.flow else {
            return this.inner.poll_frame(cx);
        };
        flow.polled();
        let polled = this.inner.poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(_))) = &polled {
            flow.delivered();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The per-connection service hyper calls for each request.
#[derive(Clone)]
struct EdgeService {
    live: Arc<Live>,
    peer: SocketAddr,
    tls: bool,
    /// Given to a request that asks for an upgrade (see `prepare`).
    lease: ConnectionLease,
}

impl hyper::service::Service<Request<Incoming>> for EdgeService {
    type Response = Response<ServedBody>;
    type Error = Infallible;
    type Future = Served;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        // Each request is served by the stack it loads here, whatever
        // reloads happen after: the router and every layer's future keep
        // what they use (each layer's own shared state), not the `Stack`.
        let stack = self.live.stack();
        if req.version() == http::Version::HTTP_2 {
            // hyper's HTTP/2 server calls this on the connection's task and
            // runs the future on the stream's own: the layers' call-time
            // work (routing, authentication, ...) goes in the future, so
            // the streams of one connection are handled in parallel.
            let (peer, tls) = (self.peer, self.tls);
            let fut: ServedFuture = Box::pin(async move {
                // On the stream's task: its flow watch.
                let flow = StreamFlow::current();
                prepare(&stack, &mut req, peer, tls);
                let rsp = stack.edge.call_shared(req.map(edge_body)).await?;
                Ok(rsp.map(|inner| ServedBody { inner, flow }))
            });
            return Served::Http2 { fut };
        }
        // HTTP/1: one request at a time per connection, called and polled
        // on the connection's task. The edge service's own boxed future
        // goes to hyper, with no `async` wrapper around it (one more box,
        // and a copy of the request in it).
        // Only a request that may take the connection over carries its
        // lease: hyper gives such a request (and only such) its
        // `OnUpgrade`, in extensions that are still empty for the others,
        // so they pay a check of an empty map.
        if req
            .extensions()
            .get::<hyper::upgrade::OnUpgrade>()
            .is_some()
        {
            req.extensions_mut().insert(self.lease.clone());
        }
        prepare(&stack, &mut req, self.peer, self.tls);
        let call = stack.edge.call_shared(req.map(edge_body));
        if !self.live.is_draining() {
            return Served::Http1 { fut: call };
        }
        // Draining (`server.shutdown_delay`): the client is told to take
        // its next request to a new connection, which a fronting load
        // balancer sends elsewhere; hyper closes this one after the
        // response. An upgrade's `101` keeps its connection: it is the
        // tunnel.
        let fut: EdgeFuture = Box::pin(async move {
            let mut rsp = call.await?;
            if rsp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
                rsp.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            Ok(rsp)
        });
        Served::Http1 { fut }
    }
}

/// A request without a body (most) gets an empty `Body`, which is not
/// boxed: only a body that has bytes to stream is.
fn edge_body(body: Incoming) -> Body {
    if hyper::body::Body::is_end_stream(&body) {
        Body::empty()
    } else {
        Body::new(body)
    }
}

/// The edge of the stack, before the router: who is calling (the request
/// id and everything else is the edge stack's job).
pub(crate) fn prepare(stack: &Stack, req: &mut Request<Incoming>, peer: SocketAddr, tls: bool) {
    // The client's connection options go now, before the layers add
    // headers a `Connection: x-user-id` would otherwise name.
    towergate_proxy::strip_connection_options(req.headers_mut());
    // The caller's identity is the gateway's to tell, on every route: an
    // upstream reached by an authenticated route and an open one must not
    // get a client's own `X-User-Id` from the open one.
    stack.cleared.clear(req.headers_mut());
    // Who is calling, believed only through trusted proxies.
    let client = ClientAddr::resolve(peer, tls, req.headers(), &stack.trusted);
    // The extensions start at the size they end at, in one allocation,
    // instead of growing (a rehash) at the fourth entry.
    let mut extensions = presized_extensions();
    extensions.extend(std::mem::take(req.extensions_mut()));
    extensions.insert(client);
    *req.extensions_mut() = extensions;
    // Room, in one growth of the map, for what the stack adds on the way
    // up: request id, trace context, four forwarding headers, `Via`.
    // (`try_reserve`: a map already near its maximum size is left as it
    // is, and fails later, where an insert is refused, not here.)
    let _ = req.headers_mut().try_reserve(REQUEST_HEADERS_ADDED);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presized_extensions_start_empty() {
        let mut e = presized_extensions();
        assert!(e.is_empty());
        assert_eq!(e.len(), 0);
        e.insert(7u32);
        assert_eq!(e.get::<u32>(), Some(&7));
        // The template is not touched by what a request adds.
        assert!(presized_extensions().is_empty());
    }
}
