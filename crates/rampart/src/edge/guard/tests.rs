#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use axum::body::Body;
use bytes::Bytes;
use tower::{service_fn, ServiceExt};

fn cfg() -> GuardConfig {
    GuardConfig {
        max_uri_length: 64,
        max_header_count: 5,
        max_header_bytes: 200,
        body_limit: 10,
        body_read_timeout: Duration::from_millis(100),
        min_body_rate: 0,
        body_rate_grace: Duration::from_secs(1),
        path_options: PathOptions { allow_encoded_slash: false },
        content_types: ContentTypePolicy::new(&["application/json".into()], &[]).unwrap(),
    }
}

/// An inner service that reads the whole body and maps body failures the way the
/// proxy does.
async fn run(req: HttpRequest) -> (u16, Option<String>) {
    let svc = RequestGuardLayer::new(cfg()).layer(service_fn(|req: HttpRequest| async move {
        let resp = match http_body_util::BodyExt::collect(req.into_body()).await {
            Ok(_) => http::Response::new(Body::empty()),
            Err(e) => {
                let f = BodyFailure::of(&e).unwrap();
                f.problem(10).into_response_with(None)
            }
        };
        Ok::<_, std::convert::Infallible>(resp)
    }));
    let resp = svc.oneshot(req).await.unwrap();
    let reason = resp.extensions().get::<crate::problem::Rejection>().map(|r| r.reason.to_string());
    (resp.status().as_u16(), reason)
}

#[track_caller]
fn check(req: HttpRequest, status: u16, reason: Option<&str>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let (s, r) = rt.block_on(run(req));
    assert_eq!((s, r.as_deref()), (status, reason));
}

fn get(uri: &str) -> HttpRequest {
    http::Request::get(uri).body(Body::empty()).unwrap()
}

#[test]
fn uri_path_and_query() {
    check(get("/ok?a=1"), 200, None);
    check(get(&format!("/{}", "a".repeat(80))), 414, Some("uri_too_long"));
    check(get("/a/%2e%2e/etc/passwd"), 400, Some("path_traversal"));
    check(get("/a/..%2Fb"), 400, Some("bad_path"));
    check(get("/a%00b"), 400, Some("nul_byte"));
    check(get("/a%zz"), 400, Some("bad_encoding"));
    check(get("/a%252e%252e/"), 400, Some("bad_encoding"));
    check(get("/q?x=%00"), 400, Some("bad_query"));
    check(get("/q?x=%4"), 400, Some("bad_query"));
    check(get("/q?x=%"), 400, Some("bad_query"));
    check(get("/q?x=%41%42"), 200, None);
}

#[test]
fn header_floods() {
    let mut b = http::Request::get("/");
    for i in 0..6 {
        b = b.header(format!("x-h{i}"), "v");
    }
    check(b.body(Body::empty()).unwrap(), 431, Some("headers_too_large"));
    let big = http::Request::get("/").header("x-big", "v".repeat(300)).body(Body::empty()).unwrap();
    check(big, 431, Some("headers_too_large"));
}

fn post(ct: Option<&str>, body: Body, len: Option<usize>) -> HttpRequest {
    let mut b = http::Request::post("/");
    if let Some(ct) = ct {
        b = b.header("content-type", ct);
    }
    if let Some(n) = len {
        b = b.header("content-length", n);
    }
    b.body(body).unwrap()
}

#[test]
fn content_types_and_declared_length() {
    check(post(Some("application/json"), Body::from("{}"), Some(2)), 200, None);
    check(post(Some("text/xml"), Body::from("<a/>"), Some(4)), 415, Some("content_type"));
    check(post(None, Body::from("x"), Some(1)), 415, Some("content_type"));
    check(post(Some("application/json"), Body::from("x".repeat(11)), Some(11)), 413, Some("body_too_large"));
    // No body: no content-type needed.
    check(http::Request::post("/").body(Body::empty()).unwrap(), 200, None);
}

#[test]
fn streamed_body_over_limit_without_length() {
    let chunks = futures_util::stream::iter((0..5).map(|_| Ok::<_, std::io::Error>(Bytes::from_static(b"abcd"))));
    check(post(Some("application/json"), Body::from_stream(chunks), None), 413, Some("body_too_large"));
}

#[test]
fn stalled_body_times_out() {
    let chunks = futures_util::stream::once(async { Ok::<_, std::io::Error>(Bytes::from_static(b"{")) })
        .chain(futures_util::stream::pending());
    use futures_util::StreamExt;
    check(post(Some("application/json"), Body::from_stream(chunks), None), 408, Some("body_timeout"));
}

