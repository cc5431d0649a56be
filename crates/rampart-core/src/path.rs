//! Validating and percent-decoding request paths before route matching.
//!
//! A gateway that matches routes on one reading of a path while the upstream
//! acts on another is bypassable: `/admin` blocked, `/public/..%2fadmin`
//! allowed. So instead of resolving tricky paths, [`normalize_path`] rejects
//! them: dot segments (also encoded, also with a `;param` suffix), encoded
//! slashes (unless allowed), backslashes, control characters, empty middle
//! segments and double encoding. What remains has a single obvious meaning,
//! and its decoded form, without segment parameters ([`without_params`]), is
//! what routes are matched against.
//!
//! ```
//! use std::borrow::Cow;
//! use rampart_core::path::{normalize_path, PathError, PathOptions};
//!
//! let opts = PathOptions::default();
//! assert_eq!(normalize_path("/api/users/42", &opts), Ok(Cow::Borrowed("/api/users/42")));
//! assert_eq!(normalize_path("/caf%C3%A9", &opts).as_deref(), Ok("/café"));
//! assert_eq!(normalize_path("/public/%2e%2e/admin", &opts), Err(PathError::DotSegment));
//! assert_eq!(normalize_path("/a%252e", &opts), Err(PathError::DoubleEncoding));
//! ```

use std::borrow::Cow;

/// Knobs for [`normalize_path`].
#[derive(Clone, Copy, Debug, Default)]
pub struct PathOptions {
    /// Accept `%2F` inside a segment (some APIs put slash-containing ids in
    /// one segment). The slash is decoded in the output.
    pub allow_encoded_slash: bool,
}

/// Why a path was refused. The messages are written for a 400 problem detail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("path must start with '/'")]
    NotAbsolute,
    /// A `%` is not followed by two hex digits.
    #[error("path contains an invalid percent-encoding")]
    InvalidPercentEncoding,
    /// The decoded bytes are not UTF-8.
    #[error("path does not decode to valid UTF-8")]
    InvalidUtf8,
    /// A NUL byte, raw or as `%00`.
    #[error("path contains a NUL byte")]
    NulByte,
    /// Another ASCII control character, raw or encoded.
    #[error("path contains a control character")]
    ControlCharacter,
    /// `%2F` while encoded slashes are not allowed.
    #[error("path contains an encoded slash (%2F)")]
    EncodedSlash,
    /// `\`, raw or as `%5C`.
    #[error("path contains a backslash")]
    Backslash,
    /// A `.` or `..` segment, possibly encoded.
    #[error("path contains a '.' or '..' segment")]
    DotSegment,
    /// `//` anywhere; only the last segment may be empty (`/` or `/a/`).
    #[error("path contains an empty segment")]
    EmptySegment,
    /// A `%` that decodes to another percent-escape, such as `%252e`.
    #[error("path is percent-encoded twice")]
    DoubleEncoding,
}

/// Validates `raw` (the path of a request-target, without query) and returns
/// its percent-decoded form, borrowed when there was nothing to decode.
///
/// Linear time, without recursion. With `allow_encoded_slash`, a decoded `/`
/// counts as a segment boundary for the dot and empty-segment checks, so the
/// output always passes those checks itself: `/a%2F..%2Fb` is still refused.
pub fn normalize_path<'a>(raw: &'a str, opts: &PathOptions) -> Result<Cow<'a, str>, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // Most paths have no escapes; they are checked in place and borrowed.
    if !bytes.contains(&b'%') {
        check_plain(bytes)?;
        return Ok(Cow::Borrowed(raw));
    }
    decode(bytes, opts).map(Cow::Owned)
}

/// Checks a path without escapes: the bytes are already the decoded form.
fn check_plain(path: &[u8]) -> Result<(), PathError> {
    let mut segment_start = 1;
    for (i, &b) in path.iter().enumerate().skip(1) {
        match class(b) {
            Class::Plain => {}
            Class::Slash => {
                check_segment(path.get(segment_start..i).unwrap_or_default(), false)?;
                segment_start = i + 1;
            }
            Class::Forbidden => return Err(forbidden(b)),
        }
    }
    check_segment(path.get(segment_start..).unwrap_or_default(), true)
}

