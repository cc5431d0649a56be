//! The proxy's own HTTP/1.1 client for plain-text upstream targets: one pool
//! of idle connections per connection worker and target, with nothing between
//! a request and its connection but a lock nobody else takes.
//!
//! Why not hyper-util's pooled client, which serves HTTPS and HTTP/2 targets:
//! a proxy forwards every request it serves, and that client's generality
//! (connector service, pool keyed by scheme and authority behind a shared
//! lock, a task spawned per request to wait until the connection may be
//! pooled again) cost about a tenth of the CPU per request in measurements
//! (see BENCHMARKS.md). Here the connection goes back to its pool from the
//! response body itself, as soon as the last byte has been read.
//!
//! What it keeps of that client's behaviour:
//! - a request that a reused connection did not start sending (the upstream
//!   had closed it meanwhile) goes out again on a new connection;
//! - and one better: an idempotent, bodiless request that a connection idle
//!   for a while lost before any answer (the upstream's keep-alive timeout
//!   closed it as the request went out: uvicorn's is 5 s, gunicorn's 2 s) is
//!   sent once more on a new connection, as nginx does. Only such requests
//!   on such connections pay for the copy this takes;
//! - connections idle past `pool_idle_timeout` are closed, by a sweep even
//!   when no request comes, and at most `pool_max_idle` are kept per pool;
//! - `connect_timeout` bounds the TCP connect (name resolution included);
//!   a name's addresses are raced, as hyper-util's connector races the two
//!   address families, and more closely to RFC 8305 (see [`super::dial`]);
//! - upgrades (`101 Switching Protocols`) hand the connection over;
//! - a connection whose response body was not read to its end, or which
//!   failed, is never reused.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

/// Why a request could not be exchanged with the upstream.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    /// No connection: refused, unreachable, unresolvable or timed out.
    #[error("connect to the upstream failed")]
    Connect(#[source] std::io::Error),
    /// The exchange broke after the connection was made (including a request
    /// body that failed while streaming; its error is in the source chain).
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

impl H1Error {
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect(_))
    }
}

/// A reused connection idle for at least this long may be closed by the
/// upstream at any moment: a replayable request sent on it keeps a copy.
/// Busy connections (reused within milliseconds) never make one.
const STALE_AFTER: Duration = Duration::from_millis(200);

/// One idle connection and since when it is idle.
struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

/// The idle connections of one worker to one target, most recently used last.
#[derive(Default)]
struct Slot {
    idle: Mutex<VecDeque<Idle>>,
}

/// What the pools share with the response bodies that hand connections back.
struct Shared {
    /// `slots[worker * targets + target]`; worker 0 stands for every thread
    /// that is not a connection worker.
    slots: Box<[Slot]>,
    idle_timeout: Duration,
    max_idle: usize,
}

impl Shared {
    fn put(&self, slot: usize, sender: SendRequest<Body>) {
        if self.max_idle == 0 || sender.is_closed() {
            return;
        }
        let Some(slot) = self.slots.get(slot) else { return };
        let mut idle = slot.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() >= self.max_idle {
            // The oldest goes: the newest is the likeliest to stay usable.
            idle.pop_front();
        }
        idle.push_back(Idle { sender, since: Instant::now() });
    }

    /// Drops the slot's connections idle for longer than the timeout (the
    /// oldest are at the front); what dropping a sender does is close its
    /// connection.
    fn expire(&self, slot: &Slot, now: Instant) {
        let mut idle = slot.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while idle.front().is_some_and(|i| now.duration_since(i.since) >= self.idle_timeout || i.sender.is_closed()) {
            idle.pop_front();
        }
    }
}

/// The HTTP/1.1 pools of one upstream.
pub struct H1Pools {
    shared: Arc<Shared>,
    targets: usize,
    connect_timeout: Duration,
}

impl std::fmt::Debug for H1Pools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Pools").field("targets", &self.targets).finish_non_exhaustive()
    }
}

