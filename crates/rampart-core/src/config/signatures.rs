//! `[identity.signatures]`: HMAC-signed requests from service clients (see
//! [`crate::signature`] for the wire format).
//!
//! ```toml
//! [identity.signatures]
//! enabled = true                  # accept X-Rampart-Signature on auth routes
//! window = "5m"                   # how far a timestamp may be from the gateway's clock
//! nonce_cache_entries = 500000    # nonces remembered in process (about 50 bytes each)
//! ```
//!
//! ```
//! let text = "version = 1\n[upstreams.default]\nurl = 'http://127.0.0.1:8000'\n\
//!     [identity]\nenabled = true\nissuer = 'https://api.example.com'\n\
//!     secret_key = '0123456789abcdef0123456789abcdef'\n\
//!     [identity.signatures]\nwindow = '90s'\n";
//! let policy = rampart_core::config::load(text, &[], &|_| Err("no files".into())).unwrap();
//! let signatures = policy.identity.unwrap().signatures.clone();
//! assert!(signatures.enabled);
//! assert_eq!(signatures.window.as_secs(), 90);
//! assert_eq!(signatures.nonce_cache_entries, 500_000);
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::env::ConfigPath;

/// The widest timestamp window accepted.
pub const MAX_WINDOW: Duration = Duration::from_secs(3600);
/// The most nonces one instance may be told to remember.
pub const MAX_NONCE_CACHE_ENTRIES: usize = 50_000_000;

/// `[identity.signatures]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignaturesConfig {
    /// Accept signed requests at all.
    pub enabled: bool,
    /// A request's timestamp may be at most this far from the gateway's clock,
    /// either way; its nonce is remembered for as long.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Nonces remembered in process (the only store without Redis, the
    /// fallback with it). When full of unexpired nonces, signed requests are
    /// refused with 503 rather than a nonce forgotten.
    pub nonce_cache_entries: usize,
}

impl Default for SignaturesConfig {
    fn default() -> Self {
        Self { enabled: true, window: Duration::from_secs(300), nonce_cache_entries: 500_000 }
    }
}

/// `[identity.signatures]`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureSettings {
    pub enabled: bool,
    pub window: Duration,
    pub nonce_cache_entries: usize,
}

impl Default for SignatureSettings {
    fn default() -> Self {
        let c = SignaturesConfig::default();
        Self { enabled: c.enabled, window: c.window, nonce_cache_entries: c.nonce_cache_entries }
    }
}

pub(super) fn compile_signatures(
    cfg: &SignaturesConfig,
    at: &ConfigPath,
    errs: &mut Vec<(ConfigPath, String)>,
) -> Option<SignatureSettings> {
    let before = errs.len();
    if cfg.window < Duration::from_secs(1) || cfg.window > MAX_WINDOW || cfg.window.subsec_nanos() != 0 {
        errs.push((at.push_key("window"), "must be whole seconds between 1s and 1h".into()));
    }
    if cfg.nonce_cache_entries == 0 || cfg.nonce_cache_entries > MAX_NONCE_CACHE_ENTRIES {
        errs.push((at.push_key("nonce_cache_entries"), format!("must be between 1 and {MAX_NONCE_CACHE_ENTRIES}")));
    }
    (errs.len() == before).then_some(SignatureSettings {
        enabled: cfg.enabled,
        window: cfg.window,
        nonce_cache_entries: cfg.nonce_cache_entries,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bad_values_are_named() {
        let mut errs = Vec::new();
        let at = ConfigPath::parse("identity.signatures");
        assert_eq!(
            compile_signatures(&SignaturesConfig::default(), &at, &mut errs),
            Some(SignatureSettings::default())
        );
        for (window, entries) in [
            (Duration::ZERO, 0),
            (Duration::from_secs(7200), MAX_NONCE_CACHE_ENTRIES + 1),
            (Duration::from_millis(1500), 0),
        ] {
            let mut errs = Vec::new();
            let bad = SignaturesConfig { window, nonce_cache_entries: entries, ..Default::default() };
            assert!(compile_signatures(&bad, &at, &mut errs).is_none());
            let fields: Vec<String> = errs.iter().map(|(p, _)| p.to_string()).collect();
            assert_eq!(fields, ["identity.signatures.window", "identity.signatures.nonce_cache_entries"]);
        }
    }
}
