//! `[identity.sessions]`: browser sessions (a server-side session behind an
//! opaque cookie) and the CSRF protection that cookie-authenticated requests
//! need. Off unless the table is present with `enabled = true`.
//!
//! ```
//! use rampart_core::config::load;
//! let text = "version = 1\n[upstreams.default]\nurl = 'http://127.0.0.1:8000'\n\
//!     [identity]\nenabled = true\nissuer = 'https://api.example.com'\n\
//!     secret_key = '0123456789abcdef0123456789abcdef'\n\
//!     [identity.sessions]\nenabled = true\nallowed_origins = ['https://app.example.com']\n";
//! let policy = load(text, &[], &|_| Err("no files".into())).unwrap();
//! let sessions = policy.identity.unwrap().sessions.clone().unwrap();
//! assert_eq!(sessions.cookie_name, "__Host-rampart_session");
//! assert_eq!(sessions.idle_timeout.as_secs(), 30 * 60);
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::env::ConfigPath;
use crate::origin::OriginPattern;

/// `SameSite` of the session cookie.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    #[default]
    Lax,
    None,
}

impl SameSite {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Strict => "Strict",
            Self::Lax => "Lax",
            Self::None => "None",
        }
    }
}

/// Where sessions are kept.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SessionStoreKind {
    /// Redis when `[redis]` is configured, else the database.
    #[default]
    Auto,
    Database,
    Redis,
}

/// `[identity.sessions]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    pub enabled: bool,
    /// The session cookie. The `__Host-` prefix (the default) makes browsers
    /// refuse it unless it is `Secure`, has `Path=/` and no `Domain`.
    pub cookie_name: String,
    /// The `Secure` attribute. Browsers treat `http://localhost` as secure.
    pub secure: bool,
    pub same_site: SameSite,
    /// A session unused for this long ends.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A session ends this long after login, however active.
    #[serde(with = "humantime_serde")]
    pub absolute_timeout: Duration,
    /// How often an active session's last use is written (and its user's
    /// roles and state re-read): sliding renewal without a write per request.
    #[serde(with = "humantime_serde")]
    pub touch_interval: Duration,
    /// Sessions one user may hold; a login beyond it ends the oldest.
    pub max_per_user: u32,
    /// `auto` (Redis when configured), `database` or `redis`.
    pub store: SessionStoreKind,
    /// Origins, besides the gateway's own, whose pages may send
    /// cookie-authenticated unsafe requests (CORS pattern syntax).
    pub allowed_origins: Vec<String>,
    /// Header that carries the CSRF token.
    pub csrf_header: String,
    /// Form field that carries the CSRF token (urlencoded forms).
    pub csrf_field: String,
    /// Cookie that holds the CSRF token for scripts to read (not HttpOnly).
    pub csrf_cookie: String,
    /// Lifetime of a JWT exchanged for a session at `{prefix}/session/token`.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            cookie_name: "__Host-rampart_session".into(),
            secure: true,
            same_site: SameSite::Lax,
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_timeout: Duration::from_secs(12 * 3600),
            touch_interval: Duration::from_secs(60),
            max_per_user: 20,
            store: SessionStoreKind::Auto,
            allowed_origins: Vec::new(),
            csrf_header: "x-csrf-token".into(),
            csrf_field: "csrf_token".into(),
            csrf_cookie: "__Host-rampart_csrf".into(),
            token_ttl: Duration::from_secs(5 * 60),
        }
    }
}

/// `[identity.sessions]`, checked.
#[derive(Clone, Debug)]
pub struct SessionSettings {
    pub cookie_name: String,
    pub secure: bool,
    pub same_site: SameSite,
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    pub touch_interval: Duration,
    pub max_per_user: u32,
    pub store: SessionStoreKind,
    pub allowed_origins: Vec<OriginPattern>,
    pub csrf_header: http::HeaderName,
    pub csrf_field: String,
    pub csrf_cookie: String,
    pub token_ttl: Duration,
}

/// Whether `name` may be a cookie name (an RFC 6265 token).
fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

