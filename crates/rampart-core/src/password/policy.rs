//! The rules a new password must pass, after NIST SP 800-63B.
//!
//! NIST's advice, which the defaults follow: require length, not composition;
//! allow long passphrases of any characters, spaces included; refuse passwords
//! that are known to be common or easy to guess; tell the user why. The strength
//! estimate is zxcvbn's, which also knows the user's name and address so that
//! "alice2024!" is weak for Alice.

use std::fmt;

use super::{common, normalize, MAX_PASSWORD_BYTES};

/// What a new password must be. Lengths count characters (Unicode scalar
/// values) of the [normalised](super::normalize) password, as NIST asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// Fewest characters. Default 12: above NIST's floor of 8 for
    /// user-chosen passwords, which is low for a password that may be a
    /// user's only factor (the 2024 revision of 800-63B asks 15 in that case).
    pub min_length: usize,
    /// Most characters, checked before anything else looks at the password.
    /// Default 128; NIST asks that at least 64 be allowed.
    pub max_length: usize,
    /// Lowest acceptable zxcvbn score, 0 (anything) to 4. Default 3 ("safely
    /// unguessable": more than 10^8 guesses); 0 skips the estimate.
    pub min_strength: u8,
    /// Composition rules (so many upper-case letters, digits, …). Off by
    /// default, as NIST advises: they push users toward predictable patterns.
    pub require_classes: Option<CompositionRules>,
    /// Refuse passwords on the bundled list of common passwords. Default on.
    pub check_common: bool,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self { min_length: 12, max_length: 128, min_strength: 3, require_classes: None, check_common: true }
    }
}

/// Least number of characters of each class; zero means no requirement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompositionRules {
    pub upper: usize,
    pub lower: usize,
    pub digit: usize,
    pub symbol: usize,
}

/// A class of characters for [`CompositionRules`]. Letters without case (most
/// scripts other than Latin, Greek, Cyrillic, Armenian) are neither upper nor
/// lower case; anything that is not a letter or digit, space included, is a
/// symbol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CharClass {
    Upper,
    Lower,
    Digit,
    Symbol,
}

impl CharClass {
    fn of(c: char) -> Option<Self> {
        if c.is_uppercase() {
            Some(CharClass::Upper)
        } else if c.is_lowercase() {
            Some(CharClass::Lower)
        } else if c.is_numeric() {
            Some(CharClass::Digit)
        } else if c.is_alphabetic() {
            None
        } else {
            Some(CharClass::Symbol)
        }
    }

    fn describe(self, count: usize) -> &'static str {
        match (self, count == 1) {
            (CharClass::Upper, true) => "upper-case letter",
            (CharClass::Upper, false) => "upper-case letters",
            (CharClass::Lower, true) => "lower-case letter",
            (CharClass::Lower, false) => "lower-case letters",
            (CharClass::Digit, true) => "digit",
            (CharClass::Digit, false) => "digits",
            (CharClass::Symbol, true) => "symbol",
            (CharClass::Symbol, false) => "symbols",
        }
    }
}

/// Words from the user's own details shorter than this are not looked for in
/// the password ("com", "bob"); zxcvbn still weighs them.
const MIN_USER_WORD_CHARS: usize = 4;

/// One reason a password was refused. `Display` is a sentence for the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyViolation {
    TooShort {
        min: usize,
    },
    TooLong {
        max: usize,
    },
    /// On the list of common passwords.
    Common,
    /// Contains one of the user's own words (NIST's "context-specific words"):
    /// the user name, a part of the e-mail address, … of four characters or more.
    ContainsUserInput,
    /// zxcvbn's score is below the policy's; `suggestion` is zxcvbn's advice.
    Weak {
        score: u8,
        min: u8,
        suggestion: Option<String>,
    },
    MissingClass {
        class: CharClass,
        min: usize,
    },
}

