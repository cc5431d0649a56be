//! Notifiers: how a password-reset token reaches its user. The gateway sends
//! no mail itself; it hands a [`Notification`] to a [`Notifier`]:
//!
//! - [`LogFileNotifier`] (`kind = "log"`) appends one JSON line per
//!   notification to a file created with mode 0600. For development only: the
//!   file holds live reset tokens, by necessity.
//! - [`WebhookNotifier`] (`kind = "webhook"`) POSTs the JSON to a URL (a
//!   mailer of yours), signed: `X-Rampart-Timestamp: <unix seconds>` and
//!   `X-Rampart-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
//!   The timestamp is inside the signature so that a captured request cannot be
//!   replayed later under a fresh timestamp; receivers should refuse old ones.
//!   One attempt, bounded by `timeout`; any 2xx is success.
//!
//! SMTP is not built in: put a small mailer behind the webhook.
//!
//! Any closure `Fn(Notification) -> impl Future<Output = Result<(), NotifyError>>`
//! is a notifier too, for embedding and tests. Errors never carry the token or
//! the link (which contains it), so they can be logged as they are.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use rampart::identity::notify::{Notification, Notifier, NotifyError};
//! use rampart_core::config::secret::Secret;
//!
//! let notifier = |n: Notification| async move {
//!     assert_eq!(n.to_json()["token"], "prt_x");
//!     Ok::<(), NotifyError>(())
//! };
//! let n = Notification::password_reset("u1", "alice", None, Secret::new("prt_x"), None, 1_700_000_000);
//! assert_eq!(format!("{n:?}").matches("prt_x").count(), 0, "Debug hides the token");
//! notifier.send(n).await.unwrap();
//! # });
//! ```

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{Request, Uri};
use http_body_util::Full;
use rampart_core::config::reset::NotifierSettings;
use rampart_core::config::secret::Secret;
use tokio::io::AsyncWriteExt as _;

use crate::observe::alerts::{error_chain, webhook_client, WebhookClient};

/// Header with the unix time (seconds) the webhook request was signed at.
pub const TIMESTAMP_HEADER: &str = "x-rampart-timestamp";
/// Header with `sha256=<hex>` of HMAC-SHA256(secret, `"<timestamp>.<body>"`).
pub const SIGNATURE_HEADER: &str = "x-rampart-signature";

/// One message for one user. `Debug` shows neither the token nor the link.
#[derive(Clone, Debug)]
pub struct Notification {
    /// What it is about; `"password_reset"` for now.
    pub kind: &'static str,
    pub user_id: String,
    pub username: String,
    pub email: Option<String>,
    pub token: Secret,
    /// The configured link with the token filled in.
    pub link: Option<Secret>,
    /// When the token stops working, unix seconds.
    pub expires_at: u64,
}

impl Notification {
    pub fn password_reset(
        user_id: impl Into<String>,
        username: impl Into<String>,
        email: Option<String>,
        token: Secret,
        link: Option<Secret>,
        expires_at: u64,
    ) -> Self {
        Self {
            kind: "password_reset",
            user_id: user_id.into(),
            username: username.into(),
            email,
            token,
            link,
            expires_at,
        }
    }

    /// The JSON document notifiers deliver (it holds the token).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": self.kind,
            "user_id": self.user_id,
            "username": self.username,
            "email": self.email,
            "token": self.token.expose(),
            "link": self.link.as_ref().map(Secret::expose),
            "expires_at": self.expires_at,
        })
    }
}

/// Why a notification was not delivered. Never holds the token.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotifyError(pub String);

/// Delivers notifications.
pub trait Notifier: Send + Sync + 'static {
    fn send(&self, notification: Notification) -> BoxFuture<'_, Result<(), NotifyError>>;
}

impl<F, Fut> Notifier for F
where
    F: Fn(Notification) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), NotifyError>> + Send + 'static,
{
    fn send(&self, notification: Notification) -> BoxFuture<'_, Result<(), NotifyError>> {
        Box::pin(self(notification))
    }
}

/// Builds the configured notifier. The log file is opened (and created) here,
/// so that a path that cannot be written fails at start-up, not at the first reset.
pub async fn from_settings(settings: &NotifierSettings) -> anyhow::Result<Arc<dyn Notifier>> {
    Ok(match settings {
        NotifierSettings::Log { path } => {
            let notifier = LogFileNotifier::new(path.clone());
            let file = notifier.open().await;
            // A file that existed before keeps its mode on open: narrow it too.
            #[cfg(unix)]
            let file = match file {
                Ok(f) => {
                    use std::os::unix::fs::PermissionsExt as _;
                    f.set_permissions(std::fs::Permissions::from_mode(0o600)).await.map(|()| f)
                }
                Err(e) => Err(e),
            };
            file.map_err(|e| anyhow::anyhow!("identity.notifier.path ({}): {e}", path.display()))?;
            tracing::warn!(
                path = %path.display(),
                "password-reset tokens are written to a file (notifier kind = \"log\"): for development only"
            );
            Arc::new(notifier)
        }
        NotifierSettings::Webhook { url, secret, timeout } => {
            let notifier =
                WebhookNotifier::new(url, secret, *timeout).map_err(|e| anyhow::anyhow!("identity.notifier: {e}"))?;
            tracing::info!(webhook = %notifier.host, "password-reset notifications go to a webhook");
            Arc::new(notifier)
        }
    })
}

