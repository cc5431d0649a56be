//! Configuration: the `rampart.toml` model, environment overrides, validation, and
//! compilation into the runtime [`Policy`].
//!
//! Loading is one pipeline, used both by `rampart serve` and `rampart check-config`:
//!
//! 1. parse the TOML (syntax errors carry a line);
//! 2. check `version` and migrate older files to the current shape;
//! 3. apply `RAMPART_SECTION__KEY` environment overrides;
//! 4. resolve `*_file` secrets;
//! 5. deserialize into [`model::ConfigFile`], refusing unknown keys with a
//!    did-you-mean suggestion;
//! 6. validate and compile into a [`Policy`] (route table, header values, CORS).
//!
//! Every error names the field, and the line in the file where it has one (or the
//! environment variable that set it). All validation errors are reported at once.
//!
//! ```
//! use rampart_core::config::load;
//! let text = "version = 1\n[upstreams.default]\nurl = 'http://127.0.0.1:8000'\n[server]\nlistn = ':80'\n";
//! let err = load(text, &[], &|_| Err("no files".into())).unwrap_err();
//! let shown = err.to_string();
//! assert!(shown.contains("line 5") && shown.contains("did you mean `listen`"), "{shown}");
//! ```

pub mod api_keys;
pub mod auth;
pub mod authorize;
pub mod compile;
pub mod env;
pub mod identity;
pub mod limits;
pub mod model;
pub mod oidc;
pub mod pages;
pub mod redact;
pub mod reset;
pub mod secret;
pub mod sessions;
pub mod signatures;
pub mod webauthn;

use std::fmt;

pub use compile::{
    AccessLists, ContentTypePolicy, HeaderRewrite, LimitSettings, Policy, RouteMatching, RoutePolicy, SecurityHeaders,
    ServerSettings, Target, UpstreamSettings,
};
pub use env::{ConfigPath, PathSegment};
pub use model::{ConfigFile, LogFormat, CURRENT_VERSION};

/// One problem found in a config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The field, e.g. `routes[2].cors.allow_origins[0]`; `None` for syntax errors.
    pub path: Option<ConfigPath>,
    /// 1-based line in the file, where the field appears there.
    pub line: Option<usize>,
    /// The environment variable that set the field, when one did.
    pub env_var: Option<String>,
    pub message: String,
}

impl ConfigError {
    pub fn at(path: ConfigPath, message: impl Into<String>) -> Self {
        Self { path: Some(path), line: None, env_var: None, message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) if !p.0.is_empty() => write!(f, "{p}")?,
            _ => f.write_str("config")?,
        }
        match (&self.env_var, self.line) {
            (Some(var), _) => write!(f, " (set by {var})")?,
            (None, Some(line)) => write!(f, " (line {line})")?,
            (None, None) => {}
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a config, in file order where known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        Self(vec![e])
    }
}

/// Runs the whole pipeline on a file's text. `env` is the process environment
/// (only `RAMPART_…__…` variables are used); `read_secret` reads `*_file` paths.
pub fn load(
    text: &str,
    env: &[(String, String)],
    read_secret: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Policy, ConfigErrors> {
    let file = parse_file(text, env, read_secret)?;
    compile::compile(&file).map_err(|errs| locate(text, env_paths(text, env), errs))
}

/// Steps 1–5: text to the deserialized file model.
pub fn parse_file(
    text: &str,
    env: &[(String, String)],
    read_secret: &dyn Fn(&str) -> Result<String, String>,
) -> Result<ConfigFile, ConfigErrors> {
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError {
        path: None,
        line: e.span().map(|s| line_of(text, s.start)),
        env_var: None,
        message: e.message().trim().to_string(),
    })?;

    let version = match table.get("version") {
        None => {
            return Err(ConfigError::at(
                ConfigPath::parse("version"),
                format!("missing; add `version = {CURRENT_VERSION}` at the top of the file"),
            )
            .into())
        }
        Some(toml::Value::Integer(v)) => *v,
        Some(_) => {
            return Err(
                locate_one(text, &[], ConfigError::at(ConfigPath::parse("version"), "must be an integer")).into()
            )
        }
    };
    table = migrate(table, version)
        .map_err(|msg| locate_one(text, &[], ConfigError::at(ConfigPath::parse("version"), msg)))?;

    let applied = env::apply_env(&mut table, env).map_err(|(var, why)| ConfigError {
        path: None,
        line: None,
        env_var: Some(var),
        message: why,
    })?;
    env::resolve_secret_files(&mut table, read_secret)
        .map_err(|(path, msg)| locate_one(text, &applied, ConfigError::at(path, msg)))?;

    serde_path_to_error::deserialize::<_, ConfigFile>(toml::Value::Table(table)).map_err(|e| {
        let path = serde_path(e.path());
        let mut message = explain_serde_error(&e.inner().to_string());
        if holds_secret(e.path()) {
            message = without_quoted_values(&message);
        }
        locate_one(text, &applied, ConfigError::at(path, message)).into()
    })
}

/// Brings a file written for an older `version` up to [`CURRENT_VERSION`]. Each
/// release that changes the shape adds a step here, so old files keep working.
fn migrate(table: toml::Table, version: i64) -> Result<toml::Table, String> {
    match version {
        1 => Ok(table),
        v if v > i64::from(CURRENT_VERSION) => {
            Err(format!("{v} is newer than this Rampart understands (up to {CURRENT_VERSION}); upgrade Rampart"))
        }
        v => Err(format!("{v} is not a config version (the first is 1)")),
    }
}

