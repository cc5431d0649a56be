//! Environment overrides (`RAMPART_SECTION__KEY=value`) and `*_file` secrets.
//!
//! Both act on the parsed TOML tree before it is deserialized, so they reach every
//! key without each struct knowing about them. Reading secret files is I/O, which
//! this crate does not do: the caller passes a reader.
//!
//! ```
//! use rampart_core::config::env::{apply_env, ConfigPath};
//! let mut doc: toml::Table = toml::from_str("[server]\nlisten = '127.0.0.1:1'").unwrap();
//! let env = [("RAMPART_SERVER__LISTEN".to_string(), "0.0.0.0:80".to_string())];
//! let applied = apply_env(&mut doc, &env).unwrap();
//! assert_eq!(doc["server"]["listen"].as_str(), Some("0.0.0.0:80"));
//! assert_eq!(applied[0].0, ConfigPath::parse("server.listen"));
//! ```

use std::fmt;

use toml::{Table, Value};

/// Prefix of every override variable.
pub const ENV_PREFIX: &str = "RAMPART_";

/// Keys whose value may instead be read from a file named by `KEY_file`, so that
/// secrets can live in mounted files rather than in the config or the environment.
pub const SECRET_KEYS: &[&str] = &[
    "url",
    "admin_token",
    "database",
    "webhook_url",
    "secret",
    "public_key",
    "secret_key",
    "signing_key",
    "hs256_secret",
    "client_secret",
    "sentinel_password",
];

/// A position in the config tree, e.g. `routes[2].cors.allow_origins`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConfigPath(pub Vec<PathSegment>);

/// Ordered as the tree is filled: array indexes by number (`[2]` before
/// `[10]`), so overrides applied in this order leave no gap.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathSegment {
    Key(String),
    Index(usize),
}

impl ConfigPath {
    /// Parses the dotted display form (`routes[0].path` or `routes.0.path`).
    pub fn parse(s: &str) -> Self {
        let mut out = Vec::new();
        for part in s.split('.').filter(|p| !p.is_empty()) {
            let mut rest = part;
            if let Some(open) = rest.find('[') {
                out.push(PathSegment::Key(rest[..open].to_string()));
                rest = &rest[open..];
                while let Some(close) = rest.find(']') {
                    if let Ok(i) = rest[1..close].parse() {
                        out.push(PathSegment::Index(i));
                    }
                    rest = &rest[close + 1..];
                }
            } else if let Ok(i) = rest.parse() {
                out.push(PathSegment::Index(i));
            } else {
                out.push(PathSegment::Key(rest.to_string()));
            }
        }
        Self(out)
    }

    /// True when `self` is `prefix` or lies below it.
    pub fn starts_with(&self, prefix: &ConfigPath) -> bool {
        self.0.len() >= prefix.0.len() && self.0[..prefix.0.len()] == prefix.0[..]
    }

    pub fn push_key(&self, key: &str) -> Self {
        let mut next = self.clone();
        next.0.push(PathSegment::Key(key.to_string()));
        next
    }

    pub fn push_index(&self, index: usize) -> Self {
        let mut next = self.clone();
        next.0.push(PathSegment::Index(index));
        next
    }
}

impl fmt::Display for ConfigPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                PathSegment::Key(k) if i == 0 => f.write_str(k)?,
                PathSegment::Key(k) => write!(f, ".{k}")?,
                PathSegment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Applies every `RAMPART_A__B__C` variable to the tree. Returns the paths it set,
/// each with the variable that set it, so errors can name the variable.
///
/// A value that parses as a TOML value (`8080`, `true`, `["a", "b"]`, `"quoted"`)
/// is used as such; anything else, and any value of a key in [`SECRET_KEYS`],
/// is taken as a plain string.
///
/// Variables are applied in the order of their paths, not of the
/// environment (which a launcher may order any way): `RAMPART_ROUTES__1__…`
/// before `RAMPART_ROUTES__0__…` would otherwise leave a gap in the array.
pub fn apply_env(doc: &mut Table, env: &[(String, String)]) -> Result<Vec<(ConfigPath, String)>, (String, String)> {
    let mut applied = Vec::new();
    for (path, name, raw) in env_overrides(env) {
        // A secret is text whatever it looks like: a token of digits stays a
        // string (and never shows up in a type error).
        let secret = matches!(path.0.last(), Some(PathSegment::Key(k)) if SECRET_KEYS.contains(&k.as_str()));
        let value = if secret { Value::String(raw.to_owned()) } else { parse_env_value(raw) };
        // Recorded as set, the path as the file spells it (see `set_path`),
        // so that a later error about the value names the variable.
        let mut resolved = Vec::with_capacity(path.0.len());
        set_path(doc, &path.0, value, &mut resolved).map_err(|why| (name.to_owned(), why.to_string()))?;
        applied.push((ConfigPath(resolved), name.to_owned()));
    }
    Ok(applied)
}

