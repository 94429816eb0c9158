//! Formatting of access-log lines: JSON, Common and Combined Log Format.
//! Pure: no I/O, no tower; the writer thread calls it.

use std::borrow::Cow;
use std::fmt::Write as _;
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
    pub(crate) uri: Uri,
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

/// How lines look; shared by the layer and the writer thread.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) format: LogFormat,
    pub(crate) fields: Vec<Field>,
    pub(crate) keep_query: Vec<String>,
}

// === impl Config ===

impl Config {
    pub(crate) fn wants(&self, field: Field) -> bool {
        match self.format {
            LogFormat::Json => self.fields.contains(&field),
            LogFormat::Common => false,
            LogFormat::Combined => matches!(field, Field::UserAgent | Field::Referer),
        }
    }

    /// Appends one line (without its newline) to `out`.
    pub(crate) fn format(&self, r: &Record, out: &mut String) {
        match self.format {
            LogFormat::Json => self.json(r, out),
            LogFormat::Common => self.clf(r, out, false),
            LogFormat::Combined => self.clf(r, out, true),
        }
    }

    fn json(&self, r: &Record, out: &mut String) {
        out.push('{');
        for (i, field) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            json_str(out, field.key());
            out.push(':');
            match field {
                Field::Timestamp => json_display(out, Rfc3339(r.start)),
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
                Field::Path => json_str(out, &path_and_kept_query(&r.uri, &self.keep_query)),
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
                        .map(|v| sanitize_url(&lossy(v), &self.keep_query))
                        .as_deref(),
                ),
            }
        }
        out.push('}');
    }

    /// `client - user [time] "request" status bytes ["referer" "agent"]`.
    fn clf(&self, r: &Record, out: &mut String, combined: bool) {
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
        clf_escape(out, &path_and_kept_query(&r.uri, &self.keep_query));
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
                Some(v) => clf_escape(out, &sanitize_url(&lossy(v), &self.keep_query)),
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
}

/// The path, and of the query only the parameters whose name is in `keep`
/// (in their original order and encoding): query strings carry API keys
/// and tokens often enough that none is logged unless asked for.
pub(crate) fn path_and_kept_query<'a>(uri: &'a Uri, keep: &[String]) -> Cow<'a, str> {
    let path = uri.path();
    match uri.query() {
        Some(q) if !keep.is_empty() => {
            let kept = filter_query(q, keep);
            if kept.is_empty() {
                Cow::Borrowed(path)
            } else {
                Cow::Owned(format!("{path}?{kept}"))
            }
        }
        _ => Cow::Borrowed(path),
    }
}

fn filter_query(query: &str, keep: &[String]) -> String {
    let mut out = String::new();
    for pair in query.split('&') {
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

/// A URL (a `Referer`) without credentials, fragment, or query parameters
/// other than the kept ones.
pub(crate) fn sanitize_url(url: &str, keep: &[String]) -> String {
    let url = url.split('#').next().unwrap_or("");
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    // Drop `user:password@` from the authority.
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
    if !s
        .bytes()
        .any(|b| b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f)
    {
        // The common case: nothing to escape.
        out.push_str(s);
        out.push('"');
        return;
    }
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

/// A JSON string of something that displays without characters to escape
/// (ids, addresses, times), written without an intermediate `String`.
fn json_display(out: &mut String, v: impl std::fmt::Display) {
    let _ = write!(out, "\"{v}\"");
}

/// Escapes as nginx does in its log: `"` and `\` with a backslash, bytes
/// outside printable ASCII as `\xHH`, so that a line stays one line and its
/// quoted fields stay parseable.
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

struct Parts {
    y: i64,
    mo: u32,
    d: u32,
    h: u64,
    mi: u64,
    s: u64,
    ms: u32,
}

fn parts(t: SystemTime) -> Parts {
    // Before 1970 only with a broken clock; print the epoch then.
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (y, mo, d) = civil((secs / 86_400) as i64);
    let rem = secs % 86_400;
    Parts {
        y,
        mo,
        d,
        h: rem / 3600,
        mi: rem % 3600 / 60,
        s: rem % 60,
        ms: since.subsec_millis(),
    }
}

/// RFC 3339 in UTC with milliseconds: `2026-11-27T08:05:09.042Z`.
pub(crate) struct Rfc3339(pub(crate) SystemTime);

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = parts(self.0);
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            p.y, p.mo, p.d, p.h, p.mi, p.s, p.ms
        )
    }
}

