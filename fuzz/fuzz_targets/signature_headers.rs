//! The four signature headers of a request, as any client may send them:
//! parsing never panics, and what it accepts stays within the documented
//! bounds (the MAC re-renders as the header it came from, in hex form).
//! The input is split at NUL bytes into the four values, in the order key
//! id, timestamp, nonce, signature; a value `http` refuses is left out.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use rampart_core::signature::{
    signature_header, Presented, KEY_ID_HEADER, MAX_KEY_ID_LEN, MAX_NONCE_LEN, MAX_TIMESTAMP_DIGITS, MIN_NONCE_LEN,
    NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    let names = [KEY_ID_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER];
    for (name, value) in names.iter().zip(data.split(|b| *b == 0)) {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(HeaderName::from_static(name), value);
        }
    }
    let Some(Ok(p)) = Presented::from_headers(&headers) else { return };
    assert!((1..=MAX_KEY_ID_LEN).contains(&p.key_id.len()), "{p:?}");
    assert!((MIN_NONCE_LEN..=MAX_NONCE_LEN).contains(&p.nonce.len()));
    assert!(!p.timestamp.is_empty() && p.timestamp.len() <= MAX_TIMESTAMP_DIGITS);
    assert_eq!(p.timestamp.parse::<u64>().ok(), Some(p.unix));
    let sent = headers.get(SIGNATURE_HEADER).map(HeaderValue::as_bytes).unwrap_or_default();
    let rendered = signature_header(p.version, &p.mac);
    // Hex is rendered as sent; base64url is the same MAC in the other form.
    if sent.len() == rendered.len() {
        assert_eq!(sent, rendered.as_bytes());
    }
});
