//! The pooled upstream client: per-upstream connection pools
//! ([`pool`](crate::pool)) over a rustls connector, with one connect
//! deadline for TCP and TLS together.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http::uri::{Authority, Scheme};
use http_body_util::combinators::UnsyncBoxBody;
use hyper_rustls::{
    DefaultServerNameResolver, FixedServerNameResolver, HttpsConnector, MaybeHttpsStream,
    ResolveServerName,
};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tower::Service;
use towergate_core::BoxError;

use crate::error::{BuildError, ConnectTimedOut};
use crate::pool::{Host, Settings};

/// The body the client sends upstream: the caller's body, boxed so one pool
/// serves every body type, and never buffered.
pub(crate) type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// A shared, pooled upstream HTTP client.
///
/// Cloning is cheap (an `Arc` inside) and clones share the connection
/// pools, so build one per distinct TLS/protocol setting and hand it to
/// every [`Proxy`](crate::Proxy) that uses that setting.
///
/// - HTTP/1.1 with keep-alive; HTTP/2 when a TLS upstream selects it by
///   ALPN; with [`http2_only`](ClientBuilder::http2_only), HTTP/2 only
///   (h2c by prior knowledge for `http://` upstreams).
/// - TLS by rustls with the aws-lc-rs provider (no process-wide provider
///   needs installing), verifying against the system roots or the CA given
///   with [`ca_pem`](ClientBuilder::ca_pem), optionally presenting a client
///   certificate.
/// - Protocol upgrades (WebSocket) always go over HTTP/1.1 connections,
///   since an HTTP/2 connection cannot carry them.
/// - Each upstream (scheme and authority) has its own pool, found once when
///   a [`Proxy`](crate::Proxy) is built: idle HTTP/1.1 connections are
///   reused most recent first, at most
///   [`pool_max_idle_per_host`](ClientBuilder::pool_max_idle_per_host) of
///   them are kept, and they are closed after
///   [`pool_idle_timeout`](ClientBuilder::pool_idle_timeout) (never reused
///   past it). Once an upstream speaks HTTP/2, one connection carries its
///   requests, and requests that arrive while it is being made wait for it
///   (the very first requests to an ALPN upstream, before any connection
///   has told which protocol it speaks, may each open one). A request that
///   a pooled connection refused before sending any of it (the upstream
///   had just closed it) is sent once more, on a new connection.
///
/// ```
/// use std::time::Duration;
/// use towergate_proxy::Client;
///
/// let client = Client::builder()
///     .connect_timeout(Duration::from_secs(2))
///     .pool_max_idle_per_host(16)
///     .build()?;
/// assert!(!client.is_http2_only());
///
/// // Bad PEM is an error, not a panic.
/// assert!(Client::builder().ca_pem("not a certificate").build().is_err());
/// # Ok::<_, towergate_proxy::error::BuildError>(())
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// A handle to a [`Client`] that does not keep it alive (see
/// [`Client::downgrade`]): for a cache of clients that should go with the
/// last proxy using them.
#[derive(Clone, Debug)]
pub struct WeakClient {
    inner: Weak<Inner>,
}

/// Settings for a [`Client`]; see [`Client::builder`].
#[derive(Clone)]
#[must_use]
pub struct ClientBuilder {
    connect_timeout: Duration,
    pool_idle_timeout: Duration,
    pool_max_idle_per_host: usize,
    http2_only: bool,
    http2_keep_alive: Option<(Duration, Duration)>,
    ca_pem: Option<Vec<u8>>,
    client_cert: Option<(Vec<u8>, Vec<u8>)>,
    server_name: Option<String>,
}

struct Inner {
    /// What built it, for [`Client::for_server_name`].
    builder: ClientBuilder,
    settings: Settings,
    /// Each upstream's pool, looked up when a proxy is built (never per
    /// request); a pool lives as long as a proxy or a request uses it.
    hosts: Mutex<HashMap<(Scheme, Authority), Weak<Host>>>,
    http2_only: bool,
    connect_timeout: Duration,
    trusts: &'static str,
    mtls: bool,
}