#[cfg(test)]
fn rfc3339(t: SystemTime) -> String {
    Rfc3339(t).to_string()
}

/// The Common Log Format time, in UTC: `27/Nov/2026:08:05:09 +0000`.
pub(crate) fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let p = parts(t);
    let month = MONTHS.get(p.mo as usize - 1).copied().unwrap_or("Jan");
    format!(
        "{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000",
        p.d, month, p.y, p.h, p.mi, p.s
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
        Config {
            format,
            fields: fields.to_vec(),
            keep_query: keep.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn times() {
        assert_eq!(rfc3339(at(0, 0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(at(1_795_752_000, 42)), "2026-11-27T04:00:00.042Z");
        // A leap day.
        assert_eq!(rfc3339(at(951_782_400, 999)), "2000-02-29T00:00:00.999Z");
        assert_eq!(
            clf_time(at(1_795_752_000, 42)),
            "27/Nov/2026:04:00:00 +0000"
        );
    }

    #[test]
    fn json_line_has_every_default_field_and_no_secret() {
        let c = config(LogFormat::Json, &super::super::DEFAULT_FIELDS, &["page"]);
        let mut out = String::new();
        c.format(&record(), &mut out);
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
        let mut out = String::new();
        c.format(&r, &mut out);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 4);
        assert!(v["status"].is_null());
        assert_eq!(v["user_agent"], "curl/8.0 \"x\"");
        assert_eq!(v["referer"], "https://site.example/a");
        assert_eq!(v["protocol"], "HTTP/1.1");
    }

    #[test]
    fn common_and_combined() {
        let mut out = String::new();
        config(LogFormat::Common, &[], &[]).format(&record(), &mut out);
        assert_eq!(
            out,
            "203.0.113.9 - alice [27/Nov/2026:04:00:00 +0000] \"GET /users/42 HTTP/1.1\" 200 512"
        );
        let mut out = String::new();
        config(LogFormat::Combined, &[], &["page"]).format(&record(), &mut out);
        assert_eq!(
            out,
            "203.0.113.9 - alice [27/Nov/2026:04:00:00 +0000] \"GET /users/42?page=2 HTTP/1.1\" 200 512 \
             \"https://site.example/a?page=1\" \"curl/8.0 \\\"x\\\"\""
        );
    }

    #[test]
    fn query_filter_and_url_sanitising() {
        let keep = vec!["a".to_string(), "c".to_string()];
        assert_eq!(filter_query("a=1&b=2&c&d=4&a=5", &keep), "a=1&c&a=5");
        assert_eq!(filter_query("b=2", &keep), "");
        assert_eq!(sanitize_url("http://x/y?b=1", &keep), "http://x/y");
        assert_eq!(sanitize_url("http://u@x/y@z", &keep), "http://x/y@z");
        assert_eq!(sanitize_url("/rel?a=1", &keep), "/rel?a=1");
        let uri: Uri = "/p?x=1".parse().unwrap();
        assert_eq!(path_and_kept_query(&uri, &keep), "/p");
    }

    #[test]
    fn clf_escapes_control_and_quotes() {
        let mut out = String::new();
        clf_escape(&mut out, "a\"b\\c\nd\u{e9}");
        assert_eq!(out, "a\\\"b\\\\c\\x0Ad\\xC3\\xA9");
    }
}
