//! Any query string has exactly one canonical form in each version:
//! canonicalising it again changes nothing, and it holds only unreserved
//! characters, `%XX` escapes with upper-case hex, `=` and `&`. The versions
//! differ only in the order of a repeated name's values. Bytes that are not
//! UTF-8 never reach it (the gateway's query is `&str`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_core::signature::{canonical_query, v1_order_holds, Version};

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let v1 = canonical_query(Version::V1, query);
    assert_eq!(canonical_query(Version::V1, &v1), v1, "{query:?}");
    assert!(v1_order_holds(&v1), "{v1:?}");
    let canonical = canonical_query(Version::V2, query);
    assert_eq!(canonical_query(Version::V2, &canonical), canonical, "{query:?}");
    let sorted = |s: &str| {
        let mut pairs: Vec<&str> = s.split('&').collect();
        pairs.sort_unstable();
        pairs.join("&")
    };
    assert_eq!(sorted(&canonical), sorted(&v1), "the same pairs: {query:?}");
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
