//! An access log: one line per request, written off the request path.
//!
//! [`AccessLogLayer`] captures what a line needs while the request goes
//! through, and when the response body has ended (or the client left) it
//! hands the record to a writer thread over a bounded channel. It never
//! blocks a request: when the writer falls behind, the line is dropped and
//! counted ([`AccessLogLayer::dropped`], and
//! `towergate_access_log_dropped_total` when given a [`Metrics`] handle).
//! Formatting happens on the writer thread.
//!
//! # Lines
//!
//! The default format is one JSON object per line, with these members in
//! this order ([`Field`] and [`AccessLogBuilder::fields`] choose others);
//! a value that is not known is `null`:
//!
//! | member | |
//! |---|---|
//! | `ts` | when the request arrived, RFC 3339 in UTC with milliseconds |
//! | `request_id` | the [`RequestId`](towergate_core::RequestId) |
//! | `trace_id` | the trace, from [`TraceLayer`](crate::TraceLayer) or the incoming `traceparent` |
//! | `client` | [`ClientAddr::client`](towergate_core::ClientAddr), the real client's IP |
//! | `method` | |
//! | `path` | the path as received, **without the query** except the parameters allowed by [`AccessLogBuilder::keep_query_params`] |
//! | `route` | the matched route's name |
//! | `upstream` | the endpoint from [`UpstreamInfo`](crate::UpstreamInfo) |
//! | `status` | `499` when the client left before the response headers, `null` when the inner service failed without a response |
//! | `bytes_in`, `bytes_out` | body bytes, counted as they streamed |
//! | `latency_ms` | from the request to the end of the response body |
//! | `consumer`, `subject` | from the [`Identity`](towergate_core::Identity) |
//!
//! [`LogFormat::Common`] and [`LogFormat::Combined`] write the classic
//! Apache/nginx formats instead (`user` is the subject, or the consumer).
//!
//! No header is ever logged except `User-Agent` and `Referer` (the latter
//! without credentials, fragment or query parameters that are not
//! allowed), and only when asked for: never `Authorization`, cookies, API
//! keys or tokens. Query parameters whose names look like credentials
//! cannot be allowed.
//!
//! Route, upstream and identity are found as for the other layers: see
//! [`Observation`](crate::Observation).
//!
//! ```
//! use std::convert::Infallible;
//! use std::io::Write;
//! use std::sync::{Arc, Mutex};
//! use std::time::{Duration, Instant};
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use towergate_observe::access_log::{AccessLogLayer, Sink};
//!
//! #[derive(Clone, Default)]
//! struct Buffer(Arc<Mutex<Vec<u8>>>);
//! impl Write for Buffer {
//!     fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
//!         self.0.lock().unwrap().extend_from_slice(b);
//!         Ok(b.len())
//!     }
//!     fn flush(&mut self) -> std::io::Result<()> { Ok(()) }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let buffer = Buffer::default();
//! let log = AccessLogLayer::builder().sink(Sink::writer(buffer.clone())).build()?;
//! let svc = ServiceBuilder::new()
//!     .layer(log.clone())
//!     .service(service_fn(|_req: Request<_>| async {
//!         Ok::<_, Infallible>(Response::new(Full::new(bytes::Bytes::from("hello"))))
//!     }));
//! let req = Request::get("/search?q=rust&api_key=s3cr3t")
//!     .header("authorization", "Bearer s3cr3t")
//!     .body(Full::<bytes::Bytes>::default())?;
//! let rsp = svc.oneshot(req).await?;
//! rsp.into_body().collect().await?; // the line is written once the body has ended
//!
//! assert!(log.flush(Duration::from_secs(5)));
//! let text = String::from_utf8(buffer.0.lock().unwrap().clone())?;
//! let line: serde_json::Value = serde_json::from_str(text.trim_end())?;
//! assert_eq!(line["path"], "/search");
//! assert_eq!(line["status"], 200);
//! assert_eq!(line["bytes_out"], 5);
//! assert!(!text.contains("s3cr3t"));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, Instant};

use tower::Layer;

use crate::error::BuildError;
use crate::metrics::Metrics;

mod format;
mod service;

pub(crate) use format::{CUT_MARK, MAX_HEADER, Record, Target};
pub use service::{AccessLog, ResponseFuture};
pub(crate) use service::{BodyWatch, Pending, TraceIdFrom};