/// Decodes a path with escapes, checking the decoded bytes as they appear.
fn decode(path: &[u8], opts: &PathOptions) -> Result<String, PathError> {
    let mut out = Vec::with_capacity(path.len());
    out.push(b'/');
    let mut segment_start = out.len();
    let mut double = DoubleEncoding::default();
    let mut rest = path.iter().skip(1);
    while let Some(&b) = rest.next() {
        let c = if b == b'%' {
            let hi = rest.next().and_then(|&c| hex_value(c));
            let lo = rest.next().and_then(|&c| hex_value(c));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(PathError::InvalidPercentEncoding);
            };
            let c = hi << 4 | lo;
            if c == b'/' && !opts.allow_encoded_slash {
                return Err(PathError::EncodedSlash);
            }
            c
        } else {
            b
        };
        match class(c) {
            Class::Plain => {}
            // A raw `/`, or an allowed `%2F`.
            Class::Slash => {
                check_segment(out.get(segment_start..).unwrap_or_default(), false)?;
                segment_start = out.len() + 1;
            }
            Class::Forbidden => return Err(forbidden(c)),
        }
        double.push(c)?;
        out.push(c);
    }
    check_segment(out.get(segment_start..).unwrap_or_default(), true)?;
    String::from_utf8(out).map_err(|_| PathError::InvalidUtf8)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Plain,
    Slash,
    /// NUL, other ASCII controls and `\`.
    Forbidden,
}

/// Byte classes as a table: this is the per-byte work of every request.
const CLASSES: [Class; 256] = {
    let mut table = [Class::Plain; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = Class::Forbidden;
        b += 1;
    }
    table[0x7f] = Class::Forbidden;
    table[b'\\' as usize] = Class::Forbidden;
    table[b'/' as usize] = Class::Slash;
    table
};

fn class(b: u8) -> Class {
    CLASSES[usize::from(b)]
}

fn forbidden(b: u8) -> PathError {
    match b {
        0 => PathError::NulByte,
        b'\\' => PathError::Backslash,
        _ => PathError::ControlCharacter,
    }
}

