//! Verification of a password against a stored hash, in our own format or an
//! imported one.
//!
//! A stored string is treated as hostile: it may be garbage, truncated, or
//! planted to make each login attempt expensive. Formats are parsed strictly,
//! every work factor is checked against a cap before any hashing starts, and
//! every failure is an error rather than a panic. Derived and stored hashes are
//! compared in constant time.

use argon2::password_hash::PasswordHash;
use argon2::{Algorithm, Argon2, Params, Version};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::hash::{check_cost, Argon2Params};
use super::MAX_PASSWORD_BYTES;

/// Stored hashes longer than this are refused unread. The longest supported
/// hash with sensible parameters is well under 200 bytes.
pub(crate) const MAX_STORED_LEN: usize = 512;
/// The most PBKDF2 iterations verified (Django 5.2 uses 1,000,000; passlib
/// 29,000). Ten million take a few seconds.
pub(crate) const MAX_PBKDF2_ITERATIONS: u64 = 10_000_000;
/// The highest bcrypt cost verified: 2^16 rounds, a few seconds. Common
/// deployments use 10 to 13.
pub(crate) const MAX_BCRYPT_COST: u64 = 16;
/// PBKDF2-SHA256 output length used by both passlib and Django.
const PBKDF2_OUTPUT_LEN: usize = 32;

/// The format of a stored hash that matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `$argon2id$…`: ours, and argon2-cffi's, libsodium's, …
    Argon2id,
    /// `$argon2i$…`.
    Argon2i,
    /// `$2a$`, `$2b$` or `$2y$`.
    Bcrypt,
    /// passlib's `$pbkdf2-sha256$rounds$salt$hash`.
    PasslibPbkdf2Sha256,
    /// Django's `pbkdf2_sha256$iterations$salt$hash`.
    DjangoPbkdf2Sha256,
}

impl Scheme {
    /// A short name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Argon2id => "argon2id",
            Scheme::Argon2i => "argon2i",
            Scheme::Bcrypt => "bcrypt",
            Scheme::PasslibPbkdf2Sha256 => "passlib-pbkdf2-sha256",
            Scheme::DjangoPbkdf2Sha256 => "django-pbkdf2-sha256",
        }
    }
}

/// A password that matched its stored hash.
///
/// There is no "did not match" value: a wrong password is
/// [`PasswordError::Mismatch`], so that `verify(..).is_ok()` can only mean the
/// password was right.
#[must_use = "a verified password may need its hash replaced"]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The format the stored hash was in.
    pub scheme: Scheme,
    /// The stored hash is not argon2id with the current parameters: hash the
    /// password again and store the new hash while it is at hand.
    pub needs_rehash: bool,
}

/// Why a password could not be hashed or verified.
///
/// Messages never include the password or the stored hash.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// The password is wrong. Every other variant is a problem with the stored
    /// hash, the parameters or the machine, not with what the user typed.
    #[error("password does not match")]
    Mismatch,
    #[error("stored hash is in no supported format")]
    UnsupportedScheme,
    #[error("stored {scheme} hash is malformed: {reason}")]
    Malformed { scheme: &'static str, reason: &'static str },
    #[error("{scheme} {what} of {value} is above the limit of {max}")]
    CostTooHigh { scheme: &'static str, what: &'static str, value: u64, max: u64 },
    #[error("password is longer than {max_bytes} bytes")]
    PasswordTooLong { max_bytes: usize },
    #[error("invalid argon2 parameters: {0}")]
    InvalidParams(&'static str),
    #[error("the operating system gave no randomness for a salt")]
    Randomness,
}

