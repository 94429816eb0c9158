//! Trace context in HTTP headers: W3C `traceparent`/`tracestate`, and the
//! single-header B3 format (`b3`).

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::{Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::propagation::TraceContextPropagator;

pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub(crate) const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
pub(crate) const B3_HEADER: HeaderName = HeaderName::from_static("b3");

/// Up to this many header names, [`Propagator::scan`] reads them one by
/// one rather than looking the trace headers up.
const SCAN_MAX: usize = 8;

/// Reads and writes trace context: W3C always, B3 single-header when
/// enabled. When both come in, W3C wins.
#[derive(Debug)]
pub(crate) struct Propagator {
    w3c: TraceContextPropagator,
    b3: bool,
}

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
    ///
    /// `sampled_here`: this hop decided to sample the request. A B3 parent
    /// that left the decision to us (no sampling field) then reads as
    /// sampled, so that a parent-based sampler follows this hop's decision
    /// rather than reading "no decision" as "not sampled".
    pub(crate) fn extract(&self, headers: &HeaderMap, sampled_here: bool) -> Context {
        // Never the thread's current context: a stray entered span must not
        // become the parent of a request from outside.
        let empty = Context::new();
        // The parent is read by the parser the sampling decision used
        // ([`Propagator::remote`]), not the SDK's, which accepts forms it
        // refuses (a trailing `-`, short ids): read twice, a malformed
        // header would continue the client's trace for the sampled
        // requests and start a new one for the others.
        let parent = traceparent_of(headers)
            .and_then(|v| parse_traceparent(v.as_bytes()))
            .map(|(trace_id, span_id, flags)| {
                SpanContext::new(trace_id, span_id, flags, true, tracestate_of(headers))
            });
        let cx = match parent {
            Some(sc) => empty.with_remote_span_context(sc),
            None => empty.clone(),
        };
        if self.b3 && !cx.span().span_context().is_valid() {
            let b3 = headers
                .get(B3_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_b3);
            if let Some(B3 {
                ids: Some((trace_id, span_id)),
                sampled,
            }) = b3
            {
                let flags = match sampled {
                    Some(true) => TraceFlags::SAMPLED,
                    None if sampled_here => TraceFlags::SAMPLED,
                    _ => TraceFlags::default(),
                };
                let sc = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
                return empty.with_remote_span_context(sc);
            }
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
            headers.remove(B3_HEADER);
            if let Ok(mut v) = HeaderValue::try_from(format_b3(sc)) {
                crate::request_id::never_indexed(&mut v);
                headers.insert(B3_HEADER, v);
            }
        }
    }
}

/// What a sampling decision needs of the client's trace context: read by
/// hand, without building an OpenTelemetry context (which parses and
/// allocates the `tracestate` too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Remote {
    /// `None` for a B3 sampling decision without ids (`b3: 0`, `b3: 1`):
    /// a new trace, with the client's decision.
    pub(crate) trace_id: Option<TraceId>,
    /// `None`: the client left the decision to this hop (a B3 context
    /// without its sampling field).
    pub(crate) sampled: Option<bool>,
    /// From a valid `traceparent` (not B3): its `tracestate` belongs to
    /// the same trace.
    pub(crate) w3c: bool,
}

impl Propagator {
    /// The client's trace id and sampling flag: W3C `traceparent`, then
    /// (when enabled) `b3`; the same rules as [`Propagator::extract`].
    pub(crate) fn remote(&self, headers: &HeaderMap) -> Option<Remote> {
        self.remote_from(traceparent_of(headers), || headers.get(B3_HEADER))
    }