use format::Config;

/// The fields of a JSON line by default, in order.
pub const DEFAULT_FIELDS: [Field; 14] = [
    Field::Timestamp,
    Field::RequestId,
    Field::TraceId,
    Field::Client,
    Field::Method,
    Field::Path,
    Field::Route,
    Field::Upstream,
    Field::Status,
    Field::BytesIn,
    Field::BytesOut,
    Field::LatencyMs,
    Field::Consumer,
    Field::Subject,
];

/// The default capacity of the channel to the writer, in lines.
pub const DEFAULT_CAPACITY: usize = 8192;

/// Writes an access-log line per request; see the [module docs](self).
///
/// Clones share the writer thread; it stops (after writing what it was
/// given) when the last clone and the last in-flight request are gone.
#[derive(Clone, Debug)]
#[must_use]
pub struct AccessLogLayer {
    pub(crate) shared: Arc<Shared>,
}

/// Settings for an [`AccessLogLayer`]; see [`AccessLogLayer::builder`].
#[derive(Debug)]
#[must_use]
pub struct AccessLogBuilder {
    sink: Sink,
    format: LogFormat,
    fields: Vec<Field>,
    keep_query: Vec<String>,
    capacity: usize,
    metrics: Option<Metrics>,
}

/// Where lines go.
pub enum Sink {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// A file, opened for appending (created if missing) when the layer is
    /// built.
    File(PathBuf),
    /// Any writer: a pipe, a socket, a buffer in tests.
    Writer(Box<dyn Write + Send>),
}

/// The shape of a line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, with the chosen [`Field`]s.
    #[default]
    Json,
    /// The Common Log Format: `client - user [time] "request" status bytes`.
    Common,
    /// The Combined Log Format: Common plus `"referer" "user-agent"`.
    Combined,
}

/// A member of a JSON line; its key is [`Field::key`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    /// `ts`: when the request arrived (RFC 3339, UTC, milliseconds).
    Timestamp,
    /// `request_id`.
    RequestId,
    /// `trace_id`: 32 hex digits.
    TraceId,
    /// `client`: the real client's IP.
    Client,
    /// `method`.
    Method,
    /// `path`: without the query, except allowed parameters.
    Path,
    /// `route`: the matched route's name.
    Route,
    /// `upstream`: the upstream endpoint.
    Upstream,
    /// `status`.
    Status,
    /// `bytes_in`: request body bytes.
    BytesIn,
    /// `bytes_out`: response body bytes.
    BytesOut,
    /// `latency_ms`: to the end of the response body, 3 decimals.
    LatencyMs,
    /// `consumer`.
    Consumer,
    /// `subject`.
    Subject,
    /// `protocol`: `HTTP/1.1`, `HTTP/2.0`.
    Protocol,
    /// `user_agent` (not in the defaults).
    UserAgent,
    /// `referer`, sanitised like the path (not in the defaults).
    Referer,
}

/// What every clone of the layer and every request in flight share.
pub(crate) struct Shared {
    tx: SyncSender<Msg>,
    pub(crate) config: Arc<Config>,
    dropped: Arc<AtomicU64>,
    metrics: Option<Metrics>,
}

/// Where the writer thread reports lines a failing sink lost: the same
/// count and metric as lines the queue dropped.
#[derive(Default)]
struct Losses {
    dropped: Arc<AtomicU64>,
    metrics: Option<Metrics>,
    /// Whether the sink's last write failed (a warning on each change).
    failing: std::cell::Cell<bool>,
}

impl Losses {
    fn lost(&self, lines: u64) {
        if lines == 0 {
            return;
        }
        self.dropped.fetch_add(lines, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.access_log_lost(lines);
        }
    }

    fn failed(&self, error: &io::Error) {
        if !self.failing.replace(true) {
            tracing::warn!(%error, "access log: the sink fails; lines wait, and are dropped (and counted) past 1 MiB");
        }
    }

    fn recovered(&self) {
        if self.failing.replace(false) {
            tracing::info!("access log: the sink takes lines again");
        }
    }
}

enum Msg {
    Line(Box<Record>),
    Flush(SyncSender<()>),
    /// Write out, then open the file sink again (log rotation); answers
    /// whether the file could be opened.
    Reopen(SyncSender<bool>),
}

