//! The real `towergate` binary as a process: CLI exit codes, graceful
//! shutdown on SIGTERM, SIGHUP reload, and bounded memory while 64 MB
//! stream through in each direction.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic by design

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::routing::{get, post};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use towergate_test::{Upstream, echo_router, spawn_upstream};

const BIN: &str = env!("CARGO_BIN_EXE_towergate");

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("towergate-proc-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

struct Gateway {
    child: Child,
    addr: SocketAddr,
    /// What it logged up to "listening".
    early: Vec<String>,
}

impl Gateway {
    /// Starts the binary and waits until it logs that it listens.
    fn start(config: &Path, addr: SocketAddr) -> Self {
        Self::start_with(config, addr, &[])
    }

    /// [`Gateway::start`] with global options before `run`.
    fn start_with(config: &Path, addr: SocketAddr, options: &[&str]) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.args(options);
        Self::start_command(cmd, config, addr)
    }

    /// [`Gateway::start`] through `cmd` (the binary, or a wrapper that
    /// runs it), to which `run --config` is added.
    fn start_command(mut cmd: Command, config: &Path, addr: SocketAddr) -> Self {
        let mut child = cmd
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[gateway] {line}");
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut early = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(l) if l.contains("listening") => break,
                Ok(l) => early.push(l),
                _ if Instant::now() > deadline => panic!("gateway did not start"),
                _ => {}
            }
        }
        Self { child, addr, early }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    fn peak_rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap()
    }

    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("gateway did not exit");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, listen: SocketAddr, upstream: &str) -> PathBuf {
    write_config_with(dir, listen, upstream, "admin: { enabled: false }\n")
}

fn write_config_with(dir: &Path, listen: SocketAddr, upstream: &str, extra: &str) -> PathBuf {
    let path = dir.join("gateway.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: \"{listen}\"\n{extra}server:\n  max_body: \"100MB\"\n  drain_timeout: \"10s\"\nroutes:\n  - name: all\n    match: {{ path_prefix: \"/\" }}\n    upstream: \"{upstream}\"\n"
        ),
    )
    .unwrap();
    path
}

/// `towergate check --config PATH`.
fn check(path: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(["check", "--config"])
        .arg(path)
        .output()
        .unwrap()
}

#[test]
fn check_reports_errors_with_paths_and_exit_code() {
    let dir = temp_dir("check");
    let good = write_config(
        &dir,
        "127.0.0.1:8080".parse().unwrap(),
        "http://127.0.0.1:7001",
    );
    let out = check(&good);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));

    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "listen: \"127.0.0.1:8080\"\nroutes:\n  - name: a\n    upstream: \"nowhere\"\n    timeout: \"5 years\"\n",
    )
    .unwrap();
    let out = check(&bad);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("routes[0].upstream"), "{err}");
    assert!(err.contains("routes[0].timeout"), "{err}");
    assert!(err.contains("bad.yaml"), "{err}");

    // Checking creates no file: an access log to a file that does not exist
    // yet is fine (its directory must), and stays absent.
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let logged = write_config_with(
        &dir,
        "127.0.0.1:8080".parse().unwrap(),
        "http://127.0.0.1:7001",
        "admin: { enabled: false }\nobservability:\n  access_log: { enabled: true, sink: \"logs/checked.log\" }\n",
    );
    let out = check(&logged);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !dir.join("logs/checked.log").exists(),
        "check created the log file"
    );
    let nowhere = write_config_with(
        &dir,
        "127.0.0.1:8080".parse().unwrap(),
        "http://127.0.0.1:7001",
        "admin: { enabled: false }\nobservability:\n  access_log: { enabled: true, sink: \"missing/dir/x.log\" }\n",
    );
    let out = check(&nowhere);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("observability.access_log.sink"), "{err}");
    // A directory where the file should be: `run` could not open it.
    let a_dir = write_config_with(
        &dir,
        "127.0.0.1:8080".parse().unwrap(),
        "http://127.0.0.1:7001",
        "admin: { enabled: false }\nobservability:\n  access_log: { enabled: true, sink: \"logs\" }\n",
    );
    let out = check(&a_dir);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is a directory"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_every_in_flight_request_then_exits_0() {
    sigterm_drains(&[]).await;
}

