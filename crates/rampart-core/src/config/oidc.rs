//! `[identity.oidc.<name>]`: logins through external OpenID Connect providers,
//! any number of them at once, each under its own name.
//!
//! ```toml
//! [identity]
//! public_url = "https://api.example.com"   # default: `issuer`
//!
//! [identity.oidc.google]
//! issuer = "https://accounts.google.com"  # discovery: <issuer>/.well-known/openid-configuration
//! client_id = "1234.apps.googleusercontent.com"
//! client_secret_file = "/run/secrets/google_client_secret"
//! scopes = ["openid", "email", "profile"] # the default
//! link_by_verified_email = false          # the default
//! create_users = true                     # default: [identity] registration
//! display_name = "Google"                 # default: the name
//! ```
//!
//! The redirect URI to register at the provider is
//! `<public_url><prefix>/oidc/<name>/callback`, e.g.
//! `https://api.example.com/auth/oidc/google/callback`. `public_url` is where
//! browsers reach this gateway, which behind a TLS-terminating proxy is not
//! the address it listens on.
//!
//! ```
//! use rampart_core::config::load;
//! let text = "version = 1\n[upstreams.default]\nurl = 'http://127.0.0.1:8000'\n\
//!     [identity]\nenabled = true\nissuer = 'https://api.example.com'\n\
//!     secret_key = '0123456789abcdef0123456789abcdef'\n\
//!     [identity.oidc.corp]\nissuer = 'https://login.example.com/'\nclient_id = 'rampart'\n\
//!     client_secret = 's3cret'\n";
//! let policy = load(text, &[], &|_| Err("no files".into())).unwrap();
//! let identity = policy.identity.unwrap();
//! let corp = &identity.oidc[0];
//! assert_eq!(corp.redirect_uri, "https://api.example.com/auth/oidc/corp/callback");
//! assert_eq!(corp.discovery_url, "https://login.example.com/.well-known/openid-configuration");
//! assert_eq!(corp.scopes, ["openid", "email", "profile"]);
//! assert!(!corp.link_by_verified_email && !corp.create_users);
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

use super::env::ConfigPath;
use super::secret::Secret;
use crate::token::is_scope_token;

/// Names a provider may not have: they are paths of their own under `{prefix}/oidc`.
const RESERVED_NAMES: [&str; 2] = ["links", "providers"];

/// `[identity.oidc.<name>]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcProviderConfig {
    /// The provider's issuer identifier, exactly as its tokens carry it in `iss`.
    pub issuer: String,
    pub client_id: String,
    /// Use `client_secret_file`.
    pub client_secret: Secret,
    /// Asked for at the provider; must contain `openid`.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Link a first login to the local account with the same e-mail address,
    /// when the provider says the address is verified (`email_verified`).
    #[serde(default)]
    pub link_by_verified_email: bool,
    /// Create a local account on a first login that links to none (default:
    /// `[identity] registration`).
    #[serde(default)]
    pub create_users: Option<bool>,
    /// Shown on login pages (default: the provider's name).
    #[serde(default)]
    pub display_name: Option<String>,
    /// How the client authenticates at the token endpoint:
    /// `client_secret_basic` or `client_secret_post` (default: basic, unless
    /// the provider's discovery document offers only post).
    #[serde(default)]
    pub token_endpoint_auth_method: Option<String>,
}

fn default_scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(String::from).to_vec()
}

/// How the client authenticates at the token endpoint (RFC 6749 §2.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuthMethod {
    /// HTTP Basic with the form-encoded id and secret.
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Post,
}

/// One provider, checked.
#[derive(Clone, Debug)]
pub struct OidcProviderSettings {
    /// The `<name>` of `[identity.oidc.<name>]`: 1–32 of `[a-z0-9_-]`.
    pub name: String,
    pub display_name: String,
    /// As configured: compared exactly with the discovery document's `issuer`
    /// and the ID tokens' `iss`.
    pub issuer: String,
    /// `<issuer without a trailing slash>/.well-known/openid-configuration`.
    pub discovery_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// Always contains `openid`.
    pub scopes: Vec<String>,
    pub link_by_verified_email: bool,
    pub create_users: bool,
    /// `None`: chosen from the discovery document.
    pub client_auth: Option<ClientAuthMethod>,
    /// `<public_url><prefix>/oidc/<name>/callback`.
    pub redirect_uri: String,
}

