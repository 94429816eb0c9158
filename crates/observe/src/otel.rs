//! The OpenTelemetry pipeline: spans exported over OTLP (HTTP/protobuf) in
//! batches, sampled by ratio and by the parent's decision.
//!
//! Nothing here is global: [`init`] returns an [`OtelGuard`] that owns the
//! tracer provider, and [`layer`] makes the `tracing` subscriber layer that
//! turns spans (those of [`TraceLayer`](crate::TraceLayer) included) into
//! OpenTelemetry spans. The binary adds that layer to the subscriber it
//! installs, and keeps the guard until it exits: dropping the guard
//! flushes the spans still queued and shuts the exporter down (it blocks
//! while it does, so drop it after the server has stopped, off the async
//! workers or at the end of `main`).
//!
//! Export runs on the batch processor's own thread with a blocking HTTP
//! client, so it needs no async runtime and never runs on the request path.
//! OTLP over gRPC is behind the `grpc` feature (`Protocol::Grpc`): the
//! tonic client needs a Tokio runtime, so [`init`] must then be called
//! inside one, and that runtime must outlive the guard.
//!
//! ```no_run
//! use tracing_subscriber::prelude::*;
//! use towergate_observe::otel::{self, OtelConfig};
//!
//! # fn main() -> Result<(), towergate_observe::BuildError> {
//! let guard = otel::init(OtelConfig {
//!     endpoint: "http://otel-collector:4318".into(),
//!     service_name: "towergate".into(),
//!     sample_ratio: 0.01,
//!     ..OtelConfig::default()
//! })?;
//! tracing_subscriber::registry()
//!     .with(tracing_subscriber::fmt::layer())
//!     .with(otel::layer(&guard))
//!     .init();
//! // ... serve; `guard` is dropped at the end of main, flushing the spans.
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetryLayer;

use crate::error::BuildError;

/// Where and how spans are exported; see [`init`].
#[derive(Clone, Debug, PartialEq)]
pub struct OtelConfig {
    /// The collector's OTLP/HTTP base URL (`http://collector:4318`);
    /// `/v1/traces` is appended unless the URL already ends with it.
    pub endpoint: String,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// The share of new traces to sample, 0.0 to 1.0. Requests that carry a
    /// parent context follow the parent's decision instead.
    pub sample_ratio: f64,
    /// The wire protocol.
    pub protocol: Protocol,
    /// How long one export may take. Default 10 s.
    pub timeout: Duration,
}

/// The OTLP wire protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protocol {
    /// Protobuf over HTTP (`POST /v1/traces`, port 4318 by convention).
    #[default]
    HttpProtobuf,
    /// Protobuf over gRPC (port 4317 by convention); the endpoint is used
    /// as given. Needs the `grpc` feature, and [`init`] must run inside a
    /// Tokio runtime that outlives the guard.
    #[cfg(feature = "grpc")]
    Grpc,
}

/// Owns the tracer provider; dropping it flushes queued spans and shuts
/// the exporter down. See the [module docs](self).
#[must_use = "dropping the guard shuts the exporter down"]
pub struct OtelGuard {
    provider: SdkTracerProvider,
}

/// The subscriber layer that turns `tracing` spans into OpenTelemetry spans
/// exported through `guard`'s provider. The binary adds it to its
/// subscriber; library code never installs a subscriber.
pub fn layer<S>(guard: &OtelGuard) -> OpenTelemetryLayer<S, SdkTracer>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(guard.tracer())
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
}

/// Builds the export pipeline: an OTLP/HTTP exporter with a batch
/// processor, a parent-based ratio sampler, and `service.name`.
///
/// Fails on a malformed endpoint, a sample ratio outside 0..=1, or an
/// exporter that cannot be built. Nothing is sent until spans end, and an
/// unreachable collector only loses spans: requests never wait on it.
pub fn init(config: OtelConfig) -> Result<OtelGuard, BuildError> {
    if !(0.0..=1.0).contains(&config.sample_ratio) {
        return Err(BuildError::new(format!(
            "otel: sample ratio {} is not between 0 and 1",
            config.sample_ratio
        )));
    }
    if config.service_name.is_empty() {
        return Err(BuildError::new("otel: the service name is empty"));
    }
    let exporter = match config.protocol {
        Protocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(traces_url(&config.endpoint)?)
            .with_timeout(config.timeout)
            .build()
            .map_err(|e| BuildError::with_source("otel: cannot build the OTLP exporter", e))?,
        #[cfg(feature = "grpc")]
        Protocol::Grpc => {
            if tokio::runtime::Handle::try_current().is_err() {
                return Err(BuildError::new(
                    "otel: gRPC export must be set up inside a Tokio runtime",
                ));
            }
            // Same checks as for HTTP; the URL is then used as given.
            traces_url(&config.endpoint)?;
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(config.endpoint.clone())
                .with_timeout(config.timeout)
                .build()
                .map_err(|e| BuildError::with_source("otel: cannot build the OTLP exporter", e))?
        }
    };
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sample_ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(config.service_name)
                .build(),
        )
        .build();
    Ok(OtelGuard { provider })
}

