//! Rampart's edge layers inside your own axum app, without the gateway.
//!
//! Run: `cargo run -p rampart --example axum_layers`, then
//! `curl -i localhost:3000/hello` and `curl -i 'localhost:3000/%2e%2e/x'`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use rampart::edge::client_ip::ClientIpLayer;
use rampart::edge::cors::CorsLayer;
use rampart::edge::guard::{GuardConfig, RequestGuardLayer};
use rampart::edge::request_id::RequestIdLayer;
use rampart::edge::security_headers::SecurityHeadersLayer;
use rampart_core::client_ip::{ClientInfo, TrustedProxies};
use rampart_core::config::compile::{BUILTIN_CACHE_CONTROL, BUILTIN_SECURITY_HEADERS};
use rampart_core::config::SecurityHeaders;
use rampart_core::cors::CorsPolicy;
use rampart_core::origin::OriginPattern;
use tower::ServiceBuilder;

/// The app's own handler sees the resolved client address.
async fn hello(axum::Extension(client): axum::Extension<ClientInfo>) -> String {
    format!("hello, {}\n", client.ip)
}

/// The stack: outermost first, as in the gateway.
pub fn app() -> Router {
    let headers = SecurityHeaders {
        always: BUILTIN_SECURITY_HEADERS
            .iter()
            .map(|(n, v)| (http::HeaderName::from_static(n), http::HeaderValue::from_static(v)))
            .collect(),
        cache_control: Some(http::HeaderValue::from_static(BUILTIN_CACHE_CONTROL)),
        hsts: None,
        remove: vec![http::header::SERVER],
    };
    let cors = OriginPattern::parse("http://localhost:*").ok().map(|origin| {
        Arc::new(CorsPolicy::new(
            vec![origin],
            vec![http::Method::GET],
            vec![http::header::CONTENT_TYPE],
            false,
            vec![],
            std::time::Duration::from_secs(600),
            false,
        ))
    });
    Router::new().route("/hello", get(hello)).layer(
        ServiceBuilder::new()
            .layer(RequestIdLayer)
            .layer(ClientIpLayer::new(TrustedProxies::default()))
            .layer(SecurityHeadersLayer::new(Arc::new(headers)))
            .layer(RequestGuardLayer::new(GuardConfig { body_limit: 64 * 1024, ..GuardConfig::default() }))
            .layer(CorsLayer::new(cors)),
    )
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app().into_make_service_with_connect_info::<SocketAddr>()).await
}
