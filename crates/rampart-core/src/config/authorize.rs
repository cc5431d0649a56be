//! Authorization: roles and their permissions (`[roles]`), and what a route
//! requires of its caller (`authorize = { … }`).
//!
//! ```toml
//! [roles.editor]
//! permissions = ["posts:read", "posts:write"]
//! [roles.viewer]
//! permissions = ["posts:read"]
//! # `admin` is built in and holds every permission.
//!
//! [[routes]]
//! path = "/posts/**"
//! methods = ["POST", "PUT", "DELETE"]
//! auth = "required"
//! authorize = { permissions_all = ["posts:write"], scopes_any = ["write", "admin"] }
//! ```
//!
//! A requirement lists any of `roles_any`, `roles_all`, `permissions_any`,
//! `permissions_all`, `scopes_any`, `scopes_all`; every list given must be
//! satisfied. Permissions come from the caller's roles through `[roles]`;
//! scopes come from the token or API key. `fresh_roles = true` makes the
//! gateway read the roles of its own users from the database on each request
//! to the route, so a role change applies at the next request instead of at
//! the token's expiry.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde::Deserialize;

use super::env::ConfigPath;
use crate::token::is_scope_token;

/// The built-in role that holds every permission.
pub const ADMIN_ROLE: &str = "admin";

/// `[roles.<name>]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoleConfig {
    pub permissions: Vec<String>,
}

/// A route's `authorize` table.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthorizeConfig {
    pub roles_any: Vec<String>,
    pub roles_all: Vec<String>,
    pub permissions_any: Vec<String>,
    pub permissions_all: Vec<String>,
    pub scopes_any: Vec<String>,
    pub scopes_all: Vec<String>,
    /// Own users' roles read from the database per request (see module docs).
    pub fresh_roles: bool,
}

/// Roles and the permissions each grants, compiled.
#[derive(Clone, Debug, Default)]
pub struct Roles {
    grants: HashMap<String, HashSet<String>>,
}

impl Roles {
    /// Whether the holder of `roles` has `permission`.
    pub fn grants(&self, roles: &[String], permission: &str) -> bool {
        roles
            .iter()
            .any(|r| r == ADMIN_ROLE || self.grants.get(r).is_some_and(|p| p.contains(permission) || p.contains("*")))
    }

    fn known_permission(&self, permission: &str) -> bool {
        self.grants.values().any(|p| p.contains(permission) || p.contains("*"))
    }
}

/// A route's requirement, checked: the `authorize` table itself, once its
/// names have been validated. Every non-empty list must be satisfied.
pub type Requirement = AuthorizeConfig;

/// What a caller lacks: names the requirement, never the caller's grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    pub kind: &'static str,
    /// `true`: one of `names` would do; `false`: all of them are needed.
    pub any: bool,
    pub names: Vec<String>,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = self.names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
        match (self.any, self.names.len()) {
            (_, 1) => write!(f, "requires {} {list}", self.kind),
            (true, _) => write!(f, "requires one of the {}s {list}", self.kind),
            (false, _) => write!(f, "requires the {}s {list}", self.kind),
        }
    }
}

impl Missing {
    /// The short reason for metrics and the audit log.
    pub fn reason(&self) -> &'static str {
        match self.kind {
            "role" => "missing_role",
            "permission" => "missing_permission",
            _ => "missing_scope",
        }
    }
}

