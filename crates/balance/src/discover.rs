//! Where a pool's endpoints come from besides its static list: DNS names
//! re-resolved on an interval, SRV records (feature `srv`), and
//! [`Discover`] sources that embedders implement.

use std::collections::BTreeSet;
use std::fmt;
#[cfg(feature = "srv")]
use std::net::IpAddr;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
#[cfg(feature = "srv")]
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
#[cfg(feature = "srv")]
use hickory_resolver::TokioResolver;
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

/// SRV records (`_http._tcp.users.service.consul`) resolved with
/// hickory-resolver and re-resolved on an interval (feature `srv`).
///
/// Each resolution asks for the SRV records of the name and keeps those of
/// the lowest priority value; records of other priorities are ignored (the
/// pool does not fall back to them when those targets are unhealthy: its
/// health checks and ejection work within the kept set). Each target
/// becomes the endpoints `{scheme}://{ip}:{port}{path}`, with the record's
/// weight (at least 1; a weight-0 record is kept at 1, it does not drain)
/// and the target name as [`hostname`](Endpoint::hostname). A target is
/// resolved to addresses in this order:
///
/// 1. an IP literal (`10.0.0.7.`) is used as is;
/// 2. A/AAAA records for it in the answer's additional section (which is
///    what Consul sends) are used;
/// 3. otherwise it is looked up: with the [`nameserver`](Srv::nameserver)
///    when one is set, with the system resolver (`getaddrinfo`) when not.
///
/// A target that does not resolve is left out, with a warning. A failed
/// resolution (a timeout, SERVFAIL, NXDOMAIN, no SRV record at all, or no
/// target that resolved) keeps the endpoints the last good one gave (a DNS
/// blip must not empty a pool) and logs a warning; a good one replaces
/// them.
///
/// Queries go to the system's name servers (`/etc/resolv.conf`) unless
/// [`nameserver`](Srv::nameserver) points them at one server. The
/// resolver is built once per pool source, at its first resolution, and
/// caches answers for at most their TTL (negative answers: the SOA's
/// negative TTL; errors such as SERVFAIL or timeouts are not cached), so a
/// re-resolution sees changed records once their TTL has run out (a change
/// shows in the pool at most TTL + interval after it is made). Consul
/// answers with TTL 0 by default, so every re-resolution asks the agent.
///
/// ```
/// use std::time::Duration;
/// use towergate_balance::Srv;
///
/// // Ask the local Consul agent's DNS interface.
/// let users = Srv::new("_users._tcp.service.consul")
///     .nameserver(([127, 0, 0, 1], 8600).into())
///     .interval(Duration::from_secs(5));
/// # drop(users);
/// ```
#[cfg(feature = "srv")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Srv {
    pub(crate) name: Arc<str>,
    pub(crate) scheme: Arc<str>,
    pub(crate) path: Arc<str>,
    pub(crate) interval: Duration,
    pub(crate) nameserver: Option<SocketAddr>,
}

/// An [`Srv`] in a pool, with its resolver once built.
#[cfg(feature = "srv")]
#[derive(Clone, Debug)]
pub(crate) struct SrvSource {
    srv: Srv,
    resolver: OnceLock<TokioResolver>,
}

/// A source the pool re-resolves by itself.
#[derive(Clone, Debug)]
pub(crate) enum Resolver {
    Dns(Dns),
    #[cfg(feature = "srv")]
    Srv(Box<SrvSource>),
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
        // Bounded: `getaddrinfo` can hang on an unanswering resolver, and
        // the next round must not wait behind it. An empty answer is a
        // failure, not an empty pool: a blip never empties a pool.
        let lookup = tokio::net::lookup_host((&*self.host, self.port));
        let addrs: BTreeSet<SocketAddr> = tokio::time::timeout(LOOKUP_TIMEOUT, lookup)
            .await
            .map_err(|_| format!("DNS lookup of {} timed out", self.host))??
            .collect();
        if addrs.is_empty() {
            return Err(format!("DNS lookup of {} found no address", self.host).into());
        }
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

/// The longest wait for one DNS lookup.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// An SRV record kept, and its target's name without the final dot.
#[cfg(feature = "srv")]
struct Target<'a> {
    srv: &'a hickory_resolver::proto::rr::rdata::SRV,
    host: String,
}

#[cfg(feature = "srv")]
impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host)
    }
}