/// The full traces URL of an OTLP/HTTP base URL.
fn traces_url(endpoint: &str) -> Result<String, BuildError> {
    // Errors show it without a password.
    let shown = towergate_core::url_without_password(endpoint);
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| BuildError::with_source(format!("otel: invalid endpoint `{shown}`"), e))?;
    match uri.scheme_str() {
        Some("http") | Some("https") if uri.authority().is_some() => {}
        _ => {
            return Err(BuildError::new(format!(
                "otel: endpoint `{shown}` is not an http(s) URL"
            )));
        }
    }
    if uri.path().ends_with("/v1/traces") {
        return Ok(endpoint.to_owned());
    }
    let base = endpoint.trim_end_matches('/');
    Ok(format!("{base}/v1/traces"))
}

// === impl OtelConfig ===

impl Default for OtelConfig {
    /// A collector on localhost, every new trace sampled.
    fn default() -> Self {
        Self {
            endpoint: "http://localhost:4318".to_owned(),
            service_name: "towergate".to_owned(),
            sample_ratio: 1.0,
            protocol: Protocol::HttpProtobuf,
            timeout: Duration::from_secs(10),
        }
    }
}

// === impl OtelGuard ===

impl OtelGuard {
    /// A tracer of the provider, named `towergate`.
    pub fn tracer(&self) -> SdkTracer {
        self.provider.tracer("towergate")
    }

    /// The provider, for other instrumentation of the same process.
    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// Exports every span ended so far, blocking until done.
    pub fn force_flush(&self) -> OTelSdkResult {
        self.provider.force_flush()
    }

    /// Flushes and shuts the exporter down, blocking until done. Dropping
    /// the guard does the same and ignores the outcome.
    pub fn shutdown(&self) -> OTelSdkResult {
        self.provider.shutdown()
    }
}

impl Drop for OtelGuard {
    fn drop(&mut self) {
        // Already shut down is fine; a failing exporter cannot be helped now.
        let _ = self.provider.shutdown();
    }
}

impl fmt::Debug for OtelGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelGuard").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_url_appends_the_signal_path_once() {
        assert_eq!(
            traces_url("http://c:4318").unwrap(),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://c:4318/").unwrap(),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://c/otlp").unwrap(),
            "https://c/otlp/v1/traces"
        );
        assert_eq!(
            traces_url("http://c:4318/v1/traces").unwrap(),
            "http://c:4318/v1/traces"
        );
        assert!(traces_url("c:4318").is_err());
        assert!(traces_url("ftp://c").is_err());
        assert!(traces_url("not a url").is_err());
    }

    #[cfg(feature = "grpc")]
    #[test]
    fn grpc_needs_a_runtime() {
        let cfg = OtelConfig {
            endpoint: "http://127.0.0.1:4317".into(),
            protocol: Protocol::Grpc,
            ..OtelConfig::default()
        };
        assert!(init(cfg.clone()).is_err());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let guard = rt.block_on(async { init(cfg) }).unwrap();
        rt.block_on(async move { drop(guard) });
    }

    #[test]
    fn bad_settings_are_build_errors() {
        for ratio in [-0.1, 1.5, f64::NAN] {
            let cfg = OtelConfig {
                sample_ratio: ratio,
                ..OtelConfig::default()
            };
            assert!(init(cfg).is_err(), "{ratio}");
        }
        let cfg = OtelConfig {
            endpoint: "localhost".into(),
            ..OtelConfig::default()
        };
        assert!(init(cfg).is_err());
    }
}
