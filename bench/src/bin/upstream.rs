//! The benchmark upstream: as cheap as an HTTP/1.1 server gets, so that the
//! proxy is always the bottleneck. Every path answers 13 bytes, except
//! those ending in `/1mib` (`/1mib`, `/api/s0/1mib`), which answer 1 MiB,
//! and, with `--jwks FILE`, `/jwks.json`, which answers FILE as it is at
//! that moment (the identity provider of the `jwks` scenario: rotating its
//! keys is rewriting the file) and counts its fetches on stderr.
//!
//! `bench-upstream --listen 127.0.0.1:19000 --threads 1 [--jwks /tmp/w/jwks.json]`

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

fn main() -> Result<(), towergate_bench::Error> {
    let addr = towergate_bench::addr_arg("--listen", "127.0.0.1:19000")?;
    let threads: usize = towergate_bench::parsed("--threads", "1")?;
    let small = Bytes::from_static(b"hello, world\n");
    let big = Bytes::from(vec![b'x'; 1 << 20]);
    let jwks: Option<Arc<str>> = towergate_bench::has("--jwks")
        .then(|| Arc::from(towergate_bench::arg("--jwks", "jwks.json")));
    let fetches = Arc::new(AtomicUsize::new(0));
    towergate_bench::runtime(threads)?.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        eprintln!("bench-upstream on {addr}");
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE under a connection flood: wait instead of dying.
                    eprintln!("accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (small, big) = (small.clone(), big.clone());
            let (jwks, fetches) = (jwks.clone(), fetches.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let rsp = match &jwks {
                        Some(file) if req.uri().path() == "/jwks.json" => {
                            jwks_response(file, &fetches)
                        }
                        _ if req.uri().path().ends_with("/1mib") => {
                            Response::new(Full::new(big.clone()))
                        }
                        _ => Response::new(Full::new(small.clone())),
                    };
                    async move { Ok::<_, Infallible>(rsp) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    })
}

/// The JWKS file as it is now (404 while it is missing), cacheable for five
/// minutes as identity providers send it.
fn jwks_response(file: &str, fetches: &AtomicUsize) -> Response<Full<Bytes>> {
    let n = fetches.fetch_add(1, Ordering::Relaxed) + 1;
    match std::fs::read(file) {
        Ok(body) => {
            eprintln!("jwks fetch {n}: {} bytes", body.len());
            let mut rsp = Response::new(Full::new(Bytes::from(body)));
            let h = rsp.headers_mut();
            h.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            h.insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("max-age=300"),
            );
            rsp
        }
        Err(e) => {
            eprintln!("jwks fetch {n}: {file}: {e}");
            let mut rsp = Response::new(Full::new(Bytes::new()));
            *rsp.status_mut() = http::StatusCode::NOT_FOUND;
            rsp
        }
    }
}