/// Whether `url` is `https://…`, or `http://` to a loopback host (tests,
/// development). Returns the reason when not.
///
/// ```
/// use rampart_core::config::oidc::check_provider_url;
/// assert!(check_provider_url("https://accounts.google.com").is_ok());
/// assert!(check_provider_url("http://127.0.0.1:8080").is_ok());
/// assert!(check_provider_url("http://[::1]:8080/x").is_ok());
/// assert!(check_provider_url("http://localhost/").is_ok());
/// assert!(check_provider_url("http://login.example.com").is_err());
/// assert!(check_provider_url("http://127.0.0.1.example.com").is_err());
/// assert!(check_provider_url("https://a@b.example").is_err());
/// ```
pub fn check_provider_url(url: &str) -> Result<(), &'static str> {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, rest)) if s == "https" || s == "http" => (s, rest),
        _ => return Err("must be an https:// URL (http:// only to a loopback address)"),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must be an absolute URL with a host and no user name or spaces");
    }
    if rest.contains('#') {
        return Err("must not have a fragment");
    }
    if scheme == "http" {
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
        };
        let loopback =
            host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Err("must use https (http:// only to a loopback address such as 127.0.0.1)");
        }
    }
    Ok(())
}

fn is_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The scheme, host and optional path of `[identity] public_url` (default:
/// `issuer`), without a trailing slash, or why it is not usable.
pub(super) fn compile_public_url(public_url: Option<&str>, issuer: &str) -> Result<String, &'static str> {
    let url = public_url.unwrap_or(issuer);
    check_provider_url(url)?;
    if url.contains('?') {
        return Err("must not have a query");
    }
    Ok(url.trim_end_matches('/').to_owned())
}