impl fmt::Display for PolicyViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyViolation::TooShort { min } => write!(f, "Use at least {min} characters."),
            PolicyViolation::TooLong { max } => write!(f, "Use at most {max} characters."),
            PolicyViolation::Common => f.write_str("This is one of the most common passwords; choose another."),
            PolicyViolation::ContainsUserInput => {
                f.write_str("Do not build the password from your name, user name or e-mail address.")
            }
            PolicyViolation::Weak { suggestion: Some(suggestion), .. } => {
                write!(f, "This password is too easy to guess. {suggestion}")
            }
            PolicyViolation::Weak { suggestion: None, .. } => {
                f.write_str("This password is too easy to guess. Add another word or two.")
            }
            PolicyViolation::MissingClass { class, min } => write!(f, "Use at least {min} {}.", class.describe(*min)),
        }
    }
}

impl PasswordPolicy {
    /// Checks a proposed password, reporting every rule it breaks.
    ///
    /// The password is [normalised](super::normalize) here; hash the normalised
    /// form. `user_inputs` are words the password should not be built from: the
    /// user name, e-mail address, display name, the service's name. Each is
    /// also split at punctuation, so `alice.smith@example.com` contributes
    /// `alice`, `smith` and `example` too. A password containing one of these
    /// words (four characters or more, any case) is refused outright; zxcvbn
    /// also uses them to see through disguises such as `4l1c3` or `ecila`.
    ///
    /// A password over `max_length` is refused at once with only `TooLong`,
    /// before normalisation (past [`MAX_PASSWORD_BYTES`](super::MAX_PASSWORD_BYTES))
    /// or the strength estimate see it. A common password is reported as
    /// `Common` without a `Weak` beside it.
    ///
    /// ```
    /// use rampart_core::password::{PasswordPolicy, PolicyViolation};
    /// let policy = PasswordPolicy::default();
    /// assert_eq!(policy.check("iloveyou", &[]), Err(vec![PolicyViolation::TooShort { min: 12 }, PolicyViolation::Common]));
    /// let alice = ["alice.smith@example.com"];
    /// assert_eq!(policy.check("AliceInWonderland", &alice), Err(vec![PolicyViolation::ContainsUserInput]));
    /// assert!(policy.check("plum tractor origami seventeen", &alice).is_ok());
    /// ```
    pub fn check(&self, password: &str, user_inputs: &[&str]) -> Result<(), Vec<PolicyViolation>> {
        let too_long = Err(vec![PolicyViolation::TooLong { max: self.max_length }]);
        // The byte ceiling is far above any allowed length; refusing longer
        // input unread bounds the work normalisation may do.
        if password.len() > MAX_PASSWORD_BYTES {
            return too_long;
        }
        let password = normalize(password);
        let length = password.chars().count();
        if length > self.max_length {
            return too_long;
        }

        let mut violations = Vec::new();
        if length < self.min_length {
            violations.push(PolicyViolation::TooShort { min: self.min_length });
        }
        if let Some(rules) = &self.require_classes {
            missing_classes(&password, rules, &mut violations);
        }
        let common = self.check_common && common::is_common(&password);
        if common {
            violations.push(PolicyViolation::Common);
        }
        let words = dictionary_words(user_inputs);
        let folded = password.to_lowercase();
        if words.iter().any(|word| word.chars().count() >= MIN_USER_WORD_CHARS && folded.contains(word.as_str())) {
            violations.push(PolicyViolation::ContainsUserInput);
        }
        if !common && self.min_strength > 0 {
            if let Some(weak) = self.weak(&password, &words) {
                violations.push(weak);
            }
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(violations)
        }
    }

    fn weak(&self, password: &str, words: &[String]) -> Option<PolicyViolation> {
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let estimate = zxcvbn::zxcvbn(password, &words);
        let score = u8::from(estimate.score());
        if score >= self.min_strength {
            return None;
        }
        let suggestion = estimate.feedback().map(|feedback| {
            let warning = feedback.warning().map(|warning| warning.to_string());
            let advice = feedback.suggestions().iter().map(ToString::to_string);
            warning.into_iter().chain(advice).collect::<Vec<_>>().join(" ")
        });
        Some(PolicyViolation::Weak { score, min: self.min_strength, suggestion: suggestion.filter(|s| !s.is_empty()) })
    }
}

