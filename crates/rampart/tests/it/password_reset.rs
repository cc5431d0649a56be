//! Password reset end to end, on SQLite and on PostgreSQL: the token read
//! from the log notifier's file or received by a real webhook server that
//! checks the HMAC signature; single use, expiry, older tokens spent by a
//! newer one, sessions ended, the same 202 for unknown accounts, the
//! per-account cap and hostile input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use rampart::store::identity::{NewResetToken, ResetTokenStore, TokenHash, UserStore};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::common::db::TestDb;
use crate::common::*;
use crate::identity::{identity_config, register_with_email, token_request, PASSWORD};

const NEW: &str = "entirely different lemon words 77";
const HOOK_SECRET: &str = "webhook-signing-secret-0123456789abcdef";

on_both_backends!(sqlite_reset_with_the_log_notifier, postgres_reset_with_the_log_notifier, log_flow);
on_both_backends!(sqlite_reset_with_a_signed_webhook, postgres_reset_with_a_signed_webhook, webhook_flow);

fn log_config(up: std::net::SocketAddr, db: &str, path: &Path) -> String {
    format!(
        "{}[identity.notifier]\nkind = 'log'\npath = '{}'\n\
         [identity.reset]\nlink = 'https://app.example.test/reset?token={{token}}'\n",
        identity_config(up, db),
        path.display()
    )
}

/// The notifications for `username` written to the log file so far.
fn logged(path: &Path, username: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|n| n["username"] == username).collect()
}

/// Waits for the `n`th notification of `username` and returns its token.
async fn nth_token(path: &Path, username: &str, n: usize) -> String {
    let arrived = eventually(Duration::from_secs(10), || async { logged(path, username).len() >= n }).await;
    assert!(arrived, "notification {n} for {username} never came");
    logged(path, username)[n - 1]["token"].as_str().unwrap().to_string()
}

async fn forgot(gw: &rampart::Gateway, body: Value) -> reqwest::Response {
    client().post(url(gw, "/auth/password/forgot")).json(&body).send().await.unwrap()
}

async fn reset(gw: &rampart::Gateway, token: &str, password: &str) -> reqwest::Response {
    let body = serde_json::json!({"token": token, "new_password": password});
    client().post(url(gw, "/auth/password/reset")).json(&body).send().await.unwrap()
}

async fn login(gw: &rampart::Gateway, user: &str, password: &str) -> (u16, Value) {
    token_request(gw, &[("grant_type", "password"), ("username", user), ("password", password)]).await
}

