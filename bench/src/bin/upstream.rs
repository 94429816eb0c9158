//! The benchmark upstream: as cheap as an HTTP/1.1 server gets, so that the
//! proxy is always the bottleneck. Every path answers 13 bytes, except
//! those ending in `/1mib` (`/1mib`, `/api/s0/1mib`), which answer 1 MiB.
//!
//! `bench-upstream --listen 127.0.0.1:19000 --threads 1`

use std::convert::Infallible;

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
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let body = if req.uri().path().ends_with("/1mib") {
                        big.clone()
                    } else {
                        small.clone()
                    };
                    async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    })
}
