//! The HTTP client for JWKS, introspection and forward-auth calls.

use std::fmt;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::error::BuildError;

/// A body was larger than the limit.
#[derive(Debug)]
pub(crate) struct BodyTooLarge {
    pub(crate) limit: usize,
}

/// A client that never follows redirects: a redirect from an identity
/// provider is an answer to report (forward auth passes it back), not a
/// place to send credentials to.
pub(crate) fn client(timeout: Duration) -> Result<reqwest::Client, BuildError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| BuildError::with_source("cannot build the HTTP client", e))
}

/// Reads a body, failing past `limit` bytes, so that a broken or hostile
/// server cannot make the gateway buffer without end.
pub(crate) async fn read_limited(
    mut rsp: reqwest::Response,
    limit: usize,
) -> Result<Bytes, Box<dyn std::error::Error + Send + Sync>> {
    if rsp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(Box::new(BodyTooLarge { limit }));
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = rsp.chunk().await.map_err(reqwest::Error::without_url)? {
        if buf.len() + chunk.len() > limit {
            return Err(Box::new(BodyTooLarge { limit }));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// A URL fit for the client: absolute `http` or `https`.
pub(crate) fn parse_url(what: &str, url: &str) -> Result<reqwest::Url, BuildError> {
    // Errors show the URL without its password (user info is allowed:
    // reqwest sends it as Basic credentials).
    let shown = towergate_core::url_without_password(url);
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| BuildError::with_source(format!("{what} URL {shown:?} is not valid"), e))?;
    match parsed.scheme() {
        "http" | "https" => Ok(parsed),
        other => Err(BuildError::new(format!(
            "{what} URL {shown:?} must be http or https, not {other}"
        ))),
    }
}

impl fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "body larger than {} bytes", self.limit)
    }
}

impl std::error::Error for BodyTooLarge {}
