//! What a new connection speaks, read from its first bytes within a deadline.
//!
//! hyper-util's `auto` server reads the first bytes to tell HTTP/1 from
//! HTTP/2's connection preface itself, but with no timeout (hyper's
//! `header_read_timeout` starts only once it has chosen HTTP/1), and, on
//! connections that may upgrade, whatever `http1_only` says. So a connection
//! that sends nothing, or the start of the preface and no more, was held
//! forever, and `[server] http2 = false` still served HTTP/2 to a client that
//! spoke it without asking. Here the first bytes are read first, within the
//! header-read timeout: a connection that has not said enough by then is
//! closed, and one that speaks HTTP/2 where it is off is closed too. The
//! bytes read are then replayed to hyper ([`Prefixed`]), which decides the
//! same way at once.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// HTTP/2's connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Speaks {
    Http1,
    Http2,
}

/// Reads from `io` until its first bytes differ from the HTTP/2 preface
/// (HTTP/1) or hold all of it (HTTP/2), for at most `within`. `None` when the
/// connection ends, fails or has not said enough in time.
pub async fn sniff<IO: AsyncRead + Unpin>(mut io: IO, within: Duration) -> Option<(Speaks, Prefixed<IO>)> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut have = 0;
    let read = async {
        loop {
            let n = io.read(&mut buf[have..]).await.ok()?;
            if n == 0 {
                return None;
            }
            have += n;
            if buf[..have] != H2_PREFACE[..have] {
                return Some(Speaks::Http1);
            }
            if have == H2_PREFACE.len() {
                return Some(Speaks::Http2);
            }
        }
    };
    let speaks = tokio::time::timeout(within, read).await.ok()??;
    Some((speaks, Prefixed { head: buf, at: 0, len: have, io }))
}

/// A connection whose first bytes, already read, are read again first.
pub struct Prefixed<IO> {
    head: [u8; H2_PREFACE.len()],
    at: usize,
    len: usize,
    io: IO,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.at < self.len {
            let n = (self.len - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.head[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn sniffed(pieces: &[&'static [u8]], gap: Duration) -> Option<(Speaks, Vec<u8>)> {
        let (mut client, server) = tokio::io::duplex(1024);
        let pieces = pieces.to_vec();
        tokio::spawn(async move {
            for p in pieces {
                client.write_all(p).await.unwrap();
                tokio::time::sleep(gap).await;
            }
            client.write_all(b"|rest").await.unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        let (speaks, mut io) = sniff(server, Duration::from_millis(500)).await?;
        let mut replay = vec![0u8; 64];
        let mut got = Vec::new();
        while !got.ends_with(b"|rest") {
            let n = io.read(&mut replay).await.unwrap();
            got.extend_from_slice(&replay[..n]);
        }
        Some((speaks, got))
    }

    #[tokio::test(start_paused = true)]
    async fn tells_the_protocols_apart_and_replays_what_it_read() {
        let ms = Duration::from_millis(10);
        let (s, got) = sniffed(&[b"GET / HTTP/1.1\r\n"], ms).await.unwrap();
        assert_eq!((s, &got[..]), (Speaks::Http1, &b"GET / HTTP/1.1\r\n|rest"[..]));
        // "P" could start the preface; "PO" cannot.
        let (s, got) = sniffed(&[b"P", b"OST /"], ms).await.unwrap();
        assert_eq!((s, &got[..]), (Speaks::Http1, &b"POST /|rest"[..]));
        let (s, got) = sniffed(&[&H2_PREFACE[..5], &H2_PREFACE[5..]], ms).await.unwrap();
        assert_eq!(s, Speaks::Http2);
        assert_eq!(&got[..24], H2_PREFACE);
    }

    #[tokio::test(start_paused = true)]
    async fn silence_or_half_a_preface_runs_out_the_deadline() {
        let (_client, server) = tokio::io::duplex(64);
        assert!(sniff(server, Duration::from_millis(500)).await.is_none(), "nothing said");
        assert!(sniffed(&[&H2_PREFACE[..10]], Duration::from_secs(5)).await.is_none(), "half the preface");
        // The connection ends before saying anything.
        let (client, server) = tokio::io::duplex(64);
        drop(client);
        assert!(sniff(server, Duration::from_millis(500)).await.is_none());
    }
}
