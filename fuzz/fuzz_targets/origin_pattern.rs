//! Input is `pattern \n origin`: parse the pattern, match the origin, and
//! check that normalised exact patterns round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_core::origin::OriginPattern;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, origin) = text.split_once('\n').unwrap_or((text, ""));
    let Ok(p) = OriginPattern::parse(pattern) else {
        return;
    };
    let hit = p.matches(origin);
    // `null` is never trusted by anything narrower than `*`.
    assert!(p.is_any() || !p.matches("null"));
    match &p {
        OriginPattern::Any => assert!(hit),
        OriginPattern::Exact(exact) => {
            assert_eq!(*exact, exact.to_ascii_lowercase());
            assert!(p.matches(exact) && p.matches(&exact.to_ascii_uppercase()));
            assert_eq!(OriginPattern::parse(exact).as_ref(), Ok(&p));
            assert_eq!(hit, origin.eq_ignore_ascii_case(exact));
        }
        OriginPattern::Wildcard { .. } => {
            assert!(pattern.contains('*'));
            assert!(!hit || origin.contains("://"));
        }
    }
});
