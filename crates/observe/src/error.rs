//! Errors of the observe crate: settings that cannot make a layer.
//!
//! The layers themselves never fail a request: they keep the inner
//! service's error type and only watch.

use std::fmt;

use towergate_core::BoxError;

/// A layer, a [`Metrics`](crate::Metrics) handle or the OpenTelemetry
/// pipeline could not be built from the given settings: what was wrong,
/// and the underlying cause (an io error opening the log file, the
/// exporter's error) as its `source()`.
///
/// ```
/// use towergate_observe::RequestIdLayer;
///
/// let err = RequestIdLayer::builder().header("not a header").build().unwrap_err();
/// assert!(err.to_string().contains("header name"));
/// ```
#[derive(Debug)]
pub struct BuildError {
    message: String,
    source: Option<BoxError>,
}

// === impl BuildError ===

impl BuildError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}