/// Checks `password` against `stored`, a hash in any supported format.
///
/// Pass the [normalised](super::normalize) password. `current` are the
/// parameters new hashes are made with: a match reports `needs_rehash` unless
/// `stored` is argon2id (version 0x13) with exactly those parameters and a
/// 32-byte output.
///
/// Supported: argon2id and argon2i PHC strings (argon2d is refused: it is not
/// meant for passwords); bcrypt `$2a$`, `$2b$` and `$2y$` (passwords past 72
/// bytes are cut, as every bcrypt implementation that made them did; `$2x$` is
/// refused, its hashes come from a known-buggy implementation); passlib's
/// `$pbkdf2-sha256$` with its "ab64" base64; Django's `pbkdf2_sha256$`.
pub fn verify(password: &str, stored: &str, current: &Argon2Params) -> Result<Verified, PasswordError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::PasswordTooLong { max_bytes: MAX_PASSWORD_BYTES });
    }
    let password = password.as_bytes();
    let (scheme, matched, current_format) = match parse(stored)? {
        Parsed::Argon2(a) => {
            let current_format =
                a.algorithm == Algorithm::Argon2id && a.version == Version::V0x13 && current.matches(&a.params);
            (a.scheme, a.matches(password)?, current_format)
        }
        Parsed::Bcrypt => (Scheme::Bcrypt, verify_bcrypt(password, stored)?, false),
        Parsed::Pbkdf2 { scheme, iterations, salt, expected } => {
            (scheme, pbkdf2_sha256_matches(password, &salt, iterations, &expected), false)
        }
    };
    if matched {
        Ok(Verified { scheme, needs_rehash: !current_format })
    } else {
        Err(PasswordError::Mismatch)
    }
}

/// Names the format of a stored hash and checks its shape, without a
/// password: what [`verify`] would accept as a hash (it can still say
/// [`PasswordError::Mismatch`], or fail for an argon2 memory size the machine
/// cannot give). For imports: a hash that fails here could never log anyone in.
///
/// ```
/// use rampart_core::password::{identify, PasswordError, Scheme};
/// let django = "pbkdf2_sha256$1000$seasalt1234$JlBQ/OWmu3PcCFg2koQd315wDykzd702rqDsH8M7iWI=";
/// assert_eq!(identify(django), Ok(Scheme::DjangoPbkdf2Sha256));
/// assert_eq!(identify("{SSHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="), Err(PasswordError::UnsupportedScheme));
/// assert!(identify("$2b$10$tooshort").is_err());
/// ```
pub fn identify(stored: &str) -> Result<Scheme, PasswordError> {
    Ok(match parse(stored)? {
        Parsed::Argon2(a) => a.scheme,
        Parsed::Bcrypt => Scheme::Bcrypt,
        Parsed::Pbkdf2 { scheme, .. } => scheme,
    })
}

fn malformed(scheme: &'static str, reason: &'static str) -> PasswordError {
    PasswordError::Malformed { scheme, reason }
}

/// A stored hash whose shape and work factors were checked.
enum Parsed {
    Argon2(Argon2Hash),
    /// Checked by [`check_bcrypt`]; the `bcrypt` crate reads the string itself.
    Bcrypt,
    Pbkdf2 {
        scheme: Scheme,
        iterations: u32,
        salt: Vec<u8>,
        expected: Vec<u8>,
    },
}

/// Every check that needs no password, in the order [`verify`] has always made them.
fn parse(stored: &str) -> Result<Parsed, PasswordError> {
    if stored.len() > MAX_STORED_LEN {
        return Err(PasswordError::Malformed { scheme: "stored", reason: "longer than 512 bytes" });
    }
    if stored.starts_with("$argon2") {
        parse_argon2(stored).map(Parsed::Argon2)
    } else if stored.starts_with("$2") {
        check_bcrypt(stored).map(|()| Parsed::Bcrypt)
    } else if let Some(rest) = stored.strip_prefix("$pbkdf2-sha256$") {
        parse_passlib_pbkdf2(rest)
    } else if let Some(rest) = stored.strip_prefix("pbkdf2_sha256$") {
        parse_django_pbkdf2(rest)
    } else {
        Err(PasswordError::UnsupportedScheme)
    }
}

struct Argon2Hash {
    scheme: Scheme,
    algorithm: Algorithm,
    version: Version,
    params: Params,
    salt: Vec<u8>,
    expected: Vec<u8>,
}

