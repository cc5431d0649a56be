//! The reverse proxy against a real upstream over sockets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use crate::common::*;
use futures_util::StreamExt;

#[tokio::test]
async fn forwards_with_forwarding_headers_and_security_headers() {
    let (gw, up) = setup("").await;
    let resp = client()
        .get(url(&gw, "/v1/things?id=7&x=%20y"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6")
        .header("x-real-ip", "6.6.6.6")
        .header("x-original-url", "/admin")
        .header("x-forwarded-prefix", "/evil")
        .header("x-forwarded-uri", "/public")
        .header("x-forwarded-client-cert", "Hash=1;Subject=\"CN=admin\"")
        .header("x-original-uri", "/public")
        .header("x-request-id", "client-id-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["x-request-id"], "client-id-1");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert!(h.contains_key("permissions-policy"));
    assert_eq!(h["cross-origin-opener-policy"], "same-origin");
    assert_eq!(h["cache-control"], "no-store");
    assert!(h.contains_key("content-security-policy"));
    assert!(!h.contains_key("server"), "upstream Server header must be removed");
    assert!(!h.contains_key("x-powered-by"));
    assert!(!h.contains_key("strict-transport-security"), "no HSTS over plain HTTP");
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["path"], "/v1/things");
    assert_eq!(v["query"], "id=7&x=%20y");
    let uh = &v["headers"];
    // The spoofed chain from an untrusted peer is replaced by the real peer.
    assert_eq!(uh["x-forwarded-for"], "127.0.0.1");
    assert_eq!(uh["x-real-ip"], "127.0.0.1");
    for invented in
        ["x-original-url", "x-forwarded-prefix", "x-forwarded-uri", "x-forwarded-client-cert", "x-original-uri"]
    {
        assert!(uh.get(invented).is_none(), "{invented}: {uh:?}");
    }
    // `host:port` is no RFC 7239 token: quoted.
    assert_eq!(uh["forwarded"], format!("for=127.0.0.1;proto=http;host=\"{}\"", gw.addr));
    assert_eq!(uh["x-forwarded-proto"], "http");
    assert_eq!(uh["x-forwarded-host"], gw.addr.to_string());
    assert_eq!(uh["x-request-id"], "client-id-1");
    assert_eq!(uh["host"], up.to_string());

    // A method override is refused, not passed on: the app would run the
    // POST judged here as a DELETE.
    for name in ["x-http-method-override", "X-HTTP-Method", "x-method-override"] {
        let r = client().post(url(&gw, "/v1/things")).header(name, "DELETE").send().await.unwrap();
        assert_eq!(problem(r, 400).await["type"], "urn:rampart:problem:method-override", "{name}");
    }
}

#[tokio::test]
async fn trusted_proxy_chain_is_kept_and_extended() {
    let (gw, _) = setup_with("trusted_proxies = ['127.0.0.0/8']", "").await;
    let v: serde_json::Value = client()
        .get(url(&gw, "/x"))
        .header("x-forwarded-for", "203.0.113.7, 10.9.9.9")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["headers"]["x-forwarded-for"], "203.0.113.7, 10.9.9.9, 127.0.0.1");
    assert_eq!(v["headers"]["x-forwarded-proto"], "https");
}

/// A request carrying both forwarding headers, as through a trusted proxy.
async fn forwarded_by(gw: &rampart::Gateway, xff: &str, fwd: &str) -> reqwest::Response {
    client().get(url(gw, "/x")).header("x-forwarded-for", xff).header("forwarded", fwd).send().await.unwrap()
}

#[tokio::test]
async fn only_the_forwarding_header_the_proxies_write_is_believed() {
    // nginx writes X-Forwarded-For and passes a client's own Forwarded on:
    // that one must not choose the client's address.
    let deny = "[access]\ndeny = ['6.6.6.6/32']\n";
    let (gw, _) = setup_with("trusted_proxies = ['127.0.0.0/8']", deny).await;
    let r = forwarded_by(&gw, "203.0.113.7", "for=6.6.6.6").await;
    assert_eq!(r.status(), 200, "the client's Forwarded was believed");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["headers"]["forwarded"], format!("for=203.0.113.7;proto=http;host=\"{}\"", gw.addr));
    assert_eq!(forwarded_by(&gw, "6.6.6.6", "for=203.0.113.7").await.status(), 403);

    // Behind proxies that write Forwarded, the reverse.
    let (gw, _) = setup_with("trusted_proxies = ['127.0.0.0/8']\nclient_ip_header = 'forwarded'", deny).await;
    let r = client()
        .get(url(&gw, "/x"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-host", "evil.test")
        .header("x-forwarded-prefix", "//evil.test")
        .header("x-forwarded-ssl", "on")
        .header("forwarded", "for=203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the client's X-Forwarded-For was believed");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["headers"]["x-forwarded-for"], "203.0.113.7");
    assert_eq!(v["headers"]["x-forwarded-host"], gw.addr.to_string(), "nor its X-Forwarded-Host");
    for invented in ["x-forwarded-prefix", "x-forwarded-ssl"] {
        assert!(v["headers"].get(invented).is_none(), "{invented}: {v}");
    }
    assert_eq!(forwarded_by(&gw, "203.0.113.7", "for=6.6.6.6").await.status(), 403);
    let bad = config_with("http://127.0.0.1:1", "client_ip_header = 'x-real-ip'", "");
    let err = rampart::app::load_policy_text(&bad).err().unwrap().to_string();
    assert!(err.contains("client_ip_header") || err.contains("x-forwarded-for"), "{err}");
}

#[tokio::test]
async fn the_host_judged_is_the_host_forwarded() {
    // Trusted hosts and host routes judge the request target's authority; the
    // upstream gets Host. A request naming one host in each is refused.
    let (gw, _) = setup_with("trusted_hosts = ['api.example.com']", "preserve_host = true\n").await;
    let send = |head: &'static str| raw(gw.addr, head.as_bytes(), Duration::from_millis(400));
    let out = send("GET http://api.example.com/x HTTP/1.1\r\nhost: admin.example.com\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    assert!(out.contains("bad_host") || out.contains("differs from the authority"), "{out}");
    let out = send("GET http://api.example.com/x HTTP/1.1\r\nhost: api.example.com\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
    // A Host that passes the allow-list by its name but carries more after the colon.
    let out = send("GET /x HTTP/1.1\r\nhost: api.example.com:@evil.test\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 400 ") || out.starts_with("HTTP/1.1 421 "), "{out}");
    assert!(!out.contains("evil.test\""), "{out}");
    let out = send("GET /x HTTP/1.1\r\nhost: api.example.com\r\nhost: admin.example.com\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    // The same in the request target, with no Host at all: user info in the
    // authority reads as `api.example.com` to a host pattern.
    let out = send("GET http://api.example.com:@evil.test/x HTTP/1.1\r\nconnection: close\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    assert!(!out.contains("evil.test\""), "{out}");
}

#[tokio::test]
async fn hsts_when_a_trusted_proxy_says_https() {
    let (gw, _) = setup_with("trusted_proxies = ['127.0.0.1']", "").await;
    let resp = client().get(url(&gw, "/x")).header("x-forwarded-proto", "https").send().await.unwrap();
    assert!(resp.headers()["strict-transport-security"].to_str().unwrap().starts_with("max-age="));
    let (gw, _) = setup("").await;
    let resp = client().get(url(&gw, "/x")).header("x-forwarded-proto", "https").send().await.unwrap();
    assert!(!resp.headers().contains_key("strict-transport-security"), "untrusted peer cannot claim https");
}

/// Sends `head` on a fresh connection and returns the reply's status line
/// and the upstream's echo of the request (its JSON body).
async fn raw_echo(addr: std::net::SocketAddr, head: &[u8]) -> (String, serde_json::Value) {
    let reply = raw(addr, head, Duration::from_secs(5)).await;
    let status = reply.lines().next().unwrap_or_default().to_string();
    let body = &reply[reply.find("\r\n\r\n").unwrap() + 4..];
    let body = &body[body.find('{').unwrap()..=body.rfind('}').unwrap()];
    (status, serde_json::from_str(body).unwrap())
}

#[tokio::test]
async fn hop_by_hop_headers_removed_both_ways() {
    let (gw, _) = setup("").await;
    let resp = client().get(url(&gw, "/hop")).send().await.unwrap();
    assert!(!resp.headers().contains_key("x-upstream-hop"));
    assert!(!resp.headers().contains_key("keep-alive"));
    assert_eq!(resp.headers()["cache-control"], "max-age=60", "upstream cache-control kept");

    let (status, v) = raw_echo(
        gw.addr,
        b"GET /e HTTP/1.1\r\nHost: a\r\nConnection: close, x-client-hop\r\nX-Client-Hop: 1\r\nTE: trailers\r\nProxy-Authorization: Basic eDp5\r\n\r\n",
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    for h in ["x-client-hop", "te", "proxy-authorization"] {
        assert!(v["headers"].get(h).is_none(), "{h} reached the upstream");
    }

    // A client's Connection header cannot remove the headers the gateway
    // adds on the way (here its request id and forwarding headers).
    let (status, v) = raw_echo(
        gw.addr,
        b"GET /e HTTP/1.1\r\nHost: a\r\nConnection: close, x-request-id, x-forwarded-for, x-real-ip\r\nX-Request-ID: mine-1\r\n\r\n",
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(v["headers"]["x-request-id"].as_str().is_some_and(|id| id != "mine-1"), "{v}");
    assert_eq!(v["headers"]["x-forwarded-for"], "127.0.0.1", "{v}");
    assert_eq!(v["headers"]["x-real-ip"], "127.0.0.1", "{v}");
}

#[tokio::test]
async fn request_body_streams_to_upstream() {
    let (gw, _) = setup("[defaults]\nbody_limit = '64MiB'\n").await;
    // 16 MiB sent in 1 MiB chunks without Content-Length: the upstream sees every
    // byte and more than one chunk, so nothing was buffered into one piece.
    let chunks =
        futures_util::stream::iter((0..16).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![7u8; 1 << 20]))));
    let v: serde_json::Value = client()
        .post(url(&gw, "/upload"))
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["body_bytes"], 16 << 20);
    assert!(v["body_chunks"].as_u64().unwrap() > 1);
}

