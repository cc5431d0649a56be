#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

mod path_patterns {
    use super::*;

    /// `expected` is `Err` for a pattern that must be refused, else the
    /// list of paths with whether each matches.
    #[track_caller]
    fn check(pattern: &str, expected: Result<&[(&str, bool)], PatternError>) {
        let parsed = PathPattern::parse(pattern);
        match (parsed, expected) {
            (Ok(p), Ok(cases)) => {
                assert_eq!(p.as_str(), pattern);
                for &(path, want) in cases {
                    assert_eq!(p.matches(path), want, "pattern {pattern:?}, path {path:?}");
                }
            }
            (Err(got), Err(want)) => assert_eq!(got, want, "pattern {pattern:?}"),
            (got, want) => panic!("pattern {pattern:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn exact() {
        check(
            "/healthz",
            Ok(&[
                ("/healthz", true),
                ("/healthz/", false),
                ("/healthzx", false),
                ("/Healthz", false),
                ("/", false),
                ("", false),
            ]),
        );
        check("/", Ok(&[("/", true), ("/a", false), ("", false)]));
        check("/a/", Ok(&[("/a/", true), ("/a", false), ("/a/b", false)]));
        check("/caf\u{e9}", Ok(&[("/caf\u{e9}", true), ("/cafe", false)]));
    }

    #[test]
    fn single_segment_wildcards() {
        let users: &[(&str, bool)] = &[
            ("/users/42", true),
            ("/users/\u{1f600}", true),
            ("/users/", false),
            ("/users", false),
            ("/users/42/x", false),
            ("/users/42/", false),
            ("/usersx/42", false),
            ("/Users/42", false),
        ];
        check("/users/*", Ok(users));
        check("/users/{id}", Ok(users));
        check("/a/*/c/{x_1}", Ok(&[("/a/b/c/d", true), ("/a/b/c/", false), ("/a//c/d", false), ("/a/b/x/d", false)]));
        check("/*", Ok(&[("/x", true), ("/", false), ("/x/y", false)]));
        check("/*/", Ok(&[("/x/", true), ("/x", false), ("//", false)]));
    }

    #[test]
    fn tail_wildcard() {
        check(
            "/api/**",
            Ok(&[
                ("/api", true),
                ("/api/", true),
                ("/api/x", true),
                ("/api/x/y/z", true),
                ("/apix", false),
                ("/ap", false),
                ("/", false),
                ("/v1/api", false),
            ]),
        );
        check("/**", Ok(&[("/", true), ("/x", true), ("/x/y/", true), ("", false), ("x", false)]));
        check("/a/*/**", Ok(&[("/a/b", true), ("/a/b/c/d", true), ("/a", false), ("/a/", false)]));
    }

    #[test]
    fn refused() {
        check("", Err(PatternError::PathNotAbsolute));
        check("api/**", Err(PatternError::PathNotAbsolute));
        check("*", Err(PatternError::PathNotAbsolute));
        check("/**/x", Err(PatternError::DoubleStarNotLast));
        check("/a/**/", Err(PatternError::DoubleStarNotLast));
        check("/a//b", Err(PatternError::EmptySegment));
        check("//", Err(PatternError::EmptySegment));
        check("/a/../b", Err(PatternError::DotSegment));
        check("/.", Err(PatternError::DotSegment));
        check("/a*", Err(PatternError::PartialWildcard { segment: "a*".into() }));
        check("/***", Err(PatternError::PartialWildcard { segment: "***".into() }));
        check("/a}", Err(PatternError::PartialWildcard { segment: "a}".into() }));
        check("/x{id}", Err(PatternError::PartialWildcard { segment: "x{id}".into() }));
        check("/{}", Err(PatternError::InvalidParameter { segment: "{}".into() }));
        check("/{id", Err(PatternError::InvalidParameter { segment: "{id".into() }));
        check("/{id}x", Err(PatternError::InvalidParameter { segment: "{id}x".into() }));
        check("/{a-b}", Err(PatternError::InvalidParameter { segment: "{a-b}".into() }));
        check("/a?b=1", Err(PatternError::QueryOrFragment));
        check("/a#b", Err(PatternError::QueryOrFragment));
        check("/a%2Fb", Err(PatternError::PercentEscape { escape: "%2F".into() }));
        check("/a\\b", Err(PatternError::ForbiddenCharacter));
        check("/a\nb", Err(PatternError::ForbiddenCharacter));
        // A lone percent sign is a literal the decoded path may contain.
        check("/50%", Ok(&[("/50%", true)]));
    }

    #[test]
    fn messages_name_the_problem() {
        assert_eq!(PatternError::PathNotAbsolute.to_string(), "path pattern must start with '/'");
        assert_eq!(PatternError::DoubleStarNotLast.to_string(), "'**' may only be the last segment");
        let err = PathPattern::parse("/{}").unwrap_err().to_string();
        assert!(err.contains("'{name}'"), "{err}");
    }
}

mod host_patterns {
    use super::*;

    #[track_caller]
    fn check(pattern: &str, expected: Result<&[(&str, bool)], PatternError>) {
        match (HostPattern::parse(pattern), expected) {
            (Ok(p), Ok(cases)) => {
                for &(host, want) in cases {
                    assert_eq!(p.matches(host), want, "pattern {pattern:?}, host {host:?}");
                }
            }
            (Err(got), Err(want)) => assert_eq!(got, want, "pattern {pattern:?}"),
            (got, want) => panic!("pattern {pattern:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn exact() {
        check(
            "Api.Example.com",
            Ok(&[
                ("api.example.com", true),
                ("API.EXAMPLE.COM", true),
                ("api.example.com:8443", true),
                ("api.example.com.", true),
                ("api.example.com.:443", true),
                ("api.example.com..", false),
                ("x.api.example.com", false),
                ("example.com", false),
                ("api.example.co", false),
                ("", false),
            ]),
        );
        check("example.com.", Ok(&[("example.com", true)]));
        check("127.0.0.1", Ok(&[("127.0.0.1:80", true), ("127.0.0.2", false)]));
        check("[::1]", Ok(&[("[::1]", true), ("[::1]:8080", true), ("::1", false), ("[::2]", false)]));
    }

    #[test]
    fn wildcard() {
        check(
            "*.example.com",
            Ok(&[
                ("a.example.com", true),
                ("a.b.example.com", true),
                ("A.EXAMPLE.COM:443", true),
                ("a.example.com.", true),
                ("example.com", false),
                (".example.com", false),
                ("a..example.com", false),
                ("aexample.com", false),
                ("a.example.com.evil.net", false),
                ("evil.net/.example.com", false),
                ("\u{e9}.example.com", false),
                ("a.\u{e9}xample.com", false),
                ("", false),
            ]),
        );
    }

    #[test]
    fn refused() {
        check("", Err(PatternError::EmptyHost));
        for p in ["*", "*.", "a.*.com", "*example.com", "ex*.com", "**.example.com", "*.*.com"] {
            let err = HostPattern::parse(p).unwrap_err();
            assert!(
                matches!(err, PatternError::HostWildcard { .. } | PatternError::InvalidHost { .. }),
                "{p:?}: {err:?}"
            );
        }
        check("a.*.com", Err(PatternError::HostWildcard { pattern: "a.*.com".into() }));
        for p in [
            "example.com:443",
            "example.com/x",
            "a..b",
            ".example.com",
            "ex ample.com",
            "[::1",
            "[nope]",
            "caf\u{e9}.com",
        ] {
            check(p, Err(PatternError::InvalidHost { pattern: p.into() }));
        }
    }
}

mod matcher {
    use super::*;

    struct Route {
        hosts: Vec<HostPattern>,
        methods: Vec<Method>,
        path: PathPattern,
    }

    fn route(hosts: &[&str], methods: &[Method], path: &str) -> Route {
        Route {
            hosts: hosts.iter().map(|h| HostPattern::parse(h).unwrap()).collect(),
            methods: methods.to_vec(),
            path: PathPattern::parse(path).unwrap(),
        }
    }

    fn table() -> RouteMatcher {
        let routes = [
            route(&[], &[Method::GET], "/healthz"),
            route(&["admin.example.com"], &[], "/admin/**"),
            route(&[], &[Method::GET, Method::HEAD], "/users/{id}"),
            route(&[], &[Method::DELETE], "/users/*"),
            route(&["*.example.com"], &[Method::POST], "/api/**"),
            route(&[], &[], "/api/**"),
        ];
        RouteMatcher::new(routes.iter().map(|r| RouteSpec { hosts: &r.hosts, methods: &r.methods, path: &r.path }))
    }

    #[track_caller]
    fn check(host: Option<&str>, method: Method, path: &str, expected: Option<usize>) {
        assert_eq!(table().find(host, &method, path), expected, "{host:?} {method} {path}");
    }

    #[test]
    fn first_match_wins() {
        check(None, Method::GET, "/healthz", Some(0));
        check(None, Method::POST, "/healthz", None);
        check(Some("admin.example.com:443"), Method::GET, "/admin/x", Some(1));
        check(Some("ADMIN.example.com."), Method::PUT, "/admin", Some(1));
        check(Some("evil.com"), Method::GET, "/admin/x", None);
        check(None, Method::GET, "/admin/x", None);
        check(None, Method::HEAD, "/users/7", Some(2));
        check(None, Method::DELETE, "/users/7", Some(3));
        check(None, Method::PATCH, "/users/7", None);
        check(Some("eu.example.com"), Method::POST, "/api/v1", Some(4));
        check(Some("example.com"), Method::POST, "/api/v1", Some(5));
        check(None, Method::from_bytes(b"PURGE").unwrap(), "/api", Some(5));
        check(None, Method::GET, "/apix", None);
        check(None, Method::GET, "", None);
    }

    #[test]
    fn empty_table() {
        let m = RouteMatcher::default();
        assert!(m.is_empty());
        assert_eq!(m.find(None, &Method::GET, "/"), None);
        assert_eq!(table().len(), 6);
    }
}

/// Deterministic stand-in for the fuzz target: random patterns and paths
/// from a small alphabet, checked for panics and simple invariants.
#[test]
fn hostile_patterns_never_panic() {
    let mut rng = XorShift(0x853c_49e6_748f_ea9b);
    let alphabet = ["/", "/", "*", "**", "{", "}", "a", "b", ".", "%2", "x", "\u{e9}", ":", "?", "{id}"];
    let pick = |rng: &mut XorShift, n: u64| -> String {
        let len = rng.below(n);
        (0..len).map(|_| alphabet[rng.below(alphabet.len() as u64) as usize]).collect()
    };
    let (mut parsed, mut hits) = (0, 0);
    for _ in 0..20_000 {
        // Mostly well-rooted, so that enough patterns parse to exercise matching.
        let root = |rng: &mut XorShift| if rng.below(8) == 0 { "" } else { "/" };
        let pattern = format!("{}{}", root(&mut rng), pick(&mut rng, 8));
        let mut path = format!("{}{}", root(&mut rng), pick(&mut rng, 8));
        if rng.below(2) == 0 {
            path = instantiate(&pattern, &mut rng);
        }
        if let Ok(p) = PathPattern::parse(&pattern) {
            parsed += 1;
            assert_eq!(p.as_str(), pattern);
            let hit = p.matches(&path);
            hits += usize::from(hit);
            // The prefix filters are only shortcuts: the answer must be the
            // one of a plain segment-by-segment comparison.
            assert_eq!(hit, reference_match(&p, &path), "{pattern:?} {path:?}");
            assert!(!hit || path.starts_with('/'), "{pattern:?} {path:?}");
            if hit && p.tail {
                let longer = format!("{}/x", path.trim_end_matches('/'));
                assert!(p.matches(&longer), "{pattern:?} {path:?}");
            }
            if p.exact {
                assert!(p.matches(&pattern));
            }
        }
        if let Ok(h) = HostPattern::parse(&path) {
            let _ = h.matches(&pattern);
        }
    }
    assert!(parsed > 1_000 && hits > 1_000, "generator too hostile: {parsed} {hits}");
}

/// A path the pattern should match, with wildcards filled in at random
/// (sometimes with an empty segment, which must not match `*`).
fn instantiate(pattern: &str, rng: &mut XorShift) -> String {
    let fills = ["a", "x", "\u{e9}", "", "a/b", "*"];
    pattern
        .split('/')
        .map(|part| match part {
            "*" | "**" => fills[rng.below(fills.len() as u64) as usize],
            p if p.starts_with('{') => fills[rng.below(fills.len() as u64) as usize],
            p => p,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The obvious, unoptimised matcher.
fn reference_match(p: &PathPattern, path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let parts: Vec<&str> = rest.split('/').collect();
    if parts.len() < p.segments.len() || (!p.tail && parts.len() != p.segments.len()) {
        return false;
    }
    p.segments.iter().zip(&parts).all(|(segment, part)| match segment {
        Segment::Literal(literal) => **literal == **part,
        Segment::Any => !part.is_empty(),
    })
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform enough in `0..n` for a test generator.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
