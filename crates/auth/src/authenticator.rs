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

    /// Where this method reads its credential. Before forwarding, what is
    /// at these places is removed (with every spelling an upstream reads
    /// as it) unless the method that authenticated the request read there
    /// ([`credential_read_from`](Self::credential_read_from)): nobody
    /// checked it. `None` (the default): not known, so never removed.
    fn credential_sources(&self) -> Option<&[TokenSource]> {
        None
    }

    /// Where the credential of `req` was read, once this method accepted
    /// it: these places keep what they hold, the other
    /// [`credential_sources`](Self::credential_sources) of every method
    /// are emptied.
    ///
    /// The default suits a method that tries its sources in turn and reads
    /// the first present one (as `extract` finds it), which is what the
    /// methods of this crate do. A method that reads several places at
    /// once says so here (forward auth sends all its chosen headers to the
    /// auth service); one that reads none of them returns nothing, and
    /// then every method's credential is removed when it decides.
    fn credential_read_from<'a>(&'a self, req: &Parts) -> &'a [TokenSource] {
        let sources = self.credential_sources().unwrap_or_default();
        match sources.iter().position(|s| s.extract(req).is_some()) {
            Some(i) => &sources[i..=i],
            None => &[],
        }
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

    fn credential_read_from<'a>(&'a self, req: &Parts) -> &'a [TokenSource] {
        (**self).credential_read_from(req)
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

    fn credential_read_from<'a>(&'a self, req: &Parts) -> &'a [TokenSource] {
        (**self).credential_read_from(req)
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