#[tokio::test]
async fn response_body_streams_to_client() {
    let (gw, _) = setup("").await;
    let started = Instant::now();
    let resp = client().get(url(&gw, "/drip/10")).send().await.unwrap();
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    let first_at = started.elapsed();
    assert!(first.starts_with(b"chunk0"));
    let mut rest = Vec::new();
    while let Some(c) = stream.next().await {
        rest.extend_from_slice(&c.unwrap());
    }
    let total = started.elapsed();
    assert!(String::from_utf8_lossy(&rest).contains("chunk9"));
    // The first chunk arrived well before the upstream finished (10 x 50 ms).
    assert!(first_at < total / 2, "first chunk at {first_at:?}, end at {total:?}");
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_upstream_is_504() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let gw = gateway(&config(&format!("http://{dead}"), "")).await;
    let v = problem(client().get(url(&gw, "/x")).send().await.unwrap(), 502).await;
    assert_eq!(v["type"], "urn:rampart:problem:upstream-unavailable");

    let (gw, _) = setup("[[routes]]\npath = '/slow/**'\ntimeout = '200ms'\n[[routes]]\npath = '/**'\n").await;
    let v = problem(client().get(url(&gw, "/slow/2000")).send().await.unwrap(), 504).await;
    assert_eq!(v["type"], "urn:rampart:problem:upstream-timeout");
    assert_eq!(client().get(url(&gw, "/slow/10")).send().await.unwrap().status(), 200);
    let metrics =
        client().get(format!("http://{}/metrics", gw.ops_addr.unwrap())).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("rampart_upstream_errors_total{upstream=\"default\",kind=\"timeout\"} 1"), "{metrics}");
}

