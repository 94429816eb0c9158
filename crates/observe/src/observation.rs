//! What inner layers found out about a request, for the observe layers
//! that sit outside them.
//!
//! The observe layers sit in front of the router, so when they see the
//! request the route is not matched yet, the caller is not authenticated
//! and no upstream is chosen; and once the request has gone inward, its
//! extensions are out of their reach. So the first observe layer puts an
//! [`Observation`] (a shared slot) in the request extensions, the layers
//! inside the router fill it ([`RecordLayer`](crate::RecordLayer) for the
//! route and identity, [`RecordUpstreamLayer`](crate::RecordUpstreamLayer)
//! for the endpoint), and the observe layers read it when the response (or
//! the error) comes back. Because the slot travels with the request rather
//! than the response, it survives error handlers that build a fresh
//! response (a problem document for a proxy failure carries no extensions).

use std::sync::{Arc, Mutex, MutexGuard};

use http::Extensions;
use opentelemetry::trace::TraceId;
use towergate_core::{Identity, RouteMatch};

use crate::metrics::RouteMetricsSlot;

/// The upstream endpoint that served a request: put in the response
/// extensions (and in the [`Observation`]) by
/// [`RecordUpstreamLayer`](crate::RecordUpstreamLayer), read by the
/// tracing, metrics and access-log layers.
///
/// The endpoint is a configured name or `host:port`, never a full URL, so
/// it is safe as a metrics label.
///
/// ```
/// let info = towergate_observe::UpstreamInfo::new("10.0.0.7:8080");
/// assert_eq!(info.endpoint(), "10.0.0.7:8080");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UpstreamInfo {
    endpoint: Arc<str>,
}

/// A shared slot, in the request extensions, where inner layers report the
/// route, the upstream and the caller's identity to the observe layers
/// outside them: the first observe layer inserts it, [`RecordLayer`](crate::RecordLayer)
/// and [`RecordUpstreamLayer`](crate::RecordUpstreamLayer) fill it, and the
/// observe layers read it when the response comes back (see the
/// [crate docs](crate#routes-and-upstreams)). Because it travels with the
/// request, it survives error handlers that build a fresh response.
///
/// Clones share the slot.
///
/// ```
/// use towergate_observe::Observation;
///
/// let mut req = http::Request::new(());
/// let outer = Observation::get_or_insert(req.extensions_mut());
/// // ... deeper in the stack, after routing:
/// if let Some(obs) = Observation::from_extensions(req.extensions()) {
///     obs.set_route("users");
/// }
/// assert_eq!(outer.snapshot().route.as_deref(), Some("users"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Observation {
    inner: Arc<Mutex<Slot>>,
}

/// What the slot holds: the public part, and the route's metric handles
/// (kept out of [`Observed`], which is a plain copyable record).
#[derive(Debug, Default)]
struct Slot {
    observed: Observed,
    /// Where the route's metric handles are kept once resolved, so the
    /// metrics layer need not look its label sets up on every request.
    route_metrics: Option<Arc<RouteMetricsSlot>>,
}

/// A copy of what an [`Observation`] holds.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Observed {
    /// The matched route's name.
    pub route: Option<Arc<str>>,
    /// The upstream endpoint that was called last.
    pub upstream: Option<UpstreamInfo>,
    /// [`Identity::subject`] of the caller.
    pub subject: Option<String>,
    /// [`Identity::consumer`] of the caller.
    pub consumer: Option<String>,
    /// The trace the request belongs to: set by [`TraceLayer`](crate::TraceLayer),
    /// and by [`ObserveLayer`](crate::ObserveLayer), except for an
    /// unsampled request when the `ObserveLayer` has an access log of its
    /// own (it hands that log the trace id itself).
    pub trace_id: Option<TraceId>,
}

// === impl UpstreamInfo ===

impl UpstreamInfo {
    /// The endpoint `endpoint` (`host:port` or a configured name).
    pub fn new(endpoint: impl Into<Arc<str>>) -> Self {
        Self {
            endpoint: endpoint.into(),
        }
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The endpoint, shared.
    pub fn endpoint_arc(&self) -> &Arc<str> {
        &self.endpoint
    }
}

// === impl Observation ===

impl Observation {
    /// The observation in `extensions`, inserting a new one if there is none.
    pub fn get_or_insert(extensions: &mut Extensions) -> Self {
        extensions.get_or_insert_default::<Observation>().clone()
    }

    /// The observation in `extensions`, if an observe layer put one there.
    pub fn from_extensions(extensions: &Extensions) -> Option<&Self> {
        extensions.get::<Observation>()
    }

    /// Records the matched route's name.
    pub fn set_route(&self, route: impl Into<Arc<str>>) {
        self.lock().observed.route = Some(route.into());
    }

    /// Records the upstream endpoint; a later call (a retry on another
    /// endpoint) replaces it.
    pub fn set_upstream(&self, upstream: UpstreamInfo) {
        self.lock().observed.upstream = Some(upstream);
    }

    /// Records the subject and consumer of the caller. Other identity
    /// fields (claims, scopes) are not kept: they are not logged.
    pub fn set_identity(&self, identity: &Identity) {
        let o = &mut self.lock().observed;
        o.subject.clone_from(&identity.subject);
        o.consumer.clone_from(&identity.consumer);
    }

    /// Records the trace id.
    pub fn set_trace_id(&self, trace_id: TraceId) {
        self.lock().observed.trace_id = Some(trace_id);
    }

