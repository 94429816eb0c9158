//! Trace context in HTTP headers: W3C `traceparent`/`tracestate`, and the
//! single-header B3 format (`b3`).

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::propagation::TraceContextPropagator;

pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub(crate) const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
pub(crate) const B3: HeaderName = HeaderName::from_static("b3");

/// Reads and writes trace context: W3C always, B3 single-header when
/// enabled. When both come in, W3C wins.
#[derive(Debug)]
pub(crate) struct Propagator {
    w3c: TraceContextPropagator,
    b3: bool,
}

struct HeaderExtractor<'a>(&'a HeaderMap);

struct HeaderInjector<'a>(&'a mut HeaderMap);

// === impl Propagator ===

impl Propagator {
    pub(crate) fn new(b3: bool) -> Self {
        Self {
            w3c: TraceContextPropagator::new(),
            b3,
        }
    }

    /// The remote parent in `headers`, if any (an empty context otherwise).
    pub(crate) fn extract(&self, headers: &HeaderMap) -> Context {
        // Never the thread's current context: a stray entered span must not
        // become the parent of a request from outside.
        let empty = Context::new();
        let cx = self
            .w3c
            .extract_with_context(&empty, &HeaderExtractor(headers));
        if self.b3 && !cx.span().span_context().is_valid() {
            return match headers
                .get(B3)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_b3)
            {
                Some(sc) => empty.with_remote_span_context(sc),
                None => cx,
            };
        }
        cx
    }

    /// Replaces the trace headers of `headers` with the context of `cx`.
    pub(crate) fn inject(&self, cx: &Context, headers: &mut HeaderMap) {
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return;
        }
        headers.remove(TRACEPARENT);
        headers.remove(TRACESTATE);
        self.w3c.inject_context(cx, &mut HeaderInjector(headers));
        if self.b3 {
            headers.remove(B3);
            if let Ok(v) = HeaderValue::try_from(format_b3(sc)) {
                headers.insert(B3, v);
            }
        }
    }
}

/// Parses a single-header B3 value:
/// `{trace_id}-{span_id}[-{sampling}[-{parent_span_id}]]`, where the trace
/// id has 16 or 32 hex digits and sampling is `1`, `0` or `d` (debug,
/// which means sampled). A lone `0` or `1` (a sampling decision without
/// ids) gives nothing to continue, so `None`.
pub(crate) fn parse_b3(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let trace = parts.next()?;
    let span = parts.next()?;
    let sampling = parts.next();
    let parent = parts.next();
    if parts.next().is_some() {
        return None;
    }
    if !(trace.len() == 16 || trace.len() == 32) || span.len() != 16 {
        return None;
    }
    if let Some(p) = parent
        && (p.len() != 16 || !is_lower_hex(p))
    {
        return None;
    }
    if !is_lower_hex(trace) || !is_lower_hex(span) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = match sampling {
        None | Some("0") => TraceFlags::default(),
        Some("1") | Some("d") => TraceFlags::SAMPLED,
        Some(_) => return None,
    };
    let sc = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
    sc.is_valid().then_some(sc)
}

/// Formats a span context as a single-header B3 value.
pub(crate) fn format_b3(sc: &SpanContext) -> String {
    format!(
        "{}-{}-{}",
        sc.trace_id(),
        sc.span_id(),
        if sc.is_sampled() { "1" } else { "0" }
    )
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

// === impl HeaderExtractor ===

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

// === impl HeaderInjector ===

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // An empty tracestate is allowed by the spec but useless.
        if value.is_empty() {
            return;
        }
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn w3c_round_trip() {
        let p = Propagator::new(false);
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static(TP));
        h.insert(TRACESTATE, HeaderValue::from_static("vendor=x"));
        let cx = p.extract(&h);
        let sc = cx.span().span_context().clone();
        assert!(sc.is_remote() && sc.is_sampled());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let mut out = HeaderMap::new();
        p.inject(&cx, &mut out);
        assert_eq!(out[TRACEPARENT], TP);
        assert_eq!(out[TRACESTATE], "vendor=x");
        assert!(out.get(B3).is_none());
    }

    #[test]
    fn nothing_valid_leaves_headers_alone() {
        let p = Propagator::new(true);
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static("garbage"));
        let cx = p.extract(&h);
        assert!(!cx.span().span_context().is_valid());
        p.inject(&cx, &mut h);
        assert_eq!(h[TRACEPARENT], "garbage");
    }

    #[test]
    fn b3_single_header() {
        let sc = parse_b3("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90")
            .unwrap();
        assert_eq!(
            sc.trace_id().to_string(),
            "80f198ee56343ba864fe8b2a57d3eff7"
        );
        assert_eq!(sc.span_id().to_string(), "e457b5a2e4d86bd1");
        assert!(sc.is_sampled());
        // 64-bit trace ids are widened.
        let sc = parse_b3("a3ce929d0e0e4736-00f067aa0ba902b7-0").unwrap();
        assert_eq!(
            sc.trace_id().to_string(),
            "0000000000000000a3ce929d0e0e4736"
        );
        assert!(!sc.is_sampled());
        assert!(
            parse_b3("a3ce929d0e0e4736-00f067aa0ba902b7-d")
                .unwrap()
                .is_sampled()
        );
        for bad in [
            "0",
            "1",
            "",
            "xyz-00f067aa0ba902b7",
            "a3ce929d0e0e4736-00f067aa0ba902b7-2",
            "A3CE929D0E0E4736-00f067aa0ba902b7",
            "a3ce929d0e0e4736-0000000000000000",
            "a3ce929d0e0e4736-00f067aa0ba902b7-1-short",
        ] {
            assert!(parse_b3(bad).is_none(), "{bad}");
        }
        assert_eq!(
            format_b3(&sc_sampled()),
            "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"
        );
    }

    #[test]
    fn b3_extracted_and_injected_when_enabled() {
        let mut h = HeaderMap::new();
        h.insert(
            B3,
            HeaderValue::from_static("4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"),
        );
        assert!(
            !Propagator::new(false)
                .extract(&h)
                .span()
                .span_context()
                .is_valid()
        );
        let p = Propagator::new(true);
        let cx = p.extract(&h);
        assert_eq!(cx.span().span_context(), &sc_sampled_remote());
        let mut out = HeaderMap::new();
        p.inject(&cx, &mut out);
        assert_eq!(out[TRACEPARENT], TP);
        assert_eq!(
            out[B3],
            "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"
        );
    }

    fn sc_sampled() -> SpanContext {
        SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        )
    }

    fn sc_sampled_remote() -> SpanContext {
        let sc = sc_sampled();
        SpanContext::new(
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags(),
            true,
            TraceState::default(),
        )
    }
}
