//! WebSocket tunnels: the bytes of an upgraded connection copied both ways
//! between the client and the upstream.
//!
//! Only WebSocket upgrades are tunnelled ([`is_websocket_upgrade`]). Any other
//! `Upgrade` is dropped as the hop-by-hop header it is and the request goes on
//! as a plain one: a tunnelled `h2c` upgrade, above all, would let the client
//! speak HTTP/2 straight to the upstream, past every layer of the gateway, on
//! any upstream that accepts it (Hypercorn does).
//!
//! A tunnel keeps its client's place in the per-address connection count
//! ([`ConnectionHold`]) until it ends, and ends when neither side has sent a
//! byte for `[server] tunnel_idle_timeout`, so one address cannot hold more
//! tunnels than connections, nor hold them forever.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::Version;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::edge::HttpRequest;

/// Keeps the client connection's place in the per-address connection count
/// while a tunnel made from one of its requests is open. Opaque: it is
/// dropped, never read.
#[derive(Clone)]
pub struct ConnectionHold(pub Arc<dyn std::any::Any + Send + Sync>);

/// True for a value of `Upgrade` naming WebSocket (`websocket`, any case).
pub fn names_websocket(value: &HeaderValue) -> bool {
    value.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket")
}

/// A WebSocket opening handshake (RFC 6455 §4.1): HTTP/1.1 with `Connection:
/// upgrade` and `Upgrade: websocket`.
pub fn is_websocket_upgrade(req: &HttpRequest) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().get(header::UPGRADE).is_some_and(names_websocket)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
}

/// Copies bytes both ways until either side closes, an I/O error, or `idle`
/// passes with no byte in either direction. `hold` is dropped at the end.
pub async fn run<C, U>(client: C, upstream: U, idle: Duration, hold: Option<ConnectionHold>)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let _hold = hold;
    let started = Instant::now();
    let last = AtomicU64::new(0);
    let mut c = Watched { io: client, started, last: &last };
    let mut u = Watched { io: upstream, started, last: &last };
    let copy = tokio::io::copy_bidirectional(&mut c, &mut u);
    tokio::pin!(copy);
    let mut deadline = started + idle;
    loop {
        tokio::select! {
            _ = &mut copy => return,
            _ = tokio::time::sleep_until(deadline) => {
                let seen = started + Duration::from_millis(last.load(Ordering::Relaxed));
                if seen + idle <= Instant::now() {
                    tracing::debug!(idle = ?idle, "tunnel closed after being idle");
                    return;
                }
                deadline = seen + idle;
            }
        }
    }
}

/// An I/O half that records when it last moved a byte, in milliseconds since
/// the tunnel started.
struct Watched<'a, T> {
    io: T,
    started: Instant,
    last: &'a AtomicU64,
}

impl<T> Watched<'_, T> {
    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<'_, T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<'_, T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn req(version: Version, headers: &[(&str, &str)]) -> HttpRequest {
        let mut b = http::Request::builder().version(version).uri("/ws");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn only_websocket_upgrades_are_tunnelled() {
        let ws = [("connection", "keep-alive, Upgrade"), ("upgrade", "WebSocket")];
        assert!(is_websocket_upgrade(&req(Version::HTTP_11, &ws)));
        assert!(!is_websocket_upgrade(&req(Version::HTTP_10, &ws)));
        for upgrade in ["h2c", "websocket, h2c", "h2c, websocket", "TLS/1.2", "", "websocketx"] {
            let r = req(Version::HTTP_11, &[("connection", "upgrade"), ("upgrade", upgrade)]);
            assert!(!is_websocket_upgrade(&r), "{upgrade}");
        }
        assert!(!is_websocket_upgrade(&req(Version::HTTP_11, &[("upgrade", "websocket")])));
        assert!(!is_websocket_upgrade(&req(Version::HTTP_11, &[("connection", "close"), ("upgrade", "websocket")])));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_tunnel_ends_and_a_busy_one_does_not() {
        let (client, mut client_far) = tokio::io::duplex(64);
        let (upstream, mut upstream_far) = tokio::io::duplex(64);
        let hold = ConnectionHold(Arc::new(()));
        let weak = Arc::downgrade(&hold.0);
        let task = tokio::spawn(run(client, upstream, Duration::from_secs(10), Some(hold)));
        // Traffic every 6 s keeps it open well past 10 s.
        for i in 0..4u8 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            client_far.write_all(&[i]).await.unwrap();
            let mut b = [0u8; 1];
            upstream_far.read_exact(&mut b).await.unwrap();
            assert_eq!(b[0], i);
        }
        assert!(!task.is_finished());
        assert!(weak.upgrade().is_some(), "the connection's place is held while the tunnel is open");
        // Then 10 s of silence closes it, and lets the place go.
        let quiet = Instant::now();
        tokio::time::timeout(Duration::from_secs(60), task).await.unwrap().unwrap();
        let waited = quiet.elapsed();
        assert!(waited >= Duration::from_secs(10) && waited < Duration::from_secs(11), "{waited:?}");
        assert!(weak.upgrade().is_none());
        let mut b = [0u8; 1];
        assert_eq!(client_far.read(&mut b).await.unwrap(), 0, "the client side is closed");
    }
}
