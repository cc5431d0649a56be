//! Arbitrary UTF-8 through `inspect_value`, with the rule set picked by the
//! first byte. Besides not crashing (the C code in rampart-libinjection runs
//! here too), evidence must stay short and a finding must come from an
//! enabled rule.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_core::inspect::{inspect_value, Rule, RuleSet};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(value) = std::str::from_utf8(rest) else {
        return;
    };
    let rules = RuleSet {
        sqli: flags & 1 != 0,
        xss: flags & 2 != 0,
        path_traversal: flags & 4 != 0,
        command_injection: flags & 8 != 0,
        nul_byte: flags & 16 != 0,
    };
    let Some(finding) = inspect_value(value, &rules) else {
        return;
    };
    assert!(rules.contains(finding.rule), "{finding:?} from a disabled rule");
    assert!(finding.evidence.chars().count() <= 32, "{finding:?}");
    assert!(!finding.evidence.chars().any(char::is_control), "{finding:?}");
    // Turning every rule on can only find something, never nothing.
    assert!(inspect_value(value, &RuleSet::ALL).is_some_and(|f| Rule::ALL.contains(&f.rule)));
});
