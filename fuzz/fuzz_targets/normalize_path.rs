//! The first byte picks the options; the rest is the raw path. Accepted paths
//! must be free of everything `normalize_path` promises to reject.
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use rampart_core::path::{normalize_path, PathOptions};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(raw) = std::str::from_utf8(rest) else {
        return;
    };
    let opts = PathOptions {
        allow_encoded_slash: flags & 1 == 1,
    };
    let Ok(out) = normalize_path(raw, &opts) else {
        return;
    };

    // Borrowed exactly when there was nothing to decode.
    assert_eq!(matches!(out, Cow::Borrowed(_)), !raw.contains('%'));
    assert!(out.starts_with('/'), "{raw:?} -> {out:?}");
    assert!(
        !out.bytes().any(|b| b < 0x20 || b == 0x7f || b == b'\\'),
        "{raw:?} -> {out:?}"
    );
    let segments: Vec<&str> = out[1..].split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        let name = segment.split(';').next().unwrap_or(segment);
        assert!(
            name != "." && name != "..",
            "dot segment: {raw:?} -> {out:?}"
        );
        assert!(
            !segment.is_empty() || i + 1 == segments.len(),
            "empty segment: {raw:?} -> {out:?}"
        );
    }
    // Nothing an upstream could decode a second time.
    assert!(
        !out.as_bytes()
            .windows(3)
            .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit()),
        "double encoding survived: {raw:?} -> {out:?}"
    );
    if !opts.allow_encoded_slash && !out.contains('%') {
        // The decoded form is itself a valid, already-decoded path.
        assert_eq!(normalize_path(&out, &opts).as_deref(), Ok(&*out));
    }
});
