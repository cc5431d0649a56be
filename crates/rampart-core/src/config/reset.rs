//! `[identity.reset]` and `[identity.notifier]`: password reset by a
//! single-use, expiring token that a pluggable notifier delivers (a JSON-lines
//! file for development, or a signed webhook that a mailer behind it turns
//! into an e-mail). Reset is on when a notifier is configured, unless
//! `enabled = false`; asking for it without a notifier is an error.
//!
//! ```
//! use rampart_core::config::load;
//! let text = "version = 1\n[upstreams.default]\nurl = 'http://127.0.0.1:8000'\n\
//!     [identity]\nenabled = true\nissuer = 'https://api.example.com'\n\
//!     secret_key = '0123456789abcdef0123456789abcdef'\n\
//!     [identity.notifier]\nkind = 'webhook'\nurl = 'https://mailer.internal/reset'\n\
//!     secret = 'fedcba9876543210fedcba9876543210'\n";
//! let policy = load(text, &[], &|_| Err("no files".into())).unwrap();
//! let reset = policy.identity.unwrap().reset.clone().unwrap();
//! assert_eq!(reset.token_ttl.as_secs(), 30 * 60);
//! assert_eq!(reset.max_requests, 3);
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::env::ConfigPath;
use super::secret::Secret;

/// Shortest webhook signing `secret`, in bytes.
pub const MIN_WEBHOOK_SECRET_BYTES: usize = 32;
/// What a reset `link` must contain: it is replaced by the token.
pub const TOKEN_PLACEHOLDER: &str = "{token}";

/// `[identity.reset]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResetConfig {
    /// `None`: on exactly when `[identity.notifier]` is set.
    pub enabled: Option<bool>,
    /// How long a reset token stays usable (1m..24h).
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// A URL with `{token}` in it, e.g. `https://app.example.com/reset?token={token}`;
    /// the notification then carries the filled-in link as well as the token.
    pub link: Option<String>,
    /// Reset requests per account within `request_window` that produce a
    /// token; more are answered alike but send nothing (no mail-bombing).
    /// Counted by the limiter, so in Redis when configured.
    pub max_requests: u64,
    #[serde(with = "humantime_serde")]
    pub request_window: Duration,
}

impl Default for ResetConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            token_ttl: Duration::from_secs(30 * 60),
            link: None,
            max_requests: 3,
            request_window: Duration::from_secs(3600),
        }
    }
}

/// Which notifier delivers reset tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifierKind {
    /// Appends JSON lines to a file (development: the token is in the file).
    Log,
    /// POSTs signed JSON to a URL.
    Webhook,
}

/// `[identity.notifier]`. One flat table so that each misplaced field can be
/// named (`path` is for `log`, `url`/`secret`/`timeout` for `webhook`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifierConfig {
    pub kind: NotifierKind,
    /// `log`: the JSON-lines file, created with mode 0600 and appended to.
    pub path: Option<PathBuf>,
    /// `webhook`: where to POST (a secret: it may carry a token; `url_file` works).
    #[serde(default)]
    pub url: Secret,
    /// `webhook`: the HMAC-SHA256 key that signs each body (`secret_file` works).
    #[serde(default)]
    pub secret: Secret,
    /// `webhook`: the whole request, connection included (default 5s).
    #[serde(default, with = "humantime_serde::option")]
    pub timeout: Option<Duration>,
}

/// `[identity.reset]` with its notifier, checked.
#[derive(Clone, Debug)]
pub struct ResetSettings {
    pub token_ttl: Duration,
    pub link: Option<String>,
    pub max_requests: u64,
    pub request_window: Duration,
    pub notifier: NotifierSettings,
}

/// A checked notifier.
#[derive(Clone, Debug)]
pub enum NotifierSettings {
    Log { path: PathBuf },
    Webhook { url: Secret, secret: Secret, timeout: Duration },
}

impl ResetSettings {
    /// The link for `token`, when a `link` template is configured.
    pub fn link_for(&self, token: &str) -> Option<String> {
        self.link.as_ref().map(|l| l.replace(TOKEN_PLACEHOLDER, token))
    }
}

