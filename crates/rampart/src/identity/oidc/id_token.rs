//! Checking an ID token (OpenID Connect Core §3.1.3.7) and reading the
//! profile claims we use from it and from the userinfo answer.
//!
//! The signature, `iss`, `aud` (our `client_id`), `exp`, `nbf` and `iat` are
//! checked by [`rampart_core::token::Verifier`], the same strict verifier as
//! for bearer tokens (no `alg: none`, no key confusion, no `jku`/`x5u`). Then:
//! `iat` must be present, `nonce` must be the one of this login (compared in
//! constant time), and `azp`, when present, must be our `client_id` (and must
//! be present when the token has several audiences). The payload is read a
//! second time for the OpenID claims only after all of that passed, from the
//! very bytes the signature covers.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rampart_core::token::{TokenError, Verifier};
use serde::Deserialize;
use subtle::ConstantTimeEq;

/// What we learn about the person from the provider.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExternalProfile {
    /// The provider's `sub`.
    pub subject: String,
    pub email: Option<String>,
    /// Only `true` when the provider says so (`email_verified`).
    pub email_verified: bool,
    pub preferred_username: Option<String>,
    pub name: Option<String>,
}

/// Why an ID token (or the userinfo answer) was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    #[error("the ID token is not valid: {0}")]
    Token(TokenError),
    #[error("the ID token's nonce is not the one of this login")]
    Nonce,
    #[error("the ID token was issued to another client (azp)")]
    AuthorizedParty,
    #[error("the ID token lacks the `{0}` claim")]
    MissingClaim(&'static str),
    #[error("the ID token's claims are malformed")]
    MalformedClaims,
    #[error("the userinfo answer names another subject")]
    UserinfoSubject,
}

impl IdTokenError {
    /// A short label for the audit log and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Token(TokenError::WrongAudience) => "id_token_wrong_audience",
            Self::Token(TokenError::WrongIssuer) => "id_token_wrong_issuer",
            Self::Token(TokenError::Expired) => "id_token_expired",
            Self::Token(TokenError::BadSignature) => "id_token_bad_signature",
            Self::Token(_) => "id_token_invalid",
            Self::Nonce => "id_token_wrong_nonce",
            Self::AuthorizedParty => "id_token_wrong_azp",
            Self::MissingClaim(_) => "id_token_missing_claim",
            Self::MalformedClaims => "id_token_malformed",
            Self::UserinfoSubject => "userinfo_wrong_subject",
        }
    }
}

/// `email_verified` as a JSON boolean, or as the string some providers send.
#[derive(Deserialize)]
#[serde(untagged)]
enum Flag {
    Bool(bool),
    Text(String),
}

impl Flag {
    fn is_true(&self) -> bool {
        match self {
            Self::Bool(b) => *b,
            Self::Text(t) => t.eq_ignore_ascii_case("true"),
        }
    }
}

/// The OpenID claims of an ID token or userinfo answer that we read. A claim
/// given twice is refused (serde refuses duplicate fields).
#[derive(Deserialize)]
struct OpenIdClaims {
    sub: Option<String>,
    nonce: Option<String>,
    azp: Option<String>,
    email: Option<String>,
    email_verified: Option<Flag>,
    preferred_username: Option<String>,
    name: Option<String>,
}

/// Verifies `token` for this login at `now` (unix seconds) and returns the
/// profile it carries.
pub fn verify(verifier: &Verifier, token: &str, now: u64, nonce: &str) -> Result<ExternalProfile, IdTokenError> {
    let claims = verifier.verify(token, now).map_err(IdTokenError::Token)?;
    if claims.iat.is_none() {
        return Err(IdTokenError::MissingClaim("iat"));
    }
    let payload = token.split('.').nth(1).ok_or(IdTokenError::MalformedClaims)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|_| IdTokenError::MalformedClaims)?;
    let extra: OpenIdClaims = serde_json::from_slice(&bytes).map_err(|_| IdTokenError::MalformedClaims)?;
    let presented = extra.nonce.as_deref().ok_or(IdTokenError::MissingClaim("nonce"))?;
    if !bool::from(presented.as_bytes().ct_eq(nonce.as_bytes())) {
        return Err(IdTokenError::Nonce);
    }
    // The verifier's audiences are exactly our client id.
    let ours = verifier.audiences.first().map(String::as_str).unwrap_or_default();
    match &extra.azp {
        Some(azp) if azp != ours => return Err(IdTokenError::AuthorizedParty),
        None if claims.aud.len() > 1 => return Err(IdTokenError::MissingClaim("azp")),
        _ => {}
    }
    if claims.sub.is_empty() {
        return Err(IdTokenError::MissingClaim("sub"));
    }
    Ok(ExternalProfile {
        subject: claims.sub,
        email: extra.email.filter(|e| !e.is_empty()),
        email_verified: extra.email_verified.is_some_and(|f| f.is_true()),
        preferred_username: extra.preferred_username.filter(|u| !u.is_empty()),
        name: extra.name.filter(|n| !n.is_empty()),
    })
}

impl ExternalProfile {
    /// Whether the ID token left out claims that the userinfo endpoint may have.
    pub fn wants_userinfo(&self) -> bool {
        self.email.is_none() || self.preferred_username.is_none()
    }

