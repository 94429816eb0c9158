//! The dashboard in a real headless browser (Debian's chromium): the page
//! loads without console errors and shows the demo's routes and upstream
//! health; a screenshot is saved to `target/dashboard.png` for people to
//! look at. Without chromium the test is skipped loudly, except in CI.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic by design

use std::io::Write;
use std::process::Command;
use std::time::Duration;

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|b| {
        Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn run_chromium(
    bin: &str,
    profile: &std::path::Path,
    args: &[&str],
    url: &str,
) -> std::process::Output {
    Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1280,900",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_renders_in_headless_chromium() {
    let Some(bin) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is required in CI (.ci/run installs it)"
        );
        let _ = writeln!(
            std::io::stderr().lock(),
            "\n*** SKIPPED dashboard_renders_in_headless_chromium: no chromium (apt-get install chromium) ***\n"
        );
        return;
    };
    let demo = towergate::demo::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let gw = demo.gateway.local_addrs()[0];
    let admin = towergate::admin::start(
        "127.0.0.1:0".parse().unwrap(),
        towergate::admin::AdminState {
            live: demo.gateway.live(),
            config_path: None,
            token: None,
        },
    )
    .await
    .unwrap();
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    for _ in 0..10 {
        c.get(format!("http://{gw}/users/1")).send().await.unwrap();
    }
    // Active health checks have run at least once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let url = format!("http://{}/", admin.addr);
    let profile = std::env::temp_dir().join(format!("towergate-chromium-{}", std::process::id()));
    let (dom, shot) = tokio::task::spawn_blocking({
        let (bin, url, profile) = (bin.to_owned(), url.clone(), profile.clone());
        move || {
            let dom = run_chromium(&bin, &profile, &["--dump-dom"], &url);
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| {
                    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target")
                });
            let _ = std::fs::create_dir_all(&target);
            let out = target.join("dashboard.png");
            let shot = run_chromium(
                &bin,
                &profile,
                &[&format!("--screenshot={}", out.display())],
                &url,
            );
            (dom, (shot, out))
        }
    })
    .await
    .unwrap();
    let html = String::from_utf8_lossy(&dom.stdout);
    let log = String::from_utf8_lossy(&dom.stderr);
    assert!(!log.contains("Uncaught"), "console errors:\n{log}");
    for route in ["users", "orders", "notifications", "account"] {
        assert!(
            html.contains(&format!("<td>{route}</td>")),
            "route {route} not shown:\n{html}"
        );
    }
    assert!(
        html.contains("<td>healthy</td>"),
        "endpoint health not shown:\n{html}"
    );
    assert!(html.contains("serving"), "{html}");
    let (shot, path) = shot;
    assert!(
        shot.status.success(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    assert!(
        std::fs::metadata(&path).unwrap().len() > 10_000,
        "empty screenshot"
    );
    admin.stop();
    demo.gateway.shutdown().await;
}
