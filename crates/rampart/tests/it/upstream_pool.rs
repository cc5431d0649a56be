//! Connections to the upstream: kept alive and reused for sequential requests
//! (bodiless answers included), one pool per worker, closed once idle past
//! `pool_idle_timeout` even when no request follows, never reused once the
//! upstream closed them, replaying an idempotent request an idle connection
//! lost before answering, and given up after `connect_timeout` when the
//! upstream never accepts; the upstream duration histogram counts what was
//! sent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;

use crate::common::*;

/// An upstream answering each request with the client port of its connection.
async fn port_echo() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .fallback(get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.port().to_string() }));
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap();
    });
    addr
}

async fn peer_port(gw: &rampart::Gateway) -> String {
    let r = client().get(url(gw, "/p")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

#[tokio::test]
async fn upstream_connections_are_reused_and_closed_when_idle() {
    let up = port_echo().await;
    // One worker: each request below comes on a new client connection, and
    // with more workers those would be spread over the workers' own pools.
    let gw = gateway(&config_with(&format!("http://{up}"), "workers = 1", "pool_idle_timeout = '300ms'\n")).await;
    // Sequential requests: one upstream connection (HTTP/1.1 keep-alive).
    let first = peer_port(&gw).await;
    for _ in 0..4 {
        assert_eq!(peer_port(&gw).await, first, "a new upstream connection for a sequential request");
    }
    // Idle past pool_idle_timeout: that connection is gone, a new one is made.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let after = peer_port(&gw).await;
    assert_ne!(after, first, "the idle connection was reused after pool_idle_timeout");
    assert_eq!(peer_port(&gw).await, after);

    // Every proxied request is in the upstream duration histogram.
    let m =
        client().get(format!("http://{}/metrics", gw.ops_addr.unwrap())).send().await.unwrap().text().await.unwrap();
    let count = m
        .lines()
        .find(|l| l.starts_with("rampart_upstream_duration_seconds_count"))
        .unwrap_or_else(|| panic!("no rampart_upstream_duration_seconds_count in\n{m}"));
    let n: f64 = count.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(n, 7.0, "{count}");
}

/// The upstream port seen by a request sent on `c`'s kept-alive connection.
async fn peer_port_on(c: &reqwest::Client, gw: &rampart::Gateway) -> String {
    let r = c.get(url(gw, "/p")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

#[tokio::test]
async fn each_worker_keeps_its_own_upstream_pool() {
    let up = port_echo().await;
    for workers in [1, 2] {
        let gw = gateway(&config_with(&format!("http://{up}"), &format!("workers = {workers}"), "")).await;
        // Two clients with one kept-alive connection each: the listener hands
        // the second connection to the next worker.
        let (a, b) = (client(), client());
        let pa = peer_port_on(&a, &gw).await;
        let pb = peer_port_on(&b, &gw).await;
        if workers == 1 {
            // One pool: the second client's request reuses the idle connection.
            assert_eq!(pa, pb, "one worker, one pool");
            continue;
        }
        assert_ne!(pa, pb, "the second worker used the first worker's upstream connection");
        for _ in 0..3 {
            assert_eq!(peer_port_on(&a, &gw).await, pa, "a worker's connection was not reused by its own requests");
            assert_eq!(peer_port_on(&b, &gw).await, pb);
        }
    }
}

#[tokio::test]
async fn connect_timeout_fires_against_a_listener_that_never_accepts() {
    // A listener with a backlog of one that never accepts: once its queue is
    // full the kernel drops further SYNs, so a connect hangs until timed out.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let _listener = socket.listen(1).unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(addr)).await
        {
            fillers.push(s);
        }
    }
    let gw = gateway(&config(
        &format!("http://{addr}"),
        "connect_timeout = '300ms'\nresponse_timeout = '20s'\n[upstreams.default.retries]\nattempts = 1\n",
    ))
    .await;
    let started = Instant::now();
    let r = client().get(url(&gw, "/x")).send().await.unwrap();
    let took = started.elapsed();
    let status = r.status().as_u16();
    assert!(status == 502 || status == 504, "{status}");
    problem(r, status).await;
    assert!(took >= Duration::from_millis(250), "answered before the connect timeout: {took:?}");
    assert!(took < Duration::from_secs(10), "the connect timeout did not fire: {took:?}");
}

/// A hand-written HTTP/1.1 upstream: answers each request on a connection
/// with `200 ok` (kept alive unless `close_after_each`, in which case it
/// closes the connection after the answer without saying so), and reports
/// each connection's end, with the time since its last answer, on `ended`.
async fn raw_upstream(close_after_each: bool) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Duration>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut last = Instant::now();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        let _ = tx.send(last.elapsed());
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.unwrap();
                        last = Instant::now();
                        if close_after_each {
                            drop(s);
                            let _ = tx.send(Duration::ZERO);
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn idle_upstream_connections_are_closed_without_further_requests() {
    let (up, mut ended) = raw_upstream(false).await;
    let gw = gateway(&config_with(&format!("http://{up}"), "workers = 1", "pool_idle_timeout = '300ms'\n")).await;
    let r = client().get(url(&gw, "/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok");
    // No request follows: the gateway itself must close the idle connection.
    let idle = tokio::time::timeout(Duration::from_secs(5), ended.recv())
        .await
        .expect("the idle upstream connection was kept open past pool_idle_timeout")
        .unwrap();
    assert!(idle >= Duration::from_millis(250), "closed before pool_idle_timeout: {idle:?}");
}

#[tokio::test]
async fn a_connection_the_upstream_closed_is_not_used_again() {
    let (up, _ended) = raw_upstream(true).await;
    let gw =
        gateway(&config_with(&format!("http://{up}"), "workers = 1", "[upstreams.default.retries]\nattempts = 1\n"))
            .await;
    let c = client();
    for i in 0..20 {
        let r = c.get(url(&gw, "/x")).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.text().await.unwrap(), "ok");
    }
}

/// An upstream that answers the first request on each connection and, on
/// the second, reads it and hangs up without a word: the race with an
/// upstream's keep-alive timeout, made certain. Counts the requests it read.
async fn drops_second_request() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::Ordering::SeqCst;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let seen = counter.clone();
            tokio::spawn(async move {
                let (mut buf, mut chunk, mut served) = (Vec::new(), [0u8; 4096], 0);
                loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        seen.fetch_add(1, SeqCst);
                        served += 1;
                        if served == 2 {
                            return; // hang up: the request is lost
                        }
                        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.unwrap();
                    }
                }
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn idempotent_requests_lost_by_an_idle_connection_are_sent_again() {
    use std::sync::atomic::Ordering::SeqCst;
    let (up, seen) = drops_second_request().await;
    // No retries configured: what recovers the request is the pool.
    let gw =
        gateway(&config_with(&format!("http://{up}"), "workers = 1", "[upstreams.default.retries]\nattempts = 1\n"))
            .await;
    let c = client();
    assert_eq!(c.get(url(&gw, "/x")).send().await.unwrap().status(), 200);
    // Idle a while, then the upstream hangs up on the next request: a GET
    // goes out again on a new connection, and is answered.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = c.get(url(&gw, "/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok");
    assert_eq!(seen.load(SeqCst), 3, "the lost GET was sent once more");
    // A POST is never sent twice: lost, it is a 502.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = c.post(url(&gw, "/x")).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(seen.load(SeqCst), 4, "the lost POST was not replayed");
}

#[tokio::test]
async fn bodiless_answers_free_their_connection_at_once() {
    let up = port_echo().await;
    let gw = gateway(&config_with(&format!("http://{up}"), "workers = 1", "")).await;
    let first = peer_port(&gw).await;
    // HEAD: the answer has no body to read, so nothing reads it to its end.
    for _ in 0..3 {
        let r = client().head(url(&gw, "/p")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(peer_port(&gw).await, first, "a HEAD answer kept its upstream connection out of the pool");
}

#[tokio::test]
async fn upstreams_are_reached_by_ipv6_address_and_by_name() {
    let Ok(listener) = tokio::net::TcpListener::bind("[::1]:0").await else {
        eprintln!("skipped: no IPv6 loopback on this machine");
        return;
    };
    let v6 = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, Router::new().fallback(get(|| async { "v6" }))).await.unwrap();
    });
    let gw = gateway(&config_with(&format!("http://[::1]:{}", v6.port()), "", "")).await;
    let r = client().get(url(&gw, "/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "v6");

    let up = port_echo().await;
    let gw = gateway(&config_with(&format!("http://localhost:{}", up.port()), "", "")).await;
    let r = client().get(url(&gw, "/p")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