/// Query parameter names that may hold credentials: never logged, even
/// when allowed. Narrower than `towergate_core::url_text::CREDENTIAL_WORDS`
/// (which hides values in shown URLs and cache keys, where hiding too much
/// costs nothing): refusing a `keep_query` name has a cost, so `pass`
/// (`passenger`, `compass`), `cookie` and `private` are not among these.
const SECRET_LIKE: [&str; 11] = [
    "token",
    "secret",
    "password",
    "passwd",
    "apikey",
    "api_key",
    "api-key",
    "auth",
    "signature",
    "session",
    "credential",
];

// === impl AccessLogLayer ===

impl AccessLogLayer {
    /// Starts building: JSON to stdout by default.
    pub fn builder() -> AccessLogBuilder {
        AccessLogBuilder {
            sink: Sink::Stdout,
            format: LogFormat::Json,
            fields: DEFAULT_FIELDS.to_vec(),
            keep_query: Vec::new(),
            capacity: DEFAULT_CAPACITY,
            metrics: None,
        }
    }

    /// How many lines were dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Waits until every line handed over so far is written and the sink
    /// flushed, for at most `timeout`; false if that did not happen in
    /// time. It blocks: call it at shutdown, or from a blocking task.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (ack, done) = mpsc::sync_channel(1);
        self.ask(Msg::Flush(ack), &done, timeout).is_some()
    }

    /// Writes out every line handed over so far, then opens the file sink
    /// again by its path, for log rotation: after `logrotate` (or any tool)
    /// renames the file, the following lines go to a new file at the path
    /// instead of the renamed one. The towergate binary does it on SIGHUP.
    ///
    /// True when the file was opened again, within `timeout`. A sink other
    /// than [`Sink::File`] has nothing to reopen (true). If the file cannot
    /// be opened, lines keep going to the old one and the writer logs why.
    /// It blocks, like [`flush`](Self::flush).
    pub fn reopen(&self, timeout: Duration) -> bool {
        let (ack, done) = mpsc::sync_channel(1);
        self.ask(Msg::Reopen(ack), &done, timeout).unwrap_or(false)
    }

    /// Hands `msg` to the writer and waits for its answer on `done`, all
    /// within `timeout`.
    fn ask<T>(&self, msg: Msg, done: &mpsc::Receiver<T>, timeout: Duration) -> Option<T> {
        let deadline = Instant::now() + timeout;
        // The queue is full when the sink stalls (a log shipper that stopped
        // reading a pipe): waiting for room must not outlast the timeout,
        // or a shutdown would hang on it.
        let mut msg = msg;
        loop {
            match self.shared.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return None,
                Err(TrySendError::Full(back)) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    msg = back;
                    std::thread::sleep(left.min(FLUSH_RETRY));
                }
            }
        }
        done.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .ok()
    }
}

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessLog::from_shared(inner, self.shared.clone())
    }
}

// === impl AccessLogBuilder ===

impl AccessLogBuilder {
    /// Where lines go. Default [`Sink::Stdout`].
    pub fn sink(mut self, sink: Sink) -> Self {
        self.sink = sink;
        self
    }

    /// The shape of lines. Default [`LogFormat::Json`].
    pub fn format(mut self, format: LogFormat) -> Self {
        self.format = format;
        self
    }

    /// The members of JSON lines, in order. Default [`DEFAULT_FIELDS`].
    pub fn fields(mut self, fields: impl IntoIterator<Item = Field>) -> Self {
        self.fields = fields.into_iter().collect();
        self
    }