#[test]
fn trickling_body_is_cut_off_by_the_minimum_rate() {
    use futures_util::StreamExt;
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    rt.block_on(async {
        // One byte every 60 ms: never idle for the 100 ms timeout, but ~16 B/s.
        let chunks = futures_util::stream::iter(0..40).then(|_| async {
            tokio::time::sleep(Duration::from_millis(60)).await;
            Ok::<_, std::io::Error>(Bytes::from_static(b"a"))
        });
        let body = MinRateBody::new(Body::from_stream(chunks), 100, Duration::from_millis(300));
        let err = http_body_util::BodyExt::collect(body).await.unwrap_err();
        assert_eq!(BodyFailure::of(&*err), Some(BodyFailure::TooSlow));
    });
}

/// A body sent fast at first and then a byte at a time: its average since
/// the start stays above the minimum for long, the rate of each period does not.
#[test]
fn a_fast_start_does_not_buy_a_trickle() {
    use futures_util::StreamExt;
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    rt.block_on(async {
        let burst = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(vec![b'a'; 100_000]))]);
        // Then a byte every 60 ms for 2.4 s: 100 000 bytes over 2.4 s is far
        // above 100 B/s on average, the trickle far below.
        let trickle = futures_util::stream::iter(0..40).then(|_| async {
            tokio::time::sleep(Duration::from_millis(60)).await;
            Ok::<_, std::io::Error>(Bytes::from_static(b"a"))
        });
        let body = MinRateBody::new(Body::from_stream(burst.chain(trickle)), 100, Duration::from_millis(300));
        let err = http_body_util::BodyExt::collect(body).await.unwrap_err();
        assert_eq!(BodyFailure::of(&*err), Some(BodyFailure::TooSlow));
    });
    // A steady body a little above the minimum (7 bytes every 50 ms, at
    // most 140 B/s) passes, period after period.
    rt.block_on(async {
        let steady = futures_util::stream::iter(0..20).then(|_| async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<_, std::io::Error>(Bytes::from_static(&[b'a'; 7]))
        });
        let body = MinRateBody::new(Body::from_stream(steady), 100, Duration::from_millis(300));
        assert_eq!(http_body_util::BodyExt::collect(body).await.unwrap().to_bytes().len(), 140);
    });
}

/// Time in which the body is not read (the upstream is not taking it) is not
/// the client's: a body whose every piece is there when asked for passes,
/// however long the reader pauses between pieces.
#[test]
fn pauses_of_the_reader_are_not_the_clients_slowness() {
    use http_body_util::BodyExt;
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    rt.block_on(async {
        let ready =
            futures_util::stream::iter((0..5).map(|_| Ok::<_, std::io::Error>(Bytes::from_static(&[b'a'; 20]))));
        let mut body = MinRateBody::new(Body::from_stream(ready), 100, Duration::from_millis(300));
        let mut got = 0;
        while let Some(frame) = {
            tokio::time::sleep(Duration::from_millis(350)).await;
            body.frame().await
        } {
            got += frame.expect("not too slow: the client was never waited on").into_data().map_or(0, |d| d.len());
        }
        assert_eq!(got, 100);
    });
}

fn with_host(uri: &str, hosts: &[&str]) -> HttpRequest {
    let mut b = http::Request::get(uri);
    for h in hosts {
        b = b.header("host", *h);
    }
    b.body(Body::empty()).unwrap()
}

#[test]
fn host_headers() {
    for ok in ["api.example.com", "api.example.com:8443", "127.0.0.1:80", "[::1]:8080", "[2001:db8::1]", "a_b.local:"] {
        check(with_host("/x", &[ok]), 200, None);
    }
    // Something after the colon that is not a port: an allow-list of the name
    // must not pass it on to an upstream that builds links from it.
    for bad in [
        "api.example.com:@evil.test",
        "api.example.com:443@evil.test",
        "api.example.com:80x",
        "api.example.com:123456",
        "user@api.example.com",
        "api.example.com/x",
        "a b",
        "[::1",
        "[::1]x",
        "[]",
        "",
        ":80",
        "api.example.com:80:80",
    ] {
        check(with_host("/x", &[bad]), 400, Some("bad_host"));
    }
    check(with_host("/x", &["a.example", "b.example"]), 400, Some("bad_host"));
    // Absolute form (and HTTP/2's :authority): Host must name the same host.
    check(with_host("http://api.example.com/x", &["api.example.com"]), 200, None);
    check(with_host("http://api.example.com/x", &["API.example.com"]), 200, None);
    check(with_host("http://api.example.com/x", &["admin.example.com"]), 400, Some("bad_host"));
    check(with_host("http://api.example.com:8080/x", &["api.example.com"]), 400, Some("bad_host"));
    check(with_host("http://api.example.com/x", &[]), 200, None);
    // Without Host, the authority is the host the layers judge: it must be
    // well formed on its own (user info would read as `api.example.com`).
    for bad in
        ["http://api.example.com:@evil.test/x", "http://user@api.example.com/x", "http://api.example.com:x@evil.test/"]
    {
        check(with_host(bad, &[]), 400, Some("bad_host"));
    }
    check(with_host("http://[::1]:8080/x", &[]), 200, None);
}
