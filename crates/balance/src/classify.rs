//! How an attempt went, as passive health and retries see it.
//!
//! The balancer does not know the endpoint service's error types (it works
//! over any service), so a [`Classify`] tells it. The default counts 5xx
//! responses and errors as failures and recognises a refused connection as
//! a connect failure through the `io::Error` in the error's source chain;
//! an embedder with typed errors (towergate's proxy) supplies its own with
//! [`errors`]:
//!
//! ```
//! use towergate_balance::classify::{self, Classify, Outcome};
//!
//! #[derive(Debug)]
//! struct Refused;
//! impl std::fmt::Display for Refused {
//!     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
//!         f.write_str("refused")
//!     }
//! }
//! impl std::error::Error for Refused {}
//!
//! let c = classify::errors(|e: &(dyn std::error::Error + 'static)| {
//!     if towergate_core::is_caused_by::<Refused>(e) {
//!         Outcome::ConnectFailure
//!     } else {
//!         Outcome::Failure
//!     }
//! });
//! assert_eq!(c.classify_error(&Refused), Outcome::ConnectFailure);
//! let rsp = http::Response::builder().status(503).body(()).unwrap();
//! assert_eq!(c.classify_response(&rsp), Outcome::Status(http::StatusCode::SERVICE_UNAVAILABLE));
//! ```

use std::error::Error;
use std::io;

use http::{Response, StatusCode};

use crate::error::Timeout;

/// How one attempt went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The endpoint answered, with a status that is not a failure.
    Success,
    /// The endpoint could not be reached, so nothing of the request was
    /// sent (connection refused, connect timeout, TLS handshake). Counts
    /// against the endpoint, and is safe to retry whatever the method.
    ConnectFailure,
    /// The endpoint did not answer in time; it may have acted on the request.
    Timeout,
    /// The endpoint answered with a failure status (5xx by default).
    Status(StatusCode),
    /// Any other failure of the exchange (reset, protocol error); the
    /// endpoint may have acted on the request.
    Failure,
    /// A failure that is not the endpoint's fault (the caller's request
    /// body broke): neither counted against the endpoint nor retried.
    Ignore,
}

/// Classifies attempts; see the [module docs](self).
pub trait Classify: Send + Sync + 'static {
    /// How a response went: by default a status of 500 or more is a
    /// [`Outcome::Status`] failure.
    fn classify_response<B>(&self, response: &Response<B>) -> Outcome {
        default_response(response.status())
    }

    /// How an error went: by default a refused or unreachable connection in
    /// the source chain is a [`Outcome::ConnectFailure`], this crate's
    /// attempt [`Timeout`] a [`Outcome::Timeout`], anything else a
    /// [`Outcome::Failure`].
    fn classify_error(&self, error: &(dyn Error + 'static)) -> Outcome {
        default_error(error)
    }
}

/// The default classification; see [`Classify`].
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultClassify;

/// A [`Classify`] that classifies errors with a closure and responses by
/// default; made by [`errors`].
#[derive(Clone, Copy)]
pub struct ClassifyErrors<F> {
    f: F,
}

/// Classifies errors with `f` (responses: 5xx is a failure).
pub fn errors<F>(f: F) -> ClassifyErrors<F>
where
    F: Fn(&(dyn Error + 'static)) -> Outcome + Send + Sync + 'static,
{
    ClassifyErrors { f }
}

/// The default classification of a status: 5xx is a failure.
pub fn default_response(status: StatusCode) -> Outcome {
    if status.is_server_error() {
        Outcome::Status(status)
    } else {
        Outcome::Success
    }
}

/// The default classification of an error; see [`Classify::classify_error`].
pub fn default_error(error: &(dyn Error + 'static)) -> Outcome {
    let mut cur = Some(error);
    while let Some(e) = cur {
        if e.is::<Timeout>() {
            return Outcome::Timeout;
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            match io.kind() {
                io::ErrorKind::ConnectionRefused
                | io::ErrorKind::AddrNotAvailable
                | io::ErrorKind::NetworkUnreachable
                | io::ErrorKind::HostUnreachable => return Outcome::ConnectFailure,
                io::ErrorKind::TimedOut => return Outcome::Timeout,
                _ => {}
            }
        }
        cur = e.source();
    }
    Outcome::Failure
}

// === impl Outcome ===

impl Outcome {
    /// Whether the attempt counts as a failure of the endpoint.
    pub fn is_failure(&self) -> bool {
        !matches!(self, Self::Success | Self::Ignore)
    }
}

// === impl DefaultClassify ===

impl Classify for DefaultClassify {}

// === impl ClassifyErrors ===

impl<F> Classify for ClassifyErrors<F>
where
    F: Fn(&(dyn Error + 'static)) -> Outcome + Send + Sync + 'static,
{
    fn classify_error(&self, error: &(dyn Error + 'static)) -> Outcome {
        (self.f)(error)
    }
}

impl<F> std::fmt::Debug for ClassifyErrors<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassifyErrors").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrap(io::Error);
    impl std::fmt::Display for Wrap {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl Error for Wrap {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn defaults() {
        let c = DefaultClassify;
        let refused = Wrap(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(c.classify_error(&refused), Outcome::ConnectFailure);
        let reset = Wrap(io::Error::from(io::ErrorKind::ConnectionReset));
        assert_eq!(c.classify_error(&reset), Outcome::Failure);
        assert_eq!(
            c.classify_error(&Timeout::attempt(std::time::Duration::from_secs(1))),
            Outcome::Timeout
        );
        let ok = Response::builder().status(404).body(()).expect("response");
        assert_eq!(c.classify_response(&ok), Outcome::Success);
        assert!(!Outcome::Ignore.is_failure());
        assert!(Outcome::Status(StatusCode::BAD_GATEWAY).is_failure());
    }
}
