//! Input is `pattern \n path`. Both the path and host pattern parsers see the
//! pattern, and a successfully parsed one is matched against the path.
#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use rampart_core::route::{HostPattern, PathPattern, RouteMatcher, RouteSpec};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, path) = text.split_once('\n').unwrap_or((text, ""));

    if let Ok(p) = PathPattern::parse(pattern) {
        assert_eq!(p.as_str(), pattern);
        let hit = p.matches(path);
        assert_eq!(
            hit,
            reference_match(pattern, path),
            "{pattern:?} vs {path:?}"
        );
        assert!(
            !hit || path.starts_with('/'),
            "{pattern:?} matched {path:?}"
        );
        if !pattern.contains(['*', '{']) {
            // A pattern without wildcards is matched by itself and nothing else.
            assert!(p.matches(pattern));
            assert_eq!(hit, path == pattern);
        }
        let matcher = RouteMatcher::new([RouteSpec {
            hosts: &[],
            methods: &[],
            path: &p,
        }]);
        assert_eq!(matcher.find(None, &Method::GET, path), hit.then_some(0));
    }

    if let Ok(h) = HostPattern::parse(pattern) {
        let _ = h.matches(path);
        if !pattern.contains('*') {
            assert!(h.matches(pattern), "{pattern:?} does not match itself");
        }
    }
});

/// The obvious segment-by-segment matcher, straight from the grammar, to
/// check the compiled matcher's shortcuts against.
fn reference_match(pattern: &str, path: &str) -> bool {
    let (Some(pattern), Some(path)) = (pattern.strip_prefix('/'), path.strip_prefix('/')) else {
        return false;
    };
    let mut segments: Vec<&str> = pattern.split('/').collect();
    let tail = segments.last() == Some(&"**");
    if tail {
        segments.pop();
    }
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() < segments.len() || (!tail && parts.len() != segments.len()) {
        return false;
    }
    segments.iter().zip(&parts).all(|(segment, part)| {
        if *segment == "*" || segment.starts_with('{') {
            !part.is_empty()
        } else {
            segment == part
        }
    })
}
