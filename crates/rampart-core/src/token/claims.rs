//! The claims of an access token and their JSON form.
//!
//! We write the RFC 9068 shape (`aud` a string when there is one audience,
//! scopes as one space-separated `scope` string) and read what other issuers
//! write: `aud` as a string or an array, scopes as `scope`, as `scopes` (an
//! array, as FastAPI's OAuth2-scopes tutorial writes them) or as `scp` (an array,
//! as Okta writes it, or a string, as Microsoft does). Claims we do not know are
//! ignored; a claim that appears twice is refused, so that two parsers can
//! never disagree about which copy counts.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What an access token says about its bearer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// Issuer: who signed the token; must be one the verifier trusts.
    pub iss: String,
    /// Subject: the user or client the token speaks for.
    pub sub: String,
    /// Audiences; the verifier needs one of its own among them.
    pub aud: Vec<String>,
    /// Expiry, unix seconds. Required.
    pub exp: u64,
    /// Issued at, unix seconds.
    pub iat: Option<u64>,
    /// Not before, unix seconds.
    pub nbf: Option<u64>,
    /// Token id, for revocation. Rampart always sets it; other issuers may not.
    pub jti: Option<String>,
    pub roles: Vec<String>,
    /// OAuth scopes (RFC 6749 §3.3 scope tokens, no spaces).
    pub scopes: Vec<String>,
    /// Rate-limit or plan tier.
    pub tier: Option<String>,
    /// The user's token version when this token was issued. Raising the stored
    /// version logs the user out everywhere. Absent reads as 0.
    pub ver: u32,
    /// When the bearer signed in, unix seconds (OpenID Connect's
    /// `auth_time`). Rampart sets it on a login's access token only, not on
    /// one from a refresh: a fresh sign-in is what some changes ask for.
    pub auth_time: Option<u64>,
    /// On the internal JWT Rampart makes for its upstreams: the external
    /// issuer that vouched for the caller, whose `sub` is that issuer's and
    /// may equal one of Rampart's own user ids. Absent for Rampart's own
    /// users.
    pub idp: Option<String>,
}

impl Claims {
    /// Claims for one audience, valid from `now` for `ttl_secs`. `iat` and `nbf`
    /// are `now`; everything optional is empty, to be filled in by the caller
    /// (the identity service always sets `jti`).
    pub fn new(
        issuer: impl Into<String>,
        subject: impl Into<String>,
        audience: impl Into<String>,
        now: u64,
        ttl_secs: u64,
    ) -> Self {
        Self {
            iss: issuer.into(),
            sub: subject.into(),
            aud: vec![audience.into()],
            exp: now.saturating_add(ttl_secs),
            iat: Some(now),
            nbf: Some(now),
            jti: None,
            roles: Vec::new(),
            scopes: Vec::new(),
            tier: None,
            ver: 0,
            auth_time: None,
            idp: None,
        }
    }

    /// Whether `scope` was granted.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// Whether the bearer has `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Why these claims cannot be put in a token, if they cannot.
    pub(super) fn check_issuable(&self) -> Result<(), &'static str> {
        if self.iss.is_empty() {
            return Err("empty `iss`");
        }
        if self.sub.is_empty() {
            return Err("empty `sub`");
        }
        if self.aud.is_empty() || self.aud.iter().any(String::is_empty) {
            return Err("empty `aud`");
        }
        if self.iat.is_some_and(|iat| iat >= self.exp) || self.nbf.is_some_and(|nbf| nbf >= self.exp) {
            return Err("`exp` is not after `iat` and `nbf`");
        }
        if !self.scopes.iter().all(|s| is_scope_token(s)) {
            return Err("a scope is not an RFC 6749 scope token");
        }
        Ok(())
    }
}

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
///
/// ```
/// use rampart_core::token::is_scope_token;
/// assert!(is_scope_token("orders:read"));
/// assert!(!is_scope_token("two words") && !is_scope_token("") && !is_scope_token("q\""));
/// ```
pub fn is_scope_token(scope: &str) -> bool {
    !scope.is_empty() && scope.bytes().all(|b| matches!(b, 0x21 | 0x23..=0x5b | 0x5d..=0x7e))
}

#[derive(Serialize)]
#[serde(untagged)]
enum AudienceOut<'a> {
    One(&'a str),
    Many(&'a [String]),
}

#[derive(Serialize)]
struct WireOut<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: AudienceOut<'a>,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    roles: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tier: Option<&'a str>,
    ver: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_time: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idp: Option<&'a str>,
}

impl Serialize for Claims {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        WireOut {
            iss: &self.iss,
            sub: &self.sub,
            aud: match self.aud.as_slice() {
                [one] => AudienceOut::One(one),
                many => AudienceOut::Many(many),
            },
            exp: self.exp,
            iat: self.iat,
            nbf: self.nbf,
            jti: self.jti.as_deref(),
            roles: &self.roles,
            scope: (!self.scopes.is_empty()).then(|| self.scopes.join(" ")),
            tier: self.tier.as_deref(),
            ver: self.ver,
            auth_time: self.auth_time,
            idp: self.idp.as_deref(),
        }
        .serialize(serializer)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// Claims as they arrive: everything optional, so that a missing claim is
/// reported by name rather than as a parse error.
#[derive(Deserialize)]
pub(super) struct WireIn {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<OneOrMany>,
    exp: Option<u64>,
    iat: Option<u64>,
    nbf: Option<u64>,
    jti: Option<String>,
    roles: Option<Vec<String>>,
    scope: Option<String>,
    scp: Option<OneOrMany>,
    /// FastAPI's "OAuth2 scopes" tutorial puts a `scopes` array in its tokens.
    scopes: Option<OneOrMany>,
    tier: Option<String>,
    ver: Option<u32>,
    auth_time: Option<u64>,
    idp: Option<String>,
}

impl WireIn {
    /// The claims, or the name of the first required claim that is missing.
    pub(super) fn into_claims(self) -> Result<Claims, &'static str> {
        let exp = self.exp.ok_or("exp")?;
        let iss = self.iss.ok_or("iss")?;
        let aud = match self.aud.ok_or("aud")? {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        };
        let mut scopes: Vec<String> = Vec::new();
        let list = |v: Option<OneOrMany>| match v {
            None => Vec::new(),
            Some(OneOrMany::One(joined)) => vec![joined],
            Some(OneOrMany::Many(many)) => many,
        };
        let (scp, listed) = (list(self.scp), list(self.scopes));
        for scope in self.scope.iter().chain(&scp).chain(&listed).flat_map(|joined| joined.split(' ')) {
            if !scope.is_empty() && !scopes.iter().any(|s| s == scope) {
                scopes.push(scope.to_owned());
            }
        }
        Ok(Claims {
            iss,
            sub: self.sub.ok_or("sub")?,
            aud,
            exp,
            iat: self.iat,
            nbf: self.nbf,
            jti: self.jti,
            roles: self.roles.unwrap_or_default(),
            scopes,
            tier: self.tier,
            ver: self.ver.unwrap_or(0),
            auth_time: self.auth_time,
            idp: self.idp,
        })
    }
}

impl<'de> Deserialize<'de> for Claims {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        WireIn::deserialize(deserializer)?.into_claims().map_err(D::Error::missing_field)
    }
}
