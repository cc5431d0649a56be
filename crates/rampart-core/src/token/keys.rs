//! Signing and verifying keys, key sets and the JWKS document.
//!
//! A key is bound to exactly one algorithm when it is loaded, and verification
//! uses that algorithm, never the one a token names. That binding is what makes
//! algorithm confusion impossible: a public RSA key can only ever check RS256
//! signatures, never be used as an HMAC secret.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, RsaPublicKeyComponents, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};

use super::der::{self, KeyKind, SpkiKey};

/// HS256 secrets shorter than this are refused: RFC 7518 §3.2 asks for a key at
/// least as long as the hash output.
pub const MIN_HS256_SECRET_BYTES: usize = 32;
/// RSA moduli below this size are refused (NIST SP 800-131A; RFC 7518 §3.3).
pub const MIN_RSA_BITS: usize = 2048;
/// RSA moduli above this size are refused; ring verifies no larger keys, and a
/// huge key would make every verification slow.
pub const MAX_RSA_BITS: usize = 8192;
/// Key ids longer than this are refused; they are only labels.
pub const MAX_KID_BYTES: usize = 256;

/// The signature algorithms Rampart issues and accepts (RFC 7518, RFC 8037).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Alg {
    /// Ed25519 signatures; the default for new keys.
    EdDSA,
    /// ECDSA over P-256 with SHA-256.
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256; keys are loaded, never generated.
    RS256,
    /// HMAC-SHA-256 with a shared secret, for upstreams that can only do that.
    HS256,
}

