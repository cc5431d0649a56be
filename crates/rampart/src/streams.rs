//! What an HTTP/2 connection's streams are doing, so that the connection can
//! be closed when it sits idle or its client stops taking responses.
//!
//! An HTTP/1.1 connection has both covered elsewhere: hyper closes one that
//! waits for its next request head longer than `header_read_timeout`, and
//! `send_timeout` closes one whose socket stays full (see
//! `server::sending`). HTTP/2 escapes both. hyper's HTTP/2 server has no idle
//! timeout and answers keep-alive pings, so a connection with no streams was
//! kept for good; and a client that grants no flow-control window (say a
//! zero initial window) never lets a response's body be sent, yet the socket
//! never blocks, so such a client held each response, and the upstream
//! connection behind it, for as long as it liked.
//!
//! [`Streams`] is shared by a connection's service and by the loop that drives
//! the connection (`server::drive`):
//! - each request registers a [`Stream`], which lives until its response
//!   body is dropped (sent, reset, or the request abandoned);
//! - the response body ([`Watched`]) marks its stream as *owed* whenever it
//!   has handed hyper a piece (hyper will come back for the next one as soon
//!   as the client's window allows), and clears the mark when it is waiting on
//!   the upstream (`Pending`) or done;
//! - the driving loop [`check`](Streams::check)s every so often: no stream for
//!   the idle time means idle (the connection is shut down gracefully, with
//!   GOAWAY, and dropped if still idle after the idle time once more: h2 waits
//!   for the client to answer its shutdown PING before it closes); a stream owed for the send timeout means the client has stopped
//!   taking data (the connection is closed, as on HTTP/1.1); and a closing
//!   connection whose client still opens streams the idle time after the
//!   GOAWAY ignores it, and is dropped (see [`Streams::started`]).
//!
//! Only HTTP/2 connections carry a [`Streams`]; HTTP/1.1 requests pay nothing.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

/// A length of the open-stream list past which registering sweeps it.
const PRUNE_AT: usize = 256;

/// The streams of one HTTP/2 connection.
#[derive(Debug)]
pub struct Streams {
    epoch: Instant,
    open: Mutex<Vec<Arc<Stream>>>,
    /// Streams ever registered: a change between two checks is activity.
    started: AtomicU64,
    idle: Duration,
    stall: Duration,
    /// Streams after which the connection is asked to close (GOAWAY), as an
    /// HTTP/1.1 connection is after as many requests; 0: never.
    max_streams: u64,
    /// Driving loop only: when the connection was first seen without streams,
    /// and the `started` count then.
    quiet: Mutex<Option<(Instant, u64)>>,
}

/// One request's stream.
#[derive(Debug)]
pub struct Stream {
    /// Milliseconds since the connection's epoch, plus one, at which the
    /// body last handed hyper a piece; 0 when nothing is owed.
    owed_since: AtomicU64,
    epoch: Instant,
}

/// What a [`Streams::check`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Busy,
    /// No stream for the idle time: shut down gracefully.
    Idle,
    /// A stream has waited on its client for the send timeout: close.
    Stalled,
    /// The connection has carried its `max_streams`: shut down gracefully
    /// (the streams open finish; the client opens a new connection).
    Spent,
}

