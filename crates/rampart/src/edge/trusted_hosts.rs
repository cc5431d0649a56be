//! Trusted hosts: refuse requests addressed to a `Host`/`:authority` outside the
//! allow-list (421), which defeats host-header poisoning of links and caches and
//! DNS-rebinding attacks against the upstream. An empty list allows any host.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::StatusCode;
use rampart_core::route::HostPattern;
use tower::{Layer, Service};

use super::{request_host, HttpRequest, Inner, LayerFuture};
use crate::problem::Problem;

#[derive(Clone, Debug, Default)]
pub struct TrustedHostsLayer {
    hosts: Arc<Vec<HostPattern>>,
}

impl TrustedHostsLayer {
    pub fn new(hosts: Vec<HostPattern>) -> Self {
        Self { hosts: Arc::new(hosts) }
    }
}

impl<S> Layer<S> for TrustedHostsLayer {
    type Service = TrustedHostsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        TrustedHostsService { inner, hosts: self.hosts.clone() }
    }
}

#[derive(Clone, Debug)]
pub struct TrustedHostsService<S> {
    inner: S,
    hosts: Arc<Vec<HostPattern>>,
}

impl<S: Inner> Service<HttpRequest> for TrustedHostsService<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, LayerFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: HttpRequest) -> Self::Future {
        if self.hosts.is_empty() {
            return Either::Left(self.inner.call(req));
        }
        let allowed = request_host(&req).is_some_and(|h| self.hosts.iter().any(|p| p.matches(h)));
        if allowed {
            return Either::Left(self.inner.call(req));
        }
        let resp = Problem::new(StatusCode::MISDIRECTED_REQUEST, "untrusted-host", "Unknown host")
            .detail("this server does not serve the requested host")
            .rejected_by("trusted_hosts", "host")
            .into_response_for(req.extensions());
        Either::Right(Box::pin(async move { Ok(resp) }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    #[track_caller]
    fn check(patterns: &[&str], host: Option<&str>, status: u16) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let hosts = patterns.iter().map(|p| HostPattern::parse(p).unwrap()).collect();
            let svc = TrustedHostsLayer::new(hosts).layer(crate::testing::echo_headers());
            let mut b = http::Request::builder();
            if let Some(h) = host {
                b = b.header("host", h);
            }
            let resp = svc.oneshot(b.body(Body::empty()).unwrap()).await.unwrap();
            assert_eq!(resp.status().as_u16(), status);
        });
    }

    #[test]
    fn host_allow_list() {
        check(&[], Some("anything"), 200);
        check(&["api.example.com"], Some("api.example.com"), 200);
        check(&["api.example.com"], Some("API.example.com:8443"), 200);
        check(&["api.example.com"], Some("evil.test"), 421);
        check(&["api.example.com"], None, 421);
        check(&["*.example.com"], Some("a.b.example.com"), 200);
        check(&["*.example.com"], Some("example.com"), 421);
        check(&["*.example.com"], Some("example.com.evil.test"), 421);
    }
}
