//! Any query string has exactly one canonical form: canonicalising it again
//! changes nothing, and it holds only unreserved characters, `%XX` escapes
//! with upper-case hex, `=` and `&`. Bytes that are not UTF-8 never reach it
//! (the gateway's query is `&str`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_core::signature::canonical_query;

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let canonical = canonical_query(query);
    assert_eq!(canonical_query(&canonical), canonical, "{query:?}");
    let bytes = canonical.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'=' | b'&' => {}
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).expect("an escape has two digits");
                assert!(hex.iter().all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(h)), "{canonical}");
            }
            _ => panic!("{canonical:?} holds {b:#x}"),
        }
    }
    // Every pair keeps its `=`; empty pieces are gone.
    if !canonical.is_empty() {
        assert!(canonical.split('&').all(|pair| pair.contains('=')), "{canonical}");
    }
});
