//! Any string either parses as an API key (then it re-makes the same key
//! from its parts) or is refused; bytes that are not UTF-8 never reach it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_core::api_key::{ApiKey, MAX_KEY_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = ApiKey::parse(text) {
        assert!(text.len() <= MAX_KEY_LEN);
        assert!(text.is_ascii());
        assert_eq!(key.as_str(), text);
        assert!(text.starts_with(key.display_prefix()));
        assert!(key.display_prefix().starts_with(key.prefix()));
    }
});