    /// Query parameters kept in the logged path (and referer), by exact
    /// name (`page`, `limit`). Default none: the query is left out. Names
    /// that look like credentials (containing `token`, `secret`,
    /// `password`, `auth`, `session`, `signature`, `api_key`, ...) are
    /// refused at [`build`](Self::build). Both `&` and `;` separate
    /// parameters, so a kept value never carries another one along
    /// (`page=1;access_token=...` logs `page=1`).
    pub fn keep_query_params<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.keep_query = names.into_iter().map(Into::into).collect();
        self
    }

    /// How many lines may wait for the writer before new ones are dropped.
    /// Default [`DEFAULT_CAPACITY`].
    pub fn capacity(mut self, lines: usize) -> Self {
        self.capacity = lines;
        self
    }

    /// Counts dropped lines in `towergate_access_log_dropped_total` too.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Opens the sink, starts the writer thread and builds the layer.
    pub fn build(self) -> Result<AccessLogLayer, BuildError> {
        if self.capacity == 0 {
            return Err(BuildError::new("access log: capacity must be at least 1"));
        }
        if self.format == LogFormat::Json && self.fields.is_empty() {
            return Err(BuildError::new("access log: no fields to log"));
        }
        for name in &self.keep_query {
            let lower = name.to_ascii_lowercase();
            if name.is_empty() {
                return Err(BuildError::new("access log: empty query parameter name"));
            }
            if let Some(s) = SECRET_LIKE.iter().find(|s| lower.contains(*s)) {
                return Err(BuildError::new(format!(
                    "access log: query parameter `{name}` looks like a credential (`{s}`) and is never logged"
                )));
            }
        }
        let (writer, path): (Box<dyn Write + Send>, _) = match self.sink {
            Sink::Stdout => (Box::new(io::stdout()), None),
            Sink::Stderr => (Box::new(io::stderr()), None),
            Sink::File(path) => (
                Box::new(open_append(&path).map_err(|e| {
                    BuildError::with_source(
                        format!("access log: cannot open {}", path.display()),
                        e,
                    )
                })?),
                Some(path),
            ),
            Sink::Writer(w) => (w, None),
        };
        let config = Arc::new(Config::new(self.format, self.fields, self.keep_query));
        let (tx, rx) = mpsc::sync_channel(self.capacity);
        let thread_config = config.clone();
        let dropped = Arc::new(AtomicU64::new(0));
        let losses = Losses {
            dropped: dropped.clone(),
            metrics: self.metrics.clone(),
            failing: std::cell::Cell::new(false),
        };
        std::thread::Builder::new()
            .name("towergate-access-log".into())
            .spawn(move || write_lines(rx, writer, path, &thread_config, &losses))
            .map_err(|e| BuildError::with_source("access log: cannot start the writer", e))?;
        Ok(AccessLogLayer {
            shared: Arc::new(Shared {
                tx,
                config,
                dropped,
                metrics: self.metrics,
            }),
        })
    }
}

// === impl Sink ===

impl Sink {
    /// A file, opened for appending when the layer is built.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Sink::File(path.into())
    }

    /// Any writer.
    pub fn writer(w: impl Write + Send + 'static) -> Self {
        Sink::Writer(Box::new(w))
    }
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sink::Stdout => f.write_str("Stdout"),
            Sink::Stderr => f.write_str("Stderr"),
            Sink::File(p) => f.debug_tuple("File").field(p).finish(),
            Sink::Writer(_) => f.write_str("Writer(..)"),
        }
    }
}

// === impl Field ===

impl Field {
    /// Every field, in declaration order.
    pub(crate) const ALL: [Field; 17] = [
        Field::Timestamp,
        Field::RequestId,
        Field::TraceId,
        Field::Client,
        Field::Method,
        Field::Path,
        Field::Route,
        Field::Upstream,
        Field::Status,
        Field::BytesIn,
        Field::BytesOut,
        Field::LatencyMs,
        Field::Consumer,
        Field::Subject,
        Field::Protocol,
        Field::UserAgent,
        Field::Referer,
    ];

    /// The member's key in a JSON line.
    pub fn key(self) -> &'static str {
        match self {
            Field::Timestamp => "ts",
            Field::RequestId => "request_id",
            Field::TraceId => "trace_id",
            Field::Client => "client",
            Field::Method => "method",
            Field::Path => "path",
            Field::Route => "route",
            Field::Upstream => "upstream",
            Field::Status => "status",
            Field::BytesIn => "bytes_in",
            Field::BytesOut => "bytes_out",
            Field::LatencyMs => "latency_ms",
            Field::Consumer => "consumer",
            Field::Subject => "subject",
            Field::Protocol => "protocol",
            Field::UserAgent => "user_agent",
            Field::Referer => "referer",
        }
    }
}

// === impl Shared ===

