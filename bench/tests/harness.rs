//! The benchmark harness's scripts: they are run by hand (docs/benchmarks.md),
//! so these tests keep them from rotting between runs. The shell scripts
//! must parse; `aggregate.py` must turn a run's raw records into the goals
//! it promises (a run made up here, with known figures).
//!
//! bash and python3 are needed; without them the tests say so and pass,
//! except in CI (`CI` set), where they fail.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn bench_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Whether `tool` runs here; outside CI a missing tool skips the test.
fn have(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is needed by the benchmark harness tests (CI is set)"
        );
        eprintln!("SKIPPED: {tool} not found; the benchmark harness test did not run");
    }
    ok
}

fn files(ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(bench_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    out.sort();
    out
}

#[test]
fn scripts_parse() {
    if !have("bash") || !have("python3") {
        return;
    }
    let shells = files("sh");
    assert!(shells.len() >= 3, "{shells:?}");
    for f in shells {
        let out = Command::new("bash").arg("-n").arg(&f).output().unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let pythons = files("py");
    assert!(pythons.len() >= 3, "{pythons:?}");
    for f in pythons {
        // Parsed, not compiled to a file: nothing written into the tree.
        let out = Command::new("python3")
            .args([
                "-c",
                "import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])",
            ])
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn wrk_output(requests: u64, p99: &str, non2xx: u64) -> String {
    let mut s = format!(
        "Running 5s test @ http://127.0.0.1:19004/x\n  Latency Distribution\n     50%  700.00us\n     99%  {p99}\n  {requests} requests in 5.00s, 38.77MB read\n"
    );
    if non2xx > 0 {
        s.push_str(&format!("  Non-2xx or 3xx responses: {non2xx}\n"));
    }
    s.push_str(&format!("Requests/sec:  {}\n", requests / 5));
    s
}

fn rate_output(sent: u64, failed: u64, p99_us: u64) -> String {
    format!(
        "rate: sent {sent} ok {} failed {failed} achieved_rps 5000 p50_us 200 p90_us 300 p99_us {p99_us} p999_us 2000 max_us 3000\n",
        sent - failed
    )
}

/// A run of two rounds made up here: every figure the goals read is known.
#[test]
fn aggregate_computes_the_goals_of_a_run() {
    if !have("python3") {
        return;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let raw =
        std::env::temp_dir().join(format!("towergate-harness-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&raw).unwrap();
    std::fs::write(
        raw.join("machine.txt"),
        "date: test run\nsettings: RATE=5000 CONNS=50\n",
    )
    .unwrap();
    let mut index = String::new();
    let put = |index: &mut String, name: &str, text: String, fields: &str| {
        let path = raw.join(name);
        std::fs::write(&path, text).unwrap();
        index.push_str(&fields.replace("PATH", path.to_str().unwrap()));
        index.push('\n');
    };
    for round in 1..=2 {
        // nginx: 500 ticks for 250,000 requests = 20 µs; towergate 24 µs.
        put(
            &mut index,
            &format!("plain-{round}-nginx.wrk"),
            wrk_output(250_000, "1.00ms", 0),
            &format!(
                "plain\t{round}\tnginx\twrk\tPATH\tproxy_ticks=500\tup_ticks=100\tclk_tck=100\twall=5.0"
            ),
        );
        put(
            &mut index,
            &format!("plain-{round}-towergate.wrk"),
            wrk_output(250_000, "1.20ms", 0),
            &format!(
                "plain\t{round}\ttowergate\twrk\tPATH\tproxy_ticks=600\tup_ticks=100\tclk_tck=100\twall=5.0"
            ),
        );
        // Metrics alone: 20.8 µs against 20 µs with observability off.
        for (label, ticks) in [("tg-obs-off", 500), ("tg-metrics", 520)] {
            put(
                &mut index,
                &format!("metrics-{round}-{label}.wrk"),
                wrk_output(250_000, "1.00ms", 0),
                &format!(
                    "metrics\t{round}\t{label}\twrk\tPATH\tproxy_ticks={ticks}\tclk_tck=100\twall=5.0"
                ),
            );
        }
        // Redis: p99 0.5 ms plain, 0.9 ms limited; 25,000 commands for
        // 25,000 requests.
        put(
            &mut index,
            &format!("redis-{round}-tg-redis-plain.rate"),
            rate_output(25_000, 0, 500),
            &format!(
                "redis\t{round}\ttg-redis-plain\trate\tPATH\tproxy_ticks=50\tclk_tck=100\twall=5.0"
            ),
        );
        put(
            &mut index,
            &format!("redis-{round}-tg-redis.rate"),
            rate_output(25_000, 0, 900),
            &format!("redis\t{round}\ttg-redis\trate\tPATH\tproxy_ticks=70\tclk_tck=100\twall=5.0"),
        );
        index.push_str(&format!(
            "redis\t{round}\ttg-redis\tcommands\t-\tcommands=25000\n"
        ));
    }
    put(
        &mut index,
        "redis-down-tg-redis.rate",
        rate_output(25_000, 0, 800),
        "redis\t1\ttg-redis-down\toutcome\tPATH",
    );
    put(
        &mut index,
        "jwks-1-key-a.wrk",
        wrk_output(600_000, "1.50ms", 0),
        "jwks\t1\tkey-a\twrk\tPATH",
    );
    put(
        &mut index,
        "jwks-1-key-b.wrk",
        wrk_output(300_000, "1.60ms", 7),
        "jwks\t1\tkey-b\twrk\tPATH",
    );
    index.push_str(
        "jwks\t1\ttowergate\tfetches\t-\tfetches=1\twarm_fetches=1\tpublish_after_s=12\n",
    );
    index.push_str("scrape\t1\ttowergate\tscrape\t-\ttime_s=0.040\tbytes=15000000\tlines=210000\troutes=10000\n");
    std::fs::write(raw.join("index.tsv"), index).unwrap();

    let out = Command::new("python3")
        .arg(bench_dir().join("aggregate.py"))
        .arg(&raw)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = |start: &str| -> String {
        text.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no row {start:?} in:\n{text}"))
            .to_string()
    };
    let plain = row("| plain: proxy CPU per request ≤ 0.8× nginx");
    assert!(
        plain.contains("towergate 24.0 µs, nginx 20.0 µs"),
        "{plain}"
    );
    assert!(
        plain.contains("1.200×") && plain.contains("**not met**"),
        "{plain}"
    );
    let p99 = row("| rate limit in Redis: p99");
    assert!(
        p99.contains("0.900 ms vs 0.500 ms") && p99.contains("+0.400 ms"),
        "{p99}"
    );
    assert!(p99.contains("**met**"), "{p99}");
    let trips = row("| rate limit in Redis: one round trip per decision");
    assert!(
        trips.contains("1.000") && trips.contains("**met**"),
        "{trips}"
    );
    let down = row("| rate limit in Redis: Redis stopped under load");
    assert!(
        down.contains("0 failed of 25000") && down.contains("**met**"),
        "{down}"
    );
    // Seven of key b's requests failed: the rotation goal is not met.
    let jwks = row("| JWKS key rotation under load");
    assert!(
        jwks.contains("7 failed of 900000") && jwks.contains("**not met**"),
        "{jwks}"
    );
    let scrape = row("| metrics: a scrape with 10,000 routes' series");
    assert!(
        scrape.contains("40.0 ms") && scrape.contains("**met**"),
        "{scrape}"
    );
    let metrics = row("| metrics alone: CPU per request");
    assert!(
        metrics.contains("20.8 µs vs 20.0 µs")
            && metrics.contains("1.040×")
            && metrics.contains("**met**"),
        "{metrics}"
    );
    std::fs::remove_dir_all(&raw).unwrap();
}