impl Alg {
    /// The name used in the `alg` header and JWK parameter.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::ES256 => "ES256",
            Self::RS256 => "RS256",
            Self::HS256 => "HS256",
        }
    }

    /// The algorithm with exactly this name. Names are case-sensitive (RFC 7515
    /// §4.1.1), so `"hs256"` is not HS256.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "EdDSA" => Some(Self::EdDSA),
            "ES256" => Some(Self::ES256),
            "RS256" => Some(Self::RS256),
            "HS256" => Some(Self::HS256),
            _ => None,
        }
    }

    pub(super) const fn jsonwebtoken(self) -> Algorithm {
        match self {
            Self::EdDSA => Algorithm::EdDSA,
            Self::ES256 => Algorithm::ES256,
            Self::RS256 => Algorithm::RS256,
            Self::HS256 => Algorithm::HS256,
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a key could not be loaded, generated or added to a set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("expected exactly one PEM block")]
    Pem,
    #[error("expected a PEM block labelled `{expected}`")]
    PemLabel { expected: &'static str },
    #[error("the key is malformed or inconsistent")]
    InvalidKey,
    #[error("the key is not of the type its algorithm needs")]
    WrongKeyType,
    #[error("RSA modulus of {bits} bits is outside {MIN_RSA_BITS}..={MAX_RSA_BITS}")]
    RsaModulusSize { bits: usize },
    #[error("RSA public exponent must be odd, at least 3 and below 2^32")]
    RsaExponent,
    #[error("HS256 secret of {len} bytes is shorter than {MIN_HS256_SECRET_BYTES}")]
    SecretTooShort { len: usize },
    #[error("key id must be 1 to {MAX_KID_BYTES} bytes")]
    BadKid,
    #[error("the JWK has no `kid`")]
    MissingKid,
    #[error("key id `{0}` is already in the set")]
    DuplicateKid(String),
    #[error("the JWK contains private key parameters")]
    PrivateJwk,
    #[error("invalid JWK: {0}")]
    Jwk(&'static str),
    #[error("{0} keys cannot be generated here")]
    GenerationUnsupported(Alg),
    #[error("the system random number generator failed")]
    Rng,
}

/// Public key material in the form ring verifies with and JWKs publish.
#[derive(Clone, PartialEq, Eq)]
enum PublicKey {
    Ed25519([u8; 32]),
    /// Uncompressed SEC 1 point: `0x04 || x || y`.
    P256([u8; 65]),
    /// Big-endian, without leading zeros.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// HS256: the secret lives only inside the jsonwebtoken key.
    Secret,
}

impl PublicKey {
    fn ed25519(x: &[u8]) -> Result<Self, KeyError> {
        Ok(Self::Ed25519(x.try_into().map_err(|_| KeyError::InvalidKey)?))
    }

    fn p256(point: &[u8]) -> Result<Self, KeyError> {
        // Compressed points are refused: a JWK needs both coordinates.
        match point.first() {
            Some(0x04) => Ok(Self::P256(point.try_into().map_err(|_| KeyError::InvalidKey)?)),
            _ => Err(KeyError::InvalidKey),
        }
    }

    fn rsa(n: &[u8], e: &[u8]) -> Result<Self, KeyError> {
        let n = strip_leading_zeros(n);
        let e = strip_leading_zeros(e);
        let bits = der::bit_length(n);
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
            return Err(KeyError::RsaModulusSize { bits });
        }
        let odd = e.last().is_some_and(|b| b & 1 == 1);
        if !odd || e.len() > 4 || e == [1] {
            return Err(KeyError::RsaExponent);
        }
        Ok(Self::Rsa { n: n.to_vec(), e: e.to_vec() })
    }

    const fn alg(&self) -> Alg {
        match self {
            Self::Ed25519(_) => Alg::EdDSA,
            Self::P256(_) => Alg::ES256,
            Self::Rsa { .. } => Alg::RS256,
            Self::Secret => Alg::HS256,
        }
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

fn check_kid(kid: &str) -> Result<(), KeyError> {
    if kid.is_empty() || kid.len() > MAX_KID_BYTES {
        return Err(KeyError::BadKid);
    }
    Ok(())
}

fn check_secret(secret: &[u8]) -> Result<(), KeyError> {
    if secret.len() < MIN_HS256_SECRET_BYTES {
        return Err(KeyError::SecretTooShort { len: secret.len() });
    }
    Ok(())
}

/// The one PEM block in `input`.
fn single_pem(input: &str) -> Result<pem::Pem, KeyError> {
    let mut blocks = pem::parse_many(input).map_err(|_| KeyError::Pem)?;
    match (blocks.pop(), blocks.is_empty()) {
        (Some(block), true) => Ok(block),
        _ => Err(KeyError::Pem),
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A key that checks signatures of one algorithm, known by its `kid`.
///
/// `Debug` shows only the id and algorithm, so an HS256 secret never reaches a
/// log line.
#[derive(Clone)]
pub struct VerifyingKey {
    kid: String,
    public: PublicKey,
    /// Built from `public` (or the secret) for `public.alg()` only; the
    /// verifier relies on that pairing, since jsonwebtoken panics when a key of
    /// one family is used with an algorithm of another.
    decoding: DecodingKey,
}

impl VerifyingKey {
    fn from_public(kid: &str, public: PublicKey) -> Result<Self, KeyError> {
        check_kid(kid)?;
        let decoding = match &public {
            // Despite the names, these take the raw key, as ring does.
            PublicKey::Ed25519(x) => DecodingKey::from_ed_der(x),
            PublicKey::P256(point) => DecodingKey::from_ec_der(point),
            PublicKey::Rsa { n, e } => DecodingKey::from_rsa_raw_components(n, e),
            PublicKey::Secret => return Err(KeyError::WrongKeyType),
        };
        Ok(Self { kid: kid.to_owned(), public, decoding })
    }

    /// Loads a public key for `alg` from PEM: a `PUBLIC KEY` block
    /// (SubjectPublicKeyInfo), or for RS256 also an `RSA PUBLIC KEY` (PKCS#1).
    pub fn from_public_pem(kid: &str, alg: Alg, pem: &str) -> Result<Self, KeyError> {
        let block = single_pem(pem)?;
        let public = match (alg, block.tag()) {
            (Alg::HS256, _) => return Err(KeyError::WrongKeyType),
            (_, "PUBLIC KEY") => match der::spki(block.contents())? {
                SpkiKey::Ed25519(x) => PublicKey::ed25519(x)?,
                SpkiKey::P256(point) => PublicKey::p256(point)?,
                SpkiKey::Rsa { n, e } => PublicKey::rsa(n, e)?,
            },
            (Alg::RS256, "RSA PUBLIC KEY") => {
                let (n, e) = der::rsa_public_key(block.contents())?;
                PublicKey::rsa(n, e)?
            }
            _ => return Err(KeyError::PemLabel { expected: "PUBLIC KEY" }),
        };
        if public.alg() != alg {
            return Err(KeyError::WrongKeyType);
        }
        Self::from_public(kid, public)
    }

    /// An HS256 key from the shared secret's bytes (at least 32 of them).
    pub fn hs256(kid: &str, secret: &[u8]) -> Result<Self, KeyError> {
        check_kid(kid)?;
        check_secret(secret)?;
        Ok(Self { kid: kid.to_owned(), public: PublicKey::Secret, decoding: DecodingKey::from_secret(secret) })
    }

    /// Loads a public JWK (RFC 7517): `OKP`/`Ed25519`, `EC`/`P-256` or `RSA`.
    ///
    /// The JWK must have a `kid`. `alg`, `use` and `key_ops` are optional but,
    /// when present, must agree with a signature key of this type. JWKs with
    /// private parameters and symmetric (`oct`) JWKs are refused.
    pub fn from_jwk(jwk: &Value) -> Result<Self, KeyError> {
        // A JSON array would otherwise be read as the struct's fields in order.
        if !jwk.is_object() {
            return Err(KeyError::Jwk("not a JSON object"));
        }
        let jwk = Jwk::deserialize(jwk).map_err(|_| KeyError::Jwk("malformed parameters"))?;
        if jwk.d || jwk.p || jwk.q || jwk.dp || jwk.dq || jwk.qi || jwk.oth || jwk.k {
            return Err(KeyError::PrivateJwk);
        }
        if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
            return Err(KeyError::Jwk("`use` is not `sig`"));
        }
        if jwk.key_ops.as_ref().is_some_and(|ops| !ops.iter().any(|op| op == "verify")) {
            return Err(KeyError::Jwk("`key_ops` does not allow `verify`"));
        }
        let kid = jwk.kid.as_deref().ok_or(KeyError::MissingKid)?;
        let field = |value: &Option<String>, missing: &'static str| -> Result<Vec<u8>, KeyError> {
            let text = value.as_deref().ok_or(KeyError::Jwk(missing))?;
            URL_SAFE_NO_PAD.decode(text).map_err(|_| KeyError::Jwk("a key parameter is not base64url"))
        };
        let public = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
            ("OKP", Some("Ed25519")) => PublicKey::ed25519(&field(&jwk.x, "missing `x`")?)?,
            ("EC", Some("P-256")) => {
                let x = field(&jwk.x, "missing `x`")?;
                let y = field(&jwk.y, "missing `y`")?;
                if x.len() != 32 || y.len() != 32 {
                    return Err(KeyError::InvalidKey);
                }
                let mut point = vec![0x04];
                point.extend(x);
                point.extend(y);
                PublicKey::p256(&point)?
            }
            ("RSA", None) => PublicKey::rsa(&field(&jwk.n, "missing `n`")?, &field(&jwk.e, "missing `e`")?)?,
            ("oct", _) => return Err(KeyError::Jwk("symmetric keys are not loaded from JWKs")),
            _ => return Err(KeyError::Jwk("unsupported `kty` or `crv`")),
        };
        if let Some(alg) = &jwk.alg {
            if Alg::from_name(alg) != Some(public.alg()) {
                return Err(KeyError::Jwk("`alg` does not match the key type"));
            }
        }
        Self::from_public(kid, public)
    }

    /// The public JWK, or `None` for an HS256 secret, which is never published.
    pub fn to_jwk(&self) -> Option<Value> {
        let (kid, alg) = (self.kid.as_str(), self.alg().as_str());
        Some(match &self.public {
            PublicKey::Ed25519(x) => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64(x), "kid": kid, "alg": alg, "use": "sig"})
            }
            PublicKey::P256(point) => json!({
                "kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..]),
                "kid": kid, "alg": alg, "use": "sig",
            }),
            PublicKey::Rsa { n, e } => {
                json!({"kty": "RSA", "n": b64(n), "e": b64(e), "kid": kid, "alg": alg, "use": "sig"})
            }
            PublicKey::Secret => return None,
        })
    }

    /// The key id that tokens name in their `kid` header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The one algorithm this key verifies.
    pub fn alg(&self) -> Alg {
        self.public.alg()
    }

    pub(super) fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey").field("kid", &self.kid).field("alg", &self.alg()).finish_non_exhaustive()
    }
}