impl Streams {
    /// `idle`: how long a connection may have no stream; `stall`: how long a
    /// response may wait for its client's flow-control window; `max_streams`:
    /// how many streams it may carry (0: any number).
    pub fn new(idle: Duration, stall: Duration, max_streams: u64) -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            open: Mutex::default(),
            started: AtomicU64::new(0),
            idle,
            stall,
            max_streams,
            quiet: Mutex::default(),
        })
    }

    /// How often the driving loop should [`check`](Self::check): often enough
    /// that neither time is overshot by more than a quarter, at most once a
    /// second and at least every 100 ms.
    pub fn tick(&self) -> Duration {
        (self.idle.min(self.stall) / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }

    /// How long a connection may have no stream.
    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// Streams registered so far.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// A new request's stream, open until the last clone is dropped.
    pub fn register(&self) -> Arc<Stream> {
        let stream = Arc::new(Stream { owed_since: AtomicU64::new(0), epoch: self.epoch });
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        // Ended streams are swept at each check, and here too once they pile
        // up, so the list stays near the streams really open (at most
        // hyper's concurrent-stream limit) however fast a client opens them.
        if open.len() >= PRUNE_AT {
            open.retain(|s| Arc::strong_count(s) > 1);
        }
        open.push(stream.clone());
        drop(open);
        self.started.fetch_add(1, Ordering::Relaxed);
        stream
    }

    /// Streams still open (for tests and the driving loop).
    pub fn open(&self) -> usize {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|s| Arc::strong_count(s) > 1);
        open.len()
    }

    /// Judges the connection at `now`.
    pub fn check(&self, now: Instant) -> Verdict {
        let started = self.started.load(Ordering::Relaxed);
        let spent = self.max_streams > 0 && started >= self.max_streams;
        {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            open.retain(|s| Arc::strong_count(s) > 1);
            if !open.is_empty() {
                *self.quiet.lock().unwrap_or_else(|e| e.into_inner()) = None;
                let now_ms = millis(now.saturating_duration_since(self.epoch));
                let stall_ms = millis(self.stall);
                let stalled = open.iter().any(|s| match s.owed_since.load(Ordering::Relaxed) {
                    0 => false,
                    since => now_ms.saturating_sub(since - 1) >= stall_ms,
                });
                return if stalled {
                    Verdict::Stalled
                } else if spent {
                    Verdict::Spent
                } else {
                    Verdict::Busy
                };
            }
        }
        let mut quiet = self.quiet.lock().unwrap_or_else(|e| e.into_inner());
        match *quiet {
            // A stream came and went since the last check: quiet from now.
            Some((since, seen)) if seen == started => {
                if now.saturating_duration_since(since) >= self.idle {
                    Verdict::Idle
                } else if spent {
                    Verdict::Spent
                } else {
                    Verdict::Busy
                }
            }
            _ => {
                *quiet = Some((now, started));
                if spent {
                    Verdict::Spent
                } else {
                    Verdict::Busy
                }
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Stream {
    /// The body has handed hyper a piece, or is about to be asked for its
    /// first: hyper owes it a poll, which only the client's window delays.
    pub fn owe(&self) {
        let now = millis(self.epoch.elapsed()).saturating_add(1);
        self.owed_since.store(now, Ordering::Relaxed);
    }

    /// The body waits on the upstream, or is done.
    fn settle(&self) {
        self.owed_since.store(0, Ordering::Relaxed);
    }
}

/// The most a [`Watched`] body hands hyper at once: HTTP/2's default frame
/// size. hyper asks for the next piece only once the client's window has
/// taken the last one whole, so the stall time measures one piece of at most
/// this size, not one upstream read (which may be hundreds of KiB, and take a
/// slow but steady client longer than the send timeout).
pub const PIECE: usize = 16 * 1024;

/// A response body that keeps its [`Stream`] told, in pieces of at most
/// [`PIECE`] bytes.
pub struct Watched<B> {
    inner: B,
    stream: Arc<Stream>,
    /// What is left of a data frame larger than a piece.
    rest: Option<Bytes>,
}

impl<B> Watched<B> {
    /// `inner`, about to be handed to hyper: owed until polled.
    pub fn new(inner: B, stream: Arc<Stream>) -> Self {
        stream.owe();
        Self { inner, stream, rest: None }
    }
}

/// The first piece of `data`, and what is left (if anything).
fn first_piece(mut data: Bytes) -> (Bytes, Option<Bytes>) {
    if data.len() <= PIECE {
        return (data, None);
    }
    let piece = data.split_to(PIECE);
    (piece, Some(data))
}

impl<B> HttpBody for Watched<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if let Some(rest) = self.rest.take() {
            let (piece, rest) = first_piece(rest);
            self.rest = rest;
            self.stream.owe();
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                self.stream.owe();
                let frame = match frame.into_data() {
                    Ok(data) => {
                        let (piece, rest) = first_piece(data);
                        self.rest = rest;
                        Frame::data(piece)
                    }
                    Err(other) => other,
                };
                Poll::Ready(Some(Ok(frame)))
            }
            other => {
                self.stream.settle();
                other
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let Some(rest) = &self.rest else { return inner };
        let held = u64::try_from(rest.len()).unwrap_or(u64::MAX);
        let mut hint = SizeHint::new();
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(held));
        }
        hint.set_lower(inner.lower().saturating_add(held));
        hint
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const IDLE: Duration = Duration::from_secs(10);
    const STALL: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn a_watched_body_hands_over_pieces_and_marks_each() {
        use http_body_util::BodyExt;
        let s = Streams::new(IDLE, STALL, 0);
        let stream = s.register();
        let data: Vec<u8> = (0..100 * 1024 + 5).map(|i| (i % 251) as u8).collect();
        let mut body = Watched::new(http_body_util::Full::new(Bytes::from(data.clone())), stream.clone());
        assert_eq!(body.size_hint().exact(), Some(data.len() as u64));
        let mut got = Vec::new();
        let mut pieces = 0;
        while let Some(frame) = body.frame().await {
            let piece = frame.unwrap().into_data().unwrap();
            assert!(piece.len() <= PIECE);
            got.extend_from_slice(&piece);
            pieces += 1;
            assert_ne!(stream.owed_since.load(Ordering::Relaxed), 0, "owed while pieces are handed over");
            if got.len() < data.len() {
                assert!(!body.is_end_stream());
                assert_eq!(body.size_hint().exact(), Some((data.len() - got.len()) as u64));
            }
        }
        assert_eq!(got, data);
        assert_eq!(pieces, 7);
        assert!(body.is_end_stream());
        assert_eq!(stream.owed_since.load(Ordering::Relaxed), 0, "done");
    }

    #[test]
    fn a_connection_without_streams_is_idle_after_the_idle_time() {
        let s = Streams::new(IDLE, STALL, 0);
        let t0 = Instant::now();
        assert_eq!(s.check(t0), Verdict::Busy, "quiet from now");
        assert_eq!(s.check(t0 + IDLE - Duration::from_millis(1)), Verdict::Busy);
        assert_eq!(s.check(t0 + IDLE), Verdict::Idle);
    }

    #[test]
    fn a_stream_between_two_checks_restarts_the_idle_time() {
        let s = Streams::new(IDLE, STALL, 0);
        let t0 = Instant::now();
        assert_eq!(s.check(t0), Verdict::Busy);
        drop(s.register());
        assert_eq!(s.check(t0 + IDLE), Verdict::Busy, "a stream came and went");
        assert_eq!(s.check(t0 + IDLE * 2 - Duration::from_millis(1)), Verdict::Busy);
        assert_eq!(s.check(t0 + IDLE * 2), Verdict::Idle);
    }

    #[test]
    fn a_connection_that_carried_its_streams_is_spent() {
        let s = Streams::new(IDLE, STALL, 3);
        let t0 = Instant::now();
        let open = s.register();
        drop(s.register());
        assert_eq!(s.check(t0), Verdict::Busy, "two of three");
        drop(s.register());
        assert_eq!(s.check(t0), Verdict::Spent, "with a stream open");
        drop(open);
        assert_eq!(s.check(t0), Verdict::Spent, "without");
        assert_eq!(s.check(t0 + IDLE), Verdict::Idle, "idle still wins: it drops a connection that never closes");
    }

    #[test]
    fn an_open_stream_is_never_idle() {
        let s = Streams::new(IDLE, STALL, 0);
        let t0 = Instant::now();
        let stream = s.register();
        assert_eq!(s.open(), 1);
        assert_eq!(s.check(t0), Verdict::Busy);
        assert_eq!(s.check(t0 + IDLE * 3), Verdict::Busy, "waiting on the upstream is not idle");
        drop(stream);
        assert_eq!(s.open(), 0);
    }

    #[test]
    fn ended_streams_do_not_pile_up_between_checks() {
        let s = Streams::new(IDLE, STALL, 0);
        let kept: Vec<_> = (0..10).map(|_| s.register()).collect();
        for _ in 0..10 * PRUNE_AT {
            drop(s.register());
        }
        let len = s.open.lock().unwrap().len();
        assert!(len <= PRUNE_AT + kept.len(), "{len} entries for {} open streams", kept.len());
        assert_eq!(s.open(), kept.len());
    }

    #[test]
    fn a_body_owed_for_the_send_timeout_is_a_stall() {
        let s = Streams::new(IDLE, STALL, 0);
        let stream = s.register();
        let body = Watched::new(http_body_util::Full::new(Bytes::from_static(b"x")), stream);
        let t0 = Instant::now();
        assert_eq!(s.check(t0 + STALL - Duration::from_secs(1)), Verdict::Busy);
        assert_eq!(s.check(t0 + STALL + Duration::from_secs(1)), Verdict::Stalled, "never polled: the window is shut");
        drop(body);
        assert_eq!(s.check(t0 + STALL * 2), Verdict::Busy, "gone with its body");
    }

    #[tokio::test]
    async fn a_body_waiting_on_its_upstream_is_not_a_stall() {
        use http_body_util::BodyExt;
        let s = Streams::new(IDLE, STALL, 0);
        let (mut tx, rx) = feed();
        let mut body = Watched::new(rx, s.register());
        tx.send(Bytes::from_static(b"a"));
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "a");
        let t0 = Instant::now();
        assert_eq!(s.check(t0 + STALL + Duration::from_secs(1)), Verdict::Stalled, "a piece handed over, none taken");
        // hyper comes back; the upstream has nothing yet.
        let waker = futures_util::task::noop_waker();
        assert!(Pin::new(&mut body).poll_frame(&mut Context::from_waker(&waker)).is_pending());
        assert_eq!(s.check(t0 + STALL * 5), Verdict::Busy);
        drop(tx);
        assert!(body.frame().await.is_none());
        assert_eq!(s.check(t0 + STALL * 6), Verdict::Busy);
    }

    /// A body fed by hand: pieces sent, `Pending` while none is waiting.
    fn feed() -> (Feed, FeedBody) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (Feed(tx), FeedBody(rx))
    }

    struct Feed(tokio::sync::mpsc::UnboundedSender<Bytes>);

    impl Feed {
        fn send(&mut self, b: Bytes) {
            self.0.send(b).unwrap();
        }
    }

    struct FeedBody(tokio::sync::mpsc::UnboundedReceiver<Bytes>);

    impl HttpBody for FeedBody {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }
}
