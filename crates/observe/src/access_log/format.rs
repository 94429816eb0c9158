//! Formatting of access-log lines: JSON, Common and Combined Log Format.
//! Pure: no I/O, no tower; the writer thread calls it.
//!
//! The writer formats a line per request, so the usual line stays off
//! `core::fmt` and the allocator: the date and time of day are formatted
//! once per second and reused, numbers go through `itoa`, trace ids and
//! IPv4 addresses are written by hand, and strings are checked for what
//! to escape 8 bytes at a time. Only IPv6 addresses and the first line of
//! each second use `write!`.

use std::borrow::Cow;
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Method, Uri, Version};
use opentelemetry::trace::TraceId;
use towergate_core::RequestId;

use super::{Field, LogFormat};

/// Everything one line may show, captured on the request path and
/// formatted on the writer thread.
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) start: SystemTime,
    pub(crate) request_id: Option<RequestId>,
    pub(crate) trace_id: Option<TraceId>,
    pub(crate) client: Option<IpAddr>,
    pub(crate) method: Method,
    pub(crate) uri: Target,
    pub(crate) version: Version,
    pub(crate) route: Option<Arc<str>>,
    pub(crate) upstream: Option<Arc<str>>,
    /// `None` when the inner service failed without a response.
    pub(crate) status: Option<u16>,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) latency: Duration,
    pub(crate) subject: Option<String>,
    pub(crate) consumer: Option<String>,
    pub(crate) user_agent: Option<HeaderValue>,
    pub(crate) referer: Option<HeaderValue>,
}

/// The request's path and query as the line shows them, copied out of
/// the request: hyper parses a `Uri` in place, as a slice of the
/// connection's read buffer (8 KiB and more), which a record waiting in
/// the writer's queue would otherwise keep alive (thousands of them when
/// the sink stalls).
#[derive(Debug)]
pub(crate) struct Target {
    /// The path, then `?` and the query if there is one.
    text: Box<str>,
    path_len: usize,
}

/// The most of a path (and of its query) a record keeps: a client may send
/// 60 KiB of path, and a stalled sink's queue holds 8,192 records. A cut
/// value ends with [`CUT_MARK`].
pub(crate) const MAX_PATH: usize = 4096;
/// The most of a `User-Agent` or `Referer` a record keeps.
pub(crate) const MAX_HEADER: usize = 1024;
/// What ends a value that was cut.
pub(crate) const CUT_MARK: &str = "...";

/// `s` if it has at most `max` bytes; else its start, cut on a character
/// boundary with room left for [`CUT_MARK`], which the caller appends.
pub(crate) fn capped(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max - CUT_MARK.len();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Target {
    /// The target as a line shows it: the query only when `keep_query`
    /// names some of its parameters (the rest are filtered when the line
    /// is written), each part capped to [`MAX_PATH`].
    pub(crate) fn of(uri: &Uri, keep_query: bool) -> Self {
        let full = uri.path();
        let path = capped(full, MAX_PATH);
        let cut = path.len() < full.len();
        let query = uri
            .query()
            .filter(|_| keep_query)
            .map(|q| (capped(q, MAX_PATH), q.len() > MAX_PATH));
        if !cut && !query.is_some_and(|(_, cut)| cut) {
            return Self::whole(path, query.map(|(q, _)| q));
        }
        let mut t = String::with_capacity(path.len() + 2 * CUT_MARK.len() + 1);
        t.push_str(path);
        if cut {
            t.push_str(CUT_MARK);
        }
        let path_len = t.len();
        if let Some((q, cut)) = query {
            t.push('?');
            t.push_str(q);
            if cut {
                t.push_str(CUT_MARK);
            }
        }
        Target {
            text: t.into_boxed_str(),
            path_len,
        }
    }

    fn whole(path: &str, query: Option<&str>) -> Self {
        let text: Box<str> = match query {
            Some(q) => {
                let mut t = String::with_capacity(path.len() + 1 + q.len());
                t.push_str(path);
                t.push('?');
                t.push_str(q);
                t.into_boxed_str()
            }
            None => path.into(),
        };
        Target {
            text,
            path_len: path.len(),
        }
    }

    fn path(&self) -> &str {
        self.text.get(..self.path_len).unwrap_or_default()
    }

    fn query(&self) -> Option<&str> {
        self.text.get(self.path_len + 1..)
    }
}

impl std::str::FromStr for Target {
    type Err = http::uri::InvalidUri;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::of(&s.parse()?, true))
    }
}

/// How lines look; shared by the layer and the writer thread.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) format: LogFormat,
    pub(crate) fields: Vec<Field>,
    pub(crate) keep_query: Vec<String>,
    /// What [`Config::wants`] answers, one bit per [`Field`]: it is asked
    /// on every request.
    wanted: u32,
}

/// Formats lines for one writer, remembering what lines share: the JSON
/// text before each member, and the time up to the second.
///
/// Lines are bytes, UTF-8 by construction: every piece is a `str`, a
/// `str` cut at ASCII bytes, or ASCII, so nothing is validated again.
#[derive(Debug)]
pub(crate) struct LineFormatter<'a> {
    config: &'a Config,
    /// Each JSON field with what precedes its value: `{"ts":` for the
    /// first, `,"request_id":` for the others.
    members: Vec<(Field, Before)>,
    rfc3339: SecondText,
    clf: SecondText,
    /// The last client address and its text: a keep-alive client sends
    /// many requests, and a line writes its address once or twice.
    client: Option<(IpAddr, Vec<u8>)>,
}

/// The text before a member's value (at most [`Before::MAX`] bytes: every
/// key is short), kept in a fixed array so that it is copied as one
/// 16-byte move rather than by a call to `memcpy`, 14 times a line.
#[derive(Debug)]
struct Before {
    bytes: [u8; Before::MAX],
    len: usize,
}

/// A time's text up to its second, kept while lines of that second come.
#[derive(Debug, Default)]
struct SecondText {
    secs: Option<u64>,
    text: Vec<u8>,
}

/// A calendar date and time of day, in UTC.
struct Parts {
    y: i64,
    mo: u32,
    d: u32,
    h: u64,
    mi: u64,
    s: u64,
}

// === impl Config ===

impl Config {
    pub(crate) fn new(format: LogFormat, fields: Vec<Field>, keep_query: Vec<String>) -> Self {
        let wants = |field: Field| match format {
            LogFormat::Json => fields.contains(&field),
            LogFormat::Common => false,
            LogFormat::Combined => matches!(field, Field::UserAgent | Field::Referer),
        };
        let wanted = Field::ALL
            .iter()
            .filter(|&&f| wants(f))
            .fold(0, |bits, &f| bits | Self::bit(f));
        Config {
            format,
            fields,
            keep_query,
            wanted,
        }
    }