    /// [`Propagator::remote`], and whether `headers` may hold a
    /// `tracestate` (`false` only when they surely do not).
    ///
    /// A request of a few headers is read in one walk over its header
    /// values (each with its name): that is cheaper than hashing
    /// `traceparent`, then `tracestate`, then `b3`, to look each up (names
    /// are compared by length first, and most differ). Beyond
    /// [`SCAN_MAX`] names the look-ups are cheaper.
    pub(crate) fn scan(&self, headers: &HeaderMap) -> (Option<Remote>, bool) {
        if headers.keys_len() > SCAN_MAX {
            return (self.remote(headers), true);
        }
        let (mut traceparent, mut tracestate, mut b3) = (None, false, None);
        let mut traceparents = 0u32;
        for (name, value) in headers {
            match name.as_str() {
                "traceparent" => {
                    traceparents += 1;
                    traceparent.get_or_insert(value);
                }
                "tracestate" => tracestate = true,
                "b3" => {
                    b3.get_or_insert(value);
                }
                _ => {}
            }
        }
        // Several `traceparent` values: none counts (see `traceparent_of`).
        let traceparent = traceparent.filter(|_| traceparents == 1);
        (self.remote_from(traceparent, || b3), tracestate)
    }

    /// The rules of [`Propagator::remote`] over the first `traceparent`
    /// and `b3` values (the latter read only when needed).
    fn remote_from<'a>(
        &self,
        traceparent: Option<&HeaderValue>,
        b3: impl FnOnce() -> Option<&'a HeaderValue>,
    ) -> Option<Remote> {
        if let Some((trace_id, _, flags)) =
            traceparent.and_then(|v| parse_traceparent(v.as_bytes()))
        {
            return Some(Remote {
                trace_id: Some(trace_id),
                sampled: Some(flags.is_sampled()),
                w3c: true,
            });
        }
        if !self.b3 {
            return None;
        }
        let b3 = b3().and_then(|v| v.to_str().ok()).and_then(parse_b3)?;
        Some(Remote {
            trace_id: b3.ids.map(|(trace_id, _)| trace_id),
            sampled: b3.sampled,
            w3c: false,
        })
    }

    /// Writes a context that this hop does not record: the trace goes on
    /// with `span_id` as the parent and the sampled flag off. `tracestate`
    /// (`Some` when the client sent one) stays as the client sent it when
    /// it goes with the client's valid `traceparent` (`Some(false)`: this
    /// hop adds nothing to it) and is within W3C's limits (32 members,
    /// 512 characters; a sampled request's goes through the SDK, which
    /// keeps no more); with a new trace, or one read from B3
    /// (`Some(true)`), it is dropped, as W3C asks.
    pub(crate) fn inject_unsampled(
        &self,
        trace_id: TraceId,
        span_id: SpanId,
        tracestate: Option<bool>,
        headers: &mut HeaderMap,
    ) {
        match tracestate {
            Some(true) => {
                headers.remove(TRACESTATE);
            }
            Some(false) if !tracestate_within_limits(headers) => {
                headers.remove(TRACESTATE);
            }
            _ => {}
        }
        // 00-{32 hex}-{16 hex}-00
        let mut tp = [b'0'; 55];
        tp[2] = b'-';
        crate::hex::hex_into(&mut tp[3..35], &trace_id.to_bytes());
        tp[35] = b'-';
        crate::hex::hex_into(&mut tp[36..52], &span_id.to_bytes());
        tp[52] = b'-';
        if let Ok(mut v) = HeaderValue::from_bytes(&tp) {
            crate::request_id::never_indexed(&mut v);
            headers.insert(TRACEPARENT, v);
        }
        if self.b3 {
            // {32 hex}-{16 hex}-0
            let mut b3 = [b'0'; 51];
            b3[..32].copy_from_slice(&tp[3..35]);
            b3[32] = b'-';
            b3[33..49].copy_from_slice(&tp[36..52]);
            b3[49] = b'-';
            if let Ok(mut v) = HeaderValue::from_bytes(&b3) {
                crate::request_id::never_indexed(&mut v);
                headers.insert(B3_HEADER, v);
            }
        }
    }
}

/// Whether the request's `tracestate` lines hold at most 32 members and
/// 512 characters together (W3C trace-context: a list longer than that may
/// be cut, and one cut here would drop other vendors' entries at random).
fn tracestate_within_limits(headers: &HeaderMap) -> bool {
    let (mut chars, mut members) = (0usize, 0usize);
    for (i, v) in headers.get_all(TRACESTATE).iter().enumerate() {
        chars += v.len() + usize::from(i > 0);
        members += v
            .as_bytes()
            .split(|&b| b == b',')
            .filter(|m| !m.trim_ascii().is_empty())
            .count();
    }
    chars <= 512 && members <= 32
}