    /// Fills in what the ID token left out from a userinfo answer, whose
    /// `sub` must be the ID token's (Core §5.3.2). An address and its
    /// `email_verified` always come from the same document.
    pub fn merge_userinfo(&mut self, userinfo: &serde_json::Value) -> Result<(), IdTokenError> {
        let info = OpenIdClaims::deserialize(userinfo).map_err(|_| IdTokenError::MalformedClaims)?;
        if info.sub.as_deref() != Some(self.subject.as_str()) {
            return Err(IdTokenError::UserinfoSubject);
        }
        if self.email.is_none() {
            if let Some(email) = info.email.filter(|e| !e.is_empty()) {
                self.email = Some(email);
                self.email_verified = info.email_verified.is_some_and(|f| f.is_true());
            }
        }
        if self.preferred_username.is_none() {
            self.preferred_username = info.preferred_username.filter(|u| !u.is_empty());
        }
        if self.name.is_none() {
            self.name = info.name.filter(|n| !n.is_empty());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use rampart_core::token::{KeySet, VerifyingKey};
    use ring::signature::{Ed25519KeyPair, KeyPair as _};
    use serde_json::json;

    const NOW: u64 = 1_750_000_000;

    /// The provider's key, and our verifier of its tokens for client `rampart`.
    fn setup() -> (Ed25519KeyPair, Verifier) {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "op-1"});
        let keys = KeySet::from_keys([VerifyingKey::from_jwk(&jwk).unwrap()]).unwrap();
        (pair, Verifier::new(keys, ["https://op.example"], ["rampart"]))
    }

    /// Signs any JSON payload as the provider would.
    fn sign(pair: &Ed25519KeyPair, payload: &str) -> String {
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": "EdDSA", "kid": "op-1"}).to_string());
        let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(payload));
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(pair.sign(input.as_bytes()).as_ref()))
    }

    fn claims() -> serde_json::Value {
        json!({
            "iss": "https://op.example", "sub": "ext-1", "aud": "rampart", "iat": NOW, "exp": NOW + 300,
            "nonce": "n-1", "email": "a@example.com", "email_verified": true, "preferred_username": "a",
        })
    }

    #[track_caller]
    fn check(change: impl FnOnce(&mut serde_json::Value), expected: Result<(), IdTokenError>) {
        let (pair, verifier) = setup();
        let mut c = claims();
        change(&mut c);
        let got = verify(&verifier, &sign(&pair, &c.to_string()), NOW, "n-1").map(|_| ());
        assert_eq!(got, expected);
    }

    #[test]
    fn a_good_token_gives_the_profile() {
        let (pair, verifier) = setup();
        let profile = verify(&verifier, &sign(&pair, &claims().to_string()), NOW, "n-1").unwrap();
        assert_eq!(profile.subject, "ext-1");
        assert_eq!(profile.email.as_deref(), Some("a@example.com"));
        assert!(profile.email_verified && !profile.wants_userinfo());
    }

    #[test]
    fn every_check_refuses() {
        check(|c| c["nonce"] = "n-2".into(), Err(IdTokenError::Nonce));
        check(|c| drop(c.as_object_mut().unwrap().remove("nonce")), Err(IdTokenError::MissingClaim("nonce")));
        check(|c| drop(c.as_object_mut().unwrap().remove("iat")), Err(IdTokenError::MissingClaim("iat")));
        check(|c| c["aud"] = "someone-else".into(), Err(IdTokenError::Token(TokenError::WrongAudience)));
        check(|c| c["iss"] = "https://evil.example".into(), Err(IdTokenError::Token(TokenError::WrongIssuer)));
        check(|c| c["exp"] = (NOW - 3600).into(), Err(IdTokenError::Token(TokenError::Expired)));
        check(|c| c["aud"] = json!(["rampart", "other"]), Err(IdTokenError::MissingClaim("azp")));
        check(|c| c["azp"] = "other".into(), Err(IdTokenError::AuthorizedParty));
        check(
            |c| {
                c["aud"] = json!(["rampart", "other"]);
                c["azp"] = "rampart".into();
            },
            Ok(()),
        );
    }

    #[test]
    fn a_duplicated_claim_is_refused() {
        let (pair, verifier) = setup();
        let payload = claims().to_string().replacen("\"nonce\":\"n-1\"", "\"nonce\":\"n-1\",\"nonce\":\"n-1\"", 1);
        assert!(payload.matches("nonce").count() == 2, "{payload}");
        assert!(verify(&verifier, &sign(&pair, &payload), NOW, "n-1").is_err());
    }

    #[test]
    fn a_tampered_payload_fails_the_signature() {
        let (pair, verifier) = setup();
        let token = sign(&pair, &claims().to_string());
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        let mut c = claims();
        c["sub"] = "ext-2".into();
        parts[1] = URL_SAFE_NO_PAD.encode(c.to_string());
        let err = verify(&verifier, &parts.join("."), NOW, "n-1").unwrap_err();
        assert_eq!(err, IdTokenError::Token(TokenError::BadSignature));
    }

    #[test]
    fn userinfo_fills_gaps_for_the_same_subject_only() {
        let mut profile = ExternalProfile { subject: "ext-1".into(), ..Default::default() };
        assert!(profile.wants_userinfo());
        let other = json!({"sub": "ext-2", "email": "b@example.com", "email_verified": true});
        assert_eq!(profile.merge_userinfo(&other), Err(IdTokenError::UserinfoSubject));
        assert_eq!(profile.email, None);
        let info =
            json!({"sub": "ext-1", "email": "a@example.com", "email_verified": "true", "preferred_username": "a"});
        profile.merge_userinfo(&info).unwrap();
        assert_eq!(profile.email.as_deref(), Some("a@example.com"));
        assert!(profile.email_verified);
        assert_eq!(profile.preferred_username.as_deref(), Some("a"));
        // An address from the ID token keeps its own verification flag.
        let mut from_token =
            ExternalProfile { subject: "ext-1".into(), email: Some("t@example.com".into()), ..Default::default() };
        from_token.merge_userinfo(&info).unwrap();
        assert_eq!(from_token.email.as_deref(), Some("t@example.com"));
        assert!(!from_token.email_verified);
    }
}
