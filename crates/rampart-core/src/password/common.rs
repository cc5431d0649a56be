//! The bundled list of the 100,000 most common passwords.
//!
//! The list (`data/common-passwords.txt.gz`, see the README beside it) is
//! compiled into the binary compressed, and decompressed into a set the first
//! time it is needed: under 0.1 s once (80 ms measured on a busy two-core
//! machine), a few megabytes of memory, and one hash lookup per check after
//! that. Calling [`common_password_count`] at start-up both warms the set and
//! proves it loaded.

use std::collections::HashSet;
use std::io::Read;
use std::sync::OnceLock;

use flate2::read::GzDecoder;

const LIST_GZ: &[u8] = include_bytes!("../../data/common-passwords.txt.gz");

/// Whether `password`, compared without regard to case, is on the list.
///
/// Pass the [normalised](super::normalize) password. "Without regard to case"
/// means both sides are lower-cased, so `PASSWORD` and `Password` are as
/// common as `password`.
///
/// ```
/// use rampart_core::password::is_common;
/// assert!(is_common("123456") && is_common("Password") && is_common("qwertyuiop"));
/// assert!(!is_common("correct horse battery staple"));
/// ```
pub fn is_common(password: &str) -> bool {
    let set = list();
    if password.is_ascii() && !password.bytes().any(|b| b.is_ascii_uppercase()) {
        set.contains(password)
    } else {
        set.contains(password.to_lowercase().as_str())
    }
}

/// How many distinct (lower-cased) passwords the bundled list holds. Zero would
/// mean the list failed to decompress; the service can refuse to start on that
/// rather than accept every password as uncommon.
pub fn common_password_count() -> usize {
    list().len()
}

fn list() -> &'static HashSet<Box<str>> {
    static LIST: OnceLock<HashSet<Box<str>>> = OnceLock::new();
    LIST.get_or_init(|| decode(LIST_GZ).unwrap_or_default())
}

fn decode(compressed: &[u8]) -> Option<HashSet<Box<str>>> {
    let mut text = String::with_capacity(1 << 20);
    GzDecoder::new(compressed).read_to_string(&mut text).ok()?;
    // Entries get the same NFKC normalisation as the passwords looked up.
    let entry = |line: &str| {
        if line.is_ascii() {
            line.to_ascii_lowercase().into_boxed_str()
        } else {
            super::normalize(line).to_lowercase().into_boxed_str()
        }
    };
    Some(text.lines().filter(|line| !line.is_empty()).map(entry).collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn bundled_list_decompresses_to_about_100k_entries() {
        // 100,000 lines, 96,518 once case is folded.
        assert_eq!(common_password_count(), 96_518);
    }

    #[test]
    fn lookup_ignores_case() {
        for password in ["123456", "password", "PASSWORD", "PaSsWoRd", "iloveyou", "Dragon", "trustno1", "qwerty123"] {
            assert!(is_common(password), "{password}");
        }
    }

    #[test]
    fn uncommon_and_empty_passwords_are_not_listed() {
        for password in ["", "correct horse battery staple", "vq8#Lr2!mZ", "password with spaces"] {
            assert!(!is_common(password), "{password}");
        }
    }

    #[test]
    fn the_last_entry_and_the_non_ascii_one_are_listed() {
        // The list's last line, and its one line outside ASCII ("aª»"), which
        // is stored NFKC-normalised like the passwords it is compared with.
        assert!(is_common("070162"));
        assert!(is_common(&crate::password::normalize("a\u{aa}\u{bb}")));
    }

    #[test]
    fn corrupt_data_decodes_to_nothing() {
        assert!(decode(b"not gzip").is_none());
        assert!(decode(&LIST_GZ[..LIST_GZ.len() / 2]).is_none());
    }
}