/// Appends each notification as one JSON line to a file (mode 0600).
#[derive(Debug)]
pub struct LogFileNotifier {
    path: PathBuf,
    /// One writer at a time, so that lines never interleave.
    lock: tokio::sync::Mutex<()>,
}

impl LogFileNotifier {
    pub fn new(path: PathBuf) -> Self {
        Self { path, lock: tokio::sync::Mutex::new(()) }
    }

    async fn open(&self) -> std::io::Result<tokio::fs::File> {
        let mut options = tokio::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        options.mode(0o600);
        options.open(&self.path).await
    }

    async fn append(&self, line: Vec<u8>) -> Result<(), NotifyError> {
        let _one_writer = self.lock.lock().await;
        let fail = |e: std::io::Error| NotifyError(format!("{}: {e}", self.path.display()));
        let mut file = self.open().await.map_err(fail)?;
        file.write_all(&line).await.map_err(fail)?;
        file.flush().await.map_err(fail)
    }
}

impl Notifier for LogFileNotifier {
    fn send(&self, notification: Notification) -> BoxFuture<'_, Result<(), NotifyError>> {
        let mut line = notification.to_json().to_string().into_bytes();
        line.push(b'\n');
        Box::pin(self.append(line))
    }
}

/// POSTs each notification as signed JSON.
pub struct WebhookNotifier {
    client: WebhookClient,
    uri: Uri,
    /// For logs, instead of the URL (which may carry a token).
    host: String,
    key: ring::hmac::Key,
    timeout: Duration,
}

impl std::fmt::Debug for WebhookNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookNotifier").field("host", &self.host).finish_non_exhaustive()
    }
}

impl WebhookNotifier {
    pub fn new(url: &Secret, secret: &Secret, timeout: Duration) -> Result<Self, String> {
        // The parse error is not shown: it could quote the URL.
        let uri: Uri = url.expose().parse().map_err(|_| "url is not a valid URL")?;
        let host = uri.host().ok_or("url has no host")?.to_string();
        let client = webhook_client(timeout)?;
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.expose().as_bytes());
        Ok(Self { client, uri, host, key, timeout })
    }

    /// `sha256=<hex>` for `body` sent at `timestamp`.
    pub fn signature(&self, timestamp: u64, body: &[u8]) -> String {
        signature(&self.key, timestamp, body)
    }

    async fn post(&self, body: Bytes) -> Result<(), NotifyError> {
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let request = Request::post(self.uri.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("rampart/", env!("CARGO_PKG_VERSION")))
            .header(TIMESTAMP_HEADER, timestamp)
            .header(SIGNATURE_HEADER, self.signature(timestamp, &body))
            .body(Full::new(body))
            .map_err(|e| NotifyError(format!("cannot build the request: {e}")))?;
        let host = &self.host;
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Err(_) => Err(NotifyError(format!("webhook {host}: no response within {:?}", self.timeout))),
            Ok(Err(e)) => Err(NotifyError(format!("webhook {host}: {}", error_chain(&e)))),
            Ok(Ok(r)) if r.status().is_success() => Ok(()),
            Ok(Ok(r)) => Err(NotifyError(format!("webhook {host}: status {}", r.status().as_u16()))),
        }
    }
}

/// `sha256=<hex HMAC-SHA256(key, "<timestamp>.<body>")>`.
pub fn signature(key: &ring::hmac::Key, timestamp: u64, body: &[u8]) -> String {
    let mut ctx = ring::hmac::Context::with_key(key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("sha256={}", hex::encode(ctx.sign().as_ref()))
}

impl Notifier for WebhookNotifier {
    fn send(&self, notification: Notification) -> BoxFuture<'_, Result<(), NotifyError>> {
        Box::pin(self.post(Bytes::from(notification.to_json().to_string())))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn sample() -> Notification {
        Notification::password_reset(
            "u1",
            "alice",
            Some("a@example.com".into()),
            Secret::new("prt_secret"),
            Some(Secret::new("https://app.example/r?token=prt_secret")),
            42,
        )
    }

    #[test]
    fn debug_hides_the_token_and_link() {
        let shown = format!("{:?}", sample());
        assert!(!shown.contains("prt_secret"), "{shown}");
        assert_eq!(sample().to_json()["link"], "https://app.example/r?token=prt_secret");
    }

    #[test]
    fn the_signature_covers_timestamp_and_body() {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"k");
        let a = signature(&key, 1, b"{}");
        assert!(a.starts_with("sha256=") && a.len() == 7 + 64);
        assert_ne!(a, signature(&key, 2, b"{}"));
        assert_ne!(a, signature(&key, 1, b"{ }"));
    }

    #[tokio::test]
    async fn the_log_file_is_private_and_appended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.jsonl");
        let notifier = LogFileNotifier::new(path.clone());
        notifier.send(sample()).await.unwrap();
        notifier.send(sample()).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!((first["kind"].as_str(), first["expires_at"].as_u64()), (Some("password_reset"), Some(42)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[tokio::test]
    async fn an_unreachable_webhook_is_an_error_without_the_token() {
        let url = Secret::new(format!("http://127.0.0.1:{}/hook?key=urlsecret", free_port()));
        let notifier = WebhookNotifier::new(&url, &Secret::new("k"), Duration::from_secs(2)).unwrap();
        let err = notifier.send(sample()).await.unwrap_err().to_string();
        assert!(!err.contains("prt_secret") && !err.contains("urlsecret"), "{err}");
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }
}