#[tokio::test]
async fn routes_pick_upstreams_strip_prefixes_and_rewrite_headers() {
    let up_a = start_upstream().await;
    let up_b = start_upstream().await;
    let text = config(
        &format!("http://{up_a}"),
        &format!(
            "[upstreams.b]\nurl = 'http://{up_b}/base'\n\
             [[routes]]\nname = 'b'\npath = '/b/**'\nupstream = 'b'\nstrip_prefix = '/b'\n\
             request_headers = {{ set = {{ 'x-added' = 'yes' }}, remove = ['x-drop'] }}\n\
             response_headers = {{ set = {{ 'x-resp' = '1' }} }}\n\
             [[routes]]\nname = 'get-only'\npath = '/a/**'\nmethods = ['GET']\n"
        ),
    );
    let gw = gateway(&text).await;
    let resp = client().get(url(&gw, "/b/users/1")).header("x-drop", "1").send().await.unwrap();
    assert_eq!(resp.headers()["x-resp"], "1");
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["path"], "/base/users/1");
    assert_eq!(v["headers"]["host"], up_b.to_string());
    assert_eq!(v["headers"]["x-added"], "yes");
    assert!(v["headers"].get("x-drop").is_none());
    // The prefix spelt in percent-encoding matches the route (decoded) but
    // could not be cut: refused, never forwarded with the prefix on.
    let v = problem(client().get(url(&gw, "/%62/users/1")).send().await.unwrap(), 400).await;
    assert!(v["detail"].as_str().unwrap().contains("prefix"), "{v}");

    // Segment parameters: routed without them, as servlet containers map
    // paths; the same refusal when they would keep the prefix from being cut.
    let v = problem(client().get(url(&gw, "/b;x/users/1")).send().await.unwrap(), 400).await;
    assert!(v["detail"].as_str().unwrap().contains("prefix"), "{v}");
    let resp = client().get(url(&gw, "/a;jsessionid=1/x;v=2")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "matched /a/**");
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["path"], "/a;jsessionid=1/x;v=2", "sent upstream as it came");

    assert_eq!(client().get(url(&gw, "/a/x")).send().await.unwrap().status(), 200);
    let v = problem(client().delete(url(&gw, "/a/x")).send().await.unwrap(), 404).await;
    assert_eq!(v["type"], "urn:rampart:problem:no-route");
}

