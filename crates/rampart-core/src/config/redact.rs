//! The running config as an operator may see it: the file with its
//! environment overrides applied, every secret replaced. Served by the admin
//! API (`GET {prefix}/admin/config`).
//!
//! Secrets are the keys of [`SECRET_KEYS`] wherever they appear. URL-shaped
//! ones (`url`, `database`) keep their scheme, host and port, which operators
//! need to see, and lose user info, path, query and fragment (where passwords
//! and webhook tokens live); the others become `"***"`. A `KEY_file` setting
//! is a path, not a secret, and is shown. Secret files are never read here.
//!
//! The values of header rewrites (`request_headers.set`,
//! `response_headers.set`) are redacted too, whatever the header: they are
//! where a route puts the credential its upstream wants (`authorization`,
//! `x-api-key`). Their names are shown.

use toml::{Table, Value};

use super::env::{apply_env, SECRET_KEYS};
use super::ConfigErrors;

/// What a redacted secret reads as.
pub const REDACTED: &str = "***";

/// `text` with `env` overrides applied and every secret redacted. Fails only
/// where loading would (unparsable text, a bad override).
pub fn redacted_config(text: &str, env: &[(String, String)]) -> Result<Table, ConfigErrors> {
    let mut table: Table = text.parse().map_err(|e: toml::de::Error| {
        ConfigErrors::from(super::ConfigError {
            path: None,
            line: None,
            env_var: None,
            message: e.message().trim().to_string(),
        })
    })?;
    apply_env(&mut table, env).map_err(|(var, why)| {
        ConfigErrors::from(super::ConfigError { path: None, line: None, env_var: Some(var), message: why })
    })?;
    redact_table(&mut table);
    Ok(table)
}

fn redact_table(table: &mut Table) {
    for (key, value) in table.iter_mut() {
        if SECRET_KEYS.contains(&key.as_str()) {
            redact_value(key, value);
        } else if key == "urls" {
            // An upstream's several targets: each shown as `url` would be.
            if let Value::Array(items) = value {
                for item in items.iter_mut() {
                    redact_value("url", item);
                }
            }
        } else if matches!(key.as_str(), "request_headers" | "response_headers") {
            if let Some(Value::Table(set)) = value.as_table_mut().and_then(|t| t.get_mut("set")) {
                for (_, v) in set.iter_mut() {
                    *v = Value::String(REDACTED.into());
                }
            }
        } else {
            redact_nested(value);
        }
    }
}

fn redact_nested(value: &mut Value) {
    match value {
        Value::Table(t) => redact_table(t),
        Value::Array(items) => items.iter_mut().for_each(redact_nested),
        _ => {}
    }
}

fn redact_value(key: &str, value: &mut Value) {
    match value {
        Value::String(s) if matches!(key, "url" | "database") => *s = redact_url(s),
        Value::String(s) if s.is_empty() => {}
        // A table under a secret's name (e.g. `[reset] webhook = {...}` is not
        // one, but `secret = { ... }` would be): redact whatever it holds.
        Value::Table(t) => {
            for (_, v) in t.iter_mut() {
                *v = Value::String(REDACTED.into());
            }
        }
        _ => *value = Value::String(REDACTED.into()),
    }
}

/// `scheme://host:port`, with `***@` where user info was and `/***` where a
/// path, query or fragment was. Text that is not a URL is kept unless it
/// holds an `@` (a DSN with a password), which makes it `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return if url.contains('@') { REDACTED.into() } else { url.to_owned() };
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((_, host)) => (true, host),
        None => (false, authority),
    };
    let mut out = format!("{scheme}://");
    if userinfo {
        out.push_str(REDACTED);
        out.push('@');
    }
    out.push_str(host);
    if !tail.is_empty() && tail != "/" {
        out.push('/');
        out.push_str(REDACTED);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const SENTINEL: &str = "SENTINEL";

    #[test]
    fn no_secret_survives() {
        let text = r#"
version = 1
admin_token = "SENTINEL-admin"
[storage]
database = "postgres://rampart:SENTINEL-db@db:5432/rampart?sslmode=SENTINEL"
[redis]
url = "redis://:SENTINEL-redis@cache:6379/0"
[upstreams.default]
url = "http://10.0.0.1:8080/SENTINEL-path?k=SENTINEL"
[upstreams.pool]
urls = ["http://10.0.0.2:8080/SENTINEL-a", "http://10.0.0.3:8080/base?token=SENTINEL-b"]
[alerts]
webhook_url = "https://hooks.example.com/services/SENTINEL"
[identity]
secret_key = "SENTINEL-sk"
signing_key_file = "/run/secrets/signing.pem"
hs256_secret = "SENTINEL-hs"
[identity.reset.webhook]
url = "https://mail.example.com/send/SENTINEL"
secret = "SENTINEL-hook"
[identity.oidc.google]
client_secret = "SENTINEL-oidc"
[[auth.issuers]]
secret = "SENTINEL-issuer"
public_key = "SENTINEL-pk"
[defaults.request_headers]
set = { x-api-key = "SENTINEL-default-key" }
[[routes]]
path = "/ai/**"
request_headers = { set = { authorization = "Bearer SENTINEL-upstream" }, remove = ["cookie"] }
response_headers = { set = { x-served-by = "SENTINEL-name" } }
"#;
        let env = vec![("RAMPART_REDIS__URL".to_owned(), "redis://:SENTINEL-env@cache:6379/0".to_owned())];
        let table = redacted_config(text, &env).expect("parses");
        let shown = toml::to_string(&table).expect("renders");
        assert!(!shown.contains(SENTINEL), "{shown}");
        assert!(shown.contains("postgres://***@db:5432/***"), "{shown}");
        assert!(shown.contains("redis://***@cache:6379/***"), "{shown}");
        assert!(shown.contains("http://10.0.0.1:8080/***"), "{shown}");
        assert!(shown.contains("http://10.0.0.3:8080/***"), "{shown}");
        assert!(shown.contains("/run/secrets/signing.pem"), "the path of a secret file is shown: {shown}");
        assert!(shown.contains("authorization = \"***\"") && shown.contains("x-api-key = \"***\""), "{shown}");
        assert!(shown.contains("remove = [\"cookie\"]"), "what is not a value set is shown: {shown}");
    }

    #[test]
    fn urls_keep_what_operators_need() {
        assert_eq!(redact_url("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(redact_url("http://127.0.0.1:8080/"), "http://127.0.0.1:8080");
        assert_eq!(redact_url("sqlite://rampart.db"), "sqlite://rampart.db");
        assert_eq!(redact_url("sqlite::memory:"), "sqlite::memory:");
        assert_eq!(redact_url("user:pw@host"), "***");
        assert_eq!(redact_url("redis://a@b@c:1"), "redis://***@c:1");
        assert_eq!(redact_url("://"), "://");
    }

    #[test]
    fn bad_text_is_an_error_not_a_panic() {
        assert!(redacted_config("version = ", &[]).is_err());
        assert!(redacted_config("[[[", &[]).is_err());
    }
}
