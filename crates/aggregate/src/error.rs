//! Errors: what can go wrong when building an [`Aggregate`](crate::Aggregate),
//! and why a single upstream call of an aggregated request failed.

use http::StatusCode;

/// Why [`AggregateBuilder::build`](crate::AggregateBuilder::build) refused a
/// definition. Every variant names the call (and where useful the template or
/// field) at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Two calls have the same name.
    #[error("duplicate call name `{name}`")]
    DuplicateCall {
        /// The repeated name.
        name: String,
    },
    /// Two targets were registered under the same name.
    #[error("duplicate target name `{name}`")]
    DuplicateTarget {
        /// The repeated name.
        name: String,
    },
    /// A call name cannot be used (empty, contains `.`, `{` or `}`, or is one
    /// of the reserved template sources `params`, `query`, `header`,
    /// `identity`).
    #[error("invalid call name `{name}`: {reason}")]
    InvalidCallName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A call names a target that was never registered with
    /// [`AggregateBuilder::target`](crate::AggregateBuilder::target).
    #[error("call `{call}` uses unknown target `{target}`")]
    UnknownTarget {
        /// The call.
        call: String,
        /// The target it names.
        target: String,
    },
    /// A template does not parse, or does not produce a valid path or header
    /// value.
    #[error("call `{call}`: bad template `{template}`: {reason}")]
    BadTemplate {
        /// The call.
        call: String,
        /// The template text.
        template: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A template variable `{x.y}` whose `x` is neither a template source
    /// (`params`, `query`, `header`, `identity`) nor the name of a call.
    #[error("call `{call}` references unknown variable or call `{reference}`")]
    UnknownReference {
        /// The call whose template holds the reference.
        call: String,
        /// The variable as written, without braces.
        reference: String,
    },
    /// Calls depend on each other in a circle. `calls` lists the cycle in
    /// dependency order, the first call repeated at the end
    /// (`a -> b -> a`).
    #[error("dependency cycle between calls: {}", calls.join(" -> "))]
    Cycle {
        /// The calls of the cycle, first one repeated at the end.
        calls: Vec<String>,
    },
    /// A `pick`, `allow`, `deny` or `rename` path is empty or has an empty
    /// segment (`a..b`).
    #[error("call `{call}`: bad field path `{path}`")]
    BadPath {
        /// The call.
        call: String,
        /// The path as written.
        path: String,
    },
    /// A limit was set to a value that cannot work (`max_concurrent_calls(0)`,
    /// `max_response_bytes(0)`, a zero deadline).
    #[error("invalid setting: {0}")]
    InvalidSetting(&'static str),
}

/// Why one upstream call of an aggregated request produced no value.
///
/// [`reason`](CallFailure::reason) is a stable machine-readable code (it is the
/// `reason` member of problem answers); [`status`](CallFailure::status) is the
/// status the aggregated request gets when the call is required.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallFailure {
    /// A template variable from the incoming request (`params`, `query`,
    /// `header`, `identity`) has no value. Status 400.
    #[error("the request lacks `{variable}`")]
    MissingInput {
        /// The variable, without braces (`params.id`).
        variable: String,
    },
    /// An input value cannot be used in a header (control characters).
    /// Status 400.
    #[error("the value of `{variable}` is not a valid header value")]
    InvalidInput {
        /// The variable, without braces.
        variable: String,
    },
    /// A template refers to a field of an earlier call's response that is
    /// absent, `null`, an object or an array. Status 502.
    #[error("the response of an earlier call lacks `{variable}`")]
    DependencyFieldMissing {
        /// The variable, without braces (`user.customer_id`).
        variable: String,
    },
    /// A field of an earlier call's response cannot go where the template
    /// puts it: in a path, a value that would leave its segment (`/`,
    /// `\`, NUL, `.`, `..`, empty). The upstream's answer is at fault, not
    /// the client. Status 502.
    #[error("the value of `{variable}` from an earlier call cannot be used there")]
    DependencyFieldInvalid {
        /// The variable, without braces (`user.customer_id`).
        variable: String,
    },
    /// A call this one depends on failed, so this one was not made. Status:
    /// that of the root cause.
    #[error("call `{dependency}` it depends on failed: {cause}")]
    DependencyFailed {
        /// The dependency that failed first.
        dependency: String,
        /// Why it failed.
        cause: Box<CallFailure>,
    },
    /// The target service returned an error (connection refused, reset,
    /// protocol error). Status 502.
    #[error("transport error")]
    Transport,
    /// The upstream answered with a non-2xx status. Status: the same for
    /// 4xx, 503 and 504, 502 otherwise.
    #[error("upstream answered {0}")]
    Status(StatusCode),
    /// The answer is not JSON (content type or body). Status 502.
    #[error("upstream answer is not JSON")]
    NotJson,
    /// The answer's body exceeds the configured maximum. Status 502.
    #[error("upstream answer exceeds the size limit")]
    TooLarge,
    /// The call's own timeout elapsed. Status 504.
    #[error("call timed out")]
    Timeout,
    /// The aggregate's overall deadline elapsed before the call finished.
    /// Status 504.
    #[error("aggregate deadline exceeded")]
    Deadline,
}