/// Behind an upstream that routes without regard to case or a trailing
/// slash (Express's defaults), `case_sensitive_paths = false` and
/// `strict_trailing_slash = false` route every spelling it serves as
/// `/admin/...` by the `/admin/**` route: none reaches the looser catch-all.
#[tokio::test]
async fn loose_route_matching_routes_every_spelling_of_a_path_alike() {
    let up = start_upstream().await;
    let routes = "[[routes]]\nname = 'admin'\npath = '/admin/**'\nstrip_prefix = '/admin'\n\
                  request_headers = { set = { 'x-route' = 'admin' } }\n\
                  [[routes]]\nname = 'exact'\npath = '/Reports'\nrequest_headers = { set = { 'x-route' = 'reports' } }\n\
                  [[routes]]\nname = 'rest'\npath = '/**'\nrequest_headers = { set = { 'x-route' = 'rest' } }\n";
    let seen = |gw: &rampart::Gateway, path: &'static str| {
        let u = url(gw, path);
        async move {
            let v: serde_json::Value = client().get(u).send().await.unwrap().json().await.unwrap();
            (v["headers"]["x-route"].as_str().unwrap_or_default().to_owned(), v["path"].as_str().unwrap().to_owned())
        }
    };
    // Exact by default: other spellings fall through to the catch-all.
    let strict = gateway(&config(&format!("http://{up}"), routes)).await;
    assert_eq!(seen(&strict, "/ADMIN/users").await, ("rest".into(), "/ADMIN/users".into()));
    assert_eq!(seen(&strict, "/Reports/").await, ("rest".into(), "/Reports/".into()));

    let server = "case_sensitive_paths = false\nstrict_trailing_slash = false";
    let loose = gateway(&config_with(&format!("http://{up}"), server, routes)).await;
    assert_eq!(seen(&loose, "/admin/users").await, ("admin".into(), "/users".into()));
    // The prefix is cut whatever its case; the rest goes as sent.
    assert_eq!(seen(&loose, "/ADMIN/Users").await, ("admin".into(), "/Users".into()));
    assert_eq!(seen(&loose, "/Admin").await, ("admin".into(), "/".into()));
    assert_eq!(seen(&loose, "/reports").await, ("reports".into(), "/reports".into()));
    assert_eq!(seen(&loose, "/REPORTS/").await, ("reports".into(), "/REPORTS/".into()));
    assert_eq!(seen(&loose, "/reportsx").await.0, "rest");
    // A prefix that only decoding and lower-casing reach is refused, not
    // sent with the prefix on.
    let v = problem(client().get(url(&loose, "/%41dmin/users")).send().await.unwrap(), 400).await;
    assert!(v["detail"].as_str().unwrap().contains("prefix"), "{v}");

    // A pattern ending in `/` could never match without trailing slashes.
    let text = config_with(&format!("http://{up}"), server, "[[routes]]\npath = '/admin/'\n");
    let err = rampart::app::load_policy_text(&text).unwrap_err().to_string();
    assert!(err.contains("routes[0].path") && err.contains("strict_trailing_slash"), "{err}");
}