    /// Whether a line shows `field`.
    pub(crate) fn wants(&self, field: Field) -> bool {
        self.wanted & Self::bit(field) != 0
    }

    fn bit(field: Field) -> u32 {
        1 << field as u32
    }
}

// One bit per field in a `u32`.
const _: () = assert!(Field::ALL.len() <= 32);

// === impl LineFormatter ===

impl<'a> LineFormatter<'a> {
    pub(crate) fn new(config: &'a Config) -> Self {
        let members = config
            .fields
            .iter()
            .enumerate()
            .map(|(i, &field)| {
                let mut text = vec![if i == 0 { b'{' } else { b',' }];
                json_str(&mut text, field.key());
                text.push(b':');
                (field, Before::new(&text))
            })
            .collect();
        LineFormatter {
            config,
            members,
            rfc3339: SecondText::default(),
            clf: SecondText::default(),
            client: None,
        }
    }

    /// Appends one line (without its newline) to `out`.
    pub(crate) fn format(&mut self, r: &Record, out: &mut Vec<u8>) {
        match self.config.format {
            LogFormat::Json => self.json(r, out),
            LogFormat::Common => self.clf(r, out, false),
            LogFormat::Combined => self.clf(r, out, true),
        }
    }

    fn json(&mut self, r: &Record, out: &mut Vec<u8>) {
        let keep = &self.config.keep_query;
        if self.members.is_empty() {
            out.push(b'{');
        }
        for (field, before) in &self.members {
            before.push_to(out);
            match field {
                Field::Timestamp => {
                    let (secs, millis) = since_epoch(r.start);
                    out.push(b'"');
                    out.extend_from_slice(self.rfc3339.get(secs, rfc3339_seconds));
                    push_fraction(out, millis);
                    push_str(out, "Z\"");
                }
                Field::RequestId => json_opt(out, r.request_id.as_ref().map(RequestId::as_str)),
                Field::TraceId => match r.trace_id {
                    Some(t) => {
                        out.push(b'"');
                        push_trace_id(out, t);
                        out.push(b'"');
                    }
                    None => push_str(out, "null"),
                },
                Field::Client => match r.client {
                    Some(ip) => {
                        out.push(b'"');
                        out.extend_from_slice(ip_text(&mut self.client, ip));
                        out.push(b'"');
                    }
                    None => push_str(out, "null"),
                },
                // A method is a token: nothing in it needs escaping.
                Field::Method => {
                    out.push(b'"');
                    push_str(out, r.method.as_str());
                    out.push(b'"');
                }
                Field::Path => {
                    out.push(b'"');
                    write_path(out, &r.uri, keep, json_escape);
                    out.push(b'"');
                }
                Field::Route => json_opt(out, r.route.as_deref()),
                Field::Upstream => json_opt(out, r.upstream.as_deref()),
                Field::Status => match r.status {
                    Some(s) => push_str(out, itoa::Buffer::new().format(s)),
                    None => push_str(out, "null"),
                },
                Field::BytesIn => push_str(out, itoa::Buffer::new().format(r.bytes_in)),
                Field::BytesOut => push_str(out, itoa::Buffer::new().format(r.bytes_out)),
                Field::LatencyMs => push_millis(out, r.latency),
                Field::Consumer => json_opt(out, r.consumer.as_deref()),
                Field::Subject => json_opt(out, r.subject.as_deref()),
                Field::Protocol => json_str(out, version_str(r.version)),
                Field::UserAgent => {
                    json_opt(out, r.user_agent.as_ref().map(lossy).as_deref());
                }
                Field::Referer => match &r.referer {
                    Some(v) => {
                        out.push(b'"');
                        write_sanitized_url(out, &lossy(v), keep, json_escape);
                        out.push(b'"');
                    }
                    None => push_str(out, "null"),
                },
            }
        }
        out.push(b'}');
    }

    /// `client - user [time] "request" status bytes ["referer" "agent"]`.
    fn clf(&mut self, r: &Record, out: &mut Vec<u8>, combined: bool) {
        let keep = &self.config.keep_query;
        match r.client {
            Some(ip) => out.extend_from_slice(ip_text(&mut self.client, ip)),
            None => out.push(b'-'),
        }
        push_str(out, " - ");
        match r.subject.as_deref().or(r.consumer.as_deref()) {
            Some(u) if !u.is_empty() => clf_escape_as(out, u, true),
            _ => out.push(b'-'),
        }
        push_str(out, " [");
        let (secs, _) = since_epoch(r.start);
        out.extend_from_slice(self.clf.get(secs, clf_seconds));
        push_str(out, "] \"");
        push_str(out, r.method.as_str());
        out.push(b' ');
        write_path(out, &r.uri, keep, clf_escape);
        out.push(b' ');
        push_str(out, version_str(r.version));
        push_str(out, "\" ");
        match r.status {
            Some(s) => push_str(out, itoa::Buffer::new().format(s)),
            None => out.push(b'-'),
        }
        if r.bytes_out == 0 {
            push_str(out, " -");
        } else {
            out.push(b' ');
            push_str(out, itoa::Buffer::new().format(r.bytes_out));
        }
        if combined {
            push_str(out, " \"");
            match &r.referer {
                Some(v) => write_sanitized_url(out, &lossy(v), keep, clf_escape),
                None => out.push(b'-'),
            }
            push_str(out, "\" \"");
            match &r.user_agent {
                Some(v) => clf_escape(out, &lossy(v)),
                None => out.push(b'-'),
            }
            out.push(b'"');
        }
    }
}

// === impl Before ===

impl Before {
    const MAX: usize = 16;

    fn new(text: &[u8]) -> Self {
        let mut bytes = [0; Self::MAX];
        // Keys are at most 12 bytes (`"user_agent"` with its quotes), so
        // this never cuts; a test checks every field.
        debug_assert!(text.len() <= Self::MAX, "member prefix too long");
        let len = text.len().min(Self::MAX);
        bytes[..len].copy_from_slice(&text[..len]);
        Self { bytes, len }
    }

    /// Appends the text: all 16 bytes, then the tail beyond it cut off.
    fn push_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.bytes);
        out.truncate(out.len() - (Self::MAX - self.len));
    }
}

// === impl SecondText ===

