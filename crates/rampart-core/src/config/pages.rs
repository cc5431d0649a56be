//! `[identity.pages]`: the web pages Rampart serves itself (login, register,
//! password reset, the account page and the admin dashboard). Off unless
//! `enabled = true`; they need browser sessions (`[identity.sessions]`),
//! because every page acts through the session cookie and its CSRF token.
//!
//! ```
//! use rampart_core::config::load;
//! let text = "version = 1\n[upstreams.default]\nurl = 'http://127.0.0.1:8000'\n\
//!     [identity]\nenabled = true\nissuer = 'https://api.example.com'\n\
//!     secret_key = '0123456789abcdef0123456789abcdef'\n\
//!     [identity.sessions]\nenabled = true\n[identity.pages]\nenabled = true\n";
//! let policy = load(text, &[], &|_| Err("no files".into())).unwrap();
//! assert_eq!(policy.identity.unwrap().pages.as_ref().unwrap().prefix, "/ui");
//! ```

use serde::Deserialize;

use super::env::ConfigPath;

/// `[identity.pages]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PagesConfig {
    pub enabled: bool,
    /// Path prefix of the pages (`/ui/login`, `/ui/account`, …).
    pub prefix: String,
    /// The name shown in page titles and headings.
    pub title: String,
}

impl Default for PagesConfig {
    fn default() -> Self {
        Self { enabled: false, prefix: "/ui".into(), title: "Rampart".into() }
    }
}

/// `[identity.pages]`, checked.
#[derive(Clone, Debug)]
pub struct PagesSettings {
    pub prefix: String,
    pub title: String,
}

/// `None` when the pages are off. `identity_prefix` is `[identity] prefix`,
/// which the pages must not shadow.
pub fn compile_pages(
    cfg: &PagesConfig,
    identity_prefix: &str,
    sessions_on: bool,
    at: &ConfigPath,
    errs: &mut Vec<(ConfigPath, String)>,
) -> Option<PagesSettings> {
    if !cfg.enabled {
        return None;
    }
    let at = at.push_key("pages");
    let before = errs.len();
    let p = cfg.prefix.as_str();
    if !p.starts_with('/')
        || p.len() < 2
        || p.ends_with('/')
        || !p.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.'))
        || p.contains("//")
        || p.split('/').any(|s| s == "." || s == "..")
    {
        errs.push((at.push_key("prefix"), "must be a path like `/ui` (letters, digits, `-`, `_`, `.`)".into()));
    } else if p == identity_prefix
        || p.starts_with(&format!("{identity_prefix}/"))
        || identity_prefix.starts_with(&format!("{p}/"))
    {
        errs.push((at.push_key("prefix"), format!("must not overlap the identity prefix `{identity_prefix}`")));
    }
    if p.starts_with("/.well-known") {
        errs.push((at.push_key("prefix"), "must not be under /.well-known".into()));
    }
    if cfg.title.is_empty() || cfg.title.len() > 64 || cfg.title.chars().any(char::is_control) {
        errs.push((at.push_key("title"), "must be 1 to 64 printable characters".into()));
    }
    if !sessions_on {
        errs.push((
            at.push_key("enabled"),
            "the pages need browser sessions: add [identity.sessions] with enabled = true".into(),
        ));
    }
    if errs.len() > before {
        return None;
    }
    Some(PagesSettings { prefix: cfg.prefix.clone(), title: cfg.title.clone() })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[track_caller]
    fn check(prefix: &str, sessions: bool, expected: Option<&str>) {
        let cfg = PagesConfig { enabled: true, prefix: prefix.into(), ..Default::default() };
        let mut errs = Vec::new();
        let got = compile_pages(&cfg, "/auth", sessions, &ConfigPath::parse("identity"), &mut errs);
        match expected {
            None => assert!(got.is_some() && errs.is_empty(), "{prefix}: {errs:?}"),
            Some(part) => {
                assert!(got.is_none());
                assert!(errs.iter().any(|(_, m)| m.contains(part)), "{prefix}: {errs:?}");
            }
        }
    }

    #[test]
    fn prefixes_and_sessions() {
        check("/ui", true, None);
        check("/account-pages", true, None);
        check("/ui", false, Some("need browser sessions"));
        check("ui", true, Some("must be a path"));
        check("/ui/", true, Some("must be a path"));
        check("/", true, Some("must be a path"));
        check("/u i", true, Some("must be a path"));
        check("/a/../b", true, Some("must be a path"));
        check("/auth", true, Some("overlap"));
        check("/auth/ui", true, Some("overlap"));
        check("/.well-known/ui", true, Some("well-known"));
        let off = PagesConfig::default();
        assert!(compile_pages(&off, "/auth", false, &ConfigPath::parse("identity"), &mut Vec::new()).is_none());
    }
}
