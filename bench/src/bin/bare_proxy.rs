//! The floor: a minimal hyper reverse proxy with a pooled client and
//! streaming bodies, no routing, no header rules, on the same allocator
//! (mimalloc) as towergate. Whatever towergate costs
//! beyond this is the price of its features.
//!
//! HTTP/1.1 and HTTP/2 by prior knowledge on the one listener; HTTP/1.1 to
//! the upstream.
//!
//! `bare-proxy --listen 127.0.0.1:19003 --upstream 127.0.0.1:19000 --threads 1
//! [--multi-thread]` (one thread: tokio's current-thread runtime, unless
//! `--multi-thread`).

use std::convert::Infallible;

use http::{Request, Response, Uri, Version};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

type Body = BoxBody<bytes::Bytes, hyper::Error>;

/// The allocator towergate's binary uses: the floor compares code, not
/// allocators.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), towergate_bench::Error> {
    let listen = towergate_bench::addr_arg("--listen", "127.0.0.1:19003")?;
    let upstream = towergate_bench::addr_arg("--upstream", "127.0.0.1:19000")?;
    let threads: usize = towergate_bench::parsed("--threads", "1")?;
    // `--multi-thread`: tokio's multi-thread scheduler even with one worker,
    // as towergate runs, to tell the scheduler's cost from the proxy's.
    let rt = if towergate_bench::has("--multi-thread") {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .enable_all()
            .build()?
    } else {
        towergate_bench::runtime(threads)?
    };
    rt.block_on(async move {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        let client: Client<HttpConnector, Incoming> =
            Client::builder(TokioExecutor::new()).build(http);
        let listener = TcpListener::bind(listen).await?;
        eprintln!("bare-proxy on {listen} -> {upstream}");
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        loop {
            // Exiting on SIGTERM/SIGINT (rather than dying of it) lets a
            // profiler such as callgrind write its results.
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = term.recv() => return Ok(()),
                _ = int.recv() => return Ok(()),
            };
            let (tcp, _) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let client = client.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    let client = client.clone();
                    async move {
                        let pq = req
                            .uri()
                            .path_and_query()
                            .map(|p| p.as_str())
                            .unwrap_or("/");
                        let uri: Uri = match format!("http://{upstream}{pq}").parse() {
                            Ok(u) => u,
                            Err(_) => return Ok::<_, Infallible>(bad_gateway()),
                        };
                        *req.uri_mut() = uri;
                        // The upstream speaks HTTP/1.1 whatever the client spoke.
                        *req.version_mut() = Version::HTTP_11;
                        Ok(match client.request(req).await {
                            Ok(rsp) => rsp.map(|b| b.boxed()),
                            Err(_) => bad_gateway(),
                        })
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    })
}

fn bad_gateway() -> Response<Body> {
    let mut rsp = Response::new(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed(),
    );
    *rsp.status_mut() = http::StatusCode::BAD_GATEWAY;
    rsp
}
