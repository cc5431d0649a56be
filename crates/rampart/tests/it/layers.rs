//! The edge layers used on their own in an axum app (the `axum_layers` example),
//! served on a real socket.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../examples/axum_layers.rs"]
#[allow(dead_code)]
mod example;

use std::net::SocketAddr;

#[tokio::test]
async fn layers_work_inside_a_plain_axum_app() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, example::app().into_make_service_with_connect_info::<SocketAddr>()).await.unwrap();
    });
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let resp = c.get(format!("http://{addr}/hello")).header("x-forwarded-for", "6.6.6.6").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    assert!(resp.headers().contains_key("x-request-id"));
    assert_eq!(resp.text().await.unwrap(), "hello, 127.0.0.1\n");

    let resp = c.get(format!("http://{addr}/hello%00.txt")).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");

    let resp = c
        .request(reqwest::Method::OPTIONS, format!("http://{addr}/hello"))
        .header("origin", "https://evil.test")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}