/// The request's `tracestate` lines as one list, as the SDK would read
/// them (an invalid one is dropped).
fn tracestate_of(headers: &HeaderMap) -> TraceState {
    let mut lines = headers.get_all(TRACESTATE).iter();
    let Some(first) = lines.next() else {
        return TraceState::default();
    };
    let mut joined = String::from_utf8_lossy(first.as_bytes()).into_owned();
    for line in lines {
        joined.push(',');
        joined.push_str(&String::from_utf8_lossy(line.as_bytes()));
    }
    joined.parse().unwrap_or_default()
}

/// Parses a W3C `traceparent` (trace-context level 1): `{version}-{trace
/// id}-{parent id}-{flags}`, lowercase hex, version `ff` refused, version
/// `00` exactly four fields, later versions may append fields; ids must
/// not be all zeros. Surrounding whitespace is ignored. Flags other than
/// sampled are dropped, as [`TraceContextPropagator`] does.
/// The request's `traceparent` if it sent exactly one: with several, the
/// trace is restarted, as the W3C trace-context test suite expects (which
/// one would the client mean?), and the same rule holds for sampling, the
/// span's parent and the access log's trace id.
pub(crate) fn traceparent_of(headers: &HeaderMap) -> Option<&HeaderValue> {
    let mut all = headers.get_all(TRACEPARENT).iter();
    match (all.next(), all.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    }
}

pub(crate) fn parse_traceparent(v: &[u8]) -> Option<(TraceId, SpanId, TraceFlags)> {
    let v = v.trim_ascii();
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = hex_value(&v[..2])?;
    if version == 0xff || (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    let trace = hex_value(&v[3..35])?;
    let span = hex_value(&v[36..52])?;
    let flags = hex_value(&v[53..55])?;
    if trace == 0 || span == 0 {
        return None;
    }
    Some((
        TraceId::from(trace),
        SpanId::from(span as u64),
        TraceFlags::new(flags as u8) & TraceFlags::SAMPLED,
    ))
}

/// The value of up to 32 lowercase hex digits.
fn hex_value(digits: &[u8]) -> Option<u128> {
    let mut n: u128 = 0;
    for &d in digits {
        let x = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        n = (n << 4) | u128::from(x);
    }
    Some(n)
}

/// A single-header B3 value, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct B3 {
    /// Trace and span id; `None` for a lone sampling decision.
    pub(crate) ids: Option<(TraceId, SpanId)>,
    /// `Some(true)` for `1` and `d` (debug), `Some(false)` for `0`, `None`
    /// when the field is absent: the decision is left to the receiver.
    pub(crate) sampled: Option<bool>,
}

/// Parses a single-header B3 value:
/// `{trace_id}-{span_id}[-{sampling}[-{parent_span_id}]]`, where the trace
/// id has 16 or 32 hex digits and sampling is `1`, `0` or `d` (debug,
/// which means sampled); or a lone sampling decision (`0`, `1`, `d`),
/// which starts a new trace with that decision.
pub(crate) fn parse_b3(value: &str) -> Option<B3> {
    let value = value.trim();
    if let Some(sampled) = sampling_of(value) {
        return Some(B3 { ids: None, sampled });
    }
    let mut parts = value.split('-');
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
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let sampled = match sampling {
        None => None,
        Some(s) => sampling_of(s)?,
    };
    Some(B3 {
        ids: Some((trace_id, span_id)),
        sampled,
    })
}