impl Argon2Hash {
    fn matches(&self, password: &[u8]) -> Result<bool, PasswordError> {
        let mut derived = [0u8; 64];
        let derived = derived.get_mut(..self.expected.len()).ok_or_else(|| malformed("argon2", "hash too long"))?;
        Argon2::new(self.algorithm, self.version, self.params.clone())
            .hash_password_into(password, &self.salt, derived)
            .map_err(|_| malformed("argon2", "salt or parameters out of range"))?;
        Ok(bool::from(derived.ct_eq(&self.expected)))
    }
}

fn parse_argon2(stored: &str) -> Result<Argon2Hash, PasswordError> {
    const NAME: &str = "argon2";
    let phc = PasswordHash::new(stored).map_err(|_| malformed(NAME, "not a PHC string"))?;
    let (algorithm, scheme) = match phc.algorithm.as_str() {
        "argon2id" => (Algorithm::Argon2id, Scheme::Argon2id),
        "argon2i" => (Algorithm::Argon2i, Scheme::Argon2i),
        _ => return Err(PasswordError::UnsupportedScheme),
    };
    // Without `v=`, the reference implementation reads a hash as version 0x10.
    let version = match phc.version {
        None | Some(0x10) => Version::V0x10,
        Some(0x13) => Version::V0x13,
        Some(_) => return Err(malformed(NAME, "unknown version")),
    };
    // Building `Params` only reads numbers; memory is allocated after the check.
    let params = Params::try_from(&phc).map_err(|_| malformed(NAME, "invalid parameters"))?;
    check_cost(params.m_cost(), params.t_cost(), params.p_cost())?;
    let salt = phc.salt.ok_or_else(|| malformed(NAME, "no salt"))?;
    let expected = phc.hash.ok_or_else(|| malformed(NAME, "no hash"))?;
    let mut salt_buf = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_buf).map_err(|_| malformed(NAME, "salt is not base64"))?;
    if salt.len() < argon2::MIN_SALT_LEN {
        return Err(malformed(NAME, "salt or parameters out of range"));
    }
    if expected.len() > 64 {
        return Err(malformed(NAME, "hash too long"));
    }
    Ok(Argon2Hash { scheme, algorithm, version, params, salt: salt.to_vec(), expected: expected.as_bytes().to_vec() })
}

/// `$2a$`, `$2b$` or `$2y$`, two cost digits, `$`, 22 characters of salt and 31
/// of hash, all in bcrypt's base64 alphabet.
fn check_bcrypt(stored: &str) -> Result<(), PasswordError> {
    const NAME: &str = "bcrypt";
    let bytes = stored.as_bytes();
    let well_formed = bytes.len() == 60
        && matches!(bytes.get(..4), Some(b"$2a$" | b"$2b$" | b"$2y$"))
        && bytes[4..6].iter().all(u8::is_ascii_digit)
        && bytes[6] == b'$'
        && bytes[7..].iter().all(|&b| b == b'.' || b == b'/' || b.is_ascii_alphanumeric());
    if !well_formed {
        return Err(if bytes.starts_with(b"$2x$") || bytes.starts_with(b"$2$") {
            PasswordError::UnsupportedScheme
        } else {
            malformed(NAME, "not $2a$, $2b$ or $2y$ with a cost and 53 characters of salt and hash")
        });
    }
    let cost = u64::from(bytes[4] - b'0') * 10 + u64::from(bytes[5] - b'0');
    if cost < 4 {
        return Err(malformed(NAME, "cost below 4"));
    }
    if cost > MAX_BCRYPT_COST {
        return Err(PasswordError::CostTooHigh { scheme: NAME, what: "cost", value: cost, max: MAX_BCRYPT_COST });
    }
    // As the crate decodes them when verifying: 16 bytes of salt, 23 of hash.
    let salt = bcrypt::BASE_64.decode(&stored[7..29]).map_err(|_| malformed(NAME, "salt is not bcrypt base64"))?;
    let hash = bcrypt::BASE_64.decode(&stored[29..]).map_err(|_| malformed(NAME, "hash is not bcrypt base64"))?;
    if salt.len() != 16 || hash.len() != 23 {
        return Err(malformed(NAME, "salt or hash has the wrong length"));
    }
    Ok(())
}

