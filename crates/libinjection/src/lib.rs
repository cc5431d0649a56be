//! Safe bindings to libinjection's SQL injection and XSS detectors.
//!
//! libinjection tokenizes its input as SQL (or as HTML5) and compares a short
//! token-type fingerprint against a list of fingerprints seen in real attacks,
//! instead of matching keywords. That makes it fast, linear in the input, and
//! far less prone to flagging prose than keyword lists.
//!
//! The C sources are vendored in `vendor/` (see `vendor/README.md` for their
//! origin and for the three defects we patched: two out-of-bounds reads and a
//! recursion as deep as the input). Both functions here take
//! any bytes, including empty, non-UTF-8 and NUL-containing input: they pass a
//! pointer and a length, and the C code never relies on NUL termination.
//!
//! ```
//! let hit = rampart_libinjection::sqli(b"1' OR '1'='1").expect("classic tautology");
//! assert_eq!(hit.as_str(), "s&sos");
//! assert!(rampart_libinjection::sqli(b"O'Reilly").is_none());
//!
//! assert!(rampart_libinjection::xss(b"<script>alert(1)</script>"));
//! assert!(!rampart_libinjection::xss(b"1 < 2 and 3 > 2"));
//! ```

use std::ffi::{c_char, c_int};
use std::fmt;

mod ffi {
    use std::ffi::{c_char, c_int};

    extern "C" {
        /// `int libinjection_sqli(const char* s, size_t slen, char fingerprint[])`.
        /// Writes a NUL-terminated fingerprint of at most 5 characters (the
        /// state's own buffer is 8 bytes) and returns 1 for SQL injection.
        pub fn libinjection_sqli(s: *const c_char, slen: usize, fingerprint: *mut c_char) -> c_int;

        /// `int libinjection_xss(const char* s, size_t slen)`: 1 for XSS.
        pub fn libinjection_xss(s: *const c_char, slen: usize) -> c_int;
    }
}

/// The size of the fingerprint buffer libinjection writes into, terminator
/// included (`char fingerprint[8]` in `struct libinjection_sqli_state`).
const FINGERPRINT_BUF: usize = 8;

/// The token-type fingerprint libinjection matched, such as `s&sos` for
/// `1' OR '1'='1` (string, logic operator, string, operator, string). It is
/// short, ASCII and not user data, so it is safe to put in an audit log.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    bytes: [u8; FINGERPRINT_BUF],
    len: u8,
}

impl Fingerprint {
    /// Reads the NUL-terminated fingerprint libinjection wrote into `buf`.
    fn from_c(buf: &[c_char; FINGERPRINT_BUF]) -> Self {
        let mut bytes = [0u8; FINGERPRINT_BUF];
        let mut len = 0u8;
        for (slot, &c) in bytes.iter_mut().zip(buf.iter()) {
            // `c_char` is `i8` on some targets and `u8` on others; the cast
            // reinterprets the byte either way.
            let b = c as u8;
            if b == 0 {
                break;
            }
            // Fingerprints are made of ASCII token-type letters and symbols;
            // mapping anything else to '?' keeps `as_str` infallible even if
            // a future libinjection changes that.
            *slot = if b.is_ascii() { b } else { b'?' };
            len += 1;
        }
        Self { bytes, len }
    }

