//! Evidence: access logs, metrics, health and the audit log ([`audit`]).
//!
//! [`ObserveLayer`] sits right after route lookup so that every request, refused
//! or served, is counted once and logged once, with the route it matched. The
//! access log line is written when the response body has been sent (or dropped),
//! so it carries the real byte count and total duration, like nginx's.
//!
//! **Invariant:** the access log names only the method, the path without its
//! query, the route, the client address and numbers. Query strings, headers,
//! cookies and bodies are never logged, so tokens cannot leak into logs.

pub mod abuse;
pub mod alerts;
pub mod audit;
pub mod health;
pub mod log_text;
pub mod metrics;
pub mod stats;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;
use rampart_core::client_ip::ClientInfo;
use tower::{Layer, Service};

use crate::edge::request_id::RequestId;
use crate::edge::route::MatchedRoute;
use crate::edge::{HttpRequest, HttpResponse, Inner, Post, PostProcess};
use crate::problem::Rejection;
use crate::proxy::UpstreamTiming;
pub use metrics::{Metrics, RouteSeries};
use rampart_core::config::RoutePolicy;

#[derive(Clone, Debug)]
pub struct ObserveLayer {
    metrics: Arc<Metrics>,
    access_log: bool,
    /// The series of each route of the table, by [`RoutePolicy::index`].
    routes: Arc<[Arc<RouteSeries>]>,
}

impl ObserveLayer {
    pub fn new(metrics: Arc<Metrics>, access_log: bool) -> Self {
        Self { metrics, access_log, routes: Arc::new([]) }
    }

    /// Resolves the metric series of `routes` (a policy's route table) now,
    /// so that counting a request that matched one of them is two atomic
    /// updates; requests matching no route, or another table's, are counted
    /// by label lookup as without this.
    pub fn with_routes(mut self, routes: &[Arc<RoutePolicy>]) -> Self {
        self.routes = routes.iter().map(|r| Arc::new(self.metrics.route_series(&r.name))).collect();
        self
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = ObserveService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ObserveService {
            inner,
            metrics: self.metrics.clone(),
            access_log: self.access_log,
            routes: self.routes.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ObserveService<S> {
    inner: S,
    metrics: Arc<Metrics>,
    access_log: bool,
    routes: Arc<[Arc<RouteSeries>]>,
}

/// Everything the access log line needs, gathered while the request is served.
pub struct AccessRecord {
    metrics: Arc<Metrics>,
    log: bool,
    started: Instant,
    request_id: Option<RequestId>,
    client_ip: Option<std::net::IpAddr>,
    method: http::Method,
    path: String,
    route: Arc<str>,
    /// The matched route's series, when resolved beforehand.
    series: Option<Arc<RouteSeries>>,
    status: u16,
    upstream_ms: Option<f64>,
    rejection: Option<Rejection>,
}

impl AccessRecord {
    /// The request's metrics, once its status is known.
    fn observe(&self) {
        let elapsed = self.started.elapsed();
        match &self.series {
            Some(series) => self.metrics.observe_route_request(series, self.status, elapsed),
            None => self.metrics.observe_request(&self.route, self.status, elapsed),
        }
        if let Some(r) = self.rejection {
            self.metrics.rejection(r.layer, r.reason);
        }
    }

    fn finish(self, bytes: u64) {
        self.metrics.in_flight().dec();
        if !self.log {
            return;
        }
        let (layer, reason) = self.rejection.map_or(("", ""), |r| (r.layer, r.reason));
        tracing::info!(
            target: "rampart::access",
            request_id = self.request_id.as_ref().map_or("", RequestId::as_str),
            client_ip = %self.client_ip.map(|i| i.to_string()).unwrap_or_default(),
            method = %self.method,
            path = %self.path,
            route = %self.route,
            status = self.status,
            duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            upstream_ms = self.upstream_ms,
            bytes = bytes,
            rejected_by = layer,
            reason = reason,
            "request"
        );
    }
}

const NO_ROUTE: &str = "none";

impl<S: Inner> Service<HttpRequest> for ObserveService<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = Post<S::Future, AccessRecord>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: HttpRequest) -> Self::Future {
        let started = Instant::now();
        self.metrics.in_flight().inc();
        let ext = req.extensions();
        let matched = ext.get::<MatchedRoute>();
        let route: Arc<str> = matched.map_or_else(|| Arc::from(NO_ROUTE), |r| r.0.name.clone());
        // The series of this very route (same table), if resolved.
        let series =
            matched.and_then(|r| self.routes.get(r.0.index).filter(|s| Arc::ptr_eq(s.name(), &r.0.name))).cloned();
        let record = AccessRecord {
            metrics: self.metrics.clone(),
            log: self.access_log,
            started,
            request_id: ext.get::<RequestId>().cloned(),
            client_ip: ext.get::<ClientInfo>().map(|c| c.ip),
            method: req.method().clone(),
            path: if self.access_log { req.uri().path().to_string() } else { String::new() },
            route,
            series,
            status: 0,
            upstream_ms: None,
            rejection: None,
        };
        Post::new(self.inner.call(req), Some(record))
    }
}

impl PostProcess for AccessRecord {
    fn apply(mut self, resp: HttpResponse) -> HttpResponse {
        self.status = resp.status().as_u16();
        self.rejection = resp.extensions().get::<Rejection>().copied();
        self.upstream_ms = resp.extensions().get::<UpstreamTiming>().map(|t| t.0.as_secs_f64() * 1000.0);
        self.observe();
        resp.map(|body| Body::new(ObservedBody { inner: body, bytes: 0, record: Some(Box::new(self)) }))
    }

    /// Counted, logged and out of the in-flight gauge all the same, with
    /// nginx's status for it: 499, the client closed the request.
    fn cancelled(mut self) {
        self.status = CLIENT_CLOSED_REQUEST;
        self.observe();
        self.finish(0);
    }
}

/// The status recorded for a request whose client went away before the
/// response was there (nginx's, never sent to anyone).
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

pin_project! {
    /// The response body, counting bytes and writing the access record at its end.
    struct ObservedBody {
        #[pin]
        inner: Body,
        bytes: u64,
        record: Option<Box<AccessRecord>>,
    }

    impl PinnedDrop for ObservedBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(record) = this.record.take() {
                record.finish(*this.bytes);
            }
        }
    }
}

impl HttpBody for ObservedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                *this.bytes += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