fn missing_classes(password: &str, rules: &CompositionRules, violations: &mut Vec<PolicyViolation>) {
    let (mut upper, mut lower, mut digit, mut symbol) = (0, 0, 0, 0);
    for class in password.chars().filter_map(CharClass::of) {
        match class {
            CharClass::Upper => upper += 1,
            CharClass::Lower => lower += 1,
            CharClass::Digit => digit += 1,
            CharClass::Symbol => symbol += 1,
        }
    }
    let counts = [
        (CharClass::Upper, upper, rules.upper),
        (CharClass::Lower, lower, rules.lower),
        (CharClass::Digit, digit, rules.digit),
        (CharClass::Symbol, symbol, rules.symbol),
    ];
    for (class, found, min) in counts {
        if found < min {
            violations.push(PolicyViolation::MissingClass { class, min });
        }
    }
}

/// The user's own words for zxcvbn's dictionary: each input whole, and its
/// parts between punctuation of three characters or more.
fn dictionary_words(user_inputs: &[&str]) -> Vec<String> {
    let mut words = Vec::new();
    for input in user_inputs.iter().map(|input| normalize(input).to_lowercase()) {
        let parts = input.split(|c: char| !c.is_alphanumeric()).filter(|part| part.chars().count() >= 3);
        let parts: Vec<String> = parts.filter(|part| *part != input).map(str::to_owned).collect();
        if !input.is_empty() {
            words.push(input);
        }
        words.extend(parts);
    }
    words.sort_unstable();
    words.dedup();
    words
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[track_caller]
    fn check(policy: &PasswordPolicy, password: &str, user_inputs: &[&str], expected: &[&str]) {
        let found: Vec<String> = match policy.check(password, user_inputs) {
            Ok(()) => Vec::new(),
            Err(violations) => violations.iter().map(|v| kind(v).to_owned()).collect(),
        };
        assert_eq!(found, expected, "{password:?}");
    }

    fn kind(violation: &PolicyViolation) -> &'static str {
        match violation {
            PolicyViolation::TooShort { .. } => "short",
            PolicyViolation::TooLong { .. } => "long",
            PolicyViolation::Common => "common",
            PolicyViolation::ContainsUserInput => "personal",
            PolicyViolation::Weak { .. } => "weak",
            PolicyViolation::MissingClass { .. } => "class",
        }
    }

    #[test]
    fn default_policy_decisions() {
        let policy = PasswordPolicy::default();
        let cases: &[(&str, &[&str])] = &[
            ("correct horse battery staple", &[]),
            ("plum tractor origami seventeen", &[]),
            ("Vq8#Lr2!mZ4@pT", &[]),
            ("tr4ff1c-c0ne-m00nl1ght-s0up", &[]),
            ("日本語のパスワードはとても長い", &[]),
            ("password", &["short", "common"]),
            ("123456", &["short", "common"]),
            ("PASSWORD", &["short", "common"]),
            ("Tr0ub4dor&3", &["short"]),
            ("aaaaaaaaaaaaaaaa", &["weak"]),
            ("qwertyuiopasdf", &["weak"]),
            ("abcdefghijklmnop", &["weak"]),
            ("passwordpassword", &["common"]),
            ("margaretthatcher1925", &[]),
            ("", &["short", "weak"]),
        ];
        for (password, expected) in cases {
            check(&policy, password, &[], expected);
        }
    }

    #[test]
    fn passwords_built_from_user_inputs_are_refused() {
        let policy = PasswordPolicy::default();
        let zbigniew: &[&str] = &["zbigniew.wojciechowski@example.com", "zbyszek"];
        check(&policy, "zbigniewwojciechowski", &[], &[]);
        check(&policy, "zbigniewwojciechowski", zbigniew, &["personal", "weak"]);
        check(&policy, "Zbyszek rules the world", zbigniew, &["personal"]);
        check(&policy, "my EXAMPLE passphrase", zbigniew, &["personal"]);
        // Disguised, the words are no longer contained, but zxcvbn sees them.
        check(&policy, "zb1gn13ww0jc13ch0wsk1", &[], &[]);
        check(&policy, "zb1gn13ww0jc13ch0wsk1", zbigniew, &["weak"]);
        check(&policy, "weingibzikswohceicjow", zbigniew, &["weak"]);
        // Three-letter parts ("com", "bob") are not looked for.
        check(&policy, "plum tractor bob combo", &["bob@example.com"], &[]);
    }

    #[test]
    fn dictionary_words_include_parts_of_addresses() {
        let words = dictionary_words(&["Alice.Smith@Example.com", "al", ""]);
        assert_eq!(words, ["al", "alice", "alice.smith@example.com", "com", "example", "smith"]);
    }

    #[test]
    fn length_is_counted_in_normalised_characters() {
        let policy = PasswordPolicy { min_strength: 0, check_common: false, ..PasswordPolicy::default() };
        // Twelve characters of two bytes each pass the 12-character minimum.
        check(&policy, "éééééééééééé", &[], &[]);
        check(&policy, "ééééééééééé", &[], &["short"]);
        // Decomposed "é" is two code points, one after normalisation.
        check(&policy, &"e\u{301}".repeat(12), &[], &[]);
        check(&policy, &"e\u{301}".repeat(11), &[], &["short"]);
    }

    #[test]
    fn too_long_is_reported_alone_and_before_any_other_work() {
        let policy = PasswordPolicy::default();
        let at_max = "correct horse battery staple ".repeat(5)[..128].to_owned();
        check(&policy, &at_max, &[], &[]);
        check(&policy, &format!("{at_max}x"), &[], &["long"]);
        // Far past the byte ceiling, with characters that NFKC would expand.
        check(&policy, &"\u{fdfa}".repeat(10_000), &[], &["long"]);
        check(&policy, &"x".repeat(MAX_PASSWORD_BYTES + 1), &[], &["long"]);
        // A ligature that expands under NFKC counts after expansion.
        let tight = PasswordPolicy { max_length: 3, min_length: 1, min_strength: 0, ..PasswordPolicy::default() };
        check(&tight, "\u{fb03}", &[], &[]);
        check(&tight, "\u{fb03}x", &[], &["long"]);
    }

    #[test]
    fn composition_rules_apply_only_when_configured() {
        let rules = CompositionRules { upper: 1, lower: 1, digit: 2, symbol: 1 };
        let policy = PasswordPolicy { require_classes: Some(rules), ..PasswordPolicy::default() };
        check(&policy, "Plum tractor origami 17", &[], &[]);
        check(&policy, "plum tractor origami 17", &[], &["class"]);
        check(&policy, "Plumtractororigami7", &[], &["class", "class"]);
        let violations = policy.check("plumtractororigamiseven", &[]).unwrap_err();
        let messages: Vec<String> = violations.iter().map(ToString::to_string).collect();
        assert_eq!(messages, ["Use at least 1 upper-case letter.", "Use at least 2 digits.", "Use at least 1 symbol."]);
        check(&PasswordPolicy::default(), "plumtractororigamiseven", &[], &[]);
    }

    #[test]
    fn common_check_and_strength_can_be_turned_off() {
        let lax = PasswordPolicy { min_length: 6, min_strength: 0, check_common: false, ..PasswordPolicy::default() };
        check(&lax, "123456", &[], &[]);
        let no_list = PasswordPolicy { check_common: false, ..PasswordPolicy::default() };
        check(&no_list, "password1234", &[], &["weak"]);
    }

    #[test]
    fn messages_are_sentences() {
        let weak = PasswordPolicy::default().check("abcdefghijklmnop", &[]).unwrap_err();
        let advised = |s: &str| s.starts_with("Sequences like abc") && s.ends_with('.');
        assert!(
            matches!(&weak[..], [PolicyViolation::Weak { score: 0, min: 3, suggestion: Some(s) }] if advised(s)),
            "{weak:?}"
        );
        assert!(weak[0].to_string().starts_with("This password is too easy to guess. "));
        assert_eq!(PolicyViolation::TooShort { min: 12 }.to_string(), "Use at least 12 characters.");
        assert_eq!(PolicyViolation::TooLong { max: 128 }.to_string(), "Use at most 128 characters.");
        let digit = PolicyViolation::MissingClass { class: CharClass::Digit, min: 1 };
        assert_eq!(digit.to_string(), "Use at least 1 digit.");
    }
}
