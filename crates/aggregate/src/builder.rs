//! [`AggregateBuilder`]: targets, calls and limits, checked into an
//! [`Aggregate`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, Method, Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};
use towergate_core::BoxError;

use crate::call::Call;
use crate::error::BuildError;
use crate::merge::{FieldPath, Shape};
use crate::plan::{Plan, PlanError};
use crate::service::Aggregate;
use crate::template::{Kind, Source, Template};

/// The default overall deadline of an aggregated request.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);
/// The default maximum body size read per call: 1 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// The default maximum number of calls in flight per aggregated request.
pub const DEFAULT_MAX_CONCURRENT_CALLS: usize = 16;

/// A target as the aggregate stores it.
pub(crate) type Target =
    BoxCloneSyncService<Request<Full<Bytes>>, Response<UnsyncBoxBody<Bytes, BoxError>>, BoxError>;

/// Builds an [`Aggregate`]: register named targets, declare calls, set
/// limits, then [`build`](AggregateBuilder::build), which checks everything
/// (targets, templates, references, cycles) up front.
#[derive(Debug)]
#[must_use]
pub struct AggregateBuilder {
    targets: Vec<(String, Target)>,
    calls: Vec<Call>,
    deadline: Duration,
    max_response_bytes: usize,
    max_concurrent_calls: usize,
}

/// A call, checked and ready to run.
#[derive(Debug)]
pub(crate) struct CompiledCall {
    pub(crate) name: String,
    pub(crate) target: usize,
    pub(crate) method: Method,
    pub(crate) path: Template,
    pub(crate) pass_headers: Vec<HeaderName>,
    pub(crate) set_headers: Vec<(HeaderName, Template)>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) required: bool,
    pub(crate) group: String,
    pub(crate) top_level: bool,
    pub(crate) shape: Shape,
}

/// Everything an [`Aggregate`] shares between its clones.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) calls: Vec<CompiledCall>,
    pub(crate) index: HashMap<String, usize>,
    pub(crate) targets: Vec<Target>,
    pub(crate) plan: Plan,
    pub(crate) deadline: Duration,
    pub(crate) max_response_bytes: usize,
    pub(crate) max_concurrent_calls: usize,
}

const RESERVED: [&str; 4] = ["params", "query", "header", "identity"];

// === impl AggregateBuilder ===

impl AggregateBuilder {
    pub(crate) fn new() -> Self {
        Self {
            targets: Vec::new(),
            calls: Vec::new(),
            deadline: DEFAULT_DEADLINE,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_concurrent_calls: DEFAULT_MAX_CONCURRENT_CALLS,
        }
    }