/// The JWK parameters we read. Unknown parameters (`x5c`, `x5t`, …) are ignored.
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
    // Private and symmetric parameters: their presence alone is refused.
    #[serde(default, deserialize_with = "present")]
    d: bool,
    #[serde(default, deserialize_with = "present")]
    p: bool,
    #[serde(default, deserialize_with = "present")]
    q: bool,
    #[serde(default, deserialize_with = "present")]
    dp: bool,
    #[serde(default, deserialize_with = "present")]
    dq: bool,
    #[serde(default, deserialize_with = "present")]
    qi: bool,
    #[serde(default, deserialize_with = "present")]
    oth: bool,
    #[serde(default, deserialize_with = "present")]
    k: bool,
}

/// `true` whenever the field appears, whatever its value (even `null`).
pub(super) fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(deserializer).map(|_| true)
}

/// A private key that signs tokens of one algorithm, with its public half.
///
/// `Debug` shows only the id and algorithm.
#[derive(Clone)]
pub struct SigningKey {
    encoding: EncodingKey,
    verifying: VerifyingKey,
}

impl SigningKey {
    /// Loads an unencrypted PKCS#8 private key (`-----BEGIN PRIVATE KEY-----`)
    /// for `alg`, as written by `openssl genpkey` or Python's `cryptography`.
    ///
    /// ES256 keys are checked by ring, which draws from the OS random number
    /// generator while doing so (see [`SigningKey::generate`]).
    pub fn from_pkcs8_pem(kid: &str, alg: Alg, pem: &str) -> Result<Self, KeyError> {
        let block = single_pem(pem)?;
        if block.tag() != "PRIVATE KEY" {
            return Err(KeyError::PemLabel { expected: "PRIVATE KEY" });
        }
        Self::from_pkcs8_der(kid, alg, block.contents())
    }