impl SecondText {
    /// The text of second `secs` since the epoch, as `write` puts it.
    fn get(&mut self, secs: u64, write: fn(&mut Vec<u8>, &Parts)) -> &[u8] {
        if self.secs != Some(secs) {
            self.text.clear();
            write(&mut self.text, &Parts::of(secs));
            self.secs = Some(secs);
        }
        &self.text
    }
}

// === impl Parts ===

impl Parts {
    fn of(secs: u64) -> Self {
        let (y, mo, d) = civil((secs / 86_400) as i64);
        let rem = secs % 86_400;
        Parts {
            y,
            mo,
            d,
            h: rem / 3600,
            mi: rem % 3600 / 60,
            s: rem % 60,
        }
    }
}

/// The path, escaped, and of the query only the parameters whose name is
/// in `keep` (in their original order and encoding): query strings carry
/// API keys and tokens often enough that none is logged unless asked for.
fn write_path(out: &mut Vec<u8>, uri: &Target, keep: &[String], escape: fn(&mut Vec<u8>, &str)) {
    escape(out, uri.path());
    if let Some(q) = uri.query() {
        write_kept_query(out, q, keep, escape);
    }
}

/// `?` and the kept parameters of `query` joined by `&`, escaped; nothing
/// when none is kept.
fn write_kept_query(
    out: &mut Vec<u8>,
    query: &str,
    keep: &[String],
    escape: fn(&mut Vec<u8>, &str),
) {
    if keep.is_empty() {
        return;
    }
    let mut any = false;
    // `;` separates too: servers that read it as `&` would otherwise find
    // a credential inside a kept value (`page=1;access_token=...`).
    for pair in query.split(['&', ';']) {
        let name = pair.split_once('=').map_or(pair, |(k, _)| k);
        if !keep.iter().any(|k| k == name) {
            continue;
        }
        if any {
            out.push(b'&');
        } else if pair.is_empty() {
            continue;
        } else {
            out.push(b'?');
            any = true;
        }
        escape(out, pair);
    }
}

/// A URL (a `Referer`), escaped, without credentials, fragment, or query
/// parameters other than the kept ones.
fn write_sanitized_url(
    out: &mut Vec<u8>,
    url: &str,
    keep: &[String],
    escape: fn(&mut Vec<u8>, &str),
) {
    let url = url.split('#').next().unwrap_or("");
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    // Drop `user:password@` from the authority.
    match base.find("://") {
        Some(i) => {
            let rest = &base[i + 3..];
            let auth_end = rest.find('/').unwrap_or(rest.len());
            match rest[..auth_end].rfind('@') {
                Some(at) => {
                    escape(out, &base[..i + 3]);
                    escape(out, &rest[at + 1..]);
                }
                None => escape(out, base),
            }
        }
        None => escape(out, base),
    }
    if let Some(q) = query {
        write_kept_query(out, q, keep, escape);
    }
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// Borrowed unless the value is not UTF-8.
fn lossy(v: &HeaderValue) -> Cow<'_, str> {
    String::from_utf8_lossy(v.as_bytes())
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
}

/// The text of `ip` (as `Display` writes it), from `last` when it is the
/// address of the line before.
fn ip_text(last: &mut Option<(IpAddr, Vec<u8>)>, ip: IpAddr) -> &[u8] {
    let (seen, text) = last.get_or_insert_with(|| (ip, Vec::new()));
    if *seen != ip || text.is_empty() {
        *seen = ip;
        text.clear();
        towergate_core::write_ip(&mut Bytes(text), ip);
    }
    text
}

/// `fmt::Write` into a line's bytes.
struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// 32 lowercase hex digits, as `Display` writes a trace id.
fn push_trace_id(out: &mut Vec<u8>, id: TraceId) {
    let mut hex = [0u8; 32];
    crate::hex::hex_into(&mut hex, &id.to_bytes());
    out.extend_from_slice(&hex);
}

/// Milliseconds with 3 decimals, rounded to the nearest microsecond (half
/// a microsecond up).
fn push_millis(out: &mut Vec<u8>, d: Duration) {
    let micros = d
        .as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from((d.subsec_nanos() + 500) / 1000));
    push_str(out, itoa::Buffer::new().format(micros / 1000));
    push_fraction(out, (micros % 1000) as u32);
}

/// `.` and three digits of `n` (below 1000).
fn push_fraction(out: &mut Vec<u8>, n: u32) {
    let digit = |d: u32| b'0' + (d % 10) as u8;
    out.extend_from_slice(&[b'.', digit(n / 100), digit(n / 10), digit(n)]);
}

const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn json_opt(out: &mut Vec<u8>, v: Option<&str>) {
    match v {
        Some(s) => json_str(out, s),
        None => push_str(out, "null"),
    }
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    json_escape(out, s);
    out.push(b'"');
}

/// The inside of a JSON string: `"`, `\` and control characters escaped.
fn json_escape(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if !any_byte(bytes, json_escaped, json_escaped_in) {
        // The common case: nothing to escape.
        out.extend_from_slice(bytes);
        return;
    }
    // Escaped bytes are ASCII: the runs between them stay UTF-8.
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !json_escaped(b) {
            continue;
        }
        out.extend_from_slice(&bytes[run..i]);
        match b {
            b'"' => push_str(out, "\\\""),
            b'\\' => push_str(out, "\\\\"),
            b'\n' => push_str(out, "\\n"),
            b'\r' => push_str(out, "\\r"),
            b'\t' => push_str(out, "\\t"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX_LOWER[usize::from(b >> 4)],
                HEX_LOWER[usize::from(b & 0xf)],
            ]),
        }
        run = i + 1;
    }
    out.extend_from_slice(&bytes[run..]);
}

fn json_escaped(b: u8) -> bool {
    (b < 0x20) | (b == b'"') | (b == b'\\') | (b == 0x7f)
}

/// [`json_escaped`] for the 8 bytes of a word: not 0 if it holds for one.
fn json_escaped_in(w: u64) -> u64 {
    bytes_below(w, 0x20) | bytes_equal(w, b'"') | bytes_equal(w, b'\\') | bytes_equal(w, 0x7f)
}

/// Whether `byte` holds for a byte of `bytes`, where `word` tells the same
/// of 8 bytes at once. Strings in a line are short and rarely have anything
/// to escape, so they are read a word at a time and without early exit:
/// a byte at a time costs several times as much.
fn any_byte(bytes: &[u8], byte: impl Fn(u8) -> bool, word: impl Fn(u64) -> u64) -> bool {
    let Some(last) = bytes.len().checked_sub(8) else {
        return bytes.iter().fold(false, |acc, &b| acc | byte(b));
    };
    let load = |eight: &[u8]| {
        let mut w = [0; 8];
        w.copy_from_slice(eight);
        u64::from_le_bytes(w)
    };
    let mut words = bytes.chunks_exact(8);
    let mut found = 0;
    for eight in &mut words {
        found |= word(load(eight));
    }
    // The last bytes, in a word overlapping the previous one.
    found |= word(load(&bytes[last..]));
    found != 0
}