// === impl CallFailure ===

impl CallFailure {
    /// A stable code for the failure: `missing_input`, `invalid_input`,
    /// `dependency_field_missing`, `dependency_field_invalid`,
    /// `dependency_failed`, `transport`,
    /// `upstream_status`, `not_json`, `too_large`, `timeout`, `deadline`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingInput { .. } => "missing_input",
            Self::InvalidInput { .. } => "invalid_input",
            Self::DependencyFieldMissing { .. } => "dependency_field_missing",
            Self::DependencyFieldInvalid { .. } => "dependency_field_invalid",
            Self::DependencyFailed { .. } => "dependency_failed",
            Self::Transport => "transport",
            Self::Status(_) => "upstream_status",
            Self::NotJson => "not_json",
            Self::TooLarge => "too_large",
            Self::Timeout => "timeout",
            Self::Deadline => "deadline",
        }
    }

    /// The status of the aggregated answer when a required call fails this
    /// way.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingInput { .. } | Self::InvalidInput { .. } => StatusCode::BAD_REQUEST,
            // What the answer says about the resource the client asked
            // for (bad input, forbidden, not found, conflict, gone,
            // unprocessable), and "unavailable"/"timed out" (a gateway in
            // front of the upstream said so), pass through. The other 4xx
            // are about the sub-request the gateway made, not the client's:
            // a 401 or 407 (the call's credentials are the gateway's
            // business, and its `WWW-Authenticate` is not passed on; a
            // client would drop its own good session), 405, 413, 414, 431
            // (the gateway's method, body, URI and headers), 429 (a limit
            // on the gateway, with no `Retry-After` for the client): 502.
            Self::Status(s) if passes_through(*s) => *s,
            Self::DependencyFailed { cause, .. } => cause.status(),
            Self::Timeout | Self::Deadline => StatusCode::GATEWAY_TIMEOUT,
            Self::DependencyFieldMissing { .. }
            | Self::DependencyFieldInvalid { .. }
            | Self::Transport
            | Self::Status(_)
            | Self::NotJson
            | Self::TooLarge => StatusCode::BAD_GATEWAY,
        }
    }
}

/// Whether an upstream status of a required call is the aggregate's
/// status too (see [`CallFailure::status`]).
fn passes_through(s: StatusCode) -> bool {
    matches!(
        s,
        StatusCode::BAD_REQUEST
            | StatusCode::FORBIDDEN
            | StatusCode::NOT_FOUND
            | StatusCode::CONFLICT
            | StatusCode::GONE
            | StatusCode::PRECONDITION_FAILED
            | StatusCode::UNPROCESSABLE_ENTITY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(CallFailure::Status(StatusCode::NOT_FOUND).status(), 404);
        assert_eq!(
            CallFailure::Status(StatusCode::INTERNAL_SERVER_ERROR).status(),
            502
        );
        assert_eq!(CallFailure::Status(StatusCode::FOUND).status(), 502);
        for passed in [400, 403, 404, 409, 410, 412, 422] {
            let s = StatusCode::from_u16(passed).unwrap();
            assert_eq!(CallFailure::Status(s).status(), s);
        }
        // About the gateway's own sub-request, not the client's.
        for not_the_clients in [401, 405, 407, 413, 414, 429, 431] {
            let s = StatusCode::from_u16(not_the_clients).unwrap();
            assert_eq!(CallFailure::Status(s).status(), 502, "{s}");
        }
        assert_eq!(
            CallFailure::Status(StatusCode::SERVICE_UNAVAILABLE).status(),
            503
        );
        assert_eq!(
            CallFailure::Status(StatusCode::GATEWAY_TIMEOUT).status(),
            504
        );
        assert_eq!(CallFailure::Timeout.status(), 504);
        assert_eq!(CallFailure::Deadline.status(), 504);
        assert_eq!(
            CallFailure::MissingInput {
                variable: "params.id".into()
            }
            .status(),
            400
        );
        let dep = CallFailure::DependencyFailed {
            dependency: "user".into(),
            cause: Box::new(CallFailure::Timeout),
        };
        assert_eq!(dep.status(), 504);
        assert_eq!(dep.reason(), "dependency_failed");
    }

    #[test]
    fn cycle_display() {
        let e = BuildError::Cycle {
            calls: vec!["a".into(), "b".into(), "a".into()],
        };
        assert_eq!(e.to_string(), "dependency cycle between calls: a -> b -> a");
    }
}