    /// Copies what the request extensions tell (a [`RouteMatch`], an
    /// [`Identity`]) into the observation.
    pub fn record_from(&self, extensions: &Extensions) {
        self.record(extensions, None, None, None);
    }

    /// [`record_from`](Self::record_from), then `route` (a fixed route
    /// name), where the route's metric handles are kept and the upstream,
    /// under one lock.
    pub(crate) fn record(
        &self,
        extensions: &Extensions,
        route: Option<&Arc<str>>,
        metrics: Option<&Arc<RouteMetricsSlot>>,
        upstream: Option<&UpstreamInfo>,
    ) {
        let matched = extensions.get::<RouteMatch>();
        let identity = extensions.get::<Identity>();
        if matched.is_none() && identity.is_none() && route.is_none() && upstream.is_none() {
            return;
        }
        let mut slot = self.lock();
        if let Some(u) = upstream {
            slot.observed.upstream = Some(u.clone());
        }
        if let Some(m) = metrics
            && (matched.is_some() || route.is_some())
        {
            slot.route_metrics = Some(m.clone());
        }
        let o = &mut slot.observed;
        if let Some(r) = route {
            o.route = Some(r.clone());
        } else if let Some(m) = matched {
            o.route = Some(m.route.clone());
        }
        if let Some(id) = identity {
            o.subject.clone_from(&id.subject);
            o.consumer.clone_from(&id.consumer);
        }
    }

    /// A copy of what has been recorded so far.
    pub fn snapshot(&self) -> Observed {
        self.lock().observed.clone()
    }

    /// The route recorded so far.
    pub fn route(&self) -> Option<Arc<str>> {
        self.lock().observed.route.clone()
    }

    /// Route and upstream, the two things every observe layer needs.
    pub(crate) fn route_and_upstream(&self) -> (Option<Arc<str>>, Option<Arc<str>>) {
        let slot = self.lock();
        let o = &slot.observed;
        (
            o.route.clone(),
            o.upstream.as_ref().map(|u| u.endpoint.clone()),
        )
    }

    /// The route recorded so far and where its metric handles are kept.
    pub(crate) fn route_and_metrics(&self) -> (Option<Arc<str>>, Option<Arc<RouteMetricsSlot>>) {
        let slot = self.lock();
        (slot.observed.route.clone(), slot.route_metrics.clone())
    }

    fn lock(&self) -> MutexGuard<'_, Slot> {
        // A panic while holding this lock leaves plain data behind, still
        // good to read.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the metrics and access-log parts of a request read from its
/// extensions when it comes in: the route, if matched already, and the
/// request's [`Observation`]. [`ObserveLayer`](crate::ObserveLayer) looks
/// them up once for both.
#[derive(Clone, Debug)]
pub(crate) struct Found {
    pub(crate) route_at_call: Option<Arc<str>>,
    pub(crate) obs: Observation,
}

impl Found {
    /// The route, and the observation (put in `extensions` if missing).
    pub(crate) fn take(extensions: &mut Extensions) -> Self {
        Self {
            route_at_call: extensions.get::<RouteMatch>().map(|m| m.route.clone()),
            obs: Observation::get_or_insert(extensions),
        }
    }
}

/// Where the route and the upstream of an exchange are found when its
/// response comes back, most specific first: the request's own
/// [`RouteMatch`] (the layer sits inside the router), the observation, then
/// the response extensions.
pub(crate) fn resolve(
    route_at_call: Option<Arc<str>>,
    obs: &Observation,
    response: Option<&Extensions>,
) -> (Option<Arc<str>>, Option<Arc<str>>) {
    let (route, upstream) = obs.route_and_upstream();
    let route = route_at_call.or(route).or_else(|| {
        response
            .and_then(|e| e.get::<RouteMatch>())
            .map(|m| m.route.clone())
    });
    let upstream = upstream.or_else(|| {
        response
            .and_then(|e| e.get::<UpstreamInfo>())
            .map(|u| u.endpoint.clone())
    });
    (route, upstream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_slot() {
        let mut ext = Extensions::new();
        let a = Observation::get_or_insert(&mut ext);
        let b = Observation::get_or_insert(&mut ext);
        b.set_upstream(UpstreamInfo::new("u:1"));
        let id = Identity {
            subject: Some("alice".into()),
            ..Identity::default()
        };
        b.set_identity(&id);
        let s = a.snapshot();
        assert_eq!(s.upstream, Some(UpstreamInfo::new("u:1")));
        assert_eq!(s.subject.as_deref(), Some("alice"));
    }

    #[test]
    fn resolution_order() {
        let obs = Observation::default();
        let mut rsp = Extensions::new();
        rsp.insert(RouteMatch::new("from-response"));
        rsp.insert(UpstreamInfo::new("rsp:1"));
        let (r, u) = resolve(None, &obs, Some(&rsp));
        assert_eq!(r.as_deref(), Some("from-response"));
        assert_eq!(u.as_deref(), Some("rsp:1"));
        obs.set_route("from-slot");
        obs.set_upstream(UpstreamInfo::new("slot:1"));
        let (r, u) = resolve(None, &obs, Some(&rsp));
        assert_eq!(r.as_deref(), Some("from-slot"));
        assert_eq!(u.as_deref(), Some("slot:1"));
        let (r, _) = resolve(Some("at-call".into()), &obs, Some(&rsp));
        assert_eq!(r.as_deref(), Some("at-call"));
    }
}
