//! API keys in the scannable `prefix_random_checksum` format: made from
//! random bytes the caller supplies, and checked for shape and checksum
//! before anything is looked up.
//!
//! A key is `<prefix>_<random>_<checksum>`:
//! - `prefix`: 1 to 16 lower-case ASCII letters and digits, starting with a
//!   letter (default `rpk`), so that a leaked key names its issuer;
//! - `random`: 32 base62 characters (about 190 bits);
//! - `checksum`: the CRC32 of `<prefix>_<random>`, as 6 base62 characters.
//!
//! The checksum is not a secret and proves nothing about a key: it lets a
//! secret scanner tell a real-looking key from noise without asking us, and
//! lets the gateway refuse typos and garbage without a hash or a lookup.
//! Everything longer than [`MAX_KEY_LEN`] is refused before it is read.
//!
//! ```
//! use rampart_core::api_key::{ApiKey, KeyError};
//!
//! let bytes = [7u8; 64];
//! let key = ApiKey::from_random("rpk", &bytes).unwrap();
//! let text = key.as_str().to_owned();
//! assert!(text.starts_with("rpk_") && text.len() == 4 + 32 + 1 + 6);
//! let parsed = ApiKey::parse(&text).unwrap();
//! assert_eq!(parsed.display_prefix(), &text[..12]);
//! let mut broken = text.clone();
//! broken.replace_range(5..6, if &text[5..6] == "A" { "B" } else { "A" });
//! assert_eq!(ApiKey::parse(&broken).unwrap_err(), KeyError::Checksum);
//! ```

/// Random characters in a key.
pub const RANDOM_LEN: usize = 32;
/// Checksum characters in a key.
pub const CHECKSUM_LEN: usize = 6;
/// Longest prefix.
pub const MAX_PREFIX_LEN: usize = 16;
/// Longest well-formed key: anything longer is refused unread.
pub const MAX_KEY_LEN: usize = MAX_PREFIX_LEN + 1 + RANDOM_LEN + 1 + CHECKSUM_LEN;
/// Random characters shown in the display prefix.
pub const DISPLAY_RANDOM_LEN: usize = 8;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a presented string is not a key (the reason goes to metrics and the
/// audit log; the client gets one generic refusal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// Empty, too long, or not `prefix_random_checksum` of the right alphabet.
    Malformed,
    /// The right shape, but the checksum does not match.
    Checksum,
    /// Not enough random bytes to make a key from.
    NotEnoughRandom,
}

impl KeyError {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Malformed => "malformed_api_key",
            Self::Checksum => "api_key_checksum",
            Self::NotEnoughRandom => "not_enough_random",
        }
    }
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for KeyError {}

/// A well-formed key with a valid checksum. `Debug` shows only the display
/// prefix: the whole key is a credential.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey<'a> {
    text: std::borrow::Cow<'a, str>,
    prefix_len: usize,
}

impl std::fmt::Debug for ApiKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey({}…)", self.display_prefix())
    }
}

/// Whether `prefix` may start a key: 1–16 of `[a-z0-9]`, starting with a letter.
pub fn valid_prefix(prefix: &str) -> bool {
    let b = prefix.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_PREFIX_LEN
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

impl<'a> ApiKey<'a> {
    /// Checks `text`'s shape and checksum (no allocation). Cheap enough to
    /// run on every request before the key is hashed.
    pub fn parse(text: &'a str) -> Result<Self, KeyError> {
        let b = text.as_bytes();
        if b.len() > MAX_KEY_LEN || b.len() < 1 + 1 + RANDOM_LEN + 1 + CHECKSUM_LEN {
            return Err(KeyError::Malformed);
        }
        let body_len = b.len() - CHECKSUM_LEN - 1;
        let prefix_len = body_len - RANDOM_LEN - 1;
        if b[body_len] != b'_' || b[prefix_len] != b'_' {
            return Err(KeyError::Malformed);
        }
        let (Some(prefix), Some(random), Some(check)) =
            (text.get(..prefix_len), text.get(prefix_len + 1..body_len), text.get(body_len + 1..))
        else {
            return Err(KeyError::Malformed);
        };
        if !valid_prefix(prefix) || !random.bytes().all(is_base62) || !check.bytes().all(is_base62) {
            return Err(KeyError::Malformed);
        }
        let expected = checksum(&b[..body_len]);
        // Not a secret (anyone can compute it), so no constant-time need.
        if check.as_bytes() != expected {
            return Err(KeyError::Checksum);
        }
        Ok(Self { text: std::borrow::Cow::Borrowed(text), prefix_len })
    }

    /// A new key with `prefix`, its random part drawn from `random` by
    /// rejection sampling (uniform over base62). 64 bytes are plenty: fewer
    /// than 32 of them are rejected with overwhelming probability; when not,
    /// [`KeyError::NotEnoughRandom`] asks the caller for fresh bytes.
    pub fn from_random(prefix: &str, random: &[u8]) -> Result<ApiKey<'static>, KeyError> {
        if !valid_prefix(prefix) {
            return Err(KeyError::Malformed);
        }
        let mut text = String::with_capacity(prefix.len() + 1 + RANDOM_LEN + 1 + CHECKSUM_LEN);
        text.push_str(prefix);
        text.push('_');
        let mut taken = 0;
        // 248 = 4 × 62: bytes at or above it would bias the first characters.
        for &byte in random.iter().filter(|&&b| b < 248) {
            if taken == RANDOM_LEN {
                break;
            }
            text.push(char::from(BASE62[usize::from(byte % 62)]));
            taken += 1;
        }
        if taken < RANDOM_LEN {
            return Err(KeyError::NotEnoughRandom);
        }
        let sum = checksum(text.as_bytes());
        text.push('_');
        for c in sum {
            text.push(char::from(c));
        }
        Ok(ApiKey { text: std::borrow::Cow::Owned(text), prefix_len: prefix.len() })
    }

    /// The whole key (a credential: show it once, store only its hash).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The prefix, e.g. `rpk`.
    pub fn prefix(&self) -> &str {
        self.text.get(..self.prefix_len).unwrap_or_default()
    }

    /// `<prefix>_<first 8 random characters>`: enough to tell keys apart in a
    /// list, far too little to use.
    pub fn display_prefix(&self) -> &str {
        self.text.get(..self.prefix_len + 1 + DISPLAY_RANDOM_LEN).unwrap_or_default()
    }
}

