//! Load shedding and per-address concurrency caps.
//!
//! A global count of requests in flight: past `shed_anonymous_at` × `max_in_flight`
//! anonymous requests are refused first (503 with `Retry-After`), so signed-in
//! users keep working while anonymous floods are shed; past `max_in_flight`
//! everything new is refused. Independently, one client may have at most
//! `max_requests_per_ip` requests in flight (429): one IPv4 address, or one
//! IPv6 network of `[server] ipv6_prefix` bits (see [`ClientGrouping`]).
//!
//! "Signed in" means a credential the [`Recognize`] implementation (the
//! authentication layer) knows valid from memory, without I/O: a cached
//! verified token, a cached API key, a session seen valid a moment ago. A
//! header that merely looks like a credential (`Cookie: x=1`, a bogus
//! bearer token) counts as anonymous, so it cannot jump the queue.
//!
//! The per-address table holds only addresses with requests in flight, so its
//! size is bounded by the in-flight cap itself.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::future::{ready, Either, Ready};
use http::StatusCode;
use rampart_core::client_ip::{ClientGrouping, ClientInfo};
use tower::{Layer, Service};

use crate::edge::route::MatchedRoute;
use crate::edge::{HttpRequest, HttpResponse, Inner, Post, PostProcess};
use crate::problem::Problem;

/// In-flight counts, shared across config reloads.
#[derive(Debug, Default)]
pub struct LoadShedder {
    in_flight: AtomicUsize,
    /// By client (see [`ClientGrouping::key`]).
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    clients: ClientGrouping,
}

/// Releases a request's slots when dropped.
pub struct Slot {
    shedder: Arc<LoadShedder>,
    ip: Option<IpAddr>,
}