    /// Loads an unencrypted PKCS#8 private key in DER form for `alg`.
    pub fn from_pkcs8_der(kid: &str, alg: Alg, der: &[u8]) -> Result<Self, KeyError> {
        let (kind, private_key) = der::pkcs8(der)?;
        let expected = match alg {
            Alg::EdDSA => KeyKind::Ed25519,
            Alg::ES256 => KeyKind::P256,
            Alg::RS256 => KeyKind::Rsa,
            Alg::HS256 => return Err(KeyError::WrongKeyType),
        };
        if kind != expected {
            return Err(KeyError::WrongKeyType);
        }
        let (public, encoding) = match kind {
            KeyKind::Ed25519 => {
                // PKCS#8 v1 files (OpenSSL's, Python's) carry no public key to
                // check against; ring derives it from the seed.
                let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|_| KeyError::InvalidKey)?;
                (PublicKey::ed25519(pair.public_key().as_ref())?, EncodingKey::from_ed_der(der))
            }
            KeyKind::P256 => {
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &SystemRandom::new())
                    .map_err(|_| KeyError::InvalidKey)?;
                (PublicKey::p256(pair.public_key().as_ref())?, EncodingKey::from_ec_der(der))
            }
            KeyKind::Rsa => {
                // Measured before ring sees it, so that a small key gets a
                // precise error rather than ring's generic rejection.
                let bits = der::rsa_private_key_modulus_bits(private_key)?;
                if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                    return Err(KeyError::RsaModulusSize { bits });
                }
                let pair = RsaKeyPair::from_pkcs8(der).map_err(|_| KeyError::InvalidKey)?;
                let components = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
                // jsonwebtoken signs with the inner PKCS#1 key.
                (PublicKey::rsa(&components.n, &components.e)?, EncodingKey::from_rsa_der(private_key))
            }
        };
        Ok(Self { encoding, verifying: VerifyingKey::from_public(kid, public)? })
    }

    /// An HS256 key from the shared secret's bytes (at least 32 of them).
    pub fn hs256(kid: &str, secret: &[u8]) -> Result<Self, KeyError> {
        Ok(Self { encoding: EncodingKey::from_secret(secret), verifying: VerifyingKey::hs256(kid, secret)? })
    }

    /// Generates a new EdDSA (Ed25519) or ES256 (P-256) key.
    ///
    /// This, with loading and signing ES256 keys (ECDSA needs a fresh random
    /// nonce per signature), is where this crate touches the operating system's
    /// random number generator, through ring's `SystemRandom`. Verification
    /// never does. RS256 keys are not generated here; load them from PEM.
    pub fn generate(kid: &str, alg: Alg) -> Result<GeneratedKey, KeyError> {
        let rng = SystemRandom::new();
        let document = match alg {
            Alg::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng),
            Alg::ES256 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng),
            Alg::RS256 | Alg::HS256 => return Err(KeyError::GenerationUnsupported(alg)),
        }
        .map_err(|_| KeyError::Rng)?;
        let key = Self::from_pkcs8_der(kid, alg, document.as_ref())?;
        let pkcs8_pem = pem::encode_config(
            &pem::Pem::new("PRIVATE KEY", document.as_ref()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        );
        Ok(GeneratedKey { key, pkcs8_pem })
    }

    /// The key id put in the `kid` header of issued tokens.
    pub fn kid(&self) -> &str {
        self.verifying.kid()
    }

    /// The algorithm of issued tokens.
    pub fn alg(&self) -> Alg {
        self.verifying.alg()
    }

    /// The public half (for HS256, the same secret) to verify with.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.verifying
    }

    pub(super) fn encoding(&self) -> &EncodingKey {
        &self.encoding
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid()).field("alg", &self.alg()).finish_non_exhaustive()
    }
}

