//! Hot reload: swapping the stack under a steady request loop loses no
//! request; an invalid file leaves the old configuration serving; a file
//! change is picked up by the watcher.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic by design

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{client, gateway_from_file};
use towergate::reload::{ReloadOutcome, reload_now, spawn_reloader};
use towergate_test::{echo_router, spawn_upstream};

fn config(upstream: &str) -> String {
    format!(
        r#"listen: "127.0.0.1:0"
routes:
  - name: svc
    match: {{ path_prefix: "/" }}
    upstream: "{upstream}"
"#
    )
}

/// Writes `text` to a fresh file and starts a gateway from it.
async fn start_from_file(
    name: &str,
    text: &str,
) -> (towergate::RunningGateway, std::path::PathBuf) {
    let path = temp_file(name);
    std::fs::write(&path, text).unwrap();
    let (gw, _) = gateway_from_file(&path).await;
    (gw, path)
}

fn temp_file(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("towergate-reload-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join("gateway.yaml")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_during_a_request_loop_lose_nothing() {
    let blue = spawn_upstream(echo_router("blue")).await;
    let green = spawn_upstream(echo_router("green")).await;
    let (gw, path) = start_from_file("loop", &config(&blue.url())).await;
    let addr = gw.local_addrs()[0];

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, seen) = (stop.clone(), ok.clone(), failed.clone(), seen.clone());
        loops.push(tokio::spawn(async move {
            let c = client();
            // Bounded in count and time.
            let deadline = Instant::now() + Duration::from_secs(20);
            for _ in 0..5000 {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                match c.get(format!("http://{addr}/x")).send().await {
                    Ok(r) if r.status() == 200 => {
                        let v: Value = r.json().await.unwrap();
                        seen.lock()
                            .unwrap()
                            .insert(v["service"].as_str().unwrap().to_owned());
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let live = gw.live();
    for i in 0..20 {
        let up = if i % 2 == 0 { &green } else { &blue };
        std::fs::write(&path, config(&up.url())).unwrap();
        match reload_now(&path, &live) {
            ReloadOutcome::Applied { listeners_changed } => assert!(!listeners_changed),
            ReloadOutcome::Rejected(e) => panic!("{e}"),
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
    assert!(ok.load(Ordering::Relaxed) > 20);
    let seen = seen.lock().unwrap().clone();
    assert!(seen.contains("blue") && seen.contains("green"), "{seen:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn invalid_file_keeps_the_old_config() {
    let blue = spawn_upstream(echo_router("blue")).await;
    let (gw, path) = start_from_file("invalid", &config(&blue.url())).await;
    let addr = gw.local_addrs()[0];
    std::fs::write(
        &path,
        "listen: \"127.0.0.1:0\"\nroutes:\n  - name: svc\n    upstream: \"nowhere\"\n",
    )
    .unwrap();
    match reload_now(&path, &gw.live()) {
        ReloadOutcome::Rejected(e) => assert!(e.has_path("routes[0].upstream"), "{e}"),
        ReloadOutcome::Applied { .. } => panic!("invalid config applied"),
    }
    let v: Value = client()
        .get(format!("http://{addr}/x"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["service"], "blue");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_change_is_picked_up_by_the_watcher() {
    let blue = spawn_upstream(echo_router("blue")).await;
    let green = spawn_upstream(echo_router("green")).await;
    let (gw, path) = start_from_file("watch", &config(&blue.url())).await;
    let addr = gw.local_addrs()[0];
    let reloader = spawn_reloader(path.clone(), gw.live());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Write a new file and move it into place, as deploy tools do.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, config(&green.url())).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    assert_eq!(
        wait_for_service(addr, "green").await,
        "green",
        "the watcher did not reload"
    );
    reloader.abort();
    gw.shutdown().await;
}

/// Asks `/x` until `want` answers or 15 s pass; returns the last answer.
async fn wait_for_service(addr: std::net::SocketAddr, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut service = String::new();
    while Instant::now() < deadline {
        let v: Value = client()
            .get(format!("http://{addr}/x"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        service = v["service"].as_str().unwrap().to_owned();
        if service == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    service
}

/// A Kubernetes ConfigMap volume: `gateway.yaml -> ..data/gateway.yaml`,
/// `..data -> ..2026_1`; an update writes `..2026_2` and swaps the `..data`
/// symlink, and the file named in `--config` gets no event of its own.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_style_symlink_swap_is_picked_up() {
    use std::os::unix::fs::symlink;
    let blue = spawn_upstream(echo_router("blue")).await;
    let green = spawn_upstream(echo_router("green")).await;
    let dir =
        std::env::temp_dir().join(format!("towergate-reload-{}-configmap", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("..2026_1")).unwrap();
    std::fs::write(dir.join("..2026_1/gateway.yaml"), config(&blue.url())).unwrap();
    symlink("..2026_1", dir.join("..data")).unwrap();
    symlink("..data/gateway.yaml", dir.join("gateway.yaml")).unwrap();
    let path = dir.join("gateway.yaml");
    let (gw, addr) = gateway_from_file(&path).await;
    let reloader = spawn_reloader(path.clone(), gw.live());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // What the kubelet does: a new timestamped directory, a new symlink
    // renamed over `..data` (then the old directory removed, left here for
    // after: its removal names the file in the watched target directory,
    // and the swap alone must be enough).
    std::fs::create_dir_all(dir.join("..2026_2")).unwrap();
    std::fs::write(dir.join("..2026_2/gateway.yaml"), config(&green.url())).unwrap();
    symlink("..2026_2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    assert_eq!(
        wait_for_service(addr, "green").await,
        "green",
        "the symlink swap was not picked up"
    );
    reloader.abort();
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reloads_all_apply_and_the_newest_file_wins() {
    // Threads keep writing a newer file and reloading it, as the watcher
    // and `POST /admin/reload` can at the same moment. Reloads take turns
    // and read the file in their turn, so once all are done the live
    // configuration is the newest file, whatever order they finished in.
    fn name(n: usize) -> String {
        format!("v{n}")
    }
    fn text(n: usize) -> String {
        config("http://127.0.0.1:1").replace("name: svc", &format!("name: {}", name(n)))
    }
    let (gw, path) = start_from_file("concurrent", &text(0)).await;
    let live = gw.live();
    let version = Arc::new(std::sync::Mutex::new(0usize));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (live, path, version) = (live.clone(), path.clone(), version.clone());
            std::thread::spawn(move || {
                for _ in 0..15 {
                    {
                        // Each write replaces the file whole (rename), with
                        // a higher version than any before.
                        let mut v = version.lock().unwrap();
                        *v += 1;
                        let tmp = path.with_extension(format!("tmp{t}"));
                        std::fs::write(&tmp, text(*v)).unwrap();
                        std::fs::rename(&tmp, &path).unwrap();
                    }
                    match reload_now(&path, &live) {
                        ReloadOutcome::Applied { .. } => {}
                        ReloadOutcome::Rejected(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let newest = *version.lock().unwrap();
    assert_eq!(newest, 60);
    assert_eq!(live.config().routes[0].name, name(newest));
    assert_eq!(live.reload_stats().ok, 60);
    gw.shutdown().await;
}

/// The `towergate_upstream_*` lines of the metrics page that name `addr`.
fn upstream_series(gw: &towergate::RunningGateway, addr: &str) -> Vec<String> {
    gw.live()
        .registry()
        .metrics()
        .encode()
        .lines()
        .filter(|l| l.starts_with("towergate_upstream_") && l.contains(addr))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_endpoint_loses_its_series() {
    // Endpoint labels are addresses: without this, every endpoint that
    // ever served (DNS discovery, reloads) would stay in /metrics.
    let blue = spawn_upstream(echo_router("blue")).await;
    let green = spawn_upstream(echo_router("green")).await;
    let blue_addr = blue.url().trim_start_matches("http://").to_owned();
    let green_addr = green.url().trim_start_matches("http://").to_owned();
    // No grace, for the test (5 minutes by default).
    let config = |upstream: &str| {
        config(upstream).replace(
            "routes:",
            "observability: { forget_endpoints_after: \"0s\" }\nroutes:",
        )
    };
    let (gw, path) = start_from_file("forget", &config(&blue.url())).await;
    let addr = gw.local_addrs()[0];
    let get = || async {
        // A new connection each time: a kept-alive one holds its stack.
        let rsp = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
            .get(format!("http://{addr}/x"))
            .send()
            .await
            .unwrap();
        rsp.json::<Value>().await.unwrap()["service"].clone()
    };
    assert_eq!(get().await, "blue");
    let before = upstream_series(&gw, &blue_addr);
    assert!(
        before
            .iter()
            .any(|l| l.starts_with("towergate_upstream_requests_total") && l.ends_with(" 1")),
        "{before:#?}"
    );

    std::fs::write(&path, config(&green.url())).unwrap();
    assert!(matches!(
        reload_now(&path, &gw.live()),
        ReloadOutcome::Applied { .. }
    ));
    assert_eq!(get().await, "green");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !upstream_series(&gw, &blue_addr).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{:#?}",
            upstream_series(&gw, &blue_addr)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!upstream_series(&gw, &green_addr).is_empty());

    // Back to blue: its series start again from zero.
    std::fs::write(&path, config(&blue.url())).unwrap();
    assert!(matches!(
        reload_now(&path, &gw.live()),
        ReloadOutcome::Applied { .. }
    ));
    assert_eq!(get().await, "blue");
    let again = upstream_series(&gw, &blue_addr);
    assert!(
        again
            .iter()
            .any(|l| l.starts_with("towergate_upstream_requests_total") && l.ends_with(" 1")),
        "{again:#?}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_serves_renewed_certificates() {
    // A renewal writes the new certificate over the old one (certbot, a
    // Kubernetes secret): after a reload, new connections get it.
    use towergate_test::tls::TestCa;
    let (old_ca, new_ca) = (TestCa::new(), TestCa::new());
    let (old, new) = (old_ca.leaf(&["gw.test"]), new_ca.leaf(&["gw.test"]));
    let echo = spawn_upstream(echo_router("echo")).await;
    let path = temp_file("renewal");
    let dir = path.parent().unwrap().to_path_buf();
    let write_cert = |c: &towergate_test::tls::TestCert| {
        std::fs::write(dir.join("gw.crt"), &c.cert_pem).unwrap();
        std::fs::write(dir.join("gw.key"), &c.key_pem).unwrap();
    };
    write_cert(&old);
    let yaml = format!(
        "listeners:\n  - addr: \"127.0.0.1:0\"\n    tls:\n      certificates:\n        - {{ cert: gw.crt, key: gw.key }}\nroutes:\n  - name: all\n    match: {{ path_prefix: \"/\" }}\n    upstream: \"{}\"\n",
        echo.url()
    );
    std::fs::write(&path, &yaml).unwrap();
    let (gw, addr) = gateway_from_file(&path).await;
    let trusting = |ca: &TestCa| {
        reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.cert_pem.as_bytes()).unwrap())
            .resolve("gw.test", addr)
            .build()
            .unwrap()
    };
    let url = format!("https://gw.test:{}/x", addr.port());
    assert_eq!(
        trusting(&old_ca).get(&url).send().await.unwrap().status(),
        200
    );
    assert!(trusting(&new_ca).get(&url).send().await.is_err());

    write_cert(&new);
    assert!(matches!(
        reload_now(&path, &gw.live()),
        ReloadOutcome::Applied {
            listeners_changed: false
        }
    ));
    assert_eq!(
        trusting(&new_ca).get(&url).send().await.unwrap().status(),
        200
    );
    assert!(trusting(&old_ca).get(&url).send().await.is_err());

    // A listener change that waits for a restart does not hold renewals
    // back: the running listener still gets the next certificate.
    write_cert(&old);
    let with_another = yaml.replacen("routes:", "  - addr: \"127.0.0.1:0\"\nroutes:", 1);
    std::fs::write(&path, &with_another).unwrap();
    assert!(matches!(
        reload_now(&path, &gw.live()),
        ReloadOutcome::Applied {
            listeners_changed: true
        }
    ));
    assert_eq!(
        trusting(&old_ca).get(&url).send().await.unwrap().status(),
        200
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_http2_on_waits_for_the_restart_on_tls_listeners_too() {
    // The listener speaks what it was started with: after a reload that
    // turns `http2` on, its TLS still offers HTTP/1.1 only (offering h2 to
    // a listener that refuses the preface would break every client).
    use towergate_test::tls::TestCa;
    let ca = TestCa::new();
    let cert = ca.leaf(&["gw.test"]);
    let echo = spawn_upstream(echo_router("echo")).await;
    let path = temp_file("alpn");
    let dir = path.parent().unwrap().to_path_buf();
    std::fs::write(dir.join("gw.crt"), &cert.cert_pem).unwrap();
    std::fs::write(dir.join("gw.key"), &cert.key_pem).unwrap();
    let yaml = |http2: bool| {
        format!(
            "listeners:\n  - addr: \"127.0.0.1:0\"\n    http2: {http2}\n    tls:\n      certificates:\n        - {{ cert: gw.crt, key: gw.key }}\nroutes:\n  - name: all\n    match: {{ path_prefix: \"/\" }}\n    upstream: \"{}\"\n",
            echo.url()
        )
    };
    std::fs::write(&path, yaml(false)).unwrap();
    let (gw, addr) = gateway_from_file(&path).await;
    let c = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert_pem.as_bytes()).unwrap())
        .resolve("gw.test", addr)
        .build()
        .unwrap();
    let url = format!("https://gw.test:{}/x", addr.port());
    std::fs::write(&path, yaml(true)).unwrap();
    assert!(matches!(
        reload_now(&path, &gw.live()),
        ReloadOutcome::Applied {
            listeners_changed: true
        }
    ));
    let rsp = c.get(&url).send().await.unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.version(), reqwest::Version::HTTP_11);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_an_ejected_endpoint_out() {
    // A reload (the SIGHUP of a log rotation included) builds new pools:
    // the endpoints' health and ejections come over with them.
    let good = spawn_upstream(echo_router("good")).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let text = format!(
        r#"listen: "127.0.0.1:0"
upstreams:
  app:
    endpoints: ["{}", "http://{dead}"]
    balance: round_robin
    ejection: {{ consecutive_failures: 1, base_time: "5m", max_time: "5m", max_ejected_ratio: 0.5 }}
routes:
  - name: svc
    match: {{ path_prefix: "/" }}
    upstream: app
"#,
        good.url()
    );
    let (gw, path) = start_from_file("keep-ejected", &text).await;
    let addr = gw.local_addrs()[0];
    let ejected = |gw: &towergate::RunningGateway| {
        gw.live()
            .stack()
            .upstream_states()
            .into_iter()
            .flat_map(|(_, eps)| eps)
            .any(|e| e.url.contains(&dead.to_string()) && e.ejected_for_ms.is_some())
    };
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ejected(&gw) {
        assert!(
            Instant::now() < deadline,
            "the dead endpoint was never ejected"
        );
        let _ = c.get(format!("http://{addr}/x")).send().await;
    }
    // The ejection counter, as a scrape of the admin API reads it.
    let admin = towergate::admin::start(
        "127.0.0.1:0".parse().unwrap(),
        towergate::admin::AdminState {
            live: gw.live(),
            config_path: None,
            token: None,
        },
    )
    .await
    .unwrap();
    let ejections = || async {
        let page = client()
            .get(format!("http://{}/metrics", admin.addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        page.lines()
            .find(|l| l.starts_with("towergate_upstream_ejections_total{"))
            .map(|l| l.rsplit(' ').next().unwrap_or("").to_owned())
    };
    let before = ejections().await;
    assert_eq!(before.as_deref(), Some("1"));
    // The same file again, as a SIGHUP would.
    assert!(matches!(
        reload_now(&path, &gw.live()),
        ReloadOutcome::Applied { .. }
    ));
    assert!(ejected(&gw), "the reload put the dead endpoint back");
    // The ejection it kept is not counted again.
    assert_eq!(ejections().await, before);
    gw.shutdown().await;
}
