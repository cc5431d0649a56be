//! Client IP: the socket peer, unless the peer is a trusted proxy, in which case
//! the `Forwarded` or `X-Forwarded-For` chain is walked right to left past trusted
//! hops (see [`rampart_core::client_ip`]). Headers from untrusted peers are ignored,
//! so a client cannot choose the address that rate limits and bans see.
//!
//! The result, a [`ClientInfo`], goes into the request's extensions. The peer comes
//! from [`ConnInfo`] (set by Rampart's server) or axum's `ConnectInfo<SocketAddr>`;
//! a request with neither is refused with 500, since nothing downstream could key
//! on the client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;
use http::StatusCode;
use rampart_core::client_ip::{resolve_client, ClientInfo, TrustedProxies};
use tower::{Layer, Service};

use super::{ConnInfo, HttpRequest, Inner, LayerFuture};
use crate::problem::Problem;

#[derive(Clone, Debug, Default)]
pub struct ClientIpLayer {
    trusted: Arc<TrustedProxies>,
}

impl ClientIpLayer {
    pub fn new(trusted: TrustedProxies) -> Self {
        Self { trusted: Arc::new(trusted) }
    }
}

impl<S> Layer<S> for ClientIpLayer {
    type Service = ClientIpService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ClientIpService { inner, trusted: self.trusted.clone() }
    }
}

#[derive(Clone, Debug)]
pub struct ClientIpService<S> {
    inner: S,
    trusted: Arc<TrustedProxies>,
}

impl<S: Inner> Service<HttpRequest> for ClientIpService<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures_util::future::Either<S::Future, LayerFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: HttpRequest) -> Self::Future {
        let peer = req
            .extensions()
            .get::<ConnInfo>()
            .map(|c| c.peer)
            .or_else(|| req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0));
        let Some(peer) = peer else {
            let resp = Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error")
                .detail("the client address is unknown")
                .into_response_for(req.extensions());
            return futures_util::future::Either::Right(Box::pin(async move { Ok(resp) }));
        };
        let info: ClientInfo = resolve_client(peer.ip(), &self.trusted, req.headers());
        req.extensions_mut().insert(info);
        futures_util::future::Either::Left(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use axum::body::Body;
    use std::net::IpAddr;
    use tower::{service_fn, ServiceExt};

    #[track_caller]
    fn check(trusted: &[&str], peer: &str, xff: Option<&str>, expected: &str) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let nets = trusted.iter().map(|s| s.parse().unwrap()).collect();
            let svc = ClientIpLayer::new(TrustedProxies::new(nets)).layer(service_fn(|req: HttpRequest| async move {
                let ip = req.extensions().get::<ClientInfo>().unwrap().ip;
                Ok::<_, std::convert::Infallible>(http::Response::new(Body::from(ip.to_string())))
            }));
            let mut req = http::Request::builder();
            if let Some(x) = xff {
                req = req.header("x-forwarded-for", x);
            }
            let mut req = req.body(Body::empty()).unwrap();
            req.extensions_mut().insert(ConnInfo { peer: SocketAddr::new(peer.parse().unwrap(), 1), tls: false });
            let resp = svc.oneshot(req).await.unwrap();
            let body = axum::body::to_bytes(resp.into_body(), 100).await.unwrap();
            let got: IpAddr = std::str::from_utf8(&body).unwrap().parse().unwrap();
            assert_eq!(got, expected.parse::<IpAddr>().unwrap());
        });
    }

    #[test]
    fn spoofed_headers_from_untrusted_peers_are_ignored() {
        check(&[], "203.0.113.9", Some("1.2.3.4"), "203.0.113.9");
        check(&["10.0.0.0/8"], "203.0.113.9", Some("1.2.3.4"), "203.0.113.9");
        check(&["10.0.0.0/8"], "10.0.0.5", Some("1.2.3.4, 10.0.0.7"), "1.2.3.4");
        check(&["10.0.0.0/8"], "10.0.0.5", Some("6.6.6.6, 1.2.3.4"), "1.2.3.4");
        check(&["10.0.0.0/8"], "10.0.0.5", None, "10.0.0.5");
    }

    #[tokio::test]
    async fn missing_peer_is_an_error_not_a_panic() {
        let svc = ClientIpLayer::default().layer(crate::testing::echo_headers());
        let resp = svc.oneshot(http::Request::new(Body::empty())).await.unwrap();
        assert_eq!(resp.status(), 500);
    }
}