/// A freshly generated key and its PKCS#8 PEM, for the caller to store.
pub struct GeneratedKey {
    pub key: SigningKey,
    /// `-----BEGIN PRIVATE KEY-----` … : secret, to be stored like a password.
    pub pkcs8_pem: String,
}

impl fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKey").field("key", &self.key).field("pkcs8_pem", &"***").finish()
    }
}

/// The verifying keys in use, by `kid`. During a rotation it holds the new key
/// and the old one until every token signed by the old key has expired.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    // A handful of keys at most: a linear search beats hashing here.
    keys: Vec<VerifyingKey>,
}

impl KeySet {
    /// An empty set, which verifies nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// A set of these keys; their ids must be distinct.
    pub fn from_keys(keys: impl IntoIterator<Item = VerifyingKey>) -> Result<Self, KeyError> {
        let mut set = Self::new();
        for key in keys {
            set.insert(key)?;
        }
        Ok(set)
    }

    /// Loads every key of a JWKS document (`{"keys": [...]}`); any key that
    /// [`VerifyingKey::from_jwk`] refuses makes the whole document fail.
    pub fn from_jwks(jwks: &Value) -> Result<Self, KeyError> {
        let keys = jwks.get("keys").and_then(Value::as_array).ok_or(KeyError::Jwk("no `keys` array"))?;
        Self::from_keys(keys.iter().map(VerifyingKey::from_jwk).collect::<Result<Vec<_>, _>>()?)
    }

    /// Adds a key; its id must not be in the set yet.
    pub fn insert(&mut self, key: VerifyingKey) -> Result<(), KeyError> {
        if self.get(key.kid()).is_some() {
            return Err(KeyError::DuplicateKid(key.kid));
        }
        self.keys.push(key);
        Ok(())
    }

    /// Removes and returns the key with this id, when a rotation is over.
    pub fn remove(&mut self, kid: &str) -> Option<VerifyingKey> {
        let index = self.keys.iter().position(|key| key.kid == kid)?;
        Some(self.keys.remove(index))
    }

    /// Whether `other` holds the same keys (ids and public key material), in
    /// any order. HS256 secrets cannot be told apart from here: a set with
    /// one is never the same as another.
    pub fn same_keys(&self, other: &KeySet) -> bool {
        self.keys.len() == other.keys.len()
            && self
                .keys
                .iter()
                .all(|k| k.public != PublicKey::Secret && other.get(&k.kid).is_some_and(|o| o.public == k.public))
    }

    /// The key with this id.
    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.iter().find(|key| key.kid == kid)
    }

    /// The only key, when there is exactly one.
    pub(super) fn only(&self) -> Option<&VerifyingKey> {
        match self.keys.as_slice() {
            [key] => Some(key),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &VerifyingKey> {
        self.keys.iter()
    }

    /// The public JWKS document for `/.well-known/jwks.json`: every asymmetric
    /// key as `{kty, kid, alg, use: "sig", …}`. HS256 secrets are left out.
    pub fn jwks(&self) -> Value {
        json!({ "keys": self.keys.iter().filter_map(VerifyingKey::to_jwk).collect::<Vec<_>>() })
    }
}