/// Looks every target up at once, each within `limit`, so that one
/// unanswered lookup (`getaddrinfo` has no timeout of its own) neither
/// stalls the resolution nor delays the others.
#[cfg(feature = "srv")]
async fn lookup_all<T, F, Fut>(
    targets: Vec<T>,
    limit: Duration,
    lookup: F,
) -> Vec<(T, Result<Vec<IpAddr>, BoxError>)>
where
    T: fmt::Display,
    F: Fn(&T) -> Fut,
    Fut: Future<Output = Result<Vec<IpAddr>, BoxError>>,
{
    let lookups = targets.iter().map(|t| {
        let (f, name) = (lookup(t), t.to_string());
        async move {
            tokio::time::timeout(limit, f)
                .await
                .unwrap_or_else(|_| Err(format!("lookup of {name} timed out").into()))
        }
    });
    let found = futures_util::future::join_all(lookups).await;
    targets.into_iter().zip(found).collect()
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
    /// Resolves the SRV records of `name` every 30 s, with the system's
    /// name servers; endpoints are `http://ip:port`.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            scheme: "http".into(),
            path: "".into(),
            interval: Duration::from_secs(30),
            nameserver: None,
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

    /// Sends every query (the SRV one, and the A/AAAA ones for targets the
    /// answer gave no address for) to this one server, over UDP, retried
    /// over TCP when an answer comes back truncated, instead of to the
    /// system's name servers; `/etc/hosts` is not consulted either.
    ///
    /// For service registries with a DNS interface, such as a Consul agent
    /// (`127.0.0.1:8600`) or CoreDNS in front of a registry. Default: none,
    /// the system's configuration (`/etc/resolv.conf`).
    pub fn nameserver(mut self, addr: SocketAddr) -> Self {
        self.nameserver = Some(addr);
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
        if let Some(ns) = self.nameserver
            && (ns.port() == 0 || ns.ip().is_unspecified())
        {
            return Err(BuildError::new(format!(
                "srv: `{ns}` is not a name server address"
            )));
        }
        validate_path(&self.path)
    }

    /// A resolver for this source: the system's configuration, or the one
    /// name server, UDP then TCP.
    fn build_resolver(&self) -> Result<TokioResolver, BoxError> {
        use hickory_resolver::config::{
            ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig,
        };
        use hickory_resolver::net::runtime::TokioRuntimeProvider;

        let Some(ns) = self.nameserver else {
            return Ok(TokioResolver::builder_tokio()?.build()?);
        };
        let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
            .into_iter()
            .map(|mut c| {
                c.port = ns.port();
                c
            })
            .collect();
        let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
            ns.ip(),
            true,
            connections,
        )]);
        let mut builder =
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
        builder.options_mut().use_hosts_file = ResolveHosts::Never;
        Ok(builder.build()?)
    }

    async fn resolve(&self, resolver: &TokioResolver) -> Result<Vec<Endpoint>, BoxError> {
        use hickory_resolver::proto::rr::RData;

        let answer = resolver.srv_lookup(&*self.name).await?;
        let records: Vec<&hickory_resolver::proto::rr::rdata::SRV> = answer
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(srv) => Some(srv),
                _ => None,
            })
            .collect();
        let Some(best) = records.iter().map(|r| r.priority).min() else {
            return Err(format!("no SRV records for {}", self.name).into());
        };
        let kept = records
            .into_iter()
            .filter(|r| r.priority == best)
            .map(|srv| {
                let target = srv.target.to_utf8();
                Target {
                    srv,
                    host: target.trim_end_matches('.').to_owned(),
                }
            })
            .collect();
        let answer = &answer;
        let found = lookup_all(kept, LOOKUP_TIMEOUT, |t: &Target<'_>| {
            let (r, host) = (t.srv, t.host.clone());
            async move {
                if let Ok(ip) = host.parse() {
                    return Ok(vec![ip]);
                }
                let glue: Vec<IpAddr> = answer
                    .additionals()
                    .iter()
                    .filter(|a| a.name == r.target)
                    .filter_map(|a| match &a.data {
                        RData::A(a) => Some(a.0.into()),
                        RData::AAAA(a) => Some(a.0.into()),
                        _ => None,
                    })
                    .collect();
                if !glue.is_empty() {
                    Ok(glue)
                } else if self.nameserver.is_some() {
                    let ips = resolver.lookup_ip(r.target.clone()).await?;
                    Ok(ips.iter().collect())
                } else {
                    let addrs = tokio::net::lookup_host((&*host, r.port)).await?;
                    Ok(addrs.map(|a| a.ip()).collect())
                }
            }
        })
        .await;
        let mut out = Vec::new();
        let mut first_error = None;
        for (t, ips) in found {
            let ips = match ips {
                Ok(ips) => ips,
                Err(e) => {
                    tracing::warn!(srv = %self.name, target = %t.host, error = %e, "SRV target left out: it did not resolve");
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            let weight = u32::from(t.srv.weight).max(1);
            for ip in ips {
                let a = SocketAddr::new(ip, t.srv.port);
                out.push(
                    Endpoint::new(format!("{}://{a}{}", self.scheme, self.path))
                        .with_weight(weight)
                        .with_hostname(t.host.as_str()),
                );
            }
        }
        if out.is_empty() {
            return Err(first_error
                .unwrap_or_else(|| format!("no SRV target of {} resolved", self.name).into()));
        }
        out.sort_by(|a, b| a.url().cmp(b.url()));
        out.dedup_by(|a, b| a.url() == b.url());
        Ok(out)
    }
}

