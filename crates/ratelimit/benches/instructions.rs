//! A fixed number of requests through the in-memory layer (one limit, keyed
//! by client IP), for counting instructions rather than timing them:
//!
//! ```text
//! cargo bench -p towergate-ratelimit --bench instructions --no-run
//! valgrind --tool=callgrind target/release/deps/instructions-<hash> layer 100000
//! valgrind --tool=callgrind target/release/deps/instructions-<hash> bare 100000
//! ```
//!
//! The difference of the two totals, divided by the count, is what the
//! layer adds per request. Without arguments (as `cargo bench` runs it)
//! it sends a handful of requests and checks the headers.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use http::{Request, Response};
use tower::{Service, ServiceBuilder, service_fn};
use towergate_core::ClientAddr;
use towergate_ratelimit::{Key, Limit, RateLimitLayer};

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let mode = args.next().unwrap_or_else(|| "layer".to_owned());
    let count: u32 = args.next().and_then(|n| n.parse().ok()).unwrap_or(16);

    let inner =
        service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(String::new())) });
    let Ok(layer) = RateLimitLayer::builder()
        .limit(Limit::per_second(1_000_000).name("per-ip"))
        .key(Key::ClientIp)
        .build()
    else {
        return;
    };
    let mut limited = ServiceBuilder::new().layer(layer).service(inner);
    let mut bare = inner;
    let mut cx = Context::from_waker(Waker::noop());

    let mut allowed = 0u32;
    for i in 0..count {
        // 256 clients, as a load generator behind a few addresses would be.
        let ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, i as u8));
        let mut req = Request::new(());
        req.extensions_mut()
            .insert(ClientAddr::direct(SocketAddr::new(ip, 40_000), false));
        let status = if mode == "bare" {
            let _ = bare.poll_ready(&mut cx);
            poll_once(bare.call(req), &mut cx).map(|rsp| rsp.status())
        } else {
            let _ = limited.poll_ready(&mut cx);
            poll_once(limited.call(req), &mut cx).map(|rsp| {
                // Checked once: looking a header up costs as much as a
                // quarter of the layer.
                if i == 0 {
                    assert!(rsp.headers().contains_key("ratelimit"));
                }
                rsp.status()
            })
        };
        allowed += u32::from(status.is_some_and(|s| s.is_success()));
    }
    black_box(allowed);
}

/// Every service here answers at once: one poll is enough.
fn poll_once<F, T>(fut: F, cx: &mut Context<'_>) -> Option<T>
where
    F: Future<Output = Result<T, Infallible>>,
{
    match pin!(fut).poll(cx) {
        Poll::Ready(Ok(rsp)) => Some(black_box(rsp)),
        Poll::Pending => None,
    }
}