/// Checks `[identity.reset]` and `[identity.notifier]` (at `identity`);
/// `None` when reset is off or an error was pushed.
pub(super) fn compile_reset(
    reset: &ResetConfig,
    notifier: Option<&NotifierConfig>,
    at: &ConfigPath,
    errs: &mut Vec<(ConfigPath, String)>,
) -> Option<ResetSettings> {
    let at_reset = at.push_key("reset");
    let at_notifier = at.push_key("notifier");
    let enabled = reset.enabled.unwrap_or(notifier.is_some());
    if !enabled {
        return None;
    }
    let Some(notifier) = notifier else {
        errs.push((at_reset.push_key("enabled"), "password reset needs an [identity.notifier] to send tokens".into()));
        return None;
    };
    let before = errs.len();
    if reset.token_ttl < Duration::from_secs(60) || reset.token_ttl > Duration::from_secs(86_400) {
        errs.push((at_reset.push_key("token_ttl"), "must be between 1m and 24h".into()));
    }
    if let Some(link) = &reset.link {
        let lower = link.to_ascii_lowercase();
        if !(lower.starts_with("https://") || lower.starts_with("http://")) {
            errs.push((at_reset.push_key("link"), "must be an http:// or https:// URL".into()));
        } else if link.matches(TOKEN_PLACEHOLDER).count() != 1 {
            errs.push((at_reset.push_key("link"), format!("must contain `{TOKEN_PLACEHOLDER}` exactly once")));
        } else if link.chars().any(char::is_whitespace) {
            errs.push((at_reset.push_key("link"), "must not contain whitespace".into()));
        }
    }
    if reset.max_requests == 0 || reset.max_requests > 100 {
        errs.push((at_reset.push_key("max_requests"), "must be between 1 and 100".into()));
    }
    if reset.request_window < Duration::from_secs(60) || reset.request_window > Duration::from_secs(7 * 86_400) {
        errs.push((at_reset.push_key("request_window"), "must be between 1m and 7d".into()));
    }
    let notifier = compile_notifier(notifier, &at_notifier, errs);
    if errs.len() > before {
        return None;
    }
    Some(ResetSettings {
        token_ttl: reset.token_ttl,
        link: reset.link.clone(),
        max_requests: reset.max_requests,
        request_window: reset.request_window,
        notifier: notifier?,
    })
}

fn compile_notifier(
    cfg: &NotifierConfig,
    at: &ConfigPath,
    errs: &mut Vec<(ConfigPath, String)>,
) -> Option<NotifierSettings> {
    let before = errs.len();
    let mut not_for = |field: &str, set: bool| {
        if set {
            errs.push((at.push_key(field), format!("does not apply to kind = \"{}\"", kind_name(cfg.kind))));
        }
    };
    match cfg.kind {
        NotifierKind::Log => {
            not_for("url", !cfg.url.is_empty());
            not_for("secret", !cfg.secret.is_empty());
            not_for("timeout", cfg.timeout.is_some());
            match &cfg.path {
                Some(p) if !p.as_os_str().is_empty() => {}
                _ => errs.push((at.push_key("path"), "the JSON-lines file to append notifications to".into())),
            }
            (errs.len() == before).then(|| NotifierSettings::Log { path: cfg.path.clone().unwrap_or_default() })
        }
        NotifierKind::Webhook => {
            not_for("path", cfg.path.is_some());
            // The URL may carry a token: the message does not quote it.
            let url = cfg.url.expose();
            let lower = url.to_ascii_lowercase();
            if url.is_empty() {
                errs.push((at.push_key("url"), "where to POST notifications (or set url_file)".into()));
            } else if !(lower.starts_with("https://") || lower.starts_with("http://"))
                || !url.parse::<http::Uri>().is_ok_and(|u| u.host().is_some())
            {
                errs.push((at.push_key("url"), "must be an http:// or https:// URL with a host".into()));
            }
            if cfg.secret.expose().len() < MIN_WEBHOOK_SECRET_BYTES {
                errs.push((
                    at.push_key("secret"),
                    format!(
                        "must be at least {MIN_WEBHOOK_SECRET_BYTES} bytes: it signs every notification \
                         (set secret_file to a file of random bytes)"
                    ),
                ));
            }
            let timeout = cfg.timeout.unwrap_or(Duration::from_secs(5));
            if timeout < Duration::from_millis(100) || timeout > Duration::from_secs(60) {
                errs.push((at.push_key("timeout"), "must be between 100ms and 60s".into()));
            }
            (errs.len() == before).then(|| NotifierSettings::Webhook {
                url: cfg.url.clone(),
                secret: cfg.secret.clone(),
                timeout,
            })
        }
    }
}

