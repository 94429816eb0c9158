//! Helpers shared by the integration tests: real servers on 127.0.0.1, a
//! small forwarding handler standing in for the proxy, an in-memory log
//! sink, and a parser for the metrics page.
#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use towergate_core::ClientAddr;

/// A server task on loopback, aborted when dropped.
pub struct Server {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `app` on `127.0.0.1:0`, recording each request's peer as a
/// [`ClientAddr`] the way the gateway's listener does.
pub async fn serve(app: Router) -> Server {
    let app = app.layer(tower::util::MapRequestLayer::new(|mut req: Request| {
        if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().cloned()
        {
            req.extensions_mut().insert(ClientAddr::direct(peer, false));
        }
        req
    }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    Server { addr, task }
}

/// A handler that forwards the request to `base` (path and query appended)
/// with all its headers, and returns the upstream's answer: what the proxy
/// does, without depending on it.
pub fn forward(
    base: String,
) -> impl Fn(Request) -> std::pin::Pin<Box<dyn Future<Output = Response> + Send>> + Clone + Send + 'static
{
    let client = reqwest::Client::new();
    move |req: Request| {
        let client = client.clone();
        let base = base.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let mut out = client.request(parts.method.clone(), format!("{base}{pq}"));
            for (name, value) in &parts.headers {
                if name != http::header::HOST {
                    out = out.header(name, value);
                }
            }
            let out = out.body(reqwest::Body::wrap_stream(body.into_data_stream()));
            match out.send().await {
                Ok(rsp) => {
                    let mut b = Response::builder().status(rsp.status());
                    for (name, value) in rsp.headers() {
                        if name != http::header::CONTENT_LENGTH
                            && name != http::header::TRANSFER_ENCODING
                        {
                            b = b.header(name, value);
                        }
                    }
                    b.body(Body::from_stream(rsp.bytes_stream())).unwrap()
                }
                Err(_) => StatusCode::BAD_GATEWAY.into_response(),
            }
        })
    }
}

/// A `Write` into shared memory.
#[derive(Clone, Default)]
pub struct MemoryWriter(pub Arc<Mutex<Vec<u8>>>);

impl MemoryWriter {
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    pub fn lines(&self) -> Vec<String> {
        self.text().lines().map(str::to_owned).collect()
    }
}

impl Write for MemoryWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Samples of an OpenMetrics page: `name{labels}` (labels sorted, as
/// `k="v"` joined by `,`) to value. Checks the page's framing on the way.
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics pages end with # EOF"
    );
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let key = match series.split_once('{') {
            None => series.to_owned(),
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').unwrap();
                let mut pairs: Vec<&str> = split_labels(labels);
                pairs.sort_unstable();
                format!("{name}{{{}}}", pairs.join(","))
            }
        };
        assert!(
            out.insert(key, value).is_none(),
            "duplicate series {line:?}"
        );
    }
    out
}

fn split_labels(s: &str) -> Vec<&str> {
    // Values are quoted and may contain commas.
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_quotes => i += 1,
            b'"' => in_quotes = !in_quotes,
            b',' if !in_quotes => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

/// The value of a series in a parsed page, 0 when absent.
pub fn sample(page: &HashMap<String, f64>, series: &str) -> f64 {
    page.get(series).copied().unwrap_or(0.0)
}

/// Polls `f` until it returns `Some`, for up to 5 seconds.
pub async fn eventually<T>(mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..500 {
        if let Some(v) = f() {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("condition not met within 5 s");
}