#[tokio::test]
async fn http2_clients_and_h2c_upstreams() {
    let up = start_upstream().await;
    let text =
        config(&format!("http://{up}"), "").replace("[upstreams.default]\n", "[upstreams.default]\nhttp2 = true\n");
    let gw = gateway(&text).await;
    let c = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    let resp = c.get(url(&gw, "/h2")).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["version"], "HTTP/2.0", "upstream spoken to over h2c");

    // `[server] http2 = false`: HTTP/2 with prior knowledge is refused.
    let gw = gateway(&config_with(&format!("http://{up}"), "http2 = false", "")).await;
    assert!(c.get(url(&gw, "/h2")).send().await.is_err(), "h2c served with http2 = false");
    assert_eq!(client().get(url(&gw, "/h1")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn websocket_upgrade_is_tunnelled() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let ws_addr = websocket_upstream().await;
    // Also where the handshake is the connection's last request.
    for server in ["", "max_requests_per_connection = 1"] {
        let gw = gateway(&config_with(&format!("http://{ws_addr}"), server, "")).await;
        let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/socket", gw.addr)).await.unwrap();
        assert_eq!(resp.status(), 101);
        assert_eq!(resp.headers()["connection"], "upgrade", "{server}");
        for i in 0..3 {
            ws.send(Message::text(format!("hi {i}"))).await.unwrap();
            let m = ws.next().await.unwrap().unwrap();
            assert_eq!(m.to_text().unwrap(), format!("echo: hi {i}"));
        }
    }
}

/// The upstream's hop-by-hop headers on a 101, and those its `Connection`
/// names, stay on its side of the tunnel.
#[tokio::test]
async fn a_switch_keeps_the_upstreams_hop_by_hop_headers() {
    let up = scripted_upstream(
        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade, x-node\r\nupgrade: websocket\r\n\
          x-node: 10.0.3.7\r\nkeep-alive: timeout=5\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
    )
    .await;
    let gw = gateway(&config(&format!("http://{up}"), "")).await;
    let out = raw(gw.addr, WS_HANDSHAKE, Duration::from_millis(1000)).await.to_ascii_lowercase();
    assert!(out.starts_with("http/1.1 101 "), "{out}");
    assert!(out.contains("connection: upgrade\r\n") && out.contains("upgrade: websocket\r\n"), "{out}");
    assert!(out.contains("sec-websocket-accept: "), "{out}");
    assert!(!out.contains("x-node") && !out.contains("keep-alive"), "{out}");
}

/// A WebSocket echo server as an upstream.
async fn websocket_upstream() -> std::net::SocketAddr {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let ws_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_addr = ws_listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = ws_listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else { return };
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_text() && ws.send(Message::text(format!("echo: {}", m.to_text().unwrap()))).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    ws_addr
}

#[tokio::test]
async fn upgrades_other_than_websocket_go_as_plain_requests() {
    // An h2c upgrade tunnelled to an upstream that accepts it would let the
    // client speak HTTP/2 to the upstream past every layer: it goes as a plain
    // request, without its Upgrade header.
    let (gw, _) = setup("").await;
    let (status, v) = raw_echo(
        gw.addr,
        b"GET /plain HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: Upgrade, HTTP2-Settings, close\r\nupgrade: h2c\r\n\
          http2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 200 "), "{status}");
    assert_eq!(v["path"], "/plain");
    for name in ["upgrade", "http2-settings", "connection"] {
        assert!(v["headers"].get(name).is_none(), "{name} reached the upstream: {v}");
    }
}