fn kind_name(kind: NotifierKind) -> &'static str {
    match kind {
        NotifierKind::Log => "log",
        NotifierKind::Webhook => "webhook",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::super::load;
    use super::*;

    const BASE: &str = "version = 1\n[upstreams.default]\nurl = 'http://127.0.0.1:8000'\n\
        [identity]\nenabled = true\nissuer = 'https://api.example.com'\n\
        secret_key = '0123456789abcdef0123456789abcdef'\n";
    const HOOK: &str = "[identity.notifier]\nkind = 'webhook'\nurl = 'https://mailer.internal/reset'\n\
        secret = 'fedcba9876543210fedcba9876543210'\n";

    fn files(path: &str) -> Result<String, String> {
        match path {
            "/run/secrets/hook" => Ok("fedcba9876543210fedcba9876543210-from-a-file\n".into()),
            _ => Err("no such file".into()),
        }
    }

    fn settings(extra: &str) -> Option<ResetSettings> {
        let policy = load(&format!("{BASE}{extra}"), &[], &files).unwrap_or_else(|e| panic!("{e}"));
        policy.identity.unwrap().reset.clone()
    }

    #[track_caller]
    fn check_err(extra: &str, expected: &[&str]) {
        let err = load(&format!("{BASE}{extra}"), &[], &files).expect_err("config should be refused").to_string();
        for e in expected {
            assert!(err.contains(e), "expected {e:?} in:\n{err}");
        }
    }

    #[test]
    fn off_without_a_notifier_on_with_one() {
        assert!(settings("").is_none());
        assert!(settings(&format!("[identity.reset]\nenabled = false\n{HOOK}")).is_none());
        let on = settings(HOOK).unwrap();
        assert_eq!((on.token_ttl, on.max_requests), (Duration::from_secs(1800), 3));
        let NotifierSettings::Webhook { timeout, secret, .. } = on.notifier else { panic!("not a webhook") };
        assert_eq!(timeout, Duration::from_secs(5));
        assert_eq!(secret.expose(), "fedcba9876543210fedcba9876543210");
        check_err("[identity.reset]\nenabled = true\n", &["identity.reset.enabled", "[identity.notifier]"]);
    }

    #[test]
    fn the_log_notifier_needs_a_path_and_nothing_else() {
        let log = settings("[identity.notifier]\nkind = 'log'\npath = '/tmp/n.jsonl'\n").unwrap();
        assert!(matches!(log.notifier, NotifierSettings::Log { ref path } if path.ends_with("n.jsonl")));
        check_err("[identity.notifier]\nkind = 'log'\n", &["identity.notifier.path"]);
        check_err(
            "[identity.notifier]\nkind = 'log'\npath = 'n'\nurl = 'https://x.example'\n",
            &["identity.notifier.url", "does not apply to kind = \"log\""],
        );
        check_err("[identity.notifier]\nkind = 'smtp'\n", &["identity.notifier.kind"]);
        check_err("[identity.notifier]\nkind = 'log'\npath = 'n'\nhost = 'x'\n", &["host"]);
    }

    #[test]
    fn the_webhook_needs_a_url_and_a_long_secret() {
        check_err("[identity.notifier]\nkind = 'webhook'\n", &["identity.notifier.url", "identity.notifier.secret"]);
        check_err(
            "[identity.notifier]\nkind = 'webhook'\nurl = 'ftp://x.example/'\nsecret = 'short'\n",
            &["identity.notifier.url (line 10): must be an http", "at least 32 bytes"],
        );
        check_err(&format!("{HOOK}timeout = '1h'\n"), &["identity.notifier.timeout"]);
        check_err(&format!("{HOOK}path = '/tmp/x'\n"), &["identity.notifier.path"]);
        // The secret may come from a file, like every other secret.
        let text = "[identity.notifier]\nkind = 'webhook'\nurl = 'http://127.0.0.1:9/h'\n\
                    secret_file = '/run/secrets/hook'\n";
        let NotifierSettings::Webhook { secret, .. } = settings(text).unwrap().notifier else { panic!() };
        assert!(secret.expose().ends_with("-from-a-file"));
    }

    #[test]
    fn reset_fields_are_bounded() {
        check_err(&format!("[identity.reset]\ntoken_ttl = '30s'\n{HOOK}"), &["identity.reset.token_ttl"]);
        check_err(&format!("[identity.reset]\ntoken_ttl = '2d'\n{HOOK}"), &["identity.reset.token_ttl"]);
        check_err(&format!("[identity.reset]\nmax_requests = 0\n{HOOK}"), &["identity.reset.max_requests"]);
        check_err(&format!("[identity.reset]\nrequest_window = '1s'\n{HOOK}"), &["identity.reset.request_window"]);
        check_err(&format!("[identity.reset]\nlink = 'https://app.example/reset'\n{HOOK}"), &["{token}"]);
        check_err(&format!("[identity.reset]\nlink = 'javascript:{{token}}'\n{HOOK}"), &["identity.reset.link"]);
        check_err(&format!("[identity.reset]\ntoken_tl = '1h'\n{HOOK}"), &["token_ttl"]);
        let s = settings(&format!("[identity.reset]\nlink = 'https://app.example/r?token={{token}}'\n{HOOK}")).unwrap();
        assert_eq!(s.link_for("prt_abc").as_deref(), Some("https://app.example/r?token=prt_abc"));
    }
}