    /// The fingerprint as text, for example `"s&sos"` or `"UEvok"`.
    pub fn as_str(&self) -> &str {
        let used = self.bytes.get(..usize::from(self.len)).unwrap_or_default();
        // Always ASCII by construction, so this never falls back.
        std::str::from_utf8(used).unwrap_or_default()
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Fingerprint").field(&self.as_str()).finish()
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `Some(fingerprint)` when libinjection classifies `input` as SQL injection.
///
/// libinjection also tries the input as if it followed an opening `'` or `"`,
/// so `1' OR '1'='1` is found even though its first quote is unbalanced.
pub fn sqli(input: &[u8]) -> Option<Fingerprint> {
    // libinjection answers "not SQLi" for empty input anyway; returning early
    // also avoids handing C a dangling (if never dereferenced) pointer.
    if input.is_empty() {
        return None;
    }
    let mut buf: [c_char; FINGERPRINT_BUF] = [0; FINGERPRINT_BUF];
    // SAFETY: `input` is valid for reads of `input.len()` bytes for the whole
    // call, and libinjection reads only within `[s, s + slen)` (it never
    // relies on NUL termination; this was checked under AddressSanitizer with
    // exactly-sized, unterminated buffers). `buf` is 8 bytes, the size of
    // libinjection's own fingerprint buffer, which it copies with `strcpy`
    // (at most 5 characters plus NUL). The function keeps no pointer to
    // either after returning and mutates no global state, so concurrent calls
    // are fine.
    let found: c_int =
        unsafe { ffi::libinjection_sqli(input.as_ptr().cast::<c_char>(), input.len(), buf.as_mut_ptr()) };
    (found != 0).then(|| Fingerprint::from_c(&buf))
}

/// Whether libinjection classifies `input` as cross-site scripting.
///
/// The input is parsed as HTML5 from five starting states (text, unquoted,
/// single-, double- and back-quoted attribute value), and flagged when it
/// produces a dangerous tag, attribute or URL scheme.
pub fn xss(input: &[u8]) -> bool {
    if input.is_empty() {
        return false;
    }
    // SAFETY: as in `sqli`: `input` is valid for `input.len()` bytes, the C
    // code reads only within that range (the two places that did not were
    // patched in vendor/, see vendor/README.md), and it retains nothing. Its
    // stack use no longer grows with the input (also patched), so a 2 MiB
    // thread stack suffices for any length.
    let found: c_int = unsafe { ffi::libinjection_xss(input.as_ptr().cast::<c_char>(), input.len()) };
    found != 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[track_caller]
    fn check_sqli(input: &str, expected: Option<&str>) {
        let got = sqli(input.as_bytes());
        assert_eq!(got.as_ref().map(Fingerprint::as_str), expected, "input {input:?}");
    }

    #[track_caller]
    fn check_xss(input: &str, expected: bool) {
        assert_eq!(xss(input.as_bytes()), expected, "input {input:?}");
    }

    #[test]
    fn sqli_positives_have_their_fingerprints() {
        check_sqli("1' OR '1'='1", Some("s&sos"));
        check_sqli("1 UNION SELECT username, password FROM users", Some("1UEnk"));
        check_sqli("-1' union select 1,2,3-- -", Some("sUE1c"));
        check_sqli("1; DROP TABLE users--", Some("1;Tnn"));
        check_sqli("admin'--", Some("sc"));
        check_sqli("1 AND SLEEP(5)", Some("1&f(1"));
        check_sqli("' or 1=1#", Some("s&1c"));
    }

    #[test]
    fn sqli_negatives() {
        for benign in [
            "",
            "O'Reilly",
            "hello world",
            "john.smith@example.com",
            "2024-01-31T12:00:00Z",
            "Select a size from the menu",
            "Tom & Jerry",
            "550e8400-e29b-41d4-a716-446655440000",
        ] {
            check_sqli(benign, None);
        }
    }

    #[test]
    fn xss_positives() {
        for attack in [
            "<script>alert(1)</script>",
            "<img src=x onerror=alert(1)>",
            "<a href=\"javascript:alert(1)\">x</a>",
            "\"><svg onload=alert(1)>",
            "<iframe src=//evil.example>",
            "<div style=\"background:url(javascript:alert(1))\">",
            "<a href=\"jav&#x61;script:alert(1)\">",
        ] {
            check_xss(attack, true);
        }
    }

    #[test]
    fn xss_negatives() {
        for benign in [
            "",
            "1 < 2 and 3 > 2",
            "Tom & Jerry",
            "<b>bold</b> and <i>italic</i>",
            "<a href=\"https://example.com/\">link</a>",
            "x => x * 2",
            "email me at a@b.example",
        ] {
            check_xss(benign, false);
        }
    }

    /// Inputs that end exactly where the unpatched C code read past the end:
    /// an `on…` attribute name, and a truncated character reference in a URL
    /// attribute. Under a sanitizer these were heap over-reads; here they
    /// must simply be answered.
    #[test]
    fn truncated_inputs_are_answered_in_bounds() {
        for input in ["<a on", "<x on", "<a onerro", "<a href=&#", "<a href=&#x", "<a href=\"&#", "<a href=ja&#x"] {
            let _ = xss(input.as_bytes());
            for end in 0..=input.len() {
                let _ = xss(&input.as_bytes()[..end]);
                let _ = sqli(&input.as_bytes()[..end]);
            }
        }
        // The prefix match on event handlers is kept: `onerrorx` still counts.
        check_xss("<img src=x onerrorx=alert(1)>", true);
        check_xss("<img src=x on=1>", false);
    }

    /// 64 KiB runs of each unit, in the five HTML5 start states `xss` tries.
    /// Upstream recursed twice per `/` after a tag name; in an unoptimised
    /// build (as `cargo test` compiles the C) that overflowed this thread's
    /// 2 MiB stack. The other units guard the remaining state transitions.
    #[test]
    fn long_runs_do_not_exhaust_the_stack() {
        for prefix in ["", "<a ", "<a b=", "<!", "</"] {
            for unit in ["/", " /", "/ ", "//>", "<", "<a", "=", "\"", "'", "`", "-", "&#", "!", "?"] {
                let mut input = prefix.as_bytes().to_vec();
                while input.len() < 64 * 1024 {
                    input.extend_from_slice(unit.as_bytes());
                }
                let _ = xss(&input);
                let _ = sqli(&input);
            }
        }
    }

    #[test]
    fn length_is_honoured_not_nul_termination() {
        // The attack sits after the slice's end: it must not be seen.
        let buf = b"1 <script>alert(1)</script>";
        assert!(!xss(&buf[..2]));
        let buf = b"1' OR '1'='1";
        assert!(sqli(&buf[..1]).is_none());
        // Interior NULs are data, not terminators: the attack after them counts.
        assert!(sqli(b"\0\0 1 UNION SELECT password FROM users").is_some());
        assert!(xss(b"\0<script>alert(1)</script>"));
    }

    #[test]
    fn fingerprint_formats_as_its_text() {
        let fp = sqli(b"1' OR '1'='1").unwrap();
        assert_eq!(fp.to_string(), "s&sos");
        assert_eq!(format!("{fp:?}"), "Fingerprint(\"s&sos\")");
        assert!(fp.as_str().len() < FINGERPRINT_BUF);
    }

    /// 50,000 random inputs of up to 4 KiB: raw bytes, and a mix of SQL and
    /// HTML metacharacters that drive the tokenizers into their rarer states.
    #[test]
    fn hostile_bytes_do_not_crash() {
        const ALPHABET: &[u8] = b"'\"`;-/*#()<>=&|%$\\ \t\n\r\x00019aAeEoOrRsSuUnNxX.,:!@{}[]+_~^?";
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut buf = Vec::with_capacity(4096);
        let mut hits = 0usize;
        for round in 0..50_000u32 {
            buf.clear();
            let len = (next() % 4097) as usize;
            let charset = round % 2 == 0;
            for _ in 0..len {
                let r = next();
                buf.push(if charset { ALPHABET[(r as usize) % ALPHABET.len()] } else { r as u8 });
            }
            if let Some(fp) = sqli(&buf) {
                assert!(!fp.as_str().is_empty() && fp.as_str().len() <= 5, "{fp:?}");
                hits += 1;
            }
            hits += usize::from(xss(&buf));
        }
        // Not a quality measure, only proof that the calls really ran.
        assert!(hits > 0);
    }
}