const ONES: u64 = u64::from_le_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);

/// Not 0 if a byte of `w` is below `n` (at most 0x80): a byte below `n`
/// borrows, and ends with its high bit set where it had none. Borrows
/// only start at such a byte, so a word without one gives 0.
fn bytes_below(w: u64, n: u8) -> u64 {
    w.wrapping_sub(ONES * u64::from(n)) & !w & HIGHS
}

/// Not 0 if a byte of `w` is `b`.
fn bytes_equal(w: u64, b: u8) -> u64 {
    bytes_below(w ^ (ONES * u64::from(b)), 1)
}

/// Not 0 if a byte of `w` has its high bit set (is not ASCII).
fn bytes_high(w: u64) -> u64 {
    w & HIGHS
}

/// Escapes as nginx does in its log: `"` and `\` with a backslash, bytes
/// outside printable ASCII as `\xHH`, so that a line stays one line and its
/// quoted fields stay parseable.
fn clf_escape(out: &mut Vec<u8>, s: &str) {
    clf_escape_as(out, s, false);
}

/// [`clf_escape`], with spaces as `_` for a field that must not contain
/// any (the user).
fn clf_escape_as(out: &mut Vec<u8>, s: &str, underscore_spaces: bool) {
    let escaped = |b| clf_escaped(b, underscore_spaces);
    let escaped_in = |w| clf_escaped_in(w, underscore_spaces);
    let bytes = s.as_bytes();
    if !any_byte(bytes, escaped, escaped_in) {
        out.extend_from_slice(bytes);
        return;
    }
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !escaped(b) {
            continue;
        }
        out.extend_from_slice(&bytes[run..i]);
        match b {
            b' ' => out.push(b'_'),
            b'"' => push_str(out, "\\\""),
            b'\\' => push_str(out, "\\\\"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX_UPPER[usize::from(b >> 4)],
                HEX_UPPER[usize::from(b & 0xf)],
            ]),
        }
        run = i + 1;
    }
    out.extend_from_slice(&bytes[run..]);
}

/// Not as is in a Common Log Format line: all but printable ASCII, `"`
/// and `\`, and maybe spaces.
fn clf_escaped(b: u8, spaces: bool) -> bool {
    !(0x20..=0x7e).contains(&b) | (b == b'"') | (b == b'\\') | (spaces & (b == b' '))
}

/// [`clf_escaped`] for the 8 bytes of a word: not 0 if it holds for one.
fn clf_escaped_in(w: u64, spaces: bool) -> u64 {
    let spaces = if spaces { bytes_equal(w, b' ') } else { 0 };
    bytes_below(w, 0x20)
        | bytes_high(w)
        | bytes_equal(w, 0x7f)
        | bytes_equal(w, b'"')
        | bytes_equal(w, b'\\')
        | spaces
}

/// Whole seconds and milliseconds since the epoch; the epoch itself for a
/// time before it (only with a broken clock).
fn since_epoch(t: SystemTime) -> (u64, u32) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    (since.as_secs(), since.subsec_millis())
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// RFC 3339 up to the second, `2026-11-27T08:05:09`; lines add the
/// milliseconds and `Z`.
fn rfc3339_seconds(out: &mut Vec<u8>, p: &Parts) {
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        p.y, p.mo, p.d, p.h, p.mi, p.s
    );
}