impl Shared {
    /// Hands a finished record to the writer, or drops and counts it.
    pub(crate) fn send(&self, record: Box<Record>) {
        match self.tx.try_send(Msg::Line(record)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                if let Some(m) = &self.metrics {
                    m.access_log_dropped();
                }
            }
        }
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

/// How long the writer lets lines gather while they keep coming.
const BATCH_INTERVAL: Duration = Duration::from_millis(5);

/// How often [`AccessLogLayer::flush`] tries again to queue its request
/// while the queue is full.
const FLUSH_RETRY: Duration = Duration::from_millis(1);

/// The writer's buffer: it goes to the sink when within [`MARGIN`] of
/// full (a line is a few hundred bytes), and at the end of every round.
const BUFFER: usize = 64 * 1024;
const MARGIN: usize = 2 * 1024;
/// How much a failing sink may leave unwritten before lines are dropped.
const MAX_BACKLOG: usize = 1024 * 1024;

/// The writer thread: formats and writes lines until every sender is gone.
///
/// While lines keep coming it wakes every [`BATCH_INTERVAL`] and drains the
/// channel, rather than blocking on it: a sender only pays for a wake-up
/// (a system call) when the writer was idle, never once per line.
fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn write_lines(
    rx: Receiver<Msg>,
    mut writer: Box<dyn Write + Send>,
    path: Option<PathBuf>,
    config: &Config,
    losses: &Losses,
) {
    let mut formatter = format::LineFormatter::new(config);
    // Lines are formatted straight into this buffer, which goes to the
    // sink when nearly full and at the end of every round: no copy of a
    // line from a scratch buffer into a `BufWriter`'s.
    let mut buf = Vec::with_capacity(BUFFER);
    // The sink did not take everything this round: the lines wait for the
    // next round rather than trying it again line after line.
    let mut stalled = false;
    let mut handle = |msg: Msg,
                      buf: &mut Vec<u8>,
                      writer: &mut Box<dyn Write + Send>,
                      stalled: &mut bool| match msg {
        Msg::Line(record) => {
            formatter.format(&record, buf);
            buf.push(b'\n');
            if !*stalled && buf.len() >= BUFFER - MARGIN {
                *stalled = !write_out(buf, writer, losses);
            }
        }
        Msg::Flush(ack) => {
            write_out(buf, writer, losses);
            let _ = writer.flush();
            let _ = ack.send(());
        }
        Msg::Reopen(ack) => {
            write_out(buf, writer, losses);
            let _ = writer.flush();
            let reopened = match &path {
                None => true,
                Some(path) => match open_append(path) {
                    Ok(file) => {
                        *writer = Box::new(file);
                        *stalled = false;
                        true
                    }
                    Err(error) => {
                        tracing::warn!(path = %path.display(), %error, "access log: cannot open the file again; lines keep going to the old one");
                        false
                    }
                },
            };
            let _ = ack.send(reopened);
        }
    };
    // Idle: block until something comes.
    while let Ok(first) = rx.recv() {
        handle(first, &mut buf, &mut writer, &mut stalled);
        // Busy: drain in rounds until a round finds nothing.
        loop {
            stalled = !write_out(&mut buf, &mut writer, losses);
            let _ = writer.flush();
            std::thread::sleep(BATCH_INTERVAL);
            let mut drained = 0usize;
            loop {
                match rx.try_recv() {
                    Ok(msg) => {
                        handle(msg, &mut buf, &mut writer, &mut stalled);
                        drained += 1;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        write_out(&mut buf, &mut writer, losses);
                        let _ = writer.flush();
                        return;
                    }
                }
            }
            // Idle again once nothing came and the sink took everything
            // (a sink that failed is tried again next round).
            if drained == 0 && buf.is_empty() {
                break;
            }
        }
    }
    write_out(&mut buf, &mut writer, losses);
    let _ = writer.flush();
}

/// Writes out `buf`, keeping in it what the sink did not take (a sink that
/// fails is tried again the next round, from where it stopped, so no line
/// reaches it cut). A sink that keeps failing loses lines: past
/// [`MAX_BACKLOG`] bytes, only the rest of the line it was in the middle
/// of is kept; the lines dropped are counted in `losses` (the layer's
/// `dropped` and `towergate_access_log_dropped_total`), and the sink's
/// failing and recovering are logged once each.
/// Returns whether the sink took everything.
fn write_out(buf: &mut Vec<u8>, writer: &mut Box<dyn Write + Send>, losses: &Losses) -> bool {
    let mut written = 0;
    while written < buf.len() {
        match writer.write(&buf[written..]) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                losses.failed(&e);
                break;
            }
        }
    }
    if written == buf.len() && written > 0 {
        losses.recovered();
    }
    buf.drain(..written);
    if buf.len() > MAX_BACKLOG {
        let rest_of_line = buf.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
        let lost = buf[rest_of_line..].iter().filter(|&&b| b == b'\n').count();
        losses.lost(u64::try_from(lost).unwrap_or(u64::MAX));
        buf.truncate(rest_of_line);
    }
    // One very long line made it grow: give the memory back.
    if buf.capacity() > 2 * BUFFER {
        buf.shrink_to(BUFFER);
    }
    buf.is_empty()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Takes `take` bytes per write into `out`, or fails.
    struct TestSink {
        out: Arc<Mutex<Vec<u8>>>,
        take: usize,
        fail: bool,
    }

    impl Write for TestSink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.fail {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            let n = buf.len().min(self.take);
            self.out.lock().unwrap().extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn lines(n: usize, from: usize) -> Vec<u8> {
        (from..from + n)
            .flat_map(|i| format!("{{\"line\":{i}}}\n").into_bytes())
            .collect()
    }

    #[test]
    fn what_the_sink_does_not_take_is_kept_for_the_next_round() {
        let losses = Losses::default();
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut writer: Box<dyn Write + Send> = Box::new(TestSink {
            out: out.clone(),
            take: 7,
            fail: false,
        });
        let mut buf = lines(100, 0);
        let all = buf.clone();
        assert!(write_out(&mut buf, &mut writer, &losses));
        assert!(buf.is_empty());
        assert_eq!(*out.lock().unwrap(), all);

        // A sink that fails keeps everything back, then takes it all.
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut failing: Box<dyn Write + Send> = Box::new(TestSink {
            out: out.clone(),
            take: usize::MAX,
            fail: true,
        });
        let mut buf = lines(10, 0);
        assert!(!write_out(&mut buf, &mut failing, &losses));
        assert_eq!(buf, lines(10, 0));
        buf.extend_from_slice(&lines(10, 10));
        let mut working: Box<dyn Write + Send> = Box::new(TestSink {
            out: out.clone(),
            take: 5,
            fail: false,
        });
        assert!(write_out(&mut buf, &mut working, &losses));
        assert!(buf.is_empty());
        assert_eq!(*out.lock().unwrap(), lines(20, 0));
        assert_eq!(losses.dropped.load(Ordering::Relaxed), 0, "nothing lost");
    }

    #[test]
    fn a_sink_that_keeps_failing_loses_whole_lines_only() {
        let metrics = Metrics::new();
        let losses = Losses {
            metrics: Some(metrics.clone()),
            ..Losses::default()
        };
        let out = Arc::new(Mutex::new(Vec::new()));
        // It takes part of a line, then fails from there on.
        let mut writer: Box<dyn Write + Send> = Box::new(TestSink {
            out: out.clone(),
            take: 5,
            fail: false,
        });
        let mut buf = lines(200_000, 0);
        assert!(buf.len() > MAX_BACKLOG);
        // One write of 5 bytes, then the failure.
        let mut once = |buf: &mut Vec<u8>| {
            let n = writer.write(buf).unwrap();
            buf.drain(..n);
        };
        once(&mut buf);
        let mut failing: Box<dyn Write + Send> = Box::new(TestSink {
            out: out.clone(),
            take: 0,
            fail: true,
        });
        assert!(!write_out(&mut buf, &mut failing, &losses));
        // Only the rest of the cut line is kept, so the sink's text stays
        // whole lines once it works again.
        assert!(buf.len() <= MAX_BACKLOG);
        assert_eq!(buf, b"e\":0}\n");
        assert!(buf.capacity() <= 2 * BUFFER);
        // The 199,999 whole lines lost are counted, as dropped lines are
        // (a disk-full outage shows on the metric).
        assert_eq!(losses.dropped.load(Ordering::Relaxed), 199_999);
        assert!(
            metrics
                .encode()
                .contains("towergate_access_log_dropped_total 199999"),
            "{}",
            metrics.encode()
        );
        let mut working: Box<dyn Write + Send> = Box::new(TestSink {
            out: out.clone(),
            take: usize::MAX,
            fail: false,
        });
        assert!(write_out(&mut buf, &mut working, &losses));
        assert_eq!(*out.lock().unwrap(), b"{\"line\":0}\n");
    }
}
