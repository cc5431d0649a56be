//! Issuing tokens and verifying bearer tokens.
//!
//! jsonwebtoken signs and checks signatures; everything before and after the
//! signature check is done here, because its own `decode` is more permissive
//! than we want: it accepts any header parameters, leaves the choice of key by
//! `kid` to the caller, reads a JSON array as a struct and leaves `exp`
//! optional unless configured. In 9.x it also treats a mistyped `exp` or `nbf`
//! as absent (GHSA-h395-gr6q-cpjc, fixed in 10.3); `decode` is never called.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

use super::claims::{Claims, WireIn};
use super::keys::{present, Alg, KeySet, SigningKey, VerifyingKey};

/// Default clock skew allowed on `exp`, `nbf` and `iat`.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;
/// Default cap on the whole token; larger tokens are refused unread.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Cap on the base64url header segment, checked before it is decoded.
pub const MAX_HEADER_BYTES: usize = 1024;

/// Why a token was refused (or could not be issued).
///
/// The variants exist for logs and metrics; clients see one generic 401.
/// Messages never contain any part of the token, not even its `kid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("token is larger than the configured limit")]
    TooLarge,
    #[error("token is not three base64url segments")]
    Malformed,
    #[error("token header is not a JSON object with a string `alg`")]
    MalformedHeader,
    #[error("token uses the `none` algorithm")]
    AlgNone,
    #[error("token algorithm is not supported")]
    UnsupportedAlg,
    #[error("token header carries the forbidden `{0}` parameter")]
    ForbiddenHeader(&'static str),
    #[error("token `typ` is not JWT or at+jwt")]
    WrongType,
    #[error("token has no `kid` and more than one key is configured")]
    MissingKid,
    #[error("token `kid` names no configured key")]
    UnknownKid,
    #[error("token algorithm is not the one its key is configured for")]
    AlgMismatch,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token claims are not a JSON object of well-typed claims")]
    MalformedClaims,
    #[error("token lacks the `{0}` claim")]
    MissingClaim(&'static str),
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token was issued in the future")]
    IssuedInFuture,
    #[error("token issuer is not trusted")]
    WrongIssuer,
    #[error("token audience is not accepted")]
    WrongAudience,
    #[error("claims cannot be issued: {0}")]
    InvalidClaims(&'static str),
    #[error("signing failed")]
    Signing,
}

impl TokenError {
    /// A short, stable label for metrics (`reason="expired"`).
    pub const fn reason(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
            Self::MalformedHeader => "malformed_header",
            Self::AlgNone => "alg_none",
            Self::UnsupportedAlg => "unsupported_alg",
            Self::ForbiddenHeader(_) => "forbidden_header",
            Self::WrongType => "wrong_type",
            Self::MissingKid => "missing_kid",
            Self::UnknownKid => "unknown_kid",
            Self::AlgMismatch => "alg_mismatch",
            Self::BadSignature => "bad_signature",
            Self::MalformedClaims => "malformed_claims",
            Self::MissingClaim(_) => "missing_claim",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::IssuedInFuture => "issued_in_future",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::InvalidClaims(_) => "invalid_claims",
            Self::Signing => "signing",
        }
    }
}

/// Signs `claims` as a compact JWS with header `{"typ":"JWT","alg":…,"kid":…}`.
///
/// `typ` is `JWT` rather than RFC 9068's `at+jwt`: PyJWT, FastAPI examples and
/// most middleware expect `JWT` or ignore it, and `at+jwt` buys nothing when
/// the verifier checks `iss` and `aud` anyway. Our verifier accepts both.
///
/// Claims are checked first (non-empty `iss`, `sub`, `aud`; `exp` after `iat`;
/// scopes without spaces), and a token larger than [`DEFAULT_MAX_TOKEN_BYTES`]
/// is refused, since no default verifier would accept it.
pub fn issue(key: &SigningKey, claims: &Claims) -> Result<String, TokenError> {
    claims.check_issuable().map_err(TokenError::InvalidClaims)?;
    let mut header = jsonwebtoken::Header::new(key.alg().jsonwebtoken());
    header.typ = Some("JWT".to_owned());
    header.kid = Some(key.kid().to_owned());
    let token = jsonwebtoken::encode(&header, claims, key.encoding()).map_err(|_| TokenError::Signing)?;
    if token.len() > DEFAULT_MAX_TOKEN_BYTES {
        return Err(TokenError::InvalidClaims("token would exceed the default size limit"));
    }
    Ok(token)
}

/// Checks bearer tokens against a key set, trusted issuers and our audiences.
///
/// Empty `issuers` or `audiences` accept no token at all.
///
/// ```
/// use rampart_core::token::{issue, Alg, Claims, KeySet, SigningKey, TokenError, Verifier};
///
/// let key = SigningKey::hs256("k1", b"an example secret of at least 32 bytes").unwrap();
/// let keys = KeySet::from_keys([key.verifying_key().clone()]).unwrap();
/// let verifier = Verifier::new(keys, ["https://auth.example"], ["api"]);
///
/// let now = 1_750_000_000;
/// let token = issue(&key, &Claims::new("https://auth.example", "alice", "api", now, 900)).unwrap();
/// assert_eq!(verifier.verify(&token, now + 60).unwrap().sub, "alice");
/// assert_eq!(verifier.verify(&token, now + 900 + 30), Err(TokenError::Expired));
/// ```
#[derive(Clone, Debug)]
pub struct Verifier {
    pub keys: KeySet,
    /// Accepted `iss` values, compared exactly.
    pub issuers: Vec<String>,
    /// Our own names; a token's `aud` must contain one of them.
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    pub leeway_secs: u64,
    /// Larger tokens are refused before any parsing.
    pub max_token_bytes: usize,
}

/// The header parameters we read. Unknown ones are ignored, except those that
/// would tell a verifier to fetch or trust a key from somewhere else or to
/// understand extensions we don't (`crit`); those are refused whatever their
/// value, even `null`.
#[derive(Deserialize)]
struct Header {
    alg: String,
    typ: Option<String>,
    kid: Option<String>,
    #[serde(default, deserialize_with = "present")]
    jku: bool,
    #[serde(default, deserialize_with = "present")]
    x5u: bool,
    #[serde(default, deserialize_with = "present")]
    jwk: bool,
    #[serde(default, deserialize_with = "present")]
    x5c: bool,
    #[serde(default, deserialize_with = "present")]
    crit: bool,
}

impl Verifier {
    /// A verifier with the default leeway and size cap.
    pub fn new<I, A>(keys: KeySet, issuers: I, audiences: A) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
        A: IntoIterator,
        A::Item: Into<String>,
    {
        Self {
            keys,
            issuers: issuers.into_iter().map(Into::into).collect(),
            audiences: audiences.into_iter().map(Into::into).collect(),
            leeway_secs: DEFAULT_LEEWAY_SECS,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
        }
    }

    /// Verifies a compact JWS access token at time `now` (unix seconds).
    ///
    /// Cheap checks run first, so that garbage costs no signature check: size,
    /// shape, header, algorithm and key; then the signature; then the claims.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        if token.len() > self.max_token_bytes {
            return Err(TokenError::TooLarge);
        }
        let mut segments = token.split('.');
        let (header_b64, payload_b64, signature_b64) =
            match (segments.next(), segments.next(), segments.next(), segments.next()) {
                (Some(h), Some(p), Some(s), None) => (h, p, s),
                _ => return Err(TokenError::Malformed),
            };
        // An empty signature is let through here so that `alg: none` tokens
        // are reported as such; it can never pass the signature check.
        if header_b64.is_empty() || payload_b64.is_empty() {
            return Err(TokenError::Malformed);
        }
        // Only the URL-safe alphabet: no padding, no `+` or `/`, no whitespace.
        if !token.bytes().all(|b| b == b'.' || b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(TokenError::Malformed);
        }
        if header_b64.len() > MAX_HEADER_BYTES {
            return Err(TokenError::MalformedHeader);
        }
        let header_json = URL_SAFE_NO_PAD.decode(header_b64).map_err(|_| TokenError::Malformed)?;
        let header: Header = parse_object(&header_json).ok_or(TokenError::MalformedHeader)?;

        if header.alg.eq_ignore_ascii_case("none") {
            return Err(TokenError::AlgNone);
        }
        let alg = Alg::from_name(&header.alg).ok_or(TokenError::UnsupportedAlg)?;
        for (is_present, name) in
            [(header.jku, "jku"), (header.x5u, "x5u"), (header.jwk, "jwk"), (header.x5c, "x5c"), (header.crit, "crit")]
        {
            if is_present {
                return Err(TokenError::ForbiddenHeader(name));
            }
        }
        if let Some(typ) = &header.typ {
            let typ = typ.strip_prefix("application/").unwrap_or(typ);
            if !typ.eq_ignore_ascii_case("JWT") && !typ.eq_ignore_ascii_case("at+jwt") {
                return Err(TokenError::WrongType);
            }
        }
        let key = self.key_for(header.kid.as_deref())?;
        // The key decides the algorithm; the header must agree with it. This
        // is what stops an HS256 token "signed" with an RSA public key.
        if alg != key.alg() {
            return Err(TokenError::AlgMismatch);
        }

        let signed_len = header_b64.len() + 1 + payload_b64.len();
        let message = token.get(..signed_len).ok_or(TokenError::Malformed)?;
        if signature_b64.is_empty() {
            return Err(TokenError::BadSignature);
        }
        // The key's own algorithm, not the header's (they are equal by now):
        // jsonwebtoken panics if a key meets an algorithm of another family,
        // and `key.decoding()` was built for `key.alg()` alone.
        let key_alg = key.alg().jsonwebtoken();
        match jsonwebtoken::crypto::verify(signature_b64, message.as_bytes(), key.decoding(), key_alg) {
            Ok(true) => {}
            Ok(false) | Err(_) => return Err(TokenError::BadSignature),
        }

        let payload = URL_SAFE_NO_PAD.decode(payload_b64).map_err(|_| TokenError::Malformed)?;
        let wire: WireIn = parse_object(&payload).ok_or(TokenError::MalformedClaims)?;
        let claims = wire.into_claims().map_err(TokenError::MissingClaim)?;
        self.check_claims(&claims, now)?;
        Ok(claims)
    }

    fn key_for(&self, kid: Option<&str>) -> Result<&VerifyingKey, TokenError> {
        match kid {
            Some(kid) => self.keys.get(kid).ok_or(TokenError::UnknownKid),
            None if self.keys.is_empty() => Err(TokenError::UnknownKid),
            None => self.keys.only().ok_or(TokenError::MissingKid),
        }
    }

    fn check_claims(&self, claims: &Claims, now: u64) -> Result<(), TokenError> {
        let leeway = self.leeway_secs;
        // RFC 7519 §4.1.4: not accepted on or after `exp`.
        if now >= claims.exp.saturating_add(leeway) {
            return Err(TokenError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return Err(TokenError::NotYetValid);
        }
        if claims.iat.is_some_and(|iat| iat > now.saturating_add(leeway)) {
            return Err(TokenError::IssuedInFuture);
        }
        if !self.issuers.contains(&claims.iss) {
            return Err(TokenError::WrongIssuer);
        }
        if !claims.aud.iter().any(|aud| self.audiences.contains(aud)) {
            return Err(TokenError::WrongAudience);
        }
        Ok(())
    }
}

/// Parses a JSON object into `T`. Anything but an object is refused up front,
/// because serde would read a JSON array into a struct's fields in order.
fn parse_object<'a, T: Deserialize<'a>>(json: &'a [u8]) -> Option<T> {
    let start = json.iter().position(|b| !b.is_ascii_whitespace())?;
    if json.get(start) != Some(&b'{') {
        return None;
    }
    serde_json::from_slice(json).ok()
}