#[tokio::test]
async fn an_upstream_switching_to_another_protocol_is_a_bad_gateway() {
    // An upstream that answers every request with a switch to h2c.
    let up =
        scripted_upstream(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n").await;
    let gw = gateway(&config(&format!("http://{up}"), "")).await;
    let out = raw(gw.addr, WS_HANDSHAKE, Duration::from_millis(1500)).await;
    assert!(out.starts_with("HTTP/1.1 502 "), "{out}");
    assert!(out.contains("bad_upgrade") || out.contains("switched to a protocol"), "{out}");
    // A plain request that gets a 101 is refused the same way.
    let r = client().get(url(&gw, "/plain")).send().await.unwrap();
    assert_eq!(r.status(), 502);
}

/// A client's WebSocket handshake, as raw bytes.
const WS_HANDSHAKE: &[u8] = b"GET /ws HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: upgrade\r\nupgrade: websocket\r\n\
    sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/// An upstream that answers every request with `reply`, then holds the
/// connection for a few seconds.
async fn scripted_upstream(reply: &'static [u8]) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let Ok(n) = s.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                let _ = s.write_all(reply).await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            });
        }
    });
    up
}

/// An upstream answer with both `Transfer-Encoding: chunked` and a
/// `Content-Length` is framed by its chunks (RFC 9112 §6.3), and reaches the
/// client whole and without the void length; one with a transfer coding
/// hyper does not undo is a bad gateway, not bytes passed off as identity.
#[tokio::test]
async fn upstream_framing_is_judged_by_transfer_encoding() {
    let up = scripted_upstream(
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
          14\r\nhello, whole answer!\r\n0\r\n\r\n",
    )
    .await;
    let gw = gateway(&config(&format!("http://{up}"), "")).await;
    let r = client().get(url(&gw, "/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("content-length").is_none_or(|v| v == "20"), "{:?}", r.headers());
    assert_eq!(r.text().await.unwrap(), "hello, whole answer!");

    let up = scripted_upstream(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let gw = gateway(&config(&format!("http://{up}"), "")).await;
    let v = problem(client().get(url(&gw, "/x")).send().await.unwrap(), 502).await;
    assert_eq!(v["type"], "urn:rampart:problem:upstream-unavailable", "{v}");
}

#[tokio::test]
async fn a_tunnel_keeps_its_connection_slot_and_ends_when_idle() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let ws_addr = websocket_upstream().await;
    let gw = gateway(&config_with(
        &format!("http://{ws_addr}"),
        "max_connections_per_ip = 1\ntunnel_idle_timeout = '1500ms'",
        "",
    ))
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/socket", gw.addr)).await.unwrap();
    ws.send(Message::text("one")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().to_text().unwrap(), "echo: one");
    // The tunnel holds this address's only connection slot: another
    // connection is closed unanswered.
    let refused = raw(gw.addr, b"GET / HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n", Duration::from_millis(500)).await;
    assert_eq!(refused, "", "a second connection was served while the tunnel held the slot");
    // Traffic keeps the tunnel open past its idle timeout...
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        ws.send(Message::text(format!("{i}"))).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap().to_text().unwrap(), format!("echo: {i}"));
    }
    // ...and silence closes it, which gives the slot back.
    let started = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("the idle tunnel was not closed");
    assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
    assert!(started.elapsed() >= Duration::from_millis(1000), "closed too early: {:?}", started.elapsed());
    assert!(
        eventually(Duration::from_secs(3), || async {
            client().get(url(&gw, "/")).send().await.is_ok_and(|r| r.status() != 0)
        })
        .await
    );
}

