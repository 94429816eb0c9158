//! The benchmark client, for what a time-bounded load generator cannot do.
//!
//! - **Count** (default): sends exactly `--requests` GETs over
//!   `--connections` keep-alive connections and exits; the driver of the
//!   instruction and syscall counts, where the count must not vary.
//!   `bench-client --target 127.0.0.1:19004 --requests 2000 --connections 4 --path /`
//! - **Rate** (`--rate R --duration S`): an open-loop load at a fixed rate,
//!   spread over the connections, so proxies are compared at the same load.
//!   A request that waits for its connection to be free is timed from when
//!   it should have been sent (no coordinated omission). Prints
//!   `rate: sent N ok N failed N p50_us .. p90_us .. p99_us .. p999_us .. max_us ..`.
//! - **Idle** (`--idle N --hold S`): opens N connections (in batches of
//!   `--batch`), makes one request on each, prints `ready N alive A`, holds
//!   them for S seconds, then prints `end alive A` (connections the server
//!   closed meanwhile are not alive).
//! - **Until-ok** (`--until-ok PATH [--hup PID] [--timeout S]`): sends SIGHUP
//!   to PID (with `kill`), then polls PATH every millisecond until it
//!   answers 2xx; prints `until-ok ms M polls P`.
//!
//! `--header "Name: value"` adds one header to every request (e.g. a bearer
//! token); `--distinct-header NAME` adds NAME with a value no other request
//! of the run has (`0`, `1`, ...: a rate limit keyed by it sees a new key
//! every time). Every mode exits non-zero when a request fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use towergate_bench::Error;

#[derive(Clone)]
struct Target {
    addr: std::net::SocketAddr,
    path: Arc<str>,
    host: Arc<str>,
    header: Option<(http::HeaderName, http::HeaderValue)>,
    /// `--distinct-header`: a new value on every request.
    distinct: Option<(http::HeaderName, Arc<AtomicUsize>)>,
}

fn main() -> Result<(), Error> {
    let target = Target {
        addr: towergate_bench::addr_arg("--target", "127.0.0.1:19004")?,
        path: Arc::from(towergate_bench::arg("--path", "/")),
        host: Arc::from(towergate_bench::arg("--host", "localhost")),
        header: header_arg()?,
        distinct: distinct_arg()?,
    };
    let conns: usize = towergate_bench::parsed::<usize>("--connections", "4")?.max(1);
    towergate_bench::runtime(1)?.block_on(async move {
        if towergate_bench::has("--idle") {
            let n: usize = towergate_bench::parsed("--idle", "10000")?;
            let batch: usize = towergate_bench::parsed::<usize>("--batch", "64")?.max(1);
            let hold = towergate_bench::secs_arg("--hold", "5")?;
            idle(target, n, batch, hold).await
        } else if towergate_bench::has("--rate") {
            let rate: f64 = towergate_bench::parsed("--rate", "1000")?;
            let duration = towergate_bench::secs_arg("--duration", "5")?;
            fixed_rate(target, conns, rate, duration).await
        } else if towergate_bench::has("--until-ok") {
            let path = towergate_bench::arg("--until-ok", "/");
            let pid = towergate_bench::arg("--hup", "");
            let timeout = towergate_bench::secs_arg("--timeout", "60")?;
            until_ok(
                Target {
                    path: Arc::from(path),
                    ..target
                },
                &pid,
                timeout,
            )
            .await
        } else {
            let requests: usize = towergate_bench::parsed("--requests", "2000")?;
            count(target, conns, requests).await
        }
    })
}

/// `--header "Name: value"`, if given.
fn header_arg() -> Result<Option<(http::HeaderName, http::HeaderValue)>, Error> {
    let h = towergate_bench::arg("--header", "");
    if h.is_empty() {
        return Ok(None);
    }
    let (name, value) = h
        .split_once(':')
        .ok_or_else(|| format!("--header {h}: write \"Name: value\""))?;
    Ok(Some((name.trim().parse()?, value.trim().parse()?)))
}

/// `--distinct-header NAME`, if given.
fn distinct_arg() -> Result<Option<(http::HeaderName, Arc<AtomicUsize>)>, Error> {
    let name = towergate_bench::arg("--distinct-header", "");
    if name.is_empty() {
        return Ok(None);
    }
    Ok(Some((name.trim().parse()?, Arc::new(AtomicUsize::new(0)))))
}

/// Opens a keep-alive HTTP/1.1 connection; `alive` is decremented when the
/// connection ends.
async fn connect(
    t: &Target,
    alive: Option<Arc<AtomicUsize>>,
) -> Result<SendRequest<Empty<Bytes>>, Error> {
    let tcp = TcpStream::connect(t.addr).await?;
    tcp.set_nodelay(true)?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    if let Some(a) = &alive {
        a.fetch_add(1, Ordering::Relaxed);
    }
    tokio::spawn(async move {
        let _ = conn.await;
        if let Some(a) = alive {
            a.fetch_sub(1, Ordering::Relaxed);
        }
    });
    Ok(send)
}

