//! Deciding whether a client-supplied `X-Request-ID` may be reused.
//!
//! A request id travels into logs, audit records and upstream headers, so an
//! inbound one is only kept when it is short and made of characters that
//! cannot break a log line, a header or a query: `[A-Za-z0-9._-]`, 1 to
//! [`MAX_REQUEST_ID_LEN`] bytes. Anything else is replaced by a fresh id.
//!
//! ```
//! use rampart_core::request_id::is_valid_request_id;
//!
//! assert!(is_valid_request_id(b"3f2a-41c9.beta_7"));
//! assert!(!is_valid_request_id(b"abc\r\nX-Admin: 1"));
//! assert!(!is_valid_request_id(b""));
//! ```

/// The longest inbound request id that is reused; longer ones are replaced.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// True when an inbound X-Request-ID may be reused: 1..=128 bytes of [A-Za-z0-9._-].
pub fn is_valid_request_id(value: &[u8]) -> bool {
    // The length check comes first so a hostile megabyte-long value costs
    // nothing to reject.
    (1..=MAX_REQUEST_ID_LEN).contains(&value.len())
        && value.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(input: &[u8], expected: bool) {
        assert_eq!(is_valid_request_id(input), expected, "input: {:?}", String::from_utf8_lossy(input));
    }

    #[test]
    fn accepts_safe_ids() {
        check(b"a", true);
        check(b"0", true);
        check(b"550e8400-e29b-41d4-a716-446655440000", true);
        check(b"trace.span_01-AB", true);
        check(b"...", true);
        check(&[b'x'; MAX_REQUEST_ID_LEN], true);
    }

    #[test]
    fn rejects_unsafe_ids() {
        check(b"", false);
        check(&[b'x'; MAX_REQUEST_ID_LEN + 1], false);
        check(&[b'x'; 1 << 20], false);
        check(b"abc def", false);
        check(b"abc\r\nSet-Cookie: a=b", false);
        check(b"abc\0", false);
        check(b"a/b", false);
        check(b"a\"b", false);
        check(b"<script>", false);
        check(b"id%0d%0a", false);
        check("caf\u{e9}".as_bytes(), false);
        check(&[0xff, 0xfe], false);
        check(b"a\tb", false);
    }
}