/// The connector: rustls over TCP, under one deadline for both.
///
/// The TCP connector's own timeout only covers `connect(2)`; an upstream
/// that accepts but never finishes the TLS handshake would otherwise hold
/// the request until the response timeout.
#[derive(Clone)]
pub(crate) struct Connector {
    inner: HttpsConnector<HttpConnector>,
    timeout: Duration,
}

type InnerConnecting = <HttpsConnector<HttpConnector> as Service<Uri>>::Future;

/// Connecting under the connect deadline. Both fields are `Unpin` (the
/// rustls connector boxes its future, the sleep is boxed here).
pub(crate) struct Connecting {
    inner: InnerConnecting,
    sleep: Pin<Box<Sleep>>,
    timeout: Duration,
}

// === impl Client ===

impl Client {
    /// This client for an upstream reached by address but known by
    /// `name` (an endpoint found through DNS): the same settings, with
    /// `name` as SNI and as the name the certificate is checked against,
    /// unless a [`server_name`](ClientBuilder::server_name) was set, which
    /// wins (then this is the client itself). It has its own connections.
    pub fn for_server_name(&self, name: &str) -> Result<Client, BuildError> {
        if self.inner.builder.server_name.is_some() {
            return Ok(self.clone());
        }
        self.inner.builder.clone().server_name(name).build()
    }

    /// Starts building a client with the defaults: 5 s connect timeout,
    /// 90 s pool idle timeout, 64 idle connections per host, HTTP/1.1 and
    /// HTTP/2 by ALPN, system roots.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// A handle that does not keep this client (its TLS settings, its
    /// connection pools) alive: [`WeakClient::upgrade`] gives it back while
    /// a clone of it (a proxy built with it) still lives.
    pub fn downgrade(&self) -> WeakClient {
        WeakClient {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// Whether this client speaks only HTTP/2 upstream.
    pub fn is_http2_only(&self) -> bool {
        self.inner.http2_only
    }

    /// The connection pool of one upstream, shared by every proxy to it.
    pub(crate) fn host(&self, scheme: &Scheme, authority: &Authority) -> Arc<Host> {
        let mut hosts = self
            .inner
            .hosts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (scheme.clone(), authority.clone());
        if let Some(host) = hosts.get(&key).and_then(Weak::upgrade) {
            return host;
        }
        hosts.retain(|_, h| h.strong_count() > 0);
        let host = Arc::new(Host::new(
            self.inner.settings.clone(),
            scheme.clone(),
            authority.clone(),
        ));
        hosts.insert(key, Arc::downgrade(&host));
        host
    }

    #[cfg(test)]
    pub(crate) fn settings(&self) -> Settings {
        self.inner.settings.clone()
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("http2_only", &self.inner.http2_only)
            .field("connect_timeout", &self.inner.connect_timeout)
            .field("trusts", &self.inner.trusts)
            .field("mtls", &self.inner.mtls)
            .finish_non_exhaustive()
    }
}

// === impl WeakClient ===

impl WeakClient {
    /// The client, if a clone of it still lives.
    pub fn upgrade(&self) -> Option<Client> {
        self.inner.upgrade().map(|inner| Client { inner })
    }

    /// Whether a clone of the client still lives.
    pub fn is_alive(&self) -> bool {
        self.inner.strong_count() > 0
    }
}

// === impl ClientBuilder ===

impl ClientBuilder {
    fn new() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 64,
            http2_only: false,
            http2_keep_alive: Some((Duration::from_secs(30), Duration::from_secs(10))),
            ca_pem: None,
            client_cert: None,
            server_name: None,
        }
    }

    /// How long establishing a connection (TCP and TLS handshake) may take.
    /// Default 5 s. Expiry fails the request with
    /// [`UpstreamTimeout`](crate::error::UpstreamTimeout).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// How long an idle pooled connection is kept. Default 90 s.
    pub fn pool_idle_timeout(mut self, d: Duration) -> Self {
        self.pool_idle_timeout = d;
        self
    }

