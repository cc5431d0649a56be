//! argon2id hashing into PHC strings.

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand_core::{OsRng, RngCore};

use super::verify::PasswordError;
use super::MAX_PASSWORD_BYTES;

/// Bytes of random salt in every new hash (RFC 9106 recommends 16).
pub(crate) const SALT_LEN: usize = 16;
/// Bytes of output in every new hash.
pub(crate) const OUTPUT_LEN: usize = 32;

/// The largest argon2 memory cost, in KiB, that is hashed or verified (256 MiB).
/// A stored hash asking for more is refused, so that a planted row cannot make
/// each login attempt allocate gigabytes.
pub(crate) const MAX_MEMORY_KIB: u32 = 256 * 1024;
/// The largest argon2 time cost (passes over memory) that is hashed or verified.
pub(crate) const MAX_ITERATIONS: u32 = 16;
/// The largest argon2 parallelism (lanes) that is hashed or verified. Lanes are
/// computed one after another here, so they cost time like iterations do.
pub(crate) const MAX_PARALLELISM: u32 = 16;

/// argon2id cost parameters for new hashes.
///
/// The default is OWASP's first recommendation for argon2id: 19,456 KiB
/// (19 MiB) of memory, 2 iterations, 1 lane. Hashes made with other parameters,
/// and hashes in other formats, verify but report `needs_rehash`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Argon2Params {
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
}

impl Argon2Params {
    /// OWASP's recommended argon2id parameters (m=19456 KiB, t=2, p=1).
    pub const OWASP: Self = Self { memory_kib: 19 * 1024, iterations: 2, parallelism: 1 };

    /// Parameters within what argon2 accepts (memory at least 8 KiB per lane) and
    /// within the caps that verification enforces on stored hashes (256 MiB,
    /// 16 iterations, 16 lanes), so that every hash made here also verifies.
    pub fn new(memory_kib: u32, iterations: u32, parallelism: u32) -> Result<Self, PasswordError> {
        let params = Self { memory_kib, iterations, parallelism };
        params.check()?;
        Ok(params)
    }

    /// Memory cost in KiB.
    pub fn memory_kib(&self) -> u32 {
        self.memory_kib
    }

    /// Time cost: passes over memory.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// Lanes.
    pub fn parallelism(&self) -> u32 {
        self.parallelism
    }

    /// Whether argon2 parameters read from a stored hash are exactly these.
    pub(crate) fn matches(&self, stored: &Params) -> bool {
        stored.m_cost() == self.memory_kib
            && stored.t_cost() == self.iterations
            && stored.p_cost() == self.parallelism
            && stored.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN) == OUTPUT_LEN
            && stored.keyid().is_empty()
            && stored.data().is_empty()
    }

    fn check(&self) -> Result<(), PasswordError> {
        check_cost(self.memory_kib, self.iterations, self.parallelism)?;
        if self.iterations == 0 || self.parallelism == 0 || self.memory_kib < 8 * self.parallelism {
            return Err(PasswordError::InvalidParams(
                "argon2 needs at least 1 iteration, 1 lane and 8 KiB of memory per lane",
            ));
        }
        Ok(())
    }

    fn argon2(&self) -> Result<Argon2<'static>, PasswordError> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, Some(OUTPUT_LEN))
            .map_err(|_| PasswordError::InvalidParams("argon2 refused the parameters"))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

impl Default for Argon2Params {
    fn default() -> Self {
        Self::OWASP
    }
}