/// One GET; whether it answered 2xx. The body is read to the end.
async fn get(send: &mut SendRequest<Empty<Bytes>>, t: &Target) -> Result<bool, Error> {
    send.ready().await?;
    let mut req = Request::get(&*t.path)
        .header("host", &*t.host)
        .body(Empty::new())?;
    if let Some((name, value)) = &t.header {
        req.headers_mut().insert(name.clone(), value.clone());
    }
    if let Some((name, next)) = &t.distinct {
        let n = next.fetch_add(1, Ordering::Relaxed);
        req.headers_mut()
            .insert(name.clone(), http::HeaderValue::from(n as u64));
    }
    let rsp = send.send_request(req).await?;
    let ok = rsp.status().is_success();
    rsp.into_body().collect().await?;
    Ok(ok)
}

async fn count(t: Target, conns: usize, requests: usize) -> Result<(), Error> {
    let mut tasks = Vec::new();
    for c in 0..conns {
        let n = requests / conns + usize::from(c < requests % conns);
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut send = connect(&t, None).await?;
            let mut failed = 0usize;
            for _ in 0..n {
                if !get(&mut send, &t).await? {
                    failed += 1;
                }
            }
            Ok::<usize, Error>(failed)
        }));
    }
    let mut failed = 0;
    for task in tasks {
        failed += task.await??;
    }
    println!("{requests} requests, {failed} failed");
    if failed > 0 {
        return Err("some requests failed".into());
    }
    Ok(())
}

async fn fixed_rate(t: Target, conns: usize, rate: f64, duration: Duration) -> Result<(), Error> {
    if rate.is_nan() || rate <= 0.0 {
        return Err("--rate must be positive".into());
    }
    // Request i is due at start + i / rate and goes on connection i % conns.
    let total = (rate * duration.as_secs_f64()).round() as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut sends = Vec::with_capacity(conns);
    for _ in 0..conns {
        sends.push(connect(&t, None).await?);
    }
    let start = Instant::now() + Duration::from_millis(20);
    let mut tasks = Vec::new();
    for (c, mut send) in sends.into_iter().enumerate() {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(total / conns + 1);
            let mut failed = 0usize;
            let mut free_at = Instant::now();
            let mut i = c;
            while i < total {
                let due = start + interval.mul_f64(i as f64);
                // Free before its time: sleep, and time from the wake-up so
                // the timer's millisecond granularity is not counted. Busy
                // past its time: time from when it was due.
                let from = if free_at <= due {
                    tokio::time::sleep_until(due.into()).await;
                    Instant::now()
                } else {
                    due
                };
                let ok = get(&mut send, &t).await?;
                free_at = Instant::now();
                if !ok {
                    failed += 1;
                }
                let us =
                    u64::try_from(free_at.duration_since(from).as_micros()).unwrap_or(u64::MAX);
                lat.push(us);
                i += conns;
            }
            Ok::<(Vec<u64>, usize), Error>((lat, failed))
        }));
    }
    let mut all = Vec::with_capacity(total);
    let mut failed = 0;
    for task in tasks {
        let (lat, f) = task.await??;
        all.extend(lat);
        failed += f;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let p = towergate_bench::percentiles(&mut all);
    println!(
        "rate: sent {} ok {} failed {} achieved_rps {:.0} p50_us {} p90_us {} p99_us {} p999_us {} max_us {}",
        p.count,
        p.count - failed,
        failed,
        p.count as f64 / elapsed,
        p.p50,
        p.p90,
        p.p99,
        p.p999,
        p.max
    );
    if failed > 0 {
        return Err("some requests failed".into());
    }
    Ok(())
}

async fn idle(t: Target, n: usize, batch: usize, hold: Duration) -> Result<(), Error> {
    let alive = Arc::new(AtomicUsize::new(0));
    let mut held = Vec::with_capacity(n);
    let mut failed = 0usize;
    let mut opened = 0;
    while opened < n {
        let k = batch.min(n - opened);
        let mut tasks = Vec::with_capacity(k);
        for _ in 0..k {
            let (t, alive) = (t.clone(), alive.clone());
            tasks.push(tokio::spawn(async move {
                let mut send = connect(&t, Some(alive)).await?;
                let ok = get(&mut send, &t).await?;
                Ok::<_, Error>((send, ok))
            }));
        }
        for task in tasks {
            let (send, ok) = task.await??;
            failed += usize::from(!ok);
            held.push(send);
        }
        opened += k;
    }
    // Let the last connection tasks settle before counting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    println!("ready {n} alive {}", alive.load(Ordering::Relaxed));
    tokio::time::sleep(hold).await;
    println!(
        "end alive {} failed {failed}",
        alive.load(Ordering::Relaxed)
    );
    drop(held);
    if failed > 0 {
        return Err("some requests failed".into());
    }
    Ok(())
}

async fn until_ok(t: Target, pid: &str, timeout: Duration) -> Result<(), Error> {
    let mut send = connect(&t, None).await?;
    let start = Instant::now();
    if !pid.is_empty() {
        let status = std::process::Command::new("kill")
            .args(["-HUP", pid])
            .status()?;
        if !status.success() {
            return Err(format!("kill -HUP {pid} failed").into());
        }
    }
    let mut polls = 0usize;
    loop {
        polls += 1;
        let ok = match get(&mut send, &t).await {
            Ok(ok) => ok,
            Err(_) => {
                // The server closed the connection: open another.
                send = connect(&t, None).await?;
                false
            }
        };
        if ok {
            break;
        }
        if start.elapsed() > timeout {
            return Err(format!("{} not ok after {timeout:?}", t.path).into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    println!(
        "until-ok ms {:.1} polls {polls}",
        start.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}