impl Requirement {
    /// Whether a caller with `roles` and `scopes` meets the requirement; the
    /// first unmet list otherwise.
    pub fn check(&self, defined: &Roles, roles: &[String], scopes: &[String]) -> Result<(), Missing> {
        let has_role = |r: &String| roles.contains(r);
        let has_scope = |s: &String| scopes.contains(s);
        let has_perm = |p: &String| defined.grants(roles, p);
        type Has<'a> = &'a dyn Fn(&String) -> bool;
        let lists: [(&'static str, bool, &Vec<String>, Has<'_>); 6] = [
            ("role", true, &self.roles_any, &has_role),
            ("role", false, &self.roles_all, &has_role),
            ("permission", true, &self.permissions_any, &has_perm),
            ("permission", false, &self.permissions_all, &has_perm),
            ("scope", true, &self.scopes_any, &has_scope),
            ("scope", false, &self.scopes_all, &has_scope),
        ];
        for (kind, any, names, has) in lists {
            if names.is_empty() {
                continue;
            }
            if any && !names.iter().any(has) {
                return Err(Missing { kind, any, names: names.clone() });
            }
            if !any {
                let lacking: Vec<String> = names.iter().filter(|n| !has(n)).cloned().collect();
                if !lacking.is_empty() {
                    return Err(Missing { kind, any, names: lacking });
                }
            }
        }
        Ok(())
    }

