//! `[identity.webauthn]`: passkeys (WebAuthn) for the identity API, as a
//! second factor or for passwordless login. Off unless the table is present.
//!
//! The relying party is what a browser binds a passkey to: `rp_id` is a
//! domain, and `rp_origin` the origin of the web page that runs the
//! ceremonies, whose host must be `rp_id` or a subdomain of it. A passkey made
//! for one `rp_id` cannot be used for another, so `rp_id` should not change.
//!
//! ```
//! use rampart_core::config::load;
//! let text = "version = 1\n[upstreams.default]\nurl = 'http://127.0.0.1:8000'\n\
//!     [identity]\nenabled = true\nissuer = 'https://api.example.com'\n\
//!     secret_key = '0123456789abcdef0123456789abcdef'\n\
//!     [identity.webauthn]\nrp_id = 'example.com'\nrp_origin = 'https://app.example.com'\n";
//! let policy = load(text, &[], &|_| Err("no files".into())).unwrap();
//! let webauthn = policy.identity.unwrap().webauthn.clone().unwrap();
//! assert_eq!(webauthn.rp_name, "example.com");
//! assert_eq!(webauthn.challenge_ttl.as_secs(), 300);
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::env::ConfigPath;

/// `[identity.webauthn]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebauthnConfig {
    /// The relying party id: a domain such as `example.com`.
    pub rp_id: String,
    /// The origin of the pages that run the ceremonies, e.g.
    /// `https://app.example.com`. `http` only for `localhost`.
    pub rp_origin: String,
    /// Shown by authenticators; defaults to `rp_id`.
    #[serde(default)]
    pub rp_name: Option<String>,
    /// How long a started ceremony may take (30s..30m).
    #[serde(default = "default_challenge_ttl", with = "humantime_serde")]
    pub challenge_ttl: Duration,
    /// The most passkeys one account may hold (1..=100).
    #[serde(default = "default_max_passkeys")]
    pub max_passkeys: u32,
}

fn default_challenge_ttl() -> Duration {
    Duration::from_secs(300)
}

fn default_max_passkeys() -> u32 {
    10
}

/// `[identity.webauthn]`, checked.
#[derive(Clone, Debug)]
pub struct WebauthnSettings {
    pub rp_id: String,
    /// Scheme, host and port, without a trailing slash.
    pub rp_origin: String,
    pub rp_name: String,
    pub challenge_ttl: Duration,
    pub max_passkeys: u32,
}

/// The host of an `http(s)://host[:port]` origin, or why it is not one.
fn origin_host(origin: &str) -> Result<&str, &'static str> {
    let rest = if let Some(rest) = origin.strip_prefix("https://") {
        rest
    } else if let Some(rest) = origin.strip_prefix("http://") {
        rest
    } else {
        return Err("must start with https:// (http:// only for localhost)");
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) || rest.chars().any(|c| c.is_whitespace()) {
        return Err("must be an origin: scheme, host and optional port, no path");
    }
    let host = match rest.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        Some(_) => return Err("has a malformed port"),
        None => rest,
    };
    if origin.starts_with("http://") && host != "localhost" {
        return Err("must use https (http:// only for localhost)");
    }
    Ok(host)
}

/// Whether `id` is a plausible lower-case DNS name.
fn is_domain(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 253
        && id.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

pub(super) fn compile_webauthn(
    cfg: &WebauthnConfig,
    at: &ConfigPath,
    errs: &mut Vec<(ConfigPath, String)>,
) -> Option<WebauthnSettings> {
    let at = at.push_key("webauthn");
    let before = errs.len();
    if !is_domain(&cfg.rp_id) {
        errs.push((at.push_key("rp_id"), "must be a lower-case domain such as `example.com`".into()));
    }
    match origin_host(&cfg.rp_origin) {
        Err(why) => errs.push((at.push_key("rp_origin"), why.into())),
        Ok(host) if host != cfg.rp_id && !host.ends_with(&format!(".{}", cfg.rp_id)) => errs.push((
            at.push_key("rp_origin"),
            format!("its host `{host}` must be rp_id `{}` or a subdomain of it", cfg.rp_id),
        )),
        Ok(_) => {}
    }
    let rp_name = cfg.rp_name.clone().unwrap_or_else(|| cfg.rp_id.clone());
    if rp_name.trim().is_empty() || rp_name.len() > 64 || rp_name.chars().any(char::is_control) {
        errs.push((at.push_key("rp_name"), "must be 1 to 64 printable characters".into()));
    }
    if cfg.challenge_ttl < Duration::from_secs(30) || cfg.challenge_ttl > Duration::from_secs(30 * 60) {
        errs.push((at.push_key("challenge_ttl"), "must be between 30s and 30m".into()));
    }
    if !(1..=100).contains(&cfg.max_passkeys) {
        errs.push((at.push_key("max_passkeys"), "must be between 1 and 100".into()));
    }
    if errs.len() > before {
        return None;
    }
    Some(WebauthnSettings {
        rp_id: cfg.rp_id.clone(),
        rp_origin: cfg.rp_origin.trim_end_matches('/').to_owned(),
        rp_name,
        challenge_ttl: cfg.challenge_ttl,
        max_passkeys: cfg.max_passkeys,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[track_caller]
    fn check(rp_id: &str, rp_origin: &str, expected_field: Option<&str>) {
        let cfg = WebauthnConfig {
            rp_id: rp_id.into(),
            rp_origin: rp_origin.into(),
            rp_name: None,
            challenge_ttl: default_challenge_ttl(),
            max_passkeys: 10,
        };
        let mut errs = Vec::new();
        let out = compile_webauthn(&cfg, &ConfigPath::parse("identity"), &mut errs);
        match expected_field {
            None => assert!(out.is_some() && errs.is_empty(), "{errs:?}"),
            Some(field) => {
                assert!(out.is_none());
                assert!(errs.iter().any(|(p, _)| p.to_string().ends_with(field)), "{errs:?}");
            }
        }
    }

    #[test]
    fn relying_party_is_checked() {
        check("example.com", "https://example.com", None);
        check("example.com", "https://app.example.com/", None);
        check("example.com", "https://app.example.com:8443", None);
        check("localhost", "http://localhost:3000", None);
        check("example.com", "http://example.com", Some("rp_origin"));
        check("example.com", "https://evil-example.com", Some("rp_origin"));
        check("example.com", "https://example.com/login", Some("rp_origin"));
        check("example.com", "example.com", Some("rp_origin"));
        check("example.com", "https://example.com:", Some("rp_origin"));
        check("Example.com", "https://example.com", Some("rp_id"));
        check("", "https://example.com", Some("rp_id"));
        check("exa mple.com", "https://example.com", Some("rp_id"));
    }
}
