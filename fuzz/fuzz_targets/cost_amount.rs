//! A cost as an upstream reports it (`x-rampart-cost: 0.0123`): any text
//! either parses to exactly the millionths it writes (digits past the sixth
//! dropped) or is refused; it never panics or overflows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_core::config::limits::{parse_amount, BUDGET_SCALE};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(micro) = parse_amount(text) else { return };
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    assert!(int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()), "{text:?}");
    let whole: u64 = if int.is_empty() { 0 } else { int.parse().unwrap() };
    let digits: String = frac.chars().chain("000000".chars()).take(6).collect();
    let expected = whole * BUDGET_SCALE + digits.parse::<u64>().unwrap();
    assert_eq!(micro, expected, "{text:?}");
});
