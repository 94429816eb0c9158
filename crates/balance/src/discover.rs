//! Where a pool's endpoints come from besides its static list: DNS names
//! re-resolved on an interval, SRV records (feature `srv`), and
//! [`Discover`] sources that embedders implement.

use std::collections::BTreeSet;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::mpsc;
use towergate_core::BoxError;

use crate::endpoint::{Change, Endpoint};
use crate::error::BuildError;

/// A source of membership changes: any `Stream` of
/// `Result<Change, BoxError>` is one (as with `tower::discover::Discover`,
/// but it yields endpoints rather than ready-made services, so that the
/// pool can health-check them and make their services itself).
///
/// Errors are logged and the stream is polled on; when it ends, the
/// endpoints it added stay. [`channel`] gives a ready-made one.
pub trait Discover: Send + 'static {
    /// The next change.
    fn poll_change(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Change, BoxError>>>;
}

/// The sending half of [`channel`].
#[derive(Clone, Debug)]
pub struct DiscoverSender {
    tx: mpsc::UnboundedSender<Change>,
}

/// The receiving half of [`channel`]; give it to
/// [`PoolBuilder::discover`](crate::PoolBuilder::discover).
#[derive(Debug)]
pub struct DiscoverReceiver {
    rx: mpsc::UnboundedReceiver<Change>,
}

/// A [`Discover`] source fed by hand: a control plane client, a file
/// watcher, a test.
///
/// ```
/// use towergate_balance::{discover, Endpoint};
///
/// let (tx, rx) = discover::channel();
/// tx.insert(Endpoint::new("http://10.0.0.1:80"));
/// tx.remove("http://10.0.0.1:80");
/// # drop(rx);
/// ```
pub fn channel() -> (DiscoverSender, DiscoverReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    (DiscoverSender { tx }, DiscoverReceiver { rx })
}

/// A DNS name resolved to A/AAAA records (`tokio::net::lookup_host`,
/// the system resolver) and re-resolved on an interval; each address
/// becomes the endpoint `{scheme}://{ip}:{port}{path}`, with the name as
/// its [`hostname`](Endpoint::hostname).
///
/// A failed lookup keeps the previous endpoints (a DNS blip must not empty
/// a pool); a successful one replaces them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dns {
    pub(crate) host: Arc<str>,
    pub(crate) port: u16,
    pub(crate) scheme: Arc<str>,
    pub(crate) path: Arc<str>,
    pub(crate) interval: Duration,
    pub(crate) weight: u32,
}

/// SRV records (`_http._tcp.svc.example`) resolved with hickory-resolver
/// and re-resolved on an interval: the targets of the lowest priority
/// become endpoints `{scheme}://{ip}:{port}{path}` with the record's
/// weight (at least 1).
#[cfg(feature = "srv")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Srv {
    pub(crate) name: Arc<str>,
    pub(crate) scheme: Arc<str>,
    pub(crate) path: Arc<str>,
    pub(crate) interval: Duration,
}

/// A source the pool re-resolves by itself.
#[derive(Clone, Debug)]
pub(crate) enum Resolver {
    Dns(Dns),
    #[cfg(feature = "srv")]
    Srv(Srv),
}

// === impl Discover ===

impl<St> Discover for St
where
    St: Stream<Item = Result<Change, BoxError>> + Send + 'static,
{
    fn poll_change(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Change, BoxError>>> {
        self.poll_next(cx)
    }
}

// === impl DiscoverSender ===

impl DiscoverSender {
    /// Adds an endpoint (or updates its weight); `false` once the pool is gone.
    pub fn insert(&self, endpoint: Endpoint) -> bool {
        self.tx.send(Change::Insert(endpoint)).is_ok()
    }

    /// Removes the endpoint with this URL; `false` once the pool is gone.
    pub fn remove(&self, url: impl Into<Arc<str>>) -> bool {
        self.tx.send(Change::Remove(url.into())).is_ok()
    }
}

// === impl DiscoverReceiver ===

impl Stream for DiscoverReceiver {
    type Item = Result<Change, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|c| c.map(Ok))
    }
}

// === impl Dns ===