/// The same with one worker: the current-thread scheduler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_thread_serves_and_drains_on_sigterm() {
    sigterm_drains(&["--worker-threads", "1"]).await;
}

async fn sigterm_drains(options: &[&str]) {
    let arrived = Arc::new(AtomicUsize::new(0));
    let a2 = arrived.clone();
    let slow = spawn_upstream(Router::new().route(
        "/slow",
        get(move || {
            let a = a2.clone();
            async move {
                a.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1500)).await;
                "done"
            }
        }),
    ))
    .await;
    let dir = temp_dir(&format!("sigterm-{}", options.len()));
    let listen = free_port();
    let cfg = write_config(&dir, listen, &slow.url());
    let mut gw = Gateway::start_with(&cfg, listen, options);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut reqs = Vec::new();
    for _ in 0..10 {
        let c = client.clone();
        let url = format!("http://{}/slow", gw.addr);
        reqs.push(tokio::spawn(async move { c.get(url).send().await }));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while arrived.load(Ordering::SeqCst) < 10 {
        assert!(
            Instant::now() < deadline,
            "requests did not reach the upstream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.signal("-TERM");
    for r in reqs {
        let rsp = r.await.unwrap().expect("in-flight request answered");
        assert_eq!(rsp.status(), 200);
        assert_eq!(rsp.text().await.unwrap(), "done");
    }
    let status = tokio::task::spawn_blocking(move || {
        let s = gw.wait_exit(Duration::from_secs(15));
        (s, gw)
    })
    .await
    .unwrap();
    assert_eq!(status.0.code(), Some(0));
    // No longer accepting.
    assert!(tokio::net::TcpStream::connect(listen).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_bad_file_keeps_serving() {
    let blue = spawn_upstream(echo_router("blue")).await;
    let green = spawn_upstream(echo_router("green")).await;
    let dir = temp_dir("sighup");
    let listen = free_port();
    let cfg = write_config(&dir, listen, &blue.url());
    let gw = Gateway::start(&cfg, listen);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let service = |c: reqwest::Client| async move {
        let v: serde_json::Value = c
            .get(format!("http://{listen}/x"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["service"].as_str().unwrap().to_owned()
    };
    assert_eq!(service(client.clone()).await, "blue");
    // An invalid file: the old config keeps serving.
    std::fs::write(&cfg, "listen: [broken\n").unwrap();
    gw.signal("-HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(service(client.clone()).await, "blue");
    write_config(&dir, listen, &green.url());
    gw.signal("-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if service(client.clone()).await == "green" {
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reopens_the_access_log_after_rotation() {
    let up = spawn_upstream(echo_router("rotated")).await;
    let dir = temp_dir("logrotate");
    // Apart from the configuration, whose directory is watched.
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join("access.log");
    let listen = free_port();
    let cfg = write_config_with(
        &dir,
        listen,
        &up.url(),
        &format!(
            "admin: {{ enabled: false }}\nobservability:\n  access_log: {{ enabled: true, sink: \"{}\" }}\n",
            log.display()
        ),
    );
    let gw = Gateway::start(&cfg, listen);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let fetch = |path: &'static str| {
        let c = client.clone();
        async move {
            let rsp = c
                .get(format!("http://{listen}{path}"))
                .send()
                .await
                .unwrap();
            assert_eq!(rsp.status(), 200);
        }
    };
    let lines_of = |p: &Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let wait_for_line = |p: PathBuf, needle: &'static str| async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !lines_of(&p).iter().any(|l| l.contains(needle)) {
            assert!(Instant::now() < deadline, "{needle} not in {}", p.display());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    fetch("/before-rotation").await;
    wait_for_line(log.clone(), "/before-rotation").await;

    // logrotate's default (`create`): rename, then SIGHUP.
    let rotated = logs.join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    gw.signal("-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.exists() {
        assert!(Instant::now() < deadline, "the log was not opened again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fetch("/after-rotation").await;
    wait_for_line(log.clone(), "/after-rotation").await;
    let old = lines_of(&rotated);
    assert!(
        old.iter().any(|l| l.contains("/before-rotation")),
        "{old:?}"
    );
    assert!(
        !old.iter().any(|l| l.contains("/after-rotation")),
        "{old:?}"
    );
    assert!(
        !lines_of(&log)
            .iter()
            .any(|l| l.contains("/before-rotation"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_cut_off_at_the_drain_timeout_are_logged() {
    // An upstream that answers long after the drain timeout: the request is
    // cut off at shutdown, and its access-log line (499) is written before
    // the process exits.
    let arrived = Arc::new(AtomicUsize::new(0));
    let a2 = arrived.clone();
    let stuck = spawn_upstream(Router::new().fallback(move || {
        a2.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            "late"
        }
    }))
    .await;
    let dir = temp_dir("drain-cut");
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join("access.log");
    let listen = free_port();
    let cfg = dir.join("gateway.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen: \"{listen}\"\nadmin: {{ enabled: false }}\nobservability:\n  access_log: {{ enabled: true, sink: \"{}\" }}\nserver:\n  drain_timeout: \"500ms\"\nroutes:\n  - name: stuck\n    match: {{ path_prefix: \"/\" }}\n    upstream: \"{}\"\n",
            log.display(),
            stuck.url()
        ),
    )
    .unwrap();
    let gw = Gateway::start(&cfg, listen);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let pending =
        tokio::spawn(async move { client.get(format!("http://{listen}/stuck")).send().await });
    // And one over HTTP/2, whose stream runs on a task of its own.
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let pending_h2 =
        tokio::spawn(async move { h2.get(format!("http://{listen}/stuck-h2")).send().await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while arrived.load(Ordering::SeqCst) < 2 {
        assert!(
            Instant::now() < deadline,
            "the request did not reach the upstream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.signal("-TERM");
    let (status, _gw) = tokio::task::spawn_blocking(move || {
        let mut gw = gw;
        let s = gw.wait_exit(Duration::from_secs(15));
        (s, gw)
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(pending.await.unwrap().is_err(), "the connection was cut");
    assert!(
        pending_h2.await.unwrap().is_err(),
        "the HTTP/2 connection was cut"
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    for path in ["\"/stuck\"", "\"/stuck-h2\""] {
        let line = text
            .lines()
            .find(|l| l.contains(path))
            .unwrap_or_else(|| panic!("no line for the cut-off {path}: {text:?}"));
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["status"], 499, "{line}");
    }
}

const MB64: usize = 64 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_megabytes_each_way_with_bounded_memory() {
    let app = Router::new()
        .route(
            "/upload",
            post(|req: Request| async move {
                let mut body = req.into_body();
                let mut n = 0usize;
                while let Some(frame) = body.frame().await {
                    if let Ok(data) = frame.unwrap().into_data() {
                        n += data.len();
                    }
                }
                n.to_string()
            }),
        )
        .route(
            "/download",
            get(|| async {
                let chunk = Bytes::from(vec![7u8; 64 * 1024]);
                let stream = futures_util::stream::iter(
                    (0..MB64 / (64 * 1024)).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
                );
                Body::from_stream(stream)
            }),
        );
    let up = spawn_upstream(app).await;
    let dir = temp_dir("big");
    let listen = free_port();
    let cfg = write_config(&dir, listen, &up.url());
    let gw = Gateway::start(&cfg, listen);
    let baseline = gw.peak_rss_kb();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();

    let chunk = Bytes::from(vec![1u8; 64 * 1024]);
    let stream = futures_util::stream::iter(
        (0..MB64 / (64 * 1024)).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let rsp = client
        .post(format!("http://{}/upload", gw.addr))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.text().await.unwrap(), MB64.to_string());

    let rsp = client
        .get(format!("http://{}/download", gw.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    let mut n = 0;
    let mut s = rsp.bytes_stream();
    while let Some(c) = s.next().await {
        n += c.unwrap().len();
    }
    assert_eq!(n, MB64);

    let peak = gw.peak_rss_kb();
    eprintln!("gateway peak RSS: baseline {baseline} KiB, after 2x64 MB {peak} KiB");
    // Buffering either body would add 64 MB; streaming adds a few buffers.
    assert!(
        peak < baseline + 24 * 1024,
        "gateway memory grew from {baseline} KiB to {peak} KiB while streaming"
    );
}

/// A gateway with an admin listener and `shutdown_delay: delay`, sent
/// SIGTERM and seen draining (`/readyz` 503); with its listen address, a
/// client and its upstream (which stops when dropped).
async fn draining_gateway(
    name: &str,
    delay: &str,
) -> (Gateway, SocketAddr, reqwest::Client, Upstream) {
    let echo = spawn_upstream(echo_router("echo")).await;
    let dir = temp_dir(name);
    let listen = free_port();
    let admin = free_port();
    let cfg = write_config_with(
        &dir,
        listen,
        &echo.url(),
        &format!("admin: {{ listen: \"{admin}\" }}\n"),
    );
    // The delay between "not ready" and closing the listeners.
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "server:\n",
        &format!("server:\n  shutdown_delay: \"{delay}\"\n"),
    );
    std::fs::write(&cfg, text).unwrap();
    let gw = Gateway::start(&cfg, listen);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    // The admin listener may come up just after the gateway's.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.get(format!("http://{admin}/readyz")).send().await {
            Ok(r) => {
                assert_eq!(r.status(), 200);
                break;
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("admin not up: {e}"),
        }
    }
    gw.signal("-TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = client
            .get(format!("http://{admin}/readyz"))
            .send()
            .await
            .unwrap();
        if r.status() == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "readyz never turned 503");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (gw, listen, client, echo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_503_on_sigterm_before_the_listener_closes() {
    let (mut gw, listen, client, _echo) = draining_gateway("readyz", "2s").await;
    // Not ready, yet still serving: the listener closes only after the delay.
    let rsp = client
        .get(format!("http://{listen}/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    let status = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(15)))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_while_draining_stops_at_once() {
    // A delay far longer than the test waits: only the second signal can
    // end the process in time.
    let (mut gw, _, _, _echo) = draining_gateway("second-term", "60s").await;
    gw.signal("-TERM");
    let status = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(1), "a cut drain is not a clean exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_files_limit_is_raised_and_a_low_one_is_warned_about() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("SKIPPED: prlimit (util-linux) is not installed");
        assert!(std::env::var_os("CI").is_none(), "CI must have prlimit");
        return;
    }
    let echo = spawn_upstream(echo_router("echo")).await;
    let dir = temp_dir("nofile");
    let listen = free_port();
    let cfg = write_config_with(&dir, listen, &echo.url(), "admin: { enabled: false }\n");
    // A soft limit of 256 under a hard one of 4096: raised to 4096, which
    // is still below what 10,000 connections need.
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=256:4096", "--", BIN]);
    let gw = Gateway::start_command(cmd, &cfg, listen);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", gw.child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let soft: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(soft[3], "4096", "{line}");
    assert!(
        gw.early
            .iter()
            .any(|l| l.contains("open-files limit is below")),
        "{:?}",
        gw.early
    );
    let rsp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{}/x", gw.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
}

#[test]
fn a_fatal_error_is_one_json_line_with_json_logs() {
    let dir = temp_dir("fatal-json");
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "listen: \"127.0.0.1:0\"\nroutes:\n  - name: a\n    upstream: nowhere\n",
    )
    .unwrap();
    for (format, json) in [("json", true), ("text", false)] {
        let out = Command::new(BIN)
            .args(["--log-format", format, "run", "--config"])
            .arg(&bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{format}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("routes[0].upstream"), "{format}: {err}");
        if json {
            for line in err.lines().filter(|l| !l.trim().is_empty()) {
                let v: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                assert!(v.is_object(), "{line}");
            }
        }
    }
}