/// `stored` passed [`check_bcrypt`].
fn verify_bcrypt(password: &[u8], stored: &str) -> Result<bool, PasswordError> {
    // The crate re-parses the string (already known to be well formed) and
    // compares with `subtle`.
    bcrypt::verify(password, stored).map_err(|_| malformed("bcrypt", "salt or hash is not bcrypt base64"))
}

/// passlib: `rounds$salt$checksum` after the `$pbkdf2-sha256$` prefix, salt and
/// checksum in "ab64" (standard base64 with `.` for `+`, no padding).
fn parse_passlib_pbkdf2(rest: &str) -> Result<Parsed, PasswordError> {
    const NAME: &str = "passlib pbkdf2-sha256";
    let mut fields = rest.split('$');
    let (Some(rounds), Some(salt), Some(checksum), None) = (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(malformed(NAME, "not $pbkdf2-sha256$rounds$salt$checksum"));
    };
    let iterations = parse_iterations(NAME, rounds)?;
    let salt = ab64_decode(salt).ok_or_else(|| malformed(NAME, "salt is not ab64"))?;
    let expected = ab64_decode(checksum).ok_or_else(|| malformed(NAME, "checksum is not ab64"))?;
    pbkdf2_parsed(NAME, Scheme::PasslibPbkdf2Sha256, iterations, salt, expected)
}

/// Django: `iterations$salt$hash` after the `pbkdf2_sha256$` prefix. The salt
/// is used as text, not decoded; the hash is padded standard base64.
fn parse_django_pbkdf2(rest: &str) -> Result<Parsed, PasswordError> {
    const NAME: &str = "Django pbkdf2_sha256";
    let mut fields = rest.split('$');
    let (Some(iterations), Some(salt), Some(hash), None) = (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(malformed(NAME, "not pbkdf2_sha256$iterations$salt$hash"));
    };
    let iterations = parse_iterations(NAME, iterations)?;
    if salt.is_empty() {
        return Err(malformed(NAME, "empty salt"));
    }
    let expected = STANDARD.decode(hash).map_err(|_| malformed(NAME, "hash is not base64"))?;
    pbkdf2_parsed(NAME, Scheme::DjangoPbkdf2Sha256, iterations, salt.as_bytes().to_vec(), expected)
}

fn pbkdf2_parsed(
    name: &'static str,
    scheme: Scheme,
    iterations: u32,
    salt: Vec<u8>,
    expected: Vec<u8>,
) -> Result<Parsed, PasswordError> {
    if expected.len() != PBKDF2_OUTPUT_LEN {
        return Err(malformed(name, "hash is not 32 bytes"));
    }
    Ok(Parsed::Pbkdf2 { scheme, iterations, salt, expected })
}

fn pbkdf2_sha256_matches(password: &[u8], salt: &[u8], iterations: u32, expected: &[u8]) -> bool {
    let mut derived = [0u8; PBKDF2_OUTPUT_LEN];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut derived);
    bool::from(derived.ct_eq(expected))
}

/// A decimal iteration count from 1 to [`MAX_PBKDF2_ITERATIONS`].
fn parse_iterations(scheme: &'static str, text: &str) -> Result<u32, PasswordError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(scheme, "iteration count is not a number"));
    }
    // Any count of 20 or more significant digits is over the cap; shorter ones fit a u64.
    let digits = text.trim_start_matches('0');
    let value = match digits.len() {
        0 => 0,
        1..=19 => digits.parse().map_err(|_| malformed(scheme, "iteration count is not a number"))?,
        _ => u64::MAX,
    };
    if value == 0 {
        return Err(malformed(scheme, "zero iterations"));
    }
    if value > MAX_PBKDF2_ITERATIONS {
        return Err(PasswordError::CostTooHigh { scheme, what: "iterations", value, max: MAX_PBKDF2_ITERATIONS });
    }
    u32::try_from(value).map_err(|_| malformed(scheme, "iteration count out of range"))
}

/// passlib's "adapted base64": the standard alphabet with `.` in place of `+`,
/// without padding.
fn ab64_decode(text: &str) -> Option<Vec<u8>> {
    if text.contains(['+', '=']) {
        return None;
    }
    STANDARD_NO_PAD.decode(text.replace('.', "+")).ok()
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