    /// How many idle HTTP/1.1 connections are kept per upstream. Default
    /// 64; 0 closes each after its request. An HTTP/2 connection is shared
    /// whatever this says.
    pub fn pool_max_idle_per_host(mut self, n: usize) -> Self {
        self.pool_max_idle_per_host = n;
        self
    }

    /// Speak only HTTP/2 upstream: by ALPN `h2` over TLS, by prior knowledge
    /// (h2c) over plain `http://`. Default false (HTTP/1.1, or HTTP/2 when a
    /// TLS upstream picks it).
    ///
    /// The caller's `TE: trailers` (which gRPC needs) is forwarded over
    /// HTTP/2 only: always with this, and over TLS whenever ALPN picks
    /// `h2`. Use it for gRPC over plain `http://` (h2c).
    pub fn http2_only(mut self, yes: bool) -> Self {
        self.http2_only = yes;
        self
    }

    /// Pings an HTTP/2 upstream connection every `interval` (busy or
    /// idle), and closes it when a ping is not answered within `timeout`:
    /// a connection to an upstream that vanished without a word (a killed
    /// VM, an expired NAT entry) is dropped, and the next request opens a
    /// new one, instead of every request waiting on it until its timeout
    /// for the minutes the kernel takes to give up. Default 30 s and 10 s;
    /// `None` sends no pings.
    pub fn http2_keep_alive(mut self, ping: Option<(Duration, Duration)>) -> Self {
        self.http2_keep_alive = ping;
        self
    }

    /// Trusts the CA certificates in `pem` (one or more) instead of the
    /// system roots.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Presents this certificate chain and key (PEM; PKCS#8, PKCS#1 or SEC1
    /// key) to upstreams that ask for a client certificate (mTLS).
    pub fn client_cert_pem(
        mut self,
        cert_chain_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.client_cert = Some((cert_chain_pem.into(), key_pem.into()));
        self
    }

    /// Sends this name as SNI and verifies the upstream's certificate
    /// against it, instead of the host of the upstream URL (useful when
    /// upstreams are addressed by IP).
    pub fn server_name(mut self, sni: impl Into<String>) -> Self {
        self.server_name = Some(sni.into());
        self
    }

    /// Builds the client. Unreadable PEM, a key that does not match, or an
    /// invalid server name is an error.
    pub fn build(self) -> Result<Client, BuildError> {
        let (roots, trusts) = match &self.ca_pem {
            Some(pem) => (ca_roots(pem)?, "ca_pem"),
            None => (system_roots(), "system roots"),
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| BuildError::with_source("TLS protocol versions unavailable", e))?
            .with_root_certificates(roots);
        let mut tls = match &self.client_cert {
            Some((chain, key)) => {
                let chain = pem_certs(chain, "client certificate")?;
                let key = PrivateKeyDer::from_pem_slice(key)
                    .map_err(|e| BuildError::with_source("invalid client key PEM", e))?;
                tls.with_client_auth_cert(chain, key).map_err(|e| {
                    BuildError::with_source("client certificate and key do not fit", e)
                })?
            }
            None => tls.with_no_client_auth(),
        };
        let resolver: Arc<dyn ResolveServerName + Send + Sync> = match &self.server_name {
            Some(name) => {
                // Accept `[::1]` as well as `::1`, as URLs write it.
                let bare = name
                    .strip_prefix('[')
                    .and_then(|n| n.strip_suffix(']'))
                    .unwrap_or(name);
                let name = ServerName::try_from(bare.to_owned()).map_err(|e| {
                    BuildError::with_source(format!("invalid TLS server name `{name}`"), e)
                })?;
                Arc::new(FixedServerNameResolver::new(name))
            }
            None => Arc::new(DefaultServerNameResolver::default()),
        };

        let mut tls_http1 = tls.clone();
        tls_http1.alpn_protocols = vec![b"http/1.1".to_vec()];
        tls.alpn_protocols = if self.http2_only {
            vec![b"h2".to_vec()]
        } else {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        };

        let settings = Settings {
            any: self.connector(tls, resolver.clone()),
            http1: self.connector(tls_http1, resolver),
            http2_only: self.http2_only,
            http2_keep_alive: self.http2_keep_alive,
            idle_timeout: self.pool_idle_timeout,
            max_idle: self.pool_max_idle_per_host,
        };
        Ok(Client {
            inner: Arc::new(Inner {
                builder: self.clone(),
                settings,
                hosts: Mutex::new(HashMap::new()),
                http2_only: self.http2_only,
                connect_timeout: self.connect_timeout,
                trusts,
                mtls: self.client_cert.is_some(),
            }),
        })
    }