pub fn compile_sessions(
    cfg: &SessionsConfig,
    at: &ConfigPath,
    errs: &mut Vec<(ConfigPath, String)>,
) -> Option<SessionSettings> {
    if !cfg.enabled {
        return None;
    }
    let at = at.push_key("sessions");
    let before = errs.len();
    for (field, name) in [("cookie_name", &cfg.cookie_name), ("csrf_cookie", &cfg.csrf_cookie)] {
        if !is_cookie_name(name) {
            errs.push((at.push_key(field), "must be a cookie name: letters, digits and !#$%&'*+-.^_`|~".into()));
        } else if name.starts_with("__Host-") && !cfg.secure {
            errs.push((
                at.push_key("secure"),
                format!("must be true while {field} has the __Host- prefix (browsers drop such cookies otherwise)"),
            ));
        }
    }
    if cfg.cookie_name.eq_ignore_ascii_case(&cfg.csrf_cookie) {
        errs.push((at.push_key("csrf_cookie"), "must differ from cookie_name".into()));
    }
    if cfg.same_site == SameSite::None && !cfg.secure {
        errs.push((at.push_key("same_site"), "`None` requires secure = true".into()));
    }
    if cfg.idle_timeout < Duration::from_secs(60) {
        errs.push((at.push_key("idle_timeout"), "must be at least 1m".into()));
    }
    if cfg.absolute_timeout < cfg.idle_timeout || cfg.absolute_timeout > Duration::from_secs(90 * 86_400) {
        errs.push((at.push_key("absolute_timeout"), "must be at least idle_timeout and at most 90 days".into()));
    }
    // At most 2m: a raised token version is kept in memory at least that
    // long (see identity::revoke), and a touch checks it in the database.
    if cfg.touch_interval.is_zero()
        || cfg.touch_interval >= cfg.idle_timeout
        || cfg.touch_interval > Duration::from_secs(120)
    {
        errs.push((
            at.push_key("touch_interval"),
            "must be longer than zero, at most 2m and shorter than idle_timeout".into(),
        ));
    }
    if !(1..=1000).contains(&cfg.max_per_user) {
        errs.push((at.push_key("max_per_user"), "must be between 1 and 1000".into()));
    }
    let mut allowed_origins = Vec::new();
    for (i, o) in cfg.allowed_origins.iter().enumerate() {
        match OriginPattern::parse(o) {
            Ok(p) if o == "*" => {
                let _ = p;
                errs.push((
                    at.push_key("allowed_origins").push_index(i),
                    "`*` would let any site post with the user's cookie; name the origins".into(),
                ));
            }
            Ok(p) if p.covers_a_public_suffix() => errs.push((
                at.push_key("allowed_origins").push_index(i),
                format!(
                    "`{o}` matches every site under a public suffix (a top-level domain or a domain where anyone \
                     can register a site), which could then post with the user's cookie; name your own domain \
                     (`https://*.example.com`)"
                ),
            )),
            Ok(p) => allowed_origins.push(p),
            Err(e) => errs.push((at.push_key("allowed_origins").push_index(i), e.to_string())),
        }
    }
    let csrf_header = match http::HeaderName::from_bytes(cfg.csrf_header.to_ascii_lowercase().as_bytes()) {
        Ok(h) => Some(h),
        Err(_) => {
            errs.push((at.push_key("csrf_header"), "must be a header name".into()));
            None
        }
    };
    if cfg.csrf_field.is_empty()
        || cfg.csrf_field.len() > 64
        || !cfg.csrf_field.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        errs.push((at.push_key("csrf_field"), "must be 1 to 64 letters, digits, `_` or `-`".into()));
    }
    if cfg.token_ttl < Duration::from_secs(10) || cfg.token_ttl > Duration::from_secs(3600) {
        errs.push((at.push_key("token_ttl"), "must be between 10s and 1h".into()));
    }
    if errs.len() > before {
        return None;
    }
    Some(SessionSettings {
        cookie_name: cfg.cookie_name.clone(),
        secure: cfg.secure,
        same_site: cfg.same_site,
        idle_timeout: cfg.idle_timeout,
        absolute_timeout: cfg.absolute_timeout,
        touch_interval: cfg.touch_interval,
        max_per_user: cfg.max_per_user,
        store: cfg.store,
        allowed_origins,
        csrf_header: csrf_header?,
        csrf_field: cfg.csrf_field.clone(),
        csrf_cookie: cfg.csrf_cookie.clone(),
        token_ttl: cfg.token_ttl,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[track_caller]
    fn refused(edit: impl FnOnce(&mut SessionsConfig), field: &str) {
        let mut cfg = SessionsConfig { enabled: true, ..Default::default() };
        edit(&mut cfg);
        let mut errs = Vec::new();
        assert!(compile_sessions(&cfg, &ConfigPath::parse("identity"), &mut errs).is_none());
        assert!(errs.iter().any(|(p, _)| p.to_string().contains(field)), "{errs:?}");
    }

    #[test]
    fn defaults_compile_and_bad_values_name_their_field() {
        let mut errs = Vec::new();
        let cfg = SessionsConfig { enabled: true, ..Default::default() };
        let s = compile_sessions(&cfg, &ConfigPath::parse("identity"), &mut errs).unwrap();
        assert_eq!(s.csrf_header.as_str(), "x-csrf-token");
        refused(|c| c.secure = false, "secure");
        refused(|c| c.cookie_name = "bad name;".into(), "cookie_name");
        refused(|c| c.csrf_cookie = c.cookie_name.clone(), "csrf_cookie");
        refused(|c| c.idle_timeout = Duration::from_secs(5), "idle_timeout");
        refused(|c| c.absolute_timeout = Duration::from_secs(61), "absolute_timeout");
        refused(|c| c.touch_interval = Duration::from_secs(3600), "touch_interval");
        refused(|c| c.touch_interval = Duration::from_secs(180), "touch_interval");
        refused(|c| c.allowed_origins = vec!["*".into()], "allowed_origins");
        refused(|c| c.allowed_origins = vec!["null".into()], "allowed_origins");
        for wide in ["https://*.com", "https://*.co.uk", "https://*.github.io"] {
            refused(|c| c.allowed_origins = vec!["https://app.example.com".into(), wide.into()], "allowed_origins[1]");
        }
        let mut errs = Vec::new();
        let cfg = SessionsConfig {
            enabled: true,
            allowed_origins: vec!["https://*.example.co.uk".into(), "http://*.localhost:*".into()],
            ..Default::default()
        };
        assert!(compile_sessions(&cfg, &ConfigPath::parse("identity"), &mut errs).is_some(), "{errs:?}");
        refused(|c| c.csrf_header = "bad header".into(), "csrf_header");
        refused(|c| c.max_per_user = 0, "max_per_user");
        refused(
            |c| {
                c.cookie_name = "sid".into();
                c.csrf_cookie = "csrf".into();
                c.secure = false;
                c.same_site = SameSite::None;
            },
            "same_site",
        );
    }
}
