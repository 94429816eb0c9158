//! The [`Authenticator`] trait that every method implements.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue};
use towergate_core::Identity;

use crate::credential::TokenSource;
use crate::error::AuthError;

/// A boxed, `Send` future, as [`Authenticator`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What an [`Authenticator`] established about a request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Authenticated {
    /// Who the caller is.
    pub identity: Identity,
    /// Headers to add to the request before it goes upstream (forward
    /// auth copies them from the auth service's answer).
    pub headers: HeaderMap,
}

/// One way of proving who the caller is: JWT, API key, introspection,
/// basic auth, forward auth, or your own.
///
/// `authenticate` answers:
/// - `Ok(None)`: no credential of this kind is present, so that with
///   several methods the next one gets its turn;
/// - `Ok(Some(_))`: the credential is valid;
/// - `Err(_)`: a credential is present and refused (`401`), or the method
///   could not decide (`503`), or an auth service answered for it.
///
/// The future is boxed because most methods are naturally asynchronous
/// (a JWKS fetch, an introspection or auth-service call, a password hash on
/// the blocking pool), and so that the trait stays object-safe: the
/// [`Auth`](crate::Auth) service holds a list of `dyn Authenticator`.
pub trait Authenticator: fmt::Debug + Send + Sync + 'static {
    /// Checks the credential of the request, if it carries one.
    fn authenticate<'a>(
        &'a self,
        req: &'a Parts,
    ) -> BoxFuture<'a, Result<Option<Authenticated>, AuthError>>;

    /// The `WWW-Authenticate` challenge to send when no credential was
    /// presented (`Bearer realm="api"`), if this method has one.
    fn challenge(&self) -> Option<HeaderValue> {
        None
    }

    /// The challenge for a `403` caused by missing scopes
    /// (`Bearer ..., error="insufficient_scope", scope="..."`), for bearer
    /// methods.
    fn insufficient_scope_challenge(&self, _scope: &str) -> Option<HeaderValue> {
        None
    }

    /// Removes this method's credential from the request (Authorization
    /// header, API-key header, query parameter, cookie), when the layer is
    /// asked to strip credentials before forwarding.
    fn strip_credential(&self, _req: &mut Parts) {}

    /// Headers this method adds to the upstream request: incoming copies are
    /// removed before authentication, so a client cannot spoof them.
    fn added_headers(&self) -> &[HeaderName] {
        &[]
    }

    /// Where this method reads its credential. With `any_of`, the
    /// credentials of the methods that did not decide are removed before
    /// forwarding (nobody checked them) when they are read elsewhere than
    /// the deciding one's. `None` (the default): not known, so never
    /// removed for another method.
    fn credential_sources(&self) -> Option<&[TokenSource]> {
        None
    }
}

// === impl Authenticated ===

impl From<Identity> for Authenticated {
    fn from(identity: Identity) -> Self {
        Self {
            identity,
            headers: HeaderMap::new(),
        }
    }
}

// === impl Authenticator for pointers ===

impl<T: Authenticator + ?Sized> Authenticator for Arc<T> {
    fn authenticate<'a>(
        &'a self,
        req: &'a Parts,
    ) -> BoxFuture<'a, Result<Option<Authenticated>, AuthError>> {
        (**self).authenticate(req)
    }

    fn challenge(&self) -> Option<HeaderValue> {
        (**self).challenge()
    }

    fn insufficient_scope_challenge(&self, scope: &str) -> Option<HeaderValue> {
        (**self).insufficient_scope_challenge(scope)
    }

    fn strip_credential(&self, req: &mut Parts) {
        (**self).strip_credential(req)
    }

    fn added_headers(&self) -> &[HeaderName] {
        (**self).added_headers()
    }

    fn credential_sources(&self) -> Option<&[TokenSource]> {
        (**self).credential_sources()
    }
}

impl<T: Authenticator + ?Sized> Authenticator for Box<T> {
    fn authenticate<'a>(
        &'a self,
        req: &'a Parts,
    ) -> BoxFuture<'a, Result<Option<Authenticated>, AuthError>> {
        (**self).authenticate(req)
    }

    fn challenge(&self) -> Option<HeaderValue> {
        (**self).challenge()
    }

    fn insufficient_scope_challenge(&self, scope: &str) -> Option<HeaderValue> {
        (**self).insufficient_scope_challenge(scope)
    }

    fn strip_credential(&self, req: &mut Parts) {
        (**self).strip_credential(req)
    }

    fn added_headers(&self) -> &[HeaderName] {
        (**self).added_headers()
    }

    fn credential_sources(&self) -> Option<&[TokenSource]> {
        (**self).credential_sources()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Auth service holds `dyn Authenticator`: the trait must stay
    // object-safe.
    #[test]
    fn object_safe() {
        fn takes(_: &dyn Authenticator) {}
        #[derive(Debug)]
        struct Nobody;
        impl Authenticator for Nobody {
            fn authenticate<'a>(
                &'a self,
                _req: &'a Parts,
            ) -> BoxFuture<'a, Result<Option<Authenticated>, AuthError>> {
                Box::pin(async { Ok(None) })
            }
        }
        takes(&Nobody);
        let boxed: Box<dyn Authenticator> = Box::new(Arc::new(Nobody));
        takes(&boxed);
    }
}
