//! A small echo server: the built-in upstream of `rampart demo`, and the upstream
//! `scripts/bench` measures against. It answers every request with a JSON summary
//! of what it received (method, path, query, headers, body size), so you can see
//! exactly what Rampart forwarded.

use std::net::SocketAddr;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::header;
use tokio::net::TcpListener;

async fn echo(req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let mut size = 0usize;
    let mut stream = body.into_data_stream();
    use futures_util::StreamExt;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => size = size.saturating_add(c.len()),
            Err(_) => break,
        }
    }
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(String::from_utf8_lossy(v.as_bytes()).into_owned())))
        .collect();
    let summary = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_bytes": size,
    });
    ([(header::CONTENT_TYPE, "application/json")], summary.to_string()).into_response()
}

/// Serves the echo app on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    let app = Router::new().fallback(echo);
    axum::serve(listener, app).await
}

/// Binds `addr` and serves in the background; returns the bound address.
pub async fn spawn(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = serve(listener).await {
            tracing::error!(error = %e, "echo upstream stopped");
        }
    });
    Ok(bound)
}