/// A request's slot, in its extensions: whatever goes on working for the
/// request after its client has gone (a budget route's exchange, which runs in
/// a task of its own so that the debit happens) holds a clone, so the request
/// counts as in flight until that work ends, not only until the client hangs
/// up.
/// Only budget routes (the only ones with such work) share their slot: the
/// others keep it in the response future alone, without an allocation.
#[derive(Clone)]
pub struct HeldSlot(#[allow(dead_code)] Arc<Slot>);

/// The slot the response future holds.
pub enum SlotHold {
    Own(#[allow(dead_code)] Slot),
    Shared(#[allow(dead_code)] HeldSlot),
}

impl PostProcess for SlotHold {
    fn apply(self, resp: HttpResponse) -> HttpResponse {
        drop(self);
        resp
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shedder.in_flight.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            let mut map = self.shedder.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            // One lookup (the address is hashed once) for both steps.
            if let Entry::Occupied(mut n) = map.entry(ip) {
                *n.get_mut() = n.get().saturating_sub(1);
                if *n.get() == 0 {
                    n.remove();
                }
            }
        }
    }
}

impl LoadShedder {
    /// Counts requests in flight per client as `clients` says.
    pub fn new(clients: ClientGrouping) -> Self {
        Self { clients, ..Self::default() }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

/// Limits for [`ShedLayer`].
#[derive(Clone, Copy, Debug)]
pub struct ShedConfig {
    pub max_in_flight: usize,
    pub shed_anonymous_at: f64,
    pub max_requests_per_ip: usize,
}

#[derive(Clone)]
pub struct ShedLayer {
    shedder: Arc<LoadShedder>,
    config: ShedConfig,
    signed_in: Arc<dyn Recognize>,
}

impl ShedLayer {
    pub fn new(shedder: Arc<LoadShedder>, config: ShedConfig, signed_in: Arc<dyn Recognize>) -> Self {
        Self { shedder, config, signed_in }
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = ShedService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ShedService { inner, shedder: self.shedder.clone(), config: self.config, signed_in: self.signed_in.clone() }
    }
}

#[derive(Clone)]
pub struct ShedService<S> {
    inner: S,
    shedder: Arc<LoadShedder>,
    config: ShedConfig,
    signed_in: Arc<dyn Recognize>,
}

/// Tells a request with a credential known valid from memory (no I/O) from
/// an anonymous one. Closures implement it too.
pub trait Recognize: Send + Sync {
    fn recognizes(&self, req: &HttpRequest) -> bool;
}

impl<F: Fn(&HttpRequest) -> bool + Send + Sync> Recognize for F {
    fn recognizes(&self, req: &HttpRequest) -> bool {
        self(req)
    }
}

impl<S: Inner> Service<HttpRequest> for ShedService<S> {
    type Response = S::Response;
    type Error = S::Error;
    /// The inner service's response, the request's slot held until it is
    /// there; or the refusal.
    type Future = Either<Post<S::Future, SlotHold>, Ready<Result<HttpResponse, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: HttpRequest) -> Self::Future {
        let cfg = self.config;
        let n = self.shedder.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        let mut slot = Slot { shedder: self.shedder.clone(), ip: None };
        if cfg.max_in_flight > 0 {
            let soft = (cfg.max_in_flight as f64 * cfg.shed_anonymous_at) as usize;
            let reason = if n > cfg.max_in_flight {
                Some("overload")
            } else if n > soft && !self.signed_in.recognizes(&req) {
                Some("overload_anonymous")
            } else {
                None
            };
            if let Some(reason) = reason {
                drop(slot);
                let resp = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "Service overloaded")
                    .detail("the gateway is shedding load; retry shortly")
                    .retry_after(1)
                    .rejected_by("shed", reason)
                    .into_response_for(req.extensions());
                return Either::Right(ready(Ok(resp)));
            }
        }
        if cfg.max_requests_per_ip > 0 {
            if let Some(ip) = req.extensions().get::<ClientInfo>().map(|c| self.shedder.clients.key(c.ip)) {
                let mut map = self.shedder.per_ip.lock().unwrap_or_else(|e| e.into_inner());
                let count = map.entry(ip).or_insert(0);
                if *count >= cfg.max_requests_per_ip {
                    // Never a fresh entry: the cap is at least 1.
                    drop(map);
                    drop(slot);
                    let resp = Problem::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too-many-concurrent",
                        "Too many concurrent requests",
                    )
                    .detail("this address has too many requests in flight")
                    .retry_after(1)
                    .rejected_by("shed", "per_ip_concurrency")
                    .into_response_for(req.extensions());
                    return Either::Right(ready(Ok(resp)));
                }
                *count += 1;
                slot.ip = Some(ip);
            }
        }
        // Given back once the response is there (or the request is dropped
        // unanswered), and whatever still works for it has let go.
        let budgets = req.extensions().get::<MatchedRoute>().is_some_and(|r| r.0.limits.iter().any(|l| l.is_budget()));
        let hold = if budgets {
            let shared = HeldSlot(Arc::new(slot));
            req.extensions_mut().insert(shared.clone());
            SlotHold::Shared(shared)
        } else {
            SlotHold::Own(slot)
        };
        Either::Left(Post::new(self.inner.call(req), Some(hold)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use axum::body::Body;

    fn request(ip: &str) -> HttpRequest {
        let mut req = http::Request::new(Body::empty());
        req.extensions_mut().insert(ClientInfo {
            ip: ip.parse().unwrap(),
            forwarded_https: false,
            via_trusted_proxy: false,
        });
        req
    }

    /// Addresses of one IPv6 /64 share its cap; another /64 has its own.
    #[tokio::test]
    async fn an_ipv6_client_is_capped_as_its_network() {
        let config = ShedConfig { max_in_flight: 0, shed_anonymous_at: 1.0, max_requests_per_ip: 2 };
        let shedder = Arc::new(LoadShedder::new(ClientGrouping::new(64)));
        let mut svc = ShedLayer::new(shedder.clone(), config, Arc::new(|_: &HttpRequest| false))
            .layer(crate::testing::echo_headers());
        // In flight until polled.
        let held = [svc.call(request("2001:db8:1:2::1")), svc.call(request("2001:db8:1:2::2"))];
        let status = |resp: Result<HttpResponse, Infallible>| resp.map(|r| r.status().as_u16()).unwrap_or(0);
        assert_eq!(status(svc.call(request("2001:db8:1:2:ffff::3")).await), 429, "the /64 has two in flight");
        assert_eq!(status(svc.call(request("2001:db8:1:3::1")).await), 200, "another /64");
        assert_eq!(status(svc.call(request("198.51.100.1")).await), 200);
        drop(held);
        assert_eq!(status(svc.call(request("2001:db8:1:2::7")).await), 200, "the slots are given back");
        assert_eq!(shedder.in_flight(), 0);
    }
}