/// The Common Log Format time, in UTC: `27/Nov/2026:08:05:09 +0000`.
fn clf_seconds(out: &mut Vec<u8>, p: &Parts) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.get(p.mo as usize - 1).copied().unwrap_or("Jan");
    let _ = write!(
        out,
        "{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000",
        p.d, month, p.y, p.h, p.mi, p.s
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_splits_as_the_uri_does() {
        for s in [
            "/",
            "/users/42",
            "/users/42?page=2&x=%20",
            "/a?",
            "/a??b",
            "http://example.com",
            "http://example.com/p?q=1",
            "example.com:443",
            "*",
        ] {
            let uri: Uri = s.parse().unwrap();
            let t = Target::of(&uri, true);
            assert_eq!(t.path(), uri.path(), "{s}");
            assert_eq!(t.query(), uri.query(), "{s}");
            // Without parameters to keep, no query is kept at all.
            let t = Target::of(&uri, false);
            assert_eq!((t.path(), t.query()), (uri.path(), None), "{s}");
        }
    }

    /// A record keeps at most `MAX_PATH` of a path and of a query, marked
    /// where cut: a stalled sink's queue must not hold 60 KiB paths.
    #[test]
    fn long_targets_are_cut() {
        let long = format!("/{}", "a".repeat(30_000));
        let uri: Uri = format!("{long}?page=2&{}", "q=x&".repeat(5_000))
            .parse()
            .unwrap();
        let t = Target::of(&uri, true);
        assert_eq!(t.path().len(), MAX_PATH);
        assert!(t.path().ends_with(CUT_MARK));
        assert!(t.query().unwrap().starts_with("page=2&"));
        assert_eq!(t.query().unwrap().len(), MAX_PATH);
        let t = Target::of(&uri, false);
        assert_eq!((t.path().len(), t.query()), (MAX_PATH, None));
        // Cut on a character boundary, room left for the mark.
        assert_eq!(capped("é".repeat(3_000).as_str(), 1_000).len(), 996);
    }

    #[test]
    fn target_does_not_keep_the_read_buffer_alive() {
        let (buffer, dropped) = towergate_test::tracked_bytes(b"GET /users/42?page=2 HTTP/1.1");
        // As hyper parses it: a slice of the read buffer.
        let uri = Uri::from_maybe_shared(buffer.slice(4..20)).unwrap();
        let target = Target::of(&uri, true);
        drop(uri);
        drop(buffer);
        assert!(dropped.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(
            (target.path(), target.query()),
            ("/users/42", Some("page=2"))
        );
    }

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis)
    }

    fn record() -> Record {
        Record {
            start: at(1_795_752_000, 42), // 2026-11-27T04:00:00.042Z
            request_id: Some(RequestId(Arc::from("req-1"))),
            trace_id: TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").ok(),
            client: "203.0.113.9".parse().ok(),
            method: Method::GET,
            uri: "/users/42?page=2&api_key=secret&token=t0k".parse().unwrap(),
            version: Version::HTTP_11,
            route: Some(Arc::from("users")),
            upstream: Some(Arc::from("10.0.0.7:8080")),
            status: Some(200),
            bytes_in: 0,
            bytes_out: 512,
            latency: Duration::from_micros(1500),
            subject: Some("alice".into()),
            consumer: Some("acme".into()),
            user_agent: Some(HeaderValue::from_static("curl/8.0 \"x\"")),
            referer: Some(HeaderValue::from_static(
                "https://u:p@site.example/a?token=zzz&page=1#frag",
            )),
        }
    }

    fn config(format: LogFormat, fields: &[Field], keep: &[&str]) -> Config {
        Config::new(
            format,
            fields.to_vec(),
            keep.iter().map(|s| s.to_string()).collect(),
        )
    }

    fn line(c: &Config, r: &Record) -> String {
        text(|out| LineFormatter::new(c).format(r, out))
    }

    /// What `write` appends, which must be UTF-8.
    fn text(write: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        write(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn plain(out: &mut Vec<u8>, s: &str) {
        push_str(out, s);
    }

    /// A deterministic pseudo-random sequence (SplitMix64).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len() as u64) as usize]
        }
    }

    #[test]
    fn times() {
        let ts = config(LogFormat::Json, &[Field::Timestamp], &[]);
        let mut r = record();
        let mut at_time = |t| {
            r.start = t;
            line(&ts, &r)
        };
        assert_eq!(at_time(at(0, 0)), r#"{"ts":"1970-01-01T00:00:00.000Z"}"#);
        assert_eq!(
            at_time(at(1_795_752_000, 42)),
            r#"{"ts":"2026-11-27T04:00:00.042Z"}"#
        );
        // A leap day.
        assert_eq!(
            at_time(at(951_782_400, 999)),
            r#"{"ts":"2000-02-29T00:00:00.999Z"}"#
        );
        // Before the epoch: a broken clock.
        assert_eq!(
            at_time(UNIX_EPOCH - Duration::from_secs(1)),
            r#"{"ts":"1970-01-01T00:00:00.000Z"}"#
        );
        let mut r = record();
        r.start = at(1_795_752_000, 42);
        assert!(
            line(&config(LogFormat::Common, &[], &[]), &r).contains("[27/Nov/2026:04:00:00 +0000]")
        );
    }

    #[test]
    fn every_member_fits_before() {
        for f in Field::ALL {
            // `,"key":`
            assert!(f.key().len() + 4 <= Before::MAX, "{f:?}");
        }
        let mut out = b"x".to_vec();
        Before::new(b",\"status\":").push_to(&mut out);
        assert_eq!(out, b"x,\"status\":");
    }

    #[test]
    fn wants_is_what_the_format_and_fields_say() {
        // `Field::ALL` is every field, in order: a new variant fails to
        // compile here until it has its index (and a place in `ALL`).
        let index = |f: Field| match f {
            Field::Timestamp => 0,
            Field::RequestId => 1,
            Field::TraceId => 2,
            Field::Client => 3,
            Field::Method => 4,
            Field::Path => 5,
            Field::Route => 6,
            Field::Upstream => 7,
            Field::Status => 8,
            Field::BytesIn => 9,
            Field::BytesOut => 10,
            Field::LatencyMs => 11,
            Field::Consumer => 12,
            Field::Subject => 13,
            Field::Protocol => 14,
            Field::UserAgent => 15,
            Field::Referer => 16,
        };
        for (i, f) in Field::ALL.iter().enumerate() {
            assert_eq!(*f as usize, i);
            assert_eq!(index(*f), i);
        }
        assert_eq!(Field::ALL.len(), 17);
        let json = config(LogFormat::Json, &[Field::Path, Field::Referer], &[]);
        for f in Field::ALL {
            assert_eq!(
                json.wants(f),
                matches!(f, Field::Path | Field::Referer),
                "{f:?}"
            );
        }
        let combined = config(LogFormat::Combined, &[], &[]);
        let common = config(LogFormat::Common, &[], &[]);
        for f in Field::ALL {
            let agent = matches!(f, Field::UserAgent | Field::Referer);
            assert_eq!(combined.wants(f), agent, "{f:?}");
            assert!(!common.wants(f));
        }
    }

    #[test]
    fn json_line_has_every_default_field_and_no_secret() {
        let c = config(LogFormat::Json, &super::super::DEFAULT_FIELDS, &["page"]);
        let out = line(&c, &record());
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["ts"], "2026-11-27T04:00:00.042Z");
        assert_eq!(v["request_id"], "req-1");
        assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(v["client"], "203.0.113.9");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/users/42?page=2");
        assert_eq!(v["route"], "users");
        assert_eq!(v["upstream"], "10.0.0.7:8080");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes_in"], 0);
        assert_eq!(v["bytes_out"], 512);
        assert_eq!(v["latency_ms"], 1.5);
        assert_eq!(v["consumer"], "acme");
        assert_eq!(v["subject"], "alice");
        assert!(!out.contains("secret") && !out.contains("t0k"));
        assert!(out.contains(r#","latency_ms":1.500,"#));
    }

    #[test]
    fn json_chosen_fields_and_escaping() {
        let c = config(
            LogFormat::Json,
            &[
                Field::Status,
                Field::UserAgent,
                Field::Referer,
                Field::Protocol,
            ],
            &[],
        );
        let mut r = record();
        r.status = None;
        let out = line(&c, &r);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 4);
        assert!(v["status"].is_null());
        assert_eq!(v["user_agent"], "curl/8.0 \"x\"");
        assert_eq!(v["referer"], "https://site.example/a");
        assert_eq!(v["protocol"], "HTTP/1.1");
    }

    #[test]
    fn common_and_combined() {
        assert_eq!(
            line(&config(LogFormat::Common, &[], &[]), &record()),
            "203.0.113.9 - alice [27/Nov/2026:04:00:00 +0000] \"GET /users/42 HTTP/1.1\" 200 512"
        );
        assert_eq!(
            line(&config(LogFormat::Combined, &[], &["page"]), &record()),
            "203.0.113.9 - alice [27/Nov/2026:04:00:00 +0000] \"GET /users/42?page=2 HTTP/1.1\" 200 512 \
             \"https://site.example/a?page=1\" \"curl/8.0 \\\"x\\\"\""
        );
    }

    #[test]
    fn query_filter_and_url_sanitising() {
        let keep = vec!["a".to_string(), "c".to_string()];
        let kept = |q: &str| text(|out| write_kept_query(out, q, &keep, plain));
        let sanitize = |url: &str| text(|out| write_sanitized_url(out, url, &keep, plain));
        let path = |uri: &str| text(|out| write_path(out, &uri.parse().unwrap(), &keep, plain));
        assert_eq!(kept("a=1&b=2&c&d=4&a=5"), "?a=1&c&a=5");
        assert_eq!(kept("b=2"), "");
        // `;` separates parameters as `&` does: nothing rides along.
        assert_eq!(kept("a=1;token=t&c=2;b"), "?a=1&c=2");
        assert_eq!(kept("token=t;a"), "?a");
        assert_eq!(sanitize("http://x/y?b=1"), "http://x/y");
        assert_eq!(sanitize("http://u@x/y@z"), "http://x/y@z");
        assert_eq!(sanitize("/rel?a=1"), "/rel?a=1");
        assert_eq!(
            sanitize("https://u:p@h/p?c=3&token=t#a=1"),
            "https://h/p?c=3"
        );
        assert_eq!(path("/p?x=1"), "/p");
        assert_eq!(path("/p?c=%20&x=1&a"), "/p?c=%20&a");
    }

    #[test]
    fn clf_escapes_control_and_quotes() {
        let out = text(|out| clf_escape(out, "a\"b\\c\nd\u{e9}"));
        assert_eq!(out, "a\\\"b\\\\c\\x0Ad\\xC3\\xA9");
        let out = text(|out| clf_escape_as(out, "\u{e9} a\x7f b ", true));
        assert_eq!(out, "\\xC3\\xA9_a\\x7F_b_");
    }

    #[test]
    fn json_escapes_in_runs() {
        let out = text(|out| json_str(out, "\u{e9}t\u{e9} \"q\"\\\n\r\t\x01\x1f\x7f \u{1f600}x"));
        assert_eq!(
            out,
            "\"\u{e9}t\u{e9} \\\"q\\\"\\\\\\n\\r\\t\\u0001\\u001f\\u007f \u{1f600}x\""
        );
        // Longer than a block, with the character to escape in each place.
        for i in 0..40 {
            let mut s = "abcdefghijklmnopqrstuvwxyz0123456789ABCD".to_string();
            s.replace_range(i..=i, "\"");
            let out = text(|out| json_str(out, &s));
            assert_eq!(out, previous::json(&s), "{s}");
        }
    }

    /// The word-at-a-time scan against the byte predicates, with each byte
    /// value in each place of some lengths, among each other byte value.
    #[test]
    fn scans_find_what_bytes_find() {
        type Scan<'a> = (&'a dyn Fn(u8) -> bool, &'a dyn Fn(u64) -> u64);
        let scans: [Scan<'_>; 3] = [
            (&json_escaped, &json_escaped_in),
            (&|b| clf_escaped(b, false), &|w| clf_escaped_in(w, false)),
            (&|b| clf_escaped(b, true), &|w| clf_escaped_in(w, true)),
        ];
        for (byte, word) in scans {
            let check = |bytes: &[u8]| {
                assert_eq!(
                    any_byte(bytes, byte, word),
                    bytes.iter().any(|&b| byte(b)),
                    "{bytes:?}"
                );
            };
            for len in [1, 7, 8, 9, 13, 16, 17] {
                for place in [0, len / 2, len - 1] {
                    for filler in 0..=255 {
                        let mut bytes = vec![filler; len];
                        for b in 0..=255 {
                            bytes[place] = b;
                            check(&bytes);
                        }
                    }
                }
            }
            let mut rng = Rng(5);
            for _ in 0..100_000 {
                let len = rng.below(40) as usize;
                // Mostly bytes that are kept, so that the one that is not
                // decides.
                let bytes: Vec<u8> = (0..len)
                    .map(|_| match rng.below(64) {
                        0 => rng.next() as u8,
                        _ => b'!' + rng.below(90) as u8,
                    })
                    .collect();
                check(&bytes);
            }
        }
    }

    #[test]
    fn latency_matches_float_formatting() {
        let check = |d: Duration| {
            let out = text(|out| push_millis(out, d));
            let old = format!("{:.3}", d.as_secs_f64() * 1e3);
            if out != old {
                // Only where the old float value was a tie in decimal:
                // a whole number of microseconds and a half.
                assert_eq!(d.subsec_nanos() % 1000, 500, "{d:?}: {out} != {old}");
            }
        };
        // Every nanosecond up to 3 ms.
        for n in 0..3_000_000 {
            check(Duration::from_nanos(n));
        }
        // Around every microsecond boundary up to 10 s, and anything up to
        // a day and a half.
        let mut rng = Rng(7);
        for _ in 0..1_000_000 {
            let micros = rng.below(10_000_000);
            check(Duration::from_nanos(micros * 1000 + 495 + rng.below(10)));
            check(Duration::new(
                rng.below(130_000),
                rng.below(1_000_000_000) as u32,
            ));
        }
        let out = text(|out| push_millis(out, Duration::MAX));
        assert_eq!(out, "18446744073709551.615");
    }

    #[test]
    fn ip_addresses_like_display() {
        // One cache through all of them: each address follows another one
        // (the text is made again) or itself (it is reused).
        let mut last = None;
        let mut check = |ip: IpAddr| {
            for _ in 0..2 {
                let out = String::from_utf8(ip_text(&mut last, ip).to_vec()).unwrap();
                assert_eq!(out, ip.to_string());
            }
        };
        for octet in 0..=255u8 {
            for place in 0..4 {
                let mut o = [1, 20, 255, 3];
                o[place] = octet;
                check(IpAddr::from(o));
                check(IpAddr::from([octet; 4]));
            }
        }
        let mut rng = Rng(42);
        for _ in 0..100_000 {
            check(IpAddr::from((rng.next() as u32).to_be_bytes()));
        }
        for v6 in [
            "::",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:192.0.2.1",
            "fe80::1:2:3:4",
            "1:2:3:4:5:6:7:8",
        ] {
            check(v6.parse().unwrap());
        }
        for _ in 0..10_000 {
            let bits = u128::from(rng.next()) << 64 | u128::from(rng.next());
            // Runs of zero groups, so that `::` is exercised.
            check(IpAddr::from((bits & u128::from(rng.next())).to_be_bytes()));
        }
    }

    #[test]
    fn trace_ids_like_display() {
        let mut rng = Rng(3);
        let ids = [0, 1, u128::MAX, 0xf0]
            .into_iter()
            .chain((0..10_000).map(|_| u128::from(rng.next()) << 64 | u128::from(rng.next())));
        for id in ids.map(TraceId::from) {
            let out = text(|out| push_trace_id(out, id));
            assert_eq!(out, id.to_string());
        }
    }

    #[test]
    fn second_cache_follows_the_clock() {
        for format in [LogFormat::Json, LogFormat::Common] {
            let c = config(format, &[Field::Timestamp, Field::Status], &[]);
            let mut f = LineFormatter::new(&c);
            let mut r = record();
            // Forwards over a day boundary, and back (a slow request
            // logged after quicker ones).
            for ms in [
                86_399_998, 86_399_999, 86_400_000, 86_400_001, 86_399_999, 86_401_000, 0,
            ] {
                r.start = UNIX_EPOCH + Duration::from_millis(ms);
                let out = text(|out| f.format(&r, out));
                assert_eq!(out, line(&c, &r));
                assert_eq!(out, previous::line(&c, &r));
            }
        }
    }

    /// Lines as the `core::fmt` formatter before this one wrote them, over
    /// records of every kind: same bytes, except latencies on a tie.
    #[test]
    fn same_lines_as_before() {
        let all: Vec<Field> = super::super::DEFAULT_FIELDS
            .into_iter()
            .chain([Field::Protocol, Field::UserAgent, Field::Referer])
            .collect();
        let configs = [
            config(LogFormat::Json, &super::super::DEFAULT_FIELDS, &[]),
            config(LogFormat::Json, &all, &["page", "q"]),
            config(LogFormat::Common, &[], &[]),
            config(LogFormat::Combined, &[], &["page"]),
        ];
        let mut formatters: Vec<_> = configs.iter().map(LineFormatter::new).collect();
        let uris = [
            "/",
            "/users/42",
            "/users/42?page=2&api_key=secret&token=t0k",
            "/s?q=a%22b&page=&page=3&x",
            "/p%20q?&&page",
            "*",
            "http://h.example/abs?q=1",
        ];
        let agents: [&[u8]; 5] = [
            b"curl/8.0",
            b"Mozilla/5.0 (X11; Linux x86_64) \"quoted\" \\slash",
            b"caf\xc3\xa9",
            b"bad \xff\xfe utf-8",
            b"",
        ];
        let referers = [
            "https://u:p@site.example/a?token=zzz&page=1#frag",
            "http://x/y@z?page=2",
            "/relative?q=1&page=2",
            "https://site.example",
            "not a url",
        ];
        let users = ["alice", "", "bob smith", "\u{e9}ve \"x\"", "tab\tnl\n"];
        let mut rng = Rng(1);
        let mut start = at(1_795_752_000, 0);
        for _ in 0..20_000 {
            // Mostly forwards, now and then back a little.
            start += Duration::from_micros(rng.below(400_000));
            start -= Duration::from_micros(rng.below(100_000));
            let client = match rng.below(3) {
                0 => None,
                1 => Some(IpAddr::from((rng.next() as u32).to_be_bytes())),
                _ => Some(IpAddr::from(
                    (u128::from(rng.next()) << 64 & u128::from(rng.next())).to_be_bytes(),
                )),
            };
            let header = |b: &[u8]| HeaderValue::from_bytes(b).ok();
            let r = Record {
                start,
                request_id: (rng.below(4) > 0)
                    .then(|| RequestId(Arc::from(rng.pick(&["req-1", "a\"b", "0193f5a2"])))),
                trace_id: (rng.below(2) > 0)
                    .then(|| TraceId::from(u128::from(rng.next()) << 64 | u128::from(rng.next()))),
                client,
                method: [
                    Method::GET,
                    Method::POST,
                    Method::from_bytes(b"PURGE").unwrap(),
                ][rng.below(3) as usize]
                    .clone(),
                uri: rng.pick(&uris).parse().unwrap(),
                version: [Version::HTTP_10, Version::HTTP_11, Version::HTTP_2]
                    [rng.below(3) as usize],
                route: (rng.below(2) > 0).then(|| Arc::from(rng.pick(&["users", "r\\n"]))),
                upstream: (rng.below(2) > 0).then(|| Arc::from("10.0.0.7:8080")),
                status: (rng.below(5) > 0).then(|| rng.below(600) as u16),
                bytes_in: if rng.below(3) > 0 {
                    rng.next() >> rng.below(64)
                } else {
                    0
                },
                bytes_out: if rng.below(3) > 0 {
                    rng.next() >> rng.below(64)
                } else {
                    0
                },
                // Up to five hours.
                latency: Duration::from_nanos(rng.next() >> (20 + rng.below(44))),
                subject: (rng.below(2) > 0).then(|| rng.pick(&users).to_string()),
                consumer: (rng.below(2) > 0).then(|| rng.pick(&users).to_string()),
                user_agent: (rng.below(2) > 0)
                    .then(|| header(agents[rng.below(agents.len() as u64) as usize]))
                    .flatten(),
                referer: (rng.below(2) > 0)
                    .then(|| header(rng.pick(&referers).as_bytes()))
                    .flatten(),
            };
            let tie = r.latency.subsec_nanos() % 1000 == 500;
            for (c, f) in configs.iter().zip(&mut formatters) {
                let out = text(|out| f.format(&r, out));
                let old = previous::line(c, &r);
                if tie && c.fields.contains(&Field::LatencyMs) {
                    continue;
                }
                assert_eq!(out, old, "{r:?}");
                if c.format == LogFormat::Json {
                    let _: serde_json::Value = serde_json::from_str(&out).unwrap();
                }
            }
        }
    }

    /// The formatter as it was, on `core::fmt`, to compare with.
    mod previous {
        use std::fmt::Write as _;

        use super::super::*;

        pub(super) fn line(c: &Config, r: &Record) -> String {
            let mut out = String::new();
            match c.format {
                LogFormat::Json => json_line(c, r, &mut out),
                LogFormat::Common => clf(c, r, &mut out, false),
                LogFormat::Combined => clf(c, r, &mut out, true),
            }
            out
        }

        pub(super) fn json(s: &str) -> String {
            let mut out = String::new();
            json_str(&mut out, s);
            out
        }

        fn json_line(c: &Config, r: &Record, out: &mut String) {
            out.push('{');
            for (i, field) in c.fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_str(out, field.key());
                out.push(':');
                match field {
                    Field::Timestamp => json_display(out, rfc3339(r.start)),
                    Field::RequestId => json_opt(out, r.request_id.as_ref().map(RequestId::as_str)),
                    Field::TraceId => match r.trace_id {
                        Some(t) => json_display(out, t),
                        None => out.push_str("null"),
                    },
                    Field::Client => match r.client {
                        Some(ip) => json_display(out, ip),
                        None => out.push_str("null"),
                    },
                    Field::Method => json_str(out, r.method.as_str()),
                    Field::Path => json_str(out, &path_and_kept_query(&r.uri, &c.keep_query)),
                    Field::Route => json_opt(out, r.route.as_deref()),
                    Field::Upstream => json_opt(out, r.upstream.as_deref()),
                    Field::Status => match r.status {
                        Some(s) => {
                            let _ = write!(out, "{s}");
                        }
                        None => out.push_str("null"),
                    },
                    Field::BytesIn => {
                        let _ = write!(out, "{}", r.bytes_in);
                    }
                    Field::BytesOut => {
                        let _ = write!(out, "{}", r.bytes_out);
                    }
                    Field::LatencyMs => {
                        let _ = write!(out, "{:.3}", r.latency.as_secs_f64() * 1e3);
                    }
                    Field::Consumer => json_opt(out, r.consumer.as_deref()),
                    Field::Subject => json_opt(out, r.subject.as_deref()),
                    Field::Protocol => json_str(out, version_str(r.version)),
                    Field::UserAgent => {
                        json_opt(out, r.user_agent.as_ref().map(lossy).as_deref());
                    }
                    Field::Referer => json_opt(
                        out,
                        r.referer
                            .as_ref()
                            .map(|v| sanitize_url(&lossy(v), &c.keep_query))
                            .as_deref(),
                    ),
                }
            }
            out.push('}');
        }

        fn clf(c: &Config, r: &Record, out: &mut String, combined: bool) {
            match r.client {
                Some(ip) => {
                    let _ = write!(out, "{ip}");
                }
                None => out.push('-'),
            }
            out.push_str(" - ");
            match r.subject.as_deref().or(r.consumer.as_deref()) {
                Some(u) if !u.is_empty() => clf_escape(out, &u.replace(' ', "_")),
                _ => out.push('-'),
            }
            out.push_str(" [");
            out.push_str(&clf_time(r.start));
            out.push_str("] \"");
            clf_escape(out, r.method.as_str());
            out.push(' ');
            clf_escape(out, &path_and_kept_query(&r.uri, &c.keep_query));
            out.push(' ');
            out.push_str(version_str(r.version));
            out.push_str("\" ");
            match r.status {
                Some(s) => {
                    let _ = write!(out, "{s}");
                }
                None => out.push('-'),
            }
            if r.bytes_out == 0 {
                out.push_str(" -");
            } else {
                let _ = write!(out, " {}", r.bytes_out);
            }
            if combined {
                out.push_str(" \"");
                match &r.referer {
                    Some(v) => clf_escape(out, &sanitize_url(&lossy(v), &c.keep_query)),
                    None => out.push('-'),
                }
                out.push_str("\" \"");
                match &r.user_agent {
                    Some(v) => clf_escape(out, &lossy(v)),
                    None => out.push('-'),
                }
                out.push('"');
            }
        }

        fn path_and_kept_query(uri: &Target, keep: &[String]) -> String {
            let path = uri.path();
            match uri.query() {
                Some(q) if !keep.is_empty() => {
                    let kept = filter_query(q, keep);
                    if kept.is_empty() {
                        path.to_owned()
                    } else {
                        format!("{path}?{kept}")
                    }
                }
                _ => path.to_owned(),
            }
        }

        fn filter_query(query: &str, keep: &[String]) -> String {
            let mut out = String::new();
            for pair in query.split(['&', ';']) {
                let name = pair.split_once('=').map_or(pair, |(k, _)| k);
                if keep.iter().any(|k| k == name) {
                    if !out.is_empty() {
                        out.push('&');
                    }
                    out.push_str(pair);
                }
            }
            out
        }

        fn sanitize_url(url: &str, keep: &[String]) -> String {
            let url = url.split('#').next().unwrap_or("");
            let (base, query) = match url.split_once('?') {
                Some((b, q)) => (b, Some(q)),
                None => (url, None),
            };
            let base = match base.find("://") {
                Some(i) => {
                    let rest = &base[i + 3..];
                    let auth_end = rest.find('/').unwrap_or(rest.len());
                    match rest[..auth_end].rfind('@') {
                        Some(at) => format!("{}{}", &base[..i + 3], &rest[at + 1..]),
                        None => base.to_owned(),
                    }
                }
                None => base.to_owned(),
            };
            match query.map(|q| filter_query(q, keep)) {
                Some(q) if !q.is_empty() => format!("{base}?{q}"),
                _ => base,
            }
        }

        fn lossy(v: &HeaderValue) -> String {
            String::from_utf8_lossy(v.as_bytes()).into_owned()
        }

        fn json_opt(out: &mut String, v: Option<&str>) {
            match v {
                Some(s) => json_str(out, s),
                None => out.push_str("null"),
            }
        }

        fn json_str(out: &mut String, s: &str) {
            out.push('"');
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if (c as u32) < 0x20 || c == '\u{7f}' => {
                        let _ = write!(out, "\\u{:04x}", c as u32);
                    }
                    c => out.push(c),
                }
            }
            out.push('"');
        }

        fn json_display(out: &mut String, v: impl std::fmt::Display) {
            let _ = write!(out, "\"{v}\"");
        }

        fn clf_escape(out: &mut String, s: &str) {
            for b in s.bytes() {
                match b {
                    b'"' => out.push_str("\\\""),
                    b'\\' => out.push_str("\\\\"),
                    0x20..=0x7e => out.push(b as char),
                    _ => {
                        let _ = write!(out, "\\x{b:02X}");
                    }
                }
            }
        }

        fn old_parts(t: SystemTime) -> (i64, u32, u32, u64, u64, u64, u32) {
            let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
            let secs = since.as_secs();
            let (y, mo, d) = civil((secs / 86_400) as i64);
            let rem = secs % 86_400;
            (
                y,
                mo,
                d,
                rem / 3600,
                rem % 3600 / 60,
                rem % 60,
                since.subsec_millis(),
            )
        }

        fn rfc3339(t: SystemTime) -> String {
            let (y, mo, d, h, mi, s, ms) = old_parts(t);
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
        }

        fn clf_time(t: SystemTime) -> String {
            const MONTHS: [&str; 12] = [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ];
            let (y, mo, d, h, mi, s, _) = old_parts(t);
            let month = MONTHS.get(mo as usize - 1).copied().unwrap_or("Jan");
            format!("{d:02}/{month}/{y:04}:{h:02}:{mi:02}:{s:02} +0000")
        }
    }
}
