//! RFC 9457 problem documents: the one shape every rejection and error takes.
//!
//! A problem knows which layer raised it and why (`Rejection`, attached to the
//! response's extensions) so that metrics count rejections by layer and reason
//! without parsing bodies.
//!
//! ```
//! use rampart::problem::Problem;
//! use http::StatusCode;
//! let resp = Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "body-too-large", "Request body too large")
//!     .detail("the body exceeds 1024 bytes")
//!     .rejected_by("guard", "body_too_large")
//!     .into_response_with(None);
//! assert_eq!(resp.status(), 413);
//! assert_eq!(resp.headers()["content-type"], "application/problem+json");
//! ```

use std::borrow::Cow;

use axum::body::Body;
use http::{header, HeaderValue, Response, StatusCode};
use serde::Serialize;

use crate::edge::request_id::RequestId;

/// Which layer refused a request, and why; read by the metrics layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub layer: &'static str,
    pub reason: &'static str,
}

/// An RFC 9457 problem, built by the layer that refuses a request.
#[derive(Clone, Debug)]
pub struct Problem {
    status: StatusCode,
    kind: &'static str,
    title: &'static str,
    detail: Option<Cow<'static, str>>,
    rejection: Option<Rejection>,
    retry_after: Option<u64>,
}

#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

impl Problem {
    /// `kind` is a short slug (`body-too-large`) that becomes the problem `type`
    /// URI `urn:rampart:problem:<kind>`.
    pub fn new(status: StatusCode, kind: &'static str, title: &'static str) -> Self {
        Self { status, kind, title, detail: None, rejection: None, retry_after: None }
    }

    pub fn detail(mut self, detail: impl Into<Cow<'static, str>>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn rejected_by(mut self, layer: &'static str, reason: &'static str) -> Self {
        self.rejection = Some(Rejection { layer, reason });
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Renders the problem; `request_id` is echoed in the body so a user can quote it.
    pub fn into_response_with(self, request_id: Option<&RequestId>) -> Response<Body> {
        let body = ProblemBody {
            kind: format!("urn:rampart:problem:{}", self.kind),
            title: self.title,
            status: self.status.as_u16(),
            detail: self.detail.as_deref(),
            request_id: request_id.map(RequestId::as_str),
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut resp = Response::new(Body::from(bytes));
        *resp.status_mut() = self.status;
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(r) = self.rejection {
            resp.extensions_mut().insert(r);
        }
        resp
    }

    /// Renders the problem for a request, taking the request id from its extensions.
    pub fn into_response_for(self, extensions: &http::Extensions) -> Response<Body> {
        let id = extensions.get::<RequestId>();
        self.into_response_with(id)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn body_is_rfc9457_with_request_id() {
        let id = RequestId::from_static("abc-123");
        let resp = Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", "Too many requests")
            .detail("slow down")
            .retry_after(7)
            .rejected_by("limit", "ip")
            .into_response_with(Some(&id));
        assert_eq!(resp.headers()["retry-after"], "7");
        assert_eq!(resp.extensions().get::<Rejection>().unwrap().reason, "ip");
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["type"], "urn:rampart:problem:rate-limited");
        assert_eq!(v["title"], "Too many requests");
        assert_eq!(v["status"], 429);
        assert_eq!(v["detail"], "slow down");
        assert_eq!(v["request_id"], "abc-123");
    }
}