impl H1Pools {
    /// Pools for `targets` targets and `workers` workers (plus the slot for
    /// other threads).
    pub fn new(
        targets: usize,
        workers: usize,
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> Self {
        let slots = (0..(workers + 1) * targets).map(|_| Slot::default()).collect();
        Self { shared: Arc::new(Shared { slots, idle_timeout, max_idle }), targets, connect_timeout }
    }

    /// Sends `req` to `authority` (target number `target`) on a pooled
    /// connection of the current worker, or a new one. The request's URI is
    /// sent as it is: give it in origin form (`/path?query`). A request that
    /// was not sent at all (no connection could be made) comes back with the
    /// error.
    pub async fn send(
        &self,
        target: usize,
        authority: &Authority,
        mut req: Request<Body>,
    ) -> Result<Response<Body>, (H1Error, Option<Request<Body>>)> {
        // A thread numbered past the pools (none is, as `workers` changes
        // only at a restart) uses the shared slot: never another target's.
        let worker = crate::workers::current();
        let worker = if (worker + 1) * self.targets <= self.shared.slots.len() { worker } else { 0 };
        let slot = worker * self.targets + target;
        // After a lost request is replayed, only a new connection will do.
        let mut replayed = false;
        loop {
            let checked_out = if replayed { None } else { self.checkout(slot) };
            let (mut sender, reused, stale) = match checked_out {
                Some((s, idle_for)) => (s, true, idle_for >= STALE_AFTER),
                // Boxed: a new connection is the rare case, and its future
                // would otherwise make every request's future (moved at each
                // layer) that much bigger.
                None => match Box::pin(self.connect(authority)).await {
                    Ok(s) => (s, false, false),
                    Err(e) => return Err((e, Some(req))),
                },
            };
            let spare = (stale && !replayed).then(|| replayable_copy(&req)).flatten();
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(self.track(resp, sender, slot)),
                Err(mut e) => match e.take_message() {
                    // Not started on a connection that had been idle: the
                    // upstream closed it meanwhile. Once more on a new one.
                    Some(back) if reused => req = back,
                    back => {
                        let error = e.into_error();
                        match spare {
                            // Sent, but the connection died before any answer.
                            Some(copy) if lost_before_answer(&error) => {
                                tracing::debug!(error = %error, "request lost by an idle upstream connection: sent again");
                                req = copy;
                                replayed = true;
                            }
                            _ => return Err((H1Error::Http(error), back)),
                        }
                    }
                },
            }
        }
    }

    /// The most recently used idle connection that is still open, and how
    /// long it was idle.
    fn checkout(&self, slot: usize) -> Option<(SendRequest<Body>, Duration)> {
        let slot = self.shared.slots.get(slot)?;
        let mut idle = slot.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(i) = idle.pop_back() {
            let idle_for = i.since.elapsed();
            if idle_for < self.shared.idle_timeout && i.sender.is_ready() {
                return Some((i.sender, idle_for));
            }
        }
        None
    }

    async fn connect(&self, authority: &Authority) -> Result<SendRequest<Body>, H1Error> {
        let port = authority.port_u16().unwrap_or(80);
        // An IPv6 literal comes bracketed (`[::1]`), which no resolver takes.
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        let stream = tokio::time::timeout(self.connect_timeout, super::dial::connect(host, port))
            .await
            .map_err(|_| H1Error::Connect(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")))?
            .map_err(H1Error::Connect)?;
        stream.set_nodelay(true).map_err(H1Error::Connect)?;
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
        socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive).map_err(H1Error::Connect)?;
        let (sender, conn) = http1::Builder::new().handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// The response, its body handing the connection back to the pool once
    /// read to its end; an upgraded connection is the upgrade's alone.
    fn track(&self, resp: Response<Incoming>, sender: SendRequest<Body>, slot: usize) -> Response<Body> {
        if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            return resp.map(Body::new);
        }
        let (parts, inner) = resp.into_parts();
        let mut body = PooledBody { inner, back: Some(Back { shared: self.shared.clone(), slot, sender }) };
        if body.inner.is_end_stream() {
            // No body (HEAD, 204, 304, `Content-Length: 0`): nothing will read
            // it, so the connection is free now.
            body.release();
        }
        Response::from_parts(parts, Body::new(body))
    }

    /// Closes the connections idle past the timeout, every `interval`, until
    /// the pools are dropped (at the next reload).
    pub fn spawn_sweeper(&self) {
        let weak = Arc::downgrade(&self.shared);
        let every = (self.shared.idle_timeout / 2).clamp(Duration::from_millis(50), Duration::from_secs(30));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else { return };
                let now = Instant::now();
                for slot in shared.slots.iter() {
                    shared.expire(slot, now);
                }
            }
        });
    }
}

/// A copy of `req` to send again if its connection dies before answering:
/// only for a request whose repetition is harmless (RFC 9110 §9.2.2) and
/// which has no body to replay and no upgrade under way.
fn replayable_copy(req: &Request<Body>) -> Option<Request<Body>> {
    let replayable = super::is_idempotent(req.method())
        && req.body().is_end_stream()
        && !req.headers().contains_key(http::header::UPGRADE);
    replayable.then(|| super::copy_bodiless(req))
}

/// The connection closed or broke before the response head arrived.
fn lost_before_answer(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() || e.is_canceled() {
        return true;
    }
    let io = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>());
    io.is_some_and(|io| {
        matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::UnexpectedEof
        )
    })
}

/// Where a connection goes back to.
struct Back {
    shared: Arc<Shared>,
    slot: usize,
    sender: SendRequest<Body>,
}

/// An upstream response body that returns its connection to the pool once it
/// has been read to its end. Dropped before that, or failing, it takes the
/// connection down with it (hyper closes a connection whose response body
/// was abandoned).
struct PooledBody {
    inner: Incoming,
    back: Option<Back>,
}

impl PooledBody {
    fn release(&mut self) {
        let Some(Back { shared, slot, mut sender }) = self.back.take() else { return };
        if sender.is_ready() {
            shared.put(slot, sender);
            return;
        }
        // The connection task has not yet taken in the end of the exchange
        // (it runs on this same thread, after us): pool it once it has.
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                shared.put(slot, sender);
            }
        });
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
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
