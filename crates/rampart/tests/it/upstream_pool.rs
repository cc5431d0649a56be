//! Connections to the upstream: kept alive and reused for sequential requests,
//! closed once idle past `pool_idle_timeout`, and given up after
//! `connect_timeout` when the upstream never accepts; the upstream duration
//! histogram counts what was sent.
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
