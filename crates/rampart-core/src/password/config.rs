//! The serde model of the password settings, and their validation into a
//! [`PasswordPolicy`] and [`Argon2Params`].
//!
//! ```toml
//! min_length = 12
//! max_length = 128
//! min_strength = 3
//! check_common = true
//!
//! [require_classes]   # omit to require no character classes
//! upper = 1
//! digit = 1
//!
//! [argon2]
//! memory_kib = 19456
//! iterations = 2
//! parallelism = 1
//! ```
//!
//! ```
//! use rampart_core::password::config::PasswordConfig;
//! let config: PasswordConfig = toml::from_str("min_length = 15\n[argon2]\nmemory_kib = 47104\niterations = 1\n").unwrap();
//! let (policy, params) = config.compile().unwrap();
//! assert_eq!((policy.min_length, policy.max_length), (15, 128));
//! assert_eq!((params.memory_kib(), params.iterations(), params.parallelism()), (47104, 1, 1));
//! ```

use std::fmt;

use serde::Deserialize;

use super::hash::{MAX_ITERATIONS, MAX_MEMORY_KIB, MAX_PARALLELISM};
use super::{Argon2Params, CompositionRules, PasswordPolicy, MAX_PASSWORD_BYTES};

/// NIST 800-63B's floor for user-chosen passwords.
const NIST_MIN_LENGTH: usize = 8;
/// NIST 800-63B: verifiers should allow at least 64 characters.
const NIST_MAX_LENGTH_FLOOR: usize = 64;
/// The highest `max_length`: four bytes a character still fits
/// [`MAX_PASSWORD_BYTES`].
const MAX_MAX_LENGTH: usize = MAX_PASSWORD_BYTES / 4;

/// Password settings. Every field has a default; see [`PasswordPolicy`] for
/// what each rule does.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordConfig {
    /// Fewest characters (after NFKC normalisation), at least 8. Default 12.
    pub min_length: usize,
    /// Most characters, 64 to 1024. Default 128.
    pub max_length: usize,
    /// Lowest zxcvbn score, 0 to 4 (0: no estimate). Default 3.
    pub min_strength: u8,
    /// Refuse the 100,000 most common passwords. Default `true`.
    pub check_common: bool,
    /// Character classes a password must contain. Absent by default.
    pub require_classes: Option<CompositionConfig>,
    /// argon2id cost of new hashes; older hashes are replaced at the next login.
    pub argon2: Argon2Config,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        let policy = PasswordPolicy::default();
        Self {
            min_length: policy.min_length,
            max_length: policy.max_length,
            min_strength: policy.min_strength,
            check_common: policy.check_common,
            require_classes: None,
            argon2: Argon2Config::default(),
        }
    }
}

/// `[require_classes]`: least number of characters of each class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompositionConfig {
    pub upper: usize,
    pub lower: usize,
    pub digit: usize,
    pub symbol: usize,
}

/// `[argon2]`. Defaults are OWASP's: 19,456 KiB, 2 iterations, 1 lane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Argon2Config {
    /// Memory per hash in KiB, at most 262,144 (256 MiB).
    pub memory_kib: u32,
    /// Passes over memory, 1 to 16.
    pub iterations: u32,
    /// Lanes, 1 to 16; computed one after another, so they add time, not speed.
    pub parallelism: u32,
}

impl Default for Argon2Config {
    fn default() -> Self {
        let params = Argon2Params::default();
        Self { memory_kib: params.memory_kib(), iterations: params.iterations(), parallelism: params.parallelism() }
    }
}

/// One invalid setting: the field (relative to the password section) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswordConfigError {
    pub field: &'static str,
    pub message: String,
}

impl fmt::Display for PasswordConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.field, self.message)
    }
}

impl std::error::Error for PasswordConfigError {}