pub(super) fn compile_oidc(
    providers: &BTreeMap<String, OidcProviderConfig>,
    public_url: &str,
    prefix: &str,
    registration: bool,
    at: &ConfigPath,
    errs: &mut Vec<(ConfigPath, String)>,
) -> Vec<OidcProviderSettings> {
    let at = at.push_key("oidc");
    let mut out = Vec::new();
    for (name, cfg) in providers {
        let here = at.push_key(name);
        let before = errs.len();
        if !is_name(name) {
            errs.push((here.clone(), "a provider name is 1 to 32 of a-z, 0-9, `_` and `-`".into()));
        } else if RESERVED_NAMES.contains(&name.as_str()) {
            errs.push((here.clone(), format!("`{name}` is reserved (it is a path under {prefix}/oidc)")));
        }
        if let Err(why) = check_provider_url(&cfg.issuer) {
            errs.push((here.push_key("issuer"), why.into()));
        } else if cfg.issuer.contains('?') {
            errs.push((here.push_key("issuer"), "must not have a query".into()));
        }
        if cfg.client_id.is_empty() || cfg.client_id.len() > 256 || cfg.client_id.chars().any(char::is_control) {
            errs.push((here.push_key("client_id"), "must be 1 to 256 printable characters".into()));
        }
        if cfg.client_secret.is_empty() {
            errs.push((
                here.push_key("client_secret"),
                "the client secret the provider issued (set client_secret_file)".into(),
            ));
        }
        if !cfg.scopes.iter().any(|s| s == "openid") {
            errs.push((here.push_key("scopes"), "must contain `openid`".into()));
        }
        if let Some(bad) = cfg.scopes.iter().find(|s| !is_scope_token(s)) {
            errs.push((here.push_key("scopes"), format!("`{bad}` is not a scope token")));
        }
        let display_name = cfg.display_name.clone().unwrap_or_else(|| name.clone());
        if display_name.trim().is_empty() || display_name.len() > 64 || display_name.chars().any(char::is_control) {
            errs.push((here.push_key("display_name"), "must be 1 to 64 printable characters".into()));
        }
        let client_auth = match cfg.token_endpoint_auth_method.as_deref() {
            None => None,
            Some("client_secret_basic") => Some(ClientAuthMethod::Basic),
            Some("client_secret_post") => Some(ClientAuthMethod::Post),
            Some(_) => {
                errs.push((
                    here.push_key("token_endpoint_auth_method"),
                    "must be `client_secret_basic` or `client_secret_post`".into(),
                ));
                None
            }
        };
        if errs.len() > before {
            continue;
        }
        let mut scopes: Vec<String> = Vec::new();
        for s in &cfg.scopes {
            if !scopes.contains(s) {
                scopes.push(s.clone());
            }
        }
        out.push(OidcProviderSettings {
            name: name.clone(),
            display_name,
            issuer: cfg.issuer.clone(),
            discovery_url: format!("{}/.well-known/openid-configuration", cfg.issuer.trim_end_matches('/')),
            client_id: cfg.client_id.clone(),
            client_secret: cfg.client_secret.clone(),
            scopes,
            link_by_verified_email: cfg.link_by_verified_email,
            create_users: cfg.create_users.unwrap_or(registration),
            client_auth,
            redirect_uri: format!("{public_url}{prefix}/oidc/{name}/callback"),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn provider(issuer: &str) -> OidcProviderConfig {
        OidcProviderConfig {
            issuer: issuer.into(),
            client_id: "rampart".into(),
            client_secret: Secret::new("s"),
            scopes: default_scopes(),
            link_by_verified_email: false,
            create_users: None,
            display_name: None,
            token_endpoint_auth_method: None,
        }
    }

    #[track_caller]
    fn check(name: &str, cfg: OidcProviderConfig, expected_field: Option<&str>) {
        let mut errs = Vec::new();
        let map = BTreeMap::from([(name.to_owned(), cfg)]);
        let out = compile_oidc(&map, "https://gw.example", "/auth", true, &ConfigPath::parse("identity"), &mut errs);
        match expected_field {
            None => assert!(out.len() == 1 && errs.is_empty(), "{errs:?}"),
            Some(field) => {
                assert!(out.is_empty());
                assert!(errs.iter().any(|(p, _)| p.to_string().ends_with(field)), "{errs:?}");
            }
        }
    }

    #[test]
    fn providers_are_checked() {
        check("google", provider("https://accounts.google.com"), None);
        check("local", provider("http://127.0.0.1:9000"), None);
        check("corp", provider("http://login.corp.example"), Some("corp.issuer"));
        check("corp", provider("ftp://login.corp.example"), Some("corp.issuer"));
        check("corp", provider("https://login.corp.example?x=1"), Some("corp.issuer"));
        check("Corp", provider("https://login.corp.example"), Some("oidc.Corp"));
        check("links", provider("https://login.corp.example"), Some("oidc.links"));
        check("a/b", provider("https://login.corp.example"), Some("oidc.a/b"));
        let mut no_openid = provider("https://x.example");
        no_openid.scopes = vec!["email".into()];
        check("x", no_openid, Some("x.scopes"));
        let mut bad_scope = provider("https://x.example");
        bad_scope.scopes = vec!["openid".into(), "two words".into()];
        check("x", bad_scope, Some("x.scopes"));
        let mut no_secret = provider("https://x.example");
        no_secret.client_secret = Secret::default();
        check("x", no_secret, Some("x.client_secret"));
        let mut no_id = provider("https://x.example");
        no_id.client_id = String::new();
        check("x", no_id, Some("x.client_id"));
        let mut method = provider("https://x.example");
        method.token_endpoint_auth_method = Some("private_key_jwt".into());
        check("x", method, Some("x.token_endpoint_auth_method"));
    }

    #[test]
    fn settings_follow_the_config() {
        let mut cfg = provider("https://login.example.com/");
        cfg.scopes = vec!["openid".into(), "email".into(), "openid".into()];
        cfg.token_endpoint_auth_method = Some("client_secret_post".into());
        let map = BTreeMap::from([("corp".to_owned(), cfg)]);
        let mut errs = Vec::new();
        let out =
            compile_oidc(&map, "https://gw.example/base", "/auth", false, &ConfigPath::parse("identity"), &mut errs);
        let corp = &out[0];
        assert_eq!(corp.scopes, ["openid", "email"]);
        assert_eq!(corp.client_auth, Some(ClientAuthMethod::Post));
        assert_eq!(corp.redirect_uri, "https://gw.example/base/auth/oidc/corp/callback");
        assert_eq!(corp.discovery_url, "https://login.example.com/.well-known/openid-configuration");
        assert_eq!(corp.issuer, "https://login.example.com/");
        assert!(!corp.create_users);
        assert_eq!(corp.display_name, "corp");
        assert!(!format!("{corp:?}").contains("\"s\""), "the secret is redacted");
    }

    #[test]
    fn the_public_url_defaults_to_the_issuer() {
        assert_eq!(compile_public_url(None, "https://api.example.com/").unwrap(), "https://api.example.com");
        assert_eq!(compile_public_url(Some("https://gw.example/x/"), "i").unwrap(), "https://gw.example/x");
        assert!(compile_public_url(Some("http://gw.example"), "i").is_err());
        assert!(compile_public_url(Some("https://gw.example/?a"), "i").is_err());
        assert!(compile_public_url(None, "api").is_err());
    }
}
