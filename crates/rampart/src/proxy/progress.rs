//! The response timeout for requests with a body: counted from when the body
//! has been passed on, not from when the request started.
//!
//! A body streams to the upstream as the client sends it, within the guards'
//! limits (`body_read_timeout`, `min_body_rate`). Counting `response_timeout`
//! from the start of the request would let a slow but legal upload run it out
//! before the upstream has the whole request, and a handful of such uploads
//! would then open the target's circuit breaker for everyone. So:
//!
//! - while the body is being passed on, the request fails only when no part of
//!   it has moved for the whole timeout (stalled: the client or the upstream
//!   stopped). That is not counted against the target;
//! - once the body has been passed on, the upstream has the timeout to answer,
//!   and failing to is counted against it, as for bodiless requests.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::Instant;

/// What the tracked body has done so far.
#[derive(Debug)]
pub struct Progress {
    base: Instant,
    /// When the body last moved (a frame passed on, or its end), in
    /// nanoseconds since `base`.
    moved: AtomicU64,
    done: AtomicBool,
}

impl Progress {
    fn touch(&self) {
        let at = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.moved.store(at, Ordering::Relaxed);
    }

    /// When the body last moved, and whether it has all been passed on.
    fn last(&self) -> (Instant, bool) {
        let done = self.done.load(Ordering::Acquire);
        (self.base + Duration::from_nanos(self.moved.load(Ordering::Relaxed)), done)
    }
}

/// The body, passing its frames on and noting when each went.
struct Tracked {
    inner: Body,
    progress: Arc<Progress>,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                self.progress.touch();
                self.progress.done.store(true, Ordering::Release);
            }
            Poll::Ready(Some(Ok(_))) => {
                self.progress.touch();
                if self.inner.is_end_stream() {
                    self.progress.done.store(true, Ordering::Release);
                }
            }
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
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

/// A body that keeps `held` until it is itself dropped: a response body
/// holding its target's [`InFlight`](super::breaker::InFlight) count.
pub struct Holding<T> {
    pub inner: Body,
    pub held: T,
}

impl<T: Unpin> http_body::Body for Holding<T> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `body` wrapped to report its progress (from now).
pub fn track(body: Body) -> (Body, Arc<Progress>) {
    let now = Instant::now();
    let progress = Arc::new(Progress { base: now, moved: AtomicU64::new(0), done: AtomicBool::new(false) });
    (Body::new(Tracked { inner: body, progress: progress.clone() }), progress)
}

/// The timeout ran out. `body_sent`: the whole body had been passed on (the
/// upstream failed to answer in time), or there was none.
#[derive(Debug, PartialEq, Eq)]
pub struct TimedOut {
    pub body_sent: bool,
}

/// Runs `send` until `timeout` after the body `progress` tracks last moved:
/// after its end, that is the time the upstream has to answer. (A bodiless
/// request needs none of this: a plain `tokio::time::timeout`, which does not
/// move the send future once more.)
pub async fn within<F: Future>(send: F, timeout: Duration, progress: &Progress) -> Result<F::Output, TimedOut> {
    tokio::pin!(send);
    loop {
        let (moved, _) = progress.last();
        match tokio::time::timeout_at(moved + timeout, &mut send).await {
            Ok(out) => return Ok(out),
            Err(_) => {
                let (moved, done) = progress.last();
                if moved + timeout <= Instant::now() {
                    return Err(TimedOut { body_sent: done });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http_body_util::BodyExt;

    fn trickle(pieces: usize, every: Duration) -> Body {
        let stream = futures_util::stream::unfold(0, move |i| async move {
            if i == pieces {
                return None;
            }
            tokio::time::sleep(every).await;
            Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), i + 1))
        });
        Body::from_stream(stream)
    }

    /// Reads the whole body, then waits `answer_after` before "answering".
    async fn upstream(body: Body, answer_after: Duration) -> usize {
        let n = body.collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
        tokio::time::sleep(answer_after).await;
        n
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_body_that_keeps_moving_does_not_run_the_timeout_out() {
        let (body, progress) = track(trickle(10, Duration::from_millis(200)));
        let out = within(upstream(body, Duration::from_millis(100)), Duration::from_millis(300), &progress).await;
        assert_eq!(out, Ok(10), "2 s of body, each piece within the timeout, then a prompt answer");
    }

    #[tokio::test(start_paused = true)]
    async fn once_the_body_is_sent_the_upstream_has_the_timeout_to_answer() {
        let (body, progress) = track(trickle(3, Duration::from_millis(200)));
        let out = within(upstream(body, Duration::from_millis(400)), Duration::from_millis(300), &progress).await;
        assert_eq!(out, Err(TimedOut { body_sent: true }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_times_out_without_blaming_the_upstream() {
        let (body, progress) = track(trickle(3, Duration::from_millis(500)));
        let out = within(upstream(body, Duration::ZERO), Duration::from_millis(300), &progress).await;
        assert_eq!(out, Err(TimedOut { body_sent: false }));
    }
}