/// The `RAMPART_A__B__C` overrides in `env`, each with its path, variable and
/// raw value, in path order.
pub fn env_overrides(env: &[(String, String)]) -> Vec<(ConfigPath, &str, &str)> {
    let mut out: Vec<(ConfigPath, &str, &str)> = env
        .iter()
        .filter_map(|(name, raw)| {
            let rest = name.strip_prefix(ENV_PREFIX)?;
            // Variables without a section separator (RAMPART_CONFIG,
            // RAMPART_LOG) are not overrides.
            if !rest.contains("__") {
                return None;
            }
            let path = ConfigPath(
                rest.split("__")
                    .map(|p| match p.parse::<usize>() {
                        Ok(i) => PathSegment::Index(i),
                        Err(_) => PathSegment::Key(p.to_ascii_lowercase()),
                    })
                    .collect(),
            );
            Some((path, name.as_str(), raw.as_str()))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn parse_env_value(raw: &str) -> Value {
    let wrapped = format!("v = {raw}");
    match wrapped.parse::<Table>() {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| Value::String(raw.to_string())),
        Err(_) => Value::String(raw.to_string()),
    }
}

/// Sets `path` in `table` to `value`, pushing onto `resolved` each segment
/// as set: a key as the file spells it where it has one.
fn set_path(
    table: &mut Table,
    path: &[PathSegment],
    value: Value,
    resolved: &mut Vec<PathSegment>,
) -> Result<(), &'static str> {
    let Some((first, rest)) = path.split_first() else {
        return Err("empty key");
    };
    let PathSegment::Key(key) = first else {
        return Err("a table key was expected where an index was given");
    };
    // Variable names are lowercased: `RAMPART_UPSTREAMS__BACKEND__URL` is
    // meant for `[upstreams.Backend]` when the file has that one, not for a
    // new, unused `backend`.
    let key = match table.contains_key(key) {
        true => key.clone(),
        false => table.keys().find(|k| k.eq_ignore_ascii_case(key)).cloned().unwrap_or_else(|| key.clone()),
    };
    let key = &key;
    resolved.push(PathSegment::Key(key.clone()));
    if rest.is_empty() {
        table.insert(key.clone(), value);
        return Ok(());
    }
    let slot = table.entry(key.clone()).or_insert_with(|| match rest[0] {
        PathSegment::Index(_) => Value::Array(Vec::new()),
        PathSegment::Key(_) => Value::Table(Table::new()),
    });
    set_in_value(slot, rest, value, resolved)
}

fn set_in_value(
    slot: &mut Value,
    path: &[PathSegment],
    value: Value,
    resolved: &mut Vec<PathSegment>,
) -> Result<(), &'static str> {
    match (slot, path.first()) {
        (Value::Table(t), Some(PathSegment::Key(_))) => set_path(t, path, value, resolved),
        (Value::Array(items), Some(PathSegment::Index(i))) => {
            let i = *i;
            resolved.push(PathSegment::Index(i));
            if i > items.len() {
                return Err("array index leaves a gap; set the entries in order");
            }
            if i == items.len() {
                items.push(match path.get(1) {
                    Some(PathSegment::Index(_)) => Value::Array(Vec::new()),
                    Some(PathSegment::Key(_)) => Value::Table(Table::new()),
                    None => Value::String(String::new()),
                });
            }
            let rest = &path[1..];
            if rest.is_empty() {
                items[i] = value;
                Ok(())
            } else {
                set_in_value(&mut items[i], rest, value, resolved)
            }
        }
        _ => Err("the variable's path does not fit the shape of the config"),
    }
}

