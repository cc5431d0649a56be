//! Hostile input against every guard, over real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMITS: &str = "max_header_count = 20\nmax_header_bytes = 4096\nmax_uri_length = 512\nheader_read_timeout = '1s'";
const ROUTES: &str =
    "[defaults]\nbody_limit = '1KiB'\ncontent_types = ['application/json', 'application/x-www-form-urlencoded']\n";

async fn guarded() -> rampart::Gateway {
    setup_with(LIMITS, ROUTES).await.0
}

fn status_of(reply: &str) -> u16 {
    reply.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status in {reply:?}"))
}

fn assert_problem(reply: &str, status: u16, kind: &str) {
    assert_eq!(status_of(reply), status, "{reply}");
    assert!(reply.contains("application/problem+json"), "{reply}");
    assert!(reply.contains(&format!("urn:rampart:problem:{kind}")), "{reply}");
    assert!(reply.contains("\"request_id\":"), "{reply}");
}

#[tokio::test]
async fn oversize_chunked_body_is_413_without_content_length() {
    let gw = guarded().await;
    let mut req = b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..4 {
        req.extend_from_slice(b"200\r\n");
        req.extend_from_slice(&[b'a'; 0x200]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let reply = raw(gw.addr, &req, Duration::from_secs(5)).await;
    assert_problem(&reply, 413, "body-too-large");

    // A declared Content-Length over the limit is refused before any body is read.
    let reply = raw(
        gw.addr,
        b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_problem(&reply, 413, "body-too-large");

    // Within the limit it passes.
    let resp =
        client().post(url(&gw, "/ok")).header("content-type", "application/json").body("{}").send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn bad_paths_and_queries_are_400() {
    let gw = guarded().await;
    for (target, reason) in [
        ("/a/%2e%2e/etc/passwd", "bad-request"),
        ("/a/%2E%2E%2Fetc", "bad-request"),
        ("/a/..%2fetc", "bad-request"),
        ("/a/../etc", "bad-request"),
        ("/a%zzb", "bad-request"),
        ("/a%", "bad-request"),
        ("/a%00.json", "bad-request"),
        ("/a%252e%252e/x", "bad-request"),
        ("/a%5c..%5cwin.ini", "bad-request"),
        ("/a?q=%00", "bad-request"),
        ("/a?q=%e", "bad-request"),
    ] {
        let req = format!("GET {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let reply = raw(gw.addr, req.as_bytes(), Duration::from_secs(5)).await;
        assert_problem(&reply, 400, reason);
    }
    // Ordinary escapes still pass, and reach the upstream undecoded.
    let v: serde_json::Value =
        client().get(url(&gw, "/files/a%20b.txt?q=%41")).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["path"], "/files/a%20b.txt");
}

#[tokio::test]
async fn overlong_uri_is_414() {
    let gw = guarded().await;
    let target = format!("/{}", "a".repeat(600));
    let reply = raw(
        gw.addr,
        format!("GET {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    assert_problem(&reply, 414, "uri-too-long");
}

#[tokio::test]
async fn header_floods_are_431() {
    let gw = guarded().await;
    let mut req = String::from("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n");
    for i in 0..30 {
        req.push_str(&format!("X-Flood-{i}: {i}\r\n"));
    }
    req.push_str("\r\n");
    assert_problem(&raw(gw.addr, req.as_bytes(), Duration::from_secs(5)).await, 431, "headers-too-large");

    let req = format!("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-Big: {}\r\n\r\n", "b".repeat(5000));
    assert_problem(&raw(gw.addr, req.as_bytes(), Duration::from_secs(5)).await, 431, "headers-too-large");

    // A flood far beyond any sane size is cut off by the HTTP parser itself; the
    // connection gets an error status or is closed, and the gateway keeps serving.
    let mut req = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..5000 {
        req.push_str(&format!("X-Flood-{i}: {i}\r\n"));
    }
    req.push_str("\r\n");
    let reply = raw(gw.addr, req.as_bytes(), Duration::from_secs(5)).await;
    assert!(reply.is_empty() || status_of(&reply) == 431, "{reply}");
    assert_eq!(client().get(url(&gw, "/still-up")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let gw = guarded().await;
    let resp = client().post(url(&gw, "/x")).header("content-type", "text/xml").body("<a/>").send().await.unwrap();
    let v = problem(resp, 415).await;
    assert_eq!(v["type"], "urn:rampart:problem:unsupported-media-type");
    let resp = client()
        .post(url(&gw, "/x"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("a=1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn client_that_stops_mid_body_is_cut_off_with_408() {
    let gw = guarded().await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"partial\":",
    )
    .await
    .unwrap();
    // body_read_timeout is 500 ms in the test config; then nothing more is sent.
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the gateway must not wait for the body forever");
    let reply = String::from_utf8_lossy(&out);
    assert_problem(&reply, 408, "body-timeout");
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let gw = guarded().await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ").await.unwrap();
    let mut out = Vec::new();
    // header_read_timeout is 1 s: the connection is closed soon after.
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "slowloris connection was not closed");
}

/// A connection that says nothing, or only the start of HTTP/2's preface,
/// is closed after header_read_timeout too: the protocol is read within it.
#[tokio::test]
async fn silent_connections_are_cut_off() {
    let gw = guarded().await;
    for first in [&b""[..], &b"PRI * HTTP/2.0\r\n"[..]] {
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(first).await.unwrap();
        let mut out = Vec::new();
        // header_read_timeout is 1 s.
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "a connection that sent {first:?} was not closed");
    }
}

/// A client that stops reading a response is cut off after send_timeout:
/// the rest of the response is never sent, and the connection is closed.
#[tokio::test]
async fn clients_that_stop_reading_are_cut_off() {
    const BIG: usize = 64 << 20;
    let app = axum::Router::new().fallback(|| async {
        let chunk = bytes::Bytes::from(vec![b'x'; 1 << 20]);
        let pieces = futures_util::stream::iter((0..BIG >> 20).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
        axum::body::Body::from_stream(pieces)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let gw = gateway(&config_with(&format!("http://{up}"), "send_timeout = '1s'", "")).await;

    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    // Nothing read for 3 s: the socket buffers fill, the gateway's write waits.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the connection was not closed");
    assert!(got.len() < BIG, "the whole response was sent: {} bytes", got.len());
}

/// HTTP/2 connections are closed when HTTP/1.1 ones would be: one with no
/// stream for header_read_timeout is shut down, and one whose client grants
/// no flow-control window for send_timeout is closed. A stream waiting on a
/// slow upstream is neither.
#[tokio::test]
async fn idle_and_stalled_http2_connections_are_closed() {
    use http_body_util::BodyExt;
    let up = start_upstream().await;
    let gw =
        gateway(&config_with(&format!("http://{up}"), "header_read_timeout = '1s'\nsend_timeout = '1s'", "")).await;
    let get = |path: &str| {
        http::Request::get(format!("http://{}{path}", gw.addr))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    let connect = |window: Option<u32>| async move {
        let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let mut b = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
        if let Some(w) = window {
            b.initial_stream_window_size(w);
        }
        let (send, conn) = b.handshake(hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
        (send, tokio::spawn(conn))
    };

    // A stream that waits 2.5 s on its upstream keeps the connection; once
    // it is done and nothing follows, the connection goes.
    let (mut send, conn) = connect(None).await;
    let resp = send.send_request(get("/slow/2500")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "slow done");
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection was kept");
    assert!(send.send_request(get("/after")).await.is_err());

    // A client that never opens its window: the response's head arrives, its
    // body never can, and the connection is closed.
    let (mut send, conn) = connect(Some(0)).await;
    let resp = send.send_request(get("/held")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(ended.is_ok(), "a client that takes nothing held its response");
    drop((send, resp));

    // The gateway still serves HTTP/2.
    let (mut send, _conn) = connect(None).await;
    assert_eq!(send.send_request(get("/ok")).await.unwrap().status(), 200);
}

/// h2 sends its final GOAWAY only once the client answers the shutdown PING.
/// A raw client that answers nothing (not even that PING) but keeps its
/// socket open is dropped anyway once the idle time has passed twice.
#[tokio::test]
async fn an_idle_http2_client_that_ignores_the_shutdown_is_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = start_upstream().await;
    let gw = gateway(&config_with(&format!("http://{up}"), "header_read_timeout = '1s'", "")).await;
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    // The preface and an empty SETTINGS frame; then only the SETTINGS ack.
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.unwrap();
    let started = std::time::Instant::now();
    let mut frames = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            let mut head = [0u8; 9];
            if tcp.read_exact(&mut head).await.is_err() {
                return;
            }
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let mut payload = vec![0u8; len];
            if tcp.read_exact(&mut payload).await.is_err() {
                return;
            }
            frames.push(head[3]);
            if head[3] == 0x4 && head[4] & 0x1 == 0 {
                tcp.write_all(b"\0\0\0\x04\x01\0\0\0\0").await.unwrap();
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "still open after 8 s; frames seen: {frames:?}");
    assert!(frames.contains(&0x7), "a GOAWAY came first: {frames:?}");
    assert!(started.elapsed() >= Duration::from_secs(1), "not before the idle time");
}

/// A preflight is routed as the request it asks about: a route that allows
/// only some methods and origins answers it, not a looser route after it
/// (whose upstream might answer any origin).
#[tokio::test]
async fn a_preflight_meets_the_route_of_the_method_it_asks_about() {
    let (gw, _) = setup(
        "[[routes]]\npath = '/api/**'\nmethods = ['GET', 'POST']\n\
         cors = { allow_origins = ['https://app.example.com'], allow_methods = ['GET', 'POST'], allow_headers = ['content-type'] }\n\
         [[routes]]\nname = 'app-preflights'\npath = '/app/**'\nmethods = ['OPTIONS']\nrequest_headers = { set = { x-route = 'c' } }\n\
         [[routes]]\npath = '/app/**'\nmethods = ['POST']\nrequest_headers = { set = { x-route = 'd' } }\n\
         [[routes]]\npath = '/**'\n",
    )
    .await;
    // A route without a CORS policy leaves preflights to the app: its own
    // OPTIONS route still gets them.
    let r = client()
        .request(reqwest::Method::OPTIONS, url(&gw, "/app/x"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["headers"]["x-route"], "c");
    let preflight = |origin: &'static str, method: &'static str| {
        client()
            .request(reqwest::Method::OPTIONS, url(&gw, "/api/x"))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let v = problem(preflight("https://evil.example", "POST").await.unwrap(), 403).await;
    assert_eq!(v["type"], "urn:rampart:problem:cors-preflight-denied");
    let ok = preflight("https://app.example.com", "POST").await.unwrap();
    assert_eq!(ok.status(), 204);
    assert_eq!(ok.headers()["access-control-allow-origin"], "https://app.example.com");
    // A method the route does not take is another route's question (as the
    // request itself would be): the catch-all without CORS passes it on.
    assert_eq!(preflight("https://evil.example", "DELETE").await.unwrap().status(), 200);
}

#[tokio::test]
async fn cors_preflights_and_actual_requests() {
    let cors = "[defaults.cors]\nallow_origins = ['https://app.example.com', 'http://localhost:*']\nallow_methods = ['GET', 'POST']\nallow_headers = ['content-type', 'authorization']\nexpose_headers = ['x-request-id']\nallow_credentials = true\nmax_age = '5m'\n";
    let (gw, _) = setup(cors).await;
    let c = client();

    let resp = c
        .request(reqwest::Method::OPTIONS, url(&gw, "/api"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    let v = problem(resp, 403).await;
    assert_eq!(v["type"], "urn:rampart:problem:cors-preflight-denied");

    let resp = c
        .request(reqwest::Method::OPTIONS, url(&gw, "/api"))
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type, authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "http://localhost:5173");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-allow-methods"], "GET, POST");
    assert_eq!(h["access-control-max-age"], "300");
    assert_eq!(h["vary"], "origin");

    let resp = c
        .request(reqwest::Method::OPTIONS, url(&gw, "/api"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "DELETE")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);

    let resp = c.get(url(&gw, "/api")).header("origin", "https://app.example.com").send().await.unwrap();
    assert_eq!(resp.headers()["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(resp.headers()["access-control-expose-headers"], "x-request-id");
    let resp = c.get(url(&gw, "/api")).header("origin", "https://evil.example").send().await.unwrap();
    assert!(!resp.headers().contains_key("access-control-allow-origin"));
    assert_eq!(resp.headers()["vary"], "origin");
    // An upstream that reflects any origin does not override the gateway's policy.
    let resp = c.get(url(&gw, "/cors-reflect")).header("origin", "https://evil.example").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(!resp.headers().contains_key("access-control-allow-origin"), "{:?}", resp.headers());
    assert!(!resp.headers().contains_key("access-control-allow-credentials"), "{:?}", resp.headers());
    let resp = c.get(url(&gw, "/cors-reflect")).header("origin", "https://app.example.com").send().await.unwrap();
    assert_eq!(resp.headers()["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(resp.headers().get_all("access-control-allow-origin").iter().count(), 1);
}

#[tokio::test]
async fn untrusted_host_is_421() {
    let (gw, _) = setup_with("trusted_hosts = ['api.example.com', '*.internal.test']", "").await;
    let reply =
        raw(gw.addr, b"GET / HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n", Duration::from_secs(5)).await;
    assert_problem(&reply, 421, "untrusted-host");
    let reply =
        raw(gw.addr, b"GET / HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n", Duration::from_secs(5))
            .await;
    assert_eq!(status_of(&reply), 200, "{reply}");
    let reply = raw(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: a.internal.test:8443\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(status_of(&reply), 200, "{reply}");
}

#[tokio::test]
async fn garbage_on_the_wire_never_kills_the_server() {
    let gw = guarded().await;
    let samples: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02\x03\r\n\r\n".to_vec(),
        b"GET\r\n\r\n".to_vec(),
        b"GET / HTTP/9.9\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".to_vec(),
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nzz\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n".to_vec(),
        vec![0xff; 10_000],
    ];
    for s in samples {
        let reply = raw(gw.addr, &s, Duration::from_secs(2)).await;
        assert!(reply.is_empty() || reply.starts_with("HTTP/1.1 4"), "{reply}");
    }
    assert_eq!(client().get(url(&gw, "/still-up")).send().await.unwrap().status(), 200);
}
