//! Config → `towergate-aggregate`: an aggregate route's calls go through the
//! same clients, pools, retries and timeouts as proxied routes (each call's
//! `upstream` is resolved exactly like a route's), and the route's auth and
//! rate limits apply once, in front of the whole aggregate.

use std::collections::HashSet;
use std::time::Duration;

use http::{HeaderName, Method};
use towergate_aggregate::{Aggregate, Call};
use towergate_observe::RecordUpstreamLayer;

use crate::config::schema::{AggregateConfig, Route};
use crate::config::validate::size_value;
use crate::config::{ConfigError, parse_duration};
use crate::stack::{Forward, ForwardOpts, Forwards, RouteService, boxed};

/// The aggregate target of route `r`.
pub(crate) fn target(
    a: &AggregateConfig,
    r: &Route,
    forwards: &mut Forwards<'_>,
    p: &str,
) -> Result<RouteService, Vec<ConfigError>> {
    let mut errs = Vec::new();
    let mut b = Aggregate::builder();
    if let Some(d) = &a.deadline {
        match parse_duration(d) {
            Ok(d) => b = b.deadline(d),
            Err(e) => errs.push(ConfigError::new(format!("{p}.deadline"), e)),
        }
    }
    if let Some(m) = &a.max_response_size {
        match size_value(m) {
            Ok(n) => b = b.max_response_bytes(usize::try_from(n).unwrap_or(usize::MAX)),
            Err(e) => errs.push(ConfigError::new(format!("{p}.max_response_size"), e)),
        }
    }
    if let Some(n) = a.max_concurrent_calls {
        b = b.max_concurrent_calls(n);
    }
    // One target per upstream the calls name, built as a route's would be.
    let mut targets = HashSet::new();
    for (i, c) in a.calls.iter().enumerate() {
        let cp = format!("{p}.calls[{i}]");
        if targets.insert(c.upstream.clone()) {
            let opts = ForwardOpts {
                preserve_host: false,
                host_rewrite: None,
                timeout: None,
                route: r.name.clone(),
            };
            match forwards.get(&c.upstream, &opts, &format!("{cp}.upstream")) {
                Ok(Forward::One(proxy)) => {
                    let record = RecordUpstreamLayer::new(proxy.upstream().to_owned())
                        .metrics(forwards.metrics());
                    b = b.target(c.upstream.clone(), tower::Layer::layer(&record, proxy));
                }
                Ok(Forward::Pool(pool)) => b = b.target(c.upstream.clone(), pool),
                Err(e) => errs.extend(e),
            }
        }
        let mut call = Call::new(c.name.clone(), c.upstream.clone()).path(c.path.clone());
        if let Some(m) = &c.method {
            match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(m) => call = call.method(m),
                Err(_) => errs.push(ConfigError::new(
                    format!("{cp}.method"),
                    format!("`{m}` is not an HTTP method"),
                )),
            }
        }
        if let Some(t) = &c.timeout {
            match parse_duration(t) {
                Ok(t) if t > Duration::ZERO => call = call.timeout(t),
                Ok(_) => errs.push(ConfigError::new(
                    format!("{cp}.timeout"),
                    "must not be zero",
                )),
                Err(e) => errs.push(ConfigError::new(format!("{cp}.timeout"), e)),
            }
        }
        call = call.required(c.required.unwrap_or(true));
        for (j, h) in c.pass_headers.iter().enumerate() {
            match HeaderName::from_bytes(h.as_bytes()) {
                Ok(h) => call = call.pass_header(h),
                Err(_) => errs.push(ConfigError::new(
                    format!("{cp}.pass_headers[{j}]"),
                    format!("`{h}` is not a header name"),
                )),
            }
        }
        for (k, v) in &c.set_headers {
            match HeaderName::from_bytes(k.as_bytes()) {
                Ok(h) => call = call.set_header(h, v.clone()),
                Err(_) => errs.push(ConfigError::new(
                    format!("{cp}.set_headers.{k}"),
                    format!("`{k}` is not a header name"),
                )),
            }
        }
        if let Some(g) = &c.group {
            call = call.group(g.clone());
        }
        if c.merge {
            call = call.merge_top_level();
        }
        if let Some(pick) = &c.pick {
            call = call.pick(pick.clone());
        }
        if !c.allow.is_empty() {
            call = call.allow(c.allow.iter().cloned());
        }
        if !c.deny.is_empty() {
            call = call.deny(c.deny.iter().cloned());
        }
        for (from, to) in &c.rename {
            call = call.rename(from.clone(), to.clone());
        }
        b = b.call(call);
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    match b.build() {
        Ok(agg) => Ok(boxed(agg)),
        Err(e) => Err(vec![ConfigError::new(format!("{p}.calls"), e.to_string())]),
    }
}