impl Dns {
    /// Resolves `host` (a name or an IP literal), port `port`, every 30 s;
    /// endpoints are `http://ip:port`, weight 1.
    pub fn new(host: impl Into<Arc<str>>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            scheme: "http".into(),
            path: "".into(),
            interval: Duration::from_secs(30),
            weight: 1,
        }
    }

    /// The URL scheme of the endpoints (default `http`).
    pub fn scheme(mut self, scheme: impl Into<Arc<str>>) -> Self {
        self.scheme = scheme.into();
        self
    }

    /// A base path appended to each endpoint URL (default none).
    pub fn path(mut self, path: impl Into<Arc<str>>) -> Self {
        self.path = path.into();
        self
    }

    /// How often to re-resolve (default 30 s).
    pub fn interval(mut self, d: Duration) -> Self {
        self.interval = d;
        self
    }

    /// The weight of every resolved endpoint (default 1).
    pub fn weight(mut self, w: u32) -> Self {
        self.weight = w;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), BuildError> {
        if self.host.is_empty() {
            return Err(BuildError::new("dns: empty host name"));
        }
        if self.interval.is_zero() {
            return Err(BuildError::new(
                "dns: the re-resolution interval must not be zero",
            ));
        }
        validate_path(&self.path)
    }

    async fn resolve(&self) -> Result<Vec<Endpoint>, BoxError> {
        let addrs: BTreeSet<std::net::SocketAddr> =
            tokio::net::lookup_host((&*self.host, self.port))
                .await?
                .collect();
        Ok(addrs
            .into_iter()
            .map(|a| {
                Endpoint::new(format!("{}://{a}{}", self.scheme, self.path))
                    .with_weight(self.weight)
                    .with_hostname(self.host.clone())
            })
            .collect())
    }
}

fn validate_path(path: &str) -> Result<(), BuildError> {
    if !path.is_empty() && !path.starts_with('/') {
        return Err(BuildError::new(format!(
            "base path `{path}` must start with `/`"
        )));
    }
    Ok(())
}

// === impl Srv ===

#[cfg(feature = "srv")]
impl Srv {
    /// Resolves the SRV records of `name` every 30 s; endpoints are
    /// `http://ip:port`.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            scheme: "http".into(),
            path: "".into(),
            interval: Duration::from_secs(30),
        }
    }

    /// The URL scheme of the endpoints (default `http`).
    pub fn scheme(mut self, scheme: impl Into<Arc<str>>) -> Self {
        self.scheme = scheme.into();
        self
    }

    /// A base path appended to each endpoint URL (default none).
    pub fn path(mut self, path: impl Into<Arc<str>>) -> Self {
        self.path = path.into();
        self
    }

    /// How often to re-resolve (default 30 s).
    pub fn interval(mut self, d: Duration) -> Self {
        self.interval = d;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), BuildError> {
        if self.name.is_empty() {
            return Err(BuildError::new("srv: empty record name"));
        }
        if self.interval.is_zero() {
            return Err(BuildError::new(
                "srv: the re-resolution interval must not be zero",
            ));
        }
        validate_path(&self.path)
    }

    async fn resolve(&self) -> Result<Vec<Endpoint>, BoxError> {
        let resolver = hickory_resolver::Resolver::builder_tokio()?.build()?;
        let answer = resolver.srv_lookup(&*self.name).await?;
        let records: Vec<&hickory_resolver::proto::rr::rdata::SRV> = answer
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                hickory_resolver::proto::rr::RData::SRV(srv) => Some(srv),
                _ => None,
            })
            .collect();
        let Some(best) = records.iter().map(|r| r.priority).min() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for r in records.into_iter().filter(|r| r.priority == best) {
            let target = r.target.to_utf8();
            let target = target.trim_end_matches('.');
            let weight = u32::from(r.weight).max(1);
            for a in tokio::net::lookup_host((target, r.port)).await? {
                out.push(
                    Endpoint::new(format!("{}://{a}{}", self.scheme, self.path))
                        .with_weight(weight)
                        .with_hostname(target),
                );
            }
        }
        out.sort_by(|a, b| a.url().cmp(b.url()));
        out.dedup_by(|a, b| a.url() == b.url());
        Ok(out)
    }
}

// === impl Resolver ===

impl Resolver {
    pub(crate) fn interval(&self) -> Duration {
        match self {
            Self::Dns(d) => d.interval,
            #[cfg(feature = "srv")]
            Self::Srv(s) => s.interval,
        }
    }

    pub(crate) async fn resolve(&self) -> Result<Vec<Endpoint>, BoxError> {
        match self {
            Self::Dns(d) => d.resolve().await,
            #[cfg(feature = "srv")]
            Self::Srv(s) => s.resolve().await,
        }
    }
}

impl fmt::Display for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dns(d) => write!(f, "dns {}:{}", d.host, d.port),
            #[cfg(feature = "srv")]
            Self::Srv(s) => write!(f, "srv {}", s.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dns_resolves_localhost() {
        let eps = Dns::new("localhost", 8080)
            .path("/base")
            .resolve()
            .await
            .expect("localhost resolves");
        assert!(!eps.is_empty());
        for e in &eps {
            assert!(e.url().starts_with("http://"), "{}", e.url());
            assert!(e.url().ends_with(":8080/base"), "{}", e.url());
            assert_eq!(e.hostname(), Some("localhost"));
            assert!(e.socket_addr().expect("ip").ip().is_loopback());
        }
        assert!(Dns::new("x", 1).path("nope").validate().is_err());
        assert!(Dns::new("", 1).validate().is_err());
    }
}