/// A B3 sampling field: `Some(decision)` when `s` is one.
fn sampling_of(s: &str) -> Option<Option<bool>> {
    match s {
        "0" => Some(Some(false)),
        "1" | "d" => Some(Some(true)),
        _ => None,
    }
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

// === impl HeaderInjector ===

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // An empty tracestate is allowed by the spec but useless.
        if value.is_empty() {
            return;
        }
        if let (Ok(name), Ok(mut value)) = (HeaderName::try_from(key), HeaderValue::try_from(value))
        {
            // A new span id on every request (tracestate repeats).
            if name == TRACEPARENT {
                crate::request_id::never_indexed(&mut value);
            }
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
        let cx = p.extract(&h, false);
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
        assert!(out.get(B3_HEADER).is_none());
    }

    #[test]
    fn tracestate_lines_are_one_list() {
        // W3C trace context: several `tracestate` lines are one list, in
        // order; none may be lost on the way to the upstream.
        let p = Propagator::new(false);
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static(TP));
        h.append(TRACESTATE, HeaderValue::from_static("a=1,b=2"));
        h.append(TRACESTATE, HeaderValue::from_static("c=3"));
        let cx = p.extract(&h, false);
        let mut out = HeaderMap::new();
        p.inject(&cx, &mut out);
        assert_eq!(out[TRACESTATE], "a=1,b=2,c=3");
        assert_eq!(out.get_all(TRACESTATE).iter().count(), 1);
    }

    #[test]
    fn several_traceparents_restart_the_trace() {
        let p = Propagator::new(false);
        let mut h = HeaderMap::new();
        h.append(TRACEPARENT, HeaderValue::from_static(TP));
        assert!(p.remote(&h).is_some());
        h.append(
            TRACEPARENT,
            HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        );
        // Two valid but different contexts: neither is the parent.
        assert_eq!(p.remote(&h), None);
        assert_eq!(p.scan(&h).0, None);
        assert!(!p.extract(&h, false).span().span_context().is_valid());
        assert!(traceparent_of(&h).is_none());
    }

    #[test]
    fn nothing_valid_leaves_headers_alone() {
        let p = Propagator::new(true);
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static("garbage"));
        let cx = p.extract(&h, false);
        assert!(!cx.span().span_context().is_valid());
        p.inject(&cx, &mut h);
        assert_eq!(h[TRACEPARENT], "garbage");
    }

    #[test]
    fn b3_single_header() {
        let trace = TraceId::from_hex("80f198ee56343ba864fe8b2a57d3eff7").unwrap();
        let span = SpanId::from_hex("e457b5a2e4d86bd1").unwrap();
        assert_eq!(
            parse_b3("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"),
            Some(B3 {
                ids: Some((trace, span)),
                sampled: Some(true)
            })
        );
        // 64-bit trace ids are widened.
        let b3 = parse_b3("a3ce929d0e0e4736-00f067aa0ba902b7-0").unwrap();
        assert_eq!(
            b3.ids.unwrap().0.to_string(),
            "0000000000000000a3ce929d0e0e4736"
        );
        assert_eq!(b3.sampled, Some(false));
        let b3 = parse_b3("a3ce929d0e0e4736-00f067aa0ba902b7-d").unwrap();
        assert_eq!(b3.sampled, Some(true));
        // No sampling field: the decision is the receiver's.
        let b3 = parse_b3("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1").unwrap();
        assert_eq!((b3.ids, b3.sampled), (Some((trace, span)), None));
        // A lone decision: no ids to continue, but the decision holds.
        for (lone, sampled) in [("0", false), ("1", true), ("d", true), (" 0 ", false)] {
            assert_eq!(
                parse_b3(lone),
                Some(B3 {
                    ids: None,
                    sampled: Some(sampled)
                }),
                "{lone:?}"
            );
        }
        for bad in [
            "",
            "2",
            "xyz-00f067aa0ba902b7",
            "a3ce929d0e0e4736-00f067aa0ba902b7-2",
            "A3CE929D0E0E4736-00f067aa0ba902b7",
            "a3ce929d0e0e4736-0000000000000000",
            "0000000000000000-00f067aa0ba902b7",
            "a3ce929d0e0e4736-00f067aa0ba902b7-1-short",
            "a3ce929d0e0e4736-00f067aa0ba902b7--",
        ] {
            assert!(parse_b3(bad).is_none(), "{bad}");
        }
        assert_eq!(
            format_b3(&sc_sampled()),
            "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"
        );
    }

    #[test]
    fn b3_without_a_decision_follows_this_hop() {
        let p = Propagator::new(true);
        let mut h = HeaderMap::new();
        h.insert(
            B3_HEADER,
            HeaderValue::from_static("4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"),
        );
        let r = p.remote(&h).unwrap();
        assert_eq!((r.sampled, r.w3c), (None, false));
        assert_eq!(r.trace_id, Some(sc_sampled().trace_id()));
        // Sampled here: the parent reads as sampled, so that a
        // parent-based sampler keeps the span.
        assert_eq!(
            p.extract(&h, true).span().span_context(),
            &sc_sampled_remote()
        );
        let sc = p.extract(&h, false).span().span_context().clone();
        assert!(sc.is_valid() && !sc.is_sampled());
        // A lone decision has no parent to continue.
        h.insert(B3_HEADER, HeaderValue::from_static("0"));
        assert_eq!(
            p.remote(&h),
            Some(Remote {
                trace_id: None,
                sampled: Some(false),
                w3c: false
            })
        );
        assert!(!p.extract(&h, true).span().span_context().is_valid());
    }

    #[test]
    fn b3_extracted_and_injected_when_enabled() {
        let mut h = HeaderMap::new();
        h.insert(
            B3_HEADER,
            HeaderValue::from_static("4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"),
        );
        assert!(
            !Propagator::new(false)
                .extract(&h, false)
                .span()
                .span_context()
                .is_valid()
        );
        let p = Propagator::new(true);
        let cx = p.extract(&h, false);
        assert_eq!(cx.span().span_context(), &sc_sampled_remote());
        let mut out = HeaderMap::new();
        p.inject(&cx, &mut out);
        assert_eq!(out[TRACEPARENT], TP);
        assert_eq!(
            out[B3_HEADER],
            "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"
        );
        assert!(out[TRACEPARENT].is_sensitive() && out[B3_HEADER].is_sensitive());
    }

    #[test]
    fn traceparent_by_hand_agrees_with_the_propagator() {
        let p = Propagator::new(false);
        for v in [
            TP,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03",
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "garbage",
            "",
        ] {
            let mut h = HeaderMap::new();
            h.insert(TRACEPARENT, HeaderValue::from_str(v).unwrap());
            let sc = p.extract(&h, false).span().span_context().clone();
            let expected = sc.is_valid().then(|| Remote {
                trace_id: Some(sc.trace_id()),
                sampled: Some(sc.is_sampled()),
                w3c: true,
            });
            assert_eq!(p.remote(&h), expected, "{v:?}");
        }
        // Stricter than the propagator: a short id is not a W3C id.
        let mut h = HeaderMap::new();
        h.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01"),
        );
        assert_eq!(p.remote(&h), None);
    }

    #[test]
    fn unsampled_context_injected() {
        let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let span_id = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        let mut h = HeaderMap::new();
        h.insert(TRACESTATE, HeaderValue::from_static("vendor=x"));
        Propagator::new(true).inject_unsampled(trace_id, span_id, Some(false), &mut h);
        assert_eq!(
            h[TRACEPARENT],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        );
        assert_eq!(
            h[B3_HEADER],
            "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0"
        );
        assert_eq!(h[TRACESTATE], "vendor=x");
        // New on every request: never indexed by HTTP/2 (see
        // `request_id::never_indexed`); the tracestate repeats.
        assert!(h[TRACEPARENT].is_sensitive() && h[B3_HEADER].is_sensitive());
        assert!(!h[TRACESTATE].is_sensitive());
        // What was written reads back the same, not sampled.
        assert_eq!(
            Propagator::new(false).remote(&h),
            Some(Remote {
                trace_id: Some(trace_id),
                sampled: Some(false),
                w3c: true,
            })
        );
        // Another trace's state does not go with a new trace.
        Propagator::new(false).inject_unsampled(trace_id, span_id, Some(true), &mut h);
        assert!(h.get(TRACESTATE).is_none());
        // Nor one over W3C's limits: 33 members, or 513 characters.
        for state in [
            (0..33)
                .map(|i| format!("v{i}=x"))
                .collect::<Vec<_>>()
                .join(","),
            format!("v={}", "x".repeat(511)),
        ] {
            h.insert(TRACESTATE, HeaderValue::from_str(&state).unwrap());
            Propagator::new(false).inject_unsampled(trace_id, span_id, Some(false), &mut h);
            assert!(h.get(TRACESTATE).is_none(), "{state}");
        }
        // 32 members over two lines, 512 characters: kept.
        let half = (0..16)
            .map(|i| format!("v{i}=x"))
            .collect::<Vec<_>>()
            .join(",");
        h.insert(TRACESTATE, HeaderValue::from_str(&half).unwrap());
        h.append(
            TRACESTATE,
            HeaderValue::from_str(&half.replace('v', "w")).unwrap(),
        );
        Propagator::new(false).inject_unsampled(trace_id, span_id, Some(false), &mut h);
        assert_eq!(h.get_all(TRACESTATE).iter().count(), 2);
        h.insert(
            TRACESTATE,
            HeaderValue::from_str(&format!("v={}", "x".repeat(510))).unwrap(),
        );
        Propagator::new(false).inject_unsampled(trace_id, span_id, Some(false), &mut h);
        assert!(h.get(TRACESTATE).is_some());
    }

    /// The span's parent is read by the same parser as the sampling
    /// decision: what it refuses (a trailing `-`, a short id) is no parent
    /// at all, sampled or not; what it takes keeps its `tracestate`, every
    /// line of it.
    #[test]
    fn the_parent_is_what_the_sampling_decision_read() {
        let p = Propagator::new(false);
        for bad in [
            format!("{TP}-"),
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01".to_owned(),
        ] {
            let mut h = HeaderMap::new();
            h.insert(TRACEPARENT, HeaderValue::from_str(&bad).unwrap());
            assert_eq!(p.remote(&h), None, "{bad}");
            let cx = p.extract(&h, true);
            assert!(!cx.span().span_context().is_valid(), "{bad}");
        }
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static(TP));
        h.append(TRACESTATE, HeaderValue::from_static("a=1"));
        h.append(TRACESTATE, HeaderValue::from_static("b=2"));
        let cx = p.extract(&h, true);
        let span = cx.span();
        let sc = span.span_context();
        assert!(sc.is_valid() && sc.is_remote() && sc.is_sampled());
        assert_eq!(sc.trace_id().to_string(), &TP[3..35]);
        assert_eq!(sc.trace_state().header(), "a=1,b=2");
    }

    #[test]
    fn scan_is_remote_and_sees_tracestate() {
        let tp = HeaderValue::from_static(TP);
        let b3 = HeaderValue::from_static("4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1");
        for extra in [0, 3, SCAN_MAX - 2, SCAN_MAX + 5] {
            for (with_tp, with_ts, with_b3) in [
                (false, false, false),
                (true, false, false),
                (false, true, false),
                (true, true, true),
                (false, false, true),
                (false, true, true),
            ] {
                let mut h = HeaderMap::new();
                for i in 0..extra {
                    h.insert(
                        HeaderName::try_from(format!("x-extra-{i}")).unwrap(),
                        HeaderValue::from_static("v"),
                    );
                }
                if with_tp {
                    h.append(TRACEPARENT, tp.clone());
                    // A second value: none counts (`traceparent_of`).
                    h.append(TRACEPARENT, HeaderValue::from_static("garbage"));
                }
                if with_ts {
                    h.insert(TRACESTATE, HeaderValue::from_static("vendor=x"));
                }
                if with_b3 {
                    h.insert(B3_HEADER, b3.clone());
                }
                for p in [Propagator::new(false), Propagator::new(true)] {
                    let (remote, tracestate) = p.scan(&h);
                    let case = (extra, with_tp, with_ts, with_b3, p.b3);
                    assert_eq!(remote, p.remote(&h), "{case:?}");
                    // Never `false` with a tracestate there.
                    assert!(tracestate || !with_ts, "{case:?}");
                    if h.keys_len() <= SCAN_MAX {
                        assert_eq!(tracestate, with_ts, "{case:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn b3_remote_when_enabled() {
        let mut h = HeaderMap::new();
        h.insert(
            B3_HEADER,
            HeaderValue::from_static("4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"),
        );
        assert_eq!(Propagator::new(false).remote(&h), None);
        let r = Propagator::new(true).remote(&h).unwrap();
        assert!(r.sampled == Some(true) && !r.w3c);
        assert_eq!(r.trace_id, Some(sc_sampled().trace_id()));
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