    /// Registers `svc` as the target `name`. Calls name it with
    /// [`Call::new`]. The service gets origin-form requests (path and query
    /// only) with the incoming request's extensions: it must know where to
    /// send them (in the gateway, an upstream pool or proxy does).
    pub fn target<S, B>(mut self, name: impl Into<String>, svc: S) -> Self
    where
        S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let svc = svc
            .map_response(|rsp: Response<B>| rsp.map(|b| b.map_err(Into::into).boxed_unsync()))
            .map_err(Into::into);
        self.targets
            .push((name.into(), BoxCloneSyncService::new(svc)));
        self
    }

    /// Adds a call. Calls are merged in the order they are added.
    pub fn call(mut self, call: Call) -> Self {
        self.calls.push(call);
        self
    }

    /// The overall deadline of an aggregated request (default 10 s).
    pub fn deadline(mut self, d: Duration) -> Self {
        self.deadline = d;
        self
    }

    /// The maximum body size read per call (default 1 MiB); a larger answer
    /// fails the call.
    pub fn max_response_bytes(mut self, n: usize) -> Self {
        self.max_response_bytes = n;
        self
    }

    /// The maximum number of calls in flight per aggregated request
    /// (default 16).
    pub fn max_concurrent_calls(mut self, n: usize) -> Self {
        self.max_concurrent_calls = n;
        self
    }

    /// Checks the definition and builds the [`Aggregate`].
    ///
    /// # Errors
    ///
    /// A [`BuildError`] for a zero limit, an invalid or duplicate call or
    /// target name, an unknown target, a bad template or field path, an
    /// unknown template variable or call reference, or a dependency cycle.
    pub fn build(self) -> Result<Aggregate, BuildError> {
        if self.max_concurrent_calls == 0 {
            return Err(BuildError::InvalidSetting(
                "max_concurrent_calls must be at least 1",
            ));
        }
        if self.max_response_bytes == 0 {
            return Err(BuildError::InvalidSetting(
                "max_response_bytes must be at least 1",
            ));
        }
        if self.deadline.is_zero() {
            return Err(BuildError::InvalidSetting("deadline must not be zero"));
        }

        let mut target_index = HashMap::new();
        let mut targets = Vec::with_capacity(self.targets.len());
        for (name, svc) in self.targets {
            if target_index.insert(name.clone(), targets.len()).is_some() {
                return Err(BuildError::DuplicateTarget { name });
            }
            targets.push(svc);
        }

        let mut index = HashMap::new();
        for (i, call) in self.calls.iter().enumerate() {
            check_name(&call.name)?;
            if index.insert(call.name.clone(), i).is_some() {
                return Err(BuildError::DuplicateCall {
                    name: call.name.clone(),
                });
            }
        }

        let mut calls = Vec::with_capacity(self.calls.len());
        let mut refs = Vec::with_capacity(self.calls.len());
        for call in self.calls {
            let compiled = compile(call, &target_index)?;
            let mut call_refs = Vec::new();
            let templates =
                std::iter::once(&compiled.path).chain(compiled.set_headers.iter().map(|(_, t)| t));
            for var in templates.flat_map(Template::vars) {
                if let Source::Call(c) = &var.source {
                    if !index.contains_key(c) {
                        return Err(BuildError::UnknownReference {
                            call: compiled.name.clone(),
                            reference: var.text.clone(),
                        });
                    }
                    call_refs.push(c.clone());
                }
            }
            refs.push(call_refs);
            calls.push(compiled);
        }

        let graph: Vec<(&str, Vec<&str>)> = calls
            .iter()
            .zip(&refs)
            .map(|(c, r)| (c.name.as_str(), r.iter().map(String::as_str).collect()))
            .collect();
        let plan = Plan::new(&graph).map_err(|e| match e {
            PlanError::Unknown { call, reference } => {
                BuildError::UnknownReference { call, reference }
            }
            PlanError::Cycle(calls) => BuildError::Cycle { calls },
        })?;

        Ok(Aggregate::from_inner(Arc::new(Inner {
            calls,
            index,
            targets,
            plan,
            deadline: self.deadline,
            max_response_bytes: self.max_response_bytes,
            max_concurrent_calls: self.max_concurrent_calls,
        })))
    }
}

impl Default for AggregateBuilder {
    fn default() -> Self {
        Self::new()
    }
}

fn check_name(name: &str) -> Result<(), BuildError> {
    let reason = if name.is_empty() {
        "empty"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        "only ASCII letters, digits, `-` and `_` are allowed"
    } else if RESERVED.contains(&name) {
        "reserved for template sources"
    } else {
        return Ok(());
    };
    Err(BuildError::InvalidCallName {
        name: name.to_owned(),
        reason,
    })
}

fn compile(call: Call, targets: &HashMap<String, usize>) -> Result<CompiledCall, BuildError> {
    let Some(&target) = targets.get(&call.target) else {
        return Err(BuildError::UnknownTarget {
            call: call.name,
            target: call.target,
        });
    };
    let bad_template = |template: &str, reason: String| BuildError::BadTemplate {
        call: call.name.clone(),
        template: template.to_owned(),
        reason,
    };
    let path = Template::parse(&call.path, Kind::Uri).map_err(|r| bad_template(&call.path, r))?;
    let mut set_headers = Vec::with_capacity(call.set_headers.len());
    for (name, text) in &call.set_headers {
        let t = Template::parse(text, Kind::Header).map_err(|r| bad_template(text, r))?;
        set_headers.push((name.clone(), t));
    }
    let field_path = |p: &str| {
        FieldPath::parse(p).ok_or_else(|| BuildError::BadPath {
            call: call.name.clone(),
            path: p.to_owned(),
        })
    };
    let shape = Shape {
        pick: call.pick.as_deref().map(field_path).transpose()?,
        allow: call
            .allow
            .iter()
            .map(|p| field_path(p))
            .collect::<Result<_, _>>()?,
        deny: call
            .deny
            .iter()
            .map(|p| field_path(p))
            .collect::<Result<_, _>>()?,
        rename: call
            .rename
            .iter()
            .map(|(f, t)| Ok((field_path(f)?, field_path(t)?)))
            .collect::<Result<_, BuildError>>()?,
    };
    let mut pass_headers = Vec::new();
    let mut seen = HashSet::new();
    for h in &call.pass_headers {
        if seen.insert(h.clone()) {
            pass_headers.push(h.clone());
        }
    }
    Ok(CompiledCall {
        group: call.group.clone().unwrap_or_else(|| call.name.clone()),
        name: call.name,
        target,
        method: call.method,
        path,
        pass_headers,
        set_headers,
        timeout: call.timeout,
        required: call.required,
        top_level: call.top_level,
        shape,
    })
}
