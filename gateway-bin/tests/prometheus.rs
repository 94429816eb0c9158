//! A real Prometheus (Debian's package) scrapes the admin server's
//! `/metrics`, and a PromQL query returns the request count the test made.
//! Without the binary the test is skipped loudly, except in CI.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic by design

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use towergate_test::{echo_router, spawn_upstream};

struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_request_count() {
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "prometheus is required in CI (.ci/run installs it)"
        );
        let _ = writeln!(
            std::io::stderr().lock(),
            "\n*** SKIPPED prometheus_scrapes_the_request_count: no prometheus (apt-get install prometheus) ***\n"
        );
        return;
    }
    let echo = spawn_upstream(echo_router("echo")).await;
    let yaml = format!(
        "listen: \"127.0.0.1:0\"\nroutes:\n  - name: scraped\n    match: {{ path_prefix: \"/\" }}\n    upstream: \"{}\"\n",
        echo.url()
    );
    let cfg = towergate::config::parse_str(&yaml, towergate::config::Format::Yaml).unwrap();
    let gw = towergate::start(towergate::stack::compile(&cfg).unwrap())
        .await
        .unwrap();
    let addr = gw.local_addrs()[0];
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

    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    for _ in 0..37 {
        assert_eq!(
            c.get(format!("http://{addr}/x"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }

    let dir = std::env::temp_dir().join(format!("towergate-prom-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nscrape_configs:\n  - job_name: towergate\n    static_configs:\n      - targets: [\"{}\"]\n",
            admin.addr
        ),
    )
    .unwrap();
    let web = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let _prom = Kill(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let query = "sum(towergate_http_requests_total{route=\"scraped\",status_class=\"2xx\"})";
    let deadline = Instant::now() + Duration::from_secs(60);
    let value = loop {
        let got = async {
            let v: Value = c
                .get(format!("http://{web}/api/v1/query?query={}", encode(query)))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            v["data"]["result"][0]["value"][1]
                .as_str()
                .map(str::to_owned)
        }
        .await;
        if let Some(v) = got {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never returned the series"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(value, "37");
    admin.stop();
    gw.shutdown().await;
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
