//! SRV discovery end to end: a tiny authoritative DNS server on loopback
//! (UDP, answers built with hickory-proto), real HTTP upstreams, a pool
//! pointed at the server with `Srv::nameserver`, the public API only.
//!
//! Runs in a plain `cargo test --workspace`: the crate dev-depends on
//! itself with `srv` enabled.

#![cfg(feature = "srv")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hickory_resolver::proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, SRV};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use http_body_util::{BodyExt, Empty};
use parking_lot::Mutex;
use support::{HttpEndpoint, get, make_endpoint, wait_for};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tower::ServiceExt;
use towergate_balance::{Algorithm, Balance, Endpoint, Pool, Srv};
use towergate_test::{Upstream, echo_router, spawn_upstream};

/// Bounds every test, so a regression fails instead of hanging CI.
const GUARD: Duration = Duration::from_secs(60);

const NAME: &str = "_http._tcp.users.test.";

/// One SRV record: priority, weight, port, target.
type Rec = (u16, u16, u16, &'static str);

/// A record whose target is `127.0.0.1.` (no further lookup needed).
fn rec(priority: u16, weight: u16, port: u16) -> Rec {
    (priority, weight, port, "127.0.0.1.")
}

/// What the DNS server does with the next queries.
#[derive(Clone, Debug)]
enum Mode {
    /// NOERROR with these SRV records (TTL 0) for `NAME`; a target named
    /// `glue-*` comes with an A record (127.0.0.1) in the additional
    /// section; A queries for `host-*` names are answered with 127.0.0.1,
    /// for other names with NXDOMAIN.
    Answer(Vec<Rec>),
    /// SERVFAIL.
    ServFail,
    /// No answer at all.
    Silent,
}

/// An authoritative server for `NAME` on `127.0.0.1:0` UDP.
struct DnsServer {
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    /// SRV queries for `NAME` received.
    queries: Arc<AtomicUsize>,
    /// A/AAAA queries for `glue-*` names received.
    glue_queries: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl DnsServer {
    async fn start(records: Vec<Rec>) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let mode = Arc::new(Mutex::new(Mode::Answer(records)));
        let queries = Arc::new(AtomicUsize::new(0));
        let glue_queries = Arc::new(AtomicUsize::new(0));
        let (m, q, g) = (mode.clone(), queries.clone(), glue_queries.clone());
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(req) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let Some(rsp) = answer(&req, &m.lock().clone(), &q, &g) else {
                    continue;
                };
                let _ = sock.send_to(&rsp.to_vec().unwrap(), peer).await;
            }
        });
        Self {
            addr,
            mode,
            queries,
            glue_queries,
            task,
        }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock() = mode;
    }

    fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The answer to `req`, or none to stay silent.
fn answer(
    req: &Message,
    mode: &Mode,
    queries: &AtomicUsize,
    glue_queries: &AtomicUsize,
) -> Option<Message> {
    if req.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut rsp = Message::response(req.metadata.id, OpCode::Query);
    rsp.metadata.authoritative = true;
    rsp.metadata.recursion_desired = req.metadata.recursion_desired;
    rsp.add_queries(req.queries.iter().cloned());
    let [q] = req.queries.as_slice() else {
        rsp.metadata.response_code = ResponseCode::FormErr;
        return Some(rsp);
    };
    let name = q.name().to_ascii().to_ascii_lowercase();
    let localhost = || RData::A(A::new(127, 0, 0, 1));
    if name.starts_with("glue-") {
        glue_queries.fetch_add(1, Ordering::SeqCst);
    }
    if name.starts_with("host-") {
        if q.query_type() == RecordType::A {
            rsp.add_answer(Record::from_rdata(q.name().clone(), 0, localhost()));
        }
        return Some(rsp); // AAAA: NOERROR, no data
    }
    if name != NAME {
        rsp.metadata.response_code = ResponseCode::NXDomain;
        return Some(rsp);
    }
    if q.query_type() != RecordType::SRV {
        return Some(rsp); // NOERROR, no data
    }
    queries.fetch_add(1, Ordering::SeqCst);
    match mode {
        Mode::Silent => return None,
        Mode::ServFail => rsp.metadata.response_code = ResponseCode::ServFail,
        Mode::Answer(records) => {
            for &(priority, weight, port, target) in records {
                let target = Name::from_ascii(target).unwrap();
                if target.to_ascii().starts_with("glue-") {
                    rsp.add_additional(Record::from_rdata(target.clone(), 0, localhost()));
                }
                let srv = SRV::new(priority, weight, port, target);
                rsp.add_answer(Record::from_rdata(q.name().clone(), 0, RData::SRV(srv)));
            }
        }
    }
    Some(rsp)
}

