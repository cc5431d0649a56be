//! Connecting to an upstream whose name has several addresses, the way RFC 8305
//! ("Happy Eyeballs") describes: the addresses alternate between IPv6 and IPv4
//! (the resolver's first choice first), each attempt gets [`ATTEMPT_DELAY`]
//! before the next address is tried beside it, a refused attempt starts the
//! next one at once, and the first connection made wins (the others are
//! dropped).
//!
//! Why not `TcpStream::connect((host, port))`: it tries the addresses one after
//! another, each until it fails, so one address that never answers (a host
//! that is down, a firewall dropping packets, IPv6 without a route) takes the
//! whole `connect_timeout` and the next address is never tried. hyper-util's
//! connector, used for HTTPS and HTTP/2 targets, races only the two families
//! (after the same delay) and gives each address of one family an equal share
//! of the connect timeout.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::net::TcpStream;

/// How long an attempt has before the next address is tried beside it: the
/// value RFC 8305 §8 recommends.
pub const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// A TCP connection to `host` (a name, or an IP address without brackets) on
/// `port`. The caller bounds the whole, name resolution included.
pub async fn connect(host: &str, port: u16) -> io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    connect_any(&interleave(addrs), ATTEMPT_DELAY).await
}

/// `addrs` in the order to try them: the families alternate, starting with the
/// family of the first address, and each family keeps the resolver's order.
pub fn interleave(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let first_v6 = addrs.first().is_some_and(SocketAddr::is_ipv6);
    let (preferred, other): (Vec<_>, Vec<_>) = addrs.into_iter().partition(|a| a.is_ipv6() == first_v6);
    let mut out = Vec::with_capacity(preferred.len() + other.len());
    let (mut p, mut o) = (preferred.into_iter(), other.into_iter());
    loop {
        match (p.next(), o.next()) {
            (None, None) => return out,
            (a, b) => out.extend(a.into_iter().chain(b)),
        }
    }
}

/// The first connection made to one of `addrs`, tried in order: each attempt
/// has `delay` before the next starts beside it; a failed attempt starts the
/// next at once. The error is the last attempt's when all fail.
pub async fn connect_any(addrs: &[SocketAddr], delay: Duration) -> io::Result<TcpStream> {
    let mut next = addrs.iter().copied();
    let mut running = FuturesUnordered::new();
    let mut last_error = None;
    loop {
        if running.is_empty() {
            match next.next() {
                Some(addr) => running.push(TcpStream::connect(addr)),
                None => {
                    return Err(last_error
                        .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the name has no address")));
                }
            }
        }
        tokio::select! {
            Some(result) = running.next() => match result {
                Ok(stream) => return Ok(stream),
                Err(e) => {
                    last_error = Some(e);
                    if let Some(addr) = next.next() {
                        running.push(TcpStream::connect(addr));
                    }
                }
            },
            () = tokio::time::sleep(delay), if next.len() > 0 => {
                if let Some(addr) = next.next() {
                    running.push(TcpStream::connect(addr));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use std::time::Instant;

    use socket2::{Domain, Socket, Type};

    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn families_alternate_from_the_resolvers_first_choice() {
        let v4 = |n: u8| SocketAddr::from(([127, 0, 0, n], 80));
        let v6 = |n: u16| SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, n], 80));
        assert_eq!(interleave(vec![v6(1), v6(2), v6(3), v4(1)]), vec![v6(1), v4(1), v6(2), v6(3)]);
        assert_eq!(interleave(vec![v4(1), v4(2), v6(1), v6(2)]), vec![v4(1), v6(1), v4(2), v6(2)]);
        assert_eq!(interleave(vec![v4(1), v4(2)]), vec![v4(1), v4(2)]);
        assert_eq!(interleave(vec![]), Vec::<SocketAddr>::new());
    }

    /// A listening address that never completes a connection, like a host
    /// that is down: a listener with an accept queue of one, filled. The kernel
    /// drops further SYNs. Returns the address and what must stay open.
    async fn unanswering() -> (SocketAddr, Socket, Vec<TcpStream>) {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket.bind(&addr("127.0.0.1:0").into()).unwrap();
        socket.listen(0).unwrap();
        let at = socket.local_addr().unwrap().as_socket().unwrap();
        let mut fill = Vec::new();
        for _ in 0..8 {
            match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(at)).await {
                Ok(Ok(s)) => fill.push(s),
                Ok(Err(e)) => panic!("filling the accept queue: {e}"),
                // This one hung: the queue is full.
                Err(_) => return (at, socket, fill),
            }
        }
        panic!("the accept queue never filled");
    }

    #[tokio::test]
    async fn an_address_that_never_answers_does_not_hold_up_the_next() {
        let (dead, _keep, _fill) = unanswering().await;
        // The dead address really hangs (else this test would prove nothing).
        assert!(tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(dead)).await.is_err());
        let good = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let good_addr = good.local_addr().unwrap();

        let started = Instant::now();
        let stream = tokio::time::timeout(Duration::from_secs(5), connect_any(&[dead, good_addr], ATTEMPT_DELAY))
            .await
            .expect("the second address was not tried while the first hung")
            .unwrap();
        assert_eq!(stream.peer_addr().unwrap(), good_addr);
        // It waited for the attempt delay, not for the dead address to fail.
        let took = started.elapsed();
        assert!(took >= ATTEMPT_DELAY, "{took:?}");
    }

    #[tokio::test]
    async fn a_refused_address_starts_the_next_at_once_and_all_failing_gives_the_last_error() {
        // A port nothing listens on: bound, then closed.
        let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let good = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let good_addr = good.local_addr().unwrap();
        // A delay far longer than the test may take: only the refusal can start
        // the second attempt in time.
        let stream =
            tokio::time::timeout(Duration::from_secs(5), connect_any(&[refused, good_addr], Duration::from_secs(60)))
                .await
                .expect("a refusal did not start the next attempt")
                .unwrap();
        assert_eq!(stream.peer_addr().unwrap(), good_addr);

        let err = connect_any(&[refused, refused], ATTEMPT_DELAY).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        let err = connect_any(&[], ATTEMPT_DELAY).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
