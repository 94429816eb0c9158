//! Endpoints, the changes that discovery reports, and how an endpoint
//! becomes a service.

use std::net::SocketAddr;
use std::sync::Arc;

use towergate_core::BoxError;

/// One instance of a service: a URL or address, with a weight.
///
/// The URL is the endpoint's identity in the pool: two endpoints with the
/// same URL are the same endpoint. What it means is up to the
/// [`MakeEndpoint`] that turns it into a service; towergate's binary gives
/// it to `Proxy::builder`.
///
/// ```
/// use towergate_balance::Endpoint;
///
/// let e = Endpoint::new("http://10.0.0.7:8080").with_weight(3);
/// assert_eq!(e.url(), "http://10.0.0.7:8080");
/// assert_eq!(e.weight(), 3);
/// assert_eq!(e.socket_addr(), Some("10.0.0.7:8080".parse().unwrap()));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    url: Arc<str>,
    weight: u32,
    hostname: Option<Arc<str>>,
}

/// A membership change, as a [`Discover`](crate::discover::Discover)
/// source reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Adds the endpoint, or updates the weight of the one with its URL.
    Insert(Endpoint),
    /// Removes the endpoint with this URL.
    Remove(Arc<str>),
}

/// Turns an endpoint into the service that sends requests to it.
///
/// Implemented for closures `Fn(&Endpoint) -> Result<S, E>`, so the binary
/// writes `|e: &Endpoint| Proxy::builder(e.url()).client(client.clone()).build()`.
pub trait MakeEndpoint: Send + Sync + 'static {
    /// The endpoint's service.
    type Service;

    /// Makes the service; an error leaves the endpoint out of the pool
    /// (and fails [`PoolBuilder::build`](crate::PoolBuilder::build) for a
    /// static endpoint).
    fn make_endpoint(&self, endpoint: &Endpoint) -> Result<Self::Service, BoxError>;
}

// === impl Endpoint ===

impl Endpoint {
    /// An endpoint of weight 1.
    pub fn new(url: impl Into<Arc<str>>) -> Self {
        Self {
            url: url.into(),
            weight: 1,
            hostname: None,
        }
    }

    /// `http://addr`, weight 1.
    pub fn from_addr(addr: SocketAddr) -> Self {
        Self::new(format!("http://{addr}"))
    }

    /// Sets the weight (default 1). Weight 0 drains the endpoint: it stays
    /// in the pool (and in the snapshot) but takes no new request.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Records the name the endpoint was resolved from (DNS sources set it),
    /// so a [`MakeEndpoint`] can send it as `Host` or TLS server name.
    pub fn with_hostname(mut self, name: impl Into<Arc<str>>) -> Self {
        self.hostname = Some(name.into());
        self
    }

    /// The URL (or address), as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL as a shared string.
    pub fn url_arc(&self) -> &Arc<str> {
        &self.url
    }

    /// The weight.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// The name the endpoint was resolved from, if it came from DNS.
    pub fn hostname(&self) -> Option<&str> {
        self.hostname.as_deref()
    }

    /// The socket address in the URL's authority, when it is an IP literal
    /// with a port (`http://10.0.0.7:8080/x`, `[::1]:80`).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let rest = self.url.split_once("://").map_or(&*self.url, |(_, r)| r);
        let authority = rest.split(['/', '?', '#']).next()?;
        authority.parse().ok()
    }
}

// === impl MakeEndpoint ===

impl<F, S, E> MakeEndpoint for F
where
    F: Fn(&Endpoint) -> Result<S, E> + Send + Sync + 'static,
    E: Into<BoxError>,
{
    type Service = S;

    fn make_endpoint(&self, endpoint: &Endpoint) -> Result<S, BoxError> {
        self(endpoint).map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addr_forms() {
        let a = |s: &str| Endpoint::new(s).socket_addr();
        assert_eq!(
            a("http://127.0.0.1:80/base?x"),
            Some("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(a("[::1]:443"), Some("[::1]:443".parse().unwrap()));
        assert_eq!(a("http://svc.internal:80"), None);
        assert_eq!(
            Endpoint::from_addr("10.1.2.3:9".parse().unwrap()).url(),
            "http://10.1.2.3:9"
        );
    }
}