/// Checks one decoded segment; only the last may be empty (`/` or `/a/`).
fn check_segment(segment: &[u8], last: bool) -> Result<(), PathError> {
    match segment {
        [] if last => Ok(()),
        [] => Err(PathError::EmptySegment),
        // `..;x` counts too: Tomcat and Spring strip path parameters before
        // resolving dot segments, which made `/public/..;/admin` a classic
        // bypass of gateways that saw `..;` as an ordinary name.
        [b'.'] | [b'.', b'.'] | [b'.', b';', ..] | [b'.', b'.', b';', ..] => Err(PathError::DotSegment),
        _ => Ok(()),
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// `path` without the parameters of its segments (`/admin;x/users` →
/// `/admin/users`): what routes are matched against. Servlet containers
/// (Tomcat, Jetty, Spring) drop a segment's `;…` before mapping the path, so
/// a route table that saw `admin;x` as a name of its own would send
/// `/admin;x/users` past the `/admin/**` route to the same handler. The path
/// sent upstream keeps them. Borrowed (no work) when there is no `;`.
///
/// ```
/// use rampart_core::path::without_params;
/// assert_eq!(without_params("/admin;jsessionid=1/users;v=2"), "/admin/users");
/// assert_eq!(without_params("/a/b"), "/a/b");
/// ```
pub fn without_params(path: &str) -> Cow<'_, str> {
    if !path.as_bytes().contains(&b';') {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(segment.split_once(';').map_or(segment, |(name, _)| name));
    }
    Cow::Owned(out)
}

/// Watches the decoded byte stream for `%` followed by two hex digits. A
/// decoded `%` can only come from `%25`, so this is exactly double encoding.
#[derive(Clone, Copy, Debug, Default)]
struct DoubleEncoding {
    /// 0: nothing pending; 1: after `%`; 2: after `%` and one hex digit.
    state: u8,
}

impl DoubleEncoding {
    fn push(&mut self, c: u8) -> Result<(), PathError> {
        self.state = match (self.state, c) {
            (_, b'%') => 1,
            (1, c) if c.is_ascii_hexdigit() => 2,
            (2, c) if c.is_ascii_hexdigit() => return Err(PathError::DoubleEncoding),
            _ => 0,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const STRICT: PathOptions = PathOptions { allow_encoded_slash: false };
    const SLASHES: PathOptions = PathOptions { allow_encoded_slash: true };

    #[track_caller]
    fn check(raw: &str, opts: PathOptions, expected: Result<&str, PathError>) {
        let got = normalize_path(raw, &opts);
        assert_eq!(got.as_deref(), expected.as_deref(), "input {raw:?}, {opts:?}");
        if let Ok(Cow::Borrowed(_)) = got {
            assert!(!raw.contains('%'), "borrowed output for {raw:?}");
        }
        if let Ok(out) = got {
            assert_invariants(&out);
        }
    }

    /// What every accepted path looks like after decoding.
    #[track_caller]
    fn assert_invariants(out: &str) {
        assert!(out.starts_with('/'), "{out:?}");
        assert!(!out.contains('\\') && !out.bytes().any(|b| b < 0x20 || b == 0x7f), "{out:?}");
        let segments: Vec<&str> = out[1..].split('/').collect();
        let (last, middle) = segments.split_last().unwrap();
        for seg in middle.iter().chain([last]) {
            let name = seg.split(';').next().unwrap();
            assert!(name != "." && name != "..", "{out:?}");
        }
        assert!(middle.iter().all(|s| !s.is_empty()), "{out:?}");
    }

    #[test]
    fn plain_paths_are_borrowed() {
        check("/", STRICT, Ok("/"));
        check("/a", STRICT, Ok("/a"));
        check("/a/", STRICT, Ok("/a/"));
        check("/api/v1/users/42", STRICT, Ok("/api/v1/users/42"));
        check("/...", STRICT, Ok("/..."));
        check("/.well-known/acme", STRICT, Ok("/.well-known/acme"));
        check("/a./.b/a..b", STRICT, Ok("/a./.b/a..b"));
        check("/a;v=1/b", STRICT, Ok("/a;v=1/b"));
        for (path, routed) in
            [("/a;v=1/b", "/a/b"), ("/;x", "/"), ("/a;", "/a"), ("/a;b;c/d;e/", "/a/d/"), ("/a", "/a")]
        {
            assert_eq!(without_params(path), routed, "{path}");
        }
        check("/caf\u{e9}/\u{1f600}", STRICT, Ok("/caf\u{e9}/\u{1f600}"));
        check("/a b+c", STRICT, Ok("/a b+c"));
    }

    #[test]
    fn escapes_are_decoded() {
        check("/a%20b", STRICT, Ok("/a b"));
        check("/%41%62c", STRICT, Ok("/Abc"));
        check("/caf%C3%A9", STRICT, Ok("/caf\u{e9}"));
        check("/caf%c3%a9", STRICT, Ok("/caf\u{e9}"));
        check("/50%25", STRICT, Ok("/50%"));
        check("/50%25off", STRICT, Ok("/50%off"));
        check("/%25%25", STRICT, Ok("/%%"));
        check("/%25g1", STRICT, Ok("/%g1"));
        check("/%251", STRICT, Ok("/%1"));
        check("/a%3Bb", STRICT, Ok("/a;b"));
        check("/%2e%2e%2e", STRICT, Ok("/..."));
        check("/%2ea", STRICT, Ok("/.a"));
    }

    #[test]
    fn structure_errors() {
        check("", STRICT, Err(PathError::NotAbsolute));
        check("a/b", STRICT, Err(PathError::NotAbsolute));
        check("*", STRICT, Err(PathError::NotAbsolute));
        check("%2Fa", STRICT, Err(PathError::NotAbsolute));
        check("//", STRICT, Err(PathError::EmptySegment));
        check("//a", STRICT, Err(PathError::EmptySegment));
        check("/a//b", STRICT, Err(PathError::EmptySegment));
        check("/a//", STRICT, Err(PathError::EmptySegment));
    }

    #[test]
    fn dot_segments_are_rejected() {
        for raw in [
            "/.",
            "/..",
            "/./x",
            "/a/../b",
            "/a/./b",
            "/a/..",
            "/a/.",
            "/a/../",
            "/%2e",
            "/%2E%2e",
            "/a/%2e%2e/b",
            "/a/.%2E/b",
            "/a/%2e./b",
            "/a/..;/b",
            "/a/.;x/b",
            "/a/..%3b/b",
            "/a/..;",
            "/..;jsessionid=1",
        ] {
            check(raw, STRICT, Err(PathError::DotSegment));
        }
    }

    #[test]
    fn percent_encoding_errors() {
        for raw in ["/%", "/a%", "/%1", "/%g1", "/%1g", "/%%", "/%zz/a", "/a%2"] {
            check(raw, STRICT, Err(PathError::InvalidPercentEncoding));
        }
        check("/%ff", STRICT, Err(PathError::InvalidUtf8));
        check("/%c3", STRICT, Err(PathError::InvalidUtf8));
        check("/%c3%28", STRICT, Err(PathError::InvalidUtf8));
        // Overlong encodings of `.` and `/` are not UTF-8.
        check("/%c0%ae%c0%ae/x", STRICT, Err(PathError::InvalidUtf8));
        check("/%c0%af", STRICT, Err(PathError::InvalidUtf8));
        check("/%ed%a0%80", STRICT, Err(PathError::InvalidUtf8));
    }

    #[test]
    fn dangerous_characters() {
        check("/a\0b", STRICT, Err(PathError::NulByte));
        check("/a%00b", STRICT, Err(PathError::NulByte));
        check("/a\nb", STRICT, Err(PathError::ControlCharacter));
        check("/a%0d%0aSet-Cookie:x", STRICT, Err(PathError::ControlCharacter));
        check("/a%09", STRICT, Err(PathError::ControlCharacter));
        check("/a\x7f", STRICT, Err(PathError::ControlCharacter));
        check("/a%7F", STRICT, Err(PathError::ControlCharacter));
        check("/a\x1f", STRICT, Err(PathError::ControlCharacter));
        check("/a\\b", STRICT, Err(PathError::Backslash));
        check("/a%5cb", STRICT, Err(PathError::Backslash));
        check("/a%5C..%5Cb", STRICT, Err(PathError::Backslash));
    }

    #[test]
    fn encoded_slashes() {
        check("/a%2Fb", STRICT, Err(PathError::EncodedSlash));
        check("/a%2fb", STRICT, Err(PathError::EncodedSlash));
        check("/..%2f", STRICT, Err(PathError::EncodedSlash));
        check("/a%2Fb", SLASHES, Ok("/a/b"));
        check("/pkg/%40scope%2Fname", SLASHES, Ok("/pkg/@scope/name"));
        check("/a%2F", SLASHES, Ok("/a/"));
        // A decoded slash still delimits dot and empty segments.
        check("/a%2F..%2Fb", SLASHES, Err(PathError::DotSegment));
        check("/a%2F.", SLASHES, Err(PathError::DotSegment));
        check("/a%2F%2Fb", SLASHES, Err(PathError::EmptySegment));
        check("/%2F", SLASHES, Err(PathError::EmptySegment));
    }

    #[test]
    fn double_encoding() {
        check("/a%252e", STRICT, Err(PathError::DoubleEncoding));
        check("/%252e%252e/admin", STRICT, Err(PathError::DoubleEncoding));
        check("/a%252F", STRICT, Err(PathError::DoubleEncoding));
        check("/a%2500", STRICT, Err(PathError::DoubleEncoding));
        check("/a%25%32%65", STRICT, Err(PathError::DoubleEncoding));
        check("/a%25%25%32%65", STRICT, Err(PathError::DoubleEncoding));
        check("/a%25a%62", STRICT, Err(PathError::DoubleEncoding));
    }

    #[test]
    fn long_inputs_are_linear() {
        let long = "/a".repeat(200_000);
        check(&long, STRICT, Ok(&long));
        let encoded = "/%61".repeat(200_000);
        check(&encoded, STRICT, Ok(&long));
        let percents = format!("/{}", "%25".repeat(200_000));
        check(&percents, STRICT, Ok(&format!("/{}", "%".repeat(200_000))));
        let dots = format!("/{}", ".".repeat(200_000));
        check(&dots, STRICT, Ok(&dots));
    }

    /// Deterministic stand-in for the fuzz target.
    #[test]
    fn hostile_bytes_never_panic() {
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let alphabet = b"/%.2eEfF5c;a0\\\x00\x7f";
        let mut accepted = 0;
        for _ in 0..20_000 {
            let len = rng.below(24) as usize;
            let mut bytes: Vec<u8> = (0..len)
                .map(|_| {
                    if rng.below(7) == 0 {
                        rng.next() as u8
                    } else {
                        alphabet[rng.below(alphabet.len() as u64) as usize]
                    }
                })
                .collect();
            if rng.below(4) != 0 {
                bytes.insert(0, b'/');
            }
            let raw = String::from_utf8_lossy(&bytes);
            for opts in [STRICT, SLASHES] {
                if raw.starts_with('/') && !raw.contains('%') {
                    // The borrowed fast path and the decoder must agree.
                    let fast = check_plain(raw.as_bytes()).map(|()| raw.to_string());
                    assert_eq!(fast, decode(raw.as_bytes(), &opts), "{raw:?}");
                }
                if let Ok(out) = normalize_path(&raw, &opts) {
                    accepted += 1;
                    assert_invariants(&out);
                    if !opts.allow_encoded_slash {
                        // Decoding is idempotent on accepted output: there is
                        // nothing left that an upstream could decode again.
                        let again = normalize_path(&out, &opts);
                        assert!(again.is_ok() || out.contains('%'), "{raw:?} -> {out:?}");
                    }
                }
            }
        }
        assert!(accepted > 1_000, "generator too hostile: {accepted}");
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        /// Uniform enough in `0..n` for a test generator.
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }
}
