//! TLS termination with rustls: TLS 1.2 and 1.3 only, HTTP/2 offered by ALPN, and
//! the certificate and key reloaded when their files change, without dropping a
//! connection. A bad new pair (unreadable, mismatched) is logged once and the
//! running certificate stays in place; the pair is tried again at each look
//! until it loads.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::proxy::client::read_certs;

/// Serves the current certificate to every handshake.
#[derive(Debug)]
pub struct ReloadingCert {
    current: ArcSwap<CertifiedKey>,
    cert_path: PathBuf,
    key_path: PathBuf,
    /// The stamp of the files last loaded. A failed load leaves it, so the
    /// pair is tried again at each look until it loads (the files may be
    /// fixed without changing their stamp, by a permission change say).
    seen: Mutex<Option<FileStamp>>,
    /// The stamp whose load last failed: the failure is logged once, not at
    /// every look.
    failed: Mutex<Option<FileStamp>>,
}

type FileStamp = [(Option<SystemTime>, u64); 2];

fn stamp(paths: [&PathBuf; 2]) -> FileStamp {
    paths.map(|p| match std::fs::metadata(p) {
        Ok(m) => (m.modified().ok(), m.len()),
        Err(_) => (None, 0),
    })
}

/// Reads and checks a PEM certificate chain and private key.
pub fn load_certified_key(cert: &str, key: &str) -> anyhow::Result<CertifiedKey> {
    let chain = read_certs(cert)?;
    let pem = std::fs::read(key).with_context(|| format!("cannot read {key}"))?;
    let der = rustls_pemfile::private_key(&mut pem.as_slice())
        .with_context(|| format!("{key} is not a PEM private key"))?
        .with_context(|| format!("{key} holds no private key"))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing =
        provider.key_provider.load_private_key(der).with_context(|| format!("{key}: unsupported private key"))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().with_context(|| format!("{key} does not belong to the certificate in {cert}"))?;
    Ok(ck)
}

impl ReloadingCert {
    pub fn new(cert: &str, key: &str) -> anyhow::Result<Arc<Self>> {
        let (cert_path, key_path) = (PathBuf::from(cert), PathBuf::from(key));
        // Stamped before reading: files replaced while they are read look
        // changed at the next look, and are read again.
        let seen = Mutex::new(Some(stamp([&cert_path, &key_path])));
        let ck = load_certified_key(cert, key)?;
        Ok(Arc::new(Self { current: ArcSwap::from_pointee(ck), cert_path, key_path, seen, failed: Mutex::new(None) }))
    }

    /// Reloads when either file changed since the last look. Returns whether a new
    /// certificate was installed.
    pub fn reload_if_changed(&self) -> bool {
        let now = stamp([&self.cert_path, &self.key_path]);
        if self.seen.lock().unwrap_or_else(|e| e.into_inner()).as_ref() == Some(&now) {
            return false;
        }
        let (cert, key) = (self.cert_path.to_string_lossy(), self.key_path.to_string_lossy());
        match load_certified_key(&cert, &key) {
            Ok(ck) => {
                self.current.store(Arc::new(ck));
                *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
                *self.failed.lock().unwrap_or_else(|e| e.into_inner()) = None;
                tracing::info!(cert = %cert, "TLS certificate reloaded");
                true
            }
            Err(e) => {
                let first = self.failed.lock().unwrap_or_else(|e| e.into_inner()).replace(now) != Some(now);
                if first {
                    tracing::error!(cert = %cert, error = %format!("{e:#}"), "TLS certificate reload failed; keeping the current one and trying again at each look");
                } else {
                    tracing::debug!(cert = %cert, error = %format!("{e:#}"), "TLS certificate reload failed again");
                }
                false
            }
        }
    }

    /// Checks the files every `interval` until the returned task is aborted.
    pub fn watch(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                this.reload_if_changed();
            }
        })
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// A TLS acceptor using `cert`, offering h2 (when enabled) and http/1.1.
pub fn acceptor(cert: Arc<ReloadingCert>, http2: bool) -> anyhow::Result<TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS setup")?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    cfg.alpn_protocols = if http2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn pair(cn: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        (p.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    /// Writes `text` to `path` with the modification time `at`.
    fn write_at(path: &std::path::Path, text: &str, at: SystemTime) {
        std::fs::write(path, text).unwrap();
        std::fs::File::options().write(true).open(path).unwrap().set_modified(at).unwrap();
    }

    /// A pair that failed to load is tried again, even when it is fixed
    /// without changing the files' stamp (same length, same time).
    #[test]
    fn a_failed_reload_is_retried_until_it_loads() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let (c1, k1) = pair("one");
        std::fs::write(&cert, &c1).unwrap();
        std::fs::write(&key, &k1).unwrap();
        let r = ReloadingCert::new(cert.to_str().unwrap(), key.to_str().unwrap()).unwrap();
        let first = r.current.load().cert[0].clone();

        let (c2, k2) = pair("two");
        let at = SystemTime::now() - Duration::from_secs(60);
        write_at(&cert, &"x".repeat(c2.len()), at);
        write_at(&key, &k2, at);
        assert!(!r.reload_if_changed(), "a bad certificate was loaded");
        assert!(!r.reload_if_changed());
        assert_eq!(r.current.load().cert[0], first);

        write_at(&cert, &c2, at);
        assert!(r.reload_if_changed(), "the fixed pair was not reloaded");
        assert_ne!(r.current.load().cert[0], first);
        assert!(!r.reload_if_changed());
    }
}