fn serde_path(path: &serde_path_to_error::Path) -> ConfigPath {
    use serde_path_to_error::Segment;
    ConfigPath(
        path.iter()
            .filter_map(|seg| match seg {
                Segment::Map { key } | Segment::Enum { variant: key } => Some(PathSegment::Key(key.clone())),
                Segment::Seq { index } => Some(PathSegment::Index(*index)),
                Segment::Unknown => None,
            })
            .collect(),
    )
}

/// Turns serde's "unknown field `x`, expected one of `a`, `b`" into a message with
/// a did-you-mean suggestion.
/// Whether the value at `path` may be a secret: a key of
/// [`env::SECRET_KEYS`], or a header rewrite's value (`…headers.set.NAME`).
fn holds_secret(path: &serde_path_to_error::Path) -> bool {
    let keys: Vec<&str> = path
        .iter()
        .filter_map(|s| match s {
            serde_path_to_error::Segment::Map { key } => Some(key.as_str()),
            _ => None,
        })
        .collect();
    keys.iter().any(|k| env::SECRET_KEYS.contains(k)) || keys.contains(&"set")
}

/// `message` with every `quoted` value left out: serde quotes the value it
/// could not take ("invalid type: integer `80418273645`, expected a
/// string"), which for a secret must not reach a log.
fn without_quoted_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some((before, after)) = rest.split_once('`') {
        out.push_str(before.strip_suffix(' ').unwrap_or(before));
        match after.split_once('`') {
            Some((_, tail)) => rest = tail,
            None => {
                rest = "";
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

fn explain_serde_error(message: &str) -> String {
    let message = message.trim();
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_string();
    };
    let Some((unknown, expected)) = rest.split_once('`') else {
        return message.to_string();
    };
    let candidates: Vec<&str> = expected.split('`').enumerate().filter(|(i, _)| i % 2 == 1).map(|(_, s)| s).collect();
    match did_you_mean(unknown, &candidates) {
        Some(best) => format!("unknown key `{unknown}`; did you mean `{best}`?"),
        None if candidates.is_empty() => format!("unknown key `{unknown}`"),
        None => format!(
            "unknown key `{unknown}`; expected one of {}",
            candidates.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// The closest candidate to `unknown`, if any is close enough to be a likely typo.
pub fn did_you_mean<'a>(unknown: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let unknown_lc = unknown.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(&unknown_lc, c), *c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// The paths the variables in `env` set in `text`, each with its variable,
/// as [`env::apply_env`] resolves them (a name meets the file's own spelling:
/// `RAMPART_UPSTREAMS__BACKEND__URL` sets `upstreams.Backend.url`).
fn env_paths(text: &str, env: &[(String, String)]) -> Vec<(ConfigPath, String)> {
    // The same steps as `parse_file`: the file migrated, then the variables.
    let migrated = text.parse::<toml::Table>().ok().and_then(|doc| {
        let version = doc.get("version").and_then(toml::Value::as_integer)?;
        migrate(doc, version).ok()
    });
    let resolved = migrated.and_then(|mut doc| env::apply_env(&mut doc, env).ok());
    resolved
        .unwrap_or_else(|| env::env_overrides(env).into_iter().map(|(path, name, _)| (path, name.to_owned())).collect())
}

fn locate(text: &str, applied: Vec<(ConfigPath, String)>, errs: ConfigErrors) -> ConfigErrors {
    let mut out: Vec<ConfigError> = errs.0.into_iter().map(|e| locate_one(text, &applied, e)).collect();
    out.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
    ConfigErrors(out)
}

/// Fills in the line (or the environment variable) of an error's field.
fn locate_one(text: &str, applied: &[(ConfigPath, String)], mut err: ConfigError) -> ConfigError {
    let Some(path) = &err.path else { return err };
    if let Some((_, var)) = applied.iter().rev().find(|(p, _)| path.starts_with(p)) {
        err.env_var = Some(var.clone());
        return err;
    }
    if let Ok(doc) = toml_edit::ImDocument::parse(text) {
        err.line = span_of(doc.as_item(), &path.0).map(|offset| line_of(text, offset));
    }
    err
}

/// The byte offset of the deepest part of `path` present in the document.
fn span_of(root: &toml_edit::Item, path: &[PathSegment]) -> Option<usize> {
    let mut item = root;
    let mut best = None;
    for seg in path {
        // A key's own span points at the line where the user wrote it.
        if let (PathSegment::Key(k), Some(table)) = (seg, item.as_table_like()) {
            if let Some(key) = table.get_key_value(k).and_then(|(key, _)| key.span()) {
                best = Some(key.start);
            }
        }
        let next = match seg {
            PathSegment::Key(k) => item.get(k.as_str()),
            PathSegment::Index(n) => item.get(*n),
        };
        match next {
            Some(next) => {
                item = next;
                if let Some(span) = item.span() {
                    best = Some(span.start);
                } else if let Some(t) = item.as_table() {
                    best = t.span().map(|s| s.start).or(best);
                }
            }
            // Past the deepest part the document has (e.g. a defaulted table).
            None => break,
        }
    }
    best
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|b| **b == b'\n').count() + 1
}

#[cfg(test)]
mod tests;
