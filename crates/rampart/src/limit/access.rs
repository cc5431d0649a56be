//! Address checks that come before anything else: the CIDR allow and deny lists
//! (reloaded with the config) and active bans. Both are in-memory lookups, so a
//! refused address costs a few hundred nanoseconds and nothing downstream.
//! Every request is also counted towards the heavy-hitter sketch here.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::StatusCode;
use rampart_core::client_ip::ClientInfo;
use rampart_core::config::AccessLists;
use tower::{Layer, Service};

use super::LimitState;
use crate::edge::{HttpRequest, Inner, LayerFuture};
use crate::problem::Problem;

#[derive(Clone)]
pub struct AccessLayer {
    lists: Arc<AccessLists>,
    state: Arc<LimitState>,
}

impl AccessLayer {
    pub fn new(lists: Arc<AccessLists>, state: Arc<LimitState>) -> Self {
        Self { lists, state }
    }
}

impl<S> Layer<S> for AccessLayer {
    type Service = AccessService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AccessService { inner, lists: self.lists.clone(), state: self.state.clone() }
    }
}

#[derive(Clone)]
pub struct AccessService<S> {
    inner: S,
    lists: Arc<AccessLists>,
    state: Arc<LimitState>,
}

fn refuse(req: &HttpRequest, reason: &'static str, detail: &'static str) -> LayerFuture {
    let resp = Problem::new(StatusCode::FORBIDDEN, "forbidden-address", "Forbidden")
        .detail(detail)
        .rejected_by("access", reason)
        .into_response_for(req.extensions());
    Box::pin(async move { Ok(resp) })
}

impl<S: Inner> Service<HttpRequest> for AccessService<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, LayerFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: HttpRequest) -> Self::Future {
        let Some(ip) = req.extensions().get::<ClientInfo>().map(|c| c.ip) else {
            return Either::Left(self.inner.call(req));
        };
        self.state.abuse.record(ip);
        if !self.lists.permits(ip) {
            return Either::Right(refuse(&req, "ip_list", "requests from this address are not allowed"));
        }
        if self.state.bans.banned(ip).is_some() {
            return Either::Right(refuse(&req, "banned", "this address is temporarily banned"));
        }
        Either::Left(self.inner.call(req))
    }
}