/// Replaces each `KEY_file = "path"` (for `KEY` in [`SECRET_KEYS`]) by `KEY =
/// <file content>`, trailing newline removed. Setting both is an error.
pub fn resolve_secret_files(
    doc: &mut Table,
    read: &dyn Fn(&str) -> Result<String, String>,
) -> Result<(), (ConfigPath, String)> {
    resolve_in_table(doc, &ConfigPath(Vec::new()), read)
}

fn resolve_in_table(
    table: &mut Table,
    at: &ConfigPath,
    read: &dyn Fn(&str) -> Result<String, String>,
) -> Result<(), (ConfigPath, String)> {
    for key in SECRET_KEYS {
        let file_key = format!("{key}_file");
        let Some(file_value) = table.remove(&file_key) else {
            continue;
        };
        let here = at.push_key(&file_key);
        let Value::String(path) = file_value else {
            return Err((here, "must be a file path (a string)".into()));
        };
        if table.contains_key(*key) {
            return Err((here, format!("set either `{key}` or `{file_key}`, not both")));
        }
        let content = read(&path).map_err(|e| (here.clone(), format!("cannot read {path}: {e}")))?;
        let content = content.strip_suffix('\n').unwrap_or(&content);
        let content = content.strip_suffix('\r').unwrap_or(content);
        table.insert((*key).to_string(), Value::String(content.to_string()));
    }
    for (key, value) in table.iter_mut() {
        let here = at.push_key(key);
        match value {
            Value::Table(t) => resolve_in_table(t, &here, read)?,
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    if let Value::Table(t) = item {
                        resolve_in_table(t, &here.push_index(i), read)?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn overrides_typed_values_and_nested_arrays() {
        let mut doc: Table = toml::from_str("[[routes]]\npath = '/a'\n").unwrap();
        apply_env(
            &mut doc,
            &env(&[
                ("RAMPART_SERVER__MAX_HEADER_COUNT", "50"),
                ("RAMPART_SERVER__TRUSTED_PROXIES", r#"["10.0.0.0/8"]"#),
                ("RAMPART_ROUTES__0__PATH", "/b/**"),
                ("RAMPART_ROUTES__1__PATH", "/c"),
                ("RAMPART_CONFIG", "ignored.toml"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(doc["server"]["max_header_count"].as_integer(), Some(50));
        assert_eq!(doc["server"]["trusted_proxies"][0].as_str(), Some("10.0.0.0/8"));
        assert_eq!(doc["routes"][0]["path"].as_str(), Some("/b/**"));
        assert_eq!(doc["routes"][1]["path"].as_str(), Some("/c"));
        assert!(!doc.contains_key("config"));
    }

    #[test]
    fn refuses_gaps_and_shape_conflicts() {
        let mut doc = Table::new();
        assert!(apply_env(&mut doc, &env(&[("RAMPART_ROUTES__3__PATH", "/x")])).is_err());
        let mut doc: Table = toml::from_str("server = 1").unwrap();
        assert!(apply_env(&mut doc, &env(&[("RAMPART_SERVER__LISTEN", "x")])).is_err());
    }

    #[test]
    fn secret_files_are_read_and_conflicts_refused() {
        let mut doc: Table = toml::from_str("[upstreams.a]\nurl_file = '/s'\n").unwrap();
        resolve_secret_files(&mut doc, &|p| Ok(format!("http://from{p}\n"))).unwrap();
        assert_eq!(doc["upstreams"]["a"]["url"].as_str(), Some("http://from/s"));

        let mut doc: Table = toml::from_str("[upstreams.a]\nurl = 'x'\nurl_file = '/s'\n").unwrap();
        let err = resolve_secret_files(&mut doc, &|_| Ok(String::new())).unwrap_err();
        assert_eq!(err.0.to_string(), "upstreams.a.url_file");

        let mut doc: Table = toml::from_str("[upstreams.a]\nurl_file = '/nope'\n").unwrap();
        let err = resolve_secret_files(&mut doc, &|_| Err("not found".into())).unwrap_err();
        assert!(err.1.contains("not found"));
    }

    #[test]
    fn path_display_round_trips() {
        for s in ["routes[2].cors.allow_origins[0]", "server.listen", "a"] {
            assert_eq!(ConfigPath::parse(s).to_string(), s);
        }
    }
}