/// Refuses argon2 costs above the caps, for new and stored hashes alike.
pub(crate) fn check_cost(memory_kib: u32, iterations: u32, parallelism: u32) -> Result<(), PasswordError> {
    let over = |what: &'static str, value: u32, max: u32| {
        (value > max).then_some(PasswordError::CostTooHigh {
            scheme: "argon2",
            what,
            value: value.into(),
            max: max.into(),
        })
    };
    match over("memory (KiB)", memory_kib, MAX_MEMORY_KIB)
        .or_else(|| over("iterations", iterations, MAX_ITERATIONS))
        .or_else(|| over("parallelism", parallelism, MAX_PARALLELISM))
    {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// Hashes `password` with argon2id and a fresh 16-byte salt from the operating
/// system, into a PHC string such as `$argon2id$v=19$m=19456,t=2,p=1$…$…`.
///
/// Pass the [normalised](super::normalize) password. Fails only if the operating
/// system has no randomness to give or the password is over
/// [`MAX_PASSWORD_BYTES`](super::MAX_PASSWORD_BYTES).
pub fn hash(password: &str, params: &Argon2Params) -> Result<String, PasswordError> {
    let mut salt = [0u8; SALT_LEN];
    OsRng.try_fill_bytes(&mut salt).map_err(|_| PasswordError::Randomness)?;
    hash_with_salt(password, params, &salt)
}

/// [`hash`] with a salt the caller supplies, for callers with their own random
/// source and for reproducible tests. Never reuse a salt.
pub fn hash_with_salt(password: &str, params: &Argon2Params, salt: &[u8; SALT_LEN]) -> Result<String, PasswordError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::PasswordTooLong { max_bytes: MAX_PASSWORD_BYTES });
    }
    params.check()?;
    let salt = SaltString::encode_b64(salt).map_err(|_| PasswordError::InvalidParams("salt could not be encoded"))?;
    let phc = params
        .argon2()?
        .hash_password(password.as_bytes(), &salt)
        .map_err(|_| PasswordError::InvalidParams("argon2 refused the parameters"))?;
    Ok(phc.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn default_is_owasp() {
        let params = Argon2Params::default();
        assert_eq!((params.memory_kib(), params.iterations(), params.parallelism()), (19456, 2, 1));
    }

    #[test]
    fn hash_with_salt_is_reproducible_phc() {
        let params = Argon2Params::new(64, 1, 1).unwrap();
        let salt = [7u8; SALT_LEN];
        let first = hash_with_salt("pässword", &params, &salt).unwrap();
        assert_eq!(first, hash_with_salt("pässword", &params, &salt).unwrap());
        // 16 salt bytes and 32 output bytes in unpadded base64.
        let fields: Vec<&str> = first.split('$').collect();
        assert_eq!(fields[..4], ["", "argon2id", "v=19", "m=64,t=1,p=1"]);
        assert_eq!((fields[4].len(), fields[5].len()), (22, 43));
    }

    #[test]
    fn fresh_salts_differ() {
        let params = Argon2Params::new(64, 1, 1).unwrap();
        assert_ne!(hash("same", &params).unwrap(), hash("same", &params).unwrap());
    }

    #[test]
    fn default_params_produce_owasp_phc_prefix() {
        let stored = hash("correct horse battery staple", &Argon2Params::default()).unwrap();
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{stored}");
    }

    #[test]
    fn params_outside_limits_are_refused() {
        assert!(Argon2Params::new(MAX_MEMORY_KIB, MAX_ITERATIONS, MAX_PARALLELISM).is_ok());
        for (m, t, p) in [(MAX_MEMORY_KIB + 1, 1, 1), (64, MAX_ITERATIONS + 1, 1), (256, 1, MAX_PARALLELISM + 1)] {
            assert!(matches!(Argon2Params::new(m, t, p), Err(PasswordError::CostTooHigh { .. })), "{m} {t} {p}");
        }
        for (m, t, p) in [(7, 1, 1), (64, 0, 1), (64, 1, 0), (15, 1, 2)] {
            assert!(matches!(Argon2Params::new(m, t, p), Err(PasswordError::InvalidParams(_))), "{m} {t} {p}");
        }
    }

    #[test]
    fn oversized_password_is_refused_before_hashing() {
        let params = Argon2Params::new(64, 1, 1).unwrap();
        let long = "x".repeat(MAX_PASSWORD_BYTES + 1);
        assert!(matches!(hash(&long, &params), Err(PasswordError::PasswordTooLong { .. })));
        assert!(hash(&long[1..], &params).is_ok());
    }
}