async fn upstream(name: &str) -> Upstream {
    spawn_upstream(echo_router(name)).await
}

fn url(u: &Upstream) -> String {
    Endpoint::from_addr(u.addr).url().to_owned()
}

/// The pool's endpoints as (url, weight), sorted.
fn members<S>(pool: &Pool<S>) -> Vec<(String, u32)>
where
    S: Clone + Send + Sync + 'static,
{
    let mut m: Vec<_> = pool
        .snapshot()
        .into_iter()
        .map(|e| (e.url, e.weight))
        .collect();
    m.sort();
    m
}

fn sorted(mut v: Vec<(String, u32)>) -> Vec<(String, u32)> {
    v.sort();
    v
}

/// Which upstream answered a request through `lb`.
async fn who(lb: &Balance<HttpEndpoint<Empty<Bytes>>>) -> String {
    let rsp = lb.clone().oneshot(get()).await.unwrap();
    assert_eq!(rsp.status(), 200);
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v["service"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lowest_priority_targets_become_weighted_endpoints() {
    tokio::time::timeout(GUARD, async {
        let (a, b, c) = (
            upstream("a").await,
            upstream("b").await,
            upstream("c").await,
        );
        let dns = DnsServer::start(vec![
            rec(10, 2, a.addr.port()),
            rec(10, 1, b.addr.port()),
            rec(20, 5, c.addr.port()),
        ])
        .await;

        let pool = Pool::builder("users", make_endpoint())
            .srv(Srv::new(NAME).nameserver(dns.addr))
            .algorithm(Algorithm::WeightedRoundRobin)
            .build()
            .unwrap();
        // The first resolution runs in the background; `refresh` waits for one.
        pool.refresh().await.unwrap();
        assert!(dns.queries() >= 1);
        assert_eq!(
            members(&pool),
            sorted(vec![(url(&a), 2), (url(&b), 1)]),
            "only the priority-10 records, with their weights"
        );
        for e in pool.snapshot() {
            assert_eq!(e.source, "dns");
        }

        let lb = Balance::new(pool.clone());
        let mut seen = std::collections::BTreeMap::<String, usize>::new();
        for _ in 0..60 {
            *seen.entry(who(&lb).await).or_default() += 1;
        }
        // Smooth weighted round-robin: exactly the SRV weights' 2:1.
        assert_eq!(
            seen,
            [("a".to_owned(), 40), ("b".to_owned(), 20)].into(),
            "priority 20 is a fallback, weights are the records'"
        );
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_follows_changed_records() {
    tokio::time::timeout(GUARD, async {
        let (a, b, c) = (
            upstream("a").await,
            upstream("b").await,
            upstream("c").await,
        );
        let dns =
            DnsServer::start(vec![rec(10, 1, a.addr.port()), rec(10, 1, b.addr.port())]).await;

        let pool = Pool::builder("users", make_endpoint())
            .srv(
                Srv::new(NAME)
                    .nameserver(dns.addr)
                    .interval(Duration::from_millis(200)),
            )
            .algorithm(Algorithm::RoundRobin)
            .build()
            .unwrap();
        let lb = Balance::new(pool.clone());
        let first = sorted(vec![(url(&a), 1), (url(&b), 1)]);
        wait_for(10, || members(&pool) == first).await;

        // b is deregistered, c registered, a's weight changes: the next
        // re-resolutions (the resolver built once, answers with TTL 0 not
        // served from its cache) see it.
        dns.set(Mode::Answer(vec![
            rec(10, 3, a.addr.port()),
            rec(10, 1, c.addr.port()),
        ]));
        let second = sorted(vec![(url(&a), 3), (url(&c), 1)]);
        wait_for(10, || members(&pool) == second).await;
        let before = dns.queries();
        wait_for(10, || dns.queries() >= before + 2).await;
        assert_eq!(members(&pool), second, "stable while the answer is");

        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20 {
            seen.insert(who(&lb).await);
        }
        assert_eq!(
            seen,
            ["a", "c"].map(String::from).into(),
            "b is gone, c serves"
        );
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_keep_the_last_good_endpoints() {
    tokio::time::timeout(GUARD, async {
        let (a, b) = (upstream("a").await, upstream("b").await);
        let dns =
            DnsServer::start(vec![rec(10, 2, a.addr.port()), rec(10, 1, b.addr.port())]).await;

        let pool = Pool::builder("users", make_endpoint())
            .srv(
                Srv::new(NAME)
                    .nameserver(dns.addr)
                    .interval(Duration::from_millis(200)),
            )
            .build()
            .unwrap();
        let lb = Balance::new(pool.clone());
        let good = sorted(vec![(url(&a), 2), (url(&b), 1)]);
        wait_for(10, || members(&pool) == good).await;

        // SERVFAIL: resolutions fail, the endpoints stay.
        dns.set(Mode::ServFail);
        assert!(pool.refresh().await.is_err(), "SERVFAIL is an error");
        let before = dns.queries();
        wait_for(10, || dns.queries() >= before + 3).await;
        assert_eq!(members(&pool), good);
        assert_eq!(lb.clone().oneshot(get()).await.unwrap().status(), 200);

        // No record at all (NOERROR, empty answer): also kept.
        dns.set(Mode::Answer(Vec::new()));
        assert!(pool.refresh().await.is_err(), "an empty answer is an error");
        assert_eq!(members(&pool), good);

        // Recovery: a good answer replaces them again.
        dns.set(Mode::Answer(vec![rec(10, 1, a.addr.port())]));
        pool.refresh().await.unwrap();
        assert_eq!(members(&pool), vec![(url(&a), 1)]);
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_pool_starts_from_the_previous_endpoints() {
    tokio::time::timeout(GUARD, async {
        let (a, b) = (upstream("a").await, upstream("b").await);
        let dns =
            DnsServer::start(vec![rec(10, 2, a.addr.port()), rec(10, 1, b.addr.port())]).await;
        let srv = || {
            Srv::new(NAME)
                .nameserver(dns.addr)
                .interval(Duration::from_millis(200))
        };
        let old = Pool::builder("users", make_endpoint())
            .srv(srv())
            .build()
            .unwrap();
        let good = sorted(vec![(url(&a), 2), (url(&b), 1)]);
        wait_for(10, || members(&old) == good).await;

        // The nameserver goes away, then a reload builds the pool again:
        // the new pool serves the endpoints the old one had, at once, and
        // keeps them while lookups fail.
        dns.set(Mode::ServFail);
        let new = Pool::builder("users", make_endpoint())
            .srv(srv())
            .build()
            .unwrap();
        assert_eq!(new.adopt_resolved(&old), 2);
        drop(old);
        assert_eq!(members(&new), good);
        let lb = Balance::new(new.clone());
        assert_eq!(lb.clone().oneshot(get()).await.unwrap().status(), 200);
        let before = dns.queries();
        wait_for(10, || dns.queries() >= before + 3).await;
        assert_eq!(members(&new), good);

        // Another interval is the same source.
        let slower = Pool::builder("users", make_endpoint())
            .srv(
                Srv::new(NAME)
                    .nameserver(dns.addr)
                    .interval(Duration::from_secs(60)),
            )
            .build()
            .unwrap();
        assert_eq!(slower.adopt_resolved(&new), 2);
        assert_eq!(members(&slower), good);
        drop(slower);

        // A pool whose source changed takes nothing.
        let other = Pool::builder("users", make_endpoint())
            .srv(Srv::new("_http._tcp.other.test.").nameserver(dns.addr))
            .build()
            .unwrap();
        assert_eq!(other.adopt_resolved(&new), 0);
        assert!(members(&other).is_empty());

        // The next good answer replaces what was taken over.
        dns.set(Mode::Answer(vec![rec(10, 1, a.addr.port())]));
        new.refresh().await.unwrap();
        assert_eq!(members(&new), vec![(url(&a), 1)]);
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_server_keeps_the_last_good_endpoints() {
    tokio::time::timeout(GUARD, async {
        let (a, b) = (upstream("a").await, upstream("b").await);
        let dns =
            DnsServer::start(vec![rec(10, 1, a.addr.port()), rec(10, 1, b.addr.port())]).await;

        let pool = Pool::builder("users", make_endpoint())
            .srv(
                Srv::new(NAME)
                    .nameserver(dns.addr)
                    .interval(Duration::from_millis(200)),
            )
            .build()
            .unwrap();
        let good = sorted(vec![(url(&a), 1), (url(&b), 1)]);
        wait_for(10, || members(&pool) == good).await;

        // The server stops answering: the lookup times out (after the
        // resolver's own timeout and attempts), the endpoints stay.
        dns.set(Mode::Silent);
        let before = dns.queries();
        assert!(pool.refresh().await.is_err(), "a timeout is an error");
        assert!(dns.queries() > before, "the query was sent, and ignored");
        assert_eq!(members(&pool), good);
        let lb = Balance::new(pool.clone());
        assert_eq!(lb.oneshot(get()).await.unwrap().status(), 200);
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_resolve_through_glue_or_the_nameserver() {
    tokio::time::timeout(GUARD, async {
        let (a, b) = (upstream("a").await, upstream("b").await);
        let dns = DnsServer::start(vec![
            // An address in the additional section: no further query.
            (10, 1, a.addr.port(), "glue-a.users.test."),
            // None: an A query to the same server.
            (10, 1, b.addr.port(), "host-b.users.test."),
            // NXDOMAIN: left out, the others still count.
            (10, 1, 1, "gone.users.test."),
        ])
        .await;

        let pool = Pool::builder("users", make_endpoint::<Empty<Bytes>>())
            .srv(Srv::new(NAME).nameserver(dns.addr))
            .build()
            .unwrap();
        pool.refresh().await.unwrap();
        assert_eq!(members(&pool), sorted(vec![(url(&a), 1), (url(&b), 1)]));
        assert_eq!(dns.glue_queries.load(Ordering::SeqCst), 0, "glue used");

        // No target resolves: a failure, the endpoints stay. (The pool's
        // first resolution, started in the background when it was built,
        // may still be in flight on a busy machine, and the resolver
        // shares it with a lookup of the same name: the first refresh
        // may see the old answer.)
        dns.set(Mode::Answer(vec![(10, 1, 1, "gone.users.test.")]));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pool.refresh().await.is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "no target resolves, yet no error"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(members(&pool), sorted(vec![(url(&a), 1), (url(&b), 1)]));
    })
    .await
    .expect("test finished in time");
}

#[tokio::test]
async fn bad_configuration_is_refused() {
    let make = make_endpoint::<Empty<Bytes>>;
    for srv in [
        Srv::new(""),
        Srv::new(NAME).interval(Duration::ZERO),
        Srv::new(NAME).path("no-slash"),
        Srv::new(NAME).nameserver(([127, 0, 0, 1], 0).into()),
        Srv::new(NAME).nameserver(([0, 0, 0, 0], 53).into()),
    ] {
        let shown = format!("{srv:?}");
        assert!(
            Pool::builder("users", make()).srv(srv).build().is_err(),
            "{shown}"
        );
    }
}