fn is_base62(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// CRC32 of `body` as 6 base62 digits, most significant first (62^6 > 2^32).
fn checksum(body: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut n = crc32fast::hash(body);
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn key(seed: u8) -> String {
        let bytes: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37).wrapping_add(seed)).collect();
        ApiKey::from_random("rpk", &bytes).unwrap().as_str().to_owned()
    }

    #[track_caller]
    fn check(input: &str, expected: Result<(), KeyError>) {
        assert_eq!(ApiKey::parse(input).map(|_| ()), expected, "{input:?}");
    }

    #[test]
    fn made_keys_parse_and_show_a_short_prefix() {
        for seed in 0..50 {
            let k = key(seed);
            let parsed = ApiKey::parse(&k).unwrap();
            assert_eq!(parsed.prefix(), "rpk");
            assert_eq!(parsed.display_prefix(), &k[..12]);
            assert_eq!(format!("{parsed:?}"), format!("ApiKey({}…)", &k[..12]));
        }
        assert_ne!(key(1), key(2));
        let long = ApiKey::from_random("abcdefghijklmnop", &[1; 64]).unwrap();
        assert_eq!(long.as_str().len(), MAX_KEY_LEN);
        check(long.as_str(), Ok(()));
    }

    #[test]
    fn hostile_and_broken_keys_are_refused() {
        let k = key(3);
        check(&k, Ok(()));
        check("", Err(KeyError::Malformed));
        check(&"a".repeat(1 << 20), Err(KeyError::Malformed));
        check(&format!("{k}x"), Err(KeyError::Malformed));
        check(&k[1..], Err(KeyError::Checksum));
        check(&k[..k.len() - 1], Err(KeyError::Malformed));
        check(&k.replace("rpk_", "RPK_"), Err(KeyError::Malformed));
        check(&k.replace("rpk_", "1pk_"), Err(KeyError::Malformed));
        check(&k.replace("rpk_", "r-k_"), Err(KeyError::Malformed));
        check(&format!("é{}", &k[2..]), Err(KeyError::Malformed));
        // Non-ASCII of the same byte length inside the random part.
        let mut bad = k.clone();
        bad.replace_range(4..6, "é");
        check(&bad, Err(KeyError::Malformed));
        let mut bad = k.clone();
        bad.replace_range(10..11, "_");
        check(&bad, Err(KeyError::Malformed));
        // Every single-character substitution is caught by the checksum.
        for i in 4..36 {
            let mut flipped = k.clone().into_bytes();
            flipped[i] = if flipped[i] == b'a' { b'b' } else { b'a' };
            check(std::str::from_utf8(&flipped).unwrap(), Err(KeyError::Checksum));
        }
        let mut wrong_sum = k.clone().into_bytes();
        let last = wrong_sum.len() - 1;
        wrong_sum[last] = if wrong_sum[last] == b'0' { b'1' } else { b'0' };
        check(std::str::from_utf8(&wrong_sum).unwrap(), Err(KeyError::Checksum));
    }

    #[test]
    fn making_needs_a_valid_prefix_and_enough_random() {
        assert_eq!(ApiKey::from_random("", &[1; 64]).unwrap_err(), KeyError::Malformed);
        assert_eq!(ApiKey::from_random("a_b", &[1; 64]).unwrap_err(), KeyError::Malformed);
        assert_eq!(ApiKey::from_random(&"a".repeat(17), &[1; 64]).unwrap_err(), KeyError::Malformed);
        assert_eq!(ApiKey::from_random("rpk", &[1; 31]).unwrap_err(), KeyError::NotEnoughRandom);
        assert_eq!(ApiKey::from_random("rpk", &[250; 64]).unwrap_err(), KeyError::NotEnoughRandom);
    }

    #[test]
    fn the_alphabet_is_used_uniformly() {
        let bytes: Vec<u8> = (0..=247u8).collect();
        let mut seen = [0usize; 62];
        for chunk in bytes.chunks(32) {
            let mut padded = chunk.to_vec();
            padded.resize(64, 0);
            let k = ApiKey::from_random("x", &padded).unwrap();
            for c in k.as_str()[2..2 + chunk.len()].bytes() {
                seen[BASE62.iter().position(|&b| b == c).unwrap()] += 1;
            }
        }
        assert!(seen.iter().all(|&n| n == 4), "{seen:?}");
    }
}