// === impl SrvSource ===

#[cfg(feature = "srv")]
impl SrvSource {
    pub(crate) fn new(srv: Srv) -> Self {
        Self {
            srv,
            resolver: OnceLock::new(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), BuildError> {
        self.srv.validate()
    }

    async fn resolve(&self) -> Result<Vec<Endpoint>, BoxError> {
        let resolver = match self.resolver.get() {
            Some(r) => r,
            None => {
                // Built outside the lock: a race builds two, one is kept.
                let built = self.srv.build_resolver()?;
                self.resolver.get_or_init(|| built)
            }
        };
        self.srv.resolve(resolver).await
    }
}

// === impl Resolver ===

impl Resolver {
    pub(crate) fn interval(&self) -> Duration {
        match self {
            Self::Dns(d) => d.interval,
            #[cfg(feature = "srv")]
            Self::Srv(s) => s.srv.interval,
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

impl Resolver {
    /// Whether `other` looks the same names up in the same way and makes
    /// the same endpoints of the answers (a reload that kept the source);
    /// how often it looks them up does not matter.
    pub(crate) fn same_source(&self, other: &Resolver) -> bool {
        match (self, other) {
            (Self::Dns(a), Self::Dns(b)) => {
                Dns {
                    interval: b.interval,
                    ..a.clone()
                } == *b
            }
            #[cfg(feature = "srv")]
            (Self::Srv(a), Self::Srv(b)) => {
                Srv {
                    interval: b.srv.interval,
                    ..a.srv.clone()
                } == b.srv
            }
            #[cfg(feature = "srv")]
            _ => false,
        }
    }
}

impl fmt::Display for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dns(d) => write!(f, "dns {}:{}", d.host, d.port),
            #[cfg(feature = "srv")]
            Self::Srv(s) => match s.srv.nameserver {
                Some(ns) => write!(f, "srv {} @{ns}", s.srv.name),
                None => write!(f, "srv {}", s.srv.name),
            },
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

    #[cfg(feature = "srv")]
    #[tokio::test(start_paused = true)]
    async fn srv_targets_are_looked_up_at_once_each_within_the_limit() {
        let started = tokio::time::Instant::now();
        let lookups = lookup_all(
            vec!["hangs-1.test", "slow.test", "hangs-2.test"],
            LOOKUP_TIMEOUT,
            |t: &&str| {
                let t = *t;
                async move {
                    if t == "slow.test" {
                        tokio::time::sleep(Duration::from_secs(3)).await;
                        return Ok(vec![IpAddr::from([10, 0, 0, 1])]);
                    }
                    // As `getaddrinfo` with a resolver that never answers.
                    std::future::pending().await
                }
            },
        );
        let found = tokio::time::timeout(Duration::from_secs(600), lookups)
            .await
            .expect("every lookup is bounded");
        assert_eq!(
            started.elapsed(),
            LOOKUP_TIMEOUT,
            "at once, not one after the other"
        );
        let found: Vec<(&str, bool)> = found.iter().map(|(t, r)| (*t, r.is_ok())).collect();
        assert_eq!(
            found,
            [
                ("hangs-1.test", false),
                ("slow.test", true),
                ("hangs-2.test", false)
            ]
        );
    }
}
