//! An issuer's live keys: the configured ones plus, when the issuer has a
//! `jwks_url`, the ones its JWKS document publishes.
//!
//! The document is fetched when the layer is built, every `jwks_refresh`, and
//! when a token names a `kid` not yet known — at most once per
//! `jwks_min_interval`, and one fetch at a time, so a flood of made-up `kid`s
//! costs the issuer at most one request per interval. A failed fetch keeps the
//! keys it had. The document is read up to [`MAX_JWKS_BYTES`] within
//! [`FETCH_TIMEOUT`]; keys of unsupported types are skipped.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rampart_core::config::auth::{IssuerSettings, JwksSource};
use rampart_core::token::{KeySet, Verifier, VerifyingKey};

pub const MAX_JWKS_BYTES: usize = 1 << 20;
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

type FetchClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// One issuer's verifier, replaced whole when its JWKS changes.
pub struct IssuerKeys {
    pub issuer: String,
    configured: Arc<Verifier>,
    current: ArcSwap<Verifier>,
    source: Option<(JwksSource, FetchClient)>,
    /// When the last fetch started; refreshes wait for `min_interval` after it.
    last_fetch: Mutex<Option<Instant>>,
    fetching: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for IssuerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerKeys").field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

impl IssuerKeys {
    /// The issuer's keys; with a JWKS URL, also starts the periodic refresh
    /// (which ends when the returned value is dropped, e.g. after a reload).
    pub fn start(settings: &IssuerSettings) -> Arc<Self> {
        let source = settings.jwks.clone().and_then(|s| match fetch_client() {
            Ok(c) => Some((s, c)),
            Err(e) => {
                tracing::error!(issuer = %settings.issuer, error = %e, "cannot build the JWKS client");
                None
            }
        });
        let keys = Arc::new(Self {
            issuer: settings.issuer.clone(),
            configured: settings.verifier.clone(),
            current: ArcSwap::new(settings.verifier.clone()),
            source,
            last_fetch: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        });
        if let Some((source, _)) = &keys.source {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(refresh_loop(Arc::downgrade(&keys), source.refresh));
            }
        }
        keys
    }

    pub fn verifier(&self) -> Arc<Verifier> {
        self.current.load_full()
    }

    /// The address of the current verifier, to compare with a cached
    /// token's (no reference count taken).
    pub fn verifier_ptr(&self) -> *const Verifier {
        Arc::as_ptr(&self.current.load())
    }

    pub fn has_jwks(&self) -> bool {
        self.source.is_some()
    }

    /// Fetches the JWKS if the last fetch is at least `min_interval` old (or
    /// waits for a fetch in progress). True when the keys may have changed.
    pub async fn refresh_for_unknown_kid(&self) -> bool {
        let Some((source, _)) = &self.source else { return false };
        let _one_at_a_time = self.fetching.lock().await;
        let recent = self
            .last_fetch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t.elapsed() < source.min_interval);
        if recent {
            // A fetch just ran (perhaps for a request like this one): use its keys.
            return true;
        }
        self.fetch().await
    }

    /// Fetches and installs the JWKS now. True on success.
    async fn fetch(&self) -> bool {
        let Some((source, client)) = &self.source else { return false };
        *self.last_fetch.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        match tokio::time::timeout(FETCH_TIMEOUT, get_jwks(client, &source.url)).await {
            Ok(Ok(jwks)) => {
                let (keys, skipped) = merge(&self.configured.keys, &jwks);
                // Replaced only when the keys changed: a new verifier makes
                // every cached token of this issuer be checked again.
                if self.current.load().keys.same_keys(&keys) {
                    return true;
                }
                let mut verifier = (*self.configured).clone();
                verifier.keys = keys;
                tracing::info!(issuer = %self.issuer, keys = verifier.keys.len(), skipped, "JWKS loaded");
                self.current.store(Arc::new(verifier));
                true
            }
            Ok(Err(e)) => {
                tracing::warn!(issuer = %self.issuer, url = %source.url, error = %e, "JWKS fetch failed; keeping the keys we had");
                false
            }
            Err(_) => {
                tracing::warn!(issuer = %self.issuer, url = %source.url, "JWKS fetch timed out; keeping the keys we had");
                false
            }
        }
    }
}

async fn refresh_loop(keys: Weak<IssuerKeys>, every: Duration) {
    loop {
        {
            let Some(keys) = keys.upgrade() else { return };
            let _one_at_a_time = keys.fetching.lock().await;
            keys.fetch().await;
        }
        tokio::time::sleep(every).await;
    }
}

/// The configured keys plus every supported key of `jwks` (configured keys
/// win a `kid` clash). Returns the set and how many JWKS keys were skipped.
fn merge(configured: &KeySet, jwks: &serde_json::Value) -> (KeySet, usize) {
    let mut set = configured.clone();
    let mut skipped = 0;
    for jwk in jwks.get("keys").and_then(|k| k.as_array()).into_iter().flatten() {
        // Encryption keys are not for us; keys without `use` are for anything.
        if jwk.get("use").and_then(|u| u.as_str()).is_some_and(|u| u != "sig") {
            skipped += 1;
            continue;
        }
        match VerifyingKey::from_jwk(jwk) {
            Ok(k) if set.get(k.kid()).is_none() => {
                if set.insert(k).is_err() {
                    skipped += 1;
                }
            }
            _ => skipped += 1,
        }
    }
    (set, skipped)
}

fn fetch_client() -> anyhow::Result<FetchClient> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(FETCH_TIMEOUT));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

async fn get_jwks(client: &FetchClient, url: &str) -> anyhow::Result<serde_json::Value> {
    let req = http::Request::get(url).header(http::header::ACCEPT, "application/json").body(Empty::new())?;
    let resp = client.request(req).await?;
    if !resp.status().is_success() {
        anyhow::bail!("the issuer answered {}", resp.status());
    }
    let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the JWKS: {e}"))?
        .to_bytes();
    Ok(crate::untrusted_json::from_slice(&body)?)
}