    /// Whether the requirement reads roles (directly or through permissions).
    pub fn uses_roles(&self) -> bool {
        !(self.roles_any.is_empty()
            && self.roles_all.is_empty()
            && self.permissions_any.is_empty()
            && self.permissions_all.is_empty())
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 128 && is_scope_token(name)
}

/// Compiles `[roles]`.
pub fn compile_roles(cfg: &BTreeMap<String, RoleConfig>, errs: &mut Vec<(ConfigPath, String)>) -> Roles {
    let at = ConfigPath::parse("roles");
    let mut grants = HashMap::new();
    for (name, role) in cfg {
        let here = at.push_key(name);
        if !valid_name(name) {
            errs.push((here.clone(), "role names are 1 to 128 printable characters without spaces".into()));
        }
        let mut set = HashSet::new();
        for (i, p) in role.permissions.iter().enumerate() {
            if !valid_name(p) {
                errs.push((
                    here.push_key("permissions").push_index(i),
                    "permissions are 1 to 128 printable characters without spaces".into(),
                ));
            }
            set.insert(p.clone());
        }
        grants.insert(name.clone(), set);
    }
    Roles { grants }
}

/// Compiles a route's `authorize` (at `at`), checking names against `roles`.
pub fn compile_requirement(
    cfg: &AuthorizeConfig,
    roles: &Roles,
    at: &ConfigPath,
    errs: &mut Vec<(ConfigPath, String)>,
) -> Option<Requirement> {
    let before = errs.len();
    let lists = [
        ("roles_any", &cfg.roles_any),
        ("roles_all", &cfg.roles_all),
        ("permissions_any", &cfg.permissions_any),
        ("permissions_all", &cfg.permissions_all),
        ("scopes_any", &cfg.scopes_any),
        ("scopes_all", &cfg.scopes_all),
    ];
    if lists.iter().all(|(_, l)| l.is_empty()) {
        errs.push((at.clone(), "names nothing to require: set roles_*, permissions_* or scopes_*".into()));
        return None;
    }
    for (field, list) in lists {
        for (i, name) in list.iter().enumerate() {
            let here = at.push_key(field).push_index(i);
            if !valid_name(name) {
                errs.push((here, "must be 1 to 128 printable characters without spaces".into()));
            } else if field.starts_with("permissions") && !roles.known_permission(name) {
                let known: Vec<&str> = roles.grants.values().flatten().map(String::as_str).collect();
                let hint =
                    super::did_you_mean(name, &known).map(|s| format!("; did you mean `{s}`?")).unwrap_or_default();
                errs.push((here, format!("no role in [roles] grants `{name}` (only `{ADMIN_ROLE}` would pass){hint}")));
            }
        }
    }
    if cfg.fresh_roles
        && cfg.roles_any.is_empty()
        && cfg.roles_all.is_empty()
        && cfg.permissions_any.is_empty()
        && cfg.permissions_all.is_empty()
    {
        errs.push((at.push_key("fresh_roles"), "only matters with roles_* or permissions_*".into()));
    }
    if errs.len() > before {
        return None;
    }
    Some(cfg.clone())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn roles() -> Roles {
        let mut cfg = BTreeMap::new();
        cfg.insert("editor".to_string(), RoleConfig { permissions: strings(&["posts:read", "posts:write"]) });
        cfg.insert("viewer".to_string(), RoleConfig { permissions: strings(&["posts:read"]) });
        let mut errs = Vec::new();
        let r = compile_roles(&cfg, &mut errs);
        assert!(errs.is_empty());
        r
    }

    fn requirement(cfg: AuthorizeConfig) -> Requirement {
        let mut errs = Vec::new();
        compile_requirement(&cfg, &roles(), &ConfigPath::parse("routes[0].authorize"), &mut errs)
            .unwrap_or_else(|| panic!("{errs:?}"))
    }

    #[test]
    fn permissions_come_from_roles_and_admin_has_all() {
        let r = roles();
        assert!(r.grants(&strings(&["viewer"]), "posts:read"));
        assert!(!r.grants(&strings(&["viewer"]), "posts:write"));
        assert!(r.grants(&strings(&["viewer", "editor"]), "posts:write"));
        assert!(r.grants(&strings(&["admin"]), "anything:at-all"));
        assert!(!r.grants(&[], "posts:read"));
        assert!(!r.grants(&strings(&["unknown"]), "posts:read"));
    }

    #[test]
    fn every_list_must_hold_and_the_refusal_names_the_requirement() {
        let req = requirement(AuthorizeConfig {
            permissions_all: strings(&["posts:write"]),
            scopes_any: strings(&["write", "admin"]),
            ..Default::default()
        });
        let r = roles();
        assert!(req.check(&r, &strings(&["editor"]), &strings(&["write"])).is_ok());
        let e = req.check(&r, &strings(&["viewer", "secret-role"]), &strings(&["write"])).unwrap_err();
        assert_eq!(e.to_string(), "requires permission `posts:write`");
        assert!(!e.to_string().contains("viewer") && !e.to_string().contains("secret-role"));
        let e = req.check(&r, &strings(&["editor"]), &strings(&["read"])).unwrap_err();
        assert_eq!(e.to_string(), "requires one of the scopes `write`, `admin`");
        assert_eq!(e.reason(), "missing_scope");

        let all = requirement(AuthorizeConfig { roles_all: strings(&["a", "b", "c"]), ..Default::default() });
        let e = all.check(&r, &strings(&["b"]), &[]).unwrap_err();
        assert_eq!(e.to_string(), "requires the roles `a`, `c`");
        assert!(all.check(&r, &strings(&["c", "a", "b"]), &[]).is_ok());
        let any = requirement(AuthorizeConfig { roles_any: strings(&["admin", "ops"]), ..Default::default() });
        assert!(any.check(&r, &strings(&["ops"]), &[]).is_ok());
        assert!(any.check(&r, &[], &[]).is_err());
    }

    #[test]
    fn bad_requirements_are_refused_naming_the_field() {
        let mut errs = Vec::new();
        let at = ConfigPath::parse("routes[2].authorize");
        assert!(compile_requirement(&AuthorizeConfig::default(), &roles(), &at, &mut errs).is_none());
        assert!(errs[0].0.to_string().contains("routes[2].authorize"), "{errs:?}");
        errs.clear();
        let typo = AuthorizeConfig { permissions_any: strings(&["posts:wirte"]), ..Default::default() };
        assert!(compile_requirement(&typo, &roles(), &at, &mut errs).is_none());
        assert!(errs[0].1.contains("did you mean `posts:write`"), "{errs:?}");
        errs.clear();
        let spaced = AuthorizeConfig { scopes_all: strings(&["two words"]), ..Default::default() };
        assert!(compile_requirement(&spaced, &roles(), &at, &mut errs).is_none());
        assert!(errs[0].0.to_string().contains("scopes_all[0]"), "{errs:?}");
        errs.clear();
        let fresh = AuthorizeConfig { scopes_all: strings(&["x"]), fresh_roles: true, ..Default::default() };
        assert!(compile_requirement(&fresh, &roles(), &at, &mut errs).is_none());
    }
}