fn now_ms() -> u64 {
    u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

async fn log_flow(db: &TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notifications.jsonl");
    // A file that is already there (too open) is narrowed to 0600 at start.
    std::fs::write(&file, "").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let up = start_upstream().await;
    let gw = gateway(&log_config(up, &db.url, &file)).await;
    assert_eq!(register_with_email(&gw, "alice", Some("alice@example.test"), PASSWORD).await.status(), 201);
    let (status, tokens) = login(&gw, "alice", PASSWORD).await;
    assert_eq!(status, 200);
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();

    // Known and unknown accounts get the same answer.
    let known = forgot(&gw, serde_json::json!({"username": "alice"})).await;
    assert_eq!(known.status(), 202);
    let known: Value = known.json().await.unwrap();
    let unknown = forgot(&gw, serde_json::json!({"username": "nobody-here"})).await;
    assert_eq!(unknown.status(), 202);
    assert_eq!(unknown.json::<Value>().await.unwrap(), known);
    let by_email = forgot(&gw, serde_json::json!({"email": "nobody@example.test"})).await;
    assert_eq!(by_email.json::<Value>().await.unwrap(), known);

    let token = nth_token(&file, "alice", 1).await;
    let note = &logged(&file, "alice")[0];
    assert!(token.starts_with("prt_") && token.len() == 47, "{token}");
    assert_eq!(note["kind"], "password_reset");
    assert_eq!(note["email"], "alice@example.test");
    assert_eq!(note["link"], format!("https://app.example.test/reset?token={token}"));
    let expires = note["expires_at"].as_u64().unwrap();
    let in_30m = now_ms() / 1000 + 30 * 60;
    assert!(expires <= in_30m && expires + 60 > in_30m, "{expires} vs {in_30m}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    }

    // A refused password leaves the token usable.
    let weak = problem(reset(&gw, &token, "password123").await, 400).await;
    assert!(weak["type"].as_str().unwrap().ends_with("weak-password"), "{weak}");
    assert_eq!(reset(&gw, &token, NEW).await.status(), 204);

    // The old password and every old session are gone; the new password works.
    assert_eq!(login(&gw, "alice", PASSWORD).await.0, 400);
    assert_eq!(token_request(&gw, &[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await.0, 400);
    assert_eq!(client().get(url(&gw, "/auth/me")).bearer_auth(&access).send().await.unwrap().status(), 401);
    assert_eq!(login(&gw, "alice", NEW).await.0, 200);

    // Single use: the same token again is the one generic problem.
    let reused = problem(reset(&gw, &token, "yet another fine passphrase 9").await, 400).await;
    assert!(reused["type"].as_str().unwrap().ends_with("invalid-reset-token"), "{reused}");

    // Two more requests (by e-mail this time): using the newer token spends the older one.
    assert_eq!(forgot(&gw, serde_json::json!({"email": "alice@example.test"})).await.status(), 202);
    let older = nth_token(&file, "alice", 2).await;
    assert_eq!(forgot(&gw, serde_json::json!({"username": "ALICE"})).await.status(), 202);
    let newer = nth_token(&file, "alice", 3).await;
    assert_ne!(older, newer);
    assert_eq!(reset(&gw, &newer, PASSWORD).await.status(), 204);
    let spent = problem(reset(&gw, &older, NEW).await, 400).await;
    let never = problem(reset(&gw, "prt_never-issued", NEW).await, 400).await;
    assert_eq!((&spent["type"], &spent["detail"]), (&never["type"], &never["detail"]));
    assert_eq!(login(&gw, "alice", PASSWORD).await.0, 200);

    // An expired token is refused like any other bad one.
    let store = db.open().await;
    let alice = store.user_by_username("alice").await.unwrap().unwrap();
    let expired = "prt_expired-token-inserted-directly";
    store
        .insert_reset_token(&NewResetToken {
            token_hash: TokenHash::of(expired),
            user_id: alice.id.clone(),
            created_at: now_ms() - 3_600_000,
            expires_at: now_ms() - 1,
        })
        .await
        .unwrap();
    assert_eq!(reset(&gw, expired, NEW).await.status(), 400);
    assert_eq!(login(&gw, "alice", PASSWORD).await.0, 200);
    gw.shutdown();
}

/// A webhook receiver on a real socket: verifies the signature and timestamp
/// as a mailer would (constant-time, through `ring::hmac::verify`) and passes
/// on the notifications that pass.
async fn start_webhook(status: StatusCode) -> (std::net::SocketAddr, mpsc::UnboundedReceiver<Value>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let ts = headers.get("x-rampart-timestamp").and_then(|v| v.to_str().ok()).unwrap_or_default();
                let sig = headers.get("x-rampart-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
                let fresh = ts.parse::<u64>().is_ok_and(|t| t.abs_diff(now_ms() / 1000) < 300);
                let Some(Ok(tag)) = sig.strip_prefix("sha256=").map(hex::decode) else {
                    return StatusCode::UNAUTHORIZED;
                };
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, HOOK_SECRET.as_bytes());
                let signed = [ts.as_bytes(), b".", &body].concat();
                if !fresh || ring::hmac::verify(&key, &signed, &tag).is_err() {
                    return StatusCode::UNAUTHORIZED;
                }
                tx.send(serde_json::from_slice::<Value>(&body).unwrap()).unwrap();
                status
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, rx)
}

async fn webhook_flow(db: &TestDb) {
    let (hook, mut received) = start_webhook(StatusCode::NO_CONTENT).await;
    let up = start_upstream().await;
    let text = format!(
        "{}[identity.notifier]\nkind = 'webhook'\nurl = 'http://{hook}/hook'\nsecret = '{HOOK_SECRET}'\n",
        identity_config(up, &db.url)
    );
    let gw = gateway(&text).await;
    assert_eq!(register_with_email(&gw, "bruno", None, PASSWORD).await.status(), 201);
    assert_eq!(forgot(&gw, serde_json::json!({"username": "bruno"})).await.status(), 202);
    let note = tokio::time::timeout(Duration::from_secs(10), received.recv()).await.unwrap().unwrap();
    assert_eq!((note["kind"].as_str(), note["username"].as_str()), (Some("password_reset"), Some("bruno")));
    assert!(note["email"].is_null() && note["link"].is_null(), "{note}");
    let token = note["token"].as_str().unwrap();
    assert_eq!(reset(&gw, token, NEW).await.status(), 204);
    assert_eq!(login(&gw, "bruno", NEW).await.0, 200);
    gw.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_webhook_changes_nothing_for_the_caller() {
    let (hook, mut received) = start_webhook(StatusCode::INTERNAL_SERVER_ERROR).await;
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite(dir.path());
    let up = start_upstream().await;
    let text = format!(
        "{}[identity.notifier]\nkind = 'webhook'\nurl = 'http://{hook}/hook'\nsecret = '{HOOK_SECRET}'\n",
        identity_config(up, &db.url)
    );
    let gw = gateway(&text).await;
    assert_eq!(register_with_email(&gw, "carla", None, PASSWORD).await.status(), 201);
    let r = forgot(&gw, serde_json::json!({"username": "carla"})).await;
    assert_eq!(r.status(), 202);
    assert!(tokio::time::timeout(Duration::from_secs(10), received.recv()).await.unwrap().is_some());
    let counted = eventually(Duration::from_secs(5), || async {
        gw.metrics.render().contains("rampart_notifications_failed_total 1")
    })
    .await;
    assert!(counted, "the failed delivery is counted");
    gw.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_requests_are_capped_per_account() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("n.jsonl");
    let db = TestDb::sqlite(dir.path());
    let up = start_upstream().await;
    let gw = gateway(&log_config(up, &db.url, &file)).await;
    for name in ["dora", "emil"] {
        assert_eq!(register_with_email(&gw, name, None, PASSWORD).await.status(), 201);
    }
    for _ in 0..6 {
        assert_eq!(forgot(&gw, serde_json::json!({"username": "dora"})).await.status(), 202);
    }
    nth_token(&file, "dora", 3).await;
    // Another account is not held back; once its mail is written, dora's
    // excess requests have long been handled.
    assert_eq!(forgot(&gw, serde_json::json!({"username": "emil"})).await.status(), 202);
    nth_token(&file, "emil", 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(logged(&file, "dora").len(), 3, "max_requests = 3 per hour by default");
    gw.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_answered_with_problems() {
    let dir = tempfile::tempdir().unwrap();
    let file: PathBuf = dir.path().join("n.jsonl");
    let db = TestDb::sqlite(dir.path());
    let up = start_upstream().await;
    let gw = gateway(&log_config(up, &db.url, &file)).await;
    assert_eq!(register_with_email(&gw, "fritz", None, PASSWORD).await.status(), 201);
    let post = |path: &'static str, body: Vec<u8>| {
        let gw = &gw;
        async move {
            client().post(url(gw, path)).header("content-type", "application/json").body(body).send().await.unwrap()
        }
    };
    for path in ["/auth/password/forgot", "/auth/password/reset"] {
        problem(post(path, b"not json".to_vec()).await, 400).await;
        problem(post(path, b"{}".to_vec()).await, 400).await;
        let huge = format!("{{\"username\": \"{}\"}}", "a".repeat(20_000)).into_bytes();
        let status = post(path, huge).await.status().as_u16();
        assert!(status == 400 || status == 413, "{path}: {status}");
        let get = client().get(url(&gw, path)).send().await.unwrap();
        problem(get, 405).await;
    }
    let both = serde_json::json!({"username": "fritz", "email": "f@example.test"});
    problem(forgot(&gw, both).await, 400).await;
    // A NUL byte names no account: the usual 202.
    assert_eq!(forgot(&gw, serde_json::json!({"username": "fr\0itz"})).await.status(), 202);
    assert_eq!(forgot(&gw, serde_json::json!({"email": "\0"})).await.status(), 202);

    let token = {
        assert_eq!(forgot(&gw, serde_json::json!({"username": "fritz"})).await.status(), 202);
        nth_token(&file, "fritz", 1).await
    };
    for bad in ["", "prt_", "prt_\0", "rt_abc", &"prt_x".repeat(10_000)] {
        let status = reset(&gw, bad, NEW).await.status().as_u16();
        assert!(status == 400 || status == 413, "{status}");
    }
    // A 1 MB password never reaches the hasher; neither does a NUL-laden one get stored.
    let status = reset(&gw, &token, &"p".repeat(1 << 20)).await.status().as_u16();
    assert!(status == 400 || status == 413, "{status}");
    problem(reset(&gw, &token, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0").await, 400).await;
    // After all that the token still works.
    assert_eq!(reset(&gw, &token, NEW).await.status(), 204);
    gw.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_notifier_reset_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite(dir.path());
    let up = start_upstream().await;
    let gw = gateway(&identity_config(up, &db.url)).await;
    let off = problem(forgot(&gw, serde_json::json!({"username": "x"})).await, 403).await;
    assert!(off["type"].as_str().unwrap().ends_with("reset-disabled"), "{off}");
    problem(reset(&gw, "prt_x", NEW).await, 403).await;
    gw.shutdown();
}