    fn connector(
        &self,
        tls: ClientConfig,
        resolver: Arc<dyn ResolveServerName + Send + Sync>,
    ) -> Connector {
        let mut http = HttpConnector::new();
        // The scheme is checked by the TLS connector, which lets http through.
        http.enforce_http(false);
        http.set_nodelay(true);
        // Per address, so that a dead first address of a name leaves time to
        // try the next one; `Connector` bounds the whole.
        http.set_connect_timeout(Some(self.connect_timeout));
        Connector {
            inner: HttpsConnector::new(http, tls, false, resolver),
            timeout: self.connect_timeout,
        }
    }
}

impl fmt::Debug for ClientBuilder {
    // Hand-written so that the private key never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("connect_timeout", &self.connect_timeout)
            .field("pool_idle_timeout", &self.pool_idle_timeout)
            .field("pool_max_idle_per_host", &self.pool_max_idle_per_host)
            .field("http2_only", &self.http2_only)
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<pem>"))
            .field(
                "client_cert",
                &self.client_cert.as_ref().map(|_| "<redacted>"),
            )
            .field("server_name", &self.server_name)
            .finish()
    }
}

fn pem_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, BuildError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BuildError::with_source(format!("invalid {what} PEM"), e))?;
    if certs.is_empty() {
        return Err(BuildError::new(format!("no certificate in {what} PEM")));
    }
    Ok(certs)
}

fn ca_roots(pem: &[u8]) -> Result<RootCertStore, BuildError> {
    let mut roots = RootCertStore::empty();
    for cert in pem_certs(pem, "CA")? {
        roots
            .add(cert)
            .map_err(|e| BuildError::with_source("unusable CA certificate", e))?;
    }
    Ok(roots)
}

/// The system's trust store, read once per process: loading and parsing it
/// costs tens of millions of instructions, and every client built at start
/// and at each reload would pay it again. A restart picks up a changed
/// store.
fn system_roots() -> RootCertStore {
    static ROOTS: std::sync::OnceLock<RootCertStore> = std::sync::OnceLock::new();
    ROOTS.get_or_init(load_system_roots).clone()
}

/// A machine without a trust store still gets a client (plain-HTTP
/// upstreams work); HTTPS upstreams then fail verification, which the
/// warning explains ahead of time.
fn load_system_roots() -> RootCertStore {
    let loaded = rustls_native_certs::load_native_certs();
    for error in &loaded.errors {
        tracing::warn!(%error, "could not load some system root certificates");
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
    if ignored > 0 {
        tracing::debug!(ignored, "ignored unparsable system root certificates");
    }
    if added == 0 {
        tracing::warn!(
            "no system root certificates found: HTTPS upstreams will fail verification \
             unless a CA is configured"
        );
    }
    roots
}

// === impl Connector ===

impl Service<Uri> for Connector {
    type Response = MaybeHttpsStream<TokioIo<TcpStream>>;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        Connecting {
            inner: self.inner.call(dst),
            sleep: Box::pin(tokio::time::sleep(self.timeout)),
            timeout: self.timeout,
        }
    }
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

// === impl Connecting ===

impl Future for Connecting {
    type Output = Result<MaybeHttpsStream<TokioIo<TcpStream>>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(res) = self.inner.as_mut().poll(cx) {
            return Poll::Ready(res);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Box::new(ConnectTimedOut {
                after: self.timeout,
            }))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl fmt::Debug for Connecting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connecting")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
