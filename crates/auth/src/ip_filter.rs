//! [`IpFilterLayer`]: allow and deny lists on the client address.

use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use ipnet::IpNet;
use tower::{Layer, Service};
use towergate_core::body::ResponseBody;
use towergate_core::{ClientAddr, Problem, RequestId};

use crate::error::{BuildError, reason};
use crate::future::IpFilterFuture;
use crate::ip::{IpAccess, Verdict};

/// Refuses requests by client address with a `403` problem.
///
/// The address is the `client` of [`ClientAddr`] in the request
/// extensions, so the listener's trusted-proxy handling applies (a client
/// cannot pick its address with `X-Forwarded-For`). Without a
/// `ClientAddr`, axum's `ConnectInfo<SocketAddr>` is used (feature
/// `axum`); with neither, the request is refused: the filter fails closed.
///
/// IPv4 and IPv6 networks; an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`)
/// is matched as IPv4. The deny list wins over the allow list; a non-empty
/// allow list admits only its networks. Answers at once, in `call`.
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
/// use towergate_auth::IpFilterLayer;
/// use towergate_core::ClientAddr;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let layer = IpFilterLayer::builder()
///     .allow("10.0.0.0/8".parse::<ipnet::IpNet>()?)
///     .deny("10.6.6.0/24".parse::<ipnet::IpNet>()?)
///     .build()?;
/// let svc = ServiceBuilder::new()
///     .layer(layer)
///     .service(service_fn(|_: Request<String>| async {
///         Ok::<_, Infallible>(Response::new(String::from("hi")))
///     }));
///
/// let from = |ip: &str| {
///     let mut req = Request::new(String::new());
///     req.extensions_mut()
///         .insert(ClientAddr::direct(format!("{ip}:4000").parse().unwrap(), false));
///     req
/// };
/// assert_eq!(svc.clone().oneshot(from("10.1.2.3")).await?.status(), 200);
/// assert_eq!(svc.clone().oneshot(from("10.6.6.6")).await?.status(), 403);
/// assert_eq!(svc.oneshot(from("192.0.2.1")).await?.status(), 403);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct IpFilterLayer {
    access: Arc<IpAccess>,
}

/// Settings for an [`IpFilterLayer`]; see [`IpFilterLayer::builder`].
#[derive(Debug, Default)]
#[must_use]
pub struct IpFilterBuilder {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

/// The service of [`IpFilterLayer`].
#[derive(Clone, Debug)]
pub struct IpFilter<S> {
    inner: S,
    access: Arc<IpAccess>,
}

// === impl IpFilterLayer ===

impl IpFilterLayer {
    /// Starts building a filter.
    pub fn builder() -> IpFilterBuilder {
        IpFilterBuilder::default()
    }
}

impl<S> Layer<S> for IpFilterLayer {
    type Service = IpFilter<S>;

    fn layer(&self, inner: S) -> IpFilter<S> {
        IpFilter {
            inner,
            access: self.access.clone(),
        }
    }
}

// === impl IpFilterBuilder ===

impl IpFilterBuilder {
    /// Admits this network (or address: `IpAddr` converts into a host
    /// network). Once any is allowed, only allowed networks pass.
    pub fn allow(mut self, net: impl Into<IpNet>) -> Self {
        self.allow.push(net.into());
        self
    }

    /// Refuses this network; wins over [`allow`](Self::allow).
    pub fn deny(mut self, net: impl Into<IpNet>) -> Self {
        self.deny.push(net.into());
        self
    }

    /// Builds the layer; a filter with no network at all is a mistake.
    pub fn build(self) -> Result<IpFilterLayer, BuildError> {
        let access = IpAccess::new(self.allow, self.deny);
        if access.is_empty() {
            return Err(BuildError::new("an IP filter needs at least one network"));
        }
        Ok(IpFilterLayer {
            access: Arc::new(access),
        })
    }
}

// === impl IpFilter ===

impl<S> IpFilter<S> {
    /// Wraps `inner` with the filter of `layer`.
    pub fn new(inner: S, layer: &IpFilterLayer) -> Self {
        layer.layer(inner)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for IpFilter<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = IpFilterFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let verdict = client_ip(&req).map(|ip| (ip, self.access.check(ip)));
        match verdict {
            Some((_, Verdict::Allowed)) => IpFilterFuture::inner(self.inner.call(req)),
            refused => {
                let request_id = req.extensions().get::<RequestId>();
                match refused {
                    Some((ip, v)) => tracing::debug!(
                        %ip,
                        verdict = ?v,
                        request_id = request_id.map(RequestId::as_str),
                        "client address refused"
                    ),
                    None => tracing::warn!(
                        request_id = request_id.map(RequestId::as_str),
                        "no client address recorded; IP filter refuses the request"
                    ),
                }
                let mut problem = Problem::new(StatusCode::FORBIDDEN)
                    .detail("the client address is not allowed")
                    .extension("reason", reason::IP_DENIED);
                if let Some(id) = request_id {
                    problem = problem.instance(id.as_str());
                }
                let mut rsp = problem.into_full_response();
                rsp.extensions_mut().insert(crate::error::AuthFailure {
                    reason: reason::IP_DENIED,
                    status: StatusCode::FORBIDDEN,
                });
                IpFilterFuture::rejected(rsp)
            }
        }
    }
}

fn client_ip<B>(req: &Request<B>) -> Option<IpAddr> {
    if let Some(a) = req.extensions().get::<ClientAddr>() {
        return Some(a.client);
    }
    #[cfg(feature = "axum")]
    if let Some(ci) = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
    {
        return Some(ci.0.ip());
    }
    None
}