impl PasswordConfig {
    /// Checks every setting, reporting all problems at once, and builds the
    /// runtime policy and hashing parameters.
    pub fn compile(&self) -> Result<(PasswordPolicy, Argon2Params), Vec<PasswordConfigError>> {
        let mut errors = Vec::new();
        let mut error = |field, message: String| errors.push(PasswordConfigError { field, message });

        if self.min_length < NIST_MIN_LENGTH {
            error("min_length", format!("must be at least {NIST_MIN_LENGTH} (NIST 800-63B)"));
        }
        if !(NIST_MAX_LENGTH_FLOOR..=MAX_MAX_LENGTH).contains(&self.max_length) {
            error("max_length", format!("must be from {NIST_MAX_LENGTH_FLOOR} to {MAX_MAX_LENGTH}"));
        }
        if self.min_length > self.max_length {
            error("min_length", format!("must not exceed max_length ({})", self.max_length));
        }
        if self.min_strength > 4 {
            error("min_strength", "must be from 0 to 4 (zxcvbn scores)".to_owned());
        }
        if let Some(classes) = &self.require_classes {
            let total = classes
                .upper
                .saturating_add(classes.lower)
                .saturating_add(classes.digit)
                .saturating_add(classes.symbol);
            if total > self.max_length {
                error("require_classes", format!("asks for {total} characters, more than max_length allows"));
            }
        }
        let argon2 = &self.argon2;
        if !(1..=MAX_ITERATIONS).contains(&argon2.iterations) {
            error("argon2.iterations", format!("must be from 1 to {MAX_ITERATIONS}"));
        }
        if !(1..=MAX_PARALLELISM).contains(&argon2.parallelism) {
            error("argon2.parallelism", format!("must be from 1 to {MAX_PARALLELISM}"));
        }
        let min_memory = 8 * argon2.parallelism.clamp(1, MAX_PARALLELISM);
        if !(min_memory..=MAX_MEMORY_KIB).contains(&argon2.memory_kib) {
            error("argon2.memory_kib", format!("must be from {min_memory} (8 per lane) to {MAX_MEMORY_KIB}"));
        }

        let params = Argon2Params::new(argon2.memory_kib, argon2.iterations, argon2.parallelism);
        match params {
            Ok(params) if errors.is_empty() => {
                let policy = PasswordPolicy {
                    min_length: self.min_length,
                    max_length: self.max_length,
                    min_strength: self.min_strength,
                    require_classes: self.require_classes.map(|c| CompositionRules {
                        upper: c.upper,
                        lower: c.lower,
                        digit: c.digit,
                        symbol: c.symbol,
                    }),
                    check_common: self.check_common,
                };
                Ok((policy, params))
            }
            // The checks above cover every reason `Argon2Params::new` refuses;
            // this keeps a future one from passing silently.
            Err(err) if errors.is_empty() => {
                Err(vec![PasswordConfigError { field: "argon2", message: err.to_string() }])
            }
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn parse(text: &str) -> Result<PasswordConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn empty_section_gives_the_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config, PasswordConfig::default());
        let (policy, params) = config.compile().unwrap();
        assert_eq!(policy, PasswordPolicy::default());
        assert_eq!(params, Argon2Params::default());
    }

    #[test]
    fn every_field_is_read() {
        let text = "min_length = 15\nmax_length = 256\nmin_strength = 4\ncheck_common = false\n\
                    [require_classes]\nupper = 1\nsymbol = 2\n[argon2]\nmemory_kib = 65536\niterations = 3\nparallelism = 4\n";
        let (policy, params) = parse(text).unwrap().compile().unwrap();
        let classes = CompositionRules { upper: 1, lower: 0, digit: 0, symbol: 2 };
        let expected = PasswordPolicy {
            min_length: 15,
            max_length: 256,
            min_strength: 4,
            require_classes: Some(classes),
            check_common: false,
        };
        assert_eq!(policy, expected);
        assert_eq!(params, Argon2Params::new(65536, 3, 4).unwrap());
    }

    #[test]
    fn unknown_keys_are_refused() {
        for text in ["min_lenght = 12\n", "[argon2]\nmemory = 1\n", "[require_classes]\nuppercase = 1\n"] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains("unknown field"), "{text}: {err}");
        }
    }

    #[test]
    fn out_of_range_settings_are_all_reported() {
        let text = "min_length = 4\nmax_length = 5000\nmin_strength = 5\n[argon2]\nmemory_kib = 1048576\niterations = 0\nparallelism = 64\n";
        let errors = parse(text).unwrap().compile().unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "min_length",
                "max_length",
                "min_strength",
                "argon2.iterations",
                "argon2.parallelism",
                "argon2.memory_kib"
            ]
        );
        assert_eq!(errors[0].to_string(), "`min_length`: must be at least 8 (NIST 800-63B)");
    }

    #[test]
    fn inconsistent_settings_are_reported() {
        let errors = parse("min_length = 100\nmax_length = 64\n").unwrap().compile().unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains("max_length"));
        let errors = parse("[require_classes]\ndigit = 200\n").unwrap().compile().unwrap_err();
        assert_eq!(errors[0].field, "require_classes");
        let errors = parse("[argon2]\nparallelism = 4\nmemory_kib = 31\n").unwrap().compile().unwrap_err();
        assert_eq!(errors[0].field, "argon2.memory_kib");
    }
}
