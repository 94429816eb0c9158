use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::{Map, Value};

use crate::body::ResponseBody;

/// The media type of an RFC 9457 problem document.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// An RFC 9457 problem: the body of every response towergate generates.
///
/// `type` defaults to `about:blank` and `title` to the status's reason
/// phrase, as the RFC recommends. Extra headers (`Allow`, `Retry-After`,
/// `WWW-Authenticate`) travel with the problem so that the refusing layer
/// states them in one place.
///
/// ```
/// use http::StatusCode;
/// use towergate_core::Problem;
///
/// let p = Problem::new(StatusCode::TOO_MANY_REQUESTS)
///     .detail("limit of 10 requests per second exceeded")
///     .header(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"))
///     .extension("limit", "per-ip");
/// let json = p.to_json();
/// assert_eq!(json["status"], 429);
/// assert_eq!(json["title"], "Too Many Requests");
/// assert_eq!(json["limit"], "per-ip");
/// let rsp = p.into_full_response();
/// assert_eq!(rsp.headers()["retry-after"], "1");
/// ```
#[derive(Clone, Debug)]
pub struct Problem {
    status: StatusCode,
    kind: Option<String>,
    title: Option<String>,
    detail: Option<String>,
    instance: Option<String>,
    extensions: Map<String, Value>,
    headers: HeaderMap,
}

// === impl Problem ===

impl Problem {
    /// A problem with the given status and nothing else.
    pub fn new(status: StatusCode) -> Self {
        Self {
            status,
            kind: None,
            title: None,
            detail: None,
            instance: None,
            extensions: Map::new(),
            headers: HeaderMap::new(),
        }
    }

    /// Sets `type`, a URI that identifies the kind of problem.
    pub fn kind(mut self, uri: impl Into<String>) -> Self {
        self.kind = Some(uri.into());
        self
    }

    /// Sets `title`, a short summary that does not change between occurrences.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Sets `detail`, an explanation of this occurrence. Never put internal
    /// error text here for 5xx answers: the log has it.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Sets `instance`, which towergate fills with the request id.
    pub fn instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// Sets `instance` only if it is not set yet.
    pub fn instance_if_absent(mut self, instance: impl Into<String>) -> Self {
        if self.instance.is_none() {
            self.instance = Some(instance.into());
        }
        self
    }

    /// Adds an extension member to the body.
    pub fn extension(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.extensions.insert(key.into(), value.into());
        self
    }

    /// Adds a header to the response (e.g. `Allow`, `Retry-After`).
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The detail, if any.
    pub fn detail_text(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// The headers that go with the problem.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The problem document as JSON.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "type".into(),
            Value::String(self.kind.clone().unwrap_or_else(|| "about:blank".into())),
        );
        let title = self.title.clone().unwrap_or_else(|| {
            self.status
                .canonical_reason()
                .unwrap_or("Unknown Status")
                .to_owned()
        });
        m.insert("title".into(), Value::String(title));
        m.insert("status".into(), Value::from(self.status.as_u16()));
        if let Some(d) = &self.detail {
            m.insert("detail".into(), Value::String(d.clone()));
        }
        if let Some(i) = &self.instance {
            m.insert("instance".into(), Value::String(i.clone()));
        }
        for (k, v) in &self.extensions {
            // The standard members win over an extension of the same name.
            m.entry(k.clone()).or_insert_with(|| v.clone());
        }
        Value::Object(m)
    }

    /// The problem as a response with a `Full` body.
    pub fn into_full_response(self) -> Response<Full<Bytes>> {
        let body = serde_json::to_vec(&self.to_json()).unwrap_or_default();
        let mut rsp = Response::new(Full::new(Bytes::from(body)));
        *rsp.status_mut() = self.status;
        let headers = rsp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // `HeaderMap::into_iter` names only the first value of a repeated
        // header (several `WWW-Authenticate` challenges, say); the rest
        // belong to the last name seen.
        let mut last: Option<HeaderName> = None;
        for (name, value) in self.headers {
            if let Some(name) = name {
                last = Some(name);
            }
            if let Some(name) = &last {
                headers.append(name.clone(), value);
            }
        }
        rsp
    }

    /// The problem as a response whose body is a [`ResponseBody`] over any
    /// inner body type, so a layer can return it beside the inner service's
    /// responses.
    pub fn into_response<B>(self) -> Response<ResponseBody<B>> {
        self.into_full_response()
            .map(|full| ResponseBody::full(full))
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.status)?;
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn body_and_headers() {
        let rsp = Problem::new(StatusCode::METHOD_NOT_ALLOWED)
            .detail("POST is not allowed")
            .instance("req-1")
            .header(header::ALLOW, HeaderValue::from_static("GET, HEAD"))
            .header(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"a\""),
            )
            .header(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("ApiKey realm=\"a\""),
            )
            .extension("status", 999)
            .into_response::<Full<Bytes>>();
        assert_eq!(rsp.status(), 405);
        assert_eq!(rsp.headers()["allow"], "GET, HEAD");
        let challenges: Vec<_> = rsp.headers().get_all("www-authenticate").iter().collect();
        assert_eq!(challenges.len(), 2, "repeated headers are all kept");
        assert_eq!(rsp.headers()["content-type"], PROBLEM_CONTENT_TYPE);
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["type"], "about:blank");
        assert_eq!(v["title"], "Method Not Allowed");
        assert_eq!(v["status"], 405, "extension must not override status");
        assert_eq!(v["detail"], "POST is not allowed");
        assert_eq!(v["instance"], "req-1");
    }
}