#[tokio::test]
async fn metrics_and_health_on_the_ops_listener() {
    let (gw, _) = setup("").await;
    client().get(url(&gw, "/counted")).send().await.unwrap();
    client().get(url(&gw, "/%zz")).send().await.unwrap();
    let ops = gw.ops_addr.unwrap();
    let m = client().get(format!("http://{ops}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("rampart_requests_total{route=\"default\",status=\"200\"} 1"), "{m}");
    assert!(m.contains("rampart_rejections_total{layer=\"guard\",reason=\"bad_encoding\"} 1"), "{m}");
    assert!(m.contains("rampart_request_duration_seconds_bucket"));
    assert!(m.contains("rampart_in_flight_requests 0"));
    assert_eq!(client().get(format!("http://{ops}/healthz")).send().await.unwrap().status(), 200);
    let r = client().get(format!("http://{ops}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    gw.shutdown();
    gw.wait().await;
    // After shutdown the ops listener is gone too.
    assert!(client().get(format!("http://{ops}/readyz")).send().await.is_err());
}

#[tokio::test]
async fn a_request_whose_client_goes_away_is_counted_as_499_and_leaves_in_flight() {
    use tokio::io::AsyncWriteExt;
    let (gw, _) = setup("").await;
    let ops = gw.ops_addr.unwrap();
    let scrape =
        || async move { client().get(format!("http://{ops}/metrics")).send().await.unwrap().text().await.unwrap() };
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /slow/5000 HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n").await.unwrap();
    // In flight while the upstream is slow...
    let deadline = Instant::now() + Duration::from_secs(3);
    while !scrape().await.contains("rampart_in_flight_requests 1") {
        assert!(Instant::now() < deadline, "the request never showed as in flight");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...and no longer once its client has hung up, long before the upstream answers.
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let m = scrape().await;
        if m.contains("rampart_in_flight_requests 0") {
            assert!(m.contains("rampart_requests_total{route=\"default\",status=\"499\"} 1"), "{m}");
            break;
        }
        assert!(Instant::now() < deadline, "in-flight gauge kept the abandoned request: {m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn reload_swaps_policy_atomically_and_bad_reload_keeps_old() {
    let (gw, up) = setup("[[routes]]\npath = '/old/**'\n").await;
    assert_eq!(client().get(url(&gw, "/old/x")).send().await.unwrap().status(), 200);
    assert_eq!(client().get(url(&gw, "/new/x")).send().await.unwrap().status(), 404);

    let new = config(&format!("http://{up}"), "[[routes]]\npath = '/new/**'\n");
    gw.reload(rampart::app::load_policy_text(&new)).unwrap();
    assert_eq!(client().get(url(&gw, "/new/x")).send().await.unwrap().status(), 200);
    assert_eq!(client().get(url(&gw, "/old/x")).send().await.unwrap().status(), 404);

    let bad = config(&format!("http://{up}"), "[[routes]]\npath = 'no-slash'\n");
    assert!(gw.reload(rampart::app::load_policy_text(&bad)).is_err());
    assert_eq!(client().get(url(&gw, "/new/x")).send().await.unwrap().status(), 200, "old policy kept");
    let m =
        client().get(format!("http://{}/metrics", gw.ops_addr.unwrap())).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("rampart_config_reloads_total{result=\"ok\"} 1"));
    assert!(m.contains("rampart_config_reloads_total{result=\"error\"} 1"));
}

#[tokio::test]
async fn graceful_shutdown_drains_in_flight_requests() {
    let (gw, _) = setup("").await;
    let u = url(&gw, "/slow/400");
    let in_flight = tokio::spawn(async move { client().get(u).send().await.unwrap().text().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let addr = gw.addr;
    gw.shutdown();
    // New connections are refused promptly...
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "listener should be closed");
    // ...while the request already in flight completes.
    assert_eq!(in_flight.await.unwrap(), "slow done");
    gw.wait().await;
}

/// Browsers send each cookie as a field of its own over HTTP/2; the
/// upstream, over HTTP/1.1, gets them joined in one `Cookie` line (RFC 9113
/// §8.2.3), as apps read one.
#[tokio::test]
async fn http2_cookie_crumbs_reach_the_upstream_as_one_line() {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = upstream.local_addr().unwrap();
    let head = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut s, _) = upstream.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "the upstream connection closed mid-head");
            got.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.unwrap();
        String::from_utf8_lossy(&got).into_owned()
    });
    let gw = gateway(&config(&format!("http://{up}"), "")).await;
    let h2 = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    let r = h2.get(url(&gw, "/x")).header("cookie", "a=1").header("cookie", "b=2").send().await.unwrap();
    assert_eq!((r.version(), r.status().as_u16()), (reqwest::Version::HTTP_2, 200));
    let head = head.await.unwrap().to_ascii_lowercase();
    let cookies: Vec<&str> = head.lines().filter(|l| l.starts_with("cookie:")).collect();
    assert_eq!(cookies, ["cookie: a=1; b=2"], "{head}");
}

/// On a dual-stack listener an IPv4 client is `::ffff:a.b.c.d` to the
/// socket; the upstream is told its plain IPv4 address, as Rampart sees it.
#[tokio::test]
async fn a_dual_stack_listener_forwards_plain_ipv4_addresses() {
    if std::net::TcpListener::bind("[::]:0").is_err() {
        eprintln!("skipped: no IPv6 on this machine");
        return;
    }
    let up = start_upstream().await;
    let text = config(&format!("http://{up}"), "").replace("listen = '127.0.0.1:0'", "listen = '[::]:0'");
    let gw = gateway(&text).await;
    let v: serde_json::Value =
        client().get(format!("http://127.0.0.1:{}/x", gw.addr.port())).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["headers"]["x-real-ip"], "127.0.0.1", "{v}");
    assert_eq!(v["headers"]["x-forwarded-for"], "127.0.0.1");
    assert!(v["headers"]["forwarded"].as_str().unwrap().starts_with("for=127.0.0.1;"), "{v}");
}

/// A transfer coding other than `chunked` alone is refused with 501 (RFC
/// 9112 §6.1), not passed on with the coding dropped.
#[tokio::test]
async fn a_transfer_coding_other_than_chunked_is_refused() {
    let (gw, _) = setup("").await;
    let body = "POST /echo-body HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    let out = raw(gw.addr, body.as_bytes(), Duration::from_millis(500)).await;
    assert!(out.starts_with("HTTP/1.1 501 "), "{out}");
    assert!(out.contains("unsupported-transfer-encoding"), "{out}");
    let plain = "POST /echo-body HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    let out = raw(gw.addr, plain.as_bytes(), Duration::from_millis(500)).await;
    assert!(out.starts_with("HTTP/1.1 200 ") && out.ends_with("abc"), "{out}");
}
